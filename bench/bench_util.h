/* Helpers shared by the benchmark programs: a monotonic clock, medians and minima of repeat times, and the
 * machine's FP32 FMA peak measured by a register-only FMA loop (one thread, and every thread of a
 * parallel region). Not part of the library. */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

/* Seconds on CLOCK_MONOTONIC. */
double bench_now_s(void);
/* Median of v[0..n-1]; sorts v in place. n >= 1. */
double bench_median(double *v, int n);
/* Smallest of v[0..n-1]. n >= 1. */
double bench_minimum(const double *v, int n);

/* FP32 FMA peak in GFLOP/s (1 FMA = 2 flops) with `threads` threads (>= 1) each running the FMA loop for
 * about `seconds`; the best of `trials` timings of the whole parallel region. The loop keeps
 * BENCH_FMA_ACCUMULATORS independent accumulators of BENCH_FMA_LANES floats in registers: 16 x __m512
 * when __AVX512F__ is defined, else 12 x __m256 with AVX2+FMA, else a plain C loop the compiler may
 * vectorise (then the figure is only indicative). */
double bench_fma_peak_gflops(int threads, double seconds, int trials);
/* "AVX-512", "AVX2+FMA" or "plain C": what bench_fma_peak_gflops runs. */
const char *bench_fma_isa(void);
extern const int BENCH_FMA_ACCUMULATORS, BENCH_FMA_LANES;

#endif
