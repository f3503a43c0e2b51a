/* Tests of tensor construction, element access, copies, the version counter and reference counting
 * (gg_tensor.h, construction/copies/access sections). */
#include <criterion/criterion.h>
#include <float.h>

#include "groupgrad.h"
#include "gg_test_util.h"

/* ---- constructors ---- */

Test(tensor, zeros_shape_strides_values) {
    gg_tensor *t = gg_tensor_zeros(GG_SHAPE(2, 3, 4));
    gt_assert_shape(t, 2, 3, 4);
    cr_assert_eq(t->stride[0], 12);
    cr_assert_eq(t->stride[1], 4);
    cr_assert_eq(t->stride[2], 1);
    cr_assert_eq(t->offset, 0);
    cr_assert_eq(t->refcount, 1);
    cr_assert_eq(t->storage->refcount, 1);
    cr_assert_geq(t->storage->numel, 24);
    cr_assert(t->storage->owns_data);
    cr_assert(gg_tensor_is_contiguous(t));
    gt_assert_all(t, 0.0f);
    cr_assert_eq((uintptr_t)gg_tensor_data(t) % GG_ALIGN, 0, "fresh tensor data not 64-byte aligned");
    gg_tensor_free(t);
}

Test(tensor, ones_and_full) {
    gg_tensor *o = gg_tensor_ones(GG_SHAPE(3, 5));
    gt_assert_shape(o, 3, 5);
    gt_assert_all(o, 1.0f);
    gg_tensor *f = gg_tensor_full(GG_SHAPE(2, 1, 2), -3.25f);
    gt_assert_shape(f, 2, 1, 2);
    gt_assert_all(f, -3.25f);
    gg_tensor *inf = gg_tensor_full(GG_SHAPE(2), INFINITY);
    gt_assert_all(inf, INFINITY);
    gg_tensor_free(o);
    gg_tensor_free(f);
    gg_tensor_free(inf);
}

Test(tensor, empty_has_shape) {
    gg_tensor *t = gg_tensor_empty(GG_SHAPE(7, 9));
    gt_assert_shape(t, 7, 9);
    cr_assert(gg_tensor_is_contiguous(t));
    cr_assert_eq(gg_tensor_fill(t, 2.0f), GG_OK);
    gt_assert_all(t, 2.0f);
    gg_tensor_free(t);
}

Test(tensor, scalar_is_rank0) {
    gg_tensor *s = gg_tensor_scalar(2.5f);
    cr_assert_not_null(s);
    cr_assert_eq(s->ndim, 0);
    cr_assert_eq(s->numel, 1);
    float v = 0;
    cr_assert_eq(gg_tensor_item(s, &v), GG_OK);
    cr_assert_eq(v, 2.5f);
    cr_assert_eq(gg_tensor_get(s, (int64_t[]){0}, &v), GG_OK, "get with no index on a rank-0 tensor: %s", gg_last_error());
    cr_assert_eq(v, 2.5f);
    cr_assert(gg_tensor_is_contiguous(s));
    gg_tensor *z = gg_tensor_zeros(0, NULL);
    cr_assert_not_null(z);
    cr_assert_eq(z->numel, 1);
    cr_assert_eq(gg_tensor_item(z, &v), GG_OK);
    cr_assert_eq(v, 0.0f);
    gg_tensor_free(s);
    gg_tensor_free(z);
}

Test(tensor, arange_integer) {
    gg_tensor *t = gg_tensor_arange(0, 5, 1);
    gt_assert_shape(t, 5);
    gt_assert_list(t, 0, 1, 2, 3, 4);
    gg_tensor_free(t);
    t = gg_tensor_arange(2, 11, 3);
    gt_assert_shape(t, 3);
    gt_assert_list(t, 2, 5, 8);
    gg_tensor_free(t);
    t = gg_tensor_arange(0, 2.5, 1); /* ceil(2.5) = 3 */
    gt_assert_shape(t, 3);
    gt_assert_list(t, 0, 1, 2);
    gg_tensor_free(t);
}

