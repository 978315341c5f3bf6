/* the scheduler's timer heap */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "t.h"
#include "timer.h"

TEST(timer_order) {
  aio_heap hp = { 0 };
  aio_timer t[200];
  double last = -1;
  int i;
  srand(7);
  for (i = 0; i < 200; i++) {
    t[i].idx = 0;
    ASSERT_OK(aio__heap_add(&hp, &t[i], (double)(rand() % 50)));
  }
  for (i = 0; i < 200; i++) {
    aio_timer *top = aio__heap_top(&hp);
    ASSERT(top != NULL);
    ASSERT(top->when >= last);
    last = top->when;
    aio__heap_remove(&hp, top);
    ASSERT_EQ(top->idx, 0);
  }
  ASSERT(aio__heap_top(&hp) == NULL);
  aio__heap_free(&hp);
}

TEST(timer_remove) {
  aio_heap hp = { 0 };
  aio_timer t[10];
  int i;
  for (i = 0; i < 10; i++) {
    t[i].idx = 0;
    ASSERT_OK(aio__heap_add(&hp, &t[i], 1.0));  /* equal deadlines */
  }
  aio__heap_remove(&hp, &t[0]);
  aio__heap_remove(&hp, &t[5]);
  aio__heap_remove(&hp, &t[5]);  /* twice is harmless */
  for (i = 1; i < 10; i++) {
    if (i == 5) continue;
    /* equal deadlines come out in the order they were armed */
    ASSERT(aio__heap_top(&hp) == &t[i]);
    aio__heap_remove(&hp, &t[i]);
  }
  ASSERT_EQ(aio__heap_count(&hp), 0);
  /* re-arming moves a timer */
  ASSERT_OK(aio__heap_add(&hp, &t[0], 5.0));
  ASSERT_OK(aio__heap_add(&hp, &t[1], 3.0));
  ASSERT_OK(aio__heap_add(&hp, &t[0], 1.0));
  ASSERT(aio__heap_top(&hp) == &t[0]);
  ASSERT_EQ(aio__heap_count(&hp), 2);
  aio__heap_free(&hp);
  ASSERT_EQ(t[1].idx, 0);
}

/* equal deadlines keep their arming order across the wrap of the 28-bit
** sequence number, through sifting in both directions */
TEST(timer_tie_wrap) {
  aio_heap hp = { 0 };
  aio_timer t[300];
  int i;
  hp.seq = (1u << 28) - 150;  /* the 150th arm wraps to 0 */
  for (i = 0; i < 300; i++) {
    t[i].idx = 0;
    ASSERT_OK(aio__heap_add(&hp, &t[i], 2.0));
  }
  ASSERT(t[149].seq > t[150].seq);  /* it did wrap */
  /* an earlier deadline and a removal from the middle move the others */
  aio_timer early = { 0 };
  ASSERT_OK(aio__heap_add(&hp, &early, 1.0));
  aio__heap_remove(&hp, &t[7]);
  ASSERT(aio__heap_top(&hp) == &early);
  aio__heap_remove(&hp, &early);
  for (i = 0; i < 300; i++) {
    if (i == 7) continue;
    ASSERT(aio__heap_top(&hp) == &t[i]);
    aio__heap_remove(&hp, &t[i]);
    ASSERT_EQ(t[i].idx, 0);
  }
  ASSERT(aio__heap_top(&hp) == NULL);
  aio__heap_free(&hp);
}

/* ---- the wheel in front of the heap ---------------------------------- */

/* A model of what the timers must do: the armed ones, each with its
** deadline and arming order.  The earliest is the least (deadline, order). */
#define WN 400
typedef struct model {
  int armed[WN];
  double when[WN];
  unsigned long long order[WN];
  unsigned long long next_order;
} model;

static int model_min(const model *m) {
  int i, best = -1;
  for (i = 0; i < WN; i++) {
    if (!m->armed[i]) continue;
    if (best < 0 || m->when[i] < m->when[best] ||
        (m->when[i] == m->when[best] && m->order[i] < m->order[best]))
      best = i;
  }
  return best;
}

