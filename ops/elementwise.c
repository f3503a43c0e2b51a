/* Elementwise ops: NumPy-broadcasting add/sub/mul/div, scalar arithmetic, exp/log/sqrt/pow and the
 * activations, each with PyTorch's forward and gradient. One strided n-d engine runs every kernel, forward
 * and backward; the op tables live in gg_elementwise_internal.h.
 *
 * Shapes: binary ops broadcast a [..] and b [..] to out [..] (NumPy rules); their backward sums each
 * contribution back to the input's shape (gg_accumulate_reduced). Unary ops keep the shape.
 * Gradients (g = dL/dout, y = out), as PyTorch's derivatives.yaml:
 *   add: ga = g, gb = g            sub: ga = g, gb = -g
 *   mul: ga = g b, gb = g a        div: ga = g / b, gb = -g ((a / b) / b) = -g (y / b)
 *   neg: -g   x+s: g   x*s: g s   s-x: -g   s/x: -(g s) (1/x)^2 (s/x is reciprocal(x) * s there)
 *   exp: g y   log: g / x   sqrt: g / (2 y)   square: g (2 x)   pow: g (p x^(p-1)), 0 when p == 0
 *   abs: g sign(x) (0 at 0)   relu: g [!(y <= 0)]   leaky_relu: g [x > 0] + g slope [x <= 0]
 *   sigmoid: g (1 - y) y   tanh: g (1 - y^2)   clamp: g [lo <= x <= hi]   sign_ste: g (straight through)
 * Forward special cases also follow PyTorch: pow with p in {0, 1, 2, 3, 0.5, -0.5, -1, -2} uses the exact
 * expressions (1, x, x*x, ...); relu and clamp propagate NaN and keep -0 (max/min that return x on ties, as
 * PyTorch's vector kernels); sign(NaN) = 0; the relu gradient passes through at NaN (threshold_backward). */
#include <math.h>
#include <stdbool.h>
#include <string.h>
#if defined(__SSE2__) || defined(__AVX__)
#include <immintrin.h>
#endif

#include "gg_elementwise_internal.h"
#include "gg_internal.h"
#include "gg_node.h"
#include "gg_ops.h"
#include "gg_runtime.h"

/* ================================ the engine ================================ */

/* The index space after coalescing: out is contiguous over it, x and y step through it by strides. */
typedef struct ew_space {
    int nd; /* >= 1 */
    int64_t shape[GG_MAX_DIMS];
    int64_t sx[GG_MAX_DIMS], sy[GG_MAX_DIMS];
    int64_t numel;
} ew_space;

/* Drop size-1 dims and merge each dim into its outer neighbour when both inputs step through the pair as
 * through one dim (out, contiguous, always does). False for an empty space. */
static bool ew_coalesce(int ndim, const int64_t *shape, const int64_t *sx, const int64_t *sy, ew_space *s) {
    int n = 0;
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++)
        if (shape[d] == 0) return false;
    for (int d = 0; d < ndim; d++) {
        numel *= shape[d];
        if (shape[d] == 1) continue;
        int64_t ys = sy ? sy[d] : 0;
        if (n > 0 && s->sx[n - 1] == sx[d] * shape[d] && s->sy[n - 1] == ys * shape[d]) {
            s->shape[n - 1] *= shape[d];
            s->sx[n - 1] = sx[d];
            s->sy[n - 1] = ys;
            continue;
        }
        s->shape[n] = shape[d];
        s->sx[n] = sx[d];
        s->sy[n] = ys;
        n++;
    }
    if (n == 0) { /* rank 0 or all sizes 1: one element */
        s->shape[0] = 1;
        s->sx[0] = s->sy[0] = 0;
        n = 1;
    }
    s->nd = n;
    s->numel = numel;
    return true;
}

/* sqrtf with errno semantics keeps GCC from vectorising it (without -fno-math-errno), so the contiguous
 * case uses the vector instruction, which is correctly rounded like sqrtf. */
static void sqrt_contig(int64_t n, float *out, const float *xp) {
    int64_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, _mm512_sqrt_ps(_mm512_loadu_ps(xp + i)));
#elif defined(__AVX__)
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_sqrt_ps(_mm256_loadu_ps(xp + i)));
#elif defined(__SSE2__)
    for (; i + 4 <= n; i += 4) _mm_storeu_ps(out + i, _mm_sqrt_ps(_mm_loadu_ps(xp + i)));
#endif
    for (; i < n; i++) out[i] = sqrtf(xp[i]);
}

/* A block of m rows of n elements: out row r starts at out + r * so, input rows at xp + r * sxr (and
 * yp + r * syr), elements n apart by sx (sy). One loop nest per op (and per stride pattern of the row) so
 * that the compiler vectorises each; the op is chosen once per block, and short rows (a [N,3] * [3]
 * broadcast) cost a loop iteration each, not a dispatch. */
