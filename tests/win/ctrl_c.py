#!/usr/bin/env python3
"""Ctrl-C for aiolua.exe under wine, run by tests/win/run.sh.

Headless wine has no console to type Ctrl-C in, but it turns a SIGINT sent
to a Windows process into a CTRL_C_EVENT for the handlers the process set
with SetConsoleCtrlHandler: the same path as Ctrl-C in a console from there
on (loop_iocp.c's handler, then the host's SIGINT handling).  Each check
prints "PASS win/ctrl_c/<name>" or "FAIL ...".  No timing is asserted: the
timeouts only turn a hang into a failure.
"""
import os
import signal
import subprocess
import sys

EXE = os.environ.get("AIOLUA_EXE", "build/win/aiolua.exe")
LIMIT = 60
failures = 0


def check(name, ok, why=""):
    global failures
    if ok:
        print("PASS win/ctrl_c/%s" % name)
    else:
        failures += 1
        print("FAIL win/ctrl_c/%s: %s" % (name, why))
    sys.stdout.flush()


class Child:
    def __init__(self, args, stdin=subprocess.DEVNULL):
        self.p = subprocess.Popen(["wine", EXE] + args, stdin=stdin,
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        self.seen = []

    def upto(self, want):
        """stdout lines up to one holding want (a hang ends at LIMIT)"""
        while True:
            line = self.p.stdout.readline()
            if not line:
                return False
            line = line.decode().rstrip("\r\n")
            self.seen.append(line)
            if want in line:
                return True

    def send(self, s):
        self.p.stdin.write(s.encode())
        self.p.stdin.flush()

    def interrupt(self):
        self.p.send_signal(signal.SIGINT)

    def finish(self):
        if self.p.stdin:
            try:
                self.p.stdin.close()
            except OSError:
                pass
            self.p.stdin = None
        try:
            out, err = self.p.communicate(timeout=LIMIT)
        except subprocess.TimeoutExpired:
            self.p.kill()
            out, err = self.p.communicate()
            return None, "", "(killed after %d s)" % LIMIT
        out = out.decode().replace("\r\n", "\n")
        err = err.decode().replace("\r\n", "\n")
        return self.p.returncode, "\n".join(self.seen) + "\n" + out, err


def script(name, code, want_rc, want_err, want_out=None):
    c = Child(["-e", "print('ready') io.stdout:flush() " + code])
    up = c.upto("ready")
    c.interrupt()
    rc, out, err = c.finish()
    ok = up and rc == want_rc and want_err in err and \
        (want_out is None or want_out in out)
    check(name, ok, "rc %r out %r err %r" % (rc, out, err))


# the main task waits: cancelled, "interrupted", status 130 (as on Linux)
script("cancels_a_waiting_main_task", "aio.sleep(100)", 130,
       "aiolua: interrupted")
# a loop that never waits is cancelled in place (the count hook)
script("cancels_a_busy_main_task", "while true do end", 130,
       "aiolua: interrupted")
# the cancellation reaches the task as a CancelledError it can clean up on
script("cleanup_runs",
       "local ok, e = pcall(aio.sleep, 100) "
       "print('cleanup', aio.errtype(e)) io.stdout:flush() error(e, 0)",
       130, "aiolua: interrupted", "cleanup\tCancelledError")
# a handler set with add_signal_handler owns Ctrl-C (as asyncio's): it
# runs and the main task goes on; once it is removed, Ctrl-C cancels the
# main task again (as on Linux)
c = Child(["-e", "local got "
           "aio.loop():add_signal_handler('SIGINT', function(n) "
           "io.stderr:write('handler ', n, '\\n') got = true end, 'SIGINT') "
           "print('ready') io.stdout:flush() "
           "while not got do aio.sleep(0.02) end "
           "assert(aio.loop():remove_signal_handler('SIGINT')) "
           "print('removed') io.stdout:flush() aio.sleep(100)"])
up = c.upto("ready")
c.interrupt()
removed = c.upto("removed")
c.interrupt()
rc, out, err = c.finish()
check("add_signal_handler", up and removed and rc == 130 and
      "handler SIGINT" in err and "aiolua: interrupted" in err,
      "rc %r out %r err %r" % (rc, out, err))

# a second Ctrl-C while the first one's cleanup still waits: out at once
c = Child(["-e", "print('ready') io.stdout:flush() "
           "local ok = pcall(aio.sleep, 100) print('first') io.stdout:flush() "
           "aio.sleep(100)"])
up = c.upto("ready")
c.interrupt()
first = c.upto("first")
c.interrupt()
rc, out, err = c.finish()
check("second_one_exits", up and first and rc == 130,
      "rc %r out %r err %r" % (rc, out, err))

# the REPL: Ctrl-C at the prompt gives a fresh prompt; during a chunk it
# cancels the chunk; the REPL goes on, and exits 0 at EOF
c = Child(["-i"], stdin=subprocess.PIPE)
c.send("print('ready')\n")
up = c.upto("ready")
c.interrupt()
c.send("print('still here')\n")
here = c.upto("still here")
c.send("print('sleeping') aio.sleep(100) print('not reached')\n")
slept = c.upto("sleeping")
c.interrupt()
c.send("print('after')\n")
after = c.upto("after")
rc, out, err = c.finish()
check("repl_goes_on", up and here and slept and after and rc == 0 and
      "not reached" not in out and "interrupted" in err,
      "rc %r out %r err %r" % (rc, out, err))

sys.exit(1 if failures else 0)
