/* GroupNet-S training throughput: images/s of a whole training step (forward, cross entropy, backward, SGD
 * with momentum) for the DGConv network and its dense, grouped and depthwise twins. The same measurement as
 * bench/torch_groupnet.py, which runs the same networks in PyTorch.
 *
 *   bench_groupnet [--model groupnet|dense|grouped:G|depthwise|all] [--threads N] [--batch 128] [--warmup 3]
 *                  [--windows 5] [--steps 4] [--dgconv-path auto|fast|composite] [--conv-benchmark] [--seed S]
 *                  [--json] [--quick]
 *
 * Network: gg_groupnet_new(gg_groupnet_s_config(kind)) (grouped:G sets conv3x3.groups = G; grouped:8 is the
 * cardinality), initialised from seed S, in training mode. One step = gg_optim_zero_grad, gg_module_forward,
 * gg_cross_entropy (mean), gg_backward, gg_optim_step (SGD lr 0.01, momentum 0.9, no weight decay),
 * gg_tape_reset, on one fixed random batch (x ~ N(0, 1) [B,1,28,28], labels uniform in 0..9). --warmup steps
 * are not timed (with --conv-benchmark, gg_conv_set_benchmark(true), the first step of each convolution
 * shape also times its kernels to choose them; by default fixed rules choose), then
 * --windows windows of --steps steps: the median window's images/s is the result (min and max also shown).
 * --dgconv-path forces every DGConv layer's execution path (default auto: the grouped fast path, as every
 * gate is nonzero). --quick (the smoke test): batch 8, 1 warm-up step, 1 window of 1 step. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "groupgrad.h"

typedef struct options {
    const char *model;
    int threads, batch, warmup, windows, steps;
    uint64_t seed;
    gg_dgconv_path path;
    bool json, conv_benchmark;
} options;

/* groupgrad's parameter counts of GroupNet-S (gg_nn.h; equal in bench/torch_groupnet.py). */
static int64_t expected_params(const char *model) {
    return !strcmp(model, "groupnet")    ? 306684
           : !strcmp(model, "dense")     ? 306666
           : !strcmp(model, "grouped:8") ? 137322
           : !strcmp(model, "depthwise") ? 115146
                                         : -1;
}

/* "groupnet", "dense", "depthwise" or "grouped:G" -> a GroupNet-S config; -1 for anything else. */
static int model_config(const char *model, gg_groupnet_config *cfg) {
    static const char *const names[] = {"groupnet", "dense", "grouped", "depthwise"};
    for (int k = 0; k < GG_CONV3X3_KIND_COUNT; k++) {
        const size_t n = strlen(names[k]);
        if (strncmp(model, names[k], n)) continue;
        *cfg = gg_groupnet_s_config((gg_conv3x3_kind)k);
        if (k != GG_CONV3X3_GROUPED) return model[n] ? -1 : 0;
        char *end = NULL;
        long g = model[n] == ':' ? strtol(model + n + 1, &end, 10) : 0;
        if (g < 1 || g > 1024 || *end) return -1;
        cfg->conv3x3.groups = (int)g;
        return 0;
    }
    return -1;
}

static int fail(const char *model, const char *what) {
    fprintf(stderr, "bench_groupnet: %s: %s: %s\n", model, what, gg_last_error());
    gg_tape_reset(NULL);
    return 1;
}

/* One training step; GG_OK or a status (the message is recorded). */
static int train_step(gg_module *net, gg_optim *opt, gg_tensor *x, const int32_t *labels, int64_t n, float *loss) {
    gg_optim_zero_grad(opt);
    gg_tensor *l = gg_cross_entropy(gg_module_forward(net, x), labels, n, GG_REDUCE_MEAN, 0.0f);
    int st = !l ? gg_last_status() : gg_backward(l);
    if (!st) st = gg_optim_step(opt);
    if (!st && loss) st = gg_tensor_item(l, loss);
    gg_tape_reset(NULL);
    return st;
}

