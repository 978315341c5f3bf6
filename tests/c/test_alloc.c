/* test_alloc.c: the host's Lua allocator (src/host/alloc.c) */
#include <stdint.h>
#include <stdlib.h>

#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"

#include "alloc.h"
#include "t.h"

static void fill(unsigned char *p, size_t n, unsigned seed) {
  size_t i;
  for (i = 0; i < n; i++) p[i] = (unsigned char)(seed * 31 + i);
}

static int check(const unsigned char *p, size_t n, unsigned seed) {
  size_t i;
  for (i = 0; i < n; i++)
    if (p[i] != (unsigned char)(seed * 31 + i)) return 0;
  return 1;
}

/* every size up to past the small limit, many of each, freed out of order:
** contents survive, blocks are aligned, and everything comes back */
TEST(alloc_sizes) {
  enum { N = 3000 };
  static void *p[N];
  static size_t sz[N];
  aio_alloc *a = aio__alloc_new();
  aio_alloc_stats st;
  size_t i, mapped;
  unsigned x = 12345;
  ASSERT(a != NULL);
  for (i = 0; i < N; i++) {
    sz[i] = 1 + (i * 7) % (AIO_ALLOC_SMALL + 300);
    p[i] = aio__lalloc(a, NULL, LUA_TTABLE, sz[i]);
    ASSERT(p[i] != NULL);
    ASSERT_EQ((uintptr_t)p[i] % 16, 0);
    fill(p[i], sz[i], (unsigned)i);
  }
  for (i = 0; i < N; i++) ASSERT(check(p[i], sz[i], (unsigned)i));
  aio__alloc_stats(a, &st);
  ASSERT(st.small_live > 0);
  /* free in a scrambled order */
  for (i = 0; i < N; i++) {
    size_t j = (x = x * 1103515245u + 12345u) % N;
    if (p[j]) {
      ASSERT(check(p[j], sz[j], (unsigned)j));
      ASSERT(aio__lalloc(a, p[j], sz[j], 0) == NULL);
      p[j] = NULL;
    }
  }
  for (i = 0; i < N; i++)
    if (p[i]) aio__lalloc(a, p[i], sz[i], 0);
  aio__alloc_stats(a, &st);
  ASSERT_EQ(st.small_live, 0);
  mapped = st.mapped;
  /* the same again reuses the empty runs: nothing new from the system */
  for (i = 0; i < N; i++) {
    p[i] = aio__lalloc(a, NULL, 0, sz[i]);
    ASSERT(p[i] != NULL);
  }
  for (i = 0; i < N; i++) aio__lalloc(a, p[i], sz[i], 0);
  aio__alloc_stats(a, &st);
  ASSERT_EQ(st.mapped, mapped);
  ASSERT_EQ(st.small_live, 0);
  aio__alloc_free(a);
}

/* a class that needed many runs gives the empty ones back for any class */
TEST(alloc_runs_reused) {
  enum { N = 20000 };
  static void *p[N];
  aio_alloc *a = aio__alloc_new();
  aio_alloc_stats st;
  size_t i, mapped, runs;
  ASSERT(a != NULL);
  for (i = 0; i < N; i++) ASSERT((p[i] = aio__lalloc(a, NULL, 0, 100)) != NULL);
  aio__alloc_stats(a, &st);
  runs = st.runs;
  ASSERT(runs > 10);
  for (i = 0; i < N; i++) aio__lalloc(a, p[i], 100, 0);
  aio__alloc_stats(a, &st);
  ASSERT_EQ(st.small_live, 0);
  ASSERT_EQ(st.runs, 1);  /* the class keeps one */
  ASSERT_EQ(st.free_runs, runs - 1);
  mapped = st.mapped;
  /* as many bytes in a bigger class: the empty runs serve it */
  for (i = 0; i < N / 2; i++)
    ASSERT((p[i] = aio__lalloc(a, NULL, 0, 200)) != NULL);
  aio__alloc_stats(a, &st);
  ASSERT(st.mapped <= mapped + 2 * 1024 * 1024);
  for (i = 0; i < N / 2; i++) aio__lalloc(a, p[i], 200, 0);
  aio__alloc_free(a);
}

