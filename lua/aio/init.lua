-- aio: asyncio for Lua 5.4.  This is the public table; the mechanism is in
-- C (_aio.core: tasks, futures, the loop); the policy modules below each
-- return a table of public names that is merged in here.
local core = require "_aio.core"

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

-- modules whose public names join the aio table, in this order
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

for _, name in ipairs(MODULES) do
  for k, v in pairs(require("aio." .. name)) do aio[k] = v end
end

-- aio.testing is a table of its own: the virtual clock for tests
aio.testing = require "aio.testing"

return aio
