/* Matrix products: gg_matmul (torch.matmul semantics) and gg_linear (x W^T + b), forward and backward
 * through one batched-gemm engine that hands strided matrices straight to BLIS.
 *
 * matmul   a [.., M, K] @ b [.., K, N] -> C [.., M, N]; the batch dims (all but the last two) broadcast
 *          with NumPy rules. A 1-D a [K] acts as [1, K] and a 1-D b [K] as [K, 1]; that added dim is
 *          removed from the result (1-D @ 1-D gives a scalar), as torch.matmul.
 *          C[i] = A[i] B[i]                 for every batch index i
 *          dA[i] += dC[i] B[i]^T            summed over the i that share one entry of a (broadcast)
 *          dB[i] += A[i]^T dC[i]            likewise for b
 * linear   x [.., in], w [out, in], bias [out] or NULL -> y [.., out]   (torch.nn.functional.linear)
 *          y = x W^T + bias;  dx += dy W;  dW += dy^T x;  dbias += sum of dy over all leading dims.
 *
 * Kernels see pointers, sizes and strides only (gg__sgemm, gg__sgemm_ref in tensor/blis_backend.c).
 * A transposed or otherwise strided operand is passed as strides when each of its matrices has unit
 * stride in one dimension; other layouts (e.g. stride-0 expanded matrix dims) are copied to contiguous
 * memory first. Batch loops call BLIS serially from the calling thread (BLIS threads inside each call);
 * gradient buffers are accumulated with beta = 1, so a broadcast operand's gradient is reduced by the
 * loop itself and no temporary is needed. Batch dims that line up with the rows (or columns, or the
 * reduction) of every operand are folded into one larger gemm: x [B, T, in] W^T is a single call. */
#include <stdlib.h>
#include <string.h>

#include "gg_backend.h"
#include "gg_internal.h"
#include "gg_node.h"
#include "gg_ops.h"
#include "gg_runtime.h"

/* A BLIS call costs about 2.5 us however small the product (measured on the Zen 5 target with its AVX-512
 * kernels), so products below MM_SMALL multiply-adds run a plain C loop whatever their layout, and those
 * below MM_SMALL_VEC too when rows of B and C are contiguous and long enough for the vectorised loop
 * (square products break even near 24^3). */
#define MM_SMALL 4096.0
#define MM_SMALL_VEC 16384.0

static bool use_loop(int64_t m, int64_t n, int64_t k, int64_t csb, int64_t csc) {
    double macs = (double)m * (double)n * (double)k;
    return macs < MM_SMALL || (macs < MM_SMALL_VEC && csb == 1 && csc == 1 && n >= 16);
}

/* How an operand tensor maps to matrices: the left factor (1-D [K] acts as a row [1, K]), the right
 * factor (1-D [K] acts as a column [K, 1]), or a 2-D weight [out, in] read transposed as [in, out]. */
enum { MM_LEFT, MM_RIGHT, MM_WEIGHT_T };

/* A batch of matrices in one buffer: entry `i` (a multi-index over the batch dims) has its element
 * (r, c) at p[sum_d i_d * bs[d] + r * rs + c * cs]. bs[d] == 0 along dims the operand is broadcast on. */
typedef struct mm_mat {
    float *p;
    int64_t rs, cs;
    int64_t bs[GG_MAX_DIMS];
} mm_mat;

/* C[i] = alpha A[i] B[i] + beta C[i] over the batch: A m x k, B k x n, C m x n. */
typedef struct mm_gemm {
    int nb;
    int64_t batch[GG_MAX_DIMS];
    int64_t m, n, k;
    mm_mat a, b, c;
} mm_gemm;

/* Sizes of a product and of its result. */
typedef struct mm_dims {
    int nb; /* broadcast batch dims */
    int64_t batch[GG_MAX_DIMS];
    int64_t m, n, k;
    int nd_out; /* result rank (the M or N dim of a 1-D operand removed) */
    int64_t out[GG_MAX_DIMS];
} mm_dims;

