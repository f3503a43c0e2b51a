/* groupgrad optimizers (SGD, Adam, AdamW as torch.optim 1.13), learning-rate schedules and gradient
 * clipping by global norm. The update kernels are plain loops over contiguous floats, one per optimizer,
 * with the coefficients rounded to float once per step and the float operations in PyTorch's order. */
#include "gg_optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gg_autograd.h"
#include "gg_error.h"
#include "gg_internal.h"
#include "gg_runtime.h"

/* Elementwise loops run on several threads above this many elements. */
#define OPTIM_PAR_MIN 32768
#define OPTIM_PI 3.14159265358979323846

enum { BUF_0, BUF_1, BUF_2, N_BUFS }; /* SGD: momentum_buffer; Adam: exp_avg, exp_avg_sq, max_exp_avg_sq */

static const char *const BUF_NAMES[GG_OPTIM_KIND_COUNT][N_BUFS] = {
    [GG_OPTIM_SGD] = {"momentum_buffer", NULL, NULL},
    [GG_OPTIM_ADAM] = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
    [GG_OPTIM_ADAMW] = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
};

typedef struct optim_group {
    gg_optim_hparams hp; /* hp.lr is the current lr */
    double base_lr;
} optim_group;

/* One parameter; allocated on its own so that &step stays valid while the array of pointers grows. */
typedef struct optim_param {
    gg_tensor *p; /* a reference taken by the optimizer */
    char *name;
    int group;
    int64_t step;
    gg_tensor *buf[N_BUFS]; /* contiguous, shaped like p; NULL when the group does not use it */
} optim_param;

struct gg_optim {
    gg_optim_kind kind;
    optim_group *groups;
    int n_groups;
    optim_param **params;
    int n_params;
    gg_optim_state_entry *state; /* names owned here, tensors/counters point into params */
    int n_state;
};

/* ---------------------------------------------------------------------------------------------------
 * hyperparameters */

gg_optim_hparams gg_sgd_hparams(double lr) { return (gg_optim_hparams){.lr = lr}; }

