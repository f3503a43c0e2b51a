/* gg_sum / gg_mean / gg_max / gg_min / gg_var: hand-computed cases over axis sets (negative, keepdim,
 * all axes, rank 0, empty), gradient checks (contiguous and non-contiguous inputs), tie and NaN rules,
 * the fast kernel against the reference kernel on random odd strided shapes, and every error path. */
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

TestSuite(reduce, .fini = teardown);

/* ---- helpers ---- */

static gg_tensor *from(int ndim, const int64_t *shape, const float *v) {
    gg_tensor *t = gg_tensor_from_data(ndim, shape, v);
    cr_assert_not_null(t, "%s", gg_last_error());
    return t;
}

static gg_tensor *randn(int ndim, const int64_t *shape, uint64_t seed) {
    gg_tensor *t = gg_tensor_empty(ndim, shape);
    cr_assert_not_null(t, "%s", gg_last_error());
    gg_rng r;
    gg_rng_init(&r, seed);
    cr_assert_eq(gg_rand_normal(t, 0.0f, 1.0f, &r), GG_OK);
    return t;
}

/* Values 0.05 * (a shuffle of 0..n-1, centred): distinct with gaps far above the gradcheck step, so
 * max/min have a single, stable winner per group. */
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
    for (int64_t i = 0; i < n; i++) v[i] = 0.05f * (v[i] - (float)n / 2);
    gg_tensor *t = from(ndim, shape, v);
    free(v);
    return t;
}

/* Row-major values of any tensor. */
static float *values(const gg_tensor *t) {
    float *v = malloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1));
    cr_assert_eq(gg_tensor_to_buffer(t, v, t->numel), GG_OK, "%s", gg_last_error());
    return v;
}

static void assert_near_(const gg_tensor *t, const float *expected, double tol, const char *file, int line) {
    cr_assert_not_null(t, "%s:%d: tensor is NULL (%s)", file, line, gg_last_error());
    float *v = values(t);
    for (int64_t i = 0; i < t->numel; i++) {
        double e = expected[i], a = v[i];
        bool ok = (isnan(e) && isnan(a)) || (isinf(e) && a == e) || fabs(a - e) <= tol * (1 + fabs(e));
        cr_assert(ok, "%s:%d: element %lld is %.9g, expected %.9g", file, line, (long long)i, a, e);
    }
    free(v);
}
#define assert_near(t, tol, ...) assert_near_((t), (const float[]){__VA_ARGS__}, (tol), __FILE__, __LINE__)

#define assert_rank0(t)                                                                          \
    do {                                                                                         \
        const gg_tensor *t0_ = (t);                                                              \
        cr_assert_not_null(t0_, "%s", gg_last_error());                                          \
        cr_assert(t0_->ndim == 0 && t0_->numel == 1, "expected rank 0, got ndim %d", t0_->ndim); \
    } while (0)

enum { OP_SUM, OP_MEAN, OP_MAX, OP_MIN, OP_VAR };

typedef struct rctx {
    int op;
    int axes[GG_MAX_DIMS];
    int n_axes;
    bool keepdim;
    int correction;
} rctx;

static gg_tensor *apply(const rctx *c, gg_tensor *x) {
    const int *axes = c->n_axes ? c->axes : NULL;
    switch (c->op) {
    case OP_SUM:
        return gg_sum(x, axes, c->n_axes, c->keepdim);
    case OP_MEAN:
        return gg_mean(x, axes, c->n_axes, c->keepdim);
    case OP_MAX:
        return gg_max(x, axes, c->n_axes, c->keepdim);
    case OP_MIN:
        return gg_min(x, axes, c->n_axes, c->keepdim);
    default:
        return gg_var(x, axes, c->n_axes, c->correction, c->keepdim);
    }
}

static gg_tensor *red_fn(gg_tensor *const *in, void *ctx) { return apply(ctx, in[0]); }

static void gradcheck_one(rctx c, gg_tensor *x) {
    cr_assert_eq(gg_requires_grad(x, true), GG_OK, "%s", gg_last_error());
    gg_gradcheck_report rep;
    char buf[256];
    int st = gg_gradcheck(red_fn, &c, 1, &x, NULL, &rep);
    cr_assert_eq(st, GG_OK, "op %d: gradcheck failed to run: %s", c.op, gg_last_error());
    cr_assert(rep.passed, "op %d axes(%d) keepdim %d: %s", c.op, c.n_axes, c.keepdim,
              gg_gradcheck_describe(&rep, buf, sizeof buf));
}

