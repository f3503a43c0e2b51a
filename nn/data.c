/* groupgrad datasets: IDX files through zlib (gzip or raw), Fashion-MNIST, and the batch loader
 * (per-epoch Philox permutation, counter-based crop and flip, normalisation through a 256-entry table,
 * double-buffered prefetch on one background thread). */
#include "gg_data.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "gg_alloc.h"
#include "gg_error.h"
#include "gg_rng.h"
#include "gg_tensor.h"

/* Record `status` for the public function `func` as "func: path: <message>"; returns `status`. */
static int file_fail(int status, const char *func, const char *path, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
static int file_fail(int status, const char *func, const char *path, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return gg_error_set(status, func, "%s: %s", path, msg);
}

/* The thread-safe (XSI) strerror. */
static const char *errno_text(int err, char *buf, size_t size) {
    if (strerror_r(err, buf, size) != 0) snprintf(buf, size, "error %d", err);
    return buf;
}

/* ---------------------------------------------------------------------------------------------------
 * IDX reading */

typedef enum { IDX_ANY, IDX_IMAGES, IDX_LABELS } idx_role;

#define IDX_TYPE_UBYTE 0x08
#define IDX_MAX_BYTES ((int64_t)1 << 40)   /* refuse headers describing more than 1 TiB */
#define IDX_FIRST_CHUNK ((size_t)64 << 20) /* grow past this only as the data actually arrive */

/* Fail for a gzread error (result < 0) or a stream that ended badly (Z_BUF_ERROR: gzip data cut off). */
static int gz_fail(gzFile f, const char *func, const char *path) {
    int errnum = Z_OK;
    const char *zmsg = gzerror(f, &errnum);
    char eb[128];
    if (errnum == Z_ERRNO)
        return file_fail(GG_ERR_IO, func, path, "read error: %s", errno_text(errno, eb, sizeof eb));
    if (errnum == Z_MEM_ERROR) return file_fail(GG_ERR_NOMEM, func, path, "zlib is out of memory");
    /* zlib words its messages "<path>: <problem>"; the path is already in ours */
    size_t plen = strlen(path);
    if (zmsg && strncmp(zmsg, path, plen) == 0 && strncmp(zmsg + plen, ": ", 2) == 0) zmsg += plen + 2;
    return file_fail(GG_ERR_FORMAT, func, path, "corrupt gzip data (zlib: %s)",
                     zmsg && *zmsg ? zmsg : "unknown error");
}

/* Read up to `want` bytes into dst; *got = bytes read before EOF. GG_OK, or an error for a zlib or I/O
 * failure (a short read at a clean EOF is not an error here: the caller words "truncated"). */
static int gz_read_some(gzFile f, uint8_t *dst, size_t want, size_t *got, const char *func,
                        const char *path) {
    size_t n = 0;
    *got = 0;
    while (n < want) {
        size_t left = want - n;
        unsigned ask = left > ((size_t)1 << 30) ? 1u << 30 : (unsigned)left;
        int r = gzread(f, dst + n, ask);
        if (r < 0) return gz_fail(f, func, path);
        if (r == 0) break;
        n += (size_t)r;
        *got = n;
    }
    int errnum = Z_OK;
    gzerror(f, &errnum);
    /* Z_BUF_ERROR at EOF: the gzip stream stops mid-way; report it as truncation with a note */
    if (errnum != Z_OK && errnum != Z_BUF_ERROR) return gz_fail(f, func, path);
    return GG_OK;
}

static bool gz_cut_short(gzFile f) {
    int errnum = Z_OK;
    gzerror(f, &errnum);
    return errnum == Z_BUF_ERROR;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* "60000 images of 28x28" / "60000 labels" / "dims 3x4x5 (60 bytes)": what a header describes. */
static void describe(const gg_idx *h, idx_role role, char *buf, size_t size) {
    if (role == IDX_IMAGES) {
        snprintf(buf, size, "%lld images of %lldx%lld", (long long)h->dims[0], (long long)h->dims[1],
                 (long long)h->dims[2]);
    } else if (role == IDX_LABELS) {
        snprintf(buf, size, "%lld labels", (long long)h->dims[0]);
    } else {
        size_t n = (size_t)snprintf(buf, size, "dims ");
        for (int d = 0; d < h->ndim && n < size; d++)
            n += (size_t)snprintf(buf + n, size - n, d ? "x%lld" : "%lld", (long long)h->dims[d]);
        if (n < size) snprintf(buf + n, size - n, " (%lld bytes)", (long long)h->numel);
    }
}

/* Parse and check the header; fills h (not h->data). */
static int read_header(gzFile f, gg_idx *h, int want_ndim, const char *func, const char *path) {
    uint8_t hdr[4 + 4 * GG_IDX_MAX_DIMS];
    size_t got;
    int st = gz_read_some(f, hdr, 4, &got, func, path);
    if (st) return st;
    if (got < 4)
        return file_fail(GG_ERR_FORMAT, func, path,
                         "truncated header: the file holds %zu bytes, an IDX "
                         "magic number needs 4%s",
                         got, gz_cut_short(f) ? " (the gzip stream ends early)" : "");
    uint32_t magic = be32(hdr);
    int type = hdr[2], ndim = hdr[3];
    if (hdr[0] != 0 || hdr[1] != 0 || (want_ndim > 0 && (type != IDX_TYPE_UBYTE || ndim != want_ndim))) {
        if (want_ndim > 0)
            return file_fail(GG_ERR_FORMAT, func, path,
                             "bad magic number 0x%08x, expected 0x%08x (an "
                             "unsigned-byte IDX file of rank %d); not an IDX file, or not this kind",
                             magic, (unsigned)(0x800 | want_ndim), want_ndim);
        return file_fail(GG_ERR_FORMAT, func, path,
                         "bad magic number 0x%08x: an IDX file starts with two "
                         "zero bytes, the element type and the rank",
                         magic);
    }
    if (type != IDX_TYPE_UBYTE)
        return file_fail(GG_ERR_FORMAT, func, path,
                         "unsupported IDX element type 0x%02x (magic 0x%08x): "
                         "only unsigned bytes (0x08) are read",
                         type, magic);
    if (ndim < 1 || ndim > GG_IDX_MAX_DIMS)
        return file_fail(GG_ERR_FORMAT, func, path, "IDX rank %d (magic 0x%08x) is outside 1..%d", ndim,
                         magic, GG_IDX_MAX_DIMS);
    size_t need = 4 * (size_t)ndim;
    st = gz_read_some(f, hdr + 4, need, &got, func, path);
    if (st) return st;
    if (got < need)
        return file_fail(GG_ERR_FORMAT, func, path,
                         "truncated header: the file holds %zu bytes, a rank-%d IDX "
                         "header needs %zu%s",
                         4 + got, ndim, 4 + need, gz_cut_short(f) ? " (the gzip stream ends early)" : "");
    h->ndim = ndim;
    h->numel = 1;
    for (int d = 0; d < ndim; d++) h->dims[d] = be32(hdr + 4 + 4 * d);
    for (int d = 0; d < ndim; d++) {
        if (h->numel > 0 && h->dims[d] > IDX_MAX_BYTES / h->numel) {
            h->numel = -1;
            break;
        }
        h->numel *= h->dims[d];
    }
    if (h->numel < 0) {
        char dims[160];
        size_t n = 0;
        for (int d = 0; d < ndim && n < sizeof dims; d++)
            n += (size_t)snprintf(dims + n, sizeof dims - n, d ? "x%lld" : "%lld", (long long)h->dims[d]);
        return file_fail(GG_ERR_FORMAT, func, path, "header dims %s describe more than 2^40 bytes", dims);
    }
    return GG_OK;
}

/* Read the payload of h->numel bytes into a new block (*out, caller frees), growing the buffer as data
 * arrive so that a corrupt header claiming terabytes does not allocate them; then check that nothing
 * follows (which also makes zlib verify the gzip trailer's CRC and length). */
static int read_payload(gzFile f, gg_idx *h, idx_role role, const char *func, const char *path) {
    size_t want = (size_t)h->numel;
    size_t cap = want < IDX_FIRST_CHUNK ? want : IDX_FIRST_CHUNK;
    uint8_t *buf = gg_alloc(cap);
    if (!buf) return file_fail(GG_ERR_NOMEM, func, path, "cannot allocate %zu bytes for the data", cap);
    size_t n = 0;
    for (;;) {
        size_t got;
        int st = gz_read_some(f, buf + n, cap - n, &got, func, path);
        if (st) {
            gg_free(buf);
            return st;
        }
        n += got;
        if (n < cap || cap == want) break;
        size_t ncap = cap * 2 < want ? cap * 2 : want;
        uint8_t *nb = gg_alloc(ncap);
        if (!nb) {
            gg_free(buf);
            return file_fail(GG_ERR_NOMEM, func, path, "cannot allocate %zu bytes for the data", ncap);
        }
        memcpy(nb, buf, n);
        gg_free(buf);
        buf = nb;
        cap = ncap;
    }
    char what[200];
    describe(h, role, what, sizeof what);
    if (n < want) {
        bool cut = gz_cut_short(f);
        gg_free(buf);
        return file_fail(GG_ERR_FORMAT, func, path, "truncated: header says %s, file holds %zu bytes of %s%s",
                         what, n,
                         role == IDX_IMAGES   ? "pixel data"
                         : role == IDX_LABELS ? "labels"
                                              : "data",
                         cut ? " (the gzip stream ends early)" : "");
    }
    uint8_t extra;
    size_t got;
    int st = gz_read_some(f, &extra, 1, &got, func, path);
    if (!st && got == 0 && gz_cut_short(f))
        st = file_fail(GG_ERR_FORMAT, func, path,
                       "truncated gzip stream: the data are complete but the gzip "
                       "trailer (CRC and length) is missing");
    if (!st && got)
        st = file_fail(GG_ERR_FORMAT, func, path,
                       "the file holds more bytes than its header describes "
                       "(header says %s)",
                       what);
    if (st) {
        gg_free(buf);
        return st;
    }
    h->data = buf;
    return GG_OK;
}

/* Open and read one IDX file; NULL with the error recorded for `func`. */
static gg_idx *idx_read(const char *path, int want_ndim, idx_role role, const char *func) {
    if (!path) {
        gg_error_set(GG_ERR_ARG, func, "path is NULL");
        return NULL;
    }
    struct stat sb;
    char eb[128];
    if (stat(path, &sb) != 0) {
        file_fail(GG_ERR_IO, func, path, "cannot open: %s", errno_text(errno, eb, sizeof eb));
        return NULL;
    }
    if (S_ISDIR(sb.st_mode)) {
        file_fail(GG_ERR_IO, func, path, "is a directory, not an IDX file");
        return NULL;
    }
    errno = 0;
    gzFile f = gzopen(path, "rb");
    if (!f) {
        int e = errno;
        if (e) file_fail(GG_ERR_IO, func, path, "cannot open: %s", errno_text(e, eb, sizeof eb));
        else file_fail(GG_ERR_NOMEM, func, path, "cannot open: zlib is out of memory");
        return NULL;
    }
    gzbuffer(f, 1u << 17);
    gg_idx *h = gg_alloc_zeroed(sizeof *h);
    if (!h) {
        gzclose(f);
        file_fail(GG_ERR_NOMEM, func, path, "cannot allocate the IDX header");
        return NULL;
    }
    int st = read_header(f, h, want_ndim, func, path);
    if (!st) st = read_payload(f, h, role, func, path);
    gzclose(f);
    if (st) {
        gg_free(h);
        return NULL;
    }
    return h;
}

gg_idx *gg_idx_load(const char *path, int ndim) {
    if (ndim < 0 || ndim > GG_IDX_MAX_DIMS) {
        GG_FAIL(GG_ERR_ARG, "%s: expected rank %d is outside 0..%d (0: any)", path ? path : "(null)", ndim,
                GG_IDX_MAX_DIMS);
        return NULL;
    }
    return idx_read(path, ndim, IDX_ANY, __func__);
}

void gg_idx_free(gg_idx *idx) {
    if (!idx) return;
    gg_free(idx->data);
    gg_free(idx);
}

/* ---------------------------------------------------------------------------------------------------
 * datasets */

/* Take the images and labels into a dataset after checking that they agree; frees both on failure. */
static gg_dataset *dataset_from_idx(gg_idx *im, const char *im_path, gg_idx *lb, const char *lb_path,
                                    int n_classes, const char *func) {
    gg_dataset *ds = NULL;
    if (im->dims[0] != lb->dims[0]) {
        gg_error_set(GG_ERR_FORMAT, func, "%s holds %lld labels but %s holds %lld images", lb_path,
                     (long long)lb->dims[0], im_path, (long long)im->dims[0]);
        goto done;
    }
    for (int64_t i = 0; i < lb->numel; i++) {
        if (lb->data[i] >= n_classes) {
            file_fail(GG_ERR_FORMAT, func, lb_path, "label %d at index %lld is out of range 0..%d",
                      lb->data[i], (long long)i, n_classes - 1);
            goto done;
        }
    }
    ds = gg_alloc_zeroed(sizeof *ds);
    if (!ds) {
        gg_error_set(GG_ERR_NOMEM, func, "cannot allocate the dataset");
        goto done;
    }
    ds->n = im->dims[0];
    ds->channels = 1;
    ds->height = im->dims[1];
    ds->width = im->dims[2];
    ds->n_classes = n_classes;
    ds->images = im->data;
    ds->labels = lb->data;
    im->data = lb->data = NULL;
done:
    gg_idx_free(im);
    gg_idx_free(lb);
    return ds;
}

static gg_dataset *dataset_load(const char *im_path, const char *lb_path, int n_classes, int64_t want_h,
                                int64_t want_w, const char *func) {
    gg_idx *im = idx_read(im_path, 3, IDX_IMAGES, func);
    if (!im) return NULL;
    if (want_h > 0 && (im->dims[1] != want_h || im->dims[2] != want_w)) {
        file_fail(GG_ERR_FORMAT, func, im_path, "images are %lldx%lld, expected %lldx%lld",
                  (long long)im->dims[1], (long long)im->dims[2], (long long)want_h, (long long)want_w);
        gg_idx_free(im);
        return NULL;
    }
    gg_idx *lb = idx_read(lb_path, 1, IDX_LABELS, func);
    if (!lb) {
        gg_idx_free(im);
        return NULL;
    }
    return dataset_from_idx(im, im_path, lb, lb_path, n_classes, func);
}

gg_dataset *gg_dataset_load_idx(const char *images_path, const char *labels_path, int n_classes) {
    if (n_classes < 1 || n_classes > 256) {
        GG_FAIL(GG_ERR_ARG, "n_classes %d is outside 1..256", n_classes);
        return NULL;
    }
    return dataset_load(images_path, labels_path, n_classes, 0, 0, __func__);
}

/* path = "<dir>/<name>.gz" if it exists (or exists but cannot be examined: reading it then reports
 * why), else "<dir>/<name>" if that exists, else the .gz path with *missing set. */
static int find_file(const char *dir, const char *name, char *path, size_t size, bool *missing,
                     const char *func) {
    int n = snprintf(path, size, "%s/%s.gz", dir, name);
    if (n < 0 || (size_t)n >= size) return gg_error_set(GG_ERR_ARG, func, "directory name too long: %s", dir);
    struct stat sb;
    *missing = false;
    if (stat(path, &sb) == 0 || errno != ENOENT) return GG_OK;
    path[n - 3] = '\0';
    if (stat(path, &sb) == 0 || errno != ENOENT) return GG_OK;
    path[n - 3] = '.';
    *missing = true;
    return GG_OK;
}

gg_dataset *gg_fashion_mnist_load(const char *dir, bool train) {
    const char *d = dir ? dir : GG_FASHION_MNIST_DIR;
    const char *names[2] = {train ? "train-images-idx3-ubyte" : "t10k-images-idx3-ubyte",
                            train ? "train-labels-idx1-ubyte" : "t10k-labels-idx1-ubyte"};
    char paths[2][4096];
    for (int k = 0; k < 2; k++) {
        bool missing;
        if (find_file(d, names[k], paths[k], sizeof paths[k], &missing, __func__)) return NULL;
        if (missing) {
            GG_FAIL(GG_ERR_IO,
                    "%s: no such file (nor %s/%s): install the Debian package dataset-fashion-mnist "
                    "(apt-get install dataset-fashion-mnist), which puts the files in %s, or pass the "
                    "directory that holds them",
                    paths[k], d, names[k], GG_FASHION_MNIST_DIR);
            return NULL;
        }
    }
    return dataset_load(paths[0], paths[1], 10, 28, 28, __func__);
}

gg_dataset *gg_dataset_from_buffers(int64_t n, int64_t channels, int64_t height, int64_t width,
                                    const uint8_t *images, const uint8_t *labels, int n_classes) {
    if (n < 0 || channels < 1 || height < 1 || width < 1) {
        GG_FAIL(GG_ERR_ARG, "need n >= 0 and C, H, W >= 1 (n %lld, [%lld,%lld,%lld])", (long long)n,
                (long long)channels, (long long)height, (long long)width);
        return NULL;
    }
    if (n_classes < 1 || n_classes > 256) {
        GG_FAIL(GG_ERR_ARG, "n_classes %d is outside 1..256", n_classes);
        return NULL;
    }
    int64_t sample = gg_shape_numel(3, (const int64_t[]){channels, height, width}, __func__);
    if (sample < 0) return NULL;
    if (n > 0 && sample > IDX_MAX_BYTES / n) {
        GG_FAIL(GG_ERR_OVERFLOW, "%lld samples of [%lld,%lld,%lld] exceed 2^40 bytes", (long long)n,
                (long long)channels, (long long)height, (long long)width);
        return NULL;
    }
    if (n > 0 && (!images || !labels)) {
        GG_FAIL(GG_ERR_ARG, "images or labels is NULL");
        return NULL;
    }
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] >= n_classes) {
            GG_FAIL(GG_ERR_ARG, "label %d at index %lld is out of range 0..%d", labels[i], (long long)i,
                    n_classes - 1);
            return NULL;
        }
    }
    gg_dataset *ds = gg_alloc_zeroed(sizeof *ds);
    uint8_t *im = gg_alloc((size_t)(n * sample));
    uint8_t *lb = gg_alloc((size_t)n);
    if (!ds || !im || !lb) {
        gg_free(ds);
        gg_free(im);
        gg_free(lb);
        GG_FAIL(GG_ERR_NOMEM, "cannot allocate %lld samples of [%lld,%lld,%lld]", (long long)n,
                (long long)channels, (long long)height, (long long)width);
        return NULL;
    }
    if (n > 0) {
        memcpy(im, images, (size_t)(n * sample));
        memcpy(lb, labels, (size_t)n);
    }
    *ds = (gg_dataset){.n = n,
                       .channels = channels,
                       .height = height,
                       .width = width,
                       .n_classes = n_classes,
                       .images = im,
                       .labels = lb};
    return ds;
}

