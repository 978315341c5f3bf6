/*
** linein_win.c: lines read on a thread, handed to the loop (linein_win.h).
**
** The thread reads only when asked (aio__linein_request), one byte per
** ReadFile, so it never takes more than the line: what follows stays in
** the handle for a chunk that reads stdin itself.  A console read returns
** at the end of the line anyway.  Each result wakes the loop with an
** aio_host_post whose function does nothing; the result itself stays here,
** under the lock, so a post still queued when the host closes carries no
** memory.  Once aio__linein_free has run, the thread posts nothing.
*/
#include <stdlib.h>
#include <string.h>

#include <process.h>

#include "linein_win.h"

/* cancelling a read the thread has flagged but perhaps not yet started */
#define CANCEL_TRIES  50
#define CANCEL_WAIT   10   /* ms */
#define CANCEL_MISSES 5    /* the read is there but not cancellable */

struct aio_linein {
  CRITICAL_SECTION cs;
  HANDLE in;
  HANDLE thread;
  HANDLE want;          /* auto-reset: a line is wanted */
  aio_host *h;          /* NULL once freed: nothing is posted any more */
  int console;          /* in is a console: Ctrl-C cuts a read short */
  int refs;             /* the owner and the thread */
  int asked;            /* a read was asked for and its result not taken */
  int reading;          /* the thread is in (or about to enter) ReadFile */
  int quit;
  int result;           /* AIO_LI_*: the last read's */
  int ended;            /* EOF seen: every later read is AIO_LI_EOF */
  char *buf;
  size_t len, cap;
};

static void nothing(aio_host *h, void *ud) { (void)h; (void)ud; }

static void destroy(aio_linein *r) {
  DeleteCriticalSection(&r->cs);
  if (r->want) CloseHandle(r->want);
  free(r->buf);
  free(r);
}

static int append(aio_linein *r, char c) {
  if (r->len + 2 > r->cap) {
    size_t cap = r->cap ? 2 * r->cap : 256;
    char *p = realloc(r->buf, cap);
    if (p == NULL) return -1;
    r->buf = p;
    r->cap = cap;
  }
  r->buf[r->len++] = c;
  r->buf[r->len] = '\0';
  return 0;
}

/* one line into r->buf (the thread owns buf while it reads) */
static int read_line(aio_linein *r) {
  r->len = 0;
  if (r->buf) r->buf[0] = '\0';  /* a line cut short by Ctrl-C is dropped */
  if (r->ended) return AIO_LI_EOF;
  for (;;) {
    char c;
    DWORD n = 0;
    BOOL ok;
    SetLastError(0);
    ok = ReadFile(r->in, &c, 1, &n, NULL);
    if (ok && n == 1) {
      if (c == '\n') {
        if (r->len > 0 && r->buf[r->len - 1] == '\r') r->buf[--r->len] = '\0';
        break;
      }
      if (append(r, c) != 0) break;  /* out of memory: the line so far */
      continue;
    }
    /* Ctrl-C at a console prompt ends its read with nothing and
    ** ERROR_OPERATION_ABORTED; so does CancelSynchronousIo */
    if (GetLastError() == ERROR_OPERATION_ABORTED && (r->console || r->quit))
      return AIO_LI_INTR;
    r->ended = 1;  /* end of input (a broken pipe included) or an error */
    if (r->len == 0) return AIO_LI_EOF;
    break;         /* the last line, without its newline */
  }
  if (r->buf == NULL && append(r, '\0') == 0) r->len = 0;
  return r->buf ? AIO_LI_LINE : AIO_LI_EOF;
}

static unsigned __stdcall reader_main(void *ud) {
  aio_linein *r = ud;
  int last;
  for (;;) {
    int st;
    WaitForSingleObject(r->want, INFINITE);
    EnterCriticalSection(&r->cs);
    if (r->quit) { LeaveCriticalSection(&r->cs); break; }
    r->reading = 1;
    LeaveCriticalSection(&r->cs);
    st = read_line(r);
    EnterCriticalSection(&r->cs);
    r->reading = 0;
    if (r->quit) { LeaveCriticalSection(&r->cs); break; }
    r->result = st;
    if (r->h) aio_host_post(r->h, nothing, NULL);
    LeaveCriticalSection(&r->cs);
  }
  EnterCriticalSection(&r->cs);
  last = --r->refs == 0;
  LeaveCriticalSection(&r->cs);
  if (last) destroy(r);
  return 0;
}

aio_linein *aio__linein_new(aio_host *h, HANDLE in) {
  aio_linein *r = calloc(1, sizeof *r);
  DWORD mode;
  if (r == NULL) return NULL;
  InitializeCriticalSection(&r->cs);
  r->in = in;
  r->h = h;
  r->console = GetConsoleMode(in, &mode) != 0;
  r->result = AIO_LI_PENDING;
  r->refs = 2;
  r->want = CreateEventA(NULL, FALSE, FALSE, NULL);
  if (r->want != NULL)
    r->thread = (HANDLE)_beginthreadex(NULL, 0, reader_main, r, 0, NULL);
  if (r->thread == NULL) {
    destroy(r);
    return NULL;
  }
  return r;
}

void aio__linein_request(aio_linein *r) {
  EnterCriticalSection(&r->cs);
  if (!r->asked) {
    r->asked = 1;
    r->result = AIO_LI_PENDING;
    SetEvent(r->want);
  }
  LeaveCriticalSection(&r->cs);
}

int aio__linein_poll(aio_linein *r, char **line, size_t *len) {
  int st;
  EnterCriticalSection(&r->cs);
  st = r->asked ? r->result : AIO_LI_PENDING;
  if (st != AIO_LI_PENDING) {
    r->asked = 0;
    r->result = AIO_LI_PENDING;
    if (st == AIO_LI_LINE) {
      *line = r->buf;  /* the thread makes a new one for the next line */
      *len = r->len;
      r->buf = NULL;
      r->len = r->cap = 0;
    }
  }
  LeaveCriticalSection(&r->cs);
  return st;
}

int aio__linein_free(aio_linein *r) {
  int i, joined = 0, misses = 0, last;
  if (r == NULL) return 1;
  EnterCriticalSection(&r->cs);
  r->quit = 1;
  r->h = NULL;
  SetEvent(r->want);
  LeaveCriticalSection(&r->cs);
  for (i = 0; i < CANCEL_TRIES && !joined; i++) {
    int reading;
    EnterCriticalSection(&r->cs);
    reading = r->reading;
    LeaveCriticalSection(&r->cs);
    if (reading && !CancelSynchronousIo(r->thread) &&
        GetLastError() == ERROR_NOT_FOUND && ++misses > CANCEL_MISSES)
      break;  /* a read that cannot be cancelled (wine: a Unix pipe) */
    joined = WaitForSingleObject(r->thread, CANCEL_WAIT) == WAIT_OBJECT_0;
  }
  CloseHandle(r->thread);
  EnterCriticalSection(&r->cs);
  last = --r->refs == 0;
  LeaveCriticalSection(&r->cs);
  if (last) destroy(r);
  return joined;
}
