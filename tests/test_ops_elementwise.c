/* Elementwise ops: hand-computed forwards and PyTorch's gradient conventions at the kinks, gradient checks
 * of every input (broadcast, rank-0 and transposed inputs), the strided/broadcast engine against a naive
 * loop on random odd shapes, the vectorised exp/log/tanh/sigmoid against libm, results independent of
 * the thread count on large tensors, and every error path. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "gg_elementwise_internal.h"
#include "gg_node.h"
#include "gg_test_util.h"
#include "groupgrad.h"

static void teardown(void) {
    gg_tape_reset(NULL);
    gg_set_anomaly_mode(false);
    gg_set_grad_enabled(true);
    gg_clear_error();
}

TestSuite(elementwise, .fini = teardown);

/* ================================ helpers ================================ */

static gg_tensor *from(int ndim, const int64_t *shape, const float *v) {
    gg_tensor *t = gg_tensor_from_data(ndim, shape, v);
    cr_assert_not_null(t, "%s", gg_last_error());
    return t;
}

static gg_tensor *leaf(int ndim, const int64_t *shape, const float *v) {
    gg_tensor *t = from(ndim, shape, v);
    cr_assert_eq(gg_requires_grad(t, true), GG_OK, "%s", gg_last_error());
    return t;
}

/* Row-major values of any tensor (caller frees). */
static float *values(const gg_tensor *t) {
    cr_assert_not_null(t, "%s", gg_last_error());
    float *v = malloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1));
    cr_assert_eq(gg_tensor_to_buffer(t, v, t->numel), GG_OK, "%s", gg_last_error());
    return v;
}

static bool same_float(float a, float b) { return (isnan(a) && isnan(b)) || memcmp(&a, &b, sizeof a) == 0; }

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
/* Exact comparison (NaN matches NaN; -0 and +0 differ). */
static void assert_exact_(const gg_tensor *t, const float *expected, const char *file, int line) {
    cr_assert_not_null(t, "%s:%d: tensor is NULL (%s)", file, line, gg_last_error());
    float *v = values(t);
    for (int64_t i = 0; i < t->numel; i++)
        cr_assert(same_float(v[i], expected[i]), "%s:%d: element %lld is %.9g, expected %.9g", file, line,
                  (long long)i, (double)v[i], (double)expected[i]);
    free(v);
}
#define assert_exact(t, ...) assert_exact_((t), (const float[]){__VA_ARGS__}, __FILE__, __LINE__)

/* Backward of out seeded with ones; returns x's gradient values (caller frees). */
static float *grad_ones(gg_tensor *x, gg_tensor *out) {
    cr_assert_not_null(out, "%s", gg_last_error());
    gg_tensor *seed = gg_tensor_ones(out->ndim, out->shape);
    cr_assert_eq(gg_backward_ex(out, seed, false), GG_OK, "%s", gg_last_error());
    gg_tensor_free(seed);
    cr_assert_not_null(x->grad, "no gradient reached the input");
    return values(x->grad);
}

static void assert_grad_(gg_tensor *x, gg_tensor *out, const float *expected, const char *file, int line) {
    float *g = grad_ones(x, out);
    for (int64_t i = 0; i < x->numel; i++)
        cr_assert(same_float(g[i], expected[i]), "%s:%d: grad[%lld] = %.9g, expected %.9g", file, line,
                  (long long)i, (double)g[i], (double)expected[i]);
    free(g);
    gg_tensor_free(x->grad);
    x->grad = NULL;
}
#define assert_grad(x, out, ...) assert_grad_((x), (out), (const float[]){__VA_ARGS__}, __FILE__, __LINE__)

/* Value domains for random inputs: ANY is [-2, 2] kept 0.05 away from the kinks 0 and +-0.5 (relu, abs,
 * clamp bounds); POS is [0.3, 2.5]; MAG is a magnitude in [0.5, 2] with a random sign. */
typedef enum domain { D_ANY, D_POS, D_MAG } domain;

static void fill(gg_tensor *t, domain dom, uint64_t seed) {
    cr_assert(gg_tensor_is_contiguous(t));
    gg_rng r;
    gg_rng_init(&r, seed);
    float *p = gg_tensor_data(t);
    for (int64_t i = 0; i < t->numel; i++) {
        float u = gg_rng_uniform01(&r);
        if (dom == D_POS) {
            p[i] = 0.3f + 2.2f * u;
        } else if (dom == D_MAG) {
            p[i] = (gg_rng_uniform01(&r) < 0.5f ? -1.0f : 1.0f) * (0.5f + 1.5f * u);
        } else {
            float v = -2.0f + 4.0f * u;
            const float kinks[3] = {0.0f, -0.5f, 0.5f};
            for (int k = 0; k < 3; k++)
                if (fabsf(v - kinks[k]) < 0.05f) v = kinks[k] + (v < kinks[k] ? -0.05f : 0.05f);
            p[i] = v;
        }
    }
}

/* A random leaf requiring grad; `transposed` makes it a transposed view of a contiguous base (so its
 * last two dims have swapped strides). Caller frees. */
static gg_tensor *rand_leaf(int ndim, const int64_t *shape, bool transposed, domain dom, uint64_t seed) {
    gg_tensor *t;
    if (transposed && ndim >= 2) {
        int64_t bs[GG_MAX_DIMS];
        memcpy(bs, shape, sizeof(int64_t) * (size_t)ndim);
        bs[ndim - 1] = shape[ndim - 2];
        bs[ndim - 2] = shape[ndim - 1];
        gg_tensor *base = gg_tensor_empty(ndim, bs);
        fill(base, dom, seed);
        t = gg_tensor_transpose(base, -2, -1);
        gg_tensor_free(base);
        cr_assert(!gg_tensor_is_contiguous(t) || shape[ndim - 1] == 1 || shape[ndim - 2] == 1);
    } else {
        t = gg_tensor_empty(ndim, shape);
        fill(t, dom, seed);
    }
    cr_assert_not_null(t, "%s", gg_last_error());
    cr_assert_eq(gg_requires_grad(t, true), GG_OK, "%s", gg_last_error());
    return t;
}

/* ---- the ops under test, by number (gradcheck callbacks, tables) ---- */

typedef enum uop {
    U_NEG, U_ADDS, U_MULS, U_RSUB, U_RDIV, U_EXP, U_LOG, U_SQRT, U_SQUARE, U_POW, U_ABS, U_RELU, U_LEAKY,
    U_SIGMOID, U_TANH, U_CLAMP, U_SIGN_STE, U_COUNT
} uop;

typedef struct ucase {
    const char *name;
    uop op;
    float p0, p1;
    domain dom;
} ucase;

static gg_tensor *apply_unary(const ucase *c, gg_tensor *x) {
    switch (c->op) {
    case U_NEG: return gg_neg(x);
    case U_ADDS: return gg_add_scalar(x, c->p0);
    case U_MULS: return gg_mul_scalar(x, c->p0);
    case U_RSUB: return gg_rsub_scalar(x, c->p0);
    case U_RDIV: return gg_rdiv_scalar(x, c->p0);
    case U_EXP: return gg_exp(x);
    case U_LOG: return gg_log(x);
    case U_SQRT: return gg_sqrt(x);
    case U_SQUARE: return gg_square(x);
    case U_POW: return gg_pow(x, c->p0);
    case U_ABS: return gg_abs(x);
    case U_RELU: return gg_relu(x);
    case U_LEAKY: return gg_leaky_relu(x, c->p0);
    case U_SIGMOID: return gg_sigmoid(x);
    case U_TANH: return gg_tanh(x);
    case U_CLAMP: return gg_clamp(x, c->p0, c->p1);
    case U_SIGN_STE: return gg_sign_ste(x);
    case U_COUNT: break;
    }
    return NULL;
}