Test(tensor, arange_fractional_step) {
    gg_tensor *t = gg_tensor_arange(0, 1, 0.1);
    gt_assert_shape(t, 10);
    for (int64_t i = 0; i < 10; i++) {
        float v;
        cr_assert_eq(gg_tensor_get(t, &i, &v), GG_OK);
        cr_assert_float_eq(v, 0.1 * (double)i, 1e-6, "element %lld is %g", (long long)i, (double)v);
    }
    gg_tensor_free(t);
    t = gg_tensor_arange(-1, 1, 0.25);
    gt_assert_shape(t, 8);
    gt_assert_list(t, -1, -0.75f, -0.5f, -0.25f, 0, 0.25f, 0.5f, 0.75f);
    gg_tensor_free(t);
}

Test(tensor, arange_negative_step) {
    gg_tensor *t = gg_tensor_arange(5, 0, -1);
    gt_assert_shape(t, 5);
    gt_assert_list(t, 5, 4, 3, 2, 1);
    gg_tensor_free(t);
    t = gg_tensor_arange(1, -1, -0.5);
    gt_assert_shape(t, 4);
    gt_assert_list(t, 1, 0.5f, 0, -0.5f);
    gg_tensor_free(t);
}

Test(tensor, arange_empty_ranges) {
    gg_tensor *t = gg_tensor_arange(5, 5, 1);
    gt_assert_shape(t, 0);
    gg_tensor_free(t);
    t = gg_tensor_arange(-2, -2, -0.5);
    gt_assert_shape(t, 0);
    gg_tensor_free(t);
    /* A step pointing away from stop: torch.arange raises; an empty tensor is also acceptable. Either way
     * the element count must not come out negative or wrap around. */
    gg_clear_error();
    t = gg_tensor_arange(5, 0, 1);
    if (t) {
        gt_assert_shape(t, 0);
        gg_tensor_free(t);
    } else {
        cr_assert_lt(gg_last_status(), 0);
        gt_assert_msg_has("gg_tensor_arange");
    }
}

Test(tensor, arange_step_zero_is_error) {
    cr_assert_null(gg_tensor_arange(0, 5, 0));
    gt_assert_error(GG_ERR_ARG, "gg_tensor_arange");
    gg_clear_error();
    cr_assert_null(gg_tensor_arange(0, NAN, 1));
    cr_assert_lt(gg_last_status(), 0, "arange to NaN gave no error");
}

Test(tensor, from_data_copies) {
    float src[6] = {1, 2, 3, 4, 5, 6};
    gg_tensor *t = gg_tensor_from_data(GG_SHAPE(2, 3), src);
    gt_assert_shape(t, 2, 3);
    cr_assert(t->storage->owns_data);
    cr_assert_neq(gg_tensor_data(t), src);
    src[0] = 100;
    src[5] = -100;
    gt_assert_list(t, 1, 2, 3, 4, 5, 6);
    cr_assert_eq(gg_tensor_set(t, (int64_t[]){1, 1}, 50), GG_OK);
    cr_assert_eq(src[4], 5, "writing the tensor changed the source array");
    gg_tensor_free(t);
}

Test(tensor, from_buffer_wraps) {
    float buf[6] = {1, 2, 3, 4, 5, 6};
    gg_tensor *t = gg_tensor_from_buffer(GG_SHAPE(3, 2), buf);
    gt_assert_shape(t, 3, 2);
    cr_assert_not(t->storage->owns_data);
    cr_assert_eq(gg_tensor_data(t), buf);
    buf[3] = 40;
    gt_assert_list(t, 1, 2, 3, 40, 5, 6);
    cr_assert_eq(gg_tensor_set(t, (int64_t[]){2, 0}, -5), GG_OK);
    cr_assert_eq(buf[4], -5);
    cr_assert_eq(gg_tensor_fill(t, 9), GG_OK);
    for (int i = 0; i < 6; i++) cr_assert_eq(buf[i], 9);
    gg_tensor *v = gg_tensor_transpose(t, 0, 1);
    gg_tensor_free(t);
    gg_tensor_free(v); /* must not free the stack buffer */
    cr_assert_eq(buf[0], 9);
}

