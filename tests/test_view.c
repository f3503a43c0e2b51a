/* Tests of the zero-copy view operations (gg_tensor.h, views section): view/reshape, permute, transpose,
 * slice, select, expand, squeeze/unsqueeze, flatten, contiguous, and a randomised check of chains of views
 * against an independent dense-index model. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "groupgrad.h"
#include "gg_test_util.h"

/* ---- view / reshape ---- */

Test(view, view_shares_storage) {
    gg_tensor *x = gg_tensor_arange(0, 12, 1);
    gg_tensor *m = gg_tensor_view(x, GG_SHAPE(3, 4));
    gt_assert_shape(m, 3, 4);
    cr_assert_eq(m->storage, x->storage);
    cr_assert_eq(m->stride[0], 4);
    cr_assert_eq(m->stride[1], 1);
    cr_assert_eq(gg_tensor_set(m, (int64_t[]){2, 1}, -9), GG_OK);
    float v;
    gg_tensor_get(x, (int64_t[]){9}, &v);
    cr_assert_eq(v, -9, "write through the view not visible in the base");
    gg_tensor_free(m);
    gg_tensor_free(x);
}

Test(view, view_infers_minus_one) {
    gg_tensor *x = gg_tensor_arange(0, 12, 1);
    gg_tensor *a = gg_tensor_view(x, GG_SHAPE(-1, 4));
    gt_assert_shape(a, 3, 4);
    gg_tensor *b = gg_tensor_view(x, GG_SHAPE(2, -1, 2));
    gt_assert_shape(b, 2, 3, 2);
    gt_assert_list(b, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11);
    gg_tensor *c = gg_tensor_view(a, GG_SHAPE(-1));
    gt_assert_shape(c, 12);
    gg_tensor *s = gg_tensor_scalar(5);
    gg_tensor *d = gg_tensor_view(s, GG_SHAPE(-1));
    gt_assert_shape(d, 1);
    gg_tensor *e = gg_tensor_view(s, GG_SHAPE(1, 1));
    gt_assert_shape(e, 1, 1);
    gg_tensor *f = gg_tensor_view(e, 0, NULL);
    cr_assert_not_null(f);
    cr_assert_eq(f->ndim, 0);
    gg_tensor_free(f);
    gg_tensor_free(e);
    gg_tensor_free(d);
    gg_tensor_free(s);
    gg_tensor_free(c);
    gg_tensor_free(b);
    gg_tensor_free(a);
    gg_tensor_free(x);
}

Test(view, view_errors) {
    gg_tensor *x = gg_tensor_zeros(GG_SHAPE(3, 7));
    cr_assert_null(gg_tensor_view(x, GG_SHAPE(-1, -1)));
    cr_assert_lt(gg_last_status(), 0);
    gt_assert_msg_has("gg_tensor_view");
    cr_assert_null(gg_tensor_view(x, GG_SHAPE(4, 5)));
    gt_assert_error(GG_ERR_SHAPE, "[4,5]");
    gt_assert_msg_has("[3,7]");
    cr_assert_null(gg_tensor_view(x, GG_SHAPE(-1, 5))); /* 21 is not a multiple of 5 */
    cr_assert_eq(gg_last_status(), GG_ERR_SHAPE);
    cr_assert_null(gg_tensor_view(x, GG_SHAPE(3, -7)));
    cr_assert_lt(gg_last_status(), 0);
    cr_assert_null(gg_tensor_view(x, GG_SHAPE(1, 1, 1, 1, 1, 1, 1, 1, 21)));
    cr_assert_lt(gg_last_status(), 0);
    cr_assert_null(gg_tensor_reshape(x, GG_SHAPE(22)));
    gt_assert_error(GG_ERR_SHAPE, "gg_tensor_reshape");
    gg_tensor_free(x);
}

Test(view, view_of_transposed_fails_reshape_copies) {
    gg_tensor *x = GT_IOTA(3, 4);
    gg_tensor *t = gg_tensor_transpose(x, 0, 1);
    gg_clear_error();
    cr_assert_null(gg_tensor_view(t, GG_SHAPE(12)));
    cr_assert_lt(gg_last_status(), 0);
    gt_assert_msg_has("gg_tensor_view");
    gg_tensor *r = gg_tensor_reshape(t, GG_SHAPE(12));
    gt_assert_shape(r, 12);
    cr_assert_neq(r->storage, x->storage, "reshape of a transposed tensor cannot be a view");
    gt_assert_list(r, 0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11);
    gg_tensor *r2 = gg_tensor_reshape(t, GG_SHAPE(6, -1));
    gt_assert_shape(r2, 6, 2);
    gt_assert_list(r2, 0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11);
    gg_tensor_free(r2);
    gg_tensor_free(r);
    gg_tensor_free(t);
    gg_tensor_free(x);
}

