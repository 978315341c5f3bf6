#!/usr/bin/env python3
"""Continuation lines, errors and going on after them."""
from replpty import Repl, check, done

r = Repl()
try:
    m = r.mark()
    r.type("for i = 1, 3 do")
    check("continuation_prompt", r.expect(r"^>> ?$", since=m), r.tail())
    r.type("  io.write(i, ';')")
    r.type("end print()")
    check("multiline_runs", r.expect(r"^1;2;3;$", since=m), r.tail())
    m = r.mark()
    r.type("function f(a,")
    r.type("  b) return a + b end")
    r.type("f(2, 3)")
    check("multiline_function", r.expect(r"^5$", since=m), r.tail())
    m = r.mark()
    r.type('error("boom-1")')
    check("error_message", r.expect(r"stdin:1: boom-1", since=m), r.tail())
    check("error_traceback", r.expect(r"stack traceback", since=m), r.tail())
    m = r.mark()
    r.type("local function g() aio.sleep(0.01) error('after-wait') end g()")
    check("error_after_wait", r.expect(r"after-wait", since=m), r.tail())
    m = r.mark()
    r.type("x = = 1")
    check("syntax_error", r.expect(r"stdin:1: .*near '='", since=m), r.tail())
    m = r.mark()
    r.type('print("still-going")')
    check("goes_on_after_errors", r.expect(r"^still-going$", since=m), r.tail())
    m = r.mark()
    r.type("aio.wait_nonexistent()")
    check("runtime_error_goes_on", r.expect(r"attempt to call", since=m),
          r.tail())
    m = r.mark()
    r.type("setmetatable({}, {__tostring = function() return 'obj!' end})")
    check("tostring_values", r.expect(r"^obj!$", since=m), r.tail())
finally:
    r.close()

# non-ASCII input survives the line editor, also in the C locale
for lang in ("C.UTF-8", "C"):
    r = Repl(env={"LANG": lang, "LC_ALL": ""})
    try:
        m = r.mark()
        r.type("s = 'h\u00e9llo' print(s, #s)")
        check("utf8_input_" + lang.replace(".", "_"),
              r.expect("^h\u00e9llo\t6$", since=m), r.tail())
    finally:
        r.close()
done()
