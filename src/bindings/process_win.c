/*
** process_win.c: _aio.process on Windows, built instead of process.c
** (fork/exec) by `make windows`: spawn() and signals, the OS's part behind
** process.h; the ProcessHandle, the exit watch and the module are
** process_common.c, and lua/aio/process.lua is shared.
**
** CreateProcess starts the child; its stdio pipes are named pipes whose
** parent ends are opened for overlapped I/O (they become stream transports
** of the IOCP backend, through _aio.stream.wrap) and whose child ends are
** inherited.  The exit is watched with a loop child handle (a registered
** wait on the process).  The status is the exit code; TerminateProcess
** (send_signal 9 or 15) makes it 1, as CPython's terminate() and kill() on
** Windows (what asyncio reports there).
**
** Every child is put in the process's one job object, made with
** JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE: the job's only handle closes when
** this process ends, however it ends, and the system then ends the
** children and the processes they started (as libuv does).
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <windows.h>

#include "process.h"

/* ---- exits and signals ---- */

/* the status is the exit code */
int aio__process_returncode(const aio_child_t *c) {
  return c->status;
}

int aio__process_checksig(lua_State *L, int i) {
  return (int)luaL_checkinteger(L, i);
}

/* 9 (KILL) and 15 (TERM) end the process with TerminateProcess; 0 only
** asks whether it runs; others raise ENOSYS */
void aio__process_kill(lua_State *L, aio_child_t *c, int sig) {
  if (sig == 0) return;
  if (sig != 9 && sig != 15)
    aio__error(L, "OSError", -ENOSYS,
               "send_signal: signal %d is not supported on Windows "
               "(only terminate and kill)", sig);
  if (!TerminateProcess(c->proc, 1) && GetLastError() != ERROR_ACCESS_DENIED)
    aio__error(L, "OSError", -EPERM, "send_signal: cannot terminate "
               "process %d", c->pid);
}

void aio__process_free(aio_child_t *c) {
  if (c->proc) CloseHandle(c->proc);
  free(c);
}

/* ---- the job object ---- */

static HANDLE job;

static BOOL CALLBACK job_init(PINIT_ONCE o, PVOID p, PVOID *ctx) {
  JOBOBJECT_EXTENDED_LIMIT_INFORMATION info;
  (void)o; (void)p; (void)ctx;
  job = CreateJobObjectA(NULL, NULL);  /* not inheritable */
  if (job == NULL) return TRUE;        /* children then outlive us */
  memset(&info, 0, sizeof info);
  /* BREAKAWAY_OK: a child that is itself aiolua moves its own children
  ** from this job into its job (CREATE_BREAKAWAY_FROM_JOB below) */
  info.BasicLimitInformation.LimitFlags =
      JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE | JOB_OBJECT_LIMIT_BREAKAWAY_OK;
  if (!SetInformationJobObject(job, JobObjectExtendedLimitInformation,
                               &info, sizeof info)) {
    CloseHandle(job);
    job = NULL;
  }
  return TRUE;
}

/* the job, NULL when the system gives none */
static HANDLE the_job(void) {
  static INIT_ONCE once = INIT_ONCE_STATIC_INIT;
  InitOnceExecuteOnce(&once, job_init, NULL, NULL);
  return job;
}

/* CreateProcess, suspended until the child is in the job.  Out of the job
** this process may be in (CREATE_BREAKAWAY_FROM_JOB) when that job allows
** it; a job that cannot be joined (Windows 7 without nested jobs) leaves
** the child outside it, running all the same. */
static BOOL create_in_job(char *cmd, void *env, const char *cwd,
                          STARTUPINFOA *si, PROCESS_INFORMATION *pi) {
  DWORD flags = CREATE_NO_WINDOW | CREATE_SUSPENDED;
  HANDLE j = the_job();
  if (!CreateProcessA(NULL, cmd, NULL, NULL, TRUE,
                      flags | CREATE_BREAKAWAY_FROM_JOB, env, cwd, si, pi)) {
    if (GetLastError() != ERROR_ACCESS_DENIED ||
        !CreateProcessA(NULL, cmd, NULL, NULL, TRUE, flags, env, cwd, si, pi))
      return FALSE;
  }
  if (j != NULL) AssignProcessToJobObject(j, pi->hProcess);
  ResumeThread(pi->hThread);
  return TRUE;
}

/* ---- spawning ---- */

