-- signal_spec.lua: aio.wait_signal, loop:add_signal_handler and
-- loop:remove_signal_handler, with signals sent by kill(1).
local aio = require "aio"
local S = require "support"

local function mypid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("a"):match("^(%d+)")
  f:close()
  return pid
end

local function kill(sig)
  local p = aio.exec({ "kill", "-" .. sig, mypid() })
  assert.equal(0, p:wait())
end

describe("aio.wait_signal", function()
  it("returns the name of the signal that came", function()
    local t = aio.spawn(aio.wait_signal, "SIGUSR2", "SIGUSR1")
    aio.sleep(0.02)
    assert.is_false(t:done())
    kill("USR1")
    assert.equal("SIGUSR1", t:await())
  end)

  it("takes numbers too", function()
    local t = aio.spawn(aio.wait_signal, 12)
    aio.sleep(0.02)
    kill("USR2")
    assert.equal("SIGUSR2", t:await())
  end)

  it("can be cancelled, and leaves nothing behind", function()
    local fds = S.fd_count()
    local t = aio.spawn(aio.wait_signal, "SIGUSR1")
    aio.sleep(0.01)
    t:cancel()
    pcall(t.await, t)
    assert.is_true(t:cancelled())
    -- the signal is no longer ours: a handler elsewhere still sees it
    local got = false
    aio.loop():add_signal_handler("SIGUSR1", function() got = true end)
    kill("USR1")
    assert.is_true(S.wait_until(function() return got end, 5))
    aio.loop():remove_signal_handler("SIGUSR1")
    assert.equal(fds, S.fd_count())
  end)

  it("rejects unknown signals and SIGKILL", function()
    assert.has_error(function() aio.wait_signal("SIGNOPE") end)
    assert.has_error(function() aio.wait_signal("SIGKILL") end)
    assert.has_error(function() aio.wait_signal() end)
    -- a name cut at a zero byte was taken for the part before it
    assert.matches("unknown signal", S.error_of(aio.wait_signal, "SIGTERM\0junk"))
    assert.has_error(function() aio.loop():add_signal_handler("SIGUSR1\0x", function() end) end)
  end)
end)

