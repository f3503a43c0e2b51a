/* GroupNet: a ResNeXt (torchvision's ResNet with Bottleneck blocks) whose 3x3 convolutions are DGConv or
 * one of the comparison kinds; the G-ResNeXt-50 and GroupNet-S configurations; DGConv layer listing,
 * statistics and the complexity-regularised loss. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "gg_alloc.h"
#include "gg_internal.h"
#include "gg_nn_internal.h"
#include "gg_ops.h"

static const gg_module_def GROUPNET_DEF = {"GroupNet", gg__sequential_forward, NULL, NULL, NULL, NULL};

gg_groupnet_config gg_groupnet_resnext50_config(gg_conv3x3_kind kind) {
    return (gg_groupnet_config){
        .in_channels = 3,
        .stem = GG_STEM_IMAGENET,
        .stem_channels = 64,
        .n_stages = 4,
        .blocks = {3, 4, 6, 3},
        .planes = {64, 128, 256, 512},
        .cardinality = 32,
        .base_width = 4,
        .conv3x3 = {kind, 0, GG_GATE_INIT_RANDOM},
        .num_classes = 1000,
        .zero_init_residual = false,
        .skip_init = false,
    };
}

gg_groupnet_config gg_groupnet_s_config(gg_conv3x3_kind kind) {
    return (gg_groupnet_config){
        .in_channels = 1,
        .stem = GG_STEM_SMALL,
        .stem_channels = 32,
        .n_stages = 3,
        .blocks = {1, 1, 1},
        .planes = {16, 32, 64},
        .cardinality = 8,
        .base_width = 16,
        .conv3x3 = {kind, 0, GG_GATE_INIT_RANDOM},
        .num_classes = 10,
        .zero_init_residual = false,
        .skip_init = false,
    };
}

static int check_config(const gg_groupnet_config *c, const char *f) {
    if (c->in_channels < 1 || c->stem_channels < 1 || c->num_classes < 1 || c->cardinality < 1 || c->base_width < 1)
        return gg_error_set(GG_ERR_ARG, f,
                       "need in_channels, stem_channels, num_classes, cardinality, base_width >= 1, got %d, %d, %d, "
                       "%d, %d",
                       c->in_channels, c->stem_channels, c->num_classes, c->cardinality, c->base_width);
    if ((int)c->stem < 0 || c->stem >= GG_STEM_KIND_COUNT) return gg_error_set(GG_ERR_ARG, f, "unknown stem %d", (int)c->stem);
    if (c->n_stages < 1 || c->n_stages > GG_GROUPNET_MAX_STAGES)
        return gg_error_set(GG_ERR_ARG, f, "n_stages %d out of [1, %d]", c->n_stages, GG_GROUPNET_MAX_STAGES);
    for (int s = 0; s < c->n_stages; s++)
        if (c->blocks[s] < 1 || c->planes[s] < 1)
            return gg_error_set(GG_ERR_ARG, f, "stage %d needs blocks >= 1 and planes >= 1, got %d and %d", s, c->blocks[s],
                           c->planes[s]);
    return GG_OK;
}

/* torchvision ResNet.__init__: conv weights kaiming_normal(fan_out, relu), BN weight 1 bias 0 (already
 * so), optionally bn3.weight 0 in every Bottleneck; Linear keeps PyTorch's default. */
typedef struct init_ctx {
    gg_rng *rng;
    bool zero_init_residual;
    int status;
} init_ctx;

static int init_visit(const char *path, gg_module *m, void *vctx) {
    init_ctx *c = vctx;
    (void)path;
    int st = GG_OK;
    if (m->def == &gg__conv2d_def) st = gg_init_kaiming_normal(m->params[0], 0.0f, GG_FAN_OUT, GG_NL_RELU, c->rng);
    else if (m->def == &gg__dgconv2d_def)
        st = gg_init_kaiming_normal(m->params[1], 0.0f, GG_FAN_OUT, GG_NL_RELU, c->rng);
    else if (c->zero_init_residual && !strcmp(m->def->kind, "Bottleneck") && m->n_children > 5)
        st = gg_tensor_fill(m->children[5]->params[0], 0.0f);
    if (st) c->status = st;
    return st;
}

