/*
** sched.h: the scheduler, shared by the host and the bindings (internal).
**
** A task is a Lua thread plus a C record (the userdata "aio.Task", which is
** also a future).  The ready ring holds tasks and calls (call_soon /
** call_later / done callbacks); one loop iteration runs what was ready at its
** start, fires due timers, and polls the backend only when nothing is ready
** (or every so many passes), so hand-offs between tasks never cost a
** syscall.
**
** A waiting call is a C function running in the task: it records how to undo
** its wait (cleanup), parks the task (aio__park: its state leaves T_RUNNING
** and it yields no value; the state, not a sentinel, tells a wait from a
** plain yield) and finishes in a continuation (lua_yieldk), where
** aio__wait_end() raises the CancelledError if the wait was cancelled.
** Whatever was waited on calls aio__wake(); a cancel runs the cleanup
** instead.  Threads are created at a task's first step and, once it ends,
** go back to a pool unless user code saw them (coroutine.running).
*/
#ifndef AIO_SCHED_H
#define AIO_SCHED_H

#include <stdint.h>

#include "lua.h"
#include "lauxlib.h"

#include "loop.h"
#include "timer.h"

#define AIO_VERSION "0.1.0"

#define AIO_TASK_MT   "aio.Task"
#define AIO_FUTURE_MT "aio.Future"
#define AIO_WATCH_MT  "aio.failure"  /* a failure's watcher: has __gc */
#define AIO_CALL_MT   "aio.Handle"
#define AIO_LOOP_MT   "aio.Loop"
#define AIO_ERROR_MT  "aio.Error"

typedef struct aio_sched aio_sched;
typedef struct aio_task aio_task;
typedef struct aio_future aio_future;

/* what sits in the ready ring and owns timers: the first byte of each */
enum { AIO_K_FUTURE = 1, AIO_K_TASK, AIO_K_CALL };

/* future states */
enum { AIO_PENDING, AIO_RESULT, AIO_ERROR, AIO_CANCELLED };

/* future flags */
#define AIO_F_UNRETRIEVED 1   /* failed and nobody has looked at the error */
#define AIO_F_CALLBACKS   2   /* has done callbacks (in its extras) */
#define AIO_F_EXTRAS      4   /* its extras table exists */

typedef struct aio_waiter {
  struct aio_waiter *prev, *next;
} aio_waiter;

/* An aio.Future.  Uservalue 1: the result (one value) or a table of them
** (n > 1) or the error.  Its extras (done callbacks, task name, traceback,
** pending CancelledError, context) are a table made on first need and kept
** in a registry table with weak keys (aio__extras), so the many futures
** and tasks that never need one do not carry a slot for it. */
struct aio_future {
  uint8_t kind;         /* AIO_K_FUTURE or AIO_K_TASK */
  uint8_t state;
  uint8_t flags;
  int nres;             /* results, when state is AIO_RESULT */
  aio_waiter waiters;   /* tasks awaiting it (list head) */
};

/* a plain aio.Future (not a task): C code may hold one (aiolua.h) */
typedef struct aio_pfuture {
  aio_future f;
  int cref;             /* registry ref while C code holds it, else LUA_NOREF */
  lua_State *cL;        /* the host's state, for futures made from C */
} aio_pfuture;

/* task states */
enum { T_NEW, T_READY, T_RUNNING, T_PARKED, T_DONE };
/* task flags */
#define T_CANCEL_PENDING 1  /* a cancel waits for the task's next wait */
#define T_EXPOSED        2  /* user code holds its thread: do not reuse it */
#define T_TIMEDOUT       4  /* its timer ended the last wait */
#define T_CLOSING        8  /* cancelled by the loop's shutdown */
#define T_TRACED        16  /* keeps a traceback of a CancelledError too */
#define T_CANCEL_BUSY   64  /* passing a cancel to what it awaits */
#define T_CANCEL_CYCLE 128  /* that cancel came back (awaits in a cycle):
                            ** it is raised, not passed on again */
#define T_REALWAIT      32  /* parked on work that ends in real time (a
                            ** thread, a child): autojump waits for it */

typedef void (*aio_cleanup)(aio_task *t);

