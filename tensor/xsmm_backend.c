/* The only file that calls libxsmm (Debian 12 ships 1.17, whose API differs from 2.x): JIT batch-reduce
 * GEMM kernels, dispatched once per shape and called in the loops. A NULL kernel (no JIT for this CPU or
 * shape) means "use another path", never an error. The kernels run on the calling thread: callers thread
 * them from their own OpenMP regions with gg_get_num_threads(). */
#include <libxsmm.h>
#include <pthread.h>

#include "gg_backend.h"

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static void init(void) { libxsmm_init(); }

gg__brgemm_fn gg__xsmm_brgemm_dispatch(int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc,
                                       bool beta0) {
    const int64_t lim = 1 << 30;
    if (m < 1 || n < 1 || k < 1 || lda < m || ldc < m || ldb < 1 || lda > lim || ldb > lim || ldc > lim ||
        m > lim || n > lim || k > lim)
        return NULL;
    pthread_once(&init_once, init);
    const libxsmm_blasint bm = (libxsmm_blasint)m, bn = (libxsmm_blasint)n, bk = (libxsmm_blasint)k;
    const libxsmm_blasint la = (libxsmm_blasint)lda, lb = (libxsmm_blasint)ldb, lc = (libxsmm_blasint)ldc;
    const float alpha = 1.0f, beta = beta0 ? 0.0f : 1.0f;
    const int flags = LIBXSMM_GEMM_FLAG_NONE | (beta0 ? LIBXSMM_GEMM_FLAG_BETA_0 : 0);
    const int prefetch = LIBXSMM_PREFETCH_NONE;
    libxsmm_smmfunction_reducebatch_offs f =
        libxsmm_smmdispatch_reducebatch_offs(bm, bn, bk, &la, &lb, &lc, &alpha, &beta, &flags, &prefetch);
    return (gg__brgemm_fn)f;
}

void gg__xsmm_brgemm(gg__brgemm_fn kernel, const float *a, const float *b, float *c, int64_t count,
                     const unsigned long long *a_offs, const unsigned long long *b_offs) {
    const unsigned long long n = (unsigned long long)count;
    ((libxsmm_smmfunction_reducebatch_offs)kernel)(a, b, c, &n, a_offs, b_offs);
}
