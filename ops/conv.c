/* gg_conv2d: 2-D convolution (NCHW float32, PyTorch semantics) as a differentiable op: argument checks,
 * a per-shape plan that picks a kernel, and the forward/backward dispatch. Kernels: ops/conv_ref.c.
 *
 *   y[n,k,ho,wo] = b[k] + sum_{c<C/G, r<R, t<S} w[k,c,r,t] * x[n, g*C/G + c, ho*sh - pt + r*dh, wo*sw - pl +
 * t*dw] dx[n, g*C/G + c, hi, wi] = sum over (k in group g, r, t, ho, wo) hitting (hi, wi) of dy[n,k,ho,wo] *
 * w[k,c,r,t] dw[k,c,r,t] = sum_{n,ho,wo} dy[n,k,ho,wo] * x[n, g*C/G + c, ho*sh - pt + r*dh, wo*sw - pl +
 * t*dw] db[k] = sum_{n,ho,wo} dy[n,k,ho,wo] x [N,C,H,W], w [K,C/G,R,S], b [K], y [N,K,Ho,Wo]; g = k / (K/G).
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "gg_alloc.h"
#include "gg_conv.h"
#include "gg_conv_kernels.h"
#include "gg_internal.h"
#include "gg_node.h"

#define FN "gg_conv2d"

gg_conv2d_params gg_conv2d_default(void) {
    return (gg_conv2d_params){
        .stride = {1, 1}, .pad = {0, 0, 0, 0}, .dilation = {1, 1}, .groups = 1, .pad_same = false};
}

void gg_conv2d_set_pad(gg_conv2d_params *p, int pad_h, int pad_w) {
    if (!p) return;
    p->pad[0] = p->pad[1] = pad_h;
    p->pad[2] = p->pad[3] = pad_w;
    p->pad_same = false;
}

gg_conv2d_params gg_conv2d_make(int stride, int pad, int dilation, int groups) {
    gg_conv2d_params p = gg_conv2d_default();
    p.stride[0] = p.stride[1] = stride;
    gg_conv2d_set_pad(&p, pad, pad);
    p.dilation[0] = p.dilation[1] = dilation;
    p.groups = groups;
    return p;
}

/* ---- plan: which kernel, and how many samples per GEMM, for one geometry ---- */

typedef struct conv_plan {
    gg_conv2d_shape key;
    gg_conv_algo algo[3]; /* forward, data gradient, weight gradient; never AUTO */
    int64_t nb;           /* samples per GEMM chunk */
    bool used;
} conv_plan;

enum { PASS_FWD, PASS_DATA, PASS_WEIGHT };

#define PLAN_SLOTS 32
static _Thread_local conv_plan plan_cache[PLAN_SLOTS];
static _Thread_local unsigned plan_next;
static _Atomic int forced_algo = GG_CONV_ALGO_AUTO;

gg_conv_algo gg__conv2d_force_algo(gg_conv_algo algo) {
    if ((int)algo < 0 || algo >= GG_CONV_ALGO_COUNT) algo = GG_CONV_ALGO_AUTO;
    return (gg_conv_algo)atomic_exchange(&forced_algo, (int)algo);
}

/* Samples per GEMM: enough that each group's GEMM does ~4 MFLOP (BLIS costs ~1 us per call, so tiny
 * per-sample per-group GEMMs would be all overhead), but at most ~4 MiB of im2col columns; then spread
 * evenly over the chunks. */
int64_t gg__conv2d_gemm_batch(const gg_conv2d_shape *s) {
    const int64_t CRS = s->C / s->G * s->R * s->S, Kg = s->K / s->G, P = s->Ho * s->Wo;
    const double flops_per_sample = 2.0 * (double)Kg * (double)CRS * (double)P;
    const double target_flops = 4e6, max_col_bytes = 4.0 * 1024 * 1024;
    int64_t nb = flops_per_sample > 0 ? (int64_t)(target_flops / flops_per_sample + 1.0) : 1;
    int64_t cap = (int64_t)(max_col_bytes / (4.0 * (double)(CRS * P > 0 ? CRS * P : 1)));
    if (nb > cap) nb = cap;
    if (nb > s->N) nb = s->N;
    if (nb < 1) nb = 1;
    int64_t chunks = (s->N + nb - 1) / nb;
    if (chunks < 1) chunks = 1;
    nb = (s->N + chunks - 1) / chunks;
    return nb < 1 ? 1 : nb;
}

