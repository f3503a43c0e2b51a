/* Checkpoints (safetensors): bit-identical round trips of tensors, metadata and bound integers; optimizer
 * state and resuming; every kind of corrupt file (clear error naming the file, targets unchanged); a file
 * written by Python (json + numpy) read exactly; our own writer reproducing the committed
 * tests/data/golden/optim/ours.safetensors byte for byte (scripts/gen_optim_golden.py checks that file
 * with json + numpy). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gg_test_util.h"
#include "groupgrad.h"

static char tmpdir[256];

static void make_tmpdir(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/gg_ckpt_XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static void remove_tmpdir(void) {
    DIR *d = opendir(tmpdir);
    if (!d) return;
    struct dirent *e;
    char p[600];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name), unlink(p);
    closedir(d);
    rmdir(tmpdir);
}

TestSuite(checkpoint, .init = make_tmpdir, .fini = remove_tmpdir);

static const char *tmp_path(const char *name) {
    static char buf[4][512];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, 512, "%s/%s", tmpdir, name);
    return p;
}

static unsigned char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    b[n] = 0;
    *len = (size_t)n;
    return b;
}

static void write_all(const char *path, const void *b, size_t len) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(b, 1, len, f), len);
    fclose(f);
}

/* A file made of an 8-byte length, `header` and `data_len` bytes of data (floats 0.5, 1.5, ...). */
static void write_raw(const char *path, const char *header, size_t data_len) {
    size_t hl = strlen(header);
    unsigned char *b = calloc(1, 8 + hl + data_len + 4);
    for (int k = 0; k < 8; k++) b[k] = (unsigned char)((uint64_t)hl >> (8 * k));
    memcpy(b + 8, header, hl);
    for (size_t i = 0; i + 4 <= data_len; i += 4) {
        float v = 0.5f + (float)(i / 4);
        memcpy(b + 8 + hl + i, &v, 4);
    }
    write_all(path, b, 8 + hl + data_len);
    free(b);
}

static void expect_bits(const gg_tensor *a, const gg_tensor *b, const char *what) {
    cr_assert_not_null(a, "%s: NULL", what);
    cr_assert(gg_tensor_same_shape(a, b), "%s: shape mismatch", what);
    gg_tensor *x = gg_tensor_contiguous(a), *y = gg_tensor_contiguous(b);
    cr_assert(x->numel == 0 || memcmp(gg_tensor_data(x), gg_tensor_data(y), 4 * (size_t)x->numel) == 0,
              "%s: not bit-identical", what);
    gg_tensor_free(x);
    gg_tensor_free(y);
}

static gg_tensor *from(int ndim, const int64_t *shape, float start, float step) {
    gg_tensor *t = gg_tensor_empty(ndim, shape);
    for (int64_t i = 0; i < t->numel; i++) gg_tensor_data(t)[i] = start + step * (float)i;
    return t;
}
#define FROM(start, step, ...) from(GG_SHAPE(__VA_ARGS__), (start), (step))

/* ---------------------------------------------------------------------------------------------------
 * round trips */

