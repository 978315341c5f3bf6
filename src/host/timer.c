/*
** timer.c: the scheduler's timers (see timer.h).  A 4-ary min-heap, each
** timer knowing its slot, so removal is O(log n) without a search; slots
** carry the deadline so comparisons stay inside the heap array.
**
** In front of it, a wheel: AIO_WHEEL_N buckets, one per AIO_WHEEL_TICK of
** the clock, covering ticks base .. base+N-1.  A timer due in that span
** goes into its bucket (an unsorted array, O(1) in and out); one outside it
** into the heap.  When nothing in the heap is due before a bucket's start,
** the bucket is sorted into the run: an array the timers are taken from in
** order, its earliest compared with the heap's top, so the earliest timer
** is always one of those two.  A timer taken out of the run early (a
** cancelled sleep) leaves a hole.  Why: with 200,000 tasks asleep, a heap
** of all of them rewrote the slot index of about eight timers per removal,
** each in a task not touched for a second (a cache miss each); now the
** only write to a timer is the move out of its bucket, just before its
** task runs anyway.  And a bucket of 800 timers (200,000 due within a
** second) sorted once costs about half the instructions of sifting each
** into and out of a heap (callgrind: about 280 a timer against 600).  (Linux and Kafka use wheels for the same reason;
** libuv and asyncio keep one heap.)
*/
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "timer.h"

#define D 4  /* children per node: a shallower heap, fewer cache misses */
#define N AIO_WHEEL_N
#define WORDS (N / 64)
#define KEEP 64  /* a bucket keeps this much room when it empties */
/* deadlines beyond this (or not finite) skip the wheel: ticks fit int64 */
#define TICKABLE(x) ((x) > -1e12 && (x) < 1e12)

/* earlier deadline first; on a tie, armed first (sequence numbers wrap:
** two timers armed fewer than 2^27 arms apart compare right) */
static int less(const aio_heap_slot *a, const aio_heap_slot *b) {
  return a->when < b->when ||
         (a->when == b->when &&
          (int32_t)((uint32_t)(a->t->seq - b->t->seq) << 4) < 0);
}

static void place(aio_heap *hp, uint32_t i, aio_heap_slot s) {
  hp->v[i] = s;
  s.t->idx = i + 1;
}

static void up(aio_heap *hp, uint32_t i) {
  aio_heap_slot s = hp->v[i];
  while (i > 0) {
    uint32_t p = (i - 1) / D;
    if (!less(&s, &hp->v[p])) break;
    place(hp, i, hp->v[p]);
    i = p;
  }
  place(hp, i, s);
}

static void down(aio_heap *hp, uint32_t i) {
  aio_heap_slot s = hp->v[i];
  for (;;) {
    uint32_t c = D * i + 1, best, k, end;
    if (c >= hp->n) break;
    best = c;
    end = c + D < hp->n ? c + D : hp->n;
    for (k = c + 1; k < end; k++)
      if (less(&hp->v[k], &hp->v[best])) best = k;
    if (!less(&hp->v[best], &s)) break;
    place(hp, i, hp->v[best]);
    i = best;
  }
  place(hp, i, s);
}

/* room for one more slot in *v (n in use of *cap): 0, or -ENOMEM */
static int room(aio_heap_slot **v, uint32_t n, uint32_t *cap,
                uint32_t first) {
  uint32_t c;
  aio_heap_slot *nv;
  if (n < *cap) return 0;
  c = *cap ? *cap * 2 : first;
  if ((nv = realloc(*v, c * sizeof *nv)) == NULL) return -ENOMEM;
  *v = nv;
  *cap = c;
  return 0;
}

/* the wheel's tick of a deadline: exact, the tick being a power of two */
static int64_t tick_of(double when) {
  return (int64_t)floor(when * AIO_WHEEL_TPS);
}

static void mark(aio_heap *hp, int64_t tick, int full) {
  uint32_t slot = (uint32_t)tick & (N - 1);
  uint64_t bit = (uint64_t)1 << (slot % 64);
  if (full) hp->full[slot / 64] |= bit;
  else hp->full[slot / 64] &= ~bit;
}

