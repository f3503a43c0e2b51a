/* Internal to ops/ (not installed): the reduction kernels of reduce.c (a plain reference and the fast
 * version, both exported so the tests can compare them) and the small row kernels reduce.c and softmax.c
 * share. Kernels see only pointers, sizes and element strides, never a gg_tensor. */
#ifndef GG_REDUCE_INTERNAL_H
#define GG_REDUCE_INTERNAL_H

#include <stdint.h>
#include <string.h>

typedef enum gg__red_kind {
    GG__RED_SUM, /* sum / div (mean: div = N) */
    GG__RED_MAX, /* NaN-propagating extremum; div unused */
    GG__RED_MIN,
    GG__RED_VAR, /* sum (x - mean)^2 / div, two passes in double */
    GG__RED_KIND_COUNT
} gg__red_kind;

/* out[g] = reduction of x over the dims whose bit is set in `mask`, for every index g of the kept dims
 * (row-major, their original order): out is contiguous with the output's shape. x points at element
 * (0,...,0) and is read through `stride` (elements, any sign, 0 allowed). Accumulation in double.
 * An empty group gives 0/div for SUM and VAR and NaN for MAX/MIN (the ops reject that case).
 * _ref walks the elements one by one in row-major order. _fast orders the reduced dims by decreasing
 * stride, merges dims, and dispatches to a chunked whole-tensor reduction, a column kernel (vectorised
 * across a contiguous kept dim), an outer-first row kernel (reduced dims around a kept one, as N, H, W
 * of NCHW, swept in memory order) or the general row kernel (contiguous or strided rows), with OpenMP
 * for large inputs; it may sum in another order than _ref (rounding differs, values do not). Results do
 * not depend on the thread count. */
void gg__reduce_ref(gg__red_kind kind, double div, const float *x, int ndim, const int64_t *shape,
                    const int64_t *stride, unsigned mask, float *out);
void gg__reduce_fast(gg__red_kind kind, double div, const float *x, int ndim, const int64_t *shape,
                     const int64_t *stride, unsigned mask, float *out);

/* ---- row kernels (static inline so the compiler vectorises them in place) ---- */

/* Independent accumulators: a double sum of floats is a dependency chain the compiler may not reorder;
 * 32 lanes give it 8 AVX2 vectors of 4 doubles to keep the adders busy. Rows shorter than GG__LONG_ROW
 * use 16 lanes: combining 32 costs more than it saves there, and once inlined into a large kernel GCC
 * keeps a 32-double array on the stack (16 stay in registers; 8 leave the adders latency-bound). The main
 * loops take two blocks of lanes per iteration: with one, GCC 12 (inlined into OpenMP-outlined code)
 * vectorises the outer loop too and keeps the accumulators on the stack, at 60% of the speed. Lanes are
 * combined by a fixed tree. */
#define GG__LANES 32
#define GG__LONG_ROW 256

static inline double gg__lanes32_total(const double *a) {
    double b[8];
    for (int k = 0; k < 8; k++) b[k] = (a[k] + a[k + 8]) + (a[k + 16] + a[k + 24]);
    return ((b[0] + b[1]) + (b[2] + b[3])) + ((b[4] + b[5]) + (b[6] + b[7]));
}
static inline double gg__lanes16_total(const double *a) {
    double b[4];
    for (int k = 0; k < 4; k++) b[k] = (a[k] + a[k + 4]) + (a[k + 8] + a[k + 12]);
    return (b[0] + b[1]) + (b[2] + b[3]);
}

/* sum of p[i] in double */
static inline double gg__sum_f32(const float *p, int64_t n) {
    double t = 0;
    int64_t i = 0;
    if (n >= GG__LONG_ROW) {
        double a[GG__LANES] = {0};
        for (; i + 2 * GG__LANES <= n; i += 2 * GG__LANES) {
            for (int k = 0; k < GG__LANES; k++) a[k] += (double)p[i + k];
            for (int k = 0; k < GG__LANES; k++) a[k] += (double)p[i + GG__LANES + k];
        }
        for (; i + GG__LANES <= n; i += GG__LANES)
            for (int k = 0; k < GG__LANES; k++) a[k] += (double)p[i + k];
        t = gg__lanes32_total(a);
    } else if (n >= 16) {
        double a[16] = {0};
        for (; i + 16 <= n; i += 16)
            for (int k = 0; k < 16; k++) a[k] += (double)p[i + k];
        t = gg__lanes16_total(a);
    }
    for (; i < n; i++) t += (double)p[i];
    return t;
}

/* sum of p[i] * q[i] in double */
static inline double gg__dot_f32(const float *p, const float *q, int64_t n) {
    double t = 0;
    int64_t i = 0;
    if (n >= GG__LONG_ROW) {
        double a[GG__LANES] = {0};
        for (; i + 2 * GG__LANES <= n; i += 2 * GG__LANES) {
            for (int k = 0; k < GG__LANES; k++) a[k] += (double)p[i + k] * (double)q[i + k];
            for (int k = 0; k < GG__LANES; k++) {
                int64_t j = i + GG__LANES + k;
                a[k] += (double)p[j] * (double)q[j];
            }
        }
        for (; i + GG__LANES <= n; i += GG__LANES)
            for (int k = 0; k < GG__LANES; k++) a[k] += (double)p[i + k] * (double)q[i + k];
        t = gg__lanes32_total(a);
    } else if (n >= 16) {
        double a[16] = {0};
        for (; i + 16 <= n; i += 16)
            for (int k = 0; k < 16; k++) a[k] += (double)p[i + k] * (double)q[i + k];
        t = gg__lanes16_total(a);
    }
    for (; i < n; i++) t += (double)p[i] * (double)q[i];
    return t;
}