#define EW_UNARY_FOR(expr, XV)                                      \
    for (int64_t r = 0; r < m; r++) {                               \
        float *o = out + r * so;                                    \
        const float *xr = xp + r * sxr;                             \
        for (int64_t i = 0; i < n; i++) {                           \
            const float x = (XV);                                   \
            (void)x;                                                \
            o[i] = (expr);                                          \
        }                                                           \
    }
#define EW_UNARY_LOOP(expr)                                         \
    if (sx == 1) {                                                  \
        EW_UNARY_FOR(expr, xr[i])                                   \
    } else {                                                        \
        EW_UNARY_FOR(expr, xr[i * sx])                              \
    }

static void unary_block(gg_ew_unary op, float s0, float s1, int64_t m, int64_t n, float *out, int64_t so,
                        const float *xp, int64_t sxr, int64_t sx) {
    if (op == GG_EWU_SQRT && sx == 1) {
        for (int64_t r = 0; r < m; r++) sqrt_contig(n, out + r * so, xp + r * sxr);
        return;
    }
    switch (op) {
#define GG_X_(name, expr)      \
    case GG_EWU_##name:        \
        EW_UNARY_LOOP(expr);   \
        break;
        GG_EW_UNARY_LIST(GG_X_)
#undef GG_X_
    case GG_EWU_COUNT:
        break;
    }
}

#define EW_BINARY_FOR(acc, expr, XV, YV)                            \
    for (int64_t r = 0; r < m; r++) {                               \
        float *o = out + r * so;                                    \
        const float *xr = xp + r * sxr, *yr = yp + r * syr;         \
        for (int64_t i = 0; i < n; i++) {                           \
            const float x = (XV), y = (YV);                         \
            (void)y;                                                \
            o[i] = (acc) ? o[i] + (expr) : (expr);                  \
        }                                                           \
    }
/* General strides: pointers stepped rather than indices multiplied, which keeps GCC from a register-
 * starved two-lane vectorisation of the strided loads. */
#define EW_BINARY_STRIDED(acc, expr)                                \
    for (int64_t r = 0; r < m; r++) {                               \
        float *o = out + r * so;                                    \
        const float *xq = xp + r * sxr, *yq = yp + r * syr;         \
        for (int64_t i = 0; i < n; i++, xq += sx, yq += sy) {       \
            const float x = *xq, y = *yq;                           \
            (void)y;                                                \
            o[i] = (acc) ? o[i] + (expr) : (expr);                  \
        }                                                           \
    }
/* Rows contiguous, x or y constant along a row (broadcast), general strides. */
#define EW_BINARY_LOOP(acc, expr)                                   \
    if (sx == 1 && sy == 1) {                                       \
        EW_BINARY_FOR(acc, expr, xr[i], yr[i])                      \
    } else if (sx == 0 && sy == 1) {                                \
        EW_BINARY_FOR(acc, expr, xr[0], yr[i])                      \
    } else if (sx == 1 && sy == 0) {                                \
        EW_BINARY_FOR(acc, expr, xr[i], yr[0])                      \
    } else {                                                        \
        EW_BINARY_STRIDED(acc, expr)                                \
    }

static void binary_block(gg_ew_binary op, float s0, float s1, int64_t m, int64_t n, float *out, int64_t so,
                         const float *xp, int64_t sxr, int64_t sx, const float *yp, int64_t syr, int64_t sy) {
    switch (op) {
#define GG_X_(name, acc, expr)      \
    case GG_EWB_##name:             \
        EW_BINARY_LOOP(acc, expr);  \
        break;
        GG_EW_BINARY_LIST(GG_X_)
#undef GG_X_
    case GG_EWB_COUNT:
        break;
    }
}

typedef struct ew_call {
    bool binary;
    int op;
    float s0, s1;
} ew_call;

static void ew_block(const ew_call *c, int64_t m, int64_t n, float *out, int64_t so, const float *xp, int64_t sxr,
                     int64_t sx, const float *yp, int64_t syr, int64_t sy) {
    if (c->binary)
        binary_block((gg_ew_binary)c->op, c->s0, c->s1, m, n, out, so, xp, sxr, sx, yp, syr, sy);
    else
        unary_block((gg_ew_unary)c->op, c->s0, c->s1, m, n, out, so, xp, sxr, sx);
}

/* A position in the index space: multi-index and the input offsets it maps to. */
typedef struct ew_pos {
    int64_t idx[GG_MAX_DIMS];
    int64_t ox, oy;
} ew_pos;

