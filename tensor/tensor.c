/* Tensor storage, construction, element access, copies and shape arithmetic. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "gg_alloc.h"
#include "gg_internal.h"
#include "gg_runtime.h"
#include "gg_tensor.h"

int gg__null_arg(const char *func, const char *arg) {
    if (gg_last_status() != GG_OK) return gg_last_status();
    return gg_error_set(GG_ERR_ARG, func, "argument '%s' is NULL", arg);
}

char *gg_shape_str(int ndim, const int64_t *shape, char *buf, size_t size) {
    if (!buf || size == 0) return buf;
    size_t n = 0;
    buf[0] = '\0';
    n += (size_t)snprintf(buf + n, size - n, "[");
    for (int d = 0; d < ndim && n < size; d++)
        n += (size_t)snprintf(buf + n, size - n, d ? ",%lld" : "%lld", (long long)shape[d]);
    if (n < size) snprintf(buf + n, size - n, "]");
    return buf;
}

int64_t gg_shape_numel(int ndim, const int64_t *shape, const char *func) {
    const char *fn = func ? func : "gg_shape_numel";
    char s[GG_SHAPE_STR_MAX];
    if (ndim < 0 || ndim > GG_MAX_DIMS) {
        gg_error_set(GG_ERR_ARG, fn, "rank %d is outside [0, %d]", ndim, GG_MAX_DIMS);
        return -1;
    }
    if (ndim > 0 && !shape) {
        gg_error_set(GG_ERR_ARG, fn, "shape is NULL for rank %d", ndim);
        return -1;
    }
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0) {
            gg_error_set(GG_ERR_ARG, fn, "size %lld of dimension %d is negative (shape %s)",
                         (long long)shape[d], d, gg_shape_str(ndim, shape, s, sizeof s));
            return -1;
        }
    }
    for (int d = 0; d < ndim; d++)
        if (shape[d] == 0) return 0; /* empty, however large the other sizes */
    for (int d = 0; d < ndim; d++) {
        if (__builtin_mul_overflow(n, shape[d], &n) ||
            n > (int64_t)(SIZE_MAX / sizeof(float) / 2)) {
            gg_error_set(GG_ERR_OVERFLOW, fn, "shape %s has more elements than memory can address",
                         gg_shape_str(ndim, shape, s, sizeof s));
            return -1;
        }
    }
    return n;
}

int gg_normalize_dim(int dim, int ndim, int extra, const char *func) {
    int range = ndim + extra;
    int d = dim < 0 ? dim + range : dim;
    if (d < 0 || d >= range || range == 0) {
        gg_error_set(GG_ERR_INDEX, func ? func : "gg_normalize_dim",
                     "dimension %d is out of range for a tensor of rank %d (expected %d..%d)", dim, ndim,
                     -range, range - 1);
        return -1;
    }
    return d;
}

gg_tensor *gg__new_header(void) {
    gg_tensor *t = gg__alloc_untracked(sizeof *t);
    if (t) memset(t, 0, sizeof *t);
    return t;
}

gg_storage *gg__new_storage(void) {
    gg_storage *st = gg__alloc_untracked(sizeof *st);
    if (st) memset(st, 0, sizeof *st);
    return st;
}

void gg__contiguous_strides(int ndim, const int64_t *shape, int64_t *stride) {
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        stride[d] = s;
        /* saturate: only an empty tensor (never indexed) can have sizes whose product overflows */
        if (__builtin_mul_overflow(s, shape[d] > 0 ? shape[d] : 1, &s)) s = INT64_MAX;
    }
}

