/* GroupNet (gg_nn.h): G-ResNeXt-50 and its comparison variants against parameter and MAC counts computed
 * independently here (and torchvision's 25,028,904 for resnext50_32x4d), state_dict names, one 224x224
 * forward, GroupNet-S, a small end-to-end training run, the regularised loss, whole-network export and
 * leaks. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "gg_test_util.h"
#include "groupgrad.h"

static void teardown(void) {
    gg_tape_reset(NULL);
    gg_set_grad_enabled(true);
    gg_clear_error();
}

TestSuite(groupnet, .fini = teardown);

/* ---- independent counts ---- */

static int ilog2(int64_t c) {
    int k = 0;
    while (((int64_t)1 << k) < c) k++;
    return k;
}

/* Parameters and per-sample MACs of a config, from torchvision's definitions, written out by hand.
 * DGConv 3x3 MACs are dense here (all gates open). */
static void count_config(const gg_groupnet_config *c, int64_t hw, int64_t *params, int64_t *macs) {
    const int sk = c->stem == GG_STEM_IMAGENET ? 7 : 3;
    int64_t p = (int64_t)c->stem_channels * c->in_channels * sk * sk + 2 * c->stem_channels;
    int64_t h = c->stem == GG_STEM_IMAGENET ? hw / 2 : hw;
    int64_t m = (int64_t)c->stem_channels * c->in_channels * sk * sk * h * h;
    if (c->stem == GG_STEM_IMAGENET) h /= 2;
    int64_t inpl = c->stem_channels;
    for (int s = 0; s < c->n_stages; s++) {
        for (int b = 0; b < c->blocks[s]; b++) {
            const int64_t width = (int64_t)c->planes[s] * c->base_width / 64 * c->cardinality, out = 4 * c->planes[s];
            const int stride = b == 0 && s > 0 ? 2 : 1;
            const int64_t ho = h / stride;
            int64_t g = 1;
            switch (c->conv3x3.kind) {
            case GG_CONV3X3_GROUPED: g = c->conv3x3.groups ? c->conv3x3.groups : c->cardinality; break;
            case GG_CONV3X3_DEPTHWISE: g = width; break;
            default: g = 1;
            }
            p += inpl * width + 2 * width;                         /* conv1, bn1 */
            p += width * (width / g) * 9 + 2 * width;              /* conv2, bn2 */
            if (c->conv3x3.kind == GG_CONV3X3_DGCONV) p += ilog2(width); /* gates */
            p += width * out + 2 * out;                            /* conv3, bn3 */
            m += inpl * width * h * h + width * (width / g) * 9 * ho * ho + width * out * ho * ho;
            if (b == 0 && (stride != 1 || inpl != out)) {
                p += inpl * out + 2 * out; /* downsample conv, bn */
                m += inpl * out * ho * ho;
            }
            inpl = out;
            h = ho;
        }
    }
    p += inpl * c->num_classes + c->num_classes;
    m += inpl * c->num_classes;
    *params = p;
    *macs = m;
}

/* ---- G-ResNeXt-50 ---- */

