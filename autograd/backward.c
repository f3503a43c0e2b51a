/* The backward pass: collect the nodes reachable from the root, check them all, then run their
 * backward functions in reverse order of recording. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gg_autograd.h"
#include "gg_internal.h"
#include "gg_node.h"

static int by_seq_desc(const void *a, const void *b) {
    const gg_node *x = *(gg_node *const *)a, *y = *(gg_node *const *)b;
    return x->seq < y->seq ? 1 : (x->seq > y->seq ? -1 : 0);
}

/* Depth-first collection of the nodes reachable from root (each once). Returns the count or -1. */
static long collect(gg_node *root, gg_node ***out) {
    size_t cap = 64, n = 0, top = 0, scap = 64;
    gg_node **list = malloc(cap * sizeof *list), **stack = malloc(scap * sizeof *stack);
    /* visited set: a small open-addressing hash of node pointers */
    size_t hcap = 128;
    gg_node **seen = calloc(hcap, sizeof *seen);
    if (!list || !stack || !seen) goto oom;
    stack[top++] = root;
    while (top) {
        gg_node *v = stack[--top];
        size_t h = ((uintptr_t)v >> 4) * 0x9E3779B97F4A7C15ull & (hcap - 1);
        while (seen[h] && seen[h] != v) h = (h + 1) & (hcap - 1);
        if (seen[h]) continue;
        seen[h] = v;
        if (n + 1 > cap) {
            gg_node **p = realloc(list, (cap *= 2) * sizeof *list);
            if (!p) goto oom;
            list = p;
        }
        list[n++] = v;
        if (n * 2 > hcap) { /* rehash */
            size_t ncap = hcap * 4;
            gg_node **ns = calloc(ncap, sizeof *ns);
            if (!ns) goto oom;
            for (size_t i = 0; i < hcap; i++) {
                if (!seen[i]) continue;
                size_t k = ((uintptr_t)seen[i] >> 4) * 0x9E3779B97F4A7C15ull & (ncap - 1);
                while (ns[k]) k = (k + 1) & (ncap - 1);
                ns[k] = seen[i];
            }
            free(seen);
            seen = ns;
            hcap = ncap;
        }
        for (int i = 0; i < v->n_in; i++) {
            gg_tensor *x = v->in[i];
            if (!x || !x->grad_fn || !x->requires_grad) continue;
            if (top + 1 > scap) {
                gg_node **p = realloc(stack, (scap *= 2) * sizeof *stack);
                if (!p) goto oom;
                stack = p;
            }
            stack[top++] = x->grad_fn;
        }
    }
    free(stack);
    free(seen);
    *out = list;
    return (long)n;
oom:
    free(list);
    free(stack);
    free(seen);
    return -1;
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
    qsort(nodes, (size_t)n, sizeof *nodes, by_seq_desc);
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
