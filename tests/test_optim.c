/* Optimizers, schedules and gradient clipping: PyTorch trajectories (scripts/gen_optim_golden.py) for every
 * SGD option combination, Adam and AdamW; hand-computed steps; state exposure; schedules against hand
 * values and torch's lr sequences; clip_grad_norm against torch; error paths; no allocation per step. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gg_test_util.h"
#include "groupgrad.h"

#define STEPS 5
#define NP 3

static gg_tensor *load_golden(const char *name) {
    char path[512];
    const char *dir = getenv("GG_TEST_DATA");
    snprintf(path, sizeof path, "%s/golden/optim/%s.npy", dir ? dir : "tests/data", name);
    gg_tensor *t = gg_npy_load(path);
    cr_assert_not_null(t, "%s", gg_last_error());
    return t;
}

/* The update kernels round like PyTorch's AVX2 CPU kernels (which wrote the golden data) when FMA is
 * compiled in: the trajectories then match bit for bit. Without FMA, within a few ulps. */
#if defined(__FMA__)
#define TRAJ_RTOL (-1.0f)
#else
#define TRAJ_RTOL 2e-6f
#endif

/* |got - want| <= 1e-7 + rtol |want| element by element; rtol < 0: bit-identical. */
static void expect_close(const gg_tensor *got, const gg_tensor *want, float rtol, const char *what) {
    cr_assert(gg_tensor_same_shape(got, want), "%s: shape mismatch", what);
    gg_tensor *g = gg_tensor_contiguous(got), *w = gg_tensor_contiguous(want);
    const float *a = gg_tensor_data(g), *b = gg_tensor_data(w);
    for (int64_t i = 0; i < w->numel; i++)
        cr_assert(rtol < 0 ? memcmp(&a[i], &b[i], sizeof a[i]) == 0
                           : fabsf(a[i] - b[i]) <= 1e-7f + rtol * fabsf(b[i]),
                  "%s[%lld]: got %.9g, PyTorch %.9g (diff %.3g)", what, (long long)i, (double)a[i],
                  (double)b[i], (double)(a[i] - b[i]));
    gg_tensor_free(g);
    gg_tensor_free(w);
}

static void expect_equal(const gg_tensor *a, const gg_tensor *b, const char *what) {
    cr_assert(gg_tensor_same_shape(a, b), "%s: shape mismatch", what);
    gg_tensor *x = gg_tensor_contiguous(a), *y = gg_tensor_contiguous(b);
    cr_assert(memcmp(gg_tensor_data(x), gg_tensor_data(y), sizeof(float) * (size_t)x->numel) == 0,
              "%s: not bit-identical", what);
    gg_tensor_free(x);
    gg_tensor_free(y);
}

/* Set p->grad to a copy of g (NULL: no gradient). */
static void set_grad(gg_tensor *p, const gg_tensor *g) {
    if (!g) {
        gg_tensor_free(p->grad);
        p->grad = NULL;
        return;
    }
    if (!p->grad) p->grad = gg_tensor_zeros(p->ndim, p->shape);
    cr_assert_eq(gg_tensor_copy_into(p->grad, g), GG_OK, "%s", gg_last_error());
}

/* ---------------------------------------------------------------------------------------------------
 * PyTorch trajectories */

typedef enum { PLAIN, SKIP, GROUPS } case_mode;

typedef struct golden_case {
    const char *name;
    gg_optim_kind kind;
    gg_optim_hparams hp;
    case_mode mode;
} golden_case;

#define SGD(n, m, d, nest, w)                                                                             \
    {                                                                                                     \
        n, GG_OPTIM_SGD, {.lr = 0.1, .momentum = m, .dampening = d, .nesterov = nest, .weight_decay = w}, \
            PLAIN                                                                                         \
    }
#define ADAM(n, k, l, w, a, b1, b2, e) \
    { n, k, {.lr = l, .weight_decay = w, .amsgrad = a, .beta1 = b1, .beta2 = b2, .eps = e}, PLAIN }

/* Mirrors CASES in scripts/gen_optim_golden.py. */
static const golden_case cases[] = {
    SGD("sgd_m0_d0_n0_wd0", 0.0, 0.0, false, 0.0),
    SGD("sgd_m0_d0_n0_wd1", 0.0, 0.0, false, 0.01),
    SGD("sgd_m0_d3_n0_wd0", 0.0, 0.3, false, 0.0),
    SGD("sgd_m0_d3_n0_wd1", 0.0, 0.3, false, 0.01),
    SGD("sgd_m9_d0_n0_wd0", 0.9, 0.0, false, 0.0),
    SGD("sgd_m9_d0_n0_wd1", 0.9, 0.0, false, 0.01),
    SGD("sgd_m9_d0_n1_wd0", 0.9, 0.0, true, 0.0),
    SGD("sgd_m9_d0_n1_wd1", 0.9, 0.0, true, 0.01),
    SGD("sgd_m9_d3_n0_wd0", 0.9, 0.3, false, 0.0),
    SGD("sgd_m9_d3_n0_wd1", 0.9, 0.3, false, 0.01),
    ADAM("adam", GG_OPTIM_ADAM, 0.01, 0.0, false, 0.9, 0.999, 1e-8),
    ADAM("adam_wd", GG_OPTIM_ADAM, 0.01, 0.01, false, 0.9, 0.999, 1e-8),
    ADAM("adam_amsgrad", GG_OPTIM_ADAM, 0.01, 0.0, true, 0.9, 0.999, 1e-8),
    ADAM("adam_amsgrad_wd", GG_OPTIM_ADAM, 0.02, 0.1, true, 0.9, 0.999, 1e-8),
    ADAM("adam_betas", GG_OPTIM_ADAM, 0.05, 0.0, false, 0.8, 0.99, 1e-6),
    ADAM("adamw", GG_OPTIM_ADAMW, 0.01, 0.01, false, 0.9, 0.999, 1e-8),
    ADAM("adamw_wd0", GG_OPTIM_ADAMW, 0.01, 0.0, false, 0.9, 0.999, 1e-8),
    ADAM("adamw_amsgrad", GG_OPTIM_ADAMW, 0.02, 0.1, true, 0.9, 0.999, 1e-8),
    {"adam_skip",
     GG_OPTIM_ADAM,
     {.lr = 0.01, .weight_decay = 0.01, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8},
     SKIP},
    {"sgd_groups_steplr", GG_OPTIM_SGD, {.lr = 0.1, .momentum = 0.9}, GROUPS},
};
#define N_CASES ((int)(sizeof cases / sizeof cases[0]))
static int case_index[N_CASES];

