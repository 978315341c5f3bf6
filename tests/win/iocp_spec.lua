-- tests/win/iocp_spec.lua: the IOCP backend's transports under stress
-- (make test-windows, under wine).  Closing a socket with reads, writes,
-- accepts or a connect in flight must wait for the cancelled OVERLAPPEDs
-- before the memory goes: done many times over, then the loop still works.
local aio = require "aio"

local function server(handler)
  local srv = aio.start_server(handler, "127.0.0.1", 0)
  local _, port = srv:getsockname()
  return srv, port
end

describe("IOCP transports", function()
  it("close with reads and writes in flight, many times over", function()
    local big = string.rep("x", 1024 * 1024)
    local srv, port = server(function(r, w)
      -- the server side: a read in flight, then closed under it
      pcall(r.read, r, 10)
      w:close()
    end)
    for _ = 1, 100 do
      local r, w = aio.open_connection("127.0.0.1", port)
      w:write(big)                     -- most of it queued: a WSASend out
      local t = aio.spawn(r.read, r)   -- a read out too
      aio.sleep(0)
      t:cancel()
      pcall(t.await, t)
      w:close()                        -- closes with both in flight
    end
    srv:close()
    -- still working afterwards
    local srv2, port2 = server(function(r, w)
      w:write((r:readline() or ""):upper() .. "\n")
      w:close()
    end)
    local r, w = aio.open_connection("127.0.0.1", port2)
    w:write("still here\n")
    assert.equal("STILL HERE\n", r:readline())
    w:close()
    srv2:close()
  end)

  it("close a listener with an accept in flight, many times over", function()
    for _ = 1, 200 do
      local srv = aio.start_server(function() end, "127.0.0.1", 0)
      aio.sleep(0)
      srv:close()
    end
  end)

  it("close while connecting, many times over", function()
    local srv, port = server(function(_, w) w:close() end)
    for _ = 1, 100 do
      local t = aio.spawn(aio.open_connection, "127.0.0.1", port)
      aio.sleep(0)                     -- the ConnectEx is out
      t:cancel()
      pcall(t.await, t)
    end
    srv:close()
  end)

  it("serves 300 clients at once (accepts pause and resume)", function()
    local srv, port = server(function(r, w)
      w:write((r:readline() or "?"):upper())
      w:close()
    end)
    local ts = {}
    for i = 1, 300 do
      ts[i] = aio.spawn(function()
        local r, w = aio.open_connection("127.0.0.1", port)
        w:write("c" .. i .. "\n")
        local got = r:read()
        w:close()
        return got
      end)
    end
    for i = 1, 300 do assert.equal("C" .. i .. "\n", ts[i]:await()) end
    srv:close()
  end)

  it("moves 4 MiB each way with backpressure", function()
    local n = 4 * 1024 * 1024
    local srv, port = server(function(r, w)
      local got = 0
      while got < n do
        local s = r:read(65536)
        if not s then break end
        got = got + #s
        w:write(s)
        w:drain()
      end
      w:close()
    end)
    local r, w = aio.open_connection("127.0.0.1", port)
    local sender = aio.spawn(function()
      local chunk = string.rep("y", 65536)
      for _ = 1, n // #chunk do w:write(chunk) w:drain() end
    end)
    local got = 0
    while got < n do
      local s = r:read(65536)
      if not s then break end
      got = got + #s
    end
    sender:await()
    assert.equal(n, got)
    w:close()
    srv:close()
  end)

  it("a refused connect raises OSError ECONNREFUSED", function()
    local srv, port = server(function() end)
    srv:close()
    local ok, e = pcall(aio.open_connection, "127.0.0.1", port)
    assert.is_false(ok)
    assert.equal("ECONNREFUSED", e.code)
  end)
end)
