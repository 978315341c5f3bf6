/* the IOCP backend (loop_iocp.c) through loop.h, and what on Windows
** replaces the POSIX-only C tests (signals are console control events) */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

#include <windows.h>

#include "aiolua.h"
#include "loop.h"
#include "../c/t.h"

/* A console to send Ctrl-C in.  Wine run headless has none unless its
** stdin is a terminal: tests/win/run.sh runs this program under script(1)
** for a pty, and a run without one fails these tests, not skips them. */
static void need_console(void) {
  if (GetConsoleWindow() == NULL && !AllocConsole())
    T_FAIL("no console to send Ctrl-C in (under wine, give stdin a "
           "terminal: tests/win/run.sh uses script(1))");
}

static aio_loop *newloop(void) {
  int err = 0;
  aio_loop *lp = aio__loop_new(&err);
  if (lp == NULL) T_FAIL("aio__loop_new: %s", aio__strerror(err));
  return lp;
}

TEST(iocp_poll_timeout) {
  aio_loop *lp = newloop();
  double t0 = aio__clock();
  ASSERT_OK(aio__loop_poll(lp, 0));
  ASSERT(aio__clock() - t0 < 0.015);
  t0 = aio__clock();
  ASSERT_OK(aio__loop_poll(lp, 0.02));
  ASSERT(aio__clock() - t0 >= 0.019);  /* rounded up, never early */
  aio__loop_free(lp);
}

static volatile LONG woken;
static void on_wake(void *data) { InterlockedAdd(&woken, *(int *)data); }

static void *poster(void *arg) {
  Sleep(10);
  aio__loop_wakeup(arg);
  return NULL;
}

TEST(iocp_wakeup_from_thread) {
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

/* many wake-ups before a poll: one callback, and the next wake-up works */
TEST(iocp_wakeup_coalesces) {
  aio_loop *lp = newloop();
  int one = 1, i;
  woken = 0;
  ASSERT_OK(aio__loop_set_wakeup(lp, on_wake, &one));
  for (i = 0; i < 100; i++) aio__loop_wakeup(lp);
  ASSERT_OK(aio__loop_poll(lp, 0.5));
  ASSERT_EQ(woken, 1);
  ASSERT_OK(aio__loop_poll(lp, 0));
  ASSERT_EQ(woken, 1);
  aio__loop_wakeup(lp);
  ASSERT_OK(aio__loop_poll(lp, 0.5));
  ASSERT_EQ(woken, 2);
  aio__loop_free(lp);
}

static int sigs;
static volatile LONG async_sigs;
static void on_sig(aio_bhandle *h, int signum, void *data) {
  (void)h; (void)data;
  sigs += signum == SIGINT;
}
static void on_sig_async(int signum, void *data) {
  (void)data;
  if (signum == SIGINT) InterlockedIncrement(&async_sigs);
}

/* Ctrl-C is a console event, handled on a thread of its own and posted
** to the loop; the async callback runs there first */
TEST(iocp_signal_ctrl_c) {
  aio_loop *lp;
  aio_bhandle *h;
  int i;
  need_console();
  lp = newloop();
  sigs = 0;
  async_sigs = 0;
  ASSERT_OK(aio__signal_start(lp, &h, SIGINT, on_sig, NULL));
  ASSERT_OK(aio__signal_async(h, on_sig_async, NULL));
  ASSERT(GenerateConsoleCtrlEvent(CTRL_C_EVENT, 0));
  for (i = 0; i < 100 && sigs == 0; i++) ASSERT_OK(aio__loop_poll(lp, 0.05));
  ASSERT_EQ(sigs, 1);
  ASSERT_EQ(async_sigs, 1);
  aio__handle_close(h, NULL, NULL);
  aio__loop_free(lp);
}

/* what the backend does not do yet fails with -ENOSYS, worded for Windows */
TEST(iocp_unsupported_enosys) {
  aio_loop *lp = newloop();
  aio_bhandle *h = NULL;
  ASSERT_EQ(aio__signal_start(lp, &h, SIGTERM, on_sig, NULL), -ENOSYS);
  ASSERT_EQ(aio__loop_fd(lp), -ENOSYS);
  ASSERT(strstr(aio__strerror(-ENOSYS), "Windows") != NULL);
  aio__loop_free(lp);
}

/* a Lua loop that computes without waiting is cancelled in place by
** Ctrl-C (the hook set from the console's thread) */
static void *interrupter(void *arg) {
  (void)arg;
  Sleep(50);
  GenerateConsoleCtrlEvent(CTRL_C_EVENT, 0);
  return NULL;
}

TEST(host_sigint_ctrl_c) {
  aio_host *h;
  pthread_t th;
  need_console();
  h = aio_host_new();
  ASSERT(h != NULL);
  ASSERT_OK(aio_host_catch_sigint_opt(h, AIO_SIGINT_STAY));
  ASSERT_OK(pthread_create(&th, NULL, interrupter, NULL));
  ASSERT(aio_host_dostring(h, "local t = aio.now() "
                           "while aio.now() - t < 5 do end", "busy") != 0);
  pthread_join(th, NULL);
  ASSERT(strstr(aio_host_errmsg(h), "CancelledError: interrupted") != NULL);
  ASSERT_EQ(aio_host_interrupted(h), 1);
  ASSERT_OK(aio_host_dostring(h, "aio.sleep(0.02) ok = 1", "after"));
  aio_host_free(h);
}
