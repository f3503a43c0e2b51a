/* The leaf layers and containers of gg_nn.h: Conv2d, DGConv2d (with its info and deploy-mode export),
 * BatchNorm2d, Linear, ReLU, pooling, Flatten, Dropout, ChannelPermute and Sequential. Each kind is one
 * gg_module_def (forward, shape inference, MACs, description) and a constructor. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "gg_alloc.h"
#include "gg_cnn.h"
#include "gg_internal.h"
#include "gg_nn_internal.h"
#include "gg_ops.h"

char *gg__nn_shape_str(int ndim, const int64_t *shape, char *buf, size_t size) {
    return gg_shape_str(ndim, shape, buf, size);
}

#define SHP(nd, sh, buf) gg__nn_shape_str((nd), (sh), (buf), sizeof(buf))

/* Per-sample share of a count computed over a batch recorded in shape[0]. */
static int64_t per_sample(int64_t total, int ndim, const int64_t *shape) {
    return ndim >= 1 && shape[0] > 0 ? total / shape[0] : total;
}

static int check_4d(const gg_module *m, int ndim, const int64_t *in, int64_t channels) {
    char s[GG_SHAPE_STR_MAX];
    if (ndim != 4)
        return gg_module_fail(m, GG_ERR_SHAPE, "expected a 4-D input [N,C,H,W], got x %s", SHP(ndim, in, s));
    if (channels >= 0 && in[1] != channels)
        return gg_module_fail(m, GG_ERR_SHAPE, "input has %lld channels, expected %lld (x %s)", (long long)in[1],
                              (long long)channels, SHP(ndim, in, s));
    return GG_OK;
}

/* ---- convolution geometry ---- */

static int check_conv_params(const gg_conv2d_params *p, int kernel, int64_t cin, int64_t cout, const char *func) {
    if (kernel < 1) return gg_error_set(GG_ERR_ARG, func, "kernel_size %d must be >= 1", kernel);
    if (cin < 1 || cout < 1)
        return gg_error_set(GG_ERR_ARG, func, "channels must be >= 1, got in %lld, out %lld", (long long)cin,
                            (long long)cout);
    for (int d = 0; d < 2; d++)
        if (p->stride[d] < 1 || p->dilation[d] < 1)
            return gg_error_set(GG_ERR_ARG, func, "stride (%d,%d) and dilation (%d,%d) must be >= 1", p->stride[0],
                                p->stride[1], p->dilation[0], p->dilation[1]);
    for (int d = 0; d < 4; d++)
        if (p->pad[d] < 0)
            return gg_error_set(GG_ERR_ARG, func, "padding (%d,%d,%d,%d) must be >= 0", p->pad[0], p->pad[1],
                                p->pad[2], p->pad[3]);
    if (p->pad_same && (p->stride[0] != 1 || p->stride[1] != 1))
        return gg_error_set(GG_ERR_ARG, func, "pad_same needs stride 1, got (%d,%d)", p->stride[0], p->stride[1]);
    if (p->groups < 1 || cin % p->groups || cout % p->groups)
        return gg_error_set(GG_ERR_ARG, func, "groups %d must be >= 1 and divide in %lld and out %lld channels",
                            p->groups, (long long)cin, (long long)cout);
    return GG_OK;
}

/* Output size of a k x k convolution with p on input in [N,C,H,W]. */
static int conv_out_hw(const gg_module *m, const gg_conv2d_params *p, int k, int ndim, const int64_t *in,
                       int64_t *ho, int64_t *wo) {
    char s[GG_SHAPE_STR_MAX];
    int64_t out[2];
    for (int d = 0; d < 2; d++) {
        int64_t h = in[2 + d];
        if (p->pad_same) {
            out[d] = h;
            continue;
        }
        int64_t span = (int64_t)p->dilation[d] * (k - 1) + 1, padded = h + p->pad[2 * d] + p->pad[2 * d + 1];
        if (padded < span)
            return gg_module_fail(m, GG_ERR_SHAPE, "input x %s is smaller than the %lldx%lld (dilated) kernel",
                                  SHP(ndim, in, s), (long long)span, (long long)span);
        out[d] = (padded - span) / p->stride[d] + 1;
    }
    *ho = out[0];
    *wo = out[1];
    return GG_OK;
}

static void conv_suffix(const gg_conv2d_params *p, int k, char *buf, size_t size) {
    size_t n = (size_t)snprintf(buf, size, ", %dx%d", k, k);
    if (n < size && (p->stride[0] != 1 || p->stride[1] != 1))
        n += (size_t)snprintf(buf + n, size - n, ", stride %d", p->stride[0]);
    if (n < size && p->groups != 1) snprintf(buf + n, size - n, ", groups %d", p->groups);
}

/* ---- Conv2d ---- */

typedef struct conv_impl {
    int64_t cin, cout;
    int k;
    gg_conv2d_params p;
} conv_impl;

