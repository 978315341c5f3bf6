-- TLS (API.md "TLS (mbedTLS)" and the TLS parts of "Streams");
-- src/bindings/tls.c under lua/aio/tls.lua and lua/aio/stream.lua.
-- Certificates are made here with openssl; real peers are openssl
-- s_server, openssl s_client and curl.
local aio = require "aio"
local S = require "support"

-- ---- certificates -------------------------------------------------------

local function sh(cmd)
  local out, rc = S.sh(cmd .. " 2>&1")
  assert(rc == 0, cmd .. "\n" .. out)
  return out
end

local DIR = os.tmpname()
os.remove(DIR)
DIR = DIR .. "-aiolua-tls"
local C = {}
do
  sh("mkdir -p " .. DIR)
  local function p(name) return DIR .. "/" .. name end
  local rsa = "-newkey rsa:2048 -nodes"
  local function ca(name, cn)
    sh(string.format("openssl req -x509 -new %s -keyout %s.key -out %s.pem -days 30 -subj '/CN=%s'"
      .. " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign",
      rsa, p(name), p(name), cn))
  end
  -- a leaf certificate signed by CA `by`; days may be negative (expired)
  local function leaf(name, cn, san, by, days, usage)
    sh(string.format("openssl req -new %s -keyout %s.key -out %s.csr -subj '/CN=%s'", rsa, p(name), p(name), cn))
    local f = assert(io.open(p(name) .. ".ext", "w"))
    f:write("basicConstraints=CA:FALSE\n", "extendedKeyUsage=", usage or "serverAuth", "\n")
    if san then f:write("subjectAltName=", san, "\n") end
    f:close()
    sh(string.format("openssl x509 -req -in %s.csr -CA %s.pem -CAkey %s.key -CAcreateserial -out %s.pem"
      .. " -days %d -extfile %s.ext", p(name), p(by), p(by), p(name), days, p(name)))
  end
  ca("ca", "aiolua test CA")
  ca("other-ca", "unrelated CA")
  leaf("server", "localhost", "DNS:localhost,IP:127.0.0.1", "ca", 30)
  leaf("expired", "localhost", "DNS:localhost,IP:127.0.0.1", "ca", -1)
  leaf("other", "other.example", "DNS:other.example", "ca", 30)
  leaf("client", "aiolua client", nil, "ca", 30, "clientAuth")
  -- a P-256 server certificate (ECDSA signatures, ECDHE on P-256)
  sh(string.format("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    .. " -keyout %s.key -out %s.csr -subj /CN=localhost", p("ec"), p("ec")))
  sh(string.format("openssl x509 -req -in %s.csr -CA %s.pem -CAkey %s.key -CAcreateserial -out %s.pem"
    .. " -days 30 -extfile %s.ext", p("ec"), p("ca"), p("ca"), p("ec"), p("server")))
  for _, n in ipairs({ "ca", "other-ca", "server", "expired", "other", "client", "ec" }) do
    C[n] = p(n) .. ".pem"
    C[n .. "_key"] = p(n) .. ".key"
  end
end

-- ---- helpers --------------------------------------------------------------

local function serve(handler, opts)
  local srv = aio.start_server(handler, "127.0.0.1", 0, opts)
  local _, port = srv:getsockname()
  return srv, port
end

local function server_ctx(name, extra)
  local o = { server = true, cert_file = C[name or "server"], key_file = C[(name or "server") .. "_key"] }
  for k, v in pairs(extra or {}) do o[k] = v end
  return aio.tls.context(o)
end

local function client_ctx(extra)
  local o = { ca_file = C.ca }
  for k, v in pairs(extra or {}) do o[k] = v end
  return aio.tls.context(o)
end

-- an echo server over TLS: each line comes back prefixed
local function echo_server(ctx)
  return serve(function(r, w)
    for line in r:lines() do
      w:write("echo:" .. line .. "\n")
      w:drain()
    end
    w:close()
  end, { tls = ctx or server_ctx() })
end

local function connect(port, ctx, host)
  return aio.open_connection("127.0.0.1", port, { tls = ctx or client_ctx(), server_hostname = host or "localhost" })
end

local settled_fds = S.settled_fds

local function tls_error(fn)
  local e = S.error_of(fn)
  assert.are.equal("TLSError", aio.errtype(e), tostring(e))
  assert.is_string(e.message)
  return e
end

-- a client without a certificate against a server that requires one:
-- the TLSError it gets (mbedTLS may finish its side before the server's
-- alert arrives, so it writes and reads once)
local function refused_without_cert(port)
  return tls_error(function()
    local r, w = connect(port)
    w:write("x\n")
    local l = r:readline()
    w:close()
    return l
  end)
end

-- a raw TCP server whose handler gets the plain reader and writer
local function raw_server(handler)
  return serve(handler)
end

-- A man in the middle between a client and the TLS server at `port`: it
-- forwards whole TLS records and tells `on_record(dir, type, record)` of
-- each; it returns what to forward instead (nil: the record, false: cut
-- the connection there).  Returns its server, port and the record types it
-- saw in each direction.
local function mitm(port, on_record)
  local seen = { c2s = {}, s2c = {} }
  local function pump(dir, r, w, other_w)
    while true do
      local ok, hdr = pcall(r.readexactly, r, 5)
      if not ok then break end
      local len = hdr:byte(4) * 256 + hdr:byte(5)
      local body = r:readexactly(len)
      local rec = hdr .. body
      seen[dir][#seen[dir] + 1] = hdr:byte(1)
      local out = on_record and on_record(dir, hdr:byte(1), rec)
      if out == false then
        w:close()
        other_w:close()
        return
      end
      if not pcall(w.write, w, out or rec) then break end
      pcall(w.drain, w)
    end
    pcall(w.write_eof, w)
  end
  local srv, p = serve(function(cr, cw)
    local sr, sw = aio.open_connection("127.0.0.1", port)
    local t = aio.spawn(pump, "s2c", sr, cw, sw)
    pcall(pump, "c2s", cr, sw, cw)
    pcall(t.await, t)
    cw:close()
    sw:close()
  end)
  return srv, p, seen
end

-- ---- contexts -------------------------------------------------------------

describe("aio.tls.context", function()
  it("makes client and server contexts", function()
    local c = aio.tls.context()
    assert.is_false(c.server)
    assert.is_true(c.verify)
    assert.are.equal(60, c.handshake_timeout)
    local s = server_ctx(nil, { handshake_timeout = 5 })
    assert.is_true(s.server)
    assert.are.equal(5, s.handshake_timeout)
    assert.matches("aio.TLSContext", tostring(s))
  end)

  it("refuses bad options with plain errors", function()
    local function err(opts) return S.error_of(aio.tls.context, opts) end
    assert.matches("cert_file", err({ server = true }))
    assert.matches("unknown option 'cafile'", err({ cafile = C.ca }))
    assert.matches("1.3", err({ min_version = "1.3" }))
    assert.matches("min_version", err({ min_version = "2.0" }))
    assert.matches("alpn", err({ alpn = { "" } }))
    assert.matches("verify", err({ verify = "yes" }))
    assert.matches("handshake_timeout", err({ handshake_timeout = -1 }))
    assert.matches("table expected", S.error_of(aio.tls.context, 42))
  end)

  it("raises OSError for a missing file and TLSError for a bad one", function()
    local e = S.error_of(aio.tls.context, { ca_file = DIR .. "/nope.pem" })
    assert.are.equal("OSError", aio.errtype(e))
    assert.are.equal("ENOENT", e.code)
    local e2 = tls_error(function() aio.tls.context({ server = true, cert_file = C.server, key_file = C.ca }) end)
    assert.matches("key_file", e2.message)
  end)

  -- as OpenSSL's "key values mismatch": at once, not at the first handshake
  it("refuses a key that is not the certificate's", function()
    for _, pair in ipairs({ { C.server, C.other_key }, { C.server, C.ec_key }, { C.ec, C.server_key } }) do
      local e = tls_error(function()
        aio.tls.context({ server = true, cert_file = pair[1], key_file = pair[2] })
      end)
      assert.matches("is not the private key of cert_file", e.message)
    end
    assert.is_truthy(aio.tls.context({ server = true, cert_file = C.ec, key_file = C.ec_key }))
    assert.is_truthy(aio.tls.context({ server = true, cert_file = C.server, key_file = C.server_key }))
  end)

  it("accepts min_version 1.2 and a timeout", function()
    assert.is_true(aio.tls.is_context(client_ctx({ min_version = "1.2", handshake_timeout = 1 })))
  end)

  it("open_connection and start_server check opts.tls", function()
    assert.matches("client context", S.error_of(aio.open_connection, "127.0.0.1", 1, { tls = server_ctx() }))
    assert.matches("server context", S.error_of(aio.start_server, function() end, "127.0.0.1", 0,
      { tls = client_ctx() }))
    assert.matches("opts.tls", S.error_of(aio.open_connection, "127.0.0.1", 1, { tls = "yes" }))
    assert.matches("server_hostname", S.error_of(aio.open_connection, "127.0.0.1", 1,
      { server_hostname = "localhost" }))
  end)
end)

-- ---- aiolua to aiolua -------------------------------------------------------

describe("TLS between aiolua peers", function()
  it("echoes lines and reports the session", function()
    local srv, port = echo_server()
    local r, w = connect(port)
    w:write("hello\n")
    assert.are.equal("echo:hello\n", r:readline())
    assert.are.equal("TLSv1.2", w:get_extra_info("tls_version"))
    assert.matches("^TLS%-[%w%-]+$", w:get_extra_info("cipher"))
    assert.is_nil(w:get_extra_info("alpn"))
    local cert = w:get_extra_info("peercert")
    assert.are.equal("localhost", cert.subject.commonName)
    assert.are.equal("localhost", cert.subject.CN)
    assert.are.equal("aiolua test CA", cert.issuer.commonName)
    assert.are.same({ { "DNS", "localhost" }, { "IP Address", "127.0.0.1" } }, cert.subjectAltName)
    assert.matches("GMT$", cert.notAfter)
    assert.are.equal(3, cert.version)
    assert.is_true(#cert.der > 100)
    local host, p = w:get_extra_info("peername")
    assert.are.equal("127.0.0.1", host)
    assert.are.equal(port, p)
    assert.is_true(w:is_tls())
    w:close()
    srv:close()
    srv:wait_closed()
  end)

  -- asyncio keeps the session's extra info from the handshake on
  it("keeps the session's names after close, on both sides", function()
    local names = { "cipher", "tls_version", "alpn", "peercert" }
    local fds = settled_fds()
    local seen = aio.Future()
    local srv, port = serve(function(r, w)
      r:readline()
      w:close()
      w:wait_closed()
      local got = {}
      for _, n in ipairs(names) do got[n] = w:get_extra_info(n) end
      seen:set_result(got)
    end, { tls = server_ctx(nil, { alpn = { "x-aio" } }) })
    local r, w = connect(port, client_ctx({ alpn = { "x-aio" } }))
    local before = {}
    for _, n in ipairs(names) do before[n] = w:get_extra_info(n) end
    w:write("bye\n")
    assert.is_nil(r:read())
    w:close()
    w:wait_closed()
    for _, n in ipairs(names) do
      assert.are.same(before[n], w:get_extra_info(n), n)
    end
    assert.are.equal("x-aio", w:get_extra_info("alpn"))
    assert.are.equal("localhost", w:get_extra_info("peercert").subject.commonName)
    local server = seen:await()
    assert.are.same({ cipher = before.cipher, tls_version = "TLSv1.2", alpn = "x-aio" }, server)
    srv:close()
    srv:wait_closed()
    assert.are.equal(fds, settled_fds())
  end)

  it("gives nil TLS names on a plain connection", function()
    local srv, port = serve(function(_, w) w:close() end)
    local _, w = aio.open_connection("127.0.0.1", port)
    for _, n in ipairs({ "cipher", "tls_version", "alpn", "peercert" }) do
      assert.is_nil(w:get_extra_info(n))
    end
    w:close()
    srv:close()
  end)

  it("keeps the Reader API: read, readexactly, readuntil, lines, at_eof", function()
    local srv, port = serve(function(_, w)
      w:write("abc|def|")
      w:write("0123456789")
      w:write("line1\nline2\nlast")
      w:close()
    end, { tls = server_ctx() })
    local r, w = connect(port)
    assert.are.equal("abc|", r:readuntil("|"))
    assert.are.equal("def|", r:readuntil("|"))
    assert.are.equal("01234", r:readexactly(5))
    assert.are.equal("567", r:read(3))
    assert.are.equal("89line1\n", r:readline())
    local lines = {}
    for l in r:lines() do lines[#lines + 1] = l end
    assert.are.same({ "line2", "last" }, lines)
    assert.is_nil(r:read())
    assert.is_true(r:at_eof())
    w:close()
    srv:close()
  end)

  it("moves 4 MB each way with drain", function()
    local chunk = string.rep("0123456789abcdef", 4096)  -- 64 KiB
    local srv, port = serve(function(r, w)
      local n = 0
      while n < 64 * #chunk do
        local s = r:read(100000)
        if not s then break end
        n = n + #s
      end
      for _ = 1, 64 do w:write(chunk) w:drain() end
      w:close()
    end, { tls = server_ctx() })
    local r, w = connect(port)
    for _ = 1, 64 do w:write(chunk) w:drain() end
    local got = r:read()
    assert.are.equal(64 * #chunk, #got)
    assert.are.equal(chunk, got:sub(1, #chunk))
    w:close()
    srv:close()
  end)

  it("serves 30 clients at once", function()
    local srv, port = echo_server()
    local ctx = client_ctx()
    local fns = {}
    for i = 1, 30 do
      fns[i] = function()
        local r, w = connect(port, ctx)
        w:write("n" .. i .. "\n")
        local l = r:readline()
        w:close()
        return l
      end
    end
    local res = { aio.gather(table.unpack(fns)) }
    for i = 1, 30 do assert.are.equal("echo:n" .. i .. "\n", res[i]) end
    srv:close()
    srv:wait_closed()
  end)

  it("verifies an IP address against the certificate's IP entry", function()
    local srv, port = echo_server()
    local r, w = aio.open_connection("127.0.0.1", port, { tls = client_ctx() })
    w:write("ip\n")
    assert.are.equal("echo:ip\n", r:readline())
    w:close()
    srv:close()
    srv:wait_closed()
  end)

  it("connects by name: localhost", function()
    local srv = aio.start_server(function(r, w)
      w:write("hi " .. r:readline())
      w:close()
    end, "127.0.0.1", 0, { tls = server_ctx() })
    local _, port = srv:getsockname()
    local r, w = aio.open_connection("localhost", port, { tls = client_ctx(), family = "inet" })
    w:write("name\n")
    assert.are.equal("hi name\n", r:readline())
    w:close()
    srv:close()
  end)

  it("sends close_notify when a TLS writer closes", function()
    local srv, port = echo_server()
    local m, mport, seen = mitm(port)
    local r, w = connect(mport)
    w:write("x\n")
    assert.are.equal("echo:x\n", r:readline())
    w:close()
    assert.is_true(S.wait_until(function() return seen.c2s[#seen.c2s] == 21 end, 2))
    -- the server answered with its own close_notify, then closed
    assert.is_true(S.wait_until(function() return seen.s2c[#seen.s2c] == 21 end, 2))
    m:close()
    srv:close()
  end)

  it("write_eof sends close_notify; the peer reads EOF and still answers", function()
    local srv, port = serve(function(r, w)
      local all = r:read()
      w:write("got " .. #all)
      w:close()
    end, { tls = server_ctx() })
    local r, w = connect(port)
    w:write(string.rep("z", 1000))
    w:write_eof()
    assert.are.equal("got 1000", r:read())
    w:close()
    srv:close()
  end)

  it("negotiates ALPN", function()
    local srv, port = serve(function(_, w)
      w:write(tostring(w:get_extra_info("alpn")) .. "\n")
      w:close()
    end, { tls = server_ctx(nil, { alpn = { "h2", "http/1.1" } }) })
    local r, w = connect(port, client_ctx({ alpn = { "http/1.1", "h2" } }))
    local mine = w:get_extra_info("alpn")
    assert.are.equal(mine .. "\n", r:readline())
    assert.is_truthy(mine == "h2" or mine == "http/1.1")
    w:close()
    -- a client without ALPN: none agreed
    local r2, w2 = connect(port)
    assert.is_nil(w2:get_extra_info("alpn"))
    assert.are.equal("nil\n", r2:readline())
    w2:close()
    srv:close()
  end)

  it("sends SNI: the ClientHello names the host", function()
    local hello
    local srv, port = raw_server(function(r, w)
      hello = r:read(4096)
      w:close()
    end)
    S.error_of(function() connect(port, nil, "localhost") end)
    assert.is_truthy(hello and hello:find("localhost", 1, true))
    -- not for an IP address (RFC 6066)
    hello = nil
    S.error_of(function() aio.open_connection("127.0.0.1", port, { tls = client_ctx() }) end)
    assert.is_falsy(hello:find("127.0.0.1", 1, true))
    srv:close()
  end)
end)

-- ---- verification ------------------------------------------------------------

describe("TLS verification", function()
  local function fails_with(name, ctx, host, pattern)
    local srv, port = echo_server(server_ctx(name))
    local e = tls_error(function() connect(port, ctx, host) end)
    if pattern then assert.matches(pattern, e.message) end
    srv:close()
    srv:wait_closed()
    return e
  end

  it("refuses an unknown CA", function()
    local e = fails_with("server", client_ctx({ ca_file = C["other-ca"] }), "localhost", "not correctly signed")
    assert.matches("certificate verify failed", e.message)
  end)

  it("verifies against the system bundle by default (tls = true)", function()
    local srv, port = echo_server()
    local e = tls_error(function()
      aio.open_connection("127.0.0.1", port, { tls = true, server_hostname = "localhost" })
    end)
    assert.matches("certificate verify failed", e.message)
    srv:close()
    srv:wait_closed()
  end)

  it("refuses an expired certificate", function()
    fails_with("expired", client_ctx(), "localhost", "expired")
  end)

  it("refuses a certificate for another name", function()
    fails_with("other", client_ctx(), "localhost", "Common Name")
    fails_with("server", client_ctx(), "example.com", "Common Name")
  end)

  it("refuses an IP address the certificate does not name", function()
    local srv, port = echo_server(server_ctx("other"))
    local e = tls_error(function() aio.open_connection("127.0.0.1", port, { tls = client_ctx() }) end)
    assert.matches("Common Name", e.message)
    srv:close()
    srv:wait_closed()
  end)

  it("an empty server_hostname checks the chain, not the name (as asyncio)", function()
    local srv, port = echo_server(server_ctx("other"))
    local r, w = connect(port, client_ctx(), "")
    w:write("ok\n")
    assert.are.equal("echo:ok\n", r:readline())
    w:close()
    srv:close()
    srv:wait_closed()
    -- the chain still counts: a server of another CA is refused
    srv, port = echo_server(server_ctx("other"))
    local e = tls_error(function() connect(port, client_ctx({ ca_file = C["other-ca"] }), "") end)
    assert.is_string(e.message)
    srv:close()
    srv:wait_closed()
  end)

  it("connects anyway with verify = false", function()
    local srv, port = echo_server(server_ctx("expired"))
    local r, w = connect(port, client_ctx({ verify = false, ca_file = C["other-ca"] }), "wrong.name")
    w:write("ok\n")
    assert.are.equal("echo:ok\n", r:readline())
    w:close()
    srv:close()
    srv:wait_closed()
  end)

  it("asks for and checks client certificates when the server has a CA", function()
    local seen
    local srv, port = serve(function(r, w)
      seen = w:get_extra_info("peercert")
      w:write("hello " .. r:readline())
      w:close()
    end, { tls = server_ctx(nil, { ca_file = C.ca }) })
    -- without a certificate: refused
    local e = refused_without_cert(port)
    assert.is_string(e.message)
    -- with one signed by the CA: accepted, and the server sees it
    local r, w = connect(port, client_ctx({ cert_file = C.client, key_file = C.client_key }))
    w:write("client\n")
    assert.are.equal("hello client\n", r:readline())
    assert.are.equal("aiolua client", seen.subject.commonName)
    assert.is_nil(seen.subjectAltName)  -- it has none: no key, as getpeercert()
    w:close()
    srv:close()
    assert.is_true(srv._tls_failures >= 1)
  end)
end)

-- ---- real peers ----------------------------------------------------------------

describe("TLS with openssl and curl", function()
  it("a server that requires a client certificate tells a client without one (handshake_failure)", function()
    local fds = settled_fds()
    local handled = false
    local srv, port = serve(function(_, w)
      handled = true
      w:close()
    end, { tls = server_ctx(nil, { ca_file = C.ca }) })
    -- OpenSSL's client, held to TLS 1.2 as aiolua's server is
    local res = aio.run_process({ "openssl", "s_client", "-connect", "127.0.0.1:" .. port,
      "-CAfile", C.ca, "-servername", "localhost", "-no_tls1_3" },
      { input = "", stdout = "pipe", stderr = "pipe" })
    assert.are_not.equal(0, res.returncode)
    assert.matches("alert handshake failure", res.stderr, 1, true)
    assert.matches("alert number 40", res.stderr, 1, true)
    -- Python's ssl module: SSLV3_ALERT_HANDSHAKE_FAILURE, not an EOF
    local py = aio.run_process({ "python3", "-c", [[
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
try:
    ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1]))),
                    server_hostname="localhost")
    print("connected")
except ssl.SSLError as e:
    print(e.reason)
]], tostring(port), C.ca }, { stdout = "pipe", stderr = "pipe" })
    assert.are.equal("SSLV3_ALERT_HANDSHAKE_FAILURE\n", py.stdout, py.stderr)
    -- aiolua's own client: a TLSError that says so
    local e = refused_without_cert(port)
    assert.matches("handshake", e.message:lower(), 1, true)
    assert.is_false(handled)
    assert.is_true(srv._tls_failures >= 3)
    srv:close()
    srv:wait_closed()
    assert.are.equal(fds, settled_fds())
  end)

  it("aiolua client against openssl s_server", function()
    -- a port just freed; another one if someone took it meanwhile
    local s, port
    for _ = 1, 3 do
      local srv
      srv, port = serve(function() end)
      srv:close()
      srv:wait_closed()
      s = aio.exec({ "openssl", "s_server", "-accept", "127.0.0.1:" .. port, "-cert", C.server,
        "-key", C.server_key, "-www", "-naccept", "1", "-alpn", "h2" }, { stdout = "pipe", stderr = "pipe" })
      local up = false
      for line in s.stdout:lines() do
        if line:find("ACCEPT") then up = true break end
      end
      if up then break end
      s:wait()
    end
    local r, w = aio.open_connection("127.0.0.1", port,
      { tls = client_ctx({ alpn = { "h2" } }), server_hostname = "localhost" })
    assert.are.equal("h2", w:get_extra_info("alpn"))
    w:write("GET / HTTP/1.0\r\n\r\n")
    assert.matches("^HTTP/1%.0 200", r:readline())
    assert.is_truthy(r:read():find("s_server", 1, true))
    w:close()
    s:wait()
  end)

  it("openssl s_client against an aiolua server", function()
    local srv, port = serve(function(r, w)
      local l = r:readline()
      w:write("pong:" .. l)
      w:close()
    end, { tls = server_ctx() })
    local res = aio.run_process({ "openssl", "s_client", "-connect", "127.0.0.1:" .. port, "-CAfile", C.ca,
      "-verify_return_error", "-servername", "localhost", "-verify_hostname", "localhost", "-quiet" },
      { input = "ping\n", timeout = 10 })
    assert.are.equal(0, res.returncode, res.stderr)
    assert.are.equal("pong:ping\n", res.stdout)
    srv:close()
  end)

  -- the program's mbedTLS does AES-GCM's whole blocks with AES-NI and
  -- PCLMULQDQ (src/bindings/mbedtls_gcm_aesni.patch), so on a CPU that has
  -- them the AES-GCM suites come first; openssl, at the other end, checks
  -- every record's tag, and the data must come back byte for byte
  it("prefers AES-GCM where the CPU has AES-NI, and moves data through it with openssl", function()
    local f = io.open("/proc/cpuinfo")
    local cpu = f and f:read("a") or ""
    if f then f:close() end
    local aesni = cpu:find("%f[%w]aes%f[%W]") ~= nil and cpu:find("pclmulqdq", 1, true) ~= nil
    local parts = {}
    for i = 1, 3000 do  -- about 300 KB in uneven pieces
      local n = 1 + (i * 7919) % 200
      local t = {}
      for k = 1, n do t[k] = string.char((i * 31 + k * 17) % 256) end
      parts[i] = table.concat(t)
    end
    local data = table.concat(parts)
    local srv, port = serve(function(r, w)
      local got = r:readexactly(#data)
      w:write(got)
      w:drain()
      w:close()
    end, { tls = server_ctx() })
    -- TLS 1.2 with what openssl offers by default: the server chooses
    local res = aio.run_process({ "openssl", "s_client", "-connect", "127.0.0.1:" .. port, "-tls1_2",
      "-CAfile", C.ca, "-verify_return_error", "-servername", "localhost", "-quiet" },
      { input = data, timeout = 20 })
    assert.are.equal(0, res.returncode, res.stderr)
    assert.are.equal(#data, #res.stdout)
    assert.is_true(res.stdout == data, "the data came back changed")
    -- and what it chose, seen from an aiolua client
    local r, w = connect(port)
    w:write(data)
    assert.are.equal(data, r:readexactly(#data))
    local suite = w:get_extra_info("cipher")
    if aesni then
      assert.matches("AES%-%d+%-GCM", suite)
    else
      assert.matches("CHACHA20", suite)
    end
    w:close()
    -- a client that offers only ChaCha20-Poly1305 still gets it
    res = aio.run_process({ "openssl", "s_client", "-connect", "127.0.0.1:" .. port, "-tls1_2",
      "-cipher", "ECDHE+CHACHA20", "-CAfile", C.ca, "-servername", "localhost", "-quiet" },
      { input = data, timeout = 20 })
    assert.are.equal(0, res.returncode, res.stderr)
    assert.is_true(res.stdout == data, "the data came back changed")
    srv:close()
    srv:wait_closed()
  end)

  -- the base point's comb table is computed by the first ECDHE key or
  -- ECDSA signature on a curve and shared by the later ones
  -- (src/bindings/mbedtls_ecp_comb.patch): openssl checks every signature
  -- and key exchange, on P-256 (ECDSA certificate) and P-384 (RSA one)
  it("repeated ECDHE handshakes on P-256 and P-384, ECDSA and RSA, with openssl and aiolua", function()
    local function pong(r, w)
      local l = r:readline()
      if l then w:write("pong:" .. l) end
      w:close()
    end
    local ecsrv, ecport = serve(pong, { tls = server_ctx("ec") })
    local rsasrv, rsaport = serve(pong, { tls = server_ctx() })
    for i = 1, 6 do
      local port, group, curve, auth = ecport, "P-256", "prime256v1", "ECDSA"
      if i % 2 == 0 then port, group, curve, auth = rsaport, "P-384", "secp384r1", "RSA" end
      local res = aio.run_process({ "openssl", "s_client", "-connect", "127.0.0.1:" .. port, "-CAfile", C.ca,
        "-verify_return_error", "-servername", "localhost", "-verify_hostname", "localhost",
        "-groups", group, "-brief", "-ign_eof" }, { input = "ping" .. i .. "\n", timeout = 10 })
      assert.are.equal(0, res.returncode, res.stderr)
      assert.are.equal("pong:ping" .. i .. "\n", res.stdout)
      assert.matches("Ciphersuite: ECDHE%-" .. auth, res.stderr)
      assert.matches("Server Temp Key: ECDH, " .. curve, res.stderr)
    end
    for i = 1, 3 do
      local r, w = connect(ecport)
      w:write("hi" .. i .. "\n")
      assert.are.equal("pong:hi" .. i .. "\n", r:readline())
      assert.matches("^TLS%-ECDHE%-ECDSA%-", w:get_extra_info("cipher"))
      w:close()
    end
    -- and a chain from another CA is still refused
    local e = tls_error(function() connect(ecport, client_ctx({ ca_file = C["other-ca"] })) end)
    assert.matches("certificate verify failed", e.message)
    for _, srv in ipairs({ ecsrv, rsasrv }) do
      srv:close()
      srv:wait_closed()
    end
  end)

  -- the records of a handshake flight leave in one write (tls.c
  -- bio_send): strace counts the server's writes of handshake records
  -- (type 22, "\26" in strace's octal) and ChangeCipherSpec ones ("\24")
  it("writes each handshake flight of a server at once (strace)", function()
    local bin = os.getenv("AIOLUA_BIN") or "./aiolua"
    local script, log = DIR .. "/one.lua", DIR .. "/one.strace"
    local f = assert(io.open(script, "w"))
    f:write([[
      local aio = require "aio"
      local done = aio.Future()
      local ctx = aio.tls.context({ server = true, cert_file = arg[1], key_file = arg[2] })
      local srv = aio.start_server(function(r, w)
        w:write("pong:" .. r:readline())
        w:close()
        done:set_result(true)
      end, "127.0.0.1", 0, { tls = ctx })
      print(select(2, srv:getsockname()))
      io.stdout:flush()
      done:await()
      srv:close()
    ]])
    f:close()
    -- (LeakSanitizer does not run under ptrace: off in the sanitizer build)
    local p = aio.exec({ "strace", "-f", "-qq", "-e", "trace=sendto,sendmsg,write,writev", "-o", log,
      "-E", "ASAN_OPTIONS=detect_leaks=0", "-E", "AIOLUA_URING=0",  -- sends as system calls
      bin, script, C.server, C.server_key }, { stdout = "pipe" })
    local port = tonumber(p.stdout:readline())
    local r, w = connect(port)
    w:write("ping\n")
    assert.are.equal("pong:ping\n", r:readline())
    w:close()
    assert.are.equal(0, p:wait())
    local hs, ccs = 0, 0
    for line in io.lines(log) do
      if line:find('"\\26\\3\\3', 1, true) then hs = hs + 1 end
      if line:find('"\\24\\3\\3', 1, true) then ccs = ccs + 1 end
    end
    -- ServerHello .. ServerHelloDone; ChangeCipherSpec + Finished
    assert.are.equal(1, hs)
    assert.are.equal(1, ccs)
  end)

  it("curl --cacert against an aiolua HTTPS server", function()
    local srv, port = serve(function(r, w)
      local req = r:readline()
      while true do
        local h = r:readline()
        if h == nil or h == "\r\n" then break end
      end
      local body = "hello over TLS: " .. req:match("^(%S+ %S+)")
      w:write("HTTP/1.1 200 OK\r\nContent-Length: " .. #body .. "\r\nConnection: close\r\n\r\n" .. body)
      w:close()
    end, { tls = server_ctx(nil, { alpn = { "http/1.1" } }) })
    local res = aio.run_process({ "curl", "-sS", "--max-time", "10", "--cacert", C.ca,
      "https://localhost:" .. port .. "/x" }, { timeout = 15 })
    assert.are.equal(0, res.returncode, res.stderr)
    assert.are.equal("hello over TLS: GET /x", res.stdout)
    -- and curl refuses it without the CA
    local res2 = aio.run_process({ "curl", "-sS", "--max-time", "10", "https://localhost:" .. port .. "/x" },
      { timeout = 15 })
    assert.are_not.equal(0, res2.returncode)
    srv:close()
  end)
end)

-- ---- ALPN with no protocol in common --------------------------------------------

-- An aiolua server with alpn = {"h2", "http/1.1"} and a client offering
-- only "spdy/1" (or `openssl s_client -alpn http/1.1` against alpn =
-- {"h2"}) failed the handshake: mbedTLS 2.28's server sent a fatal
-- no_application_protocol alert (ssl_srv.c, ssl_parse_alpn_ext).
-- asyncio's servers (Python's ssl, SSL_TLSEXT_ERR_NOACK) answer with no
-- ALPN and go on; src/bindings/mbedtls_alpn.patch makes ours do the same,
-- and get_extra_info("alpn") is nil on both sides.
describe("ALPN with no protocol in common", function()
  -- a TLS server that answers the first line with the agreed protocol
  local function alpn_server(list)
    return serve(function(r, w)
      local l = r:readline()
      if l then w:write(tostring(w:get_extra_info("alpn")) .. ":" .. l) end
      w:close()
    end, { tls = server_ctx(nil, { alpn = list }) })
  end

  local function py(name, text)
    local path = DIR .. "/" .. name
    local f = assert(io.open(path, "w"))
    f:write(text)
    f:close()
    return path
  end

  -- python3's ssl client: connects, sends "ping", prints the agreed
  -- protocol and the answer
  local PY_CLIENT = [[
import socket, ssl, sys
port, cafile, alpn = int(sys.argv[1]), sys.argv[2], sys.argv[3].split(",")
ctx = ssl.create_default_context(cafile=cafile)
ctx.set_alpn_protocols(alpn)
with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"ping\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(100)
            if not chunk:
                break
            data += chunk
        print(s.selected_alpn_protocol(), data.decode(), end="")
]]

  -- python3's ssl server (asyncio's): one connection, answers the first
  -- line with the agreed protocol; prints its port, then that protocol
  local PY_SERVER = [[
import socket, ssl, sys
cert, key, alpn = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.set_alpn_protocols(alpn)
srv = socket.create_server(("127.0.0.1", 0))
srv.settimeout(10)
print(srv.getsockname()[1], flush=True)
raw, _ = srv.accept()
raw.settimeout(10)
s = ctx.wrap_socket(raw, server_side=True)
chosen = s.selected_alpn_protocol()
line = b""
while not line.endswith(b"\n"):
    chunk = s.recv(100)
    if not chunk:
        break
    line += chunk
s.sendall(("%s:%s" % (chosen, line.decode())).encode())
s.close()
print(chosen, flush=True)
]]

  it("an aiolua server and client with none in common agree on none and go on", function()
    local srv, port = alpn_server({ "h2", "http/1.1" })
    local r, w = connect(port, client_ctx({ alpn = { "spdy/1" } }))
    assert.is_nil(w:get_extra_info("alpn"))
    w:write("x\n")
    assert.are.equal("nil:x\n", r:readline())
    w:close()
    -- one in common among others: still chosen, in the server's order
    local r2, w2 = connect(port, client_ctx({ alpn = { "spdy/1", "http/1.1", "h2" } }))
    assert.are.equal("h2", w2:get_extra_info("alpn"))
    w2:write("y\n")
    assert.are.equal("h2:y\n", r2:readline())
    w2:close()
    local r3, w3 = connect(port, client_ctx({ alpn = { "spdy/1", "http/1.1" } }))
    assert.are.equal("http/1.1", w3:get_extra_info("alpn"))
    w3:write("z\n")
    assert.are.equal("http/1.1:z\n", r3:readline())
    w3:close()
    srv:close()
    srv:wait_closed()
    assert.is_nil(srv._tls_failures)
  end)

  it("openssl s_client -alpn http/1.1 against an aiolua server with alpn h2", function()
    local srv, port = alpn_server({ "h2" })
    local function s_client(proto)
      return aio.run_process({ "openssl", "s_client", "-connect", "127.0.0.1:" .. port, "-CAfile", C.ca,
        "-verify_return_error", "-servername", "localhost", "-alpn", proto, "-ign_eof" },
        { input = "ping\n", timeout = 10 })
    end
    local res = s_client("http/1.1")
    assert.are.equal(0, res.returncode, res.stderr)
    assert.matches("No ALPN negotiated", res.stdout)
    assert.matches("nil:ping\n", res.stdout, 1, true)
    res = s_client("h2")
    assert.are.equal(0, res.returncode, res.stderr)
    assert.matches("ALPN protocol: h2", res.stdout, 1, true)
    assert.matches("h2:ping\n", res.stdout, 1, true)
    srv:close()
    srv:wait_closed()
  end)

  it("python3's ssl client offering spdy/1 against an aiolua server with h2, http/1.1", function()
    local client = py("alpn_client.py", PY_CLIENT)
    local srv, port = alpn_server({ "h2", "http/1.1" })
    local res = aio.run_process({ "python3", client, tostring(port), C.ca, "spdy/1" }, { timeout = 15 })
    assert.are.equal(0, res.returncode, res.stderr)
    assert.are.equal("None nil:ping\n", res.stdout)
    res = aio.run_process({ "python3", client, tostring(port), C.ca, "spdy/1,http/1.1" }, { timeout = 15 })
    assert.are.equal(0, res.returncode, res.stderr)
    assert.are.equal("http/1.1 http/1.1:ping\n", res.stdout)
    srv:close()
    srv:wait_closed()
  end)

  -- the client's side: a server that picks nothing sends no ALPN
  it("an aiolua client against python3's ssl server that picks none gets nil", function()
    local server = py("alpn_server.py", PY_SERVER)
    local function against(server_list, client_list)
      local p = aio.exec({ "python3", server, C.server, C.server_key, server_list }, { stdout = "pipe" })
      local port = tonumber(p.stdout:readline())
      assert.is_number(port)
      local r, w = connect(port, client_ctx({ alpn = client_list }))
      local mine = w:get_extra_info("alpn")
      w:write("ping\n")
      local answer = r:readline()
      w:close()
      local theirs = p.stdout:readline()
      assert.are.equal(0, p:wait())
      return mine, answer, theirs
    end
    local mine, answer, theirs = against("h2", { "spdy/1" })
    assert.is_nil(mine)
    assert.are.equal("None:ping\n", answer)
    assert.are.equal("None\n", theirs)
    mine, answer, theirs = against("h2,http/1.1", { "spdy/1", "http/1.1" })
    assert.are.equal("http/1.1", mine)
    assert.are.equal("http/1.1:ping\n", answer)
    assert.are.equal("http/1.1\n", theirs)
  end)
end)

describe("a TLS connection the peer reset (python3 peer)", function()
  it("a write after a read found the reset is an OSError, as on a plain stream", function()
    -- python3's ssl server: handshakes, reads a line, then resets (SO_LINGER 0)
    local server = os.tmpname()
    local f = assert(io.open(server, "w"))
    f:write([[
import socket, ssl, struct, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv = socket.create_server(("127.0.0.1", 0))
srv.settimeout(10)
print(srv.getsockname()[1], flush=True)
raw, _ = srv.accept()
raw.settimeout(10)
s = ctx.wrap_socket(raw, server_side=True)
s.recv(100)
raw = socket.socket(fileno=s.detach())
raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
raw.close()
]])
    f:close()
    local p = aio.exec({ "python3", server, C.server, C.server_key }, { stdout = "pipe" })
    local port = tonumber(p.stdout:readline())
    assert.is_number(port)
    local r, w = connect(port)
    w:write("x\n")
    local e = S.error_of(r.read, r)
    assert.are.equal("OSError", aio.errtype(e))
    assert.are.equal("ECONNRESET", e.code)
    local e2 = S.error_of(w.write, w, "y")
    assert.are.equal("OSError", aio.errtype(e2))
    assert.is_truthy(e2.code == "ECONNRESET" or e2.code == "EPIPE", e2.code)
    assert.are.equal("ECONNRESET", S.error_of(w.drain, w).code)
    w:close()
    p:wait()
    os.remove(server)
  end)
end)

-- ---- the default CAs: SSL_CERT_FILE, SSL_CERT_DIR --------------------------------

-- `tls = true` and a context without ca_file trusted the system bundle
-- whatever SSL_CERT_FILE and SSL_CERT_DIR said, where asyncio's ssl=True
-- takes OpenSSL's default verify paths, which honour them.  Now the
-- default roots are the PEM bundle SSL_CERT_FILE names, else the files of
-- the directories SSL_CERT_DIR lists, else the system bundle; ca_file
-- still wins.  A process's environment is its own: each case runs a child
-- aiolua with the environment it needs.
describe("default CAs from SSL_CERT_FILE and SSL_CERT_DIR", function()
  local bin = os.getenv("AIOLUA_BIN") or "./aiolua"
  local script = DIR .. "/default_ca.lua"
  local cadir, emptydir = DIR .. "/cadir", DIR .. "/emptydir"
  setup(function()
    local f = assert(io.open(script, "w"))
    -- arg: port, then "true" (tls = true), "context" (a context without
    -- ca_file) or a ca_file; prints "ok <answer>" or the error
    f:write([[
      local aio = require "aio"
      local port, how = tonumber(arg[1]), arg[2]
      local ok, e = pcall(function()
        local tls = true
        if how == "context" then tls = aio.tls.context()
        elseif how ~= "true" then tls = aio.tls.context({ ca_file = how }) end
        local r, w = aio.open_connection("localhost", port, { tls = tls, family = "inet" })
        w:write("hi\n")
        local l = r:readline()
        w:close()
        return l
      end)
      if ok then io.write("ok ", e) else io.write(tostring(e), "\n") end
    ]])
    f:close()
    -- a hashed directory as OpenSSL makes it (openssl rehash), with a
    -- file that is no certificate beside
    sh("mkdir -p " .. cadir .. " " .. emptydir)
    sh("cp " .. C.ca .. " " .. cadir .. "/test-ca.pem")
    sh("openssl rehash " .. cadir)
    f = assert(io.open(cadir .. "/README", "w"))
    f:write("not a certificate\n")
    f:close()
    f = assert(io.open(emptydir .. "/README", "w"))
    f:write("not a certificate\n")
    f:close()
  end)

  -- a child aiolua with PATH, HOME and `env` connects to a new echo
  -- server with tls = true (or as `how` says); returns its output
  local function child(env, how)
    local srv, port = echo_server()
    local e = { PATH = os.getenv("PATH"), HOME = os.getenv("HOME") }
    for k, v in pairs(env) do e[k] = v end
    local res = aio.run_process({ bin, script, tostring(port), how or "true" }, { env = e, timeout = 20 })
    srv:close()
    srv:wait_closed()
    assert.are.equal(0, res.returncode, res.stderr)
    return res.stdout
  end

  it("tls = true trusts the bundle SSL_CERT_FILE names", function()
    assert.are.equal("ok echo:hi\n", child({ SSL_CERT_FILE = C.ca }))
    assert.are.equal("ok echo:hi\n", child({ SSL_CERT_FILE = C.ca }, "context"))
    -- without it, the system bundle, which does not know the test CA
    assert.matches("^TLSError: .*certificate verify failed", child({}))
    assert.matches("^TLSError: .*certificate verify failed", child({ SSL_CERT_FILE = C["other-ca"] }))
  end)

  it("as python3's ssl.create_default_context does", function()
    local code = "import socket, ssl, sys\n"
      .. "ctx = ssl.create_default_context()\n"
      .. "with socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=10) as raw:\n"
      .. "    with ctx.wrap_socket(raw, server_hostname='localhost') as s:\n"
      .. "        s.sendall(b'hi\\n')\n"
      .. "        print(s.recv(100).decode(), end='')\n"
    local srv, port = echo_server()
    local e = { PATH = os.getenv("PATH"), HOME = os.getenv("HOME"), SSL_CERT_FILE = C.ca }
    local res = aio.run_process({ "python3", "-c", code, tostring(port) }, { env = e, timeout = 15 })
    srv:close()
    srv:wait_closed()
    assert.are.equal(0, res.returncode, res.stderr)
    assert.are.equal("echo:hi\n", res.stdout)
    assert.are.equal("ok echo:hi\n", child({ SSL_CERT_FILE = C.ca }))
  end)

  it("tls = true trusts the certificates in the directories SSL_CERT_DIR lists", function()
    assert.are.equal("ok echo:hi\n", child({ SSL_CERT_DIR = cadir }))
    assert.are.equal("ok echo:hi\n", child({ SSL_CERT_DIR = cadir }, "context"))
    assert.are.equal("ok echo:hi\n", child({ SSL_CERT_DIR = emptydir .. ":" .. DIR .. "/nodir:" .. cadir }))
    -- an empty SSL_CERT_FILE is no file
    assert.are.equal("ok echo:hi\n", child({ SSL_CERT_FILE = "", SSL_CERT_DIR = cadir }))
  end)

  it("SSL_CERT_FILE wins over SSL_CERT_DIR, and ca_file over both", function()
    assert.matches("^TLSError: .*certificate verify failed",
      child({ SSL_CERT_FILE = C["other-ca"], SSL_CERT_DIR = cadir }))
    assert.are.equal("ok echo:hi\n", child({ SSL_CERT_FILE = C["other-ca"], SSL_CERT_DIR = cadir }, C.ca))
    assert.matches("^TLSError: .*certificate verify failed",
      child({ SSL_CERT_FILE = C.ca, SSL_CERT_DIR = cadir }, C["other-ca"]))
  end)

  it("a missing SSL_CERT_FILE or an SSL_CERT_DIR without certificates is an error naming it", function()
    local out = child({ SSL_CERT_FILE = DIR .. "/nope.pem" })
    assert.matches("^OSError: .*SSL_CERT_FILE", out)
    assert.matches("nope.pem", out, 1, true)
    out = child({ SSL_CERT_FILE = C.ca_key })
    assert.matches("^TLSError: .*SSL_CERT_FILE", out)
    out = child({ SSL_CERT_DIR = emptydir })
    assert.matches("^TLSError: .*no certificate in SSL_CERT_DIR", out)
    assert.matches(emptydir, out, 1, true)
  end)
end)

-- ---- failures, hostile peers, cancellation -------------------------------------

describe("TLS failures", function()
  it("garbage instead of a ClientHello: that connection closes, others go on", function()
    local srv, port = echo_server()
    local r, w = aio.open_connection("127.0.0.1", port)
    w:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n" .. string.rep("garbage", 100))
    local got = r:read()  -- an alert at most, then EOF
    assert.is_true(got == nil or #got < 64)
    w:close()
    local r2, w2 = connect(port)
    w2:write("still\n")
    assert.are.equal("echo:still\n", r2:readline())
    w2:close()
    assert.is_true(S.wait_until(function() return (srv._tls_failures or 0) == 1 end, 2))
    assert.are.equal("TLSError", aio.errtype(srv._tls_last_error))
    srv:close()
    srv:wait_closed()
  end)

  it("a half ClientHello then a close: the server goes on", function()
    local srv, port = echo_server()
    local hello
    local raw, rport = raw_server(function(r, w) hello = r:read(4096) w:close() end)
    pcall(connect, rport)
    raw:close()
    local r, w = aio.open_connection("127.0.0.1", port)
    w:write(hello:sub(1, 40))
    w:close()
    assert.is_true(S.wait_until(function() return (srv._tls_failures or 0) == 1 end, 2))
    local r2, w2 = connect(port)
    w2:write("fine\n")
    assert.are.equal("echo:fine\n", r2:readline())
    w2:close()
    srv:close()
    srv:wait_closed()
  end)

  it("a server answering garbage: TLSError", function()
    local srv, port = raw_server(function(r, w)
      r:read(4096)
      w:write(string.rep("\0\1\2 not TLS at all ", 20))
      aio.sleep(0.5)
      w:close()
    end)
    local e = tls_error(function() connect(port) end)
    assert.matches("TLS handshake", e.message)
    srv:close()
    srv:wait_closed()
  end)

  it("a server vanishing mid-handshake: TLSError", function()
    local srv, port = raw_server(function(r, w)
      r:read(4096)
      w:close()
    end)
    local e = tls_error(function() connect(port) end)
    assert.matches("closed", e.message)
    srv:close()
  end)

  it("a record cut short: TLSError on the read", function()
    local srv, port = serve(function(r, w)
      r:readline()
      w:write(string.rep("y", 10000))
      w:drain()
      aio.sleep(0.5)
      w:close()
    end, { tls = server_ctx() })
    -- the proxy forwards half of the first data record, then cuts
    local cut = false
    local m2, mport2 = mitm(port, function(dir, typ, rec)
      if dir == "s2c" and typ == 23 then
        if cut then return false end
        cut = true
        return rec:sub(1, #rec // 2)
      end
    end)
    local r, w = connect(mport2)
    w:write("go\n")
    local e = tls_error(function() return r:read() end)
    assert.matches("middle of a TLS record", e.message)
    w:close()
    m2:close()
    srv:close()
    srv:wait_closed()
    m2:wait_closed()
  end)

  it("a huge record: TLSError on the read, the server goes on", function()
    local srv, port = echo_server()
    local m, mport = mitm(port, function(dir, typ, rec)
      if dir == "s2c" and typ == 23 then
        return "\23\3\3\255\255" .. string.rep("h", 70000)
      end
    end)
    local r, w = connect(mport)
    w:write("go\n")
    local e = tls_error(function() return r:readline() end)
    assert.is_string(e.message)
    w:close()
    local r2, w2 = connect(port)
    w2:write("again\n")
    assert.are.equal("echo:again\n", r2:readline())
    w2:close()
    m:close()
    srv:close()
    srv:wait_closed()
  end)

  it("a tampered record: TLSError", function()
    local srv, port = echo_server()
    local m, mport = mitm(port, function(dir, typ, rec)
      if dir == "s2c" and typ == 23 then
        return rec:sub(1, -2) .. string.char((rec:byte(-1) + 1) % 256)
      end
    end)
    local r, w = connect(mport)
    w:write("go\n")
    tls_error(function() return r:readline() end)
    w:close()
    m:close()
    srv:close()
    srv:wait_closed()
    m:wait_closed()
  end)

  it("times out a silent server's handshake", function()
    local srv, port = raw_server(function(r, w)
      r:read(4096)
      aio.sleep(5)
      w:close()
    end)
    local before = settled_fds()
    local t0 = aio.now()
    local e = S.error_of(connect, port, client_ctx({ handshake_timeout = 0.3 }))
    assert.are.equal("TimeoutError", aio.errtype(e))
    assert.matches("TLS handshake timed out", e.message)
    local took = aio.now() - t0
    assert.is_true(took >= 0.29 and took < 2, tostring(took))
    srv:close()
    assert.are.equal(before, settled_fds())
  end)

  it("a server times out a silent client's handshake", function()
    local srv, port = echo_server(server_ctx(nil, { handshake_timeout = 0.2 }))
    local r, w = aio.open_connection("127.0.0.1", port)
    assert.is_nil(r:read())  -- closed by the server
    w:close()
    assert.are.equal("TimeoutError", aio.errtype(srv._tls_last_error))
    srv:close()
  end)

  it("cancels during the handshake and leaves no fd behind", function()
    local srv, port = raw_server(function(r, w)
      r:read(4096)
      aio.sleep(5)
      w:close()
    end)
    local before = settled_fds()
    local t = aio.spawn(connect, port)
    aio.sleep(0.1)
    t:cancel()
    local ok, e = pcall(t.await, t)
    assert.is_false(ok)
    assert.are.equal("CancelledError", aio.errtype(e))
    srv:close()
    assert.are.equal(before, settled_fds())
  end)

  it("cancels a TLS read; the stream still works", function()
    local go = aio.Future()
    local srv, port = serve(function(r, w)
      go:await()
      w:write("late\n")
      r:read()
      w:close()
    end, { tls = server_ctx() })
    local r, w = connect(port)
    local t = aio.spawn(r.readline, r)
    aio.sleep(0.05)
    t:cancel()
    assert.are.equal("CancelledError", aio.errtype(select(2, pcall(t.await, t))))
    go:set_result(true)
    assert.are.equal("late\n", r:readline())
    w:close()
    srv:close()
    srv:wait_closed()
  end)

  it("closing the writer while a read waits ends the read", function()
    local srv, port = serve(function(r, w) r:read() w:close() end, { tls = server_ctx() })
    local r, w = connect(port)
    local t = aio.spawn(r.read, r)
    aio.sleep(0.05)
    w:close()
    assert.is_nil(t:await())
    srv:close()
    srv:wait_closed()
  end)

  it("leaves no fd behind after successes and failures", function()
    local srv, port = echo_server()
    local before = settled_fds()
    for _ = 1, 5 do
      local r, w = connect(port)
      w:write("a\n")
      r:readline()
      w:close()
      pcall(connect, port, client_ctx({ ca_file = C["other-ca"] }))
      pcall(connect, port, nil, "wrong.example")
      local r3, w3 = aio.open_connection("127.0.0.1", port)
      w3:write("junk junk junk junk\r\n\r\n")
      r3:read()
      w3:close()
    end
    assert.are.equal(before, settled_fds())
    srv:close()
  end)
end)

-- ---- start_tls -------------------------------------------------------------------

describe("writer:start_tls", function()
  it("upgrades a plain connection in place on both sides", function()
    local sctx = server_ctx()
    local srv, port = serve(function(r, w)
      assert(r:readline() == "STARTTLS\n")
      w:write("OK\n")
      w:start_tls(sctx)
      for line in r:lines() do w:write("tls:" .. line .. "\n") end
      w:close()
    end)
    local r, w = aio.open_connection("127.0.0.1", port)
    assert.is_false(w:is_tls())
    assert.is_nil(w:get_extra_info("cipher"))
    w:write("STARTTLS\n")
    assert.are.equal("OK\n", r:readline())
    w:start_tls(client_ctx(), { server_hostname = "localhost" })
    assert.is_true(w:is_tls())
    assert.are.equal("TLSv1.2", w:get_extra_info("tls_version"))
    w:write("one\n")
    w:write("two\n")
    assert.are.equal("tls:one\n", r:readline())
    assert.are.equal("tls:two\n", r:readline())
    w:close()
    srv:close()
    srv:wait_closed()
  end)

  it("takes a handshake_timeout of its own, as asyncio's ssl_handshake_timeout", function()
    -- the server says OK and then never speaks TLS
    local hold = aio.Event()
    local srv, port = serve(function(r, w)
      r:readline()
      w:write("OK\n")
      hold:wait()
      w:close()
    end)
    local r, w = aio.open_connection("127.0.0.1", port)
    w:write("STARTTLS\n")
    r:readline()
    assert.matches("start_tls: opts.handshake_timeout must be a positive number",
      S.error_of(w.start_tls, w, client_ctx(), { handshake_timeout = 0 }))
    assert.matches("start_tls: unknown option 'ssl_handshake_timeout'",
      S.error_of(w.start_tls, w, client_ctx(), { ssl_handshake_timeout = 1 }))
    local t0 = aio.now()
    local e = S.error_of(w.start_tls, w, client_ctx(), { server_hostname = "localhost", handshake_timeout = 0.1 })
    assert.are.equal("TimeoutError", aio.errtype(e))
    assert.matches("after 0%.1", e.message)  -- this call's, not the context's 60 s
    assert.is_true(aio.now() - t0 < 5)
    assert.is_true(w:is_closing())
    hold:set()
    srv:close()
  end)

  it("fails cleanly: verification error closes the stream", function()
    local sctx = server_ctx("other")
    local srv, port = serve(function(r, w)
      r:readline()
      w:write("OK\n")
      pcall(w.start_tls, w, sctx)
      w:close()
    end)
    local r, w = aio.open_connection("127.0.0.1", port)
    w:write("STARTTLS\n")
    r:readline()
    tls_error(function() w:start_tls(client_ctx(), { server_hostname = "localhost" }) end)
    assert.is_true(w:is_closing())
    for _, n in ipairs({ "cipher", "tls_version", "alpn", "peercert" }) do
      assert.is_nil(w:get_extra_info(n), n)  -- no session was agreed
    end
    -- closed by the failure: that is what a second start_tls says
    local ok, e = pcall(function() w:start_tls(client_ctx()) end)
    assert.is_false(ok)
    assert.matches("start_tls: the stream is closed", e)
    srv:close()
    srv:wait_closed()
  end)

  it("a second start_tls on a TLS stream is a plain error at the caller's line", function()
    local srv, port = echo_server()
    local r, w = connect(port)
    local ok, e = pcall(function() w:start_tls(client_ctx()) end)
    assert.is_false(ok)
    assert.matches("tls_spec.lua:%d+: start_tls: the stream already uses TLS", e)
    ok, e = pcall(function() aio.open_connection("127.0.0.1", port, { tls = "yes" }) end)
    assert.matches("tls_spec.lua:%d+: open_connection: opts.tls must be true or an aio.tls.context", e)
    w:close()
    srv:close()
  end)

  it("refuses writes and reads from other tasks while the handshake runs", function()
    local srv, port = raw_server(function(r, w)
      r:read()
      w:close()
    end)
    local r, w = aio.open_connection("127.0.0.1", port)
    local t = aio.spawn(w.start_tls, w, client_ctx({ handshake_timeout = 2 }), { server_hostname = "localhost" })
    aio.sleep(0.05)
    assert.matches("handshake is not over", S.error_of(w.write, w, "x"))
    assert.matches("another task", S.error_of(r.read, r))
    t:cancel()
    assert.are.equal("CancelledError", aio.errtype(select(2, pcall(t.await, t))))
    assert.is_true(w:is_closing())
    srv:close()
    srv:wait_closed()
  end)

  it("refuses a bad context", function()
    local srv, port = serve(function(_, w) w:close() end)
    local _, w = aio.open_connection("127.0.0.1", port)
    assert.matches("opts.tls", S.error_of(w.start_tls, w, 42))
    w:close()
    srv:close()
  end)
end)

describe("TLS over Unix sockets", function()
  it("works with a server_hostname", function()
    local path = DIR .. "/sock"
    local srv = aio.start_unix_server(function(r, w)
      w:write("unix:" .. r:readline())
      w:close()
    end, path, { tls = server_ctx() })
    assert.matches("server_hostname", S.error_of(aio.open_unix_connection, path, { tls = client_ctx() }))
    local r, w = aio.open_unix_connection(path, { tls = client_ctx(), server_hostname = "localhost" })
    w:write("hi\n")
    assert.are.equal("unix:hi\n", r:readline())
    w:close()
    srv:close()
  end)
end)

-- the certificates go when the file is done
teardown(function() os.execute("rm -rf " .. DIR) end)
