/*
** stream.c: the module _aio.stream: stream transports (TCP, Unix sockets,
** pipes) as a Reader and a Writer, and listeners.  Mechanism only; the
** policy (name resolution, happy eyeballs, servers and their handler
** tasks) is lua/aio/stream.lua.
**
** The Reader userdata owns the transport (struct below); the Writer is a
** small userdata pointing at it, with the Reader as its uservalue, so the
** transport lives while either is reachable.  Reads search the transport's
** own buffer in place (memchr/memmem): a line costs one Lua string.  One
** task at a time may wait to read, one for the close; any number may wait
** in drain (a list through their tasks' waiter nodes).
**
** TLS (writer:_starttls, lua/aio/stream.lua) puts a session of tls.h
** between the transport and the Reader/Writer: the session reads the
** transport's buffer and writes its queue, readers see its plaintext
** buffer instead, and every wait stays the same ("want read" is a read).
**
** Internal: _aio.stream.wrap(fd [, limit]) makes a Reader and a Writer of
** any fd (a pipe end, a socketpair half): the transport owns the fd from
** then on, sets it non-blocking and close-on-exec.  Subprocess pipes use it.
*/
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#include <winsock2.h>
#define close(fd) closesocket((SOCKET)(fd))  /* accepted fds are sockets */
#else
#include <sys/stat.h>
#include <unistd.h>
#endif

#include "sched.h"
#include "tls.h"

#define READER_MT   "aio.StreamReader"
#define WRITER_MT   "aio.StreamWriter"
#define LISTENER_MT "aio.Listener"

#define DEFAULT_LIMIT (64 * 1024)
#define HIGH_WATER    (64 * 1024)
#define ACCEPT_QUEUE  1024  /* accepted, not yet taken: accepting pauses */

/* first word of a Reader and of a Writer: see fastcheck() */
#define READER_TAG 0x61696f52u
#define WRITER_TAG 0x61696f57u

typedef struct aio_stream_t {
  uint32_t tag;         /* READER_TAG */
  aio_bhandle *h;       /* NULL once closed */
  aio_task *rt;         /* waiting to read */
  aio_waiter drainers;  /* tasks waiting in drain (their wnode) */
  aio_task *ct;         /* waiting for the connect */
  aio_task *closet;     /* waiting in wait_closed */
  size_t limit;
  size_t want;          /* the waiting read needs this much buffered */
  size_t searched;      /* readuntil: bytes known to hold no separator */
  lua_Integer rn;       /* the waiting read's count */
  const char *sep;      /* the waiting readuntil's separator (on its stack) */
  size_t seplen;
  const char *cstr;     /* the last string returned (user value 1), see take */
  size_t clen;
  unsigned cmiss;       /* take: misses of that cache in a row */
  size_t hwm;
  int rerr, werr, cerr;
  unsigned eof : 1, closing : 1, reading : 1, paused : 1, is_unix : 1;
  unsigned tls_on : 1, tls_end : 1, line : 1, eof_sent : 1;
  unsigned rslow : 1;   /* reads take slow_rbuf: over TLS, or closed */
  struct aio_kept_t *kept;  /* closed: what was not read yet (see keep) */
  struct aio_names_t *names;  /* the socket's names, once asked or closed */
  aio_peer accepted;    /* an accepted connection's peer, as accept gave it */
  aio_tls *tls;         /* the TLS session (tls_on; NULL once closed) */
  aio_tls_kept *tlskept;  /* its names, kept when it went (get_extra_info) */
  int tlserr;           /* the session failed: its mbedTLS code */
  double hs_deadline;   /* the handshake's, on the loop clock (0: none) */
  double hs_timeout;    /* and its length, for the TimeoutError */
} aio_stream_t;

/* the unread bytes a close kept: data[off, len) */
typedef struct aio_kept_t {
  size_t len, off;
  char data[];
} aio_kept_t;

/* a socket's names (keep_names); family AIO_AF_UNSPEC: not known.  A
** pipe has a label instead ("child pid 42 stdout", for dump_tasks) */
typedef struct aio_names_t {
  aio_addr peer, sock;
  char label[40];
} aio_names_t;

static aio_names_t *names_of(aio_stream_t *st) {
  if (st->names == NULL && (st->names = malloc(sizeof *st->names)) != NULL) {
    st->names->peer.family = st->names->sock.family = AIO_AF_UNSPEC;
    st->names->label[0] = '\0';
  }
  return st->names;
}

typedef struct aio_writer_t {
  uint32_t tag;         /* WRITER_TAG */
  aio_stream_t *st;
} aio_writer_t;

typedef struct aio_listener_t {
  aio_bhandle *h;
  aio_task *at;         /* waiting in accept */
  struct aio_accepted_t {
    int fd;
    aio_peer peer;
  } *fds;               /* accepted connections not yet taken */
  int nfds, cap, err;
  size_t limit;
  unsigned accepting : 1, is_unix : 1, has_ino : 1;
  unsigned long long dev, ino;  /* a Unix socket's file, as bound */
} aio_listener_t;

/* ---- helpers ---- */

static int raise_os(lua_State *L, int code, const char *what) {
  return aio__error(L, "OSError", code, "%s: %s", what, aio__strerror(code));
}

static void wake(aio_task **slot) {
  aio_task *t = *slot;
  if (t != NULL) {
    *slot = NULL;
    aio__wake(t);
  }
}

#define container_of(p, type, member) \
  ((type *)((char *)(p) - offsetof(type, member)))

/* Several tasks may wait in drain (asyncio 3.11's _drain_waiters): each
** is linked by its task's own waiter node, so waiting allocates nothing,
** and all wake together; each looks at the queue again when it runs.
** Out of line: inlined, its loop made on_stream save registers on every
** read event. */
#ifdef __GNUC__
__attribute__((noinline))
#endif
static void wake_drainers(aio_stream_t *st) {
  aio_waiter *w;
  while ((w = st->drainers.next) != &st->drainers) {
    w->prev->next = w->next;
    w->next->prev = w->prev;
    w->prev = w->next = NULL;
    aio__wake(container_of(w, aio_task, wnode));
  }
}

static const char *famname(int family) {
  switch (family) {
    case AIO_AF_INET: return "inet";
    case AIO_AF_INET6: return "inet6";
    case AIO_AF_UNIX: return "unix";
  }
  return "unspec";
}

/* fill `a` from family name, host and port at stack indices i, i+1, i+2 */
static void checkaddr(lua_State *L, int i, aio_addr *a) {
  static const char *const fams[] = { "inet", "inet6", "unix", NULL };
  size_t len;
  const char *host;
  memset(a, 0, sizeof *a);
  a->family = AIO_AF_INET + luaL_checkoption(L, i, NULL, fams);
  host = luaL_optlstring(L, i + 1, "", &len);
  if (len >= sizeof a->host) luaL_argerror(L, i + 1, "address too long");
  memcpy(a->host, host, len + 1);
  a->port = (int)luaL_optinteger(L, i + 2, 0);
  if (a->family != AIO_AF_UNIX && (a->port < 0 || a->port > 65535))
    luaL_argerror(L, i + 2, "port out of range");
}

/* push host, port (or the path) of `a`; returns the count */
static int pushaddr(lua_State *L, const aio_addr *a) {
  lua_pushstring(L, a->host);
  if (a->family == AIO_AF_UNIX) return 1;
  lua_pushinteger(L, a->port);
  return 2;
}

/* ====================================================================== */
/* the transport's events                                                 */
/* ====================================================================== */

static size_t buffered(aio_stream_t *st) {
  size_t len = 0, plain = 0;
  if (st->h) aio__stream_rbuf(st->h, &len);
  if (st->tls) aio__tls_rbuf(st->tls, &plain);
  return len + plain;
}

