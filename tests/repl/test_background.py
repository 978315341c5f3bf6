#!/usr/bin/env python3
"""The loop runs while the prompt waits; task output keeps the prompt."""
import os
import re
import socket
import time
from replpty import Repl, check, done

r = Repl()
try:
    path = os.path.join(r.home, "ticks")
    r.type("f = io.open(%r, 'a')" % path)
    r.type('t = aio.spawn(function() for i = 1, 1000 do f:write("tick\\n") '
           'f:flush() aio.sleep(0.02) end end)')
    time.sleep(0.4)
    n1 = open(path).read().count("\n") if os.path.exists(path) else 0
    time.sleep(0.5)
    n2 = open(path).read().count("\n") if os.path.exists(path) else 0
    check("task_runs_while_idle", n1 > 0 and n2 > n1,
          "ticks %d -> %d" % (n1, n2))
    r.type("t:cancel()")

    # a task prints while a line is half typed: the line survives
    m = r.mark()
    r.send('p = aio.spawn(function() aio.sleep(0.5) print("bg-out") end)\r')
    r.send("x = 4")
    time.sleep(0.9)
    check("background_print_shown", r.expect(r"^bg-out$", since=m), r.tail())
    check("prompt_redrawn", r.expect(r"^bg-out\n> x = 4$", since=m),
          repr(r.raw[m:][-80:]))
    r.type("2")
    m = r.mark()
    r.type("x")
    check("line_intact_after_output", r.expect(r"^42$", since=m), r.tail())

    # io.write without a newline still leaves the prompt on its own line
    m = r.mark()
    r.send('q = aio.spawn(function() aio.sleep(0.5) io.write("partial") end)\r')
    r.send("y = 1")
    time.sleep(0.9)
    check("partial_write", r.expect(r"^partial\n> y = 1$", since=m),
          repr(r.raw[m:][-80:]))
    r.type("")

    # a server started at the prompt serves while the prompt waits
    r.type('srv = aio.start_server(function(rd, wr) local l = rd:readline() '
           'wr:write("echo:" .. l) wr:close() end, "127.0.0.1", 0)')
    m = r.mark()
    r.type("srv:getsockname()")
    ok = r.expect(r"^127\.0\.0\.1\t(\d+)$", since=m)
    port = re.search(r"^127\.0\.0\.1\t(\d+)$", r.text(), re.M)
    got = b""
    if ok and port:
        c = socket.create_connection(("127.0.0.1", int(port.group(1))), 3)
        c.settimeout(3)
        c.sendall(b"ping\n")
        try:
            while True:
                d = c.recv(100)
                if not d:
                    break
                got += d
        except OSError:
            pass
        c.close()
    check("server_serves_at_prompt", got == b"echo:ping\n", repr(got) + " " +
          r.tail())
finally:
    r.close()
done()