/* ---- argument checks ---- */

static int batch_rank(const gg_tensor *t, int role) {
    return role == MM_WEIGHT_T || t->ndim < 2 ? 0 : t->ndim - 2;
}

/* Sizes of a @ b, where b is a matmul right factor (MM_RIGHT) or a linear weight (MM_WEIGHT_T, already
 * checked to be 2-D). Records an error naming `func` and both shapes on a mismatch. */
static int product_dims(const gg_tensor *a, const gg_tensor *b, int role_b, const char *func, mm_dims *d) {
    char sa[GG_SHAPE_STR_MAX], sb[GG_SHAPE_STR_MAX];
    const char *an = role_b == MM_WEIGHT_T ? "x" : "a", *bn = role_b == MM_WEIGHT_T ? "w" : "b";
    if (a->ndim == 0 || b->ndim == 0)
        return gg_error_set(GG_ERR_SHAPE, func,
                            "%s is a scalar: operands need at least one dimension (%s %s, %s %s)",
                            a->ndim == 0 ? an : bn, an, GG_SHAPE_STR(a, sa), bn, GG_SHAPE_STR(b, sb));
    int64_t ka = a->shape[a->ndim - 1];
    int64_t kb = role_b == MM_WEIGHT_T ? b->shape[1] : (b->ndim == 1 ? b->shape[0] : b->shape[b->ndim - 2]);
    if (ka != kb) {
        if (role_b == MM_WEIGHT_T)
            return gg_error_set(GG_ERR_SHAPE, func, "x %s has %lld input features, weight %s expects %lld",
                                GG_SHAPE_STR(a, sa), (long long)ka, GG_SHAPE_STR(b, sb), (long long)kb);
        return gg_error_set(GG_ERR_SHAPE, func, "inner dimensions differ: a %s @ b %s (%lld vs %lld)",
                            GG_SHAPE_STR(a, sa), GG_SHAPE_STR(b, sb), (long long)ka, (long long)kb);
    }
    int nba = batch_rank(a, MM_LEFT), nbb = batch_rank(b, role_b);
    d->nb = nba > nbb ? nba : nbb;
    for (int i = 0; i < d->nb; i++) {
        int ia = i - (d->nb - nba), ib = i - (d->nb - nbb);
        int64_t x = ia >= 0 ? a->shape[ia] : 1, y = ib >= 0 ? b->shape[ib] : 1;
        if (x != y && x != 1 && y != 1)
            return gg_error_set(GG_ERR_SHAPE, func,
                                "batch dimensions do not broadcast: a %s @ b %s (batch dim %d: %lld vs %lld)",
                                GG_SHAPE_STR(a, sa), GG_SHAPE_STR(b, sb), i, (long long)x, (long long)y);
        d->batch[i] = x == 1 ? y : x;
    }
    d->k = ka;
    d->m = a->ndim >= 2 ? a->shape[a->ndim - 2] : 1;
    d->n = role_b == MM_WEIGHT_T ? b->shape[0] : (b->ndim >= 2 ? b->shape[b->ndim - 1] : 1);
    d->nd_out = d->nb;
    memcpy(d->out, d->batch, sizeof d->out);
    if (a->ndim >= 2) d->out[d->nd_out++] = d->m;
    if (role_b == MM_WEIGHT_T || b->ndim >= 2) d->out[d->nd_out++] = d->n;
    return gg_shape_numel(d->nd_out, d->out, func) < 0 ? gg_last_status() : GG_OK;
}

/* ---- operand geometry ---- */

/* Matrix strides of t (given its strides `st`: its own, or contiguous ones for its gradient buffer). */
static void mat_strides(const gg_tensor *t, const int64_t *st, int role, int64_t *rs, int64_t *cs) {
    int nd = t->ndim;
    if (role == MM_WEIGHT_T) *rs = st[1], *cs = st[0];
    else if (nd == 1 && role == MM_LEFT) *rs = 0, *cs = st[0]; /* one row */
    else if (nd == 1) *rs = st[0], *cs = 0;                    /* one column */
    else *rs = st[nd - 2], *cs = st[nd - 1];
}