/* Move k steps along dim d (k <= what is left of it), carrying into the outer dims. */
static void ew_advance(const ew_space *s, ew_pos *p, int d, int64_t k) {
    p->idx[d] += k;
    p->ox += k * s->sx[d];
    p->oy += k * s->sy[d];
    while (d > 0 && p->idx[d] == s->shape[d]) {
        p->ox -= s->shape[d] * s->sx[d];
        p->oy -= s->shape[d] * s->sy[d];
        p->idx[d] = 0;
        d--;
        p->idx[d]++;
        p->ox += s->sx[d];
        p->oy += s->sy[d];
    }
}

/* Elements [begin, end) of the row-major index space: a partial row where the range starts or ends
 * mid-row, otherwise blocks of whole rows (the two innermost dims). */
static void ew_range(const ew_call *c, const ew_space *s, float *out, const float *x, const float *y,
                     int64_t begin, int64_t end) {
    const int nd = s->nd;
    const int64_t n = s->shape[nd - 1], sx = s->sx[nd - 1], sy = s->sy[nd - 1];
    const int64_t rows = nd > 1 ? s->shape[nd - 2] : 1, sxr = nd > 1 ? s->sx[nd - 2] : 0,
                  syr = nd > 1 ? s->sy[nd - 2] : 0;
    ew_pos p = {.ox = 0, .oy = 0};
    int64_t rem = begin;
    for (int d = nd - 1; d >= 0; d--) {
        p.idx[d] = rem % s->shape[d];
        rem /= s->shape[d];
        p.ox += p.idx[d] * s->sx[d];
        p.oy += p.idx[d] * s->sy[d];
    }
    for (int64_t pos = begin; pos < end;) {
        if (p.idx[nd - 1] == 0 && end - pos >= n) {
            int64_t m = nd > 1 ? rows - p.idx[nd - 2] : 1;
            if (m > (end - pos) / n) m = (end - pos) / n;
            ew_block(c, m, n, out + pos, n, x + p.ox, sxr, sx, y + p.oy, syr, sy);
            pos += m * n;
            if (nd > 1) ew_advance(s, &p, nd - 2, m);
        } else {
            int64_t len = n - p.idx[nd - 1];
            if (len > end - pos) len = end - pos;
            ew_block(c, 1, len, out + pos, len, x + p.ox, 0, sx, y + p.oy, 0, sy);
            pos += len;
            ew_advance(s, &p, nd - 1, len);
        }
    }
}

/* Transposed inputs. An input that steps through the innermost dim with a large stride but through the
 * next one with a small stride (a transposed matrix) would touch one cache line per element if walked row
 * by row; such spaces are walked in EW_TILE_R x EW_TILE_C tiles of the two inner dims instead: each tile of
 * that input is first copied (transposed) into a small buffer, every line it loads serving EW_TILE_R rows,
 * and the op runs on the buffer's contiguous rows. */
#define EW_TILE_R 16
#define EW_TILE_C 64

static bool strided_inner(int64_t inner, int64_t outer) {
    int64_t a = inner < 0 ? -inner : inner, b = outer < 0 ? -outer : outer;
    return a > 1 && b > 0 && b < a;
}

static bool ew_wants_tiles(const ew_space *s, bool binary) {
    const int i = s->nd - 1;
    if (s->nd < 2 || s->shape[i] < 16 || s->shape[i - 1] < 2) return false; /* short rows reuse lines anyway */
    return strided_inner(s->sx[i], s->sx[i - 1]) || (binary && strided_inner(s->sy[i], s->sy[i - 1]));
}

/* Copy a rows x cols tile of a strided input into buf (row-major), walking its columns outer so that the
 * reads follow the input's small stride; the op then runs on contiguous rows. */
static void ew_gather_tile(float *buf, int64_t rows, int64_t cols, const float *src, int64_t sr, int64_t sc) {
    for (int64_t i = 0; i < cols; i++)
        for (int64_t r = 0; r < rows; r++) buf[r * cols + i] = src[r * sr + i * sc];
}

/* Tile units [ubegin, uend): unit u is the block of rows (u % blocks) * EW_TILE_R ... of the matrix
 * (dims nd-2, nd-1) at outer index u / blocks (dims 0 .. nd-3). */