Test(checkpoint, round_trip) {
    gg_tensor *w = FROM(-1.0f, 0.37f, 4, 3), *b = FROM(0.1f, 1e-3f, 4), *s = gg_tensor_scalar(NAN);
    gg_tensor *e = gg_tensor_zeros(GG_SHAPE(0, 5)), *big = FROM(1e-38f, 3.3e33f, 2, 3, 4, 5);
    gg_tensor *base = FROM(100.0f, -1.0f, 3, 2), *tr = gg_tensor_transpose(base, 0, 1); /* strided */
    gg_tensor_data(b)[2] = -0.0f, gg_tensor_data(b)[3] = INFINITY;
    int64_t epoch = -7, step = 123456789012345;
    uint64_t seed = UINT64_MAX, counter = 42;
    gg_checkpoint *ck = gg_checkpoint_new();
    cr_assert_eq(gg_checkpoint_add_list(ck, "model.", (gg_tensor *[]){w, b},
                                        (const char *[]){"fc.weight", "fc.bias"}, 2),
                 GG_OK);
    cr_assert_eq(gg_checkpoint_add(ck, "scalar", s), GG_OK);
    cr_assert_eq(gg_checkpoint_add(ck, "empty", e), GG_OK);
    cr_assert_eq(gg_checkpoint_add(ck, "big", big), GG_OK);
    cr_assert_eq(gg_checkpoint_add(ck, "transposed", tr), GG_OK);
    cr_assert_eq(gg_checkpoint_bind_i64(ck, "epoch", &epoch), GG_OK);
    cr_assert_eq(gg_checkpoint_bind_i64(ck, "step", &step), GG_OK);
    cr_assert_eq(gg_checkpoint_bind_u64(ck, "rng.seed", &seed), GG_OK);
    cr_assert_eq(gg_checkpoint_bind_u64(ck, "rng.counter", &counter), GG_OK);
    cr_assert_eq(gg_checkpoint_set_meta(ck, "arch", "resnet \"20\" \\ ünï"), GG_OK);
    cr_assert_eq(gg_checkpoint_set_meta_i64(ck, "loader.position", -3), GG_OK);
    cr_assert_eq(gg_checkpoint_set_meta_u64(ck, "loader.seed", 18446744073709551615ull), GG_OK);
    cr_assert_eq(gg_checkpoint_set_meta(ck, "empty", ""), GG_OK);
    const char *path = tmp_path("rt.safetensors");
    cr_assert_eq(gg_checkpoint_save(ck, path), GG_OK, "%s", gg_last_error());

    /* a second checkpoint with other tensors of the same shapes (and a strided target) */
    gg_tensor *w2 = gg_tensor_zeros(GG_SHAPE(4, 3)), *b2 = gg_tensor_zeros(GG_SHAPE(4)),
              *s2 = gg_tensor_scalar(0);
    gg_tensor *e2 = gg_tensor_zeros(GG_SHAPE(0, 5)), *big2 = gg_tensor_zeros(GG_SHAPE(2, 3, 4, 5));
    gg_tensor *base2 = gg_tensor_zeros(GG_SHAPE(3, 2)), *tr2 = gg_tensor_transpose(base2, 0, 1);
    int64_t epoch2 = 0, step2 = 0;
    uint64_t seed2 = 0, counter2 = 0;
    gg_checkpoint *ck2 = gg_checkpoint_new();
    gg_checkpoint_add(ck2, "model.fc.weight", w2);
    gg_checkpoint_add(ck2, "model.fc.bias", b2);
    gg_checkpoint_add(ck2, "scalar", s2);
    gg_checkpoint_add(ck2, "empty", e2);
    gg_checkpoint_add(ck2, "big", big2);
    gg_checkpoint_add(ck2, "transposed", tr2);
    gg_checkpoint_bind_i64(ck2, "epoch", &epoch2);
    gg_checkpoint_bind_i64(ck2, "step", &step2);
    gg_checkpoint_bind_u64(ck2, "rng.seed", &seed2);
    gg_checkpoint_bind_u64(ck2, "rng.counter", &counter2);
    gg_checkpoint_set_meta(ck2, "stale", "x");
    uint64_t v0 = w2->storage->version;
    cr_assert_eq(gg_checkpoint_load(ck2, path, 0), GG_OK, "%s", gg_last_error());
    expect_bits(w2, w, "fc.weight");
    expect_bits(b2, b, "fc.bias");
    expect_bits(s2, s, "scalar (NaN)");
    expect_bits(e2, e, "empty");
    expect_bits(big2, big, "big");
    expect_bits(tr2, tr, "transposed");
    expect_bits(base2, base, "transposed base");
    cr_assert_gt(w2->storage->version, v0, "version not bumped");
    for (int i = 0; i < gg_checkpoint_num_tensors(ck2); i++) cr_assert(gg_checkpoint_was_loaded(ck2, i));
    cr_assert_eq(epoch2, -7);
    cr_assert_eq(step2, 123456789012345);
    cr_assert_eq(seed2, UINT64_MAX);
    cr_assert_eq(counter2, 42);
    /* the file's metadata replaced the old; bound keys are not in it */
    cr_assert_null(gg_checkpoint_get_meta(ck2, "stale"));
    cr_assert_null(gg_checkpoint_get_meta(ck2, "epoch"));
    cr_assert_str_eq(gg_checkpoint_get_meta(ck2, "arch"), "resnet \"20\" \\ ünï");
    cr_assert_str_eq(gg_checkpoint_get_meta(ck2, "empty"), "");
    int64_t pos;
    uint64_t ls;
    cr_assert_eq(gg_checkpoint_get_meta_i64(ck2, "loader.position", &pos), GG_OK);
    cr_assert_eq(pos, -3);
    cr_assert_eq(gg_checkpoint_get_meta_u64(ck2, "loader.seed", &ls), GG_OK);
    cr_assert_eq(ls, UINT64_MAX);
    cr_assert_eq(gg_checkpoint_num_meta(ck2), 4);
    const char *k0, *v;
    cr_assert_eq(gg_checkpoint_meta_at(ck2, 0, &k0, &v), GG_OK);
    cr_assert_str_eq(k0, "arch"); /* key order */
    cr_assert_eq(gg_checkpoint_meta_at(ck2, 3, &k0, &v), GG_OK);
    cr_assert_str_eq(k0, "loader.seed");
    cr_assert_eq(gg_checkpoint_meta_at(ck2, 4, &k0, &v), GG_ERR_INDEX);

    /* gg_checkpoint_read: every tensor, in name order, with the metadata (bound keys included) */
    gg_checkpoint *rd = gg_checkpoint_read(path);
    cr_assert_not_null(rd, "%s", gg_last_error());
    cr_assert_eq(gg_checkpoint_num_tensors(rd), 6);
    cr_assert_str_eq(gg_checkpoint_name_at(rd, 0), "big");
    cr_assert_str_eq(gg_checkpoint_name_at(rd, 5), "transposed");
    expect_bits(gg_checkpoint_get(rd, "model.fc.bias"), b, "read fc.bias");
    expect_bits(gg_checkpoint_get(rd, "transposed"), tr, "read transposed");
    cr_assert_eq(gg_checkpoint_get(rd, "scalar")->ndim, 0);
    cr_assert_str_eq(gg_checkpoint_get_meta(rd, "rng.seed"), "18446744073709551615");
    cr_assert_str_eq(gg_checkpoint_get_meta(rd, "epoch"), "-7");
    cr_assert_null(gg_checkpoint_get(rd, "nope"));

    /* the layout: header length, header padded to 8 bytes, data in name order */
    size_t len;
    unsigned char *raw = read_all(path, &len);
    uint64_t n = 0;
    for (int k = 0; k < 8; k++) n |= (uint64_t)raw[k] << (8 * k);
    cr_assert_eq((8 + n) % 8, 0);
    cr_assert_eq(raw[8], '{');
    cr_assert_eq(len, 8 + n + 4 * (size_t)(12 + 4 + 1 + 0 + 120 + 6));
    cr_assert(memcmp(raw + 8 + n, gg_tensor_data(big), 4 * 120) == 0, "'big' is not first in the data");
    free(raw);

    /* no temporary file left behind */
    DIR *d = opendir(tmpdir);
    struct dirent *de;
    int files = 0;
    while ((de = readdir(d))) files += de->d_name[0] != '.';
    closedir(d);
    cr_assert_eq(files, 1);

    gg_checkpoint_free(rd), gg_checkpoint_free(ck), gg_checkpoint_free(ck2);
    gg_tensor *all[] = {w, b, s, e, big, base, tr, w2, b2, s2, e2, big2, base2, tr2};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) gg_tensor_free(all[i]);
}

