/*
** signal.c: the module _aio.signal: POSIX signals delivered on the loop.
** A Signal userdata watches one or more signals with loop signal handles;
** a task waits in sig:wait() for the next one.  Handlers of
** loop:add_signal_handler are kept per loop (in the loop's table below) and
** run as callbacks (call_soon), never inside the libev callback: the
** handle's callback posts to the scheduler, which runs Lua.
**
** The policy (names, aio.wait_signal) is lua/aio/signal.lua.
*/
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "sched.h"

#ifdef _WIN32
/* Windows: the C runtime's signal numbers; only SIGINT (Ctrl-C) and
** SIGBREAK (Ctrl-Break) can be watched (loop_iocp.c), the others raise
** OSError ENOSYS naming the platform */
#define SIGKILL (-1)
#define SIGSTOP (-1)
static const char *sigabbrev_np(int signum) {
  switch (signum) {
    case SIGINT: return "INT";
    case SIGILL: return "ILL";
    case SIGFPE: return "FPE";
    case SIGSEGV: return "SEGV";
    case SIGTERM: return "TERM";
    case SIGBREAK: return "BREAK";
    case SIGABRT: return "ABRT";
  }
  return NULL;
}
#endif

#define SIGNAL_MT "aio.Signal"

typedef struct aio_signal_t {
  aio_bhandle *h[NSIG];  /* per signal; NULL when not watched */
  aio_sched *s;          /* the loop it was opened on */
  aio_task *wt;          /* the task in wait() */
  unsigned char pending[NSIG];  /* arrived, not yet taken */
  int handler;           /* handler mode: post instead of waking */
  int npending;
} aio_signal_t;

typedef struct sig_post {
  aio_sched *s;
  int signum;
} sig_post;

/* ====================================================================== */
/* delivery                                                               */
/* ====================================================================== */

static void run_handler(void *owner, void *ud);
static void pushsigname(lua_State *L, int signum);

static void on_signal(aio_bhandle *h, int signum, void *data) {
  aio_signal_t *sg = data;
  (void)h;
  if (sg->handler) {
    sig_post *p = malloc(sizeof *p);
    if (p == NULL) return;
    p->s = sg->s;
    p->signum = signum;
    if (aio__sched_post(sg->s, run_handler, p) != 0) free(p);
    else sg->s->posted = 1;  /* we are on the loop's thread */
    return;
  }
  if (!sg->pending[signum]) {
    sg->pending[signum] = 1;
    sg->npending++;
  }
  if (sg->wt) {
    aio_task *t = sg->wt;
    sg->wt = NULL;
    aio__wake(t);
  }
}

/* push the handler table of loop s: registry[SIGNAL_MT][loop] = {[signum]
** = {signal, fn, nextra, extra args...}} (setfn); made when `make` */
static int handlers(lua_State *L, aio_sched *s, int make) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, SIGNAL_MT ".handlers");
  if (lua_getmetatable(L, -1) == 0) {  /* weak keys: the loops */
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
  } else {
    lua_pop(L, 1);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->self_ref);  /* tbl loop */
  if (lua_rawget(L, -2) == LUA_TNIL && make) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->self_ref);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
  }
  lua_remove(L, -2);
  return lua_istable(L, -1);
}

/* posted from on_signal; runs on the loop's thread with Lua at hand */
static void run_handler(void *owner, void *ud) {
  sig_post p = *(sig_post *)ud;
  lua_State *L = p.s->L;
  int top = lua_gettop(L);
  (void)owner;
  free(ud);
  if (p.s->closed) return;
  if (handlers(L, p.s, 0) && lua_rawgeti(L, -1, p.signum) == LUA_TTABLE) {
    int i, nextra;
    lua_rawgeti(L, -1, 3);
    nextra = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    luaL_checkstack(L, nextra + 3, "signal handler arguments");
    lua_rawgeti(L, -1, 2);                 /* ... entry fn */
    for (i = 1; i <= nextra; i++) lua_rawgeti(L, -1 - i, 3 + i);
    lua_getfield(L, -2 - nextra, "context");
    if (lua_istable(L, -1)) {  /* ... entry ctx fn args */
      lua_insert(L, -2 - nextra);
      aio__call_at(L, p.s, nextra, -1, lua_gettop(L) - 1 - nextra);
    } else {
      lua_pop(L, 1);
      aio__call_at(L, p.s, nextra, -1, 0);  /* ... entry handle */
    }
  }
  lua_settop(L, top);
}

/* ====================================================================== */
/* the Signal object                                                      */
/* ====================================================================== */

static aio_signal_t *checksignal(lua_State *L, int i) {
  return luaL_checkudata(L, i, SIGNAL_MT);
}

static void destroy(aio_signal_t *sg) {
  int i;
  for (i = 1; i < NSIG; i++)
    if (sg->h[i]) {
      aio__handle_close(sg->h[i], NULL, NULL);
      sg->h[i] = NULL;
      if (i == SIGINT) sg->s->sigint_users--;
    }
  if (sg->wt) {
    aio_task *t = sg->wt;
    sg->wt = NULL;
    aio__wake(t);
  }
}

