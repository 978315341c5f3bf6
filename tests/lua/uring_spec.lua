-- socket streams through io_uring (src/host/loop_ev.c, "io_uring"): the
-- same behaviour with the ring and without it (AIOLUA_URING=0), the ring's
-- fd as one of the loop's own, sends still in the ring at a close or a
-- reset, and signals and thread results that wake a loop waiting in it
local aio = require "aio"
local S = require "support"

local WIN = package.config:sub(1, 1) == "\\"
local BIN = os.getenv("AIOLUA_BIN") or "./aiolua"

-- Linux 6.0 or later: the ring is used unless turned off
local function kernel_has_ring()
  if WIN then return false end
  local rel = S.sh("uname -r")
  return (tonumber(rel:match("^(%d+)")) or 0) >= 6
end

-- an exchange that goes through every path of a socket stream: small
-- messages both ways, a large write drained by a slow reader (the reader
-- pauses the transport, then resumes), a half-close, EOF, and a reset
local EXCHANGE = [[
  local aio = require "aio"
  local function sum(s)
    local h = 0
    for i = 1, #s, 97 do h = (h * 31 + s:byte(i)) % 1000000007 end
    return h
  end
  print(tostring(aio.loop()):match("%((.-),"))
  local big = {}
  for i = 1, 4096 do big[i] = string.format("%07d", i) .. string.rep("z", 1017) end
  big = table.concat(big)  -- 4 MiB
  local srv = aio.start_server(function(r, w)
    for _ = 1, 200 do
      local line = r:readline()
      w:write(line:upper())
    end
    w:drain()
    w:write(big)
    w:drain()
    local rest = r:read()  -- until the client's write_eof
    w:write("rest " .. #rest .. "\n")
    w:close()
  end, "127.0.0.1", 0)
  local port = select(2, srv:getsockname())
  local r, w = aio.open_connection("127.0.0.1", port)
  local n = 0
  for i = 1, 200 do
    w:write("line " .. i .. "\n")
    if r:readline() == ("LINE " .. i .. "\n") then n = n + 1 end
  end
  print("lines", n)
  aio.sleep(0.2)  -- the server's 4 MiB wait in the buffers: it pauses
  local got = r:readexactly(#big)
  print("big", #got, got == big, sum(got) == sum(big))
  w:write(string.rep("r", 100000))
  w:write_eof()
  print(r:readline())
  print("eof", r:read(), r:at_eof())
  w:close()
  w:wait_closed()
  srv:close()
  srv:wait_closed()
  -- a reset while a send waits in the ring: the peer closes unread
  local sw = aio.Future()
  local srv2 = aio.start_server(function(r2, w2) sw:set_result(w2) aio.sleep(10) end,
                                "127.0.0.1", 0)
  local r3, w3 = aio.open_connection("127.0.0.1", select(2, srv2:getsockname()))
  local peer = sw:await()
  local chunk = string.rep("x", 1 << 20)
  for _ = 1, 16 do w3:write(chunk) end  -- more than the socket buffers take
  peer:close()
  local ok, e = pcall(function() for _ = 1, 100 do w3:write(chunk) w3:drain() end end)
  print("reset", ok, aio.errtype(e))
  w3:close()
  srv2:close()
  print("done")
]]

describe("socket streams and io_uring", function()
  if WIN then return end

  it("a loop sends and receives through a ring; AIOLUA_URING=0 turns it off", function()
    local out = S.script(BIN, "print(aio.loop())")
    if kernel_has_ring() then
      assert.are.equal("aio.Loop (libev+io_uring, open)\n", out)
    end
    out = S.script("AIOLUA_URING=0 " .. BIN, "print(aio.loop())")
    assert.are.equal("aio.Loop (libev, open)\n", out)
  end)

  it("the same exchanges with the ring and without it", function()
    local expect = "lines\t200\nbig\t4194304\ttrue\ttrue\nrest 100000\n\n" ..
                   "eof\tnil\ttrue\nreset\tfalse\tOSError\ndone\n"
    local with, rc1 = S.script(BIN, EXCHANGE)
    local without, rc2 = S.script("AIOLUA_URING=0 " .. BIN, EXCHANGE)
    assert.are.equal(0, rc1, with)
    assert.are.equal(0, rc2, without)
    if kernel_has_ring() then
      assert.are.equal("libev+io_uring\n" .. expect, with)
    end
    assert.are.equal("libev\n" .. expect, without)
    -- and from a stock lua5.4, whose loop closes at aio.run's end
    local stock, rc3 = S.script(S.STOCK_LUA,
      'require("aio").run(function() ' .. EXCHANGE .. ' end)')
    assert.are.equal(0, rc3, stock)
    assert.matches("done\n$", stock)
  end)

  it("the ring's fd is the loop's own: a connection leaves the count as it was", function()
    local before = S.settled_fds()
    local srv = aio.start_server(function(r, w) w:write(r:readline()) w:close() end,
                                 "127.0.0.1", 0)
    local r, w = aio.open_connection("127.0.0.1", select(2, srv:getsockname()))
    w:write("ping\n")
    assert.are.equal("ping\n", r:readline())
    w:close()
    w:wait_closed()
    srv:close()
    srv:wait_closed()
    assert.is_true(S.wait_until(function() return S.fd_count() == before end))
  end)

  it("a stream closed while its send waits in the ring is freed once the peer resets", function()
    local before = S.settled_fds()
    local held = aio.Future()
    local srv = aio.start_server(function(r, w) held:await() w:close() end,
                                 "127.0.0.1", 0)
    local r, w = aio.open_connection("127.0.0.1", select(2, srv:getsockname()))
    local chunk = string.rep("y", 1 << 20)
    for _ = 1, 32 do w:write(chunk) end  -- more than the socket buffers take
    local t = aio.spawn(function() return pcall(w.drain, w) end)
    aio.sleep(0.05)
    assert.is_false(t:done())  -- the peer does not read
    t:cancel()
    pcall(t.await, t)
    w:close()  -- cannot flush: it waits, its send in the ring
    assert.is_true(w:is_closing())
    held:set_result(true)  -- the server closes unread: a reset
    srv:close()
    srv:wait_closed()
    assert.is_true(S.wait_until(function() return S.fd_count() == before end))
  end)

  it("a signal that comes while the loop waits in the ring is delivered", function()
    local pid = tonumber((S.sh("echo $PPID")))  -- the shell's parent: this process
    local p = aio.exec({ "sh", "-c", "sleep 0.2; kill -USR1 " .. pid })
    local got = aio.wait_for(function() return aio.wait_signal("SIGUSR1") end, 5)
    assert.are.equal("SIGUSR1", got)
    assert.are.equal(0, p:wait())
  end)

  it("a thread's result wakes the loop waiting in the ring", function()
    local v = aio.wait_for(function()
      return aio.to_thread(function()
        local t0 = os.clock()
        while os.clock() - t0 < 0.1 do end
        return 42
      end)
    end, 5)
    assert.are.equal(42, v)
  end)
end)
