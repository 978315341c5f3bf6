/*
** loop_iocp.c: the loop seam (loop.h) on a Windows I/O completion port.
** The only file that includes the Winsock and IOCP headers.  Built instead
** of loop_ev.c by `make windows` (mingw-w64), exactly one backend per build.
**
** What is here: the loop, the clock, polling with
** GetQueuedCompletionStatusEx, the thread-safe wake-up
** (PostQueuedCompletionStatus), Ctrl-C / Ctrl-Break as the signal handles
** SIGINT / SIGBREAK (SetConsoleCtrlHandler), TCP stream transports
** (AcceptEx, ConnectEx, WSARecv, WSASend), pipe ends as streams
** (overlapped ReadFile/WriteFile), UDP (WSARecvFrom) and child processes
** (a registered wait).  Unix sockets, the readiness poll handle and
** adopting a libev loop return -ENOSYS, which aio__strerror() words as "not
** implemented on Windows yet", so that Lua raises a clear error naming the
** platform.
**
** Completion keys: KEY_WAKE (a wake-up post), KEY_SIGNAL (a console event;
** the byte count is the signal number), KEY_IO (a socket's or pipe's
** OVERLAPPED, inside its handle), KEY_CHILD (a process ended; the byte
** count is its pid).  A handle with operations in flight is freed only
** when the last one has come back.
*/
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <winsock2.h>
#include <ws2tcpip.h>
#include <mswsock.h>
#include <windows.h>

#include "loop.h"

#ifndef SIGBREAK
#define SIGBREAK 21
#endif

#define container_of(p, type, member) \
  ((type *)((char *)(p) - offsetof(type, member)))

enum { H_SIGNAL = 1, H_STREAM, H_LISTEN, H_DGRAM, H_CHILD };
enum { KEY_WAKE = 1, KEY_SIGNAL, KEY_IO, KEY_CHILD };
enum { OP_READ = 1, OP_WRITE, OP_CONNECT, OP_ACCEPT, OP_RECVFROM };
#define ADDRLEN (sizeof(struct sockaddr_storage) + 16)

/* one overlapped operation of a transport */
typedef struct op {
  OVERLAPPED ov;
  int type;
  int busy;             /* issued and not come back */
} op;

/* the state of a transport (stream, listener or datagram socket) */
typedef struct tport {
  SOCKET s;
  aio_stream_cb cb;
  op rop, wop;          /* read/accept/recvfrom; write/connect */
  aio_bhandle *next, *prev;     /* in the loop's list of transports */
  int werr;             /* first write error, sticky */
  unsigned reading : 1, eof : 1, connecting : 1, shut_pending : 1,
           shut_done : 1, close_pending : 1, closing : 1, nodelay : 1,
           detached : 1;        /* aio__stream_detach: the loop's own */
  aio_close_cb close_cb;        /* aio__handle_close: once all ops are back */
  void *close_data;
  char *rbuf;           /* read buffer: [rstart, rend) is unread */
  size_t rstart, rend, rcap;
  char *wbuf;           /* write queue: [wstart, wend); the first wfly */
  size_t wstart, wend, wcap, wfly;   /* bytes are in the send in flight */
  char *wold;           /* the in-flight send's buffer, when wbuf moved */
  size_t lowat;
  SOCKET as;            /* the socket AcceptEx accepts into */
  char abuf[2 * ADDRLEN];
  struct sockaddr_storage from;      /* datagrams: the last one's sender */
  int fromlen;
  int is_pipe;          /* a pipe end (a HANDLE in s), not a socket */
  size_t roff;          /* pipes: where the read in flight writes */
  int reof;             /* pipes: the read posted is the end (no I/O) */
  int dready;           /* a datagram came while stopped */
  int aready;           /* a connection was accepted while stopped */
  DWORD dbytes;
} tport;
#define NENTRIES 64

struct aio_loop {
  HANDLE port;
  volatile LONG wpending;   /* a wake-up is queued and not taken yet */
  aio_wakeup_cb wakeup_cb;
  void *wakeup_data;
  aio_bhandle *sigs;        /* signal handles, closed by aio__loop_free */
  aio_bhandle *transports;  /* transports, also closed ones with ops out */
  aio_bhandle *children;    /* child handles */
  aio_loop *snext;          /* in the list of loops that watch signals */
};

struct aio_bhandle {
  int kind;
  int unref;
  aio_loop *lp;
  void *data;
  aio_bhandle *next, *prev;   /* signals: in lp->sigs */
  int signum;
  aio_signal_cb cb;
  aio_signal_async_cb async_fn;
  void *async_data;
  tport tr;                   /* transports */
  /* children: the process, its registered wait (posts KEY_CHILD, pid) */
  HANDLE proc, wait;
  int pid;
  aio_child_cb ccb;
};

const char *aio__backend_name(void) { return "iocp"; }

void aio__loop_flush(aio_loop *lp) { (void)lp; }

const char *aio__loop_backend(aio_loop *lp) {
  (void)lp;
  return aio__backend_name();
}

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

static void transports_orphan(aio_loop *lp);
static void children_orphan(aio_loop *lp);
static void on_io(OVERLAPPED *ov, DWORD bytes);
static void on_child_post(aio_loop *lp, int pid);

