-- bench/tls_server.lua CERT KEY PORT: a TLS server for bench/tls.sh.  Each
-- connection reads until EOF and then closes: handshakes (openssl s_time)
-- and bulk uploads (bench/tls_bulk.lua, openssl s_client) alike.
local aio = require "aio"
local cert, key, port = arg[1], arg[2], tonumber(arg[3])
local ctx = aio.tls.context({ server = true, cert_file = cert, key_file = key })
local srv = aio.start_server(function(r, w)
  local n = 0
  while true do
    local ok, s = pcall(r.read, r, 1 << 20)
    if not ok or not s then break end
    n = n + #s
  end
  w:close()
end, "127.0.0.1", port, { tls = ctx })
srv:serve_forever()
