/*
** aiolua.h: embedding aiolua in a C program.  A host is a Lua state with
** `aio` loaded (also as a global) plus its event loop.  Chunks run as the
** main task until they end; tasks they spawn live on under aio_host_step /
** aio_host_run.  All functions run on the host's thread, except
** aio_host_post.  int results: 0 on success,
** non-zero on failure with the message in aio_host_errmsg().
*/
#ifndef AIOLUA_H
#define AIOLUA_H

#include "lua.h"
#include "lauxlib.h"

#define AIOLUA_VERSION "0.1.0"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct aio_host aio_host;
typedef struct aio_future aio_future;

/* ---- hosts ---- */

aio_host *aio_host_new(void);                  /* NULL on failure */
#define AIO_HOST_NOENV 1u  /* ignore LUA_PATH, LUA_CPATH (as lua -E) */
aio_host *aio_host_newopt(unsigned flags);
/* as aio_host_newopt, with the Lua state on the allocator f (lua_newstate):
** a memory budget, or fault injection (tests/faults).  NULL on failure. */
aio_host *aio_host_newalloc(lua_Alloc f, void *ud, unsigned flags);
/* A host on the application's own libev loop (a struct ev_loop *, the
** default one or not).  The application runs that loop (ev_run); the host
** steps itself from prepare/check watchers it adds, and keeps the loop
** alive while its tasks wait on timers or I/O.  aio_host_free stops those
** watchers and leaves the loop to the application.  NULL on failure. */
aio_host *aio_host_new_ev(void *ev_loop);
/* cancels the remaining tasks, runs their cleanup, closes the loop, frees;
** no other call may use h afterwards (nor may a thread still post to it) */
void aio_host_free(aio_host *h);
/* the host's Lua state, NULL for a NULL host */
lua_State *aio_host_lua(aio_host *h);
/* the host of a Lua state (any of its threads), or NULL */
aio_host *aio_host_of(lua_State *L);

/* Run a chunk, a file (path NULL: stdin), or the function on top of the
** host's Lua stack with nargs arguments above it, as the main task until it
** ends.  aio_host_call pushes nresults results (LUA_MULTRET: all). */
int aio_host_dostring(aio_host *h, const char *chunk, const char *name);
int aio_host_dofile(aio_host *h, const char *path);
int aio_host_call(aio_host *h, int nargs, int nresults);
/* the error message (with a traceback) of the last failed call, or NULL */
const char *aio_host_errmsg(aio_host *h);

/* run until no task (nor timer) is left */
int aio_host_run(aio_host *h);
/* one loop iteration, as asyncio's: wait for events at most `timeout` s
** (< 0: until one comes; not at all when work is ready), then run what
** is ready, what the wait woke included */
int aio_host_step(aio_host *h, double timeout);
/* From any thread: fn(h, ud) runs on the loop's thread, in the order
** posted.  Non-zero once the host is closing: posts made while
** aio_host_free cancels the tasks are still taken (their cleanup may need
** them), refused from the moment the loop closes, and after
** aio_host_free has returned too, so a thread may post until it is
** refused.  (A freed host's record, about 150 bytes, is kept for that.) */
int aio_host_post(aio_host *h, void (*fn)(aio_host *, void *), void *ud);

/* Stepping the host from a foreign main loop (GUI toolkits, games): poll
** aio_host_fd(h) for reading with at most aio_host_timeout(h) seconds,
** then call aio_host_step(h, 0).  The fd is the backend's (epoll's); it
** polls readable when I/O, a signal or a post is waiting.  A negative
** value when there is none.  The timeout: 0 when work is ready, the time
** to the next timer, or -1 when only events can bring work. */
int aio_host_fd(aio_host *h);
double aio_host_timeout(aio_host *h);

/* Register C functions as a Lua module: require(name) returns a table of
** them (package.preload).  They may return futures (aio_future_new) and
** find their host with aio_host_of(L). */
int aio_host_register(aio_host *h, const char *name, const luaL_Reg *funcs);

/* The host's worker pool (the one aio.to_thread uses): work(ud) runs on a
** worker thread, then done(h, ud, status) on the loop's thread: status 0,
** or non-zero when work never ran (the host was freed first).  Loop thread
** only.  aio_host_run waits for the pending jobs. */
int aio_host_submit_work(aio_host *h, void (*work)(void *ud),
                         void (*done)(aio_host *h, void *ud, int status),
                         void *ud);

/* Cancel the tasks still running and run the loop until they have ended
** (their cleanup may wait), then the callbacks that became ready as they
** did; aio_host_free does it first too.  A program that reports how its
** run ended calls it before aio_host_interrupted.  Non-zero from inside
** the host's loop. */
int aio_host_shutdown(aio_host *h);

/* SIGINT on the loop: the first cancels the running main task (during
** aio_host_shutdown: the tasks still ending), a second exits the process
** at once with status 130 */
int aio_host_catch_sigint(aio_host *h);
/* how many SIGINTs arrived */
int aio_host_interrupted(aio_host *h);
/* SIGQUIT (Ctrl-\) prints every live task (aio.dump_tasks) to stderr and
** the program goes on */
int aio_host_dump_on_sigquit(aio_host *h);
/* debug mode (loop:set_debug): slow steps are reported, spawn sites kept */
void aio_host_set_debug(aio_host *h, int on);

/* ---- a program that reads its own input on the loop (the REPL) ---- */

/* as aio_host_catch_sigint; AIO_SIGINT_STAY: never exit, each SIGINT
** cancels the running main task (if any); aio_host_interrupted counts
** them, so the program can react between steps (a prompt clears its line) */
#define AIO_SIGINT_STAY 1u
int aio_host_catch_sigint_opt(aio_host *h, unsigned flags);

/* cb(h, fd, ud) runs on the loop's thread, inside aio_host_step (or
** aio_host_call), whenever fd is readable; it reads fd itself and must not
** call into Lua.  A watch does not keep aio_host_run going; close it with
** aio_host_unwatch (aio_host_free closes those left). */
typedef struct aio_watch aio_watch;
typedef void (*aio_watch_cb)(aio_host *h, int fd, void *ud);
int aio_host_watch(aio_host *h, int fd, aio_watch_cb cb, void *ud,
                   aio_watch **out);
void aio_host_unwatch(aio_watch *w);

/* ---- C functions that return futures (loop thread only) ---- */

/* pushes a new aio.Future: onto the stack of the thread running Lua code
** when a C function called by a task makes it (the function's L, also in
** a user coroutine the task runs: return it from there), else onto
** aio_host_lua(h); aio_future_push pushes onto the given L */
aio_future *aio_future_new(aio_host *h);
aio_future *aio_future_push(lua_State *L);
/* The values come off the stack they were pushed on: inside a C function
** a task called, its own L (it may complete the future before returning
** it) or aio_host_lua(h); elsewhere (a post, a work callback) only
** aio_host_lua(h).  Both release f: it must not be used afterwards. */
int aio_future_resolve(aio_future *f, int n);  /* pops n results */
int aio_future_reject(aio_future *f);          /* pops the error value */

#ifdef __cplusplus
}
#endif

#endif
