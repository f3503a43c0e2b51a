/* gg_conv2d: hand-computed cases, gradient checks over a grid of geometries for every kernel, the fast
 * kernels against the reference on random odd shapes, PyTorch golden cases, and every error path. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gg_conv_kernels.h"
#include "gg_test_util.h"
#include "groupgrad.h"

/* Tiny tensors stay below every OpenMP threshold, so a second thread would only make BLIS split tiny
 * GEMMs (slow on a loaded machine): suites other than conv_fast run on one thread. */
static void one_thread(void) { gg_set_num_threads(1); }

static void teardown(void) {
    gg__conv2d_force_algo(GG_CONV_ALGO_AUTO);
    gg_tape_reset(NULL);
}

static gg_tensor *rand_tensor(int ndim, const int64_t *shape, uint64_t seed) {
    gg_rng rng;
    gg_rng_init(&rng, seed);
    gg_tensor *t = gg_tensor_empty(ndim, shape);
    cr_assert_not_null(t, "%s", gg_last_error());
    cr_assert_eq(gg_rand_uniform(t, -1.0f, 1.0f, &rng), GG_OK, "%s", gg_last_error());
    return t;
}
#define RAND(seed, ...) rand_tensor(GG_SHAPE(__VA_ARGS__), (seed))

static gg_tensor *leaf(gg_tensor *t) {
    cr_assert_eq(gg_requires_grad(t, true), GG_OK, "%s", gg_last_error());
    return t;
}

/* max |a - b| <= tol * max(1e-3, max |ref|) over n elements */
static void assert_close(const float *got, const float *ref, int64_t n, double tol, const char *what) {
    double scale = 1e-3, worst = 0;
    int64_t at = 0;
    for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs(ref[i]));
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)ref[i]);
        if (!(d <= worst)) worst = d, at = i;
    }
    cr_assert(worst <= tol * scale,
              "%s: element %lld is %.8g, reference %.8g (max |ref| %.4g, tolerance %.2g)", what,
              (long long)at, n ? (double)got[at] : 0.0, n ? (double)ref[at] : 0.0, scale, tol);
}

static void assert_tensor_close(const gg_tensor *got, const gg_tensor *ref, double tol, const char *what) {
    cr_assert_not_null(got, "%s: NULL (%s)", what, gg_last_error());
    cr_assert_not_null(ref, "%s: reference NULL", what);
    cr_assert(gg_tensor_same_shape(got, ref), "%s: shapes differ", what);
    gg_tensor *a = gg_tensor_contiguous(got), *b = gg_tensor_contiguous(ref);
    assert_close(gg_tensor_data(a), gg_tensor_data(b), a->numel, tol, what);
    gg_tensor_free(a);
    gg_tensor_free(b);
}

/* Backward of sum(y): a seed of ones. */
static int backward_sum(gg_tensor *y) {
    if (!y) return gg_last_status();
    gg_tensor *ones = gg_tensor_ones(y->ndim, y->shape);
    int st = gg_backward_ex(y, ones, false);
    gg_tensor_free(ones);
    return st;
}

/* A forced algorithm that does not apply to a shape (xsmm on C/G or K/G not a multiple of 16) falls back
 * to the plan's choice. */
static const gg_conv_algo ALGOS[] = {GG_CONV_ALGO_REF,  GG_CONV_ALGO_GEMM,  GG_CONV_ALGO_DIRECT,
                                     GG_CONV_ALGO_XSMM, GG_CONV_ALGO_LANES, GG_CONV_ALGO_MASKED};
#define N_ALGOS 6
static const char *const ALGO_NAMES[] = {"auto", "ref", "gemm", "direct", "xsmm", "lanes", "masked"};

/* ---- hand-computed ---- */

/* x = [[0,1,2],[3,4,5],[6,7,8]], w = [[1,2],[3,4]] */
static void hand_case(const gg_conv2d_params *p, bool bias, int64_t ho, int64_t wo, const float *expected) {
    for (int a = 0; a < 3; a++) {
        gg__conv2d_force_algo(ALGOS[a]);
        gg_tensor *x = GT_IOTA(1, 1, 3, 3);
        gg_tensor *w = gg_tensor_from_data(GG_SHAPE(1, 1, 2, 2), (const float[]){1, 2, 3, 4});
        gg_tensor *b = bias ? gg_tensor_full(GG_SHAPE(1), 0.5f) : NULL;
        gg_tensor *y = gg_conv2d(x, w, b, p);
        gt_assert_shape(y, 1, 1, ho, wo);
        for (int64_t i = 0; i < ho * wo; i++)
            cr_assert_float_eq(gg_tensor_data(y)[i], expected[i] + (bias ? 0.5f : 0.0f), 1e-6,
                               "%s: element %lld is %g", ALGO_NAMES[ALGOS[a]], (long long)i,
                               (double)gg_tensor_data(y)[i]);
        gg_tensor_free(x);
        gg_tensor_free(w);
        gg_tensor_free(b);
        gg_tape_reset(NULL);
    }
}

Test(conv_hand, valid, .init = one_thread, .fini = teardown) {
    gg_conv2d_params p = gg_conv2d_default();
    hand_case(&p, false, 2, 2, (const float[]){27, 37, 57, 67});
    hand_case(&p, true, 2, 2, (const float[]){27, 37, 57, 67});
    hand_case(NULL, false, 2, 2, (const float[]){27, 37, 57, 67});
}

Test(conv_hand, pad1_stride2, .init = one_thread, .fini = teardown) {
    gg_conv2d_params p = gg_conv2d_make(2, 1, 1, 1);
    hand_case(&p, false, 2, 2, (const float[]){0, 11, 30, 67});
}

Test(conv_hand, dilation2, .init = one_thread, .fini = teardown) {
    gg_conv2d_params p = gg_conv2d_make(1, 0, 2, 1);
    hand_case(&p, true, 1, 1, (const float[]){54});
}

Test(conv_hand, same_and_asymmetric, .init = one_thread, .fini = teardown) {
    /* 'same' with a 2x2 kernel pads one row at the bottom and one column on the right */
    gg_conv2d_params p = gg_conv2d_default();
    p.pad_same = true;
    const float same[] = {27, 37, 17, 57, 67, 29, 20, 23, 8};
    hand_case(&p, false, 3, 3, same);
    gg_conv2d_params q = gg_conv2d_default();
    q.pad[1] = 1, q.pad[3] = 1; /* the same thing spelled as explicit padding */
    hand_case(&q, true, 3, 3, same);
    /* top 1, left 1 instead: the first row and column see the padding */
    gg_conv2d_params r = gg_conv2d_default();
    r.pad[0] = 1, r.pad[2] = 1;
    hand_case(&r, false, 3, 3, (const float[]){0, 4, 11, 12, 27, 37, 30, 57, 67});
}

