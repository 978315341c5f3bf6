/*
** repl_win.c: the REPL of aiolua.exe on Windows (no libedit), built
** instead of repl.c by `make windows`.  Plain line input; each chunk runs
** as the main task of the host's one loop, so waiting calls work at the
** prompt.  As on Linux the loop keeps running while the prompt waits: the
** line is read on a thread of its own (linein_win.c) that wakes the loop
** when it has one, so tasks spawned earlier go on at the prompt.
**
** As lua.c, a chunk that reads stdin (io.read) gets the lines after it:
** what the C runtime's stdin buffer holds is taken first.  The prompt goes
** to stdout on a console, to stderr otherwise (as repl.c).  os.exit ends
** the REPL (its caller cancelled, the host freed by main.c) instead of
** exiting from inside a task.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <windows.h>

#include "linein_win.h"
#include "repl_chunk.h"

int aio__repl(aio_host *h);

typedef struct repl {
  aio_host *h;
  lua_State *L;
  aio_linein *in;     /* the reader thread; NULL until the first read */
  int console;        /* stdin is a console */
  aio_repl_exit exit; /* os.exit (repl_chunk.c) */
  aio_repl_buf buf;   /* the line read */
} repl;

static repl R;

/* ====================================================================== */
/* reading a line while the loop runs                                     */
/* ====================================================================== */

/* bytes a chunk's io.read left in the C runtime's stdin buffer (msvcrt's
** FILE); 1 when they held a whole line */
static int take_buffered(void) {
#ifndef _UCRT
  while (stdin->_cnt > 0) {
    int c = getc(stdin);
    char ch = (char)c;
    if (c == EOF) return 0;
    if (c == '\n') {
      if (R.buf.len > 0 && R.buf.line[R.buf.len - 1] == '\r')
        R.buf.line[--R.buf.len] = '\0';
      return 1;
    }
    if (aio__repl_buf_add(&R.buf, &ch, 1) != 0) return 1;
  }
#endif
  return 0;
}

/* Read one line, stepping the loop meanwhile; R_LINE: the line is in R.buf */
static int read_line(const char *prompt) {
  aio_host *h = R.h;
  int nint = aio_host_interrupted(h);
  aio__repl_buf_clear(&R.buf);
  fputs(prompt, R.console ? stdout : stderr);
  fflush(R.console ? stdout : stderr);
  fflush(stdout);
  if (take_buffered()) return R_LINE;
  if (R.in == NULL) {
    R.in = aio__linein_new(h, GetStdHandle(STD_INPUT_HANDLE));
    if (R.in == NULL) {
      fprintf(stderr, "aiolua: cannot start the stdin reader\n");
      return R_EOF;
    }
  }
  for (;;) {
    char *l = NULL;
    size_t n = 0;
    int st;
    if (R.exit.req) return R_EXIT;
    if (aio_host_interrupted(h) != nint) {  /* Ctrl-C: the read goes on */
      if (R.console) fputs("\n", stdout);
      return R_INTERRUPT;
    }
    aio__linein_request(R.in);
    st = aio__linein_poll(R.in, &l, &n);
    if (st == AIO_LI_LINE) {
      /* out of memory: the part taken from the buffer */
      (void)aio__repl_buf_add(&R.buf, l, n);
      free(l);
      return R_LINE;
    }
    if (st == AIO_LI_EOF) return R.buf.len > 0 ? R_LINE : R_EOF;
    /* AIO_LI_INTR (Ctrl-C ended the console read): its console event
    ** gives the fresh prompt; ask again.  AIO_LI_PENDING: wait. */
    if (st == AIO_LI_PENDING && aio_host_step(h, -1) != 0)
      fprintf(stderr, "aiolua: %s\n", aio_host_errmsg(h));
  }
}

/* Run the REPL on stdin until EOF or os.exit; returns the exit status.
** The reader thread is stopped before returning: main.c frees the host
** next. */
int aio__repl(aio_host *h) {
  static const aio_repl_io io = { read_line, &R.buf, NULL };
  lua_State *L = aio_host_lua(h);
  int status, top = lua_gettop(L);
  DWORD mode;
  memset(&R, 0, sizeof R);
  R.h = h;
  R.L = L;
  R.exit.h = h;
  R.console = GetConsoleMode(GetStdHandle(STD_INPUT_HANDLE), &mode) != 0;
  if (aio__repl_install_exit(L, &R.exit) != 0) {
    aio__repl_report(lua_tostring(L, -1));
    lua_settop(L, top);
  }
  status = aio__repl_loop(L, &io, &R.exit, 0);
  aio__linein_free(R.in);
  R.in = NULL;
  aio__repl_buf_clear(&R.buf);
  if (R.console) fputs("\n", stdout);
  fflush(stdout);
  return status;
}
