/* Philox4x32-10 counter-based RNG (Salmon et al., SC'11) and torch.nn.init-style initialisers. */
#include <math.h>
#include <stdlib.h>

#include "gg_alloc.h"
#include "gg_internal.h"
#include "gg_rng.h"
#include "gg_runtime.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static gg_rng default_rng = {.seed = 0x5eed, .counter = 0};

void gg_rng_init(gg_rng *rng, uint64_t seed) {
    if (!rng) return;
    rng->seed = seed;
    rng->counter = 0;
}

gg_rng *gg_rng_default(void) { return &default_rng; }
void gg_manual_seed(uint64_t seed) { gg_rng_init(&default_rng, seed); }

void gg_philox4x32(uint64_t seed, uint64_t counter, uint32_t out[4]) {
    uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

/* 24 random bits as a float in [0, 1) and in (0, 1]. */
static inline float u01(uint32_t x) { return (float)(x >> 8) * 0x1p-24f; }
static inline double u01_open0(uint32_t x) { return ((double)(x >> 8) + 1.0) * 0x1p-24; }

uint32_t gg_rng_u32(gg_rng *rng) {
    uint32_t out[4];
    if (!rng) rng = &default_rng;
    gg_philox4x32(rng->seed, rng->counter++, out);
    return out[0];
}

float gg_rng_uniform01(gg_rng *rng) { return u01(gg_rng_u32(rng)); }

typedef enum { DIST_UNIFORM, DIST_NORMAL } dist_kind;

/* Element i of a draw is lane i % 4 of block (counter + i / 4): independent of how blocks are split. */
static void generate_block(dist_kind kind, uint64_t seed, uint64_t counter, float a, float b, float v[4]) {
    uint32_t r[4];
    gg_philox4x32(seed, counter, r);
    if (kind == DIST_UNIFORM) {
        for (int l = 0; l < 4; l++) {
            float x = a + u01(r[l]) * (b - a);
            v[l] = x < b ? x : a; /* rounding could reach hi: keep the interval half-open */
        }
    } else {
        for (int l = 0; l < 4; l += 2) {
            double rad = sqrt(-2.0 * log(u01_open0(r[l])));
            double th = 2.0 * 3.14159265358979323846 * ((double)(r[l + 1] >> 8) * 0x1p-24);
            v[l] = (float)(a + b * rad * cos(th));
            v[l + 1] = (float)(a + b * rad * sin(th));
        }
    }
}

static int fill_random(gg_tensor *t, dist_kind kind, float a, float b, gg_rng *rng, const char *func) {
    if (!rng) rng = &default_rng;
    int64_t n = t->numel;
    uint64_t blocks = (uint64_t)(n + 3) / 4;
    bool direct = gg_tensor_is_contiguous(t);
    float *out = direct ? gg_tensor_data(t) : gg_alloc((size_t)n * sizeof(float));
    if (!out) return gg_error_set(GG_ERR_NOMEM, func, "cannot allocate %lld floats", (long long)n);
    uint64_t seed = rng->seed, base = rng->counter;
    int nt = n >= (1 << 15) ? gg_get_num_threads() : 1;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t blk = 0; blk < (int64_t)blocks; blk++) {
        float v[4];
        generate_block(kind, seed, base + (uint64_t)blk, a, b, v);
        int64_t i0 = blk * 4;
        for (int l = 0; l < 4 && i0 + l < n; l++) out[i0 + l] = v[l];
    }
    if (!direct) {
        int64_t cst[GG_MAX_DIMS];
        gg__contiguous_strides(t->ndim, t->shape, cst);
        gg__strided_copy(t->ndim, t->shape, gg_tensor_data(t), t->stride, out, cst);
        gg_free(out);
    }
    rng->counter += blocks;
    gg_tensor_bump_version(t);
    return GG_OK;
}

static int check_target(const gg_tensor *t, const char *func) {
    char s[GG_SHAPE_STR_MAX];
    for (int d = 0; d < t->ndim; d++)
        if (t->stride[d] == 0 && t->shape[d] > 1)
            return gg_error_set(GG_ERR_UNSUPPORTED, func, "tensor %s is expanded along dimension %d",
                                GG_SHAPE_STR(t, s), d);
    return GG_OK;
}

int gg_rand_uniform(gg_tensor *t, float lo, float hi, gg_rng *rng) {
    GG_CHECK_ARG(t, gg_last_status());
    if (!(lo <= hi) || !isfinite(lo) || !isfinite(hi))
        return GG_FAIL(GG_ERR_ARG, "need finite lo <= hi (lo %g, hi %g)", (double)lo, (double)hi);
    int st = check_target(t, __func__);
    return st ? st : fill_random(t, DIST_UNIFORM, lo, hi, rng, __func__);
}

