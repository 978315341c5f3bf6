-- bench/tls_bulk.lua CA PORT MB: upload MB megabytes over TLS to
-- bench/tls_server.lua (or any TLS sink) and print MB/s.
local aio = require "aio"
local ca, port, mb = arg[1], tonumber(arg[2]), tonumber(arg[3] or 200)
local chunk = string.rep("x", 1 << 20)
local r, w = aio.open_connection("127.0.0.1", port,
  { tls = aio.tls.context({ ca_file = ca }), server_hostname = "localhost" })
local t0 = aio.now()
for _ = 1, mb do
  w:write(chunk)
  w:drain()
end
local cipher = w:get_extra_info("cipher")
w:close()
w:wait_closed()
local dt = aio.now() - t0
print(string.format("%.1f MB/s (%d MB in %.2f s, %s)", mb / dt, mb, dt, cipher))
