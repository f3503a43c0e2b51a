/* Shape ops: reshape, permute, transpose, slice, expand, squeeze, unsqueeze (views sharing storage with
 * their input, made by the tensor layer and adopted by the tape), and concat, stack, pad (copies).
 * Every backward adds the output gradient back into the input's gradient through the inverse index map. */
#include <stdio.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "gg_internal.h"
#include "gg_node.h"
#include "gg_ops.h"
#include "gg_runtime.h"

#define PAR_MIN 32768 /* elements below which the kernels stay single-threaded */

/* ---- kernels: pointers, sizes and element strides only ---- */

/* dst[i] += src[i], i < n. */
static void add_flat(float *restrict dst, const float *restrict src, int64_t n) {
    if (n <= PAR_MIN) {
        for (int64_t i = 0; i < n; i++) dst[i] += src[i];
        return;
    }
#pragma omp parallel for num_threads(gg_get_num_threads())
    for (int64_t i = 0; i < n; i++) dst[i] += src[i];
}

/* ga += gout where gout is contiguous and has ga's elements in ga's row-major order (reshape, squeeze,
 * unsqueeze). */
static void add_same_order(gg_tensor *ga, const gg_tensor *gout) {
    if (gg_tensor_is_contiguous(ga)) {
        add_flat(gg_tensor_data(ga), gg_tensor_data(gout), ga->numel);
        return;
    }
    int64_t cs[GG_MAX_DIMS];
    gg__contiguous_strides(ga->ndim, ga->shape, cs);
    gg__strided_add(ga->ndim, ga->shape, gg_tensor_data(ga), ga->stride, gg_tensor_data(gout), cs);
}

/* The tensor-layer view functions name themselves in their messages; report under the op's name and
 * add the input's shape when the message does not already show it. */
static void rename_error(const char *func, const gg_tensor *x) {
    char msg[1024], s[GG_SHAPE_STR_MAX];
    int st = gg_last_status() ? gg_last_status() : GG_ERR_ARG;
    const char *e = gg_last_error(), *colon = strstr(e, ": ");
    snprintf(msg, sizeof msg, "%s", colon ? colon + 2 : e);
    GG_SHAPE_STR(x, s);
    if (strstr(msg, s)) gg_error_set(st, func, "%s", msg);
    else gg_error_set(st, func, "%s (x %s)", msg, s);
}

/* Adopt a view made by the tensor layer and record `op` on it with the single input x. */
static gg_tensor *finish_view(const gg_op_def *op, gg_tensor *v, gg_tensor *x, const char *func,
                              gg_node **node) {
    *node = NULL;
    if (!v) {
        rename_error(func, x);
        return NULL;
    }
    if (!gg_op_adopt(v)) return NULL;
    bool failed;
    *node = gg_op_record(op, v, 1, &x, &failed);
    return failed ? NULL : v;
}

/* Input i's gradient accumulator into *ga (NULL when it needs none); an error only if allocating it
 * failed. */
static int input_grad(gg_node *n, int i, gg_tensor **ga) {
    *ga = gg_node_grad(n, i);
    if (*ga || !gg_node_needs_grad(n, i)) return GG_OK;
    return gg_last_status() ? gg_last_status() : GG_ERR_NOMEM;
}

/* ---- reshape, squeeze, unsqueeze: y has x's elements in the same row-major order ----
 * y = reshape(x, shape); dx += reshape(dy, x.shape). A view when x's strides allow, else a copy. */
static int same_order_backward(gg_node *n, const gg_tensor *gout) {
    gg_tensor *ga;
    int st = input_grad(n, 0, &ga);
    if (st || !ga) return st;
    add_same_order(ga, gout);
    return GG_OK;
}
static const gg_op_def RESHAPE_OP = {"reshape", same_order_backward};
static const gg_op_def SQUEEZE_OP = {"squeeze", same_order_backward};
static const gg_op_def UNSQUEEZE_OP = {"unsqueeze", same_order_backward};

gg_tensor *gg_reshape(gg_tensor *x, int ndim, const int64_t *shape) {
    GG_CHECK_ARG(x, NULL);
    gg_node *node;
    gg_tensor *y = finish_view(&RESHAPE_OP, gg_tensor_reshape(x, ndim, shape), x, __func__, &node);
    return gg_op_finish(y, __func__, 1, &x);
}

