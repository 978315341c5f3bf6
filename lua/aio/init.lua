-- aio: asyncio for Lua 5.4.  This is the public table; the mechanism is in
-- C (_aio.core: tasks, futures, the loop); the policy modules below each
-- return a table of public names that join this one.
--
-- The policy modules load on first use: aio.gather loads aio.combinators,
-- aio.open_connection aio.stream, and so on, so `require "aio"` (and every
-- aiolua start-up) costs only the C core.  A module's names are copied into
-- the table when it loads; from then on they are plain fields.
local core = require "_aio.core"
-- C, cheap, and it adds loop:add_signal_handler to every loop
require "_aio.signal"

local rawget, rawset, pairs, ipairs, next, require = rawget, rawset, pairs, ipairs, next, require
local getmetatable, setmetatable = getmetatable, setmetatable

local aio = {
  version = core.version,
  backend = core.backend,
  -- running
  run = core.run,
  loop = core.loop,
  sleep = core.sleep,
  now = core.now,
  -- tasks and futures
  spawn = core.spawn,
  spawn_eager = core.spawn_eager,
  current_task = core.current_task,
  all_tasks = core.all_tasks,
  Future = core.Future,
  errtype = core.errtype,
}

-- the modules whose public names join the aio table
local MODULES = {
  "debug",
  "context",
  "stream",
  "udp",
  "process", -- issue 6
  "signal",  -- issue 6
  "thread",
  "combinators",
  "sync",
  "queue",
  "tls",     -- issue 5
}

-- which module gives which name.  Only a shortcut: a name missing here
-- still works (a miss loads every module, then looks again); the spec
-- tests/lua/init_spec.lua checks it against the modules themselves.
local WHERE = {
  dump_tasks = "debug",
  ContextVar = "context", context = "context",
  Server = "stream", getaddrinfo = "stream", open_connection = "stream",
  open_unix_connection = "stream", start_server = "stream",
  start_unix_server = "stream",
  open_udp = "udp",
  exec = "process", run_process = "process", shell = "process",
  wait_signal = "signal",
  to_thread = "thread", set_thread_pool_size = "thread",
  thread_pool_size = "thread",
  as_completed = "combinators", gather = "combinators",
  shield = "combinators", taskgroup = "combinators",
  timeout = "combinators", wait = "combinators", wait_for = "combinators",
  Barrier = "sync", BoundedSemaphore = "sync", Condition = "sync",
  Event = "sync", Lock = "sync", Semaphore = "sync",
  LifoQueue = "queue", PriorityQueue = "queue", Queue = "queue",
  tls = "tls",
}

local loaded = {}   -- module name -> true once its names joined
local nleft = #MODULES

-- a module's names join the table; one the program set itself stays
local function join(name)
  if loaded[name] then return end
  local m = require("aio." .. name)
  for k, v in pairs(m) do
    if rawget(aio, k) == nil then rawset(aio, k, v) end
  end
  loaded[name] = true
  nleft = nleft - 1
end

local mt = {}

-- every module, the testing table; then the table is a plain one
local function join_all()
  for _, name in ipairs(MODULES) do join(name) end
  if rawget(aio, "testing") == nil then
    rawset(aio, "testing", require "aio.testing")
  end
  if getmetatable(aio) == mt then setmetatable(aio, nil) end
end

function mt.__index(t, k)
  if k == "testing" then  -- aio.testing is a table of its own
    local v = require "aio.testing"
    rawset(t, k, v)
    return v
  end
  local name = WHERE[k]
  if name ~= nil and not loaded[name] then
    join(name)
    local v = rawget(t, k)
    if v ~= nil then return v end
  end
  join_all()  -- an unknown name: load the rest, then look again
  return rawget(t, k)
end

-- pairs(aio) sees every name, as when everything loaded up front
function mt.__pairs(t)
  join_all()
  return next, t, nil
end

return setmetatable(aio, mt)
