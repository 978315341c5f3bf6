-- waits inside user coroutines run by a task (src/bindings/coro.c)
local aio = require "aio"
local S = require "support"

describe("nested coroutines", function()
  it("a coroutine.wrap generator may wait; others run meanwhile", function()
    local gen = coroutine.wrap(function()
      for i = 1, 3 do aio.sleep(0.005) coroutine.yield(i) end
      return "end"
    end)
    local ticks = 0
    local ticker = aio.spawn(function() while true do aio.sleep(0) ticks = ticks + 1 end end)
    assert.are.same({ 1, 2, 3, "end" }, { gen(), gen(), gen(), gen() })
    assert.is_true(ticks > 3)
    ticker:cancel()
    pcall(ticker.await, ticker)
  end)

  it("coroutine.resume passes values both ways around the waits", function()
    local co = coroutine.create(function(a)
      aio.sleep(0)
      local b = coroutine.yield(a + 1)
      aio.sleep(0)
      return b * 2
    end)
    assert.are.same({ true, 2 }, { coroutine.resume(co, 1) })
    assert.are.equal("suspended", coroutine.status(co))
    assert.are.same({ true, 10 }, { coroutine.resume(co, 5) })
    assert.are.equal("dead", coroutine.status(co))
    assert.are.same({ false, "cannot resume dead coroutine" }, { coroutine.resume(co) })
  end)

  it("three levels deep", function()
    local inner = coroutine.wrap(function() aio.sleep(0.001) coroutine.yield("i") return "i-end" end)
    local middle = coroutine.wrap(function()
      coroutine.yield(inner()) aio.sleep(0) coroutine.yield(inner())
    end)
    local outer = coroutine.wrap(function() coroutine.yield(middle()) coroutine.yield(middle()) end)
    assert.are.same({ "i", "i-end" }, { outer(), outer() })
  end)

  it("errors inside a generator propagate as in plain Lua", function()
    local gen = coroutine.wrap(function() aio.sleep(0) error("gen failed") end)
    assert.matches("gen failed", S.error_of(gen))
    local co = coroutine.create(function() aio.sleep(0) error({ code = 1 }) end)
    local ok, e = coroutine.resume(co)
    assert.is_false(ok)
    assert.are.same({ code = 1 }, e)
  end)

  it("cancelling a task waiting inside a generator raises there", function()
    local log = {}
    local t = aio.spawn(function()
      local gen = coroutine.wrap(function()
        local ok, e = pcall(aio.sleep, 10)
        log[#log + 1] = aio.errtype(e)
        error(e, 0)
      end)
      gen()
    end)
    aio.sleep(0)
    t:cancel()
    S.error_of(t.await, t)
    assert.are.same({ "CancelledError" }, log)
    assert.is_true(t:cancelled())
  end)

  it("to-be-closed variables of a failed generator are closed", function()
    local closed = false
    local gen = coroutine.wrap(function()
      local x <close> = setmetatable({}, { __close = function() closed = true end })
      aio.sleep(0)
      error("x")
    end)
    pcall(gen)
    assert.is_true(closed)
  end)

  it("a task's own coroutine cannot be resumed or closed by others", function()
    local co
    local t = aio.spawn(function() co = coroutine.running() aio.sleep(0.01) return "fine" end)
    aio.sleep(0)
    local ok, e = coroutine.resume(co)
    assert.is_false(ok)
    assert.matches("coroutine of a task", e)
    assert.matches("coroutine of a task", S.error_of(coroutine.close, co))
    assert.are.equal("fine", t:await())
  end)

  it("a plain coroutine.yield in a task body is an error for that task", function()
    local t = aio.spawn(function() coroutine.yield(1) end)
    assert.matches("attempt to yield from a task", S.error_of(t.await, t))
  end)

  it("a plain coroutine.yield in a task body is raised where it is, so pcall catches it", function()
    local t = aio.spawn(function()
      local ok, e = pcall(coroutine.yield, "raw")
      aio.sleep(0)  -- and the task goes on
      return ok, e
    end)
    local ok, e = t:await()
    assert.is_false(ok)
    assert.matches("attempt to yield from a task outside a coroutine", e)
    -- a yield in a user coroutine is a yield, as ever
    local co = coroutine.wrap(function(a) local b = coroutine.yield(a + 1) return b * 2 end)
    assert.are.equal(2, co(1))
    assert.are.equal(10, co(5))
  end)

  -- while its wait is passed up, a coroutine is in use by the task that
  -- resumed it (as one that resumed another is): "normal", not resumable
  it("a coroutine waiting inside a task cannot be resumed or closed by another", function()
    local co = coroutine.create(function()
      aio.sleep(0.02)
      coroutine.yield("y1")
      return "end"
    end)
    local owner = aio.spawn(function() return coroutine.resume(co) end)
    aio.sleep(0.005)
    assert.are.equal("normal", coroutine.status(co))
    local ok, e = coroutine.resume(co)
    assert.is_false(ok)
    assert.are.equal("cannot resume non-suspended coroutine", e)
    assert.matches("cannot close a normal coroutine", S.error_of(coroutine.close, co))
    local g = coroutine.wrap(function() aio.sleep(0.02) return "g" end)
    local gowner = aio.spawn(g)
    aio.sleep(0.005)
    assert.matches("cannot resume non%-suspended coroutine", S.error_of(g))
    -- the owners were not disturbed
    assert.are.same({ true, "y1" }, { owner:await() })
    assert.are.equal("g", gowner:await())
    assert.are.equal("suspended", coroutine.status(co))
    assert.are.same({ true, "end" }, { coroutine.resume(co) })
    assert.are.equal("dead", coroutine.status(co))
  end)

  it("coroutine.isyieldable and running behave", function()
    local t = aio.spawn(function()
      local co, main = coroutine.running()
      return coroutine.isyieldable(), type(co), main
    end)
    assert.are.same({ true, "thread", false }, { t:await() })
  end)
end)
