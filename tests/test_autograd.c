/* Autograd semantics: accumulation, diamonds, grad mode, detach, retain_grad, second backward,
 * in-place detection, anomaly mode, tape ownership and resets, custom ops, gradcheck itself. */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "gg_node.h"
#include "groupgrad.h"

static void teardown(void) {
    gg_tape_reset(NULL);
    gg_set_anomaly_mode(false);
    gg_set_grad_enabled(true);
    gg_clear_error();
}

TestSuite(autograd, .fini = teardown);

static gg_tensor *leaf(int ndim, const int64_t *shape, const float *v) {
    gg_tensor *t = gg_tensor_from_data(ndim, shape, v);
    cr_assert_not_null(t);
    cr_assert_eq(gg_requires_grad(t, true), GG_OK);
    return t;
}

static float at(const gg_tensor *t, int64_t i) {
    gg_tensor *c = gg_tensor_contiguous(t);
    float v = gg_tensor_data(c)[i];
    gg_tensor_free(c);
    return v;
}

Test(autograd, gradients_accumulate_across_backward_calls) {
    gg_tensor *x = leaf(GG_SHAPE(2), (float[]){1, 2});
    for (int k = 0; k < 2; k++) {
        gg_tensor *y = gg_sum(gg_mul_scalar(x, 3.0f), NULL, 0, false);
        cr_assert_eq(gg_backward(y), GG_OK, "%s", gg_last_error());
    }
    cr_assert_float_eq(at(x->grad, 0), 6.0f, 1e-6);
    cr_assert_float_eq(at(x->grad, 1), 6.0f, 1e-6);
    gg_zero_grad(x);
    cr_assert_float_eq(at(x->grad, 0), 0.0f, 0);
    gg_tensor_free(x);
}

Test(autograd, diamond_graph_sums_both_paths) {
    /* y = sum(x*x + x): dy/dx = 2x + 1, x reaches the sum along three edges */
    gg_tensor *x = leaf(GG_SHAPE(3), (float[]){1, -2, 0.5f});
    gg_tensor *y = gg_sum(gg_add(gg_mul(x, x), x), NULL, 0, false);
    cr_assert_eq(gg_backward(y), GG_OK, "%s", gg_last_error());
    cr_assert_float_eq(at(x->grad, 0), 3.0f, 1e-6);
    cr_assert_float_eq(at(x->grad, 1), -3.0f, 1e-6);
    cr_assert_float_eq(at(x->grad, 2), 2.0f, 1e-6);
    gg_tensor_free(x);
}

Test(autograd, no_grad_scope_records_nothing) {
    gg_tensor *x = leaf(GG_SHAPE(2), (float[]){1, 2});
    size_t before = gg_tape_num_nodes(NULL);
    gg_no_grad_begin();
    gg_no_grad_begin(); /* nested */
    gg_no_grad_end();
    cr_assert(!gg_is_grad_enabled());
    gg_tensor *y = gg_mul(x, x);
    gg_no_grad_end();
    cr_assert(gg_is_grad_enabled());
    cr_assert_not_null(y);
    cr_assert(!y->requires_grad);
    cr_assert_null(y->grad_fn);
    cr_assert_eq(gg_tape_num_nodes(NULL), before);
    cr_assert_neq(gg_backward(y), GG_OK);
    cr_assert_str_not_empty(strstr(gg_last_error(), "does not require grad"));
    gg_tensor_free(x);
}

Test(autograd, set_grad_enabled_returns_previous) {
    cr_assert(gg_set_grad_enabled(false));
    cr_assert(!gg_is_grad_enabled());
    cr_assert(!gg_set_grad_enabled(true));
    cr_assert(gg_is_grad_enabled());
}

Test(autograd, inputs_without_requires_grad_record_nothing) {
    gg_tensor *a = gg_tensor_ones(GG_SHAPE(2));
    size_t before = gg_tape_num_nodes(NULL);
    gg_tensor *y = gg_mul(a, a);
    cr_assert_not_null(y);
    cr_assert(!y->requires_grad);
    cr_assert_eq(gg_tape_num_nodes(NULL), before);
    gg_tensor_free(a);
}

Test(autograd, detach_shares_storage_and_stops_gradient) {
    gg_tensor *x = leaf(GG_SHAPE(2), (float[]){2, 3});
    gg_tensor *d = gg_detach(x);
    cr_assert_eq(d->storage, x->storage);
    cr_assert(!d->requires_grad);
    cr_assert(gg_is_leaf(d));
    /* y = sum(x * detach(x)): gradient is detach(x) only, not 2x */
    gg_tensor *y = gg_sum(gg_mul(x, d), NULL, 0, false);
    cr_assert_eq(gg_backward(y), GG_OK, "%s", gg_last_error());
    cr_assert_float_eq(at(x->grad, 0), 2.0f, 1e-6);
    cr_assert_float_eq(at(x->grad, 1), 3.0f, 1e-6);
    gg_tensor_free(x);
}

