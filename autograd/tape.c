/* Tapes (owners of op outputs and graph nodes), grad mode, recording, and gradient accumulators. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "gg_autograd.h"
#include "gg_internal.h"
#include "gg_node.h"

struct gg_tape {
    gg_tensor **tensors; /* one counted reference each */
    size_t n_tensors, cap_tensors;
    gg_node **nodes;
    size_t n_nodes, cap_nodes;
};

static _Thread_local gg_tape *current_tape;
static _Thread_local gg_tape *default_tape;
static _Thread_local int no_grad_depth;
static _Thread_local bool grad_disabled;
static atomic_bool anomaly_on;
static atomic_size_t node_seq;
static pthread_key_t default_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void free_default_tape(void *p) { gg_tape_free(p); }
static void make_key(void) { pthread_key_create(&default_key, free_default_tape); }

gg_tape *gg_tape_new(void) {
    gg_tape *t = calloc(1, sizeof *t);
    if (!t) GG_FAIL(GG_ERR_NOMEM, "cannot allocate a tape");
    return t;
}

gg_tape *gg_tape_current(void) {
    if (current_tape) return current_tape;
    if (!default_tape) {
        default_tape = gg_tape_new();
        if (!default_tape) return NULL;
        pthread_once(&key_once, make_key);
        pthread_setspecific(default_key, default_tape);
    }
    return default_tape;
}

gg_tape *gg_tape_set_current(gg_tape *tape) {
    gg_tape *prev = gg_tape_current();
    current_tape = tape;
    return prev;
}

static void release_node(gg_node *n) {
    for (int i = 0; i < n->n_saved; i++) gg_tensor_free(n->saved[i]);
    n->n_saved = 0;
    gg_tensor_free(n->out_grad);
    n->out_grad = NULL;
}

void gg_tape_reset(gg_tape *tape) {
    if (!tape) tape = gg_tape_current();
    if (!tape) return;
    for (size_t i = 0; i < tape->n_nodes; i++) {
        gg_node *n = tape->nodes[i];
        release_node(n);
        if (n->out && n->out->grad_fn == n) { /* a retained output survives as a plain tensor */
            n->out->grad_fn = NULL;
            n->out->requires_grad = false;
        }
        for (int k = 0; k < n->n_in; k++) gg_tensor_free(n->in[k]);
        if (n->in != n->in_inline) free(n->in);
        gg__free_untracked(n);
    }
    tape->n_nodes = 0;
    for (size_t i = 0; i < tape->n_tensors; i++) gg_tensor_free(tape->tensors[i]);
    tape->n_tensors = 0;
}

void gg_tape_free(gg_tape *tape) {
    if (!tape) return;
    gg_tape_reset(tape);
    free(tape->tensors);
    free(tape->nodes);
    if (tape == default_tape) default_tape = NULL;
    if (tape == current_tape) current_tape = NULL;
    free(tape);
}

size_t gg__tape_nodes_count(const gg_tape *tape) { return tape->n_nodes; }
gg_node *const *gg__tape_nodes(const gg_tape *tape) { return tape->nodes; }

size_t gg_tape_num_nodes(const gg_tape *tape) {
    if (!tape) tape = gg_tape_current();
    return tape ? tape->n_nodes : 0;
}

size_t gg_tape_num_tensors(const gg_tape *tape) {
    if (!tape) tape = gg_tape_current();
    return tape ? tape->n_tensors : 0;
}

static int grow(void **arr, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return GG_OK;
    size_t c = *cap ? *cap * 2 : 256;
    while (c < need) c *= 2;
    void *p = realloc(*arr, c * elem);
    if (!p) return GG_ERR_NOMEM;
    *arr = p;
    *cap = c;
    return GG_OK;
}

gg_tensor *gg_op_adopt(gg_tensor *t) {
    if (!t) return NULL;
    gg_tape *tape = gg_tape_current();
    if (!tape || grow((void **)&tape->tensors, &tape->cap_tensors, tape->n_tensors + 1, sizeof(gg_tensor *))) {
        gg_tensor_free(t);
        GG_FAIL(GG_ERR_NOMEM, "cannot grow the tape");
        return NULL;
    }
    tape->tensors[tape->n_tensors++] = t;
    return t;
}

gg_tensor *gg_op_output(int ndim, const int64_t *shape, const char *func) {
    gg_tensor *t = gg__alloc_tensor(ndim, shape, func);
    return gg_op_adopt(t);
}

/* ---- grad mode, anomaly mode ---- */

