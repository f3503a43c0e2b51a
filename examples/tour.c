/* A short tour of groupgrad's tensor core: views and strides, broadcasting, PyTorch-style initialisation,
 * .npy files, errors and the allocator counters. Usage: tour [--threads N] [--seed S]. Exits 1 on any
 * unexpected failure. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "groupgrad.h"

/* Any unexpected failure ends the tour with the library's message. */
#define CHECK(cond)                                                                              \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            fprintf(stderr, "tour: line %d: %s failed: %s\n", __LINE__, #cond, gg_last_error()); \
            return 1;                                                                            \
        }                                                                                        \
    } while (0)

static void show(const char *title, const gg_tensor *t) {
    char shape[96], stride[96];
    gg_shape_str(t->ndim, t->shape, shape, sizeof shape);
    gg_shape_str(t->ndim, t->stride, stride, sizeof stride);
    printf("\n%s: shape %s, strides %s, offset %lld, %scontiguous\n", title, shape, stride,
           (long long)t->offset, gg_tensor_is_contiguous(t) ? "" : "not ");
    gg_tensor_print(t);
}

int main(int argc, char **argv) {
    unsigned long long seed = 42;
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--threads") == 0) {
            CHECK(gg_set_num_threads(atoi(argv[++i])) == GG_OK);
        } else if (i + 1 < argc && strcmp(argv[i], "--seed") == 0) {
            seed = strtoull(argv[++i], NULL, 10);
        } else {
            fprintf(stderr, "usage: %s [--threads N] [--seed S]\n", argv[0]);
            return 2;
        }
    }
    size_t live0 = gg_alloc_live_bytes();
    printf("groupgrad %s, %d thread(s)\n", gg_version(), gg_get_num_threads());

    /* Views share storage: reshaping, transposing and slicing only change shape, strides and offset. */
    gg_tensor *x = gg_tensor_arange(0, 12, 1);
    CHECK(x != NULL);
    gg_tensor *m = gg_tensor_view(x, GG_SHAPE(3, 4));
    CHECK(m != NULL);
    show("arange(0, 12) viewed as [3,4]", m);
    gg_tensor *mt = gg_tensor_transpose(m, 0, 1);
    CHECK(mt != NULL && gg_tensor_data(mt) == gg_tensor_data(m));
    show("its transpose (a view of the same storage)", mt);
    gg_tensor *sl = gg_tensor_slice(m, 1, 1, 4, 2);
    CHECK(sl != NULL);
    show("columns 1:4:2 (slice with step)", sl);

    /* NumPy broadcasting: [3,1] with [1,4] gives [3,4]; expand makes it a stride-0 view. */
    int nd = 0;
    int64_t bshape[GG_MAX_DIMS];
    char buf[96];
    CHECK(gg_broadcast_shapes(GG_SHAPE(3, 1), GG_SHAPE(1, 4), &nd, bshape, NULL) == GG_OK);
    printf("\nbroadcast [3,1] with [1,4] -> %s\n", gg_shape_str(nd, bshape, buf, sizeof buf));
    gg_tensor *col = gg_tensor_from_data(GG_SHAPE(3, 1), (const float[]){10, 20, 30});
    CHECK(col != NULL);
    gg_tensor *ex = gg_tensor_expand(col, nd, bshape);
    CHECK(ex != NULL);
    show("[3,1] column expanded to [3,4]", ex);

    /* nn.Conv2d's default init: kaiming_uniform_(w, a=sqrt(5)), bound = gain * sqrt(3 / fan_in). */
    gg_rng rng;
    gg_rng_init(&rng, seed);
    gg_tensor *w = gg_tensor_empty(GG_SHAPE(64, 32, 3, 3));
    CHECK(w != NULL);
    CHECK(gg_init_kaiming_uniform(w, sqrtf(5.0f), GG_FAN_IN, GG_NL_LEAKY_RELU, &rng) == GG_OK);
    int64_t fan_in = 0, fan_out = 0;
    CHECK(gg_init_fans(w, &fan_in, &fan_out) == GG_OK);
    double gain = gg_init_gain(GG_NL_LEAKY_RELU, sqrtf(5.0f)), bound = gain * sqrt(3.0 / (double)fan_in);
    const float *wd = gg_tensor_data(w);
    double sum = 0, sq = 0, amax = 0;
    for (int64_t i = 0; i < w->numel; i++) {
        sum += wd[i];
        sq += (double)wd[i] * wd[i];
        amax = fmax(amax, fabs(wd[i]));
    }
    double mean = sum / (double)w->numel, std = sqrt(sq / (double)w->numel - mean * mean);
    printf("\nkaiming_uniform [64,32,3,3], seed %llu: fan_in %lld, gain %.4f, bound %.5f\n", seed,
           (long long)fan_in, gain, bound);
    printf("  mean %+.5f, std %.5f (uniform: %.5f), max |w| %.5f\n", mean, std, bound / sqrt(3.0), amax);
    CHECK(amax <= bound && fabs(std - bound / sqrt(3.0)) < 0.05 * bound);

    /* .npy round trip through a private temporary directory. */
    const char *tmp = getenv("TMPDIR");
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/gg-tour.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/w.npy", dir);
    int saved = gg_npy_save(path, w);
    gg_tensor *back = saved == GG_OK ? gg_npy_load(path) : NULL;
    remove(path);
    rmdir(dir);
    CHECK(saved == GG_OK && back != NULL && gg_tensor_same_shape(back, w));
    CHECK(memcmp(gg_tensor_data(back), wd, (size_t)w->numel * sizeof(float)) == 0);
    printf("\n.npy round trip of the [64,32,3,3] weight: identical\n");

    /* Errors are values: a failed call returns NULL and leaves a message naming the function and shapes. */
    gg_tensor *y = gg_tensor_zeros(GG_SHAPE(3, 7));
    CHECK(y != NULL);
    gg_tensor *bad = gg_tensor_view(y, GG_SHAPE(4, 5));
    CHECK(bad == NULL && gg_last_status() == GG_ERR_SHAPE);
    printf("\nviewing [3,7] as [4,5] fails with %s: %s\n", gg_status_name(gg_last_status()), gg_last_error());
    gg_clear_error();

    /* Allocator counters: bytes handed out now, at the peak, and after everything is freed. */
    printf("\nallocator: %zu bytes live, peak %zu bytes\n", gg_alloc_live_bytes() - live0,
           gg_alloc_peak_bytes());
    gg_tensor *all[] = {x, m, mt, sl, col, ex, w, back, y};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) gg_tensor_free(all[i]);
    printf("after freeing every tensor: %zu bytes live\n", gg_alloc_live_bytes() - live0);
    CHECK(gg_alloc_live_bytes() == live0);
    return 0;
}
