/*
** preload.c: what busted needs beyond Lua under wine, for
** build/win/aiolua-test.exe only (linked with --wrap=luaL_openlibs):
** lfs (LuaFileSystem, from Debian's source package), and small stand-ins
** for the C parts of lua-term (term.core) and luasystem (system), and
** aiolua_wintest (live transports, for the specs' leak checks; a
** certificate store and the environment, for tests/win/tls_ca_spec.lua).
*/
#include <stdlib.h>

#include <windows.h>
#include <wincrypt.h>

#include <mbedtls/x509_crt.h>

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

/* add_root(store, pem_file): the file's certificates into the current
** user's store of that name (made if need be); how many */
static int add_root(lua_State *L) {
  const char *store = luaL_checkstring(L, 1);
  const char *file = luaL_checkstring(L, 2);
  wchar_t wname[128];
  mbedtls_x509_crt crt, *c;
  HCERTSTORE st;
  int n = 0;
  MultiByteToWideChar(CP_UTF8, 0, store, -1, wname, 128);
  mbedtls_x509_crt_init(&crt);
  if (mbedtls_x509_crt_parse_file(&crt, file) != 0) {
    mbedtls_x509_crt_free(&crt);
    return luaL_error(L, "add_root: cannot read %s", file);
  }
  st = CertOpenSystemStoreW(0, wname);
  if (st == NULL) {
    mbedtls_x509_crt_free(&crt);
    return luaL_error(L, "add_root: cannot open store %s", store);
  }
  for (c = &crt; c != NULL && c->raw.len > 0; c = c->next)
    n += CertAddEncodedCertificateToStore(st, X509_ASN_ENCODING, c->raw.p,
             (DWORD)c->raw.len, CERT_STORE_ADD_REPLACE_EXISTING, NULL) != 0;
  CertCloseStore(st, 0);
  mbedtls_x509_crt_free(&crt);
  lua_pushinteger(L, n);
  return 1;
}

/* setenv(name, value or nil): for getenv in this process */
static int set_env(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  const char *value = luaL_optstring(L, 2, "");
  lua_pushboolean(L, _putenv_s(name, value) == 0);
  return 1;
}

static int open_wintest(lua_State *L) {
  static const luaL_Reg f[] = {
    { "live", live }, { "add_root", add_root }, { "setenv", set_env },
    { NULL, NULL }
  };
  luaL_newlib(L, f);
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