/* one argument quoted as the C runtime's parser reads it back */
static void quote_arg(luaL_Buffer *b, const char *a) {
  const char *p;
  if (*a != '\0' && strpbrk(a, " \t\n\v\"") == NULL) {
    luaL_addstring(b, a);
    return;
  }
  luaL_addchar(b, '"');
  for (p = a; ; p++) {
    size_t bs = 0;
    while (*p == '\\') { p++; bs++; }
    if (*p == '\0') {            /* backslashes before the closing quote */
      while (bs--) { luaL_addchar(b, '\\'); luaL_addchar(b, '\\'); }
      break;
    }
    if (*p == '"') {
      while (bs--) { luaL_addchar(b, '\\'); luaL_addchar(b, '\\'); }
      luaL_addchar(b, '\\');
      luaL_addchar(b, '"');
    } else {
      while (bs--) luaL_addchar(b, '\\');
      luaL_addchar(b, *p);
    }
  }
  luaL_addchar(b, '"');
}

/* a named pipe: the parent's end overlapped, the child's inheritable; on
** failure both are NULL, nothing is left for the caller to close */
static int newpipe(HANDLE *parent, HANDLE *child, int child_reads) {
  static volatile LONG serial;
  char name[96];
  SECURITY_ATTRIBUTES sa = { sizeof sa, NULL, TRUE };
  snprintf(name, sizeof name, "\\\\.\\pipe\\aiolua-%lu-%ld",
           GetCurrentProcessId(), InterlockedIncrement(&serial));
  *parent = CreateNamedPipeA(name,
      (child_reads ? PIPE_ACCESS_OUTBOUND : PIPE_ACCESS_INBOUND) |
      FILE_FLAG_OVERLAPPED | FILE_FLAG_FIRST_PIPE_INSTANCE,
      PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT, 1, 65536, 65536, 0,
      NULL);
  if (*parent == INVALID_HANDLE_VALUE) {
    *parent = NULL;
    return -EMFILE;
  }
  *child = CreateFileA(name, child_reads ? GENERIC_READ : GENERIC_WRITE, 0,
                       &sa, OPEN_EXISTING, 0, NULL);
  if (*child == INVALID_HANDLE_VALUE) {
    CloseHandle(*parent);
    *parent = *child = NULL;  /* spawn's cleanup must not close it again */
    return -EMFILE;
  }
  return 0;
}

static int winerr(DWORD e) {
  switch (e) {
    case ERROR_FILE_NOT_FOUND: case ERROR_PATH_NOT_FOUND:
    case ERROR_DIRECTORY: case ERROR_BAD_PATHNAME: return -ENOENT;
    case ERROR_ACCESS_DENIED: return -EACCES;
    case ERROR_BAD_EXE_FORMAT: case ERROR_EXE_MACHINE_TYPE_MISMATCH:
      return -ENOEXEC;
    case ERROR_NOT_ENOUGH_MEMORY: case ERROR_OUTOFMEMORY: return -ENOMEM;
  }
  return -EIO;
}

