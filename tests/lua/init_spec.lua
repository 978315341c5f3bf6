-- the aio table (lua/aio/init.lua): every public name reachable, the policy
-- modules loaded on first use, and their errors still with file names and
-- line numbers (the modules are embedded as bytecode, src/host/embed_lua.sh).
-- Each check runs in a fresh aiolua (or stock lua5.4 with build/aio.so),
-- since in this busted run the modules are loaded already.
local S = require "support"

local BIN = os.getenv("AIOLUA_BIN") or "./aiolua"
local TMP = os.tmpname()
os.remove(TMP)
os.execute("mkdir -p " .. TMP)

local function slurp(path)
  local f = assert(io.open(path))
  local s = f:read("a")
  f:close()
  return s
end

-- run `code` in a fresh aiolua (or lua5.4 with aio.so when stock); output
-- (stdout and stderr) and exit status
local function fresh(code, stock)
  local path = TMP .. "/chunk.lua"
  local f = assert(io.open(path, "w"))
  f:write(code)
  f:close()
  local cmd = stock and "env -u LUA_INIT -u LUA_PATH LUA_CPATH='build/?.so;;' lua5.4 "
    or "env -u LUA_INIT -u LUA_INIT_5_4 -u LUA_PATH -u LUA_CPATH " .. BIN .. " "
  return S.sh(cmd .. path .. " 2>&1 </dev/null")
end

