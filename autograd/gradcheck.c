/* gg_gradcheck: tape gradients against central finite differences of a random projection. */
#include <math.h>
#include <stdlib.h>

#include "gg_autograd.h"
#include "gg_internal.h"
#include "gg_rng.h"

/* <c, y> in double. */
static double project(const gg_tensor *c, const gg_tensor *y) {
    gg_tensor *yc = gg_tensor_contiguous(y);
    if (!yc) return NAN;
    const float *cp = gg_tensor_data(c), *yp = gg_tensor_data(yc);
    double s = 0;
    for (int64_t i = 0; i < c->numel; i++) s += (double)cp[i] * (double)yp[i];
    gg_tensor_free(yc);
    return s;
}

/* Evaluate <c, f(inputs)> without recording; NAN (error recorded) if f fails. */
static double eval(gg_gradcheck_fn f, void *ctx, gg_tensor *const *inputs, const gg_tensor *c,
                   gg_tape *tape) {
    gg_no_grad_begin();
    gg_tensor *y = f(inputs, ctx);
    double v = (y && gg_tensor_same_shape(y, c)) ? project(c, y) : NAN;
    gg_no_grad_end();
    gg_tape_reset(tape);
    return v;
}

int gg_gradcheck(gg_gradcheck_fn f, void *ctx, int n_inputs, gg_tensor *const *inputs,
                 const gg_gradcheck_opts *opts, gg_gradcheck_report *report) {
    char s[GG_SHAPE_STR_MAX];
    if (!f || !report || n_inputs < 0 || (n_inputs > 0 && !inputs))
        return GG_FAIL(GG_ERR_ARG, "need a function, inputs and a report");
    for (int i = 0; i < n_inputs; i++) {
        if (!inputs[i]) return GG_FAIL(GG_ERR_ARG, "input %d is NULL", i);
        for (int d = 0; d < inputs[i]->ndim; d++)
            if (inputs[i]->stride[d] == 0 && inputs[i]->shape[d] > 1)
                return GG_FAIL(GG_ERR_ARG, "input %d %s is expanded (stride 0): perturbing one element "
                               "would change several", i, GG_SHAPE_STR(inputs[i], s));
    }
    gg_gradcheck_opts o = {.eps = 1e-3, .atol = 1e-3, .rtol = 1e-2, .seed = 1};
    if (opts) {
        if (opts->eps > 0) o.eps = opts->eps;
        if (opts->atol >= 0) o.atol = opts->atol;
        if (opts->rtol >= 0) o.rtol = opts->rtol;
        o.seed = opts->seed;
    }
    *report = (gg_gradcheck_report){.passed = true, .worst_input = -1, .worst_index = -1,
                                    .max_violation = -INFINITY};
    gg_tape *tape = gg_tape_new();
    gg_tensor **saved_grads = calloc((size_t)n_inputs + 1, sizeof *saved_grads);
    if (!tape || !saved_grads) {
        gg_tape_free(tape);
        free(saved_grads);
        return GG_FAIL(GG_ERR_NOMEM, "out of memory");
    }
    gg_tape *prev = gg_tape_set_current(tape);
    for (int i = 0; i < n_inputs; i++) saved_grads[i] = inputs[i]->grad, inputs[i]->grad = NULL;
    bool grad_was = gg_set_grad_enabled(true);
    int depth_guard = gg_is_grad_enabled(); /* false inside a caller's no-grad scope */

    int st = GG_OK;
    gg_tensor *c = NULL;
    gg_tensor *y = depth_guard ? f(inputs, ctx) : NULL;
    if (!depth_guard) st = GG_FAIL(GG_ERR_STATE, "called inside a no-grad scope");
    else if (!y) st = gg_last_status() ? gg_last_status() : GG_FAIL(GG_ERR_STATE, "function returned NULL");
    else if (!y->requires_grad) st = GG_FAIL(GG_ERR_STATE, "output %s does not require grad: no input requires grad or f breaks the graph", GG_SHAPE_STR(y, s));
    if (!st) {
        gg_rng rng;
        gg_rng_init(&rng, o.seed);
        c = gg_tensor_empty(y->ndim, y->shape);
        st = c ? gg_rand_uniform(c, -1.0f, 1.0f, &rng) : gg_last_status();
    }
    if (!st) st = gg_backward_ex(y, c, false);
    gg_tape_reset(tape);
    for (int i = 0; i < n_inputs && !st; i++) {
        gg_tensor *x = inputs[i];
        if (!x->requires_grad) continue;
        gg_tensor *g = x->grad; /* NULL: the output does not depend on x; analytic gradient 0 */
        int64_t idx[GG_MAX_DIMS] = {0};
        for (int64_t j = 0; j < x->numel && !st; j++) {
            float *p = x->storage->data + gg_tensor_offset_of(x, idx);
            float orig = *p;
            *p = (float)(orig + o.eps);
            double lp = eval(f, ctx, inputs, c, tape);
            *p = (float)(orig - o.eps);
            double lm = eval(f, ctx, inputs, c, tape);
            *p = orig;
            if (isnan(lp) || isnan(lm)) {
                st = gg_last_status() ? gg_last_status() : GG_FAIL(GG_ERR_NUMERIC, "f failed while perturbed");
                break;
            }
            double num = (lp - lm) / (2 * o.eps);
            double ana = g ? (double)gg_tensor_data(g)[j] : 0.0;
            double viol = fabs(ana - num) - (o.atol + o.rtol * fabs(num));
            if (viol > report->max_violation) {
                report->max_violation = viol;
                report->worst_input = i;
                report->worst_index = j;
                report->analytic = ana;
                report->numeric = num;
            }
            report->n_checked++;
            for (int d = x->ndim - 1; d >= 0; d--) {
                if (++idx[d] < x->shape[d]) break;
                idx[d] = 0;
            }
        }
    }
    report->passed = !st && report->max_violation <= 0;
    for (int i = 0; i < n_inputs; i++) {
        gg_tensor_free(inputs[i]->grad);
        inputs[i]->grad = saved_grads[i];
    }
    gg_set_grad_enabled(grad_was);
    gg_tensor_free(c);
    gg_tape_set_current(prev == tape ? NULL : prev);
    gg_tape_free(tape);
    free(saved_grads);
    return st;
}

const char *gg_gradcheck_describe(const gg_gradcheck_report *r, char *buf, size_t size) {
    if (!buf || !size) return buf;
    if (!r) {
        snprintf(buf, size, "(no report)");
        return buf;
    }
    snprintf(buf, size,
             "%s: %lld elements checked; worst: input %d, element %lld, analytic %.6g, numeric %.6g "
             "(violation %.3g)",
             r->passed ? "passed" : "FAILED", (long long)r->n_checked, r->worst_input,
             (long long)r->worst_index, r->analytic, r->numeric, r->max_violation);
    return buf;
}
