/* Tests of the Philox4x32-10 generator and the torch.nn.init initialisers (gg_rng.h): known-answer
 * vectors, stream layout (counter + i/4, lane i%4), thread-count independence, strided fills and
 * statistics of the distributions. */
#include <criterion/criterion.h>
#include <math.h>

#include "groupgrad.h"
#include "gg_test_util.h"

/* ---- an independent Philox4x32-10 (Salmon et al., SC'11; Random123 philox.h) ---- */

static void ref_philox(const uint32_t ctr_in[4], const uint32_t key_in[2], uint32_t out[4]) {
    uint32_t c[4] = {ctr_in[0], ctr_in[1], ctr_in[2], ctr_in[3]};
    uint32_t k0 = key_in[0], k1 = key_in[1];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c[0];
        uint64_t p1 = (uint64_t)0xCD9E8D57u * c[2];
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        uint32_t n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
        c[0] = n0;
        c[1] = lo1;
        c[2] = n2;
        c[3] = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    memcpy(out, c, sizeof c);
}

/* Validates the reference itself against all three Random123 known-answer vectors. */
Test(rng, reference_philox_matches_random123_kat) {
    static const struct {
        uint32_t ctr[4], key[2], out[4];
    } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
        {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
         {0xffffffff, 0xffffffff},
         {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
        {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
         {0xa4093822, 0x299f31d0},
         {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
    };
    for (int i = 0; i < 3; i++) {
        uint32_t out[4];
        ref_philox(kat[i].ctr, kat[i].key, out);
        for (int l = 0; l < 4; l++)
            cr_assert_eq(out[l], kat[i].out[l], "KAT %d lane %d: %08x, expected %08x", i, l, out[l], kat[i].out[l]);
    }
}

/* KAT 1 (counter 0, key 0) is directly expressible through gg_philox4x32. */
Test(rng, philox_kat_zero) {
    uint32_t out[4] = {0};
    gg_philox4x32(0, 0, out);
    const uint32_t want[4] = {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8};
    for (int l = 0; l < 4; l++) cr_assert_eq(out[l], want[l], "lane %d: %08x, expected %08x", l, out[l], want[l]);
}

/* KATs 2 and 3 need non-zero high counter words, which gg_philox4x32 cannot express; instead compare it
 * with the validated reference using the documented mapping (key = seed low word first, counter words
 * 0,1 = counter low word first, words 2,3 = 0), including the KAT 2/3 keys and low counter words. */
Test(rng, philox_matches_reference_mapping) {
    const uint64_t seeds[] = {0, 1, 0xffffffffffffffffull, 0x299f31d0a4093822ull, 0x123456789abcdef0ull, 42};
    const uint64_t ctrs[] = {0, 1, 2, 0xffffffffffffffffull, 0x85a308d3243f6a88ull, 0x100000000ull, 12345};
    for (size_t s = 0; s < sizeof seeds / sizeof seeds[0]; s++)
        for (size_t c = 0; c < sizeof ctrs / sizeof ctrs[0]; c++) {
            uint32_t got[4], want[4];
            uint32_t key[2] = {(uint32_t)seeds[s], (uint32_t)(seeds[s] >> 32)};
            uint32_t ctr[4] = {(uint32_t)ctrs[c], (uint32_t)(ctrs[c] >> 32), 0, 0};
            ref_philox(ctr, key, want);
            gg_philox4x32(seeds[s], ctrs[c], got);
            for (int l = 0; l < 4; l++)
                cr_assert_eq(got[l], want[l], "seed %016llx counter %016llx lane %d: %08x, expected %08x",
                             (unsigned long long)seeds[s], (unsigned long long)ctrs[c], l, got[l], want[l]);
        }
}

Test(rng, init_and_u32) {
    gg_rng r;
    memset(&r, 0xFF, sizeof r);
    gg_rng_init(&r, 77);
    cr_assert_eq(r.seed, 77);
    cr_assert_eq(r.counter, 0);
    for (uint64_t k = 0; k < 5; k++) {
        uint32_t block[4];
        gg_philox4x32(77, k, block);
        uint32_t v = gg_rng_u32(&r);
        cr_assert_eq(r.counter, k + 1, "gg_rng_u32 must consume exactly one block");
        cr_assert(v == block[0] || v == block[1] || v == block[2] || v == block[3],
                  "u32 %08x is not a lane of block %llu", v, (unsigned long long)k);
    }
}

Test(rng, uniform01_range_and_counter) {
    gg_rng r;
    gg_rng_init(&r, 3);
    double sum = 0;
    for (int i = 0; i < 20000; i++) {
        float u = gg_rng_uniform01(&r);
        cr_assert(u >= 0.0f && u < 1.0f, "uniform01 gave %.9g", (double)u);
        sum += u;
    }
    cr_assert_eq(r.counter, 20000);
    cr_assert_float_eq(sum / 20000, 0.5, 0.01);
}

Test(rng, same_seed_same_numbers_different_seed_differs) {
    gg_tensor *a = gg_tensor_empty(GG_SHAPE(1000));
    gg_tensor *b = gg_tensor_empty(GG_SHAPE(1000));
    gg_tensor *c = gg_tensor_empty(GG_SHAPE(1000));
    gg_rng ra, rb, rc;
    gg_rng_init(&ra, 1234);
    gg_rng_init(&rb, 1234);
    gg_rng_init(&rc, 1235);
    cr_assert_eq(gg_rand_uniform(a, 0, 1, &ra), GG_OK);
    cr_assert_eq(gg_rand_uniform(b, 0, 1, &rb), GG_OK);
    cr_assert_eq(gg_rand_uniform(c, 0, 1, &rc), GG_OK);
    const float *pa = gg_tensor_data(a), *pb = gg_tensor_data(b), *pc = gg_tensor_data(c);
    cr_assert_eq(memcmp(pa, pb, 1000 * sizeof(float)), 0, "same seed, different numbers");
    int same = 0;
    for (int i = 0; i < 1000; i++) same += pa[i] == pc[i];
    cr_assert_lt(same, 10, "%d of 1000 values equal for seeds 1234 and 1235", same);
    /* distinct values within one stream too */
    int dup = 0;
    for (int i = 1; i < 1000; i++) dup += pa[i] == pa[i - 1];
    cr_assert_lt(dup, 3);
    gg_tensor_free(a);
    gg_tensor_free(b);
    gg_tensor_free(c);
}

Test(rng, counter_advances_by_blocks) {
    const int64_t ns[] = {0, 1, 3, 4, 5, 8, 9, 1001};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        gg_tensor *t = gg_tensor_empty(1, &ns[i]);
        gg_rng r;
        gg_rng_init(&r, 9);
        r.counter = 100;
        cr_assert_eq(gg_rand_uniform(t, 0, 1, &r), GG_OK);
        cr_assert_eq(r.counter, 100 + (uint64_t)((ns[i] + 3) / 4), "uniform n=%lld: counter %llu",
                     (long long)ns[i], (unsigned long long)r.counter);
        r.counter = 100;
        cr_assert_eq(gg_rand_normal(t, 0, 1, &r), GG_OK);
        cr_assert_eq(r.counter, 100 + (uint64_t)((ns[i] + 3) / 4), "normal n=%lld: counter %llu",
                     (long long)ns[i], (unsigned long long)r.counter);
        gg_tensor_free(t);
    }
}

/* Element i comes from block counter + i/4: filling 5 then 7 elements equals elements 0..4 and 8..14
 * of one 15-element fill (the 5-element fill used two whole blocks). */
static void check_split(int normal) {
    gg_tensor *all = gg_tensor_empty(GG_SHAPE(15));
    gg_tensor *p1 = gg_tensor_empty(GG_SHAPE(5));
    gg_tensor *p2 = gg_tensor_empty(GG_SHAPE(7));
    gg_rng r;
    gg_rng_init(&r, 555);
    cr_assert_eq(normal ? gg_rand_normal(all, 0, 1, &r) : gg_rand_uniform(all, 0, 1, &r), GG_OK);
    gg_rng_init(&r, 555);
    cr_assert_eq(normal ? gg_rand_normal(p1, 0, 1, &r) : gg_rand_uniform(p1, 0, 1, &r), GG_OK);
    cr_assert_eq(r.counter, 2);
    cr_assert_eq(normal ? gg_rand_normal(p2, 0, 1, &r) : gg_rand_uniform(p2, 0, 1, &r), GG_OK);
    const float *a = gg_tensor_data(all), *x = gg_tensor_data(p1), *y = gg_tensor_data(p2);
    for (int i = 0; i < 5; i++) cr_assert_eq(x[i], a[i], "%s: first fill element %d", normal ? "normal" : "uniform", i);
    for (int i = 0; i < 7; i++)
        cr_assert_eq(y[i], a[8 + i], "%s: second fill element %d vs %d", normal ? "normal" : "uniform", i, 8 + i);
    gg_tensor_free(all);
    gg_tensor_free(p1);
    gg_tensor_free(p2);
}

Test(rng, stream_layout_uniform) { check_split(0); }
Test(rng, stream_layout_normal) { check_split(1); }

Test(rng, uniform_uses_philox_lanes_in_order) {
    /* U[0,1) is monotone in the 32-bit draw, so the ordering of four consecutive elements matches the
     * ordering of the four lanes of their block (ties aside). */
    gg_tensor *t = gg_tensor_empty(GG_SHAPE(400));
    gg_rng r;
    gg_rng_init(&r, 2024);
    cr_assert_eq(gg_rand_uniform(t, 0, 1, &r), GG_OK);
    const float *v = gg_tensor_data(t);
    for (uint64_t b = 0; b < 100; b++) {
        uint32_t block[4];
        gg_philox4x32(2024, b, block);
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++)
                if ((block[i] >> 9) < (block[j] >> 9))
                    cr_assert_leq(v[4 * b + i], v[4 * b + j], "block %llu lanes %d,%d out of order",
                                  (unsigned long long)b, i, j);
    }
    gg_tensor_free(t);
}

Test(rng, resume_from_saved_state) {
    gg_tensor *warm = gg_tensor_empty(GG_SHAPE(10));
    gg_tensor *b = gg_tensor_empty(GG_SHAPE(100));
    gg_tensor *c = gg_tensor_empty(GG_SHAPE(100));
    gg_rng r;
    gg_rng_init(&r, 31337);
    gg_rand_uniform(warm, 0, 1, &r);
    gg_rng saved = r;
    cr_assert_eq(saved.counter, 3);
    cr_assert_eq(gg_rand_normal(b, 0, 1, &r), GG_OK);
    cr_assert_eq(r.counter, 28);
    gg_rng resumed = {.seed = saved.seed, .counter = saved.counter};
    cr_assert_eq(gg_rand_normal(c, 0, 1, &resumed), GG_OK);
    cr_assert_eq(memcmp(gg_tensor_data(b), gg_tensor_data(c), 100 * sizeof(float)), 0);
    cr_assert_eq(resumed.counter, r.counter);
    gg_tensor_free(warm);
    gg_tensor_free(b);
    gg_tensor_free(c);
}

Test(rng, default_generator_and_manual_seed) {
    gg_manual_seed(7);
    cr_assert_eq(gg_rng_default()->seed, 7);
    cr_assert_eq(gg_rng_default()->counter, 0);
    gg_tensor *a = gg_tensor_empty(GG_SHAPE(33));
    gg_tensor *b = gg_tensor_empty(GG_SHAPE(33));
    cr_assert_eq(gg_rand_uniform(a, -1, 1, NULL), GG_OK);
    cr_assert_eq(gg_rng_default()->counter, 9);
    gg_rng r;
    gg_rng_init(&r, 7);
    cr_assert_eq(gg_rand_uniform(b, -1, 1, &r), GG_OK);
    cr_assert_eq(memcmp(gg_tensor_data(a), gg_tensor_data(b), 33 * sizeof(float)), 0);
    gg_manual_seed(7);
    cr_assert_eq(gg_rand_uniform(b, -1, 1, NULL), GG_OK);
    cr_assert_eq(memcmp(gg_tensor_data(a), gg_tensor_data(b), 33 * sizeof(float)), 0, "reseeding did not restart");
    gg_tensor_free(a);
    gg_tensor_free(b);
}

/* ---- thread-count independence ---- */

static void fill_with_threads(int threads, int which, gg_tensor *t) {
    cr_assert_eq(gg_set_num_threads(threads), GG_OK);
    cr_assert_eq(gg_get_num_threads(), threads);
    gg_rng r;
    gg_rng_init(&r, 99);
    r.counter = 5;
    int st = GG_OK;
    switch (which) {
    case 0: st = gg_rand_uniform(t, -3, 5, &r); break;
    case 1: st = gg_rand_normal(t, 1, 2, &r); break;
    case 2: st = gg_init_kaiming_uniform(t, sqrtf(5.0f), GG_FAN_IN, GG_NL_LEAKY_RELU, &r); break;
    default: st = gg_init_xavier_normal(t, 1, &r); break;
    }
    cr_assert_eq(st, GG_OK, "%s", gg_last_error());
    cr_assert_eq(r.counter, 5 + (uint64_t)((t->numel + 3) / 4));
}

Test(rng, independent_of_thread_count) {
    for (int which = 0; which < 4; which++) {
        gg_tensor *t1 = gg_tensor_empty(GG_SHAPE(251, 401)); /* odd size: the tail is not a whole block */
        gg_tensor *t2 = gg_tensor_empty(GG_SHAPE(251, 401));
        gg_tensor *t3 = gg_tensor_empty(GG_SHAPE(251, 401));
        fill_with_threads(1, which, t1);
        fill_with_threads(2, which, t2);
        fill_with_threads(3, which, t3);
        const float *a = gg_tensor_data(t1), *b = gg_tensor_data(t2), *c = gg_tensor_data(t3);
        for (int64_t i = 0; i < t1->numel; i++) {
            cr_assert_eq(memcmp(&a[i], &b[i], sizeof(float)), 0, "fill %d element %lld: 1 thread %.9g, 2 threads %.9g",
                         which, (long long)i, (double)a[i], (double)b[i]);
            cr_assert_eq(memcmp(&a[i], &c[i], sizeof(float)), 0, "fill %d element %lld: 3 threads differ", which,
                         (long long)i);
        }
        gg_tensor_free(t1);
        gg_tensor_free(t2);
        gg_tensor_free(t3);
    }
}

/* ---- strided destinations ---- */

Test(rng, noncontiguous_fill_in_logical_order) {
    for (int normal = 0; normal < 2; normal++) {
        gg_tensor *base = gg_tensor_zeros(GG_SHAPE(30, 41));
        gg_tensor *view = gg_tensor_transpose(base, 0, 1); /* [41,30] */
        gg_tensor *ref = gg_tensor_empty(GG_SHAPE(41, 30));
        gg_rng r1, r2;
        gg_rng_init(&r1, 5);
        gg_rng_init(&r2, 5);
        cr_assert_eq(normal ? gg_rand_normal(view, 0, 1, &r1) : gg_rand_uniform(view, 0, 1, &r1), GG_OK);
        cr_assert_eq(normal ? gg_rand_normal(ref, 0, 1, &r2) : gg_rand_uniform(ref, 0, 1, &r2), GG_OK);
        cr_assert_eq(r1.counter, r2.counter);
        float *got = malloc(sizeof(float) * 1230);
        cr_assert_eq(gg_tensor_to_buffer(view, got, 1230), GG_OK);
        cr_assert_eq(memcmp(got, gg_tensor_data(ref), 1230 * sizeof(float)), 0,
                     "%s: a transposed fill differs from a contiguous one in logical order", normal ? "normal" : "uniform");
        free(got);
        gg_tensor_free(ref);
        gg_tensor_free(view);
        gg_tensor_free(base);
    }
}

Test(rng, strided_fill_touches_only_the_view) {
    gg_tensor *base = gg_tensor_full(GG_SHAPE(6, 8), -7);
    gg_tensor *s1 = gg_tensor_slice(base, 1, 1, 8, 2); /* [6,4] */
    gg_tensor *s = gg_tensor_slice(s1, 0, 2, 5, 1);    /* [3,4] */
    gg_tensor *ref = gg_tensor_empty(GG_SHAPE(3, 4));
    gg_rng r1, r2;
    gg_rng_init(&r1, 11);
    gg_rng_init(&r2, 11);
    cr_assert_eq(gg_rand_uniform(s, 10, 20, &r1), GG_OK);
    cr_assert_eq(gg_rand_uniform(ref, 10, 20, &r2), GG_OK);
    gt_assert_values(s, gg_tensor_data(ref));
    int touched = 0;
    for (int64_t i = 0; i < 6; i++)
        for (int64_t j = 0; j < 8; j++) {
            float v;
            gg_tensor_get(base, (int64_t[]){i, j}, &v);
            int in_view = i >= 2 && i < 5 && (j % 2) == 1;
            if (in_view) {
                cr_assert(v >= 10 && v < 20, "(%lld,%lld) = %g", (long long)i, (long long)j, (double)v);
                touched++;
            } else {
                cr_assert_eq(v, -7, "fill wrote outside the view at (%lld,%lld)", (long long)i, (long long)j);
            }
        }
    cr_assert_eq(touched, 12);
    gg_tensor_free(ref);
    gg_tensor_free(s);
    gg_tensor_free(s1);
    gg_tensor_free(base);
}

/* ---- distribution statistics (100k samples) ---- */

static void moments(const gg_tensor *t, double *mean, double *var, double *mn, double *mx) {
    const float *v = gg_tensor_data(t);
    double s = 0, s2 = 0, lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < t->numel; i++) {
        s += v[i];
        if (v[i] < lo) lo = v[i];
        if (v[i] > hi) hi = v[i];
    }
    double m = s / (double)t->numel;
    for (int64_t i = 0; i < t->numel; i++) s2 += (v[i] - m) * (v[i] - m);
    *mean = m;
    *var = s2 / (double)(t->numel - 1);
    *mn = lo;
    *mx = hi;
}

