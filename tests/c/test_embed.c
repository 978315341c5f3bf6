/* the embedding API beyond the basics: misuse, C modules, the work pool,
** foreign main loops (libev's and a poll() loop), hosts in threads, posts
** from threads */
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include <ev.h>

#include "aiolua.h"
#include "t.h"

static aio_host *newhost(void) {
  aio_host *h = aio_host_new();
  if (h == NULL) T_FAIL("aio_host_new returned NULL");
  return h;
}

static lua_Integer global_int(aio_host *h, const char *name) {
  lua_State *L = aio_host_lua(h);
  lua_Integer n;
  lua_getglobal(L, name);
  n = lua_tointeger(L, -1);
  lua_pop(L, 1);
  return n;
}

static void must(aio_host *h, const char *chunk) {
  if (aio_host_dostring(h, chunk, "chunk") != 0)
    T_FAIL("dostring: %s", aio_host_errmsg(h));
}

/* ---- misuse: error codes, no crash ---- */

static void nop_post(aio_host *h, void *ud) { (void)h; (void)ud; }
static void nop_work(void *ud) { (void)ud; }

TEST(embed_null_host) {
  luaL_Reg none[] = { { NULL, NULL } };
  ASSERT(aio_host_lua(NULL) == NULL);
  ASSERT(aio_host_of(NULL) == NULL);
  ASSERT(aio_host_errmsg(NULL) != NULL);
  ASSERT(aio_host_dostring(NULL, "x = 1", "x") != 0);
  ASSERT(aio_host_dofile(NULL, "x.lua") != 0);
  ASSERT(aio_host_call(NULL, 0, 0) != 0);
  ASSERT(aio_host_run(NULL) != 0);
  ASSERT(aio_host_step(NULL, 0) != 0);
  ASSERT(aio_host_post(NULL, nop_post, NULL) != 0);
  ASSERT(aio_host_fd(NULL) < 0);
  ASSERT(aio_host_timeout(NULL) < 0);
  ASSERT(aio_host_register(NULL, "m", none) != 0);
  ASSERT(aio_host_submit_work(NULL, nop_work, NULL, NULL) != 0);
  ASSERT(aio_host_catch_sigint(NULL) != 0);
  ASSERT(aio_host_catch_sigint_opt(NULL, 0) != 0);
  {
    aio_watch *w = NULL;
    ASSERT(aio_host_watch(NULL, 0, NULL, NULL, &w) != 0);
    ASSERT(w == NULL);
  }
  ASSERT(aio_future_new(NULL) == NULL);
  ASSERT(aio_future_resolve(NULL, 0) != 0);
  ASSERT(aio_future_reject(NULL) != 0);
  ASSERT(aio_host_new_ev(NULL) == NULL);
  aio_host_free(NULL);
}

TEST(embed_bad_arguments) {
  aio_host *h = newhost();
  lua_State *L = aio_host_lua(h);
  int top = lua_gettop(L);
  ASSERT(aio_host_dostring(h, NULL, "x") != 0);
  ASSERT(aio_host_register(h, NULL, NULL) != 0);
  ASSERT(aio_host_submit_work(h, NULL, NULL, NULL) != 0);
  ASSERT(aio_host_post(h, NULL, NULL) != 0);
  ASSERT(aio_host_call(h, 0, 0) != 0);  /* no function */
  ASSERT_EQ(lua_gettop(L), top);
  ASSERT(aio_host_dofile(h, "/nonexistent/x.lua") != 0);
  ASSERT_CONTAINS(aio_host_errmsg(h), "nonexistent");
  aio_host_free(h);
}

/* a C function that calls back into the host while its loop runs */
static int l_reenter(lua_State *L) {
  aio_host *h = aio_host_of(L);
  int rs = aio_host_run(h), st = aio_host_step(h, 0),
      ds = aio_host_dostring(h, "x = 1", "inner");
  lua_pushboolean(L, rs != 0 && st != 0 && ds != 0);
  lua_pushstring(L, aio_host_errmsg(h));
  return 2;
}

