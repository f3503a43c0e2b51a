/* Softmax and log-softmax along one dim, and the fused cross-entropy from logits: forward, backward.
 *
 * x viewed as [outer, L, inner] (L = size of `dim`), y = output, g = dL/dy, sums run along dim:
 *   softmax:     y = exp(x - max) / sum exp(x - max)       dx += y * (g - sum(g * y))
 *   log_softmax: y = x - max - log(sum exp(x - max))       dx += g - exp(y) * sum(g)
 * Subtracting the row max keeps exp <= 1, so logits like 1000 and -1000 give 1 and 0. A row holding
 * +inf or NaN gives NaN (as torch). exp of an argument below -87.34 (a subnormal result) gives 0.
 * A rank-0 x takes dim 0 or -1 (softmax 1, log_softmax 0, as torch).
 *
 * cross_entropy: logits [N, C], labels[N] in [0, C), eps = label_smoothing in [0, 1] (torch's rule):
 *   lse_i = log sum_c exp(x_ic),  loss_i = (1 - eps) (lse_i - x_{i,y_i}) + eps/C sum_c (lse_i - x_ic)
 *   NONE: out [N] = loss;  SUM: out = sum_i loss_i;  MEAN: out = sum_i loss_i / N  (N == 0: NaN, as torch)
 *   dx_ic += w_i (softmax_ic - eps/C - (1 - eps) [c == y_i]),  w_i = g_i (NONE), g (SUM), g / N (MEAN)
 * The forward keeps each row's max and log-sum-exp shift (and the labels, bit for bit, since the caller's
 * array need not outlive the call) in one saved [3, N] tensor, so backward costs one exp per logit.
 * Sums are accumulated in double. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gg_internal.h"
#include "gg_node.h"
#include "gg_ops.h"
#include "gg_reduce_internal.h"
#include "gg_runtime.h"

#define PAR_MIN 32768    /* elements below which kernels stay on one thread */
#define BLK 256          /* columns per task of the strided (inner > 1) kernels; scratch floats per row */
#define SHORT_ROW 128    /* rows shorter than this take the blocked short-row path */
#define SHORT_BLOCK 2048 /* elements per block of short rows */

/* ---- softmax kernels over contiguous [outer, L, inner], L >= 1 ---- */

/* inner == 1: one contiguous row of L per softmax. */
static void softmax_row(const float *p, float *q, int64_t L, bool log_out) {
    float m = gg__max_f32(p, L);
    for (int64_t j = 0; j < L; j++) q[j] = gg__exp_nonpos(p[j] - m);
    double s = gg__sum_f32(q, L);
    if (log_out) {
        float ls = (float)log(s);
        for (int64_t j = 0; j < L; j++) q[j] = (p[j] - m) - ls;
    } else {
        float inv = (float)(1.0 / s);
        for (int64_t j = 0; j < L; j++) q[j] *= inv;
    }
}

/* inner > 1: up to BLK adjacent softmaxes (stride `inner` along dim) at once, vectorised across them. */
static void softmax_cols(const float *p, float *q, int64_t L, int64_t inner, int64_t jn, bool log_out) {
    float m[BLK], f[BLK];
    double s[BLK];
    for (int64_t j = 0; j < jn; j++) m[j] = p[j], s[j] = 0;
    for (int64_t l = 1; l < L; l++)
        for (int64_t j = 0; j < jn; j++) m[j] = gg__max_nan(m[j], p[l * inner + j]);
    for (int64_t l = 0; l < L; l++) { /* two loops: fused, the compiler vectorises neither */
        const float *pl = p + l * inner;
        float *ql = q + l * inner;
        for (int64_t j = 0; j < jn; j++) ql[j] = gg__exp_nonpos(pl[j] - m[j]);
        for (int64_t j = 0; j < jn; j++) s[j] += (double)ql[j];
    }
    if (log_out) {
        for (int64_t j = 0; j < jn; j++) f[j] = (float)log(s[j]);
        for (int64_t l = 0; l < L; l++)
            for (int64_t j = 0; j < jn; j++) q[l * inner + j] = (p[l * inner + j] - m[j]) - f[j];
    } else {
        for (int64_t j = 0; j < jn; j++) f[j] = (float)(1.0 / s[j]);
        for (int64_t l = 0; l < L; l++)
            for (int64_t j = 0; j < jn; j++) q[l * inner + j] *= f[j];
    }
}

/* inner == 1 and L < SHORT_ROW: per-row vector loops would be all prologue and epilogue, so the rows of a
 * block of about SHORT_BLOCK elements get their max and sum by short scalar loops while the exp, which
 * dominates, runs over the whole block as one long vectorised loop. */
