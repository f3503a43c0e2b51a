/* Tests of the .npy reader/writer (gg_npy.h): every fixture of scripts/gen_npy_fixtures.py, header
 * spellings, round trips of contiguous and strided tensors, the saved header layout, every malformed
 * file, every truncation and byte corruption of a good file, I/O errors and leak checks. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "groupgrad.h"

/* ---- helpers (self-contained: this suite needs only Criterion and the public headers) ---- */

#define nt_assert_shape(t, ...) nt_assert_shape_((t), GG_SHAPE(__VA_ARGS__), __LINE__)
static void nt_assert_shape_(const gg_tensor *t, int ndim, const int64_t *shape, int line) {
    cr_assert_not_null(t, "line %d: tensor is NULL (last error: %s)", line, gg_last_error());
    cr_assert_eq(t->ndim, ndim, "line %d: ndim %d, expected %d", line, t->ndim, ndim);
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) {
        cr_assert_eq(t->shape[d], shape[d], "line %d: shape[%d] = %lld, expected %lld", line, d,
                     (long long)t->shape[d], (long long)shape[d]);
        n *= shape[d];
    }
    cr_assert_eq(t->numel, n, "line %d: numel %lld, expected %lld", line, (long long)t->numel, (long long)n);
}

/* The elements of t, read one by one with gg_tensor_get in row-major order, equal expected[0 .. numel-1]
 * bit for bit. */
#define nt_assert_values(t, expected) nt_assert_values_((t), (expected), __LINE__)
#define nt_assert_list(t, ...) nt_assert_values_((t), (const float[]){__VA_ARGS__}, __LINE__)
static void nt_assert_values_(const gg_tensor *t, const float *expected, int line) {
    cr_assert_not_null(t, "line %d: tensor is NULL (last error: %s)", line, gg_last_error());
    int64_t idx[GG_MAX_DIMS] = {0};
    for (int64_t i = 0; i < t->numel; i++) {
        float v = NAN;
        cr_assert_eq(gg_tensor_get(t, idx, &v), GG_OK, "line %d: gg_tensor_get failed: %s", line,
                     gg_last_error());
        cr_assert(memcmp(&v, &expected[i], sizeof v) == 0, "line %d: element %lld is %g, expected %g", line,
                  (long long)i, (double)v, (double)expected[i]);
        for (int d = t->ndim - 1; d >= 0; d--) {
            if (++idx[d] < t->shape[d]) break;
            idx[d] = 0;
        }
    }
}

/* The last error has this status and its message contains `needle`. */
#define nt_assert_error(status, needle)                                                                \
    cr_assert(gg_last_status() == (status) && strstr(gg_last_error(), (needle)),                       \
              "last error %s \"%s\", expected %s containing \"%s\"", gg_status_name(gg_last_status()), \
              gg_last_error(), gg_status_name(status), (needle))
#define nt_assert_msg_has(needle)                                                                         \
    cr_assert_not_null(strstr(gg_last_error(), (needle)), "message \"%s\" lacks \"%s\"", gg_last_error(), \
                       (needle))

/* A contiguous tensor holding 0, 1, 2, ... in row-major order. */
#define NT_IOTA(...) nt_iota(GG_SHAPE(__VA_ARGS__))
static gg_tensor *nt_iota(int ndim, const int64_t *shape) {
    gg_tensor *t = gg_tensor_empty(ndim, shape);
    cr_assert_not_null(t, "gg_tensor_empty failed: %s", gg_last_error());
    float *p = gg_tensor_data(t);
    for (int64_t i = 0; i < t->numel; i++) p[i] = (float)i;
    return t;
}

/* Path of a fixture in $GG_TEST_DATA/npy/ (a static buffer: each Criterion test runs in its own process). */
static const char *fx(const char *file) {
    static char path[4096];
    const char *dir = getenv("GG_TEST_DATA");
    snprintf(path, sizeof path, "%s/npy/%s", dir ? dir : "tests/data", file);
    return path;
}

static gg_tensor *load_ok(const char *file) {
    gg_clear_error();
    gg_tensor *t = gg_npy_load(fx(file));
    cr_assert_not_null(t, "loading %s failed: %s", file, gg_last_error());
    cr_assert_eq(gg_last_status(), GG_OK);
    return t;
}

