-- bench/timers.lua N: N tasks each sleeping d, d uniform in [0,1) (C3)
local aio = require "aio"
local n = tonumber(arg[1]) or 200000
math.randomseed(42)
local t0 = aio.now()
local tasks = {}
for i = 1, n do
  local d = math.random()
  tasks[i] = aio.spawn(function() aio.sleep(d) end)
end
for i = 1, n do tasks[i]:await() end
print(string.format("RESULT bench=timers n=%d count=%d op_s=%.6f", n, n, aio.now() - t0))
