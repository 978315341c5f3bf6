/* the loop seam (loop.h) as the libev backend implements it */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "loop.h"
#include "t.h"

static aio_loop *newloop(void) {
  int err = 0;
  aio_loop *lp = aio__loop_new(&err);
  if (lp == NULL) T_FAIL("aio__loop_new: %s", aio__strerror(err));
  return lp;
}

TEST(loop_poll_timeout) {
  aio_loop *lp = newloop();
  double t0 = aio__clock();
  ASSERT_OK(aio__loop_poll(lp, 0));
  ASSERT_OK(aio__loop_poll(lp, 0.02));
  ASSERT(aio__clock() - t0 >= 0.015);  /* it did wait, not spin */
  aio__loop_free(lp);
}

static int woken;
static void on_wake(void *data) { woken += *(int *)data; }

static void *poster(void *arg) {
  usleep(10000);
  aio__loop_wakeup(arg);
  return NULL;
}

TEST(loop_wakeup_from_thread) {
  aio_loop *lp = newloop();
  pthread_t th;
  int one = 1, i;
  woken = 0;
  ASSERT_OK(aio__loop_set_wakeup(lp, on_wake, &one));
  ASSERT_OK(pthread_create(&th, NULL, poster, lp));
  for (i = 0; i < 500 && !woken; i++) aio__loop_poll(lp, 0.05);
  pthread_join(th, NULL);
  ASSERT_EQ(woken, 1);
  aio__loop_free(lp);
}

static int sigs;
static void on_sig(aio_bhandle *h, int signum, void *data) {
  sigs += signum == SIGUSR1;
}

TEST(loop_signal) {
  aio_loop *lp = newloop();
  aio_bhandle *h = NULL;
  int i;
  sigs = 0;
  ASSERT_OK(aio__signal_start(lp, &h, SIGUSR1, on_sig, NULL));
  raise(SIGUSR1);
  for (i = 0; i < 100 && !sigs; i++) aio__loop_poll(lp, 0.05);
  ASSERT_EQ(sigs, 1);
  ASSERT_EQ(aio__signal_start(lp, &h, 0, on_sig, NULL), -EINVAL);
  aio__handle_close(h, NULL, NULL);
  aio__loop_free(lp);
}

static int child_status = -1, closed;
static void on_child(aio_bhandle *h, int pid, int status, void *data) {
  child_status = status;
}
static void on_close(aio_bhandle *h, void *data) { closed++; }

TEST(loop_child) {
  aio_loop *lp = newloop();
  aio_bhandle *h = NULL;
  int i;
  pid_t pid = fork();
  if (pid == 0) _exit(3);
  ASSERT(pid > 0);
  child_status = -1;
  closed = 0;
  ASSERT_OK(aio__child_start(lp, &h, pid, on_child, NULL));
  for (i = 0; i < 100 && child_status < 0; i++) aio__loop_poll(lp, 0.05);
  ASSERT(WIFEXITED(child_status));
  ASSERT_EQ(WEXITSTATUS(child_status), 3);
  aio__handle_close(h, on_close, NULL);
  ASSERT_EQ(closed, 1);  /* libev: the close callback runs at once */
  ASSERT_EQ(waitpid(pid, NULL, WNOHANG), -1);  /* reaped already */
  aio__loop_free(lp);
}

static int readable;
static void on_readable(aio_bhandle *h, int events, void *data) {
  char c;
  if (events & AIO_POLL_READABLE) readable++;
  (void)!read(*(int *)data, &c, 1);
}

TEST(loop_poll_fd) {
  aio_loop *lp = newloop();
  aio_bhandle *h = NULL;
  int fds[2], i;
  ASSERT_OK(pipe(fds));
  readable = 0;
  ASSERT_EQ(aio__poll_start(lp, &h, fds[0], 0, on_readable, &fds[0]),
            -EINVAL);
  ASSERT_OK(aio__poll_start(lp, &h, fds[0], AIO_POLL_READABLE, on_readable,
                            &fds[0]));
  ASSERT_OK(aio__loop_poll(lp, 0.01));
  ASSERT_EQ(readable, 0);  /* nothing to read yet */
  ASSERT_EQ(write(fds[1], "x", 1), 1);
  for (i = 0; i < 100 && !readable; i++) aio__loop_poll(lp, 0.05);
  ASSERT_EQ(readable, 1);
  aio__handle_close(h, NULL, NULL);
  ASSERT_EQ(write(fds[1], "y", 1), 1);
  ASSERT_OK(aio__loop_poll(lp, 0.01));
  ASSERT_EQ(readable, 1);  /* closed: no more callbacks */
  close(fds[0]);
  close(fds[1]);
  aio__loop_free(lp);
}
