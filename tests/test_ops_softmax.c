/* gg_softmax / gg_log_softmax / gg_cross_entropy: hand-computed values, stability for huge logits,
 * the kernels against double-precision reference code on random odd shapes (every dim, contiguous and
 * not, large enough for the parallel paths), gradient checks and every error path. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "gg_reduce_internal.h"
#include "gg_test_util.h"
#include "groupgrad.h"

static void teardown(void) {
    gg_tape_reset(NULL);
    gg_set_anomaly_mode(false);
    gg_set_grad_enabled(true);
    gg_clear_error();
}

TestSuite(softmax, .fini = teardown);

/* ---- helpers ---- */

static gg_tensor *from(int ndim, const int64_t *shape, const float *v) {
    gg_tensor *t = gg_tensor_from_data(ndim, shape, v);
    cr_assert_not_null(t, "%s", gg_last_error());
    return t;
}

static gg_tensor *randn(int ndim, const int64_t *shape, float std, uint64_t seed) {
    gg_tensor *t = gg_tensor_empty(ndim, shape);
    cr_assert_not_null(t, "%s", gg_last_error());
    gg_rng r;
    gg_rng_init(&r, seed);
    cr_assert_eq(gg_rand_normal(t, 0.0f, std, &r), GG_OK);
    return t;
}

static float *values(const gg_tensor *t) {
    float *v = malloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1));
    cr_assert_eq(gg_tensor_to_buffer(t, v, t->numel), GG_OK, "%s", gg_last_error());
    return v;
}

static bool near(double a, double e, double rtol, double atol) {
    if (isnan(e)) return isnan(a);
    if (isinf(e)) return a == e;
    return fabs(a - e) <= atol + rtol * fabs(e);
}

static void assert_near_(const gg_tensor *t, const double *expected, double rtol, double atol,
                         const char *file, int line) {
    cr_assert_not_null(t, "%s:%d: tensor is NULL (%s)", file, line, gg_last_error());
    float *v = values(t);
    for (int64_t i = 0; i < t->numel; i++)
        cr_assert(near(v[i], expected[i], rtol, atol), "%s:%d: element %lld is %.10g, expected %.10g", file,
                  line, (long long)i, (double)v[i], expected[i]);
    free(v);
}
#define assert_near(t, rtol, atol, ...) \
    assert_near_((t), (const double[]){__VA_ARGS__}, (rtol), (atol), __FILE__, __LINE__)

/* Reference softmax / log-softmax of row-major values x (shape, dim) in double. */
static void ref_softmax(const float *x, int nd, const int64_t *shape, int dim, bool log_out, double *out) {
    int64_t outer = 1, L = nd ? shape[dim] : 1, inner = 1;
    for (int d = 0; d < nd; d++) {
        if (d < dim) outer *= shape[d];
        if (d > dim) inner *= shape[d];
    }
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            const float *p = x + o * L * inner + i;
            double m = -INFINITY, s = 0;
            for (int64_t l = 0; l < L; l++) m = fmax(m, p[l * inner]);
            for (int64_t l = 0; l < L; l++) s += exp(p[l * inner] - m);
            for (int64_t l = 0; l < L; l++) {
                double z = p[l * inner] - m;
                out[o * L * inner + i + l * inner] = log_out ? z - log(s) : exp(z) / s;
            }
        }
}

/* Reference cross-entropy rows (double) and their reduction. */
static double ref_ce(const float *x, int64_t N, int64_t C, const int32_t *y, double eps, gg_reduction red,
                     double *rows) {
    double total = 0;
    for (int64_t i = 0; i < N; i++) {
        const float *p = x + i * C;
        double m = -INFINITY, s = 0, sx = 0;
        for (int64_t c = 0; c < C; c++) m = fmax(m, p[c]);
        for (int64_t c = 0; c < C; c++) s += exp(p[c] - m), sx += p[c];
        double lse = m + log(s);
        double li = (1 - eps) * (lse - p[y[i]]) + eps / (double)C * ((double)C * lse - sx);
        if (rows) rows[i] = li;
        total += li;
    }
    return red == GG_REDUCE_MEAN ? total / (double)N : total;
}

typedef struct sctx {
    int which; /* 0 softmax, 1 log_softmax, 2 cross_entropy */
    int dim;
    const int32_t *labels;
    int64_t n_labels;
    gg_reduction red;
    float eps;
} sctx;

