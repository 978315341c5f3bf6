-- lock hand-off: two tasks take turns on one aio.Lock, N acquisitions in
-- all; every release hands the lock to the other task, which is waiting
-- (FIFO), so each acquisition is one task switch.
-- usage: ./aiolua bench/lock.lua [N=1000000]
local aio = require "aio"

local n = tonumber(arg and arg[1]) or 1000000
local t0 = aio.now()
local lock = aio.Lock()
local count = 0
local function worker(times)
  for _ = 1, times do
    lock:acquire()
    count = count + 1
    aio.sleep(0)  -- hold it across a switch: the other task queues
    lock:release()
  end
end
local a = aio.spawn(worker, n // 2)
local b = aio.spawn(worker, n - n // 2)
a:await()
b:await()
assert(count == n, "lock: lost an acquisition")
print(string.format("RESULT bench=lock n=%d count=%d op_s=%.6f", n, count, aio.now() - t0))
