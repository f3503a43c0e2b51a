/* groupgrad DGConv: the differentiable learning-to-group convolution of Zhang et al., "Differentiable
 * Learning-to-Group Channels via Groupable Convolutional Neural Networks" (ICCV 2019), with the semantics of
 * its public PyTorch layer (d-li14/dgconv.pytorch). The exact definition is /work/shared/DGCONV.md.
 *
 * Tutorial
 *   // C = 2^K channels in and out; K gate parameters; a dense weight, kept whole even where masked.
 *   gg_tensor *w = ..., *gt = gg_tensor_full(GG_SHAPE(K), 1e-8f);   // leaves requiring grad
 *   gg_conv2d_params p = gg_conv2d_make(1, 1, 1, 1);                  // 3x3, pad 1 (groups stays 1)
 *   gg_tensor *y = gg_dgconv2d(x, w, gt, bias, &p, NULL);             // [N,C,Ho,Wo], tape-owned
 *   gg_tensor *z = gg_dgconv_zeta(gt, GG_ZETA_CODE);                   // this layer's complexity
 *   double o = gg_dgconv_budget((int64_t[]){C}, 1, 32.0);              // a 32-group budget
 *   gg_tensor *loss = gg_dgconv_regularized_loss(ce, &z, 1, o, -0.02); // CE * (o / zeta)^a
 *   gg_backward(loss);                                                 // x, w, bias and gt get gradients
 *   int G, Cg;  gg_dgconv_group_info(gt, false, &G, &Cg, perm);        // the learned grouping
 *
 * The layer. Gates gt [K] give g[k] = (sign(gt[k]) + 1) / 2 (0.5 at gt == 0, as the reference), the
 * relation U = U_0 (x) U_1 (x) ... (x) U_{K-1} [C,C] with U_k = g[k] J + (1 - g[k]) I (2x2; gate 0 is the
 * outermost factor = the most significant bit of a channel index), the masked weight What = W * U[:,:,None,
 * None], and y = conv2d(x, What, bias). The gate gradient is straight-through and unclipped:
 * dL/dgt[k] = dL/dg[k], every other quantity evaluated at the binarised gates. For binary gates (no gate
 * exactly 0), U[o][i] = 1 iff ((o ^ i) & M0) == 0 with M0 the OR of 1 << (K-1-k) over gates with g = 0: a
 * grouped convolution with G = 2^(number of zero gates) groups of interleaved channels.
 *
 * Channel counts. C_in = C_out = C = 2^K with K = gates->numel (1 <= K <= 30); w is [C,C,R,S] and the
 * conv params must have groups == 1 (DGConv owns the grouping). The mixed-radix generalisation (square C
 * factored into J_c / I_c blocks of other sizes) is not supported: other channel counts are an error.
 *
 * Execution paths (gg_dgconv_opts.path):
 *   COMPOSITE  the definition, recorded op by op (sign_ste, kron chain, mul, conv2d): the oracle; works for
 *              any gate values, costs a dense convolution.
 *   FAST       one recorded op, "dgconv_fast": channel permutation pi -> grouped conv (G groups) ->
 *              inverse permutation. Forward and input gradient cost 1/G of the dense conv; the weight
 *              gradient is exact (zero at masked entries); the gate gradient also needs the masked blocks
 *              between channel groups one zero-gate bit apart: one grouped forward conv with log2(G) * C
 *              outputs (about log2(G) grouped passes, instead of the composite's dense weight gradient).
 *              Needs binary gates.
 *   AUTO       FAST when every gate is nonzero, COMPOSITE otherwise (the default).
 * Both paths give the same numbers up to float rounding.
 *
 * sort (off by default, as the reference GroupNet): the Kronecker factors are taken in the order "gates
 * with g = 0 first, then g = 1" (a stable sort on g, so a gate at 0.5 comes between), which makes the
 * groups contiguous; gradients return to each gate's own position in gt.
 *
 * Ownership and errors as every op (gg_ops.h): results belong to the current tape; a bad argument gives
 * NULL (or a negative status) and a message naming the function and the shapes, and records nothing; a
 * NULL input is sticky. */
