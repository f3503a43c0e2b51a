/* DGConv (gg_dgconv.h; semantics: /work/shared/DGCONV.md): the composite definition on the tape, the
 * grouped fast path as one op with its own backward, the group structure, and the complexity regularizer.
 *
 * Fast path, for binary gates. Kronecker position j (0 = outermost) holds gate ord[j] and owns channel bit
 * 1 << (K-1-j). With z zero-gate positions zpos[0..z-1] and K-z one-gate positions opos[..], pi(c) puts the
 * bits of c at zpos (in order) above those at opos, so that U[o][i] = 1 iff pi(o)/Cg == pi(i)/Cg
 * (G = 2^z groups of Cg = C/G channels). With xp[n, pi(c)] = x[n, c] and the gathered weight
 * wg[p, j] = W[pi^-1(p), pi^-1(gp*Cg + j)] (gp = p / Cg) [C, Cg, R, S]:
 *   yp = grouped_conv(xp, wg, b o pi^-1),   y[n, o] = yp[n, pi(o)]
 *   dxp = grouped_conv_data(dyp, wg),  dx[n, c] += dxp[n, pi(c)]       (dyp[n, pi(o)] = dy[n, o])
 *   dwg = grouped_conv_weight(xp, dyp), dW[pi^-1(p), pi^-1(gp*Cg + j)] += dwg[p, j]   (0 where masked)
 *   dL/dg[one gate at position opos[u]] = sum over connected (p, j) whose within-group offsets differ at
 *       bit (K-z-1-u) of sum_taps dwg * wg                    (pairs inside a group: no extra pass)
 *   dL/dg[zero gate at position zpos[t]] = sum over pairs (o, i) in groups (h ^ b_t, h), b_t = 1 << (z-1-t),
 *       of sum_taps Ghat * W = <dyp[group h ^ b_t], conv(xp[group h], W[block (h ^ b_t, h)])>: the masked
 *       blocks one zero-gate bit away, convolved forward and dotted with the output gradient. All z gates
 *       in one grouped conv with z*C outputs (output (h, t, a) of group h reads input group h), so the
 *       gate gradient costs z grouped forward convolutions (log2(G) * 1/G of the dense one), not a dense
 *       weight gradient.
 * dL/dgt = dL/dg (straight through).
 * Execution: the convolutions go through gg_conv2d's plan (gg__conv2d_forward / _backward), on chunks of the
 * batch (chunk_batch): each chunk's permuted copies xp, dyp, dxp and the gate-gradient outputs live in small
 * buffers that stay in the L2 cache between the gather, the convolution and the scatter. The op saves x and
 * W, not xp: the backward permutes x again chunk by chunk. With the identity permutation (zero gates
 * leading, or sort) there is no copy at all. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gg_alloc.h"
#include "gg_conv_kernels.h"
#include "gg_dgconv.h"
#include "gg_internal.h"
#include "gg_node.h"
#include "gg_ops.h"
#include "gg_runtime.h"

#define FN "gg_dgconv2d"
#define MAX_K 30
#define PAR_MIN 32768 /* elements copied below which the permutations stay single-threaded */
#define PREFETCH_BYTES 8192 /* how far ahead a permutation copy prefetches its source planes */

gg_dgconv_opts gg_dgconv_default(void) { return (gg_dgconv_opts){.sort = false, .path = GG_DGCONV_AUTO}; }

/* ---- gates ---- */

/* g[k] = (sign(gt[k]) + 1) / 2 in {0, 0.5, 1}; sign(NaN) = 0 as gg_sign_ste, so NaN gives 0.5. */
static void read_gates(const gg_tensor *gt, int K, double *g) {
    const float *d = gg_tensor_data(gt);
    for (int k = 0; k < K; k++) {
        float v = d[k * gt->stride[0]];
        g[k] = v > 0 ? 1.0 : v < 0 ? 0.0 : 0.5;
    }
}

/* ord[j] = the gate at Kronecker position j: the identity, or with sort a stable sort on g (0, 0.5, 1). */
static void factor_order(int K, const double *g, bool sort, int *ord) {
    if (!sort) {
        for (int k = 0; k < K; k++) ord[k] = k;
        return;
    }
    int j = 0;
    for (int level = 0; level < 3; level++)
        for (int k = 0; k < K; k++)
            if (g[k] == 0.5 * level) ord[j++] = k;
}

/* "gates [..]" checks shared by every entry point that takes gates. */
static int check_gates(const gg_tensor *gt, const char *func, int *K) {
    char s[GG_SHAPE_STR_MAX];
    if (gt->ndim != 1 || gt->shape[0] < 1)
        return gg_error_set(GG_ERR_SHAPE, func, "gates must be 1-D [K] with K >= 1, got %s", GG_SHAPE_STR(gt, s));
    if (gt->shape[0] > MAX_K)
        return gg_error_set(GG_ERR_SHAPE, func, "gates %s would need 2^%lld channels (at most %d gates)",
                            GG_SHAPE_STR(gt, s), (long long)gt->shape[0], MAX_K);
    *K = (int)gt->shape[0];
    return GG_OK;
}

/* The fast path's view of a binary gate pattern. */
typedef struct dg_pattern {
    int K, z;           /* gates, zero gates */
    int64_t C, G, Cg;   /* channels, groups, channels per group */
    int ord[MAX_K];     /* gate at Kronecker position j */
    int zpos[MAX_K];    /* positions of the zero gates, in order (z entries) */
    int opos[MAX_K];    /* positions of the one gates, in order (K - z entries) */
} dg_pattern;