Test(checkpoint, overwrite_and_io_errors) {
    gg_tensor *t = FROM(1, 1, 3);
    gg_checkpoint *ck = gg_checkpoint_new();
    gg_checkpoint_add(ck, "t", t);
    const char *path = tmp_path("o.safetensors");
    cr_assert_eq(gg_checkpoint_save(ck, path), GG_OK);
    gg_tensor_fill(t, 9);
    cr_assert_eq(gg_checkpoint_save(ck, path), GG_OK); /* replaces the file */
    gg_checkpoint *rd = gg_checkpoint_read(path);
    gt_assert_all(gg_checkpoint_get(rd, "t"), 9.0f);
    gg_checkpoint_free(rd);
    cr_assert_eq(gg_checkpoint_save(ck, "/nonexistent-dir/x.safetensors"), GG_ERR_IO);
    gt_assert_msg_has("/nonexistent-dir/x.safetensors");
    cr_assert_eq(gg_checkpoint_load(ck, tmp_path("missing.safetensors"), 0), GG_ERR_IO);
    gt_assert_msg_has("missing.safetensors: cannot open");
    cr_assert_eq(gg_checkpoint_load(ck, tmpdir, 0), GG_ERR_IO);
    gt_assert_msg_has("not a regular file");
    cr_assert_eq(gg_checkpoint_load(ck, path, 4u), GG_ERR_ARG);
    cr_assert_eq(gg_checkpoint_save(NULL, path), GG_ERR_ARG);
    cr_assert_eq(gg_checkpoint_save(ck, NULL), GG_ERR_ARG);
    cr_assert_null(gg_checkpoint_read(NULL));
    gg_checkpoint_free(ck);
    gg_checkpoint_free(NULL);
    gg_tensor_free(t);
}