static int signal_gc(lua_State *L) {
  destroy(lua_touserdata(L, 1));
  return 0;
}

static int signal_close(lua_State *L) {
  destroy(checksignal(L, 1));
  return 0;
}

/* push a new Signal watching the n signals in sigs */
static aio_signal_t *newsignal(lua_State *L, aio_sched *s, const int *sigs,
                               int n, int handler) {
  aio_signal_t *sg = lua_newuserdatauv(L, sizeof *sg, 0);
  int i;
  memset(sg, 0, sizeof *sg);
  sg->s = s;
  sg->handler = handler;
  luaL_setmetatable(L, SIGNAL_MT);
  for (i = 0; i < n; i++) {
    int signum = sigs[i], rc;
    if (sg->h[signum]) continue;
    rc = aio__signal_start(s->lp, &sg->h[signum], signum, on_signal, sg);
    if (rc < 0) {
      sg->h[signum] = NULL;
      aio__error(L, "OSError", rc, "signal %d: %s", signum,
                 aio__strerror(rc));
    }
    aio__handle_ref(sg->h[signum], 0);  /* watching does not keep it alive */
    if (signum == SIGINT) s->sigint_users++;  /* the host lets go of it */
  }
  return sg;
}

/* the signal number at i: a number, or a name ("SIGTERM" or "TERM") */
static int checksig(lua_State *L, int i) {
  int signum = 0;
  if (lua_type(L, i) == LUA_TSTRING) {
    size_t len;
    const char *name = lua_tolstring(L, i, &len);
    int k;
    if (strlen(name) != len)  /* "SIGTERM\0junk" is no name */
      luaL_argerror(L, i, "contains a zero byte");
    if (strncmp(name, "SIG", 3) == 0) name += 3;
    for (k = 1; k < NSIG; k++) {
      const char *ab = sigabbrev_np(k);
      if (ab && strcmp(ab, name) == 0) { signum = k; break; }
    }
    if (signum == 0)
      luaL_argerror(L, i, lua_pushfstring(L, "unknown signal '%s'",
                                          lua_tostring(L, i)));
  } else {
    signum = (int)luaL_checkinteger(L, i);
  }
  if (signum <= 0 || signum >= NSIG)
    luaL_argerror(L, i, "no such signal");
  return signum;
}

static int checkcatchable(lua_State *L, int i) {
  int signum = checksig(L, i);
  if (signum == SIGKILL || signum == SIGSTOP)
    luaL_argerror(L, i, "SIGKILL and SIGSTOP cannot be caught");
  return signum;
}

/* push "SIGTERM" for 15 */
static void pushsigname(lua_State *L, int signum) {
  const char *ab = sigabbrev_np(signum);
  if (ab) lua_pushfstring(L, "SIG%s", ab);
  else lua_pushinteger(L, signum);
}

