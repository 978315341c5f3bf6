/*
** loop_ev.c: the loop seam (loop.h) on libev.  The only file that includes
** ev.h.  Each handle embeds its libev watcher and is found back from it with
** container_of ("subclassing" a watcher, libev's manual).
*/
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <poll.h>
#include <sys/un.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <pthread.h>
#include <unistd.h>

#include <ev.h>
#ifdef AIO_URING
#include <sys/utsname.h>
#include <liburing.h>
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif
#endif

#include "loop.h"

#define container_of(p, type, member) \
  ((type *)((char *)(p) - offsetof(type, member)))

enum { H_SIGNAL, H_CHILD, H_STREAM, H_LISTEN, H_DGRAM, H_POLL };

struct aio_loop {
  struct ev_loop *ev;
  ev_timer deadline;   /* bounds one poll */
  ev_io wakeup;        /* aio__loop_wakeup: wfd readable */
  int wfd;             /* an eventfd, always in the backend's set */
  int wpending;        /* written and not read yet (atomic) */
  int kept;            /* aio__loop_arm(..., keep): one extra ref */
  aio_wakeup_cb wakeup_cb;
  void *wakeup_data;
  int is_default;
  aio_bhandle *transports;  /* open transports, closed by aio__loop_free */
  int nrpool;               /* emptied read buffers kept for reuse */
  char *rpool[64];          /* RPOOL_MAX: see rbuf_release */
  aio_bhandle *others;      /* signal and child handles (issue 6) */
  /* on the application's libev loop (aio__loop_adopt) */
  int foreign;         /* ev is the application's: never destroyed here */
  int driving;         /* inside drive_cb: polls are the application's */
  ev_prepare prepare;  /* drive before the application's loop blocks */
  ev_check check;      /* and after it polled */
  ev_idle idle;        /* armed: work is ready, do not block */
  ev_timer arm;        /* armed: the next deadline */
  aio_wakeup_cb drive_cb;
  void *drive_data;
  int evdirty;         /* a watcher was started: libev must run to add it */
#ifdef AIO_URING
  struct uring *ur;    /* socket streams' reads and sends (see "io_uring") */
  int ur_off;          /* not available, or not wanted: libev does them */
  int evran;           /* libev invoked watchers in its last run */
  int nchildpoll;      /* children watched by polling (a libev timer) */
  int fd_exposed;      /* aio__loop_fd was asked: the ring's fd in epoll */
#endif
};

/* the state of a transport (stream, listener or datagram socket) */
typedef struct tport {
  ev_io rio, wio;
  aio_stream_cb cb;
  aio_bhandle *next, *prev;   /* in the loop's list of transports */
  int fd;
  int werr;                   /* first write error, sticky */
  unsigned is_sock : 1, reading : 1, eof : 1, connecting : 1,
           shut_pending : 1, shut_done : 1, close_pending : 1, nodelay : 1,
           detached : 1,      /* aio__stream_detach: the loop's own */
           ur : 1,            /* reads and sends go through io_uring */
           rarmed : 1,        /* its multishot recv is in the ring */
           rcancel : 1,       /* and asked to end */
           sending : 1,       /* a send is in the ring */
           zombie : 1;        /* closed; waits for its requests to end */
  int ninflight;              /* requests in the ring that name it */
  char *wpin;                 /* the write queue the send in the ring reads */
  char *wold;                 /* a queue replaced while pinned: freed then */
  char *rbuf;                 /* read buffer: [rstart, rend) is unread */
  size_t rstart, rend, rcap;
  char *wbuf;                 /* write queue: [wstart, wend) */
  size_t wstart, wend, wcap;
  size_t lowat;
  struct sockaddr_storage from;  /* datagrams: the last one's sender */
  socklen_t fromlen;
} tport;

struct aio_bhandle {
  int kind;
  int unref;           /* aio__handle_ref(h, 0) was called */
  aio_loop *lp;
  void *data;
  aio_bhandle *onext, *oprev;  /* signals, children: in lp->others */
  union {
    struct { ev_signal w; aio_signal_cb cb; } sig;
    /* on the default loop an ev_child; elsewhere a pidfd watched with w2,
    ** or (no pidfd_open: old kernels, valgrind) waitpid polled by w3 */
    struct {
      ev_child w; ev_io w2; ev_timer w3;
      int pidfd, pid, polling, counted;
      aio_child_cb cb;
    } child;
    tport tr;
    struct { ev_io w; aio_poll_cb cb; } poll;
  } u;
};

/* Our loops are never libev's default loop: that one reaps every child of
** the process (waitpid(-1) on SIGCHLD), io.popen's and os.execute's too,
** whose status pclose then loses.  Children are watched with a pidfd
** (aio__child_start).  default_taken is set only while an application's
** loop that is the default one is in use (aio_host_new_ev). */
static int default_taken;

#ifdef AIO_URING
struct uring;
static void ur_invoke(struct ev_loop *ev);
static int ur_poll(aio_loop *lp, double timeout);
static void ur_expose(aio_loop *lp, struct uring *ur);
static void ur_free(aio_loop *lp);
static struct uring *ur_get(aio_loop *lp);
static void ur_enter_asked(aio_loop *lp);
#endif
extern struct ev_loop *ev_default_loop_ptr;  /* ev.h: set once made */

const char *aio__backend_name(void) { return "libev"; }

const char *aio__loop_backend(aio_loop *lp) {
#ifdef AIO_URING
  if (lp != NULL && lp->ur != NULL) return "libev+io_uring";
#endif
  (void)lp;
  return aio__backend_name();
}

const char *aio__strerror(int code) {
  return strerror(code < 0 ? -code : code);
}

double aio__clock(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void on_deadline(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev; (void)w; (void)revents;  /* only ends the poll */
}

/* An eventfd rather than ev_async: libev writes its async pipe only while
** it blocks in its own poll, and an application that polls aio_host_fd
** itself must see posts too.  The read and the flag come before the
** callback, which takes the post queue: a post that found the flag set
** is in the queue by then. */
static void on_wakeup(struct ev_loop *ev, ev_io *w, int revents) {
  aio_loop *lp = container_of(w, aio_loop, wakeup);
  uint64_t n;
  while (read(lp->wfd, &n, sizeof n) < 0 && errno == EINTR) {}
  __atomic_store_n(&lp->wpending, 0, __ATOMIC_SEQ_CST);
  (void)ev; (void)revents;
  if (lp->wakeup_cb) lp->wakeup_cb(lp->wakeup_data);
}

aio_loop *aio__loop_new(int *err) {
  aio_loop *lp = calloc(1, sizeof *lp);
  if (lp == NULL) { *err = -ENOMEM; return NULL; }
  lp->ev = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOENV);
  if (lp->ev == NULL) { free(lp); *err = -ENOMEM; return NULL; }
  ev_timer_init(&lp->deadline, on_deadline, 0., 0.);
  lp->wfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (lp->wfd < 0) {
    *err = -errno;
    ev_loop_destroy(lp->ev);
    free(lp);
    return NULL;
  }
  ev_io_init(&lp->wakeup, on_wakeup, lp->wfd, EV_READ);
  { ev_io_start(lp->ev, &lp->wakeup); lp->evdirty = 1; }
  ev_unref(lp->ev);  /* the wake-up alone does not keep the loop alive */
  ev_run(lp->ev, EVRUN_NOWAIT);  /* libev adds fds to the backend lazily */
#ifdef AIO_URING
  ev_set_userdata(lp->ev, lp);
  ev_set_invoke_pending_cb(lp->ev, ur_invoke);
  /* made now, not with the first socket: its fd is one of the loop's own
  ** from the start, as epoll's (a count of open fds taken inside a loop
  ** does not grow by one at its first connection) */
  ur_get(lp);
#endif
  return lp;
}

static void transports_orphan(aio_loop *lp);
static int transport_release(aio_bhandle *h);
static int loop_epoll_fd(aio_loop *lp);
static void others_orphan(aio_loop *lp);

void aio__loop_free(aio_loop *lp) {
  if (lp == NULL) return;
#ifdef AIO_URING
  ur_free(lp);  /* first: its requests name transports */
#endif
  transports_orphan(lp);
  while (lp->nrpool > 0) free(lp->rpool[--lp->nrpool]);
  others_orphan(lp);
  ev_ref(lp->ev);
  if (lp->kept) ev_unref(lp->ev);
  ev_io_stop(lp->ev, &lp->wakeup);
  close(lp->wfd);
  ev_timer_stop(lp->ev, &lp->deadline);
  if (lp->foreign) {
    ev_ref(lp->ev);  /* prepare and check were unreferenced */
    ev_ref(lp->ev);
    ev_prepare_stop(lp->ev, &lp->prepare);
    ev_check_stop(lp->ev, &lp->check);
    ev_idle_stop(lp->ev, &lp->idle);
    ev_timer_stop(lp->ev, &lp->arm);
  } else {
    ev_loop_destroy(lp->ev);
  }
  if (lp->is_default) __atomic_store_n(&default_taken, 0, __ATOMIC_RELEASE);
  free(lp);
}

/* ---- the application's libev loop ---- */

static void on_drive(aio_loop *lp) {
  if (lp->driving || lp->drive_cb == NULL) return;
  lp->driving = 1;
  lp->drive_cb(lp->drive_data);
  lp->driving = 0;
}

static void on_prepare(struct ev_loop *ev, ev_prepare *w, int revents) {
  (void)ev; (void)revents;
  on_drive(container_of(w, aio_loop, prepare));
}

static void on_check(struct ev_loop *ev, ev_check *w, int revents) {
  (void)ev; (void)revents;
  on_drive(container_of(w, aio_loop, check));
}

static void on_armed(struct ev_loop *ev, ev_idle *w, int revents) {
  (void)ev; (void)w; (void)revents;  /* only keeps the poll from blocking */
}

