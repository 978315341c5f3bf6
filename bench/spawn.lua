-- bench/spawn.lua N: spawn N tasks that do nothing, then await each (C1)
local aio = require "aio"
local n = tonumber(arg[1]) or 200000
local function nothing() end
local t0 = aio.now()
local tasks = {}
for i = 1, n do tasks[i] = aio.spawn(nothing) end
for i = 1, n do tasks[i]:await() end
print(string.format("RESULT bench=spawn n=%d count=%d op_s=%.6f", n, n, aio.now() - t0))
