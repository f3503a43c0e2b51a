/* groupgrad nn: modules in the manner of torch.nn (named parameters and buffers, train/eval, recursive
 * free), the layers of a CNN, residual blocks, and GroupNet, a ResNeXt whose 3x3 convolutions are DGConv.
 *
 * Tutorial
 *   gg_rng rng;  gg_rng_init(&rng, 0);
 *   gg_conv2d_params same = gg_conv2d_make(1, 1, 1, 1);          // stride 1, padding 1
 *   gg_module *net = gg_nn_sequential_new();
 *   gg_nn_sequential_append(net, gg_nn_conv2d_new(1, 32, 3, &same, false, &rng));
 *   gg_nn_sequential_append(net, gg_nn_batchnorm2d_new(32));
 *   gg_nn_sequential_append(net, gg_nn_relu_new());
 *   ...                                           // constructors are sticky: check once at the end
 *   gg_tensor *logits = gg_module_forward(net, x); // tape-owned; NULL + message naming the module path
 *   gg_backward(gg_cross_entropy(logits, labels, n, GG_REDUCE_MEAN, 0));
 *   gg_tensor *ps[64]; int n = gg_module_parameters(net, ps, 64);   // update ps[i] with ps[i]->grad
 *   gg_module_zero_grad(net);  gg_tape_reset(NULL);
 *   gg_module_eval(net);                          // BatchNorm uses its running statistics, Dropout is off
 *   gg_module_free(net);                          // parameters, their .grad, buffers, children
 *
 * Names. Parameters and buffers have PyTorch's state_dict names: "layer1.0.conv1.weight",
 * "bn1.running_mean", "bn1.num_batches_tracked" (kept, as a rank-0 float buffer counting training
 * forwards), a DGConv2d's "gate" and "conv.weight" (d-li14/dgconv.pytorch; its constant D and I buffers
 * are not kept). Iteration is in state_dict order: a module's own parameters (or buffers), then its
 * children's, depth first in the order they were added.
 *
 * Ownership. A module owns its parameters (leaves requiring grad) and their .grad, its buffers, its
 * kind-specific state and its children; gg_module_free releases all of it (a NULL module is a no-op).
 * Functions that add a module or tensor to another (gg_module_add_child, gg_nn_sequential_append,
 * gg_module_add_parameter, ...) take ownership of it even when they fail. gg_module_forward returns a
 * tensor owned by the current tape (modules that compute nothing, an empty Sequential, Dropout in eval,
 * return their input itself).
 *
 * Errors. Constructors return NULL and record a message on a bad argument; composite constructors given a
 * NULL child fail keeping the first message (sticky), so a whole network can be built and checked once.
 * gg_module_forward given NULL returns NULL keeping the message; on a failure inside a module it records
 *   "gg_module_forward: layer2.1.conv2 (DGConv2d 128->128): input has 64 channels, expected 128 (x [8,64,14,14])"
 * naming the innermost failing module's path (its kind alone at the root) and the shapes.
 *
 * Adding a module kind: a gg_module_def (kind name, forward, shape inference, MACs, describe, fini) and a
 * constructor that calls gg_module_new and adds parameters, buffers and children; see the section at the
 * end of this header. */
#ifndef GG_NN_H
#define GG_NN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "gg_autograd.h"
#include "gg_conv.h"
#include "gg_dgconv.h"
#include "gg_rng.h"
#include "gg_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gg_module gg_module;
typedef struct gg_module_def gg_module_def;

/* ---- every module (nn/module.c) ---- */

/* Run the module on x; the result is tape-owned. Records input and output shapes (for gg_module_macs). */
gg_tensor *gg_module_forward(gg_module *m, gg_tensor *x);
/* Free the module, its parameters (and their .grad), buffers and children. NULL is a no-op. */
void gg_module_free(gg_module *m);

/* Training mode, recursively (as torch.nn.Module.train(mode)); eval = train(false). New modules train. */
void gg_module_train(gg_module *m, bool training);
void gg_module_eval(gg_module *m);
bool gg_module_is_training(const gg_module *m);

