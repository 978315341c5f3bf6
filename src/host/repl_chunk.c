/*
** repl_chunk.c: chunks of the REPL, as lua.c reads and runs them (see
** repl_chunk.h); the line readers are repl.c's and repl_win.c's.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repl_chunk.h"

#define EOFMARK "<eof>"

/* the load error on top says the chunk was cut short: read more */
static int incomplete(lua_State *L, int status) {
  if (status == LUA_ERRSYNTAX) {
    size_t lmsg;
    const char *msg = lua_tolstring(L, -1, &lmsg);
    size_t lmark = sizeof(EOFMARK) - 1;
    if (lmsg >= lmark && strcmp(msg + lmsg - lmark, EOFMARK) == 0) return 1;
  }
  return 0;
}

int aio__repl_buf_add(aio_repl_buf *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    char *p;
    while (cap < b->len + n + 1) cap *= 2;
    p = realloc(b->line, cap);
    if (p == NULL) return -1;
    b->line = p;
    b->cap = cap;
  }
  memcpy(b->line + b->len, s, n);
  b->len += n;
  b->line[b->len] = '\0';
  return 0;
}

void aio__repl_buf_clear(aio_repl_buf *b) {
  free(b->line);
  b->line = NULL;
  b->len = b->cap = 0;
}

/* the line read, for the caller to free ("" when none came) */
static char *take_line(aio_repl_buf *b) {
  char *l = b->line;
  b->line = NULL;
  b->len = b->cap = 0;
  return l ? l : strdup("");
}

/* prompt(firstline): tostring(_PROMPT or _PROMPT2), run protected */
static int prompt(lua_State *L) {
  if (lua_getglobal(L, lua_toboolean(L, 1) ? "_PROMPT" : "_PROMPT2")
      == LUA_TNIL)
    return 0;
  luaL_tolstring(L, -1, NULL);
  return 1;
}

/* Read one line as lua.c's pushline does, with the prompt it has:
** tostring(_PROMPT) (_PROMPT2 for a continuation), else the default.  A
** first line "=e" becomes "return e".  R_LINE with the line pushed, else
** what read_line said, with nothing pushed. */
static int pushline(lua_State *L, const aio_repl_io *io, int firstline) {
  int rc;
  char *line;
  lua_pushcfunction(L, prompt);
  lua_pushboolean(L, firstline);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_isstring(L, -1)) {
    lua_pop(L, 1);
    lua_pushstring(L, firstline ? AIO_REPL_PROMPT1 : AIO_REPL_PROMPT2);
  }
  rc = io->read_line(lua_tostring(L, -1));  /* the prompt stays anchored */
  lua_pop(L, 1);
  if (rc != R_LINE) return rc;
  line = take_line(io->buf);
  if (firstline && line[0] == '=')  /* '=x' from Lua 5.1 */
    lua_pushfstring(L, "return %s", line + 1);
  else
    lua_pushstring(L, line);
  free(line);
  return R_LINE;
}

