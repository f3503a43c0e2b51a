/* gg_dropout: inverted dropout with a counter-based mask (any shape, float32), forward and backward.
 *
 * x [...] with n elements in row-major order, u[i] = 24-bit uniform of lane i % 4 of Philox4x32-10 block
 * (rng->counter + i / 4) under key rng->seed, exactly what gg_rand_uniform(t, 0, 1, rng) draws:
 *   m[i] = u[i] >= p,  scale = 1 / (1 - p) (float, as PyTorch's noise.div_(1 - p)),
 *   y[i] = x[i] * (m[i] ? scale : 0)            dx[i] += dy[i] * (m[i] ? scale : 0)
 * p == 1: y = x * 0, dx += dy * 0 (PyTorch multiplies by a zero tensor; no draw). The generator advances
 * by ceil(n / 4) counter values. The mask depends only on (seed, counter, i), so it is the same for any
 * thread count; the forward keeps it as one byte per element when recording.
 * The Philox rounds run on 16 blocks at a time in structure-of-arrays form so that the compiler
 * vectorises them (32x32->64-bit multiplies); gg_philox4x32 in tensor/rng.c is the reference. */
#include <math.h>
#include <string.h>

#include "gg_cnn.h"
#include "gg_internal.h"
#include "gg_node.h"
#include "gg_runtime.h"

#define FN "gg_dropout"
#define PAR_MIN 32768 /* elements below which the kernels stay on one thread */
#define BATCH 16      /* Philox blocks per vectorised batch (64 elements) */

/* node->ip layout */
enum { IP_ZERO, IP_N };
/* node->fp layout */
enum { FP_SCALE };

/* Philox4x32-10 of counters base .. base+BATCH-1 under key `seed`; r[l][j] = lane l of block base + j.
 * The counter words live in 64-bit lanes with zero upper halves, so the 32x32->64-bit products compile
 * to vpmuludq (with 32-bit lanes GCC widens and uses the slow 64x64 multiply). */
static inline void philox_batch(uint64_t seed, uint64_t base, uint32_t r[4][BATCH]) {
    uint64_t c0[BATCH], c1[BATCH], c2[BATCH], c3[BATCH];
    for (int j = 0; j < BATCH; j++) {
        uint64_t ctr = base + (uint64_t)j;
        c0[j] = ctr & 0xFFFFFFFFu, c1[j] = ctr >> 32, c2[j] = 0, c3[j] = 0;
    }
    uint64_t k0 = seed & 0xFFFFFFFFu, k1 = seed >> 32;
    for (int round = 0; round < 10; round++) {
        for (int j = 0; j < BATCH; j++) {
            const uint64_t p0 = 0xD2511F53u * (c0[j] & 0xFFFFFFFFu), p1 = 0xCD9E8D57u * (c2[j] & 0xFFFFFFFFu);
            const uint64_t n0 = ((p1 >> 32) ^ c1[j] ^ k0) & 0xFFFFFFFFu, n2 = ((p0 >> 32) ^ c3[j] ^ k1) & 0xFFFFFFFFu;
            c1[j] = p1 & 0xFFFFFFFFu;
            c3[j] = p0 & 0xFFFFFFFFu;
            c0[j] = n0;
            c2[j] = n2;
        }
        k0 = (k0 + 0x9E3779B9u) & 0xFFFFFFFFu;
        k1 = (k1 + 0xBB67AE85u) & 0xFFFFFFFFu;
    }
    for (int j = 0; j < BATCH; j++)
        r[0][j] = (uint32_t)c0[j], r[1][j] = (uint32_t)c1[j], r[2][j] = (uint32_t)c2[j], r[3][j] = (uint32_t)c3[j];
}

/* y = x * mask * scale over n elements; mask bytes written when `mask` is non-NULL. thr = the smallest
 * 24-bit value u with u * 2^-24 >= p. */