/* Kind ("Conv2d"), local name in the parent ("conv1", "0"; "" at the root), dotted path from the root
 * ("layer1.0.conv2"; "" at the root), a short description ("DGConv2d 128->128"). path and describe
 * write into buf (always NUL-terminated) and return buf. */
const char *gg_module_kind(const gg_module *m);
const char *gg_module_name(const gg_module *m);
char *gg_module_path(const gg_module *m, char *buf, size_t size);
char *gg_module_describe(const gg_module *m, char *buf, size_t size);
/* The module tree, one line per module with its name and description (like print(model)). */
int gg_module_fprint(FILE *f, const gg_module *m);

/* Parameters and buffers. The visitor gets the full dotted name (relative to m) and the tensor; a
 * nonzero return stops the walk and is returned. */
typedef int (*gg_module_visit_fn)(const char *name, gg_tensor *t, void *ctx);
int gg_module_foreach_parameter(gg_module *m, gg_module_visit_fn fn, void *ctx);
int gg_module_foreach_buffer(gg_module *m, gg_module_visit_fn fn, void *ctx);

/* Longest full name the array collectors keep (longer names are an error). */
#define GG_NN_NAME_MAX 128
typedef struct gg_named_tensor {
    char name[GG_NN_NAME_MAX];
    gg_tensor *tensor; /* borrowed from the module */
} gg_named_tensor;

/* Write up to `capacity` entries (out may be NULL with capacity 0) and return the total number, as
 * snprintf does; a negative status on error. The tensors stay owned by the module. */
int gg_module_parameters(gg_module *m, gg_tensor **out, int capacity);
int gg_module_named_parameters(gg_module *m, gg_named_tensor *out, int capacity);
int gg_module_buffers(gg_module *m, gg_tensor **out, int capacity);
int gg_module_named_buffers(gg_module *m, gg_named_tensor *out, int capacity);
/* A parameter or buffer by full dotted name ("layer1.0.bn1.running_var"), or NULL with an error. */
gg_tensor *gg_module_get_tensor(gg_module *m, const char *name);

/* Total number of parameter elements (all parameters; "trainable" = those requiring grad if
 * trainable_only). */
int64_t gg_module_num_parameters(const gg_module *m, bool trainable_only);
/* Zero the .grad of every parameter (buffers are kept, so a training step does not allocate). */
void gg_module_zero_grad(gg_module *m);

/* Children and the module tree. */
int gg_module_num_children(const gg_module *m);
gg_module *gg_module_child_at(const gg_module *m, int index);
/* A descendant by dotted path ("layer1.0.conv2"), or NULL with an error. */
gg_module *gg_module_get_child(gg_module *m, const char *path);
/* Every module of the tree, m first, depth first (as named_modules()); the path is relative to m. */
typedef int (*gg_module_walk_fn)(const char *path, gg_module *m, void *ctx);
int gg_module_foreach_module(gg_module *m, gg_module_walk_fn fn, void *ctx);

/* Shape inference without computing: the output shape for an input shape, recording every layer's
 * input and output shapes. Errors as gg_module_forward (the message names gg_module_output_shape). */
int gg_module_output_shape(gg_module *m, int ndim, const int64_t *in_shape, int *out_ndim, int64_t *out_shape);
/* Multiply-accumulates per sample of the convolutions and linear layers for one input of shape
 * in_shape (N is taken as 1): Conv2d K*(C/G)*R*S*Ho*Wo, Linear in*out, DGConv2d the effective
 * R*S*Ho*Wo*zeta (connected channel pairs only); normalisation, pooling and activations count 0. */
int gg_module_macs(gg_module *m, int ndim, const int64_t *in_shape, int64_t *macs);

/* ---- layers (nn/layers.c) ----
 * Initialisation as PyTorch's defaults, drawing from rng (NULL: the default generator): Conv2d, Linear
 * and DGConv2d's weight kaiming_uniform(a = sqrt(5)), their bias U(-1/sqrt(fan_in), 1/sqrt(fan_in));
 * BatchNorm2d weight 1, bias 0, running_mean 0, running_var 1. Kernels are square. */

