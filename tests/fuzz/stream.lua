-- tests/fuzz/stream.lua: the stream reader harness (fuzz_host.c runs it).
-- Input: limit selector, separator selector, a list of reader operations,
-- a list of chunk sizes, then the payload.  A writer task sends the payload
-- through a socketpair in those chunks (yielding between them); the reader
-- runs the operations, then reads to EOF.  Invariants: every byte handed
-- out (results, IncompleteReadError.partial) is the next byte of the
-- payload; readuntil/readline never return a chunk past `limit` and raise
-- LimitOverrunError exactly when the model says; readline's discards hold
-- no newline; nothing but those errors is raised; no task or fd is left.
local aio = require "aio"
local wrap = require("_aio.stream").wrap
require "aio.stream"  -- the Lua half of Reader and Writer (lines, start_tls)
local pair = require("fuzz").pair

local LIMITS = { 1, 2, 3, 7, 16, 100, 1024, 65536 }
local SEPS = { "\n", "\r\n", "ab", "\0", "0123456789abcdefXY" }

local function check(c, fmt, ...)
  if not c then error("stream fuzz: " .. string.format(fmt, ...), 0) end
end

function fuzz_one(data)
  if #data < 4 then return end
  local limit = LIMITS[data:byte(1) % #LIMITS + 1]
  local sep = SEPS[data:byte(2) % #SEPS + 1]
  local i = 3
  local nops = data:byte(i) % 48; i = i + 1
  local ops = { data:byte(i, i + nops - 1) }; i = i + nops
  local nch = (data:byte(i) or 0) % 32; i = i + 1
  local sizes = { data:byte(i, i + nch - 1) }; i = i + nch
  local input = data:sub(i)

  local fa, fb = pair()
  local r, rw = wrap(fa, limit)
  local _, w = wrap(fb)
  local sender = aio.spawn(function()
    local p, k = 1, 1
    while p <= #input do
      local n = #sizes > 0 and sizes[(k - 1) % #sizes + 1] + 1 or #input
      w:write(input:sub(p, p + n - 1))
      p, k = p + n, k + 1
      aio.sleep(0)
    end
    w:close()
  end)

  local pos = 1       -- the next payload byte the reader should hand out
  local synced = true -- false after a readline discard of unknown size
  local function took(s, what)
    if not synced then return end
    check(input:sub(pos, pos + #s - 1) == s,
          "%s at %d handed out %q, not the next bytes", what, pos, s)
    pos = pos + #s
  end
  local function sepat(s)  -- offset of s from pos in the payload, or nil
    local at = input:find(s, pos, true)
    return at and at - pos
  end

  local function until_(fname, s)
    local ok, res = pcall(fname == "readline" and r.readline or r.readuntil,
                          r, s)
    if ok then
      if res == nil then
        check(fname == "readline", "readuntil returned nil")
        check(not synced or pos > #input, "readline: nil before the end")
        return false
      end
      took(res, fname)
      local body = #res - #s
      if res:sub(-#s) == s then
        check(body <= limit, "%s returned %d bytes past limit %d",
              fname, body, limit)
        check(not synced or res:find(s, 1, true) == body + 1,
              "%s returned a chunk with an earlier separator", fname)
      else
        check(fname == "readline", "readuntil returned no separator")
        check(not synced or pos > #input, "readline: a last line too early")
      end
      return true
    end
    local t = aio.errtype(res)
    if t == "LimitOverrunError" then
      local at = synced and sepat(s)
      check(res.consumed > limit or (at and at > limit),
            "%s: LimitOverrunError with consumed %d under limit %d",
            fname, res.consumed, limit)
      if fname == "readline" then
        -- consumed is the separator's offset, or what was searched: the
        -- two can be equal, only the message tells them apart
        if res.message:find("separator found", 1, true) then
          check(not synced or at == res.consumed,
                "readline: overrun at %d, the separator is at %s",
                res.consumed, tostring(at))
          check(res.consumed > limit, "readline: overrun at %d, limit %d",
                res.consumed, limit)
          pos = pos + res.consumed + 1
        else                                -- discarded an unknown amount
          check(not at or at >= res.consumed,
                "readline: discarded a newline")
          synced = false
        end
      end
      return true
    elseif t == "IncompleteReadError" then
      check(fname == "readuntil", "readline raised IncompleteReadError")
      took(res.partial, "readuntil partial")
      check(not synced or pos > #input, "IncompleteReadError before EOF")
      return false
    end
    error(res, 0)
  end

  local live = true
  for k = 1, #ops do
    if not live then break end
    local op, arg = ops[k] & 7, ops[k] >> 3
    if op == 0 then
      local s = r:read(arg + 1)
      if s == nil then
        check(not synced or pos > #input, "read: nil before the end")
        live = false
      else
        check(#s <= arg + 1, "read(%d) gave %d bytes", arg + 1, #s)
        check(#s > 0, "read gave an empty string")
        took(s, "read")
      end
    elseif op == 1 then
      live = until_("readline", "\n")
    elseif op == 2 then
      live = until_("readuntil", sep)
    elseif op == 3 then
      local ok, res = pcall(r.readexactly, r, arg)
      if ok then
        check(#res == arg, "readexactly(%d) gave %d bytes", arg, #res)
        took(res, "readexactly")
      else
        check(aio.errtype(res) == "IncompleteReadError", "readexactly: %s",
              tostring(res))
        check(#res.partial < arg and res.expected == arg,
              "readexactly: bad IncompleteReadError")
        took(res.partial, "readexactly partial")
        check(not synced or pos > #input, "readexactly: early EOF")
        live = false
      end
    elseif op == 4 then
      if r:at_eof() then
        check(not synced or pos > #input, "at_eof before the end")
        live = false
      end
    elseif op == 5 then
      aio.sleep(0)
    elseif op == 6 then
      local s = r:read(arg * 1000 + 1)
      if s == nil then live = false else took(s, "read(large)") end
    else
      local n = 0
      local ok, e = pcall(function()
        for line in r:lines() do
          took(line, "lines")
          if pos <= #input then took("\n", "lines") end
          n = n + 1
          if n > arg then break end
        end
      end)
      if not ok then  -- only an overrun, whose discard lines() hides
        check(aio.errtype(e) == "LimitOverrunError", "lines: %s", tostring(e))
        synced = false
      end
    end
  end
  local rest = r:read() or ""
  if synced then
    took(rest, "read()")
    check(pos == #input + 1, "%d payload bytes never handed out",
          #input + 1 - pos)
  else
    check(input:sub(-#rest) == rest or #rest == 0, "read() after a discard")
  end
  check(r:read() == nil and r:at_eof(), "not at EOF after read()")
  sender:await()
  rw:close()
  check(#aio.all_tasks() == 1, "%d tasks left", #aio.all_tasks())
end
