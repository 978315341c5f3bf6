/*
** host.c: the embedding API (aiolua.h).  A host owns one Lua state with aio
** loaded and one loop (the aio_sched) that lives as long as the host, so
** tasks outlive the chunk that spawned them.
*/
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lualib.h"

#include "aiolua.h"
#include "alloc.h"
#include "pool.h"
#include "sched.h"

struct aio_host {
  lua_State *L;
  aio_sched *s;
  char *errmsg;
  aio_task *main;        /* the main task while one runs */
  aio_bhandle *sigint;
  aio_bhandle *sigquit;
  int nsigint;
  unsigned sigflags;     /* AIO_SIGINT_* */
  volatile sig_atomic_t nasync;  /* SIGINTs the handler saw */
  volatile sig_atomic_t nseen;   /* ... of which the loop has heard */
  int nhooked;           /* ... that busy_hook acted on already */
  aio_watch *watches;    /* aio_host_watch, still open */
  aio_alloc *alloc;      /* the state's allocator, unless the embedder's */
  int closing;           /* aio_host_shutdown: the tasks left are ending */
  int dead;              /* freed: only this record is left (posts_lock) */
  aio_host *next_dead;   /* on dead_hosts */
};

typedef struct host_post {
  void (*fn)(aio_host *, void *);
  void *ud;
} host_post;

static char host_key;  /* registry: the host, a light userdata */

static void set_errmsg(aio_host *h, const char *msg) {
  free(h->errmsg);
  h->errmsg = msg ? strdup(msg) : NULL;
}

/* ---- creation ---- */

static int open_protected(lua_State *L) {
  aio_host *h = lua_touserdata(L, 1);
  int err = 0;
  if (lua_toboolean(L, 2)) {  /* here, not before: it may raise */
    lua_pushboolean(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
  }
  luaL_openlibs(L);
  luaL_requiref(L, "aio", luaopen_aio, 1);  /* also the global aio */
  lua_pop(L, 1);
  h->s = aio__sched_new(L, &err);
  if (h->s == NULL)
    return luaL_error(L, "cannot make a loop: %s", aio__strerror(err));
  h->s->post_owner = h;
  lua_pushlightuserdata(L, h);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &host_key);
  aio__rt(L)->sched = h->s;
  return 0;
}

/* as lauxlib's: an error outside any protected call ends the process */
static int host_panic(lua_State *L) {
  const char *msg = lua_tostring(L, -1);
  fprintf(stderr, "aiolua: PANIC: unprotected error in call to Lua API "
          "(%s)\n", msg ? msg : "error object is not a string");
  return 0;  /* Lua then aborts */
}

/* warnings as lauxlib's: off until "@on", "Lua warning: " on stderr */
static void warn_off(void *ud, const char *msg, int tocont);
static void warn_on(void *ud, const char *msg, int tocont);
static void warn_cont(void *ud, const char *msg, int tocont);

static int warn_control(lua_State *L, const char *msg, int tocont) {
  if (tocont || *(msg++) != '@') return 0;
  if (strcmp(msg, "off") == 0) lua_setwarnf(L, warn_off, L);
  else if (strcmp(msg, "on") == 0) lua_setwarnf(L, warn_on, L);
  return 1;
}

static void warn_off(void *ud, const char *msg, int tocont) {
  warn_control(ud, msg, tocont);
}

static void warn_cont(void *ud, const char *msg, int tocont) {
  fprintf(stderr, "%s", msg);
  if (tocont) {
    lua_setwarnf(ud, warn_cont, ud);
  } else {
    fprintf(stderr, "\n");
    lua_setwarnf(ud, warn_on, ud);
  }
  fflush(stderr);
}

static void warn_on(void *ud, const char *msg, int tocont) {
  if (warn_control(ud, msg, tocont)) return;
  fprintf(stderr, "Lua warning: ");
  warn_cont(ud, msg, tocont);
}

