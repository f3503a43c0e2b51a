/* gg_conv2d: 2-D convolution (NCHW float32, PyTorch semantics) as a differentiable op: argument checks,
 * a per-shape plan that picks a kernel, and the forward/backward dispatch. Kernels: ops/conv_ref.c.
 *
 *   y[n,k,ho,wo] = b[k] + sum_{c<C/G, r<R, t<S} w[k,c,r,t] * x[n, g*C/G + c, ho*sh - pt + r*dh, wo*sw - pl +
 * t*dw] dx[n, g*C/G + c, hi, wi] = sum over (k in group g, r, t, ho, wo) hitting (hi, wi) of dy[n,k,ho,wo] *
 * w[k,c,r,t] dw[k,c,r,t] = sum_{n,ho,wo} dy[n,k,ho,wo] * x[n, g*C/G + c, ho*sh - pt + r*dh, wo*sw - pl +
 * t*dw] db[k] = sum_{n,ho,wo} dy[n,k,ho,wo] x [N,C,H,W], w [K,C/G,R,S], b [K], y [N,K,Ho,Wo]; g = k / (K/G).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "gg_alloc.h"
#include "gg_conv.h"
#include "gg_conv_kernels.h"
#include "gg_internal.h"
#include "gg_node.h"
#include "gg_runtime.h"

#define FN "gg_conv2d"

gg_conv2d_params gg_conv2d_default(void) {
    return (gg_conv2d_params){
        .stride = {1, 1}, .pad = {0, 0, 0, 0}, .dilation = {1, 1}, .groups = 1, .pad_same = false};
}

void gg_conv2d_set_pad(gg_conv2d_params *p, int pad_h, int pad_w) {
    if (!p) return;
    p->pad[0] = p->pad[1] = pad_h;
    p->pad[2] = p->pad[3] = pad_w;
    p->pad_same = false;
}

gg_conv2d_params gg_conv2d_make(int stride, int pad, int dilation, int groups) {
    gg_conv2d_params p = gg_conv2d_default();
    p.stride[0] = p.stride[1] = stride;
    gg_conv2d_set_pad(&p, pad, pad);
    p.dilation[0] = p.dilation[1] = dilation;
    p.groups = groups;
    return p;
}

/* ---- plan: which kernel for each pass, per geometry and thread count ----
 *
 * Like cuDNN's benchmark mode: the first time a geometry is seen with a given thread count, each pass is
 * timed on the real buffers with every kernel that applies (the GEMM, the direct kernel, the libxsmm
 * batch-reduce kernel, the channel-lane and masked-plane kernels; after an untimed warm-up run each, which
 * absorbs libxsmm's JIT and first-touch page faults, and drops kernels 4x behind), twice for the ones
 * within 1.3x of the best first timing, and the fastest (minimum time) becomes that pass's kernel for good,
 * except that the static rule's kernel stays unless it is more than 15% slower than the fastest. The forward
 * is chosen on the first forward, each gradient pass on the first backward that needs it. Every kernel
 * computes the same sums (within float rounding), and once chosen the kernel of a (geometry, thread count)
 * never changes in the process, so repeated runs give identical results. Plans are global (shared by all
 * threads) and never evicted below PLAN_SLOTS geometries; past that the oldest plan is replaced. Convolutions
 * below TUNE_MIN_MACS multiply-adds are not timed (the timing would cost more than it can win, and single
 * runs are noise): they follow static rules measured on this machine (static_algo).
 * Timing is off by default (gg_conv_set_benchmark, as torch.backends.cudnn.benchmark): then every pass
 * follows the static rules, whose choice depends on the geometry and thread count only, so a program gives
 * the same bits in every process (a resumed training run continues exactly). */

typedef struct conv_plan {
    gg_conv2d_shape key;
    int threads;
    gg_conv_algo algo[3]; /* forward, data gradient, weight gradient; AUTO until chosen */
    int64_t nb;           /* samples per GEMM chunk */
} conv_plan;

enum { PASS_FWD, PASS_DATA, PASS_WEIGHT };

