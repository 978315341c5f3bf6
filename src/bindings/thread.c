/*
** thread.c: the module _aio.thread: aio.to_thread(fn, ...) runs fn in a
** fresh Lua state on a worker of the pool (src/host/pool.h), so CPU-bound
** or blocking work does not stop the loop.  fn crosses as string.dump
** bytecode (upvalues other than _ENV and fn itself are refused);
** arguments, results and the error are copied through a byte buffer: nil,
** booleans, numbers, strings and tables of those (metatables are not
** copied, but an aio error object stays one; cycles refused).
**
** Ownership of a job: before submission and while its task waits, the
** job box (a userdata on the task's stack) owns it; when the task stops
** waiting early (cancel, the loop's close) the cleanup hands it to the
** pool, whose completion frees it.  A cancel takes a job that has not
** started off the queue; a running worker is never interrupted by a
** cancel (its result is dropped), only by the loop's close.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lualib.h"

#include "pool.h"
#include "sched.h"

#define BOX_MT    "aio.ThreadJob"
#define MAX_DEPTH 100
#define HOOK_EVERY 10000  /* instructions between two looks at interrupted */

typedef struct buf {
  char *p;
  size_t n, cap, pos;
} buf;

typedef struct job {
  aio_work w;
  aio_task *t;           /* the waiting task, NULL once it stopped waiting */
  struct job **box;      /* the box that owns it, NULL: the pool owns it */
  int inflight;          /* submitted, done not run yet */
  int failed;            /* res holds the error value */
  int cancelled;         /* never ran: the loop closed */
  buf code, args, res;
  char *path, *cpath;    /* the caller's package.path and cpath */
  int nup;               /* fn's upvalues, each _ENV or fn itself */
  unsigned char upself[256];  /* 1: fn itself (a recursive local function) */
} job;

static void buf_free(buf *b) {
  free(b->p);
  b->p = NULL;
  b->n = b->cap = b->pos = 0;
}

static void job_free(job *j) {
  free(j->path);
  free(j->cpath);
  buf_free(&j->code);
  buf_free(&j->args);
  buf_free(&j->res);
  free(j);
}

static int put(buf *b, const void *p, size_t n) {
  if (b->n + n > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    char *q;
    while (cap < b->n + n) cap *= 2;
    q = realloc(b->p, cap);
    if (q == NULL) return -1;
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->n, p, n);
  b->n += n;
  return 0;
}

/* ====================================================================== */
/* copying values                                                         */
/* ====================================================================== */

enum { V_NIL = 1, V_FALSE, V_TRUE, V_INT, V_NUM, V_STR, V_TABLE, V_END,
       V_ERROR };  /* V_ERROR: a table that is an aio error object */
enum { E_OK, E_TYPE, E_CYCLE, E_DEPTH, E_MEM };

/* Append the value at idx to b.  `seen` is the index of a table of the
** tables being copied (for cycles).  On E_TYPE *bad names the type. */
static int encode(lua_State *L, int idx, buf *b, int seen, int depth,
                  const char **bad) {
  unsigned char tag;
  idx = lua_absindex(L, idx);
  switch (lua_type(L, idx)) {
    case LUA_TNIL: tag = V_NIL; return put(b, &tag, 1) ? E_MEM : E_OK;
    case LUA_TBOOLEAN:
      tag = lua_toboolean(L, idx) ? V_TRUE : V_FALSE;
      return put(b, &tag, 1) ? E_MEM : E_OK;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        lua_Integer i = lua_tointeger(L, idx);
        tag = V_INT;
        return put(b, &tag, 1) || put(b, &i, sizeof i) ? E_MEM : E_OK;
      } else {
        lua_Number d = lua_tonumber(L, idx);
        tag = V_NUM;
        return put(b, &tag, 1) || put(b, &d, sizeof d) ? E_MEM : E_OK;
      }
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      tag = V_STR;
      return put(b, &tag, 1) || put(b, &n, sizeof n) || put(b, s, n)
             ? E_MEM : E_OK;
    }
    case LUA_TTABLE: {
      int rc = E_OK;
      if (depth >= MAX_DEPTH) return E_DEPTH;
      if (lua_rawgetp(L, seen, lua_topointer(L, idx)) != LUA_TNIL) {
        lua_pop(L, 1);
        return E_CYCLE;
      }
      lua_pop(L, 1);
      if (!lua_checkstack(L, 4)) return E_MEM;
      lua_pushboolean(L, 1);
      lua_rawsetp(L, seen, lua_topointer(L, idx));
      /* an aio error object keeps being one (its metatable), as the only
      ** metatable that crosses: aio.errtype and tostring work on it */
      tag = aio__errtype(L, idx) != NULL ? V_ERROR : V_TABLE;
      if (put(b, &tag, 1)) return E_MEM;
      lua_pushnil(L);
      while (lua_next(L, idx)) {
        rc = encode(L, -2, b, seen, depth + 1, bad);
        if (rc == E_OK) rc = encode(L, -1, b, seen, depth + 1, bad);
        lua_pop(L, 1);
        if (rc != E_OK) {
          lua_pop(L, 1);
          return rc;
        }
      }
      lua_pushnil(L);
      lua_rawsetp(L, seen, lua_topointer(L, idx));
      tag = V_END;
      return put(b, &tag, 1) ? E_MEM : E_OK;
    }
    default:
      *bad = luaL_typename(L, idx);
      return E_TYPE;
  }
}