static aio_host *newhost(lua_Alloc f, void *ud, unsigned flags) {
  aio_host *h = calloc(1, sizeof *h);
  if (h == NULL) return NULL;
  /* our allocator (alloc.c) unless the embedder brings one, or
  ** AIOLUA_MALLOC asks for the C library's (for valgrind and the like) */
  if (f == NULL && getenv("AIOLUA_MALLOC") == NULL) {
    if ((h->alloc = aio__alloc_new()) == NULL) {
      free(h);
      return NULL;
    }
    f = aio__lalloc;
    ud = h->alloc;
  }
  h->L = f ? lua_newstate(f, ud) : luaL_newstate();
  if (h->L == NULL) {
    aio__alloc_free(h->alloc);
    free(h);
    return NULL;
  }
  lua_atpanic(h->L, host_panic);
  lua_setwarnf(h->L, warn_off, h->L);
  lua_pushcfunction(h->L, open_protected);
  lua_pushlightuserdata(h->L, h);
  lua_pushboolean(h->L, (flags & AIO_HOST_NOENV) != 0);
  if (lua_pcall(h->L, 2, 0, 0) != LUA_OK) {
    fprintf(stderr, "aiolua: %s\n", lua_tostring(h->L, -1));
    if (h->s) aio__sched_close(h->s, h->L);
    aio__alloc_closing(h->alloc);
    lua_close(h->L);
    aio__alloc_free(h->alloc);
    free(h);
    return NULL;
  }
  return h;
}

aio_host *aio_host_newopt(unsigned flags) {
  return newhost(NULL, NULL, flags);
}

aio_host *aio_host_newalloc(lua_Alloc f, void *ud, unsigned flags) {
  if (f == NULL) return NULL;
  return newhost(f, ud, flags);
}

aio_host *aio_host_new(void) { return aio_host_newopt(0); }

lua_State *aio_host_lua(aio_host *h) { return h ? h->L : NULL; }

aio_host *aio_host_of(lua_State *L) {
  aio_host *h;
  if (L == NULL) return NULL;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &host_key);
  h = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return h;
}

const char *aio_host_errmsg(aio_host *h) {
  return h ? h->errmsg : "aiolua: NULL host";
}

/* ---- on the application's libev loop ---- */

/* from the application's loop, before it blocks and after it polled:
** run what is due, then tell the backend when to come back */
static void drive(void *data) {
  aio_host *h = data;
  if (h->s->running || h->s->closed) return;  /* a dostring polls itself */
  if (aio__sched_step(h->s, h->L, 0) != 0) {
    fprintf(stderr, "aiolua: %s\n", lua_tostring(h->L, -1));
    lua_pop(h->L, 1);
  }
  aio__loop_arm(h->s->lp, aio_host_timeout(h),
                h->s->ntasks > 0 || h->s->nwork > 0);
}

aio_host *aio_host_new_ev(void *ev_loop) {
  aio_host *h;
  if (ev_loop == NULL) return NULL;
  h = aio_host_new();
  if (h == NULL) return NULL;
  if (aio__loop_adopt(h->s->lp, ev_loop, drive, h) != 0) {
    aio_host_free(h);
    return NULL;
  }
  return h;
}

/* ---- running the main task ---- */

static int spawn_tramp(lua_State *L) {
  aio_host *h = lua_touserdata(L, 1);
  lua_remove(L, 1);
  aio__spawn(L, h->s, lua_gettop(L) - 1);
  return 1;
}

/* errmsg(task): its error as a string, then its traceback */
static int errmsg_tramp(lua_State *L) {
  lua_getiuservalue(L, 1, 1);
  aio__tostring(L, -1);                        /* task err msg */
  aio__extras(L, 1);
  if (lua_getfield(L, -1, "traceback") == LUA_TSTRING)
    lua_pushfstring(L, "%s\n%s", lua_tostring(L, 3), lua_tostring(L, -1));
  else
    lua_pushvalue(L, 3);
  return 1;
}

/* the message of a failed task at idx: its error, then its traceback (run
** protected: out of memory, the message says so) */
static void task_errmsg(aio_host *h, lua_State *L, int idx) {
  int top = lua_gettop(L);
  idx = lua_absindex(L, idx);
  lua_pushcfunction(L, errmsg_tramp);
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 1, 1, 0) == LUA_OK || lua_isstring(L, -1))
    set_errmsg(h, lua_tostring(L, -1));
  else
    set_errmsg(h, "not enough memory");
  lua_settop(L, top);
}