Test(autograd, retain_grad_keeps_intermediate_gradient) {
    gg_tensor *x = leaf(GG_SHAPE(2), (float[]){1, 2});
    gg_tensor *h = gg_mul_scalar(x, 2.0f);
    gg_tensor *k = gg_mul_scalar(x, 5.0f);
    cr_assert_eq(gg_retain_grad(h), GG_OK);
    gg_tensor *y = gg_sum(gg_add(gg_square(h), k), NULL, 0, false);
    cr_assert_eq(gg_backward(y), GG_OK, "%s", gg_last_error());
    cr_assert_not_null(h->grad);
    cr_assert_float_eq(at(h->grad, 0), 4.0f, 1e-6); /* d/dh h^2 = 2h = 4x */
    cr_assert_float_eq(at(h->grad, 1), 8.0f, 1e-6);
    cr_assert_null(k->grad, "non-leaves do not keep gradients unless asked");
    cr_assert_float_eq(at(x->grad, 0), 8.0f * 1 + 5.0f, 1e-5);
    gg_tensor_free(x);
}

Test(autograd, second_backward_without_retain_is_an_error_naming_the_op) {
    gg_tensor *x = leaf(GG_SHAPE(2), (float[]){1, 2});
    gg_tensor *y = gg_sum(gg_mul(x, x), NULL, 0, false);
    cr_assert_eq(gg_backward(y), GG_OK);
    float g0 = at(x->grad, 0);
    int st = gg_backward(y);
    cr_assert_eq(st, GG_ERR_STATE);
    cr_assert_not_null(strstr(gg_last_error(), "mul"), "%s", gg_last_error());
    cr_assert_not_null(strstr(gg_last_error(), "second time"), "%s", gg_last_error());
    cr_assert_float_eq(at(x->grad, 0), g0, 0, "a failed backward changes no gradient");
    gg_tensor_free(x);
}

Test(autograd, retain_graph_allows_second_backward) {
    gg_tensor *x = leaf(GG_SHAPE(2), (float[]){1, 2});
    gg_tensor *y = gg_sum(gg_mul(x, x), NULL, 0, false);
    cr_assert_eq(gg_backward_ex(y, NULL, true), GG_OK);
    cr_assert_eq(gg_backward(y), GG_OK, "%s", gg_last_error());
    cr_assert_float_eq(at(x->grad, 1), 8.0f, 1e-6); /* 2 * 2x */
    gg_tensor_free(x);
}

Test(autograd, second_backward_through_ops_without_saved_tensors_is_allowed) {
    /* as in PyTorch: add and sum save nothing, so nothing was freed */
    gg_tensor *x = leaf(GG_SHAPE(2), (float[]){1, 2});
    gg_tensor *y = gg_sum(gg_add_scalar(x, 1.0f), NULL, 0, false);
    cr_assert_eq(gg_backward(y), GG_OK);
    cr_assert_eq(gg_backward(y), GG_OK, "%s", gg_last_error());
    cr_assert_float_eq(at(x->grad, 0), 2.0f, 1e-6);
    gg_tensor_free(x);
}

Test(autograd, in_place_write_to_saved_tensor_is_detected) {
    gg_tensor *x = leaf(GG_SHAPE(2), (float[]){1, 2});
    gg_tensor *w = leaf(GG_SHAPE(2), (float[]){3, 4});
    gg_tensor *y = gg_sum(gg_mul(x, w), NULL, 0, false);
    cr_assert_eq(gg_tensor_set(w, (int64_t[]){0}, 10.0f), GG_OK);
    int st = gg_backward(y);
    cr_assert_eq(st, GG_ERR_STATE);
    cr_assert_not_null(strstr(gg_last_error(), "mul"), "%s", gg_last_error());
    cr_assert_not_null(strstr(gg_last_error(), "modified in place"), "%s", gg_last_error());
    cr_assert_null(x->grad, "nothing was computed");
    cr_assert_null(w->grad);
    gg_tensor_free(x);
    gg_tensor_free(w);
}