/* Read and compile one chunk as lua.c's loadline does: the first line as
** "return <line>;" (an expression: its values are printed), else as
** statements, over as many lines as the compiler says are cut short.
** Pushes the function (LUA_OK) or the error message (the status of
** luaL_loadbuffer); -1 with nothing pushed at EOF, -2 when Ctrl-C
** abandoned it, -3 when os.exit was called.  The chunk goes to the
** history as one entry, however many lines it took. */
static int load(lua_State *L, const aio_repl_io *io) {
  int rc = pushline(L, io, 1), status;
  const char *line;
  if (rc != R_LINE) return rc == R_EOF ? -1 : rc == R_INTERRUPT ? -2 : -3;
  line = lua_tostring(L, -1);
  lua_pushfstring(L, "return %s;", line);
  status = luaL_loadbuffer(L, lua_tostring(L, -1), lua_rawlen(L, -1),
                           AIO_REPL_CHUNKNAME);  /* line, retline, f|msg */
  if (status == LUA_OK) {
    if (io->history && line[0] != '\0') io->history(line);
    lua_replace(L, -3);
    lua_pop(L, 1);
    return LUA_OK;
  }
  lua_pop(L, 2);
  for (;;) {  /* a statement, perhaps over several lines */
    size_t len;
    const char *chunk = lua_tolstring(L, -1, &len);
    status = luaL_loadbuffer(L, chunk, len, AIO_REPL_CHUNKNAME);
    if (!incomplete(L, status)) break;
    lua_pop(L, 1);
    rc = pushline(L, io, 0);
    if (rc == R_EOF) {  /* report the chunk cut short */
      status = luaL_loadbuffer(L, chunk, len, AIO_REPL_CHUNKNAME);
      break;
    }
    if (rc != R_LINE) {
      lua_pop(L, 1);
      return rc == R_INTERRUPT ? -2 : -3;
    }
    lua_pushliteral(L, "\n");
    lua_insert(L, -2);
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

/* ====================================================================== */
/* a failed main task, as lua.c reports it                                */
/* ====================================================================== */

#define MAIN_TASK "aiolua.main_task"  /* registry: the main task */
#define LOAD_ERR  "aiolua.load_error" /* registry: its load error, if any */

void aio__main_begin(lua_State *L) {
  int top = lua_gettop(L);
  lua_pushnil(L);
  lua_setfield(L, LUA_REGISTRYINDEX, LOAD_ERR);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, "aio") == LUA_TTABLE &&
      lua_getfield(L, -1, "current_task") == LUA_TFUNCTION) {
    lua_call(L, 0, 1);                      /* loaded, aio, task */
  } else {
    lua_pushnil(L);
  }
  lua_setfield(L, LUA_REGISTRYINDEX, MAIN_TASK);
  lua_settop(L, top);  /* also when aio or current_task was replaced */
}

int aio__main_loaderror(lua_State *L) {
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, LOAD_ERR);
  return lua_error(L);
}

/* the part of msg from its last "\nstack traceback:\n" on, or "" */
static const char *traceback_of(const char *msg) {
  const char *tb = NULL, *p = msg;
  while ((p = strstr(p, "\nstack traceback:\n")) != NULL) tb = p++;
  return tb ? tb : "";
}

/* let the main task (and its results) go */
static void forget_main(lua_State *L) {
  lua_pushnil(L);
  lua_setfield(L, LUA_REGISTRYINDEX, MAIN_TASK);
}

/* is the value at idx one of aio's error objects (aio.errtype) */
static int is_aio_error(lua_State *L, int idx) {
  int top = lua_gettop(L), yes = 0;
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, "aio") == LUA_TTABLE &&
      lua_getfield(L, -1, "errtype") == LUA_TFUNCTION) {
    lua_pushvalue(L, idx);
    lua_call(L, 1, 1);
    yes = !lua_isnil(L, -1);
  }
  lua_settop(L, top);
  return yes;
}

/* errmsg(msg): the message to print, run protected (__tostring is user
** code); msg is the host's, the error with the task's traceback */
static int errmsg(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (lua_getfield(L, LUA_REGISTRYINDEX, LOAD_ERR) == LUA_TSTRING)
    return 1;
  lua_settop(L, 1);
  lua_getfield(L, LUA_REGISTRYINDEX, MAIN_TASK);
  if (lua_isnil(L, 2) || lua_getfield(L, 2, "error") != LUA_TFUNCTION) {
    lua_settop(L, 1);
    return 1;
  }
  lua_insert(L, 2);
  lua_call(L, 1, 1);                           /* msg, error */
  if (lua_type(L, 2) == LUA_TSTRING || lua_type(L, 2) == LUA_TNUMBER ||
      is_aio_error(L, 2)) {
    lua_settop(L, 1);                          /* as the host has it */
    return 1;
  }
  if (luaL_callmeta(L, 2, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
    return 1;                                  /* lua.c: no traceback */
  lua_pushfstring(L, "(error object is a %s value)%s", luaL_typename(L, 2),
                  traceback_of(msg));
  return 1;
}

const char *aio__main_errmsg(aio_host *h) {
  lua_State *L = aio_host_lua(h);
  const char *msg = aio_host_errmsg(h);
  lua_pushcfunction(L, errmsg);
  lua_pushstring(L, msg ? msg : "(no message)");
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    lua_pop(L, 1);
    lua_pushstring(L, msg ? msg : "(no message)");
  }
  forget_main(L);
  return lua_tostring(L, -1);
}

/* ====================================================================== */
/* running a chunk                                                        */
/* ====================================================================== */

/* the chunk's task: it calls the chunk (its argument), so that a
** traceback ends in a C function ("[C]: in ?") as under lua.c's pcall */
static int chunk_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status; (void)ctx;
  return lua_gettop(L);
}