gg_optim_hparams gg_adam_hparams(double lr) {
    return (gg_optim_hparams){.lr = lr, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
}

gg_optim_hparams gg_adamw_hparams(double lr) {
    return (gg_optim_hparams){.lr = lr, .weight_decay = 1e-2, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
}

static const char *kind_name(gg_optim_kind k) {
    return k == GG_OPTIM_SGD ? "SGD" : k == GG_OPTIM_ADAM ? "Adam" : "AdamW";
}

/* torch.optim's constructor checks (NaN fails every comparison, so it is rejected too). */
static int check_hparams(gg_optim_kind kind, const gg_optim_hparams *hp, const char *func) {
    if (!(hp->lr >= 0.0 && isfinite(hp->lr)))
        return gg_error_set(GG_ERR_ARG, func, "invalid learning rate %g (must be finite and >= 0)", hp->lr);
    if (!(hp->weight_decay >= 0.0 && isfinite(hp->weight_decay)))
        return gg_error_set(GG_ERR_ARG, func, "invalid weight_decay %g (must be finite and >= 0)",
                            hp->weight_decay);
    if (kind == GG_OPTIM_SGD) {
        if (!(hp->momentum >= 0.0 && isfinite(hp->momentum)))
            return gg_error_set(GG_ERR_ARG, func, "invalid momentum %g (must be finite and >= 0)",
                                hp->momentum);
        if (!isfinite(hp->dampening))
            return gg_error_set(GG_ERR_ARG, func, "invalid dampening %g", hp->dampening);
        if (hp->nesterov && (hp->momentum <= 0.0 || hp->dampening != 0.0))
            return gg_error_set(GG_ERR_ARG, func,
                                "Nesterov momentum requires momentum > 0 and dampening 0 (momentum %g, "
                                "dampening %g)",
                                hp->momentum, hp->dampening);
    } else {
        if (!(hp->beta1 >= 0.0 && hp->beta1 < 1.0) || !(hp->beta2 >= 0.0 && hp->beta2 < 1.0))
            return gg_error_set(GG_ERR_ARG, func, "invalid betas (%g, %g) (each must be in [0, 1))",
                                hp->beta1, hp->beta2);
        if (!(hp->eps >= 0.0 && isfinite(hp->eps)))
            return gg_error_set(GG_ERR_ARG, func, "invalid eps %g (must be finite and >= 0)", hp->eps);
    }
    return GG_OK;
}

/* Which state buffers a group of this optimizer uses. */
static bool uses_buf(gg_optim_kind kind, const gg_optim_hparams *hp, int b) {
    if (kind == GG_OPTIM_SGD) return b == BUF_0 && hp->momentum != 0.0;
    return b != BUF_2 || hp->amsgrad;
}

/* ---------------------------------------------------------------------------------------------------
 * construction */

gg_optim *gg_optim_new(gg_optim_kind kind) {
    if ((int)kind < 0 || kind >= GG_OPTIM_KIND_COUNT) {
        GG_FAIL(GG_ERR_ARG, "unknown optimizer kind %d", (int)kind);
        return NULL;
    }
    gg_optim *opt = calloc(1, sizeof *opt);
    if (!opt) {
        GG_FAIL(GG_ERR_NOMEM, "cannot allocate the optimizer");
        return NULL;
    }
    opt->kind = kind;
    return opt;
}

static void param_free(optim_param *q) {
    if (!q) return;
    for (int b = 0; b < N_BUFS; b++) gg_tensor_free(q->buf[b]);
    gg_tensor_free(q->p);
    free(q->name);
    free(q);
}

void gg_optim_free(gg_optim *opt) {
    if (!opt) return;
    for (int i = 0; i < opt->n_params; i++) param_free(opt->params[i]);
    for (int i = 0; i < opt->n_state; i++) free((char *)opt->state[i].name);
    free(opt->params);
    free(opt->state);
    free(opt->groups);
    free(opt);
}

gg_optim_kind gg_optim_get_kind(const gg_optim *opt) { return opt ? opt->kind : GG_OPTIM_KIND_COUNT; }

static bool has_broadcast_dim(const gg_tensor *t) {
    for (int d = 0; d < t->ndim; d++)
        if (t->stride[d] == 0 && t->shape[d] > 1) return true;
    return false;
}

static char *str_dup(const char *s) {
    size_t n = strlen(s) + 1;
    char *c = malloc(n);
    if (c) memcpy(c, s, n);
    return c;
}

static char *str_cat3(const char *a, const char *b, const char *c) {
    size_t na = strlen(a), nb = strlen(b), nc = strlen(c);
    char *s = malloc(na + nb + nc + 1);
    if (!s) return NULL;
    memcpy(s, a, na);
    memcpy(s + na, b, nb);
    memcpy(s + na + nb, c, nc + 1);
    return s;
}

/* Name of parameter i of a new batch: the caller's, or "p<k>" written into buf. */
static const char *batch_name(const char *const *names, int i, int first_index, char *buf, size_t size) {
    if (names) return names[i];
    snprintf(buf, size, "p%d", first_index + i);
    return buf;
}

/* Every check of gg_optim_add_group, before anything is allocated. */
static int check_batch(const gg_optim *opt, gg_tensor *const *params, const char *const *names, int n,
                       const gg_optim_hparams *hp, const char *func) {
    char s1[GG_SHAPE_STR_MAX], b1[32], b2[32];
    if (!opt) return gg_error_set(GG_ERR_ARG, func, "opt is NULL");
    if (!params) return gg_error_set(GG_ERR_ARG, func, "params is NULL");
    if (!hp) return gg_error_set(GG_ERR_ARG, func, "hp is NULL");
    if (n <= 0)
        return gg_error_set(GG_ERR_ARG, func, "a parameter group needs at least one parameter (n = %d)", n);
    if (n > 1000000 || opt->n_params > 1000000 - n)
        return gg_error_set(GG_ERR_ARG, func, "too many parameters (%d + %d)", opt->n_params, n);
    int st = check_hparams(opt->kind, hp, func);
    if (st) return st;
    for (int i = 0; i < n; i++) {
        const gg_tensor *p = params[i];
        if (!p) return gg__null_arg(func, "params[i]");
        const char *name = batch_name(names, i, opt->n_params, b1, sizeof b1);
        if (!name || !name[0])
            return gg_error_set(GG_ERR_ARG, func, "parameter %d %s has no name", i, GG_SHAPE_STR(p, s1));
        if (p->grad_fn)
            return gg_error_set(GG_ERR_ARG, func, "parameter '%s' %s is not a leaf (it has a grad_fn)", name,
                                GG_SHAPE_STR(p, s1));
        if (has_broadcast_dim(p))
            return gg_error_set(GG_ERR_ARG, func,
                                "parameter '%s' %s has broadcast (stride-0) dimensions and cannot be updated "
                                "in place",
                                name, GG_SHAPE_STR(p, s1));
        for (int k = 0; k < opt->n_params + i; k++) {
            const gg_tensor *q = k < opt->n_params ? opt->params[k]->p : params[k - opt->n_params];
            const char *qname = k < opt->n_params
                                    ? opt->params[k]->name
                                    : batch_name(names, k - opt->n_params, opt->n_params, b2, sizeof b2);
            if (q == p || gg_tensor_may_overlap(q, p))
                return gg_error_set(
                    GG_ERR_ARG, func,
                    "parameter '%s' %s shares elements with parameter '%s' already given to the "
                    "optimizer",
                    name, GG_SHAPE_STR(p, s1), qname);
            if (strcmp(qname, name) == 0)
                return gg_error_set(GG_ERR_ARG, func, "two parameters are named '%s'", name);
        }
    }
    return GG_OK;
}

/* Allocate parameter i of a batch with its state; NULL (error recorded) on failure. */
static optim_param *param_new(const gg_optim *opt, gg_tensor *p, const char *name, int group,
                              const gg_optim_hparams *hp) {
    optim_param *q = calloc(1, sizeof *q);
    if (!q) goto nomem;
    q->group = group;
    if (!(q->name = str_dup(name))) goto nomem;
    for (int b = 0; b < N_BUFS; b++)
        if (uses_buf(opt->kind, hp, b) && !(q->buf[b] = gg_tensor_zeros(p->ndim, p->shape))) goto fail;
    q->p = gg_tensor_retain(p);
    return q;
nomem:
    GG_FAIL(GG_ERR_NOMEM, "cannot allocate the state of parameter '%s'", name);
fail:
    param_free(q);
    return NULL;
}

int gg_optim_add_group(gg_optim *opt, gg_tensor *const *params, const char *const *names, int n,
                       const gg_optim_hparams *hp) {
    int st = check_batch(opt, params, names, n, hp, __func__);
    if (st) return st;

    /* Everything is allocated on the side and committed at the end, so a failure changes nothing. */
    int n_state_new = 0;
    for (int b = 0; b < N_BUFS; b++) n_state_new += uses_buf(opt->kind, hp, b) ? n : 0;
    n_state_new += n; /* step counters */
    optim_group *groups = realloc(opt->groups, sizeof *groups * (size_t)(opt->n_groups + 1));
    if (groups) opt->groups = groups;
    optim_param **plist = realloc(opt->params, sizeof *plist * (size_t)(opt->n_params + n));
    if (plist) opt->params = plist;
    gg_optim_state_entry *slist = realloc(opt->state, sizeof *slist * (size_t)(opt->n_state + n_state_new));
    if (slist) opt->state = slist;
    if (!groups || !plist || !slist) return GG_FAIL(GG_ERR_NOMEM, "cannot grow the optimizer's tables");

    int g = opt->n_groups, ns = opt->n_state;
    char nbuf[32];
    for (int i = 0; i < n; i++) {
        const char *name = batch_name(names, i, opt->n_params, nbuf, sizeof nbuf);
        optim_param *q = param_new(opt, params[i], name, g, hp);
        bool ok = q != NULL;
        for (int b = 0; ok && b <= N_BUFS; b++) {
            if (b < N_BUFS && !q->buf[b]) continue;
            const char *suffix = b < N_BUFS ? BUF_NAMES[opt->kind][b] : "step";
            char *sname = str_cat3(name, ".", suffix);
            if (!sname) {
                ok = false;
                GG_FAIL(GG_ERR_NOMEM, "cannot allocate a state name");
                break;
            }
            opt->state[ns++] = (gg_optim_state_entry){.name = sname,
                                                      .tensor = b < N_BUFS ? q->buf[b] : NULL,
                                                      .counter = b < N_BUFS ? NULL : &q->step};
        }
        if (!ok) {
            param_free(q);
            for (int k = 0; k < i; k++) param_free(opt->params[opt->n_params + k]);
            for (int k = opt->n_state; k < ns; k++) free((char *)opt->state[k].name);
            return gg_last_status();
        }
        opt->params[opt->n_params + i] = q;
    }
    opt->groups[g] = (optim_group){.hp = *hp, .base_lr = hp->lr};
    opt->n_groups++;
    opt->n_params += n;
    opt->n_state = ns;
    return g;
}

bool gg_optim_filter_no_decay(const char *name, const gg_tensor *param, void *ctx) {
    (void)name;
    (void)ctx;
    return param && param->ndim <= 1;
}

bool gg_optim_filter_name_contains(const char *name, const gg_tensor *param, void *ctx) {
    (void)param;
    const char *const *subs = ctx;
    if (!name || !subs) return false;
    for (; *subs; subs++)
        if (strstr(name, *subs)) return true;
    return false;
}

/* Undo the last gg_optim_add_group (its parameters and state entries are the last ones). */
static void pop_last_group(gg_optim *opt) {
    int g = opt->n_groups - 1;
    while (opt->n_params > 0 && opt->params[opt->n_params - 1]->group == g) {
        optim_param *q = opt->params[--opt->n_params];
        int n_st = 1;
        for (int b = 0; b < N_BUFS; b++) n_st += q->buf[b] != NULL;
        for (int k = opt->n_state - n_st; k < opt->n_state; k++) free((char *)opt->state[k].name);
        opt->n_state -= n_st;
        param_free(q);
    }
    opt->n_groups--;
}

int gg_optim_add_params(gg_optim *opt, gg_tensor *const *params, const char *const *names, int n,
                        const gg_optim_hparams *hp, gg_optim_param_filter no_decay, void *ctx) {
    int st = check_batch(opt, params, names, n, hp, __func__);
    if (st) return st;
    if (!no_decay) {
        st = gg_optim_add_group(opt, params, names, n, hp);
        return st < 0 ? st : 1;
    }
    /* The decayed parameters, then the others, each in the caller's order. Default names keep the index
     * the parameter has in `params`. */
    gg_tensor **ps = malloc(sizeof *ps * (size_t)n);
    const char **ns = malloc(sizeof *ns * (size_t)n);
    char(*nbuf)[32] = names ? NULL : malloc(sizeof *nbuf * (size_t)n);
    bool *skip = malloc(sizeof *skip * (size_t)n);
    if (!ps || !ns || !skip || (!names && !nbuf)) {
        free(ps), free(ns), free(nbuf), free(skip);
        return GG_FAIL(GG_ERR_NOMEM, "cannot allocate %d parameter slots", n);
    }
    for (int i = 0; i < n; i++) {
        const char *name =
            names ? names[i] : (snprintf(nbuf[i], sizeof nbuf[i], "p%d", opt->n_params + i), nbuf[i]);
        skip[i] = no_decay(name, params[i], ctx);
    }
    int n_decay = 0, m = 0;
    for (int i = 0; i < n; i++) n_decay += !skip[i];
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n; i++)
            if (skip[i] == (pass == 1)) ps[m] = params[i], ns[m++] = names ? names[i] : nbuf[i];
    gg_optim_hparams hp0 = *hp;
    hp0.weight_decay = 0.0;
    int added = 0;
    if (n_decay > 0) {
        st = gg_optim_add_group(opt, ps, ns, n_decay, hp);
        added += st >= 0;
    }
    if (st >= 0 && n_decay < n) {
        st = gg_optim_add_group(opt, ps + n_decay, ns + n_decay, n - n_decay, &hp0);
        added += st >= 0;
    }
    if (st < 0 && added > 0) pop_last_group(opt); /* only an allocation failure gets here */
    free(ps), free(ns), free(nbuf), free(skip);
    return st < 0 ? st : added;
}

/* ---------------------------------------------------------------------------------------------------
 * accessors */

int gg_optim_num_groups(const gg_optim *opt) { return opt ? opt->n_groups : 0; }
int gg_optim_num_params(const gg_optim *opt) { return opt ? opt->n_params : 0; }

static bool param_ok(const gg_optim *opt, int k, const char *func) {
    if (!opt) return gg_error_set(GG_ERR_ARG, func, "opt is NULL"), false;
    if (k < 0 || k >= opt->n_params)
        return gg_error_set(GG_ERR_INDEX, func, "parameter %d out of range [0, %d)", k, opt->n_params), false;
    return true;
}

static bool group_ok(const gg_optim *opt, int g, const char *func) {
    if (!opt) return gg_error_set(GG_ERR_ARG, func, "opt is NULL"), false;
    if (g < 0 || g >= opt->n_groups)
        return gg_error_set(GG_ERR_INDEX, func, "group %d out of range [0, %d)", g, opt->n_groups), false;
    return true;
}

gg_tensor *gg_optim_param(const gg_optim *opt, int k) {
    return param_ok(opt, k, __func__) ? opt->params[k]->p : NULL;
}

const char *gg_optim_param_name(const gg_optim *opt, int k) {
    return param_ok(opt, k, __func__) ? opt->params[k]->name : NULL;
}

int gg_optim_param_group(const gg_optim *opt, int k) {
    return param_ok(opt, k, __func__) ? opt->params[k]->group : -1;
}

int gg_optim_get_hparams(const gg_optim *opt, int g, gg_optim_hparams *out) {
    if (!group_ok(opt, g, __func__)) return gg_last_status();
    if (!out) return GG_FAIL(GG_ERR_ARG, "out is NULL");
    *out = opt->groups[g].hp;
    return GG_OK;
}

double gg_optim_get_lr(const gg_optim *opt, int g) {
    return group_ok(opt, g, __func__) ? opt->groups[g].hp.lr : -1.0;
}

double gg_optim_get_base_lr(const gg_optim *opt, int g) {
    return group_ok(opt, g, __func__) ? opt->groups[g].base_lr : -1.0;
}

int gg_optim_set_lr(gg_optim *opt, int g, double lr) {
    if (!opt) return GG_FAIL(GG_ERR_ARG, "opt is NULL");
    if (g != -1 && !group_ok(opt, g, __func__)) return gg_last_status();
    if (!(lr >= 0.0 && isfinite(lr)))
        return GG_FAIL(GG_ERR_ARG, "invalid learning rate %g (must be finite and >= 0)", lr);
    for (int k = 0; k < opt->n_groups; k++)
        if (g == -1 || k == g) opt->groups[k].hp.lr = lr;
    return GG_OK;
}

int gg_optim_num_state(const gg_optim *opt) { return opt ? opt->n_state : 0; }

int gg_optim_state(const gg_optim *opt, int i, gg_optim_state_entry *out) {
    if (!opt) return GG_FAIL(GG_ERR_ARG, "opt is NULL");
    if (!out) return GG_FAIL(GG_ERR_ARG, "out is NULL");
    if (i < 0 || i >= opt->n_state)
        return GG_FAIL(GG_ERR_INDEX, "state entry %d out of range [0, %d)", i, opt->n_state);
    *out = opt->state[i];
    return GG_OK;
}

int gg_optim_state_find(const gg_optim *opt, const char *name, gg_optim_state_entry *out) {
    if (!opt) return GG_FAIL(GG_ERR_ARG, "opt is NULL");
    if (!name || !out) return GG_FAIL(GG_ERR_ARG, "%s is NULL", name ? "out" : "name");
    for (int i = 0; i < opt->n_state; i++)
        if (strcmp(opt->state[i].name, name) == 0) {
            *out = opt->state[i];
            return GG_OK;
        }
    return GG_FAIL(GG_ERR_INDEX, "the optimizer has no state entry named '%s'", name);
}

/* ---------------------------------------------------------------------------------------------------
 * update kernels: p, g and the buffers are contiguous arrays of n floats */

/* PyTorch's CPU kernels (AVX2 builds) fuse a + alpha * b (add with alpha, addcmul) into one FMA and round
 * every other operation on its own. FMA(a, b, c) = a * b + c rounded once; MUL(a, b) = a * b rounded on its
 * own even where -ffp-contract=fast would fuse it into a following addition (a * b + -0 is exactly a * b,
 * signed zeros included). Without FMA hardware both are the plain expressions. */
#if defined(__FMA__)
#define FMA(a, b, c) fmaf((a), (b), (c))
#define MUL(a, b) fmaf((a), (b), -0.0f)
#else
#define FMA(a, b, c) ((a) * (b) + (c))
#define MUL(a, b) ((a) * (b))
#endif

typedef struct sgd_coef {
    float neg_lr, wd, momentum, one_minus_dampening;
    bool nesterov, first; /* first: the momentum buffer takes the gradient as it is */
} sgd_coef;

/* torch: d = g.add(p, alpha=wd); buf.mul_(momentum).add_(d, alpha=1-dampening) (or buf = d the first
 * time); d = nesterov ? d.add(buf, alpha=momentum) : buf; p.add_(d, alpha=-lr). */
static void sgd_kernel(float *restrict p, const float *restrict g, float *restrict buf, int64_t n,
                       const sgd_coef *c) {
    const float neg_lr = c->neg_lr, wd = c->wd, mom = c->momentum, damp1 = c->one_minus_dampening;
    const bool nesterov = c->nesterov, first = c->first, decay = wd != 0.0f;
    if (!buf) {
#pragma omp parallel for num_threads(gg_get_num_threads()) if (n > OPTIM_PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            float d = decay ? FMA(p[i], wd, g[i]) : g[i];
            p[i] = FMA(d, neg_lr, p[i]);
        }
        return;
    }
#pragma omp parallel for num_threads(gg_get_num_threads()) if (n > OPTIM_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float d = decay ? FMA(p[i], wd, g[i]) : g[i];
        float b = first ? d : FMA(d, damp1, buf[i] * mom);
        buf[i] = b;
        d = nesterov ? FMA(b, mom, d) : b;
        p[i] = FMA(d, neg_lr, p[i]);
    }
}

