#!/usr/bin/env python3
"""Leaving: Ctrl-D and os.exit, tasks cancelled with cleanup; history."""
import os
import time
from replpty import Repl, check, done

r = Repl()
try:
    path = os.path.join(r.home, "cleanup")
    r.type("f = io.open(%r, 'w')" % path)
    r.type("t = aio.spawn(function() local ok, e = pcall(aio.sleep, 100) "
           "f:write('cleaned ', aio.errtype(e) or '?') f:close() end)")
    r.type('print("hist-marker-7")')
    r.key("\x04")
    st = r.wait_exit()
    check("ctrl_d_status_0", st == 0, "status %r: %s" % (st, r.tail()))
    check("exit_runs_cleanup", os.path.exists(path) and
          open(path).read() == "cleaned CancelledError",
          repr(open(path).read() if os.path.exists(path) else None))
    hist = os.path.join(r.home, ".aiolua_history")
    check("history_saved", os.path.exists(hist) and
          'print("hist-marker-7")' in open(hist).read().split("\n"),
          repr(open(hist).read() if os.path.exists(hist) else None))
finally:
    r.close()

# history across runs: Up recalls the last line of the previous run
r2 = Repl(home=r.home)
try:
    m = r2.mark()
    r2.key("\x1b[A")
    r2.key("\r")
    check("history_recalled", r2.expect(r"^hist-marker-7$", since=m), r2.tail())
    r2.type("os.exit(3)")
    check("os_exit_status", r2.wait_exit() == 3, "status %r" % r2.status)
finally:
    r2.close()

# os.exit() from a task while the prompt waits; default status 0
r3 = Repl()
try:
    r3.type("t = aio.spawn(function() aio.sleep(0.2) os.exit() end)")
    check("os_exit_from_task", r3.wait_exit() == 0, "status %r: %s"
          % (r3.status, r3.tail()))
finally:
    r3.close()
# os.exit from a task while a chunk waits: the chunk does not go on (it
# did, to its end, before the REPL left)
r4 = Repl()
try:
    m = r4.mark()
    r4.type('aio.spawn(function() os.exit(5) end) aio.sleep(3) print("went-" .. "on")')
    t0 = time.time()
    st = r4.wait_exit()
    check("os_exit_from_task_ends_chunk", st == 5 and time.time() - t0 < 2.5
          and "went-on" not in r4.tail(), "status %r after %.1f s: %s"
          % (st, time.time() - t0, r4.tail()))
finally:
    r4.close()
# os.exit at the prompt: a task's cleanup that waits still finishes (it
# was cancelled twice, its wait cut off, when os.exit cancelled every task)
r5 = Repl()
try:
    path5 = os.path.join(r5.home, "cleanup5")
    r5.type("f = io.open(%r, 'w')" % path5)
    r5.type("t = aio.spawn(function() pcall(aio.sleep, 100) aio.sleep(0.05) "
            "f:write('waited') f:close() end)")
    r5.type("aio.sleep(0)")
    r5.type("os.exit(3)")
    st = r5.wait_exit()
    got = open(path5).read() if os.path.exists(path5) else None
    check("os_exit_cleanup_may_wait", st == 3 and got == "waited",
          "status %r, file %r: %s" % (st, got, r5.tail()))
finally:
    r5.close()
done()
