/* Tests of the dataset pipeline (gg_data.h): the IDX fixtures of scripts/gen_idx_fixtures.py read exactly
 * (gzip and raw), every malformed file rejected with a message naming it and nothing leaked, the loader's
 * permutations, state save/restore, augmentation and normalisation, and the real Fashion-MNIST files
 * when the Debian package dataset-fashion-mnist is installed. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "groupgrad.h"

/* ---- helpers ---- */

/* Path of a fixture in $GG_TEST_DATA/idx/ (rotating static buffers, so a few may be alive at once). */
static const char *fx(const char *rel) {
    static char paths[4][4096];
    static int k;
    char *p = paths[k++ % 4];
    const char *dir = getenv("GG_TEST_DATA");
    snprintf(p, sizeof paths[0], "%s/idx/%s", dir ? dir : "tests/data", rel);
    return p;
}

/* The last error has this status and its message contains `needle`. */
#define dt_assert_error(status, needle)                                                                \
    cr_assert(gg_last_status() == (status) && strstr(gg_last_error(), (needle)),                       \
              "last error %s \"%s\", expected %s containing \"%s\"", gg_status_name(gg_last_status()), \
              gg_last_error(), gg_status_name(status), (needle))
#define dt_assert_msg_has(needle)                                                                         \
    cr_assert_not_null(strstr(gg_last_error(), (needle)), "message \"%s\" lacks \"%s\"", gg_last_error(), \
                       (needle))

static uint8_t small_pixel(int i, int y, int x) { return (uint8_t)(12 * i + 3 * y + x); }
static uint8_t fm_pixel(int i, int y, int x) { return (uint8_t)((31 * i + 7 * y + 3 * x) % 256); }

/* ---- reading good files ---- */

static void check_small_idx(const char *rel) {
    gg_clear_error();
    size_t live = gg_alloc_live_bytes();
    for (int want = 0; want <= 3; want += 3) {
        gg_idx *m = gg_idx_load(fx(rel), want);
        cr_assert_not_null(m, "%s: %s", rel, gg_last_error());
        cr_assert_eq(m->ndim, 3);
        cr_assert(m->dims[0] == 5 && m->dims[1] == 4 && m->dims[2] == 3, "dims %lld %lld %lld",
                  (long long)m->dims[0], (long long)m->dims[1], (long long)m->dims[2]);
        cr_assert_eq(m->numel, 60);
        for (int i = 0; i < 5; i++)
            for (int y = 0; y < 4; y++)
                for (int x = 0; x < 3; x++)
                    cr_assert_eq(m->data[(i * 4 + y) * 3 + x], small_pixel(i, y, x), "%s pixel %d,%d,%d", rel,
                                 i, y, x);
        gg_idx_free(m);
    }
    cr_assert_eq(gg_alloc_live_bytes(), live);
    cr_assert_eq(gg_last_status(), GG_OK);
}

Test(idx, reads_gzip_file_exactly) { check_small_idx("small-images-idx3-ubyte.gz"); }
Test(idx, reads_raw_file_exactly) { check_small_idx("small-images-idx3-ubyte"); }

Test(idx, any_rank_and_labels) {
    gg_idx *m = gg_idx_load(fx("rank4-idx4-ubyte.gz"), 0);
    cr_assert_not_null(m, "%s", gg_last_error());
    cr_assert_eq(m->ndim, 4);
    cr_assert(m->dims[0] == 2 && m->dims[1] == 1 && m->dims[2] == 2 && m->dims[3] == 2);
    for (int i = 0; i < 8; i++) cr_assert_eq(m->data[i], i);
    gg_idx_free(m);
    gg_idx *l = gg_idx_load(fx("small-labels-idx1-ubyte.gz"), 1);
    cr_assert_not_null(l, "%s", gg_last_error());
    cr_assert(l->ndim == 1 && l->dims[0] == 5 && l->numel == 5);
    for (int i = 0; i < 5; i++) cr_assert_eq(l->data[i], i);
    gg_idx_free(l);
    gg_idx_free(NULL);
}

Test(idx, dataset_from_idx_pair) {
    size_t live = gg_alloc_live_bytes();
    /* raw images with gzip labels */
    gg_dataset *ds = gg_dataset_load_idx(fx("small-images-idx3-ubyte"), fx("small-labels-idx1-ubyte.gz"), 5);
    cr_assert_not_null(ds, "%s", gg_last_error());
    cr_assert(ds->n == 5 && ds->channels == 1 && ds->height == 4 && ds->width == 3 && ds->n_classes == 5);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(ds->labels[i], i);
        for (int y = 0; y < 4; y++)
            for (int x = 0; x < 3; x++) cr_assert_eq(ds->images[(i * 4 + y) * 3 + x], small_pixel(i, y, x));
    }
    gg_dataset_free(ds);
    gg_dataset_free(NULL);
    cr_assert_eq(gg_alloc_live_bytes(), live);
}

Test(idx, fashion_mnist_layout_gzip_and_raw) {
    size_t live = gg_alloc_live_bytes();
    const uint8_t want_train[5] = {9, 0, 3, 7, 1}, want_test[3] = {2, 5, 8};
    for (int train = 1; train >= 0; train--) {
        gg_dataset *ds = gg_fashion_mnist_load(fx("fmnist"), train);
        cr_assert_not_null(ds, "%s", gg_last_error());
        int n = train ? 5 : 3;
        cr_assert(ds->n == n && ds->channels == 1 && ds->height == 28 && ds->width == 28 &&
                  ds->n_classes == 10);
        for (int i = 0; i < n; i++) {
            cr_assert_eq(ds->labels[i], train ? want_train[i] : want_test[i]);
            for (int y = 0; y < 28; y++)
                for (int x = 0; x < 28; x++)
                    cr_assert_eq(ds->images[(i * 28 + y) * 28 + x], fm_pixel(i, y, x), "image %d (%d,%d)", i,
                                 y, x);
        }
        gg_dataset_free(ds);
    }
    cr_assert_eq(gg_alloc_live_bytes(), live);
}

