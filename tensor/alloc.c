/* 64-byte-aligned allocation with live/peak counters and a size-class cache for large blocks. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gg_alloc.h"
#include "gg_error.h"

#if defined(__SANITIZE_ADDRESS__)
#define GG_CACHE_DEFAULT 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GG_CACHE_DEFAULT 0
#endif
#endif
#ifndef GG_CACHE_DEFAULT
#define GG_CACHE_DEFAULT 1
#endif

/* Every block carries a header in the 64 bytes before the pointer handed out. */
typedef struct block_hdr {
    size_t requested;  /* bytes asked for (counted in live_bytes) */
    size_t capacity;   /* bytes usable after the header (the size class for cached blocks) */
    struct block_hdr *next_free;
    uint32_t magic;
} block_hdr;

#define HDR_SIZE GG_ALIGN
#define BLOCK_MAGIC 0x67676121u
#define CACHE_MIN ((size_t)64 << 10) /* blocks below 64 KiB go straight to the C allocator */
#define N_CLASSES 192                /* 4 classes per octave from 64 KiB up to 2^62 bytes */

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static block_hdr *free_lists[N_CLASSES];
static gg_alloc_stats stats;
static int caching = GG_CACHE_DEFAULT;

/* Size class of a large request: 4 steps per power of two, so at most 25% is wasted. */
static int size_class(size_t bytes, size_t *class_bytes) {
    int lg = 63 - __builtin_clzll((unsigned long long)(bytes - 1) | 1);
    size_t base = (size_t)1 << lg; /* base < bytes <= 2 * base */
    size_t quarter = base / 4;
    size_t steps = (bytes - base + quarter - 1) / quarter; /* 1..4 */
    *class_bytes = base + steps * quarter;
    return (lg - 15) * 4 + (int)steps - 4; /* 64 KiB exactly (lg 15, 4 steps) is class 0 */
}

static void *raw_alloc(size_t capacity) {
    void *p = NULL;
    if (capacity > SIZE_MAX - HDR_SIZE) return NULL;
    if (posix_memalign(&p, GG_ALIGN, HDR_SIZE + capacity) != 0) return NULL;
    return p;
}

void *gg_alloc(size_t bytes) {
    size_t capacity = bytes;
    int cls = -1;
    block_hdr *h = NULL;
    if (bytes >= CACHE_MIN && bytes <= ((size_t)1 << 62)) cls = size_class(bytes, &capacity);
    pthread_mutex_lock(&cache_lock);
    if (cls >= 0 && cls < N_CLASSES && caching && free_lists[cls]) {
        h = free_lists[cls];
        free_lists[cls] = h->next_free;
        stats.cached_bytes -= h->capacity;
        stats.n_cache_hits++;
    }
    pthread_mutex_unlock(&cache_lock);
    if (!h) {
        h = raw_alloc(capacity);
        if (!h) {
            gg_error_set(GG_ERR_NOMEM, "gg_alloc", "cannot allocate %zu bytes", bytes);
            return NULL;
        }
        h->capacity = capacity;
    }
    h->requested = bytes;
    h->next_free = NULL;
    h->magic = BLOCK_MAGIC;
    pthread_mutex_lock(&cache_lock);
    stats.live_bytes += bytes;
    if (stats.live_bytes > stats.peak_bytes) stats.peak_bytes = stats.live_bytes;
    stats.n_allocs++;
    pthread_mutex_unlock(&cache_lock);
    return (char *)h + HDR_SIZE;
}

void *gg_alloc_zeroed(size_t bytes) {
    void *p = gg_alloc(bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

void gg_free(void *p) {
    if (!p) return;
    block_hdr *h = (block_hdr *)((char *)p - HDR_SIZE);
    size_t cls_bytes = 0;
    int cls = h->capacity >= CACHE_MIN ? size_class(h->capacity, &cls_bytes) : -1;
    pthread_mutex_lock(&cache_lock);
    stats.live_bytes -= h->requested;
    int keep = caching && cls >= 0 && cls < N_CLASSES && cls_bytes == h->capacity;
    if (keep) {
        h->next_free = free_lists[cls];
        free_lists[cls] = h;
        stats.cached_bytes += h->capacity;
    }
    pthread_mutex_unlock(&cache_lock);
    if (!keep) {
        h->magic = 0;
        free(h);
    }
}

void gg_alloc_get_stats(gg_alloc_stats *out) {
    if (!out) return;
    pthread_mutex_lock(&cache_lock);
    *out = stats;
    pthread_mutex_unlock(&cache_lock);
}

size_t gg_alloc_live_bytes(void) {
    gg_alloc_stats s;
    gg_alloc_get_stats(&s);
    return s.live_bytes;
}

size_t gg_alloc_peak_bytes(void) {
    gg_alloc_stats s;
    gg_alloc_get_stats(&s);
    return s.peak_bytes;
}

void gg_alloc_reset_peak(void) {
    pthread_mutex_lock(&cache_lock);
    stats.peak_bytes = stats.live_bytes;
    pthread_mutex_unlock(&cache_lock);
}

void gg_alloc_trim(void) {
    block_hdr *all = NULL;
    pthread_mutex_lock(&cache_lock);
    for (int c = 0; c < N_CLASSES; c++) {
        while (free_lists[c]) {
            block_hdr *h = free_lists[c];
            free_lists[c] = h->next_free;
            h->next_free = all;
            all = h;
        }
    }
    stats.cached_bytes = 0;
    pthread_mutex_unlock(&cache_lock);
    while (all) {
        block_hdr *next = all->next_free;
        free(all);
        all = next;
    }
}

void gg_alloc_set_caching(int enabled) {
    pthread_mutex_lock(&cache_lock);
    caching = enabled != 0;
    pthread_mutex_unlock(&cache_lock);
    if (!enabled) gg_alloc_trim();
}
