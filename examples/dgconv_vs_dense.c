/* DGConv against the convolutions it interpolates between: a DGConv2d layer (C channels, 3x3, pad 1) with its
 * gates set to give G groups, its group structure (relation matrix, zeta, parameters, effective MACs), its
 * equality with the exported permuted grouped Conv2d, and forward / forward+backward times of DGConv (fast
 * path and composite) next to dense, grouped and depthwise Conv2d on the same input.
 *
 * Usage: dgconv_vs_dense [--threads N] [--batch N] [--repeats N] [--channels C] [--size H] [--groups G,G,..]
 *                        [--contiguous]
 * Defaults: 1 thread, batch 32, 7 repeats, C = 64, 16x16 input, G = 1,4,8,64. The zero gates are the last
 * ones (interleaved groups: channels o and i are connected iff o = i mod G, so the export needs channel
 * permutations); --contiguous closes the first ones instead (standard contiguous groups). Times are medians
 * of the repeats after one untimed warm-up run (the first run of a convolution shape picks its kernels). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "groupgrad.h"

#define MAX_G 16

typedef struct options {
    int threads, batch, repeats, channels, size, n_groups, groups[MAX_G];
    bool contiguous;
} options;

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return 1e3 * (double)t.tv_sec + 1e-6 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int fail(const char *what) {
    fprintf(stderr, "dgconv_vs_dense: %s: %s\n", what, gg_last_error());
    gg_tape_reset(NULL);
    return -1;
}

/* Median forward time (no graph recorded) and forward+backward time (x, weights and gates get gradients
 * from the seed dy) of module m on x, in ms. x requires grad. */
static int time_module(gg_module *m, gg_tensor *x, const gg_tensor *dy, int repeats, double *fwd_ms,
                       double *train_ms) {
    double *t = malloc(2 * (size_t)repeats * sizeof *t);
    if (!t) return fprintf(stderr, "dgconv_vs_dense: out of memory\n"), -1;
    int st = 0;
    for (int r = -1; r < repeats && !st; r++) { /* r = -1: warm-up */
        gg_no_grad_begin();
        double t0 = now_ms();
        gg_tensor *y = gg_module_forward(m, x);
        double t1 = now_ms();
        gg_no_grad_end();
        gg_tape_reset(NULL);
        if (!y) {
            st = fail("forward");
            break;
        }
        gg_module_zero_grad(m);
        gg_zero_grad(x);
        double t2 = now_ms();
        y = gg_module_forward(m, x);
        if (!y || gg_backward_ex(y, dy, false)) {
            st = fail("forward+backward");
            break;
        }
        double t3 = now_ms();
        gg_tape_reset(NULL);
        if (r >= 0) t[r] = t1 - t0, t[repeats + r] = t3 - t2;
    }
    if (!st) *fwd_ms = median(t, repeats), *train_ms = median(t + repeats, repeats);
    free(t);
    return st;
}

/* y = m(x) without a graph, as a contiguous copy (caller frees). */
static gg_tensor *eval(gg_module *m, gg_tensor *x) {
    gg_no_grad_begin();
    gg_tensor *y = gg_tensor_contiguous(gg_module_forward(m, x));
    gg_no_grad_end();
    gg_tape_reset(NULL);
    return y;
}

static double max_abs_diff(const gg_tensor *a, const gg_tensor *b) {
    const float *p = gg_tensor_data(a), *q = gg_tensor_data(b);
    double d = 0;
    for (int64_t i = 0; i < a->numel; i++) d = fmax(d, fabs((double)p[i] - (double)q[i]));
    return d;
}

static int report(const char *kind, int groups, gg_module *m, gg_tensor *x, const gg_tensor *dy,
                  const options *o) {
    double fwd = 0, train = 0;
    if (time_module(m, x, dy, o->repeats, &fwd, &train)) return -1;
    printf("  %-28s %4d %10.3f %14.3f\n", kind, groups, fwd, train);
    return 0;
}