typedef struct adam_coef {
    float wd;       /* Adam: L2 added to the gradient */
    float decay;    /* AdamW: p *= decay (1 - lr wd) */
    bool decoupled; /* AdamW */
    float beta1, one_minus_beta1, beta2, one_minus_beta2;
    float neg_step_size; /* -lr / (1 - beta1^t) */
    float bc2_sqrt;      /* sqrt(1 - beta2^t) */
    float eps;
} adam_coef;

/* torch: p.mul_(1 - lr wd) (AdamW) or g = g.add(p, alpha=wd) (Adam); m.mul_(b1).add_(g, alpha=1-b1);
 * v.mul_(b2).addcmul_(g, g, value=1-b2); vmax = max(vmax, v); denom = (sqrt(v) / bc2_sqrt).add_(eps);
 * p.addcdiv_(m, denom, value=-step_size), i.e. p + (value * m) / denom. */
static void adam_kernel(float *restrict p, const float *restrict grad, float *restrict m, float *restrict v,
                        float *restrict vmax, int64_t n, const adam_coef *c) {
    const float wd = c->wd, decay = c->decay, b1 = c->beta1, omb1 = c->one_minus_beta1, b2 = c->beta2,
                omb2 = c->one_minus_beta2, nss = c->neg_step_size, bc2s = c->bc2_sqrt, eps = c->eps;
    const bool l2 = !c->decoupled && wd != 0.0f, decoupled = c->decoupled;
    if (!vmax) {
#pragma omp parallel for num_threads(gg_get_num_threads()) if (n > OPTIM_PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            float pi = decoupled ? MUL(p[i], decay) : p[i];
            float g = l2 ? FMA(pi, wd, grad[i]) : grad[i];
            float mi = FMA(g, omb1, m[i] * b1);
            float vi = FMA(omb2 * g, g, v[i] * b2);
            m[i] = mi;
            v[i] = vi;
            float denom = sqrtf(vi) / bc2s + eps;
            p[i] = pi + (nss * mi) / denom;
        }
        return;
    }