void aio__loop_free(aio_loop *lp) {
  if (lp == NULL) return;
  transports_orphan(lp);
  children_orphan(lp);
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
      case KEY_IO:
        on_io(ev[i].lpOverlapped, ev[i].dwNumberOfBytesTransferred);
        break;
      case KEY_CHILD:
        on_child_post(lp, (int)ev[i].dwNumberOfBytesTransferred);
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

static int transport_close(aio_bhandle *h, aio_close_cb cb, void *data);
static void child_stop(aio_bhandle *h);

void aio__handle_close(aio_bhandle *h, aio_close_cb cb, void *data) {
  if (h->kind == H_CHILD) child_stop(h);
  else if (h->kind != H_SIGNAL && transport_close(h, cb, data)) return;
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


/* ---- child processes ---- */

/* A registered wait (a thread of the system's pool) posts KEY_CHILD with
** the pid when the process ends; the loop finds the handle by pid, so a
** post never names freed memory.  UnregisterWaitEx(INVALID_HANDLE_VALUE)
** waits for a callback in progress, so the port outlives every post. */
static VOID CALLBACK on_child_exit(PVOID data, BOOLEAN timeout) {
  aio_bhandle *h = data;
  (void)timeout;
  PostQueuedCompletionStatus(h->lp->port, (DWORD)h->pid, KEY_CHILD, NULL);
}

static void child_unlink(aio_bhandle *h) {
  aio_bhandle **p;
  if (h->lp == NULL) return;
  for (p = &h->lp->children; *p != NULL; p = &(*p)->next)
    if (*p == h) { *p = h->next; break; }
  h->next = NULL;
}

static void child_stop(aio_bhandle *h) {
  if (h->wait) UnregisterWaitEx(h->wait, INVALID_HANDLE_VALUE);
  h->wait = NULL;
  if (h->proc) CloseHandle(h->proc);
  h->proc = NULL;
  child_unlink(h);
}

static void on_child_post(aio_loop *lp, int pid) {
  aio_bhandle *h;
  DWORD code = 0;
  for (h = lp->children; h != NULL; h = h->next)
    if (h->pid == pid && h->proc) break;
  if (h == NULL) return;  /* closed meanwhile */
  if (!GetExitCodeProcess(h->proc, &code)) code = 255;
  child_stop(h);          /* one exit per child */
  h->ccb(h, pid, (int)code, h->data);
}

/* cb(pid, status) once process `pid` has ended; status is its exit code */
int aio__child_start(aio_loop *lp, aio_bhandle **out, int pid,
                     aio_child_cb cb, void *data) {
  aio_bhandle *h = calloc(1, sizeof *h);
  if (h == NULL) return -ENOMEM;
  h->kind = H_CHILD;
  h->lp = lp;
  h->data = data;
  h->pid = pid;
  h->ccb = cb;
  h->proc = OpenProcess(SYNCHRONIZE | PROCESS_QUERY_LIMITED_INFORMATION,
                        FALSE, (DWORD)pid);
  if (h->proc == NULL) {
    free(h);
    return GetLastError() == ERROR_INVALID_PARAMETER ? -ESRCH : -EACCES;
  }
  h->next = lp->children;
  lp->children = h;
  if (!RegisterWaitForSingleObject(&h->wait, h->proc, on_child_exit, h,
                                   INFINITE, WT_EXECUTEONLYONCE)) {
    h->wait = NULL;
    child_stop(h);
    free(h);
    return -ENOMEM;
  }
  *out = h;
  return 0;
}

/* the loop goes away: its children's owners hear status -1 (nothing to
** reap on Windows) */
static void children_orphan(aio_loop *lp) {
  while (lp->children) {
    aio_bhandle *h = lp->children;
    int pid = h->pid;
    child_stop(h);
    h->lp = NULL;
    h->ccb(h, pid, -1, h->data);
  }
}

/* ---- not implemented on Windows yet: -ENOSYS ---- */


int aio__poll_start(aio_loop *lp, aio_bhandle **out, int fd, int events,
                    aio_poll_cb cb, void *data) {
  (void)lp; (void)out; (void)fd; (void)events; (void)cb; (void)data;
  return -ENOSYS;
}

/* ====================================================================== */
/* transports: streams, listeners, datagrams                              */
/* ====================================================================== */

/* Reads use a zero-byte WSARecv as the readiness signal (as libuv does):
** when it completes, a non-blocking recv() fills the read buffer, so no
** buffer is pinned while nothing arrives.  Writes are tried at once with a
** non-blocking send(); the rest is queued and sent by one overlapped
** WSASend at a time, whose buffer stays until it completes.  Listeners use
** AcceptEx, connects ConnectEx, datagrams WSARecvFrom.  A closed handle is
** freed only when each of its operations has come back (cancelled). */

#define RBUF_MIN   (64 * 1024)
#define DGRAM_MAX  65536
#define ACCEPT_MAX 64

static LPFN_ACCEPTEX p_acceptex;
static LPFN_CONNECTEX p_connectex;

/* a WSA error (or the Win32 error of a completion) as -errno */
static int wsaerr(int e) {
  switch (e) {
    case 0: return 0;
    case WSAEWOULDBLOCK: return -EAGAIN;
    case WSAECONNREFUSED: case ERROR_CONNECTION_REFUSED: return -ECONNREFUSED;
    case WSAECONNRESET: case ERROR_NETNAME_DELETED: return -ECONNRESET;
    case WSAECONNABORTED: case ERROR_CONNECTION_ABORTED: return -ECONNABORTED;
    case WSAEADDRINUSE: return -EADDRINUSE;
    case WSAEADDRNOTAVAIL: return -EADDRNOTAVAIL;
    case WSAENETUNREACH: case ERROR_NETWORK_UNREACHABLE: return -ENETUNREACH;
    case WSAEHOSTUNREACH: case ERROR_HOST_UNREACHABLE: return -EHOSTUNREACH;
    case WSAETIMEDOUT: case ERROR_SEM_TIMEOUT: return -ETIMEDOUT;
    case WSAENOTCONN: return -ENOTCONN;
    case WSAESHUTDOWN: return -EPIPE;
    case WSAEAFNOSUPPORT: case WSAEPFNOSUPPORT: return -EAFNOSUPPORT;
    case WSAEACCES: return -EACCES;
    case WSAEMSGSIZE: return -EMSGSIZE;
    case WSAEMFILE: return -EMFILE;
    case WSAENOBUFS: return -ENOBUFS;
    case WSAEINVAL: return -EINVAL;
    case WSAENOTSOCK: case WSAEBADF: return -EBADF;
    case WSA_OPERATION_ABORTED: return -ECANCELED;
  }
  return -EIO;
}

static int lasterr(void) { return wsaerr(WSAGetLastError()); }

static int tofamily(int af) {
  switch (af) {
    case AF_INET: return AIO_AF_INET;
    case AF_INET6: return AIO_AF_INET6;
  }
  return AIO_AF_UNSPEC;
}

static int afof(int family) {
  switch (family) {
    case AIO_AF_INET: return AF_INET;
    case AIO_AF_INET6: return AF_INET6;
  }
  return AF_UNSPEC;
}

/* aio_addr -> sockaddr; 0 or a negative code (Unix sockets: -ENOSYS) */
static int tosockaddr(const aio_addr *a, struct sockaddr_storage *ss,
                      int *len) {
  memset(ss, 0, sizeof *ss);
  if (a->family == AIO_AF_INET) {
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    sin->sin_family = AF_INET;
    sin->sin_port = htons((unsigned short)a->port);
    if (a->host[0] == '\0') sin->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (inet_pton(AF_INET, a->host, &sin->sin_addr) != 1) return -EINVAL;
    *len = sizeof *sin;
  } else if (a->family == AIO_AF_INET6) {
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    char host[sizeof a->host];
    char *pct;
    strcpy(host, a->host);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons((unsigned short)a->port);
    if ((pct = strchr(host, '%')) != NULL) {
      *pct = '\0';
      sin6->sin6_scope_id = (ULONG)atoi(pct + 1);
    }
    if (host[0] == '\0') sin6->sin6_addr = in6addr_any;
    else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1) return -EINVAL;
    *len = sizeof *sin6;
  } else if (a->family == AIO_AF_UNIX) {
    return -ENOSYS;
  } else {
    return -EAFNOSUPPORT;
  }
  return 0;
}

static void fromsockaddr(const struct sockaddr_storage *ss, aio_addr *a) {
  memset(a, 0, sizeof *a);
  a->family = tofamily(ss->ss_family);
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
    inet_ntop(AF_INET, (void *)&sin->sin_addr, a->host, sizeof a->host);
    a->port = ntohs(sin->sin_port);
  } else if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
    inet_ntop(AF_INET6, (void *)&sin6->sin6_addr, a->host, sizeof a->host);
    a->port = ntohs(sin6->sin6_port);
  }
}