/* Gradient of `out` seeded with ones into x->grad (fresh), as row-major values (caller frees). */
static float *grad_of_ones(gg_tensor *x, gg_tensor *out) {
    cr_assert_not_null(out, "%s", gg_last_error());
    gg_tensor *seed = gg_tensor_ones(out->ndim, out->shape);
    cr_assert_eq(gg_backward_ex(out, seed, false), GG_OK, "%s", gg_last_error());
    gg_tensor_free(seed);
    cr_assert_not_null(x->grad);
    return values(x->grad);
}

/* ---- hand-computed forward cases ---- */

Test(reduce, sum_over_axis_sets) {
    gg_tensor *x = GT_IOTA(2, 3, 4); /* x[i][j][k] = 12i + 4j + k */
    gg_tensor *y = gg_sum(x, NULL, 0, false);
    assert_rank0(y);
    gt_assert_list(y, 276);
    y = gg_sum(x, NULL, 0, true);
    gt_assert_shape(y, 1, 1, 1);
    gt_assert_list(y, 276);
    y = gg_sum(x, (int[]){0}, 1, false);
    gt_assert_shape(y, 3, 4);
    gt_assert_list(y, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34);
    y = gg_sum(x, (int[]){-1}, 1, false);
    gt_assert_shape(y, 2, 3);
    gt_assert_list(y, 6, 22, 38, 54, 70, 86);
    y = gg_sum(x, (int[]){-1}, 1, true);
    gt_assert_shape(y, 2, 3, 1);
    gt_assert_list(y, 6, 22, 38, 54, 70, 86);
    y = gg_sum(x, (int[]){0, 2}, 2, true); /* 32j + 60 */
    gt_assert_shape(y, 1, 3, 1);
    gt_assert_list(y, 60, 92, 124);
    y = gg_sum(x, (int[]){2, -3}, 2, false); /* order and sign of the axes do not matter */
    gt_assert_shape(y, 3);
    gt_assert_list(y, 60, 92, 124);
    y = gg_sum(x, (int[]){1}, 1, false); /* 3 * 12i + 12 + 3k */
    gt_assert_shape(y, 2, 4);
    gt_assert_list(y, 12, 15, 18, 21, 48, 51, 54, 57);
    y = gg_sum(x, (int[]){0, 1, 2}, 3, false);
    assert_rank0(y);
    gt_assert_list(y, 276);
    gg_tensor_free(x);
}

Test(reduce, sum_of_strided_and_expanded_views) {
    gg_tensor *x = GT_IOTA(2, 3, 4);
    gg_tensor *t = gg_tensor_transpose(x, 0, 2); /* [4,3,2], t[k][j][i] = 12i + 4j + k */
    gg_tensor *y = gg_sum(t, (int[]){2}, 1, false);
    gt_assert_shape(y, 4, 3);
    gt_assert_list(y, 12, 20, 28, 14, 22, 30, 16, 24, 32, 18, 26, 34);
    y = gg_sum(t, (int[]){0}, 1, false); /* over k: 4 (12i + 4j) + 6 */
    gt_assert_shape(y, 3, 2);
    gt_assert_list(y, 6, 54, 22, 70, 38, 86);
    gg_tensor *s = gg_tensor_slice(x, 2, 1, 4, 2); /* k in {1, 3} */
    y = gg_sum(s, (int[]){-1}, 1, false);
    gt_assert_list(y, 4, 12, 20, 28, 36, 44);
    gg_tensor *v = from(GG_SHAPE(3), (float[]){1, 2, 3});
    gg_tensor *e = gg_tensor_expand(v, GG_SHAPE(4, 3)); /* stride 0 along dim 0 */
    y = gg_sum(e, (int[]){0}, 1, false);
    gt_assert_list(y, 4, 8, 12);
    y = gg_sum(e, NULL, 0, false);
    gt_assert_list(y, 24);
    y = gg_max(e, (int[]){1}, 1, false);
    gt_assert_list(y, 3, 3, 3, 3);
    gg_tensor_free(e);
    gg_tensor_free(v);
    gg_tensor_free(s);
    gg_tensor_free(t);
    gg_tensor_free(x);
}

