/* gg_max_pool2d / gg_avg_pool2d / gg_adaptive_avg_pool2d / gg_global_avg_pool2d: hand-computed cases,
 * tie/NaN/-inf/empty-window rules, gradient checks (stride, padding, ceil_mode, dilation, odd sizes,
 * non-contiguous inputs), the kernels against a plain-C transcription of PyTorch's per-window loops on
 * random shapes, thread-count independence, PyTorch golden cases and every error path. */
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

TestSuite(pool, .init = one_thread, .fini = teardown);

/* ---- helpers ---- */

enum { K_MAX, K_AVG, K_ADAPTIVE, K_GLOBAL };

typedef struct pool_cfg {
    int kind;
    int k[2], s[2], p[2], d[2];
    bool ceil, cip;
    int64_t oh, ow; /* adaptive output size */
} pool_cfg;

static gg_tensor *apply(const pool_cfg *c, gg_tensor *x) {
    switch (c->kind) {
    case K_MAX: return gg_max_pool2d(x, c->k, c->s, c->p, c->d[0] ? c->d : NULL, c->ceil); /* NULL: 1 */
    case K_AVG: return gg_avg_pool2d(x, c->k, c->s, c->p, c->ceil, c->cip);
    case K_ADAPTIVE: return gg_adaptive_avg_pool2d(x, c->oh, c->ow);
    default: return gg_global_avg_pool2d(x);
    }
}

static const char *cfg_str(const pool_cfg *c, char *buf, size_t n) {
    static const char *names[] = {"max", "avg", "adaptive", "global"};
    snprintf(buf, n, "%s k(%d,%d) s(%d,%d) p(%d,%d) d(%d,%d) ceil %d cip %d out %lldx%lld", names[c->kind], c->k[0],
             c->k[1], c->s[0], c->s[1], c->p[0], c->p[1], c->d[0], c->d[1], c->ceil, c->cip, (long long)c->oh,
             (long long)c->ow);
    return buf;
}

static gg_tensor *from(int ndim, const int64_t *shape, const float *v) {
    gg_tensor *t = gg_tensor_from_data(ndim, shape, v);
    cr_assert_not_null(t, "%s", gg_last_error());
    return t;
}

static gg_tensor *uniform(int ndim, const int64_t *shape, uint64_t seed) {
    gg_tensor *t = gg_tensor_empty(ndim, shape);
    cr_assert_not_null(t, "%s", gg_last_error());
    gg_rng r;
    gg_rng_init(&r, seed);
    cr_assert_eq(gg_rand_uniform(t, -1.0f, 1.0f, &r), GG_OK, "%s", gg_last_error());
    return t;
}

/* 0.01 * a shuffle of 0..n-1: distinct values with gaps far above the gradcheck step (stable argmax). */
static gg_tensor *distinct(int ndim, const int64_t *shape, uint64_t seed) {
    int64_t n = gt_numel(ndim, shape);
    float *v = malloc(sizeof(float) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) v[i] = (float)i;
    gt_lcg g;
    gt_lcg_seed(&g, seed);
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = gt_lcg_range(&g, 0, i);
        float t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
    for (int64_t i = 0; i < n; i++) v[i] = 0.01f * (v[i] - (float)n / 2);
    gg_tensor *t = from(ndim, shape, v);
    free(v);
    return t;
}

static float *values(const gg_tensor *t) {
    float *v = malloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1));
    cr_assert_eq(gg_tensor_to_buffer(t, v, t->numel), GG_OK, "%s", gg_last_error());
    return v;
}

/* |a - e| <= tol * (1 + |e|) elementwise; NaN matches NaN, infinities must be equal. */
static void assert_close_(const float *a, const float *e, int64_t n, double tol, const char *what, const char *file,
                          int line) {
    for (int64_t i = 0; i < n; i++) {
        bool ok = (isnan(e[i]) && isnan(a[i])) || (isinf(e[i]) && a[i] == e[i]) ||
                  fabs((double)a[i] - (double)e[i]) <= tol * (1 + fabs((double)e[i]));
        cr_assert(ok, "%s:%d: %s: element %lld is %.9g, expected %.9g", file, line, what, (long long)i, (double)a[i],
                  (double)e[i]);
    }
}
#define assert_close(a, e, n, tol, what) assert_close_((a), (e), (n), (tol), (what), __FILE__, __LINE__)

static void assert_tensor_vals_(const gg_tensor *t, const float *e, double tol, const char *what, const char *file,
                                int line) {
    cr_assert_not_null(t, "%s:%d: %s is NULL (%s)", file, line, what, gg_last_error());
    float *v = values(t);
    assert_close_(v, e, t->numel, tol, what, file, line);
    free(v);
}
#define assert_vals(t, tol, ...) \
    assert_tensor_vals_((t), (const float[]){__VA_ARGS__}, (tol), "values", __FILE__, __LINE__)

/* Backward of sum(y * seed) with seed = ones. */
static void backward_ones(gg_tensor *y) {
    cr_assert_not_null(y, "%s", gg_last_error());
    gg_tensor *ones = gg_tensor_ones(y->ndim, y->shape);
    cr_assert_eq(gg_backward_ex(y, ones, false), GG_OK, "%s", gg_last_error());
    gg_tensor_free(ones);
}

static gg_tensor *leaf(gg_tensor *t) {
    cr_assert_eq(gg_requires_grad(t, true), GG_OK, "%s", gg_last_error());
    return t;
}