int aio__loop_adopt(aio_loop *lp, void *ev_loop, aio_wakeup_cb drive,
                    void *data) {
  struct ev_loop *ev = ev_loop;
  if (ev == NULL || lp->transports != NULL || lp->foreign) return -EINVAL;
#ifdef AIO_URING
  ur_free(lp);  /* the application's loop polls: libev does the I/O */
  lp->ur_off = 1;
#endif
  ev_ref(lp->ev);
  ev_io_stop(lp->ev, &lp->wakeup);
  ev_loop_destroy(lp->ev);
  if (lp->is_default) __atomic_store_n(&default_taken, 0, __ATOMIC_RELEASE);
  lp->ev = ev;
  lp->foreign = 1;
  lp->is_default = ev_is_default_loop(ev);
  if (lp->is_default) __atomic_store_n(&default_taken, 1, __ATOMIC_RELEASE);
  lp->drive_cb = drive;
  lp->drive_data = data;
  ev_io_start(ev, &lp->wakeup);
  ev_unref(ev);
  /* prepare and check do not keep the application's loop alive; the
  ** idle and timer watchers (work is due) do */
  ev_prepare_init(&lp->prepare, on_prepare);
  ev_prepare_start(ev, &lp->prepare);
  ev_unref(ev);
  ev_check_init(&lp->check, on_check);
  ev_check_start(ev, &lp->check);
  ev_unref(ev);
  ev_idle_init(&lp->idle, on_armed);
  ev_timer_init(&lp->arm, on_deadline, 0., 0.);
  return 0;
}

void aio__loop_arm(aio_loop *lp, double timeout, int keep) {
  if (!lp->foreign) return;
  if (keep && !lp->kept) ev_ref(lp->ev);
  else if (!keep && lp->kept) ev_unref(lp->ev);
  lp->kept = keep != 0;
  if (timeout == 0) ev_idle_start(lp->ev, &lp->idle);
  else ev_idle_stop(lp->ev, &lp->idle);
  ev_timer_stop(lp->ev, &lp->arm);
  if (timeout > 0) {
    ev_timer_set(&lp->arm, timeout, 0.);
    { ev_timer_start(lp->ev, &lp->arm); lp->evdirty = 1; }
  }
}

void aio__loop_flush(aio_loop *lp) {
  if (lp == NULL || lp->driving || lp->foreign) return;
#ifdef AIO_URING
  ur_enter_asked(lp);
#endif
  if (lp->evdirty) {  /* its callbacks may make tasks ready: a step is due */
    lp->evdirty = 0;
    ev_run(lp->ev, EVRUN_NOWAIT);
  }
}

int aio__loop_fd(aio_loop *lp) {
#ifdef AIO_URING
  lp->fd_exposed = 1;
  if (lp->ur) ur_expose(lp, lp->ur);
#endif
  return loop_epoll_fd(lp);
}

static int loop_epoll_fd(aio_loop *lp) {
  /* libev keeps its backend's fd private, but an embed watcher watches
  ** it: start one on a scratch loop and read the fd it watches */
  struct ev_loop *tmp;
  ev_embed e;
  int fd;
  if (!(ev_backend(lp->ev) & ev_embeddable_backends())) return -ENOTSUP;
  tmp = ev_loop_new(EVBACKEND_SELECT | EVFLAG_NOENV);
  if (tmp == NULL) return -ENOMEM;
  ev_embed_init(&e, NULL, lp->ev);
  ev_embed_start(tmp, &e);
  fd = e.io.fd;
  ev_embed_stop(tmp, &e);
  ev_loop_destroy(tmp);
  return fd;
}

int aio__loop_poll(aio_loop *lp, double timeout) {
  if (lp->driving) return 0;  /* the application's loop polls */
#ifdef AIO_URING
  if (lp->ur) return ur_poll(lp, timeout);
#endif
  if (timeout == 0) {
    ev_run(lp->ev, EVRUN_NOWAIT);
    return 0;
  }
  /* EVRUN_ONCE does not block without an active, referenced watcher, so
  ** the deadline timer (referenced) makes it wait for `timeout`; with no
  ** limit the wake-up watcher is referenced for the duration instead */
  if (timeout > 0) {
    /* libev counts from its cached time, which may be well behind (a long
    ** step): the deadline then came early, and the timer that asked for
    ** it was not due yet, an iteration for nothing */
    ev_now_update(lp->ev);
    ev_timer_set(&lp->deadline, timeout, 0.);
    { ev_timer_start(lp->ev, &lp->deadline); lp->evdirty = 1; }
  } else {
    ev_ref(lp->ev);
  }
  ev_run(lp->ev, EVRUN_ONCE);
  if (timeout > 0) ev_timer_stop(lp->ev, &lp->deadline);
  else ev_unref(lp->ev);
  return 0;
}

int aio__loop_set_wakeup(aio_loop *lp, aio_wakeup_cb cb, void *data) {
  lp->wakeup_cb = cb;
  lp->wakeup_data = data;
  return 0;
}

void aio__loop_wakeup(aio_loop *lp) {
  uint64_t one = 1;
  if (__atomic_exchange_n(&lp->wpending, 1, __ATOMIC_SEQ_CST)) return;
  while (write(lp->wfd, &one, sizeof one) < 0 && errno == EINTR) {}
}

/* ---- handles ---- */

static aio_bhandle *newhandle(aio_loop *lp, int kind, void *data) {
  aio_bhandle *h = calloc(1, sizeof *h);
  if (h == NULL) return NULL;
  h->kind = kind;
  h->lp = lp;
  h->data = data;
  return h;
}

static void others_unlink(aio_bhandle *h);
static void child_stop(aio_bhandle *h);
static void signal_stop(aio_bhandle *h);

void aio__handle_close(aio_bhandle *h, aio_close_cb cb, void *data) {
  if (h->unref && h->lp) ev_ref(h->lp->ev);  /* libev: ref again before stopping */
  switch (h->kind) {
    case H_SIGNAL:
      aio__signal_async(h, NULL, NULL);
      if (h->lp) signal_stop(h);
      others_unlink(h);
      break;
    case H_CHILD: child_stop(h); others_unlink(h); break;
    case H_STREAM: case H_LISTEN: case H_DGRAM:
      if (transport_release(h)) {  /* io_uring still names it: a zombie */
        if (cb) cb(h, data);
        return;
      }
      break;
    case H_POLL: ev_io_stop(h->lp->ev, &h->u.poll.w); break;
  }
  /* libev holds no pointer into a stopped watcher: free at once */
  if (cb) cb(h, data);
  free(h);
}

void aio__handle_ref(aio_bhandle *h, int ref) {
  /* libev counts references per loop; a handle toggles its share */
  if (ref && h->unref) ev_ref(h->lp->ev);
  else if (!ref && !h->unref) ev_unref(h->lp->ev);
  h->unref = !ref;
}

/* ---- signals and children (issue 6) ---- */

/* Signal and child handles are linked to their loop, as transports are:
** aio__loop_free stops what is still open, so a handle may outlive its
** loop (its close then only frees).  A child still running then is handed
** to the orphan list below, so that it is reaped all the same. */

static void others_link(aio_loop *lp, aio_bhandle *h) {
  h->oprev = NULL;
  h->onext = lp->others;
  if (h->onext) h->onext->oprev = h;
  lp->others = h;
}

static void others_unlink(aio_bhandle *h) {
  if (h->lp == NULL) return;
  if (h->oprev) h->oprev->onext = h->onext;
  else if (h->lp->others == h) h->lp->others = h->onext;
  if (h->onext) h->onext->oprev = h->oprev;
  h->onext = h->oprev = NULL;
}

/* Children whose loop went away while they ran (a script's loop closed,
** a host freed, while a child it started goes on): reaped when they exit,
** with no loop, as asyncio's threaded child watcher reaps them.  A SIGCHLD
** handler, installed when the first such child comes, waits for the pids
** of this list only (a child of io.popen or os.execute keeps its status);
** it chains to the handler it replaced (an embedder's, libev's default
** loop's).  If something later replaces ours, these children are still
** reaped whenever a child is started or exits (any loop, any thread).
** The list is lock-free: the handler may run at any point. */
#define ORPHANS_MAX 256
static int orphans[ORPHANS_MAX];  /* pids; 0: a free slot */
static struct sigaction chld_prev;
static pthread_mutex_t chld_mu = PTHREAD_MUTEX_INITIALIZER;
static int chld_installed;

static void orphans_reap(void) {
  int i, saved = errno;
  for (i = 0; i < ORPHANS_MAX; i++) {
    int st, pid = __atomic_load_n(&orphans[i], __ATOMIC_ACQUIRE);
    pid_t r;
    if (pid == 0) continue;
    do r = waitpid(pid, &st, WNOHANG); while (r < 0 && errno == EINTR);
    if (r == 0) continue;                      /* still running */
    /* reaped, or not ours any more: the slot is free (unless the other
    ** side, this handler or the code it interrupted, freed it first) */
    __atomic_compare_exchange_n(&orphans[i], &pid, 0, 0, __ATOMIC_ACQ_REL,
                                __ATOMIC_RELAXED);
  }
  errno = saved;
}

static void on_sigchld(int sig, siginfo_t *si, void *uc) {
  orphans_reap();
  if (chld_prev.sa_flags & SA_SIGINFO) {
    if (chld_prev.sa_sigaction) chld_prev.sa_sigaction(sig, si, uc);
  } else if (chld_prev.sa_handler != SIG_DFL &&
             chld_prev.sa_handler != SIG_IGN) {
    chld_prev.sa_handler(sig);
  }
}

static void chld_install(void) {
  struct sigaction sa;
  pthread_mutex_lock(&chld_mu);
  if (!chld_installed) {
    chld_installed = 1;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigchld;
    sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_NOCLDSTOP;
    sigfillset(&sa.sa_mask);
    /* SIGCHLD ignored: the kernel reaps every child itself */
    if (sigaction(SIGCHLD, NULL, &chld_prev) == 0 &&
        !(!(chld_prev.sa_flags & SA_SIGINFO) &&
          chld_prev.sa_handler == SIG_IGN))
      sigaction(SIGCHLD, &sa, NULL);
  }
  pthread_mutex_unlock(&chld_mu);
}