Test(reduce, rank0_input) {
    gg_tensor *x = gg_tensor_scalar(3.5f);
    gt_assert_list(gg_sum(x, NULL, 0, false), 3.5f);
    assert_rank0(gg_sum(x, NULL, 0, true));
    gt_assert_list(gg_sum(x, (int[]){0}, 1, false), 3.5f);
    gt_assert_list(gg_mean(x, (int[]){-1}, 1, true), 3.5f);
    gt_assert_list(gg_max(x, NULL, 0, false), 3.5f);
    gt_assert_list(gg_min(x, NULL, 0, false), 3.5f);
    gt_assert_list(gg_var(x, NULL, 0, 0, false), 0.0f);
    gg_tensor *v = gg_var(x, NULL, 0, 1, false); /* N = 1, correction 1: 0/0 */
    cr_assert(isnan(gg_tensor_data(v)[0]));
    cr_assert_null(gg_sum(x, (int[]){1}, 1, false));
    gt_assert_error(GG_ERR_INDEX, "gg_sum");
    gg_tensor_free(x);
}

Test(reduce, empty_inputs) {
    gg_tensor *x = gg_tensor_zeros(GG_SHAPE(0, 3));
    gg_tensor *y = gg_sum(x, NULL, 0, false);
    gt_assert_list(y, 0);
    y = gg_sum(x, (int[]){0}, 1, false);
    gt_assert_shape(y, 3);
    gt_assert_list(y, 0, 0, 0);
    y = gg_sum(x, (int[]){1}, 1, true);
    gt_assert_shape(y, 0, 1);
    y = gg_mean(x, NULL, 0, false); /* 0/0, as torch.mean */
    cr_assert(isnan(gg_tensor_data(y)[0]));
    y = gg_var(x, (int[]){0}, 1, 1, false);
    gt_assert_shape(y, 3);
    cr_assert(isnan(gg_tensor_data(y)[0]));
    y = gg_max(x, (int[]){1}, 1, false); /* the reduced dim is not empty: an empty result */
    gt_assert_shape(y, 0);
    y = gg_min(x, (int[]){1}, 1, true);
    gt_assert_shape(y, 0, 1);
    gg_tensor_free(x);
}

Test(reduce, mean) {
    gg_tensor *x = GT_IOTA(2, 3);
    gt_assert_list(gg_mean(x, (int[]){1}, 1, false), 1, 4);
    gt_assert_list(gg_mean(x, NULL, 0, false), 2.5f);
    gt_assert_list(gg_mean(x, (int[]){-2}, 1, false), 1.5f, 2.5f, 3.5f);
    gt_assert_shape(gg_mean(x, (int[]){-2}, 1, true), 1, 3);
    gg_tensor_free(x);
}

Test(reduce, max_min_values) {
    gg_tensor *x = from(GG_SHAPE(2, 3), (float[]){3, 1, 3, -2, 5, 5});
    gt_assert_list(gg_max(x, (int[]){1}, 1, false), 3, 5);
    gt_assert_list(gg_min(x, (int[]){1}, 1, false), 1, -2);
    gt_assert_list(gg_max(x, NULL, 0, false), 5);
    gt_assert_list(gg_min(x, (int[]){0}, 1, false), -2, 1, 3);
    gt_assert_shape(gg_min(x, (int[]){0}, 1, true), 1, 3);
    gt_assert_list(gg_max(x, (int[]){0, 1}, 2, true), 5);
    gg_tensor *inf = from(GG_SHAPE(3), (float[]){-INFINITY, -INFINITY, -INFINITY});
    gt_assert_list(gg_max(inf, NULL, 0, false), -INFINITY);
    gg_tensor_free(inf);
    gg_tensor_free(x);
}

Test(reduce, max_nan_propagates_and_takes_the_gradient) {
    gg_tensor *x = from(GG_SHAPE(2, 3), (float[]){1, NAN, 3, 4, 2, NAN});
    cr_assert_eq(gg_requires_grad(x, true), GG_OK);
    gg_tensor *y = gg_max(x, (int[]){1}, 1, false);
    float *v = values(y);
    cr_assert(isnan(v[0]) && isnan(v[1]));
    free(v);
    float *g = grad_of_ones(x, y);
    float e[6] = {0, 1, 0, 0, 0, 1};
    for (int i = 0; i < 6; i++) cr_assert_eq(g[i], e[i], "grad[%d] = %g", i, (double)g[i]);
    free(g);
    cr_assert(isnan(gg_tensor_data(gg_min(x, NULL, 0, false))[0]));
    gg_tensor_free(x);
}