#define PLAN_SLOTS 256
#define TUNE_MIN_MACS 4e6
static conv_plan plans[PLAN_SLOTS];
static int n_plans;
static unsigned plan_next;
static pthread_mutex_t plan_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int forced_algo = GG_CONV_ALGO_AUTO;
static atomic_bool tuning = false;

gg_conv_algo gg__conv2d_force_algo(gg_conv_algo algo) {
    if ((int)algo < 0 || algo >= GG_CONV_ALGO_COUNT) algo = GG_CONV_ALGO_AUTO;
    return (gg_conv_algo)atomic_exchange(&forced_algo, (int)algo);
}

bool gg_conv_set_benchmark(bool on) {
    /* forget every plan, so that no timed choice outlives benchmark mode (and none is missing in it) */
    pthread_mutex_lock(&plan_lock);
    bool was = atomic_exchange(&tuning, on);
    n_plans = 0;
    plan_next = 0;
    pthread_mutex_unlock(&plan_lock);
    return was;
}

bool gg_conv_get_benchmark(void) { return atomic_load(&tuning); }

/* Samples per GEMM: as many as keep the im2col columns of one group within 8 MiB (they stay in L3 and
 * each group's GEMM gets N*Ho*Wo-sized panels, where BLIS is efficient), spread evenly over the chunks. */
int64_t gg__conv2d_gemm_batch(const gg_conv2d_shape *s) {
    const int64_t CRS = s->C / s->G * s->R * s->S, P = s->Ho * s->Wo;
    const double max_col_bytes = 8.0 * 1024 * 1024;
    int64_t nb = (int64_t)(max_col_bytes / (4.0 * (double)(CRS * P > 0 ? CRS * P : 1)));
    if (nb > s->N) nb = s->N;
    if (nb < 1) nb = 1;
    int64_t chunks = (s->N + nb - 1) / nb;
    if (chunks < 1) chunks = 1;
    nb = (s->N + chunks - 1) / chunks;
    return nb < 1 ? 1 : nb;
}

static bool algo_applies(const gg_conv2d_shape *s, int pass, gg_conv_algo a) {
    switch (a) {
    case GG_CONV_ALGO_REF:
    case GG_CONV_ALGO_GEMM:
        return true;
    case GG_CONV_ALGO_DIRECT:
        return gg__conv2d_direct_supports(s);
    case GG_CONV_ALGO_XSMM:
        return gg__conv2d_xsmm_supports(s, pass == PASS_DATA);
    case GG_CONV_ALGO_LANES:
        return gg__conv2d_lanes_supports(s, pass == PASS_DATA);
    case GG_CONV_ALGO_MASKED:
        return gg__conv2d_masked_supports(s);
    default:
        return false;
    }
}

static double conv_macs(const gg_conv2d_shape *s) {
    return (double)s->N * (double)s->K * (double)(s->C / s->G * s->R * s->S) * (double)(s->Ho * s->Wo);
}

/* Rules without libxsmm, from interleaved timings of the direct and GEMM kernels (ResNet-style layers
 * 7x7 .. 56x56, dense, groups 4 and 8, depthwise, 1x1, stride 2; one thread):
 *  - forward and data gradient: the direct kernel wins for 3x3-like kernels at every group size (by
 *    1.2-1.6x dense and 10-30x depthwise, where the GEMMs degenerate), as long as one group's input planes
 *    stay in L2; im2col + GEMM wins for 1x1 convolutions with many channels (no im2col needed there).
 *  - weight gradient: the direct kernel's dot products lose to the GEMM once the per-group GEMM is big
 *    (K/G >= 24 rows, C/G*R*S >= 64 columns), and win below.
 *  - tiny convolutions (< 32k MACs) skip the workspaces and BLIS calls: the reference loops.
 * With libxsmm, its batch-reduce kernel beats both wherever it applies (C/G and K/G multiples of 16); the
 * channel-lane kernel beats both for small groups (C/G == K/G <= 8, C a multiple of 16), and the
 * masked-plane kernel's forward and data gradient beat them for other small groups on 'same' stride-1
 * convolutions. */
