-- tests/soak/soak.lua: make soak.  An echo server (server.lua) and a load
-- client (client.lua), both aiolua processes on loopback; SOAK_CONNS
-- concurrent connections (5000) for SOAK_SECONDS (60) with random cancels
-- and closes on both sides.  Passes when, afterwards, the server's fd and
-- task counts are back to their values before the first connection, its
-- RSS is within 10% of its value after warm-up, every echo came back
-- intact and the client's sessions all ended.
local BIN = os.getenv("AIOLUA_BIN") or "./aiolua"
local conns = tonumber(os.getenv("SOAK_CONNS")) or 5000
local seconds = tonumber(os.getenv("SOAK_SECONDS")) or 60
local nofile = "ulimit -n " .. math.max(1024, conns * 2 + 256) .. "; "

local function exec(cmd)
  return aio.exec({ "sh", "-c", nofile .. cmd }, { stdin = "pipe", stdout = "pipe" })
end

local function readline(p)  -- a line of a child's output, without "\n"
  local l = p.stdout:readline()
  return l and l:gsub("\n$", "")
end

local function field(line, name)
  return tonumber(line:match(name .. "=(%d+)"))
end

local srv = exec('exec "' .. BIN .. '" tests/soak/server.lua')
local first = readline(srv)
local port = tonumber(first:match("^(%d+)"))
print("soak: server on port " .. port .. ", before: " .. first:match("%s(.*)"))
print(string.format("soak: %d connections for %d s", conns, seconds))
local cli = exec('exec "' .. BIN .. '" tests/soak/client.lua ' .. conns .. " " .. seconds .. " " .. port)
local line = readline(cli)
assert(line and line:find("^warm"), "client: " .. tostring(line))
srv.stdin:write("warm\n")
local warm = readline(srv)
print("soak: after warm-up (client " .. line .. "): server " .. warm)
local cend = readline(cli)
local crc = cli:wait()
srv.stdin:write("end\n")
local send = readline(srv)
local src = srv:wait()
print("soak: " .. tostring(cend))
print("soak: server " .. tostring(send))

local ok = true
local function expect(c, what)
  if not c then ok = false print("FAIL soak: " .. what) end
end
expect(crc == 0 and cend, "the client failed (status " .. tostring(crc) .. ")")
expect(src == 0 and send, "the server failed (status " .. tostring(src) .. ")")
if ok then
  expect(field(cend, "left") == 0, "client sessions never ended")
  expect(field(send, "active") == 0, "server handlers never ended")
  expect(field(send, "fds") == field(first, "fds"), "server fds not back")
  expect(field(send, "tasks") == field(first, "tasks"), "server tasks not back")
  local rw, re = field(warm, "rss_kb"), field(send, "rss_kb")
  print(string.format("soak: server RSS %.1f MiB after warm-up, %.1f MiB at the end (%+.1f%%)",
    rw / 1024, re / 1024, (re - rw) * 100 / rw))
  expect(re <= rw * 1.10, "server RSS grew more than 10% after warm-up")
end
print(ok and "PASS soak" or "FAIL soak")
os.exit(ok and 0 or 1)