ParameterizedTestParameters(optim, torch_trajectory) {
    for (int i = 0; i < N_CASES; i++) case_index[i] = i;
    return cr_make_param_array(int, case_index, N_CASES);
}

ParameterizedTest(int *index, optim, torch_trajectory) {
    const golden_case *gc = &cases[*index];
    char name[128], what[192];
    gg_tensor *packed[NP], *params[NP];
    const char *names[NP] = {"w", "b", "s"};
    for (int i = 0; i < NP; i++) {
        snprintf(name, sizeof name, "%s_p%d", gc->name, i);
        packed[i] = load_golden(name);
        gg_tensor *init = gg_tensor_select(packed[i], 0, 0);
        params[i] = gg_tensor_copy(init);
        gg_tensor_free(init);
        cr_assert_eq(gg_requires_grad(params[i], true), GG_OK);
    }
    snprintf(name, sizeof name, "%s_mask", gc->name);
    gg_tensor *mask = load_golden(name);

    gg_optim *opt = gg_optim_new(gc->kind);
    cr_assert_not_null(opt);
    gg_lr_schedule sched = gg_lr_step(2, 0.5);
    if (gc->mode == GROUPS) {
        gg_optim_hparams h0 = gc->hp, h1 = gc->hp;
        h0.weight_decay = 0.01;
        h1.lr = 0.05;
        cr_assert_eq(gg_optim_add_group(opt, params, names, 1, &h0), 0, "%s", gg_last_error());
        cr_assert_eq(gg_optim_add_group(opt, params + 1, names + 1, 2, &h1), 1, "%s", gg_last_error());
    } else {
        cr_assert_eq(gg_optim_add_group(opt, params, names, NP, &gc->hp), 0, "%s", gg_last_error());
    }

    for (int t = 0; t < STEPS; t++) {
        for (int i = 0; i < NP; i++) {
            float m = 1.0f;
            cr_assert_eq(gg_tensor_get(mask, (int64_t[]){t, i}, &m), GG_OK);
            gg_tensor *g = gg_tensor_select(packed[i], 0, 1 + t);
            set_grad(params[i], m != 0.0f ? g : NULL);
            gg_tensor_free(g);
        }
        if (gc->mode == GROUPS) cr_assert_eq(gg_optim_apply_schedule(opt, &sched, t), GG_OK);
        cr_assert_eq(gg_optim_step(opt), GG_OK, "%s step %d: %s", gc->name, t, gg_last_error());
        for (int i = 0; i < NP; i++) {
            gg_tensor *want = gg_tensor_select(packed[i], 0, 1 + STEPS + t);
            snprintf(what, sizeof what, "%s step %d param %s", gc->name, t, names[i]);
            expect_close(params[i], want, TRAJ_RTOL, what);
            gg_tensor_free(want);
        }
    }

    /* The final state, by name, against torch's optimizer state. */
    for (int i = 0; i < NP; i++) {
        snprintf(name, sizeof name, "%s_p%d_state", gc->name, i);
        gg_tensor *state = load_golden(name);
        const char *bufs_sgd[] = {"momentum_buffer"},
                   *bufs_adam[] = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
        const char **bufs = gc->kind == GG_OPTIM_SGD ? bufs_sgd : bufs_adam;
        int n_bufs = gc->kind == GG_OPTIM_SGD ? (gc->hp.momentum != 0.0) : (gc->hp.amsgrad ? 3 : 2);
        cr_assert_eq(state->shape[0], n_bufs + 1, "%s: %lld state rows, expected %d", name,
                     (long long)state->shape[0], n_bufs + 1);
        for (int b = 0; b < n_bufs; b++) {
            char sname[64];
            snprintf(sname, sizeof sname, "%s.%s", names[i], bufs[b]);
            gg_optim_state_entry e;
            cr_assert_eq(gg_optim_state_find(opt, sname, &e), GG_OK, "%s", gg_last_error());
            cr_assert_not_null(e.tensor);
            gg_tensor *want = gg_tensor_select(state, 0, b);
            snprintf(what, sizeof what, "%s final %s", gc->name, sname);
            expect_close(e.tensor, want, TRAJ_RTOL, what);
            gg_tensor_free(want);
        }
        char sname[64];
        snprintf(sname, sizeof sname, "%s.step", names[i]);
        gg_optim_state_entry e;
        cr_assert_eq(gg_optim_state_find(opt, sname, &e), GG_OK, "%s", gg_last_error());
        cr_assert_not_null(e.counter);
        float steps = gg_tensor_data(state)[(int64_t)n_bufs * params[i]->numel];
        cr_assert_eq(*e.counter, (int64_t)steps, "%s: step %lld, torch %g", sname, (long long)*e.counter,
                     (double)steps);
        gg_tensor_free(state);
    }
    gg_optim_free(opt);
    for (int i = 0; i < NP; i++) gg_tensor_free(params[i]), gg_tensor_free(packed[i]);
    gg_tensor_free(mask);
}