Test(tensor, empty_like_and_zeros_like) {
    gg_tensor *base = GT_IOTA(3, 4);
    gg_tensor *t = gg_tensor_transpose(base, 0, 1);
    gg_tensor *e = gg_tensor_empty_like(t);
    gt_assert_shape(e, 4, 3);
    cr_assert(gg_tensor_is_contiguous(e));
    cr_assert_neq(e->storage, base->storage);
    gg_tensor *z = gg_tensor_zeros_like(t);
    gt_assert_shape(z, 4, 3);
    cr_assert(gg_tensor_is_contiguous(z));
    gt_assert_all(z, 0.0f);
    gt_assert_list(base, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11);
    gg_tensor_free(e);
    gg_tensor_free(z);
    gg_tensor_free(t);
    gg_tensor_free(base);
}

/* ---- access ---- */

Test(tensor, get_set_item_and_bounds) {
    gg_tensor *t = gg_tensor_zeros(GG_SHAPE(2, 3));
    cr_assert_eq(gg_tensor_set(t, (int64_t[]){1, 2}, 7.5f), GG_OK);
    float v = 0;
    cr_assert_eq(gg_tensor_get(t, (int64_t[]){1, 2}, &v), GG_OK);
    cr_assert_eq(v, 7.5f);
    gt_assert_list(t, 0, 0, 0, 0, 0, 7.5f);

    gg_clear_error();
    v = 123;
    cr_assert_eq(gg_tensor_get(t, (int64_t[]){2, 0}, &v), GG_ERR_INDEX);
    gt_assert_msg_has("gg_tensor_get");
    cr_assert_eq(v, 123, "failed get wrote its output");
    cr_assert_eq(gg_tensor_get(t, (int64_t[]){0, 3}, &v), GG_ERR_INDEX);
    cr_assert_eq(gg_tensor_set(t, (int64_t[]){0, 3}, 1), GG_ERR_INDEX);
    gt_assert_msg_has("gg_tensor_set");
    cr_assert_eq(gg_tensor_set(t, (int64_t[]){5, 0}, 1), GG_ERR_INDEX);
    gt_assert_list(t, 0, 0, 0, 0, 0, 7.5f);

    cr_assert_lt(gg_tensor_item(t, &v), 0, "item of a 6-element tensor succeeded");
    gt_assert_msg_has("gg_tensor_item");
    gg_tensor *one = gg_tensor_full(GG_SHAPE(1, 1, 1), 4);
    cr_assert_eq(gg_tensor_item(one, &v), GG_OK);
    cr_assert_eq(v, 4);
    gg_tensor *empty = gg_tensor_zeros(GG_SHAPE(0));
    cr_assert_lt(gg_tensor_item(empty, &v), 0);
    gg_tensor_free(empty);
    gg_tensor_free(one);
    gg_tensor_free(t);
}

