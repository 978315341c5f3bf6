/*
** loop.h: the one door between aiolua and the operating system's event
** facility.  Exactly one backend implements it: loop_ev.c (libev, readiness)
** today, loop_iocp.c (completion ports) on Windows.  Only the backend file
** includes its library's headers; everything above this seam sees handles
** and callbacks.
**
** The seam is at the handle level (as libuv's handles and asyncio's
** transports), not at "watch this fd": a completion backend does the I/O
** itself, so transports deliver data, not readiness.  Every handle is closed
** with aio__handle_close(), whose callback runs when the backend no longer
** touches the handle (at once on libev; when the cancelled OVERLAPPED comes
** back on IOCP).  Only then may the owner free its own memory.
**
** Timers, the ready ring and handle lists are not here: the scheduler keeps
** its own timer heap (timer.c) and asks the backend only to wait at most so
** long (aio__loop_poll).
**
** Functions return 0 or a negative error code (-errno on POSIX); the text is
** aio__strerror(code).  No errno is left to read after a call.
*/
#ifndef AIO_LOOP_H
#define AIO_LOOP_H

#include <stddef.h>

typedef struct aio_loop aio_loop;       /* the backend's private state */
typedef struct aio_bhandle aio_bhandle; /* a backend handle */

/* a handle's close callback: the handle's memory is about to be freed */
typedef void (*aio_close_cb)(aio_bhandle *h, void *data);

const char *aio__backend_name(void);
/* what this loop runs on: the backend's name, with "+io_uring" when
** libev's loop sends and receives on sockets through an io_uring */
const char *aio__loop_backend(aio_loop *lp);
const char *aio__strerror(int code);

/* ---- the loop ---- */

/* a new loop, or NULL with *err set */
aio_loop *aio__loop_new(int *err);
/* frees the loop; every handle must have been closed first */
void aio__loop_free(aio_loop *lp);
/* the monotonic clock, in seconds */
double aio__clock(void);
/* Wait for events at most `timeout` seconds (0: do not block, < 0: until
** one arrives) and run the handles' callbacks.  Callbacks never run Lua: they
** only mark tasks ready.  Returns 0 or a negative code. */
int aio__loop_poll(aio_loop *lp, double timeout);

/* Thread-safe and async-signal-safe wake-up: makes a poll in progress (or
** the next one) return, then runs `cb(data)` on the loop's thread from
** inside aio__loop_poll.  Set once per loop. */
typedef void (*aio_wakeup_cb)(void *data);
int aio__loop_set_wakeup(aio_loop *lp, aio_wakeup_cb cb, void *data);
void aio__loop_wakeup(aio_loop *lp);

/* Run on the application's libev loop `ev_loop` (a struct ev_loop *)
** instead of the loop's own, which is freed; only right after
** aio__loop_new.  The application runs the loop: drive(data) is then
** called before it blocks and after it polled, and must not poll (polls
** inside it return at once); aio__loop_arm(lp, t) then says when the next
** drive is due (0: at once, > 0: in t s, < 0: on events only); `keep`
** keeps the application's loop alive (work is pending) or not. */
int aio__loop_adopt(aio_loop *lp, void *ev_loop, aio_wakeup_cb drive,
                    void *data);
void aio__loop_arm(aio_loop *lp, double timeout, int keep);
/* an fd that polls readable when the backend has events (epoll's), or a
** negative code */
int aio__loop_fd(aio_loop *lp);
/* Someone else is about to block on aio__loop_fd: what the last step
** asked (a read started, a send queued) reaches the kernel now.  libev
** adds a started watcher's fd to epoll only in its next run, and the ring
** enters its requests only in aio__loop_poll. */
void aio__loop_flush(aio_loop *lp);

/* ---- handles ---- */

/* stop a handle and release it; `cb` (may be NULL) runs once the backend no
** longer uses it.  Idempotent per handle pointer is NOT promised: call once. */
void aio__handle_close(aio_bhandle *h, aio_close_cb cb, void *data);
/* the handle's loop; NULL once that loop was freed (the handle is an
** orphan: stopped, its fd closed; only aio__handle_close is left to do) */
aio_loop *aio__handle_loop(aio_bhandle *h);

/* ---- signals ---- */

/* deliver `signum` to cb on the loop's thread, as often as it arrives */
typedef void (*aio_signal_cb)(aio_bhandle *h, int signum, void *data);
int aio__signal_start(aio_loop *lp, aio_bhandle **out, int signum,
                      aio_signal_cb cb, void *data);

/* fn(signum, data) runs inside the handler of the signal that the signal
** handle `h` watches, before the loop hears of it: in signal context, so
** only async-signal-safe work (setting a flag, lua_sethook).  For code
** that computes without returning to the loop.  fn NULL: none. */
typedef void (*aio_signal_async_cb)(int signum, void *data);
int aio__signal_async(aio_bhandle *h, aio_signal_async_cb fn, void *data);