/* An aio.Task.  Before its first step uservalue 1 holds the function and
** uservalues 2.. its arguments; while it runs, its thread.  It is anchored in the registry (ref) while
** it lives.  No task has a finaliser: a failed one gets a watcher that has
** (watch_failure in sched.c), so the others cost the collector nothing. */
struct aio_task {
  aio_future fut;
  aio_sched *sched;
  lua_State *co;          /* its thread while it runs or waits */
  aio_timer timer;        /* kind AIO_K_TASK: a sleep or wait deadline */
  aio_waiter wnode;       /* in the waiter list of the future it awaits */
  aio_cleanup cleanup;    /* undoes the current wait; run on cancel */
  void *wait_data;        /* the wait's own data, for its cleanup */
  lua_State *wait_L;      /* while parked: the thread that waits (t->co or
                          ** a coroutine it runs); an await's future is
                          ** on its top */
  const char *wait_what;  /* what it waits on ("sleep", "future" ...) */
  int ref;                /* its registry slot while it lives */
  uint32_t id;
  uint8_t state;
  uint8_t tflags;
  uint16_t nargs;
  int ncancel;            /* cancel requests, less uncancel() calls */
};

/* call_soon / call_later / a done callback: uservalue 1 the function, 2.. its
** arguments */
typedef struct aio_call {
  uint8_t kind;           /* AIO_K_CALL */
  uint8_t state;          /* C_SCHEDULED, C_CANCELLED, C_DONE */
  uint8_t real;           /* its timer is on the real clock (rtimers) */
  uint16_t nargs;
  aio_timer timer;        /* kind AIO_K_CALL, for call_later */
  int ref;                /* slot in the sched's call table while scheduled */
} aio_call;
enum { C_SCHEDULED, C_CANCELLED, C_DONE };

typedef void (*aio_post_fn)(void *owner, void *ud);
typedef struct aio_post aio_post;

/* finished task threads kept for reuse (sched.c, take_thread) */
#define AIO_THREAD_POOL 256

/* the loop: a userdata "aio.Loop" anchored in the registry while open */
struct aio_sched {
  lua_State *L;           /* the thread that runs the loop, set per run */
  struct aio_rt *rt;      /* the runtime of its Lua state */
  aio_loop *lp;
  aio_heap timers;        /* on the loop's clock (virtual under testing) */
  aio_heap rtimers;       /* always on the real clock: watchdogs */
  void **ring;            /* ready ring of tasks and calls */
  uint32_t rhead, rcount, rcap;
  aio_task *current;      /* the task being resumed */
  lua_State *inner;       /* the user coroutine inner_task resumed (coro.c) */
  aio_task *inner_task;   /* ... which counts only while that task runs */
  lua_State *rL;          /* the thread the loop runs on (run_protected) */
  int rtop;               /* ... and its stack top while it resumes tasks */
  int in_call;            /* inside a callback (run_call) */
  aio_task *closing;      /* a task whose thread lua_resetthread closes
                          ** (its <close> variables: they cannot wait) */
  int ntasks;             /* live tasks */
  int self_ref;           /* registry: the loop userdata */
  int calls_ref;          /* registry: table of scheduled calls */
  int ncalls;             /* how many are in it */
  int pool_ref;           /* registry: the pooled threads, at their slots */
  int nfree, nempty, nslots;  /* the thread pool: see take_thread */
  lua_State *pool[AIO_THREAD_POOL + 1];         /* by slot (1..) */
  uint16_t freel[AIO_THREAD_POOL];              /* idle pooled threads */
  uint16_t emptyl[AIO_THREAD_POOL];             /* slots given up */
  int failed_ref;         /* registry: weak set of unretrieved failures */
  int closed;
  int running;            /* inside aio__sched_run / _step */
  int passes;             /* ready passes since the last poll */
  void *post_owner;       /* first argument of posted functions */
  void *post_lock;        /* pthread mutex (sched.c) */
  aio_post *post_head, *post_tail;
  int post_closed;
  volatile int posted;
  /* the virtual clock (aio.testing) */
  int virt;               /* aio__now() is vnow, not the real clock */
  int autojump;           /* when idle, jump vnow to the next timer */
  double vnow;
  double jump_threshold;  /* real seconds to wait for I/O before a jump */
  int nrealwait;          /* tasks parked with aio__park_real */
  int cancel_depth;       /* cancels passed on at once, nested */
  /* debug mode (loop:set_debug) */
  int debug;
  double slow_step;       /* warn when one step holds the loop longer */
  double nested;          /* debug: time of steps nested in this one (an
                          ** eager task's first), not its own */
  /* the worker pool (pool.c) */
  int nwork;              /* jobs in flight: aio__sched_run waits for them */
  int pool_user;          /* it has used the pool: its close lets go */
  /* Lua watchers of SIGINT (signal.c): while there are any, SIGINT is
  ** theirs, not the host's (host.c); read in the signal handler */
  volatile int sigint_users;
};

