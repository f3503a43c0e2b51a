/* groupgrad checkpoints as safetensors files: registration of named tensors and bound integers, a writer
 * (jansson header, atomic replace) and a loader that validates the whole file before writing into any
 * tensor. */
#include "gg_checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gg_error.h"
#include "gg_internal.h"

#define CK_MAX_HEADER 100000000ull /* the reference implementation's limit on N */
#define CK_META_KEY "__metadata__"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define CK_BIG_ENDIAN 1
#else
#define CK_BIG_ENDIAN 0
#endif

/* safetensors dtypes and their element sizes; only F32 is read into tensors, the others are recognised so
 * that a file holding them is reported as unsupported rather than corrupt. */
static const struct {
    const char *name;
    unsigned size;
} CK_DTYPES[] = {
    {"F32", 4}, {"F64", 8}, {"F16", 2}, {"BF16", 2}, {"I64", 8},  {"I32", 4},     {"I16", 2},     {"I8", 1},
    {"U64", 8}, {"U32", 4}, {"U16", 2}, {"U8", 1},   {"BOOL", 1}, {"F8_E5M2", 1}, {"F8_E4M3", 1},
};
#define CK_N_DTYPES ((int)(sizeof CK_DTYPES / sizeof CK_DTYPES[0]))
#define CK_F32 0

typedef struct ck_tensor {
    char *name;
    gg_tensor *t; /* a reference held by the checkpoint */
    bool loaded;
} ck_tensor;

typedef enum { BIND_I64, BIND_U64 } bind_kind;

typedef struct ck_bind {
    char *key;
    bind_kind kind;
    void *var;
} ck_bind;

typedef struct ck_meta {
    char *key, *value;
} ck_meta;

struct gg_checkpoint {
    ck_tensor *tensors;
    int n_tensors, cap_tensors;
    json_t *index; /* tensor name -> its position in tensors[] */
    ck_bind *binds;
    int n_binds, cap_binds;
    ck_meta *meta; /* sorted by key */
    int n_meta, cap_meta;
};

