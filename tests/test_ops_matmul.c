/* gg_matmul and gg_linear: hand-computed cases, torch.matmul shape rules (1-D, broadcast batch), gradient
 * checks of every input (transposed, sliced and broadcast operands), the BLIS kernel against the plain-C
 * reference on odd shapes and strides, and every error path. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "gg_backend.h"
#include "gg_test_util.h"
#include "groupgrad.h"

static void teardown(void) {
    gg_tape_reset(NULL);
    gg_set_grad_enabled(true);
    gg_clear_error();
}

TestSuite(matmul, .fini = teardown);

/* ---- helpers ---- */

static gg_tensor *rnd(int ndim, const int64_t *shape, uint64_t seed) {
    gg_rng rng;
    gg_rng_init(&rng, seed);
    gg_tensor *t = gg_tensor_empty(ndim, shape);
    cr_assert_not_null(t, "%s", gg_last_error());
    cr_assert_eq(gg_rand_uniform(t, -1.0f, 1.0f, &rng), GG_OK);
    return t;
}
#define RND(seed, ...) rnd(GG_SHAPE(__VA_ARGS__), (seed))

static gg_tensor *grad_leaf(gg_tensor *t) {
    cr_assert_eq(gg_requires_grad(t, true), GG_OK, "%s", gg_last_error());
    return t;
}

/* A non-contiguous leaf: the transpose (last two dims) of a random tensor of shape `base`. */
static gg_tensor *transposed_leaf(int ndim, const int64_t *base, uint64_t seed) {
    gg_tensor *b = rnd(ndim, base, seed);
    gg_tensor *t = gg_tensor_transpose(b, -2, -1);
    cr_assert_not_null(t);
    gg_tensor_free(b);
    cr_assert(!gg_tensor_is_contiguous(t));
    return grad_leaf(t);
}

static float elem(const gg_tensor *t, int64_t flat) {
    int64_t idx[GG_MAX_DIMS];
    for (int d = t->ndim - 1; d >= 0; d--) idx[d] = flat % t->shape[d], flat /= t->shape[d];
    float v = NAN;
    cr_assert_eq(gg_tensor_get(t, idx, &v), GG_OK);
    return v;
}

/* torch.matmul computed naively from the definition, element by element (double accumulation). */
static gg_tensor *ref_matmul(const gg_tensor *a, const gg_tensor *b) {
    int64_t K = a->shape[a->ndim - 1];
    int64_t M = a->ndim >= 2 ? a->shape[a->ndim - 2] : 1;
    int64_t N = b->ndim >= 2 ? b->shape[b->ndim - 1] : 1;
    int nba = a->ndim >= 2 ? a->ndim - 2 : 0, nbb = b->ndim >= 2 ? b->ndim - 2 : 0;
    int nb = nba > nbb ? nba : nbb;
    int64_t batch[GG_MAX_DIMS], out[GG_MAX_DIMS];
    for (int i = 0; i < nb; i++) {
        int ia = i - (nb - nba), ib = i - (nb - nbb);
        int64_t x = ia >= 0 ? a->shape[ia] : 1, y = ib >= 0 ? b->shape[ib] : 1;
        batch[i] = x == 1 ? y : x;
        out[i] = batch[i];
    }
    int nd = nb;
    if (a->ndim >= 2) out[nd++] = M;
    if (b->ndim >= 2) out[nd++] = N;
    int64_t nbatch = gt_numel(nb, batch);
    float *buf = calloc((size_t)(nbatch * M * N + 1), sizeof(float));
    int64_t bi[GG_MAX_DIMS] = {0};
    for (int64_t t = 0; t < nbatch; t++) {
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                double acc = 0;
                for (int64_t p = 0; p < K; p++) {
                    int64_t ia[GG_MAX_DIMS], ib[GG_MAX_DIMS];
                    for (int d = 0; d < nba; d++) ia[d] = a->shape[d] == 1 ? 0 : bi[d + nb - nba];
                    for (int d = 0; d < nbb; d++) ib[d] = b->shape[d] == 1 ? 0 : bi[d + nb - nbb];
                    if (a->ndim >= 2) ia[nba] = i, ia[nba + 1] = p;
                    else ia[0] = p;
                    if (b->ndim >= 2) ib[nbb] = p, ib[nbb + 1] = j;
                    else ib[0] = p;
                    float x, y;
                    cr_assert_eq(gg_tensor_get(a, ia, &x), GG_OK);
                    cr_assert_eq(gg_tensor_get(b, ib, &y), GG_OK);
                    acc += (double)x * y;
                }
                buf[(t * M + i) * N + j] = (float)acc;
            }
        gt_next_index(nb, batch, bi);
    }
    gg_tensor *r = gg_tensor_from_data(nd, out, buf);
    free(buf);
    cr_assert_not_null(r);
    return r;
}