Test(tensor, size_and_same_shape) {
    gg_tensor *a = gg_tensor_zeros(GG_SHAPE(2, 3, 4));
    cr_assert_eq(gg_tensor_size(a, 0), 2);
    cr_assert_eq(gg_tensor_size(a, 2), 4);
    cr_assert_eq(gg_tensor_size(a, -1), 4);
    cr_assert_eq(gg_tensor_size(a, -3), 2);
    gg_clear_error();
    cr_assert_eq(gg_tensor_size(a, 3), -1);
    cr_assert_eq(gg_last_status(), GG_ERR_INDEX);
    cr_assert_eq(gg_tensor_size(a, -4), -1);
    gg_tensor *b = gg_tensor_ones(GG_SHAPE(2, 3, 4));
    gg_tensor *c = gg_tensor_ones(GG_SHAPE(2, 4, 3));
    gg_tensor *d = gg_tensor_ones(GG_SHAPE(2, 3));
    cr_assert(gg_tensor_same_shape(a, b));
    cr_assert_not(gg_tensor_same_shape(a, c));
    cr_assert_not(gg_tensor_same_shape(a, d));
    gg_tensor_free(a);
    gg_tensor_free(b);
    gg_tensor_free(c);
    gg_tensor_free(d);
}

Test(tensor, data_pointer_of_view) {
    gg_tensor *x = GT_IOTA(4, 5);
    gg_tensor *s = gg_tensor_slice(x, 0, 2, 4, 1);
    gg_tensor *c = gg_tensor_select(s, 1, 3);
    cr_assert_eq(gg_tensor_data(c), x->storage->data + c->offset);
    cr_assert_eq(*gg_tensor_data(c), 13.0f);
    int64_t idx[GG_MAX_DIMS] = {1};
    cr_assert_eq(x->storage->data[gg_tensor_offset_of(c, idx)], 18.0f);
    gg_tensor_free(c);
    gg_tensor_free(s);
    gg_tensor_free(x);
}

/* ---- shape limits ---- */

Test(tensor, rank8_allowed_rank9_rejected) {
    gg_tensor *t = gg_tensor_ones(GG_SHAPE(1, 2, 1, 2, 1, 2, 1, 2));
    gt_assert_shape(t, 1, 2, 1, 2, 1, 2, 1, 2);
    gt_assert_all(t, 1.0f);
    gg_tensor_free(t);
    gg_clear_error();
    cr_assert_null(gg_tensor_zeros(GG_SHAPE(1, 1, 1, 1, 1, 1, 1, 1, 1)));
    cr_assert_lt(gg_last_status(), 0);
    gt_assert_msg_has("gg_tensor_zeros");
    gg_clear_error();
    cr_assert_null(gg_tensor_empty(-1, (const int64_t[]){1}));
    cr_assert_lt(gg_last_status(), 0);
}

Test(tensor, negative_size_rejected) {
    cr_assert_null(gg_tensor_zeros(GG_SHAPE(2, -3)));
    gt_assert_error(GG_ERR_ARG, "gg_tensor_zeros");
    gt_assert_msg_has("[2,-3]");
    cr_assert_null(gg_tensor_from_data(GG_SHAPE(-1), (const float[]){1}));
    cr_assert_lt(gg_last_status(), 0);
}

Test(tensor, overflowing_sizes_rejected) {
    const int64_t big = (int64_t)1 << 40;
    size_t live = gg_alloc_live_bytes();
    cr_assert_null(gg_tensor_zeros(GG_SHAPE(big, big)));
    gt_assert_error(GG_ERR_OVERFLOW, "gg_tensor_zeros");
    /* 2^62 elements fit in int64 but 2^64 bytes do not fit in size_t (a wrapped size would be 0). */
    gg_clear_error();
    const int64_t b31 = (int64_t)1 << 31;
    cr_assert_null(gg_tensor_empty(GG_SHAPE(b31, b31)));
    cr_assert(gg_last_status() == GG_ERR_OVERFLOW || gg_last_status() == GG_ERR_NOMEM, "status %d: %s",
              gg_last_status(), gg_last_error());
    cr_assert_eq(gg_alloc_live_bytes(), live);
}