static void ew_tiles(const ew_call *c, const ew_space *s, float *out, const float *x, const float *y,
                     int64_t ubegin, int64_t uend) {
    const int nd = s->nd;
    const int64_t R = s->shape[nd - 2], C = s->shape[nd - 1], blocks = (R + EW_TILE_R - 1) / EW_TILE_R;
    const int64_t sxr = s->sx[nd - 2], sxc = s->sx[nd - 1], syr = s->sy[nd - 2], syc = s->sy[nd - 1];
    const bool gx = strided_inner(sxc, sxr), gy = c->binary && strided_inner(syc, syr);
    float bx[EW_TILE_R * EW_TILE_C], by[EW_TILE_R * EW_TILE_C];
    for (int64_t u = ubegin; u < uend; u++) {
        int64_t o = u / blocks, r0 = (u % blocks) * EW_TILE_R, r1 = r0 + EW_TILE_R < R ? r0 + EW_TILE_R : R;
        int64_t ox = r0 * sxr, oy = r0 * syr, rem = o;
        for (int d = nd - 3; d >= 0; d--) {
            int64_t k = rem % s->shape[d];
            rem /= s->shape[d];
            ox += k * s->sx[d];
            oy += k * s->sy[d];
        }
        float *ob = out + (o * R + r0) * C;
        for (int64_t c0 = 0; c0 < C; c0 += EW_TILE_C) {
            const int64_t len = c0 + EW_TILE_C < C ? EW_TILE_C : C - c0, m = r1 - r0;
            const float *xt = x + ox + c0 * sxc, *yt = y + oy + c0 * syc;
            int64_t xr = sxr, xc = sxc, yr = syr, yc = syc;
            if (gx) {
                ew_gather_tile(bx, m, len, xt, sxr, sxc);
                xt = bx, xr = len, xc = 1;
            }
            if (gy) {
                ew_gather_tile(by, m, len, yt, syr, syc);
                yt = by, yr = len, yc = 1;
            }
            ew_block(c, m, len, ob + c0, C, xt, xr, xc, yt, yr, yc);
        }
    }
}

static void ew_run(const ew_call *c, int ndim, const int64_t *shape, float *out, const float *x,
                   const int64_t *sx, const float *y, const int64_t *sy) {
    ew_space s;
    if (!ew_coalesce(ndim, shape, sx, sy, &s)) return;
    if (!y) y = x; /* unary: never read, keeps the pointer arithmetic defined */
    const int64_t total = s.numel;
    const int nt = total > GG_EW_PARALLEL_MIN ? gg_get_num_threads() : 1;
    if (ew_wants_tiles(&s, c->binary)) {
        const int64_t units = total / (s.shape[s.nd - 2] * s.shape[s.nd - 1]) *
                              ((s.shape[s.nd - 2] + EW_TILE_R - 1) / EW_TILE_R);
        if (nt <= 1) {
            ew_tiles(c, &s, out, x, y, 0, units);
            return;
        }
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int t = 0; t < nt; t++) ew_tiles(c, &s, out, x, y, units * t / nt, units * (t + 1) / nt);
        return;
    }
    if (nt <= 1) {
        ew_range(c, &s, out, x, y, 0, total);
        return;
    }
    /* equal chunks, multiples of 64 elements so that every thread's stores start cache-line aligned */
    const int64_t chunk = ((total + nt - 1) / nt + 63) & ~(int64_t)63;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int t = 0; t < nt; t++) {
        int64_t b = (int64_t)t * chunk, e = b + chunk < total ? b + chunk : total;
        if (b < e) ew_range(c, &s, out, x, y, b, e);
    }
}

void gg__ew_unary(gg_ew_unary op, float s0, float s1, int ndim, const int64_t *shape, float *out,
                  const float *x, const int64_t *x_stride) {
    ew_call c = {false, (int)op, s0, s1};
    ew_run(&c, ndim, shape, out, x, x_stride, NULL, NULL);
}

void gg__ew_binary(gg_ew_binary op, float s0, float s1, int ndim, const int64_t *shape, float *out,
                   const float *x, const int64_t *x_stride, const float *y, const int64_t *y_stride) {
    ew_call c = {true, (int)op, s0, s1};
    ew_run(&c, ndim, shape, out, x, x_stride, y, y_stride);
}

/* ================================ shared op plumbing ================================ */

/* Strides that read t as if broadcast to shape[0..nd-1] (0 along new and expanded dims). */
static void bcast_strides(const gg_tensor *t, int nd, const int64_t *shape, int64_t *st) {
    int lead = nd - t->ndim;
    for (int d = 0; d < nd; d++) {
        int k = d - lead;
        st[d] = (k < 0 || (t->shape[k] == 1 && shape[d] != 1)) ? 0 : t->stride[k];
    }
}

/* The gradient accumulator of input i into *g; GG_OK with *g == NULL when input i needs none. */
static int input_grad(gg_node *n, int i, gg_tensor **g) {
    *g = gg_node_grad(n, i);
    return (*g || !gg_node_needs_grad(n, i)) ? GG_OK : GG_ERR_NOMEM;
}

/* Save t for backward and return its slot (for node->ip), or -1 (t NULL: not needed). */
static int save_slot(gg_node *n, gg_tensor *t, int *st) {
    if (!t || *st) return -1;
    *st = gg_node_save(n, t);
    return *st ? -1 : n->n_saved - 1;
}

/* ================================ binary ops ================================ */