#pragma omp parallel for num_threads(gg_get_num_threads()) if (n > OPTIM_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float pi = decoupled ? MUL(p[i], decay) : p[i];
        float g = l2 ? FMA(pi, wd, grad[i]) : grad[i];
        float mi = FMA(g, omb1, m[i] * b1);
        float vi = FMA(omb2 * g, g, v[i] * b2);
        float vm = vmax[i] > vi ? vmax[i] : vi;
        m[i] = mi;
        v[i] = vi;
        vmax[i] = vm;
        float denom = sqrtf(vm) / bc2s + eps;
        p[i] = pi + (nss * mi) / denom;
    }
}

/* ---------------------------------------------------------------------------------------------------
 * step */

/* Contiguous stand-ins for a parameter or gradient that is not contiguous (rare: views as parameters). */
typedef struct step_scratch {
    gg_tensor *p, *g;
} step_scratch;

static void update_param(const gg_optim *opt, optim_param *q, float *p, const float *g) {
    const gg_optim_hparams *hp = &opt->groups[q->group].hp;
    int64_t n = q->p->numel;
    int64_t t = ++q->step;
    if (opt->kind == GG_OPTIM_SGD) {
        sgd_coef c = {.neg_lr = (float)-hp->lr,
                      .wd = (float)hp->weight_decay,
                      .momentum = (float)hp->momentum,
                      .one_minus_dampening = (float)(1.0 - hp->dampening),
                      .nesterov = hp->nesterov,
                      .first = t == 1};
        sgd_kernel(p, g, q->buf[BUF_0] ? gg_tensor_data(q->buf[BUF_0]) : NULL, n, &c);
        return;
    }
    double bc1 = 1.0 - pow(hp->beta1, (double)t), bc2 = 1.0 - pow(hp->beta2, (double)t);
    adam_coef c = {.wd = (float)hp->weight_decay,
                   .decay = (float)(1.0 - hp->lr * hp->weight_decay),
                   .decoupled = opt->kind == GG_OPTIM_ADAMW,
                   .beta1 = (float)hp->beta1,
                   .one_minus_beta1 = (float)(1.0 - hp->beta1),
                   .beta2 = (float)hp->beta2,
                   .one_minus_beta2 = (float)(1.0 - hp->beta2),
                   .neg_step_size = (float)-(hp->lr / bc1),
                   .bc2_sqrt = (float)sqrt(bc2),
                   .eps = (float)hp->eps};
    adam_kernel(p, g, gg_tensor_data(q->buf[BUF_0]), gg_tensor_data(q->buf[BUF_1]),
                q->buf[BUF_2] ? gg_tensor_data(q->buf[BUF_2]) : NULL, n, &c);
}