gg_module *gg_groupnet_new(const gg_groupnet_config *cfg, gg_rng *rng) {
    if (!cfg) {
        GG_FAIL(GG_ERR_ARG, "NULL config");
        return NULL;
    }
    if (check_config(cfg, __func__)) return NULL;
    gg_module *net = gg_module_new(&GROUPNET_DEF, 0);
    if (!net) return NULL;
    const char *f = __func__;
    const int sc = cfg->stem_channels;
    int st;
    if (cfg->stem == GG_STEM_IMAGENET) {
        gg_conv2d_params p = gg_conv2d_make(2, 3, 1, 1);
        st = gg_module_add_child(net, "conv1", gg__nn_conv2d(cfg->in_channels, sc, 7, &p, false, rng, false, f));
    } else {
        gg_conv2d_params p = gg_conv2d_make(1, 1, 1, 1);
        st = gg_module_add_child(net, "conv1", gg__nn_conv2d(cfg->in_channels, sc, 3, &p, false, rng, false, f));
    }
    if (!st) st = gg_module_add_child(net, "bn1", gg_nn_batchnorm2d_new(sc));
    if (!st) st = gg_module_add_child(net, "relu", gg_nn_relu_new());
    if (!st && cfg->stem == GG_STEM_IMAGENET) st = gg_module_add_child(net, "maxpool", gg_nn_maxpool2d_new(3, 2, 1));
    int64_t inplanes = sc;
    for (int s = 0; !st && s < cfg->n_stages; s++) {
        gg_module *layer = gg_nn_sequential_new();
        for (int b = 0; layer && b < cfg->blocks[s]; b++) {
            int stride = b == 0 && s > 0 ? 2 : 1;
            gg_module *blk = gg__nn_bottleneck(inplanes, cfg->planes[s], stride, cfg->cardinality, cfg->base_width,
                                               &cfg->conv3x3, rng, false, f);
            if (gg_nn_sequential_append(layer, blk)) {
                gg_module_free(layer);
                layer = NULL;
            }
            inplanes = 4 * (int64_t)cfg->planes[s];
        }
        char name[16];
        snprintf(name, sizeof name, "layer%d", s + 1);
        st = gg_module_add_child(net, name, layer);
    }
    if (!st) st = gg_module_add_child(net, "avgpool", gg_nn_adaptive_avgpool2d_new(1, 1));
    if (!st) st = gg_module_add_child(net, "flatten", gg_nn_flatten_new(1, -1));
    if (!st) st = gg_module_add_child(net, "fc", gg_nn_linear_new(inplanes, cfg->num_classes, true, rng));
    if (!st && !cfg->skip_init) {
        init_ctx c = {rng, cfg->zero_init_residual, GG_OK};
        gg_module_foreach_module(net, init_visit, &c);
        st = c.status;
    }
    if (st) {
        gg_module_free(net);
        return NULL;
    }
    return net;
}

/* ---- DGConv layers, statistics, loss ---- */

typedef struct list_ctx {
    gg_module **out;
    int capacity, count;
} list_ctx;

static int list_visit(const char *path, gg_module *m, void *vctx) {
    (void)path;
    list_ctx *c = vctx;
    if (m->def != &gg__dgconv2d_def) return 0;
    if (c->count < c->capacity) c->out[c->count] = m;
    c->count++;
    return 0;
}

int gg_groupnet_dgconv_layers(gg_module *net, gg_module **out, int capacity) {
    if (!net) return gg__null_arg(__func__, "net");
    if (capacity < 0 || (capacity > 0 && !out)) return GG_FAIL(GG_ERR_ARG, "capacity %d with a NULL array", capacity);
    list_ctx c = {out, capacity, 0};
    gg_module_foreach_module(net, list_visit, &c);
    return c.count;
}

