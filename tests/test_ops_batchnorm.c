/* gg_batch_norm2d and gg_dropout (the CNN layers with state or randomness): hand-computed cases, exact
 * running-statistics updates, gradient checks in training and eval mode with and without affine parameters
 * (non-contiguous x, strided weight), the kernels against a double-precision reference on random shapes,
 * thread-count independence, PyTorch golden cases; dropout's mask rule, keep fraction, reproducibility,
 * thread independence, backward and p == 1; every error path of both. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gg_test_util.h"
#include "groupgrad.h"

static void one_thread(void) { gg_set_num_threads(1); }

static void teardown(void) {
    gg_tape_reset(NULL);
    gg_set_grad_enabled(true);
    gg_clear_error();
}

TestSuite(bn, .init = one_thread, .fini = teardown);
TestSuite(dropout, .init = one_thread, .fini = teardown);

/* ---- helpers ---- */

static gg_tensor *from(int ndim, const int64_t *shape, const float *v) {
    gg_tensor *t = gg_tensor_from_data(ndim, shape, v);
    cr_assert_not_null(t, "%s", gg_last_error());
    return t;
}

static gg_tensor *uniform(int ndim, const int64_t *shape, float lo, float hi, uint64_t seed) {
    gg_tensor *t = gg_tensor_empty(ndim, shape);
    cr_assert_not_null(t, "%s", gg_last_error());
    gg_rng r;
    gg_rng_init(&r, seed);
    cr_assert_eq(gg_rand_uniform(t, lo, hi, &r), GG_OK, "%s", gg_last_error());
    return t;
}

static gg_tensor *leaf(gg_tensor *t) {
    cr_assert_eq(gg_requires_grad(t, true), GG_OK, "%s", gg_last_error());
    return t;
}

static float *values(const gg_tensor *t) {
    float *v = malloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1));
    cr_assert_eq(gg_tensor_to_buffer(t, v, t->numel), GG_OK, "%s", gg_last_error());
    return v;
}

/* max |a - e| <= tol * max(1, max |e|) */
static void assert_close_(const float *a, const double *e, int64_t n, double tol, const char *what, const char *file,
                          int line) {
    double scale = 1;
    for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs(e[i]));
    for (int64_t i = 0; i < n; i++)
        cr_assert(fabs((double)a[i] - e[i]) <= tol * scale, "%s:%d: %s: element %lld is %.9g, expected %.9g", file,
                  line, what, (long long)i, (double)a[i], e[i]);
}
#define assert_close(a, e, n, tol, what) assert_close_((a), (e), (n), (tol), (what), __FILE__, __LINE__)

static void assert_tensor_close(const gg_tensor *t, const double *e, double tol, const char *what) {
    cr_assert_not_null(t, "%s is NULL (%s)", what, gg_last_error());
    float *v = values(t);
    assert_close(v, e, t->numel, tol, what);
    free(v);
}

static void backward_seed(gg_tensor *y, gg_tensor *seed) {
    cr_assert_not_null(y, "%s", gg_last_error());
    cr_assert_eq(gg_backward_ex(y, seed, false), GG_OK, "%s", gg_last_error());
}

/* ---- batch norm: hand-computed ---- */

Test(bn, train_hand_and_running_stats_exact) {
    /* one channel, values 1 2 3 4: mean 2.5, biased var 1.25, unbiased 5/3 */
    gg_tensor *x = from(GG_SHAPE(2, 1, 1, 2), (const float[]){1, 2, 3, 4});
    gg_tensor *w = from(GG_SHAPE(1), (const float[]){2}), *b = from(GG_SHAPE(1), (const float[]){1});
    gg_tensor *rm = from(GG_SHAPE(1), (const float[]){0.5f}), *rv = from(GG_SHAPE(1), (const float[]){2});
    const uint64_t vm = rm->storage->version, vv = rv->storage->version;
    const float m = 0.1f;
    gg_tensor *y = gg_batch_norm2d(x, w, b, rm, rv, true, m, 0.0f);
    gt_assert_shape(y, 2, 1, 1, 2);
    const double inv = 1 / sqrt(1.25);
    const double e[4] = {-1.5 * inv * 2 + 1, -0.5 * inv * 2 + 1, 0.5 * inv * 2 + 1, 1.5 * inv * 2 + 1};
    assert_tensor_close(y, e, 1e-6, "y");
    /* PyTorch's update, in double with the float momentum: exact equality */
    const float erm = (float)((double)m * 2.5 + (1 - (double)m) * 0.5);
    const float erv = (float)((double)m * (5.0 / 3.0) + (1 - (double)m) * 2.0);
    cr_assert(gg_tensor_data(rm)[0] == erm, "running_mean %.9g, expected %.9g", (double)gg_tensor_data(rm)[0],
              (double)erm);
    cr_assert(gg_tensor_data(rv)[0] == erv, "running_var %.9g, expected %.9g", (double)gg_tensor_data(rv)[0],
              (double)erv);
    cr_assert_eq(rm->storage->version, vm + 1, "running_mean's version must be bumped");
    cr_assert_eq(rv->storage->version, vv + 1, "running_var's version must be bumped");
    cr_assert_not(rm->requires_grad);
    /* momentum 1 replaces, momentum 0 keeps */
    gg_batch_norm2d(x, NULL, NULL, rm, rv, true, 1.0f, 1e-5f);
    gt_assert_list(rm, 2.5f);
    cr_assert_float_eq(gg_tensor_data(rv)[0], 5.0f / 3.0f, 1e-6);
    gg_batch_norm2d(x, NULL, NULL, rm, rv, true, 0.0f, 1e-5f);
    gt_assert_list(rm, 2.5f);
    gg_tensor *all[] = {x, w, b, rm, rv};
    for (int i = 0; i < 5; i++) gg_tensor_free(all[i]);
}

