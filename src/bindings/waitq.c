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
** that was meant for it, and the list's lost hook (for Lua lists
** `onlost(owner)`, given at creation) runs before the CancelledError is
** raised, so the primitive can pass the wake-up on.  A task cancelled while
** still parked just leaves the list.
*/
#include <string.h>

#include "waitq.h"

#define WAITQ_MT "aio.WaitQueue"

#define container_of(p, type, member) \
  ((type *)((char *)(p) - offsetof(type, member)))

/* ---- the mechanism ---- */

void aio__wq_init(aio_waitq_t *q, const char *name, aio_wq_lost lost) {
  q->waiters.prev = q->waiters.next = &q->waiters;
  q->nparked = q->npending = 0;
  q->lost = lost;
  q->name = name;
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
  t->wait_data = NULL;  /* tells aio__wq_resumed it was not woken */
}

int aio__wq_park(lua_State *L, aio_task *t, aio_waitq_t *q, lua_KFunction k) {
  t->wnode.next = &q->waiters;
  t->wnode.prev = q->waiters.prev;
  q->waiters.prev->next = &t->wnode;
  q->waiters.prev = &t->wnode;
  q->nparked++;
  return aio__park(L, t, wq_cleanup, q, q->name, (lua_KContext)t, k);
}

/* wait_data still points to the list when aio__wq_wake woke the task,
** NULL when a cancel removed it */
void aio__wq_resumed(lua_State *L, aio_task *t) {
  aio_waitq_t *q = t->wait_data;
  if (q == NULL) return;
  t->wait_data = NULL;
  q->npending--;
  if ((t->tflags & T_CANCEL_PENDING) && q->lost) q->lost(L, q);
}

int aio__wq_wake(aio_waitq_t *q, lua_Integer n) {
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

/* ---- _aio.waitq: the lists as Lua objects ---- */

/* uservalue 1: onlost, 2: its argument (the owning primitive) */
typedef struct lwq {
  aio_waitq_t q;        /* first: the list's address is the userdata's */
  char name[40];        /* "aio.Lock.acquire" */
} lwq;

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

/* a lost wake-up: call onlost(owner); the list is at index 1 */
static void lua_lost(lua_State *L, aio_waitq_t *q) {
  (void)q;
  lua_getiuservalue(L, 1, 1);
  lua_getiuservalue(L, 1, 2);
  lua_call(L, 1, 0);  /* it must not wait */
}

/* new(name [, onlost [, owner]]) */
static int wq_new(lua_State *L) {
  size_t len;
  const char *name = luaL_checklstring(L, 1, &len);
  lwq *w;
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 3);
  w = lua_newuserdatauv(L, sizeof *w, 2);
  memset(w, 0, sizeof *w);
  if (len >= sizeof w->name) len = sizeof w->name - 1;
  memcpy(w->name, name, len);
  aio__wq_init(&w->q, w->name, lua_isnil(L, 2) ? NULL : lua_lost);
  luaL_setmetatable(L, WAITQ_MT);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 1);
  lua_pushvalue(L, 3);
  lua_setiuservalue(L, -2, 2);
  return 1;
}

/* continuation of wait: the list is at index 1, ctx the task */
static int wq_wait_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  aio__wq_resumed(L, (aio_task *)ctx);
  aio__wait_end(L);  /* raises the CancelledError, if any */
  return 0;
}

/* wq:wait(): park the running task at the tail until wake() reaches it */
static int wq_wait(lua_State *L) {
  aio_waitq_t *q = checkwq(L, 1);
  aio_task *t = aio__wait_begin(L, q->name);
  lua_settop(L, 1);  /* keeps the list alive while the task waits */
  return aio__wq_park(L, t, q, wq_wait_k);
}

#define wakeup aio__wq_wake

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

/* it waits, and pushes two values at most (sched.h) */
static const char *const lean_methods[] = { "wait", NULL };

int luaopen__aio_waitq(lua_State *L) {
  luaL_newlib(L, wq_funcs);                      /* M */
  luaL_newmetatable(L, WAITQ_MT);                /* M mt */
  luaL_newlibtable(L, wq_methods);               /* M mt methods */
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, wq_methods, 1);
  aio__lean(L, -1, lean_methods);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "__index");
  lua_setfield(L, -3, "methods");  /* for callers that localise them */
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, wq_tostring, 1);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);                                 /* M */
  return 1;
}
