-- aio.process: subprocesses (the policy; the mechanism is _aio.process in
-- src/bindings/process_common.c, with process.c or process_win.c).  A
-- Process holds the C handle of the child and its pipes as ordinary
-- streams: stdin a Writer, stdout and stderr Readers.
local core = require "_aio.core"
local P = require "_aio.process"
local S = require "_aio.signal"
local wrap = require("_aio.stream").wrap
require "aio.stream"  -- the Lua half of Reader and Writer (reader:lines ...)
local errors = require "aio.errors"

local spawn, Future, errtype = core.spawn, core.Future, core.errtype
local spawn_c, signum = P.spawn, S.signum
local type, pcall, error, setmetatable, tostring = type, pcall, error, setmetatable, tostring
local concat = table.concat

local M = {}

-- ---- pipes ----------------------------------------------------------------

-- A pipe the user drops without closing is closed quietly when collected:
-- a weak-keyed (ephemeron) table ties a closer to the object the user
-- holds; the closer is finalized first and closes the stream, so the
-- stream's own finalizer finds it closed and does not warn.
local quiet = setmetatable({}, { __mode = "k" })
local Closer = { __gc = function(c) pcall(c.w.close, c.w) end }

local function pipe_reader(fd, limit)
  local r, w = wrap(fd, limit)
  quiet[r] = setmetatable({ w = w }, Closer)
  return r, w
end

local function pipe_writer(fd)
  local _, w = wrap(fd)
  quiet[w] = setmetatable({ w = w }, Closer)
  return w
end

-- ---- Process --------------------------------------------------------------

local Process = { __name = "aio.Process" }
local methods = {}

Process.__index = function(self, k)
  if k == "returncode" then return self._h:returncode() end
  if k == "pid" then return self._pid end
  return methods[k]
end

-- pid and returncode are read-only, as asyncio's properties: an assigned
-- returncode would hide the real one from every later reader
Process.__newindex = function(self, k, v)
  if k == "returncode" or k == "pid" then
    error(string.format("aio.Process: field '%s' is read-only", k), 2)
  end
  rawset(self, k, v)
end

-- a method called with '.' (no self, or another object): a misuse error
-- at the caller's line, not an index error inside this file
local function check(self, fname)
  if getmetatable(self) ~= Process then errors.badself(fname, "aio.Process", self) end
end

function Process:__tostring()
  local rc = self._h:returncode()
  return string.format("aio.Process (pid %d, %s)", self.pid,
    rc == nil and "running" or "returncode " .. rc)
end

local MODES = { inherit = true, pipe = true, null = true }

local function check_argv(fname, argv)
  if type(argv) ~= "table" or argv[1] == nil then
    error("bad argument #1 to '" .. fname .. "' (non-empty argv table expected, got "
      .. type(argv) .. ")", 3)
  end
  for i = 1, #argv do
    local t = type(argv[i])
    if t ~= "string" and t ~= "number" then
      error("bad argument #1 to '" .. fname .. "' (argv[" .. i .. "] is a " .. t
        .. ", not a string)", 3)
    end
    errors.check_nul(argv[i], fname, "argv[" .. i .. "]", 3)
  end
end

local function check_env(fname, env)
  for k, v in pairs(env) do
    if type(k) ~= "string" or (type(v) ~= "string" and type(v) ~= "number") then
      error(fname .. ": opts.env must map names to strings (" .. tostring(k) .. " = "
        .. tostring(v) .. ")", 4)
    end
    if k == "" or k:find("=", 1, true) then
      error(fname .. ": opts.env: bad name '" .. k .. "'", 4)
    end
    errors.check_nul(k, fname, "an opts.env name", 4)
    errors.check_nul(v, fname, "opts.env." .. k, 4)
  end
end