/* share_context(task, sched): the task's context is the Lua state's */
static int share_context(lua_State *L) {
  aio__extras(L, 1);
  aio__context(L, lua_touserdata(L, 2));  /* no task runs: the state's */
  lua_setfield(L, -2, "context");
  return 0;
}

static int results_tramp(lua_State *L) {
  return aio__future_results(L, 1);
}

int aio_host_call(aio_host *h, int nargs, int nresults) {
  lua_State *L;
  int fi, rc, ti;
  aio_task *t;
  if (h == NULL) return 1;
  L = h->L;
  fi = lua_gettop(L) - nargs;
  set_errmsg(h, NULL);
  if (nargs < 0 || fi < 1 || !lua_isfunction(L, fi)) {
    set_errmsg(h, "aio_host_call: no function below the arguments");
    return 1;
  }
  if (h->main != NULL || h->s->running) {
    lua_settop(L, fi - 1);
    set_errmsg(h, "aio_host_call: the loop is already running");
    return 1;
  }
  lua_pushcfunction(L, spawn_tramp);
  lua_insert(L, fi);
  lua_pushlightuserdata(L, h);
  lua_insert(L, fi + 1);
  if (lua_pcall(L, nargs + 2, 1, 0) != LUA_OK) {
    set_errmsg(h, lua_tostring(L, -1));
    lua_settop(L, fi - 1);
    return 1;
  }
  ti = lua_gettop(L);
  t = lua_touserdata(L, ti);
  t->tflags |= T_TRACED;  /* its failure is printed: cancellation too */
  /* It works in the host's own context (aio.ContextVar), not a copy: what
  ** one REPL chunk or dostring sets, the next one sees, as statements at
  ** Python's asyncio REPL share one context.  It allocates: out of
  ** memory, the task keeps the copy it was spawned with. */
  lua_pushcfunction(L, share_context);
  lua_pushvalue(L, ti);
  lua_pushlightuserdata(L, h->s);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) lua_pop(L, 1);
  h->main = t;
  rc = aio__sched_run(h->s, L, &t->fut);
  h->main = NULL;
  if (rc != 0) {
    set_errmsg(h, lua_tostring(L, -1));
    lua_settop(L, fi - 1);
    return 1;
  }
  if (t->fut.state != AIO_RESULT) {
    t->fut.flags &= ~AIO_F_UNRETRIEVED;  /* reported through errmsg */
    task_errmsg(h, L, ti);
    lua_settop(L, fi - 1);
    return 1;
  }
  lua_pushcfunction(L, results_tramp);
  lua_insert(L, ti);
  if (lua_pcall(L, 1, nresults, 0) != LUA_OK) {
    set_errmsg(h, lua_tostring(L, -1));
    lua_settop(L, fi - 1);
    return 1;
  }
  return 0;
}

int aio_host_dostring(aio_host *h, const char *chunk, const char *name) {
  lua_State *L;
  int rc;
  if (h == NULL) return 1;
  if (chunk == NULL) {
    set_errmsg(h, "aio_host_dostring: NULL chunk");
    return 1;
  }
  L = h->L;
  if (name && name[0] != '=' && name[0] != '@') {
    /* "=name", made without Lua: out of memory, only the load (which is
    ** protected) fails */
    char buf[512];
    snprintf(buf, sizeof buf, "=%s", name);
    rc = luaL_loadbuffer(L, chunk, strlen(chunk), buf);
  } else {
    rc = luaL_loadbuffer(L, chunk, strlen(chunk), name ? name : chunk);
  }
  if (rc != LUA_OK) {
    set_errmsg(h, lua_tostring(L, -1));
    lua_pop(L, 1);
    return 1;
  }
  return aio_host_call(h, 0, 0);
}

