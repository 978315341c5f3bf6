-- aio.stream: streams over TCP and Unix sockets (the policy; the mechanism
-- is _aio.stream in src/bindings/stream.c).  Name resolution, happy
-- eyeballs (RFC 8305), servers with a task per connection, and the Lua
-- parts of Reader and Writer.
local core = require "_aio.core"
local C = require "_aio.stream"
local dns = require "_aio.dns"
local errors = require "aio.errors"

local spawn, sleep, Future = core.spawn, core.sleep, core.Future
local errtype = core.errtype
local connect, listen = C.connect, C.listen
local getaddrinfo_c = dns.getaddrinfo
local type, tostring, tonumber, ipairs, pcall, error = type, tostring, tonumber, ipairs, pcall, error
local setmetatable = setmetatable

local M = {}

-- ---- Reader and Writer: the parts written in Lua ----------------------

local Reader, Writer = C.Reader, C.Writer

-- reader:lines(): an iterator over lines without their "\n", as io.lines
function Reader:lines()
  return function()
    local line = self:readline()
    if line ~= nil and line:byte(-1) == 10 then line = line:sub(1, -2) end
    return line
  end
end

-- a Writer method written here called with '.': the caller's misuse
local function checkwriter(self, fname)
  local mt = type(self) == "userdata" and getmetatable(self)
  if not mt or mt.__index ~= Writer then errors.badself(fname, "aio.StreamWriter", self) end
end

local wait_closed = Writer.wait_closed
function Writer:wait_closed()
  checkwriter(self, "wait_closed")
  while not wait_closed(self) do sleep(0.01) end  -- another task waits too
end

-- TLS contexts (aio.tls), loaded on first use
local tlsmod
local function tls()
  tlsmod = tlsmod or require("aio.tls").tls
  return tlsmod
end

local starttls = Writer._starttls

