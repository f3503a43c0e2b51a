/* 2-D Kronecker product (torch.kron for 2-D inputs), differentiable in both factors.
 *   a [p, q], b [r, s] -> y [p*r, q*s],  y[i*r+k, j*s+l] = a[i,j] * b[k,l]
 *   da[i,j] += sum_{k,l} dy[i*r+k, j*s+l] * b[k,l]      db[k,l] += sum_{i,j} dy[i*r+k, j*s+l] * a[i,j]
 * DGConv builds its grouping matrix as a chain of kron products of 2x2 factors, so the kernels are plain
 * loops over rows of y that stay cheap for small factors; reductions accumulate in double. */
#include "gg_internal.h"
#include "gg_node.h"
#include "gg_ops.h"
#include "gg_runtime.h"

#define PAR_MIN 32768 /* elements of y below which the kernels stay single-threaded */

/* ---- kernels: pointers, sizes and element strides only ----
 * Generic loops take every size and stride at run time. For unit-stride rows they are also instantiated
 * with the width s of b as a compile-time constant for s in {1, 2, 3, 4, 8} (the DGConv chain
 * kron(kron(A, B), C) has s = 2), so that the compiler unrolls the loop over l and vectorizes over j.
 * Wider rows of b are vectorized over l instead. */

#if defined(__GNUC__)
#define KRON_INLINE static inline __attribute__((always_inline))
#else
#define KRON_INLINE static inline
#endif

/* F(S, A1, B1) with S, A1, B1 constants when both rows are unit-stride and s is a common small width. */
#define KRON_DISPATCH(unit, s, a1, b1, F) \
    do {                                  \
        if (!(unit)) {                    \
            F(s, a1, b1);                 \
            break;                        \
        }                                 \
        switch (s) {                      \
        case 1:                           \
            F(1, 1, 1);                   \
            break;                        \
        case 2:                           \
            F(2, 1, 1);                   \
            break;                        \
        case 3:                           \
            F(3, 1, 1);                   \
            break;                        \
        case 4:                           \
            F(4, 1, 1);                   \
            break;                        \
        case 8:                           \
            F(8, 1, 1);                   \
            break;                        \
        default:                          \
            F(s, 1, 1);                   \
            break;                        \
        }                                 \
    } while (0)

#define KRON_CHUNK 256 /* columns accumulated at a time in a double buffer on the stack */

/* One row of y: yr[j*s + l] = ai[j*a1] * bk[l*b1]. */
KRON_INLINE void kron_row(int64_t q, const float *ai, int64_t a1, int64_t s, const float *bk, int64_t b1,
                          float *restrict yr) {
    for (int64_t j = 0; j < q; j++) {
        const float aij = ai[j * a1];
        for (int64_t l = 0; l < s; l++) yr[j * s + l] = aij * bk[l * b1];
    }
}

/* Rows [r0, r1) of y (contiguous, row length q*s). */
static void kron_rows(int64_t q, const float *a, int64_t a0, int64_t a1, int64_t r, int64_t s, const float *b,
                      int64_t b0, int64_t b1, float *y, int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; row++) {
        const float *ai = a + (row / r) * a0, *bk = b + (row % r) * b0;
        float *yr = y + row * q * s;
#define KRON_ROW(S, A1, B1) kron_row(q, ai, A1, S, bk, B1, yr)
        KRON_DISPATCH(a1 == 1 && b1 == 1, s, a1, b1, KRON_ROW);
#undef KRON_ROW
    }
}

static void kron_forward(int64_t p, int64_t q, const float *a, int64_t a0, int64_t a1, int64_t r, int64_t s,
                         const float *b, int64_t b0, int64_t b1, float *y) {
    const int64_t rows = p * r;
    if (rows * q * s <= PAR_MIN) {
        kron_rows(q, a, a0, a1, r, s, b, b0, b1, y, 0, rows);
        return;
    }
#pragma omp parallel for num_threads(gg_get_num_threads())
    for (int64_t row = 0; row < rows; row++) kron_rows(q, a, a0, a1, r, s, b, b0, b1, y, row, row + 1);
}

/* acc[j] += sum_l gr[j*s + l] * bk[l*b1] for j < n: a block of one row of dy against one row of b. */
KRON_INLINE void kron_da_narrow(int64_t n, const float *gr, int64_t s, const float *bk, int64_t b1,
                                double *restrict acc) {
    for (int64_t j = 0; j < n; j++) {
        double t = 0;
        for (int64_t l = 0; l < s; l++) t += (double)gr[j * s + l] * (double)bk[l * b1];
        acc[j] += t;
    }
}
static void kron_da_wide(int64_t n, const float *gr, int64_t s, const float *bk, int64_t b1,
                         double *restrict acc) {
    for (int64_t j = 0; j < n; j++) {
        double t = 0;
#pragma omp simd reduction(+ : t)
        for (int64_t l = 0; l < s; l++) t += (double)gr[j * s + l] * (double)bk[l * b1];
        acc[j] += t;
    }
}

