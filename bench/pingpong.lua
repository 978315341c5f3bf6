-- bench/pingpong.lua N: N messages between two tasks, each hand-off a
-- future (C2 uses aio.Queue(1); this is the scheduler's part of it)
local aio = require "aio"
local n = tonumber(arg[1]) or 1000000
local rounds = n // 2
local t0 = aio.now()
local to_b, to_a = aio.Future(), aio.Future()
local b = aio.spawn(function()
  for _ = 1, rounds do
    local f = to_b
    local v = f:await()
    to_b = aio.Future()
    to_a:set_result(v)
  end
end)
local last
for i = 1, rounds do
  local reply = to_a
  to_b:set_result(i)
  last = reply:await()
  to_a = aio.Future()
end
b:await()
assert(rounds == 0 or last == rounds, "pingpong lost a message")
print(string.format("RESULT bench=pingpong n=%d count=%d op_s=%.6f", n, rounds * 2, aio.now() - t0))