static void on_stream(aio_bhandle *h, int event, long status, void *data) {
  aio_stream_t *st = data;
  switch (event) {
    case AIO_SEV_READ:
      if (status <= 0) {
        st->eof = 1;
        st->reading = 0;
        if (status < 0) {
          st->rerr = (int)status;
          wake(&st->closet);  /* the connection is lost: wait_closed raises */
        }
      } else {  /* backpressure: a reader that does not keep up pauses us */
        size_t pause = st->limit * 2;
        if (st->want > pause) pause = st->want;
        if (buffered(st) >= pause) {
          aio__stream_stop_read(h);
          st->paused = 1;
        }
      }
      wake(&st->rt);
      break;
    case AIO_SEV_WRITE:
      if (status < 0) {
        st->werr = (int)status;
        wake(&st->closet);
      }
      wake_drainers(st);
      break;
    case AIO_SEV_CONNECT:
      st->cerr = (int)status;
      wake(&st->ct);
      break;
    case AIO_SEV_CLOSED:  /* a graceful close is over: h is freed next */
      st->h = NULL;
      wake_drainers(st);
      wake(&st->closet);
      break;
  }
}

/* ====================================================================== */
/* construction and closing                                               */
/* ====================================================================== */

/* push a new Reader, not yet connected to a transport */
static aio_stream_t *newreader(lua_State *L, size_t limit) {
  aio_stream_t *st = lua_newuserdatauv(L, sizeof *st, 1);  /* see take */
  memset(st, 0, sizeof *st);
  st->tag = READER_TAG;
  st->limit = limit ? limit : DEFAULT_LIMIT;
  st->hwm = HIGH_WATER;
  st->drainers.prev = st->drainers.next = &st->drainers;
  luaL_setmetatable(L, READER_MT);
  return st;
}

/* push the Writer of the Reader at idx */
static void pushwriter(lua_State *L, int idx, aio_stream_t *st) {
  aio_writer_t *w;
  idx = lua_absindex(L, idx);
  w = lua_newuserdatauv(L, sizeof *w, 1);
  w->tag = WRITER_TAG;
  w->st = st;
  lua_pushvalue(L, idx);
  lua_setiuservalue(L, -2, 1);
  luaL_setmetatable(L, WRITER_MT);
}

static void tls_drop(aio_stream_t *st) {
  if (st->tls && st->tlskept == NULL) st->tlskept = aio__tls_keep(st->tls);
  aio__tls_free(st->tls);
  st->tls = NULL;
}

static const char *tls_rbuf(aio_stream_t *st, size_t *len);

/* A close keeps what the Reader has received and not read (asyncio's
** StreamReader keeps its buffer): it is copied out of the transport or
** the TLS session, which go, and read from there, then EOF.  Out of
** memory, it is lost: the reader sees EOF. */
static void keep(aio_stream_t *st) {
  size_t len = 0;
  const char *p = "";
  if (st->tls_on) p = tls_rbuf(st, &len);  /* decrypts what has come */
  else if (st->h) p = aio__stream_rbuf(st->h, &len);
  if (len == 0 || st->kept != NULL) return;
  if ((st->kept = malloc(sizeof *st->kept + len)) == NULL) return;
  st->kept->len = len;
  st->kept->off = 0;
  memcpy(st->kept->data, p, len);
  if (!st->tls_on && st->h) aio__stream_consume(st->h, len);
}

/* get_extra_info("peername"/"sockname"): asyncio's transport caches them
** as it starts.  An accepted connection's peer is the address accept gave
** (kept with it: a reset takes it from the socket).  The rest ours asks the
** socket the first time (get_extra_info), and at start_tls, write_eof and
** close at the latest: once both sides have sent their FIN the socket has
** no peer any more.  What a query could not get (a reset came first) is
** asked again next time. */
static void keep_names(aio_stream_t *st) {
  int sock = st->h != NULL && aio__stream_is_socket(st->h);
  if (!sock && st->accepted.family == AIO_AF_UNSPEC) return;
  if (names_of(st) == NULL) return;
  if (st->names->peer.family == AIO_AF_UNSPEC) {
    if (st->accepted.family != AIO_AF_UNSPEC)
      aio__peer_addr(&st->accepted, &st->names->peer);
    else if (sock)
      aio__stream_peername(st->h, &st->names->peer);  /* fills on success */
  }
  if (sock && st->names->sock.family == AIO_AF_UNSPEC)
    aio__stream_sockname(st->h, &st->names->sock);
}

/* close now: the transport and its buffers go; waiting tasks wake */
static void hardclose(aio_stream_t *st) {
  tls_drop(st);
  if (st->h) aio__handle_close(st->h, NULL, NULL);
  st->h = NULL;
  st->closing = 1;
  st->rslow = 1;
  wake(&st->rt);
  wake_drainers(st);
  wake(&st->closet);
}

/* What has arrived and not been read is read in before a socket closes:
** asyncio's transport has read it already (its reader keeps it), and a
** socket closed with unread data resets the connection (RST), which loses
** what is still on its way to the peer.  Up to the mark where a reader
** that does not keep up pauses the transport (2 * limit), as asyncio's
** reads no further either. */
static void pull_pending(aio_stream_t *st) {
  if (st->h == NULL || st->eof || !aio__stream_is_socket(st->h)) return;
  while (buffered(st) < st->limit * 2 && aio__stream_read_now(st->h)) {}
}

/* A stream belongs to the loop that opened it.  Once that loop has closed
** (aio.run returned) its transport is an orphan, its fd closed: the
** stream is closed.  (It looked open; a read waited forever.) */
static int orphaned(aio_stream_t *st) {
  if (st->h == NULL || aio__handle_loop(st->h) != NULL) return 0;
  keep(st);  /* what was read in stays readable */
  hardclose(st);
  return 1;
}

/* close once what is queued has been sent */
static void softclose(aio_stream_t *st) {
  if (st->closing || orphaned(st)) return;
  pull_pending(st);
  keep(st);
  keep_names(st);
  if (st->tls && st->h) aio__tls_close_notify(st->tls);  /* queued first */
  tls_drop(st);
  st->closing = 1;
  st->rslow = 1;
  if (st->h && aio__stream_close_soon(st->h)) st->h = NULL;
  wake(&st->rt);
  /* a drain goes on waiting while the close flushes, as asyncio's: until
  ** the queue is below the mark, or the flush is over (CLOSED) */
  if (st->h == NULL) {
    wake_drainers(st);
    wake(&st->closet);
  }
}

/* The hot path's type check: a full userdata of our size whose first word
** is our tag (only this file makes such blocks; Lua code cannot forge
** one).  luaL_checkudata, with its registry lookup, stays the fallback
** that raises the error.  It costs a tenth of luaL_checkudata. */
static void *fastcheck(lua_State *L, int i, size_t size, uint32_t tag,
                       const char *tname) {
  uint32_t *p = lua_touserdata(L, i);
  if (p != NULL && lua_rawlen(L, i) == size && *p == tag) return p;
  return luaL_checkudata(L, i, tname);
}

static aio_stream_t *checkreader(lua_State *L, int i) {
  return fastcheck(L, i, sizeof(aio_stream_t), READER_TAG, READER_MT);
}

static aio_stream_t *checkwriter(lua_State *L, int i) {
  return ((aio_writer_t *)fastcheck(L, i, sizeof(aio_writer_t), WRITER_TAG,
                                    WRITER_MT))->st;
}

/* A stream close()d while its queue still flushes (softclose kept h) is
** handed to the loop, which finishes the flush and then closes the fd, as
** asyncio's loop keeps a closing transport: the data the program wrote is
** not lost because the program let go of the objects.  h then no longer
** points back to this userdata. */
static int reader_gc(lua_State *L) {
  aio_stream_t *st = lua_touserdata(L, 1);
  if (st->h && st->closing) {
    aio__stream_detach(st->h);
    st->h = NULL;
  }
  /* (no warning once its loop is gone: the loop's close closed it) */
  if (st->h && !st->closing && aio__handle_loop(st->h) != NULL)
    fprintf(stderr, "aiolua: warning: an unclosed stream was "
            "garbage-collected; closing it (call writer:close())\n");
  tls_drop(st);
  if (st->h) aio__handle_close(st->h, NULL, NULL);
  st->h = NULL;
  free(st->kept);
  st->kept = NULL;
  free(st->names);
  st->names = NULL;
  free(st->tlskept);
  st->tlskept = NULL;
  /* finalized: in lua_close another finalizer may still call close or
  ** get_extra_info on it; nothing may allocate for it any more */
  st->closing = 1;
  st->accepted.family = AIO_AF_UNSPEC;  /* keep_names: nothing to keep */
  return 0;
}

