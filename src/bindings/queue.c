/*
** queue.c: the module _aio.queue, the FIFO aio.Queue in C.  Task-to-task
** messaging is a hot path (the ping-pong benchmark), and in Lua the
** bookkeeping of put/get cost more than the task switch itself; here a
** put or get that does not wait allocates nothing and makes no Lua call.
** lua/aio/queue.lua builds the object: a table holding `maxsize` and these
** methods as C closures over (core, ring).  LifoQueue and PriorityQueue
** stay in Lua, on the same wait lists (waitq.h) and the same rules:
**
** the items stay in the queue; a blocked get or put parks on a wait list
** and re-checks when woken (asyncio's Queue, Python 3.13 with shutdown);
** a waiter woken and then cancelled before it ran hands its wake-up on, so
** a cancelled get never swallows an item and a cancelled put inserts
** nothing.
*/
#include "waitq.h"

#define container_of(p, type, member) \
  ((type *)((char *)(p) - offsetof(type, member)))

typedef struct aio_queue_t {
  aio_waitq_t getters, putters, joiners;
  lua_Integer head, n, cap;   /* the ring: slots 1..cap of its table */
  lua_Integer maxsize;        /* 0: unbounded */
  lua_Integer unfinished;     /* items put and not yet task_done() */
  int shutdown;
} aio_queue_t;

/* every method is a closure over the core (1) and the ring table (2) */
#define CORE(L) ((aio_queue_t *)lua_touserdata(L, lua_upvalueindex(1)))
#define RING lua_upvalueindex(2)

static int shut_down(lua_State *L) {
  return aio__error(L, "QueueShutDown", 0, "the queue is shut down");
}

/* ---- the ring ---- */

/* full: double it in place (the table is shared by the closures), moving
** the wrapped part behind the old end */
static void ring_grow(lua_State *L, aio_queue_t *c) {
  lua_Integer i, cap = c->cap, wrapped = c->head - 1;
  for (i = cap + 1; i <= 2 * cap; i++) {
    lua_pushboolean(L, 0);
    lua_rawseti(L, RING, i);
  }
  for (i = 1; i <= wrapped; i++) {
    lua_rawgeti(L, RING, i);
    lua_rawseti(L, RING, cap + i);
    lua_pushboolean(L, 0);
    lua_rawseti(L, RING, i);
  }
  c->cap = 2 * cap;
}

/* append the value at idx */
static void push(lua_State *L, aio_queue_t *c, int idx) {
  lua_Integer i;
  if (c->n == c->cap) ring_grow(L, c);
  i = c->head + c->n;
  if (i > c->cap) i -= c->cap;
  lua_pushvalue(L, idx);
  lua_rawseti(L, RING, i);
  c->n++;
}

/* push the first item and take it out */
static void pop(lua_State *L, aio_queue_t *c) {
  lua_rawgeti(L, RING, c->head);
  lua_pushboolean(L, 0);  /* false keeps the slot in the array part */
  lua_rawseti(L, RING, c->head);
  c->head = c->head == c->cap ? 1 : c->head + 1;
  c->n--;
}

/* ---- lost wake-ups ---- */

static void getter_lost(lua_State *L, aio_waitq_t *q) {
  aio_queue_t *c = container_of(q, aio_queue_t, getters);
  (void)L;
  if (c->n > 0) aio__wq_wake(q, 1);
}

static void putter_lost(lua_State *L, aio_waitq_t *q) {
  aio_queue_t *c = container_of(q, aio_queue_t, putters);
  (void)L;
  if (c->maxsize == 0 || c->n < c->maxsize) aio__wq_wake(q, 1);
}

/* ---- put ---- */

static int put_k(lua_State *L, int status, lua_KContext ctx);

/* the item is at 2 */
static int put_body(lua_State *L, aio_queue_t *c) {
  if (c->maxsize > 0 && c->n >= c->maxsize) {
    aio_task *t;
    if (c->shutdown) return shut_down(L);
    t = aio__wait_begin(L, "aio.Queue.put");
    return aio__wq_park(L, t, &c->putters, put_k);
  }
  if (c->shutdown) return shut_down(L);
  push(L, c, 2);
  c->unfinished++;
  if (c->getters.nparked) aio__wq_wake(&c->getters, 1);
  return 0;
}

static int put_k(lua_State *L, int status, lua_KContext ctx) {
  aio_task *t = (aio_task *)ctx;
  aio_waitq_t *q = t->wait_data;  /* NULL if a cancel or deadline took it */
  (void)status;
  aio__wq_resumed(L, t);
  aio__wait_end(L);
  return put_body(L, q ? container_of(q, aio_queue_t, putters) : CORE(L));
}

/* q:put(v): wait while full */
static int q_put(lua_State *L) {
  if (lua_isnoneornil(L, 2))
    return luaL_error(L, "aio.Queue.put: nil items are refused");
  return put_body(L, CORE(L));
}

static int q_put_nowait(lua_State *L) {
  aio_queue_t *c = CORE(L);
  if (lua_isnoneornil(L, 2))
    return luaL_error(L, "aio.Queue.put_nowait: nil items are refused");
  if (c->shutdown) return shut_down(L);
  if (c->maxsize > 0 && c->n >= c->maxsize)
    return aio__error(L, "QueueFull", 0, "the queue is full");
  push(L, c, 2);
  c->unfinished++;
  if (c->getters.nparked) aio__wq_wake(&c->getters, 1);
  return 0;
}

/* ---- get ---- */

static int get_k(lua_State *L, int status, lua_KContext ctx);