/* ---- hand-computed forward and backward ---- */

Test(pool, max_basic) {
    gg_tensor *x = leaf(GT_IOTA(1, 1, 4, 4));
    const int k[2] = {2, 2};
    gg_tensor *y = gg_max_pool2d(x, k, NULL, NULL, NULL, false); /* stride defaults to the kernel */
    gt_assert_shape(y, 1, 1, 2, 2);
    gt_assert_list(y, 5, 7, 13, 15);
    backward_ones(y);
    gt_assert_list(x->grad, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1);
    gg_tensor_free(x);
}

Test(pool, max_padding_and_ceil) {
    /* 3x3 iota, kernel 2, stride 2, pad 1: windows (-1..0) and (1..2) per dimension */
    gg_tensor *x = GT_IOTA(1, 1, 3, 3);
    const int k[2] = {2, 2}, s[2] = {2, 2}, p[2] = {1, 1};
    gg_tensor *y = gg_max_pool2d(x, k, s, p, NULL, false);
    gt_assert_shape(y, 1, 1, 2, 2);
    gt_assert_list(y, 0, 2, 6, 8);
    /* 5x5 iota, kernel 2, stride 2: floor gives 2x2, ceil_mode 3x3 with half windows at the edge */
    gg_tensor *x5 = GT_IOTA(1, 1, 5, 5);
    gt_assert_shape(gg_max_pool2d(x5, k, s, NULL, NULL, false), 1, 1, 2, 2);
    y = gg_max_pool2d(x5, k, s, NULL, NULL, true);
    gt_assert_shape(y, 1, 1, 3, 3);
    gt_assert_list(y, 6, 8, 9, 16, 18, 19, 21, 23, 24);
    /* ceil_mode with padding: 4 + 2 - 2 = 4 -> ceil(4/2)+1 = 3, but the third window would start at
     * 2*2 - 1 = 3 < 4 + 1, so it stays; 5x5, k3 s2 p1 ceil: (5+2-3+1)/2+1 = 3, last start 3 < 6 */
    const int k3[2] = {3, 3};
    gg_tensor *x4 = GT_IOTA(1, 1, 4, 4);
    gt_assert_shape(gg_max_pool2d(x4, k, s, p, NULL, true), 1, 1, 3, 3);
    y = gg_max_pool2d(x5, k3, s, p, NULL, true);
    gt_assert_shape(y, 1, 1, 3, 3);
    gt_assert_list(y, 6, 8, 9, 16, 18, 19, 21, 23, 24);
    /* ceil_mode dropping a window that would start in the right padding: H=4, k2 s3 p1:
     * (4+2-2+2)/3+1 = 3, (3-1)*3 = 6 >= 4+1 -> 2 */
    const int s3[2] = {3, 3};
    gt_assert_shape(gg_max_pool2d(x4, k, s3, p, NULL, true), 1, 1, 2, 2);
    gg_tensor_free(x4);
    gg_tensor_free(x);
    gg_tensor_free(x5);
}

Test(pool, max_dilation) {
    gg_tensor *x = leaf(GT_IOTA(1, 1, 5, 5));
    const int k[2] = {2, 2}, s[2] = {1, 1}, d[2] = {2, 3};
    gg_tensor *y = gg_max_pool2d(x, k, s, NULL, d, false); /* window rows {i, i+2}, cols {j, j+3} */
    gt_assert_shape(y, 1, 1, 3, 2);
    gt_assert_list(y, 13, 14, 18, 19, 23, 24);
    backward_ones(y);
    float e[25] = {0};
    e[13] = e[14] = e[18] = e[19] = e[23] = e[24] = 1;
    gt_assert_values(x->grad, e);
    gg_tensor_free(x);
}

Test(pool, max_ties_nan_inf) {
    const int k[2] = {1, 4};
    /* ties: the first maximum gets the gradient */
    gg_tensor *x = leaf(from(GG_SHAPE(1, 1, 1, 4), (const float[]){1, 3, 3, 2}));
    gg_tensor *y = gg_max_pool2d(x, k, NULL, NULL, NULL, false);
    gt_assert_list(y, 3);
    backward_ones(y);
    gt_assert_list(x->grad, 0, 1, 0, 0);
    /* NaN wins, the last NaN takes the gradient (PyTorch's `val > max || isnan(val)`) */
    gg_tensor *xn = leaf(from(GG_SHAPE(1, 1, 1, 4), (const float[]){1, NAN, 3, NAN}));
    y = gg_max_pool2d(xn, k, NULL, NULL, NULL, false);
    cr_assert(isnan(gg_tensor_data(y)[0]));
    backward_ones(y);
    gt_assert_list(xn->grad, 0, 0, 0, 1);
    /* all -inf: the first element of the window inside the input takes the gradient */
    gg_tensor *xi = leaf(gg_tensor_full(GG_SHAPE(1, 1, 1, 4), -INFINITY));
    const int k3[2] = {1, 3}, s1[2] = {1, 1}, p1[2] = {0, 1};
    y = gg_max_pool2d(xi, k3, s1, p1, NULL, false);
    gt_assert_list(y, -INFINITY, -INFINITY, -INFINITY, -INFINITY);
    backward_ones(y);
    gt_assert_list(xi->grad, 2, 1, 1, 0); /* windows start at 0, 0, 1, 2 (as PyTorch's indices 0,0,1,2) */
    gg_tensor_free(x);
    gg_tensor_free(xn);
    gg_tensor_free(xi);
}