/* Same shape, and every element within tol of the reference, relative to its largest element. */
static void assert_close(const gg_tensor *got, const gg_tensor *want, double tol) {
    cr_assert_not_null(got, "NULL result: %s", gg_last_error());
    cr_assert(gg_tensor_same_shape(got, want), "shape mismatch");
    double scale = 1e-30, worst = 0;
    int64_t at = -1;
    for (int64_t i = 0; i < want->numel; i++) scale = fmax(scale, fabs(elem(want, i)));
    for (int64_t i = 0; i < want->numel; i++) {
        double e = fabs((double)elem(got, i) - elem(want, i));
        if (e > worst) worst = e, at = i;
    }
    cr_assert(worst <= tol * scale, "element %lld: got %g, want %g (relative error %g)", (long long)at,
              at >= 0 ? (double)elem(got, at) : 0.0, at >= 0 ? (double)elem(want, at) : 0.0, worst / scale);
}

static void check_matmul(gg_tensor *a, gg_tensor *b) {
    gg_tensor *r = ref_matmul(a, b);
    assert_close(gg_matmul(a, b), r, 1e-5);
    gg_tensor_free(r);
}

/* ---- hand-computed forward ---- */

Test(matmul, hand_2x3_at_3x2) {
    gg_tensor *a = gg_tensor_from_data(GG_SHAPE(2, 3), (float[]){1, 2, 3, 4, 5, 6});
    gg_tensor *b = gg_tensor_from_data(GG_SHAPE(3, 2), (float[]){7, 8, 9, 10, 11, 12});
    gg_tensor *c = gg_matmul(a, b);
    gt_assert_shape(c, 2, 2);
    gt_assert_list(c, 58, 64, 139, 154);
    /* a^T as a strided view: [3,2]^T... (b^T [2,3]) @ (a^T [3,2]) = (a b)^T */
    gg_tensor *at = gg_tensor_transpose(a, 0, 1), *bt = gg_tensor_transpose(b, 0, 1);
    gg_tensor *ct = gg_matmul(bt, at);
    gt_assert_shape(ct, 2, 2);
    gt_assert_list(ct, 58, 139, 64, 154);
    gg_tensor_free(at);
    gg_tensor_free(bt);
    gg_tensor_free(a);
    gg_tensor_free(b);
}

Test(matmul, hand_batched) {
    /* batch 0: [1,2;3,4] @ I = same; batch 1: [1,0;0,1] @ [5,6;7,8] */
    gg_tensor *a = gg_tensor_from_data(GG_SHAPE(2, 2, 2), (float[]){1, 2, 3, 4, 1, 0, 0, 1});
    gg_tensor *b = gg_tensor_from_data(GG_SHAPE(2, 2, 2), (float[]){1, 0, 0, 1, 5, 6, 7, 8});
    gg_tensor *c = gg_matmul(a, b);
    gt_assert_shape(c, 2, 2, 2);
    gt_assert_list(c, 1, 2, 3, 4, 5, 6, 7, 8);
    gg_tensor_free(a);
    gg_tensor_free(b);
}

Test(matmul, hand_broadcast_batch) {
    /* a [2,1,1,2] @ b [3,2,1] -> [2,3,1,1]: (a_i . b_j) */
    gg_tensor *a = gg_tensor_from_data(GG_SHAPE(2, 1, 1, 2), (float[]){1, 2, 3, 4});
    gg_tensor *b = gg_tensor_from_data(GG_SHAPE(3, 2, 1), (float[]){1, 0, 0, 1, 1, 1});
    gg_tensor *c = gg_matmul(a, b);
    gt_assert_shape(c, 2, 3, 1, 1);
    gt_assert_list(c, 1, 2, 3, 3, 4, 7);
    gg_tensor_free(a);
    gg_tensor_free(b);
}

