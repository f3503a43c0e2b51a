/* 2-D pooling (NCHW float32, PyTorch 1.13 CPU semantics): max, average, adaptive average and global
 * average pooling with their backward passes.
 *
 * x [N,C,H,W] -> y [N,C,Ho,Wo]; each of the N*C planes is pooled on its own. Window of output (ho, wo):
 * rows ih = ho*sh - ph + r*dh (r < kh), columns iw = wo*sw - pw + t*dw (t < kw); output sizes in gg_cnn.h.
 *   max:  y = max over the window's elements inside the input (padding is -inf); k* = the first maximum
 *         in row-major window order, or the last NaN (PyTorch's `val > max || isnan(val)` scan).
 *         dx[k*] += dy. The forward keeps k* as an int32 plane offset per output when recording.
 *   avg:  y = sum of the window inside the input / div, div = pool_h*pool_w (count_include_pad) or
 *         valid_h*valid_w, pool_* = extent of the window clipped to [-p, H+p), valid_* = clipped to
 *         [0, H). dx[window] += dy / div.
 *   adaptive avg: window rows [floor(i*H/Ho), ceil((i+1)*H/Ho)) (and columns likewise), y = sum / kh / kw,
 *         dx[window] += dy / kh / kw (PyTorch's order of divisions).
 *   global avg: y = sum over the plane / (H*W), dx += dy / (H*W).
 * Window sums are accumulated in double. A per-call plan holds the clipped tap ranges of every output row
 * and column, so no loop divides; outputs whose window columns lie inside the input run 8 (or 4) at a
 * time in vector-extension code (branch-free max: the scalar scan mispredicts on random data), visiting
 * the taps in window order so that ties, NaNs and sums come out exactly as in PyTorch's per-window loop
 * (the plain per-window loop, kept for the border outputs, is the reference in tests/test_ops_pool.c).
 * Planes are split over threads for large inputs, so results do not depend on the thread count. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "gg_alloc.h"
#include "gg_cnn.h"
#include "gg_internal.h"
#include "gg_node.h"
#include "gg_reduce_internal.h"
#include "gg_runtime.h"

#define PAR_MIN 32768 /* input elements below which kernels stay on one thread */
#define POOL_INLINE static inline __attribute__((always_inline))

/* Geometry of one pooling call; stored in node->ip (all int64). */
typedef struct pool_geom {
    int64_t N, C, H, W, Ho, Wo;
    int64_t kh, kw, sh, sw, ph, pw, dh, dw;
    int64_t count_include_pad;
} pool_geom;
_Static_assert(sizeof(pool_geom) / sizeof(int64_t) <= GG_NODE_IPARAMS, "pool geometry fits in ip[]");

static int threads_for(int64_t work) { return work > PAR_MIN ? gg_get_num_threads() : 1; }

/* [lo, hi): the t in [0, k) with 0 <= base + t*step < size (step >= 1). */
POOL_INLINE void tap_range(int64_t base, int64_t step, int64_t k, int64_t size, int64_t *lo, int64_t *hi) {
    int64_t a = base < 0 ? (-base + step - 1) / step : 0;
    int64_t b = base < size ? (size - base + step - 1) / step : 0;
    if (b > k) b = k;
    *lo = a;
    *hi = b > a ? b : a;
}

/* PyTorch's pooling_output_shape: floor division (div_rtn), and in ceil mode the last window must start
 * inside the input or the left padding. */
static int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode) {
    int64_t num = in + 2 * p - d * (k - 1) - 1 + (ceil_mode ? s - 1 : 0);
    int64_t q = num / s;
    if (num % s != 0 && num < 0) q--;
    int64_t o = q + 1;
    if (ceil_mode && (o - 1) * s >= in + p) o--;
    return o;
}

/* ---- argument checks (nothing allocated) ---- */

