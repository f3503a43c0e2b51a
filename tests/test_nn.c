/* nn modules (gg_nn.h): hand-computed forwards of every layer kind, PyTorch's initialisation, parameter
 * and buffer names/counts in state_dict order, train/eval switching, zero_grad, gradient checks through
 * modules, error messages naming the module path, DGConv2d info and deploy-mode export, and leaks. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "gg_test_util.h"
#include "groupgrad.h"

static void teardown(void) {
    gg_tape_reset(NULL);
    gg_set_grad_enabled(true);
    gg_clear_error();
}

TestSuite(nn, .fini = teardown);

/* ---- helpers ---- */

static void set_data(gg_tensor *t, const float *v) {
    cr_assert_not_null(t, "%s", gg_last_error());
    cr_assert(gg_tensor_is_contiguous(t));
    memcpy(gg_tensor_data(t), v, (size_t)t->numel * sizeof(float));
    gg_tensor_bump_version(t);
}

static gg_tensor *tensor_of(int ndim, const int64_t *shape, const float *v) {
    gg_tensor *t = gg_tensor_from_data(ndim, shape, v);
    cr_assert_not_null(t, "%s", gg_last_error());
    return t;
}

static gg_tensor *randn(int ndim, const int64_t *shape, uint64_t seed) {
    gg_rng r;
    gg_rng_init(&r, seed);
    gg_tensor *t = gg_tensor_empty(ndim, shape);
    cr_assert_not_null(t);
    cr_assert_eq(gg_rand_normal(t, 0, 1, &r), GG_OK);
    return t;
}

static void assert_close(const gg_tensor *t, const float *expected, double tol, const char *what) {
    cr_assert_not_null(t, "%s: NULL (%s)", what, gg_last_error());
    gg_tensor *c = gg_tensor_contiguous(t);
    const float *d = gg_tensor_data(c);
    for (int64_t i = 0; i < t->numel; i++)
        cr_assert(fabs((double)d[i] - (double)expected[i]) <= tol, "%s: element %lld is %.7g, expected %.7g", what,
                  (long long)i, (double)d[i], (double)expected[i]);
    gg_tensor_free(c);
}

static double max_abs_diff(const gg_tensor *a, const gg_tensor *b) {
    cr_assert(gg_tensor_same_shape(a, b));
    gg_tensor *ca = gg_tensor_contiguous(a), *cb = gg_tensor_contiguous(b);
    double m = 0;
    for (int64_t i = 0; i < a->numel; i++) {
        double d = fabs((double)gg_tensor_data(ca)[i] - (double)gg_tensor_data(cb)[i]);
        if (!(d <= m)) m = d;
    }
    gg_tensor_free(ca);
    gg_tensor_free(cb);
    return m;
}

static void assert_names(gg_module *m, bool params, const char *const *expected, int n) {
    gg_named_tensor nt[64];
    int got = params ? gg_module_named_parameters(m, nt, 64) : gg_module_named_buffers(m, nt, 64);
    cr_assert_eq(got, n, "%d %s, expected %d (%s)", got, params ? "parameters" : "buffers", n, gg_last_error());
    for (int i = 0; i < n; i++)
        cr_assert_str_eq(nt[i].name, expected[i], "%s %d is \"%s\", expected \"%s\"", params ? "parameter" : "buffer",
                         i, nt[i].name, expected[i]);
}

typedef struct mod_ctx {
    gg_module *m;
} mod_ctx;

static gg_tensor *mod_fn(gg_tensor *const *in, void *vctx) { return gg_module_forward(((mod_ctx *)vctx)->m, in[0]); }

/* gradcheck of m w.r.t. x and all its parameters (they are leaves the module reads directly). */
static void gradcheck_module(gg_module *m, gg_tensor *x, const char *what) {
    gg_tensor *in[16] = {x};
    int np = gg_module_parameters(m, in + 1, 15);
    cr_assert(np >= 0 && np <= 15);
    mod_ctx c = {m};
    gg_gradcheck_report rep;
    gg_gradcheck_opts o = {.eps = 1e-2, .atol = 2e-3, .rtol = 2e-2, .seed = 3};
    cr_assert_eq(gg_gradcheck(mod_fn, &c, np + 1, in, &o, &rep), GG_OK, "%s: %s", what, gg_last_error());
    char buf[256];
    cr_assert(rep.passed, "%s: %s", what, gg_gradcheck_describe(&rep, buf, sizeof buf));
}

/* ---- hand-computed forwards ---- */

Test(nn, conv2d_hand) {
    gg_conv2d_params p = gg_conv2d_default();
    gg_module *conv = gg_nn_conv2d_new(1, 1, 2, &p, true, NULL);
    cr_assert_not_null(conv, "%s", gg_last_error());
    set_data(gg_module_get_tensor(conv, "weight"), (const float[]){1, 2, 3, 4});
    set_data(gg_module_get_tensor(conv, "bias"), (const float[]){0.5f});
    gg_tensor *x = tensor_of(GG_SHAPE(1, 1, 3, 3), (const float[]){1, 2, 3, 4, 5, 6, 7, 8, 9});
    gg_tensor *y = gg_module_forward(conv, x);
    gt_assert_shape(y, 1, 1, 2, 2);
    /* y[i][j] = x[i][j] + 2 x[i][j+1] + 3 x[i+1][j] + 4 x[i+1][j+1] + 0.5 */
    assert_close(y, (const float[]){37.5f, 47.5f, 67.5f, 77.5f}, 1e-5, "conv2d 2x2");

    /* two in-channels, two out, 1x1, stride 2, padding 1: y[k] = w[k,0] x0 + w[k,1] x1 on the padded grid */
    gg_conv2d_params p2 = gg_conv2d_make(2, 1, 1, 1);
    gg_module *c2 = gg_nn_conv2d_new(2, 2, 1, &p2, false, NULL);
    cr_assert_not_null(c2, "%s", gg_last_error());
    set_data(gg_module_get_tensor(c2, "weight"), (const float[]){2, -1, 0, 1});
    gg_tensor *x2 = tensor_of(GG_SHAPE(1, 2, 2, 2), (const float[]){1, 2, 3, 4, 10, 20, 30, 40});
    gg_tensor *y2 = gg_module_forward(c2, x2);
    gt_assert_shape(y2, 1, 2, 2, 2);
    /* padded 4x4 grid sampled at rows/cols 0 and 2: (0,0) pad, (0,2) pad, (2,0) pad, (2,2) = x[1][1] */
    assert_close(y2, (const float[]){0, 0, 0, 2 * 4 - 40, 0, 0, 0, 40}, 1e-6, "conv2d 1x1 stride 2 pad 1");
    /* MACs per sample K * C/G * R * S * Ho * Wo */
    int64_t macs = 0;
    cr_assert_eq(gg_module_macs(conv, GG_SHAPE(3, 1, 3, 3), &macs), GG_OK);
    cr_assert_eq(macs, 1 * 1 * 2 * 2 * 2 * 2);
    gg_conv2d_params pg = gg_conv2d_make(2, 1, 1, 4);
    gg_module *cg = gg_nn_conv2d_new(8, 16, 3, &pg, false, NULL);
    cr_assert_eq(gg_module_macs(cg, GG_SHAPE(2, 8, 10, 10), &macs), GG_OK);
    cr_assert_eq(macs, 16 * 2 * 9 * 5 * 5);
    gg_module_free(cg);
    gg_tensor_free(x);
    gg_tensor_free(x2);
    gg_module_free(conv);
    gg_module_free(c2);
}

