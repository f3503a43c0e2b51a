/* Convolution benchmark: gg_conv2d or gg_dgconv2d through the tape, per pass, on real layer shapes (or one
 * case from the command line), with GFLOP/s and the percentage of the machine's FMA peak measured at start.
 *
 *   bench_conv [--op conv|dgconv] [--path fast|composite|both|ref] [--pass fwd|bwd_data|bwd_weight|train|all]
 *              [--n N --c C --k K --h H --w W --r R --s S --stride S --pad P --dilation D --groups G]
 *              [--threads T] [--repeats N] [--min-time SECONDS] [--json] [--check] [--quick]
 *              [--conv-benchmark]
 *
 * Cases. Any shape option gives one case; unset fields default to N=64 C=64 16x16 3x3 stride 1 pad 1
 * dilation 1 groups 1, and K defaults to C. Without shape options, the default suite: for --op conv,
 * N=64 C=K=64 16x16 with groups 1, 4, 8, 32, 64 and N=32 C=K=256 8x8 with groups 1, 4, 8, 32, 256, all 3x3
 * pad 1 stride 1; for --op dgconv, the DGConv layers of GroupNet-S at batch 128 (C=32 28x28 stride 1,
 * C=64 28x28 stride 2, C=128 14x14 stride 2) and N=64 C=64 16x16 stride 1, each with G = 4 and 8, 3x3
 * pad 1. No bias, NCHW float32, each case for every pass (or the one --pass names).
 *
 * --op dgconv: gg_dgconv2d(x, w [C,C,R,S], gates [log2 C], NULL, p, {sort = false, path}) with binary
 * gates: the last log2(G) gates closed (gt = -1), the others open (+1), which gives G interleaved groups
 * {c : c mod G == h} (channel bit k belongs to gate K-1-k; a non-identity channel permutation, so the fast
 * path pays for its permutation copies). C must be a power of two, K = C, and --groups G a power of two
 * dividing C. Paths: fast (GG_DGCONV_FAST: permuted grouped conv), composite (GG_DGCONV_COMPOSITE: the
 * dense conv of W masked by the Kronecker relation, op by op on the tape), or both: the two paths timed in
 * the same run, their repeats alternating, with the ratio composite / fast printed after each pass
 * ("speedup" in the fast object under --json).
 *
 * What is timed (CLOCK_MONOTONIC, one repeat each; gg_tape_reset and gg_zero_grad run after each repeat
 * and are not timed):
 *   fwd         the op with no input requiring grad: no graph is recorded (inference).
 *   bwd_data    gg_backward_ex(y, seed) through the op's graph, only x requiring grad: dx += conv^T(dy, w)
 *               added into x->grad (kept between repeats and zeroed untimed). The forward that builds the
 *               graph runs untimed before it. Includes gg_backward_ex's own work (a copy of the seed).
 *   bwd_weight  the same with only w (dgconv: w and the gates) requiring grad: dw += corr(x, dy).
 *   train       the op + gg_backward_ex with x and w (dgconv: and the gates) requiring grad: what a
 *               training step does for the layer (forward, input, weight and gate gradients).
 * Two warm-up repeats, then enough repeats for >= --min-time seconds (0.5; at least 5) or exactly
 * --repeats; the figure is the median (the minimum is also reported).
 * FLOPs: 2*N*K*(C/G)*R*S*Ho*Wo per pass (padding taps included), 3x that for train. For dgconv this is the
 * effective grouped conv, 2*N*C*(C/G)*R*S*Ho*Wo, for both paths: the composite does G times that work,
 * and the fast path's gate gradient (log2(G) more grouped passes) and permutations are not counted, so
 * the figures are "useful" GFLOP/s and the ratio of the paths' times is what matters. The peak is measured
 * by bench_fma_peak_gflops (bench_util.h) with 1 thread and with the benchmark's thread count; the
 * percentage is of the latter.
 *
 * --path fast: the library's dispatch; ref (conv only): every pass forced onto the plain-C reference
 * kernels (gg__conv2d_force_algo), still through the tape.
 * --check compares, once per case, conv's fast path (y, dx, dw) against the reference kernels, or dgconv's
 * fast path (y, dx, dw, dgates) against its composite (exit 1 on a mismatch). --quick (the smoke test):
 * the default suite with N=2, 2 repeats, a short peak loop, --check. --conv-benchmark turns on
 * gg_conv_set_benchmark (each pass's kernel chosen by timing on first use) instead of the library's default
 * static rules. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "gg_conv_kernels.h"
#include "groupgrad.h"

#define CHECK(cond)                                                                                      \
    do {                                                                                                 \
        if (!(cond)) {                                                                                   \
            fprintf(stderr, "bench_conv: %s failed at line %d: %s\n", #cond, __LINE__, gg_last_error()); \
            exit(1);                                                                                     \
        }                                                                                                \
    } while (0)

enum { P_FWD, P_BWD_DATA, P_BWD_WEIGHT, P_TRAIN, P_COUNT };
static const char *const PASS_NAMES[P_COUNT] = {"fwd", "bwd_data", "bwd_weight", "train"};

/* What one timed series runs: conv through the plan (or forced onto the reference), or a DGConv path. */
enum { PATH_FAST, PATH_COMPOSITE, PATH_REF, PATH_COUNT };
static const char *const PATH_NAMES[PATH_COUNT] = {"fast", "composite", "ref"};