Test(conv_hand, backward, .init = one_thread, .fini = teardown) {
    for (int a = 0; a < 3; a++) {
        gg__conv2d_force_algo(ALGOS[a]);
        gg_tensor *x = leaf(GT_IOTA(1, 1, 3, 3));
        gg_tensor *w = leaf(gg_tensor_from_data(GG_SHAPE(1, 1, 2, 2), (const float[]){1, 2, 3, 4}));
        gg_tensor *b = leaf(gg_tensor_zeros(GG_SHAPE(1)));
        gg_tensor *y = gg_conv2d(x, w, b, NULL);
        cr_assert_eq(backward_sum(y), GG_OK, "%s", gg_last_error());
        /* d sum(y) / dx[i,j] = sum of the weights whose window covers (i,j); dw[r,t] = window sums of x */
        gt_assert_list(x->grad, 1, 3, 2, 4, 10, 6, 3, 7, 4);
        gt_assert_list(w->grad, 8, 12, 20, 24);
        gt_assert_list(b->grad, 4);
        /* a second pass accumulates */
        y = gg_conv2d(x, w, b, NULL);
        cr_assert_eq(backward_sum(y), GG_OK, "%s", gg_last_error());
        gt_assert_list(w->grad, 16, 24, 40, 48);
        gg_tensor_free(x);
        gg_tensor_free(w);
        gg_tensor_free(b);
        gg_tape_reset(NULL);
    }
}

Test(conv_hand, only_needed_gradients, .init = one_thread, .fini = teardown) {
    gg_tensor *x = GT_IOTA(1, 2, 3, 3), *w = RAND(3, 2, 2, 2, 2), *b = RAND(4, 2);
    leaf(x);
    cr_assert_eq(backward_sum(gg_conv2d(x, w, b, NULL)), GG_OK, "%s", gg_last_error());
    cr_assert_not_null(x->grad);
    cr_assert_null(w->grad);
    cr_assert_null(b->grad);
    gg_tape_reset(NULL);
    gg_requires_grad(x, false);
    leaf(w);
    cr_assert_eq(backward_sum(gg_conv2d(x, w, b, NULL)), GG_OK, "%s", gg_last_error());
    cr_assert_not_null(w->grad);
    cr_assert_null(b->grad);
    gg_tape_reset(NULL);
    /* nothing requires grad: no node */
    gg_requires_grad(w, false);
    gg_tensor *y = gg_conv2d(x, w, b, NULL);
    cr_assert_not_null(y);
    cr_assert_not(y->requires_grad);
    cr_assert_eq(gg_tape_num_nodes(NULL), 0);
    gg_tensor_free(x);
    gg_tensor_free(w);
    gg_tensor_free(b);
}

Test(conv_hand, empty_batch, .init = one_thread, .fini = teardown) {
    gg_tensor *x = leaf(gg_tensor_zeros(GG_SHAPE(0, 4, 5, 5))), *w = leaf(RAND(1, 6, 2, 3, 3));
    gg_conv2d_params p = gg_conv2d_make(1, 1, 1, 2);
    gg_tensor *y = gg_conv2d(x, w, NULL, &p);
    gt_assert_shape(y, 0, 6, 5, 5);
    cr_assert_eq(backward_sum(y), GG_OK, "%s", gg_last_error());
    gt_assert_all(w->grad, 0.0f);
    gg_tensor_free(x);
    gg_tensor_free(w);
}

/* ---- gradient checks over a grid ---- */

typedef struct grad_case {
    int groups, stride, dil, pad_mode, ksize, K, C;
    gg_conv_algo algo;
} grad_case;

enum { PAD_0, PAD_1, PAD_ASYM, PAD_SAME, PAD_COUNT };
static const char *const PAD_NAMES[] = {"0", "1", "asym(0,1,2,1)", "same"};

static gg_conv2d_params case_params(const grad_case *c) {
    gg_conv2d_params p = gg_conv2d_make(c->stride, c->pad_mode == PAD_1, c->dil, c->groups);
    if (c->pad_mode == PAD_ASYM) p.pad[0] = 0, p.pad[1] = 1, p.pad[2] = 2, p.pad[3] = 1;
    if (c->pad_mode == PAD_SAME) p.pad_same = true;
    return p;
}

#define GC_N 2
#define GC_H 5
#define GC_W 7

static bool case_valid(const grad_case *c) {
    if (c->pad_mode == PAD_SAME && c->stride != 1) return false;
    gg_conv2d_params p = case_params(c);
    int eff = c->dil * (c->ksize - 1) + 1;
    int ph = p.pad_same ? eff - 1 : p.pad[0] + p.pad[1], pw = p.pad_same ? eff - 1 : p.pad[2] + p.pad[3];
    return GC_H + ph >= eff && GC_W + pw >= eff;
}

static void free_cases(struct criterion_test_params *crp) { cr_free(crp->params); }

ParameterizedTestParameters(conv_grad, grid) {
    static const int groups[] = {1, 2, 4}, strides[] = {1, 2}, dils[] = {1, 2}, ks[] = {1, 3, 5};
    size_t cap = 3 * 2 * 2 * PAD_COUNT * 3 * 3 + 16, n = 0;
    grad_case *cases = cr_malloc(cap * sizeof *cases);
    for (int gi = 0; gi < 3; gi++)
        for (int si = 0; si < 2; si++)
            for (int di = 0; di < 2; di++)
                for (int pm = 0; pm < PAD_COUNT; pm++)
                    for (int ki = 0; ki < 3; ki++)
                        for (int a = 0; a < 3; a++) {
                            grad_case c = {groups[gi], strides[si], dils[di], pm, ks[ki], 4, 4, ALGOS[a]};
                            if (ks[ki] == 1 && dils[di] == 2) continue; /* same as dilation 1 */
                            /* the reference on a thinned grid; the fast kernels everywhere */
                            if (ALGOS[a] == GG_CONV_ALGO_REF && (gi + si + di + pm + ki) % 3) continue;
                            if (case_valid(&c)) cases[n++] = c;
                        }
    /* depthwise with channel multiplier 2 (C 2, K 4, G 2) */
    const grad_case extra[] = {{2, 1, 1, PAD_1, 3, 4, 2, GG_CONV_ALGO_DIRECT},
                               {2, 2, 2, PAD_ASYM, 3, 4, 2, GG_CONV_ALGO_DIRECT},
                               {2, 1, 1, PAD_SAME, 5, 4, 2, GG_CONV_ALGO_DIRECT},
                               {2, 2, 1, PAD_1, 3, 4, 2, GG_CONV_ALGO_GEMM},
                               {1, 1, 1, PAD_1, 3, 4, 1, GG_CONV_ALGO_DIRECT},
                               /* libxsmm needs 16 channels per group: dense, grouped, strided (its data
                                * gradient then falls back), dilated and 'same' with a 5x5 kernel */
                               {1, 1, 1, PAD_1, 3, 16, 16, GG_CONV_ALGO_XSMM},
                               {2, 2, 1, PAD_ASYM, 3, 32, 32, GG_CONV_ALGO_XSMM},
                               {1, 1, 2, PAD_SAME, 5, 16, 16, GG_CONV_ALGO_XSMM},
                               {1, 1, 1, PAD_0, 1, 16, 32, GG_CONV_ALGO_XSMM},
                               /* the lane kernel: 16 channels in groups of 1 (depthwise), 2 and 8 */
                               {16, 1, 1, PAD_1, 3, 16, 16, GG_CONV_ALGO_LANES},
                               {8, 2, 2, PAD_ASYM, 3, 16, 16, GG_CONV_ALGO_LANES},
                               {2, 1, 1, PAD_SAME, 5, 16, 16, GG_CONV_ALGO_LANES},
                               /* the masked-plane kernel: 'same' stride-1 outputs, depthwise with a
                                * multiplier, groups of 2 -> 1, dilation 2 */
                               {2, 1, 1, PAD_1, 3, 4, 2, GG_CONV_ALGO_MASKED},
                               {2, 1, 1, PAD_1, 3, 2, 4, GG_CONV_ALGO_MASKED},
                               {2, 1, 2, PAD_SAME, 3, 4, 4, GG_CONV_ALGO_MASKED},
                               {4, 1, 1, PAD_SAME, 5, 4, 4, GG_CONV_ALGO_MASKED}};
    for (size_t i = 0; i < sizeof extra / sizeof *extra; i++) cases[n++] = extra[i];
    return cr_make_param_array(grad_case, cases, n, free_cases);
}

