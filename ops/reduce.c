/* Reductions over any set of axes: gg_sum, gg_mean, gg_max, gg_min, gg_var, their kernels and backward.
 *
 * x [d0, .., d{n-1}], A = the reduced axes (all of them when axes is NULL or n_axes == 0), N = prod of
 * the sizes in A (group size), out = x's shape without A (keepdim: A's sizes become 1), g = dL/dout.
 *   sum:  out = sum_A x                                   dx += expand(g)
 *   mean: out = sum_A x / N                               dx += expand(g) / N
 *         (an empty group gives 0/0 = NaN, as torch.mean; sum of an empty group is 0)
 *   var:  out = sum_A (x - mean)^2 / max(0, N - correction)
 *                                                         dx += expand(g) * 2 (x - mean) / max(0, N - c)
 *         As torch.var (ATen's Welford divisor): correction >= N divides by 0, giving inf, or NaN when the
 *         squares sum to 0 (e.g. N == 1); the gradient is then inf/NaN too. A negative correction is
 *         allowed (torch allows it). Two passes in double (mean, then squared deviations).
 *   max/min: out = the extremum over A; a NaN in a group makes the result NaN (as torch.amax/amin).
 *         dx[k] += g, k = the FIRST element of the group in row-major order of the reduced dims equal to
 *         out (NaN matches NaN). This is torch.max(dim)'s rule (the gradient goes to the selected index),
 *         not torch.amax's (which splits it evenly among ties). Backward recomputes k from the saved
 *         input and output, which is exact and stores nothing else. Reducing over a dim of size 0 is an
 *         error (as torch: the extremum of nothing is undefined).
 * A rank-0 x accepts axis 0 or -1 (as torch). Accumulation is in double everywhere; results do not
 * depend on the thread count. The kernels (gg__reduce_ref / gg__reduce_fast) are declared in
 * gg_reduce_internal.h. */
#include <math.h>
#include <stdlib.h>

#include "gg_internal.h"
#include "gg_node.h"
#include "gg_ops.h"
#include "gg_reduce_internal.h"
#include "gg_runtime.h"

#define PAR_MIN 32768       /* elements below which kernels stay on one thread */
#define COL_BLOCK 256       /* outputs per column-kernel task (one double accumulator each) */
#define ALL_CHUNK_MIN 65536 /* whole-tensor reduction: elements per chunk at least */
#define ALL_MAX_CHUNKS 256  /* ... and at most this many chunks (partials on the stack) */

/* ---- geometry: a list of dims walked by one or two stride sets ---- */

typedef struct dimlist {
    int n;
    int64_t size[GG_MAX_DIMS];
    int64_t st[2][GG_MAX_DIMS]; /* element strides of up to two arrays walked together */
} dimlist;

/* Append an inner dim, dropping size 1 and merging with the previous dim when both stride sets allow
 * (prev stride == stride * size), which keeps the row-major order of the index space. */
static void dl_push(dimlist *l, int64_t size, int64_t s0, int64_t s1) {
    if (size == 1) return;
    int k = l->n - 1;
    if (k >= 0 && l->st[0][k] == s0 * size && l->st[1][k] == s1 * size) {
        l->size[k] *= size;
        l->st[0][k] = s0;
        l->st[1][k] = s1;
        return;
    }
    l->size[l->n] = size;
    l->st[0][l->n] = s0;
    l->st[1][l->n] = s1;
    l->n++;
}

/* Offsets (in both stride sets) of linear index `lin` of the first n dims of l; fills idx. */
static void dl_seek(const dimlist *l, int n, int64_t lin, int64_t *idx, int64_t *o0, int64_t *o1) {
    *o0 = *o1 = 0;
    for (int d = n - 1; d >= 0; d--) {
        idx[d] = lin % l->size[d];
        lin /= l->size[d];
        *o0 += idx[d] * l->st[0][d];
        *o1 += idx[d] * l->st[1][d];
    }
}

/* Advance a row-major odometer over the first n dims of l, updating both offsets. */
static inline void dl_step(const dimlist *l, int n, int64_t *idx, int64_t *o0, int64_t *o1) {
    for (int d = n - 1; d >= 0; d--) {
        *o0 += l->st[0][d];
        *o1 += l->st[1][d];
        if (++idx[d] < l->size[d]) return;
        *o0 -= l->st[0][d] * l->size[d];
        *o1 -= l->st[1][d] * l->size[d];
        idx[d] = 0;
    }
}

/* Contiguous strides of the output (over the kept dims) spread over x's dims: 0 along reduced dims. */
static void out_strides(int ndim, const int64_t *shape, unsigned mask, int64_t *ost) {
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        ost[d] = (mask >> d & 1u) ? 0 : s;
        if (!(mask >> d & 1u)) s *= shape[d];
    }
}

