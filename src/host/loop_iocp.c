/*
** loop_iocp.c: the loop seam (loop.h) on a Windows I/O completion port.
** The only file that includes the Winsock and IOCP headers.  Built instead
** of loop_ev.c by `make windows` (mingw-w64), exactly one backend per build.
**
** What is here today: the loop, the clock, polling with
** GetQueuedCompletionStatusEx, the thread-safe wake-up
** (PostQueuedCompletionStatus) and Ctrl-C / Ctrl-Break as the signal
** handles SIGINT / SIGBREAK (SetConsoleCtrlHandler).  Every other function
** of loop.h returns -ENOSYS, which aio__strerror() words as "not
** implemented on Windows yet", so that Lua raises a clear error naming the
** platform.
**
** Completion keys: KEY_WAKE (a wake-up post), KEY_SIGNAL (a console event;
** the byte count is the signal number).  Posts carry no handle pointer, so
** a queued completion never outlives the memory it names.
*/
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <winsock2.h>
#include <windows.h>

#include "loop.h"

#ifndef SIGBREAK
#define SIGBREAK 21
#endif

enum { H_SIGNAL = 1 };
enum { KEY_WAKE = 1, KEY_SIGNAL = 2 };
#define NENTRIES 64

struct aio_loop {
  HANDLE port;
  volatile LONG wpending;   /* a wake-up is queued and not taken yet */
  aio_wakeup_cb wakeup_cb;
  void *wakeup_data;
  aio_bhandle *sigs;        /* signal handles, closed by aio__loop_free */
  aio_loop *snext;          /* in the list of loops that watch signals */
};

struct aio_bhandle {
  int kind;
  int unref;
  aio_loop *lp;
  void *data;
  aio_bhandle *next, *prev;   /* in lp->sigs */
  int signum;
  aio_signal_cb cb;
  aio_signal_async_cb async_fn;
  void *async_data;
};

const char *aio__backend_name(void) { return "iocp"; }

const char *aio__strerror(int code) {
  if (code < 0) code = -code;
  if (code == ENOSYS) return "not implemented on Windows yet (IOCP backend)";
  return strerror(code);
}

double aio__clock(void) {
  static LARGE_INTEGER freq;
  LARGE_INTEGER now;
  if (freq.QuadPart == 0) QueryPerformanceFrequency(&freq);
  QueryPerformanceCounter(&now);
  return (double)now.QuadPart / (double)freq.QuadPart;
}

/* ---- Ctrl-C and Ctrl-Break ---- */

/* The console calls the handler on a thread of its own.  The loops that
** watch a console signal are in `watchers`, guarded by `sig_cs`; a loop
** leaves the list before its port is closed. */
static CRITICAL_SECTION sig_cs;
static INIT_ONCE sig_once = INIT_ONCE_STATIC_INIT;
static aio_loop *watchers;
static int handler_set;

static BOOL CALLBACK sig_init(PINIT_ONCE o, PVOID p, PVOID *ctx) {
  (void)o; (void)p; (void)ctx;
  InitializeCriticalSection(&sig_cs);
  return TRUE;
}

static BOOL WINAPI on_console(DWORD type) {
  int signum, taken = 0;
  aio_loop *lp;
  aio_bhandle *h;
  if (type == CTRL_C_EVENT) signum = SIGINT;
  else if (type == CTRL_BREAK_EVENT) signum = SIGBREAK;
  else return FALSE;
  EnterCriticalSection(&sig_cs);
  for (lp = watchers; lp != NULL; lp = lp->snext) {
    int here = 0;
    for (h = lp->sigs; h != NULL; h = h->next) {
      if (h->signum != signum) continue;
      if (h->async_fn) h->async_fn(signum, h->async_data);
      here = 1;
    }
    if (here) {
      PostQueuedCompletionStatus(lp->port, (DWORD)signum, KEY_SIGNAL, NULL);
      taken = 1;
    }
  }
  LeaveCriticalSection(&sig_cs);
  return taken ? TRUE : FALSE;  /* nobody watches: the default (exit) */
}

static void watchers_add(aio_loop *lp) {
  aio_loop *p;
  for (p = watchers; p != NULL; p = p->snext)
    if (p == lp) return;
  lp->snext = watchers;
  watchers = lp;
  if (!handler_set) handler_set = SetConsoleCtrlHandler(on_console, TRUE);
}

static void watchers_remove(aio_loop *lp) {
  aio_loop **p;
  for (p = &watchers; *p != NULL; p = &(*p)->snext)
    if (*p == lp) { *p = lp->snext; break; }
  lp->snext = NULL;
}

/* ---- the loop ---- */