/* Rules from interleaved timings of both kernels (bench shapes: ResNet-style layers 7x7 .. 56x56, dense,
 * groups 4 and 8, depthwise, 1x1, stride 2; one thread):
 *  - forward and data gradient: the direct kernel wins for 3x3-like kernels at every group size (by
 *    1.2-1.6x dense and 10-30x depthwise, where the GEMMs degenerate), as long as one group's input planes
 *    stay in L2; im2col + GEMM wins for 1x1 convolutions with many channels (no im2col needed there).
 *  - weight gradient: the direct kernel's dot products lose to the GEMM once the per-group GEMM is big
 *    (K/G >= 24 rows, C/G*R*S >= 64 columns), and win below.
 *  - tiny convolutions (< 32k MACs) skip the workspaces and BLIS calls: the reference loops. */
static conv_plan choose(const gg_conv2d_shape *s) {
    conv_plan p = {.key = *s, .nb = 1, .used = true};
    const int64_t Cg = s->C / s->G, Kg = s->K / s->G, RS = s->R * s->S;
    const double macs = (double)s->N * (double)s->K * (double)(Cg * RS) * (double)(s->Ho * s->Wo);
    /* zero-bordered input planes of one group, which the direct kernel keeps hot */
    const double group_bytes =
        4.0 * (double)Cg * (double)(s->Ho + (s->R - 1) * s->dil_h) * (double)(s->Wo + (s->S - 1) * s->dil_w);
    const bool supports = gg__conv2d_direct_supports(s);
    const bool direct = supports && ((group_bytes <= 1024.0 * 1024.0 && !(RS == 1 && Cg >= 16)) || Cg == 1);
    const gg_conv_algo other = macs < 32768 ? GG_CONV_ALGO_REF : GG_CONV_ALGO_GEMM;
    p.algo[PASS_FWD] = p.algo[PASS_DATA] = direct ? GG_CONV_ALGO_DIRECT : other;
    p.algo[PASS_WEIGHT] = direct && !(Kg >= 24 && Cg * RS >= 64) ? GG_CONV_ALGO_DIRECT : other;
    return p;
}

static conv_plan get_plan(const gg_conv2d_shape *s) {
    conv_plan p = {.used = false};
    for (int i = 0; i < PLAN_SLOTS; i++)
        if (plan_cache[i].used && memcmp(&plan_cache[i].key, s, sizeof *s) == 0) {
            p = plan_cache[i];
            break;
        }
    if (!p.used) {
        p = choose(s);
        p.nb = gg__conv2d_gemm_batch(s);
        plan_cache[plan_next++ % PLAN_SLOTS] = p;
    }
    gg_conv_algo f = (gg_conv_algo)atomic_load(&forced_algo);
    if (f == GG_CONV_ALGO_REF || f == GG_CONV_ALGO_GEMM ||
        (f == GG_CONV_ALGO_DIRECT && gg__conv2d_direct_supports(s)))
        p.algo[PASS_FWD] = p.algo[PASS_DATA] = p.algo[PASS_WEIGHT] = f;
    return p;
}

/* ---- argument checks ---- */

/* "x [..], w [..]" plus ", bias [..]" */
static const char *shapes_str(char *buf, size_t size, const gg_tensor *x, const gg_tensor *w,
                              const gg_tensor *b) {
    char a[GG_SHAPE_STR_MAX], c[GG_SHAPE_STR_MAX], d[GG_SHAPE_STR_MAX];
    if (b)
        snprintf(buf, size, "x %s, w %s, bias %s", GG_SHAPE_STR(x, a), GG_SHAPE_STR(w, c),
                 GG_SHAPE_STR(b, d));
    else snprintf(buf, size, "x %s, w %s", GG_SHAPE_STR(x, a), GG_SHAPE_STR(w, c));
    return buf;
}