Test(reduce, var_values_and_corrections) {
    gg_tensor *x = from(GG_SHAPE(4), (float[]){1, 2, 3, 4});
    assert_near(gg_var(x, NULL, 0, 1, false), 1e-7, 5.0f / 3.0f);
    assert_near(gg_var(x, NULL, 0, 0, false), 1e-7, 1.25f);
    assert_near(gg_var(x, NULL, 0, -1, false), 1e-7, 1.0f); /* 5 / (4 + 1), allowed as in torch */
    gg_tensor *m = from(GG_SHAPE(2, 2), (float[]){1, 2, 3, 6});
    assert_near(gg_var(m, (int[]){0}, 1, 1, false), 1e-7, 2, 8);
    assert_near(gg_var(m, (int[]){-1}, 1, 0, true), 1e-7, 0.25f, 2.25f);
    gt_assert_shape(gg_var(m, (int[]){-1}, 1, 0, true), 2, 1);
    /* correction >= N divides by zero: inf (torch.var gives inf too) */
    gg_tensor *two = from(GG_SHAPE(2), (float[]){1, 2});
    assert_near(gg_var(two, NULL, 0, 2, false), 0, INFINITY);
    assert_near(gg_var(two, NULL, 0, 5, false), 0, INFINITY);
    /* large offset: two passes in double keep the small variance exact */
    gg_tensor *big = from(GG_SHAPE(4), (float[]){10000.5f, 10001.5f, 10000.5f, 10001.5f});
    assert_near(gg_var(big, NULL, 0, 0, false), 1e-7, 0.25f);
    gg_tensor_free(big);
    gg_tensor_free(two);
    gg_tensor_free(m);
    gg_tensor_free(x);
}

/* ---- backward ---- */

Test(reduce, backward_hand_cases) {
    gg_tensor *x = GT_IOTA(2, 3);
    cr_assert_eq(gg_requires_grad(x, true), GG_OK);
    float *g = grad_of_ones(x, gg_mean(x, (int[]){1}, 1, true));
    for (int i = 0; i < 6; i++) cr_assert_float_eq(g[i], 1.0f / 3.0f, 1e-7);
    free(g);
    /* a second backward into the same leaf accumulates */
    g = grad_of_ones(x, gg_sum(x, (int[]){0}, 1, false));
    for (int i = 0; i < 6; i++) cr_assert_float_eq(g[i], 1.0f + 1.0f / 3.0f, 1e-6);
    free(g);
    gg_zero_grad(x);
    /* var over dim 1 of [[0,1,2],[3,4,5]], correction 1: d/dx = 2 (x - mean) / 2 */
    g = grad_of_ones(x, gg_var(x, (int[]){1}, 1, 1, false));
    float ev[6] = {-1, 0, 1, -1, 0, 1};
    for (int i = 0; i < 6; i++) cr_assert_float_eq(g[i], ev[i], 1e-6);
    free(g);
    gg_tensor_free(x);
}

Test(reduce, max_min_ties_send_gradient_to_first_index) {
    gg_tensor *x = from(GG_SHAPE(2, 3), (float[]){3, 1, 3, -2, 5, 5});
    cr_assert_eq(gg_requires_grad(x, true), GG_OK);
    float *g = grad_of_ones(x, gg_max(x, (int[]){1}, 1, false));
    float e1[6] = {1, 0, 0, 0, 1, 0};
    for (int i = 0; i < 6; i++) cr_assert_eq(g[i], e1[i], "max grad[%d] = %g", i, (double)g[i]);
    free(g);
    gg_zero_grad(x);
    g = grad_of_ones(x, gg_max(x, NULL, 0, false));
    float e2[6] = {0, 0, 0, 0, 1, 0};
    for (int i = 0; i < 6; i++) cr_assert_eq(g[i], e2[i], "max-all grad[%d] = %g", i, (double)g[i]);
    free(g);
    gg_zero_grad(x);
    /* ties along dim 0 of a transposed view: first in the view's order */
    gg_tensor *y = from(GG_SHAPE(2, 2), (float[]){7, 7, 7, 7});
    gg_tensor *yt = gg_tensor_transpose(y, 0, 1);
    cr_assert_eq(gg_requires_grad(yt, true), GG_OK);
    g = grad_of_ones(yt, gg_min(yt, (int[]){0}, 1, true));
    float e3[4] = {1, 1, 0, 0};
    for (int i = 0; i < 4; i++) cr_assert_eq(g[i], e3[i], "min grad[%d] = %g", i, (double)g[i]);
    free(g);
    gg_tensor_free(yt);
    gg_tensor_free(y);
    gg_tensor_free(x);
}

