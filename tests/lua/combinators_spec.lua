-- gather, wait, as_completed, wait_for, timeout, shield, taskgroup
-- (API.md "Combinators"; lua/aio/combinators.lua)
local aio = require "aio"
local S = require "support"

local function settle() for _ = 1, 5 do aio.sleep(0) end end

-- a function that sleeps d seconds then returns the rest
local function after(d, ...)
  local r = table.pack(...)
  return function() aio.sleep(d) return table.unpack(r, 1, r.n) end
end

-- a function that records what cancelled it and re-raises
local function cancellable(log, key)
  return function()
    local ok, e = pcall(aio.sleep, 5)
    log[key] = aio.errtype(e)
    error(e, 0)
  end
end

describe("aio.gather", function()
  it("cancelling the caller cancels the members with the same message", function()
    local seen = {}
    local function member(i)
      return function()
        local ok, e = pcall(aio.sleep, 1)
        seen[i] = e.message
        error(e, 0)
      end
    end
    local g = aio.spawn(aio.gather, member(1), member(2))
    aio.sleep(0.01)
    g:cancel("shutting down")
    local ok, e = pcall(g.await, g)
    assert.is_false(ok)
    assert.are.equal("CancelledError", aio.errtype(e))
    assert.are.equal("shutting down", e.message)
    assert.are.same({ "shutting down", "shutting down" }, seen)
  end)

  it("returns first results in argument order from tasks, futures, functions", function()
    local f = aio.Future()
    local t = aio.spawn(after(0.01, "task", "extra"))
    aio.spawn(function() aio.sleep(0.005) f:set_result("future") end)
    local a, b, c = aio.gather(after(0.02, "fn"), t, f)
    assert.are.same({ "fn", "task", "future" }, { a, b, c })
  end)

  it("keeps nil results in place; no arguments returns nothing", function()
    local r = table.pack(aio.gather(after(0, nil), after(0, 2)))
    assert.are.equal(2, r.n)
    assert.is_nil(r[1])
    assert.are.equal(2, r[2])
    assert.are.equal(0, select("#", aio.gather()))
  end)

  it("re-raises the first error unchanged and cancels the rest", function()
    local boom = setmetatable({}, { __tostring = function() return "boom" end })
    local log = {}
    local sib = aio.spawn(cancellable(log, "sib"))
    local ok, e = pcall(aio.gather, sib, function() aio.sleep(0.01) error(boom) end,
      cancellable(log, "fn"))
    assert.is_false(ok)
    assert.are.equal(boom, e)
    assert.is_true(sib:cancelled())
    assert.are.same({ sib = "CancelledError", fn = "CancelledError" }, log)
  end)

  it("a string error keeps its text", function()
    local e = S.error_of(aio.gather, function() error("plain", 0) end, after(1))
    assert.are.equal("plain", e)
  end)

  it("cancelling the gathering task cancels its children", function()
    local log = {}
    local child = aio.spawn(cancellable(log, "child"))
    local g = aio.spawn(function() return aio.gather(child, cancellable(log, "fn")) end)
    settle()
    g:cancel()
    assert.are.equal("CancelledError", aio.errtype(S.error_of(g.await, g)))
    assert.is_true(child:cancelled())
    assert.are.same({ child = "CancelledError", fn = "CancelledError" }, log)
  end)

  it("a member cancelled from elsewhere: its CancelledError, the others go on (asyncio)", function()
    local other = aio.spawn(function() aio.sleep(0.03) return "o" end)
    local victim = aio.spawn(aio.sleep, 5)
    local failing = aio.spawn(function() aio.sleep(0.03) error("later-boom", 0) end)
    aio.spawn(function() aio.sleep(0.005) victim:cancel("v-msg") end)
    local e = S.error_of(aio.gather, victim, other, failing)
    assert.are.equal("CancelledError", aio.errtype(e))
    assert.are.equal("v-msg", e.message)
    assert.are.equal("o", other:await())  -- not cancelled
    -- the one that fails later counts as retrieved: no report on stderr
    local ok = pcall(failing.await, failing)
    assert.is_false(ok)
  end)

  it("a bad argument is a string error", function()
    assert.matches("aio.gather: bad argument #2", S.error_of(aio.gather, after(0), 42))
  end)
end)

