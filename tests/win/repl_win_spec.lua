-- tests/win/repl_win_spec.lua: the REPL of aiolua.exe on Windows (under
-- wine) runs the loop while its prompt waits for a line: stdin is a pipe
-- fed a line at a time, and the test waits for output that only a task
-- running at the prompt can produce before it sends more.
local aio = require "aio"

local EXE = "build\\win\\aiolua.exe"
local LIMIT = 30  -- s: a bound so that a broken REPL fails, not hangs

local function repl()
  return aio.exec({ EXE, "-i" }, { stdin = "pipe", stdout = "pipe", stderr = "pipe" })
end

-- the next stdout line that matches pat (the child writes \r\n)
local function expect(p, pat)
  return aio.wait_for(aio.spawn(function()
    while true do
      local l = p.stdout:readline()
      assert(l, "EOF before a line matching " .. pat)
      l = l:gsub("\r?\n$", "")
      if l:match(pat) then return l end
    end
  end), LIMIT)
end

local function send(p, s)
  p.stdin:write(s)
  p.stdin:drain()
end

describe("the REPL on Windows", function()
  it("tasks run while the prompt waits for input", function()
    local p = repl()
    send(p, "n = 0 aio.spawn(function() while true do aio.sleep(0.01) n = n + 1 " ..
            "if n == 20 then print('twenty') end end end) return 'spawned'\n")
    expect(p, "^spawned$")
    -- no more input: only the loop at the prompt can print this
    expect(p, "^twenty$")
    send(p, "print('n', n >= 20)\n")
    expect(p, "^n\ttrue$")
    p.stdin:close()
    assert.equal(0, aio.wait_for(function() return p:wait() end, LIMIT))
  end)

  it("waiting calls at the prompt, results printed", function()
    local p = repl()
    send(p, "aio.sleep(0.05) return 'slept', 1 + 1\n")
    expect(p, "^slept\t2$")
    send(p, "f = aio.Future() aio.loop():call_later(0.05, function() f:set_result('later') end)\n")
    send(p, "f:await()\n")
    expect(p, "^later$")
    p.stdin:close()
    assert.equal(0, aio.wait_for(function() return p:wait() end, LIMIT))
  end)

  it("os.exit from a task while the prompt waits ends the REPL with its status", function()
    local p = repl()
    send(p, "aio.spawn(function() aio.sleep(0.05) os.exit(7) end) return 'armed'\n")
    expect(p, "^armed$")
    -- stdin stays open: the reader thread's read is cancelled
    assert.equal(7, aio.wait_for(function() return p:wait() end, LIMIT))
    p.stdin:close()
  end)

  it("EOF at the prompt cancels the tasks left, their cleanup runs", function()
    local p = repl()
    send(p, "aio.spawn(function() local ok = pcall(aio.sleep, 100) print('cleanup-ran', ok) end)\n")
    send(p, "aio.sleep(0) return 'ready'\n")
    expect(p, "^ready$")
    p.stdin:close()
    expect(p, "^cleanup%-ran\tfalse$")
    assert.equal(0, aio.wait_for(function() return p:wait() end, LIMIT))
  end)

  it("an error at the prompt goes to stderr and the REPL goes on", function()
    local p = repl()
    send(p, "error('boom')\nprint('after')\n")
    expect(p, "^after$")
    p.stdin:close()
    assert.equal(0, aio.wait_for(function() return p:wait() end, LIMIT))
    assert.matches("stdin:1: boom", p.stderr:read())
  end)
end)