/* Append the values from `first` to the top; 0, or push a message about
** value i (what: "argument", "result") and return non-zero. */
static int encode_all(lua_State *L, int first, buf *b, const char *what,
                      int shift) {
  int top = lua_gettop(L), i, rc = E_OK;
  const char *bad = NULL;
  int32_t n = top - first + 1;
  if (put(b, &n, sizeof n)) rc = E_MEM;
  lua_newtable(L);  /* seen */
  for (i = first; i <= top && rc == E_OK; i++)
    rc = encode(L, i, b, top + 1, 0, &bad);
  lua_pop(L, 1);
  i = i - 1 - first + 1 + shift;
  switch (rc) {
    case E_OK: return 0;
    case E_TYPE:
      lua_pushfstring(L, "aio.to_thread: cannot copy %s %d: it is or holds a "
                      "%s (only nil, booleans, numbers, strings and tables "
                      "of those cross to a thread)", what, i, bad);
      break;
    case E_CYCLE:
      lua_pushfstring(L, "aio.to_thread: cannot copy %s %d: a table in it "
                      "contains itself", what, i);
      break;
    case E_DEPTH:
      lua_pushfstring(L, "aio.to_thread: cannot copy %s %d: tables nested "
                      "deeper than %d", what, i, MAX_DEPTH);
      break;
    default:
      lua_pushliteral(L, "aio.to_thread: not enough memory");
  }
  return 1;
}

static int get(buf *b, void *p, size_t n) {
  if (b->pos + n > b->n) return -1;
  memcpy(p, b->p + b->pos, n);
  b->pos += n;
  return 0;
}

/* push one value read from b (the buffer is ours: it is well formed) */
static void decode(lua_State *L, buf *b) {
  unsigned char tag = 0;
  luaL_checkstack(L, 3, "aio.to_thread: tables nested too deeply");
  get(b, &tag, 1);
  switch (tag) {
    case V_FALSE: lua_pushboolean(L, 0); break;
    case V_TRUE: lua_pushboolean(L, 1); break;
    case V_INT: {
      lua_Integer i = 0;
      get(b, &i, sizeof i);
      lua_pushinteger(L, i);
      break;
    }
    case V_NUM: {
      lua_Number d = 0;
      get(b, &d, sizeof d);
      lua_pushnumber(L, d);
      break;
    }
    case V_STR: {
      size_t n = 0;
      get(b, &n, sizeof n);
      lua_pushlstring(L, b->p + b->pos, n);
      b->pos += n;
      break;
    }
    case V_TABLE: case V_ERROR:
      lua_newtable(L);
      while (b->pos < b->n && (unsigned char)b->p[b->pos] != V_END) {
        decode(L, b);
        decode(L, b);
        lua_rawset(L, -3);
      }
      b->pos++;
      if (tag == V_ERROR) luaL_setmetatable(L, AIO_ERROR_MT);
      break;
    default: lua_pushnil(L);
  }
}

/* push every value of b; returns how many */
static int decode_all(lua_State *L, buf *b) {
  int32_t n = 0, i;
  b->pos = 0;
  get(b, &n, sizeof n);
  luaL_checkstack(L, n + 3, "aio.to_thread: too many values");
  for (i = 0; i < n; i++) decode(L, b);
  return n;
}

/* ====================================================================== */
/* the worker side (in a fresh Lua state, on a pool thread)               */
/* ====================================================================== */

static void hook(lua_State *L, lua_Debug *ar) {
  job *j = *(job **)lua_getextraspace(L);
  (void)ar;
  if (aio__pool_interrupted(&j->w))
    luaL_error(L, "aio.to_thread: interrupted: the loop was closed");
}

