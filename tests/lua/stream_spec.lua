-- streams over TCP and Unix sockets (API.md "Streams"); src/bindings/stream.c
-- under lua/aio/stream.lua.  Real peers (curl, python3) where they fit.
local aio = require "aio"
local S = require "support"
local WIN = package.config:sub(1, 1) == "\\"

local function serve(handler, opts)
  local srv = aio.start_server(handler, "127.0.0.1", 0, opts)
  local _, port = srv:getsockname()
  return srv, port
end

-- a server that sends `chunks` (sleeping a little between them) then closes
local function sender(chunks)
  return serve(function(_, w)
    for _, c in ipairs(chunks) do
      w:write(c)
      w:drain()
      aio.sleep(0.01)
    end
    w:close()
  end)
end

-- collect garbage and let closing connections finish, then count fds
local settled_fds = S.settled_fds

-- a fresh path: os.tmpname reserves a unique file, `tag` makes the name
-- ours (the reservation is removed at once; parallel runs do not collide)
local function tmpname(tag)
  local base = os.tmpname()
  os.remove(base)
  return base .. "-aiolua-" .. tag
end

-- run a shell command in the background; returns a function that waits
-- (polling) until it has finished and gives its output
local function background(cmd)
  local out, done = tmpname("out"), tmpname("done")
  -- the status file appears whole (mv), never empty
  os.execute(string.format("( (%s) >%s 2>&1; echo $? >%s.tmp; mv %s.tmp %s ) &",
    cmd, out, done, done, done))
  return function(timeout)
    assert(S.wait_until(function()
      local f = io.open(done) if f then f:close() return true end
    end, timeout or 10), "background command did not finish: " .. cmd)
    local f = io.open(out) local s = f:read("a") f:close()
    local g = io.open(done) local rc = tonumber(g:read("l")) g:close()
    os.remove(out) os.remove(done)
    return s, rc
  end
end