Test(rng, uniform_statistics) {
    gg_tensor *t = gg_tensor_empty(GG_SHAPE(100000));
    gg_rng r;
    gg_rng_init(&r, 8);
    cr_assert_eq(gg_rand_uniform(t, -2, 3, &r), GG_OK);
    const float *v = gg_tensor_data(t);
    for (int i = 0; i < 100000; i++) cr_assert(v[i] >= -2.0f && v[i] < 3.0f, "v[%d] = %.9g outside [-2,3)", i, (double)v[i]);
    double mean, var, mn, mx;
    moments(t, &mean, &var, &mn, &mx);
    cr_assert_float_eq(mean, 0.5, 0.03, "mean %g", mean);
    cr_assert_float_eq(var, 25.0 / 12.0, 0.04, "variance %g", var);
    cr_assert_lt(mn, -1.99);
    cr_assert_gt(mx, 2.99);
    /* each tenth of the range holds about 10% of the samples */
    int bins[10] = {0};
    for (int i = 0; i < 100000; i++) bins[(int)((v[i] + 2) / 0.5f) < 10 ? (int)((v[i] + 2) / 0.5f) : 9]++;
    for (int b = 0; b < 10; b++) cr_assert(bins[b] > 9400 && bins[b] < 10600, "bin %d holds %d", b, bins[b]);
    gg_tensor_free(t);
}

