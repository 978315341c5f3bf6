-- A TCP echo server: `./aiolua examples/echo_server.lua [port]`, then
-- `nc 127.0.0.1 8888` and type.  Ctrl-C stops it.
local aio = require "aio"

local port = tonumber(arg and arg[1]) or 8888

local function handle(reader, writer)
  local host, p = writer:get_extra_info("peername")
  print(("connection from %s:%d"):format(host, p))
  while true do
    local data = reader:read(65536)   -- nil at EOF
    if not data then break end
    writer:write(data)
    writer:drain()                    -- wait if the peer reads slowly
  end
  writer:close()
  print(("%s:%d left"):format(host, p))
end

local server = aio.start_server(handle, "127.0.0.1", port)
print("echo server on", server:getsockname())
server:serve_forever()
