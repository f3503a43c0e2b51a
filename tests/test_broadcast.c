/* Tests of the shape helpers (gg_tensor.h, shapes section): NumPy broadcasting rules, element counts
 * with overflow detection, shape formatting and dimension normalisation. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "groupgrad.h"
#include "gg_test_util.h"

typedef struct bcase {
    int na;
    int64_t a[GG_MAX_DIMS];
    int nb;
    int64_t b[GG_MAX_DIMS];
    int nout; /* -1: incompatible */
    int64_t out[GG_MAX_DIMS];
} bcase;

static const bcase bcases[] = {
    {2, {2, 3}, 2, {2, 3}, 2, {2, 3}},
    {2, {2, 1}, 2, {1, 3}, 2, {2, 3}},
    {1, {3}, 2, {2, 3}, 2, {2, 3}},
    {2, {2, 3}, 1, {3}, 2, {2, 3}},
    {3, {4, 1, 5}, 2, {3, 1}, 3, {4, 3, 5}},
    {0, {0}, 2, {2, 3}, 2, {2, 3}},
    {2, {2, 3}, 0, {0}, 2, {2, 3}},
    {0, {0}, 0, {0}, 0, {0}},
    {1, {0}, 1, {1}, 1, {0}},
    {1, {1}, 1, {0}, 1, {0}},
    {2, {0, 3}, 2, {1, 1}, 2, {0, 3}},
    {3, {5, 1, 0}, 1, {1}, 3, {5, 1, 0}},
    {1, {1}, 4, {1, 1, 1, 1}, 4, {1, 1, 1, 1}},
    {8, {2, 1, 2, 1, 2, 1, 2, 1}, 3, {3, 1, 3}, 8, {2, 1, 2, 1, 2, 3, 2, 3}},
    {2, {2, 3}, 2, {4, 3}, -1, {0}},
    {1, {0}, 1, {2}, -1, {0}},
    {2, {3, 1}, 1, {4}, 2, {3, 4}},
    {3, {2, 3, 4}, 2, {3, 5}, -1, {0}},
    {2, {1, 7}, 3, {6, 1, 1}, 3, {6, 1, 7}},
};
#define N_BCASES ((int)(sizeof bcases / sizeof bcases[0]))

static void fmt(int n, const int64_t *s, char *buf, size_t size) {
    size_t p = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < n; d++) p += (size_t)snprintf(buf + p, size - p, d ? ",%lld" : "%lld", (long long)s[d]);
    snprintf(buf + p, size - p, "]");
}

ParameterizedTestParameters(broadcast, rules) {
    static int rows[N_BCASES];
    for (int i = 0; i < N_BCASES; i++) rows[i] = i;
    return cr_make_param_array(int, rows, N_BCASES);
}

ParameterizedTest(int *row, broadcast, rules) {
    const bcase *c = &bcases[*row];
    char sa[128], sb[128];
    fmt(c->na, c->a, sa, sizeof sa);
    fmt(c->nb, c->b, sb, sizeof sb);
    int nd = -7;
    int64_t out[GG_MAX_DIMS];
    for (int d = 0; d < GG_MAX_DIMS; d++) out[d] = -99;
    gg_clear_error();
    int st = gg_broadcast_shapes(c->na, c->a, c->nb, c->b, &nd, out, NULL);
    if (c->nout < 0) {
        cr_assert_eq(st, GG_ERR_SHAPE, "%s with %s: status %d, expected GG_ERR_SHAPE", sa, sb, st);
        gt_assert_error(GG_ERR_SHAPE, sa);
        gt_assert_msg_has(sb);
        gt_assert_msg_has("gg_broadcast_shapes");
        return;
    }
    cr_assert_eq(st, GG_OK, "%s with %s failed: %s", sa, sb, gg_last_error());
    cr_assert_eq(nd, c->nout, "%s with %s: rank %d, expected %d", sa, sb, nd, c->nout);
    for (int d = 0; d < nd; d++)
        cr_assert_eq(out[d], c->out[d], "%s with %s: out[%d] = %lld, expected %lld", sa, sb, d, (long long)out[d],
                     (long long)c->out[d]);
    cr_assert_eq(gg_last_status(), GG_OK, "success recorded an error");
}