/* Conv2d: weight [out, in/groups, k, k], bias [out] ("weight", "bias"). p gives stride, padding, dilation,
 * groups and pad_same (NULL: stride 1, no padding, groups 1). */
gg_module *gg_nn_conv2d_new(int64_t in_channels, int64_t out_channels, int kernel_size, const gg_conv2d_params *p,
                            bool bias, gg_rng *rng);
/* Linear: weight [out, in], bias [out]; input [..., in] -> [..., out]. */
gg_module *gg_nn_linear_new(int64_t in_features, int64_t out_features, bool bias, gg_rng *rng);
/* BatchNorm2d with eps 1e-5, momentum 0.1, affine: "weight", "bias"; buffers "running_mean",
 * "running_var", "num_batches_tracked". Training mode normalises with batch statistics and updates the
 * running ones; eval mode uses the running ones. */
gg_module *gg_nn_batchnorm2d_new(int64_t num_features);
gg_module *gg_nn_batchnorm2d_new_ex(int64_t num_features, float eps, float momentum, bool affine);
gg_module *gg_nn_relu_new(void);
/* Pooling, floor mode. stride 0 means stride = kernel (PyTorch's default). AvgPool2d counts padding in
 * the divisor (count_include_pad, PyTorch's default). */
gg_module *gg_nn_maxpool2d_new(int kernel_size, int stride, int padding);
gg_module *gg_nn_avgpool2d_new(int kernel_size, int stride, int padding);
/* AdaptiveAvgPool2d((out_h, out_w)); (1, 1) is the global average pool. */
gg_module *gg_nn_adaptive_avgpool2d_new(int64_t out_h, int64_t out_w);
/* Flatten dims start_dim..end_dim (PyTorch's default 1, -1). */
gg_module *gg_nn_flatten_new(int start_dim, int end_dim);
/* Dropout(p) in training mode, identity in eval. rng is borrowed (NULL: the default generator). */
gg_module *gg_nn_dropout_new(float p, gg_rng *rng);

/* Sequential: children run in order. Children are named "0", "1", ... by append, or given a name. */
gg_module *gg_nn_sequential_new(void);
int gg_nn_sequential_append(gg_module *seq, gg_module *child);
int gg_nn_sequential_add(gg_module *seq, const char *name, gg_module *child);

/* ChannelPermute: y[:, c] = x[:, index[c]] (index_select along dim 1) for x [N, C, ...]; index is a
 * permutation of 0..C-1, kept as the float buffer "index". Differentiable. */
gg_module *gg_nn_channel_permute_new(int64_t channels, const int *index);

/* ---- DGConv2d (nn/layers.c) ----
 * Square DGConv (gg_dgconv.h): C = 2^K channels in and out, a dense weight "conv.weight" [C, C, k, k], K
 * gates "gate", optional "conv.bias". p's groups must be 1. */
typedef enum gg_gate_init {
    GG_GATE_INIT_RANDOM, /* +-1e-8 with a random sign: a random initial grouping (DGCONV.md) */
    GG_GATE_INIT_CLOSED, /* all -1e-8 (d-li14/dgconv.pytorch): starts depthwise */
    GG_GATE_INIT_OPEN,   /* all +1e-8: starts dense */
    GG_GATE_INIT_COUNT
} gg_gate_init;

gg_module *gg_nn_dgconv2d_new(int64_t channels, int kernel_size, const gg_conv2d_params *p, bool bias,
                              gg_gate_init gate_init, gg_rng *rng);
/* Execution options (sort, path) of a DGConv2d; NULL restores the defaults. */
int gg_nn_dgconv2d_set_opts(gg_module *m, const gg_dgconv_opts *opts);
/* The gate and weight parameters of a DGConv2d (borrowed), or NULL with an error for other kinds. */
gg_tensor *gg_nn_dgconv2d_gates(gg_module *m);
gg_tensor *gg_nn_dgconv2d_weight(gg_module *m);

