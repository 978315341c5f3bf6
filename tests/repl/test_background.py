#!/usr/bin/env python3
"""The loop runs while the prompt waits; task output keeps the prompt."""
import os
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
finally:
    r.close()
done()