Test(reduce, gradcheck_all_ops_and_axes) {
    const int64_t shape[3] = {3, 4, 5};
    struct {
        int n;
        int axes[3];
    } sets[] = {{0, {0}}, {1, {0}}, {1, {1}}, {1, {-1}}, {2, {0, 2}}, {2, {-1, -2}}, {3, {0, 1, 2}}};
    for (int op = OP_SUM; op <= OP_VAR; op++)
        for (size_t s = 0; s < sizeof sets / sizeof sets[0]; s++)
            for (int keep = 0; keep < 2; keep++) {
                rctx c = {.op = op, .n_axes = sets[s].n, .keepdim = keep, .correction = (int)(s % 2)};
                memcpy(c.axes, sets[s].axes, sizeof c.axes[0] * 3);
                gg_tensor *x =
                    op == OP_MAX || op == OP_MIN ? distinct(3, shape, 11 + s) : randn(3, shape, 7 + s);
                gradcheck_one(c, x);
                gg_tensor_free(x);
            }
}

Test(reduce, gradcheck_non_contiguous_inputs) {
    for (int op = OP_SUM; op <= OP_VAR; op++) {
        for (int variant = 0; variant < 3; variant++) {
            gg_tensor *base = op == OP_MAX || op == OP_MIN ? distinct(GG_SHAPE(4, 3, 6), 5 + op)
                                                           : randn(GG_SHAPE(4, 3, 6), 9 + op);
            gg_tensor *x = variant == 0   ? gg_tensor_transpose(base, 0, 2)            /* [6,3,4] */
                           : variant == 1 ? gg_tensor_slice(base, 2, 1, 6, 2)          /* [4,3,3] */
                                          : gg_tensor_permute(base, (int[]){1, 2, 0}); /* [3,6,4] */
            cr_assert_not_null(x, "%s", gg_last_error());
            cr_assert(!gg_tensor_is_contiguous(x));
            rctx c = {.op = op, .n_axes = 2, .axes = {variant == 1 ? -1 : 0, 1}, .correction = 1};
            gradcheck_one(c, x);
            c.n_axes = 1;
            c.axes[0] = 2;
            c.keepdim = true;
            gradcheck_one(c, x);
            c.n_axes = 0;
            gradcheck_one(c, x);
            gg_tensor_free(x);
            gg_tensor_free(base);
        }
    }
}

Test(reduce, gradcheck_rank0) {
    for (int op = OP_SUM; op <= OP_VAR; op++) {
        gg_tensor *x = gg_tensor_scalar(0.7f);
        rctx c = {.op = op};
        gradcheck_one(c, x);
        gg_tensor_free(x);
    }
}

Test(reduce, no_grad_records_nothing) {
    gg_tensor *x = randn(GG_SHAPE(3, 4), 3);
    cr_assert_eq(gg_requires_grad(x, true), GG_OK);
    size_t before = gg_tape_num_nodes(NULL);
    gg_no_grad_begin();
    gg_tensor *y = gg_var(x, (int[]){1}, 1, 1, false);
    gg_no_grad_end();
    cr_assert_not_null(y);
    cr_assert(!y->requires_grad);
    cr_assert_eq(gg_tape_num_nodes(NULL), before);
    y = gg_max(x, NULL, 0, false);
    cr_assert(y->requires_grad);
    cr_assert_eq(gg_tape_num_nodes(NULL), before + 1);
    gg_tensor_free(x);
}

/* ---- fast kernel against the reference kernel ---- */

