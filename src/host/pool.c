/*
** pool.c: the worker thread pool (see pool.h).  One mutex guards the
** queue, the list of running jobs and the thread slots.  A finished job is
** posted to its loop while the mutex is held, so a loop that waits in
** aio__pool_close_loop for its running jobs knows, once they are gone, that
** every completion is already in its post queue (which the close runs).
*/
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "pool.h"
#include "sched.h"

#define DEFAULT_SIZE 4

enum { W_IDLE, W_QUEUED, W_RUNNING, W_DONE };
enum { SLOT_FREE, SLOT_LIVE, SLOT_EXITED };

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_cv = PTHREAD_COND_INITIALIZER;  /* for workers */
static pthread_cond_t done_cv = PTHREAD_COND_INITIALIZER;  /* for closers */
static aio_work queue = { &queue, &queue, NULL, NULL, NULL, 0, 0, 0 };
static aio_work running = { &running, &running, NULL, NULL, NULL, 0, 0, 0 };
static struct { pthread_t th; int state; } slots[AIO_POOL_MAX];
static int size;        /* 0 until first used: then AIOLUA_THREADS or 4 */
static int nlive;       /* workers alive */
static int nidle;       /* of which waiting for work */
static int nusers;      /* open loops that used the pool */
static int quit;        /* the last user closed: every worker goes */

static void link_tail(aio_work *head, aio_work *w) {
  w->next = head;
  w->prev = head->prev;
  head->prev->next = w;
  head->prev = w;
}

static void unlink_work(aio_work *w) {
  w->prev->next = w->next;
  w->next->prev = w->prev;
  w->prev = w->next = NULL;
}

static void init_size(void) {
  const char *e;
  if (size > 0) return;
  size = DEFAULT_SIZE;
  e = getenv("AIOLUA_THREADS");
  if (e != NULL) {
    int n = atoi(e);
    if (n >= 1) size = n > AIO_POOL_MAX ? AIO_POOL_MAX : n;
  }
}

/* on the loop's thread: hand a finished job to its owner */
static void on_done(void *owner, void *ud) {
  aio_work *w = ud;
  (void)owner;
  w->s->nwork--;
  w->done(w, w->status);
}

static void post_done(aio_work *w) {
  /* only out of memory makes a post fail here: the loop is open, as its
  ** close waits for this job first */
  while (aio__sched_post(w->s, on_done, w) == -ENOMEM) {
    pthread_mutex_unlock(&mu);
    usleep(1000);
    pthread_mutex_lock(&mu);
  }
}

static void *worker(void *arg) {
  int slot = (int)(intptr_t)arg;
  aio_work *w;
  pthread_mutex_lock(&mu);
  for (;;) {
    nidle++;
    while (queue.next == &queue && !quit && nlive <= size)
      pthread_cond_wait(&work_cv, &mu);
    nidle--;
    if (quit || (queue.next == &queue && nlive > size)) break;
    w = queue.next;
    unlink_work(w);
    w->state = W_RUNNING;
    link_tail(&running, w);
    pthread_mutex_unlock(&mu);
    w->work(w);
    pthread_mutex_lock(&mu);
    unlink_work(w);
    w->state = W_DONE;
    w->status = 0;
    post_done(w);
    pthread_cond_broadcast(&done_cv);
  }
  nlive--;
  slots[slot].state = SLOT_EXITED;
  pthread_cond_broadcast(&done_cv);
  pthread_mutex_unlock(&mu);
  return NULL;
}

/* join the workers that left (size lowered); with mu held */
static void reap(void) {
  int i;
  for (i = 0; i < AIO_POOL_MAX; i++) {
    if (slots[i].state != SLOT_EXITED) continue;
    pthread_join(slots[i].th, NULL);  /* it has returned or is about to */
    slots[i].state = SLOT_FREE;
  }
}

/* a new worker, with mu held; signals stay with the loop threads */
static int spawn_worker(void) {
#ifndef _WIN32
  sigset_t all, old;
#endif
  int i, rc;
  for (i = 0; i < AIO_POOL_MAX && slots[i].state != SLOT_FREE; i++) {}
  if (i == AIO_POOL_MAX) return -EAGAIN;
#ifdef _WIN32
  rc = pthread_create(&slots[i].th, NULL, worker, (void *)(intptr_t)i);
#else
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  rc = pthread_create(&slots[i].th, NULL, worker, (void *)(intptr_t)i);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
#endif
  if (rc != 0) return -rc;
  slots[i].state = SLOT_LIVE;
  nlive++;
  return 0;
}

