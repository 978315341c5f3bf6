/*
** errors.c: the one constructor of aio error objects on the C side.  An
** error object is a table {type=, message=[, errno=, code=]} with the shared
** metatable "aio.Error" (__tostring gives "<type>: <message>").
*/
#include <errno.h>
#include <stdarg.h>
#include <string.h>

#include "sched.h"

void aio__pusherror(lua_State *L, const char *type, int code,
                    const char *fmt, ...) {
  va_list ap;
  lua_createtable(L, 0, code ? 4 : 2);
  lua_pushstring(L, type);
  lua_setfield(L, -2, "type");
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_setfield(L, -2, "message");
  if (code) {
    const char *name = aio__errname(code);
    if (code < 0) code = -code;
    lua_pushinteger(L, code);
    lua_setfield(L, -2, "errno");
    if (name) lua_pushstring(L, name);
    else lua_pushfstring(L, "E%d", code);
    lua_setfield(L, -2, "code");
  }
  luaL_setmetatable(L, AIO_ERROR_MT);
}

int aio__error(lua_State *L, const char *type, int code, const char *fmt,
               ...) {
  va_list ap;
  const char *msg;
  va_start(ap, fmt);
  msg = lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  aio__pusherror(L, type, code, "%s", msg);
  return lua_error(L);
}

const char *aio__errtype(lua_State *L, int idx) {
  const char *t = NULL;
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx)) return NULL;
  luaL_getmetatable(L, AIO_ERROR_MT);
  if (lua_rawequal(L, -1, -2)) {
    lua_pushstring(L, "type");
    if (lua_rawget(L, idx) == LUA_TSTRING)
      t = lua_tostring(L, -1);  /* kept alive by the error table */
    lua_pop(L, 1);
  }
  lua_pop(L, 2);
  return t;
}

/* tostring without raising, by lua.c's rule for error objects: a string
** or a number as it is, else what __tostring gives (run protected), else
** "(error object is a <type> value)" (aio__tostring) */
static int tostr(lua_State *L) {
  int t = lua_type(L, 1);
  if (t == LUA_TSTRING || t == LUA_TNUMBER) luaL_tolstring(L, 1, NULL);
  else if (!luaL_callmeta(L, 1, "__tostring")) lua_pushnil(L);
  return 1;
}

const char *aio__tostring(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  lua_pushcfunction(L, tostr);
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_isstring(L, -1)) {
    lua_pop(L, 1);
    lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, idx));
  }
  return lua_tostring(L, -1);
}

const char *aio__errname(int code) {
  if (code < 0) code = -code;
  switch (code) {
#define E(x) case x: return #x;
    E(EPERM) E(ENOENT) E(ESRCH) E(EINTR) E(EIO) E(ENXIO) E(E2BIG)
    E(ENOEXEC) E(EBADF) E(ECHILD) E(EAGAIN) E(ENOMEM) E(EACCES) E(EFAULT)
    E(EBUSY) E(EEXIST) E(EXDEV) E(ENODEV) E(ENOTDIR) E(EISDIR) E(EINVAL)
    E(ENFILE) E(EMFILE) E(ENOTTY) E(EFBIG) E(ENOSPC) E(ESPIPE) E(EROFS)
    E(EMLINK) E(EPIPE) E(EDOM) E(ERANGE) E(ENAMETOOLONG) E(ENOSYS)
    E(ENOTEMPTY) E(ELOOP) E(ENOTSOCK) E(EDESTADDRREQ) E(EMSGSIZE)
    E(EPROTOTYPE) E(ENOPROTOOPT) E(EPROTONOSUPPORT) E(EOPNOTSUPP)
    E(EAFNOSUPPORT) E(EADDRINUSE) E(EADDRNOTAVAIL) E(ENETDOWN)
    E(ENETUNREACH) E(ECONNABORTED) E(ECONNRESET) E(ENOBUFS) E(EISCONN)
    E(ENOTCONN) E(ETIMEDOUT) E(ECONNREFUSED) E(EHOSTUNREACH) E(EALREADY)
    E(EINPROGRESS) E(ECANCELED)
#undef E
    default: return NULL;
  }
}

/* ---- Lua side: _aio.core's error functions ---- */

static int error_tostring(lua_State *L) {
  const char *type, *msg;
  lua_getfield(L, 1, "type");
  lua_getfield(L, 1, "message");
  type = lua_tostring(L, -2);
  msg = lua_tostring(L, -1);
  if (msg && *msg) lua_pushfstring(L, "%s: %s", type ? type : "Error", msg);
  else lua_pushstring(L, type ? type : "Error");
  return 1;
}

/* core.newerror(type, message [, fields]) */
int aio__l_newerror(lua_State *L) {
  const char *type = luaL_checkstring(L, 1);
  const char *msg = luaL_optstring(L, 2, "");
  aio__pusherror(L, type, 0, "%s", msg);
  if (lua_istable(L, 3)) {
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, -4);
    }
  }
  return 1;
}

/* aio.errtype(e) */
int aio__l_errtype(lua_State *L) {
  const char *t = aio__errtype(L, 1);
  if (t) lua_pushstring(L, t);
  else lua_pushnil(L);
  return 1;
}

void aio__error_meta(lua_State *L) {
  if (luaL_newmetatable(L, AIO_ERROR_MT)) {
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
}