/* ====================================================================== */
/* connecting                                                             */
/* ====================================================================== */

static void connect_cleanup(aio_task *t) {
  aio_stream_t *st = t->wait_data;
  st->ct = NULL;
  hardclose(st);  /* an abandoned connect closes its socket */
}

/* continuation: the Reader is at ctx; returns reader, writer */
static int connect_k(lua_State *L, int status, lua_KContext ctx) {
  int idx = (int)ctx;
  aio_stream_t *st = lua_touserdata(L, idx);
  (void)status;
  /* connected, but cancelled before this task ran again: close it */
  if (aio__rt(L)->sched->current->tflags & T_CANCEL_PENDING) hardclose(st);
  aio__wait_end(L);
  if (st->cerr) {
    int err = st->cerr;
    hardclose(st);
    lua_pushfstring(L, "connect to %s", lua_tostring(L, 2));
    if (!lua_isnil(L, 3))
      lua_pushfstring(L, "%s port %s", lua_tostring(L, -1),
                      lua_tostring(L, 3));
    return raise_os(L, err, lua_tostring(L, -1));
  }
  pushwriter(L, idx, st);
  return 2;
}

/* connect(family, host, port [, lfamily, lhost, lport [, limit]]) ->
** reader, writer, once connected; OSError on failure */
static int l_connect(lua_State *L) {
  aio_sched *s = aio__sched_check(L, "open_connection");
  aio_addr to, local;
  aio_stream_t *st;
  aio_task *t;
  int rc, haslocal = !lua_isnoneornil(L, 4);
  size_t limit = (size_t)luaL_optinteger(L, 7, DEFAULT_LIMIT);
  checkaddr(L, 1, &to);
  if (haslocal) checkaddr(L, 4, &local);
  lua_settop(L, 7);
  t = aio__wait_begin(L, "open_connection");
  st = newreader(L, limit);                      /* ... reader */
  st->is_unix = to.family == AIO_AF_UNIX;
  rc = aio__stream_connect(s->lp, &st->h, &to, haslocal ? &local : NULL,
                           on_stream, st);
  if (rc < 0) {
    st->h = NULL;
    lua_pushfstring(L, "connect to %s", to.host);
    if (!st->is_unix)
      lua_pushfstring(L, "%s port %d", lua_tostring(L, -1), to.port);
    return raise_os(L, rc, lua_tostring(L, -1));
  }
  /* the peer is the address connected to: kept now (asyncio's transport
  ** caches it as it starts), so a reset before anyone asks loses nothing */
  if (names_of(st) != NULL) {
    st->names->peer = to;
  }
  st->ct = t;
  return aio__park(L, t, connect_cleanup, st, "connect", lua_gettop(L),
                   connect_k);
}

/* wrap(fd [, limit]) -> reader, writer */
static int l_wrap(lua_State *L) {
  aio_sched *s = aio__sched_check(L, "wrap");
  int fd = (int)luaL_checkinteger(L, 1);
  size_t limit = (size_t)luaL_optinteger(L, 2, DEFAULT_LIMIT);
  aio_stream_t *st = newreader(L, limit);
  int rc = aio__stream_open(s->lp, &st->h, fd, on_stream, st);
  if (rc < 0) {
    st->h = NULL;
    return raise_os(L, rc, "wrap");
  }
  pushwriter(L, -1, st);
  return 2;
}

/* ====================================================================== */
/* reading                                                                */
/* ====================================================================== */

/* the TLS session's plaintext, after decrypting what has arrived; at its
** end (close_notify, an error) the stream is at EOF */
static const char *tls_rbuf(aio_stream_t *st, size_t *len) {
  if (st->tls == NULL) { *len = 0; return ""; }
  if (!st->tls_end) {
    int rc = aio__tls_pull(st->tls);
    if (rc != 0) {
      st->tls_end = 1;
      st->eof = 1;
      if (rc < 0) st->tlserr = rc;
      if (st->h) aio__stream_stop_read(st->h);
      st->reading = 0;
    }
  }
  return aio__tls_rbuf(st->tls, len);
}

/* over TLS the session's plaintext; once closed what the close kept */
static const char *slow_rbuf(aio_stream_t *st, size_t *len) {
  if (st->closing || st->h == NULL) {
    if (st->kept == NULL) { *len = 0; return ""; }
    *len = st->kept->len - st->kept->off;
    return st->kept->data + st->kept->off;
  }
  return tls_rbuf(st, len);
}

/* what is buffered; the plain open stream is the fast path (rslow is set
** whenever h is NULL) */
static const char *rbuf(aio_stream_t *st, size_t *len) {
  if (st->rslow) return slow_rbuf(st, len);
  return aio__stream_rbuf(st->h, len);
}

static int at_eof(aio_stream_t *st) {
  return st->eof || st->h == NULL || st->closing;
}

/* A pipe (a child's stdout or stderr) that has reached its end and been
** read to the last byte has nothing more to give: its fd is closed now, not
** when the Reader is collected, as asyncio's pipe transport closes at EOF.
** Sockets stay: their Writer may still send. */
static void release_at_eof(aio_stream_t *st) {
  size_t len;
  if (st->h == NULL || !st->eof || st->closing || st->tls_on ||
      st->rt != NULL || st->drainers.next != &st->drainers ||
      aio__stream_is_socket(st->h))
    return;
  aio__stream_rbuf(st->h, &len);
  if (len > 0 || aio__stream_queued(st->h) > 0) return;
  aio__handle_close(st->h, NULL, NULL);
  st->h = NULL;
  st->rslow = 1;
}

/* the reader paused the transport (backpressure) and has caught up */
static void resume_read(aio_stream_t *st) {
  st->paused = 0;
  if (aio__stream_start_read(st->h) < 0) st->reading = 0;
}

static void slow_consume(aio_stream_t *st, size_t n) {
  if (st->closing || st->h == NULL) {
    if (st->kept && (st->kept->off += n) >= st->kept->len) {
      free(st->kept);
      st->kept = NULL;
    }
    return;
  }
  if (st->tls) aio__tls_consume(st->tls, n);
  if (!st->eof && st->paused && !st->tls_end && buffered(st) < st->limit)
    resume_read(st);
}

static void consume(aio_stream_t *st, size_t n) {
  st->searched = 0;
  if (st->rslow) {
    slow_consume(st, n);
    return;
  }
  aio__stream_consume(st->h, n);
  if (st->eof) {
    release_at_eof(st);
    return;
  }
  if (st->paused && buffered(st) < st->limit) resume_read(st);
}

/* memmem for the short separators streams use: memchr for the first byte,
** then compare in line (glibc's memmem sets up a two-way search on every
** call; a memcmp call costs more than the two or three bytes it looks at
** before a near miss such as "\r\nHost" for "\r\n\r\n") */
static const char *findsep(const char *p, size_t len, const char *sep,
                           size_t seplen) {
  const char *end = p + len, *q = p;
  if (seplen == 1) return memchr(p, sep[0], len);
#ifndef _WIN32   /* no memmem in msvcrt: the loop below does any length */
  if (seplen > 16) return memmem(p, len, sep, seplen);
#endif
  while ((size_t)(end - q) >= seplen &&
         (q = memchr(q, sep[0], (size_t)(end - q) - seplen + 1)) != NULL) {
    size_t j = 1;
    while (j < seplen && q[j] == sep[j]) j++;
    if (j == seplen) return q;
    q++;
  }
  return NULL;
}

