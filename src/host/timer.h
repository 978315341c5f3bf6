/*
** timer.h: the scheduler's timers, outside the backend (loop.h), so a
** backend only has to wait "at most so long".  Timers are embedded in
** their owners (a task's sleep, a call_later handle) and come out ordered
** by deadline, then by arming order.  A 4-ary min-heap orders them; each
** slot keeps a copy of its deadline, so sifting compares without touching
** the timers themselves.  In front of the heap, a wheel of buckets
** AIO_WHEEL_TICK seconds wide holds the timers of the next few seconds,
** unsorted: only when its time is the earliest is a bucket sorted into a
** run, from which its timers are taken in order beside the heap's, so
** the heap stays small and nothing is written to the timers that fire
** later.  See timer.c.
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
  uint32_t idx;       /* where it is + 1 (AIO_IN_WHEEL: in its bucket);
                      ** 0 while not armed */
} aio_timer;

#define AIO_HEAP_MAX ((1u << 28) - 2)  /* armed timers at most */
#define AIO_IN_WHEEL 0x80000000u
#define AIO_IN_RUN   0x40000000u

/* the wheel: AIO_WHEEL_N buckets of AIO_WHEEL_TICK s (a power of two, so
** a deadline's bucket is exact), about 4 s in all */
#define AIO_WHEEL_TPS 256.0          /* buckets per second */
#define AIO_WHEEL_TICK (1.0 / AIO_WHEEL_TPS)
#define AIO_WHEEL_N 1024

typedef struct aio_heap_slot {
  double when;
  aio_timer *t;
} aio_heap_slot;

typedef struct aio_bucket {
  aio_heap_slot *v;
  uint32_t n, cap;
} aio_bucket;

typedef struct aio_heap {
  aio_heap_slot *v;     /* the heap */
  uint32_t n, cap;
  uint32_t seq;
  uint32_t nwheel;      /* timers in the wheel's buckets */
  aio_heap_slot *run;   /* a bucket sorted, taken from rpos on; a removed
                        ** timer's slot has t NULL */
  uint32_t rpos, rn, rcap;
  uint32_t nrun;        /* timers in the run */
  aio_bucket *wheel;    /* AIO_WHEEL_N buckets, made on first use */
  int64_t base;         /* the wheel holds ticks base .. base+N-1 */
  uint64_t full[AIO_WHEEL_N / 64];  /* which buckets hold timers */
} aio_heap;

void aio__heap_free(aio_heap *hp);
/* arm (or re-arm) t at `when`; 0, or -ENOMEM */
int aio__heap_add(aio_heap *hp, aio_timer *t, double when);
void aio__heap_remove(aio_heap *hp, aio_timer *t);
/* the earliest timer, or NULL (a bucket may move into the heap) */
aio_timer *aio__heap_top(aio_heap *hp);
/* the earliest timer if its deadline is at most `now`, disarmed; else
** NULL */
aio_timer *aio__heap_pop(aio_heap *hp, double now);
/* add `shift` to every deadline (the loop's clock changed base) */
void aio__heap_shift(aio_heap *hp, double shift);
/* armed timers */
static inline uint32_t aio__heap_count(const aio_heap *hp) {
  return hp->n + hp->nwheel + hp->nrun;
}
static inline int aio__timer_armed(const aio_timer *t) { return t->idx != 0; }

#endif