TEST(embed_run_while_running) {
  aio_host *h = newhost();
  lua_State *L = aio_host_lua(h);
  int top = lua_gettop(L);
  ASSERT(aio_host_of(L) == h);
  lua_register(L, "reenter", l_reenter);
  must(h, "local ok, msg = reenter()\n"
          "assert(ok, 'a nested run succeeded')\n"
          "assert(msg:find('running'), msg)\n"
          "done = 1");
  ASSERT_EQ(global_int(h, "done"), 1);
  ASSERT(global_int(h, "x") == 0);  /* the inner chunk never ran */
  ASSERT_EQ(lua_gettop(L), top);
  aio_host_free(h);
}

/* ---- C modules returning futures ---- */

typedef struct later { aio_future *f; lua_Integer v; aio_host *h; } later;

static int resolves;  /* resolve_later calls */

static void resolve_later(aio_host *h, void *ud) {
  later *l = ud;
  resolves++;
  lua_pushinteger(aio_host_lua(h), l->v * 2);
  aio_future_resolve(l->f, 1);
  free(l);
}

static void *later_thread(void *arg) {
  later *l = arg;
  usleep(2000);
  aio_host_post(l->h, resolve_later, l);
  return NULL;
}

/* game.double(n): a future of 2n, completed from another thread */
static int l_double(lua_State *L) {
  later *l = malloc(sizeof *l);
  pthread_t th;
  l->v = luaL_checkinteger(L, 1);
  l->h = aio_host_of(L);
  l->f = aio_future_new(l->h);
  pthread_create(&th, NULL, later_thread, l);
  pthread_detach(th);
  return 1;
}

/* game.fail(): a future rejected at once; the error value goes onto the
** host's own stack (aio_host_lua), as for every completion */
static int l_fail(lua_State *L) {
  aio_host *h = aio_host_of(L);
  aio_future *f = aio_future_new(h);
  lua_pushstring(aio_host_lua(h), "failed in C");
  aio_future_reject(f);
  return 1;
}

static const luaL_Reg game_funcs[] = {
  { "double", l_double },
  { "fail", l_fail },
  { NULL, NULL }
};

TEST(embed_register_module) {
  aio_host *h = newhost();
  ASSERT_OK(aio_host_register(h, "game", game_funcs));
  must(h, "local game = require 'game'\n"
          "assert(require('game') == game)\n"
          "local fa, fb = game.double(20), game.double(1)\n"
          "local a, b = fa:await(), fb:await()\n"
          "sum = a + b\n"
          "local ok, e = pcall(function() return game.fail():await() end)\n"
          "assert(not ok and e == 'failed in C', tostring(e))");
  ASSERT_EQ(global_int(h, "sum"), 42);
  aio_host_free(h);
}

/* aio_host_step is asyncio's _run_once: it waits, then runs what the wait
** made ready.  It ran the ready tasks first and waited last, so a task
** woken during the wait ran only in the next step, which then waited
** again first: `while (!done) aio_host_step(h, -1)` hung for good. */
TEST(embed_step_runs_what_its_wait_woke) {
  aio_host *h = newhost();
  ASSERT_OK(aio_host_register(h, "game", game_funcs));
  must(h, "aio.spawn(function() got = require('game').double(21):await() end)\n"
          "aio.spawn(function() aio.sleep(0.01) slept = 1 end)");
  int i, before;
  ASSERT_OK(aio_host_step(h, 0));  /* both run to their waits */
  ASSERT_EQ(global_int(h, "got"), 0);
  /* the post (from a thread, after 2 ms) ends a wait; the task its
  ** completion woke runs in that same step */
  for (i = 0; i < 1000 && global_int(h, "got") == 0; i++) {
    before = resolves;
    ASSERT_OK(aio_host_step(h, 10));
    if (resolves != before) ASSERT_EQ(global_int(h, "got"), 42);
  }
  ASSERT_EQ(global_int(h, "got"), 42);
  for (i = 0; i < 1000 && global_int(h, "slept") == 0; i++)
    ASSERT_OK(aio_host_step(h, 10));
  ASSERT_EQ(global_int(h, "slept"), 1);
  ASSERT_EQ(aio_host_timeout(h), -1);  /* nothing left to wait for */
  aio_host_free(h);
}

/* ---- the work pool from C ---- */

typedef struct job { int in, out, status, done; } job;

static void square(void *ud) {
  job *j = ud;
  usleep(1000);
  j->out = j->in * j->in;
}

static void squared(aio_host *h, void *ud, int status) {
  job *j = ud;
  (void)h;
  j->status = status;
  j->done++;
}

