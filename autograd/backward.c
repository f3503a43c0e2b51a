/* The backward pass: collect the nodes reachable from the root, check them all, then run their
 * backward functions in reverse order of recording. */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "gg_autograd.h"
#include "gg_internal.h"
#include "gg_node.h"

static int by_seq_desc(const void *a, const void *b) {
    const gg_node *x = *(gg_node *const *)a, *y = *(gg_node *const *)b;
    return x->seq < y->seq ? 1 : (x->seq > y->seq ? -1 : 0);
}

static atomic_uint_fast64_t visit_epoch;

/* Depth-first collection of the nodes reachable from root, each once (marked with this pass's epoch).
 * Returns the count, or -1 when out of memory. */
static long collect(gg_node *root, gg_node ***out) {
    uint64_t epoch = atomic_fetch_add(&visit_epoch, 1) + 1;
    size_t cap = 64, n = 0, top = 0, scap = 64;
    gg_node **list = malloc(cap * sizeof *list), **stack = malloc(scap * sizeof *stack);
    if (!list || !stack) goto oom;
    root->visit = epoch;
    stack[top++] = root;
    while (top) {
        gg_node *v = stack[--top];
        if (n + 1 > cap) {
            gg_node **p = realloc(list, (cap *= 2) * sizeof *list);
            if (!p) goto oom;
            list = p;
        }
        list[n++] = v;
        for (int i = 0; i < v->n_in; i++) {
            gg_tensor *x = v->in[i];
            if (!x || !x->grad_fn || !x->requires_grad || x->grad_fn->visit == epoch) continue;
            x->grad_fn->visit = epoch;
            if (top + 1 > scap) {
                gg_node **p = realloc(stack, (scap *= 2) * sizeof *stack);
                if (!p) goto oom;
                stack = p;
            }
            stack[top++] = x->grad_fn;
        }
    }
    free(stack);
    *out = list;
    return (long)n;
oom:
    free(list);
    free(stack);
    return -1;
}

/* Reverse recording order. When every collected node is on the current tape (the usual case) that is
 * the tape's own order read backwards, found in one pass; otherwise sort by sequence number. */
static void order_nodes(gg_node **nodes, long n) {
    gg_tape *tape = gg_tape_current();
    uint64_t epoch = nodes[0]->visit;
    long k = 0;
    size_t count = tape ? gg__tape_nodes_count(tape) : 0;
    gg_node *const *all = tape ? gg__tape_nodes(tape) : NULL;
    for (size_t i = count; i-- > 0 && k < n;)
        if (all[i]->visit == epoch) k++;
    if (k == n) {
        k = 0;
        for (size_t i = count; i-- > 0 && k < n;)
            if (all[i]->visit == epoch) nodes[k++] = all[i];
        return;
    }
    qsort(nodes, (size_t)n, sizeof *nodes, by_seq_desc);
}

static int check_node(const gg_node *n) {
    char s[GG_SHAPE_STR_MAX];
    if (n->released && n->had_saved)
        return gg_error_set(GG_ERR_STATE, "gg_backward",
                            "trying to backward through %s (output %s) a second time: its saved tensors "
                            "were freed by the first backward; pass retain_graph to gg_backward_ex",
                            n->op->name, GG_SHAPE_STR(n->out, s));
    for (int i = 0; i < n->n_saved; i++)
        if (n->saved[i]->storage->version != n->saved_version[i])
            return gg_error_set(GG_ERR_STATE, "gg_backward",
                                "a tensor %s saved by %s for backward was modified in place afterwards "
                                "(version %llu, saved at %llu)",
                                GG_SHAPE_STR(n->saved[i], s), n->op->name,
                                (unsigned long long)n->saved[i]->storage->version,
                                (unsigned long long)n->saved_version[i]);
    return GG_OK;
}

static bool finite(const gg_tensor *t) {
    const float *p = gg_tensor_data(t);
    for (int64_t i = 0; i < t->numel; i++)
        if (!isfinite(p[i])) return false;
    return true;
}

