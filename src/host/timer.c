/*
** timer.c: a binary min-heap of timers (see timer.h).  Each timer knows its
** slot, so removal is O(log n) without a search.
*/
#include <errno.h>
#include <stdlib.h>

#include "timer.h"

static int less(const aio_timer *a, const aio_timer *b) {
  return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static void place(aio_heap *hp, uint32_t i, aio_timer *t) {
  hp->v[i] = t;
  t->idx = i + 1;
}

static void up(aio_heap *hp, uint32_t i) {
  aio_timer *t = hp->v[i];
  while (i > 0) {
    uint32_t p = (i - 1) / 2;
    if (!less(t, hp->v[p])) break;
    place(hp, i, hp->v[p]);
    i = p;
  }
  place(hp, i, t);
}

static void down(aio_heap *hp, uint32_t i) {
  aio_timer *t = hp->v[i];
  for (;;) {
    uint32_t c = 2 * i + 1;
    if (c >= hp->n) break;
    if (c + 1 < hp->n && less(hp->v[c + 1], hp->v[c])) c++;
    if (!less(hp->v[c], t)) break;
    place(hp, i, hp->v[c]);
    i = c;
  }
  place(hp, i, t);
}

void aio__heap_free(aio_heap *hp) {
  uint32_t i;
  for (i = 0; i < hp->n; i++) hp->v[i]->idx = 0;
  free(hp->v);
  hp->v = NULL;
  hp->n = hp->cap = 0;
}

int aio__heap_add(aio_heap *hp, aio_timer *t, double when) {
  if (t->idx) aio__heap_remove(hp, t);
  if (hp->n == hp->cap) {
    uint32_t cap = hp->cap ? hp->cap * 2 : 64;
    aio_timer **v = realloc(hp->v, cap * sizeof *v);
    if (v == NULL) return -ENOMEM;
    hp->v = v;
    hp->cap = cap;
  }
  t->when = when;
  t->seq = hp->seq++;
  hp->v[hp->n] = t;
  up(hp, hp->n++);
  return 0;
}

void aio__heap_remove(aio_heap *hp, aio_timer *t) {
  uint32_t i = t->idx - 1;
  aio_timer *last;
  if (t->idx == 0) return;
  t->idx = 0;
  last = hp->v[--hp->n];
  if (i == hp->n) return;
  place(hp, i, last);
  if (i > 0 && less(last, hp->v[(i - 1) / 2])) up(hp, i);
  else down(hp, i);
}