/* the loop's clock: the virtual one under aio.testing, else monotonic */
static inline double aio__now(aio_sched *s) {
  return s->virt ? s->vnow : aio__clock();
}

/* per Lua state: which loop runs in this thread, task numbering */
typedef struct aio_rt aio_rt;
struct aio_rt {
  aio_sched *sched;
  uint32_t next_id;
  /* the metatables of tasks, futures and calls: registry refs to set them
  ** and their addresses to recognise them, without string lookups */
  int task_mt, future_mt, call_mt, watch_mt;
  const void *task_mtp, *future_mtp, *call_mtp, *watch_mtp;
  int threads_ref;        /* registry: exposed task threads -> their task */
  int task_free;          /* registry: first free task slot, 0: none */
  int context_used;       /* an aio.ContextVar was used: contexts may hold
                          ** values, and spawn and call_soon copy them */
};

aio_rt *aio__rt(lua_State *L);
/* after the metatables exist (luaopen__aio_core): remember them */
void aio__rt_metatables(lua_State *L);
/* the userdata on top gets the metatable at registry slot ref (whose
** pointer is mtp) */
void aio__setmt(lua_State *L, int ref, const void *mtp);
/* the task at idx, or NULL if it is not one */
aio_task *aio__totask(lua_State *L, int idx);
/* the task whose thread co is, if user code has seen that thread
** (coroutine.running), else NULL; set or clear the entry */
aio_task *aio__thread_task(lua_State *L, lua_State *co);
void aio__thread_task_set(lua_State *L, lua_State *co, aio_task *t);
/* what a parked task waits on, in detail (task:waiting()'s third value,
** dump_tasks): a binding names a function for the waits it parks under
** `what` (the same string pointer or an equal string); it pushes one
** value from t->wait_data, or returns 0 to push nothing */
typedef int (*aio_wait_detail)(lua_State *L, aio_task *t);
void aio__wait_detail_set(const char *what, aio_wait_detail fn);
int aio__wait_detail(lua_State *L, aio_task *t);
/* push prefix .. "host:port" ("[host]:port" for IPv6, a Unix path alone) */
void aio__push_addr_label(lua_State *L, const char *prefix,
                          const aio_addr *a);
/* the running loop, or raise "<fname>: no running loop" */
aio_sched *aio__sched_check(lua_State *L, const char *fname);
/* raise a misuse error (a string, as luaL_error's) blamed on the first Lua
** caller outside aio's own modules: a misuse reached through a Lua wrapper
** such as aio.open_connection names the user's line */
int aio__user_error(lua_State *L, const char *fmt, ...);

/* ---- loop life ---- */

/* a new loop, pushed as its userdata; NULL with *err on failure */
aio_sched *aio__sched_new(lua_State *L, int *err);
/* the thread running Lua code now: the current task's (or the user
** coroutine it resumed), else the scheduler's; dflt with no scheduler */
lua_State *aio__sched_running(aio_sched *s, lua_State *dflt);
/* where C code left n values for a completion (aio_future_resolve): on
** main (dflt) when it pushed them there while a task runs, else on the
** running thread's stack */
lua_State *aio__sched_values(aio_sched *s, lua_State *dflt, int n);
/* Run until `until` is done (NULL: until no task is left).  L is the thread
** that runs the loop.  0, or a negative code. */
int aio__sched_run(aio_sched *s, lua_State *L, aio_future *until);
/* one pass: what is ready runs, then I/O is waited for at most `timeout`
** s (< 0: no limit); for a foreign loop that has just polled */
int aio__sched_step(aio_sched *s, lua_State *L, double timeout);
/* one turn, as asyncio's _run_once (aio_host_step): I/O is waited for (not
** at all when something is ready, else at most `timeout` s), then what
** is ready runs */
int aio__sched_turn(aio_sched *s, lua_State *L, double timeout);
/* cancel every task and run until they have all ended */
void aio__sched_cancel_all(aio_sched *s, lua_State *L);
/* report unretrieved errors, drop pending calls, free the backend */
void aio__sched_close(aio_sched *s, lua_State *L);
int aio__sched_post(aio_sched *s, aio_post_fn fn, void *ud);

/* ---- tasks ---- */

