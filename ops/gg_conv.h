/* groupgrad convolution family: 2-D convolution (NCHW float32) with PyTorch's semantics.
 *
 * Tutorial
 *   gg_conv2d_params p = gg_conv2d_default();          // stride 1, no padding, dilation 1, groups 1
 *   gg_conv2d_set_pad(&p, 1, 1);                        // 1 row top and bottom, 1 column left and right
 *   gg_tensor *y = gg_conv2d(x, w, b, &p);              // x [N,C,H,W], w [K,C/G,R,S], b [K] or NULL
 *
 * y[n,k,ho,wo] = b[k] + sum_{c,r,s} w[k,c,r,s] * x[n, g*C/G + c, ho*sh - pt + r*dh, wo*sw - pl + s*dw]
 * with g = k / (K/G) the group of output channel k, zero outside the input (cross-correlation, as
 * torch.nn.functional.conv2d). Output sizes:
 *   Ho = (H + pt + pb - dh*(R-1) - 1) / sh + 1,   Wo = (W + pl + pr - dw*(S-1) - 1) / sw + 1.
 *
 * Ownership and errors as every op (gg_ops.h): the result belongs to the current tape; a bad argument
 * gives NULL and a message naming gg_conv2d and all shapes; a NULL input is sticky. The backward computes
 * only the gradients that are needed (dx if x requires grad, dw if w does, db if the bias does). */
#ifndef GG_CONV_H
#define GG_CONV_H

#include <stdbool.h>

#include "gg_autograd.h"
#include "gg_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gg_conv2d_params {
    int stride[2];   /* vertical, horizontal; >= 1 */
    int pad[4];      /* top, bottom, left, right; >= 0 (ignored when pad_same) */
    int dilation[2]; /* vertical, horizontal; >= 1 */
    int groups;      /* G >= 1, divides C and K */
    /* PyTorch padding='same': total padding dilation*(kernel-1) per dimension, the odd extra row or column
     * at the bottom/right; requires stride 1. */
    bool pad_same;
} gg_conv2d_params;

/* stride 1, pad 0, dilation 1, groups 1, pad_same false. */
gg_conv2d_params gg_conv2d_default(void);
/* Symmetric padding: pad_h rows at top and bottom, pad_w columns at left and right (clears pad_same). */
void gg_conv2d_set_pad(gg_conv2d_params *p, int pad_h, int pad_w);
/* Shorthand for the common square case: stride, symmetric padding, dilation (all the same in both
 * dimensions) and groups. */
gg_conv2d_params gg_conv2d_make(int stride, int pad, int dilation, int groups);

/* x [N,C,H,W], w [K,C/G,R,S], bias [K] or NULL; p NULL means gg_conv2d_default(). -> [N,K,Ho,Wo].
 * Inputs may have any strides. */
gg_tensor *gg_conv2d(gg_tensor *x, gg_tensor *w, gg_tensor *bias, const gg_conv2d_params *p);

/* Kernel selection, like torch.backends.cudnn.benchmark. Off (the default): each pass of a convolution
 * runs the kernel that fixed rules pick for its geometry and the thread count, so results are identical in
 * every run and every process. On: the first time a geometry is seen at a thread count, every applicable
 * kernel is timed on the real buffers and the clearly fastest is kept for the rest of the process -- a
 * few percent faster on some shapes, but which kernel wins (and so the last bits of the results) may differ
 * between processes. Changing the setting forgets the choices made so far. Returns the previous setting. */
bool gg_conv_set_benchmark(bool on);
bool gg_conv_get_benchmark(void);

#ifdef __cplusplus
}
#endif
#endif