static gg_tensor *sm_fn(gg_tensor *const *in, void *vc) {
    sctx *c = vc;
    if (c->which == 0) return gg_softmax(in[0], c->dim);
    if (c->which == 1) return gg_log_softmax(in[0], c->dim);
    return gg_cross_entropy(in[0], c->labels, c->n_labels, c->red, c->eps);
}

static void gradcheck_one(sctx c, gg_tensor *x) {
    cr_assert_eq(gg_requires_grad(x, true), GG_OK, "%s", gg_last_error());
    gg_gradcheck_report rep;
    char buf[256], sh[64];
    int st = gg_gradcheck(sm_fn, &c, 1, &x, NULL, &rep);
    cr_assert_eq(st, GG_OK, "gradcheck failed to run: %s", gg_last_error());
    cr_assert(rep.passed, "which %d dim %d red %d eps %g x %s: %s", c.which, c.dim, (int)c.red, (double)c.eps,
              gg_shape_str(x->ndim, x->shape, sh, sizeof sh), gg_gradcheck_describe(&rep, buf, sizeof buf));
}

/* ---- softmax / log_softmax ---- */

Test(softmax, hand_computed_values) {
    gg_tensor *x = from(GG_SHAPE(2, 3), (float[]){1, 2, 3, 1, -1, 0});
    assert_near(gg_softmax(x, 1), 1e-6, 0, 0.09003057317, 0.2447284711, 0.6652409558, 0.6652409558,
                0.09003057317, 0.2447284711);
    assert_near(gg_log_softmax(x, -1), 1e-6, 1e-7, -2.407605964, -1.407605964, -0.4076059644, -0.4076059644,
                -2.407605964, -1.407605964);
    /* along dim 0: pairs (1,1), (2,-1), (3,0) */
    assert_near(gg_softmax(x, 0), 1e-6, 0, 0.5, 0.9525741268, 0.9525741268, 0.5, 0.04742587318,
                0.04742587318);
    gg_tensor *s = gg_tensor_scalar(2.0f); /* rank 0, as torch: softmax 1, log_softmax 0 */
    assert_near(gg_softmax(s, 0), 0, 0, 1.0);
    assert_near(gg_log_softmax(s, -1), 0, 0, 0.0);
    gg_tensor_free(s);
    gg_tensor_free(x);
}

Test(softmax, stable_for_huge_logits) {
    gg_tensor *x = from(GG_SHAPE(3, 2), (float[]){1000, -1000, 1000, 1000, -1000, -1000});
    assert_near(gg_softmax(x, 1), 0, 0, 1, 0, 0.5, 0.5, 0.5, 0.5);
    assert_near(gg_log_softmax(x, 1), 1e-7, 1e-6, 0, -2000, -0.6931471806, -0.6931471806, -0.6931471806,
                -0.6931471806);
    assert_near(gg_softmax(x, 0), 1e-6, 0, 0.5, 0, 0.5, 1, 0, 0);
    gg_tensor *y = from(GG_SHAPE(3), (float[]){-1e30f, 0, 88.0f});
    assert_near(gg_softmax(y, 0), 1e-6, 0, 0, 0, 1); /* exp(-88) is subnormal: flushed to 0 (documented) */
    gg_tensor_free(y);
    gg_tensor_free(x);
}

Test(softmax, inf_and_nan_rows_give_nan_as_torch) {
    gg_tensor *x = from(GG_SHAPE(3, 2), (float[]){INFINITY, 1, -INFINITY, -INFINITY, NAN, 0});
    float *v = values(gg_softmax(x, 1));
    for (int i = 0; i < 6; i++) cr_assert(isnan(v[i]), "element %d is %g", i, (double)v[i]);
    free(v);
    gg_tensor *y = from(GG_SHAPE(3), (float[]){-INFINITY, 0, 1});
    assert_near(gg_softmax(y, 0), 1e-6, 0, 0, 0.2689414214, 0.7310585786);
    assert_near(gg_log_softmax(y, 0), 1e-6, 0, -INFINITY, -1.313261687, -0.3132616875);
    gg_tensor_free(y);
    gg_tensor_free(x);
}

