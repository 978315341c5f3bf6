/*
** faults.c: the failing-allocator sweep (make faults).  For N = 1, 2, ...
** a host whose Lua allocator fails the N-th allocation and every one after
** it (Lua first retries each after an emergency collection, so a single
** failure mostly goes unseen) runs tests/faults/script.lua; FAULT_ONCE=1
** fails the N-th only.  The host is then freed with allocations allowed.
** Each N must end with success or a failed run whose message says "not
** enough memory" (or another clean error), then free its host: never a
** crash (ASan aborts), a hang (alarm), an fd left open, or a leak
** (LeakSanitizer at exit).  The sweep ends at the first N past the last
** allocation.  FAULT_FROM, FAULT_TO, FAULT_STEP narrow it; FAULT_VERBOSE=1
** prints each N's outcome.
*/
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aiolua.h"

typedef struct budget {
  long count;     /* allocations so far */
  long fail_at;   /* this one fails; 0: none */
  int failed;
  int once;       /* fail only the fail_at-th, not those after it */
} budget;

static long current_n;
static int once;

static void *failing_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  budget *b = ud;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  if (ptr == NULL || nsize > osize) {  /* an allocation or a growth */
    ++b->count;
    if (b->fail_at > 0 && (b->count == b->fail_at ||
                           (!b->once && b->count > b->fail_at))) {
      b->failed = 1;
      return NULL;
    }
  }
  return realloc(ptr, nsize);
}

static int count_fds(void) {
  int n = 0;
  struct dirent *e;
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL) return -1;
  while ((e = readdir(d)) != NULL) n += e->d_name[0] != '.';
  closedir(d);
  return n - 1;  /* the DIR's own */
}

static void on_alarm(int sig) {
  (void)sig;
  fprintf(stderr, "faults: N=%ld hangs\n", current_n);
  abort();
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  char *s;
  long n;
  if (f == NULL) return NULL;
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  rewind(f);
  s = malloc((size_t)n + 1);
  if (s == NULL || fread(s, 1, (size_t)n, f) != (size_t)n) exit(2);
  s[n] = 0;
  fclose(f);
  return s;
}

/* one run; returns 0 ok, 1 clean failure; *used: allocations made */
static int run(const char *chunk, long fail_at, long *used, int verbose) {
  budget b = { 0, fail_at, 0, once };
  aio_host *h;
  int rc, ok = 1;
  current_n = fail_at;
  alarm(20);
  h = aio_host_newalloc(failing_alloc, &b, AIO_HOST_NOENV);
  if (h == NULL) {
    if (verbose) printf("N=%ld: no host\n", fail_at);
    rc = 1;
  } else {
    rc = aio_host_dostring(h, chunk, "=script.lua");
    if (rc != 0) {
      const char *msg = aio_host_errmsg(h);
      if (verbose || msg == NULL || !b.failed)
        printf("N=%ld: %s\n", fail_at, msg ? msg : "(no message)");
      if (!b.failed) ok = 0;  /* failed with no fault injected */
    } else if (verbose) {
      printf("N=%ld: ok\n", fail_at);
    }
    *used = b.count;
    b.fail_at = 0;  /* the teardown may allocate again */
    if (getenv("FAULT_DUMP"))  /* what is left for the teardown */
      aio_host_dostring(h, "io.stderr:write(#aio.all_tasks(), ' tasks\\n') "
                        "aio.dump_tasks()", "=dump");
    aio_host_free(h);
  }
  alarm(0);
  if (h == NULL) *used = b.count;
  if (!ok) return -1;
  return rc != 0;
}

int main(int argc, char **argv) {
  const char *path = argc > 1 ? argv[1] : "tests/faults/script.lua";
  char *chunk = slurp(path);
  long n, total, used, from, to, step, nok = 0, nfail = 0;
  int fds0, verbose = getenv("FAULT_VERBOSE") != NULL;
  if (chunk == NULL) {
    fprintf(stderr, "faults: cannot read %s\n", path);
    return 2;
  }
  once = getenv("FAULT_ONCE") != NULL;
  signal(SIGALRM, on_alarm);
  signal(SIGPIPE, SIG_IGN);
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (run(chunk, 0, &total, 1) != 0) {
    fprintf(stderr, "faults: the script fails with no fault injected\n");
    free(chunk);
    return 1;
  }
  fds0 = count_fds();
  from = getenv("FAULT_FROM") ? atol(getenv("FAULT_FROM")) : 1;
  to = getenv("FAULT_TO") ? atol(getenv("FAULT_TO")) : total + 1;
  step = getenv("FAULT_STEP") ? atol(getenv("FAULT_STEP")) : 1;
  if (step < 1) step = 1;
  printf("faults: %ld allocations in a clean run; sweeping N = %ld..%ld "
         "step %ld\n", total, from, to, step);
  fflush(stdout);
  for (n = from; n <= to; n += step) {
    int rc = run(chunk, n, &used, verbose), fds = count_fds();
    if (rc < 0) {
      printf("FAIL faults: N=%ld failed without a fault\n", n);
      free(chunk);
      return 1;
    }
    if (fds != fds0) {
      char cmd[64];
      printf("FAIL faults: N=%ld left %d fds open (%d before)\n", n, fds,
             fds0);
      snprintf(cmd, sizeof cmd, "ls -l /proc/%d/fd", (int)getpid());
      if (system(cmd) != 0) printf("(cannot list them)\n");
      free(chunk);
      return 1;
    }
    if (rc == 0) nok++; else nfail++;
    fflush(stdout);
  }
  free(chunk);
  printf("faults: %ld runs, %ld succeeded, %ld failed cleanly\n",
         nok + nfail, nok, nfail);
  return 0;
}