Test(groupnet, resnext50_counts_names_forward) {
    gg_rng r;
    gg_rng_init(&r, 1);
    gg_groupnet_config cfg = gg_groupnet_resnext50_config(GG_CONV3X3_DGCONV);
    gg_module *net = gg_groupnet_new(&cfg, &r);
    cr_assert_not_null(net, "%s", gg_last_error());
    int64_t p_ind, m_ind;
    count_config(&cfg, 224, &p_ind, &m_ind);
    cr_assert_eq(p_ind, 68883377, "independent count %lld", (long long)p_ind);
    cr_assert_eq(gg_module_num_parameters(net, true), 68883377);
    gg_module *layers[32];
    cr_assert_eq(gg_groupnet_dgconv_layers(net, layers, 32), 16);
    int gates = 0;
    for (int i = 0; i < 16; i++) {
        gg_dgconv2d_info info;
        cr_assert_eq(gg_nn_dgconv2d_info(layers[i], &info), GG_OK);
        gates += info.n_gates;
    }
    cr_assert_eq(gates, 137);
    gg_groupnet_stats st;
    cr_assert_eq(gg_groupnet_stats_get(net, 224, 224, &st), GG_OK, "%s", gg_last_error());
    cr_assert_eq(st.n_dgconv, 16);
    cr_assert_eq(st.n_gates, 137);
    cr_assert_eq(st.params, 68883377);
    /* budget with b = 32: sum C^2 / 32 over the 16 layers */
    cr_assert_eq(st.budget32, (3.0 * 128 * 128 + 4.0 * 256 * 256 + 6.0 * 512 * 512 + 3.0 * 1024 * 1024) / 32);

    /* state_dict names: 161 tensors of resnext50_32x4d plus 16 gates; 53 BatchNorms x 3 buffers */
    cr_assert_eq(gg_module_parameters(net, NULL, 0), 177);
    cr_assert_eq(gg_module_buffers(net, NULL, 0), 159);
    static gg_named_tensor nt[177];
    cr_assert_eq(gg_module_named_parameters(net, nt, 177), 177);
    const char *first[] = {"conv1.weight", "bn1.weight", "bn1.bias", "layer1.0.conv1.weight", "layer1.0.bn1.weight",
                           "layer1.0.bn1.bias", "layer1.0.conv2.gate", "layer1.0.conv2.conv.weight"};
    for (int i = 0; i < 8; i++) cr_assert_str_eq(nt[i].name, first[i]);
    cr_assert_str_eq(nt[175].name, "fc.weight");
    cr_assert_str_eq(nt[176].name, "fc.bias");
    gt_assert_shape(gg_module_get_tensor(net, "layer4.2.conv2.conv.weight"), 1024, 1024, 3, 3);
    gt_assert_shape(gg_module_get_tensor(net, "layer4.2.conv2.gate"), 10);
    gt_assert_shape(gg_module_get_tensor(net, "layer2.0.downsample.0.weight"), 512, 256, 1, 1);
    gg_tensor *nbt = gg_module_get_tensor(net, "layer3.5.bn3.num_batches_tracked");
    cr_assert(nbt && nbt->ndim == 0, "num_batches_tracked is a rank-0 float buffer");
    gt_assert_shape(gg_module_get_tensor(net, "fc.weight"), 1000, 2048);

    /* torchvision's init: conv weights kaiming_normal(fan_out, relu): std sqrt(2 / (K R S)) */
    gg_tensor *w = gg_module_get_tensor(net, "layer3.0.conv2.conv.weight"); /* [512,512,3,3] */
    double s2 = 0;
    for (int64_t i = 0; i < w->numel; i++) s2 += (double)gg_tensor_data(w)[i] * gg_tensor_data(w)[i];
    double sd = sqrt(s2 / (double)w->numel), want = sqrt(2.0 / (512 * 9));
    cr_assert(fabs(sd - want) < 0.02 * want, "weight std %g, kaiming_normal(fan_out) gives %g", sd, want);

    /* one 224x224 image through the network (eval, no grad) */
    gg_module_eval(net);
    gg_tensor *x = gg_tensor_empty(GG_SHAPE(1, 3, 224, 224));
    gg_rand_normal(x, 0, 1, &r);
    gg_no_grad_begin();
    gg_tensor *y = gg_module_forward(net, x);
    gg_no_grad_end();
    gt_assert_shape(y, 1, 1000);
    for (int64_t i = 0; i < 1000; i++) cr_assert(isfinite(gg_tensor_data(y)[i]), "logit %lld", (long long)i);
    gg_dgconv2d_info info;
    gg_nn_dgconv2d_info(layers[15], &info);
    cr_assert_eq(info.out_h, 7, "the forward records layer4's output size");
    gg_tensor_free(x);
    gg_module_free(net);
}