TEST(embed_submit_work) {
  aio_host *h = newhost();
  job jobs[8];
  int i;
  for (i = 0; i < 8; i++) {
    jobs[i].in = i;
    jobs[i].out = jobs[i].done = 0;
    jobs[i].status = -1;
    ASSERT_OK(aio_host_submit_work(h, square, squared, &jobs[i]));
  }
  ASSERT_OK(aio_host_run(h));  /* no task, but jobs in flight */
  for (i = 0; i < 8; i++) {
    ASSERT_EQ(jobs[i].done, 1);
    ASSERT_EQ(jobs[i].status, 0);
    ASSERT_EQ(jobs[i].out, i * i);
  }
  aio_host_free(h);
}

static void slow(void *ud) { (void)ud; usleep(30000); }

TEST(embed_free_drops_queued_work) {
  aio_host *h = newhost();
  job jobs[6];
  int i, ran = 0, dropped = 0;
  ASSERT_OK(aio_host_dostring(h, "aio.set_thread_pool_size(1)", "size"));
  for (i = 0; i < 6; i++) {
    jobs[i].done = 0;
    jobs[i].status = -1;
    ASSERT_OK(aio_host_submit_work(h, slow, squared, &jobs[i]));
  }
  aio_host_step(h, 0.01);
  aio_host_free(h);  /* waits for the running one, drops the others */
  for (i = 0; i < 6; i++) {
    ASSERT_EQ(jobs[i].done, 1);
    if (jobs[i].status == 0) ran++;
    else dropped++;
  }
  ASSERT(ran >= 1 && dropped >= 1);
  h = newhost();
  ASSERT_OK(aio_host_dostring(h, "aio.set_thread_pool_size(4)", "size"));
  aio_host_free(h);
}

TEST(embed_to_thread_interrupted_at_free) {
  aio_host *h = newhost();
  must(h, "aio.spawn(aio.to_thread, function() while true do end end)\n"
          "aio.sleep(0.02)");
  aio_host_free(h);  /* interrupts the endless worker: no hang, no leak */
}

/* ---- a foreign poll() loop ---- */

TEST(embed_fd_and_timeout) {
  aio_host *h = newhost();
  struct pollfd p;
  double t;
  int fd = aio_host_fd(h), i;
  ASSERT(fd >= 0);
  ASSERT(aio_host_timeout(h) < 0);  /* nothing to do */
  must(h, "n = 0\n"
          "aio.spawn(function() aio.sleep(0.05) n = 1 end)");
  t = aio_host_timeout(h);
  ASSERT(t == 0);  /* the new task is ready */
  ASSERT_OK(aio_host_step(h, 0));
  t = aio_host_timeout(h);
  ASSERT(t > 0.02 && t <= 0.05);  /* its sleep */
  for (i = 0; i < 100 && global_int(h, "n") == 0; i++) {
    t = aio_host_timeout(h);
    p.fd = fd;
    p.events = POLLIN;
    poll(&p, 1, t < 0 ? -1 : (int)(t * 1000) + 1);
    ASSERT_OK(aio_host_step(h, 0));
  }
  ASSERT_EQ(global_int(h, "n"), 1);
  aio_host_free(h);
}

static void set_posted(aio_host *h, void *ud) {
  lua_pushinteger(aio_host_lua(h), (lua_Integer)(intptr_t)ud);
  lua_setglobal(aio_host_lua(h), "posted");
}

static void *post_soon(void *arg) {
  usleep(10000);
  aio_host_post(arg, set_posted, (void *)(intptr_t)7);
  return NULL;
}

TEST(embed_fd_wakes_on_post) {
  aio_host *h = newhost();
  struct pollfd p;
  pthread_t th;
  p.fd = aio_host_fd(h);
  p.events = POLLIN;
  pthread_create(&th, NULL, post_soon, h);
  ASSERT_EQ(poll(&p, 1, 5000), 1);  /* the post made the fd readable */
  ASSERT_OK(aio_host_step(h, 0));
  pthread_join(th, NULL);
  ASSERT_EQ(global_int(h, "posted"), 7);
  aio_host_free(h);
}

