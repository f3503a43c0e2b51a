/* Tests of the allocator (gg_alloc.h): alignment, exact live/peak accounting, the >= 64 KiB block cache
 * (skipped under AddressSanitizer, which turns the cache off), trimming and thread safety. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>

#include "groupgrad.h"
#include "gg_test_util.h"

#if defined(__SANITIZE_ADDRESS__)
#define GT_ASAN 1
#else
#define GT_ASAN 0
#endif

static gg_alloc_stats stats(void) {
    gg_alloc_stats s;
    memset(&s, 0xA5, sizeof s);
    gg_alloc_get_stats(&s);
    return s;
}

Test(alloc, alignment_for_many_sizes) {
    const size_t sizes[] = {0, 1, 2, 3, 7, 63, 64, 65, 127, 1000, 4095, 4096, 4097,
                            65535, 65536, 65537, 100000, 1 << 20, (1 << 20) + 12};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned char *p = gg_alloc(sizes[i]);
        cr_assert_not_null(p, "gg_alloc(%zu) failed: %s", sizes[i], gg_last_error());
        cr_assert_eq((uintptr_t)p % GG_ALIGN, 0, "gg_alloc(%zu) = %p is not 64-byte aligned", sizes[i], (void *)p);
        if (sizes[i]) memset(p, 0x5A, sizes[i]); /* the whole block must be writable */
        unsigned char *q = gg_alloc_zeroed(sizes[i]);
        cr_assert_not_null(q);
        cr_assert_eq((uintptr_t)q % GG_ALIGN, 0, "gg_alloc_zeroed(%zu) not aligned", sizes[i]);
        gg_free(p);
        gg_free(q);
    }
}

Test(alloc, zero_bytes_gives_unique_blocks) {
    void *a = gg_alloc(0);
    void *b = gg_alloc(0);
    cr_assert_not_null(a);
    cr_assert_not_null(b);
    cr_assert_neq(a, b, "two gg_alloc(0) returned the same block");
    gg_free(a);
    gg_free(b);
}

Test(alloc, zeroed_is_zero_even_when_reused) {
    const size_t n = 256 * 1024;
    for (int round = 0; round < 3; round++) {
        unsigned char *p = gg_alloc_zeroed(n);
        cr_assert_not_null(p);
        for (size_t i = 0; i < n; i++) cr_assert_eq(p[i], 0, "round %d byte %zu is %u", round, i, p[i]);
        memset(p, 0xAB, n); /* dirty it before it goes back to the cache */
        gg_free(p);
    }
    unsigned char *s = gg_alloc_zeroed(100);
    for (size_t i = 0; i < 100; i++) cr_assert_eq(s[i], 0);
    gg_free(s);
}

Test(alloc, live_bytes_rise_and_fall_exactly) {
    size_t base = gg_alloc_live_bytes();
    void *p = gg_alloc(1000);
    cr_assert_eq(gg_alloc_live_bytes(), base + 1000);
    void *q = gg_alloc(100000);
    cr_assert_eq(gg_alloc_live_bytes(), base + 101000);
    void *r = gg_alloc_zeroed(77);
    cr_assert_eq(gg_alloc_live_bytes(), base + 101077);
    gg_free(p);
    cr_assert_eq(gg_alloc_live_bytes(), base + 100077);
    gg_free(r);
    cr_assert_eq(gg_alloc_live_bytes(), base + 100000);
    gg_free(q);
    cr_assert_eq(gg_alloc_live_bytes(), base);
    /* Re-allocating a cached block is counted again. */
    q = gg_alloc(100000);
    cr_assert_eq(gg_alloc_live_bytes(), base + 100000);
    gg_free(q);
    cr_assert_eq(gg_alloc_live_bytes(), base);
}

Test(alloc, peak_and_reset_peak) {
    size_t base = gg_alloc_live_bytes();
    gg_alloc_reset_peak();
    cr_assert_eq(gg_alloc_peak_bytes(), base);
    void *a = gg_alloc(5000);
    void *b = gg_alloc(300000);
    cr_assert_eq(gg_alloc_peak_bytes(), base + 305000);
    gg_free(b);
    cr_assert_eq(gg_alloc_peak_bytes(), base + 305000, "peak fell when a block was freed");
    void *c = gg_alloc(1000);
    cr_assert_eq(gg_alloc_peak_bytes(), base + 305000, "peak rose below its previous maximum");
    gg_alloc_reset_peak();
    cr_assert_eq(gg_alloc_peak_bytes(), base + 6000);
    gg_free(a);
    gg_free(c);
    cr_assert_eq(gg_alloc_peak_bytes(), base + 6000);
    gg_alloc_reset_peak();
    cr_assert_eq(gg_alloc_peak_bytes(), base);
}

