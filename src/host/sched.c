/*
** sched.c: tasks, futures, calls, the ready ring and the loop iteration.
** See sched.h for the model.  Lua code never runs from a backend callback:
** callbacks only push onto the ready ring; tasks are resumed here, from the
** thread that runs the loop, with lua_resume.
*/
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"
#include "sched.h"

#define container_of(p, type, member) \
  ((type *)((char *)(p) - offsetof(type, member)))

#define POLL_EVERY 64   /* ready passes between two non-blocking polls */
#define PREFETCH_KB (16 * 1024)  /* Lua heap from which the ring prefetches */

/* a hint to the CPU: start fetching the cache line of p.  (GCC 12 drops
** some __builtin_prefetch calls whose address comes from a load.) */
#if defined(__x86_64__) || defined(__i386__)
#define PREFETCH(p) __asm__ volatile("prefetcht0 %0" : : "m"(*(const char *)(p)))
#elif defined(__GNUC__)
#define PREFETCH(p) __builtin_prefetch(p)
#else
#define PREFETCH(p) ((void)(p))
#endif

void (*aio__prefetch_thread)(lua_State *L, int step, int ref);
lua_State *(*aio__newthread_lean)(lua_State *L, int slots);
void (*aio__pushlean)(lua_State *L, lua_CFunction f, int n, int slots);
int (*aio__poptbc)(lua_State *L);
const void *(*aio__udatamt)(lua_State *L, int idx);
void (*aio__setudatamt)(lua_State *L, int idx, const void *mt);

void aio__pushclosure_lean(lua_State *L, lua_CFunction f, int n) {
  if (aio__pushlean != NULL) aio__pushlean(L, f, n, AIO_LEAN_SLOTS);
  else lua_pushcclosure(L, f, n);
}

void aio__lean(lua_State *L, int idx, const char *const *names) {
  idx = lua_absindex(L, idx);
  for (; aio__pushlean != NULL && *names != NULL; names++) {
    lua_CFunction f;
    int n;
    lua_getfield(L, idx, *names);                      /* fn */
    f = lua_tocfunction(L, -1);
    if (f == NULL) {
      lua_pop(L, 1);
      continue;
    }
    for (n = 0; lua_getupvalue(L, -1 - n, n + 1) != NULL; n++)
      luaL_checkstack(L, 2, NULL);                     /* fn up1 .. upn */
    aio__pushlean(L, f, n, AIO_LEAN_SLOTS);            /* fn lean */
    lua_remove(L, -2);
    lua_setfield(L, idx, *names);
  }
}

void aio__name_methods(lua_State *L, int idx, const char *name) {
  idx = lua_absindex(L, idx);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, name) == LUA_TNIL) {
    lua_pushvalue(L, idx);
    lua_setfield(L, -3, name);
  }
  lua_pop(L, 2);
}

void aio__room(lua_State *L) {
  luaL_checkstack(L, LUA_MINSTACK, NULL);
}

static char rt_key;

/* the innermost loop running on this OS thread: a shortcut to the runtime
** for the common case, a waiting call made by a task on its own thread */
static __thread aio_sched *running;

struct aio_post {
  aio_post *next;
  aio_post_fn fn;
  void *ud;
};

static void settle(lua_State *L, int idx, aio_future *f);
static void step_from(lua_State *L, aio_sched *s, aio_task *t);

/* ====================================================================== */
/* the per-state runtime                                                  */
/* ====================================================================== */

aio_rt *aio__rt(lua_State *L) {
  aio_rt *rt;
  aio_sched *s = running;
  if (s != NULL && s->current != NULL && s->current->co == L) return s->rt;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &rt_key) == LUA_TUSERDATA) {
    rt = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return rt;
  }
  lua_pop(L, 1);
  rt = lua_newuserdatauv(L, sizeof *rt, 0);
  memset(rt, 0, sizeof *rt);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &rt_key);
  lua_newtable(L);
  rt->threads_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return rt;
}

/* see sched.h: which thread runs Lua code now, and where C code left the
** values of a completion */
lua_State *aio__sched_running(aio_sched *s, lua_State *dflt) {
  aio_task *t;
  if (s == NULL) return dflt;
  t = s->current;
  if (t == NULL || t->co == NULL) return s->L;
  return s->inner != NULL && s->inner_task == t ? s->inner : t->co;
}

lua_State *aio__sched_values(aio_sched *s, lua_State *dflt, int n) {
  lua_State *run = aio__sched_running(s, dflt);
  if (s != NULL && run != s->L && s->rL == dflt && n > 0 &&
      lua_gettop(dflt) >= s->rtop + n)
    return dflt;  /* pushed on the host's stack, above what the loop had */
  return run;
}

/* Which task runs on a thread that user code has seen (coroutine.running
** is the way to get one): a registry table keyed by the thread's address (a
** light userdata, so it keeps nothing alive); set when the thread is first
** exposed, cleared when the task releases it.  Threads nobody saw cannot be
** resumed by user code, so they need no entry. */
aio_task *aio__thread_task(lua_State *L, lua_State *co) {
  aio_task *t;
  lua_rawgeti(L, LUA_REGISTRYINDEX, aio__rt(L)->threads_ref);
  lua_rawgetp(L, -1, co);
  t = lua_touserdata(L, -1);
  lua_pop(L, 2);
  return t;
}

void aio__thread_task_set(lua_State *L, lua_State *co, aio_task *t) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, aio__rt(L)->threads_ref);
  if (t) lua_pushlightuserdata(L, t);
  else lua_pushnil(L);
  lua_rawsetp(L, -2, co);
  lua_pop(L, 1);
}

static int mtref(lua_State *L, const char *name, const void **p) {
  luaL_getmetatable(L, name);
  if (p) *p = lua_topointer(L, -1);
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

void aio__rt_metatables(lua_State *L) {
  aio_rt *rt = aio__rt(L);
  rt->task_mt = mtref(L, AIO_TASK_MT, &rt->task_mtp);
  rt->future_mt = mtref(L, AIO_FUTURE_MT, &rt->future_mtp);
  rt->call_mt = mtref(L, AIO_CALL_MT, &rt->call_mtp);
  rt->watch_mt = mtref(L, AIO_WATCH_MT, &rt->watch_mtp);
}

/* the userdata on top gets the metatable kept at registry slot ref, whose
** pointer is mtp: set by pointer when the Lua can (lua_udata.patch) */
void aio__setmt(lua_State *L, int ref, const void *mtp) {
  if (aio__setudatamt != NULL) {
    aio__setudatamt(L, -1, mtp);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  lua_setmetatable(L, -2);
}

/* aio__rt(L), with its shortcut inlined: on the wait and await paths L is
** nearly always the running task's own thread */
static inline aio_rt *rt_of(lua_State *L) {
  aio_sched *s = running;
  if (s != NULL && s->current != NULL && s->current->co == L) return s->rt;
  return aio__rt(L);
}

static inline aio_sched *sched_of(lua_State *L) {
  return rt_of(L)->sched;
}

/* which of ours the userdata at idx is: 1 task, 2 future, 0 neither */
static int ourkind(lua_State *L, int idx, aio_rt *rt) {
  const void *mt;
  if (aio__udatamt != NULL) {
    mt = aio__udatamt(L, idx);
  } else {
    if (lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx))
      return 0;
    mt = lua_topointer(L, -1);
    lua_pop(L, 1);
  }
  if (mt == NULL) return 0;
  return mt == rt->task_mtp ? 1 : mt == rt->future_mtp ? 2 : 0;
}

aio_task *aio__totask(lua_State *L, int idx) {
  return ourkind(L, idx, aio__rt(L)) == 1 ? lua_touserdata(L, idx) : NULL;
}

/* "file:line: " of the first Lua caller outside aio's own modules (their
** chunks are named "@aio.lua" and "@aio.x.lua"), so a misuse reached
** through a Lua wrapper such as aio.open_connection names the user's line */
static void where_user(lua_State *L) {
  lua_Debug ar;
  for (int level = 1; lua_getstack(L, level, &ar); level++) {
    lua_getinfo(L, "Sl", &ar);
    if (ar.currentline <= 0) continue;  /* a C function */
    if (strncmp(ar.source, "@aio.", 5) == 0) continue;
    lua_pushfstring(L, "%s:%d: ", ar.short_src, ar.currentline);
    return;
  }
  lua_pushliteral(L, "");
}

int aio__user_error(lua_State *L, const char *fmt, ...) {
  va_list ap;
  where_user(L);
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_concat(L, 2);
  return lua_error(L);
}

static aio_sched *sched_check(lua_State *L, const char *fname) {
  aio_sched *s = sched_of(L);
  if (s == NULL)
    aio__user_error(L, "%s: no running loop (call it inside aio.run or a "
                    "task)", fname);
  return s;
}

aio_sched *aio__sched_check(lua_State *L, const char *fname) {
  return sched_check(L, fname);
}

/* ====================================================================== */
/* the ready ring                                                         */
/* ====================================================================== */

/* Each live task is in the ring at most once, and so is each scheduled
** call, so a ring as large as both counts never overflows: it is grown
** where tasks and calls are made (where an error may be raised), and a
** push, which runs in backend callbacks, never allocates. */
static void ring_reserve(lua_State *L, aio_sched *s, uint32_t need) {
  uint32_t cap, i;
  void **v;
  if (need <= s->rcap) return;
  cap = s->rcap ? s->rcap : 64;
  while (cap < need) cap *= 2;
  v = malloc(cap * sizeof *v);
  if (v == NULL) luaL_error(L, "not enough memory");
  for (i = 0; i < s->rcount; i++)
    v[i] = s->ring[(s->rhead + i) & (s->rcap - 1)];
  free(s->ring);
  s->ring = v;
  s->rhead = 0;
  s->rcap = cap;
}

static void ring_push(aio_sched *s, void *p) {
  s->ring[(s->rhead + s->rcount) & (s->rcap - 1)] = p;
  s->rcount++;
}

static void *ring_pop(aio_sched *s) {
  void *p = s->ring[s->rhead];
  s->rhead = (s->rhead + 1) & (s->rcap - 1);
  s->rcount--;
  return p;
}

/* While one entry of the ring runs, start the cache misses of the entries
** behind it.  A task that slept long has nothing in cache, and resuming it
** reads its record, its thread, a stack slot and its closure, each address
** known only from the one before, and when it ends, its registry slot:
** about 1.2 us a task with 200,000 asleep (bench C3).  Here those reads
** begin a few entries ahead, one stage per entry, so that the misses of
** several tasks overlap: the record (with its userdata header) 8 entries
** ahead, the thread 6 ahead, its stack and registry slot 4 ahead, its
** closure 2 ahead.  Only when the Lua heap is over PREFETCH_KB: in a
** smaller one most of what the tasks touch stays in the cache, and the
** prefetches cost more than they save (measured, tasks taking turns at
** aio.sleep(0): 20 tasks 9 % faster without them, 200,000 tasks 12 %
** faster with them). */
static void ring_prefetch(aio_sched *s) {
  void (*pf)(lua_State *, int, int) = aio__prefetch_thread;
  uint32_t k;
  if (s->rcount > 8) {
    char *q = s->ring[(s->rhead + 8) & (s->rcap - 1)];
    PREFETCH(q - 48);  /* Lua's header of the userdata */
    PREFETCH(q);
    PREFETCH(q + 64);
    PREFETCH(q + sizeof(aio_task) - 1);
  }
  if (pf == NULL) return;
  for (k = 2; k <= 6; k += 2) {
    aio_task *t;
    if (s->rcount <= k) break;
    t = s->ring[(s->rhead + k) & (s->rcap - 1)];
    if (t->fut.kind == AIO_K_TASK && t->co != NULL)
      pf(t->co, 3 - k / 2, t->ref);
  }
}

/* room in the ring for every task and call there may be, plus one */
static void ring_reserve_one(lua_State *L, aio_sched *s) {
  ring_reserve(L, s, (uint32_t)(s->ntasks + s->ncalls) + 1);
}

/* ====================================================================== */
/* futures                                                                */
/* ====================================================================== */

static void waiters_init(aio_waiter *w) { w->prev = w->next = w; }

static void waiter_unlink(aio_waiter *w) {
  if (w->next == NULL) return;
  w->prev->next = w->next;
  w->next->prev = w->prev;
  w->prev = w->next = NULL;
}

void aio__future_init(aio_future *f, int kind) {
  memset(f, 0, sizeof *f);
  f->kind = (uint8_t)kind;
  f->state = AIO_PENDING;
  waiters_init(&f->waiters);
}

aio_future *aio__future_new(lua_State *L) {
  aio_rt *rt = aio__rt(L);
  aio_pfuture *pf = lua_newuserdatauv(L, sizeof *pf, 1);
  aio_future *f = &pf->f;
  aio__future_init(f, AIO_K_FUTURE);
  pf->cref = LUA_NOREF;
  pf->cL = NULL;
  aio__setmt(L, rt->future_mt, rt->future_mtp);
  return f;
}

aio_future *aio__checkfuture(lua_State *L, int idx) {
  if (ourkind(L, idx, rt_of(L)) == 0)
    luaL_typeerror(L, idx, "aio.Future or aio.Task");
  return lua_touserdata(L, idx);
}

/* the registry table of extras: weak keys, so an entry goes with its
** future (after the future's finaliser has run: report_failure reads it) */
static char extras_key;

int aio__weak_registry(lua_State *L, const void *key, int make) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) == LUA_TTABLE) return 1;
  lua_pop(L, 1);
  if (!make) return 0;
  lua_createtable(L, 0, 4);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, key);
  return 1;
}

