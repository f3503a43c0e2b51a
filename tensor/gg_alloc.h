/* groupgrad memory: 64-byte-aligned allocation with live/peak byte counters and a caching arena.
 *
 * Fresh pages cost about 2 us per 4 KiB on the target machines (PERF_NOTES.md), so freed blocks of
 * 64 KiB and more are kept in shared size-class free lists (4 classes per octave) and reused instead of
 * being handed back to the kernel; a request takes a block of its own class or up to two classes larger, and
 * the cache never holds more than twice the highest live total seen, so a process stays within three times
 * its working set even when tensor sizes vary (a smaller last batch, evaluation batches). Smaller blocks are kept in a lock-free per-thread cache (up to 64 MiB per power-of-two class),
 * because the autograd hot path allocates several per op. gg_alloc_trim() releases cached blocks.
 * Builds with AddressSanitizer turn both caches off so use-after-free is still caught.
 * All functions are thread-safe. */
#ifndef GG_ALLOC_H
#define GG_ALLOC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GG_ALIGN 64

typedef struct gg_alloc_stats {
    size_t live_bytes;   /* bytes handed out and not yet freed (as requested) */
    size_t peak_bytes;   /* maximum of live_bytes since start or the last gg_alloc_reset_peak() */
    size_t cached_bytes; /* bytes held for reuse: the shared large-block cache + this thread's small one */
    size_t n_allocs;     /* number of successful gg_alloc calls */
    size_t n_cache_hits; /* how many were served from the large-block (>= 64 KiB) cache */
} gg_alloc_stats;

/* Allocate `bytes` (0 allowed: returns a unique non-NULL block) aligned to GG_ALIGN bytes.
 * Returns NULL and records GG_ERR_NOMEM on failure. Caller owns the block; free it with gg_free. */
void *gg_alloc(size_t bytes);
/* Same, zero-filled. */
void *gg_alloc_zeroed(size_t bytes);
/* Free a block from gg_alloc. gg_free(NULL) is a no-op. */
void gg_free(void *p);

void gg_alloc_get_stats(gg_alloc_stats *out);
size_t gg_alloc_live_bytes(void);
size_t gg_alloc_peak_bytes(void);
/* Set the peak counter to the current live count. */
void gg_alloc_reset_peak(void);
/* Return cached blocks to the system: the shared large-block cache and this thread's small-block cache
 * (other threads' small caches are returned when those threads exit). */
void gg_alloc_trim(void);
/* Turn the cache on or off (on by default except under AddressSanitizer); turning it off trims. */
void gg_alloc_set_caching(int enabled);

#ifdef __cplusplus
}
#endif
#endif