static gg_conv_algo fallback_algo(const gg_conv2d_shape *s, int pass) {
    const int64_t Cg = s->C / s->G, Kg = s->K / s->G, RS = s->R * s->S;
    /* zero-bordered input planes of one group, which the direct kernel keeps hot */
    const double group_bytes =
        4.0 * (double)Cg * (double)(s->Ho + (s->R - 1) * s->dil_h) * (double)(s->Wo + (s->S - 1) * s->dil_w);
    const bool direct = gg__conv2d_direct_supports(s) &&
                        ((group_bytes <= 1024.0 * 1024.0 && !(RS == 1 && Cg >= 16)) || Cg == 1);
    const gg_conv_algo other = conv_macs(s) < 32768 ? GG_CONV_ALGO_REF : GG_CONV_ALGO_GEMM;
    if (pass == PASS_WEIGHT) return direct && !(Kg >= 24 && Cg * RS >= 64) ? GG_CONV_ALGO_DIRECT : other;
    return direct ? GG_CONV_ALGO_DIRECT : other;
}

static gg_conv_algo static_algo(const gg_conv2d_shape *s, int pass) {
    if (conv_macs(s) >= 32768 && algo_applies(s, pass, GG_CONV_ALGO_XSMM)) return GG_CONV_ALGO_XSMM;
    if (conv_macs(s) >= 32768 && algo_applies(s, pass, GG_CONV_ALGO_LANES)) return GG_CONV_ALGO_LANES;
    if (conv_macs(s) >= 32768 && pass != PASS_WEIGHT && algo_applies(s, pass, GG_CONV_ALGO_MASKED))
        return GG_CONV_ALGO_MASKED;
    return fallback_algo(s, pass);
}

/* The plan of s for this thread count (a copy), creating it if needed; its passes may still be AUTO. */
static conv_plan get_plan(const gg_conv2d_shape *s) {
    const int threads = gg_get_num_threads();
    conv_plan p = {.key = *s, .threads = threads, .nb = 0};
    pthread_mutex_lock(&plan_lock);
    for (int i = 0; i < n_plans; i++)
        if (plans[i].threads == threads && memcmp(&plans[i].key, s, sizeof *s) == 0) {
            p = plans[i];
            break;
        }
    pthread_mutex_unlock(&plan_lock);
    if (!p.nb) p.nb = gg__conv2d_gemm_batch(s); /* AUTO == 0 in algo[] */
    return p;
}

/* Record the choice for one pass (keeping a choice another thread made meanwhile); returns it. */
static gg_conv_algo set_plan(const conv_plan *p, int pass, gg_conv_algo a) {
    pthread_mutex_lock(&plan_lock);
    int at = -1;
    for (int i = 0; i < n_plans && at < 0; i++)
        if (plans[i].threads == p->threads && memcmp(&plans[i].key, &p->key, sizeof p->key) == 0) at = i;
    if (at < 0) {
        at = n_plans < PLAN_SLOTS ? n_plans++ : (int)(plan_next++ % PLAN_SLOTS);
        plans[at] = *p;
        plans[at].algo[0] = plans[at].algo[1] = plans[at].algo[2] = GG_CONV_ALGO_AUTO;
    }
    if (plans[at].algo[pass] == GG_CONV_ALGO_AUTO) plans[at].algo[pass] = a;
    a = plans[at].algo[pass];
    pthread_mutex_unlock(&plan_lock);
    return a;
}

gg_conv_algo gg__conv2d_planned_algo(const gg_conv2d_shape *s, int pass) {
    if (pass < 0 || pass > 2) return GG_CONV_ALGO_AUTO;
    return get_plan(s).algo[pass];
}

/* The forced algorithm for a pass if one is set and applies, else AUTO. */
static gg_conv_algo forced(const gg_conv2d_shape *s, int pass) {
    gg_conv_algo f = (gg_conv_algo)atomic_load(&forced_algo);
    return f != GG_CONV_ALGO_AUTO && algo_applies(s, pass, f) ? f : GG_CONV_ALGO_AUTO;
}

/* ---- running one pass with one kernel ---- */