static void orphan_add(int pid) {
  int i;
  chld_install();
  for (i = 0; i < ORPHANS_MAX; i++) {
    int zero = 0;
    if (__atomic_compare_exchange_n(&orphans[i], &zero, pid, 0,
                                    __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
      break;
  }
  /* full: it stays a zombie until the process ends (256 children alive
  ** after their loops closed) */
}

static void on_signal(struct ev_loop *ev, ev_signal *w, int revents) {
  aio_bhandle *h = container_of(w, aio_bhandle, u.sig.w);
  (void)ev; (void)revents;
  h->u.sig.cb(h, w->signum, h->data);
}

/* libev lets one loop at a time watch a signal (it asserts otherwise), and
** its default loop always watches SIGCHLD: which loop has which signal */
static pthread_mutex_t sigs_mu = PTHREAD_MUTEX_INITIALIZER;
static aio_loop *sig_owner[NSIG];
static int sig_users[NSIG];

static int signal_claim(aio_loop *lp, int signum) {
  int rc = 0;
  pthread_mutex_lock(&sigs_mu);
  if (signum == SIGCHLD && !lp->is_default)  /* the default loop has it */
    rc = __atomic_load_n(&default_taken, __ATOMIC_ACQUIRE) ||
         ev_default_loop_ptr != NULL ? -EBUSY : 0;
  if (rc == 0 && sig_owner[signum] && sig_owner[signum] != lp) rc = -EBUSY;
  if (rc == 0) {
    sig_owner[signum] = lp;
    sig_users[signum]++;
  }
  pthread_mutex_unlock(&sigs_mu);
  return rc;
}

static void signal_unclaim(int signum) {
  pthread_mutex_lock(&sigs_mu);
  if (--sig_users[signum] <= 0) {
    sig_users[signum] = 0;
    sig_owner[signum] = NULL;
  }
  pthread_mutex_unlock(&sigs_mu);
}

static void signal_stop(aio_bhandle *h) {
  ev_signal_stop(h->lp->ev, &h->u.sig.w);
  signal_unclaim(h->u.sig.w.signum);
}

#ifdef AIO_URING
static void ur_sig_chain(int signum);
#endif

int aio__signal_start(aio_loop *lp, aio_bhandle **out, int signum,
                      aio_signal_cb cb, void *data) {
  aio_bhandle *h;
  int rc;
  if (signum <= 0 || signum >= NSIG) return -EINVAL;
  if (signum == SIGKILL || signum == SIGSTOP) return -EINVAL;
  if ((rc = signal_claim(lp, signum)) < 0) return rc;
  h = newhandle(lp, H_SIGNAL, data);
  if (h == NULL) {
    signal_unclaim(signum);
    return -ENOMEM;
  }
  h->u.sig.cb = cb;
  ev_signal_init(&h->u.sig.w, on_signal, signum);
  { ev_signal_start(lp->ev, &h->u.sig.w); lp->evdirty = 1; }
#ifdef AIO_URING
  if (lp->ur) ur_sig_chain(signum);
#endif
  others_link(lp, h);
  *out = h;
  return 0;
}

/* ---- signals: work inside the handler itself ---- */

/* libev's handler is chained: ours runs fn, then libev's, which tells the
** loop as before */
static struct {
  struct sigaction ev;        /* libev's handler */
  aio_signal_async_cb fn;
  void *data;
  aio_bhandle *owner;         /* the handle that set fn */
} async_sig[NSIG];

static void async_handler(int signum) {
  int saved = errno;
  if (async_sig[signum].fn) async_sig[signum].fn(signum, async_sig[signum].data);
  if (async_sig[signum].ev.sa_flags & SA_SIGINFO)
    async_sig[signum].ev.sa_sigaction(signum, NULL, NULL);
  else if (async_sig[signum].ev.sa_handler != SIG_DFL &&
           async_sig[signum].ev.sa_handler != SIG_IGN)
    async_sig[signum].ev.sa_handler(signum);
  errno = saved;
}

int aio__signal_async(aio_bhandle *h, aio_signal_async_cb fn, void *data) {
  struct sigaction sa;
  int signum;
  if (h->kind != H_SIGNAL) return -EINVAL;
  signum = h->u.sig.w.signum;
  if (fn == NULL) {  /* back to libev's handler alone */
    /* only the handle that set it: closing another watcher of the same
    ** signal (a Lua handler of SIGINT) leaves the host's in place */
    if (async_sig[signum].fn == NULL || async_sig[signum].owner != h)
      return 0;
    async_sig[signum].fn = NULL;
    async_sig[signum].owner = NULL;
    if (sigaction(signum, &async_sig[signum].ev, NULL) != 0) return -errno;
#ifdef AIO_URING
    if (h->lp && h->lp->ur) ur_sig_chain(signum);
#endif
    return 0;
  }
  if (async_sig[signum].fn == NULL &&
      sigaction(signum, NULL, &async_sig[signum].ev) != 0)
    return -errno;
  async_sig[signum].data = data;
  async_sig[signum].fn = fn;
  async_sig[signum].owner = h;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = async_handler;
  sigfillset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  if (sigaction(signum, &sa, NULL) != 0) {
    async_sig[signum].fn = NULL;
    async_sig[signum].owner = NULL;
    return -errno;
  }
  return 0;
}


#ifdef AIO_URING
/* libev's handler tells its loop of a signal only while libev blocks in
** its own poll (it writes its pipe then; else it leaves a flag for the
** next ev_run).  A loop with a ring blocks in io_uring_enter: the handler
** of a watched signal is wrapped so that the loop is woken too, after
** libev has noted the signal (the handler may run on another thread). */
static struct sigaction ur_sig_prev[NSIG];

static void ur_sighandler(int signum) {
  int saved = errno;
  aio_loop *lp;
  if (ur_sig_prev[signum].sa_flags & SA_SIGINFO)
    ur_sig_prev[signum].sa_sigaction(signum, NULL, NULL);
  else if (ur_sig_prev[signum].sa_handler != SIG_DFL &&
           ur_sig_prev[signum].sa_handler != SIG_IGN)
    ur_sig_prev[signum].sa_handler(signum);
  lp = __atomic_load_n(&sig_owner[signum], __ATOMIC_ACQUIRE);
  if (lp != NULL) {
    /* always written: a post's wake-up may be read already and its flag
    ** not yet cleared (aio__loop_wakeup would skip the write) */
    uint64_t one = 1;
    __atomic_store_n(&lp->wpending, 1, __ATOMIC_SEQ_CST);
    while (write(lp->wfd, &one, sizeof one) < 0 && errno == EINTR) {}
  }
  errno = saved;
}

/* wrap libev's handler of `signum`; inside the chain async_handler makes
** (aio__signal_async) when that one is installed */
static void ur_sig_chain(int signum) {
  struct sigaction cur, sa, *slot = NULL;
  if (sigaction(signum, NULL, &cur) != 0) return;
  if (!(cur.sa_flags & SA_SIGINFO) && cur.sa_handler == async_handler) {
    slot = &async_sig[signum].ev;  /* async_handler calls it next */
    cur = *slot;
  }
  if (!(cur.sa_flags & SA_SIGINFO) && (cur.sa_handler == ur_sighandler ||
                                       cur.sa_handler == SIG_DFL ||
                                       cur.sa_handler == SIG_IGN))
    return;
  ur_sig_prev[signum] = cur;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = ur_sighandler;
  sa.sa_mask = cur.sa_mask;
  sa.sa_flags = cur.sa_flags & ~SA_SIGINFO;
  if (slot != NULL) *slot = sa;
  else sigaction(signum, &sa, NULL);
}
#endif


static void child_stop(aio_bhandle *h) {
#ifdef AIO_URING
  if (h->lp && h->u.child.counted) {
    h->lp->nchildpoll--;
    h->u.child.counted = 0;
  }
#endif
  if (h->lp) {
    if (h->u.child.pidfd >= 0) ev_io_stop(h->lp->ev, &h->u.child.w2);
    else if (h->u.child.polling) ev_timer_stop(h->lp->ev, &h->u.child.w3);
    else ev_child_stop(h->lp->ev, &h->u.child.w);
  }
  if (h->u.child.pidfd >= 0) close(h->u.child.pidfd);
  h->u.child.pidfd = -1;
}

static void child_done(aio_bhandle *h, int pid, int status) {
  if (h->unref) { ev_ref(h->lp->ev); h->unref = 0; }
  child_stop(h);  /* one exit per child */
  h->u.child.pid = 0;
  orphans_reap();
  h->u.child.cb(h, pid, status, h->data);
}

static void on_child(struct ev_loop *ev, ev_child *w, int revents) {
  aio_bhandle *h = container_of(w, aio_bhandle, u.child.w);
  (void)ev; (void)revents;
  child_done(h, w->rpid, w->rstatus);
}

static void child_check(aio_bhandle *h);

/* not the default loop: the pidfd is readable once the child exited */
static void on_pidfd(struct ev_loop *ev, ev_io *w, int revents) {
  (void)ev; (void)revents;
  child_check(container_of(w, aio_bhandle, u.child.w2));
}

/* no pidfd: poll, from every 10 ms up to every 250 ms */
static void on_childpoll(struct ev_loop *ev, ev_timer *w, int revents) {
  aio_bhandle *h = container_of(w, aio_bhandle, u.child.w3);
  (void)revents;
  if (w->repeat < 0.25) w->repeat *= 1.5;
  ev_timer_again(ev, w);
  child_check(h);
}

static void child_check(aio_bhandle *h) {
  int pid = h->u.child.pid, status = 0;
  pid_t r;
  do r = waitpid(pid, &status, WNOHANG); while (r < 0 && errno == EINTR);
  if (r == 0) return;  /* not yet (spurious) */
  /* ECHILD: the default loop, in another thread, reaped it first (libev
  ** reaps every child there) and its status is lost */
  if (r < 0) status = W_EXITCODE(255, 0);
  child_done(h, pid, status);
}

int aio__child_start(aio_loop *lp, aio_bhandle **out, int pid,
                     aio_child_cb cb, void *data) {
  aio_bhandle *h;
  int pidfd = -1;
  int polling = 0;
  if (!lp->is_default) {
    /* asked once per process when missing (old kernels; valgrind, which
    ** warns at each call) */
    static int no_pidfd;
    errno = ENOSYS;
#ifdef SYS_pidfd_open
    if (!__atomic_load_n(&no_pidfd, __ATOMIC_RELAXED))
      pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
#endif
    if (pidfd < 0 && (errno == ENOSYS || errno == EPERM)) {
      if (errno == ENOSYS) __atomic_store_n(&no_pidfd, 1, __ATOMIC_RELAXED);
      polling = 1;
    }
    else if (pidfd < 0) return -errno;
    else fcntl(pidfd, F_SETFD, FD_CLOEXEC);
  }
  h = newhandle(lp, H_CHILD, data);
  if (h == NULL) {
    if (pidfd >= 0) close(pidfd);
    return -ENOMEM;
  }
  h->u.child.cb = cb;
  h->u.child.pid = pid;
  h->u.child.pidfd = pidfd;
  h->u.child.polling = polling;
  if (pidfd >= 0) {
    ev_io_init(&h->u.child.w2, on_pidfd, pidfd, EV_READ);
    { ev_io_start(lp->ev, &h->u.child.w2); lp->evdirty = 1; }
  } else if (polling) {
    ev_timer_init(&h->u.child.w3, on_childpoll, 0.01, 0.01);
    { ev_timer_start(lp->ev, &h->u.child.w3); lp->evdirty = 1; }
#ifdef AIO_URING
    lp->nchildpoll++;  /* a libev timer: the ring's wait must be short */
    h->u.child.counted = 1;
#endif
  } else {
    ev_child_init(&h->u.child.w, on_child, pid, 0);
    { ev_child_start(lp->ev, &h->u.child.w); lp->evdirty = 1; }
  }
  others_link(lp, h);
  orphans_reap();
  *out = h;
  return 0;
}

/* the loop goes away: stop signal and child handles; a child still running
** joins the orphans and its owner hears of it as status -1 */
static void others_orphan(aio_loop *lp) {
  aio_bhandle *h, *next;
  for (h = lp->others; h != NULL; h = next) {
    next = h->onext;
    h->onext = h->oprev = NULL;
    if (h->unref) { ev_ref(lp->ev); h->unref = 0; }
    if (h->kind == H_SIGNAL) {
      signal_stop(h);
      h->lp = NULL;
    } else {
      int pid = h->u.child.pid;
      child_stop(h);
      h->lp = NULL;
      if (pid > 0) {
        h->u.child.pid = 0;
        orphan_add(pid);
        h->u.child.cb(h, pid, -1, h->data);
      }
    }
  }
  lp->others = NULL;
  orphans_reap();
}

/* ====================================================================== */
/* transports: streams, listeners, datagrams                              */
/* ====================================================================== */

#define RBUF_MIN   (64 * 1024)  /* first read buffer; reads want this much room */
#define RPOOL_MAX  64           /* see rbuf_release */
#define ACCEPT_MAX 64           /* accepts per readiness event */
#define DGRAM_MAX  65536

static int tofamily(int af) {
  switch (af) {
    case AF_INET: return AIO_AF_INET;
    case AF_INET6: return AIO_AF_INET6;
    case AF_UNIX: return AIO_AF_UNIX;
  }
  return AIO_AF_UNSPEC;
}

/* aio_addr -> sockaddr; 0 or -EINVAL */
static int tosockaddr(const aio_addr *a, struct sockaddr_storage *ss,
                      socklen_t *len) {
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
    if ((pct = strchr(host, '%')) != NULL) {  /* fe80::1%eth0 */
      *pct = '\0';
      sin6->sin6_scope_id = (uint32_t)atoi(pct + 1);
    }
    if (host[0] == '\0') sin6->sin6_addr = in6addr_any;
    else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1) return -EINVAL;
    *len = sizeof *sin6;
  } else if (a->family == AIO_AF_UNIX) {
    struct sockaddr_un *sun = (struct sockaddr_un *)ss;
    size_t n = strlen(a->host);
    if (n >= sizeof sun->sun_path) return -ENAMETOOLONG;
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, a->host, n + 1);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
  } else {
    return -EAFNOSUPPORT;
  }
  return 0;
}

