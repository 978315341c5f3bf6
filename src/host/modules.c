/*
** modules.c: luaopen_aio, the entry point of both aio.so and the aiolua
** program.  It puts the C modules (_aio.*) and the Lua modules compiled into
** the binary (the files of lua/aio, see embed_lua.sh) into package.preload, so every
** aio.* module loads from any directory with no LUA_PATH, then loads "aio".
*/
#include <string.h>

#include "sched.h"

typedef struct aio_luamod {
  const char *name;
  const unsigned char *src;
  size_t len;
} aio_luamod;

extern const aio_luamod aio__luamods[];  /* generated: build/gen/luamods.c */

static const luaL_Reg cmods[] = {
  { "_aio.core", luaopen__aio_core },
  { "_aio.coro", luaopen__aio_coro },
  { "_aio.stream", luaopen__aio_stream },
  { "_aio.udp", luaopen__aio_udp },
  { "_aio.dns", luaopen__aio_dns },
  /* issue 6: subprocesses and signals */
  { "_aio.process", luaopen__aio_process },
  { "_aio.signal", luaopen__aio_signal },
  { "_aio.thread", luaopen__aio_thread },
  { "_aio.waitq", luaopen__aio_waitq },
  { "_aio.queue", luaopen__aio_queue },
  { "_aio.tls", luaopen__aio_tls },          /* issue 5 */
  { NULL, NULL }
};

static int load_luamod(lua_State *L) {
  const aio_luamod *m = lua_touserdata(L, lua_upvalueindex(1));
  char chunkname[128];
  lua_pushfstring(L, "@%s.lua", m->name);
  strncpy(chunkname, lua_tostring(L, -1), sizeof chunkname - 1);
  chunkname[sizeof chunkname - 1] = '\0';
  lua_pop(L, 1);
  if (luaL_loadbuffer(L, (const char *)m->src, m->len, chunkname) != LUA_OK)
    return lua_error(L);
  lua_pushvalue(L, 1);  /* the module name, as require passes it */
  lua_call(L, 1, 1);
  return 1;
}

static void preload_all(lua_State *L) {
  const aio_luamod *m;
  const luaL_Reg *c;
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (c = cmods; c->name; c++) {
    lua_pushcfunction(L, c->func);
    lua_setfield(L, -2, c->name);
  }
  for (m = aio__luamods; m->name; m++) {
    if (strcmp(m->name, "aio") == 0) continue;  /* loaded by luaopen_aio */
    lua_pushlightuserdata(L, (void *)m);
    lua_pushcclosure(L, load_luamod, 1);
    lua_setfield(L, -2, m->name);
  }
  lua_pop(L, 1);
}

int luaopen_aio(lua_State *L) {
  const aio_luamod *m;
  preload_all(L);
  luaL_requiref(L, "_aio.coro", luaopen__aio_coro, 0);
  lua_pop(L, 1);
  for (m = aio__luamods; m->name; m++)
    if (strcmp(m->name, "aio") == 0) break;
  if (m->name == NULL) return luaL_error(L, "aio: init module missing");
  lua_pushlightuserdata(L, (void *)m);
  lua_pushcclosure(L, load_luamod, 1);
  lua_pushstring(L, "aio");
  lua_call(L, 1, 1);
  return 1;
}

/* for the all-in-one searcher: require "aio.x" before "aio" finds
** luaopen_aio_x in aio.so (generated), which lands here */
int aio__open_submodule(lua_State *L, const char *name) {
  preload_all(L);
  luaL_requiref(L, "_aio.coro", luaopen__aio_coro, 0);
  lua_pop(L, 1);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_getfield(L, -1, name);
  lua_pushstring(L, name);
  lua_call(L, 1, 1);
  return 1;
}