Test(groupnet, resnext50_variants) {
    /* The comparison variants from the same builder. GROUPED with 32 groups is resnext50_32x4d itself:
     * torchvision's 25,028,904 parameters and 4.23 GMACs. */
    const struct {
        gg_conv3x3_kind kind;
        int groups;
        int64_t params;
    } cases[] = {
        {GG_CONV3X3_GROUPED, 32, 25028904},
        {GG_CONV3X3_DENSE, 0, 68883240},
        {GG_CONV3X3_DEPTHWISE, 0, 23682216},
    };
    for (int i = 0; i < 3; i++) {
        gg_groupnet_config cfg = gg_groupnet_resnext50_config(cases[i].kind);
        cfg.conv3x3.groups = cases[i].groups;
        cfg.skip_init = true; /* counting only: 69M normal draws would dominate the test's time */
        int64_t p_ind, m_ind, macs = 0;
        count_config(&cfg, 224, &p_ind, &m_ind);
        cr_assert_eq(p_ind, cases[i].params, "case %d: independent count %lld", i, (long long)p_ind);
        gg_module *net = gg_groupnet_new(&cfg, NULL);
        cr_assert_not_null(net, "%s", gg_last_error());
        cr_assert_eq(gg_module_num_parameters(net, false), cases[i].params, "case %d: %lld", i,
                     (long long)gg_module_num_parameters(net, false));
        cr_assert_eq(gg_groupnet_dgconv_layers(net, NULL, 0), 0);
        cr_assert_eq(gg_module_macs(net, GG_SHAPE(1, 3, 224, 224), &macs), GG_OK, "%s", gg_last_error());
        cr_assert_eq(macs, m_ind, "case %d: MACs %lld, expected %lld", i, (long long)macs, (long long)m_ind);
        if (i == 0) cr_assert_eq(macs, 4230479872LL);
        int nd = 0;
        int64_t out[8];
        cr_assert_eq(gg_module_output_shape(net, GG_SHAPE(8, 3, 224, 224), &nd, out), GG_OK);
        cr_assert(nd == 2 && out[0] == 8 && out[1] == 1000);
        gg_module_free(net);
    }
    /* DGConv with every gate open has the dense variant's MACs; with the reference's closed start, the
     * depthwise variant's */
    gg_groupnet_config cfg = gg_groupnet_resnext50_config(GG_CONV3X3_DGCONV);
    cfg.conv3x3.gate_init = GG_GATE_INIT_OPEN;
    cfg.skip_init = true;
    gg_groupnet_config dense = gg_groupnet_resnext50_config(GG_CONV3X3_DENSE);
    int64_t p_d, m_d;
    count_config(&dense, 224, &p_d, &m_d);
    gg_module *net = gg_groupnet_new(&cfg, NULL);
    gg_groupnet_stats st;
    cr_assert_eq(gg_groupnet_stats_get(net, 224, 224, &st), GG_OK, "%s", gg_last_error());
    cr_assert_eq(st.macs, m_d);
    cr_assert_eq(st.n_open_gates, 137);
    cr_assert_eq(st.effective_params, st.params);
    gg_module_free(net);
}

/* ---- GroupNet-S ---- */

Test(groupnet, groupnet_s) {
    gg_rng r;
    gg_rng_init(&r, 2);
    gg_groupnet_config cfg = gg_groupnet_s_config(GG_CONV3X3_DGCONV);
    gg_module *net = gg_groupnet_new(&cfg, &r);
    cr_assert_not_null(net, "%s", gg_last_error());
    int64_t p_ind, m_dense;
    count_config(&cfg, 28, &p_ind, &m_dense);
    cr_assert_eq(p_ind, 306684);
    cr_assert_eq(gg_module_num_parameters(net, false), 306684);
    cr_assert_eq(m_dense, 38763520); /* MACs with every gate open */
    gg_groupnet_stats st;
    cr_assert_eq(gg_groupnet_stats_get(net, 28, 28, &st), GG_OK, "%s", gg_last_error());
    cr_assert_eq(st.n_dgconv, 3);
    cr_assert_eq(st.n_gates, 5 + 6 + 7);
    /* effective MACs: the non-DGConv part plus sum 9 * Ho * Wo * zeta */
    gg_module *layers[3];
    gg_groupnet_dgconv_layers(net, layers, 3);
    int64_t dg = 0, dg_dense = 0;
    const int64_t hw[3] = {28 * 28, 14 * 14, 7 * 7}, c[3] = {32, 64, 128};
    for (int i = 0; i < 3; i++) {
        gg_dgconv2d_info info;
        gg_nn_dgconv2d_info(layers[i], &info);
        cr_assert_eq(info.channels, c[i]);
        dg += 9 * hw[i] * (int64_t)info.zeta;
        dg_dense += 9 * hw[i] * c[i] * c[i];
    }
    cr_assert_eq(st.dgconv_macs, dg);
    cr_assert_eq(st.macs, m_dense - dg_dense + dg);
    gg_tensor *x = gg_tensor_empty(GG_SHAPE(4, 1, 28, 28));
    gg_rand_normal(x, 0, 1, &r);
    gt_assert_shape(gg_module_forward(net, x), 4, 10);
    gg_tensor_free(x);
    gg_module_free(net);
}

