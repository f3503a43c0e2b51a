/* Tests of tensor printing (gg_tensor_format / gg_tensor_fprint): PyTorch-like text with a shape suffix,
 * aligned columns, "..." elision beyond 1000 elements, and the snprintf-like buffer contract. */
#include <criterion/criterion.h>

#include "groupgrad.h"
#include "gg_test_util.h"

static char out[1 << 16];

static const char *fmt(const gg_tensor *t) {
    memset(out, 'Z', sizeof out);
    int n = gg_tensor_format(t, out, sizeof out);
    cr_assert_geq(n, 0, "gg_tensor_format failed: %s", gg_last_error());
    cr_assert_eq((size_t)n, strlen(out), "returned length %d, text length %zu", n, strlen(out));
    return out;
}

#define assert_text(t, expected)                                                                        \
    do {                                                                                               \
        const char *got_ = fmt(t);                                                                     \
        cr_assert_str_eq(got_, (expected), "got:\n%s\nexpected:\n%s", got_, (expected));               \
    } while (0)

Test(print, matrix_2x3) {
    gg_tensor *t = GT_IOTA(2, 3);
    assert_text(t, "tensor([[0., 1., 2.],\n"
                   "        [3., 4., 5.]], shape=[2,3])");
    gg_tensor_free(t);
}

Test(print, vector_and_single) {
    gg_tensor *v = gg_tensor_arange(0, 8, 1);
    assert_text(v, "tensor([0., 1., 2., 3., 4., 5., 6., 7.], shape=[8])");
    gg_tensor *one = gg_tensor_full(GG_SHAPE(1), 7);
    assert_text(one, "tensor([7.], shape=[1])");
    gg_tensor *m = gg_tensor_ones(GG_SHAPE(1, 1));
    assert_text(m, "tensor([[1.]], shape=[1,1])");
    gg_tensor_free(m);
    gg_tensor_free(one);
    gg_tensor_free(v);
}

Test(print, rank0) {
    gg_tensor *s = gg_tensor_scalar(3.5f);
    assert_text(s, "tensor(3.5000)");
    gg_tensor *i = gg_tensor_scalar(-2);
    assert_text(i, "tensor(-2.)");
    gg_tensor_free(i);
    gg_tensor_free(s);
}

Test(print, empty) {
    gg_tensor *a = gg_tensor_zeros(GG_SHAPE(0, 3));
    assert_text(a, "tensor([], shape=[0,3])");
    gg_tensor *b = gg_tensor_zeros(GG_SHAPE(0));
    assert_text(b, "tensor([], shape=[0])");
    gg_tensor_free(b);
    gg_tensor_free(a);
}

Test(print, negative_numbers_align) {
    gg_tensor *t = gg_tensor_from_data(GG_SHAPE(2, 2), (const float[]){0.5f, -1, 2, 3.25f});
    assert_text(t, "tensor([[ 0.5000, -1.0000],\n"
                   "        [ 2.0000,  3.2500]], shape=[2,2])");
    gg_tensor *i = gg_tensor_from_data(GG_SHAPE(3), (const float[]){-10, 5, 100});
    assert_text(i, "tensor([-10.,   5., 100.], shape=[3])");
    gg_tensor_free(i);
    gg_tensor_free(t);
}

Test(print, rank3_blank_line_between_blocks) {
    gg_tensor *t = GT_IOTA(2, 2, 2);
    assert_text(t, "tensor([[[0., 1.],\n"
                   "         [2., 3.]],\n"
                   "\n"
                   "        [[4., 5.],\n"
                   "         [6., 7.]]], shape=[2,2,2])");
    gg_tensor_free(t);
}

Test(print, scientific_and_nonfinite) {
    gg_tensor *s = gg_tensor_from_data(GG_SHAPE(3), (const float[]){1e-5f, 1, 1e9f});
    assert_text(s, "tensor([1.0000e-05, 1.0000e+00, 1.0000e+09], shape=[3])");
    gg_tensor *n = gg_tensor_from_data(GG_SHAPE(3), (const float[]){1.5f, NAN, -INFINITY});
    assert_text(n, "tensor([1.5000,    nan,   -inf], shape=[3])");
    gg_tensor_free(n);
    gg_tensor_free(s);
}

Test(print, views_print_in_logical_order) {
    gg_tensor *x = GT_IOTA(2, 3);
    gg_tensor *t = gg_tensor_transpose(x, 0, 1);
    assert_text(t, "tensor([[0., 3.],\n"
                   "        [1., 4.],\n"
                   "        [2., 5.]], shape=[3,2])");
    gg_tensor *row = gg_tensor_slice(x, 0, 1, 2, 1);
    gg_tensor *e = gg_tensor_expand(row, GG_SHAPE(2, 3));
    assert_text(e, "tensor([[3., 4., 5.],\n"
                   "        [3., 4., 5.]], shape=[2,3])");
    gg_tensor_free(e);
    gg_tensor_free(row);
    gg_tensor_free(t);
    gg_tensor_free(x);
}