typedef struct conv_case {
    int64_t n, c, k, h, w, r, s;
    int stride, pad, dilation, groups;
} conv_case;

typedef struct bench_opts {
    bool json, check, quick;
    bool dgconv;          /* --op dgconv */
    int paths[2], npaths; /* the timed paths, alternating (--path both: fast and composite) */
    int threads, repeats;
    double min_time;
    double peak1, peak; /* GFLOP/s: 1 thread, `threads` threads */
} bench_opts;

static int64_t out_size(int64_t in, int64_t k, int stride, int pad, int dilation) {
    return (in + 2 * pad - (int64_t)dilation * (k - 1) - 1) / stride + 1;
}

/* One pass of the (effective grouped) convolution; see the header comment. */
static double case_flops(const conv_case *cc) {
    const int64_t ho = out_size(cc->h, cc->r, cc->stride, cc->pad, cc->dilation);
    const int64_t wo = out_size(cc->w, cc->s, cc->stride, cc->pad, cc->dilation);
    return 2.0 * (double)cc->n * (double)cc->k * (double)(cc->c / cc->groups) * (double)(cc->r * cc->s) *
           (double)(ho * wo);
}

/* The tensors of one case: x [N,C,H,W] U(-1,1), w U(-1,1)/sqrt(fan_in) ([K,C/G,R,S] for conv, the dense
 * [C,C,R,S] for dgconv, fan_in = C/G*R*S either way), seed [N,K,Ho,Wo] U(-1,1), and for dgconv the gates
 * [log2 C] (+-1, see the header comment); all caller-owned. */
typedef struct case_data {
    gg_tensor *x, *w, *seed, *gates;
    gg_conv2d_params p;
    gg_conv2d_shape shape;
} case_data;

static bool is_pow2(int64_t v) { return v >= 1 && (v & (v - 1)) == 0; }

static int log2_of(int64_t v) {
    int k = 0;
    while (((int64_t)1 << k) < v) k++;
    return k;
}

/* The checks bench_conv makes itself, so that a bad command line fails before the peak loop (gg_conv2d
 * and gg_dgconv2d report anything else). */