Test(idx, dataset_from_buffers) {
    const uint8_t im[2 * 2 * 1 * 3] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, lb[2] = {1, 0};
    gg_dataset *ds = gg_dataset_from_buffers(2, 2, 1, 3, im, lb, 2);
    cr_assert_not_null(ds, "%s", gg_last_error());
    cr_assert(ds->n == 2 && ds->channels == 2 && ds->height == 1 && ds->width == 3);
    cr_assert(memcmp(ds->images, im, sizeof im) == 0 && memcmp(ds->labels, lb, 2) == 0);
    gg_dataset_free(ds);
    size_t live = gg_alloc_live_bytes();
    const uint8_t bad[2] = {1, 2};
    cr_assert_null(gg_dataset_from_buffers(2, 2, 1, 3, im, bad, 2));
    dt_assert_error(GG_ERR_ARG, "label 2 at index 1 is out of range 0..1");
    cr_assert_null(gg_dataset_from_buffers(2, 0, 1, 3, im, lb, 2));
    dt_assert_error(GG_ERR_ARG, "[0,1,3]");
    cr_assert_null(gg_dataset_from_buffers(2, 2, 1, 3, NULL, lb, 2));
    dt_assert_error(GG_ERR_ARG, "NULL");
    cr_assert_null(gg_dataset_from_buffers(2, 2, 1, 3, im, lb, 0));
    dt_assert_error(GG_ERR_ARG, "n_classes 0");
    cr_assert_eq(gg_alloc_live_bytes(), live);
}

/* ---- malformed files: NULL, the status, a message naming the file, nothing leaked ---- */

enum { AS_IMAGES, AS_LABELS, AS_IDX_ANY };

static void expect_bad(const char *rel, int as, int status, const char *needle) {
    const char *path = fx(rel);
    gg_clear_error();
    size_t live = gg_alloc_live_bytes();
    if (as == AS_IDX_ANY) {
        cr_assert_null(gg_idx_load(path, 0), "%s loaded", rel);
        dt_assert_msg_has("gg_idx_load: ");
    } else {
        const char *im = as == AS_IMAGES ? path : fx("small-images-idx3-ubyte.gz");
        const char *lb = as == AS_LABELS ? path : fx("small-labels-idx1-ubyte.gz");
        cr_assert_null(gg_dataset_load_idx(im, lb, 5), "%s loaded", rel);
        dt_assert_msg_has("gg_dataset_load_idx: ");
    }
    dt_assert_error(status, needle);
    dt_assert_msg_has(path);
    cr_assert_eq(gg_alloc_live_bytes(), live, "%s: %zu bytes leaked", rel, gg_alloc_live_bytes() - live);
}

Test(idx_bad, magic_of_labels_where_images_are_due) {
    expect_bad("bad_magic_labels-as-images.gz", AS_IMAGES, GG_ERR_FORMAT,
               "bad magic number 0x00000801, expected 0x00000803");
}
Test(idx_bad, magic_of_images_where_labels_are_due) {
    expect_bad("small-images-idx3-ubyte.gz", AS_LABELS, GG_ERR_FORMAT,
               "bad magic number 0x00000803, expected 0x00000801");
}
Test(idx_bad, magic_with_nonzero_leading_bytes) {
    expect_bad("bad_magic_nonzero.gz", AS_IMAGES, GG_ERR_FORMAT, "bad magic number 0x12340803");
    expect_bad("bad_magic_nonzero.gz", AS_IDX_ANY, GG_ERR_FORMAT, "bad magic number 0x12340803");
}
Test(idx_bad, element_type_not_unsigned_byte) {
    expect_bad("bad_type_float.gz", AS_IDX_ANY, GG_ERR_FORMAT, "unsupported IDX element type 0x0d");
    expect_bad("bad_type_float.gz", AS_IMAGES, GG_ERR_FORMAT, "bad magic number 0x00000d03");
}
Test(idx_bad, empty_file) {
    expect_bad("bad_empty", AS_IMAGES, GG_ERR_FORMAT, "truncated header: the file holds 0 bytes");
}
Test(idx_bad, truncated_magic) {
    expect_bad("bad_trunc_magic.gz", AS_LABELS, GG_ERR_FORMAT, "truncated header: the file holds 3 bytes");
}
Test(idx_bad, truncated_header) {
    expect_bad("bad_trunc_header.gz", AS_IMAGES, GG_ERR_FORMAT,
               "truncated header: the file holds 10 bytes, a rank-3 IDX header needs 16");
}
Test(idx_bad, truncated_data) {
    const char *want = "truncated: header says 5 images of 4x3, file holds 50 bytes of pixel data";
    expect_bad("bad_trunc_data.gz", AS_IMAGES, GG_ERR_FORMAT, want);
    expect_bad("bad_trunc_data_raw", AS_IMAGES, GG_ERR_FORMAT, want);
    expect_bad("bad_trunc_data.gz", AS_IDX_ANY, GG_ERR_FORMAT,
               "header says dims 5x4x3 (60 bytes), file holds 50");
}
Test(idx_bad, truncated_labels) { expect_bad("bad_trunc_data.gz", AS_LABELS, GG_ERR_FORMAT, "bad magic"); }
Test(idx_bad, data_past_the_header) {
    expect_bad("bad_extra_data.gz", AS_IMAGES, GG_ERR_FORMAT, "more bytes than its header describes");
}
Test(idx_bad, label_count_differs_from_image_count) {
    expect_bad("bad_labels_4.gz", AS_LABELS, GG_ERR_FORMAT, "holds 4 labels but ");
    dt_assert_msg_has("holds 5 images");
    dt_assert_msg_has("small-images-idx3-ubyte.gz");
}
Test(idx_bad, label_out_of_range) {
    expect_bad("bad_labels_range.gz", AS_LABELS, GG_ERR_FORMAT, "label 10 at index 2 is out of range 0..4");
}
Test(idx_bad, neither_gzip_nor_idx) {
    expect_bad("bad_garbage.gz", AS_IMAGES, GG_ERR_FORMAT, "bad magic number 0x54686973");
    expect_bad("bad_garbage.gz", AS_IDX_ANY, GG_ERR_FORMAT, "bad magic number 0x54686973");
}
Test(idx_bad, corrupt_deflate_data) {
    expect_bad("bad_gzip_corrupt.gz", AS_IMAGES, GG_ERR_FORMAT, "corrupt gzip data");
}
Test(idx_bad, gzip_stream_cut_short) {
    expect_bad("bad_gzip_cut.gz", AS_IMAGES, GG_ERR_FORMAT, "the gzip stream ends early");
}
Test(idx_bad, gzip_trailer_missing) {
    expect_bad("bad_gzip_no_trailer.gz", AS_IMAGES, GG_ERR_FORMAT, "trailer");
}
Test(idx_bad, gzip_crc_mismatch) {
    expect_bad("bad_gzip_crc.gz", AS_IMAGES, GG_ERR_FORMAT, "incorrect data check");
}
Test(idx_bad, dims_overflow) {
    expect_bad("bad_huge_dims.gz", AS_IDX_ANY, GG_ERR_FORMAT, "describe more than 2^40 bytes");
}
Test(idx_bad, huge_claim_on_a_small_file_allocates_little) {
    gg_alloc_reset_peak();
    size_t live = gg_alloc_live_bytes();
    expect_bad("bad_claims_big.gz", AS_IMAGES, GG_ERR_FORMAT,
               "truncated: header says 1000000 images of 28x28, file holds 3 bytes of pixel data");
    cr_assert_lt(gg_alloc_peak_bytes() - live, (size_t)100 << 20, "peak %zu bytes",
                 gg_alloc_peak_bytes() - live);
}
Test(idx_bad, missing_file_and_directory) {
    expect_bad("no-such-file.gz", AS_IMAGES, GG_ERR_IO, "No such file");
    expect_bad("no-such-file.gz", AS_IDX_ANY, GG_ERR_IO, "No such file");
    expect_bad("fmnist", AS_LABELS, GG_ERR_IO, "is a directory");
}
Test(idx_bad, arguments) {
    size_t live = gg_alloc_live_bytes();
    cr_assert_null(gg_idx_load(NULL, 0));
    dt_assert_error(GG_ERR_ARG, "path is NULL");
    cr_assert_null(gg_idx_load(fx("small-images-idx3-ubyte"), 9));
    dt_assert_error(GG_ERR_ARG, "rank 9");
    cr_assert_null(gg_dataset_load_idx(fx("small-images-idx3-ubyte"), fx("small-labels-idx1-ubyte"), 0));
    dt_assert_error(GG_ERR_ARG, "n_classes 0");
    cr_assert_null(gg_dataset_load_idx(fx("small-images-idx3-ubyte"), NULL, 5));
    dt_assert_error(GG_ERR_ARG, "gg_dataset_load_idx: path is NULL");
    cr_assert_eq(gg_alloc_live_bytes(), live);
}

