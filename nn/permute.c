/* channel_permute: index_select along dim 1 by a permutation, the op behind the ChannelPermute module
 * (deploy-mode DGConv2d).
 *   y[n, c, ...] = x[n, idx[c], ...]        x, y [N, C, ...], idx [C] a permutation (held as floats)
 *   dx[n, idx[c], ...] += dy[n, c, ...]     (a permutation: no two c write the same plane) */
#include <string.h>

#include "gg_internal.h"
#include "gg_nn_internal.h"
#include "gg_node.h"
#include "gg_runtime.h"

/* ip[0] N, ip[1] C, ip[2] plane size; saved[0] idx. */
static int chperm_backward(gg_node *node, const gg_tensor *gout) {
    gg_tensor *gx = gg_node_grad(node, 0);
    if (!gx) return gg_node_needs_grad(node, 0) ? gg_last_status() : GG_OK;
    const int64_t N = node->ip[0], C = node->ip[1], P = node->ip[2];
    const gg_tensor *idx = node->saved[0];
    const float *id = gg_tensor_data(idx), *dy = gg_tensor_data(gout);
    float *dx = gg_tensor_data(gx);
    const int64_t planes = N * C;
#pragma omp parallel for num_threads(gg_get_num_threads()) if (planes * P > 32768)
    for (int64_t nc = 0; nc < planes; nc++) {
        const int64_t n = nc / C, c = nc % C, src = (int64_t)id[c * idx->stride[0]];
        float *d = dx + (n * C + src) * P;
        const float *s = dy + nc * P;
        for (int64_t i = 0; i < P; i++) d[i] += s[i];
    }
    return GG_OK;
}

static const gg_op_def CHPERM_OP = {"channel_permute", chperm_backward};

gg_tensor *gg__channel_permute(gg_tensor *x, gg_tensor *idx) {
    GG_CHECK_ARG(x, NULL);
    GG_CHECK_ARG(idx, NULL);
    char sx[GG_SHAPE_STR_MAX], si[GG_SHAPE_STR_MAX];
    if (x->ndim < 2 || idx->ndim != 1 || idx->shape[0] != x->shape[1]) {
        GG_FAIL(GG_ERR_SHAPE, "need x [N,C,...] and index [C], got x %s, index %s", GG_SHAPE_STR(x, sx),
                GG_SHAPE_STR(idx, si));
        return NULL;
    }
    const int64_t N = x->shape[0], C = x->shape[1], P = C && N ? x->numel / (N * C) : 0;
    const float *id = gg_tensor_data(idx);
    for (int64_t c = 0; c < C; c++) {
        float v = id[c * idx->stride[0]];
        if (!(v >= 0 && v < (float)C) || v != (float)(int64_t)v) {
            GG_FAIL(GG_ERR_ARG, "index[%lld] = %g is not a channel of x %s", (long long)c, (double)v,
                    GG_SHAPE_STR(x, sx));
            return NULL;
        }
    }
    gg_tensor *out = gg_op_output(x->ndim, x->shape, __func__);
    if (!out) return NULL;
    const float *xs = gg_tensor_data(x);
    float *y = gg_tensor_data(out);
    const int64_t planes = N * C;
    int64_t ostride[GG_MAX_DIMS];
    gg__contiguous_strides(x->ndim - 2, x->shape + 2, ostride);
#pragma omp parallel for num_threads(gg_get_num_threads()) if (planes * P > 32768)
    for (int64_t nc = 0; nc < planes; nc++) {
        const int64_t n = nc / C, c = nc % C, src = (int64_t)id[c * idx->stride[0]];
        gg__strided_copy(x->ndim - 2, x->shape + 2, y + nc * P, ostride, xs + n * x->stride[0] + src * x->stride[1],
                         x->stride + 2);
    }
    gg_tensor *in[1] = {x};
    bool failed;
    gg_node *node = gg_op_record(&CHPERM_OP, out, 1, in, &failed);
    if (failed) return NULL;
    if (node) {
        node->ip[0] = N;
        node->ip[1] = C;
        node->ip[2] = P;
        gg_node_save(node, idx);
    }
    return gg_op_finish(out, __func__, 1, in);
}
