/*
** process_common.c: the module _aio.process, the part every OS shares:
** the ProcessHandle (pid, returncode, wait, send_signal), the watch of the
** exit, spawn's argument checks and the module's registration.
** Mechanism only; lua/aio/process.lua builds Process, communicate and
** run_process on it, and wraps the pipe ends as streams (_aio.stream.wrap).
** spawn() itself and signals are the OS's (process.h): process.c or
** process_win.c.
**
** The exit is watched with a loop child handle (loop.h).  The C state of a
** child (aio_child_t) is malloc'd apart from the userdata: when the
** userdata is collected while the child runs, the state stays with the
** handle until the exit comes, so every child is reaped.
*/
#include <stdlib.h>

#include "process.h"

#define PROCESS_MT "aio.ProcessHandle"

typedef struct aio_process_t {
  aio_child_t *c;
} aio_process_t;

/* ====================================================================== */
/* exits                                                                  */
/* ====================================================================== */

static void waiter_unlink(aio_waiter *w) {
  if (w->next == NULL) return;
  w->prev->next = w->next;
  w->next->prev = w->prev;
  w->prev = w->next = NULL;
}

static void wake_all(aio_child_t *c) {
  while (c->waiters.next != &c->waiters) {
    aio_waiter *w = c->waiters.next;
    aio_task *t = (aio_task *)((char *)w - offsetof(aio_task, wnode));
    waiter_unlink(w);
    aio__wake(t);
  }
}

static void on_exit_cb(aio_bhandle *h, int pid, int status, void *data) {
  aio_child_t *c = data;
  (void)pid;
  if (status == -1) {
    /* the loop is freed first: the backend reaps the child later */
    c->orphaned = 1;
  } else {
    c->exited = 1;
    c->status = status;
  }
  aio__handle_close(h, NULL, NULL);
  c->h = NULL;
  if (c->detached) aio__process_free(c);
  else wake_all(c);
}

int aio__process_watch(aio_loop *lp, aio_child_t *c) {
  return aio__child_start(lp, &c->h, c->pid, on_exit_cb, c);
}

static aio_process_t *checkprocess(lua_State *L, int i) {
  aio_process_t *p = luaL_checkudata(L, i, PROCESS_MT);
  if (p->c == NULL) luaL_error(L, "the process handle is gone");
  return p;
}

aio_child_t *aio__process_new(lua_State *L) {
  aio_process_t *p = lua_newuserdatauv(L, sizeof *p, 0);
  aio_child_t *c;
  p->c = NULL;
  luaL_setmetatable(L, PROCESS_MT);
  c = calloc(1, sizeof *c);
  if (c == NULL) luaL_error(L, "not enough memory");
  c->waiters.next = c->waiters.prev = &c->waiters;
  p->c = c;
  return c;
}

static int process_gc(lua_State *L) {
  aio_process_t *p = lua_touserdata(L, 1);
  aio_child_t *c = p->c;
  p->c = NULL;
  if (c == NULL) return 0;
  if (c->h != NULL) c->detached = 1;  /* freed by on_exit_cb */
  else aio__process_free(c);
  return 0;
}

/* ====================================================================== */
/* methods                                                                */
/* ====================================================================== */

static int process_pid(lua_State *L) {
  lua_pushinteger(L, checkprocess(L, 1)->c->pid);
  return 1;
}

/* returncode(): nil while running */
static int process_returncode(lua_State *L) {
  aio_child_t *c = checkprocess(L, 1)->c;
  if (!c->exited) return 0;
  lua_pushinteger(L, aio__process_returncode(c));
  return 1;
}

static void wait_cleanup(aio_task *t) {
  waiter_unlink(&t->wnode);
}

static int wait_k(lua_State *L, int status, lua_KContext ctx) {
  aio_child_t *c = checkprocess(L, 1)->c;
  aio_task *t;
  (void)ctx;
  if (status == LUA_YIELD) aio__wait_end(L);
  if (c->exited) {
    lua_pushinteger(L, aio__process_returncode(c));
    return 1;
  }
  if (c->orphaned || c->h == NULL)
    return luaL_error(L, "wait: the loop that watched process %d is closed",
                      c->pid);
  t = aio__wait_begin(L, "wait");
  /* link at the tail; wnode is free: the task awaits no future */
  t->wnode.next = &c->waiters;
  t->wnode.prev = c->waiters.prev;
  c->waiters.prev->next = &t->wnode;
  c->waiters.prev = &t->wnode;
  return aio__park_real(L, t, wait_cleanup, c, "process", 0, wait_k);
}