/* A GroupNet small enough to train in the test: 8x8 grayscale, two stages, widths 8 and 16. */
static gg_groupnet_config tiny_config(void) {
    gg_groupnet_config cfg = gg_groupnet_s_config(GG_CONV3X3_DGCONV);
    cfg.stem_channels = 8;
    cfg.n_stages = 2;
    cfg.blocks[0] = cfg.blocks[1] = 1;
    cfg.planes[0] = 4;
    cfg.planes[1] = 8;
    cfg.cardinality = 2;
    cfg.base_width = 64;
    cfg.num_classes = 3;
    return cfg;
}

static float train_step(gg_module *net, gg_tensor **ps, int np, gg_tensor *x, const int32_t *labels, int n, float lr,
                        bool *gates_learn) {
    gg_tensor *logits = gg_module_forward(net, x);
    gg_tensor *ce = gg_cross_entropy(logits, labels, n, GG_REDUCE_MEAN, 0);
    gg_tensor *loss = gg_groupnet_regularized_loss(net, ce, 32, -0.02, GG_ZETA_CODE);
    cr_assert_not_null(loss, "%s", gg_last_error());
    cr_assert_eq(gg_backward(loss), GG_OK, "%s", gg_last_error());
    float l = 0;
    gg_tensor_item(ce, &l);
    gg_tensor *gate = gg_module_get_tensor(net, "layer1.0.conv2.gate");
    if (gate->grad && gg_tensor_data(gate->grad)[0] != 0) *gates_learn = true;
    for (int i = 0; i < np; i++) { /* SGD by hand */
        float *p = gg_tensor_data(ps[i]);
        const float *g = gg_tensor_data(ps[i]->grad);
        for (int64_t j = 0; j < ps[i]->numel; j++) p[j] -= lr * g[j];
        gg_tensor_bump_version(ps[i]);
    }
    gg_module_zero_grad(net);
    gg_tape_reset(NULL);
    return l;
}

Test(groupnet, training_reduces_loss) {
    gg_rng r;
    gg_rng_init(&r, 3);
    gg_groupnet_config cfg = tiny_config();
    gg_module *net = gg_groupnet_new(&cfg, &r);
    cr_assert_not_null(net, "%s", gg_last_error());
    enum { N = 16 };
    gg_tensor *x = gg_tensor_empty(GG_SHAPE(N, 1, 8, 8));
    gg_rand_normal(x, 0, 1, &r);
    int32_t labels[N];
    for (int i = 0; i < N; i++) labels[i] = (int32_t)(gg_rng_u32(&r) % 3);
    gg_tensor *ps[64];
    int np = gg_module_parameters(net, ps, 64);
    cr_assert(np > 0 && np <= 64);
    float first = 0, last = 0, head5 = 0, tail5 = 0;
    bool gates_learn = false;
    for (int step = 0; step < 20; step++) {
        float l = train_step(net, ps, np, x, labels, N, 0.1f, &gates_learn);
        cr_assert(isfinite(l), "step %d: loss %g", step, (double)l);
        if (step < 5) head5 += l / 5;
        if (step >= 15) tail5 += l / 5;
        if (step == 0) first = l;
        last = l;
    }
    /* random labels on 16 samples: memorisation, a steady decrease (about 1.16 -> 0.82 with this seed) */
    cr_assert(last < 0.85f * first, "loss %g -> %g over 20 SGD steps", (double)first, (double)last);
    cr_assert(tail5 < head5 - 0.1f, "mean loss of steps 0-4 %g, of steps 15-19 %g", (double)head5, (double)tail5);
    cr_assert(gates_learn, "the regularised loss gives the gates a gradient");
    /* eval mode uses the running statistics the training updated */
    cr_assert_eq(gg_tensor_data(gg_module_get_tensor(net, "bn1.num_batches_tracked"))[0], 20.0f);
    gg_module_eval(net);
    gt_assert_shape(gg_module_forward(net, x), N, 3);
    gg_tensor_free(x);
    gg_module_free(net);
}