Test(rng, normal_statistics) {
    gg_tensor *t = gg_tensor_empty(GG_SHAPE(100000));
    gg_rng r;
    gg_rng_init(&r, 9);
    cr_assert_eq(gg_rand_normal(t, 1.5f, 2.0f, &r), GG_OK);
    double mean, var, mn, mx;
    moments(t, &mean, &var, &mn, &mx);
    cr_assert_float_eq(mean, 1.5, 0.04, "mean %g", mean);
    cr_assert_float_eq(sqrt(var), 2.0, 0.03, "std %g", sqrt(var));
    const float *v = gg_tensor_data(t);
    int within1 = 0, finite = 1;
    for (int i = 0; i < 100000; i++) {
        within1 += fabsf(v[i] - 1.5f) < 2.0f;
        finite &= isfinite(v[i]) != 0;
    }
    cr_assert(finite, "non-finite normal sample");
    cr_assert_float_eq(within1 / 100000.0, 0.6827, 0.01, "fraction within one sd: %g", within1 / 100000.0);
    cr_assert_lt(mn, 1.5 - 4 * 2.0, "no sample beyond 4 sd below the mean (min %g)", mn);
    gg_tensor_free(t);
}

Test(rng, normal_edge_cases) {
    gg_tensor *t = gg_tensor_full(GG_SHAPE(7), 3);
    gg_rng r;
    gg_rng_init(&r, 1);
    cr_assert_eq(gg_rand_normal(t, 4, 0, &r), GG_OK);
    gt_assert_all(t, 4);
    gg_tensor_fill(t, 3);
    gg_clear_error();
    cr_assert_lt(gg_rand_normal(t, 0, -1, &r), 0, "negative std accepted");
    gt_assert_msg_has("gg_rand_normal");
    gt_assert_all(t, 3);
    cr_assert_eq(r.counter, 2, "a failed call advanced the generator");
    gg_tensor *one = gg_tensor_empty(GG_SHAPE(1));
    cr_assert_eq(gg_rand_normal(one, 0, 1, &r), GG_OK);
    float v;
    gg_tensor_item(one, &v);
    cr_assert(isfinite(v));
    gg_tensor_free(one);
    gg_tensor_free(t);
}