/* t (with strides st, data at base) as a batch of matrices aligned to the batch shape of d. */
static mm_mat mat_of(const gg_tensor *t, const int64_t *st, float *base, int role, const mm_dims *d) {
    mm_mat v = {.p = base};
    mat_strides(t, st, role, &v.rs, &v.cs);
    int tb = batch_rank(t, role);
    for (int i = 0; i < d->nb; i++) {
        int ti = i - (d->nb - tb);
        v.bs[i] = (ti >= 0 && t->shape[ti] == d->batch[i]) ? st[ti] : 0;
    }
    return v;
}

/* The gradient buffer of t (contiguous, t's shape) as a batch of matrices. */
static mm_mat grad_mat(const gg_tensor *t, gg_tensor *g, int role, const mm_dims *d) {
    int64_t st[GG_MAX_DIMS];
    gg__contiguous_strides(t->ndim, t->shape, st);
    return mat_of(t, st, gg_tensor_data(g), role, d);
}

/* The result (or its gradient): contiguous [batch.., m, n]; a removed size-1 dim does not change that. */
static mm_mat out_mat(float *p, const mm_dims *d) {
    mm_mat v = {.p = p, .rs = d->n, .cs = 1};
    int64_t s = d->m * d->n;
    for (int i = d->nb - 1; i >= 0; i--) v.bs[i] = s, s *= d->batch[i];
    return v;
}

static mm_mat transposed(mm_mat v) {
    int64_t r = v.rs;
    v.rs = v.cs;
    v.cs = r;
    return v;
}

/* t itself (a new reference) if BLIS can read each of its matrices in place, else a contiguous copy. */
static gg_tensor *blis_ready(gg_tensor *t, int role, int64_t rows, int64_t cols) {
    int64_t rs, cs;
    mat_strides(t, t->stride, role, &rs, &cs);
    if (gg__sgemm_layout_ok(rows, cols, rs, cs)) return gg_tensor_retain(t);
    return gg_tensor_contiguous(t);
}

/* ---- the batched gemm engine ---- */

/* C = alpha A B + beta C for one matrix: a plain loop for tiny products, BLIS otherwise. */
static void gemm1(int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t rsa, int64_t csa,
                  const float *b, int64_t rsb, int64_t csb, float beta, float *c, int64_t rsc, int64_t csc) {
    if (!use_loop(m, n, k, csb, csc)) {
        gg__sgemm(false, false, m, n, k, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc);
    } else if (csb == 1 && csc == 1) { /* rows of B and C contiguous: the j loop vectorises */
        for (int64_t i = 0; i < m; i++) {
            float *restrict ci = c + i * rsc;
            if (beta == 0.0f) memset(ci, 0, (size_t)n * sizeof(float));
            else if (beta != 1.0f)
                for (int64_t j = 0; j < n; j++) ci[j] *= beta;
            for (int64_t p = 0; p < k; p++) {
                const float *restrict bp = b + p * rsb;
                float s = alpha * a[i * rsa + p * csa];
                for (int64_t j = 0; j < n; j++) ci[j] += s * bp[j];
            }
        }
    } else {
        gg__sgemm_ref(false, false, m, n, k, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc);
    }
}

/* Can every matrix of g be handed to BLIS as it is? (Folding must not create a layout it rejects.) */
static bool layouts_ok(const mm_gemm *g) {
    return gg__sgemm_layout_ok(g->m, g->k, g->a.rs, g->a.cs) &&
           gg__sgemm_layout_ok(g->k, g->n, g->b.rs, g->b.cs) &&
           gg__sgemm_layout_ok(g->m, g->n, g->c.rs, g->c.cs);
}