static void softmax_short_rows(const float *p, float *q, int64_t rows, int64_t L, bool log_out) {
    float m[BLK];
    for (int64_t r = 0; r < rows; r++) {
        m[r] = gg__max_f32(p + r * L, L);
        for (int64_t j = 0; j < L; j++) q[r * L + j] = p[r * L + j] - m[r];
    }
    for (int64_t i = 0; i < rows * L; i++) q[i] = gg__exp_nonpos(q[i]);
    for (int64_t r = 0; r < rows; r++) {
        double s = gg__sum_f32(q + r * L, L);
        const float *pr = p + r * L;
        float *qr = q + r * L;
        if (log_out) {
            float ls = (float)log(s);
            for (int64_t j = 0; j < L; j++) qr[j] = (pr[j] - m[r]) - ls;
        } else {
            float inv = (float)(1.0 / s);
            for (int64_t j = 0; j < L; j++) qr[j] *= inv;
        }
    }
}

/* A softmax kernel call split into tasks: a block of short rows, a row, or a block of columns. */
typedef struct sm_job {
    const float *x, *g; /* forward: x; backward: y in x and the output gradient in g */
    float *y;           /* forward output, or the input gradient (+=) */
    int64_t outer, L, inner;
    int64_t rb, nb; /* rows per short-row block; column blocks per outer index */
    bool log_out;
} sm_job;

/* Run fn(job, t) for t in [0, tasks): on gg_get_num_threads() threads when the work is large, otherwise
 * directly (an inactive OpenMP region still costs about 0.5 us, which tiny tensors cannot afford). */
static void run_tasks(void (*fn)(const sm_job *, int64_t), const sm_job *job, int64_t tasks, int64_t work) {
    if (work > PAR_MIN && tasks > 1 && gg_get_num_threads() > 1) {
#pragma omp parallel for num_threads(gg_get_num_threads())
        for (int64_t t = 0; t < tasks; t++) fn(job, t);
    } else {
        for (int64_t t = 0; t < tasks; t++) fn(job, t);
    }
}

static void fwd_short_task(const sm_job *j, int64_t b) {
    int64_t r0 = b * j->rb, nr = j->outer - r0 < j->rb ? j->outer - r0 : j->rb;
    softmax_short_rows(j->x + r0 * j->L, j->y + r0 * j->L, nr, j->L, j->log_out);
}
static void fwd_row_task(const sm_job *j, int64_t r) {
    softmax_row(j->x + r * j->L, j->y + r * j->L, j->L, j->log_out);
}
static void fwd_cols_task(const sm_job *j, int64_t t) {
    int64_t o = t / j->nb, j0 = t % j->nb * BLK, jn = j->inner - j0 < BLK ? j->inner - j0 : BLK;
    int64_t off = o * j->L * j->inner + j0;
    softmax_cols(j->x + off, j->y + off, j->L, j->inner, jn, j->log_out);
}

static void softmax_fwd(const float *x, float *y, int64_t outer, int64_t L, int64_t inner, bool log_out) {
    sm_job j = {.x = x, .y = y, .outer = outer, .L = L, .inner = inner, .log_out = log_out};
    int64_t numel = outer * L * inner;
    if (inner == 1 && L < SHORT_ROW) {
        j.rb = SHORT_BLOCK / L < BLK ? SHORT_BLOCK / L : BLK;
        run_tasks(fwd_short_task, &j, (outer + j.rb - 1) / j.rb, numel);
    } else if (inner == 1) {
        run_tasks(fwd_row_task, &j, outer, numel);
    } else {
        j.nb = (inner + BLK - 1) / BLK;
        run_tasks(fwd_cols_task, &j, outer * j.nb, numel);
    }
}

/* gx += softmax / log-softmax backward, all contiguous [outer, L, inner]. */
static void softmax_bwd_row(const float *y, const float *g, float *gx, int64_t L, bool log_out) {
    if (log_out) {
        float sg = (float)gg__sum_f32(g, L);
        for (int64_t j = 0; j < L; j++) gx[j] += g[j] - gg__exp_nonpos(y[j]) * sg;
    } else {
        float dot = (float)gg__dot_f32(g, y, L);
        for (int64_t j = 0; j < L; j++) gx[j] += y[j] * (g[j] - dot);
    }
}

