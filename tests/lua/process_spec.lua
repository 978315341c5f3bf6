-- process_spec.lua: aio.exec, aio.shell, Process, aio.run_process with
-- real programs (cat, sh, sleep, kill, yes | head).  No timing assertions
-- beyond "did not hang" (the helper's per-test deadline).
local aio = require "aio"
local S = require "support"

local function mypid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = tonumber(f:read("a"):match("^(%d+)"))
  f:close()
  return pid
end

-- children of ours in state Z
local function zombies()
  local me, n = mypid(), 0
  local f = io.open("/proc/" .. me .. "/task/" .. me .. "/children")
  local kids = f and f:read("a") or ""
  if f then f:close() end
  for pid in kids:gmatch("%d+") do
    local st = io.open("/proc/" .. pid .. "/stat")
    if st then
      local state = st:read("a"):match("^%d+ %b() (%u)")
      st:close()
      if state == "Z" then n = n + 1 end
    end
  end
  return n
end

local function cloexec(fd)
  local f = io.open("/proc/self/fdinfo/" .. fd)
  if not f then return nil end
  local flags = f:read("a"):match("flags:%s*(%d+)")
  f:close()
  return (tonumber(flags, 8) & tonumber("2000000", 8)) ~= 0
end

describe("aio.exec", function()
  it("reads a child's stdout and its returncode", function()
    local p = aio.exec({ "echo", "hello", "world" }, { stdout = "pipe" })
    assert.is_true(p.pid > 0)
    assert.is_nil(p.stdin)
    assert.equal("hello world\n", p.stdout:read())
    assert.is_nil(p.stdout:read())
    assert.equal(0, p:wait())
    assert.equal(0, p.returncode)
  end)

  it("returncode is nil while running, the exit status after", function()
    local p = aio.shell("read x; exit 7", { stdin = "pipe" })
    assert.is_nil(p.returncode)
    p.stdin:write("go\n")
    assert.equal(7, p:wait())
    assert.equal(7, p.returncode)
  end)

  -- asyncio: pid and returncode are read-only properties
  it("refuses assignments to pid and returncode", function()
    local p = aio.exec({ "true" })
    local pid = p.pid
    assert.matches("^[^:]*process_spec.lua:%d+: aio.Process: field 'returncode' is read%-only",
      S.error_of(function() p.returncode = 1 end))
    assert.matches("field 'pid' is read%-only", S.error_of(function() p.pid = 1 end))
    assert.equal(pid, p.pid)
    assert.equal(0, p:wait())
    assert.equal(0, p.returncode)
    p.note = "users may keep their own fields"
    assert.equal("users may keep their own fields", p.note)
  end)

  it("raises OSError ENOENT for a missing program, from exec itself", function()
    local fds = S.fd_count()
    local e = S.error_of(aio.exec, { "/nonexistent/dir/program" })
    assert.equal("OSError", aio.errtype(e))
    assert.equal("ENOENT", e.code)
    e = S.error_of(aio.exec, { "aiolua-no-such-program" }, { stdout = "pipe", stderr = "pipe" })
    assert.equal("ENOENT", e.code)
    assert.equal(fds, S.fd_count())
  end)

  it("raises OSError EACCES for a file that is not executable", function()
    local e = S.error_of(aio.exec, { "/etc/passwd" })
    assert.equal("EACCES", e.code)
  end)

  it("raises OSError for a missing cwd", function()
    local e = S.error_of(aio.exec, { "true" }, { cwd = "/nonexistent-dir" })
    assert.equal("ENOENT", e.code)
  end)

  it("rejects bad arguments with plain errors", function()
    assert.has_error(function() aio.exec({}) end)
    assert.has_error(function() aio.exec("ls") end)
    assert.has_error(function() aio.exec({ "ls" }, { stdout = "file" }) end)
    assert.has_error(function() aio.exec({ "ls" }, { stdin = "stdout" }) end)
  end)

  it("sets cwd and replaces the environment", function()
    local r = aio.run_process({ "sh", "-c", 'pwd; echo "[$FOO][$HOME]"' },
      { cwd = "/tmp", env = { FOO = "bar", PATH = "/usr/bin:/bin" } })
    assert.equal("/tmp\n[bar][]\n", r.stdout)
  end)

  it("closes the parent's other fds in the child (asyncio's close_fds)", function()
    -- io.open makes no close-on-exec fd; the child must not get it
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    local function child_fds(r)
      local fds = {}
      for fd in r:gmatch("%d+") do fds[#fds + 1] = tonumber(fd) end
      return fds
    end
    -- sh lists its own fds: 0, 1, 2 only (a pipe, a null, inherited)
    local r = aio.run_process({ "sh", "-c", "ls /proc/$$/fd" })
    assert.are.same({ 0, 1, 2 }, child_fds(r.stdout))
    local p = aio.exec({ "sh", "-c", "ls /proc/$$/fd" }, { stdout = "pipe", stdin = "null" })
    assert.are.same({ 0, 1, 2 }, child_fds(p.stdout:read()))
    assert.are.equal(0, p:wait())
    f:close()
    os.remove(path)
  end)

  it("at_eof() on the stdin pipe's reader side neither ends nor closes it", function()
    -- the child's stdin is write-only here: nothing to read, no end
    local p = aio.exec({ "cat" }, { stdin = "pipe", stdout = "pipe" })
    assert.is_false(p.stdin:reader():at_eof())
    p.stdin:write("hello\n")
    p.stdin:close()
    assert.are.equal("hello\n", p.stdout:read())
    assert.are.equal(0, p:wait())
  end)

  it("searches PATH of the new environment", function()
    local r = aio.run_process({ "sh", "-c", "echo ok" }, { env = { PATH = "/bin:/usr/bin" } })
    assert.equal("ok\n", r.stdout)
    local e = S.error_of(aio.exec, { "sh" }, { env = { PATH = "/nonexistent" } })
    assert.equal("ENOENT", e.code)
  end)

  it("stdin/stdout null and stderr to stdout", function()
    local r = aio.run_process({ "sh", "-c", "cat; echo out; echo err >&2" },
      { stdin = "null", stderr = "stdout" })
    assert.equal("out\nerr\n", r.stdout)
    assert.is_nil(r.stderr)
    r = aio.run_process({ "sh", "-c", "echo out" }, { stdout = "null" })
    assert.is_nil(r.stdout)
  end)

  it("aio.shell runs a command line", function()
    local p = aio.shell("yes | head -n 3", { stdout = "pipe" })
    local out = p:communicate()
    assert.equal("y\ny\ny\n", out)
    assert.equal(0, p.returncode)
  end)

  it("gives the child default signal dispositions and an empty mask", function()
    -- the host ignores SIGPIPE and the loop blocks signals it watches
    aio.loop():add_signal_handler("SIGUSR1", function() end)
    local r = aio.run_process({ "sh", "-c", "grep -E '^Sig(Blk|Ign)' /proc/self/status" })
    aio.loop():remove_signal_handler("SIGUSR1")
    assert.matches("SigBlk:%s*0+\n", r.stdout)
    -- 32 and up belong to the C library; 1-31 must be default
    local ign = tonumber(r.stdout:match("SigIgn:%s*(%x+)"), 16)
    assert.equal(0, ign & 0x7fffffff)
    -- and yes | head ends by SIGPIPE, not by looping forever
    local y = aio.run_process({ "sh", "-c", "yes | head -c 100000 | wc -c" })
    assert.equal("100000", y.stdout:match("%d+"))
  end)

  it("leaks none of our fds into the child", function()
    local srv = aio.start_server(function() end, "127.0.0.1", 0)
    local r = aio.run_process({ "ls", "/proc/self/fd" })
    srv:close()
    srv:wait_closed()
    local own = 0
    for fd in r.stdout:gmatch("%d+") do
      fd = tonumber(fd)
      if fd > 2 then
        -- what the child has beyond 0-2 is ls's own directory fd, or an
        -- fd our parent gave us without close-on-exec
        if cloexec(fd) then own = own + 1 end
      end
    end
    assert.is_true(own <= 1, "child got our fds: " .. r.stdout)  -- ls's dir fd may collide
  end)

  it("keeps our fd count after many children", function()
    collectgarbage()
    collectgarbage()
    local before = S.fd_count()
    for _ = 1, 20 do
      local r = aio.run_process({ "cat" }, { input = "x" })
      assert.equal("x", r.stdout)
    end
    for _ = 1, 5 do pcall(aio.exec, { "/nonexistent" }, { stdin = "pipe", stdout = "pipe" }) end
    collectgarbage()
    assert.equal(before, S.fd_count())
  end)
end)

describe("strings a child cannot get", function()
  it("a zero byte in argv, the command line, env or cwd is an argument error", function()
    local function err(f) local ok, e = pcall(f) assert.is_false(ok) return e end
    assert.matches("process_spec.lua:%d+: run_process: argv%[2%] contains a zero byte",
      err(function() aio.run_process({ "echo", "a\0b" }) end))
    assert.matches("process_spec.lua:%d+: bad argument #1 to 'shell' %(contains a zero byte%)",
      err(function() aio.shell("echo hi\0; echo evil") end))
    assert.matches("process_spec.lua:%d+: exec: opts.env.X contains a zero byte",
      err(function() aio.exec({ "true" }, { env = { X = "a\0b" } }) end))
    assert.matches("process_spec.lua:%d+: exec: an opts.env name contains a zero byte",
      err(function() aio.exec({ "true" }, { env = { ["X\0Y"] = "v" } }) end))
    assert.matches("process_spec.lua:%d+: exec: opts.env: bad name 'A=B'",
      err(function() aio.exec({ "true" }, { env = { ["A=B"] = "v" } }) end))
    assert.matches("process_spec.lua:%d+: run_process: opts.cwd contains a zero byte",
      err(function() aio.run_process({ "true" }, { cwd = "/tmp\0/junk" }) end))
  end)
end)

describe("children the loop did not start", function()
  -- the loop reaps only its own children (a pidfd each), never with
  -- waitpid(-1): io.popen's and os.execute's status stays theirs
  it("io.popen's close and os.execute still get their status", function()
    local f = io.popen("exit 3")
    local p = aio.exec({ "sh", "-c", "exit 5" })   -- a child of ours, meanwhile
    aio.sleep(0.2)                                 -- the popen child has exited
    assert.equal(5, p:wait())
    f:read("a")
    assert.are.same({ nil, "exit", 3 }, { f:close() })
    local p2 = aio.exec({ "sleep", "0.1" })
    assert.are.same({ nil, "exit", 4 }, { os.execute("exit 4") })
    assert.equal(0, p2:wait())
  end)
end)

describe("a child's output pipe", function()
  -- closed once read to its end, as asyncio's pipe transport is at EOF:
  -- not left to the collector (stopped here)
  it("is closed when read to EOF, by read, lines, readexactly or readuntil", function()
    collectgarbage()
    collectgarbage("stop")
    local ok, err = pcall(function()
      local before = S.fd_count()
      local p = aio.exec({ "echo", "x" }, { stdout = "pipe" })
      -- the pipe, and the pidfd watching the child (Linux 5.3 and later)
      assert.is_true(S.fd_count() > before)
      assert.equal("x\n", p.stdout:read())
      assert.is_nil(p.stdout:read())
      assert.equal(0, p:wait())
      assert.equal(before, S.fd_count())
      assert.is_true(p.stdout:at_eof())
      assert.is_nil(p.stdout:read())           -- and again, still nil
      p = aio.exec({ "sh", "-c", "echo a; echo b" }, { stdout = "pipe" })
      local lines = {}
      for l in p.stdout:lines() do lines[#lines + 1] = l end
      assert.same({ "a", "b" }, lines)
      p:wait()
      assert.equal(before, S.fd_count())
      p = aio.exec({ "sh", "-c", "printf abc >&2" }, { stderr = "pipe" })
      local e = S.error_of(p.stderr.readexactly, p.stderr, 5)
      assert.equal("IncompleteReadError", aio.errtype(e))
      assert.equal("abc", e.partial)
      p:wait()
      assert.equal(before, S.fd_count())
      p = aio.exec({ "sh", "-c", "printf 'a;b'" }, { stdout = "pipe" })
      assert.equal("a;", p.stdout:readuntil(";"))
      assert.equal("IncompleteReadError", aio.errtype(S.error_of(p.stdout.readuntil, p.stdout, ";")))
      p:wait()
      assert.equal(before, S.fd_count())
      -- all until EOF in one read; readline at EOF
      p = aio.exec({ "sh", "-c", "printf 'x\ny'" }, { stdout = "pipe" })
      assert.equal("x\ny", p.stdout:read())
      assert.is_nil(p.stdout:readline())
      p:wait()
      assert.equal(before, S.fd_count())
    end)
    collectgarbage("restart")
    assert(ok, err)
  end)

  it("is not closed before its last byte is read, though the child has exited", function()
    collectgarbage()
    collectgarbage("stop")
    local ok, err = pcall(function()
      local p = aio.exec({ "sh", "-c", "printf 'one\ntwo\n'" }, { stdout = "pipe" })
      assert.equal(0, p:wait())
      assert.equal("one\n", p.stdout:readline())
      aio.sleep(0.05)                          -- EOF has long arrived
      local open = S.fd_count()                -- the pipe is one of them
      assert.equal("two\n", p.stdout:readline())
      assert.is_nil(p.stdout:readline())
      assert.equal(open - 1, S.fd_count())
    end)
    collectgarbage("restart")
    assert(ok, err)
  end)
end)

describe("Process:communicate", function()
  it("round-trips 20 MB through cat without deadlock", function()
    local data = string.rep("0123456789abcdef", 20 * 65536)
    local p = aio.exec({ "cat" }, { stdin = "pipe", stdout = "pipe" })
    local out, err = p:communicate(data)
    assert.equal(#data, #out)
    assert.is_true(out == data)
    assert.is_nil(err)
    assert.equal(0, p.returncode)
  end)

  it("reads large stdout and stderr at once", function()
    local p = aio.shell("head -c 3000000 /dev/zero; head -c 3000000 /dev/zero >&2; " ..
      "head -c 2000000 /dev/zero", { stdout = "pipe", stderr = "pipe" })
    local o, e = p:communicate()
    assert.equal(5000000, #o)
    assert.equal(3000000, #e)
  end)

  it("ignores EPIPE when the child exits before reading its input", function()
    local p = aio.exec({ "true" }, { stdin = "pipe", stdout = "pipe" })
    local out = p:communicate(string.rep("x", 4 * 1024 * 1024))
    assert.equal("", out)
    assert.equal(0, p.returncode)
  end)

  -- asyncio: input for a stdin closed already is dropped, and communicate
  -- still reads and waits; it raised "write: the writer is closed"
  it("communicate(input) after stdin was closed, or a second time, goes on", function()
    local p = aio.exec({ "cat" }, { stdin = "pipe", stdout = "pipe" })
    assert.are.equal("abc", p:communicate("abc"))
    local out, err = p:communicate("again")
    assert.are.equal("", out)
    assert.is_nil(err)
    assert.are.equal(0, p.returncode)
    local q = aio.exec({ "cat" }, { stdin = "pipe", stdout = "pipe" })
    q.stdin:close()
    assert.are.equal("", q:communicate("late"))
    assert.are.equal(0, q.returncode)
  end)

  it("cancelling communicate leaves the child running; it is reaped later", function()
    local p = aio.exec({ "sleep", "0.2" }, { stdin = "pipe", stdout = "pipe", stderr = "pipe" })
    local t = aio.spawn(p.communicate, p, "data")
    aio.sleep(0.02)
    t:cancel()
    assert.equal("CancelledError", aio.errtype(select(2, pcall(t.await, t))))
    assert.is_nil(p.returncode)
    assert.equal(0, p:wait())
  end)
end)

describe("writing to a child that exited", function()
  it("raises OSError EPIPE, no crash", function()
    local p = aio.exec({ "true" }, { stdin = "pipe" })
    p:wait()
    local e = S.error_of(function()
      for _ = 1, 100 do
        p.stdin:write(string.rep("x", 65536))
        p.stdin:drain()
      end
    end)
    assert.equal("OSError", aio.errtype(e))
    assert.equal("EPIPE", e.code)
    p.stdin:close()
  end)
end)

describe("signals to children", function()
  it("terminate, kill and send_signal give -signum", function()
    local p = aio.exec({ "sleep", "30" })
    p:terminate()
    assert.equal(-15, p:wait())
    p = aio.exec({ "sleep", "30" })
    p:kill()
    assert.equal(-9, p:wait())
    p = aio.exec({ "sleep", "30" })
    p:send_signal("SIGUSR1")
    assert.equal(-10, p:wait())
    p = aio.exec({ "sleep", "30" })
    p:send_signal(2)
    assert.equal(-2, p:wait())
  end)

  it("are no-ops once the process has exited", function()
    local p = aio.exec({ "true" })
    p:wait()
    p:terminate()
    p:kill()
    p:send_signal("SIGTERM")
    assert.equal(0, p.returncode)
    assert.has_error(function() p:send_signal("SIGNOPE") end)
  end)

  it("send_signal(0) only asks, before and after the exit (kill(pid, 0))", function()
    local p = aio.exec({ "sleep", "5" })
    p:send_signal(0)
    assert.is_nil(p.returncode)
    p:kill()
    assert.are.equal(-9, p:wait())
    p:send_signal(0)
    assert.has_error(function() p:send_signal(-1) end)
  end)
end)

describe("Process:wait", function()
  it("cancelling wait leaves the child running and still reaps it", function()
    local p = aio.exec({ "sleep", "0.2" })
    local t = aio.spawn(p.wait, p)
    aio.sleep(0.02)
    t:cancel()
    pcall(t.await, t)
    assert.is_true(t:cancelled())
    assert.is_nil(p.returncode)
    assert.is_true(S.wait_until(function() return p.returncode ~= nil end, 5))
    assert.equal(0, p.returncode)
    assert.equal(0, zombies())
  end)

  it("several tasks may wait for one process", function()
    local p = aio.exec({ "sh", "-c", "exit 4" })
    local a = aio.spawn(p.wait, p)
    local b = aio.spawn(p.wait, p)
    assert.equal(4, a:await())
    assert.equal(4, b:await())
  end)

  it("cancelling a read of stdout", function()
    local p = aio.exec({ "sleep", "0.1" }, { stdout = "pipe" })
    local t = aio.spawn(p.stdout.read, p.stdout)
    aio.sleep(0.01)
    t:cancel()
    pcall(t.await, t)
    assert.is_true(t:cancelled())
    assert.is_nil(p.stdout:read())
    p:wait()
  end)

  it("cancelling a drain of stdin", function()
    local p = aio.exec({ "sleep", "0.2" }, { stdin = "pipe" })
    local t = aio.spawn(function()
      p.stdin:write(string.rep("x", 1024 * 1024))
      p.stdin:drain()
    end)
    aio.sleep(0.02)
    t:cancel()
    pcall(t.await, t)
    assert.is_true(t:cancelled())
    p:kill()
    p.stdin:close()
    assert.equal(-9, p:wait())
  end)
end)

describe("zombies", function()
  it("none after many short children, waited for or not", function()
    for _ = 1, 30 do aio.exec({ "true" }) end
    for _ = 1, 30 do aio.exec({ "true" }):wait() end
    local p = aio.exec({ "sleep", "0.05" })
    p:wait()
    collectgarbage()
    assert.is_true(S.wait_until(function() return zombies() == 0 end, 5))
  end)
end)

describe("Process methods called with '.'", function()
  it("are misuse errors naming the method, at the caller's line", function()
    local p = aio.exec({ "true" })
    local line = debug.getinfo(1, "l").currentline
    local e = S.error_of(function() p.wait() end)
    assert.matches("process_spec.lua:" .. (line + 1) .. ": bad argument #1 to 'wait' %(aio.Process expected, got no value%)", e)
    for _, m in ipairs({ "terminate", "kill", "communicate", "send_signal" }) do
      assert.matches("bad argument #1 to '" .. m .. "' %(aio.Process expected, got table%)", S.error_of(p[m], {}))
    end
    assert.are.equal(0, p:wait())
  end)
end)

describe("a child that outlives its loop", function()
  -- asyncio's threaded child watcher reaps a child whose loop has closed;
  -- ours stayed a zombie until a later loop started a child
  it("is reaped when it exits, with no loop left (stock lua5.4 and aio.so)", function()
    local got, rc = S.script(S.STOCK_LUA, [[
      local aio = require "aio"
      local pid = aio.run(function() return aio.exec({ "sleep", "0.2" }).pid end)
      local state = "?"
      for _ = 1, 100 do  -- up to 5 s
        os.execute("sleep 0.05")
        local st = io.open("/proc/" .. pid .. "/stat")
        state = st and st:read("a"):match("^%d+ %b() (%u)") or "gone"
        if st then st:close() end
        if state == "gone" then break end
      end
      print(state)
      -- the children of io.popen and os.execute keep their status
      print(io.popen("exit 3"):close())
      print(os.execute("exit 4"))
    ]])
    assert.are.equal(0, rc, got)
    assert.are.equal("gone\nnil\texit\t3\nnil\texit\t4\n", got)
  end)
end)

describe("many children", function()
  it("a Process collected while its child runs: the child is still reaped", function()
    for _ = 1, 10 do aio.exec({ "sleep", "0.05" }) end
    collectgarbage()
    collectgarbage()
    aio.sleep(0.1)
    assert.is_true(S.wait_until(function() return zombies() == 0 end, 5))
  end)

  it("50 at once, each with pipes", function()
    collectgarbage()
    collectgarbage()
    local before = S.fd_count()
    local tasks = {}
    for i = 1, 50 do
      tasks[i] = aio.spawn(aio.run_process, { "sh", "-c", "cat; echo " .. i .. " >&2" },
        { input = string.rep("x", i * 1000) })
    end
    for i = 1, 50 do
      local r = tasks[i]:await()
      assert.equal(i * 1000, #r.stdout)
      assert.equal(i .. "\n", r.stderr)
      assert.equal(0, r.returncode)
    end
    collectgarbage()
    collectgarbage()
    assert.equal(before, S.fd_count())
    assert.equal(0, zombies())
  end)
end)

describe("aio.run_process", function()
  it("captures stdout and stderr and the returncode", function()
    local r = aio.run_process({ "sh", "-c", "echo out; echo err >&2; exit 3" })
    assert.same({ returncode = 3, stdout = "out\n", stderr = "err\n" }, r)
  end)

  it("feeds input", function()
    local r = aio.run_process({ "cat" }, { input = "abc" })
    assert.equal("abc", r.stdout)
  end)

  it("check raises ProcessError with the details", function()
    local e = S.error_of(aio.run_process, { "sh", "-c", "echo o; echo e >&2; exit 2" },
      { check = true })
    assert.equal("ProcessError", aio.errtype(e))
    assert.equal(2, e.returncode)
    assert.equal("o\n", e.stdout)
    assert.equal("e\n", e.stderr)
    assert.equal(0, aio.run_process({ "true" }, { check = true }).returncode)
  end)

  it("timeout kills the child and raises TimeoutError", function()
    collectgarbage()
    collectgarbage()
    local before = S.fd_count()
    local e = S.error_of(aio.run_process, { "sleep", "30" }, { timeout = 0.1 })
    assert.equal("TimeoutError", aio.errtype(e))
    assert.is_true(S.wait_until(function() return zombies() == 0 end, 5))
    collectgarbage()
    assert.equal(before, S.fd_count())
  end)

  it("a timeout that is not a number (or NaN) is an argument error", function()
    assert.matches("opts.timeout must be a number", S.error_of(aio.run_process, { "true" }, { timeout = 0 / 0 }))
    assert.matches("opts.timeout must be a number", S.error_of(aio.run_process, { "true" }, { timeout = "1" }))
  end)

  it("timeout: the child is killed and reaped before TimeoutError is raised", function()
    local pidfile = os.tmpname()
    local e = S.error_of(aio.run_process,
      { "sh", "-c", "echo $$ > " .. pidfile .. "; exec sleep 30" }, { timeout = 0.2 })
    assert.equal("TimeoutError", aio.errtype(e))
    local f = assert(io.open(pidfile))
    local pid = f:read("n")
    f:close()
    os.remove(pidfile)
    assert.is_number(pid)
    -- at once: no zombie left to reap, the pid is gone
    assert.is_nil(io.open("/proc/" .. pid .. "/stat"))
  end)

  it("a cancelled run_process kills its child", function()
    local t = aio.spawn(aio.run_process, { "sleep", "30" })
    aio.sleep(0.05)
    t:cancel()
    pcall(t.await, t)
    assert.is_true(t:cancelled())
    assert.is_true(S.wait_until(function() return zombies() == 0 end, 5))
  end)
end)

describe("the examples", function()
  local BIN = os.getenv("AIOLUA_BIN") or "./aiolua"

  it("jobs.lua runs jobs with a limit and prefixes their output", function()
    local r = aio.run_process({ BIN, "examples/jobs.lua", "-j", "2",
      "echo one", "echo two >&2; exit 3", "yes | head -n 2" })
    assert.equal(1, r.returncode)  -- one job failed
    assert.matches("%[1%] one\n", r.stdout)
    assert.matches("%[2!%] two\n", r.stdout)
    assert.matches("%[2%] exit 3\n", r.stdout)
    assert.matches("%[3%] y\n%[3%] y\n", r.stdout)
    assert.matches("3 job%(s%), 1 failed", r.stdout)
  end)

  it("graceful_server.lua stops on SIGTERM and exits 0", function()
    local p = aio.exec({ BIN, "examples/graceful_server.lua", "0" },
      { stdout = "pipe", stderr = "pipe" })
    local first = p.stdout:readline()
    assert.matches("listening on 127%.0%.0%.1 port %d+", first)
    local port = tonumber(first:match("port (%d+)"))
    local r, w = aio.open_connection("127.0.0.1", port)
    w:write("hello\n")
    assert.equal("HELLO\n", r:readline())
    p:terminate()
    w:write("still here\n")  -- the connection in progress goes on
    assert.equal("STILL HERE\n", r:readline())
    w:close()
    local out = p:communicate()
    assert.equal(0, p.returncode)
    assert.matches("SIGTERM: no longer accepting", out)
    assert.matches("bye", out)
  end)
end)