/* Every differentiable unary case (sign_ste is checked separately: its straight-through gradient is by
 * design not the derivative of its forward). */
static const ucase UNARY_CASES[] = {
    {"neg", U_NEG, 0, 0, D_ANY},           {"add_scalar", U_ADDS, 1.5f, 0, D_ANY},
    {"mul_scalar", U_MULS, -2.5f, 0, D_ANY}, {"rsub_scalar", U_RSUB, 3.0f, 0, D_ANY},
    {"rdiv_scalar", U_RDIV, 2.0f, 0, D_MAG}, {"exp", U_EXP, 0, 0, D_ANY},
    {"log", U_LOG, 0, 0, D_POS},           {"sqrt", U_SQRT, 0, 0, D_POS},
    {"square", U_SQUARE, 0, 0, D_ANY},     {"pow 2", U_POW, 2.0f, 0, D_ANY},
    {"pow 3", U_POW, 3.0f, 0, D_ANY},      {"pow 4", U_POW, 4.0f, 0, D_ANY},
    {"pow 2.5", U_POW, 2.5f, 0, D_POS},    {"pow 0.5", U_POW, 0.5f, 0, D_POS},
    {"pow 1.5", U_POW, 1.5f, 0, D_POS},    {"pow -0.5", U_POW, -0.5f, 0, D_POS},
    {"pow -1", U_POW, -1.0f, 0, D_MAG},    {"pow -2", U_POW, -2.0f, 0, D_MAG},
    {"pow 1", U_POW, 1.0f, 0, D_ANY},      {"pow 0", U_POW, 0.0f, 0, D_ANY},
    {"abs", U_ABS, 0, 0, D_ANY},           {"relu", U_RELU, 0, 0, D_ANY},
    {"leaky_relu 0.1", U_LEAKY, 0.1f, 0, D_ANY}, {"leaky_relu -0.3", U_LEAKY, -0.3f, 0, D_ANY},
    {"sigmoid", U_SIGMOID, 0, 0, D_ANY},   {"tanh", U_TANH, 0, 0, D_ANY},
    {"clamp", U_CLAMP, -0.5f, 0.5f, D_ANY},
};
#define N_UNARY_CASES (sizeof UNARY_CASES / sizeof UNARY_CASES[0])

static gg_tensor *unary_fn(gg_tensor *const *in, void *ctx) { return apply_unary(ctx, in[0]); }

typedef enum bop { B_ADD, B_SUB, B_MUL, B_DIV } bop;
static const char *const BOP_NAME[] = {"gg_add", "gg_sub", "gg_mul", "gg_div"};

static gg_tensor *apply_binary(bop op, gg_tensor *a, gg_tensor *b) {
    switch (op) {
    case B_ADD: return gg_add(a, b);
    case B_SUB: return gg_sub(a, b);
    case B_MUL: return gg_mul(a, b);
    case B_DIV: return gg_div(a, b);
    }
    return NULL;
}

static gg_tensor *binary_fn(gg_tensor *const *in, void *ctx) { return apply_binary(*(bop *)ctx, in[0], in[1]); }

static void gradcheck_(gg_gradcheck_fn f, void *ctx, int n, gg_tensor *const *in, const char *what,
                       const char *file, int line) {
    gg_gradcheck_report rep;
    char buf[256];
    int st = gg_gradcheck(f, ctx, n, in, NULL, &rep);
    cr_assert_eq(st, GG_OK, "%s:%d: %s: gradcheck did not run: %s", file, line, what, gg_last_error());
    cr_assert(rep.passed, "%s:%d: %s: %s", file, line, what, gg_gradcheck_describe(&rep, buf, sizeof buf));
    cr_assert_gt(rep.n_checked, 0, "%s: nothing checked", what);
}
#define gradcheck(f, ctx, n, in, what) gradcheck_((f), (ctx), (n), (in), (what), __FILE__, __LINE__)

/* ================================ binary forward ================================ */

Test(elementwise, binary_same_shape) {
    gg_tensor *a = from(GG_SHAPE(2, 3), (float[]){1, 2, 3, 4, 5, 6});
    gg_tensor *b = from(GG_SHAPE(2, 3), (float[]){2, 4, 8, -1, 0.5f, 0});
    gg_tensor *y = gg_add(a, b);
    gt_assert_shape(y, 2, 3);
    assert_exact(y, 3, 6, 11, 3, 5.5f, 6);
    assert_exact(gg_sub(a, b), -1, -2, -5, 5, 4.5f, 6);
    assert_exact(gg_mul(a, b), 2, 8, 24, -4, 2.5f, 0);
    assert_exact(gg_div(a, b), 0.5f, 0.5f, 0.375f, -4, 10, INFINITY);
    cr_assert(!y->requires_grad && !y->grad_fn, "no input requires grad: nothing recorded");
    gg_tensor_free(a);
    gg_tensor_free(b);
}

Test(elementwise, binary_broadcast_row_and_column) {
    gg_tensor *a = from(GG_SHAPE(2, 3), (float[]){1, 2, 3, 4, 5, 6});
    gg_tensor *row = from(GG_SHAPE(3), (float[]){10, 20, 40});
    gg_tensor *col = from(GG_SHAPE(2, 1), (float[]){2, -1});
    assert_exact(gg_add(a, row), 11, 22, 43, 14, 25, 46);
    assert_exact(gg_sub(row, a), 9, 18, 37, 6, 15, 34);
    assert_exact(gg_mul(a, col), 2, 4, 6, -4, -5, -6);
    assert_exact(gg_div(a, col), 0.5f, 1, 1.5f, -4, -5, -6);
    /* [3,1] with [1,4] -> [3,4]: an outer sum/product */
    gg_tensor *c = from(GG_SHAPE(3, 1), (float[]){1, 2, 3});
    gg_tensor *r = from(GG_SHAPE(1, 4), (float[]){10, 20, 30, 40});
    gg_tensor *y = gg_add(c, r);
    gt_assert_shape(y, 3, 4);
    assert_exact(y, 11, 21, 31, 41, 12, 22, 32, 42, 13, 23, 33, 43);
    y = gg_mul(r, c);
    gt_assert_shape(y, 3, 4);
    assert_exact(y, 10, 20, 30, 40, 20, 40, 60, 80, 30, 60, 90, 120);
    /* [4] with [2,3,4] */
    gg_tensor *v = from(GG_SHAPE(4), (float[]){1, 2, 3, 4});
    gg_tensor *big = GT_IOTA(2, 3, 4);
    y = gg_sub(big, v);
    gt_assert_shape(y, 2, 3, 4);
    float *yv = values(y);
    for (int i = 0; i < 24; i++) cr_assert_eq(yv[i], (float)i - (float)(i % 4 + 1));
    free(yv);
    gg_tensor_free(v);
    gg_tensor_free(big);
    gg_tensor_free(c);
    gg_tensor_free(r);
    gg_tensor_free(a);
    gg_tensor_free(row);
    gg_tensor_free(col);
}