/* Drop size-1 batch dims, merge adjacent batch dims that are uniformly strided in all three operands,
 * then fold the innermost batch dim into m, n or k where the strides continue the matrix's own. A fold
 * into k sums the batch into C, which is right only because C then has batch stride 0 and beta == 1. */
static void simplify(mm_gemm *g) {
    int nb = 0;
    for (int i = 0; i < g->nb; i++) {
        if (g->batch[i] == 1) continue;
        if (nb > 0) {
            int j = nb - 1;
            int64_t s = g->batch[i];
            if (g->a.bs[j] == g->a.bs[i] * s && g->b.bs[j] == g->b.bs[i] * s &&
                g->c.bs[j] == g->c.bs[i] * s) {
                g->batch[j] *= s;
                g->a.bs[j] = g->a.bs[i], g->b.bs[j] = g->b.bs[i], g->c.bs[j] = g->c.bs[i];
                continue;
            }
        }
        g->batch[nb] = g->batch[i];
        g->a.bs[nb] = g->a.bs[i], g->b.bs[nb] = g->b.bs[i], g->c.bs[nb] = g->c.bs[i];
        nb++;
    }
    g->nb = nb;
    while (g->nb > 0) {
        int j = g->nb - 1;
        int64_t s = g->batch[j];
        mm_gemm f = *g;
        f.nb = j;
        if (g->b.bs[j] == 0 && g->a.bs[j] == g->m * g->a.rs && g->c.bs[j] == g->m * g->c.rs) f.m *= s;
        else if (g->a.bs[j] == 0 && g->b.bs[j] == g->n * g->b.cs && g->c.bs[j] == g->n * g->c.cs) f.n *= s;
        else if (g->c.bs[j] == 0 && g->a.bs[j] == g->k * g->a.cs && g->b.bs[j] == g->k * g->b.rs) f.k *= s;
        else break;
        if (!layouts_ok(&f)) break;
        *g = f;
    }
}

/* Batch entry t (row-major over g->batch). */
static void mm_entry(const mm_gemm *g, int64_t t, float alpha, float beta) {
    int64_t oa = 0, ob = 0, oc = 0;
    for (int i = g->nb - 1; i >= 0; i--) {
        int64_t ii = t % g->batch[i];
        t /= g->batch[i];
        oa += ii * g->a.bs[i], ob += ii * g->b.bs[i], oc += ii * g->c.bs[i];
    }
    gemm1(g->m, g->n, g->k, alpha, g->a.p + oa, g->a.rs, g->a.cs, g->b.p + ob, g->b.rs, g->b.cs, beta,
          g->c.p + oc, g->c.rs, g->c.cs);
}

/* Run g. beta must be 1 when C is shared by several batch entries (batch stride 0: a reduction). */
static void mm_run(mm_gemm *g, float alpha, float beta) {
    if (g->m == 0 || g->n == 0) return;
    simplify(g);
    int64_t total = 1;
    bool c_distinct = true; /* every batch entry writes its own C */
    for (int i = 0; i < g->nb; i++) total *= g->batch[i], c_distinct = c_distinct && g->c.bs[i] != 0;
    if (total == 0) return;
    bool small = use_loop(g->m, g->n, g->k, g->b.cs, g->c.cs);
    int nt = gg_get_num_threads();
    if (small && c_distinct && nt > 1 &&
        (double)total * (double)g->m * (double)g->n * (double)g->k > 65536.0) {
        /* many tiny matrices: spread the batch over OpenMP threads (plain C kernel only) */
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t t = 0; t < total; t++) mm_entry(g, t, alpha, beta);
    } else {
        /* serial, outside any OpenMP region: BLIS runs its own threads inside each call */
        for (int64_t t = 0; t < total; t++) mm_entry(g, t, alpha, beta);
    }
}

