/*
** main.c: the aiolua program, the stock `lua` command line on top of the
** embedding API (aiolua.h) only.  LUA_INIT, -l, -e and the script all run,
** in the order lua runs them, inside one main task (the driver below).
*/
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aiolua.h"
#include "repl_chunk.h"

#ifdef AIOLUA_OWN_LUA
/* the program links its own build of Lua (Makefile), which has this
** (src/host/lua_prefetch.patch); the scheduler uses it when set */
#include "sched.h"
void aiolua_prefetch(lua_State *L, int step, int ref);
/* and these (src/host/lua_lean.patch) */
lua_State *aiolua_newthread(lua_State *L, int slots);
void aiolua_pushlean(lua_State *L, lua_CFunction fn, int n, int slots);
/* and this (src/host/lua_tbc.patch) */
int aiolua_poptbc(lua_State *L);
/* and this (src/host/lua_exit.patch) */
void aiolua_closeforexit(lua_State *L);
/* and these (src/host/lua_udata.patch) */
const void *aiolua_udatamt(lua_State *L, int idx);
void aiolua_setudatamt(lua_State *L, int idx, const void *mt);
#endif

#define PROGNAME "aiolua"

/* repl.c: the interactive REPL on stdin; returns the exit status */
int aio__repl(aio_host *h);
/* host.c: aio_host_free for the process's exit */
void aio__host_free_for_exit(aio_host *h, void (*closeforexit)(lua_State *));

/* the host, freed as the program exits: with its own Lua, the objects are
** not freed one by one (src/host/lua_exit.patch) */
static void free_for_exit(aio_host *h) {
#ifdef AIOLUA_OWN_LUA
  aio__host_free_for_exit(h, aiolua_closeforexit);
#else
  aio_host_free(h);
#endif
}

/* The driver: the main task's function.  It runs the actions made by
** main(), {kind, value, chunkname}, in order as lua.c does: LUA_INIT,
** then -e, -l and -W as they come, then the script (which gets the
** positive part of `arg` as its varargs; its results are the task's) or
** stdin.  It is C, so that start-up parses nothing but the user's own
** chunks: each call goes through lua_callk, and when the callee waits the
** task resumes in drive_k, which finishes that action and goes on.  A
** chunk that does not load fails the task with its message alone, as
** lua.c reports it (aio__main_loaderror). */
static int drive_k(lua_State *L, int status, lua_KContext ctx);

static int drive(lua_State *L) {
  aio__main_begin(L);
  return drive_k(L, LUA_OK, 0);
}

/* the action i's kind, value (or NULL) and chunk name (or NULL) */
static const char *action(lua_State *L, lua_Integer i, const char **v,
                          const char **name) {
  const char *kind;
  lua_geti(L, 1, i);
  lua_geti(L, -1, 1);
  lua_geti(L, -2, 2);
  lua_geti(L, -3, 3);
  kind = lua_tostring(L, -3);
  *v = lua_tostring(L, -2);
  *name = lua_tostring(L, -1);
  lua_pop(L, 4);  /* the strings stay in the actions table */
  return kind;
}

/* -l g=mod or -l mod, as lua.c's dolibrary: g = require(mod), where g is
** what comes before the first '=' (perhaps ""), mod what follows it */
static void dolibrary(lua_State *L, const char *v) {
  const char *eq = strchr(v, '=');
  lua_getglobal(L, "require");
  lua_pushstring(L, eq ? eq + 1 : v);
  lua_call(L, 1, 1);                   /* require never yields */
  if (eq) lua_pushlstring(L, v, (size_t)(eq - v));
  else lua_pushstring(L, v);           /* mod, g */
  lua_insert(L, -2);
  lua_setglobal(L, lua_tostring(L, -2));
}

