-- tests/faults/script.lua: what the failing-allocator sweep runs
-- (tests/faults/faults.c): a server and clients over loopback, tasks that
-- sleep, a future, cancels at several wait points, closes.
local aio = require "aio"

local server = aio.start_server(function(r, w)
  local line = r:readline()
  if line then
    w:write(line)
    w:drain()
  end
  w:close()
  w:wait_closed()
end, "127.0.0.1", 0)
local _, port = server:getsockname()

local tasks = {}
for i = 1, 6 do
  tasks[i] = aio.spawn(function()
    local r, w = aio.open_connection("127.0.0.1", port)
    w:write("hello " .. i .. "\n")
    local got = r:readline()
    w:close()
    aio.sleep(0.001 * i)
    return got
  end)
end
local sleeper = aio.spawn(aio.sleep, 10)
local reader = aio.spawn(function()   -- cancelled inside a read
  local r, w = aio.open_connection("127.0.0.1", port)
  local ok, e = pcall(r.read, r)
  w:close()
  error(e, 0)
end)
aio.sleep(0.002)
sleeper:cancel("bye")
reader:cancel()
tasks[6]:cancel()
for i = 1, 5 do assert(tasks[i]:await() == "hello " .. i .. "\n") end
assert(not pcall(tasks[6].await, tasks[6]))
assert(not pcall(reader.await, reader))
assert(not pcall(sleeper.await, sleeper))

local f = aio.Future()
aio.spawn(function() aio.sleep(0) f:set_result("done") end)
assert(f:await() == "done")
local h = aio.loop():call_later(5, print)
h:cancel()

-- locks, queues, events and the combinators, with cancels in their waits
local lock, q, ev = aio.Lock(), aio.Queue(2), aio.Event()
local function locked(i)
  local g <close> = lock:hold()
  aio.sleep(0.001)
  q:put(i)
end
local producers = {}
for i = 1, 4 do producers[i] = aio.spawn(locked, i) end
local consumer = aio.spawn(function()
  local sum = 0
  for _ = 1, 3 do sum = sum + q:get() end
  ev:set()
  return sum
end)
producers[4]:cancel()
ev:wait()
assert(consumer:await() > 0)
assert(not pcall(aio.timeout, 0.001, aio.sleep, 1))
local a, b = aio.gather(function() aio.sleep(0) return 1 end,
                        function() return 2 end)
assert(a == 1 and b == 2)
for i = 1, 3 do pcall(producers[i].await, producers[i]) end
assert(not lock:locked())
server:close()
result = "ok"
