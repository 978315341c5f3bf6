/*
** test_fuzz.c: the inputs make fuzz found, replayed on every make test
** through the same harness scripts (tests/fuzz/<name>.lua), with the seed
** corpus besides.  Each test is named after what its input found.
*/
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "aiolua.h"
#include "t.h"

static int l_pair(lua_State *L) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    return luaL_error(L, "fuzz.pair: socketpair failed");
  lua_pushinteger(L, sv[0]);
  lua_pushinteger(L, sv[1]);
  return 2;
}

static const luaL_Reg fuzz_funcs[] = { { "pair", l_pair }, { NULL, NULL } };

static aio_host *harness(const char *name) {
  char path[256];
  aio_host *h = aio_host_newopt(AIO_HOST_NOENV);
  ASSERT(h != NULL);
  ASSERT_OK(aio_host_register(h, "fuzz", fuzz_funcs));
  snprintf(path, sizeof path, "tests/fuzz/%s.lua", name);
  if (aio_host_dofile(h, path) != 0) T_FAIL("%s", aio_host_errmsg(h));
  return h;
}

/* feed one file to fuzz_one; fails the test with the harness's message */
static void replay(aio_host *h, const char *path) {
  lua_State *L = aio_host_lua(h);
  char buf[8192];
  size_t n;
  FILE *f = fopen(path, "rb");
  if (f == NULL) T_FAIL("cannot open %s", path);
  n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  lua_getglobal(L, "fuzz_one");
  lua_pushlstring(L, buf, n);
  if (aio_host_call(h, 1, 0) != 0)
    T_FAIL("%s: %s", path, aio_host_errmsg(h));
}

static void replay_dir(aio_host *h, const char *dir) {
  char path[512];
  struct dirent *e;
  DIR *d = opendir(dir);
  if (d == NULL) T_FAIL("cannot open %s", dir);
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    replay(h, path);
  }
  closedir(d);
}

/* The reader asked for its buffer before anything was read: the backend
** returned NULL + 0 (undefined behaviour; UBSan in the fuzz build). */
TEST(fuzz_stream_null_rbuf) {
  aio_host *h = harness("stream");
  replay(h, "tests/fuzz/regress/stream-null-rbuf");
  aio_host_free(h);
}

TEST(fuzz_stream_corpus) {
  aio_host *h = harness("stream");
  replay_dir(h, "tests/fuzz/corpus/stream");
  aio_host_free(h);
}

TEST(fuzz_thread_corpus) {
  aio_host *h = harness("thread");
  replay_dir(h, "tests/fuzz/corpus/thread");
  aio_host_free(h);
}

/* the TLS server side: tests/fuzz/tls.lua makes its certificate with
** openssl, as tests/lua/tls_spec.lua does */
TEST(fuzz_tls_corpus) {
  aio_host *h = harness("tls");
  replay_dir(h, "tests/fuzz/corpus/tls");
  aio_host_free(h);
}
