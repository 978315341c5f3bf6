#!/usr/bin/env python3
"""Tab completion: Lua names from the globals, file names in strings."""
import os
from replpty import Repl, check, clean, done

r = Repl()
try:
    # a field of a table
    m = r.mark()
    r.key("x = aio.sle\t")
    r.type("")
    r.type("print('field', x == aio.sleep)")
    check("field_completes", r.expect(r"^field\ttrue$", since=m), r.tail())
    # a method after a colon, from the object's metatable
    r.type("l = aio.Lock()")
    m = r.mark()
    r.key("l:acq\t")
    r.type("()")
    r.type("print('method', l:locked())")
    check("method_completes", r.expect(r"^method\ttrue$", since=m), r.tail())
    # a string's methods
    r.type('s = "abc"')
    m = r.mark()
    r.key("s:upp\t")
    r.type("()")
    check("string_method_completes", r.expect(r"^ABC$", since=m), r.tail())
    # a global
    m = r.mark()
    r.key("pri\t")
    r.type("('global-' .. 7)")
    check("global_completes", r.expect(r"^global-7$", since=m), r.tail())
    # several candidates: the second Tab lists them
    m = r.mark()
    r.key("aio.spawn\t\t")
    check("candidates_listed", r.expect(r"aio\.spawn_eager", since=m),
          r.tail())
    r.key("\x15")  # Ctrl-U: drop the line
    # in a string: a file name
    open(os.path.join(r.home, "completeme.txt"), "w").close()
    m = r.mark()
    r.key('print("c-" .. tostring(io.open("complet\t')
    r.type('") ~= nil))')
    check("file_name_in_string", r.expect(r"^c-true$", since=m), r.tail())
    # a path whose __index fails or would wait completes nothing, harmlessly
    r.type("t = setmetatable({}, {__index = function() error('boom') end})")
    r.type("w = setmetatable({}, {__index = function() aio.sleep(0) end})")
    m = r.mark()
    r.key("t.a.b\t")
    r.key("\x15")
    r.key("w.a.b\t")
    r.key("\x15")
    r.key("nosuch.field\t")
    r.key("\x15")
    r.type("print('still-' .. 'here')")
    check("failing_paths_harmless", r.expect(r"^still-here$", since=m),
          r.tail())
    check("no_error_shown", "boom" not in clean(r.raw[m:]), r.tail())
finally:
    r.close()
done()
