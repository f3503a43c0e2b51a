/* groupgrad random numbers: a counter-based Philox4x32-10 generator whose streams do not depend on the
 * thread count, and PyTorch's parameter initialisers (torch.nn.init).
 *
 * A generator is (seed, counter). Filling n elements consumes ceil(n / 4) counter values: element i is
 * lane i % 4 of block counter + i / 4, so any split of the work over threads gives the same numbers, and
 * saving (seed, counter) is enough to resume a stream exactly. Values go to the tensor's elements in
 * row-major logical order, whatever its strides. */
#ifndef GG_RNG_H
#define GG_RNG_H

#include <stdint.h>

#include "gg_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gg_rng {
    uint64_t seed;
    uint64_t counter;
} gg_rng;

void gg_rng_init(gg_rng *rng, uint64_t seed);
/* The process-wide default generator (used when a function is given rng == NULL). Not thread-safe:
 * draw from it on one thread at a time. */
gg_rng *gg_rng_default(void);
/* Reseed the default generator. */
void gg_manual_seed(uint64_t seed);

/* One Philox4x32-10 block: the four 32-bit outputs for (key = seed, counter). */
void gg_philox4x32(uint64_t seed, uint64_t counter, uint32_t out[4]);
/* Next 32 random bits / a float in [0, 1) from the generator (one block per call). */
uint32_t gg_rng_u32(gg_rng *rng);
float gg_rng_uniform01(gg_rng *rng);

/* U[lo, hi). */
int gg_rand_uniform(gg_tensor *t, float lo, float hi, gg_rng *rng);
/* N(mean, std^2), Box-Muller. std >= 0. */
int gg_rand_normal(gg_tensor *t, float mean, float std, gg_rng *rng);

/* torch.nn.init conventions. fan_in = size(1) * receptive field, fan_out = size(0) * receptive field,
 * receptive field = product of the sizes after the first two; needs rank >= 2. */
typedef enum gg_nonlinearity {
    GG_NL_LINEAR,
    GG_NL_SIGMOID,
    GG_NL_TANH,
    GG_NL_RELU,
    GG_NL_LEAKY_RELU,
    GG_NL_COUNT
} gg_nonlinearity;
typedef enum gg_fan_mode { GG_FAN_IN, GG_FAN_OUT } gg_fan_mode;

/* torch.nn.init.calculate_gain: linear/sigmoid 1, tanh 5/3, relu sqrt(2), leaky_relu sqrt(2/(1+a^2))
 * with a = param (PyTorch's default 0.01 when param < 0). */
float gg_init_gain(gg_nonlinearity nl, float param);
int gg_init_fans(const gg_tensor *t, int64_t *fan_in, int64_t *fan_out);
/* bound = gain * sqrt(3 / fan). nn.Conv2d/nn.Linear use a = sqrt(5), GG_FAN_IN, GG_NL_LEAKY_RELU. */
int gg_init_kaiming_uniform(gg_tensor *t, float a, gg_fan_mode mode, gg_nonlinearity nl, gg_rng *rng);
/* std = gain / sqrt(fan). */
int gg_init_kaiming_normal(gg_tensor *t, float a, gg_fan_mode mode, gg_nonlinearity nl, gg_rng *rng);
/* bound = gain * sqrt(6 / (fan_in + fan_out)). */
int gg_init_xavier_uniform(gg_tensor *t, float gain, gg_rng *rng);
/* std = gain * sqrt(2 / (fan_in + fan_out)). */
int gg_init_xavier_normal(gg_tensor *t, float gain, gg_rng *rng);

#ifdef __cplusplus
}
#endif
#endif