static void softmax_bwd_cols(const float *y, const float *g, float *gx, int64_t L, int64_t inner, int64_t jn,
                             bool log_out) {
    double s[BLK];
    float f[BLK];
    for (int64_t j = 0; j < jn; j++) s[j] = 0;
    if (log_out) {
        for (int64_t l = 0; l < L; l++)
            for (int64_t j = 0; j < jn; j++) s[j] += (double)g[l * inner + j];
        for (int64_t j = 0; j < jn; j++) f[j] = (float)s[j];
        for (int64_t l = 0; l < L; l++) {
            const float *gl = g + l * inner, *yl = y + l * inner;
            float *xl = gx + l * inner;
            for (int64_t j = 0; j < jn; j++) xl[j] += gl[j] - gg__exp_nonpos(yl[j]) * f[j];
        }
    } else {
        for (int64_t l = 0; l < L; l++)
            for (int64_t j = 0; j < jn; j++) s[j] += (double)g[l * inner + j] * (double)y[l * inner + j];
        for (int64_t j = 0; j < jn; j++) f[j] = (float)s[j];
        for (int64_t l = 0; l < L; l++) {
            const float *gl = g + l * inner, *yl = y + l * inner;
            float *xl = gx + l * inner;
            for (int64_t j = 0; j < jn; j++) xl[j] += yl[j] * (gl[j] - f[j]);
        }
    }
}

static void bwd_row_task(const sm_job *j, int64_t r) {
    softmax_bwd_row(j->x + r * j->L, j->g + r * j->L, j->y + r * j->L, j->L, j->log_out);
}
static void bwd_cols_task(const sm_job *j, int64_t t) {
    int64_t o = t / j->nb, j0 = t % j->nb * BLK, jn = j->inner - j0 < BLK ? j->inner - j0 : BLK;
    int64_t off = o * j->L * j->inner + j0;
    softmax_bwd_cols(j->x + off, j->g + off, j->y + off, j->L, j->inner, jn, j->log_out);
}

static void softmax_bwd(const float *y, const float *g, float *gx, int64_t outer, int64_t L, int64_t inner,
                        bool log_out) {
    sm_job j = {.x = y, .g = g, .y = gx, .outer = outer, .L = L, .inner = inner, .log_out = log_out};
    if (inner == 1) {
        run_tasks(bwd_row_task, &j, outer, outer * L);
    } else {
        j.nb = (inner + BLK - 1) / BLK;
        run_tasks(bwd_cols_task, &j, outer * j.nb, outer * L * inner);
    }
}

/* ---- softmax ops ---- */

/* Status when gg_node_grad failed (it records the error; this covers a missing record). */
static int grad_nomem(const gg_node *n) {
    return gg_last_status() ? gg_last_status()
                            : gg_error_set(GG_ERR_NOMEM, n->op->name, "cannot allocate the input gradient");
}

/* ip = {outer, L, inner}; saved[0] = y. */
static int softmax_backward_common(gg_node *n, const gg_tensor *gout, bool log_out) {
    if (!gg_node_needs_grad(n, 0)) return GG_OK;
    gg_tensor *gx = gg_node_grad(n, 0);
    if (!gx) return grad_nomem(n);
    if (gout->numel > 0)
        softmax_bwd(gg_tensor_data(n->saved[0]), gg_tensor_data(gout), gg_tensor_data(gx), n->ip[0], n->ip[1],
                    n->ip[2], log_out);
    return GG_OK;
}
static int softmax_backward(gg_node *n, const gg_tensor *gout) {
    return softmax_backward_common(n, gout, false);
}
static int log_softmax_backward(gg_node *n, const gg_tensor *gout) {
    return softmax_backward_common(n, gout, true);
}

static const gg_op_def SOFTMAX_OP = {"softmax", softmax_backward};
static const gg_op_def LOG_SOFTMAX_OP = {"log_softmax", log_softmax_backward};

static gg_tensor *softmax_op(const char *func, const gg_op_def *def, gg_tensor *x, int dim, bool log_out) {
    char s[GG_SHAPE_STR_MAX];
    int range = x->ndim ? x->ndim : 1; /* rank 0 takes dim 0 or -1, as torch */
    int d = dim < 0 ? dim + range : dim;
    if (d < 0 || d >= range) {
        gg_error_set(GG_ERR_INDEX, func, "dim %d is out of range for x %s (expected %d..%d)", dim,
                     GG_SHAPE_STR(x, s), -range, range - 1);
        return NULL;
    }
    int64_t outer = 1, L = 1, inner = 1;
    for (int k = 0; k < x->ndim; k++) {
        if (k < d) outer *= x->shape[k];
        else if (k == d) L = x->shape[k];
        else inner *= x->shape[k];
    }
    gg_tensor *xc = gg_tensor_contiguous(x);
    if (!xc) return NULL;
    gg_tensor *out = gg_op_output(x->ndim, x->shape, func);
    if (out && x->numel > 0) softmax_fwd(gg_tensor_data(xc), gg_tensor_data(out), outer, L, inner, log_out);
    gg_tensor_free(xc);
    if (!out) return NULL;
    gg_tensor *in[1] = {x};
    bool failed;
    gg_node *node = gg_op_record(def, out, 1, in, &failed);
    if (failed) return NULL;
    if (node) {
        node->ip[0] = outer;
        node->ip[1] = L;
        node->ip[2] = inner;
        gg_node_save(node, out);
    }
    return gg_op_finish(out, func, 1, in);
}