/* A single product small enough for the plain loop. */
static bool tiny_unbatched(const mm_dims *d) {
    for (int i = 0; i < d->nb; i++)
        if (d->batch[i] != 1) return false;
    return (double)d->m * (double)d->n * (double)d->k < MM_SMALL;
}

/* ---- shared forward and backward of a @ b (b a matmul right factor or a transposed linear weight) ---- */

/* out = a @ b (+ whatever out already holds when beta == 1). Returns a status. */
static int product_forward(gg_tensor *a, gg_tensor *b, int role_b, const mm_dims *d, gg_tensor *out,
                           float beta) {
    if (tiny_unbatched(d)) { /* the plain loop takes any strides: no copies, no plan */
        int64_t rsa, csa, rsb, csb;
        mat_strides(a, a->stride, MM_LEFT, &rsa, &csa);
        mat_strides(b, b->stride, role_b, &rsb, &csb);
        gemm1(d->m, d->n, d->k, 1.0f, gg_tensor_data(a), rsa, csa, gg_tensor_data(b), rsb, csb, beta,
              gg_tensor_data(out), d->n, 1);
        return GG_OK;
    }
    gg_tensor *ac = blis_ready(a, MM_LEFT, d->m, d->k);
    gg_tensor *bc = ac ? blis_ready(b, role_b, d->k, d->n) : NULL;
    if (!bc) {
        gg_tensor_free(ac);
        return gg_last_status();
    }
    mm_gemm g = {.nb = d->nb, .m = d->m, .n = d->n, .k = d->k};
    memcpy(g.batch, d->batch, sizeof g.batch);
    g.a = mat_of(ac, ac->stride, gg_tensor_data(ac), MM_LEFT, d);
    g.b = mat_of(bc, bc->stride, gg_tensor_data(bc), role_b, d);
    g.c = out_mat(gg_tensor_data(out), d);
    mm_run(&g, 1.0f, beta);
    gg_tensor_free(ac);
    gg_tensor_free(bc);
    return GG_OK;
}

/* da += dC B^T and db += A^T dC (either gradient may be NULL: not needed). a and b are the saved inputs
 * (NULL when the other gradient is not needed); ta, tb their shapes. */
static int product_backward(const char *func, const gg_tensor *ta, const gg_tensor *tb, gg_tensor *a,
                            gg_tensor *b, int role_b, gg_tensor *da, gg_tensor *db, const gg_tensor *gout) {
    mm_dims d;
    int st = product_dims(ta, tb, role_b, func, &d);
    if (st) return st;
    if (tiny_unbatched(&d)) {
        int64_t rs, cs, grs, gcs, gst[GG_MAX_DIMS];
        if (da) { /* dA (m x k) += dC (m x n) @ B^T (n x k) */
            mat_strides(b, b->stride, role_b, &rs, &cs);
            gg__contiguous_strides(ta->ndim, ta->shape, gst);
            mat_strides(ta, gst, MM_LEFT, &grs, &gcs);
            gemm1(d.m, d.k, d.n, 1.0f, gg_tensor_data(gout), d.n, 1, gg_tensor_data(b), cs, rs, 1.0f,
                  gg_tensor_data(da), grs, gcs);
        }
        if (db) { /* dB (k x n) += A^T (k x m) @ dC (m x n) */
            mat_strides(a, a->stride, MM_LEFT, &rs, &cs);
            gg__contiguous_strides(tb->ndim, tb->shape, gst);
            mat_strides(tb, gst, role_b, &grs, &gcs);
            gemm1(d.k, d.n, d.m, 1.0f, gg_tensor_data(a), cs, rs, gg_tensor_data(gout), d.n, 1, 1.0f,
                  gg_tensor_data(db), grs, gcs);
        }
        return GG_OK;
    }
    mm_mat dc = out_mat(gg_tensor_data(gout), &d);
    if (da) { /* dA[i] (m x k) += dC[i] (m x n) @ B[i]^T (n x k) */
        gg_tensor *bc = blis_ready(b, role_b, d.k, d.n);
        if (!bc) return gg_last_status();
        mm_gemm g = {.nb = d.nb, .m = d.m, .n = d.k, .k = d.n, .a = dc};
        memcpy(g.batch, d.batch, sizeof g.batch);
        g.b = transposed(mat_of(bc, bc->stride, gg_tensor_data(bc), role_b, &d));
        g.c = grad_mat(ta, da, MM_LEFT, &d);
        mm_run(&g, 1.0f, 1.0f);
        gg_tensor_free(bc);
    }
    if (db) { /* dB[i] (k x n) += A[i]^T (k x m) @ dC[i] (m x n) */
        gg_tensor *ac = blis_ready(a, MM_LEFT, d.m, d.k);
        if (!ac) return gg_last_status();
        mm_gemm g = {.nb = d.nb, .m = d.k, .n = d.n, .k = d.m, .b = dc};
        memcpy(g.batch, d.batch, sizeof g.batch);
        g.a = transposed(mat_of(ac, ac->stride, gg_tensor_data(ac), MM_LEFT, &d));
        g.c = grad_mat(tb, db, role_b, &d);
        mm_run(&g, 1.0f, 1.0f);
        gg_tensor_free(ac);
    }
    return GG_OK;
}