/* ---- reference kernel: one element at a time ---- */

void gg__reduce_ref(gg__red_kind kind, double div, const float *x, int ndim, const int64_t *shape,
                    const int64_t *stride, unsigned mask, float *out) {
    int64_t ks[GG_MAX_DIMS], kst[GG_MAX_DIMS], rs[GG_MAX_DIMS], rst[GG_MAX_DIMS], M = 1, N = 1;
    int nk = 0, nr = 0;
    for (int d = 0; d < ndim; d++) {
        if (mask >> d & 1u) rs[nr] = shape[d], rst[nr++] = stride[d], N *= shape[d];
        else ks[nk] = shape[d], kst[nk++] = stride[d], M *= shape[d];
    }
    int64_t kidx[GG_MAX_DIMS] = {0};
    for (int64_t g = 0; g < M; g++) {
        const float *p = x;
        for (int d = 0; d < nk; d++) p += kidx[d] * kst[d];
        int64_t ridx[GG_MAX_DIMS] = {0};
        double acc = 0, mean = 0;
        float m = NAN;
        for (int pass = 0; pass < (kind == GG__RED_VAR ? 2 : 1); pass++) {
            acc = 0;
            for (int64_t k = 0; k < N; k++) {
                int64_t off = 0;
                for (int d = 0; d < nr; d++) off += ridx[d] * rst[d];
                float v = p[off];
                if (kind == GG__RED_SUM || (kind == GG__RED_VAR && pass == 0)) acc += v;
                else if (kind == GG__RED_VAR) acc += ((double)v - mean) * ((double)v - mean);
                else if (k == 0 || (!isnan(m) && (isnan(v) || (kind == GG__RED_MAX ? v > m : v < m)))) m = v;
                for (int d = nr - 1; d >= 0; d--) {
                    if (++ridx[d] < rs[d]) break;
                    ridx[d] = 0;
                }
            }
            mean = acc / (double)N;
        }
        out[g] = (kind == GG__RED_MAX || kind == GG__RED_MIN) ? m : (float)(acc / div);
        for (int d = nk - 1; d >= 0; d--) {
            if (++kidx[d] < ks[d]) break;
            kidx[d] = 0;
        }
    }
}

/* ---- fast kernel ---- */

typedef struct plan {
    gg__red_kind kind;
    double div;
    const float *x;
    float *out;
    dimlist K, R; /* kept dims (output order) and reduced dims, x strides in st[0] */
    dimlist Rm;   /* outer-first row mode: R without its outermost dim */
    int64_t M, N;
} plan;

/* Strided or contiguous row kernels. */
static double row_sum(const float *p, int64_t n, int64_t s) {
    if (s == 1) return gg__sum_f32(p, n);
    double t = 0;
    for (int64_t i = 0; i < n; i++) t += (double)p[i * s];
    return t;
}

static double row_sqdev(const float *p, int64_t n, int64_t s, double mean) {
    if (s == 1) return gg__sqdev_f32(p, n, mean);
    double t = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)p[i * s] - mean;
        t += d * d;
    }
    return t;
}

static float row_ext(const float *p, int64_t n, int64_t s, bool is_max) {
    if (s == 1) return is_max ? gg__max_f32(p, n) : gg__min_f32(p, n);
    float m = p[0];
    if (is_max)
        for (int64_t i = 1; i < n; i++) m = gg__max_nan(m, p[i * s]);
    else
        for (int64_t i = 1; i < n; i++) m = gg__min_nan(m, p[i * s]);
    return m;
}

/* One group starting at p0: the reduced dims as rows (innermost reduced dim) under an odometer. */
static float group_value(const plan *P, const float *p0) {
    const dimlist *R = &P->R;
    int no = R->n - 1;
    int64_t L = R->size[no], s = R->st[0][no], rows = P->N / L;
    int64_t idx[GG_MAX_DIMS] = {0}, off = 0, unused = 0;
    if (P->kind == GG__RED_MAX || P->kind == GG__RED_MIN) {
        bool is_max = P->kind == GG__RED_MAX;
        float m = p0[0];
        for (int64_t r = 0; r < rows; r++) {
            float v = row_ext(p0 + off, L, s, is_max);
            m = is_max ? gg__max_nan(m, v) : gg__min_nan(m, v);
            dl_step(R, no, idx, &off, &unused);
        }
        return m;
    }
    double acc = 0;
    for (int64_t r = 0; r < rows; r++) {
        acc += row_sum(p0 + off, L, s);
        dl_step(R, no, idx, &off, &unused);
    }
    if (P->kind == GG__RED_SUM) return (float)(acc / P->div);
    double mean = acc / (double)P->N, m2 = 0;
    off = 0;
    for (int64_t r = 0; r < rows; r++) {
        m2 += row_sqdev(p0 + off, L, s, mean);
        dl_step(R, no, idx, &off, &unused);
    }
    return (float)(m2 / P->div);
}