Test(bn, train_running_stats_several_channels) {
    /* two channels over N=2, H=W=1 plus a strided running_mean (every other element of a [4] buffer) */
    gg_tensor *x = from(GG_SHAPE(2, 2, 1, 1), (const float[]){1, -2, 5, 6});
    gg_tensor *buf = gg_tensor_zeros(GG_SHAPE(4));
    gg_tensor *rm = gg_tensor_slice(buf, 0, 0, 4, 2), *rv = gg_tensor_ones(GG_SHAPE(2));
    gg_tensor *y = gg_batch_norm2d(x, NULL, NULL, rm, rv, true, 0.5f, 0.0f);
    assert_tensor_close(y, (const double[]){-1, -1, 1, 1}, 1e-6, "y");
    gt_assert_list(buf, 1.5f, 0, 1, 0);           /* 0.5 * mean: means 3 and 2 */
    gt_assert_list(rv, 0.5f + 0.5f * 8, 0.5f + 0.5f * 32); /* unbiased vars 8 and 32 */
    gg_tensor_free(x);
    gg_tensor_free(buf);
    gg_tensor_free(rm);
    gg_tensor_free(rv);
}

Test(bn, eval_hand) {
    gg_tensor *x = from(GG_SHAPE(1, 2, 1, 2), (const float[]){1, 2, 3, 4});
    gg_tensor *rm = from(GG_SHAPE(2), (const float[]){1, 2}), *rv = from(GG_SHAPE(2), (const float[]){4, 0.25f});
    gg_tensor *w = from(GG_SHAPE(2), (const float[]){3, -1}), *b = from(GG_SHAPE(2), (const float[]){0.5f, 0});
    const uint64_t vm = rm->storage->version;
    gg_tensor *y = gg_batch_norm2d(x, w, b, rm, rv, false, 0.1f, 0.0f);
    gt_assert_list(y, 0.5f, 2, -2, -4);
    gt_assert_list(rm, 1, 2); /* untouched in eval */
    cr_assert_eq(rm->storage->version, vm);
    gt_assert_list(gg_batch_norm2d(x, NULL, NULL, rm, rv, false, 0.1f, 0.0f), 0, 0.5f, 2, 4);
    gg_tensor *all[] = {x, rm, rv, w, b};
    for (int i = 0; i < 5; i++) gg_tensor_free(all[i]);
}

Test(bn, backward_hand) {
    /* eval: dx = dy * w / sqrt(rv + eps), dw = sum (x - rm) dy / sqrt(rv + eps), db = sum dy */
    gg_tensor *x = leaf(from(GG_SHAPE(2, 1, 1, 1), (const float[]){3, 5}));
    gg_tensor *w = leaf(from(GG_SHAPE(1), (const float[]){2})), *b = leaf(from(GG_SHAPE(1), (const float[]){1}));
    gg_tensor *rm = from(GG_SHAPE(1), (const float[]){1}), *rv = from(GG_SHAPE(1), (const float[]){4});
    gg_tensor *seed = from(GG_SHAPE(2, 1, 1, 1), (const float[]){1, 2});
    backward_seed(gg_batch_norm2d(x, w, b, rm, rv, false, 0.1f, 0.0f), seed);
    gt_assert_list(x->grad, 1, 2);
    gt_assert_list(w->grad, (2 * 1 + 4 * 2) / 2.0f);
    gt_assert_list(b->grad, 3);
    /* training on {3, 5}: xhat = {-1, 1}, dx = w*invstd*(dy - mean dy - xhat mean(dy xhat)) = 2*(..)= 0 for
     * dy = {1, 2}? mean dy = 1.5, mean(dy xhat) = 0.5: dx = 2 * (1 - 1.5 + 0.5, 2 - 1.5 - 0.5) = 0 */
    gg_zero_grad(x), gg_zero_grad(w), gg_zero_grad(b);
    backward_seed(gg_batch_norm2d(x, w, b, NULL, NULL, true, 0.1f, 0.0f), seed);
    assert_tensor_close(x->grad, (const double[]){0, 0}, 1e-6, "train dx");
    assert_tensor_close(w->grad, (const double[]){1}, 1e-6, "train dw"); /* sum xhat dy = -1 + 2 */
    gt_assert_list(b->grad, 3);
    gg_tensor *all[] = {x, w, b, rm, rv, seed};
    for (int i = 0; i < 6; i++) gg_tensor_free(all[i]);
}

