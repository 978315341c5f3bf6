-- aio.to_thread and the worker pool (lua/aio/thread.lua, src/bindings/thread.c)
local aio = require "aio"
local S = require "support"

-- spin for `s` seconds of CPU time on the worker
local function spin(s)
  local t0 = os.clock()
  while os.clock() - t0 < s do end
  return s
end

describe("aio.to_thread", function()
  it("returns every result, nils included, integers and floats kept", function()
    local r = table.pack(aio.to_thread(function(...) return ... end,
      nil, true, false, 42, 1.5, math.maxinteger, "bin\0ary", nil))
    assert.are.equal(8, r.n)
    assert.are.same({ nil, true, false, 42, 1.5, math.maxinteger, "bin\0ary", nil },
      { r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8] })
    assert.is_true(math.type(r[4]) == "integer")
    assert.is_true(math.type(r[5]) == "float")
  end)

  it("copies nested tables both ways", function()
    local arg = { list = { 1, 2, 3 }, map = { a = { b = "c" } }, [10] = true, [2.5] = "f" }
    local back = aio.to_thread(function(t) t.seen = true return t end, arg)
    assert.are_not.equal(arg, back)  -- a copy
    assert.is_nil(arg.seen)
    assert.are.same({ 1, 2, 3 }, back.list)
    assert.are.equal("c", back.map.a.b)
    assert.is_true(back[10])
    assert.are.equal("f", back[2.5])
    assert.is_true(back.seen)
  end)

  it("runs in a fresh state with the standard libraries and its own globals", function()
    shared_global = "loop side"  -- luacheck: ignore
    local g, libs = aio.to_thread(function()
      return shared_global, type(string.format) .. type(os.clock) .. type(require)
    end)
    assert.is_nil(g)
    assert.are.equal("functionfunctionfunction", libs)
    shared_global = nil  -- luacheck: ignore
  end)

  it("gives the worker the caller's package.path and cpath", function()
    local p, c = aio.to_thread(function() return package.path, package.cpath end)
    assert.are.equal(package.path, p)
    assert.are.equal(package.cpath, c)
    -- so require finds the same modules, Lua and C
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. dir))
    local f = assert(io.open(dir .. "/thread_spec_mod.lua", "w"))
    f:write("return { answer = 42 }")
    f:close()
    local saved = package.path
    package.path = dir .. "/?.lua;" .. package.path
    local answer, lfs = aio.to_thread(function()
      return require("thread_spec_mod").answer, type(require("lfs").dir)
    end)
    package.path = saved
    os.remove(dir .. "/thread_spec_mod.lua")
    os.remove(dir)
    assert.are.equal(42, answer)
    assert.are.equal("function", lfs)
  end)

  it("re-raises the function's error value", function()
    local e = S.error_of(aio.to_thread, function() error("worker failed") end)
    assert.matches("thread_spec.lua:%d+: worker failed", e)
    local t = S.error_of(aio.to_thread, function() error({ code = 7, msg = "x" }) end)
    assert.are.same({ code = 7, msg = "x" }, t)
  end)

  -- it came back a plain table: aio.errtype nil, tostring "table: 0x..."
  it("gives back an aio error object raised in the worker as one", function()
    local e = S.error_of(aio.to_thread, function()
      local aio = require "aio"
      aio.run(function() aio.wait_for(function() aio.sleep(1) end, 0.01) end)
    end)
    assert.are.equal("TimeoutError", aio.errtype(e))
    assert.are.equal("TimeoutError: timed out after 0.01 s", tostring(e))
    local plain = S.error_of(aio.to_thread, function() error({ type = "X", message = "m" }) end)
    assert.is_nil(aio.errtype(plain))  -- a look-alike stays a plain table
    assert.are.equal("X", plain.type)
  end)

  it("refuses a function with upvalues, naming the upvalue", function()
    local n = 1
    local e = S.error_of(aio.to_thread, function() return n end)
    assert.matches("upvalue 'n'", e)
  end)

  it("moves a recursive local function, which refers to itself", function()
    local function fib(n) if n < 2 then return n end return fib(n - 1) + fib(n - 2) end
    assert.are.equal(6765, aio.to_thread(fib, 20))
    local function outer() return fib(3) end  -- fib is not outer itself
    assert.matches("upvalue 'fib'", S.error_of(aio.to_thread, outer))
  end)

  it("refuses C functions and non-functions", function()
    assert.matches("C function", S.error_of(aio.to_thread, print))
    assert.matches("bad argument #1", S.error_of(aio.to_thread, 42))
  end)

  it("refuses arguments that cannot be copied, with a clear message", function()
    local function noop() end
    local e = S.error_of(aio.to_thread, noop, 1, io.stdout)
    assert.matches("argument 3", e)
    assert.matches("userdata", e)
    e = S.error_of(aio.to_thread, noop, { f = print })
    assert.matches("argument 2", e)
    assert.matches("function", e)
    e = S.error_of(aio.to_thread, noop, coroutine.create(noop))
    assert.matches("thread", e)
  end)

  it("refuses tables that contain themselves", function()
    local t = { 1 }
    t.self = t
    assert.matches("contains itself", S.error_of(aio.to_thread, function() end, t))
    local deep = { a = { b = {} } }
    deep.a.b.up = deep
    assert.matches("contains itself", S.error_of(aio.to_thread, function() end, deep))
    -- the same table twice, without a cycle, is copied twice
    local leaf = { 1 }
    local r = aio.to_thread(function(x) return x end, { leaf, leaf })
    assert.are.same({ { 1 }, { 1 } }, r)
  end)

  it("turns results that cannot be copied into an error", function()
    local e = S.error_of(aio.to_thread, function() return 1, print end)
    assert.matches("result 2", e)
    assert.matches("function", e)
    e = S.error_of(aio.to_thread, function() local t = {} t.t = t return t end)
    assert.matches("contains itself", e)
  end)

  it("turns an error value that cannot be copied into its text", function()
    local e = S.error_of(aio.to_thread, function()
      error(setmetatable({}, { __tostring = function() return "odd error" end, __index = print }))
    end)
    -- a table copies without its metatable; a function value becomes text
    assert.are.equal("table", type(e))
    e = S.error_of(aio.to_thread, function() error(print) end)
    assert.matches("function", e)
  end)

  it("keeps the loop running while a worker computes", function()
    local ticks = 0
    local ticker = aio.spawn(function()
      while true do aio.sleep(0.005) ticks = ticks + 1 end
    end)
    local worker_ticks_seen = aio.to_thread(spin, 0.2)
    ticker:cancel()
    pcall(ticker.await, ticker)
    assert.are.equal(0.2, worker_ticks_seen)
    assert.is_true(ticks >= 5, "the loop was blocked: " .. ticks .. " ticks")
  end)

  it("runs many calls concurrently, each with its own result", function()
    local tasks = {}
    for i = 1, 50 do
      tasks[i] = aio.spawn(aio.to_thread, function(x)
        local s = 0
        for k = 1, x do s = s + k end
        return s
      end, i * 100)
    end
    for i = 1, 50 do
      local n = i * 100
      assert.are.equal(n * (n + 1) // 2, tasks[i]:await())
    end
  end)

  it("raises CancelledError at once when the waiting task is cancelled", function()
    local started = aio.Future()
    local t = aio.spawn(function()
      started:set_result(true)
      return aio.to_thread(spin, 0.3)
    end)
    started:await()
    aio.sleep(0.01)
    local t0 = aio.now()
    assert.is_true(t:cancel())
    local e = S.error_of(t.await, t)
    assert.are.equal("CancelledError", aio.errtype(e))
    assert.is_true(aio.now() - t0 < 0.2, "the cancel waited for the worker")
    assert.is_true(t:cancelled())
    -- the worker still finishes; its result is dropped and the pool goes on
    assert.are.equal(6, aio.to_thread(function(a, b) return a * b end, 2, 3))
  end)

  it("can be cancelled from a timer, and a later call still works", function()
    local task = aio.spawn(aio.to_thread, spin, 0.3)
    aio.loop():call_later(0.02, function() task:cancel("too slow") end)
    local e = S.error_of(task.await, task)
    assert.are.equal("CancelledError", aio.errtype(e))
    assert.are.equal("too slow", e.message)
    assert.are.equal("ok", aio.to_thread(function() return "ok" end))
  end)

  it("a cancelled call still queued never runs (asyncio's executor skips it)", function()
    local before = aio.thread_pool_size()
    aio.set_thread_pool_size(1)
    local flag = os.tmpname()
    os.remove(flag)
    local busy = aio.spawn(aio.to_thread, spin, 0.3)
    aio.sleep(0.02)
    local queued = aio.spawn(aio.to_thread, function(p)
      local f = io.open(p, "w")
      f:write("ran")
      f:close()
      return "ran"
    end, flag)
    aio.sleep(0.02)
    assert.is_true(queued:cancel())
    assert.are.equal("CancelledError", aio.errtype(S.error_of(queued.await, queued)))
    assert.are.equal(0.3, busy:await())
    -- one worker, FIFO: a job queued after it has run, so it would have too
    assert.are.equal("next", aio.to_thread(function() return "next" end))
    local f = io.open(flag)
    if f then f:close() os.remove(flag) end
    aio.set_thread_pool_size(before)
    assert.is_nil(f, "the cancelled job ran")
  end)

  it("require 'aio' in the worker finds what the caller's finds", function()
    -- in the aiolua program aio is built in (no aio.so on the cpath)
    assert.are.same({ "x", "function" }, { aio.to_thread(function()
      local sync = require "aio.sync"
      local aio = require "aio"
      return aio.run(function() aio.sleep(0.001) return "x", type(sync.Event) end)
    end) })
  end)

  it("has a configurable pool size", function()
    local before = aio.thread_pool_size()
    assert.is_true(before >= 1)
    aio.set_thread_pool_size(2)
    assert.are.equal(2, aio.thread_pool_size())
    assert.matches("bad argument", S.error_of(aio.set_thread_pool_size, 0))
    assert.matches("bad argument", S.error_of(aio.set_thread_pool_size, 1000))
    -- more blocking calls than workers: they queue, none is lost
    local ts = {}
    for i = 1, 4 do ts[i] = aio.spawn(aio.to_thread, function() os.execute("sleep 0.1") return true end) end
    for i = 1, 4 do assert.is_true(ts[i]:await()) end
    aio.set_thread_pool_size(before)
  end)

  it("os.exit(code, true) while a call is in flight closes the state cleanly", function()
    -- the state's finalizers run in any order: the job's box may go
    -- before the task that waits for it (a use after free, under ASan)
    local bin = os.getenv("AIOLUA_BIN") or "./aiolua"
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write([[
aio.spawn(aio.to_thread, function() local x = 0 for i = 1, 3e7 do x = x + i end end)
aio.sleep(0.01)
os.exit(7, true)
]])
    f:close()
    local p = aio.exec({ bin, script }, { stderr = "pipe" })
    local err = p.stderr:read()
    local rc = p:wait()
    os.remove(script)
    assert.are.equal(7, rc, err)
    assert.is_nil(err)
  end)

  it("is a clear error outside a task", function()
    local ok, e
    aio.loop():call_soon(function() ok, e = pcall(aio.to_thread, function() end) end)
    aio.sleep(0.01)
    assert.is_false(ok)
    assert.matches("aio.to_thread", e)
  end)
end)