/* ---- torch.nn.init ---- */

Test(rng, init_gain_values) {
    cr_assert_float_eq(gg_init_gain(GG_NL_LINEAR, 0), 1.0, 1e-6);
    cr_assert_float_eq(gg_init_gain(GG_NL_SIGMOID, 0), 1.0, 1e-6);
    cr_assert_float_eq(gg_init_gain(GG_NL_TANH, 0), 5.0 / 3.0, 1e-6);
    cr_assert_float_eq(gg_init_gain(GG_NL_RELU, 0), sqrt(2.0), 1e-6);
    cr_assert_float_eq(gg_init_gain(GG_NL_LEAKY_RELU, 0.2f), sqrt(2.0 / (1 + 0.2 * 0.2)), 1e-6);
    cr_assert_float_eq(gg_init_gain(GG_NL_LEAKY_RELU, sqrtf(5.0f)), sqrt(1.0 / 3.0), 1e-6);
    cr_assert_float_eq(gg_init_gain(GG_NL_LEAKY_RELU, 0), sqrt(2.0), 1e-6);
    cr_assert_float_eq(gg_init_gain(GG_NL_LEAKY_RELU, -1), sqrt(2.0 / (1 + 0.0001)), 1e-6);
}

Test(rng, init_fans) {
    int64_t fi = -1, fo = -1;
    gg_tensor *w2 = gg_tensor_empty(GG_SHAPE(3, 5));
    cr_assert_eq(gg_init_fans(w2, &fi, &fo), GG_OK);
    cr_assert_eq(fi, 5);
    cr_assert_eq(fo, 3);
    gg_tensor *w4 = gg_tensor_empty(GG_SHAPE(64, 32, 3, 3));
    cr_assert_eq(gg_init_fans(w4, &fi, &fo), GG_OK);
    cr_assert_eq(fi, 288);
    cr_assert_eq(fo, 576);
    gg_tensor *w3 = gg_tensor_empty(GG_SHAPE(4, 6, 5));
    cr_assert_eq(gg_init_fans(w3, &fi, &fo), GG_OK);
    cr_assert_eq(fi, 30);
    cr_assert_eq(fo, 20);
    gg_tensor *w1 = gg_tensor_empty(GG_SHAPE(10));
    fi = fo = -5;
    gg_clear_error();
    cr_assert_lt(gg_init_fans(w1, &fi, &fo), 0, "rank 1 accepted");
    gt_assert_msg_has("[10]");
    gg_tensor *s = gg_tensor_scalar(1);
    cr_assert_lt(gg_init_fans(s, &fi, &fo), 0, "rank 0 accepted");
    gg_tensor_free(s);
    gg_tensor_free(w1);
    gg_tensor_free(w3);
    gg_tensor_free(w4);
    gg_tensor_free(w2);
}