static void fromsockaddr(const struct sockaddr_storage *ss, socklen_t len,
                         aio_addr *a) {
  memset(a, 0, sizeof *a);
  a->family = tofamily(ss->ss_family);
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
    inet_ntop(AF_INET, &sin->sin_addr, a->host, sizeof a->host);
    a->port = ntohs(sin->sin_port);
  } else if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
    inet_ntop(AF_INET6, &sin6->sin6_addr, a->host, sizeof a->host);
    a->port = ntohs(sin6->sin6_port);
  } else if (ss->ss_family == AF_UNIX) {
    const struct sockaddr_un *sun = (const struct sockaddr_un *)ss;
    size_t off = offsetof(struct sockaddr_un, sun_path), n;
    n = len > off ? (size_t)len - off : 0;
    if (n >= sizeof a->host) n = sizeof a->host - 1;
    memcpy(a->host, sun->sun_path, n);
    a->host[n] = '\0';
  }
}

static int afof(int family) {
  switch (family) {
    case AIO_AF_INET: return AF_INET;
    case AIO_AF_INET6: return AF_INET6;
    case AIO_AF_UNIX: return AF_UNIX;
  }
  return AF_UNSPEC;
}

static void on_tport_read(struct ev_loop *ev, ev_io *w, int revents);
static void on_tport_write(struct ev_loop *ev, ev_io *w, int revents);

/* ====================================================================== */
/* io_uring: socket streams' reads and sends, in batches                  */
/* ====================================================================== */

/* On Linux 6.0 and later a socket stream's reads and sends go through one
** io_uring per loop instead of a recv() and a send() each: a multishot
** recv per stream fills buffers the loop lends the kernel (a buffer ring),
** and sends are queued as requests.  Everything asked during one loop
** step goes to the kernel in the one io_uring_enter() the loop then
** waits in (ur_poll), which also collects what came.  A system call is
** the expensive part of a small read or write, and more so in a VM: one
** per loop step instead of two per message.  libev keeps doing
** everything else (accepts, connects, pipes, datagrams, signals,
** children); its epoll fd is polled from the ring, and libev runs without
** blocking when that fired or a watcher was started.
**
** Transport semantics stay those of loop.h.  Differences inside: a write
** only queues (its error comes as AIO_SEV_WRITE, as a queued write's
** does); the queue a send reads is pinned until the kernel is done with
** it; a closed handle whose requests are still in the ring is kept (a
** zombie) until their completions come back.  AIOLUA_URING=0 in the
** environment turns it off (as do older kernels and seccomp filters). */
#ifdef AIO_URING

#define UR_ENTRIES 256
#define UR_NBUF    128           /* lent buffers (a power of 2) */
#define UR_BUFSZ   (16 * 1024)
#define UR_BGID    0

/* user_data: the handle | the op; UR_EPOLL alone: libev's fd is ready */
enum { UR_RECV = 1, UR_SEND = 2, UR_EPOLL = 3 };

typedef struct uring {
  struct io_uring ring;
  ev_io w;                     /* the ring's fd: completions are there */
  struct io_uring_buf_ring *br;
  char *bufs;                  /* UR_NBUF * UR_BUFSZ */
  aio_bhandle *zombies;        /* closed handles with requests in the ring */
  int epfd;                    /* libev's epoll fd, polled from the ring */
  int epoll_armed;             /* that poll is in the ring */
  int epoll_fired;             /* and came back: libev has events */
  int ninflight;               /* requests in the ring, all handles */
  int unsubmitted;             /* requests prepared, not yet entered */
  int eager;                   /* aio__loop_fd: enter each one at once */
} uring;

static void ur_reap(aio_loop *lp);
static int rbuf_room(tport *t, size_t need);
static void rbuf_release(aio_bhandle *h);
static int rbuf_pooled(aio_bhandle *h);
static int sent(aio_bhandle *h, long k);

static void on_ring(struct ev_loop *ev, ev_io *w, int revents) {
  (void)ev; (void)revents;
  ur_reap((aio_loop *)w->data);
}

/* the kernel's version is at least 6.0 (multishot recv, buffer rings) */
static int ur_kernel_ok(void) {
  struct utsname u;
  int major = 0;
  if (uname(&u) != 0) return 0;
  major = atoi(u.release);
  return major >= 6;
}

/* the loop's ring, made with the loop (aio__loop_new); NULL when
** io_uring is not to be used (then libev does the stream's I/O) */
static uring *ur_get(aio_loop *lp) {
  struct io_uring_params p;
  const char *env;
  uring *ur;
  int rc, i;
  if (lp->ur || lp->ur_off) return lp->ur;
  lp->ur_off = 1;
  env = getenv("AIOLUA_URING");
  /* valgrind (3.19) does not let other threads run while one waits in
  ** io_uring_enter: a post from a worker thread would never come */
  if ((env && strcmp(env, "0") == 0) || lp->foreign || !ur_kernel_ok() ||
      RUNNING_ON_VALGRIND)
    return NULL;
  if ((ur = calloc(1, sizeof *ur)) == NULL) return NULL;
  memset(&p, 0, sizeof p);
  p.flags = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
  if (io_uring_queue_init_params(UR_ENTRIES, &ur->ring, &p) < 0) {
    free(ur);
    return NULL;
  }
  /* zeroed, so that valgrind sees the kernel's writes as defined bytes */
  ur->bufs = calloc(UR_NBUF, UR_BUFSZ);
  rc = posix_memalign((void **)&ur->br, 4096,
                      UR_NBUF * sizeof(struct io_uring_buf));
  if (rc != 0) ur->br = NULL;
  if (ur->br != NULL && ur->bufs != NULL) {
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof reg);
    reg.ring_addr = (unsigned long)ur->br;
    reg.ring_entries = UR_NBUF;
    reg.bgid = UR_BGID;
    rc = io_uring_register_buf_ring(&ur->ring, &reg, 0);
  } else {
    rc = -ENOMEM;
  }
  if (rc != 0) {
    io_uring_queue_exit(&ur->ring);
    free(ur->br);
    free(ur->bufs);
    free(ur);
    return NULL;
  }
  io_uring_buf_ring_init(ur->br);
  for (i = 0; i < UR_NBUF; i++)
    io_uring_buf_ring_add(ur->br, ur->bufs + (size_t)i * UR_BUFSZ, UR_BUFSZ,
                          (unsigned short)i, io_uring_buf_ring_mask(UR_NBUF),
                          i);
  io_uring_buf_ring_advance(ur->br, UR_NBUF);
  ur->epfd = loop_epoll_fd(lp);
  if (ur->epfd < 0) {
    io_uring_queue_exit(&ur->ring);
    free(ur->br);
    free(ur->bufs);
    free(ur);
    return NULL;
  }
  /* the loop waits in the ring (ur_poll) and polls libev's epoll fd from
  ** there; only an application that polls aio__loop_fd itself needs the
  ** ring's fd in epoll (it is not there otherwise: each completion would
  ** wake the ring's own poll of epoll) */
  ev_io_init(&ur->w, on_ring, ur->ring.ring_fd, EV_READ);
  ur->w.data = lp;
  if (lp->fd_exposed) ur_expose(lp, ur);
  lp->ur = ur;
  lp->ur_off = 0;
  return ur;
}

