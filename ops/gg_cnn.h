/* groupgrad CNN training ops: pooling, batch normalisation and dropout (NCHW float32, PyTorch 1.13's
 * CPU semantics, including its tie, NaN and rounding-mode rules).
 *
 * Tutorial
 *   const int k3[2] = {3, 3}, s2[2] = {2, 2}, p1[2] = {1, 1};
 *   gg_tensor *y = gg_batch_norm2d(x, gamma, beta, rmean, rvar, true, 0.1f, 1e-5f); // updates rmean/rvar
 *   y = gg_relu(y);
 *   y = gg_max_pool2d(y, k3, s2, p1, NULL, false);          // ResNet stem pooling
 *   y = gg_global_avg_pool2d(y);                            // [N,C,1,1]
 *   y = gg_dropout(y, 0.5f, true, NULL);                    // default generator
 *
 * Pooling geometry (per spatial dimension; kernel k, stride s, padding p, dilation d, input size H):
 *   Ho = floor((H + 2p - d(k-1) - 1 + (ceil_mode ? s-1 : 0)) / s) + 1, then in ceil_mode Ho -= 1 if the
 *   last window would start at or past H + p (it must start inside the input or the left padding).
 *   Window (ho) covers input rows ho*s - p + r*d, r < k. Requirements (as PyTorch): k >= 1, s >= 1,
 *   d >= 1, 0 <= p <= k/2 (integer division), Ho >= 1 and Wo >= 1, C, H, W >= 1 (N may be 0).
 *   stride NULL means stride = kernel (PyTorch's default), pad NULL means 0, dilation NULL means 1.
 *   Arrays are {vertical, horizontal}.
 *
 * Ownership and errors as every op (gg_ops.h): results belong to the current tape (except where an op
 * returns its input itself, said below); a bad argument gives NULL and a message naming the function and
 * the shapes, and records and allocates nothing; a NULL input is sticky. Inputs may have any strides.
 * Backward computes only the gradients that are needed and adds them into the gradient buffers. */
#ifndef GG_CNN_H
#define GG_CNN_H

#include <stdbool.h>
#include <stdint.h>

#include "gg_autograd.h"
#include "gg_rng.h"
#include "gg_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- pooling (ops/pool.c) ---- */

/* y[n,c,ho,wo] = max over the window of x, padding counting as -inf (a window holding no input element
 * gives -inf and passes no gradient). The maximum is the first one in row-major window order; a NaN
 * in the window wins (the last NaN), as torch.nn.functional.max_pool2d. Backward routes each output
 * gradient to that element (an int32 index per output is saved when recording). x [N,C,H,W] ->
 * [N,C,Ho,Wo]; a plane H*W must be < 2^31 elements when recording. */
gg_tensor *gg_max_pool2d(gg_tensor *x, const int kernel[2], const int stride[2], const int pad[2],
                         const int dilation[2], bool ceil_mode);

/* y = sum of the window's input elements / divisor. With the window clipped to the padded input
 * [-p, H+p) giving pool_size elements and to the input [0, H) giving n_in elements, the divisor is
 * pool_size if count_include_pad else n_in (PyTorch's rule: in ceil_mode a window hanging past the
 * right padding does not count the overhang, even with count_include_pad). Dilation 1. */
gg_tensor *gg_avg_pool2d(gg_tensor *x, const int kernel[2], const int stride[2], const int pad[2],
                         bool ceil_mode, bool count_include_pad);

/* y[n,c,i,j] = mean of x[n,c, h0:h1, w0:w1] with h0 = floor(i*H/out_h), h1 = ceil((i+1)*H/out_h) (same
 * for w), as torch.nn.functional.adaptive_avg_pool2d (computed with exact integer division; PyTorch
 * divides in float, which differs only when i*H exceeds 2^24). out_h, out_w >= 0 (0 gives an empty
 * output); H, W >= 1; N and C may be 0. Windows may overlap (out > H upsamples). */
gg_tensor *gg_adaptive_avg_pool2d(gg_tensor *x, int64_t out_h, int64_t out_w);

/* Mean over H, W: x [N,C,H,W] -> [N,C,1,1] (adaptive_avg_pool2d to 1x1, which PyTorch computes as
 * x.mean((-2,-1), keepdim)). H, W >= 1. */
gg_tensor *gg_global_avg_pool2d(gg_tensor *x);

/* ---- batch normalisation (ops/batchnorm.c) ---- */

/* x [N,C,H,W]; weight, bias, running_mean, running_var [C] or NULL (any strides).
 *   training: mean, var = batch mean and biased variance of x over N,H,W per channel (needs more than
 *     one value per channel unless x is empty), y = (x - mean) / sqrt(var + eps) * weight + bias, and,
 *     when running stats are given (both or neither), in place and outside the graph:
 *       running_mean = (1 - momentum) * running_mean + momentum * mean
 *       running_var  = (1 - momentum) * running_var + momentum * var * n / (n - 1)   (n = N*H*W)
 *     (their version counters are bumped; an empty x leaves them unchanged, as PyTorch).
 *   eval: the same normalisation with running_mean and running_var (both required), no update.
 * weight NULL means 1, bias NULL means 0. Backward gives x, weight and bias their gradients: training
 * mode differentiates through the batch statistics, eval mode treats the running stats as constants
 * (the values used in the forward are saved, so later updates of the buffers do not matter).
 * Requirements: eps >= 0, 0 <= momentum <= 1, running stats must not require grad and must not be
 * expanded (stride 0). Statistics are accumulated in double; results do not depend on the thread count. */
gg_tensor *gg_batch_norm2d(gg_tensor *x, gg_tensor *weight, gg_tensor *bias, gg_tensor *running_mean,
                           gg_tensor *running_var, bool training, float momentum, float eps);

/* ---- dropout (ops/dropout.c) ---- */

/* Inverted dropout. training and 0 < p < 1: y = x * m / (1 - p), m[i] = 1 when U[i] >= p, else 0, where
 * U is what gg_rand_uniform(t, 0, 1, rng) would draw for a tensor of x's shape in row-major order
 * (counter-based: the same for any thread count; the generator advances by ceil(numel / 4)). rng NULL
 * uses the default generator. p == 1 gives y = x * 0 (zeros; NaN/Inf give NaN, as PyTorch). Backward:
 * dx += dy * m / (1 - p) (a byte mask is saved when recording).
 * !training, p == 0 or an empty x: returns x itself (not a new tensor; no generator draw).
 * p must lie in [0, 1]. */
gg_tensor *gg_dropout(gg_tensor *x, float p, bool training, gg_rng *rng);

#ifdef __cplusplus
}
#endif
#endif