/* Socket data makes the fd readable too: on Linux the loop's sockets are
** read and written through an io_uring, whose fd joins the epoll set once
** aio_host_fd was asked for.  Each poll with nothing else to wake the host
** (timeout -1) must end readable, not at its 2 s cap. */
TEST(embed_fd_wakes_on_socket_data) {
  aio_host *h = newhost();
  struct pollfd p;
  int i, waits = 0;
  p.fd = aio_host_fd(h);
  p.events = POLLIN;
  must(h, "got = nil\n"
          "aio.spawn(function()\n"
          "  local srv = aio.start_server(function(r, w)\n"
          "    for i = 1, 20 do w:write(r:readline():upper()) end\n"
          "    w:close()\n"
          "  end, '127.0.0.1', 0)\n"
          "  local r, w = aio.open_connection('127.0.0.1', select(2, srv:getsockname()))\n"
          "  local n = 0\n"
          "  for i = 1, 20 do\n"
          "    w:write('ping ' .. i .. '\\n')\n"
          "    if r:readline() == 'PING ' .. i .. '\\n' then n = n + 1 end\n"
          "  end\n"
          "  w:close() srv:close()\n"
          "  got = n\n"
          "end)");
  for (i = 0; i < 10000 && global_int(h, "got") == 0; i++) {
    double t = aio_host_timeout(h);
    int n = poll(&p, 1, t < 0 ? 2000 : (int)(t * 1000) + 1);
    if (t < 0) {
      ASSERT_EQ(n, 1);  /* woken by the socket's data */
      waits++;
    }
    ASSERT_OK(aio_host_step(h, 0));
  }
  ASSERT_EQ(global_int(h, "got"), 20);
  ASSERT(waits > 0);
  aio_host_free(h);
}

/* ---- the application's own libev loop ---- */

static int app_ticks;
static void app_tick(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)revents;
  if (++app_ticks == 3) ev_timer_stop(loop, w);
}

TEST(embed_ev_loop) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  ev_timer tick;
  aio_host *h = aio_host_new_ev(loop);
  ASSERT(h != NULL);
  app_ticks = 0;
  ev_timer_init(&tick, app_tick, 0.005, 0.005);
  ev_timer_start(loop, &tick);
  /* tasks spawned by a chunk run under the application's ev_run */
  must(h, "steps = 0\n"
          "aio.spawn(function()\n"
          "  for i = 1, 5 do aio.sleep(0.01) steps = steps + 1 end\n"
          "  steps = steps + aio.to_thread(function(x) return x * 10 end, 10)\n"
          "end)");
  ASSERT_EQ(global_int(h, "steps"), 0);
  ev_run(loop, 0);  /* returns once neither side has work */
  ASSERT_EQ(global_int(h, "steps"), 105);
  ASSERT_EQ(app_ticks, 3);
  /* a dostring on it polls the application's loop itself */
  must(h, "aio.sleep(0.01) steps = 1");
  ASSERT_EQ(global_int(h, "steps"), 1);
  aio_host_free(h);
  ev_loop_destroy(loop);  /* the application's, still whole */
}

/* ---- hosts in threads, posts from threads ---- */

static void *host_thread(void *arg) {
  aio_host *h = aio_host_new();
  intptr_t ok = 0;
  (void)arg;
  if (h == NULL) return (void *)0;
  ok = aio_host_dostring(h,
    "local t = {}\n"
    "for i = 1, 20 do t[i] = aio.spawn(function() aio.sleep(0.001 * (i % 3)) return i end) end\n"
    "local s = 0\n"
    "for i = 1, 20 do s = s + t[i]:await() end\n"
    "assert(s == 210)\n"
    "assert(aio.to_thread(function(a, b) return a + b end, 1, 2) == 3)",
    "thread-host") == 0;
  aio_host_free(h);
  return (void *)ok;
}

TEST(embed_hosts_in_threads) {
  pthread_t th[2];
  void *ok[2];
  int i;
  for (i = 0; i < 2; i++) pthread_create(&th[i], NULL, host_thread, NULL);
  for (i = 0; i < 2; i++) pthread_join(th[i], &ok[i]);
  ASSERT(ok[0] == (void *)1);
  ASSERT(ok[1] == (void *)1);
}

#define STORM_THREADS 4
#define STORM_POSTS   25000

typedef struct storm {
  aio_host *h;
  int id;
  long next[STORM_THREADS];  /* the sequence number expected next */
  long bad, total;
} storm;