/* Fetch the gradient accumulators of inputs 0 and 1; GG_OK or the allocation failure. */
static int two_grads(gg_node *n, gg_tensor **d0, gg_tensor **d1) {
    *d0 = gg_node_grad(n, 0);
    if (!*d0 && gg_node_needs_grad(n, 0)) return gg_last_status();
    *d1 = gg_node_grad(n, 1);
    if (!*d1 && gg_node_needs_grad(n, 1)) return gg_last_status();
    return GG_OK;
}

/* Save what backward needs (dA needs B, dB needs A); ip[0] / ip[1] hold the slots (-1: not saved). */
static void save_factors(gg_node *n, gg_tensor *a, gg_tensor *b) {
    n->ip[0] = n->ip[1] = -1;
    if (gg_node_needs_grad(n, 1)) {
        n->ip[0] = n->n_saved;
        gg_node_save(n, a);
    }
    if (gg_node_needs_grad(n, 0)) {
        n->ip[1] = n->n_saved;
        gg_node_save(n, b);
    }
}

static gg_tensor *saved_at(const gg_node *n, int k) { return n->ip[k] >= 0 ? n->saved[n->ip[k]] : NULL; }

/* ---- gg_matmul ---- */

static int matmul_backward(gg_node *n, const gg_tensor *gout) {
    gg_tensor *da, *db;
    int st = two_grads(n, &da, &db);
    if (st) return st;
    return product_backward("gg_matmul", n->in[0], n->in[1], saved_at(n, 0), saved_at(n, 1), MM_RIGHT, da, db,
                            gout);
}

static const gg_op_def MATMUL_OP = {"matmul", matmul_backward};

gg_tensor *gg_matmul(gg_tensor *a, gg_tensor *b) {
    GG_CHECK_ARG(a, NULL);
    GG_CHECK_ARG(b, NULL);
    mm_dims d;
    if (product_dims(a, b, MM_RIGHT, "gg_matmul", &d)) return NULL;
    gg_tensor *out = gg_op_output(d.nd_out, d.out, "gg_matmul");
    if (!out) return NULL;
    if (product_forward(a, b, MM_RIGHT, &d, out, 0.0f)) return NULL;
    gg_tensor *in[2] = {a, b};
    bool failed;
    gg_node *node = gg_op_record(&MATMUL_OP, out, 2, in, &failed);
    if (failed) return NULL;
    if (node) save_factors(node, a, b);
    return gg_op_finish(out, "gg_matmul", 2, in);
}

/* ---- gg_linear ---- */