static int conv2d_shape(gg_module *m, int ndim, const int64_t *in, int *ond, int64_t *out) {
    const conv_impl *c = m->impl;
    int st = check_4d(m, ndim, in, c->cin);
    if (!st) st = conv_out_hw(m, &c->p, c->k, ndim, in, &out[2], &out[3]);
    if (st) return st;
    out[0] = in[0];
    out[1] = c->cout;
    *ond = 4;
    return GG_OK;
}

static gg_tensor *conv2d_forward(gg_module *m, gg_tensor *x) {
    const conv_impl *c = m->impl;
    return gg_conv2d(x, m->params[0], m->n_params > 1 ? m->params[1] : NULL, &c->p);
}

static int64_t conv2d_macs(const gg_module *m) {
    const conv_impl *c = m->impl;
    if (m->out_ndim != 4) return 0;
    return c->cout * (c->cin / c->p.groups) * c->k * c->k * m->out_shape[2] * m->out_shape[3];
}

static void conv2d_describe(const gg_module *m, char *buf, size_t size) {
    const conv_impl *c = m->impl;
    char suf[64];
    conv_suffix(&c->p, c->k, suf, sizeof suf);
    snprintf(buf, size, "Conv2d %lld->%lld%s", (long long)c->cin, (long long)c->cout, suf);
}

const gg_module_def gg__conv2d_def = {"Conv2d", conv2d_forward, conv2d_shape, conv2d_macs, conv2d_describe, NULL};

/* PyTorch's reset_parameters for Conv2d/Linear: weight kaiming_uniform(a = sqrt(5)), bias
 * U(-1/sqrt(fan_in), 1/sqrt(fan_in)). */
static int default_init(gg_tensor *w, gg_tensor *b, gg_rng *rng) {
    int st = gg_init_kaiming_uniform(w, sqrtf(5.0f), GG_FAN_IN, GG_NL_LEAKY_RELU, rng);
    if (st || !b) return st;
    int64_t fan_in = 0;
    gg_init_fans(w, &fan_in, NULL);
    float bound = fan_in > 0 ? (float)(1.0 / sqrt((double)fan_in)) : 0.0f;
    return gg_rand_uniform(b, -bound, bound, rng);
}

gg_module *gg__nn_conv2d(int64_t cin, int64_t cout, int kernel, const gg_conv2d_params *p, bool bias, gg_rng *rng,
                         bool init, const char *func) {
    gg_conv2d_params def = gg_conv2d_default();
    if (!p) p = &def;
    if (check_conv_params(p, kernel, cin, cout, func)) return NULL;
    gg_module *m = gg_module_new(&gg__conv2d_def, sizeof(conv_impl));
    if (!m) return NULL;
    conv_impl *c = m->impl;
    *c = (conv_impl){cin, cout, kernel, *p};
    gg_tensor *w = gg_tensor_zeros(GG_SHAPE(cout, cin / p->groups, kernel, kernel));
    gg_tensor *b = bias ? gg_tensor_zeros(GG_SHAPE(cout)) : NULL;
    int st = gg_module_add_parameter(m, "weight", w);
    if (!st && bias) st = gg_module_add_parameter(m, "bias", b);
    else if (st) gg_tensor_free(b);
    if (!st && init) st = default_init(w, b, rng);
    if (st) {
        gg_module_free(m);
        return NULL;
    }
    return m;
}

gg_module *gg_nn_conv2d_new(int64_t in_channels, int64_t out_channels, int kernel_size, const gg_conv2d_params *p,
                            bool bias, gg_rng *rng) {
    return gg__nn_conv2d(in_channels, out_channels, kernel_size, p, bias, rng, true, __func__);
}

/* ---- Linear ---- */

typedef struct linear_impl {
    int64_t in, out;
} linear_impl;

static int linear_shape(gg_module *m, int ndim, const int64_t *in, int *ond, int64_t *out) {
    const linear_impl *c = m->impl;
    char s[GG_SHAPE_STR_MAX];
    if (ndim < 1 || in[ndim - 1] != c->in)
        return gg_module_fail(m, GG_ERR_SHAPE, "input has %lld features in its last dimension, expected %lld (x %s)",
                              ndim < 1 ? 0LL : (long long)in[ndim - 1], (long long)c->in, SHP(ndim, in, s));
    memcpy(out, in, (size_t)ndim * sizeof *in);
    out[ndim - 1] = c->out;
    *ond = ndim;
    return GG_OK;
}

static gg_tensor *linear_forward(gg_module *m, gg_tensor *x) {
    return gg_linear(x, m->params[0], m->n_params > 1 ? m->params[1] : NULL);
}

static int64_t linear_macs(const gg_module *m) {
    const linear_impl *c = m->impl;
    if (m->out_ndim < 1) return 0;
    int64_t rows = 1;
    for (int d = 0; d < m->out_ndim - 1; d++) rows *= m->out_shape[d];
    return per_sample(rows * c->in * c->out, m->out_ndim > 1 ? m->out_ndim : 0, m->out_shape);
}