Test(print, wraps_long_rows_at_80_columns) {
    gg_tensor *t = gg_tensor_arange(0, 30, 1);
    assert_text(t, "tensor([ 0.,  1.,  2.,  3.,  4.,  5.,  6.,  7.,  8.,  9., 10., 11., 12., 13.,\n"
                   "        14., 15., 16., 17., 18., 19., 20., 21., 22., 23., 24., 25., 26., 27.,\n"
                   "        28., 29.], shape=[30])");
    gg_tensor *f = gg_tensor_arange(0, 3, 0.125); /* 24 values of width 6 */
    const char *s = fmt(f);
    int col = 0;
    for (const char *p = s; *p; p++) {
        col = *p == '\n' ? 0 : col + 1;
        cr_assert_leq(col, 80, "a line is longer than 80 columns:\n%s", s);
    }
    gg_tensor_free(f);
    gg_tensor_free(t);
}

Test(print, elides_vector_over_1000) {
    gg_tensor *t = gg_tensor_arange(0, 2000, 1);
    assert_text(t, "tensor([   0.,    1.,    2., ..., 1997., 1998., 1999.], shape=[2000])");
    gg_tensor_free(t);
}

Test(print, elides_matrix_rows_and_columns) {
    gg_tensor *t = GT_IOTA(100, 11);
    assert_text(t, "tensor([[   0.,    1.,    2., ...,    8.,    9.,   10.],\n"
                   "        [  11.,   12.,   13., ...,   19.,   20.,   21.],\n"
                   "        [  22.,   23.,   24., ...,   30.,   31.,   32.],\n"
                   "        ...,\n"
                   "        [1067., 1068., 1069., ..., 1075., 1076., 1077.],\n"
                   "        [1078., 1079., 1080., ..., 1086., 1087., 1088.],\n"
                   "        [1089., 1090., 1091., ..., 1097., 1098., 1099.]], shape=[100,11])");
    gg_tensor_free(t);
}

Test(print, elision_threshold_is_1000_elements) {
    gg_tensor *a = gg_tensor_zeros(GG_SHAPE(1000));
    cr_assert_null(strstr(fmt(a), "..."), "1000 elements must print in full");
    gg_tensor *b = gg_tensor_zeros(GG_SHAPE(1001));
    cr_assert_not_null(strstr(fmt(b), "..."), "1001 elements must be summarised");
    /* Over the threshold, but no dimension longer than 2 * 3 edge items: nothing to elide (as NumPy). */
    gg_tensor *c = gg_tensor_zeros(GG_SHAPE(6, 6, 6, 6));
    cr_assert_null(strstr(fmt(c), "..."));
    gg_tensor_free(c);
    gg_tensor_free(b);
    gg_tensor_free(a);
}

Test(print, small_buffer_truncates_and_returns_needed_length) {
    gg_tensor *t = GT_IOTA(2, 3);
    const char *full = "tensor([[0., 1., 2.],\n        [3., 4., 5.]], shape=[2,3])";
    int need = (int)strlen(full);
    char buf[16];
    memset(buf, 'Z', sizeof buf);
    cr_assert_eq(gg_tensor_format(t, buf, 10), need);
    cr_assert_str_eq(buf, "tensor([[");
    for (int i = 10; i < 16; i++) cr_assert_eq(buf[i], 'Z', "wrote past the given size at %d", i);
    memset(buf, 'Z', sizeof buf);
    cr_assert_eq(gg_tensor_format(t, buf, 1), need);
    cr_assert_eq(buf[0], '\0');
    cr_assert_eq(buf[1], 'Z');
    cr_assert_eq(gg_tensor_format(t, NULL, 0), need, "size 0 must just measure");
    char exact[128];
    cr_assert_eq(gg_tensor_format(t, exact, (size_t)need + 1), need);
    cr_assert_str_eq(exact, full);
    cr_assert_eq(gg_tensor_format(t, exact, (size_t)need), need);
    cr_assert_eq(strlen(exact), (size_t)need - 1);
    gg_tensor_free(t);
}

Test(print, fprint_matches_format_plus_newline) {
    gg_tensor *t = gg_tensor_from_data(GG_SHAPE(2, 2), (const float[]){0.5f, -1, 2, 3.25f});
    FILE *f = tmpfile();
    cr_assert_not_null(f);
    cr_assert_eq(gg_tensor_fprint(f, t), GG_OK);
    long n = ftell(f);
    rewind(f);
    char buf[512] = {0};
    cr_assert_eq(fread(buf, 1, sizeof buf - 1, f), (size_t)n);
    fclose(f);
    char want[512];
    int len = gg_tensor_format(t, want, sizeof want);
    cr_assert_eq(n, len + 1);
    strcat(want, "\n");
    cr_assert_str_eq(buf, want);
    gg_tensor_free(t);
}

Test(print, null_tensor_is_error) {
    gg_clear_error();
    char buf[32] = "unchanged";
    cr_assert_lt(gg_tensor_format(NULL, buf, sizeof buf), 0);
    cr_assert_lt(gg_last_status(), 0);
    cr_assert_lt(gg_tensor_fprint(stdout, NULL), 0);
    gg_tensor *t = gg_tensor_zeros(GG_SHAPE(2));
    cr_assert_lt(gg_tensor_fprint(NULL, t), 0, "NULL stream accepted");
    gg_tensor_free(t);
}
