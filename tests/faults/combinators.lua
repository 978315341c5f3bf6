-- tests/faults/combinators.lua: the second script of the failing-allocator
-- sweep (tests/faults/faults.c): a task awaited, a queue hand-off and a
-- wait_for that times out.  Out of memory mid-way, tasks were left cut off
-- in a step while another awaited them: freeing the host waited for them
-- for ever, or a Lua API call outside any pcall ended the process.
local aio = require "aio"
local t = aio.spawn(function() aio.sleep(0.001) return 1 end)
local q = aio.Queue()
q:put(1)
q:get()
local ok, e = pcall(aio.wait_for, function() aio.sleep(1) end, 0.001)
assert(not ok and aio.errtype(e) == "TimeoutError", tostring(e))
return t:await()
