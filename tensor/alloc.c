/* 64-byte-aligned allocation with live/peak counters and two caches: a shared size-class cache for
 * blocks of 64 KiB and more (fresh pages are expensive), and a lock-free per-thread cache of small
 * blocks (tensor headers, graph nodes, tiny tensors: the autograd hot path allocates several per op). */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

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
    size_t requested;  /* bytes asked for (counted in live_bytes unless untracked) */
    size_t capacity;   /* bytes usable after the header (the size class for cached blocks) */
    struct block_hdr *next_free;
    uint32_t magic;
    bool tracked;      /* counted in the user-visible statistics */
    bool mapped;       /* its own mmap (release with munmap), else from posix_memalign */
    bool small;        /* from the small path (a request below CACHE_MIN): returns to the per-thread cache */
} block_hdr;

#define HDR_SIZE GG_ALIGN
#define BLOCK_MAGIC 0x67676121u
#define CACHE_MIN ((size_t)64 << 10) /* blocks below 64 KiB go straight to the C allocator */
#define N_CLASSES 192                /* 4 classes per octave from 64 KiB up to 2^62 bytes */

#define SMALL_CLASSES 11                  /* 64 B, 128 B, ..., 64 KiB (blocks below CACHE_MIN) */
#define SMALL_KEEP_BYTES ((size_t)64 << 20) /* per thread and class: a 100k-node graph fits */

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER; /* guards free_lists */
static block_hdr *free_lists[N_CLASSES];
static atomic_size_t live_bytes, peak_bytes, cached_bytes, n_allocs, n_cache_hits;
static atomic_size_t high_water; /* like peak_bytes, but never reset: 2x is the bound of the large-block cache */
#define REUSE_UP 2               /* a request may take a cached block up to 2 classes (41%) larger */
static atomic_int caching = GG_CACHE_DEFAULT;

typedef struct small_cache {
    block_hdr *head[SMALL_CLASSES];
    size_t bytes[SMALL_CLASSES];
    bool registered;
} small_cache;
static _Thread_local small_cache tcache;
static pthread_key_t tcache_key;
static pthread_once_t tcache_once = PTHREAD_ONCE_INIT;

static void raw_free(block_hdr *h);

static void flush_small(small_cache *c) {
    for (int k = 0; k < SMALL_CLASSES; k++) {
        while (c->head[k]) {
            block_hdr *h = c->head[k];
            c->head[k] = h->next_free;
            raw_free(h);
        }
        c->bytes[k] = 0;
    }
}
static void tcache_exit(void *p) { flush_small(p); }
static void make_tcache_key(void) { pthread_key_create(&tcache_key, tcache_exit); }

static int small_class(size_t bytes) {
    size_t cap = 64;
    int k = 0;
    while (cap < bytes) cap <<= 1, k++;
    return k;
}

/* Size class of a large request: 4 steps per power of two, so at most 25% is wasted. */
static int size_class(size_t bytes, size_t *class_bytes) {
    int lg = 63 - __builtin_clzll((unsigned long long)(bytes - 1) | 1);
    size_t base = (size_t)1 << lg; /* base < bytes <= 2 * base */
    size_t quarter = base / 4;
    size_t steps = (bytes - base + quarter - 1) / quarter; /* 1..4 */
    *class_bytes = base + steps * quarter;
    return (lg - 15) * 4 + (int)steps - 4; /* 64 KiB exactly (lg 15, 4 steps) is class 0 */
}

/* Blocks of CACHE_MIN bytes and more get their own mapping when the cache is compiled in (not under
 * AddressSanitizer, which checks only what malloc hands out): glibc serves a freed large chunk's size from
 * its heap afterwards (its mmap threshold rises), and a training loop whose frees and allocations of many
 * sizes interleave then fragments the heap: resident memory grew 27% over 7 epochs of the dense GroupNet-S
 * with the tensor working set constant. A mapping returns to the system exactly when it is freed. */