/* in the worker's state: load fn, copy the arguments in, call it, copy
** the results (or the error) out into j->res */
static int run_job(lua_State *L) {
  job *j = lua_touserdata(L, 1);
  int base = 0, nargs, i;
  lua_settop(L, 0);
  luaL_openlibs(L);
  /* require finds what the caller's require finds */
  lua_getglobal(L, "package");
  if (j->path) lua_pushstring(L, j->path), lua_setfield(L, -2, "path");
  if (j->cpath) lua_pushstring(L, j->cpath), lua_setfield(L, -2, "cpath");
  lua_pop(L, 1);
  aio__preload(L);  /* require "aio" as in the caller, aio.so or not */
  if (luaL_loadbufferx(L, j->code.p, j->code.n, "=to_thread", "b")
      != LUA_OK)
    return lua_error(L);
  for (i = 1; i <= j->nup; i++) {  /* load set only the first to _G */
    if (j->upself[i]) lua_pushvalue(L, 1);
    else lua_pushglobaltable(L);
    lua_setupvalue(L, 1, i);
  }
  nargs = decode_all(L, &j->args);                          /* fn args */
  buf_free(&j->args);
  /* the error value is passed back as it is, as pcall gives it */
  if (lua_pcall(L, nargs, LUA_MULTRET, 0) != LUA_OK) {
    j->failed = 1;
    if (encode_all(L, 1, &j->res, "the error", 0) != 0) {
      /* an error value that cannot cross: its text does */
      lua_pop(L, 1);
      luaL_tolstring(L, 1, NULL);
      lua_replace(L, 1);
      lua_settop(L, 1);
      buf_free(&j->res);
      if (encode_all(L, 1, &j->res, "the error", 0) != 0)
        return lua_error(L);
    }
    return 0;
  }
  if (encode_all(L, base + 1, &j->res, "result", 0) != 0) {
    j->failed = 1;
    lua_replace(L, base + 1);
    lua_settop(L, base + 1);
    buf_free(&j->res);
    if (encode_all(L, base + 1, &j->res, "the error", 0) != 0)
      return lua_error(L);
  }
  return 0;
}

static void thread_work(aio_work *w) {
  job *j = (job *)w;
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    j->failed = 1;
    return;  /* res stays empty: "not enough memory" */
  }
  *(job **)lua_getextraspace(L) = j;
  lua_sethook(L, hook, LUA_MASKCOUNT, HOOK_EVERY);
  lua_pushcfunction(L, run_job);
  lua_pushlightuserdata(L, j);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {  /* out of memory, or loading */
    j->failed = 1;
    buf_free(&j->res);
    lua_settop(L, 1);
    encode_all(L, 1, &j->res, "the error", 0);
  }
  lua_close(L);
}

/* ====================================================================== */
/* the loop side                                                          */
/* ====================================================================== */

static int box_gc(lua_State *L) {
  job **box = luaL_checkudata(L, 1, BOX_MT);
  job *j = *box;
  *box = NULL;
  if (j == NULL) return 0;
  if (j->inflight) {  /* the pool's completion frees it */
    /* a task still waiting for it (the state is closing: its finalizers
    ** run in any order) must not reach the job when it is finished */
    if (j->t != NULL) j->t->wait_data = NULL;
    j->box = NULL;
    j->t = NULL;
  } else {
    job_free(j);
  }
  return 0;
}

/* on the loop's thread, once the worker is through (or never ran) */
static void thread_done(aio_work *w, int status) {
  job *j = (job *)w;
  j->inflight = 0;
  if (status != 0) j->cancelled = 1;
  if (j->box == NULL) {  /* nobody waits any more: drop the result */
    job_free(j);
    return;
  }
  if (j->t != NULL) {
    aio_task *t = j->t;
    j->t = NULL;
    aio__wake(t);
  }
}

/* the task stops waiting before the job is through */
static void thread_cleanup(aio_task *t) {
  job *j = t->wait_data;
  if (j == NULL) return;  /* its box was collected: the job is not ours */
  j->t = NULL;
  if (j->inflight) {
    /* not started yet: it never runs (asyncio's executor skips a cancelled
    ** job still queued); its done comes all the same and frees it */
    aio__pool_cancel(&j->w);
    *j->box = NULL;  /* the box is still on the task's stack */
    j->box = NULL;
  }
}

static int writer(lua_State *L, const void *p, size_t n, void *ud) {
  (void)L;
  return put(ud, p, n);
}