Test(pool, max_empty_window) {
    /* 1x3 input, kernel (2,1) dilation 2 pad 1: the window rows are -1 and 1, none inside the input */
    gg_tensor *x = leaf(from(GG_SHAPE(1, 1, 1, 3), (const float[]){1, 2, 3}));
    const int k[2] = {2, 1}, s[2] = {1, 1}, p[2] = {1, 0}, d[2] = {2, 1};
    gg_tensor *y = gg_max_pool2d(x, k, s, p, d, false);
    gt_assert_shape(y, 1, 1, 1, 3);
    gt_assert_list(y, -INFINITY, -INFINITY, -INFINITY);
    backward_ones(y);
    gt_assert_list(x->grad, 0, 0, 0);
    gg_tensor_free(x);
}

Test(pool, max_backward_overlap_accumulates) {
    /* 1x4, kernel 3 stride 1: both windows pick element 2; a second backward adds again */
    gg_tensor *x = leaf(from(GG_SHAPE(1, 1, 1, 4), (const float[]){0, 1, 5, 2}));
    const int k[2] = {1, 3}, s[2] = {1, 1};
    backward_ones(gg_max_pool2d(x, k, s, NULL, NULL, false));
    gt_assert_list(x->grad, 0, 0, 2, 0);
    backward_ones(gg_max_pool2d(x, k, s, NULL, NULL, false));
    gt_assert_list(x->grad, 0, 0, 4, 0);
    gg_tensor_free(x);
}

Test(pool, avg_basic_and_divisors) {
    gg_tensor *x = leaf(GT_IOTA(1, 1, 4, 4));
    const int k[2] = {2, 2};
    gg_tensor *y = gg_avg_pool2d(x, k, NULL, NULL, false, true);
    gt_assert_list(y, 2.5f, 4.5f, 10.5f, 12.5f);
    backward_ones(y);
    gt_assert_all(x->grad, 0.25f);
    /* ones 5x5, k3 s2 p1 ceil: count_include_pad divides by 9 inside the padded input (4/9 at corners,
     * 6/9 at edges); the last window overhangs the right padding by one and that column is not counted */
    gg_tensor *o = gg_tensor_ones(GG_SHAPE(1, 1, 5, 5));
    const int k3[2] = {3, 3}, s2[2] = {2, 2}, p1[2] = {1, 1};
    y = gg_avg_pool2d(o, k3, s2, p1, true, true);
    gt_assert_shape(y, 1, 1, 3, 3);
    const float a = 4.0f / 9, b = 6.0f / 9;
    assert_vals(y, 1e-7, a, b, a, b, 1, b, a, b, a);
    y = gg_avg_pool2d(o, k3, s2, p1, true, false);
    gt_assert_all(y, 1.0f);
    /* 6 wide, k3 s2 p1 ceil: 4 outputs, the last covers columns 5..7 of which 7 is past W + p = 7 */
    gg_tensor *o6 = gg_tensor_ones(GG_SHAPE(1, 1, 1, 6));
    const int k13[2] = {1, 3}, s12[2] = {1, 2}, p01[2] = {0, 1};
    y = gg_avg_pool2d(o6, k13, s12, p01, true, true);
    gt_assert_shape(y, 1, 1, 1, 4);
    assert_vals(y, 1e-7, 2.0f / 3, 1, 1, 0.5f); /* last: 1 valid / pool size 2 (5..6 inside [-1, 7)) */
    gg_tensor_free(x);
    gg_tensor_free(o);
    gg_tensor_free(o6);
}

Test(pool, avg_backward_hand) {
    /* 1x3, kernel 2 stride 1 pad 1, count_include_pad false: windows {0}, {0,1}, {1,2}, {2} */
    gg_tensor *x = leaf(from(GG_SHAPE(1, 1, 1, 3), (const float[]){2, 4, 8}));
    const int k[2] = {1, 2}, s[2] = {1, 1}, p[2] = {0, 1};
    gg_tensor *y = gg_avg_pool2d(x, k, s, p, false, false);
    gt_assert_list(y, 2, 3, 6, 8);
    backward_ones(y);
    gt_assert_list(x->grad, 1.5f, 1, 1.5f);
    gg_tensor *x2 = leaf(from(GG_SHAPE(1, 1, 1, 3), (const float[]){2, 4, 8}));
    y = gg_avg_pool2d(x2, k, s, p, false, true);
    gt_assert_list(y, 1, 3, 6, 4);
    backward_ones(y);
    gt_assert_list(x2->grad, 1, 1, 1);
    gg_tensor_free(x);
    gg_tensor_free(x2);
}