aio_loop *aio__loop_new(int *err) {
  static INIT_ONCE wsa_once = INIT_ONCE_STATIC_INIT;
  aio_loop *lp;
  BOOL pending;
  InitOnceExecuteOnce(&sig_once, sig_init, NULL, NULL);
  if (InitOnceBeginInitialize(&wsa_once, 0, &pending, NULL) && pending) {
    WSADATA wsa;
    WSAStartup(MAKEWORD(2, 2), &wsa);
    InitOnceComplete(&wsa_once, 0, NULL);
  }
  lp = calloc(1, sizeof *lp);
  if (lp == NULL) { *err = -ENOMEM; return NULL; }
  lp->port = CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, 1);
  if (lp->port == NULL) {
    free(lp);
    *err = -ENOMEM;
    return NULL;
  }
  return lp;
}

static void signal_unlink(aio_bhandle *h);

void aio__loop_free(aio_loop *lp) {
  if (lp == NULL) return;
  EnterCriticalSection(&sig_cs);
  watchers_remove(lp);
  while (lp->sigs) {   /* orphaned: a later close only frees */
    aio_bhandle *h = lp->sigs;
    signal_unlink(h);
    h->lp = NULL;
  }
  LeaveCriticalSection(&sig_cs);
  CloseHandle(lp->port);
  free(lp);
}

int aio__loop_set_wakeup(aio_loop *lp, aio_wakeup_cb cb, void *data) {
  lp->wakeup_cb = cb;
  lp->wakeup_data = data;
  return 0;
}

/* one post in flight at most: a post that finds the flag set is covered by
** the one queued, whose callback runs after the flag is cleared */
void aio__loop_wakeup(aio_loop *lp) {
  if (InterlockedExchange(&lp->wpending, 1)) return;
  PostQueuedCompletionStatus(lp->port, 0, KEY_WAKE, NULL);
}

static void on_signal_post(aio_loop *lp, int signum) {
  aio_bhandle *h, *next;
  for (h = lp->sigs; h != NULL; h = next) {
    next = h->next;
    if (h->signum == signum) h->cb(h, signum, h->data);
  }
}

int aio__loop_poll(aio_loop *lp, double timeout) {
  OVERLAPPED_ENTRY ev[NENTRIES];
  ULONG n = 0, i;
  DWORD ms;
  if (timeout < 0) ms = INFINITE;
  else if (timeout == 0) ms = 0;
  else {
    double t = timeout * 1000.0 + 0.999;   /* round up: never early */
    ms = t >= 4294967294.0 ? 4294967294u : (DWORD)t;
  }
  if (!GetQueuedCompletionStatusEx(lp->port, ev, NENTRIES, &n, ms, FALSE)) {
    DWORD e = GetLastError();
    if (e == WAIT_TIMEOUT) return 0;
    return -EIO;
  }
  for (i = 0; i < n; i++) {
    switch (ev[i].lpCompletionKey) {
      case KEY_WAKE:
        InterlockedExchange(&lp->wpending, 0);
        if (lp->wakeup_cb) lp->wakeup_cb(lp->wakeup_data);
        break;
      case KEY_SIGNAL:
        on_signal_post(lp, (int)ev[i].dwNumberOfBytesTransferred);
        break;
    }
  }
  return 0;
}

/* Not on Windows: the application's libev loop, and an fd to poll. */
int aio__loop_adopt(aio_loop *lp, void *ev_loop, aio_wakeup_cb drive,
                    void *data) {
  (void)lp; (void)ev_loop; (void)drive; (void)data;
  return -ENOSYS;
}

void aio__loop_arm(aio_loop *lp, double timeout, int keep) {
  (void)lp; (void)timeout; (void)keep;
}

int aio__loop_fd(aio_loop *lp) { (void)lp; return -ENOSYS; }

/* ---- handles ---- */

void aio__handle_close(aio_bhandle *h, aio_close_cb cb, void *data) {
  if (h->kind == H_SIGNAL) {
    EnterCriticalSection(&sig_cs);
    if (h->lp) {
      aio_loop *lp = h->lp;
      signal_unlink(h);
      if (lp->sigs == NULL) watchers_remove(lp);
    }
    LeaveCriticalSection(&sig_cs);
  }
  if (cb) cb(h, data);
  free(h);
}

void aio__handle_ref(aio_bhandle *h, int ref) { h->unref = !ref; }

/* ---- signals: SIGINT (Ctrl-C) and SIGBREAK (Ctrl-Break) ---- */

static void signal_unlink(aio_bhandle *h) {
  if (h->prev) h->prev->next = h->next;
  else if (h->lp && h->lp->sigs == h) h->lp->sigs = h->next;
  if (h->next) h->next->prev = h->prev;
  h->next = h->prev = NULL;
}