Test(matmul, one_dimensional_operands) {
    gg_tensor *v = gg_tensor_from_data(GG_SHAPE(3), (float[]){1, 2, 3});
    gg_tensor *w = gg_tensor_from_data(GG_SHAPE(3), (float[]){4, 5, 6});
    gg_tensor *m = gg_tensor_from_data(GG_SHAPE(3, 2), (float[]){1, 2, 3, 4, 5, 6});
    gg_tensor *mt = gg_tensor_from_data(GG_SHAPE(2, 3), (float[]){1, 2, 3, 4, 5, 6});
    gg_tensor *dot = gg_matmul(v, w); /* [3] @ [3] -> scalar */
    cr_assert_not_null(dot, "%s", gg_last_error());
    cr_assert_eq(dot->ndim, 0);
    gt_assert_list(dot, 32);
    gg_tensor *vm = gg_matmul(v, m); /* [3] @ [3,2] -> [2] */
    gt_assert_shape(vm, 2);
    gt_assert_list(vm, 22, 28);
    gg_tensor *mv = gg_matmul(mt, v); /* [2,3] @ [3] -> [2] */
    gt_assert_shape(mv, 2);
    gt_assert_list(mv, 14, 32);
    gg_tensor *b3 = RND(1, 4, 3, 2), *a3 = RND(2, 4, 2, 3);
    gt_assert_shape(gg_matmul(v, b3), 4, 2); /* [3] @ [4,3,2] -> [4,2] */
    gt_assert_shape(gg_matmul(a3, v), 4, 2); /* [4,2,3] @ [3] -> [4,2] */
    check_matmul(v, b3);
    check_matmul(a3, v);
    gg_tensor_free(b3);
    gg_tensor_free(a3);
    gg_tensor_free(v);
    gg_tensor_free(w);
    gg_tensor_free(m);
    gg_tensor_free(mt);
}

Test(matmul, shapes_against_reference) {
    /* torch.matmul rules over a table of shapes, tiny (plain C) and large (BLIS) */
    static const struct {
        int nda, ndb;
        int64_t a[4], b[4];
    } cases[] = {
        {2, 2, {5, 7}, {7, 3}},           {3, 3, {4, 5, 7}, {4, 7, 3}},
        {3, 2, {4, 5, 7}, {7, 3}},        {2, 3, {5, 7}, {4, 7, 3}},
        {4, 3, {2, 1, 5, 7}, {3, 7, 3}},  {1, 4, {7}, {2, 3, 7, 5}},
        {4, 1, {2, 3, 5, 7}, {7}},        {2, 2, {17, 33}, {33, 9}},
        {3, 3, {3, 20, 30}, {1, 30, 11}}, {4, 4, {2, 1, 20, 30}, {1, 3, 30, 11}},
        {2, 2, {1, 1}, {1, 1}},           {2, 2, {3, 0}, {0, 4}},
        {3, 2, {0, 3, 4}, {4, 5}},        {1, 1, {600}, {600}},
        {2, 1, {40, 200}, {200}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gg_tensor *a = rnd(cases[i].nda, cases[i].a, 10 + i), *b = rnd(cases[i].ndb, cases[i].b, 100 + i);
        check_matmul(a, b);
        gg_tensor_free(a);
        gg_tensor_free(b);
    }
}

Test(matmul, strided_operands_against_reference) {
    /* transposed (column-major) and sliced (no unit stride: copied) operands, small and large */
    for (int big = 0; big < 2; big++) {
        int64_t M = big ? 37 : 3, K = big ? 41 : 4, N = big ? 29 : 5;
        gg_tensor *ab = RND(1, 2, K, M), *bb = RND(2, 2, N, K);
        gg_tensor *a = gg_tensor_transpose(ab, 1, 2), *b = gg_tensor_transpose(bb, 1, 2);
        check_matmul(a, b);
        gg_tensor *wide = RND(3, 2 * M, 2 * K);
        gg_tensor *s0 = gg_tensor_slice(wide, 0, 0, 2 * M, 2), *s = gg_tensor_slice(s0, 1, 1, 2 * K, 2);
        check_matmul(s, b); /* strides (4K, 2): neither is unit */
        gg_tensor *row = RND(4, 1, K);
        gg_tensor *ex = gg_tensor_expand(row, GG_SHAPE(M, K)); /* stride-0 rows */
        check_matmul(ex, b);
        gg_tensor *exb = gg_tensor_expand(bb, GG_SHAPE(3, 2, N, K)); /* broadcast batch as stride 0 */
        gg_tensor *exbt = gg_tensor_transpose(exb, -1, -2);
        check_matmul(a, exbt);
        gg_tensor *b2 = gg_tensor_select(b, 0, 1); /* a single column-major [K,N] */
        check_matmul(s, b2);
        check_matmul(ex, b2);
        gg_tensor_free(b2);
        gg_tensor *r[] = {ab, bb, a, b, wide, s0, s, row, ex, exb, exbt};
        for (size_t i = 0; i < sizeof r / sizeof r[0]; i++) gg_tensor_free(r[i]);
    }
}

Test(matmul, many_tiny_batched_products) {
    /* the OpenMP batch path (tiny matrices, many entries) */
    gg_tensor *a = RND(5, 1000, 4, 5), *b = RND(6, 1000, 5, 6);
    check_matmul(a, b);
    gg_tensor *bt = gg_tensor_transpose(b, 1, 2), *c = RND(7, 1000, 6, 5);
    check_matmul(c, b);
    check_matmul(bt, b);
    gg_tensor_free(bt);
    gg_tensor_free(a);
    gg_tensor_free(b);
    gg_tensor_free(c);
}

/* ---- gg_linear forward ---- */

Test(matmul, linear_hand_computed) {
    gg_tensor *x = gg_tensor_from_data(GG_SHAPE(2, 3), (float[]){1, 2, 3, 4, 5, 6});
    gg_tensor *w = gg_tensor_from_data(GG_SHAPE(2, 3), (float[]){1, 0, -1, 2, 1, 0});
    gg_tensor *b = gg_tensor_from_data(GG_SHAPE(2), (float[]){10, 20});
    gg_tensor *y = gg_linear(x, w, b);
    gt_assert_shape(y, 2, 2);
    gt_assert_list(y, 8, 24, 8, 33);
    gg_tensor *y0 = gg_linear(x, w, NULL);
    gt_assert_shape(y0, 2, 2);
    gt_assert_list(y0, -2, 4, -2, 13);
    gg_tensor *v = gg_tensor_from_data(GG_SHAPE(3), (float[]){1, 1, 1});
    gg_tensor *yv = gg_linear(v, w, b); /* 1-D x */
    gt_assert_shape(yv, 2);
    gt_assert_list(yv, 10, 23);
    gg_tensor_free(x);
    gg_tensor_free(w);
    gg_tensor_free(b);
    gg_tensor_free(v);
}

Test(matmul, linear_against_matmul_reference) {
    /* x [3,5,40] (folded into one gemm), transposed x, transposed w, strided bias */
    gg_tensor *x = RND(1, 3, 5, 40), *w = RND(2, 24, 40), *bias2 = RND(3, 24, 2);
    gg_tensor *b = gg_tensor_select(bias2, 1, 1); /* stride 2 */
    gg_tensor *wt = gg_tensor_transpose(w, 0, 1);
    gg_tensor *xb = RND(4, 3, 40, 5), *xt = gg_tensor_transpose(xb, 1, 2);
    gg_tensor *wb = RND(5, 40, 24), *wtt = gg_tensor_transpose(wb, 0, 1); /* [24,40], column-major */
    gg_tensor *xs[] = {x, xt}, *ws[] = {w, wtt};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            gg_tensor *wT = gg_tensor_transpose(ws[j], 0, 1);
            gg_tensor *r = ref_matmul(xs[i], wT);
            assert_close(gg_linear(xs[i], ws[j], NULL), r, 1e-5);
            /* add the bias to the reference */
            float *rp = gg_tensor_data(r);
            for (int64_t k = 0; k < r->numel; k++) rp[k] += elem(b, k % 24);
            assert_close(gg_linear(xs[i], ws[j], b), r, 1e-5);
            gg_tensor_free(r);
            gg_tensor_free(wT);
        }
    gg_tensor *r[] = {x, w, bias2, b, wt, xb, xt, wb, wtt};
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++) gg_tensor_free(r[i]);
}