static int check_pool(const char *fn, const gg_tensor *x, const int *kernel, const int *stride, const int *pad,
                      const int *dilation, bool ceil_mode, bool count_include_pad, pool_geom *g) {
    char sx[GG_SHAPE_STR_MAX];
    GG_SHAPE_STR(x, sx);
    if (x->ndim != 4) return gg_error_set(GG_ERR_SHAPE, fn, "input must be 4-D [N,C,H,W], got x %s", sx);
    if (!kernel) return gg_error_set(GG_ERR_ARG, fn, "kernel size is NULL (x %s)", sx);
    const int k[2] = {kernel[0], kernel[1]};
    const int s[2] = {stride ? stride[0] : k[0], stride ? stride[1] : k[1]};
    const int p[2] = {pad ? pad[0] : 0, pad ? pad[1] : 0};
    const int d[2] = {dilation ? dilation[0] : 1, dilation ? dilation[1] : 1};
    if (k[0] < 1 || k[1] < 1)
        return gg_error_set(GG_ERR_ARG, fn, "kernel size must be positive, got (%d, %d) (x %s)", k[0], k[1], sx);
    if (s[0] < 1 || s[1] < 1)
        return gg_error_set(GG_ERR_ARG, fn, "stride must be positive, got (%d, %d) (x %s)", s[0], s[1], sx);
    if (d[0] < 1 || d[1] < 1)
        return gg_error_set(GG_ERR_ARG, fn, "dilation must be positive, got (%d, %d) (x %s)", d[0], d[1], sx);
    if (p[0] < 0 || p[1] < 0)
        return gg_error_set(GG_ERR_ARG, fn, "padding must be non-negative, got (%d, %d) (x %s)", p[0], p[1], sx);
    if (p[0] > k[0] / 2 || p[1] > k[1] / 2)
        return gg_error_set(GG_ERR_ARG, fn, "padding (%d, %d) must be at most half the kernel size (%d, %d) (x %s)",
                            p[0], p[1], k[0], k[1], sx);
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    if (C < 1 || H < 1 || W < 1)
        return gg_error_set(GG_ERR_SHAPE, fn, "input needs non-empty C, H and W (only N may be 0), got x %s", sx);
    const int64_t Ho = out_size(H, k[0], s[0], p[0], d[0], ceil_mode);
    const int64_t Wo = out_size(W, k[1], s[1], p[1], d[1], ceil_mode);
    if (Ho < 1 || Wo < 1)
        return gg_error_set(GG_ERR_SHAPE, fn,
                            "output size %lldx%lld is too small: x %s, kernel (%d, %d), stride (%d, %d), padding "
                            "(%d, %d), dilation (%d, %d)%s",
                            (long long)Ho, (long long)Wo, sx, k[0], k[1], s[0], s[1], p[0], p[1], d[0], d[1],
                            ceil_mode ? ", ceil_mode" : "");
    *g = (pool_geom){.N = N, .C = C, .H = H, .W = W, .Ho = Ho, .Wo = Wo, .kh = k[0], .kw = k[1], .sh = s[0],
                     .sw = s[1], .ph = p[0], .pw = p[1], .dh = d[0], .dw = d[1],
                     .count_include_pad = count_include_pad};
    return GG_OK;
}

/* ---- window plan and vector loads (max and average pooling) ---- */

/* Window bounds that do not depend on the plane, computed once per call so that no division is left in
 * the loops: per output row the valid tap rows [r0, r1); per output column the valid tap columns [t0, t1);
 * [a, b) = the output columns whose whole window lies inside the input (the interior). */
typedef struct pool_plan {
    int64_t *r0, *r1; /* [Ho] */
    int64_t *t0, *t1; /* [Wo] */
    int64_t a, b;
} pool_plan;

static int64_t *pool_plan_init(const pool_geom *g, pool_plan *mp) {
    int64_t *buf = gg_alloc(sizeof(int64_t) * (size_t)(2 * g->Ho + 2 * g->Wo));
    if (!buf) return NULL;
    mp->r0 = buf, mp->r1 = buf + g->Ho, mp->t0 = buf + 2 * g->Ho, mp->t1 = mp->t0 + g->Wo;
    for (int64_t oh = 0; oh < g->Ho; oh++) tap_range(oh * g->sh - g->ph, g->dh, g->kh, g->H, &mp->r0[oh], &mp->r1[oh]);
    mp->a = g->Wo, mp->b = 0;
    for (int64_t ow = 0; ow < g->Wo; ow++) {
        tap_range(ow * g->sw - g->pw, g->dw, g->kw, g->W, &mp->t0[ow], &mp->t1[ow]);
        if (mp->t0[ow] == 0 && mp->t1[ow] == g->kw) {
            if (mp->a > ow) mp->a = ow;
            mp->b = ow + 1;
        }
    }
    if (mp->b < mp->a) mp->b = mp->a;
    return buf;
}

/* Vectors of VL consecutive outputs (GCC/Clang vector extensions) and the strided loads of one tap for
 * them: stride 1 is a plain load, stride 2 two loads and a shuffle under GCC (lanes 0, 2, .., 2VL-2 of
 * p[0 .. 2VL-2], loaded as p[0 .. VL-1] and p[VL-1 .. 2VL-2], never past the last element used), other
 * strides element by element. Widths 8 and 4. */
#if defined(__GNUC__) && !defined(__clang__)
#define LOAD2_8                                                                                                  \
    if (s == 2) {                                                                                                \
        pool_vf8 a, b;                                                                                           \
        memcpy(&a, p, sizeof a);                                                                                 \
        memcpy(&b, p + 7, sizeof b);                                                                             \
        return __builtin_shuffle(a, b, (pool_vi8){0, 2, 4, 6, 9, 11, 13, 15});                                   \
    }
#define LOAD2_4                                                                                                  \
    if (s == 2) {                                                                                                \
        pool_vf4 a, b;                                                                                           \
        memcpy(&a, p, sizeof a);                                                                                 \
        memcpy(&b, p + 3, sizeof b);                                                                             \
        return __builtin_shuffle(a, b, (pool_vi4){0, 2, 5, 7});                                                  \
    }
#else
#define LOAD2_8
#define LOAD2_4
#endif
#define POOL_VEC_TYPES(VL)                                                                                       \
    typedef float pool_vf##VL __attribute__((vector_size(VL * sizeof(float))));                                  \
    typedef int32_t pool_vi##VL __attribute__((vector_size(VL * sizeof(int32_t))));                              \
    typedef double pool_vd##VL __attribute__((vector_size(VL * sizeof(double))));                               \
    POOL_INLINE pool_vf##VL load##VL(const float *p, const int64_t s) {                                          \
        pool_vf##VL v;                                                                                           \
        if (s == 1) {                                                                                            \
            memcpy(&v, p, sizeof v);                                                                             \
            return v;                                                                                            \
        }                                                                                                        \
        LOAD2_##VL                                                                                               \
        for (int j = 0; j < VL; j++) v[j] = p[j * s];                                                            \
        return v;                                                                                                \
    }
