-- hostile peers and fd exhaustion (issue 11): each misbehaving client
-- costs one connection, never the server; a server out of fds sheds the
-- connection, does not spin, and accepts again once fds are free.
local aio = require "aio"
local S = require "support"

local BIN = os.getenv("AIOLUA_BIN") or "./aiolua"

-- an echo-a-line server; `seen` collects what each handler ended with
local function line_server(opts)
  local seen = {}
  local srv = aio.start_server(function(r, w)
    local ok, line = pcall(r.readline, r)
    if ok and line then
      w:write("echo " .. line)
      w:drain()
      seen[#seen + 1] = "ok"
    else
      seen[#seen + 1] = ok and "eof" or (aio.errtype(line) or tostring(line))
    end
    w:close()
  end, "127.0.0.1", 0, opts)
  local _, port = srv:getsockname()
  return srv, port, seen
end

local function ask(port, line)
  local r, w = aio.open_connection("127.0.0.1", port)
  w:write(line)
  local got = r:read()
  w:close()
  return got
end

local settled_fds = S.settled_fds

describe("hostile peers", function()
  it("slowloris: an unfinished request line holds one connection only", function()
    local fds = settled_fds()
    local srv, port, seen = line_server()
    local slow = {}
    for i = 1, 20 do  -- each sends part of a line, then nothing
      local r, w = aio.open_connection("127.0.0.1", port)
      w:write("GET /" .. i .. " HT")
      slow[i] = { r, w }
    end
    aio.sleep(0.05)
    assert.equal("echo hello\n", ask(port, "hello\n"))
    assert.equal("echo again\n", ask(port, "again\n"))
    for _, c in ipairs(slow) do c[2]:close() end
    assert.is_true(S.wait_until(function() return #seen == 22 end, 5))
    srv:close()
    srv:wait_closed()
    assert.equal(fds, settled_fds())
  end)

  it("slowloris past the limit: LimitOverrunError, the server goes on", function()
    local srv, port, seen = line_server({ limit = 1024 })
    local r, w = aio.open_connection("127.0.0.1", port)
    pcall(function()  -- 8 KiB and still no newline; EPIPE once refused
      for _ = 1, 8 do
        w:write(("x"):rep(1024))
        w:drain()
        aio.sleep(0.005)
      end
    end)
    assert.is_true(S.wait_until(function() return #seen == 1 end, 5))
    assert.equal("LimitOverrunError", seen[1])
    assert.is_nil(r:read())  -- the server closed it
    w:close()
    assert.equal("echo fine\n", ask(port, "fine\n"))
    srv:close()
    srv:wait_closed()
  end)

  it("a client that resets mid-response costs its handler only", function()
    local fds = settled_fds()
    local errs = {}
    local srv = aio.start_server(function(r, w)
      r:readline()
      local ok, e = pcall(function()
        for _ = 1, 200 do
          w:write(("y"):rep(64 * 1024))
          w:drain()
        end
      end)
      errs[#errs + 1] = ok and "finished" or (e.code or tostring(e))
      w:close()
    end, "127.0.0.1", 0)
    local _, port = srv:getsockname()
    for _ = 1, 5 do
      local r, w = aio.open_connection("127.0.0.1", port)
      w:write("go\n")
      assert.is_true(#r:read(1000) > 0)
      aio.sleep(0.01)
      w:close()  -- unread data in our buffer: the kernel sends RST
    end
    assert.is_true(S.wait_until(function() return #errs == 5 end, 10))
    for _, e in ipairs(errs) do
      assert.is_true(e == "EPIPE" or e == "ECONNRESET", e)
    end
    local r, w = aio.open_connection("127.0.0.1", port)
    w:write("go\n")
    assert.is_true(#r:read(10) > 0)  -- still serving
    w:close()
    srv:close()
    srv:wait_closed()
    assert.equal(fds, settled_fds())
  end)

  it("a half-closed client still gets its whole answer", function()
    local srv = aio.start_server(function(r, w)
      local all = r:read()  -- to EOF: the client's write_eof
      w:write("got " .. #all)
      w:close()
    end, "127.0.0.1", 0)
    local _, port = srv:getsockname()
    for n = 1, 3 do
      local r, w = aio.open_connection("127.0.0.1", port)
      w:write(("z"):rep(n * 100000))
      w:write_eof()
      assert.equal("got " .. n * 100000, r:read())
      w:close()
    end
    srv:close()
    srv:wait_closed()
  end)

  it("a client that reads nothing: drain holds the server's memory flat", function()
    local queued, done = {}, false
    local srv = aio.start_server(function(_, w)
      local ok = pcall(function()
        for _ = 1, 1000 do  -- 64 MiB if nothing held it back
          w:write(("w"):rep(64 * 1024))
          w:drain()
          queued[#queued + 1] = w:transport_info()
        end
      end)
      done = true
      w:close()
      return ok
    end, "127.0.0.1", 0)
    local _, port = srv:getsockname()
    local r, w = aio.open_connection("127.0.0.1", port)
    aio.sleep(0.3)  -- the server writes until the socket buffers are full
    local n = #queued
    assert.is_true(n < 1000, "the writer never blocked")
    for _, q in ipairs(queued) do
      assert.is_true(q <= 128 * 1024, "queued " .. q)
    end
    aio.sleep(0.1)
    assert.equal(n, #queued)  -- still blocked in drain, not buffering
    w:close()
    assert.is_true(S.wait_until(function() return done end, 5))
    srv:close()
    srv:wait_closed()
    local _ = r
  end)
end)

describe("fd exhaustion", function()
  it("EMFILE in accept: sheds, does not spin, accepts again", function()
    -- the child: a server under `ulimit -n 64` that fills its fds, waits
    -- while a connection is pending, then frees them
    local script = [[
      local srv = aio.start_server(function(r, w)
        local line = r:readline()
        w:write("echo " .. line) w:drain() w:close()
        done = true
      end, "127.0.0.1", 0)
      local _, port = srv:getsockname()
      print(port) io.stdout:flush()
      local files = {}
      while true do
        local f = io.open("/dev/null")
        if not f then break end
        files[#files + 1] = f
      end
      io.read("l")  -- the parent has connected
      local c0 = os.clock()
      aio.sleep(0.5)
      local cpu = os.clock() - c0
      for _, f in ipairs(files) do f:close() end
      while not done do aio.sleep(0.01) end
      print(#files, cpu) io.stdout:flush()
    ]]
    local p = aio.exec({ "sh", "-c", 'ulimit -n 64; exec "$0" -e "$1"', BIN, script },
      { stdin = "pipe", stdout = "pipe", stderr = "pipe" })
    local port = tonumber(p.stdout:readline())
    assert.is_number(port)
    local r, w = aio.open_connection("127.0.0.1", port)
    w:write("ping\n")
    p.stdin:write("go\n")
    assert.equal("echo ping\n", r:read())  -- the helper's deadline: no hang
    w:close()
    local nfiles, cpu = p.stdout:readline():match("(%d+)%s+(%S+)")
    local err = p.stderr:read() or ""
    assert.equal(0, p:wait())
    assert.is_true(tonumber(nfiles) > 10)
    -- out of fds for 0.5 s: a busy loop would burn all of it
    assert.is_true(tonumber(cpu) < 0.25, "cpu " .. cpu .. " s; " .. err)
    assert.truthy(err:find("EMFILE", 1, true) or err:find("Too many", 1, true), err)
  end)
end)