/* ---- gradient checks ---- */

static gg_tensor *f_matmul(gg_tensor *const *in, void *ctx) {
    (void)ctx;
    return gg_matmul(in[0], in[1]);
}
static gg_tensor *f_square(gg_tensor *const *in, void *ctx) {
    (void)ctx;
    return gg_matmul(in[0], in[0]);
}
static gg_tensor *f_linear(gg_tensor *const *in, void *ctx) {
    (void)ctx;
    return gg_linear(in[0], in[1], in[2]);
}
static gg_tensor *f_linear_nobias(gg_tensor *const *in, void *ctx) {
    (void)ctx;
    return gg_linear(in[0], in[1], NULL);
}

/* The products are linear in each input, so central differences are exact up to rounding: a large step
 * keeps float32 rounding out of the comparison. */
static const gg_gradcheck_opts GC = {.eps = 0.25, .atol = 1e-3, .rtol = 1e-3, .seed = 3};

static void gradcheck(gg_gradcheck_fn f, int n, gg_tensor *const *in, const char *what) {
    gg_gradcheck_report rep;
    char buf[256];
    int st = gg_gradcheck(f, NULL, n, in, &GC, &rep);
    cr_assert_eq(st, GG_OK, "%s: gradcheck failed to run: %s", what, gg_last_error());
    cr_assert(rep.passed, "%s: %s", what, gg_gradcheck_describe(&rep, buf, sizeof buf));
    cr_assert_gt(rep.n_checked, 0, "%s: nothing checked", what);
}

