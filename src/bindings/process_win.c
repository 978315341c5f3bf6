/*
** process_win.c: the module _aio.process on Windows, built instead of
** process.c (fork/exec) by `make windows`.  Subprocesses need CreateProcess
** with overlapped named pipes and a job object (issue 10, not done yet):
** until then spawn raises OSError ENOSYS naming the platform.
*/
#include <errno.h>

#include "sched.h"

static int l_spawn(lua_State *L) {
  return aio__error(L, "OSError", -ENOSYS,
                    "subprocesses are not implemented on Windows yet");
}

static const luaL_Reg funcs[] = {
  { "spawn", l_spawn },
  { NULL, NULL }
};

int luaopen__aio_process(lua_State *L) {
  luaL_newlib(L, funcs);
  return 1;
}