/* A reader remembers the last string it returned (its user value) when
** that was longer than Lua's short strings (which Lua interns itself) and
** at most CACHE_MAX bytes: when the next chunk has the same bytes, as the
** heads of repeated requests often do, that string is returned again
** instead of a new one (strings are values: nobody can tell the
** difference), which spares an allocation and its collection.  After a
** few misses in a row the cache is tried (and refreshed) only every 32nd
** time, so a stream whose chunks never repeat pays almost nothing. */
#define SHORT_MAX 40     /* LUAI_MAXSHORTLEN */
#define CACHE_MAX 512

/* push the first n buffered bytes (the Reader is at index 1) and consume
** them */
static void take(lua_State *L, aio_stream_t *st, const char *p, size_t n) {
  unsigned miss = st->cmiss;
  if (miss < 4 || (miss & 31) == 0) {
    if (n == st->clen && memcmp(p, st->cstr, n) == 0) {
      lua_getiuservalue(L, 1, 1);
      st->cmiss = 0;
      consume(st, n);
      return;
    }
    lua_pushlstring(L, p, n);
    if (n > SHORT_MAX && n <= CACHE_MAX) {
      lua_pushvalue(L, -1);
      lua_setiuservalue(L, 1, 1);
      st->cstr = lua_tostring(L, -1);
      st->clen = n;
    }
  } else {
    lua_pushlstring(L, p, n);
  }
  st->cmiss = miss + 1;
  consume(st, n);
}

static void read_cleanup(aio_task *t) {
  aio_stream_t *st = t->wait_data;
  st->rt = NULL;
  st->want = 0;
}

/* park the current task until more data, EOF or an error arrives; the
** continuation k gets the stream as its context (the read's own arguments
** are in the stream: one task reads at a time) */
static int wait_read(lua_State *L, aio_stream_t *st, const char *fname,
                     size_t want, lua_KFunction k) {
  aio_task *t;
  if (st->rt != NULL)
    return luaL_error(L, "%s: another task is already reading from this "
                      "stream", fname);
  t = aio__wait_begin(L, fname);
  if (orphaned(st)) return k(L, LUA_OK, (lua_KContext)st);  /* closed now */
  if (!st->reading || st->paused) {
    int rc = aio__stream_start_read(st->h);
    if (rc < 0) return raise_os(L, rc, fname);
    st->reading = 1;
    st->paused = 0;
  }
  st->want = want;
  st->rt = t;
  if (!aio__stream_is_socket(st->h))  /* a pipe: a child's output, say */
    return aio__park_real(L, t, read_cleanup, st, "read", (lua_KContext)st, k);
  return aio__park(L, t, read_cleanup, st, "read", (lua_KContext)st, k);
}

/* at EOF with an error pending: raise it */
static void check_rerr(lua_State *L, aio_stream_t *st, const char *fname) {
  if (st->rerr) raise_os(L, st->rerr, fname);
  if (st->tlserr) {
    aio__tls_pusherror(L, st->tls, st->tlserr, fname);
    lua_error(L);
  }
}

static int read_k(lua_State *L, int status, lua_KContext ctx);

/* read(n): n < 0 all until EOF */
static int do_read(lua_State *L, aio_stream_t *st, lua_Integer n) {
  size_t len;
  const char *p = rbuf(st, &len);
  if (n < 0) {  /* all until EOF */
    if (!at_eof(st)) {
      if (st->rt == NULL) st->rn = n;  /* else wait_read raises */
      return wait_read(L, st, "read", SIZE_MAX, read_k);
    }
    check_rerr(L, st, "read");
    if (len == 0) lua_pushnil(L);
    else take(L, st, p, len);
    release_at_eof(st);
    return 1;
  }
  if (len > 0) {
    take(L, st, p, (size_t)n < len ? (size_t)n : len);
    return 1;
  }
  if (at_eof(st)) {
    check_rerr(L, st, "read");
    lua_pushnil(L);
    release_at_eof(st);
    return 1;
  }
  if (st->rt == NULL) st->rn = n;
  return wait_read(L, st, "read", 0, read_k);
}

static int read_k(lua_State *L, int status, lua_KContext ctx) {
  aio_stream_t *st = (aio_stream_t *)ctx;
  (void)status;
  aio__wait_end(L);
  st->want = 0;
  return do_read(L, st, st->rn);
}

/* reader:read([n]): up to n bytes, all until EOF without n; nil at EOF */
static int reader_read(lua_State *L) {
  aio_stream_t *st = checkreader(L, 1);
  int isnum;
  lua_Integer n = lua_tointegerx(L, 2, &isnum);
  if (!isnum) n = luaL_optinteger(L, 2, -1);  /* none or nil, else raises */
  if (n == 0) {
    lua_pushliteral(L, "");
    return 1;
  }
  return do_read(L, st, n);
}

static int incomplete(lua_State *L, aio_stream_t *st, const char *p,
                      size_t len, lua_Integer expected) {
  if (expected >= 0)
    aio__pusherror(L, "IncompleteReadError", 0, "%I bytes read on a total "
                   "of %I expected bytes", (lua_Integer)len, expected);
  else
    aio__pusherror(L, "IncompleteReadError", 0, "%I bytes read before the "
                   "end of the stream, no separator", (lua_Integer)len);
  lua_pushlstring(L, p, len);
  lua_setfield(L, -2, "partial");
  if (expected >= 0) {
    lua_pushinteger(L, expected);
    lua_setfield(L, -2, "expected");
  }
  consume(st, len);
  return lua_error(L);
}

static int readexactly_k(lua_State *L, int status, lua_KContext ctx);

static int do_readexactly(lua_State *L, aio_stream_t *st, size_t n) {
  size_t len;
  const char *p = rbuf(st, &len);
  if (len >= n) {
    take(L, st, p, n);
    return 1;
  }
  if (at_eof(st)) {
    if (len == 0) check_rerr(L, st, "readexactly");
    return incomplete(L, st, p, len, (lua_Integer)n);
  }
  if (st->rt == NULL) st->rn = (lua_Integer)n;
  return wait_read(L, st, "readexactly", n, readexactly_k);
}

static int readexactly_k(lua_State *L, int status, lua_KContext ctx) {
  aio_stream_t *st = (aio_stream_t *)ctx;
  (void)status;
  aio__wait_end(L);
  st->want = 0;
  return do_readexactly(L, st, (size_t)st->rn);
}

static int reader_readexactly(lua_State *L) {
  aio_stream_t *st = checkreader(L, 1);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_argcheck(L, n >= 0, 2, "negative count");
  if (n == 0) {
    lua_pushliteral(L, "");
    return 1;
  }
  return do_readexactly(L, st, (size_t)n);
}

static int readuntil_k(lua_State *L, int status, lua_KContext ctx);

/* readuntil (line 0) and readline (line 1, sep "\n"); sep stays on the
** stack (index 2 for readuntil) while the task waits */
static int do_readuntil(lua_State *L, aio_stream_t *st, const char *sep,
                        size_t seplen, int line) {
  const char *fname = line ? "readline" : "readuntil";
  size_t len;
  const char *p = rbuf(st, &len), *hit = NULL;
  if (len >= seplen) {
    size_t from = st->searched;
    hit = findsep(p + from, len - from, sep, seplen);
  }
  if (hit != NULL) {
    size_t at = (size_t)(hit - p);
    if (at > st->limit) {
      aio__pusherror(L, "LimitOverrunError", 0, "%s: separator found, but "
                     "the chunk is longer than the limit", fname);
      lua_pushinteger(L, (lua_Integer)at);
      lua_setfield(L, -2, "consumed");
      if (line) consume(st, at + seplen);
      return lua_error(L);
    }
    take(L, st, p, at + seplen);
    return 1;
  }
  st->searched = len >= seplen ? len - seplen + 1 : 0;
  if (st->searched > st->limit) {
    aio__pusherror(L, "LimitOverrunError", 0, "%s: separator not found, "
                   "and the chunk exceeds the limit", fname);
    lua_pushinteger(L, (lua_Integer)st->searched);
    lua_setfield(L, -2, "consumed");
    if (line) consume(st, len);
    return lua_error(L);
  }
  if (at_eof(st)) {
    if (len == 0) check_rerr(L, st, fname);
    if (!line) return incomplete(L, st, p, len, -1);
    if (len == 0) lua_pushnil(L);
    else take(L, st, p, len);
    release_at_eof(st);
    return 1;
  }
  if (st->rt == NULL) {  /* else wait_read raises */
    st->sep = sep;
    st->seplen = seplen;
    st->line = (unsigned)line;
  }
  return wait_read(L, st, fname, 0, readuntil_k);
}