void gg_dataset_free(gg_dataset *ds) {
    if (!ds) return;
    gg_free(ds->images);
    gg_free(ds->labels);
    gg_free(ds);
}

/* ---------------------------------------------------------------------------------------------------
 * random streams: Philox keyed by (seed, epoch, purpose) */

enum { STREAM_ORDER = 1, STREAM_AUGMENT = 2, STREAM_SUBSET = 3 };

/* splitmix64's finaliser: a bijection that spreads every input bit over the output. */
static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The Philox key of one stream. For a fixed (epoch, purpose) it is a bijection of the seed. */
static uint64_t stream_key(uint64_t seed, uint64_t epoch, uint64_t purpose) {
    return seed ^ mix64(epoch * 0x9E3779B97F4A7C15ull ^ mix64(purpose));
}

/* Sequential 32-bit draws from one keyed stream (counter 0, 1, ...; four lanes per block). */
typedef struct draw_stream {
    uint64_t key, counter;
    uint32_t buf[4];
    int lane;
} draw_stream;

static uint32_t draw_u32(draw_stream *s) {
    if (s->lane == 4) {
        gg_philox4x32(s->key, s->counter++, s->buf);
        s->lane = 0;
    }
    return s->buf[s->lane++];
}

/* Uniform in [0, bound) without bias (Lemire's multiply-and-reject), bound in 1 .. 2^32. */
static uint64_t draw_below(draw_stream *s, uint64_t bound) {
    uint64_t m = (uint64_t)draw_u32(s) * bound;
    if ((uint32_t)m < bound) {
        uint32_t t = (uint32_t)((UINT64_C(1) << 32) % bound);
        while ((uint32_t)m < t) m = (uint64_t)draw_u32(s) * bound;
    }
    return m >> 32;
}