local function check_opts(fname, opts)
  if opts == nil then return {} end
  errors.check_opts(opts, fname, 2, 3)
  for _, k in ipairs({ "stdin", "stdout", "stderr" }) do
    local v = opts[k]
    if v ~= nil and not MODES[v] and not (k == "stderr" and v == "stdout") then
      error(fname .. ": opts." .. k .. " must be \"inherit\", \"pipe\" or \"null\""
        .. (k == "stderr" and " or \"stdout\"" or ""), 3)
    end
  end
  if opts.cwd ~= nil and type(opts.cwd) ~= "string" then
    error(fname .. ": opts.cwd must be a string", 3)
  end
  errors.check_nul(opts.cwd, fname, "opts.cwd", 3)
  if opts.env ~= nil then
    if type(opts.env) ~= "table" then
      error(fname .. ": opts.env must be a table of NAME = value", 3)
    end
    check_env(fname, opts.env)
  end
  return opts
end

local function start(fname, argv, opts)
  local h, pid, i, o, e = spawn_c(argv, opts.cwd, opts.env, opts.stdin or "inherit",
    opts.stdout or "inherit", opts.stderr or "inherit")
  local self = setmetatable({ _pid = pid, _h = h }, Process)
  if i then self.stdin = pipe_writer(i) self.stdin:_label("child pid " .. pid .. " stdin") end
  if o then
    self.stdout, self._ow = pipe_reader(o, opts.limit)
    self.stdout:_label("child pid " .. pid .. " stdout")
  end
  if e then
    self.stderr, self._ew = pipe_reader(e, opts.limit)
    self.stderr:_label("child pid " .. pid .. " stderr")
  end
  return self
end

-- aio.exec(argv, opts) -> Process
function M.exec(argv, opts)
  check_argv("exec", argv)
  return start("exec", argv, check_opts("exec", opts))
end

-- aio.shell(cmdline, opts) -> Process: cmdline run by /bin/sh -c (on
-- Windows by cmd.exe /c)
function M.shell(cmd, opts)
  if type(cmd) ~= "string" then
    error("bad argument #1 to 'shell' (string expected, got " .. type(cmd) .. ")", 2)
  end
  errors.check_nul(cmd, "shell", "#1")
  local argv = package.config:sub(1, 1) == "\\" and { "cmd.exe", "/c", cmd }  -- Windows
    or { "/bin/sh", "-c", cmd }
  return start("shell", argv, check_opts("shell", opts))
end

-- p:wait() -> returncode
function methods:wait()
  check(self, "wait")
  return self._h:wait()
end

-- p:send_signal(sig): a number or a name; nothing once it has exited
function methods:send_signal(sig)
  check(self, "send_signal")
  if type(sig) ~= "number" and type(sig) ~= "string" then
    error("bad argument #1 to 'send_signal' (signal name or number expected, got "
      .. type(sig) .. ")", 2)
  end
  local ok, n = true, 0  -- 0: only asks whether it runs (as kill(pid, 0))
  if sig ~= 0 then ok, n = pcall(signum, sig) end
  if not ok then error("send_signal: unknown signal " .. tostring(sig), 2) end
  self._h:send_signal(n)
end

function methods:terminate() check(self, "terminate") self._h:send_signal(15) end
function methods:kill() check(self, "kill") self._h:send_signal(9) end

-- close the pipes we hold (what is queued for stdin is still sent)
function methods:_close_pipes()
  if self.stdin then self.stdin:close() end
  if self._ow then self._ow:close() end
  if self._ew then self._ew:close() end
end

local function feed(stdin, input)
  local ok, e = pcall(function()
    -- (a stdin closed already takes nothing: asyncio's closing pipe
    -- transport drops the write, and communicate goes on)
    if input ~= nil and #input > 0 and not stdin:is_closing() then
      stdin:write(input)
      stdin:drain()
    end
  end)
  stdin:close()
  -- as asyncio: a child that exits without reading all is not an error
  if not ok and errtype(e) ~= "OSError" then error(e, 0) end
end

-- all of a Reader until EOF, as one string made once from the transport's
-- buffer ("" for nothing)
local function slurp(r)
  return r:read() or ""
end