Test(pool, adaptive_and_global_hand) {
    gg_tensor *x = leaf(GT_IOTA(1, 1, 5, 5));
    gg_tensor *y = gg_adaptive_avg_pool2d(x, 2, 2); /* windows [0,3) and [2,5) per dimension */
    gt_assert_shape(y, 1, 1, 2, 2);
    gt_assert_list(y, 6, 8, 16, 18);
    backward_ones(y);
    /* each cell gets 1/9 per window covering it: rows/cols 2 are shared */
    const float q = 1.0f / 9, h = 2.0f / 9, f = 4.0f / 9;
    assert_tensor_vals_(x->grad,
                        (const float[]){q, q, h, q, q, q, q, h, q, q, h, h, f, h, h, q, q, h, q, q, q, q, h, q, q},
                        1e-6, "adaptive dx", __FILE__, __LINE__);
    /* upsampling 2 -> 3: windows [0,1), [0,2), [1,2) */
    gg_tensor *x2 = from(GG_SHAPE(1, 1, 1, 2), (const float[]){1, 3});
    assert_vals(gg_adaptive_avg_pool2d(x2, 1, 3), 0, 1, 2, 3);
    gt_assert_shape(gg_adaptive_avg_pool2d(x2, 0, 3), 1, 1, 0, 3);
    gg_tensor *g = leaf(GT_IOTA(1, 2, 2, 3));
    y = gg_global_avg_pool2d(g);
    gt_assert_shape(y, 1, 2, 1, 1);
    gt_assert_list(y, 2.5f, 8.5f);
    backward_ones(y);
    gt_assert_all(g->grad, 1.0f / 6);
    gg_tensor_free(x);
    gg_tensor_free(x2);
    gg_tensor_free(g);
}

Test(pool, empty_batch_and_no_grad) {
    gg_tensor *x = leaf(gg_tensor_zeros(GG_SHAPE(0, 3, 5, 5)));
    const int k[2] = {2, 2};
    pool_cfg cfgs[] = {{.kind = K_MAX, .k = {2, 2}, .s = {2, 2}}, {.kind = K_AVG, .k = {2, 2}, .s = {2, 2}},
                       {.kind = K_ADAPTIVE, .oh = 2, .ow = 3}, {.kind = K_GLOBAL}};
    const int64_t oh[] = {2, 2, 2, 1}, ow[] = {2, 2, 3, 1};
    for (int i = 0; i < 4; i++) {
        gg_tensor *y = apply(&cfgs[i], x);
        gt_assert_shape(y, 0, 3, oh[i], ow[i]);
        gg_tensor *seed = gg_tensor_zeros(y->ndim, y->shape);
        cr_assert_eq(gg_backward_ex(y, seed, false), GG_OK, "%s", gg_last_error());
        gg_tensor_free(seed);
    }
    /* no grad mode: nothing recorded */
    gg_tensor *z = leaf(GT_IOTA(1, 1, 4, 4));
    gg_no_grad_begin();
    size_t nodes = gg_tape_num_nodes(NULL);
    gg_tensor *y = gg_max_pool2d(z, k, NULL, NULL, NULL, false);
    gg_no_grad_end();
    gt_assert_list(y, 5, 7, 13, 15);
    cr_assert_not(y->requires_grad);
    cr_assert_eq(gg_tape_num_nodes(NULL), nodes);
    gg_tensor_free(x);
    gg_tensor_free(z);
}

/* ---- gradient checks ---- */

static gg_tensor *pool_fn(gg_tensor *const *in, void *ctx) { return apply(ctx, in[0]); }

static void gradcheck_cfg(const pool_cfg *c, gg_tensor *x) {
    char buf[256], cs[200];
    gg_gradcheck_report rep;
    int st = gg_gradcheck(pool_fn, (void *)c, 1, &x, NULL, &rep);
    cr_assert_eq(st, GG_OK, "%s: gradcheck did not run: %s", cfg_str(c, cs, sizeof cs), gg_last_error());
    cr_assert(rep.passed, "%s: %s", cfg_str(c, cs, sizeof cs), gg_gradcheck_describe(&rep, buf, sizeof buf));
}

/* x [N,C,H,W] as a leaf: contiguous, or the transpose of a [N,C,W,H] base (non-contiguous). */
static gg_tensor *make_input(int64_t N, int64_t C, int64_t H, int64_t W, bool transposed, bool dist, uint64_t seed,
                             gg_tensor **base) {
    gg_tensor *b = transposed ? (dist ? distinct(GG_SHAPE(N, C, W, H), seed) : uniform(GG_SHAPE(N, C, W, H), seed))
                              : (dist ? distinct(GG_SHAPE(N, C, H, W), seed) : uniform(GG_SHAPE(N, C, H, W), seed));
    gg_tensor *x = transposed ? gg_tensor_transpose(b, 2, 3) : gg_tensor_retain(b);
    cr_assert_not_null(x, "%s", gg_last_error());
    *base = b;
    return leaf(x);
}

static const pool_cfg GC_CASES[] = {
    {.kind = K_MAX, .k = {2, 2}, .s = {2, 2}, .p = {0, 0}, .d = {1, 1}},
    {.kind = K_MAX, .k = {3, 3}, .s = {2, 2}, .p = {1, 1}, .d = {1, 1}, .ceil = true},
    {.kind = K_MAX, .k = {3, 2}, .s = {1, 3}, .p = {1, 1}, .d = {2, 1}, .ceil = true},
    {.kind = K_MAX, .k = {2, 3}, .s = {3, 2}, .p = {0, 1}, .d = {1, 2}},
    {.kind = K_AVG, .k = {3, 3}, .s = {2, 2}, .p = {1, 1}, .ceil = true, .cip = true},
    {.kind = K_AVG, .k = {3, 3}, .s = {2, 2}, .p = {1, 1}, .ceil = true, .cip = false},
    {.kind = K_AVG, .k = {2, 3}, .s = {1, 2}, .p = {1, 0}, .ceil = false, .cip = false},
    {.kind = K_AVG, .k = {4, 2}, .s = {3, 1}, .p = {2, 1}, .ceil = true, .cip = true},
    {.kind = K_ADAPTIVE, .oh = 3, .ow = 2},
    {.kind = K_ADAPTIVE, .oh = 4, .ow = 7},
    {.kind = K_GLOBAL},
};

