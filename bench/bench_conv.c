/* Convolution benchmark: gg_conv2d through the tape, per pass, on real layer shapes (or one case from the
 * command line), with GFLOP/s and the percentage of the machine's FMA peak measured at start.
 *
 *   bench_conv [--op conv|dgconv] [--path fast|composite|ref] [--pass fwd|bwd_data|bwd_weight|train|all]
 *              [--n N --c C --k K --h H --w W --r R --s S --stride S --pad P --dilation D --groups G]
 *              [--threads T] [--repeats N] [--min-time SECONDS] [--json] [--check] [--quick]
 *
 * Cases. Any shape option gives one case; unset fields default to N=64 C=64 16x16 3x3 stride 1 pad 1
 * dilation 1 groups 1, and K defaults to C. Without shape options, the default suite: N=64 C=K=64 16x16
 * with groups 1, 4, 8, 32, 64 and N=32 C=K=256 8x8 with groups 1, 4, 8, 32, 256, all 3x3 pad 1 stride 1,
 * no bias, NCHW float32, each for every pass (or the one --pass names).
 *
 * What is timed (CLOCK_MONOTONIC, one repeat each; gg_tape_reset and gg_zero_grad run after each repeat
 * and are not timed):
 *   fwd         gg_conv2d(x, w, NULL) with no input requiring grad: no graph is recorded (inference).
 *   bwd_data    gg_backward_ex(y, seed) through one conv node, only x requiring grad: dx += conv^T(dy, w)
 *               added into x->grad (kept between repeats and zeroed untimed). The forward that builds the
 *               node runs untimed before it. Includes gg_backward_ex's own work (a copy of the seed).
 *   bwd_weight  the same with only w requiring grad: dw += corr(x, dy).
 *   train       gg_conv2d + gg_backward_ex with x and w requiring grad: what a training step does for a conv
 *               layer (forward, input gradient, weight gradient).
 * Two warm-up repeats, then enough repeats for >= --min-time seconds (0.5; at least 5) or exactly
 * --repeats; the figure is the median (the minimum is also reported).
 * FLOPs: 2*N*K*(C/G)*R*S*Ho*Wo per pass (padding taps included), 3x that for train. The peak is measured
 * by bench_fma_peak_gflops (bench_util.h) with 1 thread and with the benchmark's thread count; the
 * percentage is of the latter.
 *
 * --path fast: the library's dispatch; ref: every pass forced onto the plain-C reference kernels
 * (gg__conv2d_force_algo), still through the tape. --op dgconv and --path composite are not available yet.
 * --check compares the fast path's y, dx and dw against the reference kernels once per case (exit 1 on a
 * mismatch). --quick (the smoke test): the default suite with N=2, 2 repeats, a short peak loop, --check. */
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

typedef struct conv_case {
    int64_t n, c, k, h, w, r, s;
    int stride, pad, dilation, groups;
} conv_case;

typedef struct bench_opts {
    bool json, check, quick;
    bool ref; /* --path ref */
    int threads, repeats;
    double min_time;
    double peak1, peak; /* GFLOP/s: 1 thread, `threads` threads */
} bench_opts;

static int64_t out_size(int64_t in, int64_t k, int stride, int pad, int dilation) {
    return (in + 2 * pad - (int64_t)dilation * (k - 1) - 1) / stride + 1;
}

static double case_flops(const conv_case *cc) {
    const int64_t ho = out_size(cc->h, cc->r, cc->stride, cc->pad, cc->dilation);
    const int64_t wo = out_size(cc->w, cc->s, cc->stride, cc->pad, cc->dilation);
    return 2.0 * (double)cc->n * (double)cc->k * (double)(cc->c / cc->groups) * (double)(cc->r * cc->s) *
           (double)(ho * wo);
}

/* The tensors of one case: x [N,C,H,W] U(-1,1), w [K,C/G,R,S] U(-1,1)/sqrt(fan_in), seed [N,K,Ho,Wo]
 * U(-1,1); all caller-owned. */