/* ---------------------------------------------------------------------------------------------------
 * hand-computed steps */

static gg_tensor *leaf(int n, const float *v) {
    gg_tensor *t = gg_tensor_from_data(1, (int64_t[]){n}, v);
    cr_assert_not_null(t);
    cr_assert_eq(gg_requires_grad(t, true), GG_OK);
    return t;
}

Test(optim, sgd_momentum_by_hand) {
    gg_tensor *p = leaf(2, (float[]){1.0f, 2.0f});
    set_grad(p, NULL);
    gg_tensor *g = gg_tensor_from_data(1, (int64_t[]){2}, (float[]){0.5f, -1.0f});
    set_grad(p, g);
    gg_optim *opt = gg_optim_new(GG_OPTIM_SGD);
    gg_optim_hparams hp = gg_sgd_hparams(0.1);
    hp.momentum = 0.9;
    cr_assert_eq(gg_optim_add_group(opt, &p, (const char *[]){"p"}, 1, &hp), 0);
    cr_assert_eq(gg_optim_step(opt), GG_OK);
    /* first step: buf = g (no dampening), p -= 0.1 g */
    float *d = gg_tensor_data(p);
    cr_assert_float_eq(d[0], 0.95f, 1e-6f);
    cr_assert_float_eq(d[1], 2.1f, 1e-6f);
    cr_assert_eq(gg_optim_step(opt), GG_OK);
    /* buf = 0.9 g + g = 1.9 g */
    cr_assert_float_eq(d[0], 0.95f - 0.095f, 1e-6f);
    cr_assert_float_eq(d[1], 2.1f + 0.19f, 1e-6f);
    gg_optim_state_entry e;
    cr_assert_eq(gg_optim_state_find(opt, "p.momentum_buffer", &e), GG_OK);
    gt_assert_list(e.tensor, 0.95f, -1.9f);
    cr_assert_eq(gg_optim_state_find(opt, "p.step", &e), GG_OK);
    cr_assert_eq(*e.counter, 2);
    gg_optim_free(opt);
    gg_tensor_free(g);
    gg_tensor_free(p);
}

Test(optim, adam_first_step_is_sign) {
    /* step 1: m/(1-b1) = g, sqrt(v/(1-b2)) = |g|, so p -= lr g / (|g| + eps) */
    gg_tensor *p = leaf(3, (float[]){1.0f, -1.0f, 0.0f});
    gg_tensor *g = gg_tensor_from_data(1, (int64_t[]){3}, (float[]){0.25f, -4.0f, 1e-3f});
    set_grad(p, g);
    for (int k = GG_OPTIM_ADAM; k <= GG_OPTIM_ADAMW; k++) {
        gg_tensor_fill(p, 0.0f);
        gg_optim *opt = gg_optim_new((gg_optim_kind)k);
        gg_optim_hparams hp = gg_adam_hparams(0.1);
        cr_assert_eq(gg_optim_add_group(opt, &p, NULL, 1, &hp), 0);
        cr_assert_eq(gg_optim_step(opt), GG_OK);
        const float *d = gg_tensor_data(p);
        cr_assert_float_eq(d[0], -0.1f, 1e-6f);
        cr_assert_float_eq(d[1], 0.1f, 1e-6f);
        cr_assert_float_eq(d[2], -0.1f, 1e-5f);
        cr_assert_str_eq(gg_optim_param_name(opt, 0), "p0");
        gg_optim_free(opt);
    }
    gg_tensor_free(g);
    gg_tensor_free(p);
}

Test(optim, adamw_decay_is_decoupled) {
    /* zero gradient: Adam's update is 0 (m = 0), only the decay p *= 1 - lr wd remains */
    gg_tensor *p = leaf(2, (float[]){2.0f, -4.0f});
    gg_tensor *g = gg_tensor_zeros(GG_SHAPE(2));
    set_grad(p, g);
    gg_optim *opt = gg_optim_new(GG_OPTIM_ADAMW);
    gg_optim_hparams hp = gg_adamw_hparams(0.1);
    hp.weight_decay = 0.5;
    cr_assert_eq(gg_optim_add_group(opt, &p, NULL, 1, &hp), 0);
    cr_assert_eq(gg_optim_step(opt), GG_OK);
    gt_assert_list(p, 2.0f * 0.95f, -4.0f * 0.95f);
    gg_optim_free(opt);
    gg_tensor_free(g);
    gg_tensor_free(p);
}

