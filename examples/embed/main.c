/*
** examples/embed/main.c: a game-style main loop that embeds aiolua.
**
** The application owns the loop: 60 frames a second it resolves the
** futures of scripts waiting for the next frame, steps the host without
** blocking, and "renders".  Between frames it sleeps in poll() on the
** host's fd, so I/O, timers and posts from other threads are handled as
** soon as they come.  Lua scripts see a C module `game`:
**
**   game.frame()           the current frame number
**   game.next_frame()      a future: done at the start of the next frame
**   game.load(name)        a future: a slow "asset load" on the worker pool
**   game.quit()            ends the main loop after this frame
**
** Build: make examples (cc main.c $(pkg-config --cflags --libs aiolua))
** Run:   build/examples/embed [script.lua]   (default: examples/embed/game.lua)
*/
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "aiolua.h"

#define FPS 60
#define MAX_WAITERS 64

static long frame;
static int quit;
static aio_future *waiters[MAX_WAITERS];
static int nwaiters;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- the game module ---- */

static int game_frame(lua_State *L) {
  lua_pushinteger(L, frame);
  return 1;
}

static int game_next_frame(lua_State *L) {
  if (nwaiters == MAX_WAITERS) return luaL_error(L, "too many waiters");
  waiters[nwaiters++] = aio_future_new(aio_host_of(L));  /* pushed */
  return 1;
}

typedef struct load { aio_future *f; char name[64]; unsigned sum; } load;

static void load_work(void *ud) {  /* on a worker thread: no Lua here */
  load *ld = ud;
  size_t i;
  usleep(100 * 1000);  /* a slow disk */
  for (i = 0; ld->name[i]; i++) ld->sum = ld->sum * 31 + (unsigned char)ld->name[i];
}

static void load_done(aio_host *h, void *ud, int status) {  /* loop thread */
  load *ld = ud;
  lua_State *L = aio_host_lua(h);
  if (status == 0) {
    lua_createtable(L, 0, 2);
    lua_pushstring(L, ld->name);
    lua_setfield(L, -2, "name");
    lua_pushinteger(L, ld->sum);
    lua_setfield(L, -2, "checksum");
    aio_future_resolve(ld->f, 1);
  } else {
    lua_pushstring(L, "the game is shutting down");
    aio_future_reject(ld->f);
  }
  free(ld);
}

static int game_load(lua_State *L) {
  aio_host *h = aio_host_of(L);
  const char *name = luaL_checkstring(L, 1);
  load *ld = calloc(1, sizeof *ld);
  if (ld == NULL) return luaL_error(L, "not enough memory");
  snprintf(ld->name, sizeof ld->name, "%s", name);
  ld->f = aio_future_new(h);  /* pushed: the return value */
  if (aio_host_submit_work(h, load_work, load_done, ld) != 0) {
    free(ld);
    return luaL_error(L, "game.load: %s", aio_host_errmsg(h));
  }
  return 1;
}

static int game_quit(lua_State *L) {
  (void)L;
  quit = 1;
  return 0;
}

static const luaL_Reg game_funcs[] = {
  { "frame", game_frame },
  { "next_frame", game_next_frame },
  { "load", game_load },
  { "quit", game_quit },
  { NULL, NULL }
};

/* ---- the main loop ---- */

static void start_frame(aio_host *h) {
  int i, n = nwaiters;
  frame++;
  nwaiters = 0;
  for (i = 0; i < n; i++) {
    lua_pushinteger(aio_host_lua(h), frame);
    aio_future_resolve(waiters[i], 1);
  }
}

/* sleep until `deadline`, waking early for the host's fd or timers */
static void idle_until(aio_host *h, double deadline) {
  struct pollfd p = { aio_host_fd(h), POLLIN, 0 };
  for (;;) {
    double left = deadline - now(), t = aio_host_timeout(h);
    if (left <= 0) return;
    if (t < 0 || t > left) t = left;
    poll(&p, p.fd >= 0 ? 1 : 0, (int)(t * 1000) + 1);
    aio_host_step(h, 0);
  }
}

int main(int argc, char **argv) {
  const char *script = argc > 1 ? argv[1] : "examples/embed/game.lua";
  aio_host *h = aio_host_new();
  double next;
  int rc = 0;
  if (h == NULL) return 1;
  aio_host_register(h, "game", game_funcs);
  /* the script spawns its tasks and returns; they run under the frames */
  if (aio_host_dofile(h, script) != 0) {
    fprintf(stderr, "embed: %s\n", aio_host_errmsg(h));
    aio_host_free(h);
    return 1;
  }
  next = now();
  while (!quit && frame < 10 * FPS) {
    start_frame(h);
    if (aio_host_step(h, 0) != 0) {
      fprintf(stderr, "embed: %s\n", aio_host_errmsg(h));
      rc = 1;
      break;
    }
    /* render(); */
    next += 1.0 / FPS;
    idle_until(h, next);
  }
  printf("embed: %ld frames\n", frame);
  aio_host_free(h);  /* cancels what still runs, runs its cleanup */
  return rc;
}
