-- aio.Queue, LifoQueue, PriorityQueue (API.md "Queues"; lua/aio/queue.lua)
local aio = require "aio"
local S = require "support"

local function settle() for _ = 1, 5 do aio.sleep(0) end end

describe("aio.Queue", function()
  it("is FIFO and reports its size", function()
    local q = aio.Queue()
    assert.are.equal(0, q.maxsize)
    assert.is_true(q:empty())
    assert.is_false(q:full())
    for i = 1, 10 do q:put(i) end
    assert.are.equal(10, q:qsize())
    local got = {}
    for i = 1, 10 do got[i] = q:get() end
    assert.are.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, got)
    assert.is_true(q:empty())
  end)

  it("keeps FIFO order across its ring growing and wrapping", function()
    local q = aio.Queue()
    local n, expect = 0, 1
    for round = 1, 50 do
      for _ = 1, round % 7 + 1 do n = n + 1 q:put_nowait(n) end
      for _ = 1, round % 5 do
        if q:empty() then break end
        assert.are.equal(expect, q:get_nowait())
        expect = expect + 1
      end
    end
    while not q:empty() do
      assert.are.equal(expect, q:get_nowait())
      expect = expect + 1
    end
    assert.are.equal(n + 1, expect)
  end)

  it("carries false and tables, refuses nil", function()
    local q = aio.Queue()
    local t = {}
    q:put(false)
    q:put(t)
    assert.are.equal(false, q:get())
    assert.are.equal(t, q:get())
    local e = S.error_of(q.put, q, nil)
    assert.are.equal("string", type(e))
    assert.matches("aio.Queue.put: nil items are refused", e)
    assert.matches("put_nowait: nil", S.error_of(q.put_nowait, q, nil))
    assert.are.equal(0, q:qsize())
  end)

  it("bounded: full(), put_nowait raises QueueFull, put waits", function()
    local q = aio.Queue(2)
    assert.are.equal(2, q.maxsize)
    q:put(1) q:put(2)
    assert.is_true(q:full())
    assert.are.equal("QueueFull", aio.errtype(S.error_of(q.put_nowait, q, 3)))
    local putter = aio.spawn(function() q:put(3) return "put" end)
    settle()
    assert.is_false(putter:done())
    assert.are.equal(1, q:get())
    assert.are.equal("put", aio.wait_for(putter, 1))
    assert.are.same({ 2, 3 }, { q:get(), q:get() })
  end)

  it("get_nowait on an empty queue raises QueueEmpty", function()
    local e = S.error_of(aio.Queue().get_nowait, aio.Queue())
    assert.are.equal("QueueEmpty", aio.errtype(e))
  end)

  it("maxsize: nil or 0 unbounded; a bad one is a string error", function()
    assert.are.equal(0, aio.Queue(0).maxsize)
    assert.is_false(aio.Queue(0):full())
    assert.are.equal(3, aio.Queue(3.0).maxsize)
    assert.matches("aio.Queue: bad argument #1", S.error_of(aio.Queue, "x"))
    assert.matches("aio.Queue: bad argument #1", S.error_of(aio.Queue, 1.5))
  end)

  it("blocked getters are served first come, first served", function()
    local q = aio.Queue()
    local got = {}
    local ts = {}
    for i = 1, 4 do
      ts[i] = aio.spawn(function()
        local v = q:get()
        got[#got + 1] = { i, v }
      end)
    end
    settle()
    for v = 1, 4 do q:put(v * 10) end
    for i = 1, 4 do ts[i]:await() end
    assert.are.same({ { 1, 10 }, { 2, 20 }, { 3, 30 }, { 4, 40 } }, got)
  end)

  it("blocked putters are served in order", function()
    local q = aio.Queue(1)
    q:put(0)
    for i = 1, 3 do aio.spawn(function() q:put(i) end) settle() end
    local got = {}
    for i = 1, 4 do got[i] = q:get() end
    assert.are.same({ 0, 1, 2, 3 }, got)
  end)

  describe("cancellation", function()
    it("a getter cancelled while parked takes nothing", function()
      local q = aio.Queue()
      local g = aio.spawn(function() return q:get() end)
      settle()
      g:cancel()
      q:put("x")
      assert.are.equal("CancelledError", aio.errtype(S.error_of(g.await, g)))
      assert.are.equal(1, q:qsize())
      assert.are.equal("x", q:get())
    end)

    it("a getter woken then cancelled passes the item to the next", function()
      local q = aio.Queue()
      local g1 = aio.spawn(function() return q:get() end)
      local g2 = aio.spawn(function() return q:get() end)
      settle()
      q:put("only")   -- wakes g1
      g1:cancel()     -- before g1 runs
      assert.are.equal("CancelledError", aio.errtype(S.error_of(g1.await, g1)))
      assert.are.equal("only", aio.wait_for(g2, 1))
      assert.are.equal(0, q:qsize())
    end)

    it("a putter cancelled while parked inserts nothing", function()
      local q = aio.Queue(1)
      q:put(1)
      local p = aio.spawn(function() q:put(2) end)
      settle()
      p:cancel()
      settle()
      assert.is_true(p:cancelled())
      assert.are.equal(1, q:get())
      assert.is_true(q:empty())
    end)

    it("a putter woken then cancelled lets the next putter in", function()
      local q = aio.Queue(1)
      q:put(1)
      local p1 = aio.spawn(function() q:put(2) end)
      local p2 = aio.spawn(function() q:put(3) end)
      settle()
      assert.are.equal(1, q:get())  -- wakes p1
      p1:cancel()
      assert.is_true(pcall(aio.wait_for, p2, 1))
      assert.is_true(p1:cancelled())
      assert.are.equal(3, q:get())
      assert.is_true(q:empty())
    end)

    it("a get whose timeout expires at the step the item comes loses nothing", function()
      aio.testing.run(function()
        for _, lua_queue in ipairs({ false, true }) do
          local q = lua_queue and aio.LifoQueue() or aio.Queue()
          aio.loop():call_later(1, function() q:put("x") end)
          local e = S.error_of(aio.timeout, 1, q.get, q)
          assert.are.equal("TimeoutError", aio.errtype(e))
          assert.are.equal(1, q:qsize())
          assert.are.equal("x", q:get())
        end
      end, { autojump = true })
    end)

    it("a put whose timeout expires at the step room is made inserts once", function()
      aio.testing.run(function()
        for _, lua_queue in ipairs({ false, true }) do
          local q = lua_queue and aio.LifoQueue(1) or aio.Queue(1)
          q:put(1)
          aio.loop():call_later(1, function() q:get_nowait() end)
          local ok, e = pcall(aio.timeout, 1, q.put, q, 2)
          if ok then
            assert.are.equal(1, q:qsize())
          else
            assert.are.equal("TimeoutError", aio.errtype(e))
            assert.are.equal(0, q:qsize())
          end
        end
      end, { autojump = true })
    end)

    it("get works inside pcall and inside a coroutine.wrap generator", function()
      local q = aio.Queue()
      aio.spawn(function() aio.sleep(0.01) q:put(1) q:put(2) end)
      local gen = coroutine.wrap(function()
        coroutine.yield(q:get())
        coroutine.yield(q:get())
      end)
      assert.are.same({ true, 1 }, { pcall(gen) })
      assert.are.equal(2, gen())
    end)
  end)

  describe("task_done and join", function()
    it("join waits until every item had its task_done", function()
      local q = aio.Queue()
      q:join()  -- nothing to wait for
      for i = 1, 3 do q:put(i) end
      local seen = {}
      local worker = aio.spawn(function()
        while true do
          local v = q:get()
          aio.sleep(0.001)
          seen[#seen + 1] = v
          q:task_done()
        end
      end)
      aio.wait_for(function() q:join() end, 2)
      assert.are.same({ 1, 2, 3 }, seen)
      worker:cancel()
      pcall(worker.await, worker)
    end)

    it("task_done too often is a string error", function()
      local q = aio.Queue()
      q:put(1)
      q:get()
      q:task_done()
      local e = S.error_of(q.task_done, q)
      assert.are.equal("string", type(e))
      assert.matches("task_done", e)
    end)

    it("a cancelled join does not disturb the others", function()
      local q = aio.Queue()
      q:put(1)
      local j1 = aio.spawn(function() q:join() end)
      local j2 = aio.spawn(function() q:join() return "joined" end)
      settle()
      j1:cancel()
      q:get()
      q:task_done()
      assert.are.equal("joined", aio.wait_for(j2, 1))
      assert.is_true(j1:cancelled())
    end)
  end)

  describe("shutdown", function()
    it("put raises QueueShutDown; get drains then raises", function()
      local q = aio.Queue()
      q:put(1)
      q:shutdown()
      assert.are.equal("QueueShutDown", aio.errtype(S.error_of(q.put, q, 2)))
      assert.are.equal("QueueShutDown", aio.errtype(S.error_of(q.put_nowait, q, 2)))
      assert.are.equal(1, q:get())
      assert.are.equal("QueueShutDown", aio.errtype(S.error_of(q.get, q)))
      assert.are.equal("QueueShutDown", aio.errtype(S.error_of(q.get_nowait, q)))
    end)

    it("wakes blocked getters and putters with QueueShutDown", function()
      local q = aio.Queue(1)
      local e = aio.Queue()
      q:put(1)
      local p = aio.spawn(function() q:put(2) end)
      local g = aio.spawn(function() return e:get() end)
      settle()
      q:shutdown()
      e:shutdown()
      assert.are.equal("QueueShutDown", aio.errtype(S.error_of(aio.wait_for, p, 1)))
      assert.are.equal("QueueShutDown", aio.errtype(S.error_of(aio.wait_for, g, 1)))
      assert.are.equal(1, q:get())
    end)

    it("immediate drops the items and releases join", function()
      local q = aio.Queue()
      for i = 1, 3 do q:put(i) end
      local j = aio.spawn(function() q:join() return "released" end)
      settle()
      q:shutdown(true)
      assert.are.equal(0, q:qsize())
      assert.are.equal("released", aio.wait_for(j, 1))
      assert.are.equal("QueueShutDown", aio.errtype(S.error_of(q.get, q)))
    end)

    it("immediate: join still waits for items already taken", function()
      local q = aio.Queue()
      q:put(1) q:put(2)
      q:get()  -- taken, not done
      q:shutdown(true)
      local j = aio.spawn(function() q:join() return "joined" end)
      settle()
      assert.is_false(j:done())
      q:task_done()
      assert.are.equal("joined", aio.wait_for(j, 1))
    end)
  end)
end)

describe("aio.LifoQueue", function()
  it("is last in, first out, with the common interface", function()
    local q = aio.LifoQueue(3)
    assert.are.equal(3, q.maxsize)
    q:put(1) q:put(2) q:put(3)
    assert.is_true(q:full())
    assert.are.equal("QueueFull", aio.errtype(S.error_of(q.put_nowait, q, 4)))
    assert.are.same({ 3, 2, 1 }, { q:get(), q:get(), q:get() })
    assert.are.equal("QueueEmpty", aio.errtype(S.error_of(q.get_nowait, q)))
    assert.matches("aio.LifoQueue.put: nil", S.error_of(q.put, q, nil))
  end)

  it("a getter waits for a put", function()
    local q = aio.LifoQueue()
    local g = aio.spawn(function() return q:get() end)
    settle()
    q:put("v")
    assert.are.equal("v", aio.wait_for(g, 1))
  end)
end)

-- asyncio's maxsize is a read-only property; an assignment here changed
-- the bound of the Lua queues and not of aio.Queue's
describe("maxsize", function()
  it("is read-only on every kind of queue", function()
    for _, C in ipairs { aio.Queue, aio.LifoQueue, aio.PriorityQueue } do
      local q = C(1)
      assert.matches("queue_spec.lua:%d+: aio%.%a*Queue: field 'maxsize' is read%-only",
        S.error_of(function() q.maxsize = 5 end))
      assert.are.equal(1, q.maxsize)
      q:put_nowait(1)
      assert.is_true(q:full())
      assert.are.equal(0, C().maxsize)
    end
  end)
end)

describe("aio.PriorityQueue", function()
  it("gives the smallest first", function()
    local q = aio.PriorityQueue()
    for _, v in ipairs({ 5, 1, 4, 2, 3, 9, 0, 7, 8, 6 }) do q:put(v) end
    local got = {}
    while not q:empty() do got[#got + 1] = q:get() end
    assert.are.same({ 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 }, got)
  end)

  it("takes a custom less, unbounded with nil maxsize", function()
    local q = aio.PriorityQueue(nil, function(a, b) return a.p > b.p end)
    assert.are.equal(0, q.maxsize)
    for i = 1, 20 do q:put({ p = (i * 7) % 20 }) end
    local last = math.huge
    for _ = 1, 20 do
      local v = q:get()
      assert.is_true(v.p <= last)
      last = v.p
    end
  end)

  -- items equal in order came out in another order than Python's heapq
  -- gives them (python3: asyncio.PriorityQueue of objects ordered by p)
  it("gives items equal in order in the order heapq does", function()
    local q = aio.PriorityQueue(nil, function(a, b) return a.p < b.p end)
    local items = { { 5, "a" }, { 1, "b" }, { 3, "c" }, { 1, "d" }, { 5, "e" }, { 2, "f" },
      { 1, "g" }, { 3, "h" }, { 0, "i" }, { 5, "j" } }
    local function drain()
      local out = {}
      while not q:empty() do local x = q:get_nowait() out[#out + 1] = x.p .. x.n end
      return table.concat(out, " ")
    end
    for _, it in ipairs(items) do q:put({ p = it[1], n = it[2] }) end
    assert.are.equal("0i 1g 1b 1d 2f 3c 3h 5j 5a 5e", drain())
    for _, it in ipairs(items) do
      q:put({ p = it[1], n = it[2] })
      if it[1] == 1 then q:get() end
    end
    assert.are.equal("0i 2f 3c 3h 5e 5a 5j", drain())
  end)

  it("a bad less is a string error", function()
    assert.matches("aio.PriorityQueue: bad argument #2", S.error_of(aio.PriorityQueue, nil, 3))
  end)

  -- as Python's heapq and asyncio: a comparison that raises in a put
  -- leaves the item in the queue, one in a get takes the item it was
  -- getting; none is lost otherwise, none comes out twice
  it("keeps every item when less raises in the middle of a put or a get", function()
    for round = 1, 60 do
      local fail_at, calls = round, 0
      local q = aio.PriorityQueue(nil, function(a, b)
        calls = calls + 1
        if calls == fail_at then error("less failed") end
        return a < b
      end)
      for i = 1, 12 do pcall(q.put, q, (i * 5) % 13) end
      assert.are.equal(12, q:qsize())
      local got, seen, failed = {}, {}, 0
      while not q:empty() do
        local n = q:qsize()
        local ok, v = pcall(q.get_nowait, q)
        if ok then
          assert.are.equal(n - 1, q:qsize())
          assert.is_nil(seen[v], "item " .. tostring(v) .. " twice")
          seen[v] = true
          got[#got + 1] = v
        else  -- the get failed: it took nothing (heapq's loses the top)
          assert.are.equal(n, q:qsize())
          failed = failed + 1
        end
      end
      assert.are.equal(12, #got)
      if fail_at > calls then  -- this round never failed: all, in order
        assert.are.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 }, got)
      end
    end
  end)

  it("bounded, with put waiting and shutdown", function()
    local q = aio.PriorityQueue(1)
    q:put(2)
    local p = aio.spawn(function() q:put(1) end)
    settle()
    assert.are.equal(2, q:get())
    p:await()
    q:shutdown()
    assert.are.equal(1, q:get())
    assert.are.equal("QueueShutDown", aio.errtype(S.error_of(q.get, q)))
  end)
end)

describe("a queue's maxsize", function()
  it("math.huge is no bound, as in asyncio; a fraction is an argument error", function()
    local q = aio.Queue(math.huge)
    assert.are.equal(0, q.maxsize)
    for i = 1, 100 do q:put_nowait(i) end
    assert.is_false(q:full())
    assert.matches("maxsize: an integer expected, got float", S.error_of(aio.Queue, 2.5))
  end)
end)

describe("a PriorityQueue comparison that waits", function()
  it("is the clear 'cannot wait here' error; no item is lost or doubled", function()
    local pq = aio.PriorityQueue(nil, function(a, b) aio.sleep(0) return a < b end)
    pq:put_nowait(1)
    local e = S.error_of(pq.put_nowait, pq, 2)
    assert.matches("cannot wait here", e)
    assert.are.equal(2, pq:qsize())
    -- a __lt metamethod that waits, with the default order
    local mt = { __lt = function(a, b) aio.sleep(0) return a.v < b.v end }
    local q2 = aio.PriorityQueue()
    q2:put_nowait(setmetatable({ v = 1 }, mt))
    assert.matches("cannot wait here", S.error_of(q2.put, q2, setmetatable({ v = 0 }, mt)))
    assert.are.equal(2, q2:qsize())
    -- many tasks at once: each item comes out once
    math.randomseed(7)
    local q3 = aio.PriorityQueue(nil, function(a, b)
      if math.random() < 0.5 then pcall(aio.sleep, 0) end  -- refused, caught
      return a < b
    end)
    local ts = {}
    for i = 1, 40 do ts[#ts + 1] = aio.spawn(function() aio.sleep(0) q3:put_nowait(i) end) end
    local got = {}
    for _ = 1, 40 do ts[#ts + 1] = aio.spawn(function() local v = q3:get() got[#got + 1] = v end) end
    for _, t in ipairs(ts) do aio.wait_for(t, 5) end
    table.sort(got)
    local want = {}
    for i = 1, 40 do want[i] = i end
    assert.are.same(want, got)
  end)
end)

describe("queue ping-pong", function()
  it("passes many messages between two tasks without loss", function()
    local q1, q2 = aio.Queue(1), aio.Queue(1)
    local n = 20000
    local b = aio.spawn(function() for _ = 1, n do q2:put(q1:get() + 1) end end)
    local sum = 0
    for i = 1, n do q1:put(i) sum = sum + q2:get() end
    b:await()
    assert.are.equal(n * (n + 1) // 2 + n, sum)
  end)
end)

describe("a Lua queue's method called without its queue", function()
  for _, c in ipairs({ { aio.LifoQueue, "aio.LifoQueue" },
                       { aio.PriorityQueue, "aio.PriorityQueue" } }) do
    local new, cname = c[1], c[2]
    it(cname .. ": a plain error naming the method, nothing done", function()
      local q = new()
      for _, m in ipairs({ "put", "put_nowait", "get", "get_nowait", "qsize",
                           "empty", "full", "task_done", "join", "shutdown" }) do
        assert.are.equal("bad argument #1 to '" .. cname .. "." .. m .. "' ("
          .. cname .. " expected, got no value)", S.error_of(q[m], nil, 1))
      end
      assert.are.equal("bad argument #1 to '" .. cname .. ".get' (" .. cname
        .. " expected, got aio.Queue)", S.error_of(q.get, aio.Queue()))
      assert.are.equal(0, q:qsize())
      q:put(1)
      assert.are.equal(1, q:get())
    end)
  end
end)
