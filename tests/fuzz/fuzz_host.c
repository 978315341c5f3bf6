/*
** fuzz_host.c: the libFuzzer driver shared by every harness.  One host for
** the whole run (a host per input would measure Lua's start-up, not our
** code); the harness script (FUZZ_SCRIPT, tests/fuzz/<name>.lua) defines
** the global fuzz_one(data), which runs as the main task for each input
** and raises when an invariant breaks: that error aborts, so libFuzzer
** keeps the input.  fuzz.pair() gives a connected socketpair; it aborts
** when its fds climb, which is how an fd leak shows.
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "aiolua.h"

#ifndef FUZZ_SCRIPT
#error "build with -DFUZZ_SCRIPT=\"tests/fuzz/<name>.lua\""
#endif

static aio_host *H;

static int l_pair(lua_State *L) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    return luaL_error(L, "fuzz.pair: socketpair failed");
  if (sv[1] > 200) {
    fprintf(stderr, "fuzz: fd %d: descriptors leak between inputs\n", sv[1]);
    abort();
  }
  lua_pushinteger(L, sv[0]);
  lua_pushinteger(L, sv[1]);
  return 2;
}

static const luaL_Reg fuzz_funcs[] = {
  { "pair", l_pair },
  { NULL, NULL }
};

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  const char *dir = getenv("FUZZ_DIR");
  char path[4096];
  (void)argc; (void)argv;
  snprintf(path, sizeof path, "%s/%s", dir ? dir : ".", FUZZ_SCRIPT);
  H = aio_host_newopt(AIO_HOST_NOENV);
  if (H == NULL || aio_host_register(H, "fuzz", fuzz_funcs) != 0 ||
      aio_host_dofile(H, path) != 0) {
    fprintf(stderr, "fuzz: cannot start: %s\n",
            H ? aio_host_errmsg(H) : "no host");
    exit(1);
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *L = aio_host_lua(H);
  lua_getglobal(L, "fuzz_one");
  lua_pushlstring(L, (const char *)data, size);
  if (aio_host_call(H, 1, 0) != 0) {
    fprintf(stderr, "fuzz: invariant broken: %s\n", aio_host_errmsg(H));
    abort();
  }
  return 0;
}
