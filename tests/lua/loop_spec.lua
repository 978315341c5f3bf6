-- the loop: aio.sleep, aio.now, call_soon / call_later / call_at, aio.run
local aio = require "aio"
local S = require "support"

describe("aio.sleep and aio.now", function()
  it("sleeps at least the delay, on the monotonic clock", function()
    local t0 = aio.now()
    aio.sleep(0.02)
    assert.is_true(aio.now() - t0 >= 0.019)
    assert.are.equal("number", type(aio.loop():time()))
  end)

  it("the delay is required, as asyncio.sleep's (a misuse error naming aio.sleep)", function()
    assert.matches("bad argument #1 to 'aio.sleep' %(number expected, got no value%)",
      S.error_of(aio.sleep))
    assert.matches("bad argument #1 to 'aio.sleep' %(number expected, got nil%)",
      S.error_of(aio.sleep, nil, "r"))
    assert.matches("bad argument #1 to 'aio.sleep'", S.error_of(aio.sleep, "soon"))
    assert.are.equal("r", aio.sleep(-1, "r"))  -- a past delay: at once
  end)

  it("sleep(0) lets every ready task run once, in order", function()
    local log = {}
    local a = aio.spawn(function() for i = 1, 3 do log[#log + 1] = "a" .. i aio.sleep(0) end end)
    local b = aio.spawn(function() for i = 1, 3 do log[#log + 1] = "b" .. i aio.sleep(0) end end)
    a:await() b:await()
    assert.are.same({ "a1", "b1", "a2", "b2", "a3", "b3" }, log)
  end)

  it("sleepers wake in deadline order", function()
    local log = {}
    local ts = {}
    for _, d in ipairs { 0.03, 0.01, 0.02, 0.001 } do
      ts[#ts + 1] = aio.spawn(function() aio.sleep(d) log[#log + 1] = d end)
    end
    for _, t in ipairs(ts) do t:await() end
    assert.are.same({ 0.001, 0.01, 0.02, 0.03 }, log)
  end)

  it("treats a negative or NaN delay as 0", function()
    aio.sleep(-1)
    aio.sleep(0 / 0)
  end)

  it("returns its result argument, as asyncio.sleep(delay, result)", function()
    assert.are.equal("res", aio.sleep(0.001, "res"))
    assert.are.equal("r0", aio.sleep(0, "r0"))
    local t = {}
    assert.are.equal(t, aio.sleep(0, t))
    assert.are.equal(0, select("#", aio.sleep(0)))
    assert.are.equal(1, select("#", aio.sleep(0, nil)))
    -- cancelled: the CancelledError, not the result
    local task = aio.spawn(aio.sleep, 5, "x")
    aio.sleep(0)
    task:cancel()
    assert.are.equal("CancelledError", aio.errtype(S.error_of(task.await, task)))
    assert.are.equal("y", aio.spawn(aio.sleep, 0.001, "y"):await())
  end)
end)

describe("loop:call_soon / call_later / call_at", function()
  it("call_soon runs on the next step with its arguments", function()
    local got
    aio.loop():call_soon(function(a, b) got = { a, b } end, 1, "two")
    assert.is_nil(got)
    aio.sleep(0)
    assert.are.same({ 1, "two" }, got)
  end)

  it("call_later fires in deadline order; equal deadlines in call order", function()
    local loop, log = aio.loop(), {}
    local when = loop:time() + 0.01
    loop:call_at(when, function() log[#log + 1] = "at1" end)
    loop:call_later(0.02, function() log[#log + 1] = "later" end)
    loop:call_at(when, function() log[#log + 1] = "at2" end)
    loop:call_later(0, function() log[#log + 1] = "zero" end)
    assert.is_true(S.wait_until(function() return #log == 4 end))
    assert.are.same({ "zero", "at1", "at2", "later" }, log)
  end)

  it("a negative delay is a deadline in the past, ordered as one (asyncio)", function()
    local loop, log = aio.loop(), {}
    loop:call_later(0, function() log[#log + 1] = "zero" end)
    loop:call_later(-1, function() log[#log + 1] = "neg1" end)
    loop:call_later(-0.5, function() log[#log + 1] = "neg05" end)
    loop:call_soon(function() log[#log + 1] = "soon" end)
    assert.is_true(S.wait_until(function() return #log == 4 end))
    assert.are.same({ "soon", "neg1", "neg05", "zero" }, log)
  end)

  it("passes any number of arguments", function()
    local args = {}
    for i = 1, 300 do args[i] = i end
    local got = {}
    local loop = aio.loop()
    loop:call_soon(function(...) got.soon = { ... } end, table.unpack(args))
    loop:call_later(0.001, function(...) got.later = { ... } end, table.unpack(args))
    aio.sleep(0.02)
    assert.are.same(args, got.soon)
    assert.are.same(args, got.later)
  end)

  it("a handle cancelled before it fires never runs", function()
    local loop, ran = aio.loop(), {}
    local h1 = loop:call_later(0.005, function() ran[#ran + 1] = 1 end)
    local h2 = loop:call_soon(function() ran[#ran + 1] = 2 end)
    local h3 = loop:call_later(0.005, function() ran[#ran + 1] = 3 end)
    h1:cancel() h2:cancel()
    assert.is_true(h1:cancelled() and h2:cancelled())
    assert.is_false(h3:cancelled())
    aio.sleep(0.02)
    assert.are.same({ 3 }, ran)
    assert.is_number(h3:when())
    h1:cancel()  -- twice is harmless
  end)

  it("a callback cannot wait", function()
    local err
    aio.loop():call_soon(function() err = select(2, pcall(aio.sleep, 0)) end)
    aio.sleep(0)
    assert.matches("not inside a task", err)
  end)

  it("rejects bad arguments", function()
    local loop = aio.loop()
    assert.has_error(function() loop:call_soon(42) end)
    assert.has_error(function() loop:call_later("x", print) end)
  end)
end)

describe("aio.run", function()
  it("is refused while a loop runs in this thread", function()
    assert.has_error(function() aio.run(function() end) end,
      "aio.run: a loop is already running in this thread")
  end)

  it("a coroutine resumed by a task may wait", function()
    local co = coroutine.create(function() return aio.sleep(0) end)
    -- the coroutine is resumed by the task, so this works ...
    assert.is_true((coroutine.resume(co)))
  end)
end)

describe("waiting where Lua cannot yield", function()
  it("table.sort comparator", function()
    local e = S.error_of(table.sort, { 3, 1, 2 }, function(a, b) aio.sleep(0) return a < b end)
    assert.matches("cannot wait here", e)
  end)

  it("string.gsub callback", function()
    local e = S.error_of(string.gsub, "abc", "%w", function(c) aio.sleep(0) return c end)
    assert.matches("cannot wait here", e)
  end)

  it("the main chunk of a required module", function()
    package.preload["waits_in_main_chunk"] = function() aio.sleep(0) return {} end
    local e = S.error_of(require, "waits_in_main_chunk")
    assert.matches("cannot wait here", e)
    package.preload["waits_in_main_chunk"] = nil
  end)

  it("a metamethod called from Lua code can wait", function()
    local t = setmetatable({}, { __index = function(_, k) aio.sleep(0.001) return k .. "!" end,
                                 __add = function(a, b) aio.sleep(0) return 42 end })
    assert.are.equal("x!", t.x)
    assert.are.equal(42, t + 1)
  end)

  it("pcall and xpcall can wait inside", function()
    assert.are.same({ true, 7 }, { pcall(function() aio.sleep(0.001) return 7 end) })
    assert.are.same({ true, 8 }, { xpcall(function() aio.sleep(0) return 8 end, debug.traceback) })
  end)
end)