static block_hdr *raw_alloc(size_t capacity, bool large) {
    void *p = NULL;
    if (capacity > SIZE_MAX - HDR_SIZE) return NULL;
    if (GG_CACHE_DEFAULT && large) {
        p = mmap(NULL, HDR_SIZE + capacity, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return NULL;
        ((block_hdr *)p)->mapped = true;
        return p;
    }
    if (posix_memalign(&p, GG_ALIGN, HDR_SIZE + capacity) != 0) return NULL;
    ((block_hdr *)p)->mapped = false;
    return p;
}

static void raw_free(block_hdr *h) {
    if (h->mapped) munmap(h, HDR_SIZE + h->capacity);
    else free(h);
}

static void count_alloc(size_t bytes) {
    size_t live = atomic_fetch_add_explicit(&live_bytes, bytes, memory_order_relaxed) + bytes;
    size_t peak = atomic_load_explicit(&peak_bytes, memory_order_relaxed);
    while (live > peak &&
           !atomic_compare_exchange_weak_explicit(&peak_bytes, &peak, live, memory_order_relaxed,
                                                  memory_order_relaxed)) {
    }
    size_t hw = atomic_load_explicit(&high_water, memory_order_relaxed);
    while (live > hw &&
           !atomic_compare_exchange_weak_explicit(&high_water, &hw, live, memory_order_relaxed,
                                                  memory_order_relaxed)) {
    }
    atomic_fetch_add_explicit(&n_allocs, 1, memory_order_relaxed);
}

/* Take a block of at least `bytes` from a cache or the system; NULL on failure. */
static block_hdr *take_block(size_t bytes) {
    block_hdr *h = NULL;
    bool cache = atomic_load_explicit(&caching, memory_order_relaxed);
    size_t capacity = bytes;
    if (bytes < CACHE_MIN) {
        int k = small_class(bytes);
        capacity = (size_t)64 << k;
        if (cache && (h = tcache.head[k])) {
            tcache.head[k] = h->next_free;
            tcache.bytes[k] -= capacity;
            if (h->next_free) __builtin_prefetch(h->next_free); /* the next pop reads it */
            return h;
        }
    } else if (bytes <= ((size_t)1 << 62)) {
        int cls = size_class(bytes, &capacity);
        if (cache && cls < N_CLASSES) {
            /* the exact class first, then up to REUSE_UP classes larger: the blocks of a training step
             * serve the smaller last batch of an epoch instead of a second set being cached beside them */
            pthread_mutex_lock(&cache_lock);
            for (int c = cls; c < N_CLASSES && c <= cls + REUSE_UP && !h; c++)
                if ((h = free_lists[c])) free_lists[c] = h->next_free;
            pthread_mutex_unlock(&cache_lock);
            if (h) atomic_fetch_sub_explicit(&cached_bytes, h->capacity, memory_order_relaxed);
        }
    }
    if (h) {
        atomic_fetch_add_explicit(&n_cache_hits, 1, memory_order_relaxed);
        return h;
    }
    h = raw_alloc(capacity, bytes >= CACHE_MIN);
    if (h) h->capacity = capacity, h->small = bytes < CACHE_MIN;
    return h;
}

static void *alloc_block(size_t bytes, bool tracked) {
    block_hdr *h = take_block(bytes);
    if (!h) {
        gg_error_set(GG_ERR_NOMEM, "gg_alloc", "cannot allocate %zu bytes", bytes);
        return NULL;
    }
    h->requested = bytes;
    h->next_free = NULL;
    h->magic = BLOCK_MAGIC;
    h->tracked = tracked;
    if (tracked) count_alloc(bytes);
    return (char *)h + HDR_SIZE;
}

void *gg_alloc(size_t bytes) { return alloc_block(bytes, true); }
void *gg__alloc_untracked(size_t bytes) { return alloc_block(bytes, false); }

void *gg_alloc_zeroed(size_t bytes) {
    void *p = gg_alloc(bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

void gg_free(void *p) {
    if (!p) return;
    block_hdr *h = (block_hdr *)((char *)p - HDR_SIZE);
    if (h->tracked) atomic_fetch_sub_explicit(&live_bytes, h->requested, memory_order_relaxed);
    h->magic = 0;
    if (atomic_load_explicit(&caching, memory_order_relaxed)) {
        /* blocks of the small path (requests below CACHE_MIN, up to a 64 KiB class) go back to it: only it
         * serves such requests */
        if (h->small) {
            int k = small_class(h->capacity);
            if (((size_t)64 << k) == h->capacity && tcache.bytes[k] + h->capacity <= SMALL_KEEP_BYTES) {
                if (!tcache.registered) { /* flush this thread's blocks when it exits */
                    pthread_once(&tcache_once, make_tcache_key);
                    pthread_setspecific(tcache_key, &tcache);
                    tcache.registered = true;
                }
                h->next_free = tcache.head[k];
                tcache.head[k] = h;
                tcache.bytes[k] += h->capacity;
                return;
            }
        } else {
            size_t cls_bytes = 0;
            int cls = size_class(h->capacity, &cls_bytes);
            /* Bounded: cached blocks never exceed twice the highest live total seen, so the process holds
             * at most three times its working set however the sizes vary (the rest goes back to the C
             * library). Once: a training step frees its saved tensors while its gradients are live, and a
             * bound of one working set sent about 34 MB per GroupNet-S step back to the system, to be
             * faulted in again on the next step. */
            const size_t limit = 2 * atomic_load_explicit(&high_water, memory_order_relaxed);
            if (cls < N_CLASSES && cls_bytes == h->capacity &&
                atomic_load_explicit(&cached_bytes, memory_order_relaxed) + h->capacity <= limit) {
                pthread_mutex_lock(&cache_lock);
                h->next_free = free_lists[cls];
                free_lists[cls] = h;
                pthread_mutex_unlock(&cache_lock);
                atomic_fetch_add_explicit(&cached_bytes, h->capacity, memory_order_relaxed);
                return;
            }
        }
    }
    raw_free(h);
}

void gg__free_untracked(void *p) { gg_free(p); }

void gg_alloc_get_stats(gg_alloc_stats *out) {
    if (!out) return;
    out->live_bytes = atomic_load(&live_bytes);
    out->peak_bytes = atomic_load(&peak_bytes);
    size_t small = 0;
    for (int k = 0; k < SMALL_CLASSES; k++) small += tcache.bytes[k];
    out->cached_bytes = atomic_load(&cached_bytes) + small;
    out->n_allocs = atomic_load(&n_allocs);
    out->n_cache_hits = atomic_load(&n_cache_hits);
}

size_t gg_alloc_live_bytes(void) { return atomic_load(&live_bytes); }
size_t gg_alloc_peak_bytes(void) { return atomic_load(&peak_bytes); }
void gg_alloc_reset_peak(void) { atomic_store(&peak_bytes, atomic_load(&live_bytes)); }

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
    pthread_mutex_unlock(&cache_lock);
    while (all) {
        block_hdr *next = all->next_free;
        atomic_fetch_sub(&cached_bytes, all->capacity);
        raw_free(all);
        all = next;
    }
    flush_small(&tcache);
}

void gg_alloc_set_caching(int enabled) {
    atomic_store(&caching, enabled != 0);
    if (!enabled) gg_alloc_trim();
}
