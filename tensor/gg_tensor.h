/* groupgrad tensors: float32 n-d arrays (rank 0..8) as shape + element strides + offset over refcounted
 * storage, with zero-copy views, NumPy broadcasting and printing.
 *
 * Tutorial
 *   gg_tensor *x = gg_tensor_arange(0, 12, 1);                 // [12]: 0 1 2 ... 11
 *   gg_tensor *m = gg_tensor_view(x, GG_SHAPE(3, 4));          // [3,4] view, shares x's storage
 *   gg_tensor *t = gg_tensor_transpose(m, 0, 1);               // [4,3] view, strides (1,4)
 *   gg_tensor *c = gg_tensor_contiguous(t);                    // copies: t is not contiguous
 *   gg_tensor_print(c);
 *   gg_tensor_free(c); gg_tensor_free(t); gg_tensor_free(m); gg_tensor_free(x);
 *
 * Dimension letters used across groupgrad: N batch, C input channels, K output channels, H, W spatial
 * height/width, R, S kernel height/width, G groups.
 *
 * Ownership: every function that returns a gg_tensor* returns a new reference owned by the caller, who
 * releases it with gg_tensor_free (a no-op on NULL). A view is a new tensor header over the same storage:
 * writes through a view are visible in its base, and the storage lives until its last view is freed.
 * Functions never modify their const inputs.
 *
 * Errors: functions return NULL or a negative gg_status and record a message (see gg_error.h). Negative
 * dimension arguments count from the end, as in NumPy/PyTorch. */
#ifndef GG_TENSOR_H
#define GG_TENSOR_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "gg_error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GG_MAX_DIMS 8