/* a socket for the loop: non-blocking, not inherited, on the port; the
** socket is closed on failure */
static int adopt(aio_loop *lp, SOCKET s) {
  u_long one = 1;
  if (ioctlsocket(s, FIONBIO, &one) != 0 ||
      CreateIoCompletionPort((HANDLE)s, lp->port, KEY_IO, 0) == NULL) {
    int rc = lasterr();
    closesocket(s);
    return rc ? rc : -EIO;
  }
  SetHandleInformation((HANDLE)s, HANDLE_FLAG_INHERIT, 0);
  return 0;
}

static int newsocket(aio_loop *lp, int af, int type, SOCKET *out) {
  SOCKET s = WSASocketW(af, type, 0, NULL, 0,
                        WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
  int rc;
  if (s == INVALID_SOCKET) {
    /* Windows 7 before SP1 has no WSA_FLAG_NO_HANDLE_INHERIT */
    s = WSASocketW(af, type, 0, NULL, 0, WSA_FLAG_OVERLAPPED);
    if (s == INVALID_SOCKET) return lasterr();
  }
  if ((rc = adopt(lp, s)) < 0) return rc;
  *out = s;
  return 0;
}

static void setnodelay(SOCKET s) {
  BOOL one = TRUE;
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, (const char *)&one, sizeof one);
}

/* AcceptEx and ConnectEx, once per process */
static int extensions(SOCKET s) {
  GUID ga = WSAID_ACCEPTEX, gc = WSAID_CONNECTEX;
  DWORD n;
  if (p_acceptex && p_connectex) return 0;
  if (WSAIoctl(s, SIO_GET_EXTENSION_FUNCTION_POINTER, &ga, sizeof ga,
               &p_acceptex, sizeof p_acceptex, &n, NULL, NULL) != 0 ||
      WSAIoctl(s, SIO_GET_EXTENSION_FUNCTION_POINTER, &gc, sizeof gc,
               &p_connectex, sizeof p_connectex, &n, NULL, NULL) != 0)
    return lasterr();
  return 0;
}

/* transport handles allocated and not freed yet, in all loops: what the
** Windows test build counts for its leak checks (tests/win/preload.c) */
static volatile LONG nlive;
long aio__iocp_live(void) { return InterlockedCompareExchange(&nlive, 0, 0); }

static aio_bhandle *newtport(aio_loop *lp, int kind, SOCKET s,
                             aio_stream_cb cb, void *data) {
  aio_bhandle *h = calloc(1, sizeof *h);
  tport *t;
  if (h == NULL) return NULL;
  InterlockedIncrement(&nlive);
  h->kind = kind;
  h->lp = lp;
  h->data = data;
  t = &h->tr;
  t->s = s;
  t->as = INVALID_SOCKET;
  t->cb = cb;
  t->lowat = 16 * 1024;
  t->rop.type = kind == H_LISTEN ? OP_ACCEPT
              : kind == H_DGRAM ? OP_RECVFROM : OP_READ;
  t->wop.type = OP_WRITE;
  t->next = lp->transports;
  if (t->next) t->next->tr.prev = h;
  lp->transports = h;
  return h;
}

static void tport_unlink(aio_bhandle *h) {
  tport *t = &h->tr;
  if (h->lp == NULL) return;
  if (t->prev) t->prev->tr.next = t->next;
  else h->lp->transports = t->next;
  if (t->next) t->next->tr.prev = t->prev;
  t->next = t->prev = NULL;
}

/* close the sockets: what is in flight comes back cancelled */
static void tport_shut(aio_bhandle *h) {
  tport *t = &h->tr;
  if (t->s != INVALID_SOCKET) {
    CancelIoEx((HANDLE)t->s, NULL);
    if (t->is_pipe) CloseHandle((HANDLE)t->s);
    else closesocket(t->s);
  }
  if (t->as != INVALID_SOCKET) closesocket(t->as);
  t->s = t->as = INVALID_SOCKET;
  t->reading = 0;
}

static void tport_free(aio_bhandle *h) {
  tport *t = &h->tr;
  tport_unlink(h);
  if (t->close_cb) t->close_cb(h, t->close_data);
  free(t->rbuf);
  free(t->wbuf);
  free(t->wold);
  free(h);
  InterlockedDecrement(&nlive);
}

/* 1 when the handle is gone or will go once its operations are back */
static int transport_close(aio_bhandle *h, aio_close_cb cb, void *data) {
  tport *t = &h->tr;
  tport_shut(h);
  t->closing = 1;
  t->close_cb = cb;
  t->close_data = data;
  if (!t->rop.busy && !t->wop.busy) tport_free(h);
  return 1;
}

