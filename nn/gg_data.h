/* groupgrad datasets: IDX files (the MNIST / Fashion-MNIST format, gzip-compressed or raw) kept as uint8
 * in memory, and a loader that shuffles, augments, normalises and batches them into float NCHW tensors,
 * preparing the next batch on a background thread while the trainer works on the current one.
 *
 * Tutorial
 *   gg_dataset *train = gg_fashion_mnist_load(NULL, true);      // 60000 images [1,28,28], labels 0..9
 *   if (!train) { fprintf(stderr, "%s\n", gg_last_error()); return 1; }
 *   gg_loader_options o = gg_loader_default_options();          // B 128, Fashion-MNIST mean/std
 *   o.seed = 42; o.crop_padding = 4; o.hflip = true;
 *   gg_loader *ld = gg_loader_new(train, &o);
 *   for (int epoch = 0; epoch < 10; epoch++) {
 *       gg_batch b;
 *       int r;
 *       while ((r = gg_loader_next(ld, &b)) > 0) {
 *           ... b.x [b.n,1,28,28] float, b.labels int32[b.n] ...
 *       }
 *       if (r < 0) ... error ...
 *   }
 *   gg_loader_free(ld); gg_dataset_free(train);
 *
 * Reproducibility: every random choice is a pure function of (seed, epoch, ...) through Philox
 * (gg_rng.h): the order of epoch e is a permutation drawn from (seed, e); the crop offsets and flip of
 * dataset sample i in epoch e come from one Philox block keyed by (seed, e) at counter i. So results do
 * not depend on threads, prefetching or batch boundaries, and the loader's whole state is
 * (seed, epoch, position): save it with gg_loader_get_state, restore it with gg_loader_set_state, and the
 * identical batch sequence follows.
 *
 * Errors: NULL or a negative gg_status with a message naming the function and the file, e.g.
 *   "gg_fashion_mnist_load: /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz: truncated:
 *    header says 60000 images of 28x28, file holds 1234 bytes of pixel data"
 * Missing files are GG_ERR_IO, malformed ones (bad gzip data, wrong magic number, truncated header or
 * data, data past what the header describes, mismatched counts, labels out of range) GG_ERR_FORMAT.
 * A failed call leaves nothing allocated. */
#ifndef GG_DATA_H
#define GG_DATA_H

#include <stdbool.h>
#include <stdint.h>

#include "gg_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- IDX files ---- */

#define GG_IDX_MAX_DIMS 8

/* An unsigned-byte IDX array: magic 0x00 0x00 0x08 ndim, ndim big-endian uint32 sizes, then the bytes in
 * row-major order. */
typedef struct gg_idx {
    int ndim;
    int64_t dims[GG_IDX_MAX_DIMS];
    int64_t numel;
    uint8_t *data; /* numel bytes, owned by the gg_idx */
} gg_idx;

/* Read an unsigned-byte IDX file, gzip-compressed or raw (zlib reads a file without a gzip header as
 * is). `ndim` is the rank the file must have (magic 0x0000080<ndim>), or 0 for any rank 1..8. The whole
 * gzip stream is checked, CRC included, and bytes past the described data are an error.
 * Caller owns the result (gg_idx_free); NULL and an error naming the file on failure. */
gg_idx *gg_idx_load(const char *path, int ndim);
/* gg_idx_free(NULL) is a no-op. */
void gg_idx_free(gg_idx *idx);

/* ---- datasets ---- */

/* Labelled images in memory as uint8. */
typedef struct gg_dataset {
    int64_t n;                       /* samples */
    int64_t channels, height, width; /* C, H, W */
    int n_classes;                   /* labels lie in 0 .. n_classes-1 */
    uint8_t *images;                 /* [n, C, H, W] pixel values 0..255, owned by the dataset */
    uint8_t *labels;                 /* [n], owned by the dataset */
} gg_dataset;

/* The Debian package dataset-fashion-mnist installs the files here. */
#define GG_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

/* Fashion-MNIST from `dir` (NULL: GG_FASHION_MNIST_DIR): train-images-idx3-ubyte / train-labels-idx1-ubyte
 * (60000 samples) when `train`, else t10k-* (10000), each as <name>.gz or, failing that, <name>.
 * Checks magic numbers, 28x28 images, matching counts, labels 0..9. Missing files are an error that says
 * to install `dataset-fashion-mnist`. Caller owns the result (gg_dataset_free). */
gg_dataset *gg_fashion_mnist_load(const char *dir, bool train);
/* Any pair of IDX files: images [N,H,W] (magic 0x00000803), labels [N] (magic 0x00000801) in
 * 0 .. n_classes-1 (n_classes in 1..256). Gives C = 1. Caller owns the result. */
gg_dataset *gg_dataset_load_idx(const char *images_path, const char *labels_path, int n_classes);
/* Copy n samples of [C,H,W] pixels and n labels (each < n_classes) into a new dataset (caller owns). */
gg_dataset *gg_dataset_from_buffers(int64_t n, int64_t channels, int64_t height, int64_t width,
                                    const uint8_t *images, const uint8_t *labels, int n_classes);