/* ---- child processes ---- */

/* cb(status) once child `pid` has exited; the child is reaped by the
** backend.  `status` is as from waitpid().  On libev's default loop this is
** an ev_child (libev there reaps every child); on other loops a pidfd.  When
** the loop is freed while the child runs, cb gets status -1 (the handle is
** then orphaned: close it, which only frees) and the backend still reaps the
** child later, without blocking (issue 6). */
typedef void (*aio_child_cb)(aio_bhandle *h, int pid, int status, void *data);
int aio__child_start(aio_loop *lp, aio_bhandle **out, int pid,
                     aio_child_cb cb, void *data);

/* ---- readiness of a descriptor ---- */

/* Not a transport: for a descriptor whose reads someone else does (a line
** editor reading the terminal).  cb runs on the loop's thread, from inside
** aio__loop_poll, each time fd is ready for `events`; it must not run Lua.
** Closed with aio__handle_close. */
enum { AIO_POLL_READABLE = 1, AIO_POLL_WRITABLE = 2 };
typedef void (*aio_poll_cb)(aio_bhandle *h, int events, void *data);
int aio__poll_start(aio_loop *lp, aio_bhandle **out, int fd, int events,
                    aio_poll_cb cb, void *data);

/* Keep or stop keeping the loop alive while this handle is active (a signal
** handler installed for the program's lifetime should not keep it alive). */
void aio__handle_ref(aio_bhandle *h, int ref);

/* ====================================================================== */
/* transports (streams and datagrams)                                     */
/* ====================================================================== */

/* A stream transport owns its socket (or pipe), a growable read buffer and
** a write queue.  Reads are delivered as data: the backend appends to the
** read buffer and calls the handle's callback with AIO_SEV_READ and the
** number of bytes added (0: end of stream; < 0: an error code).  The owner
** looks at the buffered bytes with aio__stream_rbuf() and takes what it used
** with aio__stream_consume().  Writes are tried at once and only the rest is
** queued; AIO_SEV_WRITE reports that the queue fell to the low-water mark
** (status 0) or that writing failed (status < 0).  AIO_SEV_CONNECT ends a
** connect (0 or an error); AIO_SEV_ACCEPT on a listener hands over one new
** connection (status: its fd, which the owner wraps with aio__stream_open,
** or an error).  AIO_SEV_CLOSED: a graceful close (aio__stream_close_soon)
** has finished flushing and the handle is about to be freed.
**
** Every handle is linked to its loop; aio__loop_free() stops and closes
** what is still open, so a handle may outlive its loop: later calls on it
** fail with -EBADF and aio__handle_close() only frees it.  A callback must
** not close its own handle (it only records the event and wakes tasks);
** it may stop or start reading.  Callbacks may also run inside
** aio__stream_write and aio__stream_read_now (libev's io_uring path takes
** the completions that have come there, any handle's): a pointer from
** aio__stream_rbuf is not to be kept across either.  All sockets are non-blocking and
** close-on-exec; TCP sockets get TCP_NODELAY; sends use MSG_NOSIGNAL. */
enum { AIO_SEV_READ = 1, AIO_SEV_WRITE, AIO_SEV_CONNECT, AIO_SEV_ACCEPT,
       AIO_SEV_CLOSED };

typedef void (*aio_stream_cb)(aio_bhandle *h, int event, long status,
                              void *data);

/* address in and out of transports: a numeric host and a port, or a path
** for Unix sockets (family AIO_AF_UNIX) */
enum { AIO_AF_UNSPEC = 0, AIO_AF_INET, AIO_AF_INET6, AIO_AF_UNIX };
typedef struct aio_addr {
  int family;
  int port;
  char host[108];   /* numeric address text, or a Unix socket path */
} aio_addr;

/* flags for aio__stream_listen */
#define AIO_LISTEN_REUSEPORT 1
#define AIO_LISTEN_V6ONLY    2

/* start connecting to `to` (bound first to `local` when not NULL); the
** result comes as AIO_SEV_CONNECT */
int aio__stream_connect(aio_loop *lp, aio_bhandle **out, const aio_addr *to,
                        const aio_addr *local, aio_stream_cb cb, void *data);
/* a listening socket on `at` (port 0: any); accepting starts with
** aio__stream_start_read and pauses with aio__stream_stop_read */
int aio__stream_listen(aio_loop *lp, aio_bhandle **out, const aio_addr *at,
                       int backlog, int flags, aio_stream_cb cb, void *data);
