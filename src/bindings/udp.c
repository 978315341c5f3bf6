/*
** udp.c: the module _aio.udp: datagram sockets.  One datagram is received
** at a time into the transport's buffer (loop.h); recvfrom makes it a Lua
** string.  Names are resolved by lua/aio/udp.lua; here addresses are
** numeric.
*/
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "sched.h"

#define UDP_MT "aio.UDP"

typedef struct aio_udp_t {
  aio_bhandle *h;     /* NULL once closed */
  aio_task *rt;       /* waiting in recvfrom */
  long got;           /* the datagram's length or an error, when ready */
  int ready;
  int perr;           /* an error a send found that belongs to recvfrom */
} aio_udp_t;

static int raise_os(lua_State *L, int code, const char *what) {
  return aio__error(L, "OSError", code, "%s: %s", what, aio__strerror(code));
}

static void checkaddr(lua_State *L, int i, aio_addr *a) {
  static const char *const fams[] = { "inet", "inet6", NULL };
  size_t len;
  const char *host;
  memset(a, 0, sizeof *a);
  a->family = AIO_AF_INET + luaL_checkoption(L, i, NULL, fams);
  host = luaL_optlstring(L, i + 1, "", &len);
  if (len >= sizeof a->host) luaL_argerror(L, i + 1, "address too long");
  memcpy(a->host, host, len + 1);
  a->port = (int)luaL_optinteger(L, i + 2, 0);
  if (a->port < 0 || a->port > 65535) luaL_argerror(L, i + 2, "bad port");
}

static void on_udp(aio_bhandle *h, int event, long status, void *data) {
  aio_udp_t *u = data;
  (void)h;
  if (event != AIO_SEV_READ) return;
  u->ready = 1;
  u->got = status;
  if (u->rt) {
    aio_task *t = u->rt;
    u->rt = NULL;
    aio__wake(t);
  }
}

static void destroy(aio_udp_t *u) {
  if (u->h) aio__handle_close(u->h, NULL, NULL);
  u->h = NULL;
  if (u->rt) {  /* a recvfrom in progress ends with nil */
    aio_task *t = u->rt;
    u->rt = NULL;
    aio__wake(t);
  }
}

/* A socket belongs to the loop that opened it: once that loop has closed
** (aio.run returned), its fd is closed and the socket is too.  (It looked
** open and raised EBADF, or worse, used an fd number reused since.) */
static int is_closed(aio_udp_t *u) {
  if (u->h != NULL && aio__handle_loop(u->h) == NULL) destroy(u);
  return u->h == NULL;
}

static aio_udp_t *checkudp(lua_State *L, int i, const char *fname) {
  aio_udp_t *u = luaL_checkudata(L, i, UDP_MT);
  if (is_closed(u)) luaL_error(L, "%s: the UDP socket is closed", fname);
  return u;
}

/* open(family [, lhost, lport, reuse_port, broadcast]) */
static int l_open(lua_State *L) {
  aio_sched *s = aio__sched_check(L, "open_udp");
  aio_addr local;
  int rc, bind = !lua_isnoneornil(L, 2) || !lua_isnoneornil(L, 3);
  aio_udp_t *u;
  checkaddr(L, 1, &local);
  u = lua_newuserdatauv(L, sizeof *u, 0);
  memset(u, 0, sizeof *u);
  luaL_setmetatable(L, UDP_MT);
  rc = aio__dgram_open(s->lp, &u->h, local.family, bind ? &local : NULL,
                       lua_toboolean(L, 4), lua_toboolean(L, 5), on_udp, u);
  if (rc < 0) {
    u->h = NULL;
    return raise_os(L, rc, "open_udp");
  }
  return 1;
}

static int udp_connect(lua_State *L) {
  aio_udp_t *u = checkudp(L, 1, "connect");
  aio_addr to;
  int rc;
  checkaddr(L, 2, &to);
  if ((rc = aio__dgram_connect(u->h, &to)) < 0)
    return raise_os(L, rc, "open_udp: connect");
  return 0;
}

/* An ICMP "port unreachable" for an earlier datagram of a connected
** socket comes back as ECONNREFUSED from whichever call the kernel has
** next; a send that gets it has sent nothing.  As asyncio hands it to
** error_received rather than to sendto, it is kept for recvfrom (which
** raises it) and the send made again. */
static int dgram_send(aio_udp_t *u, const char *p, size_t len,
                      const aio_addr *to) {
  int rc = aio__dgram_send(u->h, p, len, to);
  if (rc == -ECONNREFUSED) {
    u->perr = rc;
    rc = aio__dgram_send(u->h, p, len, to);
    if (rc == -ECONNREFUSED) rc = 0;  /* a second report: kept once */
  }
  return rc;
}