static bool close_enough(gg__red_kind kind, float a, float b, double scale) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    if (kind == GG__RED_MAX || kind == GG__RED_MIN) return a == b;
    return fabs((double)a - (double)b) <= 1e-6 * fabs((double)b) + 1e-12 * scale + 1e-30;
}

/* Reduce x (any view) with both kernels and with the public op; all three must agree. */
static void compare_kernels(const gg_tensor *x, unsigned mask, gg__red_kind kind, const char *what) {
    int64_t M = 1, N = 1;
    int axes[GG_MAX_DIMS], na = 0;
    for (int d = 0; d < x->ndim; d++) {
        if (mask >> d & 1u) N *= x->shape[d], axes[na++] = d;
        else M *= x->shape[d];
    }
    if (na == 0) return; /* the ops read "no axes" as "all axes" */
    double div = kind == GG__RED_VAR ? (N > 1 ? (double)N - 1 : 0) : (double)N;
    float *a = malloc(sizeof(float) * (size_t)(M ? M : 1)), *b = malloc(sizeof(float) * (size_t)(M ? M : 1));
    const float *xp = gg_tensor_data(x);
    gg__reduce_ref(kind, div, xp, x->ndim, x->shape, x->stride, mask, a);
    gg__reduce_fast(kind, div, xp, x->ndim, x->shape, x->stride, mask, b);
    double scale = 0;
    float *xv = values(x);
    for (int64_t i = 0; i < x->numel; i++) scale += (double)xv[i] * xv[i] + fabs(xv[i]);
    free(xv);
    char sh[128];
    gg_shape_str(x->ndim, x->shape, sh, sizeof sh);
    int64_t i = 0; /* first mismatch (one assertion per case keeps the test fast) */
    while (i < M && close_enough(kind, b[i], a[i], scale)) i++;
    cr_assert(i == M, "%s kind %d x %s mask %#x: out[%lld] fast %.9g ref %.9g", what, (int)kind, sh, mask,
              (long long)i, (double)b[i], (double)a[i]);
    if (N > 0 || kind == GG__RED_SUM || kind == GG__RED_VAR) {
        gg_tensor *xt = (gg_tensor *)x;
        gg_tensor *y = kind == GG__RED_SUM   ? gg_mean(xt, axes, na, false)
                       : kind == GG__RED_MAX ? gg_max(xt, axes, na, false)
                       : kind == GG__RED_MIN ? gg_min(xt, axes, na, false)
                                             : gg_var(xt, axes, na, 1, false);
        cr_assert_not_null(y, "%s", gg_last_error());
        cr_assert_eq(y->numel, M);
        const float *yp = gg_tensor_data(y);
        for (i = 0; i < M && close_enough(kind, yp[i], a[i], scale);) i++;
        cr_assert(i == M, "%s op kind %d x %s mask %#x: out[%lld] %.9g ref %.9g", what, (int)kind, sh, mask,
                  (long long)i, (double)yp[i], (double)a[i]);
        gg_tape_reset(NULL);
    }
    free(a);
    free(b);
}

Test(reduce, fast_matches_reference_on_random_strided_shapes) {
    gt_lcg g;
    gt_lcg_seed(&g, 2024);
    for (int iter = 0; iter < 300; iter++) {
        int nd = (int)gt_lcg_range(&g, 1, 5);
        int64_t size[GG_MAX_DIMS], bshape[GG_MAX_DIMS], step[GG_MAX_DIMS];
        for (int d = 0; d < nd; d++) {
            size[d] = gt_lcg_range(&g, 0, 20) == 0 ? 0 : gt_lcg_range(&g, 1, 7);
            step[d] = gt_lcg_range(&g, 1, 3) == 3 ? 2 : 1;
            bshape[d] = size[d] * step[d] + gt_lcg_range(&g, 0, 1);
        }
        gg_tensor *base = randn(nd, bshape, (uint64_t)iter);
        gg_tensor *v = gg_tensor_retain(base);
        for (int d = 0; d < nd; d++) {
            gg_tensor *s = gg_tensor_slice(v, d, 0, size[d] * step[d], step[d]);
            cr_assert_not_null(s, "%s", gg_last_error());
            gg_tensor_free(v);
            v = s;
        }
        int perm[GG_MAX_DIMS];
        for (int d = 0; d < nd; d++) perm[d] = d;
        for (int d = nd - 1; d > 0; d--) {
            int j = (int)gt_lcg_range(&g, 0, d), t = perm[d];
            perm[d] = perm[j];
            perm[j] = t;
        }
        gg_tensor *x = gg_tensor_permute(v, perm);
        cr_assert_not_null(x);
        unsigned mask = (unsigned)gt_lcg_range(&g, 1, (1 << nd) - 1);
        for (int kind = 0; kind < GG__RED_KIND_COUNT; kind++) {
            bool empty_group = false;
            for (int d = 0; d < nd; d++)
                if ((mask >> d & 1u) && x->shape[d] == 0) empty_group = true;
            if (empty_group && (kind == GG__RED_MAX || kind == GG__RED_MIN)) continue;
            compare_kernels(x, mask, (gg__red_kind)kind, "random");
        }
        gg_tensor_free(x);
        gg_tensor_free(v);
        gg_tensor_free(base);
    }
}