Test(bn, zero_variance_and_empty) {
    /* eps 0 and a constant channel: PyTorch's invstd is 0 then, so y = bias and no gradient */
    gg_tensor *x = leaf(from(GG_SHAPE(2, 1, 1, 2), (const float[]){7, 7, 7, 7}));
    gg_tensor *b = from(GG_SHAPE(1), (const float[]){3});
    gg_tensor *y = gg_batch_norm2d(x, NULL, b, NULL, NULL, true, 0.1f, 0.0f);
    gt_assert_all(y, 3.0f);
    gg_tensor *seed = gg_tensor_ones(GG_SHAPE(2, 1, 1, 2));
    backward_seed(y, seed);
    gt_assert_all(x->grad, 0.0f);
    /* empty batch: empty output, running stats untouched (PyTorch) */
    gg_tensor *e = leaf(gg_tensor_zeros(GG_SHAPE(0, 3, 2, 2)));
    gg_tensor *rm = gg_tensor_zeros(GG_SHAPE(3)), *rv = gg_tensor_ones(GG_SHAPE(3));
    y = gg_batch_norm2d(e, NULL, NULL, rm, rv, true, 0.1f, 1e-5f);
    gt_assert_shape(y, 0, 3, 2, 2);
    gt_assert_all(rm, 0.0f);
    gt_assert_all(rv, 1.0f);
    gg_tensor *s0 = gg_tensor_zeros(GG_SHAPE(0, 3, 2, 2));
    backward_seed(y, s0);
    gg_tensor *all[] = {x, b, seed, e, rm, rv, s0};
    for (int i = 0; i < 7; i++) gg_tensor_free(all[i]);
}

Test(bn, saved_values_and_versions) {
    /* eval: the running stats used in the forward are saved, so changing them before backward changes
     * nothing; training: x is saved, so writing into x makes backward fail */
    gg_tensor *x = leaf(uniform(GG_SHAPE(2, 3, 2, 2), -1, 1, 1));
    gg_tensor *w = leaf(uniform(GG_SHAPE(3), 0.5f, 1.5f, 2));
    gg_tensor *rm = uniform(GG_SHAPE(3), -1, 1, 3), *rv = uniform(GG_SHAPE(3), 0.5f, 2, 4);
    gg_tensor *seed = uniform(GG_SHAPE(2, 3, 2, 2), -1, 1, 5);
    backward_seed(gg_batch_norm2d(x, w, NULL, rm, rv, false, 0.1f, 1e-5f), seed);
    float *dx0 = values(x->grad), *dw0 = values(w->grad);
    gg_zero_grad(x), gg_zero_grad(w);
    gg_tensor *y = gg_batch_norm2d(x, w, NULL, rm, rv, false, 0.1f, 1e-5f);
    gg_tensor_fill(rm, 100.0f);
    gg_tensor_fill(rv, 9.0f);
    backward_seed(y, seed);
    float *dx1 = values(x->grad), *dw1 = values(w->grad);
    cr_assert_eq(memcmp(dx0, dx1, sizeof(float) * 24), 0, "dx changed with the buffers");
    cr_assert_eq(memcmp(dw0, dw1, sizeof(float) * 3), 0, "dw changed with the buffers");
    y = gg_batch_norm2d(x, w, NULL, rm, rv, true, 0.1f, 1e-5f);
    gg_tensor_fill(x, 1.0f);
    cr_assert_eq(gg_backward_ex(y, seed, false), GG_ERR_STATE);
    gt_assert_msg_has("batch_norm2d");
    free(dx0), free(dx1), free(dw0), free(dw1);
    gg_tensor *all[] = {x, w, rm, rv, seed};
    for (int i = 0; i < 5; i++) gg_tensor_free(all[i]);
}

/* ---- batch norm: gradient checks ---- */

typedef struct bn_ctx {
    bool training, affine, stats;
    float momentum, eps;
    gg_tensor *rm, *rv;
} bn_ctx;

static gg_tensor *bn_fn(gg_tensor *const *in, void *p) {
    const bn_ctx *c = p;
    return gg_batch_norm2d(in[0], c->affine ? in[1] : NULL, c->affine ? in[2] : NULL, c->stats ? c->rm : NULL,
                           c->stats ? c->rv : NULL, c->training, c->momentum, c->eps);
}

static void gradcheck_bn(bn_ctx *c, bool transposed, bool strided_w, uint64_t seed) {
    const int64_t N = 3, C = 3, H = 4, W = 5;
    gg_tensor *base = transposed ? uniform(GG_SHAPE(N, C, W, H), -2, 2, seed) : uniform(GG_SHAPE(N, C, H, W), -2, 2, seed);
    gg_tensor *x = leaf(transposed ? gg_tensor_transpose(base, 2, 3) : gg_tensor_retain(base));
    gg_tensor *wb = uniform(GG_SHAPE(2 * C), 0.5f, 1.5f, seed + 1);
    gg_tensor *w = leaf(strided_w ? gg_tensor_slice(wb, 0, 0, 2 * C, 2) : gg_tensor_slice(wb, 0, 0, C, 1));
    gg_tensor *b = leaf(uniform(GG_SHAPE(C), -0.5f, 0.5f, seed + 2));
    c->rm = uniform(GG_SHAPE(C), -0.5f, 0.5f, seed + 3);
    c->rv = uniform(GG_SHAPE(C), 0.5f, 2.0f, seed + 4);
    gg_tensor *in[3] = {x, w, b};
    gg_gradcheck_report rep;
    char buf[256];
    int st = gg_gradcheck(bn_fn, c, c->affine ? 3 : 1, in, NULL, &rep);
    cr_assert_eq(st, GG_OK, "gradcheck did not run: %s", gg_last_error());
    cr_assert(rep.passed, "training %d affine %d stats %d transposed %d strided w %d: %s", c->training, c->affine,
              c->stats, transposed, strided_w, gg_gradcheck_describe(&rep, buf, sizeof buf));
    gg_tensor *all[] = {base, x, wb, w, b, c->rm, c->rv};
    for (int i = 0; i < 7; i++) gg_tensor_free(all[i]);
}