Test(tensor, zero_size_tensors) {
    gg_tensor *t = gg_tensor_zeros(GG_SHAPE(3, 0, 2));
    gt_assert_shape(t, 3, 0, 2);
    cr_assert_eq(t->numel, 0);
    cr_assert_eq(gg_tensor_fill(t, 1), GG_OK);
    gg_tensor *c = gg_tensor_copy(t);
    gt_assert_shape(c, 3, 0, 2);
    gg_tensor *tr = gg_tensor_transpose(t, 0, 2);
    gt_assert_shape(tr, 2, 0, 3);
    gg_tensor *cc = gg_tensor_contiguous(tr);
    gt_assert_shape(cc, 2, 0, 3);
    float sentinel = 42;
    cr_assert_eq(gg_tensor_to_buffer(t, &sentinel, 0), GG_OK);
    cr_assert_eq(sentinel, 42);
    cr_assert_eq(gg_tensor_copy_into(t, c), GG_OK);
    float v;
    cr_assert_lt(gg_tensor_get(t, (int64_t[]){0, 0, 0}, &v), 0);
    gg_tensor *e = gg_tensor_zeros_like(t);
    gt_assert_shape(e, 3, 0, 2);
    gg_tensor_free(e);
    gg_tensor_free(cc);
    gg_tensor_free(tr);
    gg_tensor_free(c);
    gg_tensor_free(t);
}

/* ---- copies ---- */

Test(tensor, copy_is_deep) {
    gg_tensor *x = GT_IOTA(2, 3);
    gg_tensor *t = gg_tensor_transpose(x, 0, 1);
    gg_tensor *c = gg_tensor_copy(t);
    gt_assert_shape(c, 3, 2);
    cr_assert(gg_tensor_is_contiguous(c));
    cr_assert_neq(c->storage, x->storage);
    gt_assert_list(c, 0, 3, 1, 4, 2, 5);
    cr_assert_eq(gg_tensor_fill(c, -1), GG_OK);
    gt_assert_list(x, 0, 1, 2, 3, 4, 5);
    /* A contiguous tensor is copied too (unlike gg_tensor_contiguous). */
    gg_tensor *c2 = gg_tensor_copy(x);
    cr_assert_neq(c2, x);
    cr_assert_neq(c2->storage, x->storage);
    gt_assert_list(c2, 0, 1, 2, 3, 4, 5);
    gg_tensor_free(c2);
    gg_tensor_free(c);
    gg_tensor_free(t);
    gg_tensor_free(x);
}

Test(tensor, copy_into_same_shape_and_strided_dst) {
    gg_tensor *dst = gg_tensor_zeros(GG_SHAPE(3, 2));
    gg_tensor *src = GT_IOTA(2, 3);
    gg_tensor *srct = gg_tensor_transpose(src, 0, 1);
    cr_assert_eq(gg_tensor_copy_into(dst, srct), GG_OK);
    gt_assert_list(dst, 0, 3, 1, 4, 2, 5);
    /* Non-contiguous destination: column 1 of a [3,3] tensor. */
    gg_tensor *m = gg_tensor_zeros(GG_SHAPE(3, 3));
    gg_tensor *col = gg_tensor_select(m, 1, 1);
    gg_tensor *r = gg_tensor_arange(1, 4, 1);
    cr_assert_eq(gg_tensor_copy_into(col, r), GG_OK);
    gt_assert_list(m, 0, 1, 0, 0, 2, 0, 0, 3, 0);
    gg_tensor_free(r);
    gg_tensor_free(col);
    gg_tensor_free(m);
    gg_tensor_free(srct);
    gg_tensor_free(src);
    gg_tensor_free(dst);
}