/* spawn(argv, cwd, env, stdin, stdout, stderr) -> handle, pid, in, out,
** err (each nil unless "pipe": a HANDLE value for _aio.stream.wrap) */
int aio__process_spawn(lua_State *L) {
  aio_sched *s = aio__sched_check(L, "exec");
  int modes[3], i, argn, rc = 0;
  HANDLE parent[3] = { NULL, NULL, NULL }, child[3] = { NULL, NULL, NULL };
  HANDLE nul = NULL;
  const char *cwd, *cmd, *env = NULL;
  STARTUPINFOA si;
  PROCESS_INFORMATION pi;
  luaL_Buffer b;
  aio_child_t *c;
  DWORD err = 0;
  argn = aio__process_args(L, &cwd, modes);
  /* the command line (7): each argument quoted, joined by spaces */
  luaL_checkstack(L, 2 * argn + 8, "exec");
  for (i = 1; i <= argn; i++) {
    if (i > 1) lua_pushliteral(L, " ");
    lua_geti(L, 1, i);
    if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
      return luaL_argerror(L, 1, "argv items must be strings");
    {
      const char *arg = lua_tostring(L, -1);   /* anchored below */
      luaL_buffinit(L, &b);
      quote_arg(&b, arg);
      luaL_pushresult(&b);
      lua_remove(L, -2);
    }
  }
  lua_concat(L, 2 * argn - 1);
  cmd = lua_tostring(L, 7);
  /* the environment block (8): NAME=value\0 ... \0\0 */
  if (lua_istable(L, 3)) {
    int n = 0;
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "concat");
    lua_remove(L, -2);
    lua_newtable(L);
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      aio__process_envitem(L);
      lua_rawseti(L, -4, ++n);
      lua_pop(L, 1);
    }
    lua_pushlstring(L, "\0", 1);
    lua_call(L, 2, 1);
    lua_pushlstring(L, "\0\0", 2);
    lua_concat(L, 2);                       /* 8 */
    env = lua_tostring(L, 8);
  }
  /* the handle, whole before any OS handle exists */
  c = aio__process_new(L);
  /* stdio */
  for (i = 0; i < 3 && rc == 0; i++) {
    if (modes[i] == IO_PIPE) rc = newpipe(&parent[i], &child[i], i == 0);
    else if (modes[i] == IO_NULL) {
      if (nul == NULL) {
        SECURITY_ATTRIBUTES sa = { sizeof sa, NULL, TRUE };
        nul = CreateFileA("NUL", GENERIC_READ | GENERIC_WRITE,
                          FILE_SHARE_READ | FILE_SHARE_WRITE, &sa,
                          OPEN_EXISTING, 0, NULL);
        if (nul == INVALID_HANDLE_VALUE) { nul = NULL; rc = -EIO; }
      }
      child[i] = nul;
    }
  }
  if (rc == 0) {
    HANDLE std[3];
    std[0] = GetStdHandle(STD_INPUT_HANDLE);
    std[1] = GetStdHandle(STD_OUTPUT_HANDLE);
    std[2] = GetStdHandle(STD_ERROR_HANDLE);
    memset(&si, 0, sizeof si);
    si.cb = sizeof si;
    si.dwFlags = STARTF_USESTDHANDLES;
    si.hStdInput = child[0] ? child[0] : std[0];
    si.hStdOutput = child[1] ? child[1] : std[1];
    si.hStdError = modes[2] == IO_STDOUT ? si.hStdOutput
                 : child[2] ? child[2] : std[2];
    /* inherited std handles must be inheritable */
    for (i = 0; i < 3; i++)
      if (!child[i] && std[i] && std[i] != INVALID_HANDLE_VALUE)
        SetHandleInformation(std[i], HANDLE_FLAG_INHERIT, HANDLE_FLAG_INHERIT);
    if (!create_in_job((char *)cmd, (void *)env, cwd, &si, &pi)) {
      err = GetLastError();
      rc = winerr(err);
    }
  }
  for (i = 0; i < 3; i++)
    if (child[i] && child[i] != nul) CloseHandle(child[i]);
  if (nul) CloseHandle(nul);
  if (rc < 0) {
    for (i = 0; i < 3; i++) if (parent[i]) CloseHandle(parent[i]);
    if (cwd && rc == -ENOENT &&
        GetFileAttributesA(cwd) == INVALID_FILE_ATTRIBUTES)
      return aio__error(L, "OSError", rc, "exec: cwd %s: %s", cwd,
                        aio__strerror(rc));
    lua_geti(L, 1, 1);
    if (rc == -EIO && err != 0)  /* an error winerr() does not know: which */
      return aio__error(L, "OSError", rc, "exec %s: %s (Windows error %d)",
                        lua_tostring(L, -1), aio__strerror(rc), (int)err);
    return aio__error(L, "OSError", rc, "exec %s: %s", lua_tostring(L, -1),
                      aio__strerror(rc));
  }
  CloseHandle(pi.hThread);
  c->proc = pi.hProcess;
  c->pid = (int)pi.dwProcessId;
  rc = aio__process_watch(s->lp, c);
  if (rc < 0) {
    c->h = NULL;
    TerminateProcess(pi.hProcess, 1);
    WaitForSingleObject(pi.hProcess, INFINITE);
    c->exited = 1;
    c->status = 1;
    for (i = 0; i < 3; i++) if (parent[i]) CloseHandle(parent[i]);
    return aio__error(L, "OSError", rc, "exec: cannot watch the child: %s",
                      aio__strerror(rc));
  }
  lua_pushinteger(L, c->pid);
  for (i = 0; i < 3; i++) {
    if (parent[i]) lua_pushinteger(L, (lua_Integer)(intptr_t)parent[i]);
    else lua_pushnil(L);
  }
  return 5;   /* the handle (pushed before pid), pid, in, out, err */
}
