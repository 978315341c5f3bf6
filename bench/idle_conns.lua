-- bench/idle_conns.lua: memory per idle connection, server side.  Accepts
-- N connections (made by bench/idle_conns.sh's python3 client), each handled
-- by its own task blocked in reader:read(); once all are in, prints the
-- RSS growth per connection (each holds a task, a Reader/Writer pair, the
-- transport and its buffers).
--   ./aiolua bench/idle_conns.lua N PORTFILE
local aio = require "aio"

local n = tonumber(arg[1]) or 10000
local portfile = arg[2] or "/tmp/aiolua-idle-conns.port"

local function rss_kb()
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

local connected, closed = 0, 0
local all_in, all_out = aio.Event(), aio.Event()
local server = aio.start_server(function(reader, writer)
  connected = connected + 1
  if connected == n then all_in:set() end
  reader:read(1)                 -- idle until the peer closes
  writer:close()
  closed = closed + 1
  if closed == n then all_out:set() end
end, "127.0.0.1", 0)
collectgarbage()
collectgarbage()
local base = rss_kb()
local f = assert(io.open(portfile, "w"))
local _, port = server:getsockname()
f:write(port, "\n")
f:close()
all_in:wait()
aio.sleep(0.2)
collectgarbage()
collectgarbage()
local grown = rss_kb() - base
print(string.format("RESULT bench=idle_conns n=%d bytes_per_conn=%d rss_growth_kb=%d",
                    n, grown * 1024 // n, grown))
io.stdout:flush()
all_out:wait()
server:close()
server:wait_closed()
