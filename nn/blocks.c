/* Residual blocks with torchvision's definitions (resnet.py, v1.5: the stride sits in the 3x3 conv):
 * BasicBlock and the ResNeXt Bottleneck, whose 3x3 conv may be dense, grouped, depthwise or DGConv. */
#include <stdio.h>
#include <string.h>

#include "gg_internal.h"
#include "gg_nn_internal.h"
#include "gg_ops.h"

typedef struct block_impl {
    int64_t inplanes, outplanes, width;
    int stride;
    int n_main;   /* children 0 .. n_main-1 are the main branch in order, except the shared ReLU */
    int relu;     /* index of the ReLU child */
    int ds;       /* index of the downsample child, or -1 */
} block_impl;

/* Main branch: Bottleneck conv1 bn1 relu conv2 bn2 relu conv3 bn3; BasicBlock conv1 bn1 relu conv2 bn2.
 * order[] lists child indices, -1 standing for the ReLU. */
static const int BOTTLENECK_ORDER[] = {0, 1, -1, 2, 3, -1, 4, 5};
static const int BASIC_ORDER[] = {0, 1, -1, 2, 3};

static const int *block_order(const gg_module *m, int *n) {
    const block_impl *c = m->impl;
    *n = c->n_main == 6 ? 8 : 5;
    return c->n_main == 6 ? BOTTLENECK_ORDER : BASIC_ORDER;
}

static int same_dims(int na, const int64_t *a, int nb, const int64_t *b) {
    if (na != nb) return 0;
    for (int d = 0; d < na; d++)
        if (a[d] != b[d]) return 0;
    return 1;
}

static int block_shape(gg_module *m, int ndim, const int64_t *in, int *ond, int64_t *out) {
    const block_impl *c = m->impl;
    int n = 0;
    const int *order = block_order(m, &n);
    int nd = ndim, idn = ndim;
    int64_t cur[GG_MAX_DIMS], id[GG_MAX_DIMS], nxt[GG_MAX_DIMS];
    memcpy(cur, in, (size_t)ndim * sizeof *in);
    memcpy(id, in, (size_t)ndim * sizeof *in);
    for (int i = 0; i < n; i++) {
        int st = gg_module_output_shape(m->children[order[i] < 0 ? c->relu : order[i]], nd, cur, &nd, nxt);
        if (st) return st;
        memcpy(cur, nxt, (size_t)nd * sizeof *cur);
    }
    if (c->ds >= 0) {
        int st = gg_module_output_shape(m->children[c->ds], ndim, in, &idn, id);
        if (st) return st;
    }
    if (!same_dims(nd, cur, idn, id)) {
        char a[GG_SHAPE_STR_MAX], b[GG_SHAPE_STR_MAX];
        return gg_module_fail(m, GG_ERR_SHAPE, "residual branch gives %s but the identity is %s",
                              gg__nn_shape_str(nd, cur, a, sizeof a), gg__nn_shape_str(idn, id, b, sizeof b));
    }
    *ond = nd;
    memcpy(out, cur, (size_t)nd * sizeof *cur);
    return GG_OK;
}

static gg_tensor *block_forward(gg_module *m, gg_tensor *x) {
    const block_impl *c = m->impl;
    int n = 0;
    const int *order = block_order(m, &n);
    gg_tensor *out = x;
    for (int i = 0; i < n && out; i++) out = gg_module_forward(m->children[order[i] < 0 ? c->relu : order[i]], out);
    gg_tensor *identity = c->ds >= 0 ? gg_module_forward(m->children[c->ds], x) : x;
    if (!out || !identity) return NULL;
    if (!gg_tensor_same_shape(out, identity)) { /* gg_add would broadcast [N,C,1,1] silently */
        char a[GG_SHAPE_STR_MAX], b[GG_SHAPE_STR_MAX];
        gg_module_fail(m, GG_ERR_SHAPE, "residual branch gives %s but the identity is %s (x %s)", GG_SHAPE_STR(out, a),
                       GG_SHAPE_STR(identity, b), GG_SHAPE_STR(x, a));
        return NULL;
    }
    return gg_module_forward(m->children[c->relu], gg_add(out, identity));
}

static void block_describe(const gg_module *m, char *buf, size_t size) {
    const block_impl *c = m->impl;
    int n = snprintf(buf, size, "%s %lld->%lld", m->def->kind, (long long)c->inplanes, (long long)c->outplanes);
    if (c->stride != 1 && n >= 0 && (size_t)n < size) snprintf(buf + n, size - (size_t)n, ", stride %d", c->stride);
}

static const gg_module_def BASIC_DEF = {"BasicBlock", block_forward, block_shape, NULL, block_describe, NULL};
static const gg_module_def BOTTLENECK_DEF = {"Bottleneck", block_forward, block_shape, NULL, block_describe, NULL};

static gg_module *conv_k(int64_t cin, int64_t cout, int k, int stride, int groups, gg_rng *rng, bool init,
                         const char *func) {
    gg_conv2d_params p = gg_conv2d_make(stride, k / 2, 1, groups);
    return gg__nn_conv2d(cin, cout, k, &p, false, rng, init, func);
}

static gg_module *downsample(int64_t cin, int64_t cout, int stride, gg_rng *rng, bool init, const char *func) {
    gg_module *ds = gg_nn_sequential_new();
    gg_nn_sequential_append(ds, conv_k(cin, cout, 1, stride, 1, rng, init, func));
    if (gg_nn_sequential_append(ds, gg_nn_batchnorm2d_new(cout))) {
        gg_module_free(ds);
        return NULL;
    }
    return ds;
}

