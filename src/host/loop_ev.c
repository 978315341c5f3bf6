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

#include <ev.h>

#include "loop.h"

#define container_of(p, type, member) \
  ((type *)((char *)(p) - offsetof(type, member)))

enum { H_SIGNAL, H_CHILD, H_POLL };

struct aio_loop {
  struct ev_loop *ev;
  ev_timer deadline;   /* bounds one poll */
  ev_async wakeup;     /* aio__loop_wakeup */
  aio_wakeup_cb wakeup_cb;
  void *wakeup_data;
  int is_default;
};

struct aio_bhandle {
  int kind;
  int unref;           /* aio__handle_ref(h, 0) was called */
  aio_loop *lp;
  void *data;
  union {
    struct { ev_signal w; aio_signal_cb cb; } sig;
    struct { ev_child w; aio_child_cb cb; } child;
    struct { ev_io w; aio_poll_cb cb; } poll;
  } u;
};

/* libev's default loop is the only one that may watch children; the first
** loop made in the process takes it, later ones get a loop of their own */
static int default_taken;

const char *aio__backend_name(void) { return "libev"; }

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

static void on_wakeup(struct ev_loop *ev, ev_async *w, int revents) {
  aio_loop *lp = container_of(w, aio_loop, wakeup);
  (void)ev; (void)revents;
  if (lp->wakeup_cb) lp->wakeup_cb(lp->wakeup_data);
}

aio_loop *aio__loop_new(int *err) {
  aio_loop *lp = calloc(1, sizeof *lp);
  if (lp == NULL) { *err = -ENOMEM; return NULL; }
  if (!default_taken) {
    lp->ev = ev_default_loop(EVFLAG_AUTO | EVFLAG_NOENV);
    lp->is_default = lp->ev != NULL;
  }
  if (lp->ev == NULL) lp->ev = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOENV);
  if (lp->ev == NULL) { free(lp); *err = -ENOMEM; return NULL; }
  if (lp->is_default) default_taken = 1;
  ev_timer_init(&lp->deadline, on_deadline, 0., 0.);
  ev_async_init(&lp->wakeup, on_wakeup);
  ev_async_start(lp->ev, &lp->wakeup);
  ev_unref(lp->ev);  /* the wake-up alone does not keep the loop alive */
  return lp;
}

void aio__loop_free(aio_loop *lp) {
  if (lp == NULL) return;
  ev_ref(lp->ev);
  ev_async_stop(lp->ev, &lp->wakeup);
  ev_timer_stop(lp->ev, &lp->deadline);
  ev_loop_destroy(lp->ev);
  if (lp->is_default) default_taken = 0;
  free(lp);
}

int aio__loop_poll(aio_loop *lp, double timeout) {
  if (timeout == 0) {
    ev_run(lp->ev, EVRUN_NOWAIT);
    return 0;
  }
  /* EVRUN_ONCE does not block without an active, referenced watcher, so
  ** the deadline timer (referenced) makes it wait for `timeout`; with no
  ** limit the wake-up watcher is referenced for the duration instead */
  if (timeout > 0) {
    ev_timer_set(&lp->deadline, timeout, 0.);
    ev_timer_start(lp->ev, &lp->deadline);
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

void aio__loop_wakeup(aio_loop *lp) { ev_async_send(lp->ev, &lp->wakeup); }

/* ---- handles ---- */

static aio_bhandle *newhandle(aio_loop *lp, int kind, void *data) {
  aio_bhandle *h = calloc(1, sizeof *h);
  if (h == NULL) return NULL;
  h->kind = kind;
  h->lp = lp;
  h->data = data;
  return h;
}

void aio__handle_close(aio_bhandle *h, aio_close_cb cb, void *data) {
  if (h->unref) ev_ref(h->lp->ev);  /* libev: ref again before stopping */
  switch (h->kind) {
    case H_SIGNAL:
      aio__signal_async(h, NULL, NULL);
      ev_signal_stop(h->lp->ev, &h->u.sig.w);
      break;
    case H_CHILD: ev_child_stop(h->lp->ev, &h->u.child.w); break;
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

/* ---- signals ---- */

static void on_signal(struct ev_loop *ev, ev_signal *w, int revents) {
  aio_bhandle *h = container_of(w, aio_bhandle, u.sig.w);
  (void)ev; (void)revents;
  h->u.sig.cb(h, w->signum, h->data);
}

int aio__signal_start(aio_loop *lp, aio_bhandle **out, int signum,
                      aio_signal_cb cb, void *data) {
  aio_bhandle *h;
  if (signum <= 0 || signum >= NSIG) return -EINVAL;
  h = newhandle(lp, H_SIGNAL, data);
  if (h == NULL) return -ENOMEM;
  h->u.sig.cb = cb;
  ev_signal_init(&h->u.sig.w, on_signal, signum);
  ev_signal_start(lp->ev, &h->u.sig.w);
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
    if (async_sig[signum].fn == NULL) return 0;
    async_sig[signum].fn = NULL;
    if (sigaction(signum, &async_sig[signum].ev, NULL) != 0) return -errno;
    return 0;
  }
  if (async_sig[signum].fn == NULL &&
      sigaction(signum, NULL, &async_sig[signum].ev) != 0)
    return -errno;
  async_sig[signum].data = data;
  async_sig[signum].fn = fn;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = async_handler;
  sigfillset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  if (sigaction(signum, &sa, NULL) != 0) {
    async_sig[signum].fn = NULL;
    return -errno;
  }
  return 0;
}

/* ---- child processes ---- */

static void on_child(struct ev_loop *ev, ev_child *w, int revents) {
  aio_bhandle *h = container_of(w, aio_bhandle, u.child.w);
  (void)revents;
  if (h->unref) { ev_ref(ev); h->unref = 0; }
  ev_child_stop(ev, w);  /* one exit per child */
  h->u.child.cb(h, w->rpid, w->rstatus, h->data);
}

int aio__child_start(aio_loop *lp, aio_bhandle **out, int pid,
                     aio_child_cb cb, void *data) {
  aio_bhandle *h;
  if (!lp->is_default) return -ENOTSUP;
  h = newhandle(lp, H_CHILD, data);
  if (h == NULL) return -ENOMEM;
  h->u.child.cb = cb;
  ev_child_init(&h->u.child.w, on_child, pid, 0);
  ev_child_start(lp->ev, &h->u.child.w);
  *out = h;
  return 0;
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
  ev_io_start(lp->ev, &h->u.poll.w);
  *out = h;
  return 0;
}