/* out = op(a broadcast, b broadcast); *node is the recorded node or NULL. */
static gg_tensor *binary_forward(const gg_op_def *def, gg_ew_binary op, gg_tensor *a, gg_tensor *b,
                                 const char *func, gg_node **node) {
    int nd;
    int64_t shape[GG_MAX_DIMS], sa[GG_MAX_DIMS], sb[GG_MAX_DIMS];
    *node = NULL;
    if (gg_broadcast_shapes(a->ndim, a->shape, b->ndim, b->shape, &nd, shape, func) != GG_OK) return NULL;
    if (gg_shape_numel(nd, shape, func) < 0) return NULL;
    gg_tensor *out = gg_op_output(nd, shape, func);
    if (!out) return NULL;
    bcast_strides(a, nd, shape, sa);
    bcast_strides(b, nd, shape, sb);
    gg__ew_binary(op, 0.0f, 0.0f, nd, shape, gg_tensor_data(out), gg_tensor_data(a), sa, gg_tensor_data(b), sb);
    gg_tensor *in[2] = {a, b};
    bool failed;
    *node = gg_op_record(def, out, 2, in, &failed);
    return failed ? NULL : out;
}

static gg_tensor *binary_finish(gg_tensor *out, int st, gg_tensor *a, gg_tensor *b, const char *func) {
    gg_tensor *in[2] = {a, b};
    return st ? NULL : gg_op_finish(out, func, 2, in);
}

/* Input i's gradient += contribution, computed over the output's shape from gout and y (a tensor that
 * broadcasts to it; NULL when the formula needs only gout). When input i was broadcast, the contribution
 * goes through a temporary (op `write`, or gout itself when write == GG_EWB_COUNT) and is summed down;
 * otherwise op `acc` adds it straight into the gradient. */
static int binary_grad(gg_node *n, int i, const gg_tensor *gout, gg_ew_binary acc, gg_ew_binary write,
                       const gg_tensor *y) {
    gg_tensor *gi;
    int st = input_grad(n, i, &gi);
    if (st || !gi) return st;
    const int nd = gout->ndim;
    int64_t sy[GG_MAX_DIMS];
    if (!y) y = gout;
    bcast_strides(y, nd, gout->shape, sy);
    if (gi->numel == gout->numel) { /* not broadcast: gi has gout's layout */
        gg__ew_binary(acc, 0.0f, 0.0f, nd, gout->shape, gg_tensor_data(gi), gg_tensor_data(gout), gout->stride,
                      gg_tensor_data(y), sy);
        return GG_OK;
    }
    if (write == GG_EWB_COUNT) return gg_accumulate_reduced(gi, gout);
    gg_tensor *tmp = gg_tensor_empty(nd, gout->shape);
    if (!tmp) return gg_last_status();
    gg__ew_binary(write, 0.0f, 0.0f, nd, gout->shape, gg_tensor_data(tmp), gg_tensor_data(gout), gout->stride,
                  gg_tensor_data(y), sy);
    st = gg_accumulate_reduced(gi, tmp);
    gg_tensor_free(tmp);
    return st;
}

/* ---- add, sub ---- */
static int add_backward(gg_node *n, const gg_tensor *gout) {
    int st = binary_grad(n, 0, gout, GG_EWB_ACC, GG_EWB_COUNT, NULL);
    return st ? st : binary_grad(n, 1, gout, GG_EWB_ACC, GG_EWB_COUNT, NULL);
}
static int sub_backward(gg_node *n, const gg_tensor *gout) {
    int st = binary_grad(n, 0, gout, GG_EWB_ACC, GG_EWB_COUNT, NULL);
    return st ? st : binary_grad(n, 1, gout, GG_EWB_ACC_NEG, GG_EWB_NEG, NULL);
}
static const gg_op_def ADD_OP = {"add", add_backward};
static const gg_op_def SUB_OP = {"sub", sub_backward};

gg_tensor *gg_add(gg_tensor *a, gg_tensor *b) {
    GG_CHECK_ARG(a, NULL);
    GG_CHECK_ARG(b, NULL);
    gg_node *node;
    gg_tensor *out = binary_forward(&ADD_OP, GG_EWB_ADD, a, b, __func__, &node);
    return out ? binary_finish(out, GG_OK, a, b, __func__) : NULL;
}

gg_tensor *gg_sub(gg_tensor *a, gg_tensor *b) {
    GG_CHECK_ARG(a, NULL);
    GG_CHECK_ARG(b, NULL);
    gg_node *node;
    gg_tensor *out = binary_forward(&SUB_OP, GG_EWB_SUB, a, b, __func__, &node);
    return out ? binary_finish(out, GG_OK, a, b, __func__) : NULL;
}

/* ---- mul: ip[0] = slot of b (for ga), ip[1] = slot of a (for gb); -1 when that gradient was not needed
 * at record time (PyTorch creates no edge then, so backward skips it too) ---- */
