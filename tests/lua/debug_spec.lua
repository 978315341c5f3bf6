-- debugging tools: dump_tasks, task:stack / waiting, debug mode, context
-- variables, eager tasks (lua/aio/debug.lua, context.lua, sched.c)
local aio = require "aio"
local S = require "support"

local function capture(fn)
  local buf = {}
  local file = { write = function(self, ...) for _, s in ipairs { ... } do buf[#buf + 1] = s end end,
                 flush = function() end }
  fn(file)
  return table.concat(buf)
end

describe("aio.dump_tasks", function()
  it("names every task, what it waits on and where", function()
    local sleeper = aio.spawn(function() aio.sleep(30) end)
    sleeper.name = "the-sleeper"
    local f = aio.Future()
    local waiter = aio.spawn(function() return f:await() end)
    waiter.name = "the-waiter"
    local joiner = aio.spawn(function() return sleeper:await() end)
    joiner.name = "the-joiner"
    aio.sleep(0)
    local out = capture(aio.dump_tasks)
    assert.matches("the%-sleeper: waiting: sleep until", out)
    assert.matches("the%-waiter: waiting: future", out)
    assert.matches("the%-joiner: waiting: task the%-sleeper", out)
    assert.matches("running %(the caller%)", out)
    assert.matches("debug_spec.lua", out)  -- tracebacks
    for _, t in ipairs { sleeper, waiter, joiner } do t:cancel() pcall(t.await, t) end
  end)

  -- a future of aio's own making is named by the call that awaits it
  it("names the aio call a task waits in on a future: gather, wait, as_completed, taskgroup, serve_forever, through an alias too", function()
    local f = aio.Future()
    local srv = aio.start_server(function() end, "127.0.0.1", 0)
    local srv2 = aio.start_server(function() end, "127.0.0.1", 0)
    local tasks = {
      aio.spawn(function() aio.gather(f, function() aio.sleep(30) end) end),
      aio.spawn(function() aio.wait({ f }) end),
      aio.spawn(function() for _ in aio.as_completed({ f }) do end end),
      aio.spawn(function() aio.taskgroup(function(tg) tg:spawn(f.await, f) end) end),
      aio.spawn(function() srv:serve_forever() end),
      aio.spawn(function() f:await() end),
      aio.spawn(function() local sf = srv2.serve_forever; sf(srv2) end),  -- an alias
    }
    local names = { "g", "w", "ac", "tg", "sf", "plain", "alias" }
    for i, name in ipairs(names) do tasks[i].name = "the-" .. name end
    aio.sleep(0.05)
    local out = capture(aio.dump_tasks)
    assert.matches("the%-g: waiting: future %(in aio%.gather%)\n", out)
    assert.matches("the%-w: waiting: future %(in aio%.wait%)\n", out)
    assert.matches("the%-ac: waiting: future %(in aio%.as_completed%)\n", out)
    assert.matches("the%-tg: waiting: future %(in aio%.taskgroup%)\n", out)
    assert.matches("the%-sf: waiting: future %(in server:serve_forever%)\n", out)
    assert.matches("the%-plain: waiting: future\n", out)
    assert.matches("the%-alias: waiting: future %(in server:serve_forever%)\n", out)
    for _, t in ipairs(tasks) do t:cancel() end
    for _, t in ipairs(tasks) do pcall(t.await, t) end
    for _, server in ipairs { srv, srv2 } do
      server:close()
      server:wait_closed()
    end
  end)

  -- issue 9: "read on peer X, lock, queue get, child pid"; reads and a
  -- child's wait were named "read" and "process" only
  it("names a read's peer, a child's pid, a lock and a queue get", function()
    if package.config:sub(1, 1) == "\\" then return end  -- (sleep: a POSIX program)
    local served = aio.Future()
    local srv = aio.start_server(function(r) r:read() served:set_result(true) end, "127.0.0.1", 0)
    local r, w = aio.open_connection("127.0.0.1", select(2, srv:getsockname()))
    local _, port = w:get_extra_info("peername")
    local p = aio.exec({ "sleep", "30" }, { stdout = "pipe" })
    local lock, q = aio.Lock(), aio.Queue()
    lock:acquire()
    local tasks = {
      aio.spawn(function() return r:read() end),
      aio.spawn(function() return p:wait() end),
      aio.spawn(function() lock:acquire() end),
      aio.spawn(function() q:get() end),
      aio.spawn(function() return p.stdout:read() end),  -- run_process's wait
    }
    for i, name in ipairs { "the-reader", "the-child", "the-locker", "the-getter", "the-pipe" } do
      tasks[i].name = name
    end
    aio.sleep(0.05)
    local out = capture(aio.dump_tasks)
    assert.matches("the%-reader: waiting: read on peer 127%.0%.0%.1:" .. port .. "\n", out)
    assert.matches("the%-child: waiting: child pid " .. p.pid .. " ", out)
    assert.matches("the%-locker: waiting: lock acquire %(aio%.Lock%.acquire%)", out)
    assert.matches("the%-getter: waiting: queue get %(aio%.Queue%.get%)", out)
    assert.are.same({ "waiting", "read", "127.0.0.1:" .. port }, { tasks[1]:waiting() })
    assert.are.same({ "waiting", "process", p.pid }, { tasks[2]:waiting() })
    assert.matches("the%-pipe: waiting: read on child pid " .. p.pid .. " stdout\n", out)
    assert.are.same({ "waiting", "read", "child pid " .. p.pid .. " stdout" }, { tasks[5]:waiting() })
    for _, t in ipairs(tasks) do t:cancel() pcall(t.await, t) end
    p:kill() p:wait()
    w:close() srv:close()
    served:await()
  end)

  -- a server's accept and a datagram socket's recvfrom were named without
  -- their socket ("waiting: accept")
  it("names the address a server's accept and a datagram socket's recvfrom wait on", function()
    local srv = aio.start_server(function() end, "127.0.0.1", 0)
    local _, sport = srv:getsockname()
    local u = aio.open_udp({ local_host = "127.0.0.1" })
    local _, uport = u:getsockname()
    local tasks = {
      aio.spawn(function() srv:serve_forever() end),
      aio.spawn(function() return u:recvfrom() end),
    }
    tasks[2].name = "the-receiver"
    aio.sleep(0.05)
    local out = capture(aio.dump_tasks)
    assert.matches("waiting: accept on socket 127%.0%.0%.1:" .. sport .. "\n", out)
    assert.matches("the%-receiver: waiting: recvfrom on socket 127%.0%.0%.1:" .. uport .. "\n", out)
    assert.are.same({ "waiting", "recvfrom", "socket 127.0.0.1:" .. uport }, { tasks[2]:waiting() })
    local v6 = aio.open_udp({ local_host = "::1" })
    local _, v6port = v6:getsockname()
    local t6 = aio.spawn(function() return v6:recvfrom() end)
    aio.sleep(0.02)
    assert.are.same({ "waiting", "recvfrom", "socket [::1]:" .. v6port }, { t6:waiting() })
    for _, t in ipairs { tasks[1], tasks[2], t6 } do t:cancel() pcall(t.await, t) end
    srv:close() u:close() v6:close()
  end)

  it("names the signals a signal wait watches", function()
    local t = aio.spawn(function() return aio.wait_signal("SIGUSR1", "SIGUSR2") end)
    t.name = "the-signalled"
    aio.sleep(0.02)
    local out = capture(aio.dump_tasks)
    assert.matches("the%-signalled: waiting: signal %(SIGUSR1, SIGUSR2%)\n", out)
    assert.are.same({ "waiting", "signal", "SIGUSR1, SIGUSR2" }, { t:waiting() })
    t:cancel() pcall(t.await, t)
  end)

  it("names the address a connect waits on", function()
    if package.config:sub(1, 1) == "\\" then return end  -- (a listen(0) that drops SYNs: Linux)
    -- a listener that never accepts: once its queue is full, a connect waits
    local p = aio.exec({ "python3", "-c", [[
import socket, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(0)
print(s.getsockname()[1], flush=True)
time.sleep(30)
]] }, { stdout = "pipe" })
    local port = tonumber(p.stdout:readline())
    local held, t = {}, nil
    for _ = 1, 8 do
      local c = aio.spawn(function() return aio.open_connection("127.0.0.1", port) end)
      aio.sleep(0.05)
      if not c:done() then t = c break end
      held[#held + 1] = select(2, c:await())
    end
    assert.is_not_nil(t, "every connect completed")
    t.name = "the-connector"
    local out = capture(aio.dump_tasks)
    assert.matches("the%-connector: waiting: connect on peer 127%.0%.0%.1:" .. port .. "\n", out)
    assert.are.same({ "waiting", "connect", "127.0.0.1:" .. port }, { t:waiting() })
    t:cancel() pcall(t.await, t)
    for _, w in ipairs(held) do w:close() end
    p:kill() p:wait()
  end)

  -- a task waiting inside a coroutine.wrap generator showed only its own
  -- frames, not where it waits
  it("task:stack shows where a task waits inside a coroutine it runs", function()
    local function produce()
      aio.sleep(10) -- the wait
      coroutine.yield(1)
    end
    local t = aio.spawn(function() return coroutine.wrap(produce)() end)
    aio.sleep(0)
    local st = t:stack()
    assert.matches("^stack traceback:\n\t%[C%]: in function 'aio.sleep'\n[^\n]*debug_spec.lua:%d+: in function <", st)
    -- the generator's frames, then the task's own below them
    assert.are.equal(2, select(2, st:gsub("debug_spec.lua:%d+:", "")), st)
    t:cancel()
    pcall(t.await, t)
  end)

  it("misuse is an argument error naming the function, at the caller's line", function()
    for _, bad in ipairs { 42, "stderr", {} } do
      assert.matches("debug_spec.lua:%d+: bad argument #1 to 'aio.dump_tasks' %(a file or an object with a write method expected",
        S.error_of(function() aio.dump_tasks(bad) end))
    end
    assert.matches("debug_spec.lua:%d+: bad argument #2 to 'aio.testing.run' %(options table expected, got number%)",
      S.error_of(function() aio.testing.run(function() end, 5) end))
    assert.matches("debug_spec.lua:%d+: bad argument #2 to 'aio.busted.async' %(options table expected, got number%)",
      S.error_of(function() require("aio.busted").async(function() end, 5) end))
    assert.matches("slow_step must be a number >= 0",
      S.error_of(function() aio.loop().slow_step = "x" end))
  end)

  it("task:stack is the traceback of a parked task, nil once done", function()
    local function deep() aio.sleep(30) end
    local t = aio.spawn(function() deep() end)
    aio.sleep(0)
    assert.matches("in upvalue 'deep'", t:stack())
    local state, what, deadline = t:waiting()
    assert.are.same({ "waiting", "sleep" }, { state, what })
    assert.is_true(deadline > aio.now())
    t:cancel()
    pcall(t.await, t)
    assert.is_nil(t:stack())
    assert.are.equal("done", t:waiting())
  end)
end)

-- run `aiolua -e code` (code's first line is the chunk's line 2, as the
-- tests' line numbers expect): its exit status and what it wrote to stderr
local function run_e(code)
  local err = os.tmpname()
  local bin = os.getenv("AIOLUA_BIN") or "./aiolua"
  local _, status = S.sh(bin .. ' -e "\n' .. code .. '" 2>' .. err)
  local text = io.open(err):read("a")
  os.remove(err)
  return status, text
end

describe("debug mode", function()
  it("warns once, naming the task, when a step holds the loop too long", function()
    local code, text = run_e([[
      local loop = aio.loop()
      loop:set_debug(true)
      local t = aio.spawn(function()
        local t0 = os.clock() while os.clock() - t0 < 0.2 do end
        aio.sleep(0)
      end)
      t.name = 'busy-task'
      t:await()
      aio.spawn(function() aio.sleep(0) end):await()
    ]])
    assert.are.equal(0, code)
    local n = select(2, text:gsub("held the loop", ""))
    assert.are.equal(1, n)
    assert.matches("busy%-task held the loop", text)
  end)

  -- an eager task's slow first step was also counted to the task that
  -- spawned it (two warnings); a slow last step printed an empty traceback
  it("warns once for an eager task's step, and names where an ended task came from", function()
    local code, text = run_e([[
      aio.loop():set_debug(true)
      local e = aio.spawn_eager(function()
        local t0 = os.clock() while os.clock() - t0 < 0.2 do end
        aio.sleep(0)
      end)
      e.name = 'eager-one'
      e:await()
      local f = aio.spawn(function()
        local t0 = os.clock() while os.clock() - t0 < 0.2 do end
      end)
      f.name = 'finisher'
      f:await()
    ]])
    assert.are.equal(0, code, text)
    assert.are.equal(2, select(2, text:gsub("held the loop", "")), text)
    -- (named after spawn_eager returned: its first step ran inside it)
    assert.matches("task Task%-%d+ held the loop [^\n]*it is now at:\nstack traceback:\n"
      .. "[^\n]*aio.sleep[^\n]*\n[^\n]*%(command line%):5:", text)
    assert.matches("task finisher held the loop for [%d.]+ s in one step %(slow_step 0.100 s%); "
      .. "it ended in that step; it was spawned at\nstack traceback:\n[^\n]*%(command line%):9:", text)
  end)

  -- asyncio reports a slow callback (a Handle) in debug mode; a slow
  -- call_soon callback used to go unreported
  it("warns for a callback that holds the loop, naming where its function is, once", function()
    local code, text = run_e([[
      local loop = aio.loop()
      local function busy() local t0 = os.clock() while os.clock() - t0 < 0.2 do end end
      loop:set_debug(true)
      loop:call_soon(busy)
      loop:call_soon(function() end)
      loop:call_later(0.01, os.clock)
      loop:call_later(0.01, function() end)
      loop:call_soon(function()
        aio.spawn_eager(function() busy() aio.sleep(0) end).name = 'inner'
      end)
      aio.sleep(0.05)
      loop:set_debug(false)
      loop:call_soon(busy)
      aio.sleep(0.01)
    ]])
    assert.are.equal(0, code, text)
    -- the busy callback while debug was on: once, at its function's line;
    -- the one that spawned a busy eager task: the task, not the callback
    assert.are.equal(2, select(2, text:gsub("held the loop", "")), text)
    assert.matches("aiolua: debug: callback function <%(command line%):3> held the loop for "
      .. "[%d.]+ s %(slow_step 0.100 s%)\n", text)
    assert.matches("task Task%-%d+ held the loop", text)
    assert.is_nil(text:find("callback function <(command line):11>", 1, true), text)
  end)

  it("SIGQUIT under aiolua prints the tasks and the program goes on", function()
    local bin = os.getenv("AIOLUA_BIN") or "./aiolua"
    local dir = os.tmpname()
    local script = dir .. ".lua"
    local f = io.open(script, "w")
    f:write([[
      local t = aio.spawn(function() aio.sleep(30) end)
      t.name = "quit-sleeper"
      io.stdout:write("ready\n") io.stdout:flush()
      for i = 1, 200 do aio.sleep(0.01) if io.open(arg[1] .. ".done") then break end end
      print("still running")
      t:cancel()
    ]])
    f:close()
    local out = S.sh(string.format(
      "%s %s %s > %s.out 2> %s.err & pid=$!; for i in $(seq 100); do grep -q ready %s.out && break; sleep 0.05; done; " ..
      "kill -QUIT $pid; for i in $(seq 100); do grep -q quit-sleeper %s.err && break; sleep 0.05; done; touch %s.done; wait $pid; echo $?",
      bin, script, dir, dir, dir, dir, dir, dir))
    local err = io.open(dir .. ".err"):read("a")
    local stdout = io.open(dir .. ".out"):read("a")
    for _, x in ipairs { script, dir .. ".out", dir .. ".err", dir .. ".done" } do os.remove(x) end
    assert.are.equal("0", out:match("%d+"))
    assert.matches("quit%-sleeper: waiting: sleep", err)
    assert.matches("still running", stdout)
  end)

  it("warns when a failed Future nobody looked at is collected", function()
    local bin = os.getenv("AIOLUA_BIN") or "./aiolua"
    local out = S.sh(bin .. [[ --debug -e "
      local f = aio.Future() f:set_error('lost-error-77') f = nil
      local g = aio.Future() g:set_error('seen') assert(g:error() == 'seen')
      local kept = g
      collectgarbage() collectgarbage()" 2>&1]])
    assert.matches("collected with an error nobody retrieved: lost%-error%-77", out)
    assert.is_nil(out:find("seen", 1, true))
  end)

  it("warns when a coroutine is collected while suspended", function()
    local bin = os.getenv("AIOLUA_BIN") or "./aiolua"
    local out = S.sh(bin .. [[ --debug -e "
      local function forgotten() coroutine.yield(1) end
      local co = coroutine.create(forgotten) coroutine.resume(co) co = nil
      local done = coroutine.wrap(function() return 1 end) done() done = nil
      collectgarbage() collectgarbage()" 2>&1]])
    local n = select(2, out:gsub("collected while suspended", ""))
    assert.are.equal(1, n)
    assert.matches("created at", out)
  end)

  it("aiolua --debug turns debug mode on", function()
    local bin = os.getenv("AIOLUA_BIN") or "./aiolua"
    local out = S.sh(bin .. [[ --debug -e "print(aio.loop():get_debug())"]])
    assert.are.equal("true\n", out)
  end)

  it("AIOLUA_DEBUG=1 keeps where a failed task was spawned", function()
    local bin = os.getenv("AIOLUA_BIN") or "./aiolua"
    local out = S.sh("AIOLUA_DEBUG=1 " .. bin .. [[ -e "aio.spawn(function() error('x') end) aio.sleep(0)" 2>&1]])
    assert.matches("spawned at", out)
    assert.matches("command line", out)
  end)

  it("loop.slow_step is a field, set_debug/get_debug toggle", function()
    local loop = aio.loop()
    local old = loop.slow_step
    loop.slow_step = 0.5
    assert.are.equal(0.5, loop.slow_step)
    loop.slow_step = old
    loop:set_debug(true)
    assert.is_true(loop:get_debug())
    loop:set_debug(false)
    assert.has_error(function() loop.nonsense = 1 end)
  end)
end)

describe("aio.ContextVar", function()
  it("get and set called without their variable are argument errors", function()
    local v = aio.ContextVar("v")
    assert.matches("bad argument #1 to 'aio.ContextVar.get' %(aio.ContextVar expected, got no value%)",
      S.error_of(v.get))
    assert.matches("bad argument #1 to 'aio.ContextVar.set' %(aio.ContextVar expected, got number%)",
      S.error_of(v.set, 0 / 0, 1))
    assert.matches("aio.ContextVar expected, got table", S.error_of(v.get, {}))
  end)

  it("children inherit a copy; siblings are isolated", function()
    local v = aio.ContextVar("request_id")
    assert.is_nil(v:get())
    assert.are.equal("d", v:get("d"))
    local parent = aio.spawn(function()
      v:set("p")
      local a = aio.spawn(function() local seen = v:get() v:set("a") aio.sleep(0) return seen, v:get() end)
      local b = aio.spawn(function() aio.sleep(0) return v:get() end)
      local a1, a2 = a:await()
      return a1, a2, b:await(), v:get()
    end)
    assert.are.same({ "p", "a", "p", "p" }, { parent:await() })
    assert.is_nil(v:get())  -- the main task never set it
  end)

  -- asyncio's Handle runs in the copy_context() taken when it was made
  it("call_soon and call_later run in a copy of the caller's context", function()
    local v = aio.ContextVar("cs")
    local loop = aio.loop()
    local seen = {}
    aio.spawn(function()
      v:set("at call")
      loop:call_soon(function() seen.soon = v:get(); v:set("in callback") end)
      loop:call_later(0.001, function()
        seen.later = v:get()
        -- a task spawned by a callback copies the callback's context
        seen.child = aio.spawn(function() return v:get() end)
      end)
      v:set("later on")  -- the copies were taken already
      aio.sleep(0.02)
      seen.task = v:get()
    end):await()
    assert.are.equal("at call", seen.soon)
    assert.are.equal("at call", seen.later)
    assert.are.equal("at call", seen.child:await())
    assert.are.equal("later on", seen.task)  -- what the callback set stayed there
    assert.is_nil(v:get())
    -- a callback scheduled where nothing was set sees the defaults
    loop:call_soon(function() seen.none = v:get("default") end)
    aio.sleep(0)
    assert.are.equal("default", seen.none)
  end)

  it("a done callback runs in the context add_done_callback was called in", function()
    local v = aio.ContextVar("dc")
    local seen = {}
    aio.spawn(function()
      local f = aio.Future()
      local function first() seen.first = v:get() end
      v:set("one")   f:add_done_callback(first)
      v:set("two")   f:add_done_callback(function() seen.second = v:get() end)
      f:remove_done_callback(first)  -- the others keep their own contexts
      v:set("three") f:add_done_callback(function() seen.third = v:get() end)
      local t = aio.spawn(function() v:set("inside") end)
      v:set("four")  t:add_done_callback(function() seen.task = v:get() end)
      t:await()
      v:set("five")  t:add_done_callback(function() seen.late = v:get() end)  -- already done
      f:set_result(true)
      aio.sleep(0)
    end):await()
    assert.is_nil(seen.first)
    assert.are.same({ second = "two", third = "three", task = "four", late = "five" }, seen)
  end)

  it("set returns the old value; a default at creation", function()
    local v = aio.ContextVar("x", 10)
    aio.spawn(function()
      assert.are.equal(10, v:get())
      assert.is_nil(v:set(1))
      assert.are.equal(1, v:set(2))
      assert.matches("x", tostring(v))
    end):await()
  end)
end)

describe("aio.spawn_eager", function()
  it("a task that never waits is done before spawn_eager returns", function()
    local t = aio.spawn_eager(function(a) return a * 2 end, 21)
    assert.is_true(t:done())
    assert.are.equal(42, t:result())
  end)

  it("runs until its first wait, then goes on as a normal task", function()
    local log = {}
    local t = aio.spawn_eager(function()
      log[#log + 1] = "started"
      aio.sleep(0)
      log[#log + 1] = "resumed"
      return aio.current_task()
    end)
    assert.are.same({ "started" }, log)
    assert.are.equal(t, t:await())
    assert.are.same({ "started", "resumed" }, log)
  end)

  it("an eager task's error goes into the task, not to the caller", function()
    local t = aio.spawn_eager(function() error("eager boom") end)
    assert.is_true(t:done())
    assert.matches("eager boom", S.error_of(t.await, t))
  end)

  it("the caller is the current task again afterwards", function()
    local me = aio.current_task()
    local t = aio.spawn_eager(function() aio.sleep(0) end)
    assert.are.equal(me, aio.current_task())
    t:await()
  end)
end)
