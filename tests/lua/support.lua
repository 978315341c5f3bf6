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

-- the fd count once what earlier tests left to close has closed: their
-- handlers' connections ending, their unreferenced streams collected
function S.settled_fds()
  for _ = 1, 3 do
    collectgarbage() collectgarbage()
    aio.sleep(0.02)
  end
  return S.fd_count()
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

-- write `code` to a temporary file and run `cmd file args 2>&1`: its
-- output (stdout and stderr) and exit status; the file is removed
function S.script(cmd, code, args)
  local f = os.tmpname()
  local h = assert(io.open(f, "w"))
  h:write(code)
  h:close()
  local out, rc = S.sh(cmd .. " " .. f .. " " .. (args or "") .. " 2>&1")
  os.remove(f)
  return out, rc
end

-- a stock lua5.4 that finds build/aio.so by its cpath alone
S.STOCK_LUA = "env -u LUA_PATH LUA_CPATH='build/?.so;;' lua5.4"

return S