/* Fisher-Yates shuffle of a[0 .. n-1] from the stream `key`. */
static void shuffle(int64_t *a, int64_t n, uint64_t key) {
    draw_stream s = {.key = key, .lane = 4};
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)draw_below(&s, (uint64_t)i + 1);
        int64_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* ---------------------------------------------------------------------------------------------------
 * loader */

gg_loader_options gg_loader_default_options(void) {
    return (gg_loader_options){.batch_size = 128,
                               .seed = 0,
                               .shuffle = true,
                               .drop_last = false,
                               .mean = 0.2860f,
                               .std = 0.3530f,
                               .crop_padding = 0,
                               .pad_mode = GG_PAD_BACKGROUND,
                               .hflip = false,
                               .subset = 0,
                               .subset_shuffle = false,
                               .subset_seed = 0,
                               .prefetch = true};
}

/* One batch buffer. */
typedef struct loader_slot {
    gg_tensor *x_full; /* [B, C, H, W] */
    gg_tensor *x_tail; /* view of its first (samples % B) rows, for the last batch; NULL if none */
    int32_t *labels;   /* [B] */
    int64_t *indices;  /* [B] */
    int64_t n;         /* samples it holds */
} loader_slot;

typedef enum { JOB_NONE, JOB_REQUESTED, JOB_DONE } job_state;

