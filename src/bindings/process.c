/*
** process.c: the module _aio.process: starting child processes and
** waiting for them.  Mechanism only; lua/aio/process.lua builds Process,
** communicate and run_process on it, and wraps the pipe ends as streams
** (_aio.stream.wrap).
**
** spawn() forks and execs.  Everything the child needs (argv, envp, the
** candidate paths of a PATH search) is built before the fork, so that the
** child calls only async-signal-safe functions.  An exec that fails is
** reported through a close-on-exec pipe: the parent reads errno from it
** (or EOF once exec succeeded) and raises OSError from spawn itself.
**
** The exit is watched with a loop child handle (loop.h).  The C state of a
** child (child_t) is malloc'd apart from the userdata: when the userdata is
** collected while the child runs, the state stays with the handle until the
** exit comes, so every child is reaped.
*/
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sched.h"

#define PROCESS_MT "aio.ProcessHandle"

typedef struct child_t {
  aio_bhandle *h;       /* the child handle; NULL once closed */
  int pid;
  int status;           /* as from waitpid, once exited */
  unsigned exited : 1, orphaned : 1, detached : 1;
  aio_waiter waiters;   /* tasks in wait(), through their wnode */
} child_t;

typedef struct aio_process_t {
  child_t *c;
} aio_process_t;

/* what the child tells the parent before it exits */
typedef struct spawn_err {
  int err;
  int stage;            /* STAGE_* */
} spawn_err;
enum { STAGE_EXEC, STAGE_CWD, STAGE_FDS };

/* stdio modes */
enum { IO_INHERIT, IO_PIPE, IO_NULL, IO_STDOUT };

/* ====================================================================== */
/* exits                                                                  */
/* ====================================================================== */

static void waiter_unlink(aio_waiter *w) {
  if (w->next == NULL) return;
  w->prev->next = w->next;
  w->next->prev = w->prev;
  w->prev = w->next = NULL;
}

static void wake_all(child_t *c) {
  while (c->waiters.next != &c->waiters) {
    aio_waiter *w = c->waiters.next;
    aio_task *t = (aio_task *)((char *)w - offsetof(aio_task, wnode));
    waiter_unlink(w);
    aio__wake(t);
  }
}

static void on_exit_cb(aio_bhandle *h, int pid, int status, void *data) {
  child_t *c = data;
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
  if (c->detached) free(c);
  else wake_all(c);
}

static int returncode(child_t *c) {
  if (WIFEXITED(c->status)) return WEXITSTATUS(c->status);
  if (WIFSIGNALED(c->status)) return -WTERMSIG(c->status);
  return c->status;
}

static aio_process_t *checkprocess(lua_State *L, int i) {
  aio_process_t *p = luaL_checkudata(L, i, PROCESS_MT);
  if (p->c == NULL) luaL_error(L, "the process handle is gone");
  return p;
}

static int process_gc(lua_State *L) {
  aio_process_t *p = lua_touserdata(L, 1);
  child_t *c = p->c;
  p->c = NULL;
  if (c == NULL) return 0;
  if (c->h != NULL) c->detached = 1;  /* freed by on_exit_cb */
  else free(c);
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
  child_t *c = checkprocess(L, 1)->c;
  if (!c->exited) return 0;
  lua_pushinteger(L, returncode(c));
  return 1;
}

static void wait_cleanup(aio_task *t) {
  waiter_unlink(&t->wnode);
}

