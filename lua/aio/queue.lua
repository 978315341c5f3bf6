-- aio.Queue, aio.LifoQueue, aio.PriorityQueue: queues between tasks, with
-- asyncio's semantics (Python 3.13: shutdown included).
--
-- The items live in the queue; a blocked get() or put() parks its task on a
-- wait list (_aio.waitq) and re-checks when woken, so a task cancelled after
-- its wake-up never swallows an item: the list hands the wake-up to the next
-- waiter instead.  put/get that do not block allocate nothing.  aio.Queue
-- is in C (src/bindings/queue.c, the same rules); the LIFO and priority
-- queues are here, their functions built per class by methods() with the
-- storage operations as upvalues.
local waitq = require "_aio.waitq"
local cqueue = require "_aio.queue"
local errors = require "aio.errors"

local newwq = waitq.new
local wait, wake, wake_all = waitq.methods.wait, waitq.methods.wake,
  waitq.methods.wake_all
local raise, badself = errors.raise, errors.badself
local error, type, setmetatable = error, type, setmetatable
-- getmetatable(x) == C, but lean: a task about to wait keeps its small stack
local isa = require("_aio.core").isa
local mtype = math.type

local function shut_down()
  raise("QueueShutDown", "the queue is shut down")
end

-- a getter (putter) that was woken but cancelled before it ran passes the
-- wake-up on, when there is still something for the next one to do
local function getter_lost(q)
  if q._n > 0 or q._shutdown then wake(q._getters) end
end

local function putter_lost(q)
  local max = q._max
  if max == 0 or q._n < max or q._shutdown then wake(q._putters) end
end

-- ---------------------------------------------------------------------------
-- storage: push(q, v), pop(q) -> v; each keeps q._n

-- LIFO: a stack
local function lifo_push(q, v)
  local n = q._n + 1
  q._items[n] = v
  q._n = n
end

local function lifo_pop(q)
  local n = q._n
  local items = q._items
  local v = items[n]
  items[n] = nil
  q._n = n - 1
  return v
end

-- priority: a binary min-heap by q._less (nil: the < operator).  Items
-- move by swaps, so a comparison that raises (a bad `less`, values `<`
-- cannot order) leaves every item in the heap: none lost, none twice (the
-- order may be off where it failed).  A get that fails so takes nothing
-- (Python's heappop loses the top item there).
local function heap_push(q, v)
  local items, less = q._items, q._less
  local i = q._n + 1
  items[i] = v
  q._n = i
  while i > 1 do
    local p = i // 2
    local pv = items[p]
    local lt
    if less then lt = less(v, pv) else lt = v < pv end
    if not lt then break end
    items[i], items[p] = pv, v
    i = p
  end
end

-- as heapq.heappop, so that items equal in order come out in the order
-- Python's would: the last item goes to the root, down to a leaf along the
-- smaller children (the right one on a tie), then up while it is smaller
-- than its parent
local function sift(items, n, less)
  local i, c = 1, 2
  while c <= n do
    local r = c + 1
    if r <= n then
      local lt
      if less then lt = less(items[c], items[r]) else lt = items[c] < items[r] end
      if not lt then c = r end
    end
    items[i], items[c] = items[c], items[i]
    i, c = c, 2 * c
  end
  while i > 1 do
    local p = i // 2
    local lt
    if less then lt = less(items[i], items[p]) else lt = items[i] < items[p] end
    if not lt then break end
    items[i], items[p] = items[p], items[i]
    i = p
  end
end

local function heap_pop(q)
  local items, less = q._items, q._less
  local n = q._n
  local top = items[1]
  local last = items[n]
  items[n] = nil
  n = n - 1
  q._n = n
  if n == 0 then return top end
  items[1] = last
  local ok, err = pcall(sift, items, n, less)
  if not ok then  -- a comparison raised: the top item stays in the queue
    items[n + 1] = top
    q._n = n + 1
    error(err, 0)
  end
  return top
end

-- ---------------------------------------------------------------------------
-- the methods of one class

local function methods(name, C, push, pop)
  local M = {}
  local put_name = name .. ".put"
  local put_nowait_name = name .. ".put_nowait"
  -- each method's first step: a plain error when called on something else
  -- (`q.get()` for `q:get()`)
  local function check(q, m)
    if not isa(q, C) then badself(name .. "." .. m, name, q) end
  end

  function M.qsize(q)
    check(q, "qsize")
    return q._n
  end

  function M.empty(q)
    check(q, "empty")
    return q._n == 0
  end

  function M.full(q)
    check(q, "full")
    local max = q._max
    return max > 0 and q._n >= max
  end

  function M.put(q, v)
    check(q, "put")
    if v == nil then error(put_name .. ": nil items are refused", 2) end
    local max = q._max
    if max > 0 then
      while q._n >= max do
        if q._shutdown then shut_down() end
        wait(q._putters)
      end
    end
    if q._shutdown then shut_down() end
    push(q, v)
    q._unfinished = q._unfinished + 1
    wake(q._getters)
  end

  function M.put_nowait(q, v)
    check(q, "put_nowait")
    if v == nil then error(put_nowait_name .. ": nil items are refused", 2) end
    if q._shutdown then shut_down() end
    local max = q._max
    if max > 0 and q._n >= max then raise("QueueFull", "the queue is full") end
    push(q, v)
    q._unfinished = q._unfinished + 1
    wake(q._getters)
  end

  function M.get(q)
    check(q, "get")
    while q._n == 0 do
      if q._shutdown then shut_down() end
      wait(q._getters)
    end
    local v = pop(q)
    if q._max > 0 then wake(q._putters) end
    return v
  end

  function M.get_nowait(q)
    check(q, "get_nowait")
    if q._n == 0 then
      if q._shutdown then shut_down() end
      raise("QueueEmpty", "the queue is empty")
    end
    local v = pop(q)
    if q._max > 0 then wake(q._putters) end
    return v
  end

  function M.task_done(q)
    check(q, "task_done")
    local u = q._unfinished
    if u <= 0 then
      error(name .. ".task_done: called too many times (more than items taken)", 2)
    end
    u = u - 1
    q._unfinished = u
    if u == 0 then wake_all(q._joiners) end
  end

  -- wait until every item put has had its task_done(); as an asyncio.Event,
  -- a join woken by the count reaching zero returns even if more came since
  function M.join(q)
    check(q, "join")
    if q._unfinished > 0 then wait(q._joiners) end
  end

  -- no more put(); get() drains what is left, then raises QueueShutDown;
  -- immediate: drop the items too (join then waits only for task_done of
  -- items already taken)
  function M.shutdown(q, immediate)
    check(q, "shutdown")
    q._shutdown = true
    if immediate then
      while q._n > 0 do
        pop(q)
        if q._unfinished > 0 then q._unfinished = q._unfinished - 1 end
      end
      if q._unfinished == 0 then wake_all(q._joiners) end
    end
    wake_all(q._getters)
    wake_all(q._putters)
  end

  return M
end

-- maxsize is read-only, as asyncio's property (an assignment changed the
-- bound of some queues and not others)
local function readonly_max(name)
  return function(q, k, v)
    if k == "maxsize" then error(name .. ": field 'maxsize' is read-only", 2) end
    rawset(q, k, v)
  end