Test(reduce, fast_matches_reference_on_large_shapes) {
    /* whole-tensor chunks, parallel column and row modes, an expanded (stride-0) dim */
    struct {
        int nd;
        int64_t shape[4];
        unsigned mask;
        int transpose;
    } cases[] =
        {
            {1, {300001}, 1, 0},        {2, {2000, 37}, 1, 0},   {2, {37, 2000}, 2, 0},
            {2, {2000, 37}, 3, 1},      {3, {50, 30, 41}, 5, 0}, {3, {41, 30, 50}, 2, 1},
            {2, {1500, 700}, 1, 0},     {2, {3, 70001}, 2, 0},   {3, {7, 600, 13}, 5, 0},
            {4, {6, 300, 5, 7}, 13, 0}, /* NCHW over (N, H, W): the outer-first row mode, > GCHUNK groups */
        };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        gg_tensor *base = randn(cases[c].nd, cases[c].shape, 100 + c);
        gg_tensor *x =
            cases[c].transpose ? gg_tensor_transpose(base, 0, cases[c].nd - 1) : gg_tensor_retain(base);
        for (int kind = 0; kind < GG__RED_KIND_COUNT; kind++)
            compare_kernels(x, cases[c].mask, (gg__red_kind)kind, "large");
        gg_tensor_free(x);
        gg_tensor_free(base);
    }
    gg_tensor *v = randn(GG_SHAPE(1, 513), 5);
    gg_tensor *e = gg_tensor_expand(v, GG_SHAPE(300, 513));
    for (int kind = 0; kind < GG__RED_KIND_COUNT; kind++) {
        compare_kernels(e, 1, (gg__red_kind)kind, "expanded");
        compare_kernels(e, 2, (gg__red_kind)kind, "expanded");
        compare_kernels(e, 3, (gg__red_kind)kind, "expanded");
    }
    gg_tensor_free(e);
    gg_tensor_free(v);
}

Test(reduce, large_backward_matches_hand_formulas) {
    /* the parallel backward kernels: sum/mean broadcast, max (first index), var */
    gg_tensor *x = distinct(GG_SHAPE(300, 257), 77);
    gg_tensor *xt = gg_tensor_transpose(x, 0, 1); /* [257, 300] */
    cr_assert_eq(gg_requires_grad(xt, true), GG_OK);
    float *xv = values(xt);
    float *g = grad_of_ones(xt, gg_mean(xt, (int[]){1}, 1, false));
    for (int64_t i = 0; i < xt->numel; i++) cr_assert_float_eq(g[i], 1.0f / 300.0f, 1e-9);
    free(g);
    gg_zero_grad(xt);
    g = grad_of_ones(xt, gg_max(xt, (int[]){0}, 1, false));
    for (int64_t j = 0; j < 300; j++) {
        int64_t best = 0;
        for (int64_t i = 1; i < 257; i++)
            if (xv[i * 300 + j] > xv[best * 300 + j]) best = i;
        for (int64_t i = 0; i < 257; i++)
            cr_assert_eq(g[i * 300 + j], i == best ? 1.0f : 0.0f, "max grad [%lld,%lld]", (long long)i,
                         (long long)j);
    }
    free(g);
    gg_zero_grad(xt);
    g = grad_of_ones(xt, gg_var(xt, (int[]){0}, 1, 1, false));
    for (int64_t j = 0; j < 300; j++) {
        double mean = 0;
        for (int64_t i = 0; i < 257; i++) mean += xv[i * 300 + j];
        mean /= 257;
        for (int64_t i = 0; i < 257; i++) {
            double e = 2 * (xv[i * 300 + j] - mean) / 256;
            cr_assert(fabs(g[i * 300 + j] - e) <= 1e-6 * (1 + fabs(e)), "var grad [%lld,%lld] %g vs %g",
                      (long long)i, (long long)j, (double)g[i * 300 + j], e);
        }
    }
    free(g);
    free(xv);
    gg_tensor_free(xt);
    gg_tensor_free(x);
}

