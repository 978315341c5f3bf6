-- examples/tour.lua: a short tour of aiolua.  Run it with `make run` or
-- `./aiolua examples/tour.lua`.  The script's main chunk is the main task,
-- so waiting calls work at top level.
local aio = require "aio"

local t0 = aio.now()
local function say(fmt, ...)
  print(string.format("[%5.3f s] " .. fmt, aio.now() - t0, ...))
end

-- 1. Tasks run concurrently: three workers sleep at the same time, so the
--    whole thing takes as long as the slowest one, not the sum.
local function worker(name, delay)
  say("%s starts, will take %.2f s", name, delay)
  aio.sleep(delay)
  say("%s done", name)
  return name:upper()
end

local tasks = {}
for i, d in ipairs { 0.30, 0.10, 0.20 } do
  tasks[i] = aio.spawn(worker, "worker" .. i, d)
end
local results = {}
for i, t in ipairs(tasks) do results[i] = t:await() end
say("all done: %s (took about 0.30 s, not 0.60 s)", table.concat(results, " "))

-- 2. A future hands a value from one task to another.
local answer = aio.Future()
aio.spawn(function()
  aio.sleep(0.05)
  answer:set_result(42, "the answer")
end)
say("waiting for a future ...")
say("got %d (%s)", answer:await())

-- 3. Cancellation arrives as a CancelledError at the wait; cleanup runs.
local sleeper = aio.spawn(function()
  local guard <close> = setmetatable({}, {
    __close = function() say("sleeper: cleanup ran (to-be-closed variable)") end,
  })
  aio.sleep(3600)
end)
aio.sleep(0.05)
sleeper:cancel("no more waiting")
local ok, err = pcall(sleeper.await, sleeper)
say("sleeper ended: %s (%s)", tostring(err), aio.errtype(err))

-- 4. Waits work inside user coroutines too: a generator that sleeps.
local ticks = coroutine.wrap(function()
  for i = 1, 3 do
    aio.sleep(0.02)
    coroutine.yield(i)
  end
end)
for _ = 1, 3 do say("generator yielded %d", ticks()) end

-- 5. Plain callbacks on the loop.
local loop = aio.loop()
local fired = aio.Future()
loop:call_later(0.03, function(msg) say("call_later: %s", msg) fired:set_result() end, "hello")
fired:await()

say("tour finished; backend %s, aiolua %s", aio.backend, aio.version)
