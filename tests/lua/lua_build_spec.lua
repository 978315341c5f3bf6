-- the Lua that the aiolua program runs on: Debian's lua5.4, built by the
-- Makefile with src/host/lua_stack.patch (smaller first thread stacks that
-- grow by half, and a thread's first two frames in the block of its
-- lua_State) and src/host/lua_prefetch.patch (aiolua_prefetch, which the
-- scheduler calls for the tasks queued behind the one it resumes, once the
-- heap is over 16 MiB), src/host/lua_lean.patch (lean waits) and
-- src/host/lua_method.patch (userdata methods without the generic __index
-- loop) and src/host/lua_tbc.patch (aiolua_poptbc, task_spec's "to-be-closed
-- variables").  It must behave as Debian's own for every Lua program.
local aio = require "aio"
local S = require "support"

local WINDOWS = package.config:sub(1, 1) == "\\"
local BIN = WINDOWS and "build\\win\\aiolua.exe" or os.getenv("AIOLUA_BIN") or "./aiolua"

-- Lua source for a child process: per_task(n, body) spawns n tasks running
-- body, lets them reach their wait, and gives the Lua heap each one takes
-- (a process of its own: what earlier specs leave, a context variable or
-- pooled threads, would count here); then cancels them
local PER_TASK = [[
  local function per_task(n, body)
    local tasks = {}
    for i = 1, n do tasks[i] = false end  -- the list's own slots come first
    collectgarbage() collectgarbage()
    local before = collectgarbage("count")
    for i = 1, n do tasks[i] = aio.spawn(body) end
    aio.sleep(0)
    collectgarbage() collectgarbage()
    local per = (collectgarbage("count") - before) * 1024 / n
    for i = 1, n do tasks[i]:cancel() end
    for i = 1, n do assert(not pcall(tasks[i].await, tasks[i])) end
    return per
  end
]]

describe("the program's Lua", function()
  it("finds modules where Debian's lua5.4 does", function()
    local probe = [[print(_VERSION) print(package.path) print(package.cpath) print(math.maxinteger)]]
    local ours = S.sh("env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 "
      .. BIN .. " -e '" .. probe .. "' 2>&1")
    local debian = S.sh("env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 "
      .. "lua5.4 -e '" .. probe .. "' 2>&1")
    assert.matches("^Lua 5%.4\n", ours)
    assert.matches("/usr/share/lua/5%.4/%?%.lua", ours)
    assert.are.equal(debian, ours)
  end)

  it("keeps a sleeping task under 950 bytes of Lua heap", function()
    local r = aio.run_process({ BIN, "-e", PER_TASK .. [[
      print(string.format("per-task %.0f",
        per_task(5000, function() aio.sleep(3600) end)))
    ]] })
    local out = r.stdout .. r.stderr
    local per = tonumber(out:match("per%-task (%d+)"))
    assert.is_truthy(per, out)
    -- a stock Lua 5.4 thread alone is over 1,050 bytes; tasks measured
    -- 1,250, then 1,140 with lua_stack.patch, 916 with lua_lean.patch
    assert.is_true(per < 950, per .. " bytes per sleeping task")
  end)

  -- aio.sleep and await are lean (lua_lean.patch): a call gets 6 free
  -- stack slots, not 20, and a task's thread starts with a stack just big
  -- enough for a small function waiting in one.  Everything around them
  -- must work as before: what a task does after it wakes, deep or wide,
  -- their error, cancel and many-results paths.  The sanitizer build's Lua
  -- checks every push against the slots given (LUA_USE_APICHECK).
  describe("lean waits", function()
    it("keep a task waiting on a queue, an event, a future or a lock small", function()
      -- measured: 738-886 bytes each with the lean waits, 956-1,201
      -- without (the wait's 20 slots)
      local r = aio.run_process({ BIN, "-e", PER_TASK .. [[
        local q, ev, fut, lock = aio.Queue(), aio.Event(), aio.Future(), aio.Lock()
        lock:acquire()
        print(string.format("queue %.0f event %.0f future %.0f lock %.0f",
          per_task(2000, function() q:get() end),
          per_task(2000, function() ev:wait() end),
          per_task(2000, function() fut:await() end),
          per_task(2000, function() lock:acquire() end)))
      ]] })
      local out = r.stdout .. r.stderr
      assert.are.equal(0, r.returncode, out)
      local n = 0
      for kind, per in out:gmatch("(%a+) (%d+)") do
        assert.is_true(tonumber(per) < 920, kind .. ": " .. per .. " bytes per waiting task")
        n = n + 1
      end
      assert.are.equal(4, n, out)
    end)

    it("wake into code that needs the stack of any C function", function()
      local t = aio.spawn(function()
        aio.sleep(0)
        local parts = { string.byte(string.rep("a", 60), 1, -1) }  -- 60 results
        local s = string.format(string.rep("%d", 30, ","), table.unpack(parts, 1, 30))
        local n = select("#", table.unpack(parts))
        local ok, e = pcall(aio.sleep, "soon")
        aio.sleep(0)
        return #s, n, ok, e
      end)
      local len, n, ok, e = t:await()
      assert.are.equal(30 * 2 + 29, len)
      assert.are.equal(60, n)
      assert.is_false(ok)
      assert.matches("number expected", e)
    end)

    it("take a task's arguments and return its results, however many", function()
      local args = {}
      for i = 1, 300 do args[i] = i end
      local t = aio.spawn(function(...)
        aio.sleep(0)
        return ...
      end, table.unpack(args))
      local back = table.pack(t:await())
      assert.are.equal(300, back.n)
      assert.are.equal(300, back[300])
      -- awaited from a task, through the continuation of a wait that parked
      local waiter = aio.spawn(function()
        local slow = aio.spawn(function() aio.sleep(0.01) return table.unpack(args) end)
        return select("#", slow:await())
      end)
      assert.are.equal(300, waiter:await())
    end)

    it("are called in tail position, with pcall and from a coroutine", function()
      local t = aio.spawn(function()
        local inner = aio.spawn(function() aio.sleep(0) return "in" end)
        aio.sleep(0)
        return inner:await()  -- a tail call into await
      end)
      assert.are.equal("in", t:await())
      assert.is_nil(aio.spawn(function() return aio.sleep(0.001) end):await())
      local ok, v = aio.spawn(function()
        return pcall(function() aio.sleep(0) return 7 end)
      end):await()
      assert.is_true(ok)
      assert.are.equal(7, v)
      assert.are.equal(8, aio.spawn(function()
        return coroutine.wrap(function() aio.sleep(0) return 8 end)()
      end):await())
    end)

    it("raise their errors and cancellations with room to spare", function()
      -- a cancelled sleep, a cancelled await (which cancels what it
      -- awaits), an awaited failure and a bad argument: each builds an
      -- error object inside a lean call (a wait from a callback, where no
      -- task runs, is loop_spec's "a callback cannot wait")
      local sleeper = aio.spawn(function() aio.sleep(3600) end)
      local target = aio.spawn(function() aio.sleep(3600) end)
      local awaiter = aio.spawn(function() return target:await() end)
      local failing = aio.spawn(function() aio.sleep(0) error({ code = 42 }) end)
      aio.sleep(0)
      sleeper:cancel("stop sleeping")
      awaiter:cancel("stop awaiting")
      local e1 = S.error_of(sleeper.await, sleeper)
      local e2 = S.error_of(awaiter.await, awaiter)
      assert.are.equal("CancelledError", aio.errtype(e1))
      assert.are.equal("stop sleeping", e1.message)
      assert.are.equal("CancelledError", aio.errtype(e2))
      assert.are.equal("CancelledError", aio.errtype(S.error_of(target.await, target)))
      assert.are.equal(42, S.error_of(failing.await, failing).code)
      local bad = aio.spawn(function() return pcall(aio.sleep, {}) end)
      local ok, e = bad:await()
      assert.is_false(ok)
      assert.matches("number expected", e)
    end)

    it("read streams, with every error a read can raise", function()
      local fds = S.fd_count()
      local got = {}
      local srv = aio.start_server(function(r, w)
        -- each wait below is a lean read, called straight from this frame
        got.line = r:readline()
        got.until_ = r:readuntil("--")
        got.exact = r:readexactly(3)
        got.badarg = select(2, pcall(r.readexactly, r, "many"))
        got.empty = select(2, pcall(r.readuntil, r, ""))
        got.badself = select(2, pcall(r.read, 42))
        got.limit = S.error_of(r.readuntil, r, "never")
        got.incomplete = S.error_of(r.readexactly, r, 100)
        got.eof = r:read()
        w:close()
      end, "127.0.0.1", 0, { limit = 16 })
      local port = select(2, srv:getsockname())
      local r, w = aio.open_connection("127.0.0.1", port)
      w:write("one\ntwo--abc" .. string.rep("x", 40))
      w:drain()
      aio.sleep(0.05)
      w:write("tail")
      w:write_eof()
      assert.is_nil(r:read())
      w:close()
      w:wait_closed()
      srv:close()
      srv:wait_closed()
      aio.sleep(0.02)
      assert.are.equal("one\n", got.line)
      assert.are.equal("two--", got.until_)
      assert.are.equal("abc", got.exact)
      assert.matches("number expected", got.badarg)
      assert.matches("empty separator", got.empty)
      assert.matches("StreamReader expected", got.badself)
      assert.are.equal("LimitOverrunError", aio.errtype(got.limit))
      assert.are.equal("IncompleteReadError", aio.errtype(got.incomplete))
      assert.is_nil(got.eof)
      assert.are.equal(fds, S.fd_count())
    end)

    it("are cancelled inside a stream read and a drain", function()
      local fds = S.fd_count()
      local started, stop = aio.Event(), aio.Event()
      local srv = aio.start_server(function(r, w)
        started:set()
        stop:wait()  -- reads nothing meanwhile
        w:close()
      end, "127.0.0.1", 0)
      local port = select(2, srv:getsockname())
      local r, w = aio.open_connection("127.0.0.1", port)
      started:wait()
      local reading = aio.spawn(function() return r:readline() end)
      local draining = aio.spawn(function()
        local chunk = string.rep("z", 1 << 16)
        while true do w:write(chunk) w:drain() end
      end)
      aio.sleep(0.1)
      assert.are.equal("read", select(2, reading:waiting()))
      assert.are.equal("drain", select(2, draining:waiting()))
      reading:cancel()
      draining:cancel()
      assert.are.equal("CancelledError", aio.errtype(S.error_of(reading.await, reading)))
      assert.are.equal("CancelledError", aio.errtype(S.error_of(draining.await, draining)))
      stop:set()
      w:close()
      -- the server closed with our data unread: an RST, which wait_closed
      -- reports (ECONNRESET) as asyncio's does, or it closed first
      local ok, e = pcall(w.wait_closed, w)
      assert.is_true(ok or e.code == "ECONNRESET", tostring(e))
      srv:close()
      srv:wait_closed()
      aio.sleep(0.02)
      assert.are.equal(fds, S.fd_count())
    end)

    it("show a sleeping task's frames to its stack and waiting", function()
      local t = aio.spawn(function()
        local function nap() aio.sleep(3600) end
        nap()
      end)
      aio.sleep(0)
      assert.matches("function '[%w_.]*sleep'.*local 'nap'", t:stack())
      assert.are.equal("sleep", select(2, t:waiting()))
      t:cancel()
      assert.are.equal("CancelledError", aio.errtype(S.error_of(t.await, t)))
    end)
  end)

  it("grows a task's stack for deep calls, across waits, and keeps every value", function()
    local function dive(n)
      if n == 0 then aio.sleep(0) return 0 end
      local a, b, c, d, e, f, g, h = n, n + 1, n + 2, n + 3, n + 4, n + 5, n + 6, n + 7
      local r = dive(n - 1)
      return r + a + b + c + d + e + f + g + h - 8 * n
    end
    local t = aio.spawn(dive, 20000)
    assert.are.equal(20000 * 28, t:await())
    -- and a task waiting with a grown stack is cancelled like any other
    local deep = aio.spawn(function()
      local function down(n) if n == 0 then aio.sleep(3600) end return n == 0 and 0 or down(n - 1) end
      return down(5000)
    end)
    aio.sleep(0)
    deep:cancel()
    assert.are.equal("CancelledError", aio.errtype(S.error_of(deep.await, deep)))
  end)

  it("raises a catchable stack overflow in a task and goes on", function()
    local t = aio.spawn(function()
      local function forever(n) return 1 + forever(n + 1) end
      local ok, e = pcall(forever, 1)
      aio.sleep(0)
      return ok, e
    end)
    local ok, e = t:await()
    assert.is_false(ok)
    assert.matches("stack overflow", e)
    -- the same thread is fine afterwards (a new task may reuse it)
    assert.are.equal(3, aio.spawn(function() aio.sleep(0) return 1 + 2 end):await())
  end)

  -- the ready ring prefetches what it will resume (a task's record, its
  -- thread, stack slots, registry slot and closure) only with a heap over
  -- 16 MiB and more than 8 entries ready: here 30,000 tasks of every shape
  -- wake together in a heap of about 40 MiB, with plain callbacks, tasks
  -- not yet started, cancelled ones and failing ones among them
  it("resumes tens of thousands of tasks of every shape while it prefetches", function()
    local r = aio.run_process({ BIN, "-e", [[
      local N = 30000
      local shapes = {
        function(i) aio.sleep(0.05) return i end,                     -- Lua
        function(i)                                                   -- in a coroutine
          return coroutine.wrap(function() aio.sleep(0.05) coroutine.yield(i) end)()
        end,
        function(i) aio.sleep(0.05) error("boom " .. i, 0) end,       -- fails
        function(i) aio.sleep(3600) end,                              -- cancelled asleep
        aio.sleep,                                                    -- a C function
      }
      local ts, calls, loop = {}, 0, aio.loop()
      for i = 1, N do
        ts[i] = aio.spawn(shapes[i % 5 + 1], i % 5 == 4 and 0.05 or i)
        if i % 7 == 0 then loop:call_later(0.05, function() calls = calls + 1 end) end
      end
      local unstarted = {}
      for i = 1, 100 do unstarted[i] = aio.spawn(shapes[1], i) unstarted[i]:cancel() end
      aio.sleep(0.01)
      local heap = collectgarbage("count")
      for i = 1, N do if i % 5 == 3 then ts[i]:cancel() end end
      aio.sleep(0.1)
      local got = { 0, 0, 0, 0, 0 }
      for i = 1, N do
        local k = i % 5 + 1
        local good, v = pcall(ts[i].await, ts[i])
        if k == 1 or k == 2 then assert(good and v == i, i)
        elseif k == 3 then assert(not good and v == "boom " .. i, i)
        elseif k == 4 then assert(not good and tostring(v):find("CancelledError"), i)
        else assert(good and v == nil, i) end
        got[k] = got[k] + 1
      end
      for i = 1, 100 do assert(unstarted[i]:cancelled()) end
      print(string.format("heap %.0f got %s calls %d", heap, table.concat(got, ","), calls))
    ]] })
    local out = r.stdout .. r.stderr
    local heap, got, calls = out:match("heap (%d+) got ([%d,]+) calls (%d+)")
    assert.is_truthy(heap, out)
    assert.are.equal(0, r.returncode, out)
    assert.is_true(tonumber(heap) > 16 * 1024, heap .. " KiB: the ring did not prefetch")
    assert.are.equal("6000,6000,6000,6000,6000", got)
    assert.are.equal(30000 // 7, tonumber(calls))
  end)

  it("runs many small tasks, each with a stack of its own", function()
    local N, sum = 2000, 0
    local ts = {}
    for i = 1, N do
      ts[i] = aio.spawn(function(k)
        local x = k * 2
        aio.sleep(0)
        sum = sum + x
        return x
      end, i)
    end
    for i = 1, N do assert.are.equal(2 * i, ts[i]:await()) end
    assert.are.equal(N * (N + 1), sum)
  end)

  -- a thread's first two CallInfos live in the block of its lua_State and
  -- are never freed on their own; the others come and go as in stock Lua
  it("starts a thread's first two calls without allocating", function()
    local N = 200
    -- locals only: a global read in this file's environment calls busted's
    -- __index functions, which are frames too
    local create, resume, yield, count =
      coroutine.create, coroutine.resume, coroutine.yield, collectgarbage
    local function inner() yield(1) end
    local function outer() inner() end  -- thread, outer, inner, yield
    local function one() yield(1) end  -- thread, one, yield
    local cos, deep = {}, {}
    for i = 0, N do cos[i] = create(one) end
    for i = 0, N do deep[i] = create(outer) end
    count() count()
    count("stop")
    -- a first resume of each kind, so the frames and stack of the thread
    -- running this test (which the collector just shrank) are in place
    assert(resume(cos[0]))
    assert(resume(deep[0]))
    local before = count("count")
    for i = 1, N do assert(resume(cos[i])) end
    local two = (count("count") - before) * 1024
    -- a third frame is the first one from the heap
    before = count("count")
    for i = 1, N do assert(resume(deep[i])) end
    local three = (count("count") - before) * 1024 / N
    count("restart")
    assert.are.equal(0, two)
    assert.are.equal(64, three)
  end)

  it("grows a coroutine's stack and frames for deep calls and gives them back", function()
    local yield, count = coroutine.yield, collectgarbage
    local function dive(n)
      if n == 0 then return 0 end
      local a, b, c = n, n * 2, n * 3
      return dive(n - 1) + a + b + c - 5 * n
    end
    local co = coroutine.wrap(function(n) while true do n = yield(dive(n)) end end)
    -- the program collects in generational mode (as lua.c does), which
    -- never shrinks a stack: an incremental cycle does
    local mode = count("incremental")
    finally(function() count(mode) end)
    local function settle()
      for _ = 1, 20 do count() end  -- each cycle frees half the spare frames
      return count("count")
    end
    assert.are.equal(6, co(3))
    local small = settle()
    for round = 1, 4 do
      -- a big stack and 5,000 frames, then back up to the small frame
      assert.are.equal(5000 * 5001 / 2, co(5000))
      -- the stack (some 600 KB) and the frames went back: what stays is
      -- a spare frame and a small stack
      local over = (settle() - small) * 1024
      assert.is_true(over < 1024, "round " .. round .. ": " .. over .. " bytes more")
      assert.are.equal(3, co(2))
    end
  end)

  -- lua_method.patch: obj:m() on a full userdata looks m up in the
  -- metatable's __index table directly; everything else must go the
  -- generic way, with the same results and messages as stock Lua
  it("calls a userdata's methods wherever they are, as stock Lua does", function()
    local probe = [[
      local out = {}
      local function try(f, ...)
        local r = table.pack(pcall(f, ...))
        for i = 1, r.n do r[i] = tostring(r[i]):gsub("^.-:%d+: ", "") end
        out[#out + 1] = table.concat(r, " ", 1, r.n)
      end
      local u = io.tmpfile()
      local fmt = debug.getmetatable(u)
      local base = { from_base = function(_, x) return "base", x end }
      local methods = setmetatable({ m = function(_, a, b) return "m", a, b end, no = false },
        { __index = base })
      local mt = { __index = methods }
      debug.setmetatable(u, mt)
      try(function() return u:m(1, 2) end)          -- in the first table
      try(function() return u:from_base(3) end)     -- up the chain
      try(function() return u:missing() end)        -- nowhere
      try(function() return u:no() end)             -- false
      local long = ("x"):rep(50)                    -- not a short string
      methods[long] = function() return "long" end
      try(load("local u = ... return u:" .. long .. "()"), u)
      mt.__index = function(_, k) return function(_, ...) return "fn", k, ... end end
      try(function() return u:anything(4) end)      -- __index a function
      mt.__index = nil
      try(function() return u:m() end)              -- no __index
      mt.__index = { m = function() return "later" end }
      try(function() return u:m() end)              -- added after a miss
      debug.setmetatable(u, nil)
      try(function() return u:m() end)              -- no metatable
      local t = setmetatable({}, { __index = methods })
      try(function() return t:m(5) end)             -- a table
      try(function() return ("abc"):upper() end)    -- a string
      -- an __index function that gives a __methods table's entries first
      -- (a task's): the same results, whether or not it is called
      local calls = 0
      local fields = { m = function(_, x) return "from methods", x end }
      debug.setmetatable(u, { __methods = fields, __index = function(_, k)
        calls = calls + 1
        if fields[k] ~= nil then return fields[k] end
        return function() return "from __index", k end
      end })
      try(function() return u:m(9) end)
      try(function() return u:other() end)
      try(function() return u.m(u, 8) end)          -- not a method call
      fields.late = function() return "added later" end
      try(function() return u:late() end)
      out[#out + 1] = "index calls " .. (calls >= 2 and calls <= 5 and "ok" or calls)
      local site = function(o) return o:m() end     -- one call site, many objects
      for i = 1, 3 do
        local o = io.tmpfile()
        debug.setmetatable(o, { __index = { m = function() return "obj" .. i end } })
        try(site, o)
        debug.setmetatable(o, fmt)
        o:close()
      end
      debug.setmetatable(u, fmt)
      u:close()
      return table.concat(out, "\n")
    ]]
    local expected = table.concat({
      "true m 1 2", "true base 3",
      "false attempt to call a nil value (method 'missing')",
      "false attempt to call a boolean value (method 'no')",
      "true long", "true fn anything 4",
      "false attempt to index a userdata value (upvalue 'u')",
      "true later",
      "false attempt to index a userdata value (upvalue 'u')",
      "true m 5 nil", "true ABC",
      "true from methods 9", "true from __index other", "true from methods 8",
      "true added later", "index calls ok",
      "true obj1", "true obj2", "true obj3",
    }, "\n")
    assert.are.equal(expected, assert(load(probe))())
    if not WINDOWS then  -- and Debian's lua5.4 says the same
      local f = os.tmpname()
      local h = assert(io.open(f, "w"))
      h:write("io.write((function() ", probe, " end)())")
      h:close()
      local debian = S.sh("lua5.4 " .. f .. " 2>&1")
      local ours = S.sh(BIN .. " " .. f .. " 2>&1")
      os.remove(f)
      assert.are.equal(expected, debian)
      assert.are.equal(expected, ours)
    end
    -- and here the fast path is taken: o:m() with m in __methods does not
    -- call the __index function (Debian's Lua calls it each time); a task
    -- has such a metatable
    local calls, o = 0, io.tmpfile()
    local fmt = debug.getmetatable(o)
    debug.setmetatable(o, { __methods = { m = function() return 1 end },
                            __index = function() calls = calls + 1 end })
    for _ = 1, 3 do assert.are.equal(1, o:m()) end
    debug.setmetatable(o, fmt)
    o:close()
    assert.are.equal(0, calls)
    local mt = getmetatable(aio.spawn(function() end))
    assert.are.equal("table", type(mt.__methods))
    assert.are.equal("function", type(mt.__index))
  end)

  it("closes and collects coroutines whatever their stack", function()
    local closed = 0
    local function body(depth)
      local _ <close> = setmetatable({}, { __close = function() closed = closed + 1 end })
      local function down(n) if n == 0 then coroutine.yield() return 0 end return 1 + down(n - 1) end
      return down(depth)
    end
    for _, depth in ipairs({ 0, 1, 10, 100, 5000 }) do
      local co = coroutine.create(body)
      assert(coroutine.resume(co, depth))
      assert(coroutine.close(co))
      assert.are.equal("dead", coroutine.status(co))
      -- and one left suspended for the collector
      assert(coroutine.resume(coroutine.create(body), depth))
    end
    collectgarbage() collectgarbage()
    assert.are.equal(5, closed)
    -- an error from deep inside, then a stack overflow, then a clean run
    local co = coroutine.create(function(n)
      local function down(k) if k == 0 then error("bottom") end return 1 + down(k - 1) end
      local ok, e = pcall(down, n)
      coroutine.yield(e)
      local function forever(k) return 1 + forever(k + 1) end
      ok, e = pcall(forever, 1)
      coroutine.yield(e)
      return select("#", table.unpack({}, 1, 200))
    end)
    local ok, e = coroutine.resume(co, 4000)
    assert.is_true(ok)
    assert.matches("bottom", e)
    ok, e = coroutine.resume(co)
    assert.is_true(ok)
    assert.matches("stack overflow", e)
    collectgarbage()
    assert.are.same({ true, 200 }, { coroutine.resume(co) })
  end)
  -- src/host/lua_jmp.h: the release build's ldo.c (where all of Lua's
  -- errors and C yields unwind) uses GCC's builtin setjmp/longjmp, not
  -- glibc's; the next spec drives every kind of unwinding through it
  it("unwinds with the builtin setjmp/longjmp (lua_jmp.h)", function()
    if WINDOWS then return end  -- Windows keeps Lua's default
    local obj = "build/lua/ldo.o"
    local f = io.open(obj)
    if not f then return end  -- an installed aiolua: no build tree
    f:close()
    local out, code = S.sh("nm -u " .. obj)
    assert.are.equal(0, code)
    assert.is_nil(out:find("longjmp", 1, true), out)
    assert.is_nil(out:find("setjmp", 1, true), out)
  end)

  it("unwinds errors and yields of every kind, nested, many times", function()
    local caught, yields = 0, 0
    local function deep(n, how)
      if n == 0 then
        if how == 1 then error({ code = n }) end      -- a Lua error
        if how == 2 then return ("x"):rep(-1, {}) end  -- a C function's error
        if how == 3 then return coroutine.yield(n) end
        return n
      end
      return deep(n - 1, how)
    end
    for i = 1, 2000 do
      local how = i % 4
      -- a pcall in a coroutine in a pcall in a task that waits between
      local ok, e = pcall(function()
        local co = coroutine.wrap(function()
          local ok2, e2 = pcall(deep, i % 50, how)
          if not ok2 then caught = caught + 1; error(e2, 0) end
          return e2
        end)
        local r = co()
        if how == 3 then yields = yields + 1; r = co() end
        return r
      end)
      if how == 1 or how == 2 then
        assert.is_false(ok)
        if how == 1 then assert.are.equal(0, e.code) end
      else
        assert.is_true(ok)
      end
      if i % 100 == 0 then aio.sleep(0) end
    end
    assert.are.equal(1000, caught)
    assert.are.equal(500, yields)
    -- errors thrown across awaits: a failed task's error reaches its waiter
    local tasks = {}
    for i = 1, 200 do
      tasks[i] = aio.spawn(function()
        aio.sleep(0)
        if i % 2 == 0 then error("task " .. i, 0) end
        return i
      end)
    end
    for i = 1, 200 do
      local ok, e = pcall(tasks[i].await, tasks[i])
      if i % 2 == 0 then assert.are.same({ false, "task " .. i }, { ok, e })
      else assert.are.same({ true, i }, { ok, e }) end
    end
  end)
end)
