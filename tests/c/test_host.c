/* the embedding API (aiolua.h), the way a C program uses it */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "aiolua.h"
#include "t.h"

static aio_host *newhost(void) {
  aio_host *h = aio_host_new();
  if (h == NULL) T_FAIL("aio_host_new returned NULL");
  return h;
}

static const char *global_str(aio_host *h, const char *name) {
  lua_State *L = aio_host_lua(h);
  const char *s;
  lua_getglobal(L, name);
  s = lua_tostring(L, -1);
  lua_pop(L, 1);
  return s;
}

static lua_Integer global_int(aio_host *h, const char *name) {
  lua_State *L = aio_host_lua(h);
  lua_Integer n;
  lua_getglobal(L, name);
  n = lua_tointeger(L, -1);
  lua_pop(L, 1);
  return n;
}

TEST(host_run_string) {
  aio_host *h = newhost();
  ASSERT_OK(aio_host_dostring(h,
    "local t = {}\n"
    "for i = 1, 3 do t[i] = aio.spawn(function() aio.sleep(0.01 * i) return i * 10 end) end\n"
    "local out = {}\n"
    "for i = 1, 3 do out[i] = t[i]:await() end\n"
    "result = table.concat(out, ',')", "chunk"));
  ASSERT_STR_EQ(global_str(h, "result"), "10,20,30");
  ASSERT(aio_host_errmsg(h) == NULL);
  aio_host_free(h);
}

TEST(host_error_message) {
  aio_host *h = newhost();
  ASSERT(aio_host_dostring(h, "local function f() aio.sleep(0) error('boom-17') end f()",
                           "failing") != 0);
  ASSERT_CONTAINS(aio_host_errmsg(h), "boom-17");
  ASSERT_CONTAINS(aio_host_errmsg(h), "stack traceback");
  ASSERT_CONTAINS(aio_host_errmsg(h), "failing");
  /* a syntax error is an error too, and the host goes on */
  ASSERT(aio_host_dostring(h, "this is not lua", "bad") != 0);
  ASSERT_CONTAINS(aio_host_errmsg(h), "bad");
  ASSERT_OK(aio_host_dostring(h, "ok = 1", "fine"));
  ASSERT_EQ(global_int(h, "ok"), 1);
  aio_host_free(h);
}

TEST(host_tasks_outlive_chunk) {
  aio_host *h = newhost();
  ASSERT_OK(aio_host_dostring(h,
    "n = 0\n"
    "aio.spawn(function() for i = 1, 5 do aio.sleep(0.001) n = n + 1 end end)",
    "spawner"));
  ASSERT_EQ(global_int(h, "n"), 0);  /* the chunk ended, its task did not */
  ASSERT_OK(aio_host_run(h));
  ASSERT_EQ(global_int(h, "n"), 5);
  aio_host_free(h);
}

TEST(host_step) {
  aio_host *h = newhost();
  int i;
  ASSERT_OK(aio_host_dostring(h,
    "ticks = 0\n"
    "aio.spawn(function() while true do aio.sleep(0) ticks = ticks + 1 end end)",
    "ticker"));
  for (i = 0; i < 10; i++) ASSERT_OK(aio_host_step(h, 0));
  ASSERT(global_int(h, "ticks") >= 5);
  aio_host_free(h);  /* cancels the endless task */
}

/* a C function that returns a future, completed from another thread */
static aio_future *pending;

static void resolve_on_loop(aio_host *h, void *ud) {
  lua_State *L = aio_host_lua(h);
  lua_pushinteger(L, (lua_Integer)(intptr_t)ud);
  lua_pushstring(L, "from C");
  aio_future_resolve(pending, 2);
  pending = NULL;
}

static void *worker(void *arg) {
  usleep(5000);
  aio_host_post(arg, resolve_on_loop, (void *)(intptr_t)42);
  return NULL;
}