int aio_host_dofile(aio_host *h, const char *path) {
  lua_State *L;
  if (h == NULL) return 1;
  L = h->L;
  if (luaL_loadfile(L, path) != LUA_OK) {
    set_errmsg(h, lua_tostring(L, -1));
    lua_pop(L, 1);
    return 1;
  }
  return aio_host_call(h, 0, 0);
}

/* ---- the loop ---- */

static int loop_result(aio_host *h, int rc) {
  if (rc == 0) return 0;
  set_errmsg(h, lua_tostring(h->L, -1));
  lua_pop(h->L, 1);
  return 1;
}

int aio_host_run(aio_host *h) {
  if (h == NULL) return 1;
  set_errmsg(h, NULL);
  return loop_result(h, aio__sched_run(h->s, h->L, NULL));
}

int aio_host_step(aio_host *h, double timeout) {
  if (h == NULL) return 1;
  set_errmsg(h, NULL);
  return loop_result(h, aio__sched_turn(h->s, h->L, timeout));
}

/* aio_host_post comes from any thread at any time, also while the host is
** being freed and after: a thread that posts until it is refused must be
** refused, not touch freed memory.  So a post looks at the host and queues
** under posts_lock, and aio_host_free marks the host dead under it before
** the loop and its queue go.  A freed host's record itself is kept (all
** it owned is freed), listed on dead_hosts so leak checkers see it held:
** its address is never another host's, and a post to it, however late,
** is refused.  That is sizeof(aio_host), about 150 bytes, per host freed. */
static pthread_mutex_t posts_lock = PTHREAD_MUTEX_INITIALIZER;
static aio_host *dead_hosts;

static void post_tramp(void *owner, void *ud) {
  host_post p = *(host_post *)ud;
  free(ud);
  p.fn(owner, p.ud);
}

int aio_host_post(aio_host *h, void (*fn)(aio_host *, void *), void *ud) {
  host_post *p;
  int rc;
  if (h == NULL || fn == NULL) return 1;
  p = malloc(sizeof *p);
  if (p == NULL) return 1;
  p->fn = fn;
  p->ud = ud;
  pthread_mutex_lock(&posts_lock);
  rc = h->dead ? -EPIPE : aio__sched_post(h->s, post_tramp, p);
  pthread_mutex_unlock(&posts_lock);
  if (rc != 0) {
    free(p);
    return 1;
  }
  return 0;
}

int aio_host_fd(aio_host *h) {
  if (h == NULL) return -1;
  return aio__loop_fd(h->s->lp);
}

static double until(aio_heap *hp, double now) {
  aio_timer *top = aio__heap_top(hp);
  if (top == NULL) return -1;
  return top->when > now ? top->when - now : 0;
}

double aio_host_timeout(aio_host *h) {
  aio_sched *s;
  double a, b;
  if (h == NULL) return -1;
  s = h->s;
  if (s->closed) return -1;
  aio__loop_flush(s->lp);  /* the application blocks on aio_host_fd next */
  if (s->rcount > 0 || s->posted) return 0;
  a = until(&s->timers, aio__now(s));
  b = until(&s->rtimers, aio__clock());
  if (a < 0) return b;
  return b < 0 || a < b ? a : b;
}

/* ---- C modules ---- */

static int open_cmodule(lua_State *L) {
  const luaL_Reg *funcs = lua_touserdata(L, lua_upvalueindex(1));
  lua_newtable(L);
  luaL_setfuncs(L, funcs, 0);
  return 1;
}

int aio_host_register(aio_host *h, const char *name, const luaL_Reg *funcs) {
  lua_State *L;
  if (h == NULL) return 1;
  if (name == NULL || funcs == NULL) {
    set_errmsg(h, "aio_host_register: NULL name or functions");
    return 1;
  }
  L = h->L;
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushlightuserdata(L, (void *)funcs);
  lua_pushcclosure(L, open_cmodule, 1);
  lua_setfield(L, -2, name);
  lua_pop(L, 1);
  return 0;
}

/* ---- the worker pool ---- */