typedef struct pass_args {
    const gg_conv2d_shape *s;
    int64_t nb;
    const float *x, *w, *b, *dy;
} pass_args;

#define NOT_AVAILABLE 1 /* libxsmm has no kernel for this shape */

/* out: y (forward, overwritten), dx or dw (gradients, added into). GG_OK, NOT_AVAILABLE or an error. */
static int run_pass(const pass_args *a, int pass, gg_conv_algo algo, float *out) {
    const gg_conv2d_shape *s = a->s;
    if (algo == GG_CONV_ALGO_REF) {
        if (pass == PASS_FWD) gg__conv2d_fwd_ref(s, a->x, a->w, a->b, out);
        else if (pass == PASS_DATA) gg__conv2d_bwd_data_ref(s, a->dy, a->w, out);
        else gg__conv2d_bwd_weight_ref(s, a->x, a->dy, out);
        return GG_OK;
    }
    const size_t bytes = algo == GG_CONV_ALGO_GEMM     ? gg__conv2d_gemm_workspace(s, a->nb)
                         : algo == GG_CONV_ALGO_DIRECT ? gg__conv2d_direct_workspace(s)
                         : algo == GG_CONV_ALGO_LANES  ? gg__conv2d_lanes_workspace(s)
                         : algo == GG_CONV_ALGO_MASKED ? gg__conv2d_masked_workspace(s)
                                                       : gg__conv2d_xsmm_workspace(s);
    void *ws = gg_alloc(bytes);
    if (!ws)
        return gg_error_set(GG_ERR_NOMEM, FN, "cannot allocate the convolution workspace (%zu bytes)", bytes);
    bool ok = true;
    if (algo == GG_CONV_ALGO_GEMM) {
        if (pass == PASS_FWD) gg__conv2d_fwd_gemm(s, a->nb, a->x, a->w, a->b, out, ws);
        else
            gg__conv2d_bwd_gemm(s, a->nb, a->x, a->w, a->dy, pass == PASS_DATA ? out : NULL,
                                pass == PASS_WEIGHT ? out : NULL, ws);
    } else if (algo == GG_CONV_ALGO_DIRECT) {
        if (pass == PASS_FWD) gg__conv2d_fwd_direct(s, a->x, a->w, a->b, out, ws);
        else if (pass == PASS_DATA) gg__conv2d_bwd_data_direct(s, a->dy, a->w, out, ws);
        else gg__conv2d_bwd_weight_direct(s, a->x, a->dy, out, ws);
    } else if (algo == GG_CONV_ALGO_MASKED) {
        if (pass == PASS_FWD) ok = gg__conv2d_fwd_masked(s, a->x, a->w, a->b, out, ws);
        else if (pass == PASS_DATA) ok = gg__conv2d_bwd_data_masked(s, a->dy, a->w, out, ws);
        else ok = gg__conv2d_bwd_weight_masked(s, a->x, a->dy, out, ws);
    } else if (algo == GG_CONV_ALGO_LANES) {
        if (pass == PASS_FWD) ok = gg__conv2d_fwd_lanes(s, a->x, a->w, a->b, out, ws);
        else if (pass == PASS_DATA) ok = gg__conv2d_bwd_data_lanes(s, a->dy, a->w, out, ws);
        else ok = gg__conv2d_bwd_weight_lanes(s, a->x, a->dy, out, ws);
    } else {
        if (pass == PASS_FWD) ok = gg__conv2d_fwd_xsmm(s, a->x, a->w, a->b, out, ws);
        else if (pass == PASS_DATA) ok = gg__conv2d_bwd_data_xsmm(s, a->dy, a->w, out, ws);
        else ok = gg__conv2d_bwd_weight_xsmm(s, a->x, a->dy, out, ws);
    }
    gg_free(ws);
    return ok ? GG_OK : NOT_AVAILABLE;
}

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Time every applicable kernel for one pass, writing into out (a scratch buffer, or y for the forward).
 * Returns the fastest, or AUTO with an error status in *st. */