gg_tensor *gg_squeeze(gg_tensor *x, int dim) {
    GG_CHECK_ARG(x, NULL);
    gg_node *node;
    gg_tensor *y = finish_view(&SQUEEZE_OP, gg_tensor_squeeze(x, dim), x, __func__, &node);
    return gg_op_finish(y, __func__, 1, &x);
}

gg_tensor *gg_unsqueeze(gg_tensor *x, int dim) {
    GG_CHECK_ARG(x, NULL);
    gg_node *node;
    gg_tensor *y = finish_view(&UNSQUEEZE_OP, gg_tensor_unsqueeze(x, dim), x, __func__, &node);
    return gg_op_finish(y, __func__, 1, &x);
}

/* ---- permute, transpose ----
 * y[o] = x[i] with i[perm[d]] = o[d]; dx[i] += dy[o]: dy is added into dx viewed with permuted strides.
 * ip[0..ndim-1] = perm (normalised). */
static int permute_backward(gg_node *n, const gg_tensor *gout) {
    gg_tensor *ga;
    int st = input_grad(n, 0, &ga);
    if (st || !ga) return st;
    int64_t ds[GG_MAX_DIMS], cs[GG_MAX_DIMS];
    for (int d = 0; d < gout->ndim; d++) ds[d] = ga->stride[n->ip[d]];
    gg__contiguous_strides(gout->ndim, gout->shape, cs);
    gg__strided_add(gout->ndim, gout->shape, gg_tensor_data(ga), ds, gg_tensor_data(gout), cs);
    return GG_OK;
}
static const gg_op_def PERMUTE_OP = {"permute", permute_backward};
static const gg_op_def TRANSPOSE_OP = {"transpose", permute_backward};

static gg_tensor *permute_common(const gg_op_def *op, gg_tensor *x, gg_tensor *v, const int *perm,
                                 const char *func) {
    gg_node *node;
    gg_tensor *y = finish_view(op, v, x, func, &node);
    if (node)
        for (int d = 0; d < x->ndim; d++) node->ip[d] = perm[d] < 0 ? perm[d] + x->ndim : perm[d];
    return gg_op_finish(y, func, 1, &x);
}

gg_tensor *gg_permute(gg_tensor *x, const int *perm) {
    GG_CHECK_ARG(x, NULL);
    return permute_common(&PERMUTE_OP, x, gg_tensor_permute(x, perm), perm, __func__);
}

gg_tensor *gg_transpose(gg_tensor *x, int dim0, int dim1) {
    GG_CHECK_ARG(x, NULL);
    gg_tensor *v = gg_tensor_transpose(x, dim0, dim1);
    int perm[GG_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) perm[d] = d;
    if (v) { /* dims are valid now */
        int d0 = dim0 < 0 ? dim0 + x->ndim : dim0, d1 = dim1 < 0 ? dim1 + x->ndim : dim1;
        perm[d0] = d1;
        perm[d1] = d0;
    }
    return permute_common(&TRANSPOSE_OP, x, v, perm, __func__);
}

/* ---- slice ----
 * y = x[start:stop:step] along dim; dx[start:stop:step] += dy (a strided view of the accumulator).
 * ip = {dim, start, stop, step} as given (they resolve the same way on dx, which has x's shape). */
static int slice_backward(gg_node *n, const gg_tensor *gout) {
    gg_tensor *ga;
    int st = input_grad(n, 0, &ga);
    if (st || !ga) return st;
    gg_tensor *v = gg_tensor_slice(ga, (int)n->ip[0], n->ip[1], n->ip[2], n->ip[3]);
    if (!v) return gg_last_status();
    int64_t cs[GG_MAX_DIMS];
    gg__contiguous_strides(gout->ndim, gout->shape, cs);
    gg__strided_add(v->ndim, v->shape, gg_tensor_data(v), v->stride, gg_tensor_data(gout), cs);
    gg_tensor_free(v);
    return GG_OK;
}
static const gg_op_def SLICE_OP = {"slice", slice_backward};

