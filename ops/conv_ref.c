/* Convolution kernels: the plain-C reference (the oracle), im2col + BLIS GEMM, the direct kernel (shifted
 * vectorised passes over zero-bordered planes), the libxsmm batch-reduce kernel (blocked copies), the
 * channel-lane kernel and the masked-plane kernel for small groups. Any groups, strides, dilation for the
 * reference, GEMM and direct kernels; the others state what they support. Shapes and conventions:
 * gg_conv_kernels.h. Threads: OpenMP regions for im2col, col2im, gathers, reorders and the direct, xsmm,
 * lane and masked kernels; BLIS (gg__sgemm) is always called outside them and threads itself. FMA
 * contraction comes from the project's -ffp-contract=fast. */
#include <stdbool.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#include "gg_backend.h"
#include "gg_conv_kernels.h"
#include "gg_error.h"
#include "gg_runtime.h"

#define PAR_MIN 32768 /* elements of work below which a loop stays serial */

static inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }
static inline int64_t div_floor(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
static inline int64_t div_ceil(int64_t a, int64_t b) { return -div_floor(-a, b); }

/* Output positions o in [*lo, *hi) whose input index o*stride + off lies in [0, size), where
 * off = tap*dilation - pad. */
static inline void valid_range(int64_t n_out, int64_t size, int64_t stride, int64_t off, int64_t *lo,
                               int64_t *hi) {
    *lo = imin(n_out, imax(0, div_ceil(-off, stride)));
    *hi = imax(*lo, imin(n_out, div_floor(size - 1 - off, stride) + 1));
}

/* ---------------------------------------------------------------------------------------------------
 * Reference: direct definitions, double accumulation, no threads. Backward-data is written as a gather
 * over the outputs each input element feeds, independently of the forward's indexing. */

void gg__conv2d_fwd_ref(const gg_conv2d_shape *s, const float *x, const float *w, const float *b, float *y) {
    const int64_t Cg = s->C / s->G, Kg = s->K / s->G;
    for (int64_t n = 0; n < s->N; n++)
        for (int64_t k = 0; k < s->K; k++) {
            const int64_t g = k / Kg;
            for (int64_t ho = 0; ho < s->Ho; ho++)
                for (int64_t wo = 0; wo < s->Wo; wo++) {
                    double acc = b ? b[k] : 0.0;
                    for (int64_t c = 0; c < Cg; c++)
                        for (int64_t r = 0; r < s->R; r++) {
                            int64_t hi = ho * s->str_h - s->pad_t + r * s->dil_h;
                            if (hi < 0 || hi >= s->H) continue;
                            for (int64_t t = 0; t < s->S; t++) {
                                int64_t wi = wo * s->str_w - s->pad_l + t * s->dil_w;
                                if (wi < 0 || wi >= s->W) continue;
                                acc += (double)x[((n * s->C + g * Cg + c) * s->H + hi) * s->W + wi] *
                                       (double)w[((k * Cg + c) * s->R + r) * s->S + t];
                            }
                        }
                    y[((n * s->K + k) * s->Ho + ho) * s->Wo + wo] = (float)acc;
                }
        }
}

void gg__conv2d_bwd_data_ref(const gg_conv2d_shape *s, const float *dy, const float *w, float *dx) {
    const int64_t Cg = s->C / s->G, Kg = s->K / s->G;
    for (int64_t n = 0; n < s->N; n++)
        for (int64_t ci = 0; ci < s->C; ci++) {
            const int64_t g = ci / Cg, c = ci % Cg;
            for (int64_t hi = 0; hi < s->H; hi++)
                for (int64_t wi = 0; wi < s->W; wi++) {
                    /* dx[n,ci,hi,wi] = sum over outputs (k,ho,wo) and taps (r,t) with
                     * ho*sh - pt + r*dh == hi and wo*sw - pl + t*dw == wi of dy * w */
                    double acc = 0.0;
                    for (int64_t kk = 0; kk < Kg; kk++) {
                        const int64_t k = g * Kg + kk;
                        for (int64_t r = 0; r < s->R; r++) {
                            int64_t th = hi + s->pad_t - r * s->dil_h;
                            if (th < 0 || th % s->str_h) continue;
                            int64_t ho = th / s->str_h;
                            if (ho >= s->Ho) continue;
                            for (int64_t t = 0; t < s->S; t++) {
                                int64_t tw = wi + s->pad_l - t * s->dil_w;
                                if (tw < 0 || tw % s->str_w) continue;
                                int64_t wo = tw / s->str_w;
                                if (wo >= s->Wo) continue;
                                acc += (double)dy[((n * s->K + k) * s->Ho + ho) * s->Wo + wo] *
                                       (double)w[((k * Cg + c) * s->R + r) * s->S + t];
                            }
                        }
                    }
                    dx[((n * s->C + ci) * s->H + hi) * s->W + wi] += (float)acc;
                }
        }
}

void gg__conv2d_bwd_weight_ref(const gg_conv2d_shape *s, const float *x, const float *dy, float *dw) {
    const int64_t Cg = s->C / s->G, Kg = s->K / s->G;
    for (int64_t k = 0; k < s->K; k++) {
        const int64_t g = k / Kg;
        for (int64_t c = 0; c < Cg; c++)
            for (int64_t r = 0; r < s->R; r++)
                for (int64_t t = 0; t < s->S; t++) {
                    /* dw[k,c,r,t] = sum_{n,ho,wo} dy[n,k,ho,wo] * x[n, g*Cg+c, hi, wi] over valid hi, wi */
                    double acc = 0.0;
                    for (int64_t n = 0; n < s->N; n++)
                        for (int64_t ho = 0; ho < s->Ho; ho++) {
                            int64_t hi = ho * s->str_h - s->pad_t + r * s->dil_h;
                            if (hi < 0 || hi >= s->H) continue;
                            for (int64_t wo = 0; wo < s->Wo; wo++) {
                                int64_t wi = wo * s->str_w - s->pad_l + t * s->dil_w;
                                if (wi < 0 || wi >= s->W) continue;
                                acc += (double)dy[((n * s->K + k) * s->Ho + ho) * s->Wo + wo] *
                                       (double)x[((n * s->C + g * Cg + c) * s->H + hi) * s->W + wi];
                            }
                        }
                    dw[((k * Cg + c) * s->R + r) * s->S + t] += (float)acc;
                }
    }
}

void gg__conv2d_bwd_bias_ref(const gg_conv2d_shape *s, const float *dy, float *db) {
    const int64_t P = s->Ho * s->Wo;
    for (int64_t k = 0; k < s->K; k++) {
        double acc = 0.0;
        for (int64_t n = 0; n < s->N; n++)
            for (int64_t p = 0; p < P; p++) acc += dy[(n * s->K + k) * P + p];
        db[k] += (float)acc;
    }
}

/* ---------------------------------------------------------------------------------------------------
 * im2col + GEMM. For group g and a chunk of m <= nb samples starting at n0:
 *   col [Cg*R*S, ld]: col[(c*R + r)*S + t][i*P + ho*Wo + wo] = x[n0+i, g*Cg+c, ho*sh-pt+r*dh, wo*sw-pl+t*dw]
 *   forward   Y_g [Kg, m*P]   = W_g [Kg, CRS] @ col
 *   dweight   dW_g [Kg, CRS] += dY_g [Kg, m*P] @ col^T
 *   ddata     dcol [CRS, m*P] = W_g^T @ dY_g, then col2im adds dcol into dx
 * With nb == 1 the GEMMs read and write y / dy in place (rows of P floats); with nb > 1, Y_g and dY_g go
 * through a [Kg, ld] buffer. A 1x1, stride-1, unpadded convolution with nb == 1 uses x itself as col. */

/* Leading dimension for n columns: a multiple of 16 floats that is not a multiple of 256 (power-of-two
 * leading dimensions cost BLIS 10-50% on these shapes, PERF_NOTES.md). */
static int64_t pad_ld(int64_t n) {
    int64_t ld = (n + 15) / 16 * 16;
    if (ld % 256 == 0) ld += 16;
    return ld;
}

static bool is_pointwise(const gg_conv2d_shape *s) {
    return s->R == 1 && s->S == 1 && s->str_h == 1 && s->str_w == 1 && s->pad_t == 0 && s->pad_l == 0 &&
           s->Ho == s->H && s->Wo == s->W;
}

size_t gg__conv2d_gemm_workspace(const gg_conv2d_shape *s, int64_t nb) {
    const int64_t CRS = s->C / s->G * s->R * s->S, Kg = s->K / s->G, ld = pad_ld(nb * s->Ho * s->Wo);
    int64_t floats = (nb == 1 && is_pointwise(s)) ? 0 : CRS * ld;
    if (nb > 1) floats += Kg * ld;
    return (size_t)floats * sizeof(float);
}

/* Row-major C [m,n] = alpha * op(A) [m,k] @ op(B) [k,n] + beta * C; each stored matrix row-major with
 * leading dimension lda/ldb/ldc. */
static void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float *A, int64_t lda,
                 const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    gg__sgemm(ta, tb, m, n, k, alpha, A, lda, 1, B, ldb, 1, beta, C, ldc, 1);
}

static void im2col(const gg_conv2d_shape *s, const float *x, int64_t g, int64_t n0, int64_t m, float *col,
                   int64_t ld) {
    const int64_t Cg = s->C / s->G, RS = s->R * s->S, P = s->Ho * s->Wo, rows = Cg * RS, HW = s->H * s->W;
    const int64_t Ho = s->Ho, Wo = s->Wo, sw = s->str_w;
#pragma omp parallel for collapse(2) schedule(static) \
    num_threads(gg_get_num_threads()) if (rows * m * P > PAR_MIN)
    for (int64_t row = 0; row < rows; row++)
        for (int64_t i = 0; i < m; i++) {
            const int64_t c = row / RS, r = row / s->S % s->R, t = row % s->S;
            const int64_t offh = r * s->dil_h - s->pad_t, offw = t * s->dil_w - s->pad_l;
            const float *xp = x + ((n0 + i) * s->C + g * Cg + c) * HW;
            float *dst = col + row * ld + i * P;
            int64_t hlo, hhi, wlo, whi;
            valid_range(Ho, s->H, s->str_h, offh, &hlo, &hhi);
            valid_range(Wo, s->W, sw, offw, &wlo, &whi);
            memset(dst, 0, (size_t)(hlo * Wo) * sizeof(float));
            for (int64_t ho = hlo; ho < hhi; ho++) {
                float *d = dst + ho * Wo;
                const float *xr = xp + (ho * s->str_h + offh) * s->W;
                for (int64_t wo = 0; wo < wlo; wo++) d[wo] = 0;
                if (sw == 1) memcpy(d + wlo, xr + wlo + offw, (size_t)(whi - wlo) * sizeof(float));
                else
                    for (int64_t wo = wlo; wo < whi; wo++) d[wo] = xr[wo * sw + offw];
                for (int64_t wo = whi; wo < Wo; wo++) d[wo] = 0;
            }
            memset(dst + hhi * Wo, 0, (size_t)((Ho - hhi) * Wo) * sizeof(float));
        }
}

/* dx[n0+i, g*Cg+c, ...] += the col entries that im2col would have read from there. */
static void col2im_add(const gg_conv2d_shape *s, const float *col, int64_t ld, int64_t g, int64_t n0,
                       int64_t m, float *dx) {
    const int64_t Cg = s->C / s->G, P = s->Ho * s->Wo, HW = s->H * s->W, sw = s->str_w;
#pragma omp parallel for collapse(2) schedule(static) \
    num_threads(gg_get_num_threads()) if (Cg * s->R * s->S * m * P > PAR_MIN)
    for (int64_t i = 0; i < m; i++)
        for (int64_t c = 0; c < Cg; c++) {
            float *dp = dx + ((n0 + i) * s->C + g * Cg + c) * HW;
            for (int64_t r = 0; r < s->R; r++) {
                const int64_t offh = r * s->dil_h - s->pad_t;
                int64_t hlo, hhi;
                valid_range(s->Ho, s->H, s->str_h, offh, &hlo, &hhi);
                for (int64_t t = 0; t < s->S; t++) {
                    const int64_t offw = t * s->dil_w - s->pad_l;
                    int64_t wlo, whi;
                    valid_range(s->Wo, s->W, sw, offw, &wlo, &whi);
                    const float *src = col + ((c * s->R + r) * s->S + t) * ld + i * P;
                    for (int64_t ho = hlo; ho < hhi; ho++) {
                        float *dr = dp + (ho * s->str_h + offh) * s->W;
                        const float *sr = src + ho * s->Wo;
                        if (sw == 1)
                            for (int64_t wo = wlo; wo < whi; wo++) dr[wo + offw] += sr[wo];
                        else
                            for (int64_t wo = wlo; wo < whi; wo++) dr[wo * sw + offw] += sr[wo];
                    }
                }
            }
        }
}

/* buf [Kg, ld] <-> t [N, K, P] restricted to group g and samples n0 .. n0+m-1. to_buf: gather. */
static void gather_group(const gg_conv2d_shape *s, const float *t, int64_t g, int64_t n0, int64_t m,
                         float *buf, int64_t ld) {
    const int64_t Kg = s->K / s->G, P = s->Ho * s->Wo;
#pragma omp parallel for collapse(2) schedule(static) \
    num_threads(gg_get_num_threads()) if (Kg * m * P > PAR_MIN)
    for (int64_t k = 0; k < Kg; k++)
        for (int64_t i = 0; i < m; i++)
            memcpy(buf + k * ld + i * P, t + ((n0 + i) * s->K + g * Kg + k) * P, (size_t)P * sizeof(float));
}

/* y[n0+i, g*Kg+k, :] = buf[k, i*P ...] + b[g*Kg+k]. */
static void scatter_group(const gg_conv2d_shape *s, const float *buf, int64_t ld, const float *b, int64_t g,
                          int64_t n0, int64_t m, float *y) {
    const int64_t Kg = s->K / s->G, P = s->Ho * s->Wo;
#pragma omp parallel for collapse(2) schedule(static) \
    num_threads(gg_get_num_threads()) if (Kg * m * P > PAR_MIN)
    for (int64_t k = 0; k < Kg; k++)
        for (int64_t i = 0; i < m; i++) {
            const float bias = b ? b[g * Kg + k] : 0.0f;
            const float *src = buf + k * ld + i * P;
            float *dst = y + ((n0 + i) * s->K + g * Kg + k) * P;
            for (int64_t p = 0; p < P; p++) dst[p] = src[p] + bias;
        }
}