static int mul_backward(gg_node *n, const gg_tensor *gout) {
    int st = GG_OK;
    if (n->ip[0] >= 0) st = binary_grad(n, 0, gout, GG_EWB_ACC_MUL, GG_EWB_MUL, n->saved[n->ip[0]]);
    if (!st && n->ip[1] >= 0) st = binary_grad(n, 1, gout, GG_EWB_ACC_MUL, GG_EWB_MUL, n->saved[n->ip[1]]);
    return st;
}
static const gg_op_def MUL_OP = {"mul", mul_backward};

gg_tensor *gg_mul(gg_tensor *a, gg_tensor *b) {
    GG_CHECK_ARG(a, NULL);
    GG_CHECK_ARG(b, NULL);
    gg_node *node;
    gg_tensor *out = binary_forward(&MUL_OP, GG_EWB_MUL, a, b, __func__, &node);
    int st = GG_OK;
    if (node) {
        node->ip[0] = save_slot(node, gg_node_needs_grad(node, 0) ? b : NULL, &st);
        node->ip[1] = save_slot(node, gg_node_needs_grad(node, 1) ? a : NULL, &st);
    }
    return out ? binary_finish(out, st, a, b, __func__) : NULL;
}

/* ---- div: ip[0] = slot of b (for ga and gb), ip[1] = slot of the output (for gb) or -1 ---- */
static int div_backward(gg_node *n, const gg_tensor *gout) {
    const gg_tensor *b = n->saved[n->ip[0]];
    int st = binary_grad(n, 0, gout, GG_EWB_ACC_DIV, GG_EWB_DIV, b);
    if (st || n->ip[1] < 0 || !gg_node_needs_grad(n, 1)) return st;
    /* gb = -g (y / b): y / b over the output's shape first, as PyTorch rounds it */
    const gg_tensor *y = n->saved[n->ip[1]];
    int64_t sb[GG_MAX_DIMS];
    bcast_strides(b, y->ndim, y->shape, sb);
    gg_tensor *q = gg_tensor_empty(y->ndim, y->shape);
    if (!q) return gg_last_status();
    gg__ew_binary(GG_EWB_DIV, 0.0f, 0.0f, y->ndim, y->shape, gg_tensor_data(q), gg_tensor_data(y), y->stride,
                  gg_tensor_data(b), sb);
    st = binary_grad(n, 1, gout, GG_EWB_ACC_NMUL, GG_EWB_NMUL, q);
    gg_tensor_free(q);
    return st;
}
static const gg_op_def DIV_OP = {"div", div_backward};

gg_tensor *gg_div(gg_tensor *a, gg_tensor *b) {
    GG_CHECK_ARG(a, NULL);
    GG_CHECK_ARG(b, NULL);
    gg_node *node;
    gg_tensor *out = binary_forward(&DIV_OP, GG_EWB_DIV, a, b, __func__, &node);
    int st = GG_OK;
    if (node) {
        node->ip[0] = save_slot(node, b, &st);
        node->ip[1] = save_slot(node, gg_node_needs_grad(node, 1) ? out : NULL, &st);
    }
    return out ? binary_finish(out, st, a, b, __func__) : NULL;
}

/* ================================ unary ops ================================ */

typedef enum ew_save { SAVE_NONE, SAVE_INPUT, SAVE_OUTPUT } ew_save;

/* A unary op: its node's gg_op_def (first member, so backward finds the entry from node->op), the
 * gradient kernel gx += grad(g, saved) with the op's parameters (node->fp[0..1]), and what it saves. */
typedef struct unary_def {
    gg_op_def def;
    gg_ew_binary grad;
    ew_save save;
} unary_def;

static int unary_backward(gg_node *n, const gg_tensor *gout) {
    const unary_def *u = (const unary_def *)n->op;
    gg_tensor *gx;
    int st = input_grad(n, 0, &gx);
    if (st || !gx) return st;
    const gg_tensor *y = u->save == SAVE_NONE ? gout : n->saved[0];
    gg__ew_binary(u->grad, (float)n->fp[0], (float)n->fp[1], gx->ndim, gx->shape, gg_tensor_data(gx),
                  gg_tensor_data(gout), gout->stride, gg_tensor_data(y), y->stride);
    return GG_OK;
}