/* wait() -> returncode; cancelling it leaves the child running (and
** watched: it is still reaped) */
static int process_wait(lua_State *L) {
  checkprocess(L, 1);
  lua_settop(L, 1);
  return wait_k(L, LUA_OK, 0);
}

/* send_signal(signum): false when the child has already exited.  Which
** signals there are, and what sending one means, is the OS's. */
static int process_send_signal(lua_State *L) {
  aio_child_t *c = checkprocess(L, 1)->c;
  int sig = aio__process_checksig(L, 2);
  if (c->exited || c->orphaned) {
    lua_pushboolean(L, 0);
    return 1;
  }
  aio__process_kill(L, c, sig);
  lua_pushboolean(L, 1);
  return 1;
}

static int process_tostring(lua_State *L) {
  aio_process_t *p = luaL_checkudata(L, 1, PROCESS_MT);
  if (p->c == NULL) lua_pushliteral(L, "aio.ProcessHandle (gone)");
  else if (p->c->exited)
    lua_pushfstring(L, "aio.ProcessHandle (pid %d, returncode %d)",
                    p->c->pid, aio__process_returncode(p->c));
  else lua_pushfstring(L, "aio.ProcessHandle (pid %d, running)", p->c->pid);
  return 1;
}

/* ====================================================================== */
/* spawn's arguments                                                      */
/* ====================================================================== */

static int mode_of(lua_State *L, int i, int allow_stdout) {
  static const char *const modes[] = { "inherit", "pipe", "null", "stdout",
                                       NULL };
  int m = luaL_checkoption(L, i, "inherit", modes);
  if (m == IO_STDOUT && !allow_stdout)
    luaL_argerror(L, i, "\"stdout\" is only for stderr");
  return m;
}

int aio__process_args(lua_State *L, const char **cwd, int modes[3]) {
  int argn;
  luaL_checktype(L, 1, LUA_TTABLE);
  *cwd = luaL_optstring(L, 2, NULL);
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
  modes[0] = mode_of(L, 4, 0);
  modes[1] = mode_of(L, 5, 0);
  modes[2] = mode_of(L, 6, 1);
  lua_settop(L, 6);
  argn = (int)luaL_len(L, 1);
  luaL_argcheck(L, argn > 0, 1, "empty argv");
  return argn;
}

const char *aio__process_envitem(lua_State *L) {
  if (lua_type(L, -2) != LUA_TSTRING ||
      (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER))
    luaL_argerror(L, 3, "env must map names to strings");
  return lua_pushfstring(L, "%s=%s", lua_tostring(L, -2), lua_tostring(L, -1));
}

/* ====================================================================== */
/* the module                                                             */
/* ====================================================================== */

static const luaL_Reg process_methods[] = {
  { "pid", process_pid },
  { "returncode", process_returncode },
  { "wait", process_wait },
  { "send_signal", process_send_signal },
  { NULL, NULL }
};

static const luaL_Reg process_meta[] = {
  { "__gc", process_gc },
  { "__tostring", process_tostring },
  { NULL, NULL }
};

static const luaL_Reg funcs[] = {
  { "spawn", aio__process_spawn },
  { NULL, NULL }
};

static void createmeta(lua_State *L) {
  luaL_newmetatable(L, PROCESS_MT);
  luaL_setfuncs(L, process_meta, 0);
  luaL_newlib(L, process_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}

/* task:waiting()'s detail of a wait(): the child's pid */
static int wait_detail(lua_State *L, aio_task *t) {
  lua_pushinteger(L, ((aio_child_t *)t->wait_data)->pid);
  return 1;
}

int luaopen__aio_process(lua_State *L) {
  aio__wait_detail_set("process", wait_detail);
  createmeta(L);
  luaL_newlib(L, funcs);
  return 1;
}
