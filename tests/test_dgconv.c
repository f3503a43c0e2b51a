/* gg_dgconv2d and its helpers: the DGCONV.md test vectors, the relation's closed forms, special cases
 * against gg_conv2d, gradient checks, the fast path against the composite and both against a double-precision
 * hand computation, the sort flag, the regularizer, PyTorch golden cases and every error path. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gg_test_util.h"
#include "groupgrad.h"

static void one_thread(void) { gg_set_num_threads(1); }
static void teardown(void) { gg_tape_reset(NULL); }

static gg_tensor *rand_tensor(int ndim, const int64_t *shape, uint64_t seed) {
    gg_rng rng;
    gg_rng_init(&rng, seed);
    gg_tensor *t = gg_tensor_empty(ndim, shape);
    cr_assert_not_null(t, "%s", gg_last_error());
    cr_assert_eq(gg_rand_uniform(t, -1.0f, 1.0f, &rng), GG_OK, "%s", gg_last_error());
    return t;
}
#define RAND(seed, ...) rand_tensor(GG_SHAPE(__VA_ARGS__), (seed))

static gg_tensor *leaf(gg_tensor *t) {
    cr_assert_not_null(t, "%s", gg_last_error());
    cr_assert_eq(gg_requires_grad(t, true), GG_OK, "%s", gg_last_error());
    return t;
}

/* gates tensor [K] from values */
static gg_tensor *gates_of(int K, const float *v) {
    gg_tensor *t = gg_tensor_from_data(1, (const int64_t[]){K}, v);
    cr_assert_not_null(t, "%s", gg_last_error());
    return t;
}

/* gates for a binary pattern: bit (K-1-k) of `pattern` set -> gate k is +1 (g = 1), else -1 (g = 0) */
static gg_tensor *gates_pattern(int K, unsigned pattern) {
    float v[30];
    for (int k = 0; k < K; k++) v[k] = (pattern >> (K - 1 - k)) & 1 ? 0.75f : -0.25f;
    return gates_of(K, v);
}

/* max |got - ref| <= tol * max(floor, max |ref|) over n elements */
static void assert_close_f(const float *got, const float *ref, int64_t n, double tol, double floor, const char *what) {
    double scale = floor, worst = 0;
    int64_t at = 0;
    for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs(ref[i]));
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)ref[i]);
        if (!(d <= worst)) worst = d, at = i;
    }
    cr_assert(worst <= tol * scale, "%s: element %lld is %.8g, reference %.8g (max |ref| %.4g, tolerance %.2g)", what,
              (long long)at, n ? (double)got[at] : 0.0, n ? (double)ref[at] : 0.0, scale, tol);
}

static void assert_tensor_close(const gg_tensor *got, const gg_tensor *ref, double tol, const char *what) {
    cr_assert_not_null(got, "%s: NULL (%s)", what, gg_last_error());
    cr_assert_not_null(ref, "%s: reference NULL", what);
    cr_assert(gg_tensor_same_shape(got, ref), "%s: shapes differ", what);
    gg_tensor *a = gg_tensor_contiguous(got), *b = gg_tensor_contiguous(ref);
    assert_close_f(gg_tensor_data(a), gg_tensor_data(b), a->numel, tol, 1e-3, what);
    gg_tensor_free(a);
    gg_tensor_free(b);
}

/* got (float tensor) against a double array */
static void assert_close_d(const gg_tensor *got, const double *ref, double tol, const char *what) {
    cr_assert_not_null(got, "%s: NULL (%s)", what, gg_last_error());
    gg_tensor *a = gg_tensor_contiguous(got);
    const float *g = gg_tensor_data(a);
    double scale = 1e-3, worst = 0;
    int64_t at = 0;
    for (int64_t i = 0; i < a->numel; i++) scale = fmax(scale, fabs(ref[i]));
    for (int64_t i = 0; i < a->numel; i++) {
        double d = fabs((double)g[i] - ref[i]);
        if (!(d <= worst)) worst = d, at = i;
    }
    cr_assert(worst <= tol * scale, "%s: element %lld is %.8g, reference %.8g (max |ref| %.4g, tolerance %.2g)", what,
              (long long)at, (double)g[at], ref[at], scale, tol);
    gg_tensor_free(a);
}

static float item(const gg_tensor *t) {
    float v = NAN;
    cr_assert_not_null(t, "%s", gg_last_error());
    cr_assert_eq(gg_tensor_item(t, &v), GG_OK, "%s", gg_last_error());
    return v;
}

/* ---- one run: forward, backward with seed c, copies of everything (caller-owned) ---- */

typedef struct run_out {
    gg_tensor *y, *dx, *dw, *db, *dg;
} run_out;

static void run_free(run_out *r) {
    gg_tensor_free(r->y);
    gg_tensor_free(r->dx);
    gg_tensor_free(r->dw);
    gg_tensor_free(r->db);
    gg_tensor_free(r->dg);
}

static gg_tensor *grad_copy(gg_tensor *t) {
    if (!t || !t->requires_grad) return NULL;
    cr_assert_not_null(t->grad, "no gradient reached a leaf");
    gg_tensor *g = gg_tensor_copy(t->grad);
    gg_zero_grad(t);
    return g;
}

/* c NULL: a random seed derived from `seed` */
static run_out run_dgconv(gg_tensor *x, gg_tensor *w, gg_tensor *gt, gg_tensor *b, const gg_conv2d_params *p, bool sort,
                          gg_dgconv_path path, const gg_tensor *c, const char *what) {
    gg_dgconv_opts o = {.sort = sort, .path = path};
    gg_tensor *y = gg_dgconv2d(x, w, gt, b, p, &o);
    cr_assert_not_null(y, "%s: %s", what, gg_last_error());
    gg_tensor *seed = c ? NULL : rand_tensor(y->ndim, y->shape, 99);
    cr_assert_eq(gg_backward_ex(y, c ? c : seed, false), GG_OK, "%s: %s", what, gg_last_error());
    gg_tensor_free(seed);
    run_out r = {.y = gg_tensor_copy(y)};
    r.dx = grad_copy(x);
    r.dw = grad_copy(w);
    r.db = grad_copy(b);
    r.dg = grad_copy(gt);
    gg_tape_reset(NULL);
    return r;
}

static void assert_runs_close(const run_out *a, const run_out *b, double tol, const char *what) {
    char m[300];
    const gg_tensor *ga[] = {a->y, a->dx, a->dw, a->db, a->dg}, *gb[] = {b->y, b->dx, b->dw, b->db, b->dg};
    const char *names[] = {"y", "dx", "dw", "db", "dgates"};
    for (int i = 0; i < 5; i++) {
        if (!ga[i] && !gb[i]) continue;
        snprintf(m, sizeof m, "%s: %s", what, names[i]);
        assert_tensor_close(ga[i], gb[i], tol, m);
    }
}

/* ---- double-precision hand computation of the layer (the definition, by loops) ---- */

typedef struct geom {
    int64_t N, C, H, W, R, S, Ho, Wo, sh, sw, ph, pw, dh, dw;
} geom;

static geom geom_of(const gg_tensor *x, const gg_tensor *w, const gg_conv2d_params *p) {
    geom g = {.N = x->shape[0], .C = x->shape[1], .H = x->shape[2], .W = x->shape[3], .R = w->shape[2], .S = w->shape[3],
              .sh = p->stride[0], .sw = p->stride[1], .ph = p->pad[0], .pw = p->pad[2], .dh = p->dilation[0],
              .dw = p->dilation[1]};
    g.Ho = (g.H + 2 * g.ph - g.dh * (g.R - 1) - 1) / g.sh + 1;
    g.Wo = (g.W + 2 * g.pw - g.dw * (g.S - 1) - 1) / g.sw + 1;
    return g;
}