POOL_VEC_TYPES(8)
POOL_VEC_TYPES(4)
#undef POOL_VEC_TYPES
#undef LOAD2_8
#undef LOAD2_4

/* ---- max pooling kernels ---- */

/* One output by PyTorch's scan over the valid taps [r0,r1) x [t0,t1) of the window at (ih0, iw0): a value
 * replaces the running maximum if it is greater or NaN; the index starts at the first valid element
 * (-1 if there is none). */
POOL_INLINE void max_window(const pool_geom *g, const float *x, int64_t ih0, int64_t iw0, int64_t r0, int64_t r1,
                            int64_t t0, int64_t t1, float *yo, int32_t *io, const bool want_idx) {
    float m = -INFINITY;
    int64_t k = r0 < r1 && t0 < t1 ? (ih0 + r0 * g->dh) * g->W + iw0 + t0 * g->dw : -1;
    for (int64_t r = r0; r < r1; r++)
        for (int64_t t = t0; t < t1; t++) {
            const int64_t at = (ih0 + r * g->dh) * g->W + iw0 + t * g->dw;
            const float v = x[at];
            if ((v > m) | (v != v)) m = v, k = at;
        }
    *yo = m;
    if (want_idx) *io = (int32_t)k;
}

/* One output whose window columns all lie inside the input, over the valid tap rows [r0, r1) (r0 < r1):
 * xr = input row ih0, off = -pw. KW, DIL1, SW are constants in the specialised instances (0 = read from
 * g); r0, r1 are too for rows whose window lies inside the input. */
POOL_INLINE void max_one(const pool_geom *g, const float *restrict xr, int64_t off, int64_t ow, int64_t r0, int64_t r1,
                         float *restrict yr, int32_t *restrict ir, int32_t base, const bool want_idx, const int KW,
                         const int DIL1, const int64_t SW) {
    const int64_t kw = KW ? KW : g->kw, sw = SW ? SW : g->sw;
    const int64_t rs = (DIL1 ? 1 : g->dh) * g->W, cs = DIL1 ? 1 : g->dw;
    const float *p = xr + ow * sw + off;
    float m = p[r0 * rs];
    int64_t k = r0 * rs;
    for (int64_t r = r0; r < r1; r++)
        for (int64_t t = 0; t < kw; t++) {
            const float v = p[r * rs + t * cs];
            if ((v > m) | (v != v)) m = v, k = r * rs + t * cs;
        }
    yr[ow] = m;
    if (want_idx) ir[ow] = base + (int32_t)(ow * sw + off + k);
}

/* The same for VL consecutive outputs at once: per tap a strided load, a compare and two bitwise blends,
 * no branches (the scalar scan's data-dependent branches mispredict on random data). */