/* random adds, re-arms, removals, pops and clock shifts, checked against
** the model after every step: deadlines in the past, in the wheel's span,
** beyond it and not finite, many of them equal and many in one bucket,
** on a clock far from zero.  `tight`: the crowded half within one tick
** and the clock moving by much less than a tick, so that sorted runs last
** and many timers are re-armed or removed from them. */
static void wheel_model(int tight) {
  static aio_timer t[WN];
  static model m;
  aio_heap hp = { 0 };
  unsigned long long seed = 0x9e3779b97f4a7c15ull;
  double now = 123456.0;
  int step, i, in_wheel = 0, in_heap = 0, from_run = 0;
  long in_run = 0;
  memset(t, 0, sizeof t);
  memset(&m, 0, sizeof m);
  for (step = 0; step < 60000; step++) {
    unsigned r = (unsigned)(t_xorshift(&seed) % 100);
    int k = (int)(t_xorshift(&seed) % WN), want;
    if (tight && r < 70 && (t_xorshift(&seed) % 2)) {
      /* half of the re-arms and removals go to a timer in the run */
      for (i = 0; i < WN; i++)
        if (t[(k + i) % WN].idx & AIO_IN_RUN) {
          k = (k + i) % WN;
          break;
        }
    }
    if (r < 45) {                                   /* arm or re-arm */
      /* half of them crowd a few buckets, the others spread wide */
      double d = (t_xorshift(&seed) % 2)
                     ? (double)(t_xorshift(&seed) % 24) /
                           (tight ? 16384.0 : 2048.0) + 0.004
                     : (double)(t_xorshift(&seed) % 3600) / 512.0 - 1.0;
      if (t_xorshift(&seed) % 50 == 0) d = 1e300;
      if (t_xorshift(&seed) % 200 == 0) d = HUGE_VAL;
      if (t[k].idx & AIO_IN_RUN) from_run++;
      ASSERT_OK(aio__heap_add(&hp, &t[k], now + d));
      if (t[k].idx & AIO_IN_WHEEL) in_wheel++;
      else in_heap++;
      m.armed[k] = 1;
      m.when[k] = now + d;
      m.order[k] = m.next_order++;
    } else if (r < 70) {                            /* disarm */
      if (t[k].idx & AIO_IN_RUN) from_run++;
      aio__heap_remove(&hp, &t[k]);
      ASSERT_EQ(t[k].idx, 0);
      m.armed[k] = 0;
    } else if (r < 97) {                            /* the clock moves */
      aio_timer *p;
      now += (t_xorshift(&seed) % 4)
                 ? (double)(t_xorshift(&seed) % 8) / (tight ? 65536.0 : 1024.0)
                 : (double)(t_xorshift(&seed) % 700) / 1024.0;
      while ((p = aio__heap_pop(&hp, now)) != NULL) {
        want = model_min(&m);
        ASSERT(want >= 0);
        ASSERT_EQ(p - t, want);
        ASSERT(m.when[want] <= now);
        ASSERT_EQ(p->idx, 0);
        m.armed[want] = 0;
      }
      want = model_min(&m);
      ASSERT(want < 0 || m.when[want] > now);
    } else {                                        /* the clock's base moves */
      double shift = (t_xorshift(&seed) % 2) ? 1000.25 : -999.75;
      aio__heap_shift(&hp, shift);
      now += shift;
      for (i = 0; i < WN; i++) m.when[i] += shift;
    }
    want = model_min(&m);
    if (want < 0) {
      ASSERT(aio__heap_top(&hp) == NULL);
    } else {
      ASSERT(aio__heap_top(&hp) == &t[want]);
      ASSERT(t[want].when == m.when[want]);
    }
    {
      uint32_t n = 0;
      for (i = 0; i < WN; i++) {
        ASSERT_EQ(t[i].idx != 0, m.armed[i]);
        n += (uint32_t)m.armed[i];
        in_run += (t[i].idx & AIO_IN_RUN) != 0;
      }
      ASSERT_EQ(aio__heap_count(&hp), n);
    }
  }
  /* both places were used, many times, and timers left sorted runs */
  ASSERT(in_wheel > 1000);
  ASSERT(in_heap > 1000);
  ASSERT(in_run > 1000);
  if (tight) ASSERT(from_run > 100);
  aio__heap_free(&hp);
  for (i = 0; i < WN; i++) ASSERT_EQ(t[i].idx, 0);
  ASSERT_EQ(aio__heap_count(&hp), 0);
}