Test(elementwise, binary_rank0_and_empty) {
    gg_tensor *s = gg_tensor_scalar(4.0f);
    gg_tensor *a = from(GG_SHAPE(2, 3), (float[]){1, 2, 3, 4, 5, 6});
    gg_tensor *y = gg_div(s, a);
    gt_assert_shape(y, 2, 3);
    assert_exact(y, 4, 2, 4.0f / 3, 1, 0.8f, 4.0f / 6);
    y = gg_mul(s, s);
    cr_assert_eq(y->ndim, 0);
    assert_exact(y, 16);
    gg_tensor *e = gg_tensor_zeros(GG_SHAPE(0, 3)), *o = gg_tensor_ones(GG_SHAPE(3));
    cr_assert_eq(gg_requires_grad(e, true), GG_OK);
    cr_assert_eq(gg_requires_grad(o, true), GG_OK);
    y = gg_mul(e, o);
    gt_assert_shape(y, 0, 3);
    gg_tensor *seed = gg_tensor_zeros(GG_SHAPE(0, 3));
    cr_assert_eq(gg_backward_ex(y, seed, false), GG_OK, "%s", gg_last_error());
    gt_assert_shape(e->grad, 0, 3);
    assert_exact(o->grad, 0, 0, 0); /* summed over an empty dim */
    gg_tensor_free(seed);
    gg_tensor_free(o);
    gg_tensor_free(e);
    gg_tensor_free(s);
    gg_tensor_free(a);
}

Test(elementwise, binary_strided_and_expanded_inputs) {
    gg_tensor *base = GT_IOTA(3, 2); /* [[0,1],[2,3],[4,5]] */
    gg_tensor *t = gg_tensor_transpose(base, 0, 1); /* [2,3]: [[0,2,4],[1,3,5]] */
    gg_tensor *v = from(GG_SHAPE(3), (float[]){1, 10, 100});
    gg_tensor *e = gg_tensor_expand(v, GG_SHAPE(2, 3)); /* stride 0 rows */
    assert_exact(gg_add(t, e), 1, 12, 104, 2, 13, 105);
    assert_exact(gg_mul(t, t), 0, 4, 16, 1, 9, 25);
    gg_tensor *sl = gg_tensor_slice(base, 0, 0, 3, 2); /* rows 0 and 2: [2,2] */
    gg_tensor *one = gg_tensor_scalar(1.0f);
    assert_exact(gg_sub(sl, one), -1, 0, 3, 4);
    gg_tensor_free(one);
    gg_tensor_free(sl);
    gg_tensor_free(e);
    gg_tensor_free(v);
    gg_tensor_free(t);
    gg_tensor_free(base);
}

/* ================================ unary forward ================================ */

Test(elementwise, scalar_arithmetic) {
    gg_tensor *x = from(GG_SHAPE(4), (float[]){-2, 0, 0.5f, 4});
    assert_exact(gg_neg(x), 2, -0.0f, -0.5f, -4);
    assert_exact(gg_add_scalar(x, 1.5f), -0.5f, 1.5f, 2, 5.5f);
    assert_exact(gg_mul_scalar(x, -2.0f), 4, -0.0f, -1, -8);
    assert_exact(gg_rsub_scalar(x, 1.0f), 3, 1, 0.5f, -3);
    assert_exact(gg_rdiv_scalar(x, 2.0f), -1, INFINITY, 4, 0.5f);
    gg_tensor_free(x);
}

Test(elementwise, exp_log_sqrt_square) {
    gg_tensor *x = from(GG_SHAPE(6), (float[]){0, 1, -1, 4, 0.25f, -3});
    assert_near(gg_exp(x), 2e-7, 1, 2.718281828f, 0.3678794412f, 54.59815003f, 1.284025417f, 0.0497870684f);
    assert_near(gg_log(x), 2e-7, -INFINITY, 0, NAN, 1.386294361f, -1.386294361f, NAN);
    assert_exact(gg_sqrt(x), 0, 1, NAN, 2, 0.5f, NAN);
    assert_exact(gg_square(x), 0, 1, 1, 16, 0.0625f, 9);
    gg_tensor *s = from(GG_SHAPE(5), (float[]){INFINITY, -INFINITY, NAN, 100, -200});
    assert_exact(gg_exp(s), INFINITY, 0, NAN, INFINITY, 0);
    assert_near(gg_log(s), 2e-7, INFINITY, NAN, NAN, 4.605170186f, NAN);
    gg_tensor_free(s);
    gg_tensor_free(x);
}

Test(elementwise, pow_special_and_general_exponents) {
    gg_tensor *x = from(GG_SHAPE(4), (float[]){4, 0.25f, -2, 0});
    assert_exact(gg_pow(x, 2), 16, 0.0625f, 4, 0);
    assert_exact(gg_pow(x, 3), 64, 0.015625f, -8, 0);
    assert_exact(gg_pow(x, 1), 4, 0.25f, -2, 0);
    assert_exact(gg_pow(x, 0), 1, 1, 1, 1);
    assert_exact(gg_pow(x, 0.5f), 2, 0.5f, NAN, 0);
    assert_exact(gg_pow(x, -0.5f), 0.5f, 2, NAN, INFINITY);
    assert_exact(gg_pow(x, -1), 0.25f, 4, -0.5f, INFINITY);
    assert_exact(gg_pow(x, -2), 0.0625f, 16, 0.25f, INFINITY);
    assert_exact(gg_pow(x, 4), 256, 0.00390625f, 16, 0);
    assert_near(gg_pow(x, 2.5f), 2e-7, 32, 0.03125f, NAN, 0);
    gg_tensor *n = from(GG_SHAPE(1), (float[]){NAN});
    assert_exact(gg_pow(n, 0), 1); /* as torch.pow(nan, 0) */
    gg_tensor_free(n);
    gg_tensor_free(x);
}

Test(elementwise, activations) {
    gg_tensor *x = from(GG_SHAPE(6), (float[]){-2, -0.0f, 0, 0.5f, 3, NAN});
    assert_exact(gg_abs(x), 2, 0, 0, 0.5f, 3, NAN);
    assert_exact(gg_relu(x), 0, -0.0f, 0, 0.5f, 3, NAN); /* -0 and NaN pass, as torch.relu */
    assert_exact(gg_leaky_relu(x, 0.1f), -0.2f, -0.0f, 0, 0.5f, 3, NAN);
    assert_exact(gg_sign_ste(x), -1, 0, 0, 1, 1, 0); /* torch.sign(nan) == 0 */
    assert_near(gg_sigmoid(x), 3e-7, 0.119202922f, 0.5f, 0.5f, 0.622459331f, 0.952574127f, NAN);
    assert_near(gg_tanh(x), 3e-7, -0.964027580f, -0.0f, 0, 0.462117157f, 0.995054754f, NAN);
    assert_exact(gg_tanh(x), gg__tanhf(-2), -0.0f, 0, gg__tanhf(0.5f), gg__tanhf(3), NAN);
    gg_tensor *big = from(GG_SHAPE(4), (float[]){-100, 100, -INFINITY, INFINITY});
    assert_exact(gg_sigmoid(big), 0, 1, 0, 1);
    assert_exact(gg_tanh(big), -1, 1, -1, 1);
    gg_tensor_free(big);
    gg_tensor_free(x);
}

Test(elementwise, clamp_forward) {
    gg_tensor *x = from(GG_SHAPE(7), (float[]){-2, -1, -0.5f, 0, 1, 2, NAN});
    assert_exact(gg_clamp(x, -1, 1), -1, -1, -0.5f, 0, 1, 1, NAN);
    assert_exact(gg_clamp(x, 0.5f, 0.5f), 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, NAN);
    assert_exact(gg_clamp(x, -INFINITY, 0), -2, -1, -0.5f, 0, 0, 0, NAN);
    gg_tensor_free(x);
}