void aio__extras(lua_State *L, int idx) {
  aio_future *f = lua_touserdata(L, idx);
  idx = lua_absindex(L, idx);
  aio__weak_registry(L, &extras_key, 1);
  if (!(f->flags & AIO_F_EXTRAS) ||
      (lua_pushvalue(L, idx), lua_rawget(L, -2)) != LUA_TTABLE) {
    if (f->flags & AIO_F_EXTRAS) lua_pop(L, 1);
    lua_createtable(L, 0, 2);
    lua_pushvalue(L, idx);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
    f->flags |= AIO_F_EXTRAS;
  }
  lua_remove(L, -2);
}

/* A failed task (in debug mode, a failed future too) whose error nobody
** retrieves is reported when it is collected, by a finaliser.  Setting a
** metatable with __gc on the object itself, as this once did, makes Lua
** move it to the list of objects to finalise, and Lua finds it by walking
** its list of all objects from the newest: past everything made since the
** task was, for each failure (6,000 failures among 30,000 tasks took 13 s
** of CPU).  The finaliser is a watcher's instead, a new object (found at
** once): a userdata with the failed one as its user value, in the failed
** one's extras (under a key of its own: a task's fields live there too).
** When the failed one becomes garbage so does its watcher, whose __gc then
** reports the failure (the collector keeps what the watcher refers to, and
** the extras with it, until the next cycle). */
static char watch_key;

static void watch_failure(lua_State *L, int idx) {
  aio_rt *rt = aio__rt(L);
  idx = lua_absindex(L, idx);
  aio__extras(L, idx);                                  /* extras */
  lua_newuserdatauv(L, 0, 1);                           /* extras w */
  lua_pushvalue(L, idx);
  lua_setiuservalue(L, -2, 1);
  aio__setmt(L, rt->watch_mt, rt->watch_mtp);
  lua_rawsetp(L, -2, &watch_key);
  lua_pop(L, 1);
}

static void report_failure(lua_State *L, int idx);

static int watch_gc(lua_State *L) {
  aio_future *f;
  lua_getiuservalue(L, 1, 1);
  f = lua_touserdata(L, 2);
  if (f == NULL || !(f->flags & AIO_F_UNRETRIEVED)) return 0;
  if (f->kind == AIO_K_TASK) {
    report_failure(L, 2);
  } else {  /* debug mode: a failed future nobody looked at */
    f->flags &= ~AIO_F_UNRETRIEVED;
    lua_getiuservalue(L, 2, 1);
    fprintf(stderr, "aiolua: debug: a Future was collected with an error "
            "nobody retrieved: %s\n", aio__tostring(L, -1));
    fflush(stderr);
  }
  return 0;
}