typedef struct conv_ctx {
    gg_conv2d_params p;
} conv_ctx;

static gg_tensor *conv_fn(gg_tensor *const *in, void *ctx) {
    return gg_conv2d(in[0], in[1], in[2], &((conv_ctx *)ctx)->p);
}

static void run_gradcheck(gg_tensor *x, gg_tensor *w, gg_tensor *b, const gg_conv2d_params *p,
                          const char *what) {
    conv_ctx ctx = {*p};
    gg_tensor *in[3] = {x, w, b};
    /* conv is linear in each input: central differences are exact up to rounding, so a large step only
     * lowers the rounding noise */
    gg_gradcheck_opts o = {.eps = 0.05, .atol = 1e-3, .rtol = 1e-3, .seed = 7};
    gg_gradcheck_report rep;
    char buf[256];
    int st = gg_gradcheck(conv_fn, &ctx, 3, in, &o, &rep);
    cr_assert_eq(st, GG_OK, "%s: gradcheck failed to run: %s", what, gg_last_error());
    cr_assert(rep.passed, "%s: %s", what, gg_gradcheck_describe(&rep, buf, sizeof buf));
}

ParameterizedTest(grad_case *c, conv_grad, grid, .init = one_thread, .fini = teardown) {
    gg__conv2d_force_algo(c->algo);
    gg_conv2d_params p = case_params(c);
    gg_tensor *x = leaf(RAND(11, GC_N, c->C, GC_H, GC_W));
    gg_tensor *w = leaf(RAND(12, c->K, c->C / c->groups, c->ksize, c->ksize));
    gg_tensor *b = leaf(RAND(13, c->K));
    char what[160];
    snprintf(what, sizeof what, "%s: C %d K %d groups %d stride %d dilation %d pad %s kernel %dx%d",
             ALGO_NAMES[c->algo], c->C, c->K, c->groups, c->stride, c->dil, PAD_NAMES[c->pad_mode], c->ksize,
             c->ksize);
    run_gradcheck(x, w, b, &p, what);
    gg_tensor_free(x);
    gg_tensor_free(w);
    gg_tensor_free(b);
}

Test(conv_grad, non_contiguous_inputs, .init = one_thread, .fini = teardown) {
    for (int a = 0; a < 2; a++) {
        gg__conv2d_force_algo(ALGOS[a]);
        /* x [2,4,5,6] as the transpose of a [2,4,6,5] base; w [4,2,3,2] as the transpose of [4,2,2,3];
         * the bias a strided slice */
        gg_tensor *xb = RAND(21, 2, 4, 6, 5), *wb = RAND(22, 4, 2, 2, 3), *bb = RAND(23, 8);
        gg_tensor *x = leaf(gg_tensor_transpose(xb, 2, 3)), *w = leaf(gg_tensor_transpose(wb, 2, 3));
        gg_tensor *b = leaf(gg_tensor_slice(bb, 0, 0, 8, 2));
        cr_assert_not(gg_tensor_is_contiguous(x));
        gg_conv2d_params p = gg_conv2d_make(1, 1, 1, 2);
        run_gradcheck(x, w, b, &p, ALGO_NAMES[ALGOS[a]]);
        /* and the forward agrees with contiguous copies */
        gg_tensor *xc = gg_tensor_copy(x), *wc = gg_tensor_copy(w), *bc = gg_tensor_copy(b);
        assert_tensor_close(gg_conv2d(x, w, b, &p), gg_conv2d(xc, wc, bc, &p), 1e-6, "strided forward");
        gg_tensor *all[] = {xb, wb, bb, x, w, b, xc, wc, bc};
        for (int i = 0; i < 9; i++) gg_tensor_free(all[i]);
        gg_tape_reset(NULL);
    }
}

/* ---- fast kernels against the reference ---- */

typedef struct fast_case {
    int64_t N, C, H, W, K, R, S, G, sh, sw, pt, pb, pl, pr, dh, dw;
} fast_case;

static gg_conv2d_shape make_shape(const fast_case *f) {
    gg_conv2d_shape s = {.N = f->N,
                         .C = f->C,
                         .H = f->H,
                         .W = f->W,
                         .K = f->K,
                         .R = f->R,
                         .S = f->S,
                         .G = f->G,
                         .str_h = f->sh,
                         .str_w = f->sw,
                         .pad_t = f->pt,
                         .pad_l = f->pl,
                         .dil_h = f->dh,
                         .dil_w = f->dw};
    s.Ho = (f->H + f->pt + f->pb - f->dh * (f->R - 1) - 1) / f->sh + 1;
    s.Wo = (f->W + f->pl + f->pr - f->dw * (f->S - 1) - 1) / f->sw + 1;
    return s;
}

static float *rand_buf(int64_t n, uint64_t seed) {
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    gg_tensor *t = gg_tensor_from_buffer(GG_SHAPE(n), p);
    gg_rng rng;
    gg_rng_init(&rng, seed);
    gg_rand_uniform(t, -1.0f, 1.0f, &rng);
    gg_tensor_free(t);
    return p;
}