Test(rng, kaiming_uniform_conv_default) {
    gg_tensor *w = gg_tensor_empty(GG_SHAPE(64, 32, 3, 3));
    gg_rng r;
    gg_rng_init(&r, 0);
    cr_assert_eq(gg_init_kaiming_uniform(w, sqrtf(5.0f), GG_FAN_IN, GG_NL_LEAKY_RELU, &r), GG_OK);
    const double bound = 1.0 / sqrt(288.0);
    double mean, var, mn, mx;
    moments(w, &mean, &var, &mn, &mx);
    cr_assert_leq(mx, bound * (1 + 1e-6), "max %g above bound %g", mx, bound);
    cr_assert_geq(mn, -bound * (1 + 1e-6), "min %g below -bound %g", mn, bound);
    cr_assert_gt(mx, 0.995 * bound, "max %g not close to bound %g", mx, bound);
    cr_assert_lt(mn, -0.995 * bound, "min %g not close to -bound %g", mn, bound);
    cr_assert_float_eq(var, bound * bound / 3, 0.03 * bound * bound / 3, "variance %g", var);
    cr_assert_eq(r.counter, (uint64_t)(64 * 32 * 9 / 4));
    gg_tensor_free(w);
}

Test(rng, kaiming_uniform_fan_out_relu) {
    gg_tensor *w = gg_tensor_empty(GG_SHAPE(100, 400)); /* fan_in 400, fan_out 100 */
    gg_rng r;
    gg_rng_init(&r, 4);
    cr_assert_eq(gg_init_kaiming_uniform(w, 0, GG_FAN_OUT, GG_NL_RELU, &r), GG_OK);
    const double bound = sqrt(2.0) * sqrt(3.0 / 100.0);
    double mean, var, mn, mx;
    moments(w, &mean, &var, &mn, &mx);
    cr_assert_leq(mx, bound * (1 + 1e-6));
    cr_assert_gt(mx, 0.995 * bound, "max %g, bound %g: fan mode ignored?", mx, bound);
    gg_tensor_free(w);
}

