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

#define PROGNAME "aiolua"

/* repl.c: the interactive REPL on stdin; returns the exit status */
int aio__repl(aio_host *h);

/* runs the actions made by main(): {kind, value} in order; the script gets
** the positive part of `arg` as its varargs */
static const char driver[] =
  "local actions = ...\n"
  "for _, a in ipairs(actions) do\n"
  "  local kind, v = a[1], a[2]\n"
  "  if kind == 'e' or kind == 'init' then\n"
  "    local f, err = load(v, kind == 'e' and '=(command line)' or '=LUA_INIT')\n"
  "    if not f then error(err, 0) end\n"
  "    f()\n"
  "  elseif kind == 'initfile' then\n"
  "    local f, err = loadfile(v)\n"
  "    if not f then error(err, 0) end\n"
  "    f()\n"
  "  elseif kind == 'l' then\n"
  "    local g, m = v:match('^([^=]+)=(.+)$')\n"
  "    if not g then g, m = v, v end\n"
  "    _G[g] = require(m)\n"
  "  elseif kind == 'script' then\n"
  "    local f, err = loadfile(v)\n"
  "    if not f then error(err, 0) end\n"
  "    local args = _G.arg or {}\n"
  "    return f(table.unpack(args, 1, #args))\n"
  "  end\n"
  "end\n";

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

static void push_action(lua_State *L, const char *kind, const char *v) {
  lua_createtable(L, 2, 0);
  lua_pushstring(L, kind);
  lua_rawseti(L, -2, 1);
  if (v) {
    lua_pushstring(L, v);
    lua_rawseti(L, -2, 2);
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
  h = aio_host_newopt((args & has_E) ? AIO_HOST_NOENV : 0);
  if (h == NULL) {
    fprintf(stderr, "%s: cannot create the host\n", PROGNAME);
    return 1;
  }
  L = aio_host_lua(h);
  lua_gc(L, LUA_GCGEN, 0, 0);  /* as lua.c does */
  createargtable(L, argv, argc, script);
  if (luaL_loadbuffer(L, driver, sizeof driver - 1, "=aiolua") != LUA_OK) {
    fprintf(stderr, "%s: %s\n", PROGNAME, lua_tostring(L, -1));
    aio_host_free(h);
    return 1;
  }
  lua_newtable(L);  /* the actions */
  if (!(args & has_E)) {
    init = getenv("LUA_INIT_5_4");
    if (init == NULL) init = getenv("LUA_INIT");
    if (init != NULL) {
      if (init[0] == '@') push_action(L, "initfile", init + 1);
      else push_action(L, "init", init);
    }
  }
  for (i = 1; i < optlim; i++) {
    char opt = argv[i][1];
    if (opt == 'e' || opt == 'l') {
      const char *v = argv[i] + 2;
      if (*v == '\0') v = argv[++i];
      push_action(L, opt == 'e' ? "e" : "l", v);
    } else if (opt == 'W') {
      lua_warning(L, "@on", 0);
    }
  }
  if (script < argc) {
    const char *fname = argv[script];
    if (strcmp(fname, "-") == 0 && strcmp(argv[script - 1], "--") != 0)
      fname = NULL;  /* stdin */
    push_action(L, "script", fname);
  } else if (!(args & (has_e | has_v | has_i))) {
    if (stdin_is_tty()) {  /* as lua: the version line, then the REPL */
      print_version();
      args |= has_i;
    } else {
      push_action(L, "script", NULL);  /* lua < file */
    }
  }
  /* the REPL never exits on SIGINT: it cancels the running chunk */
  if (args & has_i) aio_host_catch_sigint_opt(h, AIO_SIGINT_STAY);
  else aio_host_catch_sigint(h);
  aio_host_dump_on_sigquit(h);
  if (args & has_debug) aio_host_set_debug(h, 1);
  status = aio_host_call(h, 1, 0);
  if (status != 0) {
    if (aio_host_interrupted(h))
      fprintf(stderr, "%s: interrupted\n", PROGNAME);
    else
      fprintf(stderr, "%s: %s\n", PROGNAME,
              aio_host_errmsg(h) ? aio_host_errmsg(h) : "(no message)");
    rc = 1;
  } else if (args & has_i) {
    rc = aio__repl(h);  /* its own status: Ctrl-C does not make it 130 */
    fflush(stdout);
    aio_host_free(h);
    return rc;
  }
  if (aio_host_interrupted(h)) rc = 130;
  fflush(stdout);
  aio_host_free(h);
  return rc;
}
