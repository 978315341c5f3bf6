/*
** core.c: the module _aio.core: running a loop, spawning, sleeping, the
** clock, the loop object with call_soon / call_later / call_at and their
** handles.  Futures and tasks are in future.c, errors in errors.c; the
** mechanism itself is the scheduler (src/host/sched.c).
*/
#include <math.h>
#include <signal.h>
#include <string.h>

#include "sched.h"

int aio__l_newerror(lua_State *L);
int aio__l_errtype(lua_State *L);
void aio__error_meta(lua_State *L);
void aio__future_open(lua_State *L);
int aio__l_future(lua_State *L);

/* ---- aio.run ---- */

#ifndef _WIN32
/* SIGINT while aio.run runs.  Under a stock lua5.4, lua.c's SIGINT handler
** acts on its main thread, which waits in aio.run while the tasks run in
** coroutines: one Ctrl-C did nothing until aio.run returned.  As
** asyncio.run, aio.run watches SIGINT itself while it runs (when SIGINT
** has a handler, as lua.c's, and no other loop watches it): the first
** cancels the main task (its cleanup runs) and aio.run then raises
** "interrupted!" as lua.c would; a second ends the process at once, as
** lua.c's second does.  The handler is put back afterwards. */
typedef struct run_int {
  aio_sched *s;
  aio_task *t;
  volatile sig_atomic_t n;  /* SIGINTs that came */
} run_int;

static void int_async(int signum, void *data) {  /* in the signal handler */
  run_int *ri = data;
  (void)signum;
  if (ri->s->sigint_users > 0) return;  /* Lua code watches SIGINT itself */
  if (++ri->n > 1) {
    signal(SIGINT, SIG_DFL);
    raise(SIGINT);
  }
}

static void int_cancel(void *owner, void *ud) {  /* a post, on the loop */
  run_int *ri = ud;
  lua_State *L = ri->s->L;
  (void)owner;
  if (ri->t->fut.state != AIO_PENDING) return;
  lua_pushliteral(L, "interrupted (SIGINT)");
  aio__task_cancel(L, ri->t, lua_gettop(L));
  lua_pop(L, 1);
}

static void on_int(aio_bhandle *h, int signum, void *data) {
  run_int *ri = data;
  (void)h; (void)signum;
  if (ri->s->sigint_users > 0 || ri->n != 1) return;
  aio__sched_post(ri->s, int_cancel, ri);
}

static aio_bhandle *watch_int(aio_sched *s, run_int *ri,
                              struct sigaction *old) {
  aio_bhandle *h = NULL;
  if (sigaction(SIGINT, NULL, old) != 0 || (old->sa_flags & SA_SIGINFO) ||
      old->sa_handler == SIG_DFL || old->sa_handler == SIG_IGN)
    return NULL;  /* nobody would see it, or the default ends the process */
  if (aio__signal_start(s->lp, &h, SIGINT, on_int, ri) != 0)
    return NULL;  /* another loop watches it (the aiolua program's) */
  aio__handle_ref(h, 0);
  aio__signal_async(h, int_async, ri);
  return h;
}
#endif

/* aio.run(fn, ...): a new loop; fn(...) is its main task; when it ends,
** the other tasks are cancelled and awaited, the loop closed, and fn's
** results returned (or its error raised) */
static int run_loop(lua_State *L, int virt, int autojump) {
  aio_rt *rt = aio__rt(L);
  aio_sched *s;
  aio_task *t;
  int err = 0, rc, nargs = lua_gettop(L) - 1, interrupted = 0;
#ifndef _WIN32
  run_int ri;
  struct sigaction old_int;
  aio_bhandle *hint;
#endif
  luaL_checktype(L, 1, LUA_TFUNCTION);
  if (rt->sched != NULL)
    return luaL_error(L, "aio.run: a loop is already running in this thread");
  s = aio__sched_new(L, &err);               /* fn args loop */
  if (s == NULL)
    return aio__error(L, "OSError", err, "aio.run: cannot make a loop: %s",
                      aio__strerror(err));
  lua_insert(L, 1);                          /* loop fn args */
  rt->sched = s;
  if (virt) aio__sched_set_virtual(s, 1, autojump);
  t = aio__spawn(L, s, nargs);               /* loop task */
#ifndef _WIN32
  ri.s = s;
  ri.t = t;
  ri.n = 0;
  hint = watch_int(s, &ri, &old_int);
#endif
  rc = aio__sched_run(s, L, &t->fut);
  if (rc == 0) aio__sched_cancel_all(s, L);
  else lua_insert(L, 2);                     /* loop err task */
  t->fut.flags &= ~AIO_F_UNRETRIEVED;        /* it is re-raised below */
#ifndef _WIN32
  if (hint != NULL) {
    aio__handle_close(hint, NULL, NULL);
    sigaction(SIGINT, &old_int, NULL);       /* lua.c's again */
    interrupted = ri.n > 0 && t->fut.state == AIO_CANCELLED;
  }
#endif
  aio__sched_close(s, L);
  if (rc != 0) {
    lua_settop(L, 2);
    return lua_error(L);
  }
  if (interrupted) {  /* asyncio.run: KeyboardInterrupt; lua.c's words */
    lua_pushliteral(L, "interrupted!");
    return lua_error(L);
  }
  return aio__future_results(L, 2);
}