Test(nn, linear_hand) {
    gg_module *fc = gg_nn_linear_new(3, 2, true, NULL);
    cr_assert_not_null(fc, "%s", gg_last_error());
    set_data(gg_module_get_tensor(fc, "weight"), (const float[]){1, 2, 3, 4, 5, 6});
    set_data(gg_module_get_tensor(fc, "bias"), (const float[]){0.5f, -1});
    gg_tensor *x = tensor_of(GG_SHAPE(2, 3), (const float[]){1, 0, -1, 2, 1, 0});
    gg_tensor *y = gg_module_forward(fc, x);
    gt_assert_shape(y, 2, 2);
    assert_close(y, (const float[]){-1.5f, -3, 4.5f, 12}, 1e-6, "linear");
    int64_t macs = 0;
    cr_assert_eq(gg_module_macs(fc, GG_SHAPE(7, 3), &macs), GG_OK);
    cr_assert_eq(macs, 6);
    gg_tensor_free(x);
    gg_module_free(fc);
}

Test(nn, batchnorm_train_eval) {
    gg_module *bn = gg_nn_batchnorm2d_new_ex(1, 0.0f, 0.1f, true);
    cr_assert_not_null(bn, "%s", gg_last_error());
    gg_tensor *x = tensor_of(GG_SHAPE(2, 1, 1, 2), (const float[]){1, 2, 3, 6});
    /* training: batch mean 3, biased var 3.5 */
    gg_tensor *y = gg_module_forward(bn, x);
    const float s = 1.0f / sqrtf(3.5f);
    assert_close(y, (const float[]){-2 * s, -1 * s, 0, 3 * s}, 1e-6, "bn train");
    assert_close(gg_module_get_tensor(bn, "running_mean"), (const float[]){0.3f}, 1e-6, "running_mean");
    assert_close(gg_module_get_tensor(bn, "running_var"), (const float[]){0.9f + 0.1f * 3.5f * 4 / 3}, 1e-6,
                 "running_var (unbiased update)");
    assert_close(gg_module_get_tensor(bn, "num_batches_tracked"), (const float[]){1}, 0, "num_batches_tracked");

    /* eval: running statistics, no update */
    gg_module *bn2 = gg_nn_batchnorm2d_new_ex(2, 0.0f, 0.1f, true);
    set_data(gg_module_get_tensor(bn2, "running_mean"), (const float[]){1, -1});
    set_data(gg_module_get_tensor(bn2, "running_var"), (const float[]){4, 0.25f});
    set_data(gg_module_get_tensor(bn2, "weight"), (const float[]){2, 1});
    set_data(gg_module_get_tensor(bn2, "bias"), (const float[]){0, 3});
    gg_module_eval(bn2);
    cr_assert(!gg_module_is_training(bn2));
    gg_tensor *x2 = tensor_of(GG_SHAPE(1, 2, 1, 2), (const float[]){3, 5, 0, -2});
    gg_tensor *y2 = gg_module_forward(bn2, x2);
    assert_close(y2, (const float[]){2, 4, 5, 1}, 1e-6, "bn eval");
    assert_close(gg_module_get_tensor(bn2, "running_mean"), (const float[]){1, -1}, 0, "eval keeps running_mean");
    assert_close(gg_module_get_tensor(bn2, "num_batches_tracked"), (const float[]){0}, 0, "eval keeps the count");
    /* back to training: batch statistics again */
    gg_module_train(bn2, true);
    gg_tensor *y3 = gg_module_forward(bn2, x2);
    const float s2 = 1.0f / sqrtf(1.0f); /* channel 0 [3,5]: mean 4, var 1; channel 1 [0,-2]: mean -1, var 1 */
    assert_close(y3, (const float[]){-2 * s2, 2 * s2, 1 + 3, -1 + 3}, 1e-6, "bn train again");
    gg_tensor_free(x);
    gg_tensor_free(x2);
    gg_module_free(bn);
    gg_module_free(bn2);
}

Test(nn, pools_relu_flatten) {
    gg_tensor *x = gg_tensor_arange(0, 16, 1);
    gg_tensor *x4 = gg_tensor_view(x, GG_SHAPE(1, 1, 4, 4));
    gg_module *mp = gg_nn_maxpool2d_new(2, 0, 0), *ap = gg_nn_avgpool2d_new(2, 2, 0),
              *gp = gg_nn_adaptive_avgpool2d_new(1, 1), *ad = gg_nn_adaptive_avgpool2d_new(2, 1),
              *fl = gg_nn_flatten_new(1, -1), *re = gg_nn_relu_new();
    cr_assert(mp && ap && gp && ad && fl && re, "%s", gg_last_error());
    assert_close(gg_module_forward(mp, x4), (const float[]){5, 7, 13, 15}, 0, "maxpool");
    assert_close(gg_module_forward(ap, x4), (const float[]){2.5f, 4.5f, 10.5f, 12.5f}, 1e-6, "avgpool");
    gg_tensor *g = gg_module_forward(gp, x4);
    gt_assert_shape(g, 1, 1, 1, 1);
    assert_close(g, (const float[]){7.5f}, 1e-6, "global pool");
    gg_tensor *a = gg_module_forward(ad, x4);
    gt_assert_shape(a, 1, 1, 2, 1);
    assert_close(a, (const float[]){3.5f, 11.5f}, 1e-6, "adaptive 2x1");
    gt_assert_shape(gg_module_forward(fl, x4), 1, 16);
    gg_tensor *neg = gg_add_scalar(x4, -8.0f);
    assert_close(gg_module_forward(re, neg), (const float[]){0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7}, 0, "relu");
    /* maxpool with padding: 3x3/2 pad 1 on 4x4 -> 2x2 */
    gg_module *mp2 = gg_nn_maxpool2d_new(3, 2, 1);
    assert_close(gg_module_forward(mp2, x4), (const float[]){5, 7, 13, 15}, 0, "maxpool 3/2/1");
    gg_module *fl2 = gg_nn_flatten_new(0, 2);
    gt_assert_shape(gg_module_forward(fl2, x4), 4, 4);
    gg_tensor_free(x4);
    gg_tensor_free(x);
    gg_module_free(mp);
    gg_module_free(ap);
    gg_module_free(gp);
    gg_module_free(ad);
    gg_module_free(fl);
    gg_module_free(re);
    gg_module_free(mp2);
    gg_module_free(fl2);
}