/* zmask: bit k set when gate k has g = 0 (every other gate has g = 1). */
static void make_pattern(int K, uint64_t zmask, bool sort, dg_pattern *pt) {
    double g[MAX_K] = {0};
    for (int k = 0; k < K; k++) g[k] = (zmask >> k) & 1 ? 0.0 : 1.0;
    pt->K = K;
    factor_order(K, g, sort, pt->ord);
    int z = 0, o = 0;
    for (int j = 0; j < K; j++) {
        if ((zmask >> pt->ord[j]) & 1) pt->zpos[z++] = j;
        else pt->opos[o++] = j;
    }
    pt->z = z;
    pt->C = (int64_t)1 << K;
    pt->G = (int64_t)1 << z;
    pt->Cg = pt->C >> z;
}

/* perm[c] = pi(c), inv[pi(c)] = c; returns true when pi is the identity (zero gates at the leading
 * positions: contiguous groups). */
static bool fill_perm(const dg_pattern *pt, int64_t *perm, int64_t *inv) {
    const int K = pt->K, z = pt->z;
    bool ident = true;
    for (int t = 0; t < z; t++) ident = ident && pt->zpos[t] == t;
    for (int64_t c = 0; c < pt->C; c++) {
        int64_t r = 0;
        for (int t = 0; t < z; t++) r |= ((c >> (K - 1 - pt->zpos[t])) & 1) << (K - 1 - t);
        for (int u = 0; u < K - z; u++) r |= ((c >> (K - 1 - pt->opos[u])) & 1) << (K - z - 1 - u);
        perm[c] = r;
        inv[r] = c;
    }
    return ident;
}

/* Binary pattern of gt: the zero-gate mask, or -1 when some gate is exactly 0 (g = 0.5). */
static int64_t zero_mask(const gg_tensor *gt, int K, int *half_at) {
    double g[MAX_K];
    read_gates(gt, K, g);
    int64_t m = 0;
    for (int k = 0; k < K; k++) {
        if (g[k] == 0.5) {
            if (half_at) *half_at = k;
            return -1;
        }
        if (g[k] == 0.0) m |= (int64_t)1 << k;
    }
    return m;
}

/* ---- composite (the definition, op by op) ---- */

/* g = (sign(2 gt) + 1) / 2: the value of (sign(gt) + 1) / 2 with dg/dgt = 2 * 1 * 1/2 = 1 exactly, the
 * reference's straight-through estimator (its parameter takes dL/dg unscaled; building (sign_ste(gt) + 1)/2
 * would halve it). */
static gg_tensor *binarize(gg_tensor *gt) {
    return gg_mul_scalar(gg_add_scalar(gg_sign_ste(gg_mul_scalar(gt, 2.0f)), 1.0f), 0.5f);
}

/* U = U_ord[0] (x) ... (x) U_ord[K-1], U_k = g_k J + (1 - g_k) I. */
static gg_tensor *relation(gg_tensor *gt, int K, const int *ord) {
    gg_tensor *J = gg_tensor_ones(GG_SHAPE(2, 2));
    gg_tensor *I = gg_tensor_from_data(GG_SHAPE(2, 2), (const float[]){1, 0, 0, 1});
    gg_tensor *u = NULL;
    if (J && I) {
        gg_tensor *g = binarize(gt);
        for (int j = 0; j < K; j++) {
            gg_tensor *gk = gg_slice(g, 0, ord[j], ord[j] + 1, 1);
            gg_tensor *uk = gg_add(gg_mul(gk, J), gg_mul(gg_rsub_scalar(gk, 1.0f), I));
            u = j ? gg_kron(u, uk) : uk;
        }
    }
    gg_tensor_free(J); /* nodes that saved them hold their own references */
    gg_tensor_free(I);
    return u;
}

gg_tensor *gg_dgconv_relation(gg_tensor *gates, bool sort) {
    GG_CHECK_ARG(gates, NULL);
    int K = 0;
    if (check_gates(gates, __func__, &K)) return NULL;
    double g[MAX_K];
    int ord[MAX_K];
    read_gates(gates, K, g);
    factor_order(K, g, sort, ord);
    return relation(gates, K, ord);
}

/* ---- argument checks ---- */

static const char *shapes_str(char *buf, size_t size, const gg_tensor *x, const gg_tensor *w, const gg_tensor *gt,
                              const gg_tensor *b) {
    char a[GG_SHAPE_STR_MAX], c[GG_SHAPE_STR_MAX], d[GG_SHAPE_STR_MAX], e[GG_SHAPE_STR_MAX];
    if (b)
        snprintf(buf, size, "x %s, w %s, gates %s, bias %s", GG_SHAPE_STR(x, a), GG_SHAPE_STR(w, c),
                 GG_SHAPE_STR(gt, d), GG_SHAPE_STR(b, e));
    else
        snprintf(buf, size, "x %s, w %s, gates %s", GG_SHAPE_STR(x, a), GG_SHAPE_STR(w, c), GG_SHAPE_STR(gt, d));
    return buf;
}

