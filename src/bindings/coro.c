/*
** coro.c: coroutine.resume / wrap / running / close that let a task wait
** inside a user coroutine (a generator).  A wait parks the current task
** (its state leaves T_RUNNING) and yields; when such a yield comes out of
** an inner coroutine these functions yield further up (lua_yieldk) and
** resume the inner coroutine once the task is woken, so the scheduler sees
** the wait and the generator never notices.  Any other yield leaves the
** task running and behaves as in lcorolib.c, which this follows.
*/
#include <stdio.h>

#include "sched.h"

#define WAITS (-2)  /* auxresume: the coroutine waits on aio */

static lua_State *getco(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argexpected(L, co, 1, "coroutine");
  return co;
}

static int istask(lua_State *L, lua_State *co) {
  return aio__thread_task(L, co) != NULL;
}

/* Coroutines whose wait is passed up (registry: a weak-keyed set): to
** anyone but their resumer they are in use, not suspended, as a coroutine
** that resumed another is ("normal"): resuming or closing one is an
** error, coroutine.status says "normal". */
static char waiting_key;

/* is the coroutine at index idx of L waiting?  With set >= 0, first make it
** so (1) or not (0) */
static int waiting(lua_State *L, int idx, int set) {
  int r;
  idx = lua_absindex(L, idx);
  if (!aio__weak_registry(L, &waiting_key, set > 0)) return 0;
  lua_pushvalue(L, idx);
  if (set >= 0) {
    if (set) lua_pushboolean(L, 1);
    else lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    return set;
  }
  r = lua_rawget(L, -2) != LUA_TNIL;
  lua_pop(L, 2);
  return r;
}

/* Resume co (at index coidx of L) with narg values from L; `woken`: from a
** continuation, after its passed-up wait.  Returns the number of results
** moved to L, -1 with an error message on L, or WAITS. */
static int auxresume(lua_State *L, lua_State *co, int coidx, int narg,
                     int woken) {
  aio_sched *s = aio__rt(L)->sched;
  aio_task *t = s ? s->current : NULL;  /* the task the wait would park */
  int status, nres;
  if (istask(L, co)) {
    lua_pushliteral(L, "cannot resume the coroutine of a task "
                    "(await the task instead)");
    return -1;
  }
  if (woken) waiting(L, coidx, 0);
  else if (lua_status(co) == LUA_YIELD && waiting(L, coidx, -1)) {
    lua_pushliteral(L, "cannot resume non-suspended coroutine");
    return -1;
  }
  if (!lua_checkstack(co, narg)) {
    lua_pushliteral(L, "too many arguments to resume");
    return -1;
  }
  if (lua_status(co) == LUA_OK && lua_gettop(co) == 0) {
    lua_pushliteral(L, "cannot resume dead coroutine");
    return -1;
  }
  lua_xmove(L, co, narg);
  if (t != NULL) {  /* C code it calls may ask which thread runs */
    lua_State *pin = s->inner;
    aio_task *pit = s->inner_task;
    s->inner = co;
    s->inner_task = t;
    status = lua_resume(co, L, narg, &nres);
    s->inner = pin;
    s->inner_task = pit;
  } else {
    status = lua_resume(co, L, narg, &nres);
  }
  if (status == LUA_OK || status == LUA_YIELD) {
    if (status == LUA_YIELD && t != NULL && t->state != T_RUNNING) {
      waiting(L, coidx, 1);
      return WAITS;  /* it yielded nothing */
    }
    if (!lua_checkstack(L, nres + 1)) {
      lua_pop(co, nres);
      lua_pushliteral(L, "too many results to resume");
      return -1;
    }
    lua_xmove(co, L, nres);
    return nres;
  }
  lua_xmove(co, L, 1);
  return -1;
}

/* pass an inner coroutine's wait up; `k` resumes it once woken */
static int passup(lua_State *L, lua_KFunction k) {
  if (!lua_isyieldable(L)) {
    aio__wait_abort(L);
    return luaL_error(L, "cannot wait here: a coroutine waits on aio, but "
                      "its resumer cannot yield (not inside a task, or "
                      "across a C call)");
  }
  return lua_yieldk(L, 0, 0, k);
}

static int resume_k(lua_State *L, int status, lua_KContext ctx);

static int finish_resume(lua_State *L, int r) {
  if (r == WAITS) return passup(L, resume_k);
  if (r < 0) {
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
  }
  lua_pushboolean(L, 1);
  lua_insert(L, -(r + 1));
  return r + 1;
}

static int resume_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status; (void)ctx;
  lua_settop(L, 1);
  return finish_resume(L, auxresume(L, getco(L), 1, 0, 1));
}

static int co_resume(lua_State *L) {
  lua_State *co = getco(L);
  return finish_resume(L, auxresume(L, co, 1, lua_gettop(L) - 1, 0));
}

static int wrap_k(lua_State *L, int status, lua_KContext ctx);