/* Whole file into a malloc'ed buffer. */
static unsigned char *read_all(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    unsigned char *buf = malloc(1 << 16);
    *size = fread(buf, 1, 1 << 16, f);
    cr_assert(feof(f) && !ferror(f), "reading %s", path);
    fclose(f);
    return buf;
}

/* The npy_save suite saves into a private directory made by tmp_setup; tmp_teardown removes it and
 * everything in it, also after a failed assertion. tmp.path is a file name inside it. */
static struct {
    char dir[64];
    char path[128];
} tmp;

static void tmp_setup(void) {
    snprintf(tmp.dir, sizeof tmp.dir, "/tmp/gg_npy_test_XXXXXX");
    cr_assert_not_null(mkdtemp(tmp.dir), "mkdtemp failed");
    snprintf(tmp.path, sizeof tmp.path, "%s/t.npy", tmp.dir);
}

/* Number of entries in the directory; with `remove`, delete them. */
static int tmp_scan(bool remove) {
    DIR *dir = opendir(tmp.dir);
    if (!dir) return -1;
    int n = 0;
    char p[512];
    for (struct dirent *e; (e = readdir(dir));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        n++;
        snprintf(p, sizeof p, "%s/%s", tmp.dir, e->d_name);
        if (remove) unlink(p);
    }
    closedir(dir);
    return n;
}
static int tmp_count(void) { return tmp_scan(false); }

static void tmp_teardown(void) {
    if (!tmp.dir[0]) return;
    tmp_scan(true);
    rmdir(tmp.dir);
}

TestSuite(npy_save, .init = tmp_setup, .fini = tmp_teardown);

/* An in-memory .npy image: version 1.0 preamble, `header` as given (no padding added), then data. */
static unsigned char *make_npy(const char *header, const void *data, size_t ndata, size_t *size) {
    size_t hlen = strlen(header);
    *size = 10 + hlen + ndata;
    unsigned char *b = malloc(*size);
    memcpy(b, "\x93NUMPY\x01\x00", 8);
    b[8] = (unsigned char)hlen;
    b[9] = (unsigned char)(hlen >> 8);
    memcpy(b + 10, header, hlen);
    if (ndata) memcpy(b + 10 + hlen, data, ndata);
    return b;
}

/* Save t into tmp.path, load it back and compare with t's elements in row-major order; checks that
 * nothing else is left in the directory. */
static void roundtrip(const gg_tensor *t) {
    tmp_scan(true);
    size_t live = gg_alloc_live_bytes();
    cr_assert_eq(gg_npy_save(tmp.path, t), GG_OK, "save failed: %s", gg_last_error());
    cr_assert_eq(tmp_count(), 1, "save left %d files in %s", tmp_count(), tmp.dir);
    cr_assert_eq(gg_alloc_live_bytes(), live, "save changed live bytes");
    gg_tensor *u = gg_npy_load(tmp.path);
    cr_assert_not_null(u, "load failed: %s", gg_last_error());
    cr_assert_eq(u->ndim, t->ndim);
    for (int k = 0; k < t->ndim; k++) cr_assert_eq(u->shape[k], t->shape[k]);
    cr_assert(gg_tensor_is_contiguous(u));
    float *expect = malloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1));
    cr_assert_eq(gg_tensor_to_buffer(t, expect, t->numel), GG_OK, "%s", gg_last_error());
    nt_assert_values(u, expect);
    free(expect);
    gg_tensor_free(u);
}

/* ---- good fixtures ---- */

Test(npy_load, f4_c_order) {
    gg_tensor *t = load_ok("f4_2x3.npy");
    nt_assert_shape(t, 2, 3);
    nt_assert_list(t, 0, 1, 2, 3, 4, 5);
    gg_tensor_free(t);
}

Test(npy_load, f8) {
    gg_tensor *t = load_ok("f8_5.npy");
    nt_assert_shape(t, 5);
    nt_assert_list(t, -1.0f, -0.5f, 0.0f, 0.5f, 1.0f);
    gg_tensor_free(t);
}