gg_tensor *gg_slice(gg_tensor *x, int dim, int64_t start, int64_t stop, int64_t step) {
    GG_CHECK_ARG(x, NULL);
    gg_node *node;
    gg_tensor *y = finish_view(&SLICE_OP, gg_tensor_slice(x, dim, start, stop, step), x, __func__, &node);
    if (node) {
        node->ip[0] = dim;
        node->ip[1] = start;
        node->ip[2] = stop;
        node->ip[3] = step;
    }
    return gg_op_finish(y, __func__, 1, &x);
}

/* ---- expand ----
 * y = broadcast_to(x, shape) (stride 0 along new and size-1 dims); dx += dy summed over those dims. */
static int expand_backward(gg_node *n, const gg_tensor *gout) {
    gg_tensor *ga;
    int st = input_grad(n, 0, &ga);
    if (st || !ga) return st;
    return gg_accumulate_reduced(ga, gout);
}
static const gg_op_def EXPAND_OP = {"expand", expand_backward};

gg_tensor *gg_expand(gg_tensor *x, int ndim, const int64_t *shape) {
    GG_CHECK_ARG(x, NULL);
    gg_node *node;
    gg_tensor *y = finish_view(&EXPAND_OP, gg_tensor_expand(x, ndim, shape), x, __func__, &node);
    return gg_op_finish(y, __func__, 1, &x);
}

/* ---- concat, stack ----
 * concat: xs[0..n-1], same rank >= 1 and sizes except along dim; y [.., sum_i size_i(dim), ..] holds x_i
 * in the block starting at offset o_i = sum_{j<i} size_j(dim). stack: all shapes equal; y inserts a new
 * dim of size n at dim, i.e. concat of unsqueeze(x_i, dim). Backward: dx_i += the block of dy.
 * ip = {dim (of y), stack}. */

/* x_i's shape and strides as a block of y: with a size-1 dim inserted at `dim` for stack. */
static void block_geometry(const gg_tensor *x, int dim, bool stack, int64_t *shape, int64_t *stride) {
    for (int d = 0, k = 0; d < x->ndim + (stack ? 1 : 0); d++) {
        if (stack && d == dim) {
            shape[d] = 1, stride[d] = 0;
        } else {
            shape[d] = x->shape[k], stride[d] = x->stride[k];
            k++;
        }
    }
}

static int join_backward(gg_node *n, const gg_tensor *gout) {
    int dim = (int)n->ip[0];
    bool stack = n->ip[1] != 0;
    int64_t cs[GG_MAX_DIMS], shape[GG_MAX_DIMS], stride[GG_MAX_DIMS];
    gg__contiguous_strides(gout->ndim, gout->shape, cs);
    const float *g = gg_tensor_data(gout);
    int64_t off = 0;
    for (int i = 0; i < n->n_in; i++) {
        int64_t len = stack ? 1 : n->in[i]->shape[dim];
        gg_tensor *ga;
        int st = input_grad(n, i, &ga);
        if (st) return st;
        if (ga) {
            block_geometry(ga, dim, stack, shape, stride);
            gg__strided_add(gout->ndim, shape, gg_tensor_data(ga), stride, g + off * cs[dim], cs);
        }
        off += len;
    }
    return GG_OK;
}
static const gg_op_def CONCAT_OP = {"concat", join_backward};
static const gg_op_def STACK_OP = {"stack", join_backward};

