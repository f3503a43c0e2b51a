/* Autograd benchmarks: (1) tape overhead of a long chain of 1-element ops, forward + backward, per op;
 * (2) a 512x512x512 matmul through the tape (forward, forward + backward) against the same BLIS calls
 * made directly. Prints a table, or one JSON object per line with --json.
 *
 *   bench_autograd [--json] [--threads N] [--repeats N] [--quick] [--ops N] [--size N]
 *
 * --quick: a 3000-op chain and 128^3 (the smoke test); --ops / --size override the chain length (100000)
 * and the matmul size (512). *
 * Every figure is the median of the repeats, timed with CLOCK_MONOTONIC. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "gg_backend.h"
#include "groupgrad.h"

static bool json;
static int threads;

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "bench_autograd: %s failed at line %d: %s\n", #cond, __LINE__, gg_last_error()); \
            exit(1);                                                                                         \
        }                                                                                                    \
    } while (0)

/* ---- (1) tape overhead ---- */

/* One op of the chain on 1-element tensors. The factors multiply to 1 over each cycle of three, so the
 * values and the gradient stay normal numbers however long the chain. */
typedef gg_tensor *(*chain_op)(gg_tensor *y, gg_tensor *c, int i);

static gg_tensor *elementwise_step(gg_tensor *y, gg_tensor *c, int i) {
    switch (i % 3) {
    case 0:
        return gg_add(y, c); /* y + 2 */
    case 1:
        return gg_mul(y, c); /* y * 2 */
    default:
        return gg_mul_scalar(y, 0.5f); /* y * 0.5 */
    }
}

static gg_tensor *matmul_step(gg_tensor *y, gg_tensor *c, int i) {
    return i % 2 ? gg_matmul(y, c) : gg_mul_scalar(y, 0.5f); /* [1,1] @ [1,1] (c = 2), then * 0.5 */
}

static void tape_chain(const char *name, chain_op step, int ndim, int n_ops, int repeats) {
    const int64_t one[2] = {1, 1};
    gg_tensor *x = gg_tensor_full(ndim, one, 1.0f), *c = gg_tensor_full(ndim, one, 2.0f);
    CHECK(x && c && gg_requires_grad(x, true) == GG_OK);
    double *fwd = calloc((size_t)repeats, sizeof(double)), *bwd = calloc((size_t)repeats, sizeof(double));
    double *rst = calloc((size_t)repeats, sizeof(double)), *all = calloc((size_t)repeats, sizeof(double));
    CHECK(fwd && bwd && rst && all);
    for (int r = -1; r < repeats; r++) { /* r == -1: warm-up (tape arrays, allocator) */
        gg_zero_grad(x);
        double t0 = bench_now_s();
        gg_tensor *y = x;
        for (int i = 0; i < n_ops; i++) y = step(y, c, i);
        double t1 = bench_now_s();
        CHECK(y && gg_backward(y) == GG_OK);
        double t2 = bench_now_s();
        gg_tape_reset(NULL);
        double t3 = bench_now_s();
        if (r < 0) continue;
        fwd[r] = t1 - t0, bwd[r] = t2 - t1, rst[r] = t3 - t2, all[r] = t3 - t0;
    }
    float g = 0;
    CHECK(gg_tensor_item(x->grad, &g) == GG_OK && g == 1.0f); /* d chain / dx = 1 */
    double us = 1e6 / n_ops, f = bench_median(fwd, repeats) * us, b = bench_median(bwd, repeats) * us;
    double s = bench_median(rst, repeats) * us, a = bench_median(all, repeats) * us;
    /* the medians of the parts need not add up to the median of the whole; report the fwd+bwd sum */
    if (json)
        printf("{\"name\":\"%s\",\"threads\":%d,\"ops\":%d,\"repeats\":%d,\"us_per_op\":%.4f,"
               "\"us_per_op_with_reset\":%.4f,\"fwd_us_per_op\":%.4f,\"bwd_us_per_op\":%.4f,"
               "\"reset_us_per_op\":%.4f,\"ms\":%.3f}\n",
               name, threads, n_ops, repeats, f + b, a, f, b, s, (f + b) * n_ops / 1e3);
    else
        printf("%-26s %7d ops  fwd %.3f + bwd %.3f = %.3f us/op  (+ reset %.3f; whole step %.3f us/op)\n",
               name, n_ops, f, b, f + b, s, a);
    gg_tensor_free(x);
    gg_tensor_free(c);
    free(fwd);
    free(bwd);
    free(rst);
    free(all);
}

/* ---- (2) matmul through the tape against BLIS ---- */

/* t, blis_t: medians; t_min, blis_min: best repeats (their ratio is the figure least disturbed by other
 * load on the machine). blis_t == 0 for the BLIS-alone lines. */
static void report_mm(const char *name, int64_t n, double flops, double t, double t_min, double blis_t,
                      double blis_min) {
    double gf = flops / t * 1e-9;
    if (json && blis_t > 0)
        printf("{\"name\":\"%s\",\"threads\":%d,\"size\":%lld,\"ms\":%.4f,\"gflops\":%.2f,"
               "\"tape_vs_blis\":%.4f,\"tape_vs_blis_best\":%.4f}\n",
               name, threads, (long long)n, t * 1e3, gf, t / blis_t, t_min / blis_min);
    else if (json)
        printf(
            "{\"name\":\"%s\",\"threads\":%d,\"size\":%lld,\"ms\":%.4f,\"gflops\":%.2f,\"best_ms\":%.4f}\n",
            name, threads, (long long)n, t * 1e3, gf, t_min * 1e3);
    else if (blis_t > 0)
        printf("%-26s %4lld^3  %9.3f ms  %7.2f GFLOP/s  tape/BLIS %.3f (best %.3f)\n", name, (long long)n,
               t * 1e3, gf, t / blis_t, t_min / blis_min);
    else printf("%-26s %4lld^3  %9.3f ms  %7.2f GFLOP/s\n", name, (long long)n, t * 1e3, gf);
}