/* The loop goes away: sockets are closed and the cancelled operations
** waited for (briefly), since their OVERLAPPEDs live in the handles; the
** owners still close the handles (which then only frees). */
static void transports_orphan(aio_loop *lp) {
  aio_bhandle *h, *next;
  int i;
  for (h = lp->transports; h != NULL; h = h->tr.next) tport_shut(h);
  for (i = 0; i < 200; i++) {
    OVERLAPPED_ENTRY ev[64];
    ULONG n = 0, k;
    int busy = 0;
    for (h = lp->transports; h != NULL; h = h->tr.next)
      busy |= h->tr.rop.busy || h->tr.wop.busy;
    if (!busy) break;
    if (!GetQueuedCompletionStatusEx(lp->port, ev, 64, &n, 10, FALSE))
      continue;
    for (k = 0; k < n; k++)
      if (ev[k].lpCompletionKey == KEY_IO)
        on_io(ev[k].lpOverlapped, ev[k].dwNumberOfBytesTransferred);
  }
  for (h = lp->transports; h != NULL; h = next) {
    next = h->tr.next;
    /* a detached one has no owner left to close it: freed here (unless
    ** an operation never came back: its OVERLAPPED keeps the memory) */
    if (h->tr.detached && !h->tr.rop.busy && !h->tr.wop.busy) {
      tport_free(h);
      continue;
    }
    h->tr.next = h->tr.prev = NULL;
    h->lp = NULL;
  }
  lp->transports = NULL;
}

/* ---- issuing operations ---- */

static int rbuf_room(tport *t, size_t need);

/* a pipe: an overlapped ReadFile into the buffer's free end; the buffer
** is not moved while it is out (consume may rewind rstart/rend: the data
** is moved to rend when it comes) */
static int post_pipe_read(aio_bhandle *h) {
  tport *t = &h->tr;
  if (t->rop.busy) return 0;
  if (t->rend == t->rstart) t->rstart = t->rend = 0;
  if (rbuf_room(t, t->rcap ? 4096 : RBUF_MIN) < 0) return -ENOMEM;
  t->roff = t->rend;
  memset(&t->rop.ov, 0, sizeof t->rop.ov);
  if (!ReadFile((HANDLE)t->s, t->rbuf + t->roff, (DWORD)(t->rcap - t->roff),
                NULL, &t->rop.ov) && GetLastError() != ERROR_IO_PENDING) {
    DWORD e = GetLastError();
    if (e != ERROR_BROKEN_PIPE && e != ERROR_HANDLE_EOF) return -EIO;
    /* the writer is gone and all is read: no completion comes for
    ** this, so the end of the stream is posted, to arrive as one */
    t->reof = 1;
    PostQueuedCompletionStatus(h->lp->port, 0, KEY_IO, &t->rop.ov);
  }
  t->rop.busy = 1;
  return 0;
}

static int post_read(aio_bhandle *h) {
  tport *t = &h->tr;
  WSABUF b = { 0, NULL };
  DWORD n = 0, flags = 0;
  if (t->is_pipe) return post_pipe_read(h);
  if (t->rop.busy) return 0;
  memset(&t->rop.ov, 0, sizeof t->rop.ov);
  if (WSARecv(t->s, &b, 1, &n, &flags, &t->rop.ov, NULL) != 0 &&
      WSAGetLastError() != WSA_IO_PENDING)
    return lasterr();
  t->rop.busy = 1;   /* a completion comes, also when done at once */
  return 0;
}

static int post_accept(aio_bhandle *h) {
  tport *t = &h->tr;
  struct sockaddr_storage ss;
  int len = sizeof ss, rc;
  DWORD n = 0;
  if (t->rop.busy) return 0;
  if (getsockname(t->s, (struct sockaddr *)&ss, &len) != 0) return lasterr();
  if (t->as == INVALID_SOCKET) {
    SOCKET as = WSASocketW(ss.ss_family, SOCK_STREAM, 0, NULL, 0,
                           WSA_FLAG_OVERLAPPED);
    if (as == INVALID_SOCKET) return lasterr();
    t->as = as;
  }
  memset(&t->rop.ov, 0, sizeof t->rop.ov);
  if (!p_acceptex(t->s, t->as, t->abuf, 0, ADDRLEN, ADDRLEN, &n,
                  &t->rop.ov) && WSAGetLastError() != ERROR_IO_PENDING) {
    rc = lasterr();
    return rc;
  }
  t->rop.busy = 1;
  return 0;
}

static int post_recvfrom(aio_bhandle *h) {
  tport *t = &h->tr;
  WSABUF b;
  DWORD n = 0, flags = 0;
  if (t->rop.busy) return 0;
  b.buf = t->rbuf;
  b.len = (ULONG)t->rcap;
  t->fromlen = sizeof t->from;
  memset(&t->rop.ov, 0, sizeof t->rop.ov);
  if (WSARecvFrom(t->s, &b, 1, &n, &flags, (struct sockaddr *)&t->from,
                  &t->fromlen, &t->rop.ov, NULL) != 0 &&
      WSAGetLastError() != WSA_IO_PENDING)
    return lasterr();
  t->rop.busy = 1;
  return 0;
}

/* send what is queued and not in flight yet */
static int post_write(aio_bhandle *h) {
  tport *t = &h->tr;
  WSABUF b;
  DWORD n = 0;
  if (t->wop.busy || t->wend == t->wstart) return 0;
  t->wfly = t->wend - t->wstart;
  b.buf = t->wbuf + t->wstart;
  b.len = (ULONG)t->wfly;
  t->wop.type = OP_WRITE;
  memset(&t->wop.ov, 0, sizeof t->wop.ov);
  if (t->is_pipe) {
    if (!WriteFile((HANDLE)t->s, b.buf, b.len, NULL, &t->wop.ov) &&
        GetLastError() != ERROR_IO_PENDING) {
      t->wfly = 0;
      return GetLastError() == ERROR_NO_DATA ||
             GetLastError() == ERROR_BROKEN_PIPE ? -EPIPE : -EIO;
    }
    t->wop.busy = 1;
    return 0;
  }
  if (WSASend(t->s, &b, 1, &n, 0, &t->wop.ov, NULL) != 0 &&
      WSAGetLastError() != WSA_IO_PENDING) {
    t->wfly = 0;
    return lasterr();
  }
  t->wop.busy = 1;
  return 0;
}

/* ---- completions ---- */

/* room for at least `need` more bytes at the end of the read buffer */
static int rbuf_room(tport *t, size_t need) {
  size_t used = t->rend - t->rstart;
  if (t->rcap - t->rend >= need) return 0;
  if (t->rstart > 0) {
    memmove(t->rbuf, t->rbuf + t->rstart, used);
    t->rstart = 0;
    t->rend = used;
  }
  if (t->rcap - used < need) {
    size_t cap = t->rcap ? t->rcap : RBUF_MIN;
    char *p;
    while (cap - used < need) cap *= 2;
    if ((p = realloc(t->rbuf, cap)) == NULL) return -ENOMEM;
    t->rbuf = p;
    t->rcap = cap;
  }
  return 0;
}