Test(bn, gradcheck_train_and_eval) {
    uint64_t seed = 10;
    for (int training = 0; training < 2; training++)
        for (int affine = 0; affine < 2; affine++)
            for (int tr = 0; tr < 2; tr++) {
                bn_ctx c = {.training = training, .affine = affine, .stats = !training || tr, .momentum = 0.1f,
                            .eps = 1e-5f};
                gradcheck_bn(&c, tr, tr, seed);
                seed += 10;
                gg_tape_reset(NULL);
            }
}

/* ---- batch norm: against a double-precision reference ---- */

/* Two-pass statistics in double and PyTorch's formulas; dx, dw, db for the seed dy. */
static void ref_bn(int64_t N, int64_t C, int64_t HW, bool training, const float *x, const float *w, const float *b,
                   const float *rm, const float *rv, double eps, double mom, const float *dy, double *y, double *dx,
                   double *dw, double *db, double *rm_out, double *rv_out) {
    const double n = (double)(N * HW);
    for (int64_t c = 0; c < C; c++) {
        double mean = 0, var = 0, sdy = 0, dot = 0;
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = 0; j < HW; j++) mean += x[(i * C + c) * HW + j];
        mean /= n;
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = 0; j < HW; j++) var += pow(x[(i * C + c) * HW + j] - mean, 2);
        if (training) {
            rm_out[c] = mom * mean + (1 - mom) * rm[c];
            rv_out[c] = mom * var / (n - 1) + (1 - mom) * rv[c];
        } else {
            mean = rm[c];
            rm_out[c] = rm[c], rv_out[c] = rv[c];
        }
        const double invstd = 1 / sqrt((training ? var / n : rv[c]) + eps), wc = w ? w[c] : 1, bc = b ? b[c] : 0;
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = 0; j < HW; j++) {
                int64_t k = (i * C + c) * HW + j;
                y[k] = (x[k] - mean) * invstd * wc + bc;
                sdy += dy[k];
                dot += (x[k] - mean) * dy[k];
            }
        dw[c] = dot * invstd;
        db[c] = sdy;
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = 0; j < HW; j++) {
                int64_t k = (i * C + c) * HW + j;
                dx[k] = training ? (dy[k] - sdy / n - (x[k] - mean) * dot * invstd * invstd / n) * invstd * wc
                                 : dy[k] * invstd * wc;
            }
    }
}

static void compare_with_reference(int64_t N, int64_t C, int64_t H, int64_t W, bool training, bool affine,
                                   float offset, uint64_t seed) {
    /* y = x * alpha + beta in float (PyTorch's form) loses about ulp(offset) * invstd to cancellation when
     * the mean is far from 0; the running statistics (the variance) must stay accurate anyway */
    const double tol = offset == 0 ? 2e-5 : 1e-3;
    const int64_t HW = H * W, n = N * C * HW;
    gg_tensor *x = leaf(uniform(GG_SHAPE(N, C, H, W), offset - 1.5f, offset + 2.5f, seed));
    gg_tensor *w = affine ? leaf(uniform(GG_SHAPE(C), 0.5f, 1.5f, seed + 1)) : NULL;
    gg_tensor *b = affine ? leaf(uniform(GG_SHAPE(C), -1, 1, seed + 2)) : NULL;
    gg_tensor *rm = uniform(GG_SHAPE(C), -1, 1, seed + 3), *rv = uniform(GG_SHAPE(C), 0.5f, 2, seed + 4);
    gg_tensor *dy = uniform(GG_SHAPE(N, C, H, W), -1, 1, seed + 5);
    float *rm0 = values(rm), *rv0 = values(rv);
    double *y = malloc(sizeof(double) * (size_t)n), *dx = malloc(sizeof(double) * (size_t)n);
    double *dw = malloc(sizeof(double) * (size_t)C), *db = malloc(sizeof(double) * (size_t)C);
    double *erm = malloc(sizeof(double) * (size_t)C), *erv = malloc(sizeof(double) * (size_t)C);
    ref_bn(N, C, HW, training, gg_tensor_data(x), w ? gg_tensor_data(w) : NULL, b ? gg_tensor_data(b) : NULL, rm0, rv0,
           1e-5, 0.1, gg_tensor_data(dy), y, dx, dw, db, erm, erv);
    gg_tensor *out = gg_batch_norm2d(x, w, b, rm, rv, training, 0.1f, 1e-5f);
    backward_seed(out, dy);
    char what[200];
#define WHAT(t) (snprintf(what, sizeof what, "[%lld,%lld,%lld,%lld] training %d affine %d offset %g: %s", (long long)N, \
                          (long long)C, (long long)H, (long long)W, training, affine, (double)offset, (t)), what)
    /* float rounding of invstd/alpha/beta and of the float kernels: relative 1e-5 of the value range */
    assert_tensor_close(out, y, tol, WHAT("y"));
    assert_tensor_close(x->grad, dx, tol, WHAT("dx"));
    assert_tensor_close(rm, erm, 1e-6, WHAT("running_mean"));
    assert_tensor_close(rv, erv, 1e-6, WHAT("running_var"));
    if (affine) {
        assert_tensor_close(w->grad, dw, 1e-5, WHAT("dw"));
        assert_tensor_close(b->grad, db, 1e-5, WHAT("db"));
    }