Test(view, view_of_noncontiguous_when_expressible) {
    gg_tensor *x = GT_IOTA(3, 4);
    gg_tensor *t = gg_tensor_transpose(x, 0, 1); /* [4,3] strides (1,4) */
    gg_tensor *v = gg_tensor_view(t, GG_SHAPE(2, 2, 3));
    gt_assert_shape(v, 2, 2, 3);
    cr_assert_eq(v->storage, x->storage);
    cr_assert_eq(v->stride[0], 2);
    cr_assert_eq(v->stride[1], 1);
    cr_assert_eq(v->stride[2], 4);
    gt_assert_list(v, 0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11);
    /* Reshape picks the view too. */
    gg_tensor *r = gg_tensor_reshape(t, GG_SHAPE(2, 2, 3));
    cr_assert_eq(r->storage, x->storage, "reshape copied although a view was possible");
    /* A column slice of a matrix can be split along its rows. */
    gg_tensor *m = GT_IOTA(4, 6);
    gg_tensor *cols = gg_tensor_slice(m, 1, 1, 4, 1); /* [4,3] strides (6,1) */
    gg_tensor *w = gg_tensor_view(cols, GG_SHAPE(2, 2, 3));
    cr_assert_not_null(w, "%s", gg_last_error());
    cr_assert_eq(w->storage, m->storage);
    gt_assert_list(w, 1, 2, 3, 7, 8, 9, 13, 14, 15, 19, 20, 21);
    gg_clear_error();
    cr_assert_null(gg_tensor_view(cols, GG_SHAPE(12)), "merging non-adjacent rows cannot be a view");
    gg_tensor_free(w);
    gg_tensor_free(cols);
    gg_tensor_free(m);
    gg_tensor_free(r);
    gg_tensor_free(v);
    gg_tensor_free(t);
    gg_tensor_free(x);
}

Test(view, view_of_expanded_with_size1_dims) {
    gg_tensor *x = gg_tensor_arange(0, 3, 1);
    gg_tensor *e = gg_tensor_expand(x, GG_SHAPE(4, 3)); /* strides (0,1) */
    gg_tensor *v = gg_tensor_view(e, GG_SHAPE(4, 1, 3));
    cr_assert_not_null(v, "inserting a size-1 dim is always expressible: %s", gg_last_error());
    cr_assert_eq(v->storage, x->storage);
    gt_assert_list(v, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2);
    gg_tensor *r = gg_tensor_reshape(e, GG_SHAPE(12));
    gt_assert_shape(r, 12);
    gt_assert_list(r, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2);
    gg_tensor_free(r);
    gg_tensor_free(v);
    gg_tensor_free(e);
    gg_tensor_free(x);
}

/* ---- permute / transpose ---- */

Test(view, permute_shape_strides_values) {
    gg_tensor *x = GT_IOTA(2, 3, 4);
    gg_tensor *p = gg_tensor_permute(x, (const int[]){2, 0, 1});
    gt_assert_shape(p, 4, 2, 3);
    cr_assert_eq(p->stride[0], 1);
    cr_assert_eq(p->stride[1], 12);
    cr_assert_eq(p->stride[2], 4);
    cr_assert_eq(p->storage, x->storage);
    float v;
    gg_tensor_get(p, (int64_t[]){3, 1, 2}, &v); /* x[1,2,3] */
    cr_assert_eq(v, 23);
    cr_assert_not(gg_tensor_is_contiguous(p));
    gg_tensor *back = gg_tensor_permute(p, (const int[]){1, 2, 0});
    gt_assert_shape(back, 2, 3, 4);
    cr_assert(gg_tensor_is_contiguous(back));
    gg_tensor_free(back);
    gg_tensor_free(p);
    gg_tensor_free(x);
}

Test(view, permute_bad_perm) {
    gg_tensor *x = gg_tensor_zeros(GG_SHAPE(2, 3, 4));
    cr_assert_null(gg_tensor_permute(x, (const int[]){0, 0, 1}));
    cr_assert_lt(gg_last_status(), 0);
    gt_assert_msg_has("gg_tensor_permute");
    gg_clear_error();
    cr_assert_null(gg_tensor_permute(x, (const int[]){0, 1, 3}));
    cr_assert_lt(gg_last_status(), 0);
    gt_assert_msg_has("gg_tensor_permute");
    gg_clear_error();
    cr_assert_null(gg_tensor_permute(x, (const int[]){2, 1, 100}));
    cr_assert_lt(gg_last_status(), 0);
    gg_clear_error();
    cr_assert_null(gg_tensor_permute(x, (const int[]){2, 1, -100}));
    cr_assert_lt(gg_last_status(), 0);
    gg_tensor_free(x);
}

Test(view, transpose_dims) {
    gg_tensor *x = GT_IOTA(2, 3, 4);
    gg_tensor *t = gg_tensor_transpose(x, 0, 2);
    gt_assert_shape(t, 4, 3, 2);
    cr_assert_eq(t->stride[0], 1);
    cr_assert_eq(t->stride[1], 4);
    cr_assert_eq(t->stride[2], 12);
    gg_tensor *n = gg_tensor_transpose(x, -1, -2);
    gt_assert_shape(n, 2, 4, 3);
    float v;
    gg_tensor_get(n, (int64_t[]){1, 3, 2}, &v); /* x[1,2,3] */
    cr_assert_eq(v, 23);
    gg_tensor *same = gg_tensor_transpose(x, 1, 1);
    gt_assert_shape(same, 2, 3, 4);
    cr_assert(gg_tensor_is_contiguous(same));
    gg_clear_error();
    cr_assert_null(gg_tensor_transpose(x, 0, 3));
    gt_assert_error(GG_ERR_INDEX, "gg_tensor_transpose");
    cr_assert_null(gg_tensor_transpose(x, -4, 0));
    cr_assert_eq(gg_last_status(), GG_ERR_INDEX);
    gg_tensor_free(same);
    gg_tensor_free(n);
    gg_tensor_free(t);
    gg_tensor_free(x);
}

/* ---- slice / select ---- */

