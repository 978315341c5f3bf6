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
** rather than 512 page faults; at most one segment's pages not yet used),
** as 4 KiB pages or as a transparent huge page, whichever the allocator
** has measured to cost less on this machine (seg_fault_in).  Under
** AddressSanitizer, and on Windows, each run comes from the C heap
** instead (so LeakSanitizer scans them) and free blocks are poisoned.
** This is the scheme of mimalloc's pages and of Lua's own suggestion in
** the manual (lua_Alloc receives osize), kept small.
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
#include <time.h>
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MADV_HUGEPAGE
#define MADV_HUGEPAGE 14
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
  size_t nseg, nhuge;       /* segments mapped; of them asked as huge pages */
  uint64_t cost[2];         /* ns the last segment of 4 KiB / huge pages took
                            ** to fault in (0: not measured yet) */
  int huge;                 /* AIOLUA_HUGEPAGES: -1 measure, 0 never, 1 always */
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

/* How a growing heap's segments come in.  The first is left to fault in
** page by page (a script that stays small touches only what it uses); the
** next ones are faulted in whole as they are mapped (MADV_POPULATE_WRITE:
** one kernel call rather than 512 traps).  From the fourth on, a segment
** may instead be one transparent huge page (MADV_HUGEPAGE, then the same
** call).  Which costs less depends on the machine: under some hypervisors
** the first touch of every 4 KiB page traps to the host even after the
** kernel has mapped it (5 us a page on the AMD VM this was measured on:
** 2.6 ms a segment, where a huge page was 0.1 ms, or 3 ms when the kernel
** had to zero memory the host had not backed yet); elsewhere a huge page
** costs more, 2 MiB the kernel must find and zero at once, where 4 KiB
** pages come from memory just freed.  So the allocator measures: the time
** of the call and of a touch of every 32nd page (scaled to all 512), for
** the fourth segment as 4 KiB pages and the fifth as a huge page; then
** each new segment takes the cheaper, and every 16th the other, to see
** whether it has become the cheaper.  AIOLUA_HUGEPAGES=0 in the
** environment never asks for huge pages, =1 asks for them from the second
** segment on. */
#define SEG_MEASURED 4   /* the first segment measured */
#define SEG_RETRY    16  /* one segment in this many takes the other way */

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int huge_setting(void) {
  const char *v = getenv("AIOLUA_HUGEPAGES");
  if (v == NULL || *v == '\0') return -1;
  return *v != '0';
}

/* which way segment number n (from 1) comes in: 1 as a huge page */
static int seg_huge(aio_alloc *a, size_t n) {
  int better;
  if (a->huge >= 0) return a->huge;
  if (a->cost[0] == 0) return 0;
  if (a->cost[1] == 0) return 1;
  better = a->cost[1] <= a->cost[0];
  return (n % SEG_RETRY == 0) ? !better : better;
}

/* fault in segment number n (from 2) and measure what it cost */
static void seg_fault_in(aio_alloc *a, char *seg, size_t n) {
  volatile char *p = seg;
  uint64_t t0, t1, t2;
  size_t i;
  int huge;
  if (n < SEG_MEASURED && a->huge < 0) {
    madvise(seg, SEG, MADV_POPULATE_WRITE);
    return;
  }
  huge = seg_huge(a, n);
  t0 = now_ns();
  /* refused where there are no huge pages: then it costs what 4 KiB do */
  if (huge && madvise(seg, SEG, MADV_HUGEPAGE) == 0) a->nhuge++;
  madvise(seg, SEG, MADV_POPULATE_WRITE);
  t1 = now_ns();
  for (i = 0; i < SEG; i += 32 * PAGE) p[i] = 0;
  t2 = now_ns();
  /* each touch stands for the 32 pages from it */
  a->cost[huge] = (t1 - t0) + 32 * (t2 - t1) + 1;
}

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
    ** in now (Linux 5.14; older kernels refuse it, and then they fault
    ** in as they are touched) */
    if (++a->nseg > 1) seg_fault_in(a, seg, a->nseg);
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
  aio_alloc *a = calloc(1, sizeof(aio_alloc));
#if !HEAP_RUNS
  if (a != NULL) a->huge = huge_setting();
#endif
  return a;
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
  st->huge_segs = a->nhuge;
}