#undef WHAT
    free(y), free(dx), free(dw), free(db), free(erm), free(erv), free(rm0), free(rv0);
    gg_tensor *all[] = {x, w, b, rm, rv, dy};
    for (int i = 0; i < 6; i++) gg_tensor_free(all[i]);
    gg_tape_reset(NULL);
}

Test(bn, kernels_vs_reference) {
    const int64_t shapes[][4] = {{1, 1, 1, 2}, {2, 3, 5, 7}, {3, 5, 1, 1}, {4, 2, 9, 11}, {2, 7, 13, 3}, {5, 3, 17, 19}};
    uint64_t seed = 300;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int training = 0; training < 2; training++)
            for (int affine = 0; affine < 2; affine++) {
                compare_with_reference(shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3], training, affine, 0.0f,
                                       seed);
                seed += 10;
            }
    /* a large mean relative to the spread: the shifted one-pass variance must not cancel */
    compare_with_reference(4, 3, 16, 16, true, true, 1000.0f, 900);
    compare_with_reference(4, 3, 16, 16, true, false, -3000.0f, 910);
}

Test(bn, threads_identical) {
    /* 8*16*24*24 = 73728 elements: above the OpenMP threshold */
    for (int training = 0; training < 2; training++) {
        float *res[2][5];
        for (int t = 0; t < 2; t++) {
            gg_set_num_threads(t + 1);
            gg_tensor *x = leaf(uniform(GG_SHAPE(8, 16, 24, 24), -1, 3, 1));
            gg_tensor *w = leaf(uniform(GG_SHAPE(16), 0.5f, 1.5f, 2)), *b = leaf(uniform(GG_SHAPE(16), -1, 1, 3));
            gg_tensor *rm = gg_tensor_zeros(GG_SHAPE(16)), *rv = gg_tensor_ones(GG_SHAPE(16));
            gg_tensor *dy = uniform(GG_SHAPE(8, 16, 24, 24), -1, 1, 4);
            gg_tensor *y = gg_batch_norm2d(x, w, b, rm, rv, training, 0.1f, 1e-5f);
            backward_seed(y, dy);
            res[t][0] = values(y), res[t][1] = values(x->grad), res[t][2] = values(w->grad);
            res[t][3] = values(b->grad), res[t][4] = values(rv);
            gg_tensor *all[] = {x, w, b, rm, rv, dy};
            for (int i = 0; i < 6; i++) gg_tensor_free(all[i]);
            gg_tape_reset(NULL);
        }
        const size_t sz[5] = {73728, 73728, 16, 16, 16};
        for (int k = 0; k < 5; k++) {
            cr_assert_eq(memcmp(res[0][k], res[1][k], sizeof(float) * sz[k]), 0, "training %d: result %d differs",
                         training, k);
            free(res[0][k]), free(res[1][k]);
        }
    }
}

/* ---- batch norm: PyTorch golden cases (scripts/gen_cnn_golden.py) ---- */

static gg_tensor *load_golden(const char *name, const char *key) {
    const char *root = getenv("GG_TEST_DATA");
    cr_assert_not_null(root, "GG_TEST_DATA is not set");
    char path[1200];
    snprintf(path, sizeof path, "%s/golden/cnn/%s_%s.npy", root, name, key);
    gg_tensor *t = gg_npy_load(path);
    cr_assert_not_null(t, "cannot load %s: %s", path, gg_last_error());
    return t;
}

static void assert_golden(const char *name, const char *key, const gg_tensor *got, double tol) {
    gg_tensor *e = load_golden(name, key);
    cr_assert_not_null(got, "%s %s: NULL (%s)", name, key, gg_last_error());
    cr_assert(gg_tensor_same_shape(got, e), "%s %s: shape", name, key);
    double *ed = malloc(sizeof(double) * (size_t)(e->numel ? e->numel : 1));
    for (int64_t i = 0; i < e->numel; i++) ed[i] = gg_tensor_data(e)[i];
    char what[200];
    snprintf(what, sizeof what, "%s: %s", name, key);
    assert_tensor_close(got, ed, tol, what);
    free(ed);
    gg_tensor_free(e);
}

Test(bn, pytorch_golden) {
    const char *cases[] = {"bn_train_affine", "bn_train_plain", "bn_eval_affine", "bn_eval_plain"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *nm = cases[i];
        gg_tensor *prm = load_golden(nm, "params");
        cr_assert_eq(prm->numel, 4);
        const float *q = gg_tensor_data(prm);
        const bool training = q[0] != 0, affine = q[1] != 0;
        gg_tensor *x = leaf(load_golden(nm, "x")), *c = load_golden(nm, "c");
        gg_tensor *w = affine ? leaf(load_golden(nm, "w")) : NULL, *b = affine ? leaf(load_golden(nm, "b")) : NULL;
        gg_tensor *rm = load_golden(nm, "rm0"), *rv = load_golden(nm, "rv0");
        gg_tensor *y = gg_batch_norm2d(x, w, b, rm, rv, training, q[2], q[3]);
        assert_golden(nm, "y", y, 1e-6);
        backward_seed(y, c);
        assert_golden(nm, "dx", x->grad, 1e-5);
        assert_golden(nm, "rm", rm, 1e-6);
        assert_golden(nm, "rv", rv, 1e-6);
        if (affine) {
            assert_golden(nm, "dw", w->grad, 1e-5);
            assert_golden(nm, "db", b->grad, 1e-5);
        }
        gg_tensor *all[] = {prm, x, c, w, b, rm, rv};
        for (int k = 0; k < 7; k++) gg_tensor_free(all[k]);
        gg_tape_reset(NULL);
    }
}