/* Accumulating kernels start from a random buffer, so "adds into" is checked too. */
static void check_fast(const fast_case *f, const char *name) {
    gg_conv2d_shape s = make_shape(f);
    cr_assert(s.Ho > 0 && s.Wo > 0, "%s: bad test shape", name);
    const int64_t nx = s.N * s.C * s.H * s.W, nw = s.K * (s.C / s.G) * s.R * s.S,
                  ny = s.N * s.K * s.Ho * s.Wo;
    float *x = rand_buf(nx, 1), *w = rand_buf(nw, 2), *b = rand_buf(s.K, 3), *dy = rand_buf(ny, 4);
    float *y_ref = malloc(ny * sizeof(float)), *y = malloc(ny * sizeof(float));
    float *dx_ref = rand_buf(nx, 5), *dx = rand_buf(nx, 5), *dw_ref = rand_buf(nw, 6), *dw = rand_buf(nw, 6);
    float *db_ref = rand_buf(s.K, 7), *db = rand_buf(s.K, 7);
    gg__conv2d_fwd_ref(&s, x, w, b, y_ref);
    gg__conv2d_bwd_data_ref(&s, dy, w, dx_ref);
    gg__conv2d_bwd_weight_ref(&s, x, dy, dw_ref);
    gg__conv2d_bwd_bias_ref(&s, dy, db_ref);
    char what[200];

    gg__conv2d_bwd_bias(&s, dy, db);
    snprintf(what, sizeof what, "%s: bias gradient", name);
    assert_close(db, db_ref, s.K, 1e-5, what);

    /* one sample per GEMM, chunks with a short last one, the whole batch, and the plan's choice */
    const int64_t nbs[] = {1, 2, s.N, gg__conv2d_gemm_batch(&s)};
    for (int i = 0; i < 4; i++) {
        const int64_t nb = nbs[i] > s.N ? s.N : nbs[i];
        bool seen = false;
        for (int j = 0; j < i; j++) seen |= nbs[j] == nb;
        if (seen) continue;
        void *ws = gg_alloc(gg__conv2d_gemm_workspace(&s, nb));
        cr_assert_not_null(ws);
        float *dx1 = rand_buf(nx, 5), *dw1 = rand_buf(nw, 6);
        gg__conv2d_fwd_gemm(&s, nb, x, w, b, y, ws);
        snprintf(what, sizeof what, "%s: gemm nb %lld forward", name, (long long)nb);
        assert_close(y, y_ref, ny, 1e-4, what);
        /* dx alone, dw alone, then both in one pass */
        gg__conv2d_bwd_gemm(&s, nb, x, w, dy, dx1, NULL, ws);
        snprintf(what, sizeof what, "%s: gemm nb %lld dx", name, (long long)nb);
        assert_close(dx1, dx_ref, nx, 1e-4, what);
        gg__conv2d_bwd_gemm(&s, nb, x, w, dy, NULL, dw1, ws);
        snprintf(what, sizeof what, "%s: gemm nb %lld dw", name, (long long)nb);
        assert_close(dw1, dw_ref, nw, 1e-4, what);
        free(dx1);
        free(dw1);
        dx1 = rand_buf(nx, 5), dw1 = rand_buf(nw, 6);
        gg__conv2d_bwd_gemm(&s, nb, x, w, dy, dx1, dw1, ws);
        snprintf(what, sizeof what, "%s: gemm nb %lld dx+dw", name, (long long)nb);
        assert_close(dx1, dx_ref, nx, 1e-4, what);
        assert_close(dw1, dw_ref, nw, 1e-4, what);
        free(dx1);
        free(dw1);
        gg_free(ws);
    }
    /* the direct kernels on every shape they support (any group size and stride up to 4x4) */
    cr_assert(gg__conv2d_direct_supports(&s), "%s: direct kernel should support this shape", name);
    void *ws = gg_alloc(gg__conv2d_direct_workspace(&s));
    cr_assert_not_null(ws);
    gg__conv2d_fwd_direct(&s, x, w, b, y, ws);
    snprintf(what, sizeof what, "%s: direct forward", name);
    assert_close(y, y_ref, ny, 1e-4, what);
    gg__conv2d_bwd_data_direct(&s, dy, w, dx, ws);
    snprintf(what, sizeof what, "%s: direct dx", name);
    assert_close(dx, dx_ref, nx, 1e-4, what);
    gg__conv2d_bwd_weight_direct(&s, x, dy, dw, ws);
    snprintf(what, sizeof what, "%s: direct dw", name);
    assert_close(dw, dw_ref, nw, 1e-4, what);
    gg_free(ws);
    /* libxsmm's batch-reduce kernels where they apply (C/G, K/G multiples of 16; dx needs stride 1) */
    if (gg__conv2d_xsmm_supports(&s, false)) {
        float *dx2 = rand_buf(nx, 5), *dw2 = rand_buf(nw, 6);
        ws = gg_alloc(gg__conv2d_xsmm_workspace(&s));
        cr_assert_not_null(ws);
        cr_assert(gg__conv2d_fwd_xsmm(&s, x, w, b, y, ws), "%s: libxsmm gave no forward kernel", name);
        snprintf(what, sizeof what, "%s: xsmm forward", name);
        assert_close(y, y_ref, ny, 1e-4, what);
        const bool data = gg__conv2d_xsmm_supports(&s, true);
        cr_assert_eq(gg__conv2d_bwd_data_xsmm(&s, dy, w, dx2, ws), data, "%s: xsmm dx", name);
        if (data) {
            snprintf(what, sizeof what, "%s: xsmm dx", name);
            assert_close(dx2, dx_ref, nx, 1e-4, what);
        }
        cr_assert(gg__conv2d_bwd_weight_xsmm(&s, x, dy, dw2, ws), "%s: libxsmm gave no dw kernel", name);
        snprintf(what, sizeof what, "%s: xsmm dw", name);
        assert_close(dw2, dw_ref, nw, 1e-4, what);
        gg_free(ws);
        free(dx2);
        free(dw2);
    } else {
        cr_assert_not(gg__conv2d_fwd_xsmm(&s, x, w, b, y, NULL), "%s: xsmm accepted a shape it cannot do",
                      name);
    }
    /* the channel-lane kernel for small groups (C/G == K/G <= 8, C % 16 == 0; dx needs stride 1) */
    if (gg__conv2d_lanes_supports(&s, false)) {
        float *dx2 = rand_buf(nx, 5), *dw2 = rand_buf(nw, 6);
        ws = gg_alloc(gg__conv2d_lanes_workspace(&s));
        cr_assert_not_null(ws);
        cr_assert(gg__conv2d_fwd_lanes(&s, x, w, b, y, ws));
        snprintf(what, sizeof what, "%s: lanes forward", name);
        assert_close(y, y_ref, ny, 1e-4, what);
        const bool data = gg__conv2d_lanes_supports(&s, true);
        cr_assert_eq(gg__conv2d_bwd_data_lanes(&s, dy, w, dx2, ws), data, "%s: lanes dx", name);
        if (data) {
            snprintf(what, sizeof what, "%s: lanes dx", name);
            assert_close(dx2, dx_ref, nx, 1e-4, what);
        }
        cr_assert(gg__conv2d_bwd_weight_lanes(&s, x, dy, dw2, ws));
        snprintf(what, sizeof what, "%s: lanes dw", name);
        assert_close(dw2, dw_ref, nw, 1e-4, what);
        gg_free(ws);
        free(dx2);
        free(dw2);
    } else {
        cr_assert_not(gg__conv2d_fwd_lanes(&s, x, w, b, y, NULL), "%s: lanes accepted a shape it cannot do",
                      name);
    }
    /* the masked-plane kernel (stride 1, same-size outputs, C/G and K/G <= 16; AVX-512 builds) */
    if (gg__conv2d_masked_supports(&s)) {
        float *dx2 = rand_buf(nx, 5), *dw2 = rand_buf(nw, 6);
        ws = gg_alloc(gg__conv2d_masked_workspace(&s));
        cr_assert_not_null(ws);
        cr_assert(gg__conv2d_fwd_masked(&s, x, w, b, y, ws));
        snprintf(what, sizeof what, "%s: masked forward", name);
        assert_close(y, y_ref, ny, 1e-4, what);
        cr_assert(gg__conv2d_bwd_data_masked(&s, dy, w, dx2, ws));
        snprintf(what, sizeof what, "%s: masked dx", name);
        assert_close(dx2, dx_ref, nx, 1e-4, what);
        cr_assert(gg__conv2d_bwd_weight_masked(&s, x, dy, dw2, ws));
        snprintf(what, sizeof what, "%s: masked dw", name);
        assert_close(dw2, dw_ref, nw, 1e-4, what);
        gg_free(ws);
        free(dx2);
        free(dw2);
    } else {
        cr_assert_not(gg__conv2d_fwd_masked(&s, x, w, b, y, NULL), "%s: masked accepted a shape it cannot do",
                      name);
    }
    float *all[] = {x, w, b, dy, y_ref, y, dx_ref, dx, dw_ref, dw, db_ref, db};
    for (int i = 0; i < 12; i++) free(all[i]);
}