/* Everything gg_conv2d would check, plus DGConv's channel rules; fills the dense geometry (G = 1). */
static int check_args(const gg_tensor *x, const gg_tensor *w, const gg_tensor *gt, const gg_tensor *b,
                      const gg_conv2d_params *p, const gg_dgconv_opts *o, gg_conv2d_shape *s, int *Kout) {
    char sh[4 * GG_SHAPE_STR_MAX + 32];
    shapes_str(sh, sizeof sh, x, w, gt, b);
    if ((int)o->path < 0 || o->path >= GG_DGCONV_PATH_COUNT)
        return gg_error_set(GG_ERR_ARG, FN, "unknown path %d (%s)", (int)o->path, sh);
    if (gt->ndim != 1 || gt->shape[0] < 1)
        return gg_error_set(GG_ERR_SHAPE, FN, "gates must be 1-D [K] with K >= 1 (%s)", sh);
    if (gt->shape[0] > MAX_K)
        return gg_error_set(GG_ERR_SHAPE, FN, "%lld gates would need 2^%lld channels, at most %d gates (%s)",
                            (long long)gt->shape[0], (long long)gt->shape[0], MAX_K, sh);
    const int K = (int)gt->shape[0];
    if (x->ndim != 4) return gg_error_set(GG_ERR_SHAPE, FN, "input must be 4-D [N,C,H,W] (%s)", sh);
    if (w->ndim != 4) return gg_error_set(GG_ERR_SHAPE, FN, "weight must be 4-D [C,C,R,S] (%s)", sh);
    const int64_t C = w->shape[0];
    if (w->shape[1] != C)
        return gg_error_set(GG_ERR_SHAPE, FN, "weight must be square [C,C,R,S] (C_in = C_out), got %lld x %lld (%s)",
                            (long long)C, (long long)w->shape[1], sh);
    if (C < 2 || (C & (C - 1)))
        return gg_error_set(GG_ERR_SHAPE, FN,
                            "%lld channels is not a power of two >= 2: DGConv needs C_in = C_out = 2^K "
                            "(mixed-radix channel counts are not supported) (%s)",
                            (long long)C, sh);
    if (C != (int64_t)1 << K)
        return gg_error_set(GG_ERR_SHAPE, FN, "%d gates give 2^%d = %lld channels, the weight has %lld (%s)", K, K,
                            (long long)1 << K, (long long)C, sh);
    if (x->shape[1] != C)
        return gg_error_set(GG_ERR_SHAPE, FN, "input has %lld channels, weight expects %lld (%s)",
                            (long long)x->shape[1], (long long)C, sh);
    if (p->groups != 1)
        return gg_error_set(GG_ERR_ARG, FN, "conv params must have groups == 1 (DGConv owns the grouping), got %d (%s)",
                            p->groups, sh);
    if (b && (b->ndim != 1 || b->shape[0] != C))
        return gg_error_set(GG_ERR_SHAPE, FN, "bias must be [%lld], one value per output channel (%s)", (long long)C,
                            sh);
    if (p->stride[0] < 1 || p->stride[1] < 1)
        return gg_error_set(GG_ERR_ARG, FN, "stride must be positive, got (%d, %d) (%s)", p->stride[0], p->stride[1],
                            sh);
    if (p->dilation[0] < 1 || p->dilation[1] < 1)
        return gg_error_set(GG_ERR_ARG, FN, "dilation must be positive, got (%d, %d) (%s)", p->dilation[0],
                            p->dilation[1], sh);
    if (p->pad_same && (p->stride[0] != 1 || p->stride[1] != 1))
        return gg_error_set(GG_ERR_ARG, FN, "padding 'same' needs stride 1, got (%d, %d) (%s)", p->stride[0],
                            p->stride[1], sh);
    if (!p->pad_same && (p->pad[0] < 0 || p->pad[1] < 0 || p->pad[2] < 0 || p->pad[3] < 0))
        return gg_error_set(GG_ERR_ARG, FN, "padding must be non-negative, got (top %d, bottom %d, left %d, right %d) (%s)",
                            p->pad[0], p->pad[1], p->pad[2], p->pad[3], sh);
    const int64_t R = w->shape[2], S = w->shape[3], H = x->shape[2], W = x->shape[3];
    if (R < 1 || S < 1) return gg_error_set(GG_ERR_SHAPE, FN, "weight must have a non-empty kernel (%s)", sh);
    int64_t pt = p->pad[0], pb = p->pad[1], pl = p->pad[2], pr = p->pad[3];
    if (p->pad_same) {
        int64_t th = (int64_t)p->dilation[0] * (R - 1), tw = (int64_t)p->dilation[1] * (S - 1);
        pt = th / 2, pb = th - pt, pl = tw / 2, pr = tw - pl;
    }
    const int64_t eff_h = (int64_t)p->dilation[0] * (R - 1) + 1, eff_w = (int64_t)p->dilation[1] * (S - 1) + 1;
    const int64_t span_h = H + pt + pb - eff_h, span_w = W + pl + pr - eff_w;
    if (span_h < 0 || span_w < 0)
        return gg_error_set(GG_ERR_SHAPE, FN,
                            "output would be empty: padded input %lldx%lld is smaller than the dilated kernel "
                            "%lldx%lld (%s)",
                            (long long)(H + pt + pb), (long long)(W + pl + pr), (long long)eff_h, (long long)eff_w, sh);
    *s = (gg_conv2d_shape){.N = x->shape[0], .C = C, .H = H, .W = W, .K = C, .R = R, .S = S, .G = 1,
                           .Ho = span_h / p->stride[0] + 1, .Wo = span_w / p->stride[1] + 1,
                           .str_h = p->stride[0], .str_w = p->stride[1], .pad_t = pt, .pad_l = pl,
                           .dil_h = p->dilation[0], .dil_w = p->dilation[1]};
    *Kout = K;
    return GG_OK;
}

/* ---- channel permutations ---- */

/* Prefetch plane `row` of src (planes of `bytes` bytes, row = n*C + c read from plane n*C + src_of[c]). */
static inline void prefetch_plane(const float *src, const int64_t *src_of, int64_t C, int64_t plane,
                                  int64_t bytes, int64_t row) {
    const int64_t n = row / C, c = row % C;
    const char *pf = (const char *)(src + (n * C + (src_of ? src_of[c] : c)) * plane);
    for (int64_t q = 0; q < bytes; q += 64) __builtin_prefetch(pf + q);
}

/* Planes to prefetch ahead: PREFETCH_BYTES worth (permuted planes are short strided streams that the hardware
 * prefetcher misses). */
static int64_t planes_ahead(int64_t bytes) {
    return bytes >= PREFETCH_BYTES || bytes == 0 ? 1 : PREFETCH_BYTES / bytes;
}