Test(npy_load, i4) {
    gg_tensor *t = load_ok("i4_2x2.npy");
    nt_assert_shape(t, 2, 2);
    nt_assert_list(t, -2, -1, 0, 1);
    gg_tensor_free(t);
}

Test(npy_load, i8) {
    gg_tensor *t = load_ok("i8_3.npy");
    nt_assert_shape(t, 3);
    nt_assert_list(t, -1099511627776.0f, 0, 1099511627776.0f); /* -2^40, 0, 2^40: exact in float */
    gg_tensor_free(t);
}

Test(npy_load, u1) {
    gg_tensor *t = load_ok("u1_6.npy");
    nt_assert_shape(t, 6);
    nt_assert_list(t, 0, 51, 102, 153, 204, 255);
    gg_tensor_free(t);
}

Test(npy_load, i1) {
    gg_tensor *t = load_ok("i1_4.npy");
    nt_assert_shape(t, 4);
    nt_assert_list(t, -128, -1, 0, 127);
    gg_tensor_free(t);
}

Test(npy_load, fortran_order_2d) {
    /* Logically arange(12).reshape(3, 4), stored column-major. */
    gg_tensor *t = load_ok("fortran_f4_3x4.npy");
    nt_assert_shape(t, 3, 4);
    cr_assert(gg_tensor_is_contiguous(t));
    const int64_t probes[][2] = {{0, 0}, {0, 1}, {1, 0}, {2, 3}, {1, 2}, {2, 0}};
    for (size_t k = 0; k < sizeof probes / sizeof probes[0]; k++) {
        float v = -1;
        cr_assert_eq(gg_tensor_get(t, probes[k], &v), GG_OK);
        cr_assert_eq(v, (float)(probes[k][0] * 4 + probes[k][1]), "t[%lld,%lld] = %g",
                     (long long)probes[k][0], (long long)probes[k][1], (double)v);
    }
    float expect[12];
    for (int i = 0; i < 12; i++) expect[i] = (float)i;
    nt_assert_values(t, expect);
    gg_tensor_free(t);
}

Test(npy_load, fortran_order_3d) {
    gg_tensor *t = load_ok("fortran_f8_2x3x4.npy");
    nt_assert_shape(t, 2, 3, 4);
    float v = -1;
    cr_assert_eq(gg_tensor_get(t, (const int64_t[]){1, 2, 1}, &v), GG_OK);
    cr_assert_eq(v, 21.0f);
    float expect[24];
    for (int i = 0; i < 24; i++) expect[i] = (float)i;
    nt_assert_values(t, expect);
    gg_tensor_free(t);
}

Test(npy_load, rank0) {
    gg_tensor *t = load_ok("rank0.npy");
    cr_assert_eq(t->ndim, 0);
    cr_assert_eq(t->numel, 1);
    float v = 0;
    cr_assert_eq(gg_tensor_item(t, &v), GG_OK);
    cr_assert_eq(v, 7.5f);
    gg_tensor_free(t);
}

Test(npy_load, empty) {
    gg_tensor *t = load_ok("empty_1d.npy");
    nt_assert_shape(t, 0);
    gg_tensor_free(t);
    t = load_ok("empty_2x0.npy");
    nt_assert_shape(t, 2, 0);
    gg_tensor_free(t);
}

Test(npy_load, versions_2_and_3) {
    const char *files[] = {"v2_f4_2x3.npy", "v3_f4_2x3.npy"};
    for (int k = 0; k < 2; k++) {
        size_t size;
        unsigned char *b = read_all(fx(files[k]), &size);
        cr_assert_eq(b[6], k + 2, "%s is not version %d.0", files[k], k + 2);
        free(b);
        gg_tensor *t = load_ok(files[k]);
        nt_assert_shape(t, 2, 3);
        nt_assert_list(t, 0, 1, 2, 3, 4, 5);
        gg_tensor_free(t);
    }
}

Test(npy_load, rank4) {
    gg_tensor *t = load_ok("f4_4d.npy");
    nt_assert_shape(t, 1, 2, 3, 4);
    float expect[24];
    for (int i = 0; i < 24; i++) expect[i] = (float)i;
    nt_assert_values(t, expect);
    gg_tensor_free(t);
}

