/* the name resolver's worker pool (src/bindings/dns.c): lookups nobody
** wants any more are not made.  getaddrinfo is interposed here: names
** ending in ".slow" take 100 ms (and resolve as 127.0.0.1), and are
** counted; every other name goes to the C library's. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <dlfcn.h>
#include <netdb.h>
#include <string.h>
#include <unistd.h>

#include "aiolua.h"
#include "t.h"

static int slow_calls;

int getaddrinfo(const char *node, const char *service,
                const struct addrinfo *hints, struct addrinfo **res) {
  static int (*real)(const char *, const char *, const struct addrinfo *,
                     struct addrinfo **);
  size_t n = node ? strlen(node) : 0;
  if (n > 5 && strcmp(node + n - 5, ".slow") == 0 &&
      !(hints && (hints->ai_flags & AI_NUMERICHOST))) {  /* not a number */
    __atomic_add_fetch(&slow_calls, 1, __ATOMIC_RELAXED);
    usleep(100000);
    node = "127.0.0.1";
  }
  if (real == NULL)
    *(void **)&real = dlsym(RTLD_NEXT, "getaddrinfo");
  return real(node, service, hints, res);
}

/* 40 lookups cancelled while the 4 workers are busy: the queued ones are
** dropped, not made (asyncio's executor skips a cancelled job that has
** not started), so a lookup after them does not wait behind 36 more */
TEST(dns_cancelled_lookups_are_not_made) {
  aio_host *h = aio_host_new();
  ASSERT(h != NULL);
  slow_calls = 0;
  if (aio_host_dostring(h,
        "local ts = {}\n"
        "for i = 1, 40 do ts[i] = aio.spawn(aio.getaddrinfo, 'q' .. i .. '.slow', 80) end\n"
        "aio.sleep(0.02)\n"
        "for i = 1, 40 do ts[i]:cancel() end\n"
        "for i = 1, 40 do pcall(ts[i].await, ts[i]) end\n"
        "local r = aio.getaddrinfo('after.slow', 80)\n"
        "assert(r[1].host == '127.0.0.1', r[1].host)\n", "=dns") != 0)
    T_FAIL("dns: %s", aio_host_errmsg(h));
  /* at most the four the workers had started, and the last one */
  ASSERT(__atomic_load_n(&slow_calls, __ATOMIC_RELAXED) <= 5);
  aio_host_free(h);
}

static int threads(void) {
  DIR *d = opendir("/proc/self/task");
  struct dirent *e;
  int n = 0;
  if (d == NULL) return -1;
  while ((e = readdir(d)) != NULL) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

/* the lookups ran on threads of the resolver's own that nothing ever
** stopped: after aio_host_free they lived on (valgrind reported glibc's
** resolver state and their stacks as lost).  They are the worker pool's
** now, joined when the last loop that used it closes, as to_thread's. */
TEST(dns_leaves_no_thread_behind) {
  int before = threads();
  aio_host *h = aio_host_new();
  ASSERT(h != NULL);
  if (aio_host_dostring(h,
        "local ts = {}\n"
        "for i = 1, 6 do ts[i] = aio.spawn(aio.getaddrinfo, 'localhost', 80) end\n"
        "for i = 1, 6 do assert(#ts[i]:await() >= 1) end\n"
        "aio.spawn(aio.getaddrinfo, 'late.slow', 80)  -- still running at the end\n"
        "aio.sleep(0.01)\n", "=dns") != 0)
    T_FAIL("dns: %s", aio_host_errmsg(h));
  ASSERT(threads() > before);
  aio_host_free(h);
  /* a joined thread may still be listed for a moment: its exit finishes
  ** in the kernel after the join has returned */
  for (int i = 0; i < 100 && threads() != before; i++) usleep(10000);
  ASSERT_EQ(threads(), before);
}