/* dst[n, c, :] (=, or += when acc) src[n, src_of[c], :] over planes of `plane` floats; src_of NULL = identity. */
static void gather_planes(int64_t N, int64_t C, int64_t plane, const float *src, const int64_t *src_of, float *dst,
                          bool acc) {
    const int64_t rows = N * C, bytes = plane * (int64_t)sizeof(float), ahead = planes_ahead(bytes);
    if (rows == 0 || plane == 0) return; /* empty planes: nothing to copy (and the buffers may be NULL) */
#pragma omp parallel for num_threads(gg_get_num_threads()) if (rows * plane > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t n = r / C, c = r % C;
        const float *sp = src + (n * C + (src_of ? src_of[c] : c)) * plane;
        if (r + ahead < rows) prefetch_plane(src, src_of, C, plane, bytes, r + ahead);
        float *dp = dst + r * plane;
        if (acc)
            for (int64_t q = 0; q < plane; q++) dp[q] += sp[q];
        else
            memcpy(dp, sp, (size_t)plane * sizeof(float));
    }
}

/* The backward's copies for one chunk of N samples in one parallel loop (one barrier instead of two, and the
 * zeroing in parallel): xp[n, p] = x[n, inv[p]] (planes of HW floats) when xp, dyp[n, p] = dy[n, inv[p]]
 * (planes of P floats), dxp zeroed when dxp. */
static void gather_chunk(int64_t N, int64_t C, int64_t HW, int64_t P, const int64_t *inv, const float *x,
                         float *xp, const float *dy, float *dyp, float *dxp) {
    const int64_t rows = N * C, xb = HW * (int64_t)sizeof(float), yb = P * (int64_t)sizeof(float);
    const int64_t ahead = planes_ahead((xp ? xb : 0) + yb);
#pragma omp parallel for num_threads(gg_get_num_threads()) if (rows * (HW + P) > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t n = r / C, src = n * C + inv[r % C];
        if (r + ahead < rows) {
            if (xp) prefetch_plane(x, inv, C, HW, xb, r + ahead);
            prefetch_plane(dy, inv, C, P, yb, r + ahead);
        }
        if (xp && xb) memcpy(xp + r * HW, x + src * HW, (size_t)xb); /* empty planes: buffers may be NULL */
        if (yb) memcpy(dyp + r * P, dy + src * P, (size_t)yb);
        if (dxp && xb) memset(dxp + r * HW, 0, (size_t)xb);
    }
}

/* wg[p, j, :] = w[inv[p], inv[(p / Cg)*Cg + j], :]: the connected blocks of W [C, C, RS] in grouped order. */
static void gather_weight(int64_t C, int64_t Cg, int64_t RS, const float *w, const int64_t *inv, float *wg) {
    for (int64_t p = 0; p < C; p++) {
        const int64_t base = p / Cg * Cg;
        for (int64_t j = 0; j < Cg; j++)
            memcpy(wg + (p * Cg + j) * RS, w + (inv[p] * C + inv[base + j]) * RS, (size_t)RS * sizeof(float));
    }
}

/* ---- the fast op ---- */

/* ip: [0, 16) the dense geometry, then the zero-gate mask, sort, and the saved slots of x and w (-1: not
 * saved). */
#define IP_SHAPE_N (int)(sizeof(gg_conv2d_shape) / sizeof(int64_t))
#define IP_ZMASK IP_SHAPE_N
#define IP_SORT (IP_SHAPE_N + 1)
#define IP_XSLOT (IP_SHAPE_N + 2)
#define IP_WSLOT (IP_SHAPE_N + 3)
_Static_assert(sizeof(gg_conv2d_shape) / sizeof(int64_t) + 4 <= GG_NODE_IPARAMS, "dgconv parameters fit in ip[]");

/* Samples per chunk. The fast path runs gather -> grouped conv -> scatter one chunk of the batch at a time,
 * so that the permuted copies are still in the L2 cache when the convolution reads them and the scatter
 * reads its output (whole-batch copies went through L3 or memory: a third of the G = 8 forward); the
 * convolution kernels are also at least as fast on such chunks as on the whole batch. About CHUNK_BYTES of
 * input plus output planes per thread (each core's L2 holds its share of a chunk; fewer chunks also mean
 * fewer parallel regions, each a barrier), the chunks as even as possible. A function of the shape and the
 * thread count only, so results are the same run to run for a given thread count. */
#define CHUNK_BYTES (1024.0 * 1024.0)
static int64_t chunk_batch(const gg_conv2d_shape *s) {
    const double per = 4.0 * (double)s->C * (double)(s->H * s->W + s->Ho * s->Wo);
    int64_t nb = per > 0 ? (int64_t)(CHUNK_BYTES * gg_get_num_threads() / per) : s->N;
    nb = nb < 1 ? 1 : nb > s->N ? s->N : nb;
    if (nb < 1) return 1;
    const int64_t chunks = (s->N + nb - 1) / nb;
    return (s->N + chunks - 1) / chunks;
}

/* One workspace for n_buf buffers of n[i] floats (64-byte aligned each; NULL for n[i] == 0), so that a pass
 * makes one allocation. At least 64 KiB, so that it comes from gg_alloc's size-class cache: a request
 * between 32 and 64 KiB gets a 64 KiB block that gg_free puts in the large-block cache, where later small
 * requests do not look, so every such request took fresh pages (the gathered weights of C = 64, G = 4 are
 * 36 KiB). Returns the block to gg_free, or NULL (error recorded by gg_alloc). */
static void *ws_alloc(const int64_t *n, int n_buf, float **buf) {
    int64_t total = 0;
    for (int i = 0; i < n_buf; i++) total += (n[i] + 15) / 16 * 16;
    float *ws = gg_alloc(total * (int64_t)sizeof(float) < 65536 ? 65536 : (size_t)total * sizeof(float));
    int64_t off = 0;
    for (int i = 0; i < n_buf; i++) {
        buf[i] = ws && n[i] ? ws + off : NULL;
        off += (n[i] + 15) / 16 * 16;
    }
    return ws;
}

/* sum a[i] b[i] in double; eight independent lanes so that the loop vectorizes. */
static double dot_f64(const float *a, const float *b, int64_t n) {
    double lane[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) lane[l] += (double)a[i + l] * (double)b[i + l];
    double s = 0;
    for (; i < n; i++) s += (double)a[i] * (double)b[i];
    for (int l = 0; l < 8; l++) s += lane[l];
    return s;
}