/* udp:sendto(data, family, host, port) / udp:send(data) */
static int udp_sendto(lua_State *L) {
  aio_udp_t *u = checkudp(L, 1, "sendto");
  size_t len;
  const char *p = luaL_checklstring(L, 2, &len);
  aio_addr to;
  int rc;
  checkaddr(L, 3, &to);
  if ((rc = dgram_send(u, p, len, &to)) < 0) return raise_os(L, rc, "sendto");
  return 0;
}

static int udp_send(lua_State *L) {
  aio_udp_t *u = checkudp(L, 1, "send");
  size_t len;
  const char *p = luaL_checklstring(L, 2, &len);
  int rc;
  if ((rc = dgram_send(u, p, len, NULL)) < 0) return raise_os(L, rc, "send");
  return 0;
}

static void recv_cleanup(aio_task *t) {
  aio_udp_t *u = t->wait_data;
  u->rt = NULL;
  if (u->h) aio__dgram_stop_recv(u->h);
}

static int recvfrom_k(lua_State *L, int status, lua_KContext ctx) {
  aio_udp_t *u = luaL_checkudata(L, 1, UDP_MT);
  aio_task *t;
  int rc;
  (void)ctx;
  if (status == LUA_YIELD) aio__wait_end(L);
  if (u->h == NULL) return 0;  /* closed while waiting: nil */
  if (u->perr) {  /* found by a send (dgram_send) */
    int e = u->perr;
    u->perr = 0;
    return raise_os(L, e, "recvfrom");
  }
  if (u->ready) {
    aio_addr from;
    size_t len;
    const char *p;
    u->ready = 0;
    if (u->got < 0) return raise_os(L, (int)u->got, "recvfrom");
    p = aio__dgram_last(u->h, &len, &from);
    lua_pushlstring(L, p, len);
    lua_pushstring(L, from.host);
    lua_pushinteger(L, from.port);
    return 3;
  }
  if (u->rt != NULL)
    return luaL_error(L, "recvfrom: another task is already receiving");
  t = aio__wait_begin(L, "recvfrom");
  if ((rc = aio__dgram_start_recv(u->h)) < 0) return raise_os(L, rc, "recvfrom");
  u->rt = t;
  return aio__park(L, t, recv_cleanup, u, "recvfrom", 0, recvfrom_k);
}

/* task:waiting()'s detail of a recvfrom: "socket " and the local address */
static int recv_detail(lua_State *L, aio_task *t) {
  aio_udp_t *u = t->wait_data;
  aio_addr a;
  if (u->h == NULL || aio__dgram_sockname(u->h, &a) < 0) return 0;
  aio__push_addr_label(L, "socket ", &a);
  return 1;
}

/* udp:recvfrom() -> data, host, port */
static int udp_recvfrom(lua_State *L) {
  checkudp(L, 1, "recvfrom");
  lua_settop(L, 1);
  return recvfrom_k(L, LUA_OK, 0);
}

static int udp_getsockname(lua_State *L) {
  aio_udp_t *u = checkudp(L, 1, "getsockname");
  aio_addr a;
  int rc;
  if ((rc = aio__dgram_sockname(u->h, &a)) < 0)
    return raise_os(L, rc, "getsockname");
  lua_pushstring(L, a.host);
  lua_pushinteger(L, a.port);
  return 2;
}

static int udp_close(lua_State *L) {
  destroy(luaL_checkudata(L, 1, UDP_MT));
  return 0;
}

static int udp_is_closed(lua_State *L) {
  aio_udp_t *u = luaL_checkudata(L, 1, UDP_MT);
  lua_pushboolean(L, is_closed(u));
  return 1;
}

static int udp_gc(lua_State *L) {
  aio_udp_t *u = lua_touserdata(L, 1);
  if (!is_closed(u))
    fprintf(stderr, "aiolua: warning: an unclosed UDP socket was "
            "garbage-collected; closing it\n");
  destroy(u);
  return 0;
}

static const luaL_Reg udp_methods[] = {
  { "connect", udp_connect },
  { "sendto", udp_sendto },
  { "send", udp_send },
  { "recvfrom", udp_recvfrom },
  { "getsockname", udp_getsockname },
  { "close", udp_close },
  { "is_closed", udp_is_closed },
  { NULL, NULL }
};

static const luaL_Reg udp_meta[] = {
  { "__gc", udp_gc },
  { "__close", udp_close },
  { NULL, NULL }
};

static const luaL_Reg funcs[] = {
  { "open", l_open },
  { NULL, NULL }
};

int luaopen__aio_udp(lua_State *L) {
  aio__wait_detail_set("recvfrom", recv_detail);
  luaL_newlib(L, funcs);
  luaL_newmetatable(L, UDP_MT);
  luaL_setfuncs(L, udp_meta, 0);
  luaL_newlib(L, udp_methods);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "__index");
  lua_setfield(L, -3, "methods");
  lua_pop(L, 1);
  return 1;
}