/* Row mode: groups [g0, g1), each reduced by group_value. */
static void row_range(const plan *P, int64_t g0, int64_t g1) {
    int64_t idx[GG_MAX_DIMS], off, unused;
    dl_seek(&P->K, P->K.n, g0, idx, &off, &unused);
    for (int64_t g = g0; g < g1; g++) {
        P->out[g] = group_value(P, P->x + off);
        dl_step(&P->K, P->K.n, idx, &off, &unused);
    }
}

/* Outer-first row mode: the outermost reduced dim is also outermost in memory (N when reducing N, H, W
 * of NCHW). Reducing one group after another would jump a page per row and defeat the prefetcher, so
 * GCHUNK groups are reduced together, sweeping the input in memory order. Each group still adds its rows
 * in the same order as row mode, so the results equal row mode's bit for bit. */
#define GCHUNK 256
static void outer_range(const plan *P, int64_t g0, int64_t g1) {
    const dimlist *R = &P->R, *Rm = &P->Rm;
    int no = R->n - 1, nm = Rm->n - 1;
    int64_t L = R->size[no], s = R->st[0][no], n0 = R->size[0], s0 = R->st[0][0], rows = P->N / (n0 * L);
    bool is_ext = P->kind == GG__RED_MAX || P->kind == GG__RED_MIN, is_max = P->kind == GG__RED_MAX;
    double acc[GCHUNK], mean[GCHUNK];
    float m[GCHUNK];
    int64_t goff[GCHUNK], kidx[GG_MAX_DIMS], ko, unused;
    dl_seek(&P->K, P->K.n, g0, kidx, &ko, &unused);
    for (int64_t c0 = g0; c0 < g1; c0 += GCHUNK) {
        int64_t cn = g1 - c0 < GCHUNK ? g1 - c0 : GCHUNK;
        for (int64_t k = 0; k < cn; k++) {
            goff[k] = ko;
            acc[k] = 0;
            m[k] = P->x[ko];
            dl_step(&P->K, P->K.n, kidx, &ko, &unused);
        }
        for (int pass = 0; pass < (P->kind == GG__RED_VAR ? 2 : 1); pass++) {
            for (int64_t i0 = 0; i0 < n0; i0++)
                for (int64_t k = 0; k < cn; k++) {
                    const float *p0 = P->x + goff[k] + i0 * s0;
                    int64_t idx[GG_MAX_DIMS] = {0}, off = 0;
                    for (int64_t r = 0; r < rows; r++) {
                        if (is_ext) {
                            float v = row_ext(p0 + off, L, s, is_max);
                            m[k] = is_max ? gg__max_nan(m[k], v) : gg__min_nan(m[k], v);
                        } else if (pass == 0) {
                            acc[k] += row_sum(p0 + off, L, s);
                        } else {
                            acc[k] += row_sqdev(p0 + off, L, s, mean[k]);
                        }
                        dl_step(Rm, nm, idx, &off, &unused);
                    }
                }
            if (P->kind == GG__RED_VAR && pass == 0)
                for (int64_t k = 0; k < cn; k++) mean[k] = acc[k] / (double)P->N, acc[k] = 0;
        }
        for (int64_t k = 0; k < cn; k++) P->out[c0 + k] = is_ext ? m[k] : (float)(acc[k] / P->div);
    }
}

/* Column mode: the innermost kept dim is contiguous (and the innermost reduced one is not), so each task
 * reduces up to COL_BLOCK adjacent outputs at once with a vector of accumulators. Task t covers outer
 * kept index t / nb and the column block t % nb. */
