-- tests/win/tls_ca_spec.lua: on Windows a client context without ca_file
-- trusts the system's certificate store (CertOpenSystemStoreW "ROOT", or
-- the store AIOLUA_CA_STORE names), under wine.  The server certificate is
-- tests/win/run.sh's, put in a store of the test's own.
local aio = require "aio"
local wt = require "aiolua_wintest"

local PEM = "build/win/tls/server.pem"
local KEY = "build/win/tls/server.key"

-- a TLS echo server; the client context's verdict on its certificate
local function handshake(cctx)
  local sctx = aio.tls.context({ server = true, cert_file = PEM, key_file = KEY })
  local srv = aio.start_server(function(r, w)
    local ok, line = pcall(r.readline, r)
    if ok and line then w:write(line:upper()) end
    w:close()
  end, "127.0.0.1", 0, { tls = sctx })
  local _, port = srv:getsockname()
  local ok, r, w = pcall(aio.open_connection, "127.0.0.1", port,
    { tls = cctx, server_hostname = "localhost" })
  local got
  if ok then
    w:write("hi\n")
    got = r:readline()
    w:close()
  end
  srv:close()
  aio.wait_for(function() srv:wait_closed() end, 30)
  if ok then return got end
  return nil, r
end

describe("TLS trust on Windows", function()
  after_each(function() wt.setenv("AIOLUA_CA_STORE", "") end)

  it("tls = true trusts the system store: a certificate in it verifies", function()
    assert.is_nil(aio.tls.default_ca_file)   -- no bundle file on Windows
    assert.equal(1, wt.add_root("AIOLUA-TEST", PEM))
    wt.setenv("AIOLUA_CA_STORE", "AIOLUA-TEST")
    assert.equal("HI\n", handshake(true))     -- the default context, made now
    assert.equal("HI\n", handshake(aio.tls.context({})))
  end)

  it("the ROOT store loads; a certificate not in it fails verification", function()
    local ctx = aio.tls.context({})           -- no error: ROOT has certificates
    local got, err = handshake(ctx)
    assert.is_nil(got)
    assert.equal("TLSError", aio.errtype(err))
    assert.matches("verif", tostring(err))
  end)

  it("a store with no certificate is a clear TLSError, not a crash", function()
    wt.setenv("AIOLUA_CA_STORE", "AIOLUA-EMPTY")
    local ok, err = pcall(aio.tls.context, {})
    assert.is_false(ok)
    assert.equal("TLSError", aio.errtype(err))
    assert.matches("no certificate in the Windows certificate store AIOLUA%-EMPTY", tostring(err))
    assert.matches("ca_file", tostring(err))
    -- ca_file still wins over the store
    assert.equal("HI\n", handshake(aio.tls.context({ ca_file = PEM })))
  end)
end)