Test(autograd, in_place_write_through_a_view_is_detected) {
    gg_tensor *x = leaf(GG_SHAPE(4), (float[]){1, 2, 3, 4});
    gg_tensor *y = gg_sum(gg_mul(x, x), NULL, 0, false);
    gg_tensor *v = gg_tensor_slice(x, 0, 1, 3, 1); /* raw view sharing storage */
    cr_assert_eq(gg_tensor_fill(v, 0.0f), GG_OK);
    cr_assert_eq(gg_backward(y), GG_ERR_STATE);
    gg_tensor_free(v);
    gg_tensor_free(x);
}

Test(autograd, reset_frees_everything_and_memory_stays_flat) {
    gg_tensor *x = gg_tensor_empty(GG_SHAPE(64)), *w = gg_tensor_empty(GG_SHAPE(64));
    gg_rng rng;
    gg_rng_init(&rng, 7);
    gg_rand_normal(x, 0, 1, &rng);
    gg_rand_normal(w, 0, 1, &rng);
    gg_requires_grad(x, true);
    gg_requires_grad(w, true);
    gg_tape_reset(NULL);
    size_t live0 = 0;
    for (int step = 0; step < 300; step++) {
        gg_tensor *y = gg_sum(gg_tanh(gg_add(gg_mul(x, w), w)), NULL, 0, false);
        cr_assert_eq(gg_backward(y), GG_OK, "%s", gg_last_error());
        cr_assert_gt(gg_tape_num_nodes(NULL), 0);
        gg_tape_reset(NULL);
        cr_assert_eq(gg_tape_num_nodes(NULL), 0);
        cr_assert_eq(gg_tape_num_tensors(NULL), 0);
        if (step == 0) live0 = gg_alloc_live_bytes();
    }
    cr_assert_eq(gg_alloc_live_bytes(), live0, "live bytes grew from %zu to %zu", live0,
                 gg_alloc_live_bytes());
    gg_tensor_free(x);
    gg_tensor_free(w);
}

Test(autograd, retained_output_survives_reset_as_plain_tensor) {
    gg_tensor *x = leaf(GG_SHAPE(2), (float[]){1, 2});
    gg_tensor *y = gg_tensor_retain(gg_mul_scalar(x, 2.0f));
    gg_tape_reset(NULL);
    cr_assert_null(y->grad_fn);
    cr_assert(!y->requires_grad);
    cr_assert_float_eq(at(y, 1), 4.0f, 0);
    gg_tensor_free(y);
    gg_tensor_free(x);
}

Test(autograd, non_scalar_root_needs_a_seed) {
    gg_tensor *x = leaf(GG_SHAPE(3), (float[]){1, 2, 3});
    gg_tensor *y = gg_mul_scalar(x, 2.0f);
    cr_assert_eq(gg_backward(y), GG_ERR_SHAPE);
    cr_assert_not_null(strstr(gg_last_error(), "[3]"), "%s", gg_last_error());
    gg_tensor *bad = gg_tensor_ones(GG_SHAPE(2));
    cr_assert_eq(gg_backward_ex(y, bad, false), GG_ERR_SHAPE);
    gg_tensor *seed = gg_tensor_from_data(GG_SHAPE(3), (float[]){1, 10, 100});
    cr_assert_eq(gg_backward_ex(y, seed, false), GG_OK, "%s", gg_last_error());
    cr_assert_float_eq(at(x->grad, 2), 200.0f, 1e-4);
    gg_tensor_free(seed);
    gg_tensor_free(bad);
    gg_tensor_free(x);
}

Test(autograd, backward_of_a_leaf_seeds_its_gradient) {
    gg_tensor *x = leaf(GG_SHAPE(1), (float[]){5});
    cr_assert_eq(gg_backward(x), GG_OK);
    cr_assert_eq(gg_backward(x), GG_OK);
    cr_assert_float_eq(at(x->grad, 0), 2.0f, 0);
    gg_tensor_free(x);
}

Test(autograd, requires_grad_only_on_leaves) {
    gg_tensor *x = leaf(GG_SHAPE(2), (float[]){1, 2});
    gg_tensor *y = gg_mul_scalar(x, 2.0f);
    cr_assert_eq(gg_requires_grad(y, false), GG_ERR_STATE);
    cr_assert_not_null(strstr(gg_last_error(), "not a leaf"), "%s", gg_last_error());
    cr_assert(y->requires_grad, "a failed call changes nothing");
    gg_tensor *plain = gg_tensor_ones(GG_SHAPE(2));
    cr_assert_eq(gg_retain_grad(plain), GG_ERR_STATE);
    cr_assert_eq(gg_requires_grad(NULL, true), GG_ERR_STATE, "sticky: the pending error is kept");
    gg_clear_error();
    cr_assert_eq(gg_requires_grad(NULL, true), GG_ERR_ARG);
    gg_tensor_free(plain);
    gg_tensor_free(x);
}