static void col_range(const plan *P, int64_t t0, int64_t t1) {
    const dimlist *K = &P->K, *R = &P->R;
    int nko = K->n - 1, no = R->n - 1;
    int64_t Kin = K->size[nko], nb = (Kin + COL_BLOCK - 1) / COL_BLOCK;
    int64_t L = R->size[no], s = R->st[0][no], rows = P->N / L;
    int64_t kidx[GG_MAX_DIMS], ko, unused;
    int64_t o = t0 / nb, b = t0 % nb;
    dl_seek(K, nko, o, kidx, &ko, &unused);
    double acc[COL_BLOCK], mean[COL_BLOCK];
    float m[COL_BLOCK];
    for (int64_t t = t0; t < t1; t++) {
        int64_t j0 = b * COL_BLOCK, jn = Kin - j0 < COL_BLOCK ? Kin - j0 : COL_BLOCK;
        const float *base = P->x + ko + j0;
        float *op = P->out + o * Kin + j0;
        int64_t ridx[GG_MAX_DIMS] = {0}, roff = 0;
        if (P->kind == GG__RED_MAX || P->kind == GG__RED_MIN) {
            for (int64_t j = 0; j < jn; j++) m[j] = base[j];
            for (int64_t r = 0; r < rows; r++) {
                for (int64_t l = 0; l < L; l++) {
                    const float *q = base + roff + l * s;
                    if (P->kind == GG__RED_MAX)
                        for (int64_t j = 0; j < jn; j++) m[j] = gg__max_nan(m[j], q[j]);
                    else
                        for (int64_t j = 0; j < jn; j++) m[j] = gg__min_nan(m[j], q[j]);
                }
                dl_step(R, no, ridx, &roff, &unused);
            }
            for (int64_t j = 0; j < jn; j++) op[j] = m[j];
        } else {
            for (int64_t j = 0; j < jn; j++) acc[j] = 0;
            for (int64_t r = 0; r < rows; r++) {
                for (int64_t l = 0; l < L; l++) {
                    const float *q = base + roff + l * s;
                    for (int64_t j = 0; j < jn; j++) acc[j] += (double)q[j];
                }
                dl_step(R, no, ridx, &roff, &unused);
            }
            if (P->kind == GG__RED_VAR) {
                for (int64_t j = 0; j < jn; j++) mean[j] = acc[j] / (double)P->N, acc[j] = 0;
                roff = 0;
                for (int64_t r = 0; r < rows; r++) {
                    for (int64_t l = 0; l < L; l++) {
                        const float *q = base + roff + l * s;
                        for (int64_t j = 0; j < jn; j++) {
                            double d = (double)q[j] - mean[j];
                            acc[j] += d * d;
                        }
                    }
                    dl_step(R, no, ridx, &roff, &unused);
                }
            }
            for (int64_t j = 0; j < jn; j++) op[j] = (float)(acc[j] / P->div);
        }
        if (++b == nb) {
            b = 0;
            o++;
            dl_step(K, nko, kidx, &ko, &unused);
        }
    }
}

/* Everything reduced, one contiguous run of N elements: fixed chunks (so the result does not depend on
 * the thread count) reduced in parallel, partials combined in order. */
static void all_contig(const plan *P) {
    int64_t N = P->N, chunk = (N + ALL_MAX_CHUNKS - 1) / ALL_MAX_CHUNKS;
    if (chunk < ALL_CHUNK_MIN) chunk = ALL_CHUNK_MIN;
    int64_t nc = (N + chunk - 1) / chunk;
    const float *x = P->x;
    bool is_ext = P->kind == GG__RED_MAX || P->kind == GG__RED_MIN;
    if (nc == 1) { /* no OpenMP region at all: even an inactive one costs about 0.5 us */
        if (is_ext) {
            P->out[0] = row_ext(x, N, 1, P->kind == GG__RED_MAX);
        } else {
            double acc = gg__sum_f32(x, N);
            if (P->kind == GG__RED_VAR) acc = gg__sqdev_f32(x, N, acc / (double)N);
            P->out[0] = (float)(acc / P->div);
        }
        return;
    }
    if (is_ext) {
        bool is_max = P->kind == GG__RED_MAX;
        float part[ALL_MAX_CHUNKS];
#pragma omp parallel for num_threads(gg_get_num_threads())
        for (int64_t c = 0; c < nc; c++) {
            int64_t n = N - c * chunk < chunk ? N - c * chunk : chunk;
            part[c] = row_ext(x + c * chunk, n, 1, is_max);
        }
        float m = part[0];
        for (int64_t c = 1; c < nc; c++) m = is_max ? gg__max_nan(m, part[c]) : gg__min_nan(m, part[c]);
        P->out[0] = m;
        return;
    }
    double part[ALL_MAX_CHUNKS];
#pragma omp parallel for num_threads(gg_get_num_threads())
    for (int64_t c = 0; c < nc; c++) {
        int64_t n = N - c * chunk < chunk ? N - c * chunk : chunk;
        part[c] = gg__sum_f32(x + c * chunk, n);
    }
    double acc = 0;
    for (int64_t c = 0; c < nc; c++) acc += part[c];
    if (P->kind == GG__RED_VAR) {
        double mean = acc / (double)N;
#pragma omp parallel for num_threads(gg_get_num_threads())
        for (int64_t c = 0; c < nc; c++) {
            int64_t n = N - c * chunk < chunk ? N - c * chunk : chunk;
            part[c] = gg__sqdev_f32(x + c * chunk, n, mean);
        }
        acc = 0;
        for (int64_t c = 0; c < nc; c++) acc += part[c];
    }
    P->out[0] = (float)(acc / P->div);
}