/* da[i,j] += sum_{k,l} g[i*r+k, j*s+l] b[k,l] for rows i in [i0, i1) of da. */
static void kron_grad_a_rows(int64_t q, int64_t r, int64_t s, const float *g, const float *b, int64_t b0,
                             int64_t b1, float *da, int64_t d0, int64_t d1, int64_t i0, int64_t i1) {
    const int64_t qs = q * s;
    double acc[KRON_CHUNK];
    for (int64_t i = i0; i < i1; i++)
        for (int64_t j0 = 0; j0 < q; j0 += KRON_CHUNK) {
            const int64_t n = q - j0 < KRON_CHUNK ? q - j0 : KRON_CHUNK;
            for (int64_t j = 0; j < n; j++) acc[j] = 0;
            for (int64_t k = 0; k < r; k++) {
                const float *gr = g + (i * r + k) * qs + j0 * s, *bk = b + k * b0;
                if (s > 8) {
                    kron_da_wide(n, gr, s, bk, b1, acc);
                } else {
#define KRON_DA(S, A1, B1) kron_da_narrow(n, gr, S, bk, B1, acc)
                    KRON_DISPATCH(b1 == 1, s, 1, b1, KRON_DA);
#undef KRON_DA
                }
            }
            for (int64_t j = 0; j < n; j++) da[i * d0 + (j0 + j) * d1] += (float)acc[j];
        }
}

/* acc[j*s + l] += gr[j*s + l] * ai[j*a1] for j < n, l < s: a block of one row of dy scaled by a row of a
 * expanded s times (vectorizes over the whole block; the sum over j is folded afterwards). */
KRON_INLINE void kron_db_scale(int64_t n, const float *gr, int64_t s, const float *ai, int64_t a1,
                               double *restrict acc) {
    for (int64_t j = 0; j < n; j++) {
        const double aij = ai[j * a1];
        for (int64_t l = 0; l < s; l++) acc[j * s + l] += (double)gr[j * s + l] * aij;
    }
}

/* db[k,l] += sum_{i,j} g[i*r+k, j*s+l] a[i,j] for rows k in [k0, k1) of db. Blocks of columns of dy
 * (whole groups of s) are accumulated over i in a double buffer, then folded over j. */
static void kron_grad_b_rows(int64_t p, int64_t q, const float *a, int64_t a0, int64_t a1, int64_t r,
                             int64_t s, const float *g, float *db, int64_t d0, int64_t d1, int64_t k0,
                             int64_t k1) {
    const int64_t qs = q * s;
    double acc[KRON_CHUNK];
    for (int64_t k = k0; k < k1; k++) {
        if (s <= KRON_CHUNK) {
            const int64_t jn = KRON_CHUNK / s; /* groups of s columns per block */
            double t[KRON_CHUNK];
            for (int64_t l = 0; l < s; l++) t[l] = 0;
            for (int64_t j0 = 0; j0 < q; j0 += jn) {
                const int64_t n = q - j0 < jn ? q - j0 : jn;
                for (int64_t e = 0; e < n * s; e++) acc[e] = 0;
                for (int64_t i = 0; i < p; i++) {
                    const float *gr = g + (i * r + k) * qs + j0 * s, *ai = a + i * a0 + j0 * a1;
#define KRON_DB(S, A1, B1) kron_db_scale(n, gr, S, ai, A1, acc)
                    KRON_DISPATCH(a1 == 1, s, a1, 1, KRON_DB);
#undef KRON_DB
                }
                for (int64_t j = 0; j < n; j++)
                    for (int64_t l = 0; l < s; l++) t[l] += acc[j * s + l];
            }
            for (int64_t l = 0; l < s; l++) db[k * d0 + l * d1] += (float)t[l];
            continue;
        }
        for (int64_t l0 = 0; l0 < s; l0 += KRON_CHUNK) { /* very wide rows: blocks of one group */
            const int64_t n = s - l0 < KRON_CHUNK ? s - l0 : KRON_CHUNK;
            for (int64_t l = 0; l < n; l++) acc[l] = 0;
            for (int64_t i = 0; i < p; i++)
                for (int64_t j = 0; j < q; j++) {
                    const double aij = a[i * a0 + j * a1];
                    const float *gr = g + (i * r + k) * qs + j * s + l0;
                    for (int64_t l = 0; l < n; l++) acc[l] += (double)gr[l] * aij;
                }
            for (int64_t l = 0; l < n; l++) db[k * d0 + (l0 + l) * d1] += (float)acc[l];
        }
    }
}

