-- cancellation stress (issue 11): 1,000 tasks in mixed waits (sleep, a
-- stream read, a lock, a queue's put and get, a subprocess's wait), each
-- cancelled at a random moment.  Afterwards: no lock held, every item put
-- was got exactly once or is still queued, no task, fd or child left.
local aio = require "aio"
local S = require "support"

local settled_fds = S.settled_fds

describe("cancellation stress", function()
  it("1,000 tasks cancelled at random waits leave nothing behind", function()
    math.randomseed(tonumber(os.getenv("STRESS_SEED")) or os.time())
    local fds = settled_fds()
    local lock = aio.Lock()
    local q = aio.Queue(8)
    local put, got, inside = {}, {}, 0
    local next_item = 0
    local nproc = 0

    -- a server that drips bytes: readers wait in read most of the time
    local srv = aio.start_server(function(r, w)
      pcall(function()
        while true do
          w:write("x")
          w:drain()
          aio.sleep(0.01 + math.random() * 0.02)
        end
      end)
      w:close()
    end, "127.0.0.1", 0)
    local _, port = srv:getsockname()

    local kinds = {
      function() aio.sleep(math.random() * 0.05) end,
      function()
        local r, w = aio.open_connection("127.0.0.1", port)
        local ok, e = pcall(function()
          for _ = 1, math.random(1, 5) do assert(r:read(1) == "x") end
        end)
        w:close()
        if not ok then error(e, 0) end
      end,
      function()
        local g <close> = lock:hold()
        inside = inside + 1
        local out <close> = setmetatable({}, { __close = function() inside = inside - 1 end })
        assert(inside == 1, "two tasks inside the lock")
        aio.sleep(math.random() * 0.005)
      end,
      function()
        next_item = next_item + 1
        local item = next_item
        q:put(item)
        put[item] = true  -- put returned: the item is in the queue
      end,
      function()
        local item = q:get()
        assert(not got[item], "item " .. item .. " got twice")
        got[item] = true
      end,
      function()
        if nproc >= 20 then return aio.sleep(0.01) end  -- a few children only
        nproc = nproc + 1
        local p = aio.exec({ "sleep", "0.05" })
        local ok, e = pcall(p.wait, p)
        if not ok then  -- cancelled in wait: reap it before going
          p:kill()
          aio.shield(aio.spawn(p.wait, p)):await()
          error(e, 0)
        end
      end,
    }

    local tasks = {}
    for i = 1, 1000 do
      local kind = kinds[math.random(#kinds)]
      tasks[i] = aio.spawn(function()
        for _ = 1, math.random(1, 4) do kind() end
      end)
    end
    -- cancel at random moments, half of them
    for _ = 1, 500 do
      aio.sleep(math.random() < 0.5 and 0 or math.random() * 0.002)
      tasks[math.random(#tasks)]:cancel()
    end
    -- getters and putters still waiting: let the queue settle, then end them
    aio.sleep(0.1)
    for _, t in ipairs(tasks) do t:cancel() end
    local ncancelled = 0
    for _, t in ipairs(tasks) do
      local ok, e = pcall(t.await, t)
      if not ok then
        assert.equal("CancelledError", aio.errtype(e), tostring(e))
        ncancelled = ncancelled + 1
      end
    end
    assert.is_true(ncancelled > 100)
    srv:close()
    srv:wait_closed()

    assert.is_false(lock:locked())
    assert.equal(0, inside)
    while not q:empty() do
      local item = q:get_nowait()
      assert.is_nil(got[item], "item " .. item .. " got and still queued")
      got[item] = true
    end
    assert.is_not_nil(next(put), "no put completed")
    assert.is_true(nproc > 0, "no subprocess waited")
    for item in pairs(put) do assert.is_true(got[item], "item " .. item .. " lost") end
    for item in pairs(got) do
      -- a put cancelled after its item went in would be got without a record
      assert.is_true(put[item] or false, "item " .. item .. " got, but its put raised")
    end
    assert.equal(1, #aio.all_tasks())
    assert.equal(fds, settled_fds())
  end)
end)