/* resizing within a class, across classes and across the small limit */
TEST(alloc_realloc) {
  static const size_t steps[] = { 1, 16, 17, 100, 1024, 1025, 5000, 1024,
                                  33, 8, 70000, 2, 1000, 16 };
  aio_alloc *a = aio__alloc_new();
  aio_alloc_stats st;
  unsigned char *p = NULL;
  size_t i, cur = 0;
  ASSERT(a != NULL);
  for (i = 0; i < sizeof steps / sizeof steps[0]; i++) {
    size_t n = steps[i], keep = cur < n ? cur : n;
    unsigned char *q = aio__lalloc(a, p, p ? cur : 0, n);
    ASSERT(q != NULL);
    if (p) {  /* the common prefix survived */
      size_t k;
      for (k = 0; k < keep; k++)
        ASSERT_EQ(q[k], (unsigned char)(7 * 31 + k));
    }
    fill(q, n, 7);
    p = q;
    cur = n;
  }
  aio__lalloc(a, p, cur, 0);
  aio__alloc_stats(a, &st);
  ASSERT_EQ(st.small_live, 0);
  aio__alloc_free(a);
}

/* a whole Lua state on it: tables, strings, closures and coroutines come
** and go; after lua_close not one small block is left */
TEST(alloc_lua_state) {
  aio_alloc *a = aio__alloc_new();
  aio_alloc_stats st;
  lua_State *L;
  ASSERT(a != NULL);
  L = lua_newstate(aio__lalloc, a);
  ASSERT(L != NULL);
  luaL_openlibs(L);
  ASSERT_OK(luaL_dostring(L,
    "local t = {}\n"
    "for i = 1, 20000 do\n"
    "  t[i] = { i, tostring(i) .. string.rep('x', i % 300),\n"
    "           function() return i end }\n"
    "  local co = coroutine.create(function(a) return coroutine.yield(a) end)\n"
    "  coroutine.resume(co, i)\n"
    "  if i % 3 == 0 then t[i - 1] = nil end\n"
    "end\n"
    "collectgarbage()\n"
    "local n = 0\n"
    "for i = 1, 20000 do if t[i] and t[i][3]() == i then n = n + 1 end end\n"
    "assert(n == 20000 - 6666, n)\n"));
  aio__alloc_stats(a, &st);
  ASSERT(st.small_live > 20000);
  lua_close(L);
  aio__alloc_stats(a, &st);
  ASSERT_EQ(st.small_live, 0);
  aio__alloc_free(a);
}

/* a heap of many segments: 24 MiB of 64-byte blocks keep their contents,
** come back, and their runs are reused by a second round */
TEST(alloc_big_heap) {
  enum { N = 24 * 1024 * 1024 / 64 };
  void **p = malloc(N * sizeof *p);
  aio_alloc *a = aio__alloc_new();
  aio_alloc_stats st;
  size_t i, mapped;
  int round;
  ASSERT(p != NULL && a != NULL);
  for (round = 0; round < 2; round++) {
    for (i = 0; i < N; i++) {
      p[i] = aio__lalloc(a, NULL, LUA_TTHREAD, 64);
      ASSERT(p[i] != NULL);
      fill(p[i], 64, (unsigned)i);
    }
    aio__alloc_stats(a, &st);
    ASSERT_EQ(st.small_live, N);
    ASSERT(st.mapped >= (size_t)N * 64);
    if (round == 0) mapped = st.mapped;
    else ASSERT_EQ(st.mapped, mapped);  /* the first round's runs again */
    for (i = 0; i < N; i++) {
      ASSERT(check(p[i], 64, (unsigned)i));
      aio__lalloc(a, p[i], 64, 0);
    }
    aio__alloc_stats(a, &st);
    ASSERT_EQ(st.small_live, 0);
  }
  aio__alloc_free(a);
  free(p);
}

/* the heap grows past its first 2 MiB segment: each later segment comes
** with its pages already faulted in (MADV_POPULATE_WRITE), while the first
** is faulted in as it is used (a small program keeps a small RSS).  Linux
** segments only: under AddressSanitizer and on Windows runs come from the
** C heap, and a kernel older than 5.14 refuses the advice. */
#if defined(__linux__) && !defined(__SANITIZE_ADDRESS__)
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>

static size_t resident(const char *seg, size_t len) {
  unsigned char vec[512];
  size_t i, n = 0, pages = len / 4096;
  if (pages > sizeof vec || mincore((void *)seg, len, vec) != 0) return 0;
  for (i = 0; i < pages; i++) n += vec[i] & 1;
  return n;
}

