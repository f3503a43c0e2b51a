/* groupgrad checkpoints: named tensors and string metadata in safetensors files, the format of
 * huggingface/safetensors (readable by its Python package, or by a few lines of json + numpy).
 *
 * Tutorial (saving and resuming a training run)
 *   gg_checkpoint *ck = gg_checkpoint_new();
 *   gg_checkpoint_add_list(ck, "model.", params, names, n);      // parameters, BatchNorm buffers, ...
 *   gg_checkpoint_add_optim(ck, opt, NULL);                      // "optim.state.<param>.exp_avg", steps
 *   gg_checkpoint_bind_i64(ck, "epoch", &epoch);                 // saved and restored with the tensors
 *   gg_checkpoint_bind_u64(ck, "rng.seed", &rng.seed);
 *   gg_checkpoint_bind_u64(ck, "rng.counter", &rng.counter);
 *   gg_checkpoint_set_meta(ck, "arch", "resnet20-dgconv");       // free text, returned by a load
 *   gg_checkpoint_save(ck, "run/ckpt.safetensors");              // atomic: temp file + rename
 *   ...
 *   if (gg_checkpoint_load(ck, "run/ckpt.safetensors", 0) != GG_OK) puts(gg_last_error());
 *   gg_checkpoint_free(ck);
 * The same registration serves both directions: a save writes the registered tensors and the current
 * values of the bound variables; a load reads into the registered tensors and variables.
 *
 * File format (little-endian): an 8-byte unsigned header length N; N bytes of JSON
 *   {"<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"<key>": "<value>", ...}}
 * padded with spaces so that the data start at a multiple of 8; then the data: each tensor row-major,
 * offsets relative to the start of the data, in name order, back to back. Only F32 tensors are read or
 * written. The JSON is written and parsed with jansson.
 *
 * Loading validates the whole file before it writes anything: header length within the file (and at most
 * 100 MB, the reference implementation's limit), valid JSON without duplicate keys, every entry well-formed
 * (known dtype, non-negative integer shape of rank <= 8, data_offsets [begin, end] with end - begin =
 * numel * element size), entries that tile the data exactly (no overlap, no gap, nothing past the end,
 * nothing left over), metadata strings only; then the names: registered tensors or bound keys absent from the
 * file
 * ("missing") and file tensors that are not registered ("unexpected") are listed in the error; then dtypes
 * (F32) and shapes; then bound values (integers in range). A failed load is an error naming the file and
 * changes no tensor, no bound variable and no metadata. Errors: GG_ERR_IO (cannot open/read/write),
 * GG_ERR_FORMAT (corrupt or non-conforming file), GG_ERR_SHAPE (shape mismatch), GG_ERR_UNSUPPORTED (dtype
 * other than F32, rank > 8), GG_ERR_INDEX (missing / unexpected names), GG_ERR_ARG (bad arguments).
 *
 * Ownership: the checkpoint takes a reference to each registered tensor (released by gg_checkpoint_free)
 * and copies names and metadata. Bound variables must outlive the checkpoint. Not thread-safe. */
#ifndef GG_CHECKPOINT_H
#define GG_CHECKPOINT_H

#include <stdbool.h>
#include <stdint.h>

#include "gg_optim.h"
#include "gg_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gg_checkpoint gg_checkpoint;

/* An empty checkpoint (caller owns; gg_checkpoint_free). */
gg_checkpoint *gg_checkpoint_new(void);
/* NULL is a no-op. */
void gg_checkpoint_free(gg_checkpoint *ck);

/* ---- registration ---- */
/* Register t under `name` (non-empty, valid UTF-8, unique, not "__metadata__"). t may have any strides for
 * saving; loading into it needs t without broadcast (stride-0) dimensions. */
int gg_checkpoint_add(gg_checkpoint *ck, const char *name, gg_tensor *t);
/* Register ts[i] as prefix + names[i] (prefix may be NULL); all or nothing. */
int gg_checkpoint_add_list(gg_checkpoint *ck, const char *prefix, gg_tensor *const *ts,
                           const char *const *names, int n);