Test(broadcast, symmetric) {
    for (int r = 0; r < N_BCASES; r++) {
        const bcase *c = &bcases[r];
        int n1, n2;
        int64_t o1[GG_MAX_DIMS], o2[GG_MAX_DIMS];
        int s1 = gg_broadcast_shapes(c->na, c->a, c->nb, c->b, &n1, o1, NULL);
        int s2 = gg_broadcast_shapes(c->nb, c->b, c->na, c->a, &n2, o2, NULL);
        cr_assert_eq(s1, s2, "case %d not symmetric", r);
        if (s1 == GG_OK) {
            cr_assert_eq(n1, n2);
            for (int d = 0; d < n1; d++) cr_assert_eq(o1[d], o2[d], "case %d dim %d", r, d);
        }
    }
}

Test(broadcast, caller_name_in_message) {
    int nd;
    int64_t out[GG_MAX_DIMS];
    int st = gg_broadcast_shapes(GG_SHAPE(8, 3), GG_SHAPE(8, 4), &nd, out, "gg_add");
    cr_assert_eq(st, GG_ERR_SHAPE);
    gt_assert_error(GG_ERR_SHAPE, "gg_add");
    gt_assert_msg_has("[8,3]");
    gt_assert_msg_has("[8,4]");
    cr_assert_null(strstr(gg_last_error(), "gg_broadcast_shapes"), "caller name should replace it: %s",
                   gg_last_error());
}

Test(broadcast, rank_over_limit_is_error) {
    int nd;
    int64_t out[GG_MAX_DIMS];
    const int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 2};
    gg_clear_error();
    int st = gg_broadcast_shapes(9, nine, GG_SHAPE(2), &nd, out, NULL);
    cr_assert_lt(st, 0, "a rank-9 input must be refused (out has room for 8)");
}

/* Negative sizes are not shapes (NumPy: "negative dimensions are not allowed"); a size-1 partner must not
 * let one through into the result. */
Test(broadcast, negative_size_rejected) {
    int nd = -7;
    int64_t out[GG_MAX_DIMS] = {0};
    gg_clear_error();
    int st = gg_broadcast_shapes(GG_SHAPE(-1), GG_SHAPE(1), &nd, out, NULL);
    cr_assert_lt(st, 0, "[-1] with [1] gave rank %d, out[0] = %lld", nd, (long long)out[0]);
    gg_clear_error();
    st = gg_broadcast_shapes(GG_SHAPE(2, 1), GG_SHAPE(-3), &nd, out, NULL);
    cr_assert_lt(st, 0, "[2,1] with [-3] gave out = [%lld,%lld]", (long long)out[0], (long long)out[1]);
}

/* ---- gg_shape_numel ---- */

Test(broadcast, shape_numel_values) {
    cr_assert_eq(gg_shape_numel(GG_SHAPE(2, 3, 4), NULL), 24);
    cr_assert_eq(gg_shape_numel(0, NULL, NULL), 1);
    cr_assert_eq(gg_shape_numel(GG_SHAPE(0, 5), NULL), 0);
    cr_assert_eq(gg_shape_numel(GG_SHAPE(5, 0), NULL), 0);
    /* Large products that fit comfortably (the implementation caps numel below 2^61 so byte sizes stay
     * addressable; the header only promises -1 on overflow). */
    cr_assert_eq(gg_shape_numel(GG_SHAPE((int64_t)1 << 30, (int64_t)1 << 30), NULL), (int64_t)1 << 60);
    cr_assert_eq(gg_shape_numel(GG_SHAPE((int64_t)1 << 60, 1, 1), NULL), (int64_t)1 << 60);
    cr_assert_eq(gg_last_status(), GG_OK);
}