static bool case_valid(const conv_case *cc, bool dgconv) {
    const int64_t ho = out_size(cc->h, cc->r, cc->stride, cc->pad, cc->dilation);
    const int64_t wo = out_size(cc->w, cc->s, cc->stride, cc->pad, cc->dilation);
    const char *why = NULL;
    if (cc->c % cc->groups || cc->k % cc->groups || ho < 1 || wo < 1)
        why = "groups must divide C and K, and the output must not be empty";
    else if (dgconv && (cc->c < 2 || !is_pow2(cc->c) || cc->k != cc->c || !is_pow2(cc->groups)))
        why = "--op dgconv needs C = K = a power of two >= 2 and groups a power of two";
    if (why)
        fprintf(stderr,
                "bench_conv: invalid case N=%lld C=%lld K=%lld %lldx%lld %lldx%lld stride %d pad %d "
                "dilation %d groups %d (%s)\n",
                (long long)cc->n, (long long)cc->c, (long long)cc->k, (long long)cc->h, (long long)cc->w,
                (long long)cc->r, (long long)cc->s, cc->stride, cc->pad, cc->dilation, cc->groups, why);
    return !why;
}

static void case_setup(const conv_case *cc, bool dgconv, case_data *d) {
    const int64_t ho = out_size(cc->h, cc->r, cc->stride, cc->pad, cc->dilation);
    const int64_t wo = out_size(cc->w, cc->s, cc->stride, cc->pad, cc->dilation);
    d->p = gg_conv2d_make(cc->stride, cc->pad, cc->dilation, dgconv ? 1 : cc->groups);
    d->x = gg_tensor_empty(GG_SHAPE(cc->n, cc->c, cc->h, cc->w));
    d->w = gg_tensor_empty(GG_SHAPE(cc->k, dgconv ? cc->c : cc->c / cc->groups, cc->r, cc->s));
    d->seed = gg_tensor_empty(GG_SHAPE(cc->n, cc->k, ho, wo));
    d->gates = NULL;
    CHECK(d->x && d->w && d->seed);
    gg_rng rng;
    gg_rng_init(&rng, 1234);
    const float bound = 1.0f / sqrtf((float)(cc->c / cc->groups * cc->r * cc->s));
    CHECK(gg_rand_uniform(d->x, -1, 1, &rng) == GG_OK && gg_rand_uniform(d->w, -bound, bound, &rng) == GG_OK);
    CHECK(gg_rand_uniform(d->seed, -1, 1, &rng) == GG_OK);
    if (dgconv) { /* the last log2(G) gates closed: G interleaved groups */
        const int K = log2_of(cc->c), z = log2_of(cc->groups);
        d->gates = gg_tensor_empty(GG_SHAPE(K));
        CHECK(d->gates);
        for (int k = 0; k < K; k++) gg_tensor_data(d->gates)[k] = k >= K - z ? -1.0f : 1.0f;
        int G = 0;
        CHECK(gg_dgconv_group_info(d->gates, false, &G, NULL, NULL) == GG_OK && G == cc->groups);
    }
    d->shape = (gg_conv2d_shape){.N = cc->n,
                                 .C = cc->c,
                                 .H = cc->h,
                                 .W = cc->w,
                                 .K = cc->k,
                                 .R = cc->r,
                                 .S = cc->s,
                                 .G = cc->groups,
                                 .Ho = ho,
                                 .Wo = wo,
                                 .str_h = cc->stride,
                                 .str_w = cc->stride,
                                 .pad_t = cc->pad,
                                 .pad_l = cc->pad,
                                 .dil_h = cc->dilation,
                                 .dil_w = cc->dilation};
}

static void case_free(case_data *d) {
    gg_tensor_free(d->x);
    gg_tensor_free(d->w);
    gg_tensor_free(d->seed);
    gg_tensor_free(d->gates);
}

/* The op of a case on one path (tape-owned result). */
static gg_tensor *apply(const case_data *d, int path) {
    if (!d->gates) {
        gg__conv2d_force_algo(path == PATH_REF ? GG_CONV_ALGO_REF : GG_CONV_ALGO_AUTO);
        return gg_conv2d(d->x, d->w, NULL, &d->p);
    }
    const gg_dgconv_opts o = {.sort = false,
                              .path = path == PATH_COMPOSITE ? GG_DGCONV_COMPOSITE : GG_DGCONV_FAST};
    return gg_dgconv2d(d->x, d->w, d->gates, NULL, &d->p, &o);
}