void gg__conv2d_fwd_gemm(const gg_conv2d_shape *s, int64_t nb, const float *x, const float *w, const float *b,
                         float *y, void *ws) {
    const int64_t Cg = s->C / s->G, Kg = s->K / s->G, CRS = Cg * s->R * s->S, P = s->Ho * s->Wo;
    const int64_t ld = pad_ld(nb * P);
    const bool direct_x = nb == 1 && is_pointwise(s);
    float *col = ws, *buf = col + (direct_x ? 0 : CRS * ld);
    for (int64_t n0 = 0; n0 < s->N; n0 += nb) {
        const int64_t m = imin(nb, s->N - n0);
        for (int64_t g = 0; g < s->G; g++) {
            const float *B = col, *Wg = w + g * Kg * CRS;
            int64_t ldb = ld;
            if (direct_x) B = x + (n0 * s->C + g * Cg) * P, ldb = P;
            else im2col(s, x, g, n0, m, col, ld);
            if (nb == 1) {
                float *Y = y + (n0 * s->K + g * Kg) * P;
                if (b)
                    for (int64_t k = 0; k < Kg; k++)
                        for (int64_t p = 0; p < P; p++) Y[k * P + p] = b[g * Kg + k];
                gemm(false, false, Kg, P, CRS, 1.0f, Wg, CRS, B, ldb, b ? 1.0f : 0.0f, Y, P);
            } else {
                gemm(false, false, Kg, m * P, CRS, 1.0f, Wg, CRS, B, ldb, 0.0f, buf, ld);
                scatter_group(s, buf, ld, b, g, n0, m, y);
            }
        }
    }
}