/* Run fn on [0, n): split into one range per thread when the work is large, else directly (an inactive
 * OpenMP region still costs about 0.5 us). */
static void run_ranges(const plan *P, void (*fn)(const plan *, int64_t, int64_t), int64_t n, int64_t work) {
    int nt = work > PAR_MIN ? gg_get_num_threads() : 1;
    if (nt > n) nt = (int)n;
    if (nt <= 1) {
        fn(P, 0, n);
        return;
    }
#pragma omp parallel for num_threads(nt)
    for (int t = 0; t < nt; t++) fn(P, n * t / nt, n * (t + 1) / nt);
}

/* True if the outermost reduced dim has a larger stride than every kept dim. */
static bool outermost(const plan *P) {
    for (int d = 0; d < P->K.n; d++)
        if (P->K.st[0][d] >= P->R.st[0][0]) return false;
    return true;
}

void gg__reduce_fast(gg__red_kind kind, double div, const float *x, int ndim, const int64_t *shape,
                     const int64_t *stride, unsigned mask, float *out) {
    plan P = {.kind = kind, .div = div, .x = x, .out = out, .M = 1, .N = 1};
    /* The reduced dims go by decreasing stride: the value does not depend on their order (only rounding
     * does, deterministically), and memory order makes rows contiguous and lets them merge, e.g. summing
     * all of a transposed matrix becomes one contiguous run. Kept dims stay in output order. */
    int rd[GG_MAX_DIMS], nr = 0;
    for (int d = 0; d < ndim; d++) {
        if (mask >> d & 1u) {
            int k = nr++;
            for (; k > 0 && stride[rd[k - 1]] < stride[d]; k--) rd[k] = rd[k - 1];
            rd[k] = d;
            P.N *= shape[d];
        } else {
            P.M *= shape[d];
            dl_push(&P.K, shape[d], stride[d], 0);
        }
    }
    for (int k = 0; k < nr; k++) dl_push(&P.R, shape[rd[k]], stride[rd[k]], 0);
    if (P.M == 0) return;
    if (P.N == 0) {
        float v = (kind == GG__RED_MAX || kind == GG__RED_MIN) ? NAN : (float)(0.0 / div);
        for (int64_t g = 0; g < P.M; g++) out[g] = v;
        return;
    }
    if (P.R.n == 0) { /* nothing to reduce (all reduced sizes are 1): one row of one element */
        P.R.n = 1;
        P.R.size[0] = 1;
        P.R.st[0][0] = 1;
    }
    int64_t work = P.M * P.N;
    const dimlist *K = &P.K, *R = &P.R;
    if (K->n == 0 && R->n == 1 && R->st[0][0] == 1) {
        all_contig(&P);
    } else if (K->n > 0 && K->st[0][K->n - 1] == 1 && R->st[0][R->n - 1] != 1) {
        int64_t Kin = K->size[K->n - 1];
        int64_t tasks = P.M / Kin * ((Kin + COL_BLOCK - 1) / COL_BLOCK);
        run_ranges(&P, col_range, tasks, work);
    } else if (K->n > 0 && R->n > 1 && R->st[0][R->n - 1] == 1 && outermost(&P)) {
        P.Rm.n = R->n - 1;
        for (int d = 1; d < R->n; d++) P.Rm.size[d - 1] = R->size[d], P.Rm.st[0][d - 1] = R->st[0][d];
        run_ranges(&P, outer_range, P.M, work);
    } else {
        run_ranges(&P, row_range, P.M, work);
    }
}

/* ---- argument checks shared by the ops ---- */

/* Reduced-axes bitmask from (axes, n_axes); errors name `func` and x's shape. */
static int parse_axes(const char *func, const gg_tensor *x, const int *axes, int n_axes, unsigned *mask) {
    char s[GG_SHAPE_STR_MAX];
    if (n_axes < 0)
        return gg_error_set(GG_ERR_ARG, func, "n_axes is %d, expected >= 0 (x %s)", n_axes,
                            GG_SHAPE_STR(x, s));
    if (!axes || n_axes == 0) {
        *mask = (1u << x->ndim) - 1u;
        return GG_OK;
    }
    int range = x->ndim ? x->ndim : 1; /* a rank-0 tensor takes axis 0 or -1, as torch */
    unsigned m = 0;
    for (int i = 0; i < n_axes; i++) {
        int a = axes[i], d = a < 0 ? a + range : a;
        if (d < 0 || d >= range)
            return gg_error_set(GG_ERR_INDEX, func, "axis %d is out of range for x %s (expected %d..%d)", a,
                                GG_SHAPE_STR(x, s), -range, range - 1);
        if (m >> d & 1u)
            return gg_error_set(GG_ERR_ARG, func, "axis %d appears more than once in axes (x %s)", a,
                                GG_SHAPE_STR(x, s));
        m |= 1u << d;
    }
    *mask = x->ndim ? m : 0u;
    return GG_OK;
}