static void zero_grads(const case_data *d) {
    gg_zero_grad(d->x);
    gg_zero_grad(d->w);
    gg_zero_grad(d->gates);
}

/* One repeat of a pass; returns the timed seconds (see the header comment for what is timed). */
static double run_pass(const case_data *d, int pass, int path) {
    gg_tensor *y = NULL;
    double t0 = 0, t1 = 0;
    if (pass == P_FWD || pass == P_TRAIN) t0 = bench_now_s();
    y = apply(d, path);
    CHECK(y);
    if (pass == P_FWD) t1 = bench_now_s();
    else {
        if (pass != P_TRAIN) t0 = bench_now_s();
        CHECK(gg_backward_ex(y, d->seed, false) == GG_OK);
        t1 = bench_now_s();
    }
    gg_tape_reset(NULL);
    zero_grads(d);
    return t1 - t0;
}

static double max_abs(const float *v, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs((double)v[i]));
    return m;
}

/* max |got - ref| / max |ref| over n elements; prints and exits when above tol. */
static void compare(const char *what, const char *against, const conv_case *cc, const float *got,
                    const float *ref, int64_t n, double tol) {
    double err = 0, scale = max_abs(ref, n);
    for (int64_t i = 0; i < n; i++) err = fmax(err, fabs((double)got[i] - (double)ref[i]));
    const double rel = scale > 0 ? err / scale : err;
    if (!(rel <= tol)) {
        fprintf(stderr,
                "bench_conv: check failed: %s differs from the %s by %.3g (relative to max %.3g) for N=%lld "
                "C=%lld "
                "K=%lld %lldx%lld %lldx%lld stride %d pad %d dilation %d groups %d\n",
                what, against, rel, scale, (long long)cc->n, (long long)cc->c, (long long)cc->k,
                (long long)cc->h, (long long)cc->w, (long long)cc->r, (long long)cc->s, cc->stride, cc->pad,
                cc->dilation, cc->groups);
        exit(1);
    }
}

static float *copy_of(const gg_tensor *t) {
    float *c = malloc((size_t)t->numel * sizeof(float));
    CHECK(c);
    memcpy(c, gg_tensor_data(t), (size_t)t->numel * sizeof(float));
    return c;
}

/* One train step through the tape: y, dx, dw (and dgates) copied out (caller frees). */
static void train_step(const case_data *d, int path, float *out[4]) {
    CHECK(gg_requires_grad(d->x, true) == GG_OK && gg_requires_grad(d->w, true) == GG_OK);
    if (d->gates) CHECK(gg_requires_grad(d->gates, true) == GG_OK);
    zero_grads(d);
    gg_tensor *y = apply(d, path);
    CHECK(y && gg_backward_ex(y, d->seed, false) == GG_OK && d->x->grad && d->w->grad);
    out[0] = copy_of(y);
    out[1] = copy_of(d->x->grad);
    out[2] = copy_of(d->w->grad);
    out[3] = NULL;
    if (d->gates) {
        CHECK(d->gates->grad);
        out[3] = copy_of(d->gates->grad);
    }
    gg_tape_reset(NULL);
    zero_grads(d);
}

/* conv: y, dx and dw of one train step through the tape against gg__conv2d_*_ref on the same data.
 * dgconv: y, dx, dw and dgates of the fast path against the composite. */
