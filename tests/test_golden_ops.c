/* Replays the PyTorch golden cases written by scripts/gen_ops_golden.py: forward output and the
 * gradient of sum(c * out) w.r.t. every input, compared with float32 tolerances. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "groupgrad.h"

typedef gg_tensor *(*op_fn)(gg_tensor **in);

static gg_tensor *f_add(gg_tensor **in) { return gg_add(in[0], in[1]); }
static gg_tensor *f_sub(gg_tensor **in) { return gg_sub(in[0], in[1]); }
static gg_tensor *f_mul(gg_tensor **in) { return gg_mul(in[0], in[1]); }
static gg_tensor *f_div(gg_tensor **in) { return gg_div(in[0], in[1]); }
static gg_tensor *f_exp(gg_tensor **in) { return gg_exp(in[0]); }
static gg_tensor *f_log(gg_tensor **in) { return gg_log(in[0]); }
static gg_tensor *f_sqrt(gg_tensor **in) { return gg_sqrt(in[0]); }
static gg_tensor *f_pow(gg_tensor **in) { return gg_pow(in[0], 2.5f); }
static gg_tensor *f_abs(gg_tensor **in) { return gg_abs(in[0]); }
static gg_tensor *f_relu(gg_tensor **in) { return gg_relu(in[0]); }
static gg_tensor *f_leaky(gg_tensor **in) { return gg_leaky_relu(in[0], 0.1f); }
static gg_tensor *f_sigmoid(gg_tensor **in) { return gg_sigmoid(in[0]); }
static gg_tensor *f_tanh(gg_tensor **in) { return gg_tanh(in[0]); }
static gg_tensor *f_clamp(gg_tensor **in) { return gg_clamp(in[0], -0.5f, 0.5f); }
static gg_tensor *f_sum(gg_tensor **in) { return gg_sum(in[0], (int[]){1}, 1, true); }
static gg_tensor *f_mean(gg_tensor **in) { return gg_mean(in[0], (int[]){0, 2}, 2, false); }
static gg_tensor *f_max(gg_tensor **in) { return gg_max(in[0], (int[]){1}, 1, false); }
static gg_tensor *f_min(gg_tensor **in) { return gg_min(in[0], (int[]){0}, 1, false); }
static gg_tensor *f_var(gg_tensor **in) { return gg_var(in[0], (int[]){1}, 1, 1, false); }
static gg_tensor *f_softmax(gg_tensor **in) { return gg_softmax(in[0], 1); }
static gg_tensor *f_log_softmax(gg_tensor **in) { return gg_log_softmax(in[0], 0); }
static gg_tensor *f_matmul(gg_tensor **in) { return gg_matmul(in[0], in[1]); }
static gg_tensor *f_linear(gg_tensor **in) { return gg_linear(in[0], in[1], in[2]); }
static gg_tensor *f_kron(gg_tensor **in) { return gg_kron(in[0], in[1]); }
static gg_tensor *f_concat(gg_tensor **in) { return gg_concat(in, 2, 1); }
static gg_tensor *f_stack(gg_tensor **in) { return gg_stack(in, 2, 0); }
static gg_tensor *f_pad(gg_tensor **in) { return gg_pad(in[0], (int64_t[]){1, 2, 0, 1}, 4, 0.5f); }
static gg_tensor *f_permute(gg_tensor **in) { return gg_permute(in[0], (int[]){2, 0, 1}); }
static gg_tensor *f_slice(gg_tensor **in) { return gg_slice(in[0], 1, 1, 6, 2); }

static gg_tensor *cross_entropy(gg_tensor **in, gg_reduction red, float ls) {
    int32_t labels[64];
    int64_t n = in[1]->numel;
    for (int64_t i = 0; i < n && i < 64; i++) labels[i] = (int32_t)gg_tensor_data(in[1])[i];
    return gg_cross_entropy(in[0], labels, n, red, ls);
}
static gg_tensor *f_ce_mean0(gg_tensor **in) { return cross_entropy(in, GG_REDUCE_MEAN, 0.0f); }
static gg_tensor *f_ce_mean1(gg_tensor **in) { return cross_entropy(in, GG_REDUCE_MEAN, 0.1f); }
static gg_tensor *f_ce_sum0(gg_tensor **in) { return cross_entropy(in, GG_REDUCE_SUM, 0.0f); }
static gg_tensor *f_ce_sum1(gg_tensor **in) { return cross_entropy(in, GG_REDUCE_SUM, 0.1f); }
static gg_tensor *f_ce_none0(gg_tensor **in) { return cross_entropy(in, GG_REDUCE_NONE, 0.0f); }
static gg_tensor *f_ce_none1(gg_tensor **in) { return cross_entropy(in, GG_REDUCE_NONE, 0.1f); }

typedef struct golden_case {
    const char *name;
    op_fn fn;
    int n_in;
    unsigned grad_mask; /* bit i: input i gets a gradient */
} golden_case;