typedef struct case_data {
    gg_tensor *x, *w, *seed;
    gg_conv2d_params p;
    gg_conv2d_shape shape;
} case_data;

/* The checks bench_conv makes itself, so that a bad command line fails before the peak loop (gg_conv2d
 * reports anything else). */
static bool case_valid(const conv_case *cc) {
    const int64_t ho = out_size(cc->h, cc->r, cc->stride, cc->pad, cc->dilation);
    const int64_t wo = out_size(cc->w, cc->s, cc->stride, cc->pad, cc->dilation);
    if (cc->c % cc->groups || cc->k % cc->groups || ho < 1 || wo < 1) {
        fprintf(stderr,
                "bench_conv: invalid case N=%lld C=%lld K=%lld %lldx%lld %lldx%lld stride %d pad %d "
                "dilation %d groups %d (groups must divide C and K, and the output must not be empty)\n",
                (long long)cc->n, (long long)cc->c, (long long)cc->k, (long long)cc->h, (long long)cc->w,
                (long long)cc->r, (long long)cc->s, cc->stride, cc->pad, cc->dilation, cc->groups);
        return false;
    }
    return true;
}

static void case_setup(const conv_case *cc, case_data *d) {
    const int64_t ho = out_size(cc->h, cc->r, cc->stride, cc->pad, cc->dilation);
    const int64_t wo = out_size(cc->w, cc->s, cc->stride, cc->pad, cc->dilation);
    d->p = gg_conv2d_make(cc->stride, cc->pad, cc->dilation, cc->groups);
    d->x = gg_tensor_empty(GG_SHAPE(cc->n, cc->c, cc->h, cc->w));
    d->w = gg_tensor_empty(GG_SHAPE(cc->k, cc->c / cc->groups, cc->r, cc->s));
    d->seed = gg_tensor_empty(GG_SHAPE(cc->n, cc->k, ho, wo));
    CHECK(d->x && d->w && d->seed);
    gg_rng rng;
    gg_rng_init(&rng, 1234);
    const float bound = 1.0f / sqrtf((float)(cc->c / cc->groups * cc->r * cc->s));
    CHECK(gg_rand_uniform(d->x, -1, 1, &rng) == GG_OK && gg_rand_uniform(d->w, -bound, bound, &rng) == GG_OK);
    CHECK(gg_rand_uniform(d->seed, -1, 1, &rng) == GG_OK);
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
}

/* One repeat of a pass; returns the timed seconds (see the header comment for what is timed). */
static double run_pass(const case_data *d, int pass) {
    gg_tensor *y = NULL;
    double t0 = 0, t1 = 0;
    if (pass == P_FWD || pass == P_TRAIN) t0 = bench_now_s();
    y = gg_conv2d(d->x, d->w, NULL, &d->p);
    CHECK(y);
    if (pass == P_FWD) t1 = bench_now_s();
    else {
        if (pass != P_TRAIN) t0 = bench_now_s();
        CHECK(gg_backward_ex(y, d->seed, false) == GG_OK);
        t1 = bench_now_s();
    }
    gg_tape_reset(NULL);
    gg_zero_grad(d->x);
    gg_zero_grad(d->w);
    return t1 - t0;
}

static double max_abs(const float *v, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs((double)v[i]));
    return m;
}

/* max |got - ref| / max |ref| over n elements; prints and exits when above tol. */
static void compare(const char *what, const conv_case *cc, const float *got, const float *ref, int64_t n) {
    double err = 0, scale = max_abs(ref, n);
    for (int64_t i = 0; i < n; i++) err = fmax(err, fabs((double)got[i] - (double)ref[i]));
    const double rel = scale > 0 ? err / scale : err;
    if (!(rel <= 1e-4)) {
        fprintf(
            stderr,
            "bench_conv: check failed: %s differs from the reference kernel by %.3g (relative to max %.3g) "
            "for N=%lld C=%lld K=%lld %lldx%lld %lldx%lld stride %d pad %d dilation %d groups %d\n",
            what, rel, scale, (long long)cc->n, (long long)cc->c, (long long)cc->k, (long long)cc->h,
            (long long)cc->w, (long long)cc->r, (long long)cc->s, cc->stride, cc->pad, cc->dilation,
            cc->groups);
        exit(1);
    }
}