static int readuntil_k(lua_State *L, int status, lua_KContext ctx) {
  aio_stream_t *st = (aio_stream_t *)ctx;
  (void)status;
  aio__wait_end(L);
  return do_readuntil(L, st, st->sep, st->seplen, st->line);
}

static int reader_readuntil(lua_State *L) {
  size_t seplen;
  aio_stream_t *st = checkreader(L, 1);
  /* a number is converted in place: the string stays at 2 */
  const char *sep = lua_tolstring(L, 2, &seplen);
  if (sep == NULL) {
    if (!lua_isnoneornil(L, 2)) luaL_checklstring(L, 2, &seplen);  /* raises */
    sep = "\n";
    seplen = 1;
  }
  luaL_argcheck(L, seplen > 0, 2, "empty separator");
  st->searched = 0;  /* only valid within one call: the separator differs */
  return do_readuntil(L, st, sep, seplen, 0);
}

static int reader_readline(lua_State *L) {
  aio_stream_t *st = checkreader(L, 1);
  st->searched = 0;
  return do_readuntil(L, st, "\n", 1, 1);
}

/* reader:at_eof(): the end has come and nothing is buffered.  asyncio's
** transport reads as data arrives, so its reader knows at once; ours
** reads when a task waits, so with nothing buffered and the end not seen
** yet, what has arrived is read now, without waiting (over TLS as long
** as records come that hold no data: a session ticket, close_notify). */
static int reader_at_eof(lua_State *L) {
  aio_stream_t *st = checkreader(L, 1);
  size_t len;
  orphaned(st);
  rbuf(st, &len);
  if (len == 0 && !at_eof(st)) {
    int more;
    do {
      more = aio__stream_read_now(st->h);
      rbuf(st, &len);
    } while (more && len == 0 && !at_eof(st) && !st->paused);
  }
  if (len == 0 && at_eof(st)) {
    release_at_eof(st);
    lua_pushboolean(L, 1);
  } else {
    lua_pushboolean(L, 0);
  }
  return 1;
}

static int reader_tostring(lua_State *L) {
  aio_stream_t *st = checkreader(L, 1);
  lua_pushfstring(L, "aio.StreamReader (%s) (%p)",
                  st->h ? "open" : "closed", (void *)st);
  return 1;
}

/* ====================================================================== */
/* writing                                                                */
/* ====================================================================== */

/* write through the TLS session, or straight to the transport */
static void put(lua_State *L, aio_stream_t *st, const char *p, size_t len,
                const char *fname) {
  int rc;
  if (st->werr) raise_os(L, st->werr, fname);
  if (st->h == NULL || st->closing || orphaned(st))
    luaL_error(L, "%s: the writer is closed", fname);
  if (st->eof_sent)  /* misuse, as asyncio's RuntimeError */
    luaL_error(L, "%s: cannot write after write_eof()", fname);
  if (st->tls_on) {
    if (st->tls == NULL) luaL_error(L, "%s: the writer is closed", fname);
    if (!aio__tls_ready(st->tls))
      luaL_error(L, "%s: the TLS handshake is not over yet", fname);
    /* a read found the connection reset: an OSError, as on a plain stream
    ** (the session would report the reset it kept as a TLSError) */
    if (st->rerr) raise_os(L, st->rerr, fname);
    if ((rc = aio__tls_write(st->tls, p, len)) < 0) {
      if (st->werr) raise_os(L, st->werr, fname);  /* from tls_send */
      aio__tls_pusherror(L, st->tls, rc, fname);
      lua_error(L);
    }
    return;
  }
  rc = aio__stream_write(st->h, p, len);
  if (rc < 0) {
    if (rc == -EPIPE || rc == -ECONNRESET || rc == -ENOTCONN) st->werr = rc;
    raise_os(L, rc, fname);
  }
}

static int writer_write(lua_State *L) {
  aio_stream_t *st = checkwriter(L, 1);
  size_t len;
  const char *p = lua_tolstring(L, 2, &len);
  if (p == NULL) p = luaL_checklstring(L, 2, &len);  /* raises */
  put(L, st, p, len, "write");
  return 0;
}

static int writer_writelines(lua_State *L) {
  aio_stream_t *st = checkwriter(L, 1);
  lua_Integer i, n;
  luaL_checktype(L, 2, LUA_TTABLE);
  n = luaL_len(L, 2);
  /* all or nothing, as asyncio's: a bad item sends none */
  for (i = 1; i <= n; i++) {
    int ok = lua_geti(L, 2, i) == LUA_TSTRING || lua_isnumber(L, -1);
    lua_pop(L, 1);
    if (!ok)
      return luaL_error(L, "writelines: item %d is not a string",
                        (int)i);
  }
  for (i = 1; i <= n; i++) {
    size_t len;
    const char *p;
    lua_geti(L, 2, i);
    p = lua_tolstring(L, -1, &len);
    if (p == NULL)  /* a __index that changed its mind */
      return luaL_error(L, "writelines: item %d is not a string",
                        (int)i);
    put(L, st, p, len, "writelines");
    lua_pop(L, 1);
  }
  return 0;
}

/* a cancelled drainer leaves the list; the others stay */
static void drain_cleanup(aio_task *t) {
  aio_waiter *w = &t->wnode;
  if (w->next != NULL) {
    w->prev->next = w->next;
    w->next->prev = w->prev;
    w->prev = w->next = NULL;
  }
}

static int drain_k(lua_State *L, int status, lua_KContext ctx) {
  aio_stream_t *st = checkwriter(L, 1);
  aio_task *t;
  (void)ctx;
  if (status == LUA_YIELD) aio__wait_end(L);
  /* a lost connection, whichever side found it, as asyncio's drain */
  if (st->werr) return raise_os(L, st->werr, "drain");
  if (st->rerr) return raise_os(L, st->rerr, "drain");
  if (st->h == NULL || orphaned(st)) return 0;
  if (aio__stream_queued(st->h) <= st->hwm) return 0;
  t = aio__wait_begin(L, "drain");
  t->wnode.next = &st->drainers;
  t->wnode.prev = st->drainers.prev;
  st->drainers.prev->next = &t->wnode;
  st->drainers.prev = &t->wnode;
  return aio__park(L, t, drain_cleanup, st, "drain", 0, drain_k);
}

/* writer:drain(): wait while more than the high-water mark is queued */
static int writer_drain(lua_State *L) {
  aio_stream_t *st = checkwriter(L, 1);
  /* the common case, nothing to wait for, costs no yield */
  if (!st->werr && !st->rerr && st->h && !st->closing &&
      aio__stream_queued(st->h) <= st->hwm)
    return 0;
  lua_settop(L, 1);
  return drain_k(L, LUA_OK, 0);
}

static int writer_write_eof(lua_State *L) {
  aio_stream_t *st = checkwriter(L, 1);
  int rc;
  if (st->h == NULL || st->closing) return 0;
  if (!aio__stream_is_socket(st->h)) {  /* a pipe ends by closing */
    softclose(st);
    return 0;
  }
  if (st->tls) aio__tls_close_notify(st->tls);  /* TLS's end of data */
  keep_names(st);
  if ((rc = aio__stream_shutdown(st->h)) < 0)
    return raise_os(L, rc, "write_eof");
  st->eof_sent = 1;
  return 0;
}

static int writer_can_write_eof(lua_State *L) {
  checkwriter(L, 1);
  lua_pushboolean(L, 1);
  return 1;
}

static int writer_close(lua_State *L) {
  softclose(checkwriter(L, 1));
  return 0;
}