Test(elementwise, unary_on_rank0_strided_and_expanded_inputs) {
    gg_tensor *s = gg_tensor_scalar(-3.0f);
    gg_tensor *y = gg_abs(s);
    cr_assert_eq(y->ndim, 0);
    assert_exact(y, 3);
    gg_tensor *base = GT_IOTA(2, 3);
    gg_tensor *t = gg_tensor_transpose(base, 0, 1); /* [3,2]: 0 3 1 4 2 5 */
    assert_exact(gg_square(t), 0, 9, 1, 16, 4, 25);
    assert_exact(gg_sqrt(t), 0, sqrtf(3), 1, 2, sqrtf(2), sqrtf(5));
    gg_tensor *row = from(GG_SHAPE(1, 2), (float[]){-1, 2});
    gg_tensor *e = gg_tensor_expand(row, GG_SHAPE(3, 2));
    assert_exact(gg_relu(e), 0, 2, 0, 2, 0, 2);
    gg_tensor *z = gg_tensor_zeros(GG_SHAPE(2, 0));
    gt_assert_shape(gg_exp(z), 2, 0);
    gg_tensor_free(z);
    gg_tensor_free(e);
    gg_tensor_free(row);
    gg_tensor_free(t);
    gg_tensor_free(base);
    gg_tensor_free(s);
}

/* ================================ gradients by hand ================================ */

Test(elementwise, gradients_at_the_kinks_follow_pytorch) {
    gg_tensor *x = leaf(GG_SHAPE(5), (float[]){-1, -0.5f, 0, 0.5f, 1});
    assert_grad(x, gg_relu(x), 0, 0, 0, 1, 1);           /* 0 at 0 */
    assert_grad(x, gg_abs(x), -1, -1, 0, 1, 1);          /* sign(x), 0 at 0 */
    assert_grad(x, gg_clamp(x, -0.5f, 0.5f), 0, 1, 1, 1, 0); /* 1 at both bounds */
    assert_grad(x, gg_leaky_relu(x, 0.25f), 0.25f, 0.25f, 0.25f, 1, 1); /* slope at 0 */
    assert_grad(x, gg_sign_ste(x), 1, 1, 1, 1, 1);       /* straight through */
    assert_grad(x, gg_pow(x, 0), 0, 0, 0, 0, 0);         /* p == 0: zero gradient, even at 0 */
    assert_grad(x, gg_pow(x, 1), 1, 1, 1, 1, 1);
    assert_grad(x, gg_pow(x, 2), -2, -1, 0, 1, 2);
    assert_grad(x, gg_pow(x, 3), 3, 0.75f, 0, 0.75f, 3);
    assert_grad(x, gg_square(x), -2, -1, 0, 1, 2);
    assert_grad(x, gg_neg(x), -1, -1, -1, -1, -1);
    assert_grad(x, gg_rsub_scalar(x, 7), -1, -1, -1, -1, -1);
    assert_grad(x, gg_add_scalar(x, 7), 1, 1, 1, 1, 1);
    assert_grad(x, gg_mul_scalar(x, -3), -3, -3, -3, -3, -3);
    gg_tensor_free(x);
}

Test(elementwise, gradients_at_nan_follow_pytorch) {
    gg_tensor *x = leaf(GG_SHAPE(3), (float[]){NAN, -1, 2});
    assert_grad(x, gg_relu(x), 1, 0, 1);          /* threshold_backward: grad unless y <= 0 */
    assert_grad(x, gg_leaky_relu(x, 0.5f), 0.5f, 0.5f, 1);
    assert_grad(x, gg_clamp(x, -1, 1), 0, 1, 0);
    assert_grad(x, gg_abs(x), 0, -1, 1);          /* grad * sign(x), sign(NaN) = 0 */
    assert_grad(x, gg_sign_ste(x), 1, 1, 1);
    gg_tensor_free(x);
}

Test(elementwise, gradients_of_smooth_ops) {
    gg_tensor *x = leaf(GG_SHAPE(3), (float[]){0.25f, 1, 4});
    assert_grad(x, gg_sqrt(x), 1, 0.5f, 0.25f);
    assert_grad(x, gg_log(x), 4, 1, 0.25f);
    assert_grad(x, gg_rdiv_scalar(x, 2), -32, -2, -0.125f);
    assert_grad(x, gg_pow(x, -1), -16, -1, -0.0625f);
    assert_grad(x, gg_pow(x, 0.5f), 1, 0.5f, 0.25f);
    assert_grad(x, gg_pow(x, 1.5f), 0.75f, 1.5f, 3);
    float *g = grad_ones(x, gg_exp(x));
    cr_assert_float_eq(g[1], 2.718281828f, 3e-7);
    free(g);
    gg_tensor_free(x->grad);
    x->grad = NULL;
    gg_tensor *z = leaf(GG_SHAPE(1), (float[]){0});
    assert_grad(z, gg_sigmoid(z), 0.25f);
    assert_grad(z, gg_tanh(z), 1);
    gg_tensor_free(z);
    gg_tensor_free(x);
}

Test(elementwise, same_tensor_twice) {
    gg_tensor *x = leaf(GG_SHAPE(2, 2), (float[]){1, -2, 0.5f, 3});
    assert_grad(x, gg_mul(x, x), 2, -4, 1, 6);
    assert_grad(x, gg_add(x, x), 2, 2, 2, 2);
    assert_grad(x, gg_sub(x, x), 0, 0, 0, 0);
    float *g = grad_ones(x, gg_div(x, x)); /* 1/x - x/x^2 = 0 */
    for (int i = 0; i < 4; i++) cr_assert_float_eq(g[i], 0.0f, 1e-6);
    free(g);
    gg_tensor_free(x);
}

Test(elementwise, broadcast_gradients_are_summed_back) {
    gg_tensor *c = leaf(GG_SHAPE(3, 1), (float[]){1, 2, 3});
    gg_tensor *r = leaf(GG_SHAPE(1, 4), (float[]){10, 20, 30, 40});
    gg_tensor *y = gg_mul(c, r);
    gg_tensor *seed = gg_tensor_ones(GG_SHAPE(3, 4));
    cr_assert_eq(gg_backward_ex(y, seed, false), GG_OK, "%s", gg_last_error());
    assert_exact(c->grad, 100, 100, 100);
    assert_exact(r->grad, 6, 6, 6, 6);
    gg_tensor_free(c->grad);
    gg_tensor_free(r->grad);
    c->grad = r->grad = NULL;
    y = gg_sub(c, r);
    cr_assert_eq(gg_backward_ex(y, seed, false), GG_OK, "%s", gg_last_error());
    assert_exact(c->grad, 4, 4, 4);
    assert_exact(r->grad, -3, -3, -3, -3);
    gg_tensor *s = gg_tensor_scalar(2.0f);
    cr_assert_eq(gg_requires_grad(s, true), GG_OK);
    assert_grad(s, gg_div(c, s), -1.5f); /* -(1+2+3)/4 */
    gg_tensor_free(seed);
    gg_tensor_free(s);
    gg_tensor_free(c);
    gg_tensor_free(r);
}