static int drive_k(lua_State *L, int status, lua_KContext ctx) {
  lua_Integer i = (lua_Integer)ctx, n = (lua_Integer)lua_rawlen(L, 1);
  const char *kind, *v, *name;
  (void)status;
  if (i > 0) {  /* action i returned after waits: the script's results */
    kind = action(L, i, &v, &name);
    if (strcmp(kind, "script") == 0) return lua_gettop(L) - 1;
  }
  while (++i <= n) {
    lua_settop(L, 1);
    kind = action(L, i, &v, &name);
    if (strcmp(kind, "chunk") == 0) {  /* -e, LUA_INIT */
      if (luaL_loadbuffer(L, v, strlen(v), name) != LUA_OK)
        return aio__main_loaderror(L);
      lua_callk(L, 0, 0, (lua_KContext)i, drive_k);
    } else if (strcmp(kind, "file") == 0) {  /* LUA_INIT=@file, stdin */
      if (luaL_loadfile(L, v) != LUA_OK) return aio__main_loaderror(L);
      lua_callk(L, 0, 0, (lua_KContext)i, drive_k);
    } else if (strcmp(kind, "l") == 0) {
      dolibrary(L, v);
    } else if (strcmp(kind, "W") == 0) {
      lua_warning(L, "@on", 0);
    } else {  /* the script: loadfile(v) (stdin when nil), arg[1..#arg] */
      lua_Integer a, na = 0;
      if (luaL_loadfile(L, v) != LUA_OK) return aio__main_loaderror(L);
      if (lua_getglobal(L, "arg") == LUA_TTABLE) na = luaL_len(L, -1);
      if (na < 0) na = 0;
      if (na > 1000000 || !lua_checkstack(L, (int)na + 1))
        return luaL_error(L, "too many arguments to the script");
      for (a = 1; a <= na; a++) lua_geti(L, 3, a);
      lua_remove(L, 3);
      lua_callk(L, (int)na, LUA_MULTRET, (lua_KContext)i, drive_k);
      return lua_gettop(L) - 1;
    }
  }
  return 0;
}

enum { has_error = 1, has_i = 2, has_v = 4, has_e = 8, has_E = 16,
       has_debug = 32 };

static void print_usage(const char *badoption) {
  if (badoption[1] == 'e' || badoption[1] == 'l')
    fprintf(stderr, "%s: '%s' needs argument\n", PROGNAME, badoption);
  else
    fprintf(stderr, "%s: unrecognized option '%s'\n", PROGNAME, badoption);
  fprintf(stderr,
    "usage: %s [options] [script [args]]\n"
    "Available options are:\n"
    "  -e stat   execute string 'stat'\n"
    "  -i        enter interactive mode after executing 'script'\n"
    "  -l mod    require library 'mod' into global 'mod'\n"
    "  -l g=mod  require library 'mod' into global 'g'\n"
    "  -v        show version information\n"
    "  -E        ignore environment variables\n"
    "  -W        turn warnings on\n"
    "  --debug   debug mode: report slow steps, keep where tasks were spawned\n"
    "  --        stop handling options\n"
    "  -         stop handling options and execute stdin\n", PROGNAME);
}

static void print_version(void) {
  printf("%s %s (%s)\n", PROGNAME, AIOLUA_VERSION, LUA_RELEASE);
  fflush(stdout);
}

/* as lua.c: the options before the script; *first is the script's index
** (argc when there is none) */
static int collectargs(char **argv, int *first) {
  int args = 0, i;
  for (i = 1; argv[i] != NULL; i++) {
    *first = i;
    if (argv[i][0] != '-') return args;
    switch (argv[i][1]) {
      case '-':
        if (strcmp(argv[i], "--debug") == 0) {  /* aiolua's own option */
          args |= has_debug;
          break;
        }
        if (argv[i][2] != '\0') return has_error;
        *first = i + 1;
        return args;
      case '\0':
        return args;
      case 'E':
        if (argv[i][2] != '\0') return has_error;
        args |= has_E;
        break;
      case 'W':
        if (argv[i][2] != '\0') return has_error;
        break;
      case 'i':
        args |= has_i;  /* -i implies -v */
        /* FALLTHROUGH */
      case 'v':
        if (argv[i][2] != '\0') return has_error;
        args |= has_v;
        break;
      case 'e':
        args |= has_e;
        /* FALLTHROUGH */
      case 'l':
        if (argv[i][2] == '\0') {
          i++;
          if (argv[i] == NULL || argv[i][0] == '-') return has_error;
        }
        break;
      default:
        return has_error;
    }
  }
  *first = i;
  return args;
}