/* ---- batch norm: errors ---- */

static void expect_bn_error(gg_tensor *x, gg_tensor *w, gg_tensor *b, gg_tensor *rm, gg_tensor *rv, bool training,
                            float m, float eps, int status, const char *needle) {
    gg_clear_error();
    const size_t before = gg_tape_num_tensors(NULL);
    const uint64_t vm = rm ? rm->storage->version : 0;
    float rm0 = rm && rm->numel ? gg_tensor_data(rm)[0] : 0;
    cr_assert_null(gg_batch_norm2d(x, w, b, rm, rv, training, m, eps), "expected an error containing \"%s\"", needle);
    gt_assert_error(status, "gg_batch_norm2d");
    gt_assert_msg_has(needle);
    cr_assert_eq(gg_tape_num_tensors(NULL), before, "a failed call allocated an output");
    if (rm) {
        cr_assert_eq(rm->storage->version, vm, "a failed call touched running_mean");
        if (rm->numel) cr_assert(gg_tensor_data(rm)[0] == rm0);
    }
}

Test(bn, errors) {
    gg_tensor *x = uniform(GG_SHAPE(2, 3, 4, 4), -1, 1, 1), *x3 = uniform(GG_SHAPE(2, 3, 4), -1, 1, 2);
    gg_tensor *c3 = gg_tensor_ones(GG_SHAPE(3)), *c4 = gg_tensor_ones(GG_SHAPE(4)), *m2 = gg_tensor_ones(GG_SHAPE(3, 1));
    gg_tensor *rm = gg_tensor_zeros(GG_SHAPE(3)), *rv = gg_tensor_ones(GG_SHAPE(3));
    gg_tensor *rg = leaf(gg_tensor_zeros(GG_SHAPE(3)));
    gg_tensor *one = gg_tensor_zeros(GG_SHAPE(1)), *ex = gg_tensor_expand(one, GG_SHAPE(3));
    gg_tensor *x1 = uniform(GG_SHAPE(1, 3, 1, 1), -1, 1, 3);
    expect_bn_error(x3, NULL, NULL, rm, rv, true, 0.1f, 1e-5f, GG_ERR_SHAPE, "4-D [N,C,H,W] (x [2,3,4]");
    expect_bn_error(x, c4, NULL, rm, rv, true, 0.1f, 1e-5f, GG_ERR_SHAPE,
                    "weight must be [3], one value per channel, got [4] (x [2,3,4,4], weight [4]");
    expect_bn_error(x, c3, c4, rm, rv, true, 0.1f, 1e-5f, GG_ERR_SHAPE, "bias must be [3]");
    expect_bn_error(x, NULL, NULL, m2, rv, true, 0.1f, 1e-5f, GG_ERR_SHAPE, "running_mean must be [3]");
    expect_bn_error(x, NULL, NULL, rm, c4, true, 0.1f, 1e-5f, GG_ERR_SHAPE, "running_var must be [3]");
    expect_bn_error(x, NULL, NULL, rm, NULL, true, 0.1f, 1e-5f, GG_ERR_ARG, "given together");
    expect_bn_error(x, NULL, NULL, NULL, rv, true, 0.1f, 1e-5f, GG_ERR_ARG, "given together");
    expect_bn_error(x, c3, c3, NULL, NULL, false, 0.1f, 1e-5f, GG_ERR_ARG, "eval mode needs running_mean");
    expect_bn_error(x, NULL, NULL, rg, rv, true, 0.1f, 1e-5f, GG_ERR_ARG, "running_mean requires grad");
    expect_bn_error(x, NULL, NULL, rm, ex, true, 0.1f, 1e-5f, GG_ERR_ARG, "running_var is expanded");
    expect_bn_error(x, NULL, NULL, rm, rv, true, 0.1f, -1e-5f, GG_ERR_ARG, "eps must be finite and >= 0");
    expect_bn_error(x, NULL, NULL, rm, rv, true, 0.1f, NAN, GG_ERR_ARG, "eps");
    expect_bn_error(x, NULL, NULL, rm, rv, true, 1.5f, 1e-5f, GG_ERR_ARG, "momentum must lie in [0, 1], got 1.5");
    expect_bn_error(x, NULL, NULL, rm, rv, true, NAN, 1e-5f, GG_ERR_ARG, "momentum");
    expect_bn_error(x1, NULL, NULL, rm, rv, true, 0.1f, 1e-5f, GG_ERR_SHAPE,
                    "more than 1 value per channel when training (x [1,3,1,1]");
    cr_assert_not_null(gg_batch_norm2d(x1, NULL, NULL, rm, rv, false, 0.1f, 1e-5f), "eval allows one value: %s",
                       gg_last_error());
    /* sticky NULL */
    gg_clear_error();
    gg_tensor *bad = gg_batch_norm2d(x3, NULL, NULL, NULL, NULL, true, 0.1f, 1e-5f);
    cr_assert_null(gg_batch_norm2d(bad, NULL, NULL, NULL, NULL, true, 0.1f, 1e-5f));
    gt_assert_error(GG_ERR_SHAPE, "[2,3,4]");
    gg_tensor *all[] = {x, x3, c3, c4, m2, rm, rv, rg, one, ex, x1};
    for (int i = 0; i < 11; i++) gg_tensor_free(all[i]);
}