static gg_conv_algo tune_pass(const pass_args *a, int pass, float *out, int *st) {
    static const gg_conv_algo cand[] = {GG_CONV_ALGO_XSMM, GG_CONV_ALGO_LANES, GG_CONV_ALGO_MASKED,
                                        GG_CONV_ALGO_DIRECT, GG_CONV_ALGO_GEMM};
    enum { NC = sizeof cand / sizeof *cand };
    double best[NC], warm[NC];
    bool usable[NC];
    /* round 0 warms up (libxsmm's JIT, first touch of each workspace); round 1 times the kernels whose
     * warm-up took at most 4x the fastest warm-up (that one includes the JIT and page faults, so this only
     * drops kernels far behind), round 2 again those within 1.3x of the best */
    double best_all = 1e300, best_warm = 1e300;
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < NC; i++) {
            if (round == 0) best[i] = -1.0, usable[i] = algo_applies(a->s, pass, cand[i]);
            if (!usable[i] || (round == 1 && warm[i] > 4.0 * best_warm) ||
                (round == 2 && !(best[i] <= 1.3 * best_all)))
                continue;
            const double t0 = now_seconds();
            const int r = run_pass(a, pass, cand[i], out);
            const double t = now_seconds() - t0;
            if (r < 0) {
                *st = r;
                return GG_CONV_ALGO_AUTO;
            }
            if (r == NOT_AVAILABLE) usable[i] = false;
            if (!usable[i]) continue;
            if (round == 0) {
                warm[i] = t;
                if (t < best_warm) best_warm = t;
                continue;
            }
            if (best[i] < 0 || t < best[i]) best[i] = t;
            if (t < best_all) best_all = t;
        }
    int pick = -1;
    for (int i = 0; i < NC; i++)
        if (best[i] >= 0 && (pick < 0 || best[i] < best[pick])) pick = i;
    if (pick < 0) return fallback_algo(a->s, pass);
    /* the static choice stays unless another kernel beats it clearly: single timings on a shared machine
     * are noisy, and the static rules were measured with many repeats */
    const gg_conv_algo stat = static_algo(a->s, pass);
    for (int i = 0; i < NC; i++)
        if (cand[i] == stat && best[i] >= 0 && best[i] <= 1.15 * best[pick]) return stat;
    return cand[pick];
}

/* The kernel for one pass: forced, planned, or chosen now (timing into `scratch`, which may be
 * overwritten; NULL: allocate one of `scratch_floats`). */
static gg_conv_algo pick_algo(const conv_plan *p, const pass_args *a, int pass, float *scratch,
                              int64_t scratch_floats, int *st) {
    gg_conv_algo f = forced(a->s, pass);
    if (f != GG_CONV_ALGO_AUTO) return f;
    if (p->algo[pass] != GG_CONV_ALGO_AUTO) return p->algo[pass];
    if (!atomic_load(&tuning) || conv_macs(a->s) < TUNE_MIN_MACS)
        return set_plan(p, pass, static_algo(a->s, pass));
    float *buf = scratch ? scratch : gg_alloc_zeroed((size_t)scratch_floats * sizeof(float));
    if (!buf) {
        *st = gg_error_set(GG_ERR_NOMEM, FN, "cannot allocate the kernel-timing buffer");
        return GG_CONV_ALGO_AUTO;
    }
    gg_conv_algo c = tune_pass(a, pass, buf, st);
    if (!scratch) gg_free(buf);
    return c == GG_CONV_ALGO_AUTO ? c : set_plan(p, pass, c);
}

/* Run a pass with its kernel; libxsmm without a kernel falls back to the rules without it. */
static int run_with(const pass_args *a, int pass, gg_conv_algo algo, float *out) {
    int r = run_pass(a, pass, algo, out);
    if (r == NOT_AVAILABLE) r = run_pass(a, pass, fallback_algo(a->s, pass), out);
    return r;
}

/* ---- argument checks ---- */

