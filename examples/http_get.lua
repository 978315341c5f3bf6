-- An HTTP/1.1 client: `./aiolua examples/http_get.lua http://127.0.0.1:8000/`
-- fetches a page (Content-Length or read-until-close bodies) and prints it.
local aio = require "aio"

local url = arg and arg[1] or "http://127.0.0.1:8000/"
local host, port, path = url:match("^http://([^/:]+):?(%d*)(/?.*)$")
assert(host, "usage: http_get.lua http://host[:port]/path")
port = tonumber(port) or 80
if path == "" then path = "/" end

local reader, writer = aio.open_connection(host, port)
writer:write(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"):format(path, host))
writer:drain()

local status = reader:readline()
local head = reader:readuntil("\r\n\r\n")
local length = tonumber(head:lower():match("content%-length:%s*(%d+)"))
local body = length and reader:readexactly(length) or reader:read() or ""
writer:close()

io.stderr:write(status)
io.write(body)