/* pops a function and nargs arguments; pushes the new Task */
aio_task *aio__spawn(lua_State *L, aio_sched *s, int nargs);
/* the same, but the task runs at once, until its first wait or its end */
aio_task *aio__spawn_eager(lua_State *L, aio_sched *s, int nargs);
/* switch the loop's clock to virtual time (autojump: jump when idle) or
** back to real time, shifting pending deadlines so none is lost */
void aio__sched_set_virtual(aio_sched *s, int on, int autojump);
/* move the virtual clock forward and fire what is due */
void aio__sched_advance(aio_sched *s, double seconds);
/* the metatable of failures' watchers (sched.c, watch_failure) */
void aio__watch_open(lua_State *L);
/* __gc of the loop userdata */
int aio__sched_gc(lua_State *L);
/* push the userdata of a live task */
void aio__push_task(lua_State *L, aio_task *t);
/* push a new array of the live tasks of s */
void aio__push_tasks(lua_State *L, aio_sched *s);
/* request cancellation; the CancelledError is the value at errindex
** (0: make one with message at msgindex, 0 for none); 0 if already done */
int aio__task_cancel(lua_State *L, aio_task *t, int msgindex);

/* ---- waiting (C functions running in a task) ---- */

/* The current task, or raise: no loop, not in a task, or Lua cannot yield
** here.  A cancel requested while the task ran is raised here. */
aio_task *aio__wait_begin(lua_State *L, const char *fname);
/* park the current task and yield; k(L, status, ctx) runs when it wakes */
/* aio__park for a wait on work that goes on in real time and ends by
** itself (a worker thread's job, a child's exit, a pipe): the virtual
** clock's autojump does not jump while a task waits so (issue 9: it jumps
** when every task waits on timers only) */
int aio__park_real(lua_State *L, aio_task *t, aio_cleanup cleanup, void *data,
                   const char *what, lua_KContext ctx, lua_KFunction k);
int aio__park(lua_State *L, aio_task *t, aio_cleanup cleanup, void *data,
              const char *what, lua_KContext ctx, lua_KFunction k);
/* in a continuation: the task; raises its CancelledError if cancelled */
aio_task *aio__wait_end(lua_State *L);
/* undo the current task's wait (a wait that cannot be passed up) */
void aio__wait_abort(lua_State *L);
/* make a parked task ready (its wait is over, the waker undid it) */
void aio__wake(aio_task *t);

/* Starts the cache misses of resuming a thread, in steps 0, 1, 2, and of
** registry slot `ref` at step 1 (see src/host/lua_prefetch.patch).  Set by
** the aiolua program, whose own Lua build has it; NULL on a stock Lua
** (aio.so, libaiolua). */
extern void (*aio__prefetch_thread)(lua_State *L, int step, int ref);

/* Lean threads and C functions (src/host/lua_lean.patch): a call to a lean
** C function gets AIO_LEAN_SLOTS free stack slots instead of LUA_MINSTACK,
** and a task's thread starts with a stack for AIO_TASK_SLOTS values above
** its base.  The lean ones are the common waits: aio.sleep, await, a
** Queue's get, put and join, the wait under the locks, events,
** conditions, semaphores and barriers, a stream's reads, drain and
** wait_closed.  A task waiting in aio.sleep called from a small Lua
** function keeps 17 slots of stack, not 31.  A lean function pushes at
** most AIO_LEAN_SLOTS values past its arguments before it calls aio__room
** (its cancel paths do; the program's luaL_argerror takes what it needs
** itself).  Set by the aiolua program, whose own Lua has them; NULL on a
** stock Lua (aio.so, libaiolua), where every function and thread is as
** usual. */
#define AIO_LEAN_SLOTS 6

/* why a wait was refused, after the waiting function's name; the Lua
** combinators raise the same words (_aio.core.not_in_task, .cannot_wait) */
#define AIO_NOT_IN_TASK "not inside a task (a callback cannot wait)"
#define AIO_CANNOT_WAIT "cannot wait here: Lua cannot yield across this C " \
  "call (a table.sort comparator, a string.gsub callback, a __gc " \
  "metamethod, the main chunk of a required module, or a coroutine not " \
  "run by aio)"