/* "x [..], w [..]" plus ", bias [..]" */
static const char *shapes_str(char *buf, size_t size, const gg_tensor *x, const gg_tensor *w,
                              const gg_tensor *b) {
    char a[GG_SHAPE_STR_MAX], c[GG_SHAPE_STR_MAX], d[GG_SHAPE_STR_MAX];
    if (b)
        snprintf(buf, size, "x %s, w %s, bias %s", GG_SHAPE_STR(x, a), GG_SHAPE_STR(w, c),
                 GG_SHAPE_STR(b, d));
    else snprintf(buf, size, "x %s, w %s", GG_SHAPE_STR(x, a), GG_SHAPE_STR(w, c));
    return buf;
}

/* Validate everything and fill the geometry; nothing is allocated. */
static int check_args(const gg_tensor *x, const gg_tensor *w, const gg_tensor *b, const gg_conv2d_params *p,
                      gg_conv2d_shape *s) {
    char sh[3 * GG_SHAPE_STR_MAX + 32];
    shapes_str(sh, sizeof sh, x, w, b);
    if (x->ndim != 4) return gg_error_set(GG_ERR_SHAPE, FN, "input must be 4-D [N,C,H,W] (%s)", sh);
    if (w->ndim != 4) return gg_error_set(GG_ERR_SHAPE, FN, "weight must be 4-D [K,C/G,R,S] (%s)", sh);
    if (p->groups < 1) return gg_error_set(GG_ERR_ARG, FN, "groups must be >= 1, got %d (%s)", p->groups, sh);
    if (p->stride[0] < 1 || p->stride[1] < 1)
        return gg_error_set(GG_ERR_ARG, FN, "stride must be positive, got (%d, %d) (%s)", p->stride[0],
                            p->stride[1], sh);
    if (p->dilation[0] < 1 || p->dilation[1] < 1)
        return gg_error_set(GG_ERR_ARG, FN, "dilation must be positive, got (%d, %d) (%s)", p->dilation[0],
                            p->dilation[1], sh);
    if (p->pad_same && (p->stride[0] != 1 || p->stride[1] != 1))
        return gg_error_set(GG_ERR_ARG, FN, "padding 'same' needs stride 1, got (%d, %d) (%s)", p->stride[0],
                            p->stride[1], sh);
    if (!p->pad_same && (p->pad[0] < 0 || p->pad[1] < 0 || p->pad[2] < 0 || p->pad[3] < 0))
        return gg_error_set(GG_ERR_ARG, FN,
                            "padding must be non-negative, got (top %d, bottom %d, left %d, right %d) (%s)",
                            p->pad[0], p->pad[1], p->pad[2], p->pad[3], sh);
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int64_t K = w->shape[0], Cg = w->shape[1], R = w->shape[2], S = w->shape[3], G = p->groups;
    if (R < 1 || S < 1 || Cg < 1)
        return gg_error_set(GG_ERR_SHAPE, FN, "weight must have non-empty channel and kernel dimensions (%s)",
                            sh);
    if (C != Cg * G) {
        if (G == 1)
            return gg_error_set(GG_ERR_SHAPE, FN, "input has %lld channels, weight expects %lld (%s)",
                                (long long)C, (long long)Cg, sh);
        return gg_error_set(
            GG_ERR_SHAPE, FN,
            "input has %lld channels, weight expects %lld (%lld per group x %lld groups) (%s)", (long long)C,
            (long long)(Cg * G), (long long)Cg, (long long)G, sh);
    }
    if (K % G)
        return gg_error_set(GG_ERR_SHAPE, FN,
                            "weight has %lld output channels, not divisible by %lld groups (%s)",
                            (long long)K, (long long)G, sh);
    if (b && (b->ndim != 1 || b->shape[0] != K))
        return gg_error_set(GG_ERR_SHAPE, FN, "bias must be [%lld], one value per output channel (%s)",
                            (long long)K, sh);
    int64_t pt = p->pad[0], pb = p->pad[1], pl = p->pad[2], pr = p->pad[3];
    if (p->pad_same) { /* PyTorch: total dilation*(kernel-1), the odd one at the bottom/right */
        int64_t th = (int64_t)p->dilation[0] * (R - 1), tw = (int64_t)p->dilation[1] * (S - 1);
        pt = th / 2, pb = th - pt, pl = tw / 2, pr = tw - pl;
    }
    const int64_t eff_h = (int64_t)p->dilation[0] * (R - 1) + 1,
                  eff_w = (int64_t)p->dilation[1] * (S - 1) + 1;
    const int64_t span_h = H + pt + pb - eff_h, span_w = W + pl + pr - eff_w;
    if (span_h < 0 || span_w < 0)
        return gg_error_set(
            GG_ERR_SHAPE, FN,
            "output would be empty: padded input %lldx%lld is smaller than the dilated kernel "
            "%lldx%lld (%s, padding (%lld, %lld, %lld, %lld), dilation (%d, %d))",
            (long long)(H + pt + pb), (long long)(W + pl + pr), (long long)eff_h, (long long)eff_w, sh,
            (long long)pt, (long long)pb, (long long)pl, (long long)pr, p->dilation[0], p->dilation[1]);
    *s = (gg_conv2d_shape){.N = N,
                           .C = C,
                           .H = H,
                           .W = W,
                           .K = K,
                           .R = R,
                           .S = S,
                           .G = G,
                           .Ho = span_h / p->stride[0] + 1,
                           .Wo = span_w / p->stride[1] + 1,
                           .str_h = p->stride[0],
                           .str_w = p->stride[1],
                           .pad_t = pt,
                           .pad_l = pl,
                           .dil_h = p->dilation[0],
                           .dil_w = p->dilation[1]};
    return GG_OK;
}