static void check_case(const conv_case *cc, case_data *d) {
    const int64_t n[4] = {d->seed->numel, d->x->numel, d->w->numel, d->gates ? d->gates->numel : 0};
    const char *names[4] = {"y", "dx", "dw", "dgates"};
    float *ref[4] = {NULL, NULL, NULL, NULL}, *got[4];
    if (d->gates) {
        train_step(d, PATH_COMPOSITE, ref);
    } else {
        const gg_conv2d_shape *s = &d->shape;
        ref[0] = malloc((size_t)n[0] * sizeof(float));
        ref[1] = calloc((size_t)n[1], sizeof(float));
        ref[2] = calloc((size_t)n[2], sizeof(float));
        CHECK(ref[0] && ref[1] && ref[2]);
        gg__conv2d_fwd_ref(s, gg_tensor_data(d->x), gg_tensor_data(d->w), NULL, ref[0]);
        gg__conv2d_bwd_data_ref(s, gg_tensor_data(d->seed), gg_tensor_data(d->w), ref[1]);
        gg__conv2d_bwd_weight_ref(s, gg_tensor_data(d->x), gg_tensor_data(d->seed), ref[2]);
    }
    train_step(d, PATH_FAST, got);
    /* the gate gradients are sums of N*C*(C/G)*R*S*Ho*Wo products, rounded differently by the two paths */
    for (int i = 0; i < (d->gates ? 4 : 3); i++)
        compare(names[i], d->gates ? "composite path" : "reference kernel", cc, got[i], ref[i], n[i],
                i == 3 ? 1e-3 : 1e-4);
    for (int i = 0; i < 4; i++) {
        free(ref[i]);
        free(got[i]);
    }
}

static void print_row(const conv_case *cc, const bench_opts *o, int pass, int path, double tmed, double tmin,
                      int repeats, double speedup) {
    const double flops = case_flops(cc) * (pass == P_TRAIN ? 3 : 1);
    const double gflops = flops / tmed * 1e-9, pct = 100.0 * gflops / o->peak;
    const char *pn = PASS_NAMES[pass], *op = o->dgconv ? "dgconv" : "conv";
    if (o->json) {
        printf("{\"op\":\"%s\",\"pass\":\"%s\",\"n\":%lld,\"c\":%lld,\"k\":%lld,\"h\":%lld,\"w\":%lld,"
               "\"r\":%lld,\"s\":%lld,\"stride\":%d,\"pad\":%d,\"dilation\":%d,\"groups\":%d,"
               "\"threads\":%d,\"ms\":%.4f,\"gflops\":%.3f,\"peak_pct\":%.2f,\"path\":\"%s\","
               "\"min_ms\":%.4f,\"repeats\":%d,\"peak_gflops\":%.2f,\"peak1_gflops\":%.2f",
               op, pn, (long long)cc->n, (long long)cc->c, (long long)cc->k, (long long)cc->h,
               (long long)cc->w, (long long)cc->r, (long long)cc->s, cc->stride, cc->pad, cc->dilation,
               cc->groups, o->threads, tmed * 1e3, gflops, pct, PATH_NAMES[path], tmin * 1e3, repeats,
               o->peak, o->peak1);
        if (speedup > 0) printf(",\"speedup\":%.3f", speedup);
        printf("}\n");
    } else {
        char name[160];
        snprintf(name, sizeof name, "%sN=%lld C=%lld K=%lld %lldx%lld %lldx%lld s%d p%d d%d g%d",
                 o->dgconv ? "dg " : "", (long long)cc->n, (long long)cc->c, (long long)cc->k,
                 (long long)cc->h, (long long)cc->w, (long long)cc->r, (long long)cc->s, cc->stride, cc->pad,
                 cc->dilation, cc->groups);
        printf("%-47s %-10s %-9s %10.3f %10.3f %9.2f %6.1f %7d", name, pn, PATH_NAMES[path], tmed * 1e3,
               tmin * 1e3, gflops, pct, repeats);
        if (speedup > 0) printf("   composite/fast %.2fx", speedup);
        printf("\n");
    }
    fflush(stdout);
}