/* ---- op ---- */

static int kron_backward(gg_node *n, const gg_tensor *gout) {
    const gg_tensor *a = n->in[0], *b = n->in[1];
    const int64_t p = a->shape[0], q = a->shape[1], r = b->shape[0], s = b->shape[1];
    const bool par = gout->numel > PAR_MIN;
    const float *g = gg_tensor_data(gout);
    gg_tensor *da = gg_node_grad(n, 0), *db = gg_node_grad(n, 1);
    if ((!da && gg_node_needs_grad(n, 0)) || (!db && gg_node_needs_grad(n, 1)))
        return gg_last_status() ? gg_last_status() : GG_ERR_NOMEM;
    if (da) { /* needs b, saved at ip[1] */
        const gg_tensor *bs = n->saved[n->ip[1]];
        const float *bp = gg_tensor_data(bs);
        float *dp = gg_tensor_data(da);
        if (!par) {
            kron_grad_a_rows(q, r, s, g, bp, bs->stride[0], bs->stride[1], dp, da->stride[0], da->stride[1],
                             0, p);
        } else {
#pragma omp parallel for num_threads(gg_get_num_threads())
            for (int64_t i = 0; i < p; i++)
                kron_grad_a_rows(q, r, s, g, bp, bs->stride[0], bs->stride[1], dp, da->stride[0],
                                 da->stride[1], i, i + 1);
        }
    }
    if (db) { /* needs a, saved at ip[0] */
        const gg_tensor *as = n->saved[n->ip[0]];
        const float *ap = gg_tensor_data(as);
        float *dp = gg_tensor_data(db);
        if (!par) {
            kron_grad_b_rows(p, q, ap, as->stride[0], as->stride[1], r, s, g, dp, db->stride[0],
                             db->stride[1], 0, r);
        } else {
#pragma omp parallel for num_threads(gg_get_num_threads())
            for (int64_t k = 0; k < r; k++)
                kron_grad_b_rows(p, q, ap, as->stride[0], as->stride[1], r, s, g, dp, db->stride[0],
                                 db->stride[1], k, k + 1);
        }
    }
    return GG_OK;
}
static const gg_op_def KRON_OP = {"kron", kron_backward};

gg_tensor *gg_kron(gg_tensor *a, gg_tensor *b) {
    char sa[GG_SHAPE_STR_MAX], sb[GG_SHAPE_STR_MAX];
    GG_CHECK_ARG(a, NULL);
    GG_CHECK_ARG(b, NULL);
    if (a->ndim != 2 || b->ndim != 2) {
        GG_FAIL(GG_ERR_SHAPE, "needs 2-D factors, got a %s and b %s", GG_SHAPE_STR(a, sa),
                GG_SHAPE_STR(b, sb));
        return NULL;
    }
    const int64_t p = a->shape[0], q = a->shape[1], r = b->shape[0], s = b->shape[1];
    int64_t shape[2];
    if (__builtin_mul_overflow(p, r, &shape[0]) || __builtin_mul_overflow(q, s, &shape[1]) ||
        gg_shape_numel(2, shape, __func__) < 0) {
        GG_FAIL(GG_ERR_OVERFLOW, "the product of a %s and b %s is too large", GG_SHAPE_STR(a, sa),
                GG_SHAPE_STR(b, sb));
        return NULL;
    }
    gg_tensor *y = gg_op_output(2, shape, __func__);
    if (!y) return NULL;
    if (y->numel > 0)
        kron_forward(p, q, gg_tensor_data(a), a->stride[0], a->stride[1], r, s, gg_tensor_data(b),
                     b->stride[0], b->stride[1], gg_tensor_data(y));
    gg_tensor *in[2] = {a, b};
    bool failed;
    gg_node *node = gg_op_record(&KRON_OP, y, 2, in, &failed);
    if (failed) return NULL;
    if (node) { /* da needs b, db needs a: save only what a needed gradient uses */
        node->ip[0] = node->ip[1] = -1;
        int st = GG_OK;
        if (gg_node_needs_grad(node, 1)) node->ip[0] = node->n_saved, st = gg_node_save(node, a);
        if (!st && gg_node_needs_grad(node, 0)) node->ip[1] = node->n_saved, st = gg_node_save(node, b);
        if (st) return NULL;
    }
    return gg_op_finish(y, __func__, 2, in);
}