Test(optim, skips_parameters_without_grad_and_records_nothing) {
    gg_tensor *a = leaf(2, (float[]){1, 2}), *b = leaf(2, (float[]){3, 4});
    gg_tensor *g = gg_tensor_ones(GG_SHAPE(2));
    set_grad(a, g);
    gg_optim *opt = gg_optim_new(GG_OPTIM_ADAM);
    gg_optim_hparams hp = gg_adam_hparams(0.1);
    cr_assert_eq(gg_optim_add_group(opt, (gg_tensor *[]){a, b}, (const char *[]){"a", "b"}, 2, &hp), 0);
    uint64_t va = a->storage->version, vb = b->storage->version;
    size_t nodes = gg_tape_num_nodes(NULL);
    cr_assert(gg_is_grad_enabled());
    cr_assert_eq(gg_optim_step(opt), GG_OK);
    cr_assert_eq(gg_tape_num_nodes(NULL), nodes, "the update recorded graph nodes");
    cr_assert_gt(a->storage->version, va, "version counter not bumped");
    cr_assert_eq(b->storage->version, vb);
    gt_assert_list(b, 3, 4);
    gg_optim_state_entry e;
    cr_assert_eq(gg_optim_state_find(opt, "b.step", &e), GG_OK);
    cr_assert_eq(*e.counter, 0);
    cr_assert_eq(gg_optim_state_find(opt, "a.step", &e), GG_OK);
    cr_assert_eq(*e.counter, 1);
    cr_assert(a->grad_fn == NULL && a->requires_grad);
    gg_optim_zero_grad(opt);
    gt_assert_all(a->grad, 0.0f);
    cr_assert_null(b->grad);
    gg_optim_free(opt);
    gg_tensor_free(g);
    gg_tensor_free(a);
    gg_tensor_free(b);
    gg_tape_reset(NULL);
}

/* A transposed (non-contiguous) parameter and a strided gradient follow the same trajectory as
 * contiguous ones. */
Test(optim, strided_parameters) {
    gg_tensor *base = GT_IOTA(3, 4);
    gg_tensor *pt = gg_tensor_transpose(base, 0, 1); /* [4,3], strides (1,4) */
    cr_assert_eq(gg_requires_grad(pt, true), GG_OK);
    gg_tensor *pc = gg_tensor_copy(pt);
    gg_requires_grad(pc, true);
    gg_tensor *gbase = gg_tensor_arange(-6, 6, 1), *g34 = gg_tensor_view(gbase, GG_SHAPE(3, 4));
    gg_tensor *gt = gg_tensor_transpose(g34, 0, 1);
    for (int k = 0; k < GG_OPTIM_KIND_COUNT; k++) {
        gg_optim *o1 = gg_optim_new((gg_optim_kind)k), *o2 = gg_optim_new((gg_optim_kind)k);
        gg_optim_hparams hp = k == GG_OPTIM_SGD ? gg_sgd_hparams(0.05) : gg_adamw_hparams(0.05);
        hp.momentum = 0.9;
        hp.weight_decay = 0.1;
        hp.amsgrad = true;
        cr_assert_eq(gg_optim_add_group(o1, &pt, NULL, 1, &hp), 0, "%s", gg_last_error());
        cr_assert_eq(gg_optim_add_group(o2, &pc, NULL, 1, &hp), 0);
        for (int t = 0; t < 3; t++) {
            gg_tensor_free(pt->grad);
            pt->grad = gg_tensor_retain(gt); /* a strided gradient */
            set_grad(pc, gt);
            cr_assert_eq(gg_optim_step(o1), GG_OK, "%s", gg_last_error());
            cr_assert_eq(gg_optim_step(o2), GG_OK);
            expect_equal(pt, pc, "strided vs contiguous parameter");
        }
        gg_optim_free(o1);
        gg_optim_free(o2);
    }
    gg_tensor_free(gt), gg_tensor_free(g34), gg_tensor_free(gbase);
    gg_tensor_free(pc), gg_tensor_free(pt), gg_tensor_free(base);
}

/* Big parameters take the OpenMP path: the result does not depend on the thread count, and a steady-state
 * step allocates nothing. */
Test(optim, threads_and_no_allocation) {
    int64_t n = 100003;
    gg_rng rng;
    gg_rng_init(&rng, 7);
    gg_tensor *p1 = gg_tensor_empty(GG_SHAPE(n)), *g = gg_tensor_empty(GG_SHAPE(n));
    gg_rand_normal(p1, 0, 1, &rng);
    gg_rand_normal(g, 0, 1, &rng);
    gg_tensor *p2 = gg_tensor_copy(p1);
    gg_requires_grad(p1, true), gg_requires_grad(p2, true);
    set_grad(p1, g), set_grad(p2, g);
    for (int k = 0; k < GG_OPTIM_KIND_COUNT; k++) {
        gg_optim *o1 = gg_optim_new((gg_optim_kind)k), *o2 = gg_optim_new((gg_optim_kind)k);
        gg_optim_hparams hp = k == GG_OPTIM_SGD ? gg_sgd_hparams(0.01) : gg_adam_hparams(0.01);
        hp.momentum = 0.9, hp.nesterov = true, hp.weight_decay = 1e-3, hp.amsgrad = true;
        gg_optim_add_group(o1, &p1, NULL, 1, &hp);
        gg_optim_add_group(o2, &p2, NULL, 1, &hp);
        for (int t = 0; t < 3; t++) {
            gg_set_num_threads(1);
            cr_assert_eq(gg_optim_step(o1), GG_OK);
            gg_set_num_threads(4);
            gg_alloc_stats before, after;
            gg_alloc_get_stats(&before);
            cr_assert_eq(gg_optim_step(o2), GG_OK);
            double norm;
            cr_assert_eq(gg_optim_clip_grad_norm(o2, 1e9, &norm), GG_OK);
            gg_alloc_get_stats(&after);
            cr_assert_eq(after.n_allocs, before.n_allocs, "a step allocated %zu blocks",
                         after.n_allocs - before.n_allocs);
            expect_equal(p1, p2, "1 thread vs 4 threads");
        }
        gg_optim_free(o1);
        gg_optim_free(o2);
    }
    gg_tensor_free(p1), gg_tensor_free(p2), gg_tensor_free(g);
}

