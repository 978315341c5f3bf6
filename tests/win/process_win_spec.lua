-- tests/win/process_win_spec.lua: subprocesses on Windows (CreateProcess,
-- overlapped named pipes, a registered wait for the exit), under wine.
-- The child is aiolua.exe itself, so nothing but wine is needed.
local aio = require "aio"

local EXE = "build\\win\\aiolua.exe"

local function lua_child(code, opts)
  return aio.exec({ EXE, "-e", code }, opts)
end

describe("subprocesses on Windows", function()
  it("exit codes come back through wait()", function()
    local p = lua_child("os.exit(7)")
    assert.equal(7, p:wait())
    assert.equal(7, p.returncode)
    assert.equal(0, lua_child("x = 1"):wait())
  end)

  it("communicate feeds stdin and reads stdout", function()
    local p = lua_child("io.write(io.read('a'):upper())", { stdin = "pipe", stdout = "pipe" })
    local out, err = p:communicate("b\na\n")
    assert.equal("B\r\nA\r\n", out)   -- the child's stdout is in text mode
    assert.is_nil(err)
    assert.equal(0, p.returncode)
  end)

  it("moves 1 MiB through stdin, stdout and stderr at once", function()
    local big = string.rep("0123456789abcdef", 65536)
    local r = aio.run_process({ EXE, "-e",
      "local s = io.read('a') io.write(s) io.stderr:write(#s)" }, { input = big })
    assert.equal(0, r.returncode)
    assert.equal(big, r.stdout)
    assert.equal("1048576", r.stderr)
  end)

  it("stderr can go to stdout; null discards", function()
    local r = aio.run_process({ EXE, "-e", "io.stderr:write('e') io.stdout:write('o')" },
      { stderr = "stdout" })
    assert.is_truthy(r.stdout:find("e", 1, true) and r.stdout:find("o", 1, true))
    local r2 = aio.run_process({ EXE, "-e", "io.write('gone')" }, { stdout = "null" })
    assert.is_nil(r2.stdout)
  end)

  it("arguments with spaces, quotes and backslashes arrive intact", function()
    local args = { "a b", 'say "hi"', [[C:\path\]], [[x\"y]], "" }
    local r = aio.run_process({ EXE, "tests/win/args.lua", table.unpack(args) })
    assert.equal("[a b][say \"hi\"][C:\\path\\][x\\\"y][]", r.stdout)
  end)

  it("env replaces the environment; cwd sets the directory", function()
    local r = aio.run_process({ EXE, "-e", "io.write(os.getenv('FOO') or '-', os.getenv('BAR') or '-')" },
      { env = { FOO = "foo", SystemRoot = os.getenv("SystemRoot") } })
    assert.equal("foo-", r.stdout)
    local r2 = aio.run_process({ "cmd", "/c", "cd" }, { cwd = "C:\\windows" })
    assert.matches("[Ww]indows", r2.stdout)
  end)

  it("a program that does not exist raises OSError ENOENT from exec", function()
    local ok, e = pcall(aio.exec, { "no-such-program-aiolua" })
    assert.is_false(ok)
    assert.equal("OSError", aio.errtype(e))
    assert.equal("ENOENT", e.code)
  end)

  it("kill and terminate end a running child: returncode 1, as asyncio on Windows", function()
    local p = lua_child("while true do end")
    aio.sleep(0.1)
    p:kill()
    assert.equal(1, p:wait())
    assert.equal(1, p.returncode)
    local q = lua_child("while true do end")
    q:terminate()
    assert.equal(1, q:wait())
    q:send_signal(15)                     -- exited: nothing to do, no error
    q:kill()
    assert.equal(1, q.returncode)
    local r = lua_child("os.exit(3)")     -- its own status stays its own
    assert.equal(3, r:wait())
    r:kill()
    assert.equal(3, r.returncode)
  end)

  -- spawner.lua starts a grandchild that shares its stdout and never ends:
  -- the pipe reaches EOF only once the grandchild is gone too
  local function pipe_eof(p)
    return aio.wait_for(function()
      local seen = {}
      while true do
        local l = p.stdout:readline()
        if not l then return seen end
        seen[#seen + 1] = l:gsub("\r?\n$", "")
      end
    end, 30)
  end

  local function spawner(how)
    local p = aio.exec({ EXE, "tests/win/spawner.lua", how }, { stdout = "pipe" })
    local up = {}
    while not (up["a up"] and up["b up"]) do
      local l = assert(p.stdout:readline(), "spawner ended early")
      up[(l:gsub("%s+$", ""))] = true
    end
    return p
  end

  it("children die with a parent that is killed (job object)", function()
    local p = spawner("wait")
    p:kill()
    assert.equal(1, p:wait())
    assert.same({}, pipe_eof(p))
  end)

  it("children die with a parent that exits (job object)", function()
    local p = spawner("exit")
    assert.equal(0, p:wait())
    assert.same({}, pipe_eof(p))
  end)

  it("a wait can be cancelled; the child is still watched", function()
    local p = lua_child("local t = os.time() while os.time() - t < 1 do end")
    local t = aio.spawn(p.wait, p)
    aio.sleep(0.05)
    t:cancel()
    assert.is_false(pcall(t.await, t))
    assert.equal(0, p:wait())
  end)

  it("aio.shell runs cmd.exe /c", function()
    local r = aio.run_process({ "cmd", "/c", "echo shell" })
    assert.matches("shell", r.stdout)
    local p = aio.shell("echo via shell", { stdout = "pipe" })
    assert.matches("via shell", p.stdout:read())
    assert.equal(0, p:wait())
  end)

  it("20 children at once", function()
    local ts = {}
    for i = 1, 20 do
      ts[i] = aio.spawn(aio.run_process, { EXE, "-e", "io.write(" .. i .. ") os.exit(" .. i .. ")" })
    end
    for i = 1, 20 do
      local r = ts[i]:await()
      assert.equal(i, r.returncode)
      assert.equal(tostring(i), r.stdout)
    end
  end)
end)
