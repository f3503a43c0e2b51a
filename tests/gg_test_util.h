/* Shared helpers for the groupgrad Criterion suites: a fixed-seed LCG for random shapes, row-major
 * index iteration, and tensor comparison assertions that report the first mismatching element. */
#ifndef GG_TEST_UTIL_H
#define GG_TEST_UTIL_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "groupgrad.h"

/* 64-bit LCG (Knuth MMIX constants); the tests use it so that every run sees the same "random" cases. */
typedef struct gt_lcg {
    uint64_t state;
} gt_lcg;

static inline void gt_lcg_seed(gt_lcg *g, uint64_t seed) { g->state = seed * 0x9E3779B97F4A7C15ull + 1; }
static inline uint32_t gt_lcg_u32(gt_lcg *g) {
    g->state = g->state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(g->state >> 33);
}
/* Uniform integer in [lo, hi]. */
static inline int64_t gt_lcg_range(gt_lcg *g, int64_t lo, int64_t hi) {
    return lo + (int64_t)(gt_lcg_u32(g) % (uint32_t)(hi - lo + 1));
}

static inline int64_t gt_numel(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    return n;
}

/* Advance a row-major multi-index; returns 0 after the last one. */
static inline int gt_next_index(int ndim, const int64_t *shape, int64_t *idx) {
    for (int d = ndim - 1; d >= 0; d--) {
        if (++idx[d] < shape[d]) return 1;
        idx[d] = 0;
    }
    return 0;
}

/* Row-major contiguous strides for a shape. */
static inline void gt_contig_strides(int ndim, const int64_t *shape, int64_t *stride) {
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        stride[d] = s;
        s *= shape[d];
    }
}

/* Assert that t has exactly this shape. */
#define gt_assert_shape(t, ...) gt_assert_shape_((t), GG_SHAPE(__VA_ARGS__), __FILE__, __LINE__)
static inline void gt_assert_shape_(const gg_tensor *t, int ndim, const int64_t *shape, const char *file,
                                    int line) {
    cr_assert_not_null(t, "%s:%d: tensor is NULL (last error: %s)", file, line, gg_last_error());
    cr_assert_eq(t->ndim, ndim, "%s:%d: ndim %d, expected %d", file, line, t->ndim, ndim);
    for (int d = 0; d < ndim; d++)
        cr_assert_eq(t->shape[d], shape[d], "%s:%d: shape[%d] = %lld, expected %lld", file, line, d,
                     (long long)t->shape[d], (long long)shape[d]);
    cr_assert_eq(t->numel, gt_numel(ndim, shape), "%s:%d: numel %lld", file, line, (long long)t->numel);
}

/* Assert that the elements of t, read one by one with gg_tensor_get in row-major order, equal
 * expected[0 .. numel-1] exactly (bitwise for finite values). */
static inline void gt_assert_values_(const gg_tensor *t, const float *expected, const char *file, int line) {
    cr_assert_not_null(t, "%s:%d: tensor is NULL (last error: %s)", file, line, gg_last_error());
    if (t->numel == 0) return;
    int64_t idx[GG_MAX_DIMS] = {0};
    int64_t i = 0;
    do {
        float v = NAN;
        int st = gg_tensor_get(t, idx, &v);
        cr_assert_eq(st, GG_OK, "%s:%d: gg_tensor_get failed at element %lld: %s", file, line, (long long)i,
                     gg_last_error());
        cr_assert(v == expected[i], "%s:%d: element %lld is %g, expected %g", file, line, (long long)i,
                  (double)v, (double)expected[i]);
        i++;
    } while (gt_next_index(t->ndim, t->shape, idx));
    cr_assert_eq(i, t->numel, "%s:%d: visited %lld elements, numel %lld", file, line, (long long)i,
                 (long long)t->numel);
}
#define gt_assert_values(t, expected) gt_assert_values_((t), (expected), __FILE__, __LINE__)
/* Same with a literal list: gt_assert_list(t, 1, 2, 3). */
#define gt_assert_list(t, ...) gt_assert_values_((t), (const float[]){__VA_ARGS__}, __FILE__, __LINE__)

/* Assert that every element of t equals v. */
static inline void gt_assert_all_(const gg_tensor *t, float v, const char *file, int line) {
    cr_assert_not_null(t, "%s:%d: tensor is NULL (last error: %s)", file, line, gg_last_error());
    if (t->numel == 0) return;
    int64_t idx[GG_MAX_DIMS] = {0};
    do {
        float x = NAN;
        cr_assert_eq(gg_tensor_get(t, idx, &x), GG_OK, "%s:%d: get failed: %s", file, line, gg_last_error());
        cr_assert(x == v, "%s:%d: element is %g, expected %g", file, line, (double)x, (double)v);
    } while (gt_next_index(t->ndim, t->shape, idx));
}
#define gt_assert_all(t, v) gt_assert_all_((t), (v), __FILE__, __LINE__)

/* Assert that the last recorded error has this status and its message contains `needle`. */
#define gt_assert_error(status, needle)                                                                   \
    do {                                                                                                 \
        cr_assert_eq(gg_last_status(), (status), "last status %d (%s), expected %d; message: \"%s\"",      \
                     gg_last_status(), gg_status_name(gg_last_status()), (int)(status), gg_last_error()); \
        cr_assert_not_null(strstr(gg_last_error(), (needle)), "message \"%s\" does not contain \"%s\"",  \
                           gg_last_error(), (needle));                                                   \
    } while (0)

/* Assert that the last error message contains `needle`. */
#define gt_assert_msg_has(needle)                                                                       \
    cr_assert_not_null(strstr(gg_last_error(), (needle)), "message \"%s\" does not contain \"%s\"",     \
                       gg_last_error(), (needle))

/* A contiguous tensor holding 0, 1, 2, ... in row-major order. */
static inline gg_tensor *gt_iota(int ndim, const int64_t *shape) {
    int64_t n = gt_numel(ndim, shape);
    float *buf = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) buf[i] = (float)i;
    gg_tensor *t = gg_tensor_from_data(ndim, shape, buf);
    free(buf);
    cr_assert_not_null(t, "gg_tensor_from_data failed: %s", gg_last_error());
    return t;
}
#define GT_IOTA(...) gt_iota(GG_SHAPE(__VA_ARGS__))

#endif