static void gradcheck_pair(gg_tensor *a, gg_tensor *b, const char *what) {
    gg_tensor *in[2] = {a, b};
    gradcheck(f_matmul, 2, in, what);
    gg_tensor_free(a);
    gg_tensor_free(b);
}

Test(matmul, gradcheck_2d) {
    gradcheck_pair(grad_leaf(RND(1, 3, 4)), grad_leaf(RND(2, 4, 5)), "2-D small");
    gradcheck_pair(grad_leaf(RND(3, 26, 25)), grad_leaf(RND(4, 25, 27)), "2-D BLIS path");
}

Test(matmul, gradcheck_transposed_operands) {
    gradcheck_pair(transposed_leaf(GG_SHAPE(4, 3), 1), grad_leaf(RND(2, 4, 5)), "a^T small");
    gradcheck_pair(grad_leaf(RND(3, 3, 4)), transposed_leaf(GG_SHAPE(5, 4), 4), "b^T small");
    gradcheck_pair(transposed_leaf(GG_SHAPE(25, 26), 5), transposed_leaf(GG_SHAPE(27, 25), 6),
                   "a^T b^T BLIS");
    gradcheck_pair(transposed_leaf(GG_SHAPE(2, 25, 26), 7), transposed_leaf(GG_SHAPE(2, 27, 25), 8),
                   "batched a^T b^T BLIS");
}

Test(matmul, gradcheck_sliced_operand) {
    /* strides (2*cols, 2): no unit stride, so the operand is copied before BLIS */
    gg_tensor *base = RND(1, 52, 50);
    gg_tensor *s0 = gg_tensor_slice(base, 0, 0, 52, 2), *s = gg_tensor_slice(s0, 1, 0, 50, 2);
    gg_tensor_free(base);
    gg_tensor_free(s0);
    gradcheck_pair(grad_leaf(s), grad_leaf(RND(2, 25, 27)), "sliced a [26,25] BLIS");
    base = RND(3, 6, 8);
    s0 = gg_tensor_slice(base, 0, 0, 6, 2), s = gg_tensor_slice(s0, 1, 1, 8, 2);
    gg_tensor_free(base);
    gg_tensor_free(s0);
    gradcheck_pair(grad_leaf(RND(4, 2, 3)), grad_leaf(s), "sliced b [3,4] small");
}

Test(matmul, gradcheck_batched_and_broadcast) {
    gradcheck_pair(grad_leaf(RND(1, 2, 3, 4)), grad_leaf(RND(2, 2, 4, 5)), "batched");
    gradcheck_pair(grad_leaf(RND(3, 2, 1, 3, 4)), grad_leaf(RND(4, 3, 4, 2)), "broadcast batch both ways");
    gradcheck_pair(grad_leaf(RND(5, 3, 5, 4)), grad_leaf(RND(6, 4, 2)), "2-D b broadcast over batch");
    gradcheck_pair(grad_leaf(RND(7, 5, 4)), grad_leaf(RND(8, 3, 4, 2)), "2-D a broadcast over batch");
    gradcheck_pair(grad_leaf(RND(9, 3, 16, 25)), grad_leaf(RND(10, 25, 27)), "b broadcast, BLIS (folded)");
    gradcheck_pair(grad_leaf(RND(11, 26, 25)), grad_leaf(RND(12, 3, 25, 27)), "a broadcast, BLIS");
    gradcheck_pair(grad_leaf(RND(13, 2, 1, 26, 25)), transposed_leaf(GG_SHAPE(3, 27, 25), 14),
                   "broadcast batch, b^T, BLIS");
}

Test(matmul, gradcheck_one_dimensional) {
    gradcheck_pair(grad_leaf(RND(1, 4)), grad_leaf(RND(2, 4)), "dot");
    gradcheck_pair(grad_leaf(RND(3, 4)), grad_leaf(RND(4, 4, 3)), "vector @ matrix");
    gradcheck_pair(grad_leaf(RND(5, 3, 4)), grad_leaf(RND(6, 4)), "matrix @ vector");
    gradcheck_pair(grad_leaf(RND(7, 4)), grad_leaf(RND(8, 2, 4, 3)), "vector @ batch");
    gradcheck_pair(grad_leaf(RND(9, 2, 3, 4)), grad_leaf(RND(10, 4)), "batch @ vector");
    gradcheck_pair(grad_leaf(RND(11, 200)), grad_leaf(RND(12, 2, 200, 90)), "vector @ batch, BLIS");
    gradcheck_pair(grad_leaf(RND(13, 70)), transposed_leaf(GG_SHAPE(3, 30, 70), 14),
                   "vector @ batch^T, BLIS (batch folded into N)");
    /* b with padded rows (row stride 100): its batch must not be folded into the reduction of dA */
    gg_tensor *wide = RND(15, 2, 4, 100);
    gg_tensor *bs = gg_tensor_slice(wide, 2, 0, 3, 1);
    gg_tensor_free(wide);
    gradcheck_pair(grad_leaf(RND(16, 1, 4)), grad_leaf(bs), "[1,4] @ column slice [2,4,3] of [2,4,100]");
}