int gg_optim_step(gg_optim *opt) {
    if (!opt) return GG_FAIL(GG_ERR_ARG, "opt is NULL");
    char s1[GG_SHAPE_STR_MAX], s2[GG_SHAPE_STR_MAX];
    int n_strided = 0;
    for (int k = 0; k < opt->n_params; k++) {
        const optim_param *q = opt->params[k];
        const gg_tensor *g = q->p->grad;
        if (!g) continue;
        if (!gg_tensor_same_shape(g, q->p))
            return GG_FAIL(GG_ERR_SHAPE,
                           "%s optimizer: gradient of parameter '%s' has shape %s, parameter %s",
                           kind_name(opt->kind), q->name, GG_SHAPE_STR(g, s1), GG_SHAPE_STR(q->p, s2));
        if (gg_tensor_may_overlap(g, q->p))
            return GG_FAIL(GG_ERR_ARG, "%s optimizer: gradient of parameter '%s' %s shares its storage",
                           kind_name(opt->kind), q->name, GG_SHAPE_STR(g, s1));
        n_strided += !gg_tensor_is_contiguous(q->p) || !gg_tensor_is_contiguous(g);
    }

    /* Contiguous copies are made for every strided parameter before anything is updated. */
    step_scratch *scr = NULL;
    if (n_strided) {
        scr = calloc((size_t)opt->n_params, sizeof *scr);
        if (!scr)
            return GG_FAIL(GG_ERR_NOMEM, "cannot allocate scratch for %d strided parameters", n_strided);
        for (int k = 0; k < opt->n_params; k++) {
            optim_param *q = opt->params[k];
            if (!q->p->grad || (gg_tensor_is_contiguous(q->p) && gg_tensor_is_contiguous(q->p->grad)))
                continue;
            scr[k].p = gg_tensor_contiguous(q->p);
            scr[k].g = gg_tensor_contiguous(q->p->grad);
            if (!scr[k].p || !scr[k].g) {
                for (int j = 0; j <= k; j++) gg_tensor_free(scr[j].p), gg_tensor_free(scr[j].g);
                free(scr);
                return gg_last_status();
            }
        }
    }
    for (int k = 0; k < opt->n_params; k++) {
        optim_param *q = opt->params[k];
        if (!q->p->grad) continue;
        const gg_tensor *pt = scr && scr[k].p ? scr[k].p : q->p;
        const gg_tensor *gt = scr && scr[k].g ? scr[k].g : q->p->grad;
        update_param(opt, q, gg_tensor_data(pt), gg_tensor_data(gt));
        if (pt != q->p) gg_tensor_copy_into(q->p, pt); /* same shape: cannot fail; bumps the version */
        else gg_tensor_bump_version(q->p);
    }
    if (scr) {
        for (int k = 0; k < opt->n_params; k++) gg_tensor_free(scr[k].p), gg_tensor_free(scr[k].g);
        free(scr);
    }
    return GG_OK;
}

