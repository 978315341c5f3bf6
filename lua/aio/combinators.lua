-- aio.gather, wait, as_completed, wait_for, timeout, shield, taskgroup:
-- asyncio's combinators and structured concurrency, on tasks and futures.
--
-- Cancellation scopes (timeout, taskgroup) cancel the running task with
-- task:cancel() and recognise their own request by counting, as asyncio
-- 3.11 does: a scope that asked for a cancel takes it back with uncancel(),
-- and turns the CancelledError into its own outcome only when no other
-- request is left over from outside.
local core = require "_aio.core"
local errors = require "aio.errors"

local spawn, Future, current_task = core.spawn, core.Future, core.current_task
local yieldable = core.yieldable  -- not coroutine.isyieldable: false in a task
local errtype = core.errtype
local pack, unpack = table.pack, table.unpack
local error, type, select, pcall, getmetatable, rawequal, ipairs =
  error, type, select, pcall, getmetatable, rawequal, ipairs

local M = {}

-- ---------------------------------------------------------------------------
-- helpers

local function is_future(x)
  if type(x) ~= "userdata" then return false end
  local mt = getmetatable(x)
  local name = type(mt) == "table" and mt.__name
  return name == "aio.Task" or name == "aio.Future"
end

local function callable(x)
  if type(x) == "function" then return true end
  local mt = getmetatable(x)
  return type(mt) == "table" and mt.__call ~= nil
end

local function check_awaitable(x, fname, i, level)
  if not (is_future(x) or callable(x)) then
    error(string.format("%s: bad argument #%d (task, future or function "
      .. "expected, got %s)", fname, i, type(x)), level + 1)
  end
end

