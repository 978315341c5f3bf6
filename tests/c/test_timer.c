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
