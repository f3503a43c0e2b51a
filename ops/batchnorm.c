/* gg_batch_norm2d: batch normalisation over N, H, W per channel (NCHW float32, PyTorch 1.13 CPU semantics),
 * forward in training and eval mode with the running-statistics update, and its backward.
 *
 * x [N,C,H,W], n = N*H*W values per channel c; w, b [C] (1 and 0 when absent), dy = dL/dy.
 *   training: mean = sum x / n, var = sum (x - mean)^2 / n (biased), invstd = 1 / sqrt(var + eps)
 *             (0 when var == 0 and eps == 0, PyTorch's InvStd); running_mean = (1-m) rm + m mean,
 *             running_var = (1-m) rv + m var n/(n-1), written in place (version bumped, not recorded).
 *   eval:     mean = running_mean, invstd = 1 / sqrt(running_var + eps) in float (as PyTorch).
 *   alpha = invstd * w, beta = b - mean * alpha (float, as PyTorch), y = x * alpha + beta.
 * Backward, with sdy = sum dy and dot = sum (x - mean) dy per channel (double):
 *   dw += dot * invstd,  db += sdy,
 *   training: dx += (dy - sdy/n - (x - mean) * dot * invstd^2 / n) * alpha
 *   eval:     dx += dy * alpha
 * The forward saves a [5, C] tensor (mean, its rounding error, invstd, alpha, beta as used) and x when dw
 * or a training dx needs it, so the buffers may change before backward.
 *
 * Performance (128x32x28x28, one core: forward 1.0 ms, backward 2.0 ms, where PyTorch 1.13 takes 4.8 and
 * 7.0): two streaming passes each way. Forward: sum (x - s) and sum (x - s)^2 per plane in double (s = the
 * channel's first value, a shift that removes the cancellation of the one-pass variance), then
 * y = x * alpha + beta. Backward: sdy and dot per plane, then dx. The passes walk the N*C planes in memory
 * order (split over threads for large inputs) and keep a double partial per plane, reduced per channel in
 * n order, so the results do not depend on the thread count. */
#include <math.h>
#include <string.h>

#include "gg_alloc.h"
#include "gg_cnn.h"
#include "gg_internal.h"
#include "gg_node.h"
#include "gg_runtime.h"

#define FN "gg_batch_norm2d"
#define PAR_MIN 32768 /* elements below which the kernels stay on one thread */
#define LANES 16      /* elements per step of the double accumulation loops (4 vectors of 4) */

/* Rows of the [5, C] statistics tensor. The batch mean is kept as float (what the forward and dx use, as
 * PyTorch) plus its rounding error, so that the backward's sum (x - mean) dy sees the mean in double: with
 * |mean| >> std a float mean alone shifts dw by (mean - float(mean)) * sum dy. */
enum { ST_MEAN, ST_MEAN_LO, ST_INVSTD, ST_ALPHA, ST_BETA, ST_ROWS };

/* node->ip layout */
enum { IP_N, IP_C, IP_HW, IP_TRAIN, IP_XSLOT };

/* ---- argument checks (nothing allocated) ---- */

static int check_param(const gg_tensor *t, const char *name, int64_t C, const char *sh) {
    char s[GG_SHAPE_STR_MAX];
    if (t && (t->ndim != 1 || t->shape[0] != C))
        return gg_error_set(GG_ERR_SHAPE, FN, "%s must be [%lld], one value per channel, got %s (%s)", name,
                            (long long)C, GG_SHAPE_STR(t, s), sh);
    return GG_OK;
}

static int check_buffer(const gg_tensor *t, const char *name, const char *sh) {
    if (!t) return GG_OK;
    if (t->requires_grad)
        return gg_error_set(GG_ERR_ARG, FN, "%s requires grad: running statistics are buffers updated in place (%s)",
                            name, sh);
    if (t->shape[0] > 1 && t->stride[0] == 0)
        return gg_error_set(GG_ERR_ARG, FN, "%s is expanded (stride 0) and cannot be updated in place (%s)", name, sh);
    return GG_OK;
}