Test(groupnet, export_whole_network) {
    gg_rng r;
    gg_rng_init(&r, 4);
    gg_groupnet_config cfg = gg_groupnet_s_config(GG_CONV3X3_DGCONV);
    gg_module *net = gg_groupnet_new(&cfg, &r);
    cr_assert_not_null(net, "%s", gg_last_error());
    /* give the BatchNorms non-trivial running statistics, then compare in eval mode */
    gg_tensor *x = gg_tensor_empty(GG_SHAPE(8, 1, 28, 28));
    gg_rand_normal(x, 0, 1, &r);
    gg_no_grad_begin();
    gg_module_forward(net, x);
    gg_module_eval(net);
    gg_tensor *y = gg_tensor_copy(gg_module_forward(net, x));
    gg_groupnet_stats before;
    gg_groupnet_stats_get(net, 28, 28, &before);
    cr_assert_eq(gg_module_export_dgconv(net), 3, "%s", gg_last_error());
    cr_assert_eq(gg_groupnet_dgconv_layers(net, NULL, 0), 0);
    gg_tensor *ye = gg_module_forward(net, x);
    gg_no_grad_end();
    cr_assert_not_null(ye, "%s", gg_last_error());
    double d = 0;
    for (int64_t i = 0; i < y->numel; i++) d = fmax(d, fabs((double)gg_tensor_data(y)[i] - gg_tensor_data(ye)[i]));
    cr_assert(d <= 1e-4, "exported network's logits differ by %g", d);
    /* deploy parameters = effective parameters minus the gates; the MACs are unchanged */
    cr_assert_eq(gg_module_num_parameters(net, false), before.effective_params - before.n_gates);
    int64_t macs = 0;
    gg_module_macs(net, GG_SHAPE(1, 1, 28, 28), &macs);
    cr_assert_eq(macs, before.macs);
    gg_tensor_free(x);
    gg_tensor_free(y);
    gg_module_free(net);
}

Test(groupnet, config_errors) {
    gg_groupnet_config cfg = gg_groupnet_s_config(GG_CONV3X3_DGCONV);
    cfg.n_stages = 5;
    cr_assert_null(gg_groupnet_new(&cfg, NULL));
    cr_assert(strstr(gg_last_error(), "gg_groupnet_new") && strstr(gg_last_error(), "n_stages 5"), "%s",
              gg_last_error());
    cfg = gg_groupnet_s_config(GG_CONV3X3_DGCONV);
    cfg.cardinality = 3; /* widths 12, 24, 48: not powers of two */
    cr_assert_null(gg_groupnet_new(&cfg, NULL));
    cr_assert(strstr(gg_last_error(), "power-of-two") && strstr(gg_last_error(), "got 12"), "%s", gg_last_error());
    cfg.conv3x3.kind = GG_CONV3X3_GROUPED; /* grouped by cardinality 3: fine */
    gg_module *net = gg_groupnet_new(&cfg, NULL);
    cr_assert_not_null(net, "%s", gg_last_error());
    gg_tensor *x = gg_tensor_zeros(GG_SHAPE(2, 3, 28, 28)); /* RGB into a grayscale stem */
    cr_assert_null(gg_module_forward(net, x));
    cr_assert_str_eq(gg_last_error(),
                     "gg_module_forward: conv1 (Conv2d 1->32, 3x3): input has 3 channels, expected 1 (x [2,3,28,28])");
    gg_tensor_free(x);
    gg_module_free(net);
}

Test(groupnet, no_leak) {
    gg_tape_reset(NULL);
    size_t base = gg_alloc_live_bytes();
    gg_rng r;
    gg_rng_init(&r, 5);
    gg_groupnet_config cfg = tiny_config();
    gg_module *net = gg_groupnet_new(&cfg, &r);
    cr_assert_not_null(net, "%s", gg_last_error());
    gg_tensor *x = gg_tensor_empty(GG_SHAPE(4, 1, 8, 8));
    gg_rand_normal(x, 0, 1, &r);
    const int32_t labels[4] = {0, 1, 2, 0};
    gg_tensor *ps[64];
    int np = gg_module_parameters(net, ps, 64);
    bool gl = false;
    for (int step = 0; step < 2; step++) train_step(net, ps, np, x, labels, 4, 0.05f, &gl);
    gg_module_forward(net, x); /* a pending graph at free time */
    gg_module_free(net);
    gg_tensor_free(x);
    gg_tape_reset(NULL);
    cr_assert_eq(gg_alloc_live_bytes(), base, "live bytes %zu, baseline %zu", gg_alloc_live_bytes(), base);
}