void aio__watch_open(lua_State *L) {
  luaL_newmetatable(L, AIO_WATCH_MT);
  lua_pushcfunction(L, watch_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
}

/* push the results of the future (or task) f at idx, or raise its error */
static int results(lua_State *L, int idx, aio_future *f) {
  int i, n;
  f->flags &= ~AIO_F_UNRETRIEVED;
  switch (f->state) {
    case AIO_PENDING:
      return aio__error(L, "InvalidStateError", 0, "result is not set yet");
    case AIO_RESULT:
      n = f->nres;
      if (n == 0) return 0;
      lua_getiuservalue(L, idx, 1);
      if (n == 1) return 1;
      luaL_checkstack(L, n, "too many results");
      for (i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
      lua_remove(L, -n - 1);
      return n;
    default:
      lua_getiuservalue(L, idx, 1);
      return lua_error(L);
  }
}

int aio__future_results(lua_State *L, int idx) {
  aio_future *f = aio__checkfuture(L, idx);
  return results(L, lua_absindex(L, idx), f);
}

int aio__future_complete(lua_State *L, int idx, int state, int n) {
  aio_future *f = lua_touserdata(L, idx);
  int i;
  idx = lua_absindex(L, idx);
  if (f->state != AIO_PENDING) {
    lua_pop(L, n);
    return 0;
  }
  if (state == AIO_RESULT && n != 1) {
    if (n == 0) {
      lua_pushnil(L);
    } else {
      lua_createtable(L, n, 0);
      lua_insert(L, -n - 1);
      for (i = n; i >= 1; i--) lua_rawseti(L, -i - 1, i);
    }
  }
  lua_setiuservalue(L, idx, 1);
  f->state = (uint8_t)state;
  f->nres = state == AIO_RESULT ? n : 0;
  if (state == AIO_ERROR && f->kind == AIO_K_FUTURE) {
    aio_rt *rt = aio__rt(L);
    if (rt->sched && rt->sched->debug) {  /* warn if collected unread */
      f->flags |= AIO_F_UNRETRIEVED;
      watch_failure(L, idx);
    }
  }
  settle(L, idx, f);
  return 1;
}

/* schedule(future, sched): the done future's callbacks as calls, in order */
static int schedule_callbacks(lua_State *L) {
  aio_sched *s = lua_touserdata(L, 2);
  lua_Integer i, n;
  lua_settop(L, 2);
  aio__extras(L, 1);                               /* fut s ex */
  if (lua_getfield(L, 3, "callbacks") == LUA_TTABLE) {
    lua_getfield(L, 3, "cbcontexts");              /* ... cbs ctxs|nil */
    n = (lua_Integer)lua_rawlen(L, 4);
    for (i = 1; i <= n; i++) {
      if (!lua_istable(L, 5) || lua_rawgeti(L, 5, i) != LUA_TTABLE) {
        lua_settop(L, 5);
        lua_pushnil(L);
      }                                            /* ... ctx|nil */
      lua_rawgeti(L, 4, i);
      lua_pushvalue(L, 1);                         /* ... ctx cb fut */
      aio__call_at(L, s, 1, -1, lua_istable(L, 6) ? 6 : 0);
      lua_settop(L, 5);
    }
  }
  lua_settop(L, 3);
  lua_pushnil(L);
  lua_setfield(L, 3, "callbacks");
  lua_pushnil(L);
  lua_setfield(L, 3, "cbcontexts");
  return 0;
}

/* the done future at idx: schedule its callbacks, then wake everybody
** awaiting it.  asyncio runs both in the order they were registered (an
** awaiting task's wake-up is one of the callbacks); here the callbacks
** go first, so a callback added before an await has run when the await
** returns (t:add_done_callback(cb); t:await()), as in asyncio; a callback
** added after a task began to wait runs before that task too, where
** asyncio would run it after.  Scheduling them allocates, so it runs
** protected: when it fails (memory), the awaiting tasks are still woken,
** then the error goes on. */
static void settle(lua_State *L, int idx, aio_future *f) {
  int failed = 0;
  if (f->flags & AIO_F_CALLBACKS) {
    aio_sched *s = f->kind == AIO_K_TASK ? ((aio_task *)f)->sched
                                         : aio__rt(L)->sched;
    f->flags &= ~AIO_F_CALLBACKS;
    if (s != NULL && !s->closed) {  /* else no loop will ever run them */
      luaL_checkstack(L, 4, NULL);
      lua_pushcfunction(L, schedule_callbacks);
      lua_pushvalue(L, idx);
      lua_pushlightuserdata(L, s);
      failed = lua_pcall(L, 2, 0, 0) != LUA_OK;
    }
  }
  while (f->waiters.next != &f->waiters) {
    aio_waiter *w = f->waiters.next;
    aio_task *t = container_of(w, aio_task, wnode);
    waiter_unlink(w);
    aio__wake(t);
  }
  if (failed) lua_error(L);  /* the error is on top */
}

/* ====================================================================== */
/* waiting                                                                */
/* ====================================================================== */

/* raise the task's pending CancelledError (kept in its extras) */
static int raise_cancel(lua_State *L, aio_task *t) {
  aio__room(L);  /* from lean functions too */
  t->tflags &= ~T_CANCEL_PENDING;
  aio__push_task(L, t);
  aio__extras(L, -1);
  if (lua_getfield(L, -1, "cancel_error") == LUA_TNIL) {
    lua_pop(L, 1);
    aio__pusherror(L, "CancelledError", 0, "cancelled");
  }
  lua_pushnil(L);
  lua_setfield(L, -3, "cancel_error");
  return lua_error(L);
}

/* the detail functions: a handful, set as the bindings open (the same
** ones each time, whichever state opens them) */
#define WAIT_DETAILS 16
static struct { const char *what; aio_wait_detail fn; } details[WAIT_DETAILS];

static pthread_mutex_t details_lock = PTHREAD_MUTEX_INITIALIZER;

/* (under a lock: to_thread workers may open the bindings meanwhile) */
void aio__wait_detail_set(const char *what, aio_wait_detail fn) {
  pthread_mutex_lock(&details_lock);
  for (int i = 0; i < WAIT_DETAILS; i++) {
    if (details[i].what != NULL && strcmp(details[i].what, what) == 0) break;
    if (details[i].what == NULL) {
      details[i].fn = fn;
      details[i].what = what;
      break;
    }
  }
  pthread_mutex_unlock(&details_lock);
}

void aio__push_addr_label(lua_State *L, const char *prefix,
                          const aio_addr *a) {
  if (a->family == AIO_AF_UNIX)
    lua_pushfstring(L, "%s%s", prefix, a->host);
  else if (a->family == AIO_AF_INET6)
    lua_pushfstring(L, "%s[%s]:%d", prefix, a->host, a->port);
  else
    lua_pushfstring(L, "%s%s:%d", prefix, a->host, a->port);
}

int aio__wait_detail(lua_State *L, aio_task *t) {
  aio_wait_detail fn = NULL;
  if (t->state != T_PARKED || t->wait_what == NULL || t->wait_data == NULL)
    return 0;
  pthread_mutex_lock(&details_lock);
  for (int i = 0; i < WAIT_DETAILS && details[i].what != NULL; i++)
    if (strcmp(details[i].what, t->wait_what) == 0) {
      fn = details[i].fn;
      break;
    }
  pthread_mutex_unlock(&details_lock);
  return fn ? fn(L, t) : 0;
}

aio_task *aio__wait_begin(lua_State *L, const char *fname) {
  aio_sched *s = sched_check(L, fname);
  aio_task *t = s->current;
  if (t == NULL && s->closing != NULL)
    luaL_error(L, "%s: cannot wait here: a <close> variable closed after an "
               "error the task did not catch cannot wait under a stock Lua "
               "5.4 (the aiolua program's can; catch the error with pcall)",
               fname);
  if (t == NULL) luaL_error(L, "%s: " AIO_NOT_IN_TASK, fname);
  if (!lua_isyieldable(L)) luaL_error(L, "%s: " AIO_CANNOT_WAIT, fname);
  t->tflags &= ~T_TIMEDOUT;
  if (t->tflags & T_CANCEL_PENDING) raise_cancel(L, t);
  return t;
}

int aio__park(lua_State *L, aio_task *t, aio_cleanup cleanup, void *data,
              const char *what, lua_KContext ctx, lua_KFunction k) {
  t->cleanup = cleanup;
  t->wait_data = data;
  t->wait_what = what;
  t->wait_L = L;  /* t->co, or a coroutine the task runs (task:stack) */
  t->state = T_PARKED;
  return lua_yieldk(L, 0, ctx, k);
}

int aio__park_real(lua_State *L, aio_task *t, aio_cleanup cleanup, void *data,
                   const char *what, lua_KContext ctx, lua_KFunction k) {
  if (!(t->tflags & T_REALWAIT)) {
    t->tflags |= T_REALWAIT;
    t->sched->nrealwait++;
  }
  return aio__park(L, t, cleanup, data, what, ctx, k);
}

static void realwait_end(aio_task *t) {
  if (t->tflags & T_REALWAIT) {
    t->tflags &= ~T_REALWAIT;
    t->sched->nrealwait--;
  }
}

aio_task *aio__wait_end(lua_State *L) {
  aio_task *t = sched_of(L)->current;
  realwait_end(t);
  t->wait_what = NULL;
  if (t->tflags & T_CANCEL_PENDING) raise_cancel(L, t);
  return t;
}

void aio__wait_abort(lua_State *L) {
  aio_sched *s = aio__rt(L)->sched;
  aio_task *t = s ? s->current : NULL;
  if (t == NULL) return;
  if (t->state == T_PARKED && t->cleanup) t->cleanup(t);
  t->cleanup = NULL;
  t->wait_what = NULL;
  realwait_end(t);
  t->state = T_RUNNING;
}

void aio__wake(aio_task *t) {
  if (t->state != T_PARKED) return;
  t->cleanup = NULL;
  t->state = T_READY;
  ring_push(t->sched, t);
}

static void sleep_cleanup(aio_task *t) {
  aio__heap_remove(&t->sched->timers, &t->timer);
}

/* ctx 1: the value at 1 is the sleep's result (asyncio's sleep(d, result)) */
static int sleep_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  aio__wait_end(L);
  if (ctx) {
    lua_settop(L, 1);
    return 1;
  }
  return 0;
}

int aio__sleep(lua_State *L, double delay, int result) {
  aio_task *t = aio__wait_begin(L, "aio.sleep");
  if (!(delay > 0)) {  /* 0, negative or NaN: just let the others run */
    t->state = T_READY;  /* step() queues it once the yield is through */
    t->wait_what = "sleep";
    return lua_yieldk(L, 0, result, sleep_k);
  }
  {
    /* the due time rounded up so that, woken at it, aio.now() - t0 is at
    ** least `delay` for a t0 read at the call: (t0 + d) - t0 may round
    ** one ulp below d (a virtual clock jumps exactly to the due time) */
    double now = aio__now(t->sched), due = now + delay;
    while (due - now < delay && due < HUGE_VAL) due = nextafter(due, HUGE_VAL);
    if (aio__heap_add(&t->sched->timers, &t->timer, due))
      return luaL_error(L, "not enough memory");
  }
  return aio__park(L, t, sleep_cleanup, NULL, "sleep", result, sleep_k);
}

static void await_cleanup(aio_task *t) {
  waiter_unlink(&t->wnode);
}

static int await_k(lua_State *L, int status, lua_KContext ctx);

/* As asyncio's Task.cancel: t's pending cancel goes on to f, the future at
** fidx that t awaits: a future ends cancelled with the request's message, a
** task gets the request itself.  L's top is left as it was. */
static void pass_cancel(lua_State *L, aio_task *t, int fidx) {
  aio_future *f = lua_touserdata(L, fidx);
  int top = lua_gettop(L);
  aio__push_task(L, t);
  aio__extras(L, -1);
  lua_getfield(L, -1, "cancel_error");
  if (lua_istable(L, -1)) lua_getfield(L, -1, "message");
  else lua_pushnil(L);                           /* task extras err msg */
  if (f->kind == AIO_K_TASK) {
    aio__task_cancel(L, (aio_task *)f, lua_gettop(L));
  } else {
    const char *m = lua_tostring(L, -1);
    aio__pusherror(L, "CancelledError", 0, "%s", m ? m : "cancelled");
    aio__future_complete(L, fidx, AIO_CANCELLED, 1);
  }
  lua_settop(L, top);
}

/* t's request went on to the task it awaits: t waits on for that task's
** outcome, its CancelledError or the value it returned if it caught the
** cancel (cancelling() still counts the request) */
static void drop_cancel(lua_State *L, aio_task *t) {
  t->tflags &= ~T_CANCEL_PENDING;
  aio__push_task(L, t);
  aio__extras(L, -1);
  lua_pushnil(L);
  lua_setfield(L, -2, "cancel_error");
  lua_pop(L, 2);
}

/* park t until f (at idx) is done, linked at the tail: waiters wake in the
** order they came */
static int park_on(lua_State *L, aio_task *t, aio_future *f, int idx) {
  t->wnode.next = &f->waiters;
  t->wnode.prev = f->waiters.prev;
  f->waiters.prev->next = &t->wnode;
  f->waiters.prev = &t->wnode;
  /* (t->wait_L, set by aio__park: idx is its top, where cancel_awaited
  ** takes f from) */
  return aio__park(L, t, await_cleanup, f, f->kind == AIO_K_TASK ? "task"
                   : "future", idx, await_k);
}

static int await_k(lua_State *L, int status, lua_KContext ctx) {
  aio_task *t = sched_of(L)->current;
  int idx = (int)ctx;
  aio_future *f = lua_touserdata(L, idx);
  (void)status;
  if (t->tflags & T_CANCEL_CYCLE) {
    t->tflags &= ~T_CANCEL_CYCLE;  /* raised below, not passed on */
  } else if ((t->tflags & T_CANCEL_PENDING) && f->state == AIO_PENDING) {
    /* as asyncio: cancelling the awaiting task cancels what it awaits
    ** (aio.shield stands between them when that is not wanted); a request
    ** made while this task was ready, or too deep in a chain of awaits
    ** for aio__task_cancel to pass on at once */
    aio__room(L);  /* await is lean */
    lua_settop(L, idx);
    pass_cancel(L, t, idx);
    if (f->kind == AIO_K_TASK) {
      drop_cancel(L, t);
      return park_on(L, t, f, idx);
    }
  }
  aio__wait_end(L);
  return results(L, idx, f);
}

int aio__await(lua_State *L, int idx) {
  aio_future *f = aio__checkfuture(L, idx);
  aio_task *t;
  idx = lua_absindex(L, idx);
  if (f->state != AIO_PENDING) return results(L, idx, f);
  t = aio__wait_begin(L, "await");
  if (&t->fut == f) return luaL_error(L, "await: a task cannot await itself");
  lua_settop(L, idx);
  return park_on(L, t, f, idx);
}

/* ====================================================================== */
/* tasks                                                                  */
/* ====================================================================== */

void aio__push_task(lua_State *L, aio_task *t) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
}