static void linear_describe(const gg_module *m, char *buf, size_t size) {
    const linear_impl *c = m->impl;
    snprintf(buf, size, "Linear %lld->%lld", (long long)c->in, (long long)c->out);
}

static const gg_module_def LINEAR_DEF = {"Linear", linear_forward, linear_shape, linear_macs, linear_describe, NULL};

gg_module *gg_nn_linear_new(int64_t in_features, int64_t out_features, bool bias, gg_rng *rng) {
    if (in_features < 1 || out_features < 1) {
        GG_FAIL(GG_ERR_ARG, "features must be >= 1, got in %lld, out %lld", (long long)in_features,
                (long long)out_features);
        return NULL;
    }
    gg_module *m = gg_module_new(&LINEAR_DEF, sizeof(linear_impl));
    if (!m) return NULL;
    *(linear_impl *)m->impl = (linear_impl){in_features, out_features};
    gg_tensor *w = gg_tensor_zeros(GG_SHAPE(out_features, in_features));
    gg_tensor *b = bias ? gg_tensor_zeros(GG_SHAPE(out_features)) : NULL;
    int st = gg_module_add_parameter(m, "weight", w);
    if (!st && bias) st = gg_module_add_parameter(m, "bias", b);
    else if (st) gg_tensor_free(b);
    if (!st) st = default_init(w, b, rng);
    if (st) {
        gg_module_free(m);
        return NULL;
    }
    return m;
}

/* ---- BatchNorm2d ---- */

typedef struct bn_impl {
    int64_t C;
    float eps, momentum;
    bool affine;
} bn_impl;

static int bn_shape(gg_module *m, int ndim, const int64_t *in, int *ond, int64_t *out) {
    const bn_impl *c = m->impl;
    int st = check_4d(m, ndim, in, c->C);
    if (st) return st;
    memcpy(out, in, 4 * sizeof *in);
    *ond = 4;
    return GG_OK;
}

static gg_tensor *bn_forward(gg_module *m, gg_tensor *x) {
    const bn_impl *c = m->impl;
    gg_tensor *w = c->affine ? m->params[0] : NULL, *b = c->affine ? m->params[1] : NULL;
    gg_tensor *y = gg_batch_norm2d(x, w, b, m->buffers[0], m->buffers[1], m->training, c->momentum, c->eps);
    if (y && m->training) { /* num_batches_tracked += 1, outside the graph */
        gg_tensor *nbt = m->buffers[2];
        gg_tensor_data(nbt)[0] += 1.0f;
        gg_tensor_bump_version(nbt);
    }
    return y;
}

static void bn_describe(const gg_module *m, char *buf, size_t size) {
    snprintf(buf, size, "BatchNorm2d %lld", (long long)((const bn_impl *)m->impl)->C);
}

const gg_module_def gg__batchnorm2d_def = {"BatchNorm2d", bn_forward, bn_shape, NULL, bn_describe, NULL};

gg_module *gg_nn_batchnorm2d_new_ex(int64_t num_features, float eps, float momentum, bool affine) {
    if (num_features < 1 || !(eps >= 0) || !(momentum >= 0 && momentum <= 1)) {
        GG_FAIL(GG_ERR_ARG, "need num_features >= 1, eps >= 0, 0 <= momentum <= 1; got %lld, %g, %g",
                (long long)num_features, (double)eps, (double)momentum);
        return NULL;
    }
    gg_module *m = gg_module_new(&gg__batchnorm2d_def, sizeof(bn_impl));
    if (!m) return NULL;
    *(bn_impl *)m->impl = (bn_impl){num_features, eps, momentum, affine};
    int st = GG_OK;
    if (affine) {
        st = gg_module_add_parameter(m, "weight", gg_tensor_ones(GG_SHAPE(num_features)));
        if (!st) st = gg_module_add_parameter(m, "bias", gg_tensor_zeros(GG_SHAPE(num_features)));
    }
    if (!st) st = gg_module_add_buffer(m, "running_mean", gg_tensor_zeros(GG_SHAPE(num_features)));
    if (!st) st = gg_module_add_buffer(m, "running_var", gg_tensor_ones(GG_SHAPE(num_features)));
    if (!st) st = gg_module_add_buffer(m, "num_batches_tracked", gg_tensor_scalar(0.0f));
    if (st) {
        gg_module_free(m);
        return NULL;
    }
    return m;
}

gg_module *gg_nn_batchnorm2d_new(int64_t num_features) {
    return gg_nn_batchnorm2d_new_ex(num_features, 1e-5f, 0.1f, true);
}

/* ---- shape-preserving and parameter-free layers ---- */

static int same_shape(gg_module *m, int ndim, const int64_t *in, int *ond, int64_t *out) {
    (void)m;
    memcpy(out, in, (size_t)ndim * sizeof *in);
    *ond = ndim;
    return GG_OK;
}