/* Record `status` for `func` as "func: path: <message>"; returns status. */
static int ck_fail(int status, const char *func, const char *path, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
static int ck_fail(int status, const char *func, const char *path, const char *fmt, ...) {
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return gg_error_set(status, func, "%s: %s", path, msg);
}

static const char *ck_strerror(int err, char *buf, size_t size) {
    if (strerror_r(err, buf, size) != 0) snprintf(buf, size, "error %d", err);
    return buf;
}

static char *str_dup(const char *s) {
    size_t n = strlen(s) + 1;
    char *c = malloc(n);
    if (c) memcpy(c, s, n);
    return c;
}

/* Grow an array to hold at least `need` elements; false (nothing changed) when out of memory. */
static bool grow(void **arr, int *cap, int need, size_t elem) {
    if (need <= *cap) return true;
    int c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *p = realloc(*arr, elem * (size_t)c);
    if (!p) return false;
    *arr = p;
    *cap = c;
    return true;
}

static bool valid_utf8(const char *s) {
    json_t *j = json_string(s); /* jansson validates UTF-8 */
    bool ok = j != NULL;
    json_decref(j);
    return ok;
}

/* ---------------------------------------------------------------------------------------------------
 * construction and registration */

gg_checkpoint *gg_checkpoint_new(void) {
    gg_checkpoint *ck = calloc(1, sizeof *ck);
    if (ck && !(ck->index = json_object())) {
        free(ck);
        ck = NULL;
    }
    if (!ck) GG_FAIL(GG_ERR_NOMEM, "cannot allocate a checkpoint");
    return ck;
}

static void meta_clear(ck_meta *m, int n) {
    for (int i = 0; i < n; i++) free(m[i].key), free(m[i].value);
}

void gg_checkpoint_free(gg_checkpoint *ck) {
    if (!ck) return;
    for (int i = 0; i < ck->n_tensors; i++) free(ck->tensors[i].name), gg_tensor_free(ck->tensors[i].t);
    for (int i = 0; i < ck->n_binds; i++) free(ck->binds[i].key);
    meta_clear(ck->meta, ck->n_meta);
    free(ck->tensors);
    free(ck->binds);
    free(ck->meta);
    json_decref(ck->index);
    free(ck);
}

static int find_bind(const gg_checkpoint *ck, const char *key) {
    for (int i = 0; i < ck->n_binds; i++)
        if (strcmp(ck->binds[i].key, key) == 0) return i;
    return -1;
}

/* Position of key in the sorted metadata, or -(insertion point) - 1. */
static int find_meta(const ck_meta *m, int n, const char *key) {
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(m[mid].key, key);
        if (c == 0) return mid;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return -lo - 1;
}

static int check_name(const gg_checkpoint *ck, const char *name, const char *what, const char *func) {
    if (!ck) return gg_error_set(GG_ERR_ARG, func, "ck is NULL");
    if (!name || !name[0]) return gg_error_set(GG_ERR_ARG, func, "%s is NULL or empty", what);
    if (strcmp(name, CK_META_KEY) == 0)
        return gg_error_set(GG_ERR_ARG, func, "'%s' is reserved", CK_META_KEY);
    if (!valid_utf8(name)) return gg_error_set(GG_ERR_ARG, func, "%s '%s' is not valid UTF-8", what, name);
    return GG_OK;
}

static int add_tensor(gg_checkpoint *ck, const char *name, gg_tensor *t, const char *func) {
    int st = check_name(ck, name, "tensor name", func);
    if (st) return st;
    if (!t) return gg__null_arg(func, "t");
    if (json_object_get(ck->index, name))
        return gg_error_set(GG_ERR_ARG, func, "a tensor named '%s' is already registered", name);
    if (!grow((void **)&ck->tensors, &ck->cap_tensors, ck->n_tensors + 1, sizeof *ck->tensors))
        return gg_error_set(GG_ERR_NOMEM, func, "cannot grow the tensor table");
    char *copy = str_dup(name);
    if (!copy || json_object_set_new(ck->index, name, json_integer(ck->n_tensors)) != 0) {
        free(copy);
        return gg_error_set(GG_ERR_NOMEM, func, "cannot register '%s'", name);
    }
    ck->tensors[ck->n_tensors++] = (ck_tensor){.name = copy, .t = gg_tensor_retain(t)};
    return GG_OK;
}

int gg_checkpoint_add(gg_checkpoint *ck, const char *name, gg_tensor *t) {
    return add_tensor(ck, name, t, __func__);
}

static int add_bind(gg_checkpoint *ck, const char *key, bind_kind kind, void *var, const char *func) {
    int st = check_name(ck, key, "key", func);
    if (st) return st;
    if (!var) return gg_error_set(GG_ERR_ARG, func, "variable for '%s' is NULL", key);
    if (find_bind(ck, key) >= 0) return gg_error_set(GG_ERR_ARG, func, "key '%s' is already bound", key);
    if (find_meta(ck->meta, ck->n_meta, key) >= 0)
        return gg_error_set(GG_ERR_ARG, func, "key '%s' is already set as metadata", key);
    if (!grow((void **)&ck->binds, &ck->cap_binds, ck->n_binds + 1, sizeof *ck->binds))
        return gg_error_set(GG_ERR_NOMEM, func, "cannot grow the binding table");
    char *copy = str_dup(key);
    if (!copy) return gg_error_set(GG_ERR_NOMEM, func, "cannot copy '%s'", key);
    ck->binds[ck->n_binds++] = (ck_bind){.key = copy, .kind = kind, .var = var};
    return GG_OK;
}

int gg_checkpoint_bind_i64(gg_checkpoint *ck, const char *key, int64_t *var) {
    return add_bind(ck, key, BIND_I64, var, __func__);
}

int gg_checkpoint_bind_u64(gg_checkpoint *ck, const char *key, uint64_t *var) {
    return add_bind(ck, key, BIND_U64, var, __func__);
}

/* Undo registrations back to (n_tensors, n_binds). */
static void rollback(gg_checkpoint *ck, int n_tensors, int n_binds) {
    while (ck->n_tensors > n_tensors) {
        ck_tensor *e = &ck->tensors[--ck->n_tensors];
        json_object_del(ck->index, e->name);
        free(e->name);
        gg_tensor_free(e->t);
    }
    while (ck->n_binds > n_binds) free(ck->binds[--ck->n_binds].key);
}

/* prefix + name in a buffer that grows as needed (*buf, *cap); NULL when out of memory. */
static const char *join(char **buf, size_t *cap, const char *prefix, const char *name) {
    size_t np = prefix ? strlen(prefix) : 0, nn = strlen(name);
    if (np + nn + 1 > *cap) {
        char *b = realloc(*buf, np + nn + 1);
        if (!b) return NULL;
        *buf = b;
        *cap = np + nn + 1;
    }
    if (np) memcpy(*buf, prefix, np);
    memcpy(*buf + np, name, nn + 1);
    return *buf;
}

int gg_checkpoint_add_list(gg_checkpoint *ck, const char *prefix, gg_tensor *const *ts,
                           const char *const *names, int n) {
    if (!ck) return GG_FAIL(GG_ERR_ARG, "ck is NULL");
    if (n < 0 || (n > 0 && (!ts || !names))) return GG_FAIL(GG_ERR_ARG, "ts or names is NULL (n = %d)", n);
    int nt = ck->n_tensors, nb = ck->n_binds, st = GG_OK;
    char *buf = NULL;
    size_t cap = 0;
    for (int i = 0; i < n && st == GG_OK; i++) {
        if (!names[i]) {
            st = GG_FAIL(GG_ERR_ARG, "names[%d] is NULL", i);
            break;
        }
        const char *full = join(&buf, &cap, prefix, names[i]);
        st = full ? add_tensor(ck, full, ts[i], __func__) : GG_FAIL(GG_ERR_NOMEM, "cannot build a name");
    }
    free(buf);
    if (st) rollback(ck, nt, nb);
    return st;
}

int gg_checkpoint_add_optim(gg_checkpoint *ck, gg_optim *opt, const char *prefix) {
    if (!ck || !opt) return GG_FAIL(GG_ERR_ARG, "%s is NULL", ck ? "opt" : "ck");
    if (!prefix) prefix = "optim.";
    int nt = ck->n_tensors, nb = ck->n_binds, st = GG_OK;
    char *pre = NULL, *buf = NULL;
    size_t pcap = 0, cap = 0;
    if (!join(&pre, &pcap, prefix, "state.")) return GG_FAIL(GG_ERR_NOMEM, "cannot build a name");
    for (int i = 0; i < gg_optim_num_state(opt) && st == GG_OK; i++) {
        gg_optim_state_entry e;
        gg_optim_state(opt, i, &e);
        const char *full = join(&buf, &cap, pre, e.name);
        if (!full) st = GG_FAIL(GG_ERR_NOMEM, "cannot build a name");
        else if (e.tensor) st = add_tensor(ck, full, e.tensor, __func__);
        else st = add_bind(ck, full, BIND_I64, e.counter, __func__);
    }
    free(pre);
    free(buf);
    if (st) rollback(ck, nt, nb);
    return st;
}

/* ---------------------------------------------------------------------------------------------------
 * metadata */

/* Insert or replace key -> value in a sorted array; GG_OK or GG_ERR_NOMEM (nothing changed). */
static int meta_put(ck_meta **m, int *n, int *cap, const char *key, const char *value) {
    int pos = find_meta(*m, *n, key);
    char *v = str_dup(value);
    if (!v) return GG_ERR_NOMEM;
    if (pos >= 0) {
        free((*m)[pos].value);
        (*m)[pos].value = v;
        return GG_OK;
    }
    pos = -pos - 1;
    char *k = str_dup(key);
    if (!k || !grow((void **)m, cap, *n + 1, sizeof **m)) {
        free(k);
        free(v);
        return GG_ERR_NOMEM;
    }
    memmove(*m + pos + 1, *m + pos, sizeof **m * (size_t)(*n - pos));
    (*m)[pos] = (ck_meta){.key = k, .value = v};
    (*n)++;
    return GG_OK;
}

static int set_meta(gg_checkpoint *ck, const char *key, const char *value, const char *func) {
    int st = check_name(ck, key, "key", func);
    if (st) return st;
    if (!value) return gg_error_set(GG_ERR_ARG, func, "value for '%s' is NULL", key);
    if (!valid_utf8(value)) return gg_error_set(GG_ERR_ARG, func, "value for '%s' is not valid UTF-8", key);
    if (find_bind(ck, key) >= 0)
        return gg_error_set(GG_ERR_ARG, func, "key '%s' is bound to a variable; set the variable instead",
                            key);
    if (meta_put(&ck->meta, &ck->n_meta, &ck->cap_meta, key, value))
        return gg_error_set(GG_ERR_NOMEM, func, "cannot store metadata '%s'", key);
    return GG_OK;
}

int gg_checkpoint_set_meta(gg_checkpoint *ck, const char *key, const char *value) {
    return set_meta(ck, key, value, __func__);
}

int gg_checkpoint_set_meta_i64(gg_checkpoint *ck, const char *key, int64_t value) {
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, value);
    return set_meta(ck, key, buf, __func__);
}