static void on_readable(aio_bhandle *h, int err) {
  tport *t = &h->tr;
  int n;
  if (!t->reading) return;  /* stopped meanwhile: the data waits */
  if (err == 0) {
    if (t->rend == t->rstart) t->rstart = t->rend = 0;
    if (rbuf_room(t, t->rcap ? 4096 : RBUF_MIN) < 0) {
      aio__stream_stop_read(h);
      t->cb(h, AIO_SEV_READ, -ENOMEM, h->data);
      return;
    }
    n = recv(t->s, t->rbuf + t->rend, (int)(t->rcap - t->rend), 0);
    if (n > 0) {
      t->rend += (size_t)n;
      if (post_read(h) < 0) {}  /* a failed repost shows as the next read */
      t->cb(h, AIO_SEV_READ, (long)n, h->data);
      return;
    }
    if (n == 0) err = 0;
    else if ((err = lasterr()) == -EAGAIN) {  /* nothing after all */
      if ((err = post_read(h)) == 0) return;
    }
    if (n == 0) {
      t->eof = 1;
      aio__stream_stop_read(h);
      t->cb(h, AIO_SEV_READ, 0, h->data);
      return;
    }
  }
  t->eof = 1;
  aio__stream_stop_read(h);
  t->cb(h, AIO_SEV_READ, err, h->data);
}

static void on_pipe_read(aio_bhandle *h, int err, DWORD n) {
  tport *t = &h->tr;
  if (err == -EPIPE || (err == 0 && n == 0)) {  /* the writer closed */
    t->eof = 1;
    t->reading = 0;
    t->cb(h, AIO_SEV_READ, 0, h->data);
    return;
  }
  if (err < 0) {
    t->eof = 1;
    t->reading = 0;
    t->cb(h, AIO_SEV_READ, err, h->data);
    return;
  }
  if (t->roff != t->rend) memmove(t->rbuf + t->rend, t->rbuf + t->roff, n);
  t->rend += n;
  if (t->reading) post_pipe_read(h);
  t->cb(h, AIO_SEV_READ, (long)n, h->data);
}

/* hand over accepted socket s, whose peer is at ss (len bytes; NULL: ask
** the socket) */
static void hand_over(aio_bhandle *h, SOCKET s,
                      const struct sockaddr_storage *ss, int len) {
  struct sockaddr_storage b;
  if (ss == NULL) {
    len = sizeof b;
    memset(&b, 0, sizeof b);
    if (getpeername(s, (struct sockaddr *)&b, &len) == 0) ss = &b;
  }
  aio__peer_accepting(ss, ss ? (size_t)len : 0);
  h->tr.cb(h, AIO_SEV_ACCEPT, (long)s, h->data);
  aio__peer_accepting(NULL, 0);
}

static void on_accepted(aio_bhandle *h, int err) {
  tport *t = &h->tr;
  SOCKET ls = t->s, as = t->as;
  int i;
  if (!t->reading) {  /* stopped meanwhile (the owner's queue is full) */
    if (err == 0) t->aready = 1;  /* kept for the next start */
    else if (as != INVALID_SOCKET) { closesocket(as); t->as = INVALID_SOCKET; }
    return;
  }
  t->as = INVALID_SOCKET;
  if (err == 0) {
    setsockopt(as, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT, (char *)&ls,
               sizeof ls);
    if (t->nodelay) setnodelay(as);
    hand_over(h, as, NULL, 0);
  } else {
    if (as != INVALID_SOCKET) closesocket(as);
    if (err != -ECONNRESET && err != -ECONNABORTED && t->reading)
      t->cb(h, AIO_SEV_ACCEPT, err, h->data);
  }
  /* more may be waiting in the backlog: take them without waiting */
  for (i = 0; i < ACCEPT_MAX && t->reading && !t->closing; i++) {
    struct sockaddr_storage ss;
    int len = sizeof ss;
    SOCKET s;
    memset(&ss, 0, sizeof ss);
    if ((s = accept(t->s, (struct sockaddr *)&ss, &len)) == INVALID_SOCKET)
      break;
    if (t->nodelay) setnodelay(s);
    hand_over(h, s, &ss, len);
  }
  if (t->reading && !t->closing && (err = post_accept(h)) < 0)
    t->cb(h, AIO_SEV_ACCEPT, err, h->data);
}

/* ConnectEx needs a bound socket, and the port bind() picked may be the
** very one connected to, when nobody listens there any more: TCP's
** simultaneous open then connects the socket to itself.  That is a refusal. */
static int self_connected(SOCKET s) {
  struct sockaddr_storage a, b;
  int alen = sizeof a, blen = sizeof b;
  if (getsockname(s, (struct sockaddr *)&a, &alen) != 0 ||
      getpeername(s, (struct sockaddr *)&b, &blen) != 0)
    return 0;
  return alen == blen && memcmp(&a, &b, (size_t)alen) == 0;
}

static void on_connected(aio_bhandle *h, int err) {
  tport *t = &h->tr;
  t->connecting = 0;
  if (err == 0)
    setsockopt(t->s, SOL_SOCKET, SO_UPDATE_CONNECT_CONTEXT, NULL, 0);
  if (err == 0 && self_connected(t->s))
    err = -ECONNREFUSED;
  t->cb(h, AIO_SEV_CONNECT, err, h->data);
  if (err == 0 && t->wend > t->wstart && (err = post_write(h)) < 0) {
    t->werr = err;
    t->cb(h, AIO_SEV_WRITE, err, h->data);
  }
}

static int flushed(aio_bhandle *h);

static void on_sent(aio_bhandle *h, int err, size_t n) {
  tport *t = &h->tr;
  free(t->wold);
  t->wold = NULL;
  t->wfly = 0;
  if (err < 0) {
    t->werr = err;
    t->wstart = t->wend = 0;
    t->cb(h, AIO_SEV_WRITE, err, h->data);
    if (t->close_pending) flushed(h);
    return;
  }
  t->wstart += n;
  if (t->wstart == t->wend) {
    t->wstart = t->wend = 0;
    if (flushed(h)) return;
  } else if ((err = post_write(h)) < 0) {
    on_sent(h, err, 0);
    return;
  }
  if (t->wend - t->wstart <= t->lowat)
    t->cb(h, AIO_SEV_WRITE, 0, h->data);
}