TEST(timer_wheel_model) { wheel_model(0); }
TEST(timer_wheel_model_runs) { wheel_model(1); }

/* which timers the wheel takes: those due within its span of the clock at
** the last pop, not those in the past, far off or not finite; and a
** bucket moves into the heap only when it holds the earliest timer */
TEST(timer_wheel_span) {
  aio_heap hp = { 0 };
  aio_timer a = { 0 }, b = { 0 }, c = { 0 }, d = { 0 }, e = { 0 };
  double now = 5000.0;
  ASSERT(aio__heap_pop(&hp, now) == NULL);        /* records the clock */
  ASSERT_OK(aio__heap_add(&hp, &a, now + 0.5));
  ASSERT(a.idx & AIO_IN_WHEEL);
  ASSERT_OK(aio__heap_add(&hp, &b, now + 3.0));
  ASSERT(b.idx & AIO_IN_WHEEL);
  ASSERT_OK(aio__heap_add(&hp, &c, now + 60.0));  /* beyond the span */
  ASSERT(!(c.idx & AIO_IN_WHEEL));
  ASSERT_OK(aio__heap_add(&hp, &d, HUGE_VAL));
  ASSERT(!(d.idx & AIO_IN_WHEEL));
  ASSERT_OK(aio__heap_add(&hp, &e, now - 1.0));   /* already due */
  ASSERT(!(e.idx & AIO_IN_WHEEL));
  ASSERT_EQ(hp.nwheel, 2);
  ASSERT_EQ(hp.n, 3);
  ASSERT(aio__heap_pop(&hp, now) == &e);
  ASSERT(aio__heap_pop(&hp, now) == NULL);
  ASSERT_EQ(hp.nwheel, 1);                         /* a's bucket moved */
  ASSERT(!(a.idx & AIO_IN_WHEEL) && a.idx != 0);
  ASSERT(b.idx & AIO_IN_WHEEL);                    /* b's did not */
  ASSERT(aio__heap_pop(&hp, now + 0.5) == &a);
  ASSERT(aio__heap_top(&hp) == &b);
  ASSERT_EQ(hp.nwheel, 0);
  aio__heap_remove(&hp, &b);
  ASSERT(aio__heap_pop(&hp, now + 100) == &c);
  ASSERT(aio__heap_pop(&hp, now + 100) == NULL);   /* d is never due */
  ASSERT(aio__heap_top(&hp) == &d);
  aio__heap_free(&hp);
  ASSERT_EQ(d.idx, 0);
}