int aio__pool_submit(aio_sched *s, aio_work *w, aio_work_fn work,
                     aio_done_fn done) {
  int rc = 0;
  if (s == NULL || s->closed) return -EINVAL;
  pthread_mutex_lock(&mu);
  while (quit) pthread_cond_wait(&done_cv, &mu);  /* another loop joins */
  init_size();
  reap();
  if (nidle == 0 && nlive < size) {
    rc = spawn_worker();
    if (rc != 0 && nlive > 0) rc = 0;  /* the others will get to it */
  }
  if (rc == 0) {
    w->s = s;
    w->work = work;
    w->done = done;
    w->status = 0;
    w->interrupted = 0;
    w->state = W_QUEUED;
    link_tail(&queue, w);
    if (!s->pool_user) {
      s->pool_user = 1;
      nusers++;
    }
    s->nwork++;
    pthread_cond_signal(&work_cv);
  }
  pthread_mutex_unlock(&mu);
  return rc;
}

int aio__pool_cancel(aio_work *w) {
  int rc = -EBUSY;
  pthread_mutex_lock(&mu);
  if (w->state == W_QUEUED) {
    unlink_work(w);
    w->state = W_DONE;
    w->status = -ECANCELED;
    post_done(w);
    rc = 0;
  }
  pthread_mutex_unlock(&mu);
  return rc;
}

int aio__pool_interrupted(aio_work *w) {
  return __atomic_load_n(&w->interrupted, __ATOMIC_RELAXED);
}

static int runs_for(aio_sched *s) {
  aio_work *w;
  for (w = running.next; w != &running; w = w->next)
    if (w->s == s) return 1;
  return 0;
}

void aio__pool_close_loop(aio_sched *s) {
  aio_work dropped = { &dropped, &dropped, NULL, NULL, NULL, 0, 0, 0 };
  aio_work *w, *next;
  pthread_t th[AIO_POOL_MAX];
  int i, njoin = 0, last = 0;
  if (!s->pool_user) return;
  pthread_mutex_lock(&mu);
  for (w = queue.next; w != &queue; w = next) {
    next = w->next;
    if (w->s != s) continue;
    unlink_work(w);
    w->state = W_DONE;
    link_tail(&dropped, w);
  }
  for (w = running.next; w != &running; w = w->next)
    if (w->s == s) __atomic_store_n(&w->interrupted, 1, __ATOMIC_RELAXED);
  while (runs_for(s)) pthread_cond_wait(&done_cv, &mu);
  s->pool_user = 0;
  if (--nusers == 0) {
    /* the workers only leave: no job of any loop is left to them */
    quit = last = 1;
    pthread_cond_broadcast(&work_cv);
    for (i = 0; i < AIO_POOL_MAX; i++)
      if (slots[i].state != SLOT_FREE) th[njoin++] = slots[i].th;
  }
  pthread_mutex_unlock(&mu);
  for (i = 0; i < njoin; i++) pthread_join(th[i], NULL);
  if (last) {
    pthread_mutex_lock(&mu);
    for (i = 0; i < AIO_POOL_MAX; i++) slots[i].state = SLOT_FREE;
    quit = 0;
    pthread_cond_broadcast(&done_cv);
    pthread_mutex_unlock(&mu);
  }
  for (w = dropped.next; w != &dropped; w = next) {
    next = w->next;
    unlink_work(w);
    s->nwork--;
    w->done(w, -ECANCELED);
  }
}

int aio__pool_set_size(int n) {
  if (n < 1 || n > AIO_POOL_MAX) return -EINVAL;
  pthread_mutex_lock(&mu);
  size = n;
  pthread_cond_broadcast(&work_cv);  /* idle ones beyond it leave */
  pthread_mutex_unlock(&mu);
  return 0;
}

int aio__pool_size(void) {
  int n;
  pthread_mutex_lock(&mu);
  init_size();
  n = size;
  pthread_mutex_unlock(&mu);
  return n;
}