-- the modules whose names join aio, as init.lua lists them
local MODULES = {}
do
  local list = slurp("lua/aio/init.lua"):match("local MODULES = (%b{})")
  for name in list:gmatch('"([%w_]+)"') do MODULES[#MODULES + 1] = name end
end

-- the line of the first line matching `pattern` in lua/aio/<mod>.lua
local function line_of(mod, pattern)
  local n = 0
  for line in io.lines("lua/aio/" .. mod .. ".lua") do
    n = n + 1
    if line:find(pattern) then return n end
  end
  error("no line matches " .. pattern .. " in " .. mod)
end

describe("the aio table", function()
  it("knows its modules", function()
    assert.is_true(#MODULES >= 11)
    for _, m in ipairs({ "stream", "combinators", "sync", "queue", "tls" }) do
      assert.is_truthy(table.concat(MODULES, " "):find(m, 1, true))
    end
  end)

  it("loads no policy module at start-up, in aiolua and in a stock lua5.4", function()
    local code = [[
      local aio = require "aio"
      local loaded = {}
      for k in pairs(package.loaded) do  -- (aio.Future, aio.Task ...: the
        -- C methods' tables, there to name them in errors, are no modules)
        if k:match("^aio%.%l") then loaded[#loaded + 1] = k end
      end
      table.sort(loaded)
      print("loaded:" .. table.concat(loaded, ","))
    ]]
    local out, status = fresh(code)
    assert.are.equal(0, status)
    assert.are.equal("loaded:\n", out)
    out, status = fresh(code, true)
    assert.are.equal(0, status)
    assert.are.equal("loaded:\n", out)
  end)

  for _, mod in ipairs(MODULES) do
    it("gives every name of aio." .. mod .. ", loading that module only for them", function()
      local out, status = fresh(string.format([[
        local m = require "aio.%s"
        local n = 0
        for k, v in pairs(m) do
          assert(aio[k] == v, "aio." .. k .. " is not aio.%s's")
          assert(rawget(aio, k) == v, "aio." .. k .. " did not become a field")
          -- a name missing from init.lua's map loads everything and drops
          -- the metatable: on a new aio table, each name first
          local a = dofile("lua/aio/init.lua")
          assert(a[k] == v and getmetatable(a) ~= nil,
                 "aio." .. k .. " is missing from init.lua's WHERE")
          n = n + 1
        end
        print(n > 0, getmetatable(aio) ~= nil)
      ]], mod, mod))
      assert.are.equal(0, status, out)
      assert.are.equal("true\ttrue\n", out)
    end)
  end

  it("gives the C core's names and aio.testing without loading the modules", function()
    local out, status = fresh([[
      local core = require "_aio.core"
      for _, k in ipairs({ "run", "loop", "sleep", "now", "spawn", "spawn_eager",
                           "current_task", "all_tasks", "Future", "errtype" }) do
        assert(rawget(aio, k) == core[k], k)
      end
      assert(aio.version == core.version and aio.backend == core.backend)
      assert(aio.testing == require "aio.testing")
      print(package.loaded["aio.stream"], package.loaded["aio.combinators"])
    ]])
    assert.are.equal(0, status, out)
    assert.are.equal("nil\tnil\n", out)
  end)

  it("pairs(aio) sees every public name, as when all loaded up front", function()
    local list = '"' .. table.concat(MODULES, '", "') .. '"'
    local out, status = fresh(string.format([[
      local seen = {}
      for k, v in pairs(aio) do seen[k] = v end
      local missing = {}
      for _, mod in ipairs({ %s }) do
        for k, v in pairs(require("aio." .. mod)) do
          if seen[k] ~= v then missing[#missing + 1] = k end
        end
      end
      assert(seen.testing == require "aio.testing" and seen.spawn == aio.spawn)
      print("missing:" .. table.concat(missing, ","), getmetatable(aio))
    ]], list))
    assert.are.equal(0, status, out)
    assert.are.equal("missing:\tnil\n", out)
  end)

  it("answers nil for an unknown name, after loading everything", function()
    local out, status = fresh([[
      print(aio.no_such_name, package.loaded["aio.tls"] ~= nil, aio.no_such_name)
    ]])
    assert.are.equal(0, status, out)
    assert.are.equal("nil\ttrue\tnil\n", out)
  end)

  it("keeps a field the program set before the module loaded", function()
    local out, status = fresh([[
      local mine = function() return "mine" end
      aio.gather = mine
      print(aio.gather(), aio.wait_for ~= nil, aio.gather == mine)
    ]])
    assert.are.equal(0, status, out)
    assert.are.equal("mine\ttrue\ttrue\n", out)
  end)

  it("raises a module's load error at the first use, and tries again at the next", function()
    local out, status = fresh([[
      package.preload["aio.udp"] = function() error("udp will not load") end
      local ok, err = pcall(function() return aio.open_udp end)
      print(ok, err)
      package.preload["aio.udp"] = function() return { open_udp = "second" } end
      print(aio.open_udp)
    ]])
    assert.are.equal(0, status, out)
    assert.matches("^false\t[^\n]*udp will not load\nsecond\n$", out)
  end)

  it("errors inside a lazily loaded module keep its file name and line numbers", function()
    local raise = line_of("combinators", "^    error%(string%.format%(\"%%s: bad argument #%%d %(task")
    local defined = line_of("combinators", "^function M%.gather%(")
    local out, status = fresh([[
      local info = debug.getinfo(aio.gather, "S")
      print(info.source, info.linedefined)
      local ok, tb = xpcall(function() aio.gather(1) end, debug.traceback)
      print(tb)
      local t = aio.spawn(aio.gather, "x")
      pcall(t.await, t)
      print(t:traceback())
    ]])
    assert.are.equal(0, status, out)
    assert.matches("^@aio%.combinators%.lua\t" .. defined .. "\n", out)
    -- the message points at the caller (level 2), the traceback into the module
    assert.matches("chunk%.lua:3: aio%.gather: bad argument #1 %(task, future or function expected, got number%)", out)
    local _, n = out:gsub("aio%.combinators%.lua:" .. raise .. ": in upvalue 'check_awaitable'", "")
    assert.are.equal(2, n, out)
  end)

  it("runs each module once per state, even after package.loaded forgot it", function()
    local out, status = fresh([[
      local r, w = aio.open_connection ~= nil, nil
      local stream, C = require "aio.stream", require "_aio.stream"
      local lines = C.Reader.lines
      for _, k in ipairs({ "aio.stream", "_aio.stream" }) do package.loaded[k] = nil end
      print(require "aio.stream" == stream, require "_aio.stream" == C,
            require("_aio.stream").Reader.lines == lines)
    ]])
    assert.are.equal(0, status, out)
    assert.are.equal("true\ttrue\ttrue\n", out)
  end)

  it("names a misused C function as API.md does, whatever was loaded before", function()
    -- luaL_argerror names a function under pcall by a search of
    -- package.loaded: aio.sleep is also in _aio.core, and which name came
    -- first depended on the modules loaded
    for _, stock in ipairs({ false, true }) do
      local out, status = fresh([[
        local aio = require "aio"
        local function body()
        local function msg(f, ...) return select(2, pcall(f, ...)) end
        local before = msg(aio.sleep, "x")
        local _ = aio.Lock, aio.gather, aio.Queue, aio.open_connection, aio.exec
        print(before)
        print(msg(aio.sleep, "x"))
        print(msg(aio.to_thread, 5))
        print(msg(coroutine.resume, 5))
        -- an internal module required directly still reads, writes, pairs
        local sync = require "aio.sync"
        local n = 0
        for k, v in pairs(sync) do n = n + 1 end
        print(sync.Lock == aio.Lock, n > 3, require "aio.sync" == sync)
        end
        if aio.current_task() then body() else aio.run(body) end
      ]], stock)
      assert.are.equal(0, status, out)
      assert.are.equal("bad argument #1 to 'aio.sleep' (number expected, got string)\n"
        .. "bad argument #1 to 'aio.sleep' (number expected, got string)\n"
        .. "bad argument #1 to 'aio.to_thread' (function expected, got number)\n"
        .. "bad argument #1 to 'coroutine.resume' (coroutine expected, got number)\n"
        .. "true\ttrue\ttrue\n", out)
    end
  end)

  it("runs init.lua once per state in a stock lua5.4 too", function()
    local out, status = fresh([[
      local aio = require "aio"
      local gather = aio.gather
      package.loaded["aio"], package.loaded["aio.combinators"] = nil, nil
      print(require "aio" == aio, require("aio.combinators").gather == gather)
    ]], true)
    assert.are.equal(0, status, out)
    assert.are.equal("true\ttrue\n", out)
  end)

  it("gives subprocess pipes the Lua half of the streams when aio.stream was not used", function()
    local out, status = fresh([[
      local p = aio.exec({ "printf", "a\\nb\\n" }, { stdout = "pipe" })
      local got = {}
      for line in p.stdout:lines() do got[#got + 1] = line end
      print(table.concat(got, ","), p:wait())
    ]])
    assert.are.equal(0, status, out)
    assert.are.equal("a,b\t0\n", out)
  end)
  -- called outside a loop, a function written in Lua (open_connection,
  -- exec ...) named a line of its own module, not the caller's
  it("blames a call outside a loop on the caller's line, in a stock lua5.4", function()
    local out, status = fresh([[
      local aio = require "aio"
      for _, f in ipairs { function() aio.open_connection("127.0.0.1", 1) end,
        function() aio.getaddrinfo("localhost", 1) end,
        function() aio.exec({ "true" }) end,
        function() aio.wait_signal("SIGUSR1") end,
        function() aio.sleep(1) end } do
        print(select(2, pcall(f)))
      end
    ]], true)
    assert.are.equal(0, status, out)
    local n = 0
    for line in out:gmatch("[^\n]+") do
      n = n + 1
      assert.matches("^[^:]*chunk.lua:%d: [%w_.]+: no running loop %(call it inside aio.run or a task%)$", line)
    end
    assert.are.equal(5, n)
  end)
  -- require "aio.signal" first of all, under a stock lua5.4, failed: it
  -- added the loop's methods to a metatable the core had not made yet
  it("loads each aio.* module as the first require in a stock lua5.4", function()
    for _, mod in ipairs(MODULES) do
      local out, status = fresh(string.format([[
        local m = require "aio.%s"
        local aio = require "aio"
        aio.run(function() assert(aio.loop().add_signal_handler) end)
        print(type(m))
      ]], mod), true)
      assert.are.equal(0, status, mod .. ": " .. out)
      assert.are.equal("table\n", out, mod)
    end
  end)

  -- require("aio.tls") gave { tls = ... } only, so .context was nil; the
  -- issue names the task-local values "aio.context"
  it("serves require 'aio.tls' as the module, and aio.context as contextvars", function()
    local out, status = fresh([[
      local tls = require "aio.tls"
      print(tls.context == aio.tls.context, type(tls.context))
      print(aio.context.ContextVar == aio.ContextVar, require("aio.context").ContextVar == aio.ContextVar)
      print(rawget(aio, "default_context"), rawget(aio, "check"))
    ]])
    assert.are.equal(0, status, out)
    assert.are.equal("true\tfunction\ntrue\ttrue\nnil\tnil\n", out)
  end)
end)