/* sum a[i] b[i] for long vectors: float products summed in 64 lanes (each lane sums n/64 terms; four
 * 16-wide accumulators), the lanes added in double. Three times faster than dot_f64 on the gate
 * gradient's activations, as accurate as the float convolutions around it. */
static double dot_lanes(const float *a, const float *b, int64_t n) {
    float lane[64] = {0};
    int64_t i = 0;
    for (; i + 64 <= n; i += 64)
        for (int l = 0; l < 64; l++) lane[l] += a[i + l] * b[i + l];
    double s = 0;
    for (; i < n; i++) s += (double)a[i] * (double)b[i];
    for (int l = 0; l < 64; l++) s += lane[l];
    return s;
}

/* dL/dg at the one-gate positions (added into dpos): pairs inside a group whose offsets differ at the
 * position's bit, sum_taps dwg * wg. */
static void one_gate_grads(const dg_pattern *pt, int64_t RS, const float *wg, const float *dwg,
                           double *dpos) {
    const int64_t C = pt->C, Cg = pt->Cg, K1 = pt->K - pt->z;
    for (int64_t p = 0; p < C; p++) {
        const int64_t a = p % Cg;
        for (int64_t j = 0; j < Cg; j++) {
            const int64_t d = a ^ j;
            if (!d) continue;
            const double sum = dot_f64(dwg + (p * Cg + j) * RS, wg + (p * Cg + j) * RS, RS);
            for (int64_t u = 0; u < K1; u++)
                if ((d >> (K1 - 1 - u)) & 1) dpos[pt->opos[u]] += sum;
        }
    }
}

/* wz[(h*z + t)*Cg + a, j] = W[pi^-1((h ^ b_t)*Cg + a), pi^-1(h*Cg + j)] [z*C, Cg, R, S]: the blocks one
 * zero-gate bit away from the diagonal, as a grouped conv weight whose group h reads input group h. */
static void gather_gate_weight(const dg_pattern *pt, int64_t RS, const float *w, const int64_t *inv,
                               float *wz) {
    const int64_t C = pt->C, Cg = pt->Cg, z = pt->z;
    for (int64_t h = 0; h < pt->G; h++)
        for (int64_t t = 0; t < z; t++) {
            const int64_t ho = h ^ ((int64_t)1 << (z - 1 - t));
            for (int64_t a = 0; a < Cg; a++)
                for (int64_t j = 0; j < Cg; j++)
                    memcpy(wz + (((h * z + t) * Cg + a) * Cg + j) * RS,
                           w + (inv[ho * Cg + a] * C + inv[h * Cg + j]) * RS, (size_t)RS * sizeof(float));
        }
}

/* dL/dg at the zero-gate positions, one chunk of cs->N samples (added into acc[t]): yz = conv(xp, wz)
 * [n, z*C, P], and acc[t] += sum over n, h of <yz[n, group h, slot t], dyp[n, group h ^ b_t]>. The
 * products are summed per (n, h) in parallel and added in (n, h) order, so the result does not depend on
 * the thread count. part: cs->N * G * z doubles. */
static int zero_gate_chunk(const dg_pattern *pt, const gg_conv2d_shape *cs, const float *xp, const float *dyp,
                           const float *wz, float *yz, double *part, double *acc) {
    const int64_t C = pt->C, Cg = pt->Cg, G = pt->G, z = pt->z, P = cs->Ho * cs->Wo, n_items = cs->N * G;
    gg_conv2d_shape sz = *cs;
    sz.K = z * C;
    int st = gg__conv2d_forward(&sz, xp, wz, NULL, yz);
    if (st) return st;
#pragma omp parallel for num_threads(gg_get_num_threads()) if (n_items * z * Cg * P > PAR_MIN)
    for (int64_t it = 0; it < n_items; it++) {
        const int64_t n = it / G, h = it % G;
        for (int64_t t = 0; t < z; t++) {
            const int64_t ho = h ^ ((int64_t)1 << (z - 1 - t));
            part[it * z + t] =
                dot_lanes(yz + (n * z * C + (h * z + t) * Cg) * P, dyp + (n * C + ho * Cg) * P, Cg * P);
        }
    }
    for (int64_t it = 0; it < n_items; it++)
        for (int64_t t = 0; t < z; t++) acc[t] += part[it * z + t];
    return GG_OK;
}