int aio__signal_start(aio_loop *lp, aio_bhandle **out, int signum,
                      aio_signal_cb cb, void *data) {
  aio_bhandle *h;
  if (signum <= 0 || signum >= 64) return -EINVAL;
  if (signum != SIGINT && signum != SIGBREAK) return -ENOSYS;
  h = calloc(1, sizeof *h);
  if (h == NULL) return -ENOMEM;
  h->kind = H_SIGNAL;
  h->lp = lp;
  h->data = data;
  h->signum = signum;
  h->cb = cb;
  EnterCriticalSection(&sig_cs);
  h->next = lp->sigs;
  if (h->next) h->next->prev = h;
  lp->sigs = h;
  watchers_add(lp);
  LeaveCriticalSection(&sig_cs);
  *out = h;
  return 0;
}

/* fn runs on the console's handler thread, before the loop hears of it */
int aio__signal_async(aio_bhandle *h, aio_signal_async_cb fn, void *data) {
  if (h->kind != H_SIGNAL) return -EINVAL;
  EnterCriticalSection(&sig_cs);
  h->async_fn = fn;
  h->async_data = data;
  LeaveCriticalSection(&sig_cs);
  return 0;
}

/* ---- not implemented on Windows yet: -ENOSYS ---- */

int aio__child_start(aio_loop *lp, aio_bhandle **out, int pid,
                     aio_child_cb cb, void *data) {
  (void)lp; (void)out; (void)pid; (void)cb; (void)data;
  return -ENOSYS;
}

int aio__poll_start(aio_loop *lp, aio_bhandle **out, int fd, int events,
                    aio_poll_cb cb, void *data) {
  (void)lp; (void)out; (void)fd; (void)events; (void)cb; (void)data;
  return -ENOSYS;
}

int aio__stream_connect(aio_loop *lp, aio_bhandle **out, const aio_addr *to,
                        const aio_addr *local, aio_stream_cb cb, void *data) {
  (void)lp; (void)out; (void)to; (void)local; (void)cb; (void)data;
  return -ENOSYS;
}

int aio__stream_listen(aio_loop *lp, aio_bhandle **out, const aio_addr *at,
                       int backlog, int flags, aio_stream_cb cb, void *data) {
  (void)lp; (void)out; (void)at; (void)backlog; (void)flags; (void)cb;
  (void)data;
  return -ENOSYS;
}

int aio__stream_open(aio_loop *lp, aio_bhandle **out, int fd,
                     aio_stream_cb cb, void *data) {
  (void)lp; (void)out; (void)cb; (void)data;
  closesocket((SOCKET)fd);   /* the handle owns the fd, also on failure */
  return -ENOSYS;
}

/* no stream handle can exist yet: these are never reached */
int aio__stream_start_read(aio_bhandle *h) { (void)h; return -ENOSYS; }
int aio__stream_stop_read(aio_bhandle *h) { (void)h; return -ENOSYS; }
char *aio__stream_rbuf(aio_bhandle *h, size_t *len) {
  (void)h; *len = 0; return NULL;
}
void aio__stream_consume(aio_bhandle *h, size_t n) { (void)h; (void)n; }
int aio__stream_write(aio_bhandle *h, const char *p, size_t n) {
  (void)h; (void)p; (void)n; return -ENOSYS;
}
size_t aio__stream_queued(aio_bhandle *h) { (void)h; return 0; }
void aio__stream_set_lowat(aio_bhandle *h, size_t lowat) {
  (void)h; (void)lowat;
}
int aio__stream_shutdown(aio_bhandle *h) { (void)h; return -ENOSYS; }
int aio__stream_close_soon(aio_bhandle *h) {
  aio__handle_close(h, NULL, NULL);
  return 1;
}
int aio__stream_sockname(aio_bhandle *h, aio_addr *a) {
  (void)h; (void)a; return -ENOSYS;
}
int aio__stream_peername(aio_bhandle *h, aio_addr *a) {
  (void)h; (void)a; return -ENOSYS;
}
int aio__stream_is_socket(aio_bhandle *h) { (void)h; return 1; }

int aio__dgram_open(aio_loop *lp, aio_bhandle **out, int family,
                    const aio_addr *local, int reuse_port, int broadcast,
                    aio_stream_cb cb, void *data) {
  (void)lp; (void)out; (void)family; (void)local; (void)reuse_port;
  (void)broadcast; (void)cb; (void)data;
  return -ENOSYS;
}
int aio__dgram_connect(aio_bhandle *h, const aio_addr *to) {
  (void)h; (void)to; return -ENOSYS;
}
int aio__dgram_send(aio_bhandle *h, const char *p, size_t n,
                    const aio_addr *to) {
  (void)h; (void)p; (void)n; (void)to; return -ENOSYS;
}
int aio__dgram_start_recv(aio_bhandle *h) { (void)h; return -ENOSYS; }
int aio__dgram_stop_recv(aio_bhandle *h) { (void)h; return -ENOSYS; }
const char *aio__dgram_last(aio_bhandle *h, size_t *len, aio_addr *from) {
  (void)h; (void)from; *len = 0; return NULL;
}
int aio__dgram_sockname(aio_bhandle *h, aio_addr *a) {
  (void)h; (void)a; return -ENOSYS;
}