Test(softmax, rows_sum_to_one_along_every_dim) {
    gg_tensor *x = randn(GG_SHAPE(3, 5, 7), 3.0f, 1);
    for (int dim = -3; dim < 3; dim++) {
        gg_tensor *y = gg_softmax(x, dim);
        cr_assert_not_null(y);
        gg_tensor *s = gg_sum(y, (int[]){dim}, 1, false);
        cr_assert_not_null(s, "%s", gg_last_error());
        for (int64_t i = 0; i < s->numel; i++)
            cr_assert_float_eq(gg_tensor_data(s)[i], 1.0f, 2e-6, "dim %d group %lld", dim, (long long)i);
        gg_tensor *l = gg_log_softmax(x, dim); /* log_softmax == log(softmax) */
        for (int64_t i = 0; i < y->numel; i++)
            cr_assert(near(gg_tensor_data(l)[i], log(gg_tensor_data(y)[i]), 1e-5, 1e-6));
    }
    gg_tensor_free(x);
}

/* Kernels against the double reference: random odd shapes, every dim, contiguous and transposed views,
 * sizes large enough for the parallel row and column paths. */
Test(softmax, kernels_match_double_reference) {
    gt_lcg g;
    gt_lcg_seed(&g, 99);
    for (int iter = 0; iter < 80; iter++) {
        int nd = (int)gt_lcg_range(&g, 1, 4);
        int64_t shape[4];
        for (int d = 0; d < nd; d++) shape[d] = gt_lcg_range(&g, 1, 9);
        if (iter % 10 == 0) { /* long rows, > 32768 elements: the parallel row path */
            nd = 2;
            shape[0] = gt_lcg_range(&g, 20, 40);
            shape[1] = gt_lcg_range(&g, 1000, 2000);
        }
        if (iter % 10 == 2) { /* short rows (blocked path), > 32768 elements: parallel */
            nd = 2;
            shape[0] = gt_lcg_range(&g, 500, 700);
            shape[1] = gt_lcg_range(&g, 60, 127);
        }
        if (iter % 10 == 1) { /* more than one 256-column block, parallel column path for dims 0 and 1 */
            nd = 3;
            shape[0] = gt_lcg_range(&g, 100, 150);
            shape[1] = 2;
            shape[2] = 301;
        }
        gg_tensor *base = randn(nd, shape, 4.0f, 1000 + iter);
        gg_tensor *x =
            nd > 1 && iter % 3 == 0 ? gg_tensor_transpose(base, 0, nd - 1) : gg_tensor_retain(base);
        float *xv = values(x);
        double *ref = malloc(sizeof(double) * (size_t)x->numel);
        for (int dim = 0; dim < nd; dim++)
            for (int lg = 0; lg < 2; lg++) {
                gg_tensor *y = lg ? gg_log_softmax(x, dim) : gg_softmax(x, dim);
                cr_assert_not_null(y, "%s", gg_last_error());
                ref_softmax(xv, nd, x->shape, dim, lg, ref);
                int64_t i = 0; /* first mismatch (one assertion per case keeps the test fast) */
                while (i < x->numel && near(gg_tensor_data(y)[i], ref[i], 2e-6, lg ? 2e-6 : 1e-9)) i++;
                cr_assert(i == x->numel, "iter %d dim %d log %d element %lld: %.9g vs %.9g", iter, dim, lg,
                          (long long)i, (double)gg_tensor_data(y)[i], ref[i]);
            }
        gg_tape_reset(NULL);
        free(ref);
        free(xv);
        gg_tensor_free(x);
        gg_tensor_free(base);
    }
}

Test(softmax, exp_kernel_accuracy) {
    /* the vectorisable exp against libm over its whole domain */
    for (int i = 0; i <= 200000; i++) {
        float x = -88.0f * (float)i / 200000.0f;
        double e = exp((double)x), a = gg__exp_nonpos(x);
        if (x < -87.33654f) cr_assert_eq(a, 0.0, "exp(%g) = %g", (double)x, a);
        else cr_assert(fabs(a - e) <= 2.5e-7 * e, "exp(%.9g) = %.9g, libm %.9g", (double)x, a, e);
    }
    cr_assert_eq(gg__exp_nonpos(0.0f), 1.0f);
    cr_assert_eq(gg__exp_nonpos(-INFINITY), 0.0f);
    cr_assert(isnan(gg__exp_nonpos(NAN)));
}