typedef struct red_args {
    unsigned mask;
    int out_nd;
    int64_t out_shape[GG_MAX_DIMS];
    int64_t N; /* group size */
} red_args;

static int check_reduce(const char *func, const gg_tensor *x, const int *axes, int n_axes, bool keepdim,
                        bool nonempty, red_args *a) {
    char s[GG_SHAPE_STR_MAX];
    int st = parse_axes(func, x, axes, n_axes, &a->mask);
    if (st) return st;
    a->out_nd = 0;
    a->N = 1;
    int empty_axis = -1;
    for (int d = 0; d < x->ndim; d++) {
        if (a->mask >> d & 1u) {
            a->N *= x->shape[d];
            if (x->shape[d] == 0 && empty_axis < 0) empty_axis = d;
            if (keepdim) a->out_shape[a->out_nd++] = 1;
        } else {
            a->out_shape[a->out_nd++] = x->shape[d];
        }
    }
    if (nonempty && empty_axis >= 0)
        return gg_error_set(GG_ERR_SHAPE, func,
                            "cannot reduce over axis %d of size 0 (x %s): the extremum of no elements is "
                            "undefined",
                            empty_axis, GG_SHAPE_STR(x, s));
    return GG_OK;
}

/* ---- backward kernels ---- */

typedef struct bcast_ctx {
    dimlist D; /* st[0]: gx (contiguous), st[1]: g (0 along reduced dims) */
    float *gx;
    const float *g;
    double scale;
} bcast_ctx;

/* Rows [r0, r1) of the innermost dim: gx[row] += scale * g[row] (or the row's single g value). */
static void bcast_range(const bcast_ctx *c, int64_t r0, int64_t r1) {
    int no = c->D.n - 1;
    int64_t L = c->D.size[no], gs = c->D.st[1][no], idx[GG_MAX_DIMS], xo, go;
    float fs = (float)c->scale;
    dl_seek(&c->D, no, r0, idx, &xo, &go);
    for (int64_t r = r0; r < r1; r++) {
        float *q = c->gx + xo;
        const float *p = c->g + go;
        if (gs == 0) {
            float k = (float)((double)p[0] * c->scale);
            for (int64_t j = 0; j < L; j++) q[j] += k;
        } else {
            for (int64_t j = 0; j < L; j++) q[j] += p[j] * fs;
        }
        dl_step(&c->D, no, idx, &xo, &go);
    }
}

/* gx (contiguous, x's shape) += scale * g broadcast along the reduced dims; g contiguous over kept dims. */
static void bcast_add(float *gx, const float *g, int ndim, const int64_t *shape, unsigned mask,
                      double scale) {
    int64_t gst[GG_MAX_DIMS], xst[GG_MAX_DIMS], numel = 1;
    out_strides(ndim, shape, mask, gst);
    gg__contiguous_strides(ndim, shape, xst);
    bcast_ctx c = {.gx = gx, .g = g, .scale = scale};
    for (int d = 0; d < ndim; d++) {
        dl_push(&c.D, shape[d], xst[d], gst[d]);
        numel *= shape[d];
    }
    if (numel == 0) return;
    if (c.D.n == 0) {
        gx[0] += (float)((double)g[0] * scale);
        return;
    }
    int64_t rows = numel / c.D.size[c.D.n - 1];
    int nt = numel > PAR_MIN ? gg_get_num_threads() : 1;
    if (nt > rows) nt = (int)rows;
    if (nt <= 1) {
        bcast_range(&c, 0, rows);
        return;
    }
#pragma omp parallel for num_threads(nt)
    for (int t = 0; t < nt; t++) bcast_range(&c, rows * t / nt, rows * (t + 1) / nt);
}

/* Kept and reduced dims of x with x's strides (st[0]) and the contiguous gradient's strides (st[1]). */
static void split_dims(int ndim, const int64_t *shape, const int64_t *xstride, unsigned mask, dimlist *K,
                       dimlist *R) {
    int64_t gst[GG_MAX_DIMS];
    gg__contiguous_strides(ndim, shape, gst);
    *K = (dimlist){0};
    *R = (dimlist){0};
    for (int d = 0; d < ndim; d++) dl_push((mask >> d & 1u) ? R : K, shape[d], xstride[d], gst[d]);
    if (R->n == 0) {
        R->n = 1;
        R->size[0] = 1;
        R->st[0][0] = R->st[1][0] = 1;
    }
}

