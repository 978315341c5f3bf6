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

-- misuse, not an error object: a method of a Lua-side class (Lock, Queue
-- ...) called on something that is not its object (`lock.acquire()` for
-- `lock:acquire()`).  The plain message luaL_checkudata gives for the C
-- classes; the position is where the method was called, the method having
-- called this through its class's own check.
function M.badself(fname, cname, obj)
  local mt = getmetatable(obj)
  local got = type(mt) == "table" and type(mt.__name) == "string"
    and mt.__name or (obj == nil and "no value" or type(obj))
  error(string.format("bad argument #1 to '%s' (%s expected, got %s)",
    fname, cname, got), 4)
end

-- misuse: an options argument (#argn of fname) that is not a table; nil
-- passes.  level: as error's, from the function that calls this (2: its
-- caller)
function M.check_opts(opts, fname, argn, level)
  if opts ~= nil and type(opts) ~= "table" then
    error(string.format("bad argument #%d to '%s' (options table expected, got %s)",
      argn, fname, type(opts)), (level or 2) + 1)
  end
  return opts
end

-- misuse: a string that goes to the system (a host, a path, an argument)
-- with a zero byte in it, which C would cut there (Python: "embedded null
-- byte").  `what` is "#1" (an argument) or a name such as "opts.cwd".
function M.check_nul(s, fname, what, level)
  if type(s) == "string" and s:find("\0", 1, true) then
    local msg = what:sub(1, 1) == "#"
      and string.format("bad argument %s to '%s' (contains a zero byte)", what, fname)
      or string.format("%s: %s contains a zero byte", fname, what)
    error(msg, (level or 2) + 1)
  end
  return s
end

return M