#define MAX_VEC(VL)                                                                                              \
    POOL_INLINE void max_vec##VL(const pool_geom *g, const float *restrict xr, int64_t off, int64_t ow0,         \
                                 int64_t r0, int64_t r1, float *restrict yr, int32_t *restrict ir, int32_t base, \
                                 const bool want_idx, const int KW, const int DIL1, const int64_t SW) {          \
        const int64_t kw = KW ? KW : g->kw, sw = SW ? SW : g->sw;                                                \
        const int64_t rs = (DIL1 ? 1 : g->dh) * g->W, cs = DIL1 ? 1 : g->dw;                                     \
        const float *p = xr + ow0 * sw + off;                                                                    \
        pool_vf##VL m = load##VL(p + r0 * rs, sw);                                                               \
        pool_vi##VL k = {0};                                                                                     \
        k += (int32_t)(r0 * rs);                                                                                 \
        for (int64_t r = r0; r < r1; r++)                                                                        \
            for (int64_t t = 0; t < kw; t++) {                                                                   \
                if (r == r0 && t == 0) continue;                                                                 \
                const pool_vf##VL v = load##VL(p + r * rs + t * cs, sw);                                         \
                const pool_vi##VL take = (v > m) | (v != v);                                                     \
                m = (pool_vf##VL)(((pool_vi##VL)v & take) | ((pool_vi##VL)m & ~take));                           \
                k = ((int32_t)(r * rs + t * cs) & take) | (k & ~take);                                           \
            }                                                                                                    \
        memcpy(yr + ow0, &m, sizeof m);                                                                          \
        if (want_idx) {                                                                                          \
            const int32_t at = base + (int32_t)(ow0 * sw + off);                                                 \
            for (int j = 0; j < VL; j++) k[j] += at + j * (int32_t)sw;                                           \
            memcpy(ir + ow0, &k, sizeof k);                                                                      \
        }                                                                                                        \
    }
MAX_VEC(8)
MAX_VEC(4)
#undef MAX_VEC

/* Outputs [a, b) of a row (tap rows [r0, r1), non-empty): vectors of 8 (4 for short rows, then single
 * outputs). The last vector is moved back to end at b, recomputing a few outputs (with the same results),
 * so rows of 8 or more outputs have no scalar tail. */
POOL_INLINE void max_interior(const pool_geom *g, const float *restrict xr, int64_t off, int64_t a, int64_t b,
                              int64_t r0, int64_t r1, float *restrict yr, int32_t *restrict ir, int32_t base,
                              const bool want_idx, const int KW, const int DIL1, const int64_t SW) {
    if (b - a >= 8) {
        for (int64_t ow = a;; ow += 8) {
            if (ow + 8 > b) ow = b - 8;
            max_vec8(g, xr, off, ow, r0, r1, yr, ir, base, want_idx, KW, DIL1, SW);
            if (ow + 8 == b) break;
        }
        return;
    }
    int64_t ow = a;
    for (; ow + 4 <= b; ow += 4) max_vec4(g, xr, off, ow, r0, r1, yr, ir, base, want_idx, KW, DIL1, SW);
    for (; ow < b; ow++) max_one(g, xr, off, ow, r0, r1, yr, ir, base, want_idx, KW, DIL1, SW);
}

/* One plane: x [H,W] -> y [Ho,Wo] and, when want_idx, idx [Ho,Wo] (plane offsets, -1 for a window with
 * no input element; the caller guarantees H*W < 2^31). Outputs whose window columns lie inside the input
 * take the vector kernels (over the row's valid tap rows), the others max_window; all scan the taps in
 * row-major window order, so ties and NaNs pick PyTorch's element. */
POOL_INLINE void maxpool_plane(const pool_geom *g, const pool_plan *mp, const float *restrict x, float *restrict y,
                               int32_t *restrict idx, const bool want_idx, const int KH, const int KW, const int DIL1,
                               const int64_t SW) {
    const int64_t W = g->W, Wo = g->Wo, sw = SW ? SW : g->sw;
    for (int64_t oh = 0; oh < g->Ho; oh++) {
        const int64_t ih0 = oh * g->sh - g->ph, r0 = mp->r0[oh], r1 = mp->r1[oh];
        float *yr = y + oh * Wo;
        int32_t *ir = want_idx ? idx + oh * Wo : NULL;
        const int64_t a = r0 < r1 ? mp->a : Wo, b = r0 < r1 ? mp->b : Wo;
        for (int64_t ow = 0; ow < a; ow++)
            max_window(g, x, ih0, ow * sw - g->pw, r0, r1, mp->t0[ow], mp->t1[ow], yr + ow, want_idx ? ir + ow : NULL,
                       want_idx);
        if (a < b && r0 == 0 && r1 == (KH ? KH : g->kh)) /* constant tap rows in the specialised instances */
            max_interior(g, x + ih0 * W, -g->pw, a, b, 0, KH ? KH : g->kh, yr, ir, (int32_t)(ih0 * W), want_idx, KW,
                         DIL1, SW);
        else if (a < b)
            max_interior(g, x + ih0 * W, -g->pw, a, b, r0, r1, yr, ir, (int32_t)(ih0 * W), want_idx, KW, DIL1, SW);
        for (int64_t ow = b; ow < Wo; ow++)
            max_window(g, x, ih0, ow * sw - g->pw, r0, r1, mp->t0[ow], mp->t1[ow], yr + ow, want_idx ? ir + ow : NULL,
                       want_idx);
    }
}

/* Specialised instances: 2x2 and 3x3 windows without dilation at strides 1 and 2, else the general one. */
static void maxpool_plane_any(const pool_geom *g, const pool_plan *mp, const float *x, float *y, int32_t *idx) {
    const bool dil1 = g->dh == 1 && g->dw == 1, k2 = g->kh == 2 && g->kw == 2, k3 = g->kh == 3 && g->kw == 3;
    const int s = g->sw == 1 || g->sw == 2 ? (int)g->sw : 0;
#define MAXPOOL_CASE(KH, KW, S)                                                          \
    do {                                                                                 \
        if (idx) maxpool_plane(g, mp, x, y, idx, true, KH, KW, KH != 0, S);              \
        else maxpool_plane(g, mp, x, y, NULL, false, KH, KW, KH != 0, S);                \
        return;                                                                          \
    } while (0)
    if (dil1 && k2 && s == 2) MAXPOOL_CASE(2, 2, 2);
    if (dil1 && k2 && s == 1) MAXPOOL_CASE(2, 2, 1);
    if (dil1 && k3 && s == 2) MAXPOOL_CASE(3, 3, 2);
    if (dil1 && k3 && s == 1) MAXPOOL_CASE(3, 3, 1);
    MAXPOOL_CASE(0, 0, 0);
#undef MAXPOOL_CASE
}

static int maxpool_forward(const pool_geom *g, const float *x, float *y, int32_t *idx) {
    pool_plan mp;
    int64_t *buf = pool_plan_init(g, &mp);
    if (!buf) return gg_error_set(GG_ERR_NOMEM, "gg_max_pool2d", "cannot allocate the window plan");
    const int64_t planes = g->N * g->C, in_sz = g->H * g->W, out_sz = g->Ho * g->Wo;
    const int nt = threads_for(planes * in_sz);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t p = 0; p < planes; p++)
        maxpool_plane_any(g, &mp, x + p * in_sz, y + p * out_sz, idx ? idx + p * out_sz : NULL);
    gg_free(buf);
    return GG_OK;
}

/* dx[p, idx[o]] += dy[p, o], outputs in order (the order PyTorch accumulates overlapping windows). */
static void maxpool_backward_kernel(const pool_geom *g, const float *dy, const int32_t *idx, float *dx) {
    const int64_t planes = g->N * g->C, in_sz = g->H * g->W, out_sz = g->Ho * g->Wo;
    const int nt = threads_for(planes * in_sz);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t p = 0; p < planes; p++) {
        const float *d = dy + p * out_sz;
        const int32_t *ip = idx + p * out_sz;
        float *xp = dx + p * in_sz;
        for (int64_t o = 0; o < out_sz; o++)
            if (ip[o] >= 0) xp[ip[o]] += d[o];
    }
}

