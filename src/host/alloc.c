/*
** alloc.c: the host's Lua allocator (see alloc.h).
**
** Lua tells the allocator the size of every block it frees or resizes, so
** small blocks need no header: a block of class c (c * 16 bytes) lives in a
** 64 KiB run that holds only class c, and the run is found from the block's
** address (runs are aligned to their size).  Each run keeps a free list of
** its returned blocks and a bump pointer into space never used; a class
** keeps a list of its runs that have room.  A run whose last block goes
** back returns to a list of empty runs any class may take; past a few of
** those, their pages go back to the system.
**
** Compared with malloc this saves the 8-16 bytes of header and rounding on
** every Lua object (a task is five of them) and most of the instructions.
** On Linux runs are cut from 2 MiB segments; every segment after the first
** is faulted in whole as it is mapped (MADV_POPULATE_WRITE: a kernel call
** rather than 512 page faults; at most one segment's pages not yet used).
** (Asking for transparent huge pages for them was measured: 90% fewer page
** faults, 20% less user time, but twice the system time zeroing and
** compacting them, so it is not done.)  Under AddressSanitizer, and on
** Windows, each run comes from the C heap instead (so LeakSanitizer scans
** them) and free blocks are poisoned.  This is the scheme of mimalloc's
** pages and of Lua's own suggestion in the manual (lua_Alloc receives
** osize), kept small.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer) && !defined(__SANITIZE_ADDRESS__)
#define __SANITIZE_ADDRESS__ 1  /* clang says it this way */
#endif
#endif

/* under ASan the runs come from the C heap, so LeakSanitizer scans them
** and poisoning shows use of a freed block */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n)   ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#define HEAP_RUNS 1
#else
#define POISON(p, n)   ((void)0)
#define UNPOISON(p, n) ((void)0)
#ifdef _WIN32
#define HEAP_RUNS 1
#else
#define HEAP_RUNS 0
#endif
#endif

#if !HEAP_RUNS
#include <sys/mman.h>
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#endif

#define RUN        ((size_t)64 * 1024)
#define SEG        ((size_t)2 * 1024 * 1024)
#define PAGE       ((size_t)4096)
#define NCLASS     (AIO_ALLOC_SMALL / 16)
#define KEEP_WARM  16  /* empty runs kept with their pages */
#define HDR        64  /* the run header, rounded so blocks stay aligned */
#define CLS(n)     ((unsigned)(((n) + 15) >> 4))

typedef struct run {
  struct run *next, *prev;  /* in its class's list, or an empty-run list */
  void *free;               /* blocks given back */
  char *bump, *end;         /* space never used */
  uint32_t used;            /* blocks in use */
  uint16_t cls;
  uint8_t linked;           /* in its class's list: it has room */
} run;

struct aio_alloc {
  run *cls[NCLASS + 1];     /* per class: runs with room */
  run *warm, *cold;         /* empty runs, with and without their pages */
  size_t nwarm, ncold;
  char *seg_next, *seg_end; /* the segment being cut into runs */
  void **chunks;            /* segments (or heap runs) to give back */
  size_t nchunks, capchunks;
  size_t live, nruns, mapped;
  int closing;              /* lua_close is freeing everything */
};

typedef char hdr_fits[sizeof(run) <= HDR ? 1 : -1];

static int remember(aio_alloc *a, void *chunk) {
  if (a->nchunks == a->capchunks) {
    size_t cap = a->capchunks ? a->capchunks * 2 : 16;
    void **v = realloc(a->chunks, cap * sizeof *v);
    if (v == NULL) return -1;
    a->chunks = v;
    a->capchunks = cap;
  }
  a->chunks[a->nchunks++] = chunk;
  return 0;
}

#if HEAP_RUNS

static void *chunk_alloc(void) {
#ifdef _WIN32
  return _aligned_malloc(RUN, RUN);
#else
  void *p = NULL;
  return posix_memalign(&p, RUN, RUN) == 0 ? p : NULL;
#endif
}

static void chunk_free(void *p) {
#ifdef _WIN32
  _aligned_free(p);
#else
  free(p);
#endif
}

/* a fresh run from the C heap */
static run *run_new(aio_alloc *a) {
  void *p = chunk_alloc();
  if (p == NULL) return NULL;
  if (remember(a, p) != 0) {
    chunk_free(p);
    return NULL;
  }
  a->mapped += RUN;
  return p;
}

#else

/* a fresh run, cut from the current segment or a new one */
static run *run_new(aio_alloc *a) {
  run *r;
  if (a->seg_next == a->seg_end) {
    char *base = mmap(NULL, 2 * SEG, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), *seg;
    if (base == MAP_FAILED) return NULL;
    seg = (char *)(((uintptr_t)base + SEG - 1) & ~(uintptr_t)(SEG - 1));
    if (seg > base) munmap(base, (size_t)(seg - base));
    if (seg + SEG < base + 2 * SEG)
      munmap(seg + SEG, (size_t)(base + 2 * SEG - (seg + SEG)));
    if (remember(a, seg) != 0) {
      munmap(seg, SEG);
      return NULL;
    }
    /* past the first segment the heap is growing: its pages are faulted
    ** in with one call rather than one trap each (Linux 5.14; older
    ** kernels refuse it, and then they fault in as they are touched) */
    if (a->mapped >= SEG) madvise(seg, SEG, MADV_POPULATE_WRITE);
    a->seg_next = seg;
    a->seg_end = seg + SEG;
    a->mapped += SEG;
  }
  r = (run *)a->seg_next;
  a->seg_next += RUN;
  return r;
}

