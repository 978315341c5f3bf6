-- tests/soak/server.lua: the soak's echo server (tests/soak/soak.lua runs
-- it).  Echoes lines; a killer task cancels a random handler now and then
-- and some handlers close early, so the server side cancels and closes too.
-- Commands on stdin: "warm" -> prints its figures after warm-up; "end" ->
-- waits for its handlers to end, prints its figures and exits.
local lfs = require "lfs"

local function fds()
  local n = 0
  for name in lfs.dir("/proc/self/fd") do
    if name ~= "." and name ~= ".." then n = n + 1 end
  end
  return n - 1
end

local function rss_kb()
  local f = io.open("/proc/self/statm")
  local _, res = f:read("n", "n")
  f:close()
  return res * 4
end

local function figures()
  for _ = 1, 3 do collectgarbage() aio.sleep(0.05) end
  return string.format("fds=%d tasks=%d rss_kb=%d lua_kb=%d", fds(),
    #aio.all_tasks(), rss_kb(), math.floor(collectgarbage("count")))
end

-- RSS every 5 s: a leak climbs, an allocator's high-water mark levels off
local samples = {}
aio.spawn(function()
  while true do
    aio.sleep(5)
    samples[#samples + 1] = string.format("%.1f", rss_kb() / 1024)
  end
end)

local active, handlers, served, cancelled, closed = 0, {}, 0, 0, 0
local srv = aio.start_server(function(r, w)
  local me = aio.current_task()
  active = active + 1
  handlers[me] = true
  local ok, e = pcall(function()
    while true do
      local line = r:readline()
      if not line then break end
      w:write(line)
      w:drain()
      served = served + 1
      if math.random(400) == 1 then closed = closed + 1 break end
    end
  end)
  handlers[me] = nil
  active = active - 1
  w:close()
  if not ok and aio.errtype(e) == "CancelledError" then cancelled = cancelled + 1 end
end, "127.0.0.1", 0, { backlog = 4096 })
local _, port = srv:getsockname()
local base = figures()  -- before any connection: the values to come back to
print(port, base)
io.stdout:flush()

local killing = true
local killer = aio.spawn(function()
  while killing do
    aio.sleep(0.01)
    local victim
    for t in pairs(handlers) do
      victim = t
      if math.random(8) == 1 then break end
    end
    if victim then victim:cancel() end
  end
end)

-- the commands arrive on stdin: read it on a worker-free stream
local stdin, stdin_w = require("_aio.stream").wrap(0)
while true do
  local cmd = stdin:readline()
  if cmd == nil or cmd == "end\n" then break end
  if cmd == "warm\n" then
    print("warm " .. figures() .. " active=" .. active)
    io.stdout:flush()
  end
end
killing = false
killer:await()
local deadline = aio.now() + 20
while active > 0 and aio.now() < deadline do aio.sleep(0.05) end
print(string.format("end %s active=%d served=%d cancelled=%d closed=%d rss_mib_every_5s=%s",
  figures(), active, served, cancelled, closed, table.concat(samples, ",")))
srv:close()
stdin_w:close()