Test(checkpoint, registration_errors) {
    gg_tensor *t = FROM(0, 1, 2), *u = FROM(0, 1, 3);
    gg_checkpoint *ck = gg_checkpoint_new();
    int64_t x = 0;
    cr_assert_eq(gg_checkpoint_add(ck, "a", t), GG_OK);
    cr_assert_eq(gg_checkpoint_add(ck, "a", u), GG_ERR_ARG);
    gt_assert_msg_has("'a' is already registered");
    cr_assert_eq(gg_checkpoint_add(ck, "__metadata__", u), GG_ERR_ARG);
    gt_assert_msg_has("reserved");
    cr_assert_eq(gg_checkpoint_add(ck, "", u), GG_ERR_ARG);
    cr_assert_eq(gg_checkpoint_add(ck, "bad\xff", u), GG_ERR_ARG);
    gt_assert_msg_has("UTF-8");
    cr_assert_eq(gg_checkpoint_add(ck, "n", NULL), GG_ERR_ARG);
    cr_assert_eq(gg_checkpoint_add(NULL, "n", u), GG_ERR_ARG);
    /* all or nothing: the duplicate inside the list rolls the list back */
    cr_assert_eq(
        gg_checkpoint_add_list(ck, "p.", (gg_tensor *[]){t, u, t}, (const char *[]){"x", "y", "x"}, 3),
        GG_ERR_ARG);
    gt_assert_msg_has("'p.x' is already registered");
    cr_assert_eq(gg_checkpoint_num_tensors(ck), 1);
    cr_assert_null(gg_checkpoint_get(ck, "p.y"));
    cr_assert_eq(gg_checkpoint_add_list(ck, NULL, (gg_tensor *[]){u}, (const char *[]){"p.y"}, 1), GG_OK);
    cr_assert_eq(gg_checkpoint_get(ck, "p.y"), u);
    /* metadata and bindings share the key space */
    cr_assert_eq(gg_checkpoint_set_meta(ck, "k", "v"), GG_OK);
    cr_assert_eq(gg_checkpoint_bind_i64(ck, "k", &x), GG_ERR_ARG);
    gt_assert_msg_has("already set as metadata");
    cr_assert_eq(gg_checkpoint_bind_i64(ck, "step", &x), GG_OK);
    cr_assert_eq(gg_checkpoint_bind_u64(ck, "step", (uint64_t *)&x), GG_ERR_ARG);
    cr_assert_eq(gg_checkpoint_set_meta(ck, "step", "1"), GG_ERR_ARG);
    gt_assert_msg_has("bound to a variable");
    cr_assert_eq(gg_checkpoint_bind_i64(ck, "z", NULL), GG_ERR_ARG);
    cr_assert_eq(gg_checkpoint_set_meta(ck, "k", "\xc3"), GG_ERR_ARG);
    cr_assert_eq(gg_checkpoint_set_meta(ck, "k", NULL), GG_ERR_ARG);
    cr_assert_eq(gg_checkpoint_set_meta(ck, "k", "w"), GG_OK); /* replaces */
    cr_assert_str_eq(gg_checkpoint_get_meta(ck, "k"), "w");
    int64_t i64;
    uint64_t u64;
    cr_assert_eq(gg_checkpoint_get_meta_i64(ck, "k", &i64), GG_ERR_FORMAT);
    gt_assert_msg_has("\"w\" is not a 64-bit integer");
    cr_assert_eq(gg_checkpoint_get_meta_i64(ck, "absent", &i64), GG_ERR_INDEX);
    gg_checkpoint_set_meta(ck, "neg", "-5");
    cr_assert_eq(gg_checkpoint_get_meta_u64(ck, "neg", &u64), GG_ERR_FORMAT);
    gg_checkpoint_set_meta(ck, "huge", "99999999999999999999");
    cr_assert_eq(gg_checkpoint_get_meta_i64(ck, "huge", &i64), GG_ERR_FORMAT);
    cr_assert_eq(gg_checkpoint_get_meta_u64(ck, "huge", &u64), GG_ERR_FORMAT);
    gg_checkpoint_set_meta(ck, "sp", " 5");
    cr_assert_eq(gg_checkpoint_get_meta_i64(ck, "sp", &i64), GG_ERR_FORMAT);
    gg_checkpoint_free(ck);
    gg_tensor_free(t), gg_tensor_free(u);
}

/* ---------------------------------------------------------------------------------------------------
 * corrupt files: every case is a clear error naming the file, and nothing registered changes */

typedef struct target {
    gg_checkpoint *ck;
    gg_tensor *a, *b;
    int64_t step;
} target;

/* Registered: a [2,3], b [2], bound "step"; all set to recognisable values. */
static void target_init(target *t) {
    t->ck = gg_checkpoint_new();
    t->a = FROM(-5, 1, 2, 3);
    t->b = FROM(7, 1, 2);
    t->step = 77;
    gg_checkpoint_add(t->ck, "a", t->a);
    gg_checkpoint_add(t->ck, "b", t->b);
    gg_checkpoint_bind_i64(t->ck, "step", &t->step);
    gg_checkpoint_set_meta(t->ck, "mine", "kept");
}

static void target_fini(target *t) {
    gg_checkpoint_free(t->ck);
    gg_tensor_free(t->a);
    gg_tensor_free(t->b);
}

static void expect_unchanged(const target *t) {
    for (int i = 0; i < 6; i++)
        cr_assert_eq(gg_tensor_data(t->a)[i], -5.0f + (float)i, "a changed by a failed load");
    cr_assert_eq(gg_tensor_data(t->b)[0], 7.0f, "b changed by a failed load");
    cr_assert_eq(gg_tensor_data(t->b)[1], 8.0f, "b changed by a failed load");
    cr_assert_eq(t->step, 77, "bound variable changed by a failed load");
    cr_assert_str_eq(gg_checkpoint_get_meta(t->ck, "mine"), "kept", "metadata changed by a failed load");
}

/* A load that must fail; when the file itself is bad (not just unfit for the target), reading it fails too.
 */
static void expect_load_fails_(const char *path, int status, const char *needle, bool file_bad) {
    target t;
    target_init(&t);
    cr_assert_eq(gg_checkpoint_load(t.ck, path, 0), status, "load of %s: status %d (%s), expected %d", path,
                 gg_last_status(), gg_last_error(), status);
    gt_assert_msg_has("gg_checkpoint_load");
    gt_assert_msg_has(path);
    gt_assert_msg_has(needle);
    expect_unchanged(&t);
    target_fini(&t);
    if (file_bad) {
        cr_assert_null(gg_checkpoint_read(path));
        gt_assert_msg_has("gg_checkpoint_read");
        gt_assert_msg_has(path);
    }
}
#define expect_load_fails(path, status, needle)    \
    expect_load_fails_((path), (status), (needle), \
                       (status) == GG_ERR_FORMAT || (status) == GG_ERR_UNSUPPORTED)

/* A valid file for the target: a [2,3] at [0,24), b [2] at [24,32), step "5". */
#define GOOD_HEADER                                                                                          \
    "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},\"b\":{\"dtype\":\"F32\",\"shape\":" \
    "[2],"                                                                                                   \
    "\"data_offsets\":[24,32]},\"__metadata__\":{\"step\":\"5\"}}"