describe("loop:add_signal_handler", function()
  it("runs the handler on the loop at each arrival", function()
    local loop = aio.loop()
    local seen = {}
    loop:add_signal_handler("SIGUSR2", function(...) seen[#seen + 1] = select("#", ...) end)
    kill("USR2")
    assert.is_true(S.wait_until(function() return #seen == 1 end, 5))
    kill("USR2")
    assert.is_true(S.wait_until(function() return #seen == 2 end, 5))
    assert.equal(0, seen[1])  -- no arguments, as asyncio's callback()
    assert.is_true(loop:remove_signal_handler("SIGUSR2"))
    assert.is_false(loop:remove_signal_handler("SIGUSR2"))
  end)

  it("runs the handler in a copy of the context it was added in", function()
    local loop = aio.loop()
    local v = aio.ContextVar("sig")
    local seen
    aio.spawn(function()
      v:set("adder")
      loop:add_signal_handler("SIGUSR2", function() seen = v:get() end)
      v:set("changed")
    end):await()
    kill("USR2")
    assert.is_true(S.wait_until(function() return seen ~= nil end, 5))
    assert.equal("adder", seen)
    loop:remove_signal_handler("SIGUSR2")
  end)

  it("a method with its object as the extra argument (asyncio's usage)", function()
    local loop = aio.loop()
    local ev = aio.Event()
    loop:add_signal_handler("SIGUSR2", ev.set, ev)
    kill("USR2")
    assert.is_true(aio.wait_for(function() return ev:wait() end, 5))
    loop:remove_signal_handler("SIGUSR2")
  end)

  it("replaces an earlier handler", function()
    local loop = aio.loop()
    local a, b = 0, 0
    loop:add_signal_handler("SIGHUP", function() a = a + 1 end)
    loop:add_signal_handler("SIGHUP", function() b = b + 1 end)
    kill("HUP")
    assert.is_true(S.wait_until(function() return b == 1 end, 5))
    assert.equal(0, a)
    loop:remove_signal_handler("SIGHUP")
  end)

  -- as asyncio's add_signal_handler(sig, callback, *args): callback(*args)
  it("passes the extra arguments, only them; a new handler has its own", function()
    local loop = aio.loop()
    local seen = {}
    local function h(...) seen[#seen + 1] = table.pack(...) end
    loop:add_signal_handler("SIGUSR2", h, "a", nil, 3)
    kill("USR2")
    assert.is_true(S.wait_until(function() return #seen == 1 end, 5))
    assert.are.same({ n = 3, "a", nil, 3 }, seen[1])
    loop:add_signal_handler("SIGUSR2", h, "b")   -- fewer: the old ones go
    kill("USR2")
    assert.is_true(S.wait_until(function() return #seen == 2 end, 5))
    assert.are.same({ n = 1, "b" }, seen[2])
    loop:add_signal_handler("SIGUSR2", h)
    kill("USR2")
    assert.is_true(S.wait_until(function() return #seen == 3 end, 5))
    assert.are.same({ n = 0 }, seen[3])
    assert.is_true(loop:remove_signal_handler("SIGUSR2"))
  end)

  it("a handler may spawn a task that shuts a server down (SIGTERM)", function()
    local loop = aio.loop()
    local srv = aio.start_server(function(r, w) w:close() end, "127.0.0.1", 0)
    local serving = aio.spawn(srv.serve_forever, srv)
    loop:add_signal_handler("SIGTERM", function() srv:close() end)
    aio.sleep(0.01)
    kill("TERM")
    local ok, e = pcall(serving.await, serving)
    assert.is_false(ok)
    assert.are.equal("CancelledError", aio.errtype(e))
    assert.is_false(srv:is_serving())
    loop:remove_signal_handler("SIGTERM")
  end)

  it("rejects bad arguments", function()
    local loop = aio.loop()
    assert.has_error(function() loop:add_signal_handler("SIGKILL", print) end)
    assert.has_error(function() loop:add_signal_handler("SIGUSR1", 42) end)
  end)
end)

-- Under a stock lua5.4 one Ctrl-C did nothing until aio.run returned
-- (lua.c's handler acts on the main thread, which waits in aio.run); as
-- asyncio.run, aio.run now watches SIGINT while it runs
describe("aio.run under a stock lua5.4, on SIGINT", function()
  local WIN = package.config:sub(1, 1) == "\\"

  -- run code under stock lua5.4, send SIGINT `n` times once it printed
  -- "ready"; its output and exit status
  local function interrupt(code, n)
    local f = os.tmpname()
    local h = assert(io.open(f, "w"))
    h:write(code)
    h:close()
    local out = S.sh(string.format(
      "%s %s > %s.out 2>&1 & pid=$!; for i in $(seq 100); do grep -q ready %s.out && break; sleep 0.05; done; "
      .. "for i in $(seq %d); do kill -INT $pid; sleep 0.2; done; wait $pid; echo $?",
      S.STOCK_LUA, f, f, f, n))
    local o = assert(io.open(f .. ".out")):read("a")
    os.remove(f)
    os.remove(f .. ".out")
    return o, tonumber(out:match("(%d+)%s*$"))
  end

  it("cancels the main task, runs its cleanup, then raises 'interrupted!' as lua.c", function()
    if WIN then return end
    local out, rc = interrupt([[
      local aio = require "aio"
      aio.run(function()
        local x <close> = setmetatable({}, { __close = function() print("cleanup") end })
        io.stdout:write("ready\n") io.stdout:flush()
        aio.sleep(30)
      end)
    ]], 1)
    assert.are.equal(1, rc, out)
    assert.matches("^ready\ncleanup\n[^\n]*: interrupted!\nstack traceback:", out)
  end)

  it("returns what a main task that caught the cancel returns; each run watches anew", function()
    if WIN then return end
    local out, rc = interrupt([[
      local aio = require "aio"
      for i = 1, 2 do
        print(aio.run(function()
          io.stdout:write("ready\n") io.stdout:flush()
          local ok, e = pcall(aio.sleep, 30)
          return aio.errtype(e), e.message
        end))
      end
    ]], 2)
    assert.are.equal(0, rc, out)
    assert.are.equal("ready\nCancelledError\tinterrupted (SIGINT)\nready\nCancelledError\tinterrupted (SIGINT)\n", out)
  end)

  it("a second SIGINT ends a main task that computes without waiting", function()
    if WIN then return end
    local out, rc = interrupt([[
      local aio = require "aio"
      aio.run(function()
        io.stdout:write("ready\n") io.stdout:flush()
        local t = os.clock() while os.clock() - t < 10 do end
      end)
    ]], 2)
    assert.are.equal(130, rc, out)  -- killed by SIGINT, as lua.c's second
  end)
end)