Test(fashion_bad, package_missing_says_what_to_install) {
    size_t live = gg_alloc_live_bytes();
    const char *dir = fx("no-such-dir");
    cr_assert_null(gg_fashion_mnist_load(dir, true));
    dt_assert_error(GG_ERR_IO, "gg_fashion_mnist_load: ");
    dt_assert_msg_has("no-such-dir/train-images-idx3-ubyte.gz: no such file");
    dt_assert_msg_has("apt-get install dataset-fashion-mnist");
    /* a directory with the training files only: the t10k ones are missing */
    cr_assert_null(gg_fashion_mnist_load(fx("fmnist_trunc"), false));
    dt_assert_msg_has("fmnist_trunc/t10k-images-idx3-ubyte.gz: no such file");
    dt_assert_msg_has("dataset-fashion-mnist");
    cr_assert_eq(gg_alloc_live_bytes(), live);
}

Test(fashion_bad, truncated_images_named) {
    size_t live = gg_alloc_live_bytes();
    cr_assert_null(gg_fashion_mnist_load(fx("fmnist_trunc"), true));
    dt_assert_error(GG_ERR_FORMAT, "gg_fashion_mnist_load: ");
    dt_assert_msg_has(
        "fmnist_trunc/train-images-idx3-ubyte.gz: truncated: header says 5 images of 28x28, file "
        "holds 1234 bytes of pixel data");
    cr_assert_eq(gg_alloc_live_bytes(), live);
}

Test(fashion_bad, images_not_28x28) {
    size_t live = gg_alloc_live_bytes();
    cr_assert_null(gg_fashion_mnist_load(fx("fmnist_27x28"), true));
    dt_assert_error(GG_ERR_FORMAT, "train-images-idx3-ubyte.gz: images are 27x28, expected 28x28");
    cr_assert_eq(gg_alloc_live_bytes(), live);
}

/* ---- the real data set (skipped without the package) ---- */

static void check_real(bool train) {
    struct stat sb;
    if (stat(GG_FASHION_MNIST_DIR, &sb) != 0)
        cr_skip_test("%s absent: install dataset-fashion-mnist to run this test", GG_FASHION_MNIST_DIR);
    size_t live = gg_alloc_live_bytes();
    gg_dataset *ds = gg_fashion_mnist_load(NULL, train);
    cr_assert_not_null(ds, "%s", gg_last_error());
    int64_t n = train ? 60000 : 10000;
    cr_assert(ds->n == n && ds->channels == 1 && ds->height == 28 && ds->width == 28, "n %lld",
              (long long)ds->n);
    int64_t hist[10] = {0};
    for (int64_t i = 0; i < ds->n; i++) hist[ds->labels[i]]++;
    for (int c = 0; c < 10; c++)
        cr_assert_eq(hist[c], n / 10, "class %d: %lld samples", c, (long long)hist[c]);
    cr_assert_eq(ds->labels[0], 9, "the first sample of both splits is an ankle boot (9)");
    /* a loader over the real set: every label of an epoch once per sample */
    gg_loader_options o = gg_loader_default_options();
    o.crop_padding = 4;
    o.hflip = true;
    gg_loader *ld = gg_loader_new(ds, &o);
    cr_assert_not_null(ld, "%s", gg_last_error());
    int64_t seen[10] = {0}, total = 0;
    gg_batch b;
    while (gg_loader_next(ld, &b) > 0) {
        for (int64_t j = 0; j < b.n; j++) seen[b.labels[j]]++;
        total += b.n;
    }
    cr_assert_eq(total, n);
    for (int c = 0; c < 10; c++) cr_assert_eq(seen[c], n / 10);
    gg_loader_free(ld);
    gg_dataset_free(ds);
    cr_assert_eq(gg_alloc_live_bytes(), live);
}