static gg_tensor *relu_forward(gg_module *m, gg_tensor *x) {
    (void)m;
    return gg_relu(x);
}

static const gg_module_def RELU_DEF = {"ReLU", relu_forward, same_shape, NULL, NULL, NULL};

gg_module *gg_nn_relu_new(void) { return gg_module_new(&RELU_DEF, 0); }

typedef struct dropout_impl {
    float p;
    gg_rng *rng;
} dropout_impl;

static gg_tensor *dropout_forward(gg_module *m, gg_tensor *x) {
    const dropout_impl *c = m->impl;
    return gg_dropout(x, c->p, m->training, c->rng);
}

static void dropout_describe(const gg_module *m, char *buf, size_t size) {
    snprintf(buf, size, "Dropout p=%g", (double)((const dropout_impl *)m->impl)->p);
}

static const gg_module_def DROPOUT_DEF = {"Dropout", dropout_forward, same_shape, NULL, dropout_describe, NULL};

gg_module *gg_nn_dropout_new(float p, gg_rng *rng) {
    if (!(p >= 0 && p <= 1)) {
        GG_FAIL(GG_ERR_ARG, "p = %g must lie in [0, 1]", (double)p);
        return NULL;
    }
    gg_module *m = gg_module_new(&DROPOUT_DEF, sizeof(dropout_impl));
    if (m) *(dropout_impl *)m->impl = (dropout_impl){p, rng};
    return m;
}

/* ---- pooling ---- */

typedef struct pool_impl {
    int k, s, p;
    int64_t oh, ow; /* adaptive */
} pool_impl;

static int pool_shape(gg_module *m, int ndim, const int64_t *in, int *ond, int64_t *out) {
    const pool_impl *c = m->impl;
    char s[GG_SHAPE_STR_MAX];
    int st = check_4d(m, ndim, in, -1);
    if (st) return st;
    for (int d = 0; d < 2; d++) {
        if (in[2 + d] + 2 * c->p < c->k)
            return gg_module_fail(m, GG_ERR_SHAPE, "input x %s is smaller than the %dx%d window", SHP(ndim, in, s),
                                  c->k, c->k);
        out[2 + d] = (in[2 + d] + 2 * c->p - c->k) / c->s + 1;
    }
    out[0] = in[0];
    out[1] = in[1];
    *ond = 4;
    return GG_OK;
}

static gg_tensor *maxpool_forward(gg_module *m, gg_tensor *x) {
    const pool_impl *c = m->impl;
    const int k[2] = {c->k, c->k}, s[2] = {c->s, c->s}, p[2] = {c->p, c->p};
    return gg_max_pool2d(x, k, s, p, NULL, false);
}

static gg_tensor *avgpool_forward(gg_module *m, gg_tensor *x) {
    const pool_impl *c = m->impl;
    const int k[2] = {c->k, c->k}, s[2] = {c->s, c->s}, p[2] = {c->p, c->p};
    return gg_avg_pool2d(x, k, s, p, false, true);
}

static void pool_describe(const gg_module *m, char *buf, size_t size) {
    const pool_impl *c = m->impl;
    snprintf(buf, size, "%s %dx%d, stride %d, padding %d", m->def->kind, c->k, c->k, c->s, c->p);
}

static const gg_module_def MAXPOOL_DEF = {"MaxPool2d", maxpool_forward, pool_shape, NULL, pool_describe, NULL};
static const gg_module_def AVGPOOL_DEF = {"AvgPool2d", avgpool_forward, pool_shape, NULL, pool_describe, NULL};

static gg_module *pool_new(const gg_module_def *def, int k, int s, int p, const char *func) {
    if (k < 1 || s < 0 || p < 0 || p > k / 2) {
        gg_error_set(GG_ERR_ARG, func, "need kernel >= 1, stride >= 0 (0: kernel), 0 <= padding <= kernel/2; got %d, %d, %d",
                     k, s, p);
        return NULL;
    }
    gg_module *m = gg_module_new(def, sizeof(pool_impl));
    if (m) *(pool_impl *)m->impl = (pool_impl){k, s ? s : k, p, 0, 0};
    return m;
}

gg_module *gg_nn_maxpool2d_new(int kernel_size, int stride, int padding) {
    return pool_new(&MAXPOOL_DEF, kernel_size, stride, padding, __func__);
}

gg_module *gg_nn_avgpool2d_new(int kernel_size, int stride, int padding) {
    return pool_new(&AVGPOOL_DEF, kernel_size, stride, padding, __func__);
}

static int adaptive_shape(gg_module *m, int ndim, const int64_t *in, int *ond, int64_t *out) {
    const pool_impl *c = m->impl;
    char s[GG_SHAPE_STR_MAX];
    int st = check_4d(m, ndim, in, -1);
    if (st) return st;
    if (in[2] < 1 || in[3] < 1)
        return gg_module_fail(m, GG_ERR_SHAPE, "input x %s has an empty plane", SHP(ndim, in, s));
    out[0] = in[0];
    out[1] = in[1];
    out[2] = c->oh;
    out[3] = c->ow;
    *ond = 4;
    return GG_OK;
}