/* Validate everything and fill the geometry; nothing is allocated. */
static int check_args(const gg_tensor *x, const gg_tensor *w, const gg_tensor *b, const gg_conv2d_params *p,
                      gg_conv2d_shape *s) {
    char sh[3 * GG_SHAPE_STR_MAX + 32];
    shapes_str(sh, sizeof sh, x, w, b);
    if (x->ndim != 4) return gg_error_set(GG_ERR_SHAPE, FN, "input must be 4-D [N,C,H,W] (%s)", sh);
    if (w->ndim != 4) return gg_error_set(GG_ERR_SHAPE, FN, "weight must be 4-D [K,C/G,R,S] (%s)", sh);
    if (p->groups < 1) return gg_error_set(GG_ERR_ARG, FN, "groups must be >= 1, got %d (%s)", p->groups, sh);
    if (p->stride[0] < 1 || p->stride[1] < 1)
        return gg_error_set(GG_ERR_ARG, FN, "stride must be positive, got (%d, %d) (%s)", p->stride[0],
                            p->stride[1], sh);
    if (p->dilation[0] < 1 || p->dilation[1] < 1)
        return gg_error_set(GG_ERR_ARG, FN, "dilation must be positive, got (%d, %d) (%s)", p->dilation[0],
                            p->dilation[1], sh);
    if (p->pad_same && (p->stride[0] != 1 || p->stride[1] != 1))
        return gg_error_set(GG_ERR_ARG, FN, "padding 'same' needs stride 1, got (%d, %d) (%s)", p->stride[0],
                            p->stride[1], sh);
    if (!p->pad_same && (p->pad[0] < 0 || p->pad[1] < 0 || p->pad[2] < 0 || p->pad[3] < 0))
        return gg_error_set(GG_ERR_ARG, FN,
                            "padding must be non-negative, got (top %d, bottom %d, left %d, right %d) (%s)",
                            p->pad[0], p->pad[1], p->pad[2], p->pad[3], sh);
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int64_t K = w->shape[0], Cg = w->shape[1], R = w->shape[2], S = w->shape[3], G = p->groups;
    if (R < 1 || S < 1 || Cg < 1)
        return gg_error_set(GG_ERR_SHAPE, FN, "weight must have non-empty channel and kernel dimensions (%s)",
                            sh);
    if (C != Cg * G) {
        if (G == 1)
            return gg_error_set(GG_ERR_SHAPE, FN, "input has %lld channels, weight expects %lld (%s)",
                                (long long)C, (long long)Cg, sh);
        return gg_error_set(
            GG_ERR_SHAPE, FN,
            "input has %lld channels, weight expects %lld (%lld per group x %lld groups) (%s)", (long long)C,
            (long long)(Cg * G), (long long)Cg, (long long)G, sh);
    }
    if (K % G)
        return gg_error_set(GG_ERR_SHAPE, FN,
                            "weight has %lld output channels, not divisible by %lld groups (%s)",
                            (long long)K, (long long)G, sh);
    if (b && (b->ndim != 1 || b->shape[0] != K))
        return gg_error_set(GG_ERR_SHAPE, FN, "bias must be [%lld], one value per output channel (%s)",
                            (long long)K, sh);
    int64_t pt = p->pad[0], pb = p->pad[1], pl = p->pad[2], pr = p->pad[3];
    if (p->pad_same) { /* PyTorch: total dilation*(kernel-1), the odd one at the bottom/right */
        int64_t th = (int64_t)p->dilation[0] * (R - 1), tw = (int64_t)p->dilation[1] * (S - 1);
        pt = th / 2, pb = th - pt, pl = tw / 2, pr = tw - pl;
    }
    const int64_t eff_h = (int64_t)p->dilation[0] * (R - 1) + 1,
                  eff_w = (int64_t)p->dilation[1] * (S - 1) + 1;
    const int64_t span_h = H + pt + pb - eff_h, span_w = W + pl + pr - eff_w;
    if (span_h < 0 || span_w < 0)
        return gg_error_set(
            GG_ERR_SHAPE, FN,
            "output would be empty: padded input %lldx%lld is smaller than the dilated kernel "
            "%lldx%lld (%s, padding (%lld, %lld, %lld, %lld), dilation (%d, %d))",
            (long long)(H + pt + pb), (long long)(W + pl + pr), (long long)eff_h, (long long)eff_w, sh,
            (long long)pt, (long long)pb, (long long)pl, (long long)pr, p->dilation[0], p->dilation[1]);
    *s = (gg_conv2d_shape){.N = N,
                           .C = C,
                           .H = H,
                           .W = W,
                           .K = K,
                           .R = R,
                           .S = S,
                           .G = G,
                           .Ho = span_h / p->stride[0] + 1,
                           .Wo = span_w / p->stride[1] + 1,
                           .str_h = p->stride[0],
                           .str_w = p->stride[1],
                           .pad_t = pt,
                           .pad_l = pl,
                           .dil_h = p->dilation[0],
                           .dil_w = p->dilation[1]};
    return GG_OK;
}

