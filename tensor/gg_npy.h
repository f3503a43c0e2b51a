/* groupgrad .npy files (NumPy format versions 1.0, 2.0 and 3.0).
 *
 * Load: dtypes <f4, <f8, <i4, <i8, |u1 (and their '=' / native little-endian spellings), converted to
 * float32; C order, or Fortran order (the data are reordered, so the tensor has the logical shape).
 * Save: <f4, C order, version 1.0 (2.0 when the header needs it).
 * Malformed input (bad magic, unknown version, truncated header or data, header length past the end of
 * the file, unparsable header dict, unsupported dtype, negative or overflowing sizes, data size not
 * matching the shape) is GG_ERR_FORMAT with a message naming the file; I/O failures are GG_ERR_IO. */
#ifndef GG_NPY_H
#define GG_NPY_H

#include <stddef.h>

#include "gg_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Load a tensor (caller owns it) or NULL with an error recorded. */
gg_tensor *gg_npy_load(const char *path);
/* Parse an in-memory .npy image of `size` bytes; `name` is used in error messages. */
gg_tensor *gg_npy_load_buffer(const void *data, size_t size, const char *name);
/* Write t (any strides) as a C-order <f4 array. */
int gg_npy_save(const char *path, const gg_tensor *t);

#ifdef __cplusplus
}
#endif
#endif