Test(nn, dropout_train_eval) {
    gg_rng r;
    gg_rng_init(&r, 5);
    gg_module *seq = gg_nn_sequential_new();
    gg_nn_sequential_append(seq, gg_nn_dropout_new(0.5f, &r));
    gg_tensor *x = gg_tensor_ones(GG_SHAPE(4, 1000));
    gg_tensor *y = gg_module_forward(seq, x);
    cr_assert_not_null(y, "%s", gg_last_error());
    int64_t zeros = 0, twos = 0;
    for (int64_t i = 0; i < y->numel; i++) {
        float v = gg_tensor_data(y)[i];
        zeros += v == 0.0f;
        twos += v == 2.0f;
    }
    cr_assert_eq(zeros + twos, 4000, "dropout output must be 0 or 1/(1-p)");
    cr_assert(zeros > 1800 && zeros < 2200, "%lld zeros of 4000 at p = 0.5", (long long)zeros);
    gg_module_eval(seq); /* recursive */
    cr_assert(!gg_module_is_training(gg_module_child_at(seq, 0)));
    cr_assert_eq(gg_module_forward(seq, x), x, "eval dropout returns its input");
    gg_tensor_free(x);
    gg_module_free(seq);
}

Test(nn, channel_permute) {
    gg_module *cp = gg_nn_channel_permute_new(3, (const int[]){2, 0, 1});
    cr_assert_not_null(cp, "%s", gg_last_error());
    gg_tensor *x = gg_tensor_arange(0, 12, 1);
    gg_tensor *x4 = gg_tensor_view(x, GG_SHAPE(2, 3, 2, 1));
    /* y[:, c] = x[:, index[c]] */
    assert_close(gg_module_forward(cp, x4), (const float[]){4, 5, 0, 1, 2, 3, 10, 11, 6, 7, 8, 9}, 0, "permute");
    gg_tensor *xr = randn(GG_SHAPE(2, 3, 3, 2), 11);
    gg_requires_grad(xr, true);
    gradcheck_module(cp, xr, "channel_permute");
    /* non-contiguous leaf: [2,3,2,3] transposed in its last two dims */
    gg_tensor *base = randn(GG_SHAPE(2, 3, 2, 3), 12);
    gg_tensor *xt = gg_tensor_transpose(base, 2, 3);
    gg_requires_grad(xt, true);
    gradcheck_module(cp, xt, "channel_permute transposed");
    cr_assert_null(gg_nn_channel_permute_new(3, (const int[]){0, 0, 1}));
    cr_assert(strstr(gg_last_error(), "not a permutation"), "%s", gg_last_error());
    gg_tensor_free(x4);
    gg_tensor_free(x);
    gg_tensor_free(xr);
    gg_tensor_free(xt);
    gg_tensor_free(base);
    gg_module_free(cp);
}

/* ---- initialisation ---- */

static void check_uniform(const gg_tensor *t, double bound, const char *what) {
    double s = 0, s2 = 0, mx = 0;
    const float *d = gg_tensor_data(t);
    for (int64_t i = 0; i < t->numel; i++) {
        s += d[i];
        s2 += (double)d[i] * d[i];
        if (fabs(d[i]) > mx) mx = fabs(d[i]);
    }
    double n = (double)t->numel, mean = s / n, sd = sqrt(s2 / n - mean * mean);
    cr_assert(mx <= bound * (1 + 1e-6), "%s: |value| %g exceeds the bound %g", what, mx, bound);
    cr_assert(mx > 0.9 * bound, "%s: max |value| %g far below the bound %g", what, mx, bound);
    cr_assert(fabs(sd - bound / sqrt(3.0)) < 0.05 * bound, "%s: std %g, U(-b, b) gives %g", what, sd,
              bound / sqrt(3.0));
    cr_assert(fabs(mean) < 0.05 * bound, "%s: mean %g", what, mean);
}

