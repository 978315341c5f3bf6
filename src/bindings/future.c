/*
** future.c: the aio.Future and aio.Task objects (a task is a future whose
** outcome is its function's).  The state machine is in sched.c; here are
** the methods Lua sees.
*/
#include <string.h>

#include "sched.h"

static aio_future *checkfut(lua_State *L) {
  return aio__checkfuture(L, 1);
}

static aio_task *checktask(lua_State *L) {
  aio_task *t = aio__totask(L, 1);
  if (t == NULL) luaL_typeerror(L, 1, AIO_TASK_MT);
  return t;
}

/* aio__await checks the future; what lies above it does not matter: a
** done one's results go on top, a wait drops the rest */
static int fut_await(lua_State *L) {
  return aio__await(L, 1);
}

static int fut_result(lua_State *L) {
  checkfut(L);
  lua_settop(L, 1);
  return aio__future_results(L, 1);
}

static int fut_error(lua_State *L) {
  aio_future *f = checkfut(L);
  if (f->state == AIO_PENDING)
    return aio__error(L, "InvalidStateError", 0, "the outcome is not set yet");
  f->flags &= ~AIO_F_UNRETRIEVED;
  if (f->state == AIO_RESULT) lua_pushnil(L);
  else lua_getiuservalue(L, 1, 1);
  return 1;
}

static int fut_done(lua_State *L) {
  lua_pushboolean(L, checkfut(L)->state != AIO_PENDING);
  return 1;
}

static int fut_cancelled(lua_State *L) {
  lua_pushboolean(L, checkfut(L)->state == AIO_CANCELLED);
  return 1;
}

/* set_result, set_error and a bare future's cancel, reached through
** aio.Future's methods with a Task as self: a task's outcome comes from
** its function (asyncio: "Task does not support set_result()"); it was
** marked done while its body went on */
static aio_future *checkbare(lua_State *L, const char *fname) {
  aio_future *f = checkfut(L);
  if (f->kind == AIO_K_TASK)
    luaL_error(L, "%s: a Task's outcome comes from its function%s", fname,
               strcmp(fname, "cancel") == 0 ? " (use task:cancel())" : "");
  return f;
}

static int fut_cancel(lua_State *L) {
  aio_future *f = checkbare(L, "cancel");
  if (f->state != AIO_PENDING) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (!lua_isnoneornil(L, 2)) {
    const char *m = luaL_tolstring(L, 2, NULL);
    aio__pusherror(L, "CancelledError", 0, "%s", m);
    lua_remove(L, -2);
  } else {
    aio__pusherror(L, "CancelledError", 0, "cancelled");
  }
  lua_pushboolean(L, aio__future_complete(L, 1, AIO_CANCELLED, 1));
  return 1;
}

static int fut_set_result(lua_State *L) {
  aio_future *f = checkbare(L, "set_result");
  if (f->state != AIO_PENDING)
    return aio__error(L, "InvalidStateError", 0, "the future is already done");
  aio__future_complete(L, 1, AIO_RESULT, lua_gettop(L) - 1);
  return 0;
}

static int fut_set_error(lua_State *L) {
  aio_future *f = checkbare(L, "set_error");
  const char *et;
  int state = AIO_ERROR;
  luaL_checkany(L, 2);
  lua_settop(L, 2);
  if (f->state != AIO_PENDING)
    return aio__error(L, "InvalidStateError", 0, "the future is already done");
  et = aio__errtype(L, 2);
  if (et && strcmp(et, "CancelledError") == 0) state = AIO_CANCELLED;
  aio__future_complete(L, 1, state, 1);
  return 0;
}

static int fut_add_done_callback(lua_State *L) {
  aio_future *f = checkfut(L);
  aio_sched *s = f->kind == AIO_K_TASK ? ((aio_task *)f)->sched
                                       : aio__rt(L)->sched;
  int ctx;
  lua_Integer n;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  /* cb runs in a copy of the caller's context, as in asyncio */
  ctx = aio__context_copy(L, aio__rt(L)->sched);  /* fut cb [ctx] */
  if (f->state != AIO_PENDING) {
    /* never inside this call: on the next loop step */
    if (s == NULL || s->closed)
      return luaL_error(L, "add_done_callback: no running loop");
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 1);
    aio__call_at(L, s, 1, -1, ctx ? 3 : 0);
    return 0;
  }
  lua_settop(L, 3);
  aio__extras(L, 1);                          /* fut cb ctx extras */
  luaL_getsubtable(L, 4, "callbacks");        /* fut cb ctx extras cbs */
  n = (lua_Integer)lua_rawlen(L, 5) + 1;
  lua_pushvalue(L, 2);
  lua_rawseti(L, 5, n);
  if (ctx) {  /* its context at the same index */
    luaL_getsubtable(L, 4, "cbcontexts");
    lua_pushvalue(L, 3);
    lua_rawseti(L, -2, n);
  }
  f->flags |= AIO_F_CALLBACKS;
  return 0;
}