Test(matmul, gradcheck_same_tensor_twice) {
    /* x @ x: both gradients accumulate into the same buffer */
    gg_tensor *x = grad_leaf(RND(1, 4, 4));
    gg_tensor *in[1] = {x};
    gradcheck(f_square, 1, in, "x @ x");
    gg_tensor_free(x);
}

Test(matmul, gradcheck_one_input_only) {
    gg_tensor *a = grad_leaf(RND(1, 3, 4)), *b = RND(2, 4, 5);
    gradcheck_pair(a, b, "only a requires grad");
    a = RND(3, 3, 4), b = grad_leaf(RND(4, 4, 5));
    gradcheck_pair(a, b, "only b requires grad");
}

Test(matmul, gradcheck_linear) {
    gg_tensor *x = grad_leaf(RND(1, 2, 3, 5)), *w = grad_leaf(RND(2, 4, 5)), *b = grad_leaf(RND(3, 4));
    gg_tensor *in[3] = {x, w, b};
    gradcheck(f_linear, 3, in, "linear with bias");
    gradcheck(f_linear_nobias, 2, in, "linear without bias");
    gg_tensor *xt = transposed_leaf(GG_SHAPE(2, 30, 24), 4), *wt = transposed_leaf(GG_SHAPE(30, 28), 5);
    gg_tensor *b16 = grad_leaf(RND(10, 28));
    gg_tensor *in2[3] = {xt, wt, b16};
    gradcheck(f_linear, 3, in2, "linear x^T, w^T, BLIS");
    gg_tensor *xv = grad_leaf(RND(6, 5));
    gg_tensor *in3[3] = {xv, w, b};
    gradcheck(f_linear, 3, in3, "linear 1-D x");
    gg_tensor *xb = grad_leaf(RND(7, 4, 16, 20)), *wb = grad_leaf(RND(8, 24, 20)),
              *bb = grad_leaf(RND(9, 24));
    gg_tensor *in4[3] = {xb, wb, bb};
    gradcheck(f_linear, 3, in4, "linear folded batch, BLIS");
    gg_tensor *r[] = {x, w, b, xt, wt, b16, xv, xb, wb, bb};
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++) gg_tensor_free(r[i]);
}

Test(matmul, backward_accumulates_and_bias_gradient) {
    /* y = sum of linear(x, w, b) over [2,2] outputs: db = 2 per output, twice after two backwards */
    gg_tensor *x = gg_tensor_from_data(GG_SHAPE(2, 3), (float[]){1, 2, 3, 4, 5, 6});
    gg_tensor *w = grad_leaf(gg_tensor_from_data(GG_SHAPE(2, 3), (float[]){1, 0, -1, 2, 1, 0}));
    gg_tensor *b = grad_leaf(gg_tensor_zeros(GG_SHAPE(2)));
    gg_tensor *seed = gg_tensor_ones(GG_SHAPE(2, 2));
    for (int k = 0; k < 2; k++) {
        gg_tensor *y = gg_linear(x, w, b);
        cr_assert_eq(gg_backward_ex(y, seed, false), GG_OK, "%s", gg_last_error());
    }
    gt_assert_list(b->grad, 4, 4);
    gt_assert_list(w->grad, 10, 14, 18, 10, 14, 18); /* 2 * column sums of x */
    cr_assert_null(x->grad);
    gg_tensor *r[] = {x, w, b, seed};
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++) gg_tensor_free(r[i]);
}

Test(matmul, no_grad_records_nothing) {
    gg_tensor *a = grad_leaf(RND(1, 3, 4)), *b = RND(2, 4, 5);
    size_t before = gg_tape_num_nodes(NULL);
    gg_no_grad_begin();
    gg_tensor *c = gg_matmul(a, b);
    gg_no_grad_end();
    cr_assert_not_null(c);
    cr_assert(!c->requires_grad);
    cr_assert_eq(gg_tape_num_nodes(NULL), before);
    gg_tensor *bt = gg_tensor_transpose(b, 0, 1);
    gg_tensor *d = gg_matmul(b, bt); /* no input requires grad */
    cr_assert_not_null(d);
    cr_assert(!d->requires_grad);
    cr_assert_eq(gg_tape_num_nodes(NULL), before);
    gg_tensor_free(bt);
    gg_tensor_free(a);
    gg_tensor_free(b);
}