/* ---- average pooling kernels (dilation 1) ---- */

/* Extent of a window starting at `start` clipped to the padded input [-pad, size+pad) (pool) and to the
 * input [0, size) (valid); the divisor is pool_h*pool_w with count_include_pad, else valid_h*valid_w. */
POOL_INLINE void avg_extent(int64_t start, int64_t k, int64_t size, int64_t pad, int64_t *pool, int64_t *valid) {
    int64_t end = start + k < size + pad ? start + k : size + pad;
    *pool = end - start;
    int64_t a = start > 0 ? start : 0, b = end < size ? end : size;
    *valid = b > a ? b - a : 0;
}

POOL_INLINE int64_t avg_divisor(const pool_geom *g, int64_t pool_h, int64_t valid_h, int64_t ow) {
    int64_t pool_w, valid_w;
    avg_extent(ow * g->sw - g->pw, g->kw, g->W, g->pw, &pool_w, &valid_w);
    return g->count_include_pad ? pool_h * pool_w : valid_h * valid_w;
}

/* VL outputs whose window columns lie inside the input, over tap rows [r0, r1): window sums in double,
 * taps in row-major order (the order of PyTorch's loop), then / div. */
#define AVG_VEC(VL)                                                                                              \
    POOL_INLINE void avg_vec##VL(const pool_geom *g, const float *restrict xr, int64_t off, int64_t ow0,         \
                                 int64_t r0, int64_t r1, double div, float *restrict yr, const int KW,           \
                                 const int64_t SW) {                                                             \
        const int64_t kw = KW ? KW : g->kw, sw = SW ? SW : g->sw;                                                \
        const float *p = xr + ow0 * sw + off;                                                                    \
        pool_vd##VL acc = {0};                                                                                   \
        for (int64_t r = r0; r < r1; r++)                                                                        \
            for (int64_t t = 0; t < kw; t++)                                                                     \
                acc += __builtin_convertvector(load##VL(p + r * g->W + t, sw), pool_vd##VL);                     \
        const pool_vf##VL y = __builtin_convertvector(acc / div, pool_vf##VL);                                   \
        memcpy(yr + ow0, &y, sizeof y);                                                                          \
    }
AVG_VEC(8)
AVG_VEC(4)
#undef AVG_VEC

/* One output over its valid taps [r0, r1) x [t0, t1) (0 when the window holds no input element). */
POOL_INLINE float avg_window(const float *x, int64_t W, int64_t ih0, int64_t iw0, int64_t r0, int64_t r1, int64_t t0,
                             int64_t t1, int64_t div) {
    if (r0 >= r1 || t0 >= t1) return 0.0f;
    double s = 0;
    for (int64_t r = r0; r < r1; r++)
        for (int64_t t = t0; t < t1; t++) s += (double)x[(ih0 + r) * W + iw0 + t];
    return (float)(s / (double)div);
}

POOL_INLINE void avgpool_plane(const pool_geom *g, const pool_plan *mp, const float *restrict x, float *restrict y,
                               const int KW, const int64_t SW) {
    const int64_t W = g->W, Wo = g->Wo, sw = SW ? SW : g->sw;
    for (int64_t oh = 0; oh < g->Ho; oh++) {
        const int64_t ih0 = oh * g->sh - g->ph, r0 = mp->r0[oh], r1 = mp->r1[oh];
        int64_t pool_h, valid_h;
        avg_extent(ih0, g->kh, g->H, g->ph, &pool_h, &valid_h);
        float *yr = y + oh * Wo;
        const int64_t a = r0 < r1 ? mp->a : Wo, b = r0 < r1 ? mp->b : Wo;
        for (int64_t ow = 0; ow < a; ow++)
            yr[ow] = avg_window(x, W, ih0, ow * sw - g->pw, r0, r1, mp->t0[ow], mp->t1[ow],
                                avg_divisor(g, pool_h, valid_h, ow));
        if (a < b) { /* interior columns: pool_w == valid_w == kw */
            const double div = (double)((g->count_include_pad ? pool_h : valid_h) * g->kw);
            const float *xr = x + ih0 * W;
            int64_t ow = a;
            if (b - a >= 8) {
                for (;; ow += 8) {
                    if (ow + 8 > b) ow = b - 8;
                    avg_vec8(g, xr, -g->pw, ow, r0, r1, div, yr, KW, SW);
                    if (ow + 8 == b) break;
                }
            } else {
                for (; ow + 4 <= b; ow += 4) avg_vec4(g, xr, -g->pw, ow, r0, r1, div, yr, KW, SW);
                for (; ow < b; ow++)
                    yr[ow] = avg_window(x, W, ih0, ow * sw - g->pw, r0, r1, 0, g->kw, (int64_t)div);
            }
        }
        for (int64_t ow = b; ow < Wo; ow++)
            yr[ow] = avg_window(x, W, ih0, ow * sw - g->pw, r0, r1, mp->t0[ow], mp->t1[ow],
                                avg_divisor(g, pool_h, valid_h, ow));
    }
}

/* dx[window] += dy / div for output ow of row oh (taps [r0, r1) x [t0, t1)). */
POOL_INLINE void avg_scatter(float *restrict dx, int64_t W, int64_t ih0, int64_t iw0, int64_t r0, int64_t r1,
                             int64_t t0, int64_t t1, float gd) {
    for (int64_t r = r0; r < r1; r++) {
        float *d = dx + (ih0 + r) * W + iw0;
        for (int64_t t = t0; t < t1; t++) d[t] += gd;
    }
}

/* dx[window] += dy / div, outputs in order and each window's taps in order: PyTorch's accumulation
 * order, so the input gradient matches its bits. Interior columns take a constant divisor (their
 * quotients computed in vector blocks) and KW taps, constant in the specialised instances. */
POOL_INLINE void avgpool_plane_backward(const pool_geom *g, const pool_plan *mp, const float *restrict dy,
                                        float *restrict dx, const int KW, const int64_t SW) {
    const int64_t W = g->W, Wo = g->Wo, kw = KW ? KW : g->kw, sw = SW ? SW : g->sw;
    enum { BLK = 64 };
    for (int64_t oh = 0; oh < g->Ho; oh++) {
        const int64_t ih0 = oh * g->sh - g->ph, r0 = mp->r0[oh], r1 = mp->r1[oh];
        if (r0 >= r1) continue;
        int64_t pool_h, valid_h;
        avg_extent(ih0, g->kh, g->H, g->ph, &pool_h, &valid_h);
        const float *d = dy + oh * Wo;
        for (int64_t ow = 0; ow < mp->a; ow++)
            avg_scatter(dx, W, ih0, ow * sw - g->pw, r0, r1, mp->t0[ow], mp->t1[ow],
                        d[ow] / (float)avg_divisor(g, pool_h, valid_h, ow));
        const float div = (float)((g->count_include_pad ? pool_h : valid_h) * kw);
        for (int64_t c0 = mp->a; c0 < mp->b; c0 += BLK) {
            const int64_t n = mp->b - c0 < BLK ? mp->b - c0 : BLK;
            float gd[BLK];
            for (int64_t j = 0; j < n; j++) gd[j] = d[c0 + j] / div;
            for (int64_t j = 0; j < n; j++) avg_scatter(dx, W, ih0, (c0 + j) * sw - g->pw, r0, r1, 0, kw, gd[j]);
        }
        for (int64_t ow = mp->b > mp->a ? mp->b : mp->a; ow < Wo; ow++)
            avg_scatter(dx, W, ih0, ow * sw - g->pw, r0, r1, mp->t0[ow], mp->t1[ow],
                        d[ow] / (float)avg_divisor(g, pool_h, valid_h, ow));
    }
}

static int avgpool_forward(const pool_geom *g, const float *x, float *y) {
    pool_plan mp;
    int64_t *buf = pool_plan_init(g, &mp);
    if (!buf) return gg_error_set(GG_ERR_NOMEM, "gg_avg_pool2d", "cannot allocate the window plan");
    const int64_t planes = g->N * g->C, in_sz = g->H * g->W, out_sz = g->Ho * g->Wo;
    const int nt = threads_for(planes * in_sz);
    const bool k2 = g->kw == 2, k3 = g->kw == 3;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t p = 0; p < planes; p++) {
        const float *xp = x + p * in_sz;
        float *yp = y + p * out_sz;
        if (k2 && g->sw == 2) avgpool_plane(g, &mp, xp, yp, 2, 2);
        else if (k3 && g->sw == 2) avgpool_plane(g, &mp, xp, yp, 3, 2);
        else if (k3 && g->sw == 1) avgpool_plane(g, &mp, xp, yp, 3, 1);
        else avgpool_plane(g, &mp, xp, yp, 0, 0);
    }
    gg_free(buf);
    return GG_OK;
}