static int to_thread_k(lua_State *L, int status, lua_KContext ctx) {
  job **box = lua_touserdata(L, (int)ctx);
  job *j;
  int n;
  (void)status;
  aio__wait_end(L);  /* raises when cancelled: the box frees the job */
  j = *box;
  lua_settop(L, (int)ctx);
  if (j->cancelled) {
    *box = NULL;
    job_free(j);
    return aio__error(L, "CancelledError", 0,
                      "aio.to_thread: the loop was closed");
  }
  if (j->failed && j->res.n == 0) {
    *box = NULL;
    job_free(j);
    return luaL_error(L, "aio.to_thread: not enough memory");
  }
  n = decode_all(L, &j->res);
  *box = NULL;
  if (j->failed) {
    job_free(j);
    lua_settop(L, (int)ctx + 1);
    return lua_error(L);
  }
  job_free(j);
  return n;
}

/* aio.to_thread(fn, ...) */
static int thread_to_thread(lua_State *L) {
  aio_task *t = aio__wait_begin(L, "aio.to_thread");
  int i, rc;
  const char *name;
  job **box, *j;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  if (lua_iscfunction(L, 1))
    return luaL_argerror(L, 1, "a Lua function (a C function cannot be "
                         "moved to a thread)");
  box = lua_newuserdatauv(L, sizeof *box, 0);               /* fn args box */
  *box = NULL;
  luaL_setmetatable(L, BOX_MT);
  lua_insert(L, 1);                                         /* box fn args */
  j = calloc(1, sizeof *j);
  if (j == NULL) return luaL_error(L, "not enough memory");
  *box = j;
  j->box = box;
  /* globals are the worker's own; a recursive local function refers to
  ** itself and is tied again there; any other upvalue cannot cross */
  for (i = 1; (name = lua_getupvalue(L, 2, i)) != NULL; i++) {
    int self = lua_rawequal(L, -1, 2);
    lua_pop(L, 1);
    if (i > 255 || (strcmp(name, "_ENV") != 0 && !self))
      return luaL_error(L, "aio.to_thread: the function uses the upvalue "
                        "'%s' (a local of an enclosing function); only "
                        "globals (_ENV) can cross to a thread: pass it as "
                        "an argument", *name ? name : "?");
    j->upself[i] = (unsigned char)self;
    j->nup = i;
  }
  /* the package table fn sees: through its _ENV when it has one (a
  ** sandbox may have its own), else the global one */
  lua_pushnil(L);
  for (i = 1; (name = lua_getupvalue(L, 2, i)) != NULL; i++) {
    if (strcmp(name, "_ENV") == 0 && lua_istable(L, -1)) {
      lua_replace(L, -2);
      break;
    }
    lua_pop(L, 1);
  }
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_pushglobaltable(L);
  }
  lua_getfield(L, -1, "package");
  lua_remove(L, -2);
  if (lua_type(L, -1) == LUA_TTABLE) {
    if (lua_getfield(L, -1, "path") == LUA_TSTRING)
      j->path = strdup(lua_tostring(L, -1));
    if (lua_getfield(L, -2, "cpath") == LUA_TSTRING)
      j->cpath = strdup(lua_tostring(L, -1));
    lua_pop(L, 2);
  }
  lua_pop(L, 1);
  lua_pushvalue(L, 2);
  if (lua_dump(L, writer, &j->code, 0) != 0)
    return luaL_error(L, "aio.to_thread: not enough memory");
  lua_pop(L, 1);
  if (encode_all(L, 3, &j->args, "argument", 1) != 0) return lua_error(L);
  lua_settop(L, 1);                                         /* box */
  rc = aio__pool_submit(t->sched, &j->w, thread_work, thread_done);
  if (rc != 0)
    return aio__error(L, "OSError", rc, "aio.to_thread: cannot start a "
                      "worker thread: %s", aio__strerror(rc));
  j->inflight = 1;
  j->t = t;
  return aio__park_real(L, t, thread_cleanup, j, "thread", 1, to_thread_k);
}

/* aio.set_thread_pool_size(n) */
static int thread_set_pool_size(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 1 && n <= AIO_POOL_MAX, 1,
                "the pool size must be from 1 to 128");
  aio__pool_set_size((int)n);
  return 0;
}

static int thread_pool_size(lua_State *L) {
  lua_pushinteger(L, aio__pool_size());
  return 1;
}

static const luaL_Reg thread_funcs[] = {
  { "to_thread", thread_to_thread },
  { "set_thread_pool_size", thread_set_pool_size },
  { "thread_pool_size", thread_pool_size },
  { NULL, NULL }
};

int luaopen__aio_thread(lua_State *L) {
  if (luaL_newmetatable(L, BOX_MT)) {
    lua_pushcfunction(L, box_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  luaL_newlib(L, thread_funcs);
  return 1;
}
