-- jobs.lua: a parallel job runner.  Runs shell commands, at most N at a
-- time, and streams each one's output (stdout and stderr) line by line with
-- a prefix naming the job.  Exit status: the number of jobs that failed.
--
--   aiolua examples/jobs.lua [-j N] 'cmd 1' 'cmd 2' ...
--   aiolua examples/jobs.lua            (a demo list)
local aio = require "aio"

local args, limit = {}, 2
local i = 1
while arg and arg[i] do
  if arg[i] == "-j" then
    limit = assert(tonumber(arg[i + 1]), "-j needs a number")
    i = i + 2
  else
    args[#args + 1] = arg[i]
    i = i + 1
  end
end
if #args == 0 then
  args = {
    "echo start; sleep 0.3; echo done",
    "for i in 1 2 3; do echo tick $i; sleep 0.1; done",
    "echo to stderr >&2; exit 3",
    "yes | head -n 2",
    "sleep 0.2; echo last",
  }
end

-- a counting limit: aio.Semaphore when this build has it, else a small one
-- made of futures
local function limiter(n)
  if aio.Semaphore then return aio.Semaphore(n) end
  local free, waiting = n, {}
  local lim = {}
  function lim:acquire()
    while free == 0 do
      local f = aio.Future()
      waiting[#waiting + 1] = f
      f:await()
    end
    free = free - 1
  end
  function lim:release()
    free = free + 1
    local f = table.remove(waiting, 1)
    if f then f:set_result(true) end
  end
  return lim
end

local slots = limiter(limit)

-- copy the lines of a Reader to stdout, each with a prefix
local function pump(reader, prefix)
  for line in reader:lines() do
    io.stdout:write(prefix, line, "\n")
    io.stdout:flush()
  end
end

local function job(n, cmd)
  slots:acquire()
  local ok, rc = pcall(function()
    local tag = string.format("[%d] ", n)
    io.stdout:write(tag, "$ ", cmd, "\n")
    local p = aio.shell(cmd, { stdin = "null", stdout = "pipe", stderr = "pipe" })
    local err = aio.spawn(pump, p.stderr, string.format("[%d!] ", n))
    pump(p.stdout, tag)
    err:await()
    local code = p:wait()
    io.stdout:write(tag, "exit ", code, "\n")
    return code
  end)
  slots:release()
  if not ok then error(rc, 0) end
  return rc
end

local tasks = {}
for n, cmd in ipairs(args) do tasks[n] = aio.spawn(job, n, cmd) end
local failed = 0
for _, t in ipairs(tasks) do
  if t:await() ~= 0 then failed = failed + 1 end
end
print(string.format("%d job(s), %d failed", #args, failed))
os.exit(failed)