/* A task's registry slot: luaL_ref and luaL_unref cost five or so table
** operations each (their free list lives in the registry too).  Ours keeps
** its head in the runtime: a free slot holds the index of the next, as
** luaL's do, on a chain of its own; a slot, once a task's, stays a task
** slot for the life of the Lua state.  With none free, a new slot is the
** one after the registry's border, as luaL_ref takes it, except the slot
** luaL_ref itself keeps (LUA_RIDX_LAST + 1, from Lua 5.4.3; aio__rt made
** a ref long before).  Never a nil is left in the registry, so that border
** stays its end.  task_ref pops the task. */
static int task_ref(lua_State *L, aio_rt *rt) {
  int ref = rt->task_free;
  if (ref == 0) {
    ref = (int)lua_rawlen(L, LUA_REGISTRYINDEX) + 1;
    if (ref <= LUA_RIDX_LAST + 1) return luaL_ref(L, LUA_REGISTRYINDEX);
    lua_rawseti(L, LUA_REGISTRYINDEX, ref);
    return ref;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  rt->task_free = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  lua_rawseti(L, LUA_REGISTRYINDEX, ref);
  return ref;
}

/* the slot exists, so this never allocates (never raises) */
static void task_unref(lua_State *L, aio_rt *rt, aio_task *t) {
  lua_pushinteger(L, rt->task_free);
  lua_rawseti(L, LUA_REGISTRYINDEX, t->ref);
  rt->task_free = t->ref;
  t->ref = LUA_NOREF;
}

/* Live tasks are anchored in the registry itself (one lookup to push one),
** among everybody's references: the rare walks over all of them pick
** theirs out by metatable, loop and slot. */
void aio__push_tasks(lua_State *L, aio_sched *s) {
  aio_rt *rt = aio__rt(L);
  lua_Integer i, n, k = 0;
  lua_createtable(L, s->ntasks > 0 ? s->ntasks : 0, 0);
  n = (lua_Integer)lua_rawlen(L, LUA_REGISTRYINDEX);
  for (i = 1; i <= n; i++) {
    if (lua_rawgeti(L, LUA_REGISTRYINDEX, i) == LUA_TUSERDATA &&
        ourkind(L, -1, rt) == 1) {
      aio_task *t = lua_touserdata(L, -1);
      if (t->sched == s && t->ref == i) {
        lua_rawseti(L, -2, ++k);
        continue;
      }
    }
    lua_pop(L, 1);
  }
}

/* ---- context (aio.ContextVar) ---- */

/* registry[&cbctx_key]: the context of the callback running now (nil when
** none), the copy made when it was scheduled: as asyncio's Handle runs in
** the copy_context() taken by call_soon or add_done_callback */
static char cbctx_key;

/* whether what runs now may have a context with values in it: not before
** any aio.ContextVar was used, and a task only once it has its extras (the
** test spawn and call_soon pay) */
static int may_have_context(const aio_sched *s) {
  return s == NULL || (s->rt->context_used &&
         (s->current == NULL || (s->current->fut.flags & AIO_F_EXTRAS)));
}

/* push the context table of what runs now: the current task's, else the
** running callback's, else the Lua state's own; 0 with nothing pushed when
** there is none (and !make) */
static int push_context(lua_State *L, aio_sched *s, int make) {
  aio_task *t = s ? s->current : NULL;
  if (t != NULL && t->ref != LUA_NOREF) {
    aio__push_task(L, t);
    aio__extras(L, -1);
    lua_remove(L, -2);
    if (make) luaL_getsubtable(L, -1, "context");
    else if (lua_getfield(L, -1, "context") != LUA_TTABLE) {
      lua_pop(L, 2);
      return 0;
    }
    lua_remove(L, -2);
    return 1;
  }
  if (t == NULL) {
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &cbctx_key) == LUA_TTABLE) return 1;
    lua_pop(L, 1);
  }
  if (make) {
    luaL_getsubtable(L, LUA_REGISTRYINDEX, "aio.context");
    return 1;
  }
  if (lua_getfield(L, LUA_REGISTRYINDEX, "aio.context") == LUA_TTABLE)
    return 1;
  lua_pop(L, 1);
  return 0;
}

void aio__context(lua_State *L, aio_sched *s) {
  luaL_checkstack(L, 4, NULL);
  push_context(L, s, 1);
}

int aio__context_copy(lua_State *L, aio_sched *s) {
  if (!may_have_context(s)) return 0;
  luaL_checkstack(L, 6, NULL);
  if (!push_context(L, s, 0)) return 0;
  lua_pushnil(L);
  if (!lua_next(L, -2)) {  /* empty: as good as none */
    lua_pop(L, 1);
    return 0;
  }
  lua_pop(L, 2);
  lua_newtable(L);
  lua_pushnil(L);
  while (lua_next(L, -3)) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, -4);
  }
  lua_remove(L, -2);
  return 1;
}

/* What a new task (at idx) takes from what spawns it: a copy of the
** context (aio.ContextVar values) and, in debug mode, where it was spawned. */
static void inherit(lua_State *L, aio_sched *s, int idx) {
  if (may_have_context(s) && aio__context_copy(L, s)) {
    aio__extras(L, idx);
    lua_insert(L, -2);
    lua_setfield(L, -2, "context");
    lua_pop(L, 1);
  }
  if (s->debug) {
    aio__extras(L, idx);
    luaL_traceback(L, L, "spawned at", 1);
    lua_setfield(L, -2, "spawned_at");
    lua_pop(L, 1);
  }
}

static aio_task *make_task(lua_State *L, aio_sched *s, int nargs) {
  int fi = lua_gettop(L) - nargs, i;
  aio_task *t;
  if (s->closed) luaL_error(L, "aio.spawn: the loop is closed");
  ring_reserve_one(L, s);
  t = lua_newuserdatauv(L, sizeof *t, 1 + nargs);
  memset(t, 0, sizeof *t);
  aio__future_init(&t->fut, AIO_K_TASK);
  t->sched = s;
  t->timer.kind = AIO_K_TASK;
  t->ref = LUA_NOREF;
  t->id = ++s->rt->next_id;
  t->state = T_NEW;
  t->nargs = (uint16_t)nargs;
  aio__setmt(L, s->rt->task_mt, s->rt->task_mtp);
  lua_insert(L, fi);                       /* task fn args */
  for (i = nargs; i >= 1; i--) lua_setiuservalue(L, fi, 1 + i);
  lua_setiuservalue(L, fi, 1);             /* task */
  lua_pushvalue(L, fi);
  t->ref = task_ref(L, s->rt);
  s->ntasks++;
  inherit(L, s, fi);
  return t;
}

aio_task *aio__spawn(lua_State *L, aio_sched *s, int nargs) {
  aio_task *t = make_task(L, s, nargs);
  ring_push(s, t);
  return t;
}

aio_task *aio__spawn_eager(lua_State *L, aio_sched *s, int nargs) {
  aio_task *t = make_task(L, s, nargs);
  step_from(L, s, t);
  return t;
}

static int tolstring(lua_State *L) {
  luaL_tolstring(L, 1, NULL);
  return 1;
}

/* the CancelledError to deliver: the value at msgindex when it is one,
** else a new one with tostring(msg) as its message (asyncio: str(msg));
** stored in the task's extras */
static void set_cancel_error(lua_State *L, aio_task *t, int msgindex) {
  aio__push_task(L, t);
  aio__extras(L, -1);
  if (msgindex && aio__errtype(L, msgindex) != NULL &&
      strcmp(aio__errtype(L, msgindex), "CancelledError") == 0) {
    lua_pushvalue(L, msgindex);
  } else if (msgindex && !lua_isnil(L, msgindex)) {
    lua_pushcfunction(L, tolstring);
    lua_pushvalue(L, msgindex);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_isstring(L, -1)) {
      lua_pop(L, 1);
      aio__tostring(L, msgindex);  /* __tostring raised: lua.c's wording */
    }
    aio__pusherror(L, "CancelledError", 0, "%s", lua_tostring(L, -1));
    lua_remove(L, -2);
  } else {
    aio__pusherror(L, "CancelledError", 0, "cancelled");
  }
  lua_setfield(L, -2, "cancel_error");
  lua_pop(L, 2);
}

/* As asyncio's Task.cancel: what a parked task awaits is cancelled at
** once, with the request's message, not when the task runs next (by then
** another task could have completed it, or seen it pending).  A future
** ends cancelled, which wakes the task with the pending CancelledError;
** a task gets the request, and the awaiting one waits on for its outcome
** (await_k, which also covers a request made while the task was ready). */
static int cancel_awaited(lua_State *L, aio_task *t) {
  aio_future *f = t->wait_data;
  int top = lua_gettop(L);
  /* room for ours (5) and, passed on to a task, its aio__task_cancel's
  ** (set_cancel_error, future completion) */
  if (f->state != AIO_PENDING || !lua_checkstack(L, LUA_MINSTACK + 8)) return 0;
  if (lua_gettop(t->wait_L) < 1) return 0;  /* (its thread was closed) */
  lua_pushvalue(t->wait_L, lua_gettop(t->wait_L));
  if (lua_touserdata(t->wait_L, -1) != (void *)f) {  /* cannot be */
    lua_pop(t->wait_L, 1);
    return 0;
  }
  lua_xmove(t->wait_L, L, 1);                      /* fut */
  pass_cancel(L, t, top + 1);
  /* (not parked any more: a cycle of awaits cancelled it back, and it
  ** raises at its wait) */
  if (f->kind == AIO_K_TASK && t->state == T_PARKED) drop_cancel(L, t);
  lua_settop(L, top);
  return 1;
}

int aio__task_cancel(lua_State *L, aio_task *t, int msgindex) {
  if (t->fut.state != AIO_PENDING) return 0;
  if (msgindex) msgindex = lua_absindex(L, msgindex);
  t->ncancel++;
  /* a second request before the first reached the task keeps the first's
  ** message, as asyncio does (the waiter it cancelled carries it) */
  if (!(t->tflags & T_CANCEL_PENDING)) set_cancel_error(L, t, msgindex);
  t->tflags |= T_CANCEL_PENDING;
  if (t->state == T_PARKED && t->cleanup == await_cleanup &&
      !(t->tflags & T_CANCEL_BUSY) && t->sched->cancel_depth < 10000) {
    /* (busy: tasks awaiting each other in a cycle pass the cancel around
    ** once; back here it wakes this one, below.  A chain of awaits deeper
    ** than the C stack should go is passed on by each task as it wakes,
    ** in await_k) */
    int passed;
    t->tflags |= T_CANCEL_BUSY;
    t->sched->cancel_depth++;
    passed = cancel_awaited(L, t);
    t->sched->cancel_depth--;
    t->tflags &= ~T_CANCEL_BUSY;
    if (passed) return 1;
  } else if (t->state == T_PARKED && (t->tflags & T_CANCEL_BUSY)) {
    t->tflags |= T_CANCEL_CYCLE;
  }
  if (t->state == T_PARKED) {
    /* undo the wait, then resume it: its continuation raises */
    if (t->cleanup) t->cleanup(t);
    t->cleanup = NULL;
    t->state = T_READY;
    ring_push(t->sched, t);
  }
  /* T_NEW: step() ends it unstarted; T_READY: its continuation raises;
  ** T_RUNNING: its next wait raises (or it ends cancelled) */
  return 1;
}