/* ---- forward and backward dispatch ---- */

int gg__conv2d_forward(const gg_conv2d_shape *s, const float *x, const float *w, const float *b, float *y) {
    if (s->N == 0 || s->K == 0) return GG_OK;
    const conv_plan p = get_plan(s);
    const pass_args a = {.s = s, .nb = p.nb, .x = x, .w = w, .b = b};
    int st = GG_OK;
    /* timing writes y itself; the chosen kernel then runs last */
    const gg_conv_algo algo = pick_algo(&p, &a, PASS_FWD, y, 0, &st);
    return st ? st : run_with(&a, PASS_FWD, algo, y);
}

int gg__conv2d_backward(const gg_conv2d_shape *s, const float *x, const float *w, const float *dy, float *dx,
                        float *dw) {
    if (s->N == 0 || s->K == 0 || s->C == 0 || (!dx && !dw)) return GG_OK;
    /* only dw wanted: the GEMM kernel still offsets w per group (never reads it); dw has w's shape */
    if (!w) w = dw;
    const conv_plan p = get_plan(s);
    const pass_args a = {.s = s, .nb = p.nb, .x = x, .w = w, .dy = dy};
    int st = GG_OK;
    const gg_conv_algo ad =
        dx ? pick_algo(&p, &a, PASS_DATA, NULL, s->N * s->C * s->H * s->W, &st) : GG_CONV_ALGO_AUTO;
    const gg_conv_algo aw =
        dw && !st ? pick_algo(&p, &a, PASS_WEIGHT, NULL, s->K * (s->C / s->G) * s->R * s->S, &st)
                  : GG_CONV_ALGO_AUTO;
    if (st) return st;
    if (ad == GG_CONV_ALGO_GEMM && aw == GG_CONV_ALGO_GEMM) { /* one pass for both: im2col once */
        void *ws = gg_alloc(gg__conv2d_gemm_workspace(s, p.nb));
        if (!ws) return gg_error_set(GG_ERR_NOMEM, FN, "cannot allocate the convolution workspace");
        gg__conv2d_bwd_gemm(s, p.nb, x, w, dy, dx, dw, ws);
        gg_free(ws);
        return GG_OK;
    }
    if (dx) st = run_with(&a, PASS_DATA, ad, dx);
    if (dw && !st) st = run_with(&a, PASS_WEIGHT, aw, dw);
    return st;
}

/* ip[] holds the geometry, then the saved-slot index of x and of w (-1: not saved). */
#define IP_XSLOT (int)(sizeof(gg_conv2d_shape) / sizeof(int64_t))
#define IP_WSLOT (IP_XSLOT + 1)
_Static_assert(sizeof(gg_conv2d_shape) / sizeof(int64_t) + 2 <= GG_NODE_IPARAMS,
               "conv geometry fits in ip[]");

