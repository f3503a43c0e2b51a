/* Internal wrappers around the external kernel libraries: every BLIS call lives in blis_backend.c and
 * every libxsmm call in xsmm_backend.c (Debian ships libxsmm 1.17, whose API differs from 2.x). */
#ifndef GG_BACKEND_H
#define GG_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

void gg__blis_set_num_threads(int n);

/* C := alpha * op(A) @ op(B) + beta * C in single precision, BLAS semantics (beta == 0 overwrites C, so C
 * may hold garbage). op(X) is X, or X^T when the flag is set. Each stored matrix has its element (r, c)
 * at x[r*rsx + c*csx]: A is m x k (k x m when ta), B is k x n (n x k when tb), C is m x n. Strides are in
 * elements; a dimension of size 1 may have any stride. C must not overlap A or B.
 *   gg__sgemm      BLIS: gg_get_num_threads() threads from 2^20 multiply-adds up, one thread below and
 *                  inside OpenMP regions (a nested BLIS region would start fresh threads on every call;
 *                  loop over matrices serially and let BLIS thread each call instead).
 *                  Each matrix needs unit stride in one dimension (gg__sgemm_layout_ok); other layouts,
 *                  and m, n, k that overflow BLIS's dim_t, are computed by gg__sgemm_ref instead.
 *   gg__sgemm_ref  Plain C reference (double accumulation, any strides): the oracle of the tests. */
void gg__sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t rsa,
               int64_t csa, const float *b, int64_t rsb, int64_t csb, float beta, float *c, int64_t rsc,
               int64_t csc);
void gg__sgemm_ref(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                   int64_t rsa, int64_t csa, const float *b, int64_t rsb, int64_t csb, float beta, float *c,
                   int64_t rsc, int64_t csc);
/* True if BLIS can read a rows x cols matrix with these strides directly: unit stride along one dimension
 * (ignoring dimensions of size 1) and a leading stride that keeps rows/columns apart (no stride-0
 * broadcast). Other layouts must be copied to contiguous memory before gg__sgemm. */
bool gg__sgemm_layout_ok(int64_t rows, int64_t cols, int64_t rs, int64_t cs);

/* libxsmm batch-reduce GEMM, column-major (BLAS) convention, single precision, single-threaded:
 *   C [m x n] = sum_{i < count} A_i [m x k] @ B_i [k x n]            (beta0: C is overwritten)
 *   C [m x n] += sum_{i < count} A_i [m x k] @ B_i [k x n]           (otherwise)
 * with A_i at (char *)a + a_offs[i] and B_i at (char *)b + b_offs[i] (offsets in BYTES); element (r, c) of
 * A_i at A_i[c*lda + r], of B_i at B_i[c*ldb + r], of C at c[c*ldc + r].
 * gg__xsmm_brgemm_dispatch JIT-compiles (or finds) the kernel for a shape; NULL means libxsmm has none
 * for it (shape, CPU): the caller falls back to another path. Thread-safe; kernels live until exit.
 * gg__xsmm_brgemm runs one. */
typedef void (*gg__brgemm_fn)(void);
gg__brgemm_fn gg__xsmm_brgemm_dispatch(int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc,
                                       bool beta0);
void gg__xsmm_brgemm(gg__brgemm_fn kernel, const float *a, const float *b, float *c, int64_t count,
                     const unsigned long long *a_offs, const unsigned long long *b_offs);

#endif