Test(autograd, anomaly_mode_reports_forward_nan_by_op) {
    gg_tensor *x = leaf(GG_SHAPE(2), (float[]){-1, 2});
    gg_tensor *y = gg_log(x); /* log(-1) = NaN, silently, when anomaly mode is off */
    cr_assert_not_null(y);
    gg_set_anomaly_mode(true);
    y = gg_log(x);
    cr_assert_null(y);
    cr_assert_eq(gg_last_status(), GG_ERR_NUMERIC);
    cr_assert_not_null(strstr(gg_last_error(), "gg_log"), "%s", gg_last_error());
    cr_assert_not_null(strstr(gg_last_error(), "[2]"), "%s", gg_last_error());
    gg_tensor_free(x);
}

Test(autograd, anomaly_mode_reports_backward_inf_by_op) {
    gg_tensor *x = leaf(GG_SHAPE(2), (float[]){0, 4});
    gg_set_anomaly_mode(true);
    gg_tensor *y = gg_sum(gg_sqrt(x), NULL, 0, false); /* d sqrt(x)/dx at 0 = inf */
    cr_assert_not_null(y, "%s", gg_last_error());
    cr_assert_eq(gg_backward(y), GG_ERR_NUMERIC);
    cr_assert_not_null(strstr(gg_last_error(), "sqrt"), "%s", gg_last_error());
    gg_tensor_free(x);
}

Test(autograd, sticky_errors_propagate_through_a_chain) {
    gg_tensor *a = gg_tensor_ones(GG_SHAPE(2, 3));
    gg_tensor *b = gg_tensor_ones(GG_SHAPE(4));
    gg_tensor *y = gg_relu(gg_mul_scalar(gg_add(a, b), 2.0f));
    cr_assert_null(y);
    cr_assert_eq(gg_last_status(), GG_ERR_SHAPE);
    cr_assert_not_null(strstr(gg_last_error(), "gg_add"), "first error kept: %s", gg_last_error());
    cr_assert_not_null(strstr(gg_last_error(), "[2,3]"), "%s", gg_last_error());
    gg_tensor_free(a);
    gg_tensor_free(b);
}

/* ---- a user-defined op through gg_node.h: y = 3x with a deliberately configurable backward ---- */
static int triple_backward(gg_node *n, const gg_tensor *gout) {
    gg_tensor *g = gg_node_grad(n, 0);
    if (!g) return GG_OK;
    float scale = (float)n->fp[0];
    const float *go = gg_tensor_data(gout);
    float *gp = gg_tensor_data(g);
    for (int64_t i = 0; i < g->numel; i++) gp[i] += scale * go[i];
    return GG_OK;
}
static const gg_op_def TRIPLE_OP = {"triple", triple_backward};
static float triple_backward_scale = 3.0f;

static gg_tensor *triple(gg_tensor *x) {
    gg_tensor *c = gg_tensor_contiguous(x);
    gg_tensor *out = gg_op_output(x->ndim, x->shape, "triple");
    for (int64_t i = 0; i < x->numel; i++) gg_tensor_data(out)[i] = 3.0f * gg_tensor_data(c)[i];
    gg_tensor_free(c);
    bool failed;
    gg_node *n = gg_op_record(&TRIPLE_OP, out, 1, &x, &failed);
    if (n) n->fp[0] = triple_backward_scale;
    return gg_op_finish(out, "triple", 1, &x);
}

static gg_tensor *triple_fn(gg_tensor *const *in, void *ctx) {
    (void)ctx;
    return gg_square(triple(in[0]));
}

Test(autograd, custom_op_records_and_backpropagates) {
    gg_tensor *x = leaf(GG_SHAPE(2), (float[]){1, 2});
    triple_backward_scale = 3.0f;
    gg_tensor *y = gg_sum(triple(x), NULL, 0, false);
    cr_assert_eq(gg_backward(y), GG_OK);
    cr_assert_float_eq(at(x->grad, 0), 3.0f, 0);
    gg_tensor_free(x);
}