static int core_run(lua_State *L) { return run_loop(L, 0, 0); }

/* core.run_virtual(autojump, fn, ...): aio.run on a virtual clock */
static int core_run_virtual(lua_State *L) {
  int autojump = lua_toboolean(L, 1);
  lua_remove(L, 1);
  return run_loop(L, 1, autojump);
}

/* core.set_virtual(on, autojump) -> was_on, was_autojump */
static int core_set_virtual(lua_State *L) {
  aio_sched *s = aio__sched_check(L, "aio.testing");
  lua_pushboolean(L, s->virt);
  lua_pushboolean(L, s->autojump);
  aio__sched_set_virtual(s, lua_toboolean(L, 1), lua_toboolean(L, 2));
  return 2;
}

/* aio.testing.advance(seconds): move the virtual clock, fire what is due,
** and (in a task) let the tasks it woke run before returning */
static int core_advance(lua_State *L) {
  aio_sched *s = aio__sched_check(L, "aio.testing.advance");
  double d = luaL_checknumber(L, 1);
  /* (called through testing.lua) */
  if (!s->virt)
    return aio__user_error(L, "aio.testing.advance: the loop's clock is not "
                           "virtual (use aio.testing.run)");
  if (!(d >= 0))
    return aio__user_error(L, "bad argument #1 to 'aio.testing.advance' (a "
                           "negative time)");
  aio__sched_advance(s, d);
  if (s->current == NULL) return 0;
  lua_settop(L, 0);
  return aio__sleep(L, 0, 0);
}

/* core.ready(): how many tasks and calls wait in the ready ring */
static int core_ready(lua_State *L) {
  aio_sched *s = aio__rt(L)->sched;
  lua_pushinteger(L, s ? (lua_Integer)s->rcount : 0);
  return 1;
}

static int core_spawn_eager(lua_State *L) {
  aio_sched *s = aio__sched_check(L, "aio.spawn_eager");
  luaL_checktype(L, 1, LUA_TFUNCTION);
  aio__spawn_eager(L, s, lua_gettop(L) - 1);  /* runs it until it waits */
  return 1;
}

/* core.context(): the context table (aio.ContextVar) of what runs now:
** the current task, a callback, else the Lua state's own */
static int core_context(lua_State *L) {
  aio_rt *rt = aio__rt(L);
  rt->context_used = 1;  /* from now on, what starts takes a copy */
  aio__context(L, rt->sched);
  return 1;
}

static int core_spawn(lua_State *L) {
  aio_sched *s = aio__sched_check(L, "aio.spawn");
  luaL_checktype(L, 1, LUA_TFUNCTION);
  aio__spawn(L, s, lua_gettop(L) - 1);
  return 1;
}

/* aio.sleep(delay [, result]): result is returned, as asyncio's */
static int core_sleep(lua_State *L) {
  double d = luaL_checknumber(L, 1);  /* asyncio.sleep() is a TypeError */
  int result = lua_gettop(L) >= 2;
  if (result) {
    lua_settop(L, 2);
    lua_remove(L, 1);
  } else {
    lua_settop(L, 0);
  }
  return aio__sleep(L, d, result);
}

static int core_now(lua_State *L) {
  aio_sched *s = aio__rt(L)->sched;
  lua_pushnumber(L, s ? aio__now(s) : aio__clock());
  return 1;
}

static int core_current_task(lua_State *L) {
  aio_sched *s = aio__rt(L)->sched;
  if (s == NULL || s->current == NULL) lua_pushnil(L);
  else aio__push_task(L, s->current);
  return 1;
}

static int core_all_tasks(lua_State *L) {
  aio_sched *s = aio__rt(L)->sched;
  if (s == NULL) lua_newtable(L);
  else aio__push_tasks(L, s);
  return 1;
}

static int core_loop(lua_State *L) {
  aio_sched *s = aio__sched_check(L, "aio.loop");
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->self_ref);
  return 1;
}

/* ---- the loop object ---- */

