-- tests/win/tls_win_spec.lua: TLS (mbedTLS, the filter over stream
-- transports) on the IOCP backend, under wine.  The certificate is made by
-- tests/win/run.sh with the host's openssl, in build/win/tls.
local aio = require "aio"

local DIR = "build/win/tls/"

local function ctxs()
  local server = aio.tls.context({ server = true, cert_file = DIR .. "server.pem",
                                   key_file = DIR .. "server.key" })
  local client = aio.tls.context({ ca_file = DIR .. "server.pem" })
  return server, client
end

describe("TLS on Windows", function()
  it("echoes lines over TLS and verifies the certificate", function()
    local sctx, cctx = ctxs()
    local srv = aio.start_server(function(r, w)
      for line in r:lines() do w:write(line:upper() .. "\n") end
      w:close()
    end, "127.0.0.1", 0, { tls = sctx })
    local _, port = srv:getsockname()
    local r, w = aio.open_connection("127.0.0.1", port,
      { tls = cctx, server_hostname = "localhost" })
    w:write("hello\n")
    assert.equal("HELLO\n", r:readline())
    assert.equal("TLSv1.2", w:get_extra_info("tls_version"))
    w:close()
    srv:close()
  end)

  it("moves 1 MiB each way", function()
    local sctx, cctx = ctxs()
    local n = 1024 * 1024
    local srv = aio.start_server(function(r, w)
      local s = r:readexactly(n)
      w:write(s)
      w:drain()
      w:close()
    end, "127.0.0.1", 0, { tls = sctx })
    local _, port = srv:getsockname()
    local r, w = aio.open_connection("127.0.0.1", port,
      { tls = cctx, server_hostname = "localhost" })
    local big = string.rep("abcdefgh", n // 8)
    w:write(big)
    w:drain()
    assert.equal(big, r:readexactly(n))
    w:close()
    srv:close()
  end)

  it("a wrong name fails the handshake with a TLS error", function()
    local sctx, cctx = ctxs()
    local srv = aio.start_server(function(_, w) w:close() end, "127.0.0.1", 0, { tls = sctx })
    local _, port = srv:getsockname()
    local ok, e = pcall(aio.open_connection, "127.0.0.1", port,
      { tls = cctx, server_hostname = "not-the-name" })
    assert.is_false(ok)
    assert.is_truthy(aio.errtype(e))
    srv:close()
  end)
end)