/* the error on top of L, raised as lcorolib's wrap does: with the position
** of the caller when it is a string */
static int wrap_raise(lua_State *L, int stat) {
  if (stat != LUA_ERRMEM && lua_type(L, -1) == LUA_TSTRING) {
    luaL_where(L, 1);
    lua_insert(L, -2);
    lua_concat(L, 2);
  }
  return lua_error(L);
}

/* Closing a failed (or closed) coroutine's to-be-closed variables where a
** __close may wait: they were taken off the dead coroutine (aio__poptbc,
** see lua_tbc.patch) onto L, the error (or nil) at 1 and the variables
** above it, innermost first, and each __close(v, err) runs here under a
** pcall that may yield; an error from one takes the place of err at 1, as
** Lua does.  ctx: the next variable, and whether it is coroutine.close
** (returns) or wrap (raises). */
#define CL_CTX(i, isclose) ((lua_KContext)(((lua_KContext)(i) << 1) | (isclose)))

static int close_tbc_k(lua_State *L, int status, lua_KContext ctx) {
  const int base = 1;
  int i = (int)(ctx >> 1), isclose = (int)(ctx & 1), n;
  if (status != LUA_OK && status != LUA_YIELD) lua_replace(L, base);
  n = lua_gettop(L);
  for (; i <= n; i++) {
    luaL_checkstack(L, 3, NULL);
    if (luaL_getmetafield(L, i, "__close") == LUA_TNIL)
      lua_pushnil(L);  /* its metatable changed: calling nil raises */
    lua_pushvalue(L, i);
    lua_pushvalue(L, base);
    if (lua_pcallk(L, 2, 0, 0, CL_CTX(i + 1, isclose), close_tbc_k)
        != LUA_OK)
      lua_replace(L, base);
  }
  lua_settop(L, base);
  if (isclose) {
    if (lua_isnil(L, base)) {
      lua_pushboolean(L, 1);
      return 1;
    }
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
  }
  return wrap_raise(L, LUA_ERRRUN);
}

/* Take co's to-be-closed variables onto L above the error (or nil) on top
** of L, make that error slot 1 (what was below it is not needed any more)
** and reset co.  0 when that cannot be done here (no patched Lua, L cannot
** yield, none to close): L is as it was, and the caller resets co as Lua
** does. */
static int take_tbc(lua_State *L, lua_State *co) {
  int n = 0, below = lua_gettop(L) - 1;
  if (aio__poptbc == NULL || !lua_isyieldable(L) || !lua_checkstack(co, 1))
    return 0;
  while (lua_checkstack(L, 4) && lua_checkstack(co, 1) && aio__poptbc(co)) {
    lua_xmove(co, L, 1);
    n++;
  }
  if (n == 0) return 0;
  lua_resetthread(co);  /* its upvalues; no variable is left to close */
  lua_settop(co, 0);
  while (below-- > 0) lua_remove(L, 1);
  return n;
}

static int finish_wrap(lua_State *L, lua_State *co, int r) {
  if (r == WAITS) return passup(L, wrap_k);
  if (r < 0) {
    int stat = lua_status(co);
    if (stat != LUA_OK && stat != LUA_YIELD) {  /* error in the coroutine */
      /* the error, moved by auxresume, is on top */
      if (take_tbc(L, co) > 0) return close_tbc_k(L, LUA_OK, CL_CTX(2, 0));
      stat = lua_resetthread(co);  /* close its tbc variables */
      lua_xmove(co, L, 1);
    }
    return wrap_raise(L, stat);
  }
  return r;
}

static int wrap_k(lua_State *L, int status, lua_KContext ctx) {
  lua_State *co = lua_tothread(L, lua_upvalueindex(1));
  (void)status; (void)ctx;
  lua_settop(L, 0);
  return finish_wrap(L, co, auxresume(L, co, lua_upvalueindex(1), 0, 1));
}

static int auxwrap(lua_State *L) {
  lua_State *co = lua_tothread(L, lua_upvalueindex(1));
  return finish_wrap(L, co, auxresume(L, co, lua_upvalueindex(1),
                                      lua_gettop(L), 0));
}

/* ---- debug mode: coroutines collected while suspended ---- */

static char watch_key;  /* registry: ephemeron table coroutine -> sentinel */

/* The sentinel's finaliser runs when its coroutine is collected (an
** ephemeron value keeps nothing alive); a coroutine still suspended then
** was left waiting forever. */
static int sentinel_gc(lua_State *L) {
  lua_State *co;
  lua_getiuservalue(L, 1, 1);
  co = lua_tothread(L, -1);
  if (co && lua_status(co) == LUA_YIELD) {
    lua_getiuservalue(L, 1, 2);
    fprintf(stderr, "aiolua: debug: a coroutine was collected while "
            "suspended (left waiting forever); %s\n",
            lua_isstring(L, -1) ? lua_tostring(L, -1) : "");
    fflush(stderr);
  }
  return 0;
}