/* ---- forward and backward dispatch ---- */

static int forward(const gg_conv2d_shape *s, const float *x, const float *w, const float *b, float *y) {
    if (s->N == 0 || s->K == 0) return GG_OK;
    const conv_plan p = get_plan(s);
    const gg_conv_algo a = p.algo[PASS_FWD];
    if (a == GG_CONV_ALGO_REF) {
        gg__conv2d_fwd_ref(s, x, w, b, y);
        return GG_OK;
    }
    void *ws = gg_alloc(a == GG_CONV_ALGO_GEMM ? gg__conv2d_gemm_workspace(s, p.nb)
                                               : gg__conv2d_direct_workspace(s));
    if (!ws) return gg_error_set(GG_ERR_NOMEM, FN, "cannot allocate the convolution workspace");
    if (a == GG_CONV_ALGO_GEMM) gg__conv2d_fwd_gemm(s, p.nb, x, w, b, y, ws);
    else gg__conv2d_fwd_direct(s, x, w, b, y, ws);
    gg_free(ws);
    return GG_OK;
}

/* ip[] holds the geometry, then the saved-slot index of x and of w (-1: not saved). */
#define IP_XSLOT (int)(sizeof(gg_conv2d_shape) / sizeof(int64_t))
#define IP_WSLOT (IP_XSLOT + 1)
_Static_assert(sizeof(gg_conv2d_shape) / sizeof(int64_t) + 2 <= GG_NODE_IPARAMS,
               "conv geometry fits in ip[]");