/* removals from the middle of one crowded bucket: the bucket's last timer
** takes the freed place and must know it, or a later removal of it takes
** out somebody else */
TEST(timer_wheel_bucket) {
  aio_heap hp = { 0 };
  aio_timer t[60];
  double when[60], prev = 0;
  int i, left = 0;
  memset(t, 0, sizeof t);
  ASSERT(aio__heap_pop(&hp, 1000.0) == NULL);
  for (i = 0; i < 60; i++) {  /* all in the bucket of 1000.5 s */
    when[i] = 1000.5 + (double)((i * 37) % 60) * 1e-5;
    ASSERT_OK(aio__heap_add(&hp, &t[i], when[i]));
    ASSERT(t[i].idx & AIO_IN_WHEEL);
  }
  for (i = 0; i < 60; i += 3) aio__heap_remove(&hp, &t[i]);
  for (i = 1; i < 60; i += 6) aio__heap_remove(&hp, &t[i]);
  for (i = 2; i < 60; i += 9) {  /* re-armed in the same bucket */
    when[i] = 1000.5 + 7e-4 + (double)i * 1e-6;
    ASSERT_OK(aio__heap_add(&hp, &t[i], when[i]));
  }
  for (i = 0; i < 60; i++) {
    int armed = !(i % 3 == 0 || i % 6 == 1);
    ASSERT_EQ(t[i].idx != 0, armed);
    left += armed;
  }
  ASSERT_EQ(hp.nwheel, left);
  ASSERT(aio__heap_pop(&hp, 1000.4) == NULL);
  while (left > 0) {
    aio_timer *p = aio__heap_pop(&hp, 1001.0);
    ASSERT(p != NULL);
    i = (int)(p - t);
    ASSERT(i % 3 != 0 && i % 6 != 1);
    ASSERT(when[i] >= prev);
    prev = when[i];
    ASSERT_EQ(p->idx, 0);
    left--;
  }
  ASSERT(aio__heap_pop(&hp, 1001.0) == NULL);
  ASSERT_EQ(aio__heap_count(&hp), 0);
  aio__heap_free(&hp);
}

/* the wheel's span follows the clock at each pop; a deadline beyond it,
** with the wheel empty, moves it (the clock may not have been read for
** long); one inside it does not, so a far first deadline does not push
** the near ones after it out into the heap */
TEST(timer_wheel_rebase) {
  aio_heap hp = { 0 };
  aio_timer x = { 0 }, y = { 0 }, z = { 0 };
  ASSERT(aio__heap_pop(&hp, 5000.0) == NULL);
  ASSERT_OK(aio__heap_add(&hp, &x, 5003.0));      /* far, but in the span */
  ASSERT_OK(aio__heap_add(&hp, &y, 5000.1));
  ASSERT((x.idx & AIO_IN_WHEEL) && (y.idx & AIO_IN_WHEEL));
  aio__heap_remove(&hp, &x);
  aio__heap_remove(&hp, &y);
  /* never read since 5000 s: a deadline at 7000.5 s starts a new span */
  ASSERT_OK(aio__heap_add(&hp, &z, 7000.5));
  ASSERT(z.idx & AIO_IN_WHEEL);
  ASSERT_OK(aio__heap_add(&hp, &y, 7000.2));      /* the clock is near 7000 */
  ASSERT(y.idx & AIO_IN_WHEEL);
  ASSERT(aio__heap_pop(&hp, 7000.3) == &y);
  ASSERT(aio__heap_pop(&hp, 7000.3) == NULL);
  ASSERT(aio__heap_pop(&hp, 7001.0) == &z);
  aio__heap_free(&hp);
}