Test(fashion_real, training_set) { check_real(true); }
Test(fashion_real, test_set) { check_real(false); }

/* ---- loader ---- */

/* n samples of [C,H,W] with pixel (i, k) = (7 i + 3 k) % 256 and label i % n_classes. */
static gg_dataset *synth(int64_t n, int64_t c, int64_t h, int64_t w, int n_classes) {
    int64_t s = c * h * w;
    uint8_t *im = malloc((size_t)(n * s)), *lb = malloc((size_t)n);
    for (int64_t i = 0; i < n; i++) {
        lb[i] = (uint8_t)(i % n_classes);
        for (int64_t k = 0; k < s; k++) im[i * s + k] = (uint8_t)((7 * i + 3 * k) % 256);
    }
    gg_dataset *ds = gg_dataset_from_buffers(n, c, h, w, im, lb, n_classes);
    free(im);
    free(lb);
    cr_assert_not_null(ds, "%s", gg_last_error());
    return ds;
}

static gg_loader *make_loader(const gg_dataset *ds, const gg_loader_options *o) {
    gg_loader *l = gg_loader_new(ds, o);
    cr_assert_not_null(l, "gg_loader_new: %s", gg_last_error());
    return l;
}

static float norm(uint8_t v, float mean, float std) { return ((float)v / 255.0f - mean) / std; }

Test(loader, defaults) {
    gg_loader_options o = gg_loader_default_options();
    cr_assert_eq(o.batch_size, 128);
    cr_assert(o.shuffle && !o.drop_last && o.prefetch && !o.hflip && o.crop_padding == 0 && o.subset == 0);
    cr_assert_float_eq(o.mean, 0.2860f, 1e-7);
    cr_assert_float_eq(o.std, 0.3530f, 1e-7);
    cr_assert_eq(o.pad_mode, GG_PAD_BACKGROUND);
}

static void check_batching(bool prefetch) {
    size_t live = gg_alloc_live_bytes();
    gg_dataset *ds = synth(10, 1, 4, 3, 3);
    for (int drop = 0; drop <= 1; drop++) {
        gg_loader_options o = gg_loader_default_options();
        o.batch_size = 4;
        o.shuffle = false;
        o.drop_last = drop;
        o.prefetch = prefetch;
        gg_loader *l = make_loader(ds, &o);
        cr_assert_eq(gg_loader_num_samples(l), 10);
        cr_assert_eq(gg_loader_num_batches(l), drop ? 2 : 3);
        for (int epoch = 0; epoch < 3; epoch++) {
            const int64_t sizes[3] = {4, 4, 2};
            gg_batch b;
            for (int k = 0; k < (drop ? 2 : 3); k++) {
                cr_assert_eq(gg_loader_next(l, &b), 1, "epoch %d batch %d: %s", epoch, k, gg_last_error());
                cr_assert(b.n == sizes[k] && b.epoch == epoch && b.index == k, "n %lld epoch %lld index %lld",
                          (long long)b.n, (long long)b.epoch, (long long)b.index);
                cr_assert(b.x->ndim == 4 && b.x->shape[0] == b.n && b.x->shape[1] == 1 &&
                          b.x->shape[2] == 4 && b.x->shape[3] == 3 && gg_tensor_is_contiguous(b.x));
                const float *x = gg_tensor_data(b.x);
                for (int64_t j = 0; j < b.n; j++) {
                    int64_t i = 4 * k + j;
                    cr_assert_eq(b.indices[j], i);
                    cr_assert_eq(b.labels[j], (int32_t)(i % 3));
                    for (int p = 0; p < 12; p++)
                        cr_assert_eq(x[j * 12 + p], norm(ds->images[i * 12 + p], o.mean, o.std));
                }
            }
            cr_assert_eq(gg_loader_next(l, &b), 0, "epoch %d should be over", epoch);
            gg_loader_state st;
            cr_assert_eq(gg_loader_get_state(l, &st), GG_OK);
            cr_assert(st.epoch == epoch + 1 && st.position == 0);
        }
        gg_loader_free(l);
    }
    gg_dataset_free(ds);
    cr_assert_eq(gg_alloc_live_bytes(), live);
}

Test(loader, batches_in_order_keep_or_drop_last) { check_batching(false); }
Test(loader, batches_in_order_prefetched) { check_batching(true); }

Test(loader, batch_bigger_than_the_epoch) {
    gg_dataset *ds = synth(3, 1, 2, 2, 2);
    gg_loader_options o = gg_loader_default_options();
    o.batch_size = 8;
    gg_loader *l = make_loader(ds, &o);
    gg_batch b;
    cr_assert_eq(gg_loader_next(l, &b), 1);
    cr_assert(b.n == 3 && b.x->shape[0] == 3);
    cr_assert_eq(gg_loader_next(l, &b), 0);
    gg_loader_free(l);
    gg_dataset_free(ds);
}

static bool is_permutation(const int64_t *a, int64_t n) {
    char *seen = calloc((size_t)n, 1);
    bool ok = true;
    for (int64_t i = 0; i < n && ok; i++) {
        ok = a[i] >= 0 && a[i] < n && !seen[a[i]];
        if (ok) seen[a[i]] = 1;
    }
    free(seen);
    return ok;
}

