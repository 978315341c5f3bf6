/*
** preload.c: what busted needs beyond Lua under wine, for
** build/win/aiolua-test.exe only (linked with --wrap=luaL_openlibs):
** lfs (LuaFileSystem, from Debian's source package), and small stand-ins
** for the C parts of lua-term (term.core) and luasystem (system), and
** aiolua_wintest (live transports, for the specs' leak checks).
*/
#include <windows.h>

#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"

int luaopen_lfs(lua_State *L);
void __real_luaL_openlibs(lua_State *L);

static int term_isatty(lua_State *L) { lua_pushboolean(L, 0); return 1; }

static int open_term_core(lua_State *L) {
  lua_newtable(L);
  lua_pushcfunction(L, term_isatty);
  lua_setfield(L, -2, "isatty");
  return 1;
}

static int sys_gettime(lua_State *L) {
  FILETIME ft;
  ULARGE_INTEGER u;
  GetSystemTimeAsFileTime(&ft);
  u.LowPart = ft.dwLowDateTime;
  u.HighPart = ft.dwHighDateTime;
  lua_pushnumber(L, (double)(u.QuadPart - 116444736000000000ULL) * 1e-7);
  return 1;
}

static int sys_monotime(lua_State *L) {
  LARGE_INTEGER f, n;
  QueryPerformanceFrequency(&f);
  QueryPerformanceCounter(&n);
  lua_pushnumber(L, (double)n.QuadPart / (double)f.QuadPart);
  return 1;
}

static int sys_sleep(lua_State *L) {
  Sleep((DWORD)(luaL_checknumber(L, 1) * 1000));
  return 0;
}

static int open_system(lua_State *L) {
  static const luaL_Reg f[] = {
    { "gettime", sys_gettime }, { "monotime", sys_monotime },
    { "sleep", sys_sleep }, { NULL, NULL }
  };
  luaL_newlib(L, f);
  return 1;
}

/* the IOCP backend's live transport handles: what tests/lua/support.lua's
** fd_count counts on Windows (wine has no /proc/self/fd of its own, and
** reports 0 for GetProcessHandleCount) */
long aio__iocp_live(void);

static int live(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)aio__iocp_live());
  return 1;
}

static int open_wintest(lua_State *L) {
  lua_newtable(L);
  lua_pushcfunction(L, live);
  lua_setfield(L, -2, "live");
  return 1;
}

void __wrap_luaL_openlibs(lua_State *L) {
  __real_luaL_openlibs(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_lfs);
  lua_setfield(L, -2, "lfs");
  lua_pushcfunction(L, open_term_core);
  lua_setfield(L, -2, "term.core");
  lua_pushcfunction(L, open_system);
  lua_setfield(L, -2, "system");
  lua_pushcfunction(L, open_wintest);
  lua_setfield(L, -2, "aiolua_wintest");
  lua_pop(L, 1);
}