Test(autograd, gradcheck_passes_a_correct_op_and_catches_a_wrong_one) {
    gg_tensor *x = leaf(GG_SHAPE(2, 3), (float[]){0.5f, -1, 2, 0.25f, 1.5f, -0.75f});
    gg_gradcheck_report r;
    char msg[256];
    triple_backward_scale = 3.0f;
    cr_assert_eq(gg_gradcheck(triple_fn, NULL, 1, &x, NULL, &r), GG_OK, "%s", gg_last_error());
    cr_assert(r.passed, "%s", gg_gradcheck_describe(&r, msg, sizeof msg));
    cr_assert_eq(r.n_checked, 6);
    triple_backward_scale = 3.03f; /* a 1% error in the backward */
    cr_assert_eq(gg_gradcheck(triple_fn, NULL, 1, &x, &(gg_gradcheck_opts){.atol = 1e-4, .rtol = 1e-3}, &r),
                 GG_OK);
    cr_assert(!r.passed, "gradcheck must catch a wrong gradient: %s",
              gg_gradcheck_describe(&r, msg, sizeof msg));
    cr_assert_eq(r.worst_input, 0);
    cr_assert_gt(fabs(r.analytic - r.numeric), 1e-3);
    triple_backward_scale = 3.0f;
    gg_tensor_free(x);
}

Test(autograd, gradcheck_leaves_caller_state_alone) {
    gg_tensor *x = leaf(GG_SHAPE(2), (float[]){1, 2});
    gg_tensor *keep = gg_mul_scalar(x, 1.0f); /* something on the caller's tape */
    size_t nodes = gg_tape_num_nodes(NULL), tensors = gg_tape_num_tensors(NULL);
    gg_tensor *y = gg_sum(gg_mul_scalar(x, 4.0f), NULL, 0, false);
    cr_assert_eq(gg_backward(y), GG_OK);
    gg_tensor *grad_before = x->grad;
    nodes = gg_tape_num_nodes(NULL), tensors = gg_tape_num_tensors(NULL);
    gg_gradcheck_report r;
    cr_assert_eq(gg_gradcheck(triple_fn, NULL, 1, &x, NULL, &r), GG_OK);
    cr_assert(r.passed);
    cr_assert_eq(x->grad, grad_before);
    cr_assert_float_eq(at(x->grad, 0), 4.0f, 0);
    cr_assert_eq(gg_tape_num_nodes(NULL), nodes);
    cr_assert_eq(gg_tape_num_tensors(NULL), tensors);
    cr_assert_float_eq(at(x, 1), 2.0f, 0, "inputs restored exactly");
    (void)keep;
    gg_tensor_free(x);
}

Test(autograd, gradcheck_rejects_expanded_inputs) {
    gg_tensor *b = gg_tensor_ones(GG_SHAPE(1, 3));
    gg_tensor *e = gg_tensor_expand(b, GG_SHAPE(4, 3));
    gg_requires_grad(e, true);
    gg_gradcheck_report r;
    cr_assert_eq(gg_gradcheck(triple_fn, NULL, 1, &e, NULL, &r), GG_ERR_ARG);
    gg_tensor_free(e);
    gg_tensor_free(b);
}

Test(autograd, separate_tapes_are_independent) {
    gg_tensor *x = leaf(GG_SHAPE(2), (float[]){1, 2});
    gg_tape *mine = gg_tape_new();
    gg_tape *prev = gg_tape_set_current(mine);
    gg_tensor *y = gg_sum(gg_mul(x, x), NULL, 0, false);
    cr_assert_eq(gg_tape_num_nodes(mine), 2);
    gg_tape_set_current(prev);
    cr_assert_eq(gg_tape_num_nodes(NULL), 0);
    cr_assert_eq(gg_backward(y), GG_OK);
    cr_assert_float_eq(at(x->grad, 1), 4.0f, 0);
    gg_tape_free(mine);
    gg_tensor_free(x);
}

static void *thread_body(void *arg) {
    gg_tensor *x = arg;
    gg_tensor *y = gg_sum(gg_mul_scalar(x, 2.0f), NULL, 0, false);
    int st = y ? gg_backward_ex(y, NULL, false) : -1;
    size_t n = gg_tape_num_nodes(NULL);
    gg_tape_reset(NULL);
    return (void *)(intptr_t)(st == GG_OK && n == 2);
}

Test(autograd, each_thread_records_on_its_own_tape) {
    gg_tensor *x = leaf(GG_SHAPE(2), (float[]){1, 2});
    gg_tensor *mine = gg_mul(x, x);
    size_t before = gg_tape_num_nodes(NULL);
    pthread_t th;
    void *ok;
    pthread_create(&th, NULL, thread_body, x);
    pthread_join(th, &ok);
    cr_assert(ok, "the other thread's tape held exactly its own two nodes");
    cr_assert_eq(gg_tape_num_nodes(NULL), before);
    cr_assert_float_eq(at(x->grad, 0), 2.0f, 0);
    (void)mine;
    gg_tensor_free(x);
}