#define UNARY_DEF(name, grad, save) {{name, unary_backward}, grad, save}
static const unary_def NEG_OP = UNARY_DEF("neg", GG_EWB_ACC_NEG, SAVE_NONE);
static const unary_def ADD_SCALAR_OP = UNARY_DEF("add_scalar", GG_EWB_ACC, SAVE_NONE);
static const unary_def MUL_SCALAR_OP = UNARY_DEF("mul_scalar", GG_EWB_ACC_SCALE, SAVE_NONE);
static const unary_def RSUB_SCALAR_OP = UNARY_DEF("rsub_scalar", GG_EWB_ACC_NEG, SAVE_NONE);
static const unary_def RDIV_SCALAR_OP = UNARY_DEF("rdiv_scalar", GG_EWB_ACC_RDIV, SAVE_INPUT);
static const unary_def EXP_OP = UNARY_DEF("exp", GG_EWB_ACC_MUL, SAVE_OUTPUT);
static const unary_def LOG_OP = UNARY_DEF("log", GG_EWB_ACC_DIV, SAVE_INPUT);
static const unary_def SQRT_OP = UNARY_DEF("sqrt", GG_EWB_ACC_HALF_DIV, SAVE_OUTPUT);
static const unary_def SQUARE_OP = UNARY_DEF("square", GG_EWB_ACC_SQUARE, SAVE_INPUT);
static const unary_def ABS_OP = UNARY_DEF("abs", GG_EWB_ACC_SIGN, SAVE_INPUT);
static const unary_def RELU_OP = UNARY_DEF("relu", GG_EWB_ACC_RELU, SAVE_OUTPUT);
static const unary_def LEAKY_RELU_OP = UNARY_DEF("leaky_relu", GG_EWB_ACC_LEAKY, SAVE_INPUT);
static const unary_def SIGMOID_OP = UNARY_DEF("sigmoid", GG_EWB_ACC_SIGMOID, SAVE_OUTPUT);
static const unary_def TANH_OP = UNARY_DEF("tanh", GG_EWB_ACC_TANH, SAVE_OUTPUT);
static const unary_def CLAMP_OP = UNARY_DEF("clamp", GG_EWB_ACC_CLAMP, SAVE_INPUT);
static const unary_def SIGN_STE_OP = UNARY_DEF("sign_ste", GG_EWB_ACC, SAVE_NONE);

/* out = op(x; s0, s1), recorded with fp = {s0, s1}. */
static gg_tensor *unary_apply(const unary_def *u, gg_tensor *x, gg_ew_unary op, float s0, float s1,
                              const char *func) {
    gg_tensor *out = gg_op_output(x->ndim, x->shape, func);
    if (!out) return NULL;
    gg__ew_unary(op, s0, s1, x->ndim, x->shape, gg_tensor_data(out), gg_tensor_data(x), x->stride);
    bool failed;
    gg_node *node = gg_op_record(&u->def, out, 1, &x, &failed);
    if (failed) return NULL;
    if (node) {
        node->fp[0] = s0;
        node->fp[1] = s1;
        if (u->save != SAVE_NONE && gg_node_save(node, u->save == SAVE_INPUT ? x : out) != GG_OK) return NULL;
    }
    return gg_op_finish(out, func, 1, &x);
}

gg_tensor *gg_neg(gg_tensor *x) {
    GG_CHECK_ARG(x, NULL);
    return unary_apply(&NEG_OP, x, GG_EWU_NEG, 0.0f, 0.0f, __func__);
}

gg_tensor *gg_add_scalar(gg_tensor *x, float s) {
    GG_CHECK_ARG(x, NULL);
    return unary_apply(&ADD_SCALAR_OP, x, GG_EWU_ADDS, s, 0.0f, __func__);
}

gg_tensor *gg_mul_scalar(gg_tensor *x, float s) {
    GG_CHECK_ARG(x, NULL);
    return unary_apply(&MUL_SCALAR_OP, x, GG_EWU_MULS, s, 0.0f, __func__);
}

gg_tensor *gg_rsub_scalar(gg_tensor *x, float s) {
    GG_CHECK_ARG(x, NULL);
    return unary_apply(&RSUB_SCALAR_OP, x, GG_EWU_RSUBS, s, 0.0f, __func__);
}

gg_tensor *gg_rdiv_scalar(gg_tensor *x, float s) {
    GG_CHECK_ARG(x, NULL);
    return unary_apply(&RDIV_SCALAR_OP, x, GG_EWU_RDIVS, s, 0.0f, __func__);
}

gg_tensor *gg_exp(gg_tensor *x) {
    GG_CHECK_ARG(x, NULL);
    return unary_apply(&EXP_OP, x, GG_EWU_EXP, 0.0f, 0.0f, __func__);
}

gg_tensor *gg_log(gg_tensor *x) {
    GG_CHECK_ARG(x, NULL);
    return unary_apply(&LOG_OP, x, GG_EWU_LOG, 0.0f, 0.0f, __func__);
}

gg_tensor *gg_sqrt(gg_tensor *x) {
    GG_CHECK_ARG(x, NULL);
    return unary_apply(&SQRT_OP, x, GG_EWU_SQRT, 0.0f, 0.0f, __func__);
}

gg_tensor *gg_square(gg_tensor *x) {
    GG_CHECK_ARG(x, NULL);
    return unary_apply(&SQUARE_OP, x, GG_EWU_SQUARE, 0.0f, 0.0f, __func__);
}