static int run_model(const char *model, const options *o) {
    gg_groupnet_config cfg;
    if (model_config(model, &cfg)) {
        fprintf(stderr, "bench_groupnet: unknown model '%s' (groupnet, dense, grouped:G, depthwise, all)\n",
                model);
        return 2;
    }
    gg_rng rng;
    gg_rng_init(&rng, o->seed);
    gg_module *net = gg_groupnet_new(&cfg, &rng);
    gg_optim *opt = gg_optim_new(GG_OPTIM_SGD);
    gg_tensor *x = gg_tensor_empty(GG_SHAPE(o->batch, 1, 28, 28));
    gg_tensor *params[256];
    int32_t *labels = malloc((size_t)o->batch * sizeof *labels);
    double *rates = malloc((size_t)o->windows * sizeof *rates);
    int st = 1, n_params = net ? gg_module_parameters(net, params, 256) : -1;
    gg_groupnet_stats stats;
    gg_optim_hparams hp = gg_sgd_hparams(0.01);
    hp.momentum = 0.9;
    if (!net || !opt || !x || !labels || !rates || n_params < 1 || n_params > 256 ||
        gg_rand_normal(x, 0.0f, 1.0f, &rng) || gg_optim_add_group(opt, params, NULL, n_params, &hp) < 0 ||
        gg_groupnet_stats_get(net, 28, 28, &stats)) {
        st = fail(model, "setup");
        goto done;
    }
    for (int i = 0; i < o->batch; i++) labels[i] = (int32_t)(gg_rng_u32(&rng) % 10);
    gg_module *layers[16];
    const int n_dg = gg_groupnet_dgconv_layers(net, layers, 16);
    gg_dgconv_opts dgo = gg_dgconv_default();
    dgo.path = o->path;
    for (int i = 0; i < n_dg && i < 16; i++)
        if (gg_nn_dgconv2d_set_opts(layers[i], &dgo)) {
            st = fail(model, "DGConv path");
            goto done;
        }
    const int64_t params_count = gg_module_num_parameters(net, false), expected = expected_params(model);
    if (expected >= 0 && params_count != expected) {
        fprintf(stderr, "bench_groupnet: %s has %lld parameters, GroupNet-S should have %lld\n", model,
                (long long)params_count, (long long)expected);
        goto done;
    }
    float loss = 0;
    for (int i = 0; i < o->warmup; i++)
        if (train_step(net, opt, x, labels, o->batch, &loss)) {
            st = fail(model, "warm-up step");
            goto done;
        }
    for (int w = 0; w < o->windows; w++) {
        double t0 = bench_now_s();
        for (int i = 0; i < o->steps; i++)
            if (train_step(net, opt, x, labels, o->batch, &loss)) {
                st = fail(model, "training step");
                goto done;
            }
        rates[w] = (double)o->batch * o->steps / (bench_now_s() - t0);
    }
    const double lo = bench_minimum(rates, o->windows), med = bench_median(rates, o->windows);
    const double hi = rates[o->windows - 1]; /* bench_median sorted the array */
    if (o->json) {
        const char *path = o->path == GG_DGCONV_FAST        ? "fast"
                           : o->path == GG_DGCONV_COMPOSITE ? "composite"
                                                            : "auto";
        printf("{\"library\": \"groupgrad\", \"model\": \"%s\", \"threads\": %d, \"batch\": %d, \"params\": %lld, "
               "\"macs_per_image\": %lld, \"dgconv_groups\": \"%d layers, %d of %d gates open\", \"dgconv_path\": "
               "\"%s\", \"conv_benchmark\": %s, \"images_per_s\": %.2f, \"min_images_per_s\": %.2f, "
               "\"max_images_per_s\": %.2f, \"ms_per_step\": %.3f, \"windows\": %d, \"steps_per_window\": %d, "
               "\"warmup\": %d, \"final_loss\": %.6f}\n",
               model, o->threads, o->batch, (long long)params_count, (long long)stats.macs, stats.n_dgconv,
               stats.n_open_gates, stats.n_gates, path, o->conv_benchmark ? "true" : "false", med, lo, hi,
               1e3 * o->batch / med, o->windows, o->steps, o->warmup, (double)loss);
    }
    else {
        char range[48];
        snprintf(range, sizeof range, "(%.0f-%.0f)", lo, hi);
        printf("%-12s %9lld %10.2f %10.1f %17s %9.1f\n", model, (long long)params_count, (double)stats.macs / 1e6,
               med, range, 1e3 * o->batch / med);
    }
    fflush(stdout);
    st = 0;
done:
    gg_tensor_free(x);
    gg_optim_free(opt);
    gg_module_free(net);
    free(labels), free(rates);
    return st;
}