static int dgfast_backward(gg_node *node, const gg_tensor *gout) {
    gg_conv2d_shape s;
    memcpy(&s, node->ip, sizeof s);
    gg_tensor *gx = gg_node_grad(node, 0), *gw = gg_node_grad(node, 1), *gg = gg_node_grad(node, 2);
    gg_tensor *gb = node->n_in > 3 ? gg_node_grad(node, 3) : NULL;
    for (int i = 0; i < node->n_in; i++)
        if (gg_node_needs_grad(node, i) && !(i == 0 ? gx : i == 1 ? gw : i == 2 ? gg : gb))
            return gg_last_status() ? gg_last_status() : gg_error_set(GG_ERR_NOMEM, FN, "cannot allocate gradients");
    if (s.N == 0) return GG_OK;
    const float *dy = gg_tensor_data(gout);
    if (gb) gg__conv2d_bwd_bias(&s, dy, gg_tensor_data(gb));
    if (!gx && !gw && !gg) return GG_OK;
    const float *x = node->ip[IP_XSLOT] >= 0 ? gg_tensor_data(node->saved[node->ip[IP_XSLOT]]) : NULL;
    const float *w = node->ip[IP_WSLOT] >= 0 ? gg_tensor_data(node->saved[node->ip[IP_WSLOT]]) : NULL;
    if (((gx || gg) && !w) || ((gw || gg) && !x))
        return gg_error_set(GG_ERR_STATE, FN, "backward: a needed input was not saved");

    int K = 0;
    while (((int64_t)1 << K) < s.C) K++;
    dg_pattern pt;
    make_pattern(K, (uint64_t)node->ip[IP_ZMASK], node->ip[IP_SORT] != 0, &pt);
    gg_conv2d_shape sg = s;
    sg.G = pt.G;
    const int64_t C = s.C, Cg = pt.Cg, z = pt.z, RS = s.R * s.S, P = s.Ho * s.Wo, HW = s.H * s.W;
    const int64_t nb = chunk_batch(&s);
    const bool zgates = gg && z > 0, need_x = gw || gg;
    int64_t *perm = malloc(2 * (size_t)C * sizeof(int64_t));
    if (!perm) return gg_error_set(GG_ERR_NOMEM, FN, "backward: cannot allocate the permutation");
    int64_t *inv = perm + C;
    const bool ident = fill_perm(&pt, perm, inv);

    /* per-chunk buffers (grouped channel order), then whole-layer weights, in one workspace */
    enum { B_XP, B_DYP, B_DXP, B_YZ, B_PART, B_WZ, B_WG, B_DWG, B_COUNT };
    const int64_t n[B_COUNT] = {
        [B_XP] = need_x && !ident ? nb * C * HW : 0, [B_DYP] = ident ? 0 : nb * C * P,
        [B_DXP] = gx && !ident ? nb * C * HW : 0,    [B_YZ] = zgates ? nb * z * C * P : 0,
        [B_PART] = zgates ? 2 * nb * pt.G * z : 0, /* doubles */
        [B_WZ] = zgates ? z * C * Cg * RS : 0,       [B_WG] = (gx || gg) ? C * Cg * RS : 0,
        [B_DWG] = need_x ? C * Cg * RS : 0};
    float *buf[B_COUNT];
    void *ws = ws_alloc(n, B_COUNT, buf);
    float *xp_c = buf[B_XP], *dyp_c = buf[B_DYP], *dxp_c = buf[B_DXP], *yz = buf[B_YZ], *wz = buf[B_WZ];
    float *wg = buf[B_WG], *dwg = buf[B_DWG];
    double *part = (double *)(void *)buf[B_PART];
    int st = GG_OK;
    if (!ws) st = gg_error_set(GG_ERR_NOMEM, FN, "backward: cannot allocate the workspace");
    if (!st && dwg) memset(dwg, 0, (size_t)n[B_DWG] * sizeof(float));
    if (!st && wg) gather_weight(C, Cg, RS, w, inv, wg);
    if (!st && zgates) gather_gate_weight(&pt, RS, w, inv, wz);
    double acc[MAX_K] = {0};
    float *dx = gx ? gg_tensor_data(gx) : NULL;
    for (int64_t n0 = 0; n0 < s.N && !st; n0 += nb) {
        gg_conv2d_shape cs = sg;
        cs.N = s.N - n0 < nb ? s.N - n0 : nb;
        const float *xc = NULL, *dyc = dy + n0 * C * P;
        if (need_x) xc = ident ? x + n0 * C * HW : xp_c;
        if (!ident)
            gather_chunk(cs.N, C, HW, P, inv, x ? x + n0 * C * HW : NULL, xp_c, dyc, dyp_c, dxp_c),
                dyc = dyp_c;
        float *dxc = NULL;
        if (gx) dxc = ident ? dx + n0 * C * HW : dxp_c;
        st = gg__conv2d_backward(&cs, xc, wg, dyc, dxc, dwg);
        if (!st && gx && !ident) gather_planes(cs.N, C, HW, dxp_c, perm, dx + n0 * C * HW, true);
        if (!st && zgates) st = zero_gate_chunk(&pt, &cs, xc, dyc, wz, yz, part, acc);
    }
    if (!st && gw) { /* scatter the connected blocks back; masked entries get nothing */
        float *dw = gg_tensor_data(gw);
        for (int64_t p = 0; p < C; p++) {
            const int64_t base = p / Cg * Cg;
            for (int64_t j = 0; j < Cg; j++) {
                float *d = dw + (inv[p] * C + inv[base + j]) * RS;
                const float *src = dwg + (p * Cg + j) * RS;
                for (int64_t q = 0; q < RS; q++) d[q] += src[q];
            }
        }
    }
    if (!st && gg) {
        double dpos[MAX_K] = {0};
        one_gate_grads(&pt, RS, wg, dwg, dpos);
        for (int64_t t = 0; t < z; t++) dpos[pt.zpos[t]] += acc[t];
        float *d = gg_tensor_data(gg);
        for (int j = 0; j < K; j++) d[pt.ord[j]] += (float)dpos[j];
    }
    gg_free(ws);
    free(perm);
    return st;
}

static const gg_op_def DGCONV_FAST_OP = {"dgconv_fast", dgfast_backward};