/* sum of (p[i] - mean)^2 in double */
static inline double gg__sqdev_f32(const float *p, int64_t n, double mean) {
    double t = 0;
    int64_t i = 0;
    if (n >= GG__LONG_ROW) {
        double a[GG__LANES] = {0};
        for (; i + 2 * GG__LANES <= n; i += 2 * GG__LANES) {
            for (int k = 0; k < GG__LANES; k++) {
                double d = (double)p[i + k] - mean;
                a[k] += d * d;
            }
            for (int k = 0; k < GG__LANES; k++) {
                double d = (double)p[i + GG__LANES + k] - mean;
                a[k] += d * d;
            }
        }
        for (; i + GG__LANES <= n; i += GG__LANES)
            for (int k = 0; k < GG__LANES; k++) {
                double d = (double)p[i + k] - mean;
                a[k] += d * d;
            }
        t = gg__lanes32_total(a);
    } else if (n >= 16) {
        double a[16] = {0};
        for (; i + 16 <= n; i += 16)
            for (int k = 0; k < 16; k++) {
                double d = (double)p[i + k] - mean;
                a[k] += d * d;
            }
        t = gg__lanes16_total(a);
    }
    for (; i < n; i++) {
        double d = (double)p[i] - mean;
        t += d * d;
    }
    return t;
}

/* NaN-sticky max/min steps: once m is NaN it stays NaN; a NaN v replaces m (as torch.amax/amin). */
static inline float gg__max_nan(float m, float v) { return ((v > m) | (v != v)) ? v : m; }
static inline float gg__min_nan(float m, float v) { return ((v < m) | (v != v)) ? v : m; }

/* max / min of p[0 .. n-1], n >= 1 */
static inline float gg__max_f32(const float *p, int64_t n) {
    float m = p[0];
    int64_t i = 1;
    if (n >= 2 * GG__LANES) {
        float a[GG__LANES];
        for (int k = 0; k < GG__LANES; k++) a[k] = p[k];
        for (i = GG__LANES; i + 2 * GG__LANES <= n; i += 2 * GG__LANES) {
            for (int k = 0; k < GG__LANES; k++) a[k] = gg__max_nan(a[k], p[i + k]);
            for (int k = 0; k < GG__LANES; k++) a[k] = gg__max_nan(a[k], p[i + GG__LANES + k]);
        }
        for (int k = 0; k < GG__LANES; k++) m = gg__max_nan(m, a[k]);
    }
    for (; i < n; i++) m = gg__max_nan(m, p[i]);
    return m;
}

static inline float gg__min_f32(const float *p, int64_t n) {
    float m = p[0];
    int64_t i = 1;
    if (n >= 2 * GG__LANES) {
        float a[GG__LANES];
        for (int k = 0; k < GG__LANES; k++) a[k] = p[k];
        for (i = GG__LANES; i + 2 * GG__LANES <= n; i += 2 * GG__LANES) {
            for (int k = 0; k < GG__LANES; k++) a[k] = gg__min_nan(a[k], p[i + k]);
            for (int k = 0; k < GG__LANES; k++) a[k] = gg__min_nan(a[k], p[i + GG__LANES + k]);
        }
        for (int k = 0; k < GG__LANES; k++) m = gg__min_nan(m, a[k]);
    }
    for (; i < n; i++) m = gg__min_nan(m, p[i]);
    return m;
}

/* exp(x) for x <= 0 in straight-line float code the compiler vectorises (libm's expf is a call per
 * element). Cephes expf: x = k ln2 + r, |r| <= ln2/2, degree-6 polynomial, 2^k from the exponent bits;
 * about 1 ulp. exp(0) is exactly 1. Below log(FLT_MIN) (-87.34), where the true result is subnormal,
 * it returns 0. NaN propagates. Softmax and cross-entropy only exponentiate x - max(x) <= 0. */
static inline float gg__exp_nonpos(float x) {
    const float lo = -87.33654f;
    float t = x < lo ? lo : x;
    float kf = t * 1.44269504088896341f + 12582912.0f; /* round(t / ln2) + 1.5 * 2^23 */
    uint32_t kb;
    memcpy(&kb, &kf, sizeof kb);
    kf -= 12582912.0f;
    float r = t - kf * 0.693359375f;
    r = r - kf * -2.12194440e-4f;
    float z = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * z + r + 1.0f;
    uint32_t sb = (kb - 0x4B400000u + 127u) << 23; /* bits of 2^k: kb's low bits hold k + 2^22 */
    float scale;
    memcpy(&scale, &sb, sizeof scale);
    float e = p * scale;
    return x < lo ? 0.0f : e;
}

#endif
