/* stream and datagram transports of the loop seam (loop.h) */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loop.h"
#include "t.h"

static aio_loop *newloop(void) {
  int err = 0;
  aio_loop *lp = aio__loop_new(&err);
  if (lp == NULL) T_FAIL("aio__loop_new: %s", aio__strerror(err));
  return lp;
}

typedef struct seen {
  long last[AIO_SEV_CLOSED + 1];
  int count[AIO_SEV_CLOSED + 1];
  int accepted;
} seen;

static void on_ev(aio_bhandle *h, int event, long status, void *data) {
  seen *s = data;
  (void)h;
  s->last[event] = status;
  s->count[event]++;
  if (event == AIO_SEV_ACCEPT && status >= 0) s->accepted = (int)status;
}

static void poll_until(aio_loop *lp, int *flag) {
  int i;
  for (i = 0; i < 200 && !*flag; i++) aio__loop_poll(lp, 0.01);
  ASSERT(*flag);
}

/* a pipe wrapped as two transports: data, then EOF on close */
TEST(transport_pipe) {
  aio_loop *lp = newloop();
  aio_bhandle *r, *w;
  seen sr = { 0 }, sw = { 0 };
  int fds[2];
  size_t len;
  char *p;
  ASSERT_OK(pipe(fds));
  ASSERT_OK(aio__stream_open(lp, &r, fds[0], on_ev, &sr));
  ASSERT_OK(aio__stream_open(lp, &w, fds[1], on_ev, &sw));
  ASSERT(fcntl(fds[0], F_GETFD) & FD_CLOEXEC);
  ASSERT(!aio__stream_is_socket(r));
  ASSERT_OK(aio__stream_start_read(r));
  ASSERT_OK(aio__stream_write(w, "hello", 5));
  poll_until(lp, &sr.count[AIO_SEV_READ]);
  p = aio__stream_rbuf(r, &len);
  ASSERT_EQ(len, 5);
  ASSERT(memcmp(p, "hello", 5) == 0);
  aio__stream_consume(r, 5);
  ASSERT_EQ(aio__stream_close_soon(w), 1);  /* nothing queued: at once */
  sr.count[AIO_SEV_READ] = 0;
  poll_until(lp, &sr.count[AIO_SEV_READ]);
  ASSERT_EQ(sr.last[AIO_SEV_READ], 0);       /* EOF */
  aio__handle_close(r, NULL, NULL);
  aio__loop_free(lp);
}

/* listen, connect, accept, a large write that queues, close when flushed */
TEST(transport_tcp) {
  aio_loop *lp = newloop();
  aio_bhandle *l, *c, *a;
  seen sl = { 0 }, sc = { 0 }, sa = { 0 };
  aio_addr at = { AIO_AF_INET, 0, "127.0.0.1" }, name;
  size_t total = 4 * 1024 * 1024, got = 0, len;
  char *big = malloc(total);
  memset(big, 'x', total);
  ASSERT_OK(aio__stream_listen(lp, &l, &at, 16, 0, on_ev, &sl));
  ASSERT_OK(aio__stream_sockname(l, &name));
  ASSERT(name.port > 0);
  ASSERT_OK(aio__stream_start_read(l));
  ASSERT_OK(aio__stream_connect(lp, &c, &name, NULL, on_ev, &sc));
  poll_until(lp, &sc.count[AIO_SEV_CONNECT]);
  ASSERT_EQ(sc.last[AIO_SEV_CONNECT], 0);
  poll_until(lp, &sl.count[AIO_SEV_ACCEPT]);
  ASSERT_OK(aio__stream_open(lp, &a, sl.accepted, on_ev, &sa));
  ASSERT_OK(aio__stream_write(c, big, total));
  ASSERT(aio__stream_queued(c) > 0);            /* the socket took a part */
  ASSERT_EQ(aio__stream_close_soon(c), 0);       /* closes once flushed */
  ASSERT_OK(aio__stream_start_read(a));
  while (sa.last[AIO_SEV_READ] != 0 || got == 0) {
    sa.count[AIO_SEV_READ] = 0;
    poll_until(lp, &sa.count[AIO_SEV_READ]);
    aio__stream_rbuf(a, &len);
    got += len;
    aio__stream_consume(a, len);
    if (sa.last[AIO_SEV_READ] <= 0) break;
  }
  ASSERT_EQ(got, total);
  ASSERT_EQ(sc.count[AIO_SEV_CLOSED], 1);
  aio__handle_close(a, NULL, NULL);
  aio__handle_close(l, NULL, NULL);
  aio__loop_free(lp);
  free(big);
}