/* Adds the children (ownership passes even on failure) and frees m on error. */
static gg_module *finish_block(gg_module *m, const char *const *names, gg_module *const *kids, int n) {
    int st = GG_OK;
    for (int i = 0; i < n; i++) {
        if (!st) st = gg_module_add_child(m, names[i], kids[i]);
        else gg_module_free(kids[i]);
    }
    if (st) {
        gg_module_free(m);
        return NULL;
    }
    return m;
}

gg_module *gg_nn_basic_block_new(int64_t inplanes, int64_t planes, int stride, gg_rng *rng) {
    if (inplanes < 1 || planes < 1 || stride < 1) {
        GG_FAIL(GG_ERR_ARG, "need inplanes, planes, stride >= 1, got %lld, %lld, %d", (long long)inplanes,
                (long long)planes, stride);
        return NULL;
    }
    gg_module *m = gg_module_new(&BASIC_DEF, sizeof(block_impl));
    if (!m) return NULL;
    const bool ds = stride != 1 || inplanes != planes;
    *(block_impl *)m->impl = (block_impl){inplanes, planes, planes, stride, 4, 4, ds ? 5 : -1};
    /* one statement per child: the generator is drawn in torchvision's construction order */
    const char *names[] = {"conv1", "bn1", "conv2", "bn2", "relu", "downsample"};
    gg_module *kids[6];
    kids[0] = conv_k(inplanes, planes, 3, stride, 1, rng, true, __func__);
    kids[1] = gg_nn_batchnorm2d_new(planes);
    kids[2] = conv_k(planes, planes, 3, 1, 1, rng, true, __func__);
    kids[3] = gg_nn_batchnorm2d_new(planes);
    kids[4] = gg_nn_relu_new();
    kids[5] = ds ? downsample(inplanes, planes, stride, rng, true, __func__) : NULL;
    return finish_block(m, names, kids, ds ? 6 : 5);
}

gg_module *gg__nn_bottleneck(int64_t inplanes, int64_t planes, int stride, int cardinality, int base_width,
                             const gg_conv3x3_spec *spec, gg_rng *rng, bool init, const char *func) {
    gg_conv3x3_spec def = {GG_CONV3X3_GROUPED, 0, GG_GATE_INIT_RANDOM};
    if (!spec) spec = &def;
    if (inplanes < 1 || planes < 1 || stride < 1 || cardinality < 1 || base_width < 1 || (int)spec->kind < 0 ||
        spec->kind >= GG_CONV3X3_KIND_COUNT || spec->groups < 0) {
        gg_error_set(GG_ERR_ARG, func,
                     "need inplanes, planes, stride, cardinality, base_width >= 1 and a known 3x3 kind, got %lld, "
                     "%lld, %d, %d, %d, kind %d, groups %d",
                     (long long)inplanes, (long long)planes, stride, cardinality, base_width, (int)spec->kind,
                     spec->groups);
        return NULL;
    }
    const int64_t width = planes * base_width / 64 * cardinality, outp = planes * 4;
    if (width < 1) {
        gg_error_set(GG_ERR_ARG, func, "width = planes %lld * base_width %d / 64 * cardinality %d is 0",
                     (long long)planes, base_width, cardinality);
        return NULL;
    }
    gg_module *m = gg_module_new(&BOTTLENECK_DEF, sizeof(block_impl));
    if (!m) return NULL;
    const bool ds = stride != 1 || inplanes != outp;
    *(block_impl *)m->impl = (block_impl){inplanes, outp, width, stride, 6, 6, ds ? 7 : -1};
    /* one statement per child: the generator is drawn in torchvision's construction order */
    const char *names[] = {"conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "relu", "downsample"};
    gg_module *kids[8];
    kids[0] = conv_k(inplanes, width, 1, 1, 1, rng, init, func);
    kids[1] = gg_nn_batchnorm2d_new(width);
    if (spec->kind == GG_CONV3X3_DGCONV) {
        gg_conv2d_params p = gg_conv2d_make(stride, 1, 1, 1);
        kids[2] = gg__nn_dgconv2d(width, 3, &p, false, spec->gate_init, rng, init, func);
    } else {
        int g = spec->kind == GG_CONV3X3_DENSE       ? 1
                : spec->kind == GG_CONV3X3_DEPTHWISE ? (int)width
                : spec->groups                       ? spec->groups
                                                     : cardinality;
        kids[2] = conv_k(width, width, 3, stride, g, rng, init, func);
    }
    kids[3] = gg_nn_batchnorm2d_new(width);
    kids[4] = conv_k(width, outp, 1, 1, 1, rng, init, func);
    kids[5] = gg_nn_batchnorm2d_new(outp);
    kids[6] = gg_nn_relu_new();
    kids[7] = ds ? downsample(inplanes, outp, stride, rng, init, func) : NULL;
    return finish_block(m, names, kids, ds ? 8 : 7);
}

gg_module *gg_nn_bottleneck_new(int64_t inplanes, int64_t planes, int stride, int cardinality, int base_width,
                                const gg_conv3x3_spec *spec, gg_rng *rng) {
    return gg__nn_bottleneck(inplanes, planes, stride, cardinality, base_width, spec, rng, true, __func__);
}