/* y, dx and dw of one train step through the tape against gg__conv2d_*_ref on the same data. */
static void check_case(const conv_case *cc, case_data *d) {
    const gg_conv2d_shape *s = &d->shape;
    const int64_t ny = d->seed->numel, nx = d->x->numel, nw = d->w->numel;
    float *yr = malloc((size_t)ny * sizeof(float)), *dxr = calloc((size_t)nx, sizeof(float));
    float *dwr = calloc((size_t)nw, sizeof(float));
    CHECK(yr && dxr && dwr);
    gg__conv2d_fwd_ref(s, gg_tensor_data(d->x), gg_tensor_data(d->w), NULL, yr);
    gg__conv2d_bwd_data_ref(s, gg_tensor_data(d->seed), gg_tensor_data(d->w), dxr);
    gg__conv2d_bwd_weight_ref(s, gg_tensor_data(d->x), gg_tensor_data(d->seed), dwr);
    CHECK(gg_requires_grad(d->x, true) == GG_OK && gg_requires_grad(d->w, true) == GG_OK);
    gg_zero_grad(d->x);
    gg_zero_grad(d->w);
    gg_tensor *y = gg_conv2d(d->x, d->w, NULL, &d->p);
    CHECK(y && gg_backward_ex(y, d->seed, false) == GG_OK && d->x->grad && d->w->grad);
    compare("y", cc, gg_tensor_data(y), yr, ny);
    compare("dx", cc, gg_tensor_data(d->x->grad), dxr, nx);
    compare("dw", cc, gg_tensor_data(d->w->grad), dwr, nw);
    gg_tape_reset(NULL);
    gg_zero_grad(d->x);
    gg_zero_grad(d->w);
    free(yr);
    free(dxr);
    free(dwr);
}

static void bench_case(const conv_case *cc, int only_pass, const bench_opts *o) {
    case_data d;
    case_setup(cc, &d);
    if (o->check && !o->ref) check_case(cc, &d);
    for (int pass = 0; pass < P_COUNT; pass++) {
        if (only_pass >= 0 && pass != only_pass) continue;
        CHECK(gg_requires_grad(d.x, pass == P_BWD_DATA || pass == P_TRAIN) == GG_OK);
        CHECK(gg_requires_grad(d.w, pass == P_BWD_WEIGHT || pass == P_TRAIN) == GG_OK);
        run_pass(&d, pass); /* first touch of pages, plan cache, gradient buffers */
        const double warm = run_pass(&d, pass);
        int repeats = o->repeats;
        if (repeats <= 0) {
            const double want = warm > 0 ? ceil(o->min_time / warm) : 100000;
            repeats = want < 5 ? 5 : (want > 100000 ? 100000 : (int)want);
        }
        double *t = malloc((size_t)repeats * sizeof(double));
        CHECK(t);
        for (int i = 0; i < repeats; i++) t[i] = run_pass(&d, pass);
        const double tmin = bench_minimum(t, repeats), tmed = bench_median(t, repeats);
        free(t);
        const double flops = case_flops(cc) * (pass == P_TRAIN ? 3 : 1);
        const double gflops = flops / tmed * 1e-9, pct = 100.0 * gflops / o->peak;
        const char *pn = PASS_NAMES[pass];
        if (o->json) {
            printf("{\"op\":\"conv\",\"pass\":\"%s\",\"n\":%lld,\"c\":%lld,\"k\":%lld,\"h\":%lld,\"w\":%lld,"
                   "\"r\":%lld,\"s\":%lld,\"stride\":%d,\"pad\":%d,\"dilation\":%d,\"groups\":%d,"
                   "\"threads\":%d,\"ms\":%.4f,\"gflops\":%.3f,\"peak_pct\":%.2f,\"path\":\"%s\","
                   "\"min_ms\":%.4f,\"repeats\":%d,\"peak_gflops\":%.2f,\"peak1_gflops\":%.2f}\n",
                   pn, (long long)cc->n, (long long)cc->c, (long long)cc->k, (long long)cc->h,
                   (long long)cc->w, (long long)cc->r, (long long)cc->s, cc->stride, cc->pad, cc->dilation,
                   cc->groups, o->threads, tmed * 1e3, gflops, pct, o->ref ? "ref" : "fast", tmin * 1e3,
                   repeats, o->peak, o->peak1);
        } else {
            char name[160];
            snprintf(name, sizeof name, "N=%lld C=%lld K=%lld %lldx%lld %lldx%lld s%d p%d d%d g%d",
                     (long long)cc->n, (long long)cc->c, (long long)cc->k, (long long)cc->h, (long long)cc->w,
                     (long long)cc->r, (long long)cc->s, cc->stride, cc->pad, cc->dilation, cc->groups);
            printf("%-44s %-10s %10.3f %10.3f %9.2f %6.1f %7d\n", name, pn, tmed * 1e3, tmin * 1e3, gflops,
                   pct, repeats);
        }
        fflush(stdout);
    }
    CHECK(gg_requires_grad(d.x, false) == GG_OK && gg_requires_grad(d.w, false) == GG_OK);
    case_free(&d);
}