static golden_case cases[] = {
    {"add_bcast", f_add, 2, 3},        {"sub_bcast", f_sub, 2, 3},
    {"mul_bcast", f_mul, 2, 3},        {"div", f_div, 2, 3},
    {"exp", f_exp, 1, 1},              {"log", f_log, 1, 1},
    {"sqrt", f_sqrt, 1, 1},            {"pow", f_pow, 1, 1},
    {"abs", f_abs, 1, 1},              {"relu", f_relu, 1, 1},
    {"leaky_relu", f_leaky, 1, 1},     {"sigmoid", f_sigmoid, 1, 1},
    {"tanh", f_tanh, 1, 1},            {"clamp", f_clamp, 1, 1},
    {"sum_axis1_keep", f_sum, 1, 1},   {"mean_axes02", f_mean, 1, 1},
    {"max_axis1", f_max, 1, 1},        {"min_axis0", f_min, 1, 1},
    {"var_axis1", f_var, 1, 1},        {"softmax_dim1", f_softmax, 1, 1},
    {"log_softmax_dim0", f_log_softmax, 1, 1},
    {"matmul_batched", f_matmul, 2, 3}, {"matmul_bcast_batch", f_matmul, 2, 3},
    {"linear", f_linear, 3, 7},        {"kron", f_kron, 2, 3},
    {"concat", f_concat, 2, 3},        {"stack", f_stack, 2, 3},
    {"pad", f_pad, 1, 1},              {"permute", f_permute, 1, 1},
    {"slice_step", f_slice, 1, 1},     {"ce_mean_ls0", f_ce_mean0, 2, 1},
    {"ce_mean_ls1", f_ce_mean1, 2, 1}, {"ce_sum_ls0", f_ce_sum0, 2, 1},
    {"ce_sum_ls1", f_ce_sum1, 2, 1},   {"ce_none_ls0", f_ce_none0, 2, 1},
    {"ce_none_ls1", f_ce_none1, 2, 1},
};

static gg_tensor *load(const char *name, const char *suffix) {
    char path[512];
    const char *dir = getenv("GG_TEST_DATA");
    snprintf(path, sizeof path, "%s/golden/ops/%s_%s.npy", dir ? dir : "tests/data", name, suffix);
    gg_tensor *t = gg_npy_load(path);
    cr_assert_not_null(t, "%s", gg_last_error());
    return t;
}

static void expect_close(const gg_tensor *got, const gg_tensor *want, const char *what, const char *name) {
    cr_assert_not_null(got, "%s %s: missing (%s)", name, what, gg_last_error());
    cr_assert(gg_tensor_same_shape(got, want), "%s %s: shape mismatch", name, what);
    gg_tensor *g = gg_tensor_contiguous(got);
    const float *a = gg_tensor_data(g), *b = gg_tensor_data(want);
    for (int64_t i = 0; i < want->numel; i++)
        cr_assert(fabsf(a[i] - b[i]) <= 1e-5f + 1e-4f * fabsf(b[i]), "%s %s[%lld]: got %.8g, PyTorch %.8g",
                  name, what, (long long)i, a[i], b[i]);
    gg_tensor_free(g);
}

/* Criterion may run each case in a freshly started worker, where pointers taken in this process are not
 * valid: the parameter is an index into the static table. */
#define N_CASES ((int)(sizeof cases / sizeof cases[0]))
static int case_index[N_CASES];

ParameterizedTestParameters(golden, ops) {
    for (int i = 0; i < N_CASES; i++) case_index[i] = i;
    return cr_make_param_array(int, case_index, N_CASES);
}

ParameterizedTest(int *index, golden, ops) {
    const golden_case *gc = &cases[*index];
    gg_tensor *in[4] = {0};
    char suffix[16];
    for (int i = 0; i < gc->n_in; i++) {
        snprintf(suffix, sizeof suffix, "in%d", i);
        in[i] = load(gc->name, suffix);
        if (gc->grad_mask & (1u << i)) gg_requires_grad(in[i], true);
    }
    gg_tensor *c = load(gc->name, "c"), *want = load(gc->name, "out");
    gg_tensor *out = gc->fn(in);
    expect_close(out, want, "forward", gc->name);
    cr_assert_eq(gg_backward_ex(out, c, false), GG_OK, "%s: %s", gc->name, gg_last_error());
    for (int i = 0; i < gc->n_in; i++) {
        if (!(gc->grad_mask & (1u << i))) continue;
        snprintf(suffix, sizeof suffix, "grad%d", i);
        gg_tensor *g = load(gc->name, suffix);
        expect_close(in[i]->grad, g, suffix, gc->name);
        gg_tensor_free(g);
    }
    gg_tape_reset(NULL);
    for (int i = 0; i < gc->n_in; i++) gg_tensor_free(in[i]);
    gg_tensor_free(c);
    gg_tensor_free(want);
}
