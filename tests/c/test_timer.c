/* the scheduler's timer heap */
#include <stdlib.h>

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
  ASSERT_EQ(hp.n, 0);
  /* re-arming moves a timer */
  ASSERT_OK(aio__heap_add(&hp, &t[0], 5.0));
  ASSERT_OK(aio__heap_add(&hp, &t[1], 3.0));
  ASSERT_OK(aio__heap_add(&hp, &t[0], 1.0));
  ASSERT(aio__heap_top(&hp) == &t[0]);
  ASSERT_EQ(hp.n, 2);
  aio__heap_free(&hp);
  ASSERT_EQ(t[1].idx, 0);
}