static void on_datagram(aio_bhandle *h, int err, DWORD n) {
  tport *t = &h->tr;
  if (!t->reading) {  /* stopped meanwhile: kept for the next start */
    t->dready = 1;
    t->dbytes = n;
    return;
  }
  t->reading = 0;
  t->rstart = 0;
  t->rend = err < 0 ? 0 : n;
  if (err == -ECONNRESET) err = -ECONNREFUSED;  /* the ICMP of a closed port */
  t->cb(h, AIO_SEV_READ, err < 0 ? err : (long)n, h->data);
}

static void on_io(OVERLAPPED *ov, DWORD bytes) {
  op *o = container_of(ov, op, ov);
  aio_bhandle *h;
  tport *t;
  DWORD n = 0, flags = 0;
  int err = 0;
  if (o->type == OP_WRITE || o->type == OP_CONNECT)
    t = container_of(o, tport, wop);
  else
    t = container_of(o, tport, rop);
  h = container_of(t, aio_bhandle, tr);
  o->busy = 0;
  if (t->closing || h->lp == NULL || t->s == INVALID_SOCKET) {
    if (t->closing && !t->rop.busy && !t->wop.busy) tport_free(h);
    return;
  }
  if (t->is_pipe && o->type == OP_READ && t->reof) {
    t->reof = 0;
    on_pipe_read(h, -EPIPE, 0);
    return;
  }
  if (t->is_pipe) {
    if (!GetOverlappedResult((HANDLE)t->s, ov, &n, FALSE)) {
      DWORD e = GetLastError();
      err = e == ERROR_BROKEN_PIPE || e == ERROR_NO_DATA ||
            e == ERROR_HANDLE_EOF ? -EPIPE : -EIO;
    }
    if (o->type == OP_READ) { on_pipe_read(h, err, n); return; }
  } else if (!WSAGetOverlappedResult(t->s, ov, &n, FALSE, &flags))
    err = lasterr();
  else
    n = bytes;
  switch (o->type) {
    case OP_READ: on_readable(h, err); break;
    case OP_ACCEPT: on_accepted(h, err); break;
    case OP_RECVFROM: on_datagram(h, err, n); break;
    case OP_CONNECT: on_connected(h, err); break;
    case OP_WRITE: on_sent(h, err, n); break;
  }
}

/* ---- streams ---- */

/* an accepted socket needs nothing the general path does not do */
int aio__stream_open_accepted(aio_loop *lp, aio_bhandle **out, int fd,
                              aio_stream_cb cb, void *data) {
  return aio__stream_open(lp, out, fd, cb, data);
}

int aio__stream_open(aio_loop *lp, aio_bhandle **out, int fd,
                     aio_stream_cb cb, void *data) {
  SOCKET s = (SOCKET)(intptr_t)fd;
  aio_bhandle *h;
  int rc, type, tlen = sizeof type;
  if (getsockopt(s, SOL_SOCKET, SO_TYPE, (char *)&type, &tlen) != 0) {
    /* not a socket: a pipe end opened for overlapped I/O (a HANDLE) */
    if (CreateIoCompletionPort((HANDLE)s, lp->port, KEY_IO, 0) == NULL) {
      CloseHandle((HANDLE)s);
      return -EBADF;
    }
    h = newtport(lp, H_STREAM, s, cb, data);
    if (h == NULL) { CloseHandle((HANDLE)s); return -ENOMEM; }
    h->tr.is_pipe = 1;
    *out = h;
    return 0;
  }
  if ((rc = adopt(lp, s)) < 0) return rc;   /* closed s */
  h = newtport(lp, H_STREAM, s, cb, data);
  if (h == NULL) { closesocket(s); return -ENOMEM; }
  *out = h;
  return 0;
}

int aio__stream_connect(aio_loop *lp, aio_bhandle **out, const aio_addr *to,
                        const aio_addr *local, aio_stream_cb cb, void *data) {
  struct sockaddr_storage ss, ls;
  int len, llen, rc = tosockaddr(to, &ss, &len);
  aio_bhandle *h;
  SOCKET s;
  BOOL one = TRUE;
  DWORD n = 0;
  if (rc < 0) return rc;
  if ((rc = newsocket(lp, ss.ss_family, SOCK_STREAM, &s)) < 0) return rc;
  if ((rc = extensions(s)) < 0) goto fail;
  setnodelay(s);
  if (local != NULL) {
    if ((rc = tosockaddr(local, &ls, &llen)) < 0) goto fail;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, (const char *)&one, sizeof one);
  } else {  /* ConnectEx wants a bound socket */
    memset(&ls, 0, sizeof ls);
    ls.ss_family = ss.ss_family;
    llen = len;
  }
  if (bind(s, (struct sockaddr *)&ls, llen) != 0) { rc = lasterr(); goto fail; }
  h = newtport(lp, H_STREAM, s, cb, data);
  if (h == NULL) { rc = -ENOMEM; goto fail; }
  h->tr.connecting = 1;
  h->tr.wop.type = OP_CONNECT;
  if (!p_connectex(s, (struct sockaddr *)&ss, len, NULL, 0, &n,
                   &h->tr.wop.ov) && WSAGetLastError() != ERROR_IO_PENDING) {
    rc = lasterr();
    h->tr.s = INVALID_SOCKET;
    tport_free(h);
    goto fail;
  }
  h->tr.wop.busy = 1;
  *out = h;
  return 0;
fail:
  closesocket(s);
  return rc;
}

int aio__stream_listen(aio_loop *lp, aio_bhandle **out, const aio_addr *at,
                       int backlog, int flags, aio_stream_cb cb, void *data) {
  struct sockaddr_storage ss;
  int len, rc = tosockaddr(at, &ss, &len);
  aio_bhandle *h;
  SOCKET s;
  BOOL one = TRUE;
  if (rc < 0) return rc;
  if (flags & AIO_LISTEN_REUSEPORT) return -ENOSYS;  /* no SO_REUSEPORT */
  if ((rc = newsocket(lp, ss.ss_family, SOCK_STREAM, &s)) < 0) return rc;
  if ((rc = extensions(s)) < 0) goto fail;
  /* SO_EXCLUSIVEADDRUSE: Windows' SO_REUSEADDR would allow port theft */
  setsockopt(s, SOL_SOCKET, SO_EXCLUSIVEADDRUSE, (const char *)&one,
             sizeof one);
  if (ss.ss_family == AF_INET6) {
    DWORD v6 = (flags & AIO_LISTEN_V6ONLY) ? 1 : 0;
    setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, (const char *)&v6, sizeof v6);
  }
  if (bind(s, (struct sockaddr *)&ss, len) != 0 ||
      listen(s, backlog > 0 ? backlog : 128) != 0) {
    rc = lasterr();
    goto fail;
  }
  h = newtport(lp, H_LISTEN, s, cb, data);
  if (h == NULL) { rc = -ENOMEM; goto fail; }
  h->tr.nodelay = 1;
  *out = h;
  return 0;