Test(nn, default_init) {
    gg_rng r;
    gg_rng_init(&r, 7);
    gg_conv2d_params p = gg_conv2d_make(1, 1, 1, 2);
    gg_module *conv = gg_nn_conv2d_new(16, 64, 3, &p, true, &r); /* fan_in = 8 * 9 = 72 */
    cr_assert_not_null(conv, "%s", gg_last_error());
    gt_assert_shape(gg_module_get_tensor(conv, "weight"), 64, 8, 3, 3);
    /* kaiming_uniform(a = sqrt(5)): gain sqrt(2 / 6), bound gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in) */
    check_uniform(gg_module_get_tensor(conv, "weight"), 1 / sqrt(72.0), "conv weight");
    gg_module *fc = gg_nn_linear_new(400, 300, true, &r);
    check_uniform(gg_module_get_tensor(fc, "weight"), 1 / sqrt(400.0), "linear weight");
    check_uniform(gg_module_get_tensor(fc, "bias"), 1 / sqrt(400.0), "linear bias");
    gg_tensor *cb = gg_module_get_tensor(conv, "bias");
    for (int64_t i = 0; i < cb->numel; i++) cr_assert(fabsf(gg_tensor_data(cb)[i]) <= 1 / sqrtf(72.0f));
    /* same seed, same parameters; NULL draws from the default generator */
    gg_rng r2;
    gg_rng_init(&r2, 7);
    gg_module *conv2 = gg_nn_conv2d_new(16, 64, 3, &p, true, &r2);
    cr_assert_eq(max_abs_diff(gg_module_get_tensor(conv, "weight"), gg_module_get_tensor(conv2, "weight")), 0.0);
    gg_module *bn = gg_nn_batchnorm2d_new(5);
    const char *names[] = {"weight", "bias", "running_mean", "running_var"};
    const float vals[] = {1, 0, 0, 1};
    for (int i = 0; i < 4; i++) {
        gg_tensor *t = gg_module_get_tensor(bn, names[i]);
        for (int64_t j = 0; j < 5; j++) cr_assert_eq(gg_tensor_data(t)[j], vals[i], "bn %s", names[i]);
    }
    /* DGConv2d: gates +-1e-8 (random signs / all closed / all open), weight as Conv2d's */
    gg_module *dg = gg_nn_dgconv2d_new(64, 3, NULL, false, GG_GATE_INIT_RANDOM, &r);
    gg_tensor *gt = gg_nn_dgconv2d_gates(dg);
    gt_assert_shape(gt, 6);
    for (int k = 0; k < 6; k++) cr_assert_eq(fabsf(gg_tensor_data(gt)[k]), 1e-8f);
    check_uniform(gg_nn_dgconv2d_weight(dg), 1 / sqrt(64.0 * 9), "dgconv weight");
    gg_module *dgc = gg_nn_dgconv2d_new(8, 1, NULL, false, GG_GATE_INIT_CLOSED, &r);
    gg_dgconv2d_info info;
    cr_assert_eq(gg_nn_dgconv2d_info(dgc, &info), GG_OK);
    cr_assert_eq(info.groups, 8, "closed gates: depthwise");
    gg_module_free(conv);
    gg_module_free(conv2);
    gg_module_free(fc);
    gg_module_free(bn);
    gg_module_free(dg);
    gg_module_free(dgc);
}

/* ---- names, counts, iteration ---- */

Test(nn, sequential_names_and_counts) {
    gg_module *seq = gg_nn_sequential_new();
    gg_nn_sequential_append(seq, gg_nn_conv2d_new(3, 8, 3, NULL, true, NULL));
    gg_nn_sequential_append(seq, gg_nn_batchnorm2d_new(8));
    gg_nn_sequential_append(seq, gg_nn_relu_new());
    gg_nn_sequential_add(seq, "head", gg_nn_linear_new(8, 2, false, NULL));
    cr_assert_eq(gg_module_num_children(seq), 4, "%s", gg_last_error());
    const char *pn[] = {"0.weight", "0.bias", "1.weight", "1.bias", "head.weight"};
    assert_names(seq, true, pn, 5);
    const char *bn[] = {"1.running_mean", "1.running_var", "1.num_batches_tracked"};
    assert_names(seq, false, bn, 3);
    cr_assert_eq(gg_module_num_parameters(seq, false), 8 * 3 * 9 + 8 + 8 + 8 + 16);
    gg_requires_grad(gg_module_get_tensor(seq, "head.weight"), false);
    cr_assert_eq(gg_module_num_parameters(seq, true), 8 * 3 * 9 + 8 + 8 + 8);
    /* plain array, capacity smaller than the count */
    gg_tensor *ps[2];
    cr_assert_eq(gg_module_parameters(seq, ps, 2), 5);
    cr_assert_eq(ps[1], gg_module_get_tensor(seq, "0.bias"));
    cr_assert_eq(gg_module_parameters(seq, NULL, 0), 5);
    cr_assert_null(gg_module_get_tensor(seq, "2.weight"));
    cr_assert(strstr(gg_last_error(), "2.weight"), "%s", gg_last_error());
    gg_module *head = gg_module_get_child(seq, "head");
    cr_assert_str_eq(gg_module_kind(head), "Linear");
    char path[64];
    cr_assert_str_eq(gg_module_path(head, path, sizeof path), "head");
    /* duplicate child names are refused (and the child freed) */
    cr_assert_neq(gg_nn_sequential_add(seq, "head", gg_nn_relu_new()), GG_OK);
    cr_assert(strstr(gg_last_error(), "already has a child named \"head\""), "%s", gg_last_error());
    gg_module_free(seq);
}

static int count_visit(const char *name, gg_tensor *t, void *ctx) {
    (void)name;
    *(int64_t *)ctx += t->numel;
    return 0;
}

static int stop_visit(const char *name, gg_tensor *t, void *ctx) {
    (void)t;
    return strcmp(name, (const char *)ctx) ? 0 : 42;
}

Test(nn, bottleneck_state_dict_names) {
    gg_conv3x3_spec spec = {GG_CONV3X3_DGCONV, 0, GG_GATE_INIT_RANDOM};
    gg_module *b = gg_nn_bottleneck_new(16, 8, 2, 4, 8, &spec, NULL); /* width 8 * 8 / 64 * 4 = 4 */
    cr_assert_not_null(b, "%s", gg_last_error());
    const char *pn[] = {"conv1.weight", "bn1.weight", "bn1.bias", "conv2.gate", "conv2.conv.weight",
                        "bn2.weight", "bn2.bias", "conv3.weight", "bn3.weight", "bn3.bias",
                        "downsample.0.weight", "downsample.1.weight", "downsample.1.bias"};
    assert_names(b, true, pn, 13);
    const char *bn[] = {"bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked",
                        "bn2.running_mean", "bn2.running_var", "bn2.num_batches_tracked",
                        "bn3.running_mean", "bn3.running_var", "bn3.num_batches_tracked",
                        "downsample.1.running_mean", "downsample.1.running_var",
                        "downsample.1.num_batches_tracked"};
    assert_names(b, false, bn, 12);
    gt_assert_shape(gg_module_get_tensor(b, "conv2.conv.weight"), 4, 4, 3, 3);
    gt_assert_shape(gg_module_get_tensor(b, "conv2.gate"), 2);
    gt_assert_shape(gg_module_get_tensor(b, "conv3.weight"), 32, 4, 1, 1);
    /* count computed independently: convs, 4 BN (weight+bias), 2 gates */
    int64_t expect = 4 * 16 + 4 * 4 * 9 + 32 * 4 + 32 * 16 + 2 * (4 + 4 + 32 + 32) + 2;
    cr_assert_eq(gg_module_num_parameters(b, false), expect);
    int64_t sum = 0;
    cr_assert_eq(gg_module_foreach_parameter(b, count_visit, &sum), 0);
    cr_assert_eq(sum, expect);
    cr_assert_eq(gg_module_foreach_buffer(b, stop_visit, (void *)"bn3.running_var"), 42, "visitor return stops");
    /* forward shape and the grouped variant without downsample */
    gg_tensor *x = randn(GG_SHAPE(2, 16, 6, 6), 1);
    gt_assert_shape(gg_module_forward(b, x), 2, 32, 3, 3);
    gg_conv3x3_spec g2 = {GG_CONV3X3_GROUPED, 2, GG_GATE_INIT_RANDOM};
    gg_module *b2 = gg_nn_bottleneck_new(32, 8, 1, 4, 8, &g2, NULL);
    cr_assert_not_null(b2, "%s", gg_last_error());
    cr_assert_null(gg_module_get_child(b2, "downsample"));
    gt_assert_shape(gg_module_get_tensor(b2, "conv2.weight"), 4, 2, 3, 3);
    gg_tensor *x2 = randn(GG_SHAPE(2, 32, 5, 5), 2);
    gt_assert_shape(gg_module_forward(b2, x2), 2, 32, 5, 5);
    gg_module *bb = gg_nn_basic_block_new(4, 8, 2, NULL);
    const char *bpn[] = {"conv1.weight", "bn1.weight", "bn1.bias", "conv2.weight", "bn2.weight", "bn2.bias",
                         "downsample.0.weight", "downsample.1.weight", "downsample.1.bias"};
    assert_names(bb, true, bpn, 9);
    gg_tensor *x3 = randn(GG_SHAPE(2, 4, 6, 6), 3);
    gt_assert_shape(gg_module_forward(bb, x3), 2, 8, 3, 3);
    gg_tensor_free(x);
    gg_tensor_free(x2);
    gg_tensor_free(x3);
    gg_module_free(b);
    gg_module_free(b2);
    gg_module_free(bb);
}