static void createargtable(lua_State *L, char **argv, int argc, int script) {
  int i;
  if (script == argc) script = 0;  /* no script name */
  lua_createtable(L, argc - (script + 1), script + 1);
  for (i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
}

/* an action for the driver: {kind, value, chunkname}; v, name may be NULL */
static void push_action(lua_State *L, const char *kind, const char *v,
                        const char *name) {
  lua_createtable(L, 3, 0);
  lua_pushstring(L, kind);
  lua_rawseti(L, -2, 1);
  if (v) {
    lua_pushstring(L, v);
    lua_rawseti(L, -2, 2);
  }
  if (name) {
    lua_pushstring(L, name);
    lua_rawseti(L, -2, 3);
  }
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
}

static int stdin_is_tty(void) { return isatty(0); }

int main(int argc, char **argv) {
  aio_host *h;
  lua_State *L;
  int script = argc, args, optlim, i, rc = 0, status;
  const char *init;
  args = collectargs(argv, &script);
  if (args == has_error) {
    print_usage(argv[script]);
    return 1;
  }
  optlim = script;
  if (args & has_v) print_version();
#ifdef AIOLUA_OWN_LUA
  aio__prefetch_thread = aiolua_prefetch;
  aio__newthread_lean = aiolua_newthread;
  aio__pushlean = aiolua_pushlean;
  aio__poptbc = aiolua_poptbc;
  aio__udatamt = aiolua_udatamt;
  aio__setudatamt = aiolua_setudatamt;
#endif
  h = aio_host_newopt((args & has_E) ? AIO_HOST_NOENV : 0);
  if (h == NULL) {
    fprintf(stderr, "%s: cannot create the host\n", PROGNAME);
    return 1;
  }
  L = aio_host_lua(h);
  lua_gc(L, LUA_GCGEN, 0, 0);  /* as lua.c does */
  createargtable(L, argv, argc, script);
  lua_pushcfunction(L, drive);
  lua_newtable(L);  /* the actions */
  if (!(args & has_E)) {  /* as lua.c's handle_luainit */
    const char *name = "=LUA_INIT_5_4";
    init = getenv(name + 1);
    if (init == NULL) {
      name = "=LUA_INIT";
      init = getenv(name + 1);
    }
    if (init != NULL) {
      if (init[0] == '@') push_action(L, "file", init + 1, NULL);
      else push_action(L, "chunk", init, name);
    }
  }
  for (i = 1; i < optlim; i++) {  /* as lua.c's runargs: in order */
    char opt = argv[i][1];
    if (opt == 'e' || opt == 'l') {
      const char *v = argv[i] + 2;
      if (*v == '\0') v = argv[++i];
      if (opt == 'e') push_action(L, "chunk", v, "=(command line)");
      else push_action(L, "l", v, NULL);
    } else if (opt == 'W') {
      push_action(L, "W", NULL, NULL);
    }
  }
  if (script < argc) {
    const char *fname = argv[script];
    if (strcmp(fname, "-") == 0 && strcmp(argv[script - 1], "--") != 0)
      fname = NULL;  /* stdin */
    push_action(L, "script", fname, NULL);
  } else if (!(args & (has_e | has_v | has_i))) {
    if (stdin_is_tty()) {  /* as lua: the version line, then the REPL */
      print_version();
      args |= has_i;
    } else {  /* lua < file: stdin as a file, with no arguments */
      push_action(L, "file", NULL, NULL);
    }
  }
  /* LUA_INIT, the options and the script: a first SIGINT cancels, a
  ** second exits (the REPL changes that below) */
  aio_host_catch_sigint(h);
  aio_host_dump_on_sigquit(h);
  if (args & has_debug) aio_host_set_debug(h, 1);
  status = aio_host_call(h, 1, 0);
  if (status != 0) {
    const char *msg = aio_host_errmsg(h);
    /* the SIGINT's own cancellation says "interrupted"; another error the
    ** main task raised after it (its cleanup failed) is shown as any */
    if (aio_host_interrupted(h) &&
        (msg == NULL || strncmp(msg, "CancelledError", 14) == 0))
      fprintf(stderr, "%s: interrupted\n", PROGNAME);
    else
      fprintf(stderr, "%s: %s\n", PROGNAME, aio__main_errmsg(h));
    rc = 1;
  } else if (args & has_i) {
    /* the REPL never exits on SIGINT: it cancels the running chunk */
    aio_host_catch_sigint_opt(h, AIO_SIGINT_STAY);
    rc = aio__repl(h);  /* its own status: Ctrl-C does not make it 130 */
    fflush(stdout);
    free_for_exit(h);
    return rc;
  }
  aio_host_shutdown(h);  /* a SIGINT during the tasks' cleanup counts too */
  if (aio_host_interrupted(h)) rc = 130;
  fflush(stdout);
  free_for_exit(h);
  return rc;
}
