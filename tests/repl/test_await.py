#!/usr/bin/env python3
"""Top-level await and printing values at the prompt (issue 7)."""
import time
from replpty import Repl, check, done

r = Repl()
try:
    check("banner", r.expect(r"^aiolua \d+\.\d+\.\d+ \(Lua 5\.4"),
          "no version line: " + r.tail())
    r.type("1+1")
    check("expression_prints", r.expect(r"^2$"), r.tail())
    m = r.mark()
    r.type('return 1, nil, "z"')
    check("values_tab_separated", r.expect(r"^1\tnil\tz$", since=m), r.tail())
    m = r.mark()
    r.type('=3*5')
    check("equals_prefix", r.expect(r"^15$", since=m), r.tail())
    m = r.mark()
    r.type("t0 = aio.now()")
    r.type("aio.sleep(0.3)")
    r.type('print("slept", aio.now() - t0 >= 0.29)')
    check("sleep_at_prompt", r.expect(r"^slept\ttrue$", since=m), r.tail())
    m = r.mark()
    r.type('t = aio.spawn(function() aio.sleep(0.1) return "awaited-" .. 42 end)')
    r.type("t:await()")
    check("await_task", r.expect(r"^awaited-42$", since=m), r.tail())
    m = r.mark()
    r.type('print(type(aio), rawequal(aio, require "aio"))')
    check("aio_global", r.expect(r"^table\ttrue$", since=m), r.tail())
    m = r.mark()
    r.type("x = 10")
    r.type("x * 2")
    check("globals_persist", r.expect(r"^20$", since=m), r.tail())
    m = r.mark()
    r.type("local y = 5")
    r.type("y")
    check("locals_per_chunk", r.expect(r"^nil$", since=m), r.tail())
    # the chunks share one context (as at Python's asyncio REPL), and a
    # callback scheduled at the prompt runs in a copy of it
    m = r.mark()
    r.type('v = aio.ContextVar("v") v:set("set-at-prompt")')
    r.type('print("ctx", v:get())')
    check("context_persists", r.expect(r"^ctx\tset-at-prompt$", since=m),
          r.tail())
    m = r.mark()
    r.type('aio.loop():call_soon(function() print("cb", v:get()) end) '
           'v:set("later") aio.sleep(0.01)')
    check("callback_context_copy", r.expect(r"^cb\tset-at-prompt$", since=m),
          r.tail())
finally:
    r.close()
done()