void gg_optim_zero_grad(gg_optim *opt) {
    if (!opt) return;
    for (int k = 0; k < opt->n_params; k++) gg_zero_grad(opt->params[k]->p);
}

/* ---------------------------------------------------------------------------------------------------
 * learning-rate schedules */

gg_lr_schedule gg_lr_constant(int64_t warmup_steps, double warmup_start_factor) {
    return (gg_lr_schedule){
        .kind = GG_LR_CONSTANT, .warmup_steps = warmup_steps, .warmup_start_factor = warmup_start_factor};
}

gg_lr_schedule gg_lr_step(int64_t step_size, double gamma) {
    return (gg_lr_schedule){
        .kind = GG_LR_STEP, .warmup_start_factor = 1.0, .step_size = step_size, .gamma = gamma};
}

gg_lr_schedule gg_lr_cosine(int64_t warmup_steps, double warmup_start_factor, int64_t total_steps,
                            double eta_min) {
    return (gg_lr_schedule){.kind = GG_LR_COSINE,
                            .warmup_steps = warmup_steps,
                            .warmup_start_factor = warmup_start_factor,
                            .total_steps = total_steps,
                            .eta_min = eta_min};
}

static int check_schedule(const gg_lr_schedule *s, const char *func) {
    if (!s) return gg_error_set(GG_ERR_ARG, func, "schedule is NULL");
    if ((int)s->kind < 0 || s->kind >= GG_LR_KIND_COUNT)
        return gg_error_set(GG_ERR_ARG, func, "unknown schedule kind %d", (int)s->kind);
    if (s->warmup_steps < 0)
        return gg_error_set(GG_ERR_ARG, func, "warmup_steps %lld < 0", (long long)s->warmup_steps);
    if (s->warmup_steps > 0 && !(s->warmup_start_factor > 0.0 && s->warmup_start_factor <= 1.0))
        return gg_error_set(GG_ERR_ARG, func, "warmup_start_factor %g is not in (0, 1]",
                            s->warmup_start_factor);
    if (s->kind == GG_LR_STEP && (s->step_size <= 0 || !(s->gamma > 0.0 && isfinite(s->gamma))))
        return gg_error_set(GG_ERR_ARG, func,
                            "step schedule needs step_size > 0 and gamma > 0 (got %lld, %g)",
                            (long long)s->step_size, s->gamma);
    if (s->kind == GG_LR_COSINE && s->total_steps <= s->warmup_steps)
        return gg_error_set(GG_ERR_ARG, func,
                            "cosine schedule needs total_steps (%lld) > warmup_steps (%lld)",
                            (long long)s->total_steps, (long long)s->warmup_steps);
    if (s->kind == GG_LR_COSINE && !(s->eta_min >= 0.0 && isfinite(s->eta_min)))
        return gg_error_set(GG_ERR_ARG, func, "cosine schedule needs eta_min >= 0 (got %g)", s->eta_min);
    return GG_OK;
}