end

local function class(name, push, pop)
  local C = { __name = name }
  local M = methods(name, C, push, pop)
  C.__index = function(q, k)
    if k == "maxsize" then return rawget(q, "_max") end
    return M[k]
  end
  C.__newindex = readonly_max(name)
  C.__tostring = function(q)
    return string.format("%s (%d items, maxsize %d%s)", name, q._n, q._max,
      q._shutdown and ", shut down" or "")
  end
  return C
end

local LifoQueue = class("aio.LifoQueue", lifo_push, lifo_pop)
-- A comparison (a `less`, or a __lt metamethod) may not wait: the heap
-- would be half reordered while other tasks use it (items lost or seen
-- twice).  As in table.sort's comparator, a wait there raises aio's
-- "cannot wait here" error.
local noyield = require("_aio.core").noyield
local function heap_push_ny(q, v) return noyield(heap_push, q, v) end
local function heap_pop_ny(q) return noyield(heap_pop, q) end

local PriorityQueue = class("aio.PriorityQueue", heap_push_ny, heap_pop_ny)

local function checkmax(fname, maxsize)
  if maxsize == nil then return 0 end
  if mtype(maxsize) ~= "integer" then
    if maxsize == math.huge then
      maxsize = 0  -- no bound (asyncio's full() is never true then)
    elseif type(maxsize) == "number" and maxsize == maxsize // 1 and math.tointeger(maxsize) then
      maxsize = math.tointeger(maxsize)
    else
      error(string.format("%s: bad argument #1 (maxsize: an integer expected, got %s)",
        fname, mtype(maxsize) or type(maxsize)), 3)
    end
  end
  if maxsize < 0 then maxsize = 0 end  -- as asyncio: <= 0 is unbounded
  return maxsize
end

local function new(C, name, maxsize)
  local q = setmetatable({
    _max = maxsize, _n = 0, _unfinished = 0, _shutdown = false,
  }, C)
  q._getters = newwq(name .. ".get", getter_lost, q)
  q._putters = newwq(name .. ".put", putter_lost, q)
  q._joiners = newwq(name .. ".join")
  return q
end

local M = {}

-- the FIFO queue is in C (src/bindings/queue.c): its methods are closures
-- stored in the object itself
local Queue = {
  __name = "aio.Queue",
  __tostring = function(q)
    return string.format("aio.Queue (%d items, maxsize %d%s)", q:qsize(),
      q._max, q:_is_shutdown() and ", shut down" or "")
  end,
  -- (the methods are fields of the object: only maxsize comes from here)
  __index = function(q, k) if k == "maxsize" then return rawget(q, "_max") end end,
  __newindex = readonly_max("aio.Queue"),
}

function M.Queue(maxsize)
  maxsize = checkmax("aio.Queue", maxsize)
  local q = setmetatable({ _max = maxsize }, Queue)
  cqueue.fifo(q, maxsize)
  return q
end

function M.LifoQueue(maxsize)
  local q = new(LifoQueue, "aio.LifoQueue", checkmax("aio.LifoQueue", maxsize))
  q._items = {}
  return q
end

function M.PriorityQueue(maxsize, less)
  if less ~= nil and type(less) ~= "function" then
    local mt = getmetatable(less)
    if not (mt and mt.__call) then
      error("aio.PriorityQueue: bad argument #2 (less: a function expected, got "
        .. type(less) .. ")", 2)
    end
  end
  local q = new(PriorityQueue, "aio.PriorityQueue",
    checkmax("aio.PriorityQueue", maxsize))
  q._items = {}
  q._less = less
  return q
end

return M