#define AIO_TASK_SLOTS 11
/* A failed task's to-be-closed variables (src/host/lua_tbc.patch): pushes
** the innermost one still open of a thread an error stopped and takes it
** off the list, 0 when none is left.  Set by the aiolua program; NULL on a
** stock Lua, where lua_resetthread closes them and a __close cannot wait
** on that path. */
extern int (*aio__poptbc)(lua_State *L);
/* A userdata's metatable read and set by pointer (src/host/lua_udata.patch):
** what lua_getmetatable + lua_topointer answer, NULL for anything but a
** full userdata with one; and lua_setmetatable of a metatable the caller
** keeps alive.  Set by the aiolua program; NULL on a stock Lua. */
extern const void *(*aio__udatamt)(lua_State *L, int idx);
extern void (*aio__setudatamt)(lua_State *L, int idx, const void *mt);
extern lua_State *(*aio__newthread_lean)(lua_State *L, int slots);
extern void (*aio__pushlean)(lua_State *L, lua_CFunction f, int n, int slots);
/* make the C functions `names` (NULL-ended) of the table at idx lean,
** upvalues and all */
void aio__lean(lua_State *L, int idx, const char *const *names);
/* lua_pushcclosure, of a lean function when the Lua has them */
void aio__pushclosure_lean(lua_State *L, lua_CFunction f, int n);
/* a lean function's slow path: the LUA_MINSTACK slots any C function has */
void aio__room(lua_State *L);
/* A C method called as a plain function (pcall(obj.m, obj, bad)) has no
** name at its call site, and luaL_argerror then looks for it in the
** loaded modules: the methods table at idx goes into package.loaded as
** `name` ("aio.Future"), so the error says 'aio.Future.set_result', not
** '?'. */
void aio__name_methods(lua_State *L, int idx, const char *name);
/* sleep `delay` seconds; used by aio.sleep */
int aio__sleep(lua_State *L, double delay, int result);  /* result: the value at 1 */

/* ---- futures ---- */

void aio__future_init(aio_future *f, int kind);
/* push a new aio.Future */
aio_future *aio__future_new(lua_State *L);
/* the future or task at idx, or raise */
aio_future *aio__checkfuture(lua_State *L, int idx);
/* Complete the future at idx: state AIO_RESULT with the n values on top,
** or AIO_ERROR / AIO_CANCELLED with the error on top (n = 1).  Pops them.
** Wakes the waiters and schedules the done callbacks. 0 if already done. */
int aio__future_complete(lua_State *L, int idx, int state, int n);
/* push the results of the done future at idx, or raise its error */
int aio__future_results(lua_State *L, int idx);
/* wait for the future at idx; returns (via yield) its results */
int aio__await(lua_State *L, int idx);
/* push the extras table of the future at idx, making it if needed */
void aio__extras(lua_State *L, int idx);
/* push the weak-keyed table at registry[key] (lua_rawsetp), made first if
** `make`: 1; or 0, with nothing pushed, when there is none and !make */
int aio__weak_registry(lua_State *L, const void *key, int make);

/* ---- context (aio.ContextVar) ---- */

/* push the context table of what runs now (the current task's, else the
** running callback's, else the Lua state's), made on first use */
void aio__context(lua_State *L, aio_sched *s);
/* push a copy of it and return 1; or 0, nothing pushed, when it is empty
** (what call_soon, add_done_callback and spawn keep for what they start) */
int aio__context_copy(lua_State *L, aio_sched *s);

/* ---- calls ---- */

/* pops fn and nargs arguments; pushes the Handle; when < 0: soon.  ctx:
** the absolute index of the context table the call runs in, or 0 */
aio_call *aio__call_at(lua_State *L, aio_sched *s, int nargs, double when,
                       int ctx);
void aio__call_cancel(lua_State *L, aio_sched *s, aio_call *c);
/* move a call_later onto the real clock (immune to the virtual one) */
int aio__call_make_real(aio_sched *s, aio_call *c);

/* ---- errors (errors.c) ---- */

/* push an error object {type=, message=} (plus errno/code when code != 0) */
void aio__pusherror(lua_State *L, const char *type, int code,
                    const char *fmt, ...);
/* raise it */
int aio__error(lua_State *L, const char *type, int code, const char *fmt, ...);
/* the type of the aio error object at idx, or NULL */
const char *aio__errtype(lua_State *L, int idx);
/* the errno name ("ECONNREFUSED"), or NULL */
const char *aio__errname(int code);
/* tostring of the value at idx that never raises: pushes it */
const char *aio__tostring(lua_State *L, int idx);

/* ---- modules ---- */

int luaopen__aio_core(lua_State *L);
int luaopen__aio_coro(lua_State *L);
int luaopen__aio_stream(lua_State *L);
int luaopen__aio_udp(lua_State *L);
int luaopen__aio_dns(lua_State *L);
int luaopen__aio_process(lua_State *L);  /* issue 6 */
int luaopen__aio_signal(lua_State *L);   /* issue 6 */
int luaopen__aio_thread(lua_State *L);
int luaopen__aio_waitq(lua_State *L);
int luaopen__aio_queue(lua_State *L);
int luaopen__aio_tls(lua_State *L);      /* issue 5 */
int luaopen_aio(lua_State *L);
void aio__preload(lua_State *L);  /* modules.c: every module preloaded */

#endif