typedef struct storm_msg { storm *st; int id; long seq; } storm_msg;
static storm_msg storm_msgs[STORM_THREADS][STORM_POSTS];
static storm storm_state;
static int storm_ids[STORM_THREADS];

static void storm_recv(aio_host *h, void *ud) {
  storm_msg *m = ud;
  (void)h;
  if (m->seq != m->st->next[m->id]) m->st->bad++;  /* lost, twice, reordered */
  m->st->next[m->id] = m->seq + 1;
  m->st->total++;
}

static void *storm_thread(void *arg) {
  int id = *(int *)arg;
  long i;
  for (i = 0; i < STORM_POSTS; i++) {
    storm_msg *m = &storm_msgs[id][i];
    m->st = &storm_state;
    m->id = id;
    m->seq = i;
    while (aio_host_post(storm_state.h, storm_recv, m) != 0) usleep(100);
  }
  return NULL;
}

TEST(embed_post_storm) {
  pthread_t th[STORM_THREADS];
  int i;
  memset(&storm_state, 0, sizeof storm_state);
  storm_state.h = newhost();
  for (i = 0; i < STORM_THREADS; i++) {
    storm_ids[i] = i;
    pthread_create(&th[i], NULL, storm_thread, &storm_ids[i]);
  }
  for (i = 0; i < 100000 &&
       storm_state.total < (long)STORM_THREADS * STORM_POSTS; i++)
    ASSERT_OK(aio_host_step(storm_state.h, 0.05));
  for (i = 0; i < STORM_THREADS; i++) pthread_join(th[i], NULL);
  ASSERT_OK(aio_host_step(storm_state.h, 0));
  ASSERT_EQ(storm_state.total, (long)STORM_THREADS * STORM_POSTS);
  ASSERT_EQ(storm_state.bad, 0);
  aio_host_free(storm_state.h);
}

static int closing_posts;
static void count_post(aio_host *h, void *ud) { (void)h; (void)ud; closing_posts++; }

TEST(embed_post_runs_before_close) {
  /* a post that got in before aio_host_free still runs, exactly once */
  aio_host *h = newhost();
  closing_posts = 0;
  ASSERT_OK(aio_host_post(h, count_post, NULL));
  aio_host_free(h);
  ASSERT_EQ(closing_posts, 1);
}

/* completing a future Lua cancelled (or that was completed) fails with
** a message, as every int result of the API */
static aio_future *held_future;
static int l_held(lua_State *L) {
  held_future = aio_future_new(aio_host_of(L));
  return 1;
}

TEST(embed_future_complete_failure_has_message) {
  aio_host *h = newhost();
  lua_State *L = aio_host_lua(h);
  lua_register(L, "held", l_held);
  ASSERT_OK(aio_host_dostring(h, "local ok, e = pcall(aio.wait_for, held(), 0.01) "
                                 "assert(aio.errtype(e) == 'TimeoutError')", "=c"));
  lua_pushinteger(L, 1);
  ASSERT(aio_future_resolve(held_future, 1) != 0);
  ASSERT(aio_host_errmsg(h) != NULL);
  ASSERT_CONTAINS(aio_host_errmsg(h), "aio_future_resolve: the future is done already");
  /* completed once: a second completion fails too, with its message */
  ASSERT_OK(aio_host_dostring(h, "f2 = held()", "=c"));
  lua_pushinteger(L, 2);
  ASSERT_OK(aio_future_resolve(held_future, 1));
  ASSERT(aio_host_errmsg(h) == NULL);
  lua_pushstring(L, "late");
  ASSERT(aio_future_reject(held_future) != 0);
  ASSERT_CONTAINS(aio_host_errmsg(h), "aio_future_reject: the future was completed already");
  ASSERT(aio_future_resolve(held_future, -1) != 0);
  ASSERT_CONTAINS(aio_host_errmsg(h), "a negative number of results");
  ASSERT_OK(aio_host_dostring(h, "assert(f2:result() == 2)", "=c"));
  /* more results asked for than the stack holds, or no error value: a
  ** message, not a crash (it read below the stack) */
  {
    int top = lua_gettop(L);
    ASSERT_OK(aio_host_dostring(h, "f3 = held()", "=c"));
    lua_pushinteger(L, 1);
    ASSERT(aio_future_resolve(held_future, top + 3) != 0);
    ASSERT_CONTAINS(aio_host_errmsg(h), "fewer values on the stack than n");
    lua_settop(L, 0);
    ASSERT(aio_future_reject(held_future) != 0);
    ASSERT_CONTAINS(aio_host_errmsg(h), "no error value on the stack");
    lua_pushinteger(L, 3);
    ASSERT_OK(aio_future_resolve(held_future, 1));
    ASSERT_OK(aio_host_dostring(h, "assert(f3:result() == 3)", "=c"));
    lua_settop(L, top);
  }
  aio_host_free(h);
}