/* A bottleneck's forward by hand from its children (eval mode): conv/bn/relu chain + downsample. */
Test(nn, bottleneck_value) {
    gg_conv3x3_spec spec = {GG_CONV3X3_DENSE, 0, GG_GATE_INIT_RANDOM};
    gg_module *b = gg_nn_bottleneck_new(8, 4, 1, 1, 64, &spec, NULL);
    cr_assert_not_null(b, "%s", gg_last_error());
    gg_module_eval(b);
    gg_tensor *x = randn(GG_SHAPE(2, 8, 5, 5), 4);
    gg_tensor *y = gg_module_forward(b, x);
#define CH(name) gg_module_get_child(b, name)
    gg_tensor *h = gg_relu(gg_module_forward(CH("bn1"), gg_module_forward(CH("conv1"), x)));
    h = gg_relu(gg_module_forward(CH("bn2"), gg_module_forward(CH("conv2"), h)));
    h = gg_module_forward(CH("bn3"), gg_module_forward(CH("conv3"), h));
    gg_tensor *id = gg_module_forward(CH("downsample"), x);
#undef CH
    gg_tensor *ref = gg_relu(gg_add(h, id));
    cr_assert_not_null(ref, "%s", gg_last_error());
    cr_assert_eq(max_abs_diff(y, ref), 0.0);
    gg_tensor_free(x);
    gg_module_free(b);
}

/* ---- gradients, zero_grad ---- */

Test(nn, gradcheck_through_modules) {
    gg_module *seq = gg_nn_sequential_new();
    gg_conv2d_params p = gg_conv2d_make(2, 1, 1, 1);
    gg_nn_sequential_append(seq, gg_nn_conv2d_new(2, 3, 3, &p, true, NULL));
    gg_nn_sequential_append(seq, gg_nn_batchnorm2d_new(3)); /* no ReLU: its kink would trip finite differences */
    gg_nn_sequential_append(seq, gg_nn_avgpool2d_new(2, 1, 0));
    gg_nn_sequential_append(seq, gg_nn_flatten_new(1, -1));
    gg_nn_sequential_append(seq, gg_nn_linear_new(12, 2, true, NULL));
    cr_assert_eq(gg_module_num_children(seq), 5, "%s", gg_last_error());
    gg_tensor *x = randn(GG_SHAPE(3, 2, 5, 5), 9);
    gg_requires_grad(x, true);
    gradcheck_module(seq, x, "conv-bn(train)-pool-linear");
    gg_module_eval(seq);
    gradcheck_module(seq, x, "conv-bn(eval)-pool-linear");
    gg_tensor_free(x);
    gg_module_free(seq);
}

Test(nn, zero_grad) {
    gg_module *seq = gg_nn_sequential_new();
    gg_nn_sequential_append(seq, gg_nn_conv2d_new(2, 4, 3, NULL, true, NULL));
    gg_nn_sequential_append(seq, gg_nn_batchnorm2d_new(4));
    gg_nn_sequential_append(seq, gg_nn_flatten_new(1, -1));
    gg_nn_sequential_append(seq, gg_nn_linear_new(4 * 3 * 3, 3, true, NULL));
    gg_tensor *x = randn(GG_SHAPE(2, 2, 5, 5), 1);
    gg_tensor *ps[8];
    int np = gg_module_parameters(seq, ps, 8);
    cr_assert_eq(np, 6);
    cr_assert_eq(gg_backward(gg_sum(gg_square(gg_module_forward(seq, x)), NULL, 0, false)), GG_OK, "%s",
                 gg_last_error());
    gg_tensor *grads[8];
    for (int i = 0; i < np; i++) {
        cr_assert_not_null(ps[i]->grad, "parameter %d has no gradient", i);
        double s = 0;
        for (int64_t j = 0; j < ps[i]->numel; j++) s += fabsf(gg_tensor_data(ps[i]->grad)[j]);
        cr_assert(s > 0, "parameter %d: zero gradient", i);
        grads[i] = ps[i]->grad;
    }
    gg_module_zero_grad(seq);
    for (int i = 0; i < np; i++) {
        cr_assert_eq(ps[i]->grad, grads[i], "zero_grad keeps the buffer");
        for (int64_t j = 0; j < ps[i]->numel; j++) cr_assert_eq(gg_tensor_data(ps[i]->grad)[j], 0.0f);
    }
    gg_tensor_free(x);
    gg_module_free(seq);
}

/* ---- errors ---- */