Test(checkpoint, valid_handmade_file) {
    const char *path = tmp_path("good.safetensors");
    write_raw(path, GOOD_HEADER, 32);
    target t;
    target_init(&t);
    cr_assert_eq(gg_checkpoint_load(t.ck, path, 0), GG_OK, "%s", gg_last_error());
    gt_assert_list(t.a, 0.5f, 1.5f, 2.5f, 3.5f, 4.5f, 5.5f);
    gt_assert_list(t.b, 6.5f, 7.5f);
    cr_assert_eq(t.step, 5);
    cr_assert_null(gg_checkpoint_get_meta(t.ck, "mine"));
    target_fini(&t);
}

Test(checkpoint, truncated) {
    const char *good = tmp_path("good.safetensors"), *bad = tmp_path("cut.safetensors");
    write_raw(good, GOOD_HEADER, 32);
    size_t len;
    unsigned char *b = read_all(good, &len);
    size_t hl = strlen(GOOD_HEADER);
    const struct {
        size_t at;
        const char *needle;
    } cuts[] = {
        {0, "too short for the 8-byte header length"},
        {5, "too short"},
        {8, "header length"},
        {8 + hl / 2, "header length"},
        {8 + hl, "goes past the end"},  /* no data at all */
        {len - 4, "goes past the end"}, /* last tensor cut */
        {len - 1, "goes past the end"},
    };
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        write_all(bad, b, cuts[i].at);
        expect_load_fails(bad, GG_ERR_FORMAT, cuts[i].needle);
    }
    /* trailing bytes no tensor accounts for */
    unsigned char *longer = calloc(1, len + 4);
    memcpy(longer, b, len);
    write_all(bad, longer, len + 4);
    expect_load_fails(bad, GG_ERR_FORMAT, "cover 32 bytes of data but the file holds 36");
    free(longer);
    free(b);
}

Test(checkpoint, header_length) {
    const char *good = tmp_path("good.safetensors"), *bad = tmp_path("len.safetensors");
    write_raw(good, GOOD_HEADER, 32);
    size_t len;
    unsigned char *b = read_all(good, &len);
    uint64_t hl = strlen(GOOD_HEADER);
    const struct {
        uint64_t n;
        const char *needle;
    } lens[] = {
        {hl + 1, "not valid JSON"}, /* swallows the first data byte */
        {hl - 1, "not valid JSON"}, /* cuts the closing brace */
        {hl + 33, "header length"}, /* past the end */
        {0, "header length 0"},
        {1ull << 40, "header length 1099511627776"},
        {UINT64_MAX, "header length 18446744073709551615"},
    };
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        for (int k = 0; k < 8; k++) b[k] = (unsigned char)(lens[i].n >> (8 * k));
        write_all(bad, b, len);
        expect_load_fails(bad, GG_ERR_FORMAT, lens[i].needle);
    }
    free(b);
    /* a header padded with spaces to fill the length is valid, and the data then start later */
    char padded[512];
    snprintf(padded, sizeof padded, "%s      ", GOOD_HEADER);
    write_raw(bad, padded, 32);
    target t;
    target_init(&t);
    cr_assert_eq(gg_checkpoint_load(t.ck, bad, 0), GG_OK, "%s", gg_last_error());
    target_fini(&t);
}

Test(checkpoint, bad_json) {
    const char *p = tmp_path("json.safetensors");
    const struct {
        const char *header;
        size_t data;
        const char *needle;
    } cases[] = {
        {"{\"a\": [1, 2", 0, "not valid JSON"},
        {"garbage!", 0, "does not start with '{'"},
        {"[1,2,3]", 0, "does not start with '{'"},
        {"{}{}", 0, "not valid JSON"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}",
         24, "duplicate"},
        {"{\"a\":5}", 0, "entry 'a' is not a JSON object"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3]}}", 0, "needs \"dtype\""},
        {"{\"a\":{\"dtype\":32,\"shape\":[2,3],\"data_offsets\":[0,24]}}", 24, "needs \"dtype\""},
        {"{\"a\":{\"dtype\":\"F33\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 24, "unknown dtype \"F33\""},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,-3],\"data_offsets\":[0,24]}}", 24, "shape[1] is not"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3.0],\"data_offsets\":[0,24]}}", 24, "shape[1] is not"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,24]}}",
         24, "shape overflows"},
        {"{\"__metadata__\":{\"step\":5}}", 0, "metadata 'step' is not a string"},
        {"{\"__metadata__\":[\"step\"]}", 0, "\"__metadata__\" is not a JSON object"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, "rank 9"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_raw(p, cases[i].header, cases[i].data);
        int st = strstr(cases[i].needle, "rank") ? GG_ERR_UNSUPPORTED : GG_ERR_FORMAT;
        expect_load_fails(p, st, cases[i].needle);
    }
}

