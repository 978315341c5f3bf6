/*
** modules.c: luaopen_aio, the entry point of both aio.so and the aiolua
** program.  It puts the C modules (_aio.*) and the Lua modules compiled into
** the binary (the files of lua/aio as bytecode, see embed_lua.sh) into
** package.preload, so every aio.* module loads from any directory with no
** LUA_PATH, then loads "aio" (which loads the others on first use).
*/
#include <ctype.h>
#include <string.h>

#include "sched.h"

typedef struct aio_luamod {
  const char *name;
  const unsigned char *code;  /* bytecode, with debug information */
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

/* Each module, C or Lua, runs once per Lua state.  What it returned is
** kept in the registry, and a second require (after the program, or
** busted's insulation between spec files, cleared package.loaded) gets the
** very same table.  Running one again would be wrong: _aio.stream would
** replace the metatables that live readers use, and aio.stream would wrap
** its own wrappers.  Since aio loads its modules on first use, that first
** use may come after such a snapshot of package.loaded. */
static const char kept_key = 0;  /* registry: loader address -> module */

static int kept(lua_State *L, const void *key) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &kept_key);
  if (lua_istable(L, -1) && lua_rawgetp(L, -1, key) != LUA_TNIL) {
    lua_remove(L, -2);
    return 1;
  }
  lua_pop(L, lua_istable(L, -1) ? 2 : 1);
  return 0;
}

/* pairs over a front: the module's own pairs */
static int front_next(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 2);
  if (lua_next(L, 1)) return 2;
  lua_pushnil(L);
  return 1;
}

static int front_pairs(lua_State *L) {
  lua_pushcfunction(L, front_next);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushnil(L);
  return 3;
}

/* A C function's argument error names it as luaL_argerror does: under
** pcall, by a search of package.loaded's tables for one holding it.
** aio.sleep is also _aio.core.sleep, aio.gather aio.combinators.gather,
** and the name the search met first depended on the modules loaded so
** far.  So what require gives for an internal module (_aio.*, and the
** aio.x modules whose names the aio table takes) is an empty front whose
** reads, writes and pairs reach the module: the search does not look
** into it, and a misused function is named as API.md names it,
** 'aio.sleep'.  (aio.testing and aio.busted keep their tables: their
** functions are named through them.) */
static int fronted(const char *name) {
  if (strncmp(name, "_aio.", 5) == 0) return 1;
  return strncmp(name, "aio.", 4) == 0 && islower((unsigned char)name[4]) &&
         strcmp(name, "aio.testing") != 0 && strcmp(name, "aio.busted") != 0;
}

static void front(lua_State *L) {
  if (!lua_istable(L, -1)) return;
  lua_newtable(L);                        /* mod front */
  lua_createtable(L, 0, 3);               /* mod front mt */
  lua_pushvalue(L, -3);
  lua_setfield(L, -2, "__index");
  lua_pushvalue(L, -3);
  lua_setfield(L, -2, "__newindex");
  lua_pushvalue(L, -3);
  lua_pushcclosure(L, front_pairs, 1);
  lua_setfield(L, -2, "__pairs");
  lua_setmetatable(L, -2);
  lua_remove(L, -2);                      /* front */
}

/* the module's value on the top (nil made true, as require does), its
** front for an internal module */
static int keep(lua_State *L, const void *key, const char *name) {
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_pushboolean(L, 1);
  }
  if (fronted(name)) front(L);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &kept_key) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &kept_key);
  }
  lua_pushvalue(L, -2);
  lua_rawsetp(L, -2, key);
  lua_pop(L, 1);
  return 1;
}

static int load_luamod(lua_State *L) {
  const aio_luamod *m = lua_touserdata(L, lua_upvalueindex(1));
  if (kept(L, m)) return 1;
  /* the chunk carries its own name, "@aio.x.lua"; this one is only for
  ** the loader's own errors (a Lua of other number sizes, say) */
  if (luaL_loadbufferx(L, (const char *)m->code, m->len, m->name, "b")
      != LUA_OK)
    return lua_error(L);
  lua_pushvalue(L, 1);  /* the module name, as require passes it */
  lua_call(L, 1, 1);
  return keep(L, m, m->name);
}

static int load_cmod(lua_State *L) {
  const luaL_Reg *c = lua_touserdata(L, lua_upvalueindex(1));
  if (kept(L, c)) return 1;
  lua_pushcfunction(L, c->func);
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  return keep(L, c, c->name);
}

static void preload_all(lua_State *L) {
  const aio_luamod *m;
  const luaL_Reg *c;
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (c = cmods; c->name; c++) {
    lua_pushlightuserdata(L, (void *)c);
    lua_pushcclosure(L, load_cmod, 1);
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

/* package.preload gets every module, "aio" too, none loaded: the fresh
** state of an aio.to_thread worker, where require "aio" finds what the
** caller's finds (in the aiolua program there is no aio.so on the cpath) */
void aio__preload(lua_State *L) {
  preload_all(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_aio);
  lua_setfield(L, -2, "aio");
  lua_pop(L, 1);
}

/* require "_aio.coro" (it replaces coroutine's functions) through its
** preload entry, so it is kept and fronted as the others */
static void require_coro(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, "_aio.coro") == LUA_TNIL) {
    lua_pop(L, 1);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_getfield(L, -1, "_aio.coro");
    lua_remove(L, -2);
    lua_pushliteral(L, "_aio.coro");
    lua_call(L, 1, 1);
    lua_setfield(L, -2, "_aio.coro");
  } else {
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

int luaopen_aio(lua_State *L) {
  const aio_luamod *m;
  preload_all(L);
  require_coro(L);
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
  require_coro(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_getfield(L, -1, name);
  lua_pushstring(L, name);
  lua_call(L, 1, 1);
  return 1;
}