/* Factor order as DGCONV.md: identity, or with sort g = 0 first, then 0.5, then 1 (stable). */
static void hand_order(int K, const double *g, bool sort, int *ord) {
    int j = 0;
    if (!sort) {
        for (int k = 0; k < K; k++) ord[k] = k;
        return;
    }
    for (int l = 0; l < 3; l++)
        for (int k = 0; k < K; k++)
            if (g[k] == 0.5 * l) ord[j++] = k;
}

/* U[o][i] = prod_j (g[ord j] + (1 - g[ord j]) [bit_j(o) == bit_j(i)]); with skip >= 0, the position skip
 * contributes (J - I) instead: dU/dg[ord skip]. */
static double hand_u(int K, const double *g, const int *ord, int64_t o, int64_t i, int skip) {
    double u = 1;
    for (int j = 0; j < K; j++) {
        const int same = ((o >> (K - 1 - j)) & 1) == ((i >> (K - 1 - j)) & 1);
        u *= j == skip ? (same ? 0.0 : 1.0) : g[ord[j]] + (1 - g[ord[j]]) * same;
    }
    return u;
}

typedef struct hand_out {
    double *y, *dx, *dw, *db, *dg;
} hand_out;

static void hand_free(hand_out *h) {
    free(h->y);
    free(h->dx);
    free(h->dw);
    free(h->db);
    free(h->dg);
}

/* y, and the gradients of sum(y * c): dx, dW = U * Ghat, db, dg[k] = sum S * dU/dg[k]. */
static hand_out hand_dgconv(const gg_tensor *xt, const gg_tensor *wt, const gg_tensor *gtt, const gg_tensor *bt,
                            const gg_tensor *ct, const gg_conv2d_params *p, bool sort) {
    const geom G = geom_of(xt, wt, p);
    const int K = (int)gtt->numel;
    gg_tensor *xc = gg_tensor_contiguous(xt), *wc = gg_tensor_contiguous(wt), *cc = gg_tensor_contiguous(ct);
    gg_tensor *gc = gg_tensor_contiguous(gtt);
    const float *x = gg_tensor_data(xc), *w = gg_tensor_data(wc), *c = gg_tensor_data(cc), *gv = gg_tensor_data(gc);
    double g[30];
    int ord[30];
    for (int k = 0; k < K; k++) g[k] = gv[k] > 0 ? 1.0 : gv[k] < 0 ? 0.0 : 0.5;
    hand_order(K, g, sort, ord);
    const int64_t C = G.C, RS = G.R * G.S;
    double *U = malloc(sizeof(double) * (size_t)(C * C));
    for (int64_t o = 0; o < C; o++)
        for (int64_t i = 0; i < C; i++) U[o * C + i] = hand_u(K, g, ord, o, i, -1);
    hand_out h = {.y = calloc((size_t)(G.N * C * G.Ho * G.Wo), sizeof(double)),
                  .dx = calloc((size_t)(G.N * C * G.H * G.W), sizeof(double)),
                  .dw = calloc((size_t)(C * C * RS), sizeof(double)), .db = calloc((size_t)C, sizeof(double)),
                  .dg = calloc((size_t)K, sizeof(double))};
    double *ghat = calloc((size_t)(C * C * RS), sizeof(double));
    for (int64_t n = 0; n < G.N; n++)
        for (int64_t o = 0; o < C; o++)
            for (int64_t ho = 0; ho < G.Ho; ho++)
                for (int64_t wo = 0; wo < G.Wo; wo++) {
                    const int64_t yi = ((n * C + o) * G.Ho + ho) * G.Wo + wo;
                    double acc = bt ? (double)gg_tensor_data(bt)[o * bt->stride[0]] : 0.0;
                    const double cy = c[yi];
                    h.db[o] += cy;
                    for (int64_t i = 0; i < C; i++)
                        for (int64_t r = 0; r < G.R; r++)
                            for (int64_t s = 0; s < G.S; s++) {
                                const int64_t hi = ho * G.sh - G.ph + r * G.dh, wi = wo * G.sw - G.pw + s * G.dw;
                                if (hi < 0 || hi >= G.H || wi < 0 || wi >= G.W) continue;
                                const int64_t xi = ((n * C + i) * G.H + hi) * G.W + wi, wk = (o * C + i) * RS + r * G.S + s;
                                acc += U[o * C + i] * (double)w[wk] * (double)x[xi];
                                h.dx[xi] += cy * U[o * C + i] * (double)w[wk];
                                ghat[wk] += cy * (double)x[xi];
                            }
                    h.y[yi] = acc;
                }
    for (int64_t o = 0; o < C; o++)
        for (int64_t i = 0; i < C; i++) {
            double s = 0;
            for (int64_t q = 0; q < RS; q++) {
                const int64_t wk = (o * C + i) * RS + q;
                h.dw[wk] = U[o * C + i] * ghat[wk];
                s += ghat[wk] * (double)w[wk];
            }
            for (int j = 0; j < K; j++) h.dg[ord[j]] += s * hand_u(K, g, ord, o, i, j);
        }
    free(U);
    free(ghat);
    gg_tensor_free(xc);
    gg_tensor_free(wc);
    gg_tensor_free(cc);
    gg_tensor_free(gc);
    return h;
}

static void assert_run_matches_hand(const run_out *r, const hand_out *h, double tol, const char *what) {
    char m[300];
    snprintf(m, sizeof m, "%s: y vs hand", what);
    assert_close_d(r->y, h->y, tol, m);
    if (r->dx) snprintf(m, sizeof m, "%s: dx vs hand", what), assert_close_d(r->dx, h->dx, tol, m);
    if (r->dw) snprintf(m, sizeof m, "%s: dw vs hand", what), assert_close_d(r->dw, h->dw, tol, m);
    if (r->db) snprintf(m, sizeof m, "%s: db vs hand", what), assert_close_d(r->db, h->db, tol, m);
    if (r->dg) snprintf(m, sizeof m, "%s: dgates vs hand", what), assert_close_d(r->dg, h->dg, tol, m);
}

/* ---- DGCONV.md section 5: the test vectors ---- */

typedef struct vector_row {
    float gt[2];
    float y[4], dx[4], dgt[2], zeta, dzeta;
} vector_row;

static const vector_row VECTORS[4] = {
    {{0.5f, -0.5f}, {0.25f, 1.2f, 1.45f, 2.0f}, {1.9f, 0.1f, 2.5f, 0.0f}, {-1.85f, 4.175f}, 8, 5.545177f},
    {{-0.5f, 0.5f}, {-0.3f, -0.7f, 4.15f, 5.55f}, {-0.4f, -0.4f, 2.95f, 3.2f}, {-4.35f, 6.675f}, 8, 5.545177f},
    {{0.5f, 0.5f}, {1.05f, 2.05f, 3.05f, 4.05f}, {2.05f, 2.3f, 2.55f, 2.8f}, {-4.35f, 4.175f}, 16, 11.090355f},
    {{-0.5f, -0.5f}, {0.1f, -1.2f, 0.55f, 4.8f}, {0.1f, -0.6f, 2.2f, 0.8f}, {-1.85f, 6.675f}, 4, 2.772589f},
};

static void assert_list_close(const gg_tensor *t, const float *e, int n, double tol, const char *what) {
    cr_assert_not_null(t, "%s: NULL (%s)", what, gg_last_error());
    cr_assert_eq(t->numel, n, "%s: %lld elements", what, (long long)t->numel);
    gg_tensor *c = gg_tensor_contiguous(t);
    for (int i = 0; i < n; i++)
        cr_assert(fabs((double)gg_tensor_data(c)[i] - (double)e[i]) <= tol, "%s[%d] = %.7g, expected %.7g", what, i,
                  (double)gg_tensor_data(c)[i], (double)e[i]);
    gg_tensor_free(c);
}