/* enter what was prepared; also runs the kernel's pending completions */
static void ur_submit(uring *ur) {
  int rc;
  do rc = io_uring_submit_and_get_events(&ur->ring);
  while (rc == -EINTR);
  /* what the kernel did not take (-EBUSY: its completions overflowed)
  ** is entered next time */
  ur->unsubmitted = (int)io_uring_sq_ready(&ur->ring);
}

/* An application polling aio__loop_fd itself blocks outside ur_poll, so
** nothing would enter what a step asked: each request is entered as it
** is made (a system call each, as libev's path makes) */
static void ur_asked(uring *ur) {
  if (ur->eager && ur->unsubmitted) ur_submit(ur);
}

static void ur_enter_asked(aio_loop *lp) {
  if (lp->ur && lp->ur->unsubmitted) ur_submit(lp->ur);
}

static struct io_uring_sqe *ur_sqe(uring *ur) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(&ur->ring);
  if (sqe == NULL) {  /* the submission queue is full: enter it now */
    ur_submit(ur);
    sqe = io_uring_get_sqe(&ur->ring);
  }
  if (sqe) ur->unsubmitted++;
  return sqe;
}

static void ur_arm_recv(aio_bhandle *h) {
  tport *t = &h->u.tr;
  uring *ur = h->lp->ur;
  struct io_uring_sqe *sqe;
  if (t->rarmed || (sqe = ur_sqe(ur)) == NULL) return;
  io_uring_prep_recv_multishot(sqe, t->fd, NULL, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = UR_BGID;
  io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)h | UR_RECV);
  t->rarmed = 1;
  t->rcancel = 0;
  t->ninflight++;
  ur->ninflight++;
  ur_asked(ur);
}

static void ur_cancel_recv(aio_bhandle *h) {
  tport *t = &h->u.tr;
  struct io_uring_sqe *sqe;
  if (!t->rarmed || t->rcancel || (sqe = ur_sqe(h->lp->ur)) == NULL) return;
  io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)h | UR_RECV, 0);
  io_uring_sqe_set_data64(sqe, 0);  /* its own completion says nothing */
  t->rcancel = 1;
  ur_asked(h->lp->ur);
}

/* send what is queued; the queue stays pinned until the completion */
static void ur_send(aio_bhandle *h) {
  tport *t = &h->u.tr;
  uring *ur = h->lp->ur;
  struct io_uring_sqe *sqe = ur_sqe(ur);
  if (sqe == NULL) return;
  io_uring_prep_send(sqe, t->fd, t->wbuf + t->wstart, t->wend - t->wstart,
                     MSG_NOSIGNAL);
  io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)h | UR_SEND);
  t->sending = 1;
  t->wpin = t->wbuf;
  t->ninflight++;
  ur->ninflight++;
  ur_asked(ur);
}

static void ur_reap(aio_loop *lp);

/* A queue past the low-water mark is sent now, as a write without a ring
** would have: the owner may wait on it (drain), and what the socket takes
** at once must not count as queued.  Small writes wait for the step's
** one io_uring_enter. */
static void ur_eager(aio_bhandle *h) {
  tport *t = &h->u.tr;
  uring *ur = h->lp->ur;
  int i;
  for (i = 0; i < 2 && ur->unsubmitted && t->wend - t->wstart > t->lowat &&
              !t->zombie && t->fd >= 0; i++) {
    ur_submit(ur);
    ur_reap(h->lp);
  }
}

static void ur_zombie_free(aio_loop *lp, aio_bhandle *h) {
  aio_bhandle **pp;
  for (pp = &lp->ur->zombies; *pp != NULL; pp = &(*pp)->u.tr.next)
    if (*pp == h) { *pp = h->u.tr.next; break; }
  free(h->u.tr.wbuf);
  free(h->u.tr.wold);
  free(h);
}

static void ur_recv_done(aio_bhandle *h, struct io_uring_cqe *cqe) {
  tport *t = &h->u.tr;
  uring *ur = h->lp->ur;
  int res = cqe->res;
  if (!(cqe->flags & IORING_CQE_F_MORE)) {
    t->rarmed = 0;
    t->rcancel = 0;
  }
  if (cqe->flags & IORING_CQE_F_BUFFER) {
    unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
    char *b = ur->bufs + (size_t)bid * UR_BUFSZ;
    if (res > 0 && !t->zombie && !t->eof) {
      rbuf_pooled(h);
      if (rbuf_room(t, (size_t)res) < 0) res = -ENOMEM;
      else {
        memcpy(t->rbuf + t->rend, b, (size_t)res);
        t->rend += (size_t)res;
      }
    }
    io_uring_buf_ring_add(ur->br, b, UR_BUFSZ, (unsigned short)bid,
                          io_uring_buf_ring_mask(UR_NBUF), 0);
    io_uring_buf_ring_advance(ur->br, 1);
  }
  if (t->zombie || t->eof) return;
  if (res > 0) {
    t->cb(h, AIO_SEV_READ, (long)res, h->data);
  } else if (res == -ENOBUFS || res == -ECANCELED || res == -EINTR ||
             res == -EAGAIN) {
    /* out of lent buffers (they are back now), or stopped: go on if the
    ** owner still reads */
  } else {
    if (t->rend == t->rstart) rbuf_release(h);
    t->eof = 1;
    t->reading = 0;
    if (t->rarmed) ur_cancel_recv(h);
    t->cb(h, AIO_SEV_READ, res, h->data);
    return;
  }
  if (!t->rarmed && t->reading && !t->eof && h->lp != NULL) ur_arm_recv(h);
}

static void ur_send_done(aio_bhandle *h, int res) {
  tport *t = &h->u.tr;
  t->sending = 0;
  t->wpin = NULL;
  free(t->wold);
  t->wold = NULL;
  if (t->zombie) return;
  /* the socket took part of it: the rest */
  if (sent(h, res == -ECANCELED ? -EPIPE : res) && t->fd >= 0) ur_send(h);
}

/* take the completions that have come and hand them to their handles */
static void ur_reap(aio_loop *lp) {
  uring *ur = lp->ur;
  struct io_uring_cqe *cqe;
  if (ur == NULL) return;
  while (io_uring_peek_cqe(&ur->ring, &cqe) == 0) {
    uint64_t ud = cqe->user_data;
    aio_bhandle *h = (aio_bhandle *)(uintptr_t)(ud & ~(uint64_t)3);
    int op = (int)(ud & 3), more = (cqe->flags & IORING_CQE_F_MORE) != 0;
    struct io_uring_cqe c = *cqe;
    io_uring_cqe_seen(&ur->ring, cqe);
    if (h == NULL) {
      if (op == UR_EPOLL) {
        ur->epoll_armed = 0;
        ur->epoll_fired = 1;
      }
      continue;  /* else a cancel's own completion */
    }
    if (op == UR_RECV) ur_recv_done(h, &c);
    else ur_send_done(h, c.res);
    if (!more) {
      ur->ninflight--;
      if (--h->u.tr.ninflight == 0 && h->u.tr.zombie) ur_zombie_free(lp, h);
    }
  }
}

/* a stream handle is closed: its requests end; 1 when the handle must
** wait for their completions (a zombie, freed by ur_reap) */
static int ur_close(aio_bhandle *h) {
  tport *t = &h->u.tr;
  uring *ur;
  struct io_uring_sqe *sqe;
  if (!t->ur || h->lp == NULL || (ur = h->lp->ur) == NULL) return 0;
  if (t->ninflight == 0) return 0;
  if (t->fd >= 0 && (sqe = ur_sqe(ur)) != NULL) {
    io_uring_prep_cancel_fd(sqe, t->fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, 0);
    /* now: the requests hold the socket open until they end */
    ur_submit(ur);
  }
  return 1;
}

/* the loop goes away: every request ends and is waited for, zombies are
** freed, the ring goes */
static void ur_free(aio_loop *lp) {
  uring *ur = lp->ur;
  struct io_uring_sqe *sqe;
  aio_bhandle *h;
  if (ur == NULL) return;
  if (ur->ninflight > 0 && (sqe = ur_sqe(ur)) != NULL) {
    io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
    io_uring_sqe_set_data64(sqe, 0);
  }
  ur_submit(ur);
  while (ur->ninflight > 0) {
    struct io_uring_cqe *cqe;
    uint64_t ud;
    int rc = io_uring_wait_cqe(&ur->ring, &cqe);
    if (rc == -EINTR) continue;
    if (rc < 0) break;
    ud = cqe->user_data;
    h = (aio_bhandle *)(uintptr_t)(ud & ~(uint64_t)3);
    if (h != NULL && !(cqe->flags & IORING_CQE_F_MORE)) {
      ur->ninflight--;
      h->u.tr.ninflight--;
      if ((ud & 3) == UR_SEND) {
        h->u.tr.sending = 0;
        h->u.tr.wpin = NULL;
      } else {
        h->u.tr.rarmed = 0;
      }
    }
    io_uring_cqe_seen(&ur->ring, cqe);
  }
  while ((h = ur->zombies) != NULL) {
    h->u.tr.ninflight = 0;
    ur_zombie_free(lp, h);
  }
  if (ev_is_active(&ur->w)) {
    ev_ref(lp->ev);
    ev_io_stop(lp->ev, &ur->w);
  }
  io_uring_queue_exit(&ur->ring);
  free(ur->br);
  free(ur->bufs);
  free(ur);
  lp->ur = NULL;
}