static void bench_case(const conv_case *cc, int only_pass, const bench_opts *o) {
    case_data d;
    case_setup(cc, o->dgconv, &d);
    if (o->check && o->paths[0] != PATH_REF) check_case(cc, &d);
    for (int pass = 0; pass < P_COUNT; pass++) {
        if (only_pass >= 0 && pass != only_pass) continue;
        const bool params = pass == P_BWD_WEIGHT || pass == P_TRAIN;
        CHECK(gg_requires_grad(d.x, pass == P_BWD_DATA || pass == P_TRAIN) == GG_OK);
        CHECK(gg_requires_grad(d.w, params) == GG_OK);
        if (d.gates) CHECK(gg_requires_grad(d.gates, params) == GG_OK);
        double warm = 0;
        for (int q = 0; q < o->npaths; q++) {
            run_pass(&d, pass, o->paths[q]); /* first touch of pages, plan cache, gradient buffers */
            warm = fmax(warm, run_pass(&d, pass, o->paths[q]));
        }
        int repeats = o->repeats;
        if (repeats <= 0) {
            const double want = warm > 0 ? ceil(o->min_time / warm) : 100000;
            repeats = want < 5 ? 5 : (want > 100000 ? 100000 : (int)want);
        }
        double *t = malloc(2 * (size_t)repeats * sizeof(double));
        CHECK(t);
        for (int i = 0; i < repeats; i++) /* the paths alternate, so load changes hit both alike */
            for (int q = 0; q < o->npaths; q++) t[q * repeats + i] = run_pass(&d, pass, o->paths[q]);
        double tmed[2], tmin[2];
        for (int q = 0; q < o->npaths; q++) {
            tmin[q] = bench_minimum(t + q * repeats, repeats);
            tmed[q] = bench_median(t + q * repeats, repeats);
        }
        free(t);
        for (int q = 0; q < o->npaths; q++) /* both: composite first, then fast with the ratio */
            print_row(cc, o, pass, o->paths[q], tmed[q], tmin[q], repeats,
                      o->npaths == 2 && o->paths[q] == PATH_FAST ? tmed[1 - q] / tmed[q] : 0.0);
    }
    CHECK(gg_requires_grad(d.x, false) == GG_OK && gg_requires_grad(d.w, false) == GG_OK);
    if (d.gates) CHECK(gg_requires_grad(d.gates, false) == GG_OK);
    case_free(&d);
}

static void usage(const char *prog) {
    fprintf(stderr,
            "usage: %s [--op conv|dgconv] [--path fast|composite|both|ref] [--pass "
            "fwd|bwd_data|bwd_weight|train|all]\n"
            "          [--n N] [--c C] [--k K] [--h H] [--w W] [--r R] [--s S] [--stride S] [--pad P]\n"
            "          [--dilation D] [--groups G] [--threads T] [--repeats N] [--min-time SECONDS]\n"
            "          [--json] [--check] [--quick] [--conv-benchmark]\n",
            prog);
}

/* Parses an integer option value in [lo, 2^30]; exits with the usage on anything else. */
static int int_arg(const char *prog, const char *opt, const char *v, int lo) {
    char *end;
    long long x = strtoll(v, &end, 10);
    if (*v == '\0' || *end != '\0' || x < lo || x > (1LL << 30)) {
        fprintf(stderr, "bench_conv: %s needs an integer in [%d, 2^30], got '%s'\n", opt, lo, v);
        usage(prog);
        exit(2);
    }
    return x;
}