gg_tensor *gg_abs(gg_tensor *x) {
    GG_CHECK_ARG(x, NULL);
    return unary_apply(&ABS_OP, x, GG_EWU_ABS, 0.0f, 0.0f, __func__);
}

gg_tensor *gg_relu(gg_tensor *x) {
    GG_CHECK_ARG(x, NULL);
    return unary_apply(&RELU_OP, x, GG_EWU_RELU, 0.0f, 0.0f, __func__);
}

gg_tensor *gg_leaky_relu(gg_tensor *x, float negative_slope) {
    GG_CHECK_ARG(x, NULL);
    return unary_apply(&LEAKY_RELU_OP, x, GG_EWU_LEAKY, negative_slope, 0.0f, __func__);
}

gg_tensor *gg_sigmoid(gg_tensor *x) {
    GG_CHECK_ARG(x, NULL);
    return unary_apply(&SIGMOID_OP, x, GG_EWU_SIGMOID, 0.0f, 0.0f, __func__);
}

gg_tensor *gg_tanh(gg_tensor *x) {
    GG_CHECK_ARG(x, NULL);
    return unary_apply(&TANH_OP, x, GG_EWU_TANH, 0.0f, 0.0f, __func__);
}

gg_tensor *gg_clamp(gg_tensor *x, float lo, float hi) {
    char s[GG_SHAPE_STR_MAX];
    GG_CHECK_ARG(x, NULL);
    if (isnan(lo) || isnan(hi) || lo > hi) {
        GG_FAIL(GG_ERR_ARG, "bounds [lo %g, hi %g] %s (x %s)", (double)lo, (double)hi,
                lo > hi ? "have lo > hi" : "contain NaN", GG_SHAPE_STR(x, s));
        return NULL;
    }
    return unary_apply(&CLAMP_OP, x, GG_EWU_CLAMP, lo, hi, __func__);
}

gg_tensor *gg_sign_ste(gg_tensor *x) {
    GG_CHECK_ARG(x, NULL);
    return unary_apply(&SIGN_STE_OP, x, GG_EWU_SIGN, 0.0f, 0.0f, __func__);
}

/* ---- pow: x^p with PyTorch's exact special exponents; the backward computes x^(p-1) with the same
 * kernel. The forward parameter is fp[0] (s0 of the kernel), p itself is fp[1]. ---- */
static gg_ew_unary pow_kernel(float p, float *s0) {
    *s0 = p;
    if (p == 0.0f) return GG_EWU_ONE;
    if (p == 1.0f) return GG_EWU_COPY;
    if (p == 2.0f) return GG_EWU_SQUARE;
    if (p == 3.0f) return GG_EWU_CUBE;
    if (p == 0.5f) return GG_EWU_SQRT;
    if (p == -0.5f) return GG_EWU_RSQRT;
    if (p == -2.0f) return GG_EWU_RECIP2;
    if (p == -1.0f) {
        *s0 = 1.0f;
        return GG_EWU_RDIVS;
    }
    return GG_EWU_POW;
}

static int pow_backward(gg_node *n, const gg_tensor *gout) {
    const float p = (float)n->fp[1];
    gg_tensor *gx;
    int st = input_grad(n, 0, &gx);
    if (st || !gx || p == 0.0f) return st; /* d(x^0)/dx = 0: the zeroed accumulator */
    const gg_tensor *x = n->saved[0];
    float s0;
    gg_ew_unary op = pow_kernel(p - 1.0f, &s0);
    if (op == GG_EWU_COPY || op == GG_EWU_ONE) { /* x^1 or x^0: no temporary needed */
        gg__ew_binary(op == GG_EWU_COPY ? GG_EWB_ACC_MUL_SCALED : GG_EWB_ACC_SCALE, p, 0.0f, x->ndim, x->shape,
                      gg_tensor_data(gx), gg_tensor_data(gout), gout->stride, gg_tensor_data(x), x->stride);
        return GG_OK;
    }
    gg_tensor *t = gg_tensor_empty(x->ndim, x->shape); /* x^(p-1) */
    if (!t) return gg_last_status();
    gg__ew_unary(op, s0, 0.0f, x->ndim, x->shape, gg_tensor_data(t), gg_tensor_data(x), x->stride);
    gg__ew_binary(GG_EWB_ACC_MUL_SCALED, p, 0.0f, x->ndim, x->shape, gg_tensor_data(gx), gg_tensor_data(gout),
                  gout->stride, gg_tensor_data(t), t->stride);
    gg_tensor_free(t);
    return GG_OK;
}
static const unary_def POW_OP = {{"pow", pow_backward}, GG_EWB_COUNT, SAVE_INPUT};

gg_tensor *gg_pow(gg_tensor *x, float p) {
    GG_CHECK_ARG(x, NULL);
    float s0;
    gg_ew_unary op = pow_kernel(p, &s0);
    return unary_apply(&POW_OP, x, op, s0, p, __func__);
}