Test(npy_load, hand_written_header) {
    /* Keys reordered, double quotes, odd spacing, no trailing comma. */
    gg_tensor *t = load_ok("odd_header.npy");
    nt_assert_shape(t, 3);
    nt_assert_list(t, 0, 1, 2);
    gg_tensor_free(t);
}

Test(npy_load, no_leak_after_success) {
    size_t live = gg_alloc_live_bytes();
    gg_tensor *t = load_ok("f4_4d.npy");
    cr_assert_gt(gg_alloc_live_bytes(), live);
    gg_tensor_free(t);
    cr_assert_eq(gg_alloc_live_bytes(), live);
}

/* ---- header spellings through gg_npy_load_buffer ---- */

static const char *const good_headers[] = {
    "{'descr':'<f4','fortran_order':False,'shape':(2,3)}",
    "{ 'shape' : ( 2 , 3 , ) , 'descr' : '=f4' , 'fortran_order' : False , }\n",
    "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2L, 3L)}",
    "\t{'fortran_order': False,\r\n 'shape': (2, 3), 'descr': '<f4',}   \n",
    "{'descr': '<f4', 'fortran_order': True, 'shape': (6,)}",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (+2, 3)}",
};

ParameterizedTestParameters(npy_header, accepted) {
    static int idx[sizeof good_headers / sizeof good_headers[0]];
    for (size_t k = 0; k < sizeof idx / sizeof idx[0]; k++) idx[k] = (int)k;
    return cr_make_param_array(int, idx, sizeof idx / sizeof idx[0]);
}

ParameterizedTest(int *k, npy_header, accepted) {
    const float data[6] = {0, 1, 2, 3, 4, 5};
    size_t size;
    unsigned char *b = make_npy(good_headers[*k], data, sizeof data, &size);
    gg_tensor *t = gg_npy_load_buffer(b, size, "mem.npy");
    cr_assert_not_null(t, "header %s rejected: %s", good_headers[*k], gg_last_error());
    cr_assert_eq(t->numel, 6);
    float expect[6] = {0, 1, 2, 3, 4, 5};
    nt_assert_values(t, expect);
    gg_tensor_free(t);
    free(b);
}

static const struct {
    const char *header, *needle;
} bad_headers[] = {
    {"", "header dict: expected '{'"},
    {"{", "at its end"},
    {"{}", "no 'descr' key"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)", "expected ',' or '}'"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3),,}", "expected a string"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': [2, 3]}", "must be a tuple"},
    {"{'descr': '<f4', 'fortran_order': false, 'shape': (2, 3)}", "True or False"},
    {"{'descr': '<f4', 'fortran_order': Falsey, 'shape': (2, 3)}", "True or False"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3x)}", "malformed integer"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (2 3)}", "expected ',' or ')'"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (,)}", "expected an integer"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'shape': (6,)}", "duplicate key 'shape'"},
    {"{'descr': <f4, 'fortran_order': False, 'shape': (2, 3)}", "expected a string"},
    {"{'descr': '<f4' 'fortran_order': False, 'shape': (2, 3)}", "expected ',' or '}'"},
    {"{'descr' '<f4', 'fortran_order': False, 'shape': (2, 3)}", "expected ':'"},
    {"{'descr': '<f4\\n', 'fortran_order': False, 'shape': (2, 3)}", "unsupported character"},
    {"{'descr': '<f4, 'fortran_order': False, 'shape': (2, 3)}", "expected ',' or '}' at byte 17"},
    {"{'descr': '<f2', 'fortran_order': False, 'shape': (2, 3)}", "unsupported dtype '<f2'"},
    {"{'descr': 'f4', 'fortran_order': False, 'shape': (2, 3)}", "unsupported dtype 'f4'"},
    {"{'descr': '>i8', 'fortran_order': False, 'shape': (2, 3)}", "big-endian"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)} {}", "unexpected text after the dict"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3)}", "negative dimension -3"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (9223372036854775808,)}", "overflows int64"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296)}", "too many elements"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4294967296, 4294967296)}", "too many elements"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (3,)}", "truncated data"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", "20 extra"},
    {"{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3)}", "data size mismatch"},
};