Test(dgconv_vectors, table, .init = one_thread, .fini = teardown) {
    float wv[16];
    for (int i = 0; i < 16; i++) wv[i] = 0.1f * (float)(i + 1);
    const gg_dgconv_path paths[] = {GG_DGCONV_COMPOSITE, GG_DGCONV_FAST, GG_DGCONV_AUTO};
    const char *pname[] = {"composite", "fast", "auto"};
    for (int row = 0; row < 4; row++)
        for (int pi = 0; pi < 3; pi++) {
            const vector_row *v = &VECTORS[row];
            gg_tensor *w = leaf(gg_tensor_from_data(GG_SHAPE(4, 4, 1, 1), wv));
            gg_tensor *x = leaf(gg_tensor_from_data(GG_SHAPE(1, 4, 1, 1), (const float[]){1, -2, 0.5f, 3}));
            gg_tensor *gt = leaf(gates_of(2, v->gt));
            gg_tensor *c = gg_tensor_from_data(GG_SHAPE(1, 4, 1, 1), (const float[]){1, -1, 2, 0.5f});
            char what[100];
            snprintf(what, sizeof what, "row %d (%s)", row + 1, pname[pi]);
            run_out r = run_dgconv(x, w, gt, NULL, NULL, false, paths[pi], c, what);
            char m[160];
            snprintf(m, sizeof m, "%s: y", what);
            assert_list_close(r.y, v->y, 4, 1e-5, m);
            snprintf(m, sizeof m, "%s: dL/dx", what);
            assert_list_close(r.dx, v->dx, 4, 1e-5, m);
            snprintf(m, sizeof m, "%s: dL/dgt", what);
            assert_list_close(r.dg, v->dgt, 2, 1e-5, m);
            if (row == 0) {
                snprintf(m, sizeof m, "%s: dL/dW", what);
                assert_list_close(r.dw, (const float[]){1, 0, 0.5f, 0, 0, 2, 0, -3, 2, 0, 1, 0, 0, -1, 0, 1.5f}, 16, 1e-6,
                                  m);
            }
            run_free(&r);
            /* zeta, and its code-form gradient */
            gg_tensor *z = gg_dgconv_zeta(gt, GG_ZETA_CODE);
            cr_assert_eq(item(z), v->zeta, "%s: zeta %g, expected %g", what, (double)item(z), (double)v->zeta);
            cr_assert_eq(gg_backward(z), GG_OK, "%s", gg_last_error());
            assert_list_close(gt->grad, (const float[]){v->dzeta, v->dzeta}, 2, 1e-5, "dzeta/dgt (code form)");
            gg_tensor *all[] = {w, x, gt, c};
            for (int i = 0; i < 4; i++) gg_tensor_free(all[i]);
            gg_tape_reset(NULL);
        }
}

/* gt = [0, 1] gives g = [0.5, 1]: U_0 = [[1, .5], [.5, 1]], U = U_0 kron J; AUTO runs the composite. */
Test(dgconv_vectors, half_gate_at_zero, .init = one_thread, .fini = teardown) {
    gg_tensor *gt = gates_of(2, (const float[]){0.0f, 1.0f});
    gg_tensor *u = gg_dgconv_relation(gt, false);
    gt_assert_list(u, 1, 1, 0.5f, 0.5f, 1, 1, 0.5f, 0.5f, 0.5f, 0.5f, 1, 1, 0.5f, 0.5f, 1, 1);
    float wv[16];
    for (int i = 0; i < 16; i++) wv[i] = 0.1f * (float)(i + 1);
    gg_tensor *w = gg_tensor_from_data(GG_SHAPE(4, 4, 1, 1), wv);
    gg_tensor *x = gg_tensor_from_data(GG_SHAPE(1, 4, 1, 1), (const float[]){1, -2, 0.5f, 3});
    gg_tensor *y = gg_dgconv2d(x, w, gt, NULL, NULL, NULL);
    float e[4];
    const float xv[4] = {1, -2, 0.5f, 3};
    for (int o = 0; o < 4; o++) {
        double s = 0;
        for (int i = 0; i < 4; i++) s += (o / 2 == i / 2 ? 1.0 : 0.5) * wv[o * 4 + i] * xv[i];
        e[o] = (float)s;
    }
    assert_list_close(y, e, 4, 1e-6, "y at g = [0.5, 1]");
    gg_clear_error();
    gg_dgconv_opts fast = {.path = GG_DGCONV_FAST};
    cr_assert_null(gg_dgconv2d(x, w, gt, NULL, NULL, &fast));
    gt_assert_error(GG_ERR_ARG, "gg_dgconv2d");
    gt_assert_msg_has("gate 0 is exactly 0");
    gg_tensor_free(gt);
    gg_tensor_free(w);
    gg_tensor_free(x);
}

/* ---- the relation ---- */

Test(dgconv_relation, binary_closed_form_and_groups, .init = one_thread, .fini = teardown) {
    for (int K = 3; K <= 4; K++) {
        const int64_t C = (int64_t)1 << K;
        for (unsigned pat = 0; pat < (1u << K); pat++) {
            gg_tensor *gt = gates_pattern(K, pat);
            gg_tensor *u = gg_dgconv_relation(gt, false);
            gt_assert_shape(u, C, C);
            gg_tensor *uc = gg_tensor_contiguous(u);
            const unsigned M0 = ~pat & ((1u << K) - 1); /* bits of the zero gates */
            int G = 0, Cg = 0, perm[16], seen[16] = {0};
            cr_assert_eq(gg_dgconv_group_info(gt, false, &G, &Cg, perm), GG_OK, "%s", gg_last_error());
            cr_assert_eq(G, 1 << __builtin_popcount(M0), "K %d pattern %u: %d groups", K, pat, G);
            cr_assert_eq(G * Cg, C);
            for (int64_t c = 0; c < C; c++) {
                cr_assert(perm[c] >= 0 && perm[c] < C && !seen[perm[c]], "perm is not a permutation");
                seen[perm[c]] = 1;
            }
            for (int64_t o = 0; o < C; o++)
                for (int64_t i = 0; i < C; i++) {
                    const float e = ((o ^ i) & M0) == 0 ? 1.0f : 0.0f;
                    cr_assert_eq(gg_tensor_data(uc)[o * C + i], e, "K %d pattern %u: U[%lld][%lld]", K, pat, (long long)o,
                                 (long long)i);
                    cr_assert_eq(e == 1.0f, perm[o] / Cg == perm[i] / Cg, "K %d pattern %u: perm groups (%lld, %lld)", K,
                                 pat, (long long)o, (long long)i);
                }
            gg_tensor_free(uc);
            gg_tensor_free(gt);
            gg_tape_reset(NULL);
        }
    }
}