/* a bucket whose time has come is sorted into the run: its timers come
** out by deadline, then arming order (across the wrap of the sequence
** number), beside earlier ones in the heap; a timer taken out of the
** middle or the front leaves a hole that is skipped; a re-armed one
** moves; the clock's base moves with a run under way; and freeing the
** timers disarms the ones still in it */
TEST(timer_wheel_run) {
  aio_heap hp = { 0 };
  static aio_timer t[100];
  aio_timer early = { 0 };
  double when[100], prev = -1;
  int i, last = -1, out = 0, armed = 0;
  memset(t, 0, sizeof t);
  hp.seq = (1u << 28) - 30;  /* the 30th arm wraps to 0 */
  ASSERT(aio__heap_pop(&hp, 2000.0) == NULL);
  for (i = 0; i < 100; i++) {  /* one bucket: 2000.5 s and a little */
    when[i] = 2000.5 + (i % 4 == 0 ? 0.0 : (double)((i * 53) % 100) * 1e-5);
    ASSERT_OK(aio__heap_add(&hp, &t[i], when[i]));
    ASSERT(t[i].idx & AIO_IN_WHEEL);
  }
  ASSERT(aio__heap_pop(&hp, 2000.4) == NULL);  /* sorted now */
  ASSERT_EQ(hp.nrun, 100);
  ASSERT_EQ(hp.nwheel, 0);
  for (i = 0; i < 100; i++) ASSERT(t[i].idx & AIO_IN_RUN);
  /* the first one (index 0: the earliest deadline, armed first) and
  ** others from the middle are taken out; two are re-armed */
  ASSERT(aio__heap_top(&hp) == &t[0]);
  aio__heap_remove(&hp, &t[0]);
  for (i = 10; i < 100; i += 10) aio__heap_remove(&hp, &t[i]);
  aio__heap_remove(&hp, &t[10]);  /* twice is harmless */
  ASSERT_EQ(hp.nrun, 90);
  ASSERT(aio__heap_top(&hp) == &t[4]);  /* the next of the ties */
  /* back into its bucket, which then goes into the heap: the run is
  ** under way; and one due before the run's first */
  when[20] = 2000.5 + 5e-4;
  ASSERT_OK(aio__heap_add(&hp, &t[20], when[20]));
  ASSERT_OK(aio__heap_add(&hp, &early, 2000.45));
  ASSERT_EQ(aio__heap_count(&hp), 92);
  ASSERT(aio__heap_pop(&hp, 2000.46) == &early);
  /* half of them now, in order */
  while (out < 45) {
    aio_timer *p = aio__heap_pop(&hp, 2001.0);
    ASSERT(p != NULL);
    i = (int)(p - t);
    ASSERT(i == 20 || (i % 10 != 0));
    ASSERT(when[i] >= prev);
    if (when[i] == prev) ASSERT(i > last);  /* ties: as armed */
    prev = when[i];
    last = i;
    ASSERT_EQ(p->idx, 0);
    out++;
  }
  /* the clock's base moves: the rest go into the heap, in the same order */
  aio__heap_shift(&hp, -1000.0);
  ASSERT_EQ(hp.nrun, 0);
  for (i = 0; i < 100; i++) {
    if (t[i].idx == 0) continue;
    ASSERT(!(t[i].idx & (AIO_IN_RUN | AIO_IN_WHEEL)));
    when[i] -= 1000.0;
    armed++;
  }
  ASSERT_EQ(armed, 46);
  ASSERT_EQ(aio__heap_count(&hp), 46);
  prev -= 1000.0;
  while (armed > 1) {
    aio_timer *p = aio__heap_pop(&hp, 1001.0);
    ASSERT(p != NULL);
    ASSERT(when[p - t] >= prev);
    prev = when[p - t];
    armed--;
  }
  aio__heap_free(&hp);
  for (i = 0; i < 100; i++) ASSERT_EQ(t[i].idx, 0);
}

/* ties in a run come out in arming order, across the sequence number's
** wrap, whatever order removals left the bucket in; and a run still
** holding timers is disarmed by aio__heap_free */
TEST(timer_wheel_run_ties) {
  aio_heap hp = { 0 };
  static aio_timer t[64];
  int i;
  memset(t, 0, sizeof t);
  hp.seq = (1u << 28) - 20;
  ASSERT(aio__heap_pop(&hp, 300.0) == NULL);
  for (i = 0; i < 64; i++) ASSERT_OK(aio__heap_add(&hp, &t[i], 300.25));
  ASSERT(t[19].seq > t[20].seq);  /* it did wrap */
  /* removals swap the bucket's last into their places; re-arming puts
  ** them last in arming order */
  for (i = 0; i < 64; i += 7) aio__heap_remove(&hp, &t[i]);
  for (i = 0; i < 64; i += 14) ASSERT_OK(aio__heap_add(&hp, &t[i], 300.25));
  ASSERT(aio__heap_pop(&hp, 300.2) == NULL);
  ASSERT(hp.nrun > 0);
  for (i = 1; i < 64; i++) {  /* those never removed, in order */
    if (i % 7 == 0) continue;
    ASSERT(aio__heap_pop(&hp, 300.3) == &t[i]);
    if (i == 40) break;
  }
  aio__heap_free(&hp);  /* with 41..63 and the re-armed still in the run */
  for (i = 0; i < 64; i++) ASSERT_EQ(t[i].idx, 0);
  ASSERT_EQ(aio__heap_count(&hp), 0);
}