/* Checks the inputs; writes the output rank and shape and the normalised dim. */
static int join_check(gg_tensor *const *xs, int n, int dim, bool stack, int *nd_out, int64_t *out,
                      int *dim_out, const char *func) {
    char a[GG_SHAPE_STR_MAX], b[GG_SHAPE_STR_MAX];
    if (n < 1 || !xs)
        return gg_error_set(GG_ERR_ARG, func, "needs at least one tensor (n = %d%s)", n,
                            xs ? "" : ", xs NULL");
    for (int i = 0; i < n; i++) {
        if (xs[i]) continue;
        char name[32];
        snprintf(name, sizeof name, "xs[%d]", i);
        return gg__null_arg(func, name);
    }
    const gg_tensor *x0 = xs[0];
    if (!stack && x0->ndim == 0)
        return gg_error_set(GG_ERR_SHAPE, func,
                            "input 0 is zero-dimensional (%s): cannot concatenate rank-0 tensors",
                            GG_SHAPE_STR(x0, a));
    if (stack && x0->ndim >= GG_MAX_DIMS)
        return gg_error_set(GG_ERR_SHAPE, func, "inputs %s already have the maximum rank %d",
                            GG_SHAPE_STR(x0, a), GG_MAX_DIMS);
    int d = gg_normalize_dim(dim, x0->ndim, stack ? 1 : 0, func);
    if (d < 0) return gg_last_status();
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        const gg_tensor *x = xs[i];
        if (x->ndim != x0->ndim)
            return gg_error_set(GG_ERR_SHAPE, func, "input %d %s has rank %d but input 0 %s has rank %d", i,
                                GG_SHAPE_STR(x, a), x->ndim, GG_SHAPE_STR(x0, b), x0->ndim);
        for (int k = 0; k < x->ndim; k++)
            if (x->shape[k] != x0->shape[k] && (stack || k != d))
                return gg_error_set(
                    GG_ERR_SHAPE, func,
                    stack ? "input %d %s does not match input 0 %s (dimension %d): stacked tensors "
                            "must have equal shapes"
                          : "input %d %s does not match input 0 %s in dimension %d: sizes must be "
                            "equal except along the concatenation dimension",
                    i, GG_SHAPE_STR(x, a), GG_SHAPE_STR(x0, b), k);
        if (!stack && __builtin_add_overflow(total, x->shape[d], &total))
            return gg_error_set(GG_ERR_OVERFLOW, func, "concatenated size along dimension %d overflows", d);
    }
    int nd = x0->ndim + (stack ? 1 : 0);
    for (int k = 0, j = 0; k < nd; k++) {
        if (k == d) out[k] = stack ? n : total;
        else out[k] = x0->shape[j];
        if (k != d || !stack) j++;
    }
    if (gg_shape_numel(nd, out, func) < 0) return gg_last_status();
    *nd_out = nd;
    *dim_out = d;
    return GG_OK;
}

static gg_tensor *join(gg_tensor *const *xs, int n, int dim, bool stack, const char *func) {
    int nd = 0, d = 0;
    int64_t shape[GG_MAX_DIMS], bshape[GG_MAX_DIMS], bstride[GG_MAX_DIMS];
    if (join_check(xs, n, dim, stack, &nd, shape, &d, func)) return NULL;
    gg_tensor *out = gg_op_output(nd, shape, func);
    if (!out) return NULL;
    float *o = gg_tensor_data(out);
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        block_geometry(xs[i], d, stack, bshape, bstride);
        gg__strided_copy(nd, bshape, o + off * out->stride[d], out->stride, gg_tensor_data(xs[i]), bstride);
        off += bshape[d];
    }
    bool failed;
    gg_node *node = gg_op_record(stack ? &STACK_OP : &CONCAT_OP, out, n, xs, &failed);
    if (failed) return NULL;
    if (node) {
        node->ip[0] = d;
        node->ip[1] = stack;
    }
    return gg_op_finish(out, func, n, xs);
}

gg_tensor *gg_concat(gg_tensor *const *xs, int n, int dim) { return join(xs, n, dim, false, __func__); }
gg_tensor *gg_stack(gg_tensor *const *xs, int n, int dim) { return join(xs, n, dim, true, __func__); }

/* ---- pad (torch.nn.functional.pad, constant mode) ----
 * pads = (before, after) pairs from the last dim backwards; y.size(d) = x.size(d) + before_d + after_d.
 * Along each dim the kept part of x is [max(0, -before), size - max(0, -after)) and lands at
 * max(0, before) in y; everything else in y is `value`. dx(kept region) += dy(its image).
 * ip[d] = before_d for every dim of x. */

/* Geometry of the kept region: its shape and its origins in x and y. */
static void pad_region(const gg_tensor *x, const int64_t *before, const int64_t *yshape, int64_t *len,
                       int64_t *xstart, int64_t *ystart) {
    for (int d = 0; d < x->ndim; d++) {
        int64_t after = yshape[d] - x->shape[d] - before[d];
        xstart[d] = before[d] < 0 ? -before[d] : 0;
        ystart[d] = before[d] > 0 ? before[d] : 0;
        len[d] = x->shape[d] - xstart[d] - (after < 0 ? -after : 0);
    }
}

