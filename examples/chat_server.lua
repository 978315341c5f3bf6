-- A line-based chat server: every line a client sends goes to all the
-- others.  `./aiolua examples/chat_server.lua [port]`, then connect with
-- several `nc 127.0.0.1 8889`.
local aio = require "aio"

local port = tonumber(arg and arg[1]) or 8889
local clients = {}   -- writer -> name

local function broadcast(from, text)
  for w in pairs(clients) do
    if w ~= from then
      -- a client that went away must not stop the others
      pcall(w.write, w, text)
    end
  end
end

local function handle(reader, writer)
  writer:write("your name? ")
  local name = reader:readline()
  if not name then writer:close() return end
  name = name:gsub("%s+$", "")
  clients[writer] = name
  broadcast(writer, name .. " joined\n")
  local ok, err = pcall(function()
    for line in reader:lines() do       -- lines without their "\n"
      broadcast(writer, name .. ": " .. line .. "\n")
    end
  end)
  clients[writer] = nil
  broadcast(writer, name .. " left\n")
  writer:close()
  if not ok then error(err, 0) end
end

local server = aio.start_server(handle, nil, port, { limit = 4096 })
print("chat server on port", select(2, server:getsockname()))
server:serve_forever()