/* The schedule, arguments already checked. */
static double lr_at(const gg_lr_schedule *s, double base, int64_t t) {
    if (t < s->warmup_steps) {
        double f = s->warmup_start_factor;
        return base * (f + (1.0 - f) * (double)t / (double)s->warmup_steps);
    }
    int64_t u = t - s->warmup_steps;
    switch (s->kind) {
    case GG_LR_STEP:
        return base * pow(s->gamma, (double)(u / s->step_size));
    case GG_LR_COSINE: {
        int64_t span = s->total_steps - s->warmup_steps;
        if (u >= span) return s->eta_min;
        return s->eta_min + (base - s->eta_min) * (1.0 + cos(OPTIM_PI * (double)u / (double)span)) / 2.0;
    }
    default:
        return base;
    }
}

double gg_lr_at(const gg_lr_schedule *s, double base_lr, int64_t t) {
    if (check_schedule(s, __func__)) return -1.0;
    if (t < 0) return GG_FAIL(GG_ERR_ARG, "step %lld < 0", (long long)t), -1.0;
    if (!(base_lr >= 0.0 && isfinite(base_lr)))
        return GG_FAIL(GG_ERR_ARG, "invalid base lr %g", base_lr), -1.0;
    return lr_at(s, base_lr, t);
}

int gg_optim_apply_schedule(gg_optim *opt, const gg_lr_schedule *s, int64_t t) {
    if (!opt) return GG_FAIL(GG_ERR_ARG, "opt is NULL");
    int st = check_schedule(s, __func__);
    if (st) return st;
    if (t < 0) return GG_FAIL(GG_ERR_ARG, "step %lld < 0", (long long)t);
    for (int g = 0; g < opt->n_groups; g++) opt->groups[g].hp.lr = lr_at(s, opt->groups[g].base_lr, t);
    return GG_OK;
}

/* ---------------------------------------------------------------------------------------------------
 * gradient clipping */