/* ---------------------------------------------------------------------------------------------------
 * groups, filters, accessors */

Test(optim, no_decay_groups) {
    gg_tensor *w = gg_tensor_zeros(GG_SHAPE(4, 3)), *b = gg_tensor_zeros(GG_SHAPE(4)),
              *gamma = gg_tensor_ones(GG_SHAPE(4)), *gates = gg_tensor_zeros(GG_SHAPE(2)),
              *w2 = gg_tensor_zeros(GG_SHAPE(2, 2, 1, 1));
    gg_tensor *ps[] = {w, b, gamma, gates, w2};
    const char *names[] = {"conv.weight", "conv.bias", "bn.weight", "dg.gates", "fc.weight"};
    gg_optim *opt = gg_optim_new(GG_OPTIM_SGD);
    gg_optim_hparams hp = gg_sgd_hparams(0.1);
    hp.momentum = 0.9, hp.weight_decay = 5e-4;
    cr_assert_eq(gg_optim_add_params(opt, ps, names, 5, &hp, gg_optim_filter_no_decay, NULL), 2, "%s",
                 gg_last_error());
    cr_assert_eq(gg_optim_num_groups(opt), 2);
    cr_assert_eq(gg_optim_num_params(opt), 5);
    const char *order[] = {"conv.weight", "fc.weight", "conv.bias", "bn.weight", "dg.gates"};
    for (int k = 0; k < 5; k++) {
        cr_assert_str_eq(gg_optim_param_name(opt, k), order[k]);
        cr_assert_eq(gg_optim_param_group(opt, k), k < 2 ? 0 : 1);
    }
    gg_optim_hparams h;
    cr_assert_eq(gg_optim_get_hparams(opt, 0, &h), GG_OK);
    cr_assert_eq(h.weight_decay, 5e-4);
    cr_assert_eq(gg_optim_get_hparams(opt, 1, &h), GG_OK);
    cr_assert_eq(h.weight_decay, 0.0);
    cr_assert_eq(h.momentum, 0.9);
    /* state: momentum buffer + step for each parameter */
    cr_assert_eq(gg_optim_num_state(opt), 10);
    gg_optim_state_entry e;
    cr_assert_eq(gg_optim_state(opt, 0, &e), GG_OK);
    cr_assert_str_eq(e.name, "conv.weight.momentum_buffer");
    cr_assert_eq(gg_optim_state(opt, 1, &e), GG_OK);
    cr_assert_str_eq(e.name, "conv.weight.step");
    cr_assert_eq(gg_optim_state(opt, 10, &e), GG_ERR_INDEX);
    gg_optim_free(opt);

    /* name filter; everything decayed when the filter accepts nothing */
    opt = gg_optim_new(GG_OPTIM_ADAMW);
    const char *subs[] = {"bn.", "gates", NULL};
    hp = gg_adamw_hparams(1e-3);
    cr_assert_eq(gg_optim_add_params(opt, ps, names, 5, &hp, gg_optim_filter_name_contains, subs), 2);
    cr_assert_str_eq(gg_optim_param_name(opt, 3), "bn.weight");
    cr_assert_str_eq(gg_optim_param_name(opt, 4), "dg.gates");
    cr_assert_eq(gg_optim_num_state(opt), 15); /* exp_avg, exp_avg_sq, step */
    gg_optim_free(opt);
    opt = gg_optim_new(GG_OPTIM_ADAM);
    const char *none[] = {NULL};
    cr_assert_eq(gg_optim_add_params(opt, ps, NULL, 5, &hp, gg_optim_filter_name_contains, none), 1);
    cr_assert_eq(gg_optim_num_groups(opt), 1);
    cr_assert_str_eq(gg_optim_param_name(opt, 4), "p4");
    gg_optim_free(opt);
    for (int i = 0; i < 5; i++) gg_tensor_free(ps[i]);
}

Test(optim, learning_rates) {
    gg_tensor *a = gg_tensor_zeros(GG_SHAPE(2)), *b = gg_tensor_zeros(GG_SHAPE(2));
    gg_optim *opt = gg_optim_new(GG_OPTIM_SGD);
    gg_optim_hparams hp = gg_sgd_hparams(0.4);
    gg_optim_add_group(opt, &a, (const char *[]){"a"}, 1, &hp);
    hp.lr = 0.2;
    gg_optim_add_group(opt, &b, (const char *[]){"b"}, 1, &hp);
    cr_assert_eq(gg_optim_set_lr(opt, 1, 0.3), GG_OK);
    cr_assert_eq(gg_optim_get_lr(opt, 1), 0.3);
    cr_assert_eq(gg_optim_get_base_lr(opt, 1), 0.2);
    gg_lr_schedule s = gg_lr_step(2, 0.5);
    cr_assert_eq(gg_optim_apply_schedule(opt, &s, 5), GG_OK);
    cr_assert_eq(gg_optim_get_lr(opt, 0), 0.4 * 0.25);
    cr_assert_eq(gg_optim_get_lr(opt, 1), 0.2 * 0.25);
    cr_assert_eq(gg_optim_set_lr(opt, -1, 1.0), GG_OK);
    cr_assert_eq(gg_optim_get_lr(opt, 0), 1.0);
    cr_assert_eq(gg_optim_get_lr(opt, 1), 1.0);
    cr_assert_eq(gg_optim_set_lr(opt, 2, 1.0), GG_ERR_INDEX);
    cr_assert_eq(gg_optim_set_lr(opt, 0, -1.0), GG_ERR_ARG);
    cr_assert_eq(gg_optim_set_lr(opt, 0, NAN), GG_ERR_ARG);
    cr_assert_eq(gg_optim_get_lr(opt, 7), -1.0);
    gt_assert_error(GG_ERR_INDEX, "group 7");
    gg_optim_free(opt);
    gg_tensor_free(a), gg_tensor_free(b);
}

