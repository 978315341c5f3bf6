-- aio.testing: a virtual clock for tests.
--
--   aio.testing.run(fn, { autojump = true })
--
-- runs fn as a task on a loop whose clock is virtual: sleeps, timeouts,
-- call_later and aio.now() follow it, real I/O still works.  With autojump
-- the clock jumps to the next deadline whenever the loop is idle (nothing
-- ready, no I/O after a non-blocking poll, no task waiting on a thread, a
-- child or a pipe: the clock then runs at real speed), so an hour of timers takes
-- milliseconds and always fires in the same order.  Without it the clock
-- moves only by aio.testing.advance(seconds).  Outside a loop it makes its
-- own (as aio.run); inside one (busted under aiolua) it switches the running
-- loop to virtual time for fn and back afterwards.
local core = require "_aio.core"

local M = {}

local users = setmetatable({}, { __mode = "k" })  -- loop -> its runs

function M.run(fn, opts, ...)
  if type(fn) ~= "function" then
    error("bad argument #1 to 'aio.testing.run' (function expected, got " .. type(fn) .. ")", 2)
  end
  require("aio.errors").check_opts(opts, "aio.testing.run", 2)
  local autojump = opts and opts.autojump or false
  if not pcall(core.loop) then
    return core.run_virtual(autojump, fn, ...)
  end
  -- several at once on one loop (tasks of a test suite): the clock is
  -- virtual until the last of them ends, then as it was before the first
  local loop = core.loop()
  local u = users[loop]
  -- (each run's autojump holds while it runs: nested in an autojump run, a
  -- run without it moves the clock by advance only, under aiolua as under
  -- a stock lua5.4, whose outer run made the loop)
  local was, was_jump = core.set_virtual(true, autojump)
  if u == nil then
    u = { was = was, was_jump = was_jump }  -- and the runs, in start order
    users[loop] = u
  end
  local me = { autojump = autojump }
  u[#u + 1] = me
  local t = core.spawn(fn, ...)
  local res = table.pack(pcall(t.await, t))
  for i = #u, 1, -1 do
    if u[i] == me then table.remove(u, i) break end
  end
  if #u == 0 then
    users[loop] = nil
    core.set_virtual(u.was, u.was_jump)
  else  -- the latest of those still running rules
    core.set_virtual(true, u[#u].autojump)
  end
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

-- move the clock by `seconds`, fire what is due, and let what that woke
-- run until nothing is left ready: also the tasks a timer's callback woke
-- (wait_for's, a timeout's, a call_later's future), several hand-offs deep.
-- A task that yields for ever (sleep(0) in a loop) ends it after a bound.
local advance, ready, sleep = core.advance, core.ready, core.sleep
function M.advance(seconds)
  if type(seconds) ~= "number" or seconds ~= seconds or seconds == math.huge then
    error("bad argument #1 to 'aio.testing.advance' (a finite number expected, got "
      .. (type(seconds) ~= "number" and type(seconds) or seconds ~= seconds and "nan"
      or tostring(seconds)) .. ")", 2)
  end
  advance(seconds)
  if core.current_task() == nil then return end  -- a callback: it cannot wait
  for _ = 1, 100 do
    if ready() == 0 then break end
    sleep(0)
  end
end

return M