Test(conv_fast, fixed_shapes) {
    /* N C H W K R S G sh sw pt pb pl pr dh dw */
    const fast_case cases[] = {
        {3, 24, 13, 11, 20, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1}, /* dense 3x3 pad 1, odd sizes */
        {2, 20, 15, 9, 28, 3, 3, 1, 2, 2, 1, 1, 1, 1, 1, 1},  /* stride 2 */
        {2, 12, 14, 13, 12, 3, 3, 2, 1, 1, 2, 2, 2, 2, 2, 2}, /* groups 2, dilation 2 */
        {3, 20, 9, 11, 36, 5, 5, 4, 1, 2, 2, 1, 0, 3, 1, 1},  /* groups 4, 5x5, asymmetric */
        {2, 24, 10, 7, 40, 1, 1, 8, 1, 1, 0, 0, 0, 0, 1, 1},  /* pointwise, groups 8 */
        {1, 18, 17, 19, 30, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1}, /* pointwise, batch 1 */
        {1, 10, 9, 12, 6, 1, 1, 2, 2, 2, 0, 0, 0, 0, 1, 1},   /* strided 1x1 */
        {2, 13, 12, 9, 13, 3, 3, 13, 1, 1, 1, 1, 1, 1, 1, 1}, /* depthwise */
        {3, 7, 11, 10, 21, 5, 5, 7, 2, 2, 2, 2, 2, 2, 1, 1},  /* depthwise, multiplier 3, stride 2 */
        {2, 6, 16, 16, 6, 3, 3, 6, 1, 1, 2, 2, 2, 2, 2, 2},   /* depthwise, dilation 2 */
        {2, 3, 12, 13, 8, 7, 5, 1, 3, 2, 3, 2, 1, 4, 1, 2},   /* rectangular everything */
        {1, 30, 8, 8, 62, 3, 3, 2, 1, 1, 1, 1, 1, 1, 1, 1},   /* batch 1, 8x8 */
        {2, 5, 4, 3, 7, 3, 3, 1, 1, 1, 0, 0, 0, 0, 1, 1},     /* output 2x1 */
        {5, 4, 14, 14, 4, 3, 3, 2, 1, 1, 1, 1, 1, 1, 1, 1}, /* direct dw stacks 4 samples: short last chunk */
        {5, 4, 20, 20, 6, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1}, /* same without junk rows (1x1): 3+2 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char name[32];
        snprintf(name, sizeof name, "fixed case %zu", i);
        check_fast(&cases[i], name);
    }
}

Test(conv_fast, random_shapes) {
    gt_lcg g;
    gt_lcg_seed(&g, 2024);
    static const int64_t group_choices[] = {1, 2, 4, 8, 0 /* depthwise */};
    for (int it = 0; it < 30; it++) {
        fast_case f;
        int64_t G = group_choices[gt_lcg_range(&g, 0, 4)];
        int64_t cg = gt_lcg_range(&g, 1, 5), kg = gt_lcg_range(&g, 1, 5);
        if (G == 0) G = gt_lcg_range(&g, 2, 9), cg = 1;
        f.G = G, f.C = G * cg, f.K = G * kg;
        f.N = gt_lcg_range(&g, 1, 3);
        f.R = (int64_t[]){1, 3, 5}[gt_lcg_range(&g, 0, 2)];
        f.S = gt_lcg_range(&g, 0, 3) ? f.R : gt_lcg_range(&g, 1, 4);
        f.sh = gt_lcg_range(&g, 1, 2), f.sw = gt_lcg_range(&g, 1, 2);
        f.dh = gt_lcg_range(&g, 1, 2), f.dw = gt_lcg_range(&g, 1, 2);
        f.pt = gt_lcg_range(&g, 0, 2), f.pb = gt_lcg_range(&g, 0, 2);
        f.pl = gt_lcg_range(&g, 0, 2), f.pr = gt_lcg_range(&g, 0, 2);
        f.H = (f.dh * (f.R - 1) + gt_lcg_range(&g, 1, 9)) | 1; /* odd and large enough */
        f.W = (f.dw * (f.S - 1) + gt_lcg_range(&g, 1, 9)) | 1;
        char name[200];
        snprintf(name, sizeof name,
                 "random %d: N %lld C %lld H %lld W %lld K %lld R %lld S %lld G %lld stride %lldx%lld "
                 "pad %lld,%lld,%lld,%lld dil %lldx%lld",
                 it, (long long)f.N, (long long)f.C, (long long)f.H, (long long)f.W, (long long)f.K,
                 (long long)f.R, (long long)f.S, (long long)f.G, (long long)f.sh, (long long)f.sw,
                 (long long)f.pt, (long long)f.pb, (long long)f.pl, (long long)f.pr, (long long)f.dh,
                 (long long)f.dw);
        check_fast(&f, name);
    }
}

Test(conv_fast, xsmm_shapes) {
    /* N C H W K R S G sh sw pt pb pl pr dh dw */
    const fast_case cases[] = {
        {3, 32, 13, 11, 48, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1}, /* blocks of 32 in, 16 out; odd sizes */
        {1, 32, 9, 35, 48, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},  /* rows wider than a 16-column tile */
        {2, 64, 9, 9, 32, 3, 3, 2, 2, 2, 1, 1, 1, 1, 1, 1},   /* groups 2, stride 2 (no dx kernel) */
        {1, 96, 10, 9, 48, 3, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2},  /* groups 3 of 32 -> 16, dilation 2 */
        {3, 16, 9, 11, 16, 5, 5, 1, 1, 1, 2, 1, 0, 3, 1, 1},  /* 5x5, asymmetric padding */
        {2, 64, 6, 7, 128, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1},  /* pointwise */
        {2, 32, 6, 7, 16, 3, 3, 1, 1, 1, 3, 3, 3, 3, 1, 1},   /* padding wider than the kernel */
        {1, 16, 8, 8, 16, 7, 5, 1, 3, 2, 3, 2, 1, 4, 1, 2},   /* rectangular everything */
        {5, 16, 8, 8, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},   /* one (k, c) block pair: dw split by samples */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char name[32];
        snprintf(name, sizeof name, "xsmm case %zu", i);
        check_fast(&cases[i], name);
    }
}

Test(conv_fast, lanes_shapes) {
    /* N C H W K R S G sh sw pt pb pl pr dh dw */
    const fast_case cases[] = {
        {3, 32, 9, 11, 32, 3, 3, 32, 1, 1, 1, 1, 1, 1, 1, 1},  /* depthwise, odd sizes */
        {2, 64, 8, 8, 64, 3, 3, 8, 1, 1, 1, 1, 1, 1, 1, 1},    /* groups of 8 on 8x8 planes */
        {2, 32, 19, 21, 32, 3, 3, 16, 1, 1, 1, 1, 1, 1, 1, 1}, /* groups of 2, rows wider than a tile */
        {2, 16, 11, 9, 16, 5, 5, 4, 1, 1, 2, 1, 0, 3, 1, 1},   /* groups of 4, 5x5, asymmetric padding */
        {2, 16, 13, 12, 16, 7, 7, 16, 1, 1, 3, 3, 3, 3, 1, 1}, /* 7x7 depthwise */
        {2, 32, 12, 15, 32, 3, 3, 4, 2, 2, 1, 1, 1, 1, 1, 1},  /* stride 2 (no dx kernel) */
        {2, 16, 14, 13, 16, 3, 3, 8, 1, 1, 2, 2, 2, 2, 2, 2},  /* dilation 2 (the generic blocks) */
        {1, 16, 9, 10, 16, 3, 2, 2, 1, 1, 1, 0, 0, 1, 1, 1},   /* even kernel width (generic blocks) */
        {2, 48, 6, 5, 48, 1, 1, 48, 1, 1, 0, 0, 0, 0, 1, 1},   /* 1x1 depthwise (a scale) */
        {3, 16, 7, 9, 16, 3, 3, 4, 2, 1, 1, 1, 1, 1, 1, 1},    /* vertical stride only */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char name[32];
        snprintf(name, sizeof name, "lanes case %zu", i);
        check_fast(&cases[i], name);
    }
}