static int conv2d_backward(gg_node *node, const gg_tensor *gout) {
    gg_conv2d_shape s;
    memcpy(&s, node->ip, sizeof s);
    gg_tensor *gx = gg_node_grad(node, 0), *gw = gg_node_grad(node, 1);
    gg_tensor *gb = node->n_in > 2 ? gg_node_grad(node, 2) : NULL;
    if ((!gx && gg_node_needs_grad(node, 0)) || (!gw && gg_node_needs_grad(node, 1)) ||
        (!gb && node->n_in > 2 && gg_node_needs_grad(node, 2)))
        return gg_last_status() ? gg_last_status()
                                : gg_error_set(GG_ERR_NOMEM, FN, "cannot allocate gradients");
    if (s.N == 0 || s.K == 0 || s.C == 0) return GG_OK;
    const float *dy = gg_tensor_data(gout);
    const float *x = node->ip[IP_XSLOT] >= 0 ? gg_tensor_data(node->saved[node->ip[IP_XSLOT]]) : NULL;
    const float *w = node->ip[IP_WSLOT] >= 0 ? gg_tensor_data(node->saved[node->ip[IP_WSLOT]]) : NULL;
    float *dx = gx ? gg_tensor_data(gx) : NULL, *dw = gw ? gg_tensor_data(gw) : NULL;
    if ((dx && !w) || (dw && !x))
        return gg_error_set(GG_ERR_STATE, FN, "backward: a needed input was not saved");
    if (gb) gg__conv2d_bwd_bias(&s, dy, gg_tensor_data(gb));
    if (!dx && !dw) return GG_OK;
    const conv_plan p = get_plan(&s);
    const gg_conv_algo ad = dx ? p.algo[PASS_DATA] : GG_CONV_ALGO_AUTO,
                       aw = dw ? p.algo[PASS_WEIGHT] : GG_CONV_ALGO_AUTO;
    if (ad == GG_CONV_ALGO_REF) gg__conv2d_bwd_data_ref(&s, dy, w, dx);
    if (aw == GG_CONV_ALGO_REF) gg__conv2d_bwd_weight_ref(&s, x, dy, dw);
    if (ad == GG_CONV_ALGO_GEMM || aw == GG_CONV_ALGO_GEMM) { /* one pass for both when both use it */
        void *ws = gg_alloc(gg__conv2d_gemm_workspace(&s, p.nb));
        if (!ws) return gg_error_set(GG_ERR_NOMEM, FN, "cannot allocate the convolution workspace");
        gg__conv2d_bwd_gemm(&s, p.nb, x, w, dy, ad == GG_CONV_ALGO_GEMM ? dx : NULL,
                            aw == GG_CONV_ALGO_GEMM ? dw : NULL, ws);
        gg_free(ws);
    }
    if (ad == GG_CONV_ALGO_DIRECT || aw == GG_CONV_ALGO_DIRECT) {
        void *ws = gg_alloc(gg__conv2d_direct_workspace(&s));
        if (!ws) return gg_error_set(GG_ERR_NOMEM, FN, "cannot allocate the convolution workspace");
        if (ad == GG_CONV_ALGO_DIRECT) gg__conv2d_bwd_data_direct(&s, dy, w, dx, ws);
        if (aw == GG_CONV_ALGO_DIRECT) gg__conv2d_bwd_weight_direct(&s, x, dy, dw, ws);
        gg_free(ws);
    }
    return GG_OK;
}

static const gg_op_def CONV2D_OP = {"conv2d", conv2d_backward};

gg_tensor *gg_conv2d(gg_tensor *x, gg_tensor *w, gg_tensor *bias, const gg_conv2d_params *params) {
    GG_CHECK_ARG(x, NULL);
    GG_CHECK_ARG(w, NULL);
    gg_conv2d_params def = gg_conv2d_default();
    const gg_conv2d_params *p = params ? params : &def;
    gg_conv2d_shape s;
    if (check_args(x, w, bias, p, &s)) return NULL;

    gg_tensor *xc = gg_tensor_contiguous(x), *wc = gg_tensor_contiguous(w);
    gg_tensor *bc = bias ? gg_tensor_contiguous(bias) : NULL;
    gg_tensor *out =
        (xc && wc && (bc || !bias)) ? gg_op_output(4, (const int64_t[]){s.N, s.K, s.Ho, s.Wo}, FN) : NULL;
    int st = out ? forward(&s, gg_tensor_data(xc), gg_tensor_data(wc), bc ? gg_tensor_data(bc) : NULL,
                           gg_tensor_data(out))
                 : GG_ERR_NOMEM;
    gg_tensor_free(bc);
    gg_tensor *in[3] = {x, w, bias};
    gg_node *node = NULL;
    if (!st) {
        bool failed;
        node = gg_op_record(&CONV2D_OP, out, bias ? 3 : 2, in, &failed);
        if (failed) st = GG_ERR_NOMEM;
    }
    if (node) {
        memcpy(node->ip, &s, sizeof s);
        node->ip[IP_XSLOT] = node->ip[IP_WSLOT] = -1;
        if (gg_node_needs_grad(node, 1)) { /* dw needs x */
            node->ip[IP_XSLOT] = node->n_saved;
            st = gg_node_save(node, xc);
        }
        if (!st && gg_node_needs_grad(node, 0)) { /* dx needs w */
            node->ip[IP_WSLOT] = node->n_saved;
            st = gg_node_save(node, wc);
        }
    }
    gg_tensor_free(xc);
    gg_tensor_free(wc);
    if (st) return NULL;
    return gg_op_finish(out, FN, bias ? 3 : 2, in);
}