static void usage(const char *prog) {
    fprintf(stderr,
            "usage: %s [--op conv|dgconv] [--path fast|composite|ref] [--pass "
            "fwd|bwd_data|bwd_weight|train|all]\n"
            "          [--n N] [--c C] [--k K] [--h H] [--w W] [--r R] [--s S] [--stride S] [--pad P]\n"
            "          [--dilation D] [--groups G] [--threads T] [--repeats N] [--min-time SECONDS]\n"
            "          [--json] [--check] [--quick]\n",
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
    if (!strcmp(op, "dgconv")) {
        fprintf(stderr,
                "bench_conv: --op dgconv is not available yet (gg_dgconv2d does not exist in this build)\n");
        return 2;
    }
    if (strcmp(op, "conv")) {
        fprintf(stderr, "bench_conv: unknown --op '%s' (conv or dgconv)\n", op);
        return 2;
    }
    if (!strcmp(path, "composite")) {
        fprintf(stderr, "bench_conv: --path composite is not available yet (it applies to --op dgconv)\n");
        return 2;
    }
    if (strcmp(path, "fast") && strcmp(path, "ref")) {
        fprintf(stderr, "bench_conv: unknown --path '%s' (fast, composite or ref)\n", path);
        return 2;
    }
    o.ref = !strcmp(path, "ref");
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
    if (have_case && !case_valid(&one)) return 2;

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
    if (o.ref) gg__conv2d_force_algo(GG_CONV_ALGO_REF);
    if (!o.json) {
        printf("groupgrad %s, conv path %s, %d thread(s); FMA peak (%s, %d x %d-float accumulators): "
               "%.1f GFLOP/s on 1 thread, %.1f on %d\n",
               gg_version(), path, o.threads, bench_fma_isa(), BENCH_FMA_ACCUMULATORS, BENCH_FMA_LANES,
               o.peak1, o.peak, o.threads);
        printf("timed: fwd = gg_conv2d without grad; bwd_data/bwd_weight = gg_backward_ex through the conv "
               "node; "
               "train = gg_conv2d + gg_backward_ex (x, w require grad)\n");
        printf("%-44s %-10s %10s %10s %9s %6s %7s\n", "case", "pass", "median ms", "min ms", "GFLOP/s",
               "%peak", "repeats");
    }

    if (have_case) {
        bench_case(&one, only_pass, &o);
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
    gg_tape_reset(NULL);
    return 0;
}