/* The thread pool.  Up to AIO_THREAD_POOL task threads have a slot (kept
** in the thread's extra space; 0: none), and the registry table pool_ref
** anchors each at its slot for as long as it keeps it, whether a task has
** it or it is idle; so lending an idle thread to a task and taking it back
** touch no Lua table, only the list of idle slots (freel).  A thread that
** user code has seen (T_EXPOSED), or one not reset to LUA_OK (finish
** resets a failed task's thread first), gives its slot up (emptyl); one
** made while every slot is taken has none and goes to the collector with
** its task. */
#define SLOT(co) (*(int *)lua_getextraspace(co))

static void drop_slot(lua_State *L, aio_sched *s, int slot) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->pool_ref);
  lua_pushnil(L);
  lua_rawseti(L, -2, slot);
  lua_pop(L, 1);
  s->pool[slot] = NULL;
  s->emptyl[s->nempty++] = (uint16_t)slot;
}

/* a thread for a new task, pushed */
static lua_State *take_thread(lua_State *L, aio_sched *s) {
  lua_State *co;
  int slot = 0;
  if (s->nfree > 0) {  /* an idle one: its stack has room for the push */
    co = s->pool[s->freel[--s->nfree]];
    lua_pushthread(co);
    lua_xmove(co, L, 1);
    return co;
  }
  co = aio__newthread_lean ? aio__newthread_lean(L, AIO_TASK_SLOTS)
                           : lua_newthread(L);
  if (s->nempty > 0) slot = s->emptyl[--s->nempty];
  else if (s->nslots < AIO_THREAD_POOL) slot = ++s->nslots;
  if (slot) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->pool_ref);
    lua_pushvalue(L, -2);
    lua_rawseti(L, -2, slot);
    lua_pop(L, 1);
    s->pool[slot] = co;
  }
  SLOT(co) = slot;
  return co;
}

static void release_thread(lua_State *L, aio_sched *s, aio_task *t) {
  lua_State *co = t->co;
  int slot = SLOT(co);
  t->co = NULL;
  lua_settop(co, 0);
  if (t->tflags & T_EXPOSED) aio__thread_task_set(L, co, NULL);
  if ((t->tflags & T_EXPOSED) || lua_status(co) != LUA_OK) {
    if (slot) drop_slot(L, s, slot);  /* the collector takes it */
    return;
  }
  if (slot) s->freel[s->nfree++] = (uint16_t)slot;
}

/* report a failed task whose error nobody retrieved (task at idx) */
static void report_failure(lua_State *L, int idx) {
  aio_future *f = lua_touserdata(L, idx);
  aio_task *t = (aio_task *)f;
  const char *name, *msg, *tb = NULL;
  idx = lua_absindex(L, idx);
  f->flags &= ~AIO_F_UNRETRIEVED;
  aio__extras(L, idx);
  if (lua_getfield(L, -1, "name") == LUA_TNIL) {
    lua_pop(L, 1);
    lua_pushfstring(L, "Task-%d", (int)t->id);
  }
  name = lua_tostring(L, -1);
  lua_getiuservalue(L, idx, 1);
  msg = aio__tostring(L, -1);
  if (lua_getfield(L, -4, "traceback") == LUA_TSTRING) tb = lua_tostring(L, -1);
  fprintf(stderr, "aiolua: task %s failed and nobody retrieved its error: "
          "%s\n%s%s", name ? name : "?", msg ? msg : "?", tb ? tb : "",
          tb ? "\n" : "");
  if (lua_getfield(L, -5, "spawned_at") == LUA_TSTRING)  /* debug mode */
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
  fflush(stderr);
  lua_pop(L, 6);
}

/* at the loop's close: the task at idx, if it failed unretrieved */
static void task_report(lua_State *L, int idx) {
  aio_future *f = lua_touserdata(L, idx);
  if (f && (f->flags & AIO_F_UNRETRIEVED)) report_failure(L, idx);
}

/* the traceback of where a task's error (on top of L) was raised, from
** its thread co, into the task's extras (task at ti); not for a
** CancelledError (cancelling many tasks makes no tracebacks) unless the
** task is T_TRACED (a host's main task, whose failure is printed), and not
** again when its to-be-closed variables were closed on a thread of their
** own (close_later) */
static void keep_traceback(lua_State *L, int ti, lua_State *co) {
  const char *et = aio__errtype(L, -1);
  aio_task *t = lua_touserdata(L, ti);
  if (et != NULL && strcmp(et, "CancelledError") == 0 &&
      !(t->tflags & T_TRACED))
    return;
  aio__extras(L, ti);
  if (lua_getfield(L, -1, "traceback") == LUA_TNIL) {
    luaL_traceback(L, co, NULL, 0);
    lua_setfield(L, -3, "traceback");
  }
  lua_pop(L, 2);
}

/* task_close(err, v1, ..., vn): a failed task's to-be-closed variables, v1
** the innermost, each closed in turn with the error, as Lua closes them; a
** __close that fails puts its error in the place of err, the others are
** still closed; then err is raised: the task's outcome */
static int task_close_k(lua_State *L, int status, lua_KContext ctx) {
  int i = (int)ctx, n;
  if (status != LUA_OK && status != LUA_YIELD) lua_replace(L, 1);
  n = lua_gettop(L);
  luaL_checkstack(L, 3, NULL);
  for (; i <= n; i++) {
    if (luaL_getmetafield(L, i, "__close") == LUA_TNIL)
      lua_pushnil(L);  /* its metatable changed: calling nil raises */
    lua_pushvalue(L, i);
    lua_pushvalue(L, 1);
    if (lua_pcallk(L, 2, 0, 0, i + 1, task_close_k) != LUA_OK)
      lua_replace(L, 1);
  }
  lua_settop(L, 1);
  return lua_error(L);
}

static int task_close(lua_State *L) {
  return task_close_k(L, LUA_OK, 2);
}

/* A task that an error stopped (its own, or the CancelledError a cancel
** raised at its wait) with to-be-closed variables still open: Lua would
** close them in lua_resetthread, where a __close cannot wait.  Instead
** they go, with the error, to a new thread of the same task that closes
** them (task_close), where waiting works as anywhere in a task, and the
** dead thread is reset (its upvalues closed) and released.  Returns 1 with
** the new thread in t->co and its argument count in *nargs, or 0 when
** there is nothing to close (or no aiolua_poptbc: a stock Lua).  Costs
** nothing to a task that does not fail. */
static int close_later(lua_State *L, aio_sched *s, aio_task *t, int *nargs) {
  lua_State *co = t->co, *cl;
  int top = lua_gettop(L), n = 0, i, ti;
  if (aio__poptbc == NULL || !lua_checkstack(co, 2) ||
      !lua_checkstack(L, 4))
    return 0;
  aio__push_task(L, t);                        /* task */
  ti = lua_gettop(L);
  lua_pushvalue(co, -1);                       /* the error */
  lua_xmove(co, L, 1);                         /* task err */
  if (!aio__poptbc(co)) {
    lua_settop(L, top);
    return 0;
  }
  keep_traceback(L, ti, co);  /* before the reset unwinds the thread */
  do {
    lua_xmove(co, L, 1);                       /* task err v1 ... */
    n++;
    if (!lua_checkstack(L, 4)) luaL_error(L, "not enough memory");
  } while (lua_checkstack(co, 1) && aio__poptbc(co));
  lua_resetthread(co);  /* closes its upvalues; nothing else is left */
  release_thread(L, s, t);
  t->tflags &= ~T_EXPOSED;  /* that was the old thread */
  cl = take_thread(L, s);                      /* task err v... cl */
  if (!lua_checkstack(cl, 2 + n)) luaL_error(L, "not enough memory");
  lua_pushcfunction(cl, task_close);
  for (i = 0; i <= n; i++) {
    lua_pushvalue(L, ti + 1 + i);
    lua_xmove(L, cl, 1);
  }
  lua_setiuservalue(L, ti, 1);                 /* the task anchors cl */
  lua_settop(L, top);
  t->co = cl;
  *nargs = 1 + n;
  return 1;
}

/* the task has ended: store its outcome, wake its waiters, unanchor it.
** status is the outcome of lua_resume (nres results on its thread) or -1
** for a task cancelled before it started */
static void finish(lua_State *L, aio_sched *s, aio_task *t, int status,
                   int nres) {
  lua_State *co = t->co;
  int ti, state;
  aio__push_task(L, t);
  ti = lua_gettop(L);
  if (status == LUA_OK && !(t->tflags & T_CANCEL_PENDING)) {
    luaL_checkstack(L, nres + 2, "too many results");
    lua_xmove(co, L, nres);
    state = AIO_RESULT;
  } else {
    if (status == LUA_OK || status == -1) {  /* it never saw the cancel */
      t->tflags &= ~T_CANCEL_PENDING;
      aio__extras(L, ti);
      if (lua_getfield(L, -1, "cancel_error") == LUA_TNIL) {
        lua_pop(L, 1);
        aio__pusherror(L, "CancelledError", 0, "cancelled");
      }
      lua_remove(L, -2);
    } else {
      int st;
      if (status == LUA_YIELD) {  /* a yield that was not an aio wait */
        lua_pushstring(L, "attempt to yield from a task outside a coroutine "
                       "(use aio.sleep(0) to let other tasks run)");
      } else {
        /* a failed resume leaves no free slot above the error object */
        if (!lua_checkstack(co, 1)) luaL_error(L, "not enough memory");
        lua_pushvalue(co, -1);
        lua_xmove(co, L, 1);
      }
      /* the traceback first: lua_resetthread unwinds the stack */
      keep_traceback(L, ti, co);
      /* close its to-be-closed variables; an error in a __close replaces
      ** the error, as it would in plain Lua */
      s->closing = t;
      st = lua_resetthread(co);
      s->closing = NULL;
      if (st != LUA_OK && status != LUA_YIELD && lua_gettop(co) > 0) {
        lua_pop(L, 1);
        lua_xmove(co, L, 1);
      }
    }
    nres = 1;
    state = AIO_ERROR;
    {
      const char *et = aio__errtype(L, -1);
      if (et && strcmp(et, "CancelledError") == 0) state = AIO_CANCELLED;
    }
  }
  if (co) release_thread(L, s, t);
  realwait_end(t);
  t->state = T_DONE;
  t->cleanup = NULL;
  if (t->timer.idx) aio__heap_remove(&s->timers, &t->timer);
  aio__future_complete(L, ti, state, nres);
  if (state == AIO_ERROR) {
    t->fut.flags |= AIO_F_UNRETRIEVED;
    watch_failure(L, ti);  /* reports it if nobody retrieves it */
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->failed_ref);
    lua_pushvalue(L, ti);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
  }
  task_unref(L, s->rt, t);
  s->ntasks--;
  lua_settop(L, ti - 1);
}