Test(checkpoint, bad_offsets) {
    const char *p = tmp_path("off.safetensors");
#define ENTRY(name, shape, b, e) \
    "\"" name "\":{\"dtype\":\"F32\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"
    const struct {
        const char *header;
        size_t data;
        const char *needle;
    } cases[] = {
        {"{" ENTRY("a", "[2,3]", 0, 24) "," ENTRY("b", "[2]", 16, 24) "}", 32, "overlaps tensor 'a'"},
        {"{" ENTRY("a", "[2,3]", 0, 24) "," ENTRY("b", "[2]", 28, 36) "}", 36,
         "data bytes [24, 28) belong to no tensor"},
        {"{" ENTRY("a", "[2,3]", 8, 32) "," ENTRY("b", "[2]", 32, 40) "}", 40, "data bytes [0, 8)"},
        {"{" ENTRY("a", "[2,3]", 0, 24) "," ENTRY("b", "[2]", 24, 32) "}", 28, "goes past the end"},
        {"{" ENTRY("a", "[2,3]", 0, 20) "," ENTRY("b", "[2]", 20, 28) "}", 28,
         "hold 20 bytes, but F32 [2,3] needs 24"},
        {"{" ENTRY("a", "[2,3]", 24, 0) "}", 24, "are not 0 <= begin <= end"},
        {"{" ENTRY("a", "[2,3]", -24, 0) "}", 24, "are not 0 <= begin <= end"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24,48]}}", 48,
         "data_offsets is not [begin, end]"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,\"24\"]}}", 24,
         "data_offsets is not"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_raw(p, cases[i].header, cases[i].data);
        expect_load_fails(p, GG_ERR_FORMAT, cases[i].needle);
    }
}

Test(checkpoint, dtype_shape_names) {
    const char *p = tmp_path("m.safetensors");
    /* a valid file with an F16 tensor: unsupported, not corrupt */
    write_raw(
        p,
        "{" ENTRY("a", "[2,3]", 0, 24) ",\"b\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[24,28]},"
                                       "\"__metadata__\":{\"step\":\"1\"}}",
        28);
    expect_load_fails(p, GG_ERR_UNSUPPORTED, "b (F16)");
    /* shapes: both mismatches listed */
    write_raw(
        p,
        "{" ENTRY("a", "[3,2]", 0, 24) "," ENTRY("b", "[2,1]", 24, 32) ",\"__metadata__\":{\"step\":\"1\"}}",
        32);
    expect_load_fails(
        p, GG_ERR_SHAPE,
        "shape mismatch for 2 tensors: 'a: file [3,2], registered [2,3]', 'b: file [2,1], registered [2]'");
    /* missing tensor and bound key, unexpected tensor */
    write_raw(p, "{" ENTRY("a", "[2,3]", 0, 24) "," ENTRY("c", "[2]", 24, 32) "}", 32);
    expect_load_fails(p, GG_ERR_INDEX,
                      "2 missing (registered but not in the file): 'b', 'step'; 1 unexpected (in the file "
                      "but not registered): 'c'");
    /* bound value that is not an integer */
    write_raw(
        p,
        "{" ENTRY("a", "[2,3]", 0, 24) "," ENTRY("b", "[2]", 24, 32) ",\"__metadata__\":{\"step\":\"5x\"}}",
        32);
    expect_load_fails_(p, GG_ERR_FORMAT, "metadata 'step' = \"5x\" is not a signed 64-bit integer", false);

    /* the ALLOW flags: missing ones keep their values, unexpected ones are ignored */
    write_raw(p, "{" ENTRY("a", "[2,3]", 0, 24) "," ENTRY("c", "[2]", 24, 32) "}", 32);
    target t;
    target_init(&t);
    cr_assert_eq(gg_checkpoint_load(t.ck, p, GG_CHECKPOINT_ALLOW_MISSING), GG_ERR_INDEX);
    gt_assert_msg_has("unexpected");
    cr_assert_null(strstr(gg_last_error(), "missing"));
    cr_assert_eq(gg_checkpoint_load(t.ck, p, GG_CHECKPOINT_ALLOW_MISSING | GG_CHECKPOINT_ALLOW_UNEXPECTED),
                 GG_OK, "%s", gg_last_error());
    gt_assert_list(t.a, 0.5f, 1.5f, 2.5f, 3.5f, 4.5f, 5.5f);
    gt_assert_list(t.b, 7.0f, 8.0f);
    cr_assert_eq(t.step, 77);
    cr_assert(gg_checkpoint_was_loaded(t.ck, 0));
    cr_assert(!gg_checkpoint_was_loaded(t.ck, 1));
    cr_assert_eq(gg_checkpoint_num_meta(t.ck), 0);
    target_fini(&t);

    /* many missing names: the list is cut with a count */
    gg_checkpoint *ck = gg_checkpoint_new();
    gg_tensor *z = gg_tensor_zeros(GG_SHAPE(1));
    char name[64];
    for (int i = 0; i < 200; i++)
        snprintf(name, sizeof name, "layer%03d.some.long.parameter.name", i), gg_checkpoint_add(ck, name, z);
    write_raw(p, "{}", 0);
    cr_assert_eq(gg_checkpoint_load(ck, p, 0), GG_ERR_INDEX);
    gt_assert_msg_has("200 missing");
    gt_assert_msg_has("'layer000.some.long.parameter.name'");
    gt_assert_msg_has("more");
    gg_checkpoint_free(ck);
    gg_tensor_free(z);

    /* loading into a broadcast view is refused */
    gg_tensor *row = gg_tensor_zeros(GG_SHAPE(3)), *ex = gg_tensor_expand(row, GG_SHAPE(2, 3));
    ck = gg_checkpoint_new();
    gg_checkpoint_add(ck, "a", ex);
    write_raw(p, "{" ENTRY("a", "[2,3]", 0, 24) "}", 24);
    cr_assert_eq(gg_checkpoint_load(ck, p, 0), GG_ERR_ARG);
    gt_assert_msg_has("broadcast");
    gt_assert_all(row, 0.0f);
    gg_checkpoint_free(ck);
    gg_tensor_free(ex), gg_tensor_free(row);
}