Test(pool, gradcheck_variants) {
    const int64_t sizes[][2] = {{7, 5}, {6, 9}};
    for (size_t i = 0; i < sizeof GC_CASES / sizeof GC_CASES[0]; i++)
        for (int sz = 0; sz < 2; sz++)
            for (int tr = 0; tr < 2; tr++) {
                gg_tensor *base;
                gg_tensor *x = make_input(2, 2, sizes[sz][0], sizes[sz][1], tr, GC_CASES[i].kind == K_MAX,
                                          100 + i * 4 + (uint64_t)(sz * 2 + tr), &base);
                if (tr) cr_assert_not(gg_tensor_is_contiguous(x));
                gradcheck_cfg(&GC_CASES[i], x);
                gg_tensor_free(x);
                gg_tensor_free(base);
                gg_tape_reset(NULL);
            }
}

Test(pool, gradcheck_through_chain) {
    /* pooling of a non-leaf (an op output) composes: y = maxpool(x * 2) */
    gg_tensor *x = leaf(distinct(GG_SHAPE(1, 2, 5, 5), 7));
    const pool_cfg c = {.kind = K_MAX, .k = {2, 2}, .s = {1, 1}, .d = {1, 1}};
    gg_tensor *y = apply(&c, gg_mul_scalar(x, 2.0f));
    backward_ones(y);
    float *g = values(x->grad);
    double total = 0;
    for (int64_t i = 0; i < x->numel; i++) total += g[i];
    cr_assert_float_eq(total, 2.0 * 2 * 16, 1e-9, "each of the 32 outputs routes 2 to one element");
    free(g);
    gg_tensor_free(x);
}

/* ---- against a plain-C transcription of PyTorch's CPU loops ---- */

static int64_t ref_out(int64_t in, int k, int s, int p, int d, bool ceil_mode) {
    double span = (double)(in + 2 * p - d * (k - 1) - 1) / s;
    int64_t o = (int64_t)(ceil_mode ? ceil(span) : floor(span)) + 1;
    if (ceil_mode && (o - 1) * s >= in + p) o--;
    return o;
}

/* Reference forward (y) and input gradient for seed dy (dx += ...), one plane at a time. */
static void ref_pool(const pool_cfg *c, int64_t planes, int64_t H, int64_t W, int64_t Ho, int64_t Wo, const float *x,
                     float *y, const float *dy, float *dx) {
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *xp = x + pl * H * W;
        float *dxp = dx + pl * H * W;
        for (int64_t oh = 0; oh < Ho; oh++)
            for (int64_t ow = 0; ow < Wo; ow++) {
                const int64_t o = pl * Ho * Wo + oh * Wo + ow;
                if (c->kind == K_MAX) {
                    int64_t ih0 = oh * c->s[0] - c->p[0], iw0 = ow * c->s[1] - c->p[1];
                    int64_t ih1 = ih0 + (c->k[0] - 1) * c->d[0] + 1, iw1 = iw0 + (c->k[1] - 1) * c->d[1] + 1;
                    if (ih1 > H) ih1 = H;
                    if (iw1 > W) iw1 = W;
                    while (ih0 < 0) ih0 += c->d[0];
                    while (iw0 < 0) iw0 += c->d[1];
                    int64_t best = ih0 * W + iw0;
                    float m = -INFINITY;
                    for (int64_t ih = ih0; ih < ih1; ih += c->d[0])
                        for (int64_t iw = iw0; iw < iw1; iw += c->d[1]) {
                            float v = xp[ih * W + iw];
                            if (v > m || isnan(v)) m = v, best = ih * W + iw;
                        }
                    y[o] = m;
                    if (ih0 < ih1 && iw0 < iw1) dxp[best] += dy[o];
                } else if (c->kind == K_AVG) {
                    int64_t ih0 = oh * c->s[0] - c->p[0], iw0 = ow * c->s[1] - c->p[1];
                    int64_t ih1 = ih0 + c->k[0] < H + c->p[0] ? ih0 + c->k[0] : H + c->p[0];
                    int64_t iw1 = iw0 + c->k[1] < W + c->p[1] ? iw0 + c->k[1] : W + c->p[1];
                    int64_t pool = (ih1 - ih0) * (iw1 - iw0);
                    if (ih0 < 0) ih0 = 0;
                    if (iw0 < 0) iw0 = 0;
                    if (ih1 > H) ih1 = H;
                    if (iw1 > W) iw1 = W;
                    if (ih0 >= ih1 || iw0 >= iw1) {
                        y[o] = 0;
                        continue;
                    }
                    int64_t div = c->cip ? pool : (ih1 - ih0) * (iw1 - iw0);
                    double s = 0;
                    for (int64_t ih = ih0; ih < ih1; ih++)
                        for (int64_t iw = iw0; iw < iw1; iw++) s += xp[ih * W + iw];
                    y[o] = (float)(s / (double)div);
                    float gd = dy[o] / (float)div;
                    for (int64_t ih = ih0; ih < ih1; ih++)
                        for (int64_t iw = iw0; iw < iw1; iw++) dxp[ih * W + iw] += gd;
                } else {
                    int64_t h0 = (int64_t)floor((double)(oh * H) / Ho), h1 = (int64_t)ceil((double)((oh + 1) * H) / Ho);
                    int64_t w0 = (int64_t)floor((double)(ow * W) / Wo), w1 = (int64_t)ceil((double)((ow + 1) * W) / Wo);
                    double s = 0;
                    for (int64_t ih = h0; ih < h1; ih++)
                        for (int64_t iw = w0; iw < w1; iw++) s += xp[ih * W + iw];
                    y[o] = (float)(s / (double)(h1 - h0) / (double)(w1 - w0));
                    float gd = dy[o] / (float)(h1 - h0) / (float)(w1 - w0);
                    for (int64_t ih = h0; ih < h1; ih++)
                        for (int64_t iw = w0; iw < w1; iw++) dxp[ih * W + iw] += gd;
                }
            }
    }
}

