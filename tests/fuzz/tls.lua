-- tests/fuzz/tls.lua: the TLS server side (fuzz_host.c runs it).  The
-- input is what a client sends first: it goes through a socketpair, in
-- chunks whose sizes the first byte picks, to a Writer doing start_tls
-- with a server context; then the client half-closes.  Invariants: no
-- crash, the handshake fails with TLSError or OSError (or, for a valid
-- flight, waits for more and ends at EOF), no task or fd left over.
local aio = require "aio"
local wrap = require("_aio.stream").wrap
require "aio.stream"  -- the Lua half of Reader and Writer (lines, start_tls)
local pair = require("fuzz").pair

local function check(c, fmt, ...)
  if not c then error("tls fuzz: " .. string.format(fmt, ...), 0) end
end

-- a throwaway EC certificate, made once per run
local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir .. " && openssl req -x509 -newkey ec"
  .. " -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 -subj /CN=localhost"
  .. " -keyout " .. dir .. "/k.pem -out " .. dir .. "/c.pem 2>/dev/null"))
local ctx = aio.tls.context({ server = true, cert_file = dir .. "/c.pem",
                              key_file = dir .. "/k.pem", handshake_timeout = 2 })
os.execute("rm -rf " .. dir)

local OK = { TLSError = true, OSError = true }

function fuzz_one(data)
  local fa, fb = pair()
  local r, w = wrap(fa)
  local pr, pw = wrap(fb)
  local step = #data > 0 and data:byte(1) % 64 + 1 or 1
  local peer = aio.spawn(function()
    local ok = pcall(function()
      for i = 2, #data, step do
        pw:write(data:sub(i, i + step - 1))
        aio.sleep(0)
      end
      pw:write_eof()
    end)
    while true do  -- swallow what the server answers
      local okr, s = pcall(pr.read, pr, 65536)
      if not okr or s == nil then break end
    end
    pw:close()
    return ok
  end)
  local ok, e = pcall(w.start_tls, w, ctx)
  if ok then
    local okr, e2 = pcall(r.read, r)
    check(okr or OK[aio.errtype(e2)], "read after the handshake: %s", tostring(e2))
  else
    check(OK[aio.errtype(e)], "start_tls raised %s", tostring(e))
  end
  w:close()
  peer:await()
  check(#aio.all_tasks() == 1, "%d tasks left", #aio.all_tasks())
end