static int anomaly_check(const gg_node *n) {
    char s[GG_SHAPE_STR_MAX];
    for (int i = 0; i < n->n_in; i++) {
        gg_tensor *x = n->in[i];
        if (!x || !x->requires_grad) continue;
        gg_tensor *g = x->grad_fn ? x->grad_fn->out_grad : x->grad;
        if (g && !finite(g))
            return gg_error_set(GG_ERR_NUMERIC, "gg_backward",
                                "anomaly: backward of %s produced NaN or Inf in the gradient of input %d %s",
                                n->op->name, i, GG_SHAPE_STR(x, s));
    }
    return GG_OK;
}

int gg_backward_ex(gg_tensor *root, const gg_tensor *grad_seed, bool retain_graph) {
    char a[GG_SHAPE_STR_MAX], b[GG_SHAPE_STR_MAX];
    if (!root) return gg__null_arg("gg_backward", "root");
    if (!root->requires_grad)
        return gg_error_set(GG_ERR_STATE, "gg_backward",
                            "tensor %s does not require grad and has no grad_fn", GG_SHAPE_STR(root, a));
    if (grad_seed && !gg_tensor_same_shape(grad_seed, root))
        return gg_error_set(GG_ERR_SHAPE, "gg_backward", "gradient %s does not match root %s",
                            GG_SHAPE_STR(grad_seed, a), GG_SHAPE_STR(root, b));
    if (!grad_seed && root->numel != 1)
        return gg_error_set(GG_ERR_SHAPE, "gg_backward",
                            "a gradient can be implied only for a single-element root, got %s: pass a seed "
                            "to gg_backward_ex",
                            GG_SHAPE_STR(root, a));
    gg_tensor *seed = grad_seed ? gg_tensor_copy(grad_seed) : gg_tensor_ones(root->ndim, root->shape);
    if (!seed) return gg_last_status();
    if (!root->grad_fn) { /* a leaf: its gradient is the seed */
        int st = root->grad ? gg_accumulate_reduced(root->grad, seed) : GG_OK;
        if (!root->grad) root->grad = seed, seed = NULL;
        gg_tensor_free(seed);
        return st;
    }
    gg_node **nodes = NULL;
    long n = collect(root->grad_fn, &nodes);
    if (n < 0) {
        gg_tensor_free(seed);
        return gg_error_set(GG_ERR_NOMEM, "gg_backward", "cannot allocate the node list");
    }
    int st = GG_OK;
    for (long i = 0; i < n && !st; i++) st = check_node(nodes[i]);
    if (st) {
        free(nodes);
        gg_tensor_free(seed);
        return st;
    }
    order_nodes(nodes, n);
    for (long i = 0; i < n; i++) { /* stale accumulators from an interrupted backward */
        gg_tensor_free(nodes[i]->out_grad);
        nodes[i]->out_grad = NULL;
    }
    root->grad_fn->out_grad = seed;
    for (long i = 0; i < n && !st; i++) {
        gg_node *v = nodes[i];
        gg_tensor *g = v->out_grad;
        if (!g) continue;
        if (v->out->retains_grad) {
            if (v->out->grad) st = gg_accumulate_reduced(v->out->grad, g);
            else if (!(v->out->grad = gg_tensor_copy(g))) st = gg_last_status();
        }
        if (!st) st = v->op->backward(v, g);
        if (!st && gg_anomaly_mode()) st = anomaly_check(v);
        gg_tensor_free(v->out_grad);
        v->out_grad = NULL;
        if (!retain_graph) {
            for (int k = 0; k < v->n_saved; k++) gg_tensor_free(v->saved[k]);
            v->n_saved = 0;
            v->released = true;
        }
    }
    for (long i = 0; i < n; i++) { /* after a failure, drop what was accumulated for later nodes */
        gg_tensor_free(nodes[i]->out_grad);
        nodes[i]->out_grad = NULL;
    }
    free(nodes);
    return st;
}

int gg_backward(gg_tensor *root) { return gg_backward_ex(root, NULL, false); }