/* ---- errors ---- */

Test(reduce, error_axis_out_of_range) {
    gg_tensor *x = GT_IOTA(2, 3);
    size_t before = gg_tape_num_tensors(NULL);
    cr_assert_null(gg_sum(x, (int[]){2}, 1, false));
    gt_assert_error(GG_ERR_INDEX, "gg_sum");
    gt_assert_msg_has("[2,3]");
    gt_assert_msg_has("axis 2");
    cr_assert_null(gg_mean(x, (int[]){0, -3}, 2, false));
    gt_assert_error(GG_ERR_INDEX, "gg_mean");
    gt_assert_msg_has("axis -3");
    cr_assert_null(gg_var(x, (int[]){5}, 1, 1, false));
    gt_assert_error(GG_ERR_INDEX, "gg_var");
    cr_assert_eq(gg_tape_num_tensors(NULL), before, "a failed call allocated a tape tensor");
    gg_tensor_free(x);
}

Test(reduce, error_duplicate_and_negative_count) {
    gg_tensor *x = GT_IOTA(2, 3);
    cr_assert_null(gg_max(x, (int[]){1, -1}, 2, false));
    gt_assert_error(GG_ERR_ARG, "gg_max");
    gt_assert_msg_has("more than once");
    gt_assert_msg_has("[2,3]");
    cr_assert_null(gg_min(x, (int[]){0}, -1, false));
    gt_assert_error(GG_ERR_ARG, "gg_min");
    gt_assert_msg_has("[2,3]");
    gg_tensor_free(x);
}

Test(reduce, error_extremum_of_empty_dim) {
    gg_tensor *x = gg_tensor_zeros(GG_SHAPE(3, 0));
    cr_assert_null(gg_max(x, (int[]){1}, 1, false));
    gt_assert_error(GG_ERR_SHAPE, "gg_max");
    gt_assert_msg_has("[3,0]");
    cr_assert_null(gg_min(x, NULL, 0, false));
    gt_assert_error(GG_ERR_SHAPE, "gg_min");
    gg_tensor *y = gg_tensor_zeros(GG_SHAPE(0, 0));
    cr_assert_null(gg_max(y, (int[]){1}, 1, false));
    gt_assert_error(GG_ERR_SHAPE, "[0,0]");
    gg_tensor_free(y);
    gg_tensor_free(x);
}

Test(reduce, error_null_input_is_sticky) {
    gg_clear_error();
    cr_assert_null(gg_sum(NULL, NULL, 0, false));
    cr_assert_neq(gg_last_status(), GG_OK);
    gt_assert_msg_has("gg_sum");
    gg_error_set(GG_ERR_SHAPE, "upstream_op", "first failure");
    cr_assert_null(gg_mean(NULL, NULL, 0, false));
    cr_assert_null(gg_max(NULL, NULL, 0, false));
    cr_assert_null(gg_min(NULL, NULL, 0, false));
    cr_assert_null(gg_var(NULL, NULL, 0, 1, false));
    gt_assert_error(GG_ERR_SHAPE, "upstream_op: first failure");
}

Test(reduce, backward_detects_in_place_change_of_saved_input) {
    gg_tensor *x = randn(GG_SHAPE(3, 4), 1);
    cr_assert_eq(gg_requires_grad(x, true), GG_OK);
    gg_tensor *y = gg_max(x, NULL, 0, false);
    gg_tensor_data(x)[0] = 100.0f;
    gg_tensor_bump_version(x);
    cr_assert_neq(gg_backward(y), GG_OK);
    gt_assert_msg_has("max");
    gg_tensor_free(x);
}