/* gg_dataset_free(NULL) is a no-op. */
void gg_dataset_free(gg_dataset *ds);

/* ---- loader ---- */

/* What the random crop pads with: pixel value 0 (black), which after normalisation is -mean/std, as
 * torchvision's RandomCrop(padding=...) before Normalize; or 0.0 in the normalised output. */
typedef enum gg_pad_mode { GG_PAD_BACKGROUND, GG_PAD_ZERO, GG_PAD_COUNT } gg_pad_mode;

typedef struct gg_loader_options {
    int64_t batch_size;   /* >= 1 */
    uint64_t seed;        /* drives the epoch permutations and the augmentation */
    bool shuffle;         /* a permutation per epoch from (seed, epoch); false: dataset order */
    bool drop_last;       /* drop an epoch's last partial batch (else it comes out smaller) */
    float mean, std;      /* x = (pixel / 255 - mean) / std; std > 0 */
    int crop_padding;     /* random crop: pad by this many pixels, cut a random HxW window; 0: off */
    gg_pad_mode pad_mode; /* what the padding holds */
    bool hflip;           /* mirror left-right with probability 1/2 (after the crop) */
    int64_t subset;       /* > 0: use only this many samples (--subset N); 0: all */
    bool subset_shuffle;  /* the subset is the first `subset` samples of a permutation from
                           * subset_seed (fixed across runs and loader seeds), else simply the first */
    uint64_t subset_seed;
    bool prefetch; /* build the next batch on a background thread (if the thread cannot be
                    * created, batches are built in gg_loader_next; results are identical) */
} gg_loader_options;

/* batch_size 128, seed 0, shuffle, keep the last batch, Fashion-MNIST mean 0.2860 and std 0.3530,
 * no augmentation, GG_PAD_BACKGROUND, all samples, prefetch on. */
gg_loader_options gg_loader_default_options(void);

typedef struct gg_loader gg_loader;

/* A batch. Everything in it is owned by the loader and stays valid (and unchanged) until the next
 * gg_loader_next, gg_loader_set_state or gg_loader_free on that loader; ops may read b.x like any tensor
 * (the loader bumps its version counter when it reuses the buffer, so a tape that saved it notices). */
typedef struct gg_batch {
    gg_tensor *x;           /* [n, C, H, W] float, normalised and augmented */
    const int32_t *labels;  /* [n] */
    const int64_t *indices; /* [n] dataset index of each sample */
    int64_t n;              /* batch_size, or fewer for an epoch's last batch */
    int64_t epoch;          /* epoch the batch belongs to (from 0) */
    int64_t index;          /* batch number within the epoch (from 0) */
} gg_batch;

/* Where a loader stands: the next batch is the one starting at sample `position` of `epoch`'s order.
 * position is a multiple of batch_size, or the epoch's sample count when the epoch is used up. */
typedef struct gg_loader_state {
    uint64_t seed;
    int64_t epoch;
    int64_t position;
} gg_loader_state;

/* A loader over `ds`, which it borrows: ds must outlive the loader. Starts at (opt->seed, 0, 0).
 * opt NULL: the defaults. Caller owns the result (gg_loader_free). Call a loader's functions from one
 * thread at a time (its prefetch thread is internal). */
gg_loader *gg_loader_new(const gg_dataset *ds, const gg_loader_options *opt);
/* Stops the prefetch thread and frees everything; NULL is a no-op. */
void gg_loader_free(gg_loader *l);

/* The next batch of the current epoch: returns 1 and fills *out; or 0 when the epoch is used up, after
 * which the loader stands at the start of the next epoch (so `while (gg_loader_next(l, &b) > 0)` walks
 * one epoch); or a negative status. */
int gg_loader_next(gg_loader *l, gg_batch *out);

int gg_loader_get_state(const gg_loader *l, gg_loader_state *out);
/* Resume from a saved state (any epoch >= 0; the seed may differ from the one the loader was made with).
 * Invalidates the current batch. */
int gg_loader_set_state(gg_loader *l, const gg_loader_state *state);

/* Samples per epoch (the subset size or the dataset size) and batches per epoch. */
int64_t gg_loader_num_samples(const gg_loader *l);
int64_t gg_loader_num_batches(const gg_loader *l);

/* The dataset indices of `epoch`'s samples in the order the loader visits them (the loader's current
 * seed); out has room for gg_loader_num_samples(l) entries. */
int gg_loader_epoch_order(const gg_loader *l, int64_t epoch, int64_t *out);

/* The augmentation of dataset sample `index` in `epoch`: the top-left corner of the HxW window in the
 * image padded by crop_padding on every side (each in 0 .. 2*crop_padding; crop_padding, crop_padding
 * is the unshifted image), then a left-right mirror of the window when `flip`. */
typedef struct gg_augment {
    int crop_y, crop_x;
    bool flip;
} gg_augment;
int gg_loader_augment_of(const gg_loader *l, int64_t epoch, int64_t index, gg_augment *out);

#ifdef __cplusplus
}
#endif
#endif