/* ---------------------------------------------------------------------------------------------------
 * errors */

Test(optim, errors) {
    gg_tensor *a = gg_tensor_zeros(GG_SHAPE(2, 3)), *b = gg_tensor_zeros(GG_SHAPE(3));
    gg_optim_hparams hp = gg_sgd_hparams(0.1);
    cr_assert_null(gg_optim_new(GG_OPTIM_KIND_COUNT));
    gt_assert_error(GG_ERR_ARG, "unknown optimizer kind");
    gg_optim *opt = gg_optim_new(GG_OPTIM_SGD);

    cr_assert_eq(gg_optim_add_group(NULL, &a, NULL, 1, &hp), GG_ERR_ARG);
    cr_assert_eq(gg_optim_add_group(opt, &a, NULL, 0, &hp), GG_ERR_ARG);
    gt_assert_msg_has("at least one parameter");
    cr_assert_eq(gg_optim_add_group(opt, &a, NULL, 1, NULL), GG_ERR_ARG);
    cr_assert_eq(gg_optim_add_group(opt, (gg_tensor *[]){a, a}, NULL, 2, &hp), GG_ERR_ARG);
    gt_assert_msg_has("shares elements");
    gg_tensor *row = gg_tensor_select(a, 0, 1);
    cr_assert_eq(gg_optim_add_group(opt, (gg_tensor *[]){a, row}, NULL, 2, &hp), GG_ERR_ARG);
    gt_assert_msg_has("shares elements with parameter 'p0'");
    cr_assert_eq(gg_optim_add_group(opt, (gg_tensor *[]){a, b}, (const char *[]){"x", "x"}, 2, &hp),
                 GG_ERR_ARG);
    gt_assert_msg_has("two parameters are named 'x'");
    cr_assert_eq(gg_optim_add_group(opt, &a, (const char *[]){""}, 1, &hp), GG_ERR_ARG);
    gt_assert_msg_has("has no name");
    gg_tensor *ex = gg_tensor_expand(b, GG_SHAPE(2, 3));
    cr_assert_eq(gg_optim_add_group(opt, &ex, NULL, 1, &hp), GG_ERR_ARG);
    gt_assert_msg_has("broadcast");
    gg_tensor *x = gg_tensor_zeros(GG_SHAPE(3));
    gg_requires_grad(x, true);
    gg_tensor *y = gg_mul_scalar(x, 2.0f);
    cr_assert_eq(gg_optim_add_group(opt, &y, NULL, 1, &hp), GG_ERR_ARG);
    gt_assert_msg_has("not a leaf");
    cr_assert_eq(gg_optim_add_group(opt, (gg_tensor *[]){a, NULL}, NULL, 2, &hp), GG_ERR_ARG);

    gg_optim_hparams bad = hp;
    bad.lr = -1;
    cr_assert_eq(gg_optim_add_group(opt, &a, NULL, 1, &bad), GG_ERR_ARG);
    gt_assert_msg_has("learning rate -1");
    bad = hp, bad.nesterov = true;
    cr_assert_eq(gg_optim_add_group(opt, &a, NULL, 1, &bad), GG_ERR_ARG);
    gt_assert_msg_has("Nesterov");
    bad = hp, bad.momentum = 0.9, bad.dampening = 0.1, bad.nesterov = true;
    cr_assert_eq(gg_optim_add_group(opt, &a, NULL, 1, &bad), GG_ERR_ARG);
    bad = hp, bad.weight_decay = -0.1;
    cr_assert_eq(gg_optim_add_group(opt, &a, NULL, 1, &bad), GG_ERR_ARG);
    gt_assert_msg_has("weight_decay");
    cr_assert_eq(gg_optim_num_params(opt), 0, "a failed add changed the optimizer");
    gg_optim *adam = gg_optim_new(GG_OPTIM_ADAM);
    bad = gg_adam_hparams(0.1), bad.beta2 = 1.0;
    cr_assert_eq(gg_optim_add_group(adam, &a, NULL, 1, &bad), GG_ERR_ARG);
    gt_assert_msg_has("betas");
    bad = gg_adam_hparams(0.1), bad.eps = -1;
    cr_assert_eq(gg_optim_add_group(adam, &a, NULL, 1, &bad), GG_ERR_ARG);
    gt_assert_msg_has("eps");

    /* a parameter cannot join twice; the second group fails and changes nothing */
    cr_assert_eq(gg_optim_add_group(opt, (gg_tensor *[]){a, b}, (const char *[]){"a", "b"}, 2, &hp), 0);
    cr_assert_eq(gg_optim_add_params(opt, &b, (const char *[]){"c"}, 1, &hp, gg_optim_filter_no_decay, NULL),
                 GG_ERR_ARG);
    cr_assert_eq(gg_optim_num_groups(opt), 1);

    /* a gradient of the wrong shape fails the step before any parameter changes */
    set_grad(a, NULL);
    a->grad = gg_tensor_ones(GG_SHAPE(2, 3));
    b->grad = gg_tensor_ones(GG_SHAPE(4));
    cr_assert_eq(gg_optim_step(opt), GG_ERR_SHAPE);
    gt_assert_msg_has("'b' has shape [4], parameter [3]");
    gt_assert_all(a, 0.0f);
    gg_optim_state_entry e;
    cr_assert_eq(gg_optim_state_find(opt, "a.step", &e), GG_OK);
    cr_assert_eq(*e.counter, 0);
    cr_assert_eq(gg_optim_state_find(opt, "nope", &e), GG_ERR_INDEX);
    gt_assert_msg_has("'nope'");
    cr_assert_eq(gg_optim_step(NULL), GG_ERR_ARG);
    cr_assert_null(gg_optim_param(opt, 2));
    gt_assert_error(GG_ERR_INDEX, "parameter 2 out of range");
    gg_optim_free(NULL);
    gg_optim_free(adam);
    gg_optim_free(opt);
    gg_tensor_free(ex), gg_tensor_free(row), gg_tensor_free(x), gg_tensor_free(a), gg_tensor_free(b);
    gg_tape_reset(NULL);
}