static aio_sched *checkloop(lua_State *L) {
  aio_sched *s = luaL_checkudata(L, 1, AIO_LOOP_MT);
  if (s->closed) luaL_error(L, "the loop is closed");
  return s;
}

/* the call runs in a copy of the caller's context, as asyncio's Handle */
static int schedule(lua_State *L, aio_sched *s, int fi, double when) {
  int nargs, ctx = 0;
  luaL_checktype(L, fi, LUA_TFUNCTION);
  nargs = lua_gettop(L) - fi;
  if (aio__context_copy(L, s)) {
    lua_insert(L, fi);
    ctx = fi++;
  }
  aio__call_at(L, s, nargs, when, ctx);
  return 1;
}

static int loop_call_soon(lua_State *L) {
  return schedule(L, checkloop(L), 2, -1);
}

static int loop_call_later(lua_State *L) {
  aio_sched *s = checkloop(L);
  double d = luaL_checknumber(L, 2), when;
  if (d != d) d = 0;  /* NaN: now */
  /* a negative delay is a deadline in the past, ordered as such (before
  ** call_later(0)), as asyncio; 0 stays the earliest (< 0 means "soon") */
  when = aio__now(s) + d;
  if (!(when >= 0)) when = 0;
  return schedule(L, s, 3, when);
}

static int loop_call_at(lua_State *L) {
  aio_sched *s = checkloop(L);
  double when = luaL_checknumber(L, 2);
  if (!(when >= 0)) when = 0;
  return schedule(L, s, 3, when);
}

static int loop_time(lua_State *L) {
  lua_pushnumber(L, aio__now(checkloop(L)));
  return 1;
}

static int loop_set_debug(lua_State *L) {
  checkloop(L)->debug = lua_toboolean(L, 2);
  return 0;
}

static int loop_get_debug(lua_State *L) {
  lua_pushboolean(L, checkloop(L)->debug);
  return 1;
}

/* loop.slow_step is a field; everything else comes from the methods */
static int loop_index(lua_State *L) {
  aio_sched *s = luaL_checkudata(L, 1, AIO_LOOP_MT);
  const char *k = lua_tostring(L, 2);
  if (k && strcmp(k, "slow_step") == 0) {
    lua_pushnumber(L, s->slow_step);
    return 1;
  }
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(1));
  return 1;
}

static int loop_newindex(lua_State *L) {
  aio_sched *s = luaL_checkudata(L, 1, AIO_LOOP_MT);
  const char *k = lua_tostring(L, 2);
  if (k && strcmp(k, "slow_step") == 0) {
    if (lua_type(L, 3) != LUA_TNUMBER || !(lua_tonumber(L, 3) >= 0))
      return luaL_error(L, "aio.Loop: slow_step must be a number >= 0 (seconds)");
    s->slow_step = lua_tonumber(L, 3);
    return 0;
  }
  return luaL_error(L, "aio.Loop has no field '%s'", k ? k : "?");
}

static int loop_is_closed(lua_State *L) {
  aio_sched *s = luaL_checkudata(L, 1, AIO_LOOP_MT);
  lua_pushboolean(L, s->closed);
  return 1;
}

static int loop_tostring(lua_State *L) {
  aio_sched *s = luaL_checkudata(L, 1, AIO_LOOP_MT);
  lua_pushfstring(L, "aio.Loop (%s, %s)",
                  s->closed ? aio__backend_name() : aio__loop_backend(s->lp),
                  s->closed ? "closed" : "open");
  return 1;
}

/* ---- handles of call_soon / call_later ---- */

static int handle_cancel(lua_State *L) {
  aio_call *c = luaL_checkudata(L, 1, AIO_CALL_MT);
  aio_sched *s = aio__rt(L)->sched;
  if (c->state == C_SCHEDULED && s != NULL) aio__call_cancel(L, s, c);
  else if (c->state == C_SCHEDULED) c->state = C_CANCELLED;
  return 0;
}

static int handle_cancelled(lua_State *L) {
  aio_call *c = luaL_checkudata(L, 1, AIO_CALL_MT);
  lua_pushboolean(L, c->state == C_CANCELLED);
  return 1;
}

static int handle_when(lua_State *L) {
  aio_call *c = luaL_checkudata(L, 1, AIO_CALL_MT);
  if (c->timer.when > 0) lua_pushnumber(L, c->timer.when);
  else lua_pushnil(L);
  return 1;
}

/* handle:realtime(): this call_later counts real seconds even when the loop
** runs on the virtual clock (a test suite's watchdog) */
static int handle_realtime(lua_State *L) {
  aio_call *c = luaL_checkudata(L, 1, AIO_CALL_MT);
  aio_sched *s = aio__rt(L)->sched;
  if (s && c->state == C_SCHEDULED && aio__call_make_real(s, c))
    return luaL_error(L, "not enough memory");
  lua_settop(L, 1);
  return 1;
}