/* aio_host_run runs a post that a post made (it returned with it queued) */
static char post_order[8];
static void post_d(aio_host *h, void *ud) { (void)h; (void)ud; strcat(post_order, "D"); }
static void post_a(aio_host *h, void *ud) {
  (void)ud;
  strcat(post_order, "A");
  aio_host_post(h, post_d, NULL);
}

TEST(embed_run_runs_posts_made_by_posts) {
  aio_host *h = newhost();
  post_order[0] = '\0';
  ASSERT_OK(aio_host_post(h, post_a, NULL));
  ASSERT_OK(aio_host_run(h));
  ASSERT_STR_EQ(post_order, "AD");
  ASSERT(aio_host_timeout(h) < 0);
  aio_host_free(h);
}

/* a C function that completes its future at once: the values are on its
** own stack (L, the calling task's or the user coroutine's), not the
** host's; the host's stack is left alone */
static int l_now(lua_State *L) {
  aio_future *f = aio_future_new(aio_host_of(L));
  lua_pushinteger(L, luaL_checkinteger(L, 1) * 2);
  lua_pushstring(L, "now");
  if (aio_future_resolve(f, 2) != 0) return luaL_error(L, "resolve failed");
  return 1;
}

static int l_now_fail(lua_State *L) {
  aio_future *f = aio_future_new(aio_host_of(L));
  lua_pushstring(L, "failed at once");
  if (aio_future_reject(f) != 0) return luaL_error(L, "reject failed");
  return 1;
}

/* makes a future and leaves it pending, from wherever it is called */
static aio_future *later_future;
static int l_later(lua_State *L) {
  later_future = aio_future_new(aio_host_of(L));
  return 1;
}

/* completes later_future with its argument, from a C function a task calls */
static int l_complete(lua_State *L) {
  lua_pushvalue(L, 1);
  if (aio_future_resolve(later_future, 1) != 0) return luaL_error(L, "resolve failed");
  return 0;
}

TEST(embed_future_completed_inside_the_c_function) {
  aio_host *h = newhost();
  lua_State *L = aio_host_lua(h);
  int top = lua_gettop(L);
  lua_register(L, "now", l_now);
  lua_register(L, "now_fail", l_now_fail);
  lua_register(L, "later", l_later);
  lua_register(L, "complete", l_complete);
  must(h, "local f = now(21) assert(f:done()) "
          "local a, b = f:await() assert(a == 42 and b == 'now', tostring(a))");
  must(h, "local f = now_fail() assert(f:done()) "
          "local ok, e = pcall(f.await, f) assert(not ok and e == 'failed at once', tostring(e))");
  /* made in a task, completed by another task's C function */
  must(h, "local f = later() "
          "aio.spawn(function() aio.sleep(0) complete('from a task') end) "
          "assert(f:await() == 'from a task')");
  /* inside a user coroutine run by a task: pushed and popped there */
  must(h, "local g = coroutine.wrap(function(x) "
          "  local f = now(x) coroutine.yield(f:await()) "
          "  local f2 = later() aio.spawn(complete, 'late') coroutine.yield(f2:await()) "
          "end) "
          "assert(g(5) == 10) assert(g() == 'late')");
  /* in a callback of the loop (no task runs): the host's stack */
  must(h, "local done = aio.Future() "
          "aio.loop():call_soon(function() done:set_result(now(1)) end) "
          "assert(done:await():result() == 2)");
  /* an eager task started by a callback (its step runs inside the
  ** callback, the host's stack deeper than the loop's) */
  must(h, "local done = aio.Future() "
          "aio.loop():call_soon(function() "
          "  aio.spawn_eager(function() done:set_result(now(4):result()) end) end) "
          "assert(done:await() == 8)");
  /* an eager task started by a task, with the values on its own stack */
  must(h, "local t = aio.spawn_eager(function() return now(5):await() end) "
          "assert(t:await() == 10)");
  ASSERT_EQ(lua_gettop(L), top);
  aio_host_free(h);
}