typedef struct bwd_ctx {
    dimlist K, R;
    const float *x, *y, *g;
    float *gx;
    int64_t N;
    double div;
} bwd_ctx;

/* Max/min: the first element (row-major over the reduced dims) equal to the group's result gets g. */
static void ext_bwd_range(const bwd_ctx *c, int64_t g0, int64_t g1) {
    int64_t kidx[GG_MAX_DIMS], xo, go;
    int no = c->R.n - 1;
    int64_t L = c->R.size[no], xs = c->R.st[0][no], gs = c->R.st[1][no], rows = c->N / L;
    dl_seek(&c->K, c->K.n, g0, kidx, &xo, &go);
    for (int64_t gi = g0; gi < g1; gi++) {
        float yv = c->y[gi];
        bool ynan = yv != yv;
        int64_t ridx[GG_MAX_DIMS] = {0}, rx = 0, rg = 0;
        bool found = false;
        for (int64_t r = 0; r < rows && !found; r++) {
            const float *p = c->x + xo + rx;
            for (int64_t l = 0; l < L; l++) {
                float v = p[l * xs];
                if (v == yv || (ynan && v != v)) {
                    c->gx[go + rg + l * gs] += c->g[gi];
                    found = true;
                    break;
                }
            }
            dl_step(&c->R, no, ridx, &rx, &rg);
        }
        dl_step(&c->K, c->K.n, kidx, &xo, &go);
    }
}

/* Var: dx += g * 2 (x - mean) / div, the mean recomputed in double. */
static void var_bwd_range(const bwd_ctx *c, int64_t g0, int64_t g1) {
    int64_t kidx[GG_MAX_DIMS], xo, go;
    int no = c->R.n - 1;
    int64_t L = c->R.size[no], xs = c->R.st[0][no], gs = c->R.st[1][no], rows = c->N / L;
    dl_seek(&c->K, c->K.n, g0, kidx, &xo, &go);
    for (int64_t gi = g0; gi < g1; gi++) {
        int64_t ridx[GG_MAX_DIMS] = {0}, rx = 0, rg = 0;
        double acc = 0;
        for (int64_t r = 0; r < rows; r++) {
            acc += row_sum(c->x + xo + rx, L, xs);
            dl_step(&c->R, no, ridx, &rx, &rg);
        }
        double mean = acc / (double)c->N, k = 2.0 * (double)c->g[gi] / c->div;
        rx = rg = 0;
        for (int64_t r = 0; r < rows; r++) {
            const float *p = c->x + xo + rx;
            float *q = c->gx + go + rg;
            if (xs == 1 && gs == 1)
                for (int64_t l = 0; l < L; l++) q[l] += (float)(k * ((double)p[l] - mean));
            else
                for (int64_t l = 0; l < L; l++) q[l * gs] += (float)(k * ((double)p[l * xs] - mean));
            dl_step(&c->R, no, ridx, &rx, &rg);
        }
        dl_step(&c->K, c->K.n, kidx, &xo, &go);
    }
}

static void run_bwd(const bwd_ctx *c, void (*fn)(const bwd_ctx *, int64_t, int64_t), int64_t M) {
    int nt = M * c->N > PAR_MIN ? gg_get_num_threads() : 1;
    if (nt > M) nt = (int)M;
    if (nt <= 1) {
        if (M > 0) fn(c, 0, M);
        return;
    }
#pragma omp parallel for num_threads(nt)
    for (int t = 0; t < nt; t++) fn(c, M * t / nt, M * (t + 1) / nt);
}

/* The input's gradient accumulator, or NULL with GG_OK when input 0 needs none. */
static int input_grad(gg_node *n, gg_tensor **gx) {
    *gx = NULL;
    if (!gg_node_needs_grad(n, 0)) return GG_OK;
    *gx = gg_node_grad(n, 0);
    if (*gx) return GG_OK;
    return gg_last_status() ? gg_last_status()
                            : gg_error_set(GG_ERR_NOMEM, n->op->name, "cannot allocate the input gradient");
}

/* ip[0] = reduced-axes mask, fp[0] = divisor (sum 1, mean N, var max(0, N - correction)). */
static int sum_backward(gg_node *n, const gg_tensor *gout) {
    gg_tensor *gx;
    int st = input_grad(n, &gx);
    if (!gx) return st;
    const gg_tensor *x = n->in[0];
    bcast_add(gg_tensor_data(gx), gg_tensor_data(gout), x->ndim, x->shape, (unsigned)n->ip[0],
              1.0 / n->fp[0]);
    return GG_OK;
}