static int l_slow(lua_State *L) {
  aio_host *h = lua_touserdata(L, lua_upvalueindex(1));
  pthread_t th;
  pending = aio_future_new(h);  /* pushes the future */
  pthread_create(&th, NULL, worker, h);
  pthread_detach(th);
  return 1;
}

TEST(host_post_resolves_future) {
  aio_host *h = newhost();
  lua_State *L = aio_host_lua(h);
  lua_pushlightuserdata(L, h);
  lua_pushcclosure(L, l_slow, 1);
  lua_setglobal(L, "slow");
  if (aio_host_dostring(h, "local n, s = slow():await()\n"
                        "got = n .. ' ' .. s", "await-c") != 0)
    T_FAIL("await-c: %s", aio_host_errmsg(h));
  ASSERT_STR_EQ(global_str(h, "got"), "42 from C");
  /* a rejected one raises the very value */
  pending = aio_future_new(h);
  lua_setglobal(L, "fut");
  lua_pushstring(L, "rejected!");
  ASSERT_OK(aio_future_reject(pending));
  ASSERT(aio_host_dostring(h, "fut:await()", "rej") != 0);
  ASSERT_CONTAINS(aio_host_errmsg(h), "rejected!");
  aio_host_free(h);
}

static void append(aio_host *h, void *ud) {
  lua_State *L = aio_host_lua(h);
  lua_getglobal(L, "order");
  lua_pushstring(L, ud);
  lua_concat(L, 2);
  lua_setglobal(L, "order");
}

static void *poster(void *ud) {
  static const char *const names[] = { "a", "b", "c" };
  int i;
  for (i = 0; i < 3; i++)
    if (aio_host_post(ud, append, (void *)names[i]) != 0) return NULL;
  return NULL;
}

/* posts made before aio_host_run, with no task or timer left, are work:
** they run, in order, before it returns (and a post may start more) */
TEST(host_run_runs_posts) {
  aio_host *h = newhost();
  pthread_t th;
  ASSERT_OK(aio_host_dostring(h, "order = ''", "init"));
  ASSERT_EQ(pthread_create(&th, NULL, poster, h), 0);
  pthread_join(th, NULL);
  ASSERT_OK(aio_host_post(h, append, "d"));
  ASSERT_OK(aio_host_run(h));
  ASSERT_STR_EQ(global_str(h, "order"), "abcd");
  aio_host_free(h);
}

static int cleanups;
static int l_cleaned(lua_State *L) { cleanups++; return 0; }

TEST(host_free_runs_cleanup) {
  aio_host *h = newhost();
  lua_State *L = aio_host_lua(h);
  cleanups = 0;
  lua_pushcfunction(L, l_cleaned);
  lua_setglobal(L, "cleaned");
  ASSERT_OK(aio_host_dostring(h,
    "for i = 1, 3 do aio.spawn(function()\n"
    "  local guard <close> = setmetatable({}, { __close = cleaned })\n"
    "  aio.sleep(100)\n"
    "end) end\n"
    "aio.sleep(0)", "sleepers"));
  ASSERT_EQ(cleanups, 0);
  aio_host_free(h);
  ASSERT_EQ(cleanups, 3);
}

/* aio_host_shutdown: the tasks left are cancelled and their cleanup
** waits; the callbacks made ready meanwhile run; the host stays usable */
TEST(host_shutdown) {
  aio_host *h = newhost();
  ASSERT_OK(aio_host_dostring(h,
    "log = ''\n"
    "local t = aio.spawn(function()\n"
    "  local ok = pcall(aio.sleep, 100)\n"
    "  aio.sleep(0.01)  -- cleanup that waits\n"
    "  log = log .. 'cleaned '\n"
    "end)\n"
    "t:add_done_callback(function(x) log = log .. 'cb:' .. tostring(x:cancelled()) .. ' ' end)\n"
    "aio.loop():call_soon(function() log = log .. 'soon ' end)\n"
    "aio.sleep(0)", "leftover"));
  ASSERT_STR_EQ(global_str(h, "log"), "soon ");
  ASSERT_OK(aio_host_shutdown(h));
  ASSERT_STR_EQ(global_str(h, "log"), "soon cleaned cb:false ");
  ASSERT_OK(aio_host_shutdown(h));  /* nothing left: a no-op */
  ASSERT_OK(aio_host_dostring(h, "log = aio.spawn(function() return 'again' end):await()",
                              "after"));
  ASSERT_STR_EQ(global_str(h, "log"), "again");
  aio_host_free(h);
}