static int get_body(lua_State *L, aio_queue_t *c) {
  if (c->n == 0) {
    aio_task *t;
    if (c->shutdown) return shut_down(L);
    t = aio__wait_begin(L, "aio.Queue.get");
    return aio__wq_park(L, t, &c->getters, get_k);
  }
  pop(L, c);
  if (c->putters.nparked) aio__wq_wake(&c->putters, 1);
  return 1;
}

static int get_k(lua_State *L, int status, lua_KContext ctx) {
  aio_task *t = (aio_task *)ctx;
  aio_waitq_t *q = t->wait_data;  /* NULL if a cancel or deadline took it */
  (void)status;
  aio__wq_resumed(L, t);
  aio__wait_end(L);
  return get_body(L, q ? container_of(q, aio_queue_t, getters) : CORE(L));
}

/* q:get(): wait while empty */
static int q_get(lua_State *L) {
  return get_body(L, CORE(L));
}

static int q_get_nowait(lua_State *L) {
  aio_queue_t *c = CORE(L);
  if (c->n == 0) {
    if (c->shutdown) return shut_down(L);
    return aio__error(L, "QueueEmpty", 0, "the queue is empty");
  }
  pop(L, c);
  if (c->putters.nparked) aio__wq_wake(&c->putters, 1);
  return 1;
}

/* ---- the rest ---- */

static int q_qsize(lua_State *L) {
  lua_pushinteger(L, CORE(L)->n);
  return 1;
}

static int q_empty(lua_State *L) {
  lua_pushboolean(L, CORE(L)->n == 0);
  return 1;
}

static int q_full(lua_State *L) {
  aio_queue_t *c = CORE(L);
  lua_pushboolean(L, c->maxsize > 0 && c->n >= c->maxsize);
  return 1;
}

static int q_task_done(lua_State *L) {
  aio_queue_t *c = CORE(L);
  if (c->unfinished <= 0)
    return luaL_error(L, "aio.Queue.task_done: called too many times "
                      "(more than items taken)");
  if (--c->unfinished == 0) aio__wq_wake(&c->joiners, c->joiners.nparked);
  return 0;
}

static int join_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  aio__wq_resumed(L, (aio_task *)ctx);
  aio__wait_end(L);
  return 0;
}

/* q:join(): as an asyncio.Event, a join woken by the count reaching zero
** returns even if more items came since */
static int q_join(lua_State *L) {
  aio_queue_t *c = CORE(L);
  aio_task *t;
  if (c->unfinished == 0) return 0;
  t = aio__wait_begin(L, "aio.Queue.join");
  lua_settop(L, 0);
  return aio__wq_park(L, t, &c->joiners, join_k);
}

/* q:shutdown([immediate]) */
static int q_shutdown(lua_State *L) {
  aio_queue_t *c = CORE(L);
  c->shutdown = 1;
  if (lua_toboolean(L, 2)) {
    while (c->n > 0) {
      pop(L, c);
      lua_pop(L, 1);
      if (c->unfinished > 0) c->unfinished--;
    }
    if (c->unfinished == 0) aio__wq_wake(&c->joiners, c->joiners.nparked);
  }
  aio__wq_wake(&c->getters, c->getters.nparked);
  aio__wq_wake(&c->putters, c->putters.nparked);
  return 0;
}

static int q_is_shutdown(lua_State *L) {
  lua_pushboolean(L, CORE(L)->shutdown);
  return 1;
}

static const luaL_Reg q_methods[] = {
  { "put", q_put },
  { "put_nowait", q_put_nowait },
  { "get", q_get },
  { "get_nowait", q_get_nowait },
  { "qsize", q_qsize },
  { "empty", q_empty },
  { "full", q_full },
  { "task_done", q_task_done },
  { "join", q_join },
  { "shutdown", q_shutdown },
  { "_is_shutdown", q_is_shutdown },
  { NULL, NULL }
};

/* fifo(q, maxsize): give the table q the methods of a FIFO queue */
static int l_fifo(lua_State *L) {
  aio_queue_t *c;
  const luaL_Reg *m;
  lua_Integer i;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 2);
  c = lua_newuserdatauv(L, sizeof *c, 0);          /* q max core */
  aio__wq_init(&c->getters, "aio.Queue.get", getter_lost);
  aio__wq_init(&c->putters, "aio.Queue.put", putter_lost);
  aio__wq_init(&c->joiners, "aio.Queue.join", NULL);
  c->head = 1;
  c->n = 0;
  c->cap = 4;
  c->maxsize = luaL_optinteger(L, 2, 0);
  if (c->maxsize < 0) c->maxsize = 0;
  c->unfinished = 0;
  c->shutdown = 0;
  lua_createtable(L, (int)c->cap, 0);              /* q max core ring */
  for (i = 1; i <= c->cap; i++) {
    lua_pushboolean(L, 0);
    lua_rawseti(L, -2, i);
  }
  for (m = q_methods; m->name; m++) {
    lua_pushvalue(L, 3);
    lua_pushvalue(L, 4);
    /* the waits are lean (sched.h): they push two values at most */
    if (m->func == q_get || m->func == q_put || m->func == q_join)
      aio__pushclosure_lean(L, m->func, 2);
    else
      lua_pushcclosure(L, m->func, 2);
    lua_setfield(L, 1, m->name);
  }
  return 0;
}

static const luaL_Reg funcs[] = {
  { "fifo", l_fifo },
  { NULL, NULL }
};

int luaopen__aio_queue(lua_State *L) {
  luaL_newlib(L, funcs);
  return 1;
}