Test(view, slice_with_step) {
    gg_tensor *x = gg_tensor_arange(0, 10, 1);
    gg_tensor *s = gg_tensor_slice(x, 0, 1, 8, 3);
    gt_assert_shape(s, 3);
    gt_assert_list(s, 1, 4, 7);
    cr_assert_eq(s->stride[0], 3);
    cr_assert_eq(s->offset, 1);
    cr_assert_eq(s->storage, x->storage);
    gg_tensor *s2 = gg_tensor_slice(x, 0, 0, 10, 4);
    gt_assert_list(s2, 0, 4, 8);
    gg_tensor *s3 = gg_tensor_slice(s, 0, 1, 3, 1); /* slice of a slice */
    gt_assert_list(s3, 4, 7);
    cr_assert_eq(s3->offset, 4);
    gg_tensor_free(s3);
    gg_tensor_free(s2);
    gg_tensor_free(s);
    gg_tensor_free(x);
}

Test(view, slice_negative_bounds) {
    gg_tensor *x = gg_tensor_arange(0, 10, 1);
    gg_tensor *a = gg_tensor_slice(x, 0, -3, 10, 1);
    gt_assert_list(a, 7, 8, 9);
    gg_tensor *b = gg_tensor_slice(x, 0, -5, -1, 2);
    gt_assert_shape(b, 2);
    gt_assert_list(b, 5, 7);
    gg_tensor *c = gg_tensor_slice(x, -1, -10, 2, 1);
    gt_assert_list(c, 0, 1);
    gg_tensor_free(c);
    gg_tensor_free(b);
    gg_tensor_free(a);
    gg_tensor_free(x);
}

Test(view, slice_inner_dim) {
    gg_tensor *x = GT_IOTA(3, 4);
    gg_tensor *s = gg_tensor_slice(x, 1, 1, 4, 2);
    gt_assert_shape(s, 3, 2);
    gt_assert_list(s, 1, 3, 5, 7, 9, 11);
    cr_assert_eq(s->stride[0], 4);
    cr_assert_eq(s->stride[1], 2);
    gg_tensor_free(s);
    gg_tensor_free(x);
}

Test(view, slice_empty_results) {
    gg_tensor *x = gg_tensor_arange(0, 10, 1);
    gg_tensor *a = gg_tensor_slice(x, 0, 4, 4, 1);
    gt_assert_shape(a, 0);
    gg_tensor *b = gg_tensor_slice(x, 0, 10, 10, 1);
    gt_assert_shape(b, 0);
    gg_tensor *c = gg_tensor_slice(x, 0, 6, 3, 1);
    cr_assert_not_null(c, "start > stop within bounds should give an empty slice: %s", gg_last_error());
    gt_assert_shape(c, 0);
    gg_tensor_free(c);
    gg_tensor_free(b);
    gg_tensor_free(a);
    gg_tensor_free(x);
}

Test(view, slice_out_of_range) {
    gg_tensor *x = gg_tensor_arange(0, 10, 1);
    gg_clear_error();
    cr_assert_null(gg_tensor_slice(x, 0, 0, 11, 1), "stop past the end must be an error, not clamped");
    cr_assert_lt(gg_last_status(), 0);
    gt_assert_msg_has("gg_tensor_slice");
    gg_clear_error();
    cr_assert_null(gg_tensor_slice(x, 0, -11, 5, 1));
    cr_assert_lt(gg_last_status(), 0);
    gg_clear_error();
    cr_assert_null(gg_tensor_slice(x, 0, 11, 12, 1));
    cr_assert_lt(gg_last_status(), 0);
    gg_clear_error();
    cr_assert_null(gg_tensor_slice(x, 0, 0, 5, 0), "step 0");
    cr_assert_lt(gg_last_status(), 0);
    gg_clear_error();
    cr_assert_null(gg_tensor_slice(x, 0, 5, 0, -1), "negative step");
    cr_assert_lt(gg_last_status(), 0);
    gg_clear_error();
    cr_assert_null(gg_tensor_slice(x, 1, 0, 1, 1), "bad dim");
    cr_assert_eq(gg_last_status(), GG_ERR_INDEX);
    gg_tensor_free(x);
}

Test(view, select_removes_dim) {
    gg_tensor *x = GT_IOTA(3, 4);
    gg_tensor *c = gg_tensor_select(x, 1, 2);
    gt_assert_shape(c, 3);
    gt_assert_list(c, 2, 6, 10);
    cr_assert_eq(c->storage, x->storage);
    gg_tensor *r = gg_tensor_select(x, -2, 1);
    gt_assert_list(r, 4, 5, 6, 7);
    gg_tensor *e = gg_tensor_select(r, 0, 3);
    cr_assert_not_null(e);
    cr_assert_eq(e->ndim, 0);
    float v;
    cr_assert_eq(gg_tensor_item(e, &v), GG_OK);
    cr_assert_eq(v, 7);
    gg_clear_error();
    cr_assert_null(gg_tensor_select(x, 0, 3));
    gt_assert_error(GG_ERR_INDEX, "gg_tensor_select");
    cr_assert_null(gg_tensor_select(x, 2, 0));
    cr_assert_eq(gg_last_status(), GG_ERR_INDEX);
    cr_assert_null(gg_tensor_select(e, 0, 0), "select on a rank-0 tensor");
    cr_assert_lt(gg_last_status(), 0);
    gg_tensor_free(e);
    gg_tensor_free(r);
    gg_tensor_free(c);
    gg_tensor_free(x);
}

/* ---- expand ---- */

