-- aio.tls: TLS contexts (the policy; the mechanism is _aio.tls in
-- src/bindings/tls.c, the session filter under streams is tls.h).  This
-- module returns { tls = T }, so that aio.tls is T: aio.tls.context(opts).
local C = require "_aio.tls"

local type, pairs, ipairs, error, tostring = type, pairs, ipairs, error, tostring
local math_type = math.type

local T = {
  mbedtls_version = C.mbedtls_version,
  default_ca_file = C.default_ca_file,
}

local OPTIONS = {
  server = "boolean", verify = "boolean", ca_file = "string", cert_file = "string",
  key_file = "string", alpn = "table", min_version = "string", handshake_timeout = "number",
}

-- min_version: the TLS 1.x minor version number mbedTLS takes (3 is 1.2)
local VERSIONS = { ["1.0"] = 1, ["1.1"] = 2, ["1.2"] = 3 }

local function bad(msg)
  error("aio.tls.context: " .. msg, 3)
end

-- aio.tls.context(opts) -> a TLSContext: server, verify (default true),
-- ca_file (default the bundle SSL_CERT_FILE names, else the directories
-- of SSL_CERT_DIR, else the system bundle), cert_file, key_file (default
-- cert_file), alpn (array of protocol names), min_version ("1.2" default),
-- handshake_timeout (seconds, default 60)
function T.context(opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then
    error("bad argument #1 to 'aio.tls.context' (table expected, got " .. type(opts) .. ")", 2)
  end
  for k, v in pairs(opts) do
    local want = OPTIONS[k]
    if want == nil then bad("unknown option '" .. tostring(k) .. "'") end
    if k == "min_version" and type(v) == "number" then v = string.format("%.1f", v) end
    if type(v) ~= want then
      bad("opts." .. k .. " must be a " .. want .. " (got " .. type(v) .. ")")
    end
    if want == "string" and v:find("\0", 1, true) then
      bad("opts." .. k .. " contains a zero byte")
    end
  end
  local verify = opts.verify
  if verify == nil then verify = true end
  local minor = 3
  if opts.min_version ~= nil then
    local v = opts.min_version
    if type(v) == "number" then v = string.format("%.1f", v) end
    v = v:gsub("^TLSv", "")
    if v == "1.3" then
      bad("min_version 1.3: TLS 1.3 is not available with mbedTLS " .. C.mbedtls_version)
    end
    minor = VERSIONS[v]
    if not minor then bad("opts.min_version must be \"1.0\", \"1.1\" or \"1.2\"") end
  end
  if opts.alpn ~= nil then
    for i, p in ipairs(opts.alpn) do
      if type(p) ~= "string" or #p == 0 or #p > 255 then
        bad("opts.alpn[" .. i .. "] must be a protocol name (1 to 255 bytes)")
      end
    end
  end
  local timeout = opts.handshake_timeout
  if timeout ~= nil and not (timeout > 0) then bad("opts.handshake_timeout must be positive") end
  if opts.server and not opts.cert_file then bad("a server context needs opts.cert_file") end
  if opts.key_file and not opts.cert_file then bad("opts.key_file needs opts.cert_file") end
  return C.context(opts.server, verify, opts.ca_file, opts.cert_file, opts.key_file,
    opts.alpn, minor, timeout or 60)
end

T.is_context = C.is_context

-- the context of `tls = true`: a verifying client on the default CAs
-- (SSL_CERT_FILE, SSL_CERT_DIR or the system bundle, as read then), made
-- on first use (loading the bundle takes a few milliseconds)
local default_client
function T.default_context()
  if not default_client then default_client = T.context() end
  return default_client
end

-- check the `tls` option of open_connection / start_server / start_tls:
-- returns the context to use
-- level: where the caller's caller is (3: check's caller is the API
-- function the user called)
function T.check(fname, v, server, level)
  level = level or 3
  if v == true and not server then return T.default_context() end
  if not C.is_context(v) then
    error(fname .. ": opts.tls must be " .. (server and "" or "true or ")
      .. "an aio.tls.context (got " .. type(v) .. ")", level)
  end
  if server and not v.server then
    error(fname .. ": opts.tls must be a server context (aio.tls.context{server = true, ...})", level)
  end
  if not server and v.server then
    error(fname .. ": opts.tls must be a client context (server = false)", level)
  end
  return v
end

-- the name that joins aio is `tls` (aio.tls.context); through __index,
-- require("aio.tls") serves as the module itself too (.context ...)
return setmetatable({ tls = T }, { __index = T })