Test(conv_fast, masked_shapes) {
    /* N C H W K R S G sh sw pt pb pl pr dh dw */
    const fast_case cases[] = {
        {3, 13, 9, 11, 13, 3, 3, 13, 1, 1, 1, 1, 1, 1, 1, 1},  /* depthwise, odd sizes, 99-pixel planes */
        {2, 12, 8, 8, 24, 3, 3, 12, 1, 1, 1, 1, 1, 1, 1, 1},   /* depthwise, multiplier 2 */
        {2, 24, 7, 6, 12, 3, 3, 12, 1, 1, 1, 1, 1, 1, 1, 1},   /* 2 channels in, 1 out per group */
        {2, 40, 16, 16, 40, 3, 3, 5, 1, 1, 1, 1, 1, 1, 1, 1},  /* groups of 8: two output blocks of 4 */
        {2, 12, 10, 9, 18, 5, 5, 2, 1, 1, 2, 2, 2, 2, 1, 1},   /* 6 -> 9 per group (a short block), 5x5 */
        {2, 6, 12, 13, 6, 3, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2},    /* dilation 2 */
        {1, 8, 9, 10, 8, 3, 2, 4, 1, 1, 1, 1, 0, 1, 1, 1},     /* even kernel width, asymmetric 'same' */
        {1, 16, 65, 64, 16, 3, 3, 16, 1, 1, 1, 1, 1, 1, 1, 1}, /* 4160 pixels: too large (no kernel) */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char name[32];
        snprintf(name, sizeof name, "masked case %zu", i);
        check_fast(&cases[i], name);
    }
}

/* Kernels that split a reduction over threads add the parts in a fixed order: repeated runs with the
 * same thread count give the same bits (the suite runs with 2 threads). */
Test(conv_fast, weight_gradients_are_deterministic) {
    const fast_case cases[] = {
        {8, 32, 16, 16, 32, 3, 3, 32, 1, 1, 1, 1, 1, 1, 1, 1}, /* direct: private per-thread sums */
        {5, 16, 12, 12, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},  /* xsmm: one block pair, samples split */
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        gg_conv2d_shape s = make_shape(&cases[c]);
        const int64_t nx = s.N * s.C * s.H * s.W, nw = s.K * (s.C / s.G) * s.R * s.S,
                      ny = s.N * s.K * s.Ho * s.Wo;
        float *x = rand_buf(nx, 1), *dy = rand_buf(ny, 2), *dw0 = calloc((size_t)nw, sizeof(float));
        float *dw1 = calloc((size_t)nw, sizeof(float));
        const size_t bytes = c == 0 ? gg__conv2d_direct_workspace(&s) : gg__conv2d_xsmm_workspace(&s);
        void *ws = gg_alloc(bytes);
        cr_assert_not_null(ws);
        for (int run = 0; run < 6; run++) {
            float *d = run == 0 ? dw0 : dw1;
            memset(d, 0, (size_t)nw * sizeof(float));
            if (c == 0) gg__conv2d_bwd_weight_direct(&s, x, dy, d, ws);
            else cr_assert(gg__conv2d_bwd_weight_xsmm(&s, x, dy, d, ws));
            if (run)
                cr_assert(memcmp(dw0, dw1, (size_t)nw * sizeof(float)) == 0, "case %zu: run %d differs", c,
                          run);
        }
        gg_free(ws);
        free(x), free(dy), free(dw0), free(dw1);
    }
}

Test(conv_fast, xsmm_random_shapes) {
    gt_lcg g;
    gt_lcg_seed(&g, 77);
    for (int it = 0; it < 16; it++) {
        fast_case f;
        f.G = gt_lcg_range(&g, 1, 3);
        f.C = f.G * 16 * gt_lcg_range(&g, 1, 2), f.K = f.G * 16 * gt_lcg_range(&g, 1, 3);
        f.N = gt_lcg_range(&g, 1, 3);
        f.R = (int64_t[]){1, 3, 5}[gt_lcg_range(&g, 0, 2)];
        f.S = gt_lcg_range(&g, 0, 3) ? f.R : gt_lcg_range(&g, 1, 4);
        f.sh = gt_lcg_range(&g, 0, 2) ? 1 : 2, f.sw = gt_lcg_range(&g, 0, 2) ? 1 : 2;
        f.dh = gt_lcg_range(&g, 1, 2), f.dw = gt_lcg_range(&g, 1, 2);
        f.pt = gt_lcg_range(&g, 0, 2), f.pb = gt_lcg_range(&g, 0, 2);
        f.pl = gt_lcg_range(&g, 0, 2), f.pr = gt_lcg_range(&g, 0, 2);
        f.H = f.dh * (f.R - 1) + gt_lcg_range(&g, 1, 12);
        f.W = f.dw * (f.S - 1) + gt_lcg_range(&g, 1, 20);
        char name[200];
        snprintf(name, sizeof name,
                 "xsmm random %d: N %lld C %lld H %lld W %lld K %lld R %lld S %lld G %lld stride %lldx%lld "
                 "pad %lld,%lld,%lld,%lld dil %lldx%lld",
                 it, (long long)f.N, (long long)f.C, (long long)f.H, (long long)f.W, (long long)f.K,
                 (long long)f.R, (long long)f.S, (long long)f.G, (long long)f.sh, (long long)f.sw,
                 (long long)f.pt, (long long)f.pb, (long long)f.pl, (long long)f.pr, (long long)f.dh,
                 (long long)f.dw);
        check_fast(&f, name);
    }
}

/* A geometry large enough to be timed: the plan times the kernels on the first forward and backward, the
 * results match the reference, and later runs reuse the choice (bit-identical results). */
