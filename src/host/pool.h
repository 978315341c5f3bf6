/*
** pool.h: the worker thread pool (internal), shared by every loop in the
** process, as libuv's threadpool.  A job is an aio_work embedded in the
** caller's request: work(w) runs on a worker thread, then done(w, status)
** runs on the loop's thread (through the thread-safe post), exactly once,
** never inside aio__pool_submit or aio__pool_cancel.  status 0: work ran;
** -ECANCELED: it never ran (cancelled while queued, or its loop closed).
**
** Workers start on demand, up to the pool size (AIOLUA_THREADS, default
** 4, or aio__pool_set_size).  A loop that used the pool keeps its workers
** alive; when the last such loop closes they are joined, so nothing is
** left behind.  Closing a loop drops its queued jobs (done with
** -ECANCELED), sets `interrupted` on its running ones and waits for them:
** a long work function may poll aio__pool_interrupted() and stop early.
**
** All functions but aio__pool_interrupted run on a loop's thread.
*/
#ifndef AIO_POOL_H
#define AIO_POOL_H

typedef struct aio_sched aio_sched;
typedef struct aio_work aio_work;

typedef void (*aio_work_fn)(aio_work *w);
typedef void (*aio_done_fn)(aio_work *w, int status);

struct aio_work {
  aio_work *prev, *next;      /* private to pool.c */
  aio_sched *s;
  aio_work_fn work;
  aio_done_fn done;
  int state;                  /* private to pool.c */
  int status;                 /* passed to done */
  volatile int interrupted;   /* the loop is closing: stop if you can */
};

/* queue w; 0, or a negative code (nothing queued, done is not called) */
int aio__pool_submit(aio_sched *s, aio_work *w, aio_work_fn work,
                     aio_done_fn done);
/* 0 when w was still queued: it will not run and done(w, -ECANCELED)
** follows; -EBUSY when it runs or has run already */
int aio__pool_cancel(aio_work *w);
/* on a worker: has the job's loop asked it to stop? */
int aio__pool_interrupted(aio_work *w);
/* at a loop's close (sched.c): drop, interrupt and wait as said above */
void aio__pool_close_loop(aio_sched *s);
/* the size: at least 1, at most AIO_POOL_MAX; a smaller size lets idle
** workers beyond it go */
#define AIO_POOL_MAX 128
int aio__pool_set_size(int n);
int aio__pool_size(void);

#endif