Test(dgconv_relation, fractional_formula, .init = one_thread, .fini = teardown) {
    const float levels[3] = {-2.0f, 0.0f, 3.0f}; /* g = 0, 0.5, 1 */
    for (int code = 0; code < 27; code++) {
        float v[3] = {levels[code % 3], levels[code / 3 % 3], levels[code / 9]};
        double g[3];
        for (int k = 0; k < 3; k++) g[k] = v[k] > 0 ? 1.0 : v[k] < 0 ? 0.0 : 0.5;
        for (int sort = 0; sort < 2; sort++) {
            gg_tensor *gt = gates_of(3, v);
            gg_tensor *u = gg_dgconv_relation(gt, sort);
            gt_assert_shape(u, 8, 8);
            int ord[3];
            hand_order(3, g, sort, ord);
            for (int64_t o = 0; o < 8; o++)
                for (int64_t i = 0; i < 8; i++) {
                    float got;
                    gg_tensor_get(u, (const int64_t[]){o, i}, &got);
                    double e = 1;
                    if (!sort) /* the DGCONV.md formula, written out independently of hand_u */
                        for (int k = 0; k < 3; k++) e *= g[k] + (1 - g[k]) * (((o >> (2 - k)) & 1) == ((i >> (2 - k)) & 1));
                    else
                        e = hand_u(3, g, ord, o, i, -1);
                    cr_assert_eq((double)got, e, "gates (%g, %g, %g) sort %d: U[%lld][%lld] = %g, expected %g", (double)v[0],
                                 (double)v[1], (double)v[2], sort, (long long)o, (long long)i, (double)got, e);
                }
            gg_tensor_free(gt);
            gg_tape_reset(NULL);
        }
    }
}

/* ---- special cases against gg_conv2d ---- */

/* dgconv with gates `pat` (K = 3, C = 8) equals gg_conv2d(x, wblk, groups G) where wblk[o, j] =
 * W[o, (o / Cg)*Cg + j] (contiguous groups), on both paths: y, dx, db, and dW scattered back. */
static void check_against_grouped(unsigned pat, int G, const char *what) {
    const int K = 3, C = 8, Cg = C / G;
    gg_conv2d_params p = gg_conv2d_make(2, 1, 1, 1);
    gg_tensor *x = leaf(RAND(11, 2, C, 7, 5)), *w = leaf(RAND(12, C, C, 3, 3)), *b = leaf(RAND(13, C));
    gg_tensor *gt = gates_pattern(K, pat);
    /* reference: grouped conv on the connected blocks */
    gg_tensor *wb = gg_tensor_empty(GG_SHAPE(C, Cg, 3, 3));
    for (int o = 0; o < C; o++)
        for (int j = 0; j < Cg; j++)
            memcpy(gg_tensor_data(wb) + (o * Cg + j) * 9, gg_tensor_data(w) + (o * C + o / Cg * Cg + j) * 9, 9 * sizeof(float));
    leaf(wb);
    gg_tensor *x2 = leaf(gg_tensor_copy(x)), *b2 = leaf(gg_tensor_copy(b));
    gg_conv2d_params pg = p;
    pg.groups = G;
    gg_tensor *y = gg_conv2d(x2, wb, b2, &pg);
    gg_tensor *c = rand_tensor(y->ndim, y->shape, 99);
    cr_assert_eq(gg_backward_ex(y, c, false), GG_OK, "%s", gg_last_error());
    run_out ref = {.y = gg_tensor_copy(y), .dx = gg_tensor_copy(x2->grad), .db = gg_tensor_copy(b2->grad)};
    ref.dw = gg_tensor_zeros(GG_SHAPE(C, C, 3, 3));
    for (int o = 0; o < C; o++)
        for (int j = 0; j < Cg; j++)
            memcpy(gg_tensor_data(ref.dw) + (o * C + o / Cg * Cg + j) * 9, gg_tensor_data(wb->grad) + (o * Cg + j) * 9,
                   9 * sizeof(float));
    gg_tape_reset(NULL);
    for (int path = GG_DGCONV_COMPOSITE; path <= GG_DGCONV_FAST; path++) {
        char m[200];
        snprintf(m, sizeof m, "%s (%s)", what, path == GG_DGCONV_FAST ? "fast" : "composite");
        run_out r = run_dgconv(x, w, gt, b, &p, false, (gg_dgconv_path)path, c, m);
        gg_tensor_free(r.dg);
        r.dg = NULL;
        assert_runs_close(&r, &ref, 1e-5, m);
        run_free(&r);
    }
    run_free(&ref);
    gg_tensor *all[] = {x, w, b, gt, wb, x2, b2, c};
    for (int i = 0; i < 8; i++) gg_tensor_free(all[i]);
}

Test(dgconv_special, dense_depthwise_contiguous_groups, .init = one_thread, .fini = teardown) {
    check_against_grouped(7, 1, "all ones = dense conv");
    check_against_grouped(0, 8, "all zeros = depthwise");
    check_against_grouped(3, 2, "one leading zero = 2 contiguous groups");
    check_against_grouped(1, 4, "two leading zeros = 4 contiguous groups");
}

/* ---- gradient checks (x, W, bias; gates are piecewise constant) ---- */

typedef struct gc_ctx {
    gg_tensor *gates;
    gg_conv2d_params p;
    gg_dgconv_opts o;
} gc_ctx;

static gg_tensor *gc_fn(gg_tensor *const *in, void *vctx) {
    gc_ctx *ctx = vctx;
    return gg_dgconv2d(in[0], in[1], ctx->gates, in[2], &ctx->p, &ctx->o);
}

static void gradcheck_case(const float *gates, int K, bool transposed_x, gg_dgconv_path path, bool sort, uint64_t seed) {
    const int64_t C = (int64_t)1 << K;
    gc_ctx ctx = {.gates = gates_of(K, gates), .p = gg_conv2d_make(1, 1, 1, 1), .o = {.sort = sort, .path = path}};
    ctx.p.stride[1] = 2;
    gg_tensor *base = NULL, *x;
    if (transposed_x) { /* a non-contiguous leaf: [N,C,W,H] transposed */
        base = RAND(seed, 2, C, 5, 4);
        x = gg_tensor_transpose(base, 2, 3);
        leaf(x);
    } else {
        x = leaf(RAND(seed, 2, C, 4, 5));
    }
    gg_tensor *w = leaf(RAND(seed + 1, C, C, 3, 2)), *b = leaf(RAND(seed + 2, C));
    gg_tensor *in[3] = {x, w, b};
    gg_gradcheck_report rep;
    cr_assert_eq(gg_gradcheck(gc_fn, &ctx, 3, in, NULL, &rep), GG_OK, "%s", gg_last_error());
    char buf[300];
    cr_assert(rep.passed, "K %d path %d sort %d transposed %d: %s", K, (int)path, sort, transposed_x,
              gg_gradcheck_describe(&rep, buf, sizeof buf));
    gg_tensor *all[] = {ctx.gates, base, x, w, b};
    for (int i = 0; i < 5; i++) gg_tensor_free(all[i]);
}

Test(dgconv_grad, gradcheck_x_w_bias, .init = one_thread, .fini = teardown) {
    const float binary[3] = {0.4f, -0.3f, 0.2f}, fractional[3] = {-0.4f, 0.0f, 0.6f}, interleaved[2] = {0.5f, -0.5f};
    gradcheck_case(binary, 3, false, GG_DGCONV_COMPOSITE, false, 1);
    gradcheck_case(binary, 3, true, GG_DGCONV_COMPOSITE, false, 2);
    gradcheck_case(fractional, 3, false, GG_DGCONV_COMPOSITE, false, 3);
    gradcheck_case(fractional, 3, true, GG_DGCONV_COMPOSITE, true, 4);
    gradcheck_case(binary, 3, false, GG_DGCONV_FAST, false, 5);
    gradcheck_case(binary, 3, true, GG_DGCONV_FAST, true, 6);
    gradcheck_case(interleaved, 2, true, GG_DGCONV_FAST, false, 7);
}

