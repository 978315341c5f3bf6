-- graceful_server.lua: a TCP server that shuts down gracefully on SIGTERM.
-- It stops accepting, lets the connections in progress finish (at most 5 s,
-- then they are cancelled) and exits with status 0.
--
--   aiolua examples/graceful_server.lua [port] &
--   nc 127.0.0.1 8889        (type lines; each comes back in upper case)
--   kill -TERM %1
local aio = require "aio"

local port = tonumber(arg and arg[1]) or 8889  -- 0: any free port
local active = {}

local function handle(reader, writer)
  local me = aio.current_task()
  active[me] = true
  local ok, e = pcall(function()
    for line in reader:lines() do
      writer:write(line:upper() .. "\n")
      writer:drain()
    end
  end)
  active[me] = nil
  writer:close()
  if not ok then error(e, 0) end
end

local function mypid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("n")
  f:close()
  return pid
end

io.stdout:setvbuf("line")
local server = aio.start_server(handle, "127.0.0.1", port)
local host, bound = server:getsockname()
print(("listening on %s port %d (pid %d); SIGTERM stops it"):format(host, bound, mypid()))

-- the loop's way: a handler (a plain callback) closes the server ...
aio.loop():add_signal_handler("SIGTERM", function(name)
  print(name .. ": no longer accepting")
  server:close()
end, "SIGTERM")  -- the extra arguments are the handler's, as in asyncio

-- ... and the main task, waiting in serve_forever, goes on from here
pcall(server.serve_forever, server)
aio.loop():remove_signal_handler("SIGTERM")

-- the connections in progress get 5 s to finish
local deadline = aio.now() + 5
while next(active) and aio.now() < deadline do aio.sleep(0.05) end
for t in pairs(active) do t:cancel("server shutting down") end
print("bye")