gg_tensor *gg__alloc_tensor(int ndim, const int64_t *shape, const char *func) {
    int64_t numel = gg_shape_numel(ndim, shape, func);
    if (numel < 0) return NULL;
    gg_tensor *t = gg__new_header();
    gg_storage *st = gg__new_storage();
    float *data = gg_alloc((size_t)numel * sizeof(float));
    if (!t || !st || !data) {
        gg__free_untracked(t);
        gg__free_untracked(st);
        gg_free(data);
        gg_error_set(GG_ERR_NOMEM, func, "cannot allocate %lld floats", (long long)numel);
        return NULL;
    }
    st->data = data;
    st->numel = numel;
    st->refcount = 1;
    st->owns_data = true;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
    gg__contiguous_strides(ndim, shape, t->stride);
    t->numel = numel;
    t->storage = st;
    t->refcount = 1;
    return t;
}

gg_tensor *gg__view_header(const gg_tensor *t, int ndim, const int64_t *shape, const int64_t *stride,
                           int64_t offset) {
    gg_tensor *v = gg__new_header();
    if (!v) {
        gg_error_set(GG_ERR_NOMEM, "gg_tensor_view", "cannot allocate a tensor header");
        return NULL;
    }
    v->ndim = ndim;
    for (int d = 0; d < ndim; d++) {
        v->shape[d] = shape[d];
        v->stride[d] = stride[d];
    }
    v->numel = gg_shape_numel(ndim, shape, "gg_tensor_view"); /* callers validated the shape */
    v->offset = offset;
    v->storage = t->storage;
    v->storage->refcount++;
    v->refcount = 1;
    return v;
}

static gg_tensor *new_filled(int ndim, const int64_t *shape, float value, bool fill, const char *func) {
    if (gg_shape_numel(ndim, shape, func) < 0) return NULL;
    gg_tensor *t = gg__alloc_tensor(ndim, shape, func);
    if (t && fill) {
        float *p = t->storage->data;
        if (value == 0.0f && !signbit(value))
            memset(p, 0, (size_t)t->numel * sizeof(float));
        else
            for (int64_t i = 0; i < t->numel; i++) p[i] = value;
    }
    return t;
}

gg_tensor *gg_tensor_empty(int ndim, const int64_t *shape) {
    return new_filled(ndim, shape, 0, false, __func__);
}
gg_tensor *gg_tensor_zeros(int ndim, const int64_t *shape) {
    return new_filled(ndim, shape, 0, true, __func__);
}
gg_tensor *gg_tensor_ones(int ndim, const int64_t *shape) {
    return new_filled(ndim, shape, 1, true, __func__);
}
gg_tensor *gg_tensor_full(int ndim, const int64_t *shape, float value) {
    return new_filled(ndim, shape, value, true, __func__);
}
gg_tensor *gg_tensor_scalar(float value) { return new_filled(0, NULL, value, true, __func__); }

gg_tensor *gg_tensor_arange(double start, double stop, double step) {
    if (step == 0 || !isfinite(start) || !isfinite(stop) || !isfinite(step)) {
        GG_FAIL(GG_ERR_ARG, "need finite bounds and a non-zero step (start %g, stop %g, step %g)", start,
                stop, step);
        return NULL;
    }
    double count = ceil((stop - start) / step);
    if (count < 0) count = 0;
    if (count > 4.0e18) {
        GG_FAIL(GG_ERR_OVERFLOW, "%g elements from %g to %g in steps of %g is too many", count, start,
                stop, step);
        return NULL;
    }
    int64_t n = (int64_t)count;
    gg_tensor *t = new_filled(1, &n, 0, false, __func__);
    if (t)
        for (int64_t i = 0; i < n; i++) t->storage->data[i] = (float)(start + (double)i * step);
    return t;
}

gg_tensor *gg_tensor_from_data(int ndim, const int64_t *shape, const float *data) {
    int64_t n = gg_shape_numel(ndim, shape, __func__);
    if (n < 0) return NULL;
    if (!data && n > 0) {
        GG_FAIL(GG_ERR_ARG, "data is NULL");
        return NULL;
    }
    gg_tensor *t = gg__alloc_tensor(ndim, shape, __func__);
    if (t && n > 0) memcpy(t->storage->data, data, (size_t)n * sizeof(float));
    return t;
}