static void warn_slow(lua_State *L, aio_task *t, double took, int parked);

/* run one step of a ready task, from thread L (the loop's, or for an eager
** start the spawning task's) */
static void step_from(lua_State *L, aio_sched *s, aio_task *t) {
  lua_State *co;
  aio_task *prev = s->current;
  int nargs = 0, status, nres, i;
  double t0 = 0, outer_nested = 0;
  if (t->state == T_NEW) {
    if (t->tflags & T_CANCEL_PENDING) {  /* cancelled before it ran */
      finish(L, s, t, -1, 0);
      return;
    }
    /* taking a thread may raise (out of memory): until it is done the
    ** task stays queued, so the error costs this step, not the task
    ** (the ring has room: the task was just popped from it) */
    ring_push(s, t);
    aio__push_task(L, t);                       /* task */
    co = take_thread(L, s);                     /* task co */
    /* the function and arguments pass through L too */
    if (!lua_checkstack(co, 1 + t->nargs) || !lua_checkstack(L, 1 + t->nargs))
      luaL_error(L, "not enough memory");
    s->rcount--;  /* un-queue it: nothing was queued since */
    lua_getiuservalue(L, -2, 1);                /* task co fn */
    for (i = 1; i <= t->nargs; i++)
      lua_getiuservalue(L, -2 - i, 1 + i);
    lua_xmove(L, co, 1 + t->nargs);             /* task co */
    lua_setiuservalue(L, -2, 1);                /* task: anchors co */
    for (i = 1; i <= t->nargs; i++) {
      lua_pushnil(L);
      lua_setiuservalue(L, -2, 1 + i);
    }
    lua_pop(L, 1);
    t->co = co;
    nargs = t->nargs;
  }
  co = t->co;
  t->state = T_RUNNING;
  if (s->debug) {
    t0 = aio__clock();
    outer_nested = s->nested;
    s->nested = 0;
  }
resume:
  s->current = t;
  if (prev == NULL && !s->in_call) {
    status = lua_resume(co, L, nargs, &nres);
  } else {  /* a step inside another (an eager task) or inside a callback:
            ** L's top is not run_protected's, see aio__sched_values */
    lua_State *prL = s->rL;
    int prtop = s->rtop;
    s->rL = L;
    s->rtop = lua_gettop(L);
    status = lua_resume(co, L, nargs, &nres);
    s->rL = prL;
    s->rtop = prtop;
  }
  s->current = prev;
  if (status > LUA_YIELD && close_later(L, s, t, &nargs)) {
    co = t->co;  /* its to-be-closed variables, closed where it may wait */
    goto resume;
  }
  if (t0 > 0) {
    /* its own time: a step nested in it (spawn_eager) warns for itself */
    double total = aio__clock() - t0, own = total - s->nested;
    s->nested = outer_nested + total;
    if (own > s->slow_step) warn_slow(L, t, own, status == LUA_YIELD);
  }
  /* a wait left the task parked (or ready: aio.sleep(0)); any other yield
  ** leaves it running */
  if (status == LUA_YIELD && t->state != T_RUNNING) {
    if (t->state == T_READY) ring_push(s, t);  /* aio.sleep(0) */
    return;
  }
  if (status == LUA_YIELD) lua_pop(co, nres);
  finish(L, s, t, status, nres);
}

static void step(aio_sched *s, aio_task *t) { step_from(s->L, s, t); }

/* debug mode: one step held the loop too long */
/* whether a traceback has a frame of Lua code (a line "\t[C]: ..." is not) */
static int has_lua_frame(const char *tb) {
  const char *p = tb;
  while ((p = strstr(p, "\n\t")) != NULL) {
    p += 2;
    if (strncmp(p, "[C]", 3) != 0) return 1;
  }
  return 0;
}

static void warn_slow(lua_State *L, aio_task *t, double took, int parked) {
  int top = lua_gettop(L);
  const char *name = "?";
  aio__push_task(L, t);                          /* task */
  if (!lua_isnil(L, -1)) {
    lua_getfield(L, -1, "name");
    name = lua_tostring(L, -1);
  }
  if (parked && t->co) {
    lua_pushliteral(L, "it is now at:\n");
    luaL_traceback(L, t->co, NULL, 0);
    lua_concat(L, 2);
  } else {  /* it ended in that step: no stack is left, only its origin */
    aio__extras(L, top + 1);
    if (lua_getfield(L, -1, "spawned_at") == LUA_TSTRING &&  /* "spawned at\n..." */
        has_lua_frame(lua_tostring(L, -1)))
      lua_pushfstring(L, "it ended in that step; it was %s", lua_tostring(L, -1));
    else  /* (a main task, spawned from C: no place to show) */
      lua_pushliteral(L, "it ended in that step");
  }
  fprintf(stderr, "aiolua: debug: task %s held the loop for %.3f s in one "
          "step (slow_step %.3f s); %s\n", name ? name : "?",
          took, t->sched->slow_step, lua_tostring(L, -1));
  fflush(stderr);
  lua_settop(L, top);
}

/* ====================================================================== */
/* calls                                                                  */
/* ====================================================================== */

static void call_unanchor(lua_State *L, aio_sched *s, aio_call *c);

aio_call *aio__call_at(lua_State *L, aio_sched *s, int nargs, double when,
                      int ctx) {
  int fi = lua_gettop(L) - nargs, i;
  aio_rt *rt = s->rt;
  aio_call *c;
  if (s->closed) luaL_error(L, "the loop is closed");
  ring_reserve_one(L, s);
  c = lua_newuserdatauv(L, sizeof *c, 1 + nargs + (ctx != 0));
  memset(c, 0, sizeof *c);
  c->kind = AIO_K_CALL;
  c->timer.kind = AIO_K_CALL;
  c->nargs = (uint16_t)nargs;
  c->ref = LUA_NOREF;
  aio__setmt(L, rt->call_mt, rt->call_mtp);
  lua_insert(L, fi);
  if (ctx != 0) {  /* the context it runs in: the last uservalue */
    lua_pushvalue(L, ctx);
    lua_setiuservalue(L, fi, 2 + nargs);
  }
  for (i = nargs; i >= 1; i--) lua_setiuservalue(L, fi, 1 + i);
  lua_setiuservalue(L, fi, 1);
  c->real = 0;
  /* anchored first: out of memory in luaL_ref, a call already in the heap
  ** would be collected there */
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->calls_ref);
  lua_pushvalue(L, fi);
  c->ref = luaL_ref(L, -2);
  lua_pop(L, 1);
  s->ncalls++;
  if (when >= 0 && aio__heap_add(&s->timers, &c->timer, when)) {
    call_unanchor(L, s, c);
    luaL_error(L, "not enough memory");
  }
  c->state = C_SCHEDULED;
  if (when < 0) ring_push(s, c);
  return c;
}

static void call_unanchor(lua_State *L, aio_sched *s, aio_call *c) {
  if (c->ref == LUA_NOREF) return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->calls_ref);
  luaL_unref(L, -1, c->ref);
  lua_pop(L, 1);
  c->ref = LUA_NOREF;
  s->ncalls--;
}

void aio__call_cancel(lua_State *L, aio_sched *s, aio_call *c) {
  if (c->state != C_SCHEDULED) return;
  c->state = C_CANCELLED;
  if (c->timer.idx) {  /* not in the ring yet: forget it now */
    aio__heap_remove(c->real ? &s->rtimers : &s->timers, &c->timer);
    call_unanchor(L, s, c);
  }  /* else run_call() drops it when it comes out of the ring */
}

