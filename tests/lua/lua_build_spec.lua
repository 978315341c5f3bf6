-- the Lua that the aiolua program runs on: Debian's lua5.4, built by the
-- Makefile with src/host/lua_stack.patch (smaller first thread stacks that
-- grow by half).  It must behave as Debian's own for every Lua program.
local aio = require "aio"
local S = require "support"

local WINDOWS = package.config:sub(1, 1) == "\\"
local BIN = WINDOWS and "build\\win\\aiolua.exe" or os.getenv("AIOLUA_BIN") or "./aiolua"

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

  it("keeps a sleeping task under 1,100 bytes of Lua heap", function()
    -- in a process of its own: what earlier specs leave (a context
    -- variable, pooled threads) would count here
    local r = aio.run_process({ BIN, "-e", [[
      local N = 5000
      local function sleeper() aio.sleep(3600) end
      local tasks = {}
      for i = 1, N do tasks[i] = false end  -- the list's own slots come first
      collectgarbage() collectgarbage()
      local before = collectgarbage("count")
      for i = 1, N do tasks[i] = aio.spawn(sleeper) end
      aio.sleep(0)
      collectgarbage() collectgarbage()
      local per = (collectgarbage("count") - before) * 1024 / N
      for i = 1, N do tasks[i]:cancel() end
      for i = 1, N do assert(not pcall(tasks[i].await, tasks[i])) end
      print(string.format("per-task %.0f", per))
    ]] })
    local out = r.stdout .. r.stderr
    local per = tonumber(out:match("per%-task (%d+)"))
    assert.is_truthy(per, out)
    -- a stock Lua 5.4 thread alone is over 1,050 bytes; tasks measured 1,250
    assert.is_true(per < 1100, per .. " bytes per sleeping task")
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
end)