Test(softmax, gradcheck_every_dim_and_layout) {
    gg_tensor *x = randn(GG_SHAPE(3, 4, 5), 1.5f, 2);
    for (int which = 0; which < 2; which++)
        for (int dim = -1; dim < 3; dim++) gradcheck_one((sctx){.which = which, .dim = dim}, x);
    gg_tensor *base = randn(GG_SHAPE(4, 3, 6), 1.5f, 3);
    gg_tensor *t = gg_tensor_transpose(base, 0, 2);   /* [6,3,4] */
    gg_tensor *s = gg_tensor_slice(base, 2, 0, 6, 2); /* [4,3,3] */
    for (int which = 0; which < 2; which++)
        for (int dim = 0; dim < 3; dim++) {
            gradcheck_one((sctx){.which = which, .dim = dim}, t);
            gradcheck_one((sctx){.which = which, .dim = dim}, s);
        }
    gg_tensor *r0 = gg_tensor_scalar(0.3f);
    gradcheck_one((sctx){.which = 0, .dim = 0}, r0);
    gradcheck_one((sctx){.which = 1, .dim = 0}, r0);
    gg_tensor_free(r0);
    gg_tensor_free(s);
    gg_tensor_free(t);
    gg_tensor_free(base);
    gg_tensor_free(x);
}

Test(softmax, large_backward_matches_formula) {
    /* parallel backward, column path: dim 0 of [300, 301] */
    gg_tensor *x = randn(GG_SHAPE(300, 301), 2.0f, 4);
    gg_tensor *gseed = randn(GG_SHAPE(300, 301), 1.0f, 5);
    float *xv = values(x), *gv = values(gseed);
    double *y = malloc(sizeof(double) * 300 * 301);
    for (int lg = 0; lg < 2; lg++)
        for (int dim = 0; dim < 2; dim++) {
            cr_assert_eq(gg_requires_grad(x, true), GG_OK);
            gg_tensor *out = lg ? gg_log_softmax(x, dim) : gg_softmax(x, dim);
            cr_assert_eq(gg_backward_ex(out, gseed, false), GG_OK, "%s", gg_last_error());
            ref_softmax(xv, 2, x->shape, dim, false, y);
            int64_t L = x->shape[dim], stride = dim == 0 ? 301 : 1, lines = dim == 0 ? 301 : 300;
            for (int64_t line = 0; line < lines; line++) {
                int64_t b = dim == 0 ? line : line * 301;
                double dot = 0, sg = 0;
                for (int64_t l = 0; l < L; l++) {
                    dot += gv[b + l * stride] * y[b + l * stride];
                    sg += gv[b + l * stride];
                }
                for (int64_t l = 0; l < L; l++) {
                    int64_t k = b + l * stride;
                    double e = lg ? gv[k] - y[k] * sg : y[k] * (gv[k] - dot);
                    cr_assert(near(gg_tensor_data(x->grad)[k], e, 1e-4, 1e-6),
                              "log %d dim %d [%lld]: %g vs %g", lg, dim, (long long)k,
                              (double)gg_tensor_data(x->grad)[k], e);
                }
            }
            gg_tensor_free(x->grad);
            x->grad = NULL;
            gg_tape_reset(NULL);
        }
    free(y);
    free(gv);
    free(xv);
    gg_tensor_free(gseed);
    gg_tensor_free(x);
}

Test(softmax, errors) {
    gg_tensor *x = from(GG_SHAPE(2, 3), (float[]){1, 2, 3, 4, 5, 6});
    size_t before = gg_tape_num_tensors(NULL);
    cr_assert_null(gg_softmax(x, 2));
    gt_assert_error(GG_ERR_INDEX, "gg_softmax");
    gt_assert_msg_has("[2,3]");
    cr_assert_null(gg_log_softmax(x, -3));
    gt_assert_error(GG_ERR_INDEX, "gg_log_softmax");
    gt_assert_msg_has("dim -3");
    gg_tensor *s = gg_tensor_scalar(1.0f);
    cr_assert_null(gg_softmax(s, 1));
    gt_assert_error(GG_ERR_INDEX, "gg_softmax");
    cr_assert_eq(gg_tape_num_tensors(NULL), before, "a failed call allocated a tape tensor");
    gg_error_set(GG_ERR_SHAPE, "upstream_op", "first failure");
    cr_assert_null(gg_softmax(NULL, 0));
    cr_assert_null(gg_log_softmax(NULL, 0));
    gt_assert_error(GG_ERR_SHAPE, "upstream_op: first failure");
    gg_clear_error();
    cr_assert_null(gg_log_softmax(NULL, 0));
    gt_assert_msg_has("gg_log_softmax");
    gg_tensor_free(s);
    gg_tensor_free(x);
}