void gg__conv2d_bwd_gemm(const gg_conv2d_shape *s, int64_t nb, const float *x, const float *w,
                         const float *dy, float *dx, float *dw, void *ws) {
    const int64_t Cg = s->C / s->G, Kg = s->K / s->G, CRS = Cg * s->R * s->S, P = s->Ho * s->Wo;
    const int64_t ld = pad_ld(nb * P);
    const bool direct_x = nb == 1 && is_pointwise(s);
    float *col = ws, *buf = col + (direct_x ? 0 : CRS * ld);
    for (int64_t n0 = 0; n0 < s->N; n0 += nb) {
        const int64_t m = imin(nb, s->N - n0);
        for (int64_t g = 0; g < s->G; g++) {
            const float *Wg = w + g * Kg * CRS, *dY = buf;
            int64_t lddy = ld;
            if (nb == 1) dY = dy + (n0 * s->K + g * Kg) * P, lddy = P;
            else gather_group(s, dy, g, n0, m, buf, ld);
            if (dw) {
                const float *B = col;
                int64_t ldb = ld;
                if (direct_x) B = x + (n0 * s->C + g * Cg) * P, ldb = P;
                else im2col(s, x, g, n0, m, col, ld);
                gemm(false, true, Kg, CRS, m * P, 1.0f, dY, lddy, B, ldb, 1.0f, dw + g * Kg * CRS, CRS);
            }
            if (dx && direct_x) {
                gemm(true, false, Cg, P, Kg, 1.0f, Wg, CRS, dY, lddy, 1.0f, dx + (n0 * s->C + g * Cg) * P, P);
            } else if (dx) { /* col is free again once the dw GEMM has read it */
                gemm(true, false, CRS, m * P, Kg, 1.0f, Wg, CRS, dY, lddy, 0.0f, col, ld);
                col2im_add(s, col, ld, g, n0, m, dx);
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------------------
 * Direct kernels: no im2col, no GEMM; best for few channels per group (depthwise) and fine for dense
 * convolutions whose planes stay in cache.
 *
 * Each input plane is copied once into zero-bordered "phase planes" of pitch Wph: for stride (sh, sw),
 * phase (a, b) holds xpad[i*sh + a][j*sw + b] (xpad: the input with its padding), so that every tap
 * (r, t) reads one phase plane at a constant shift of the flat output index q = ho*Wph + wo:
 *   y[ho][wo] = sum_{r,t} w[r,t] * xpad[ho*sh + r*dh][wo*sw + t*dw]
 *             = sum_{r,t} w[r,t] * phase(r*dh % sh, t*dw % sw)[q + (r*dh / sh)*Wph + t*dw / sw].
 * A convolution is then a sum of shifted contiguous passes over whole planes, accumulated in vector
 * registers, several output planes per loaded input vector (corr_flat); the Wph - Wo junk columns of
 * each row are computed and dropped. The weight gradient is a dot product of the dy plane (junk columns
 * zero) with each shifted phase plane. The data gradient is, phase by phase of dx, a stride-1 correlation
 * of a zero-bordered dy with the flipped taps that land in that phase (for stride 1: one phase, all taps).
 * The weight gradient stacks small planes of several samples so that each dot product is long.
 * Tasks: (n, g) pairs for the forward and the data gradient; for the weight gradient, planes in memory
 * order into per-thread sums (small weights) or (group, block of output channels) pairs. Each task owns
 * what it writes. */

/* Vectors of VW floats: 16 (one zmm) where AVX-512 is compiled in (Zen 5 runs two 512-bit FMAs per cycle,
 * twice the 256-bit rate), 8 otherwise. vh is half a vector, vd the same lanes in double. */
#if defined(__AVX512F__)
#define VW 16
#else
#define VW 8
#endif
typedef float vf __attribute__((vector_size(VW * 4)));
typedef float vh __attribute__((vector_size(VW * 2)));
typedef double vd __attribute__((vector_size(VW * 4)));
static inline vf ldv(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void stv(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

/* One block of NV*VW consecutive outputs for each of KB output planes, accumulated in registers: every
 * shifted input vector loaded feeds KB FMAs. KB and NV are constants after inlining. */
static inline __attribute__((always_inline)) void
corr_block(float *restrict out, int64_t ostride, const float *restrict in, int64_t n_in, int64_t in_stride,
           const int64_t *off, int64_t n_taps, const float *restrict wt, int64_t wstride, const float *init,
           int KB, int NV) {
    vf a[4][8];
    for (int o = 0; o < KB; o++)
        for (int v = 0; v < NV; v++) a[o][v] = (vf){0} + init[o];
    for (int64_t c = 0; c < n_in; c++) {
        const float *ic = in + c * in_stride, *wc = wt + c * n_taps;
        for (int64_t j = 0; j < n_taps; j++) {
            const float *p = ic + off[j];
            vf xv[8];
            for (int v = 0; v < NV; v++) xv[v] = ldv(p + VW * v);
            for (int o = 0; o < KB; o++) {
                const vf wv = (vf){0} + wc[o * wstride + j];
                for (int v = 0; v < NV; v++) a[o][v] += wv * xv[v];
            }
        }
    }
    for (int o = 0; o < KB; o++)
        for (int v = 0; v < NV; v++) stv(out + o * ostride + VW * v, a[o][v]);
}

/* Largest block of corr_flat, in floats: the slack callers leave after outputs and input planes. */
#define CORR_MAX_BLOCK (8 * VW)

/* For each of n_out output planes o (weights wt + o*wstride laid out [n_in][n_taps], result at
 * out + o*ostride):
 *   out[o][q - q0] = init[o] + sum_{c < n_in, j < n_taps} wt[o][c*n_taps + j] * in[c*in_stride + off[j] + q]
 * for q in [q0, q1). Four planes at a time in blocks of 4 vectors (2 for a short tail), the rest one at a
 * time in blocks of 8 vectors (4 or 2 for the tail): up to CORR_MAX_BLOCK - 1 values past q1 are written,
 * and reads reach that much + max(off) past q1 (slack the callers allocate). */
static void corr_flat(float *restrict out, int64_t ostride, int64_t q0, int64_t q1, const float *restrict in,
                      int64_t n_in, int64_t in_stride, const int64_t *off, int64_t n_taps,
                      const float *restrict wt, int64_t wstride, int64_t n_out, const float *init) {
#define CORR(q, KB, NV)                                                                       \
    corr_block(out + o * ostride + ((q)-q0), ostride, in + (q), n_in, in_stride, off, n_taps, \
               wt + o * wstride, wstride, init + o, KB, NV)
    int64_t o = 0;
    for (; o + 4 <= n_out; o += 4) {
        int64_t q = q0;
        for (; q1 - q > 2 * VW; q += 4 * VW) CORR(q, 4, 4);
        if (q < q1) CORR(q, 4, 2);
    }
    for (; o < n_out; o++) {
        int64_t q = q0;
        for (; q1 - q > 4 * VW; q += 8 * VW) CORR(q, 1, 8);
        if (q1 - q > 2 * VW) CORR(q, 1, 4);
        else if (q < q1) CORR(q, 1, 2);
    }
#undef CORR
}

/* Weight-gradient sums: VW doubles per tap (two vd), so each plane's float partial sums reach double
 * precision with two conversions instead of a horizontal sum. */
static inline void add_to_double(vd *dst, vf a) {
    vh lo, hi;
    memcpy(&lo, &a, sizeof lo);
    memcpy(&hi, (const char *)&a + sizeof lo, sizeof hi);
    dst[0] += __builtin_convertvector(lo, vd);
    dst[1] += __builtin_convertvector(hi, vd);
}

/* For KB dy planes d + o*dstride (o < KB) and NT taps j:
 *   sums[o*sstride + 2j .. 2j+1] += lanes of sum_{q < n} d[o][q] * x[q + off[j]]     (n a multiple of VW)
 * Every shifted x vector loaded feeds KB FMAs and every d vector NT. KB, NT are constants after inlining. */
static inline __attribute__((always_inline)) void tap_dots(const float *restrict d, int64_t dstride,
                                                           const float *restrict x, const int64_t *off,
                                                           int64_t n, vd *sums, int64_t sstride, int KB,
                                                           int NT) {
    vf a[2][9];
    for (int o = 0; o < KB; o++)
        for (int j = 0; j < NT; j++) a[o][j] = (vf){0};
    for (int64_t q = 0; q < n; q += VW) {
        vf dv[2];
        for (int o = 0; o < KB; o++) dv[o] = ldv(d + o * dstride + q);
        for (int j = 0; j < NT; j++) {
            const vf xv = ldv(x + q + off[j]);
            for (int o = 0; o < KB; o++) a[o][j] += dv[o] * xv;
        }
    }
    for (int o = 0; o < KB; o++)
        for (int j = 0; j < NT; j++) add_to_double(sums + o * sstride + 2 * j, a[o][j]);
}

/* A single tap with four accumulators (one would wait on the FMA latency). */
static void tap_dot1(const float *restrict d, const float *restrict x, int64_t n, vd *sums) {
    vf s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    int64_t i = 0;
    for (; i + 4 * VW <= n; i += 4 * VW) {
        s0 += ldv(d + i) * ldv(x + i), s1 += ldv(d + i + VW) * ldv(x + i + VW);
        s2 += ldv(d + i + 2 * VW) * ldv(x + i + 2 * VW), s3 += ldv(d + i + 3 * VW) * ldv(x + i + 3 * VW);
    }
    for (; i < n; i += VW) s0 += ldv(d + i) * ldv(x + i);
    add_to_double(sums, (s0 + s1) + (s2 + s3));
}

/* all_tap_dots for at most nine taps, KB (a constant after inlining) dy planes at a time. */
static inline __attribute__((always_inline)) void some_tap_dots(const float *d, int64_t dstride,
                                                                const float *x, const int64_t *off,
                                                                int64_t nt, int64_t n, vd *sums,
                                                                int64_t sstride, int KB) {
    switch (nt) {
    case 9:
        tap_dots(d, dstride, x, off, n, sums, sstride, KB, 9);
        break;
    case 8:
        tap_dots(d, dstride, x, off, n, sums, sstride, KB, 8);
        break;
    case 7:
        tap_dots(d, dstride, x, off, n, sums, sstride, KB, 7);
        break;
    case 6:
        tap_dots(d, dstride, x, off, n, sums, sstride, KB, 6);
        break;
    case 5:
        tap_dots(d, dstride, x, off, n, sums, sstride, KB, 5);
        break;
    case 4:
        tap_dots(d, dstride, x, off, n, sums, sstride, KB, 4);
        break;
    case 3:
        tap_dots(d, dstride, x, off, n, sums, sstride, KB, 3);
        break;
    default: /* too few accumulators to hide the FMA latency: one tap at a time */
        for (int o = 0; o < KB; o++)
            for (int64_t j = 0; j < nt; j++)
                tap_dot1(d + o * dstride, x + off[j], n, sums + o * sstride + 2 * j);
    }
}

/* sums[o*sstride + 2j ..] += d[o] . (x shifted by off[j]) for the nd <= 2 dy planes d + o*dstride and every
 * tap j < n_taps, up to nine taps per pass. */
static void all_tap_dots(const float *d, int64_t dstride, int64_t nd, const float *x, const int64_t *off,
                         int64_t n_taps, int64_t n, vd *sums, int64_t sstride) {
    for (int64_t j0 = 0; j0 < n_taps; j0 += 9) {
        const int64_t nt = imin(9, n_taps - j0);
        if (nd == 2) some_tap_dots(d, dstride, x, off + j0, nt, n, sums + 2 * j0, sstride, 2);
        else some_tap_dots(d, dstride, x, off + j0, nt, n, sums + 2 * j0, sstride, 1);
    }
}

#define SLACK CORR_MAX_BLOCK /* floats after every plane and output: block tails */

typedef struct direct_geom {
    int64_t nph, mqr, mqt, Hph, Wph, plane, nbs, phplane, xplane, L, Hq, Wq, dplane, acc, shared, per_thread;
    int64_t off[GG_CONV_DIRECT_MAX_TAPS];
} direct_geom;

static bool weight_sums_private(const gg_conv2d_shape *s) {
    return s->K * (s->C / s->G) * s->R * s->S <= 4096;
}

/* Geometry of the direct kernels (sizes in floats). With `stack` (the weight gradient), small planes are
 * stacked: nbs samples share every buffer plane (sample i at row i*Hph, or i*Hq for dy), so that each dot
 * product is long enough to amortise its start and its reduction: planes under 512 positions are stacked
 * to ~1024, within 512 KiB of planes per thread. (Stacking the forward and data gradient measured slower:
 * their planes then fall out of L1/L2.)
 *   Input phase planes: sh*sw per channel, each nbs x Hph x Wph (pitch Wph) in `phplane` floats.
 *   off[r*S + t]: where tap (r, t) reads, relative to the flat output index.
 *   L: flat outputs of one sample, (Ho-1)*Wph + Wo; sample i's outputs start at i*plane.
 *   Data gradient: dy planes nbs x Hq x Wq with dy at row mqr, column mqt of its sample block; dx phase
 *   (a, b) is computed over the flat indices of its rows and columns that fall inside the input. */
static void direct_geometry(const gg_conv2d_shape *s, bool stack, direct_geom *f) {
    const int64_t Cg = s->C / s->G, Kg = s->K / s->G, RS = s->R * s->S, sh = s->str_h, sw = s->str_w;
    f->nph = sh * sw;
    f->mqr = (s->R - 1) * s->dil_h / sh;
    f->mqt = (s->S - 1) * s->dil_w / sw;
    f->Hph = s->Ho + f->mqr;
    f->Wph = s->Wo + f->mqt;
    f->plane = f->Hph * f->Wph;
    f->L = (s->Ho - 1) * f->Wph + s->Wo;
    const int64_t Hx = div_ceil(s->pad_t + s->H, sh), Wx = div_ceil(s->pad_l + s->W, sw);
    f->Hq = imax(Hx, s->Ho) + f->mqr;
    f->Wq = imax(Wx, s->Wo) + f->mqt;
    const int64_t cap = 128 * 1024 / imax(1, imax(Cg * f->nph * f->plane, Kg * f->Hq * f->Wq));
    f->nbs = !stack || f->plane >= 512 ? 1 : imax(1, imin(imin(s->N, div_ceil(1024, f->plane)), cap));
    f->phplane = round_up(f->nbs * f->plane + SLACK, 16);
    f->xplane = f->nph * f->phplane;
    for (int64_t r = 0; r < s->R; r++)
        for (int64_t t = 0; t < s->S; t++) {
            const int64_t vr = r * s->dil_h, vt = t * s->dil_w;
            f->off[r * s->S + t] = (vr % sh * sw + vt % sw) * f->phplane + vr / sh * f->Wph + vt / sw;
        }
    f->dplane = round_up(f->nbs * f->Hq * f->Wq + SLACK, 16);
    f->acc = round_up(f->nbs * imax(f->plane, f->Hq * f->Wq) + SLACK, 16);
    f->shared = round_up(s->K * Cg * RS, 16);             /* flipped weights of the data gradient */
    const int64_t fwd = Cg * f->xplane + 4 * f->acc;      /* phase planes, 4 output planes */
    const int64_t bwd_data = Kg * f->dplane + 4 * f->acc; /* dy planes, 4 output planes */
    const int64_t bwd_weight =
        Cg * f->xplane + 2 * f->acc + 2 * VW * Kg * Cg * RS * (weight_sums_private(s) ? s->G : 1);
    f->per_thread = imax(fwd, imax(bwd_data, bwd_weight));
}

static inline int team_size(void) {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

static inline int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

bool gg__conv2d_direct_supports(const gg_conv2d_shape *s) {
    return s->R * s->S <= GG_CONV_DIRECT_MAX_TAPS && s->str_h * s->str_w <= GG_CONV_DIRECT_MAX_PHASES;
}

size_t gg__conv2d_direct_workspace(const gg_conv2d_shape *s) {
    direct_geom f, fs;
    direct_geometry(s, false, &f);
    direct_geometry(s, true, &fs);
    return (size_t)(f.shared + imax(f.per_thread, fs.per_thread) * gg_get_num_threads()) * sizeof(float);
}

/* Phase planes of input channel plane xc [H, W] into dst (phase p at dst + p*phplane). Their borders are
 * zero already and stay so: the same positions are written every time. */
static void put_phases(const gg_conv2d_shape *s, const direct_geom *f, const float *xc, float *dst) {
    const int64_t sh = s->str_h, sw = s->str_w;
    for (int64_t a = 0; a < sh; a++)
        for (int64_t b = 0; b < sw; b++) {
            float *ph = dst + (a * sw + b) * f->phplane;
            int64_t ilo, ihi, jlo, jhi; /* rows i with 0 <= i*sh + a - pt < H, likewise columns */
            valid_range(f->Hph, s->H, sh, a - s->pad_t, &ilo, &ihi);
            valid_range(f->Wph, s->W, sw, b - s->pad_l, &jlo, &jhi);
            for (int64_t i = ilo; i < ihi; i++) {
                const float *xr = xc + (i * sh + a - s->pad_t) * s->W + (b - s->pad_l);
                float *pr = ph + i * f->Wph;
                if (sw == 1) memcpy(pr + jlo, xr + jlo, (size_t)(jhi - jlo) * sizeof(float));
                else
                    for (int64_t j = jlo; j < jhi; j++) pr[j] = xr[j * sw];
            }
        }
}

/* Copy plane src [h, w] into dst at row r0, column c0 of pitch `pitch` (the border is left as it is). */
static inline void put_plane(float *dst, int64_t pitch, int64_t r0, int64_t c0, const float *src, int64_t h,
                             int64_t w) {
    for (int64_t i = 0; i < h; i++)
        memcpy(dst + (r0 + i) * pitch + c0, src + i * w, (size_t)w * sizeof(float));
}

/* A chunk with fewer than nbs samples leaves an earlier chunk's samples m.. in the buffers; where a pass
 * could reach them, they are cleared. */
static inline void clear_tail(float *plane0, int64_t m, int64_t nbs, int64_t block) {
    if (m < nbs) memset(plane0 + m * block, 0, (size_t)((nbs - m) * block) * sizeof(float));
}

void gg__conv2d_fwd_direct(const gg_conv2d_shape *s, const float *x, const float *w, const float *b, float *y,
                           void *ws) {
    const int64_t Cg = s->C / s->G, Kg = s->K / s->G, RS = s->R * s->S, HW = s->H * s->W, P = s->Ho * s->Wo;
    direct_geom f;
    direct_geometry(s, false, &f);
    const int64_t chunks = div_ceil(s->N, f.nbs);
#pragma omp parallel num_threads(gg_get_num_threads()) if (s->N * s->K * P * RS > PAR_MIN)
    {
        float *xph = (float *)ws + f.shared + thread_id() * f.per_thread, *acc = xph + Cg * f.xplane;
        memset(xph, 0, (size_t)(Cg * f.xplane) * sizeof(float));
#pragma omp for schedule(static)
        for (int64_t cg = 0; cg < chunks * s->G; cg++) {
            const int64_t n0 = cg / s->G * f.nbs, g = cg % s->G, m = imin(f.nbs, s->N - n0);
            for (int64_t c = 0; c < Cg; c++)
                for (int64_t i = 0; i < m; i++)
                    put_phases(s, &f, x + ((n0 + i) * s->C + g * Cg + c) * HW,
                               xph + c * f.xplane + i * f.plane);
            /* outputs of samples >= m (stale inputs) are computed and dropped */
            for (int64_t kk0 = 0; kk0 < Kg; kk0 += 4) {
                const int64_t nk = imin(4, Kg - kk0), k0 = g * Kg + kk0;
                float init[4] = {0};
                for (int64_t o = 0; o < nk; o++) init[o] = b ? b[k0 + o] : 0.0f;
                corr_flat(acc, f.acc, 0, (m - 1) * f.plane + f.L, xph, Cg, f.xplane, f.off, RS,
                          w + k0 * Cg * RS, Cg * RS, nk, init);
                for (int64_t o = 0; o < nk; o++)
                    for (int64_t i = 0; i < m; i++) {
                        float *yp = y + ((n0 + i) * s->K + k0 + o) * P;
                        const float *src = acc + o * f.acc + i * f.plane;
                        for (int64_t ho = 0; ho < s->Ho; ho++)
                            memcpy(yp + ho * s->Wo, src + ho * f.Wph, (size_t)s->Wo * sizeof(float));
                    }
            }
        }
    }
}

void gg__conv2d_bwd_data_direct(const gg_conv2d_shape *s, const float *dy, const float *w, float *dx,
                                void *ws) {
    const int64_t Cg = s->C / s->G, Kg = s->K / s->G, RS = s->R * s->S, HW = s->H * s->W, P = s->Ho * s->Wo;
    const int64_t sh = s->str_h, sw = s->str_w;
    direct_geom f;
    direct_geometry(s, false, &f);
    const int64_t chunks = div_ceil(s->N, f.nbs), dblock = f.Hq * f.Wq;
    /* Taps grouped by the dx phase they land in: phase (a, b) gets the taps with r*dh % sh == a and
     * t*dw % sw == b, read at dy offset (mqr - r*dh/sh)*Wq + mqt - t*dw/sw (the flipped kernel).
     * wflip holds, phase after phase, [G, Cg, Kg, taps of the phase]. */
    int64_t tap_of[GG_CONV_DIRECT_MAX_TAPS], doff[GG_CONV_DIRECT_MAX_TAPS],
        first[GG_CONV_DIRECT_MAX_PHASES + 1];
    int64_t n = 0;
    for (int64_t ph = 0; ph < f.nph; ph++) {
        first[ph] = n;
        for (int64_t j = 0; j < RS; j++) {
            const int64_t vr = j / s->S * s->dil_h, vt = j % s->S * s->dil_w;
            if (vr % sh * sw + vt % sw != ph) continue;
            tap_of[n] = j;
            doff[n++] = (f.mqr - vr / sh) * f.Wq + f.mqt - vt / sw;
        }
    }
    first[f.nph] = n;
    float *wflip = ws;
    for (int64_t ph = 0; ph < f.nph; ph++) {
        const int64_t nt = first[ph + 1] - first[ph];
        float *wp = wflip + first[ph] * s->K * Cg;
        for (int64_t g = 0; g < s->G; g++)
            for (int64_t c = 0; c < Cg; c++)
                for (int64_t kk = 0; kk < Kg; kk++)
                    for (int64_t j = 0; j < nt; j++)
                        wp[((g * Cg + c) * Kg + kk) * nt + j] =
                            w[((g * Kg + kk) * Cg + c) * RS + tap_of[first[ph] + j]];
    }
#pragma omp parallel num_threads(gg_get_num_threads()) if (s->N * s->K * P * RS > PAR_MIN)
    {
        float *dpad = (float *)ws + f.shared + thread_id() * f.per_thread, *acc = dpad + Kg * f.dplane;
        memset(dpad, 0, (size_t)(Kg * f.dplane) * sizeof(float));
#pragma omp for schedule(static)
        for (int64_t cg = 0; cg < chunks * s->G; cg++) {
            const int64_t n0 = cg / s->G * f.nbs, g = cg % s->G, m = imin(f.nbs, s->N - n0);
            for (int64_t kk = 0; kk < Kg; kk++)
                for (int64_t i = 0; i < m; i++)
                    put_plane(dpad + kk * f.dplane + i * dblock, f.Wq, f.mqr, f.mqt,
                              dy + ((n0 + i) * s->K + g * Kg + kk) * P, s->Ho, s->Wo);
            for (int64_t ph = 0; ph < f.nph; ph++) {
                const int64_t nt = first[ph + 1] - first[ph], a = ph / sw, bb = ph % sw;
                if (nt == 0) continue;
                /* dx[i*sh + a - pt][j*sw + b - pl] for the rows i and columns j inside the input */
                int64_t ilo, ihi, jlo, jhi;
                valid_range(f.Hq, s->H, sh, a - s->pad_t, &ilo, &ihi);
                valid_range(f.Wq, s->W, sw, bb - s->pad_l, &jlo, &jhi);
                if (ilo >= ihi || jlo >= jhi) continue;
                const int64_t q0 = ilo * f.Wq + jlo, q1 = ((m - 1) * f.Hq + ihi - 1) * f.Wq + jhi;
                const float *wp = wflip + first[ph] * s->K * Cg + g * Cg * Kg * nt;
                for (int64_t c0 = 0; c0 < Cg; c0 += 4) {
                    const int64_t nc = imin(4, Cg - c0);
                    const float zero[4] = {0};
                    corr_flat(acc, f.acc, q0, q1, dpad, Kg, f.dplane, doff + first[ph], nt, wp + c0 * Kg * nt,
                              Kg * nt, nc, zero);
                    for (int64_t o = 0; o < nc; o++)
                        for (int64_t smp = 0; smp < m; smp++) {
                            float *dxp = dx + ((n0 + smp) * s->C + g * Cg + c0 + o) * HW;
                            for (int64_t i = ilo; i < ihi; i++) {
                                const float *src = acc + o * f.acc + (smp * f.Hq + i) * f.Wq - q0;
                                float *dr = dxp + (i * sh + a - s->pad_t) * s->W;
                                const int64_t cofs = bb - s->pad_l;
                                if (sw == 1)
                                    for (int64_t j = jlo; j < jhi; j++) dr[j + cofs] += src[j];
                                else
                                    for (int64_t j = jlo; j < jhi; j++) dr[j * sw + cofs] += src[j];
                            }
                        }
                }
            }
        }
    }
}

/* dw[i] += the VW lanes of sums[2i], sums[2i+1] for i < n. */
static void flush_sums(float *dw, const vd *sums, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const vd t = sums[2 * i] + sums[2 * i + 1];
        double r = 0;
        for (int k = 0; k < VW / 2; k++) r += t[k];
        dw[i] += (float)r;
    }
}

/* Accumulate the weight gradient of samples n0 .. n0+m-1 (m <= nbs, stacked), group g, output channels
 * kk0 .. kk1-1 into sums (VW doubles per weight element, [kk - kk0, c, r, t]). xph and dext are the
 * thread's buffers. */
static void weight_sums_chunk(const gg_conv2d_shape *s, const direct_geom *f, const float *x, const float *dy,
                              int64_t n0, int64_t m, int64_t g, int64_t kk0, int64_t kk1, float *xph,
                              float *dext, vd *sums) {
    const int64_t Cg = s->C / s->G, Kg = s->K / s->G, RS = s->R * s->S, HW = s->H * s->W, P = s->Ho * s->Wo;
    const int64_t n = round_up((m - 1) * f->plane + f->L, VW);
    for (int64_t c = 0; c < Cg; c++)
        for (int64_t i = 0; i < m; i++)
            put_phases(s, f, x + ((n0 + i) * s->C + g * Cg + c) * HW, xph + c * f->xplane + i * f->plane);
    for (int64_t kk = kk0; kk < kk1; kk += 2) {
        const int64_t nd = imin(2, kk1 - kk);
        for (int64_t o = 0; o < nd; o++) {
            float *d = dext + o * f->acc;
            for (int64_t i = 0; i < m; i++)
                put_plane(d + i * f->plane, f->Wph, 0, 0, dy + ((n0 + i) * s->K + g * Kg + kk + o) * P, s->Ho,
                          s->Wo);
            clear_tail(d, m, f->nbs, f->plane); /* the dot may reach the first row of sample m */
        }
        /* dw[k,c,r,t] += sum_q dext_k[q] * phases_c[q + off[r*S + t]] */
        for (int64_t c = 0; c < Cg; c++)
            all_tap_dots(dext, f->acc, nd, xph + c * f->xplane, f->off, RS, n,
                         sums + 2 * ((kk - kk0) * Cg + c) * RS, 2 * Cg * RS);
    }
}

/* Small weights (depthwise and the like): each thread walks its share of the (chunk, g) planes in memory
 * order into private sums for the whole weight, merged at the end. Large weights: tasks own (group, block
 * of output channels) pairs, enough of them for every thread, each reading its group's planes chunk by
 * chunk. */
void gg__conv2d_bwd_weight_direct(const gg_conv2d_shape *s, const float *x, const float *dy, float *dw,
                                  void *ws) {
    const int64_t Cg = s->C / s->G, Kg = s->K / s->G, RS = s->R * s->S, P = s->Ho * s->Wo;
    direct_geom f;
    direct_geometry(s, true, &f);
    const int nt = gg_get_num_threads();
    const bool private_sums = weight_sums_private(s);
    const int64_t blocks = imin(Kg, (nt + s->G - 1) / s->G), kb = (Kg + blocks - 1) / blocks;
    const int64_t chunks = div_ceil(s->N, f.nbs);
#pragma omp parallel num_threads(nt) if (s->N * s->K * P * RS > PAR_MIN)
    {
        float *xph = (float *)ws + f.shared + thread_id() * f.per_thread, *dext = xph + Cg * f.xplane;
        vd *sums =
            (vd *)(void *)(dext + 2 * f.acc); /* f.shared, f.per_thread, f.acc keep 64-byte alignment */
        memset(xph, 0, (size_t)(Cg * f.xplane + 2 * f.acc) * sizeof(float)); /* borders and junk columns */
        if (private_sums) {
            memset(sums, 0, (size_t)(2 * s->K * Cg * RS) * sizeof(vd));
#pragma omp for schedule(static)
            for (int64_t cg = 0; cg < chunks * s->G; cg++) {
                const int64_t n0 = cg / s->G * f.nbs, g = cg % s->G;
                weight_sums_chunk(s, &f, x, dy, n0, imin(f.nbs, s->N - n0), g, 0, Kg, xph, dext,
                                  sums + 2 * g * Kg * Cg * RS);
            }
            /* every thread's sums, added in thread order (the implicit barrier above ends the sums):
             * the result does not depend on which thread finishes first */
            const int team = team_size();
#pragma omp for schedule(static)
            for (int64_t i = 0; i < s->K * Cg * RS; i++) {
                double r = 0;
                for (int t = 0; t < team; t++) {
                    const vd *st = (const vd *)(const void *)((const float *)ws + f.shared +
                                                              t * f.per_thread + Cg * f.xplane + 2 * f.acc);
                    const vd v = st[2 * i] + st[2 * i + 1];
                    for (int k = 0; k < VW / 2; k++) r += v[k];
                }
                dw[i] += (float)r;
            }
        } else {
#pragma omp for schedule(static)
            for (int64_t task = 0; task < s->G * blocks; task++) {
                const int64_t g = task / blocks, kk0 = task % blocks * kb, kk1 = imin(Kg, kk0 + kb);
                if (kk0 >= kk1) continue;
                memset(sums, 0, (size_t)(2 * (kk1 - kk0) * Cg * RS) * sizeof(vd));
                for (int64_t n0 = 0; n0 < s->N; n0 += f.nbs)
                    weight_sums_chunk(s, &f, x, dy, n0, imin(f.nbs, s->N - n0), g, kk0, kk1, xph, dext, sums);
                flush_sums(dw + (g * Kg + kk0) * Cg * RS, sums, (kk1 - kk0) * Cg * RS);
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------------------
 * Batch-reduce GEMM direct convolution (libxsmm through tensor/xsmm_backend.c): no im2col buffer, for
 * C/G and K/G multiples of 16. Channels go in blocks of bc input and bk output channels (64, 32 or 16:
 * the largest that divides C/G, K/G). Each call reorders its inputs into padded blocked layouts whose zero
 * borders stand for the padding, so that every tap is a constant offset:
 *   xb  [N][C/bc][Hp][Wp][bc]   xb(n, cb, i, j, c)  = x[n, cb*bc + c, i - pt, j - pl]       (0 outside)
 *   dyb [N][K/bk][Hq][Wq][bk]   dyb(n, kb, i, j, k) = dy[n, kb*bk + k, i - at, j - al]     (0 outside)
 * with at = (R-1)*dh - pt and al = (S-1)*dw - pl, and the weights into GEMM operand blocks. The GEMMs are
 * column-major (libxsmm's convention), one output row each, summed over a batch of small products:
 *   forward  Y(n, kb, ho) [bk x Wo] = sum over the group's c blocks cb and taps (r, t) of
 *            W(kb, cb, r, t) [bk x bc] @ xb(n, cb, ho*sh + r*dh, t*dw + sw*j) [bc x Wo, column j]
 *   data     DX(n, cb, hi) [bc x W] = sum over the group's k blocks kb and taps (r, t) of
 *            W(kb, cb, R-1-r, S-1-t)^T [bc x bk] @ dyb(n, kb, hi + r*dh, t*dw + j) [bk x W]   (stride 1)
 *   weight   dW(kb, cb, r, t)^T [bc x bk] += sum over samples n and rows ho of
 *            xb(n, cb, ho*sh + r*dh, t*dw + sw*j) [bc x Wo] @ dy(n, kb*bk + k, ho, j) [Wo x bk]
 * (dy read in place: its rows are the columns of a Wo x bk matrix with leading dimension Ho*Wo). Output
 * rows land in a per-thread buffer [Wo][bk] and are transposed into y / added into dx; the weight
 * gradient blocks are transposed and added into dw at the end. Threads: forward tasks (kb, n), data
 * tasks (cb, n), k-block outer so that one block's weights stay in cache; weight-gradient tasks are
 * (kb, cb) pairs when they split evenly over the threads, otherwise each thread takes a contiguous share
 * of the samples into private sums, added in thread order (deterministic for a fixed thread count). */

typedef struct brg_geom {
    int64_t bc, bk, Cgb, Kgb, Cb, Kb, RS, P;
    int64_t Hp, Wp, xblock; /* xb: rows, columns, floats per (n, cb) */
    int64_t Hq, Wq, at, al, dblock;
    int64_t wsize;  /* floats of one copy of the weights */
    int64_t nchunk; /* samples per weight-gradient batch */
} brg_geom;

static int64_t channel_block(int64_t c) { return c % 64 == 0 ? 64 : c % 32 == 0 ? 32 : 16; }

static void brg_geometry(const gg_conv2d_shape *s, brg_geom *f) {
    const int64_t Cg = s->C / s->G, Kg = s->K / s->G;
    f->bc = channel_block(Cg), f->bk = channel_block(Kg);
    f->Cgb = Cg / f->bc, f->Kgb = Kg / f->bk, f->Cb = s->C / f->bc, f->Kb = s->K / f->bk;
    f->RS = s->R * s->S, f->P = s->Ho * s->Wo;
    f->Hp = (s->Ho - 1) * s->str_h + (s->R - 1) * s->dil_h + 1;
    f->Wp = (s->Wo - 1) * s->str_w + (s->S - 1) * s->dil_w + 1;
    f->xblock = f->Hp * f->Wp * f->bc;
    f->Hq = s->H + (s->R - 1) * s->dil_h, f->Wq = s->W + (s->S - 1) * s->dil_w;
    f->at = (s->R - 1) * s->dil_h - s->pad_t, f->al = (s->S - 1) * s->dil_w - s->pad_l;
    f->dblock = f->Hq * f->Wq * f->bk;
    f->wsize = s->K * Cg * f->RS;
    const int64_t per_sample = (f->xblock + f->bk * f->P) * (int64_t)sizeof(float);
    f->nchunk = imax(1, imin(s->N, (256 * 1024) / imax(1, per_sample)));
}

bool gg__conv2d_xsmm_supports(const gg_conv2d_shape *s, bool data_pass) {
    const int64_t Cg = s->C / s->G, Kg = s->K / s->G;
    if (Cg % 16 || Kg % 16 || s->N < 1) return false;
    if (data_pass && (s->str_h != 1 || s->str_w != 1)) return false;
    return true;
}

/* Weight-gradient work split: pairs over the threads, or samples over private sums. */
static int64_t brg_weight_parts(const gg_conv2d_shape *s, const brg_geom *f, int nt) {
    const int64_t pairs = f->Kb * f->Cgb;
    return (nt <= 1 || pairs % nt == 0 || s->N < nt) ? 1 : nt;
}

/* Regions of the workspace, in floats, each a multiple of 16 (64 bytes). */
static int64_t r16(int64_t n) { return round_up(n, 16); }

size_t gg__conv2d_xsmm_workspace(const gg_conv2d_shape *s) {
    brg_geom f;
    brg_geometry(s, &f);
    const int nt = gg_get_num_threads();
    const int64_t offs = 2 * 2 * imax(imax(f.Cgb, f.Kgb) * f.RS, f.nchunk * s->Ho); /* two u64 arrays */
    const int64_t fwd = r16(s->N * f.Cb * f.xblock) + 2 * r16(f.wsize) + r16(offs) + nt * r16(s->Wo * f.bk);
    const int64_t data = r16(s->N * f.Kb * f.dblock) + 2 * r16(f.wsize) + r16(offs) + nt * r16(s->W * f.bc);
    const int64_t weight =
        r16(s->N * f.Cb * f.xblock) + brg_weight_parts(s, &f, nt) * r16(f.wsize) + r16(offs);
    return (size_t)imax(fwd, imax(data, weight)) * sizeof(float);
}

/* One tile of a transpose: dst[mj*ds + i] (op)= src[mi*ss + j] for i < ni, j < nj (both <= 16), with
 * mi = lmap[i] and mj = smap[j] (identity maps when NULL), where op stores (plus bias[j] when bias is not
 * NULL) or adds. With AVX-512: 16 masked row loads, a 16x16 in-register transpose (unpack, shuffle, two
 * 128-bit lane shuffles), 16 masked row stores. */
enum { TILE_STORE, TILE_ADD };
static inline void tile_transpose_map(const float *src, int64_t ss, int64_t ni, int64_t nj, float *dst,
                                      int64_t ds, int op, const float *bias, const int32_t *lmap,
                                      const int32_t *smap) {
#if defined(__AVX512F__)
    const __mmask16 mi = (__mmask16)((1u << ni) - 1u), mj = (__mmask16)((1u << nj) - 1u);
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++)
        r[i] = i < ni ? _mm512_maskz_loadu_ps(mj, src + (lmap ? lmap[i] : i) * ss) : _mm512_setzero_ps();
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xee);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xee);
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
        r[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
        r[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xdd);
    }
    for (int j = 0; j < nj; j++) { /* r[j]: column j of the tile */
        __m512 v = r[j];
        float *d = dst + (smap ? smap[j] : j) * ds;
        if (op == TILE_ADD) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mi, d));
        else if (bias) v = _mm512_add_ps(v, _mm512_set1_ps(bias[j]));
        _mm512_mask_storeu_ps(d, mi, v);
    }
#else
    for (int64_t j = 0; j < nj; j++) {
        const float add = bias ? bias[j] : 0.0f;
        float *d = dst + (smap ? smap[j] : j) * ds;
        for (int64_t i = 0; i < ni; i++) {
            const float v = src[(lmap ? lmap[i] : i) * ss + j];
            if (op == TILE_ADD) d[i] += v;
            else d[i] = v + add;
        }
    }
#endif
}

static inline void tile_transpose(const float *src, int64_t ss, int64_t ni, int64_t nj, float *dst,
                                  int64_t ds, int op, const float *bias) {
    tile_transpose_map(src, ss, ni, nj, dst, ds, op, bias, NULL, NULL);
}

/* dst (one block) [Hd][Wd][blk] from the blk planes src [blk][H][W] (plane stride H*W):
 * dst(i, j, c) = src[m(c)][i - top][j - left], zero outside the planes, with m(c) = cmap[c] (a block of 16
 * with a lane map) or c (cmap NULL). blk is a multiple of 16. */
static void to_blocked_map(const float *src, int64_t H, int64_t W, int64_t blk, int64_t Hd, int64_t Wd,
                           int64_t top, int64_t left, float *dst, const int32_t *cmap) {
    const int64_t HW = H * W, jlo = imin(Wd, imax(0, left)), jhi = imax(jlo, imin(Wd, left + W));
    for (int64_t i = 0; i < Hd; i++) {
        float *d = dst + i * Wd * blk;
        const int64_t h = i - top;
        if (h < 0 || h >= H) {
            memset(d, 0, (size_t)(Wd * blk) * sizeof(float));
            continue;
        }
        memset(d, 0, (size_t)(jlo * blk) * sizeof(float));
        const float *sr = src + h * W - left;
        if (h + 1 < H) /* the next row of every plane: blk strided streams the hardware prefetch misses */
            for (int64_t c = 0; c < blk; c++)
                for (int64_t j = jlo; j < jhi; j += 16) __builtin_prefetch(sr + c * HW + W + j);
        for (int64_t j = jlo; j < jhi; j += 16)
            for (int64_t c = 0; c < blk; c += 16)
                tile_transpose_map(sr + c * HW + j, HW, 16, imin(16, jhi - j), d + j * blk + c, blk,
                                   TILE_STORE, NULL, cmap, NULL);
        memset(d + jhi * blk, 0, (size_t)((Wd - jhi) * blk) * sizeof(float));
    }
}

static void to_blocked(const float *src, int64_t H, int64_t W, int64_t blk, int64_t Hd, int64_t Wd,
                       int64_t top, int64_t left, float *dst) {
    to_blocked_map(src, H, W, blk, Hd, Wd, top, left, dst, NULL);
}

/* The blocked copy of every (n, c block) of t [N, nch, H, W]. */
static void all_to_blocked(const float *t, int64_t N, int64_t nch, int64_t H, int64_t W, int64_t blk,
                           int64_t Hd, int64_t Wd, int64_t top, int64_t left, float *dst) {
    const int64_t nb = nch / blk, block = Hd * Wd * blk;
#pragma omp parallel for schedule(static) num_threads(gg_get_num_threads()) if (N * nb * block > PAR_MIN)
    for (int64_t i = 0; i < N * nb; i++)
        to_blocked(t + i * blk * H * W, H, W, blk, Hd, Wd, top, left, dst + i * block);
}

static void set_offsets(unsigned long long *o, int64_t i, int64_t floats) {
    o[i] = (unsigned long long)floats * sizeof(float);
}

/* wt [RS][K][Cg] = w [K][Cg][RS]: each tap's [K x Cg] matrix contiguous (Cg a multiple of 16). */
static void weights_tap_major(const gg_conv2d_shape *s, const float *w, float *wt) {
    const int64_t Cg = s->C / s->G, RS = s->R * s->S, KC = s->K * Cg;
#pragma omp parallel for schedule(static) num_threads(gg_get_num_threads()) if (KC * RS > PAR_MIN)
    for (int64_t k = 0; k < s->K; k++) {
        const float *src = w + k * Cg * RS;
        if (RS <= 16)
            for (int64_t c = 0; c < Cg; c += 16)
                tile_transpose(src + c * RS, RS, 16, RS, wt + k * Cg + c, KC, TILE_STORE, NULL);
        else
            for (int64_t c = 0; c < Cg; c++)
                for (int64_t j = 0; j < RS; j++) wt[j * KC + k * Cg + c] = src[c * RS + j];
    }
}

bool gg__conv2d_fwd_xsmm(const gg_conv2d_shape *s, const float *x, const float *w, const float *b, float *y,
                         void *ws) {
    if (!gg__conv2d_xsmm_supports(s, false)) return false;
    brg_geom f;
    brg_geometry(s, &f);
    const int64_t bc = f.bc, bk = f.bk, Cg = s->C / s->G, RS = f.RS, n_br = f.Cgb * RS, P = f.P;
    gg__brgemm_fn kern = gg__xsmm_brgemm_dispatch(bk, s->Wo, bc, bk, s->str_w * bc, bk, true);
    if (!kern) return false;
    float *xb = ws, *wt = xb + r16(s->N * f.Cb * f.xblock), *wb = wt + r16(f.wsize);
    unsigned long long *aoff = (unsigned long long *)(void *)(wb + r16(f.wsize)), *boff = aoff + n_br;
    float *rows = wb + r16(f.wsize) + r16(4 * n_br);
    all_to_blocked(x, s->N, s->C, s->H, s->W, bc, f.Hp, f.Wp, s->pad_t, s->pad_l, xb);
    /* wb [kb][cgb][r][t][c][k]: the [bk x bc] blocks, column-major (transposed tiles of wt) */
    weights_tap_major(s, w, wt);
#pragma omp parallel for collapse(2) schedule(static) num_threads(gg_get_num_threads()) if (f.wsize > PAR_MIN)
    for (int64_t kb = 0; kb < f.Kb; kb++)
        for (int64_t cg = 0; cg < f.Cgb; cg++)
            for (int64_t j = 0; j < RS; j++) {
                float *d = wb + ((kb * f.Cgb + cg) * RS + j) * bc * bk;
                const float *src = wt + (j * s->K + kb * bk) * Cg + cg * bc;
                for (int64_t k = 0; k < bk; k += 16)
                    for (int64_t c = 0; c < bc; c += 16)
                        tile_transpose(src + k * Cg + c, Cg, 16, 16, d + c * bk + k, bk, TILE_STORE, NULL);
            }
    for (int64_t cg = 0; cg < f.Cgb; cg++)
        for (int64_t j = 0; j < RS; j++) {
            const int64_t i = cg * RS + j, r = j / s->S, t = j % s->S;
            set_offsets(aoff, i, i * bc * bk);
            set_offsets(boff, i, cg * f.xblock + (r * s->dil_h * f.Wp + t * s->dil_w) * bc);
        }
#pragma omp parallel num_threads(gg_get_num_threads()) if (s->N * s->K * P * RS > PAR_MIN)
    {
        float *row = rows + thread_id() * r16(s->Wo * bk);
#pragma omp for schedule(static)
        for (int64_t task = 0; task < f.Kb * s->N; task++) {
            const int64_t kb = task / s->N, n = task % s->N, g = kb / f.Kgb;
            const float *A = wb + kb * n_br * bc * bk, *B = xb + (n * f.Cb + g * f.Cgb) * f.xblock;
            float *yk = y + (n * s->K + kb * bk) * P;
            for (int64_t ho = 0; ho < s->Ho; ho++) {
                for (int64_t k = 0; k < bk; k++) /* the rows the transpose below writes */
                    for (int64_t j = 0; j < s->Wo; j += 16)
                        __builtin_prefetch(yk + k * P + ho * s->Wo + j, 1);
                gg__xsmm_brgemm(kern, A, B + ho * s->str_h * f.Wp * bc, row, n_br, aoff, boff);
                for (int64_t j = 0; j < s->Wo; j += 16)
                    for (int64_t k = 0; k < bk; k += 16)
                        tile_transpose(row + j * bk + k, bk, imin(16, s->Wo - j), 16,
                                       yk + k * P + ho * s->Wo + j, P, TILE_STORE,
                                       b ? b + kb * bk + k : NULL);
            }
        }
    }
    return true;
}

bool gg__conv2d_bwd_data_xsmm(const gg_conv2d_shape *s, const float *dy, const float *w, float *dx,
                              void *ws) {
    if (!gg__conv2d_xsmm_supports(s, true)) return false;
    brg_geom f;
    brg_geometry(s, &f);
    const int64_t bc = f.bc, bk = f.bk, Cg = s->C / s->G, Kg = s->K / s->G, RS = f.RS, n_br = f.Kgb * RS;
    const int64_t HW = s->H * s->W;
    gg__brgemm_fn kern = gg__xsmm_brgemm_dispatch(bc, s->W, bk, bc, bk, bc, true);
    if (!kern) return false;
    float *dyb = ws, *wt = dyb + r16(s->N * f.Kb * f.dblock), *wd = wt + r16(f.wsize);
    unsigned long long *aoff = (unsigned long long *)(void *)(wd + r16(f.wsize)), *boff = aoff + n_br;
    float *rows = wd + r16(f.wsize) + r16(4 * n_br);
    all_to_blocked(dy, s->N, s->K, s->Ho, s->Wo, bk, f.Hq, f.Wq, f.at, f.al, dyb);
    /* wd [cb][kgb][r'][t'][k][c]: the [bc x bk] blocks of the flipped, transposed kernel (rows of wt) */
    weights_tap_major(s, w, wt);
#pragma omp parallel for collapse(2) schedule(static) num_threads(gg_get_num_threads()) if (f.wsize > PAR_MIN)
    for (int64_t cb = 0; cb < f.Cb; cb++)
        for (int64_t kg = 0; kg < f.Kgb; kg++)
            for (int64_t j = 0; j < RS; j++) {
                const int64_t g = cb / f.Cgb, c0 = cb % f.Cgb * bc, k0 = g * Kg + kg * bk;
                float *d = wd + ((cb * f.Kgb + kg) * RS + j) * bc * bk;
                for (int64_t k = 0; k < bk; k++)
                    memcpy(d + k * bc, wt + ((RS - 1 - j) * s->K + k0 + k) * Cg + c0,
                           (size_t)bc * sizeof(float));
            }
    for (int64_t kg = 0; kg < f.Kgb; kg++)
        for (int64_t j = 0; j < RS; j++) {
            const int64_t i = kg * RS + j, r = j / s->S, t = j % s->S;
            set_offsets(aoff, i, i * bc * bk);
            set_offsets(boff, i, kg * f.dblock + (r * s->dil_h * f.Wq + t * s->dil_w) * bk);
        }
#pragma omp parallel num_threads(gg_get_num_threads()) if (s->N * s->K * f.P * RS > PAR_MIN)
    {
        float *row = rows + thread_id() * r16(s->W * bc);
#pragma omp for schedule(static)
        for (int64_t task = 0; task < f.Cb * s->N; task++) {
            const int64_t cb = task / s->N, n = task % s->N, g = cb / f.Cgb;
            const float *A = wd + cb * n_br * bc * bk, *B = dyb + (n * f.Kb + g * f.Kgb) * f.dblock;
            float *dxc = dx + (n * s->C + cb * bc) * HW;
            for (int64_t hi = 0; hi < s->H; hi++) {
                for (int64_t c = 0; c < bc; c++) /* the rows the transpose below adds into */
                    for (int64_t j = 0; j < s->W; j += 16)
                        __builtin_prefetch(dxc + c * HW + hi * s->W + j, 1);
                gg__xsmm_brgemm(kern, A, B + hi * f.Wq * bk, row, n_br, aoff, boff);
                for (int64_t j = 0; j < s->W; j += 16)
                    for (int64_t c = 0; c < bc; c += 16)
                        tile_transpose(row + j * bc + c, bc, imin(16, s->W - j), 16,
                                       dxc + c * HW + hi * s->W + j, HW, TILE_ADD, NULL);
            }
        }
    }
    return true;
}

bool gg__conv2d_bwd_weight_xsmm(const gg_conv2d_shape *s, const float *x, const float *dy, float *dw,
                                void *ws) {
    if (!gg__conv2d_xsmm_supports(s, false)) return false;
    brg_geom f;
    brg_geometry(s, &f);
    const int64_t bc = f.bc, bk = f.bk, Cg = s->C / s->G, RS = f.RS, P = f.P, nc = f.nchunk;
    const int nt = gg_get_num_threads();
    const int64_t parts = brg_weight_parts(s, &f, nt), pairs = f.Kb * f.Cgb, n_br = nc * s->Ho;
    gg__brgemm_fn kern = gg__xsmm_brgemm_dispatch(bc, bk, s->Wo, s->str_w * bc, P, bc, false);
    if (!kern) return false;
    float *xb = ws, *sums = xb + r16(s->N * f.Cb * f.xblock);
    unsigned long long *aoff = (unsigned long long *)(void *)(sums + parts * r16(f.wsize)),
                       *boff = aoff + n_br;
    all_to_blocked(x, s->N, s->C, s->H, s->W, bc, f.Hp, f.Wp, s->pad_t, s->pad_l, xb);
    for (int64_t i = 0; i < n_br; i++) {
        set_offsets(aoff, i, i / s->Ho * f.Cb * f.xblock + i % s->Ho * s->str_h * f.Wp * bc);
        set_offsets(boff, i, i / s->Ho * s->K * P + i % s->Ho * s->Wo);
    }
    /* sums [part][kb][cgb][r][t][k][c]: dW^T blocks [bc x bk], column-major */
#pragma omp parallel for schedule(static) num_threads(nt) if (parts > 1 || (nt > 1 && pairs > 1))
    for (int64_t task = 0; task < parts * (parts > 1 ? 1 : pairs); task++) {
        const int64_t part = parts > 1 ? task : 0, p0 = parts > 1 ? 0 : task,
                      p1 = parts > 1 ? pairs : task + 1;
        const int64_t n_lo = s->N * part / parts, n_hi = s->N * (part + 1) / parts;
        float *acc = sums + part * r16(f.wsize);
        for (int64_t pair = p0; pair < p1; pair++) {
            const int64_t kb = pair / f.Cgb, cg = pair % f.Cgb, cb = kb / f.Kgb * f.Cgb + cg;
            float *C = acc + pair * RS * bc * bk;
            memset(C, 0, (size_t)(RS * bc * bk) * sizeof(float));
            for (int64_t n0 = n_lo; n0 < n_hi; n0 += nc) {
                const int64_t cnt = imin(nc, n_hi - n0) * s->Ho;
                const float *A = xb + (n0 * f.Cb + cb) * f.xblock, *B = dy + (n0 * s->K + kb * bk) * P;
                for (int64_t j = 0; j < RS; j++) {
                    const int64_t r = j / s->S, t = j % s->S;
                    gg__xsmm_brgemm(kern, A + (r * s->dil_h * f.Wp + t * s->dil_w) * bc, B, C + j * bc * bk,
                                    cnt, aoff, boff);
                }
            }
        }
    }
    /* dw[k, c, r, t] += the sums of every part, added in part order */
#pragma omp parallel for schedule(static) num_threads(nt) if (f.wsize * parts > PAR_MIN)
    for (int64_t pair = 0; pair < pairs; pair++) {
        const int64_t kb = pair / f.Cgb, cg = pair % f.Cgb, block = RS * bc * bk;
        float *acc = sums + pair * block;
        for (int64_t part = 1; part < parts; part++) {
            const float *o = sums + part * r16(f.wsize) + pair * block;
            for (int64_t i = 0; i < block; i++) acc[i] += o[i];
        }
        for (int64_t k = 0; k < bk; k++) {
            float *drow = dw + ((kb * bk + k) * Cg + cg * bc) * RS; /* [bc][RS] */
            const float *src = acc + k * bc;                        /* (tap j, c) at src[j*bc*bk + c] */
            if (RS <= 16)
                for (int64_t c = 0; c < bc; c += 16)
                    tile_transpose(src + c, bc * bk, RS, 16, drow + c * RS, RS, TILE_ADD, NULL);
            else
                for (int64_t c = 0; c < bc; c++)
                    for (int64_t j = 0; j < RS; j++) drow[c * RS + j] += src[j * bc * bk + c];
        }
    }
    return true;
}

/* ---------------------------------------------------------------------------------------------------
 * Channel-lane kernel for small groups: C/G == K/G == q in {1, 2, 4, 8} and C a multiple of 16. A block
 * of 16 channels (g = 16/q whole groups) fills the 16 lanes of a vector, so every FMA is useful: no GEMM
 * with 1..8-wide dimensions, no zero-padded weight blocks, no junk columns. The lanes are interleaved:
 * lane l holds channel m(l) = (l % g)*q + l/g of the block (channel l/g of group l % g), so that channel
 * j of every lane's group, perm_j(v)[l] = v[j*g + l % g], is segment j (g floats) of v repeated: one
 * broadcast load (vbroadcastss / sd / f32x4 / f32x8), no shuffle. Copies in and out go through m.
 *   forward  y[k0+m(l), ho, wo] = sum_{j,r,t} w[k0+m(l), j, r, t] * perm_j(xb)[ho*sh + r*dh][wo*sw + t*dw][l]
 *   data     dx[c0+m(l), hi, wi] += sum_{i,r,t} w[c0 + (l%g)*q + i, l/g, R-1-r, S-1-t] *
 *                                              perm_i(dyb)[hi + r*dh][wi + t*dw][l]     (stride 1)
 *   weight   dw[k0+m(l), j, r, t] += sum_{n,ho,wo} dy[n, k0+m(l), ho, wo] *
 *                                                  perm_j(xb)[ho*sh + r*dh][wo*sw + t*dw][l]
 * with xb, dyb padded blocked copies as in the brgemm kernel, one block at a time (to_blocked_map).
 * Horizontal stride and dilation 1 with S in {1, 3, 5, 7} (the usual case) keep each input row's
 * broadcast pixels in registers for all S taps; other geometries go through q broadcast copies of the
 * block. Threads: (block, sample) tasks for the forward and data gradient, blocks for the weight gradient
 * (each sums its samples in order, per-sample float sums added into doubles). Output rows are computed 2
 * rows x 8 pixels at a time in registers and transposed out with tile_transpose_map. */

typedef float v16 __attribute__((vector_size(64)));
typedef float v8f __attribute__((vector_size(32)));
typedef double v8d __attribute__((vector_size(64)));

static inline v16 ld16(const float *p) {
    v16 v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void st16(float *p, v16 v) { memcpy(p, &v, sizeof v); }

typedef struct lane_geom {
    int64_t q, g, nb, RS, Hp, Wp, Hq, Wq, at, al;
    int64_t plane;      /* floats of one blocked plane, with slack for the register blocks */
    int64_t per_thread; /* floats */
    int32_t map[16];    /* m(l) */
    int64_t off[GG_CONV_DIRECT_MAX_TAPS];
} lane_geom;

bool gg__conv2d_lanes_supports(const gg_conv2d_shape *s, bool data_pass) {
    const int64_t q = s->C / s->G;
    if (s->K != s->C || (q != 1 && q != 2 && q != 4 && q != 8) || s->C % 16 ||
        s->R * s->S > GG_CONV_DIRECT_MAX_TAPS)
        return false;
    return !data_pass || (s->str_h == 1 && s->str_w == 1);
}

static void lane_geometry(const gg_conv2d_shape *s, lane_geom *f) {
    f->q = s->C / s->G, f->g = 16 / f->q, f->nb = s->C / 16, f->RS = s->R * s->S;
    f->Hp = (s->Ho - 1) * s->str_h + (s->R - 1) * s->dil_h + 1;
    f->Wp = (s->Wo - 1) * s->str_w + (s->S - 1) * s->dil_w + 1;
    f->Hq = s->H + (s->R - 1) * s->dil_h, f->Wq = s->W + (s->S - 1) * s->dil_w;
    f->at = (s->R - 1) * s->dil_h - s->pad_t, f->al = (s->S - 1) * s->dil_w - s->pad_l;
    /* slack: a register block reaches 16 pixels and one row past the last output row */
    const int64_t pix = imax(imax(f->Hp * f->Wp, f->Hq * f->Wq), s->Ho * (s->Wo + 8)) + 16 * s->str_w +
                        s->str_h * imax(f->Wp, f->Wq);
    f->plane = r16(pix * 16);
    /* blocked plane, q broadcast planes, blocked dy (weight gradient), 2 output rows, double sums */
    f->per_thread =
        (2 + f->q) * f->plane + r16(2 * round_up(imax(s->Wo, s->W), 8) * 16) + 2 * r16(f->q * f->RS * 16);
    for (int l = 0; l < 16; l++) f->map[l] = (int32_t)(l % f->g * f->q + l / f->g);
    for (int64_t j = 0; j < f->RS; j++) f->off[j] = j / s->S * s->dil_h * f->Wp + j % s->S * s->dil_w;
}

size_t gg__conv2d_lanes_workspace(const gg_conv2d_shape *s) {
    lane_geom f;
    lane_geometry(s, &f);
    return (size_t)(r16(s->K * f.q * f.RS) + gg_get_num_threads() * f.per_thread) * sizeof(float);
}

/* perm_j of the pixel vector at p: its G-float segment j repeated (G = 16/q, a constant after inlining;
 * G == 16 is the vector itself). */
static inline __attribute__((always_inline)) v16 lane_bcast(const float *p, int64_t j, int G) {
#if defined(__AVX512F__) && defined(__AVX512DQ__)
    switch (G) {
    case 1:
        return (v16)_mm512_set1_ps(p[j]);
    case 2: { /* a may_alias double so that it folds into vbroadcastsd m64 (a plain load) */
        typedef double alias_double __attribute__((may_alias, aligned(4)));
        return (v16)_mm512_castpd_ps(_mm512_set1_pd(*(const alias_double *)(const void *)(p + 2 * j)));
    }
    case 4:
        return (v16)_mm512_broadcast_f32x4(_mm_loadu_ps(p + 4 * j));
    case 8:
        return (v16)_mm512_broadcast_f32x8(_mm256_loadu_ps(p + 8 * j));
    default:
        return ld16(p);
    }
#else
    v16 r;
    for (int l = 0; l < 16; l++) r[l] = p[j * G % 16 + l % G];
    return r;
#endif
}

/* xe + j*plane = perm_j of the npix pixel vectors at xb, for j < q (q > 1). */
static void lane_copies(const float *xb, int64_t npix, int64_t q, int64_t plane, float *xe) {
    for (int64_t j = 0; j < q; j++) {
        float *d = xe + j * plane;
        switch (q) {
        case 2:
            for (int64_t p = 0; p < npix; p++) st16(d + p * 16, lane_bcast(xb + p * 16, j, 8));
            break;
        case 4:
            for (int64_t p = 0; p < npix; p++) st16(d + p * 16, lane_bcast(xb + p * 16, j, 4));
            break;
        default:
            for (int64_t p = 0; p < npix; p++) st16(d + p * 16, lane_bcast(xb + p * 16, j, 2));
            break;
        }
    }
}

/* Generic geometry, a block of 2 rows x 8 pixels:
 *   out[i*ostride + p*16 ..] = init + sum_{j < q, taps} wv[j*RS + tap] * xe[j*plane + (base + i*rstep +
 *                                                                              off[tap] + p*step)*16]
 * stored for i < nr, p < np; the other accumulators read slack and are dropped. xe: the q broadcast
 * planes (the blocked plane itself when q == 1). */
static inline void lane_block(float *out, int64_t ostride, int64_t nr, int64_t np, v16 init, const float *wv,
                              int64_t q, int64_t RS, const int64_t *off, const float *xe, int64_t plane,
                              int64_t base, int64_t rstep, int64_t step) {
    v16 acc[2][8];
    for (int i = 0; i < 2; i++)
        for (int p = 0; p < 8; p++) acc[i][p] = init;
    for (int64_t j = 0; j < q; j++)
        for (int64_t t = 0; t < RS; t++) {
            const v16 wt = ld16(wv + (j * RS + t) * 16);
            const float *xp = xe + j * plane + (base + off[t]) * 16;
            for (int i = 0; i < 2; i++)
                for (int p = 0; p < 8; p++) acc[i][p] += wt * ld16(xp + (i * rstep + p * step) * 16);
        }
    for (int64_t i = 0; i < nr; i++)
        for (int64_t p = 0; p < np; p++) st16(out + i * ostride + p * 16, acc[i][p]);
}

/* Horizontal stride and dilation 1; S taps per kernel row and G = 16/q are constants after inlining. A
 * block of 2 rows x 8 pixels: for each (j, r) and row, the 8 + S - 1 input pixels are broadcast-loaded
 * once into registers and used by the S taps (16 accumulators + 8 + S - 1 inputs + a weight fit the 32
 * registers for S <= 7).
 *   out[i*ostride + p*16 ..] = init + sum_{j, r, t} wv[(j*R + r)*S + t] * perm_j(xb)[base + i*rstep + r*tstep
 * + p + t] */
static inline __attribute__((always_inline)) void lane_block_s1(float *out, int64_t ostride, int64_t nr,
                                                                int64_t np, v16 init, const float *wv,
                                                                int64_t R, const float *xb, int64_t base,
                                                                int64_t rstep, int64_t tstep, int S, int G) {
    const int64_t q = 16 / G;
    v16 acc[2][8];
    for (int i = 0; i < 2; i++)
        for (int p = 0; p < 8; p++) acc[i][p] = init;
    for (int64_t j = 0; j < q; j++)
        for (int64_t r = 0; r < R; r++)
            for (int i = 0; i < 2; i++) {
                const float *xr = xb + (base + i * rstep + r * tstep) * 16;
                v16 X[8 + 6];
                for (int u = 0; u < 8 + S - 1; u++) {
                    X[u] = lane_bcast(xr + u * 16, j, G);
#if defined(__GNUC__) && defined(__AVX512F__)
                    __asm__("" : "+v"(X[u])); /* loaded once, used by S taps: not folded into the FMAs */
#endif
                }
                for (int t = 0; t < S; t++) {
                    const v16 wt = ld16(wv + ((j * R + r) * S + t) * 16);
                    for (int p = 0; p < 8; p++) acc[i][p] += wt * X[p + t];
                }
            }
    for (int64_t i = 0; i < nr; i++)
        for (int64_t p = 0; p < np; p++) st16(out + i * ostride + p * 16, acc[i][p]);
}

/* lane_block_s1 for the runtime S (1, 3, 5, 7) and q. */
static void lane_block_s1_any(float *out, int64_t ostride, int64_t nr, int64_t np, v16 init, const float *wv,
                              int64_t q, int64_t R, int64_t S, const float *xb, int64_t base, int64_t rstep,
                              int64_t tstep) {
#define LB(SS, GG) lane_block_s1(out, ostride, nr, np, init, wv, R, xb, base, rstep, tstep, SS, GG)
#define LB_S(GG)   \
    switch (S) {   \
    case 1:        \
        LB(1, GG); \
        break;     \
    case 3:        \
        LB(3, GG); \
        break;     \
    case 5:        \
        LB(5, GG); \
        break;     \
    default:       \
        LB(7, GG); \
        break;     \
    }
    switch (q) {
    case 1:
        LB_S(16);
        break;
    case 2:
        LB_S(8);
        break;
    case 4:
        LB_S(4);
        break;
    default:
        LB_S(2);
        break;
    }
#undef LB_S
#undef LB
}

/* Where lane_block_s1 applies: horizontal stride and dilation 1, S in {1, 3, 5, 7}. */
static bool lane_s1(const gg_conv2d_shape *s) {
    return s->str_w == 1 && s->dil_w == 1 && (s->S == 1 || s->S == 3 || s->S == 5 || s->S == 7);
}

/* Where a block reads its input: s1 (lane_block_s1 on the blocked plane xb, output rows rstep pixels
 * apart, kernel rows tstep apart) or the generic lane_block on the broadcast planes xe (tap offsets
 * off[], output pixels step apart). */
typedef struct lane_src {
    bool s1;
    const float *xb, *xe;
    int64_t plane, rstep, tstep, step, R, S;
    const int64_t *off;
} lane_src;

/* One block's output plane: rows [0, n_rows) of `width` pixels computed two rows at a time into `row`
 * ([2][width][16]), each row transposed through the lane map into dst (planes pstride floats apart, rows of
 * `width`): stored (forward; the bias is in init) or added (data gradient). */
static void lane_plane(float *row, int64_t n_rows, int64_t width, v16 init, const float *wv, int64_t q,
                       const lane_src *a, const int32_t *map, float *dst, int64_t pstride, int op) {
    for (int64_t h = 0; h < n_rows; h += 2) {
        const int64_t nr = imin(2, n_rows - h);
        /* the 16 planes' rows this block writes: fetched while it computes (add: read, store: own) */
        for (int64_t i = 0; i < nr; i++)
            for (int l = 0; l < 16; l++)
                for (int64_t j = 0; j < width; j += 16)
                    __builtin_prefetch(dst + l * pstride + (h + i) * width + j, 1);
        for (int64_t p = 0; p < width; p += 8) {
            const int64_t np = imin(8, width - p), base = h * a->rstep + p * a->step;
            if (a->s1)
                lane_block_s1_any(row + p * 16, width * 16, nr, np, init, wv, q, a->R, a->S, a->xb, base,
                                  a->rstep, a->tstep);
            else
                lane_block(row + p * 16, width * 16, nr, np, init, wv, q, a->R * a->S, a->off, a->xe,
                           a->plane, base, a->rstep, a->step);
        }
        for (int64_t i = 0; i < nr; i++)
            for (int64_t j = 0; j < width; j += 16)
                tile_transpose_map(row + (i * width + j) * 16, 16, imin(16, width - j), 16,
                                   dst + (h + i) * width + j, pstride, op, NULL, NULL, map);
    }
}

bool gg__conv2d_fwd_lanes(const gg_conv2d_shape *s, const float *x, const float *w, const float *b, float *y,
                          void *ws) {
    if (!gg__conv2d_lanes_supports(s, false)) return false;
    lane_geom f;
    lane_geometry(s, &f);
    const int64_t q = f.q, RS = f.RS, HW = s->H * s->W, P = s->Ho * s->Wo;
    float *wv = ws; /* [block][j][tap][lane] */
    for (int64_t cb = 0; cb < f.nb; cb++)
        for (int64_t j = 0; j < q; j++)
            for (int64_t t = 0; t < RS; t++)
                for (int l = 0; l < 16; l++)
                    wv[((cb * q + j) * RS + t) * 16 + l] = w[((cb * 16 + f.map[l]) * q + j) * RS + t];
#pragma omp parallel num_threads(gg_get_num_threads()) if (s->N * s->K * P * q * RS > PAR_MIN)
    {
        float *xb = (float *)ws + r16(s->K * q * RS) + thread_id() * f.per_thread, *xe = xb + f.plane;
        float *row = xe + (q + 1) * f.plane;
        const lane_src a = {.s1 = lane_s1(s),
                            .xb = xb,
                            .xe = q > 1 ? xe : xb,
                            .plane = f.plane,
                            .rstep = s->str_h * f.Wp,
                            .tstep = s->dil_h * f.Wp,
                            .step = s->str_w,
                            .R = s->R,
                            .S = s->S,
                            .off = f.off};
#pragma omp for schedule(static)
        for (int64_t task = 0; task < f.nb * s->N; task++) {
            const int64_t cb = task / s->N, n = task % s->N;
            to_blocked_map(x + (n * s->C + cb * 16) * HW, s->H, s->W, 16, f.Hp, f.Wp, s->pad_t, s->pad_l, xb,
                           f.map);
            if (!a.s1 && q > 1) lane_copies(xb, f.Hp * f.Wp, q, f.plane, xe);
            v16 init = {0};
            if (b)
                for (int l = 0; l < 16; l++) init[l] = b[cb * 16 + f.map[l]];
            lane_plane(row, s->Ho, s->Wo, init, wv + cb * q * RS * 16, q, &a, f.map,
                       y + (n * s->K + cb * 16) * P, P, TILE_STORE);
        }
    }
    return true;
}

bool gg__conv2d_bwd_data_lanes(const gg_conv2d_shape *s, const float *dy, const float *w, float *dx,
                               void *ws) {
    if (!gg__conv2d_lanes_supports(s, true)) return false;
    lane_geom f;
    lane_geometry(s, &f);
    const int64_t q = f.q, g = f.g, RS = f.RS, HW = s->H * s->W, P = s->Ho * s->Wo;
    int64_t off[GG_CONV_DIRECT_MAX_TAPS];
    for (int64_t j = 0; j < RS; j++) off[j] = j / s->S * s->dil_h * f.Wq + j % s->S * s->dil_w;
    float *wv = ws; /* [block][i][tap'][lane]: w[c0 + (l%g)*q + i, l/g, flipped tap] */
    for (int64_t cb = 0; cb < f.nb; cb++)
        for (int64_t i = 0; i < q; i++)
            for (int64_t t = 0; t < RS; t++)
                for (int l = 0; l < 16; l++)
                    wv[((cb * q + i) * RS + t) * 16 + l] =
                        w[((cb * 16 + l % g * q + i) * q + l / g) * RS + RS - 1 - t];
#pragma omp parallel num_threads(gg_get_num_threads()) if (s->N * s->K * P * q * RS > PAR_MIN)
    {
        float *db = (float *)ws + r16(s->K * q * RS) + thread_id() * f.per_thread, *de = db + f.plane;
        float *row = de + (q + 1) * f.plane;
        const v16 zero = {0};
        const lane_src a = {.s1 = lane_s1(s),
                            .xb = db,
                            .xe = q > 1 ? de : db,
                            .plane = f.plane,
                            .rstep = f.Wq,
                            .tstep = s->dil_h * f.Wq,
                            .step = 1,
                            .R = s->R,
                            .S = s->S,
                            .off = off};
#pragma omp for schedule(static)
        for (int64_t task = 0; task < f.nb * s->N; task++) {
            const int64_t cb = task / s->N, n = task % s->N;
            to_blocked_map(dy + (n * s->K + cb * 16) * P, s->Ho, s->Wo, 16, f.Hq, f.Wq, f.at, f.al, db,
                           f.map);
            if (!a.s1 && q > 1) lane_copies(db, f.Hq * f.Wq, q, f.plane, de);
            lane_plane(row, s->H, s->W, zero, wv + cb * q * RS * 16, q, &a, f.map,
                       dx + (n * s->C + cb * 16) * HW, HW, TILE_ADD);
        }
    }
    return true;
}

/* Generic geometry: sums[tt] += lanes of sum_{ho, wo} d[ho][wo] * xe[(ho*sh*Wp + wo*sw + off[tt])*16] for
 * tt < 9. */
static void lane_tap_dots(const float *d, int64_t Ho, int64_t Wo, const float *xe, int64_t Wp, int64_t sh,
                          int64_t sw, const int64_t *off, v16 *sums) {
    v16 acc[9];
    for (int t = 0; t < 9; t++) acc[t] = (v16){0};
    for (int64_t ho = 0; ho < Ho; ho++)
        for (int64_t wo = 0; wo < Wo; wo++) {
            const v16 dv = ld16(d + (ho * Wo + wo) * 16);
            const float *xp = xe + (ho * sh * Wp + wo * sw) * 16;
            for (int t = 0; t < 9; t++) acc[t] += dv * ld16(xp + off[t] * 16);
        }
    for (int t = 0; t < 9; t++) sums[t] += acc[t];
}

/* Horizontal stride and dilation 1; S taps per kernel row, G = 16/q, NP pixels per block and NA
 * accumulator copies per tap are constants after inlining: for each kernel row r,
 *   sums[r*S + t] += lanes of sum over output pixels (ho, wo) of d[ho][wo] * perm_j(xb)[ho*rstep + r*tstep +
 * wo + t] with the NP dy vectors and NP + S - 1 broadcast inputs of a block in registers, pixel p feeding
 * copy p % NA (S*NA chains hide the FMA latency). d is [Ho][Wd][16] with zero columns past Wo up to Wd, a
 * multiple of NP. */
static inline __attribute__((always_inline)) void lane_wgrad_s1(const float *d, int64_t Ho, int64_t Wd,
                                                                const float *xb, int64_t rstep, int64_t tstep,
                                                                int64_t R, int64_t j, v16 *sums, int S, int G,
                                                                int NP, int NA) {
    for (int64_t r = 0; r < R; r++) {
        v16 acc[7][8];
        for (int t = 0; t < S; t++)
            for (int a = 0; a < NA; a++) acc[t][a] = (v16){0};
        for (int64_t ho = 0; ho < Ho; ho++)
            for (int64_t wo = 0; wo < Wd; wo += NP) {
                const float *xr = xb + (ho * rstep + r * tstep + wo) * 16, *dr = d + (ho * Wd + wo) * 16;
                v16 D[8], X[8 + 6];
                for (int p = 0; p < NP; p++) {
                    D[p] = ld16(dr + p * 16);
#if defined(__GNUC__) && defined(__AVX512F__)
                    /* keep the dy vectors in registers: folded into the FMAs they would be reloaded S
                     * times, and the loads (not the FMAs) would bound the loop */
                    __asm__("" : "+v"(D[p]));
#endif
                }
                for (int u = 0; u < NP + S - 1; u++) {
                    X[u] = lane_bcast(xr + u * 16, j, G);
#if defined(__GNUC__) && defined(__AVX512F__)
                    __asm__("" : "+v"(X[u])); /* loaded once, used by S taps: not folded into the FMAs */
#endif
                }
                for (int p = 0; p < NP; p++)
                    for (int t = 0; t < S; t++) acc[t][p % NA] += D[p] * X[p + t];
            }
        for (int t = 0; t < S; t++) {
            v16 v = acc[t][0];
            for (int a = 1; a < NA; a++) v += acc[t][a];
            sums[r * S + t] += v;
        }
    }
}

/* The s1 weight-gradient sums of input channel j (sums [R*S]) for the runtime S (1, 3, 5, 7) and q. */
static void lane_wgrad_s1_any(const float *d, int64_t Ho, int64_t Wd, const float *xb, int64_t rstep,
                              int64_t tstep, int64_t R, int64_t S, int64_t q, int64_t j, v16 *sums) {
#define LW(SS, GG, NP, NA) lane_wgrad_s1(d, Ho, Wd, xb, rstep, tstep, R, j, sums, SS, GG, NP, NA)
#define LW_S(GG)         \
    switch (S) {         \
    case 1:              \
        LW(1, GG, 8, 8); \
        break;           \
    case 3:              \
        LW(3, GG, 8, 4); \
        break;           \
    case 5:              \
        LW(5, GG, 8, 2); \
        break;           \
    default:             \
        LW(7, GG, 4, 2); \
        break;           \
    }
    switch (q) {
    case 1:
        LW_S(16);
        break;
    case 2:
        LW_S(8);
        break;
    case 4:
        LW_S(4);
        break;
    default:
        LW_S(2);
        break;
    }
#undef LW_S
#undef LW
}

bool gg__conv2d_bwd_weight_lanes(const gg_conv2d_shape *s, const float *x, const float *dy, float *dw,
                                 void *ws) {
    if (!gg__conv2d_lanes_supports(s, false)) return false;
    lane_geom f;
    lane_geometry(s, &f);
    const int64_t q = f.q, RS = f.RS, HW = s->H * s->W, P = s->Ho * s->Wo;
    const bool s1 = lane_s1(s);
    /* dy blocks padded with zero columns to a multiple of 8 pixels on the s1 path */
    const int64_t Wd = s1 ? round_up(s->Wo, 8) : s->Wo;
#pragma omp parallel num_threads(gg_get_num_threads()) if (s->N * s->K * P * q * RS > PAR_MIN)
    {
        float *xb = (float *)ws + r16(s->K * q * RS) + thread_id() * f.per_thread, *xe = xb + f.plane;
        float *dyb = xe + q * f.plane;
        double *sums = (double *)(void *)(dyb + f.plane + r16(2 * round_up(imax(s->Wo, s->W), 8) * 16));
        /* the s1 path multiplies the zero dy columns with what lies past the rows (slack): keep it finite */
        memset(xb, 0, (size_t)f.plane * sizeof(float));
#pragma omp for schedule(static)
        for (int64_t cb = 0; cb < f.nb; cb++) {
            memset(sums, 0, (size_t)(q * RS * 16) * sizeof(double));
            for (int64_t n = 0; n < s->N; n++) {
                to_blocked_map(x + (n * s->C + cb * 16) * HW, s->H, s->W, 16, f.Hp, f.Wp, s->pad_t, s->pad_l,
                               xb, f.map);
                to_blocked_map(dy + (n * s->K + cb * 16) * P, s->Ho, s->Wo, 16, s->Ho, Wd, 0, 0, dyb, f.map);
                if (!s1 && q > 1) lane_copies(xb, f.Hp * f.Wp, q, f.plane, xe);
                for (int64_t j = 0; j < q; j++) {
                    v16 part[GG_CONV_DIRECT_MAX_TAPS];
                    for (int64_t t = 0; t < RS; t++) part[t] = (v16){0};
                    if (s1)
                        lane_wgrad_s1_any(dyb, s->Ho, Wd, xb, s->str_h * f.Wp, s->dil_h * f.Wp, s->R, s->S, q,
                                          j, part);
                    else
                        for (int64_t t0 = 0; t0 < RS; t0 += 9) {
                            int64_t off[9] = {0};
                            for (int64_t tt = 0; tt < imin(9, RS - t0); tt++) off[tt] = f.off[t0 + tt];
                            v16 p9[9];
                            for (int tt = 0; tt < 9; tt++) p9[tt] = (v16){0};
                            lane_tap_dots(dyb, s->Ho, s->Wo, (q > 1 ? xe : xb) + j * f.plane, f.Wp, s->str_h,
                                          s->str_w, off, p9);
                            for (int64_t tt = 0; tt < imin(9, RS - t0); tt++) part[t0 + tt] = p9[tt];
                        }
                    /* this sample's float sums into the doubles */
                    for (int64_t t = 0; t < RS; t++) {
                        double *sd = sums + (j * RS + t) * 16;
                        v8d lo, hi;
                        v8f a, c;
                        memcpy(&a, &part[t], sizeof a);
                        memcpy(&c, (const char *)&part[t] + sizeof a, sizeof c);
                        memcpy(&lo, sd, sizeof lo);
                        memcpy(&hi, sd + 8, sizeof hi);
                        lo += __builtin_convertvector(a, v8d);
                        hi += __builtin_convertvector(c, v8d);
                        memcpy(sd, &lo, sizeof lo);
                        memcpy(sd + 8, &hi, sizeof hi);
                    }
                }
            }
            for (int l = 0; l < 16; l++)
                for (int64_t j = 0; j < q; j++)
                    for (int64_t t = 0; t < RS; t++)
                        dw[((cb * 16 + f.map[l]) * q + j) * RS + t] += (float)sums[(j * RS + t) * 16 + l];
        }
    }
    return true;
}

/* ---------------------------------------------------------------------------------------------------
 * Masked-plane kernel for small groups on same-size outputs (stride 1, Ho == H, Wo == W: 'same'
 * padding), AVX-512 only: every plane is read in place, as flat vectors of 16 pixels; tap (r, t) is a
 * constant shift of the flat index, and a per-(vector, tap) lane mask zeroes the lanes whose input lies
 * outside the plane (the padding). No copies, no transposes, no junk columns:
 *   forward  y[k][p] = b[k] + sum_{j < C/G, taps} w[k][j][tap] * x[g*C/G + j][p + shift(tap)]  (masked)
 *   data     dx[c][p] += sum_{kk < K/G, taps} w[g*K/G + kk][c - g*C/G][tap] * dy[g*K/G + kk][p - shift(tap)]
 *   weight   dw[k][j][tap] += sum_{n, p} dy[n][k][p] * x[n][g*C/G + j][p + shift(tap)]
 * Register blocks: 4 output planes x 4 vectors (16 accumulators). Within a group the output planes share
 * each loaded input vector; with one output channel per group (depthwise) the 4 planes are 4 groups, each
 * with its own input. Threads: (n, block of output planes) tasks; the weight gradient takes blocks of
 * output channels and sums the samples in order (float vector sums per block, lanes reduced in double). */

#if defined(__AVX512F__)
#define MASKED_MAX_VEC 256 /* planes up to 4096 pixels */

bool gg__conv2d_masked_supports(const gg_conv2d_shape *s) {
    const int64_t Cg = s->C / s->G, Kg = s->K / s->G;
    return s->str_h == 1 && s->str_w == 1 && s->Ho == s->H && s->Wo == s->W &&
           (s->H * s->W + 15) / 16 <= MASKED_MAX_VEC && s->R * s->S <= GG_CONV_DIRECT_MAX_TAPS && Cg <= 16 &&
           Kg <= 16;
}

typedef struct masked_geom {
    int64_t HW, nvec, nvec4, RS, Cg, Kg;
    int64_t shift[GG_CONV_DIRECT_MAX_TAPS];
    __mmask16 last; /* valid lanes of the last vector */
} masked_geom;

/* Shifts and masks m[tap*nvec4 + v] of the forward (data: the transposed taps, input = dy); vectors past
 * the plane (up to nvec4, a multiple of 4) have empty masks. Row RS is all zero (padding taps), row RS + 1
 * the valid lanes of each output vector. */
static void masked_geometry(const gg_conv2d_shape *s, bool data, masked_geom *f, __mmask16 *m) {
    f->HW = s->H * s->W, f->nvec = (f->HW + 15) / 16, f->nvec4 = round_up(f->nvec, 4), f->RS = s->R * s->S;
    f->Cg = s->C / s->G, f->Kg = s->K / s->G;
    f->last = (__mmask16)(f->HW % 16 ? (1u << (f->HW % 16)) - 1u : 0xffffu);
    for (int64_t tap = 0; tap < f->RS; tap++) {
        const int64_t r = tap / s->S, t = tap % s->S;
        const int64_t dr = data ? s->pad_t - r * s->dil_h : r * s->dil_h - s->pad_t;
        const int64_t dc = data ? s->pad_l - t * s->dil_w : t * s->dil_w - s->pad_l;
        f->shift[tap] = dr * s->W + dc;
        for (int64_t v = 0; v < f->nvec4; v++) {
            unsigned mask = 0;
            for (int l = 0; l < 16; l++) {
                const int64_t p = v * 16 + l, h = p / s->W + dr, c = p % s->W + dc;
                if (p < f->HW && h >= 0 && h < s->H && c >= 0 && c < s->W) mask |= 1u << l;
            }
            m[tap * f->nvec4 + v] = (__mmask16)mask;
        }
    }
    for (int64_t v = 0; v < f->nvec4; v++) {
        m[f->RS * f->nvec4 + v] = 0;
        m[(f->RS + 1) * f->nvec4 + v] = v < f->nvec - 1 ? (__mmask16)0xffff : v == f->nvec - 1 ? f->last : 0;
    }
}

/* Bytes of the mask table at the start of the workspace (64-byte multiple). */
static int64_t masked_mask_bytes(const gg_conv2d_shape *s) {
    return round_up((MASKED_MAX_VEC + 4) * (s->R * s->S + 2) * (int64_t)sizeof(__mmask16), 64);
}

size_t gg__conv2d_masked_workspace(const gg_conv2d_shape *s) {
    const int64_t RS = s->R * s->S, Cg = s->C / s->G, Kg = s->K / s->G;
    /* masks, then per thread the packed weights of a block ([16][RS][4] floats) or the weight-gradient
     * sums ([8][Cg][RS rounded up to 2 or 9] vectors) */
    const int64_t per_thread = imax(4 * 16 * RS * 4, 8 * imax(Cg, Kg) * (RS + 8) * 64);
    return (size_t)(masked_mask_bytes(s) + gg_get_num_threads() * per_thread);
}

/* Output planes o < 4 (weights of o >= no are zero, its results dropped), vectors v0 .. v0+3:
 *   out[o*HW + p] (op)= init[o] + sum_{i < n_in, tap} wt[(i*RS + tap)*4 + o] * in[o*ios + i*HW + p +
 * shift[tap]] (masked). SHARED (ios == 0): one load feeds the 4 planes. wt: the block's weights packed
 * [i][tap][4]. */
static inline __attribute__((always_inline)) void masked_block(float *out, int64_t no, int64_t v0,
                                                               const float *in, int64_t ios, int64_t n_in,
                                                               const masked_geom *f, const __mmask16 *m,
                                                               const float *wt, const float *init, bool add,
                                                               bool SHARED) {
    const int64_t RS = f->RS, HW = f->HW, nvec4 = f->nvec4, nvec = f->nvec;
    __m512 acc[4][4];
    for (int o = 0; o < 4; o++) {
        const __m512 a = _mm512_set1_ps(init && o < no ? init[o] : 0.0f);
        for (int v = 0; v < 4; v++) acc[o][v] = a;
    }
    for (int64_t i = 0; i < n_in; i++) {
        const float *ip = in + i * HW + v0 * 16;
        for (int64_t tap = 0; tap < RS; tap++) {
            const float *xp = ip + f->shift[tap], *wp = wt + (i * RS + tap) * 4;
            const __mmask16 *mp = m + tap * nvec4 + v0;
            if (SHARED) {
                __m512 xs[4];
                for (int v = 0; v < 4; v++) xs[v] = _mm512_maskz_loadu_ps(mp[v], xp + v * 16);
                for (int o = 0; o < 4; o++) {
                    const __m512 w = _mm512_set1_ps(wp[o]);
                    for (int v = 0; v < 4; v++) acc[o][v] = _mm512_fmadd_ps(w, xs[v], acc[o][v]);
                }
            } else {
                for (int o = 0; o < 4; o++) {
                    const __m512 w = _mm512_set1_ps(wp[o]);
                    for (int v = 0; v < 4; v++)
                        acc[o][v] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(mp[v], xp + o * ios + v * 16),
                                                    acc[o][v]);
                }
            }
        }
    }
    for (int o = 0; o < 4; o++) {
        if (o >= no) break;
        for (int v = 0; v < 4; v++) {
            if (v0 + v >= nvec) break;
            float *d = out + o * HW + (v0 + v) * 16;
            const __mmask16 sm = v0 + v == nvec - 1 ? f->last : (__mmask16)0xffff;
            __m512 r = acc[o][v];
            if (add) r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(sm, d));
            _mm512_mask_storeu_ps(d, sm, r);
        }
    }
}

/* All vectors of a block of no <= 4 output planes. Weights of output o and input i at
 * wt[o*wos + i*wis + tap], packed into wpack ([n_in][RS][4]) first. With ios != 0, each output reads its own
 * inputs (in + o*ios) and the planes of a group of masks that read beyond the tensor stay masked. */
static void masked_planes(float *out, int64_t no, const float *in, int64_t ios, int64_t n_in,
                          const masked_geom *f, const __mmask16 *m, const float *wt, int64_t wos, int64_t wis,
                          const float *init, bool add, float *wpack) {
    const int64_t RS = f->RS;
    for (int64_t i = 0; i < n_in; i++)
        for (int64_t tap = 0; tap < RS; tap++)
            for (int o = 0; o < 4; o++)
                wpack[(i * RS + tap) * 4 + o] = o < no ? wt[o * wos + i * wis + tap] : 0.0f;
    if (ios == 0 || no == 1) { /* a single plane reads one input set: the shared loop */
        for (int64_t v0 = 0; v0 < f->nvec; v0 += 4)
            masked_block(out, no, v0, in, 0, n_in, f, m, wpack, init, add, true);
    } else {
        for (int64_t v0 = 0; v0 < f->nvec; v0 += 4)
            masked_block(out, no, v0, in, ios, n_in, f, m, wpack, init, add, false);
    }
}

bool gg__conv2d_fwd_masked(const gg_conv2d_shape *s, const float *x, const float *w, const float *b, float *y,
                           void *ws) {
    if (!gg__conv2d_masked_supports(s)) return false;
    masked_geom f;
    __mmask16 *m = ws;
    masked_geometry(s, false, &f, m);
    const int64_t Cg = f.Cg, Kg = f.Kg, RS = f.RS, HW = f.HW;
    /* blocks of 4 output channels of a group, or of 4 groups when each has one output channel */
    const bool per_group = Kg == 1;
    const int64_t kblocks = per_group ? (s->G + 3) / 4 : s->G * ((Kg + 3) / 4);
    float *wpacks = (float *)(void *)((char *)ws + masked_mask_bytes(s));
#pragma omp parallel num_threads(gg_get_num_threads()) if (s->N * s->K * HW * Cg * RS > PAR_MIN)
    {
        float *wpack = wpacks + thread_id() * 4 * 16 * RS;
#pragma omp for schedule(static)
        for (int64_t task = 0; task < s->N * kblocks; task++) {
            const int64_t n = task / kblocks, kb = task % kblocks;
            if (per_group) {
                const int64_t g0 = kb * 4, no = imin(4, s->G - g0);
                masked_planes(y + (n * s->K + g0) * HW, no, x + (n * s->C + g0 * Cg) * HW, Cg * HW, Cg, &f, m,
                              w + g0 * Cg * RS, Cg * RS, RS, b ? b + g0 : NULL, false, wpack);
            } else {
                const int64_t g = kb / ((Kg + 3) / 4), k0 = g * Kg + kb % ((Kg + 3) / 4) * 4;
                const int64_t no = imin(4, (g + 1) * Kg - k0);
                masked_planes(y + (n * s->K + k0) * HW, no, x + (n * s->C + g * Cg) * HW, 0, Cg, &f, m,
                              w + k0 * Cg * RS, Cg * RS, RS, b ? b + k0 : NULL, false, wpack);
            }
        }
    }
    return true;
}

bool gg__conv2d_bwd_data_masked(const gg_conv2d_shape *s, const float *dy, const float *w, float *dx,
                                void *ws) {
    if (!gg__conv2d_masked_supports(s)) return false;
    masked_geom f;
    __mmask16 *m = ws;
    masked_geometry(s, true, &f, m);
    const int64_t Cg = f.Cg, Kg = f.Kg, RS = f.RS, HW = f.HW;
    /* the forward with the roles of x and y swapped: outputs are the C/G input channels of a group, inputs
     * the K/G dy planes; weights w[g*Kg + i][j][tap] with the transposed taps (the shifts) */
    const bool per_group = Cg == 1;
    const int64_t cblocks = per_group ? (s->G + 3) / 4 : s->G * ((Cg + 3) / 4);
    float *wpacks = (float *)(void *)((char *)ws + masked_mask_bytes(s));
#pragma omp parallel num_threads(gg_get_num_threads()) if (s->N * s->K * HW * Cg * RS > PAR_MIN)
    {
        float *wpack = wpacks + thread_id() * 4 * 16 * RS;
#pragma omp for schedule(static)
        for (int64_t task = 0; task < s->N * cblocks; task++) {
            const int64_t n = task / cblocks, cb = task % cblocks;
            if (per_group) {
                const int64_t g0 = cb * 4, no = imin(4, s->G - g0);
                masked_planes(dx + (n * s->C + g0) * HW, no, dy + (n * s->K + g0 * Kg) * HW, Kg * HW, Kg, &f,
                              m, w + g0 * Kg * RS, Kg * RS, RS, NULL, true, wpack);
            } else {
                const int64_t g = cb / ((Cg + 3) / 4), j0 = cb % ((Cg + 3) / 4) * 4, no = imin(4, Cg - j0);
                masked_planes(dx + (n * s->C + g * Cg + j0) * HW, no, dy + (n * s->K + g * Kg) * HW, 0, Kg,
                              &f, m, w + (g * Kg * Cg + j0) * RS, RS, Cg * RS, NULL, true, wpack);
            }
        }
    }
    return true;
}

/* Weight-gradient sums of one sample for a block of output channels o < no (<= OB): for each input
 * channel j < Cg and tap,
 *   sums[(o*Cg + j)*RSp + tap] += lanes of sum_v dy_o[v] * x_{o,j}[v*16 + shift[tap]]   (masked)
 * with dy_o = dyo + o*HW and x_{o,j} = xi + o*xos + j*HW (xos 0: the block shares its group's inputs).
 * OB output channels x TB taps of accumulators (constants after inlining); taps past RS (up to RSp, a
 * multiple of TB) read nothing. */
static inline __attribute__((always_inline)) void masked_wsums(const float *dyo, int64_t no, const float *xi,
                                                               int64_t xos, const masked_geom *f,
                                                               const __mmask16 *m, __m512 *sums, int64_t RSp,
                                                               int OB, int TB) {
    const int64_t RS = f->RS, Cg = f->Cg, HW = f->HW, nvec = f->nvec, nvec4 = f->nvec4;
    const __mmask16 *valid = m + (RS + 1) * nvec4;
    __mmask16 om[8];
    for (int o = 0; o < OB; o++) om[o] = o < no ? (__mmask16)0xffff : 0;
    for (int64_t j = 0; j < Cg; j++)
        for (int64_t t0 = 0; t0 < RS; t0 += TB) {
            const __mmask16 *mt[9];
            const float *xp[9];
            for (int t = 0; t < TB; t++) {
                const int64_t tap = t0 + t;
                mt[t] = m + (tap < RS ? tap : RS) * nvec4;
                xp[t] = xi + j * HW + (tap < RS ? f->shift[tap] : 0);
            }
            __m512 acc[8][9];
            for (int o = 0; o < OB; o++)
                for (int t = 0; t < TB; t++) acc[o][t] = _mm512_setzero_ps();
            for (int64_t v = 0; v < nvec; v++) {
                __m512 d[8];
                for (int o = 0; o < OB; o++)
                    d[o] = _mm512_maskz_loadu_ps(valid[v] & om[o], dyo + o * HW + v * 16);
                for (int t = 0; t < TB; t++) {
                    if (xos == 0) {
                        const __m512 xs = _mm512_maskz_loadu_ps(mt[t][v], xp[t] + v * 16);
                        for (int o = 0; o < OB; o++) acc[o][t] = _mm512_fmadd_ps(d[o], xs, acc[o][t]);
                    } else
                        for (int o = 0; o < OB; o++) {
                            const __m512 xs =
                                _mm512_maskz_loadu_ps(mt[t][v] & om[o], xp[t] + o * xos + v * 16);
                            acc[o][t] = _mm512_fmadd_ps(d[o], xs, acc[o][t]);
                        }
                }
            }
            for (int o = 0; o < OB; o++)
                for (int t = 0; t < TB; t++) {
                    __m512 *sp = sums + (o * Cg + j) * RSp + t0 + t;
                    *sp = _mm512_add_ps(*sp, acc[o][t]);
                }
        }
}

/* Weight gradient: blocks of 8 output channels of a group sharing its inputs (2 taps of accumulators
 * each), or with one output channel per group (depthwise-like) blocks of 2 groups with 9 taps each. */
bool gg__conv2d_bwd_weight_masked(const gg_conv2d_shape *s, const float *x, const float *dy, float *dw,
                                  void *ws) {
    if (!gg__conv2d_masked_supports(s)) return false;
    masked_geom f;
    __mmask16 *m = ws;
    masked_geometry(s, false, &f, m);
    const int64_t Cg = f.Cg, Kg = f.Kg, RS = f.RS, HW = f.HW;
    const bool per_group = Kg == 1;
    const int OB = per_group ? 2 : 8, TB = per_group ? 9 : 2;
    const int64_t RSp = round_up(RS, TB), kpg = (Kg + OB - 1) / OB; /* blocks per group */
    const int64_t kblocks = per_group ? (s->G + OB - 1) / OB : s->G * kpg;
    __m512 *all_sums = (__m512 *)(void *)((char *)ws + masked_mask_bytes(s));
#pragma omp parallel num_threads(gg_get_num_threads()) if (s->N * s->K * HW * Cg * RS > PAR_MIN)
    {
        __m512 *sums = all_sums + thread_id() * 8 * imax(Cg, Kg) * (RS + 8);
#pragma omp for schedule(static)
        for (int64_t kb = 0; kb < kblocks; kb++) {
            int64_t k0, no;
            if (per_group) k0 = kb * OB, no = imin(OB, s->G - k0);
            else {
                const int64_t g = kb / kpg;
                k0 = g * Kg + kb % kpg * OB, no = imin(OB, (g + 1) * Kg - k0);
            }
            const int64_t c0 = k0 / Kg * Cg; /* first input channel of output k0's group */
            for (int64_t i = 0; i < OB * Cg * RSp; i++) sums[i] = _mm512_setzero_ps();
            for (int64_t n = 0; n < s->N; n++) {
                const float *dyo = dy + (n * s->K + k0) * HW, *xi = x + (n * s->C + c0) * HW;
                if (per_group) masked_wsums(dyo, no, xi, Cg * HW, &f, m, sums, RSp, 2, 9);
                else masked_wsums(dyo, no, xi, 0, &f, m, sums, RSp, 8, 2);
            }
            for (int64_t o = 0; o < no; o++)
                for (int64_t j = 0; j < Cg; j++)
                    for (int64_t tap = 0; tap < RS; tap++) {
                        float lanes[16];
                        _mm512_storeu_ps(lanes, sums[(o * Cg + j) * RSp + tap]);
                        double acc = 0.0;
                        for (int l = 0; l < 16; l++) acc += lanes[l];
                        dw[((k0 + o) * Cg + j) * RS + tap] += (float)acc;
                    }
        }
    }
    return true;
}
#else
bool gg__conv2d_masked_supports(const gg_conv2d_shape *s) {
    (void)s;
    return false;
}
size_t gg__conv2d_masked_workspace(const gg_conv2d_shape *s) {
    (void)s;
    return 0;
}
bool gg__conv2d_fwd_masked(const gg_conv2d_shape *s, const float *x, const float *w, const float *b, float *y,
                           void *ws) {
    (void)s, (void)x, (void)w, (void)b, (void)y, (void)ws;
    return false;
}
bool gg__conv2d_bwd_data_masked(const gg_conv2d_shape *s, const float *dy, const float *w, float *dx,
                                void *ws) {
    (void)s, (void)dy, (void)w, (void)dx, (void)ws;
    return false;
}
bool gg__conv2d_bwd_weight_masked(const gg_conv2d_shape *s, const float *x, const float *dy, float *dw,
                                  void *ws) {
    (void)s, (void)x, (void)dy, (void)dw, (void)ws;
    return false;
}
#endif

void gg__conv2d_bwd_bias(const gg_conv2d_shape *s, const float *dy, float *db) {
    const int64_t P = s->Ho * s->Wo;
#pragma omp parallel for schedule(static) num_threads(gg_get_num_threads()) if (s->N * s->K * P > PAR_MIN)
    for (int64_t k = 0; k < s->K; k++) {
        double acc = 0.0;
        for (int64_t n = 0; n < s->N; n++) {
            const float *p = dy + (n * s->K + k) * P;
#pragma omp simd reduction(+ : acc)
            for (int64_t i = 0; i < P; i++) acc += p[i];
        }
        db[k] += (float)acc;
    }
}