Test(tensor, copy_into_broadcasts) {
    gg_tensor *dst = gg_tensor_zeros(GG_SHAPE(2, 3));
    gg_tensor *row = gg_tensor_arange(1, 4, 1);
    cr_assert_eq(gg_tensor_copy_into(dst, row), GG_OK);
    gt_assert_list(dst, 1, 2, 3, 1, 2, 3);
    gg_tensor *colv = gg_tensor_from_data(GG_SHAPE(2, 1), (const float[]){7, 8});
    cr_assert_eq(gg_tensor_copy_into(dst, colv), GG_OK);
    gt_assert_list(dst, 7, 7, 7, 8, 8, 8);
    gg_tensor *s = gg_tensor_scalar(-2);
    cr_assert_eq(gg_tensor_copy_into(dst, s), GG_OK);
    gt_assert_all(dst, -2);
    /* A source of higher rank (even with leading 1s) broadcasts to dst's shape only if gg_tensor_expand
     * could expand it there, and NumPy's broadcast_to cannot drop dimensions: copy_into must agree. */
    gg_tensor *lead = gg_tensor_from_data(GG_SHAPE(1, 1, 3), (const float[]){4, 5, 6});
    gg_tensor *ex = gg_tensor_expand(lead, GG_SHAPE(2, 3));
    int st = gg_tensor_copy_into(dst, lead);
    cr_assert_eq(st == GG_OK, ex != NULL, "copy_into (%d) and expand (%p) disagree on [1,1,3] -> [2,3]", st,
                 (void *)ex);
    gg_tensor_free(ex);
    gg_tensor_free(lead);
    gg_tensor_free(s);
    gg_tensor_free(colv);
    gg_tensor_free(row);
    gg_tensor_free(dst);
}

Test(tensor, copy_into_shape_errors) {
    gg_tensor *dst = gg_tensor_full(GG_SHAPE(2, 3), 1);
    gg_tensor *a = gg_tensor_ones(GG_SHAPE(2));
    gg_tensor *b = gg_tensor_ones(GG_SHAPE(4, 2, 3));
    gg_tensor *c = gg_tensor_ones(GG_SHAPE(2, 6));
    cr_assert_eq(gg_tensor_copy_into(dst, a), GG_ERR_SHAPE);
    gt_assert_msg_has("[2,3]");
    gt_assert_msg_has("[2]");
    cr_assert_eq(gg_tensor_copy_into(dst, b), GG_ERR_SHAPE, "src [4,2,3] cannot broadcast to dst [2,3]");
    cr_assert_eq(gg_tensor_copy_into(dst, c), GG_ERR_SHAPE);
    gt_assert_all(dst, 1);
    gg_tensor_free(a);
    gg_tensor_free(b);
    gg_tensor_free(c);
    gg_tensor_free(dst);
}

Test(tensor, copy_into_overlapping_shift_right) {
    gg_tensor *x = gg_tensor_arange(0, 10, 1);
    gg_tensor *a = gg_tensor_slice(x, 0, 0, 9, 1);
    gg_tensor *b = gg_tensor_slice(x, 0, 1, 10, 1);
    cr_assert_eq(gg_tensor_copy_into(b, a), GG_OK);
    gt_assert_list(x, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8);
    gg_tensor_free(a);
    gg_tensor_free(b);
    gg_tensor_free(x);
}

Test(tensor, copy_into_overlapping_shift_left) {
    gg_tensor *x = gg_tensor_arange(0, 10, 1);
    gg_tensor *a = gg_tensor_slice(x, 0, 0, 9, 1);
    gg_tensor *b = gg_tensor_slice(x, 0, 1, 10, 1);
    cr_assert_eq(gg_tensor_copy_into(a, b), GG_OK);
    gt_assert_list(x, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9);
    gg_tensor_free(a);
    gg_tensor_free(b);
    gg_tensor_free(x);
}

Test(tensor, copy_into_overlapping_strided_shift) {
    /* dst = x[2:20:2], src = x[0:18:2]: an element-wise forward loop would read values it already wrote. */
    gg_tensor *x = gg_tensor_arange(0, 20, 1);
    gg_tensor *dst = gg_tensor_slice(x, 0, 2, 20, 2);
    gg_tensor *src = gg_tensor_slice(x, 0, 0, 18, 2);
    cr_assert_eq(gg_tensor_copy_into(dst, src), GG_OK);
    gt_assert_list(x, 0, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14, 17, 16, 19);
    gg_tensor_free(src);
    gg_tensor_free(dst);
    gg_tensor_free(x);
}

