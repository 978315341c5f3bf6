/*
** timer.h: the scheduler's timer heap, outside the backend (loop.h), so a
** backend only has to wait "at most so long".  A 4-ary min-heap of timers
** embedded in their owners (a task's sleep, a call_later handle), ordered
** by deadline, then by arming order.  Each slot keeps a copy of its
** deadline, so sifting compares without touching the timers themselves.
*/
#ifndef AIO_TIMER_H
#define AIO_TIMER_H

#include <stdint.h>

/* 16 bytes: one is embedded in every task.  idx is a word of its own:
** sifting rewrites it in every timer it moves, and storing a whole word
** does not first wait to read the owner's cache line (a bit-field does) */
typedef struct aio_timer {
  double when;        /* deadline on the loop clock */
  uint32_t seq : 28;  /* arming order, breaks ties (compared modulo 2^28) */
  uint32_t kind : 4;  /* which owner embeds it (sched.h) */
  uint32_t idx;       /* position in the heap + 1; 0 while not armed */
} aio_timer;

#define AIO_HEAP_MAX ((1u << 28) - 2)  /* armed timers at most */

typedef struct aio_heap_slot {
  double when;
  aio_timer *t;
} aio_heap_slot;

typedef struct aio_heap {
  aio_heap_slot *v;
  uint32_t n, cap;
  uint32_t seq;
} aio_heap;

void aio__heap_free(aio_heap *hp);
/* arm (or re-arm) t at `when`; 0, or -ENOMEM */
int aio__heap_add(aio_heap *hp, aio_timer *t, double when);
void aio__heap_remove(aio_heap *hp, aio_timer *t);
/* the earliest timer, or NULL */
static inline aio_timer *aio__heap_top(const aio_heap *hp) {
  return hp->n ? hp->v[0].t : NULL;
}
static inline int aio__timer_armed(const aio_timer *t) { return t->idx != 0; }

#endif