/* ---- cross-entropy ---- */

Test(softmax, cross_entropy_hand_case) {
    /* loss of both rows: log(1 + e^-1 + e^-2) = 0.4076059644 (torch: 0.4076059644 for the mean) */
    gg_tensor *x = from(GG_SHAPE(2, 3), (float[]){1, 2, 3, 1, -1, 0});
    int32_t y[2] = {2, 0};
    double row = log(1 + exp(-1.0) + exp(-2.0));
    cr_assert(fabs(row - 0.4076059644) < 1e-10);
    assert_near(gg_cross_entropy(x, y, 2, GG_REDUCE_MEAN, 0.0f), 1e-7, 0, 0.4076059644);
    assert_near(gg_cross_entropy(x, y, 2, GG_REDUCE_SUM, 0.0f), 1e-7, 0, 2 * 0.4076059644);
    gg_tensor *none = gg_cross_entropy(x, y, 2, GG_REDUCE_NONE, 0.0f);
    gt_assert_shape(none, 2);
    assert_near(none, 1e-7, 0, 0.4076059644, 0.4076059644);
    /* smoothing 0.1: 0.9 * nll + 0.1 * (lse - mean_c x_c); lse - mean = 1 + row for both rows,
     * so the loss is row + 0.1 = 0.5076059644 (torch gives 0.5076060295 in float32) */
    double ls = 0.9 * row + 0.1 * (1 + row);
    cr_assert(fabs(ls - 0.5076059644) < 1e-10);
    assert_near(gg_cross_entropy(x, y, 2, GG_REDUCE_MEAN, 0.1f), 1e-7, 0, ls);
    assert_near(gg_cross_entropy(x, y, 2, GG_REDUCE_SUM, 0.1f), 1e-7, 0, 2 * ls);
    cr_assert_eq(gg_cross_entropy(x, y, 2, GG_REDUCE_SUM, 0.1f)->ndim, 0);
    /* gradient of the mean: (softmax - onehot) / N */
    cr_assert_eq(gg_requires_grad(x, true), GG_OK);
    cr_assert_eq(gg_backward(gg_cross_entropy(x, y, 2, GG_REDUCE_MEAN, 0.0f)), GG_OK, "%s", gg_last_error());
    assert_near(x->grad, 1e-6, 1e-7, 0.09003057317 / 2, 0.2447284711 / 2, (0.6652409558 - 1) / 2,
                (0.6652409558 - 1) / 2, 0.09003057317 / 2, 0.2447284711 / 2);
    gg_tensor_free(x);
}

Test(softmax, cross_entropy_matches_double_reference) {
    const gg_reduction reds[3] = {GG_REDUCE_MEAN, GG_REDUCE_SUM, GG_REDUCE_NONE};
    const float epss[3] = {0.0f, 0.1f, 1.0f};
    const int64_t sizes[4][2] = {{1, 1}, {7, 5}, {33, 300}, {400, 129}}; /* the last two: chunks, threads */
    gt_lcg g;
    gt_lcg_seed(&g, 7);
    for (int s = 0; s < 4; s++) {
        int64_t N = sizes[s][0], C = sizes[s][1];
        gg_tensor *base = randn(GG_SHAPE(C, N), 3.0f, 50 + s);
        gg_tensor *x = gg_tensor_transpose(base, 0, 1); /* non-contiguous [N, C] */
        int32_t *y = malloc(sizeof(int32_t) * (size_t)N);
        for (int64_t i = 0; i < N; i++) y[i] = (int32_t)gt_lcg_range(&g, 0, C - 1);
        float *xv = values(x);
        double *rows = malloc(sizeof(double) * (size_t)N);
        for (int r = 0; r < 3; r++)
            for (int e = 0; e < 3; e++) {
                double tot = ref_ce(xv, N, C, y, epss[e], reds[r], rows);
                gg_tensor *out = gg_cross_entropy(x, y, N, reds[r], epss[e]);
                cr_assert_not_null(out, "%s", gg_last_error());
                if (reds[r] == GG_REDUCE_NONE) {
                    for (int64_t i = 0; i < N; i++)
                        cr_assert(near(gg_tensor_data(out)[i], rows[i], 1e-6, 1e-6), "row %lld: %g vs %g",
                                  (long long)i, (double)gg_tensor_data(out)[i], rows[i]);
                } else {
                    cr_assert(near(gg_tensor_data(out)[0], tot, 1e-6, 1e-6),
                              "N %lld C %lld red %d eps %g: %g vs %g", (long long)N, (long long)C,
                              (int)reds[r], (double)epss[e], (double)gg_tensor_data(out)[0], tot);
                }
            }
        gg_tape_reset(NULL);
        free(rows);
        free(xv);
        free(y);
        gg_tensor_free(x);
        gg_tensor_free(base);
    }
}