Test(rng, kaiming_normal_std) {
    gg_tensor *w = gg_tensor_empty(GG_SHAPE(256, 128));
    gg_rng r;
    gg_rng_init(&r, 21);
    cr_assert_eq(gg_init_kaiming_normal(w, 0, GG_FAN_IN, GG_NL_RELU, &r), GG_OK);
    double mean, var, mn, mx;
    moments(w, &mean, &var, &mn, &mx);
    cr_assert_float_eq(sqrt(var), sqrt(2.0 / 128.0), 0.02 * sqrt(2.0 / 128.0), "fan_in std %g", sqrt(var));
    cr_assert_float_eq(mean, 0, 0.005);
    cr_assert_eq(gg_init_kaiming_normal(w, 0, GG_FAN_OUT, GG_NL_RELU, &r), GG_OK);
    moments(w, &mean, &var, &mn, &mx);
    cr_assert_float_eq(sqrt(var), sqrt(2.0 / 256.0), 0.02 * sqrt(2.0 / 256.0), "fan_out std %g", sqrt(var));
    cr_assert_eq(gg_init_kaiming_normal(w, 0, GG_FAN_IN, GG_NL_TANH, &r), GG_OK);
    moments(w, &mean, &var, &mn, &mx);
    cr_assert_float_eq(sqrt(var), (5.0 / 3.0) / sqrt(128.0), 0.02 * (5.0 / 3.0) / sqrt(128.0), "tanh std %g", sqrt(var));
    gg_tensor_free(w);
}