static int conv2d_backward(gg_node *node, const gg_tensor *gout) {
    gg_conv2d_shape s;
    memcpy(&s, node->ip, sizeof s);
    gg_tensor *gx = gg_node_grad(node, 0), *gw = gg_node_grad(node, 1);
    gg_tensor *gb = node->n_in > 2 ? gg_node_grad(node, 2) : NULL;
    if ((!gx && gg_node_needs_grad(node, 0)) || (!gw && gg_node_needs_grad(node, 1)) ||
        (!gb && node->n_in > 2 && gg_node_needs_grad(node, 2)))
        return gg_last_status() ? gg_last_status()
                                : gg_error_set(GG_ERR_NOMEM, FN, "cannot allocate gradients");
    if (s.N == 0 || s.K == 0 || s.C == 0) return GG_OK;
    const float *dy = gg_tensor_data(gout);
    const float *x = node->ip[IP_XSLOT] >= 0 ? gg_tensor_data(node->saved[node->ip[IP_XSLOT]]) : NULL;
    const float *w = node->ip[IP_WSLOT] >= 0 ? gg_tensor_data(node->saved[node->ip[IP_WSLOT]]) : NULL;
    float *dx = gx ? gg_tensor_data(gx) : NULL, *dw = gw ? gg_tensor_data(gw) : NULL;
    if ((dx && !w) || (dw && !x))
        return gg_error_set(GG_ERR_STATE, FN, "backward: a needed input was not saved");
    if (gb) gg__conv2d_bwd_bias(&s, dy, gg_tensor_data(gb));
    return gg__conv2d_backward(&s, x, w, dy, dx, dw);
}

static const gg_op_def CONV2D_OP = {"conv2d", conv2d_backward};

gg_tensor *gg_conv2d(gg_tensor *x, gg_tensor *w, gg_tensor *bias, const gg_conv2d_params *params) {
    GG_CHECK_ARG(x, NULL);
    GG_CHECK_ARG(w, NULL);
    gg_conv2d_params def = gg_conv2d_default();
    const gg_conv2d_params *p = params ? params : &def;
    gg_conv2d_shape s;
    if (check_args(x, w, bias, p, &s)) return NULL;

    gg_tensor *xc = gg_tensor_contiguous(x), *wc = gg_tensor_contiguous(w);
    gg_tensor *bc = bias ? gg_tensor_contiguous(bias) : NULL;
    gg_tensor *out =
        (xc && wc && (bc || !bias)) ? gg_op_output(4, (const int64_t[]){s.N, s.K, s.Ho, s.Wo}, FN) : NULL;
    int st = out ? gg__conv2d_forward(&s, gg_tensor_data(xc), gg_tensor_data(wc),
                                      bc ? gg_tensor_data(bc) : NULL, gg_tensor_data(out))
                 : GG_ERR_NOMEM;
    gg_tensor_free(bc);
    gg_tensor *in[3] = {x, w, bias};
    gg_node *node = NULL;
    if (!st) {
        bool failed;
        node = gg_op_record(&CONV2D_OP, out, bias ? 3 : 2, in, &failed);
        if (failed) st = GG_ERR_NOMEM;
    }
    if (node) {
        memcpy(node->ip, &s, sizeof s);
        node->ip[IP_XSLOT] = node->ip[IP_WSLOT] = -1;
        if (gg_node_needs_grad(node, 1)) { /* dw needs x */
            node->ip[IP_XSLOT] = node->n_saved;
            st = gg_node_save(node, xc);
        }
        if (!st && gg_node_needs_grad(node, 0)) { /* dx needs w */
            node->ip[IP_WSLOT] = node->n_saved;
            st = gg_node_save(node, wc);
        }
    }
    gg_tensor_free(xc);
    gg_tensor_free(wc);
    if (st) return NULL;
    return gg_op_finish(out, FN, bias ? 3 : 2, in);
}
