-- aio.signal: waiting for POSIX signals on the loop (the mechanism is
-- _aio.signal in src/bindings/signal.c, which also adds
-- loop:add_signal_handler and loop:remove_signal_handler to the loop).
local S = require "_aio.signal"

local open, signum = S.open, S.signum
local select, type, error, pcall, tostring = select, type, error, pcall, tostring

local M = {}

-- aio.wait_signal(sig, ...): wait for any of the signals (names such as
-- "SIGTERM" or numbers) and return the name of the one that came
function M.wait_signal(...)
  local n = select("#", ...)
  if n == 0 then error("bad argument #1 to 'wait_signal' (signal expected)", 2) end
  for i = 1, n do
    local sig = select(i, ...)
    if type(sig) ~= "string" and type(sig) ~= "number" then
      error("bad argument #" .. i .. " to 'wait_signal' (signal name or number expected, got "
        .. type(sig) .. ")", 2)
    end
    local ok, n = pcall(signum, sig)
    if not ok or n == 9 or n == 19 then
      error("bad argument #" .. i .. " to 'wait_signal' (" .. (ok and "cannot be caught: "
        or "unknown signal: ") .. tostring(sig) .. ")", 2)
    end
  end
  local sg <close> = open(...)
  return sg:wait()
end

return M
