-- tests/lua/helper.lua: loaded by busted (.busted) before the specs, inside
-- aiolua's main task.  Every test runs under a deadline: a test still
-- waiting after LIMIT seconds has its wait cancelled, so it fails loudly
-- instead of hanging the suite.  Tasks a test leaves behind are cancelled
-- (and named on stderr) so that they cannot disturb the next test.
package.path = "tests/lua/?.lua;" .. package.path

local busted = require "busted"
local aio = require "aio"

local LIMIT = tonumber(os.getenv("AIOLUA_TEST_LIMIT")) or 15
local timer

busted.subscribe({ "test", "start" }, function(element)
  local main = aio.current_task()
  if main then
    -- on the real clock: a test on aio.testing's virtual clock jumps
    -- over loop timers, not over this watchdog
    timer = aio.loop():call_later(LIMIT, function()
      main:cancel(string.format("test still waiting after %g s (tests/lua/helper.lua)", LIMIT))
    end):realtime()
  end
  return nil, true
end)

busted.subscribe({ "test", "end" }, function(element)
  if timer then timer:cancel() timer = nil end
  local main = aio.current_task()
  if not main then return nil, true end
  local function others()
    local left = {}
    for _, t in ipairs(aio.all_tasks()) do
      if t ~= main then left[#left + 1] = t end
    end
    return left
  end
  local left = others()
  if #left > 0 then
    -- tasks the test's last call woke (a server's accept loop after
    -- srv:close(), a handler after the peer closed) end in a step or two
    for _ = 1, 3 do aio.sleep(0) end
    left = others()
  end
  if #left > 0 then
    io.stderr:write(string.format("helper: test %q left %d task(s) running; cancelling them\n",
      element.name or "?", #left))
    for _, t in ipairs(left) do t:cancel() end
    for _, t in ipairs(left) do pcall(t.await, t) end
  end
  return nil, true
end)
