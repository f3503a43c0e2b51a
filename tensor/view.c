/* Zero-copy views: view/reshape, permute, transpose, slice, select, expand, squeeze, unsqueeze, flatten. */
#include <stdlib.h>
#include <string.h>

#include "gg_internal.h"
#include "gg_tensor.h"

/* Resolve a requested shape (one -1 allowed) against numel; writes the final shape. */
static int infer_shape(const gg_tensor *t, int ndim, const int64_t *shape, int64_t *out, const char *func) {
    char a[GG_SHAPE_STR_MAX], b[GG_SHAPE_STR_MAX];
    if (ndim < 0 || ndim > GG_MAX_DIMS)
        return gg_error_set(GG_ERR_ARG, func, "rank %d is outside [0, %d]", ndim, GG_MAX_DIMS);
    if (ndim > 0 && !shape) return gg_error_set(GG_ERR_ARG, func, "shape is NULL");
    int infer = -1;
    int64_t known = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == -1) {
            if (infer >= 0)
                return gg_error_set(GG_ERR_ARG, func, "only one size may be -1 in %s",
                                    gg_shape_str(ndim, shape, a, sizeof a));
            infer = d;
        } else if (shape[d] < 0) {
            return gg_error_set(GG_ERR_ARG, func, "size %lld in %s is negative", (long long)shape[d],
                                gg_shape_str(ndim, shape, a, sizeof a));
        } else if (__builtin_mul_overflow(known, shape[d], &known)) {
            return gg_error_set(GG_ERR_OVERFLOW, func, "shape %s overflows",
                                gg_shape_str(ndim, shape, a, sizeof a));
        }
    }
    for (int d = 0; d < ndim; d++) out[d] = shape[d];
    if (infer >= 0) {
        if (known == 0 || t->numel % known != 0)
            return gg_error_set(GG_ERR_SHAPE, func, "cannot infer the -1 in %s for tensor %s (%lld elements)",
                                gg_shape_str(ndim, shape, a, sizeof a), GG_SHAPE_STR(t, b),
                                (long long)t->numel);
        out[infer] = t->numel / known;
    } else if (known != t->numel) {
        return gg_error_set(GG_ERR_SHAPE, func, "shape %s has %lld elements, tensor %s has %lld",
                            gg_shape_str(ndim, shape, a, sizeof a), (long long)known, GG_SHAPE_STR(t, b),
                            (long long)t->numel);
    }
    return GG_OK;
}

/* Strides for viewing t with `shape` without copying, as PyTorch's computeStride: walk t's dims from the
 * innermost, grouping runs that are contiguous with each other, and map each run onto a run of new
 * dims with the same element count. Returns false when no such strides exist. */
static bool view_strides(const gg_tensor *t, int ndim, const int64_t *shape, int64_t *stride) {
    if (t->numel == 0) {
        gg__contiguous_strides(ndim, shape, stride);
        return true;
    }
    int view_d = ndim - 1;
    int64_t chunk_base_stride = t->ndim ? t->stride[t->ndim - 1] : 1;
    int64_t tensor_numel = 1, view_numel = 1;
    for (int td = t->ndim - 1; td >= 0; td--) {
        tensor_numel *= t->shape[td];
        if (td == 0 || (t->shape[td - 1] != 1 && t->stride[td - 1] != tensor_numel * chunk_base_stride)) {
            while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
                stride[view_d] = view_numel * chunk_base_stride;
                view_numel *= shape[view_d];
                view_d--;
            }
            if (view_numel != tensor_numel) return false;
            if (td > 0) {
                chunk_base_stride = t->stride[td - 1];
                tensor_numel = 1;
                view_numel = 1;
            }
        }
    }
    if (view_d != -1) {
        /* remaining new dims must be size 1 (only possible for rank-0 sources) */
        for (; view_d >= 0; view_d--) {
            if (shape[view_d] != 1) return false;
            stride[view_d] = 1;
        }
    }
    return true;
}

gg_tensor *gg_tensor_view(const gg_tensor *t, int ndim, const int64_t *shape) {
    char a[GG_SHAPE_STR_MAX], b[GG_SHAPE_STR_MAX], c[GG_SHAPE_STR_MAX];
    GG_CHECK_ARG(t, NULL);
    int64_t s[GG_MAX_DIMS], st[GG_MAX_DIMS];
    if (infer_shape(t, ndim, shape, s, __func__)) return NULL;
    if (!view_strides(t, ndim, s, st)) {
        GG_FAIL(GG_ERR_SHAPE,
                "tensor %s with strides %s cannot be viewed as %s without a copy (use gg_tensor_reshape)",
                GG_SHAPE_STR(t, a), gg_shape_str(t->ndim, t->stride, b, sizeof b), gg_shape_str(ndim, s, c, sizeof c));
        return NULL;
    }
    return gg__view_header(t, ndim, s, st, t->offset);
}