struct gg_loader {
    const gg_dataset *ds;  /* borrowed */
    gg_loader_options opt; /* opt.seed is the current seed */
    int64_t n_use;         /* samples per epoch */
    int64_t end_pos;       /* position at which an epoch is used up (n_use, or rounded down) */
    int64_t sample_size;   /* C * H * W */
    int64_t *samples;      /* [n_use] dataset indices of the subset */
    int64_t *order;        /* [n_use] dataset indices in order_epoch's order (builder's only) */
    int64_t order_epoch;   /* -1: order not computed */
    float lut[256];        /* normalised value of each pixel value */
    float pad_value;
    loader_slot slot[2];
    int64_t epoch, position; /* consumer's state */

    /* prefetch: one job at a time, handed over under mu */
    bool threaded;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool shutdown;
    job_state job;
    int job_slot;
    int64_t job_epoch, job_pos;
};

static void loader_augment(const gg_loader *l, uint64_t seed, int64_t epoch, int64_t index, gg_augment *a) {
    a->crop_y = a->crop_x = 0;
    a->flip = false;
    if (l->opt.crop_padding == 0 && !l->opt.hflip) return;
    uint32_t r[4];
    gg_philox4x32(stream_key(seed, (uint64_t)epoch, STREAM_AUGMENT), (uint64_t)index, r);
    uint64_t range = 2 * (uint64_t)l->opt.crop_padding + 1;
    /* (r * range) >> 32: bias below range / 2^32, invisible for paddings of a few pixels */
    a->crop_y = (int)(((uint64_t)r[0] * range) >> 32);
    a->crop_x = (int)(((uint64_t)r[1] * range) >> 32);
    a->flip = l->opt.hflip && (r[2] >> 31);
}

