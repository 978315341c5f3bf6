-- tests/win/windows_spec.lua: on Windows (make test-windows, under wine),
-- what the IOCP backend does not do yet fails with a clear error naming
-- the platform, never a crash; the `aio` program and the module work.
local aio = require "aio"

local function fails_naming_windows(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok)
  assert.equal("OSError", aio.errtype(err))
  assert.matches("Windows", tostring(err))
  return err
end

describe("on Windows", function()
  it("runs on the IOCP backend", function()
    assert.equal("iocp", require("_aio.core").backend)
  end)

  it("signals other than 9 and 15 to a child raise naming Windows", function()
    local p = aio.exec({ "build\\win\\aiolua.exe", "-e", "x = 1" })
    local ok, e = pcall(p.send_signal, p, "SIGINT")
    assert.is_false(ok)
    assert.matches("Windows", tostring(e))
    p:wait()
  end)

  it("POSIX signals other than SIGINT and SIGBREAK raise naming Windows", function()
    fails_naming_windows(aio.wait_signal, "SIGTERM")
    local loop = aio.loop()
    loop:add_signal_handler("SIGINT", function() end)   -- Ctrl-C: works
    loop:remove_signal_handler("SIGINT")
    loop:add_signal_handler("SIGBREAK", function() end) -- Ctrl-Break: works
    loop:remove_signal_handler("SIGBREAK")
  end)

  it("a SIGINT watcher can be cancelled while it waits", function()
    local t = aio.spawn(aio.wait_signal, "SIGINT")
    aio.sleep(0.01)
    t:cancel()
    assert.is_false(pcall(t.await, t))
    assert.is_true(t:cancelled())
  end)

  it("DNS runs on the worker threads", function()
    local r = aio.getaddrinfo("localhost", 80)
    assert.is_true(#r >= 1)
  end)

  it("timers keep their order and do not fire early", function()
    local order, t0 = {}, aio.now()
    local ts = {}
    for i, d in ipairs({ 0.03, 0.01, 0.02 }) do
      ts[i] = aio.spawn(function() aio.sleep(d) order[#order + 1] = d end)
    end
    for _, t in ipairs(ts) do t:await() end
    assert.same({ 0.01, 0.02, 0.03 }, order)
    assert.is_true(aio.now() - t0 >= 0.03)
  end)
end)