static int msgh(lua_State *L) {
  const char *msg = aio__tostring(L, 1);
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* debug mode: a callback held the loop too long (asyncio: "Executing
** <Handle ...> took 0.105 seconds") */
static void warn_slow_call(const lua_Debug *ar, double took, double slow) {
  if (ar->what[0] == 'C')
    fprintf(stderr, "aiolua: debug: a callback (a C function) held the loop "
            "for %.3f s (slow_step %.3f s)\n", took, slow);
  else
    fprintf(stderr, "aiolua: debug: callback function <%s:%d> held the loop "
            "for %.3f s (slow_step %.3f s)\n", ar->short_src, ar->linedefined,
            took, slow);
  fflush(stderr);
}

static void run_call(aio_sched *s, aio_call *c) {
  lua_State *L = s->L;
  int top = lua_gettop(L), i, ctx;
  int debug = s->debug;  /* as it was when the callback began */
  lua_Debug ar;
  double t0 = 0, outer_nested = 0;
  if (c->state != C_SCHEDULED) {
    call_unanchor(L, s, c);
    return;
  }
  c->state = C_DONE;
  luaL_checkstack(L, c->nargs + 5, "callback arguments");
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->calls_ref);
  lua_rawgeti(L, -1, c->ref);
  lua_replace(L, -2);                           /* call */
  ctx = lua_getiuservalue(L, top + 1, 2 + c->nargs) == LUA_TTABLE;  /* none: nil */
  if (ctx) {                                    /* call ctx */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &cbctx_key);
    lua_insert(L, -2);                          /* call old ctx */
    lua_rawsetp(L, LUA_REGISTRYINDEX, &cbctx_key);
  } else {
    lua_pop(L, 1);
  }
  lua_pushcfunction(L, msgh);                   /* call [old] msgh */
  for (i = 0; i <= c->nargs; i++) lua_getiuservalue(L, top + 1, 1 + i);
  call_unanchor(L, s, c);                       /* ... msgh fn args */
  if (debug) {
    lua_pushvalue(L, -1 - c->nargs);
    lua_getinfo(L, ">S", &ar);                  /* where fn was defined */
    outer_nested = s->nested;
    s->nested = 0;
    t0 = aio__clock();
  }
  s->in_call++;
  i = lua_pcall(L, c->nargs, 0, top + 2 + ctx);
  s->in_call--;
  if (debug) {
    /* its own time: a task step nested in it (spawn_eager) warns itself */
    double took = aio__clock() - t0;
    if (took - s->nested > s->slow_step)
      warn_slow_call(&ar, took - s->nested, s->slow_step);
    s->nested = outer_nested + took;
  }
  if (ctx) {
    lua_pushvalue(L, top + 2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &cbctx_key);
  }
  if (i != LUA_OK) {
    /* out of memory is the loop's failure, not the callback's: it goes up
    ** like every other allocation failure in the loop (faults sweep) */
    if (i == LUA_ERRMEM) lua_error(L);
    fprintf(stderr, "aiolua: error in a callback: %s\n",
            lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
    fflush(stderr);
  }
  lua_settop(L, top);
}

/* ====================================================================== */
/* timers, posts and the loop iteration                                   */
/* ====================================================================== */

/* Make a scheduled call_later run on the real clock even under the virtual
** one (the test suite's own deadlines): it moves to the second heap. */
int aio__call_make_real(aio_sched *s, aio_call *c) {
  double when = c->timer.when;
  if (!c->timer.idx || c->real) return 0;
  if (s->virt) when = aio__clock() + (when - s->vnow);
  aio__heap_remove(&s->timers, &c->timer);
  c->real = 1;
  return aio__heap_add(&s->rtimers, &c->timer, when);
}

static void fire_heap(aio_sched *s, aio_heap *hp, double now) {
  aio_timer *tm;
  while ((tm = aio__heap_pop(hp, now)) != NULL) {
    if (tm->kind == AIO_K_TASK) {
      aio_task *t = container_of(tm, aio_task, timer);
      if (t->cleanup) t->cleanup(t);  /* a deadline ends any wait */
      t->tflags |= T_TIMEDOUT;
      aio__wake(t);
    } else {
      ring_push(s, container_of(tm, aio_call, timer));
    }
  }
}

static inline void fire_timers(aio_sched *s) {
  if (aio__heap_count(&s->timers))  /* no clock read when idle */
    fire_heap(s, &s->timers, aio__now(s));
  if (aio__heap_count(&s->rtimers)) fire_heap(s, &s->rtimers, aio__clock());
}

/* real seconds until the next real-clock deadline (< 0: none) */
static double real_timeout(aio_sched *s) {
  aio_timer *top = aio__heap_top(&s->rtimers);
  double t;
  if (top == NULL) return -1;
  t = top->when - aio__clock();
  return t < 0 ? 0 : t;
}

static double min_timeout(double a, double b) {
  if (a < 0) return b;
  if (b < 0) return a;
  return a < b ? a : b;
}

static void on_wakeup(void *data) {
  ((aio_sched *)data)->posted = 1;
}

static int post_tramp(lua_State *L) {
  aio_post *p = lua_touserdata(L, 1);
  aio_sched *s = lua_touserdata(L, 2);
  p->fn(s->post_owner, p->ud);
  return 0;
}

static void run_posts(aio_sched *s) {
  aio_post *p, *next;
  lua_State *L = s->L;
  if (!s->posted) return;
  s->posted = 0;
  pthread_mutex_lock(s->post_lock);
  p = s->post_head;
  s->post_head = s->post_tail = NULL;
  pthread_mutex_unlock(s->post_lock);
  for (; p != NULL; p = next) {
    next = p->next;
    lua_pushcfunction(L, post_tramp);
    lua_pushlightuserdata(L, p);
    lua_pushlightuserdata(L, s);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
      fprintf(stderr, "aiolua: error in a posted function: %s\n",
              lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
      lua_pop(L, 1);
    }
    free(p);
  }
}

int aio__sched_post(aio_sched *s, aio_post_fn fn, void *ud) {
  aio_post *p;
  pthread_mutex_lock(s->post_lock);
  if (s->post_closed) {
    pthread_mutex_unlock(s->post_lock);
    return -EPIPE;
  }
  p = malloc(sizeof *p);
  if (p == NULL) {
    pthread_mutex_unlock(s->post_lock);
    return -ENOMEM;
  }
  p->next = NULL;
  p->fn = fn;
  p->ud = ud;
  if (s->post_tail) s->post_tail->next = p;
  else s->post_head = p;
  s->post_tail = p;
  pthread_mutex_unlock(s->post_lock);
  aio__loop_wakeup(s->lp);
  return 0;
}

/* what a run waits for */
enum { RUN_UNTIL, RUN_ALL, RUN_TASKS, RUN_FREE };
enum { ONCE_PASS = 1, ONCE_TURN };

typedef struct run_args {
  aio_sched *s;
  int mode;            /* RUN_UNTIL: `until` is done; RUN_ALL: no task, call
                          or timer is left; RUN_TASKS: no task is left;
                          RUN_FREE: never (aio_host_step) */
  aio_future *until;
  double maxwait;      /* the longest poll, < 0: no limit */
  int once;            /* one iteration only: ONCE_PASS, ONCE_TURN */
  int keep;            /* RUN_TASKS: as many tasks that cannot move */
} run_args;

/* a post is queued (one a post made, say): aio_host_run runs it too */
static int posts_pending(aio_sched *s) {
  int pending;
  pthread_mutex_lock(s->post_lock);
  pending = s->post_head != NULL;
  pthread_mutex_unlock(s->post_lock);
  return pending || s->posted;
}

static inline int finished(run_args *a) {
  aio_sched *s = a->s;
  switch (a->mode) {
    case RUN_UNTIL: return a->until->state != AIO_PENDING;
    case RUN_ALL:
      return s->ntasks == 0 && s->rcount == 0 && s->nwork == 0 &&
             aio__heap_top(&s->timers) == NULL &&
             aio__heap_top(&s->rtimers) == NULL && !posts_pending(s);
    case RUN_TASKS: return s->ntasks <= a->keep;
    default: return 0;
  }
}

/* run what is ready now (what becomes ready meanwhile waits a pass) */
static inline void run_ready(aio_sched *s) {
  uint32_t n = s->rcount;
  int prefetch = n > 8 && lua_gc(s->L, LUA_GCCOUNT, 0) > PREFETCH_KB;
  while (n-- > 0) {
    void *p;
    if (prefetch) ring_prefetch(s);
    p = ring_pop(s);
    if (*(uint8_t *)p == AIO_K_TASK) step(s, p);
    else run_call(s, p);
  }
}

/* fire timers; poll the backend when nothing is ready (at most `maxwait`
** s, < 0: no limit), or every POLL_EVERY passes (with `always`, every
** time) so that a busy ring cannot starve I/O; never block once `a` is
** finished */
static inline void wait_events(run_args *a, double maxwait, int always) {
  aio_sched *s = a->s;
  double timeout;
  aio_timer *top;
  fire_timers(s);
  if (s->rcount > 0) {
    if (++s->passes < POLL_EVERY && !always) return;
    timeout = 0;
  } else if (finished(a)) {
    return;
  } else if (s->virt) {
    /* virtual time moves only by aio.testing.advance, or, with autojump,
    ** when the loop is idle: real I/O gets its chance first, then the
    ** clock jumps to the next deadline */
    top = aio__heap_top(&s->timers);
    if (top && s->autojump && s->nrealwait == 0) {
      s->passes = 0;
      aio__loop_poll(s->lp, min_timeout(s->jump_threshold, real_timeout(s)));
      run_posts(s);
      top = aio__heap_top(&s->timers);
      if (s->rcount == 0 && top && top->when > s->vnow) s->vnow = top->when;
      fire_timers(s);
      return;
    }
    if (top && s->autojump) {
      /* a task waits on work that ends in real time (a thread, a child,
      ** a pipe): no jump past it, but the virtual clock runs at real
      ** speed meanwhile, so that timeouts still fire and a task whose
      ** sleep the work waits for still wakes */
      double t0 = aio__clock(), wait = top->when - s->vnow;
      s->passes = 0;
      aio__loop_poll(s->lp, min_timeout(maxwait, min_timeout(wait > 0 ? wait : 0,
                                                             real_timeout(s))));
      run_posts(s);
      s->vnow += aio__clock() - t0;
      fire_timers(s);
      return;
    }
    timeout = min_timeout(maxwait, real_timeout(s));
  } else {
    top = aio__heap_top(&s->timers);
    timeout = top ? top->when - aio__clock() : -1;
    if (top && timeout < 0) timeout = 0;
    timeout = min_timeout(maxwait, min_timeout(timeout, real_timeout(s)));
  }
  s->passes = 0;
  aio__loop_poll(s->lp, timeout);
  run_posts(s);
  fire_timers(s);
}

/* a pass of a run: what is ready, then the events */
static void iterate(run_args *a, double maxwait) {
  run_ready(a->s);
  wait_events(a, maxwait, 0);
}

static int run_protected(lua_State *L) {
  run_args *a = lua_touserdata(L, 1);
  /* the tasks are resumed from here, and L's top stays this (each step,
  ** call and timer leaves it so): what C code pushes on L while a task
  ** runs is above it (aio__sched_values) */
  a->s->rL = L;
  a->s->rtop = lua_gettop(L);
  if (a->mode == RUN_ALL) {  /* aio_host_run: posts made before it are work */
    aio_sched *s = a->s;
    pthread_mutex_lock(s->post_lock);
    if (s->post_head != NULL) s->posted = 1;
    pthread_mutex_unlock(s->post_lock);
    run_posts(s);
  }
  if (a->once == ONCE_TURN) {
    /* aio_host_step, as asyncio's _run_once: wait for events (not at all
    ** when something is ready), then run what they made ready, so that a
    ** step that waited does not leave its wake-ups to the next one, which
    ** would block again first */
    wait_events(a, a->maxwait, 1);
    run_ready(a->s);
  } else if (a->once) {
    iterate(a, a->maxwait);
  } else {
    while (!finished(a)) iterate(a, a->maxwait);
  }
  return 0;
}

static int run(aio_sched *s, lua_State *L, run_args *a) {
  lua_State *saved = s->L;
  aio_sched *outer;
  int rc;
  if (s->closed) {
    lua_pushstring(L, "the loop is closed");
    return -EINVAL;
  }
  if (s->running) {
    lua_pushstring(L, "the loop is already running");
    return -EBUSY;
  }
  s->running = 1;
  s->L = L;
  outer = running;
  running = s;
  lua_pushcfunction(L, run_protected);
  lua_pushlightuserdata(L, a);
  rc = lua_pcall(L, 1, 0, 0);
  running = outer;
  s->running = 0;
  s->L = saved ? saved : L;
  s->current = NULL;
  return rc == LUA_OK ? 0 : -EIO;  /* the error is on the stack */
}

int aio__sched_run(aio_sched *s, lua_State *L, aio_future *until) {
  run_args a = { s, until ? RUN_UNTIL : RUN_ALL, until, -1, 0, 0 };
  return run(s, L, &a);
}

int aio__sched_step(aio_sched *s, lua_State *L, double timeout) {
  run_args a = { s, RUN_FREE, NULL, timeout, ONCE_PASS, 0 };
  return run(s, L, &a);
}

int aio__sched_turn(aio_sched *s, lua_State *L, double timeout) {
  run_args a = { s, RUN_FREE, NULL, timeout, ONCE_TURN, 0 };
  return run(s, L, &a);
}

/* ====================================================================== */
/* loop life                                                              */
/* ====================================================================== */

int aio__sched_gc(lua_State *L) {
  aio_sched *s = lua_touserdata(L, 1);
  if (!s->closed) aio__sched_close(s, L);
  return 0;
}

static int newref(lua_State *L, const char *mode) {
  lua_newtable(L);
  if (mode) {
    lua_createtable(L, 0, 1);
    lua_pushstring(L, mode);
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
  }
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

aio_sched *aio__sched_new(lua_State *L, int *err) {
  aio_sched *s = lua_newuserdatauv(L, sizeof *s, 0);
  pthread_mutex_t *mu;
  memset(s, 0, sizeof *s);
  s->closed = 1;  /* until it is whole: __gc then does nothing */
  s->self_ref = s->calls_ref = LUA_NOREF;
  s->pool_ref = s->failed_ref = LUA_NOREF;
  luaL_setmetatable(L, AIO_LOOP_MT);
  /* the Lua parts first: each may raise (out of memory) while nothing C
  ** is held yet and __gc, seeing `closed`, does nothing */
  s->calls_ref = newref(L, NULL);
  s->pool_ref = newref(L, NULL);
  s->failed_ref = newref(L, "k");
  mu = malloc(sizeof *mu);
  if (mu == NULL) { *err = -ENOMEM; return NULL; }
  pthread_mutex_init(mu, NULL);
  s->post_lock = mu;
  s->lp = aio__loop_new(err);
  if (s->lp == NULL) {
    pthread_mutex_destroy(mu);
    free(mu);
    s->post_lock = NULL;
    return NULL;
  }
  aio__loop_set_wakeup(s->lp, on_wakeup, s);
  s->rt = aio__rt(L);
  s->closed = 0;
  s->L = L;
  s->slow_step = 0.1;
  {
    const char *dbg = getenv("AIOLUA_DEBUG");
    s->debug = dbg != NULL && *dbg != '\0' && strcmp(dbg, "0") != 0;
  }
  lua_pushvalue(L, -1);
  s->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return s;
}

/* loop iterations that run what is left in the ready ring once every task
** is done (done callbacks, call_soon): as asyncio.run's last
** run_until_complete calls do, a few, not a chain that never ends */
#define CLOSING_PASSES 8

static void cancel_tasks(aio_sched *s, lua_State *L, int top);
static int closed_error(lua_State *L);
static void force_finish(aio_sched *s, lua_State *L, aio_task *t, int erridx);

void aio__sched_cancel_all(aio_sched *s, lua_State *L) {
  int top = lua_gettop(L), pass;
  if (s->rcount > 0) {
    /* As asyncio.run: the loop stops after one more iteration of what is
    ** ready, so a task the main task spawned in its last step runs to its
    ** first wait, where the cancel below reaches it (its body runs and
    ** its cleanup too), rather than being cancelled unstarted. */
    run_args a = { s, RUN_FREE, NULL, 0, 1, 0 };
    if (run(s, L, &a) != 0) lua_settop(L, top);
  }
  for (pass = 0; pass < CLOSING_PASSES; pass++) {
    cancel_tasks(s, L, top);
    if (s->ntasks > 0 || s->rcount == 0) break;  /* stuck, or all done */
    {  /* what became ready as the tasks ended; it may spawn more */
      run_args a = { s, RUN_TASKS, NULL, 0, 1, 0 };
      if (run(s, L, &a) != 0) {
        lua_settop(L, top);
        break;
      }
    }
  }
}

static void cancel_tasks(aio_sched *s, lua_State *L, int top) {
  while (s->ntasks > 0) {
    lua_Integer i, n, stuck = 0;
    aio__push_tasks(L, s);
    n = (lua_Integer)lua_rawlen(L, -1);
    for (i = 1; i <= n; i++) {
      aio_task *t;
      if (lua_rawgeti(L, -1, i) == LUA_TUSERDATA) {
        t = lua_touserdata(L, -1);
        if ((t->state == T_RUNNING || t->state == T_DONE) &&
            s->current == NULL) {
          /* cut off mid-step (out of memory): no event will ever move it;
          ** ended here, so that whoever awaits it wakes */
          lua_pushcfunction(L, closed_error);
          if (lua_pcall(L, 0, 1, 0) != LUA_OK) {
            lua_pop(L, 1);
            lua_pushnil(L);
          }
          lua_insert(L, -2);                     /* ... err task */
          force_finish(s, L, t, lua_gettop(L) - 1);
          lua_remove(L, -2);
        } else {
          if (!(t->tflags & T_CLOSING)) {  /* each is cancelled once */
            aio__task_cancel(L, t, 0);
            t->tflags |= T_CLOSING;
          }
          stuck += t->state == T_RUNNING || t->state == T_DONE;
        }
      }
      lua_pop(L, 1);
    }
    lua_settop(L, top);
    /* (a task "running" inside a step, as when aio.run ends from one,
    ** is not waited for: aio__sched_close ends what is left) */
    if (stuck >= s->ntasks) break;
    {
      run_args a = { s, RUN_TASKS, NULL, -1, 1, (int)stuck };
      if (run(s, L, &a) != 0) {  /* out of memory: give up */
        lua_settop(L, top);
        break;
      }
    }
  }
}

/* Tasks still alive when the loop closes (their cancellation failed) end
** here as cancelled, their to-be-closed variables closed, so that nothing
** points into the loop afterwards.  Out of memory too (a host's memory
** budget spent by its tasks): the walk over the registry allocates
** nothing, the tasks share one error (or none), and a completion that
** cannot schedule its callbacks still marks the future cancelled. */
static int closed_error(lua_State *L) {
  aio__pusherror(L, "CancelledError", 0, "the loop was closed");
  return 1;
}

static int complete_tramp(lua_State *L) {  /* (future, err) */
  aio__future_complete(L, 1, AIO_CANCELLED, 1);
  return 0;
}

/* end task t (on top of L's stack) as cancelled with the error at erridx
** (nil: none could be made); its awaiters wake */
static void force_finish(aio_sched *s, lua_State *L, aio_task *t, int erridx) {
  if (t->cleanup) t->cleanup(t);
  t->cleanup = NULL;
  waiter_unlink(&t->wnode);
  if (t->co) {
    s->closing = t;
    lua_resetthread(t->co);
    s->closing = NULL;
    if (t->tflags & T_EXPOSED) aio__thread_task_set(L, t->co, NULL);
    t->co = NULL;
  }
  realwait_end(t);
  t->state = T_DONE;
  if (t->timer.idx) aio__heap_remove(&s->timers, &t->timer);
  lua_pushcfunction(L, complete_tramp);
  lua_pushvalue(L, -2);
  lua_pushvalue(L, erridx);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    lua_pop(L, 1);
    if (t->fut.state == AIO_PENDING)
      t->fut.state = AIO_CANCELLED;  /* its callbacks could not be set up */
  }
  if (t->ref != LUA_NOREF) {
    task_unref(L, s->rt, t);
    s->ntasks--;
  }
}

static void force_finish_all(aio_sched *s, lua_State *L) {
  int top = lua_gettop(L);
  aio_rt *rt = s->rt;
  lua_Integer i, n = (lua_Integer)lua_rawlen(L, LUA_REGISTRYINDEX);
  lua_pushcfunction(L, closed_error);
  if (lua_pcall(L, 0, 1, 0) != LUA_OK) {       /* err|nil */
    lua_pop(L, 1);
    lua_pushnil(L);
  }
  for (i = 1; i <= n && s->ntasks > 0; i++) {
    aio_task *t;
    if (lua_rawgeti(L, LUA_REGISTRYINDEX, i) != LUA_TUSERDATA ||
        ourkind(L, -1, rt) != 1 ||
        (t = lua_touserdata(L, -1))->sched != s || t->ref != i) {
      lua_pop(L, 1);
      continue;
    }                                           /* err task */
    force_finish(s, L, t, top + 1);
    lua_pop(L, 1);
  }
  lua_settop(L, top);
}

static int report_failed(lua_State *L) {
  aio_sched *s = lua_touserdata(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->failed_ref);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_pop(L, 1);
    task_report(L, -1);
  }
  return 0;
}