typedef struct gg_dgconv2d_info {
    int64_t channels;         /* C = C_in = C_out = 2^K */
    int n_gates;              /* K */
    int n_open;               /* gates with g = 1 */
    int kernel_size;          /* R = S */
    int groups;               /* G = 2^(gates with g = 0); 0 when some gate is exactly 0 (g = 0.5) */
    int group_size;           /* C / G; 0 likewise */
    double zeta;              /* C * prod_k (1 + g[k]): connected (out, in) pairs (the number of ones in U) */
    int64_t params;           /* parameter elements: C*C*R*S weight + K gates (+ C bias) */
    int64_t effective_params; /* R*S*zeta (+ C bias): the weights a grouped conv would need */
    int64_t out_h, out_w;     /* output size of the last forward / shape query (0 before any) */
    int64_t macs;             /* R*S*Ho*Wo*zeta per sample (0 while the output size is unknown) */
} gg_dgconv2d_info;

/* Info of a DGConv2d from its current gates and the last recorded output size. */
int gg_nn_dgconv2d_info(const gg_module *m, gg_dgconv2d_info *info);
/* The same for an input of in_h x in_w (computes the output size; records nothing). */
int gg_nn_dgconv2d_info_at(const gg_module *m, int64_t in_h, int64_t in_w, gg_dgconv2d_info *info);

/* Deploy mode. A new module (caller owns) computing the same function as the DGConv2d m with binary
 * gates: ChannelPermute(pi^-1) -> Conv2d(groups G, weight [C, C/G, R, S]) -> ChannelPermute(pi), as a
 * Sequential "0", "1", "2", or the Conv2d alone when pi is the identity (contiguous groups). Copies the
 * weights (and the training flag); an error if some gate is exactly 0. */
gg_module *gg_nn_dgconv2d_export(const gg_module *m);
/* Replace every DGConv2d in the tree of root (not root itself) by its export, freeing the DGConv2d.
 * Returns the number replaced or a negative status (the tree is unchanged on error: every layer is
 * exported before any is replaced). */
int gg_module_export_dgconv(gg_module *root);

/* ---- residual blocks (nn/blocks.c), torchvision's definitions ---- */

/* What a bottleneck's 3x3 convolution is. */
typedef enum gg_conv3x3_kind {
    GG_CONV3X3_DGCONV,    /* DGConv2d of the same width (G-ResNeXt) */
    GG_CONV3X3_DENSE,     /* Conv2d, groups 1 */
    GG_CONV3X3_GROUPED,   /* Conv2d, groups G */
    GG_CONV3X3_DEPTHWISE, /* Conv2d, groups = width */
    GG_CONV3X3_KIND_COUNT
} gg_conv3x3_kind;

typedef struct gg_conv3x3_spec {
    gg_conv3x3_kind kind;
    int groups;             /* GROUPED: G (0: the block's cardinality) */
    gg_gate_init gate_init; /* DGCONV */
} gg_conv3x3_spec;

/* BasicBlock(inplanes, planes, stride): conv1 3x3/stride, bn1, relu, conv2 3x3, bn2, + identity or
 * downsample (1x1 conv/stride + BN when stride != 1 or inplanes != planes), relu. */
gg_module *gg_nn_basic_block_new(int64_t inplanes, int64_t planes, int stride, gg_rng *rng);
/* Bottleneck (torchvision v1.5 / ResNeXt): width = planes * base_width / 64 * cardinality; conv1 1x1
 * inplanes->width, bn1, conv2 3x3/stride width->width (per spec; NULL: grouped by cardinality), bn2, conv3 1x1
 * width->planes*4, bn3, relu, downsample (1x1 conv/stride + BN) when stride != 1 or inplanes != 4*planes. */
gg_module *gg_nn_bottleneck_new(int64_t inplanes, int64_t planes, int stride, int cardinality, int base_width,
                                const gg_conv3x3_spec *spec, gg_rng *rng);

/* ---- GroupNet (nn/groupnet.c) ---- */