/* dst[c, y, x] = lut[padded[c, y + crop_y, x' + crop_x]] with x' = W-1-x when flipped, where padded is
 * src framed by `pad` pixels of pad_value on every side. */
static void transform_sample(const gg_loader *l, const uint8_t *src, float *dst, const gg_augment *a) {
    const int64_t C = l->ds->channels, H = l->ds->height, W = l->ds->width;
    const int64_t pad = l->opt.crop_padding;
    const float *lut = l->lut;
    const float bg = l->pad_value;
    const int64_t dy = a->crop_y - pad, dx = a->crop_x - pad; /* source = output + shift */
    /* columns of the window whose source lies inside the image: x + dx in [0, W) */
    int64_t x0 = dx < 0 ? -dx : 0, x1 = W - dx < W ? W - dx : W;
    if (x1 < x0) x1 = x0;
    for (int64_t c = 0; c < C; c++) {
        const uint8_t *sc = src + c * H * W;
        for (int64_t y = 0; y < H; y++) {
            float *row = dst + (c * H + y) * W;
            int64_t sy = y + dy;
            if (sy < 0 || sy >= H) {
                for (int64_t x = 0; x < W; x++) row[x] = bg;
                continue;
            }
            const uint8_t *sr = sc + sy * W + dx;
            if (!a->flip) {
                for (int64_t x = 0; x < x0; x++) row[x] = bg;
                for (int64_t x = x0; x < x1; x++) row[x] = lut[sr[x]];
                for (int64_t x = x1; x < W; x++) row[x] = bg;
            } else {
                /* window column x lands at W-1-x */
                float *rr = row + W - 1;
                for (int64_t x = 0; x < x0; x++) rr[-x] = bg;
                for (int64_t x = x0; x < x1; x++) rr[-x] = lut[sr[x]];
                for (int64_t x = x1; x < W; x++) rr[-x] = bg;
            }
        }
    }
}