Test(broadcast, shape_numel_negative) {
    cr_assert_eq(gg_shape_numel(GG_SHAPE(2, -1), "my_op"), -1);
    gt_assert_error(GG_ERR_ARG, "my_op");
    gg_clear_error();
    cr_assert_eq(gg_shape_numel(GG_SHAPE(0, -3), NULL), -1, "a negative size with a zero size is still invalid");
    cr_assert_eq(gg_last_status(), GG_ERR_ARG);
}

Test(broadcast, shape_numel_overflow) {
    const int64_t b40 = (int64_t)1 << 40;
    cr_assert_eq(gg_shape_numel(GG_SHAPE(b40, b40), "my_op"), -1);
    gt_assert_error(GG_ERR_OVERFLOW, "my_op");
    gg_clear_error();
    cr_assert_eq(gg_shape_numel(GG_SHAPE((int64_t)1 << 62, 2), NULL), -1);
    cr_assert_eq(gg_last_status(), GG_ERR_OVERFLOW);
    gg_clear_error();
    cr_assert_eq(gg_shape_numel(GG_SHAPE(INT64_MAX, 2), NULL), -1);
    cr_assert_eq(gg_last_status(), GG_ERR_OVERFLOW);
    gg_clear_error();
    /* 2^21 cubed = 2^63 is one past INT64_MAX */
    const int64_t b21 = (int64_t)1 << 21;
    cr_assert_eq(gg_shape_numel(GG_SHAPE(b21, b21, b21), NULL), -1);
    cr_assert_eq(gg_last_status(), GG_ERR_OVERFLOW);
}

/* The count of a shape cannot depend on the order of its sizes: [2^40,2^40,0] and [0,2^40,2^40] have
 * the same (zero) product, so both must give the same answer. */
Test(broadcast, shape_numel_order_independent) {
    const int64_t b40 = (int64_t)1 << 40;
    gg_clear_error();
    int64_t n1 = gg_shape_numel(GG_SHAPE(0, b40, b40), NULL);
    int s1 = gg_last_status();
    gg_clear_error();
    int64_t n2 = gg_shape_numel(GG_SHAPE(b40, b40, 0), NULL);
    int s2 = gg_last_status();
    gg_clear_error();
    int64_t n3 = gg_shape_numel(GG_SHAPE(b40, 0, b40), NULL);
    int s3 = gg_last_status();
    cr_assert(n1 == n2 && n2 == n3 && s1 == s2 && s2 == s3,
              "[0,2^40,2^40] -> %lld (status %d), [2^40,2^40,0] -> %lld (status %d), [2^40,0,2^40] -> %lld "
              "(status %d)",
              (long long)n1, s1, (long long)n2, s2, (long long)n3, s3);
}

/* ---- gg_shape_str ---- */

Test(broadcast, shape_str_format) {
    char buf[128];
    cr_assert_eq(gg_shape_str(GG_SHAPE(2, 3, 4), buf, sizeof buf), buf);
    cr_assert_str_eq(buf, "[2,3,4]");
    cr_assert_str_eq(gg_shape_str(0, NULL, buf, sizeof buf), "[]");
    cr_assert_str_eq(gg_shape_str(GG_SHAPE(7), buf, sizeof buf), "[7]");
    cr_assert_str_eq(gg_shape_str(GG_SHAPE(0, 1099511627776), buf, sizeof buf), "[0,1099511627776]");
    cr_assert_str_eq(gg_shape_str(GG_SHAPE(1, 2, 3, 4, 5, 6, 7, 8), buf, sizeof buf), "[1,2,3,4,5,6,7,8]");
    cr_assert_str_eq(gg_shape_str(GG_SHAPE(-1, 2), buf, sizeof buf), "[-1,2]");
}

