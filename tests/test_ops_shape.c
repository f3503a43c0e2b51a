/* Shape ops (reshape, permute, transpose, slice, expand, squeeze, unsqueeze, concat, stack, pad) and
 * kron: hand-computed forwards, storage sharing of views, gradient checks of every input (contiguous and
 * transposed leaves), diamonds, kron against a plain-C reference, every error path and sticky NULLs. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "gg_test_util.h"
#include "groupgrad.h"

static void teardown(void) {
    gg_tape_reset(NULL);
    gg_set_grad_enabled(true);
    gg_clear_error();
}

TestSuite(shape, .fini = teardown);
TestSuite(kron, .fini = teardown);

/* ---- helpers ---- */

static gg_tensor *rand_tensor(int ndim, const int64_t *shape, uint64_t seed) {
    gg_rng rng;
    gg_rng_init(&rng, seed);
    gg_tensor *t = gg_tensor_empty(ndim, shape);
    cr_assert_not_null(t, "%s", gg_last_error());
    cr_assert_eq(gg_rand_uniform(t, -1.0f, 1.0f, &rng), GG_OK);
    return t;
}

/* Contiguous random leaf that requires grad (caller frees). */
static gg_tensor *leaf(int ndim, const int64_t *shape, uint64_t seed) {
    gg_tensor *t = rand_tensor(ndim, shape, seed);
    cr_assert_eq(gg_requires_grad(t, true), GG_OK);
    return t;
}

/* Non-contiguous random leaf of `shape`: the transpose of its last two dims over a contiguous base. */
static gg_tensor *tleaf(int ndim, const int64_t *shape, uint64_t seed) {
    cr_assert_geq(ndim, 2);
    int64_t bs[GG_MAX_DIMS];
    memcpy(bs, shape, sizeof(int64_t) * (size_t)ndim);
    bs[ndim - 1] = shape[ndim - 2];
    bs[ndim - 2] = shape[ndim - 1];
    gg_tensor *base = rand_tensor(ndim, bs, seed);
    gg_tensor *t = gg_tensor_transpose(base, ndim - 2, ndim - 1);
    gg_tensor_free(base); /* t keeps the storage alive */
    cr_assert_not_null(t);
    if (shape[ndim - 1] > 1 && shape[ndim - 2] > 1) cr_assert(!gg_tensor_is_contiguous(t));
    cr_assert_eq(gg_requires_grad(t, true), GG_OK);
    return t;
}

static gg_tensor *from(int ndim, const int64_t *shape, const float *v) {
    gg_tensor *t = gg_tensor_from_data(ndim, shape, v);
    cr_assert_not_null(t, "%s", gg_last_error());
    return t;
}
#define FROM(shape_args, ...) from(GG_SHAPE shape_args, (const float[]){__VA_ARGS__})

static float get(const gg_tensor *t, const int64_t *idx) {
    float v = NAN;
    cr_assert_eq(gg_tensor_get(t, idx, &v), GG_OK, "%s", gg_last_error());
    return v;
}

#define check_grad(f, ctx, n, inputs) check_grad_((f), (ctx), (n), (inputs), __LINE__)
static void check_grad_(gg_gradcheck_fn f, void *ctx, int n, gg_tensor *const *inputs, int line) {
    gg_gradcheck_report r;
    char buf[256];
    int st = gg_gradcheck(f, ctx, n, inputs, NULL, &r);
    cr_assert_eq(st, GG_OK, "line %d: gradcheck failed to run: %s", line, gg_last_error());
    cr_assert(r.passed, "line %d: %s", line, gg_gradcheck_describe(&r, buf, sizeof buf));
    int64_t expect = 0;
    for (int i = 0; i < n; i++)
        if (inputs[i]->requires_grad) expect += inputs[i]->numel;
    cr_assert_eq(r.n_checked, expect, "line %d: checked %lld elements, expected %lld", line,
                 (long long)r.n_checked, (long long)expect);
}