static void compute_order(const gg_loader *l, uint64_t seed, int64_t epoch, int64_t *out) {
    memcpy(out, l->samples, (size_t)l->n_use * sizeof *out);
    if (l->opt.shuffle) shuffle(out, l->n_use, stream_key(seed, (uint64_t)epoch, STREAM_ORDER));
}

static int64_t batch_count(const gg_loader *l, int64_t pos) {
    int64_t left = l->n_use - pos;
    return left < l->opt.batch_size ? left : l->opt.batch_size;
}

/* Fill slot s with the batch at (epoch, pos). Runs on the prefetch thread or, without one, the caller's;
 * touches only the slot, l->order and l->order_epoch (the builder's own), and reads the rest. */
static void build_batch(gg_loader *l, int s, int64_t epoch, int64_t pos) {
    if (l->order_epoch != epoch) {
        compute_order(l, l->opt.seed, epoch, l->order);
        l->order_epoch = epoch;
    }
    loader_slot *sl = &l->slot[s];
    int64_t n = batch_count(l, pos);
    float *x = gg_tensor_data(sl->x_full);
    for (int64_t j = 0; j < n; j++) {
        int64_t idx = l->order[pos + j];
        gg_augment a;
        loader_augment(l, l->opt.seed, epoch, idx, &a);
        transform_sample(l, l->ds->images + idx * l->sample_size, x + j * l->sample_size, &a);
        sl->labels[j] = l->ds->labels[idx];
        sl->indices[j] = idx;
    }
    sl->n = n;
}

static void *prefetch_main(void *arg) {
    gg_loader *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->shutdown && l->job != JOB_REQUESTED) pthread_cond_wait(&l->cv, &l->mu);
        if (l->shutdown) break;
        int s = l->job_slot;
        int64_t e = l->job_epoch, p = l->job_pos;
        pthread_mutex_unlock(&l->mu);
        build_batch(l, s, e, p);
        pthread_mutex_lock(&l->mu);
        l->job = JOB_DONE;
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

static void free_slots(gg_loader *l) {
    for (int s = 0; s < 2; s++) {
        gg_tensor_free(l->slot[s].x_tail);
        gg_tensor_free(l->slot[s].x_full);
        gg_free(l->slot[s].labels);
        gg_free(l->slot[s].indices);
    }
}

void gg_loader_free(gg_loader *l) {
    if (!l) return;
    if (l->threaded) {
        pthread_mutex_lock(&l->mu);
        l->shutdown = true;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->thread, NULL);
        pthread_cond_destroy(&l->cv);
        pthread_mutex_destroy(&l->mu);
    }
    free_slots(l);
    gg_free(l->samples);
    gg_free(l->order);
    gg_free(l);
}