Test(nn, error_names_module_path) {
    gg_module *root = gg_nn_sequential_new();
    gg_module *layer2 = gg_nn_sequential_new();
    gg_module *blk = gg_nn_sequential_new();
    gg_conv2d_params p = gg_conv2d_make(1, 1, 1, 1);
    gg_nn_sequential_append(layer2, gg_nn_conv2d_new(4, 8, 1, NULL, false, NULL));
    gg_nn_sequential_add(blk, "conv1", gg_nn_conv2d_new(8, 4, 1, NULL, false, NULL));
    gg_nn_sequential_add(blk, "conv2", gg_nn_dgconv2d_new(8, 3, &p, false, GG_GATE_INIT_RANDOM, NULL));
    gg_nn_sequential_append(layer2, blk);
    cr_assert_eq(gg_nn_sequential_add(root, "layer2", layer2), GG_OK, "%s", gg_last_error());
    gg_tensor *x = randn(GG_SHAPE(2, 4, 5, 5), 1);
    cr_assert_null(gg_module_forward(root, x));
    cr_assert_eq(gg_last_status(), GG_ERR_SHAPE);
    cr_assert_str_eq(gg_last_error(),
                     "gg_module_forward: layer2.1.conv2 (DGConv2d 8->8, 3x3): input has 4 channels, expected 8 "
                     "(x [2,4,5,5])");
    /* sticky: a NULL input keeps the message */
    cr_assert_null(gg_module_forward(root, NULL));
    cr_assert(strstr(gg_last_error(), "layer2.1.conv2"), "%s", gg_last_error());
    /* shape inference reports the same place under its own name */
    int nd;
    int64_t out[8];
    cr_assert_neq(gg_module_output_shape(root, GG_SHAPE(2, 4, 5, 5), &nd, out), GG_OK);
    cr_assert(!strncmp(gg_last_error(), "gg_module_output_shape: layer2.1.conv2 (DGConv2d 8->8, 3x3): input has 4",
                       strlen("gg_module_output_shape: layer2.1.conv2 (DGConv2d 8->8, 3x3): input has 4")),
              "%s", gg_last_error());
    /* root-level module: its description alone */
    gg_module *conv = gg_nn_conv2d_new(3, 8, 3, NULL, false, NULL);
    gg_tensor *x3 = randn(GG_SHAPE(1, 4, 8, 8), 2);
    cr_assert_null(gg_module_forward(conv, x3));
    cr_assert_str_eq(gg_last_error(),
                     "gg_module_forward: Conv2d 3->8, 3x3: input has 4 channels, expected 3 (x [1,4,8,8])");
    gg_tensor *x2d = randn(GG_SHAPE(4, 8), 2);
    cr_assert_null(gg_module_forward(conv, x2d));
    cr_assert(strstr(gg_last_error(), "expected a 4-D input [N,C,H,W], got x [4,8]"), "%s", gg_last_error());
    gg_tensor *tiny = randn(GG_SHAPE(1, 3, 2, 2), 2);
    cr_assert_null(gg_module_forward(conv, tiny));
    cr_assert(strstr(gg_last_error(), "smaller than the 3x3"), "%s", gg_last_error());
    /* an error found by an op (not by the module's checks) is wrapped with the path: BatchNorm in training
     * needs more than one value per channel */
    gg_module *seq = gg_nn_sequential_new();
    gg_nn_sequential_add(seq, "bn", gg_nn_batchnorm2d_new(3));
    gg_tensor *one = randn(GG_SHAPE(1, 3, 1, 1), 3);
    cr_assert_null(gg_module_forward(seq, one));
    cr_assert(!strncmp(gg_last_error(), "gg_module_forward: bn (BatchNorm2d 3): gg_batch_norm2d: ",
                       strlen("gg_module_forward: bn (BatchNorm2d 3): gg_batch_norm2d: ")),
              "%s", gg_last_error());
    gg_module_eval(seq);
    cr_assert_not_null(gg_module_forward(seq, one), "eval mode accepts one value: %s", gg_last_error());
    gg_module *fc = gg_nn_linear_new(3, 2, true, NULL);
    gg_tensor *x5 = randn(GG_SHAPE(2, 5), 4);
    cr_assert_null(gg_module_forward(fc, x5));
    cr_assert(strstr(gg_last_error(), "Linear 3->2: input has 5 features in its last dimension, expected 3 (x [2,5])"),
              "%s", gg_last_error());
    gg_tensor_free(x);
    gg_tensor_free(x3);
    gg_tensor_free(x2d);
    gg_tensor_free(tiny);
    gg_tensor_free(one);
    gg_tensor_free(x5);
    gg_module_free(root);
    gg_module_free(conv);
    gg_module_free(seq);
    gg_module_free(fc);
}

Test(nn, constructor_errors) {
    cr_assert_null(gg_nn_dgconv2d_new(24, 3, NULL, false, GG_GATE_INIT_RANDOM, NULL));
    cr_assert(strstr(gg_last_error(), "gg_nn_dgconv2d_new") && strstr(gg_last_error(), "power-of-two") &&
                  strstr(gg_last_error(), "24"),
              "%s", gg_last_error());
    gg_conv2d_params p = gg_conv2d_make(1, 0, 1, 3);
    cr_assert_null(gg_nn_conv2d_new(8, 6, 3, &p, true, NULL));
    cr_assert(strstr(gg_last_error(), "groups 3") && strstr(gg_last_error(), "8"), "%s", gg_last_error());
    cr_assert_null(gg_nn_dgconv2d_new(8, 3, &p, false, GG_GATE_INIT_RANDOM, NULL));
    cr_assert_null(gg_nn_linear_new(0, 3, true, NULL));
    cr_assert_null(gg_nn_maxpool2d_new(2, 2, 2));
    cr_assert(strstr(gg_last_error(), "padding"), "%s", gg_last_error());
    cr_assert_null(gg_nn_dropout_new(1.5f, NULL));
    /* sticky construction: a NULL child fails the append and keeps the first message */
    gg_module *seq = gg_nn_sequential_new();
    cr_assert_neq(gg_nn_sequential_append(seq, gg_nn_dgconv2d_new(12, 3, NULL, false, GG_GATE_INIT_RANDOM, NULL)),
                  GG_OK);
    cr_assert(strstr(gg_last_error(), "12"), "%s", gg_last_error());
    cr_assert_eq(gg_module_num_children(seq), 0);
    /* wrong kind for the DGConv accessors */
    gg_module *relu = gg_nn_relu_new();
    cr_assert_null(gg_nn_dgconv2d_gates(relu));
    cr_assert(strstr(gg_last_error(), "ReLU, not a DGConv2d"), "%s", gg_last_error());
    cr_assert_neq(gg_nn_sequential_append(relu, gg_nn_relu_new()), GG_OK);
    gg_module_free(relu);
    gg_module_free(seq);
    gg_module_free(NULL);
}

