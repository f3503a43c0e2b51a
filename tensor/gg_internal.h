/* Internal helpers shared by the tensor layer's sources (not installed). */
#ifndef GG_INTERNAL_H
#define GG_INTERNAL_H

#include "gg_error.h"
#include "gg_tensor.h"

/* Sticky NULL handling: a NULL tensor argument keeps an error already recorded (the one that produced
 * the NULL) and records a new one only when none is pending. */
int gg__null_arg(const char *func, const char *arg);
#define GG_CHECK_ARG(t, ret)                                    \
    do {                                                        \
        if (!(t)) {                                             \
            gg__null_arg(__func__, #t);                         \
            return ret;                                         \
        }                                                       \
    } while (0)

/* Shape of a tensor as "[2,3]" in a caller buffer of GG_SHAPE_STR_MAX bytes. */
#define GG_SHAPE_STR_MAX 200
#define GG_SHAPE_STR(t, buf) gg_shape_str((t)->ndim, (t)->shape, (buf), sizeof(buf))

/* A new header over t's storage (refcount taken) with the given geometry; NULL on allocation failure. */
gg_tensor *gg__view_header(const gg_tensor *t, int ndim, const int64_t *shape, const int64_t *stride,
                           int64_t offset);
/* Allocate a contiguous tensor whose shape was already validated. */
gg_tensor *gg__alloc_tensor(int ndim, const int64_t *shape, const char *func);
/* Blocks from the allocator's caches that do not count in the user-visible statistics (tensor headers,
 * storage records, graph nodes). Not zeroed. */
void *gg__alloc_untracked(size_t bytes);
void gg__free_untracked(void *p);
/* A zeroed tensor header / storage record from the cache; freed with gg__free_untracked. */
gg_tensor *gg__new_header(void);
gg_storage *gg__new_storage(void);

/* Contiguous row-major strides for a shape. */
void gg__contiguous_strides(int ndim, const int64_t *shape, int64_t *stride);

/* dst[i] = src[i] (copy) or dst[i] += src[i] (add) over an n-d index space with arbitrary element
 * strides (0 allowed in src; dst must not overlap itself or src). Dimensions are walked in dst's memory
 * order and merged where both operands allow; parallel for large sizes. */
void gg__strided_copy(int ndim, const int64_t *shape, float *dst, const int64_t *dst_stride,
                      const float *src, const int64_t *src_stride);
void gg__strided_add(int ndim, const int64_t *shape, float *dst, const int64_t *dst_stride,
                     const float *src, const int64_t *src_stride);

#endif
