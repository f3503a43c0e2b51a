/* The only file that calls BLIS: thread count and sgemm with general strides. Also holds the plain-C
 * reference sgemm that shares gg__sgemm's signature (the fallback and the tests' oracle). */
#include <blis.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "gg_backend.h"
#include "gg_runtime.h"

/* Products below this many multiply-adds run BLIS on one thread: a parallel region costs microseconds
 * (far more on a loaded machine) and would dominate them. */
#define GG_BLIS_PARALLEL_MIN (1 << 18)

void gg__blis_set_num_threads(int n) { bli_thread_set_num_threads((dim_t)n); }

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