Test(loader, shuffle_is_a_reproducible_permutation_per_epoch) {
    const int64_t n = 1000;
    gg_dataset *ds = synth(n, 1, 1, 1, 10);
    gg_loader_options o = gg_loader_default_options();
    o.batch_size = 64;
    o.seed = 1234;
    gg_loader *a = make_loader(ds, &o), *b = make_loader(ds, &o);
    o.seed = 1235;
    gg_loader *c = make_loader(ds, &o);
    int64_t *e0 = malloc(n * sizeof *e0), *e0b = malloc(n * sizeof *e0), *e1 = malloc(n * sizeof *e0),
            *f0 = malloc(n * sizeof *e0), *walk = malloc(n * sizeof *e0);
    cr_assert_eq(gg_loader_epoch_order(a, 0, e0), GG_OK);
    cr_assert_eq(gg_loader_epoch_order(b, 0, e0b), GG_OK);
    cr_assert_eq(gg_loader_epoch_order(a, 1, e1), GG_OK);
    cr_assert_eq(gg_loader_epoch_order(c, 0, f0), GG_OK);
    cr_assert(is_permutation(e0, n) && is_permutation(e1, n) && is_permutation(f0, n));
    cr_assert(memcmp(e0, e0b, n * sizeof *e0) == 0, "same (seed, epoch), different order");
    int64_t same01 = 0, same_seed = 0, fixed = 0;
    for (int64_t i = 0; i < n; i++) {
        same01 += e0[i] == e1[i];
        same_seed += e0[i] == f0[i];
        fixed += e0[i] == i;
    }
    /* a random permutation agrees with another in about one place */
    cr_assert_lt(same01, 10, "epochs 0 and 1 agree in %lld places", (long long)same01);
    cr_assert_lt(same_seed, 10, "seeds 1234 and 1235 agree in %lld places", (long long)same_seed);
    cr_assert_lt(fixed, 10, "epoch 0 leaves %lld samples in place", (long long)fixed);
    /* the loader walks exactly that order, epoch after epoch */
    for (int epoch = 0; epoch < 2; epoch++) {
        int64_t k = 0;
        gg_batch bt;
        while (gg_loader_next(a, &bt) > 0) {
            cr_assert_eq(bt.epoch, epoch);
            for (int64_t j = 0; j < bt.n; j++) {
                walk[k] = bt.indices[j];
                cr_assert_eq(bt.labels[j], (int32_t)(bt.indices[j] % 10));
                k++;
            }
        }
        cr_assert_eq(k, n);
        cr_assert(memcmp(walk, epoch ? e1 : e0, n * sizeof *walk) == 0, "epoch %d", epoch);
    }
    /* shuffle off: dataset order */
    o.shuffle = false;
    gg_loader *d = make_loader(ds, &o);
    cr_assert_eq(gg_loader_epoch_order(d, 5, walk), GG_OK);
    for (int64_t i = 0; i < n; i++) cr_assert_eq(walk[i], i);
    free(e0), free(e0b), free(e1), free(f0), free(walk);
    gg_loader_free(a), gg_loader_free(b), gg_loader_free(c), gg_loader_free(d);
    gg_dataset_free(ds);
}

/* A recorded batch: everything the trainer sees. */
typedef struct rec {
    int64_t n, epoch, index;
    int64_t idx[16];
    int32_t lab[16];
    float x[16 * 2 * 5 * 6];
} rec;

static void record(gg_loader *l, rec *r, int count) {
    for (int k = 0; k < count;) {
        gg_batch b;
        int st = gg_loader_next(l, &b);
        cr_assert_geq(st, 0, "%s", gg_last_error());
        if (st == 0) continue;
        cr_assert_leq(b.n, 16);
        memset(&r[k], 0, sizeof r[k]);
        r[k].n = b.n, r[k].epoch = b.epoch, r[k].index = b.index;
        memcpy(r[k].idx, b.indices, (size_t)b.n * sizeof *b.indices);
        memcpy(r[k].lab, b.labels, (size_t)b.n * sizeof *b.labels);
        memcpy(r[k].x, gg_tensor_data(b.x), (size_t)b.x->numel * sizeof(float));
        k++;
    }
}

static void assert_same_recs(const rec *a, const rec *b, int count) {
    for (int k = 0; k < count; k++)
        cr_assert(memcmp(&a[k], &b[k], sizeof a[k]) == 0,
                  "batch %d differs (epoch %lld/%lld, index %lld/%lld)", k, (long long)a[k].epoch,
                  (long long)b[k].epoch, (long long)a[k].index, (long long)b[k].index);
}

static gg_loader_options aug_options(bool prefetch) {
    gg_loader_options o = gg_loader_default_options();
    o.batch_size = 16;
    o.seed = 77;
    o.crop_padding = 2;
    o.hflip = true;
    o.prefetch = prefetch;
    return o;
}

static void check_resume(bool prefetch_a, bool prefetch_b) {
    size_t live = gg_alloc_live_bytes();
    gg_dataset *ds = synth(100, 2, 5, 6, 7); /* 7 batches per epoch, the last of 4 */
    gg_loader_options o = aug_options(prefetch_a);
    gg_loader *a = make_loader(ds, &o);
    enum { SKIP = 10, RUN = 12 };
    rec *first = malloc(SKIP * sizeof *first), *ra = malloc(RUN * sizeof *ra), *rb = malloc(RUN * sizeof *rb);
    record(a, first, SKIP); /* into epoch 1 */
    gg_loader_state st;
    cr_assert_eq(gg_loader_get_state(a, &st), GG_OK);
    cr_assert(st.seed == 77 && st.epoch == 1 && st.position == 48, "state %llu %lld %lld",
              (unsigned long long)st.seed, (long long)st.epoch, (long long)st.position);
    record(a, ra, RUN); /* crosses into epoch 3 */
    /* a fresh loader made with another seed, resumed from the saved state */
    o = aug_options(prefetch_b);
    o.seed = 5;
    gg_loader *b = make_loader(ds, &o);
    record(b, rb, 3);
    cr_assert_eq(gg_loader_set_state(b, &st), GG_OK);
    record(b, rb, RUN);
    assert_same_recs(ra, rb, RUN);
    /* and the first loader rewound to the start gives its first batches again */
    cr_assert_eq(gg_loader_set_state(a, &(gg_loader_state){77, 0, 0}), GG_OK);
    record(a, rb, SKIP);
    assert_same_recs(first, rb, SKIP);
    free(first), free(ra), free(rb);
    gg_loader_free(a);
    gg_loader_free(b);
    gg_dataset_free(ds);
    cr_assert_eq(gg_alloc_live_bytes(), live);
}