/* ---- the BLIS kernel against the plain-C reference ---- */

/* C = alpha op(A) op(B) + beta C through gg__sgemm and gg__sgemm_ref on the same random data, with the
 * given storage layouts (row-major when false) and padding of the leading dimension. */
static void kernel_case(int64_t m, int64_t n, int64_t k, bool ta, bool tb, bool a_col, bool b_col, bool c_col,
                        int64_t pad, float alpha, float beta, uint64_t seed) {
    int64_t ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
    /* element (r, c) of a stored rows x cols matrix: row-major r*(cols+pad) + c, column-major r +
     * c*(rows+pad) */
    int64_t rsa = a_col ? 1 : ac + pad, csa = a_col ? ar + pad : 1;
    int64_t rsb = b_col ? 1 : bc + pad, csb = b_col ? br + pad : 1;
    int64_t rsc = c_col ? 1 : n + pad, csc = c_col ? m + pad : 1;
    int64_t na = (ar + pad) * (ac + pad) + 1, nb = (br + pad) * (bc + pad) + 1,
            nc = (m + pad) * (n + pad) + 1;
    gg_tensor *A = RND(seed, na), *B = RND(seed + 1, nb), *C0 = RND(seed + 2, nc);
    gg_tensor *C1 = gg_tensor_copy(C0), *C2 = gg_tensor_copy(C0);
    gg__sgemm(ta, tb, m, n, k, alpha, gg_tensor_data(A), rsa, csa, gg_tensor_data(B), rsb, csb, beta,
              gg_tensor_data(C1), rsc, csc);
    gg__sgemm_ref(ta, tb, m, n, k, alpha, gg_tensor_data(A), rsa, csa, gg_tensor_data(B), rsb, csb, beta,
                  gg_tensor_data(C2), rsc, csc);
    const float *c1 = gg_tensor_data(C1), *c2 = gg_tensor_data(C2), *c0 = gg_tensor_data(C0);
    double scale = 1e-30, worst = 0;
    for (int64_t i = 0; i < nc; i++) scale = fmax(scale, fabs(c2[i]));
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++)
            worst = fmax(worst, fabs(c1[i * rsc + j * csc] - c2[i * rsc + j * csc]));
    cr_assert(worst <= 1e-4 * scale,
              "m %lld n %lld k %lld ta %d tb %d layouts %d%d%d pad %lld: relative error %g", (long long)m,
              (long long)n, (long long)k, ta, tb, a_col, b_col, c_col, (long long)pad, worst / scale);
    /* padding untouched */
    int64_t touched = 0;
    for (int64_t i = 0; i < nc; i++) touched += c1[i] != c0[i] ? 1 : 0;
    cr_assert_leq(touched, m * n, "gg__sgemm wrote outside C");
    gg_tensor_free(A);
    gg_tensor_free(B);
    gg_tensor_free(C0);
    gg_tensor_free(C1);
    gg_tensor_free(C2);
}

Test(matmul, blis_against_reference) {
    static const int64_t shapes[][3] = {{17, 9, 33}, {1, 1, 1}, {64, 31, 128}, {1, 40, 70}, {40, 1, 70},
                                        {33, 65, 1}, {5, 7, 0}, {100, 3, 2},   {2, 100, 3}};
    uint64_t seed = 1;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int flags = 0; flags < 32; flags++) {
            bool ta = flags & 1, tb = flags & 2, a_col = flags & 4, b_col = flags & 8, c_col = flags & 16;
            kernel_case(shapes[s][0], shapes[s][1], shapes[s][2], ta, tb, a_col, b_col, c_col,
                        (int64_t)(flags % 3), 1.0f, 0.0f, seed += 3);
        }
    kernel_case(17, 9, 33, false, false, false, false, false, 0, 0.5f, 1.0f, 500);
    kernel_case(64, 31, 128, true, false, false, true, true, 1, -2.0f, 0.25f, 600);
    kernel_case(8, 8, 8, false, true, false, false, false, 0, 1.0f, 1.0f, 700);
}