static gg_tensor *adaptive_forward(gg_module *m, gg_tensor *x) {
    const pool_impl *c = m->impl;
    if (c->oh == 1 && c->ow == 1) return gg_global_avg_pool2d(x);
    return gg_adaptive_avg_pool2d(x, c->oh, c->ow);
}

static void adaptive_describe(const gg_module *m, char *buf, size_t size) {
    const pool_impl *c = m->impl;
    snprintf(buf, size, "AdaptiveAvgPool2d %lldx%lld", (long long)c->oh, (long long)c->ow);
}

static const gg_module_def ADAPTIVE_DEF = {"AdaptiveAvgPool2d", adaptive_forward, adaptive_shape, NULL,
                                           adaptive_describe, NULL};

gg_module *gg_nn_adaptive_avgpool2d_new(int64_t out_h, int64_t out_w) {
    if (out_h < 1 || out_w < 1) {
        GG_FAIL(GG_ERR_ARG, "output size %lldx%lld must be at least 1x1", (long long)out_h, (long long)out_w);
        return NULL;
    }
    gg_module *m = gg_module_new(&ADAPTIVE_DEF, sizeof(pool_impl));
    if (m) *(pool_impl *)m->impl = (pool_impl){0, 0, 0, out_h, out_w};
    return m;
}

/* ---- Flatten ---- */

typedef struct flatten_impl {
    int start, end;
} flatten_impl;

static int flatten_shape(gg_module *m, int ndim, const int64_t *in, int *ond, int64_t *out) {
    const flatten_impl *c = m->impl;
    char s[GG_SHAPE_STR_MAX];
    int a = c->start < 0 ? c->start + ndim : c->start, b = c->end < 0 ? c->end + ndim : c->end;
    if (ndim < 1 || a < 0 || b >= ndim || a > b)
        return gg_module_fail(m, GG_ERR_SHAPE, "cannot flatten dims %d..%d of x %s", c->start, c->end,
                              SHP(ndim, in, s));
    int n = 0;
    for (int d = 0; d < a; d++) out[n++] = in[d];
    int64_t prod = 1;
    for (int d = a; d <= b; d++) prod *= in[d];
    out[n++] = prod;
    for (int d = b + 1; d < ndim; d++) out[n++] = in[d];
    *ond = n;
    return GG_OK;
}

static gg_tensor *flatten_forward(gg_module *m, gg_tensor *x) {
    int nd = 0;
    int64_t shape[GG_MAX_DIMS];
    if (flatten_shape(m, x->ndim, x->shape, &nd, shape)) return NULL;
    return gg_reshape(x, nd, shape);
}

static const gg_module_def FLATTEN_DEF = {"Flatten", flatten_forward, flatten_shape, NULL, NULL, NULL};

gg_module *gg_nn_flatten_new(int start_dim, int end_dim) {
    gg_module *m = gg_module_new(&FLATTEN_DEF, sizeof(flatten_impl));
    if (m) *(flatten_impl *)m->impl = (flatten_impl){start_dim, end_dim};
    return m;
}

/* ---- Sequential ---- */

gg_tensor *gg__sequential_forward(gg_module *m, gg_tensor *x) {
    for (int i = 0; i < m->n_children && x; i++) x = gg_module_forward(m->children[i], x);
    return x;
}

const gg_module_def gg__sequential_def = {"Sequential", gg__sequential_forward, NULL, NULL, NULL, NULL};

gg_module *gg_nn_sequential_new(void) { return gg_module_new(&gg__sequential_def, 0); }

int gg_nn_sequential_append(gg_module *seq, gg_module *child) {
    char name[16];
    snprintf(name, sizeof name, "%d", seq ? seq->n_children : 0);
    return gg_nn_sequential_add(seq, name, child);
}

int gg_nn_sequential_add(gg_module *seq, const char *name, gg_module *child) {
    if (seq && seq->def != &gg__sequential_def && seq->def->forward != gg__sequential_forward) {
        gg_module_free(child);
        return GG_FAIL(GG_ERR_ARG, "module is a %s, not a Sequential", seq->def->kind);
    }
    return gg_module_add_child(seq, name, child);
}

/* ---- ChannelPermute ---- */

typedef struct chperm_impl {
    int64_t C;
} chperm_impl;

static int chperm_shape(gg_module *m, int ndim, const int64_t *in, int *ond, int64_t *out) {
    const chperm_impl *c = m->impl;
    char s[GG_SHAPE_STR_MAX];
    if (ndim < 2 || in[1] != c->C)
        return gg_module_fail(m, GG_ERR_SHAPE, "expected an input [N,%lld,...], got x %s", (long long)c->C,
                              SHP(ndim, in, s));
    return same_shape(m, ndim, in, ond, out);
}

