/*
** repl_win.c: the REPL of aiolua.exe on Windows (no libedit): plain line
** input, each chunk run as a task of the host's one loop, so waiting calls
** work at the prompt.  Unlike repl.c the loop does not run while the
** prompt waits for a line (input is read with a blocking fgets): tasks
** spawned earlier go on while a chunk runs.  Built instead of repl.c by
** `make windows`.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aiolua.h"

#define PROMPT1  "> "
#define PROMPT2  ">> "
#define EOFMARK  "<eof>"
#define LINEMAX  4096

int aio__repl(aio_host *h);

static int incomplete(lua_State *L, int status) {
  size_t lm = sizeof(EOFMARK) - 1, l;
  const char *msg;
  if (status != LUA_ERRSYNTAX) return 0;
  msg = lua_tolstring(L, -1, &l);
  return l >= lm && strcmp(msg + l - lm, EOFMARK) == 0;
}

/* compile `chunk` as "return chunk" first, then as statements; 1 when
** more lines are needed; the function (or an error message) is pushed */
static int compile(lua_State *L, const char *chunk) {
  const char *ret = lua_pushfstring(L, "return %s", chunk);
  int status = luaL_loadbuffer(L, ret, strlen(ret), "=stdin");
  lua_remove(L, -2);
  if (status == LUA_OK) return 0;
  lua_pop(L, 1);
  status = luaL_loadbuffer(L, chunk, strlen(chunk), "=stdin");
  if (incomplete(L, status)) { lua_pop(L, 1); return 1; }
  return 0;
}

/* the chunk's results, printed with print */
static int printall(lua_State *L) {
  int n = lua_gettop(L);
  if (n == 0) return 0;
  lua_getglobal(L, "print");
  lua_insert(L, 1);
  lua_call(L, n, 0);
  return 0;
}

int aio__repl(aio_host *h) {
  lua_State *L = aio_host_lua(h);
  char line[LINEMAX];
  char *chunk = NULL;
  size_t len = 0;
  for (;;) {
    size_t n;
    char *p;
    lua_settop(L, 0);
    fputs(chunk ? PROMPT2 : PROMPT1, stdout);
    fflush(stdout);
    if (fgets(line, sizeof line, stdin) == NULL) break;
    n = strlen(line);
    if (n > 0 && line[n - 1] == '\n') line[--n] = '\0';
    if (n > 0 && line[n - 1] == '\r') line[--n] = '\0';
    if (chunk == NULL && line[0] == '=') line[0] = ' ';
    p = realloc(chunk, len + n + 2);
    if (p == NULL) break;
    chunk = p;
    if (len > 0) chunk[len++] = '\n';
    memcpy(chunk + len, line, n + 1);
    len += n;
    if (compile(L, chunk)) continue;   /* more lines */
    free(chunk);
    chunk = NULL;
    len = 0;
    if (lua_type(L, -1) == LUA_TSTRING) {  /* a syntax error */
      fprintf(stderr, "%s\n", lua_tostring(L, -1));
      lua_pop(L, 1);
      continue;
    }
    /* run it as a task, then print its results */
    lua_pushcfunction(L, printall);
    lua_insert(L, -2);
    if (aio_host_call(h, 0, LUA_MULTRET) != 0) {
      fprintf(stderr, "%s\n", aio_host_errmsg(h) ? aio_host_errmsg(h) : "?");
      lua_settop(L, 0);
      continue;
    }
    {
      int nres = lua_gettop(L) - 1;
      lua_call(L, nres, 0);   /* printall, the results above it */
    }
    lua_settop(L, 0);
  }
  free(chunk);
  fputs("\n", stdout);
  return 0;
}
