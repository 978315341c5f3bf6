/*
** examples/embed/ev_app.c: an application that already runs a libev loop
** gives it to aiolua (aio_host_new_ev).  Its own watchers and the host's
** tasks share the one loop; ev_run returns when neither has work left.
**
** Build: make examples        Run: build/examples/ev_app
*/
#include <stdio.h>

#include <ev.h>

#include "aiolua.h"

static void heartbeat(struct ev_loop *loop, ev_timer *w, int revents) {
  static int n;
  (void)revents;
  printf("app: heartbeat %d\n", ++n);
  if (n == 5) ev_timer_stop(loop, w);
}

int main(void) {
  struct ev_loop *loop = ev_default_loop(0);
  ev_timer beat;
  aio_host *h = aio_host_new_ev(loop);
  if (h == NULL) return 1;
  ev_timer_init(&beat, heartbeat, 0.02, 0.02);
  ev_timer_start(loop, &beat);
  /* the chunk spawns tasks and returns; they run under ev_run below */
  if (aio_host_dostring(h,
        "for i = 1, 3 do\n"
        "  aio.spawn(function()\n"
        "    aio.sleep(0.03 * i)\n"
        "    print('lua: task ' .. i .. ' done')\n"
        "  end)\n"
        "end", "tasks") != 0) {
    fprintf(stderr, "ev_app: %s\n", aio_host_errmsg(h));
    return 1;
  }
  ev_run(loop, 0);
  aio_host_free(h);
  ev_loop_destroy(loop);
  return 0;
}