static int pad_backward(gg_node *n, const gg_tensor *gout) {
    gg_tensor *ga;
    int st = input_grad(n, 0, &ga);
    if (st || !ga) return st;
    int64_t len[GG_MAX_DIMS], xs[GG_MAX_DIMS], ys[GG_MAX_DIMS], cs[GG_MAX_DIMS];
    pad_region(ga, n->ip, gout->shape, len, xs, ys);
    gg__contiguous_strides(gout->ndim, gout->shape, cs);
    gg__strided_add(ga->ndim, len, gg_tensor_data(ga) + gg_tensor_offset_of(ga, xs) - ga->offset, ga->stride,
                gg_tensor_data(gout) + gg_tensor_offset_of(gout, ys) - gout->offset, cs);
    return GG_OK;
}
static const gg_op_def PAD_OP = {"pad", pad_backward};

gg_tensor *gg_pad(gg_tensor *x, const int64_t *pads, int n_pads, float value) {
    char s[GG_SHAPE_STR_MAX];
    GG_CHECK_ARG(x, NULL);
    if (n_pads < 0 || n_pads % 2 || n_pads > 2 * x->ndim || (n_pads && !pads)) {
        GG_FAIL(GG_ERR_ARG, "%d pad values for x %s: need an even count of at most %d (2 per dimension)%s",
                n_pads, GG_SHAPE_STR(x, s), 2 * x->ndim, n_pads > 0 && !pads ? ", and pads is NULL" : "");
        return NULL;
    }
    int64_t before[GG_MAX_DIMS] = {0}, yshape[GG_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) {
        int k = x->ndim - 1 - d; /* pair k pads dim d */
        int64_t b = k < n_pads / 2 ? pads[2 * k] : 0, a = k < n_pads / 2 ? pads[2 * k + 1] : 0,
                sz = x->shape[d];
        int64_t kept = sz + (b < 0 ? b : 0) + (a < 0 ? a : 0);
        if (kept < 0) {
            GG_FAIL(GG_ERR_SHAPE,
                    "pads (%lld, %lld) crop %lld elements from dimension %d of x %s, which has %lld",
                    (long long)b, (long long)a, (long long)(sz - kept), d, GG_SHAPE_STR(x, s), (long long)sz);
            return NULL;
        }
        if (__builtin_add_overflow(sz, b, &yshape[d]) || __builtin_add_overflow(yshape[d], a, &yshape[d])) {
            GG_FAIL(GG_ERR_OVERFLOW, "pads (%lld, %lld) of dimension %d of x %s overflow", (long long)b,
                    (long long)a, d, GG_SHAPE_STR(x, s));
            return NULL;
        }
        before[d] = b;
    }
    if (gg_shape_numel(x->ndim, yshape, __func__) < 0) return NULL;
    gg_tensor *y = gg_op_output(x->ndim, yshape, __func__);
    if (!y) return NULL;
    int64_t len[GG_MAX_DIMS], xs[GG_MAX_DIMS], ys[GG_MAX_DIMS];
    pad_region(x, before, yshape, len, xs, ys);
    int64_t kept = 1;
    for (int d = 0; d < x->ndim; d++) kept *= len[d];
    float *yp = gg_tensor_data(y);
    if (kept != y->numel) { /* some border to fill */
        if (value == 0.0f) memset(yp, 0, (size_t)y->numel * sizeof(float));
        else
            for (int64_t i = 0; i < y->numel; i++) yp[i] = value;
    }
    if (kept > 0)
        gg__strided_copy(x->ndim, len, yp + gg_tensor_offset_of(y, ys) - y->offset, y->stride,
                         gg_tensor_data(x) + gg_tensor_offset_of(x, xs) - x->offset, x->stride);
    bool failed;
    gg_node *node = gg_op_record(&PAD_OP, y, 1, &x, &failed);
    if (failed) return NULL;
    if (node) memcpy(node->ip, before, sizeof(int64_t) * (size_t)x->ndim);
    return gg_op_finish(y, __func__, 1, &x);
}
