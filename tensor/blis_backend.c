/* The only file that calls BLIS: kernel selection, thread count and sgemm with general strides. Also holds
 * the plain-C reference sgemm that shares gg__sgemm's signature (the fallback and the tests' oracle). */
#include <blis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif

#include "gg_backend.h"
#include "gg_runtime.h"

/* Products below this many multiply-adds (about 100^3) run BLIS on one thread: two threads only pay off
 * above it (measured with the AVX-512 kernels), and a parallel region costs far more on a loaded machine. */
#define GG_BLIS_PARALLEL_MIN (1 << 20)

/* BLIS 0.9 (Debian 12) knows AMD CPUs only up to family 0x19 (Zen 3/4): on a Zen 5 (family 0x1A) it falls
 * back to its generic C kernels, 42 GFLOP/s on one core where its AVX-512 "skx" kernels reach 220 and its
 * AVX2 "haswell" kernels 120 (512^3 sgemm). Its only way to choose a configuration is the BLIS_ARCH_TYPE
 * environment variable (an arch_t number), read once when BLIS initialises; so before the first BLIS call,
 * on an AMD CPU newer than BLIS knows and when the user has not set the variable, set it to the best
 * configuration the CPU can run. Intel CPUs and older AMD ones are detected correctly and left alone. */
static void choose_kernels(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    unsigned eax, ebx, ecx, edx;
    if (getenv("BLIS_ARCH_TYPE") || !__builtin_cpu_is("amd") || !__get_cpuid(1, &eax, &ebx, &ecx, &edx))
        return;
    unsigned family = (eax >> 8) & 0xf;
    if (family == 0xf) family += (eax >> 20) & 0xff;
    if (family <= 0x19) return;
    int arch = -1;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
        arch = BLIS_ARCH_SKX;
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) arch = BLIS_ARCH_HASWELL;
    if (arch < 0) return;
    char v[16];
    snprintf(v, sizeof v, "%d", arch);
    setenv("BLIS_ARCH_TYPE", v, 0);
#endif
}

static pthread_once_t setup_once = PTHREAD_ONCE_INIT;
static void setup(void) { pthread_once(&setup_once, choose_kernels); }

void gg__blis_set_num_threads(int n) {
    setup();
    bli_thread_set_num_threads((dim_t)n);
}

/* Normalise the strides of a rows x cols matrix to a layout BLIS accepts without complaint: row-major
 * (cs == 1, rs >= cols) or column-major (rs == 1, cs >= rows). Strides of size-1 dimensions are free, so
 * they are set to the value the layout implies. Returns false if neither layout fits. */
static bool blis_layout(int64_t rows, int64_t cols, int64_t *rs, int64_t *cs) {
    int64_t r = rows > 1 ? rows : 1, c = cols > 1 ? cols : 1;
    if ((c == 1 || *cs == 1) && (r == 1 || *rs >= c)) { /* row-major */
        *cs = 1;
        if (r == 1) *rs = c;
        return true;
    }
    if ((r == 1 || *rs == 1) && (c == 1 || *cs >= r)) { /* column-major */
        *rs = 1;
        if (c == 1) *cs = r;
        return true;
    }
    return false;
}

bool gg__sgemm_layout_ok(int64_t rows, int64_t cols, int64_t rs, int64_t cs) {
    return blis_layout(rows, cols, &rs, &cs);
}

void gg__sgemm_ref(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                   int64_t rsa, int64_t csa, const float *b, int64_t rsb, int64_t csb, float beta, float *c,
                   int64_t rsc, int64_t csc) {
    /* op(A)(i, p) = a[i*ra + p*ca], op(B)(p, j) = b[p*rb + j*cb] */
    int64_t ra = ta ? csa : rsa, ca = ta ? rsa : csa, rb = tb ? csb : rsb, cb = tb ? rsb : csb;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double acc = 0;
            for (int64_t p = 0; p < k; p++) acc += (double)a[i * ra + p * ca] * (double)b[p * rb + j * cb];
            float *cij = &c[i * rsc + j * csc];
            *cij = (float)(alpha * acc + (beta == 0.0f ? 0.0 : (double)beta * *cij));
        }
}

void gg__sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t rsa,
               int64_t csa, const float *b, int64_t rsb, int64_t csb, float beta, float *c, int64_t rsc,
               int64_t csc) {
    if (m <= 0 || n <= 0) return;
    setup();
    /* stored shapes: A is m x k (k x m when transposed), B k x n (n x k) */
    bool ok = blis_layout(ta ? k : m, ta ? m : k, &rsa, &csa) &&
              blis_layout(tb ? n : k, tb ? k : n, &rsb, &csb) && blis_layout(m, n, &rsc, &csc);
    if (sizeof(dim_t) < sizeof(int64_t)) { /* a 32-bit BLIS build */
        int64_t lim = INT32_MAX;
        ok = ok && m <= lim && n <= lim && k <= lim && rsa <= lim && csa <= lim && rsb <= lim && csb <= lim &&
             rsc <= lim && csc <= lim;
    }
    if (!ok) {
        gg__sgemm_ref(ta, tb, m, n, k, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc);
        return;
    }
    /* Inside an OpenMP region (even an inactive one) BLIS's own region would be nested and start fresh
     * threads on every call: stay on the calling thread there. */
    bool nested = false;
#ifdef _OPENMP
    nested = omp_get_level() > 0;
#endif
    rntm_t rntm = BLIS_RNTM_INITIALIZER;
    bool big = (double)m * (double)n * (double)k >= GG_BLIS_PARALLEL_MIN;
    bli_rntm_set_num_threads(big && !nested ? (dim_t)gg_get_num_threads() : 1, &rntm);
    bli_sgemm_ex(ta ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE, tb ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE, (dim_t)m,
                 (dim_t)n, (dim_t)k, &alpha, (float *)a, (inc_t)rsa, (inc_t)csa, (float *)b, (inc_t)rsb,
                 (inc_t)csb, &beta, c, (inc_t)rsc, (inc_t)csc, NULL, &rntm);
}