/* ---------------------------------------------------------------------------------------------------
 * schedules */

Test(schedule, by_hand) {
    gg_lr_schedule s = gg_lr_step(3, 0.1);
    const double want_step[] = {1, 1, 1, 0.1, 0.1, 0.1, 0.01};
    for (int t = 0; t < 7; t++) cr_assert_float_eq(gg_lr_at(&s, 1.0, t), want_step[t], 1e-15, "t=%d", t);
    /* warm-up 5 steps from 0.1 * 0.5, cosine over 20 steps to 0.001 */
    s = gg_lr_cosine(5, 0.1, 25, 0.001);
    cr_assert_float_eq(gg_lr_at(&s, 0.5, 0), 0.05, 1e-15);
    cr_assert_float_eq(gg_lr_at(&s, 0.5, 2), 0.05 + 0.45 * 0.4, 1e-15);
    cr_assert_float_eq(gg_lr_at(&s, 0.5, 5), 0.5, 1e-15);
    cr_assert_float_eq(gg_lr_at(&s, 0.5, 15), (0.5 + 0.001) / 2, 1e-15); /* half way: cos(pi/2) = 0 */
    cr_assert_float_eq(gg_lr_at(&s, 0.5, 25), 0.001, 1e-15);
    cr_assert_float_eq(gg_lr_at(&s, 0.5, 1000), 0.001, 1e-15);
    s = gg_lr_constant(4, 0.25);
    cr_assert_float_eq(gg_lr_at(&s, 2.0, 0), 0.5, 1e-15);
    cr_assert_float_eq(gg_lr_at(&s, 2.0, 2), 0.5 + 1.5 * 0.5, 1e-15);
    cr_assert_float_eq(gg_lr_at(&s, 2.0, 4), 2.0, 1e-15);
    cr_assert_float_eq(gg_lr_at(&s, 2.0, 99), 2.0, 1e-15);
}

static void expect_sequence(const gg_lr_schedule *s, double base, const char *golden) {
    gg_tensor *want = load_golden(golden);
    for (int64_t t = 0; t < want->numel; t++) {
        double w = gg_tensor_data(want)[t], got = gg_lr_at(s, base, t);
        cr_assert(fabs(got - w) <= 1e-7 * fabs(w), "%s t=%lld: %.10g, torch %.10g", golden, (long long)t, got,
                  w);
    }
    gg_tensor_free(want);
}

Test(schedule, against_torch) {
    gg_lr_schedule s = gg_lr_step(3, 0.1);
    expect_sequence(&s, 0.5, "lr_step");
    s = gg_lr_cosine(5, 0.1, 20, 0.001);
    expect_sequence(&s, 0.5, "lr_warmup_cosine");
}

Test(schedule, errors) {
    gg_lr_schedule s = gg_lr_step(0, 0.1);
    cr_assert_eq(gg_lr_at(&s, 1.0, 0), -1.0);
    gt_assert_error(GG_ERR_ARG, "step_size");
    s = gg_lr_cosine(10, 0.1, 10, 0.0);
    cr_assert_eq(gg_lr_at(&s, 1.0, 0), -1.0);
    gt_assert_msg_has("total_steps (10) > warmup_steps (10)");
    s = gg_lr_cosine(10, 0.0, 100, 0.0);
    cr_assert_eq(gg_lr_at(&s, 1.0, 0), -1.0);
    gt_assert_msg_has("warmup_start_factor");
    s = gg_lr_step(2, 0.5);
    cr_assert_eq(gg_lr_at(&s, 1.0, -1), -1.0);
    gt_assert_msg_has("step -1");
    cr_assert_eq(gg_lr_at(NULL, 1.0, 0), -1.0);
    gg_optim *opt = gg_optim_new(GG_OPTIM_SGD);
    s.gamma = -1;
    cr_assert_eq(gg_optim_apply_schedule(opt, &s, 0), GG_ERR_ARG);
    gg_optim_free(opt);
}

/* ---------------------------------------------------------------------------------------------------
 * gradient clipping */