static int avgpool_backward_kernel(const pool_geom *g, const float *dy, float *dx) {
    pool_plan mp;
    int64_t *buf = pool_plan_init(g, &mp);
    if (!buf) return gg_error_set(GG_ERR_NOMEM, "gg_avg_pool2d", "cannot allocate the window plan");
    const int64_t planes = g->N * g->C, in_sz = g->H * g->W, out_sz = g->Ho * g->Wo;
    const int nt = threads_for(planes * in_sz);
    const bool k2 = g->kw == 2, k3 = g->kw == 3;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t p = 0; p < planes; p++) {
        const float *d = dy + p * out_sz;
        float *xp = dx + p * in_sz;
        if (k2 && g->sw == 2) avgpool_plane_backward(g, &mp, d, xp, 2, 2);
        else if (k3 && g->sw == 2) avgpool_plane_backward(g, &mp, d, xp, 3, 2);
        else if (k3 && g->sw == 1) avgpool_plane_backward(g, &mp, d, xp, 3, 1);
        else avgpool_plane_backward(g, &mp, d, xp, 0, 0);
    }
    gg_free(buf);
    return GG_OK;
}

/* ---- adaptive and global average kernels ---- */

/* Window [*a, *b) of output i (of n) over an input of size `size`. */
POOL_INLINE void adaptive_window(int64_t i, int64_t n, int64_t size, int64_t *a, int64_t *b) {
    *a = i * size / n;
    *b = ((i + 1) * size + n - 1) / n;
}