#endif

static void link_run(aio_alloc *a, run *r) {
  run **h = &a->cls[r->cls];
  r->prev = NULL;
  r->next = *h;
  if (*h) (*h)->prev = r;
  *h = r;
  r->linked = 1;
}

static void unlink_run(aio_alloc *a, run *r) {
  if (r->prev) r->prev->next = r->next;
  else a->cls[r->cls] = r->next;
  if (r->next) r->next->prev = r->prev;
  r->next = r->prev = NULL;
  r->linked = 0;
}

/* a run for class c: an empty one if there is one, else a new one */
static run *run_take(aio_alloc *a, unsigned c) {
  run *r;
  if (a->warm) {
    r = a->warm;
    a->warm = r->next;
    a->nwarm--;
  } else if (a->cold) {
    r = a->cold;
    a->cold = r->next;
    a->ncold--;
  } else if ((r = run_new(a)) == NULL) {
    return NULL;
  }
  r->free = NULL;
  r->bump = (char *)r + HDR;
  r->end = (char *)r + RUN;
  r->used = 0;
  r->cls = (uint16_t)c;
  POISON(r->bump, RUN - HDR);
  link_run(a, r);
  a->nruns++;
  return r;
}

/* an empty run goes back: kept warm, or its pages returned */
static void run_release(aio_alloc *a, run *r) {
  a->nruns--;
  if (a->nwarm < KEEP_WARM || a->closing) {
    r->next = a->warm;
    a->warm = r;
    a->nwarm++;
    return;
  }
#if !HEAP_RUNS
  madvise((char *)r + PAGE, RUN - PAGE, MADV_DONTNEED);  /* keep the header */
#endif
  r->next = a->cold;
  a->cold = r;
  a->ncold++;
}

static void *small_alloc(aio_alloc *a, unsigned c) {
  size_t sz = (size_t)c << 4;
  run *r = a->cls[c];
  void *p;
  if (r == NULL && (r = run_take(a, c)) == NULL) return NULL;
  if (r->free != NULL) {
    p = r->free;
    UNPOISON(p, sz);
    r->free = *(void **)p;
  } else {
    p = r->bump;
    r->bump += sz;
    UNPOISON(p, sz);
  }
  r->used++;
  a->live++;
  if (r->free == NULL && r->bump + sz > r->end) unlink_run(a, r);  /* full */
  return p;
}

static void small_free(aio_alloc *a, void *p, unsigned c) {
  run *r = (run *)((uintptr_t)p & ~(uintptr_t)(RUN - 1));
  *(void **)p = r->free;
  r->free = p;
  POISON(p, (size_t)c << 4);
  r->used--;
  a->live--;
  if (r->used == 0) {
    run *h = a->cls[c];
    /* the last run of its class stays, so a class that comes and goes
    ** does not take and give back a run each time */
    if (h != NULL && !(h == r && r->next == NULL)) {
      if (r->linked) unlink_run(a, r);
      run_release(a, r);
      return;
    }
  }
  if (!r->linked) link_run(a, r);
}

void *aio__lalloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  aio_alloc *a = ud;
  void *np;
  if (ptr == NULL) {  /* osize is a type tag here */
    if (nsize == 0) return NULL;
    return nsize <= AIO_ALLOC_SMALL ? small_alloc(a, CLS(nsize))
                                    : malloc(nsize);
  }
  if (nsize == 0) {
    if (osize <= AIO_ALLOC_SMALL) small_free(a, ptr, CLS(osize));
    else free(ptr);
    return NULL;
  }
  if (osize > AIO_ALLOC_SMALL) {
    if (nsize > AIO_ALLOC_SMALL) return realloc(ptr, nsize);
    if ((np = small_alloc(a, CLS(nsize))) == NULL) return NULL;
    memcpy(np, ptr, nsize);
    free(ptr);
    return np;
  }
  if (nsize <= AIO_ALLOC_SMALL && CLS(nsize) == CLS(osize)) return ptr;
  np = nsize <= AIO_ALLOC_SMALL ? small_alloc(a, CLS(nsize)) : malloc(nsize);
  if (np == NULL) return NULL;
  memcpy(np, ptr, osize < nsize ? osize : nsize);
  small_free(a, ptr, CLS(osize));
  return np;
}

aio_alloc *aio__alloc_new(void) {
  return calloc(1, sizeof(aio_alloc));
}

void aio__alloc_closing(aio_alloc *a) {
  if (a != NULL) a->closing = 1;
}

void aio__alloc_free(aio_alloc *a) {
  size_t i;
  if (a == NULL) return;
  for (i = 0; i < a->nchunks; i++) {
#if HEAP_RUNS
    chunk_free(a->chunks[i]);
#else
    munmap(a->chunks[i], SEG);
#endif
  }
  free(a->chunks);
  free(a);
}

void aio__alloc_stats(aio_alloc *a, aio_alloc_stats *st) {
  st->small_live = a->live;
  st->runs = a->nruns;
  st->free_runs = a->nwarm + a->ncold;
  st->mapped = a->mapped;
}
