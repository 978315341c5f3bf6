/* issue 6: children on loops other than libev's default one, children that
** outlive their loop, and subprocesses in a second embedded host */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aiolua.h"
#include "loop.h"
#include "t.h"

static int got_status;

static void on_child(aio_bhandle *h, int pid, int status, void *data) {
  (void)h; (void)pid; (void)data;
  got_status = status;
}

/* A forked child ends through exec: under valgrind (tests/run.sh) a child
** that calls _exit is leak-checked with the parent's heap and exits 99. */
static void child_exit(int code, const char *delay) {
  char cmd[64];
  snprintf(cmd, sizeof cmd, "sleep %s; exit %d", delay, code);
  execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
  _exit(127);
}

/* a loop beside another one: each watches its children with a pidfd */
TEST(process_child_other_loop) {
  int err = 0, i;
  aio_loop *first = aio__loop_new(&err), *lp;
  aio_bhandle *h = NULL;
  pid_t pid;
  ASSERT(first != NULL);
  lp = aio__loop_new(&err);
  ASSERT(lp != NULL);
  pid = fork();
  if (pid == 0) child_exit(5, "0");
  got_status = -2;
  ASSERT_OK(aio__child_start(lp, &h, pid, on_child, NULL));
  for (i = 0; i < 100 && got_status == -2; i++) aio__loop_poll(lp, 0.05);
  ASSERT(WIFEXITED(got_status));
  ASSERT_EQ(WEXITSTATUS(got_status), 5);
  ASSERT_EQ(waitpid(pid, NULL, WNOHANG), -1);  /* reaped already */
  aio__handle_close(h, NULL, NULL);
  aio__loop_free(lp);
  aio__loop_free(first);
}

/* a loop freed while its child runs: the owner hears status -1, the handle
** only frees, and the child is reaped later without blocking */
TEST(process_child_outlives_loop) {
  int err = 0, i;
  aio_loop *lp = aio__loop_new(&err);
  aio_bhandle *h = NULL;
  pid_t pid = fork();
  if (pid == 0) child_exit(0, "0.1");
  got_status = -2;
  ASSERT(lp != NULL);
  ASSERT_OK(aio__child_start(lp, &h, pid, on_child, NULL));
  aio__loop_free(lp);
  ASSERT_EQ(got_status, -1);
  aio__handle_close(h, NULL, NULL);
  /* the next child started anywhere reaps the orphan once it exited */
  usleep(200000);
  lp = aio__loop_new(&err);
  {
    pid_t p2 = fork();
    if (p2 == 0) child_exit(0, "0");
    got_status = -2;
    ASSERT_OK(aio__child_start(lp, &h, p2, on_child, NULL));
    for (i = 0; i < 100 && got_status == -2; i++) aio__loop_poll(lp, 0.05);
    aio__handle_close(h, NULL, NULL);
  }
  ASSERT_EQ(waitpid(pid, NULL, WNOHANG), -1);  /* gone: reaped */
  aio__loop_free(lp);
}

/* two hosts: both run children */
TEST(process_two_hosts) {
  aio_host *a = aio_host_new(), *b = aio_host_new();
  lua_State *L;
  ASSERT(a != NULL && b != NULL);
  ASSERT_OK(aio_host_dostring(b,
    "local r = aio.run_process({'sh', '-c', 'echo b; exit 4'})\n"
    "assert(r.returncode == 4 and r.stdout == 'b\\n', r.returncode)\n"
    "local p = aio.exec({'sleep', '10'}); p:kill()\n"
    "assert(p:wait() == -9)\n"
    "rb = 1", "b"));
  ASSERT_OK(aio_host_dostring(a,
    "local r = aio.run_process({'sh', '-c', 'echo a'})\n"
    "assert(r.returncode == 0 and r.stdout == 'a\\n')\n"
    "ra = 1", "a"));
  L = aio_host_lua(b);
  lua_getglobal(L, "rb");
  ASSERT_EQ(lua_tointeger(L, -1), 1);
  lua_pop(L, 1);
  aio_host_free(b);
  aio_host_free(a);
}

static void on_sig(aio_bhandle *h, int signum, void *data) {
  (void)h; (void)signum; (void)data;
}

/* libev asserts when two loops watch one signal: the seam says EBUSY */
TEST(process_signal_one_loop) {
  int err = 0;
  aio_loop *a = aio__loop_new(&err), *b = aio__loop_new(&err);
  aio_bhandle *h1 = NULL, *h2 = NULL, *h3 = NULL;
  ASSERT(a != NULL && b != NULL);
  ASSERT_OK(aio__signal_start(a, &h1, SIGUSR1, on_sig, NULL));
  ASSERT_OK(aio__signal_start(a, &h2, SIGUSR1, on_sig, NULL));
  ASSERT_EQ(aio__signal_start(b, &h3, SIGUSR1, on_sig, NULL), -EBUSY);
  aio__handle_close(h1, NULL, NULL);
  ASSERT_EQ(aio__signal_start(b, &h3, SIGUSR1, on_sig, NULL), -EBUSY);
  aio__handle_close(h2, NULL, NULL);
  ASSERT_OK(aio__signal_start(b, &h3, SIGUSR1, on_sig, NULL));
  aio__loop_free(b);                 /* orphans h3 and gives SIGUSR1 back */
  ASSERT_OK(aio__signal_start(a, &h1, SIGUSR1, on_sig, NULL));
  aio__handle_close(h1, NULL, NULL);
  aio__handle_close(h3, NULL, NULL);
  aio__loop_free(a);
}