static gg_tensor *chperm_forward(gg_module *m, gg_tensor *x) { return gg__channel_permute(x, m->buffers[0]); }

static void chperm_describe(const gg_module *m, char *buf, size_t size) {
    snprintf(buf, size, "ChannelPermute %lld", (long long)((const chperm_impl *)m->impl)->C);
}

static const gg_module_def CHPERM_DEF = {"ChannelPermute", chperm_forward, chperm_shape, NULL, chperm_describe, NULL};

gg_module *gg_nn_channel_permute_new(int64_t channels, const int *index) {
    if (channels < 1 || channels > (1 << 24) || !index) {
        GG_FAIL(GG_ERR_ARG, "need 1 <= channels <= 2^24 and an index array, got %lld%s", (long long)channels,
                index ? "" : " and NULL");
        return NULL;
    }
    unsigned char *seen = gg_alloc_zeroed((size_t)channels);
    if (!seen) return NULL;
    for (int64_t c = 0; c < channels; c++) {
        if (index[c] < 0 || index[c] >= channels || seen[index[c]]) {
            GG_FAIL(GG_ERR_ARG, "index is not a permutation of 0..%lld: index[%lld] = %d", (long long)channels - 1,
                    (long long)c, index[c]);
            gg_free(seen);
            return NULL;
        }
        seen[index[c]] = 1;
    }
    gg_free(seen);
    gg_module *m = gg_module_new(&CHPERM_DEF, sizeof(chperm_impl));
    if (!m) return NULL;
    ((chperm_impl *)m->impl)->C = channels;
    gg_tensor *idx = gg_tensor_empty(GG_SHAPE(channels));
    if (idx)
        for (int64_t c = 0; c < channels; c++) gg_tensor_data(idx)[c] = (float)index[c];
    if (gg_module_add_buffer(m, "index", idx)) {
        gg_module_free(m);
        return NULL;
    }
    return m;
}

/* ---- DGConv2d ---- */

typedef struct dg_impl {
    int64_t C;
    int K, k;
    gg_conv2d_params p;
    gg_dgconv_opts opts;
} dg_impl;

/* params: 0 gate [K], 1 conv.weight [C,C,k,k], 2 conv.bias [C] (optional) */

static int dg_shape(gg_module *m, int ndim, const int64_t *in, int *ond, int64_t *out) {
    const dg_impl *c = m->impl;
    int st = check_4d(m, ndim, in, c->C);
    if (!st) st = conv_out_hw(m, &c->p, c->k, ndim, in, &out[2], &out[3]);
    if (st) return st;
    out[0] = in[0];
    out[1] = c->C;
    *ond = 4;
    return GG_OK;
}

static gg_tensor *dg_forward(gg_module *m, gg_tensor *x) {
    const dg_impl *c = m->impl;
    return gg_dgconv2d(x, m->params[1], m->params[0], m->n_params > 2 ? m->params[2] : NULL, &c->p, &c->opts);
}

/* Fill info from the gates; out_h/out_w given (0 if unknown). */
static void dg_fill_info(const gg_module *m, int64_t ho, int64_t wo, gg_dgconv2d_info *info) {
    const dg_impl *c = m->impl;
    const gg_tensor *gt = m->params[0];
    const float *g = gg_tensor_data(gt);
    double zeta = (double)c->C;
    int open = 0, closed = 0;
    bool half = false;
    for (int k = 0; k < c->K; k++) {
        float v = g[k * gt->stride[0]];
        double gk = v > 0 ? 1.0 : v < 0 ? 0.0 : 0.5;
        zeta *= 1.0 + gk;
        open += gk == 1.0;
        closed += gk == 0.0;
        half = half || gk == 0.5;
    }
    const int64_t rs = (int64_t)c->k * c->k, bias = m->n_params > 2 ? c->C : 0;
    *info = (gg_dgconv2d_info){
        .channels = c->C,
        .n_gates = c->K,
        .n_open = open,
        .kernel_size = c->k,
        .groups = half ? 0 : 1 << closed,
        .group_size = half ? 0 : (int)(c->C >> closed),
        .zeta = zeta,
        .params = c->C * c->C * rs + c->K + bias,
        .effective_params = llround((double)rs * zeta) + bias,
        .out_h = ho,
        .out_w = wo,
        .macs = llround((double)rs * (double)ho * (double)wo * zeta),
    };
}

static int64_t dg_macs(const gg_module *m) {
    if (m->out_ndim != 4) return 0;
    gg_dgconv2d_info info;
    dg_fill_info(m, m->out_shape[2], m->out_shape[3], &info);
    return info.macs;
}

static void dg_describe(const gg_module *m, char *buf, size_t size) {
    const dg_impl *c = m->impl;
    char suf[64];
    conv_suffix(&c->p, c->k, suf, sizeof suf);
    snprintf(buf, size, "DGConv2d %lld->%lld%s", (long long)c->C, (long long)c->C, suf);
}