Test(tensor, copy_into_own_transpose) {
    gg_tensor *m = GT_IOTA(3, 3);
    gg_tensor *t = gg_tensor_transpose(m, 0, 1);
    cr_assert_eq(gg_tensor_copy_into(m, t), GG_OK);
    gt_assert_list(m, 0, 3, 6, 1, 4, 7, 2, 5, 8);
    gg_tensor_free(t);
    gg_tensor_free(m);
}

Test(tensor, copy_into_broadcast_from_overlapping_row) {
    /* dst is the whole [3,3] matrix, src its own row 1 broadcast over rows: src must be read first. */
    gg_tensor *m = GT_IOTA(3, 3);
    gg_tensor *row = gg_tensor_select(m, 0, 1);
    cr_assert_eq(gg_tensor_copy_into(m, row), GG_OK);
    gt_assert_list(m, 3, 4, 5, 3, 4, 5, 3, 4, 5);
    gg_tensor_free(row);
    gg_tensor_free(m);
}

Test(tensor, copy_into_expanded_dst_is_error) {
    gg_tensor *base = gg_tensor_from_data(GG_SHAPE(1, 3), (const float[]){1, 2, 3});
    gg_tensor *dst = gg_tensor_expand(base, GG_SHAPE(2, 3));
    cr_assert_not_null(dst);
    cr_assert_eq(dst->stride[0], 0);
    gg_tensor *src = GT_IOTA(2, 3);
    uint64_t v0 = base->storage->version;
    int st = gg_tensor_copy_into(dst, src);
    cr_assert_lt(st, 0, "copy into a stride-0 destination succeeded");
    gt_assert_msg_has("gg_tensor_copy_into");
    gt_assert_list(base, 1, 2, 3);
    cr_assert_eq(base->storage->version, v0);
    gg_tensor_free(src);
    gg_tensor_free(dst);
    gg_tensor_free(base);
}

Test(tensor, fill_strided_view) {
    gg_tensor *x = gg_tensor_zeros(GG_SHAPE(10));
    gg_tensor *s = gg_tensor_slice(x, 0, 1, 10, 3);
    cr_assert_eq(gg_tensor_fill(s, 7), GG_OK);
    gt_assert_list(x, 0, 7, 0, 0, 7, 0, 0, 7, 0, 0);
    gg_tensor *m = gg_tensor_zeros(GG_SHAPE(3, 4));
    gg_tensor *mt = gg_tensor_transpose(m, 0, 1);
    gg_tensor *sub = gg_tensor_slice(mt, 0, 1, 3, 1); /* columns 1..2 of m */
    cr_assert_eq(gg_tensor_fill(sub, 2), GG_OK);
    gt_assert_list(m, 0, 2, 2, 0, 0, 2, 2, 0, 0, 2, 2, 0);
    gg_tensor_free(sub);
    gg_tensor_free(mt);
    gg_tensor_free(m);
    gg_tensor_free(s);
    gg_tensor_free(x);
}