static void closed_cleanup(aio_task *t) {
  ((aio_stream_t *)t->wait_data)->closet = NULL;
}

/* As asyncio's: done once the transport is closed, or at once raising the
** error of a lost connection (a reset or a failed write), before close()
** or after it.  The loop reads meanwhile (asyncio always does), so a reset
** arriving on a connection nobody reads is heard. */
static int wait_closed_k(lua_State *L, int status, lua_KContext ctx) {
  aio_stream_t *st = checkwriter(L, 1);
  aio_task *t;
  (void)ctx;
  if (status == LUA_YIELD) aio__wait_end(L);
  if (st->rerr) return raise_os(L, st->rerr, "wait_closed");
  if (st->werr) return raise_os(L, st->werr, "wait_closed");
  if (st->h == NULL || orphaned(st)) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (st->closet != NULL) {  /* a second waiter: stream.lua polls */
    lua_pushboolean(L, 0);
    return 1;
  }
  if (!st->reading && !st->paused && !st->eof && !st->closing) {
    int rc = aio__stream_start_read(st->h);
    if (rc < 0) return raise_os(L, rc, "wait_closed");
    st->reading = 1;
  }
  t = aio__wait_begin(L, "wait_closed");
  st->closet = t;
  return aio__park(L, t, closed_cleanup, st, "close", 0, wait_closed_k);
}

/* writer:wait_closed(): true once closed; false at once when another task
** already waits (the Lua side then polls) */
static int writer_wait_closed(lua_State *L) {
  checkwriter(L, 1);
  lua_settop(L, 1);
  return wait_closed_k(L, LUA_OK, 0);
}

/* writer:is_closing(): closed or closing, or the connection is lost (a
** write or a read failed: EPIPE, ECONNRESET), as asyncio's transport is
** once connection_lost ran.  asyncio hears of a reset as it arrives (it
** is always reading); a stream the loop is not reading now asks the
** socket, which keeps the error for the next read. */
static int writer_is_closing(lua_State *L) {
  aio_stream_t *st = checkwriter(L, 1);
  int lost = st->closing || st->h == NULL || st->werr || st->rerr ||
             orphaned(st);
  if (!lost && (!st->reading || st->paused)) lost = aio__stream_lost(st->h);
  lua_pushboolean(L, lost);
  return 1;
}

/* writer:get_extra_info(name): "peername", "sockname" (also after close:
** keep_names), and over TLS "cipher", "tls_version", "alpn", "peercert"
** (also after close: tls_drop keeps them); one nil otherwise */
static int writer_get_extra_info(lua_State *L) {
  aio_stream_t *st = checkwriter(L, 1);
  const char *name = luaL_checkstring(L, 2);
  const aio_addr *a;
  int rc, peer;
  if (strcmp(name, "peername") == 0) peer = 1;
  else if (strcmp(name, "sockname") == 0) peer = 0;
  else {
    if (st->tls_on &&
        (rc = st->tls ? aio__tls_info(L, st->tls, name)
                      : aio__tls_kept_info(L, st->tlskept, name)) > 0)
      return rc;
    lua_pushnil(L);  /* one nil, also for a TLS name on a plain stream */
    return 1;
  }
  keep_names(st);
  a = st->names == NULL ? NULL : peer ? &st->names->peer : &st->names->sock;
  if (a == NULL || a->family == AIO_AF_UNSPEC) {
    lua_pushnil(L);  /* a pipe, or not known */
    return 1;
  }
  return pushaddr(L, a);
}

/* stream:_label(s): what a pipe is ("child pid 42 stdout"), named by
** task:waiting() and dump_tasks for a task that waits on it */
static int set_label(lua_State *L, aio_stream_t *st) {
  const char *s = luaL_checkstring(L, 2);
  if (names_of(st) != NULL)
    snprintf(st->names->label, sizeof st->names->label, "%s", s);
  return 0;
}

static int reader_label(lua_State *L) { return set_label(L, checkreader(L, 1)); }
static int writer_label(lua_State *L) { return set_label(L, checkwriter(L, 1)); }

/* writer:transport_info(): buffered bytes to send, whether reading is
** paused (for tests and diagnostics) */
static int writer_transport_info(lua_State *L) {
  aio_stream_t *st = checkwriter(L, 1);
  lua_pushinteger(L, st->h ? (lua_Integer)aio__stream_queued(st->h) : 0);
  lua_pushboolean(L, st->paused);
  lua_pushinteger(L, (lua_Integer)(buffered(st) +
                  (st->kept ? st->kept->len - st->kept->off : 0)));
  return 3;
}

static int writer_set_write_buffer_limits(lua_State *L) {
  aio_stream_t *st = checkwriter(L, 1);
  lua_Integer high = luaL_optinteger(L, 2, HIGH_WATER);
  lua_Integer low = luaL_optinteger(L, 3, high / 4);
  luaL_argcheck(L, high >= 0, 2, "negative");
  luaL_argcheck(L, low >= 0 && low <= high, 3, "out of range");
  st->hwm = (size_t)high;
  if (st->h) aio__stream_set_lowat(st->h, (size_t)low);
  return 0;
}

static int writer_reader(lua_State *L) {
  checkwriter(L, 1);
  lua_getiuservalue(L, 1, 1);
  return 1;
}

static int writer_tostring(lua_State *L) {
  aio_stream_t *st = checkwriter(L, 1);
  lua_pushfstring(L, "aio.StreamWriter (%s) (%p)",
                  st->h ? (st->closing ? "closing" : "open") : "closed",
                  (void *)st);
  return 1;
}

/* ====================================================================== */
/* TLS                                                                    */
/* ====================================================================== */

/* the session's byte stream (tls.h): the transport's buffers.  Sending
** never waits: what the socket does not take is queued (drain waits). */
static int tls_send(void *io, const unsigned char *p, size_t n) {
  aio_stream_t *st = io;
  int rc;
  if (st->h == NULL) return AIO_TLS_SEND_FAILED;
  if ((rc = aio__stream_write(st->h, (const char *)p, n)) < 0) {
    st->werr = rc;
    return AIO_TLS_SEND_FAILED;
  }
  return (int)n;
}

static int tls_recv(void *io, unsigned char *p, size_t n) {
  aio_stream_t *st = io;
  size_t len;
  const char *q;
  if (st->h == NULL) return 0;
  q = aio__stream_rbuf(st->h, &len);
  if (len == 0) {
    if (st->rerr) return AIO_TLS_CONN_RESET;
    return st->eof ? 0 : AIO_TLS_WANT_READ;
  }
  if (n > len) n = len;
  if (n > INT32_MAX) n = INT32_MAX;
  memcpy(p, q, n);
  aio__stream_consume(st->h, n);
  return (int)n;
}

/* the handshake's deadline is the task's own timer (as aio.sleep's) */
static void hs_untime(aio_task *t) {
  if (aio__timer_armed(&t->timer)) aio__heap_remove(&t->sched->timers,
                                                    &t->timer);
}

static void hs_cleanup(aio_task *t) {
  ((aio_stream_t *)t->wait_data)->rt = NULL;
  hs_untime(t);
}

/* the handshake failed: close the connection, raise */
static int hs_fail(lua_State *L, aio_stream_t *st, aio_task *t, int code) {
  hs_untime(t);
  if (code == AIO_TLS_TIMEOUT) {
    double tmo = st->hs_timeout;
    hardclose(st);
    return aio__error(L, "TimeoutError", 0, "TLS handshake timed out after "
                      "%f s", tmo);
  }
  if (st->rerr) {
    int e = st->rerr;
    hardclose(st);
    return raise_os(L, e, "TLS handshake");
  }
  if (st->werr) {
    int e = st->werr;
    hardclose(st);
    return raise_os(L, e, "TLS handshake");
  }
  if (code == 0 || st->tls == NULL) {
    hardclose(st);
    return aio__error(L, "TLSError", 0, "TLS handshake: the stream was "
                      "closed");
  }
  aio__tls_pusherror(L, st->tls, code, "TLS handshake");
  hardclose(st);
  return lua_error(L);
}

