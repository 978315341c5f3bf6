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
-- (aio.testing.run with autojump): timers take no real time, so a test of
-- an hour-long timeout passes at once; the limit still counts real seconds
-- (it is there to stop a test that hangs).
local aio = require "aio"
local core = require "_aio.core"

local M = {}

M.default_timeout = 5

-- After the limit the body is cancelled; it then has this long to end
-- (its cleanup may wait, or it may await a task that ends slowly: a
-- cancelled await waits for the awaited task, as asyncio's does) before
-- the test fails without it.
M.cancel_grace = 1

-- wait until task t is done or `limit` real seconds have passed (also on
-- the virtual clock: a real-time handle); raises what cancels the caller
local function wait_real(t, limit)
  local expired = aio.Future()
  local h = aio.loop():call_later(limit, function()
    if not expired:done() then expired:set_result(true) end
  end):realtime()
  local ok, e = pcall(aio.wait, { t, expired }, { return_when = "first" })
  h:cancel()
  if not ok then error(e, 0) end
end

-- run fn(...) as a task; fail with a clear message after `limit` seconds
local function run_limited(limit, fn, ...)
  local t = aio.spawn(fn, ...)
  local token = core.newerror("CancelledError",
    string.format("test timed out after %g s (aio.busted)", limit))
  local ok, e = pcall(wait_real, t, limit)
  if not ok then t:cancel() error(e, 0) end  -- the test itself was cancelled
  local timed_out = false
  if not t:done() then
    timed_out = true
    t:cancel(token)
    wait_real(t, M.cancel_grace)
    if not t:done() then
      error(string.format("test timed out after %g s (aio.busted): it was still "
        .. "waiting, has been cancelled, and has not ended %g s later", limit,
        M.cancel_grace), 0)
    end
  end
  local res = table.pack(pcall(t.result, t))
  if timed_out and res[1] then
    -- it caught the time limit's cancel and ended as if nothing happened:
    -- it still overran its limit
    error(string.format("test timed out after %g s (aio.busted): it was still "
      .. "waiting, has been cancelled, and caught the cancel", limit), 0)
  end
  if not res[1] then
    -- the token itself, or (the body awaited a task, which got the
    -- request) a CancelledError with its message
    local err = res[2]
    if rawequal(err, token) or (aio.errtype(err) == "CancelledError"
        and type(err) == "table" and err.message == token.message) then
      error(string.format("test timed out after %g s (aio.busted): it was still "
        .. "waiting and has been cancelled", limit), 0)
    end
    error(err, 0)
  end
  return table.unpack(res, 2, res.n)
end

function M.async(fn, opts)
  if type(fn) ~= "function" then
    error("bad argument #1 to 'aio.busted.async' (function expected, got " .. type(fn) .. ")", 2)
  end
  require("aio.errors").check_opts(opts, "aio.busted.async", 2)
  if opts and opts.timeout ~= nil and not (type(opts.timeout) == "number" and opts.timeout > 0) then
    error("aio.busted.async: opts.timeout must be a positive number", 2)
  end
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