gg_tensor *gg_softmax(gg_tensor *x, int dim) {
    GG_CHECK_ARG(x, NULL);
    return softmax_op(__func__, &SOFTMAX_OP, x, dim, false);
}

gg_tensor *gg_log_softmax(gg_tensor *x, int dim) {
    GG_CHECK_ARG(x, NULL);
    return softmax_op(__func__, &LOG_SOFTMAX_OP, x, dim, true);
}

/* ---- cross-entropy ---- */

/* Loss of one row p[0 .. C-1] (C >= 1) with label y; stores the row max and log(sum exp(p - max)). */
static double ce_row(const float *p, int64_t C, int32_t y, double eps, float *max_out, float *ls_out) {
    float buf[BLK];
    float m = gg__max_f32(p, C);
    double s = 0;
    for (int64_t j0 = 0; j0 < C; j0 += BLK) {
        int64_t n = C - j0 < BLK ? C - j0 : BLK;
        for (int64_t j = 0; j < n; j++) buf[j] = gg__exp_nonpos(p[j0 + j] - m);
        s += gg__sum_f32(buf, n);
    }
    double ls = log(s), lse = (double)m + ls;
    double loss = (1.0 - eps) * (lse - (double)p[y]);
    if (eps > 0) loss += eps * (lse - gg__sum_f32(p, C) / (double)C);
    *max_out = m;
    *ls_out = (float)ls;
    return loss;
}

/* A cross-entropy call split into rows (the sm_job fields are reused: x = logits [N, C], g = the output
 * gradient, y = the input gradient; `aux`, `labels`, `loss` as below). */
typedef struct ce_job {
    sm_job base;
    const float *aux; /* backward: [3, N] saved by the forward */
    float *aux_out;   /* forward: [3, N] to fill, or NULL when nothing is recorded */
    const int32_t *labels;
    double *loss; /* forward, MEAN/SUM: per-row losses; NONE: NULL (base.y gets them) */
    double eps;
    gg_reduction red;
} ce_job;

static void ce_fwd_task(const sm_job *sj, int64_t i) {
    const ce_job *j = (const ce_job *)sj;
    int64_t N = sj->outer, C = sj->L;
    float m, ls;
    double li = ce_row(sj->x + i * C, C, j->labels[i], j->eps, &m, &ls);
    if (j->loss) j->loss[i] = li;
    else sj->y[i] = (float)li;
    if (j->aux_out) {
        j->aux_out[i] = m;
        j->aux_out[N + i] = ls;
        memcpy(&j->aux_out[2 * N + i], &j->labels[i], sizeof(int32_t));
    }
}

static void ce_bwd_task(const sm_job *sj, int64_t i) {
    const ce_job *j = (const ce_job *)sj;
    int64_t N = sj->outer, C = sj->L;
    const float *g = sj->g;
    double w = j->red == GG_REDUCE_NONE ? g[i] : j->red == GG_REDUCE_SUM ? g[0] : (double)g[0] / (double)N;
    float a = (float)w, b = (float)(j->eps / (double)C), m = j->aux[i], ls = j->aux[N + i];
    int32_t y;
    memcpy(&y, &j->aux[2 * N + i], sizeof y);
    const float *p = sj->x + i * C;
    float *q = sj->y + i * C;
    for (int64_t c = 0; c < C; c++) q[c] += a * (gg__exp_nonpos((p[c] - m) - ls) - b);
    q[y] -= (float)(w * (1.0 - j->eps));
}

/* ip[0] = reduction, fp[0] = eps; saved[0] = contiguous logits, saved[1] = aux [3, N]. */
static int cross_entropy_backward(gg_node *n, const gg_tensor *gout) {
    if (!gg_node_needs_grad(n, 0)) return GG_OK;
    gg_tensor *gx = gg_node_grad(n, 0);
    if (!gx) return grad_nomem(n);
    const gg_tensor *xc = n->saved[0];
    int64_t N = xc->shape[0], C = xc->shape[1];
    ce_job j = {.base = {.x = gg_tensor_data(xc),
                         .g = gg_tensor_data(gout),
                         .y = gg_tensor_data(gx),
                         .outer = N,
                         .L = C},
                .aux = gg_tensor_data(n->saved[1]),
                .eps = n->fp[0],
                .red = (gg_reduction)n->ip[0]};
    run_tasks(ce_bwd_task, &j.base, N, N * C);
    return GG_OK;
}