ParameterizedTestParameters(npy_header, rejected) {
    static int idx[sizeof bad_headers / sizeof bad_headers[0]];
    for (size_t k = 0; k < sizeof idx / sizeof idx[0]; k++) idx[k] = (int)k;
    return cr_make_param_array(int, idx, sizeof idx / sizeof idx[0]);
}

ParameterizedTest(int *k, npy_header, rejected) {
    const float data[6] = {0, 1, 2, 3, 4, 5};
    size_t size;
    /* Six floats of data, except two for the "(3,)" case, which must be reported as truncated. */
    size_t ndata = strstr(bad_headers[*k].header, "(3,)") ? 2 * sizeof(float) : sizeof data;
    unsigned char *b = make_npy(bad_headers[*k].header, data, ndata, &size);
    size_t live = gg_alloc_live_bytes();
    gg_clear_error();
    gg_tensor *t = gg_npy_load_buffer(b, size, "mem.npy");
    cr_assert_null(t, "header %s accepted", bad_headers[*k].header);
    nt_assert_error(GG_ERR_FORMAT, "gg_npy_load_buffer: mem.npy: ");
    nt_assert_msg_has(bad_headers[*k].needle);
    cr_assert_eq(gg_alloc_live_bytes(), live);
    free(b);
}

/* ---- malformed files ---- */

static const struct {
    const char *file, *needle;
} bad_files[] = {
    {"bad_magic.npy", "bad magic"},
    {"bad_version.npy", "version 4.0"},
    {"bad_short.npy", "too short"},
    {"bad_truncated_header.npy", "runs past the end of the file (40 bytes)"},
    {"bad_header_past_end.npy", "header length 4000 runs past the end of the file (128 bytes)"},
    {"bad_truncated_data.npy", "truncated data"},
    {"bad_extra_data.npy", "data size mismatch"},
    {"bad_dict_garbage.npy", "header dict: expected a string"},
    {"bad_dict_not_dict.npy", "expected '{'"},
    {"bad_unknown_key.npy", "unknown key 'extra'"},
    {"bad_missing_key.npy", "no 'fortran_order' key"},
    {"bad_duplicate_key.npy", "duplicate key 'descr'"},
    {"bad_shape_not_tuple.npy", "must be a tuple"},
    {"bad_fortran_value.npy", "True or False"},
    {"bad_big_endian.npy", "unsupported dtype '>f4'"},
    {"bad_complex.npy", "unsupported dtype '<c8'"},
    {"bad_structured.npy", "unsupported dtype"},
    {"bad_negative_dim.npy", "negative dimension -1"},
    {"bad_overflow_shape.npy", "too many elements"},
    {"bad_huge_dim.npy", "overflows int64"},
    {"bad_rank9.npy", "more than 8 dimensions"},
    {"bad_trailing_text.npy", "unexpected text after the dict"},
};

ParameterizedTestParameters(npy_bad_file, rejected) {
    static int idx[sizeof bad_files / sizeof bad_files[0]];
    for (size_t k = 0; k < sizeof idx / sizeof idx[0]; k++) idx[k] = (int)k;
    return cr_make_param_array(int, idx, sizeof idx / sizeof idx[0]);
}

ParameterizedTest(int *k, npy_bad_file, rejected) {
    const char *path = fx(bad_files[*k].file);
    size_t live = gg_alloc_live_bytes();
    gg_clear_error();
    gg_tensor *t = gg_npy_load(path);
    cr_assert_null(t, "%s was accepted", path);
    nt_assert_error(GG_ERR_FORMAT, path);
    cr_assert_eq(strncmp(gg_last_error(), "gg_npy_load: ", 13), 0, "message: %s", gg_last_error());
    nt_assert_msg_has(bad_files[*k].needle);
    cr_assert_eq(gg_alloc_live_bytes(), live, "a failed load changed the live byte count");
}