/* every path against the double-precision definition, binary and fractional gates, with and without sort */
Test(dgconv_grad, against_hand_computation, .init = one_thread, .fini = teardown) {
    const struct {
        int K;
        float g[4];
    } cases[] = {{2, {0.5f, -0.5f}}, {3, {-0.1f, 0.3f, -0.7f}}, {3, {0.0f, -1.0f, 1.0f}}, {4, {0.2f, -0.2f, 0.0f, -0.9f}},
                 {4, {1.0f, -1.0f, -1.0f, 1.0f}}};
    gg_conv2d_params p = gg_conv2d_make(2, 1, 2, 1);
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++)
        for (int sort = 0; sort < 2; sort++) {
            const int K = cases[ci].K;
            const int64_t C = (int64_t)1 << K;
            gg_tensor *x = leaf(RAND(20 + ci, 2, C, 7, 6)), *w = leaf(RAND(30 + ci, C, C, 3, 2)), *b = leaf(RAND(40 + ci, C));
            gg_tensor *gt = leaf(gates_of(K, cases[ci].g));
            gg_tensor *c = RAND(50 + ci, 2, C, 3, 3);
            hand_out h = hand_dgconv(x, w, gt, b, c, &p, sort);
            for (int path = GG_DGCONV_AUTO; path <= GG_DGCONV_COMPOSITE; path++) {
                char m[100];
                snprintf(m, sizeof m, "case %zu sort %d path %d", ci, sort, path);
                run_out r = run_dgconv(x, w, gt, b, &p, sort, (gg_dgconv_path)path, c, m);
                assert_run_matches_hand(&r, &h, 1e-5, m);
                run_free(&r);
            }
            hand_free(&h);
            gg_tensor *all[] = {x, w, b, gt, c};
            for (int i = 0; i < 5; i++) gg_tensor_free(all[i]);
        }
}

/* ---- fast path against the composite ---- */

static void fast_vs_composite(int K, unsigned pat, int64_t N, int64_t H, int64_t W, int64_t R, int64_t S,
                              const gg_conv2d_params *p, bool bias, bool sort, uint64_t seed, const char *what) {
    const int64_t C = (int64_t)1 << K;
    gg_tensor *x = leaf(RAND(seed, N, C, H, W)), *w = leaf(RAND(seed + 1, C, C, R, S));
    gg_tensor *b = bias ? leaf(RAND(seed + 2, C)) : NULL;
    gg_tensor *gt = leaf(gates_pattern(K, pat));
    run_out f = run_dgconv(x, w, gt, b, p, sort, GG_DGCONV_FAST, NULL, what);
    run_out c = run_dgconv(x, w, gt, b, p, sort, GG_DGCONV_COMPOSITE, NULL, what);
    char m[200];
    snprintf(m, sizeof m, "%s (C %lld, pattern 0x%x, sort %d)", what, (long long)C, pat, sort);
    assert_runs_close(&f, &c, 2e-5, m);
    run_free(&f);
    run_free(&c);
    gg_tensor *all[] = {x, w, b, gt};
    for (int i = 0; i < 4; i++) gg_tensor_free(all[i]);
}

Test(dgconv_fast, random_cases, .init = one_thread, .fini = teardown) {
    gt_lcg r;
    gt_lcg_seed(&r, 7);
    for (int K = 1; K <= 6; K++)
        for (int rep = 0; rep < 2; rep++) {
            gg_conv2d_params p = gg_conv2d_default();
            p.stride[0] = (int)gt_lcg_range(&r, 1, 2);
            p.stride[1] = (int)gt_lcg_range(&r, 1, 2);
            gg_conv2d_set_pad(&p, (int)gt_lcg_range(&r, 0, 2), (int)gt_lcg_range(&r, 0, 1));
            p.dilation[0] = (int)gt_lcg_range(&r, 1, 2);
            const int64_t R = 2 * gt_lcg_range(&r, 0, 1) + 1, S = gt_lcg_range(&r, 1, 3);
            const int64_t H = 2 * gt_lcg_range(&r, 2, 4) + 1, W = 2 * gt_lcg_range(&r, 2, 4) + 1;
            const unsigned pat = (unsigned)gt_lcg_range(&r, 0, (1 << K) - 1);
            fast_vs_composite(K, pat, K >= 5 ? 2 : 3, H, W, R, S, &p, rep == 0, rep == 1 && K > 2, 100 + 10 * K + rep,
                              "random");
        }
}

Test(dgconv_fast, every_pattern_c8, .init = one_thread, .fini = teardown) {
    gg_conv2d_params p = gg_conv2d_make(2, 1, 1, 1);
    for (unsigned pat = 0; pat < 8; pat++)
        for (int sort = 0; sort < 2; sort++) fast_vs_composite(3, pat, 2, 9, 7, 3, 3, &p, true, sort, 200 + pat, "C = 8");
}

/* a big enough case that the conv plan leaves the reference kernels (direct / GEMM) */
Test(dgconv_fast, larger_kernels, .init = one_thread, .fini = teardown) {
    gg_conv2d_params p = gg_conv2d_make(1, 1, 1, 1);
    fast_vs_composite(6, 0x2A, 2, 11, 9, 3, 3, &p, true, false, 300, "C = 64, G = 8 interleaved");
    fast_vs_composite(6, 0x33, 2, 11, 9, 1, 1, &(gg_conv2d_params){.stride = {1, 1}, .dilation = {1, 1}, .groups = 1},
                      true, false, 310, "C = 64, G = 4, 1x1");
    fast_vs_composite(5, 0x00, 2, 13, 13, 3, 3, &p, false, false, 320, "C = 32 depthwise");
}

/* two threads: the permutation copies and the conv kernels run their OpenMP paths */
Test(dgconv_fast, two_threads, .init = one_thread, .fini = teardown) {
    gg_set_num_threads(2);
    gg_conv2d_params p = gg_conv2d_make(1, 1, 1, 1);
    fast_vs_composite(6, 0x15, 4, 13, 13, 3, 3, &p, true, false, 400, "two threads, G = 8 interleaved");
    fast_vs_composite(4, 0x6, 3, 27, 25, 3, 3, &p, true, true, 410, "two threads, sorted");
}

/* batches the fast path splits into chunks (ops/dgconv.c chunk_batch: about 1 MiB of input and output
 * planes per chunk and thread, so 64 channels at 16x16 go 8 samples at a time per thread, evened out: with
 * one thread 19 -> 7 + 7 + 5, 23 -> 8 + 8 + 7; with two 19 -> 10 + 9, 23 -> 12 + 11), with the identity
 * permutation (contiguous groups: no copies) and interleaved ones; a repeated run gives bit-identical
 * results */
Test(dgconv_fast, batch_chunks, .init = one_thread, .fini = teardown) {
    gg_conv2d_params p = gg_conv2d_make(1, 1, 1, 1);
    for (int threads = 1; threads <= 2; threads++) {
        gg_set_num_threads(threads);
        fast_vs_composite(6, 0x0F, 19, 16, 16, 3, 3, &p, true, false, 500,
                          "chunks, contiguous G = 4 (identity)");
        fast_vs_composite(6, 0x3C, 19, 16, 16, 3, 3, &p, true, false, 510, "chunks, interleaved G = 4");
        fast_vs_composite(6, 0x2A, 23, 16, 16, 3, 3, &p, false, false, 520, "chunks, interleaved G = 8");
    }
    gg_set_num_threads(1); /* empty input planes (H = 0, padding gives a 2-row output): nothing to copy */
    gg_conv2d_params p1 = gg_conv2d_make(1, 1, 1, 1);
    fast_vs_composite(3, 0x5, 2, 0, 5, 1, 1, &p1, true, false, 540, "empty input planes");
    gg_set_num_threads(2);
    gg_tensor *x = leaf(RAND(530, 19, 64, 16, 16)), *w = leaf(RAND(531, 64, 64, 3, 3));
    gg_tensor *gt = leaf(gates_pattern(6, 0x3C));
    run_out a = run_dgconv(x, w, gt, NULL, &p, false, GG_DGCONV_FAST, NULL, "repeat 1");
    run_out b = run_dgconv(x, w, gt, NULL, &p, false, GG_DGCONV_FAST, NULL, "repeat 2");
    const gg_tensor *ta[] = {a.y, a.dx, a.dw, a.dg}, *tb[] = {b.y, b.dx, b.dw, b.dg};
    for (int i = 0; i < 4; i++)
        cr_assert(
            memcmp(gg_tensor_data(ta[i]), gg_tensor_data(tb[i]), (size_t)ta[i]->numel * sizeof(float)) == 0,
            "repeated fast runs differ in output %d (y, dx, dw, dgates)", i);
    run_free(&a);
    run_free(&b);
    gg_tensor_free(x);
    gg_tensor_free(w);
    gg_tensor_free(gt);
}

