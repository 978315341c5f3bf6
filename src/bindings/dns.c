/*
** dns.c: the module _aio.dns: getaddrinfo on the worker pool
** (src/host/pool.h), as asyncio's runs in its default executor, so the
** loop never blocks on name resolution.  Numeric hosts are answered at
** once, without a thread.
**
** Ownership of a request, as thread.c's jobs: the box (a userdata on the
** waiting task's stack) owns it; when the task stops waiting early (a
** cancel, the loop's close) the cleanup takes it off the pool's queue if
** it has not started (asyncio's executor skips a cancelled job) and hands
** it to the pool, whose completion frees it.  The pool's workers are
** joined when the last loop that used them closes: nothing is left
** running after aio.run or aio_host_free (a host's own threads would keep
** glibc's resolver state, which valgrind then reports).
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#define EAI_SYSTEM (-11)   /* no such result on Windows */
#else
#include <netdb.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#endif

#include "pool.h"
#include "sched.h"

#define REQ_MT     "aio.DNSRequest"

typedef struct dreq {
  aio_work w;           /* first: the pool's part */
  aio_task *t;          /* the waiting task, NULL once it stopped waiting */
  struct dreq **box;    /* the box that owns it, NULL: the pool owns it */
  int inflight;         /* submitted, done not run yet */
  int cancelled;        /* never ran: the loop closed */
  char *host, *port;
  struct addrinfo hints;
  struct addrinfo *res;
  int rc, err;          /* getaddrinfo's result, errno for EAI_SYSTEM */
} dreq;

static void req_free(dreq *r) {
  if (r->res) freeaddrinfo(r->res);
  free(r->host);
  free(r->port);
  free(r);
}

/* on a worker */
static void lookup(aio_work *w) {
  dreq *r = (dreq *)w;
  r->rc = getaddrinfo(r->host, r->port, &r->hints, &r->res);
  r->err = errno;
}

/* on the loop's thread, once the lookup is through (or never ran) */
static void lookup_done(aio_work *w, int status) {
  dreq *r = (dreq *)w;
  r->inflight = 0;
  if (status != 0) r->cancelled = 1;
  if (r->box == NULL) {  /* nobody waits any more */
    req_free(r);
    return;
  }
  if (r->t != NULL) {
    aio_task *t = r->t;
    r->t = NULL;
    aio__wake(t);
  }
}

/* ---- results ---- */

static int pusherr(lua_State *L, const char *host, int rc, int err) {
  if (rc == EAI_SYSTEM)
    return aio__error(L, "OSError", -err, "getaddrinfo %s: %s",
                      host ? host : "(nil)", strerror(err));
  aio__pusherror(L, "DNSError", 0, "getaddrinfo %s: %s",
                 host ? host : "(nil)", gai_strerror(rc));
  lua_pushinteger(L, rc);
  lua_setfield(L, -2, "gai_code");
  switch (rc) {
    case EAI_NONAME: lua_pushliteral(L, "EAI_NONAME"); break;
    case EAI_AGAIN: lua_pushliteral(L, "EAI_AGAIN"); break;
    case EAI_FAIL: lua_pushliteral(L, "EAI_FAIL"); break;
    case EAI_FAMILY: lua_pushliteral(L, "EAI_FAMILY"); break;
    case EAI_SERVICE: lua_pushliteral(L, "EAI_SERVICE"); break;
#ifdef EAI_NODATA
    case EAI_NODATA: lua_pushliteral(L, "EAI_NODATA"); break;
#endif
#ifdef EAI_ADDRFAMILY
    case EAI_ADDRFAMILY: lua_pushliteral(L, "EAI_ADDRFAMILY"); break;
#endif
#ifdef EAI_BADFLAGS
    case EAI_BADFLAGS: lua_pushliteral(L, "EAI_BADFLAGS"); break;
#endif
#ifdef EAI_MEMORY
    case EAI_MEMORY: lua_pushliteral(L, "EAI_MEMORY"); break;
#endif
#ifdef EAI_SOCKTYPE
    case EAI_SOCKTYPE: lua_pushliteral(L, "EAI_SOCKTYPE"); break;
#endif
    default: lua_pushfstring(L, "EAI_%d", rc); break;
  }
  lua_setfield(L, -2, "code");
  return lua_error(L);
}

/* push the array {family=, host=, port=}, without repeats */
static int pushlist(lua_State *L, struct addrinfo *res) {
  struct addrinfo *ai;
  int n = 0;
  lua_newtable(L);                                /* list */
  lua_newtable(L);                                /* list seen */
  for (ai = res; ai; ai = ai->ai_next) {
    char host[INET6_ADDRSTRLEN + 16];
    const char *fam;
    int port;
    if (ai->ai_family == AF_INET) {
      struct sockaddr_in *sin = (struct sockaddr_in *)ai->ai_addr;
      inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host);
      port = ntohs(sin->sin_port);
      fam = "inet";
    } else if (ai->ai_family == AF_INET6) {
      struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ai->ai_addr;
      inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof host);
      if (sin6->sin6_scope_id) {
        size_t l = strlen(host);
        snprintf(host + l, sizeof host - l, "%%%u",
                 (unsigned)sin6->sin6_scope_id);
      }
      port = ntohs(sin6->sin6_port);
      fam = "inet6";
    } else {
      continue;
    }
    if (lua_getfield(L, -1, host) != LUA_TNIL) {
      lua_pop(L, 1);
      continue;
    }
    lua_pop(L, 1);
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, host);
    lua_createtable(L, 0, 3);
    lua_pushstring(L, fam);
    lua_setfield(L, -2, "family");
    lua_pushstring(L, host);
    lua_setfield(L, -2, "host");
    lua_pushinteger(L, port);
    lua_setfield(L, -2, "port");
    lua_rawseti(L, -3, ++n);
  }
  lua_pop(L, 1);
  return 1;
}