Test(tensor, to_buffer_order_and_capacity) {
    gg_tensor *x = GT_IOTA(2, 3);
    gg_tensor *t = gg_tensor_transpose(x, 0, 1);
    float out[8];
    for (int i = 0; i < 8; i++) out[i] = -1;
    cr_assert_eq(gg_tensor_to_buffer(t, out, 6), GG_OK);
    const float want[8] = {0, 3, 1, 4, 2, 5, -1, -1};
    for (int i = 0; i < 8; i++) cr_assert_eq(out[i], want[i], "out[%d] = %g", i, (double)out[i]);
    for (int i = 0; i < 8; i++) out[i] = -1;
    cr_assert_lt(gg_tensor_to_buffer(t, out, 5), 0, "capacity 5 for 6 elements accepted");
    gt_assert_msg_has("gg_tensor_to_buffer");
    for (int i = 0; i < 8; i++) cr_assert_eq(out[i], -1, "failed to_buffer wrote out[%d]", i);
    cr_assert_eq(gg_tensor_to_buffer(t, out, 8), GG_OK, "larger capacity must be accepted");
    gg_tensor *row0 = gg_tensor_slice(x, 0, 0, 1, 1);
    gg_tensor *e = gg_tensor_expand(row0, GG_SHAPE(2, 2, 3));
    cr_assert_not_null(e);
    float ex[12];
    cr_assert_eq(gg_tensor_to_buffer(e, ex, 12), GG_OK);
    for (int i = 0; i < 12; i++) cr_assert_eq(ex[i], (float)(i % 3));
    gg_tensor_free(e);
    gg_tensor_free(row0);
    gg_tensor_free(t);
    gg_tensor_free(x);
}

/* ---- version counter ---- */

Test(tensor, version_bumps_and_is_shared_by_views) {
    gg_tensor *x = gg_tensor_zeros(GG_SHAPE(2, 3));
    gg_tensor *v = gg_tensor_transpose(x, 0, 1);
    cr_assert_eq(v->storage, x->storage);
    uint64_t v0 = x->storage->version;
    float tmp;
    gg_tensor_get(x, (int64_t[]){0, 0}, &tmp);
    cr_assert_eq(x->storage->version, v0, "a read bumped the version");
    cr_assert_eq(gg_tensor_set(v, (int64_t[]){2, 1}, 1), GG_OK);
    uint64_t v1 = x->storage->version;
    cr_assert_gt(v1, v0, "set through a view did not bump the shared version");
    cr_assert_eq(gg_tensor_fill(x, 3), GG_OK);
    uint64_t v2 = x->storage->version;
    cr_assert_gt(v2, v1, "fill did not bump");
    gg_tensor *src = gg_tensor_ones(GG_SHAPE(3, 2));
    uint64_t src_v = src->storage->version;
    cr_assert_eq(gg_tensor_copy_into(v, src), GG_OK);
    uint64_t v3 = x->storage->version;
    cr_assert_gt(v3, v2, "copy_into did not bump");
    cr_assert_eq(src->storage->version, src_v, "copy_into bumped its source");
    gg_tensor_bump_version(v);
    cr_assert_gt(x->storage->version, v3);
    gg_tensor_free(src);
    gg_tensor_free(v);
    gg_tensor_free(x);
}

/* ---- reference counting ---- */

Test(tensor, retain_and_free) {
    gg_tensor *x = gg_tensor_ones(GG_SHAPE(4));
    cr_assert_eq(gg_tensor_retain(x), x);
    cr_assert_eq(x->refcount, 2);
    gg_tensor_free(x);
    cr_assert_eq(x->refcount, 1);
    gt_assert_all(x, 1.0f);
    gg_tensor_free(x);
}

Test(tensor, view_keeps_storage_alive) {
    size_t live = gg_alloc_live_bytes();
    gg_tensor *x = GT_IOTA(3, 4);
    gg_tensor *v = gg_tensor_view(x, GG_SHAPE(4, 3));
    gg_tensor *s = gg_tensor_slice(x, 1, 1, 3, 1);
    cr_assert_eq(x->storage->refcount, 3, "storage refcount %d with three headers", x->storage->refcount);
    gg_tensor_free(x);
    cr_assert_eq(v->storage->refcount, 2);
    gt_assert_list(v, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11);
    gg_tensor_free(v);
    cr_assert_eq(s->storage->refcount, 1);
    gt_assert_list(s, 1, 2, 5, 6, 9, 10);
    cr_assert_eq(gg_tensor_fill(s, 0), GG_OK);
    gg_tensor_free(s);
    cr_assert_eq(gg_alloc_live_bytes(), live, "storage leaked or freed twice");
}