/* ---- DGConv2d ---- */

static void set_gates(gg_module *dg, const float *g) { set_data(gg_nn_dgconv2d_gates(dg), g); }

Test(nn, dgconv2d_module) {
    gg_rng r;
    gg_rng_init(&r, 21);
    gg_conv2d_params p = gg_conv2d_make(2, 1, 1, 1);
    gg_module *dg = gg_nn_dgconv2d_new(16, 3, &p, true, GG_GATE_INIT_RANDOM, &r);
    cr_assert_not_null(dg, "%s", gg_last_error());
    const char *pn[] = {"gate", "conv.weight", "conv.bias"};
    assert_names(dg, true, pn, 3);
    set_gates(dg, (const float[]){1, -1, 1, -1}); /* g = [1,0,1,0]: 4 groups of 4, interleaved */
    gg_dgconv2d_info info;
    cr_assert_eq(gg_nn_dgconv2d_info(dg, &info), GG_OK);
    cr_assert_eq(info.channels, 16);
    cr_assert_eq(info.n_gates, 4);
    cr_assert_eq(info.n_open, 2);
    cr_assert_eq(info.groups, 4);
    cr_assert_eq(info.group_size, 4);
    cr_assert_eq(info.zeta, 64.0); /* 2^(4 + 2) */
    cr_assert_eq(info.params, 16 * 16 * 9 + 4 + 16);
    cr_assert_eq(info.effective_params, 9 * 64 + 16);
    cr_assert_eq(info.macs, 0, "no output size yet");
    cr_assert_eq(gg_nn_dgconv2d_info_at(dg, 9, 9, &info), GG_OK);
    cr_assert_eq(info.out_h, 5);
    cr_assert_eq(info.macs, 9 * 25 * 64);
    /* forward equals the op on the module's tensors; the output size is then known */
    gg_tensor *x = randn(GG_SHAPE(2, 16, 8, 8), 3);
    gg_tensor *y = gg_module_forward(dg, x);
    gt_assert_shape(y, 2, 16, 4, 4);
    gg_tensor *ref = gg_dgconv2d(x, gg_nn_dgconv2d_weight(dg), gg_nn_dgconv2d_gates(dg),
                                 gg_module_get_tensor(dg, "conv.bias"), &p, NULL);
    cr_assert_eq(max_abs_diff(y, ref), 0.0);
    cr_assert_eq(gg_nn_dgconv2d_info(dg, &info), GG_OK);
    cr_assert_eq(info.out_h, 4);
    cr_assert_eq(info.macs, 9 * 16 * 64);
    int64_t macs = 0;
    cr_assert_eq(gg_module_macs(dg, GG_SHAPE(5, 16, 8, 8), &macs), GG_OK);
    cr_assert_eq(macs, 9 * 16 * 64, "gg_module_macs counts the effective MACs");
    /* a gate exactly 0: no grouping, zeta by the product form */
    set_gates(dg, (const float[]){1, 0, -1, -1});
    cr_assert_eq(gg_nn_dgconv2d_info(dg, &info), GG_OK);
    cr_assert_eq(info.groups, 0);
    cr_assert_eq(info.zeta, 16 * 2 * 1.5);
    /* gradients reach gate, weight and bias */
    set_gates(dg, (const float[]){1, -1, 1, -1});
    cr_assert_eq(gg_backward(gg_sum(gg_square(gg_module_forward(dg, x)), NULL, 0, false)), GG_OK, "%s", gg_last_error());
    for (int i = 0; i < 3; i++) cr_assert_not_null(dg->params[i]->grad, "parameter %d", i);
    /* the sort option through set_opts */
    gg_dgconv_opts o = {.sort = true, .path = GG_DGCONV_COMPOSITE};
    cr_assert_eq(gg_nn_dgconv2d_set_opts(dg, &o), GG_OK);
    gg_tensor *ys = gg_module_forward(dg, x);
    gg_tensor *refs = gg_dgconv2d(x, gg_nn_dgconv2d_weight(dg), gg_nn_dgconv2d_gates(dg),
                                  gg_module_get_tensor(dg, "conv.bias"), &p, &o);
    cr_assert_eq(max_abs_diff(ys, refs), 0.0);
    gg_tensor_free(x);
    gg_module_free(dg);
}

static void check_export(gg_module *dg, const float *gates, bool expect_plain, const char *what) {
    set_gates(dg, gates);
    gg_module *ex = gg_nn_dgconv2d_export(dg);
    cr_assert_not_null(ex, "%s: %s", what, gg_last_error());
    gg_module *conv = expect_plain ? ex : gg_module_get_child(ex, "1");
    cr_assert_str_eq(gg_module_kind(ex), expect_plain ? "Conv2d" : "Sequential", "%s", what);
    gg_dgconv2d_info info;
    gg_nn_dgconv2d_info(dg, &info);
    gt_assert_shape(gg_module_get_tensor(conv, "weight"), info.channels, info.group_size, info.kernel_size,
                    info.kernel_size);
    gg_tensor *x = randn(GG_SHAPE(3, info.channels, 7, 6), 77);
    gg_tensor *y = gg_module_forward(dg, x), *ye = gg_module_forward(ex, x);
    cr_assert_not_null(ye, "%s: %s", what, gg_last_error());
    double d = max_abs_diff(y, ye);
    cr_assert(d <= 1e-5, "%s: exported output differs by %g", what, d);
    /* grouped parameter count = the effective one */
    cr_assert_eq(gg_module_num_parameters(ex, false), info.effective_params, "%s", what);
    gg_module_free(ex);
    gg_tensor_free(x);
}

