/*
** alloc.h: the host's Lua allocator (internal).  Small blocks (up to
** AIO_ALLOC_SMALL bytes: tables, closures, strings, threads and their
** stacks, task records) come from size classes 16 bytes apart, carved from
** 64 KiB runs with no per-block header; bigger ones go to malloc.  A Lua
** state is single-threaded, so one allocator serves one state and takes no
** lock.  See alloc.c.
*/
#ifndef AIO_ALLOC_H
#define AIO_ALLOC_H

#include <stddef.h>

#define AIO_ALLOC_SMALL 1024

typedef struct aio_alloc aio_alloc;

/* a new allocator, or NULL (out of memory) */
aio_alloc *aio__alloc_new(void);
/* lua_close is about to free every block: runs that empty keep their
** pages (returning them one run at a time is wasted work when
** aio__alloc_free unmaps the segments right after) */
void aio__alloc_closing(aio_alloc *a);
/* free it and every block it holds: after lua_close */
void aio__alloc_free(aio_alloc *a);
/* the lua_Alloc function; ud is the aio_alloc */
void *aio__lalloc(void *ud, void *ptr, size_t osize, size_t nsize);

/* counters, for tests and the benchmark notes */
typedef struct aio_alloc_stats {
  size_t small_live;    /* small blocks in use */
  size_t runs;          /* runs holding small blocks */
  size_t free_runs;     /* empty runs kept for reuse */
  size_t mapped;        /* bytes of runs obtained from the system */
  size_t huge_segs;     /* 2 MiB segments asked for as huge pages */
} aio_alloc_stats;
void aio__alloc_stats(aio_alloc *a, aio_alloc_stats *st);

#endif