static int check_args(const gg_tensor *x, const gg_tensor *w, const gg_tensor *b, const gg_tensor *rm,
                      const gg_tensor *rv, bool training, float momentum, float eps) {
    char sh[5 * GG_SHAPE_STR_MAX + 80], s[GG_SHAPE_STR_MAX];
    int n = snprintf(sh, sizeof sh, "x %s", GG_SHAPE_STR(x, s));
    const gg_tensor *ps[4] = {w, b, rm, rv};
    const char *names[4] = {"weight", "bias", "running_mean", "running_var"};
    for (int i = 0; i < 4; i++)
        if (ps[i] && n > 0 && (size_t)n < sizeof sh)
            n += snprintf(sh + n, sizeof sh - (size_t)n, ", %s %s", names[i], GG_SHAPE_STR(ps[i], s));
    if (x->ndim != 4) return gg_error_set(GG_ERR_SHAPE, FN, "input must be 4-D [N,C,H,W] (%s)", sh);
    const int64_t C = x->shape[1];
    for (int i = 0; i < 4; i++)
        if (check_param(ps[i], names[i], C, sh)) return gg_last_status();
    if (!rm != !rv)
        return gg_error_set(GG_ERR_ARG, FN, "running_mean and running_var must be given together (%s)", sh);
    if (!training && !rm)
        return gg_error_set(GG_ERR_ARG, FN, "eval mode needs running_mean and running_var (%s)", sh);
    if (check_buffer(rm, "running_mean", sh) || check_buffer(rv, "running_var", sh)) return gg_last_status();
    if (!(eps >= 0) || !isfinite(eps))
        return gg_error_set(GG_ERR_ARG, FN, "eps must be finite and >= 0, got %g (%s)", (double)eps, sh);
    if (!(momentum >= 0 && momentum <= 1))
        return gg_error_set(GG_ERR_ARG, FN, "momentum must lie in [0, 1], got %g (%s)", (double)momentum, sh);
    if (training && x->numel > 0 && x->numel / C == 1)
        return gg_error_set(GG_ERR_SHAPE, FN, "expected more than 1 value per channel when training (%s)", sh);
    return GG_OK;
}

/* ---- kernels (contiguous data) ---- */

/* Double accumulation in explicit vectors (GCC/Clang vector extensions): written as arrays of scalar lanes,
 * GCC 12 unrolls the lanes into scalar registers once this is inlined into an OpenMP region (5x slower).
 * Four vectors of 4 doubles per sum hide the add latency; they are combined in a fixed order, so the
 * result does not depend on the thread count. */
typedef float bn_vf4 __attribute__((vector_size(4 * sizeof(float))));
typedef double bn_vd4 __attribute__((vector_size(4 * sizeof(double))));

static inline bn_vd4 load4d(const float *p) {
    bn_vf4 f;
    memcpy(&f, p, sizeof f);
    return __builtin_convertvector(f, bn_vd4);
}

static inline double total4(bn_vd4 a, bn_vd4 b, bn_vd4 c, bn_vd4 d) {
    const bn_vd4 s = (a + b) + (c + d);
    return (s[0] + s[1]) + (s[2] + s[3]);
}

/* s1 += sum (p[i] - k), s2 += sum (p[i] - k)^2, in double. */
static inline void shifted_sums(const float *restrict p, int64_t n, double k, double *s1, double *s2) {
    const bn_vd4 kv = {k, k, k, k};
    bn_vd4 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, q0 = {0}, q1 = {0}, q2 = {0}, q3 = {0};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        const bn_vd4 d0 = load4d(p + i) - kv, d1 = load4d(p + i + 4) - kv;
        const bn_vd4 d2 = load4d(p + i + 8) - kv, d3 = load4d(p + i + 12) - kv;
        a0 += d0, a1 += d1, a2 += d2, a3 += d3;
        q0 += d0 * d0, q1 += d1 * d1, q2 += d2 * d2, q3 += d3 * d3;
    }
    double t1 = total4(a0, a1, a2, a3), t2 = total4(q0, q1, q2, q3);
    for (; i < n; i++) {
        double d = (double)p[i] - k;
        t1 += d;
        t2 += d * d;
    }
    *s1 += t1;
    *s2 += t2;
}

