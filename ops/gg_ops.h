/* groupgrad differentiable ops. Each op returns a tensor owned by the current tape (see gg_autograd.h),
 * records a graph node when an input requires a gradient and grad mode is on, and accepts inputs of any
 * strides (views, expanded tensors). On a bad argument an op returns NULL, records a message naming the
 * op and the shapes, and records nothing; given a NULL input it returns NULL and keeps the earlier message
 * (sticky errors), so a chain of ops can be checked once at its end.
 * Binary elementwise ops broadcast their inputs with NumPy rules; their backward sums the gradient back to
 * each input's shape. Axis arguments may be negative (counted from the end). */
#ifndef GG_OPS_H
#define GG_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "gg_autograd.h"
#include "gg_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- elementwise (ops/elementwise.c) ---- */
gg_tensor *gg_add(gg_tensor *a, gg_tensor *b);
gg_tensor *gg_sub(gg_tensor *a, gg_tensor *b);
gg_tensor *gg_mul(gg_tensor *a, gg_tensor *b);
gg_tensor *gg_div(gg_tensor *a, gg_tensor *b);
gg_tensor *gg_neg(gg_tensor *x);
gg_tensor *gg_add_scalar(gg_tensor *x, float s); /* x + s */
gg_tensor *gg_mul_scalar(gg_tensor *x, float s); /* x * s */
gg_tensor *gg_rsub_scalar(gg_tensor *x, float s); /* s - x */
gg_tensor *gg_rdiv_scalar(gg_tensor *x, float s); /* s / x */
gg_tensor *gg_exp(gg_tensor *x);
gg_tensor *gg_log(gg_tensor *x);
gg_tensor *gg_sqrt(gg_tensor *x);
gg_tensor *gg_square(gg_tensor *x);
gg_tensor *gg_pow(gg_tensor *x, float p); /* x^p, scalar exponent */
gg_tensor *gg_abs(gg_tensor *x);          /* gradient sign(x), 0 at 0 (as PyTorch) */
gg_tensor *gg_relu(gg_tensor *x);         /* gradient 0 at 0 (as PyTorch) */
gg_tensor *gg_leaky_relu(gg_tensor *x, float negative_slope);
gg_tensor *gg_sigmoid(gg_tensor *x);
gg_tensor *gg_tanh(gg_tensor *x);
/* min(max(x, lo), hi); gradient 1 where lo <= x <= hi (as PyTorch), else 0. lo <= hi. */
gg_tensor *gg_clamp(gg_tensor *x, float lo, float hi);
/* sign(x) in {-1, 0, 1} forward; straight-through (identity, unclipped) backward: dL/dx = dL/dy. */
gg_tensor *gg_sign_ste(gg_tensor *x);

/* ---- reductions (ops/reduce.c) ----
 * axes: n_axes distinct dims (negative allowed); axes == NULL or n_axes == 0 reduces over all dims.
 * keepdim keeps reduced dims with size 1. Accumulation in double. */
gg_tensor *gg_sum(gg_tensor *x, const int *axes, int n_axes, bool keepdim);
gg_tensor *gg_mean(gg_tensor *x, const int *axes, int n_axes, bool keepdim);
/* Max/min over the axes; the gradient goes to the first extremal element of each group (ties). */
gg_tensor *gg_max(gg_tensor *x, const int *axes, int n_axes, bool keepdim);
gg_tensor *gg_min(gg_tensor *x, const int *axes, int n_axes, bool keepdim);
/* Variance with `correction` (0: biased, 1: unbiased, as torch.var). */
gg_tensor *gg_var(gg_tensor *x, const int *axes, int n_axes, int correction, bool keepdim);

/* ---- shape (ops/shape.c): views where possible, sharing storage with their input ---- */
gg_tensor *gg_reshape(gg_tensor *x, int ndim, const int64_t *shape);
gg_tensor *gg_permute(gg_tensor *x, const int *perm);
gg_tensor *gg_transpose(gg_tensor *x, int dim0, int dim1);
gg_tensor *gg_slice(gg_tensor *x, int dim, int64_t start, int64_t stop, int64_t step);
gg_tensor *gg_expand(gg_tensor *x, int ndim, const int64_t *shape);
gg_tensor *gg_squeeze(gg_tensor *x, int dim);
gg_tensor *gg_unsqueeze(gg_tensor *x, int dim);
/* Join n tensors along an existing dim (concat) or a new dim (stack); shapes must agree elsewhere. */
gg_tensor *gg_concat(gg_tensor *const *xs, int n, int dim);
gg_tensor *gg_stack(gg_tensor *const *xs, int n, int dim);
/* Constant padding as torch.nn.functional.pad: pads = (before, after) pairs, the first pair for the last
 * dim, the next for the one before it, ...; n_pads even, at most 2 * ndim. Negative pads crop. */
gg_tensor *gg_pad(gg_tensor *x, const int64_t *pads, int n_pads, float value);

/* ---- linear algebra (ops/matmul.c, BLIS underneath) ---- */
/* a [.., M, K] @ b [.., K, N] -> [.., M, N]; batch dims broadcast; 1-D operands as torch.matmul.
 * Transposed (or otherwise strided) operands are passed to BLIS as strides, without copies. */
gg_tensor *gg_matmul(gg_tensor *a, gg_tensor *b);
/* x [.., in] W^T + b: w [out, in], b [out] or NULL. */
gg_tensor *gg_linear(gg_tensor *x, gg_tensor *w, gg_tensor *b);
/* 2-D Kronecker product: a [p, q], b [r, s] -> [p*r, q*s]; differentiable in both factors. */
gg_tensor *gg_kron(gg_tensor *a, gg_tensor *b);

/* ---- classification (ops/softmax.c) ---- */
gg_tensor *gg_softmax(gg_tensor *x, int dim);
gg_tensor *gg_log_softmax(gg_tensor *x, int dim); /* stable: x - max - log(sum(exp(x - max))) */

typedef enum gg_reduction { GG_REDUCE_MEAN, GG_REDUCE_SUM, GG_REDUCE_NONE } gg_reduction;
/* Fused cross-entropy from logits [N, C] and integer class labels[N] in [0, C) (as
 * torch.nn.functional.cross_entropy with label_smoothing in [0, 1]). NONE returns [N], the others a
 * scalar. Gradient only w.r.t. the logits. */
gg_tensor *gg_cross_entropy(gg_tensor *logits, const int32_t *labels, int64_t n_labels, gg_reduction reduction,
                            float label_smoothing);

#ifdef __cplusplus
}
#endif
#endif
