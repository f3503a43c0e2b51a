/* Convolution kernels (internal, not installed): they see only pointers, sizes and strides, never
 * gg_tensor, so they can be tested and timed alone. All arrays are dense row-major float32:
 *   x [N,C,H,W], w [K,C/G,R,S], b [K], y [N,K,Ho,Wo] (and dx, dw, db, dy with the same shapes).
 * Forward kernels overwrite y; backward kernels ADD into dx, dw, db (gradient accumulators).
 * Every fast kernel shares the reference's semantics and is tested against it. */
#ifndef GG_CONV_KERNELS_H
#define GG_CONV_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The full geometry of one convolution. Padding at the bottom/right is implied by Ho and Wo. All int64
 * (no padding bytes), so a shape can be hashed and compared with memcmp. */
typedef struct gg_conv2d_shape {
    int64_t N, C, H, W;   /* input */
    int64_t K, R, S, G;   /* output channels, kernel height/width, groups */
    int64_t Ho, Wo;       /* output size */
    int64_t str_h, str_w; /* stride >= 1 */
    int64_t pad_t, pad_l; /* top/left padding >= 0 */
    int64_t dil_h, dil_w; /* dilation >= 1 */
} gg_conv2d_shape;

typedef enum gg_conv_algo {
    GG_CONV_ALGO_AUTO,   /* let the plan choose */
    GG_CONV_ALGO_REF,    /* plain-C loops, double accumulation: the oracle */
    GG_CONV_ALGO_GEMM,   /* im2col + BLIS GEMM, one GEMM per group over a chunk of the batch */
    GG_CONV_ALGO_DIRECT, /* shifted-plane loops, no im2col; OpenMP over (n, g) */
    GG_CONV_ALGO_XSMM,   /* libxsmm batch-reduce GEMMs on blocked copies, no im2col (C/G, K/G % 16 == 0) */
    GG_CONV_ALGO_LANES,  /* small groups (C/G == K/G <= 8) with 16 channels in the vector lanes */
    GG_CONV_ALGO_MASKED, /* small groups, same-size stride-1 outputs: flat planes with per-tap lane masks */
    GG_CONV_ALGO_COUNT
} gg_conv_algo;

/* ---- reference (any stride, padding, dilation, groups; single-threaded) ---- */
void gg__conv2d_fwd_ref(const gg_conv2d_shape *s, const float *x, const float *w,
                        const float *b /* or NULL */, float *y);
void gg__conv2d_bwd_data_ref(const gg_conv2d_shape *s, const float *dy, const float *w, float *dx);
void gg__conv2d_bwd_weight_ref(const gg_conv2d_shape *s, const float *x, const float *dy, float *dw);
void gg__conv2d_bwd_bias_ref(const gg_conv2d_shape *s, const float *dy, float *db);

/* ---- im2col + GEMM ----
 * nb samples share one GEMM per group (the im2col columns of nb samples side by side), so grouped
 * convolutions make G GEMMs per chunk instead of G per sample. ws is a workspace of
 * gg__conv2d_gemm_workspace(s, nb) bytes, 64-byte aligned. */
size_t gg__conv2d_gemm_workspace(const gg_conv2d_shape *s, int64_t nb);
void gg__conv2d_fwd_gemm(const gg_conv2d_shape *s, int64_t nb, const float *x, const float *w, const float *b,
                         float *y, void *ws);
/* dx and/or dw (either may be NULL) from one shared pass over the chunks. */
void gg__conv2d_bwd_gemm(const gg_conv2d_shape *s, int64_t nb, const float *x, const float *w,
                         const float *dy, float *dx, float *dw, void *ws);

/* ---- direct kernels (no im2col, no GEMM): any group size, for shapes gg__conv2d_direct_supports ----
 * ws: gg__conv2d_direct_workspace(s) bytes, 64-byte aligned, sized for gg_get_num_threads() threads. */
#define GG_CONV_DIRECT_MAX_TAPS 128
#define GG_CONV_DIRECT_MAX_PHASES 16
/* R*S <= GG_CONV_DIRECT_MAX_TAPS and str_h*str_w <= GG_CONV_DIRECT_MAX_PHASES. */
bool gg__conv2d_direct_supports(const gg_conv2d_shape *s);
size_t gg__conv2d_direct_workspace(const gg_conv2d_shape *s);
void gg__conv2d_fwd_direct(const gg_conv2d_shape *s, const float *x, const float *w, const float *b, float *y,
                           void *ws);
void gg__conv2d_bwd_data_direct(const gg_conv2d_shape *s, const float *dy, const float *w, float *dx,
                                void *ws);
void gg__conv2d_bwd_weight_direct(const gg_conv2d_shape *s, const float *x, const float *dy, float *dw,
                                  void *ws);