Test(elementwise, backward_accumulates_and_skips_inputs_without_grad) {
    gg_tensor *a = leaf(GG_SHAPE(2), (float[]){1, 2});
    gg_tensor *b = from(GG_SHAPE(2), (float[]){3, 4});
    for (int k = 0; k < 2; k++) {
        gg_tensor *y = gg_mul(a, b);
        gg_tensor *seed = gg_tensor_ones(GG_SHAPE(2));
        cr_assert_eq(gg_backward_ex(y, seed, false), GG_OK, "%s", gg_last_error());
        gg_tensor_free(seed);
    }
    assert_exact(a->grad, 6, 8);
    cr_assert_null(b->grad);
    gg_tensor_free(a);
    gg_tensor_free(b);
}

Test(elementwise, chain_through_non_leaves) {
    /* y = exp(x) * x: dy/dx = exp(x) (1 + x), through a non-leaf's accumulated gradient */
    gg_tensor *x = leaf(GG_SHAPE(2), (float[]){0, 1});
    float *g = grad_ones(x, gg_mul(gg_exp(x), x));
    cr_assert_float_eq(g[0], 1.0f, 1e-6);
    cr_assert_float_eq(g[1], 2.0f * 2.718281828f, 1e-5);
    free(g);
    gg_tensor_free(x);
}

Test(elementwise, sign_ste_gradient_is_the_upstream_gradient) {
    int64_t shape[2] = {3, 4};
    gg_tensor *x = rand_leaf(2, shape, true, D_ANY, 5);
    gg_tensor *y = gg_sign_ste(x);
    gg_tensor *seed = gg_tensor_empty(2, shape);
    fill(seed, D_ANY, 6);
    cr_assert_eq(gg_backward_ex(y, seed, false), GG_OK, "%s", gg_last_error());
    float *g = values(x->grad), *s = values(seed);
    for (int i = 0; i < 12; i++) cr_assert_eq(g[i], s[i]);
    free(g);
    free(s);
    gg_tensor_free(seed);
    gg_tensor_free(x);
}

Test(elementwise, recording_rules) {
    gg_tensor *a = leaf(GG_SHAPE(2), (float[]){1, 2});
    gg_tensor *b = from(GG_SHAPE(2), (float[]){3, 4});
    size_t nodes = gg_tape_num_nodes(NULL);
    gg_tensor *y = gg_add(b, b);
    cr_assert(!y->requires_grad);
    cr_assert_eq(gg_tape_num_nodes(NULL), nodes);
    y = gg_add(a, b);
    cr_assert(y->requires_grad && y->grad_fn);
    cr_assert_str_eq(y->grad_fn->op->name, "add");
    cr_assert_eq(gg_tape_num_nodes(NULL), nodes + 1);
    cr_assert_str_eq(gg_tanh(a)->grad_fn->op->name, "tanh");
    cr_assert_str_eq(gg_pow(a, 2)->grad_fn->op->name, "pow");
    gg_no_grad_begin();
    y = gg_exp(a);
    gg_no_grad_end();
    cr_assert(!y->requires_grad);
    gg_tensor_free(a);
    gg_tensor_free(b);
}

/* ================================ gradient checks ================================ */

Test(elementwise, gradcheck_every_unary_op) {
    const int64_t shape[2] = {2, 3};
    for (size_t k = 0; k < N_UNARY_CASES; k++) {
        const ucase *c = &UNARY_CASES[k];
        char what[96];
        for (int variant = 0; variant < 3; variant++) {
            gg_tensor *x = variant == 2 ? rand_leaf(0, shape, false, c->dom, 100 + k)
                                        : rand_leaf(2, shape, variant == 1, c->dom, 100 + k);
            snprintf(what, sizeof what, "%s (%s)", c->name,
                     variant == 0 ? "contiguous" : variant == 1 ? "transposed" : "rank 0");
            gradcheck(unary_fn, (void *)c, 1, &x, what);
            gg_tensor_free(x);
        }
    }
}

typedef struct bshape {
    int nda;
    int64_t a[3];
    bool ta;
    int ndb;
    int64_t b[3];
    bool tb;
} bshape;

static const bshape BINARY_SHAPES[] = {
    {2, {2, 3}, false, 2, {2, 3}, false}, /* same shape */
    {2, {3, 1}, false, 2, {1, 4}, false}, /* outer */
    {1, {4}, false, 3, {2, 3, 4}, false}, /* leading dims */
    {3, {2, 3, 4}, false, 1, {4}, false},
    {0, {0}, false, 2, {2, 3}, false},    /* rank 0 */
    {2, {2, 3}, false, 0, {0}, false},
    {2, {2, 3}, true, 2, {2, 3}, false},  /* transposed */
    {2, {2, 3}, false, 2, {2, 3}, true},
    {2, {3, 4}, true, 2, {3, 1}, false},  /* transposed with broadcast */
    {3, {2, 1, 3}, true, 2, {4, 1}, false},
};

Test(elementwise, gradcheck_every_binary_op_and_input) {
    for (int op = B_ADD; op <= B_DIV; op++) {
        for (size_t k = 0; k < sizeof BINARY_SHAPES / sizeof BINARY_SHAPES[0]; k++) {
            const bshape *s = &BINARY_SHAPES[k];
            gg_tensor *in[2] = {rand_leaf(s->nda, s->a, s->ta, D_ANY, 200 + k),
                                rand_leaf(s->ndb, s->b, s->tb, op == B_DIV ? D_MAG : D_ANY, 300 + k)};
            char what[128], sa[64], sb[64];
            snprintf(what, sizeof what, "%s %s%s with %s%s", BOP_NAME[op], gg_shape_str(s->nda, s->a, sa, 64),
                     s->ta ? "^T" : "", gg_shape_str(s->ndb, s->b, sb, 64), s->tb ? "^T" : "");
            bop o = (bop)op;
            gradcheck(binary_fn, &o, 2, in, what);
            /* each input alone, too: the other one needs no gradient */
            for (int i = 0; i < 2; i++) {
                gg_requires_grad(in[1 - i], false);
                gradcheck(binary_fn, &o, 2, in, what);
                gg_requires_grad(in[1 - i], true);
            }
            gg_tensor_free(in[0]);
            gg_tensor_free(in[1]);
        }
    }
}

static gg_tensor *square_by_mul(gg_tensor *const *in, void *ctx) {
    (void)ctx;
    return gg_mul(in[0], in[0]);
}

/* tanh(x w + b) / (w^2 + 1): w reaches the output along two broadcast paths, through non-leaves. */
static gg_tensor *composition(gg_tensor *const *in, void *ctx) {
    (void)ctx;
    return gg_div(gg_tanh(gg_add(gg_mul(in[0], in[1]), in[2])), gg_add_scalar(gg_square(in[1]), 1.0f));
}

Test(elementwise, gradcheck_same_tensor_twice_and_compositions) {
    const int64_t shape[2] = {3, 2}, wshape[1] = {2};
    gg_tensor *x = rand_leaf(2, shape, true, D_ANY, 7);
    gradcheck(square_by_mul, NULL, 1, &x, "x*x");
    gg_tensor *in[3] = {x, rand_leaf(1, wshape, false, D_ANY, 8), rand_leaf(0, wshape, false, D_ANY, 9)};
    gradcheck(composition, NULL, 3, in, "tanh(x w + b) / (w^2 + 1)");
    gg_tensor_free(in[2]);
    gg_tensor_free(in[1]);
    gg_tensor_free(x);
}

/* ================================ engine vs naive reference ================================ */