gg_tensor *gg_tensor_from_buffer(int ndim, const int64_t *shape, float *data) {
    int64_t n = gg_shape_numel(ndim, shape, __func__);
    if (n < 0) return NULL;
    if (!data) {
        GG_FAIL(GG_ERR_ARG, "data is NULL");
        return NULL;
    }
    gg_tensor *t = gg__new_header();
    gg_storage *st = gg__new_storage();
    if (!t || !st) {
        gg__free_untracked(t);
        gg__free_untracked(st);
        GG_FAIL(GG_ERR_NOMEM, "cannot allocate a tensor header");
        return NULL;
    }
    st->data = data;
    st->numel = n;
    st->refcount = 1;
    st->owns_data = false;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
    gg__contiguous_strides(ndim, shape, t->stride);
    t->numel = n;
    t->storage = st;
    t->refcount = 1;
    return t;
}

gg_tensor *gg_tensor_empty_like(const gg_tensor *t) {
    GG_CHECK_ARG(t, NULL);
    return gg__alloc_tensor(t->ndim, t->shape, __func__);
}

gg_tensor *gg_tensor_zeros_like(const gg_tensor *t) {
    GG_CHECK_ARG(t, NULL);
    return new_filled(t->ndim, t->shape, 0, true, __func__);
}

gg_tensor *gg_tensor_retain(gg_tensor *t) {
    if (t) t->refcount++;
    return t;
}

void gg_tensor_free(gg_tensor *t) {
    if (!t || --t->refcount > 0) return;
    gg_tensor_free(t->grad);
    gg_storage *st = t->storage;
    if (st && --st->refcount == 0) {
        if (st->owns_data) gg_free(st->data);
        gg__free_untracked(st);
    }
    gg__free_untracked(t);
}

bool gg_tensor_is_contiguous(const gg_tensor *t) {
    if (!t) return false;
    int64_t expect = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] == 1) continue;
        if (t->shape[d] == 0) return true;
        if (t->stride[d] != expect) return false;
        expect *= t->shape[d];
    }
    return true;
}

float *gg_tensor_data(const gg_tensor *t) { return t ? t->storage->data + t->offset : NULL; }

void gg_tensor_bump_version(gg_tensor *t) {
    if (t) t->storage->version++;
}

int64_t gg_tensor_size(const gg_tensor *t, int dim) {
    GG_CHECK_ARG(t, -1);
    int d = gg_normalize_dim(dim, t->ndim, 0, __func__);
    return d < 0 ? -1 : t->shape[d];
}

bool gg_tensor_same_shape(const gg_tensor *a, const gg_tensor *b) {
    if (!a || !b || a->ndim != b->ndim) return false;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return false;
    return true;
}

/* [lo, hi] storage element range a tensor can touch. */
static void extent(const gg_tensor *t, int64_t *lo, int64_t *hi) {
    *lo = *hi = t->offset;
    for (int d = 0; d < t->ndim; d++) {
        int64_t span = (t->shape[d] - 1) * t->stride[d];
        if (span < 0) *lo += span;
        else *hi += span;
    }
}

bool gg_tensor_may_overlap(const gg_tensor *a, const gg_tensor *b) {
    if (!a || !b || a->storage != b->storage || a->numel == 0 || b->numel == 0) return false;
    int64_t alo, ahi, blo, bhi;
    extent(a, &alo, &ahi);
    extent(b, &blo, &bhi);
    return alo <= bhi && blo <= ahi;
}

static int check_index(const gg_tensor *t, const int64_t *index, const char *func) {
    char s[GG_SHAPE_STR_MAX];
    if (t->ndim > 0 && !index) return gg_error_set(GG_ERR_ARG, func, "index is NULL");
    for (int d = 0; d < t->ndim; d++)
        if (index[d] < 0 || index[d] >= t->shape[d])
            return gg_error_set(GG_ERR_INDEX, func, "index %lld is out of range for dimension %d of %s",
                                (long long)index[d], d, GG_SHAPE_STR(t, s));
    return GG_OK;
}