/* dbias[j] += sum_r dy[r, j] over the rows dy [rows, out]; double accumulation, columns in blocks. */
static void bias_backward(float *db, const float *dy, int64_t rows, int64_t out) {
    int nt = gg_get_num_threads();
    int64_t nblk = (out + 63) / 64;
#pragma omp parallel for num_threads(nt) if (rows * out > 32768 && nblk > 1) schedule(static)
    for (int64_t blk = 0; blk < nblk; blk++) {
        int64_t j0 = blk * 64, w = out - j0 < 64 ? out - j0 : 64;
        double acc[64] = {0};
        for (int64_t r = 0; r < rows; r++) {
            const float *row = dy + r * out + j0;
            for (int64_t j = 0; j < w; j++) acc[j] += row[j];
        }
        for (int64_t j = 0; j < w; j++) db[j0 + j] += (float)acc[j];
    }
}

static int linear_backward(gg_node *n, const gg_tensor *gout) {
    gg_tensor *dx, *dw;
    int st = two_grads(n, &dx, &dw);
    if (st) return st;
    if (dx || dw)
        st = product_backward("gg_linear", n->in[0], n->in[1], saved_at(n, 0), saved_at(n, 1), MM_WEIGHT_T,
                              dx, dw, gout);
    if (st || n->n_in < 3) return st;
    gg_tensor *db = gg_node_grad(n, 2);
    if (!db) return gg_node_needs_grad(n, 2) ? gg_last_status() : GG_OK;
    int64_t out = db->numel;
    bias_backward(gg_tensor_data(db), gg_tensor_data(gout), out ? gout->numel / out : 0, out);
    return GG_OK;
}

static const gg_op_def LINEAR_OP = {"linear", linear_backward};

gg_tensor *gg_linear(gg_tensor *x, gg_tensor *w, gg_tensor *b) {
    char sx[GG_SHAPE_STR_MAX], sw[GG_SHAPE_STR_MAX], sb[GG_SHAPE_STR_MAX];
    GG_CHECK_ARG(x, NULL);
    GG_CHECK_ARG(w, NULL);
    if (w->ndim != 2) {
        GG_FAIL(GG_ERR_SHAPE, "weight must be 2-D [out, in], got w %s (x %s)", GG_SHAPE_STR(w, sw),
                GG_SHAPE_STR(x, sx));
        return NULL;
    }
    if (b && (b->ndim != 1 || b->shape[0] != w->shape[0])) {
        GG_FAIL(GG_ERR_SHAPE, "bias %s does not match weight %s: expected [%lld] (x %s)", GG_SHAPE_STR(b, sb),
                GG_SHAPE_STR(w, sw), (long long)w->shape[0], GG_SHAPE_STR(x, sx));
        return NULL;
    }
    mm_dims d;
    if (product_dims(x, w, MM_WEIGHT_T, "gg_linear", &d)) return NULL;
    gg_tensor *y = gg_op_output(d.nd_out, d.out, "gg_linear");
    if (!y) return NULL;
    if (b && y->numel > 0) { /* y rows start as the bias; the gemm then adds x W^T (beta = 1) */
        float *yp = gg_tensor_data(y);
        const float *bp = gg_tensor_data(b);
        int64_t bs = b->stride[0], out = d.n, rows = y->numel / out;
        for (int64_t j = 0; j < out; j++) yp[j] = bp[j * bs];
        for (int64_t r = 1; r < rows; r++) memcpy(yp + r * out, yp, (size_t)out * sizeof(float));
    }
    if (product_forward(x, w, MM_WEIGHT_T, &d, y, b ? 1.0f : 0.0f)) return NULL;
    gg_tensor *in[3] = {x, w, b};
    int n_in = b ? 3 : 2;
    bool failed;
    gg_node *node = gg_op_record(&LINEAR_OP, y, n_in, in, &failed);
    if (failed) return NULL;
    if (node) save_factors(node, x, w);
    return gg_op_finish(y, "gg_linear", n_in, in);
}