/* strided gates (a sliced leaf), a transposed x, and an empty batch */
Test(dgconv_fast, strided_inputs_and_empty_batch, .init = one_thread, .fini = teardown) {
    gg_tensor *gbase = gg_tensor_from_data(GG_SHAPE(6), (const float[]){0.5f, 9, -0.5f, 9, 0.5f, 9});
    gg_tensor *gt = gg_tensor_slice(gbase, 0, 0, 6, 2); /* [0.5, -0.5, 0.5] with stride 2 */
    leaf(gt);
    gg_tensor *xbase = RAND(1, 2, 8, 7, 5), *x = gg_tensor_transpose(xbase, 2, 3);
    leaf(x);
    gg_tensor *w = leaf(RAND(2, 8, 8, 3, 3));
    gg_conv2d_params p = gg_conv2d_make(2, 1, 1, 1);
    gg_tensor *c = RAND(3, 2, 8, 3, 4);
    hand_out h = hand_dgconv(x, w, gt, NULL, c, &p, false);
    for (int path = GG_DGCONV_AUTO; path <= GG_DGCONV_FAST; path++) {
        run_out r = run_dgconv(x, w, gt, NULL, &p, false, (gg_dgconv_path)path, c, "strided");
        assert_run_matches_hand(&r, &h, 1e-5, "strided gates, transposed x");
        run_free(&r);
    }
    hand_free(&h);
    gg_tensor *x0 = leaf(gg_tensor_zeros(GG_SHAPE(0, 8, 5, 5)));
    for (int path = GG_DGCONV_COMPOSITE; path <= GG_DGCONV_FAST; path++) {
        gg_dgconv_opts o = {.path = (gg_dgconv_path)path};
        gg_tensor *y = gg_dgconv2d(x0, w, gt, NULL, &p, &o);
        gt_assert_shape(y, 0, 8, 3, 3);
        cr_assert_eq(gg_backward_ex(y, y, false), GG_OK, "%s", gg_last_error());
        gg_tape_reset(NULL);
    }
    gg_tensor *all[] = {gbase, gt, xbase, x, w, c, x0};
    for (int i = 0; i < 7; i++) gg_tensor_free(all[i]);
}

/* only some inputs require grad: the fast backward computes what is needed */
Test(dgconv_fast, partial_requires_grad, .init = one_thread, .fini = teardown) {
    gg_conv2d_params p = gg_conv2d_make(1, 1, 1, 1);
    for (int mask = 1; mask < 16; mask++) {
        gg_tensor *x = RAND(1, 2, 8, 5, 5), *w = RAND(2, 8, 8, 3, 3), *b = RAND(3, 8), *gt = gates_pattern(3, 5);
        gg_tensor *t[4] = {x, w, b, gt};
        for (int i = 0; i < 4; i++)
            if (mask >> i & 1) leaf(t[i]);
        run_out f = run_dgconv(x, w, gt, b, &p, false, GG_DGCONV_FAST, NULL, "partial");
        run_out c = run_dgconv(x, w, gt, b, &p, false, GG_DGCONV_COMPOSITE, NULL, "partial");
        assert_runs_close(&f, &c, 2e-5, "partial requires_grad");
        run_free(&f);
        run_free(&c);
        for (int i = 0; i < 4; i++) gg_tensor_free(t[i]);
    }
    /* no grad mode: nothing recorded */
    gg_tensor *x = leaf(RAND(1, 1, 4, 3, 3)), *w = leaf(RAND(2, 4, 4, 1, 1)), *gt = leaf(gates_pattern(2, 1));
    gg_no_grad_begin();
    gg_tensor *y = gg_dgconv2d(x, w, gt, NULL, NULL, NULL);
    gg_no_grad_end();
    cr_assert_not_null(y, "%s", gg_last_error());
    cr_assert_eq(gg_tape_num_nodes(NULL), 0);
    gg_tensor_free(x);
    gg_tensor_free(w);
    gg_tensor_free(gt);
}

/* ---- sort ---- */

Test(dgconv_sort, contiguous_groups_and_gradient_positions, .init = one_thread, .fini = teardown) {
    /* g = [1, 0, 1, 0]: sorted factors (gates 1, 3, 0, 2) give U = I_4 kron J_4 */
    gg_tensor *gt = gates_of(4, (const float[]){0.3f, -0.2f, 0.9f, -0.1f});
    gg_tensor *u = gg_dgconv_relation(gt, true);
    gg_tensor *uc = gg_tensor_contiguous(u);
    for (int o = 0; o < 16; o++)
        for (int i = 0; i < 16; i++)
            cr_assert_eq(gg_tensor_data(uc)[o * 16 + i], o / 4 == i / 4 ? 1.0f : 0.0f, "U[%d][%d]", o, i);
    gg_tensor_free(uc);
    int G, Cg, perm[16];
    cr_assert_eq(gg_dgconv_group_info(gt, true, &G, &Cg, perm), GG_OK);
    cr_assert_eq(G, 4);
    cr_assert_eq(Cg, 4);
    for (int c = 0; c < 16; c++) cr_assert_eq(perm[c], c, "sorted groups are contiguous: perm[%d] = %d", c, perm[c]);
    /* unsorted: interleaved, same count */
    cr_assert_eq(gg_dgconv_group_info(gt, false, &G, &Cg, perm), GG_OK);
    cr_assert_eq(G, 4);
    cr_assert_eq(perm[1], 4, "channel 1 (bit 3, a zero gate) moves to the next group: perm[1] = %d", perm[1]);
    /* the sorted layer is a plain grouped conv of W's diagonal blocks (gradient positions under sort are
     * covered by against_hand_computation) */
    gg_tensor *x = leaf(RAND(5, 2, 16, 5, 5)), *w = leaf(RAND(6, 16, 16, 3, 3));
    gg_conv2d_params p = gg_conv2d_make(1, 1, 1, 1);
    gg_dgconv_opts so = {.sort = true, .path = GG_DGCONV_AUTO};
    gg_tensor *y = gg_dgconv2d(x, w, gt, NULL, &p, &so);
    gg_tensor *wb = gg_tensor_empty(GG_SHAPE(16, 4, 3, 3));
    for (int o = 0; o < 16; o++)
        for (int j = 0; j < 4; j++)
            memcpy(gg_tensor_data(wb) + (o * 4 + j) * 9, gg_tensor_data(w) + (o * 16 + o / 4 * 4 + j) * 9, 9 * sizeof(float));
    gg_conv2d_params pg = p;
    pg.groups = 4;
    gg_tensor *yr = gg_conv2d(x, wb, NULL, &pg);
    assert_tensor_close(y, yr, 1e-5, "sorted dgconv = contiguous grouped conv");
    gg_tensor *all[] = {gt, x, w, wb};
    for (int i = 0; i < 4; i++) gg_tensor_free(all[i]);
}