/* the earliest tick whose bucket holds timers (there is one) */
static int64_t first_full(const aio_heap *hp) {
  uint32_t s0 = (uint32_t)hp->base & (N - 1), w0 = s0 / 64, j;
  for (j = 0; j <= WORDS; j++) {
    uint32_t w = (w0 + j) % WORDS;
    uint64_t m = hp->full[w];
    if (j == 0) m &= ~(uint64_t)0 << (s0 % 64);
    else if (j == WORDS) m &= ~(~(uint64_t)0 << (s0 % 64));
    if (m) {
      uint32_t slot = w * 64 + (uint32_t)__builtin_ctzll(m);
      return hp->base + ((slot - s0) & (N - 1));
    }
  }
  return hp->base;  /* not reached while nwheel > 0 */
}

/* the bucket of `tick` has handed its timers on: it empties, and keeps
** no large array */
static void bucket_emptied(aio_heap *hp, aio_bucket *b, int64_t tick) {
  hp->nwheel -= b->n;
  b->n = 0;
  if (b->cap > KEEP) {
    free(b->v);
    b->v = NULL;
    b->cap = 0;
  }
  mark(hp, tick, 0);
}

/* move the bucket of `tick` into the heap (room was reserved by add) */
static void migrate_heap(aio_heap *hp, int64_t tick) {
  aio_bucket *b = &hp->wheel[(uint32_t)tick & (N - 1)];
  uint32_t i;
  for (i = 0; i < b->n; i++) {
    if (i + 8 < b->n) __builtin_prefetch(b->v[i + 8].t, 1);
    hp->v[hp->n] = b->v[i];
    up(hp, hp->n++);
  }
  bucket_emptied(hp, b, tick);
}

/* sort a[0..n) by less(), with tmp[0..n) to merge into: insertion sorts
** of 8, then merges; returns whichever of the two holds the result */
static aio_heap_slot *sort_slots(aio_heap_slot *a, aio_heap_slot *tmp,
                                 uint32_t n) {
  aio_heap_slot *src = a, *dst = tmp, *sw;
  uint32_t i, j, w;
  for (i = 0; i < n; i += 8) {
    uint32_t end = i + 8 < n ? i + 8 : n;
    for (j = i + 1; j < end; j++) {
      aio_heap_slot x = a[j];
      uint32_t k = j;
      for (; k > i && less(&x, &a[k - 1]); k--) a[k] = a[k - 1];
      a[k] = x;
    }
  }
  for (w = 8; w < n; w *= 2) {
    for (i = 0; i < n; i += 2 * w) {
      uint32_t mid = i + w < n ? i + w : n, end = i + 2 * w < n ? i + 2 * w : n;
      uint32_t l = i, r = mid, o = i;
      while (l < mid && r < end)
        dst[o++] = less(&src[r], &src[l]) ? src[r++] : src[l++];
      while (l < mid) dst[o++] = src[l++];
      while (r < end) dst[o++] = src[r++];
    }
    sw = src;
    src = dst;
    dst = sw;
  }
  return src;
}

/* move the bucket of `tick` into the run, which is empty, sorted; into
** the heap if there is no memory for the run */
static void migrate(aio_heap *hp, int64_t tick) {
  aio_bucket *b = &hp->wheel[(uint32_t)tick & (N - 1)];
  aio_heap_slot *sorted;
  uint32_t i, n = b->n;
  if (hp->nrun != 0 || n < 2) {
    migrate_heap(hp, tick);
    return;
  }
  if (hp->rcap < n) {
    uint32_t c = hp->rcap ? hp->rcap : KEEP;
    while (c < n) c *= 2;
    free(hp->run);  /* holds nothing: nrun is 0 */
    hp->rcap = 0;
    if ((hp->run = malloc(c * sizeof *hp->run)) == NULL) {
      migrate_heap(hp, tick);
      return;
    }
    hp->rcap = c;
  }
  sorted = sort_slots(b->v, hp->run, n);
  if (sorted != hp->run) memcpy(hp->run, sorted, n * sizeof *sorted);
  for (i = 0; i < n; i++) {
    if (i + 8 < n) __builtin_prefetch(hp->run[i + 8].t, 1);
    hp->run[i].t->idx = AIO_IN_RUN | (i + 1);
  }
  hp->rpos = 0;
  hp->rn = hp->nrun = n;
  bucket_emptied(hp, b, tick);
}