bool gg_set_grad_enabled(bool enabled) {
    bool prev = !grad_disabled;
    grad_disabled = !enabled;
    return prev;
}
bool gg_is_grad_enabled(void) { return !grad_disabled && no_grad_depth == 0; }
void gg_no_grad_begin(void) { no_grad_depth++; }
void gg_no_grad_end(void) {
    if (no_grad_depth > 0) no_grad_depth--;
}
void gg_set_anomaly_mode(bool enabled) { atomic_store(&anomaly_on, enabled); }
bool gg_anomaly_mode(void) { return atomic_load(&anomaly_on); }

/* ---- recording ---- */

bool gg_op_needs_grad(int n_in, gg_tensor *const *in) {
    if (!gg_is_grad_enabled()) return false;
    for (int i = 0; i < n_in; i++)
        if (in[i] && in[i]->requires_grad) return true;
    return false;
}

gg_node *gg_op_record(const gg_op_def *op, gg_tensor *out, int n_in, gg_tensor *const *in, bool *failed) {
    if (failed) *failed = false;
    if (!gg_op_needs_grad(n_in, in)) return NULL;
    gg_tape *tape = gg_tape_current();
    gg_node *n = gg__alloc_untracked(sizeof *n);
    if (n) memset(n, 0, sizeof *n);
    gg_tensor **ins = n_in <= GG_NODE_INLINE_INPUTS ? (n ? n->in_inline : NULL) : malloc((size_t)n_in * sizeof *ins);
    if (!tape || !n || !ins ||
        grow((void **)&tape->nodes, &tape->cap_nodes, tape->n_nodes + 1, sizeof(gg_node *))) {
        if (n && ins != n->in_inline) free(ins);
        gg__free_untracked(n);
        if (failed) *failed = true;
        gg_error_set(GG_ERR_NOMEM, op->name, "cannot record a graph node");
        return NULL;
    }
    n->op = op;
    n->out = out;
    n->n_in = n_in;
    n->in = ins;
    for (int i = 0; i < n_in; i++) ins[i] = gg_tensor_retain(in[i]);
    n->seq = atomic_fetch_add(&node_seq, 1);
    tape->nodes[tape->n_nodes++] = n;
    out->grad_fn = n;
    out->requires_grad = true;
    return n;
}

int gg_node_save(gg_node *node, gg_tensor *t) {
    if (!node) return GG_OK;
    if (node->n_saved >= GG_NODE_MAX_SAVED)
        return gg_error_set(GG_ERR_STATE, node->op->name, "more than %d saved tensors", GG_NODE_MAX_SAVED);
    node->saved[node->n_saved] = gg_tensor_retain(t);
    node->saved_version[node->n_saved] = t->storage->version;
    node->n_saved++;
    node->had_saved = true;
    return GG_OK;
}

static bool all_finite(const gg_tensor *t) {
    if (t->numel == 0) return true;
    gg_tensor *c = gg_tensor_contiguous(t);
    if (!c) return true;
    const float *p = gg_tensor_data(c);
    bool ok = true;
    for (int64_t i = 0; i < c->numel; i++)
        if (!isfinite(p[i])) {
            ok = false;
            break;
        }
    gg_tensor_free(c);
    return ok;
}

static void describe_inputs(char *buf, size_t size, int n_in, gg_tensor *const *in) {
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; i < n_in && n + 2 < size; i++) {
        char s[GG_SHAPE_STR_MAX];
        if (in[i]) GG_SHAPE_STR(in[i], s);
        else snprintf(s, sizeof s, "none");
        n += (size_t)snprintf(buf + n, size - n, "%s%s", i ? ", " : "", s);
    }
}

gg_tensor *gg_op_finish(gg_tensor *out, const char *func, int n_in, gg_tensor *const *in) {
    if (!out) return NULL;
    if (gg_anomaly_mode() && !all_finite(out)) {
        char ins[512], s[GG_SHAPE_STR_MAX];
        describe_inputs(ins, sizeof ins, n_in, in);
        gg_error_set(GG_ERR_NUMERIC, func, "anomaly: forward produced NaN or Inf (output %s, inputs %s)",
                     GG_SHAPE_STR(out, s), ins);
        return NULL;
    }
    return out;
}

bool gg_node_needs_grad(const gg_node *node, int i) {
    return node && i >= 0 && i < node->n_in && node->in[i] && node->in[i]->requires_grad;
}

gg_tensor *gg_node_grad(gg_node *node, int i) {
    if (!gg_node_needs_grad(node, i)) return NULL;
    gg_tensor *x = node->in[i];
    gg_tensor **slot = x->grad_fn ? &x->grad_fn->out_grad : &x->grad;
    if (!*slot) *slot = gg_tensor_zeros(x->ndim, x->shape);
    return *slot;
}