/* sdy += sum dy[i], dot += sum (x[i] - mean) dy[i] (x may be NULL: sdy only), in double. */
static inline void grad_sums(const float *restrict x, const float *restrict dy, int64_t n, double mean, double *sdy,
                             double *dot) {
    const bn_vd4 mv = {mean, mean, mean, mean};
    bn_vd4 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, q0 = {0}, q1 = {0}, q2 = {0}, q3 = {0};
    int64_t i = 0;
    if (x) {
        for (; i + LANES <= n; i += LANES) {
            const bn_vd4 g0 = load4d(dy + i), g1 = load4d(dy + i + 4), g2 = load4d(dy + i + 8), g3 = load4d(dy + i + 12);
            a0 += g0, a1 += g1, a2 += g2, a3 += g3;
            q0 += (load4d(x + i) - mv) * g0, q1 += (load4d(x + i + 4) - mv) * g1;
            q2 += (load4d(x + i + 8) - mv) * g2, q3 += (load4d(x + i + 12) - mv) * g3;
        }
    } else {
        for (; i + LANES <= n; i += LANES) {
            a0 += load4d(dy + i), a1 += load4d(dy + i + 4);
            a2 += load4d(dy + i + 8), a3 += load4d(dy + i + 12);
        }
    }
    double t1 = total4(a0, a1, a2, a3), t2 = total4(q0, q1, q2, q3);
    for (; i < n; i++) {
        t1 += (double)dy[i];
        if (x) t2 += ((double)x[i] - mean) * (double)dy[i];
    }
    *sdy += t1;
    *dot += t2;
}

/* Per-channel parameters of the forward: what the kernels read, strided. */
typedef struct bn_params {
    const float *w, *b;
    float *rm, *rv;
    int64_t ws, bs, rms, rvs; /* element strides */
    double momentum, eps;
} bn_params;

/* Passes run over the N*C planes in memory order (one sequential stream per thread, which the hardware
 * prefetchers follow at full speed; walking one channel's N planes at a stride of C*H*W floats ran at half
 * the bandwidth), keeping a double partial sum per plane that is then reduced per channel in n order. */
static int forward_kernel(int64_t N, int64_t C, int64_t HW, bool training, const bn_params *p, const float *x,
                          float *y, float *st) {
    const int64_t cnt = N * HW, planes = N * C;
    const int nt = planes * HW > PAR_MIN ? gg_get_num_threads() : 1;
    double *part = NULL; /* [planes][2]: sum (x - k_c), sum (x - k_c)^2 */
    if (training) {
        part = gg_alloc(sizeof(double) * 2 * (size_t)planes);
        if (!part) return gg_error_set(GG_ERR_NOMEM, FN, "cannot allocate %lld partial sums", (long long)(2 * planes));
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t pl = 0; pl < planes; pl++) {
            double s1 = 0, s2 = 0;
            shifted_sums(x + pl * HW, HW, x[(pl % C) * HW], &s1, &s2);
            part[2 * pl] = s1, part[2 * pl + 1] = s2;
        }
    }
    for (int64_t c = 0; c < C; c++) {
        float mean, invstd;
        double mean_d = 0;
        if (training) {
            double s1 = 0, s2 = 0;
            for (int64_t n = 0; n < N; n++) s1 += part[2 * (n * C + c)], s2 += part[2 * (n * C + c) + 1];
            const double m = (double)x[c * HW] + s1 / (double)cnt;
            double var_sum = s2 - s1 * s1 / (double)cnt;
            if (var_sum < 0) var_sum = 0;
            const double var = var_sum / (double)cnt;
            mean = (float)m;
            mean_d = m;
            invstd = (var != 0 || p->eps != 0) ? (float)(1.0 / sqrt(var + p->eps)) : 0.0f;
            if (p->rm) {
                float *r = p->rm + c * p->rms;
                *r = (float)(p->momentum * m + (1 - p->momentum) * (double)*r);
            }
            if (p->rv) {
                float *r = p->rv + c * p->rvs;
                *r = (float)(p->momentum * (var_sum / (double)(cnt - 1)) + (1 - p->momentum) * (double)*r);
            }
        } else {
            mean = p->rm[c * p->rms];
            invstd = 1.0f / sqrtf(p->rv[c * p->rvs] + (float)p->eps);
        }
        const float alpha = invstd * (p->w ? p->w[c * p->ws] : 1.0f);
        st[ST_MEAN * C + c] = mean;
        st[ST_MEAN_LO * C + c] = training ? (float)(mean_d - (double)mean) : 0.0f;
        st[ST_INVSTD * C + c] = invstd;
        st[ST_ALPHA * C + c] = alpha;
        st[ST_BETA * C + c] = (p->b ? p->b[c * p->bs] : 0.0f) - mean * alpha;
    }
    gg_free(part);
    const float *alpha = st + ST_ALPHA * C, *beta = st + ST_BETA * C;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t pl = 0; pl < planes; pl++) {
        const float a = alpha[pl % C], b = beta[pl % C];
        const float *restrict xp = x + pl * HW;
        float *restrict yp = y + pl * HW;
        for (int64_t i = 0; i < HW; i++) yp[i] = xp[i] * a + b;
    }
    return GG_OK;
}

