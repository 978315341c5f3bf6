-- aio.thread: run a Lua function on a worker thread, in a fresh Lua state
-- (asyncio.to_thread).  The mechanism is in C (_aio.thread): the function
-- crosses as bytecode, arguments and results are copied.
local thread = require "_aio.thread"

local M = {}

-- aio.to_thread(fn, ...): fn(...) on a worker of the pool; returns its
-- results or raises its error.  fn may use globals, not upvalues; values
-- crossing are nil, booleans, numbers, strings and tables of those.
-- Cancelling the caller raises CancelledError at once; the worker's result
-- is dropped when it ends.
M.to_thread = thread.to_thread

-- the pool is shared by all loops of the process (AIOLUA_THREADS, default 4)
M.set_thread_pool_size = thread.set_thread_pool_size
M.thread_pool_size = thread.thread_pool_size

return M