int gg_tensor_get(const gg_tensor *t, const int64_t *index, float *out) {
    GG_CHECK_ARG(t, gg_last_status());
    if (!out) return GG_FAIL(GG_ERR_ARG, "out is NULL");
    int st = check_index(t, index, __func__);
    if (st) return st;
    *out = t->storage->data[gg_tensor_offset_of(t, index)];
    return GG_OK;
}

int gg_tensor_set(gg_tensor *t, const int64_t *index, float value) {
    GG_CHECK_ARG(t, gg_last_status());
    int st = check_index(t, index, __func__);
    if (st) return st;
    for (int d = 0; d < t->ndim; d++) {
        char s[GG_SHAPE_STR_MAX];
        if (t->stride[d] == 0 && t->shape[d] > 1)
            return GG_FAIL(GG_ERR_UNSUPPORTED,
                           "tensor %s is expanded along dimension %d: writing would change several elements",
                           GG_SHAPE_STR(t, s), d);
    }
    t->storage->data[gg_tensor_offset_of(t, index)] = value;
    t->storage->version++;
    return GG_OK;
}

int gg_tensor_item(const gg_tensor *t, float *out) {
    char s[GG_SHAPE_STR_MAX];
    GG_CHECK_ARG(t, gg_last_status());
    if (!out) return GG_FAIL(GG_ERR_ARG, "out is NULL");
    if (t->numel != 1)
        return GG_FAIL(GG_ERR_SHAPE, "tensor %s has %lld elements, expected exactly one", GG_SHAPE_STR(t, s),
                       (long long)t->numel);
    *out = t->storage->data[t->offset];
    return GG_OK;
}

/* ---- strided copy / accumulate engine ---- */

/* Rows r0..r1-1 of a merged index space (n >= 1 dims, the last one walked by the inner loop). */
static void strided_rows(int n, const int64_t *sh, float *dst, const int64_t *ds, const float *src,
                         const int64_t *ss, int64_t r0, int64_t r1, bool accumulate) {
    int64_t idx[GG_MAX_DIMS] = {0}, doff = 0, soff = 0, rem = r0;
    for (int d = n - 2; d >= 0; d--) {
        idx[d] = rem % sh[d];
        rem /= sh[d];
        doff += idx[d] * ds[d];
        soff += idx[d] * ss[d];
    }
    const int64_t len = sh[n - 1], di = ds[n - 1], si = ss[n - 1];
    for (int64_t r = r0; r < r1; r++) {
        float *restrict q = dst + doff;
        const float *restrict p = src + soff;
        if (accumulate) {
            if (di == 1 && si == 1)
                for (int64_t i = 0; i < len; i++) q[i] += p[i];
            else
                for (int64_t i = 0; i < len; i++) q[i * di] += p[i * si];
        } else if (di == 1 && si == 1) {
            memcpy(q, p, (size_t)len * sizeof(float));
        } else if (si == 0) {
            for (int64_t i = 0; i < len; i++) q[i * di] = p[0];
        } else {
            for (int64_t i = 0; i < len; i++) q[i * di] = p[i * si];
        }
        for (int d = n - 2; d >= 0; d--) { /* odometer over the outer dims */
            doff += ds[d];
            soff += ss[d];
            if (++idx[d] < sh[d]) break;
            doff -= sh[d] * ds[d];
            soff -= sh[d] * ss[d];
            idx[d] = 0;
        }
    }
}

/* Dimensions are ordered by decreasing dst stride (dst is walked in memory order, which matters for the
 * writes) and merged where both operands allow; rows are split over threads for large sizes. */
