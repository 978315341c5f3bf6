/*
** repl_chunk.c: chunks of the REPL, as lua.c reads and runs them (see
** repl_chunk.h); the line readers are repl.c's and repl_win.c's.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repl_chunk.h"

#define EOFMARK "<eof>"

int aio__repl_incomplete(lua_State *L, int status) {
  if (status == LUA_ERRSYNTAX) {
    size_t lmsg;
    const char *msg = lua_tolstring(L, -1, &lmsg);
    size_t lmark = sizeof(EOFMARK) - 1;
    if (lmsg >= lmark && strcmp(msg + lmsg - lmark, EOFMARK) == 0) return 1;
  }
  return 0;
}

int aio__repl_load(lua_State *L, const aio_repl_io *io) {
  int rc = io->read_line(AIO_REPL_PROMPT1), status;
  char *line;
  if (rc != R_LINE) return rc == R_EOF ? -1 : rc == R_INTERRUPT ? -2 : -3;
  line = io->take_line();
  /* an expression: print its values (and '=x' from Lua 5.1) */
  lua_pushfstring(L, "return %s;", line[0] == '=' ? line + 1 : line);
  status = luaL_loadbuffer(L, lua_tostring(L, -1), lua_rawlen(L, -1),
                           AIO_REPL_CHUNKNAME);
  lua_remove(L, -2);
  if (status == LUA_OK) {
    if (io->history) io->history(line);
    free(line);
    return LUA_OK;
  }
  lua_pop(L, 1);
  lua_pushstring(L, line);
  free(line);
  for (;;) {  /* a statement, perhaps over several lines */
    size_t len;
    const char *chunk = lua_tolstring(L, -1, &len);
    status = luaL_loadbuffer(L, chunk, len, AIO_REPL_CHUNKNAME);
    if (!aio__repl_incomplete(L, status)) break;
    lua_pop(L, 1);
    rc = io->read_line(AIO_REPL_PROMPT2);
    if (rc == R_EOF) {  /* report the chunk cut short */
      status = luaL_loadbuffer(L, chunk, len, AIO_REPL_CHUNKNAME);
      break;
    }
    if (rc != R_LINE) {
      lua_pop(L, 1);
      return rc == R_INTERRUPT ? -2 : -3;
    }
    line = io->take_line();
    lua_pushliteral(L, "\n");
    lua_pushstring(L, line);
    free(line);
    lua_concat(L, 3);  /* chunk .. "\n" .. line */
  }
  if (io->history) io->history(lua_tostring(L, -2));
  lua_remove(L, -2);  /* the source */
  return status;
}

void aio__repl_report(const char *msg) {
  fprintf(stderr, "%s\n", msg ? msg : "(error object is not a string)");
  fflush(stderr);
}

void aio__repl_run(lua_State *L, aio_host *h, const int *exiting, int tty) {
  int base = lua_gettop(L) - 1, nint = aio_host_interrupted(h), n;
  if (aio_host_call(h, 0, LUA_MULTRET) != 0) {
    const char *msg = aio_host_errmsg(h);
    if (*exiting) return;
    if (aio_host_interrupted(h) != nint && msg) {
      /* cancelled by Ctrl-C: the first line says it all */
      const char *nl = strchr(msg, '\n');
      if (tty) fputs("\n", stderr);  /* after the terminal's "^C" */
      fprintf(stderr, "%.*s\n", nl ? (int)(nl - msg) : (int)strlen(msg), msg);
      fflush(stderr);
    } else {
      aio__repl_report(msg);
    }
    lua_settop(L, base);
    return;
  }
  n = lua_gettop(L) - base;
  if (n > 0) {  /* as lua.c: the global print */
    luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
    lua_getglobal(L, "print");
    lua_insert(L, base + 1);
    if (lua_pcall(L, n, 0, 0) != LUA_OK)
      aio__repl_report(lua_pushfstring(L, "error calling 'print' (%s)",
                                       lua_tostring(L, -1)));
  }
  fflush(stdout);
  lua_settop(L, base);
}