Test(conv_fast, tuned_plan_is_stable, .fini = teardown) {
    cr_assert_eq(gg_conv_set_benchmark(true), false, "benchmark mode is not off by default");
    gg_tensor *x = leaf(RAND(41, 4, 32, 20, 21)), *w = leaf(RAND(42, 32, 32, 3, 3)), *b = leaf(RAND(43, 32));
    gg_conv2d_params p = gg_conv2d_make(1, 1, 1, 1);
    gg_tensor *got[2][4] = {{NULL}};
    for (int run = 0; run < 2; run++) {
        gg_tensor *y = gg_conv2d(x, w, b, &p);
        gg_tensor *c = RAND(44, y->shape[0], y->shape[1], y->shape[2], y->shape[3]);
        cr_assert_eq(gg_backward_ex(y, c, false), GG_OK, "%s", gg_last_error());
        gg_tensor *t[4] = {gg_tensor_copy(y), gg_tensor_copy(x->grad), gg_tensor_copy(w->grad),
                           gg_tensor_copy(b->grad)};
        memcpy(got[run], t, sizeof t);
        gg_zero_grad(x), gg_zero_grad(w), gg_zero_grad(b);
        gg_tensor_free(c);
        gg_tape_reset(NULL);
    }
    gg_conv2d_shape s = {.N = 4,
                         .C = 32,
                         .H = 20,
                         .W = 21,
                         .K = 32,
                         .R = 3,
                         .S = 3,
                         .G = 1,
                         .Ho = 20,
                         .Wo = 21,
                         .str_h = 1,
                         .str_w = 1,
                         .pad_t = 1,
                         .pad_l = 1,
                         .dil_h = 1,
                         .dil_w = 1};
    for (int pass = 0; pass < 3; pass++)
        cr_assert_neq(gg__conv2d_planned_algo(&s, pass), GG_CONV_ALGO_AUTO, "pass %d was not planned", pass);
    gg__conv2d_force_algo(GG_CONV_ALGO_REF);
    gg_tensor *y = gg_conv2d(x, w, b, &p);
    gg_tensor *c = RAND(44, y->shape[0], y->shape[1], y->shape[2], y->shape[3]);
    cr_assert_eq(gg_backward_ex(y, c, false), GG_OK, "%s", gg_last_error());
    gg_tensor *ref[4] = {y, x->grad, w->grad, b->grad};
    const char *names[4] = {"y", "dx", "dw", "db"};
    for (int k = 0; k < 4; k++) {
        assert_tensor_close(got[0][k], ref[k], 1e-4, names[k]);
        cr_assert(memcmp(gg_tensor_data(got[0][k]), gg_tensor_data(got[1][k]),
                         (size_t)got[0][k]->numel * sizeof(float)) == 0,
                  "%s differs between two runs of the same plan", names[k]);
        gg_tensor_free(got[0][k]);
        gg_tensor_free(got[1][k]);
    }
    gg_tensor_free(c);
    gg_tensor_free(x);
    gg_tensor_free(w);
    gg_tensor_free(b);
}

/* gg_conv_set_benchmark: off by default, returns the previous setting, forgets the plans made so far, and
 * both modes compute the same convolution. */
Test(conv_fast, benchmark_switch, .fini = teardown) {
    cr_assert_eq(gg_conv_get_benchmark(), false);
    gg_tensor *x = leaf(RAND(51, 4, 32, 20, 21)), *w = leaf(RAND(52, 32, 32, 3, 3));
    gg_conv2d_params p = gg_conv2d_make(1, 1, 1, 1);
    gg_conv2d_shape s = {.N = 4, .C = 32, .H = 20, .W = 21, .K = 32, .R = 3, .S = 3, .G = 1, .Ho = 20, .Wo = 21,
                         .str_h = 1, .str_w = 1, .pad_t = 1, .pad_l = 1, .dil_h = 1, .dil_w = 1};
    gg_tensor *y[2];
    for (int mode = 0; mode < 2; mode++) {
        cr_assert_eq(gg_conv_set_benchmark(mode == 1), false);
        cr_assert_eq(gg__conv2d_planned_algo(&s, 0), GG_CONV_ALGO_AUTO, "a plan survived the switch");
        y[mode] = gg_tensor_copy(gg_conv2d(x, w, NULL, &p));
        cr_assert_not_null(y[mode], "%s", gg_last_error());
        cr_assert_neq(gg__conv2d_planned_algo(&s, 0), GG_CONV_ALGO_AUTO, "mode %d made no plan", mode);
        gg_tape_reset(NULL);
    }
    cr_assert_eq(gg_conv_set_benchmark(false), true);
    cr_assert_eq(gg__conv2d_planned_algo(&s, 0), GG_CONV_ALGO_AUTO, "the timed plan survived turning it off");
    assert_tensor_close(y[1], y[0], 1e-4, "benchmark vs static forward");
    gg_tensor_free(y[0]), gg_tensor_free(y[1]), gg_tensor_free(x), gg_tensor_free(w);
}

Test(conv_fast, op_dispatch_matches_reference, .fini = teardown) {
    /* the same conv through the op with each algorithm forced, forward and both gradients */
    /* AUTO mixes kernels per pass: e.g. direct forward and data gradient with a GEMM weight gradient
     * (C 16 K 32), GEMM everywhere for dense 1x1 */
    const struct {
        int64_t C, K, G, R;
    } cfg[] = {{12, 18, 1, 3}, {12, 18, 3, 3}, {10, 10, 10, 3},
               {8, 16, 8, 3},  {16, 32, 1, 3}, {32, 24, 1, 1}};
    for (size_t i = 0; i < sizeof cfg / sizeof *cfg; i++) {
        gg_tensor *x = leaf(RAND(31, 3, cfg[i].C, 9, 11));
        gg_tensor *w = leaf(RAND(32, cfg[i].K, cfg[i].C / cfg[i].G, cfg[i].R, cfg[i].R));
        gg_tensor *b = leaf(RAND(33, cfg[i].K));
        gg_conv2d_params p = gg_conv2d_make(2, (int)cfg[i].R / 2, 1, (int)cfg[i].G);
        gg_tensor *ref[4] = {NULL};
        for (int a = 0; a <= N_ALGOS; a++) {
            gg__conv2d_force_algo(a == N_ALGOS ? GG_CONV_ALGO_AUTO : ALGOS[a]);
            gg_tensor *y = gg_conv2d(x, w, b, &p);
            gg_tensor *c = RAND(34, y->shape[0], y->shape[1], y->shape[2], y->shape[3]);
            cr_assert_eq(gg_backward_ex(y, c, false), GG_OK, "%s", gg_last_error());
            gg_tensor *got[4] = {gg_tensor_copy(y), gg_tensor_copy(x->grad), gg_tensor_copy(w->grad),
                                 gg_tensor_copy(b->grad)};
            for (int k = 0; k < 4; k++) {
                if (a == 0) ref[k] = got[k];
                else {
                    assert_tensor_close(got[k], ref[k], 1e-4, ALGO_NAMES[a == N_ALGOS ? 0 : ALGOS[a]]);
                    gg_tensor_free(got[k]);
                }
            }
            gg_zero_grad(x), gg_zero_grad(w), gg_zero_grad(b);
            gg_tensor_free(c);
            gg_tape_reset(NULL);
        }
        for (int k = 0; k < 4; k++) gg_tensor_free(ref[k]);
        gg_tensor_free(x);
        gg_tensor_free(w);
        gg_tensor_free(b);
    }
}

/* ---- PyTorch golden cases (scripts/gen_conv_golden.py) ---- */

static gg_tensor *load_golden(const char *dir, const char *name, const char *key) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s_%s.npy", dir, name, key);
    gg_tensor *t = gg_npy_load(path);
    cr_assert_not_null(t, "cannot load %s: %s", path, gg_last_error());
    return t;
}

