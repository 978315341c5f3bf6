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

/* ---- handles ---- */

/* stop a handle and release it; `cb` (may be NULL) runs once the backend no
** longer uses it.  Idempotent per handle pointer is NOT promised: call once. */
void aio__handle_close(aio_bhandle *h, aio_close_cb cb, void *data);

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
** backend.  `status` is as from waitpid(). */
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

#endif