Test(rng, xavier_uniform_bound) {
    gg_tensor *w = gg_tensor_empty(GG_SHAPE(200, 300));
    gg_rng r;
    gg_rng_init(&r, 13);
    cr_assert_eq(gg_init_xavier_uniform(w, 1, &r), GG_OK);
    double bound = sqrt(6.0 / 500.0);
    double mean, var, mn, mx;
    moments(w, &mean, &var, &mn, &mx);
    cr_assert_leq(mx, bound * (1 + 1e-6));
    cr_assert_geq(mn, -bound * (1 + 1e-6));
    cr_assert_gt(mx, 0.995 * bound);
    cr_assert_float_eq(var, bound * bound / 3, 0.03 * bound * bound / 3);
    cr_assert_eq(gg_init_xavier_uniform(w, 2, &r), GG_OK);
    moments(w, &mean, &var, &mn, &mx);
    cr_assert_leq(mx, 2 * bound * (1 + 1e-6));
    cr_assert_gt(mx, 0.995 * 2 * bound, "gain ignored: max %g", mx);
    gg_tensor_free(w);
}

Test(rng, xavier_normal_std) {
    gg_tensor *w = gg_tensor_empty(GG_SHAPE(16, 20, 5, 5)); /* fan_in 500, fan_out 400 */
    gg_rng r;
    gg_rng_init(&r, 17);
    cr_assert_eq(gg_init_xavier_normal(w, 1.5f, &r), GG_OK);
    double want = 1.5 * sqrt(2.0 / 900.0);
    double mean, var, mn, mx;
    moments(w, &mean, &var, &mn, &mx);
    cr_assert_float_eq(sqrt(var), want, 0.03 * want, "std %g, want %g", sqrt(var), want);
    gg_tensor_free(w);
}