/* a refused connect, and a handle that outlives its loop */
TEST(transport_refused_and_orphan) {
  aio_loop *lp = newloop();
  aio_bhandle *l, *c, *o;
  seen sl = { 0 }, sc = { 0 };
  aio_addr at = { AIO_AF_INET, 0, "127.0.0.1" }, name;
  ASSERT_OK(aio__stream_listen(lp, &l, &at, 16, 0, on_ev, &sl));
  ASSERT_OK(aio__stream_sockname(l, &name));
  aio__handle_close(l, NULL, NULL);
  ASSERT_OK(aio__stream_connect(lp, &c, &name, NULL, on_ev, &sc));
  poll_until(lp, &sc.count[AIO_SEV_CONNECT]);
  ASSERT_EQ(sc.last[AIO_SEV_CONNECT], -ECONNREFUSED);
  aio__handle_close(c, NULL, NULL);
  ASSERT_OK(aio__stream_listen(lp, &o, &at, 16, 0, on_ev, &sl));
  aio__loop_free(lp);                      /* shuts o's socket */
  ASSERT_EQ(aio__stream_start_read(o), -EBADF);
  aio__handle_close(o, NULL, NULL);        /* only frees */
}

/* A stream's read buffer goes back to its loop once emptied (no buffer
** per idle connection) and the next read on any stream reuses it; bytes
** not yet consumed keep theirs */
TEST(transport_read_buffer_pool) {
  aio_loop *lp = newloop();
  aio_bhandle *r1, *w1, *r2, *w2;
  seen s1 = { 0 }, s2 = { 0 }, sw = { 0 };
  int a[2], b[2];
  size_t len;
  char *p1, *p2;
  ASSERT_OK(pipe(a));
  ASSERT_OK(pipe(b));
  ASSERT_OK(aio__stream_open(lp, &r1, a[0], on_ev, &s1));
  ASSERT_OK(aio__stream_open(lp, &w1, a[1], on_ev, &sw));
  ASSERT_OK(aio__stream_open(lp, &r2, b[0], on_ev, &s2));
  ASSERT_OK(aio__stream_open(lp, &w2, b[1], on_ev, &sw));
  ASSERT_OK(aio__stream_start_read(r1));
  ASSERT_OK(aio__stream_start_read(r2));
  ASSERT_OK(aio__stream_write(w1, "hello", 5));
  poll_until(lp, &s1.count[AIO_SEV_READ]);
  p1 = aio__stream_rbuf(r1, &len);
  ASSERT_EQ(len, 5);
  aio__stream_consume(r1, 2);              /* "llo" stays where it is */
  ASSERT(aio__stream_rbuf(r1, &len) == p1 + 2);
  ASSERT_EQ(len, 3);
  aio__stream_consume(r1, 3);              /* emptied: back to the loop */
  aio__stream_rbuf(r1, &len);
  ASSERT_EQ(len, 0);
  ASSERT_OK(aio__stream_write(w2, "world", 5));
  poll_until(lp, &s2.count[AIO_SEV_READ]);
  p2 = aio__stream_rbuf(r2, &len);
  ASSERT_EQ(len, 5);
  ASSERT(memcmp(p2, "world", 5) == 0);
  if (strcmp(aio__backend_name(), "libev") == 0) ASSERT(p2 == p1);
  ASSERT_OK(aio__stream_write(w1, "again", 5));  /* r1 gets another one */
  s1.count[AIO_SEV_READ] = 0;
  poll_until(lp, &s1.count[AIO_SEV_READ]);
  p1 = aio__stream_rbuf(r1, &len);
  ASSERT_EQ(len, 5);
  ASSERT(memcmp(p1, "again", 5) == 0);
  ASSERT(memcmp(aio__stream_rbuf(r2, &len), "world", 5) == 0);
  aio__handle_close(r2, NULL, NULL);       /* a buffer with bytes in it */
  aio__handle_close(w1, NULL, NULL);
  aio__handle_close(w2, NULL, NULL);
  aio__loop_free(lp);                      /* r1 outlives its loop */
  aio__handle_close(r1, NULL, NULL);
}

TEST(transport_dgram) {
  aio_loop *lp = newloop();
  aio_bhandle *a, *b;
  seen sa = { 0 }, sb = { 0 };
  aio_addr at = { AIO_AF_INET, 0, "127.0.0.1" }, name, from;
  size_t len;
  const char *p;
  ASSERT_OK(aio__dgram_open(lp, &a, AIO_AF_INET, &at, 0, 0, on_ev, &sa));
  ASSERT_OK(aio__dgram_open(lp, &b, AIO_AF_INET, NULL, 0, 0, on_ev, &sb));
  ASSERT_OK(aio__dgram_sockname(a, &name));
  ASSERT_OK(aio__dgram_start_recv(a));
  ASSERT_OK(aio__dgram_send(b, "ping", 4, &name));
  poll_until(lp, &sa.count[AIO_SEV_READ]);
  p = aio__dgram_last(a, &len, &from);
  ASSERT_EQ(len, 4);
  ASSERT(memcmp(p, "ping", 4) == 0);
  ASSERT_STR_EQ(from.host, "127.0.0.1");
  aio__handle_close(a, NULL, NULL);
  aio__handle_close(b, NULL, NULL);
  aio__loop_free(lp);
}