void aio__sched_close(aio_sched *s, lua_State *L) {
  int top = lua_gettop(L);
  aio_post *p, *next;
  aio_rt *rt = aio__rt(L);
  if (s->closed) return;
  aio__pool_close_loop(s);  /* queued jobs dropped, running ones awaited */
  /* posts that came in before the close still run; later ones fail */
  pthread_mutex_lock(s->post_lock);
  s->post_closed = 1;
  pthread_mutex_unlock(s->post_lock);
  s->posted = 1;
  s->L = L;
  run_posts(s);
  /* errors nobody looked at (out of memory, not all of them) */
  lua_pushcfunction(L, report_failed);
  lua_pushlightuserdata(L, s);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) lua_pop(L, 1);
  s->closed = 1;  /* from here on nothing new is scheduled */
  /* calls that never ran are dropped */
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->calls_ref);
  {
    lua_Integer i, n = (lua_Integer)lua_rawlen(L, -1);
    for (i = 1; i <= n; i++) {
      if (lua_rawgeti(L, -1, i) == LUA_TUSERDATA) {
        aio_call *c = lua_touserdata(L, -1);
        c->state = C_CANCELLED;
        c->ref = LUA_NOREF;
      }
      lua_pop(L, 1);
    }
  }
  lua_settop(L, top);
  if (s->ntasks > 0) force_finish_all(s, L);  /* a walk of the registry */
  aio__heap_free(&s->timers);
  aio__heap_free(&s->rtimers);
  free(s->ring);
  s->ring = NULL;
  s->rcap = s->rcount = s->rhead = 0;
  aio__loop_free(s->lp);
  s->lp = NULL;
  for (p = s->post_head; p; p = next) { next = p->next; free(p); }
  s->post_head = s->post_tail = NULL;
  pthread_mutex_destroy(s->post_lock);
  free(s->post_lock);
  s->post_lock = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, s->calls_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, s->pool_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, s->failed_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, s->self_ref);
  s->calls_ref = s->pool_ref = LUA_NOREF;
  s->failed_ref = s->self_ref = LUA_NOREF;
  if (rt->sched == s) rt->sched = NULL;
}


void aio__sched_set_virtual(aio_sched *s, int on, int autojump) {
  double shift;
  if (on == s->virt) {
    s->autojump = on && autojump;
    return;
  }
  if (on) {
    /* virtual time starts at the next whole second, so that sums of
    ** whole delays stay exact and aio.now() never goes back; pending
    ** deadlines keep their distance */
    double now = aio__clock();
    s->vnow = ceil(now);
    shift = s->vnow - now;
  } else {
    shift = aio__clock() - s->vnow;
  }
  aio__heap_shift(&s->timers, shift);
  s->virt = on;
  s->autojump = on && autojump;
}

void aio__sched_advance(aio_sched *s, double seconds) {
  if (!s->virt || !(seconds > 0)) return;
  s->vnow += seconds;
  fire_timers(s);
}