Test(npy_bad_file, missing_file_is_io_error) {
    const char *path = fx("does_not_exist.npy");
    gg_clear_error();
    cr_assert_null(gg_npy_load(path));
    nt_assert_error(GG_ERR_IO, path);
    nt_assert_msg_has("No such file");
}

Test(npy_bad_file, directory_is_io_error) {
    const char *path = fx("");
    gg_clear_error();
    cr_assert_null(gg_npy_load(path));
    nt_assert_error(GG_ERR_IO, path);
}

Test(npy_bad_file, null_arguments) {
    gg_clear_error();
    cr_assert_null(gg_npy_load(NULL));
    cr_assert_eq(gg_last_status(), GG_ERR_ARG);
    gg_clear_error();
    cr_assert_null(gg_npy_load_buffer(NULL, 10, "x"));
    cr_assert_eq(gg_last_status(), GG_ERR_ARG);
    gg_clear_error();
    cr_assert_null(gg_npy_load_buffer(NULL, 0, NULL));
    nt_assert_error(GG_ERR_FORMAT, "<buffer>");
}

/* ---- truncation and corruption of good files ---- */

Test(npy_robust, every_prefix_fails_cleanly) {
    const char *files[] = {"f4_2x3.npy", "fortran_f4_3x4.npy", "v2_f4_2x3.npy", "rank0.npy"};
    size_t live = gg_alloc_live_bytes();
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        size_t size;
        unsigned char *full = read_all(fx(files[f]), &size);
        for (size_t len = 0; len < size; len++) {
            /* A copy of exactly len bytes, so that ASan/valgrind catch any read past the end. */
            unsigned char *b = malloc(len ? len : 1);
            memcpy(b, full, len);
            gg_clear_error();
            gg_tensor *t = gg_npy_load_buffer(b, len, "prefix.npy");
            cr_assert_null(t, "%s cut to %zu of %zu bytes was accepted", files[f], len, size);
            nt_assert_error(GG_ERR_FORMAT, "prefix.npy");
            free(b);
        }
        gg_tensor *t = gg_npy_load_buffer(full, size, "full.npy");
        cr_assert_not_null(t, "%s", gg_last_error());
        gg_tensor_free(t);
        free(full);
    }
    cr_assert_eq(gg_alloc_live_bytes(), live);
}

Test(npy_robust, every_byte_corruption_loads_or_fails_cleanly) {
    static const unsigned char values[] = {0x00, 0x20, 0x27, 0x28, 0x29, 0x2c,
                                           0x30, 0x39, 0x7b, 0x7d, 0x80, 0xff};
    size_t live = gg_alloc_live_bytes();
    size_t size;
    unsigned char *full = read_all(fx("fortran_f4_3x4.npy"), &size);
    unsigned char *b = malloc(size);
    int loaded = 0, failed = 0;
    for (size_t pos = 0; pos < size; pos++) {
        for (size_t v = 0; v < sizeof values; v++) {
            memcpy(b, full, size);
            b[pos] = values[v];
            gg_clear_error();
            gg_tensor *t = gg_npy_load_buffer(b, size, "mutant.npy");
            if (t) {
                loaded++;
                cr_assert_eq(t->numel * 4, 48, "a corrupted file loaded with %lld elements",
                             (long long)t->numel);
                gg_tensor_free(t);
            } else {
                failed++;
                nt_assert_error(GG_ERR_FORMAT, "mutant.npy");
            }
        }
    }
    cr_assert_gt(loaded, 0);
    cr_assert_gt(failed, 0);
    free(b);
    free(full);
    cr_assert_eq(gg_alloc_live_bytes(), live);
}

/* ---- saving ---- */

Test(npy_save, roundtrip_contiguous) {
    gg_tensor *t = NT_IOTA(2, 3, 4);
    roundtrip(t);
    gg_tensor_free(t);
}

Test(npy_save, roundtrip_transposed) {
    gg_tensor *t = NT_IOTA(3, 4);
    gg_tensor *tt = gg_tensor_transpose(t, 0, 1);
    cr_assert_not_null(tt);
    cr_assert(!gg_tensor_is_contiguous(tt));
    roundtrip(tt);
    gg_tensor_free(tt);
    gg_tensor_free(t);
}