/* saved[0] = x, saved[1] = out. */
static int extremum_backward(gg_node *n, const gg_tensor *gout) {
    gg_tensor *gx;
    int st = input_grad(n, &gx);
    if (!gx) return st;
    const gg_tensor *x = n->saved[0];
    bwd_ctx c = {.x = gg_tensor_data(x),
                 .y = gg_tensor_data(n->saved[1]),
                 .g = gg_tensor_data(gout),
                 .gx = gg_tensor_data(gx),
                 .N = 1};
    for (int d = 0; d < x->ndim; d++)
        if ((unsigned)n->ip[0] >> d & 1u) c.N *= x->shape[d];
    split_dims(x->ndim, x->shape, x->stride, (unsigned)n->ip[0], &c.K, &c.R);
    run_bwd(&c, ext_bwd_range, n->saved[1]->numel);
    return GG_OK;
}

/* saved[0] = x. */
static int var_backward(gg_node *n, const gg_tensor *gout) {
    gg_tensor *gx;
    int st = input_grad(n, &gx);
    if (!gx) return st;
    const gg_tensor *x = n->saved[0];
    bwd_ctx c = {
        .x = gg_tensor_data(x), .g = gg_tensor_data(gout), .gx = gg_tensor_data(gx), .N = 1, .div = n->fp[0]};
    for (int d = 0; d < x->ndim; d++)
        if ((unsigned)n->ip[0] >> d & 1u) c.N *= x->shape[d];
    if (c.N == 0) return GG_OK;
    split_dims(x->ndim, x->shape, x->stride, (unsigned)n->ip[0], &c.K, &c.R);
    run_bwd(&c, var_bwd_range, gout->numel);
    return GG_OK;
}

static const gg_op_def SUM_OP = {"sum", sum_backward};
static const gg_op_def MEAN_OP = {"mean", sum_backward};
static const gg_op_def MAX_OP = {"max", extremum_backward};
static const gg_op_def MIN_OP = {"min", extremum_backward};
static const gg_op_def VAR_OP = {"var", var_backward};

/* ---- public functions ---- */

static gg_tensor *reduce_op(const char *func, const gg_op_def *def, gg__red_kind kind, gg_tensor *x,
                            const int *axes, int n_axes, int correction, bool keepdim) {
    red_args a;
    bool is_ext = kind == GG__RED_MAX || kind == GG__RED_MIN;
    if (check_reduce(func, x, axes, n_axes, keepdim, is_ext, &a)) return NULL;
    double div = 1.0;
    if (def == &MEAN_OP) div = (double)a.N;
    if (kind == GG__RED_VAR) div = (double)a.N - correction > 0 ? (double)a.N - correction : 0.0;
    gg_tensor *out = gg_op_output(a.out_nd, a.out_shape, func);
    if (!out) return NULL;
    gg__reduce_fast(kind, div, gg_tensor_data(x), x->ndim, x->shape, x->stride, a.mask, gg_tensor_data(out));
    gg_tensor *in[1] = {x};
    bool failed;
    gg_node *node = gg_op_record(def, out, 1, in, &failed);
    if (failed) return NULL;
    if (node) {
        node->ip[0] = a.mask;
        node->fp[0] = div;
        if (is_ext || kind == GG__RED_VAR) gg_node_save(node, x);
        if (is_ext) gg_node_save(node, out);
    }
    return gg_op_finish(out, func, 1, in);
}

gg_tensor *gg_sum(gg_tensor *x, const int *axes, int n_axes, bool keepdim) {
    GG_CHECK_ARG(x, NULL);
    return reduce_op(__func__, &SUM_OP, GG__RED_SUM, x, axes, n_axes, 0, keepdim);
}

gg_tensor *gg_mean(gg_tensor *x, const int *axes, int n_axes, bool keepdim) {
    GG_CHECK_ARG(x, NULL);
    return reduce_op(__func__, &MEAN_OP, GG__RED_SUM, x, axes, n_axes, 0, keepdim);
}

gg_tensor *gg_max(gg_tensor *x, const int *axes, int n_axes, bool keepdim) {
    GG_CHECK_ARG(x, NULL);
    return reduce_op(__func__, &MAX_OP, GG__RED_MAX, x, axes, n_axes, 0, keepdim);
}

gg_tensor *gg_min(gg_tensor *x, const int *axes, int n_axes, bool keepdim) {
    GG_CHECK_ARG(x, NULL);
    return reduce_op(__func__, &MIN_OP, GG__RED_MIN, x, axes, n_axes, 0, keepdim);
}

gg_tensor *gg_var(gg_tensor *x, const int *axes, int n_axes, int correction, bool keepdim) {
    GG_CHECK_ARG(x, NULL);
    return reduce_op(__func__, &VAR_OP, GG__RED_VAR, x, axes, n_axes, correction, keepdim);
}
