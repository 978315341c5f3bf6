-- tasks and futures (API.md "Tasks and futures"); the scheduler in C
local aio = require "aio"
local S = require "support"

-- the aiolua program, for the specs that run a script in a process of its
-- own (under wine, the Windows build)
local BIN = package.config:sub(1, 1) == "\\" and "build\\win\\aiolua.exe"
  or os.getenv("AIOLUA_BIN") or "./aiolua"

describe("aio.spawn and task:await", function()
  it("passes arguments and returns every result, nils included", function()
    local t = aio.spawn(function(a, b) aio.sleep(0.001) return a + b, nil, "x", nil end, 1, 2)
    local r = table.pack(t:await())
    assert.are.equal(4, r.n)
    assert.are.same({ 3, nil, "x", nil }, { r[1], r[2], r[3], r[4] })
    assert.is_true(t:done())
    assert.are.equal(3, (t:await()))  -- again, at once
  end)

  it("starts tasks on the next loop step, in spawn order", function()
    local order = {}
    local a = aio.spawn(function() order[#order + 1] = "a" end)
    local b = aio.spawn(function() order[#order + 1] = "b" end)
    assert.are.same({}, order)
    a:await() b:await()
    assert.are.same({ "a", "b" }, order)
  end)

  it("re-raises the task's error value itself", function()
    local boom = setmetatable({}, { __tostring = function() return "boom" end })
    local t = aio.spawn(function() aio.sleep(0) error(boom) end)
    local ok, e = pcall(t.await, t)
    assert.is_false(ok)
    assert.are.equal(boom, e)
    assert.are.equal(boom, t:error())
    assert.is_false(t:cancelled())
    assert.matches("traceback", t:traceback())
  end)

  it("keeps string errors with their position", function()
    local t = aio.spawn(function() error("bad thing") end)
    local e = S.error_of(t.await, t)
    assert.matches("task_spec.lua:%d+: bad thing", e)
  end)

  it("result() before the end raises InvalidStateError", function()
    local t = aio.spawn(function() aio.sleep(0.01) return 5 end)
    assert.are.equal("InvalidStateError", aio.errtype(S.error_of(t.result, t)))
    assert.are.equal("InvalidStateError", aio.errtype(S.error_of(t.error, t)))
    t:await()
    assert.are.equal(5, t:result())
    assert.is_nil(t:error())
  end)

  it("refuses a task awaiting itself", function()
    local t
    t = aio.spawn(function() return pcall(function() return t:await() end) end)
    local ok, e = t:await()
    assert.is_false(ok)
    assert.matches("cannot await itself", e)
  end)

  it("names tasks Task-N and lets the name be changed", function()
    local t = aio.spawn(function() end)
    assert.matches("^Task%-%d+$", t.name)
    t.name = "worker"
    assert.are.equal("worker", t.name)
    assert.matches("worker", tostring(t))
    t:await()
  end)

  it("current_task and all_tasks", function()
    local main = aio.current_task()
    assert.is_not_nil(main)
    local inner
    local t = aio.spawn(function() inner = aio.current_task() aio.sleep(0.01) end)
    aio.sleep(0)
    assert.are.equal(t, inner)
    local all = aio.all_tasks()
    local seen = {}
    for _, x in ipairs(all) do seen[x] = true end
    assert.is_true(seen[main] and seen[t])
    t:await()
    for _, x in ipairs(aio.all_tasks()) do assert.are_not.equal(t, x) end
  end)

  it("rejects a non-function", function()
    assert.has_error(function() aio.spawn(42) end)
  end)
end)

describe("cancellation", function()
  -- asyncio: the first request cancels the waiter with its message; a
  -- later one before the task ran again does not change it
  it("keeps the first message when cancelled twice before it runs", function()
    local t = aio.spawn(aio.sleep, 10)
    aio.sleep(0)
    assert.is_true(t:cancel("one"))
    assert.is_true(t:cancel("two"))
    assert.are.equal("one", S.error_of(t.await, t).message)
    local u = aio.spawn(function() return 1 end)
    u:cancel("before it started")
    u:cancel("again")
    assert.are.equal("before it started", S.error_of(u.await, u).message)
    -- once the first has been delivered (and caught), the next has its own
    local v = aio.spawn(function() pcall(aio.sleep, 10) aio.sleep(10) end)
    aio.sleep(0)
    v:cancel("first")
    aio.sleep(0)
    v:cancel("second")
    assert.are.equal("second", S.error_of(v.await, v).message)
  end)

  -- asyncio's Task.cancel cancels the future the task awaits at once; it
  -- used to wait for the task's next run, and in between another task
  -- could complete the future (its other awaiters got the result)
  it("cancels what the task awaits at once, as asyncio", function()
    local f = aio.Future()
    local a1 = aio.spawn(function() return f:await() end)
    local a2 = aio.spawn(function() return f:await() end)
    aio.sleep(0)
    assert.is_true(a1:cancel("stop"))
    assert.is_true(f:cancelled())
    assert.are.equal("InvalidStateError", aio.errtype(S.error_of(f.set_result, f, "x")))
    assert.are.equal("stop", S.error_of(a1.await, a1).message)
    assert.are.equal("stop", S.error_of(a2.await, a2).message)
    -- awaiting a task: the request goes to it at once
    local inner = aio.spawn(aio.sleep, 10)
    local outer = aio.spawn(function() return inner:await() end)
    aio.sleep(0)
    outer:cancel("down")
    assert.are.equal(1, inner:cancelling())
    assert.is_false(inner:done())
    assert.are.equal("down", S.error_of(outer.await, outer).message)
    assert.is_true(inner:cancelled())
    -- from inside a coroutine.wrap generator the task runs
    local g = aio.Future()
    local gen = aio.spawn(function()
      return coroutine.wrap(function() return g:await() end)()
    end)
    aio.sleep(0)
    gen:cancel()
    assert.is_true(g:cancelled())
    assert.are.equal("CancelledError", aio.errtype(S.error_of(gen.await, gen)))
  end)

  -- under a stock Lua the message said "not inside a task", which it was
  it("a __close that waits after an uncaught error says why it cannot, in a stock lua5.4", function()
    if package.config:sub(1, 1) == "\\" then return end
    local got, rc = S.script("timeout 10 " .. S.STOCK_LUA, [[
      local aio = require "aio"
      aio.run(function()
        local t = aio.spawn(function()
          local x <close> = setmetatable({}, { __close = function() aio.sleep(0.01) end })
          error("boom")
        end)
        print(select(2, pcall(t.await, t)))
      end)
    ]])
    assert.are.equal(0, rc, got)
    assert.matches("aio.sleep: cannot wait here: a <close> variable closed after an error the task "
      .. "did not catch cannot wait under a stock Lua 5.4", got, 1, true)
  end)

  -- tasks that await each other in a cycle: the cancel went round and
  -- round (a C stack overflow); it now goes round once, and they all end
  it("cancels tasks that await each other in a cycle", function()
    for _, n in ipairs { 2, 3 } do
      local ts = {}
      for i = 1, n do
        ts[i] = aio.spawn(function() aio.sleep(0) return ts[i % n + 1]:await() end)
      end
      aio.sleep(0.01)
      assert.is_true(ts[1]:cancel("round"))
      for _, t in ipairs(ts) do
        assert.are.equal("round", S.error_of(t.await, t).message)
        assert.is_true(t:cancelled())
      end
    end
  end)

  it("cancels down a chain of 20,000 tasks awaiting each other", function()
    local n, ts = 20000, {}
    ts[n] = aio.spawn(aio.sleep, 100)
    for i = n - 1, 1, -1 do
      local nxt = ts[i + 1]
      ts[i] = aio.spawn(function() return nxt:await() end)
    end
    aio.sleep(0.01)
    ts[1]:cancel("down")
    assert.are.equal("down", S.error_of(ts[1].await, ts[1]).message)
    for _, t in ipairs(ts) do assert.is_true(t:cancelled()) end
  end)

  -- asyncio: str(CancelledError(msg)) is str(msg), whatever msg is
  it("makes the message of a non-string msg with tostring", function()
    local named = setmetatable({}, { __tostring = function() return "named" end })
    local bad = setmetatable({}, { __tostring = function() error("no") end })
    local tbl = {}
    for _, c in ipairs {
      { true, "true" }, { 42, "42" }, { named, "named" }, { tbl, tostring(tbl) },
      { bad, "(error object is a table value)" },
    } do
      local t = aio.spawn(aio.sleep, 10)
      aio.sleep(0)
      t:cancel(c[1])
      assert.are.equal(c[2], S.error_of(t.await, t).message)
      local f = aio.Future()
      f:cancel(c[1] ~= bad and c[1] or nil)
      if c[1] ~= bad then assert.are.equal(c[2], S.error_of(f.await, f).message) end
    end
  end)

  it("delivers CancelledError at the wait, with the message", function()
    local seen
    local t = aio.spawn(function()
      local ok, e = pcall(aio.sleep, 10)
      seen = e
      error(e, 0)
    end)
    aio.sleep(0)
    assert.is_true(t:cancel("stop now"))
    local e = S.error_of(t.await, t)
    assert.are.equal("CancelledError", aio.errtype(e))
    assert.are.equal("stop now", e.message)
    assert.are.equal(seen, e)
    assert.is_true(t:cancelled())
    assert.is_false(t:cancel())  -- done already
  end)

  it("never runs the body of a task cancelled before its first step", function()
    local ran = false
    local t = aio.spawn(function() ran = true end)
    t:cancel()
    assert.are.equal("CancelledError", aio.errtype(S.error_of(t.await, t)))
    assert.is_false(ran)
  end)

  it("lets the task clean up, even with waits, and go on if it wants", function()
    local log = {}
    local t = aio.spawn(function()
      local ok = pcall(aio.sleep, 10)
      log[#log + 1] = ok
      aio.sleep(0.001)              -- cleanup that waits
      log[#log + 1] = "cleaned"
      return "survived"
    end)
    aio.sleep(0)
    t:cancel()
    assert.are.equal("survived", t:await())
    assert.are.same({ false, "cleaned" }, log)
    assert.is_false(t:cancelled())
  end)

  it("cancels a task waiting on a future, and the future too", function()
    local f = aio.Future()
    local t = aio.spawn(function() return f:await() end)
    aio.sleep(0)
    t:cancel("m")
    assert.are.equal("CancelledError", aio.errtype(S.error_of(t.await, t)))
    assert.is_true(f:cancelled())
  end)

  it("cancels a task waiting on another task, and that one too", function()
    local inner = aio.spawn(aio.sleep, 10)
    local outer = aio.spawn(function() return inner:await() end)
    aio.sleep(0)
    outer:cancel()
    pcall(outer.await, outer)
    assert.is_true(outer:cancelled())
    assert.are.equal("CancelledError", aio.errtype(S.error_of(inner.await, inner)))
  end)

  it("a cancel of a running task lands at its next wait", function()
    local t
    t = aio.spawn(function()
      t:cancel("self")
      local x = 1 + 1                      -- no wait: goes on
      local ok, e = pcall(aio.sleep, 0)
      return x, ok, aio.errtype(e)
    end)
    assert.are.same({ 2, false, "CancelledError" }, { t:await() })
  end)

  it("a task cancelled after its wake-up still gets the error", function()
    local f = aio.Future()
    local t = aio.spawn(function() return f:await() end)
    aio.sleep(0)
    f:set_result(1)       -- t is ready now
    t:cancel()            -- and cancelled before it runs
    assert.are.equal("CancelledError", aio.errtype(S.error_of(t.await, t)))
  end)

  it("a task that ends without waiting after a cancel ends cancelled", function()
    local t
    t = aio.spawn(function() t:cancel() return 1 end)
    S.error_of(t.await, t)
    assert.is_true(t:cancelled())
  end)

  it("counts cancel requests (cancelling / uncancel)", function()
    local t = aio.spawn(aio.sleep, 1)
    assert.are.equal(0, t:cancelling())
    t:cancel() t:cancel()
    assert.are.equal(2, t:cancelling())
    assert.are.equal(1, t:uncancel())
    pcall(t.await, t)
  end)
end)

describe("cancelling a task that awaits a task (as asyncio)", function()
  it("the awaited task is cancelled, and the awaiting one waits for its cleanup", function()
    local log = {}
    local inner = aio.spawn(function()
      local ok, e = pcall(aio.sleep, 10)
      aio.sleep(0.02)                      -- cleanup that waits
      log[#log + 1] = "inner cleaned up"
      error(e, 0)
    end)
    local outer = aio.spawn(function()
      local ok, e = pcall(inner.await, inner)
      log[#log + 1] = "outer got " .. aio.errtype(e) .. " " .. e.message
      error(e, 0)
    end)
    aio.sleep(0)
    outer:cancel("stop")
    local ok, e = pcall(outer.await, outer)
    assert.is_false(ok)
    assert.are.equal("CancelledError", aio.errtype(e))
    assert.are.equal("stop", e.message)
    assert.are.same({ "inner cleaned up", "outer got CancelledError stop" }, log)
    assert.is_true(inner:cancelled())
    assert.is_true(outer:cancelled())
  end)

  it("takes the value of an awaited task that caught the cancel and returned", function()
    local inner = aio.spawn(function()
      pcall(aio.sleep, 10)
      aio.sleep(0.01)
      return "inner value"
    end)
    local outer = aio.spawn(function() return inner:await(), "outer went on" end)
    aio.sleep(0)
    assert.is_true(outer:cancel())
    assert.are.same({ "inner value", "outer went on" }, { outer:await() })
    assert.is_false(outer:cancelled())
    assert.are.equal(1, outer:cancelling())  -- the request still counts
  end)

  it("aio.timeout around an await waits for the awaited task's cleanup", function()
    local inner = aio.spawn(function()
      local ok, e = pcall(aio.sleep, 10)
      aio.sleep(0.03)
      error(e, 0)
    end)
    local t0 = aio.now()
    local e = S.error_of(aio.timeout, 0.01, inner.await, inner)
    assert.are.equal("TimeoutError", aio.errtype(e))
    assert.is_true(inner:done())
    assert.is_true(aio.now() - t0 >= 0.03)
  end)

  it("a second cancel while it waits for the cleanup goes to the awaited task too", function()
    local seen = 0
    local inner = aio.spawn(function()
      for _ = 1, 2 do
        local ok = pcall(aio.sleep, 10)
        if not ok then seen = seen + 1 end
      end
      return seen
    end)
    local outer = aio.spawn(function() return inner:await() end)
    aio.sleep(0)
    outer:cancel()
    aio.sleep(0.01)
    outer:cancel()
    assert.are.equal(2, aio.wait_for(outer, 1))
    assert.are.equal(2, outer:cancelling())
  end)

  it("a future awaited is cancelled at once, as asyncio's", function()
    local f = aio.Future()
    local t = aio.spawn(function() return f:await() end)
    aio.sleep(0)
    t:cancel("now")
    local ok, e = pcall(t.await, t)
    assert.is_false(ok)
    assert.are.equal("now", e.message)
    assert.is_true(f:cancelled())
  end)
end)

describe("to-be-closed variables", function()
  local function closer(log, name)
    return setmetatable({}, { __close = function(_, e) log[#log + 1] = name end })
  end

  it("are closed when the task returns, raises or is cancelled", function()
    local log = {}
    aio.spawn(function() local a <close> = closer(log, "ret") aio.sleep(0) end):await()
    local e = aio.spawn(function() local a <close> = closer(log, "err") aio.sleep(0) error("x") end)
    pcall(e.await, e)
    local t = aio.spawn(function()
      local a <close> = closer(log, "outer")
      local function inner() local b <close> = closer(log, "inner") aio.sleep(10) end
      inner()
    end)
    aio.sleep(0)
    t:cancel()
    pcall(t.await, t)
    assert.are.same({ "ret", "err", "inner", "outer" }, log)
  end)

  it("an error in __close replaces the task's error", function()
    local t = aio.spawn(function()
      local a <close> = setmetatable({}, { __close = function() error("from close", 0) end })
      error("first", 0)
    end)
    assert.are.equal("from close", S.error_of(t.await, t))
  end)

  -- API.md: waits work inside metamethods; __close is one, and it is where
  -- a task cleans up (asyncio's `finally: await ...`).  On a failure or a
  -- cancel the program's Lua closes them in the task, where it may wait
  -- (src/host/lua_tbc.patch); a stock Lua (aio.so) cannot.
  local function waiting_closer(log, name, delay)
    return setmetatable({}, { __close = function(_, e)
      aio.sleep(delay or 0.001)
      log[#log + 1] = name .. ":" .. (aio.errtype(e) or tostring(e))
    end })
  end

  it("may wait in __close when the task is cancelled, and it still ends cancelled", function()
    local log = {}
    local t = aio.spawn(function()
      local a <close> = waiting_closer(log, "outer")
      local function inner() local b <close> = waiting_closer(log, "inner") aio.sleep(10) end
      inner()
    end)
    aio.sleep(0)
    assert.is_true(t:cancel("stop"))
    local e = S.error_of(t.await, t)
    assert.are.equal("CancelledError", aio.errtype(e))
    assert.are.equal("stop", e.message)
    assert.is_true(t:cancelled())
    assert.are.same({ "inner:CancelledError", "outer:CancelledError" }, log)
  end)

  it("may wait in __close when the task raises; the error and its traceback stay", function()
    local log, err = {}, {}
    local t = aio.spawn(function()
      local a <close> = waiting_closer(log, "a")
      local function deep() error(err) end
      deep()
    end)
    assert.are.equal(err, S.error_of(t.await, t))
    assert.are.same({ "a:" .. tostring(err) }, log)
    assert.matches("in local 'deep'", t:traceback())
  end)

  it("closes as plain Lua does: innermost first, a failing __close's error replaces, upvalues kept", function()
    local function body(log, wait)
      local up = "kept"
      local a <close> = setmetatable({}, { __close = function(_, e)
        if wait then aio.sleep(0) end
        log[#log + 1] = "a:" .. tostring(e) .. ":" .. up
      end })
      local b <close> = setmetatable({}, { __close = function(_, e)
        if wait then aio.sleep(0) end
        log[#log + 1] = "b:" .. tostring(e)
        error("b failed", 0)
      end })
      local c <close> = false  -- nothing to close
      error("first", 0)
    end
    local plain = {}
    local ok, e1 = pcall(body, plain, false)
    assert.is_false(ok)
    local inside = {}
    local t = aio.spawn(body, inside, true)
    local e2 = S.error_of(t.await, t)
    assert.are.equal(e1, e2)
    assert.are.same(plain, inside)
    assert.are.same({ "b:first", "a:b failed:kept" }, inside)
  end)

  it("a cancel during a waiting __close replaces the error; the others are closed", function()
    local log = {}
    local t = aio.spawn(function()
      local a <close> = waiting_closer(log, "a")
      local b <close> = waiting_closer(log, "b", 10)
      error("first", 0)
    end)
    aio.sleep(0.01)
    assert.are.same({}, log)
    assert.equal("waiting", (t:waiting()))
    t:cancel("during close")
    local e = S.error_of(t.await, t)
    assert.are.equal("CancelledError", aio.errtype(e))
    assert.are.same({ "a:CancelledError" }, log)  -- b's sleep was cancelled
  end)

  it("a failed main task's __close may wait too (aiolua script)", function()
    local r = aio.run_process({ BIN, "-e", [[
      local c <close> = setmetatable({}, { __close = function(_, e)
        aio.sleep(0.01)
        io.stdout:write("closed with ", tostring(e), "\n")
      end })
      error("main failed", 0)
    ]] })
    assert.are.equal(1, r.returncode)
    assert.matches("^closed with main failed\r?\n$", r.stdout)
    assert.matches("main failed", r.stderr)
  end)
end)

describe("aio.Future", function()
  -- API.md: misuse raises a plain string error naming the function; a
  -- method called as a plain function (no name at the call site) too
  it("misused methods name themselves, called as methods or as functions", function()
    local f, t, loop = aio.Future(), aio.spawn(aio.sleep, 0), aio.loop()
    local cases = {
      add_done_callback = { f.add_done_callback, f, 1 },
      set_result = { f.set_result },
      cancel = { t.cancel },
      call_later = { loop.call_later, loop, "x" },
    }
    for name, c in pairs(cases) do
      local ok, e = pcall(table.unpack(c))
      assert.is_false(ok)
      assert.are.equal("string", type(e))
      assert.matches("bad argument #%d to 'aio%.%a+%." .. name .. "'", e)
    end
    assert.matches("bad argument #1 to 'add_done_callback'",
      S.error_of(function() f:add_done_callback(1) end))
    -- the methods a task shares with a Future name the task's class
    assert.matches("'aio%.Task%.add_done_callback'", S.error_of(t.add_done_callback, t, 1))
    assert.matches("'aio%.Task%.result'", S.error_of(t.result, "x"))
    assert.matches("'aio%.Future%.add_done_callback'", S.error_of(f.add_done_callback, f, 1))
    t:await()
  end)

  it("methods check their object by its metatable: a Future's take a task, a task's refuse a Future", function()
    -- a full userdata of another kind (a file, a lock) as much as a table
    -- or a string (sched.c, ourkind; src/host/lua_udata.patch reads the
    -- metatable without the API's push and pop)
    local function typename(v)  -- as luaL_typeerror names it
      local mt = getmetatable(v)
      return type(mt) == "table" and type(mt.__name) == "string" and mt.__name or type(v)
    end
    local f, t = aio.Future(), aio.spawn(aio.sleep, 0)
    for _, v in ipairs({ 1, "s", {}, io.stdout, aio.Lock(), coroutine.create(print), print }) do
      local want = "%(aio%.Future or aio%.Task expected, got "
        .. typename(v):gsub("%p", "%%%0") .. "%)"
      assert.matches("bad argument #1 to '[%w.]*result' " .. want, S.error_of(f.result, v))
      assert.matches("bad argument #1 to '[%w.]*await' " .. want, S.error_of(f.await, v))
      assert.matches("bad argument #1 to '[%w.]*cancel' %(aio%.Task expected",
        S.error_of(t.cancel, v))
    end
    assert.matches("aio%.Task expected, got aio%.Future", S.error_of(t.cancel, f))
    assert.is_false(f.done(t))
    f:set_result(7)
    assert.are.equal(7, f.result(f))
    assert.are.same({}, { f.await(t) })  -- a Future's method on a task
  end)

  it("set_result with several values; await gives them all", function()
    local f = aio.Future()
    aio.spawn(function() aio.sleep(0.001) f:set_result(1, nil, 3) end)
    local r = table.pack(f:await())
    assert.are.equal(3, r.n)
    assert.are.same({ 1, nil, 3 }, { r[1], r[2], r[3] })
    assert.are.same({ 1, nil, 3 }, { f:result() })
  end)

  it("set_error is re-raised as is; setting twice is InvalidStateError", function()
    local f = aio.Future()
    local e = {}
    f:set_error(e)
    assert.are.equal(e, S.error_of(f.await, f))
    assert.are.equal(e, f:error())
    assert.are.equal("InvalidStateError", aio.errtype(S.error_of(f.set_result, f, 1)))
    assert.are.equal("InvalidStateError", aio.errtype(S.error_of(f.set_error, f, "x")))
  end)

  -- aio.Future's methods took a Task as self: the task was marked done
  -- with the value while its body went on (asyncio: "Task does not
  -- support set_result()")
  it("set_result, set_error and Future's cancel refuse a Task", function()
    local F = aio.Future()
    local went_on = false
    local t = aio.spawn(function() aio.sleep(0.01) went_on = true return "own" end)
    assert.matches("set_result: a Task's outcome comes from its function",
      S.error_of(F.set_result, t, "fake"))
    assert.matches("set_error: a Task's outcome comes from its function",
      S.error_of(F.set_error, t, "fake"))
    local e = S.error_of(F.cancel, t)
    assert.are.equal("string", type(e))
    assert.matches("use task:cancel%(%)", e)
    assert.is_false(t:done())
    assert.are.equal("own", t:await())
    assert.is_true(went_on)
  end)

  it("cancel makes it cancelled; set_* afterwards fails", function()
    local f = aio.Future()
    assert.is_true(f:cancel("why"))
    assert.is_true(f:cancelled() and f:done())
    assert.is_false(f:cancel())
    local e = S.error_of(f.result, f)
    assert.are.equal("CancelledError", aio.errtype(e))
    assert.are.equal("why", e.message)
    assert.are.equal("InvalidStateError", aio.errtype(S.error_of(f.set_result, f, 1)))
  end)

  it("wakes several waiters in the order they came", function()
    local f, order = aio.Future(), {}
    local ts = {}
    for i = 1, 3 do ts[i] = aio.spawn(function() f:await() order[#order + 1] = i end) end
    aio.sleep(0)
    f:set_result()
    for i = 1, 3 do ts[i]:await() end
    assert.are.same({ 1, 2, 3 }, order)
  end)
end)

describe("done callbacks", function()
  it("run on the loop after the end, never inside add_done_callback", function()
    local log = {}
    local t = aio.spawn(function() return 1 end)
    t:add_done_callback(function(x) log[#log + 1] = x end)
    t:await()
    aio.sleep(0)
    assert.are.same({ t }, log)
    t:add_done_callback(function() log[#log + 1] = "late" end)
    assert.are.equal(1, #log)     -- not inside the call
    aio.sleep(0)
    assert.are.equal("late", log[2])
  end)

  it("added before an await have run when the await returns (asyncio's order)", function()
    local log = {}
    local t = aio.spawn(function() aio.sleep(0.001) return 1 end)
    t:add_done_callback(function() log[#log + 1] = "cb" end)
    t:await()
    log[#log + 1] = "after await"
    assert.are.same({ "cb", "after await" }, log)
    -- a future: the setter goes on first, then the callback, then the awaiter
    local f, l2 = aio.Future(), {}
    f:add_done_callback(function() l2[#l2 + 1] = "cb1" end)
    local a = aio.spawn(function() f:await() l2[#l2 + 1] = "awaiter" end)
    aio.sleep(0)
    f:set_result(1)
    l2[#l2 + 1] = "after set"
    a:await()
    assert.are.same({ "after set", "cb1", "awaiter" }, l2)
    -- a failed task and a cancelled one too
    for _, how in ipairs({ "error", "cancel" }) do
      local l3 = {}
      local u = aio.spawn(function() aio.sleep(0.001) if how == "error" then error("x") end aio.sleep(5) end)
      u:add_done_callback(function() l3[#l3 + 1] = "cb" end)
      if how == "cancel" then aio.sleep(0.01) u:cancel() end
      pcall(u.await, u)
      l3[#l3 + 1] = "after"
      assert.are.same({ "cb", "after" }, l3)
    end
  end)

  it("can be removed", function()
    local f, n = aio.Future(), 0
    local cb = function() n = n + 1 end
    f:add_done_callback(cb)
    f:add_done_callback(cb)
    assert.are.equal(2, f:remove_done_callback(cb))
    f:set_result(1)
    aio.sleep(0)
    assert.are.equal(0, n)
  end)

  it("an error in a callback is reported and the loop goes on", function()
    local f, after = aio.Future(), false
    f:add_done_callback(function() error("cb boom") end)
    f:add_done_callback(function() after = true end)
    f:set_result()
    aio.sleep(0)
    assert.is_true(after)
  end)
end)

-- the scheduler keeps finished tasks' threads for the next tasks (sched.c,
-- take_thread): a task then costs its record, not a new Lua thread; a
-- thread user code has seen is never lent again, one a failure left is
-- reset first
describe("thread reuse", function()
  -- Lua heap allocated per task over n tasks run one after another
  local function per_task(n, body)
    for _ = 1, 10 do aio.spawn(body):await() end  -- warm
    collectgarbage()
    collectgarbage("stop")
    local before = collectgarbage("count")
    for _ = 1, n do aio.spawn(body):await() end
    local per = (collectgarbage("count") - before) * 1024 / n
    collectgarbage("restart")
    return per
  end

  it("lends a finished task's thread to the next one", function()
    local per = per_task(2000, function() end)
    -- a thread alone is over 600 bytes; a task's record about 200
    assert.is_true(per < 450, per .. " bytes allocated per task")
  end)

  it("never lends a thread user code has seen, and goes on reusing others", function()
    local seen, distinct = {}, 0
    for _ = 1, 300 do
      local co = aio.spawn(function() return coroutine.running() end):await()
      if not seen[co] then distinct = distinct + 1 end
      seen[co] = true
    end
    assert.are.equal(300, distinct)
    local per = per_task(2000, function() end)
    assert.is_true(per < 450, per .. " bytes allocated per task")
  end)

  it("reuses the threads of failed tasks once reset; a new task starts clean", function()
    for i = 1, 300 do
      local t = aio.spawn(function() error("fail " .. i, 0) end)
      assert.are.equal("fail " .. i, select(2, pcall(t.await, t)))
    end
    local per = per_task(2000, function() end)
    assert.is_true(per < 450, per .. " bytes allocated per task")
    -- a thread whose task failed with a variable still to close is lent
    -- again only reset: the next task sees its own arguments, nothing else
    local t = aio.spawn(function() local x <close> = setmetatable({}, { __close = function() end }) error("x") end)
    pcall(t.await, t)
    assert.are.same({ 1, 2, 3 }, { aio.spawn(function(...) return ... end, 1, 2, 3):await() })
  end)
end)

-- A failed task whose error nobody retrieves is reported on stderr when it
-- is collected (or when its loop closes).  The finaliser that reports it
-- is a new watcher object's (sched.c, watch_failure), not the task's own:
-- giving an old object a finaliser makes Lua walk its list of all objects
-- from the newest to find it, for each failure.
describe("a failed task nobody awaits", function()
  local function run(chunk)
    return aio.run_process({ BIN, "-e", chunk })
  end

  it("is reported when it is collected, with its name and traceback; a retrieved one is not", function()
    local r = run([[
      do
        local t = aio.spawn(function() error("lost-one-31", 0) end)
        t.name = "worker-31"
        t.watch = nil  -- a task's own fields do not touch the report
        aio.sleep(0)
      end
      local seen = aio.spawn(function() error("seen-32", 0) end)
      aio.sleep(0)
      assert(not pcall(seen.await, seen))
      seen = nil
      collectgarbage() collectgarbage()
      io.stderr:write("after-gc\n")
      print("ok")
    ]])
    assert.are.equal(0, r.returncode, r.stderr)
    assert.are.equal("ok\n", (r.stdout:gsub("\r", "")))
    local report = r.stderr:find("task worker%-31 failed and nobody retrieved its error: lost%-one%-31")
    assert.is_truthy(report, r.stderr)
    assert.is_truthy(r.stderr:find("stack traceback", report, true), r.stderr)
    assert.is_true(report < r.stderr:find("after-gc", 1, true), r.stderr)
    assert.is_nil(r.stderr:find("seen-32", 1, true), r.stderr)
  end)

  it("is reported at the end of the program when still referenced", function()
    local r = run([[
      keep = aio.spawn(function() error("kept-33", 0) end)
      aio.sleep(0)
      print("end")
    ]])
    assert.are.equal(0, r.returncode, r.stderr)
    assert.matches("failed and nobody retrieved its error: kept%-33", r.stderr)
    local n = select(2, r.stderr:gsub("kept%-33", ""))
    assert.are.equal(1, n, r.stderr)  -- once: at the loop's close, not again at exit
  end)

  it("keeps its metatable: failing walks no list of all objects", function()
    -- 10,000 failures among 50,000 older live objects: with the task's own
    -- metatable swapped for one with __gc, each failure walked everything
    -- made since the task was (a minute and more, here; the helper's
    -- timeout fails it).  The tasks fail when the event lets them go.
    local r = run([[
      local old, ts, go = {}, {}, aio.Event()
      for i = 1, 10000 do
        ts[i] = aio.spawn(function() go:wait() error("f" .. i, 0) end)
      end
      for i = 1, 50000 do old[i] = { i } end
      local running = getmetatable(ts[1])
      go:set()
      for i = 1, 10000 do
        local ok, e = pcall(ts[i].await, ts[i])
        assert(not ok and e == "f" .. i, i)
        assert(getmetatable(ts[i]) == running, "the metatable changed")
      end
      print("ok", #old)
    ]])
    assert.are.equal(0, r.returncode, r.stderr)
    assert.matches("^ok\t50000", r.stdout)
    assert.are.equal("", r.stderr)
  end)
end)
