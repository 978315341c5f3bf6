/*
** waitq.c: the module _aio.waitq, a FIFO list of parked tasks: the one
** mechanism under aio.Lock, Event, Condition, Semaphore, Barrier and the
** queues (lua/aio/sync.lua, lua/aio/queue.lua hold the policy).
**
** A wake-up is a signal, not a value: the data stays in the primitive and
** the woken task takes it when it runs (as asyncio's futures in its locks
** and queues).  A waiter needs no allocation: the task record's own waiter
** node links it into the list.  Between its wake-up and its resumption a
** task is "pending"; if it is cancelled in that window it lost a wake-up
** that was meant for it, and the list's `onlost(owner)` (set at creation)
** runs before the CancelledError is raised, so the primitive can pass the
** wake-up on.  A task cancelled while still parked just leaves the list.
*/
#include <string.h>

#include "sched.h"

#define WAITQ_MT "aio.WaitQueue"

#define container_of(p, type, member) \
  ((type *)((char *)(p) - offsetof(type, member)))

/* uservalue 1: onlost, 2: its argument (the owning primitive) */
typedef struct aio_waitq_t {
  aio_waiter waiters;   /* parked tasks, in arrival order */
  int nparked;
  int npending;         /* woken, not resumed yet */
  int onlost;           /* an onlost function was given */
  char name[40];        /* "aio.Lock.acquire": for errors and dump_tasks */
} aio_waitq_t;

/* the methods are closures over the metatable (upvalue 1): comparing it is
** cheaper than luaL_checkudata's registry lookup, on the hot path */
static aio_waitq_t *checkwq(lua_State *L, int idx) {
  void *p = lua_touserdata(L, idx);
  if (p == NULL || !lua_getmetatable(L, idx) ||
      !lua_rawequal(L, -1, lua_upvalueindex(1)))
    luaL_typeerror(L, idx, WAITQ_MT);
  lua_pop(L, 1);
  return p;
}

/* new(name [, onlost [, owner]]) */
static int wq_new(lua_State *L) {
  size_t len;
  const char *name = luaL_checklstring(L, 1, &len);
  aio_waitq_t *q;
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 3);
  q = lua_newuserdatauv(L, sizeof *q, 2);
  memset(q, 0, sizeof *q);
  q->waiters.prev = q->waiters.next = &q->waiters;
  if (len >= sizeof q->name) len = sizeof q->name - 1;
  memcpy(q->name, name, len);
  q->onlost = !lua_isnil(L, 2);
  luaL_setmetatable(L, WAITQ_MT);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 1);
  lua_pushvalue(L, 3);
  lua_setiuservalue(L, -2, 2);
  return 1;
}

/* a cancel (or a closing loop) takes a parked task off the list */
static void wq_cleanup(aio_task *t) {
  aio_waitq_t *q = t->wait_data;
  aio_waiter *w = &t->wnode;
  if (w->next != NULL) {
    w->prev->next = w->next;
    w->next->prev = w->prev;
    w->prev = w->next = NULL;
    q->nparked--;
  }
  t->wait_data = NULL;  /* tells wq_wait_k it was not woken */
}

/* continuation of wait: the list is at index 1, ctx the task.  wait_data still points
** to the list when wq_wake woke the task, NULL when a cancel removed it. */
static int wq_wait_k(lua_State *L, int status, lua_KContext ctx) {
  aio_waitq_t *q = lua_touserdata(L, 1);
  aio_task *t = (aio_task *)ctx;  /* the task record never moves */
  (void)status;
  if (t->wait_data == q) {
    t->wait_data = NULL;
    q->npending--;
    if ((t->tflags & T_CANCEL_PENDING) && q->onlost) {
      lua_getiuservalue(L, 1, 1);
      lua_getiuservalue(L, 1, 2);
      lua_call(L, 1, 0);  /* onlost(owner): it must not wait */
    }
  }
  aio__wait_end(L);  /* raises the CancelledError, if any */
  return 0;
}

/* wq:wait(): park the running task at the tail until wake() reaches it */
static int wq_wait(lua_State *L) {
  aio_waitq_t *q = checkwq(L, 1);
  aio_task *t = aio__wait_begin(L, q->name);
  lua_settop(L, 1);  /* keeps the list alive while the task waits */
  t->wnode.next = &q->waiters;
  t->wnode.prev = q->waiters.prev;
  q->waiters.prev->next = &t->wnode;
  q->waiters.prev = &t->wnode;
  q->nparked++;
  return aio__park(L, t, wq_cleanup, q, q->name, (lua_KContext)t,
                   wq_wait_k);
}

/* wake up to n parked tasks, first come first; returns how many */
static int wakeup(aio_waitq_t *q, lua_Integer n) {
  int woken = 0;
  while (n-- > 0 && q->waiters.next != &q->waiters) {
    aio_waiter *w = q->waiters.next;
    aio_task *t = container_of(w, aio_task, wnode);
    w->prev->next = w->next;
    w->next->prev = w->prev;
    w->prev = w->next = NULL;
    q->nparked--;
    q->npending++;
    aio__wake(t);
    woken++;
  }
  return woken;
}

/* wq:wake([n = 1]) -> number woken */
static int wq_wake(lua_State *L) {
  aio_waitq_t *q = checkwq(L, 1);
  lua_pushinteger(L, wakeup(q, luaL_optinteger(L, 2, 1)));
  return 1;
}

/* wq:wake_all() -> number woken */
static int wq_wake_all(lua_State *L) {
  aio_waitq_t *q = checkwq(L, 1);
  lua_pushinteger(L, wakeup(q, q->nparked));
  return 1;
}

/* wq:idle(): nobody parked and nobody woken but not yet run */
static int wq_idle(lua_State *L) {
  aio_waitq_t *q = checkwq(L, 1);
  lua_pushboolean(L, q->nparked == 0 && q->npending == 0);
  return 1;
}

/* wq:count() -> parked, pending */
static int wq_count(lua_State *L) {
  aio_waitq_t *q = checkwq(L, 1);
  lua_pushinteger(L, q->nparked);
  lua_pushinteger(L, q->npending);
  return 2;
}

static int wq_tostring(lua_State *L) {
  aio_waitq_t *q = checkwq(L, 1);
  lua_pushfstring(L, "aio.WaitQueue %s (%d parked, %d pending)", q->name,
                  q->nparked, q->npending);
  return 1;
}

static const luaL_Reg wq_methods[] = {
  { "wait", wq_wait },
  { "wake", wq_wake },
  { "wake_all", wq_wake_all },
  { "idle", wq_idle },
  { "count", wq_count },
  { NULL, NULL }
};

static const luaL_Reg wq_funcs[] = {
  { "new", wq_new },
  { NULL, NULL }
};

int luaopen__aio_waitq(lua_State *L) {
  luaL_newlib(L, wq_funcs);                      /* M */
  luaL_newmetatable(L, WAITQ_MT);                /* M mt */
  luaL_newlibtable(L, wq_methods);               /* M mt methods */
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, wq_methods, 1);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "__index");
  lua_setfield(L, -3, "methods");  /* for callers that localise them */
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, wq_tostring, 1);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);                                 /* M */
  return 1;
}