int gg_checkpoint_set_meta_u64(gg_checkpoint *ck, const char *key, uint64_t value) {
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRIu64, value);
    return set_meta(ck, key, buf, __func__);
}

const char *gg_checkpoint_get_meta(const gg_checkpoint *ck, const char *key) {
    if (!ck || !key) return NULL;
    int pos = find_meta(ck->meta, ck->n_meta, key);
    return pos >= 0 ? ck->meta[pos].value : NULL;
}

/* Decimal integer, optional '-' only when signed, no spaces, the whole string. */
static bool parse_i64(const char *s, int64_t *out) {
    if (!s || !*s || !(*s == '-' || (*s >= '0' && *s <= '9'))) return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || end == s || (*s == '-' && end == s + 1)) return false;
    *out = (int64_t)v;
    return true;
}

static bool parse_u64(const char *s, uint64_t *out) {
    if (!s || !(*s >= '0' && *s <= '9')) return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return false;
    *out = (uint64_t)v;
    return true;
}

int gg_checkpoint_get_meta_i64(const gg_checkpoint *ck, const char *key, int64_t *out) {
    if (!ck || !key || !out) return GG_FAIL(GG_ERR_ARG, "ck, key or out is NULL");
    const char *v = gg_checkpoint_get_meta(ck, key);
    if (!v) return GG_FAIL(GG_ERR_INDEX, "no metadata key '%s'", key);
    if (!parse_i64(v, out))
        return GG_FAIL(GG_ERR_FORMAT, "metadata '%s' = \"%s\" is not a 64-bit integer", key, v);
    return GG_OK;
}

int gg_checkpoint_get_meta_u64(const gg_checkpoint *ck, const char *key, uint64_t *out) {
    if (!ck || !key || !out) return GG_FAIL(GG_ERR_ARG, "ck, key or out is NULL");
    const char *v = gg_checkpoint_get_meta(ck, key);
    if (!v) return GG_FAIL(GG_ERR_INDEX, "no metadata key '%s'", key);
    if (!parse_u64(v, out))
        return GG_FAIL(GG_ERR_FORMAT, "metadata '%s' = \"%s\" is not an unsigned 64-bit integer", key, v);
    return GG_OK;
}

int gg_checkpoint_num_meta(const gg_checkpoint *ck) { return ck ? ck->n_meta : 0; }

int gg_checkpoint_meta_at(const gg_checkpoint *ck, int i, const char **key, const char **value) {
    if (!ck) return GG_FAIL(GG_ERR_ARG, "ck is NULL");
    if (i < 0 || i >= ck->n_meta)
        return GG_FAIL(GG_ERR_INDEX, "metadata entry %d out of range [0, %d)", i, ck->n_meta);
    if (key) *key = ck->meta[i].key;
    if (value) *value = ck->meta[i].value;
    return GG_OK;
}

/* ---------------------------------------------------------------------------------------------------
 * tensor access */

int gg_checkpoint_num_tensors(const gg_checkpoint *ck) { return ck ? ck->n_tensors : 0; }

const char *gg_checkpoint_name_at(const gg_checkpoint *ck, int i) {
    return ck && i >= 0 && i < ck->n_tensors ? ck->tensors[i].name : NULL;
}

gg_tensor *gg_checkpoint_tensor_at(const gg_checkpoint *ck, int i) {
    return ck && i >= 0 && i < ck->n_tensors ? ck->tensors[i].t : NULL;
}

static int tensor_index(const gg_checkpoint *ck, const char *name) {
    json_t *j = name ? json_object_get(ck->index, name) : NULL;
    return j ? (int)json_integer_value(j) : -1;
}

gg_tensor *gg_checkpoint_get(const gg_checkpoint *ck, const char *name) {
    int i = ck ? tensor_index(ck, name) : -1;
    return i >= 0 ? ck->tensors[i].t : NULL;
}

bool gg_checkpoint_was_loaded(const gg_checkpoint *ck, int i) {
    return ck && i >= 0 && i < ck->n_tensors && ck->tensors[i].loaded;
}

/* ---------------------------------------------------------------------------------------------------
 * save */

/* n floats to f in little-endian order. */
static bool write_floats(FILE *f, const float *x, size_t n) {
#if CK_BIG_ENDIAN
    unsigned char chunk[4096];
    while (n > 0) {
        size_t m = n < sizeof chunk / 4 ? n : sizeof chunk / 4;
        for (size_t i = 0; i < m; i++) {
            unsigned char b[4];
            memcpy(b, &x[i], 4);
            for (int k = 0; k < 4; k++) chunk[4 * i + (size_t)k] = b[3 - k];
        }
        if (fwrite(chunk, 4, m, f) != m) return false;
        x += m;
        n -= m;
    }
    return true;
#else
    return n == 0 || fwrite(x, sizeof *x, n, f) == n;
#endif
}

