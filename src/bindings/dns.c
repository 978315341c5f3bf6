/*
** dns.c: the module _aio.dns: getaddrinfo on a small pool of worker
** threads, so the loop never blocks on name resolution.  Numeric hosts are
** answered at once, without a thread.
**
** A request is shared by the loop thread and a worker, counted by `refs`:
** one for the worker (passed on to the posted completion), one for the
** Lua-side box.  `want` says the loop still wants the answer: a cancel or
** the loop's close clears it, and a worker then never posts to a loop that
** may be gone.  All of a request's fields after submission are read and
** written under the pool's mutex.
*/
#include <errno.h>
#include <pthread.h>
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

#include "sched.h"

#define REQ_MT     "aio.DNSRequest"
#define MAXTHREADS 4

typedef struct dreq {
  struct dreq *next;
  aio_sched *s;
  aio_task *t;          /* the waiting task */
  char *host, *port;
  struct addrinfo hints;
  struct addrinfo *res;
  int rc, err;          /* getaddrinfo's result, errno for EAI_SYSTEM */
  int refs, want, finished;
} dreq;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static dreq *qhead, *qtail;
static int nthreads, nidle;

static void req_free(dreq *r) {
  if (r->res) freeaddrinfo(r->res);
  free(r->host);
  free(r->port);
  free(r);
}

/* on the loop's thread: the answer is in */
static void on_done(void *owner, void *ud) {
  dreq *r = ud;
  aio_task *t;
  int left;
  (void)owner;
  pthread_mutex_lock(&mu);
  t = r->want ? r->t : NULL;
  r->t = NULL;
  left = --r->refs;
  pthread_mutex_unlock(&mu);
  if (t) aio__wake(t);
  if (left == 0) req_free(r);
}

static void *worker(void *arg) {
  (void)arg;
  for (;;) {
    dreq *r;
    int left;
    pthread_mutex_lock(&mu);
    while (qhead == NULL) {
      nidle++;
      pthread_cond_wait(&cv, &mu);
      nidle--;
    }
    r = qhead;
    qhead = r->next;
    if (qhead == NULL) qtail = NULL;
    if (!r->want) {
      /* cancelled (or its loop closed) while queued: not looked up, as
      ** asyncio's executor skips a cancelled job that has not started */
      r->finished = 1;
      left = --r->refs;
      pthread_mutex_unlock(&mu);
      if (left == 0) req_free(r);
      continue;
    }
    pthread_mutex_unlock(&mu);
    r->rc = getaddrinfo(r->host, r->port, &r->hints, &r->res);
    r->err = errno;
    pthread_mutex_lock(&mu);
    r->finished = 1;
    /* posting under the mutex: a loop that still wants it is open */
    if (!r->want || aio__sched_post(r->s, on_done, r) != 0) r->refs--;
    left = r->refs;
    pthread_mutex_unlock(&mu);
    if (left == 0) req_free(r);
  }
  return NULL;
}

/* queue r (under the mutex); 0 or -errno */
static int submit(dreq *r) {
  int rc = 0;
  pthread_mutex_lock(&mu);
  if (nidle == 0 && nthreads < MAXTHREADS) {
    pthread_t th;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    if (pthread_create(&th, &attr, worker, NULL) == 0) nthreads++;
    else if (nthreads == 0) rc = -EAGAIN;
    pthread_attr_destroy(&attr);
  }
  if (rc == 0) {
    r->next = NULL;
    if (qtail) qtail->next = r;
    else qhead = r;
    qtail = r;
    pthread_cond_signal(&cv);
  }
  pthread_mutex_unlock(&mu);
  return rc;
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
  int left;
  if (r == NULL) return 0;
  *box = NULL;
  pthread_mutex_lock(&mu);
  r->want = 0;
  r->t = NULL;
  left = --r->refs;
  pthread_mutex_unlock(&mu);
  if (left == 0) req_free(r);
  return 0;
}

static void gai_cleanup(aio_task *t) {
  dreq *r = t->wait_data;
  pthread_mutex_lock(&mu);
  r->want = 0;
  r->t = NULL;
  pthread_mutex_unlock(&mu);
}

static int gai_k(lua_State *L, int status, lua_KContext ctx) {
  dreq **box = lua_touserdata(L, (int)ctx), *r = *box;
  (void)status;
  aio__wait_end(L);
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
  r->s = s;
  r->hints = hints;
  r->refs = 2;
  r->want = 1;
  r->t = t;
  *box = r;
  if ((rc = submit(r)) < 0) {
    r->refs = 1;
    return aio__error(L, "OSError", rc, "getaddrinfo: no worker thread");
  }
  return aio__park(L, t, gai_cleanup, r, "getaddrinfo", lua_gettop(L),
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
