-- support.lua: helpers shared by the specs (require "support").
local aio = require "aio"
local lfs = require "lfs"

local S = {}

-- number of open file descriptors of this process
function S.fd_count()
  local win, w = pcall(require, "aiolua_wintest")
  if win then return w.live() end  -- Windows (tests/win): live transports
  local n = 0
  for name in lfs.dir("/proc/self/fd") do
    if name ~= "." and name ~= ".." then n = n + 1 end
  end
  return n - 1  -- the directory being listed
end

-- run fn and return the error it raises (fails when it does not raise)
function S.error_of(fn, ...)
  local ok, e = pcall(fn, ...)
  assert(not ok, "expected an error, but the call succeeded")
  return e
end

-- poll pred() every 5 ms for up to `timeout` seconds; true once it holds
function S.wait_until(pred, timeout)
  local deadline = aio.now() + (timeout or 5)
  while not pred() do
    if aio.now() > deadline then return false end
    aio.sleep(0.005)
  end
  return true
end

-- run a shell command, return its stdout and exit status
function S.sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok and 0 or code
end

return S