gg_tensor *gg_tensor_reshape(const gg_tensor *t, int ndim, const int64_t *shape) {
    GG_CHECK_ARG(t, NULL);
    int64_t s[GG_MAX_DIMS], st[GG_MAX_DIMS];
    if (infer_shape(t, ndim, shape, s, __func__)) return NULL;
    if (view_strides(t, ndim, s, st)) return gg__view_header(t, ndim, s, st, t->offset);
    gg_tensor *c = gg_tensor_copy(t);
    if (!c) return NULL;
    gg_tensor *v = gg__view_header(c, ndim, s, (gg__contiguous_strides(ndim, s, st), st), 0);
    gg_tensor_free(c);
    return v;
}

gg_tensor *gg_tensor_permute(const gg_tensor *t, const int *perm) {
    char a[GG_SHAPE_STR_MAX];
    GG_CHECK_ARG(t, NULL);
    if (!perm && t->ndim > 0) {
        GG_FAIL(GG_ERR_ARG, "perm is NULL");
        return NULL;
    }
    int64_t s[GG_MAX_DIMS], st[GG_MAX_DIMS];
    bool seen[GG_MAX_DIMS] = {false};
    for (int d = 0; d < t->ndim; d++) {
        int p = perm[d] < 0 ? perm[d] + t->ndim : perm[d];
        if (p < 0 || p >= t->ndim || seen[p]) {
            GG_FAIL(GG_ERR_INDEX, "entry %d of the permutation (%d) is %s for tensor %s", d, perm[d],
                    (p >= 0 && p < t->ndim) ? "repeated" : "out of range", GG_SHAPE_STR(t, a));
            return NULL;
        }
        seen[p] = true;
        s[d] = t->shape[p];
        st[d] = t->stride[p];
    }
    return gg__view_header(t, t->ndim, s, st, t->offset);
}

gg_tensor *gg_tensor_transpose(const gg_tensor *t, int dim0, int dim1) {
    GG_CHECK_ARG(t, NULL);
    int d0 = gg_normalize_dim(dim0, t->ndim, 0, __func__);
    int d1 = d0 < 0 ? -1 : gg_normalize_dim(dim1, t->ndim, 0, __func__);
    if (d1 < 0) return NULL;
    int64_t s[GG_MAX_DIMS], st[GG_MAX_DIMS];
    memcpy(s, t->shape, sizeof s);
    memcpy(st, t->stride, sizeof st);
    s[d0] = t->shape[d1], st[d0] = t->stride[d1];
    s[d1] = t->shape[d0], st[d1] = t->stride[d0];
    return gg__view_header(t, t->ndim, s, st, t->offset);
}

gg_tensor *gg_tensor_slice(const gg_tensor *t, int dim, int64_t start, int64_t stop, int64_t step) {
    char a[GG_SHAPE_STR_MAX];
    GG_CHECK_ARG(t, NULL);
    int d = gg_normalize_dim(dim, t->ndim, 0, __func__);
    if (d < 0) return NULL;
    int64_t n = t->shape[d];
    if (step <= 0) {
        GG_FAIL(GG_ERR_ARG, "step %lld must be positive (dimension %d of %s)", (long long)step, dim,
                GG_SHAPE_STR(t, a));
        return NULL;
    }
    int64_t b = start < 0 ? start + n : start, e = stop < 0 ? stop + n : stop;
    if (b < 0 || b > n || e < 0 || e > n) {
        GG_FAIL(GG_ERR_INDEX, "slice [%lld:%lld:%lld] is out of range for dimension %d of size %lld in %s",
                (long long)start, (long long)stop, (long long)step, dim, (long long)n, GG_SHAPE_STR(t, a));
        return NULL;
    }
    int64_t len = e > b ? (e - b + step - 1) / step : 0;
    int64_t s[GG_MAX_DIMS], st[GG_MAX_DIMS];
    memcpy(s, t->shape, sizeof s);
    memcpy(st, t->stride, sizeof st);
    s[d] = len;
    st[d] = t->stride[d] * step;
    return gg__view_header(t, t->ndim, s, st, t->offset + (len > 0 ? b * t->stride[d] : 0));
}

gg_tensor *gg_tensor_select(const gg_tensor *t, int dim, int64_t index) {
    char a[GG_SHAPE_STR_MAX];
    GG_CHECK_ARG(t, NULL);
    int d = gg_normalize_dim(dim, t->ndim, 0, __func__);
    if (d < 0) return NULL;
    int64_t i = index < 0 ? index + t->shape[d] : index;
    if (i < 0 || i >= t->shape[d]) {
        GG_FAIL(GG_ERR_INDEX, "index %lld is out of range for dimension %d of %s", (long long)index, dim,
                GG_SHAPE_STR(t, a));
        return NULL;
    }
    int64_t s[GG_MAX_DIMS], st[GG_MAX_DIMS];
    int n = 0;
    for (int k = 0; k < t->ndim; k++)
        if (k != d) s[n] = t->shape[k], st[n++] = t->stride[k];
    return gg__view_header(t, n, s, st, t->offset + i * t->stride[d]);
}