typedef enum gg_stem_kind {
    GG_STEM_IMAGENET, /* conv 7x7/2 pad 3, BN, ReLU, maxpool 3x3/2 pad 1 (torchvision, 224x224 RGB) */
    GG_STEM_SMALL,    /* conv 3x3/1 pad 1, BN, ReLU (28x28 or 32x32 images) */
    GG_STEM_KIND_COUNT
} gg_stem_kind;

#define GG_GROUPNET_MAX_STAGES 4
typedef struct gg_groupnet_config {
    int in_channels;        /* 3 for RGB, 1 for grayscale */
    gg_stem_kind stem;
    int stem_channels;      /* 64 in torchvision */
    int n_stages;           /* 1 .. GG_GROUPNET_MAX_STAGES; stage 0 has stride 1, the others 2 */
    int blocks[GG_GROUPNET_MAX_STAGES]; /* bottlenecks per stage */
    int planes[GG_GROUPNET_MAX_STAGES]; /* bottleneck planes per stage (output 4 * planes) */
    int cardinality;        /* ResNeXt groups (32 in resnext50_32x4d) */
    int base_width;         /* width per group (4): 3x3 width = planes * base_width / 64 * cardinality */
    gg_conv3x3_spec conv3x3;
    int num_classes;
    bool zero_init_residual; /* bn3.weight = 0 in every block (torchvision option) */
    bool skip_init;          /* convolution weights left at zero (no draws): for counting, or before loading
                              * trained weights (fc and the gates are initialised as usual) */
} gg_groupnet_config;

/* G-ResNeXt-50 (torchvision resnext50_32x4d with every 3x3 replaced per `kind`; 1000 classes):
 * DGCONV gives d-li14's g_resnext50 (16 DGConv layers, 137 gates, 68,883,377 parameters; 11.40 GMACs
 * per 224x224 image with every gate open, 4.02 G with every gate closed); GROUPED with groups 0 or 32
 * gives resnext50_32x4d itself (25,028,904 parameters, 4.23 GMACs); DENSE 68,883,240; DEPTHWISE
 * 23,682,216. */
gg_groupnet_config gg_groupnet_resnext50_config(gg_conv3x3_kind kind);
/* GroupNet-S for 28x28 grayscale (Fashion-MNIST), 10 classes: 3x3 stem to 32 channels, 3 stages of one
 * bottleneck (planes 16/32/64, cardinality 8, base width 16: 3x3 widths 32/64/128 at 28/14/7 pixels,
 * outputs 64/128/256), global average pool, linear 10. DGCONV: 306,684 parameters (18 gates); MACs per
 * image 17.09 M outside the DGConv layers plus 9*Ho*Wo*zeta in them: 38.76 M with every gate open,
 * 17.48 M with every gate closed, about 20 M from a random start. GROUPED (8 groups): 137,322. */
gg_groupnet_config gg_groupnet_s_config(gg_conv3x3_kind kind);

/* Build the network (caller owns). Children: conv1, bn1, relu, [maxpool], layer1.., avgpool, flatten, fc
 * (torchvision's names; flatten has no parameters). Initialisation as torchvision's ResNet: every
 * convolution weight (DGConv2d's too) kaiming_normal(fan_out, relu), BatchNorm 1/0, fc PyTorch's default. */
gg_module *gg_groupnet_new(const gg_groupnet_config *cfg, gg_rng *rng);

/* The DGConv2d modules of the tree in order (borrowed): up to capacity written, the total returned. */
int gg_groupnet_dgconv_layers(gg_module *net, gg_module **out, int capacity);

typedef struct gg_groupnet_stats {
    int n_dgconv;            /* DGConv2d layers */
    int n_gates;             /* their gates */
    int n_open_gates;        /* gates with g = 1 */
    int64_t params;          /* all parameter elements */
    int64_t effective_params;/* params with each DGConv2d counted as R*S*zeta (+ gates, bias) */
    int64_t macs;            /* per sample, DGConv2d effective (gg_module_macs) */
    int64_t dgconv_macs;     /* the DGConv2d layers' share of macs */
    double zeta;             /* sum of the layers' zeta */
    double budget32;         /* gg_dgconv_budget of the layers' channels with b = 32 */
} gg_groupnet_stats;
/* Statistics for one input image of in_h x in_w (runs shape inference). */
int gg_groupnet_stats_get(gg_module *net, int64_t in_h, int64_t in_w, gg_groupnet_stats *st);