/* The first rows of the relation U (# connected, . not), at most 64 columns. */
static void print_relation(const int *perm, int C, int group_size) {
    const int rows = C < 8 ? C : 8, cols = C < 64 ? C : 64;
    printf("  relation U[out][in], rows 0..%d, columns 0..%d (# = connected):\n", rows - 1, cols - 1);
    for (int o = 0; o < rows; o++) {
        printf("    out %2d  ", o);
        for (int i = 0; i < cols; i++) putchar(perm[o] / group_size == perm[i] / group_size ? '#' : '.');
        putchar('\n');
    }
}

/* Conv2d C -> C, 3x3, pad 1, G groups, no bias. */
static gg_module *conv(int C, int G, gg_rng *rng) {
    gg_conv2d_params p = gg_conv2d_make(1, 1, 1, G);
    return gg_nn_conv2d_new(C, C, 3, &p, false, rng);
}

static int run_groups(int G, gg_tensor *x, const gg_tensor *dy, const options *o, gg_rng *rng) {
    const int C = o->channels;
    int K = 0, zeros = 0;
    while ((1 << K) < C) K++;
    while ((1 << zeros) < G) zeros++;
    gg_conv2d_params p = gg_conv2d_make(1, 1, 1, 1);
    gg_module *dg = gg_nn_dgconv2d_new(C, 3, &p, false, GG_GATE_INIT_OPEN, rng), *ex = NULL, *grouped = NULL;
    gg_tensor *gates = gg_nn_dgconv2d_gates(dg), *y_dg = NULL, *y_ex = NULL, *y_comp = NULL;
    int *perm = malloc((size_t)C * sizeof *perm), st = -1, g = 0, gs = 0;
    if (!gates || !perm) {
        fail("DGConv2d");
        goto done;
    }
    float *gt = gg_tensor_data(gates); /* the zero gates: the last `zeros` ones, or the first with --contiguous */
    for (int k = 0; k < K; k++) gt[k] = (o->contiguous ? k < zeros : k >= K - zeros) ? -1.0f : 1.0f;
    gg_tensor_bump_version(gates);
    gg_dgconv2d_info info;
    if (gg_dgconv_group_info(gates, false, &g, &gs, perm) || gg_nn_dgconv2d_info_at(dg, o->size, o->size, &info)) {
        fail("group info");
        goto done;
    }
    printf("\nG = %d: group size %d, %s groups, %d of %d gates open; zeta %.0f (dense %d), parameters %lld "
           "(effective %lld), MACs per sample %lld (dense %lld)\n",
           info.groups, info.group_size, o->contiguous || G == 1 || G == C ? "contiguous" : "interleaved",
           info.n_open, info.n_gates, info.zeta, C * C, (long long)info.params, (long long)info.effective_params,
           (long long)info.macs, (long long)(9LL * C * C * o->size * o->size));
    print_relation(perm, C, gs);
    ex = gg_nn_dgconv2d_export(dg);
    grouped = conv(C, G, rng);
    if (!ex || !grouped) {
        fail("export");
        goto done;
    }
    gg_dgconv_opts fast = {false, GG_DGCONV_FAST}, comp = {false, GG_DGCONV_COMPOSITE};
    gg_nn_dgconv2d_set_opts(dg, &comp);
    y_comp = eval(dg, x);
    gg_nn_dgconv2d_set_opts(dg, &fast);
    y_dg = eval(dg, x);
    y_ex = eval(ex, x);
    if (!y_comp || !y_dg || !y_ex) {
        fail("forward");
        goto done;
    }
    char desc[64];
    printf("  export: %s%s; max |DGConv fast - export| = %.3g, max |DGConv fast - composite| = %.3g\n",
           gg_module_describe(ex, desc, sizeof desc),
           gg_module_num_children(ex) ? " (ChannelPermute, grouped Conv2d, ChannelPermute)" : "",
           max_abs_diff(y_dg, y_ex), max_abs_diff(y_dg, y_comp));
    printf("  %-28s %4s %10s %14s\n", "layer", "G", "forward ms", "fwd+bwd ms");
    if (report("DGConv2d fast path", G, dg, x, dy, o) || gg_nn_dgconv2d_set_opts(dg, &comp) ||
        report("DGConv2d composite", G, dg, x, dy, o) || report("exported (permuted grouped)", G, ex, x, dy, o) ||
        report("grouped Conv2d", G, grouped, x, dy, o))
        goto done;
    st = 0;
done:
    gg_tensor_free(y_dg), gg_tensor_free(y_ex), gg_tensor_free(y_comp);
    gg_module_free(dg), gg_module_free(ex), gg_module_free(grouped);
    free(perm);
    return st;
}