/* A random tensor of `shape` that is, at random, contiguous, a permuted view, or a step-2 slice. */
static gg_tensor *rand_layout(gt_lcg *g, int nd, const int64_t *shape, uint64_t seed) {
    int kind = (int)gt_lcg_range(g, 0, 2);
    gg_tensor *t = NULL;
    if (kind == 1 && nd >= 2) { /* reversed dims, permuted back */
        int64_t bs[GG_MAX_DIMS];
        int perm[GG_MAX_DIMS];
        for (int d = 0; d < nd; d++) bs[d] = shape[nd - 1 - d], perm[d] = nd - 1 - d;
        gg_tensor *base = gg_tensor_empty(nd, bs);
        fill(base, D_MAG, seed);
        t = gg_tensor_permute(base, perm);
        gg_tensor_free(base);
    } else if (kind == 2 && nd >= 1) { /* every other element along a random dim */
        int d = (int)gt_lcg_range(g, 0, nd - 1);
        int64_t bs[GG_MAX_DIMS];
        memcpy(bs, shape, sizeof(int64_t) * (size_t)nd);
        bs[d] = 2 * shape[d];
        gg_tensor *base = gg_tensor_empty(nd, bs);
        fill(base, D_MAG, seed);
        t = gg_tensor_slice(base, d, 0, bs[d], 2);
        gg_tensor_free(base);
    } else {
        t = gg_tensor_empty(nd, shape);
        fill(t, D_MAG, seed);
    }
    cr_assert_not_null(t, "%s", gg_last_error());
    return t;
}

static float get_bcast(const gg_tensor *t, int nd, const int64_t *idx) {
    int64_t ti[GG_MAX_DIMS];
    int lead = nd - t->ndim;
    for (int d = 0; d < t->ndim; d++) ti[d] = t->shape[d] == 1 ? 0 : idx[d + lead];
    float v = NAN;
    gg_tensor_get(t, ti, &v);
    return v;
}

static int64_t flat_bcast(const gg_tensor *t, int nd, const int64_t *idx) {
    int64_t f = 0;
    int lead = nd - t->ndim;
    for (int d = 0; d < t->ndim; d++) f = f * t->shape[d] + (t->shape[d] == 1 ? 0 : idx[d + lead]);
    return f;
}

Test(elementwise, broadcast_engine_matches_naive_loop) {
    gt_lcg g;
    gt_lcg_seed(&g, 11);
    for (int trial = 0; trial < 150; trial++) {
        int nd = (int)gt_lcg_range(&g, 1, 5);
        int64_t out[GG_MAX_DIMS], sa[GG_MAX_DIMS], sb[GG_MAX_DIMS];
        for (int d = 0; d < nd; d++) out[d] = gt_lcg_range(&g, 1, 7);
        int nda = (int)gt_lcg_range(&g, 0, nd), ndb = (int)gt_lcg_range(&g, 0, nd);
        if (gt_lcg_range(&g, 0, 1)) nda = nd; /* at least one operand often has the full rank */
        else ndb = nd;
        for (int d = 0; d < nda; d++) sa[d] = gt_lcg_range(&g, 0, 2) == 0 ? 1 : out[nd - nda + d];
        for (int d = 0; d < ndb; d++) sb[d] = gt_lcg_range(&g, 0, 2) == 0 ? 1 : out[nd - ndb + d];
        gg_tensor *a = rand_layout(&g, nda, sa, 1000 + trial), *b = rand_layout(&g, ndb, sb, 2000 + trial);
        gg_requires_grad(a, true);
        gg_requires_grad(b, true);
        bop op = (bop)gt_lcg_range(&g, 0, 3);
        gg_tensor *y = apply_binary(op, a, b);
        cr_assert_not_null(y, "%s", gg_last_error());
        int64_t yn = y->numel;
        float *yv = values(y);
        /* backward with a random seed, against gradients accumulated naively in double */
        gg_tensor *seed = gg_tensor_empty(y->ndim, y->shape);
        fill(seed, D_MAG, 3000 + trial);
        const float *c = gg_tensor_data(seed);
        cr_assert_eq(gg_backward_ex(y, seed, false), GG_OK, "%s", gg_last_error());
        /* ga, gb and the sums of |terms| (float summation error scales with them) */
        double *ga = calloc((size_t)a->numel, sizeof(double)), *gb = calloc((size_t)b->numel, sizeof(double));
        double *ma = calloc((size_t)a->numel, sizeof(double)), *mb = calloc((size_t)b->numel, sizeof(double));
        int64_t idx[GG_MAX_DIMS] = {0};
        for (int64_t i = 0; i < yn; i++) {
            float x1 = get_bcast(a, nd, idx), x2 = get_bcast(b, nd, idx), r;
            double da, db;
            switch (op) {
            case B_ADD: r = x1 + x2, da = 1, db = 1; break;
            case B_SUB: r = x1 - x2, da = 1, db = -1; break;
            case B_MUL: r = x1 * x2, da = x2, db = x1; break;
            default: r = x1 / x2, da = 1.0 / x2, db = -(double)x1 / ((double)x2 * x2); break;
            }
            cr_assert(same_float(yv[i], r), "trial %d %s: element %lld is %.9g, naive %.9g", trial, BOP_NAME[op],
                      (long long)i, (double)yv[i], (double)r);
            int64_t fa = flat_bcast(a, nd, idx), fb = flat_bcast(b, nd, idx);
            ga[fa] += c[i] * da;
            gb[fb] += c[i] * db;
            ma[fa] += fabs(c[i] * da);
            mb[fb] += fabs(c[i] * db);
            gt_next_index(nd, y->shape, idx);
        }
        float *gav = values(a->grad), *gbv = values(b->grad);
        for (int64_t i = 0; i < a->numel; i++)
            cr_assert(fabs(gav[i] - ga[i]) <= 1e-6 + 1e-5 * ma[i], "trial %d %s: ga[%lld] %.9g vs %.9g",
                      trial, BOP_NAME[op], (long long)i, (double)gav[i], ga[i]);
        for (int64_t i = 0; i < b->numel; i++)
            cr_assert(fabs(gbv[i] - gb[i]) <= 1e-6 + 1e-5 * mb[i], "trial %d %s: gb[%lld] %.9g vs %.9g",
                      trial, BOP_NAME[op], (long long)i, (double)gbv[i], gb[i]);
        free(gav);
        free(gbv);
        free(ga);
        free(gb);
        free(ma);
        free(mb);
        free(yv);
        gg_tensor_free(seed);
        gg_tensor_free(a);
        gg_tensor_free(b);
        gg_tape_reset(NULL);
    }
}

/* Every unary op on a strided (permuted, sliced, expanded) input gives, bit for bit, its result on a
 * contiguous copy, forward and backward; and the contiguous kernel equals the scalar formula. */