Test(rng, init_rank1_is_error_and_changes_nothing) {
    gg_tensor *b = gg_tensor_full(GG_SHAPE(10), 2);
    gg_rng r;
    gg_rng_init(&r, 1);
    gg_clear_error();
    cr_assert_lt(gg_init_kaiming_uniform(b, sqrtf(5.0f), GG_FAN_IN, GG_NL_LEAKY_RELU, &r), 0);
    cr_assert_lt(gg_init_kaiming_normal(b, 0, GG_FAN_IN, GG_NL_RELU, &r), 0);
    cr_assert_lt(gg_init_xavier_uniform(b, 1, &r), 0);
    cr_assert_lt(gg_init_xavier_normal(b, 1, &r), 0);
    cr_assert_lt(gg_last_status(), 0);
    gt_assert_all(b, 2);
    cr_assert_eq(r.counter, 0, "failed initialisers advanced the generator");
    gg_tensor_free(b);
}

/* ---- runtime thread setting ---- */

Test(rng, thread_setting) {
    const char *env = getenv("GG_NUM_THREADS");
    if (env && atoi(env) > 0)
        cr_assert_eq(gg_get_num_threads(), atoi(env), "default ignores GG_NUM_THREADS=%s", env);
    cr_assert_gt(gg_get_num_threads(), 0);
    cr_assert_eq(gg_set_num_threads(3), GG_OK);
    cr_assert_eq(gg_get_num_threads(), 3);
    gg_clear_error();
    cr_assert_eq(gg_set_num_threads(0), GG_ERR_ARG);
    gt_assert_msg_has("gg_set_num_threads");
    cr_assert_lt(gg_set_num_threads(-2), 0);
    cr_assert_eq(gg_get_num_threads(), 3, "a rejected setting changed the thread count");
    char v[32];
    snprintf(v, sizeof v, "%d.%d.%d", GG_VERSION_MAJOR, GG_VERSION_MINOR, GG_VERSION_PATCH);
    cr_assert_str_eq(gg_version(), v);
}
