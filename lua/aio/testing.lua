-- aio.testing: a virtual clock for tests.
--
--   aio.testing.run(fn, { autojump = true })
--
-- runs fn as a task on a loop whose clock is virtual: sleeps, timeouts,
-- call_later and aio.now() follow it, real I/O still works.  With autojump
-- the clock jumps to the next deadline whenever the loop is idle (nothing
-- ready, no I/O after a non-blocking poll), so an hour of timers takes
-- milliseconds and always fires in the same order.  Without it the clock
-- moves only by aio.testing.advance(seconds).  Outside a loop it makes its
-- own (as aio.run); inside one (busted under aiolua) it switches the running
-- loop to virtual time for fn and back afterwards.
local core = require "_aio.core"

local M = {}

function M.run(fn, opts, ...)
  assert(type(fn) == "function", "aio.testing.run: a function expected")
  local autojump = opts and opts.autojump or false
  if not pcall(core.loop) then
    return core.run_virtual(autojump, fn, ...)
  end
  local was, was_jump = core.set_virtual(true, autojump)
  local t = core.spawn(fn, ...)
  local res = table.pack(pcall(t.await, t))
  core.set_virtual(was, was_jump)
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

M.advance = core.advance

return M
