/*
** linein_win.h: lines of a Windows handle (the console or a pipe on stdin)
** read on a thread of their own and handed to a host's loop, so the loop
** runs while a line is awaited (the REPL of aiolua.exe, repl_win.c).
*/
#ifndef AIO_LINEIN_WIN_H
#define AIO_LINEIN_WIN_H

#include <stddef.h>

#include <windows.h>

#include "aiolua.h"

typedef struct aio_linein aio_linein;

/* what aio__linein_poll found */
enum {
  AIO_LI_PENDING,   /* no line yet: step the loop */
  AIO_LI_LINE,      /* a line, without its "\n" or "\r\n" */
  AIO_LI_EOF,       /* end of input (or a read error); for good */
  AIO_LI_INTR       /* a console read cut short by Ctrl-C */
};

/* a reader of `in` (not closed by it) whose lines wake h's loop (an
** aio_host_post each); NULL when the thread cannot start */
aio_linein *aio__linein_new(aio_host *h, HANDLE in);
/* Ask for the next line unless a read is already under way or its result
** not yet taken; then, with the loop stepped meanwhile, poll until the
** result is not AIO_LI_PENDING.  AIO_LI_LINE: *line (malloc'd, the
** caller frees it) holds *len bytes and a '\0'. */
void aio__linein_request(aio_linein *r);
int aio__linein_poll(aio_linein *r, char **line, size_t *len);
/* Stop the reader: a read in progress is cancelled (CancelSynchronousIo)
** and the thread joined.  1 when it was, 0 when the read could not be
** cancelled: the thread is then left blocked in it, touching nothing of the
** host (it frees its own state if the read ever returns; ExitProcess
** ends it otherwise). */
int aio__linein_free(aio_linein *r);

#endif
