/* Elementwise kernels of ops/elementwise.c, visible to its tests (not installed): the op tables, the
 * strided n-d engine that runs them, and the vectorisable float math (exp, log, tanh, sigmoid) the
 * kernels use instead of libm, whose scalar calls GCC cannot vectorise without -ffast-math. */
#ifndef GG_ELEMENTWISE_INTERNAL_H
#define GG_ELEMENTWISE_INTERNAL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* ---- branch-free float math: every function is a straight-line expression with selects, so loops
 * that call it vectorise. Errors against libm (double reference) are checked in the tests. ---- */

static inline float gg__bits_to_float(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
static inline uint32_t gg__float_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* exp(x) within 2 ulp (normal results), correct inf / 0 / NaN / subnormal results.
 * Cody-Waite reduction x = n ln2 + r with |r| <= ln2/2 (ln2 split so n * LN2_HI is exact), Cephes
 * degree-6 polynomial for exp(r), then 2^n applied in two halves so that subnormal and overflowing
 * results round once. */
static inline float gg__expf(float x) {
    const float LOG2E = 1.44269504088896341f, LN2_HI = 0.693359375f, LN2_LO = -2.12194440e-4f;
    const float ROUND = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer (|v| < 2^22) */
    float xc = x < -104.0f ? -104.0f : x; /* exp(-104) rounds to 0, exp(89) overflows */
    xc = xc > 89.0f ? 89.0f : xc;
    xc = x == x ? xc : 0.0f;              /* keep NaN out of the integer conversion */
    float n = (xc * LOG2E + ROUND) - ROUND;
    float r = (xc - n * LN2_HI) - n * LN2_LO;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = (p * r) * r + r + 1.0f;
    int32_t ni = (int32_t)n, n1 = ni / 2, n2 = ni - n1; /* n in [-150, 128]: halves in [-75, 64] */
    y = y * gg__bits_to_float((uint32_t)(n1 + 127) << 23) * gg__bits_to_float((uint32_t)(n2 + 127) << 23);
    return x == x ? y : x;
}

/* log(x) within 2 ulp; log(0) = -inf, log(x < 0) = NaN, log(inf) = inf, subnormals handled.
 * x = 2^e m with m in [sqrt(1/2), sqrt(2)), Cephes degree-9 polynomial for log(m) around 1. */
static inline float gg__logf(float x) {
    const float SQRTH = 0.707106781186547524f, LN2_HI = 0.693359375f, LN2_LO = -2.12194440e-4f;
    int tiny = x < 1.17549435e-38f; /* subnormal (or <= 0): scale up by 2^25 first */
    float xs = tiny ? x * 33554432.0f : x;
    uint32_t u = gg__float_to_bits(xs);
    float e = (float)((int32_t)((u >> 23) & 0xff) - 126 - (tiny ? 25 : 0));
    float m = gg__bits_to_float((u & 0x007fffffu) | 0x3f000000u); /* [0.5, 1) */
    int lowm = m < SQRTH;
    e = lowm ? e - 1.0f : e;
    m = lowm ? m + m - 1.0f : m - 1.0f;
    float z = m * m;
    float p = 7.0376836292e-2f;
    p = p * m - 1.1514610310e-1f;
    p = p * m + 1.1676998740e-1f;
    p = p * m - 1.2420140846e-1f;
    p = p * m + 1.4249322787e-1f;
    p = p * m - 1.6668057665e-1f;
    p = p * m + 2.0000714765e-1f;
    p = p * m - 2.4999993993e-1f;
    p = p * m + 3.3333331174e-1f;
    float y = p * m * z;
    y = y + e * LN2_LO;
    y = y - 0.5f * z;
    float r = m + y;
    r = r + e * LN2_HI;
    r = x == INFINITY ? x : r;
    r = x == 0.0f ? -INFINITY : r;
    return (x < 0.0f || x != x) ? NAN : r;
}

/* tanh(x) within 3 ulp: odd Cephes polynomial for |x| < 0.625, 1 - 2 / (exp(2|x|) + 1) beyond. */
static inline float gg__tanhf(float x) {
    float ax = fabsf(x);
    float z = x * x;
    float p = -5.70498872745e-3f;
    p = p * z + 2.06390887954e-2f;
    p = p * z - 5.37397155531e-2f;
    p = p * z + 1.33314422036e-1f;
    p = p * z - 3.33332819422e-1f;
    float small = p * z * x + x;
    float big = 1.0f - 2.0f / (gg__expf(2.0f * ax) + 1.0f);
    big = x < 0.0f ? -big : big;
    float r = ax < 0.625f ? small : (x == x ? big : x);
    return x == 0.0f ? x : r; /* tanh(-0) = -0 */
}

/* 1 / (1 + exp(-x)), as PyTorch computes it. */
static inline float gg__sigmoidf(float x) { return 1.0f / (1.0f + gg__expf(-x)); }

/* min(max(x, lo), hi) with NaN propagated. */
static inline float gg__clampf(float x, float lo, float hi) {
    float v = x < lo ? lo : x;
    return v > hi ? hi : v;
}

/* ---- the op tables (X-macros: one line per op generates its enum constant and its loops) ----
 * Unary ops: out = f(x) with parameters s0, s1. */
#define GG_EW_UNARY_LIST(X)                                      \
    X(NEG, -x)                                                  \
    X(ADDS, x + s0)                                             \
    X(MULS, x * s0)                                             \
    X(RSUBS, s0 - x)                                            \
    X(RDIVS, s0 / x)                                            \
    X(EXP, gg__expf(x))                                         \
    X(LOG, gg__logf(x))                                         \
    X(SQRT, sqrtf(x))                                           \
    X(SQUARE, x * x)                                            \
    X(CUBE, x * x * x)                                          \
    X(RSQRT, 1.0f / sqrtf(x))                                   \
    X(RECIP2, 1.0f / (x * x))                                   \
    X(COPY, x)                                                  \
    X(ONE, 1.0f)                                                \
    X(POW, powf(x, s0))                                         \
    X(ABS, fabsf(x))                                            \
    X(RELU, x < 0.0f ? 0.0f : x)                                \
    X(LEAKY, x > 0.0f ? x : x * s0)                             \
    X(SIGMOID, gg__sigmoidf(x))                                 \
    X(TANH, gg__tanhf(x))                                       \
    X(CLAMP, gg__clampf(x, s0, s1))                             \
    X(SIGN, (float)((x > 0.0f) - (x < 0.0f)))

/* Binary ops: out = f(x, y) (ACC 0) or out += f(x, y) (ACC 1). The accumulating ones are gradient
 * contributions: x is the upstream gradient, y the saved input or output the formula needs. */
#define GG_EW_BINARY_LIST(X)                                     \
    X(ADD, 0, x + y)                                            \
    X(SUB, 0, x - y)                                            \
    X(MUL, 0, x * y)                                            \
    X(DIV, 0, x / y)                                            \
    X(NEG, 0, -x)                                               \
    X(NMUL, 0, -(x * y))                                        \
    X(ACC, 1, x)                                                \
    X(ACC_NEG, 1, -x)                                           \
    X(ACC_SCALE, 1, x * s0)                                     \
    X(ACC_MUL, 1, x * y)                                        \
    X(ACC_NMUL, 1, -(x * y))                                    \
    X(ACC_MUL_SCALED, 1, x * (s0 * y))                          \
    X(ACC_SQUARE, 1, x * (2.0f * y))                            \
    X(ACC_DIV, 1, x / y)                                        \
    X(ACC_RDIV, 1, -(x * s0) * ((1.0f / y) * (1.0f / y)))       \
    X(ACC_HALF_DIV, 1, x / (2.0f * y))                          \
    X(ACC_SIGN, 1, x * (float)((y > 0.0f) - (y < 0.0f)))        \
    X(ACC_RELU, 1, y <= 0.0f ? 0.0f : x)                        \
    X(ACC_LEAKY, 1, y > 0.0f ? x : x * s0)                      \
    X(ACC_SIGMOID, 1, x * (1.0f - y) * y)                       \
    X(ACC_TANH, 1, x * (1.0f - y * y))                          \
    X(ACC_CLAMP, 1, (y >= s0 && y <= s1) ? x : 0.0f)

typedef enum gg_ew_unary {
#define GG_X_(name, expr) GG_EWU_##name,
    GG_EW_UNARY_LIST(GG_X_)
#undef GG_X_
    GG_EWU_COUNT
} gg_ew_unary;

typedef enum gg_ew_binary {
#define GG_X_(name, acc, expr) GG_EWB_##name,
    GG_EW_BINARY_LIST(GG_X_)
#undef GG_X_
    GG_EWB_COUNT
} gg_ew_binary;

/* The engine. The index space is shape[0..ndim-1]; out is contiguous over it; inputs are read through
 * element strides (0 along broadcast dims), so expanded and transposed inputs need no copies. Results
 * do not depend on the thread count (OpenMP for more than GG_EW_PARALLEL_MIN elements). */
#define GG_EW_PARALLEL_MIN 32768
void gg__ew_unary(gg_ew_unary op, float s0, float s1, int ndim, const int64_t *shape, float *out,
                  const float *x, const int64_t *x_stride);
void gg__ew_binary(gg_ew_binary op, float s0, float s1, int ndim, const int64_t *shape, float *out,
                   const float *x, const int64_t *x_stride, const float *y, const int64_t *y_stride);

#endif