/* wrap a connected socket or a pipe end (non-blocking and CLOEXEC are set
** here); the handle owns the fd from now on, also on failure */
int aio__stream_open(aio_loop *lp, aio_bhandle **out, int fd,
                     aio_stream_cb cb, void *data);
/* the same for an fd AIO_SEV_ACCEPT handed over: a socket, already
** non-blocking and CLOEXEC, so nothing is asked of the kernel */
int aio__stream_open_accepted(aio_loop *lp, aio_bhandle **out, int fd,
                              aio_stream_cb cb, void *data);
int aio__stream_start_read(aio_bhandle *h);
int aio__stream_stop_read(aio_bhandle *h);
/* the bytes buffered and not yet consumed */
char *aio__stream_rbuf(aio_bhandle *h, size_t *len);
void aio__stream_consume(aio_bhandle *h, size_t n);
/* send now what the socket takes, queue the rest; 0 or an error code
** (-EPIPE, -ECONNRESET ...; an earlier write error is returned again) */
int aio__stream_write(aio_bhandle *h, const char *p, size_t n);
size_t aio__stream_queued(aio_bhandle *h);
/* the low-water mark for AIO_SEV_WRITE */
void aio__stream_set_lowat(aio_bhandle *h, size_t lowat);
/* half-close once the queue is flushed */
int aio__stream_shutdown(aio_bhandle *h);
/* close once the queue is flushed: AIO_SEV_CLOSED, then the handle is
** freed; returns 1 when that happened at once (the handle is gone) */
int aio__stream_close_soon(aio_bhandle *h);
/* The owner of a handle closing softly (aio__stream_close_soon returned 0)
** goes away before the flush is over (its Lua objects were collected): the
** callback is never called again and `data` is forgotten, and the backend
** owns the handle, which it frees when the flush ends or fails, or when
** the loop is freed.  Any other handle is closed at once. */
void aio__stream_detach(aio_bhandle *h);
/* Read once without waiting, as when the read watcher fires (also while
** reading is stopped): what has arrived goes to the callback (AIO_SEV_READ:
** bytes, 0 at the end, or an error) before this returns.  1 when bytes
** came, else 0: nothing yet, the end, an error, or nothing can be known
** now (IOCP: a pipe's read in flight brings what comes with its
** completion).  at_eof() asks with it whether the end has come. */
int aio__stream_read_now(aio_bhandle *h);
/* 1 when the connection is known broken (the peer reset it) although no
** read or write has reported that yet, else 0; changes nothing (the next
** read still reports the data before the error, then the error) */
int aio__stream_lost(aio_bhandle *h);
int aio__stream_sockname(aio_bhandle *h, aio_addr *a);
int aio__stream_peername(aio_bhandle *h, aio_addr *a);

/* The peer of the connection an AIO_SEV_ACCEPT callback hands over, as
** accept gave it, small enough to queue with the fd; family AIO_AF_UNSPEC
** when it is no IP peer (a Unix socket's) or not known.  Valid only inside
** that callback.  A reset takes the peer's address from the socket, so the
** owner keeps this one (asyncio takes peername from accept too). */
typedef struct aio_peer {
  unsigned char family;   /* AIO_AF_INET, AIO_AF_INET6 or AIO_AF_UNSPEC */
  unsigned short port;
  unsigned char ip[16];   /* network order: 4 bytes for AIO_AF_INET */
} aio_peer;
void aio__stream_accepted_peer(aio_peer *p);
void aio__peer_addr(const aio_peer *p, aio_addr *a);
/* for the backends (peer.c): the address accept gave (a struct sockaddr
** of len bytes) before the callback, NULL after it */
void aio__peer_accepting(const void *sa, size_t len);
/* 1 for a socket (shutdown is possible), 0 for a pipe */
int aio__stream_is_socket(aio_bhandle *h);

/* Datagram transports: AIO_SEV_READ delivers one datagram (status: its
** length, or an error) into the handle's buffer, read with
** aio__dgram_last(); reading stops after each one, the owner starts it
** again when it wants the next. */
int aio__dgram_open(aio_loop *lp, aio_bhandle **out, int family,
                    const aio_addr *local, int reuse_port, int broadcast,
                    aio_stream_cb cb, void *data);
int aio__dgram_connect(aio_bhandle *h, const aio_addr *to);
/* send one datagram (to NULL: to the connected peer) */
int aio__dgram_send(aio_bhandle *h, const char *p, size_t n,
                    const aio_addr *to);
int aio__dgram_start_recv(aio_bhandle *h);
int aio__dgram_stop_recv(aio_bhandle *h);
const char *aio__dgram_last(aio_bhandle *h, size_t *len, aio_addr *from);
int aio__dgram_sockname(aio_bhandle *h, aio_addr *a);

#endif