Test(softmax, cross_entropy_gradcheck) {
    int32_t y[4] = {2, 0, 4, 4};
    gg_tensor *x = randn(GG_SHAPE(4, 5), 2.0f, 8);
    gg_tensor *base = randn(GG_SHAPE(5, 4), 2.0f, 9);
    gg_tensor *xt = gg_tensor_transpose(base, 0, 1);
    const gg_reduction reds[3] = {GG_REDUCE_MEAN, GG_REDUCE_SUM, GG_REDUCE_NONE};
    const float epss[3] = {0.0f, 0.1f, 1.0f};
    for (int r = 0; r < 3; r++)
        for (int e = 0; e < 3; e++) {
            sctx c = {.which = 2, .labels = y, .n_labels = 4, .red = reds[r], .eps = epss[e]};
            gradcheck_one(c, x);
            gradcheck_one(c, xt);
        }
    gg_tensor_free(xt);
    gg_tensor_free(base);
    gg_tensor_free(x);
}

Test(softmax, cross_entropy_large_backward_matches_formula) {
    const int64_t N = 300, C = 257;
    gg_tensor *x = randn(GG_SHAPE(N, C), 2.0f, 10);
    cr_assert_eq(gg_requires_grad(x, true), GG_OK);
    int32_t *y = malloc(sizeof(int32_t) * N);
    for (int64_t i = 0; i < N; i++) y[i] = (int32_t)((i * 37) % C);
    float eps = 0.2f;
    cr_assert_eq(gg_backward(gg_cross_entropy(x, y, N, GG_REDUCE_MEAN, eps)), GG_OK, "%s", gg_last_error());
    free(y); /* backward must not need the caller's labels: check the gradient with a fresh copy */
    float *xv = values(x);
    double *p = malloc(sizeof(double) * (size_t)(N * C));
    ref_softmax(xv, 2, x->shape, 1, false, p);
    for (int64_t i = 0; i < N; i++)
        for (int64_t c = 0; c < C; c++) {
            double e = (p[i * C + c] - eps / (double)C - (c == (i * 37) % C ? 1 - eps : 0)) / (double)N;
            cr_assert(near(gg_tensor_data(x->grad)[i * C + c], e, 1e-4, 1e-8), "[%lld,%lld]: %g vs %g",
                      (long long)i, (long long)c, (double)gg_tensor_data(x->grad)[i * C + c], e);
        }
    free(p);
    free(xv);
    gg_tensor_free(x);
}

Test(softmax, cross_entropy_stable_and_empty) {
    gg_tensor *x = from(GG_SHAPE(2, 2), (float[]){1000, -1000, -1000, 1000});
    assert_near(gg_cross_entropy(x, (int32_t[]){1, 1}, 2, GG_REDUCE_NONE, 0.0f), 1e-7, 0, 2000, 0);
    gg_tensor *e = gg_tensor_zeros(GG_SHAPE(0, 3));
    float *v = values(gg_cross_entropy(e, NULL, 0, GG_REDUCE_MEAN, 0.0f)); /* 0/0, as torch */
    cr_assert(isnan(v[0]));
    free(v);
    assert_near(gg_cross_entropy(e, NULL, 0, GG_REDUCE_SUM, 0.0f), 0, 0, 0);
    gt_assert_shape(gg_cross_entropy(e, NULL, 0, GG_REDUCE_NONE, 0.0f), 0);
    gg_tensor_free(e);
    gg_tensor_free(x);
}