/* ---- the Lua side ---- */

static int box_gc(lua_State *L) {
  dreq **box = lua_touserdata(L, 1), *r = *box;
  if (r == NULL) return 0;
  *box = NULL;
  if (r->inflight) {  /* the pool's completion frees it */
    r->box = NULL;
    r->t = NULL;
    aio__pool_cancel(&r->w);
  } else {
    req_free(r);
  }
  return 0;
}

/* the task stops waiting before the lookup is through */
static void gai_cleanup(aio_task *t) {
  dreq *r = t->wait_data;
  if (r == NULL) return;
  r->t = NULL;
  if (r->inflight) {
    aio__pool_cancel(&r->w);  /* not started: it never runs */
    *r->box = NULL;  /* the box is still on the task's stack */
    r->box = NULL;
  }
}

static int gai_k(lua_State *L, int status, lua_KContext ctx) {
  dreq **box = lua_touserdata(L, (int)ctx), *r;
  (void)status;
  aio__wait_end(L);  /* raises when cancelled: the box frees the request */
  r = *box;
  if (r->cancelled)
    return aio__error(L, "CancelledError", 0, "getaddrinfo: the loop was "
                      "closed");
  if (r->rc != 0) return pusherr(L, r->host, r->rc, r->err);
  return pushlist(L, r->res);
}

static char *dupstr(const char *s) {
  char *p;
  if (s == NULL) return NULL;
  p = malloc(strlen(s) + 1);
  if (p) strcpy(p, s);
  return p;
}

/* getaddrinfo(host|nil, port|nil [, family, passive, dgram]) -> list */
static int l_getaddrinfo(lua_State *L) {
  static const char *const fams[] = { "any", "inet", "inet6", NULL };
  const char *host = luaL_optstring(L, 1, NULL);
  const char *port;
  int fam = luaL_checkoption(L, 3, "any", fams), rc;
  struct addrinfo hints, *res = NULL;
  aio_sched *s;
  aio_task *t;
  dreq *r, **box;
  if (lua_isnoneornil(L, 2)) port = NULL;
  else port = luaL_checkstring(L, 2);  /* numbers convert */
  memset(&hints, 0, sizeof hints);
  hints.ai_family = fam == 1 ? AF_INET : fam == 2 ? AF_INET6 : AF_UNSPEC;
  hints.ai_socktype = lua_toboolean(L, 5) ? SOCK_DGRAM : SOCK_STREAM;
  hints.ai_flags = lua_toboolean(L, 4) ? AI_PASSIVE : 0;
  if (host == NULL && port == NULL)
    return luaL_error(L, "getaddrinfo: host and port are both nil");
  /* numeric hosts need no thread */
  {
    struct addrinfo h2 = hints;
    h2.ai_flags |= AI_NUMERICHOST;
    if (host == NULL || (rc = getaddrinfo(host, port, &h2, &res)) == 0) {
      if (host == NULL && (rc = getaddrinfo(NULL, port, &h2, &res)) != 0)
        return pusherr(L, host, rc, errno);
      pushlist(L, res);
      freeaddrinfo(res);
      return 1;
    }
    if (rc != EAI_NONAME) return pusherr(L, host, rc, errno);
  }
  s = aio__sched_check(L, "getaddrinfo");
  t = aio__wait_begin(L, "getaddrinfo");
  lua_settop(L, 5);
  box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  luaL_setmetatable(L, REQ_MT);
  if ((r = calloc(1, sizeof *r)) == NULL) return luaL_error(L, "not enough memory");
  r->host = dupstr(host);
  r->port = dupstr(port);
  if (r->host == NULL || (port && r->port == NULL)) {
    req_free(r);
    return luaL_error(L, "not enough memory");
  }
  r->hints = hints;
  r->box = box;
  *box = r;
  if ((rc = aio__pool_submit(s, &r->w, lookup, lookup_done)) < 0)
    return aio__error(L, "OSError", rc, "getaddrinfo: no worker thread");
  r->inflight = 1;
  r->t = t;
  return aio__park_real(L, t, gai_cleanup, r, "getaddrinfo", lua_gettop(L),
                   gai_k);
}

static const luaL_Reg funcs[] = {
  { "getaddrinfo", l_getaddrinfo },
  { NULL, NULL }
};

int luaopen__aio_dns(lua_State *L) {
  luaL_newmetatable(L, REQ_MT);
  lua_pushcfunction(L, box_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}