/* sum |x|^p (p finite) or max |x| (p infinite) over n contiguous floats, in double. */
static double norm_accumulate(const float *x, int64_t n, double p) {
    double acc = 0.0;
    if (isinf(p)) {
        for (int64_t i = 0; i < n; i++) {
            double a = fabs((double)x[i]);
            acc = (a > acc || isnan(a)) ? a : acc;
        }
    } else if (p == 2.0) {
#pragma omp parallel for num_threads(gg_get_num_threads()) if (n > OPTIM_PAR_MIN) reduction(+ : acc)
        for (int64_t i = 0; i < n; i++) acc += (double)x[i] * (double)x[i];
    } else if (p == 1.0) {
#pragma omp parallel for num_threads(gg_get_num_threads()) if (n > OPTIM_PAR_MIN) reduction(+ : acc)
        for (int64_t i = 0; i < n; i++) acc += fabs((double)x[i]);
    } else {
        for (int64_t i = 0; i < n; i++) acc += pow(fabs((double)x[i]), p);
    }
    return acc;
}

static void scale_floats(float *x, int64_t n, float s) {
#pragma omp parallel for num_threads(gg_get_num_threads()) if (n > OPTIM_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) x[i] *= s;
}

/* Parameter i of whatever list the clipping runs over. */
typedef gg_tensor *(*param_getter)(const void *list, int i);
static gg_tensor *get_from_array(const void *list, int i) { return ((gg_tensor *const *)list)[i]; }
static gg_tensor *get_from_optim(const void *list, int i) { return ((const gg_optim *)list)->params[i]->p; }

static int clip_grad_norm(param_getter get, const void *list, int n, double max_norm, double norm_type,
                          bool error_if_nonfinite, double *total_norm, const char *func) {
    if (!(max_norm >= 0.0)) return gg_error_set(GG_ERR_ARG, func, "max_norm %g must be >= 0", max_norm);
    if (!(norm_type > 0.0))
        return gg_error_set(GG_ERR_ARG, func, "norm_type %g must be > 0 (or INFINITY)", norm_type);
    for (int i = 0; i < n; i++)
        if (!get(list, i)) return gg__null_arg(func, "params[i]");
    /* Strided gradients are read through a contiguous copy, made before anything is written. */
    gg_tensor **tmp = NULL;
    for (int i = 0; i < n; i++) {
        const gg_tensor *g = get(list, i)->grad;
        if (!g || gg_tensor_is_contiguous(g)) continue;
        if (!tmp && !(tmp = calloc((size_t)n, sizeof *tmp)))
            return gg_error_set(GG_ERR_NOMEM, func, "cannot allocate scratch");
        if (!(tmp[i] = gg_tensor_contiguous(g))) {
            for (int k = 0; k < i; k++) gg_tensor_free(tmp[k]);
            free(tmp);
            return gg_last_status();
        }
    }
    double acc = 0.0;
    for (int i = 0; i < n; i++) {
        const gg_tensor *g = tmp && tmp[i] ? tmp[i] : get(list, i)->grad;
        if (!g) continue;
        double a = norm_accumulate(gg_tensor_data(g), g->numel, norm_type);
        acc = isinf(norm_type) ? ((a > acc || isnan(a)) ? a : acc) : acc + a;
    }
    double norm = isinf(norm_type) ? acc : norm_type == 2.0 ? sqrt(acc) : pow(acc, 1.0 / norm_type);
    float norm_f = (float)norm; /* torch returns (and scales by) a float32 norm */
    int st = GG_OK;
    if (!isfinite(norm_f) && error_if_nonfinite) {
        st = gg_error_set(GG_ERR_NUMERIC, func,
                          "the total norm of order %g of the gradients of %d parameters is %g", norm_type, n,
                          (double)norm_f);
    } else {
        float coef = (float)max_norm / (norm_f + 1e-6f);
        if (!(coef >= 1.0f)) /* also NaN, as torch's clamp(max=1) passes NaN through */
            for (int i = 0; i < n; i++) {
                gg_tensor *g = get(list, i)->grad;
                if (!g) continue;
                gg_tensor *c = tmp && tmp[i] ? tmp[i] : g;
                scale_floats(gg_tensor_data(c), c->numel, coef);
                if (c != g) gg_tensor_copy_into(g, c);
                else gg_tensor_bump_version(g);
            }
    }
    if (tmp) {
        for (int i = 0; i < n; i++) gg_tensor_free(tmp[i]);
        free(tmp);
    }
    if (total_norm && st == GG_OK) *total_norm = (double)norm_f;
    return st;
}

int gg_clip_grad_norm(gg_tensor *const *params, int n, double max_norm, double norm_type,
                      bool error_if_nonfinite, double *total_norm) {
    if (n < 0 || (n > 0 && !params)) return GG_FAIL(GG_ERR_ARG, "params is NULL or n = %d < 0", n);
    return clip_grad_norm(get_from_array, params, n, max_norm, norm_type, error_if_nonfinite, total_norm,
                          __func__);
}

int gg_optim_clip_grad_norm(gg_optim *opt, double max_norm, double *total_norm) {
    if (!opt) return GG_FAIL(GG_ERR_ARG, "opt is NULL");
    return clip_grad_norm(get_from_optim, opt, opt->n_params, max_norm, 2.0, false, total_norm, __func__);
}