/* the run is empty: a large one's array goes, as a bucket's does */
static void run_reset(aio_heap *hp) {
  hp->rpos = hp->rn = 0;
  if (hp->rcap > 16 * KEEP) {
    free(hp->run);
    hp->run = NULL;
    hp->rcap = 0;
  }
}

/* the run's earliest timer, or NULL */
static aio_heap_slot *run_first(aio_heap *hp) {
  if (hp->nrun == 0) return NULL;
  while (hp->run[hp->rpos].t == NULL) hp->rpos++;  /* holes */
  return &hp->run[hp->rpos];
}

/* the earliest timer's slot, of the heap's top and the run's first */
static aio_heap_slot *first(aio_heap *hp) {
  aio_heap_slot *r = run_first(hp);
  if (hp->n == 0) return r;
  if (r == NULL || less(&hp->v[0], r)) return &hp->v[0];
  return r;
}

/* move buckets into the run (or the heap) until the earliest timer is
** the heap's top or the run's first */
static void settle(aio_heap *hp) {
  while (hp->nwheel) {
    int64_t k = first_full(hp);
    aio_heap_slot *f = first(hp);
    if (f != NULL && f->when < (double)k * AIO_WHEEL_TICK) return;
    migrate(hp, k);
  }
}

/* the clock reads `now` and nothing more is due: the span starts at the
** clock's tick, unless a bucket before it still holds timers (due later
** in that tick).  It never moves back while buckets hold timers, so they
** all stay inside it. */
static void follow(aio_heap *hp, double now) {
  int64_t tick;
  if (!TICKABLE(now)) return;
  tick = tick_of(now);
  if (hp->nwheel) {
    int64_t k = first_full(hp);
    if (k < tick) tick = k;
    if (tick <= hp->base) return;
  }
  hp->base = tick;
}

/* t into the wheel when its deadline falls in the wheel's span: 1 if it
** went in, 0 if it belongs in the heap, -ENOMEM */
static int wheel_add(aio_heap *hp, aio_timer *t, double when) {
  aio_bucket *b;
  int64_t tick;
  if (!TICKABLE(when)) return 0;
  tick = tick_of(when);
  if (hp->nwheel == 0 && tick >= hp->base + N) {
    /* beyond the span, which nothing holds to: the clock has not been
    ** read for long (no pop yet), or this deadline is far; the span
    ** starts half a span before it */
    hp->base = tick - N / 2;
  }
  if (tick < hp->base || tick >= hp->base + N) return 0;
  if (hp->wheel == NULL &&
      (hp->wheel = calloc(N, sizeof *hp->wheel)) == NULL)
    return 0;  /* the heap alone will do */
  b = &hp->wheel[(uint32_t)tick & (N - 1)];
  if (room(&b->v, b->n, &b->cap, 8) != 0) return -ENOMEM;
  b->v[b->n].when = when;
  b->v[b->n].t = t;
  t->idx = AIO_IN_WHEEL | ++b->n;
  if (b->n == 1) mark(hp, tick, 1);
  hp->nwheel++;
  return 1;
}

static void wheel_remove(aio_heap *hp, aio_timer *t) {
  int64_t tick = tick_of(t->when);
  aio_bucket *b = &hp->wheel[(uint32_t)tick & (N - 1)];
  uint32_t i = (t->idx & ~AIO_IN_WHEEL) - 1;
  aio_heap_slot last = b->v[--b->n];
  if (i != b->n) {
    b->v[i] = last;
    last.t->idx = AIO_IN_WHEEL | (i + 1);
  }
  if (b->n == 0) mark(hp, tick, 0);
  hp->nwheel--;
}

