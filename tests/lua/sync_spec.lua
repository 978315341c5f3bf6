-- Lock, Event, Condition, Semaphore, BoundedSemaphore, Barrier
-- (API.md "Synchronisation"; lua/aio/sync.lua)
local aio = require "aio"
local S = require "support"

local function settle() for _ = 1, 5 do aio.sleep(0) end end

local function cancel_and_wait(t)
  t:cancel()
  return S.error_of(t.await, t)
end

describe("aio.Lock", function()
  it("acquire, release, locked", function()
    local lock = aio.Lock()
    assert.is_false(lock:locked())
    assert.is_true(lock:acquire())
    assert.is_true(lock:locked())
    lock:release()
    assert.is_false(lock:locked())
  end)

  it("releasing an unlocked lock is a string error naming the call", function()
    local e = S.error_of(aio.Lock().release, aio.Lock())
    assert.are.equal("string", type(e))
    assert.matches("aio.Lock.release: the lock is not acquired", e)
  end)

  it("is FIFO: waiters in arrival order, a releaser asking again queues", function()
    local lock = aio.Lock()
    lock:acquire()
    local order = {}
    for i = 1, 5 do
      aio.spawn(function()
        lock:acquire()
        order[#order + 1] = i
        aio.sleep(0)
        lock:release()
      end)
      settle()
    end
    lock:release()
    lock:acquire()
    assert.are.same({ 1, 2, 3, 4, 5 }, order)
    lock:release()
  end)

  it("hold() gives a guard that releases on scope exit, by error too", function()
    local lock = aio.Lock()
    local ok, e = pcall(function()
      local g <close> = lock:hold()
      assert.is_true(lock:locked())
      error("inside", 0)
    end)
    assert.is_false(ok)
    assert.are.equal("inside", e)
    assert.is_false(lock:locked())
    do
      local g <close> = lock:hold()
      assert.is_true(lock:locked())
    end
    assert.is_false(lock:locked())
  end)

  it("a task cancelled while waiting never holds it", function()
    local lock = aio.Lock()
    lock:acquire()
    local t = aio.spawn(function() lock:acquire() return "got it" end)
    settle()
    assert.are.equal("CancelledError", aio.errtype(cancel_and_wait(t)))
    lock:release()
    assert.is_false(lock:locked())
  end)

  it("a waiter woken then cancelled passes the lock on", function()
    local lock = aio.Lock()
    lock:acquire()
    local a = aio.spawn(function() lock:acquire() return "a" end)
    local b = aio.spawn(function() lock:acquire() lock:release() return "b" end)
    settle()
    lock:release()  -- wakes a
    a:cancel()      -- before a runs
    assert.are.equal("CancelledError", aio.errtype(S.error_of(a.await, a)))
    assert.are.equal("b", aio.wait_for(b, 1))
    assert.is_false(lock:locked())
  end)

  it("woken then cancelled with nobody behind: the lock ends up free", function()
    local lock = aio.Lock()
    lock:acquire()
    local a = aio.spawn(function() lock:acquire() end)
    settle()
    lock:release()
    a:cancel()
    S.error_of(a.await, a)
    assert.is_false(lock:locked())
    assert.is_true(lock:acquire())
    lock:release()
  end)

  it("an acquire whose timeout expires at the release's step: never held", function()
    aio.testing.run(function()
      local lock = aio.Lock()
      lock:acquire()
      aio.loop():call_later(1, function() lock:release() end)
      local e = S.error_of(aio.timeout, 1, lock.acquire, lock)
      assert.are.equal("TimeoutError", aio.errtype(e))
      assert.is_false(lock:locked())
    end, { autojump = true })
  end)

  it("a newcomer does not barge past a woken waiter", function()
    local lock = aio.Lock()
    lock:acquire()
    local order = {}
    local a = aio.spawn(function() lock:acquire() order[#order + 1] = "a" lock:release() end)
    settle()
    lock:release()  -- a is woken, not yet running
    assert.is_false(lock:locked())
    local b = aio.spawn(function() lock:acquire() order[#order + 1] = "b" lock:release() end)
    a:await() b:await()
    assert.are.same({ "a", "b" }, order)
  end)

  it("acquire where Lua cannot yield raises a clear error", function()
    local lock = aio.Lock()
    lock:acquire()
    local e = S.error_of(table.sort, { 1, 2, 3 }, function(a, b) lock:acquire() return a < b end)
    assert.matches("cannot wait here", e)
    lock:release()
  end)
end)

describe("aio.Event", function()
  it("set wakes every waiter; is_set, clear", function()
    local ev = aio.Event()
    assert.is_false(ev:is_set())
    local ts = {}
    for i = 1, 3 do ts[i] = aio.spawn(function() return ev:wait() end) end
    settle()
    for i = 1, 3 do assert.is_false(ts[i]:done()) end
    ev:set()
    assert.is_true(ev:is_set())
    for i = 1, 3 do assert.is_true(aio.wait_for(ts[i], 1)) end
    assert.is_true(ev:wait())  -- set: at once
    ev:clear()
    assert.is_false(ev:is_set())
  end)

  it("a woken waiter returns true even if cleared before it ran", function()
    local ev = aio.Event()
    local t = aio.spawn(function() return ev:wait() end)
    settle()
    ev:set()
    ev:clear()
    assert.is_true(aio.wait_for(t, 1))
  end)

  it("a cancelled waiter leaves the others waiting", function()
    local ev = aio.Event()
    local a = aio.spawn(function() return ev:wait() end)
    local b = aio.spawn(function() return ev:wait() end)
    settle()
    assert.are.equal("CancelledError", aio.errtype(cancel_and_wait(a)))
    ev:set()
    assert.is_true(aio.wait_for(b, 1))
  end)
end)

describe("aio.Condition", function()
  it("notify(n) and notify_all wake waiters in FIFO order", function()
    local cond = aio.Condition()
    local woken = {}
    for i = 1, 4 do
      aio.spawn(function()
        local g <close> = cond:hold()
        cond:wait()
        woken[#woken + 1] = i
      end)
      settle()
    end
    do local g <close> = cond:hold() cond:notify() end
    settle()
    assert.are.same({ 1 }, woken)
    do local g <close> = cond:hold() cond:notify(2) end
    settle()
    assert.are.same({ 1, 2, 3 }, woken)
    do local g <close> = cond:hold() cond:notify_all() end
    settle()
    assert.are.same({ 1, 2, 3, 4 }, woken)
    assert.is_false(cond:locked())
  end)

  it("wait_for(pred) returns the predicate's value", function()
    local cond = aio.Condition()
    local box = {}
    local t = aio.spawn(function()
      local g <close> = cond:hold()
      return cond:wait_for(function() return box.v end)
    end)
    settle()
    for i = 1, 3 do
      local g <close> = cond:hold()
      if i == 3 then box.v = "ready" end
      cond:notify_all()
    end
    assert.are.equal("ready", aio.wait_for(t, 1))
  end)

  it("shares a given lock", function()
    local lock = aio.Lock()
    local cond = aio.Condition(lock)
    cond:acquire()
    assert.is_true(lock:locked())
    cond:release()
    assert.is_false(lock:locked())
    assert.matches("aio.Condition: bad argument #1", S.error_of(aio.Condition, {}))
  end)

  it("misuse without the lock is a string error", function()
    local cond = aio.Condition()
    assert.matches("aio.Condition.wait: the lock is not acquired", S.error_of(cond.wait, cond))
    assert.matches("aio.Condition.notify: the lock is not acquired", S.error_of(cond.notify, cond))
    assert.matches("notify_all: the lock is not acquired", S.error_of(cond.notify_all, cond))
    assert.matches("release: the lock is not acquired", S.error_of(cond.release, cond))
  end)

  it("a release that would wrap the integer value is a misuse error", function()
    local sem = aio.Semaphore(math.maxinteger)
    assert.matches("sync_spec.lua:%d+: aio.Semaphore.release: the value would overflow",
      S.error_of(function() sem:release() end))
    sem:acquire()
    sem:release()
    assert.is_false(sem:locked())
  end)

  it("numbers without an integer value are argument errors; notify(math.huge) wakes all", function()
    assert.matches("aio.Semaphore: bad argument #1 %(integer expected, got float%)",
      S.error_of(aio.Semaphore, math.huge))
    assert.matches("aio.Barrier: bad argument #1 %(integer expected, got float%)",
      S.error_of(aio.Barrier, 1e300))
    local cond = aio.Condition()
    local woken = 0
    for _ = 1, 3 do
      aio.spawn(function() local g <close> = cond:hold() cond:wait() woken = woken + 1 end)
    end
    aio.sleep(0)
    cond:acquire()
    cond:notify(math.huge)
    cond:release()
    aio.sleep(0.01)
    assert.are.equal(3, woken)
    assert.matches("integer expected, got float", S.error_of(function()
      local g <close> = cond:hold() cond:notify(0.5) end))
  end)

  it("wait_for names itself and the caller's line when the lock is not held", function()
    local cond = aio.Condition()
    local e = S.error_of(cond.wait_for, cond, function() return false end)
    assert.matches("aio.Condition.wait_for: the lock is not acquired", e, 1, true)
    local ok, e2 = pcall(function() local r = cond:wait_for(function() return false end) return r end)
    assert.is_false(ok)
    assert.matches("^sync_spec.lua:%d+: aio.Condition.wait_for", e2:gsub("^.*/", ""))
    -- a predicate already true needs no lock, as asyncio
    assert.are.equal("yes", cond:wait_for(function() return "yes" end))
    -- a callable table is a predicate; anything else is a bad argument
    local calls = 0
    local callable = setmetatable({}, { __call = function() calls = calls + 1 return calls end })
    assert.are.equal(1, cond:wait_for(callable))
    assert.matches("wait_for: bad argument #1 %(function expected, got nil%)",
      S.error_of(cond.wait_for, cond))
  end)

  it("a waiter cancelled holds the lock again before it sees the error", function()
    local cond = aio.Condition()
    local held_at_error
    local t = aio.spawn(function()
      cond:acquire()
      local ok, e = pcall(cond.wait, cond)
      held_at_error = cond:locked()
      cond:release()
      error(e, 0)
    end)
    settle()
    cond:acquire()  -- the waiter must queue for the lock after its cancel
    t:cancel()
    settle()
    assert.is_false(t:done())
    cond:release()
    assert.are.equal("CancelledError", aio.errtype(S.error_of(aio.wait_for, t, 1)))
    assert.is_true(held_at_error)
  end)

  it("a waiter notified then cancelled passes the notification on", function()
    local cond = aio.Condition()
    local a = aio.spawn(function() local g <close> = cond:hold() cond:wait() return "a" end)
    local b = aio.spawn(function() local g <close> = cond:hold() cond:wait() return "b" end)
    settle()
    do local g <close> = cond:hold() cond:notify(1) end
    a:cancel()
    assert.are.equal("CancelledError", aio.errtype(S.error_of(aio.wait_for, a, 1)))
    assert.are.equal("b", aio.wait_for(b, 1))
  end)
end)

describe("aio.Semaphore", function()
  it("starts at 1 by default and counts", function()
    local sem = aio.Semaphore()
    assert.is_false(sem:locked())
    sem:acquire()
    assert.is_true(sem:locked())
    sem:release()
    local sem3 = aio.Semaphore(3)
    for _ = 1, 3 do sem3:acquire() end
    assert.is_true(sem3:locked())
    sem3:release() sem3:release() sem3:release()
    sem3:release()  -- a plain semaphore may go above its start
    for _ = 1, 4 do sem3:acquire() end
    assert.is_true(sem3:locked())
  end)

  it("limits concurrency, FIFO", function()
    local sem = aio.Semaphore(2)
    local active, peak, order = 0, 0, {}
    local ts = {}
    for i = 1, 6 do
      ts[i] = aio.spawn(function()
        local g <close> = sem:hold()
        order[#order + 1] = i
        active = active + 1
        if active > peak then peak = active end
        aio.sleep(0.002)
        active = active - 1
      end)
    end
    for i = 1, 6 do ts[i]:await() end
    assert.are.equal(2, peak)
    assert.are.same({ 1, 2, 3, 4, 5, 6 }, order)
    assert.is_false(sem:locked())
  end)

  it("a waiter woken then cancelled gives its unit back", function()
    local sem = aio.Semaphore(1)
    sem:acquire()
    local a = aio.spawn(function() sem:acquire() end)
    local b = aio.spawn(function() sem:acquire() return "b" end)
    settle()
    sem:release()  -- a gets the unit
    a:cancel()
    assert.are.equal("CancelledError", aio.errtype(S.error_of(a.await, a)))
    assert.are.equal("b", aio.wait_for(b, 1))
    assert.is_true(sem:locked())
    sem:release()
    assert.is_false(sem:locked())
  end)

  it("a waiter cancelled while parked takes no unit", function()
    local sem = aio.Semaphore(0)
    local a = aio.spawn(function() sem:acquire() end)
    settle()
    cancel_and_wait(a)
    sem:release()
    assert.is_false(sem:locked())
  end)

  it("a bad start value is a string error", function()
    assert.matches("aio.Semaphore: bad argument #1", S.error_of(aio.Semaphore, -1))
    assert.matches("aio.Semaphore: bad argument #1", S.error_of(aio.Semaphore, "x"))
  end)
end)

describe("aio.BoundedSemaphore", function()
  it("starts at 1; releasing too often is a string error", function()
    local sem = aio.BoundedSemaphore()
    sem:acquire()
    sem:release()
    local e = S.error_of(sem.release, sem)
    assert.are.equal("string", type(e))
    assert.matches("aio.BoundedSemaphore.release: released too many times", e)
    local sem2 = aio.BoundedSemaphore(2)
    do local g <close> = sem2:hold() assert.is_false(sem2:locked()) end
    assert.matches("too many", S.error_of(sem2.release, sem2))
  end)
end)

describe("aio.Barrier", function()
  it("releases all parties together with distinct indices", function()
    local b = aio.Barrier(3)
    assert.are.equal(3, b.parties)
    assert.are.equal(0, b.n_waiting)
    assert.is_false(b.broken)
    local ts = {}
    for i = 1, 3 do
      ts[i] = aio.spawn(function() return b:wait() end)
      if i < 3 then settle() assert.are.equal(i, b.n_waiting) end
    end
    local idx = {}
    for i = 1, 3 do idx[#idx + 1] = aio.wait_for(ts[i], 1) end
    table.sort(idx)
    assert.are.same({ 0, 1, 2 }, idx)
    assert.are.equal(0, b.n_waiting)
  end)

  it("can be used for several rounds", function()
    local b = aio.Barrier(2)
    local log = {}
    local t = aio.spawn(function()
      for r = 1, 3 do b:wait() log[#log + 1] = "t" .. r end
    end)
    for r = 1, 3 do b:wait() log[#log + 1] = "m" .. r end
    t:await()
    assert.are.equal(6, #log)
  end)

  it("abort breaks it: waiters and later callers get BrokenBarrierError", function()
    local b = aio.Barrier(3)
    local t = aio.spawn(function() return b:wait() end)
    settle()
    b:abort()
    assert.is_true(b.broken)
    assert.are.equal("BrokenBarrierError", aio.errtype(S.error_of(aio.wait_for, t, 1)))
    assert.are.equal("BrokenBarrierError", aio.errtype(S.error_of(b.wait, b)))
    b:reset()
    assert.is_false(b.broken)
  end)

  it("reset sends BrokenBarrierError to the waiters, then works again", function()
    local b = aio.Barrier(2)
    local t = aio.spawn(function() return b:wait() end)
    settle()
    b:reset()
    assert.are.equal("BrokenBarrierError", aio.errtype(S.error_of(aio.wait_for, t, 1)))
    local t2 = aio.spawn(function() return b:wait() end)
    local mine = b:wait()
    local theirs = t2:await()
    assert.are.same({ 0, 1 }, { math.min(mine, theirs), math.max(mine, theirs) })
  end)

  it("a cancelled waiter leaves without breaking it", function()
    local b = aio.Barrier(2)
    local t = aio.spawn(function() return b:wait() end)
    settle()
    assert.are.equal(1, b.n_waiting)
    assert.are.equal("CancelledError", aio.errtype(cancel_and_wait(t)))
    assert.are.equal(0, b.n_waiting)
    assert.is_false(b.broken)
    local t2 = aio.spawn(function() return b:wait() end)
    b:wait()
    t2:await()
  end)

  it("one party passes at once with index 0", function()
    assert.are.equal(0, aio.Barrier(1):wait())
  end)

  it("parties, n_waiting and broken are read-only (asyncio's properties)", function()
    local b = aio.Barrier(3)
    for _, k in ipairs({ "parties", "n_waiting", "broken" }) do
      assert.matches("aio%.Barrier: field '" .. k .. "' is read%-only", S.error_of(function() b[k] = 5 end))
    end
    assert.are.equal(3, b.parties)
    assert.are.equal(0, b.n_waiting)
    assert.is_false(b.broken)
    b.note = "mine"  -- other fields are the program's
    assert.are.equal("mine", b.note)
  end)

  it("bad parties is a string error", function()
    assert.matches("aio.Barrier: bad argument #1", S.error_of(aio.Barrier, 0))
    assert.matches("aio.Barrier: bad argument #1", S.error_of(aio.Barrier))
  end)
end)

describe("a method called without its object", function()
  -- lock.acquire() for lock:acquire(): a plain error naming the method,
  -- as the C classes give (luaL_checkudata), not an index error inside
  local cases = {
    { aio.Lock, "aio.Lock", { "acquire", "release", "locked", "hold" } },
    { aio.Event, "aio.Event", { "set", "clear", "is_set", "wait" } },
    { aio.Condition, "aio.Condition",
      { "acquire", "release", "locked", "hold", "wait", "wait_for", "notify",
        "notify_all" } },
    { aio.Semaphore, "aio.Semaphore", { "acquire", "release", "locked", "hold" } },
    { aio.BoundedSemaphore, "aio.Semaphore", { "acquire", "release", "locked", "hold" } },
    { function() return aio.Barrier(2) end, "aio.Barrier", { "wait", "reset", "abort" } },
  }
  for _, c in ipairs(cases) do
    local new, cname, names = c[1], c[2], c[3]
    it(cname .. ": each method names itself", function()
      local obj = new()
      for _, m in ipairs(names) do
        local fname = cname .. "." .. m
        assert.are.equal("bad argument #1 to '" .. fname .. "' (" .. cname
          .. " expected, got no value)", S.error_of(obj[m]))
        assert.are.equal("bad argument #1 to '" .. fname .. "' (" .. cname
          .. " expected, got table)", S.error_of(obj[m], {}))
      end
    end)
  end

  it("the error points where the method was called; another class is named", function()
    local lock, ev = aio.Lock(), aio.Event()
    local msg = S.error_of(function() lock.acquire() end)
    assert.matches("^[^:]+sync_spec%.lua:%d+: bad argument #1 to 'aio%.Lock%.acquire'", msg)
    assert.are.equal("bad argument #1 to 'aio.Lock.locked' (aio.Lock expected, got aio.Event)",
      S.error_of(lock.locked, ev))
    assert.is_false(lock:locked())  -- nothing was done
    -- a Semaphore's methods take a BoundedSemaphore too (shared methods)
    local sem, bsem = aio.Semaphore(0), aio.BoundedSemaphore(1)
    assert.is_true(sem.acquire(bsem))
    assert.is_true(sem:locked())
  end)
end)
