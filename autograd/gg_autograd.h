/* groupgrad autograd: a define-by-run reverse-mode tape with PyTorch's semantics.
 *
 * Tutorial
 *   gg_tensor *w = gg_tensor_zeros(GG_SHAPE(3, 2));  gg_requires_grad(w, true);   // leaf, caller-owned
 *   for (int step = 0; step < 100; step++) {
 *       gg_tensor *loss = gg_mean(gg_square(gg_sub(gg_matmul(x, w), y)), NULL, 0, false);
 *       gg_backward(loss);                 // w->grad += dloss/dw
 *       ... update w under gg_no_grad_begin()/gg_no_grad_end(), then gg_zero_grad(w) ...
 *       gg_tape_reset(NULL);               // frees every op output and graph node of this step
 *   }
 *
 * Ownership. Tensors the caller creates (gg_tensor_zeros, ...) belong to the caller. Every tensor returned
 * by a differentiable op (gg_add, gg_matmul, ...) belongs to the current tape and stays valid until that
 * tape is reset or freed, so ops can be chained without freeing intermediates. To keep an op result past
 * a reset, take a reference with gg_tensor_retain (the reset then detaches it from the graph) or copy it.
 * Gradients of leaves (t->grad) belong to the leaf.
 *
 * Recording. An op records a graph node when grad mode is on and at least one input requires a gradient;
 * its output then requires a gradient too. gg_backward runs the nodes reachable from the root in reverse
 * order of recording and accumulates (+=) into the .grad of leaves that require gradients (and of
 * non-leaves marked with gg_retain_grad). Saved tensors are released after a backward unless the graph is
 * retained; a later backward through a node whose saved tensors were released is an error naming the op.
 * Writing in place into a tensor after an op saved it (version counter) makes backward fail, naming the op.
 * A backward checks the whole graph before computing anything, so a failed call changes no gradient. */
#ifndef GG_AUTOGRAD_H
#define GG_AUTOGRAD_H

#include <stdbool.h>
#include <stddef.h>

#include "gg_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- leaves and gradients ---- */
/* Mark a leaf as requiring (or not) a gradient. Fails on a non-leaf (an op output with a grad_fn). */
int gg_requires_grad(gg_tensor *t, bool requires);
/* Keep the gradient of a non-leaf in t->grad during backward (as torch.Tensor.retain_grad). */
int gg_retain_grad(gg_tensor *t);
/* Zero t->grad if it exists (keeps the buffer); gg_zero_grad(NULL) is a no-op. */
void gg_zero_grad(gg_tensor *t);
/* A new tensor sharing t's storage, outside the graph (no grad_fn, requires_grad false). Tape-owned. */
gg_tensor *gg_detach(const gg_tensor *t);
bool gg_is_leaf(const gg_tensor *t);

/* ---- grad mode ---- */
/* Per thread. Returns the previous setting. */
bool gg_set_grad_enabled(bool enabled);
bool gg_is_grad_enabled(void);
/* Nested no-grad scope: nothing is recorded between begin and the matching end. */
void gg_no_grad_begin(void);
void gg_no_grad_end(void);

/* ---- backward ---- */
/* root must hold a single element; seeds its gradient with 1. */
int gg_backward(gg_tensor *root);
/* General form: grad_seed (same shape as root; NULL allowed only for a single-element root) and
 * retain_graph (keep saved tensors for another backward). */
int gg_backward_ex(gg_tensor *root, const gg_tensor *grad_seed, bool retain_graph);

/* ---- anomaly mode ---- */
/* When on, the first op that produces a NaN or Inf, in forward or in backward, fails with GG_ERR_NUMERIC
 * and a message naming the op and the shapes of its inputs. Per process; off by default. */
void gg_set_anomaly_mode(bool enabled);
bool gg_anomaly_mode(void);

/* ---- tapes ---- */
typedef struct gg_tape gg_tape;
/* A new empty tape (caller owns; gg_tape_free). */
gg_tape *gg_tape_new(void);
/* Resets then frees; NULL is a no-op. Must not be the current tape of any thread. */
void gg_tape_free(gg_tape *tape);
/* The tape this thread records onto (created on first use). */
gg_tape *gg_tape_current(void);
/* Make `tape` current for this thread (NULL: the thread's default tape); returns the previous one. */
gg_tape *gg_tape_set_current(gg_tape *tape);
/* Free every op output and graph node on the tape (NULL: the current tape). Outputs the caller retained
 * survive as plain tensors, detached from the graph. */
void gg_tape_reset(gg_tape *tape);
/* Number of graph nodes and of tensors the tape owns. */
size_t gg_tape_num_nodes(const gg_tape *tape);
size_t gg_tape_num_tensors(const gg_tape *tape);

/* ---- gradient checking ---- */
/* The function under test: computes an output from inputs[0..n-1] with differentiable ops. */
typedef gg_tensor *(*gg_gradcheck_fn)(gg_tensor *const *inputs, void *ctx);

typedef struct gg_gradcheck_opts {
    double eps;    /* central-difference step (default 1e-3) */
    double atol;   /* element passes if |analytic - numeric| <= atol + rtol * |numeric| */
    double rtol;   /* defaults 1e-3 and 1e-2: float32 forward passes, differences taken in double */
    uint64_t seed; /* seed of the random projection of the output (default 1) */
} gg_gradcheck_opts;

typedef struct gg_gradcheck_report {
    bool passed;
    int worst_input;       /* input with the largest violation (or -1 if none requires grad) */
    int64_t worst_index;   /* flat row-major index inside that input */
    double analytic;       /* tape gradient there */
    double numeric;        /* finite-difference gradient there */
    double max_violation;  /* max over elements of |a - n| - (atol + rtol |n|); <= 0 passes */
    int64_t n_checked;     /* elements checked */
} gg_gradcheck_report;

/* Checks d<c, f(inputs)>/d inputs[i] for every input that requires grad, where c is a fixed random
 * projection of the output: the tape's gradient against central differences (each side a float32
 * forward, the difference and the projection accumulated in double). opts may be NULL for defaults.
 * Runs on a private tape; the caller's tape and the inputs' .grad are left as they were.
 * Returns GG_OK when the check ran (see report->passed) or an error if f failed. */
int gg_gradcheck(gg_gradcheck_fn f, void *ctx, int n_inputs, gg_tensor *const *inputs,
                 const gg_gradcheck_opts *opts, gg_gradcheck_report *report);
/* One line describing the report, for test failure messages. */
const char *gg_gradcheck_describe(const gg_gradcheck_report *report, char *buf, size_t size);

#ifdef __cplusplus
}
#endif
#endif