/* Random values on a coarse grid (ties) with a few NaN and -inf for max pooling. */
static gg_tensor *grid_input(int64_t N, int64_t C, int64_t H, int64_t W, bool specials, gt_lcg *g) {
    gg_tensor *t = gg_tensor_empty(GG_SHAPE(N, C, H, W));
    float *p = gg_tensor_data(t);
    for (int64_t i = 0; i < t->numel; i++) {
        uint32_t r = gt_lcg_u32(g) % 200;
        p[i] = specials && r == 0 ? NAN : specials && r == 1 ? -INFINITY : 0.25f * (float)((int)(r % 17) - 8);
    }
    return t;
}

Test(pool, kernels_vs_reference_random) {
    gt_lcg g;
    gt_lcg_seed(&g, 2024);
    int checked = 0, rejected = 0;
    for (int it = 0; it < 400; it++) {
        pool_cfg c = {.kind = (int)gt_lcg_range(&g, 0, 2)};
        for (int a = 0; a < 2; a++) {
            c.k[a] = (int)gt_lcg_range(&g, 1, 4);
            c.s[a] = (int)gt_lcg_range(&g, 1, 3);
            c.p[a] = (int)gt_lcg_range(&g, 0, c.k[a] / 2);
            c.d[a] = c.kind == K_MAX ? (int)gt_lcg_range(&g, 1, 3) : 1;
        }
        c.ceil = gt_lcg_range(&g, 0, 1);
        c.cip = gt_lcg_range(&g, 0, 1);
        const int64_t N = gt_lcg_range(&g, 1, 2), C = gt_lcg_range(&g, 1, 3);
        const int64_t H = gt_lcg_range(&g, 1, 13), W = gt_lcg_range(&g, 1, 300);
        c.oh = gt_lcg_range(&g, 1, 2 * H);
        c.ow = gt_lcg_range(&g, 1, W + 3);
        int64_t Ho = c.kind == K_ADAPTIVE ? c.oh : ref_out(H, c.k[0], c.s[0], c.p[0], c.d[0], c.ceil);
        int64_t Wo = c.kind == K_ADAPTIVE ? c.ow : ref_out(W, c.k[1], c.s[1], c.p[1], c.d[1], c.ceil);
        char cs[200];
        cfg_str(&c, cs, sizeof cs);
        gg_tensor *x = leaf(grid_input(N, C, H, W, c.kind == K_MAX, &g));
        gg_clear_error();
        gg_tensor *y = apply(&c, x);
        if (Ho < 1 || Wo < 1) { /* the op must reject exactly the geometries PyTorch rejects */
            cr_assert_null(y, "%s on %lldx%lld: expected an error", cs, (long long)H, (long long)W);
            gt_assert_error(GG_ERR_SHAPE, "too small");
            rejected++;
            gg_tensor_free(x);
            continue;
        }
        gt_assert_shape(y, N, C, Ho, Wo);
        gg_tensor *dy = uniform(GG_SHAPE(N, C, Ho, Wo), 5000 + (uint64_t)it);
        float *ry = malloc(sizeof(float) * (size_t)y->numel), *rdx = calloc((size_t)x->numel, sizeof(float));
        ref_pool(&c, N * C, H, W, Ho, Wo, gg_tensor_data(x), ry, gg_tensor_data(dy), rdx);
        cr_assert_eq(gg_backward_ex(y, dy, false), GG_OK, "%s", gg_last_error());
        float *fy = values(y), *fdx = values(x->grad);
        char what[260];
        snprintf(what, sizeof what, "%s on %lldx%lld: y", cs, (long long)H, (long long)W);
        assert_close(fy, ry, y->numel, c.kind == K_MAX ? 0 : 1e-7, what);
        snprintf(what, sizeof what, "%s on %lldx%lld: dx", cs, (long long)H, (long long)W);
        assert_close(fdx, rdx, x->numel, c.kind == K_MAX ? 0 : 1e-6, what);
        free(ry), free(rdx), free(fy), free(fdx);
        gg_tensor_free(x);
        gg_tensor_free(dy);
        gg_tape_reset(NULL);
        checked++;
    }
    cr_assert_geq(checked, 250, "only %d random cases ran (%d rejected)", checked, rejected);
    cr_assert_geq(rejected, 1, "no random case exercised the output-too-small error");
}

