/* Benchmark helpers: clock, medians, and the FMA peak loop (see bench_util.h). */
#include "bench_util.h"

#include <omp.h>
#include <stdlib.h>
#include <time.h>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

double bench_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : (x > y ? 1 : 0);
}

double bench_median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double bench_minimum(const double *v, int n) {
    double m = v[0];
    for (int i = 1; i < n; i++) m = v[i] < m ? v[i] : m;
    return m;
}

/* ---- FMA peak ----
 * Each accumulator runs acc = acc * m + c with m just below 1, so values converge to c / (1 - m) = 1 and
 * never become denormal or infinite. The accumulators are independent chains: with a 4-cycle FMA latency
 * and two FMA pipes, at least 8 are needed to keep both pipes busy; 12 or 16 leave margin. The FMAs are
 * written one by one (no array) so that they stay in registers at any optimisation level that inlines. */
#if defined(__AVX512F__)
const int BENCH_FMA_ACCUMULATORS = 16, BENCH_FMA_LANES = 16;
const char *bench_fma_isa(void) { return "AVX-512"; }

static float fma_loop(long iters) {
    const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-6f);
    __m512 a0 = _mm512_set1_ps(0.50f), a1 = _mm512_set1_ps(0.51f), a2 = _mm512_set1_ps(0.52f);
    __m512 a3 = _mm512_set1_ps(0.53f), a4 = _mm512_set1_ps(0.54f), a5 = _mm512_set1_ps(0.55f);
    __m512 a6 = _mm512_set1_ps(0.56f), a7 = _mm512_set1_ps(0.57f), a8 = _mm512_set1_ps(0.58f);
    __m512 a9 = _mm512_set1_ps(0.59f), a10 = _mm512_set1_ps(0.60f), a11 = _mm512_set1_ps(0.61f);
    __m512 a12 = _mm512_set1_ps(0.62f), a13 = _mm512_set1_ps(0.63f), a14 = _mm512_set1_ps(0.64f);
    __m512 a15 = _mm512_set1_ps(0.65f);
    for (long i = 0; i < iters; i++) {
        a0 = _mm512_fmadd_ps(a0, m, c), a1 = _mm512_fmadd_ps(a1, m, c), a2 = _mm512_fmadd_ps(a2, m, c);
        a3 = _mm512_fmadd_ps(a3, m, c), a4 = _mm512_fmadd_ps(a4, m, c), a5 = _mm512_fmadd_ps(a5, m, c);
        a6 = _mm512_fmadd_ps(a6, m, c), a7 = _mm512_fmadd_ps(a7, m, c), a8 = _mm512_fmadd_ps(a8, m, c);
        a9 = _mm512_fmadd_ps(a9, m, c), a10 = _mm512_fmadd_ps(a10, m, c), a11 = _mm512_fmadd_ps(a11, m, c);
        a12 = _mm512_fmadd_ps(a12, m, c), a13 = _mm512_fmadd_ps(a13, m, c), a14 = _mm512_fmadd_ps(a14, m, c);
        a15 = _mm512_fmadd_ps(a15, m, c);
    }
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                             _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)),
                                       _mm512_add_ps(_mm512_add_ps(a12, a13), _mm512_add_ps(a14, a15))));
    return _mm512_reduce_add_ps(s);
}
#elif defined(__AVX2__) && defined(__FMA__)
const int BENCH_FMA_ACCUMULATORS = 12, BENCH_FMA_LANES = 8;
const char *bench_fma_isa(void) { return "AVX2+FMA"; }

static float fma_loop(long iters) {
    const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-6f);
    __m256 a0 = _mm256_set1_ps(0.50f), a1 = _mm256_set1_ps(0.51f), a2 = _mm256_set1_ps(0.52f);
    __m256 a3 = _mm256_set1_ps(0.53f), a4 = _mm256_set1_ps(0.54f), a5 = _mm256_set1_ps(0.55f);
    __m256 a6 = _mm256_set1_ps(0.56f), a7 = _mm256_set1_ps(0.57f), a8 = _mm256_set1_ps(0.58f);
    __m256 a9 = _mm256_set1_ps(0.59f), a10 = _mm256_set1_ps(0.60f), a11 = _mm256_set1_ps(0.61f);
    for (long i = 0; i < iters; i++) {
        a0 = _mm256_fmadd_ps(a0, m, c), a1 = _mm256_fmadd_ps(a1, m, c), a2 = _mm256_fmadd_ps(a2, m, c);
        a3 = _mm256_fmadd_ps(a3, m, c), a4 = _mm256_fmadd_ps(a4, m, c), a5 = _mm256_fmadd_ps(a5, m, c);
        a6 = _mm256_fmadd_ps(a6, m, c), a7 = _mm256_fmadd_ps(a7, m, c), a8 = _mm256_fmadd_ps(a8, m, c);
        a9 = _mm256_fmadd_ps(a9, m, c), a10 = _mm256_fmadd_ps(a10, m, c), a11 = _mm256_fmadd_ps(a11, m, c);
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                             _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
    float lanes[8];
    _mm256_storeu_ps(lanes, s);
    return lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
}
#else
const int BENCH_FMA_ACCUMULATORS = 12, BENCH_FMA_LANES = 8;
const char *bench_fma_isa(void) { return "plain C"; }

static float fma_loop(long iters) {
    float acc[12][8];
    for (int j = 0; j < 12; j++)
        for (int l = 0; l < 8; l++) acc[j][l] = 0.5f + 0.01f * (float)j;
    for (long i = 0; i < iters; i++)
        for (int j = 0; j < 12; j++)
            for (int l = 0; l < 8; l++) acc[j][l] = acc[j][l] * 0.999999f + 1e-6f;
    float s = 0;
    for (int j = 0; j < 12; j++)
        for (int l = 0; l < 8; l++) s += acc[j][l];
    return s;
}
#endif

/* Keeps the loops' results observable so that the compiler cannot drop them. */
static volatile float fma_sink;

double bench_fma_peak_gflops(int threads, double seconds, int trials) {
    if (threads < 1) threads = 1;
    if (trials < 1) trials = 1;
    /* calibrate on this thread: grow the iteration count until one call takes >= 10 ms */
    long iters = 1 << 14;
    for (;;) {
        double t0 = bench_now_s();
        fma_sink = fma_loop(iters);
        double dt = bench_now_s() - t0;
        if (dt >= 0.01 || iters > (1L << 40)) {
            double want = (double)iters * seconds / (dt > 0 ? dt : 1e-9);
            iters = want < 1024 ? 1024 : (long)want;
            break;
        }
        iters *= 4;
    }
    const double flops_per_thread = 2.0 * (double)iters * BENCH_FMA_ACCUMULATORS * BENCH_FMA_LANES;
    double best = 0;
    for (int t = -1; t < trials; t++) { /* t == -1: warm-up (thread start, clock ramp) */
        int team = 1;
        float sum = 0;
        double t0 = bench_now_s();
#pragma omp parallel num_threads(threads) reduction(+ : sum)
        {
            sum += fma_loop(iters);
#pragma omp master
            team = omp_get_num_threads();
        }
        double dt = bench_now_s() - t0;
        fma_sink = sum;
        double gf = flops_per_thread * team / dt * 1e-9;
        if (t >= 0 && gf > best) best = gf;
    }
    return best;
}