Test(elementwise, unary_strided_paths_match_contiguous) {
    gt_lcg g;
    gt_lcg_seed(&g, 12);
    for (size_t k = 0; k < N_UNARY_CASES + 1; k++) {
        const ucase ste = {"sign_ste", U_SIGN_STE, 0, 0, D_ANY};
        const ucase *c = k < N_UNARY_CASES ? &UNARY_CASES[k] : &ste;
        for (int trial = 0; trial < 4; trial++) {
            int nd = (int)gt_lcg_range(&g, 1, 4);
            int64_t shape[GG_MAX_DIMS];
            for (int d = 0; d < nd; d++) shape[d] = gt_lcg_range(&g, 1, 9);
            gg_tensor *x = rand_layout(&g, nd, shape, 500 + 10 * k + (uint64_t)trial);
            if (c->dom == D_POS) { /* rand_layout draws both signs */
                gg_tensor_free(x);
                x = rand_leaf(nd, shape, true, D_POS, 7 + k);
            }
            gg_requires_grad(x, true);
            gg_tensor *xc = gg_tensor_copy(x);
            gg_requires_grad(xc, true);
            gg_tensor *y = apply_unary(c, x), *yc = apply_unary(c, xc);
            cr_assert(y && yc, "%s: %s", c->name, gg_last_error());
            float *v = values(y), *vc = values(yc);
            for (int64_t i = 0; i < y->numel; i++)
                cr_assert(same_float(v[i], vc[i]), "%s: element %lld strided %.9g, contiguous %.9g", c->name,
                          (long long)i, (double)v[i], (double)vc[i]);
            gg_tensor *seed = gg_tensor_empty(nd, shape);
            fill(seed, D_MAG, 9);
            cr_assert_eq(gg_backward_ex(y, seed, false), GG_OK, "%s", gg_last_error());
            cr_assert_eq(gg_backward_ex(yc, seed, false), GG_OK, "%s", gg_last_error());
            float *gx = values(x->grad), *gxc = values(xc->grad);
            for (int64_t i = 0; i < x->numel; i++)
                cr_assert(same_float(gx[i], gxc[i]), "%s: grad %lld strided %.9g, contiguous %.9g", c->name,
                          (long long)i, (double)gx[i], (double)gxc[i]);
            free(gx);
            free(gxc);
            free(v);
            free(vc);
            gg_tensor_free(seed);
            gg_tensor_free(xc);
            gg_tensor_free(x);
            gg_tape_reset(NULL);
        }
    }
    /* an expanded (stride 0) input */
    gg_tensor *row = from(GG_SHAPE(1, 3), (float[]){0.5f, -1, 2});
    gg_tensor *e = gg_tensor_expand(row, GG_SHAPE(40, 3));
    gg_tensor *ec = gg_tensor_copy(e);
    for (size_t k = 0; k < N_UNARY_CASES; k++) {
        float *v = values(apply_unary(&UNARY_CASES[k], e)), *vc = values(apply_unary(&UNARY_CASES[k], ec));
        for (int i = 0; i < 120; i++) cr_assert(same_float(v[i], vc[i]), "%s expanded", UNARY_CASES[k].name);
        free(v);
        free(vc);
    }
    gg_tensor_free(ec);
    gg_tensor_free(e);
    gg_tensor_free(row);
}

/* Inputs transposed in their two inner dims are walked in tiles: same results as on contiguous copies. */
Test(elementwise, tiled_transposed_path_matches_contiguous) {
    const int64_t shapes[3][3] = {{37, 45, 0}, {2, 33, 70}, {100, 17, 0}};
    const int nds[3] = {2, 3, 2};
    for (int k = 0; k < 3; k++) {
        const int nd = nds[k];
        const int64_t *shape = shapes[k];
        for (size_t u = 0; u < N_UNARY_CASES; u++) {
            gg_tensor *x = rand_leaf(nd, shape, true, UNARY_CASES[u].dom, 60 + u);
            gg_tensor *xc = gg_tensor_copy(x);
            gg_requires_grad(xc, true);
            gg_tensor *y = apply_unary(&UNARY_CASES[u], x), *yc = apply_unary(&UNARY_CASES[u], xc);
            gg_tensor *seed = gg_tensor_empty(nd, shape);
            fill(seed, D_MAG, 61);
            cr_assert_eq(gg_backward_ex(y, seed, false), GG_OK, "%s", gg_last_error());
            cr_assert_eq(gg_backward_ex(yc, seed, false), GG_OK, "%s", gg_last_error());
            float *v = values(y), *vc = values(yc), *g = values(x->grad), *gc = values(xc->grad);
            for (int64_t i = 0; i < x->numel; i++) {
                cr_assert(same_float(v[i], vc[i]), "%s: y[%lld] %.9g vs %.9g", UNARY_CASES[u].name, (long long)i,
                          (double)v[i], (double)vc[i]);
                cr_assert(same_float(g[i], gc[i]), "%s: grad[%lld] %.9g vs %.9g", UNARY_CASES[u].name,
                          (long long)i, (double)g[i], (double)gc[i]);
            }
            free(v);
            free(vc);
            free(g);
            free(gc);
            gg_tensor_free(seed);
            gg_tensor_free(xc);
            gg_tensor_free(x);
        }
        for (int op = B_ADD; op <= B_DIV; op++) {
            for (int variant = 0; variant < 3; variant++) { /* a^T with b, b^T with a, a^T with a row */
                int64_t row[1] = {shape[nd - 1]};
                gg_tensor *a = rand_leaf(nd, shape, variant != 1, D_ANY, 70);
                gg_tensor *b = variant == 2 ? rand_leaf(1, row, false, D_MAG, 71)
                                            : rand_leaf(nd, shape, variant == 1, D_MAG, 71);
                gg_tensor *ac = gg_tensor_copy(a), *bc = gg_tensor_copy(b);
                gg_requires_grad(ac, true);
                gg_requires_grad(bc, true);
                gg_tensor *y = apply_binary((bop)op, a, b), *yc = apply_binary((bop)op, ac, bc);
                gg_tensor *seed = gg_tensor_empty(nd, shape);
                fill(seed, D_MAG, 72);
                cr_assert_eq(gg_backward_ex(y, seed, false), GG_OK, "%s", gg_last_error());
                cr_assert_eq(gg_backward_ex(yc, seed, false), GG_OK, "%s", gg_last_error());
                const gg_tensor *pairs[3][2] = {{y, yc}, {a->grad, ac->grad}, {b->grad, bc->grad}};
                for (int p = 0; p < 3; p++) {
                    float *v = values(pairs[p][0]), *vc = values(pairs[p][1]);
                    for (int64_t i = 0; i < pairs[p][0]->numel; i++)
                        cr_assert(same_float(v[i], vc[i]), "%s variant %d, tensor %d [%lld]: %.9g vs %.9g",
                                  BOP_NAME[op], variant, p, (long long)i, (double)v[i], (double)vc[i]);
                    free(v);
                    free(vc);
                }
                gg_tensor_free(seed);
                gg_tensor_free(a);
                gg_tensor_free(b);
                gg_tensor_free(ac);
                gg_tensor_free(bc);
            }
        }
        gg_tape_reset(NULL);
    }
}

/* ================================ vectorised math vs libm ================================ */

static double ulps(float got, double ref) {
    if (isnan(ref)) return isnan(got) ? 0 : INFINITY;
    float rf = (float)ref;
    if (isinf(rf)) return got == rf ? 0 : INFINITY;
    double unit = fabsf(rf) < 1.17549435e-38f ? 1.401298464e-45 : (double)nextafterf(fabsf(rf), INFINITY) - fabsf(rf);
    return fabs((double)got - ref) / unit;
}

