-- aio.errors: the one constructor of error objects on the Lua side (the C
-- side has aio__pusherror; both share the metatable "aio.Error").
local core = require "_aio.core"

local newerror = core.newerror

local M = {}

-- a new error object {type=, message=, ...fields}
function M.new(etype, message, fields)
  return newerror(etype, message, fields)
end

-- raise one, without position information (error objects carry their own)
function M.raise(etype, message, fields)
  error(newerror(etype, message, fields), 0)
end

M.errtype = core.errtype

-- is e an aio error of type etype?
function M.is(e, etype)
  return core.errtype(e) == etype
end

return M