static void strided_apply(int nd, const int64_t *shape, float *dst, const int64_t *dstride, const float *src,
                          const int64_t *sstride, bool accumulate) {
    int64_t sh[GG_MAX_DIMS], ds[GG_MAX_DIMS], ss[GG_MAX_DIMS];
    int n = 0;
    for (int d = 0; d < nd; d++) {
        if (shape[d] == 0) return;
        if (shape[d] == 1) continue;
        int k = n++;
        for (; k > 0 && ds[k - 1] < dstride[d]; k--) sh[k] = sh[k - 1], ds[k] = ds[k - 1], ss[k] = ss[k - 1];
        sh[k] = shape[d], ds[k] = dstride[d], ss[k] = sstride[d];
    }
    int m = 0;
    for (int d = 0; d < n; d++) {
        if (m > 0 && ds[m - 1] == ds[d] * sh[d] && ss[m - 1] == ss[d] * sh[d]) {
            sh[m - 1] *= sh[d];
            ds[m - 1] = ds[d];
            ss[m - 1] = ss[d];
        } else {
            sh[m] = sh[d], ds[m] = ds[d], ss[m] = ss[d];
            m++;
        }
    }
    if (m == 0) {
        dst[0] = accumulate ? dst[0] + src[0] : src[0];
        return;
    }
    int64_t rows = 1;
    for (int d = 0; d < m - 1; d++) rows *= sh[d];
    if (rows * sh[m - 1] < (1 << 16) || rows < 2) {
        strided_rows(m, sh, dst, ds, src, ss, 0, rows, accumulate);
        return;
    }
#pragma omp parallel num_threads(gg_get_num_threads())
    {
#ifdef _OPENMP
        int nt = omp_get_num_threads(), id = omp_get_thread_num();
#else
        int nt = 1, id = 0;
#endif
        strided_rows(m, sh, dst, ds, src, ss, rows * id / nt, rows * (id + 1) / nt, accumulate);
    }
}

void gg__strided_copy(int ndim, const int64_t *shape, float *dst, const int64_t *dst_stride,
                      const float *src, const int64_t *src_stride) {
    strided_apply(ndim, shape, dst, dst_stride, src, src_stride, false);
}

void gg__strided_add(int ndim, const int64_t *shape, float *dst, const int64_t *dst_stride,
                     const float *src, const int64_t *src_stride) {
    strided_apply(ndim, shape, dst, dst_stride, src, src_stride, true);
}

gg_tensor *gg_tensor_copy(const gg_tensor *t) {
    GG_CHECK_ARG(t, NULL);
    gg_tensor *c = gg__alloc_tensor(t->ndim, t->shape, __func__);
    if (c) gg__strided_copy(t->ndim, t->shape, c->storage->data, c->stride, gg_tensor_data(t), t->stride);
    return c;
}

gg_tensor *gg_tensor_contiguous(const gg_tensor *t) {
    GG_CHECK_ARG(t, NULL);
    if (gg_tensor_is_contiguous(t)) return gg_tensor_retain((gg_tensor *)t);
    return gg_tensor_copy(t);
}

int gg_tensor_to_buffer(const gg_tensor *t, float *out, int64_t capacity) {
    char s[GG_SHAPE_STR_MAX];
    GG_CHECK_ARG(t, gg_last_status());
    if (!out && t->numel > 0) return GG_FAIL(GG_ERR_ARG, "out is NULL");
    if (capacity < t->numel)
        return GG_FAIL(GG_ERR_SHAPE, "buffer holds %lld floats, tensor %s has %lld", (long long)capacity,
                       GG_SHAPE_STR(t, s), (long long)t->numel);
    int64_t cstride[GG_MAX_DIMS];
    gg__contiguous_strides(t->ndim, t->shape, cstride);
    gg__strided_copy(t->ndim, t->shape, out, cstride, gg_tensor_data(t), t->stride);
    return GG_OK;
}

static int check_writable(const gg_tensor *t, const char *func) {
    char s[GG_SHAPE_STR_MAX];
    for (int d = 0; d < t->ndim; d++)
        if (t->stride[d] == 0 && t->shape[d] > 1)
            return gg_error_set(GG_ERR_UNSUPPORTED, func,
                                "destination %s is expanded (stride 0) along dimension %d: a write would "
                                "land on one element several times",
                                GG_SHAPE_STR(t, s), d);
    return GG_OK;
}

