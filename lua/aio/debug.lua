-- aio.debug: seeing what the tasks do.  aio.dump_tasks([file]) prints every
-- live task: name, state, what it waits on, and where (its traceback).
-- `aiolua` prints the same on SIGQUIT (Ctrl-\) and goes on.
local core = require "_aio.core"

local M = {}

-- a wait named after its method ("aio.Queue.get") in words too ("queue
-- get"), as the reasons a reader looks for: lock, queue get, event wait ...
local function words(what)
  local class, method = what:match("^aio%.(%a+)%.([%a_]+)$")
  if not class then return what end
  return string.format("%s %s (%s)", class:lower(), method, what)
end

-- the aio call a task waits in when it awaits a future of aio's own
-- making: the innermost line of its traceback inside one of these
-- functions, found by where they are defined (so a call through a local
-- alias counts too).  Only modules already loaded are looked at (the
-- aio table holds their names; package.loaded may have forgotten them).
local function combinator_ranges()
  local aio, fns = require "aio", {}
  for _, name in ipairs { "gather", "wait", "as_completed", "taskgroup" } do
    fns["aio." .. name] = rawget(aio, name)
  end
  if rawget(aio, "start_server") ~= nil then  -- aio.stream has loaded
    fns["server:serve_forever"] = require("aio.stream").Server.serve_forever
  end
  local ranges = {}
  for shown, fn in pairs(fns) do
    if type(fn) == "function" then
      local info = debug.getinfo(fn, "S")
      ranges[#ranges + 1] = { info.short_src, info.linedefined,
                              info.lastlinedefined, shown }
    end
  end
  return ranges
end

local function awaited_by(stack, ranges)
  for src, line in (stack or ""):gmatch("\n\t([^\n]-):(%d+): in ") do
    line = tonumber(line)
    for _, r in ipairs(ranges) do
      if src == r[1] and line >= r[2] and line <= r[3] then return r[4] end
    end
  end
end

local function describe(t, now, ranges, stack)
  local state, what, detail = t:waiting()
  if state ~= "waiting" then return state end
  what = tostring(what)
  if what == "future" and detail == nil then
    local by = awaited_by(stack, ranges)
    if by then return "waiting: future (in " .. by .. ")" end
  end
  if what == "sleep" and type(detail) == "number" then
    return string.format("waiting: sleep until %.3f (in %.3f s)", detail, detail - now)
  elseif what == "task" and detail then
    return "waiting: task " .. tostring(detail.name)
  elseif what == "signal" and type(detail) == "string" then
    return "waiting: signal (" .. detail .. ")"
  elseif what == "process" and math.type(detail) == "integer" then
    return "waiting: child pid " .. detail .. " (process wait)"
  elseif type(detail) == "string" and (detail:find("^child pid") or detail:find("^socket ")) then
    -- a pipe; a server's accept or a datagram socket's recvfrom: its own address
    return string.format("waiting: %s on %s", what, detail)
  elseif type(detail) == "string" then  -- a stream's wait: its peer
    return string.format("waiting: %s on peer %s", what, detail)
  elseif type(detail) == "number" then
    return string.format("waiting: %s (deadline %.3f, in %.3f s)", words(what), detail, detail - now)
  end
  return "waiting: " .. words(what)
end

function M.dump_tasks(file)
  file = file or io.stderr
  local ok, write = pcall(function() return file.write end)
  if not ok or (type(write) ~= "function" and not (getmetatable(write) or {}).__call) then
    error("bad argument #1 to 'aio.dump_tasks' (a file or an object with a write method expected, got "
      .. type(file) .. ")", 2)
  end
  local tasks = core.all_tasks()
  local ok, loop = pcall(core.loop)
  local now = ok and loop:time() or core.now()
  local current = core.current_task()
  local ranges = combinator_ranges()
  file:write(string.format("aiolua: %d live task(s) at %.3f\n", #tasks, now))
  for _, t in ipairs(tasks) do
    local stack = t:stack()
    file:write(string.format("- %s: %s%s\n", t.name,
      describe(t, now, ranges, stack), t == current and " (the caller)" or ""))
    if stack and t ~= current then
      file:write("  ", (stack:gsub("\n", "\n  ")), "\n")
    end
  end
  if file.flush then file:flush() end
end

return M