/* a thread that posts until it is refused, while the host is freed and
** after: refused, never a use of freed memory (ASan, valgrind) */
static aio_host *late_host;
static volatile int late_refused;
static long late_accepted;

static void *late_poster(void *ud) {
  (void)ud;
  for (;;) {
    if (aio_host_post(late_host, count_post, NULL) != 0) break;
    __atomic_add_fetch(&late_accepted, 1, __ATOMIC_RELAXED);
    usleep(50);
  }
  late_refused = 1;
  return NULL;
}

TEST(embed_post_until_refused_across_free) {
  pthread_t t;
  int i;
  for (i = 0; i < 5; i++) {
    aio_host *h = newhost();
    late_host = h;
    late_refused = 0;
    late_accepted = 0;
    closing_posts = 0;
    ASSERT_OK(aio_host_dostring(h, "aio.spawn(function() pcall(aio.sleep, 100) "
                                   "aio.sleep(0.02) end) aio.sleep(0.001)", "=c"));
    ASSERT_EQ(pthread_create(&t, NULL, late_poster, NULL), 0);
    usleep(5000);
    ASSERT_OK(aio_host_step(h, 0));
    aio_host_free(h);          /* the poster is still going */
    ASSERT(aio_host_post(h, count_post, NULL) != 0);  /* freed: refused */
    pthread_join(t, NULL);
    ASSERT(late_refused);
    /* every accepted post ran, none after the close */
    ASSERT_EQ((long)closing_posts, late_accepted);
  }
  aio_host_free(late_host);  /* freed twice: nothing happens */
  /* a new host never takes a freed one's address */
  {
    aio_host *h2 = newhost();
    ASSERT(h2 != late_host);
    ASSERT_OK(aio_host_post(h2, count_post, NULL));
    aio_host_free(h2);
  }
}

/* ---- aio_host_call and aio_host_newopt ---- */

TEST(embed_call_with_results) {
  aio_host *h = aio_host_newopt(AIO_HOST_NOENV);
  lua_State *L;
  int top;
  ASSERT(h != NULL);
  L = aio_host_lua(h);
  top = lua_gettop(L);
  ASSERT_OK(luaL_loadstring(L, "local a, b = ... aio.sleep(0.001) return a + b, 'x'"));
  lua_pushinteger(L, 40);
  lua_pushinteger(L, 2);
  ASSERT_OK(aio_host_call(h, 2, LUA_MULTRET));
  ASSERT_EQ(lua_gettop(L), top + 2);
  ASSERT_EQ(lua_tointeger(L, top + 1), 42);
  ASSERT_STR_EQ(lua_tostring(L, top + 2), "x");
  lua_settop(L, top);
  /* a failure leaves nothing behind, and the traceback names the chunk */
  ASSERT_OK(luaL_loadbuffer(L, "aio.sleep(0) error('no')", 24, "=callee"));
  ASSERT(aio_host_call(h, 0, 1) != 0);
  ASSERT_EQ(lua_gettop(L), top);
  ASSERT_CONTAINS(aio_host_errmsg(h), "callee:1: no");
  ASSERT_CONTAINS(aio_host_errmsg(h), "stack traceback");
  aio_host_free(h);
}

/* the main task of each call works in the host's one context: what a
** chunk sets, the next sees (as at Python's asyncio REPL); tasks and
** callbacks it starts take copies */
TEST(embed_context_shared_by_calls) {
  aio_host *h = aio_host_newopt(AIO_HOST_NOENV);
  ASSERT(h != NULL);
  ASSERT_OK(aio_host_dostring(h, "v = aio.ContextVar('v') v:set('first')", "=a"));
  ASSERT_OK(aio_host_dostring(h, "assert(v:get() == 'first', v:get()) "
                                 "local t = aio.spawn(function() v:set('child') return v:get() end) "
                                 "assert(t:await() == 'child') "
                                 "assert(v:get() == 'first') v:set('second')", "=b"));
  ASSERT_OK(aio_host_dostring(h, "assert(v:get() == 'second', v:get())", "=c"));
  aio_host_free(h);
}