void aio__heap_free(aio_heap *hp) {
  uint32_t i, k;
  for (i = 0; i < hp->n; i++) hp->v[i].t->idx = 0;
  free(hp->v);
  for (i = hp->rpos; hp->nrun > 0 && i < hp->rn; i++)
    if (hp->run[i].t != NULL) hp->run[i].t->idx = 0;
  free(hp->run);
  hp->run = NULL;
  hp->rpos = hp->rn = hp->rcap = hp->nrun = 0;
  if (hp->wheel) {
    for (k = 0; k < N; k++) {
      for (i = 0; i < hp->wheel[k].n; i++) hp->wheel[k].v[i].t->idx = 0;
      free(hp->wheel[k].v);
    }
    free(hp->wheel);
  }
  hp->v = NULL;
  hp->wheel = NULL;
  hp->n = hp->cap = hp->nwheel = 0;
  for (k = 0; k < WORDS; k++) hp->full[k] = 0;
}

int aio__heap_add(aio_heap *hp, aio_timer *t, double when) {
  int r;
  if (t->idx) aio__heap_remove(hp, t);
  if (aio__heap_count(hp) >= AIO_HEAP_MAX) return -ENOMEM;
  /* the heap has room for every timer, so a bucket's move never fails */
  if (room(&hp->v, aio__heap_count(hp), &hp->cap, 64) != 0) return -ENOMEM;
  t->when = when;
  t->seq = hp->seq++ & 0x0fffffffu;
  if ((r = wheel_add(hp, t, when)) != 0) return r < 0 ? r : 0;
  hp->v[hp->n].when = when;
  hp->v[hp->n].t = t;
  up(hp, hp->n++);
  return 0;
}

void aio__heap_remove(aio_heap *hp, aio_timer *t) {
  uint32_t i = t->idx - 1;
  aio_heap_slot last;
  if (t->idx == 0) return;
  if (t->idx & AIO_IN_WHEEL) {
    wheel_remove(hp, t);
    t->idx = 0;
    return;
  }
  if (t->idx & AIO_IN_RUN) {  /* leaves a hole, or empties the run */
    hp->run[(t->idx & ~AIO_IN_RUN) - 1].t = NULL;
    t->idx = 0;
    if (--hp->nrun == 0) run_reset(hp);
    return;
  }
  t->idx = 0;
  last = hp->v[--hp->n];
  if (i == hp->n) return;
  place(hp, i, last);
  if (i > 0 && less(&last, &hp->v[(i - 1) / D])) up(hp, i);
  else down(hp, i);
}

aio_timer *aio__heap_top(aio_heap *hp) {
  aio_heap_slot *f;
  settle(hp);
  f = first(hp);
  return f ? f->t : NULL;
}

aio_timer *aio__heap_pop(aio_heap *hp, double now) {
  aio_heap_slot *f;
  aio_timer *t;
  settle(hp);
  f = first(hp);
  if (f == NULL || f->when > now) {
    follow(hp, now);
    return NULL;
  }
  t = f->t;
  aio__heap_remove(hp, t);
  return t;
}

void aio__heap_shift(aio_heap *hp, double shift) {
  uint32_t i;
  /* all into the heap: the run, then the buckets */
  for (i = hp->rpos; hp->nrun > 0 && i < hp->rn; i++) {
    if (hp->run[i].t == NULL) continue;
    hp->v[hp->n] = hp->run[i];
    up(hp, hp->n++);
  }
  hp->nrun = 0;
  run_reset(hp);
  while (hp->nwheel) migrate_heap(hp, first_full(hp));
  for (i = 0; i < hp->n; i++) {
    hp->v[i].when += shift;
    hp->v[i].t->when += shift;
  }
  hp->base = 0;  /* the wheel is empty: its span starts afresh */
}
