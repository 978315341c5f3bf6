/*
** process.c: _aio.process on Linux (and POSIX): spawn() and signals, the
** OS's part behind process.h; the ProcessHandle, the exit watch and the
** module are process_common.c.
**
** spawn() forks and execs.  Everything the child needs (argv, envp, the
** candidate paths of a PATH search) is built before the fork, so that the
** child calls only async-signal-safe functions.  An exec that fails is
** reported through a close-on-exec pipe: the parent reads errno from it
** (or EOF once exec succeeded) and raises OSError from spawn itself.
*/
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "process.h"

/* what the child tells the parent before it exits */
typedef struct spawn_err {
  int err;
  int stage;            /* STAGE_* */
} spawn_err;
enum { STAGE_EXEC, STAGE_CWD, STAGE_FDS };

/* ====================================================================== */
/* exits and signals                                                      */
/* ====================================================================== */

int aio__process_returncode(const aio_child_t *c) {
  if (WIFEXITED(c->status)) return WEXITSTATUS(c->status);
  if (WIFSIGNALED(c->status)) return -WTERMSIG(c->status);
  return c->status;
}

int aio__process_checksig(lua_State *L, int i) {
  int sig = (int)luaL_checkinteger(L, i);
  luaL_argcheck(L, sig >= 0 && sig < NSIG, i, "no such signal");
  return sig;
}

void aio__process_kill(lua_State *L, aio_child_t *c, int sig) {
  /* the pid is ours until we reap it, which sets exited: no reuse race */
  if (kill(c->pid, sig) < 0 && errno != ESRCH)
    aio__error(L, "OSError", -errno, "send_signal: %s",
               aio__strerror(-errno));
}

void aio__process_free(aio_child_t *c) {
  free(c);
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

/* Every fd above 2 closes at the exec, as asyncio's subprocesses do
** (close_fds=True): a file the program opened with io.open (no
** close-on-exec) or one it inherited does not leak into the child.  The
** error pipe (efd) is close-on-exec already and must stay open until the
** exec, so the fds are marked, not closed.  close_range (Linux 5.11) does
** it in one call; without it, each fd up to the limit (at most 65536). */
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

static void cloexec_from_3(void) {
  struct rlimit rl;
  int fd, max = 65536;
#ifdef SYS_close_range
  if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) == 0) return;
#endif
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
      rl.rlim_cur < (rlim_t)max)
    max = (int)rl.rlim_cur;
  for (fd = 3; fd < max; fd++) {
    int fl = fcntl(fd, F_GETFD);
    if (fl >= 0 && !(fl & FD_CLOEXEC)) fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
  }
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
  cloexec_from_3();
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

static void closefd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

/* spawn(argv, cwd, env, stdin, stdout, stderr) -> handle, pid, in_fd,
** out_fd, err_fd (each fd nil unless "pipe"; the caller wraps them at once).
** argv: an array of strings; env: nil or a map; modes: "inherit", "pipe",
** "null", and for stderr also "stdout".  OSError when the program cannot be
** started. */
int aio__process_spawn(lua_State *L) {
  aio_sched *s = aio__sched_check(L, "exec");
  spawn_plan pl;
  int modes[3], parent[3] = { -1, -1, -1 }, i, rc, epipe[2] = { -1, -1 };
  int nullfd = -1, pid = -1, argn;
  const char *path = NULL;
  aio_child_t *c;
  spawn_err se;
  ssize_t k;
  memset(&pl, 0, sizeof pl);
  luaL_checkstack(L, 24, "exec");
  argn = aio__process_args(L, &pl.cwd, modes);
  /* argv: the pointers (7), the strings anchored in a table (8) */
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
      pl.envp[n] = (char *)aio__process_envitem(L);
      if (strcmp(lua_tostring(L, -3), "PATH") == 0) path = lua_tostring(L, -2);
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
  c = aio__process_new(L);                      /* 13 */
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
  rc = aio__process_watch(s->lp, c);
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