static int handshake_k(lua_State *L, int status, lua_KContext ctx) {
  aio_stream_t *st = checkwriter(L, 1);
  aio_task *t = aio__rt(L)->sched->current;
  int rc;
  (void)ctx;
  if (status == LUA_YIELD) {
    /* cancelled: the connection is half set up, close it */
    if (t->tflags & T_CANCEL_PENDING) { hs_untime(t); hardclose(st); }
    aio__wait_end(L);
  }
  if (st->h == NULL || st->closing || st->tls == NULL)
    return hs_fail(L, st, t, 0);
  if (st->hs_deadline > 0 && aio__now(t->sched) >= st->hs_deadline)
    return hs_fail(L, st, t, AIO_TLS_TIMEOUT);
  rc = aio__tls_handshake(st->tls);
  if (rc == 0) {
    hs_untime(t);
    return 0;
  }
  if (rc != AIO_TLS_WANT_READ) return hs_fail(L, st, t, rc);
  if (t->tflags & T_CANCEL_PENDING) { hs_untime(t); hardclose(st); }
  t = aio__wait_begin(L, "start_tls");
  if (!st->reading || st->paused) {
    if ((rc = aio__stream_start_read(st->h)) < 0) {
      st->rerr = rc;
      return hs_fail(L, st, t, rc);
    }
    st->reading = 1;
    st->paused = 0;
  }
  st->rt = t;
  return aio__park(L, t, hs_cleanup, st, "TLS handshake", 0, handshake_k);
}

/* writer:_starttls(ctx [, hostname]): put a TLS session (tls.h) on the
** stream and complete its handshake (client or server, as the context
** says).  On failure the stream is closed and TLSError, TimeoutError
** (the context's handshake_timeout) or OSError raised. */
static int writer_starttls(lua_State *L) {
  aio_stream_t *st = checkwriter(L, 1);
  const char *host = luaL_optstring(L, 3, NULL);
  aio_task *t;
  double timeout;
  const char *misuse = NULL;
  if (st->h == NULL || st->closing) misuse = "the stream is closed";
  else if (st->tls_on) misuse = "the stream already uses TLS";
  else if (st->rt != NULL) misuse = "another task is reading from this stream";
  if (misuse != NULL)  /* called through Writer:start_tls (stream.lua) */
    return aio__user_error(L, "start_tls: %s", misuse);
  keep_names(st);  /* a failed handshake closes the stream */
  /* 4: a handshake_timeout of this call's own (start_tls's opts) */
  timeout = lua_isnoneornil(L, 4) ? -1 : luaL_checknumber(L, 4);
  lua_settop(L, 3);
  t = aio__wait_begin(L, "start_tls");
  st->tls = aio__tls_new(L, 2, host, st, tls_send, tls_recv);
  st->tls_on = 1;
  st->rslow = 1;
  if (!(timeout > 0)) timeout = aio__tls_timeout(st->tls);
  st->hs_deadline = 0;
  st->hs_timeout = timeout;
  if (timeout > 0 && timeout < 1e15) {
    st->hs_deadline = aio__now(t->sched) + timeout;
    if (aio__heap_add(&t->sched->timers, &t->timer, st->hs_deadline))
      return luaL_error(L, "not enough memory");
  }
  return handshake_k(L, LUA_OK, 0);
}

/* writer:is_tls(): whether a TLS session filters this stream */
static int writer_is_tls(lua_State *L) {
  lua_pushboolean(L, checkwriter(L, 1)->tls_on);
  return 1;
}

/* ====================================================================== */
/* listeners                                                              */
/* ====================================================================== */

static void on_listener(aio_bhandle *h, int event, long status, void *data) {
  aio_listener_t *ls = data;
  if (event != AIO_SEV_ACCEPT) return;
  if (status < 0) {
    ls->err = (int)status;
    if (status == -EMFILE || status == -ENFILE) {  /* do not spin */
      aio__stream_stop_read(h);
      ls->accepting = 0;
    }
  } else if (ls->nfds >= ls->cap) {
    /* cannot happen: accepting pauses when the queue is full */
    close((int)status);
  } else {
    ls->fds[ls->nfds].fd = (int)status;
    aio__stream_accepted_peer(&ls->fds[ls->nfds++].peer);
    if (ls->nfds >= ls->cap) {
      aio__stream_stop_read(h);
      ls->accepting = 0;
    }
  }
  wake(&ls->at);
}

static aio_listener_t *checklistener(lua_State *L, int i) {
  return luaL_checkudata(L, i, LISTENER_MT);
}

static void listener_destroy(aio_listener_t *ls) {
  int i;
  if (ls->h) aio__handle_close(ls->h, NULL, NULL);
  ls->h = NULL;
  for (i = 0; i < ls->nfds; i++) close(ls->fds[i].fd);
  ls->nfds = 0;
  free(ls->fds);
  ls->fds = NULL;
  wake(&ls->at);
}

static int listener_gc(lua_State *L) {
  listener_destroy(lua_touserdata(L, 1));
  return 0;
}

/* listen(family, host, port [, backlog, reuse_port, v6only, limit]) */
static int l_listen(lua_State *L) {
  aio_sched *s = aio__sched_check(L, "start_server");
  aio_addr at;
  aio_listener_t *ls;
  int rc, flags = 0, backlog;
  checkaddr(L, 1, &at);
  backlog = (int)luaL_optinteger(L, 4, 100);
  if (lua_toboolean(L, 5)) flags |= AIO_LISTEN_REUSEPORT;
  if (lua_toboolean(L, 6)) flags |= AIO_LISTEN_V6ONLY;
  ls = lua_newuserdatauv(L, sizeof *ls, 0);
  memset(ls, 0, sizeof *ls);
  ls->limit = (size_t)luaL_optinteger(L, 7, DEFAULT_LIMIT);
  ls->is_unix = at.family == AIO_AF_UNIX;
  luaL_setmetatable(L, LISTENER_MT);
  if ((ls->fds = malloc(ACCEPT_QUEUE * sizeof *ls->fds)) == NULL)
    return luaL_error(L, "not enough memory");
  ls->cap = ACCEPT_QUEUE;
  rc = aio__stream_listen(s->lp, &ls->h, &at, backlog, flags, on_listener,
                          ls);
  if (rc < 0) {
    ls->h = NULL;
    if (at.family == AIO_AF_UNIX) lua_pushfstring(L, "listen on %s", at.host);
    else lua_pushfstring(L, "listen on %s port %d", at.host, at.port);
    return raise_os(L, rc, lua_tostring(L, -1));
  }
  if ((rc = aio__stream_start_read(ls->h)) < 0)
    return raise_os(L, rc, "listen");
  ls->accepting = 1;
#ifndef _WIN32
  if (ls->is_unix) {  /* which file is ours: see listener_unlink */
    struct stat sb;
    if (stat(at.host, &sb) == 0) {
      ls->dev = (unsigned long long)sb.st_dev;
      ls->ino = (unsigned long long)sb.st_ino;
      ls->has_ino = 1;
    }
  }
#endif
  return 1;
}

static void accept_cleanup(aio_task *t) {
  ((aio_listener_t *)t->wait_data)->at = NULL;
}