/* in debug mode, watch the new coroutine on top of the stack */
static void watch(lua_State *L) {
  aio_sched *s = aio__rt(L)->sched;
  if (s == NULL || !s->debug) return;
  aio__weak_registry(L, &watch_key, 1);       /* co watched */
  lua_pushvalue(L, -2);
  lua_newuserdatauv(L, 1, 2);                 /* co watched co sentinel */
  lua_pushvalue(L, -2);
  lua_setiuservalue(L, -2, 1);
  luaL_traceback(L, L, "created at", 1);
  lua_setiuservalue(L, -2, 2);
  if (luaL_newmetatable(L, "aio.CoroutineWatch")) {
    lua_pushcfunction(L, sentinel_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_rawset(L, -3);                          /* co watched */
  lua_pop(L, 1);
}

static int co_create(lua_State *L) {
  lua_State *NL;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  NL = lua_newthread(L);
  lua_pushvalue(L, 1);
  lua_xmove(L, NL, 1);
  watch(L);
  return 1;
}

static int co_wrap(lua_State *L) {
  co_create(L);
  lua_pushcclosure(L, auxwrap, 1);
  return 1;
}

/* a task's thread that user code has seen is never reused for another */
static int co_running(lua_State *L) {
  int ismain = lua_pushthread(L);
  aio_sched *s = aio__rt(L)->sched;
  aio_task *t = s ? s->current : NULL;
  if (t && t->co == L && !(t->tflags & T_EXPOSED)) {
    t->tflags |= T_EXPOSED;
    aio__thread_task_set(L, L, t);
  }
  lua_pushboolean(L, ismain);
  return 2;
}

static int co_close(lua_State *L) {
  lua_State *co = getco(L);
  int status;
  if (istask(L, co))
    return luaL_error(L, "cannot close the coroutine of a task "
                      "(cancel the task instead)");
  if (co == L || (lua_status(co) == LUA_OK && lua_getstack(co, 0, &(lua_Debug){0})) ||
      (lua_status(co) == LUA_YIELD && waiting(L, 1, -1)))
    return luaL_error(L, "cannot close a %s coroutine",
                      co == L ? "running" : "normal");
  if (lua_checkstack(co, 1) && lua_checkstack(L, 2)) {
    int st = lua_status(co);
    /* no error yet, or the one that stopped it (a resume that failed) */
    if (st == LUA_OK || st == LUA_YIELD) lua_pushnil(L);
    else lua_pushvalue(co, -1), lua_xmove(co, L, 1);
    if (take_tbc(L, co) > 0)  /* closed here, where a __close may wait */
      return close_tbc_k(L, LUA_OK, CL_CTX(2, 1));
    lua_pop(L, 1);
  }
  status = lua_resetthread(co);
  if (status == LUA_OK) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushboolean(L, 0);
  lua_xmove(co, L, 1);
  return 2;
}

/* coroutine.status, but "normal" for a coroutine whose wait is passed up
** (upvalue 1: lcorolib's status) */
static int co_status(lua_State *L) {
  lua_State *co = getco(L);
  if (co != L && lua_status(co) == LUA_YIELD && waiting(L, 1, -1)) {
    lua_pushliteral(L, "normal");
    return 1;
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  return 1;
}

/* coroutine.yield, but an error (one pcall catches) from a task's own
** body, which is not a coroutine of the user's: only an aio wait may
** suspend it */
static int co_yield(lua_State *L) {
  aio_sched *s = aio__rt(L)->sched;
  aio_task *t = s ? s->current : NULL;
  if (t != NULL && t->co == L)
    return luaL_error(L, "attempt to yield from a task outside a coroutine "
                      "(use aio.sleep(0) to let other tasks run)");
  return lua_yield(L, lua_gettop(L));
}

/* coroutine.isyieldable([co]): false in a task's own coroutine, where
** coroutine.yield raises (a task waits with aio.sleep and the others) */
static int co_isyieldable(lua_State *L) {
  lua_State *co = lua_isnone(L, 1) ? L : getco(L);
  aio_sched *s = aio__rt(L)->sched;
  int task = (s && s->current && s->current->co == co) || istask(L, co);
  lua_pushboolean(L, lua_isyieldable(co) && !task);
  return 1;
}

static const luaL_Reg co_funcs[] = {
  { "yield", co_yield },
  { "isyieldable", co_isyieldable },
  { "resume", co_resume },
  { "create", co_create },
  { "wrap", co_wrap },
  { "running", co_running },
  { "close", co_close },
  { NULL, NULL }
};

/* _aio.coro: installs the functions above into the coroutine library */
int luaopen__aio_coro(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, "coroutine") == LUA_TTABLE) {
    luaL_setfuncs(L, co_funcs, 0);
    /* lcorolib's status inside ours, once (loaded again: already ours) */
    if (lua_getfield(L, -1, "status") == LUA_TFUNCTION &&
        lua_tocfunction(L, -1) != co_status) {
      lua_pushcclosure(L, co_status, 1);
      lua_setfield(L, -2, "status");
    } else {
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 2);
  lua_pushboolean(L, 1);
  return 1;
}