-- p:communicate([input]) -> stdout data, stderr data (nil for a stream that
-- is not a pipe), once the child has exited.  stdin is fed in its own task
-- while both outputs are read, so nothing deadlocks on full pipes.
function methods:communicate(input)
  check(self, "communicate")
  if input ~= nil and type(input) ~= "string" then
    error("bad argument #1 to 'communicate' (string expected, got " .. type(input) .. ")", 2)
  end
  if input ~= nil and #input > 0 and self.stdin == nil then
    error("communicate: input given, but stdin is not a pipe", 2)
  end
  local tin = self.stdin and spawn(feed, self.stdin, input)
  local terr = self.stderr and spawn(slurp, self.stderr)
  local ok, out, err = pcall(function()
    local o = self.stdout and slurp(self.stdout)
    local e = terr and terr:await()
    if tin then tin:await() end
    self:wait()
    return o, e
  end)
  if not ok then
    if tin and not tin:done() then tin:cancel() end
    if terr and not terr:done() then terr:cancel() end
    error(out, 0)
  end
  if self._ow then self._ow:close() end
  if self._ew then self._ew:close() end
  return out, err
end

-- ---- run_process ------------------------------------------------------------

local function argv_text(argv)
  if type(argv) ~= "table" then return tostring(argv) end
  local t = {}
  for i, a in ipairs(argv) do t[i] = tostring(a) end
  return concat(t, " ")
end

-- communicate with a deadline: TimeoutError after `timeout` s (the child
-- is killed; the watcher still reaps it)
local function communicate_within(p, input, timeout)
  local t = spawn(p.communicate, p, input)
  local f = Future()
  t:add_done_callback(function() if not f:done() then f:set_result(true) end end)
  local timer = core.loop():call_later(timeout, function()
    if not f:done() then f:set_result(false) end
  end)
  local ok, finished = pcall(f.await, f)
  timer:cancel()
  if ok and finished then return t:result() end
  t:cancel()
  p:kill()
  pcall(t.await, t)
  p:_close_pipes()
  if not ok then error(finished, 0) end
  -- killed: reaped before the error, as subprocess.run(timeout=) waits
  local okw, ew = pcall(p.wait, p)
  if not okw then error(ew, 0) end
  errors.raise("TimeoutError", "run_process: " .. argv_text(p._argv) .. " timed out after "
    .. timeout .. " s", { timeout = timeout })
end

-- aio.run_process(argv, opts) -> {returncode=, stdout=, stderr=}
-- opts: input, check, timeout, stdout, stderr (default "pipe"), cwd, env
function M.run_process(argv, opts)
  check_argv("run_process", argv)
  opts = check_opts("run_process", opts)
  local input = opts.input
  if input ~= nil and type(input) ~= "string" then
    error("run_process: opts.input must be a string", 2)
  end
  if opts.timeout ~= nil and (type(opts.timeout) ~= "number" or opts.timeout ~= opts.timeout) then
    error("run_process: opts.timeout must be a number", 2)
  end
  local p = start("run_process", argv, {
    cwd = opts.cwd, env = opts.env, limit = opts.limit,
    stdin = input ~= nil and "pipe" or opts.stdin,
    stdout = opts.stdout or "pipe",
    stderr = opts.stderr or "pipe",
  })
  p._argv = argv
  local out, err
  if opts.timeout then
    out, err = communicate_within(p, input, opts.timeout)
  else
    local ok, o, e = pcall(p.communicate, p, input)
    if not ok then  -- cancelled (or worse): do not leave the child behind
      p:kill()
      p:_close_pipes()
      error(o, 0)
    end
    out, err = o, e
  end
  local res = { returncode = p.returncode, stdout = out, stderr = err }
  if opts.check and res.returncode ~= 0 then
    errors.raise("ProcessError", "command '" .. argv_text(argv) .. "' returned non-zero exit status "
      .. tostring(res.returncode), {
        returncode = res.returncode, stdout = out, stderr = err, cmd = argv,
      })
  end
  return res
end

return M
