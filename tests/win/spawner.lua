-- tests/win/spawner.lua: a parent for process_win_spec.lua: it starts a
-- child that shares its stdout and never ends, says when both are up,
-- then waits for ever (arg[1] "wait") or exits at once (arg[1] "exit")
local b = aio.exec({ "build\\win\\aiolua.exe", "-e",
  "io.stderr:write('b up\\n') io.stderr:flush() while true do aio.sleep(1) end" },
  { stderr = "pipe" })
io.write((assert(b.stderr:readline()):gsub("%s+$", "")), "\n")
io.write("a up\n")
io.stdout:flush()
if arg[1] == "exit" then os.exit(0) end
while true do aio.sleep(1) end
