-- aio.Lock, Event, Condition, Semaphore, BoundedSemaphore, Barrier: asyncio's
-- synchronisation primitives, FIFO-fair.  Each parks its waiters on a wait
-- list (_aio.waitq); a wake-up is a signal and the state stays here, so a
-- waiter woken and then cancelled before it runs hands its wake-up on (the
-- list's onlost) and never ends up holding the lock.  hold() acquires and
-- returns a guard for `local g <close> = x:hold()`.
local waitq = require "_aio.waitq"
local errors = require "aio.errors"

local newwq = waitq.new
local W = waitq.methods
local wait, wake, wake_all, idle = W.wait, W.wake, W.wake_all, W.idle
local error, setmetatable, getmetatable, type = error, setmetatable,
  getmetatable, type
local pcall, mtype = pcall, math.type
local badself = errors.badself
-- getmetatable(x) == C, but lean: a task about to wait keeps its small stack
local isa = require("_aio.core").isa

local M = {}

-- one guard per object: closing it releases once, so one suffices even for
-- a semaphore held several times
local function guard_of(obj)
  local g = obj._guard
  if g == nil then
    g = setmetatable({}, { __close = function() obj:release() end,
                           __name = "aio.guard" })
    obj._guard = g
  end
  return g
end

local function class(name)
  local methods = {}
  local C = { __name = name, __index = methods }
  return C, methods
end

-- each method's first step: a plain error when called on something else
-- (`lock.acquire()` for `lock:acquire()`)
local function check(obj, C, fname)
  if not isa(obj, C) then badself(fname, C.__name, obj) end
end

-- ---------------------------------------------------------------------------
-- Lock

local Lock, LockM = class("aio.Lock")

-- asyncio: the woken waiter takes the lock when it runs; one cancelled in
-- between wakes the next, unless someone took the lock meanwhile
local function lock_lost(lock)
  if not lock._locked then wake(lock._w) end
end

function M.Lock()
  local lock = setmetatable({ _locked = false }, Lock)
  lock._w = newwq("aio.Lock.acquire", lock_lost, lock)
  return lock
end

function LockM.acquire(lock)
  check(lock, Lock, "aio.Lock.acquire")
  -- FIFO: newcomers queue behind waiters, woken ones included
  if not lock._locked and idle(lock._w) then
    lock._locked = true
    return true
  end
  wait(lock._w)
  lock._locked = true
  return true
end

function LockM.release(lock)
  check(lock, Lock, "aio.Lock.release")
  if not lock._locked then
    error("aio.Lock.release: the lock is not acquired", 2)
  end
  lock._locked = false
  wake(lock._w)
end

function LockM.locked(lock)
  check(lock, Lock, "aio.Lock.locked")
  return lock._locked
end

function LockM.hold(lock)
  check(lock, Lock, "aio.Lock.hold")
  lock:acquire()
  return guard_of(lock)
end

function Lock.__tostring(lock)
  local parked = lock._w:count()
  return string.format("aio.Lock (%s, %d waiting)",
    lock._locked and "locked" or "unlocked", parked)
end

-- ---------------------------------------------------------------------------
-- Event

local Event, EventM = class("aio.Event")

function M.Event()
  local ev = setmetatable({ _value = false }, Event)
  ev._w = newwq("aio.Event.wait")
  return ev
end

function EventM.set(ev)
  check(ev, Event, "aio.Event.set")
  if not ev._value then
    ev._value = true
    wake_all(ev._w)
  end
end

function EventM.clear(ev)
  check(ev, Event, "aio.Event.clear")
  ev._value = false
end

function EventM.is_set(ev)
  check(ev, Event, "aio.Event.is_set")
  return ev._value
end

-- as asyncio: a waiter woken by set() returns true even if the event was
-- cleared before it ran
function EventM.wait(ev)
  check(ev, Event, "aio.Event.wait")
  if ev._value then return true end
  wait(ev._w)
  return true
end

function Event.__tostring(ev)
  return string.format("aio.Event (%s)", ev._value and "set" or "unset")
end

-- ---------------------------------------------------------------------------
-- Condition

local Condition, CondM = class("aio.Condition")

-- a waiter notified and cancelled before it ran passes the notification on
local function cond_lost(cond) wake(cond._w) end

function M.Condition(lock)
  if lock == nil then
    lock = M.Lock()
  elseif getmetatable(lock) ~= Lock then
    error("aio.Condition: bad argument #1 (aio.Lock expected, got "
      .. type(lock) .. ")", 2)
  end
  local cond = setmetatable({ _lock = lock }, Condition)
  cond._w = newwq("aio.Condition.wait", cond_lost, cond)
  return cond
end

function CondM.acquire(cond)
  check(cond, Condition, "aio.Condition.acquire")
  return cond._lock:acquire()
end

function CondM.release(cond)
  check(cond, Condition, "aio.Condition.release")
  local lock = cond._lock
  if not lock._locked then
    error("aio.Condition.release: the lock is not acquired", 2)
  end
  return lock:release()
end

function CondM.locked(cond)
  check(cond, Condition, "aio.Condition.locked")
  return cond._lock._locked
end

function CondM.hold(cond)
  check(cond, Condition, "aio.Condition.hold")
  cond._lock:acquire()
  return guard_of(cond)
end

-- release the lock, wait for a notify, take the lock again -- also when
-- cancelled, as asyncio: the caller holds the lock whatever happens
function CondM.wait(cond)
  check(cond, Condition, "aio.Condition.wait")
  local lock = cond._lock
  if not lock._locked then
    error("aio.Condition.wait: the lock is not acquired", 2)
  end
  lock:release()
  local ok, err = pcall(wait, cond._w)
  local notified = ok
  while true do
    local ok2, err2 = pcall(lock.acquire, lock)
    if ok2 then break end
    if errors.errtype(err2) ~= "CancelledError" then
      -- not expected; the lock is not held: give up the wait with it
      if notified then wake(cond._w) end
      error(err2, 0)
    end
    ok, err = false, err2  -- the most recent cancellation wins
  end
  if not ok then
    -- notified, but leaving with an error: another waiter gets the turn
    if notified then wake(cond._w) end
    error(err, 0)
  end
  return true
end

function CondM.wait_for(cond, pred)
  check(cond, Condition, "aio.Condition.wait_for")
  local mt = getmetatable(pred)
  if type(pred) ~= "function" and not (type(mt) == "table" and mt.__call) then
    error("aio.Condition.wait_for: bad argument #1 (function expected, got "
      .. type(pred) .. ")", 2)
  end
  local r = pred()
  while not r do
    -- as asyncio, a true predicate needs no lock; a wait does
    if not cond._lock._locked then
      error("aio.Condition.wait_for: the lock is not acquired", 2)
    end
    cond:wait()
    r = pred()
  end
  return r
end

function CondM.notify(cond, n)
  check(cond, Condition, "aio.Condition.notify")
  if not cond._lock._locked then
    error("aio.Condition.notify: the lock is not acquired", 2)
  end
  if n == nil then n = 1
  elseif mtype(n) ~= "integer" then
    if n == math.huge then n = math.maxinteger  -- all of them
    elseif type(n) == "number" and n == n // 1 and math.tointeger(n) then
      n = math.tointeger(n)
    else error("aio.Condition.notify: bad argument #1 (integer expected, got "
      .. (mtype(n) or type(n)) .. ")", 2) end
  end
  if n > 0 then wake(cond._w, n) end
end

function CondM.notify_all(cond)
  check(cond, Condition, "aio.Condition.notify_all")
  if not cond._lock._locked then
    error("aio.Condition.notify_all: the lock is not acquired", 2)
  end
  wake_all(cond._w)
end

function Condition.__tostring(cond)
  return string.format("aio.Condition (%s, %d waiting)",
    cond._lock._locked and "locked" or "unlocked", (cond._w:count()))
end

-- ---------------------------------------------------------------------------
-- Semaphore, BoundedSemaphore

local Semaphore, SemM = class("aio.Semaphore")
local BoundedSemaphore = { __name = "aio.BoundedSemaphore" }
local BSemM = setmetatable({}, { __index = SemM })
BoundedSemaphore.__index = BSemM

-- hand free units to parked waiters, first come first (asyncio: a unit is
-- taken for the waiter when it is woken)
local function sem_wake(sem)
  while sem._value > 0 and wake(sem._w) > 0 do
    sem._value = sem._value - 1
  end
end

-- woken with a unit, cancelled before running: give the unit back
local function sem_lost(sem)
  sem._value = sem._value + 1
  sem_wake(sem)
end

local function checksem(sem, m)
  if not isa(sem, Semaphore) and not isa(sem, BoundedSemaphore) then
    badself("aio.Semaphore." .. m, "aio.Semaphore", sem)
  end
end

local function checkvalue(fname, n)
  if n == nil then return 1 end
  if mtype(n) ~= "integer" then
    if type(n) == "number" and n == n // 1 and math.tointeger(n) then
      n = math.tointeger(n)
    else error(fname .. ": bad argument #1 (integer expected, got "
      .. (mtype(n) or type(n)) .. ")", 3) end
  end
  if n < 0 then error(fname .. ": bad argument #1 (value must be >= 0)", 3) end
  return n
end

function M.Semaphore(n)
  local sem = setmetatable({ _value = checkvalue("aio.Semaphore", n) }, Semaphore)
  sem._w = newwq("aio.Semaphore.acquire", sem_lost, sem)
  return sem
end

function M.BoundedSemaphore(n)
  n = checkvalue("aio.BoundedSemaphore", n)
  local sem = setmetatable({ _value = n, _bound = n }, BoundedSemaphore)
  sem._w = newwq("aio.BoundedSemaphore.acquire", sem_lost, sem)
  return sem
end

-- true when acquire() would wait (no unit, or others are first in line)
function SemM.locked(sem)
  checksem(sem, "locked")
  return sem._value == 0 or not idle(sem._w)
end

function SemM.acquire(sem)
  checksem(sem, "acquire")
  if sem._value > 0 and idle(sem._w) then
    sem._value = sem._value - 1
    return true
  end
  wait(sem._w)  -- woken with a unit already taken for us
  sem_wake(sem)  -- units freed meanwhile go to those queued behind
  return true
end

function SemM.release(sem)
  checksem(sem, "release")
  if sem._value == math.maxinteger then  -- Lua integers wrap; Python's do not
    error("aio.Semaphore.release: the value would overflow", 2)
  end
  sem._value = sem._value + 1
  sem_wake(sem)
end

function BSemM.release(sem)
  checksem(sem, "release")
  if sem._value >= sem._bound then
    error("aio.BoundedSemaphore.release: released too many times", 2)
  end
  sem._value = sem._value + 1
  sem_wake(sem)
end

function SemM.hold(sem)
  checksem(sem, "hold")
  sem:acquire()
  return guard_of(sem)
end

function Semaphore.__tostring(sem)
  return string.format("aio.Semaphore (value %d)", sem._value)
end
BoundedSemaphore.__tostring = function(sem)
  return string.format("aio.BoundedSemaphore (value %d of %d)", sem._value,
    sem._bound)
end

-- ---------------------------------------------------------------------------
-- Barrier (asyncio's state machine; reset and abort never wait)

local FILLING, DRAINING, RESETTING, BROKEN = 1, 2, 3, 4

local BarrierM = {}
local Barrier = { __name = "aio.Barrier" }

function Barrier.__index(b, k)
  if k == "parties" then
    return b._parties
  elseif k == "n_waiting" then
    return b._state == FILLING and b._count or 0
  elseif k == "broken" then
    return b._state == BROKEN
  end
  return BarrierM[k]
end

-- parties, n_waiting and broken are read-only, as asyncio's properties
local READONLY = { parties = true, n_waiting = true, broken = true }
function Barrier.__newindex(b, k, v)
  if READONLY[k] then
    error("aio.Barrier: field '" .. k .. "' is read-only", 2)
  end
  rawset(b, k, v)
end

function M.Barrier(parties)
  if mtype(parties) ~= "integer" then
    if type(parties) == "number" and parties == parties // 1 and math.tointeger(parties) then
      parties = math.tointeger(parties)
    else
      error("aio.Barrier: bad argument #1 (integer expected, got "
        .. (mtype(parties) or type(parties)) .. ")", 2)
    end
  end
  if parties < 1 then
    error("aio.Barrier: bad argument #1 (parties must be >= 1)", 2)
  end
  local b = setmetatable({ _parties = parties, _state = FILLING, _count = 0 },
    Barrier)
  b._w = newwq("aio.Barrier.wait")
  return b
end

local function broken_error(msg)
  errors.raise("BrokenBarrierError", msg)
end

-- the part of wait() after the task was counted in
local function barrier_pass(b, index)
  if index + 1 == b._parties then
    b._state = DRAINING  -- the last one in releases the others
    wake_all(b._w)
    return
  end
  while b._state == FILLING do wait(b._w) end
  if b._state == BROKEN or b._state == RESETTING then
    broken_error("the barrier was aborted or reset")
  end
end

function BarrierM.wait(b)
  check(b, Barrier, "aio.Barrier.wait")
  -- wait while the barrier drains or resets
  while b._state == DRAINING or b._state == RESETTING do wait(b._w) end
  if b._state == BROKEN then broken_error("the barrier is broken") end
  local index = b._count
  b._count = index + 1
  local ok, err = pcall(barrier_pass, b, index)
  b._count = b._count - 1
  if b._count == 0 then  -- the last one out lets the next round in
    if b._state == RESETTING or b._state == DRAINING then b._state = FILLING end
    wake_all(b._w)
  end
  if not ok then error(err, 0) end
  return index
end

function BarrierM.reset(b)
  check(b, Barrier, "aio.Barrier.reset")
  if b._count > 0 then
    b._state = RESETTING
  else
    b._state = FILLING
  end
  wake_all(b._w)
end

function BarrierM.abort(b)
  check(b, Barrier, "aio.Barrier.abort")
  b._state = BROKEN
  wake_all(b._w)
end

function Barrier.__tostring(b)
  local names = { "filling", "draining", "resetting", "broken" }
  return string.format("aio.Barrier (%s, %d/%d waiting)", names[b._state],
    b.n_waiting, b.parties)
end

return M
