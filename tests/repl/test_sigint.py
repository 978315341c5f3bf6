#!/usr/bin/env python3
"""Ctrl-C: cancels the running chunk; at the prompt it clears the line."""
import os
import time
from replpty import Repl, check, done

r = Repl()
try:
    path = os.path.join(r.home, "bg")
    r.type("f = io.open(%r, 'a')" % path)
    r.type('bg = aio.spawn(function() while true do f:write("x\\n") '
           'f:flush() aio.sleep(0.02) end end)')
    m = r.mark()
    t0 = time.time()
    r.send("aio.sleep(30)\r")
    time.sleep(0.3)
    r.send("\x03")
    r.wait_idle()
    took = time.time() - t0
    check("ctrl_c_cancels_sleep", took < 3 and
          r.expect(r"CancelledError|interrupted", since=m), r.tail())
    m = r.mark()
    r.type('print("after-cancel", bg:done())')
    check("prompt_after_cancel", r.expect(r"^after-cancel\tfalse$", since=m),
          r.tail())
    n1 = open(path).read().count("\n")
    time.sleep(0.3)
    n2 = open(path).read().count("\n")
    check("background_survives_ctrl_c", n2 > n1, "%d -> %d" % (n1, n2))

    # a chunk that catches the cancel runs its cleanup
    m = r.mark()
    r.send("ok, e = pcall(aio.sleep, 30) print('caught', aio.errtype(e))\r")
    time.sleep(0.3)
    r.send("\x03")
    r.wait_idle()
    check("chunk_cleanup_runs", r.expect(r"caught\tCancelledError$", since=m),
          r.tail())

    # at the prompt: the half-typed line is dropped
    m = r.mark()
    r.send("this is not lua")
    r.key("\x03")
    r.type('print("clean-line")')
    check("ctrl_c_clears_line", r.expect(r"^clean-line$", since=m) and
          "syntax error" not in r.text()[-400:], r.tail())
    # in a continuation: the whole chunk is dropped
    m = r.mark()
    r.type("for i = 1, 2 do")
    r.key("\x03")
    r.type('print("fresh-chunk")')
    check("ctrl_c_drops_chunk", r.expect(r"^fresh-chunk$", since=m), r.tail())
    # several Ctrl-C never end the REPL
    for _ in range(3):
        r.key("\x03")
    m = r.mark()
    r.type("1+2")
    check("repeated_ctrl_c_stays", r.expect(r"^3$", since=m), r.tail())
    # a chunk that computes without ever waiting is cancelled in place
    m = r.mark()
    r.send("while true do end\r")
    time.sleep(0.5)
    r.send("\x03")
    r.wait_idle()
    r.type('print("busy-ended")')
    check("ctrl_c_busy_chunk", r.expect(r"^busy-ended$", since=m), r.tail())
    # and so is a task that computes while the prompt waits
    m = r.mark()
    r.type("spin = aio.spawn(function() aio.sleep(0.1) while true do end end)")
    time.sleep(0.4)
    r.send("\x03")
    r.wait_idle()
    r.type('print("spin", spin:cancelled())')
    check("ctrl_c_busy_task", r.expect(r"^spin\ttrue$", since=m), r.tail())
    r.type("bg:cancel()")
    r.key("\x04")
    check("ctrl_d_after_ctrl_c_status_0", r.wait_exit() == 0,
          "status %r" % r.status)
finally:
    r.close()
done()