Test(clip, against_torch) {
    const char *tags[] = {"l2", "inf"};
    double types[] = {2.0, INFINITY};
    for (int k = 0; k < 2; k++) {
        char name[64];
        gg_tensor *ps[3], *want[2];
        for (int i = 0; i < 2; i++) {
            snprintf(name, sizeof name, "clip_%s_g%d", tags[k], i);
            gg_tensor *g = load_golden(name);
            ps[i] = gg_tensor_zeros(g->ndim, g->shape);
            gg_requires_grad(ps[i], true);
            ps[i]->grad = g;
            snprintf(name, sizeof name, "clip_%s_out%d", tags[k], i);
            want[i] = load_golden(name);
        }
        ps[2] = gg_tensor_zeros(GG_SHAPE(3)); /* no gradient: ignored */
        snprintf(name, sizeof name, "clip_%s_norm", tags[k]);
        gg_tensor *wn = load_golden(name);
        double norm = -1;
        cr_assert_eq(gg_clip_grad_norm(ps, 3, 1.5, types[k], true, &norm), GG_OK, "%s", gg_last_error());
        cr_assert(fabs(norm - gg_tensor_data(wn)[0]) <= 1e-6 * norm, "%s norm %.9g, torch %.9g", tags[k],
                  norm, (double)gg_tensor_data(wn)[0]);
        for (int i = 0; i < 2; i++) expect_close(ps[i]->grad, want[i], 1e-6f, tags[k]);
        for (int i = 0; i < 3; i++) gg_tensor_free(ps[i]);
        gg_tensor_free(want[0]), gg_tensor_free(want[1]), gg_tensor_free(wn);
    }
}

Test(clip, by_hand) {
    gg_tensor *p = leaf(2, (float[]){0, 0});
    gg_tensor *g = gg_tensor_from_data(1, (int64_t[]){2}, (float[]){3.0f, 4.0f});
    set_grad(p, g);
    double norm;
    /* max_norm above the norm: untouched, bit for bit */
    cr_assert_eq(gg_clip_grad_norm(&p, 1, 10.0, 2.0, false, &norm), GG_OK);
    cr_assert_eq(norm, 5.0);
    gt_assert_list(p->grad, 3.0f, 4.0f);
    cr_assert_eq(gg_clip_grad_norm(&p, 1, 1.0, 2.0, false, &norm), GG_OK);
    float c = 1.0f / (5.0f + 1e-6f);
    gt_assert_list(p->grad, 3.0f * c, 4.0f * c);
    set_grad(p, g);
    cr_assert_eq(gg_clip_grad_norm(&p, 1, 1.0, 1.0, false, &norm), GG_OK);
    cr_assert_eq(norm, 7.0);
    /* strided gradient */
    gg_tensor *base = gg_tensor_from_data(1, (int64_t[]){4}, (float[]){3, 99, 4, 99});
    gg_tensor *sl = gg_tensor_slice(base, 0, 0, 4, 2);
    gg_tensor_free(p->grad);
    p->grad = gg_tensor_retain(sl);
    cr_assert_eq(gg_clip_grad_norm(&p, 1, 2.5, 2.0, false, &norm), GG_OK);
    cr_assert_eq(norm, 5.0);
    float c2 = 2.5f / (5.0f + 1e-6f);
    gt_assert_list(base, 3.0f * c2, 99.0f, 4.0f * c2, 99.0f);
    gg_tensor_free(sl), gg_tensor_free(base), gg_tensor_free(g), gg_tensor_free(p);
}

Test(clip, nonfinite_and_errors) {
    gg_tensor *p = leaf(2, (float[]){0, 0});
    gg_tensor *g = gg_tensor_from_data(1, (int64_t[]){2}, (float[]){INFINITY, 1.0f});
    set_grad(p, g);
    double norm = 123;
    cr_assert_eq(gg_clip_grad_norm(&p, 1, 1.0, 2.0, true, &norm), GG_ERR_NUMERIC);
    gt_assert_msg_has("norm of order 2");
    cr_assert_eq(norm, 123, "total_norm written on failure");
    cr_assert(isinf(gg_tensor_data(p->grad)[0]) && gg_tensor_data(p->grad)[1] == 1.0f, "gradients changed");
    /* without the check, torch's behaviour: scale by max_norm / inf = 0 -> inf * 0 = NaN, 1 * 0 = 0 */
    cr_assert_eq(gg_clip_grad_norm(&p, 1, 1.0, 2.0, false, &norm), GG_OK);
    cr_assert(isinf(norm));
    cr_assert(isnan(gg_tensor_data(p->grad)[0]));
    cr_assert_eq(gg_tensor_data(p->grad)[1], 0.0f);
    cr_assert_eq(gg_clip_grad_norm(&p, 1, -1.0, 2.0, false, NULL), GG_ERR_ARG);
    cr_assert_eq(gg_clip_grad_norm(&p, 1, 1.0, 0.0, false, NULL), GG_ERR_ARG);
    cr_assert_eq(gg_clip_grad_norm(NULL, 1, 1.0, 2.0, false, NULL), GG_ERR_ARG);
    cr_assert_eq(gg_clip_grad_norm((gg_tensor *[]){NULL}, 1, 1.0, 2.0, false, NULL), GG_ERR_ARG);
    cr_assert_eq(gg_clip_grad_norm(NULL, 0, 1.0, 2.0, false, &norm), GG_OK);
    cr_assert_eq(norm, 0.0);
    cr_assert_eq(gg_optim_clip_grad_norm(NULL, 1.0, NULL), GG_ERR_ARG);
    gg_tensor_free(g), gg_tensor_free(p);
}