static int cmp_names(const void *a, const void *b) {
    const ck_tensor *x = *(const ck_tensor *const *)a, *y = *(const ck_tensor *const *)b;
    return strcmp(x->name, y->name);
}

/* The JSON header for the tensors in `order` (by name) and the metadata, padded with spaces to a multiple
 * of 8 bytes. Returns a malloc'd string (length in *len) or NULL with the error recorded. */
static char *build_header(const gg_checkpoint *ck, ck_tensor *const *order, size_t *len, const char *func,
                          const char *path) {
    json_t *root = json_object(), *meta = json_object();
    bool ok = root && meta;
    uint64_t off = 0;
    for (int i = 0; ok && i < ck->n_tensors; i++) {
        const gg_tensor *t = order[i]->t;
        json_t *shape = json_array(), *offs = json_array(), *e = json_object();
        ok = shape && offs && e;
        for (int d = 0; ok && d < t->ndim; d++)
            ok = json_array_append_new(shape, json_integer(t->shape[d])) == 0;
        uint64_t bytes = (uint64_t)t->numel * 4u;
        ok = ok && json_array_append_new(offs, json_integer((json_int_t)off)) == 0 &&
             json_array_append_new(offs, json_integer((json_int_t)(off + bytes))) == 0 &&
             json_object_set_new(e, "dtype", json_string("F32")) == 0 &&
             json_object_set(e, "shape", shape) == 0 && json_object_set(e, "data_offsets", offs) == 0 &&
             json_object_set(root, order[i]->name, e) == 0;
        json_decref(shape), json_decref(offs), json_decref(e);
        off += bytes;
    }
    char buf[32];
    for (int i = 0; ok && i < ck->n_meta; i++)
        ok = json_object_set_new(meta, ck->meta[i].key, json_string(ck->meta[i].value)) == 0;
    for (int i = 0; ok && i < ck->n_binds; i++) {
        const ck_bind *b = &ck->binds[i];
        if (b->kind == BIND_I64) snprintf(buf, sizeof buf, "%" PRId64, *(const int64_t *)b->var);
        else snprintf(buf, sizeof buf, "%" PRIu64, *(const uint64_t *)b->var);
        ok = json_object_set_new(meta, b->key, json_string(buf)) == 0;
    }
    if (ok && json_object_size(meta) > 0) ok = json_object_set(root, CK_META_KEY, meta) == 0;
    char *text = ok ? json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(meta);
    json_decref(root);
    if (!text) {
        ck_fail(GG_ERR_NOMEM, func, path, "cannot build the JSON header");
        return NULL;
    }
    size_t n = strlen(text), padded = (n + 7) / 8 * 8;
    char *out = realloc(text, padded + 1);
    if (!out) {
        free(text);
        ck_fail(GG_ERR_NOMEM, func, path, "cannot build the JSON header");
        return NULL;
    }
    memset(out + n, ' ', padded - n);
    out[padded] = '\0';
    *len = padded;
    return out;
}

static atomic_uint ck_tmp_counter;

/* Create a new temporary file next to path; its name in *tmp (malloc'd). */
static FILE *open_temp(const char *path, char **tmp, int *err) {
    size_t cap = strlen(path) + 64;
    *tmp = malloc(cap);
    if (!*tmp) {
        *err = ENOMEM;
        return NULL;
    }
    int fd = -1;
    for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
        snprintf(*tmp, cap, "%s.tmp-%ld-%u", path, (long)getpid(), atomic_fetch_add(&ck_tmp_counter, 1u));
        fd = open(*tmp, O_WRONLY | O_CREAT | O_EXCL, 0666);
        if (fd < 0 && errno != EEXIST) break;
    }
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!f) {
        *err = errno;
        if (fd >= 0) close(fd), unlink(*tmp);
        free(*tmp);
        *tmp = NULL;
    }
    return f;
}