describe("open_connection and start_server", function()
  it("echoes a line over port 0, with names", function()
    local srv, port = serve(function(r, w)
      w:write("echo:" .. r:readline())
      w:drain()
      w:close()
    end)
    assert.is_true(srv:is_serving())
    assert.is_true(port > 0)
    local r, w = aio.open_connection("127.0.0.1", port)
    local h, p = w:get_extra_info("peername")
    assert.are.same({ "127.0.0.1", port }, { h, p })
    local sh, sp = w:get_extra_info("sockname")
    assert.are.equal("127.0.0.1", sh)
    assert.is_true(sp > 0)
    for _, name in ipairs({ "cipher", "tls_version", "alpn", "peercert", "nonsense" }) do
      assert.is_nil(w:get_extra_info(name))
    end
    w:write("hello\n")
    w:drain()
    assert.are.equal("echo:hello\n", r:readline())
    assert.is_nil(r:read())
    assert.is_true(r:at_eof())
    w:close()
    assert.is_true(w:is_closing())
    w:wait_closed()
    srv:close()
    srv:wait_closed()
    assert.is_false(srv:is_serving())
  end)

  it("resolves names (localhost) and takes the address that answers", function()
    local srv, port = serve(function(_, w) w:write("hi\n") w:close() end)
    local r, w = aio.open_connection("localhost", port, { happy_eyeballs_delay = 0.05 })
    assert.are.equal("hi\n", r:readline())
    w:close()
    srv:close()
  end)

  it("happy_eyeballs_delay must be a number >= 0", function()
    for _, bad in ipairs { "0.1", -1, 0 / 0, {} } do
      assert.matches("stream_spec.lua:%d+: open_connection: opts.happy_eyeballs_delay must be a number >= 0",
        S.error_of(function() aio.open_connection("localhost", 1, { happy_eyeballs_delay = bad }) end))
    end
  end)

  it("happy eyeballs: a failed attempt starts the next at once; losers close", function()
    require "aio.stream"  -- it puts happy_eyeballs into _aio.stream
    local happy = require("_aio.stream").happy_eyeballs
    local srv, port = serve(function(_, w) w:write("won") w:close() end)
    local dead = serve(function() end)
    local _, dead_port = dead:getsockname()
    dead:close()
    dead:wait_closed()
    local t0 = aio.now()
    local r, w = happy({
      { family = "inet", host = "127.0.0.1", port = dead_port },
      { family = "inet", host = "127.0.0.1", port = port },
      { family = "inet", host = "127.0.0.1", port = port },
    }, 5)
    assert.is_true(aio.now() - t0 < 4)  -- did not wait for the delay
    assert.are.equal("won", r:read())
    w:close()
    -- all fail: the first error is raised
    local e = S.error_of(happy, {
      { family = "inet", host = "127.0.0.1", port = dead_port },
      { family = "inet", host = "127.0.0.1", port = dead_port },
    }, 0.01)
    assert.are.equal("ECONNREFUSED", e.code)
    srv:close()
  end)

  it("happy eyeballs: an attempt that hangs is overtaken after the delay", function()
    require "aio.stream"  -- it puts happy_eyeballs into _aio.stream
    local happy = require("_aio.stream").happy_eyeballs
    local srv, port = serve(function(_, w) w:write("second") w:close() end)
    -- a python3 listener whose accept queue is full: SYNs to it go unanswered
    local portfile = tmpname("port")
    local wait = background(string.format([[python3 -c '
import socket, time
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(0)
fill = []
for i in range(4):
    c = socket.socket(); c.setblocking(False)
    try: c.connect(l.getsockname())
    except BlockingIOError: pass
    fill.append(c)
time.sleep(0.2)
open("%s", "w").write(str(l.getsockname()[1]))
time.sleep(1)
']], portfile))
    local hung
    assert.is_true(S.wait_until(function()
      local f = io.open(portfile)
      if f then hung = tonumber(f:read("a")) f:close() end
      return hung ~= nil
    end, 5))
    local before = settled_fds()
    local r, w = happy({
      { family = "inet", host = "127.0.0.1", port = hung },
      { family = "inet", host = "127.0.0.1", port = port },
    }, 0.05)
    assert.are.equal("second", r:read())
    w:close()
    r, w = nil, nil
    assert.are.equal(before, settled_fds())  -- the hung attempt was closed
    srv:close()
    wait()
    os.remove(portfile)
  end)

  it("listens on all interfaces when host is nil", function()
    local srv = aio.start_server(function(_, w) w:write("x") w:close() end, nil, 0)
    local _, port = srv:getsockname(1)
    local r, w = aio.open_connection("127.0.0.1", port)
    assert.are.equal("x", r:read())
    w:close()
    srv:close()
    srv:wait_closed()
  end)

  it("binds the client to local_host/local_port", function()
    local seen = aio.Future()
    local srv, port = serve(function(_, w)
      seen:set_result(w:get_extra_info("peername"))
      w:close()
    end)
    local r, w = aio.open_connection("127.0.0.1", port, { local_host = "127.0.0.2" })
    assert.are.equal("127.0.0.2", seen:await())
    w:close()
    srv:close()
  end)

  it("serves over IPv6 when the machine has it", function()
    local ok, srv = pcall(aio.start_server, function(_, w) w:write("six") w:close() end, "::1", 0)
    if not ok then return end  -- no IPv6 here
    local h, port = srv:getsockname()
    assert.are.equal("::1", h)
    local r, w = aio.open_connection("::1", port)
    assert.are.equal("six", r:read())
    w:close()
    srv:close()
  end)

  it("reports a handler's error, closes that connection and goes on", function()
    local n = 0
    local srv, port = serve(function(r, w)
      n = n + 1
      if n == 1 then error("handler exploded") end
      w:write("fine\n")
      w:close()
    end)
    local r1, w1 = aio.open_connection("127.0.0.1", port)
    assert.is_nil(r1:read())  -- closed by the server
    w1:close()
    local r2, w2 = aio.open_connection("127.0.0.1", port)
    assert.are.equal("fine\n", r2:readline())
    w2:close()
    srv:close()
  end)

  it("a cancelled wait_closed leaves the other waiters and the handlers alone", function()
    local go = aio.Event()
    local srv, port = serve(function(_, w) go:wait() w:write("bye\n") w:close() end)
    local r, w = aio.open_connection("127.0.0.1", port)
    aio.sleep(0.01)
    local early = aio.spawn(srv.wait_closed, srv)  -- while serving
    aio.sleep(0)
    early:cancel()
    assert.are.equal("CancelledError", aio.errtype(S.error_of(early.await, early)))
    srv:close()
    local cancelled = aio.spawn(srv.wait_closed, srv)  -- while a handler runs
    local other = aio.spawn(srv.wait_closed, srv)
    aio.sleep(0)
    cancelled:cancel()
    assert.are.equal("CancelledError", aio.errtype(S.error_of(cancelled.await, cancelled)))
    -- still waiting for the handler, not cancelled with the first one
    assert.are.equal("TimeoutError", aio.errtype(S.error_of(aio.wait_for,
      function() return srv:wait_closed() end, 0.05)))
    assert.is_false(other:done())
    go:set()
    aio.wait_for(other, 2)
    assert.is_true(other:done() and not other:cancelled())
    assert.are.equal("bye\n", r:read())
    w:close()
  end)

  it("serve_forever ends when its task is cancelled, closing the server", function()
    local srv, port = serve(function(_, w) w:close() end)
    local t = aio.spawn(function() srv:serve_forever() end)
    aio.sleep(0.01)
    t:cancel()
    local ok, e = pcall(t.await, t)
    assert.is_false(ok)
    assert.are.equal("CancelledError", aio.errtype(e))
    assert.is_false(srv:is_serving())
    local e2 = S.error_of(aio.open_connection, "127.0.0.1", port)
    assert.are.equal("ECONNREFUSED", e2.code)
  end)

  it("serve_forever raises CancelledError when the server is closed (as asyncio)", function()
    local srv = serve(function() end)
    aio.spawn(function() aio.sleep(0.01) srv:close() end)
    local ok, e = pcall(srv.serve_forever, srv)
    assert.is_false(ok)
    assert.are.equal("CancelledError", aio.errtype(e))
    assert.is_false(srv:is_serving())
    -- the task is not cancelled: it goes on (the caller caught it)
    assert.is_false(aio.current_task():cancelled())
  end)

  it("a task in serve_forever ends cancelled when the server is closed", function()
    local srv = serve(function() end)
    local t = aio.spawn(srv.serve_forever, srv)
    aio.sleep(0.01)
    assert.is_true(srv:is_serving())
    srv:close()
    local ok, e = pcall(t.await, t)
    assert.is_false(ok)
    assert.are.equal("CancelledError", aio.errtype(e))
    assert.is_true(t:cancelled())
    -- serve_forever again on the closed server: an error, as asyncio's
    assert.has_error(function() srv:serve_forever() end)
    srv:wait_closed()
  end)

  it("handles 500 concurrent clients", function()
    local srv, port = serve(function(r, w)
      local l = r:readline()
      w:write(l)
      w:close()
    end, { backlog = 1024 })
    local tasks = {}
    for i = 1, 500 do
      tasks[i] = aio.spawn(function()
        local r, w = aio.open_connection("127.0.0.1", port)
        w:write("client " .. i .. "\n")
        local l = r:readline()
        w:close()
        return l
      end)
    end
    for i = 1, 500 do assert.are.equal("client " .. i .. "\n", tasks[i]:await()) end
    srv:close()
  end)

  it("checks its arguments", function()
    assert.has_error(function() aio.open_connection(nil, 80) end)
    assert.has_error(function() aio.open_connection("127.0.0.1", {}) end)
    assert.has_error(function() aio.start_server("nope", "127.0.0.1", 0) end)
    assert.has_error(function() aio.open_connection("127.0.0.1", 80, { family = "ipx" }) end)
  end)

  it("start_tls wants a TLS context (tests/lua/tls_spec.lua has the rest)", function()
    local srv, port = serve(function(_, w) w:close() end)
    local r, w = aio.open_connection("127.0.0.1", port)
    local e = S.error_of(w.start_tls, w, {})
    assert.matches("aio.tls.context", tostring(e))
    w:close()
    srv:close()
  end)
end)

describe("the reader", function()
  it("reads up to n bytes, everything, or nil at EOF", function()
    local srv, port = sender({ "abc", "defgh", "ij" })
    local r, w = aio.open_connection("127.0.0.1", port)
    assert.are.equal("", r:read(0))
    assert.are.equal("ab", r:read(2))
    assert.are.equal("c", r:read(10))
    assert.are.equal("defghij", r:read())
    assert.is_nil(r:read())
    assert.is_nil(r:read(5))
    w:close()
    srv:close()
  end)

  it("readexactly waits for all, IncompleteReadError at early EOF", function()
    local srv, port = sender({ "12", "345", "678" })
    local r, w = aio.open_connection("127.0.0.1", port)
    assert.are.equal("1234", r:readexactly(4))
    local e = S.error_of(r.readexactly, r, 10)
    assert.are.equal("IncompleteReadError", aio.errtype(e))
    assert.are.equal("5678", e.partial)
    assert.are.equal(10, e.expected)
    w:close()
    srv:close()
  end)

  it("readuntil finds a separator split across packets", function()
    local srv, port = sender({ "a\r", "\n\r", "\nb", "c\r\n", "\r\ntail" })
    local r, w = aio.open_connection("127.0.0.1", port)
    assert.are.equal("a\r\n\r\n", r:readuntil("\r\n\r\n"))
    assert.are.equal("bc\r\n\r\n", r:readuntil("\r\n\r\n"))
    local e = S.error_of(r.readuntil, r, "\r\n")
    assert.are.equal("IncompleteReadError", aio.errtype(e))
    assert.are.equal("tail", e.partial)
    w:close()
    srv:close()
  end)

  it("readline keeps the newline, the last line may lack it; lines() strips it", function()
    local srv, port = sender({ "one\ntw", "o\n", "three" })
    local r, w = aio.open_connection("127.0.0.1", port)
    assert.are.equal("one\n", r:readline())
    assert.are.equal("two\n", r:readline())
    assert.are.equal("three", r:readline())
    assert.is_nil(r:readline())
    w:close()
    srv:close()
    local srv2, port2 = sender({ "a\nb\n", "c" })
    local r2, w2 = aio.open_connection("127.0.0.1", port2)
    local got = {}
    for l in r2:lines() do got[#got + 1] = l end
    assert.are.same({ "a", "b", "c" }, got)
    w2:close()
    srv2:close()
  end)

  it("raises LimitOverrunError past the limit and pauses reading", function()
    local hold = aio.Future()
    local srv, port = serve(function(_, w)
      w:write(string.rep("x", 100))
      w:drain()
      hold:await()
      w:close()
    end)
    local r, w = aio.open_connection("127.0.0.1", port, { limit = 16 })
    local e = S.error_of(r.readuntil, r, "\n")
    assert.are.equal("LimitOverrunError", aio.errtype(e))
    assert.is_true(e.consumed > 16)
    -- the data stays: it can be read again
    assert.are.equal(string.rep("x", 10), r:read(10))
    local e2 = S.error_of(r.readline, r)
    assert.are.equal("LimitOverrunError", aio.errtype(e2))
    hold:set_result(true)
    w:close()
    srv:close()
  end)

  it("stops reading from the socket while the buffer is over its limit", function()
    local hold = aio.Future()
    local srv, port = serve(function(_, w)
      local big = string.rep("y", 1024 * 1024)
      w:write(big)
      pcall(w.drain, w)
      hold:await()
      w:close()
    end)
    local r, w = aio.open_connection("127.0.0.1", port, { limit = 1024 })
    assert.are.equal("y", r:read(1))
    aio.sleep(0.05)
    local _, paused, buffered = w:transport_info()
    assert.is_true(paused)
    assert.is_true(buffered < 1024 * 1024)
    local total = 1
    while total < 1024 * 1024 do total = total + #r:read(65536) end
    assert.are.equal(1024 * 1024, total)
    hold:set_result(true)
    w:close()
    srv:close()
  end)

  it("keeps memory bounded against a peer that never sends a newline", function()
    local srv, port = serve(function(r, w)
      local e = select(2, pcall(r.readline, r))
      local _, _, buffered = w:transport_info()
      w:write(aio.errtype(e) .. " " .. tostring(buffered <= 4 * 4096 + 65536) .. "\n")
      w:close()
    end, { limit = 4096 })
    local r, w = aio.open_connection("127.0.0.1", port)
    local flood = aio.spawn(function()
      local chunk = string.rep("a", 65536)
      for _ = 1, 160 do  -- 10 MB, unless the server hangs up first
        if not pcall(function() w:write(chunk) w:drain() end) then return end
      end
    end)
    assert.are.equal("LimitOverrunError true\n", r:readline())
    flood:cancel()
    pcall(flood.await, flood)
    w:close()
    srv:close()
  end)

  it("lets only one task read at a time", function()
    local srv, port = serve(function(r) r:read() end)
    local r, w = aio.open_connection("127.0.0.1", port)
    local t = aio.spawn(function() return r:read() end)
    aio.sleep(0.01)
    assert.has_error(function() r:read() end)
    w:close()
    assert.is_nil(t:await())
    srv:close()
    srv:wait_closed()
  end)

  it("a second reader's error leaves the waiting read's separator and count alone", function()
    local go, go2 = aio.Future(), aio.Future()
    local srv, port = serve(function(r, w)
      go:await()
      w:write("a\nb\r\n\r\nabcdef")
      w:drain()
      go2:await()
      w:write("gh")
      w:drain()
      r:read()
      w:close()
    end)
    local r, w = aio.open_connection("127.0.0.1", port)
    local t = aio.spawn(function() return r:readuntil("\r\n\r\n") end)
    aio.sleep(0.01)
    assert.matches("another task", tostring(S.error_of(r.readuntil, r, "\n")))
    assert.matches("another task", tostring(S.error_of(r.readexactly, r, 1)))
    assert.matches("another task", tostring(S.error_of(r.readline, r)))
    go:set_result(true)
    assert.are.equal("a\nb\r\n\r\n", t:await())
    assert.are.equal("ab", r:read(2))
    assert.are.equal("cdef", r:readexactly(4))
    local t3 = aio.spawn(function() return r:readexactly(2) end)
    aio.sleep(0.01)
    assert.matches("another task", tostring(S.error_of(r.read, r, 100)))
    assert.matches("another task", tostring(S.error_of(r.readuntil, r, "h")))
    go2:set_result(true)
    assert.are.equal("gh", t3:await())
    w:close()
    srv:close()
    srv:wait_closed()
  end)

  it("a separator may be a number; it must not be empty", function()
    local srv, port = sender({ "ab0cd\n" })
    local r, w = aio.open_connection("127.0.0.1", port)
    assert.are.equal("ab0", r:readuntil(0))
    assert.has_error(function() r:readuntil("") end)
    assert.has_error(function() r:readuntil({}) end)
    assert.are.equal("cd\n", r:readuntil())
    w:close()
    srv:close()
    srv:wait_closed()
  end)

  -- the reader returns its last string again when the next chunk has the
  -- same bytes (stream.c, take): every result must still be the bytes read
  it("returns the bytes read when chunks repeat, change, or change length", function()
    local function head(c, n) return "GET /" .. string.rep(c, n) .. " HTTP/1.1\r\nHost: x\r\n\r\n" end
    local h1, h2, h3 = head("a", 30), head("b", 30), head("a", 31)
    local long, short = head("c", 600), head("d", 1)
    local seq = { h1, h1, h2, h2, h1, h3, h3, long, long, short, short, h1 }
    for _ = 1, 40 do seq[#seq + 1] = head("e", 30 + #seq % 3) end  -- misses in a row
    seq[#seq + 1] = h1
    seq[#seq + 1] = h1
    local srv, port = sender({ table.concat(seq) })
    local r, w = aio.open_connection("127.0.0.1", port)
    for i, want in ipairs(seq) do
      assert.are.equal(want, r:readuntil("\r\n\r\n"), "chunk " .. i)
    end
    assert.is_nil(r:read())
    w:close()
    srv:close()
    -- read(n) and readexactly share it
    local blk = string.rep("z", 49) .. "!"
    local srv2, port2 = sender({ blk .. blk .. blk:upper() .. blk })
    local r2, w2 = aio.open_connection("127.0.0.1", port2)
    assert.are.equal(blk, r2:readexactly(50))
    assert.are.equal(blk, r2:read(50))
    assert.are.equal(blk:upper(), r2:readexactly(50))
    assert.are.equal(blk, r2:read(50))
    w2:close()
    srv2:close()
    srv2:wait_closed()
  end)
end)

describe("the writer", function()
  it("moves 20 MB with drain, checksummed", function()
    local N, BLOCK = 320, 64 * 1024
    local blk = {}
    for i = 1, BLOCK do blk[i] = string.char((i * 7) % 256) end
    blk = table.concat(blk)
    local result = aio.Future()
    local srv, port = serve(function(r, w)
      local n, sum = 0, 0
      while true do
        local c = r:read(100000)
        if not c then break end
        n = n + #c
        sum = (sum + c:byte(1) + c:byte(-1)) % 65536
      end
      result:set_result(n)
      w:close()
    end)
    local r, w = aio.open_connection("127.0.0.1", port)
    for i = 1, N do
      w:write(blk)
      w:drain()
      local queued = w:transport_info()
      assert.is_true(queued <= 64 * 1024 + BLOCK)
    end
    w:write_eof()
    assert.is_true(w:can_write_eof())
    assert.are.equal(N * BLOCK, result:await())
    assert.is_nil(r:read())
    -- writing after write_eof is misuse (asyncio: RuntimeError), a plain error
    local e = S.error_of(w.write, w, "late")
    assert.are.equal("string", type(e))
    assert.matches("write: cannot write after write_eof%(%)", e)
    assert.matches("writelines: cannot write after write_eof", S.error_of(w.writelines, w, { "x" }))
    w:close()
    srv:close()
  end)

  it("drain holds a fast writer while the peer does not read", function()
    local go = aio.Future()
    local srv, port = serve(function(r, w)
      go:await()
      while r:read(65536) do end
      w:close()
    end)
    local r, w = aio.open_connection("127.0.0.1", port)
    local sent = 0
    local t = aio.spawn(function()
      while true do
        w:write(string.rep("z", 65536))
        w:drain()
        sent = sent + 65536
      end
    end)
    aio.sleep(0.2)
    -- held back: what the kernel's buffers take, not gigabytes; our own
    -- queue stays at the high-water mark plus one write
    assert.is_true(sent < 32 * 1024 * 1024)
    assert.is_true(w:transport_info() <= 2 * 65536)
    assert.is_false(t:done())
    t:cancel()
    pcall(t.await, t)
    go:set_result(true)
    w:close()
    srv:close()
    srv:wait_closed()
  end)

  it("writelines writes each string", function()
    local got = aio.Future()
    local srv, port = serve(function(r, w) got:set_result(r:read()) w:close() end)
    local r, w = aio.open_connection("127.0.0.1", port)
    w:writelines({ "a", "b", "c" })
    -- a bad item: a misuse error and nothing of the list sent (asyncio's
    -- TypeError comes before anything is written)
    assert.matches("writelines: item 2 is not a string", S.error_of(w.writelines, w, { "x", {}, "y" }))
    w:writelines({ "d", 1 })
    w:close()
    assert.are.equal("abcd1", got:await())
    srv:close()
  end)

  it("close flushes what is queued", function()
    local got = aio.Future()
    local srv, port = serve(function(r, w)
      aio.sleep(0.05)
      got:set_result(#(r:read() or ""))
      w:close()
    end)
    local r, w = aio.open_connection("127.0.0.1", port)
    w:write(string.rep("q", 3 * 1024 * 1024))
    w:close()
    w:wait_closed()
    assert.are.equal(3 * 1024 * 1024, got:await())
    srv:close()
  end)

  it("raises a plain error when writing after close", function()
    local srv, port = serve(function(_, w) w:close() end)
    local r, w = aio.open_connection("127.0.0.1", port)
    w:close()
    local e = S.error_of(w.write, w, "x")
    assert.are.equal("string", type(e))
    srv:close()
  end)
end)

describe("stream errors", function()
  it("refused: OSError ECONNREFUSED", function()
    local srv, port = serve(function() end)
    srv:close()
    srv:wait_closed()
    local e = S.error_of(aio.open_connection, "127.0.0.1", port)
    assert.are.equal("OSError", aio.errtype(e))
    assert.are.equal("ECONNREFUSED", e.code)
    assert.is_true(e.errno > 0)
  end)

  it("writing to a reset peer raises EPIPE or ECONNRESET, SIGPIPE does not kill", function()
    local srv, port = serve(function(_, w) w:close() end)  -- closes at once
    local r, w = aio.open_connection("127.0.0.1", port)
    assert.is_nil(r:read())
    local e
    for _ = 1, 100 do
      local ok, err = pcall(function()
        w:write(string.rep("p", 65536))
        w:drain()
      end)
      if not ok then e = err break end
      aio.sleep(0.001)
    end
    assert.are.equal("OSError", aio.errtype(e))
    assert.is_truthy(e.code == "EPIPE" or e.code == "ECONNRESET")
    assert.is_true(w:is_closing())  -- the connection is lost, as in asyncio
    w:close()
    srv:close()
  end)

  it("a reset while reading raises OSError ECONNRESET (python3 peer)", function()
    local srv, port = serve(function(r, w)
      w:write("ready\n")
      w:drain()
      r:read()
    end)
    local gotten = aio.Future()
    srv:close()
    -- python3 connects with SO_LINGER 0 and closes: an RST
    local srv2, port2 = serve(function(r, w)
      local ok, e = pcall(r.read, r)
      gotten:set_result(ok, e, w:is_closing())
      w:close()
    end)
    local wait = background(string.format([[python3 -c '
import socket, struct, time
s = socket.create_connection(("127.0.0.1", %d))
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
time.sleep(0.1)
s.close()
']], port2))
    local ok, e, closing = gotten:await()
    wait()
    assert.is_false(ok)
    assert.are.equal("OSError", aio.errtype(e))
    assert.are.equal("ECONNRESET", e.code)
    assert.is_true(closing)
    srv2:close()
  end)
end)

describe("strings and numbers that cannot reach the system", function()
  -- C would cut a string at a zero byte ("127.0.0.1\0evil" is 127.0.0.1):
  -- refused as Python refuses an embedded null byte; ports out of range
  -- and overlong Unix paths are argument errors at the caller's line
  local function err(f)
    local ok, e = pcall(f)
    assert.is_false(ok)
    return e
  end

  it("are plain argument errors naming the function, at the caller's line", function()
    local here = "stream_spec.lua:%d+: "
    assert.matches(here .. "bad argument #1 to 'open_connection' %(contains a zero byte%)",
      err(function() aio.open_connection("127.0.0.1\0evil", 80) end))
    assert.matches(here .. "bad argument #2 to 'open_connection' %(contains a zero byte%)",
      err(function() aio.open_connection("127.0.0.1", "80\0x") end))
    assert.matches(here .. "bad argument #2 to 'open_connection' %(port out of range: 70000%)",
      err(function() aio.open_connection("127.0.0.1", 70000) end))
    assert.matches(here .. "bad argument #2 to 'open_connection' %(port out of range: %-1%)",
      err(function() aio.open_connection("127.0.0.1", -1) end))
    assert.matches(here .. "open_connection: opts.local_port must be",
      err(function() aio.open_connection("127.0.0.1", 1, { local_port = -1 }) end))
    assert.matches(here .. "open_connection: opts.local_host contains a zero byte",
      err(function() aio.open_connection("127.0.0.1", 1, { local_host = "a\0b" }) end))
    assert.matches(here .. "open_connection: opts.server_hostname contains a zero byte",
      err(function() aio.open_connection("127.0.0.1", 1, { tls = true, server_hostname = "localhost\0.evil" }) end))
    assert.matches(here .. "bad argument #1 to 'open_unix_connection' %(contains a zero byte%)",
      err(function() aio.open_unix_connection("/tmp/x\0y") end))
    assert.matches(here .. "bad argument #1 to 'open_unix_connection' %(path too long: 200 bytes",
      err(function() aio.open_unix_connection(string.rep("x", 200)) end))
    assert.matches(here .. "bad argument #2 to 'start_unix_server' %(contains a zero byte%)",
      err(function() aio.start_unix_server(print, "/tmp/v.sock\0junk") end))
    assert.matches(here .. "bad argument #2 to 'start_server' %(contains a zero byte%)",
      err(function() aio.start_server(print, "127.0.0.1\0x", 0) end))
    assert.matches(here .. "bad argument #3 to 'start_server' %(port out of range: 70000%)",
      err(function() aio.start_server(print, "127.0.0.1", 70000) end))
    assert.matches(here .. "start_server: opts.backlog must be an integer",
      err(function() aio.start_server(print, "127.0.0.1", 0, { backlog = 0 / 0 }) end))
    assert.matches(here .. "bad argument #1 to 'getaddrinfo' %(contains a zero byte%)",
      err(function() aio.getaddrinfo("local\0host", 80) end))
    assert.matches("aio.tls.context: opts.ca_file contains a zero byte",
      err(function() aio.tls.context({ ca_file = "/etc/x\0y" }) end))
  end)

  it("readexactly of a huge count says the count in its message", function()
    local srv, port = serve(function(_, w) w:write("abc") w:close() end)
    local r, w = aio.open_connection("127.0.0.1", port)
    local e = S.error_of(r.readexactly, r, math.maxinteger)
    assert.are.equal("IncompleteReadError", aio.errtype(e))
    assert.are.equal("3 bytes read on a total of 9223372036854775807 expected bytes", e.message)
    assert.are.equal(math.maxinteger, e.expected)
    w:close()
    srv:close()
  end)
end)

describe("a handler's lifecycle", function()
  -- its <close> variables got the server's internal {err=, tb=} wrapper
  it("a handler's <close> variables get its error unchanged, or the CancelledError", function()
    local got = {}
    local srv, port = serve(function(r)
      local c <close> = setmetatable({}, { __close = function(_, err)
        got[#got + 1] = aio.errtype(err) or err
      end })
      if r:readline() == "boom\n" then error("handler boom", 0) end
      aio.sleep(10)
    end)
    local r, w = aio.open_connection("127.0.0.1", port)
    w:write("boom\n")
    assert.is_nil(r:read())
    assert.are.same({ "handler boom" }, got)
    local r2, w2 = aio.open_connection("127.0.0.1", port)
    w2:write("wait\n")
    assert.is_true(S.wait_until(function() return #aio.all_tasks() >= 3 end))
    aio.sleep(0.02)
    srv:close()
    for _, t in ipairs(aio.all_tasks()) do
      if t ~= aio.current_task() then t:cancel() end
    end
    assert.is_nil(r2:read())
    assert.are.same({ "handler boom", "CancelledError" }, got)
    w:close()
    w2:close()
  end)

  -- at the program's end the accept loop closed every connection, those of
  -- running handlers too, before their cleanup (which may write) ran
  it("at the program's end a handler's cleanup can still write to its client", function()
    if WIN then return end  -- python3 and the shell's quoting
    local out = tmpname("endwrite.out")
    local got, rc = S.script(os.getenv("AIOLUA_BIN") or "./aiolua", [[
      local aio = require "aio"
      local out = ...
      local srv = aio.start_server(function(r, w)
        w:write("got " .. r:readline())
        w:drain()
        local ok, e = pcall(r.readline, r)  -- cancelled at the program's end
        w:write("cleanup " .. tostring(aio.errtype(e)) .. "\n")
        w:close()
        error(e, 0)
      end, "127.0.0.1", 0)
      local _, port = srv:getsockname()
      -- the client is another process: it reads until EOF
      aio.exec({ "python3", "-c", [=[
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"hello\n")
data = b""
while True:
    d = s.recv(100)
    if not d: break
    data += d
open(sys.argv[2], "wb").write(data)
]=], tostring(port), out })
      aio.sleep(0.5)  -- the handler waits in its second readline
    ]], out)
    assert.are.equal(0, rc, got)
    local data
    assert.is_true(S.wait_until(function()
      local o = io.open(out)
      if o then data = o:read("a") o:close() end
      return data ~= nil and data ~= ""
    end, 5))
    os.remove(out)
    assert.are.equal("got hello\ncleanup CancelledError\n", data)
  end)

  -- a stream kept past its aio.run looked open, and a read in a later
  -- aio.run waited forever: its loop is gone, so it is closed
  it("a stream whose aio.run has returned is closed (stock lua5.4)", function()
    if WIN then return end
    local got, rc = S.script("timeout 10 " .. S.STOCK_LUA, [[
      local aio = require "aio"
      local r, w
      aio.run(function()
        local srv = aio.start_server(function(r, w) w:write("hello\nmore") r:read() w:close() end,
          "127.0.0.1", 0)
        r, w = aio.open_connection("127.0.0.1", select(2, srv:getsockname()))
        assert(r:readline() == "hello\n")
        aio.sleep(0.05)
      end)
      print(w:is_closing(), r:at_eof())
      print(aio.run(function() return r:read(10), r:read(10) end))
      print(aio.run(function() return pcall(w.write, w, "x") end))
      aio.run(function() w:drain() w:wait_closed() end)
      print("done")
    ]])
    assert.are.equal(0, rc, got)
    assert.are.equal("true\tfalse\nmore\tnil\nfalse\twrite: the writer is closed\ndone\n", got)
  end)
end)

-- collected untouched after its aio.run, it warned "an unclosed stream was
-- garbage-collected": the loop's close had closed it
describe("a stream its aio.run left behind", function()
  it("is collected without a warning (stock lua5.4)", function()
    if WIN then return end
    local got, rc = S.script("timeout 10 " .. S.STOCK_LUA, [[
      local aio = require "aio"
      local keep = {}
      aio.run(function()
        local srv = aio.start_server(function(r, w) keep.sr, keep.sw = r, w end, "127.0.0.1", 0)
        keep.r, keep.w = aio.open_connection("127.0.0.1", select(2, srv:getsockname()))
        aio.sleep(0.05)
        srv:close()
      end)
      keep = nil
      collectgarbage() collectgarbage()
      print("done")
    ]])
    assert.are.equal(0, rc, got)
    assert.are.equal("done\n", got)
  end)
end)

describe("a lost connection (as asyncio)", function()
  -- python3 connects to port, waits a little and closes with an RST
  local function resetter(port)
    return background(string.format([[python3 -c '
import socket, struct, time
s = socket.create_connection(("127.0.0.1", %d))
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
time.sleep(0.1)
s.close()
']], port))
  end

  it("wait_closed raises ECONNRESET when the peer resets, nobody reading (python3 peer)", function()
    local before = settled_fds()
    local got = aio.Future()
    local srv, port = serve(function(_, w)
      -- no read, no close: asyncio's transport hears the reset all the same
      local ok, e = pcall(w.wait_closed, w)
      local closing = w:is_closing()
      w:close()
      local ok2, e2 = pcall(w.wait_closed, w)  -- after close(): the same error
      got:set_result(ok, e, closing, ok2, e2)
    end)
    local wait = resetter(port)
    local ok, e, closing, ok2, e2 = aio.wait_for(got, 5)
    wait()
    assert.is_false(ok)
    assert.are.equal("OSError", aio.errtype(e))
    assert.are.equal("ECONNRESET", e.code)
    assert.matches("wait_closed", e.message)
    assert.is_true(closing)
    assert.is_false(ok2)
    assert.are.equal("ECONNRESET", e2.code)
    srv:close()
    srv:wait_closed()
    assert.are.equal(before, settled_fds())
  end)

  it("drain raises the reset a read found, as asyncio's (python3 peer)", function()
    local got = aio.Future()
    local srv, port = serve(function(r, w)
      local ok_read, e_read = pcall(r.read, r)
      local ok, e = pcall(w.drain, w)
      w:close()
      got:set_result(ok_read, e_read, ok, e)
    end)
    local wait = resetter(port)
    local ok_read, e_read, ok, e = aio.wait_for(got, 5)
    wait()
    assert.is_false(ok_read)
    assert.are.equal("ECONNRESET", e_read.code)
    assert.is_false(ok)
    assert.are.equal("OSError", aio.errtype(e))
    assert.are.equal("ECONNRESET", e.code)
    assert.matches("drain", e.message)
    srv:close()
  end)

  it("wait_closed raises EPIPE after a write failed, before and after close", function()
    local srv, port = serve(function(_, w) w:close() end)
    local r, w = aio.open_connection("127.0.0.1", port)
    aio.sleep(0.05)
    local failed
    for _ = 1, 200 do
      local ok, e = pcall(function() w:write(string.rep("x", 10000)) w:drain() end)
      if not ok then failed = e break end
      aio.sleep(0.005)
    end
    assert.is_not_nil(failed)
    local e = S.error_of(aio.wait_for, function() return w:wait_closed() end, 2)
    assert.are.equal("OSError", aio.errtype(e))
    assert.is_truthy(e.code == "EPIPE" or e.code == "ECONNRESET", e.code)
    w:close()
    local e2 = S.error_of(w.wait_closed, w)
    assert.are.equal(e.code, e2.code)
    srv:close()
  end)

  it("a client's peername survives a reset that came before anyone asked", function()
    -- the server closes with our line unread: an RST to the client
    local srv, port = serve(function(_, w) aio.sleep(0.05) w:close() end)
    local r, w = aio.open_connection("127.0.0.1", port)
    w:write("unread by the server\n")
    aio.sleep(0.2)
    -- Linux resets; Windows (wine) may end with a plain EOF instead
    local ok, e = pcall(r.read, r)
    if not ok then assert.are.equal("ECONNRESET", e.code) end
    assert.are.same({ "127.0.0.1", port }, { w:get_extra_info("peername") })
    w:close()
    assert.are.same({ "127.0.0.1", port }, { w:get_extra_info("peername") })
    srv:close()
  end)

  it("a clean close of the peer does not end wait_closed; close() does", function()
    local srv, port = serve(function(_, w) w:close() end)
    local r, w = aio.open_connection("127.0.0.1", port)
    local t = aio.spawn(w.wait_closed, w)
    aio.sleep(0.05)
    assert.is_nil(r:read())   -- EOF: half-closed, as asyncio keeps it
    assert.is_false(t:done())
    w:close()
    aio.wait_for(t, 2)
    assert.is_true(t:done())
    srv:close()
  end)

  it("cancels a wait_closed; the writer is usable afterwards", function()
    local srv, port = serve(function(r, w) r:read() w:close() end)
    local r, w = aio.open_connection("127.0.0.1", port)
    local t = aio.spawn(w.wait_closed, w)
    aio.sleep(0.01)
    t:cancel("stop")
    local ok, e = pcall(t.await, t)
    assert.is_false(ok)
    assert.are.equal("CancelledError", aio.errtype(e))
    w:write("still here")
    w:close()
    w:wait_closed()
    assert.is_true(w:is_closing())
    srv:close()
  end)
end)

describe("cancellation and close while waiting", function()
  local function fds_stable(fn)
    local before = settled_fds()
    fn()
    assert.are.equal(before, settled_fds())
  end

  it("cancels a read, a readuntil and a readexactly", function()
    local srv, port = serve(function(r) r:read() end)
    local r, w = aio.open_connection("127.0.0.1", port)
    for _, f in ipairs({
      function() return r:read(10) end,
      function() return r:readuntil("\n") end,
      function() return r:readexactly(5) end,
    }) do
      local t = aio.spawn(f)
      aio.sleep(0.01)
      t:cancel()
      local ok, e = pcall(t.await, t)
      assert.is_false(ok)
      assert.are.equal("CancelledError", aio.errtype(e))
    end
    -- the reader is usable again
    w:write("x")
    w:close()
    srv:close()
    srv:wait_closed()
  end)

  it("cancels a drain", function()
    local go = aio.Future()
    local srv, port = serve(function(r, w) go:await() w:close() end)
    local r, w = aio.open_connection("127.0.0.1", port)
    local t = aio.spawn(function()
      while true do
        w:write(string.rep("d", 65536))
        w:drain()
      end
    end)
    aio.sleep(0.1)
    t:cancel()
    local ok, e = pcall(t.await, t)
    assert.are.equal("CancelledError", aio.errtype(e))
    go:set_result(true)
    w:close()
    srv:close()
  end)

  it("cancels a connect and closes its socket", function()
    fds_stable(function()
      local srv, port = serve(function(_, w) w:close() end)
      for i = 1, 60 do
        local t = aio.spawn(aio.open_connection, "127.0.0.1", port)
        -- parked in connect, or connected and not yet resumed, or done
        for _ = 1, i % 4 do aio.sleep(0) end
        t:cancel()
        local ok, e, w = pcall(t.await, t)
        if ok then w:close() else assert.are.equal("CancelledError", aio.errtype(e)) end
      end
      srv:close()
      srv:wait_closed()
    end)
  end)

  it("close of the writer wakes a reader with EOF", function()
    local srv, port = serve(function(r) r:read() end)
    local r, w = aio.open_connection("127.0.0.1", port)
    local t = aio.spawn(function() return r:readline() end)
    aio.sleep(0.01)
    w:close()
    assert.is_nil(t:await())
    srv:close()
    srv:wait_closed()
  end)

  it("closing a server wakes its accept; wait_closed waits for handlers", function()
    local started, finished = false, false
    local srv, port = serve(function(r, w)
      started = true
      aio.sleep(0.05)
      finished = true
      w:close()
    end)
    local r, w = aio.open_connection("127.0.0.1", port)
    assert.is_true(S.wait_until(function() return started end))
    srv:close()
    srv:wait_closed()
    assert.is_true(finished)
    w:close()
  end)

  it("leaks no fd over 10,000 connect/close cycles, errors included", function()
    local before = settled_fds()
    local srv, port = serve(function(r, w) w:close() end, { backlog = 1024 })
    local dead = serve(function() end)
    local _, dead_port = dead:getsockname()
    dead:close()
    dead:wait_closed()
    for i = 1, 10000 do
      if i % 4 == 0 then
        local ok, e = pcall(aio.open_connection, "127.0.0.1", dead_port)
        assert.is_false(ok)
        assert.are.equal("ECONNREFUSED", e.code)
      else
        local r, w = aio.open_connection("127.0.0.1", port)
        if i % 4 == 1 then r:read() end
        w:close()
      end
      if i % 1000 == 0 then collectgarbage() end
    end
    aio.sleep(0.05)
    srv:close()
    srv:wait_closed()
    assert.are.equal(before, settled_fds())
  end)

  it("closes and warns about a stream garbage-collected unclosed", function()
    local srv, port = serve(function(r, w) r:read() w:close() end)
    local before = settled_fds()
    do
      local r, w = aio.open_connection("127.0.0.1", port)
      r, w = nil, nil
    end
    assert.are.equal(before, settled_fds())
    srv:close()
  end)
end)

describe("Unix sockets", function()
  it("echoes over a path; getsockname gives the path", function()
    local path = tmpname("sock")
    local srv = aio.start_unix_server(function(r, w)
      w:write("u:" .. r:readline())
      w:close()
    end, path)
    assert.are.equal(path, srv:getsockname())
    local r, w = aio.open_unix_connection(path)
    w:write("hi\n")
    assert.are.equal("u:hi\n", r:readline())
    assert.are.equal(path, w:get_extra_info("peername"))
    w:close()
    srv:close()
    assert.is_nil(io.open(path))  -- removed
  end)

  it("raises OSError for a path nobody listens on", function()
    local e = S.error_of(aio.open_unix_connection, "/tmp/aiolua-no-such-socket")
    assert.are.equal("OSError", aio.errtype(e))
    assert.are.equal("ENOENT", e.code)
  end)

  it("Server methods called with '.' are misuse errors naming the method", function()
    local srv = aio.start_server(function() end, "127.0.0.1", 0)
    for _, m in ipairs({ "getsockname", "is_serving", "close", "wait_closed", "serve_forever" }) do
      assert.matches("bad argument #1 to '" .. m .. "' %(aio.Server expected, got no value%)", S.error_of(srv[m]))
    end
    srv:close()
  end)

  -- the Writer methods written in Lua named a line of stream.lua
  it("Writer methods written in Lua blame misuse on the caller's line", function()
    local srv = aio.start_server(function(r, w) r:read() w:close() end, "127.0.0.1", 0)
    local r, w = aio.open_connection("127.0.0.1", select(2, srv:getsockname()))
    assert.matches("^[^:]*stream_spec.lua:%d+: bad argument #1 to 'wait_closed' %(aio.StreamWriter expected, got no value%)",
      S.error_of(function() w.wait_closed() end))
    assert.matches("^[^:]*stream_spec.lua:%d+: bad argument #1 to 'start_tls' %(aio.StreamWriter expected, got aio.StreamReader%)",
      S.error_of(function() w.start_tls(r) end))
    w:close()
    assert.matches("^[^:]*stream_spec.lua:%d+: start_tls: the stream is closed$",
      S.error_of(function() w:start_tls(true) end))
    w:wait_closed()
    srv:close()
  end)

  -- close() removed whatever was at the path: the socket of a server that
  -- had taken the path since (unreachable from then on), a user's file
  it("close() removes only its own socket file, as Python 3.13's", function()
    if WIN then return end
    local path = tmpname("own.sock")
    local function h(_, w) w:write("hi\n") w:close() end
    local old = aio.start_unix_server(h, path)
    local new = aio.start_unix_server(h, path)  -- takes the path over
    old:close()
    old:wait_closed()
    local r, w = aio.open_unix_connection(path)
    assert.are.equal("hi\n", r:readline())
    w:close()
    new:close()
    assert.is_nil(io.open(path))  -- its own: removed
    local srv = aio.start_unix_server(h, path)
    os.remove(path)
    local f = assert(io.open(path, "w"))
    f:write("keep")
    f:close()
    srv:close()
    f = assert(io.open(path))
    assert.are.equal("keep", f:read("a"))
    f:close()
    os.remove(path)
    assert.are.equal("getsockname: the server is closed", S.error_of(srv.getsockname, srv))
  end)
end)

describe("real peers", function()
  it("curl talks HTTP/1.1 keep-alive to an aiolua server", function()
    local srv, port = serve(function(r, w)
      while true do
        local ok, head = pcall(r.readuntil, r, "\r\n\r\n")
        if not ok then  -- curl closed: IncompleteReadError with partial ""
          assert(aio.errtype(head) == "IncompleteReadError" and head.partial == "")
          w:close()
          return
        end
        local path = head:match("^GET (%S+)")
        local body = "path " .. path .. "\n"
        w:write("HTTP/1.1 200 OK\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body)
        w:drain()
      end
    end)
    local base = "http://127.0.0.1:" .. port
    local wait = background(string.format("curl -sS --max-time 10 %s/a %s/b", base, base))
    local out, rc = wait()
    assert.are.equal(0, rc)
    assert.are.equal("path /a\npath /b\n", out)
    srv:close()
  end)

  it("fetches from python3 -m http.server", function()
    local dir = tmpname("www")
    os.execute("mkdir -p " .. dir .. " && printf 'served by python' > " .. dir .. "/f.txt")
    -- a free port: bind one and let it go
    local s0 = serve(function() end)
    local _, port = s0:getsockname()
    s0:close()
    s0:wait_closed()
    local pidfile = dir .. ".pid"
    local wait = background(string.format(
      "cd %s && sh -c 'echo $$ >%s; exec timeout 20 python3 -m http.server %d --bind 127.0.0.1'",
      dir, pidfile, port))
    local r, w
    assert.is_true(S.wait_until(function()
      local ok, a, b = pcall(aio.open_connection, "127.0.0.1", port)
      if ok then r, w = a, b end
      return ok
    end, 5))
    w:write("GET /f.txt HTTP/1.0\r\nHost: x\r\n\r\n")
    local status = r:readline()
    assert.matches("^HTTP/1%.%d 200", status)
    local head = r:readuntil("\r\n\r\n")
    local len = tonumber(head:lower():match("content%-length: (%d+)"))
    assert.are.equal("served by python", r:readexactly(len))
    w:close()
    os.execute("kill -INT $(cat " .. pidfile .. ") >/dev/null 2>&1")
    wait()
    os.execute("rm -rf " .. dir .. " " .. pidfile)
  end)

  it("serves a python3 socket client", function()
    local srv, port = serve(function(r, w)
      for line in r:lines() do w:write(line:upper() .. "\n") end
      w:close()
    end)
    local wait = background(string.format([[python3 -c '
import socket
s = socket.create_connection(("127.0.0.1", %d))
s.sendall(b"alpha\nbeta\n")
s.shutdown(socket.SHUT_WR)
data = b""
while True:
    c = s.recv(100)
    if not c: break
    data += c
print(data.decode(), end="")
']], port))
    local out, rc = wait()
    assert.are.equal(0, rc)
    assert.are.equal("ALPHA\nBETA\n", out)
    srv:close()
  end)
end)

-- ---- the audit against asyncio (src/bindings/stream.c) -------------------


-- a self-signed certificate made with openssl, once (POSIX only)
local certs
local function tls_contexts()
  if not certs then
    local dir = tmpname("streamtls")
    local out, rc = S.sh(string.format("mkdir -p %s && openssl req -x509 -newkey ec"
      .. " -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout %s/k.pem -out %s/c.pem"
      .. " -days 2 -subj /CN=localhost 2>&1", dir, dir, dir))
    assert(rc == 0, out)
    certs = {
      server = aio.tls.context({ server = true, cert_file = dir .. "/c.pem", key_file = dir .. "/k.pem" }),
      client = aio.tls.context({ verify = false }),
      dir = dir,
    }
  end
  return certs.server, certs.client
end

-- collect until every key of the weak table `gone` has been collected
local function collected(gone)
  return S.wait_until(function()
    collectgarbage() collectgarbage()
    return next(gone) == nil
  end, 5)
end

-- read until EOF; the byte count
local function drain_all(r)
  local n = 0
  while true do
    local c = r:read(65536)
    if not c then return n end
    n = n + #c
  end
end

describe("close() of a writer whose objects are then collected", function()
  -- Issue 1: a writer close()d with data queued whose Reader and Writer
  -- were then garbage-collected lost the queue: the Reader's finalizer
  -- closed the fd at once (a client got 3.9 MB of 20 MB).  asyncio's loop
  -- keeps the transport until it has flushed; so does ours now.
  it("sends all it queued, then closes the fd", function()
    local before = settled_fds()
    local N = 20 * 1024 * 1024
    local gone = setmetatable({}, { __mode = "k" })
    local closed = aio.Future()
    local srv, port = serve(function(r, w)
      gone[r] = true
      w:write(string.rep("x", N))
      w:close()
      closed:set_result(true)
    end)
    local r, w = aio.open_connection("127.0.0.1", port)
    closed:await()
    assert.is_true(collected(gone))  -- the handler's Reader is gone
    assert.are.equal(N, drain_all(r))
    w:close()
    srv:close()
    srv:wait_closed()
    r, w = nil, nil
    assert.are.equal(before, settled_fds())
  end)

  it("sends all it queued over TLS, close_notify last", function()
    if WIN then return end
    local sctx, cctx = tls_contexts()
    local N = 8 * 1024 * 1024
    local gone = setmetatable({}, { __mode = "k" })
    local closed = aio.Future()
    local srv, port = serve(function(r, w)
      gone[r] = true
      w:write(string.rep("t", N))
      w:close()
      closed:set_result(true)
    end, { tls = sctx })
    local r, w = aio.open_connection("127.0.0.1", port, { tls = cctx })
    closed:await()
    assert.is_true(collected(gone))
    assert.are.equal(N, drain_all(r))  -- no "closed in the middle of a TLS record"
    w:close()
    srv:close()
  end)

  it("sends all it queued to a child's stdin pipe", function()
    if WIN then return end
    local N = 20 * 1024 * 1024
    local p = aio.exec({ "sh", "-c", "sleep 0.2; wc -c" }, { stdin = "pipe", stdout = "pipe" })
    p.stdin:write(string.rep("p", N))
    local gone = setmetatable({ [p.stdin:reader()] = true }, { __mode = "k" })
    p.stdin:close()
    p.stdin = nil
    assert.is_true(collected(gone))
    assert.are.equal(N, tonumber(p.stdout:read()))
    assert.are.equal(0, p:wait())
  end)

  it("a flush that fails (the peer resets) closes the fd", function()
    local before = settled_fds()
    local gone = setmetatable({}, { __mode = "k" })
    local started = aio.Future()
    local srv, port = serve(function(r, w)
      gone[r] = true
      w:write(string.rep("f", 20 * 1024 * 1024))
      w:close()
      started:set_result(true)
    end)
    local r, w = aio.open_connection("127.0.0.1", port)
    started:await()
    assert.is_true(collected(gone))
    assert.are.equal("ff", r:readexactly(2))
    w:close()  -- unread data: an RST, the server's flush fails
    srv:close()
    r, w = nil, nil
    assert.is_true(S.wait_until(function() return settled_fds() == before end, 5))
  end)

  it("the loop's close closes a flush still going on", function()
    if WIN then return end
    local f = tmpname("flush.lua")
    local out = assert(io.open(f, "w"))
    out:write([[
      local aio = require "aio"
      local stat = io.open("/proc/self/stat")
      local pid = stat:read("n")
      stat:close()
      -- ls may list the write end of popen's own pipe before the parent
      -- has closed it (a race under load): the least of three counts
      local function fds()
        local least
        for _ = 1, 3 do
          local n = 0
          local ls = io.popen("ls /proc/" .. pid .. "/fd")
          for _ in ls:lines() do n = n + 1 end
          ls:close()
          if least == nil or n < least then least = n end
        end
        return least
      end
      -- in aiolua the script is the main task: its loop closes at exit
      local function run(f) if aio.current_task() then f() else aio.run(f) end end
      run(function() aio.sleep(0) end)
      local before = fds()
      local cr, cw
      run(function()
        local base = fds()  -- the loop's own fds included
        local gone = setmetatable({}, { __mode = "k" })
        local closed = aio.Future()
        local srv = aio.start_server(function(r, w)
          gone[r] = true
          -- more than the socket buffers hold (tcp_rmem may let the
          -- reader's grow to 32 MiB): the flush cannot end by itself
          w:write(string.rep("x", 64 * 1024 * 1024))
          w:close()
          closed:set_result(true)
        end, "127.0.0.1", 0)
        local _, port = srv:getsockname()
        cr, cw = aio.open_connection("127.0.0.1", port)  -- never reads
        closed:await()
        for _ = 1, 100 do
          collectgarbage() collectgarbage()
          if next(gone) == nil then break end
          aio.sleep(0.01)
        end
        srv:close()
        srv:wait_closed()
        -- the client's socket, and the server's, flushing (a loaded machine
        -- may take a while to close the rest: up to 5 s)
        local n = fds() - base
        for _ = 1, 100 do
          if n <= 2 then break end
          aio.sleep(0.05)
          n = fds() - base
        end
        print("flushing", next(gone) == nil, n)
      end)
      if not aio.current_task() then
        print("after", fds() - before)
        cw:close()
      end
    ]])
    out:close()
    local got, rc = S.sh("env -u LUA_PATH LUA_CPATH='build/?.so;;' lua5.4 " .. f .. " 2>&1")
    assert.are.equal(0, rc, got)
    assert.are.equal("flushing\ttrue\t2\nafter\t0\n", got)
    -- the same in the program: no leak at exit (under AddressSanitizer)
    local bin = os.getenv("AIOLUA_BIN") or "./aiolua"
    got, rc = S.sh(bin .. " " .. f .. " 2>&1")
    assert.are.equal(0, rc, got)
    assert.matches("^flushing\ttrue\t2\n", got)
    assert.is_nil(got:find("LeakSanitizer", 1, true), got)
    os.remove(f)
  end)

  it("a stream closed by a finalizer that runs after its own leaks nothing", function()
    -- at exit lua_close runs finalizers in reverse order of creation: an
    -- object made before the streams is finalized after them, and its
    -- close() kept the accepted peer's name in memory nobody freed
    if WIN then return end
    local got, rc = S.script(os.getenv("AIOLUA_BIN") or "./aiolua", [[
      local aio = require "aio"
      local late = setmetatable({}, { __gc = function(self)
        self.w:close()
        self.cw:close()
        print("late", self.w:is_closing(), self.w:get_extra_info("peername"))
      end })
      local got = aio.Future()
      local srv = aio.start_server(function(r, w)
        got:set_result(w)
        aio.sleep(10)
      end, "127.0.0.1", 0)
      local _, port = srv:getsockname()
      local _, cw = aio.open_connection("127.0.0.1", port)
      late.w = got:await()
      late.cw = cw
      os.exit(0, true)
    ]])
    assert.are.equal(0, rc, got)
    assert.matches("late\ttrue\tnil\n", got)
    assert.is_nil(got:find("LeakSanitizer", 1, true), got)
  end)
end)

describe("at_eof() and is_closing() without a read", function()
  -- Issue 2: at_eof() noticed the end only after a read ran into it: a
  -- `while not r:at_eof() do r:readline() end` over "a\nb\n" and the
  -- peer's close went round three times (the last readline nil), and a
  -- stream never read said false for ever.  asyncio's is true once the
  -- EOF has arrived and the buffer is empty: at_eof() now reads what
  -- has arrived, without waiting, when it does not know.
  local function count_lines(r)
    local n, got = 0, {}
    while not r:at_eof() do
      n = n + 1
      got[n] = r:readline()
      assert(n < 10)
    end
    return n, got
  end

  it("while not at_eof() readline() reads each line once, then stops", function()
    local srv, port = serve(function(_, w) w:write("a\nb\n") w:close() end)
    local r, w = aio.open_connection("127.0.0.1", port)
    aio.sleep(0.05)
    local n, got = count_lines(r)
    assert.are.equal(2, n)
    assert.are.same({ "a\n", "b\n" }, got)
    assert.is_nil(r:read())
    w:close()
    srv:close()
  end)

  it("a stream never read turns at_eof once the peer has closed", function()
    local hold = aio.Future()
    local srv, port = serve(function(_, w) hold:await() w:close() end)
    local r, w = aio.open_connection("127.0.0.1", port)
    aio.sleep(0.02)
    assert.is_false(r:at_eof())  -- the peer is still there
    hold:set_result(true)
    assert.is_true(S.wait_until(function() return r:at_eof() end, 2))
    assert.is_nil(r:read())
    w:close()
    srv:close()
  end)

  it("data that arrived unread keeps at_eof false until it is read", function()
    local srv, port = serve(function(_, w) w:write("xyz") w:close() end)
    local r, w = aio.open_connection("127.0.0.1", port)
    aio.sleep(0.05)
    assert.is_false(r:at_eof())
    assert.is_false(r:at_eof())  -- asking twice changes nothing
    assert.are.equal("xyz", r:read(10))
    assert.is_true(r:at_eof())
    w:close()
    srv:close()
  end)

  it("a reset turns at_eof, and the read raises ECONNRESET", function()
    local hold = aio.Future()
    local r1
    local srv, port = serve(function(r, w)
      r1 = r
      w:write(string.rep("x", 256 * 1024))
      hold:await()
      w:close()
    end)
    -- a close reads in what came up to 2 * limit, as asyncio's transport
    -- has: more than that unread and the close sends a reset
    local r, w = aio.open_connection("127.0.0.1", port, { limit = 1024 })
    assert.is_true(S.wait_until(function() return r1 ~= nil end))
    aio.sleep(0.02)
    w:close()  -- 254 KiB unread: the close sends a reset
    assert.is_true(S.wait_until(function() return r1:at_eof() end, 2))
    if not WIN then  -- wine reports the end of the stream here
      assert.are.equal("ECONNRESET", S.error_of(r1.read, r1).code)
    end
    hold:set_result(true)
    srv:close()
  end)

  it("over TLS: the peer's close_notify is seen without a read", function()
    if WIN then return end
    local sctx, cctx = tls_contexts()
    local srv, port = serve(function(_, w) w:write("a\nb\n") w:close() end, { tls = sctx })
    local r, w = aio.open_connection("127.0.0.1", port, { tls = cctx })
    aio.sleep(0.05)
    local n, got = count_lines(r)
    assert.are.equal(2, n)
    assert.are.same({ "a\n", "b\n" }, got)
    w:close()
    srv:close()
    local hold = aio.Future()
    local srv2, port2 = serve(function(_, w2) hold:await() w2:close() end, { tls = sctx })
    local r2, w2 = aio.open_connection("127.0.0.1", port2, { tls = cctx })
    aio.sleep(0.02)
    assert.is_false(r2:at_eof())
    hold:set_result(true)
    assert.is_true(S.wait_until(function() return r2:at_eof() end, 2))
    w2:close()
    srv2:close()
  end)

  it("a child's stdout pipe", function()
    if WIN then return end
    local p = aio.exec({ "printf", "a\\nb\\n" }, { stdout = "pipe" })
    assert.are.equal(0, p:wait())
    aio.sleep(0.02)
    local n = count_lines(p.stdout)
    assert.are.equal(2, n)
  end)

  -- is_closing() stayed false after the peer reset the connection until
  -- an I/O call noticed; asyncio's transport notices as it arrives (it
  -- is always reading).  A stream the loop is not reading now asks the
  -- socket.
  it("is_closing() turns true when the peer resets a connection nobody reads", function()
    local hold = aio.Future()
    local sw
    local srv, port = serve(function(_, w)
      sw = w
      w:write(string.rep("x", 256 * 1024))
      hold:await()
      w:close()
    end)
    local r, w = aio.open_connection("127.0.0.1", port, { limit = 1024 })
    assert.is_true(S.wait_until(function() return sw ~= nil end))
    aio.sleep(0.02)
    assert.is_false(sw:is_closing())
    w:close()  -- more than 2 * limit unread: a reset
    assert.is_true(S.wait_until(function() return sw:is_closing() end, 2))
    hold:set_result(true)
    srv:close()
  end)

  it("is_closing() stays false after the peer's orderly end (write_eof)", function()
    local hold = aio.Future()
    local sw
    local srv, port = serve(function(_, w)
      sw = w
      hold:await()
      w:close()
    end)
    local r, w = aio.open_connection("127.0.0.1", port)
    assert.is_true(S.wait_until(function() return sw ~= nil end))
    w:write_eof()
    aio.sleep(0.05)
    assert.is_false(sw:is_closing())
    hold:set_result(true)
    assert.is_nil(r:read())
    w:close()
    srv:close()
  end)
end)

describe("drain() in several tasks at once", function()
  -- Issue 3: a second task calling drain() on the same writer raised
  -- "drain: another task is already draining".  asyncio 3.11 lets
  -- several wait (FlowControlMixin._drain_waiters): each wakes once the
  -- queue is below the low-water mark, or with the error.

  -- a server that does not read until `go` is set; the client's queue
  -- filled past the high-water mark
  local function stuffed()
    local go = aio.Future()
    local srv, port = serve(function(r, w)
      go:await()
      while r:read(65536) do end
      w:close()
    end)
    local r, w = aio.open_connection("127.0.0.1", port)
    local chunk = string.rep("d", 65536)
    repeat w:write(chunk) until w:transport_info() > 64 * 1024
    return srv, r, w, go
  end

  it("wakes every drainer once the queue is low", function()
    local srv, r, w, go = stuffed()
    local order = {}
    local tasks = {}
    for i = 1, 3 do
      tasks[i] = aio.spawn(function() w:drain() order[#order + 1] = i return i end)
    end
    aio.sleep(0.05)
    for i = 1, 3 do assert.is_false(tasks[i]:done()) end
    go:set_result(true)
    for i = 1, 3 do assert.are.equal(i, tasks[i]:await()) end
    assert.are.same({ 1, 2, 3 }, order)
    assert.is_true(w:transport_info() <= 64 * 1024)
    w:close()
    srv:close()
    srv:wait_closed()
  end)

  it("a cancelled drainer leaves the others waiting", function()
    local srv, r, w, go = stuffed()
    local a = aio.spawn(function() w:drain() return "a" end)
    local b = aio.spawn(function() w:drain() return "b" end)
    local c = aio.spawn(function() w:drain() return "c" end)
    aio.sleep(0.02)
    b:cancel()
    assert.are.equal("CancelledError", aio.errtype(select(2, pcall(b.await, b))))
    aio.sleep(0.02)
    assert.is_false(a:done())
    assert.is_false(c:done())
    go:set_result(true)
    assert.are.equal("a", a:await())
    assert.are.equal("c", c:await())
    w:close()
    srv:close()
    srv:wait_closed()
  end)

  it("every drainer gets the error when the connection is lost", function()
    local sw, hold = aio.Future(), aio.Future()
    local srv, port = serve(function(r, w) sw:set_result(w) hold:await() end)
    local r, w = aio.open_connection("127.0.0.1", port)
    local peer = sw:await()
    local chunk = string.rep("e", 65536)
    repeat w:write(chunk) until w:transport_info() > 64 * 1024
    local tasks = {}
    for i = 1, 3 do tasks[i] = aio.spawn(function() return pcall(w.drain, w) end) end
    aio.sleep(0.02)
    peer:close()  -- unread data: a reset; the client's sends fail
    for i = 1, 3 do
      local ok, e = tasks[i]:await()
      assert.is_false(ok)
      assert.are.equal("OSError", aio.errtype(e))
    end
    assert.is_true(w:is_closing())
    hold:set_result(true)
    w:close()
    srv:close()
  end)

  -- as asyncio's: close() does not end a drain while the close still
  -- flushes a queue above the mark (it used to return at once); the flush
  -- going down, or ending, does
  it("close() leaves drainers waiting until the close has flushed", function()
    local srv, r, w, go = stuffed()
    local tasks = {}
    for i = 1, 3 do tasks[i] = aio.spawn(function() w:drain() return i end) end
    aio.sleep(0.02)
    w:close()
    local late = aio.spawn(function() w:drain() return "late" end)
    aio.sleep(0.05)
    for i = 1, 3 do assert.is_false(tasks[i]:done()) end
    assert.is_false(late:done())
    go:set_result(true)
    for i = 1, 3 do assert.are.equal(i, tasks[i]:await()) end
    assert.are.equal("late", late:await())
    w:wait_closed()
    w:drain()  -- closed and flushed: at once
    srv:close()
    srv:wait_closed()
  end)
end)

describe("data buffered when the writer closes", function()
  -- Issue 4: writer:close() threw away what the Reader had received and
  -- not read yet.  asyncio lets it be read after the close, then EOF.
  it("stays readable after close(), then EOF", function()
    local srv, port = serve(function(_, w) w:write("hello world\nmore\nrest") w:close() end)
    local r, w = aio.open_connection("127.0.0.1", port)
    assert.are.equal("hello world\n", r:readline())  -- one segment: the rest is buffered
    w:close()
    assert.is_true(w:is_closing())
    assert.is_false(r:at_eof())
    assert.are.equal("more\n", r:readline())
    local e = S.error_of(r.readuntil, r, "\n")
    assert.are.equal("IncompleteReadError", aio.errtype(e))
    assert.are.equal("rest", e.partial)
    assert.is_nil(r:read())
    assert.is_true(r:at_eof())
    assert.is_nil(r:readline())
    w:wait_closed()
    srv:close()
  end)

  it("read() takes all of it; readexactly() past it is incomplete", function()
    local srv, port = serve(function(_, w) w:write("ab\ncdefgh") w:close() end)
    local r, w = aio.open_connection("127.0.0.1", port)
    assert.are.equal("ab\n", r:readline())
    w:close()
    assert.are.equal("cd", r:read(2))
    assert.are.equal("ef", r:readexactly(2))
    local e = S.error_of(r.readexactly, r, 5)
    assert.are.equal("IncompleteReadError", aio.errtype(e))
    assert.are.equal("gh", e.partial)
    assert.is_nil(r:read(1))
    srv:close()
  end)

  it("stays readable while the close flushes, and after", function()
    local go, got = aio.Future(), aio.Future()
    local srv, port = serve(function(r, w)
      w:write("abc\ndef")
      go:await()
      got:set_result(#(r:read() or ""))
      w:close()
    end)
    local r, w = aio.open_connection("127.0.0.1", port)
    assert.are.equal("abc\n", r:readline())
    local N = 4 * 1024 * 1024
    w:write(string.rep("q", N))
    w:close()  -- the queue is still flushing
    assert.are.equal("de", r:read(2))
    go:set_result(true)
    w:wait_closed()
    assert.are.equal(N, got:await())
    assert.are.equal("f", r:read())
    assert.is_nil(r:read())
    srv:close()
  end)

  -- What had arrived and not been read was left in the kernel: closing a
  -- socket with unread data resets the connection (RST), so the peer got
  -- ECONNRESET for an EOF and lost what was still on its way to it.
  -- asyncio's transport has read it all before the close.
  it("data that arrived but was not read is kept; the peer sees EOF, not a reset", function()
    local srv, port = serve(function(_, w)
      aio.sleep(0.1)  -- "req\n" has arrived; the handler never reads it
      w:write("hello")
      w:close()
    end)
    local r, w = aio.open_connection("127.0.0.1", port)
    w:write("req\n")
    assert.are.equal("hello", r:read(100))
    assert.is_nil(r:read(100))  -- OSError ECONNRESET before
    w:close()
    srv:close()
  end)

  it("a close with unread input flushes everything to a slow reader", function()
    local N = 16 * 1024 * 1024
    local srv, port = serve(function(_, w)
      aio.sleep(0.05)
      w:write(string.rep("x", N))
      w:close()
    end)
    local r, w = aio.open_connection("127.0.0.1", port)
    w:write("req\n")
    local n, i = 0, 0
    while true do
      local d = r:read(65536)
      if not d then break end
      n, i = n + #d, i + 1
      if i % 32 == 0 then aio.sleep(0.002) end  -- slower than the sender
    end
    assert.are.equal(N, n)
    w:close()
    srv:close()
  end)

  it("a handler that fails before reading: the client sees EOF", function()
    local srv, port = serve(function() aio.sleep(0.05) error("boom", 0) end)
    local r, w = aio.open_connection("127.0.0.1", port)
    w:write("request\n")
    assert.is_nil(r:read())
    w:close()
    srv:close()
  end)

  it("what arrived before the own close() is readable after it, unread", function()
    local srv, port = serve(function(r, w)
      w:write("early data")
      assert.is_nil(r:read())  -- the client's close is an EOF here
      w:close()
    end)
    local r, w = aio.open_connection("127.0.0.1", port)
    aio.sleep(0.1)
    w:close()
    assert.are.equal("early data", r:read())
    assert.is_nil(r:read())
    w:wait_closed()
    srv:close()
  end)

  it("the same over a Unix socket", function()
    if WIN then return end
    local path = tmpname("unread.sock")
    local srv = aio.start_unix_server(function(_, w)
      aio.sleep(0.1)
      w:write("hello")
      w:close()
    end, path)
    local r, w = aio.open_unix_connection(path)
    w:write("req\n")
    assert.are.equal("hello", r:read(100))
    assert.is_nil(r:read(100))
    w:close()
    srv:close()
  end)

  it("over TLS too", function()
    if WIN then return end
    local sctx, cctx = tls_contexts()
    local srv, port = serve(function(_, w) w:write("hello\nworld") w:close() end, { tls = sctx })
    local r, w = aio.open_connection("127.0.0.1", port, { tls = cctx })
    assert.are.equal("hello\n", r:readline())
    w:close()
    assert.are.equal("world", r:read())
    assert.is_nil(r:read())
    assert.is_true(r:at_eof())
    srv:close()
  end)
end)

describe("get_extra_info", function()
  -- Issue 5: "peername" and "sockname" gave nothing once the writer was
  -- closed (asyncio returns the values it cached), and on a plain
  -- connection "cipher", "tls_version", "alpn" and "peercert" returned no
  -- value at all where API.md says "each nil": one nil each now, as for
  -- a name nobody knows (asyncio's default).
  it("peername and sockname stay known after close()", function()
    local seen = aio.Future()
    local srv, port = serve(function(r, w)
      r:read()
      w:close()
      w:wait_closed()
      seen:set_result({ w:get_extra_info("peername") }, { w:get_extra_info("sockname") })
    end)
    local r, w = aio.open_connection("127.0.0.1", port)
    local peer = { w:get_extra_info("peername") }
    local sock = { w:get_extra_info("sockname") }
    assert.are.same({ "127.0.0.1", port }, peer)
    w:write_eof()
    assert.is_nil(r:read())
    w:close()
    assert.are.same(peer, { w:get_extra_info("peername") })
    w:wait_closed()
    assert.are.same(peer, { w:get_extra_info("peername") })
    assert.are.same(sock, { w:get_extra_info("sockname") })
    local speer, ssock = seen:await()
    assert.are.same(sock, speer)
    assert.are.same(peer, ssock)
    srv:close()
  end)

  it("known after both sides ended, never asked before (write_eof first)", function()
    local srv, port = serve(function(r, w) r:read() w:close() end)
    local r, w = aio.open_connection("127.0.0.1", port)
    w:write_eof()
    assert.is_nil(r:read())  -- both FINs: the socket has no peer now
    aio.sleep(0.02)
    w:close()
    assert.are.same({ "127.0.0.1", port }, { w:get_extra_info("peername") })
    srv:close()
  end)

  it("the names of a connection the peer closed first stay known too", function()
    local srv, port = serve(function(_, w) w:close() end)
    local r, w = aio.open_connection("127.0.0.1", port)
    assert.is_nil(r:read())
    w:close()
    w:wait_closed()
    assert.are.same({ "127.0.0.1", port }, { w:get_extra_info("peername") })
    srv:close()
  end)

  -- a reset takes the peer's address from the socket (getpeername fails
  -- with ENOTCONN); asyncio's transport has it from accept, and so do we
  it("an accepted connection's peer stays known after the peer reset it", function()
    if WIN then return end  -- the peer is python3
    local fds = settled_fds()
    for _, host in ipairs({ "127.0.0.1", "::1" }) do
      local seen = aio.Future()
      local ok, srv = pcall(aio.start_server, function(r, w)
        local rok, err = pcall(r.read, r)   -- the reset is here by now
        seen:set_result(rok or aio.errtype(err), w:get_extra_info("peername"))
        w:close()
      end, host, 0)
      if not ok then break end  -- no IPv6 here
      local _, port = srv:getsockname()
      -- connect, print the local port, then close with RST (SO_LINGER 0)
      local res = aio.run_process({ "python3", "-c", [[
import socket, struct, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.connect((sys.argv[1], int(sys.argv[2])))
print(s.getsockname()[1], flush=True)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
]], host, tostring(port) }, { check = true, timeout = 10 })
      local what, phost, pport = seen:await()
      assert.are.equal("OSError", what)  -- ECONNRESET: it was a reset
      assert.are.equal(host, phost)
      assert.are.equal(tonumber(res.stdout), pport)
      srv:close()
      srv:wait_closed()
    end
    assert.are.equal(fds, settled_fds())
  end)

  it("gives one nil for the TLS names on a plain connection, and for unknown names", function()
    local srv, port = serve(function(_, w) w:close() end)
    local r, w = aio.open_connection("127.0.0.1", port)
    for _, name in ipairs({ "cipher", "tls_version", "alpn", "peercert", "nonsense" }) do
      assert.are.equal(1, select("#", w:get_extra_info(name)), name)
      assert.is_nil(w:get_extra_info(name), name)
    end
    w:close()
    for _, name in ipairs({ "cipher", "nonsense" }) do
      assert.are.equal(1, select("#", w:get_extra_info(name)), name)
    end
    srv:close()
  end)

  it("a Unix socket's peer path after close()", function()
    if WIN then return end
    local path = tmpname("xsock")
    local srv = aio.start_unix_server(function(_, w) w:close() end, path)
    local r, w = aio.open_unix_connection(path)
    w:close()
    w:wait_closed()
    local got = { w:get_extra_info("peername") }
    assert.are.same({ path }, got)
    srv:close()
  end)

  it("a pipe has no names: one nil", function()
    if WIN then return end
    local p = aio.exec({ "cat" }, { stdin = "pipe" })
    assert.are.equal(1, select("#", p.stdin:get_extra_info("peername")))
    assert.is_nil(p.stdin:get_extra_info("peername"))
    p.stdin:close()
    assert.are.equal(1, select("#", p.stdin:get_extra_info("sockname")))
    assert.are.equal(0, p:wait())
  end)
end)