Test(alloc, stats_struct_matches_getters) {
    gg_alloc_stats s0 = stats();
    void *p = gg_alloc(4096);
    void *q = gg_alloc(70000);
    gg_alloc_stats s1 = stats();
    cr_assert_eq(s1.live_bytes, gg_alloc_live_bytes());
    cr_assert_eq(s1.peak_bytes, gg_alloc_peak_bytes());
    cr_assert_eq(s1.live_bytes, s0.live_bytes + 4096 + 70000);
    cr_assert_eq(s1.n_allocs, s0.n_allocs + 2, "n_allocs went %zu -> %zu for two calls", s0.n_allocs,
                 s1.n_allocs);
    cr_assert_geq(s1.peak_bytes, s1.live_bytes);
    gg_free(p);
    gg_free(q);
}

Test(alloc, free_null_is_noop) {
    gg_alloc_stats s0 = stats();
    gg_free(NULL);
    gg_alloc_stats s1 = stats();
    cr_assert_eq(memcmp(&s0, &s1, sizeof s0), 0);
    cr_assert_eq(gg_last_status(), GG_OK);
}

Test(alloc, large_freed_block_is_reused_from_cache) {
#if GT_ASAN
    cr_skip_test("the cache is off under AddressSanitizer");
#else
    gg_alloc_set_caching(1);
    const size_t n = 256 * 1024;
    void *p = gg_alloc(n);
    cr_assert_not_null(p);
    gg_free(p);
    gg_alloc_stats s0 = stats();
    cr_assert_geq(s0.cached_bytes, n, "a freed %zu-byte block was not cached (cached %zu)", n, s0.cached_bytes);
    void *q = gg_alloc(n);
    gg_alloc_stats s1 = stats();
    cr_assert_eq(s1.n_cache_hits, s0.n_cache_hits + 1, "cache hits %zu -> %zu", s0.n_cache_hits, s1.n_cache_hits);
    cr_assert_lt(s1.cached_bytes, s0.cached_bytes, "cached bytes did not fall on a hit");
    cr_assert_eq((uintptr_t)q % GG_ALIGN, 0);
    memset(q, 1, n);
    gg_free(q);
#endif
}

/* A request may take a cached block up to two size classes (4 per octave) larger, not more. */
Test(alloc, slightly_larger_cached_block_serves_a_request) {
#if GT_ASAN
    cr_skip_test("the cache is off under AddressSanitizer");
#else
    gg_alloc_set_caching(1);
    gg_alloc_trim();
    void *p = gg_alloc(1 << 20); /* class 1024 KiB */
    gg_free(p);
    size_t hits = stats().n_cache_hits;
    void *q = gg_alloc(600 * 1024); /* class 640 KiB: three classes below, a fresh block */
    cr_assert_eq(stats().n_cache_hits, hits, "a 600 KiB request took the cached 1 MiB block");
    void *r = gg_alloc(800 * 1024); /* class 896 KiB: one class below, reuses it */
    cr_assert_eq(stats().n_cache_hits, hits + 1, "an 800 KiB request did not reuse the cached 1 MiB block");
    cr_assert_eq(stats().live_bytes >= (600 + 800) * 1024, true);
    memset(r, 2, 800 * 1024);
    gg_free(q), gg_free(r);
#endif
}

/* The large-block cache holds no more than twice the highest live total: blocks of ever new sizes go
 * back to the system instead of piling up (without the bound, the sum of the sizes so far is 3x the
 * latest one here). */
Test(alloc, cache_is_bounded_by_the_high_water_mark) {
#if GT_ASAN
    cr_skip_test("the cache is off under AddressSanitizer");
#else
    gg_alloc_set_caching(1);
    gg_alloc_trim();
    for (size_t kib = 100; kib < 40000; kib = kib * 3 / 2) { /* one block at a time, each a new size */
        void *p = gg_alloc(kib * 1024);
        cr_assert_not_null(p);
        gg_free(p);
        gg_alloc_stats s = stats();
        cr_assert_leq(s.cached_bytes, 2 * s.peak_bytes + (size_t)(1 << 22), /* + the small-block cache */
                      "cached %zu bytes with a peak of %zu live", s.cached_bytes, s.peak_bytes);
    }
#endif
}

/* A request just under 64 KiB (a 64 KiB small class) is served again from the per-thread cache. */
Test(alloc, just_under_64k_is_reused) {
#if GT_ASAN
    cr_skip_test("the cache is off under AddressSanitizer");
#else
    gg_alloc_set_caching(1);
    gg_alloc_trim();
    void *p = gg_alloc(40 * 1024);
    gg_free(p);
    cr_assert_geq(stats().cached_bytes, 40 * 1024, "a freed 40 KiB block was not kept");
    void *q = gg_alloc(40 * 1024);
    cr_assert_eq(q, p, "a 40 KiB request did not reuse the freed 40 KiB block");
    cr_assert_eq(stats().cached_bytes, 0);
    gg_free(q);
#endif
}

Test(alloc, exactly_64k_is_cached) {
#if GT_ASAN
    cr_skip_test("the cache is off under AddressSanitizer");
#else
    gg_alloc_set_caching(1);
    gg_alloc_trim();
    void *p = gg_alloc(65536);
    gg_free(p);
    cr_assert_geq(stats().cached_bytes, 65536, "a 64 KiB block was not cached");
    size_t hits = stats().n_cache_hits;
    p = gg_alloc(65536);
    cr_assert_eq(stats().n_cache_hits, hits + 1);
    gg_free(p);
#endif
}