static int kernel_at_least(int major, int minor) {
  struct utsname u;
  int a = 0, b = 0;
  if (uname(&u) != 0 || sscanf(u.release, "%d.%d", &a, &b) != 2) return 0;
  return a > major || (a == major && b >= minor);
}
#endif

TEST(alloc_segments_populated) {
#if defined(__linux__) && !defined(__SANITIZE_ADDRESS__)
  enum { N = 3 * 1024 * 1024 / 64 };
  const uintptr_t SEGSZ = 2 * 1024 * 1024;
  void **p = malloc(N * sizeof *p);
  aio_alloc *a = aio__alloc_new();
  uintptr_t first = 0;
  size_t i, n = 0;
  ASSERT(p != NULL && a != NULL);
  for (i = 0; i < N; i++) {
    uintptr_t seg;
    p[i] = aio__lalloc(a, NULL, LUA_TTABLE, 64);
    ASSERT(p[i] != NULL);
    n = i + 1;
    seg = (uintptr_t)p[i] & ~(SEGSZ - 1);
    if (i == 0) {
      first = seg;
      /* the first segment: only what is used is resident */
      ASSERT(resident((const char *)seg, SEGSZ) < SEGSZ / 4096 / 2);
    } else if (seg != first) {
      /* the second one, at its first block: resident whole */
      if (kernel_at_least(5, 14))
        ASSERT_EQ(resident((const char *)seg, SEGSZ), SEGSZ / 4096);
      break;
    }
  }
  ASSERT(i < N);  /* a second segment was reached */
  for (i = 0; i < n; i++) aio__lalloc(a, p[i], 64, 0);
  aio__alloc_free(a);
  free(p);
#endif
}

/* AIOLUA_HUGEPAGES: 0 never asks for huge pages, 1 asks for every segment
** past the first, unset measures from the fourth segment on: the fourth as
** 4 KiB pages, the fifth as a huge page, then the cheaper.  Blocks keep
** their contents either way.  Linux segments only, where the kernel has
** transparent huge pages at all. */
#if defined(__linux__) && !defined(__SANITIZE_ADDRESS__)
static size_t grow_segments(const char *setting, size_t *nsegs) {
  enum { N = 20000, SZ = 1024 };
  void **p = malloc(N * sizeof *p);
  aio_alloc *a;
  aio_alloc_stats st;
  size_t i, huge;
  if (setting) setenv("AIOLUA_HUGEPAGES", setting, 1);
  else unsetenv("AIOLUA_HUGEPAGES");
  a = aio__alloc_new();
  unsetenv("AIOLUA_HUGEPAGES");
  if (p == NULL || a == NULL) T_FAIL("out of memory");
  for (i = 0; i < N; i++) {
    p[i] = aio__lalloc(a, NULL, LUA_TTABLE, SZ);
    if (p[i] == NULL) T_FAIL("out of memory");
    fill(p[i], SZ, (unsigned)i);
  }
  for (i = 0; i < N; i++)
    if (!check(p[i], SZ, (unsigned)i)) T_FAIL("block %zu changed", i);
  aio__alloc_stats(a, &st);
  huge = st.huge_segs;
  *nsegs = st.mapped / (2 * 1024 * 1024);
  for (i = 0; i < N; i++) aio__lalloc(a, p[i], SZ, 0);
  aio__alloc_stats(a, &st);
  if (st.small_live != 0) T_FAIL("%zu blocks left", st.small_live);
  aio__alloc_free(a);
  free(p);
  return huge;
}
#endif

TEST(alloc_huge_pages) {
#if defined(__linux__) && !defined(__SANITIZE_ADDRESS__)
  size_t nseg = 0, huge;
  int thp = access("/sys/kernel/mm/transparent_hugepage/enabled", F_OK) == 0;
  huge = grow_segments("0", &nseg);
  ASSERT(nseg >= 8);
  ASSERT_EQ(huge, 0);
  huge = grow_segments("1", &nseg);
  if (thp) ASSERT_EQ(huge, nseg - 1);
  huge = grow_segments(NULL, &nseg);
  if (thp) {
    ASSERT(huge >= 1);            /* the fifth segment, measured */
    ASSERT(huge <= nseg - 4);     /* never the first four */
  }
#endif
}