static const gg_op_def CROSS_ENTROPY_OP = {"cross_entropy", cross_entropy_backward};

gg_tensor *gg_cross_entropy(gg_tensor *logits, const int32_t *labels, int64_t n_labels,
                            gg_reduction reduction, float label_smoothing) {
    char s[GG_SHAPE_STR_MAX];
    GG_CHECK_ARG(logits, NULL);
    if (logits->ndim != 2) {
        GG_FAIL(GG_ERR_SHAPE, "logits must be 2-D [N, C], got %s", GG_SHAPE_STR(logits, s));
        return NULL;
    }
    int64_t N = logits->shape[0], C = logits->shape[1];
    if (n_labels != N) {
        GG_FAIL(GG_ERR_SHAPE, "%lld labels for logits %s (expected %lld, one per row)", (long long)n_labels,
                GG_SHAPE_STR(logits, s), (long long)N);
        return NULL;
    }
    if (N > 0 && !labels) {
        GG_FAIL(GG_ERR_ARG, "labels is NULL (logits %s)", GG_SHAPE_STR(logits, s));
        return NULL;
    }
    if (reduction != GG_REDUCE_MEAN && reduction != GG_REDUCE_SUM && reduction != GG_REDUCE_NONE) {
        GG_FAIL(GG_ERR_ARG, "unknown reduction %d (logits %s)", (int)reduction, GG_SHAPE_STR(logits, s));
        return NULL;
    }
    if (!(label_smoothing >= 0.0f && label_smoothing <= 1.0f)) {
        GG_FAIL(GG_ERR_ARG, "label_smoothing %g is outside [0, 1] (logits %s)", (double)label_smoothing,
                GG_SHAPE_STR(logits, s));
        return NULL;
    }
    for (int64_t i = 0; i < N; i++)
        if (labels[i] < 0 || labels[i] >= C) {
            GG_FAIL(GG_ERR_INDEX, "label %d at index %lld is out of range [0, %lld) (logits %s)",
                    (int)labels[i], (long long)i, (long long)C, GG_SHAPE_STR(logits, s));
            return NULL;
        }

    gg_tensor *in[1] = {logits};
    bool rec = gg_op_needs_grad(1, in);
    double stack_loss[BLK], *loss = stack_loss;
    gg_tensor *xc = gg_tensor_contiguous(logits);
    gg_tensor *aux = rec && xc ? gg_tensor_empty(GG_SHAPE(3, N)) : NULL;
    if (N > BLK && reduction != GG_REDUCE_NONE && xc) loss = malloc((size_t)N * sizeof *loss);
    gg_tensor *out =
        xc && (aux || !rec) && loss ? gg_op_output(reduction == GG_REDUCE_NONE ? 1 : 0, &N, __func__) : NULL;
    if (!out) {
        if (xc && !loss) GG_FAIL(GG_ERR_NOMEM, "cannot allocate %lld row losses", (long long)N);
        if (loss != stack_loss) free(loss);
        gg_tensor_free(aux);
        gg_tensor_free(xc);
        return NULL;
    }

    float *o = gg_tensor_data(out);
    double eps = label_smoothing;
    ce_job j = {.base = {.x = gg_tensor_data(xc), .y = o, .outer = N, .L = C},
                .aux_out = aux ? gg_tensor_data(aux) : NULL,
                .labels = labels,
                .loss = reduction == GG_REDUCE_NONE ? NULL : loss,
                .eps = eps,
                .red = reduction};
    run_tasks(ce_fwd_task, &j.base, N, N * C);
    if (reduction != GG_REDUCE_NONE) {
        double total = 0;
        for (int64_t i = 0; i < N; i++) total += loss[i];
        o[0] = (float)(reduction == GG_REDUCE_MEAN ? total / (double)N : total);
    }
    if (loss != stack_loss) free(loss);

    bool failed;
    gg_node *node = gg_op_record(&CROSS_ENTROPY_OP, out, 1, in, &failed);
    if (node) {
        node->ip[0] = reduction;
        node->fp[0] = eps;
        gg_node_save(node, xc);
        gg_node_save(node, aux);
    }
    gg_tensor_free(aux);
    gg_tensor_free(xc);
    if (failed) return NULL;
    return gg_op_finish(out, __func__, 1, in);
}