#ifndef GG_DGCONV_H
#define GG_DGCONV_H

#include <stdbool.h>
#include <stdint.h>

#include "gg_autograd.h"
#include "gg_conv.h"
#include "gg_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum gg_dgconv_path {
    GG_DGCONV_AUTO,      /* FAST for binary gates, COMPOSITE otherwise */
    GG_DGCONV_COMPOSITE, /* the definition, op by op (the oracle) */
    GG_DGCONV_FAST,      /* permuted grouped conv, one op; an error if some gate is exactly 0 */
    GG_DGCONV_PATH_COUNT
} gg_dgconv_path;

typedef struct gg_dgconv_opts {
    bool sort;           /* zero-gate factors first (contiguous groups); default false */
    gg_dgconv_path path; /* default GG_DGCONV_AUTO */
} gg_dgconv_opts;

/* sort false, path AUTO. */
gg_dgconv_opts gg_dgconv_default(void);

/* x [N,C,H,W], w [C,C,R,S], gates [K] with C = 2^K, bias [C] or NULL; p NULL means gg_conv2d_default()
 * (stride, padding, dilation, pad_same as gg_conv2d; groups must be 1); opts NULL means defaults.
 * -> y [N,C,Ho,Wo], tape-owned. Gradients reach x, w, bias and gates (straight-through). */
gg_tensor *gg_dgconv2d(gg_tensor *x, gg_tensor *w, gg_tensor *gates, gg_tensor *bias, const gg_conv2d_params *p,
                       const gg_dgconv_opts *opts);

/* The relation U [C,C] (indexed [out][in]) of gates [K], built with differentiable ops (tape-owned). */
gg_tensor *gg_dgconv_relation(gg_tensor *gates, bool sort);

/* The grouping of binary gates (an error if some gate is exactly 0, i.e. g = 0.5): *groups = G =
 * 2^(number of zero gates), *group_size = C / G, and, if perm is not NULL, perm[c] (C entries) = the
 * position of channel c in grouped order, so that channels o and i are connected iff perm[o] / group_size
 * == perm[i] / group_size. perm puts the bits of c at zero-gate factor positions (in order) above the bits
 * at one-gate positions; with sort it is the identity (contiguous groups). Any output may be NULL.
 * Returns GG_OK or a negative status. */
int gg_dgconv_group_info(const gg_tensor *gates, bool sort, int *groups, int *group_size, int *perm);

typedef enum gg_zeta_form {
    GG_ZETA_CODE,  /* the reference code: 2^(K + sum g), dzeta/dgt[k] = ln(2) * zeta */
    GG_ZETA_PAPER, /* paper Eq. 9: C * prod(1 + g[k]), dzeta/dgt[k] = zeta / (1 + g[k]) */
    GG_ZETA_FORM_COUNT
} gg_zeta_form;

/* zeta = the number of ones in U for binary gates (a layer's parameter count is R*S*zeta, its MACs
 * R*S*Ho*Wo*zeta per sample), as a differentiable rank-0 tensor (tape-owned); the gradient w.r.t. gt goes
 * straight through the binarisation (dzeta/dgt = dzeta/dg). */
gg_tensor *gg_dgconv_zeta(gg_tensor *gates, gg_zeta_form form);

/* L = ce * (o / zeta)^e with zeta = the sum of zetas[0..n-1] (each a single element), e = a when
 * zeta > o and 0 otherwise (the reference uses a = -0.02). ce may have any shape (usually a scalar);
 * o > 0. Tape-owned; differentiable in ce and in every zeta. */
gg_tensor *gg_dgconv_regularized_loss(gg_tensor *ce, gg_tensor *const *zetas, int n, double o, double a);

/* The budget o = sum_l channels[l]^2 / b (b = 32: a 32-group budget). n >= 1, channels > 0, b > 0;
 * returns a negative value with an error recorded on a bad argument. */
double gg_dgconv_budget(const int64_t *channels, int n, double b);

#ifdef __cplusplus
}
#endif
#endif