Test(loader, state_restore_resumes_identically) { check_resume(false, false); }
Test(loader, state_restore_resumes_identically_prefetched) { check_resume(true, true); }
Test(loader, prefetch_changes_nothing) { check_resume(true, false); }

Test(loader, set_state_rejects_bad_states) {
    gg_dataset *ds = synth(10, 1, 2, 2, 2);
    gg_loader_options o = gg_loader_default_options();
    o.batch_size = 4;
    gg_loader *l = make_loader(ds, &o);
    cr_assert_eq(gg_loader_set_state(l, &(gg_loader_state){0, -1, 0}), GG_ERR_ARG);
    dt_assert_msg_has("epoch -1");
    cr_assert_eq(gg_loader_set_state(l, &(gg_loader_state){0, 0, 3}), GG_ERR_ARG);
    dt_assert_msg_has("position 3 is not a batch boundary in 0..10 (batch_size 4)");
    cr_assert_eq(gg_loader_set_state(l, &(gg_loader_state){0, 0, 12}), GG_ERR_ARG);
    cr_assert_eq(gg_loader_set_state(l, NULL), GG_ERR_ARG);
    /* the end of an epoch is a valid state: the next call reports it */
    cr_assert_eq(gg_loader_set_state(l, &(gg_loader_state){0, 4, 10}), GG_OK);
    gg_batch b;
    cr_assert_eq(gg_loader_next(l, &b), 0);
    cr_assert_eq(gg_loader_next(l, &b), 1);
    cr_assert(b.epoch == 5 && b.index == 0);
    cr_assert_eq(gg_loader_next(NULL, &b), GG_ERR_ARG);
    gg_loader_free(l);
    gg_dataset_free(ds);
}

/* Augmentation of one sample does not depend on the batch size or prefetching: compare sample by sample. */
Test(loader, augmentation_independent_of_batch_boundaries) {
    gg_dataset *ds = synth(50, 2, 5, 6, 5);
    const int64_t S = 2 * 5 * 6;
    float *ref = malloc((size_t)(50 * S) * sizeof *ref);
    for (int epoch = 0; epoch < 2; epoch++) {
        const int64_t sizes[3] = {1, 7, 50};
        for (int v = 0; v < 3; v++) {
            gg_loader_options o = aug_options(v == 1);
            o.batch_size = sizes[v];
            gg_loader *l = make_loader(ds, &o);
            cr_assert_eq(gg_loader_set_state(l, &(gg_loader_state){77, epoch, 0}), GG_OK);
            gg_batch b;
            while (gg_loader_next(l, &b) > 0) {
                const float *x = gg_tensor_data(b.x);
                for (int64_t j = 0; j < b.n; j++) {
                    float *r = ref + b.indices[j] * S;
                    if (v == 0) memcpy(r, x + j * S, S * sizeof *r);
                    else
                        cr_assert(memcmp(r, x + j * S, S * sizeof *r) == 0, "sample %lld, batch size %lld",
                                  (long long)b.indices[j], (long long)o.batch_size);
                }
            }
            gg_loader_free(l);
        }
    }
    free(ref);
    gg_dataset_free(ds);
}

/* Reference: the window of the padded image at (cy, cx), mirrored if `flip`, normalised. */
static float expect_px(const uint8_t *img, int64_t c, int64_t h, int64_t w, int pad, const gg_augment *a,
                       int64_t y, int64_t x, float mean, float std, float bg) {
    int64_t xs = a->flip ? w - 1 - x : x;
    int64_t py = y + a->crop_y - pad, px = xs + a->crop_x - pad;
    if (py < 0 || py >= h || px < 0 || px >= w) return bg;
    return norm(img[(c * h + py) * w + px], mean, std);
}

Test(loader, crop_and_flip_follow_the_drawn_parameters) {
    const int64_t C = 2, H = 5, W = 6;
    uint8_t img[2 * 5 * 6], lb[1] = {0};
    for (int k = 0; k < C * H * W; k++) img[k] = (uint8_t)(10 + 3 * k);
    gg_dataset *ds = gg_dataset_from_buffers(1, C, H, W, img, lb, 1);
    cr_assert_not_null(ds);
    for (int mode = 0; mode < 2; mode++) {
        gg_loader_options o = gg_loader_default_options();
        o.batch_size = 1;
        o.mean = 0.5f;
        o.std = 0.25f;
        o.crop_padding = 2;
        o.hflip = true;
        o.pad_mode = mode ? GG_PAD_ZERO : GG_PAD_BACKGROUND;
        o.seed = 9;
        float bg = mode ? 0.0f : -2.0f;
        gg_loader *l = make_loader(ds, &o);
        int flips = 0, ymin = 99, ymax = -1, xmin = 99, xmax = -1;
        for (int epoch = 0; epoch < 64; epoch++) {
            gg_batch b;
            cr_assert_eq(gg_loader_next(l, &b), 1);
            gg_augment a;
            cr_assert_eq(gg_loader_augment_of(l, epoch, 0, &a), GG_OK);
            cr_assert(a.crop_y >= 0 && a.crop_y <= 4 && a.crop_x >= 0 && a.crop_x <= 4);
            flips += a.flip;
            ymin = a.crop_y < ymin ? a.crop_y : ymin, ymax = a.crop_y > ymax ? a.crop_y : ymax;
            xmin = a.crop_x < xmin ? a.crop_x : xmin, xmax = a.crop_x > xmax ? a.crop_x : xmax;
            const float *x = gg_tensor_data(b.x);
            for (int64_t c = 0; c < C; c++)
                for (int64_t y = 0; y < H; y++)
                    for (int64_t xx = 0; xx < W; xx++) {
                        float want = expect_px(img, c, H, W, 2, &a, y, xx, o.mean, o.std, bg);
                        cr_assert_eq(x[(c * H + y) * W + xx], want,
                                     "epoch %d (crop %d,%d flip %d) at %lld,%lld,%lld", epoch, a.crop_y,
                                     a.crop_x, a.flip, (long long)c, (long long)y, (long long)xx);
                    }
            cr_assert_eq(gg_loader_next(l, &b), 0);
        }
        /* 64 draws: both flips and every extreme offset show up */
        cr_assert(flips > 16 && flips < 48, "%d flips in 64", flips);
        cr_assert(ymin == 0 && ymax == 4 && xmin == 0 && xmax == 4, "offsets y %d..%d x %d..%d", ymin, ymax,
                  xmin, xmax);
        gg_loader_free(l);
    }
    gg_dataset_free(ds);
}

