/*
** process.h: the seam of _aio.process.  process_common.c has the
** ProcessHandle (pid, returncode, wait, send_signal), the exit watch and
** the module; the OS's part, spawn() and signals, is process.c (fork and
** exec) or process_win.c (CreateProcess), exactly one of them built, as
** loop_ev.c or loop_iocp.c behind loop.h.  Internal to the bindings.
*/
#ifndef AIO_PROCESS_H
#define AIO_PROCESS_H

#include "sched.h"

/* the C state of a child, apart from its userdata (process_common.c) */
typedef struct aio_child_t {
  aio_bhandle *h;       /* the child handle; NULL once closed */
  int pid;
  int status;           /* the loop's, once exited: as from waitpid, or
                        ** the exit code on Windows */
  void *proc;           /* Windows: the process HANDLE, for
                        ** TerminateProcess; else NULL */
  unsigned exited : 1, orphaned : 1, detached : 1;
  aio_waiter waiters;   /* tasks in wait(), through their wnode */
} aio_child_t;

/* stdio modes */
enum { IO_INHERIT, IO_PIPE, IO_NULL, IO_STDOUT };

/* ---- process_common.c, for spawn() ---- */

/* Check spawn's arguments 1 to 6 (argv, cwd, env, stdin, stdout, stderr)
** and set the stack top to 6; returns the length of argv (> 0), sets *cwd
** (NULL: none) and modes[] (IO_*).  Raises on misuse. */
int aio__process_args(lua_State *L, const char **cwd, int modes[3]);
/* In a lua_next walk of env (argument 3), with a name and its value on
** the stack top: push and return "name=value".  Raises unless both are
** strings (the value may be a number). */
const char *aio__process_envitem(lua_State *L);
/* Push a new ProcessHandle and return its child, zeroed, with no waiters:
** whole before any OS resource exists, so that __gc is safe. */
aio_child_t *aio__process_new(lua_State *L);
/* Watch c->pid with a loop child handle (c->h); 0 or a negative code. */
int aio__process_watch(aio_loop *lp, aio_child_t *c);

/* ---- the OS's part: process.c or process_win.c ---- */

/* spawn(argv, cwd, env, stdin, stdout, stderr) -> handle, pid, in, out,
** err: the function _aio.process.spawn */
int aio__process_spawn(lua_State *L);
/* what returncode() reports for c->status */
int aio__process_returncode(const aio_child_t *c);
/* Argument i as a signal number; raises when the system has no such one. */
int aio__process_checksig(lua_State *L, int i);
/* Send sig to the child c, which has not exited; raises OSError when it
** cannot. */
void aio__process_kill(lua_State *L, aio_child_t *c, int sig);
/* Free c and what the OS gave it. */
void aio__process_free(aio_child_t *c);

#endif