/* ---------------------------------------------------------------------------------------------------
 * interoperability */

static const char *golden_path(const char *name) {
    static char buf[2][512];
    static int k;
    char *p = buf[k++ % 2];
    const char *dir = getenv("GG_TEST_DATA");
    snprintf(p, 512, "%s/golden/optim/%s", dir ? dir : "tests/data", name);
    return p;
}

/* py_written.safetensors was written by scripts/gen_optim_golden.py with json + numpy. */
Test(checkpoint, reads_python_written_file) {
    const char *names[] = {"layer.weight", "layer.bias", "scalar", "empty", "z.last"};
    gg_checkpoint *rd = gg_checkpoint_read(golden_path("py_written.safetensors"));
    cr_assert_not_null(rd, "%s", gg_last_error());
    cr_assert_eq(gg_checkpoint_num_tensors(rd), 5);
    gg_checkpoint *ck = gg_checkpoint_new();
    gg_tensor *targets[5];
    for (int i = 0; i < 5; i++) {
        char npy[128];
        snprintf(npy, sizeof npy, "py_%s.npy", names[i]);
        gg_tensor *want = gg_npy_load(golden_path(npy));
        cr_assert_not_null(want, "%s", gg_last_error());
        expect_bits(gg_checkpoint_get(rd, names[i]), want, names[i]);
        targets[i] = gg_tensor_full(want->ndim, want->shape, 123.0f);
        gg_checkpoint_add(ck, names[i], targets[i]);
        gg_tensor_free(want);
    }
    cr_assert_str_eq(gg_checkpoint_get_meta(rd, "note"), "written by numpy");
    int64_t step = 0;
    gg_checkpoint_bind_i64(ck, "step", &step);
    cr_assert_eq(gg_checkpoint_load(ck, golden_path("py_written.safetensors"), 0), GG_OK, "%s",
                 gg_last_error());
    cr_assert_eq(step, 42);
    for (int i = 0; i < 5; i++) expect_bits(targets[i], gg_checkpoint_get(rd, names[i]), names[i]);
    cr_assert(signbit(gg_tensor_data(targets[4])[1]), "-0.0 lost its sign");
    for (int i = 0; i < 5; i++) gg_tensor_free(targets[i]);
    gg_checkpoint_free(ck);
    gg_checkpoint_free(rd);
}

/* The checkpoint scripts/gen_optim_golden.py verifies with json + numpy (ours_expected there). We write it
 * again and require the committed file byte for byte; GG_CHECKPOINT_GOLDEN_OUT=path regenerates it. */
Test(checkpoint, writes_committed_golden_file) {
    gg_tensor *a = gg_tensor_empty(GG_SHAPE(2, 3)), *b = gg_tensor_empty(GG_SHAPE(4));
    for (int i = 0; i < 6; i++) gg_tensor_data(a)[i] = (float)i * 0.5f - 1.0f;
    for (int i = 0; i < 4; i++) gg_tensor_data(b)[i] = 1.0f / ((float)i + 1.0f);
    gg_tensor *r = gg_tensor_scalar((float)3.14159265358979323846), *e = gg_tensor_zeros(GG_SHAPE(0));
    int64_t epoch = 3;
    uint64_t seed = UINT64_MAX, counter = 12345;
    gg_checkpoint *ck = gg_checkpoint_new();
    gg_checkpoint_add(ck, "r", r);
    gg_checkpoint_add(ck, "b.c", b);
    gg_checkpoint_add(ck, "e", e);
    gg_checkpoint_add(ck, "a", a);
    gg_checkpoint_bind_i64(ck, "epoch", &epoch);
    gg_checkpoint_bind_u64(ck, "rng.seed", &seed);
    gg_checkpoint_bind_u64(ck, "rng.counter", &counter);
    gg_checkpoint_set_meta(ck, "note", "h\xc3\xa9llo \xe2\x9c\x93");
    const char *mine = tmp_path("ours.safetensors");
    cr_assert_eq(gg_checkpoint_save(ck, mine), GG_OK, "%s", gg_last_error());
    const char *regen = getenv("GG_CHECKPOINT_GOLDEN_OUT");
    if (regen && *regen) cr_assert_eq(gg_checkpoint_save(ck, regen), GG_OK, "%s", gg_last_error());
    size_t n1, n2;
    unsigned char *got = read_all(mine, &n1), *want = read_all(golden_path("ours.safetensors"), &n2);
    cr_assert(n1 == n2 && memcmp(got, want, n1) == 0,
              "our writer no longer produces ours.safetensors:\n%s\nvs\n%s", (char *)got + 8,
              (char *)want + 8);
    free(got), free(want);
    gg_checkpoint_free(ck);
    gg_tensor_free(a), gg_tensor_free(b), gg_tensor_free(r), gg_tensor_free(e);
}

