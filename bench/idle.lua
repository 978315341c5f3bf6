-- bench/idle.lua N: N tasks sleeping 1 s at the same time; peak RSS / N (C4)
local aio = require "aio"
local n = tonumber(arg[1]) or 100000
local function sleeper() aio.sleep(1.0) end
local t0 = aio.now()
local tasks = {}
for i = 1, n do tasks[i] = aio.spawn(sleeper) end
for i = 1, n do tasks[i]:await() end
print(string.format("RESULT bench=idle n=%d count=%d op_s=%.6f", n, n, aio.now() - t0))