static int accept_k(lua_State *L, int status, lua_KContext ctx) {
  aio_listener_t *ls = checklistener(L, 1);
  aio_sched *s = aio__rt(L)->sched;
  aio_task *t;
  (void)ctx;
  if (status == LUA_YIELD) aio__wait_end(L);
  if (ls->h == NULL) return 0;  /* closed: nil */
  if (ls->nfds > 0) {
    /* the Reader first: it may raise (out of memory), and the fd must
    ** still be in the queue then, not lost */
    aio_stream_t *st = newreader(L, ls->limit);
    int fd = ls->fds[0].fd, rc;
    st->accepted = ls->fds[0].peer;
    memmove(ls->fds, ls->fds + 1, (size_t)--ls->nfds * sizeof *ls->fds);
    if (!ls->accepting) {
      ls->accepting = 1;
      aio__stream_start_read(ls->h);
    }
    st->is_unix = ls->is_unix;
    if ((rc = aio__stream_open_accepted(s->lp, &st->h, fd, on_stream,
                                        st)) < 0) {
      st->h = NULL;
      return raise_os(L, rc, "accept");
    }
    pushwriter(L, -1, st);
    return 2;
  }
  if (ls->err) {
    int err = ls->err;
    ls->err = 0;
    if (!ls->accepting) {  /* out of fds: try again a little later */
      ls->accepting = 1;
      aio__stream_start_read(ls->h);
    }
    return raise_os(L, err, "accept");
  }
  if (ls->at != NULL)
    return luaL_error(L, "accept: another task is already accepting");
  t = aio__wait_begin(L, "accept");
  ls->at = t;
  return aio__park(L, t, accept_cleanup, ls, "accept", 0, accept_k);
}

/* listener:accept() -> reader, writer; nil once closed */
static int listener_accept(lua_State *L) {
  checklistener(L, 1);
  lua_settop(L, 1);
  return accept_k(L, LUA_OK, 0);
}

static int listener_getsockname(lua_State *L) {
  aio_listener_t *ls = checklistener(L, 1);
  aio_addr a;
  int rc;
  if (ls->h == NULL) return luaL_error(L, "getsockname: the server is closed");
  if ((rc = aio__stream_sockname(ls->h, &a)) < 0)
    return raise_os(L, rc, "getsockname");
  return pushaddr(L, &a);
}

static int listener_family(lua_State *L) {
  aio_listener_t *ls = checklistener(L, 1);
  aio_addr a;
  if (ls->h == NULL || aio__stream_sockname(ls->h, &a) < 0) return 0;
  lua_pushstring(L, famname(a.family));
  return 1;
}

static int listener_close(lua_State *L) {
  listener_destroy(checklistener(L, 1));
  return 0;
}

/* listener:unlink(path): remove the socket file the listener bound, as
** Python 3.13's server does at its close: only while the path is still
** that socket (another server may have taken the path since, or someone
** put a file of their own there) */
static int listener_unlink(lua_State *L) {
  aio_listener_t *ls = checklistener(L, 1);
  const char *path = luaL_checkstring(L, 2);
#ifndef _WIN32
  struct stat sb;
  if (!ls->has_ino || stat(path, &sb) != 0 || !S_ISSOCK(sb.st_mode) ||
      (unsigned long long)sb.st_dev != ls->dev ||
      (unsigned long long)sb.st_ino != ls->ino)
    return 0;
#else
  (void)ls;  /* no inodes to compare: the path goes */
#endif
  remove(path);
  return 0;
}

static int listener_is_open(lua_State *L) {
  lua_pushboolean(L, checklistener(L, 1)->h != NULL);
  return 1;
}

/* ====================================================================== */
/* the module                                                             */
/* ====================================================================== */

static const luaL_Reg reader_methods[] = {
  { "read", reader_read },
  { "readline", reader_readline },
  { "readexactly", reader_readexactly },
  { "readuntil", reader_readuntil },
  { "at_eof", reader_at_eof },
  { "_label", reader_label },
  { NULL, NULL }
};

static const luaL_Reg reader_meta[] = {
  { "__gc", reader_gc },
  { "__tostring", reader_tostring },
  { NULL, NULL }
};

static const luaL_Reg writer_methods[] = {
  { "write", writer_write },
  { "writelines", writer_writelines },
  { "drain", writer_drain },
  { "write_eof", writer_write_eof },
  { "can_write_eof", writer_can_write_eof },
  { "close", writer_close },
  { "wait_closed", writer_wait_closed },
  { "is_closing", writer_is_closing },
  { "get_extra_info", writer_get_extra_info },
  { "transport_info", writer_transport_info },
  { "_label", writer_label },
  { "set_write_buffer_limits", writer_set_write_buffer_limits },
  { "reader", writer_reader },
  { "_starttls", writer_starttls },
  { "is_tls", writer_is_tls },
  { NULL, NULL }
};

static const luaL_Reg writer_meta[] = {
  { "__close", writer_close },
  { "__tostring", writer_tostring },
  { NULL, NULL }
};

static const luaL_Reg listener_methods[] = {
  { "accept", listener_accept },
  { "getsockname", listener_getsockname },
  { "family", listener_family },
  { "close", listener_close },
  { "unlink", listener_unlink },
  { "is_open", listener_is_open },
  { NULL, NULL }
};

static const luaL_Reg listener_meta[] = {
  { "__gc", listener_gc },
  { "__close", listener_close },
  { NULL, NULL }
};

static const luaL_Reg funcs[] = {
  { "connect", l_connect },
  { "listen", l_listen },
  { "wrap", l_wrap },
  { NULL, NULL }
};

/* the waits among the methods are lean (sched.h): they push four values
** at most past their arguments, errors included */
static const char *const reader_lean[] = { "read", "readline", "readexactly",
                                           "readuntil", NULL };
static const char *const writer_lean[] = { "drain", "wait_closed", NULL };
static const char *const listener_lean[] = { NULL };

/* a metatable with its methods in a separate __index table (the names in
** `lean` made lean); leaves the methods table in field `field` of the
** module table at -1 */
static void createmeta(lua_State *L, const char *name, const luaL_Reg *meta,
                       const luaL_Reg *methods, const char *const *lean,
                       const char *field) {
  /* luaL_newmetatable's work, on sparse tables: every method call looks
  ** up __index here, then the method in the methods table; with room to
  ** spare the keys rarely share a hash chain (a measured 10-20
  ** instructions per call of a stream method) */
  if (luaL_getmetatable(L, name) == LUA_TNIL) {  /* loaded twice: reuse */
    lua_pop(L, 1);
    lua_createtable(L, 0, 16);             /* mod mt */
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__name");
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, name);
  }
  luaL_setfuncs(L, meta, 0);
  lua_createtable(L, 0, 64);               /* mod mt methods */
  luaL_setfuncs(L, methods, 0);
  aio__lean(L, -1, lean);
  aio__name_methods(L, -1, name);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "__index");
  lua_setfield(L, -3, field);              /* mod mt */
  lua_pop(L, 1);
}

/* task:waiting()'s detail of a stream's wait: its peer, "host:port"
** ("[host]:port" for IPv6) or a Unix socket's path */
static int wait_detail(lua_State *L, aio_task *t) {
  aio_stream_t *st = t->wait_data;
  const aio_addr *a;
  keep_names(st);
  if (st->names && st->names->label[0]) {  /* a pipe */
    lua_pushstring(L, st->names->label);
    return 1;
  }
  a = st->names ? &st->names->peer : NULL;
  if (a == NULL || a->family == AIO_AF_UNSPEC) return 0;
  aio__push_addr_label(L, "", a);
  return 1;
}

/* ... and of an accept: "socket " and the address the server listens on */
static int accept_detail(lua_State *L, aio_task *t) {
  aio_listener_t *ls = t->wait_data;
  aio_addr a;
  if (ls->h == NULL || aio__stream_sockname(ls->h, &a) < 0) return 0;
  aio__push_addr_label(L, "socket ", &a);
  return 1;
}

int luaopen__aio_stream(lua_State *L) {
  aio__wait_detail_set("read", wait_detail);
  aio__wait_detail_set("drain", wait_detail);
  aio__wait_detail_set("close", wait_detail);
  aio__wait_detail_set("TLS handshake", wait_detail);
  aio__wait_detail_set("accept", accept_detail);
  aio__wait_detail_set("connect", wait_detail);  /* the address connected to */
  luaL_newlib(L, funcs);
  createmeta(L, READER_MT, reader_meta, reader_methods, reader_lean,
             "Reader");
  createmeta(L, WRITER_MT, writer_meta, writer_methods, writer_lean,
             "Writer");
  createmeta(L, LISTENER_MT, listener_meta, listener_methods, listener_lean,
             "Listener");
  return 1;
}