Test(broadcast, shape_str_small_buffer) {
    char buf[16];
    memset(buf, 'Z', sizeof buf);
    char *r = gg_shape_str(GG_SHAPE(123, 456, 789), buf, 6);
    cr_assert_eq(r, buf);
    cr_assert_lt(strlen(buf), 6, "not NUL-terminated within size: \"%s\"", buf);
    cr_assert_eq(strncmp(buf, "[123,456,789]", strlen(buf)), 0, "truncated text \"%s\" is not a prefix", buf);
    for (int i = 6; i < 16; i++) cr_assert_eq(buf[i], 'Z', "wrote past size at %d", i);
    char one[1] = {'Q'};
    gg_shape_str(GG_SHAPE(1, 2), one, 1);
    cr_assert_eq(one[0], '\0');
}

/* ---- gg_normalize_dim ---- */

Test(broadcast, normalize_dim_values) {
    cr_assert_eq(gg_normalize_dim(-1, 3, 0, NULL), 2);
    cr_assert_eq(gg_normalize_dim(-3, 3, 0, NULL), 0);
    cr_assert_eq(gg_normalize_dim(0, 3, 0, NULL), 0);
    cr_assert_eq(gg_normalize_dim(2, 3, 0, NULL), 2);
    cr_assert_eq(gg_normalize_dim(3, 3, 1, NULL), 3);
    cr_assert_eq(gg_normalize_dim(-1, 3, 1, NULL), 3);
    cr_assert_eq(gg_normalize_dim(-4, 3, 1, NULL), 0);
    cr_assert_eq(gg_normalize_dim(0, 0, 1, NULL), 0);
    cr_assert_eq(gg_normalize_dim(-1, 0, 1, NULL), 0);
    cr_assert_eq(gg_last_status(), GG_OK);
}

Test(broadcast, normalize_dim_errors) {
    cr_assert_eq(gg_normalize_dim(3, 3, 0, "my_fn"), -1);
    gt_assert_error(GG_ERR_INDEX, "my_fn");
    gg_clear_error();
    cr_assert_eq(gg_normalize_dim(-4, 3, 0, "my_fn"), -1);
    cr_assert_eq(gg_last_status(), GG_ERR_INDEX);
    gg_clear_error();
    cr_assert_eq(gg_normalize_dim(4, 3, 1, "my_fn"), -1);
    cr_assert_eq(gg_last_status(), GG_ERR_INDEX);
    gg_clear_error();
    cr_assert_eq(gg_normalize_dim(-5, 3, 1, "my_fn"), -1);
    cr_assert_eq(gg_last_status(), GG_ERR_INDEX);
    gg_clear_error();
    cr_assert_eq(gg_normalize_dim(0, 0, 0, "my_fn"), -1, "a rank-0 tensor has no dim 0");
    cr_assert_eq(gg_last_status(), GG_ERR_INDEX);
    gg_clear_error();
    cr_assert_eq(gg_normalize_dim(GG_ALL_DIMS, 3, 0, "my_fn"), -1);
    cr_assert_eq(gg_last_status(), GG_ERR_INDEX);
}

/* Broadcasting through the tensor API: expanding both operands to the broadcast shape agrees with
 * gg_broadcast_shapes. */
Test(broadcast, expand_to_broadcast_shape) {
    gg_tensor *a = GT_IOTA(4, 1, 3);
    gg_tensor *b = GT_IOTA(2, 1);
    int nd;
    int64_t out[GG_MAX_DIMS];
    cr_assert_eq(gg_broadcast_shapes(a->ndim, a->shape, b->ndim, b->shape, &nd, out, NULL), GG_OK);
    gg_tensor *ea = gg_tensor_expand(a, nd, out);
    gg_tensor *eb = gg_tensor_expand(b, nd, out);
    gt_assert_shape(ea, 4, 2, 3);
    gt_assert_shape(eb, 4, 2, 3);
    float va, vb;
    gg_tensor_get(ea, (int64_t[]){3, 1, 2}, &va);
    gg_tensor_get(eb, (int64_t[]){3, 1, 2}, &vb);
    cr_assert_eq(va, 11);
    cr_assert_eq(vb, 1);
    gg_tensor_free(eb);
    gg_tensor_free(ea);
    gg_tensor_free(b);
    gg_tensor_free(a);
}
