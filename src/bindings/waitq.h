/*
** waitq.h: FIFO lists of parked tasks (waitq.c), shared by _aio.waitq and
** the C queue (queue.c).  Internal to the bindings.
*/
#ifndef AIO_WAITQ_H
#define AIO_WAITQ_H

#include "sched.h"

typedef struct aio_waitq_t aio_waitq_t;

/* runs in the continuation of a task that was woken but is cancelled
** before it ran: the wake-up it lost can be handed on */
typedef void (*aio_wq_lost)(lua_State *L, aio_waitq_t *q);

struct aio_waitq_t {
  aio_waiter waiters;   /* parked tasks, in arrival order */
  int nparked;
  int npending;         /* woken, not resumed yet */
  aio_wq_lost lost;     /* may be NULL */
  const char *name;     /* for errors and dump_tasks; static or anchored */
};

void aio__wq_init(aio_waitq_t *q, const char *name, aio_wq_lost lost);
/* park the current task t (from aio__wait_begin) on q; k(L, status, ctx)
** runs when it wakes, with ctx = t; it must call aio__wq_resumed first */
int aio__wq_park(lua_State *L, aio_task *t, aio_waitq_t *q, lua_KFunction k);
/* in the continuation: bookkeeping, and q->lost if a wake-up was lost;
** then the caller calls aio__wait_end (which raises a cancel) */
void aio__wq_resumed(lua_State *L, aio_task *t);
/* wake up to n parked tasks, first come first; returns how many */
int aio__wq_wake(aio_waitq_t *q, lua_Integer n);

#endif