fail:
  closesocket(s);
  return rc;
}

int aio__stream_start_read(aio_bhandle *h) {
  tport *t = &h->tr;
  int rc;
  if (h->lp == NULL || t->s == INVALID_SOCKET) return -EBADF;
  if (t->reading || t->eof) return 0;
  t->reading = 1;
  if (t->aready) {  /* accepted while stopped: its completion once more */
    t->aready = 0;
    t->rop.busy = 1;
    PostQueuedCompletionStatus(h->lp->port, 0, KEY_IO, &t->rop.ov);
    return 0;
  }
  rc = h->kind == H_LISTEN ? post_accept(h) : post_read(h);
  if (rc < 0) t->reading = 0;
  return rc;
}

/* an operation in flight stays: its completion finds reading off */
int aio__stream_stop_read(aio_bhandle *h) {
  h->tr.reading = 0;
  return 0;
}

char *aio__stream_rbuf(aio_bhandle *h, size_t *len) {
  tport *t = &h->tr;
  *len = t->rend - t->rstart;
  return t->rbuf + t->rstart;
}

void aio__stream_consume(aio_bhandle *h, size_t n) {
  tport *t = &h->tr;
  t->rstart += n;
  if (t->rstart >= t->rend) t->rstart = t->rend = 0;
}

size_t aio__stream_queued(aio_bhandle *h) {
  return h->tr.wend - h->tr.wstart;
}

void aio__stream_set_lowat(aio_bhandle *h, size_t lowat) {
  h->tr.lowat = lowat;
}

aio_loop *aio__handle_loop(aio_bhandle *h) { return h->lp; }

int aio__stream_is_socket(aio_bhandle *h) { return !h->tr.is_pipe; }

/* the queue is empty: a pending half-close or close happens now; returns
** 1 when the handle was freed (or will be, once its ops are back) */
static int flushed(aio_bhandle *h) {
  tport *t = &h->tr;
  if (t->shut_pending && !t->shut_done) {
    t->shut_pending = 0;
    t->shut_done = 1;
    if (!t->is_pipe) shutdown(t->s, SD_SEND);
  }
  if (t->close_pending) {
    t->cb(h, AIO_SEV_CLOSED, t->werr, h->data);
    aio__handle_close(h, NULL, NULL);
    return 1;
  }
  return 0;
}

int aio__stream_write(aio_bhandle *h, const char *p, size_t n) {
  tport *t = &h->tr;
  int rc;
  if (t->werr) return t->werr;
  if (h->lp == NULL || t->s == INVALID_SOCKET || t->close_pending)
    return -EBADF;
  if (t->shut_pending || t->shut_done) return -EPIPE;
  if (n == 0) return 0;
  if (t->wend == t->wstart && !t->connecting && !t->wop.busy &&
      !t->is_pipe) {
    int k = send(t->s, p, n > INT_MAX ? INT_MAX : (int)n, 0);
    if (k < 0) {
      if ((rc = lasterr()) != -EAGAIN) return t->werr = rc;
      k = 0;
    }
    p += k;
    n -= (size_t)k;
    if (n == 0) return 0;
  }
  if (t->wcap - t->wend < n) {
    size_t used = t->wend - t->wstart, cap = t->wcap ? t->wcap : 16384;
    char *q;
    while (cap - used < n) cap *= 2;
    if (t->wop.busy && t->wold == NULL) {
      /* the send in flight reads the old buffer: keep it until it is back */
      if ((q = malloc(cap)) == NULL) return -ENOMEM;
      memcpy(q, t->wbuf + t->wstart, used);
      t->wold = t->wbuf;
    } else {
      if (t->wstart > 0) memmove(t->wbuf, t->wbuf + t->wstart, used);
      if ((q = realloc(t->wbuf, cap)) == NULL) return -ENOMEM;
    }
    t->wbuf = q;
    t->wcap = cap;
    t->wstart = 0;
    t->wend = used;
  }
  memcpy(t->wbuf + t->wend, p, n);
  t->wend += n;
  if (!t->connecting && (rc = post_write(h)) < 0) return t->werr = rc;
  return 0;
}

int aio__stream_shutdown(aio_bhandle *h) {
  tport *t = &h->tr;
  if (h->lp == NULL || t->s == INVALID_SOCKET) return -EBADF;
  if (t->shut_done || t->shut_pending) return 0;
  t->shut_pending = 1;
  if (t->wend == t->wstart) flushed(h);
  return 0;
}

int aio__stream_close_soon(aio_bhandle *h) {
  tport *t = &h->tr;
  if (h->lp == NULL || t->s == INVALID_SOCKET || t->werr ||
      t->wend == t->wstart || t->connecting) {
    aio__handle_close(h, NULL, NULL);
    return 1;
  }
  aio__stream_stop_read(h);
  t->close_pending = 1;
  return 0;
}

/* A socket: recv at once, beside the zero-byte WSARecv that may be out
** (it completes later and finds nothing, or more).  A pipe: with no read
** out, PeekNamedPipe tells a writer gone from one that is there; a read
** out brings what comes with its completion (asyncio's proactor knows
** no more either). */
int aio__stream_read_now(aio_bhandle *h) {
  tport *t = &h->tr;
  int n, err = 0;
  if (h->kind != H_STREAM || h->lp == NULL || t->s == INVALID_SOCKET ||
      t->eof || t->connecting || t->close_pending || t->closing)
    return 0;
  if (t->is_pipe) {
    DWORD avail = 0;
    if (t->rop.busy) return 0;
    if (PeekNamedPipe((HANDLE)t->s, NULL, 0, NULL, &avail, NULL) ||
        GetLastError() != ERROR_BROKEN_PIPE)
      return 0;
    t->eof = 1;
    t->reading = 0;
    t->cb(h, AIO_SEV_READ, 0, h->data);
    return 0;
  }
  if (t->rend == t->rstart) t->rstart = t->rend = 0;
  if (rbuf_room(t, t->rcap ? 4096 : RBUF_MIN) < 0) return 0;
  n = recv(t->s, t->rbuf + t->rend, (int)(t->rcap - t->rend), 0);
  if (n > 0) {
    t->rend += (size_t)n;
    t->cb(h, AIO_SEV_READ, (long)n, h->data);
    return 1;
  }
  if (n < 0 && (err = lasterr()) == -EAGAIN) return 0;
  t->eof = 1;
  aio__stream_stop_read(h);
  t->cb(h, AIO_SEV_READ, n == 0 ? 0 : err, h->data);
  return 0;
}