Test(npy_save, roundtrip_sliced_and_permuted) {
    gg_tensor *t = NT_IOTA(4, 5, 6);
    gg_tensor *s = gg_tensor_slice(t, 2, 1, 6, 2); /* [4,5,3], stride 2 inside */
    cr_assert_not_null(s, "%s", gg_last_error());
    roundtrip(s);
    gg_tensor *p = gg_tensor_permute(s, (const int[]){2, 0, 1});
    cr_assert_not_null(p, "%s", gg_last_error());
    roundtrip(p);
    gg_tensor *sel = gg_tensor_select(t, 1, 3); /* [4,6] */
    cr_assert_not_null(sel, "%s", gg_last_error());
    roundtrip(sel);
    gg_tensor_free(sel);
    gg_tensor_free(p);
    gg_tensor_free(s);
    gg_tensor_free(t);
}

Test(npy_save, roundtrip_broadcast_view) {
    gg_tensor *t = NT_IOTA(3);
    gg_tensor *e = gg_tensor_expand(t, GG_SHAPE(2, 3)); /* stride 0 along dim 0 */
    cr_assert_not_null(e, "%s", gg_last_error());
    roundtrip(e);
    gg_tensor_free(e);
    gg_tensor_free(t);
}

Test(npy_save, roundtrip_large_strided) {
    /* More than the writer's 16 KiB chunk, read through a transpose. */
    gg_tensor *t = NT_IOTA(100, 301);
    gg_tensor *tt = gg_tensor_transpose(t, 0, 1);
    roundtrip(tt);
    gg_tensor_free(tt);
    gg_tensor_free(t);
}

Test(npy_save, roundtrip_special_values) {
    const float v[5] = {-0.0f, 1e-45f, 3.4028235e38f, -INFINITY, INFINITY};
    gg_tensor *t = gg_tensor_from_data(GG_SHAPE(5), v);
    roundtrip(t);
    gg_tensor_free(t);
}

Test(npy_save, roundtrip_rank0_and_empty) {
    gg_tensor *s = gg_tensor_scalar(-2.25f);
    roundtrip(s);
    gg_tensor_free(s);
    gg_tensor *e = gg_tensor_empty(GG_SHAPE(0));
    roundtrip(e);
    gg_tensor_free(e);
    gg_tensor *e2 = gg_tensor_zeros(GG_SHAPE(3, 0, 2));
    roundtrip(e2);
    gg_tensor_free(e2);
}