Test(alloc, small_blocks_are_not_cached) {
    gg_alloc_trim();
    gg_alloc_stats s0 = stats();
    void *p = gg_alloc(1000);
    gg_free(p);
    void *q = gg_alloc(1000);
    gg_alloc_stats s1 = stats();
    cr_assert_eq(s1.cached_bytes, 0, "a 1000-byte block went to the cache");
    cr_assert_eq(s1.n_cache_hits, s0.n_cache_hits);
    gg_free(q);
}

Test(alloc, trim_empties_cache) {
    gg_alloc_set_caching(1);
    void *a = gg_alloc(1 << 20);
    void *b = gg_alloc(200000);
    gg_free(a);
    gg_free(b);
#if !GT_ASAN
    cr_assert_gt(stats().cached_bytes, 0);
#endif
    size_t live = gg_alloc_live_bytes();
    gg_alloc_trim();
    cr_assert_eq(stats().cached_bytes, 0);
    cr_assert_eq(gg_alloc_live_bytes(), live, "trim changed live bytes");
}

Test(alloc, disabling_cache_trims_and_stops_caching) {
    gg_alloc_set_caching(1);
    void *a = gg_alloc(300000);
    gg_free(a);
    gg_alloc_set_caching(0);
    cr_assert_eq(stats().cached_bytes, 0, "turning the cache off did not trim");
    size_t hits = stats().n_cache_hits;
    a = gg_alloc(300000);
    gg_free(a);
    cr_assert_eq(stats().cached_bytes, 0, "cache off but a block was cached");
    a = gg_alloc(300000);
    cr_assert_eq(stats().n_cache_hits, hits);
    gg_free(a);
    gg_alloc_set_caching(1);
}

Test(alloc, huge_request_fails_cleanly) {
#if GT_ASAN
    cr_skip_test("ASan aborts on impossible allocations unless allocator_may_return_null is set");
#else
    size_t live = gg_alloc_live_bytes();
    const size_t sizes[] = {SIZE_MAX, SIZE_MAX - 10, SIZE_MAX - GG_ALIGN, SIZE_MAX / 2 + 1};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        gg_clear_error();
        void *p = gg_alloc(sizes[i]);
        cr_assert_null(p, "gg_alloc(%zu) succeeded", sizes[i]);
        cr_assert_eq(gg_last_status(), GG_ERR_NOMEM, "gg_alloc(%zu): status %d", sizes[i], gg_last_status());
        cr_assert_eq(gg_alloc_live_bytes(), live);
        cr_assert_null(gg_alloc_zeroed(sizes[i]));
    }
#endif
}

Test(alloc, tensor_lifecycle_leaves_live_bytes_unchanged) {
    size_t base = gg_alloc_live_bytes();
    gg_tensor *t = gg_tensor_zeros(GG_SHAPE(100, 100));
    cr_assert_geq(gg_alloc_live_bytes(), base + 40000, "tensor data not counted");
    gg_tensor *v = gg_tensor_transpose(t, 0, 1);
    gg_tensor *c = gg_tensor_contiguous(v);
    gg_tensor *s = gg_tensor_scalar(1.0f);
    gg_tensor *e = gg_tensor_zeros(GG_SHAPE(0, 4));
    gg_tensor_free(t);
    gg_tensor_free(c);
    gg_tensor_free(v);
    gg_tensor_free(s);
    gg_tensor_free(e);
    cr_assert_eq(gg_alloc_live_bytes(), base, "live bytes %zu after freeing everything, %zu before",
                 gg_alloc_live_bytes(), base);
}

static void *churn(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg;
    void *held[16] = {0};
    for (int i = 0; i < 2000; i++) {
        seed = seed * 1103515245u + 12345u;
        int slot = (int)((seed >> 16) % 16);
        size_t size = (seed >> 8) % 3 == 0 ? 70000 + (seed % 50000) : (seed % 3000);
        gg_free(held[slot]);
        held[slot] = gg_alloc(size);
        if (!held[slot]) return (void *)1;
        if (size) ((unsigned char *)held[slot])[size - 1] = 1;
    }
    for (int s = 0; s < 16; s++) gg_free(held[s]);
    return NULL;
}

Test(alloc, thread_safe_accounting) {
    size_t base = gg_alloc_live_bytes();
    pthread_t th[4];
    for (int i = 0; i < 4; i++) cr_assert_eq(pthread_create(&th[i], NULL, churn, (void *)(uintptr_t)(i + 1)), 0);
    for (int i = 0; i < 4; i++) {
        void *ret = (void *)2;
        pthread_join(th[i], &ret);
        cr_assert_null(ret, "thread %d: an allocation failed", i);
    }
    cr_assert_eq(gg_alloc_live_bytes(), base, "live bytes %zu after balanced alloc/free on 4 threads, base %zu",
                 gg_alloc_live_bytes(), base);
    gg_alloc_trim();
    cr_assert_eq(stats().cached_bytes, 0);
}