/* ---- regularizer ---- */

Test(dgconv_zeta, both_forms, .init = one_thread, .fini = teardown) {
    /* binary g = [1, 0, 1]: both forms 2^(3+2) = 8 * 2 * 1 * 2 = 32 */
    gg_tensor *gt = leaf(gates_of(3, (const float[]){0.5f, -0.5f, 0.5f}));
    gg_tensor *z = gg_dgconv_zeta(gt, GG_ZETA_CODE);
    cr_assert_eq(item(z), 32.0f);
    cr_assert_eq(z->ndim, 0);
    cr_assert_eq(gg_backward(z), GG_OK);
    const float l32 = (float)(log(2.0) * 32);
    assert_list_close(gt->grad, (const float[]){l32, l32, l32}, 3, 1e-5, "code form");
    gg_zero_grad(gt);
    z = gg_dgconv_zeta(gt, GG_ZETA_PAPER);
    cr_assert_eq(item(z), 32.0f);
    cr_assert_eq(gg_backward(z), GG_OK);
    assert_list_close(gt->grad, (const float[]){16, 32, 16}, 3, 0, "paper form: zeta / (1 + g)");
    gg_tensor_free(gt);
    /* fractional g = [0.5, 1, 0]: code 2^4.5, paper 8 * 1.5 * 2 * 1 = 24 with gradient [16, 12, 24] */
    gt = leaf(gates_of(3, (const float[]){0.0f, 1.0f, -1.0f}));
    z = gg_dgconv_zeta(gt, GG_ZETA_CODE);
    cr_assert_float_eq(item(z), (float)exp2(4.5), 1e-5);
    cr_assert_eq(gg_backward(z), GG_OK);
    const float lz = (float)(log(2.0) * exp2(4.5));
    assert_list_close(gt->grad, (const float[]){lz, lz, lz}, 3, 1e-5, "code form, fractional");
    gg_zero_grad(gt);
    z = gg_dgconv_zeta(gt, GG_ZETA_PAPER);
    cr_assert_eq(item(z), 24.0f);
    cr_assert_eq(gg_backward(z), GG_OK);
    assert_list_close(gt->grad, (const float[]){16, 12, 24}, 3, 0, "paper form, fractional");
    gg_tensor_free(gt);
}

Test(dgconv_zeta, regularized_loss_and_budget, .init = one_thread, .fini = teardown) {
    const int64_t ch[2] = {8, 16};
    const double o = gg_dgconv_budget(ch, 2, 32.0);
    cr_assert_float_eq(o, (64.0 + 256.0) / 32.0, 1e-12);
    for (int form = 0; form < 2; form++) {
        gg_tensor *ga = leaf(gates_of(3, (const float[]){0.5f, -0.5f, 0.5f}));        /* zeta 32 */
        gg_tensor *gb = leaf(gates_of(4, (const float[]){-0.5f, -0.5f, 0.5f, -0.5f})); /* zeta 32 */
        gg_tensor *ce = leaf(gg_tensor_scalar(2.5f));
        gg_tensor *zs[2] = {gg_dgconv_zeta(ga, (gg_zeta_form)form), gg_dgconv_zeta(gb, (gg_zeta_form)form)};
        const double a = -0.02, zeta = 64.0, f = pow(o / zeta, a), L = 2.5 * f;
        gg_tensor *loss = gg_dgconv_regularized_loss(ce, zs, 2, o, a);
        cr_assert_float_eq(item(loss), (float)L, 1e-5, "L = %g, expected %g", (double)item(loss), L);
        cr_assert_eq(gg_backward(loss), GG_OK, "%s", gg_last_error());
        cr_assert_float_eq(item(ce->grad), (float)f, 1e-6);
        /* dL/dzeta = -a L / zeta, times dzeta/dgt */
        const double dz = -a * L / zeta;
        const double da_code = dz * log(2.0) * 32;
        float ea[3], eb[4];
        for (int k = 0; k < 3; k++) ea[k] = (float)(form == 0 ? da_code : dz * 32 / (k == 1 ? 1 : 2));
        for (int k = 0; k < 4; k++) eb[k] = (float)(form == 0 ? da_code : dz * 32 / (k == 2 ? 2 : 1));
        assert_list_close(ga->grad, ea, 3, 1e-6, "dL/dgt layer a");
        assert_list_close(gb->grad, eb, 4, 1e-6, "dL/dgt layer b");
        gg_tape_reset(NULL);
        /* under budget: exponent 0, L = CE, no gradient to the gates */
        gg_zero_grad(ce);
        gg_zero_grad(ga);
        zs[0] = gg_dgconv_zeta(ga, (gg_zeta_form)form);
        loss = gg_dgconv_regularized_loss(ce, zs, 1, 100.0, a);
        cr_assert_eq(item(loss), 2.5f);
        cr_assert_eq(gg_backward(loss), GG_OK, "%s", gg_last_error());
        cr_assert_eq(item(ce->grad), 1.0f);
        for (int k = 0; k < 3; k++) cr_assert_eq(gg_tensor_data(ga->grad)[k], 0.0f);
        gg_tensor_free(ga);
        gg_tensor_free(gb);
        gg_tensor_free(ce);
        gg_tape_reset(NULL);
    }
}

/* ---- PyTorch golden cases (scripts/gen_dgconv_golden.py) ---- */

static gg_tensor *load_golden(const char *dir, const char *name, const char *key) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s_%s.npy", dir, name, key);
    gg_tensor *t = gg_npy_load(path);
    cr_assert_not_null(t, "cannot load %s: %s", path, gg_last_error());
    return t;
}

Test(dgconv_golden, pytorch, .init = one_thread, .fini = teardown) {
    const char *root = getenv("GG_TEST_DATA");
    cr_assert_not_null(root, "GG_TEST_DATA is not set");
    char dir[900], list[1024];
    snprintf(dir, sizeof dir, "%s/golden/dgconv", root);
    snprintf(list, sizeof list, "%s/cases.txt", dir);
    FILE *f = fopen(list, "r");
    cr_assert_not_null(f, "cannot open %s", list);
    char name[128];
    int n_cases = 0;
    while (fscanf(f, "%127s", name) == 1) {
        gg_tensor *prm = load_golden(dir, name, "params");
        cr_assert_eq(prm->numel, 8);
        const float *q = gg_tensor_data(prm);
        gg_conv2d_params p = gg_conv2d_default();
        p.stride[0] = (int)q[0], p.stride[1] = (int)q[1];
        gg_conv2d_set_pad(&p, (int)q[2], (int)q[3]);
        p.dilation[0] = (int)q[4], p.dilation[1] = (int)q[5];
        const bool has_bias = q[6] != 0, sort = q[7] != 0;
        for (int path = GG_DGCONV_AUTO; path <= GG_DGCONV_COMPOSITE; path++) {
            gg_tensor *x = leaf(load_golden(dir, name, "x")), *w = leaf(load_golden(dir, name, "w"));
            gg_tensor *gt = leaf(load_golden(dir, name, "gates"));
            gg_tensor *b = has_bias ? leaf(load_golden(dir, name, "b")) : NULL;
            gg_tensor *c = load_golden(dir, name, "c");
            char what[200];
            snprintf(what, sizeof what, "%s (%s)", name, path == GG_DGCONV_AUTO ? "auto" : "composite");
            run_out r = run_dgconv(x, w, gt, b, &p, sort, (gg_dgconv_path)path, c, what);
            const char *keys[] = {"y", "dx", "dw", "db", "dgates"};
            gg_tensor *got[] = {r.y, r.dx, r.dw, r.db, r.dg};
            for (int k = 0; k < 5; k++) {
                if (k == 3 && !has_bias) continue;
                gg_tensor *e = load_golden(dir, name, keys[k]);
                char m[260];
                snprintf(m, sizeof m, "%s: %s", what, keys[k]);
                assert_tensor_close(got[k], e, 2e-5, m);
                gg_tensor_free(e);
            }
            run_free(&r);
            gg_tensor *all[] = {x, w, gt, b, c};
            for (int i = 0; i < 5; i++) gg_tensor_free(all[i]);
        }
        gg_tensor_free(prm);
        n_cases++;
    }
    fclose(f);
    cr_assert_geq(n_cases, 6, "only %d golden cases in %s", n_cases, list);
}