Test(nn, dgconv2d_export) {
    gg_rng r;
    gg_rng_init(&r, 3);
    gg_conv2d_params p = gg_conv2d_make(2, 1, 1, 1);
    gg_module *dg = gg_nn_dgconv2d_new(32, 3, &p, true, GG_GATE_INIT_RANDOM, &r);
    cr_assert_not_null(dg, "%s", gg_last_error());
    gg_rand_uniform(gg_module_get_tensor(dg, "conv.bias"), -1, 1, &r);
    check_export(dg, (const float[]){1, -1, 1, -1, 1}, false, "interleaved 4 groups");
    check_export(dg, (const float[]){-1, -1, 1, 1, 1}, true, "contiguous 4 groups");
    check_export(dg, (const float[]){1, 1, 1, 1, 1}, true, "dense");
    check_export(dg, (const float[]){-1, -1, -1, -1, -1}, true, "depthwise");
    check_export(dg, (const float[]){1, 1, -1, 1, -1}, false, "4 groups, low bits");
    /* with sort the groups are contiguous: a plain grouped conv */
    gg_dgconv_opts o = {.sort = true, .path = GG_DGCONV_AUTO};
    gg_nn_dgconv2d_set_opts(dg, &o);
    check_export(dg, (const float[]){1, -1, 1, -1, -1}, true, "sorted 8 groups");
    /* exported deploy module is differentiable too: gradient w.r.t. the input matches */
    gg_nn_dgconv2d_set_opts(dg, NULL);
    set_gates(dg, (const float[]){1, -1, 1, 1, -1});
    gg_module *ex = gg_nn_dgconv2d_export(dg);
    gg_tensor *x = randn(GG_SHAPE(2, 32, 5, 5), 8);
    gg_requires_grad(x, true);
    gg_backward(gg_sum(gg_square(gg_module_forward(dg, x)), NULL, 0, false));
    gg_tensor *g1 = gg_tensor_copy(x->grad);
    gg_zero_grad(x);
    gg_backward(gg_sum(gg_square(gg_module_forward(ex, x)), NULL, 0, false));
    cr_assert(max_abs_diff(g1, x->grad) < 1e-4, "input gradients differ by %g", max_abs_diff(g1, x->grad));
    /* a gate exactly 0 cannot be exported */
    set_gates(dg, (const float[]){1, 0, 1, 1, -1});
    cr_assert_null(gg_nn_dgconv2d_export(dg));
    cr_assert(strstr(gg_last_error(), "gate 1 is exactly 0"), "%s", gg_last_error());
    gg_tensor_free(g1);
    gg_tensor_free(x);
    gg_module_free(ex);
    gg_module_free(dg);
}

/* ---- a module kind defined outside the library ---- */

/* Scale: y = alpha * x with one parameter "alpha" [1]; refuses inputs with more than 3 dims. */
static int scale_shape(gg_module *m, int ndim, const int64_t *in, int *ond, int64_t *out) {
    if (ndim > 3) return gg_module_fail(m, GG_ERR_SHAPE, "at most 3 dims, got %d", ndim);
    memcpy(out, in, (size_t)ndim * sizeof *in);
    *ond = ndim;
    return GG_OK;
}
static gg_tensor *scale_forward(gg_module *m, gg_tensor *x) { return gg_mul(x, m->params[0]); }
static const gg_module_def SCALE_DEF = {"Scale", scale_forward, scale_shape, NULL, NULL, NULL};

static gg_module *scale_new(float alpha) {
    gg_module *m = gg_module_new(&SCALE_DEF, 0);
    if (gg_module_add_parameter(m, "alpha", gg_tensor_full(GG_SHAPE(1), alpha))) {
        gg_module_free(m);
        return NULL;
    }
    return m;
}

Test(nn, custom_kind) {
    gg_module *seq = gg_nn_sequential_new();
    gg_nn_sequential_add(seq, "scale", scale_new(3.0f));
    gg_nn_sequential_add(seq, "fc", gg_nn_linear_new(2, 1, false, NULL));
    cr_assert_eq(gg_module_num_children(seq), 2, "%s", gg_last_error());
    const char *pn[] = {"scale.alpha", "fc.weight"};
    assert_names(seq, true, pn, 2);
    set_data(gg_module_get_tensor(seq, "fc.weight"), (const float[]){1, -1});
    gg_tensor *x = tensor_of(GG_SHAPE(1, 2), (const float[]){2, 5});
    gg_tensor *y = gg_module_forward(seq, x);
    assert_close(y, (const float[]){-9}, 1e-6, "custom kind");
    cr_assert_eq(gg_backward(gg_sum(y, NULL, 0, false)), GG_OK);
    assert_close(gg_module_get_tensor(seq, "scale.alpha")->grad, (const float[]){-3}, 1e-6, "d alpha");
    gg_tensor *x4 = gg_tensor_zeros(GG_SHAPE(1, 1, 1, 2));
    cr_assert_null(gg_module_forward(seq, x4));
    cr_assert_str_eq(gg_last_error(), "gg_module_forward: scale (Scale): at most 3 dims, got 4");
    gg_tensor_free(x);
    gg_tensor_free(x4);
    gg_module_free(seq);
}

/* ---- leaks ---- */

Test(nn, no_leak) {
    gg_tape_reset(NULL);
    size_t base = gg_alloc_live_bytes();
    gg_conv3x3_spec spec = {GG_CONV3X3_DGCONV, 0, GG_GATE_INIT_RANDOM};
    gg_module *seq = gg_nn_sequential_new();
    gg_nn_sequential_append(seq, gg_nn_bottleneck_new(8, 4, 2, 2, 64, &spec, NULL));
    gg_nn_sequential_append(seq, gg_nn_adaptive_avgpool2d_new(1, 1));
    gg_nn_sequential_append(seq, gg_nn_flatten_new(1, -1));
    gg_nn_sequential_append(seq, gg_nn_dropout_new(0.2f, NULL));
    gg_nn_sequential_append(seq, gg_nn_linear_new(16, 3, true, NULL));
    cr_assert_eq(gg_module_num_children(seq), 5, "%s", gg_last_error());
    gg_tensor *x = randn(GG_SHAPE(2, 8, 6, 6), 1);
    for (int step = 0; step < 2; step++) {
        gg_tensor *y = gg_module_forward(seq, x);
        cr_assert_eq(gg_backward(gg_sum(y, NULL, 0, false)), GG_OK, "%s", gg_last_error());
        gg_module_zero_grad(seq);
        gg_tape_reset(NULL);
    }
    cr_assert_eq(gg_module_export_dgconv(seq), 1, "%s", gg_last_error());
    gg_module_forward(seq, x);
    gg_module_free(seq); /* while the tape still references parameters */
    gg_tensor_free(x);
    gg_tape_reset(NULL);
    cr_assert_eq(gg_alloc_live_bytes(), base, "live bytes %zu, baseline %zu", gg_alloc_live_bytes(), base);
}