/* ---------------------------------------------------------------------------------------------------
 * optimizer state: resuming from a checkpoint continues the trajectory bit for bit */

typedef struct run {
    gg_tensor *w, *bias;
    gg_optim *opt;
    gg_checkpoint *ck;
    int64_t t;
} run;

static void run_init(run *r, gg_optim_kind kind) {
    r->w = gg_tensor_empty(GG_SHAPE(3, 4));
    r->bias = gg_tensor_zeros(GG_SHAPE(4));
    gg_rng rng;
    gg_rng_init(&rng, 1);
    gg_rand_normal(r->w, 0, 1, &rng);
    gg_requires_grad(r->w, true), gg_requires_grad(r->bias, true);
    r->opt = gg_optim_new(kind);
    gg_optim_hparams hp = kind == GG_OPTIM_SGD ? gg_sgd_hparams(0.1) : gg_adamw_hparams(0.01);
    hp.momentum = 0.9, hp.nesterov = true, hp.amsgrad = true, hp.weight_decay = 0.01;
    gg_optim_add_params(r->opt, (gg_tensor *[]){r->w, r->bias}, (const char *[]){"fc.weight", "fc.bias"}, 2,
                        &hp, gg_optim_filter_no_decay, NULL);
    r->t = 0;
    r->ck = gg_checkpoint_new();
    cr_assert_eq(gg_checkpoint_add_list(r->ck, "model.", (gg_tensor *[]){r->w, r->bias},
                                        (const char *[]){"fc.weight", "fc.bias"}, 2),
                 GG_OK);
    cr_assert_eq(gg_checkpoint_add_optim(r->ck, r->opt, NULL), GG_OK, "%s", gg_last_error());
    cr_assert_eq(gg_checkpoint_bind_i64(r->ck, "step", &r->t), GG_OK);
}

/* One training step: loss = sum((x w + b)^2) with x depending on t. */
static void run_step(run *r) {
    gg_tensor *x = gg_tensor_empty(GG_SHAPE(2, 3));
    for (int i = 0; i < 6; i++) gg_tensor_data(x)[i] = sinf((float)(i + 7 * r->t));
    gg_optim_zero_grad(r->opt);
    gg_tensor *y = gg_add(gg_matmul(x, r->w), r->bias);
    cr_assert_eq(gg_backward(gg_sum(gg_square(y), NULL, 0, false)), GG_OK, "%s", gg_last_error());
    gg_lr_schedule s = gg_lr_cosine(2, 0.5, 10, 0.0);
    gg_optim_apply_schedule(r->opt, &s, r->t);
    cr_assert_eq(gg_optim_step(r->opt), GG_OK);
    r->t++;
    gg_tape_reset(NULL);
    gg_tensor_free(x);
}

static void run_fini(run *r) {
    gg_checkpoint_free(r->ck);
    gg_optim_free(r->opt);
    gg_tensor_free(r->w), gg_tensor_free(r->bias);
}

Test(checkpoint, optimizer_resume) {
    for (int kind = 0; kind < GG_OPTIM_KIND_COUNT; kind++) {
        run a, b;
        run_init(&a, (gg_optim_kind)kind);
        for (int i = 0; i < 3; i++) run_step(&a);
        const char *path = tmp_path("resume.safetensors");
        cr_assert_eq(gg_checkpoint_save(a.ck, path), GG_OK, "%s", gg_last_error());
        for (int i = 0; i < 4; i++) run_step(&a);

        run_init(&b, (gg_optim_kind)kind); /* fresh weights and zero state */
        cr_assert_eq(gg_checkpoint_load(b.ck, path, 0), GG_OK, "%s", gg_last_error());
        cr_assert_eq(b.t, 3);
        gg_optim_state_entry e;
        cr_assert_eq(gg_optim_state_find(b.opt, "fc.weight.step", &e), GG_OK);
        cr_assert_eq(*e.counter, 3);
        for (int i = 0; i < 4; i++) run_step(&b);
        expect_bits(b.w, a.w, "resumed weight");
        expect_bits(b.bias, a.bias, "resumed bias");
        for (int i = 0; i < gg_optim_num_state(a.opt); i++) {
            gg_optim_state_entry ea, eb;
            gg_optim_state(a.opt, i, &ea), gg_optim_state(b.opt, i, &eb);
            if (ea.tensor) expect_bits(eb.tensor, ea.tensor, ea.name);
            else cr_assert_eq(*eb.counter, *ea.counter, "%s", ea.name);
        }
        /* the names in the file */
        gg_checkpoint *rd = gg_checkpoint_read(path);
        cr_assert_not_null(rd);
        const char *first =
            kind == GG_OPTIM_SGD ? "optim.state.fc.weight.momentum_buffer" : "optim.state.fc.weight.exp_avg";
        cr_assert_not_null(gg_checkpoint_get(rd, first), "no %s", first);
        cr_assert_str_eq(gg_checkpoint_get_meta(rd, "optim.state.fc.bias.step"), "3");
        gg_checkpoint_free(rd);
        run_fini(&a);
        run_fini(&b);
    }
}