int gg_accumulate_reduced(gg_tensor *dst, const gg_tensor *src) {
    char a[GG_SHAPE_STR_MAX], b[GG_SHAPE_STR_MAX];
    if (!dst || !src) return gg__null_arg(__func__, dst ? "src" : "dst");
    if (!gg_tensor_is_contiguous(dst) || dst->ndim > src->ndim)
        return GG_FAIL(GG_ERR_SHAPE, "cannot reduce %s into %s", GG_SHAPE_STR(src, a), GG_SHAPE_STR(dst, b));
    int lead = src->ndim - dst->ndim;
    int64_t dstride[GG_MAX_DIMS];
    for (int d = 0; d < src->ndim; d++) {
        int dd = d - lead;
        if (dd < 0 || (dst->shape[dd] == 1 && src->shape[d] != 1)) {
            dstride[d] = 0;
        } else if (dst->shape[dd] == src->shape[d]) {
            dstride[d] = dst->stride[dd];
        } else {
            return GG_FAIL(GG_ERR_SHAPE, "gradient %s does not reduce to %s", GG_SHAPE_STR(src, a),
                           GG_SHAPE_STR(dst, b));
        }
    }
    if (src->numel == 0) return GG_OK;
    float *dp = gg_tensor_data(dst);
    const float *sp = gg_tensor_data(src);
    int nd = src->ndim;
    if (src->numel == dst->numel && gg_tensor_is_contiguous(src)) { /* nothing reduced: plain add */
        for (int64_t i = 0; i < dst->numel; i++) dp[i] += sp[i];
        return GG_OK;
    }
    /* sum into a double buffer of dst's size, then add once: every reduced element is summed in double */
    double *acc = calloc((size_t)dst->numel, sizeof *acc);
    if (!acc) return GG_FAIL(GG_ERR_NOMEM, "cannot allocate %lld doubles", (long long)dst->numel);
    int64_t idx[GG_MAX_DIMS] = {0};
    int64_t inner = src->shape[nd - 1], ss = src->stride[nd - 1], ds = dstride[nd - 1];
    for (;;) {
        int64_t so = 0, doff = 0;
        for (int d = 0; d < nd - 1; d++) {
            so += idx[d] * src->stride[d];
            doff += idx[d] * dstride[d];
        }
        double *q = acc + doff;
        const float *p = sp + so;
        if (ds == 0) {
            double sum = 0;
            for (int64_t i = 0; i < inner; i++) sum += p[i * ss];
            q[0] += sum;
        } else {
            for (int64_t i = 0; i < inner; i++) q[i * ds] += p[i * ss];
        }
        int d = nd - 2;
        for (; d >= 0; d--) {
            if (++idx[d] < src->shape[d]) break;
            idx[d] = 0;
        }
        if (d < 0) break;
    }
    for (int64_t i = 0; i < dst->numel; i++) dp[i] += (float)acc[i];
    free(acc);
    return GG_OK;
}

/* ---- leaves ---- */

int gg_requires_grad(gg_tensor *t, bool requires) {
    char s[GG_SHAPE_STR_MAX];
    GG_CHECK_ARG(t, gg_last_status());
    if (t->grad_fn)
        return GG_FAIL(GG_ERR_STATE,
                       "tensor %s is the output of %s, not a leaf: only leaves can change requires_grad "
                       "(use gg_detach)",
                       GG_SHAPE_STR(t, s), t->grad_fn->op->name);
    t->requires_grad = requires;
    return GG_OK;
}

int gg_retain_grad(gg_tensor *t) {
    char s[GG_SHAPE_STR_MAX];
    GG_CHECK_ARG(t, gg_last_status());
    if (!t->requires_grad)
        return GG_FAIL(GG_ERR_STATE, "tensor %s does not require grad", GG_SHAPE_STR(t, s));
    if (t->grad_fn) t->retains_grad = true; /* leaves keep their gradient anyway */
    return GG_OK;
}

void gg_zero_grad(gg_tensor *t) {
    if (t && t->grad) gg_tensor_fill(t->grad, 0.0f);
}

bool gg_is_leaf(const gg_tensor *t) { return t && !t->grad_fn; }

gg_tensor *gg_detach(const gg_tensor *t) {
    GG_CHECK_ARG(t, NULL);
    return gg_op_adopt(gg__view_header(t, t->ndim, t->shape, t->stride, t->offset));
}