/* a reset shows as POLLERR (wine: the host's poll); Windows may say
** POLLHUP alone, which a graceful end says too: then 0, and the next read
** or write tells */
int aio__stream_lost(aio_bhandle *h) {
  WSAPOLLFD p;
  tport *t = &h->tr;
  if (h->lp == NULL || t->s == INVALID_SOCKET || t->is_pipe) return 0;
  p.fd = t->s;
  p.events = POLLRDNORM;
  p.revents = 0;
  return WSAPoll(&p, 1, 0) > 0 && (p.revents & POLLERR);
}

static void detached_cb(aio_bhandle *h, int event, long status, void *data) {
  (void)h; (void)event; (void)status; (void)data;
}

/* the callbacks of a detached handle go nowhere; flushed() closes it */
void aio__stream_detach(aio_bhandle *h) {
  tport *t = &h->tr;
  if (h->lp == NULL || !t->close_pending) {
    aio__handle_close(h, NULL, NULL);
    return;
  }
  t->cb = detached_cb;
  h->data = NULL;
  t->detached = 1;
}

static int namesof(aio_bhandle *h, aio_addr *a, int peer) {
  struct sockaddr_storage ss;
  int len = sizeof ss, rc;
  if (h->tr.s == INVALID_SOCKET) return -EBADF;
  memset(&ss, 0, sizeof ss);
  rc = peer ? getpeername(h->tr.s, (struct sockaddr *)&ss, &len)
            : getsockname(h->tr.s, (struct sockaddr *)&ss, &len);
  if (rc != 0) return lasterr();
  fromsockaddr(&ss, a);
  return 0;
}

int aio__stream_sockname(aio_bhandle *h, aio_addr *a) {
  return namesof(h, a, 0);
}

int aio__stream_peername(aio_bhandle *h, aio_addr *a) {
  return namesof(h, a, 1);
}

/* ---- datagrams ---- */

int aio__dgram_open(aio_loop *lp, aio_bhandle **out, int family,
                    const aio_addr *local, int reuse_port, int broadcast,
                    aio_stream_cb cb, void *data) {
  aio_bhandle *h;
  SOCKET s;
  BOOL one = TRUE;
  DWORD no = FALSE, k;
  int rc;
  if (local) family = local->family;
  if (family == AIO_AF_UNIX) return -ENOSYS;
  if (reuse_port) return -ENOSYS;
  if ((rc = newsocket(lp, afof(family), SOCK_DGRAM, &s)) < 0) return rc;
  /* an ICMP port unreachable must not fail later reads (WSAECONNRESET) */
  WSAIoctl(s, SIO_UDP_CONNRESET, &no, sizeof no, NULL, 0, &k, NULL, NULL);
  if (broadcast &&
      setsockopt(s, SOL_SOCKET, SO_BROADCAST, (const char *)&one,
                 sizeof one) != 0) {
    rc = lasterr();
    goto fail;
  }
  if (local) {
    struct sockaddr_storage ss;
    int len;
    if ((rc = tosockaddr(local, &ss, &len)) < 0) goto fail;
    if (bind(s, (struct sockaddr *)&ss, len) != 0) { rc = lasterr(); goto fail; }
  }
  h = newtport(lp, H_DGRAM, s, cb, data);
  if (h == NULL) { rc = -ENOMEM; goto fail; }
  *out = h;
  return 0;
fail:
  closesocket(s);
  return rc;
}

int aio__dgram_connect(aio_bhandle *h, const aio_addr *to) {
  struct sockaddr_storage ss;
  int len, rc = tosockaddr(to, &ss, &len);
  if (rc < 0) return rc;
  if (h->tr.s == INVALID_SOCKET) return -EBADF;
  if (connect(h->tr.s, (struct sockaddr *)&ss, len) != 0) return lasterr();
  {  /* connected: an ICMP port unreachable is reported, as on Linux */
    DWORD yes = TRUE, k;
    WSAIoctl(h->tr.s, SIO_UDP_CONNRESET, &yes, sizeof yes, NULL, 0, &k,
             NULL, NULL);
  }
  return 0;
}

int aio__dgram_send(aio_bhandle *h, const char *p, size_t n,
                    const aio_addr *to) {
  struct sockaddr_storage ss;
  int len = 0, k, rc;
  if (h->tr.s == INVALID_SOCKET) return -EBADF;
  if (to && (rc = tosockaddr(to, &ss, &len)) < 0) return rc;
  k = to ? sendto(h->tr.s, p, (int)n, 0, (struct sockaddr *)&ss, len)
         : send(h->tr.s, p, (int)n, 0);
  /* a full socket buffer drops the datagram, as the network may */
  if (k < 0 && (rc = lasterr()) != -EAGAIN) return rc;
  return 0;
}

int aio__dgram_start_recv(aio_bhandle *h) {
  tport *t = &h->tr;
  int rc;
  if (h->lp == NULL || t->s == INVALID_SOCKET) return -EBADF;
  if (t->rbuf == NULL) {
    if ((t->rbuf = malloc(DGRAM_MAX)) == NULL) return -ENOMEM;
    t->rcap = DGRAM_MAX;
  }
  if (t->reading) return 0;
  t->reading = 1;
  if (t->rop.busy) return 0;  /* still out: its datagram is the next */
  if (t->dready) {   /* one came while stopped: its completion once more */
    t->dready = 0;
    t->rop.busy = 1;
    PostQueuedCompletionStatus(h->lp->port, t->dbytes, KEY_IO, &t->rop.ov);
    return 0;
  }
  if ((rc = post_recvfrom(h)) < 0) t->reading = 0;
  return rc;
}

int aio__dgram_stop_recv(aio_bhandle *h) { return aio__stream_stop_read(h); }

const char *aio__dgram_last(aio_bhandle *h, size_t *len, aio_addr *from) {
  tport *t = &h->tr;
  *len = t->rend;
  if (from) fromsockaddr(&t->from, from);
  return t->rbuf;
}

int aio__dgram_sockname(aio_bhandle *h, aio_addr *a) {
  return namesof(h, a, 0);
}