static int fut_remove_done_callback(lua_State *L) {
  lua_Integer i, j = 0, n, removed = 0;
  checkfut(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  aio__extras(L, 1);
  if (lua_getfield(L, 3, "callbacks") == LUA_TTABLE) {
    int ctxs = lua_getfield(L, 3, "cbcontexts") == LUA_TTABLE;  /* 5 */
    n = (lua_Integer)lua_rawlen(L, 4);
    for (i = 1; i <= n; i++) {
      lua_rawgeti(L, 4, i);
      if (lua_rawequal(L, -1, 2)) {
        removed++;
        lua_pop(L, 1);
      } else {
        lua_rawseti(L, 4, ++j);
        if (ctxs) {  /* its context moves with it */
          lua_rawgeti(L, 5, i);
          lua_rawseti(L, 5, j);
        }
      }
    }
    for (i = j + 1; i <= n; i++) {
      lua_pushnil(L);
      lua_rawseti(L, 4, i);
      if (ctxs) {
        lua_pushnil(L);
        lua_rawseti(L, 5, i);
      }
    }
  }
  lua_pushinteger(L, removed);
  return 1;
}

static const char *statename(aio_future *f) {
  static const char *const names[] = { "pending", "done", "failed",
                                       "cancelled" };
  return names[f->state];
}

static int fut_tostring(lua_State *L) {
  aio_future *f = checkfut(L);
  lua_pushfstring(L, "aio.Future (%s)", statename(f));
  return 1;
}

/* ---- tasks ---- */

static void pushname(lua_State *L, int idx, aio_task *t) {
  aio__extras(L, idx);
  if (lua_getfield(L, -1, "name") == LUA_TNIL) {
    lua_pop(L, 1);
    lua_pushfstring(L, "Task-%d", (int)t->id);
  }
  lua_remove(L, -2);
}

static int task_tostring(lua_State *L) {
  aio_task *t = checktask(L);
  pushname(L, 1, t);
  lua_pushfstring(L, "aio.Task %s (%s)", lua_tostring(L, -1),
                  statename(&t->fut));
  return 1;
}

static int task_traceback(lua_State *L) {
  checktask(L);
  aio__extras(L, 1);
  lua_getfield(L, -1, "traceback");
  return 1;
}

static int task_cancel(lua_State *L) {
  aio_task *t = checktask(L);
  lua_pushboolean(L, aio__task_cancel(L, t, lua_isnoneornil(L, 2) ? 0 : 2));
  return 1;
}

/* task:stack(): the traceback of where a waiting task is parked (nil once
** it has ended) */
static int task_stack(lua_State *L) {
  aio_task *t = checktask(L);
  if (t->co == NULL || t->state == T_DONE) return 0;
  if (t->state == T_PARKED && t->wait_L != NULL && t->wait_L != t->co) {
    /* it waits inside a coroutine it runs (a coroutine.wrap generator):
    ** that coroutine's frames first, then the task's own below them */
    luaL_traceback(L, t->wait_L, NULL, 0);
    luaL_traceback(L, t->co, NULL, 0);
    lua_pushstring(L, lua_tostring(L, -1) + strlen("stack traceback:"));
    lua_remove(L, -2);
    lua_concat(L, 2);
    return 1;
  }
  luaL_traceback(L, t->co, NULL, 0);
  return 1;
}

/* task:waiting(): state ("new", "ready", "running", "waiting", "done") and,
** when waiting, on what ("sleep", "future", "task" or what a binding said)
** and a detail: the deadline of a sleep (loop clock) or the awaited task */
static int task_waiting(lua_State *L) {
  static const char *const states[] = { "new", "ready", "running", "waiting",
                                        "done" };
  aio_task *t = checktask(L);
  lua_pushstring(L, states[t->state]);
  if (t->state != T_PARKED) return 1;
  lua_pushstring(L, t->wait_what ? t->wait_what : "?");
  if (t->timer.idx) {
    lua_pushnumber(L, t->timer.when);
    return 3;
  }
  if (t->wait_what && strcmp(t->wait_what, "task") == 0 && t->wait_data) {
    aio_task *w = t->wait_data;
    if (w->ref != LUA_NOREF) {
      aio__push_task(L, w);
      return 3;
    }
  }
  return 2 + aio__wait_detail(L, t);  /* a stream's peer, a child's pid */
}

static int task_cancelling(lua_State *L) {
  lua_pushinteger(L, checktask(L)->ncancel);
  return 1;
}

static int task_uncancel(lua_State *L) {
  aio_task *t = checktask(L);
  if (t->ncancel > 0) t->ncancel--;
  lua_pushinteger(L, t->ncancel);
  return 1;
}

/* task.name, and any other field a user stores, live in its extras */
static int task_index(lua_State *L) {
  aio_task *t;
  lua_pushvalue(L, 2);  /* a method: the common case, no check needed */
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
  t = checktask(L);
  if (lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "name") == 0) {
    pushname(L, 1, t);
    return 1;
  }
  aio__extras(L, 1);
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}

