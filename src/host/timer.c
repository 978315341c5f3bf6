/*
** timer.c: a 4-ary min-heap of timers (see timer.h).  Each timer knows its
** slot, so removal is O(log n) without a search; slots carry the deadline
** so comparisons stay inside the heap array.
*/
#include <errno.h>
#include <stdlib.h>

#include "timer.h"

#define D 4  /* children per node: a shallower heap, fewer cache misses */

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

void aio__heap_free(aio_heap *hp) {
  uint32_t i;
  for (i = 0; i < hp->n; i++) hp->v[i].t->idx = 0;
  free(hp->v);
  hp->v = NULL;
  hp->n = hp->cap = 0;
}

int aio__heap_add(aio_heap *hp, aio_timer *t, double when) {
  if (t->idx) aio__heap_remove(hp, t);
  if (hp->n >= AIO_HEAP_MAX) return -ENOMEM;
  if (hp->n == hp->cap) {
    uint32_t cap = hp->cap ? hp->cap * 2 : 64;
    aio_heap_slot *v = realloc(hp->v, cap * sizeof *v);
    if (v == NULL) return -ENOMEM;
    hp->v = v;
    hp->cap = cap;
  }
  t->when = when;
  t->seq = hp->seq++ & 0x0fffffffu;
  hp->v[hp->n].when = when;
  hp->v[hp->n].t = t;
  up(hp, hp->n++);
  return 0;
}

void aio__heap_remove(aio_heap *hp, aio_timer *t) {
  uint32_t i = t->idx - 1;
  aio_heap_slot last;
  if (t->idx == 0) return;
  t->idx = 0;
  last = hp->v[--hp->n];
  if (i == hp->n) return;
  place(hp, i, last);
  if (i > 0 && less(&last, &hp->v[(i - 1) / D])) up(hp, i);
  else down(hp, i);
}
