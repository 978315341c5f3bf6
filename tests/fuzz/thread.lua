-- tests/fuzz/thread.lua: the to_thread value copier (fuzz_host.c runs it).
-- The input is a little program that builds Lua values: nil, booleans,
-- integers, floats (NaN, -0.0, inf too), strings with any bytes, nested
-- tables (shared, and sometimes a cycle or a function inside, which must
-- be refused with a clear error).  The values cross to a worker and back
-- (aio.to_thread(function(...) return ... end, ...)); what comes back must
-- equal what went, deeply; a refusal must be the copier's own message.
local aio = require "aio"

local function check(c, fmt, ...)
  if not c then error("thread fuzz: " .. string.format(fmt, ...), 0) end
end

local function equal(a, b, depth)
  if type(a) ~= type(b) then return false end
  if type(a) == "number" then
    if a ~= a then return b ~= b end
    return a == b and math.type(a) == math.type(b)
       and (a ~= 0 or 1 / a == 1 / b)
  end
  if type(a) ~= "table" then return a == b end
  if depth > 200 then return false end
  -- keys that are tables arrive as new tables: match those by value
  local na, nb, used = 0, 0, {}
  for k, v in pairs(a) do
    na = na + 1
    if type(k) ~= "table" then
      if not equal(v, rawget(b, k), depth + 1) then return false end
    else
      local found = false
      for kb, vb in pairs(b) do
        if type(kb) == "table" and not used[kb] and equal(k, kb, depth + 1)
           and equal(v, vb, depth + 1) then
          used[kb], found = true, true
          break
        end
      end
      if not found then return false end
    end
  end
  for _ in pairs(b) do nb = nb + 1 end
  return na == nb
end

function fuzz_one(data)
  local p, bad = 1, nil
  local function byte()
    local c = data:byte(p) or 0
    p = p + 1
    return c
  end
  local made, building = {}, {}
  local function value(depth)
    local c = byte()
    local op = c % 12
    if op == 0 then return nil
    elseif op == 1 then return c >= 128
    elseif op == 2 then return (c >> 4) - 8
    elseif op == 3 then
      local s = data:sub(p, p + 7); p = p + 8
      if #s == 8 then return (string.unpack("<i8", s)) end
      return math.mininteger
    elseif op == 4 then
      local s = data:sub(p, p + 7); p = p + 8
      if #s == 8 then return (string.unpack("<d", s)) end
      return ({ 0.0, -0.0, 1 / 0, -1 / 0, 0 / 0 })[c % 5 + 1]
    elseif op == 5 then
      local n = byte() % 64
      local s = data:sub(p, p + n - 1); p = p + n
      return s
    elseif op == 6 or op == 7 then
      local t = {}
      made[#made + 1] = t
      building[t] = true
      if depth < 120 then
        local n = byte() % 8
        for _ = 1, n do
          local k = value(depth + 1)
          local v = value(depth + 1)
          if k ~= nil and k == k then t[k] = v end
        end
      end
      building[t] = nil
      return t
    elseif op == 8 and #made > 0 then   -- a table seen before: shared
      local t = made[c % #made + 1]
      if building[t] then bad = bad or "contains itself" end  -- an ancestor
      return t
    elseif op == 9 and c >= 240 and #made > 0 then  -- a cycle
      local t = made[c % #made + 1]
      t[#t + 1] = t
      bad = bad or "contains itself"
      return t
    elseif op == 10 and c >= 250 then
      bad = bad or "function"
      return print
    end
    return ("x"):rep(c % 7)
  end
  local args, n = {}, byte() % 6
  for i = 1, n do args[i] = value(0) end
  local ok, res = pcall(function()
    return table.pack(aio.to_thread(function(...) return ... end,
                                    table.unpack(args, 1, n)))
  end)
  if ok then
    check(res.n == n, "%d values came back for %d", res.n, n)
    for i = 1, n do
      check(equal(args[i], res[i], 0), "value %d changed on the way", i)
    end
  else
    check(type(res) == "string" and res:find("aio.to_thread: cannot copy", 1,
          true), "unexpected error: %s", tostring(res))
    check(bad ~= nil or res:find("nested deeper", 1, true),
          "refused a plain value: %s", res)
  end
  check(#aio.all_tasks() == 1, "%d tasks left", #aio.all_tasks())
end