static void ur_expose(aio_loop *lp, uring *ur) {
  ur->eager = 1;
  ur_asked(ur);
  if (ev_is_active(&ur->w)) return;
  ev_io_start(lp->ev, &ur->w);
  ev_unref(lp->ev);  /* the streams' own state keeps the loop alive */
  lp->evdirty = 1;
}

/* libev runs its pending watchers through here: the ring's wait then
** must not block (they may have made tasks ready) */
static void ur_invoke(struct ev_loop *ev) {
  aio_loop *lp = ev_userdata(ev);
  if (ev_pending_count(ev) > 0) lp->evran = 1;
  ev_invoke_pending(ev);
}

static void ur_evrun(aio_loop *lp) {
  lp->evdirty = 0;
  ev_run(lp->ev, EVRUN_NOWAIT);
}

/* aio__loop_poll with a ring: one io_uring_enter submits what the step
** asked, runs the kernel's completions and waits for the next; libev's
** epoll fd is one of the things it waits for (a poll request), and libev
** runs (without blocking) only when that fired, a watcher was started or
** a child is polled for */
static int ur_poll(aio_loop *lp, double timeout) {
  uring *ur = lp->ur;
  int ran = 0;
  lp->evran = 0;
  if (lp->evdirty || lp->nchildpoll > 0 || ur->epoll_fired) {
    ur->epoll_fired = 0;
    ur_evrun(lp);
    ran = 1;
  }
  if (!ur->epoll_armed) {
    struct io_uring_sqe *sqe = ur_sqe(ur);
    if (sqe != NULL) {
      io_uring_prep_poll_add(sqe, ur->epfd, POLLIN);
      io_uring_sqe_set_data64(sqe, UR_EPOLL);
      ur->epoll_armed = 1;
    }
  }
  if (lp->evran || io_uring_cq_ready(&ur->ring) > 0) timeout = 0;
  if (lp->nchildpoll > 0 && (timeout < 0 || timeout > 0.01)) timeout = 0.01;
  if (timeout == 0) {
    if (ur->unsubmitted ||
        (IO_URING_READ_ONCE(*ur->ring.sq.kflags) & IORING_SQ_TASKRUN))
      ur_submit(ur);
  } else {
    struct __kernel_timespec ts, *tsp = NULL;
    struct io_uring_cqe *cqe;
    if (timeout > 0) {
      /* whole milliseconds, rounded up, as libev's epoll_wait: a wait to
      ** the nanosecond woke just before the timer was due, and again
      ** (200,000 timers: 7,000 waits instead of 700) */
      long long ms = (long long)(timeout * 1e3 + 0.9999);
      ts.tv_sec = ms / 1000;
      ts.tv_nsec = (ms % 1000) * 1000000;
      tsp = &ts;
    }
    /* -ETIME, -EINTR (a signal: libev's handler made epoll ready) */
    io_uring_submit_and_wait_timeout(&ur->ring, &cqe, 1, tsp, NULL);
    ur->unsubmitted = (int)io_uring_sq_ready(&ur->ring);
  }
  ur_reap(lp);
  /* libev runs once a poll, as without a ring (a watcher's callback
  ** that reads stdin's stdio buffer expects one call per step): what
  ** came while it ran waits for the next poll */
  if (ur->epoll_fired && !ran) {
    ur->epoll_fired = 0;
    ur_evrun(lp);
  }
  return 0;
}

#endif

/* a new transport handle around `fd`, linked into the loop's list */
static aio_bhandle *newtport(aio_loop *lp, int kind, int fd, aio_stream_cb cb,
                             void *data) {
  aio_bhandle *h = newhandle(lp, kind, data);
  tport *t;
  if (h == NULL) return NULL;
  t = &h->u.tr;
  t->fd = fd;
  t->cb = cb;
  t->lowat = 16 * 1024;
  ev_io_init(&t->rio, on_tport_read, fd, EV_READ);
  ev_io_init(&t->wio, on_tport_write, fd, EV_WRITE);
  t->next = lp->transports;
  if (t->next) t->next->u.tr.prev = h;
  lp->transports = h;
  return h;
}

static void tport_unlink(aio_bhandle *h) {
  tport *t = &h->u.tr;
  if (h->lp == NULL) return;
  if (t->prev) t->prev->u.tr.next = t->next;
  else h->lp->transports = t->next;
  if (t->next) t->next->u.tr.prev = t->prev;
  t->next = t->prev = NULL;
}

/* stop the watchers and close the fd; the handle stays allocated */
static void tport_shut(aio_bhandle *h) {
  tport *t = &h->u.tr;
  if (h->lp) {
    ev_io_stop(h->lp->ev, &t->rio);
    ev_io_stop(h->lp->ev, &t->wio);
  }
  if (t->fd >= 0) close(t->fd);
  t->fd = -1;
  t->reading = 0;
}

/* A stream's read buffer exists only while it holds unread bytes: once
** emptied it goes back to its loop, whose next read on any stream takes
** it again (LIFO: still in the cache).  An idle connection then costs no
** buffer, and a busy loop no allocation per read.  A buffer grown past
** RBUF_MIN (a large readexactly) is freed instead. */
static void rbuf_release(aio_bhandle *h) {
  tport *t = &h->u.tr;
  aio_loop *lp = h->lp;
  if (t->rbuf == NULL) return;
  if (lp != NULL && t->rcap == RBUF_MIN && lp->nrpool < RPOOL_MAX)
    lp->rpool[lp->nrpool++] = t->rbuf;
  else
    free(t->rbuf);
  t->rbuf = NULL;
  t->rstart = t->rend = t->rcap = 0;
}

/* The buffer is usually gone when bytes come (the owner took everything
** and rbuf_release gave it back): take one from the loop's pool.  1 when
** one was taken (it has RBUF_MIN of room). */
static int rbuf_pooled(aio_bhandle *h) {
  tport *t = &h->u.tr;
  if (t->rbuf != NULL || h->lp->nrpool == 0) return 0;
  t->rbuf = h->lp->rpool[--h->lp->nrpool];
  t->rcap = RBUF_MIN;
  return 1;
}

#ifdef AIO_URING
static int ur_close(aio_bhandle *h);
#endif

/* stop, close and unlink; 1 when requests in the io_uring still name the
** handle: it is then kept as a zombie, freed when they have ended */
static int transport_release(aio_bhandle *h) {
  tport *t = &h->u.tr;
#ifdef AIO_URING
  int zombie = ur_close(h);  /* before the fd closes: cancels by fd */
#else
  int zombie = 0;
#endif
  tport_shut(h);
  if (h->kind == H_STREAM) rbuf_release(h);  /* before the unlink: h->lp */
  tport_unlink(h);
  free(t->rbuf);
  t->rbuf = NULL;
#ifdef AIO_URING
  if (zombie) {
    t->zombie = 1;
    t->next = h->lp->ur->zombies;
    h->lp->ur->zombies = h;
    return 1;
  }
  free(t->wold);
  t->wold = NULL;
#endif
  free(t->wbuf);
  t->wbuf = NULL;
  return zombie;
}

/* the loop goes away: its transports are shut and forgotten; their owners
** still close them (which then only frees).  A detached one has no owner
** left: it is freed here. */
static void transports_orphan(aio_loop *lp) {
  aio_bhandle *h, *next;
  for (h = lp->transports; h != NULL; h = next) {
    next = h->u.tr.next;
    if (h->u.tr.detached) {
      aio__handle_close(h, NULL, NULL);
      continue;
    }
    tport_shut(h);
    h->u.tr.next = h->u.tr.prev = NULL;
    h->lp = NULL;
  }
  lp->transports = NULL;
}

/* set only what is missing of both flags */
static int setnonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return -errno;
  if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
    return -errno;
  fl = fcntl(fd, F_GETFD);
  if (fl < 0) return -errno;
  if (!(fl & FD_CLOEXEC) && fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0)
    return -errno;
  return 0;
}

static void setnodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* ---- streams ---- */

/* a new stream handle on fd; `sock`: 1 a socket, 0 not, -1 ask */
static int stream_wrap(aio_loop *lp, aio_bhandle **out, int fd, int sock,
                       aio_stream_cb cb, void *data) {
  aio_bhandle *h = newtport(lp, H_STREAM, fd, cb, data);
  struct stat st;
  if (h == NULL) { close(fd); return -ENOMEM; }
  if (sock < 0) sock = fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
  h->u.tr.is_sock = sock;
#ifdef AIO_URING
  h->u.tr.ur = h->u.tr.is_sock && ur_get(lp) != NULL;
#endif
  if (!h->u.tr.is_sock) {
    /* write() to a pipe has no MSG_NOSIGNAL: SIGPIPE must not kill us
    ** (DESIGN.md); a handler the embedder installed stays */
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
      signal(SIGPIPE, SIG_IGN);
  }
  *out = h;
  return 0;
}

int aio__stream_open(aio_loop *lp, aio_bhandle **out, int fd,
                     aio_stream_cb cb, void *data) {
  int rc = setnonblock(fd);
  if (rc < 0) { close(fd); return rc; }
  return stream_wrap(lp, out, fd, -1, cb, data);
}

/* accept4 gave it SOCK_NONBLOCK and SOCK_CLOEXEC (on_accept): three
** system calls a connection fewer */
int aio__stream_open_accepted(aio_loop *lp, aio_bhandle **out, int fd,
                              aio_stream_cb cb, void *data) {
  return stream_wrap(lp, out, fd, 1, cb, data);
}