/* ---- dropout ---- */

Test(dropout, identity_cases_return_x) {
    gg_tensor *x = uniform(GG_SHAPE(3, 4), -1, 1, 1), *e = gg_tensor_zeros(GG_SHAPE(0, 4));
    gg_rng r;
    gg_rng_init(&r, 5);
    cr_assert_eq(gg_dropout(x, 0.5f, false, &r), x, "eval must return x itself");
    cr_assert_eq(gg_dropout(x, 0.0f, true, &r), x, "p == 0 must return x itself");
    cr_assert_eq(gg_dropout(e, 0.5f, true, &r), e, "an empty x is returned as is");
    cr_assert_eq(r.counter, 0, "identity cases draw nothing");
    gg_tensor_free(x);
    gg_tensor_free(e);
}

Test(dropout, mask_rule_and_scale) {
    /* element i kept iff the uniform gg_rand_uniform would draw for it is >= p */
    const float p = 0.3f;
    gg_tensor *x = uniform(GG_SHAPE(7, 13), 0.5f, 1.5f, 2); /* no zeros: a dropped element is exactly 0 */
    gg_tensor *u = gg_tensor_empty(GG_SHAPE(7, 13));
    gg_rng r1, r2;
    gg_rng_init(&r1, 42), gg_rng_init(&r2, 42);
    r1.counter = r2.counter = 1000;
    gg_rand_uniform(u, 0, 1, &r1);
    gg_tensor *y = gg_dropout(x, p, true, &r2);
    gt_assert_shape(y, 7, 13);
    cr_assert_eq(r2.counter, r1.counter, "the generator advances by ceil(n / 4) = 23");
    cr_assert_eq(r2.counter, 1023);
    const float scale = 1.0f / (1.0f - p);
    const float *xp = gg_tensor_data(x), *yp = gg_tensor_data(y), *up = gg_tensor_data(u);
    int kept = 0;
    for (int i = 0; i < 91; i++) {
        float e = up[i] >= p ? xp[i] * scale : 0.0f;
        cr_assert(yp[i] == e, "element %d: %g, expected %g (u %g)", i, (double)yp[i], (double)e, (double)up[i]);
        kept += up[i] >= p;
    }
    cr_assert(kept > 0 && kept < 91);
    /* NaN and -x * 0 behave as PyTorch's multiplication by the mask */
    gg_tensor *s = from(GG_SHAPE(4), (const float[]){NAN, -1, INFINITY, 2});
    gg_rng_init(&r1, 7);
    gg_tensor *ys = gg_dropout(s, 0.999f, true, &r1); /* (almost surely) all dropped */
    cr_assert(isnan(gg_tensor_data(ys)[0]) && isnan(gg_tensor_data(ys)[2]));
    cr_assert(gg_tensor_data(ys)[1] == 0 && signbit(gg_tensor_data(ys)[1]), "-1 * 0 = -0");
    gg_tensor_free(x), gg_tensor_free(u), gg_tensor_free(s);
}

Test(dropout, keep_fraction_and_reproducibility) {
    const int64_t n = 100000;
    gg_tensor *x = gg_tensor_ones(GG_SHAPE(n));
    const float ps[] = {0.1f, 0.5f, 0.8f};
    for (int k = 0; k < 3; k++) {
        gg_rng r;
        gg_rng_init(&r, 11 + (uint64_t)k);
        gg_tensor *y = gg_dropout(x, ps[k], true, &r);
        int64_t kept = 0;
        for (int64_t i = 0; i < n; i++) kept += gg_tensor_data(y)[i] != 0;
        double frac = (double)kept / (double)n, sigma = sqrt(ps[k] * (1 - ps[k]) / (double)n);
        cr_assert(fabs(frac - (1 - ps[k])) < 5 * sigma, "p %g: kept fraction %g", (double)ps[k], frac);
        /* same seed and counter: same mask; the next call: another mask */
        gg_rng again;
        gg_rng_init(&again, 11 + (uint64_t)k);
        gg_tensor *y2 = gg_dropout(x, ps[k], true, &again);
        cr_assert_eq(memcmp(gg_tensor_data(y), gg_tensor_data(y2), sizeof(float) * (size_t)n), 0, "same seed differs");
        gg_tensor *y3 = gg_dropout(x, ps[k], true, &again);
        cr_assert_neq(memcmp(gg_tensor_data(y), gg_tensor_data(y3), sizeof(float) * (size_t)n), 0, "no new mask");
        gg_tape_reset(NULL);
    }
    /* the default generator */
    gg_manual_seed(123);
    gg_tensor *a = gg_dropout(x, 0.5f, true, NULL);
    gg_rng r;
    gg_rng_init(&r, 123);
    gg_tensor *b = gg_dropout(x, 0.5f, true, &r);
    cr_assert_eq(memcmp(gg_tensor_data(a), gg_tensor_data(b), sizeof(float) * (size_t)n), 0);
    cr_assert_eq(gg_rng_default()->counter, r.counter);
    gg_tensor_free(x);
}