/* task:waiting()'s detail of a signal wait: the signals it watches,
** "SIGINT, SIGTERM" */
static int wait_detail(lua_State *L, aio_task *t) {
  aio_signal_t *sg = t->wait_data;
  luaL_Buffer b;
  int i, n = 0;
  luaL_buffinit(L, &b);
  for (i = 1; i < NSIG; i++) {
    if (sg->h[i] == NULL) continue;
    if (n++ > 0) luaL_addstring(&b, ", ");
    pushsigname(L, i);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  if (n == 0) {
    lua_pop(L, 1);
    return 0;
  }
  return 1;
}

static void wait_cleanup(aio_task *t) {
  ((aio_signal_t *)t->wait_data)->wt = NULL;
}

static int wait_k(lua_State *L, int status, lua_KContext ctx) {
  aio_signal_t *sg = checksignal(L, 1);
  aio_task *t;
  int i;
  (void)ctx;
  if (status == LUA_YIELD) aio__wait_end(L);
  if (sg->npending > 0)
    for (i = 1; i < NSIG; i++)
      if (sg->pending[i]) {
        sg->pending[i] = 0;
        sg->npending--;
        pushsigname(L, i);
        return 1;
      }
  for (i = 1; i < NSIG && sg->h[i] == NULL; i++) {}
  if (i == NSIG) return luaL_error(L, "wait: the signal watcher is closed");
  if (sg->wt) return luaL_error(L, "wait: another task is already waiting");
  t = aio__wait_begin(L, "wait_signal");
  sg->wt = t;
  return aio__park(L, t, wait_cleanup, sg, "signal", 0, wait_k);
}

/* sig:wait() -> the name of the next signal ("SIGTERM"); those that came
** since open first */
static int signal_wait(lua_State *L) {
  aio_signal_t *sg = checksignal(L, 1);
  if (sg->handler) return luaL_error(L, "wait: a handler's watcher");
  lua_settop(L, 1);
  return wait_k(L, LUA_OK, 0);
}

/* open(sig, ...) -> Signal; each sig a number or a name */
static int l_open(lua_State *L) {
  aio_sched *s = aio__sched_check(L, "wait_signal");
  int n = lua_gettop(L), i, sigs[NSIG];
  if (n == 0) return luaL_error(L, "wait_signal: no signal given");
  if (n >= NSIG) return luaL_error(L, "wait_signal: too many signals");
  for (i = 0; i < n; i++) sigs[i] = checkcatchable(L, i + 1);
  newsignal(L, s, sigs, n, 0);
  return 1;
}

/* signum(sig) -> number, name */
static int l_signum(lua_State *L) {
  int signum = checksig(L, 1);
  lua_pushinteger(L, signum);
  pushsigname(L, signum);
  return 2;
}

/* ====================================================================== */
/* loop:add_signal_handler / remove_signal_handler                        */
/* ====================================================================== */

static aio_sched *checkloop(lua_State *L) {
  aio_sched *s = luaL_checkudata(L, 1, AIO_LOOP_MT);
  if (s->closed) luaL_error(L, "the loop is closed");
  return s;
}

/* the entry's handler: [2] fn, [3] the count of extra arguments, [4..]
** them (those of an earlier handler are dropped) */
static void setfn(lua_State *L, int entry, int nextra) {
  int i;
  for (i = lua_rawlen(L, entry); i > 3 + nextra; i--) {
    lua_pushnil(L);
    lua_rawseti(L, entry, i);
  }
  lua_pushvalue(L, 3);
  lua_rawseti(L, entry, 2);
  lua_pushinteger(L, nextra);
  lua_rawseti(L, entry, 3);
  for (i = 1; i <= nextra; i++) {
    lua_pushvalue(L, 3 + i);
    lua_rawseti(L, entry, 3 + i);
  }
  /* fn runs in a copy of the context add_signal_handler was called in
  ** (asyncio makes its Handle there) */
  if (!aio__context_copy(L, aio__rt(L)->sched)) lua_pushnil(L);
  lua_setfield(L, entry, "context");
}

/* loop:add_signal_handler(sig, fn, ...): fn(...) runs as a callback on the
** loop (as call_soon) at each arrival, with the extra arguments only, as
** asyncio's callback(*args); replaces an earlier handler */
static int loop_add_signal_handler(lua_State *L) {
  aio_sched *s = checkloop(L);
  int signum = checkcatchable(L, 2), nextra, tbl;
  luaL_checktype(L, 3, LUA_TFUNCTION);
  nextra = lua_gettop(L) - 3;
  handlers(L, s, 1);                       /* loop sig fn args... tbl */
  tbl = lua_gettop(L);
  if (lua_rawgeti(L, tbl, signum) == LUA_TTABLE) {
    setfn(L, tbl + 1, nextra);             /* a new fn, the same watcher */
    return 0;
  }
  lua_pop(L, 1);
  lua_createtable(L, 3 + nextra, 0);       /* ... tbl entry */
  newsignal(L, s, &signum, 1, 1);          /* ... entry signal */
  lua_rawseti(L, -2, 1);
  setfn(L, tbl + 1, nextra);
  lua_rawseti(L, tbl, signum);
  return 0;
}

/* loop:remove_signal_handler(sig) -> true if there was one */
static int loop_remove_signal_handler(lua_State *L) {
  aio_sched *s = checkloop(L);
  int signum = checksig(L, 2);
  lua_settop(L, 2);
  if (!handlers(L, s, 0) || lua_rawgeti(L, 3, signum) != LUA_TTABLE) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_rawgeti(L, -1, 1);
  destroy(checksignal(L, -1));
  lua_pushnil(L);
  lua_rawseti(L, 3, signum);
  lua_pushboolean(L, 1);
  return 1;
}

static const luaL_Reg signal_methods[] = {
  { "wait", signal_wait },
  { "close", signal_close },
  { NULL, NULL }
};

static const luaL_Reg signal_meta[] = {
  { "__gc", signal_gc },
  { "__close", signal_close },
  { NULL, NULL }
};

static const luaL_Reg loop_methods[] = {
  { "add_signal_handler", loop_add_signal_handler },
  { "remove_signal_handler", loop_remove_signal_handler },
  { NULL, NULL }
};

static const luaL_Reg funcs[] = {
  { "open", l_open },
  { "signum", l_signum },
  { NULL, NULL }
};

int luaopen__aio_signal(lua_State *L) {
  aio__wait_detail_set("signal", wait_detail);
  luaL_newmetatable(L, SIGNAL_MT);
  luaL_setfuncs(L, signal_meta, 0);
  luaL_newlib(L, signal_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  /* the loop's methods join core's method table: __index is that table,
  ** or a function holding it as its first upvalue (core.c loop_index) */
  if (luaL_getmetatable(L, AIO_LOOP_MT) != LUA_TTABLE) {
    /* loaded first (require "aio.signal" before anything else): the
    ** core, which makes the loop's metatable, is loaded now */
    lua_pop(L, 1);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "_aio.core");
    lua_call(L, 1, 0);
    luaL_getmetatable(L, AIO_LOOP_MT);
  }
  lua_getfield(L, -1, "__index");
  if (lua_isfunction(L, -1) && lua_getupvalue(L, -1, 1) != NULL)
    lua_remove(L, -2);
  if (lua_istable(L, -1)) luaL_setfuncs(L, loop_methods, 0);
  lua_pop(L, 2);
  luaL_newlib(L, funcs);
  return 1;
}