static int newsocket(int af, int type) {
  int fd = socket(af, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  return fd < 0 ? -errno : fd;
}

int aio__stream_connect(aio_loop *lp, aio_bhandle **out, const aio_addr *to,
                        const aio_addr *local, aio_stream_cb cb, void *data) {
  struct sockaddr_storage ss;
  socklen_t len;
  aio_bhandle *h;
  int fd, rc = tosockaddr(to, &ss, &len);
  if (rc < 0) return rc;
  if ((fd = newsocket(ss.ss_family, SOCK_STREAM)) < 0) return fd;
  if (ss.ss_family != AF_UNIX) setnodelay(fd);
  if (local != NULL) {
    struct sockaddr_storage ls;
    socklen_t llen;
    int one = 1;
    if ((rc = tosockaddr(local, &ls, &llen)) < 0) goto fail;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ls, llen) < 0) { rc = -errno; goto fail; }
  }
  if (connect(fd, (struct sockaddr *)&ss, len) < 0 && errno != EINPROGRESS) {
    rc = -errno;
    goto fail;
  }
  h = newtport(lp, H_STREAM, fd, cb, data);
  if (h == NULL) { rc = -ENOMEM; goto fail; }
  h->u.tr.is_sock = 1;
  h->u.tr.connecting = 1;
  { ev_io_start(lp->ev, &h->u.tr.wio); lp->evdirty = 1; }  /* writable: the connect is over */
  *out = h;
  return 0;
fail:
  close(fd);
  return rc;
}

int aio__stream_listen(aio_loop *lp, aio_bhandle **out, const aio_addr *at,
                       int backlog, int flags, aio_stream_cb cb, void *data) {
  struct sockaddr_storage ss;
  socklen_t len;
  aio_bhandle *h;
  int fd, one = 1, rc = tosockaddr(at, &ss, &len);
  if (rc < 0) return rc;
  if ((fd = newsocket(ss.ss_family, SOCK_STREAM)) < 0) return fd;
  if (ss.ss_family == AF_UNIX) {
    struct stat st;  /* a stale socket file from an earlier run goes */
    if (stat(at->host, &st) == 0 && S_ISSOCK(st.st_mode)) unlink(at->host);
  } else {
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (flags & AIO_LISTEN_REUSEPORT)
      if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) {
        rc = -errno;
        goto fail;
      }
    if (ss.ss_family == AF_INET6 && (flags & AIO_LISTEN_V6ONLY))
      setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  }
  if (bind(fd, (struct sockaddr *)&ss, len) < 0 ||
      listen(fd, backlog > 0 ? backlog : 128) < 0) {
    rc = -errno;
    goto fail;
  }
  h = newtport(lp, H_LISTEN, fd, cb, data);
  if (h == NULL) { rc = -ENOMEM; goto fail; }
  h->u.tr.is_sock = 1;
  h->u.tr.nodelay = ss.ss_family != AF_UNIX;
  *out = h;
  return 0;
fail:
  close(fd);
  return rc;
}

int aio__stream_start_read(aio_bhandle *h) {
  tport *t = &h->u.tr;
  if (h->lp == NULL || t->fd < 0) return -EBADF;
  if (t->reading || t->eof) return 0;
  t->reading = 1;
#ifdef AIO_URING
  if (t->ur) {
    ur_arm_recv(h);  /* or, if its cancel is on the way, re-armed then */
    return 0;
  }
#endif
  { ev_io_start(h->lp->ev, &t->rio); h->lp->evdirty = 1; }
  return 0;
}

int aio__stream_stop_read(aio_bhandle *h) {
  tport *t = &h->u.tr;
  if (!t->reading) return 0;
  t->reading = 0;
#ifdef AIO_URING
  if (t->ur) {
    if (h->lp && h->lp->ur) ur_cancel_recv(h);
    return 0;
  }
#endif
  if (h->lp) ev_io_stop(h->lp->ev, &t->rio);
  return 0;
}

char *aio__stream_rbuf(aio_bhandle *h, size_t *len) {
  tport *t = &h->u.tr;
  *len = t->rend - t->rstart;
  if (t->rbuf == NULL) return (char *)"";  /* nothing read yet: NULL + 0 is UB */
  return t->rbuf + t->rstart;
}

void aio__stream_consume(aio_bhandle *h, size_t n) {
  tport *t = &h->u.tr;
  t->rstart += n;
  if (t->rstart >= t->rend) rbuf_release(h);
}

size_t aio__stream_queued(aio_bhandle *h) {
  return h->u.tr.wend - h->u.tr.wstart;
}

void aio__stream_set_lowat(aio_bhandle *h, size_t lowat) {
  h->u.tr.lowat = lowat;
}

aio_loop *aio__handle_loop(aio_bhandle *h) { return h->lp; }

int aio__stream_is_socket(aio_bhandle *h) { return h->u.tr.is_sock; }

static void on_accept(aio_bhandle *h) {
  tport *t = &h->u.tr;
  int i;
  for (i = 0; i < ACCEPT_MAX && t->reading; i++) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int fd = accept4(t->fd, (struct sockaddr *)&ss, &len,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
          errno == ECONNABORTED)
        return;
      t->cb(h, AIO_SEV_ACCEPT, -errno, h->data);
      return;
    }
    if (t->nodelay) setnodelay(fd);
    aio__peer_accepting(&ss, len);
    t->cb(h, AIO_SEV_ACCEPT, fd, h->data);
    aio__peer_accepting(NULL, 0);
  }
}

/* room for at least `need` more bytes at the end of the read buffer */
static int rbuf_room(tport *t, size_t need) {
  size_t used = t->rend - t->rstart;
  if (t->rcap - t->rend >= need) return 0;
  if (t->rstart > 0 && t->rcap - used >= need) {  /* slide to the front */
    memmove(t->rbuf, t->rbuf + t->rstart, used);
    t->rstart = 0;
    t->rend = used;
    return 0;
  } else {
    size_t cap = t->rcap ? t->rcap : RBUF_MIN;
    char *p;
    while (cap - used < need) cap *= 2;
    if (t->rstart > 0) {
      memmove(t->rbuf, t->rbuf + t->rstart, used);
      t->rstart = 0;
      t->rend = used;
    }
    p = realloc(t->rbuf, cap);
    if (p == NULL) return -ENOMEM;
    t->rbuf = p;
    t->rcap = cap;
  }
  return 0;
}


static void on_dgram(aio_bhandle *h);

static void on_tport_read(struct ev_loop *ev, ev_io *w, int revents) {
  aio_bhandle *h = container_of(w, aio_bhandle, u.tr.rio);
  tport *t = &h->u.tr;
  ssize_t n;
  (void)ev; (void)revents;
  if (h->kind != H_STREAM) {
    if (h->kind == H_LISTEN) on_accept(h);
    else on_dgram(h);
    return;
  }
  if (!rbuf_pooled(h) && t->rcap - t->rend < 4096) {
    if (rbuf_room(t, t->rcap ? 4096 : RBUF_MIN) < 0) {
      aio__stream_stop_read(h);
      t->cb(h, AIO_SEV_READ, -ENOMEM, h->data);
      return;
    }
  }
  do {
    n = t->is_sock ? recv(t->fd, t->rbuf + t->rend, t->rcap - t->rend, 0)
                   : read(t->fd, t->rbuf + t->rend, t->rcap - t->rend);
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    t->rend += (size_t)n;
    t->cb(h, AIO_SEV_READ, (long)n, h->data);
    return;
  }
  if (t->rend == 0) rbuf_release(h);  /* nothing came (or the end) */
  if (n == 0) {
    t->eof = 1;
    aio__stream_stop_read(h);
    t->cb(h, AIO_SEV_READ, 0, h->data);
  } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
    int err = -errno;
    t->eof = 1;
    aio__stream_stop_read(h);
    t->cb(h, AIO_SEV_READ, err, h->data);
  }
}

static ssize_t tport_send(tport *t, const char *p, size_t n) {
  ssize_t k;
  do {
    k = t->is_sock ? send(t->fd, p, n, MSG_NOSIGNAL) : write(t->fd, p, n);
  } while (k < 0 && errno == EINTR);
  return k;
}

/* the queue is empty: a pending half-close or close happens now; returns
** 1 when the handle was freed */
static int flushed(aio_bhandle *h) {
  tport *t = &h->u.tr;
  if (t->shut_pending && !t->shut_done) {
    t->shut_pending = 0;
    t->shut_done = 1;
    if (t->is_sock) shutdown(t->fd, SHUT_WR);
    else { /* a pipe: closing the write end is its EOF */ }
  }
  if (t->close_pending) {
    t->cb(h, AIO_SEV_CLOSED, t->werr, h->data);
    aio__handle_close(h, NULL, NULL);
    return 1;
  }
  return 0;
}

/* A send took k bytes of the queue, or failed (k < 0: the error), on
** either path (libev's write watcher, an io_uring completion): the queue,
** a pending half-close or close, and the owner are told.  1 when bytes
** are left to send; 0 when not (the queue is empty or failed, or the
** handle was freed) */
static int sent(aio_bhandle *h, long k) {
  tport *t = &h->u.tr;
  if (k < 0) {
    t->werr = (int)k;
    t->wstart = t->wend = 0;
    if (!t->ur) ev_io_stop(h->lp->ev, &t->wio);
    t->cb(h, AIO_SEV_WRITE, t->werr, h->data);
    if (t->close_pending) flushed(h);
    return 0;
  }
  t->wstart += (size_t)k;
  if (t->wstart == t->wend) {
    t->wstart = t->wend = 0;
    if (!t->ur) ev_io_stop(h->lp->ev, &t->wio);
    if (flushed(h)) return 0;
  }
  if (t->wend - t->wstart <= t->lowat)
    t->cb(h, AIO_SEV_WRITE, 0, h->data);
  return t->wend > t->wstart;
}