/* ---- batch-reduce GEMM direct convolution (libxsmm) ----
 * For C/G and K/G multiples of 16; the data gradient also needs stride 1 (gg__conv2d_xsmm_supports with
 * data_pass). ws: gg__conv2d_xsmm_workspace(s) bytes, 64-byte aligned, sized for gg_get_num_threads()
 * threads. Each returns false, having written nothing, when the shape is not supported or libxsmm has no
 * kernel for it (the caller then uses another algorithm). */
bool gg__conv2d_xsmm_supports(const gg_conv2d_shape *s, bool data_pass);
size_t gg__conv2d_xsmm_workspace(const gg_conv2d_shape *s);
bool gg__conv2d_fwd_xsmm(const gg_conv2d_shape *s, const float *x, const float *w, const float *b, float *y,
                         void *ws);
bool gg__conv2d_bwd_data_xsmm(const gg_conv2d_shape *s, const float *dy, const float *w, float *dx, void *ws);
bool gg__conv2d_bwd_weight_xsmm(const gg_conv2d_shape *s, const float *x, const float *dy, float *dw,
                                void *ws);

/* ---- channel-lane kernel for small groups ----
 * For C/G == K/G in {1, 2, 4, 8} with C a multiple of 16; the data gradient also needs stride 1.
 * ws: gg__conv2d_lanes_workspace(s) bytes for gg_get_num_threads() threads. Return false (nothing
 * written) on shapes they do not support. */
bool gg__conv2d_lanes_supports(const gg_conv2d_shape *s, bool data_pass);
size_t gg__conv2d_lanes_workspace(const gg_conv2d_shape *s);
bool gg__conv2d_fwd_lanes(const gg_conv2d_shape *s, const float *x, const float *w, const float *b, float *y,
                          void *ws);
bool gg__conv2d_bwd_data_lanes(const gg_conv2d_shape *s, const float *dy, const float *w, float *dx,
                               void *ws);
bool gg__conv2d_bwd_weight_lanes(const gg_conv2d_shape *s, const float *x, const float *dy, float *dw,
                                 void *ws);

/* ---- masked-plane kernel (AVX-512 builds) ----
 * For stride 1 with same-size outputs (Ho == H, Wo == W), planes up to 4096 pixels, C/G and K/G <= 16.
 * ws: gg__conv2d_masked_workspace(s) bytes for gg_get_num_threads() threads. Return false (nothing
 * written) on shapes they do not support. */
bool gg__conv2d_masked_supports(const gg_conv2d_shape *s);
size_t gg__conv2d_masked_workspace(const gg_conv2d_shape *s);
bool gg__conv2d_fwd_masked(const gg_conv2d_shape *s, const float *x, const float *w, const float *b, float *y,
                           void *ws);
bool gg__conv2d_bwd_data_masked(const gg_conv2d_shape *s, const float *dy, const float *w, float *dx,
                                void *ws);
bool gg__conv2d_bwd_weight_masked(const gg_conv2d_shape *s, const float *x, const float *dy, float *dw,
                                  void *ws);

/* db += sum over n, ho, wo of dy (double accumulation, OpenMP over channels). */
void gg__conv2d_bwd_bias(const gg_conv2d_shape *s, const float *dy, float *db);

/* ---- one pass through gg_conv2d's plan (ops/conv.c), for ops built on convolutions ----
 * The kernel is the one gg_conv2d would use for s at the current thread count (forced, planned, or, in
 * benchmark mode, timed now on these buffers when s is new). forward overwrites y (b may be NULL); backward adds the data
 * gradient into dx and the weight gradient into dw (either may be NULL; w is read only for dx and may be
 * NULL without it, x is read only for dw). N == 0 is a no-op. GG_OK or a negative status with a message
 * (allocation failures only). */
int gg__conv2d_forward(const gg_conv2d_shape *s, const float *x, const float *w, const float *b, float *y);
int gg__conv2d_backward(const gg_conv2d_shape *s, const float *x, const float *w, const float *dy, float *dx,
                        float *dw);

/* ---- op-level switches (ops/conv.c), for tests and benchmarks ----
 * Force every following gg_conv2d on this process to use `algo` where it applies (AUTO: the plan's
 * choice; an algorithm that does not fit a shape falls back to the plan's choice). Returns the previous. */
gg_conv_algo gg__conv2d_force_algo(gg_conv_algo algo);
/* Samples per GEMM chunk the plan picks for a shape. */
int64_t gg__conv2d_gemm_batch(const gg_conv2d_shape *s);
/* The kernel the plan chose for a pass (0 forward, 1 data gradient, 2 weight gradient) of s at the current
 * thread count; AUTO if that pass has not run yet. */
gg_conv_algo gg__conv2d_planned_algo(const gg_conv2d_shape *s, int pass);

#endif