static int parse_int(const char *s, int lo, int hi, int *out) {
    char *end = NULL;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

static int parse(int argc, char **argv, options *o) {
    *o = (options){1, 32, 7, 64, 16, 4, {1, 4, 8, 64}, false};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "--threads")) bad = parse_int(v, 1, 1024, &o->threads), i++;
        else if (!strcmp(a, "--batch")) bad = parse_int(v, 1, 1 << 16, &o->batch), i++;
        else if (!strcmp(a, "--repeats")) bad = parse_int(v, 1, 10000, &o->repeats), i++;
        else if (!strcmp(a, "--channels")) bad = parse_int(v, 2, 1 << 14, &o->channels), i++;
        else if (!strcmp(a, "--size")) bad = parse_int(v, 1, 4096, &o->size), i++;
        else if (!strcmp(a, "--contiguous")) o->contiguous = true;
        else if (!strcmp(a, "--groups") && v) {
            char buf[256], *save = NULL;
            snprintf(buf, sizeof buf, "%s", v), i++;
            o->n_groups = 0;
            for (char *t = strtok_r(buf, ",", &save); t && !bad; t = strtok_r(NULL, ",", &save))
                bad = o->n_groups == MAX_G || parse_int(t, 1, 1 << 14, &o->groups[o->n_groups++]);
            bad = bad || o->n_groups == 0;
        } else bad = 1;
        if (bad) return fprintf(stderr, "dgconv_vs_dense: bad argument %s%s%s\n", a, v ? " " : "", v ? v : ""), -1;
    }
    if (o->channels & (o->channels - 1))
        return fprintf(stderr, "dgconv_vs_dense: --channels %d is not a power of two (DGConv needs C = 2^K)\n",
                       o->channels), -1;
    for (int i = 0; i < o->n_groups; i++)
        if (o->groups[i] > o->channels || (o->groups[i] & (o->groups[i] - 1)))
            return fprintf(stderr, "dgconv_vs_dense: G = %d is not a power of two <= C = %d\n", o->groups[i],
                           o->channels), -1;
    return 0;
}

int main(int argc, char **argv) {
    options o;
    if (parse(argc, argv, &o)) return 2;
    if (gg_set_num_threads(o.threads)) {
        fail("--threads");
        return 1;
    }
    const int C = o.channels, H = o.size;
    gg_rng rng;
    gg_rng_init(&rng, 1);
    gg_tensor *x = gg_tensor_empty(GG_SHAPE(o.batch, C, H, H)), *dy = gg_tensor_empty(GG_SHAPE(o.batch, C, H, H));
    gg_module *dense = conv(C, 1, &rng), *depthwise = conv(C, C, &rng);
    int st = 1;
    if (!x || !dy || !dense || !depthwise || gg_rand_normal(x, 0, 1, &rng) || gg_rand_normal(dy, 0, 1, &rng) ||
        gg_requires_grad(x, true)) {
        fail("setup");
        goto done;
    }
    printf("dgconv_vs_dense: C = %d, 3x3 pad 1, input [%d,%d,%d,%d], %d thread%s, median of %d repeats\n", C,
           o.batch, C, H, H, o.threads, o.threads == 1 ? "" : "s", o.repeats);
    printf("\nreference layers:\n  %-28s %4s %10s %14s\n", "layer", "G", "forward ms", "fwd+bwd ms");
    if (report("dense Conv2d", 1, dense, x, dy, &o) || report("depthwise Conv2d", C, depthwise, x, dy, &o)) goto done;
    for (int i = 0; i < o.n_groups; i++)
        if (run_groups(o.groups[i], x, dy, &o, &rng)) goto done;
    st = 0;
done:
    gg_tensor_free(x), gg_tensor_free(dy);
    gg_module_free(dense), gg_module_free(depthwise);
    return st;
}