Test(npy_save, header_layout) {
    struct {
        gg_tensor *t;
        const char *shape;
    } cases[] = {
        {gg_tensor_scalar(1), "'shape': ()"},
        {NT_IOTA(5), "'shape': (5,)"},
        {NT_IOTA(4, 3), "'shape': (4, 3)"},
        {NT_IOTA(1, 1, 1, 1, 1, 1, 1, 2), "'shape': (1, 1, 1, 1, 1, 1, 1, 2)"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        cr_assert_eq(gg_npy_save(tmp.path, cases[c].t), GG_OK, "%s", gg_last_error());
        size_t size;
        unsigned char *b = read_all(tmp.path, &size);
        cr_assert_eq(memcmp(b, "\x93NUMPY\x01\x00", 8), 0, "bad magic or version");
        size_t hlen = (size_t)b[8] | (size_t)b[9] << 8;
        cr_assert_eq((10 + hlen) % 64, 0, "preamble + header is %zu bytes", 10 + hlen);
        cr_assert_eq(size, 10 + hlen + 4 * (size_t)cases[c].t->numel);
        cr_assert_eq(b[10 + hlen - 1], '\n');
        char *h = strndup((const char *)b + 10, hlen);
        cr_assert_not_null(strstr(h, "'descr': '<f4'"), "%s", h);
        cr_assert_not_null(strstr(h, "'fortran_order': False"), "%s", h);
        cr_assert_not_null(strstr(h, cases[c].shape), "%s lacks %s", h, cases[c].shape);
        /* Data are little-endian float32 in row-major order. */
        float first;
        memcpy(&first, b + 10 + hlen, 4);
        cr_assert_eq(first, c == 0 ? 1.0f : 0.0f);
        free(h);
        free(b);
        gg_tensor_free(cases[c].t);
    }
}

Test(npy_save, overwrites_existing_file) {
    gg_tensor *a = NT_IOTA(2, 3), *b = gg_tensor_full(GG_SHAPE(4), 9.0f);
    cr_assert_eq(gg_npy_save(tmp.path, a), GG_OK);
    cr_assert_eq(gg_npy_save(tmp.path, b), GG_OK);
    cr_assert_eq(tmp_count(), 1);
    gg_tensor *u = gg_npy_load(tmp.path);
    nt_assert_shape(u, 4);
    nt_assert_list(u, 9, 9, 9, 9);
    gg_tensor_free(u);
    gg_tensor_free(a);
    gg_tensor_free(b);
}

Test(npy_save, special_targets_are_written_in_place) {
    gg_tensor *t = NT_IOTA(2, 3);
    /* Through a symbolic link: the link stays and its target gets the data. */
    char target[160], link_path[160];
    snprintf(target, sizeof target, "%s/target.npy", tmp.dir);
    snprintf(link_path, sizeof link_path, "%s/link.npy", tmp.dir);
    cr_assert_eq(symlink("target.npy", link_path), 0);
    cr_assert_eq(gg_npy_save(link_path, t), GG_OK, "%s", gg_last_error());
    struct stat st;
    cr_assert(lstat(link_path, &st) == 0 && S_ISLNK(st.st_mode), "the symbolic link was replaced");
    gg_tensor *u = gg_npy_load(target);
    nt_assert_shape(u, 2, 3);
    nt_assert_list(u, 0, 1, 2, 3, 4, 5);
    gg_tensor_free(u);
    cr_assert_eq(tmp_count(), 2);
    /* A device. */
    cr_assert_eq(gg_npy_save("/dev/null", t), GG_OK, "%s", gg_last_error());
    cr_assert(stat("/dev/null", &st) == 0 && S_ISCHR(st.st_mode));
    /* A name too long for a temporary suffix (NAME_MAX 255). */
    char name[300];
    int n = snprintf(name, sizeof name, "%s/", tmp.dir);
    memset(name + n, 'a', 250);
    strcpy(name + n + 250, ".npy");
    cr_assert_eq(gg_npy_save(name, t), GG_OK, "%s", gg_last_error());
    u = gg_npy_load(name);
    nt_assert_shape(u, 2, 3);
    gg_tensor_free(u);
    cr_assert_eq(tmp_count(), 3);
    gg_tensor_free(t);
}

Test(npy_save, unwritable_path_is_io_error) {
    gg_tensor *t = NT_IOTA(3);
    gg_clear_error();
    cr_assert_eq(gg_npy_save("/nonexistent_dir/x.npy", t), GG_ERR_IO);
    nt_assert_error(GG_ERR_IO, "gg_npy_save: /nonexistent_dir/x.npy: ");
    /* A directory cannot be replaced by a file, and must survive the attempt. */
    gg_clear_error();
    cr_assert_eq(gg_npy_save(tmp.dir, t), GG_ERR_IO);
    nt_assert_error(GG_ERR_IO, tmp.dir);
    struct stat st;
    cr_assert(stat(tmp.dir, &st) == 0 && S_ISDIR(st.st_mode));
    cr_assert_eq(tmp_count(), 0);
    gg_tensor_free(t);
}

Test(npy_save, null_arguments) {
    gg_tensor *t = NT_IOTA(3);
    gg_clear_error();
    cr_assert_eq(gg_npy_save(NULL, t), GG_ERR_ARG);
    gg_clear_error();
    cr_assert_eq(gg_npy_save(tmp.path, NULL), GG_ERR_ARG);
    /* Sticky: a NULL tensor produced by a failed call keeps that call's error. */
    gg_tensor *bad = gg_npy_load(fx("bad_magic.npy"));
    cr_assert_null(bad);
    cr_assert_eq(gg_npy_save(tmp.path, bad), GG_ERR_FORMAT);
    nt_assert_msg_has("bad magic");
    cr_assert_eq(tmp_count(), 0, "a failed save created a file");
    gg_tensor_free(t);
}