/* The DGConv2d layers in a caller-freed (gg_free) array; *n their number. NULL with *n == 0 if none. */
static gg_module **dg_layers(gg_module *net, int *n, const char *func) {
    *n = gg_groupnet_dgconv_layers(net, NULL, 0);
    if (*n <= 0) {
        if (*n < 0) gg_error_set(gg_last_status(), func, "%s", gg_last_error());
        return NULL;
    }
    gg_module **layers = gg_alloc((size_t)*n * sizeof *layers);
    if (!layers) {
        *n = -1;
        return NULL;
    }
    gg_groupnet_dgconv_layers(net, layers, *n);
    return layers;
}

int gg_groupnet_stats_get(gg_module *net, int64_t in_h, int64_t in_w, gg_groupnet_stats *st) {
    if (!net || !st) return GG_FAIL(GG_ERR_ARG, "NULL %s", net ? "stats" : "net");
    /* the input channel count from the first parameter with a [K, C, R, S] shape (the stem conv) */
    gg_tensor *first = NULL;
    gg_module_parameters(net, &first, 1);
    if (!first || first->ndim != 4)
        return GG_FAIL(GG_ERR_ARG, "cannot tell the input channels: the first parameter is not a conv weight");
    int64_t macs = 0;
    int s = gg_module_macs(net, GG_SHAPE(1, first->shape[1], in_h, in_w), &macs);
    if (s) return s;
    int n = 0;
    gg_module **layers = dg_layers(net, &n, __func__);
    if (n < 0) return gg_last_status();
    *st = (gg_groupnet_stats){.n_dgconv = n, .params = gg_module_num_parameters(net, false), .macs = macs};
    st->effective_params = st->params;
    int64_t *chans = n ? gg_alloc((size_t)n * sizeof *chans) : NULL;
    if (n && !chans) {
        gg_free(layers);
        return gg_last_status();
    }
    for (int i = 0; i < n; i++) {
        gg_dgconv2d_info info;
        gg_nn_dgconv2d_info(layers[i], &info);
        st->n_gates += info.n_gates;
        st->n_open_gates += info.n_open;
        st->dgconv_macs += info.macs;
        st->zeta += info.zeta;
        const int64_t rs = (int64_t)info.kernel_size * info.kernel_size;
        st->effective_params += llround((double)rs * info.zeta) - info.channels * info.channels * rs;
        chans[i] = info.channels;
    }
    st->budget32 = n ? gg_dgconv_budget(chans, n, 32.0) : 0.0;
    gg_free(chans);
    gg_free(layers);
    return GG_OK;
}

gg_tensor *gg_groupnet_regularized_loss(gg_module *net, gg_tensor *ce, double b, double a, gg_zeta_form form) {
    GG_CHECK_ARG(ce, NULL);
    if (!net) {
        gg__null_arg(__func__, "net");
        return NULL;
    }
    int n = 0;
    gg_module **layers = dg_layers(net, &n, __func__);
    if (n < 0) return NULL;
    if (n == 0) return ce;
    gg_tensor **zetas = gg_alloc((size_t)n * (sizeof(gg_tensor *) + sizeof(int64_t)));
    gg_tensor *loss = NULL;
    if (zetas) {
        int64_t *chans = (int64_t *)(zetas + n);
        for (int i = 0; i < n; i++) {
            zetas[i] = gg_dgconv_zeta(layers[i]->params[0], form);
            chans[i] = layers[i]->params[1]->shape[0];
        }
        double o = gg_dgconv_budget(chans, n, b);
        if (o > 0) loss = gg_dgconv_regularized_loss(ce, zetas, n, o, a);
        gg_free(zetas);
    }
    gg_free(layers);
    return loss;
}