/* Errors are reported for gg_loader_new, the only caller. */
static int check_options(const gg_dataset *ds, const gg_loader_options *o) {
    if (!ds) return gg_error_set(GG_ERR_ARG, "gg_loader_new", "dataset is NULL");
    if (ds->n < 1) return gg_error_set(GG_ERR_ARG, "gg_loader_new", "the dataset is empty");
    if (o->batch_size < 1)
        return gg_error_set(GG_ERR_ARG, "gg_loader_new", "batch_size %lld must be >= 1",
                            (long long)o->batch_size);
    if (!isfinite(o->mean) || !isfinite(o->std) || !(o->std > 0))
        return gg_error_set(GG_ERR_ARG, "gg_loader_new", "need a finite mean and std > 0 (mean %g, std %g)",
                            (double)o->mean, (double)o->std);
    if (o->crop_padding < 0 || o->crop_padding > 4096)
        return gg_error_set(GG_ERR_ARG, "gg_loader_new", "crop_padding %d is outside 0..4096",
                            o->crop_padding);
    if ((unsigned)o->pad_mode >= GG_PAD_COUNT)
        return gg_error_set(GG_ERR_ARG, "gg_loader_new", "unknown pad_mode %d", (int)o->pad_mode);
    if (o->subset < 0 || o->subset > ds->n)
        return gg_error_set(GG_ERR_ARG, "gg_loader_new",
                            "subset %lld is outside 0..%lld (the dataset's size)", (long long)o->subset,
                            (long long)ds->n);
    int64_t n_use = o->subset ? o->subset : ds->n;
    if (n_use > ((int64_t)1 << 32))
        return gg_error_set(GG_ERR_ARG, "gg_loader_new", "%lld samples per epoch exceed 2^32",
                            (long long)n_use);
    if (o->drop_last && n_use < o->batch_size)
        return gg_error_set(GG_ERR_ARG, "gg_loader_new",
                            "drop_last with %lld samples and batch_size %lld leaves no batch",
                            (long long)n_use, (long long)o->batch_size);
    return GG_OK;
}

gg_loader *gg_loader_new(const gg_dataset *ds, const gg_loader_options *opt) {
    gg_loader_options o = opt ? *opt : gg_loader_default_options();
    if (check_options(ds, &o)) return NULL;
    gg_loader *l = gg_alloc_zeroed(sizeof *l);
    if (!l) {
        GG_FAIL(GG_ERR_NOMEM, "cannot allocate the loader");
        return NULL;
    }
    l->ds = ds;
    l->opt = o;
    l->n_use = o.subset ? o.subset : ds->n;
    l->end_pos = o.drop_last ? l->n_use / o.batch_size * o.batch_size : l->n_use;
    l->sample_size = ds->channels * ds->height * ds->width;
    l->order_epoch = -1;
    for (int v = 0; v < 256; v++) l->lut[v] = ((float)v / 255.0f - o.mean) / o.std;
    l->pad_value = o.pad_mode == GG_PAD_ZERO ? 0.0f : l->lut[0];

    int64_t B = o.batch_size, tail = o.drop_last ? 0 : l->n_use % B;
    if (B > l->n_use) B = l->n_use, tail = 0; /* no batch is ever bigger than an epoch */
    l->samples = gg_alloc((size_t)ds->n * sizeof(int64_t));
    l->order = gg_alloc((size_t)l->n_use * sizeof(int64_t));
    bool ok = l->samples && l->order;
    int nslots = o.prefetch ? 2 : 1;
    for (int s = 0; s < nslots && ok; s++) {
        loader_slot *sl = &l->slot[s];
        sl->x_full = gg_tensor_empty(4, (const int64_t[]){B, ds->channels, ds->height, ds->width});
        sl->x_tail = sl->x_full && tail ? gg_tensor_slice(sl->x_full, 0, 0, tail, 1) : NULL;
        sl->labels = gg_alloc((size_t)B * sizeof(int32_t));
        sl->indices = gg_alloc((size_t)B * sizeof(int64_t));
        ok = sl->x_full && (sl->x_tail || !tail) && sl->labels && sl->indices;
    }
    if (!ok) {
        GG_FAIL(GG_ERR_NOMEM,
                "cannot allocate the batch buffers (batch %lld of [%lld,%lld,%lld], %lld samples)",
                (long long)B, (long long)ds->channels, (long long)ds->height, (long long)ds->width,
                (long long)l->n_use);
        free_slots(l);
        gg_free(l->samples);
        gg_free(l->order);
        gg_free(l);
        return NULL;
    }
    for (int64_t i = 0; i < ds->n; i++) l->samples[i] = i;
    if (o.subset && o.subset_shuffle) shuffle(l->samples, ds->n, stream_key(o.subset_seed, 0, STREAM_SUBSET));

    if (o.prefetch && pthread_mutex_init(&l->mu, NULL) == 0) {
        if (pthread_cond_init(&l->cv, NULL) == 0) {
            if (pthread_create(&l->thread, NULL, prefetch_main, l) == 0) l->threaded = true;
            else pthread_cond_destroy(&l->cv);
        }
        if (!l->threaded) pthread_mutex_destroy(&l->mu);
    }
    return l;
}

/* The key of the batch after the one at (e, p) that was just handed out. */
static void next_key(const gg_loader *l, int64_t e, int64_t p, int64_t *ne, int64_t *np) {
    p += batch_count(l, p);
    if (p >= l->end_pos) {
        *ne = e + 1;
        *np = 0;
    } else {
        *ne = e;
        *np = p;
    }
}

