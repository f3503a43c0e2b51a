/* Convolution kernels: the plain-C reference (the oracle), im2col + BLIS GEMM, and direct depthwise loops.
 * Shapes and conventions: gg_conv_kernels.h. Threads: OpenMP regions for the memory passes (im2col,
 * col2im, gathers, depthwise loops); BLIS is always called outside them and threads itself. */
#include <stdbool.h>
#include <string.h>

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
                    /* dw[k,c,r,t] = sum_{n,ho,wo} dy[n,k,ho,wo] * x[n, g*Cg+c, ho*sh-pt+r*dh, wo*sw-pl+t*dw] */
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
#pragma omp parallel for collapse(2) schedule(static) num_threads(gg_get_num_threads()) \
    if (rows * m * P > PAR_MIN)
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
static void col2im_add(const gg_conv2d_shape *s, const float *col, int64_t ld, int64_t g, int64_t n0, int64_t m,
                       float *dx) {
    const int64_t Cg = s->C / s->G, P = s->Ho * s->Wo, HW = s->H * s->W, sw = s->str_w;
#pragma omp parallel for collapse(2) schedule(static) num_threads(gg_get_num_threads()) \
    if (Cg * s->R * s->S * m * P > PAR_MIN)
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
static void gather_group(const gg_conv2d_shape *s, const float *t, int64_t g, int64_t n0, int64_t m, float *buf,
                         int64_t ld) {
    const int64_t Kg = s->K / s->G, P = s->Ho * s->Wo;
#pragma omp parallel for collapse(2) schedule(static) num_threads(gg_get_num_threads()) if (Kg * m * P > PAR_MIN)
    for (int64_t k = 0; k < Kg; k++)
        for (int64_t i = 0; i < m; i++)
            memcpy(buf + k * ld + i * P, t + ((n0 + i) * s->K + g * Kg + k) * P, (size_t)P * sizeof(float));
}

/* y[n0+i, g*Kg+k, :] = buf[k, i*P ...] + b[g*Kg+k]. */
static void scatter_group(const gg_conv2d_shape *s, const float *buf, int64_t ld, const float *b, int64_t g,
                          int64_t n0, int64_t m, float *y) {
    const int64_t Kg = s->K / s->G, P = s->Ho * s->Wo;
#pragma omp parallel for collapse(2) schedule(static) num_threads(gg_get_num_threads()) if (Kg * m * P > PAR_MIN)
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

void gg__conv2d_bwd_gemm(const gg_conv2d_shape *s, int64_t nb, const float *x, const float *w, const float *dy,
                         float *dx, float *dw, void *ws) {
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
 * Direct kernels for C/G == 1 (depthwise, channel multiplier Kg = K/C). Output channel k reads input
 * channel k / Kg. Each (n, c) plane, or each k for the weight gradient, is one OpenMP task that owns what
 * it writes; the rows are accumulated in place so the inner loops run over contiguous output columns. */

typedef struct tap_ranges {
    int64_t lo[GG_CONV_DW_MAX_TAPS], hi[GG_CONV_DW_MAX_TAPS], off[GG_CONV_DW_MAX_TAPS];
} tap_ranges;

/* Valid output column range and input column offset of each kernel column t. */
static void column_ranges(const gg_conv2d_shape *s, tap_ranges *tr) {
    for (int64_t t = 0; t < s->S; t++) {
        tr->off[t] = t * s->dil_w - s->pad_l;
        valid_range(s->Wo, s->W, s->str_w, tr->off[t], &tr->lo[t], &tr->hi[t]);
    }
}

void gg__conv2d_fwd_depthwise(const gg_conv2d_shape *s, const float *restrict x, const float *restrict w,
                              const float *restrict b, float *restrict y) {
    const int64_t Kg = s->K / s->G, P = s->Ho * s->Wo, HW = s->H * s->W, RS = s->R * s->S, sw = s->str_w;
    tap_ranges tr;
    column_ranges(s, &tr);
#pragma omp parallel for schedule(static) num_threads(gg_get_num_threads()) if (s->N * s->K * P * RS > PAR_MIN)
    for (int64_t nc = 0; nc < s->N * s->C; nc++) {
        const int64_t n = nc / s->C, c = nc % s->C;
        const float *xp = x + nc * HW;
        for (int64_t j = 0; j < Kg; j++) {
            const int64_t k = c * Kg + j;
            const float *wk = w + k * RS;
            const float bias = b ? b[k] : 0.0f;
            float *yp = y + (n * s->K + k) * P;
            for (int64_t ho = 0; ho < s->Ho; ho++) {
                float *yr = yp + ho * s->Wo;
                for (int64_t wo = 0; wo < s->Wo; wo++) yr[wo] = bias;
                for (int64_t r = 0; r < s->R; r++) {
                    const int64_t hi = ho * s->str_h - s->pad_t + r * s->dil_h;
                    if (hi < 0 || hi >= s->H) continue;
                    const float *xr = xp + hi * s->W;
                    for (int64_t t = 0; t < s->S; t++) {
                        const float wv = wk[r * s->S + t];
                        const int64_t off = tr.off[t];
                        if (sw == 1)
                            for (int64_t wo = tr.lo[t]; wo < tr.hi[t]; wo++) yr[wo] += wv * xr[wo + off];
                        else
                            for (int64_t wo = tr.lo[t]; wo < tr.hi[t]; wo++) yr[wo] += wv * xr[wo * sw + off];
                    }
                }
            }
        }
    }
}

void gg__conv2d_bwd_data_depthwise(const gg_conv2d_shape *s, const float *restrict dy, const float *restrict w,
                                   float *restrict dx) {
    const int64_t Kg = s->K / s->G, P = s->Ho * s->Wo, HW = s->H * s->W, RS = s->R * s->S, sw = s->str_w;
    tap_ranges tr;
    column_ranges(s, &tr);
#pragma omp parallel for schedule(static) num_threads(gg_get_num_threads()) if (s->N * s->K * P * RS > PAR_MIN)
    for (int64_t nc = 0; nc < s->N * s->C; nc++) {
        const int64_t n = nc / s->C, c = nc % s->C;
        float *dxp = dx + nc * HW;
        for (int64_t j = 0; j < Kg; j++) {
            const int64_t k = c * Kg + j;
            const float *wk = w + k * RS, *dyp = dy + (n * s->K + k) * P;
            for (int64_t ho = 0; ho < s->Ho; ho++) {
                const float *dyr = dyp + ho * s->Wo;
                for (int64_t r = 0; r < s->R; r++) {
                    const int64_t hi = ho * s->str_h - s->pad_t + r * s->dil_h;
                    if (hi < 0 || hi >= s->H) continue;
                    float *dxr = dxp + hi * s->W;
                    for (int64_t t = 0; t < s->S; t++) {
                        const float wv = wk[r * s->S + t];
                        const int64_t off = tr.off[t];
                        if (sw == 1)
                            for (int64_t wo = tr.lo[t]; wo < tr.hi[t]; wo++) dxr[wo + off] += wv * dyr[wo];
                        else
                            for (int64_t wo = tr.lo[t]; wo < tr.hi[t]; wo++) dxr[wo * sw + off] += wv * dyr[wo];
                    }
                }
            }
        }
    }
}

void gg__conv2d_bwd_weight_depthwise(const gg_conv2d_shape *s, const float *restrict x, const float *restrict dy,
                                     float *restrict dw) {
    const int64_t Kg = s->K / s->G, P = s->Ho * s->Wo, HW = s->H * s->W, RS = s->R * s->S, sw = s->str_w;
    tap_ranges tr;
    column_ranges(s, &tr);
#pragma omp parallel for schedule(static) num_threads(gg_get_num_threads()) if (s->N * s->K * P * RS > PAR_MIN)
    for (int64_t k = 0; k < s->K; k++) {
        const int64_t c = k / Kg;
        double acc[GG_CONV_DW_MAX_TAPS] = {0};
        for (int64_t n = 0; n < s->N; n++) {
            const float *xp = x + (n * s->C + c) * HW, *dyp = dy + (n * s->K + k) * P;
            for (int64_t r = 0; r < s->R; r++) {
                int64_t hlo, hhi;
                valid_range(s->Ho, s->H, s->str_h, r * s->dil_h - s->pad_t, &hlo, &hhi);
                for (int64_t t = 0; t < s->S; t++) {
                    const int64_t off = tr.off[t], lo = tr.lo[t], hi = tr.hi[t];
                    float part = 0.0f; /* one plane: at most H*W terms in float, then into the double */
                    for (int64_t ho = hlo; ho < hhi; ho++) {
                        const float *dyr = dyp + ho * s->Wo;
                        const float *xr = xp + (ho * s->str_h - s->pad_t + r * s->dil_h) * s->W;
                        float row = 0.0f;
                        if (sw == 1) {
#pragma omp simd reduction(+ : row)
                            for (int64_t wo = lo; wo < hi; wo++) row += dyr[wo] * xr[wo + off];
                        } else {
#pragma omp simd reduction(+ : row)
                            for (int64_t wo = lo; wo < hi; wo++) row += dyr[wo] * xr[wo * sw + off];
                        }
                        part += row;
                    }
                    acc[r * s->S + t] += part;
                }
            }
        }
        for (int64_t j = 0; j < RS; j++) dw[k * RS + j] += (float)acc[j];
    }
}

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