static void adaptive_forward(const pool_geom *g, const float *x, float *y) {
    const int64_t planes = g->N * g->C, H = g->H, W = g->W, Ho = g->Ho, Wo = g->Wo;
    const int nt = threads_for(planes * H * W);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t p = 0; p < planes; p++) {
        const float *xp = x + p * H * W;
        float *yp = y + p * Ho * Wo;
        for (int64_t oh = 0; oh < Ho; oh++) {
            int64_t h0, h1;
            adaptive_window(oh, Ho, H, &h0, &h1);
            for (int64_t ow = 0; ow < Wo; ow++) {
                int64_t w0, w1;
                adaptive_window(ow, Wo, W, &w0, &w1);
                double s = 0;
                for (int64_t ih = h0; ih < h1; ih++) s += gg__sum_f32(xp + ih * W + w0, w1 - w0);
                yp[oh * Wo + ow] = (float)(s / (double)(h1 - h0) / (double)(w1 - w0));
            }
        }
    }
}

static void adaptive_backward_kernel(const pool_geom *g, const float *dy, float *dx) {
    const int64_t planes = g->N * g->C, H = g->H, W = g->W, Ho = g->Ho, Wo = g->Wo;
    const int nt = threads_for(planes * H * W);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t p = 0; p < planes; p++) {
        const float *d = dy + p * Ho * Wo;
        float *xp = dx + p * H * W;
        for (int64_t oh = 0; oh < Ho; oh++) {
            int64_t h0, h1;
            adaptive_window(oh, Ho, H, &h0, &h1);
            for (int64_t ow = 0; ow < Wo; ow++) {
                int64_t w0, w1;
                adaptive_window(ow, Wo, W, &w0, &w1);
                const float gd = d[oh * Wo + ow] / (float)(h1 - h0) / (float)(w1 - w0);
                for (int64_t ih = h0; ih < h1; ih++)
                    for (int64_t iw = w0; iw < w1; iw++) xp[ih * W + iw] += gd;
            }
        }
    }
}

static void global_forward(int64_t planes, int64_t hw, const float *x, float *y) {
    const int nt = threads_for(planes * hw);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t p = 0; p < planes; p++) y[p] = (float)(gg__sum_f32(x + p * hw, hw) / (double)hw);
}

static void global_backward_kernel(int64_t planes, int64_t hw, const float *dy, float *dx) {
    const int nt = threads_for(planes * hw);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t p = 0; p < planes; p++) {
        const float gd = dy[p] / (float)hw;
        float *xp = dx + p * hw;
        for (int64_t i = 0; i < hw; i++) xp[i] += gd;
    }
}

/* ---- backward functions: node->ip holds the pool_geom ---- */

/* The gradient buffer of x, or NULL with *st set (an error, or GG_OK when x needs none). */
static float *x_grad(gg_node *node, int *st) {
    gg_tensor *gx = gg_node_grad(node, 0);
    *st = GG_OK;
    if (!gx && gg_node_needs_grad(node, 0))
        *st = gg_last_status() ? gg_last_status()
                               : gg_error_set(GG_ERR_NOMEM, node->op->name, "cannot allocate the gradient");
    return gx ? gg_tensor_data(gx) : NULL;
}

static int max_pool2d_backward(gg_node *node, const gg_tensor *gout) {
    pool_geom g;
    memcpy(&g, node->ip, sizeof g);
    int st;
    float *dx = x_grad(node, &st);
    if (!dx) return st;
    if (node->n_saved < 1) return gg_error_set(GG_ERR_STATE, "gg_max_pool2d", "backward: indices were not saved");
    maxpool_backward_kernel(&g, gg_tensor_data(gout), (const int32_t *)(void *)gg_tensor_data(node->saved[0]), dx);
    return GG_OK;
}

static int avg_pool2d_backward(gg_node *node, const gg_tensor *gout) {
    pool_geom g;
    memcpy(&g, node->ip, sizeof g);
    int st;
    float *dx = x_grad(node, &st);
    return dx ? avgpool_backward_kernel(&g, gg_tensor_data(gout), dx) : st;
}

static int adaptive_avg_pool2d_backward(gg_node *node, const gg_tensor *gout) {
    pool_geom g;
    memcpy(&g, node->ip, sizeof g);
    int st;
    float *dx = x_grad(node, &st);
    if (dx) adaptive_backward_kernel(&g, gg_tensor_data(gout), dx);
    return st;
}

static int global_avg_pool2d_backward(gg_node *node, const gg_tensor *gout) {
    pool_geom g;
    memcpy(&g, node->ip, sizeof g);
    int st;
    float *dx = x_grad(node, &st);
    if (dx) global_backward_kernel(g.N * g.C, g.H * g.W, gg_tensor_data(gout), dx);
    return st;
}

static const gg_op_def MAX_POOL2D_OP = {"max_pool2d", max_pool2d_backward};
static const gg_op_def AVG_POOL2D_OP = {"avg_pool2d", avg_pool2d_backward};
static const gg_op_def ADAPTIVE_AVG_POOL2D_OP = {"adaptive_avg_pool2d", adaptive_avg_pool2d_backward};
static const gg_op_def GLOBAL_AVG_POOL2D_OP = {"global_avg_pool2d", global_avg_pool2d_backward};

/* ---- public functions ---- */

typedef enum { POOL_MAX, POOL_AVG, POOL_ADAPTIVE, POOL_GLOBAL } pool_kind;

