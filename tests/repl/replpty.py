"""replpty.py: drive the aiolua REPL on a pseudo-terminal, as a person would.

    r = Repl()                 # aiolua on a new pty, HOME a fresh directory
    r.type('1+1')              # the keys, then Enter
    r.expect(r'^2$')           # wait for a line of output matching (re.M)
    r.key('\\x03')              # Ctrl-C;  '\\x04' Ctrl-D;  '\\x1b[A' Up
    r.wait_exit()              # the exit status

Tests call check(name, ok, why) and print "PASS repl/<name>" or
"FAIL repl/<name>: why" (tests/run.sh counts those lines).
"""
import os
import pty
import re
import select
import signal
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
AIOLUA = os.environ.get("AIOLUA") or os.path.join(ROOT, "aiolua")
if not os.path.isabs(AIOLUA):
    AIOLUA = os.path.join(ROOT, AIOLUA)

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]|\x07")

failures = 0


def check(name, ok, why=""):
    global failures
    if ok:
        print("PASS repl/%s" % name)
    else:
        failures += 1
        print("FAIL repl/%s: %s" % (name, why))
    sys.stdout.flush()
    return ok


def clean(raw):
    """The text of raw terminal output: escapes dropped, lines cut at \\r\\n;
    a bare \\r (the line redrawn) keeps what follows it."""
    text = ANSI.sub("", raw.replace("\r\n", "\n"))
    lines = []
    for line in text.split("\n"):
        if "\r" in line:
            line = line.rsplit("\r", 1)[1] or line.replace("\r", "")
        lines.append(line)
    return "\n".join(lines)


class Repl:
    def __init__(self, args=(), home=None, env=None):
        self.home = home or tempfile.mkdtemp(prefix="aiorepl.")
        e = dict(os.environ)
        e.update({"HOME": self.home, "TERM": "xterm", "LANG": "C.UTF-8"})
        for k in ("LUA_INIT", "LUA_INIT_5_4", "LUA_PATH", "LUA_CPATH"):
            e.pop(k, None)
        if env:
            e.update(env)
        pid, fd = pty.fork()
        if pid == 0:
            os.chdir(self.home)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.execve(AIOLUA, [AIOLUA] + list(args), e)
        self.pid, self.fd = pid, fd
        self.raw = ""
        self.status = None
        self.wait_idle()

    def read(self, timeout=0.05):
        """Take what output there is, waiting at most timeout s."""
        got = False
        while True:
            r, _, _ = select.select([self.fd], [], [], timeout)
            if not r:
                return got
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                return got
            if not data:
                return got
            self.raw += data.decode("utf-8", "replace")
            got = True
            timeout = 0.02

    def text(self):
        return clean(self.raw)

    def mark(self):
        """A position in the output; expect(..., since=mark) looks after it."""
        self.read(0)
        return len(self.raw)

    def send(self, s):
        os.write(self.fd, s.encode())
        time.sleep(0.05)

    def type(self, line):
        self.send(line + "\r")
        self.wait_idle()

    def key(self, k):
        self.send(k)
        self.wait_idle()

    def wait_idle(self, quiet=0.3, limit=5):
        """Until the output has been still for `quiet` s."""
        end = time.time() + limit
        while time.time() < end:
            if not self.read(quiet):
                return

    def expect(self, pattern, timeout=5, since=0):
        end = time.time() + timeout
        rx = re.compile(pattern, re.M)
        while True:
            if rx.search(clean(self.raw[since:])):
                return True
            if time.time() > end:
                return False
            self.read(0.05)

    def tail(self, n=6):
        lines = [l for l in self.text().split("\n") if l.strip()]
        return "|".join(lines[-n:])

    def wait_exit(self, timeout=5):
        end = time.time() + timeout
        while time.time() < end:
            self.read(0.05)
            pid, st = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = (os.WEXITSTATUS(st) if os.WIFEXITED(st)
                               else -os.WTERMSIG(st))
                self.read(0)
                return self.status
        return None

    def close(self):
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except OSError:
                pass
        try:
            os.close(self.fd)
        except OSError:
            pass


def done():
    sys.exit(1 if failures else 0)