describe("aio.wait", function()
  it("all: done holds every object, pending none", function()
    local t1 = aio.spawn(after(0.005, 1))
    local t2 = aio.spawn(function() error("x") end)
    local done, pending = aio.wait({ t1, t2 })
    assert.are.same({ t1, t2 }, done)
    assert.are.same({}, pending)
    assert.is_not_nil(t2:error())
  end)

  it("first: returns at the first completion, cancels nothing", function()
    local fast = aio.spawn(after(0.005, "fast"))
    local slow = aio.spawn(after(5))
    local done, pending = aio.wait({ slow, fast }, { return_when = "first" })
    assert.are.same({ fast }, done)
    assert.are.same({ slow }, pending)
    assert.is_false(slow:done())
    slow:cancel()
    pcall(slow.await, slow)
  end)

  it("error: returns at the first error, not raising it", function()
    local bad = aio.spawn(function() aio.sleep(0.005) error("bad") end)
    local ok1 = aio.spawn(after(0.001, "ok"))
    local slow = aio.spawn(after(5))
    local done, pending = aio.wait({ ok1, bad, slow }, { return_when = "error" })
    assert.are.same({ ok1, bad }, done)
    assert.are.same({ slow }, pending)
    slow:cancel()
    pcall(slow.await, slow)
  end)

  it("error with no failure waits for all", function()
    local done, pending = aio.wait({ after(0.001, 1), after(0.002, 2) }, { return_when = "error" })
    assert.are.equal(2, #done)
    assert.are.equal(0, #pending)
  end)

  it("timeout: returns what is done, leaves the rest running", function()
    local slow = aio.spawn(after(5))
    local fn = function() return "quick" end
    local done, pending = aio.wait({ slow, fn }, { timeout = 0.02 })
    assert.are.equal(1, #done)
    assert.are.equal("quick", done[1]:result())  -- the spawned function's Task
    assert.are.same({ slow }, pending)
    assert.is_false(slow:done())
    slow:cancel()
    pcall(slow.await, slow)
  end)

  it("misuse is a string error", function()
    assert.matches("aio.wait: bad option return_when", S.error_of(aio.wait, { after(0) }, { return_when = "x" }))
    assert.matches("aio.wait: bad argument #1", S.error_of(aio.wait, {}))
    assert.matches("aio.wait: bad argument #1", S.error_of(aio.wait, 3))
    -- a bad member is blamed on the caller's line (it had no position)
    local line = debug.getinfo(1, "l").currentline
    local e1 = S.error_of(function() aio.gather(1) end)
    local e2 = S.error_of(function() aio.wait({ 1 }) end)
    local e3 = S.error_of(function() aio.as_completed({ "x" }) end)
    assert.matches("combinators_spec.lua:" .. (line + 1) .. ": aio.gather: bad argument #1", e1)
    assert.matches("combinators_spec.lua:" .. (line + 2) .. ": aio.wait: bad argument #1", e2)
    assert.matches("combinators_spec.lua:" .. (line + 3) .. ": aio.as_completed: bad argument #1", e3)
    -- opts that is not a table names the function (it used to index it)
    local t = aio.spawn(aio.sleep, 0)
    assert.matches("aio.wait: bad argument #2 %(table expected, got number%)", S.error_of(aio.wait, { t }, 5))
    assert.matches("aio.as_completed: bad argument #2 %(table expected, got string%)",
      S.error_of(aio.as_completed, { t }, "x"))
    t:await()
  end)

  it("callable tables are functions to gather, wait_for, wait and tg:spawn", function()
    local c = setmetatable({}, { __call = function(_, x) return "called", x end })
    assert.are.same({ "called" }, { aio.gather(c) })
    assert.are.same({ "called" }, { aio.wait_for(c, 1) })
    local done = aio.wait({ c })
    assert.are.equal("called", done[1]:result())
    aio.taskgroup(function(tg)
      local t = tg:spawn(c, 7)
      assert.are.same({ "called", 7 }, { t:await() })
    end)
  end)
end)

describe("aio.as_completed", function()
  -- asyncio's wait and as_completed take set(fs): it was handed back twice
  it("counts an object listed twice once, as aio.wait does", function()
    local t = aio.spawn(function() aio.sleep(0.01) return 1 end)
    local n = 0
    for f in aio.as_completed({ t, t }) do
      assert.are.equal(t, f)
      n = n + 1
    end
    assert.are.equal(1, n)
    local done, pending = aio.wait({ t, t, t })
    assert.are.same({ { t }, {} }, { done, pending })
  end)

  it("yields the very objects in completion order", function()
    local a = aio.spawn(after(0.03, "a"))
    local b = aio.spawn(after(0.01, "b"))
    local f = aio.Future()
    f:set_result("f")
    local got = {}
    for x in aio.as_completed({ a, b, f }) do got[#got + 1] = x end
    assert.are.same({ f, b, a }, got)
  end)

  it("raises TimeoutError when the next one is late", function()
    local slow = aio.spawn(after(5))
    local quick = aio.spawn(after(0.001, 1))
    local seen = {}
    local ok, e = pcall(function()
      for x in aio.as_completed({ slow, quick }, { timeout = 0.03 }) do seen[#seen + 1] = x end
    end)
    assert.is_false(ok)
    assert.are.equal("TimeoutError", aio.errtype(e))
    assert.are.same({ quick }, seen)
    assert.is_false(slow:done())
    slow:cancel()
    pcall(slow.await, slow)
  end)

  it("functions are spawned and their tasks handed back", function()
    local n = 0
    for t in aio.as_completed({ after(0.001, 5) }) do
      assert.are.equal(5, t:await())
      n = n + 1
    end
    assert.are.equal(1, n)
  end)
end)

describe("aio.wait_for", function()
  it("returns all results in time", function()
    assert.are.same({ 1, 2 }, { aio.wait_for(after(0.001, 1, 2), 1) })
    assert.are.same({ 3 }, { aio.wait_for(after(0.001, 3), nil) })
  end)

  it("on timeout cancels the task and raises TimeoutError", function()
    local log = {}
    local t = aio.spawn(cancellable(log, "t"))
    assert.are.equal("TimeoutError", aio.errtype(S.error_of(aio.wait_for, t, 0.02)))
    assert.is_true(t:cancelled())  -- it has ended when wait_for raises
    assert.are.equal("CancelledError", log.t)
  end)

  it("a future is cancelled on timeout", function()
    local f = aio.Future()
    assert.are.equal("TimeoutError", aio.errtype(S.error_of(aio.wait_for, f, 0.01)))
    assert.is_true(f:cancelled())
  end)

  it("re-raises the awaited error unchanged", function()
    local e = S.error_of(aio.wait_for, function() error("inner", 0) end, 1)
    assert.are.equal("inner", e)
  end)

  it("a cancel from outside stays CancelledError and cancels the inner task", function()
    local log = {}
    local inner = aio.spawn(cancellable(log, "inner"))
    local outer = aio.spawn(function() return aio.wait_for(inner, 5) end)
    settle()
    outer:cancel("stop")
    local e = S.error_of(outer.await, outer)
    assert.are.equal("CancelledError", aio.errtype(e))
    assert.is_true(inner:cancelled())
  end)

  it("a result ready at the timeout's step is returned, not lost", function()
    local f = aio.Future()
    local r
    local waiter = aio.spawn(function() r = table.pack(pcall(aio.wait_for, f, 0.05)) end)
    settle()
    -- complete it and let the deadline pass before the waiter runs again
    aio.loop():call_later(0.05, function() if not f:done() then f:set_result("v") end end)
    waiter:await()
    assert.is_true(r[1] == true and r[2] == "v" or aio.errtype(r[2]) == "TimeoutError")
  end)
end)

describe("a delay of 0 or less (as asyncio)", function()
  it("wait_for(fn, 0) raises TimeoutError and fn never runs", function()
    local ran = false
    local e = S.error_of(aio.wait_for, function() ran = true return "fast" end, 0)
    assert.are.equal("TimeoutError", aio.errtype(e))
    aio.sleep(0)
    assert.is_false(ran)
    local t = aio.spawn(function() ran = true return 1 end)
    e = S.error_of(aio.wait_for, t, -1)
    assert.are.equal("TimeoutError", aio.errtype(e))
    assert.is_true(t:cancelled())
    assert.is_false(ran)
  end)

  it("wait_for(x, 0): a done x gives its result; one that catches the cancel too", function()
    local done = aio.spawn(function() return "d", 2 end)
    aio.sleep(0)
    assert.are.same({ "d", 2 }, { aio.wait_for(done, 0) })
    local stubborn = aio.spawn(function() pcall(aio.sleep, 1) return "caught" end)
    aio.sleep(0)
    assert.are.equal("caught", aio.wait_for(stubborn, 0))
  end)

  it("timeout(0): the first wait raises TimeoutError, even aio.sleep(0)", function()
    for _, d in ipairs({ 0, -1 }) do
      local after = false
      local e = S.error_of(aio.timeout, d, function() aio.sleep(0) after = true end)
      assert.are.equal("TimeoutError", aio.errtype(e))
      assert.is_false(after)
    end
    -- a body that never waits is not interrupted, and leaves no cancel behind
    assert.are.equal("nowait", aio.timeout(0, function() return "nowait" end))
    aio.sleep(0)
    assert.are.equal(0, aio.current_task():cancelling())
  end)

  it("a cancel from outside during timeout(0) stays a CancelledError", function()
    local t = aio.spawn(function()
      return aio.timeout(0, function()
        aio.current_task():cancel("outside")
        aio.sleep(1)
      end)
    end)
    local ok, e = pcall(t.await, t)
    assert.is_false(ok)
    assert.are.equal("CancelledError", aio.errtype(e))
  end)
end)

describe("aio.timeout", function()
  it("returns all of fn's results in time; nil delay means no limit", function()
    assert.are.same({ 1, 2 }, { aio.timeout(1, function(a, b) aio.sleep(0.001) return a, b end, 1, 2) })
    assert.are.same({ "x" }, { aio.timeout(nil, function() return "x" end) })
  end)

  it("raises TimeoutError at the deadline and cancels what it waits on", function()
    local log = {}
    local child = aio.spawn(cancellable(log, "child"))
    local e = S.error_of(aio.timeout, 0.02, function() return child:await() end)
    assert.are.equal("TimeoutError", aio.errtype(e))
    assert.is_true(S.wait_until(function() return child:done() end, 1))
    assert.is_true(child:cancelled())
  end)

  it("nests: the inner (shorter) one expires, the outer goes on", function()
    local inner
    local r = aio.timeout(2, function()
      inner = aio.errtype(S.error_of(aio.timeout, 0.02, aio.sleep, 5))
      aio.sleep(0.001)
      return "outer done"
    end)
    assert.are.equal("TimeoutError", inner)
    assert.are.equal("outer done", r)
  end)

  it("nests: the outer (shorter) one expires through the inner", function()
    local inner_saw
    local e = S.error_of(aio.timeout, 0.02, function()
      local ok, ie = pcall(aio.timeout, 5, aio.sleep, 5)
      inner_saw = aio.errtype(ie)
      error(ie, 0)
    end)
    assert.are.equal("TimeoutError", aio.errtype(e))
    assert.are.equal("CancelledError", inner_saw)  -- not the inner's timeout
  end)

  it("a cancel from outside stays a CancelledError", function()
    local t = aio.spawn(function() return aio.timeout(5, aio.sleep, 5) end)
    settle()
    t:cancel("outside")
    local e = S.error_of(t.await, t)
    assert.are.equal("CancelledError", aio.errtype(e))
    assert.are.equal("outside", e.message)
  end)

  it("the task is not left cancelled after an expiry", function()
    pcall(aio.timeout, 0.005, aio.sleep, 1)
    assert.are.equal(0, aio.current_task():cancelling())
    aio.sleep(0.001)  -- no stray cancel
  end)

  it("caught inside: fn may return normally after its expiry", function()
    local r = aio.timeout(0.005, function()
      pcall(aio.sleep, 1)
      return "recovered"
    end)
    assert.are.equal("recovered", r)
  end)

  it("misuse is a string error", function()
    assert.matches("aio.timeout: bad argument #2", S.error_of(aio.timeout, 1, nil))
    assert.matches("aio.timeout: bad argument #1", S.error_of(aio.timeout, "x", aio.sleep))
  end)
end)

describe("aio.shield", function()
  it("mirrors all results", function()
    assert.are.same({ 1, 2 }, { aio.shield(after(0.001, 1, 2)):await() })
  end)

  it("cancelling the shield leaves the inner task running", function()
    local inner = aio.spawn(after(0.03, "inner"))
    local outer = aio.spawn(function() return aio.shield(inner):await() end)
    settle()
    outer:cancel()
    assert.are.equal("CancelledError", aio.errtype(S.error_of(outer.await, outer)))
    assert.is_false(inner:cancelled())
    assert.are.equal("inner", inner:await())
  end)

  it("mirrors an error and a cancel", function()
    local sh = aio.shield(function() error("bad", 0) end)
    assert.are.equal("bad", S.error_of(sh.await, sh))
    local t = aio.spawn(after(1))
    local sh2 = aio.shield(t)
    t:cancel()
    S.error_of(sh2.await, sh2)
    assert.is_true(sh2:cancelled())
  end)

  it("inside wait_for: the timeout cancels only the shield", function()
    local inner = aio.spawn(after(0.05, "done"))
    assert.are.equal("TimeoutError", aio.errtype(S.error_of(aio.wait_for, aio.shield(inner), 0.005)))
    assert.are.equal("done", inner:await())
  end)
end)

describe("aio.taskgroup", function()
  it("a member failing with error(nil) or error(false) re-raises that value", function()
    for _, v in ipairs({ false, "nil" }) do
      local val = v ~= "nil" and v or nil
      local ok, e = pcall(aio.taskgroup, function(tg)
        tg:spawn(function() aio.sleep(0.01) error(val) end)
        aio.sleep(1)
      end)
      assert.is_false(ok)
      assert.are.equal(val, e)  -- not a CancelledError from the group's cancel
    end
    local ok, e = pcall(aio.taskgroup, function(tg)
      tg:spawn(function() error(nil) end)
      tg:spawn(function() error("two", 0) end)
    end)
    assert.is_false(ok)
    assert.are.equal("TaskGroupError", aio.errtype(e))
    assert.are.equal(2, e.errors.n)
    assert.are.equal("two", e.errors[2])
  end)

  it("waits for all its tasks and returns the body's results", function()
    local got = {}
    local a, b = aio.taskgroup(function(tg)
      local t = tg:spawn(function(x) aio.sleep(0.01) got[#got + 1] = x end, "t1")
      assert.are.equal("aio.Task", getmetatable(t).__name)
      tg:spawn(function() aio.sleep(0.005) got[#got + 1] = "t2" end)
      return "r1", "r2"
    end)
    assert.are.same({ "r1", "r2" }, { a, b })
    assert.are.same({ "t2", "t1" }, got)
  end)

  it("one failure: re-raised unchanged; siblings and body cancelled", function()
    local boom = {}
    local log = {}
    local ok, e = pcall(aio.taskgroup, function(tg)
      tg:spawn(function() aio.sleep(0.01) error(boom) end)
      tg:spawn(cancellable(log, "sib"))
      local ok2, e2 = pcall(aio.sleep, 5)
      log.body = aio.errtype(e2)
      error(e2, 0)
    end)
    assert.is_false(ok)
    assert.are.equal(boom, e)
    assert.are.same({ sib = "CancelledError", body = "CancelledError" }, log)
    assert.are.equal(0, aio.current_task():cancelling())
  end)

  it("several failures become a TaskGroupError listing them in order", function()
    local e = S.error_of(aio.taskgroup, function(tg)
      tg:spawn(function() aio.sleep(0.01) error("second", 0) end)
      tg:spawn(function()
        -- fails again while being cancelled
        pcall(aio.sleep, 5)
        error("third", 0)
      end)
      tg:spawn(function() error("first", 0) end)
    end)
    assert.are.equal("TaskGroupError", aio.errtype(e))
    assert.are.same({ "first", "third" }, e.errors)
  end)

  it("the body's own error is re-raised after the tasks are cancelled", function()
    local log = {}
    local e = S.error_of(aio.taskgroup, function(tg)
      tg:spawn(cancellable(log, "t"))
      aio.sleep(0.001)
      error("body failed", 0)
    end)
    assert.are.equal("body failed", e)
    assert.are.equal("CancelledError", log.t)
  end)

  it("a cancel from outside cancels the tasks and stays CancelledError", function()
    local log = {}
    local runner = aio.spawn(function()
      return aio.taskgroup(function(tg)
        tg:spawn(cancellable(log, "a"))
        tg:spawn(cancellable(log, "b"))
        aio.sleep(5)
      end)
    end)
    settle()
    runner:cancel()
    assert.are.equal("CancelledError", aio.errtype(S.error_of(runner.await, runner)))
    assert.are.same({ a = "CancelledError", b = "CancelledError" }, log)
  end)

  it("a task cancelled on its own is not a failure", function()
    local r = aio.taskgroup(function(tg)
      local t = tg:spawn(after(5))
      tg:spawn(after(0.005))
      aio.sleep(0.001)
      t:cancel()
      return "fine"
    end)
    assert.are.equal("fine", r)
  end)

  it("spawn after the end is a string error", function()
    local saved
    aio.taskgroup(function(tg) saved = tg end)
    assert.matches("aio.taskgroup: spawn: the group is finished",
      S.error_of(saved.spawn, saved, function() end))
  end)

  it("works inside aio.timeout", function()
    local e = S.error_of(aio.timeout, 0.02, aio.taskgroup, function(tg)
      tg:spawn(after(5))
      aio.sleep(5)
    end)
    assert.are.equal("TimeoutError", aio.errtype(e))
  end)
end)

describe("combinator edge cases", function()
  it("as_completed: leaving the loop early detaches it", function()
    local a = aio.spawn(after(0.001, "a"))
    local b = aio.spawn(after(0.01, "b"))
    for x in aio.as_completed({ a, b }) do
      assert.are.equal(a, x)
      break
    end
    assert.are.equal("b", b:await())
    settle()
  end)

  it("wait: first with one already done returns at once", function()
    local f = aio.Future()
    f:set_result(1)
    local slow = aio.spawn(after(5))
    local done, pending = aio.wait({ slow, f }, { return_when = "first" })
    assert.are.same({ f }, done)
    assert.are.same({ slow }, pending)
    slow:cancel()
    pcall(slow.await, slow)
  end)

  it("gather: a future's error is re-raised as is", function()
    local f = aio.Future()
    local e = {}
    aio.spawn(function() aio.sleep(0.001) f:set_error(e) end)
    assert.are.equal(e, S.error_of(aio.gather, f, after(5)))
  end)

  it("wait_for: timeout 0 on a done future returns its results", function()
    local f = aio.Future()
    f:set_result(1, 2)
    assert.are.same({ 1, 2 }, { aio.wait_for(f, 0) })
    local g = aio.Future()
    assert.are.equal("TimeoutError", aio.errtype(S.error_of(aio.wait_for, g, 0)))
    assert.is_true(g:cancelled())
  end)

  it("nested task groups: the inner failure aborts the outer", function()
    local log = {}
    local e = S.error_of(aio.taskgroup, function(outer)
      outer:spawn(cancellable(log, "outer_task"))
      aio.taskgroup(function(inner)
        inner:spawn(function() aio.sleep(0.001) error("inner boom", 0) end)
        inner:spawn(cancellable(log, "inner_task"))
      end)
    end)
    assert.are.equal("inner boom", e)
    assert.are.same({ outer_task = "CancelledError", inner_task = "CancelledError" }, log)
    assert.are.equal(0, aio.current_task():cancelling())
  end)

  it("waiting combinators refuse to run outside a task", function()
    local errs = {}
    local done = aio.Future()
    aio.loop():call_soon(function()
      errs.timeout = select(2, pcall(aio.timeout, 1, function() end))
      errs.gather = select(2, pcall(aio.gather, aio.Future()))
      errs.taskgroup = select(2, pcall(aio.taskgroup, function() end))
      done:set_result()
    end)
    done:await()
    assert.matches("aio.timeout: not inside a task", errs.timeout)
    assert.matches("aio.gather: not inside a task", errs.gather)
    assert.matches("aio.taskgroup: not inside a task", errs.taskgroup)
  end)

  it("where Lua cannot yield, refuse before spawning anything", function()
    local before = #aio.all_tasks()
    local calls = {
      gather = function() aio.gather(function() aio.sleep(5) end) end,
      wait = function() aio.wait({ function() aio.sleep(5) end }) end,
      wait_for = function() aio.wait_for(function() aio.sleep(5) end, 1) end,
      timeout = function() aio.timeout(1, aio.sleep, 5) end,
      taskgroup = function() aio.taskgroup(function(tg) tg:spawn(aio.sleep, 5) end) end,
    }
    for name, call in pairs(calls) do
      local ok, e = pcall(table.sort, { 1, 2, 3 }, function(a, b) call() return a < b end)
      assert.is_false(ok)
      assert.matches("aio%." .. name .. ": cannot wait here", e)
      assert.are.equal(before, #aio.all_tasks(), name .. " left a task behind")
    end
  end)
end)