/* x may be NULL when neither dw nor a training dx is wanted; dx, dw, db NULL when not wanted. */
static int backward_kernel(int64_t N, int64_t C, int64_t HW, bool training, const float *st, const float *x,
                           const float *dy, float *dx, float *dw, float *db) {
    const int64_t cnt = N * HW, planes = N * C;
    const bool sums = dw || db || (dx && training);
    const int nt = planes * HW > PAR_MIN ? gg_get_num_threads() : 1;
    /* [planes][2] partial sums (sum dy, sum (x - mean) dy), then [C][2] float coefficients of dx */
    double *part = gg_alloc(sizeof(double) * 2 * (size_t)(planes + C));
    if (!part) return gg_error_set(GG_ERR_NOMEM, FN, "cannot allocate %lld partial sums", (long long)(2 * planes));
    float *coef = (float *)(part + 2 * planes);
    if (sums) {
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t pl = 0; pl < planes; pl++) {
            const int64_t c = pl % C;
            const double mean_d = (double)st[ST_MEAN * C + c] + (double)st[ST_MEAN_LO * C + c];
            double sdy = 0, dot = 0;
            grad_sums(x ? x + pl * HW : NULL, dy + pl * HW, HW, mean_d, &sdy, &dot);
            part[2 * pl] = sdy, part[2 * pl + 1] = dot;
        }
    }
    for (int64_t c = 0; c < C; c++) {
        const double invstd = st[ST_INVSTD * C + c];
        double sdy = 0, dot = 0;
        if (sums)
            for (int64_t n = 0; n < N; n++) sdy += part[2 * (n * C + c)], dot += part[2 * (n * C + c) + 1];
        if (dw) dw[c] += (float)(dot * invstd);
        if (db) db[c] += (float)sdy;
        coef[2 * c] = training ? (float)(dot * invstd * invstd / (double)cnt) : 0.0f; /* k */
        coef[2 * c + 1] = training ? (float)(sdy / (double)cnt) : 0.0f;               /* mean of dy */
    }
    if (dx) {
        const float *mean = st + ST_MEAN * C, *alpha = st + ST_ALPHA * C;
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t pl = 0; pl < planes; pl++) {
            const int64_t c = pl % C;
            const float a = alpha[c], m = mean[c], k = coef[2 * c], gm = coef[2 * c + 1];
            const float *restrict g = dy + pl * HW;
            float *restrict d = dx + pl * HW;
            if (training) {
                const float *restrict xp = x + pl * HW;
                for (int64_t i = 0; i < HW; i++) d[i] += (g[i] - gm - (xp[i] - m) * k) * a;
            } else {
                for (int64_t i = 0; i < HW; i++) d[i] += g[i] * a;
            }
        }
    }
    gg_free(part);
    return GG_OK;
}

/* ---- backward ---- */