/* A failed call: NULL, this status, a message naming the op and containing `needle`, nothing recorded. */
#define expect_fail(expr, status, op, needle)                                                         \
    do {                                                                                              \
        gg_clear_error();                                                                             \
        size_t nodes_ = gg_tape_num_nodes(NULL), tensors_ = gg_tape_num_tensors(NULL);                \
        gg_tensor *r_ = (expr);                                                                       \
        cr_assert_null(r_, "%s should fail", #expr);                                                  \
        gt_assert_error((status), (op));                                                              \
        gt_assert_msg_has(needle);                                                                    \
        cr_assert_eq(gg_tape_num_nodes(NULL), nodes_, "a failed call recorded a node");               \
        cr_assert_eq(gg_tape_num_tensors(NULL), tensors_, "a failed call left a tensor on the tape"); \
    } while (0)

/* A NULL input keeps the earlier error. */
#define expect_sticky(expr, op)                                                                       \
    do {                                                                                              \
        gg_clear_error();                                                                             \
        gg_error_set(GG_ERR_SHAPE, "earlier_op", "boom");                                             \
        cr_assert_null((expr));                                                                       \
        cr_assert_str_eq(gg_last_error(), "earlier_op: boom", "%s replaced the sticky error", #expr); \
        gg_clear_error();                                                                             \
        cr_assert_null((expr));                                                                       \
        gt_assert_error(GG_ERR_ARG, op);                                                              \
    } while (0)

/* ---- reshape ---- */

static gg_tensor *f_reshape(gg_tensor *const *in, void *ctx) {
    const int64_t *s = ctx; /* {ndim, sizes...} */
    return gg_reshape(in[0], (int)s[0], s + 1);
}

Test(shape, reshape_forward_is_a_view_when_possible) {
    gg_tensor *x = GT_IOTA(2, 3);
    gg_tensor *y = gg_reshape(x, GG_SHAPE(3, -1));
    gt_assert_shape(y, 3, 2);
    gt_assert_list(y, 0, 1, 2, 3, 4, 5);
    cr_assert_eq(y->storage, x->storage, "a contiguous reshape is a view");
    cr_assert_eq(gg_tensor_set(x, (int64_t[]){1, 0}, 42.0f), GG_OK);
    cr_assert_eq(get(y, (int64_t[]){1, 1}), 42.0f, "writes to the base are visible in the view");
    cr_assert_eq(gg_tensor_set(y, (int64_t[]){0, 0}, -7.0f), GG_OK);
    cr_assert_eq(get(x, (int64_t[]){0, 0}), -7.0f, "writes to the view are visible in the base");
    cr_assert(!y->requires_grad);
    gg_tensor_free(x);
}

Test(shape, reshape_of_transposed_input_copies) {
    gg_tensor *x = GT_IOTA(2, 3);
    gg_tensor *t = gg_tensor_transpose(x, 0, 1); /* [3,2]: 0 3 1 4 2 5 */
    gg_tensor *y = gg_reshape(t, GG_SHAPE(6));
    gt_assert_shape(y, 6);
    gt_assert_list(y, 0, 3, 1, 4, 2, 5);
    cr_assert_neq(y->storage, x->storage, "strides cannot express [6]: a copy");
    gg_tensor *z = gg_reshape(t, GG_SHAPE(3, 1, 2));
    gt_assert_shape(z, 3, 1, 2);
    cr_assert_eq(z->storage, x->storage, "splitting off a size-1 dim is a view");
    gg_tensor_free(t);
    gg_tensor_free(x);
}

Test(shape, reshape_gradcheck) {
    gg_tensor *x = leaf(GG_SHAPE(2, 3, 4), 1);
    int64_t s1[] = {2, 4, -1};
    check_grad(f_reshape, s1, 1, &x);
    int64_t s0[] = {1, 24};
    check_grad(f_reshape, s0, 1, &x);
    gg_tensor *t = tleaf(GG_SHAPE(3, 4), 2); /* non-contiguous: copy path */
    int64_t s2[] = {2, 2, 6};
    check_grad(f_reshape, s2, 1, &t);
    int64_t s3[] = {3, 3, 2, 2}; /* splits the contiguous dim of t: view path */
    check_grad(f_reshape, s3, 1, &t);
    gg_tensor_free(t);
    gg_tensor_free(x);
}

Test(shape, reshape_errors) {
    gg_tensor *x = gg_tensor_zeros(GG_SHAPE(3, 7));
    expect_fail(gg_reshape(x, GG_SHAPE(4, 5)), GG_ERR_SHAPE, "gg_reshape", "[4,5]");
    gt_assert_msg_has("[3,7]");
    expect_fail(gg_reshape(x, GG_SHAPE(-1, -1)), GG_ERR_ARG, "gg_reshape", "-1");
    expect_fail(gg_reshape(x, GG_SHAPE(4, -1)), GG_ERR_SHAPE, "gg_reshape", "[3,7]");
    expect_sticky(gg_reshape(NULL, GG_SHAPE(21)), "gg_reshape");
    gg_tensor_free(x);
}

/* ---- permute, transpose ---- */

static gg_tensor *f_permute(gg_tensor *const *in, void *ctx) { return gg_permute(in[0], ctx); }
static gg_tensor *f_transpose(gg_tensor *const *in, void *ctx) {
    const int *d = ctx;
    return gg_transpose(in[0], d[0], d[1]);
}

Test(shape, permute_forward) {
    gg_tensor *x = GT_IOTA(2, 3, 4);
    const int perm[] = {2, 0, 1};
    gg_tensor *y = gg_permute(x, perm);
    gt_assert_shape(y, 4, 2, 3);
    cr_assert_eq(y->storage, x->storage);
    for (int64_t i = 0; i < 2; i++)
        for (int64_t j = 0; j < 3; j++)
            for (int64_t k = 0; k < 4; k++)
                cr_assert_eq(get(y, (int64_t[]){k, i, j}), (float)(i * 12 + j * 4 + k));
    gg_tensor *z = gg_permute(x, (const int[]){-1, 0, 1}); /* negative entries */
    gt_assert_shape(z, 4, 2, 3);
    cr_assert_eq(get(z, (int64_t[]){3, 1, 2}), 23.0f);
    gg_tensor_free(x);
}

Test(shape, permute_gradcheck) {
    gg_tensor *x = leaf(GG_SHAPE(2, 3, 4), 3);
    int p1[] = {2, 0, 1};
    check_grad(f_permute, p1, 1, &x);
    int p2[] = {1, 0, 2};
    check_grad(f_permute, p2, 1, &x);
    gg_tensor *t = tleaf(GG_SHAPE(2, 4, 3), 4);
    int p3[] = {1, 2, 0};
    check_grad(f_permute, p3, 1, &t);
    gg_tensor_free(t);
    gg_tensor_free(x);
}

Test(shape, permute_errors) {
    gg_tensor *x = gg_tensor_zeros(GG_SHAPE(2, 3, 4));
    expect_fail(gg_permute(x, (const int[]){0, 0, 1}), GG_ERR_INDEX, "gg_permute", "repeated");
    gt_assert_msg_has("[2,3,4]");
    expect_fail(gg_permute(x, (const int[]){0, 1, 5}), GG_ERR_INDEX, "gg_permute", "out of range");
    gt_assert_msg_has("[2,3,4]");
    expect_fail(gg_permute(x, NULL), GG_ERR_ARG, "gg_permute", "[2,3,4]");
    expect_sticky(gg_permute(NULL, (const int[]){0}), "gg_permute");
    gg_tensor_free(x);
}

Test(shape, transpose_forward) {
    gg_tensor *x = GT_IOTA(2, 3);
    gg_tensor *y = gg_transpose(x, 0, 1);
    gt_assert_shape(y, 3, 2);
    gt_assert_list(y, 0, 3, 1, 4, 2, 5);
    cr_assert_eq(y->storage, x->storage);
    gg_tensor *z = gg_transpose(x, -1, 0);
    gt_assert_list(z, 0, 3, 1, 4, 2, 5);
    gg_tensor *w = gg_transpose(x, 1, 1);
    gt_assert_list(w, 0, 1, 2, 3, 4, 5);
    gg_tensor_free(x);
}

Test(shape, transpose_gradcheck) {
    gg_tensor *x = leaf(GG_SHAPE(2, 3, 4), 5);
    int d1[] = {0, 2};
    check_grad(f_transpose, d1, 1, &x);
    int d2[] = {-1, 1};
    check_grad(f_transpose, d2, 1, &x);
    gg_tensor *t = tleaf(GG_SHAPE(3, 5), 6);
    int d3[] = {0, 1}; /* the result is contiguous again */
    check_grad(f_transpose, d3, 1, &t);
    gg_tensor_free(t);
    gg_tensor_free(x);
}

Test(shape, transpose_errors) {
    gg_tensor *x = gg_tensor_zeros(GG_SHAPE(2, 3));
    expect_fail(gg_transpose(x, 0, 2), GG_ERR_INDEX, "gg_transpose", "[2,3]");
    expect_fail(gg_transpose(x, -3, 0), GG_ERR_INDEX, "gg_transpose", "-3");
    expect_sticky(gg_transpose(NULL, 0, 1), "gg_transpose");
    gg_tensor_free(x);
}

/* ---- slice ---- */

static gg_tensor *f_slice(gg_tensor *const *in, void *ctx) {
    const int64_t *a = ctx; /* dim, start, stop, step */
    return gg_slice(in[0], (int)a[0], a[1], a[2], a[3]);
}

Test(shape, slice_forward) {
    gg_tensor *x = GT_IOTA(10);
    gt_assert_list(gg_slice(x, 0, 1, 8, 3), 1, 4, 7);
    gt_assert_list(gg_slice(x, 0, -3, 10, 1), 7, 8, 9);
    gt_assert_shape(gg_slice(x, 0, 5, 5, 1), 0);
    gg_tensor *m = GT_IOTA(3, 4);
    gg_tensor *v = gg_slice(m, 1, 1, 3, 1);
    gt_assert_shape(v, 3, 2);
    gt_assert_list(v, 1, 2, 5, 6, 9, 10);
    cr_assert_eq(v->storage, m->storage);
    cr_assert_eq(gg_tensor_set(v, (int64_t[]){2, 1}, 100.0f), GG_OK);
    cr_assert_eq(get(m, (int64_t[]){2, 2}), 100.0f, "a write through the slice lands in the base");
    gg_tensor *r = gg_slice(m, -2, 0, 3, 2); /* rows 0 and 2 */
    gt_assert_list(r, 0, 1, 2, 3, 8, 9, 100, 11);
    gg_tensor_free(m);
    gg_tensor_free(x);
}

Test(shape, slice_gradcheck) {
    gg_tensor *x = leaf(GG_SHAPE(4, 5), 7);
    int64_t a1[] = {1, 1, 5, 2};
    check_grad(f_slice, a1, 1, &x);
    int64_t a2[] = {0, -3, 4, 1};
    check_grad(f_slice, a2, 1, &x);
    int64_t a3[] = {-1, 0, 5, 3};
    check_grad(f_slice, a3, 1, &x);
    gg_tensor *t = tleaf(GG_SHAPE(5, 6), 8);
    int64_t a4[] = {1, 1, 6, 2};
    check_grad(f_slice, a4, 1, &t);
    int64_t a5[] = {0, 2, 4, 1};
    check_grad(f_slice, a5, 1, &t);
    gg_tensor_free(t);
    gg_tensor_free(x);
}

Test(shape, slice_backward_adds_into_the_region_only) {
    gg_tensor *x = leaf(GG_SHAPE(6), 9);
    gg_tensor *y = gg_slice(x, 0, 1, 6, 2); /* elements 1, 3, 5 */
    gg_tensor *seed = FROM((3), 1, 2, 3);
    cr_assert_eq(gg_backward_ex(y, seed, false), GG_OK, "%s", gg_last_error());
    gt_assert_list(x->grad, 0, 1, 0, 2, 0, 3);
    gg_tensor *y2 = gg_slice(x, 0, 0, 2, 1);
    gg_tensor *seed2 = FROM((2), 10, 20);
    cr_assert_eq(gg_backward_ex(y2, seed2, false), GG_OK, "%s", gg_last_error());
    gt_assert_list(x->grad, 10, 21, 0, 2, 0, 3); /* accumulates */
    gg_tensor_free(seed2);
    gg_tensor_free(seed);
    gg_tensor_free(x);
}

Test(shape, slice_errors) {
    gg_tensor *x = gg_tensor_zeros(GG_SHAPE(10));
    expect_fail(gg_slice(x, 0, 0, 5, 0), GG_ERR_ARG, "gg_slice", "step");
    expect_fail(gg_slice(x, 0, 0, 11, 1), GG_ERR_INDEX, "gg_slice", "[10]");
    expect_fail(gg_slice(x, 0, -11, 5, 1), GG_ERR_INDEX, "gg_slice", "out of range");
    expect_fail(gg_slice(x, 1, 0, 5, 1), GG_ERR_INDEX, "gg_slice", "[10]");
    expect_sticky(gg_slice(NULL, 0, 0, 1, 1), "gg_slice");
    gg_tensor_free(x);
}

/* ---- expand ---- */

static gg_tensor *f_expand(gg_tensor *const *in, void *ctx) {
    const int64_t *s = ctx;
    return gg_expand(in[0], (int)s[0], s + 1);
}

Test(shape, expand_forward) {
    gg_tensor *x = FROM((3, 1), 1, 2, 3);
    gg_tensor *y = gg_expand(x, GG_SHAPE(2, 3, 4));
    gt_assert_shape(y, 2, 3, 4);
    cr_assert_eq(y->storage, x->storage);
    cr_assert_eq(y->stride[0], 0);
    cr_assert_eq(y->stride[2], 0);
    for (int64_t i = 0; i < 2; i++)
        for (int64_t j = 0; j < 3; j++)
            for (int64_t k = 0; k < 4; k++) cr_assert_eq(get(y, (int64_t[]){i, j, k}), (float)(j + 1));
    gg_tensor *z = gg_expand(x, GG_SHAPE(-1, 2));
    gt_assert_list(z, 1, 1, 2, 2, 3, 3);
    gg_tensor_free(x);
}

Test(shape, expand_gradcheck) {
    gg_tensor *x = leaf(GG_SHAPE(3, 1), 10);
    int64_t s1[] = {3, 2, 3, 4};
    check_grad(f_expand, s1, 1, &x);
    int64_t s2[] = {2, -1, 5};
    check_grad(f_expand, s2, 1, &x);
    gg_tensor *v = leaf(GG_SHAPE(1), 11);
    int64_t s3[] = {2, 3, 5};
    check_grad(f_expand, s3, 1, &v);
    gg_tensor *t = tleaf(GG_SHAPE(2, 3, 1), 12); /* transposed leaf [2,3,1] */
    int64_t s4[] = {3, 2, 3, 4};
    check_grad(f_expand, s4, 1, &t);
    gg_tensor *u = tleaf(GG_SHAPE(4, 3), 13);
    int64_t s5[] = {3, 2, 4, 3};
    check_grad(f_expand, s5, 1, &u);
    gg_tensor_free(u);
    gg_tensor_free(t);
    gg_tensor_free(v);
    gg_tensor_free(x);
}

Test(shape, expand_errors) {
    gg_tensor *x = gg_tensor_zeros(GG_SHAPE(3, 2));
    expect_fail(gg_expand(x, GG_SHAPE(3, 4)), GG_ERR_SHAPE, "gg_expand", "[3,2]");
    gt_assert_msg_has("[3,4]");
    expect_fail(gg_expand(x, GG_SHAPE(2)), GG_ERR_SHAPE, "gg_expand", "[3,2]");
    expect_sticky(gg_expand(NULL, GG_SHAPE(3)), "gg_expand");
    gg_tensor_free(x);
}

/* ---- squeeze, unsqueeze ---- */

static gg_tensor *f_squeeze(gg_tensor *const *in, void *ctx) { return gg_squeeze(in[0], *(const int *)ctx); }
static gg_tensor *f_unsqueeze(gg_tensor *const *in, void *ctx) {
    return gg_unsqueeze(in[0], *(const int *)ctx);
}

Test(shape, squeeze_unsqueeze_forward) {
    gg_tensor *x = GT_IOTA(2, 1, 3);
    gg_tensor *y = gg_squeeze(x, 1);
    gt_assert_shape(y, 2, 3);
    gt_assert_list(y, 0, 1, 2, 3, 4, 5);
    cr_assert_eq(y->storage, x->storage);
    gt_assert_shape(gg_squeeze(x, -2), 2, 3);
    gg_tensor *w = GT_IOTA(1, 2, 1, 3);
    gt_assert_shape(gg_squeeze(w, GG_ALL_DIMS), 2, 3);
    gg_tensor *u = gg_unsqueeze(y, 0);
    gt_assert_shape(u, 1, 2, 3);
    cr_assert_eq(u->storage, x->storage);
    gt_assert_shape(gg_unsqueeze(y, -1), 2, 3, 1);
    gt_assert_shape(gg_unsqueeze(y, 1), 2, 1, 3);
    gt_assert_list(gg_unsqueeze(y, 2), 0, 1, 2, 3, 4, 5);
    gg_tensor_free(w);
    gg_tensor_free(x);
}

Test(shape, squeeze_unsqueeze_gradcheck) {
    gg_tensor *x = leaf(GG_SHAPE(2, 1, 3), 14);
    int d1 = 1, dall = GG_ALL_DIMS, d0 = 0, dm1 = -1;
    check_grad(f_squeeze, &d1, 1, &x);
    check_grad(f_squeeze, &dall, 1, &x);
    check_grad(f_unsqueeze, &d0, 1, &x);
    check_grad(f_unsqueeze, &dm1, 1, &x);
    gg_tensor *t = tleaf(GG_SHAPE(3, 2), 15);
    int d2 = 1;
    check_grad(f_unsqueeze, &d2, 1, &t);
    gg_tensor *u = tleaf(GG_SHAPE(3, 1, 4), 16); /* transposed, size-1 in the middle */
    check_grad(f_squeeze, &d2, 1, &u);
    gg_tensor_free(u);
    gg_tensor_free(t);
    gg_tensor_free(x);
}

Test(shape, squeeze_unsqueeze_errors) {
    gg_tensor *x = gg_tensor_zeros(GG_SHAPE(2, 1, 3));
    expect_fail(gg_squeeze(x, 0), GG_ERR_SHAPE, "gg_squeeze", "[2,1,3]");
    expect_fail(gg_squeeze(x, 3), GG_ERR_INDEX, "gg_squeeze", "[2,1,3]");
    expect_fail(gg_unsqueeze(x, 4), GG_ERR_INDEX, "gg_unsqueeze", "[2,1,3]");
    expect_fail(gg_unsqueeze(x, -5), GG_ERR_INDEX, "gg_unsqueeze", "-5");
    gg_tensor *big = gg_tensor_zeros(GG_SHAPE(1, 1, 1, 1, 1, 1, 1, 1));
    expect_fail(gg_unsqueeze(big, 0), GG_ERR_SHAPE, "gg_unsqueeze", "maximum rank");
    expect_sticky(gg_squeeze(NULL, 0), "gg_squeeze");
    expect_sticky(gg_unsqueeze(NULL, 0), "gg_unsqueeze");
    gg_tensor_free(big);
    gg_tensor_free(x);
}

/* ---- concat, stack ---- */

typedef struct join_ctx {
    int n, dim;
    bool stack;
} join_ctx;
static gg_tensor *f_join(gg_tensor *const *in, void *ctx) {
    const join_ctx *c = ctx;
    return c->stack ? gg_stack(in, c->n, c->dim) : gg_concat(in, c->n, c->dim);
}

Test(shape, concat_forward) {
    gg_tensor *a = FROM((2, 2), 0, 1, 2, 3), *b = FROM((2, 1), 10, 11);
    gg_tensor *ab[] = {a, b};
    gg_tensor *y = gg_concat(ab, 2, 1);
    gt_assert_shape(y, 2, 3);
    gt_assert_list(y, 0, 1, 10, 2, 3, 11);
    cr_assert_neq(y->storage, a->storage, "concat copies");
    gt_assert_list(gg_concat(ab, 2, -1), 0, 1, 10, 2, 3, 11);
    gg_tensor *c = FROM((1, 2), 7, 8);
    gg_tensor *ca[] = {c, a, c};
    gg_tensor *z = gg_concat(ca, 3, 0);
    gt_assert_shape(z, 4, 2);
    gt_assert_list(z, 7, 8, 0, 1, 2, 3, 7, 8);
    gt_assert_list(gg_concat(&a, 1, 0), 0, 1, 2, 3);
    gg_tensor *t = gg_tensor_transpose(a, 0, 1); /* [[0,2],[1,3]] */
    gg_tensor *e = gg_tensor_zeros(GG_SHAPE(2, 0));
    gg_tensor *te[] = {e, t, b, e};
    gt_assert_list(gg_concat(te, 4, 1), 0, 2, 10, 1, 3, 11);
    gg_tensor *ex = gg_tensor_expand(b, GG_SHAPE(2, 2)); /* stride-0 input */
    gg_tensor *xe[] = {ex, a};
    gt_assert_list(gg_concat(xe, 2, 1), 10, 10, 0, 1, 11, 11, 2, 3);
    gg_tensor_free(ex);
    gg_tensor_free(e);
    gg_tensor_free(t);
    gg_tensor_free(c);
    gg_tensor_free(b);
    gg_tensor_free(a);
}

Test(shape, concat_gradcheck_three_inputs_some_without_grad) {
    gg_tensor *a = leaf(GG_SHAPE(2, 3), 17);
    gg_tensor *b = rand_tensor(GG_SHAPE(2, 2), 18); /* no grad */
    gg_tensor *c = tleaf(GG_SHAPE(2, 4), 19);       /* non-contiguous */
    gg_tensor *in[] = {a, b, c};
    join_ctx j1 = {3, 1, false};
    check_grad(f_join, &j1, 3, in);
    join_ctx j2 = {3, -1, false};
    check_grad(f_join, &j2, 3, in);
    cr_assert_eq(gg_requires_grad(b, true), GG_OK);
    check_grad(f_join, &j1, 3, in);
    cr_assert_eq(gg_requires_grad(a, false), GG_OK);
    check_grad(f_join, &j1, 3, in);

    gg_tensor *p = leaf(GG_SHAPE(1, 3), 20), *q = rand_tensor(GG_SHAPE(2, 3), 21),
              *r = tleaf(GG_SHAPE(3, 3), 22);
    gg_tensor *in0[] = {p, q, r};
    join_ctx j3 = {3, 0, false};
    check_grad(f_join, &j3, 3, in0);
    gg_tensor *in4[] = {p, r, p, q};
    join_ctx j4 = {4, 0, false}; /* the same tensor twice: its gradient sums both blocks */
    check_grad(f_join, &j4, 4, in4);

    /* a plain backward leaves the input without grad alone */
    gg_tensor *y = gg_concat(in0, 3, 0);
    cr_assert(y->requires_grad);
    gg_tensor *seed = gg_tensor_ones(GG_SHAPE(6, 3));
    cr_assert_eq(gg_backward_ex(y, seed, false), GG_OK, "%s", gg_last_error());
    cr_assert_null(q->grad);
    gt_assert_all(p->grad, 1.0f);
    gt_assert_all(r->grad, 1.0f);
    gg_tensor_free(seed);
    gg_tensor_free(p);
    gg_tensor_free(q);
    gg_tensor_free(r);
    gg_tensor_free(a);
    gg_tensor_free(b);
    gg_tensor_free(c);
}

Test(shape, concat_many_inputs_backward) {
    enum { N = 9 }; /* more inputs than a node stores inline */
    gg_tensor *xs[N];
    for (int i = 0; i < N; i++) xs[i] = leaf(GG_SHAPE(2, (int64_t)i + 1), 100 + (uint64_t)i);
    join_ctx j = {N, 1, false};
    check_grad(f_join, &j, N, xs);
    for (int i = 0; i < N; i++) gg_tensor_free(xs[i]);
}

Test(shape, concat_errors) {
    gg_tensor *a = gg_tensor_zeros(GG_SHAPE(2, 3)), *b = gg_tensor_zeros(GG_SHAPE(2, 4));
    gg_tensor *bad = gg_tensor_zeros(GG_SHAPE(3, 3)), *r3 = gg_tensor_zeros(GG_SHAPE(2, 3, 1));
    gg_tensor *s = gg_tensor_scalar(1.0f);
    gg_tensor *ok[] = {a, b};
    expect_fail(gg_concat(ok, 0, 0), GG_ERR_ARG, "gg_concat", "at least one");
    expect_fail(gg_concat(NULL, 2, 0), GG_ERR_ARG, "gg_concat", "at least one");
    gg_tensor *m[] = {a, b, bad};
    expect_fail(gg_concat(m, 3, 1), GG_ERR_SHAPE, "gg_concat", "input 2 [3,3]");
    gt_assert_msg_has("input 0 [2,3]");
    expect_fail(gg_concat(ok, 2, 0), GG_ERR_SHAPE, "gg_concat", "input 1 [2,4]");
    gt_assert_msg_has("dimension 1");
    gg_tensor *rk[] = {a, r3};
    expect_fail(gg_concat(rk, 2, 0), GG_ERR_SHAPE, "gg_concat", "input 1 [2,3,1] has rank 3");
    expect_fail(gg_concat(ok, 2, 2), GG_ERR_INDEX, "gg_concat", "dimension 2");
    gg_tensor *ss[] = {s, s};
    expect_fail(gg_concat(ss, 2, 0), GG_ERR_SHAPE, "gg_concat", "zero-dimensional");
    gg_tensor *withnull[] = {a, NULL};
    expect_sticky(gg_concat(withnull, 2, 0), "gg_concat");
    gt_assert_msg_has("xs[1]");
    gg_tensor_free(s);
    gg_tensor_free(r3);
    gg_tensor_free(bad);
    gg_tensor_free(b);
    gg_tensor_free(a);
}

Test(shape, stack_forward) {
    gg_tensor *a = FROM((2), 1, 2), *b = FROM((2), 3, 4);
    gg_tensor *ab[] = {a, b};
    gg_tensor *y = gg_stack(ab, 2, 0);
    gt_assert_shape(y, 2, 2);
    gt_assert_list(y, 1, 2, 3, 4);
    gt_assert_list(gg_stack(ab, 2, 1), 1, 3, 2, 4);
    gt_assert_list(gg_stack(ab, 2, -1), 1, 3, 2, 4);
    gt_assert_list(gg_stack(ab, 2, -2), 1, 2, 3, 4);
    gg_tensor *s1 = gg_tensor_scalar(5.0f), *s2 = gg_tensor_scalar(6.0f);
    gg_tensor *ss[] = {s1, s2, s1};
    gg_tensor *v = gg_stack(ss, 3, 0);
    gt_assert_shape(v, 3);
    gt_assert_list(v, 5, 6, 5);
    gg_tensor *m = GT_IOTA(2, 3);
    gg_tensor *t = gg_tensor_transpose(m, 0, 1); /* [3,2] */
    gg_tensor *n = GT_IOTA(3, 2);
    gg_tensor *tn[] = {t, n};
    gg_tensor *w = gg_stack(tn, 2, 1);
    gt_assert_shape(w, 3, 2, 2);
    gt_assert_list(w, 0, 3, 0, 1, 1, 4, 2, 3, 2, 5, 4, 5);
    gg_tensor_free(n);
    gg_tensor_free(t);
    gg_tensor_free(m);
    gg_tensor_free(s2);
    gg_tensor_free(s1);
    gg_tensor_free(b);
    gg_tensor_free(a);
}

Test(shape, stack_gradcheck) {
    gg_tensor *a = leaf(GG_SHAPE(2, 3), 23), *b = rand_tensor(GG_SHAPE(2, 3), 24),
              *c = tleaf(GG_SHAPE(2, 3), 25);
    gg_tensor *in[] = {a, b, c};
    for (int dim = -3; dim <= 2; dim++) {
        join_ctx j = {3, dim, true};
        check_grad(f_join, &j, 3, in);
    }
    gg_tensor *s = leaf(0, NULL, 26);
    gg_tensor *ss[] = {s, s};
    join_ctx j0 = {2, 0, true};
    check_grad(f_join, &j0, 2, ss);
    gg_tensor_free(s);
    gg_tensor_free(a);
    gg_tensor_free(b);
    gg_tensor_free(c);
}

Test(shape, stack_errors) {
    gg_tensor *a = gg_tensor_zeros(GG_SHAPE(2, 3)), *b = gg_tensor_zeros(GG_SHAPE(2, 4));
    gg_tensor *ab[] = {a, a, b};
    expect_fail(gg_stack(ab, 3, 0), GG_ERR_SHAPE, "gg_stack", "input 2 [2,4]");
    gt_assert_msg_has("input 0 [2,3]");
    expect_fail(gg_stack(ab, 2, 3), GG_ERR_INDEX, "gg_stack", "dimension 3");
    expect_fail(gg_stack(ab, 2, -4), GG_ERR_INDEX, "gg_stack", "dimension -4");
    expect_fail(gg_stack(ab, 0, 0), GG_ERR_ARG, "gg_stack", "at least one");
    gg_tensor *big = gg_tensor_zeros(GG_SHAPE(1, 1, 1, 1, 1, 1, 1, 1));
    gg_tensor *bb[] = {big, big};
    expect_fail(gg_stack(bb, 2, 0), GG_ERR_SHAPE, "gg_stack", "maximum rank");
    gg_tensor *withnull[] = {NULL, a};
    expect_sticky(gg_stack(withnull, 2, 0), "gg_stack");
    gg_tensor_free(big);
    gg_tensor_free(b);
    gg_tensor_free(a);
}

/* ---- pad ---- */

typedef struct pad_ctx {
    int n;
    int64_t pads[8];
    float value;
} pad_ctx;
static gg_tensor *f_pad(gg_tensor *const *in, void *ctx) {
    const pad_ctx *c = ctx;
    return gg_pad(in[0], c->pads, c->n, c->value);
}

Test(shape, pad_forward) {
    gg_tensor *x = FROM((3), 1, 2, 3);
    gt_assert_list(gg_pad(x, (const int64_t[]){2, 1}, 2, 9.0f), 9, 9, 1, 2, 3, 9);
    gt_assert_list(gg_pad(x, NULL, 0, 9.0f), 1, 2, 3);
    gg_tensor *m = GT_IOTA(2, 2);
    gg_tensor *y = gg_pad(m, (const int64_t[]){1, 0, 0, 1}, 4, 0.0f); /* last dim (1,0), first dim (0,1) */
    gt_assert_shape(y, 3, 3);
    gt_assert_list(y, 0, 0, 1, 0, 2, 3, 0, 0, 0);
    gg_tensor *v = GT_IOTA(5);
    gt_assert_list(gg_pad(v, (const int64_t[]){-1, -2}, 2, 0.0f), 1, 2);
    gt_assert_list(gg_pad(v, (const int64_t[]){-2, 1}, 2, 7.0f), 2, 3, 4, 7);
    gt_assert_list(gg_pad(v, (const int64_t[]){1, -4}, 2, -1.0f), -1, 0);
    gt_assert_shape(gg_pad(v, (const int64_t[]){-3, -2}, 2, 0.0f), 0);
    gt_assert_list(gg_pad(v, (const int64_t[]){-5, 2}, 2, 4.0f), 4, 4);
    gg_tensor *t = gg_tensor_transpose(m, 0, 1); /* [[0,2],[1,3]] */
    gt_assert_list(gg_pad(t, (const int64_t[]){0, 1, -1, 0}, 4, 5.0f), 1, 3, 5);
    gg_tensor_free(t);
    gg_tensor_free(v);
    gg_tensor_free(m);
    gg_tensor_free(x);
}

Test(shape, pad_gradcheck) {
    gg_tensor *x = leaf(GG_SHAPE(3, 4), 27);
    pad_ctx p1 = {4, {1, 2, -1, 1}, 0.5f};
    check_grad(f_pad, &p1, 1, &x);
    pad_ctx p2 = {2, {-1, -2}, 0.0f};
    check_grad(f_pad, &p2, 1, &x);
    pad_ctx p3 = {4, {2, 0, 0, 3}, 1.0f};
    check_grad(f_pad, &p3, 1, &x);
    gg_tensor *t = tleaf(GG_SHAPE(2, 3, 4), 28);
    pad_ctx p4 = {6, {1, 1, -1, 2, 1, 0}, 0.0f};
    check_grad(f_pad, &p4, 1, &t);
    pad_ctx p5 = {2, {-4, 1}, 3.0f}; /* nothing kept: zero gradient */
    check_grad(f_pad, &p5, 1, &t);
    gg_tensor_free(t);
    gg_tensor_free(x);
}

Test(shape, pad_errors) {
    gg_tensor *x = gg_tensor_zeros(GG_SHAPE(2, 3));
    expect_fail(gg_pad(x, (const int64_t[]){1, 1, 1}, 3, 0.0f), GG_ERR_ARG, "gg_pad", "3 pad values");
    gt_assert_msg_has("[2,3]");
    expect_fail(gg_pad(x, (const int64_t[]){1, 1, 1, 1, 1, 1}, 6, 0.0f), GG_ERR_ARG, "gg_pad", "at most 4");
    expect_fail(gg_pad(x, (const int64_t[]){1}, -2, 0.0f), GG_ERR_ARG, "gg_pad", "-2 pad values");
    expect_fail(gg_pad(x, NULL, 2, 0.0f), GG_ERR_ARG, "gg_pad", "NULL");
    expect_fail(gg_pad(x, (const int64_t[]){-4, 2}, 2, 0.0f), GG_ERR_SHAPE, "gg_pad", "crop");
    gt_assert_msg_has("[2,3]");
    expect_fail(gg_pad(x, (const int64_t[]){0, 0, -2, -1}, 4, 0.0f), GG_ERR_SHAPE, "gg_pad", "(-2, -1)");
    expect_fail(gg_pad(x, (const int64_t[]){INT64_MAX, 1}, 2, 0.0f), GG_ERR_OVERFLOW, "gg_pad", "[2,3]");
    expect_sticky(gg_pad(NULL, NULL, 0, 0.0f), "gg_pad");
    gg_tensor_free(x);
}

/* ---- graph behaviour shared by the shape ops ---- */

Test(shape, diamond_of_two_slices_added) {
    /* y[i] = x[i] + x[i+1]: x reaches y through two slices */
    gg_tensor *x = leaf(GG_SHAPE(4), 29);
    gg_tensor *y = gg_add(gg_slice(x, 0, 0, 3, 1), gg_slice(x, 0, 1, 4, 1));
    cr_assert_not_null(y, "%s", gg_last_error());
    gg_tensor *seed = FROM((3), 1, 10, 100);
    cr_assert_eq(gg_backward_ex(y, seed, false), GG_OK, "%s", gg_last_error());
    gt_assert_list(x->grad, 1, 11, 110, 100);
    gg_tensor_free(seed);
    gg_tensor_free(x);
}

Test(shape, diamond_through_views_and_concat) {
    /* y = concat(flat(x^T), flat(x[:, 1:]), flat(x)): three paths to one leaf, each element's gradient sums
     * the seeds of every place it appears */
    gg_tensor *x = leaf(GG_SHAPE(2, 2), 30);
    gg_tensor *parts[] = {gg_reshape(gg_transpose(x, 0, 1), GG_SHAPE(4)),
                          gg_reshape(gg_slice(x, 1, 1, 2, 1), GG_SHAPE(2)),
                          gg_squeeze(gg_unsqueeze(gg_reshape(x, GG_SHAPE(4)), 0), 0)};
    gg_tensor *y = gg_concat(parts, 3, 0);
    gt_assert_shape(y, 10);
    gg_tensor *seed = FROM((10), 1, 2, 3, 4, 10, 20, 100, 200, 300, 400);
    cr_assert_eq(gg_backward_ex(y, seed, false), GG_OK, "%s", gg_last_error());
    /* x^T flat is x[0,0] x[1,0] x[0,1] x[1,1]; the slice is x[0,1] x[1,1] */
    gt_assert_list(x->grad, 1 + 100, 3 + 10 + 200, 2 + 300, 4 + 20 + 400);
    gg_tensor_free(seed);
    gg_tensor_free(x);
}

Test(shape, nothing_recorded_without_grad) {
    gg_tensor *x = leaf(GG_SHAPE(2, 3), 31);
    gg_tensor *c = rand_tensor(GG_SHAPE(2, 3), 32);
    size_t nodes = gg_tape_num_nodes(NULL);
    gg_tensor *cc[] = {c, c};
    gg_tensor *outs[] = {gg_reshape(c, GG_SHAPE(6)),
                         gg_transpose(c, 0, 1),
                         gg_slice(c, 1, 0, 2, 1),
                         gg_expand(c, GG_SHAPE(4, 2, 3)),
                         gg_unsqueeze(c, 0),
                         gg_concat(cc, 2, 0),
                         gg_stack(cc, 2, 0),
                         gg_pad(c, (const int64_t[]){1, 1}, 2, 0.0f),
                         gg_kron(c, c)};
    for (size_t i = 0; i < sizeof outs / sizeof *outs; i++) {
        cr_assert_not_null(outs[i], "%s", gg_last_error());
        cr_assert(!outs[i]->requires_grad);
        cr_assert_null(outs[i]->grad_fn);
    }
    cr_assert_eq(gg_tape_num_nodes(NULL), nodes);
    gg_no_grad_begin();
    gg_tensor *y = gg_pad(gg_transpose(x, 0, 1), (const int64_t[]){1, 1}, 2, 0.0f);
    gg_no_grad_end();
    cr_assert(!y->requires_grad);
    cr_assert_eq(gg_tape_num_nodes(NULL), nodes);
    gg_tensor *z = gg_transpose(x, 0, 1);
    cr_assert(z->requires_grad);
    cr_assert_eq(gg_tape_num_nodes(NULL), nodes + 1);
    gg_tensor_free(c);
    gg_tensor_free(x);
}

Test(shape, chained_views_backward_through_non_contiguous_gradients) {
    /* y = pad(slice(permute(x)), ...) of a transposed leaf: every backward writes through strides */
    gg_tensor *x = tleaf(GG_SHAPE(3, 4, 5), 33);
    gg_tensor *y =
        gg_pad(gg_slice(gg_permute(x, (const int[]){2, 0, 1}), 0, 1, 5, 2), (const int64_t[]){1, 0}, 2, 0.0f);
    gt_assert_shape(y, 2, 3, 5);
    gg_tensor *seed = gg_tensor_ones(GG_SHAPE(2, 3, 5));
    cr_assert_eq(gg_backward_ex(y, seed, false), GG_OK, "%s", gg_last_error());
    for (int64_t i = 0; i < 3; i++)
        for (int64_t j = 0; j < 4; j++)
            for (int64_t k = 0; k < 5; k++)
                cr_assert_eq(get(x->grad, (int64_t[]){i, j, k}), (k == 1 || k == 3) ? 1.0f : 0.0f,
                             "at %lld %lld %lld", (long long)i, (long long)j, (long long)k);
    gg_tensor_free(seed);
    gg_tensor_free(x);
}

Test(shape, large_backward_uses_the_parallel_paths) {
    /* > 32768 elements: permute, slice and concat backward split rows over threads */
    gg_tensor *x = leaf(GG_SHAPE(64, 48, 24), 34);
    gg_tensor *p = gg_permute(x, (const int[]){2, 0, 1});
    gg_tensor *parts[] = {p, gg_slice(p, 1, 3, 64, 2)};
    gg_tensor *y = gg_concat(parts, 2, 1);
    gt_assert_shape(y, 24, 64 + 31, 48);
    gg_tensor *seed = gg_tensor_ones(GG_SHAPE(24, 95, 48));
    cr_assert_eq(gg_backward_ex(y, seed, false), GG_OK, "%s", gg_last_error());
    const float *g = gg_tensor_data(x->grad);
    for (int64_t i = 0; i < 64; i++)
        for (int64_t j = 0; j < 48 * 24; j++) {
            float want = (i >= 3 && (i - 3) % 2 == 0) ? 2.0f : 1.0f;
            cr_assert_eq(g[i * 48 * 24 + j], want, "grad[%lld, %lld] = %g", (long long)i, (long long)j,
                         (double)g[i * 48 * 24 + j]);
        }
    gg_tensor_free(seed);
    gg_tensor_free(x);
}

/* ---- kron ---- */

static gg_tensor *f_kron(gg_tensor *const *in, void *ctx) {
    (void)ctx;
    return gg_kron(in[0], in[1]);
}
static gg_tensor *f_kron3(gg_tensor *const *in, void *ctx) {
    (void)ctx;
    return gg_kron(gg_kron(in[0], in[1]), in[2]);
}
static gg_tensor *f_kron_chain(gg_tensor *const *in, void *ctx) {
    int n = *(const int *)ctx;
    gg_tensor *y = in[0];
    for (int i = 1; i < n; i++) y = gg_kron(y, in[i]);
    return y;
}

/* Plain-C reference through gg_tensor_get. */
static void kron_ref(const gg_tensor *a, const gg_tensor *b, float *out) {
    int64_t p = a->shape[0], q = a->shape[1], r = b->shape[0], s = b->shape[1];
    for (int64_t i = 0; i < p; i++)
        for (int64_t j = 0; j < q; j++)
            for (int64_t k = 0; k < r; k++)
                for (int64_t l = 0; l < s; l++)
                    out[(i * r + k) * q * s + j * s + l] =
                        get(a, (int64_t[]){i, j}) * get(b, (int64_t[]){k, l});
}

Test(kron, hand_example) {
    gg_tensor *a = FROM((2, 2), 1, 2, 3, 4), *b = FROM((2, 2), 0, 1, 1, 0);
    gg_tensor *y = gg_kron(a, b);
    gt_assert_shape(y, 4, 4);
    gt_assert_list(y, 0, 1, 0, 2, /**/ 1, 0, 2, 0, /**/ 0, 3, 0, 4, /**/ 3, 0, 4, 0);
    gg_tensor *c = FROM((1, 2), 1, 2), *d = FROM((2, 1), 1, 10);
    gg_tensor *z = gg_kron(c, d);
    gt_assert_shape(z, 2, 2);
    gt_assert_list(z, 1, 2, 10, 20);
    gt_assert_list(gg_kron(d, c), 1, 2, 10, 20);
    gg_tensor *e = gg_tensor_zeros(GG_SHAPE(0, 3));
    gt_assert_shape(gg_kron(e, a), 0, 6);
    gg_tensor_free(e);
    gg_tensor_free(d);
    gg_tensor_free(c);
    gg_tensor_free(b);
    gg_tensor_free(a);
}

Test(kron, hand_backward) {
    /* y = kron(a, b), seed g = ones: da[i,j] = sum(b), db[k,l] = sum(a) */
    gg_tensor *a = FROM((2, 2), 1, 2, 3, 4), *b = FROM((2, 2), 0, 1, 1, 0);
    gg_requires_grad(a, true);
    gg_requires_grad(b, true);
    gg_tensor *y = gg_kron(a, b);
    gg_tensor *g = FROM((4, 4), 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2);
    cr_assert_eq(gg_backward_ex(y, g, false), GG_OK, "%s", gg_last_error());
    /* g[0,0] = 1 pairs a[0,0] with b[0,0]; g[3,3] = 2 pairs a[1,1] with b[1,1] */
    gt_assert_list(a->grad, 0, 0, 0, 0);
    gt_assert_list(b->grad, 1, 0, 0, 8);
    gg_tensor_free(g);
    gg_tensor_free(b);
    gg_tensor_free(a);
}

Test(kron, matches_reference_on_odd_and_strided_shapes) {
    const int64_t shapes[][4] = {{3, 5, 4, 7},   {1, 1, 3, 2},    {5, 1, 1, 6}, {2, 3, 1, 1},
                                 {9, 7, 3, 3},   {6, 5, 2, 4},    {5, 6, 3, 8}, {33, 31, 2, 2},
                                 {2, 3, 4, 300}, {40, 40, 30, 30}};
    for (size_t c = 0; c < sizeof shapes / sizeof *shapes; c++) {
        const int64_t *s = shapes[c];
        for (int trans = 0; trans < 2; trans++) {
            gg_tensor *a =
                trans ? tleaf(GG_SHAPE(s[0], s[1]), 40 + c) : rand_tensor(GG_SHAPE(s[0], s[1]), 40 + c);
            gg_tensor *b =
                trans ? tleaf(GG_SHAPE(s[2], s[3]), 50 + c) : rand_tensor(GG_SHAPE(s[2], s[3]), 50 + c);
            gg_tensor *y = gg_kron(a, b);
            gt_assert_shape(y, s[0] * s[2], s[1] * s[3]);
            float *ref = malloc(sizeof(float) * (size_t)y->numel);
            kron_ref(a, b, ref);
            const float *yp = gg_tensor_data(y);
            for (int64_t i = 0; i < y->numel; i++)
                cr_assert_eq(yp[i], ref[i], "case %zu trans %d element %lld: %g vs %g", c, trans,
                             (long long)i, (double)yp[i], (double)ref[i]);
            free(ref);
            gg_tensor_free(a);
            gg_tensor_free(b);
            gg_tape_reset(NULL);
        }
    }
}

Test(kron, backward_matches_reference) {
    /* every kernel path: widths s specialised (1, 2, 3, 4, 8) or not (5, 12), very wide (300), and
     * [20,20] x [12,12] -> [240,240] above the parallel threshold; contiguous and transposed factors */
    const int64_t shapes[][4] = {{20, 20, 12, 12}, {3, 2, 2, 300}, {5, 7, 3, 4}, {4, 3, 2, 8},
                                 {6, 5, 3, 3},     {2, 9, 5, 1},   {7, 3, 2, 2}, {3, 4, 2, 5}};
    for (size_t c = 0; c < sizeof shapes / sizeof *shapes; c++) {
        const int64_t p = shapes[c][0], q = shapes[c][1], r = shapes[c][2], s = shapes[c][3];
        for (int trans = 0; trans < 2; trans++) {
            gg_tensor *a = trans ? tleaf(GG_SHAPE(p, q), 60 + c) : leaf(GG_SHAPE(p, q), 60 + c);
            gg_tensor *b = trans ? leaf(GG_SHAPE(r, s), 70 + c) : tleaf(GG_SHAPE(r, s), 70 + c);
            gg_tensor *y = gg_kron(a, b);
            gg_tensor *g = rand_tensor(GG_SHAPE(p * r, q * s), 80 + c);
            cr_assert_eq(gg_backward_ex(y, g, false), GG_OK, "%s", gg_last_error());
            const float *gp = gg_tensor_data(g);
            for (int64_t i = 0; i < p; i++)
                for (int64_t j = 0; j < q; j++) {
                    double acc = 0;
                    for (int64_t k = 0; k < r; k++)
                        for (int64_t l = 0; l < s; l++)
                            acc += (double)gp[(i * r + k) * q * s + j * s + l] * get(b, (int64_t[]){k, l});
                    float got = get(a->grad, (int64_t[]){i, j});
                    cr_assert(fabs(got - acc) <= 1e-4 * (1 + fabs(acc)),
                              "case %zu/%d: da[%lld,%lld] %g vs %g", c, trans, (long long)i, (long long)j,
                              (double)got, acc);
                }
            for (int64_t k = 0; k < r; k++)
                for (int64_t l = 0; l < s; l++) {
                    double acc = 0;
                    for (int64_t i = 0; i < p; i++)
                        for (int64_t j = 0; j < q; j++)
                            acc += (double)gp[(i * r + k) * q * s + j * s + l] * get(a, (int64_t[]){i, j});
                    float got = get(b->grad, (int64_t[]){k, l});
                    cr_assert(fabs(got - acc) <= 1e-4 * (1 + fabs(acc)),
                              "case %zu/%d: db[%lld,%lld] %g vs %g", c, trans, (long long)k, (long long)l,
                              (double)got, acc);
                }
            gg_tensor_free(g);
            gg_tensor_free(b);
            gg_tensor_free(a);
            gg_tape_reset(NULL);
        }
    }
}

Test(kron, gradcheck_both_factors) {
    gg_tensor *a = leaf(GG_SHAPE(2, 3), 70), *b = leaf(GG_SHAPE(3, 2), 71);
    gg_tensor *ab[] = {a, b};
    check_grad(f_kron, NULL, 2, ab);
    gg_tensor *ta = tleaf(GG_SHAPE(3, 2), 72), *tb = tleaf(GG_SHAPE(2, 4), 73);
    gg_tensor *tt[] = {ta, tb};
    check_grad(f_kron, NULL, 2, tt);
    cr_assert_eq(gg_requires_grad(tb, false), GG_OK); /* only a: saves b only */
    check_grad(f_kron, NULL, 2, tt);
    cr_assert_eq(gg_requires_grad(tb, true), GG_OK);
    cr_assert_eq(gg_requires_grad(ta, false), GG_OK);
    check_grad(f_kron, NULL, 2, tt);
    gg_tensor_free(ta);
    gg_tensor_free(tb);
    gg_tensor_free(a);
    gg_tensor_free(b);
}

Test(kron, chain_gradcheck) {
    gg_tensor *A = leaf(GG_SHAPE(2, 2), 80), *B = tleaf(GG_SHAPE(2, 2), 81), *C = leaf(GG_SHAPE(2, 2), 82);
    gg_tensor *abc[] = {A, B, C};
    check_grad(f_kron3, NULL, 3, abc);
    gg_tensor *D = leaf(GG_SHAPE(2, 3), 83);
    gg_tensor *abd[] = {A, D, C};
    check_grad(f_kron3, NULL, 3, abd);
    /* the DGConv case: six 2x2 factors -> [64,64] */
    gg_tensor *f[6];
    for (int i = 0; i < 6; i++)
        f[i] = i % 2 ? tleaf(GG_SHAPE(2, 2), 90 + (uint64_t)i) : leaf(GG_SHAPE(2, 2), 90 + (uint64_t)i);
    int n = 6;
    gg_tensor *y = f_kron_chain(f, &n);
    gt_assert_shape(y, 64, 64);
    check_grad(f_kron_chain, &n, 6, f);
    for (int i = 0; i < 6; i++) gg_tensor_free(f[i]);
    gg_tensor_free(D);
    gg_tensor_free(A);
    gg_tensor_free(B);
    gg_tensor_free(C);
}

Test(kron, errors) {
    gg_tensor *a = gg_tensor_zeros(GG_SHAPE(2, 2)), *c = gg_tensor_zeros(GG_SHAPE(2, 2, 2));
    gg_tensor *v = gg_tensor_zeros(GG_SHAPE(4));
    expect_fail(gg_kron(c, a), GG_ERR_SHAPE, "gg_kron", "a [2,2,2] and b [2,2]");
    expect_fail(gg_kron(a, v), GG_ERR_SHAPE, "gg_kron", "2-D");
    gt_assert_msg_has("b [4]");
    gg_tensor *s = gg_tensor_scalar(1.0f);
    expect_fail(gg_kron(s, a), GG_ERR_SHAPE, "gg_kron", "a []");
    gg_tensor *one = gg_tensor_zeros(GG_SHAPE(1, 1));
    gg_tensor *big = gg_tensor_expand(one, GG_SHAPE(INT64_C(1) << 20, INT64_C(1) << 20)); /* kron: 2^80 */
    expect_fail(gg_kron(big, big), GG_ERR_OVERFLOW, "gg_kron", "too large");
    expect_sticky(gg_kron(NULL, a), "gg_kron");
    expect_sticky(gg_kron(a, NULL), "gg_kron");
    gg_tensor_free(big);
    gg_tensor_free(one);
    gg_tensor_free(s);
    gg_tensor_free(v);
    gg_tensor_free(c);
    gg_tensor_free(a);
}
