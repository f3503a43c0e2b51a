/* Internal helpers shared by the nn sources (not installed). */
#ifndef GG_NN_INTERNAL_H
#define GG_NN_INTERNAL_H

#include "gg_nn.h"

/* Module kinds the other nn files recognise. */
extern const gg_module_def gg__conv2d_def, gg__dgconv2d_def, gg__batchnorm2d_def, gg__sequential_def;

/* Constructors with the initialisation optional (init false: weights zero, for builders that initialise
 * afterwards or copy weights in). */
gg_module *gg__nn_conv2d(int64_t in_channels, int64_t out_channels, int kernel_size, const gg_conv2d_params *p,
                         bool bias, gg_rng *rng, bool init, const char *func);
gg_module *gg__nn_dgconv2d(int64_t channels, int kernel_size, const gg_conv2d_params *p, bool bias,
                           gg_gate_init gate_init, gg_rng *rng, bool init, const char *func);
gg_module *gg__nn_bottleneck(int64_t inplanes, int64_t planes, int stride, int cardinality, int base_width,
                             const gg_conv3x3_spec *spec, gg_rng *rng, bool init, const char *func);
/* Sequential's forward (children in order), for kinds built like a Sequential (GroupNet). */
gg_tensor *gg__sequential_forward(gg_module *m, gg_tensor *x);

/* Shape string of an (ndim, shape) pair into buf. */
char *gg__nn_shape_str(int ndim, const int64_t *shape, char *buf, size_t size);

/* y[:, c] = x[:, idx[c]] for x [N, C, ...] (idx: a float tensor [C] holding a permutation), the op behind
 * ChannelPermute. */
gg_tensor *gg__channel_permute(gg_tensor *x, gg_tensor *idx);

#endif