Test(view, expand_size1_and_new_dims) {
    gg_tensor *x = gg_tensor_from_data(GG_SHAPE(3, 1), (const float[]){1, 2, 3});
    gg_tensor *e = gg_tensor_expand(x, GG_SHAPE(3, 4));
    gt_assert_shape(e, 3, 4);
    cr_assert_eq(e->stride[1], 0);
    cr_assert_eq(e->storage, x->storage);
    gt_assert_list(e, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    cr_assert_not(gg_tensor_is_contiguous(e));
    gg_tensor *k = gg_tensor_expand(x, GG_SHAPE(-1, 2));
    gt_assert_shape(k, 3, 2);
    gt_assert_list(k, 1, 1, 2, 2, 3, 3);
    gg_tensor *n = gg_tensor_broadcast_to(x, GG_SHAPE(2, 3, 2));
    gt_assert_shape(n, 2, 3, 2);
    cr_assert_eq(n->stride[0], 0);
    cr_assert_eq(n->stride[2], 0);
    gt_assert_list(n, 1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3);
    gg_tensor *s = gg_tensor_scalar(4);
    gg_tensor *se = gg_tensor_expand(s, GG_SHAPE(2, 2));
    gt_assert_shape(se, 2, 2);
    gt_assert_all(se, 4);
    gg_tensor *z = gg_tensor_expand(x, GG_SHAPE(3, 0));
    gt_assert_shape(z, 3, 0);
    gg_tensor_free(z);
    gg_tensor_free(se);
    gg_tensor_free(s);
    gg_tensor_free(n);
    gg_tensor_free(k);
    gg_tensor_free(e);
    gg_tensor_free(x);
}

Test(view, expand_incompatible) {
    gg_tensor *x = gg_tensor_zeros(GG_SHAPE(3, 2));
    cr_assert_null(gg_tensor_expand(x, GG_SHAPE(3, 4)));
    gt_assert_error(GG_ERR_SHAPE, "gg_tensor_expand");
    gt_assert_msg_has("[3,2]");
    gt_assert_msg_has("[3,4]");
    gg_clear_error();
    cr_assert_null(gg_tensor_expand(x, GG_SHAPE(2)), "fewer dims than the tensor");
    cr_assert_lt(gg_last_status(), 0);
    gg_clear_error();
    cr_assert_null(gg_tensor_expand(x, GG_SHAPE(-1, 3, 2)), "-1 for a new leading dim");
    cr_assert_lt(gg_last_status(), 0);
    gg_tensor_free(x);
}

/* ---- squeeze / unsqueeze / flatten ---- */

Test(view, squeeze) {
    gg_tensor *x = GT_IOTA(1, 3, 1);
    gg_tensor *a = gg_tensor_squeeze(x, 0);
    gt_assert_shape(a, 3, 1);
    gg_tensor *b = gg_tensor_squeeze(x, -1);
    gt_assert_shape(b, 1, 3);
    gg_tensor *c = gg_tensor_squeeze(x, GG_ALL_DIMS);
    gt_assert_shape(c, 3);
    gt_assert_list(c, 0, 1, 2);
    cr_assert_eq(c->storage, x->storage);
    gg_clear_error();
    cr_assert_null(gg_tensor_squeeze(x, 1), "squeezing a size-3 dim");
    cr_assert_lt(gg_last_status(), 0);
    gt_assert_msg_has("gg_tensor_squeeze");
    cr_assert_null(gg_tensor_squeeze(x, 3));
    cr_assert_eq(gg_last_status(), GG_ERR_INDEX);
    gg_tensor *ones = gg_tensor_ones(GG_SHAPE(1, 1));
    gg_tensor *r0 = gg_tensor_squeeze(ones, GG_ALL_DIMS);
    cr_assert_not_null(r0);
    cr_assert_eq(r0->ndim, 0);
    gg_tensor *none = gg_tensor_squeeze(c, GG_ALL_DIMS);
    gt_assert_shape(none, 3);
    gg_tensor_free(none);
    gg_tensor_free(r0);
    gg_tensor_free(ones);
    gg_tensor_free(c);
    gg_tensor_free(b);
    gg_tensor_free(a);
    gg_tensor_free(x);
}

Test(view, unsqueeze_positions) {
    gg_tensor *x = GT_IOTA(2, 3);
    gg_tensor *a = gg_tensor_unsqueeze(x, 0);
    gt_assert_shape(a, 1, 2, 3);
    gg_tensor *b = gg_tensor_unsqueeze(x, 2);
    gt_assert_shape(b, 2, 3, 1);
    gg_tensor *c = gg_tensor_unsqueeze(x, -1);
    gt_assert_shape(c, 2, 3, 1);
    gg_tensor *d = gg_tensor_unsqueeze(x, -3);
    gt_assert_shape(d, 1, 2, 3);
    gg_tensor *e = gg_tensor_unsqueeze(x, 1);
    gt_assert_shape(e, 2, 1, 3);
    gt_assert_list(e, 0, 1, 2, 3, 4, 5);
    cr_assert(gg_tensor_is_contiguous(e));
    cr_assert_eq(e->storage, x->storage);
    gg_clear_error();
    cr_assert_null(gg_tensor_unsqueeze(x, 3));
    gt_assert_error(GG_ERR_INDEX, "gg_tensor_unsqueeze");
    cr_assert_null(gg_tensor_unsqueeze(x, -4));
    cr_assert_eq(gg_last_status(), GG_ERR_INDEX);
    gg_tensor *r8 = gg_tensor_zeros(GG_SHAPE(1, 1, 1, 1, 1, 1, 1, 1));
    gg_clear_error();
    cr_assert_null(gg_tensor_unsqueeze(r8, 0), "rank 9 result");
    cr_assert_lt(gg_last_status(), 0);
    gg_tensor *s = gg_tensor_scalar(1);
    gg_tensor *s1 = gg_tensor_unsqueeze(s, 0);
    gt_assert_shape(s1, 1);
    gg_tensor_free(s1);
    gg_tensor_free(s);
    gg_tensor_free(r8);
    gg_tensor_free(e);
    gg_tensor_free(d);
    gg_tensor_free(c);
    gg_tensor_free(b);
    gg_tensor_free(a);
    gg_tensor_free(x);
}

Test(view, flatten) {
    gg_tensor *x = GT_IOTA(2, 3, 4);
    gg_tensor *all = gg_tensor_flatten(x, 0, -1);
    gt_assert_shape(all, 24);
    cr_assert_eq(all->storage, x->storage);
    gg_tensor *inner = gg_tensor_flatten(x, 1, 2);
    gt_assert_shape(inner, 2, 12);
    gg_tensor *one = gg_tensor_flatten(x, 1, 1);
    gt_assert_shape(one, 2, 3, 4);
    gg_tensor *t = gg_tensor_transpose(x, 1, 2); /* [2,4,3] */
    gg_tensor *ft = gg_tensor_flatten(t, 1, 2);
    gt_assert_shape(ft, 2, 12);
    gt_assert_list(ft, 0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11, 12, 16, 20, 13, 17, 21, 14, 18, 22, 15, 19, 23);
    gg_tensor *ft0 = gg_tensor_flatten(t, 0, 0);
    gt_assert_shape(ft0, 2, 4, 3);
    gg_clear_error();
    cr_assert_null(gg_tensor_flatten(x, 2, 1), "start after end");
    cr_assert_lt(gg_last_status(), 0);
    cr_assert_null(gg_tensor_flatten(x, 0, 3));
    cr_assert_lt(gg_last_status(), 0);
    gg_tensor_free(ft0);
    gg_tensor_free(ft);
    gg_tensor_free(t);
    gg_tensor_free(one);
    gg_tensor_free(inner);
    gg_tensor_free(all);
    gg_tensor_free(x);
}

/* ---- contiguous ---- */

Test(view, contiguous_same_storage_when_contiguous) {
    gg_tensor *x = GT_IOTA(3, 4);
    gg_tensor *c = gg_tensor_contiguous(x);
    cr_assert_eq(c, x, "gg_tensor_contiguous must return t itself when contiguous");
    cr_assert_eq(c->storage, x->storage);
    cr_assert_eq(x->refcount, 2, "no new reference taken");
    gg_tensor_free(c);
    gg_tensor *rows = gg_tensor_slice(x, 0, 1, 3, 1); /* contiguous rows, offset 4 */
    gg_tensor *rc = gg_tensor_contiguous(rows);
    cr_assert_eq(rc->storage, x->storage);
    gg_tensor_free(rc);
    gg_tensor_free(rows);
    gg_tensor_free(x);
}

Test(view, contiguous_copies_otherwise) {
    gg_tensor *x = GT_IOTA(3, 4);
    gg_tensor *t = gg_tensor_transpose(x, 0, 1);
    gg_tensor *c = gg_tensor_contiguous(t);
    gt_assert_shape(c, 4, 3);
    cr_assert_neq(c->storage, x->storage);
    cr_assert(gg_tensor_is_contiguous(c));
    cr_assert_eq(c->stride[0], 3);
    cr_assert_eq(c->stride[1], 1);
    gt_assert_list(c, 0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11);
    gg_tensor *s = gg_tensor_slice(x, 1, 0, 4, 2);
    gg_tensor *sc = gg_tensor_contiguous(s);
    cr_assert_neq(sc->storage, x->storage);
    gt_assert_list(sc, 0, 2, 4, 6, 8, 10);
    gg_tensor_free(sc);
    gg_tensor_free(s);
    gg_tensor_free(c);
    gg_tensor_free(t);
    gg_tensor_free(x);
}

Test(view, is_contiguous_cases) {
    gg_tensor *x = GT_IOTA(4, 5);
    cr_assert(gg_tensor_is_contiguous(x));
    gg_tensor *t = gg_tensor_transpose(x, 0, 1);
    cr_assert_not(gg_tensor_is_contiguous(t));
    gg_tensor *rows = gg_tensor_slice(x, 0, 1, 3, 1);
    cr_assert(gg_tensor_is_contiguous(rows), "a block of whole rows is contiguous");
    gg_tensor *cols = gg_tensor_slice(x, 1, 1, 3, 1);
    cr_assert_not(gg_tensor_is_contiguous(cols));
    gg_tensor *step = gg_tensor_slice(x, 0, 0, 4, 2);
    cr_assert_not(gg_tensor_is_contiguous(step));
    gg_tensor *row = gg_tensor_select(x, 0, 2);
    cr_assert(gg_tensor_is_contiguous(row));
    gg_tensor *col = gg_tensor_select(x, 1, 2);
    cr_assert_not(gg_tensor_is_contiguous(col));
    /* The stride of a size-1 dim does not matter (as in NumPy/PyTorch). */
    gg_tensor *u = gg_tensor_unsqueeze(row, 0);
    cr_assert(gg_tensor_is_contiguous(u));
    gg_tensor *tc = gg_tensor_slice(t, 1, 2, 3, 1); /* [5,1] strides (1,5): row 2 of x as a column */
    cr_assert(gg_tensor_is_contiguous(tc), "[5,1] with strides (1,5) is contiguous: the size-1 stride is moot");
    gg_tensor *tct = gg_tensor_transpose(tc, 0, 1); /* [1,5] strides (5,1) */
    cr_assert(gg_tensor_is_contiguous(tct));
    gg_tensor_free(tct);
    gg_tensor_free(tc);
    gg_tensor_free(u);
    gg_tensor_free(col);
    gg_tensor_free(row);
    gg_tensor_free(step);
    gg_tensor_free(cols);
    gg_tensor_free(rows);
    gg_tensor_free(t);
    gg_tensor_free(x);
}

/* ---- may_overlap ---- */

Test(view, may_overlap) {
    gg_tensor *x = gg_tensor_arange(0, 10, 1);
    gg_tensor *lo = gg_tensor_slice(x, 0, 0, 5, 1);
    gg_tensor *hi = gg_tensor_slice(x, 0, 5, 10, 1);
    gg_tensor *mid = gg_tensor_slice(x, 0, 3, 7, 1);
    gg_tensor *y = gg_tensor_arange(0, 10, 1);
    cr_assert(gg_tensor_may_overlap(x, x));
    cr_assert(gg_tensor_may_overlap(x, lo));
    cr_assert(gg_tensor_may_overlap(lo, mid));
    cr_assert(gg_tensor_may_overlap(mid, hi));
    cr_assert_not(gg_tensor_may_overlap(lo, hi), "[0,5) and [5,10) share no element");
    cr_assert_not(gg_tensor_may_overlap(x, y), "different storages");
    gg_tensor *m = gg_tensor_view(x, GG_SHAPE(2, 5));
    gg_tensor *mt = gg_tensor_transpose(m, 0, 1);
    cr_assert(gg_tensor_may_overlap(m, mt));
    gg_tensor *e = gg_tensor_zeros(GG_SHAPE(0));
    cr_assert_not(gg_tensor_may_overlap(e, e), "an empty tensor has no elements to share");
    gg_tensor_free(e);
    gg_tensor_free(mt);
    gg_tensor_free(m);
    gg_tensor_free(y);
    gg_tensor_free(mid);
    gg_tensor_free(hi);
    gg_tensor_free(lo);
    gg_tensor_free(x);
}

/* ---- randomised chains of views against a dense-index model ----
 * The model holds, for the current view's shape, a dense row-major array of flat indices into the base
 * (whose element at flat index i has value i). Every op is applied to that array directly by gathering,
 * without strides, so it is an independent computation of what the view must contain. */

typedef struct model {
    int ndim;
    int64_t shape[GG_MAX_DIMS];
    int64_t *flat; /* numel entries */
} model;

static int64_t model_numel(const model *m) { return gt_numel(m->ndim, m->shape); }

/* Build new model of `ndim`/`shape` where new index j maps to old index src_of(j). */
typedef void (*src_index_fn)(const int64_t *j, int64_t *i, const void *ctx);

static void model_apply(model *m, int ndim, const int64_t *shape, src_index_fn fn, const void *ctx) {
    int64_t n = gt_numel(ndim, shape);
    int64_t *flat = malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
    int64_t ostride[GG_MAX_DIMS];
    gt_contig_strides(m->ndim, m->shape, ostride);
    if (n > 0) {
        int64_t j[GG_MAX_DIMS] = {0}, i[GG_MAX_DIMS];
        int64_t k = 0;
        do {
            fn(j, i, ctx);
            int64_t off = 0;
            for (int d = 0; d < m->ndim; d++) off += i[d] * ostride[d];
            flat[k++] = m->flat[off];
        } while (gt_next_index(ndim, shape, j));
    }
    free(m->flat);
    m->flat = flat;
    m->ndim = ndim;
    memcpy(m->shape, shape, sizeof(int64_t) * (size_t)ndim);
}

typedef struct op_ctx {
    int old_ndim;
    int64_t old_shape[GG_MAX_DIMS];
    int perm[GG_MAX_DIMS];
    int dim;
    int64_t start, step;
} op_ctx;

static void src_permute(const int64_t *j, int64_t *i, const void *c) {
    const op_ctx *o = c;
    for (int d = 0; d < o->old_ndim; d++) i[o->perm[d]] = j[d];
}
static void src_slice(const int64_t *j, int64_t *i, const void *c) {
    const op_ctx *o = c;
    for (int d = 0; d < o->old_ndim; d++) i[d] = j[d];
    i[o->dim] = o->start + j[o->dim] * o->step;
}
static void src_select(const int64_t *j, int64_t *i, const void *c) {
    const op_ctx *o = c;
    for (int d = 0, k = 0; d < o->old_ndim; d++) i[d] = d == o->dim ? o->start : j[k++];
}
static void src_unsqueeze(const int64_t *j, int64_t *i, const void *c) {
    const op_ctx *o = c;
    for (int d = 0, k = 0; k < o->old_ndim + 1; k++)
        if (k != o->dim) i[d++] = j[k];
}
static void src_expand(const int64_t *j, int64_t *i, const void *c) {
    const op_ctx *o = c; /* dim = number of new leading dims */
    for (int d = 0; d < o->old_ndim; d++) i[d] = o->old_shape[d] == 1 ? 0 : j[d + o->dim];
}
static void src_squeeze(const int64_t *j, int64_t *i, const void *c) {
    const op_ctx *o = c; /* dim = the squeezed dim (size 1) */
    for (int d = 0, k = 0; d < o->old_ndim; d++) i[d] = d == o->dim ? 0 : j[k++];
}
static int rand_dim(gt_lcg *g, int d, int ndim) { return (gt_lcg_u32(g) & 1) ? d - ndim : d; }

/* One random view op applied to both the tensor and the model. Returns the new tensor (owned). */
static gg_tensor *random_op(gt_lcg *g, gg_tensor *t, model *m, char *desc, size_t dsz, int *copied) {
    op_ctx o;
    memset(&o, 0, sizeof o);
    o.old_ndim = m->ndim;
    memcpy(o.old_shape, m->shape, sizeof m->shape);
    int64_t ns[GG_MAX_DIMS];
    int nd = m->ndim;
    for (;;) {
        switch (gt_lcg_u32(g) % 8) {
        case 0: { /* permute */
            if (nd < 1) continue;
            for (int d = 0; d < nd; d++) o.perm[d] = d;
            for (int d = nd - 1; d > 0; d--) {
                int k = (int)gt_lcg_range(g, 0, d);
                int tmp = o.perm[d];
                o.perm[d] = o.perm[k];
                o.perm[k] = tmp;
            }
            for (int d = 0; d < nd; d++) ns[d] = m->shape[o.perm[d]];
            snprintf(desc, dsz, "permute");
            gg_tensor *r = gg_tensor_permute(t, o.perm);
            model_apply(m, nd, ns, src_permute, &o);
            return r;
        }
        case 1: { /* transpose */
            if (nd < 1) continue;
            int a = (int)gt_lcg_range(g, 0, nd - 1), b = (int)gt_lcg_range(g, 0, nd - 1);
            for (int d = 0; d < nd; d++) o.perm[d] = d;
            o.perm[a] = b;
            o.perm[b] = a;
            for (int d = 0; d < nd; d++) ns[d] = m->shape[o.perm[d]];
            snprintf(desc, dsz, "transpose(%d,%d)", a, b);
            gg_tensor *r = gg_tensor_transpose(t, rand_dim(g, a, nd), rand_dim(g, b, nd));
            model_apply(m, nd, ns, src_permute, &o);
            return r;
        }
        case 2: { /* slice */
            if (nd < 1) continue;
            int d = (int)gt_lcg_range(g, 0, nd - 1);
            int64_t size = m->shape[d];
            if (size < 1) continue;
            int64_t start = gt_lcg_range(g, 0, size - 1);
            int64_t stop = gt_lcg_range(g, start + 1, size);
            int64_t step = gt_lcg_range(g, 1, 3);
            o.dim = d;
            o.start = start;
            o.step = step;
            memcpy(ns, m->shape, sizeof ns);
            ns[d] = (stop - start + step - 1) / step;
            int64_t s_arg = (gt_lcg_u32(g) & 1) ? start - size : start;
            int64_t e_arg = (stop < size && (gt_lcg_u32(g) & 1)) ? stop - size : stop;
            snprintf(desc, dsz, "slice(%d,%lld,%lld,%lld)", d, (long long)s_arg, (long long)e_arg,
                     (long long)step);
            gg_tensor *r = gg_tensor_slice(t, rand_dim(g, d, nd), s_arg, e_arg, step);
            model_apply(m, nd, ns, src_slice, &o);
            return r;
        }
        case 3: { /* select */
            if (nd < 2) continue;
            int d = (int)gt_lcg_range(g, 0, nd - 1);
            o.dim = d;
            o.start = gt_lcg_range(g, 0, m->shape[d] - 1);
            for (int k = 0, q = 0; k < nd; k++)
                if (k != d) ns[q++] = m->shape[k];
            snprintf(desc, dsz, "select(%d,%lld)", d, (long long)o.start);
            gg_tensor *r = gg_tensor_select(t, rand_dim(g, d, nd), o.start);
            model_apply(m, nd - 1, ns, src_select, &o);
            return r;
        }
        case 4: { /* unsqueeze */
            if (nd >= GG_MAX_DIMS) continue;
            int d = (int)gt_lcg_range(g, 0, nd);
            o.dim = d;
            for (int k = 0, q = 0; k < nd + 1; k++) ns[k] = k == d ? 1 : m->shape[q++];
            snprintf(desc, dsz, "unsqueeze(%d)", d);
            gg_tensor *r = gg_tensor_unsqueeze(t, (gt_lcg_u32(g) & 1) ? d - (nd + 1) : d);
            model_apply(m, nd + 1, ns, src_unsqueeze, &o);
            return r;
        }
        case 5: { /* expand: size-1 dims grow, maybe a new leading dim */
            int lead = (nd < GG_MAX_DIMS && (gt_lcg_u32(g) % 3) == 0) ? 1 : 0;
            o.dim = lead;
            int64_t arg[GG_MAX_DIMS];
            if (lead) ns[0] = arg[0] = gt_lcg_range(g, 1, 3);
            for (int d = 0; d < nd; d++) {
                if (m->shape[d] == 1) ns[d + lead] = gt_lcg_range(g, 1, 3);
                else ns[d + lead] = m->shape[d];
                arg[d + lead] = (ns[d + lead] == m->shape[d] && (gt_lcg_u32(g) & 1)) ? -1 : ns[d + lead];
            }
            snprintf(desc, dsz, "expand(lead %d)", lead);
            gg_tensor *r = gg_tensor_expand(t, nd + lead, arg);
            model_apply(m, nd + lead, ns, src_expand, &o);
            return r;
        }
        case 6: { /* squeeze one size-1 dim */
            int d = -1;
            for (int k = 0; k < nd; k++)
                if (m->shape[k] == 1) d = k;
            if (d < 0) continue;
            o.dim = d;
            for (int k = 0, q = 0; k < nd; k++)
                if (k != d) ns[q++] = m->shape[k];
            snprintf(desc, dsz, "squeeze(%d)", d);
            gg_tensor *r = gg_tensor_squeeze(t, rand_dim(g, d, nd));
            model_apply(m, nd - 1, ns, src_squeeze, &o);
            return r;
        }
        case 7: { /* reshape / flatten: row-major order unchanged, so the flat array is kept as is */
            if (nd < 1) continue;
            int a = (int)gt_lcg_range(g, 0, nd - 1), b = (int)gt_lcg_range(g, a, nd - 1);
            int64_t merged = 1;
            for (int k = a; k <= b; k++) merged *= m->shape[k];
            int q = 0;
            for (int k = 0; k < a; k++) ns[q++] = m->shape[k];
            ns[q++] = merged;
            for (int k = b + 1; k < nd; k++) ns[q++] = m->shape[k];
            gg_tensor *r;
            if (gt_lcg_u32(g) & 1) {
                snprintf(desc, dsz, "flatten(%d,%d)", a, b);
                r = gg_tensor_flatten(t, rand_dim(g, a, nd), rand_dim(g, b, nd));
            } else {
                int64_t arg[GG_MAX_DIMS];
                memcpy(arg, ns, sizeof arg);
                arg[a] = -1;
                snprintf(desc, dsz, "reshape(merge %d..%d)", a, b);
                r = gg_tensor_reshape(t, q, arg);
            }
            if (r && r->storage != t->storage) *copied = 1;
            m->ndim = q;
            memcpy(m->shape, ns, sizeof ns);
            return r;
        }
        }
    }
}

static void check_against_model(const gg_tensor *v, const model *m, const char *chain) {
    cr_assert_not_null(v, "chain %s failed: %s", chain, gg_last_error());
    cr_assert_eq(v->ndim, m->ndim, "chain %s: ndim %d, model %d", chain, v->ndim, m->ndim);
    for (int d = 0; d < m->ndim; d++)
        cr_assert_eq(v->shape[d], m->shape[d], "chain %s: shape[%d] %lld, model %lld", chain, d,
                     (long long)v->shape[d], (long long)m->shape[d]);
    int64_t n = model_numel(m);
    cr_assert_eq(v->numel, n, "chain %s: numel", chain);
    if (n == 0) return;
    int64_t idx[GG_MAX_DIMS] = {0};
    int64_t k = 0;
    do {
        float x = NAN;
        cr_assert_eq(gg_tensor_get(v, idx, &x), GG_OK, "chain %s: get: %s", chain, gg_last_error());
        cr_assert_eq(x, (float)m->flat[k], "chain %s: element %lld is %g, model %lld", chain, (long long)k,
                     (double)x, (long long)m->flat[k]);
        k++;
    } while (gt_next_index(m->ndim, m->shape, idx));
    gg_tensor *c = gg_tensor_contiguous(v);
    cr_assert_not_null(c, "chain %s: contiguous: %s", chain, gg_last_error());
    cr_assert(gg_tensor_is_contiguous(c));
    float *buf = malloc(sizeof(float) * (size_t)n);
    float *buf2 = malloc(sizeof(float) * (size_t)n);
    cr_assert_eq(gg_tensor_to_buffer(c, buf, n), GG_OK);
    cr_assert_eq(gg_tensor_to_buffer(v, buf2, n), GG_OK);
    const float *cdata = gg_tensor_data(c);
    for (int64_t i = 0; i < n; i++) {
        cr_assert_eq(buf[i], (float)m->flat[i], "chain %s: contiguous element %lld", chain, (long long)i);
        cr_assert_eq(cdata[i], (float)m->flat[i], "chain %s: contiguous raw element %lld", chain, (long long)i);
        cr_assert_eq(buf2[i], (float)m->flat[i], "chain %s: to_buffer element %lld", chain, (long long)i);
    }
    free(buf);
    free(buf2);
    gg_tensor_free(c);
}

ParameterizedTestParameters(view, random_chains) {
    static uint64_t seeds[40];
    for (int i = 0; i < 40; i++) seeds[i] = (uint64_t)i * 7919u + 1;
    return cr_make_param_array(uint64_t, seeds, 40);
}

ParameterizedTest(uint64_t *seed, view, random_chains) {
    gt_lcg g;
    gt_lcg_seed(&g, *seed);
    for (int trial = 0; trial < 8; trial++) {
        int nd = (int)gt_lcg_range(&g, 1, 5);
        int64_t shape[GG_MAX_DIMS];
        for (int d = 0; d < nd; d++) shape[d] = gt_lcg_range(&g, 1, 5);
        gg_tensor *base = gt_iota(nd, shape);
        model m = {.ndim = nd};
        memcpy(m.shape, shape, sizeof shape);
        int64_t n = gt_numel(nd, shape);
        m.flat = malloc(sizeof(int64_t) * (size_t)n);
        for (int64_t i = 0; i < n; i++) m.flat[i] = i;

        gg_tensor *chain_t[8] = {base};
        int len = (int)gt_lcg_range(&g, 1, 6), copied = 0;
        char chain[512] = "";
        size_t pos = (size_t)snprintf(chain, sizeof chain, "seed %llu trial %d base", (unsigned long long)*seed,
                                      trial);
        for (int d = 0; d < nd; d++) pos += (size_t)snprintf(chain + pos, sizeof chain - pos, "%s%lld",
                                                             d ? "x" : " ", (long long)shape[d]);
        for (int s = 1; s <= len; s++) {
            char desc[64];
            chain_t[s] = random_op(&g, chain_t[s - 1], &m, desc, sizeof desc, &copied);
            if (pos < sizeof chain) pos += (size_t)snprintf(chain + pos, sizeof chain - pos, " -> %s", desc);
            check_against_model(chain_t[s], &m, chain);
            if (!copied)
                cr_assert_eq(chain_t[s]->storage, base->storage, "chain %s: a view op copied", chain);
            for (int d = 0; d < chain_t[s]->ndim; d++)
                if (chain_t[s]->shape[d] > 1 && !copied) {
                    /* every stride must stay inside the base storage */
                    cr_assert_leq(chain_t[s]->offset + (chain_t[s]->shape[d] - 1) * chain_t[s]->stride[d],
                                  base->storage->numel - 1, "chain %s: stride walks off the storage", chain);
                }
        }
        for (int s = len; s >= 0; s--) gg_tensor_free(chain_t[s]);
        free(m.flat);
    }
}