-- a function spawned as a task (a callable table through a closure:
-- a task's body must be a function)
local function spawn_callable(x)
  if type(x) == "function" then return spawn(x) end
  return spawn(function() return x() end)
end

-- a task or future as is; a function spawned as a task
local function awaitable(x, fname, i)
  check_awaitable(x, fname, i, 3)
  if is_future(x) then return x end
  return spawn_callable(x)
end

-- all of list[1..n] (checked first: a bad one spawns nothing)
-- unique: an object listed twice counts once (wait and as_completed, as
-- asyncio's take set(fs)); returns the futures and how many
local function awaitables(list, n, fname, argn, unique)
  for i = 1, n do check_awaitable(list[i], fname, argn or i, 3) end
  local futs, seen, k = {}, unique and {}, 0
  for i = 1, n do
    local x = list[i]
    if is_future(x) then
      if not (seen and seen[x]) then
        k = k + 1
        futs[k] = x
        if seen then seen[x] = true end
      end
    else
      k = k + 1
      futs[k] = spawn_callable(x)
    end
  end
  return futs, k
end

-- the caller can wait: checked before anything is spawned, so a
-- combinator where Lua cannot yield leaves no task behind
local function check_task(fname)
  local t = current_task()
  if t == nil then error(fname .. ": " .. core.not_in_task, 3) end
  if not yieldable() then error(fname .. ": " .. core.cannot_wait, 3) end
  return t
end

local function check_delay(fname, d, i)
  if type(d) ~= "number" or d ~= d then
    error(string.format("%s: bad argument #%d (number expected, got %s)",
      fname, i, d ~= d and "nan" or type(d)), 3)
  end
  return d
end

local function is_cancel(e) return errtype(e) == "CancelledError" end

local function set_if_pending(f)
  if not f:done() then f:set_result() end
end

-- Wait until f is done without cancelling it when this task is cancelled
-- meanwhile.  Returns the last CancelledError that arrived, or nil.
local function wait_done(f)
  local cancel
  while not f:done() do
    local w = Future()
    local cb = function() set_if_pending(w) end
    f:add_done_callback(cb)
    local ok, e = pcall(w.await, w)
    f:remove_done_callback(cb)
    if not ok then
      if not is_cancel(e) then error(e, 0) end
      cancel = e
    end
  end
  return cancel
end

-- cancel the pending ones of futs[1..n]; wait until all are done.
-- Returns the last CancelledError this task received meanwhile, or nil.
local function cancel_all_and_wait(futs, n, msg)
  local cancel
  for i = 1, n do
    local f = futs[i]
    if not f:done() then f:cancel(msg) end
  end
  for i = 1, n do
    local c = wait_done(futs[i])
    if c then cancel = c end
  end
  return cancel
end

-- mark a failed future's error as seen (no "never retrieved" report)
local function retrieve(f)
  if f:done() and not f:cancelled() then f:error() end
end

-- ---------------------------------------------------------------------------
-- gather

function M.gather(...)
  local n = select("#", ...)
  if n == 0 then return end
  check_task("aio.gather")
  local futs = awaitables({ ... }, n, "aio.gather")
  local waiter = Future()
  local left = n
  local first_failed
  local function on_done(f)
    if f:cancelled() or not pcall(f.result, f) then
      if first_failed == nil then first_failed = f end
      set_if_pending(waiter)
      return
    end
    left = left - 1
    if left == 0 then set_if_pending(waiter) end
  end
  for i = 1, n do
    local f = futs[i]
    if f:done() then on_done(f) else f:add_done_callback(on_done) end
  end
  local ok, err = true, nil
  if not waiter:done() then ok, err = pcall(waiter.await, waiter) end
  for i = 1, n do futs[i]:remove_done_callback(on_done) end
  if not ok then
    -- this task was cancelled: its children go too, with the message, as
    -- asyncio's gathering future passes cancel(msg) on
    local msg = is_cancel(err) and type(err) == "table" and err.message or nil
    local c = cancel_all_and_wait(futs, n, msg)
    for i = 1, n do retrieve(futs[i]) end
    error(c or err, 0)
  end
  if first_failed and first_failed:cancelled() then
    -- a member was cancelled (not this task): its CancelledError is
    -- raised and the others go on, as in asyncio ("to prevent the
    -- cancellation of one submitted Task/Future to cause other
    -- Tasks/Futures to be cancelled"); their errors count as retrieved
    for i = 1, n do
      local f = futs[i]
      if f:done() then retrieve(f) else f:add_done_callback(retrieve) end
    end
    error(select(2, pcall(first_failed.result, first_failed)), 0)
  end
  if first_failed then
    local c = cancel_all_and_wait(futs, n)
    for i = 1, n do retrieve(futs[i]) end
    if c then error(c, 0) end
    error(first_failed:error(), 0)
  end
  local res = {}
  for i = 1, n do res[i] = (futs[i]:result()) end
  return unpack(res, 1, n)
end

-- ---------------------------------------------------------------------------
-- wait, as_completed

local WHEN = { all = true, first = true, error = true }

function M.wait(list, opts)
  if type(list) ~= "table" then
    error("aio.wait: bad argument #1 (table expected, got " .. type(list) .. ")", 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("aio.wait: bad argument #2 (table expected, got " .. type(opts) .. ")", 2)
  end
  local timeout = opts and opts.timeout
  local when = opts and opts.return_when or "all"
  if not WHEN[when] then
    error("aio.wait: bad option return_when (\"all\", \"first\" or \"error\" "
      .. "expected, got " .. tostring(when) .. ")", 2)
  end
  if timeout ~= nil then check_delay("aio.wait", timeout, 2) end
  local n = #list
  if n == 0 then error("aio.wait: bad argument #1 (the list is empty)", 2) end
  check_task("aio.wait")
  local futs
  futs, n = awaitables(list, n, "aio.wait", 1, true)

  local function failed(f) return not f:cancelled() and f:error() ~= nil end
  -- counted, not rescanned: a long list stays linear
  local ndone, stop = 0, false
  for i = 1, n do
    local f = futs[i]
    if f:done() then
      ndone = ndone + 1
      if when == "first" or (when == "error" and failed(f)) then stop = true end
    end
  end
  if ndone == n then stop = true end

  if not stop and timeout ~= 0 then
    local waiter = Future()
    local function on_done(f)
      ndone = ndone + 1
      if ndone == n or when == "first" or (when == "error" and failed(f)) then
        set_if_pending(waiter)
      end
    end
    for i = 1, n do
      if not futs[i]:done() then futs[i]:add_done_callback(on_done) end
    end
    local h
    if timeout then
      h = core.loop():call_later(timeout > 0 and timeout or 0, set_if_pending,
        waiter)
    end
    local ok, err = pcall(waiter.await, waiter)
    if h then h:cancel() end
    for i = 1, n do futs[i]:remove_done_callback(on_done) end
    if not ok then error(err, 0) end
  end
  local done, pending = {}, {}
  for i = 1, n do
    local f = futs[i]
    if f:done() then done[#done + 1] = f else pending[#pending + 1] = f end
  end
  return done, pending
end

-- for x in aio.as_completed(list, {timeout = s}) do ... end: the very
-- tasks and futures, as they complete (already done ones first, in list
-- order).  TimeoutError when the deadline passes before the next one.
function M.as_completed(list, opts)
  if type(list) ~= "table" then
    error("aio.as_completed: bad argument #1 (table expected, got "
      .. type(list) .. ")", 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("aio.as_completed: bad argument #2 (table expected, got " .. type(opts) .. ")", 2)
  end
  local timeout = opts and opts.timeout
  if timeout ~= nil then check_delay("aio.as_completed", timeout, 2) end
  local n = #list
  local futs
  futs, n = awaitables(list, n, "aio.as_completed", 1, true)
  local ready, head, tail = {}, 1, 0
  local remaining = n
  local waiter
  local function on_done(f)
    tail = tail + 1
    ready[tail] = f
    if waiter then set_if_pending(waiter) end
  end
  for i = 1, n do
    local f = futs[i]
    if f:done() then
      tail = tail + 1
      ready[tail] = f
    else
      f:add_done_callback(on_done)
    end
  end
  local deadline = timeout and core.now() + timeout
  local closed = false
  local function close()
    if closed then return end
    closed = true
    for i = 1, n do futs[i]:remove_done_callback(on_done) end
  end
  local function take()
    local f = ready[head]
    ready[head] = nil
    head = head + 1
    remaining = remaining - 1
    if remaining == 0 then close() end
    return f
  end
  local function iter()
    if head <= tail then return take() end
    if remaining == 0 or closed then return nil end
    check_task("aio.as_completed")
    local left = deadline and deadline - core.now()
    if left and left <= 0 then
      close()
      errors.raise("TimeoutError", "aio.as_completed: timed out")
    end
    waiter = Future()
    local h = left and core.loop():call_later(left, set_if_pending, waiter)
    local ok, err = pcall(waiter.await, waiter)
    waiter = nil
    if h then h:cancel() end
    if not ok then close() error(err, 0) end
    if head <= tail then return take() end
    close()
    errors.raise("TimeoutError", "aio.as_completed: timed out")
  end
  -- the fourth value closes the iteration when a for loop is left early
  return iter, nil, nil, setmetatable({}, { __close = close })
end

-- ---------------------------------------------------------------------------
-- timeout, wait_for

-- aio.timeout(delay, fn, ...): fn(...) in this task; at the deadline what it
-- waits on is cancelled and TimeoutError raised.  Scopes nest: each one
-- turns only its own expiry into TimeoutError.
function M.timeout(delay, fn, ...)
  if not callable(fn) then
    error("aio.timeout: bad argument #2 (function expected, got "
      .. type(fn) .. ")", 2)
  end
  if delay == nil then return fn(...) end
  check_delay("aio.timeout", delay, 1)
  local task = check_task("aio.timeout")
  local entry = task:cancelling()
  local expired = false
  local token = errors.new("CancelledError", "aio.timeout expired")
  local function expire()
    expired = true
    task:cancel(token)
  end
  -- a delay of 0 or less has expired already: as asyncio's, the expiry
  -- runs before anything else, so the first wait of fn (even aio.sleep(0))
  -- raises TimeoutError, and fn that never waits is not interrupted
  local loop = core.loop()
  local h = delay > 0 and loop:call_later(delay, expire) or loop:call_soon(expire)
  local res = pack(pcall(fn, ...))
  h:cancel()
  if expired then
    -- take back our request; the CancelledError is ours alone when no
    -- other request is left (asyncio's Timeout.__aexit__)
    if task:uncancel() <= entry and not res[1] and is_cancel(res[2]) then
      errors.raise("TimeoutError", string.format("timed out after %g s", delay))
    end
  end
  if not res[1] then error(res[2], 0) end
  return unpack(res, 2, res.n)
end

local function await_it(f) return f:await() end

-- aio.wait_for(x, timeout): await x; at the timeout cancel it, wait for it
-- to end and raise TimeoutError.  When x has its outcome at that point
-- (it finished in the same step, or caught the cancel and returned), that
-- outcome is given instead: nothing is lost.
function M.wait_for(x, timeout)
  if type(x) == "function" then check_task("aio.wait_for") end  -- before spawning it
  local f = awaitable(x, "aio.wait_for", 1)
  if timeout == nil then return f:await() end
  check_delay("aio.wait_for", timeout, 2)
  if f:done() then return f:result() end
  check_task("aio.wait_for")
  if timeout <= 0 then
    -- expired already (asyncio 3.11's wait_for): cancel x, wait for it to
    -- end, then its result if it caught the cancel and returned, else
    -- TimeoutError; a function spawned here never runs
    f:cancel()
    local c = wait_done(f)
    if c then error(c, 0) end
    if not f:cancelled() then return f:result() end
    retrieve(f)
    errors.raise("TimeoutError", string.format("timed out after %g s", timeout))
  end
  local res = pack(pcall(M.timeout, timeout, await_it, f))
  if res[1] then return unpack(res, 2, res.n) end
  local e = res[2]
  if is_cancel(e) or errtype(e) == "TimeoutError" then
    -- the await cancelled f (a cancel of this task or the timeout): as
    -- asyncio, wait until f has ended
    local c = wait_done(f)
    if c then error(c, 0) end
    if errtype(e) == "TimeoutError" and not f:cancelled() then
      return f:result()
    end
  end
  error(e, 0)
end

-- ---------------------------------------------------------------------------
-- shield

-- a future mirroring x: cancelling it (or the task awaiting it) leaves x
-- running
function M.shield(x)
  local inner = awaitable(x, "aio.shield", 1)
  local outer = Future()
  local function copy()
    if outer:done() then
      retrieve(inner)
      return
    end
    if inner:cancelled() then
      outer:set_error(select(2, pcall(inner.result, inner)))
      return
    end
    local r = pack(pcall(inner.result, inner))
    if r[1] then outer:set_result(unpack(r, 2, r.n))
    else outer:set_error(r[2]) end
  end
  if inner:done() then copy() else inner:add_done_callback(copy) end
  return outer
end

-- ---------------------------------------------------------------------------
-- taskgroup

local TaskGroup = { __name = "aio.TaskGroup" }
TaskGroup.__index = TaskGroup

local function tg_abort(tg)
  if tg._aborting then return end
  tg._aborting = true
  for t in pairs(tg._tasks) do
    if not t:done() then t:cancel() end
  end
end

local function tg_on_done(tg, t)
  tg._tasks[t] = nil
  tg._n = tg._n - 1
  if not t:cancelled() then
    local ok, e = pcall(t.result, t)
    if not ok then
      -- counted: an error value may be nil or false (error(nil))
      tg._nerr = tg._nerr + 1
      tg._errors[tg._nerr] = e
      if not tg._aborting then
        tg_abort(tg)
        if tg._phase == "body" then
          -- cancel the body too; taken back with uncancel() at the end
          tg._parent_cancelled = true
          tg._parent:cancel("aio.taskgroup: a task failed")
        end
      end
    end
  end
  if tg._n == 0 and tg._waiter then set_if_pending(tg._waiter) end
end

function TaskGroup:spawn(fn, ...)
  if getmetatable(self) ~= TaskGroup then
    error("aio.taskgroup: spawn: call it as tg:spawn(fn, ...)", 2)
  end
  if self._phase == "done" then
    error("aio.taskgroup: spawn: the group is finished", 2)
  end
  if self._aborting then
    error("aio.taskgroup: spawn: the group is shutting down", 2)
  end
  if not callable(fn) then
    error("aio.taskgroup: spawn: bad argument #1 (function expected, got "
      .. type(fn) .. ")", 2)
  end
  local t
  if type(fn) == "function" then t = spawn(fn, ...)
  else t = spawn(function(...) return fn(...) end, ...) end  -- a callable table
  self._tasks[t] = true
  self._n = self._n + 1
  t:add_done_callback(self._cb)
  return t
end

function TaskGroup:__tostring()
  return string.format("aio.TaskGroup (%d tasks, %s)", self._n, self._phase)
end

-- aio.taskgroup(fn): fn(tg) runs in this task; tg:spawn starts tasks that
-- cannot outlive the call.  The first failure cancels the others and fn.
function M.taskgroup(fn)
  if not callable(fn) then
    error("aio.taskgroup: bad argument #1 (function expected, got "
      .. type(fn) .. ")", 2)
  end
  local parent = check_task("aio.taskgroup")
  local tg = setmetatable({
    _tasks = {}, _n = 0, _errors = {}, _nerr = 0, _phase = "body", _aborting = false,
    _parent = parent, _parent_cancelled = false,
  }, TaskGroup)
  tg._cb = function(t) tg_on_done(tg, t) end
  local entry = parent:cancelling()
  local res = pack(pcall(fn, tg))
  tg._phase = "joining"
  local cancel  -- a CancelledError this task got
  if not res[1] then
    if is_cancel(res[2]) then
      cancel = res[2]
    else
      tg._nerr = tg._nerr + 1
      tg._errors[tg._nerr] = res[2]
    end
    tg_abort(tg)
  end
  while tg._n > 0 do
    tg._waiter = Future()
    local ok, e = pcall(tg._waiter.await, tg._waiter)
    tg._waiter = nil
    if not ok then
      if not is_cancel(e) then error(e, 0) end
      cancel = e
      tg_abort(tg)
    end
  end
  tg._phase = "done"
  if tg._parent_cancelled then parent:uncancel() end
  local errs, nerr = tg._errors, tg._nerr
  if nerr == 1 then error(errs[1], 0) end
  if nerr > 1 then
    local parts = {}
    for i = 1, nerr do
      parts[i] = tostring(errs[i])
      if errs[i] == nil then errs.n = nerr end  -- a hole: the count goes too
    end
    errors.raise("TaskGroupError", string.format("%d errors in the task group: %s",
      nerr, table.concat(parts, "; ")), { errors = errs })
  end
  -- a CancelledError that was not the group's own goes on
  if cancel and parent:cancelling() > entry then error(cancel, 0) end
  if not res[1] then error(res[2], 0) end
  return unpack(res, 2, res.n)
end

return M