static int chunk(lua_State *L) {
  aio__main_begin(L);
  lua_callk(L, lua_gettop(L) - 1, LUA_MULTRET, 0, chunk_k);
  return chunk_k(L, LUA_OK, 0);
}

/* Run the function on top as the host's main task and print its values,
** as lua.c does; nothing is printed once os.exit was called.  Pops the
** function. */
static void run(lua_State *L, const aio_repl_exit *e, int tty) {
  aio_host *h = e->h;
  int base = lua_gettop(L) - 1, nint = aio_host_interrupted(h), n;
  lua_pushcfunction(L, chunk);
  lua_insert(L, -2);
  if (aio_host_call(h, 1, LUA_MULTRET) != 0) {
    const char *msg = aio_host_errmsg(h);
    if (e->req) {
      /* os.exit: nothing to say */
    } else if (aio_host_interrupted(h) != nint && msg) {
      /* cancelled by Ctrl-C: the first line says it all */
      const char *nl = strchr(msg, '\n');
      if (tty) fputs("\n", stderr);  /* after the terminal's "^C" */
      fprintf(stderr, "%.*s\n", nl ? (int)(nl - msg) : (int)strlen(msg), msg);
      fflush(stderr);
    } else {
      aio__repl_report(aio__main_errmsg(h));
    }
    forget_main(L);
    lua_settop(L, base);
    return;
  }
  forget_main(L);
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

/* on the loop, after os.exit: a chunk that runs is cancelled (a task of
** its called os.exit: the chunk must not go on to its end); at a prompt
** this only ends its wait for input.  The other tasks are cancelled once,
** when the REPL ends, and their cleanup may wait. */
static void exit_post(aio_host *h, void *ud) {
  (void)ud;
  aio__host_cancel_main(h, "exit");
}

/* os.exit(code): leave the REPL once the chunk (or task) is over */
static int l_exit(lua_State *L) {
  aio_repl_exit *e = lua_touserdata(L, lua_upvalueindex(1));
  if (lua_isboolean(L, 1)) e->code = lua_toboolean(L, 1) ? 0 : 1;
  else e->code = (int)luaL_optinteger(L, 1, 0);
  e->req = 1;
  aio_host_post(e->h, exit_post, NULL);
  return 0;
}

static const char exit_wrapper[] =
  "local exit = ...\n"
  "os.exit = function(code)\n"
  "  exit(code)\n"
  "  local t = aio.current_task()\n"
  "  if t then t:cancel('exit') aio.sleep(0) end\n"
  "  error('exit', 0)\n"
  "end\n";

int aio__repl_install_exit(lua_State *L, aio_repl_exit *e) {
  if (luaL_loadbuffer(L, exit_wrapper, sizeof exit_wrapper - 1, "=repl")
      != LUA_OK)
    return 1;
  lua_pushlightuserdata(L, e);
  lua_pushcclosure(L, l_exit, 1);
  return lua_pcall(L, 1, 0, 0) != LUA_OK;
}

int aio__repl_loop(lua_State *L, const aio_repl_io *io, aio_repl_exit *e,
                   int tty) {
  int top = lua_gettop(L), status;
  for (;;) {
    status = load(L, io);
    if (status == -1 || status == -3) break;  /* EOF, os.exit */
    if (status == -2) continue;  /* Ctrl-C: a fresh prompt */
    if (status == LUA_OK) run(L, e, tty);
    else aio__repl_report(lua_tostring(L, -1));
    lua_settop(L, top);
    if (e->req) break;
  }
  lua_settop(L, top);
  return e->req ? e->code : 0;
}