gg_tensor *gg_tensor_expand(const gg_tensor *t, int ndim, const int64_t *shape) {
    char a[GG_SHAPE_STR_MAX], b[GG_SHAPE_STR_MAX];
    GG_CHECK_ARG(t, NULL);
    if (ndim < t->ndim || ndim > GG_MAX_DIMS || (ndim && !shape)) {
        GG_FAIL(GG_ERR_SHAPE, "cannot expand tensor %s to rank %d", GG_SHAPE_STR(t, a), ndim);
        return NULL;
    }
    int64_t s[GG_MAX_DIMS], st[GG_MAX_DIMS];
    int lead = ndim - t->ndim;
    for (int d = 0; d < ndim; d++) {
        int td = d - lead;
        int64_t want = shape[d];
        if (td < 0) {
            if (want < 0) {
                GG_FAIL(GG_ERR_SHAPE, "size %lld for new leading dimension %d expanding %s to %s",
                        (long long)want, d, GG_SHAPE_STR(t, a), gg_shape_str(ndim, shape, b, sizeof b));
                return NULL;
            }
            s[d] = want, st[d] = 0;
        } else if (want == -1 || want == t->shape[td]) {
            s[d] = t->shape[td], st[d] = t->stride[td];
        } else if (t->shape[td] == 1 && want >= 0) {
            s[d] = want, st[d] = 0;
        } else {
            GG_FAIL(GG_ERR_SHAPE, "tensor %s cannot be expanded to %s (dimension %d: %lld vs %lld)",
                    GG_SHAPE_STR(t, a), gg_shape_str(ndim, shape, b, sizeof b), d, (long long)t->shape[td],
                    (long long)want);
            return NULL;
        }
    }
    if (gg_shape_numel(ndim, s, __func__) < 0) return NULL;
    return gg__view_header(t, ndim, s, st, t->offset);
}

gg_tensor *gg_tensor_squeeze(const gg_tensor *t, int dim) {
    char a[GG_SHAPE_STR_MAX];
    GG_CHECK_ARG(t, NULL);
    int only = -1;
    if (dim != GG_ALL_DIMS) {
        only = gg_normalize_dim(dim, t->ndim, 0, __func__);
        if (only < 0) return NULL;
        if (t->shape[only] != 1) {
            GG_FAIL(GG_ERR_SHAPE, "dimension %d of %s has size %lld, not 1", dim, GG_SHAPE_STR(t, a),
                    (long long)t->shape[only]);
            return NULL;
        }
    }
    int64_t s[GG_MAX_DIMS], st[GG_MAX_DIMS];
    int n = 0;
    for (int d = 0; d < t->ndim; d++) {
        bool drop = only >= 0 ? d == only : t->shape[d] == 1;
        if (!drop) s[n] = t->shape[d], st[n++] = t->stride[d];
    }
    return gg__view_header(t, n, s, st, t->offset);
}

gg_tensor *gg_tensor_unsqueeze(const gg_tensor *t, int dim) {
    char a[GG_SHAPE_STR_MAX];
    GG_CHECK_ARG(t, NULL);
    if (t->ndim >= GG_MAX_DIMS) {
        GG_FAIL(GG_ERR_SHAPE, "tensor %s already has the maximum rank %d", GG_SHAPE_STR(t, a), GG_MAX_DIMS);
        return NULL;
    }
    int p = gg_normalize_dim(dim, t->ndim, 1, __func__);
    if (p < 0) return NULL;
    int64_t s[GG_MAX_DIMS], st[GG_MAX_DIMS];
    for (int d = 0, k = 0; d <= t->ndim; d++) {
        if (d == p) {
            s[d] = 1;
            st[d] = p < t->ndim ? t->stride[p] * t->shape[p] : 1;
        } else {
            s[d] = t->shape[k], st[d] = t->stride[k], k++;
        }
    }
    return gg__view_header(t, t->ndim + 1, s, st, t->offset);
}

gg_tensor *gg_tensor_flatten(const gg_tensor *t, int start_dim, int end_dim) {
    GG_CHECK_ARG(t, NULL);
    if (t->ndim == 0) return gg_tensor_reshape(t, GG_SHAPE(1));
    int b = gg_normalize_dim(start_dim, t->ndim, 0, __func__);
    int e = b < 0 ? -1 : gg_normalize_dim(end_dim, t->ndim, 0, __func__);
    if (e < 0) return NULL;
    if (b > e) {
        GG_FAIL(GG_ERR_ARG, "start_dim %d comes after end_dim %d", start_dim, end_dim);
        return NULL;
    }
    int64_t s[GG_MAX_DIMS];
    int n = 0;
    for (int d = 0; d < b; d++) s[n++] = t->shape[d];
    int64_t m = 1;
    for (int d = b; d <= e; d++) m *= t->shape[d];
    s[n++] = m;
    for (int d = e + 1; d < t->ndim; d++) s[n++] = t->shape[d];
    return gg_tensor_reshape(t, n, s);
}