/* ---- errors ---- */

static void expect_error(gg_tensor *x, gg_tensor *w, gg_tensor *gt, gg_tensor *b, const gg_conv2d_params *p,
                         const gg_dgconv_opts *o, int status, const char *needle) {
    gg_clear_error();
    const size_t before = gg_tape_num_tensors(NULL);
    cr_assert_null(gg_dgconv2d(x, w, gt, b, p, o), "expected an error containing \"%s\"", needle);
    gt_assert_error(status, "gg_dgconv2d");
    gt_assert_msg_has(needle);
    cr_assert_eq(gg_tape_num_tensors(NULL), before, "a failed call allocated something on the tape");
}

Test(dgconv_errors, every_path, .init = one_thread, .fini = teardown) {
    gg_tensor *x8 = leaf(RAND(1, 1, 8, 5, 5)), *w8 = leaf(RAND(2, 8, 8, 3, 3)), *g3 = leaf(gates_pattern(3, 5));
    gg_tensor *x6 = RAND(3, 1, 6, 5, 5), *w6 = RAND(4, 6, 6, 3, 3), *w84 = RAND(5, 8, 4, 3, 3);
    gg_tensor *g2 = gates_pattern(2, 1), *g33 = RAND(6, 3, 3), *b7 = RAND(7, 7), *x4 = RAND(8, 1, 4, 5, 5);
    gg_tensor *w8d = RAND(9, 8, 8, 3);
    gg_tensor *gbig = gg_tensor_ones(GG_SHAPE(31));
    gg_conv2d_params p = gg_conv2d_make(1, 1, 1, 1);
    expect_error(x6, w6, g3, NULL, &p, NULL, GG_ERR_SHAPE, "not a power of two");
    expect_error(x6, w6, g3, NULL, &p, NULL, GG_ERR_SHAPE, "mixed-radix");
    expect_error(x6, w6, g3, NULL, &p, NULL, GG_ERR_SHAPE, "w [6,6,3,3]");
    expect_error(x8, w84, g3, NULL, &p, NULL, GG_ERR_SHAPE, "square");
    expect_error(x8, w84, g3, NULL, &p, NULL, GG_ERR_SHAPE, "w [8,4,3,3]");
    expect_error(x8, w8, g2, NULL, &p, NULL, GG_ERR_SHAPE, "2 gates give 2^2 = 4 channels, the weight has 8");
    expect_error(x8, w8, g2, NULL, &p, NULL, GG_ERR_SHAPE, "gates [2]");
    expect_error(x8, w8, g33, NULL, &p, NULL, GG_ERR_SHAPE, "gates must be 1-D");
    expect_error(x8, w8, gbig, NULL, &p, NULL, GG_ERR_SHAPE, "at most 30 gates");
    expect_error(x4, w8, g3, NULL, &p, NULL, GG_ERR_SHAPE, "input has 4 channels, weight expects 8");
    expect_error(x8, w8d, g3, NULL, &p, NULL, GG_ERR_SHAPE, "weight must be 4-D");
    expect_error(x8, w8, g3, b7, &p, NULL, GG_ERR_SHAPE, "bias must be [8]");
    gg_conv2d_params pg = gg_conv2d_make(1, 1, 1, 2);
    expect_error(x8, w8, g3, NULL, &pg, NULL, GG_ERR_ARG, "groups == 1");
    gg_conv2d_params ps = gg_conv2d_make(0, 1, 1, 1);
    expect_error(x8, w8, g3, NULL, &ps, NULL, GG_ERR_ARG, "stride must be positive");
    gg_conv2d_params pe = gg_conv2d_make(1, 0, 3, 1);
    expect_error(x8, w8, g3, NULL, &pe, NULL, GG_ERR_SHAPE, "output would be empty");
    gg_dgconv_opts bad = {.path = (gg_dgconv_path)7};
    expect_error(x8, w8, g3, NULL, &p, &bad, GG_ERR_ARG, "unknown path 7");
    gg_tensor *ghalf = gates_of(3, (const float[]){1, 0, -1});
    gg_dgconv_opts fast = {.path = GG_DGCONV_FAST};
    expect_error(x8, w8, ghalf, NULL, &p, &fast, GG_ERR_ARG, "gate 1 is exactly 0");
    /* sticky NULL: the first message survives */
    gg_clear_error();
    gg_error_set(GG_ERR_SHAPE, "earlier_op", "first failure");
    cr_assert_null(gg_dgconv2d(NULL, w8, g3, NULL, &p, NULL));
    gt_assert_msg_has("first failure");
    cr_assert_null(gg_dgconv2d(x8, w8, NULL, NULL, &p, NULL));
    gt_assert_msg_has("first failure");
    gg_clear_error();
    cr_assert_null(gg_dgconv2d(x8, NULL, g3, NULL, &p, NULL));
    gt_assert_msg_has("gg_dgconv2d");
    /* helpers */
    gg_clear_error();
    cr_assert_lt(gg_dgconv_group_info(ghalf, false, NULL, NULL, NULL), 0);
    gt_assert_error(GG_ERR_ARG, "gg_dgconv_group_info");
    cr_assert_lt(gg_dgconv_group_info(g33, false, NULL, NULL, NULL), 0);
    gt_assert_error(GG_ERR_SHAPE, "gates must be 1-D [K] with K >= 1, got [3,3]");
    cr_assert_null(gg_dgconv_relation(g33, false));
    gt_assert_error(GG_ERR_SHAPE, "gg_dgconv_relation");
    cr_assert_null(gg_dgconv_zeta(g3, (gg_zeta_form)5));
    gt_assert_error(GG_ERR_ARG, "gg_dgconv_zeta");
    gg_tensor *z = gg_dgconv_zeta(g3, GG_ZETA_CODE);
    cr_assert_null(gg_dgconv_regularized_loss(z, &z, 0, 1.0, -0.02));
    gt_assert_error(GG_ERR_ARG, "gg_dgconv_regularized_loss");
    gg_tensor *zz[1] = {g3};
    cr_assert_null(gg_dgconv_regularized_loss(z, zz, 1, 1.0, -0.02));
    gt_assert_error(GG_ERR_SHAPE, "zetas[0] must hold one element, got [3]");
    cr_assert_null(gg_dgconv_regularized_loss(z, &z, 1, -1.0, -0.02));
    gt_assert_error(GG_ERR_ARG, "o > 0");
    cr_assert_lt(gg_dgconv_budget((const int64_t[]){8}, 1, 0.0), 0);
    gt_assert_error(GG_ERR_ARG, "gg_dgconv_budget");
    cr_assert_lt(gg_dgconv_budget((const int64_t[]){0}, 1, 32.0), 0);
    gt_assert_error(GG_ERR_ARG, "channels[0] = 0");
    gg_tensor *all[] = {x8, w8, g3, x6, w6, w84, g2, g33, b7, x4, w8d, gbig, ghalf};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) gg_tensor_free(all[i]);
}