static void dropout_kernel(const float *x, float *y, unsigned char *mask, int64_t n, uint64_t seed,
                           uint64_t counter, uint32_t thr, float scale) {
    const int64_t per = 4 * BATCH, batches = (n + per - 1) / per;
    const int nt = n > PAR_MIN ? gg_get_num_threads() : 1;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t bi = 0; bi < batches; bi++) {
        uint32_t r[4][BATCH];
        philox_batch(seed, counter + (uint64_t)(bi * BATCH), r);
        const int64_t i0 = bi * per;
        unsigned char keep[4 * BATCH];
        for (int j = 0; j < BATCH; j++)
            for (int l = 0; l < 4; l++) keep[4 * j + l] = (r[l][j] >> 8) >= thr;
        const int64_t m = n - i0 < per ? n - i0 : per;
        for (int64_t k = 0; k < m; k++) y[i0 + k] = x[i0 + k] * (keep[k] ? scale : 0.0f);
        if (mask) memcpy(mask + i0, keep, (size_t)m);
    }
}

static int dropout_backward(gg_node *node, const gg_tensor *gout) {
    gg_tensor *gx = gg_node_grad(node, 0);
    if (!gx)
        return gg_node_needs_grad(node, 0)
                   ? (gg_last_status() ? gg_last_status() : gg_error_set(GG_ERR_NOMEM, FN, "cannot allocate the gradient"))
                   : GG_OK;
    const int64_t n = node->ip[IP_N];
    const float *dy = gg_tensor_data(gout);
    float *dx = gg_tensor_data(gx);
    const int nt = n > PAR_MIN ? gg_get_num_threads() : 1;
    if (node->ip[IP_ZERO]) {
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t i = 0; i < n; i++) dx[i] += dy[i] * 0.0f;
        return GG_OK;
    }
    if (node->n_saved < 1) return gg_error_set(GG_ERR_STATE, FN, "backward: the mask was not saved");
    const unsigned char *mask = (const unsigned char *)gg_tensor_data(node->saved[0]);
    const float scale = (float)node->fp[FP_SCALE];
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t i = 0; i < n; i++) dx[i] += dy[i] * (mask[i] ? scale : 0.0f);
    return GG_OK;
}

static const gg_op_def DROPOUT_OP = {"dropout", dropout_backward};

gg_tensor *gg_dropout(gg_tensor *x, float p, bool training, gg_rng *rng) {
    GG_CHECK_ARG(x, NULL);
    if (!(p >= 0 && p <= 1)) {
        char s[GG_SHAPE_STR_MAX];
        gg_error_set(GG_ERR_ARG, FN, "dropout probability must lie in [0, 1], got %g (x %s)", (double)p,
                     GG_SHAPE_STR(x, s));
        return NULL;
    }
    if (!training || p == 0 || x->numel == 0) return x;
    if (!rng) rng = gg_rng_default();
    const int64_t n = x->numel;
    gg_tensor *in[1] = {x};
    const bool zero = p == 1;
    const bool rec = gg_op_needs_grad(1, in);
    gg_tensor *xc = gg_tensor_contiguous(x);
    gg_tensor *out = xc ? gg_op_output(x->ndim, x->shape, FN) : NULL;
    /* the byte mask lives in a float tensor's storage (bytes may alias any object) */
    gg_tensor *mask = out && rec && !zero ? gg_tensor_empty(1, (const int64_t[]){(n + 3) / 4}) : NULL;
    if (!out || (rec && !zero && !mask)) {
        gg_tensor_free(xc);
        return NULL;
    }
    const float scale = zero ? 0.0f : 1.0f / (float)(1.0 - (double)p);
    const float *xp = gg_tensor_data(xc);
    float *yp = gg_tensor_data(out);
    if (zero) {
        for (int64_t i = 0; i < n; i++) yp[i] = xp[i] * 0.0f;
    } else {
        const uint32_t thr = (uint32_t)ceil((double)p * 0x1p24);
        dropout_kernel(xp, yp, mask ? (unsigned char *)gg_tensor_data(mask) : NULL, n, rng->seed, rng->counter,
                       thr, scale);
        rng->counter += (uint64_t)(n + 3) / 4;
    }
    gg_tensor_free(xc);
    bool failed;
    gg_node *node = gg_op_record(&DROPOUT_OP, out, 1, in, &failed);
    int st = failed ? GG_ERR_NOMEM : GG_OK;
    if (node) {
        node->ip[IP_ZERO] = zero;
        node->ip[IP_N] = n;
        node->fp[FP_SCALE] = scale;
        if (mask) st = gg_node_save(node, mask);
    }
    gg_tensor_free(mask);
    if (st) return NULL;
    return gg_op_finish(out, FN, 1, in);
}