int main(int argc, char **argv) {
    bench_opts o = {.min_time = 0.5};
    conv_case one = {.n = 64,
                     .c = 64,
                     .k = -1,
                     .h = 16,
                     .w = 16,
                     .r = 3,
                     .s = 3,
                     .stride = 1,
                     .pad = 1,
                     .dilation = 1,
                     .groups = 1};
    bool have_case = false;
    int only_pass = -1;
    const char *op = "conv", *path = "fast";
    struct {
        const char *name;
        int64_t *i64;
        int *i32;
        int lo;
    } shape_opts[] = {{"--n", &one.n, NULL, 1},          {"--c", &one.c, NULL, 1},
                      {"--k", &one.k, NULL, 1},          {"--h", &one.h, NULL, 1},
                      {"--w", &one.w, NULL, 1},          {"--r", &one.r, NULL, 1},
                      {"--s", &one.s, NULL, 1},          {"--stride", NULL, &one.stride, 1},
                      {"--pad", NULL, &one.pad, 0},      {"--dilation", NULL, &one.dilation, 1},
                      {"--groups", NULL, &one.groups, 1}};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool matched = false;
        for (size_t j = 0; j < sizeof shape_opts / sizeof shape_opts[0] && !matched; j++) {
            if (strcmp(a, shape_opts[j].name)) continue;
            if (!v) break;
            int x = int_arg(argv[0], a, v, shape_opts[j].lo);
            if (shape_opts[j].i64) *shape_opts[j].i64 = x;
            else *shape_opts[j].i32 = x;
            have_case = matched = true;
            i++;
        }
        if (matched) continue;
        if (!strcmp(a, "--json")) o.json = true;
        else if (!strcmp(a, "--check")) o.check = true;
        else if (!strcmp(a, "--conv-benchmark")) gg_conv_set_benchmark(true);
        else if (!strcmp(a, "--quick")) o.quick = true;
        else if (!strcmp(a, "--threads") && v) o.threads = int_arg(argv[0], a, argv[++i], 1);
        else if (!strcmp(a, "--repeats") && v) o.repeats = int_arg(argv[0], a, argv[++i], 1);
        else if (!strcmp(a, "--min-time") && v) o.min_time = atof(argv[++i]);
        else if (!strcmp(a, "--op") && v) op = argv[++i];
        else if (!strcmp(a, "--path") && v) path = argv[++i];
        else if (!strcmp(a, "--pass") && v) {
            const char *pn = argv[++i];
            only_pass = -2;
            for (int p = 0; p < P_COUNT; p++)
                if (!strcmp(pn, PASS_NAMES[p])) only_pass = p;
            if (!strcmp(pn, "all")) only_pass = -1;
            if (only_pass == -2) {
                fprintf(stderr, "bench_conv: unknown pass '%s' (fwd, bwd_data, bwd_weight, train or all)\n",
                        pn);
                return 2;
            }
        } else {
            usage(argv[0]);
            return 2;
        }
    }
    if (strcmp(op, "conv") && strcmp(op, "dgconv")) {
        fprintf(stderr, "bench_conv: unknown --op '%s' (conv or dgconv)\n", op);
        return 2;
    }
    o.dgconv = !strcmp(op, "dgconv");
    o.npaths = 1;
    if (!strcmp(path, "fast")) o.paths[0] = PATH_FAST;
    else if (!strcmp(path, "ref") && !o.dgconv) o.paths[0] = PATH_REF;
    else if (!strcmp(path, "composite") && o.dgconv) o.paths[0] = PATH_COMPOSITE;
    else if (!strcmp(path, "both") && o.dgconv) {
        o.paths[0] = PATH_COMPOSITE;
        o.paths[1] = PATH_FAST;
        o.npaths = 2;
    } else {
        fprintf(stderr,
                "bench_conv: --path '%s' does not apply to --op %s (conv: fast or ref; dgconv: fast, "
                "composite or both)\n",
                path, op);
        return 2;
    }
    if (o.threads > 0 && gg_set_num_threads(o.threads) != GG_OK) {
        fprintf(stderr, "bench_conv: %s\n", gg_last_error());
        return 2;
    }
    o.threads = gg_get_num_threads();
    if (o.quick) {
        o.check = true;
        if (o.repeats <= 0) o.repeats = 2;
    }
    if (!(o.min_time >= 0)) o.min_time = 0.5;
    if (one.k < 0) one.k = one.c;
    if (have_case && !case_valid(&one, o.dgconv)) return 2;

    const double peak_s = o.quick ? 0.005 : 0.05;
    const int peak_trials = o.quick ? 1 : 5;
    o.peak1 = bench_fma_peak_gflops(1, peak_s, peak_trials);
    o.peak = o.threads > 1 ? bench_fma_peak_gflops(o.threads, peak_s, peak_trials) : o.peak1;
    /* On a shared machine another process can hold a core: then the threaded peak falls short of
     * threads x the 1-thread peak, and the threaded timings are not representative. */
    if (o.threads > 1 && o.peak < 0.8 * o.threads * o.peak1)
        fprintf(stderr,
                "bench_conv: warning: the %d-thread FMA peak (%.1f GFLOP/s) is only %.2fx the 1-thread peak "
                "(%.1f): other load on the machine, timings are unreliable\n",
                o.threads, o.peak, o.peak / o.peak1, o.peak1);
    if (!o.json) {
        printf("groupgrad %s, %s path %s, %d thread(s); FMA peak (%s, %d x %d-float accumulators): "
               "%.1f GFLOP/s on 1 thread, %.1f on %d\n",
               gg_version(), op, path, o.threads, bench_fma_isa(), BENCH_FMA_ACCUMULATORS, BENCH_FMA_LANES,
               o.peak1, o.peak, o.threads);
        if (o.dgconv)
            printf(
                "timed: fwd = gg_dgconv2d without grad; bwd_data/bwd_weight = gg_backward_ex with x / w and "
                "gates requiring grad; train = gg_dgconv2d + gg_backward_ex (x, w, gates require grad); "
                "GFLOP/s of the effective grouped conv\n");
        else
            printf(
                "timed: fwd = gg_conv2d without grad; bwd_data/bwd_weight = gg_backward_ex through the conv "
                "node; train = gg_conv2d + gg_backward_ex (x, w require grad)\n");
        printf("%-47s %-10s %-9s %10s %10s %9s %6s %7s\n", "case", "pass", "path", "median ms", "min ms",
               "GFLOP/s", "%peak", "repeats");
    }

    if (have_case) {
        bench_case(&one, only_pass, &o);
    } else if (o.dgconv) {
        /* GroupNet-S's DGConv layers (batch 128) and the N=64 C=64 16x16 case, G = 4 and 8 */
        const conv_case shapes[4] = {{.n = 128, .c = 32, .h = 28, .w = 28, .stride = 1},
                                     {.n = 128, .c = 64, .h = 28, .w = 28, .stride = 2},
                                     {.n = 128, .c = 128, .h = 14, .w = 14, .stride = 2},
                                     {.n = 64, .c = 64, .h = 16, .w = 16, .stride = 1}};
        for (int i = 0; i < 4; i++)
            for (int g = 4; g <= 8; g *= 2) {
                conv_case cc = shapes[i];
                cc.n = o.quick ? 2 : cc.n;
                cc.k = cc.c;
                cc.r = cc.s = 3;
                cc.pad = cc.dilation = 1;
                cc.groups = g;
                bench_case(&cc, only_pass, &o);
            }
    } else {
        const int g64[] = {1, 4, 8, 32, 64}, g256[] = {1, 4, 8, 32, 256};
        for (int i = 0; i < 10; i++) {
            const bool small = i < 5;
            conv_case cc = {.n = o.quick ? 2 : (small ? 64 : 32),
                            .c = small ? 64 : 256,
                            .k = small ? 64 : 256,
                            .h = small ? 16 : 8,
                            .w = small ? 16 : 8,
                            .r = 3,
                            .s = 3,
                            .stride = 1,
                            .pad = 1,
                            .dilation = 1,
                            .groups = small ? g64[i] : g256[i - 5]};
            bench_case(&cc, only_pass, &o);
        }
    }
    gg__conv2d_force_algo(GG_CONV_ALGO_AUTO);
    gg_tape_reset(NULL);
    return 0;
}