static int batch_norm2d_backward(gg_node *node, const gg_tensor *gout) {
    const int64_t N = node->ip[IP_N], C = node->ip[IP_C], HW = node->ip[IP_HW], xslot = node->ip[IP_XSLOT];
    const bool training = node->ip[IP_TRAIN] != 0;
    gg_tensor *g[3];
    for (int i = 0; i < 3; i++) {
        g[i] = gg_node_grad(node, i);
        if (!g[i] && gg_node_needs_grad(node, i))
            return gg_last_status() ? gg_last_status() : gg_error_set(GG_ERR_NOMEM, FN, "cannot allocate gradients");
    }
    const float *x = xslot >= 0 ? gg_tensor_data(node->saved[xslot]) : NULL;
    if (!x && (g[1] || (g[0] && training)))
        return gg_error_set(GG_ERR_STATE, FN, "backward: the input was not saved");
    if (N * C * HW == 0) return GG_OK;
    return backward_kernel(N, C, HW, training, gg_tensor_data(node->saved[0]), x, gg_tensor_data(gout),
                           g[0] ? gg_tensor_data(g[0]) : NULL, g[1] ? gg_tensor_data(g[1]) : NULL,
                           g[2] ? gg_tensor_data(g[2]) : NULL);
}

static const gg_op_def BATCH_NORM2D_OP = {"batch_norm2d", batch_norm2d_backward};

/* ---- public function ---- */

gg_tensor *gg_batch_norm2d(gg_tensor *x, gg_tensor *weight, gg_tensor *bias, gg_tensor *running_mean,
                           gg_tensor *running_var, bool training, float momentum, float eps) {
    GG_CHECK_ARG(x, NULL);
    if (check_args(x, weight, bias, running_mean, running_var, training, momentum, eps)) return NULL;
    const int64_t N = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    gg_tensor *xc = gg_tensor_contiguous(x);
    gg_tensor *st = xc ? gg_tensor_empty(2, (const int64_t[]){ST_ROWS, C}) : NULL;
    gg_tensor *out = st ? gg_op_output(4, x->shape, FN) : NULL;
    if (!out) {
        gg_tensor_free(xc);
        gg_tensor_free(st);
        return NULL;
    }
    /* record first: a failure to record leaves the running statistics untouched */
    gg_tensor *in[3] = {x, weight, bias};
    bool failed;
    gg_node *node = gg_op_record(&BATCH_NORM2D_OP, out, 3, in, &failed);
    int rc = failed ? GG_ERR_NOMEM : GG_OK;
    if (node) {
        node->ip[IP_N] = N, node->ip[IP_C] = C, node->ip[IP_HW] = HW, node->ip[IP_TRAIN] = training;
        node->ip[IP_XSLOT] = -1;
        rc = gg_node_save(node, st);
        if (!rc && (gg_node_needs_grad(node, 1) || (training && gg_node_needs_grad(node, 0)))) {
            node->ip[IP_XSLOT] = node->n_saved;
            rc = gg_node_save(node, xc);
        }
    }
    if (!rc && x->numel > 0) {
        const bn_params p = {
            .w = weight ? gg_tensor_data(weight) : NULL,
            .b = bias ? gg_tensor_data(bias) : NULL,
            .rm = running_mean ? gg_tensor_data(running_mean) : NULL,
            .rv = running_var ? gg_tensor_data(running_var) : NULL,
            .ws = weight ? weight->stride[0] : 0,
            .bs = bias ? bias->stride[0] : 0,
            .rms = running_mean ? running_mean->stride[0] : 0,
            .rvs = running_var ? running_var->stride[0] : 0,
            .momentum = momentum,
            .eps = eps,
        };
        rc = forward_kernel(N, C, HW, training, &p, gg_tensor_data(xc), gg_tensor_data(out), gg_tensor_data(st));
        if (!rc && training && running_mean) {
            gg_tensor_bump_version(running_mean);
            gg_tensor_bump_version(running_var);
        }
    }
    gg_tensor_free(xc);
    gg_tensor_free(st);
    if (rc) return NULL;
    return gg_op_finish(out, FN, 3, in);
}