TEST(host_two_hosts) {
  aio_host *a = newhost(), *b = newhost();
  ASSERT_OK(aio_host_dostring(a, "x = 'a'", "a"));
  ASSERT_OK(aio_host_dostring(b, "x = 'b' aio.sleep(0.001)", "b"));
  ASSERT_STR_EQ(global_str(a, "x"), "a");
  ASSERT_STR_EQ(global_str(b, "x"), "b");
  aio_host_free(a);
  ASSERT_OK(aio_host_dostring(b, "aio.sleep(0.001) y = 2", "b2"));
  ASSERT_EQ(global_int(b, "y"), 2);
  aio_host_free(b);
}

/* ---- for the REPL: watching a descriptor, SIGINT that never exits ---- */

#ifndef _WIN32   /* on Windows: tests/win/test_iocp.c */

static int watched;
static void on_watch(aio_host *h, int fd, void *ud) {
  char c;
  if (read(fd, &c, 1) == 1) watched += c == (*(char *)ud);
}

TEST(host_watch_fd) {
  aio_host *h = newhost();
  aio_watch *w = NULL, *left = NULL;
  int fds[2], i;
  char want = 'k';
  ASSERT_OK(pipe(fds));
  watched = 0;
  ASSERT_OK(aio_host_watch(h, fds[0], on_watch, &want, &w));
  ASSERT_OK(aio_host_step(h, 0.01));
  ASSERT_EQ(watched, 0);
  ASSERT_EQ(write(fds[1], "k", 1), 1);
  for (i = 0; i < 100 && !watched; i++) ASSERT_OK(aio_host_step(h, 0.05));
  ASSERT_EQ(watched, 1);
  aio_host_unwatch(w);
  ASSERT_EQ(write(fds[1], "k", 1), 1);
  ASSERT_OK(aio_host_step(h, 0.01));
  ASSERT_EQ(watched, 1);  /* unwatched: no more calls */
  /* a watch does not keep aio_host_run going; free closes those left */
  ASSERT_OK(aio_host_watch(h, fds[0], on_watch, &want, &left));
  ASSERT_OK(aio_host_run(h));
  aio_host_free(h);
  close(fds[0]);
  close(fds[1]);
}

static void *interrupter(void *arg) {
  usleep(50000);
  pthread_kill(*(pthread_t *)arg, SIGINT);
  return NULL;
}

/* a chunk that computes without waiting is cancelled in place */
TEST(host_sigint_busy_chunk) {
  aio_host *h = newhost();
  pthread_t self = pthread_self(), th;
  int round;
  ASSERT_OK(aio_host_catch_sigint_opt(h, AIO_SIGINT_STAY));
  for (round = 1; round <= 2; round++) {  /* hooks work again after one */
    ASSERT_OK(pthread_create(&th, NULL, interrupter, &self));
    ASSERT(aio_host_dostring(h, "local n = 0 while true do n = n + 1 end",
                             "busy") != 0);
    pthread_join(th, NULL);
    ASSERT_CONTAINS(aio_host_errmsg(h), "CancelledError: interrupted");
    ASSERT_EQ(aio_host_interrupted(h), round);
    /* the loop hears of the signal later: it cancels nothing then */
    ASSERT_OK(aio_host_dostring(h, "aio.sleep(0.02) ok = 1", "after"));
  }
  aio_host_free(h);
}
#endif
