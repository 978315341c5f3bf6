-- aio.getaddrinfo on the worker-thread pool (src/bindings/dns.c)
local aio = require "aio"
local S = require "support"

describe("aio.getaddrinfo", function()
  it("resolves localhost to loopback addresses with numeric ports", function()
    local list = aio.getaddrinfo("localhost", 8080)
    assert.is_true(#list >= 1)
    local loop = false
    for _, ai in ipairs(list) do
      assert.are.equal(8080, ai.port)
      assert.are.equal(ai.host:find(":", 1, true) and "inet6" or "inet", ai.family)
      if ai.host == "127.0.0.1" or ai.host == "::1" then loop = true end
    end
    assert.is_true(loop)
  end)

  it("answers numeric hosts, filters by family", function()
    local l = aio.getaddrinfo("127.0.0.1", "80")
    assert.are.same({ { family = "inet", host = "127.0.0.1", port = 80 } }, l)
    local v4 = aio.getaddrinfo("localhost", 1, { family = "inet" })
    for _, ai in ipairs(v4) do assert.are.equal("inet", ai.family) end
    local all = aio.getaddrinfo(nil, 5000, { passive = true })
    assert.is_true(#all >= 1)
  end)

  it("raises DNSError for a name that does not resolve", function()
    local ok, e = pcall(aio.getaddrinfo, "no-such-host.invalid", 80)
    assert.is_false(ok)
    assert.are.equal("DNSError", aio.errtype(e))
    assert.is_string(e.message)
    assert.is_string(e.code)
  end)

  it("does not block the loop: other tasks run meanwhile, many in parallel", function()
    local ticks = 0
    local ticker = aio.spawn(function()
      while true do ticks = ticks + 1 aio.sleep(0) end
    end)
    local tasks = {}
    for i = 1, 20 do tasks[i] = aio.spawn(aio.getaddrinfo, "localhost", i) end
    for i = 1, 20 do assert.are.equal(i, tasks[i]:await()[1].port) end
    ticker:cancel()
    pcall(ticker.await, ticker)
    assert.is_true(ticks > 0)
  end)

  it("can be cancelled while a worker resolves", function()
    for _ = 1, 20 do
      local t = aio.spawn(aio.getaddrinfo, "localhost", 80)
      aio.sleep(0)
      t:cancel()
      local ok, e = pcall(t.await, t)
      if not ok then assert.are.equal("CancelledError", aio.errtype(e)) end
    end
    collectgarbage()
    aio.sleep(0.05)
    assert.are.equal(80, aio.getaddrinfo("localhost", 80)[1].port)
  end)

  it("takes a port given as an integral float, by name too; refuses 80.5", function()
    -- getaddrinfo would read the service "80.0" as a name, not a port
    for _, host in ipairs({ "127.0.0.1", "localhost" }) do
      local ai = aio.getaddrinfo(host, 80.0, { family = "inet" })
      assert.are.equal(80, ai[1].port)
      assert.are.equal("integer", math.type(ai[1].port))
    end
    local srv = aio.start_server(function(r, w) w:write("hi") w:close() end, "127.0.0.1", 0)
    local _, port = srv:getsockname()
    local r, w = aio.open_connection("localhost", port + 0.0, { family = "inet" })
    assert.are.equal("hi", r:read())
    w:close()
    srv:close()
    assert.matches("port: an integer expected, got 80.5",
      S.error_of(aio.open_connection, "localhost", 80.5))
    assert.matches("an integer expected", S.error_of(aio.getaddrinfo, "localhost", 80.5))
  end)

  it("names getaddrinfo's error codes (EAI_ADDRFAMILY, not EAI_-9)", function()
    local ok, e = pcall(aio.getaddrinfo, "127.0.0.1", 80, { family = "inet6" })
    assert.is_false(ok)
    assert.are.equal("DNSError", aio.errtype(e))
    assert.are.equal("EAI_ADDRFAMILY", e.code)
    -- open_connection to a numeric host of the other family says the same
    e = S.error_of(aio.open_connection, "::1", 80, { family = "inet" })
    assert.are.equal("EAI_ADDRFAMILY", e.code)
  end)

  it("checks its arguments", function()
    assert.has_error(function() aio.getaddrinfo(42, 80) end)
    assert.has_error(function() aio.getaddrinfo("localhost", 80, { family = "x" }) end)
    -- these were taken without a word
    assert.matches("dns_spec.lua:%d+: bad argument #3 to 'getaddrinfo' %(options table expected, got string%)",
      S.error_of(function() aio.getaddrinfo("127.0.0.1", 53, "inet") end))
    assert.matches("getaddrinfo: opts.type must be \"stream\" or \"dgram\"",
      S.error_of(function() aio.getaddrinfo("127.0.0.1", 53, { type = "bogus" }) end))
    assert.matches("getaddrinfo: opts.passive must be a boolean",
      S.error_of(function() aio.getaddrinfo("127.0.0.1", 53, { passive = "yes" }) end))
    assert.are.equal(53, aio.getaddrinfo("127.0.0.1", 53, { type = "dgram" })[1].port)
  end)
end)

describe("start_server with no host (every interface)", function()
  it("listens on IPv4 and IPv6 with one port number when that is free", function()
    local srv = aio.start_server(function(r, w) w:write("hi") w:close() end, nil, 0)
    local h4, p4 = srv:getsockname(1)
    local h6, p6 = srv:getsockname(2)
    assert.are.equal("0.0.0.0", h4)
    assert.are.equal("::", h6)
    assert.are.equal(p4, p6)
    for _, host in ipairs({ "127.0.0.1", "::1" }) do
      local r, w = aio.open_connection(host, p4)
      assert.are.equal("hi", r:read())
      w:close()
    end
    -- "" is every interface too, as asyncio's
    local srv2 = aio.start_server(function() end, "", 0)
    assert.are.equal("0.0.0.0", (srv2:getsockname(1)))
    srv2:close()
    srv:close()
  end)
end)

describe("aio.getaddrinfo misuse", function()
  it("no host and no port is a plain error at the caller's line", function()
    local ok, e = pcall(function() aio.getaddrinfo(nil, nil) end)
    assert.is_false(ok)
    assert.matches("dns_spec.lua:%d+: getaddrinfo: host and port are both nil", e)
  end)
end)
