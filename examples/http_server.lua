-- A minimal HTTP/1.1 keep-alive server: `./aiolua examples/http_server.lua
-- [port]`, then `curl http://127.0.0.1:8080/hello`.
local aio = require "aio"

local port = tonumber(arg and arg[1]) or 8080

local function respond(writer, status, body, keep)
  writer:write(("HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n%s")
    :format(status, #body, keep and "" or "Connection: close\r\n", body))
  writer:drain()
end

local function handle(reader, writer)
  while true do
    local request = reader:readline()          -- "GET /path HTTP/1.1\r\n"
    if not request then break end
    local method, path, version = request:match("^(%u+) (%S+) HTTP/(%d%.%d)")
    if not method then respond(writer, "400 Bad Request", "bad request\n", false) break end
    local headers, length = {}, 0
    for line in reader:lines() do              -- headers, up to the empty line
      if line == "\r" or line == "" then break end
      local k, v = line:match("^([^:]+):%s*(.-)\r?$")
      if k then headers[k:lower()] = v end
    end
    length = tonumber(headers["content-length"] or 0)
    local body = length > 0 and reader:readexactly(length) or ""
    local keep = version == "1.1" and (headers.connection or ""):lower() ~= "close"
    respond(writer, "200 OK", ("%s %s (%d bytes of body)\n"):format(method, path, #body), keep)
    if not keep then break end
  end
  writer:close()
end

local server = aio.start_server(handle, "127.0.0.1", port, { backlog = 1024 })
print("http server on", server:getsockname())
server:serve_forever()