const gg_module_def gg__dgconv2d_def = {"DGConv2d", dg_forward, dg_shape, dg_macs, dg_describe, NULL};

gg_module *gg__nn_dgconv2d(int64_t channels, int kernel, const gg_conv2d_params *p, bool bias, gg_gate_init gate_init,
                           gg_rng *rng, bool init, const char *func) {
    gg_conv2d_params def = gg_conv2d_default();
    if (!p) p = &def;
    int K = 0;
    while (K < 31 && ((int64_t)1 << K) < channels) K++;
    if (channels < 2 || ((int64_t)1 << K) != channels || K > 30) {
        gg_error_set(GG_ERR_ARG, func, "DGConv2d needs a power-of-two channel count 2^K, 1 <= K <= 30, got %lld",
                     (long long)channels);
        return NULL;
    }
    if (check_conv_params(p, kernel, channels, channels, func)) return NULL;
    if (p->groups != 1) {
        gg_error_set(GG_ERR_ARG, func, "DGConv2d owns the grouping: conv params must have groups 1, got %d", p->groups);
        return NULL;
    }
    if ((int)gate_init < 0 || gate_init >= GG_GATE_INIT_COUNT) {
        gg_error_set(GG_ERR_ARG, func, "unknown gate_init %d", (int)gate_init);
        return NULL;
    }
    gg_module *m = gg_module_new(&gg__dgconv2d_def, sizeof(dg_impl));
    if (!m) return NULL;
    *(dg_impl *)m->impl = (dg_impl){channels, K, kernel, *p, gg_dgconv_default()};
    gg_tensor *gt = gg_tensor_empty(GG_SHAPE(K));
    if (gt) {
        gg_rng *r = rng ? rng : gg_rng_default();
        for (int k = 0; k < K; k++) {
            float sign = gate_init == GG_GATE_INIT_OPEN     ? 1.0f
                         : gate_init == GG_GATE_INIT_CLOSED ? -1.0f
                         : (gg_rng_u32(r) & 1)              ? 1.0f
                                                            : -1.0f;
            gg_tensor_data(gt)[k] = sign * 1e-8f;
        }
    }
    gg_tensor *w = gg_tensor_zeros(GG_SHAPE(channels, channels, kernel, kernel));
    gg_tensor *b = bias ? gg_tensor_zeros(GG_SHAPE(channels)) : NULL;
    int st = gg_module_add_parameter(m, "gate", gt);
    if (!st) st = gg_module_add_parameter(m, "conv.weight", w);
    else gg_tensor_free(w);
    if (!st && bias) st = gg_module_add_parameter(m, "conv.bias", b);
    else if (st) gg_tensor_free(b);
    if (!st && init) st = default_init(w, b, rng);
    if (st) {
        gg_module_free(m);
        return NULL;
    }
    return m;
}

gg_module *gg_nn_dgconv2d_new(int64_t channels, int kernel_size, const gg_conv2d_params *p, bool bias,
                              gg_gate_init gate_init, gg_rng *rng) {
    return gg__nn_dgconv2d(channels, kernel_size, p, bias, gate_init, rng, true, __func__);
}

static int check_dg(const gg_module *m, const char *func) {
    if (!m) return gg__null_arg(func, "m");
    if (m->def != &gg__dgconv2d_def) return gg_error_set(GG_ERR_ARG, func, "module is a %s, not a DGConv2d", m->def->kind);
    return GG_OK;
}

int gg_nn_dgconv2d_set_opts(gg_module *m, const gg_dgconv_opts *opts) {
    int st = check_dg(m, __func__);
    if (st) return st;
    gg_dgconv_opts o = opts ? *opts : gg_dgconv_default();
    if ((int)o.path < 0 || o.path >= GG_DGCONV_PATH_COUNT) return GG_FAIL(GG_ERR_ARG, "unknown path %d", (int)o.path);
    ((dg_impl *)m->impl)->opts = o;
    return GG_OK;
}

gg_tensor *gg_nn_dgconv2d_gates(gg_module *m) { return check_dg(m, __func__) ? NULL : m->params[0]; }
gg_tensor *gg_nn_dgconv2d_weight(gg_module *m) { return check_dg(m, __func__) ? NULL : m->params[1]; }

int gg_nn_dgconv2d_info(const gg_module *m, gg_dgconv2d_info *info) {
    int st = check_dg(m, __func__);
    if (st) return st;
    if (!info) return GG_FAIL(GG_ERR_ARG, "NULL info");
    bool known = m->out_ndim == 4;
    dg_fill_info(m, known ? m->out_shape[2] : 0, known ? m->out_shape[3] : 0, info);
    return GG_OK;
}