static void on_tport_write(struct ev_loop *ev, ev_io *w, int revents) {
  aio_bhandle *h = container_of(w, aio_bhandle, u.tr.wio);
  tport *t = &h->u.tr;
  ssize_t k;
  (void)revents;
  if (t->connecting) {
    int err = 0;
    socklen_t elen = sizeof err;
    t->connecting = 0;
    ev_io_stop(ev, w);
    if (getsockopt(t->fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0) err = errno;
#ifdef AIO_URING
    if (err == 0 && ur_get(h->lp) != NULL) {  /* connected: io_uring now */
      t->ur = 1;
      if (t->reading) {
        ev_io_stop(ev, &t->rio);
        ur_arm_recv(h);
      }
      if (t->wend > t->wstart) ur_send(h);
    }
#endif
    t->cb(h, AIO_SEV_CONNECT, -err, h->data);
    return;
  }
  k = tport_send(t, t->wbuf + t->wstart, t->wend - t->wstart);
  if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
  sent(h, k < 0 ? -errno : (long)k);
}

int aio__stream_write(aio_bhandle *h, const char *p, size_t n) {
  tport *t = &h->u.tr;
  if (t->werr) return t->werr;
  if (h->lp == NULL || t->fd < 0 || t->close_pending) return -EBADF;
  if (t->shut_pending || t->shut_done) return -EPIPE;
  if (n == 0) return 0;
  if (t->wend == t->wstart && !t->connecting && !t->ur) {
    ssize_t k = tport_send(t, p, n);
    if (k < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK) return t->werr = -errno;
      k = 0;
    }
    p += k;
    n -= (size_t)k;
    if (n == 0) return 0;
  }
#ifdef AIO_URING
  if (t->wpin != NULL && t->wpin == t->wbuf && t->wcap - t->wend < n) {
    /* the kernel reads this queue: a new one, the old freed after */
    size_t used = t->wend - t->wstart, cap = t->wcap;
    char *q;
    while (cap - used < n) cap *= 2;
    if ((q = malloc(cap)) == NULL) return -ENOMEM;
    memcpy(q, t->wbuf + t->wstart, used);
    free(t->wold);
    t->wold = t->wbuf;
    t->wbuf = q;
    t->wcap = cap;
    t->wstart = 0;
    t->wend = used;
  }
#endif
  if (t->wcap - t->wend < n) {
    size_t used = t->wend - t->wstart, cap = t->wcap ? t->wcap : 16384;
    char *q;
    if (t->wstart > 0) {
      memmove(t->wbuf, t->wbuf + t->wstart, used);
      t->wstart = 0;
      t->wend = used;
    }
    while (cap - used < n) cap *= 2;
    if (cap != t->wcap) {
      if ((q = realloc(t->wbuf, cap)) == NULL) return -ENOMEM;
      t->wbuf = q;
      t->wcap = cap;
    }
  }
  memcpy(t->wbuf + t->wend, p, n);
  t->wend += n;
#ifdef AIO_URING
  if (t->ur) {
    if (!t->sending && !t->connecting) ur_send(h);
    ur_eager(h);
    return 0;
  }
#endif
  if (!t->connecting) { ev_io_start(h->lp->ev, &t->wio); h->lp->evdirty = 1; }
  return 0;
}

int aio__stream_shutdown(aio_bhandle *h) {
  tport *t = &h->u.tr;
  if (h->lp == NULL || t->fd < 0) return -EBADF;
  if (t->shut_done || t->shut_pending) return 0;
  t->shut_pending = 1;
  if (t->wend == t->wstart) flushed(h);
  return 0;
}

int aio__stream_close_soon(aio_bhandle *h) {
  tport *t = &h->u.tr;
  if (h->lp == NULL || t->fd < 0 || t->werr || t->wend == t->wstart ||
      t->connecting) {
    aio__handle_close(h, NULL, NULL);
    return 1;
  }
  aio__stream_stop_read(h);
  t->close_pending = 1;
  return 0;
}

int aio__stream_read_now(aio_bhandle *h) {
  tport *t = &h->u.tr;
  size_t before = t->rend - t->rstart;  /* the callback consumes nothing */
  if (h->kind != H_STREAM || h->lp == NULL || t->fd < 0 || t->eof ||
      t->connecting || t->close_pending)
    return 0;
  /* a write-only pipe (a child's stdin, seen through writer:reader())
  ** has nothing to read: read() would fail with EBADF, taken as its end */
  if (!t->is_sock && (fcntl(t->fd, F_GETFL) & O_ACCMODE) == O_WRONLY)
    return 0;
#ifdef AIO_URING
  if (t->ur && t->rarmed) {
    /* its recv is in the ring: no recv() beside it (the kernel may run
    ** the ring's at any system call's return, and bytes would cross);
    ** enter the ring, which runs what has come, and take it */
    ur_submit(h->lp->ur);
    ur_reap(h->lp);
    return t->rend - t->rstart > before;
  }
  if (t->ur) ur_reap(h->lp);  /* the last of a cancelled recv first */
  if (t->eof || t->fd < 0) return t->rend - t->rstart > before;
#endif
  on_tport_read(h->lp->ev, &t->rio, EV_READ);
  return t->rend - t->rstart > before;
}

/* a reset leaves an error pending on the socket (POLLERR); poll does not
** take it, as getsockopt(SO_ERROR) or a recv would */
int aio__stream_lost(aio_bhandle *h) {
  struct pollfd p;
  int n;
  if (h->lp == NULL || h->u.tr.fd < 0 || !h->u.tr.is_sock) return 0;
  p.fd = h->u.tr.fd;
  p.events = 0;
  p.revents = 0;
  do n = poll(&p, 1, 0); while (n < 0 && errno == EINTR);
  return n > 0 && (p.revents & POLLERR);
}

static void detached_cb(aio_bhandle *h, int event, long status, void *data) {
  (void)h; (void)event; (void)status; (void)data;
}

/* the callbacks of a detached handle go nowhere; flushed() frees it */
void aio__stream_detach(aio_bhandle *h) {
  tport *t = &h->u.tr;
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
  socklen_t len = sizeof ss;
  int rc;
  if (h->u.tr.fd < 0) return -EBADF;
  memset(&ss, 0, sizeof ss);
  rc = peer ? getpeername(h->u.tr.fd, (struct sockaddr *)&ss, &len)
            : getsockname(h->u.tr.fd, (struct sockaddr *)&ss, &len);
  if (rc < 0) return -errno;
  fromsockaddr(&ss, len, a);
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
  int one = 1, rc, fd;
  if (local) family = local->family;
  if ((fd = newsocket(afof(family), SOCK_DGRAM)) < 0) return fd;
  if (reuse_port &&
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) {
    rc = -errno;
    goto fail;
  }
  if (broadcast &&
      setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof one) < 0) {
    rc = -errno;
    goto fail;
  }
  if (local) {
    struct sockaddr_storage ss;
    socklen_t len;
    if ((rc = tosockaddr(local, &ss, &len)) < 0) goto fail;
    if (bind(fd, (struct sockaddr *)&ss, len) < 0) { rc = -errno; goto fail; }
  }
  h = newtport(lp, H_DGRAM, fd, cb, data);
  if (h == NULL) { rc = -ENOMEM; goto fail; }
  h->u.tr.is_sock = 1;
  *out = h;
  return 0;
fail:
  close(fd);
  return rc;
}

int aio__dgram_connect(aio_bhandle *h, const aio_addr *to) {
  struct sockaddr_storage ss;
  socklen_t len;
  int rc = tosockaddr(to, &ss, &len);
  if (rc < 0) return rc;
  if (h->u.tr.fd < 0) return -EBADF;
  if (connect(h->u.tr.fd, (struct sockaddr *)&ss, len) < 0) return -errno;
  return 0;
}

int aio__dgram_send(aio_bhandle *h, const char *p, size_t n,
                    const aio_addr *to) {
  struct sockaddr_storage ss;
  socklen_t len = 0;
  ssize_t k;
  if (h->u.tr.fd < 0) return -EBADF;
  if (to) {
    int rc = tosockaddr(to, &ss, &len);
    if (rc < 0) return rc;
  }
  do {
    k = to ? sendto(h->u.tr.fd, p, n, MSG_NOSIGNAL, (struct sockaddr *)&ss, len)
           : send(h->u.tr.fd, p, n, MSG_NOSIGNAL);
  } while (k < 0 && errno == EINTR);
  /* a full socket buffer drops the datagram, as the network may */
  if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
  return 0;
}

int aio__dgram_start_recv(aio_bhandle *h) {
  tport *t = &h->u.tr;
  if (h->lp == NULL || t->fd < 0) return -EBADF;
  if (t->rbuf == NULL) {
    if ((t->rbuf = malloc(DGRAM_MAX)) == NULL) return -ENOMEM;
    t->rcap = DGRAM_MAX;
  }
  if (!t->reading) {
    t->reading = 1;
    { ev_io_start(h->lp->ev, &t->rio); h->lp->evdirty = 1; }
  }
  return 0;
}

int aio__dgram_stop_recv(aio_bhandle *h) { return aio__stream_stop_read(h); }

static void on_dgram(aio_bhandle *h) {
  tport *t = &h->u.tr;
  ssize_t n;
  t->fromlen = sizeof t->from;
  do {
    n = recvfrom(t->fd, t->rbuf, t->rcap, 0, (struct sockaddr *)&t->from,
                 &t->fromlen);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
  aio__stream_stop_read(h);
  t->rstart = 0;
  t->rend = n < 0 ? 0 : (size_t)n;
  t->cb(h, AIO_SEV_READ, n < 0 ? -errno : (long)n, h->data);
}

const char *aio__dgram_last(aio_bhandle *h, size_t *len, aio_addr *from) {
  tport *t = &h->u.tr;
  *len = t->rend;
  if (from) fromsockaddr(&t->from, t->fromlen, from);
  return t->rbuf;
}

int aio__dgram_sockname(aio_bhandle *h, aio_addr *a) {
  return namesof(h, a, 0);
}

/* ---- readiness of a descriptor ---- */

static void on_poll(struct ev_loop *ev, ev_io *w, int revents) {
  aio_bhandle *h = container_of(w, aio_bhandle, u.poll.w);
  int events = 0;
  (void)ev;
  if (revents & EV_READ) events |= AIO_POLL_READABLE;
  if (revents & EV_WRITE) events |= AIO_POLL_WRITABLE;
  h->u.poll.cb(h, events, h->data);
}

int aio__poll_start(aio_loop *lp, aio_bhandle **out, int fd, int events,
                    aio_poll_cb cb, void *data) {
  aio_bhandle *h;
  int evs = 0;
  if (fd < 0) return -EBADF;
  if (events & AIO_POLL_READABLE) evs |= EV_READ;
  if (events & AIO_POLL_WRITABLE) evs |= EV_WRITE;
  if (evs == 0) return -EINVAL;
  h = newhandle(lp, H_POLL, data);
  if (h == NULL) return -ENOMEM;
  h->u.poll.cb = cb;
  ev_io_init(&h->u.poll.w, on_poll, fd, evs);
  { ev_io_start(lp->ev, &h->u.poll.w); lp->evdirty = 1; }
  *out = h;
  return 0;
}