static int wait_k(lua_State *L, int status, lua_KContext ctx) {
  child_t *c = checkprocess(L, 1)->c;
  aio_task *t;
  (void)ctx;
  if (status == LUA_YIELD) aio__wait_end(L);
  if (c->exited) {
    lua_pushinteger(L, returncode(c));
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
  return aio__park(L, t, wait_cleanup, c, "process", 0, wait_k);
}

/* wait() -> returncode; cancelling it leaves the child running (and
** watched: it is still reaped) */
static int process_wait(lua_State *L) {
  checkprocess(L, 1);
  lua_settop(L, 1);
  return wait_k(L, LUA_OK, 0);
}

/* send_signal(signum): false when the child has already exited */
static int process_send_signal(lua_State *L) {
  child_t *c = checkprocess(L, 1)->c;
  int sig = (int)luaL_checkinteger(L, 2);
  luaL_argcheck(L, sig >= 0 && sig < NSIG, 2, "no such signal");
  /* the pid is ours until we reap it, which sets exited: no reuse race */
  if (c->exited || c->orphaned) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (kill(c->pid, sig) < 0 && errno != ESRCH)
    return aio__error(L, "OSError", -errno, "send_signal: %s",
                      aio__strerror(-errno));
  lua_pushboolean(L, 1);
  return 1;
}

static int process_tostring(lua_State *L) {
  aio_process_t *p = luaL_checkudata(L, 1, PROCESS_MT);
  if (p->c == NULL) lua_pushliteral(L, "aio.ProcessHandle (gone)");
  else if (p->c->exited)
    lua_pushfstring(L, "aio.ProcessHandle (pid %d, returncode %d)",
                    p->c->pid, returncode(p->c));
  else lua_pushfstring(L, "aio.ProcessHandle (pid %d, running)", p->c->pid);
  return 1;
}

/* ====================================================================== */
/* spawning                                                               */
/* ====================================================================== */

/* In the child, after fork: only async-signal-safe calls from here on. */
static void child_fail(int efd, int err, int stage) {
  spawn_err e;
  ssize_t k;
  e.err = err;
  e.stage = stage;
  do k = write(efd, &e, sizeof e); while (k < 0 && errno == EINTR);
  _exit(127);
}

/* move fd out of 0..2 so the dup2s below cannot clobber it */
static int lift(int fd, int efd) {
  int nfd;
  if (fd < 0 || fd > 2) return fd;
  nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (nfd < 0) child_fail(efd, errno, STAGE_FDS);
  return nfd;
}

/* make `fd` the child's `target` (0, 1, 2), not close-on-exec */
static void install(int fd, int target, int efd) {
  if (fd < 0) {  /* inherit: the parent's own, which may be close-on-exec */
    int fl = fcntl(target, F_GETFD);
    if (fl >= 0 && (fl & FD_CLOEXEC)) fcntl(target, F_SETFD, fl & ~FD_CLOEXEC);
    return;
  }
  if (dup2(fd, target) < 0) child_fail(efd, errno, STAGE_FDS);
}

typedef struct spawn_plan {
  char **argv;
  char **envp;          /* NULL: the parent's environ */
  char **paths;         /* candidate paths, NULL-terminated */
  const char *cwd;
  int fds[3];           /* the child's ends; -1: inherit */
  int stderr_to_stdout;
} spawn_plan;

extern char **environ;

static void child_main(const spawn_plan *pl, int efd) {
  sigset_t none;
  struct sigaction sa;
  int i, fds[3], saw_eacces = 0, err = ENOENT;
  /* defaults for every signal; the loop may have blocked some (signalfd)
  ** and the host ignores SIGPIPE */
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_DFL;
  sigemptyset(&sa.sa_mask);
  for (i = 1; i < NSIG; i++)
    if (i != SIGKILL && i != SIGSTOP) sigaction(i, &sa, NULL);
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  efd = lift(efd, efd);
  for (i = 0; i < 3; i++) fds[i] = lift(pl->fds[i], efd);
  install(fds[0], 0, efd);
  install(fds[1], 1, efd);
  if (pl->stderr_to_stdout) {
    if (dup2(1, 2) < 0) child_fail(efd, errno, STAGE_FDS);
  } else {
    install(fds[2], 2, efd);
  }
  if (pl->cwd && chdir(pl->cwd) < 0) child_fail(efd, errno, STAGE_CWD);
  for (i = 0; pl->paths[i] != NULL; i++) {
    execve(pl->paths[i], pl->argv, pl->envp ? pl->envp : environ);
    switch (errno) {  /* as execvp: go on with the next directory */
      case EACCES: saw_eacces = 1; /* fall through */
      case ENOENT: case ENOTDIR: case ELOOP: case ENAMETOOLONG:
      case ENODEV: case ETIMEDOUT: case ESTALE:
        err = errno;
        continue;
      default:
        child_fail(efd, errno, STAGE_EXEC);
    }
  }
  child_fail(efd, saw_eacces ? EACCES : err, STAGE_EXEC);
}

/* a userdata block of n pointers, anchored on the stack */
static char **ptrs(lua_State *L, size_t n) {
  char **v = lua_newuserdatauv(L, (n + 1) * sizeof *v, 0);
  memset(v, 0, (n + 1) * sizeof *v);
  return v;
}

/* Push the candidate paths of `file`: a table holding the strings, then a
** NULL-terminated pointer block into them (returned).  PATH is the new
** environment's when it has one, as Python does; a name with a slash is
** used as it is. */
static char **search_paths(lua_State *L, const char *file, const char *path) {
  char **v;
  lua_Integer n = 0, j;
  lua_newtable(L);
  if (strchr(file, '/') != NULL) {
    lua_pushstring(L, file);
    lua_rawseti(L, -2, ++n);
  } else {
    const char *p = path ? path : "/usr/local/bin:/usr/bin:/bin";
    for (;;) {
      const char *e = strchr(p, ':');
      size_t len = e ? (size_t)(e - p) : strlen(p);
      if (len == 0) {
        lua_pushfstring(L, "./%s", file);
      } else {
        lua_pushlstring(L, p, len);
        lua_pushfstring(L, "%s/%s", lua_tostring(L, -1), file);
        lua_remove(L, -2);
      }
      lua_rawseti(L, -2, ++n);
      if (e == NULL) break;
      p = e + 1;
    }
  }
  v = ptrs(L, (size_t)n);
  for (j = 0; j < n; j++) {
    lua_rawgeti(L, -2, j + 1);
    v[j] = (char *)lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  return v;
}

static int mode_of(lua_State *L, int i, int allow_stdout) {
  static const char *const modes[] = { "inherit", "pipe", "null", "stdout",
                                       NULL };
  int m = luaL_checkoption(L, i, "inherit", modes);
  if (m == IO_STDOUT && !allow_stdout)
    luaL_argerror(L, i, "\"stdout\" is only for stderr");
  return m;
}

static void closefd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

/* spawn(argv, cwd, env, stdin, stdout, stderr) -> handle, pid, in_fd,
** out_fd, err_fd (each fd nil unless "pipe"; the caller wraps them at once).
** argv: an array of strings; env: nil or a map; modes: "inherit", "pipe",
** "null", and for stderr also "stdout".  OSError when the program cannot be
** started. */
static int l_spawn(lua_State *L) {
  aio_sched *s = aio__sched_check(L, "exec");
  spawn_plan pl;
  int modes[3], parent[3] = { -1, -1, -1 }, i, rc, epipe[2] = { -1, -1 };
  int nullfd = -1, pid = -1, argn;
  const char *path = NULL;
  aio_process_t *p;
  child_t *c;
  spawn_err se;
  ssize_t k;
  memset(&pl, 0, sizeof pl);
  luaL_checkstack(L, 24, "exec");
  luaL_checktype(L, 1, LUA_TTABLE);
  pl.cwd = luaL_optstring(L, 2, NULL);
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
  modes[0] = mode_of(L, 4, 0);
  modes[1] = mode_of(L, 5, 0);
  modes[2] = mode_of(L, 6, 1);
  lua_settop(L, 6);
  /* argv: the pointers (7), the strings anchored in a table (8) */
  argn = (int)luaL_len(L, 1);
  luaL_argcheck(L, argn > 0, 1, "empty argv");
  pl.argv = ptrs(L, (size_t)argn);
  lua_createtable(L, argn, 0);
  for (i = 0; i < argn; i++) {
    lua_geti(L, 1, i + 1);
    if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
      return luaL_argerror(L, 1, "argv items must be strings");
    pl.argv[i] = (char *)lua_tostring(L, -1);  /* a number: converted */
    lua_rawseti(L, 8, i + 1);
  }
  /* envp (9): "K=V" strings anchored in table 10 */
  if (lua_istable(L, 3)) {
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, 3)) { n++; lua_pop(L, 1); }
    pl.envp = ptrs(L, n);
    lua_newtable(L);
    n = 0;
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      if (lua_type(L, -2) != LUA_TSTRING ||
          (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER))
        return luaL_argerror(L, 3, "env must map names to strings");
      lua_pushfstring(L, "%s=%s", lua_tostring(L, -2), lua_tostring(L, -1));
      if (strcmp(lua_tostring(L, -3), "PATH") == 0) path = lua_tostring(L, -2);
      pl.envp[n] = (char *)lua_tostring(L, -1);
      lua_rawseti(L, -4, (lua_Integer)++n);
      lua_pop(L, 1);
    }
  } else {
    lua_pushnil(L);
    lua_pushnil(L);
    path = getenv("PATH");
  }
  /* candidate paths: the strings (11), the pointers (12) */
  pl.paths = search_paths(L, pl.argv[0], path);
  /* the handle, whole before any fd exists (nothing below raises until
  ** the fds are closed or handed over) */
  p = lua_newuserdatauv(L, sizeof *p, 0);       /* 13 */
  p->c = NULL;
  luaL_setmetatable(L, PROCESS_MT);
  c = calloc(1, sizeof *c);
  if (c == NULL) return luaL_error(L, "not enough memory");
  c->waiters.next = c->waiters.prev = &c->waiters;
  p->c = c;
  /* pipes and /dev/null, all close-on-exec */
  pl.fds[0] = pl.fds[1] = pl.fds[2] = -1;
  rc = 0;
  for (i = 0; i < 3 && rc == 0; i++) {
    int pp[2];
    if (modes[i] == IO_PIPE) {
      if (pipe2(pp, O_CLOEXEC) < 0) { rc = -errno; break; }
      if (i == 0) { pl.fds[0] = pp[0]; parent[0] = pp[1]; }
      else { pl.fds[i] = pp[1]; parent[i] = pp[0]; }
    } else if (modes[i] == IO_NULL) {
      if (nullfd < 0 && (nullfd = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0) {
        rc = -errno;
        break;
      }
      pl.fds[i] = nullfd;
    }
  }
  pl.stderr_to_stdout = modes[2] == IO_STDOUT;
  if (rc == 0 && pipe2(epipe, O_CLOEXEC) < 0) rc = -errno;
  if (rc == 0) {
    pid = fork();
    if (pid == 0) {
      closefd(&epipe[0]);
      child_main(&pl, epipe[1]);
    }
    if (pid < 0) rc = -errno;
  }
  /* the parent: the child's ends go */
  for (i = 0; i < 3; i++)
    if (pl.fds[i] != nullfd) closefd(&pl.fds[i]);
  closefd(&nullfd);
  closefd(&epipe[1]);
  if (rc == 0) {
    do k = read(epipe[0], &se, sizeof se); while (k < 0 && errno == EINTR);
    closefd(&epipe[0]);
    if (k == (ssize_t)sizeof se) {  /* it never ran: reap it now */
      int st = 0;
      while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
      c->exited = 1;
      c->status = st;
      rc = -se.err;
      for (i = 0; i < 3; i++) closefd(&parent[i]);
      if (se.stage == STAGE_CWD)
        return aio__error(L, "OSError", rc, "exec: cwd %s: %s", pl.cwd,
                          aio__strerror(rc));
      return aio__error(L, "OSError", rc, "exec %s: %s", pl.argv[0],
                        aio__strerror(rc));
    }
  } else {
    closefd(&epipe[0]);
    for (i = 0; i < 3; i++) closefd(&parent[i]);
    return aio__error(L, "OSError", rc, "exec %s: %s", pl.argv[0],
                      aio__strerror(rc));
  }
  c->pid = pid;
  rc = aio__child_start(s->lp, &c->h, pid, on_exit_cb, c);
  if (rc < 0) {
    /* cannot watch it: better a clear error than a zombie */
    int st = 0;
    c->h = NULL;
    kill(pid, SIGKILL);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    c->exited = 1;
    c->status = st;
    for (i = 0; i < 3; i++) closefd(&parent[i]);
    return aio__error(L, "OSError", rc, "exec: cannot watch the child: %s",
                      aio__strerror(rc));
  }
  lua_pushvalue(L, 13);
  lua_pushinteger(L, pid);
  for (i = 0; i < 3; i++) {
    if (parent[i] >= 0) lua_pushinteger(L, parent[i]);
    else lua_pushnil(L);
  }
  return 5;
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
  { "spawn", l_spawn },
  { NULL, NULL }
};

static void createmeta(lua_State *L) {
  luaL_newmetatable(L, PROCESS_MT);
  luaL_setfuncs(L, process_meta, 0);
  luaL_newlib(L, process_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}

int luaopen__aio_process(lua_State *L) {
  createmeta(L);
  luaL_newlib(L, funcs);
  return 1;
}
