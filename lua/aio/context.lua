-- aio.ContextVar: task-local values that follow a task and are copied into
-- the tasks it spawns (as Python's contextvars): a child sees its parent's
-- values as they were at spawn time; what either sets later stays its own.
--
--   local request_id = aio.ContextVar("request_id")
--   request_id:set(42)
--   aio.spawn(function() print(request_id:get()) end)   --> 42
local core = require "_aio.core"

local context = core.context

local ContextVar = {}
ContextVar.__index = ContextVar
ContextVar.__name = "aio.ContextVar"

local function checkself(self, fname)
  if getmetatable(self) ~= ContextVar then
    require("aio.errors").badself(fname, "aio.ContextVar", self)
  end
end

function ContextVar:get(default)
  checkself(self, "aio.ContextVar.get")
  local v = context()[self]
  if v == nil then
    v = default
    if v == nil then v = self.default end
  end
  return v
end

-- set a value; returns the previous one (for a manual reset)
function ContextVar:set(value)
  checkself(self, "aio.ContextVar.set")
  local ctx = context()
  local old = ctx[self]
  ctx[self] = value
  return old
end

function ContextVar:__tostring()
  return "aio.ContextVar " .. tostring(self.name)
end

local M = {}

function M.ContextVar(name, default)
  return setmetatable({ name = name, default = default }, ContextVar)
end

-- aio.context: this module's table, as Python's contextvars module
-- (aio.context.ContextVar is aio.ContextVar)
M.context = M

return M