typedef struct host_work {
  aio_work w;                 /* first: the pool hands this back */
  aio_host *h;
  void (*work)(void *);
  void (*done)(aio_host *, void *, int);
  void *ud;
} host_work;

static void hw_work(aio_work *w) {
  host_work *hw = (host_work *)w;
  hw->work(hw->ud);
}

static void hw_done(aio_work *w, int status) {
  host_work *hw = (host_work *)w;
  if (hw->done) hw->done(hw->h, hw->ud, status != 0);
  free(hw);
}

int aio_host_submit_work(aio_host *h, void (*work)(void *ud),
                         void (*done)(aio_host *h, void *ud, int status),
                         void *ud) {
  host_work *hw;
  int rc;
  if (h == NULL) return 1;
  if (work == NULL) {
    set_errmsg(h, "aio_host_submit_work: NULL work function");
    return 1;
  }
  hw = calloc(1, sizeof *hw);
  if (hw == NULL) {
    set_errmsg(h, "aio_host_submit_work: not enough memory");
    return 1;
  }
  hw->h = h;
  hw->work = work;
  hw->done = done;
  hw->ud = ud;
  rc = aio__pool_submit(h->s, &hw->w, hw_work, hw_done);
  if (rc != 0) {
    free(hw);
    set_errmsg(h, aio__strerror(rc));
    return 1;
  }
  return 0;
}

/* ---- SIGINT ---- */