-- writer:start_tls(ctx, opts): upgrade the connection in place (the same
-- reader and writer go on, now over TLS); ctx a client context (or true
-- for the default one) or a server context.  opts.server_hostname: the
-- name to verify and send (default: the peer's address).  On failure the
-- connection is closed and the error raised.
function Writer:start_tls(ctx, opts)
  checkwriter(self, "start_tls")
  errors.check_opts(opts, "start_tls", 2)
  opts = opts or {}
  -- (a closed or lost stream is refused by the C side: a lost one is an
  -- OSError there, not misuse)
  if self:is_tls() and not self:is_closing() then
    error("start_tls: the stream already uses TLS", 2)
  end
  if ctx == true or not (tls().is_context(ctx) and ctx.server) then
    ctx = tls().check("start_tls", ctx, false)
  end
  local host = opts.server_hostname
  if host ~= nil and type(host) ~= "string" then
    error("start_tls: opts.server_hostname must be a string", 2)
  end
  errors.check_nul(host, "start_tls", "opts.server_hostname")
  local timeout = opts.handshake_timeout  -- asyncio's ssl_handshake_timeout
  if timeout ~= nil and not (type(timeout) == "number" and timeout > 0) then
    error("start_tls: opts.handshake_timeout must be a positive number", 2)
  end
  for k in pairs(opts) do
    if k ~= "server_hostname" and k ~= "handshake_timeout" then
      error("start_tls: unknown option '" .. tostring(k) .. "'", 2)
    end
  end
  if not ctx.server and host == nil then host = self:get_extra_info("peername") end
  starttls(self, ctx, host, timeout)
end

-- ---- names --------------------------------------------------------------

-- "inet"/"inet6" for a numeric address, else nil
local function numeric(host)
  if host:match("^%d+%.%d+%.%d+%.%d+$") then return "inet" end
  if host:find(":", 1, true) then return "inet6" end
  return nil
end

local FAMILIES = { inet = true, inet6 = true }

-- a port number as an integer (80.0 is 80: getaddrinfo would take the
-- service "80.0" for a name), a service name as it is
local function checkport(fname, port, i)
  if type(port) == "string" and tonumber(port) then port = tonumber(port) end
  if type(port) == "number" then
    local n = math.tointeger(port)
    if n == nil then
      error(string.format("bad argument #%d to '%s' (port: an integer expected, got %s)",
        i, fname, tostring(port)), 3)
    end
    if n < 0 or n > 65535 then
      error(string.format("bad argument #%d to '%s' (port out of range: %d)", i, fname, n), 3)
    end
    return n
  end
  if type(port) == "string" then  -- a service name
    errors.check_nul(port, fname, "#" .. i, 3)
    return port
  end
  error(string.format("bad argument #%d to '%s' (port expected, got %s)", i, fname, type(port)), 3)
end

-- a Unix socket's path (argument i): no zero byte, and it fits
-- sockaddr_un's 108 bytes with its terminator
local UNIX_PATH_MAX = 108
local function check_unix_path(fname, path, i)
  errors.check_nul(path, fname, "#" .. i, 3)
  if #path >= UNIX_PATH_MAX then
    error(string.format("bad argument #%d to '%s' (path too long: %d bytes, at most %d)",
      i, fname, #path, UNIX_PATH_MAX - 1), 3)
  end
end

-- a numeric host of the other family: glibc's EAI_ADDRFAMILY, raised here
-- so that every platform says so (Windows has no such code)
local function family_mismatch(host)
  errors.raise("DNSError", "getaddrinfo " .. host
    .. ": Address family for hostname not supported", { code = "EAI_ADDRFAMILY" })
end

-- aio.getaddrinfo(host, port, opts): opts.family ("inet"/"inet6"),
-- opts.passive, opts.type ("stream"/"dgram")
function M.getaddrinfo(host, port, opts)
  if host ~= nil and type(host) ~= "string" then
    error("bad argument #1 to 'getaddrinfo' (string expected, got " .. type(host) .. ")", 2)
  end
  errors.check_nul(host, "getaddrinfo", "#1")
  if host == nil and port == nil then
    error("getaddrinfo: host and port are both nil", 2)
  end
  errors.check_opts(opts, "getaddrinfo", 3)
  opts = opts or {}
  if opts.family ~= nil and not FAMILIES[opts.family] then
    error("getaddrinfo: opts.family must be \"inet\" or \"inet6\"", 2)
  end
  if opts.type ~= nil and opts.type ~= "stream" and opts.type ~= "dgram" then
    error("getaddrinfo: opts.type must be \"stream\" or \"dgram\"", 2)
  end
  if opts.passive ~= nil and type(opts.passive) ~= "boolean" then
    error("getaddrinfo: opts.passive must be a boolean", 2)
  end
  if port ~= nil then port = tostring(checkport("getaddrinfo", port, 2)) end
  if host and opts.family then
    local fam = numeric(host)
    if fam and fam ~= opts.family then family_mismatch(host) end
  end
  return getaddrinfo_c(host, port, opts.family, opts.passive, opts.type == "dgram")
end
local getaddrinfo = M.getaddrinfo

-- addresses for host:port, as getaddrinfo gives them
local function resolve(host, port, family, passive)
  local fam = numeric(host)
  if fam and type(port) == "number" then
    if family and family ~= fam then family_mismatch(host) end
    return { { family = fam, host = host, port = port } }
  end
  return getaddrinfo_c(host, tostring(port), family, passive, false)
end

-- ---- connecting -----------------------------------------------------------

-- RFC 8305 section 4: alternate the families, the first one first
local function interleave(addrs)
  local first = addrs[1].family
  local a, b = {}, {}
  for _, ai in ipairs(addrs) do
    if ai.family == first then a[#a + 1] = ai else b[#b + 1] = ai end
  end
  local out, i = {}, 1
  while a[i] or b[i] do
    if a[i] then out[#out + 1] = a[i] end
    if b[i] then out[#out + 1] = b[i] end
    i = i + 1
  end
  return out
end

local function connect1(ai, locals, limit)
  local l = locals and locals[ai.family]
  if locals and not l then
    errors.raise("OSError", "connect to " .. ai.host .. ": no local address of family "
      .. ai.family, { errno = 97, code = "EAFNOSUPPORT" })
  end
  if l then return connect(ai.family, ai.host, ai.port, l.family, l.host, l.port, limit) end
  return connect(ai.family, ai.host, ai.port, nil, nil, nil, limit)
end

-- Happy eyeballs: start the next attempt after `delay` or as soon as the
-- previous one fails; the first to connect wins, the others are cancelled
-- (a cancelled connect closes its socket) or closed.
local function happy(addrs, delay, locals, limit)
  addrs = interleave(addrs)
  local winner_r, winner_w
  local errs, tasks = {}, {}
  local running = 0
  local wake

  local function attempt(ai)
    local ok, r, w = pcall(connect1, ai, locals, limit)
    running = running - 1
    if ok then
      if winner_r then w:close() else winner_r, winner_w = r, w end
    elseif errtype(r) == "CancelledError" then
      error(r, 0)
    else
      errs[#errs + 1] = r
    end
    if wake and not wake:done() then wake:set_result(true) end
  end

  local ok, e = pcall(function()
    local loop = core.loop()
    for _, ai in ipairs(addrs) do
      wake = Future()
      running = running + 1
      tasks[#tasks + 1] = spawn(attempt, ai)
      local w = wake
      local timer = loop:call_later(delay, function()
        if not w:done() then w:set_result(false) end
      end)
      wake:await()
      timer:cancel()
      if winner_r then return end
    end
    while not winner_r and running > 0 do
      wake = Future()
      wake:await()
    end
  end)
  for _, t in ipairs(tasks) do
    if not t:done() then t:cancel() end
  end
  for _, t in ipairs(tasks) do pcall(t.await, t) end
  if not ok then
    if winner_w then winner_w:close() end
    error(e, 0)
  end
  if winner_r then return winner_r, winner_w end
  error(errs[1], 0)
end

C.happy_eyeballs = happy  -- for tests: require("_aio.stream").happy_eyeballs

local function check_opts(fname, opts)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error("bad argument to '" .. fname .. "' (options table expected, got " .. type(opts) .. ")", 3)
  end
  if opts.server_hostname ~= nil then
    if type(opts.server_hostname) ~= "string" then
      error(fname .. ": opts.server_hostname must be a string", 3)
    end
    if not opts.tls then error(fname .. ": opts.server_hostname is only meaningful with opts.tls", 3) end
    errors.check_nul(opts.server_hostname, fname, "opts.server_hostname", 3)
  end
  if opts.local_host ~= nil then
    if type(opts.local_host) ~= "string" then
      error(fname .. ": opts.local_host must be a string", 3)
    end
    errors.check_nul(opts.local_host, fname, "opts.local_host", 3)
  end
  if opts.local_port ~= nil then
    local n = math.tointeger(opts.local_port)
    if n == nil or n < 0 or n > 65535 then
      error(fname .. ": opts.local_port must be an integer from 0 to 65535", 3)
    end
  end
  if opts.tls then
    opts = setmetatable({ tls = tls().check(fname, opts.tls, fname:find("server") ~= nil, 4) },
      { __index = opts })
  end
  if opts.family ~= nil and not FAMILIES[opts.family] then
    error(fname .. ": opts.family must be \"inet\" or \"inet6\"", 3)
  end
  if opts.limit ~= nil and (math.type(opts.limit) ~= "integer" or opts.limit <= 0) then
    error(fname .. ": opts.limit must be a positive integer", 3)
  end
  local hed = opts.happy_eyeballs_delay
  if hed ~= nil and (type(hed) ~= "number" or not (hed >= 0)) then
    error(fname .. ": opts.happy_eyeballs_delay must be a number >= 0", 3)
  end
  return opts
end

-- aio.open_connection(host, port, opts) -> reader, writer
function M.open_connection(host, port, opts)
  if type(host) ~= "string" then
    error("bad argument #1 to 'open_connection' (string expected, got " .. type(host) .. ")", 2)
  end
  errors.check_nul(host, "open_connection", "#1")
  port = checkport("open_connection", port, 2)
  opts = check_opts("open_connection", opts)
  local addrs = resolve(host, port, opts.family, false)
  local locals
  if opts.local_host ~= nil or opts.local_port ~= nil then
    locals = {}
    local lp = opts.local_port or 0
    if opts.local_host then
      for _, ai in ipairs(resolve(opts.local_host, lp, opts.family, true)) do
        locals[ai.family] = locals[ai.family] or ai
      end
    else
      locals.inet = { family = "inet", host = "0.0.0.0", port = lp }
      locals.inet6 = { family = "inet6", host = "::", port = lp }
    end
  end
  local r, w
  if #addrs == 1 then r, w = connect1(addrs[1], locals, opts.limit)
  else r, w = happy(addrs, opts.happy_eyeballs_delay or 0.25, locals, opts.limit) end
  if opts.tls then
    local ok, e = pcall(starttls, w, opts.tls, opts.server_hostname or host)
    if not ok then
      w:close()
      error(e, 0)
    end
  end
  return r, w
end

-- aio.open_unix_connection(path, opts) -> reader, writer
function M.open_unix_connection(path, opts)
  if type(path) ~= "string" then
    error("bad argument #1 to 'open_unix_connection' (string expected, got " .. type(path) .. ")", 2)
  end
  check_unix_path("open_unix_connection", path, 1)
  opts = check_opts("open_unix_connection", opts)
  local r, w = connect("unix", path, nil, nil, nil, nil, opts.limit)
  if opts.tls then
    if opts.server_hostname == nil and opts.tls.verify then
      w:close()
      error("open_unix_connection: opts.server_hostname is needed to verify the server", 2)
    end
    local ok, e = pcall(starttls, w, opts.tls, opts.server_hostname)
    if not ok then
      w:close()
      error(e, 0)
    end
  end
  return r, w
end

-- ---- servers --------------------------------------------------------------

local Server = { __name = "aio.Server" }
Server.__index = Server
M.Server = Server

-- a server's TLS handshake failed: the connection is closed and, as in
-- asyncio, that is only reported in debug mode
local function tls_failed(srv, w, e)
  w:close()
  srv._tls_failures = (srv._tls_failures or 0) + 1
  srv._tls_last_error = e
  local ok, dbg = pcall(function() return core.loop():get_debug() end)
  if ok and dbg then
    io.stderr:write("aiolua: TLS handshake with a client failed: ", tostring(e), "\n")
  end
end

local function serve(srv, r, w)
  if srv._tls then
    local ok, e = pcall(starttls, w, srv._tls)
    if not ok then
      if errtype(e) == "CancelledError" then error(e, 0) end
      return tls_failed(srv, w, e)
    end
  end
  return srv._handler(r, w)
end

-- aio.Event, loaded when a server first has a waiter (aio.sync needs us
-- not; a program that never waits on a server does not load it)
local Event
local function event(srv, key)
  local ev = srv[key]
  if ev == nil then
    Event = Event or require("aio.sync").Event
    ev = Event()
    srv[key] = ev
  end
  return ev
end

-- until task t is done; cancelling this wait leaves t running
local function wait_task_quietly(t)
  if t:done() then return end
  local f = Future()
  local function cb() if not f:done() then f:set_result(true) end end
  t:add_done_callback(cb)
  local ok, e = pcall(f.await, f)
  t:remove_done_callback(cb)
  if not ok then error(e, 0) end
end

local function run_handler(srv, r, w)
  -- the traceback is taken where the error is raised; the error itself
  -- goes on unchanged, to the handler's <close> variables too
  local tb
  local function msgh(e)
    if errtype(e) ~= "CancelledError" then tb = debug.traceback(tostring(e), 2) end
    return e
  end
  srv._active = srv._active + 1
  srv._conns[w] = "running"
  local ok, e = xpcall(serve, msgh, srv, r, w)
  srv._active = srv._active - 1
  srv._conns[w] = nil
  if srv._active == 0 and srv._idle then srv._idle:set() srv._idle = nil end
  if not ok then
    w:close()
    if errtype(e) == "CancelledError" then error(e, 0) end
    io.stderr:write("aiolua: error in a connection handler (the connection was closed; the server goes on): ",
      tb or tostring(e), "\n")
  end
end

local function accept_loop(srv, l)
  while true do
    local ok, r, w = pcall(l.accept, l)
    if not ok then
      if errtype(r) == "CancelledError" then
        -- the loop is closing: handlers cancelled before they started
        -- never run, so their connections are closed here; a running
        -- handler closes its own after its cleanup (which may still write)
        srv:close()
        for cw, state in pairs(srv._conns) do
          if state == "queued" then cw:close() end
        end
        error(r, 0)
      end
      io.stderr:write("aiolua: accept failed: ", tostring(r), "\n")
      sleep(0.1)
    elseif r == nil then
      return
    else
      srv._conns[w] = "queued"
      spawn(run_handler, srv, r, w)
    end
  end
end

local function new_server(handler, listeners, path, tlsctx)
  local srv = setmetatable({
    _tls = tlsctx,
    _handler = handler, _listeners = listeners, _acceptors = {},
    _serving = true, _active = 0, _path = path,
    _conns = {},  -- writers of connections whose handler has not ended:
                  -- "queued" (not started yet), then "running"
  }, Server)
  for i, l in ipairs(listeners) do srv._acceptors[i] = spawn(accept_loop, srv, l) end
  return srv
end

local function check_handler(fname, handler)
  if type(handler) ~= "function" and not (getmetatable(handler) or {}).__call then
    error("bad argument #1 to '" .. fname .. "' (function expected, got " .. type(handler) .. ")", 3)
  end
end

-- aio.start_server(handler, host, port, opts) -> Server
function M.start_server(handler, host, port, opts)
  check_handler("start_server", handler)
  if host ~= nil and type(host) ~= "string" and type(host) ~= "table" then
    error("bad argument #2 to 'start_server' (string expected, got " .. type(host) .. ")", 2)
  end
  if type(host) == "table" then
    for i, h in ipairs(host) do errors.check_nul(h, "start_server", "host " .. i) end
  else
    errors.check_nul(host, "start_server", "#2")
  end
  port = checkport("start_server", port == nil and 0 or port, 3)
  opts = check_opts("start_server", opts)
  if opts.backlog ~= nil and math.tointeger(opts.backlog) == nil then
    error("start_server: opts.backlog must be an integer", 2)
  end
  local backlog, reuse, limit = opts.backlog or 100, opts.reuse_port, opts.limit
  local listeners = {}
  local ok, e = pcall(function()
    if host == nil or host == "" then
      if opts.family ~= "inet6" then
        listeners[#listeners + 1] = listen("inet", "0.0.0.0", port, backlog, reuse, false, limit)
      end
      if opts.family ~= "inet" then
        -- port 0: the port the IPv4 socket got, when it is free on IPv6 too
        -- (so one port number reaches both; asyncio takes two)
        local p6 = port
        if port == 0 and listeners[1] then p6 = select(2, listeners[1]:getsockname()) end
        local ok6, l6 = pcall(listen, "inet6", "::", p6, backlog, reuse, true, limit)
        if not ok6 and p6 ~= port then
          ok6, l6 = pcall(listen, "inet6", "::", port, backlog, reuse, true, limit)
        end
        if ok6 then listeners[#listeners + 1] = l6
        elseif opts.family == "inet6" then error(l6, 0) end
      end
      return
    end
    local hosts = type(host) == "table" and host or { host }
    for _, h in ipairs(hosts) do
      for _, ai in ipairs(resolve(h, port, opts.family, true)) do
        listeners[#listeners + 1] = listen(ai.family, ai.host, ai.port, backlog, reuse,
          ai.family == "inet6", limit)
      end
    end
  end)
  if not ok then
    for _, l in ipairs(listeners) do l:close() end
    error(e, 0)
  end
  return new_server(handler, listeners, nil, opts.tls)
end

-- aio.start_unix_server(handler, path, opts) -> Server
function M.start_unix_server(handler, path, opts)
  check_handler("start_unix_server", handler)
  if type(path) ~= "string" then
    error("bad argument #2 to 'start_unix_server' (string expected, got " .. type(path) .. ")", 2)
  end
  check_unix_path("start_unix_server", path, 2)
  opts = check_opts("start_unix_server", opts)
  local l = listen("unix", path, nil, opts.backlog or 100, false, false, opts.limit)
  return new_server(handler, { l }, path, opts.tls)
end

-- a method called with '.' (no self, or another object): a misuse error
-- at the caller's line, not an index error inside this file
local function check_server(self, fname)
  if getmetatable(self) ~= Server then errors.badself(fname, "aio.Server", self) end
end

-- server:getsockname([i]): host, port (a path for Unix) of listener i
function Server:getsockname(i)
  check_server(self, "getsockname")
  local l = self._listeners[i or 1]
  if l == nil then error("getsockname: no listening socket " .. tostring(i or 1), 2) end
  if not l:is_open() then error("getsockname: the server is closed", 2) end
  return l:getsockname()
end

function Server:is_serving() check_server(self, "is_serving") return self._serving end

-- stop listening; connections in progress go on
function Server:close()
  check_server(self, "close")
  if not self._serving then return end
  self._serving = false
  -- the socket file goes only while it is still this server's
  if self._path then self._listeners[1]:unlink(self._path) end
  for _, l in ipairs(self._listeners) do l:close() end
  -- as asyncio: the serve_forever in progress ends with CancelledError
  if self._forever and not self._forever:done() then self._forever:cancel() end
  if self._closed_ev then self._closed_ev:set() end
end
Server.__close = Server.close

-- wait until closed and every connection's handler has finished
function Server:wait_closed()
  check_server(self, "wait_closed")
  if self._serving then event(self, "_closed_ev"):wait() end
  for _, t in ipairs(self._acceptors) do wait_task_quietly(t) end
  while self._active > 0 do event(self, "_idle"):wait() end
end

-- serve until cancelled or closed; either way it raises CancelledError, and
-- cancelling closes the server
function Server:serve_forever()
  check_server(self, "serve_forever")
  if not self._serving then error("serve_forever: the server is closed", 2) end
  if self._forever then error("serve_forever: already serving forever", 2) end
  local f = Future()
  self._forever = f
  local ok, e = pcall(f.await, f)
  self._forever = nil
  if not ok then
    self:close()
    error(e, 0)
  end
end

function Server:start_serving() end

function Server:__tostring()
  return string.format("aio.Server (%s)", self._serving and "serving" or "closed")
end

-- Internal, for subprocess pipes: require("_aio.stream").wrap(fd [, limit])
-- returns a Reader and a Writer over any fd (see src/bindings/stream.c).

return M
