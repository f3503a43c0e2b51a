/* groupgrad .npy reader and writer (NumPy format 1.0/2.0/3.0): a hand-written parser for the header
 * dict, conversion of the supported dtypes to float32, Fortran-order reordering, and a C-order <f4
 * writer that replaces the destination file only once the whole image is written. */
#include "gg_npy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gg_error.h"
#include "gg_internal.h"
#include "gg_tensor.h"

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
#define NPY_ALIGN 64 /* NumPy pads the preamble + header to a multiple of 64 bytes */

/* Record `status` for the public function `func` as "func: name: <message>"; returns `status`. */
static int npy_fail(int status, const char *func, const char *name, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
static int npy_fail(int status, const char *func, const char *name, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return gg_error_set(status, func, "%s: %s", name, msg);
}

/* The thread-safe (XSI) strerror. */
static const char *npy_strerror(int err, char *buf, size_t size) {
    if (strerror_r(err, buf, size) != 0) snprintf(buf, size, "error %d", err);
    return buf;
}

/* ---------------------------------------------------------------------------------------------------
 * dtypes */

typedef enum { NPY_F4, NPY_F8, NPY_I1, NPY_U1, NPY_I4, NPY_I8 } npy_kind;

static const struct {
    const char *code; /* descr without the byte-order character */
    npy_kind kind;
    size_t size;
} npy_dtypes[] = {
    {"f4", NPY_F4, 4}, {"f8", NPY_F8, 8}, {"i1", NPY_I1, 1},
    {"u1", NPY_U1, 1}, {"i4", NPY_I4, 4}, {"i8", NPY_I8, 8},
};

/* Look up a descr string ("<f4"); -1 with the error recorded if it is not supported. */
static int npy_find_dtype(const char *descr, const char *func, const char *name) {
    char order = descr[0];
    if (order != '<' && order != '>' && order != '=' && order != '|') order = 0;
    const char *code = order ? descr + 1 : descr;
    for (int i = 0; i < (int)(sizeof npy_dtypes / sizeof npy_dtypes[0]); i++) {
        if (strcmp(code, npy_dtypes[i].code) != 0) continue;
        /* One-byte types have no byte order; wider ones must be little-endian ('=' is read as the
         * writer's native order, little-endian on every machine groupgrad targets). */
        if (npy_dtypes[i].size == 1 || order == '<' || order == '=') return i;
        npy_fail(GG_ERR_FORMAT, func, name, "unsupported dtype '%s' (%s)", descr,
                 order == '>' ? "big-endian data are not supported" : "no byte order given");
        return -1;
    }
    npy_fail(GG_ERR_FORMAT, func, name, "unsupported dtype '%s' (supported: <f4 <f8 <i4 <i8 |i1 |u1)", descr);
    return -1;
}

static uint32_t npy_le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t npy_le64(const unsigned char *p) {
    return (uint64_t)npy_le32(p) | (uint64_t)npy_le32(p + 4) << 32;
}

/* One little-endian element of `kind` at p, as a float. */
static float npy_decode(const unsigned char *p, npy_kind kind) {
    switch (kind) {
    case NPY_F4: {
        uint32_t u = npy_le32(p);
        float f;
        memcpy(&f, &u, sizeof f);
        return f;
    }
    case NPY_F8: {
        uint64_t u = npy_le64(p);
        double d;
        memcpy(&d, &u, sizeof d);
        return (float)d;
    }
    case NPY_I1: {
        int8_t v;
        memcpy(&v, p, 1);
        return (float)v;
    }
    case NPY_U1:
        return (float)p[0];
    case NPY_I4: {
        uint32_t u = npy_le32(p);
        int32_t v;
        memcpy(&v, &u, sizeof v);
        return (float)v;
    }
    case NPY_I8: {
        uint64_t u = npy_le64(p);
        int64_t v;
        memcpy(&v, &u, sizeof v);
        return (float)v;
    }
    }
    return 0.0f;
}

/* ---------------------------------------------------------------------------------------------------
 * Header dict: a Python literal such as
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
 * Keys in any order, either quote style, any whitespace, optional trailing comma; each of the three
 * keys exactly once and nothing else. */

typedef struct npy_header {
    char descr[16];
    bool fortran;
    int ndim;
    int64_t shape[GG_MAX_DIMS];
} npy_header;

typedef struct npy_parser {
    const char *s; /* header text (not NUL-terminated) */
    size_t n, i;   /* length, cursor */
    const char *func, *name;
} npy_parser;

/* Record "header dict: <problem> at byte i (near "...")"; returns GG_ERR_FORMAT. */
static int npy_syntax(npy_parser *p, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static int npy_syntax(npy_parser *p, const char *fmt, ...) {
    char what[256], near[24];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    size_t k = 0;
    for (size_t j = p->i; j < p->n && k < 16; j++, k++) {
        unsigned char c = (unsigned char)p->s[j];
        near[k] = (c >= 0x20 && c < 0x7f && c != '"') ? (char)c : '?';
    }
    near[k] = '\0';
    if (p->i >= p->n) return npy_fail(GG_ERR_FORMAT, p->func, p->name, "header dict: %s at its end", what);
    return npy_fail(GG_ERR_FORMAT, p->func, p->name, "header dict: %s at byte %zu (near \"%s\")", what, p->i,
                    near);
}

static void npy_skip_ws(npy_parser *p) {
    while (p->i < p->n) {
        char c = p->s[p->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->i++;
    }
}

static bool npy_peek(npy_parser *p, char c) { return p->i < p->n && p->s[p->i] == c; }

static bool npy_is_ident(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* A quoted string without escapes into out (size cap). */
static int npy_parse_string(npy_parser *p, char *out, size_t cap) {
    if (p->i >= p->n || (p->s[p->i] != '\'' && p->s[p->i] != '"')) return npy_syntax(p, "expected a string");
    char quote = p->s[p->i++];
    size_t len = 0;
    while (p->i < p->n && p->s[p->i] != quote) {
        unsigned char c = (unsigned char)p->s[p->i];
        if (c < 0x20 || c >= 0x7f || c == '\\') return npy_syntax(p, "unsupported character in a string");
        if (len + 1 >= cap) return npy_syntax(p, "string too long");
        out[len++] = (char)c;
        p->i++;
    }
    if (p->i >= p->n) return npy_syntax(p, "unterminated string");
    p->i++;
    out[len] = '\0';
    return 0;
}

static int npy_parse_bool(npy_parser *p, bool *out) {
    static const char *const words[2] = {"False", "True"};
    for (int v = 0; v < 2; v++) {
        size_t len = strlen(words[v]);
        if (p->n - p->i >= len && memcmp(p->s + p->i, words[v], len) == 0 &&
            (p->i + len == p->n || !npy_is_ident(p->s[p->i + len]))) {
            p->i += len;
            *out = v;
            return 0;
        }
    }
    return npy_syntax(p, "'fortran_order' must be True or False");
}

/* A non-negative decimal dimension (Python 2 writers may append L). */
static int npy_parse_dim(npy_parser *p, int64_t *out) {
    bool neg = false;
    size_t start = p->i;
    if (npy_peek(p, '-') || npy_peek(p, '+')) neg = p->s[p->i++] == '-';
    if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9') {
        p->i = start;
        return npy_syntax(p, "expected an integer in 'shape'");
    }
    uint64_t v = 0;
    bool too_big = false;
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
        unsigned d = (unsigned)(p->s[p->i++] - '0');
        if (v > ((uint64_t)INT64_MAX - d) / 10) too_big = true;
        else v = v * 10 + d;
    }
    if (npy_peek(p, 'L') || npy_peek(p, 'l')) p->i++;
    if (p->i < p->n && npy_is_ident(p->s[p->i])) return npy_syntax(p, "malformed integer in 'shape'");
    int len = (int)(p->i - start);
    if (neg && (v != 0 || too_big))
        return npy_fail(GG_ERR_FORMAT, p->func, p->name, "negative dimension %.*s in 'shape'", len,
                        p->s + start);
    if (too_big)
        return npy_fail(GG_ERR_FORMAT, p->func, p->name, "dimension %.*s in 'shape' overflows int64",
                        len > 40 ? 40 : len, p->s + start);
    *out = (int64_t)v;
    return 0;
}

/* A tuple of dimensions: (), (3,), (2, 3), (2, 3,). */
static int npy_parse_shape(npy_parser *p, npy_header *h) {
    if (!npy_peek(p, '(')) return npy_syntax(p, "'shape' must be a tuple");
    p->i++;
    h->ndim = 0;
    npy_skip_ws(p);
    if (npy_peek(p, ')')) {
        p->i++;
        return 0;
    }
    for (;;) {
        int64_t d = 0;
        if (npy_parse_dim(p, &d) < 0) return GG_ERR_FORMAT;
        if (h->ndim == GG_MAX_DIMS)
            return npy_fail(GG_ERR_FORMAT, p->func, p->name, "'shape' has more than %d dimensions",
                            GG_MAX_DIMS);
        h->shape[h->ndim++] = d;
        npy_skip_ws(p);
        if (npy_peek(p, ',')) {
            p->i++;
            npy_skip_ws(p);
            if (npy_peek(p, ')')) break;
            continue;
        }
        if (npy_peek(p, ')')) {
            /* (6) is the integer 6 in Python, not a 1-tuple. */
            if (h->ndim == 1) return npy_syntax(p, "'shape' must be a tuple ((6,) not (6))");
            break;
        }
        return npy_syntax(p, "expected ',' or ')' in 'shape'");
    }
    p->i++;
    return 0;
}

static int npy_parse_header(const char *text, size_t n, npy_header *h, const char *func, const char *name) {
    npy_parser p = {text, n, 0, func, name};
    enum { SEEN_DESCR = 1, SEEN_FORTRAN = 2, SEEN_SHAPE = 4 };
    int seen = 0;
    npy_skip_ws(&p);
    if (!npy_peek(&p, '{')) return npy_syntax(&p, "expected '{'");
    p.i++;
    for (;;) {
        npy_skip_ws(&p);
        if (npy_peek(&p, '}')) break;
        char key[32];
        size_t key_at = p.i;
        if (npy_parse_string(&p, key, sizeof key) < 0) return GG_ERR_FORMAT;
        int bit = strcmp(key, "descr") == 0           ? SEEN_DESCR
                  : strcmp(key, "fortran_order") == 0 ? SEEN_FORTRAN
                  : strcmp(key, "shape") == 0         ? SEEN_SHAPE
                                                      : 0;
        if (bit == 0 || (seen & bit)) {
            p.i = key_at;
            return npy_syntax(&p, "%s key '%s'", bit ? "duplicate" : "unknown", key);
        }
        seen |= bit;
        npy_skip_ws(&p);
        if (!npy_peek(&p, ':')) return npy_syntax(&p, "expected ':' after '%s'", key);
        p.i++;
        npy_skip_ws(&p);
        int rc;
        if (bit == SEEN_DESCR) {
            if (npy_peek(&p, '['))
                return npy_fail(GG_ERR_FORMAT, func, name,
                                "unsupported dtype (structured arrays are not supported)");
            rc = npy_parse_string(&p, h->descr, sizeof h->descr);
        } else if (bit == SEEN_FORTRAN) {
            rc = npy_parse_bool(&p, &h->fortran);
        } else {
            rc = npy_parse_shape(&p, h);
        }
        if (rc < 0) return GG_ERR_FORMAT;
        npy_skip_ws(&p);
        if (npy_peek(&p, ',')) {
            p.i++;
            continue;
        }
        if (!npy_peek(&p, '}')) return npy_syntax(&p, "expected ',' or '}'");
    }
    p.i++;
    npy_skip_ws(&p);
    if (p.i != p.n) return npy_syntax(&p, "unexpected text after the dict");
    if (seen != (SEEN_DESCR | SEEN_FORTRAN | SEEN_SHAPE)) {
        const char *missing = !(seen & SEEN_DESCR)     ? "descr"
                              : !(seen & SEEN_FORTRAN) ? "fortran_order"
                                                       : "shape";
        return npy_fail(GG_ERR_FORMAT, func, name, "header dict has no '%s' key", missing);
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------------
 * Loading */

/* Parse a whole .npy image into *out (caller owns it); a status, with the error recorded for `func`. */
static int npy_parse(const unsigned char *b, size_t size, const char *name, const char *func,
                     gg_tensor **out) {
    if (memcmp(b, NPY_MAGIC, size < NPY_MAGIC_LEN ? size : NPY_MAGIC_LEN) != 0)
        return npy_fail(GG_ERR_FORMAT, func, name, "not a .npy file (bad magic bytes)");
    if (size < NPY_MAGIC_LEN + 2)
        return npy_fail(GG_ERR_FORMAT, func, name, "file is %zu bytes, too short for the .npy preamble",
                        size);
    unsigned major = b[6], minor = b[7];
    if (major < 1 || major > 3 || minor != 0)
        return npy_fail(GG_ERR_FORMAT, func, name,
                        "unsupported .npy format version %u.%u (1.0, 2.0 and 3.0 are supported)", major,
                        minor);
    size_t start = NPY_MAGIC_LEN + 2 + (major == 1 ? 2 : 4); /* header text begins here */
    if (size < start)
        return npy_fail(GG_ERR_FORMAT, func, name, "file is %zu bytes, too short for the .npy preamble",
                        size);
    uint64_t hlen = major == 1 ? (uint64_t)(b[8] | b[9] << 8) : (uint64_t)npy_le32(b + 8);
    if (hlen > size - start)
        return npy_fail(GG_ERR_FORMAT, func, name,
                        "header length %llu runs past the end of the file (%zu bytes)",
                        (unsigned long long)hlen, size);

    npy_header h;
    memset(&h, 0, sizeof h);
    int rc = npy_parse_header((const char *)b + start, (size_t)hlen, &h, func, name);
    if (rc < 0) return rc;
    int dt = npy_find_dtype(h.descr, func, name);
    if (dt < 0) return GG_ERR_FORMAT;

    /* Element count and byte size, refusing anything that overflows int64 or size_t. As in NumPy, the
     * product of the non-zero sizes must fit even when a zero makes the array empty (strides need it). */
    char shape_str[256];
    gg_shape_str(h.ndim, h.shape, shape_str, sizeof shape_str);
    bool has_zero = false;
    int64_t numel = 1;
    size_t isize = npy_dtypes[dt].size;
    for (int d = 0; d < h.ndim; d++) {
        int64_t n = h.shape[d] ? h.shape[d] : 1;
        has_zero |= h.shape[d] == 0;
        if (numel > INT64_MAX / n || (uint64_t)(numel * n) > SIZE_MAX / isize ||
            (uint64_t)(numel * n) > SIZE_MAX / sizeof(float))
            return npy_fail(GG_ERR_FORMAT, func, name, "shape %s has too many elements", shape_str);
        numel *= n;
    }
    if (has_zero) numel = 0;
    size_t need = (size_t)numel * isize;
    size_t have = size - start - (size_t)hlen;
    if (have < need)
        return npy_fail(GG_ERR_FORMAT, func, name,
                        "truncated data: shape %s of %s needs %zu bytes, %zu follow the header", shape_str,
                        h.descr, need, have);
    if (have > need)
        return npy_fail(GG_ERR_FORMAT, func, name,
                        "data size mismatch: shape %s of %s needs %zu bytes, %zu follow the header "
                        "(%zu extra)",
                        shape_str, h.descr, need, have, have - need);

    gg_tensor *t = gg_tensor_empty(h.ndim, h.shape);
    if (!t) return gg_last_status();
    float *dst = gg_tensor_data(t);
    const unsigned char *src = b + start + hlen;
    npy_kind kind = npy_dtypes[dt].kind;
    if (!h.fortran || h.ndim < 2) {
        for (int64_t k = 0; k < numel; k++) dst[k] = npy_decode(src + (size_t)k * isize, kind);
        *out = t;
        return GG_OK;
    }
    /* Fortran order: the file walks the indices first-fastest; scatter each element to its C offset. */
    int64_t cstride[GG_MAX_DIMS], idx[GG_MAX_DIMS] = {0}, off = 0;
    cstride[h.ndim - 1] = 1;
    for (int d = h.ndim - 2; d >= 0; d--) cstride[d] = cstride[d + 1] * h.shape[d + 1];
    for (int64_t k = 0; k < numel; k++) {
        dst[off] = npy_decode(src + (size_t)k * isize, kind);
        for (int d = 0; d < h.ndim; d++) {
            off += cstride[d];
            if (++idx[d] < h.shape[d]) break;
            off -= cstride[d] * h.shape[d];
            idx[d] = 0;
        }
    }
    *out = t;
    return GG_OK;
}

gg_tensor *gg_npy_load_buffer(const void *data, size_t size, const char *name) {
    static const unsigned char empty[1] = {0};
    gg_tensor *t = NULL;
    if (!name) name = "<buffer>";
    if (!data && size > 0) npy_fail(GG_ERR_ARG, __func__, name, "data is NULL");
    else npy_parse(data ? data : empty, size, name, __func__, &t);
    return t;
}

/* Read the whole file into a malloc'ed buffer; the size from fstat is only a first guess (the file may be
 * a pipe or grow). */
static int npy_read_file(FILE *f, const char *path, unsigned char **out, size_t *out_len) {
    char err[128];
    size_t cap = 4096, len = 0;
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
        (uintmax_t)st.st_size < SIZE_MAX / 2)
        cap = (size_t)st.st_size + 1; /* +1: reaching EOF needs no reallocation */
    unsigned char *buf = malloc(cap);
    if (!buf) return npy_fail(GG_ERR_NOMEM, "gg_npy_load", path, "cannot allocate %zu bytes to read it", cap);
    for (;;) {
        if (len == cap) {
            unsigned char *bigger = cap <= SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
            if (!bigger) {
                free(buf);
                return npy_fail(GG_ERR_NOMEM, "gg_npy_load", path, "cannot allocate memory to read it");
            }
            buf = bigger;
            cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (ferror(f)) {
            int e = errno;
            free(buf);
            return npy_fail(GG_ERR_IO, "gg_npy_load", path, "read failed: %s",
                            npy_strerror(e, err, sizeof err));
        }
        if (got == 0 || feof(f)) break;
    }
    *out = buf;
    *out_len = len;
    return GG_OK;
}

gg_tensor *gg_npy_load(const char *path) {
    char err[128];
    if (!path) {
        GG_FAIL(GG_ERR_ARG, "path is NULL");
        return NULL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        npy_fail(GG_ERR_IO, __func__, path, "cannot open: %s", npy_strerror(errno, err, sizeof err));
        return NULL;
    }
    unsigned char *buf = NULL;
    size_t len = 0;
    int rc = npy_read_file(f, path, &buf, &len);
    fclose(f);
    gg_tensor *t = NULL;
    if (rc == GG_OK) npy_parse(buf, len, path, __func__, &t);
    free(buf);
    return t;
}

/* ---------------------------------------------------------------------------------------------------
 * Saving */

/* Write the elements of t in row-major order as little-endian float32, through a fixed stack buffer. */
static int npy_write_data(FILE *f, const gg_tensor *t) {
    unsigned char chunk[16384];
    size_t used = 0;
    const float *base = gg_tensor_data(t);
    int nd = t->ndim;
    int64_t inner = nd ? t->shape[nd - 1] : 1, istride = nd ? t->stride[nd - 1] : 0;
    int64_t idx[GG_MAX_DIMS] = {0};
    int64_t rows = inner ? t->numel / inner : 0;
    for (int64_t r = 0; r < rows; r++) {
        int64_t off = 0;
        for (int d = 0; d < nd - 1; d++) off += idx[d] * t->stride[d];
        for (int64_t j = 0; j < inner; j++) {
            float v = base[off + j * istride];
            uint32_t u;
            memcpy(&u, &v, sizeof u);
            unsigned char *p = chunk + used;
            p[0] = (unsigned char)u, p[1] = (unsigned char)(u >> 8);
            p[2] = (unsigned char)(u >> 16), p[3] = (unsigned char)(u >> 24);
            used += 4;
            if (used == sizeof chunk) {
                if (fwrite(chunk, 1, used, f) != used) return -1;
                used = 0;
            }
        }
        for (int d = nd - 2; d >= 0; d--) {
            if (++idx[d] < t->shape[d]) break;
            idx[d] = 0;
        }
    }
    return used && fwrite(chunk, 1, used, f) != used ? -1 : 0;
}

/* Preamble + header for a C-order <f4 array of t's shape: version 1.0 unless the header needs 2.0. */
static size_t npy_make_header(const gg_tensor *t, char *out, size_t cap) {
    char dict[400];
    int n = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    for (int d = 0; d < t->ndim; d++)
        n += snprintf(dict + n, sizeof dict - (size_t)n, d ? ", %lld" : "%lld", (long long)t->shape[d]);
    n += snprintf(dict + n, sizeof dict - (size_t)n, "%s), }", t->ndim == 1 ? "," : "");
    size_t dlen = (size_t)n;
    size_t pre = NPY_MAGIC_LEN + 2 + 2;
    size_t total = (pre + dlen + 1 + NPY_ALIGN - 1) / NPY_ALIGN * NPY_ALIGN;
    if (total - pre > 65535) { /* never at rank <= 8, kept for the format's sake */
        pre = NPY_MAGIC_LEN + 2 + 4;
        total = (pre + dlen + 1 + NPY_ALIGN - 1) / NPY_ALIGN * NPY_ALIGN;
    }
    if (total > cap) return 0;
    size_t hlen = total - pre;
    memcpy(out, NPY_MAGIC, NPY_MAGIC_LEN);
    out[6] = pre == 10 ? 1 : 2;
    out[7] = 0;
    for (size_t k = 0; k < pre - 8; k++) out[8 + k] = (char)(hlen >> (8 * k));
    memcpy(out + pre, dict, dlen);
    memset(out + pre + dlen, ' ', hlen - dlen - 1);
    out[total - 1] = '\n';
    return total;
}

static atomic_uint npy_tmp_counter;

int gg_npy_save(const char *path, const gg_tensor *t) {
    char err[128];
    if (!t) return gg__null_arg(__func__, "t"); /* sticky: keeps the error that produced the NULL */
    if (!path) return GG_FAIL(GG_ERR_ARG, "path is NULL");
    if (t->ndim < 0 || t->ndim > GG_MAX_DIMS)
        return npy_fail(GG_ERR_ARG, __func__, path, "tensor has invalid rank %d", t->ndim);
    char header[512];
    size_t hsize = npy_make_header(t, header, sizeof header);
    if (hsize == 0) return npy_fail(GG_ERR_ARG, __func__, path, "header does not fit"); /* cannot happen */

    /* A regular (or not yet existing) file is written under a temporary name in the same directory and
     * renamed over `path` at the end, so a failed save leaves any previous file intact. Anything else
     * (a symbolic link, a device, a FIFO), or a name too long for the suffix, is written in place. */
    struct stat st;
    bool in_place = lstat(path, &st) == 0 && !S_ISREG(st.st_mode);
    char *tmp = NULL;
    FILE *f = NULL;
    if (!in_place) {
        size_t cap = strlen(path) + 64;
        tmp = malloc(cap);
        if (!tmp) return npy_fail(GG_ERR_NOMEM, __func__, path, "cannot allocate a file name");
        int fd = -1;
        for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
            snprintf(tmp, cap, "%s.tmp-%ld-%u", path, (long)getpid(), atomic_fetch_add(&npy_tmp_counter, 1u));
            fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0666);
            if (fd < 0 && errno != EEXIST) break;
        }
        if (fd >= 0) {
            f = fdopen(fd, "wb");
            if (!f) {
                int e = errno;
                close(fd);
                unlink(tmp);
                errno = e;
            }
        } else if (errno == ENAMETOOLONG) {
            free(tmp);
            tmp = NULL;
            in_place = true;
        }
    }
    if (in_place) f = fopen(path, "wb");
    if (!f) {
        int e = errno;
        free(tmp);
        return npy_fail(GG_ERR_IO, __func__, path, "cannot create file: %s",
                        npy_strerror(e, err, sizeof err));
    }

    int e = 0;
    errno = 0;
    if (fwrite(header, 1, hsize, f) != hsize || npy_write_data(f, t) < 0 || fflush(f) != 0)
        e = errno ? errno : EIO;
    if (fclose(f) != 0 && !e) e = errno ? errno : EIO;
    if (!e && tmp && rename(tmp, path) != 0) e = errno;
    if (e) {
        if (tmp) unlink(tmp);
        free(tmp);
        return npy_fail(GG_ERR_IO, __func__, path, "write failed: %s", npy_strerror(e, err, sizeof err));
    }
    free(tmp);
    return GG_OK;
}