Test(dropout, threads_and_strides) {
    const int64_t n = 100003;
    gg_tensor *x = uniform(GG_SHAPE(n), 0.5f, 1.5f, 3);
    float *res[2];
    for (int t = 0; t < 2; t++) {
        gg_set_num_threads(t + 1);
        gg_rng r;
        gg_rng_init(&r, 99);
        res[t] = values(gg_dropout(x, 0.4f, true, &r));
    }
    cr_assert_eq(memcmp(res[0], res[1], sizeof(float) * (size_t)n), 0, "1 and 2 threads differ");
    free(res[0]), free(res[1]);
    /* a transposed x gets the mask in its row-major (logical) order */
    gg_tensor *base = uniform(GG_SHAPE(5, 9), 0.5f, 1.5f, 4), *xt = gg_tensor_transpose(base, 0, 1);
    gg_tensor *xc = gg_tensor_copy(xt);
    gg_rng r1, r2;
    gg_rng_init(&r1, 8), gg_rng_init(&r2, 8);
    gg_tensor *a = gg_dropout(xt, 0.5f, true, &r1), *b = gg_dropout(xc, 0.5f, true, &r2);
    cr_assert_eq(memcmp(gg_tensor_data(a), gg_tensor_data(b), sizeof(float) * 45), 0);
    gg_tensor_free(x), gg_tensor_free(base), gg_tensor_free(xt), gg_tensor_free(xc);
}

typedef struct drop_ctx {
    float p;
    uint64_t seed;
} drop_ctx;

static gg_tensor *drop_fn(gg_tensor *const *in, void *p) {
    const drop_ctx *c = p;
    gg_rng r;
    gg_rng_init(&r, c->seed); /* a fixed mask for every evaluation */
    return gg_dropout(in[0], c->p, true, &r);
}

Test(dropout, backward_and_gradcheck) {
    gg_tensor *x = leaf(uniform(GG_SHAPE(6, 11), 0.5f, 1.5f, 5));
    gg_rng r;
    gg_rng_init(&r, 17);
    gg_tensor *y = gg_dropout(x, 0.25f, true, &r);
    gg_tensor *dy = uniform(GG_SHAPE(6, 11), -1, 1, 6);
    backward_seed(y, dy);
    const float *xp = gg_tensor_data(x), *yp = gg_tensor_data(y), *g = gg_tensor_data(dy), *dx = gg_tensor_data(x->grad);
    for (int i = 0; i < 66; i++) {
        float e = yp[i] != 0 ? g[i] * (1.0f / 0.75f) : 0.0f;
        cr_assert(dx[i] == e, "dx[%d] = %g, expected %g (x %g, y %g)", i, (double)dx[i], (double)e, (double)xp[i],
                  (double)yp[i]);
    }
    gg_tensor *base = uniform(GG_SHAPE(11, 6), -1, 1, 7), *xt = leaf(gg_tensor_transpose(base, 0, 1));
    gg_tensor *ins[2] = {x, xt};
    for (int k = 0; k < 2; k++) {
        drop_ctx c = {.p = k ? 0.6f : 0.3f, .seed = 1234};
        gg_gradcheck_report rep;
        char buf[256];
        cr_assert_eq(gg_gradcheck(drop_fn, &c, 1, &ins[k], NULL, &rep), GG_OK, "%s", gg_last_error());
        cr_assert(rep.passed, "input %d: %s", k, gg_gradcheck_describe(&rep, buf, sizeof buf));
    }
    gg_tensor_free(x), gg_tensor_free(dy), gg_tensor_free(base), gg_tensor_free(xt);
}

Test(dropout, p_one_gives_zeros) {
    gg_tensor *x = leaf(from(GG_SHAPE(4), (const float[]){1, -2, 3, 4}));
    gg_tensor *s = from(GG_SHAPE(2), (const float[]){NAN, INFINITY});
    gg_rng r;
    gg_rng_init(&r, 3);
    gg_tensor *y = gg_dropout(x, 1.0f, true, &r);
    gt_assert_list(y, 0, -0.0f, 0, 0);
    cr_assert_eq(r.counter, 0, "p == 1 draws nothing");
    gg_tensor *ys = gg_dropout(s, 1.0f, true, &r);
    cr_assert(isnan(gg_tensor_data(ys)[0]) && isnan(gg_tensor_data(ys)[1]), "NaN * 0 and Inf * 0 are NaN");
    gg_tensor *dy = gg_tensor_ones(GG_SHAPE(4));
    backward_seed(y, dy);
    gt_assert_all(x->grad, 0.0f);
    gg_tensor_free(x), gg_tensor_free(s), gg_tensor_free(dy);
}

Test(dropout, errors) {
    gg_tensor *x = uniform(GG_SHAPE(2, 3), -1, 1, 1);
    const float bad[] = {-0.1f, 1.5f, NAN};
    for (int i = 0; i < 3; i++) {
        gg_clear_error();
        const size_t before = gg_tape_num_tensors(NULL);
        cr_assert_null(gg_dropout(x, bad[i], true, NULL));
        gt_assert_error(GG_ERR_ARG, "gg_dropout");
        gt_assert_msg_has("must lie in [0, 1]");
        gt_assert_msg_has("(x [2,3])");
        cr_assert_eq(gg_tape_num_tensors(NULL), before);
    }
    cr_assert_null(gg_dropout(x, -1.0f, false, NULL), "p is checked in eval mode too");
    gg_clear_error();
    gg_tensor *b = gg_dropout(x, 2.0f, true, NULL);
    cr_assert_null(gg_dropout(b, 0.5f, true, NULL));
    gt_assert_error(GG_ERR_ARG, "got 2");
    gg_tensor_free(x);
}