/* The training loss of DGCONV.md section 4: ce * (o / zeta)^a with zeta the sum of every DGConv2d's
 * gg_dgconv_zeta(gate, form) and o = gg_dgconv_budget(channels, b) (b = 32, a = -0.02 in the reference).
 * Tape-owned; without DGConv2d layers returns ce itself. */
gg_tensor *gg_groupnet_regularized_loss(gg_module *net, gg_tensor *ce, double b, double a, gg_zeta_form form);

/* ---- defining a module kind ----
 * A kind is a gg_module_def and a constructor. forward gets a non-NULL x, may assume nothing about its
 * shape (check it, or let the ops check it), and returns a tape-owned tensor or NULL with an error; for a
 * leaf kind, shape runs before forward, so forward may rely on its checks. Errors found by the kind
 * itself are recorded with gg_module_fail, which adds the module's path; errors from ops are wrapped
 * with the path automatically. Children are run with gg_module_forward. */
struct gg_module_def {
    const char *kind;
    gg_tensor *(*forward)(gg_module *m, gg_tensor *x);
    /* Output shape for an input shape, or a status (gg_module_fail). NULL: composite kinds only, whose
     * shape is inferred by running shape on the children in order (as Sequential). */
    int (*shape)(gg_module *m, int ndim, const int64_t *in, int *out_ndim, int64_t *out);
    /* MACs per sample of the module itself from its recorded shapes (children excluded). NULL: 0. */
    int64_t (*macs)(const gg_module *m);
    /* Short description into buf ("Conv2d 3->64"). NULL: the kind. */
    void (*describe)(const gg_module *m, char *buf, size_t size);
    /* Free kind-specific resources in impl (not the impl block itself). NULL: nothing. */
    void (*fini)(gg_module *m);
};

#define GG_NN_MAX_TENSORS 4  /* parameters per module, and buffers per module */
#define GG_NN_LOCAL_MAX 24   /* local names: "conv.weight", "num_batches_tracked", "layer4" */

struct gg_module {
    const gg_module_def *def;
    gg_module *parent;
    char name[GG_NN_LOCAL_MAX];
    bool training;
    int n_params, n_buffers, n_children, cap_children;
    char param_names[GG_NN_MAX_TENSORS][GG_NN_LOCAL_MAX];
    gg_tensor *params[GG_NN_MAX_TENSORS];
    char buffer_names[GG_NN_MAX_TENSORS][GG_NN_LOCAL_MAX];
    gg_tensor *buffers[GG_NN_MAX_TENSORS];
    gg_module **children;
    /* last forward or shape query */
    int in_ndim, out_ndim;
    int64_t in_shape[GG_MAX_DIMS], out_shape[GG_MAX_DIMS];
    void *impl; /* kind-specific state: impl_size zeroed bytes allocated with the module */
};

/* A new module of kind def with impl_size bytes of zeroed state (training on, no name). */
gg_module *gg_module_new(const gg_module_def *def, size_t impl_size);
/* Register a parameter (made a leaf requiring grad) / a buffer / a child under a local name. Take
 * ownership even on failure (except of a child that already has a parent, which is left to it); a NULL
 * tensor or child fails keeping the earlier error. */
int gg_module_add_parameter(gg_module *m, const char *name, gg_tensor *t);
int gg_module_add_buffer(gg_module *m, const char *name, gg_tensor *t);
int gg_module_add_child(gg_module *m, const char *name, gg_module *child);
/* Replace child `index` (freeing the old one, keeping its name); takes ownership of child. */
int gg_module_replace_child(gg_module *m, int index, gg_module *child);
/* Record an error for module m: "<entry point>: <path> (<description>): <message>"; returns status. */
int gg_module_fail(const gg_module *m, int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

#ifdef __cplusplus
}
#endif
#endif
