-- aio.udp: datagram sockets (the policy; the mechanism is _aio.udp in
-- src/bindings/udp.c): names are resolved here, the C side sees numeric
-- addresses only.
local C = require "_aio.udp"
local dns = require "_aio.dns"
local errors = require "aio.errors"

local type, tostring, error = type, tostring, error

local M = {}

local function numeric(host)
  if host:match("^%d+%.%d+%.%d+%.%d+$") then return "inet" end
  if host:find(":", 1, true) then return "inet6" end
  return nil
end

-- one address for host:port, of `family` when given
local function resolve1(fname, host, port, family, passive)
  if type(host) ~= "string" then
    error(string.format("%s: host must be a string, got %s", fname, type(host)), 3)
  end
  if type(port) ~= "number" then
    error(string.format("%s: port must be a number, got %s", fname, type(port)), 3)
  end
  port = math.tointeger(port)  -- 80.0 is 80 (getaddrinfo's service "80.0" is no port)
  if port == nil or port < 0 or port > 65535 then
    error(string.format("%s: port must be an integer from 0 to 65535", fname), 3)
  end
  errors.check_nul(host, fname, "host", 3)
  local fam = numeric(host)
  if fam and (family == nil or family == fam) then return fam, host, port end
  for _, ai in ipairs(dns.getaddrinfo(host, tostring(port), family, passive, true)) do
    return ai.family, ai.host, ai.port
  end
  errors.raise("DNSError", "getaddrinfo " .. host .. ": no address", { code = "EAI_NONAME" })
end

local methods = C.methods
local remotes = setmetatable({}, { __mode = "k" })  -- a connected socket's peer
local csendto = methods.sendto

-- udp:sendto(data, host, port)
function methods:sendto(data, host, port)
  if type(data) ~= "string" then
    error("bad argument #1 to 'sendto' (string expected, got " .. type(data) .. ")", 2)
  end
  if self:is_closed() then error("sendto: the UDP socket is closed", 2) end
  local fam = self:family()
  local f, h, p = resolve1("sendto", host, port, fam, false)
  local peer = remotes[self]
  if peer and (h ~= peer[1] or p ~= peer[2]) then
    -- as asyncio's sendto on a connected endpoint (ValueError)
    error(string.format("sendto: the socket is connected to %s port %d: use send, "
      .. "or sendto that address", peer[1], peer[2]), 2)
  end
  return csendto(self, data, f, h, p)
end

local families = setmetatable({}, { __mode = "k" })
function methods:family() return families[self] end

-- aio.open_udp(opts) -> socket with sendto/send/recvfrom/getsockname/close
function M.open_udp(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("bad argument #1 to 'open_udp' (table expected)", 2) end
  local family = opts.family
  if family ~= nil and family ~= "inet" and family ~= "inet6" then
    error("open_udp: opts.family must be \"inet\" or \"inet6\"", 2)
  end
  local rf, rh, rp
  if opts.remote_host ~= nil or opts.remote_port ~= nil then
    rf, rh, rp = resolve1("open_udp", opts.remote_host, opts.remote_port, family, false)
    family = rf
  end
  local lf, lh, lp
  if opts.local_host ~= nil then
    lf, lh, lp = resolve1("open_udp", opts.local_host, opts.local_port or 0, family, true)
    family = lf
  elseif opts.local_port ~= nil then
    local lpn = math.tointeger(opts.local_port)
    if lpn == nil or lpn < 0 or lpn > 65535 then
      error("open_udp: port must be an integer from 0 to 65535", 2)
    end
    family = family or "inet"
    lf, lh, lp = family, family == "inet6" and "::" or "0.0.0.0", opts.local_port
  end
  family = family or "inet"
  local u
  if lh then u = C.open(family, lh, lp, opts.reuse_port, opts.broadcast)
  else u = C.open(family, nil, nil, opts.reuse_port, opts.broadcast) end
  families[u] = family
  if rh then
    local ok, e = pcall(u.connect, u, rf, rh, rp)
    if not ok then u:close() error(e, 0) end
    remotes[u] = { rh, rp }
  end
  return u
end

return M
