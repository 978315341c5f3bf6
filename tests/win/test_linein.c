/* linein_win.c: lines read on a thread while the loop runs (the REPL's
** input on Windows), over an anonymous pipe */
#include <stdlib.h>

#include <process.h>

#include <windows.h>

#include "aiolua.h"
#include "linein_win.h"
#include "../c/t.h"

typedef struct feed {
  HANDLE wr, go;
  const char *text[2];  /* written after go is set, then a second time */
  int close;            /* close the pipe at the end */
} feed;

static unsigned __stdcall feeder(void *ud) {
  feed *f = ud;
  int i;
  for (i = 0; i < 2; i++) {
    DWORD n;
    WaitForSingleObject(f->go, INFINITE);
    if (f->text[i])
      WriteFile(f->wr, f->text[i], (DWORD)strlen(f->text[i]), &n, NULL);
  }
  if (f->close) { CloseHandle(f->wr); f->wr = NULL; }
  return 0;
}

static lua_Integer global_int(aio_host *h, const char *name) {
  lua_State *L = aio_host_lua(h);
  lua_Integer v;
  lua_getglobal(L, name);
  v = lua_tointeger(L, -1);
  lua_pop(L, 1);
  return v;
}

/* the next result, stepping the loop meanwhile */
static int next_line(aio_host *h, aio_linein *r, char **line) {
  size_t n;
  int st;
  for (;;) {
    aio__linein_request(r);
    st = aio__linein_poll(r, line, &n);
    if (st != AIO_LI_PENDING) return st;
    if (aio_host_step(h, -1) != 0) T_FAIL("step: %s", aio_host_errmsg(h));
  }
}

/* a task counts while the line is awaited: the loop is not blocked by the
** read, and the line arrives only once the task has counted */
TEST(linein_loop_runs_while_waiting) {
  aio_host *h = aio_host_new();
  HANDLE rd, wr, th;
  feed f = { 0 };
  aio_linein *r;
  char *line = NULL;
  size_t n;
  ASSERT(h != NULL);
  ASSERT(CreatePipe(&rd, &wr, NULL, 0));
  f.wr = wr;
  f.go = CreateEventA(NULL, FALSE, FALSE, NULL);
  f.text[0] = "first line\r\nsecond";
  f.text[1] = " half\nlast, no newline";
  f.close = 1;
  th = (HANDLE)_beginthreadex(NULL, 0, feeder, &f, 0, NULL);
  ASSERT(th != NULL);
  r = aio__linein_new(h, rd);
  ASSERT(r != NULL);
  ASSERT_OK(aio_host_dostring(h, "n = 0 aio.spawn(function() "
                              "while true do aio.sleep(0.001) n = n + 1 end "
                              "end)", "ticker"));
  aio__linein_request(r);
  while (global_int(h, "n") < 5) {
    ASSERT_EQ(aio__linein_poll(r, &line, &n), AIO_LI_PENDING);
    ASSERT_OK(aio_host_step(h, -1));
  }
  SetEvent(f.go);  /* only now is there a line */
  ASSERT_EQ(next_line(h, r, &line), AIO_LI_LINE);
  ASSERT_STR_EQ(line, "first line");  /* the \r\n is gone */
  free(line);
  SetEvent(f.go);
  ASSERT_EQ(next_line(h, r, &line), AIO_LI_LINE);
  ASSERT_STR_EQ(line, "second half");
  free(line);
  ASSERT_EQ(next_line(h, r, &line), AIO_LI_LINE);
  ASSERT_STR_EQ(line, "last, no newline");
  free(line);
  ASSERT_EQ(next_line(h, r, &line), AIO_LI_EOF);
  ASSERT_EQ(next_line(h, r, &line), AIO_LI_EOF);  /* for good */
  ASSERT_EQ(aio__linein_free(r), 1);
  WaitForSingleObject(th, INFINITE);
  CloseHandle(th);
  CloseHandle(f.go);
  CloseHandle(rd);
  aio_host_free(h);
}

/* an empty line is a line; a poll without a request finds nothing */
TEST(linein_empty_line) {
  aio_host *h = aio_host_new();
  HANDLE rd, wr;
  aio_linein *r;
  char *line = NULL;
  size_t n = 99;
  DWORD w;
  ASSERT(h != NULL);
  ASSERT(CreatePipe(&rd, &wr, NULL, 0));
  ASSERT(WriteFile(wr, "\n", 1, &w, NULL));
  r = aio__linein_new(h, rd);
  ASSERT(r != NULL);
  ASSERT_EQ(aio__linein_poll(r, &line, &n), AIO_LI_PENDING);
  ASSERT_EQ(next_line(h, r, &line), AIO_LI_LINE);
  ASSERT_STR_EQ(line, "");
  free(line);
  ASSERT_EQ(aio__linein_free(r), 1);
  CloseHandle(wr);
  CloseHandle(rd);
  aio_host_free(h);
}

/* stopping the reader while its read blocks (the pipe open, nothing
** written): the read is cancelled and the thread joined, and the host can
** be freed at once */
TEST(linein_free_cancels_a_blocked_read) {
  aio_host *h = aio_host_new();
  HANDLE rd, wr;
  aio_linein *r;
  char *line = NULL;
  size_t n;
  int i;
  ASSERT(h != NULL);
  ASSERT(CreatePipe(&rd, &wr, NULL, 0));
  for (i = 0; i < 20; i++) {
    r = aio__linein_new(h, rd);
    ASSERT(r != NULL);
    aio__linein_request(r);
    ASSERT_EQ(aio__linein_poll(r, &line, &n), AIO_LI_PENDING);
    if (i % 2) ASSERT_OK(aio_host_step(h, 0.001));
    ASSERT_EQ(aio__linein_free(r), 1);
  }
  /* nothing was taken from the pipe */
  {
    DWORD w, got = 0;
    char buf[8];
    ASSERT(WriteFile(wr, "x\n", 2, &w, NULL));
    ASSERT(ReadFile(rd, buf, sizeof buf, &got, NULL));
    ASSERT_EQ(got, 2);
  }
  CloseHandle(wr);
  CloseHandle(rd);
  aio_host_free(h);
}