int gg_tensor_copy_into(gg_tensor *dst, const gg_tensor *src) {
    char a[GG_SHAPE_STR_MAX], b[GG_SHAPE_STR_MAX];
    GG_CHECK_ARG(dst, gg_last_status());
    GG_CHECK_ARG(src, gg_last_status());
    int st = check_writable(dst, __func__);
    if (st) return st;
    int nd;
    int64_t bshape[GG_MAX_DIMS];
    st = gg_broadcast_shapes(dst->ndim, dst->shape, src->ndim, src->shape, &nd, bshape, __func__);
    if (st) return st;
    if (nd != dst->ndim || memcmp(bshape, dst->shape, (size_t)nd * sizeof(int64_t)) != 0)
        return GG_FAIL(GG_ERR_SHAPE, "source %s does not broadcast to destination %s", GG_SHAPE_STR(src, a),
                       GG_SHAPE_STR(dst, b));
    gg_tensor *ex = gg_tensor_expand(src, dst->ndim, dst->shape);
    if (!ex) return gg_last_status();
    gg_tensor *tmp = NULL;
    if (gg_tensor_may_overlap(dst, ex)) { /* read all of src before writing any of dst */
        tmp = gg_tensor_copy(ex);
        if (!tmp) {
            gg_tensor_free(ex);
            return gg_last_status();
        }
    }
    const gg_tensor *from = tmp ? tmp : ex;
    gg__strided_copy(dst->ndim, dst->shape, gg_tensor_data(dst), dst->stride, gg_tensor_data(from),
                     from->stride);
    gg_tensor_free(tmp);
    gg_tensor_free(ex);
    dst->storage->version++;
    return GG_OK;
}

int gg_tensor_fill(gg_tensor *t, float value) {
    GG_CHECK_ARG(t, gg_last_status());
    int st = check_writable(t, __func__);
    if (st) return st;
    float v = value;
    int64_t zero[GG_MAX_DIMS] = {0};
    gg__strided_copy(t->ndim, t->shape, gg_tensor_data(t), t->stride, &v, zero);
    t->storage->version++;
    return GG_OK;
}

int gg_broadcast_shapes(int nda, const int64_t *a, int ndb, const int64_t *b, int *nd_out, int64_t *out,
                        const char *func) {
    const char *fn = func ? func : "gg_broadcast_shapes";
    char sa[GG_SHAPE_STR_MAX], sb[GG_SHAPE_STR_MAX];
    if (nda < 0 || nda > GG_MAX_DIMS || ndb < 0 || ndb > GG_MAX_DIMS || !nd_out || !out ||
        (nda && !a) || (ndb && !b))
        return gg_error_set(GG_ERR_ARG, fn, "bad shape arguments (ranks %d and %d)", nda, ndb);
    int nd = nda > ndb ? nda : ndb;
    int64_t res[GG_MAX_DIMS];
    for (int i = 0; i < nd; i++) {
        int ia = nda - nd + i, ib = ndb - nd + i;
        int64_t da = ia >= 0 ? a[ia] : 1, db = ib >= 0 ? b[ib] : 1;
        if (da < 0 || db < 0)
            return gg_error_set(GG_ERR_ARG, fn, "shapes %s and %s: sizes must not be negative",
                                gg_shape_str(nda, a, sa, sizeof sa), gg_shape_str(ndb, b, sb, sizeof sb));
        if (da == db || db == 1)
            res[i] = da;
        else if (da == 1)
            res[i] = db;
        else
            return gg_error_set(GG_ERR_SHAPE, fn,
                                "shapes %s and %s do not broadcast (dimension %d: %lld vs %lld)",
                                gg_shape_str(nda, a, sa, sizeof sa), gg_shape_str(ndb, b, sb, sizeof sb),
                                i - nd, (long long)da, (long long)db);
    }
    *nd_out = nd;
    memcpy(out, res, (size_t)nd * sizeof(int64_t));
    return GG_OK;
}
