-- examples/embed/game.lua: a script for examples/embed/main.c.  It spawns
-- tasks and returns at once; the C main loop steps them frame by frame.
local aio = require "aio"
local game = require "game"

-- a sprite that moves one step per frame
aio.spawn(function()
  local x = 0
  while true do
    game.next_frame():await()
    x = x + 1
  end
end)

-- loading runs on the worker pool while frames go on
aio.spawn(function()
  local first = game.frame()
  local a, b = game.load("hero.png"), game.load("level1.map")
  local hero, level = a:await(), b:await()
  print(string.format("loaded %s (%d) and %s (%d) in %d frames",
    hero.name, hero.checksum, level.name, level.checksum, game.frame() - first))
  -- CPU work in Lua, off the loop
  local primes = aio.to_thread(function(n)
    local count = 0
    for i = 2, n do
      local p = true
      for d = 2, math.floor(math.sqrt(i)) do
        if i % d == 0 then p = false break end
      end
      if p then count = count + 1 end
    end
    return count
  end, 200000)
  print("primes below 200000: " .. primes .. ", frame " .. game.frame())
  aio.sleep(0.25)
  game.quit()
end)