static gg_tensor *dgconv_fast(gg_tensor *x, gg_tensor *w, gg_tensor *gt, gg_tensor *bias, const gg_conv2d_shape *s,
                              int K, uint64_t zmask, bool sort) {
    dg_pattern pt;
    make_pattern(K, zmask, sort, &pt);
    gg_conv2d_shape sg = *s;
    sg.G = pt.G;
    const int64_t N = s->N, C = s->C, Cg = pt.Cg, RS = s->R * s->S, P = s->Ho * s->Wo, HW = s->H * s->W;
    const int64_t nb = chunk_batch(s);
    int64_t *perm = malloc(2 * (size_t)C * sizeof(int64_t));
    if (!perm) {
        gg_error_set(GG_ERR_NOMEM, FN, "cannot allocate the permutation");
        return NULL;
    }
    int64_t *inv = perm + C;
    const bool ident = fill_perm(&pt, perm, inv);

    gg_tensor *xc = gg_tensor_contiguous(x), *wc = gg_tensor_contiguous(w);
    gg_tensor *bc = bias ? gg_tensor_contiguous(bias) : NULL;
    float *buf[4];
    void *ws = ws_alloc(
        (const int64_t[]){ident ? 0 : nb * C * HW, ident ? 0 : nb * C * P, C * Cg * RS, bias ? C : 0}, 4,
        buf);
    float *xp_c = buf[0], *yp_c = buf[1], *wg = buf[2], *bp = buf[3];
    gg_tensor *out = NULL;
    int st = (xc && wc && ws && (bc || !bias)) ? GG_OK : GG_ERR_NOMEM;
    if (!st) out = gg_op_output(4, (const int64_t[]){N, C, s->Ho, s->Wo}, FN);
    if (!st && !out) st = GG_ERR_NOMEM;
    if (!st) {
        gather_weight(C, Cg, RS, gg_tensor_data(wc), inv, wg);
        if (bias)
            for (int64_t p = 0; p < C; p++) bp[p] = gg_tensor_data(bc)[inv[p]];
        const float *xd = gg_tensor_data(xc);
        float *yd = gg_tensor_data(out);
        for (int64_t n0 = 0; n0 < N && !st; n0 += nb) {
            gg_conv2d_shape cs = sg;
            cs.N = N - n0 < nb ? N - n0 : nb;
            if (ident) {
                st = gg__conv2d_forward(&cs, xd + n0 * C * HW, wg, bp, yd + n0 * C * P);
                continue;
            }
            gather_planes(cs.N, C, HW, xd + n0 * C * HW, inv, xp_c, false);
            st = gg__conv2d_forward(&cs, xp_c, wg, bp, yp_c);
            if (!st) gather_planes(cs.N, C, P, yp_c, perm, yd + n0 * C * P, false);
        }
    }
    if (st == GG_ERR_NOMEM && gg_last_status() != GG_ERR_NOMEM)
        gg_error_set(GG_ERR_NOMEM, FN, "cannot allocate buffers");
    gg_free(ws);
    gg_tensor_free(bc);
    free(perm);

    gg_tensor *in[4] = {x, w, gt, bias};
    const int n_in = bias ? 4 : 3;
    if (!st) {
        bool failed;
        gg_node *node = gg_op_record(&DGCONV_FAST_OP, out, n_in, in, &failed);
        if (failed) st = GG_ERR_NOMEM;
        if (node) {
            memcpy(node->ip, s, sizeof *s);
            node->ip[IP_ZMASK] = (int64_t)zmask;
            node->ip[IP_SORT] = sort;
            node->ip[IP_XSLOT] = node->ip[IP_WSLOT] = -1;
            const bool nx = gg_node_needs_grad(node, 0), nw = gg_node_needs_grad(node, 1),
                       ng = gg_node_needs_grad(node, 2);
            if (nw || ng) { /* dw and the gate gradient read the input (permuted again, chunk by chunk) */
                node->ip[IP_XSLOT] = node->n_saved;
                st = gg_node_save(node, xc);
            }
            if (!st && (nx || ng)) { /* dx reads the gathered weight, the gate gradient the dense one */
                node->ip[IP_WSLOT] = node->n_saved;
                st = gg_node_save(node, wc);
            }
        }
    }
    gg_tensor_free(xc);
    gg_tensor_free(wc);
    if (st) return NULL;
    return gg_op_finish(out, FN, n_in, in);
}

/* ---- the public op ---- */

gg_tensor *gg_dgconv2d(gg_tensor *x, gg_tensor *w, gg_tensor *gates, gg_tensor *bias, const gg_conv2d_params *params,
                       const gg_dgconv_opts *opts) {
    GG_CHECK_ARG(x, NULL);
    GG_CHECK_ARG(w, NULL);
    GG_CHECK_ARG(gates, NULL);
    gg_conv2d_params def = gg_conv2d_default();
    const gg_conv2d_params *p = params ? params : &def;
    gg_dgconv_opts defo = gg_dgconv_default();
    const gg_dgconv_opts *o = opts ? opts : &defo;
    gg_conv2d_shape s = {0};
    int K = 0;
    if (check_args(x, w, gates, bias, p, o, &s, &K)) return NULL;
    int half_at = -1;
    const int64_t zmask = zero_mask(gates, K, &half_at);
    if (o->path == GG_DGCONV_FAST && zmask < 0) {
        char sh[4 * GG_SHAPE_STR_MAX + 32];
        gg_error_set(GG_ERR_ARG, FN, "the fast path needs binary gates, but gate %d is exactly 0 (g = 0.5) (%s)",
                     half_at, shapes_str(sh, sizeof sh, x, w, gates, bias));
        return NULL;
    }
    if (o->path != GG_DGCONV_COMPOSITE && zmask >= 0)
        return dgconv_fast(x, w, gates, bias, &s, K, (uint64_t)zmask, o->sort);

    double g[MAX_K];
    int ord[MAX_K];
    read_gates(gates, K, g);
    factor_order(K, g, o->sort, ord);
    gg_tensor *u = relation(gates, K, ord);
    gg_tensor *what = gg_mul(w, gg_reshape(u, GG_SHAPE(s.C, s.C, 1, 1)));
    return gg_conv2d(x, what, bias, p);
}

/* ---- group structure ---- */

int gg_dgconv_group_info(const gg_tensor *gates, bool sort, int *groups, int *group_size, int *perm) {
    if (!gates) return gg__null_arg(__func__, "gates");
    int K = 0;
    int st = check_gates(gates, __func__, &K);
    if (st) return st;
    int half_at = -1;
    const int64_t zmask = zero_mask(gates, K, &half_at);
    if (zmask < 0)
        return GG_FAIL(GG_ERR_ARG, "gate %d is exactly 0 (g = 0.5): the relation is not a grouping (gates [%d])",
                       half_at, K);
    dg_pattern pt;
    make_pattern(K, (uint64_t)zmask, sort, &pt);
    if (perm) {
        int64_t *pm = malloc(2 * (size_t)pt.C * sizeof(int64_t));
        if (!pm) return GG_FAIL(GG_ERR_NOMEM, "cannot allocate the permutation");
        fill_perm(&pt, pm, pm + pt.C);
        for (int64_t c = 0; c < pt.C; c++) perm[c] = (int)pm[c];
        free(pm);
    }
    if (groups) *groups = (int)pt.G;
    if (group_size) *group_size = (int)pt.Cg;
    return GG_OK;
}

