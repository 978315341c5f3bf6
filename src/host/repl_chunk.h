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

typedef struct aio_repl_io {
  /* one line, the loop running meanwhile: R_LINE (take_line has it), R_EOF,
  ** R_INTERRUPT (Ctrl-C at the prompt), R_EXIT (os.exit from a task) */
  int (*read_line)(const char *prompt);
  char *(*take_line)(void);            /* malloc'd; the caller frees it */
  void (*history)(const char *chunk);  /* a chunk was read; may be NULL */
} aio_repl_io;

/* the load error on top says the chunk was cut short: read more */
int aio__repl_incomplete(lua_State *L, int status);

/* Read and compile one chunk: pushes the function (LUA_OK) or the error
** message (the status of luaL_loadbuffer); -1 with nothing pushed at EOF,
** -2 when Ctrl-C abandoned it, -3 when os.exit was called. */
int aio__repl_load(lua_State *L, const aio_repl_io *io);

/* Run the function on top as h's main task and print its values; an error
** goes to stderr (only its first line when Ctrl-C cancelled the chunk,
** after a newline when `tty`, the terminal having echoed "^C").  Nothing is
** printed when *exiting is set (os.exit was called meanwhile).  Pops the
** function. */
void aio__repl_run(lua_State *L, aio_host *h, const int *exiting, int tty);

/* an error message to stderr */
void aio__repl_report(const char *msg);

#endif