Test(softmax, cross_entropy_errors) {
    gg_tensor *x = from(GG_SHAPE(2, 3), (float[]){1, 2, 3, 4, 5, 6});
    gg_tensor *x3 = gg_tensor_zeros(GG_SHAPE(2, 3, 1));
    gg_tensor *x1 = gg_tensor_zeros(GG_SHAPE(3));
    int32_t good[2] = {0, 2};
    size_t before = gg_tape_num_tensors(NULL);
    cr_assert_null(gg_cross_entropy(x3, good, 2, GG_REDUCE_MEAN, 0.0f));
    gt_assert_error(GG_ERR_SHAPE, "gg_cross_entropy");
    gt_assert_msg_has("[2,3,1]");
    cr_assert_null(gg_cross_entropy(x1, good, 2, GG_REDUCE_MEAN, 0.0f));
    gt_assert_error(GG_ERR_SHAPE, "[3]");
    cr_assert_null(gg_cross_entropy(x, good, 3, GG_REDUCE_MEAN, 0.0f));
    gt_assert_error(GG_ERR_SHAPE, "gg_cross_entropy: 3 labels");
    gt_assert_msg_has("[2,3]");
    cr_assert_null(gg_cross_entropy(x, (int32_t[]){0, 3}, 2, GG_REDUCE_SUM, 0.0f));
    gt_assert_error(GG_ERR_INDEX, "label 3 at index 1");
    gt_assert_msg_has("[2,3]");
    cr_assert_null(gg_cross_entropy(x, (int32_t[]){-1, 0}, 2, GG_REDUCE_NONE, 0.0f));
    gt_assert_error(GG_ERR_INDEX, "label -1 at index 0");
    cr_assert_null(gg_cross_entropy(x, NULL, 2, GG_REDUCE_MEAN, 0.0f));
    gt_assert_error(GG_ERR_ARG, "gg_cross_entropy");
    cr_assert_null(gg_cross_entropy(x, good, 2, GG_REDUCE_MEAN, 1.5f));
    gt_assert_error(GG_ERR_ARG, "label_smoothing");
    cr_assert_null(gg_cross_entropy(x, good, 2, GG_REDUCE_MEAN, -0.1f));
    gt_assert_error(GG_ERR_ARG, "label_smoothing");
    cr_assert_null(gg_cross_entropy(x, good, 2, GG_REDUCE_MEAN, NAN));
    gt_assert_error(GG_ERR_ARG, "label_smoothing");
    cr_assert_null(gg_cross_entropy(x, good, 2, (gg_reduction)7, 0.0f));
    gt_assert_error(GG_ERR_ARG, "reduction");
    cr_assert_eq(gg_tape_num_tensors(NULL), before, "a failed call allocated a tape tensor");
    gg_error_set(GG_ERR_SHAPE, "upstream_op", "first failure");
    cr_assert_null(gg_cross_entropy(NULL, good, 2, GG_REDUCE_MEAN, 0.0f));
    gt_assert_error(GG_ERR_SHAPE, "upstream_op: first failure");
    gg_tensor_free(x1);
    gg_tensor_free(x3);
    gg_tensor_free(x);
}

Test(softmax, backward_twice_needs_retain_graph) {
    gg_tensor *x = from(GG_SHAPE(1, 3), (float[]){1, 2, 3});
    cr_assert_eq(gg_requires_grad(x, true), GG_OK);
    gg_tensor *l = gg_cross_entropy(x, (int32_t[]){1}, 1, GG_REDUCE_SUM, 0.0f);
    cr_assert_eq(gg_backward_ex(l, NULL, true), GG_OK, "%s", gg_last_error());
    cr_assert_eq(gg_backward(l), GG_OK, "%s", gg_last_error()); /* retained: accumulates twice */
    assert_near(x->grad, 1e-6, 1e-7, 2 * 0.09003057317, 2 * (0.2447284711 - 1), 2 * 0.6652409558);
    cr_assert_neq(gg_backward(l), GG_OK);
    gt_assert_msg_has("cross_entropy");
    gg_tensor_free(x);
}