static void matmul_vs_blis(int64_t n, int repeats) {
    gg_rng rng;
    gg_rng_init(&rng, 42);
    gg_tensor *a = gg_tensor_empty(GG_SHAPE(n, n)), *b = gg_tensor_empty(GG_SHAPE(n, n));
    gg_tensor *c = gg_tensor_empty(GG_SHAPE(n, n)), *da = gg_tensor_zeros(GG_SHAPE(n, n));
    gg_tensor *db = gg_tensor_zeros(GG_SHAPE(n, n)), *seed = gg_tensor_empty(GG_SHAPE(n, n));
    CHECK(a && b && c && da && db && seed);
    CHECK(gg_rand_uniform(a, -1, 1, &rng) == GG_OK && gg_rand_uniform(b, -1, 1, &rng) == GG_OK);
    CHECK(gg_rand_uniform(seed, -1, 1, &rng) == GG_OK);
    float *A = gg_tensor_data(a), *B = gg_tensor_data(b), *C = gg_tensor_data(c), *G = gg_tensor_data(seed);
    float *dA = gg_tensor_data(da), *dB = gg_tensor_data(db);
    double *t1 = calloc((size_t)repeats, sizeof(double)), *t3 = calloc((size_t)repeats, sizeof(double));
    double *tf = calloc((size_t)repeats, sizeof(double)), *tfb = calloc((size_t)repeats, sizeof(double));
    CHECK(t1 && t3 && tf && tfb);
    CHECK(gg_requires_grad(a, true) == GG_OK && gg_requires_grad(b, true) == GG_OK);
    /* Interleave the four measurements so that a change of machine load hits them alike. */
    for (int r = -1; r < repeats; r++) {
        /* BLIS alone: C = A B; then the two backward products dA += G B^T, dB += A^T G */
        double s0 = bench_now_s();
        gg__sgemm(false, false, n, n, n, 1.0f, A, n, 1, B, n, 1, 0.0f, C, n, 1);
        double s1 = bench_now_s();
        gg__sgemm(false, true, n, n, n, 1.0f, G, n, 1, B, n, 1, 1.0f, dA, n, 1);
        gg__sgemm(true, false, n, n, n, 1.0f, A, n, 1, G, n, 1, 1.0f, dB, n, 1);
        double s2 = bench_now_s();
        /* through the tape: forward (recording), then forward + backward */
        gg_tensor *y = gg_matmul(a, b);
        double s3 = bench_now_s();
        CHECK(y);
        gg_tape_reset(NULL);
        double s4 = bench_now_s();
        y = gg_matmul(a, b);
        CHECK(y && gg_backward_ex(y, seed, false) == GG_OK);
        double s5 = bench_now_s();
        gg_tape_reset(NULL);
        if (r < 0) continue;
        t1[r] = s1 - s0, t3[r] = (s1 - s0) + (s2 - s1), tf[r] = s3 - s2, tfb[r] = s5 - s4;
    }
    double fl = 2.0 * (double)n * (double)n * (double)n;
    double m1 = bench_minimum(t1, repeats), m3 = bench_minimum(t3, repeats), mf = bench_minimum(tf, repeats);
    double mfb = bench_minimum(tfb, repeats);
    double b1 = bench_median(t1, repeats),
           b3 = bench_median(t3, repeats); /* bench_median() sorts: minima taken first */
    report_mm("sgemm_blis", n, fl, b1, m1, 0, 0);
    report_mm("sgemm_blis_fwd_bwd", n, 3 * fl, b3, m3, 0, 0);
    report_mm("matmul_tape_fwd", n, fl, bench_median(tf, repeats), mf, b1, m1);
    report_mm("matmul_tape_fwd_bwd", n, 3 * fl, bench_median(tfb, repeats), mfb, b3, m3);
    gg_tensor *r[] = {a, b, c, da, db, seed};
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++) gg_tensor_free(r[i]);
    free(t1);
    free(t3);
    free(tf);
    free(tfb);
}

int main(int argc, char **argv) {
    bool quick = false;
    int repeats = 0, n_ops = 0;
    int64_t n = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = true;
        else if (!strcmp(argv[i], "--quick")) quick = true;
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--repeats") && i + 1 < argc) repeats = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ops") && i + 1 < argc) n_ops = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--size") && i + 1 < argc) n = atoll(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--json] [--threads N] [--repeats N] [--quick] [--ops N] [--size N]\n",
                    argv[0]);
            return 2;
        }
    }
    if (threads > 0 && gg_set_num_threads(threads) != GG_OK) {
        fprintf(stderr, "bench_autograd: %s\n", gg_last_error());
        return 2;
    }
    threads = gg_get_num_threads();
    if (repeats <= 0) repeats = quick ? 3 : 7;
    if (n_ops <= 0) n_ops = quick ? 3000 : 100000;
    if (n <= 0) n = quick ? 128 : 512;
    if (!json) printf("groupgrad %s, %d thread(s), median of %d repeats\n", gg_version(), threads, repeats);
    tape_chain("tape_chain_elementwise", elementwise_step, 1, n_ops, repeats);
    tape_chain("tape_chain_matmul_1x1", matmul_step, 2, n_ops, repeats);
    matmul_vs_blis(n, repeats);
    return 0;
}