/* the main task; once it has ended and the host is closing, every task
** still finishing its cleanup (as asyncio.run, where Ctrl-C then stops
** the cleanup too) */
static void cancel_main(void *owner, void *ud) {
  aio_host *h = owner;
  lua_State *L = h->L;
  (void)ud;
  lua_pushliteral(L, "interrupted (SIGINT)");
  if (h->main != NULL) {
    aio__task_cancel(L, h->main, lua_gettop(L));
  } else if (h->closing) {
    lua_Integer i, n;
    aio__push_tasks(L, h->s);
    n = (lua_Integer)lua_rawlen(L, -1);
    for (i = 1; i <= n; i++) {
      if (lua_rawgeti(L, -1, i) == LUA_TUSERDATA)
        aio__task_cancel(L, lua_touserdata(L, -1), lua_gettop(L) - 2);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

void aio__host_cancel_main(aio_host *h, const char *msg) {
  lua_State *L = h->L;
  if (h->main == NULL || !lua_checkstack(L, 1)) return;
  lua_pushstring(L, msg);  /* ("exit": interned already, by the REPL) */
  aio__task_cancel(L, h->main, lua_gettop(L));
  lua_pop(L, 1);
}

/* instructions a task may run after a SIGINT, without the loop hearing of
** it, before it is taken as computing for ever and cancelled in place */
#define BUSY_COUNT 1000000

static void busy_hook(lua_State *L, lua_Debug *ar) {
  aio_sched *s = aio__rt(L)->sched;
  aio_host *h = s ? s->post_owner : NULL;
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  if (h != NULL && h->nseen < h->nasync) {  /* the loop never got to it */
    /* an error out of a hook leaves the thread's hooks off for good (only
    ** a pcall restores them): the thread must not be reused */
    aio_task *t = s->current;
    if (t != NULL && t->co == L) t->tflags |= T_EXPOSED;
    h->nhooked = h->nasync;  /* the loop must not cancel again */
    aio__error(L, "CancelledError", 0, "interrupted (SIGINT)");
  }
}

/* in the signal handler (as lua.c's laction): a task that computes without
** waiting never lets the loop see the signal, so a count hook on it
** cancels it in place if the loop has not heard of the signal by then */
static void on_sigint_async(int signum, void *data) {
  aio_host *h = data;
  aio_task *t = h->s->current;
  (void)signum;
  /* Lua code watches SIGINT itself (loop:add_signal_handler,
  ** aio.wait_signal): the signal is its own, as a SIGINT handler added
  ** with asyncio's add_signal_handler replaces KeyboardInterrupt */
  if (h->s->sigint_users > 0) return;
#ifdef _WIN32
  /* Windows runs this in the console's own handler thread, which may
  ** block: a second one ends the process here, as the default handler's
  ** ExitProcess does, and not in the loop's thread while this thread is
  ** still on its way out (wine then, rarely, kills the process with
  ** SIGKILL instead of reporting 130) */
  if (++h->nasync > 1 && !(h->sigflags & AIO_SIGINT_STAY)) {
    fflush(NULL);
    _exit(130);
  }
#else
  if (++h->nasync > 1 && !(h->sigflags & AIO_SIGINT_STAY) &&
      h->nasync > h->nseen + 1)
    _exit(130);  /* a second one the loop could not see: out at once */
#endif
  /* only the task the SIGINT is for (asyncio's Runner cancels the main
  ** task): a busy background task runs on, and the main task is
  ** cancelled once the loop hears of the signal */
  if (t != NULL && t->co != NULL && (h->main == NULL || t == h->main))
    lua_sethook(t->co, busy_hook, LUA_MASKCOUNT, BUSY_COUNT);
}

static void on_sigint(aio_bhandle *bh, int signum, void *data) {
  aio_host *h = data;
  int taken = h->nhooked >= h->nasync;  /* busy_hook cancelled already */
  (void)bh; (void)signum;
  if (h->nseen == h->nasync) return;  /* a SIGINT Lua code watches */
  h->nseen = h->nasync;
  if (++h->nsigint > 1 && !(h->sigflags & AIO_SIGINT_STAY)) {
    /* the second one: out at once */
    fflush(NULL);
    _exit(130);
  }
  if (!taken) aio__sched_post(h->s, cancel_main, NULL);
}

int aio_host_catch_sigint(aio_host *h) {
  int rc;
  if (h == NULL) return 1;
  if (h->sigint) return 0;
  rc = aio__signal_start(h->s->lp, &h->sigint, SIGINT, on_sigint, h);
  if (rc != 0) {
    set_errmsg(h, aio__strerror(rc));
    return 1;
  }
  aio__handle_ref(h->sigint, 0);
  aio__signal_async(h->sigint, on_sigint_async, h);
  return 0;
}

int aio_host_interrupted(aio_host *h) {
  if (h == NULL) return 0;
  return h->nasync > h->nsigint ? (int)h->nasync : h->nsigint;
}

int aio_host_catch_sigint_opt(aio_host *h, unsigned flags) {
  if (h == NULL) return 1;
  h->sigflags = flags;
  return aio_host_catch_sigint(h);
}

/* ---- watching a descriptor (for the REPL) ---- */

struct aio_watch {
  aio_host *h;
  aio_bhandle *bh;
  aio_watch_cb cb;
  void *ud;
  int fd;
  aio_watch *next;
};

static void on_watch(aio_bhandle *bh, int events, void *data) {
  aio_watch *w = data;
  (void)bh; (void)events;
  w->cb(w->h, w->fd, w->ud);
}

int aio_host_watch(aio_host *h, int fd, aio_watch_cb cb, void *ud,
                   aio_watch **out) {
  aio_watch *w;
  int rc;
  if (h == NULL || cb == NULL || out == NULL) return 1;
  w = calloc(1, sizeof *w);
  if (w == NULL) {
    set_errmsg(h, "not enough memory");
    return 1;
  }
  w->h = h;
  w->cb = cb;
  w->ud = ud;
  w->fd = fd;
  rc = aio__poll_start(h->s->lp, &w->bh, fd, AIO_POLL_READABLE, on_watch, w);
  if (rc != 0) {
    set_errmsg(h, aio__strerror(rc));
    free(w);
    return 1;
  }
  aio__handle_ref(w->bh, 0);
  w->next = h->watches;
  h->watches = w;
  *out = w;
  return 0;
}

void aio_host_unwatch(aio_watch *w) {
  aio_watch **p;
  if (w == NULL) return;
  for (p = &w->h->watches; *p; p = &(*p)->next)
    if (*p == w) { *p = w->next; break; }
  aio__handle_close(w->bh, NULL, NULL);
  free(w);
}

/* ---- SIGQUIT: a dump of the tasks ---- */

static void dump_tasks(void *owner, void *ud) {
  aio_host *h = owner;
  lua_State *L = h->L;
  (void)ud;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "aio.debug");
  lua_call(L, 1, 1);                  /* runs in the post's pcall */
  lua_getfield(L, -1, "dump_tasks");
  lua_call(L, 0, 0);
  lua_pop(L, 1);
}

static void on_sigquit(aio_bhandle *bh, int signum, void *data) {
  aio_host *h = data;
  (void)bh; (void)signum;
  aio__sched_post(h->s, dump_tasks, NULL);
}

int aio_host_dump_on_sigquit(aio_host *h) {
  int rc;
  if (h == NULL) return 1;
  if (h->sigquit) return 0;
#ifndef SIGQUIT
  (void)rc; (void)on_sigquit;
  set_errmsg(h, "SIGQUIT does not exist on Windows");
  return 1;
#else
  rc = aio__signal_start(h->s->lp, &h->sigquit, SIGQUIT, on_sigquit, h);
  if (rc != 0) {
    set_errmsg(h, aio__strerror(rc));
    return 1;
  }
  aio__handle_ref(h->sigquit, 0);
  return 0;
#endif
}

void aio_host_set_debug(aio_host *h, int on) {
  if (h != NULL) h->s->debug = on;
}

/* ---- teardown ---- */

static int shutdown_tramp(lua_State *L) {
  aio_host *h = lua_touserdata(L, 1);
  aio__sched_cancel_all(h->s, L);
  return 0;
}

int aio_host_shutdown(aio_host *h) {
  if (h == NULL) return 1;
  if (h->s->running) {
    set_errmsg(h, "aio_host_shutdown: the host's loop is running");
    return 1;
  }
  h->closing = 1;
  /* protected: out of memory (a memory budget the tasks have spent) the
  ** cancellation stops where it is, and aio__sched_close ends the rest */
  lua_pushcfunction(h->L, shutdown_tramp);
  lua_pushlightuserdata(h->L, h);
  if (lua_pcall(h->L, 1, 0, 0) != LUA_OK) {
    set_errmsg(h, lua_tostring(h->L, -1));
    lua_pop(h->L, 1);
    return 1;
  }
  return 0;
}

/* the host kept by aio__host_free_for_exit: its state and memory stay
** reachable from here (LeakSanitizer reports none of it) until the exit */
static aio_host *exit_kept;

/* closeforexit NULL: lua_close, and all is freed; else it closes the state
** for the process's exit, which frees the rest */
static void host_free(aio_host *h, void (*closeforexit)(lua_State *)) {
  if (h == NULL || h->dead) return;  /* freed already: its record stays */
  if (h->s->running) {  /* from inside its own loop: refuse, not crash */
    fprintf(stderr, "aiolua: aio_host_free: the host's loop is running; "
            "free it after aio_host_run/step/dostring returns\n");
    return;
  }
  aio_host_shutdown(h);
  while (h->watches) aio_host_unwatch(h->watches);
  if (h->sigint) aio__handle_close(h->sigint, NULL, NULL);
  if (h->sigquit) aio__handle_close(h->sigquit, NULL, NULL);
  h->sigint = h->sigquit = NULL;
  /* posts from here on are refused; those queued run in the close */
  pthread_mutex_lock(&posts_lock);
  h->dead = 1;
  pthread_mutex_unlock(&posts_lock);
  aio__sched_close(h->s, h->L);
  aio__alloc_closing(h->alloc);
  if (closeforexit != NULL) {
    closeforexit(h->L);
    exit_kept = h;
    return;
  }
  lua_close(h->L);
  aio__alloc_free(h->alloc);
  free(h->errmsg);
  /* the record stays, for late posts (above) */
  pthread_mutex_lock(&posts_lock);
  memset(h, 0, sizeof *h);
  h->dead = 1;
  h->next_dead = dead_hosts;
  dead_hosts = h;
  pthread_mutex_unlock(&posts_lock);
}

void aio_host_free(aio_host *h) {
  host_free(h, NULL);
}

/* the aiolua program, right before it exits: as aio_host_free, but the
** state is closed with closeforexit (src/host/lua_exit.patch: the
** finalizers and the main thread's to-be-closed variables run, the objects
** are not freed one by one); h must not be used again */
void aio__host_free_for_exit(aio_host *h, void (*closeforexit)(lua_State *)) {
  host_free(h, closeforexit);
}

/* ---- futures completed from C ---- */

aio_future *aio_future_push(lua_State *L) {
  aio_pfuture *f = (aio_pfuture *)aio__future_new(L);  /* a plain one */
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  f->cL = lua_tothread(L, -1);  /* completions run on the loop's thread */
  lua_pop(L, 1);
  lua_pushvalue(L, -1);
  f->cref = luaL_ref(L, LUA_REGISTRYINDEX);
  return &f->f;
}

/* onto the stack of the thread running Lua code: a task's (or the user
** coroutine it resumed), where a C function it called returns the future;
** with no task running, onto the host's */
aio_future *aio_future_new(aio_host *h) {
  if (h == NULL) return NULL;
  return aio_future_push(aio__sched_running(h->s, h->L));
}

/* where the n values of a completion are: on the stack of the thread
** running Lua code (a C function a task called pushes them on its own L),
** unless they were pushed on the host's; with no task running (a loop
** callback, a post), on the host's */
static lua_State *values_of(lua_State *L, int n) {
  aio_rt *rt = aio__rt(L);
  return aio__sched_values(rt ? rt->sched : NULL, L, n);
}

/* a failure's message, in h (the host of the future's state, if any) */
static int complete_failed(aio_host *h, lua_State *L, const char *fname,
                           const char *why) {
  if (h != NULL) {
    lua_pushfstring(L, "%s: %s", fname, why);
    set_errmsg(h, lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  return 1;
}

static int complete(aio_future *fut, lua_State *from, int state, int n,
                    const char *fname) {
  aio_pfuture *f = (aio_pfuture *)fut;
  lua_State *L = f->cL;
  int fi, done;
  aio_host *h = aio_host_of(L);
  if (h != NULL) set_errmsg(h, NULL);
  if (f->cref == LUA_NOREF) {  /* completed already */
    lua_pop(from, n);
    return complete_failed(h, L, fname, "the future was completed already");
  }
  if (from != L) {
    if (!lua_checkstack(L, n + 2)) {
      lua_pop(from, n);
      return complete_failed(h, L, fname, "not enough memory");
    }
    lua_xmove(from, L, n);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, f->cref);
  lua_insert(L, -n - 1);
  fi = lua_gettop(L) - n;
  done = aio__future_complete(L, fi, state, n);
  lua_pop(L, 1);
  luaL_unref(L, LUA_REGISTRYINDEX, f->cref);
  f->cref = LUA_NOREF;
  if (!done)
    return complete_failed(h, L, fname, "the future is done already (it was "
                           "cancelled, or completed from Lua)");
  return 0;
}

int aio_future_resolve(aio_future *f, int n) {
  lua_State *L;
  if (f == NULL) return 1;
  L = ((aio_pfuture *)f)->cL;
  if (n < 0)
    return complete_failed(aio_host_of(L), L, "aio_future_resolve",
                           "a negative number of results");
  if (lua_gettop(values_of(L, n)) < n)
    return complete_failed(aio_host_of(L), L, "aio_future_resolve",
                           "fewer values on the stack than n");
  return complete(f, values_of(L, n), AIO_RESULT, n, "aio_future_resolve");
}

int aio_future_reject(aio_future *f) {
  const char *et;
  lua_State *from;
  if (f == NULL) return 1;
  from = values_of(((aio_pfuture *)f)->cL, 1);
  if (lua_gettop(from) < 1)
    return complete_failed(aio_host_of(from), ((aio_pfuture *)f)->cL,
                           "aio_future_reject", "no error value on the stack");
  et = aio__errtype(from, -1);
  return complete(f, from, et && strcmp(et, "CancelledError") == 0
                           ? AIO_CANCELLED : AIO_ERROR, 1, "aio_future_reject");
}