Test(pool, threads_identical) {
    /* 4*8*67*65 = 139360 elements: above the OpenMP threshold */
    const pool_cfg cfgs[] = {{.kind = K_MAX, .k = {3, 3}, .s = {2, 2}, .p = {1, 1}, .d = {1, 1}, .ceil = true},
                             {.kind = K_AVG, .k = {3, 2}, .s = {2, 2}, .p = {1, 1}, .cip = false},
                             {.kind = K_ADAPTIVE, .oh = 5, .ow = 9},
                             {.kind = K_GLOBAL}};
    gg_tensor *x = leaf(uniform(GG_SHAPE(4, 8, 67, 65), 99));
    for (int i = 0; i < 4; i++) {
        float *res[2][2];
        for (int t = 0; t < 2; t++) {
            gg_set_num_threads(t + 1);
            gg_zero_grad(x);
            gg_tensor *y = apply(&cfgs[i], x);
            gg_tensor *dy = uniform(y->ndim, y->shape, 77);
            cr_assert_eq(gg_backward_ex(y, dy, false), GG_OK, "%s", gg_last_error());
            res[t][0] = values(y);
            res[t][1] = values(x->grad);
            gg_tensor_free(dy);
            cr_assert_eq(memcmp(res[t][0], res[0][0], sizeof(float) * (size_t)y->numel), 0, "kind %d: y differs", i);
            gg_tape_reset(NULL);
        }
        cr_assert_eq(memcmp(res[1][1], res[0][1], sizeof(float) * (size_t)x->numel), 0, "kind %d: dx differs", i);
        for (int t = 0; t < 2; t++) free(res[t][0]), free(res[t][1]);
    }
    gg_tensor_free(x);
}

/* ---- PyTorch golden cases (scripts/gen_cnn_golden.py) ---- */

static gg_tensor *load_golden(const char *name, const char *key) {
    const char *root = getenv("GG_TEST_DATA");
    cr_assert_not_null(root, "GG_TEST_DATA is not set");
    char path[1200];
    snprintf(path, sizeof path, "%s/golden/cnn/%s_%s.npy", root, name, key);
    gg_tensor *t = gg_npy_load(path);
    cr_assert_not_null(t, "cannot load %s: %s", path, gg_last_error());
    return t;
}

Test(pool, pytorch_golden) {
    const char *cases[] = {"max_ceil_pad",      "max_dil_ceil",  "max_ties",      "avg_incl_pad", "avg_excl_pad",
                           "avg_ceil_overhang", "adaptive_7to3", "adaptive_5to2", "adaptive_rect"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gg_tensor *prm = load_golden(cases[i], "params");
        cr_assert_eq(prm->numel, 13, "%s: params", cases[i]);
        const float *q = gg_tensor_data(prm);
        pool_cfg c = {.kind = (int)q[0], .k = {(int)q[1], (int)q[2]}, .s = {(int)q[3], (int)q[4]},
                      .p = {(int)q[5], (int)q[6]}, .d = {(int)q[7], (int)q[8]}, .ceil = q[9] != 0, .cip = q[10] != 0,
                      .oh = (int64_t)q[11], .ow = (int64_t)q[12]};
        gg_tensor *x = leaf(load_golden(cases[i], "x")), *cc = load_golden(cases[i], "c");
        gg_tensor *ey = load_golden(cases[i], "y"), *edx = load_golden(cases[i], "dx");
        gg_tensor *y = apply(&c, x);
        cr_assert_not_null(y, "%s: %s", cases[i], gg_last_error());
        cr_assert(gg_tensor_same_shape(y, ey), "%s: output shape", cases[i]);
        cr_assert_eq(gg_backward_ex(y, cc, false), GG_OK, "%s: %s", cases[i], gg_last_error());
        char what[200];
        float *a = values(y), *b = values(x->grad);
        snprintf(what, sizeof what, "%s: y", cases[i]);
        assert_close(a, gg_tensor_data(ey), ey->numel, c.kind == K_MAX ? 0 : 1e-6, what);
        snprintf(what, sizeof what, "%s: dx", cases[i]);
        assert_close(b, gg_tensor_data(edx), edx->numel, c.kind == K_MAX ? 0 : 1e-6, what);
        free(a), free(b);
        gg_tensor *all[] = {prm, x, cc, ey, edx};
        for (int j = 0; j < 5; j++) gg_tensor_free(all[j]);
        gg_tape_reset(NULL);
    }
}

/* ---- errors ---- */

static void expect_error(gg_tensor *y, int status, const char *fn, const char *needle) {
    cr_assert_null(y, "expected an error containing \"%s\"", needle);
    gt_assert_error(status, fn);
    gt_assert_msg_has(needle);
}