static void hand_out(gg_loader *l, int s, gg_batch *out) {
    loader_slot *sl = &l->slot[s];
    gg_tensor *x = sl->n == sl->x_full->shape[0] ? sl->x_full : sl->x_tail;
    gg_tensor_bump_version(x);
    *out = (gg_batch){.x = x,
                      .labels = sl->labels,
                      .indices = sl->indices,
                      .n = sl->n,
                      .epoch = l->epoch,
                      .index = l->position / l->opt.batch_size};
    l->position += sl->n;
}

int gg_loader_next(gg_loader *l, gg_batch *out) {
    if (!l || !out) return GG_FAIL(GG_ERR_ARG, "loader or out is NULL");
    if (l->position >= l->end_pos) {
        l->epoch++;
        l->position = 0;
        return 0;
    }
    if (!l->threaded) {
        build_batch(l, 0, l->epoch, l->position);
        hand_out(l, 0, out);
        return 1;
    }
    pthread_mutex_lock(&l->mu);
    if (l->job == JOB_NONE || l->job_epoch != l->epoch || l->job_pos != l->position) {
        /* nothing prepared for this batch (first call, or after set_state): ask for it now */
        while (l->job == JOB_REQUESTED) pthread_cond_wait(&l->cv, &l->mu);
        l->job = JOB_REQUESTED;
        l->job_slot = 0;
        l->job_epoch = l->epoch;
        l->job_pos = l->position;
        pthread_cond_broadcast(&l->cv);
    }
    while (l->job == JOB_REQUESTED) pthread_cond_wait(&l->cv, &l->mu);
    int s = l->job_slot;
    /* the caller is done with the other slot: prepare the following batch there */
    int64_t ne, np;
    next_key(l, l->epoch, l->position, &ne, &np);
    l->job = JOB_REQUESTED;
    l->job_slot = 1 - s;
    l->job_epoch = ne;
    l->job_pos = np;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    hand_out(l, s, out);
    return 1;
}

int gg_loader_get_state(const gg_loader *l, gg_loader_state *out) {
    if (!l || !out) return GG_FAIL(GG_ERR_ARG, "loader or out is NULL");
    *out = (gg_loader_state){.seed = l->opt.seed, .epoch = l->epoch, .position = l->position};
    return GG_OK;
}

int gg_loader_set_state(gg_loader *l, const gg_loader_state *st) {
    if (!l || !st) return GG_FAIL(GG_ERR_ARG, "loader or state is NULL");
    if (st->epoch < 0) return GG_FAIL(GG_ERR_ARG, "epoch %lld is negative", (long long)st->epoch);
    if (st->position < 0 || st->position > l->n_use ||
        (st->position % l->opt.batch_size != 0 && st->position != l->n_use))
        return GG_FAIL(GG_ERR_ARG, "position %lld is not a batch boundary in 0..%lld (batch_size %lld)",
                       (long long)st->position, (long long)l->n_use, (long long)l->opt.batch_size);
    if (l->threaded) {
        /* let a running build finish, then drop it: it may be for the old seed or position */
        pthread_mutex_lock(&l->mu);
        while (l->job == JOB_REQUESTED) pthread_cond_wait(&l->cv, &l->mu);
        l->job = JOB_NONE;
        pthread_mutex_unlock(&l->mu);
    }
    if (st->seed != l->opt.seed) l->order_epoch = -1;
    l->opt.seed = st->seed;
    l->epoch = st->epoch;
    l->position = st->position;
    return GG_OK;
}

int64_t gg_loader_num_samples(const gg_loader *l) {
    if (!l) return GG_FAIL(GG_ERR_ARG, "loader is NULL");
    return l->n_use;
}

int64_t gg_loader_num_batches(const gg_loader *l) {
    if (!l) return GG_FAIL(GG_ERR_ARG, "loader is NULL");
    int64_t B = l->opt.batch_size;
    return l->opt.drop_last ? l->n_use / B : (l->n_use + B - 1) / B;
}

int gg_loader_epoch_order(const gg_loader *l, int64_t epoch, int64_t *out) {
    if (!l || !out) return GG_FAIL(GG_ERR_ARG, "loader or out is NULL");
    if (epoch < 0) return GG_FAIL(GG_ERR_ARG, "epoch %lld is negative", (long long)epoch);
    compute_order(l, l->opt.seed, epoch, out);
    return GG_OK;
}

int gg_loader_augment_of(const gg_loader *l, int64_t epoch, int64_t index, gg_augment *out) {
    if (!l || !out) return GG_FAIL(GG_ERR_ARG, "loader or out is NULL");
    if (epoch < 0 || index < 0 || index >= l->ds->n)
        return GG_FAIL(GG_ERR_INDEX, "epoch %lld, index %lld: need epoch >= 0 and index in 0..%lld",
                       (long long)epoch, (long long)index, (long long)l->ds->n - 1);
    loader_augment(l, l->opt.seed, epoch, index, out);
    return GG_OK;
}
