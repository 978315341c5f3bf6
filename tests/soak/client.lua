-- tests/soak/client.lua CONNS SECONDS PORT: keeps CONNS connections busy
-- with echo round trips for SECONDS; sessions end at random (closing
-- mid-request too), a killer cancels random sessions, and each ended
-- session is replaced.  Prints "warm" after a quarter of the time (at
-- least 10 s), then SECONDS later, at the end, a line of counts.
local conns, seconds, port = tonumber(arg[1]), tonumber(arg[2]), tonumber(arg[3])
local live, sessions = 0, {}
local stats = { rounds = 0, sessions = 0, cancelled = 0, errors = 0, early = 0,
                connect_errors = 0 }
local running = true

local function session()
  local me = aio.current_task()
  local ok, e = pcall(function()
    local r, w
    local cok, ce = pcall(function() r, w = aio.open_connection("127.0.0.1", port) end)
    if not cok then
      if aio.errtype(ce) == "CancelledError" then error(ce, 0) end
      stats.connect_errors = stats.connect_errors + 1
      aio.sleep(0.05 + math.random() * 0.2)
      return
    end
    local ok2, e2 = pcall(function()
      for i = 1, math.random(20, 200) do
        if not running then break end
        local msg = string.format("%d %d %s\n", i, math.random(1e9), ("p"):rep(math.random(0, 200)))
        w:write(msg)
        if math.random(300) == 1 then stats.early = stats.early + 1 break end  -- close mid-request
        local got = r:readline()
        if got == nil then break end  -- the server closed
        assert(got == msg, "echo mismatch")
        stats.rounds = stats.rounds + 1
        aio.sleep(math.random() * 0.1)
      end
    end)
    w:close()
    if not ok2 then error(e2, 0) end
  end)
  sessions[me] = nil
  live = live - 1
  if ok then return end
  if aio.errtype(e) == "CancelledError" then stats.cancelled = stats.cancelled + 1
  elseif aio.errtype(e) == "OSError" then stats.errors = stats.errors + 1
  else error(e, 0) end  -- an echo mismatch or a bug: fails the soak
end

local supervisor = aio.spawn(function()
  while running do
    while live < conns and running do
      live = live + 1
      stats.sessions = stats.sessions + 1
      local t = aio.spawn(session)
      sessions[t] = true
      -- a session cancelled before its first step never runs its body
      t:add_done_callback(function()
        if sessions[t] then sessions[t] = nil live = live - 1 end
      end)
      if stats.sessions % 200 == 0 then aio.sleep(0) end
    end
    aio.sleep(0.01)
  end
end)

local killer = aio.spawn(function()
  while running do
    aio.sleep(0.005)
    for t in pairs(sessions) do
      if math.random(16) == 1 then t:cancel() break end
    end
  end
end)

local warm = math.max(10, seconds / 4)  -- RSS levels off after about 10 s
aio.sleep(warm)
print("warm", live) io.stdout:flush()
aio.sleep(seconds)
running = false
supervisor:await()
killer:await()
for t in pairs(sessions) do t:cancel() end
local deadline = aio.now() + 20
while live > 0 and aio.now() < deadline do aio.sleep(0.05) end
print(string.format("client rounds=%d sessions=%d cancelled=%d early=%d errors=%d connect_errors=%d left=%d",
  stats.rounds, stats.sessions, stats.cancelled, stats.early, stats.errors, stats.connect_errors, live))