Test(matmul, beta_zero_ignores_nan_in_output) {
    float a[4] = {1, 2, 3, 4}, b[4] = {1, 0, 0, 1}, c[4] = {NAN, NAN, NAN, NAN}, r[4] = {NAN, NAN, NAN, NAN};
    gg__sgemm(false, false, 2, 2, 2, 1.0f, a, 2, 1, b, 2, 1, 0.0f, c, 2, 1);
    gg__sgemm_ref(false, false, 2, 2, 2, 1.0f, a, 2, 1, b, 2, 1, 0.0f, r, 2, 1);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(c[i], a[i]);
        cr_assert_eq(r[i], a[i]);
    }
}

Test(matmul, layout_predicate) {
    cr_assert(gg__sgemm_layout_ok(3, 4, 4, 1));   /* row-major */
    cr_assert(gg__sgemm_layout_ok(3, 4, 1, 3));   /* column-major */
    cr_assert(gg__sgemm_layout_ok(3, 4, 9, 1));   /* padded rows */
    cr_assert(gg__sgemm_layout_ok(1, 4, 0, 7));   /* one row: its stride is free */
    cr_assert(gg__sgemm_layout_ok(4, 1, 5, 123)); /* one column */
    cr_assert(!gg__sgemm_layout_ok(3, 4, 8, 2));  /* no unit stride */
    cr_assert(!gg__sgemm_layout_ok(3, 4, 0, 1));  /* broadcast rows */
    cr_assert(!gg__sgemm_layout_ok(3, 4, 2, 1));  /* overlapping rows */
}

/* ---- errors ---- */

static void assert_fails(gg_tensor *r, const char *func, const char *s1, const char *s2) {
    cr_assert_null(r);
    cr_assert_eq(gg_last_status(), GG_ERR_SHAPE, "status %d: %s", gg_last_status(), gg_last_error());
    gt_assert_msg_has(func);
    gt_assert_msg_has(s1);
    gt_assert_msg_has(s2);
    gg_clear_error();
}

Test(matmul, matmul_errors) {
    gg_tensor *a = RND(1, 2, 3), *b = RND(2, 4, 2), *s = gg_tensor_scalar(1), *a3 = RND(3, 2, 2, 3),
              *b3 = RND(4, 3, 3, 2), *v = RND(5, 4);
    size_t before = gg_tape_num_tensors(NULL);
    assert_fails(gg_matmul(a, b), "gg_matmul", "[2,3]", "[4,2]");
    assert_fails(gg_matmul(a, v), "gg_matmul", "[2,3]", "[4]");
    assert_fails(gg_matmul(v, a), "gg_matmul", "[4]", "[2,3]");
    assert_fails(gg_matmul(a3, b3), "gg_matmul", "[2,2,3]", "[3,3,2]");
    assert_fails(gg_matmul(s, a), "gg_matmul", "[]", "[2,3]");
    assert_fails(gg_matmul(a, s), "gg_matmul", "[2,3]", "[]");
    cr_assert_eq(gg_tape_num_tensors(NULL), before, "a failed call left tensors on the tape");
    /* NULL input: a fresh error, or the earlier one kept (sticky) */
    cr_assert_null(gg_matmul(NULL, b));
    cr_assert_eq(gg_last_status(), GG_ERR_ARG);
    gt_assert_msg_has("gg_matmul");
    cr_assert_null(gg_matmul(a, b)); /* inner mismatch */
    cr_assert_null(gg_matmul(gg_matmul(a, b), a));
    cr_assert_null(gg_matmul(a, NULL));
    gt_assert_msg_has("inner dimensions");
    gg_tensor *r[] = {a, b, s, a3, b3, v};
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++) gg_tensor_free(r[i]);
}

Test(matmul, linear_errors) {
    gg_tensor *x = RND(1, 2, 3), *w = RND(2, 4, 3), *w3 = RND(3, 1, 4, 3), *wbad = RND(4, 4, 5),
              *bbad = RND(5, 3), *b2 = RND(6, 4, 1), *s = gg_tensor_scalar(1);
    assert_fails(gg_linear(x, wbad, NULL), "gg_linear", "[2,3]", "[4,5]");
    assert_fails(gg_linear(x, w3, NULL), "gg_linear", "[1,4,3]", "2-D");
    assert_fails(gg_linear(x, w, bbad), "gg_linear", "[3]", "[4,3]");
    assert_fails(gg_linear(x, w, b2), "gg_linear", "[4,1]", "[4]");
    assert_fails(gg_linear(s, w, NULL), "gg_linear", "[]", "[4,3]");
    cr_assert_null(gg_linear(NULL, w, NULL));
    gt_assert_msg_has("gg_linear");
    cr_assert_not_null(gg_linear(x, w, NULL), "%s", gg_last_error());
    gg_tensor *r[] = {x, w, w3, wbad, bbad, b2, s};
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++) gg_tensor_free(r[i]);
}