/* Shape literal for the (ndim, shape) argument pairs: gg_tensor_zeros(GG_SHAPE(2, 3)). */
#define GG_SHAPE(...) \
    (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (const int64_t[]){__VA_ARGS__}

/* Refcounted buffer of floats. `version` counts in-place writes through any view (autograd uses it to
 * detect a tensor modified after it was saved for backward). */
typedef struct gg_storage {
    float *data;
    int64_t numel;     /* capacity in elements */
    int refcount;
    bool owns_data;    /* false for gg_tensor_from_buffer: the caller keeps the buffer alive */
    uint64_t version;
} gg_storage;

typedef struct gg_tensor {
    int ndim;
    int64_t shape[GG_MAX_DIMS];
    int64_t stride[GG_MAX_DIMS]; /* in elements; 0 along broadcast (expanded) dimensions */
    int64_t offset;              /* element offset of index (0,...,0) into storage->data */
    int64_t numel;               /* product of shape (1 for rank 0) */
    gg_storage *storage;
    int refcount;
    /* autograd (see autograd/gg_autograd.h); all zero for plain tensors */
    bool requires_grad;          /* leaf: accumulate into grad; op output: has a grad_fn */
    bool retains_grad;           /* non-leaf that keeps its gradient in grad */
    struct gg_tensor *grad;      /* accumulated gradient, owned by this tensor; NULL until a backward */
    struct gg_node *grad_fn;     /* op that produced this tensor (owned by its tape); NULL for leaves */
} gg_tensor;

/* ---- construction (caller owns the result) ---- */
/* Uninitialised contents. ndim in [0, 8]; sizes >= 0 (0 gives an empty tensor). */
gg_tensor *gg_tensor_empty(int ndim, const int64_t *shape);
gg_tensor *gg_tensor_zeros(int ndim, const int64_t *shape);
gg_tensor *gg_tensor_ones(int ndim, const int64_t *shape);
gg_tensor *gg_tensor_full(int ndim, const int64_t *shape, float value);
/* Rank-0 tensor holding `value`. */
gg_tensor *gg_tensor_scalar(float value);
/* 1-D [start, stop) in steps of `step` (non-zero), ceil((stop - start) / step) elements, as torch.arange. */
gg_tensor *gg_tensor_arange(double start, double stop, double step);
/* Copy prod(shape) floats from `data` (row-major). */
gg_tensor *gg_tensor_from_data(int ndim, const int64_t *shape, const float *data);
/* Wrap `data` without copying: the caller keeps it alive (and 4-byte aligned) while any view exists. */
gg_tensor *gg_tensor_from_buffer(int ndim, const int64_t *shape, float *data);
/* Same shape as `t`, uninitialised / zero-filled, contiguous. */
gg_tensor *gg_tensor_empty_like(const gg_tensor *t);
gg_tensor *gg_tensor_zeros_like(const gg_tensor *t);

/* Take another reference (returns t). */
gg_tensor *gg_tensor_retain(gg_tensor *t);
/* Drop a reference; frees the header (and its .grad) with its last reference and the storage with its
 * last view. */
void gg_tensor_free(gg_tensor *t);

/* ---- views (share storage; caller owns the new header) ---- */
/* Reshape without copying; one size may be -1 (inferred). Fails if the strides cannot express it. */
gg_tensor *gg_tensor_view(const gg_tensor *t, int ndim, const int64_t *shape);
/* Reshape: a view when the strides allow, otherwise a contiguous copy. */
gg_tensor *gg_tensor_reshape(const gg_tensor *t, int ndim, const int64_t *shape);
/* Dimension d of the result is dimension perm[d] of t; perm has t->ndim distinct entries. */
gg_tensor *gg_tensor_permute(const gg_tensor *t, const int *perm);
gg_tensor *gg_tensor_transpose(const gg_tensor *t, int dim0, int dim1);
/* Elements start, start+step, ... < stop along `dim` (step > 0). Negative start/stop count from the end
 * once; after that both must lie in [0, size] (out-of-range bounds are an error, not clamped). */
gg_tensor *gg_tensor_slice(const gg_tensor *t, int dim, int64_t start, int64_t stop, int64_t step);
/* Index `index` along `dim`, removing that dimension. */
gg_tensor *gg_tensor_select(const gg_tensor *t, int dim, int64_t index);
/* Broadcast to `shape` (stride 0 along new or size-1 dims); -1 keeps a size. NumPy rules. */
gg_tensor *gg_tensor_expand(const gg_tensor *t, int ndim, const int64_t *shape);
#define gg_tensor_broadcast_to gg_tensor_expand
/* Remove dimension `dim` (must have size 1); GG_ALL_DIMS removes every size-1 dimension. */
#define GG_ALL_DIMS (-128)
gg_tensor *gg_tensor_squeeze(const gg_tensor *t, int dim);
/* Insert a size-1 dimension at `dim` in [-(ndim+1), ndim]. */
gg_tensor *gg_tensor_unsqueeze(const gg_tensor *t, int dim);
/* Merge dimensions start..end (inclusive) into one: a view when possible, otherwise a copy. */
gg_tensor *gg_tensor_flatten(const gg_tensor *t, int start_dim, int end_dim);

/* ---- copies ---- */
/* `t` itself (a new reference) if it is contiguous, otherwise a contiguous copy. */
gg_tensor *gg_tensor_contiguous(const gg_tensor *t);
/* Deep contiguous copy. */
gg_tensor *gg_tensor_copy(const gg_tensor *t);
/* dst[...] = src broadcast to dst's shape. dst must not have broadcast (stride-0) dimensions. Overlapping
 * storage is handled (src is read completely before dst is written). */
int gg_tensor_copy_into(gg_tensor *dst, const gg_tensor *src);
int gg_tensor_fill(gg_tensor *t, float value);
/* Copy the elements in row-major order into out[0 .. numel-1]. */
int gg_tensor_to_buffer(const gg_tensor *t, float *out, int64_t capacity);

/* ---- access ---- */
bool gg_tensor_is_contiguous(const gg_tensor *t);
/* Address of element (0,...,0). Direct pointer arithmetic is valid only with t->stride. */
float *gg_tensor_data(const gg_tensor *t);
int gg_tensor_get(const gg_tensor *t, const int64_t *index, float *out);
int gg_tensor_set(gg_tensor *t, const int64_t *index, float value);
/* The single element of a tensor with numel == 1. */
int gg_tensor_item(const gg_tensor *t, float *out);
/* Storage offset of a multi-index; no bounds check (kernels). */
static inline int64_t gg_tensor_offset_of(const gg_tensor *t, const int64_t *index) {
    int64_t off = t->offset;
    for (int d = 0; d < t->ndim; d++) off += index[d] * t->stride[d];
    return off;
}
/* Record an in-place modification of t's storage (bumps the version counter). */
void gg_tensor_bump_version(gg_tensor *t);
int64_t gg_tensor_size(const gg_tensor *t, int dim); /* -1 (and an error) for a bad dim */
bool gg_tensor_same_shape(const gg_tensor *a, const gg_tensor *b);
/* True if a and b may share elements (same storage and overlapping extents). */
bool gg_tensor_may_overlap(const gg_tensor *a, const gg_tensor *b);

/* ---- shapes ---- */
/* NumPy broadcasting of two shapes into out (room for GG_MAX_DIMS); fails with GG_ERR_SHAPE. `func`
 * names the caller in the error message (NULL: this function's name). */
int gg_broadcast_shapes(int nda, const int64_t *a, int ndb, const int64_t *b, int *nd_out,
                        int64_t *out, const char *func);
/* Number of elements of a shape, or -1 (and GG_ERR_ARG / GG_ERR_OVERFLOW recorded) if a size is
 * negative or the data would not be addressable (more than 2^61 elements). A shape with a zero size has
 * 0 elements whatever the others are. */
int64_t gg_shape_numel(int ndim, const int64_t *shape, const char *func);
/* Format a shape as "[2,3,4]" into buf; returns buf. */
char *gg_shape_str(int ndim, const int64_t *shape, char *buf, size_t size);
/* Normalise a possibly negative dim for rank `ndim` (`extra` = 1 for insert positions); -1 and an
 * error naming `func` if out of range. */
int gg_normalize_dim(int dim, int ndim, int extra, const char *func);

/* ---- printing ---- */
/* NumPy-style: nested brackets, aligned columns, "..." elision beyond 1000 elements (3 edge items). */
int gg_tensor_fprint(FILE *f, const gg_tensor *t);
int gg_tensor_print(const gg_tensor *t);
/* Same text into buf (always NUL-terminated); returns the length it needed, or a negative status. */
int gg_tensor_format(const gg_tensor *t, char *buf, size_t size);

#ifdef __cplusplus
}
#endif
#endif