static int task_newindex(lua_State *L) {
  checktask(L);
  if (lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "name") == 0
      && !lua_isnil(L, 3))
    luaL_tolstring(L, 3, NULL);
  else
    lua_pushvalue(L, 3);
  aio__extras(L, 1);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, -3);
  lua_rawset(L, -3);
  return 0;
}

int aio__l_future(lua_State *L) {
  aio__future_new(L);
  return 1;
}

static const luaL_Reg common_methods[] = {
  { "await", fut_await },
  { "result", fut_result },
  { "error", fut_error },
  { "done", fut_done },
  { "cancelled", fut_cancelled },
  { "add_done_callback", fut_add_done_callback },
  { "remove_done_callback", fut_remove_done_callback },
  { NULL, NULL }
};

static const luaL_Reg future_methods[] = {
  { "cancel", fut_cancel },
  { "set_result", fut_set_result },
  { "set_error", fut_set_error },
  { NULL, NULL }
};

static const luaL_Reg task_methods[] = {
  { "cancel", task_cancel },
  { "traceback", task_traceback },
  { "cancelling", task_cancelling },
  { "uncancel", task_uncancel },
  { "stack", task_stack },
  { "waiting", task_waiting },
  { NULL, NULL }
};

/* they wait, and push no more than AIO_LEAN_SLOTS (sched.h) past their
** arguments: more results come after luaL_checkstack */
static const char *const lean_methods[] = { "await", NULL };

void aio__future_open(lua_State *L) {
  luaL_newmetatable(L, AIO_FUTURE_MT);
  luaL_newlib(L, common_methods);
  luaL_setfuncs(L, future_methods, 0);
  aio__lean(L, -1, lean_methods);
  aio__name_methods(L, -1, "aio.Future");
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, fut_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);

  /* no finaliser here: a failed task, or in debug mode a failed future,
  ** gets a watcher that has one (sched.c, watch_failure) */
  luaL_newmetatable(L, AIO_TASK_MT);                    /* mt */
  /* closures of their own (an upvalue), not the Future's functions: an
  ** error names a function by its value (pushglobalfuncname), so that a
  ** task's says aio.Task.add_done_callback, not aio.Future's */
  luaL_newlibtable(L, common_methods);                  /* mt methods */
  lua_pushboolean(L, 1);
  luaL_setfuncs(L, common_methods, 1);
  luaL_setfuncs(L, task_methods, 0);
  aio__lean(L, -1, lean_methods);
  aio__name_methods(L, -1, "aio.Task");
  /* the program's Lua finds t:m() here without calling task_index, which
  ** gives these first (src/host/lua_method.patch) */
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "__methods");
  lua_pushcclosure(L, task_index, 1);                   /* mt index */
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, task_newindex);
  lua_setfield(L, -2, "__newindex");
  lua_pushcfunction(L, task_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  aio__watch_open(L);
}
