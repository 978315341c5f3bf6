-- aio.busted: async test bodies for busted.
--
--   local async = require("aio.busted").async
--   it("waits", async(function() aio.sleep(0.1) end))
--   it("slow", async(function() ... end, { timeout = 30 }))
--
-- Under a stock lua5.4 each body runs in its own aio.run; under
-- `busted --lua=aiolua` (a loop already runs) it runs as a task of that loop.
-- Either way a body still running after the limit (default 5 s) is
-- cancelled and the test fails with a message saying so, instead of hanging.
-- `async(fn, { virtual = true })` runs the body on the virtual clock
-- (aio.testing.run with autojump): timers take no real time; the limit is
-- then counted in virtual seconds.
local aio = require "aio"
local core = require "_aio.core"

local M = {}

M.default_timeout = 5

-- run fn(...) as a task; fail with a clear message after `limit` seconds
local function run_limited(limit, fn, ...)
  local t = aio.spawn(fn, ...)
  local token = core.newerror("CancelledError",
    string.format("test timed out after %g s (aio.busted)", limit))
  local timer = aio.loop():call_later(limit, function()
    t:cancel(token)
  end)
  local res = table.pack(pcall(t.await, t))
  timer:cancel()
  if not res[1] then
    -- the token itself, or (the body awaited a task, which got the
    -- request) a CancelledError with its message
    local e = res[2]
    if rawequal(e, token) or (aio.errtype(e) == "CancelledError"
        and type(e) == "table" and e.message == token.message) then
      error(string.format("test timed out after %g s (aio.busted): it was "
        .. "still waiting and has been cancelled", limit), 0)
    end
    error(res[2], 0)
  end
  return table.unpack(res, 2, res.n)
end

function M.async(fn, opts)
  assert(type(fn) == "function", "aio.busted.async: a function expected")
  local limit = opts and opts.timeout or M.default_timeout
  local virtual = opts and opts.virtual
  return function(...)
    if virtual then
      return aio.testing.run(run_limited, { autojump = true }, limit, fn, ...)
    end
    if pcall(aio.loop) then
      return run_limited(limit, fn, ...)
    end
    return aio.run(run_limited, limit, fn, ...)
  end
end

return M
