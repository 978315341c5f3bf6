-- aiolua as a rock: `luarocks make` in the source tree builds aio.so (every
-- aio.* module, C and Lua, in one file) and installs it into the tree's
-- Lua 5.4 cpath.  The aiolua program and the embedding library come from
-- `make install` instead.  Needs libev (Debian: libev-dev).
rockspec_format = "3.0"
package = "aiolua"
version = "scm-1"
source = {
  url = "git+https://example.invalid/aiolua.git",  -- the project's repository
}
description = {
  summary = "asyncio for Lua 5.4, in C",
  detailed = [[
    One event loop per thread, tasks and futures on coroutines, streams,
    subprocesses, signals, synchronisation, queues and worker threads,
    on libev: require "aio".
  ]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
external_dependencies = {
  LIBEV = { header = "ev.h", library = "ev" },
}
build = {
  type = "make",
  build_target = "build/aio.so",
  build_variables = {
    CC = "$(CC)",
    CFLAGS = "$(CFLAGS) -I$(LIBEV_INCDIR)",
    LDFLAGS = "$(LIBFLAG) -L$(LIBEV_LIBDIR)",
    LUA_CFLAGS = "-I$(LUA_INCDIR)",
  },
  install_pass = false,
  install = {
    lib = { aio = "build/aio.so" },
  },
}