/* ---- complexity regularizer ---- */

/* ip[0] form, ip[1] K, ip[2] mask of gates with g = 1, ip[3] mask of gates with g = 0.5; fp[0] zeta. */
static int zeta_backward(gg_node *node, const gg_tensor *gout) {
    gg_tensor *gg = gg_node_grad(node, 0);
    if (!gg) /* no gradient wanted, or its allocation failed (gg_tensor_zeros recorded NOMEM) */
        return gg_node_needs_grad(node, 0) ? gg_last_status() : GG_OK;
    const double go = gg_tensor_data(gout)[0], zeta = node->fp[0];
    const int K = (int)node->ip[1];
    float *d = gg_tensor_data(gg);
    for (int k = 0; k < K; k++) {
        double dz;
        if (node->ip[0] == GG_ZETA_CODE) {
            dz = log(2.0) * zeta; /* d 2^(K + sum g) / dg[k] */
        } else { /* d C prod(1 + g) / dg[k] = C prod_{j != k} (1 + g[j]) */
            dz = ldexp(1.0, K);
            for (int j = 0; j < K; j++)
                if (j != k) dz *= 1.0 + ((node->ip[2] >> j) & 1 ? 1.0 : (node->ip[3] >> j) & 1 ? 0.5 : 0.0);
        }
        d[k] += (float)(go * dz);
    }
    return GG_OK;
}

static const gg_op_def DGCONV_ZETA_OP = {"dgconv_zeta", zeta_backward};

gg_tensor *gg_dgconv_zeta(gg_tensor *gates, gg_zeta_form form) {
    GG_CHECK_ARG(gates, NULL);
    int K = 0;
    if (check_gates(gates, __func__, &K)) return NULL;
    if ((int)form < 0 || form >= GG_ZETA_FORM_COUNT) {
        GG_FAIL(GG_ERR_ARG, "unknown form %d", (int)form);
        return NULL;
    }
    double g[MAX_K], sum = 0, prod = ldexp(1.0, K);
    int64_t ones = 0, halves = 0;
    read_gates(gates, K, g);
    for (int k = 0; k < K; k++) {
        sum += g[k];
        prod *= 1.0 + g[k];
        if (g[k] == 1.0) ones |= (int64_t)1 << k;
        if (g[k] == 0.5) halves |= (int64_t)1 << k;
    }
    const double zeta = form == GG_ZETA_CODE ? exp2((double)K + sum) : prod;
    gg_tensor *out = gg_op_output(0, (const int64_t[]){1}, __func__);
    if (!out) return NULL;
    gg_tensor_data(out)[0] = (float)zeta;
    gg_tensor *in[1] = {gates};
    bool failed;
    gg_node *node = gg_op_record(&DGCONV_ZETA_OP, out, 1, in, &failed);
    if (failed) return NULL;
    if (node) {
        node->ip[0] = form;
        node->ip[1] = K;
        node->ip[2] = ones;
        node->ip[3] = halves;
        node->fp[0] = zeta;
    }
    return gg_op_finish(out, __func__, 1, in);
}

gg_tensor *gg_dgconv_regularized_loss(gg_tensor *ce, gg_tensor *const *zetas, int n, double o, double a) {
    GG_CHECK_ARG(ce, NULL);
    char s[GG_SHAPE_STR_MAX];
    if (!zetas || n < 1) {
        GG_FAIL(GG_ERR_ARG, "need n >= 1 zetas, got %d%s", n, zetas ? "" : " (zetas is NULL)");
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        if (!zetas[i]) {
            gg__null_arg(__func__, "zetas[i]");
            return NULL;
        }
        if (zetas[i]->numel != 1) {
            GG_FAIL(GG_ERR_SHAPE, "zetas[%d] must hold one element, got %s", i, GG_SHAPE_STR(zetas[i], s));
            return NULL;
        }
    }
    if (!(o > 0) || !isfinite(o) || !isfinite(a)) {
        GG_FAIL(GG_ERR_ARG, "need a finite budget o > 0 and a finite exponent, got o = %g, a = %g", o, a);
        return NULL;
    }
    double zv = 0;
    for (int i = 0; i < n; i++) {
        float v = 0;
        gg_tensor_item(zetas[i], &v);
        zv += v;
    }
    if (!(zv > o) || a == 0) return gg_mul_scalar(ce, 1.0f); /* exponent 0: L = CE, no zeta gradient */
    gg_tensor *z = gg_reshape(zetas[0], 0, (const int64_t[]){1});
    for (int i = 1; i < n; i++) z = gg_add(z, gg_reshape(zetas[i], 0, (const int64_t[]){1}));
    /* (o / zeta)^a = o^a * zeta^(-a) */
    return gg_mul(ce, gg_mul_scalar(gg_pow(z, (float)-a), (float)pow(o, a)));
}

double gg_dgconv_budget(const int64_t *channels, int n, double b) {
    if (!channels || n < 1 || !(b > 0) || !isfinite(b))
        return GG_FAIL(GG_ERR_ARG, "need n >= 1 channel counts and b > 0, got n = %d, b = %g%s", n, b,
                       channels ? "" : " (channels is NULL)");
    double sum = 0;
    for (int i = 0; i < n; i++) {
        if (channels[i] < 1) return GG_FAIL(GG_ERR_ARG, "channels[%d] = %lld, must be >= 1", i, (long long)channels[i]);
        sum += (double)channels[i] * (double)channels[i];
    }
    return sum / b;
}