/* Hand-checked outputs: find epochs with a given draw and compare with literals. */
Test(loader, flip_and_crop_by_hand) {
    const uint8_t img[6] = {0, 51, 102, 153, 204, 255}, lb[1] = {0}; /* [[0 .2 .4] [.6 .8 1]] after /255 */
    gg_dataset *ds = gg_dataset_from_buffers(1, 1, 2, 3, img, lb, 1);
    gg_loader_options o = gg_loader_default_options();
    o.batch_size = 1;
    o.mean = 0.0f;
    o.std = 1.0f;
    o.hflip = true;
    gg_loader *l = make_loader(ds, &o);
    bool saw[2] = {false, false};
    for (int epoch = 0; epoch < 40; epoch++) {
        gg_batch b;
        gg_augment a;
        cr_assert_eq(gg_loader_next(l, &b), 1);
        gg_loader_augment_of(l, epoch, 0, &a);
        cr_assert(a.crop_y == 0 && a.crop_x == 0);
        const float plain[6] = {0.0f, 0.2f, 0.4f, 0.6f, 0.8f, 1.0f},
                    mirrored[6] = {0.4f, 0.2f, 0.0f, 1.0f, 0.8f, 0.6f};
        const float *want = a.flip ? mirrored : plain;
        for (int k = 0; k < 6; k++)
            cr_assert_float_eq(gg_tensor_data(b.x)[k], want[k], 1e-7, "flip %d at %d", a.flip, k);
        saw[a.flip] = true;
        gg_loader_next(l, &b);
    }
    cr_assert(saw[0] && saw[1]);
    gg_loader_free(l);

    /* crop only, padding 1, zeros: window (0,0) shifts the image down-right, (2,2) up-left */
    o.hflip = false;
    o.crop_padding = 1;
    o.pad_mode = GG_PAD_ZERO;
    o.mean = 0.5f; /* so that a zero pad differs from pixel 0 (-0.5) */
    l = make_loader(ds, &o);
    bool saw00 = false, saw22 = false;
    for (int epoch = 0; epoch < 200 && !(saw00 && saw22); epoch++) {
        gg_batch b;
        gg_augment a;
        cr_assert_eq(gg_loader_next(l, &b), 1);
        gg_loader_augment_of(l, epoch, 0, &a);
        const float *x = gg_tensor_data(b.x);
        if (a.crop_y == 0 && a.crop_x == 0) {
            const float want[6] = {0, 0, 0, 0, -0.5f, -0.3f};
            for (int k = 0; k < 6; k++)
                cr_assert_float_eq(x[k], want[k], 1e-6, "(0,0) at %d: %g", k, (double)x[k]);
            saw00 = true;
        }
        if (a.crop_y == 2 && a.crop_x == 2) {
            const float want[6] = {0.3f, 0.5f, 0, 0, 0, 0};
            for (int k = 0; k < 6; k++)
                cr_assert_float_eq(x[k], want[k], 1e-6, "(2,2) at %d: %g", k, (double)x[k]);
            saw22 = true;
        }
        if (a.crop_y == 1 && a.crop_x == 1)
            for (int k = 0; k < 6; k++) cr_assert_float_eq(x[k], img[k] / 255.0f - 0.5f, 1e-6);
        gg_loader_next(l, &b);
    }
    cr_assert(saw00 && saw22, "offsets (0,0) and (2,2) never drawn in 200 epochs");
    gg_loader_free(l);
    gg_dataset_free(ds);
}

Test(loader, augmentation_is_seeded) {
    gg_dataset *ds = synth(200, 1, 4, 4, 2);
    gg_loader_options o = aug_options(false);
    gg_loader *a = make_loader(ds, &o), *b = make_loader(ds, &o);
    o.seed = 78;
    gg_loader *c = make_loader(ds, &o);
    int differ_seed = 0, differ_epoch = 0;
    for (int64_t i = 0; i < 200; i++) {
        gg_augment x, y, z, w;
        gg_loader_augment_of(a, 3, i, &x);
        gg_loader_augment_of(b, 3, i, &y);
        gg_loader_augment_of(c, 3, i, &z);
        gg_loader_augment_of(a, 4, i, &w);
        cr_assert(x.crop_y == y.crop_y && x.crop_x == y.crop_x && x.flip == y.flip);
        differ_seed += x.crop_y != z.crop_y || x.crop_x != z.crop_x || x.flip != z.flip;
        differ_epoch += x.crop_y != w.crop_y || x.crop_x != w.crop_x || x.flip != w.flip;
    }
    /* two independent draws agree with probability 1/50 */
    cr_assert_gt(differ_seed, 150);
    cr_assert_gt(differ_epoch, 150);
    gg_augment t;
    cr_assert_eq(gg_loader_augment_of(a, 0, 200, &t), GG_ERR_INDEX);
    dt_assert_msg_has("index 200");
    gg_loader_free(a), gg_loader_free(b), gg_loader_free(c);
    gg_dataset_free(ds);
}