/* fsync the directory holding path, so that the rename itself is durable (best effort). */
static void sync_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else if ((size_t)(slash - path) < sizeof dir)
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    else return;
    int fd = open(dir, O_RDONLY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

int gg_checkpoint_save(const gg_checkpoint *ck, const char *path) {
    char err[128];
    if (!ck) return GG_FAIL(GG_ERR_ARG, "ck is NULL");
    if (!path || !path[0]) return GG_FAIL(GG_ERR_ARG, "path is NULL or empty");
    ck_tensor **order = malloc(sizeof *order * (size_t)(ck->n_tensors ? ck->n_tensors : 1));
    if (!order) return ck_fail(GG_ERR_NOMEM, __func__, path, "cannot allocate %d slots", ck->n_tensors);
    for (int i = 0; i < ck->n_tensors; i++) order[i] = &ck->tensors[i];
    qsort(order, (size_t)ck->n_tensors, sizeof *order, cmp_names);
    size_t hlen = 0;
    char *header = build_header(ck, order, &hlen, __func__, path);
    if (!header) {
        free(order);
        return gg_last_status();
    }

    char *tmp = NULL;
    int e = 0;
    FILE *f = open_temp(path, &tmp, &e);
    if (!f) {
        free(header);
        free(order);
        return ck_fail(GG_ERR_IO, __func__, path, "cannot create a temporary file next to it: %s",
                       ck_strerror(e, err, sizeof err));
    }
    unsigned char len8[8];
    for (int k = 0; k < 8; k++) len8[k] = (unsigned char)((uint64_t)hlen >> (8 * k));
    int st = GG_OK;
    errno = 0;
    if (fwrite(len8, 1, 8, f) != 8 || fwrite(header, 1, hlen, f) != hlen) e = errno ? errno : EIO;
    for (int i = 0; !e && st == GG_OK && i < ck->n_tensors; i++) {
        gg_tensor *c = gg_tensor_contiguous(order[i]->t); /* the tensor itself when already contiguous */
        if (!c) st = gg_last_status();
        else if (!write_floats(f, gg_tensor_data(c), (size_t)c->numel)) e = errno ? errno : EIO;
        gg_tensor_free(c);
    }
    if (!e && st == GG_OK && (fflush(f) != 0 || fsync(fileno(f)) != 0)) e = errno ? errno : EIO;
    if (fclose(f) != 0 && !e) e = errno ? errno : EIO;
    if (!e && st == GG_OK && rename(tmp, path) != 0) e = errno;
    if (e || st) unlink(tmp);
    else sync_dir(path);
    free(tmp);
    free(header);
    free(order);
    if (e) return ck_fail(GG_ERR_IO, __func__, path, "write failed: %s", ck_strerror(e, err, sizeof err));
    return st;
}

/* ---------------------------------------------------------------------------------------------------
 * load: parse and validate a file, then match it against the registered tensors */

typedef struct file_entry {
    const char *name; /* a key of the parsed header (lives as long as the root) */
    int dtype;        /* index into CK_DTYPES */
    int ndim;
    int64_t shape[GG_MAX_DIMS];
    uint64_t begin, end; /* byte range relative to the start of the data */
    int target;          /* registered tensor index, or -1 */
} file_entry;

typedef struct parsed_file {
    FILE *f; /* positioned at the start of the data */
    json_t *root;
    json_t *meta; /* borrowed from root; NULL when absent */
    file_entry *e;
    int n;
    uint64_t data_size;
} parsed_file;

static void parsed_free(parsed_file *pf) {
    if (pf->f) fclose(pf->f);
    json_decref(pf->root);
    free(pf->e);
    memset(pf, 0, sizeof *pf);
}

static int cmp_range(const void *a, const void *b) {
    const file_entry *x = *(const file_entry *const *)a, *y = *(const file_entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* One tensor entry of the header, checked on its own. */
static int parse_entry(const char *name, json_t *v, file_entry *out, const char *func, const char *path) {
    if (!json_is_object(v))
        return ck_fail(GG_ERR_FORMAT, func, path, "entry '%s' is not a JSON object", name);
    json_t *dt = json_object_get(v, "dtype"), *sh = json_object_get(v, "shape"),
           *off = json_object_get(v, "data_offsets");
    if (!json_is_string(dt) || !json_is_array(sh) || !json_is_array(off))
        return ck_fail(GG_ERR_FORMAT, func, path,
                       "entry '%s' needs \"dtype\" (a string), \"shape\" and \"data_offsets\" (arrays)",
                       name);
    out->name = name;
    out->target = -1;
    out->dtype = -1;
    for (int k = 0; k < CK_N_DTYPES; k++)
        if (strcmp(json_string_value(dt), CK_DTYPES[k].name) == 0) out->dtype = k;
    if (out->dtype < 0)
        return ck_fail(GG_ERR_FORMAT, func, path, "entry '%s' has unknown dtype \"%s\"", name,
                       json_string_value(dt));
    size_t nd = json_array_size(sh);
    if (nd > GG_MAX_DIMS)
        return ck_fail(GG_ERR_UNSUPPORTED, func, path, "entry '%s' has rank %zu; at most %d is supported",
                       name, nd, GG_MAX_DIMS);
    out->ndim = (int)nd;
    uint64_t bytes = CK_DTYPES[out->dtype].size;
    for (size_t d = 0; d < nd; d++) {
        json_t *s = json_array_get(sh, d);
        if (!json_is_integer(s) || json_integer_value(s) < 0)
            return ck_fail(GG_ERR_FORMAT, func, path, "entry '%s': shape[%zu] is not a non-negative integer",
                           name, d);
        out->shape[d] = (int64_t)json_integer_value(s);
        if (__builtin_mul_overflow(bytes, (uint64_t)out->shape[d], &bytes))
            return ck_fail(GG_ERR_FORMAT, func, path, "entry '%s': shape overflows", name);
    }
    if (json_array_size(off) != 2 || !json_is_integer(json_array_get(off, 0)) ||
        !json_is_integer(json_array_get(off, 1)))
        return ck_fail(GG_ERR_FORMAT, func, path, "entry '%s': data_offsets is not [begin, end]", name);
    json_int_t b = json_integer_value(json_array_get(off, 0)), e = json_integer_value(json_array_get(off, 1));
    if (b < 0 || e < b)
        return ck_fail(GG_ERR_FORMAT, func, path,
                       "entry '%s': data_offsets [%lld, %lld] are not 0 <= begin <= end", name, (long long)b,
                       (long long)e);
    out->begin = (uint64_t)b;
    out->end = (uint64_t)e;
    if (out->end - out->begin != bytes) {
        char s[GG_SHAPE_STR_MAX];
        return ck_fail(GG_ERR_FORMAT, func, path,
                       "entry '%s': data_offsets [%lld, %lld] hold %llu bytes, but %s %s needs %llu", name,
                       (long long)b, (long long)e, (unsigned long long)(out->end - out->begin),
                       CK_DTYPES[out->dtype].name, gg_shape_str(out->ndim, out->shape, s, sizeof s),
                       (unsigned long long)bytes);
    }
    return GG_OK;
}

/* Open, read and validate the header and the layout of the data (not the data themselves). */
static int parse_file(const char *path, parsed_file *pf, const char *func) {
    char err[128];
    memset(pf, 0, sizeof *pf);
    if (!path || !path[0]) return gg_error_set(GG_ERR_ARG, func, "path is NULL or empty");
    pf->f = fopen(path, "rb");
    if (!pf->f) return ck_fail(GG_ERR_IO, func, path, "cannot open: %s", ck_strerror(errno, err, sizeof err));
    struct stat sb;
    int stat_ok = fstat(fileno(pf->f), &sb) == 0, e = errno;
    if (!stat_ok || !S_ISREG(sb.st_mode)) {
        parsed_free(pf);
        return ck_fail(GG_ERR_IO, func, path, "%s",
                       stat_ok ? "not a regular file" : ck_strerror(e, err, sizeof err));
    }
    uint64_t size = (uint64_t)sb.st_size;
    unsigned char len8[8];
    if (size < 8 || fread(len8, 1, 8, pf->f) != 8) {
        parsed_free(pf);
        return ck_fail(GG_ERR_FORMAT, func, path,
                       "file is %llu bytes, too short for the 8-byte header length",
                       (unsigned long long)size);
    }
    uint64_t n = 0;
    for (int k = 0; k < 8; k++) n |= (uint64_t)len8[k] << (8 * k);
    if (n > size - 8 || n > CK_MAX_HEADER || n < 2) {
        parsed_free(pf);
        return ck_fail(
            GG_ERR_FORMAT, func, path,
            "header length %llu is invalid: the file has %llu bytes after the length field (header "
            "limit %llu bytes)",
            (unsigned long long)n, (unsigned long long)(size - 8), CK_MAX_HEADER);
    }
    char *text = malloc((size_t)n);
    if (!text) {
        parsed_free(pf);
        return ck_fail(GG_ERR_NOMEM, func, path, "cannot allocate a %llu-byte header", (unsigned long long)n);
    }
    if (fread(text, 1, (size_t)n, pf->f) != (size_t)n) {
        free(text);
        parsed_free(pf);
        return ck_fail(GG_ERR_IO, func, path, "cannot read the %llu-byte header", (unsigned long long)n);
    }
    if (text[0] != '{') {
        free(text);
        parsed_free(pf);
        return ck_fail(GG_ERR_FORMAT, func, path, "header does not start with '{' (not a safetensors file?)");
    }
    json_error_t jerr;
    pf->root = json_loadb(text, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!pf->root) {
        parsed_free(pf);
        return ck_fail(GG_ERR_FORMAT, func, path, "header is not valid JSON: %s (line %d, column %d)",
                       jerr.text, jerr.line, jerr.column);
    }
    pf->data_size = size - 8 - n;

    size_t nkeys = json_object_size(pf->root);
    pf->e = malloc(sizeof *pf->e * (nkeys ? nkeys : 1));
    file_entry **by_range = malloc(sizeof *by_range * (nkeys ? nkeys : 1));
    if (!pf->e || !by_range) {
        free(by_range);
        parsed_free(pf);
        return ck_fail(GG_ERR_NOMEM, func, path, "cannot allocate %zu entries", nkeys);
    }
    const char *key;
    json_t *v;
    int st = GG_OK;
    json_object_foreach(pf->root, key, v) {
        if (strcmp(key, CK_META_KEY) == 0) {
            const char *mk;
            json_t *mv;
            if (!json_is_object(v))
                st = ck_fail(GG_ERR_FORMAT, func, path, "\"%s\" is not a JSON object", CK_META_KEY);
            else json_object_foreach(v, mk, mv) {
                    if (!json_is_string(mv) && st == GG_OK)
                        st = ck_fail(GG_ERR_FORMAT, func, path, "metadata '%s' is not a string", mk);
                }
            pf->meta = v;
        } else {
            st = parse_entry(key, v, &pf->e[pf->n], func, path);
            by_range[pf->n] = &pf->e[pf->n];
            pf->n++;
        }
        if (st) break;
    }
    /* The ranges must tile [0, data_size) exactly. */
    if (st == GG_OK) {
        qsort(by_range, (size_t)pf->n, sizeof *by_range, cmp_range);
        uint64_t at = 0;
        for (int i = 0; i < pf->n && st == GG_OK; i++) {
            const file_entry *x = by_range[i];
            if (x->begin < at)
                st = ck_fail(GG_ERR_FORMAT, func, path,
                             "tensor '%s' [%llu, %llu) overlaps tensor '%s' (ends at %llu)", x->name,
                             (unsigned long long)x->begin, (unsigned long long)x->end, by_range[i - 1]->name,
                             (unsigned long long)at);
            else if (x->begin > at)
                st = ck_fail(GG_ERR_FORMAT, func, path, "data bytes [%llu, %llu) belong to no tensor",
                             (unsigned long long)at, (unsigned long long)x->begin);
            else if (x->end > pf->data_size)
                st = ck_fail(
                    GG_ERR_FORMAT, func, path,
                    "tensor '%s' [%llu, %llu) goes past the end of the %llu-byte data (file truncated?)",
                    x->name, (unsigned long long)x->begin, (unsigned long long)x->end,
                    (unsigned long long)pf->data_size);
            at = x->end;
        }
        if (st == GG_OK && at != pf->data_size)
            st = ck_fail(GG_ERR_FORMAT, func, path,
                         "the tensors cover %llu bytes of data but the file holds %llu",
                         (unsigned long long)at, (unsigned long long)pf->data_size);
    }
    free(by_range);
    if (st) parsed_free(pf);
    return st;
}

/* Read the data section (data_size bytes) into a new buffer (*out, caller frees). */
static int read_data(parsed_file *pf, unsigned char **out, const char *func, const char *path) {
    *out = malloc(pf->data_size ? (size_t)pf->data_size : 1);
    if (!*out)
        return ck_fail(GG_ERR_NOMEM, func, path, "cannot allocate %llu bytes of data",
                       (unsigned long long)pf->data_size);
    if (pf->data_size && fread(*out, 1, (size_t)pf->data_size, pf->f) != (size_t)pf->data_size) {
        free(*out);
        *out = NULL;
        return ck_fail(GG_ERR_IO, func, path, "cannot read %llu bytes of data",
                       (unsigned long long)pf->data_size);
    }
    return GG_OK;
}

/* Append "'name'" to a comma-separated list in buf (kept under size, with a count of what did not fit). */
typedef struct name_list {
    char buf[600];
    size_t len;
    int n, n_shown;
} name_list;

static void list_add(name_list *l, const char *name) {
    l->n++;
    size_t need = strlen(name) + 4;
    if (l->len + need + 24 >= sizeof l->buf) return;
    l->len +=
        (size_t)snprintf(l->buf + l->len, sizeof l->buf - l->len, "%s'%s'", l->n_shown ? ", " : "", name);
    l->n_shown++;
}

static const char *list_str(name_list *l) {
    if (l->n > l->n_shown && l->len + 24 < sizeof l->buf)
        snprintf(l->buf + l->len, sizeof l->buf - l->len, " and %d more", l->n - l->n_shown);
    return l->buf;
}

/* Copy a validated F32 entry's little-endian bytes into t (same shape, no broadcast dims). `scratch`
 * holds at least t->numel floats when t is not contiguous. */
static void copy_into(gg_tensor *t, const unsigned char *src, float *scratch) {
    size_t n = (size_t)t->numel;
    if (n == 0) return;
    bool contig = gg_tensor_is_contiguous(t);
    float *dst = contig ? gg_tensor_data(t) : scratch;
    memcpy(dst, src, n * 4u);
#if CK_BIG_ENDIAN
    for (size_t i = 0; i < n; i++) {
        unsigned char b[4], r[4];
        memcpy(b, &dst[i], 4);
        for (int k = 0; k < 4; k++) r[k] = b[3 - k];
        memcpy(&dst[i], r, 4);
    }
#endif
    if (!contig) {
        int64_t cs[GG_MAX_DIMS];
        gg__contiguous_strides(t->ndim, t->shape, cs);
        gg__strided_copy(t->ndim, t->shape, gg_tensor_data(t), t->stride, scratch, cs);
    }
    gg_tensor_bump_version(t);
}

/* The file's metadata without the bound keys, as a sorted array (*out, *n_out, *cap_out). */
static int file_meta(const gg_checkpoint *ck, const json_t *meta, ck_meta **out, int *n_out, int *cap_out) {
    *out = NULL;
    *n_out = *cap_out = 0;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)meta, k, v) {
        if (ck && find_bind(ck, k) >= 0) continue;
        if (meta_put(out, n_out, cap_out, k, json_string_value(v))) {
            meta_clear(*out, *n_out);
            free(*out);
            *out = NULL;
            *n_out = *cap_out = 0;
            return GG_ERR_NOMEM;
        }
    }
    return GG_OK;
}

int gg_checkpoint_load(gg_checkpoint *ck, const char *path, unsigned flags) {
    if (!ck) return GG_FAIL(GG_ERR_ARG, "ck is NULL");
    if (flags & ~(GG_CHECKPOINT_ALLOW_MISSING | GG_CHECKPOINT_ALLOW_UNEXPECTED))
        return GG_FAIL(GG_ERR_ARG, "unknown flags 0x%x", flags);
    parsed_file pf;
    int st = parse_file(path, &pf, __func__);
    if (st) return st;

    /* Names. */
    name_list missing = {0}, unexpected = {0};
    for (int i = 0; i < pf.n; i++) {
        pf.e[i].target = tensor_index(ck, pf.e[i].name);
        if (pf.e[i].target < 0) list_add(&unexpected, pf.e[i].name);
    }
    for (int i = 0; i < ck->n_tensors; i++)
        if (!json_object_get(pf.root, ck->tensors[i].name)) list_add(&missing, ck->tensors[i].name);
    for (int i = 0; i < ck->n_binds; i++)
        if (!pf.meta || !json_object_get(pf.meta, ck->binds[i].key)) list_add(&missing, ck->binds[i].key);
    bool bad_missing = missing.n && !(flags & GG_CHECKPOINT_ALLOW_MISSING);
    bool bad_unexpected = unexpected.n && !(flags & GG_CHECKPOINT_ALLOW_UNEXPECTED);
    if (bad_missing || bad_unexpected) {
        char a[700] = "", b[700] = "";
        if (bad_missing)
            snprintf(a, sizeof a, "%d missing (registered but not in the file): %s", missing.n,
                     list_str(&missing));
        if (bad_unexpected)
            snprintf(b, sizeof b, "%d unexpected (in the file but not registered): %s", unexpected.n,
                     list_str(&unexpected));
        parsed_free(&pf);
        return ck_fail(GG_ERR_INDEX, __func__, path, "%s%s%s", a, bad_missing && bad_unexpected ? "; " : "",
                       b);
    }

    /* dtypes, shapes and targets of the entries to load. */
    name_list bad_dtype = {0}, bad_shape = {0}, bad_target = {0};
    int64_t scratch_numel = 0;
    for (int i = 0; i < pf.n; i++) {
        const file_entry *e = &pf.e[i];
        if (e->target < 0) continue;
        const gg_tensor *t = ck->tensors[e->target].t;
        char item[GG_SHAPE_STR_MAX * 2 + 160], s1[GG_SHAPE_STR_MAX], s2[GG_SHAPE_STR_MAX];
        if (e->dtype != CK_F32) {
            snprintf(item, sizeof item, "%s (%s)", e->name, CK_DTYPES[e->dtype].name);
            list_add(&bad_dtype, item);
            continue;
        }
        bool same = e->ndim == t->ndim;
        for (int d = 0; same && d < e->ndim; d++) same = e->shape[d] == t->shape[d];
        if (!same) {
            snprintf(item, sizeof item, "%s: file %s, registered %s", e->name,
                     gg_shape_str(e->ndim, e->shape, s1, sizeof s1), GG_SHAPE_STR(t, s2));
            list_add(&bad_shape, item);
            continue;
        }
        bool bcast = false;
        for (int d = 0; d < t->ndim; d++) bcast |= t->stride[d] == 0 && t->shape[d] > 1;
        if (bcast) list_add(&bad_target, e->name);
        if (!gg_tensor_is_contiguous(t) && t->numel > scratch_numel) scratch_numel = t->numel;
    }
    if (bad_dtype.n || bad_shape.n || bad_target.n) {
        int code = bad_dtype.n ? GG_ERR_UNSUPPORTED : bad_shape.n ? GG_ERR_SHAPE : GG_ERR_ARG;
        if (bad_dtype.n)
            ck_fail(code, __func__, path,
                    "%d tensors have a dtype other than F32 (only F32 is supported): %s", bad_dtype.n,
                    list_str(&bad_dtype));
        else if (bad_shape.n)
            ck_fail(code, __func__, path, "shape mismatch for %d tensors: %s", bad_shape.n,
                    list_str(&bad_shape));
        else
            ck_fail(code, __func__, path,
                    "cannot load into registered tensors with broadcast (stride-0) dimensions: %s",
                    list_str(&bad_target));
        parsed_free(&pf);
        return code;
    }

    /* Bound values. */
    uint64_t *vals = malloc(sizeof *vals * (size_t)(ck->n_binds ? ck->n_binds : 1));
    bool *have = malloc(sizeof *have * (size_t)(ck->n_binds ? ck->n_binds : 1));
    if (!vals || !have) {
        free(vals), free(have);
        parsed_free(&pf);
        return ck_fail(GG_ERR_NOMEM, __func__, path, "cannot allocate %d values", ck->n_binds);
    }
    for (int i = 0; i < ck->n_binds && st == GG_OK; i++) {
        const ck_bind *b = &ck->binds[i];
        json_t *j = pf.meta ? json_object_get(pf.meta, b->key) : NULL;
        have[i] = j != NULL;
        if (!j) continue;
        const char *s = json_string_value(j);
        int64_t v64 = 0;
        bool ok = b->kind == BIND_I64 ? parse_i64(s, &v64) : parse_u64(s, &vals[i]);
        if (b->kind == BIND_I64 && ok) memcpy(&vals[i], &v64, sizeof v64);
        if (!ok)
            st = ck_fail(GG_ERR_FORMAT, __func__, path, "metadata '%s' = \"%s\" is not %s 64-bit integer",
                         b->key, s, b->kind == BIND_I64 ? "a signed" : "an unsigned");
    }

    /* Everything that can fail (allocations, reading the data) happens before the first write. */
    ck_meta *meta = NULL;
    int n_meta = 0, cap_meta = 0;
    unsigned char *data = NULL;
    float *scratch = NULL;
    if (st == GG_OK && pf.meta && file_meta(ck, pf.meta, &meta, &n_meta, &cap_meta))
        st = ck_fail(GG_ERR_NOMEM, __func__, path, "cannot copy the metadata");
    if (st == GG_OK && scratch_numel > 0 && !(scratch = malloc(sizeof *scratch * (size_t)scratch_numel)))
        st = ck_fail(GG_ERR_NOMEM, __func__, path, "cannot allocate %lld floats of scratch",
                     (long long)scratch_numel);
    if (st == GG_OK) st = read_data(&pf, &data, __func__, path);
    if (st == GG_OK) {
        for (int i = 0; i < ck->n_tensors; i++) ck->tensors[i].loaded = false;
        for (int i = 0; i < pf.n; i++) {
            if (pf.e[i].target < 0) continue;
            ck_tensor *ct = &ck->tensors[pf.e[i].target];
            copy_into(ct->t, data + pf.e[i].begin, scratch);
            ct->loaded = true;
        }
        for (int i = 0; i < ck->n_binds; i++)
            if (have[i]) memcpy(ck->binds[i].var, &vals[i], sizeof vals[i]);
        meta_clear(ck->meta, ck->n_meta);
        free(ck->meta);
        ck->meta = meta, ck->n_meta = n_meta, ck->cap_meta = cap_meta;
        meta = NULL, n_meta = 0;
    }
    meta_clear(meta, n_meta);
    free(meta);
    free(data);
    free(scratch);
    free(vals);
    free(have);
    parsed_free(&pf);
    return st;
}

static int cmp_entry_names(const void *a, const void *b) {
    return strcmp((*(const file_entry *const *)a)->name, (*(const file_entry *const *)b)->name);
}

gg_checkpoint *gg_checkpoint_read(const char *path) {
    parsed_file pf;
    if (parse_file(path, &pf, __func__)) return NULL;
    for (int i = 0; i < pf.n; i++)
        if (pf.e[i].dtype != CK_F32) {
            ck_fail(GG_ERR_UNSUPPORTED, __func__, path, "tensor '%s' has dtype %s; only F32 is supported",
                    pf.e[i].name, CK_DTYPES[pf.e[i].dtype].name);
            parsed_free(&pf);
            return NULL;
        }
    gg_checkpoint *ck = gg_checkpoint_new();
    file_entry **order = malloc(sizeof *order * (size_t)(pf.n ? pf.n : 1));
    unsigned char *data = NULL;
    int st = ck && order ? GG_OK : ck_fail(GG_ERR_NOMEM, __func__, path, "cannot allocate the checkpoint");
    for (int i = 0; st == GG_OK && i < pf.n; i++) order[i] = &pf.e[i];
    if (st == GG_OK) qsort(order, (size_t)pf.n, sizeof *order, cmp_entry_names);
    for (int i = 0; st == GG_OK && i < pf.n; i++) {
        gg_tensor *t = gg_tensor_empty(order[i]->ndim, order[i]->shape);
        st = t ? add_tensor(ck, order[i]->name, t, __func__) : gg_last_status();
        gg_tensor_free(t); /* the checkpoint holds the reference */
    }
    if (st == GG_OK && pf.meta && file_meta(NULL, pf.meta, &ck->meta, &ck->n_meta, &ck->cap_meta))
        st = ck_fail(GG_ERR_NOMEM, __func__, path, "cannot copy the metadata");
    if (st == GG_OK) st = read_data(&pf, &data, __func__, path);
    for (int i = 0; st == GG_OK && i < pf.n; i++) {
        copy_into(ck->tensors[i].t, data + order[i]->begin, NULL);
        ck->tensors[i].loaded = true;
    }
    free(data);
    free(order);
    parsed_free(&pf);
    if (st) {
        gg_checkpoint_free(ck);
        return NULL;
    }
    return ck;
}