static int handle_tostring(lua_State *L) {
  aio_call *c = luaL_checkudata(L, 1, AIO_CALL_MT);
  static const char *const states[] = { "scheduled", "cancelled", "done" };
  lua_pushfstring(L, "aio.Handle (%s)", states[c->state]);
  return 1;
}

static const luaL_Reg loop_methods[] = {
  { "call_soon", loop_call_soon },
  { "call_later", loop_call_later },
  { "call_at", loop_call_at },
  { "time", loop_time },
  { "is_closed", loop_is_closed },
  { "set_debug", loop_set_debug },
  { "get_debug", loop_get_debug },
  { NULL, NULL }
};

static const luaL_Reg handle_methods[] = {
  { "cancel", handle_cancel },
  { "cancelled", handle_cancelled },
  { "when", handle_when },
  { "realtime", handle_realtime },
  { NULL, NULL }
};

/* yieldable(): may the calling code wait?  Lua's own isyieldable: true in
** a task's body too (coroutine.isyieldable is false there, see coro.c) */
static int core_yieldable(lua_State *L) {
  lua_pushboolean(L, lua_isyieldable(L));
  return 1;
}

/* noyield(fn, ...): fn(...) where nothing may wait (a C call boundary):
** a wait inside raises aio's "cannot wait here" error.  For code that must
** not be interleaved with other tasks (a heap's comparisons). */
static int core_noyield(lua_State *L) {
  luaL_checkany(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

/* isa(obj, mt): is mt obj's metatable (raw: no __metatable field).  The
** self check of the Lua-side classes (lua/aio/sync.lua, queue.lua) on
** every call, lean so that a task about to wait in one keeps its small
** stack, which getmetatable would grow */
static int core_isa(lua_State *L) {
  lua_settop(L, 2);
  lua_pushboolean(L, lua_getmetatable(L, 1) && lua_rawequal(L, -1, 2));
  return 1;
}

static const luaL_Reg core_funcs[] = {
  { "run", core_run },
  { "spawn", core_spawn },
  { "sleep", core_sleep },
  { "now", core_now },
  { "current_task", core_current_task },
  { "all_tasks", core_all_tasks },
  { "loop", core_loop },
  { "Future", aio__l_future },
  { "errtype", aio__l_errtype },
  { "newerror", aio__l_newerror },
  { "run_virtual", core_run_virtual },
  { "set_virtual", core_set_virtual },
  { "advance", core_advance },
  { "ready", core_ready },
  { "spawn_eager", core_spawn_eager },
  { "context", core_context },
  { "isa", core_isa },
  { "noyield", core_noyield },
  { "yieldable", core_yieldable },
  { NULL, NULL }
};

/* they wait (or run just before a wait), and push no more than
** AIO_LEAN_SLOTS (sched.h) */
static const char *const lean_funcs[] = { "sleep", "isa", NULL };

static void createmeta(lua_State *L, const char *name, const luaL_Reg *m,
                       lua_CFunction tostr, lua_CFunction gc,
                       const char *methods) {
  luaL_newmetatable(L, name);
  lua_newtable(L);
  luaL_setfuncs(L, m, 0);
  aio__name_methods(L, -1, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, tostr);
  lua_setfield(L, -2, "__tostring");
  if (gc) {
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
}

int luaopen__aio_core(lua_State *L) {
  aio__rt(L);
  aio__error_meta(L);
  createmeta(L, AIO_LOOP_MT, loop_methods, loop_tostring, aio__sched_gc,
             "aio.Loop");
  luaL_getmetatable(L, AIO_LOOP_MT);          /* fields beside methods */
  lua_getfield(L, -1, "__index");
  lua_pushcclosure(L, loop_index, 1);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, loop_newindex);
  lua_setfield(L, -2, "__newindex");
  lua_pop(L, 1);
  createmeta(L, AIO_CALL_MT, handle_methods, handle_tostring, NULL,
             "aio.Handle");
  aio__future_open(L);
  aio__rt_metatables(L);
  luaL_newlib(L, core_funcs);
  aio__lean(L, -1, lean_funcs);
  lua_pushstring(L, aio__backend_name());
  lua_setfield(L, -2, "backend");
  lua_pushliteral(L, AIO_NOT_IN_TASK);
  lua_setfield(L, -2, "not_in_task");
  lua_pushliteral(L, AIO_CANNOT_WAIT);
  lua_setfield(L, -2, "cannot_wait");
  lua_pushstring(L, AIO_VERSION);
  lua_setfield(L, -2, "version");
  return 1;
}
