#!/usr/bin/env python3
"""As lua5.4's REPL: '=' with continuation lines, _PROMPT and _PROMPT2,
tracebacks, a chunk of several lines as one history entry."""
import os
import re
import shutil
import replpty
from replpty import Repl, check, done

LUA = shutil.which("lua5.4")


def error_block(text, first):
    """The lines from the one starting with `first` up to the next prompt."""
    lines = text.split("\n")
    for i, l in enumerate(lines):
        if l.startswith(first) and not l.startswith(first + "'"):
            block = [l]
            for l2 in lines[i + 1:]:
                if re.match(r"^(>|P1>) ", l2) or l2.strip() in (">", "P1>"):
                    break
                block.append(l2)
            return "\n".join(block).rstrip()
    return None


# audit: "=1 +" then "2" said "syntax error" then printed 2: the
# continuation retried the line with its '='; lua.c goes on from "return 1 +"
r = Repl()
try:
    m = r.mark()
    r.type("=1 +")
    r.type("2")
    check("equals_continues", r.expect(r"^3$", since=m) and
          "unexpected" not in r.text()[m:], r.tail())

    # audit: _PROMPT and _PROMPT2 were ignored
    r.type('_PROMPT = "P1> " _PROMPT2 = setmetatable({}, '
           '{__tostring = function() return "P2>> " end})')
    m = r.mark()
    r.type("for i = 1, 2 do")
    check("prompt2_global", r.expect(r"^P2>> $", since=m), r.tail())
    r.type("end")
    check("prompt_global", r.expect(r"^P1> $", since=m), r.tail())
    m = r.mark()
    r.type("_PROMPT = setmetatable({}, "
           "{__tostring = function() error('no prompt') end})")
    check("prompt_error_default", r.expect(r"^> $", since=m), r.tail())
    r.type("_PROMPT = nil _PROMPT2 = nil")
finally:
    r.close()

# a chunk's task, kept to look at its error, is let go once it ran: its
# results are garbage while the prompt waits
r = Repl()
try:
    r.type("bg = aio.spawn(function() while true do collectgarbage() "
           "aio.sleep(0.05) end end)")
    m = r.mark()
    r.type("return setmetatable({}, {__gc = function() print('gone') end})")
    check("chunk_results_collected", r.expect(r"^gone$", since=m, timeout=2),
          r.tail())
finally:
    r.close()

# audit: a runtime error's traceback lacked lua5.4's last line "[C]: in ?";
# the same lines typed into lua5.4 on a terminal give the same message
chunks = ['error("tb-1")',
          "t = setmetatable({}, {__index = function(t, k) error('tb-2') end})"
          " return t.x",
          "error(setmetatable({}, {__tostring = function() return 'tb-3' end}))",
          "error({})"]
firsts = ["stdin:1: tb-1", "stdin:1: tb-2", "tb-3", "(error object"]
got = {}
AIOLUA = replpty.AIOLUA
for name, prog in (("aiolua", AIOLUA), ("lua5.4", LUA)):
    if prog is None:
        continue
    replpty.AIOLUA = prog
    r = Repl()
    try:
        got[name] = []
        for c, first in zip(chunks, firsts):
            m = r.mark()
            r.type(c)
            got[name].append(error_block(replpty.clean(r.raw[m:]), first))
    finally:
        r.close()
replpty.AIOLUA = AIOLUA
check("traceback_ends_in_c", got["aiolua"][0] is not None and
      got["aiolua"][0].endswith("\t[C]: in ?"), repr(got["aiolua"][0]))
if "lua5.4" in got:
    check("errors_as_lua54", got["aiolua"] == got["lua5.4"],
          "%r != %r" % (got["aiolua"], got["lua5.4"]))

# audit: a chunk of several lines was saved as one entry in memory but as
# one line each in the file, so the next run recalled them one by one;
# libedit's file format escapes the newlines (and blanks)
r = Repl()
try:
    r.type("for i = 1, 2 do")
    r.type("  io.write('hist-', i, ';')")
    r.type("end print()")
    r.type(r"x = 'a\\b'")  # a backslash: octal 134 in the file
    r.key("\x04")
    r.wait_exit()
    hist = open(os.path.join(r.home, ".aiolua_history")).read()
    check("history_file_libedit", hist.split("\n")[0] == "_HiStOrY_V2_" and
          len(hist.split("\n")) == 4, repr(hist))
finally:
    r.close()
r2 = Repl(home=r.home)
try:
    m = r2.mark()
    r2.key("\x1b[A")
    r2.key("\x1b[A")
    r2.key("\r")
    check("history_chunk_recalled", r2.expect(r"^hist-1;hist-2;$", since=m),
          r2.tail())
    m = r2.mark()
    r2.key("\x1b[A")
    r2.key("\x1b[A")
    r2.key("\r")
    r2.type("print(x, #x)")
    check("history_escapes", r2.expect(r"^a\\b\t3$", since=m), r2.tail())
finally:
    r2.close()

# a history file of earlier versions (plain lines) is read, and rewritten
# in libedit's format
r = Repl()
r.close()
path = os.path.join(r.home, ".aiolua_history")
with open(path, "w") as f:
    f.write("print('old-' .. 1)\nprint('old-' .. 2)\n")
r3 = Repl(home=r.home)
try:
    m = r3.mark()
    r3.key("\x1b[A")
    r3.key("\r")
    check("history_old_format", r3.expect(r"^old-2$", since=m), r3.tail())
    check("history_old_rewritten", open(path).read().startswith(
        "_HiStOrY_V2_\nprint('old-'\\040..\\0401)\n"), repr(open(path).read()))
finally:
    r3.close()
done()
