/*
** repl_chunk.h: what the two REPLs share (repl.c: libedit on Unix;
** repl_win.c: plain lines on Windows).  A chunk is assembled from lines as
** lua.c does it ("return <line>;" first, then statements over as many
** lines as the compiler says are cut short), run as the host's main task,
** and its values printed with the global print.  Each REPL brings its own
** line reader.
*/
#ifndef AIO_REPL_CHUNK_H
#define AIO_REPL_CHUNK_H

#include "aiolua.h"

#define AIO_REPL_PROMPT1   "> "
#define AIO_REPL_PROMPT2   ">> "
#define AIO_REPL_CHUNKNAME "=stdin"

/* what a line reader got */
enum { R_LINE, R_EOF, R_INTERRUPT, R_EXIT };

/* the line a reader builds: malloc'd, NUL-terminated once bytes came */
typedef struct aio_repl_buf {
  char *line;
  size_t len, cap;
} aio_repl_buf;

/* append n bytes; 0, or -1 when out of memory (the line stays as it was) */
int aio__repl_buf_add(aio_repl_buf *b, const char *s, size_t n);
/* drop the line: the buffer is empty */
void aio__repl_buf_clear(aio_repl_buf *b);

typedef struct aio_repl_io {
  /* one line, the loop running meanwhile: R_LINE (the line is in buf),
  ** R_EOF, R_INTERRUPT (Ctrl-C at the prompt), R_EXIT (os.exit from a
  ** task) */
  int (*read_line)(const char *prompt);
  aio_repl_buf *buf;                   /* where read_line leaves the line */
  void (*history)(const char *chunk);  /* a chunk was read; may be NULL */
} aio_repl_io;

/* os.exit as the REPL has it: the code and the request, read by the line
** readers (R_EXIT) and the loop */
typedef struct aio_repl_exit {
  aio_host *h;
  int req;   /* os.exit was called */
  int code;
} aio_repl_exit;

/* host.c: cancel the task aio_host_call runs now, if any, with message
** msg */
void aio__host_cancel_main(aio_host *h, const char *msg);

/* Make os.exit(code) end the REPL rather than the process: the code goes
** to e, a prompt's wait ends, the calling task is cancelled (its cleanup
** runs).  0, or 1 with the error message on top. */
int aio__repl_install_exit(lua_State *L, aio_repl_exit *e);

/* Read, run and print chunks until EOF or os.exit: Ctrl-C at a prompt
** gives a fresh one, errors go to stderr.  `tty`: the terminal echoes
** "^C" (a newline before an interrupted chunk's message).  Returns the
** exit status: os.exit's code, else 0. */
int aio__repl_loop(lua_State *L, const aio_repl_io *io, aio_repl_exit *e,
                   int tty);

/* an error message to stderr */
void aio__repl_report(const char *msg);

/* ---- a failed main task, reported as lua.c reports a failed chunk ---- */

/* First thing in a main task's C function (main.c's driver, the REPL's
** chunk): remember the running task, whose error aio__main_errmsg looks
** at once aio_host_call has failed. */
void aio__main_begin(lua_State *L);
/* Raise the load error (a message) on top so that it is reported alone,
** with no traceback, as lua.c reports a chunk that does not compile or a
** file it cannot read. */
int aio__main_loaderror(lua_State *L);
/* After aio_host_call(h, ...) failed in a main task that called
** aio__main_begin: push and return the message lua.c's msghandler makes
** of the error: a string (or number) with its traceback; what __tostring
** gives, alone; "(error object is a <type> value)" and the traceback.
** aio's own error objects keep their traceback (API.md: "the error and a
** traceback").  Falls back to aio_host_errmsg. */
const char *aio__main_errmsg(aio_host *h);

#endif