static int parse_int(const char *s, int lo, int hi, int *out) {
    char *end = NULL;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

int main(int argc, char **argv) {
    options o = {"all", 1, 128, 3, 5, 4, 0, GG_DGCONV_AUTO, false, false};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0, seed = 0;
        if (!strcmp(a, "--json")) o.json = true;
        else if (!strcmp(a, "--conv-benchmark")) o.conv_benchmark = true;
        else if (!strcmp(a, "--quick")) o.batch = 8, o.warmup = 1, o.windows = 1, o.steps = 1;
        else if (!strcmp(a, "--model") && v) o.model = v, i++;
        else if (!strcmp(a, "--threads")) bad = parse_int(v, 1, 1024, &o.threads), i++;
        else if (!strcmp(a, "--batch")) bad = parse_int(v, 1, 1 << 16, &o.batch), i++;
        else if (!strcmp(a, "--warmup")) bad = parse_int(v, 0, 1 << 20, &o.warmup), i++;
        else if (!strcmp(a, "--windows")) bad = parse_int(v, 1, 1 << 20, &o.windows), i++;
        else if (!strcmp(a, "--steps")) bad = parse_int(v, 1, 1 << 20, &o.steps), i++;
        else if (!strcmp(a, "--seed")) bad = parse_int(v, 0, 1 << 30, &seed), o.seed = (uint64_t)seed, i++;
        else if (!strcmp(a, "--dgconv-path") && v) {
            o.path = !strcmp(v, "auto") ? GG_DGCONV_AUTO : !strcmp(v, "fast") ? GG_DGCONV_FAST
                     : !strcmp(v, "composite") ? GG_DGCONV_COMPOSITE : GG_DGCONV_PATH_COUNT;
            bad = o.path == GG_DGCONV_PATH_COUNT, i++;
        } else bad = 1;
        if (bad) {
            fprintf(stderr, "bench_groupnet: bad argument %s%s%s\nusage: %s [--model groupnet|dense|grouped:G|"
                    "depthwise|all] [--threads N] [--batch N] [--warmup N] [--windows N] [--steps N] "
                    "[--dgconv-path auto|fast|composite] [--conv-benchmark] [--seed S] [--json] [--quick]\n",
                    a, v ? " " : "", v ? v : "", argv[0]);
            return 2;
        }
    }
    if (gg_set_num_threads(o.threads)) return fail(o.model, "--threads");
    gg_conv_set_benchmark(o.conv_benchmark);
    if (!o.json)
        printf("groupgrad %s, %d thread%s, batch %d, GroupNet-S 28x28, SGD momentum 0.9, conv kernels %s; median "
               "of %d windows of %d steps after %d warm-up steps\n%-12s %9s %10s %10s %17s %9s\n",
               gg_version(), o.threads, o.threads == 1 ? "" : "s", o.batch,
               o.conv_benchmark ? "timed" : "by rule", o.windows, o.steps, o.warmup, "model",
               "params", "MMACs/img", "images/s", "(min-max)", "ms/step");
    static const char *const all[] = {"groupnet", "dense", "grouped:8", "depthwise"};
    const bool every = !strcmp(o.model, "all");
    for (int i = 0; i < (every ? 4 : 1); i++) {
        int st = run_model(every ? all[i] : o.model, &o);
        if (st) return st;
    }
    return 0;
}