Test(pool, errors) {
    gg_tensor *x = uniform(GG_SHAPE(2, 3, 5, 5), 1);
    const size_t before = gg_tape_num_tensors(NULL);
    const int k2[2] = {2, 2}, k3[2] = {3, 3}, k0[2] = {0, 2}, s0[2] = {1, 0}, d0[2] = {0, 1}, pneg[2] = {-1, 0};
    const int p2[2] = {2, 1}, s1[2] = {1, 1}, k6[2] = {6, 6};
    /* rank */
    gg_tensor *x3 = uniform(GG_SHAPE(3, 5, 5), 2);
    expect_error(gg_max_pool2d(x3, k2, NULL, NULL, NULL, false), GG_ERR_SHAPE, "gg_max_pool2d", "[3,5,5]");
    expect_error(gg_avg_pool2d(x3, k2, NULL, NULL, false, true), GG_ERR_SHAPE, "gg_avg_pool2d", "4-D");
    expect_error(gg_adaptive_avg_pool2d(x3, 2, 2), GG_ERR_SHAPE, "gg_adaptive_avg_pool2d", "[3,5,5]");
    expect_error(gg_global_avg_pool2d(x3), GG_ERR_SHAPE, "gg_global_avg_pool2d", "[3,5,5]");
    /* parameters */
    expect_error(gg_max_pool2d(x, NULL, NULL, NULL, NULL, false), GG_ERR_ARG, "gg_max_pool2d", "kernel size is NULL");
    expect_error(gg_max_pool2d(x, k0, NULL, NULL, NULL, false), GG_ERR_ARG, "gg_max_pool2d", "kernel size must be positive");
    expect_error(gg_avg_pool2d(x, k2, s0, NULL, false, true), GG_ERR_ARG, "gg_avg_pool2d", "stride must be positive");
    expect_error(gg_max_pool2d(x, k2, NULL, NULL, d0, false), GG_ERR_ARG, "gg_max_pool2d", "dilation must be positive");
    expect_error(gg_max_pool2d(x, k2, NULL, pneg, NULL, false), GG_ERR_ARG, "gg_max_pool2d", "non-negative");
    expect_error(gg_max_pool2d(x, k3, s1, p2, NULL, false), GG_ERR_ARG, "gg_max_pool2d",
                 "padding (2, 1) must be at most half the kernel size (3, 3) (x [2,3,5,5])");
    expect_error(gg_avg_pool2d(x, k2, s1, p2, false, true), GG_ERR_ARG, "gg_avg_pool2d", "at most half");
    expect_error(gg_max_pool2d(x, k6, NULL, NULL, NULL, false), GG_ERR_SHAPE, "gg_max_pool2d",
                 "output size 0x0 is too small: x [2,3,5,5], kernel (6, 6)");
    expect_error(gg_avg_pool2d(x, k6, NULL, NULL, false, true), GG_ERR_SHAPE, "gg_avg_pool2d", "too small");
    gt_assert_shape(gg_avg_pool2d(x, k6, NULL, NULL, true, true), 2, 3, 1, 1); /* ceil_mode keeps one window */
    expect_error(gg_adaptive_avg_pool2d(x, -1, 2), GG_ERR_ARG, "gg_adaptive_avg_pool2d", "-1x2 (x [2,3,5,5])");
    /* empty non-batch dims */
    gg_tensor *xc0 = gg_tensor_zeros(GG_SHAPE(2, 0, 5, 5)), *xh0 = gg_tensor_zeros(GG_SHAPE(2, 3, 0, 5));
    expect_error(gg_max_pool2d(xc0, k2, NULL, NULL, NULL, false), GG_ERR_SHAPE, "gg_max_pool2d", "[2,0,5,5]");
    expect_error(gg_avg_pool2d(xh0, k2, NULL, NULL, false, true), GG_ERR_SHAPE, "gg_avg_pool2d", "[2,3,0,5]");
    expect_error(gg_adaptive_avg_pool2d(xh0, 1, 1), GG_ERR_SHAPE, "gg_adaptive_avg_pool2d", "[2,3,0,5]");
    expect_error(gg_global_avg_pool2d(xh0), GG_ERR_SHAPE, "gg_global_avg_pool2d", "[2,3,0,5]");
    /* size limits, on expanded (stride 0) inputs that need no memory: a recorded max pool keeps int32
     * plane offsets; adaptive windows are computed in int64 from sizes below 2^31 */
    gg_tensor *one = gg_tensor_zeros(GG_SHAPE(1, 1, 1, 1));
    gg_tensor *huge = leaf(gg_tensor_expand(one, GG_SHAPE(1, 1, 46341, 46341)));
    expect_error(gg_max_pool2d(huge, k2, NULL, NULL, NULL, false), GG_ERR_UNSUPPORTED, "gg_max_pool2d",
                 "too large for the int32 indices kept for backward (x [1,1,46341,46341])");
    gg_tensor *wide = gg_tensor_expand(one, GG_SHAPE(1, 1, 1, 2147483648));
    expect_error(gg_adaptive_avg_pool2d(wide, 1, 1), GG_ERR_OVERFLOW, "gg_adaptive_avg_pool2d", "[1,1,1,2147483648]");
    expect_error(gg_adaptive_avg_pool2d(x, 1, 2147483648), GG_ERR_OVERFLOW, "gg_adaptive_avg_pool2d", "1x2147483648");
    gt_assert_shape(gg_adaptive_avg_pool2d(xc0, 2, 2), 2, 0, 2, 2); /* PyTorch allows C == 0 here */
    cr_assert_eq(gg_tape_num_tensors(NULL), before + 2, "failed calls must not allocate outputs");
    /* sticky NULL: the first message survives */
    gg_clear_error();
    gg_tensor *bad = gg_max_pool2d(x3, k2, NULL, NULL, NULL, false);
    cr_assert_null(gg_max_pool2d(bad, k2, NULL, NULL, NULL, false));
    cr_assert_null(gg_avg_pool2d(bad, k2, NULL, NULL, false, true));
    cr_assert_null(gg_adaptive_avg_pool2d(bad, 1, 1));
    cr_assert_null(gg_global_avg_pool2d(bad));
    gt_assert_error(GG_ERR_SHAPE, "gg_max_pool2d");
    gt_assert_msg_has("[3,5,5]");
    gg_clear_error();
    cr_assert_null(gg_global_avg_pool2d(NULL));
    cr_assert_neq(gg_last_status(), GG_OK);
    gg_tensor *all[] = {x, x3, xc0, xh0, one, huge, wide};
    for (int i = 0; i < 7; i++) gg_tensor_free(all[i]);
}