Test(elementwise, vector_math_matches_libm) {
    double worst[4] = {0};
    float at[4] = {0};
    for (uint64_t u = 0; u <= 0xffffffffu; u += 8191) {
        float x;
        uint32_t bits = (uint32_t)u;
        memcpy(&x, &bits, sizeof x);
        double e[4] = {ulps(gg__expf(x), exp((double)x)), ulps(gg__logf(x), log((double)x)),
                       ulps(gg__tanhf(x), tanh((double)x)), ulps(gg__sigmoidf(x), 1.0 / (1.0 + exp(-(double)x)))};
        if (fabsf(x) > 87.0f) e[3] = 0; /* sigmoid underflows to 0 where the reference is subnormal */
        for (int k = 0; k < 4; k++)
            if (e[k] > worst[k]) worst[k] = e[k], at[k] = x;
    }
    cr_assert_leq(worst[0], 1.5, "exp: %g ulp at %.9g", worst[0], (double)at[0]);
    cr_assert_leq(worst[1], 1.5, "log: %g ulp at %.9g", worst[1], (double)at[1]);
    cr_assert_leq(worst[2], 2.5, "tanh: %g ulp at %.9g", worst[2], (double)at[2]);
    cr_assert_leq(worst[3], 3.5, "sigmoid: %g ulp at %.9g", worst[3], (double)at[3]);
    const float sp[] = {NAN, INFINITY, -INFINITY, 0.0f, -0.0f, 1e-45f, 1e-40f, 88.72f, 88.73f, -103.0f, -104.5f};
    for (size_t i = 0; i < sizeof sp / sizeof sp[0]; i++) {
        float x = sp[i];
        cr_assert(ulps(gg__expf(x), exp((double)x)) <= 1, "exp(%g) = %g", (double)x, (double)gg__expf(x));
        cr_assert(ulps(gg__logf(x), log((double)x)) <= 1, "log(%g) = %g", (double)x, (double)gg__logf(x));
        cr_assert(ulps(gg__tanhf(x), tanh((double)x)) <= 1, "tanh(%g) = %g", (double)x, (double)gg__tanhf(x));
    }
}

/* ================================ threads ================================ */

/* Forward and backward of every op on > 100k elements (transposed and broadcast inputs), with one and
 * with two threads: the results must be identical bit for bit. */
static void run_large(float **outs, int *n_outs) {
    const int64_t shape[2] = {331, 401}, rshape[1] = {401};
    int k = 0;
    for (size_t u = 0; u < N_UNARY_CASES; u++) {
        gg_tensor *x = rand_leaf(2, shape, true, UNARY_CASES[u].dom, 40 + u);
        gg_tensor *y = apply_unary(&UNARY_CASES[u], x);
        gg_tensor *seed = gg_tensor_empty(2, shape);
        fill(seed, D_MAG, 41);
        cr_assert_eq(gg_backward_ex(y, seed, false), GG_OK, "%s", gg_last_error());
        outs[k++] = values(y);
        outs[k++] = values(x->grad);
        gg_tensor_free(seed);
        gg_tensor_free(x);
    }
    for (int op = B_ADD; op <= B_DIV; op++) {
        gg_tensor *a = rand_leaf(2, shape, true, D_ANY, 50), *b = rand_leaf(1, rshape, false, D_MAG, 51);
        gg_tensor *y = apply_binary((bop)op, a, b);
        gg_tensor *seed = gg_tensor_empty(2, shape);
        fill(seed, D_MAG, 52);
        cr_assert_eq(gg_backward_ex(y, seed, false), GG_OK, "%s", gg_last_error());
        outs[k++] = values(y);
        outs[k++] = values(a->grad);
        outs[k++] = values(b->grad);
        gg_tensor_free(seed);
        gg_tensor_free(a);
        gg_tensor_free(b);
    }
    gg_tape_reset(NULL);
    *n_outs = k;
}

Test(elementwise, large_tensors_same_result_with_1_and_2_threads) {
    float *one[2 * N_UNARY_CASES + 12], *two[2 * N_UNARY_CASES + 12];
    int n1, n2;
    cr_assert_eq(gg_set_num_threads(1), GG_OK);
    run_large(one, &n1);
    cr_assert_eq(gg_set_num_threads(2), GG_OK);
    run_large(two, &n2);
    cr_assert_eq(n1, n2);
    const int64_t big = 331 * 401;
    for (int k = 0; k < n1; k++) {
        int64_t n = (k >= 2 * (int)N_UNARY_CASES && (k - 2 * (int)N_UNARY_CASES) % 3 == 2) ? 401 : big;
        cr_assert(memcmp(one[k], two[k], sizeof(float) * (size_t)n) == 0, "output %d differs between 1 and 2 "
                  "threads", k);
        free(one[k]);
        free(two[k]);
    }
}

/* ================================ errors ================================ */

Test(elementwise, incompatible_broadcast_names_op_and_shapes) {
    gg_tensor *a = gg_tensor_ones(GG_SHAPE(2, 3));
    gg_tensor *b = gg_tensor_ones(GG_SHAPE(4));
    cr_assert_eq(gg_requires_grad(a, true), GG_OK);
    size_t tensors = gg_tape_num_tensors(NULL), nodes = gg_tape_num_nodes(NULL);
    for (int op = B_ADD; op <= B_DIV; op++) {
        gg_clear_error();
        cr_assert_null(apply_binary((bop)op, a, b));
        gt_assert_error(GG_ERR_SHAPE, BOP_NAME[op]);
        gt_assert_msg_has("[2,3]");
        gt_assert_msg_has("[4]");
    }
    cr_assert_eq(gg_tape_num_tensors(NULL), tensors, "a failed op allocates nothing on the tape");
    cr_assert_eq(gg_tape_num_nodes(NULL), nodes);
    gg_tensor_free(a);
    gg_tensor_free(b);
}

Test(elementwise, null_inputs_are_sticky) {
    gg_tensor *x = gg_tensor_ones(GG_SHAPE(2));
    gg_clear_error();
    cr_assert_null(gg_exp(NULL));
    gt_assert_error(GG_ERR_ARG, "gg_exp");
    gg_clear_error();
    cr_assert_null(gg_mul(x, NULL));
    gt_assert_error(GG_ERR_ARG, "gg_mul");
    /* the first error survives a chain of ops handed its NULL */
    gg_clear_error();
    gg_tensor *three = gg_tensor_ones(GG_SHAPE(3));
    gg_tensor *bad = gg_add(x, three);
    gg_tensor_free(three);
    cr_assert_null(bad);
    char first[512];
    snprintf(first, sizeof first, "%s", gg_last_error());
    for (size_t k = 0; k < N_UNARY_CASES; k++) {
        cr_assert_null(apply_unary(&UNARY_CASES[k], bad), "%s", UNARY_CASES[k].name);
        cr_assert_str_eq(gg_last_error(), first, "%s replaced the first error", UNARY_CASES[k].name);
    }
    const ucase ste = {"sign_ste", U_SIGN_STE, 0, 0, D_ANY};
    cr_assert_null(apply_unary(&ste, bad));
    for (int op = B_ADD; op <= B_DIV; op++) {
        cr_assert_null(apply_binary((bop)op, bad, x));
        cr_assert_null(apply_binary((bop)op, x, bad));
    }
    cr_assert_str_eq(gg_last_error(), first);
    cr_assert_eq(gg_last_status(), GG_ERR_SHAPE);
    gg_tensor_free(x);
}

Test(elementwise, clamp_bounds_are_checked) {
    gg_tensor *x = gg_tensor_ones(GG_SHAPE(2, 3));
    size_t tensors = gg_tape_num_tensors(NULL);
    cr_assert_null(gg_clamp(x, 1.0f, -1.0f));
    gt_assert_error(GG_ERR_ARG, "gg_clamp");
    gt_assert_msg_has("lo > hi");
    gt_assert_msg_has("[2,3]");
    gg_clear_error();
    cr_assert_null(gg_clamp(x, NAN, 1.0f));
    gt_assert_error(GG_ERR_ARG, "NaN");
    gg_clear_error();
    cr_assert_null(gg_clamp(x, 0.0f, NAN));
    gt_assert_error(GG_ERR_ARG, "gg_clamp");
    cr_assert_eq(gg_tape_num_tensors(NULL), tensors);
    gg_tensor_free(x);
}