int gg_rand_normal(gg_tensor *t, float mean, float std, gg_rng *rng) {
    GG_CHECK_ARG(t, gg_last_status());
    if (!(std >= 0) || !isfinite(std) || !isfinite(mean))
        return GG_FAIL(GG_ERR_ARG, "need a finite mean and std >= 0 (mean %g, std %g)", (double)mean,
                       (double)std);
    int st = check_target(t, __func__);
    return st ? st : fill_random(t, DIST_NORMAL, mean, std, rng, __func__);
}

float gg_init_gain(gg_nonlinearity nl, float param) {
    switch (nl) {
    case GG_NL_TANH:
        return 5.0f / 3.0f;
    case GG_NL_RELU:
        return sqrtf(2.0f);
    case GG_NL_LEAKY_RELU: {
        float a = param < 0 ? 0.01f : param;
        return sqrtf(2.0f / (1.0f + a * a));
    }
    default:
        return 1.0f;
    }
}

int gg_init_fans(const gg_tensor *t, int64_t *fan_in, int64_t *fan_out) {
    char s[GG_SHAPE_STR_MAX];
    GG_CHECK_ARG(t, gg_last_status());
    if (t->ndim < 2)
        return GG_FAIL(GG_ERR_SHAPE, "fan in and fan out need a tensor of rank >= 2, got %s",
                       GG_SHAPE_STR(t, s));
    int64_t rf = 1;
    for (int d = 2; d < t->ndim; d++) rf *= t->shape[d];
    if (fan_in) *fan_in = t->shape[1] * rf;
    if (fan_out) *fan_out = t->shape[0] * rf;
    return GG_OK;
}

static int fan_of(const gg_tensor *t, gg_fan_mode mode, double *fan, const char *func) {
    char s[GG_SHAPE_STR_MAX];
    int64_t fi, fo;
    if (t->ndim < 2)
        return gg_error_set(GG_ERR_SHAPE, func, "fan in and fan out need a tensor of rank >= 2, got %s",
                            GG_SHAPE_STR(t, s));
    gg_init_fans(t, &fi, &fo);
    *fan = (double)(mode == GG_FAN_OUT ? fo : fi);
    if (*fan <= 0)
        return gg_error_set(GG_ERR_SHAPE, func, "tensor %s has a zero fan", GG_SHAPE_STR(t, s));
    return GG_OK;
}

int gg_init_kaiming_uniform(gg_tensor *t, float a, gg_fan_mode mode, gg_nonlinearity nl, gg_rng *rng) {
    GG_CHECK_ARG(t, gg_last_status());
    double fan;
    int st = fan_of(t, mode, &fan, __func__);
    if (st) return st;
    float bound = (float)(gg_init_gain(nl, a) * sqrt(3.0 / fan));
    return gg_rand_uniform(t, -bound, bound, rng);
}

int gg_init_kaiming_normal(gg_tensor *t, float a, gg_fan_mode mode, gg_nonlinearity nl, gg_rng *rng) {
    GG_CHECK_ARG(t, gg_last_status());
    double fan;
    int st = fan_of(t, mode, &fan, __func__);
    if (st) return st;
    return gg_rand_normal(t, 0.0f, (float)(gg_init_gain(nl, a) / sqrt(fan)), rng);
}

static int xavier_scale(const gg_tensor *t, double *scale, const char *func) {
    double fi, fo;
    int st = fan_of(t, GG_FAN_IN, &fi, func);
    if (!st) st = fan_of(t, GG_FAN_OUT, &fo, func);
    if (!st) *scale = 1.0 / (fi + fo);
    return st;
}

int gg_init_xavier_uniform(gg_tensor *t, float gain, gg_rng *rng) {
    GG_CHECK_ARG(t, gg_last_status());
    double sc;
    int st = xavier_scale(t, &sc, __func__);
    if (st) return st;
    float bound = (float)(gain * sqrt(6.0 * sc));
    return gg_rand_uniform(t, -bound, bound, rng);
}

int gg_init_xavier_normal(gg_tensor *t, float gain, gg_rng *rng) {
    GG_CHECK_ARG(t, gg_last_status());
    double sc;
    int st = xavier_scale(t, &sc, __func__);
    if (st) return st;
    return gg_rand_normal(t, 0.0f, (float)(gain * sqrt(2.0 * sc)), rng);
}