int gg_nn_dgconv2d_info_at(const gg_module *m, int64_t in_h, int64_t in_w, gg_dgconv2d_info *info) {
    int st = check_dg(m, __func__);
    if (st) return st;
    if (!info) return GG_FAIL(GG_ERR_ARG, "NULL info");
    const dg_impl *c = m->impl;
    const int64_t in[4] = {1, c->C, in_h, in_w};
    int64_t ho = 0, wo = 0;
    if (in_h < 1 || in_w < 1) return GG_FAIL(GG_ERR_ARG, "input size %lldx%lld must be positive", (long long)in_h, (long long)in_w);
    st = conv_out_hw(m, &c->p, c->k, 4, in, &ho, &wo);
    if (st) return st;
    dg_fill_info(m, ho, wo, info);
    return GG_OK;
}

/* ---- DGConv2d export ----
 * With perm = pi from gg_dgconv_group_info and inv = pi^-1: xp[:, q] = x[:, inv[q]], the grouped conv
 * weight wg[q, j] = W[inv[q], inv[(q / Cg) * Cg + j]], bias bg[q] = b[inv[q]], and y[:, o] = yp[:, pi(o)]. */
gg_module *gg_nn_dgconv2d_export(const gg_module *m) {
    if (check_dg(m, __func__)) return NULL;
    const dg_impl *c = m->impl;
    const int64_t C = c->C, RS = (int64_t)c->k * c->k;
    int G = 0, Cg = 0;
    int *perm = gg_alloc(2 * (size_t)C * sizeof(int));
    if (!perm) return NULL;
    int *inv = perm + C;
    if (gg_dgconv_group_info(m->params[0], c->opts.sort, &G, &Cg, perm)) {
        char path[256];
        gg_module_path(m, path, sizeof path);
        GG_FAIL(gg_last_status(), "%s%scannot export: %s", path, path[0] ? ": " : "", gg_last_error());
        gg_free(perm);
        return NULL;
    }
    bool ident = true;
    for (int64_t i = 0; i < C; i++) {
        inv[perm[i]] = (int)i;
        ident = ident && perm[i] == i;
    }
    gg_conv2d_params p = c->p;
    p.groups = G;
    bool bias = m->n_params > 2;
    gg_module *conv = gg__nn_conv2d(C, C, c->k, &p, bias, NULL, false, __func__);
    if (conv) {
        const gg_tensor *W = m->params[1]; /* contiguous [C, C, k, k], module-owned */
        const float *w = gg_tensor_data(W);
        float *wg = gg_tensor_data(conv->params[0]);
        for (int64_t q = 0; q < C; q++) {
            const int64_t base = (q / Cg) * Cg;
            for (int64_t j = 0; j < Cg; j++)
                memcpy(wg + (q * Cg + j) * RS, w + ((int64_t)inv[q] * C + inv[base + j]) * RS,
                       (size_t)RS * sizeof(float));
        }
        if (bias) {
            const float *b = gg_tensor_data(m->params[2]);
            float *bg = gg_tensor_data(conv->params[1]);
            for (int64_t q = 0; q < C; q++) bg[q] = b[inv[q]];
        }
        conv->training = m->training;
    }
    gg_module *out = conv;
    if (conv && !ident) {
        out = gg_nn_sequential_new();
        gg_nn_sequential_append(out, gg_nn_channel_permute_new(C, inv));
        gg_nn_sequential_append(out, conv);
        if (gg_nn_sequential_append(out, gg_nn_channel_permute_new(C, perm))) {
            gg_module_free(out);
            out = NULL;
        } else {
            gg_module_train(out, m->training);
        }
    }
    gg_free(perm);
    return out;
}

static int collect_dg(const char *path, gg_module *m, void *ctx) {
    (void)path;
    gg_module ***cursor = ctx;
    if (m->def == &gg__dgconv2d_def && m->parent) *(*cursor)++ = m;
    return 0;
}

static int count_dg(const char *path, gg_module *m, void *ctx) {
    (void)path;
    if (m->def == &gg__dgconv2d_def && m->parent) ++*(int *)ctx;
    return 0;
}

int gg_module_export_dgconv(gg_module *root) {
    if (!root) return gg__null_arg(__func__, "root");
    int n = 0;
    gg_module_foreach_module(root, count_dg, &n);
    if (n == 0) return 0;
    gg_module **layers = gg_alloc(2 * (size_t)n * sizeof *layers);
    if (!layers) return gg_last_status();
    gg_module **exported = layers + n, **cursor = layers;
    gg_module_foreach_module(root, collect_dg, &cursor);
    for (int i = 0; i < n; i++) {
        exported[i] = gg_nn_dgconv2d_export(layers[i]);
        if (!exported[i]) {
            int st = gg_last_status();
            for (int j = 0; j < i; j++) gg_module_free(exported[j]);
            gg_free(layers);
            return st;
        }
    }
    for (int i = 0; i < n; i++) {
        gg_module *parent = layers[i]->parent;
        int idx = 0;
        while (parent->children[idx] != layers[i]) idx++;
        gg_module_replace_child(parent, idx, exported[i]);
    }
    gg_free(layers);
    return n;
}