Test(conv_golden, pytorch, .init = one_thread, .fini = teardown) {
    const char *root = getenv("GG_TEST_DATA");
    cr_assert_not_null(root, "GG_TEST_DATA is not set");
    char dir[900], list[1024];
    snprintf(dir, sizeof dir, "%s/golden/conv", root);
    snprintf(list, sizeof list, "%s/cases.txt", dir);
    FILE *f = fopen(list, "r");
    cr_assert_not_null(f, "cannot open %s", list);
    char name[128];
    int n_cases = 0;
    while (fscanf(f, "%127s", name) == 1) {
        gg_tensor *prm = load_golden(dir, name, "params");
        cr_assert_eq(prm->numel, 11);
        const float *q = gg_tensor_data(prm);
        gg_conv2d_params p = {.stride = {(int)q[0], (int)q[1]},
                              .pad = {(int)q[2], (int)q[3], (int)q[4], (int)q[5]},
                              .dilation = {(int)q[6], (int)q[7]},
                              .groups = (int)q[8],
                              .pad_same = q[9] != 0};
        bool has_bias = q[10] != 0;
        for (int a = 0; a <= N_ALGOS; a++) {
            gg_conv_algo algo = a == N_ALGOS ? GG_CONV_ALGO_AUTO : ALGOS[a];
            gg__conv2d_force_algo(algo);
            gg_tensor *x = leaf(load_golden(dir, name, "x")), *w = leaf(load_golden(dir, name, "w"));
            gg_tensor *b = has_bias ? leaf(load_golden(dir, name, "b")) : NULL;
            gg_tensor *c = load_golden(dir, name, "c");
            gg_tensor *y = gg_conv2d(x, w, b, &p);
            char what[200];
            snprintf(what, sizeof what, "%s (%s): y", name, ALGO_NAMES[algo]);
            gg_tensor *ey = load_golden(dir, name, "y");
            assert_tensor_close(y, ey, 1e-5, what);
            cr_assert_eq(gg_backward_ex(y, c, false), GG_OK, "%s: %s", name, gg_last_error());
            const char *keys[] = {"dx", "dw", "db"};
            gg_tensor *grads[] = {x->grad, w->grad, b ? b->grad : NULL};
            for (int k = 0; k < (has_bias ? 3 : 2); k++) {
                gg_tensor *e = load_golden(dir, name, keys[k]);
                snprintf(what, sizeof what, "%s (%s): %s", name, ALGO_NAMES[algo], keys[k]);
                assert_tensor_close(grads[k], e, 1e-5, what);
                gg_tensor_free(e);
            }
            gg_tensor *all[] = {x, w, b, c, ey};
            for (int i = 0; i < 5; i++) gg_tensor_free(all[i]);
            gg_tape_reset(NULL);
        }
        gg_tensor_free(prm);
        n_cases++;
    }
    fclose(f);
    cr_assert_geq(n_cases, 9, "only %d golden cases in %s", n_cases, list);
}

/* ---- errors ---- */

static void expect_error(gg_tensor *x, gg_tensor *w, gg_tensor *b, const gg_conv2d_params *p, int status,
                         const char *needle) {
    gg_clear_error();
    size_t before = gg_tape_num_tensors(NULL);
    cr_assert_null(gg_conv2d(x, w, b, p), "expected an error containing \"%s\"", needle);
    gt_assert_error(status, "gg_conv2d");
    gt_assert_msg_has(needle);
    cr_assert_eq(gg_tape_num_tensors(NULL), before, "a failed call allocated an output");
}

Test(conv_errors, shapes, .init = one_thread, .fini = teardown) {
    gg_tensor *x = RAND(1, 8, 30, 32, 32), *w = RAND(2, 64, 32, 3, 3);
    expect_error(x, w, NULL, NULL, GG_ERR_SHAPE,
                 "input has 30 channels, weight expects 32 (x [8,30,32,32], w [64,32,3,3])");
    gg_tensor *x3 = RAND(3, 30, 32, 32), *b = RAND(4, 63), *b2 = RAND(5, 1, 64), *w3 = RAND(6, 64, 32, 3);
    expect_error(x3, w, NULL, NULL, GG_ERR_SHAPE,
                 "input must be 4-D [N,C,H,W] (x [30,32,32], w [64,32,3,3])");
    gg_tensor *xg = RAND(7, 2, 64, 8, 8);
    expect_error(xg, w3, NULL, NULL, GG_ERR_SHAPE, "weight must be 4-D");
    gg_conv2d_params p = gg_conv2d_make(1, 0, 1, 2);
    expect_error(xg, w, b, &p, GG_ERR_SHAPE,
                 "bias must be [64], one value per output channel (x [2,64,8,8], w [64,32,3,3], bias [63])");
    expect_error(xg, w, b2, &p, GG_ERR_SHAPE, "bias [1,64]");
    p = gg_conv2d_make(1, 0, 1, 4);
    expect_error(xg, w, NULL, &p, GG_ERR_SHAPE,
                 "input has 64 channels, weight expects 128 (32 per group x 4 groups)");
    gg_tensor *w5 = RAND(8, 10, 16, 3, 3);
    expect_error(xg, w5, NULL, &p, GG_ERR_SHAPE,
                 "weight has 10 output channels, not divisible by 4 groups (x [2,64,8,8], w [10,16,3,3])");
    gg_tensor *wbig = RAND(9, 64, 32, 9, 3);
    p = gg_conv2d_make(1, 0, 1, 2);
    expect_error(xg, wbig, NULL, &p, GG_ERR_SHAPE, "output would be empty");
    p = gg_conv2d_make(1, 0, 2, 2); /* dilated 3x3 spans 5: fits 8, but a dilated 9 tall kernel spans 17 */
    expect_error(xg, wbig, NULL, &p, GG_ERR_SHAPE, "dilated kernel 17x5");
    gg_tensor *all[] = {x, w, x3, b, b2, w3, xg, w5, wbig};
    for (int i = 0; i < 9; i++) gg_tensor_free(all[i]);
}

Test(conv_errors, params, .init = one_thread, .fini = teardown) {
    gg_tensor *x = RAND(1, 2, 4, 6, 6), *w = RAND(2, 4, 2, 3, 3);
    gg_conv2d_params p = gg_conv2d_make(1, 0, 1, 0);
    expect_error(x, w, NULL, &p, GG_ERR_ARG, "groups must be >= 1, got 0 (x [2,4,6,6], w [4,2,3,3])");
    p = gg_conv2d_make(0, 0, 1, 2);
    expect_error(x, w, NULL, &p, GG_ERR_ARG, "stride must be positive, got (0, 0)");
    p = gg_conv2d_make(1, 0, 1, 2);
    p.stride[1] = -2;
    expect_error(x, w, NULL, &p, GG_ERR_ARG, "stride must be positive, got (1, -2)");
    p = gg_conv2d_make(1, 0, 0, 2);
    expect_error(x, w, NULL, &p, GG_ERR_ARG, "dilation must be positive");
    p = gg_conv2d_make(1, 0, 1, 2);
    p.pad[3] = -1;
    expect_error(x, w, NULL, &p, GG_ERR_ARG,
                 "padding must be non-negative, got (top 0, bottom 0, left 0, right -1)");
    p = gg_conv2d_make(2, 0, 1, 2);
    p.pad_same = true;
    expect_error(x, w, NULL, &p, GG_ERR_ARG, "padding 'same' needs stride 1, got (2, 2)");
    /* with 'same', the explicit (negative) padding is ignored */
    p.stride[0] = p.stride[1] = 1;
    p.pad[0] = -5;
    gg_tensor *y = gg_conv2d(x, w, NULL, &p);
    gt_assert_shape(y, 2, 4, 6, 6);
    gg_tensor_free(x);
    gg_tensor_free(w);
}

Test(conv_errors, null_is_sticky, .init = one_thread, .fini = teardown) {
    gg_tensor *w = RAND(1, 4, 2, 3, 3);
    gg_clear_error();
    gg_error_set(GG_ERR_SHAPE, "gg_earlier", "first failure");
    cr_assert_null(gg_conv2d(NULL, w, NULL, NULL));
    gt_assert_error(GG_ERR_SHAPE, "first failure");
    gg_clear_error();
    cr_assert_null(gg_conv2d(NULL, w, NULL, NULL));
    gt_assert_msg_has("gg_conv2d");
    gg_clear_error();
    cr_assert_null(gg_conv2d(w, NULL, NULL, NULL));
    gt_assert_msg_has("gg_conv2d");
    gg_tensor_free(w);
}