/* Bind an integer variable to the metadata key `key`: a save writes its decimal value, a load parses it
 * back (it must be present, an integer, in range). A bound key cannot also be set with set_meta. */
int gg_checkpoint_bind_i64(gg_checkpoint *ck, const char *key, int64_t *var);
int gg_checkpoint_bind_u64(gg_checkpoint *ck, const char *key, uint64_t *var);
/* Register the optimizer's state (gg_optim_state): tensors as prefix + "state." + entry name, step counts
 * bound as metadata keys of the same form. prefix NULL means "optim.", e.g. "optim.state.fc.weight.exp_avg"
 * and the key "optim.state.fc.weight.step". The optimizer must outlive the checkpoint. */
int gg_checkpoint_add_optim(gg_checkpoint *ck, gg_optim *opt, const char *prefix);

/* ---- metadata (string -> string, copied) ---- */
int gg_checkpoint_set_meta(gg_checkpoint *ck, const char *key, const char *value);
int gg_checkpoint_set_meta_i64(gg_checkpoint *ck, const char *key, int64_t value);
int gg_checkpoint_set_meta_u64(gg_checkpoint *ck, const char *key, uint64_t value);
/* The value for key (owned by the checkpoint, valid until the next change of that key, load or free), or
 * NULL without an error when absent. Bound keys read as their variable's value after a load. */
const char *gg_checkpoint_get_meta(const gg_checkpoint *ck, const char *key);
/* Parse a metadata value as an integer: GG_ERR_INDEX when absent, GG_ERR_FORMAT when not a decimal
 * integer in range. */
int gg_checkpoint_get_meta_i64(const gg_checkpoint *ck, const char *key, int64_t *out);
int gg_checkpoint_get_meta_u64(const gg_checkpoint *ck, const char *key, uint64_t *out);
/* Metadata in key order: count, and the i-th key and value (owned by the checkpoint). */
int gg_checkpoint_num_meta(const gg_checkpoint *ck);
int gg_checkpoint_meta_at(const gg_checkpoint *ck, int i, const char **key, const char **value);

/* ---- registered tensors ---- */
int gg_checkpoint_num_tensors(const gg_checkpoint *ck);
/* In registration order (gg_checkpoint_read: file name order). Borrowed; NULL when out of range. */
const char *gg_checkpoint_name_at(const gg_checkpoint *ck, int i);
gg_tensor *gg_checkpoint_tensor_at(const gg_checkpoint *ck, int i);
/* The tensor registered under name (borrowed), or NULL without an error when there is none. */
gg_tensor *gg_checkpoint_get(const gg_checkpoint *ck, const char *name);
/* Whether the last successful load wrote tensor i (false for a tensor missing under
 * GG_CHECKPOINT_ALLOW_MISSING). */
bool gg_checkpoint_was_loaded(const gg_checkpoint *ck, int i);

/* ---- files ---- */
/* Write every registered tensor and the metadata (set + bound) to path: a temporary file in the same
 * directory, flushed to disk, then renamed over path, so a failure leaves any previous file intact. */
int gg_checkpoint_save(const gg_checkpoint *ck, const char *path);

#define GG_CHECKPOINT_ALLOW_MISSING 1u    /* registered names absent from the file are left as they are */
#define GG_CHECKPOINT_ALLOW_UNEXPECTED 2u /* file tensors that are not registered are ignored */
/* Load path into the registered tensors and bound variables (flags: 0 for strict, or the ALLOW bits) and
 * replace the checkpoint's metadata with the file's. All or nothing (see the top of this header). */
int gg_checkpoint_load(gg_checkpoint *ck, const char *path, unsigned flags);
/* Read every tensor of a file into new tensors owned by a new checkpoint (caller owns), with its metadata;
 * NULL with an error for a bad file. */
gg_checkpoint *gg_checkpoint_read(const char *path);

#ifdef __cplusplus
}
#endif
#endif