Test(loader, normalisation_values) {
    const uint8_t img[4] = {0, 51, 128, 255}, lb[1] = {3};
    gg_dataset *ds = gg_dataset_from_buffers(1, 1, 1, 4, img, lb, 10);
    gg_loader_options o = gg_loader_default_options();
    gg_loader *l = make_loader(ds, &o);
    gg_batch b;
    cr_assert_eq(gg_loader_next(l, &b), 1);
    cr_assert_eq(b.labels[0], 3);
    for (int k = 0; k < 4; k++) {
        double want = (img[k] / 255.0 - 0.2860) / 0.3530;
        cr_assert_float_eq(gg_tensor_data(b.x)[k], want, 2e-6, "pixel %d: %g vs %g", img[k],
                           (double)gg_tensor_data(b.x)[k], want);
    }
    gg_loader_free(l);
    o.mean = 0.5f;
    o.std = 0.5f;
    l = make_loader(ds, &o);
    cr_assert_eq(gg_loader_next(l, &b), 1);
    const float want[4] = {-1.0f, -0.6f, 128 / 127.5f - 1.0f, 1.0f};
    for (int k = 0; k < 4; k++) cr_assert_float_eq(gg_tensor_data(b.x)[k], want[k], 1e-6);
    gg_loader_free(l);
    gg_dataset_free(ds);
}

Test(loader, subset_first_or_fixed_shuffle) {
    gg_dataset *ds = synth(1000, 1, 1, 1, 10);
    gg_loader_options o = gg_loader_default_options();
    o.subset = 10;
    o.batch_size = 3;
    gg_loader *l = make_loader(ds, &o);
    cr_assert_eq(gg_loader_num_samples(l), 10);
    cr_assert_eq(gg_loader_num_batches(l), 4);
    int64_t ord[10], ord2[10];
    gg_loader_epoch_order(l, 0, ord);
    int64_t sum = 0;
    for (int i = 0; i < 10; i++) sum += ord[i] < 10 ? 1 : 0;
    cr_assert_eq(sum, 10, "first 10 samples only");
    gg_loader_free(l);
    /* a fixed shuffle picks the same 10 whatever the loader seed, not simply the first 10 */
    o.subset_shuffle = true;
    o.subset_seed = 3;
    o.shuffle = false;
    l = make_loader(ds, &o);
    o.seed = 999;
    gg_loader *m = make_loader(ds, &o);
    gg_loader_epoch_order(l, 0, ord);
    gg_loader_epoch_order(m, 2, ord2);
    cr_assert(memcmp(ord, ord2, sizeof ord) == 0);
    int big = 0;
    for (int i = 0; i < 10; i++) big += ord[i] >= 10;
    cr_assert_gt(big, 5);
    gg_batch b;
    int64_t k = 0;
    while (gg_loader_next(l, &b) > 0)
        for (int64_t j = 0; j < b.n; j++) cr_assert_eq(b.indices[j], ord[k++]);
    cr_assert_eq(k, 10);
    gg_loader_free(l), gg_loader_free(m);
    gg_dataset_free(ds);
}

Test(loader, option_errors_leak_nothing) {
    gg_dataset *ds = synth(5, 1, 2, 2, 2);
    size_t live = gg_alloc_live_bytes();
    gg_loader_options o = gg_loader_default_options();
    cr_assert_null(gg_loader_new(NULL, &o));
    dt_assert_error(GG_ERR_ARG, "gg_loader_new: dataset is NULL");
    o.batch_size = 0;
    cr_assert_null(gg_loader_new(ds, &o));
    dt_assert_error(GG_ERR_ARG, "batch_size 0");
    o = gg_loader_default_options();
    o.std = 0;
    cr_assert_null(gg_loader_new(ds, &o));
    dt_assert_error(GG_ERR_ARG, "std > 0");
    o = gg_loader_default_options();
    o.mean = NAN;
    cr_assert_null(gg_loader_new(ds, &o));
    dt_assert_error(GG_ERR_ARG, "finite mean");
    o = gg_loader_default_options();
    o.subset = 6;
    cr_assert_null(gg_loader_new(ds, &o));
    dt_assert_error(GG_ERR_ARG, "subset 6 is outside 0..5");
    o = gg_loader_default_options();
    o.drop_last = true;
    o.batch_size = 8;
    cr_assert_null(gg_loader_new(ds, &o));
    dt_assert_error(GG_ERR_ARG, "drop_last with 5 samples and batch_size 8 leaves no batch");
    o = gg_loader_default_options();
    o.crop_padding = -1;
    cr_assert_null(gg_loader_new(ds, &o));
    dt_assert_error(GG_ERR_ARG, "crop_padding -1");
    o = gg_loader_default_options();
    o.pad_mode = GG_PAD_COUNT;
    cr_assert_null(gg_loader_new(ds, &o));
    dt_assert_error(GG_ERR_ARG, "pad_mode");
    cr_assert_eq(gg_alloc_live_bytes(), live);
    gg_loader_free(NULL);
    gg_dataset_free(ds);
}

/* Freeing a loader while its thread prepares a batch, or before any batch, joins cleanly. */
Test(loader, free_with_a_batch_in_flight) {
    gg_dataset *ds = synth(300, 1, 28, 28, 10);
    size_t live = gg_alloc_live_bytes();
    for (int k = 0; k < 20; k++) {
        gg_loader_options o = aug_options(true);
        o.batch_size = 128;
        gg_loader *l = make_loader(ds, &o);
        gg_batch b;
        for (int j = 0; j < k % 4; j++) cr_assert_geq(gg_loader_next(l, &b), 0);
        gg_loader_free(l);
    }
    cr_assert_eq(gg_alloc_live_bytes(), live);
    gg_dataset_free(ds);
}

/* The batch tensor's version moves when the buffer is reused, so a tape that saved it notices. */
Test(loader, batch_buffer_version_bumps) {
    gg_dataset *ds = synth(8, 1, 2, 2, 2);
    gg_loader_options o = gg_loader_default_options();
    o.batch_size = 2;
    o.prefetch = false;
    gg_loader *l = make_loader(ds, &o);
    gg_batch b;
    cr_assert_eq(gg_loader_next(l, &b), 1);
    gg_tensor *x = b.x;
    uint64_t v = x->storage->version;
    cr_assert_eq(gg_loader_next(l, &b), 1);
    cr_assert_eq(b.x, x);
    cr_assert_gt(x->storage->version, v);
    gg_loader_free(l);
    gg_dataset_free(ds);
}
