/* The interface between the autograd engine and the ops that record onto it (not a user API, but
 * installed so that extensions can define ops). An op:
 *   1. checks its arguments (nothing recorded or allocated on failure),
 *   2. creates its output with gg_op_output (tape-owned),
 *   3. computes the forward,
 *   4. calls gg_op_record; when it returns a node, saves what backward needs (gg_node_save, params),
 *   5. returns gg_op_finish(out), which runs the anomaly check.
 * Its backward adds (+=) into the gradient buffers gg_node_grad(node, i) returns for the inputs that need
 * one (NULL for the others), reading the output gradient `gout` (contiguous, shape of the output). */
#ifndef GG_NODE_H
#define GG_NODE_H

#include <stdbool.h>
#include <stdint.h>

#include "gg_autograd.h"
#include "gg_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gg_node gg_node;

typedef struct gg_op_def {
    const char *name;                                     /* "mul", "conv2d", ... */
    int (*backward)(gg_node *node, const gg_tensor *gout); /* GG_OK or a status with a message */
} gg_op_def;

#define GG_NODE_MAX_SAVED 4
#define GG_NODE_INLINE_INPUTS 3
#define GG_NODE_IPARAMS 20
#define GG_NODE_FPARAMS 4

struct gg_node {
    const gg_op_def *op;
    gg_tensor *out;         /* the op's output (tape-owned; not a counted reference) */
    int n_in;
    gg_tensor **in;         /* inputs, each a counted reference; in_inline or heap */
    gg_tensor *in_inline[GG_NODE_INLINE_INPUTS];
    int n_saved;
    gg_tensor *saved[GG_NODE_MAX_SAVED]; /* counted references */
    uint64_t saved_version[GG_NODE_MAX_SAVED];
    int64_t ip[GG_NODE_IPARAMS]; /* op parameters for backward: axes, strides, ... */
    double fp[GG_NODE_FPARAMS];  /* scalar parameters: exponent, slope, ... */
    gg_tensor *out_grad;         /* gradient w.r.t. out, accumulated during backward */
    bool had_saved;              /* saved something: a second backward needs retain_graph */
    bool released;               /* saved tensors were freed by a backward */
    size_t seq;                  /* global recording order */
    uint64_t visit;              /* backward pass that last collected this node */
};

/* A new contiguous, uninitialised output owned by the current tape; NULL (error recorded) on failure. */
gg_tensor *gg_op_output(int ndim, const int64_t *shape, const char *func);
/* Hand a tensor the op created some other way (e.g. a storage view) to the current tape, which takes
 * over the caller's reference. Returns t. */
gg_tensor *gg_op_adopt(gg_tensor *t);
/* True if an op with these inputs must record (grad mode on and some input requires grad). */
bool gg_op_needs_grad(int n_in, gg_tensor *const *in);
/* Record a node for `out` if needed; returns it (to save things into) or NULL when nothing is recorded.
 * On allocation failure returns NULL with an error recorded and sets *failed. */
gg_node *gg_op_record(const gg_op_def *op, gg_tensor *out, int n_in, gg_tensor *const *in, bool *failed);
/* Save a tensor for backward (takes a reference, remembers its version). */
int gg_node_save(gg_node *node, gg_tensor *t);
/* Finish an op: anomaly check of the output (when enabled). Returns out, or NULL on failure. */
gg_tensor *gg_op_finish(gg_tensor *out, const char *func, int n_in, gg_tensor *const *in);

/* Inside backward: the gradient accumulator of input i (contiguous, input's shape, zero-initialised on
 * first use), or NULL if input i needs no gradient. NULL with an error recorded on allocation failure:
 * check gg_last_status() when it matters. */
gg_tensor *gg_node_grad(gg_node *node, int i);
bool gg_node_needs_grad(const gg_node *node, int i);

/* The engine's view of a tape's nodes, in recording order. */
size_t gg__tape_nodes_count(const gg_tape *tape);
gg_node *const *gg__tape_nodes(const gg_tape *tape);

/* dst += src summed over the dimensions src was broadcast along (src's shape broadcasts from dst's).
 * dst contiguous. The reduction every broadcasting op's backward needs. */
int gg_accumulate_reduced(gg_tensor *dst, const gg_tensor *src);

#ifdef __cplusplus
}
#endif
#endif