/* Shared tail of every pooling op: contiguous input, output, kernel, node. g is checked. */
static gg_tensor *run_pool(pool_kind kind, const gg_op_def *op, const char *fn, gg_tensor *x, const pool_geom *g) {
    gg_tensor *in[1] = {x};
    const bool rec = gg_op_needs_grad(1, in);
    gg_tensor *xc = gg_tensor_contiguous(x);
    if (!xc) return NULL;
    gg_tensor *out = gg_op_output(4, (const int64_t[]){g->N, g->C, g->Ho, g->Wo}, fn);
    gg_tensor *idx = out && kind == POOL_MAX && rec ? gg_tensor_empty(1, (const int64_t[]){out->numel}) : NULL;
    if (!out || (kind == POOL_MAX && rec && !idx)) {
        gg_tensor_free(xc);
        return NULL;
    }
    const float *xp = gg_tensor_data(xc);
    float *yp = gg_tensor_data(out);
    int st = GG_OK;
    if (out->numel > 0) switch (kind) {
        case POOL_MAX: st = maxpool_forward(g, xp, yp, idx ? (int32_t *)(void *)gg_tensor_data(idx) : NULL); break;
        case POOL_AVG: st = avgpool_forward(g, xp, yp); break;
        case POOL_ADAPTIVE: adaptive_forward(g, xp, yp); break;
        case POOL_GLOBAL: global_forward(g->N * g->C, g->H * g->W, xp, yp); break;
        }
    gg_tensor_free(xc);
    bool failed = false;
    gg_node *node = st ? NULL : gg_op_record(op, out, 1, in, &failed);
    if (failed) st = GG_ERR_NOMEM;
    if (node) {
        memcpy(node->ip, g, sizeof *g);
        if (idx) st = gg_node_save(node, idx);
    }
    gg_tensor_free(idx);
    if (st) return NULL;
    return gg_op_finish(out, fn, 1, in);
}

gg_tensor *gg_max_pool2d(gg_tensor *x, const int kernel[2], const int stride[2], const int pad[2],
                         const int dilation[2], bool ceil_mode) {
    GG_CHECK_ARG(x, NULL);
    pool_geom g;
    if (check_pool(__func__, x, kernel, stride, pad, dilation, ceil_mode, false, &g)) return NULL;
    gg_tensor *in[1] = {x};
    if (gg_op_needs_grad(1, in) && g.H * g.W > INT32_MAX) {
        char sx[GG_SHAPE_STR_MAX];
        gg_error_set(GG_ERR_UNSUPPORTED, __func__,
                     "a plane of %lld elements is too large for the int32 indices kept for backward (x %s)",
                     (long long)(g.H * g.W), GG_SHAPE_STR(x, sx));
        return NULL;
    }
    return run_pool(POOL_MAX, &MAX_POOL2D_OP, __func__, x, &g);
}

gg_tensor *gg_avg_pool2d(gg_tensor *x, const int kernel[2], const int stride[2], const int pad[2], bool ceil_mode,
                         bool count_include_pad) {
    GG_CHECK_ARG(x, NULL);
    pool_geom g;
    if (check_pool(__func__, x, kernel, stride, pad, NULL, ceil_mode, count_include_pad, &g)) return NULL;
    return run_pool(POOL_AVG, &AVG_POOL2D_OP, __func__, x, &g);
}

/* Checks of the adaptive and global poolings (Ho, Wo given); fills g. */
static int check_adaptive(const char *fn, const gg_tensor *x, int64_t out_h, int64_t out_w, pool_geom *g) {
    char sx[GG_SHAPE_STR_MAX];
    GG_SHAPE_STR(x, sx);
    if (x->ndim != 4) return gg_error_set(GG_ERR_SHAPE, fn, "input must be 4-D [N,C,H,W], got x %s", sx);
    if (out_h < 0 || out_w < 0)
        return gg_error_set(GG_ERR_ARG, fn, "output size must be non-negative, got %lldx%lld (x %s)",
                            (long long)out_h, (long long)out_w, sx);
    if (x->shape[2] < 1 || x->shape[3] < 1)
        return gg_error_set(GG_ERR_SHAPE, fn, "input needs non-empty H and W, got x %s", sx);
    if (out_h > INT32_MAX || out_w > INT32_MAX || x->shape[2] > INT32_MAX || x->shape[3] > INT32_MAX)
        return gg_error_set(GG_ERR_OVERFLOW, fn, "sizes beyond 2^31 are not supported (x %s, output %lldx%lld)", sx,
                            (long long)out_h, (long long)out_w);
    *g = (pool_geom){.N = x->shape[0], .C = x->shape[1], .H = x->shape[2], .W = x->shape[3], .Ho = out_h,
                     .Wo = out_w};
    return GG_OK;
}

gg_tensor *gg_adaptive_avg_pool2d(gg_tensor *x, int64_t out_h, int64_t out_w) {
    GG_CHECK_ARG(x, NULL);
    pool_geom g;
    if (check_adaptive(__func__, x, out_h, out_w, &g)) return NULL;
    return run_pool(POOL_ADAPTIVE, &ADAPTIVE_AVG_POOL2D_OP, __func__, x, &g);
}

gg_tensor *gg_global_avg_pool2d(gg_tensor *x) {
    GG_CHECK_ARG(x, NULL);
    pool_geom g;
    if (check_adaptive(__func__, x, 1, 1, &g)) return NULL;
    return run_pool(POOL_GLOBAL, &GLOBAL_AVG_POOL2D_OP, __func__, x, &g);
}
