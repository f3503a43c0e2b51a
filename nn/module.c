/* The module machinery shared by every nn kind (gg_nn.h): allocation, registration of parameters, buffers
 * and children, recursive train/free/zero_grad, named iteration in state_dict order, forward and shape
 * inference with errors attributed to the innermost failing module's path, and MAC counting. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "gg_alloc.h"
#include "gg_internal.h"
#include "gg_nn.h"

/* Error attribution. The outermost gg_module_forward / gg_module_output_shape call on a thread sets the
 * entry-point name and clears `attributed`; the first module that sees a failure (its own check through
 * gg_module_fail, or a NULL from an op it ran) prefixes the message with its path and sets `attributed`,
 * so that the enclosing modules pass the message through unchanged. */
static _Thread_local int tl_depth;
static _Thread_local bool tl_attributed;
static _Thread_local const char *tl_entry;

#define PATH_MAX_ 256
#define DESC_MAX 160

static const char *entry_name(void) { return tl_entry ? tl_entry : "gg_module_forward"; }

static void enter(const char *entry) {
    if (tl_depth++ == 0) {
        tl_attributed = false;
        tl_entry = entry;
    }
}

static void leave(void) {
    if (--tl_depth == 0) tl_entry = NULL;
}

/* "<path> (<description>)", or the description alone at the root. */
static void where(const gg_module *m, char *buf, size_t size) {
    char path[PATH_MAX_], desc[DESC_MAX];
    gg_module_path(m, path, sizeof path);
    gg_module_describe(m, desc, sizeof desc);
    if (path[0]) snprintf(buf, size, "%s (%s)", path, desc);
    else snprintf(buf, size, "%s", desc);
}

int gg_module_fail(const gg_module *m, int status, const char *fmt, ...) {
    char msg[768], loc[PATH_MAX_ + DESC_MAX + 8];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    where(m, loc, sizeof loc);
    tl_attributed = true;
    return gg_error_set(status, entry_name(), "%s: %s", loc, msg);
}

/* Prefix the error an op recorded with m's path (once). */
static void attribute(const gg_module *m) {
    if (tl_attributed) return;
    int st = gg_last_status();
    if (st == GG_OK) gg_module_fail(m, GG_ERR_STATE, "failed without recording an error");
    else gg_module_fail(m, st, "%s", gg_last_error());
}

/* ---- construction and registration ---- */

#define IMPL_ALIGN 64

gg_module *gg_module_new(const gg_module_def *def, size_t impl_size) {
    if (!def || !def->kind || !def->forward) {
        GG_FAIL(GG_ERR_ARG, "a module kind needs a name and a forward function");
        return NULL;
    }
    size_t head = (sizeof(gg_module) + IMPL_ALIGN - 1) / IMPL_ALIGN * IMPL_ALIGN;
    gg_module *m = gg_alloc_zeroed(head + impl_size);
    if (!m) return NULL;
    m->def = def;
    m->training = true;
    m->impl = impl_size ? (char *)m + head : NULL;
    return m;
}

static int check_local_name(const gg_module *m, const char *func, const char *what, const char *name,
                            char (*names)[GG_NN_LOCAL_MAX], int n) {
    if (!name || !name[0] || strlen(name) >= GG_NN_LOCAL_MAX)
        return gg_error_set(GG_ERR_ARG, func, "%s %s name \"%s\" must have 1 to %d characters", m->def->kind, what,
                            name ? name : "(null)", GG_NN_LOCAL_MAX - 1);
    for (int i = 0; i < n; i++)
        if (!strcmp(names[i], name))
            return gg_error_set(GG_ERR_ARG, func, "%s already has a %s named \"%s\"", m->def->kind, what, name);
    return GG_OK;
}

static int add_tensor(gg_module *m, const char *func, const char *what, const char *name, gg_tensor *t,
                      char (*names)[GG_NN_LOCAL_MAX], gg_tensor **slots, int *n) {
    if (!m) {
        gg_tensor_free(t);
        return gg__null_arg(func, "m");
    }
    if (!t) return gg__null_arg(func, "t");
    int st = check_local_name(m, func, what, name, names, *n);
    if (!st && *n >= GG_NN_MAX_TENSORS)
        st = gg_error_set(GG_ERR_ARG, func, "%s already has %d %ss (GG_NN_MAX_TENSORS)", m->def->kind,
                          GG_NN_MAX_TENSORS, what);
    if (st) {
        gg_tensor_free(t);
        return st;
    }
    strcpy(names[*n], name);
    slots[(*n)++] = t;
    return GG_OK;
}

int gg_module_add_parameter(gg_module *m, const char *name, gg_tensor *t) {
    if (t && !gg_is_leaf(t)) {
        gg_tensor_free(t);
        return GG_FAIL(GG_ERR_ARG, "parameter \"%s\" must be a leaf tensor", name ? name : "(null)");
    }
    int st = add_tensor(m, __func__, "parameter", name, t, m ? m->param_names : NULL, m ? m->params : NULL,
                        m ? &m->n_params : NULL);
    if (st) return st;
    return gg_requires_grad(t, true);
}

int gg_module_add_buffer(gg_module *m, const char *name, gg_tensor *t) {
    return add_tensor(m, __func__, "buffer", name, t, m ? m->buffer_names : NULL, m ? m->buffers : NULL,
                      m ? &m->n_buffers : NULL);
}

int gg_module_add_child(gg_module *m, const char *name, gg_module *child) {
    if (!m) {
        gg_module_free(child);
        return gg__null_arg(__func__, "m");
    }
    if (!child) return gg__null_arg(__func__, "child");
    int st = GG_OK;
    if (!name || !name[0] || strlen(name) >= GG_NN_LOCAL_MAX || strchr(name, '.'))
        st = GG_FAIL(GG_ERR_ARG, "child name \"%s\" must have 1 to %d characters and no '.'", name ? name : "(null)",
                     GG_NN_LOCAL_MAX - 1);
    for (int i = 0; !st && i < m->n_children; i++)
        if (!strcmp(m->children[i]->name, name))
            st = GG_FAIL(GG_ERR_ARG, "%s already has a child named \"%s\"", m->def->kind, name);
    if (!st && child->parent) st = GG_FAIL(GG_ERR_ARG, "child \"%s\" already has a parent", name);
    if (!st && m->n_children == m->cap_children) {
        int cap = m->cap_children ? 2 * m->cap_children : 8;
        gg_module **c = gg_alloc((size_t)cap * sizeof *c);
        if (!c) st = gg_last_status();
        else {
            if (m->n_children) memcpy(c, m->children, (size_t)m->n_children * sizeof *c);
            gg_free(m->children);
            m->children = c;
            m->cap_children = cap;
        }
    }
    if (st) {
        if (!child->parent) gg_module_free(child);
        return st;
    }
    strcpy(child->name, name);
    child->parent = m;
    m->children[m->n_children++] = child;
    return GG_OK;
}

int gg_module_replace_child(gg_module *m, int index, gg_module *child) {
    if (!m) {
        gg_module_free(child);
        return gg__null_arg(__func__, "m");
    }
    if (!child) return gg__null_arg(__func__, "child");
    if (index < 0 || index >= m->n_children || child->parent) {
        int st = index < 0 || index >= m->n_children
                     ? GG_FAIL(GG_ERR_INDEX, "index %d out of range (%d children)", index, m->n_children)
                     : GG_FAIL(GG_ERR_ARG, "the new child already has a parent");
        if (!child->parent) gg_module_free(child);
        return st;
    }
    gg_module *old = m->children[index];
    strcpy(child->name, old->name);
    child->parent = m;
    m->children[index] = child;
    old->parent = NULL;
    gg_module_free(old);
    return GG_OK;
}

void gg_module_free(gg_module *m) {
    if (!m) return;
    for (int i = 0; i < m->n_children; i++) {
        m->children[i]->parent = NULL;
        gg_module_free(m->children[i]);
    }
    for (int i = 0; i < m->n_params; i++) gg_tensor_free(m->params[i]);
    for (int i = 0; i < m->n_buffers; i++) gg_tensor_free(m->buffers[i]);
    if (m->def->fini) m->def->fini(m);
    gg_free(m->children);
    gg_free(m);
}

/* ---- mode, names, printing ---- */

void gg_module_train(gg_module *m, bool training) {
    if (!m) return;
    m->training = training;
    for (int i = 0; i < m->n_children; i++) gg_module_train(m->children[i], training);
}

void gg_module_eval(gg_module *m) { gg_module_train(m, false); }
bool gg_module_is_training(const gg_module *m) { return m && m->training; }
const char *gg_module_kind(const gg_module *m) { return m ? m->def->kind : ""; }
const char *gg_module_name(const gg_module *m) { return m ? m->name : ""; }

char *gg_module_path(const gg_module *m, char *buf, size_t size) {
    if (!buf || !size) return buf;
    buf[0] = '\0';
    if (!m) return buf;
    const gg_module *chain[64];
    int n = 0;
    for (const gg_module *p = m; p->parent && n < 64; p = p->parent) chain[n++] = p;
    size_t len = 0;
    for (int i = n - 1; i >= 0; i--) {
        int w = snprintf(buf + len, size - len, "%s%s", i == n - 1 ? "" : ".", chain[i]->name);
        if (w < 0 || (size_t)w >= size - len) break;
        len += (size_t)w;
    }
    return buf;
}

char *gg_module_describe(const gg_module *m, char *buf, size_t size) {
    if (!buf || !size) return buf;
    if (!m) snprintf(buf, size, "(null)");
    else if (m->def->describe) m->def->describe(m, buf, size);
    else snprintf(buf, size, "%s", m->def->kind);
    return buf;
}

static int fprint_rec(FILE *f, const gg_module *m, int depth) {
    char desc[DESC_MAX];
    gg_module_describe(m, desc, sizeof desc);
    if (fprintf(f, "%*s%s%s%s\n", 2 * depth, "", m->name, m->name[0] ? ": " : "", desc) < 0)
        return GG_FAIL(GG_ERR_IO, "write failed");
    for (int i = 0; i < m->n_children; i++) {
        int st = fprint_rec(f, m->children[i], depth + 1);
        if (st) return st;
    }
    return GG_OK;
}

int gg_module_fprint(FILE *f, const gg_module *m) {
    if (!f || !m) return GG_FAIL(GG_ERR_ARG, "NULL %s", f ? "module" : "file");
    return fprint_rec(f, m, 0);
}

/* ---- iteration ---- */

#define FULL_MAX 512

static int walk_tensors(gg_module *m, bool params, char *prefix, size_t plen, gg_module_visit_fn fn, void *ctx) {
    int n = params ? m->n_params : m->n_buffers;
    for (int i = 0; i < n; i++) {
        snprintf(prefix + plen, FULL_MAX - plen, "%s", params ? m->param_names[i] : m->buffer_names[i]);
        int r = fn(prefix, params ? m->params[i] : m->buffers[i], ctx);
        if (r) return r;
    }
    for (int i = 0; i < m->n_children; i++) {
        int w = snprintf(prefix + plen, FULL_MAX - plen, "%s.", m->children[i]->name);
        size_t len = w < 0 ? plen : plen + (size_t)w;
        if (len >= FULL_MAX) len = FULL_MAX - 1;
        int r = walk_tensors(m->children[i], params, prefix, len, fn, ctx);
        if (r) return r;
    }
    prefix[plen] = '\0';
    return 0;
}

int gg_module_foreach_parameter(gg_module *m, gg_module_visit_fn fn, void *ctx) {
    if (!m || !fn) return GG_FAIL(GG_ERR_ARG, "NULL %s", m ? "visitor" : "module");
    char prefix[FULL_MAX] = "";
    return walk_tensors(m, true, prefix, 0, fn, ctx);
}

int gg_module_foreach_buffer(gg_module *m, gg_module_visit_fn fn, void *ctx) {
    if (!m || !fn) return GG_FAIL(GG_ERR_ARG, "NULL %s", m ? "visitor" : "module");
    char prefix[FULL_MAX] = "";
    return walk_tensors(m, false, prefix, 0, fn, ctx);
}

typedef struct collect_ctx {
    gg_tensor **plain;
    gg_named_tensor *named;
    int capacity, count;
    const char *func;
} collect_ctx;

static int collect_visit(const char *name, gg_tensor *t, void *vctx) {
    collect_ctx *c = vctx;
    if (c->count < c->capacity) {
        if (c->plain) c->plain[c->count] = t;
        if (c->named) {
            if (strlen(name) >= GG_NN_NAME_MAX)
                return gg_error_set(GG_ERR_OVERFLOW, c->func, "name \"%s\" is longer than GG_NN_NAME_MAX - 1 = %d",
                                    name, GG_NN_NAME_MAX - 1);
            strcpy(c->named[c->count].name, name);
            c->named[c->count].tensor = t;
        }
    }
    c->count++;
    return 0;
}

static int collect(gg_module *m, bool params, gg_tensor **plain, gg_named_tensor *named, int capacity,
                   const char *func) {
    if (!m) return gg__null_arg(func, "m");
    if (capacity < 0 || (capacity > 0 && !plain && !named))
        return gg_error_set(GG_ERR_ARG, func, "capacity %d with a NULL output array", capacity);
    collect_ctx c = {plain, named, capacity, 0, func};
    char prefix[FULL_MAX] = "";
    int st = walk_tensors(m, params, prefix, 0, collect_visit, &c);
    return st ? st : c.count;
}

int gg_module_parameters(gg_module *m, gg_tensor **out, int capacity) {
    return collect(m, true, out, NULL, capacity, __func__);
}
int gg_module_named_parameters(gg_module *m, gg_named_tensor *out, int capacity) {
    return collect(m, true, NULL, out, capacity, __func__);
}
int gg_module_buffers(gg_module *m, gg_tensor **out, int capacity) {
    return collect(m, false, out, NULL, capacity, __func__);
}
int gg_module_named_buffers(gg_module *m, gg_named_tensor *out, int capacity) {
    return collect(m, false, NULL, out, capacity, __func__);
}

typedef struct find_ctx {
    const char *name;
    gg_tensor *found;
} find_ctx;

static int find_visit(const char *name, gg_tensor *t, void *vctx) {
    find_ctx *c = vctx;
    if (strcmp(name, c->name)) return 0;
    c->found = t;
    return 1;
}

gg_tensor *gg_module_get_tensor(gg_module *m, const char *name) {
    if (!m || !name) {
        GG_FAIL(GG_ERR_ARG, "NULL %s", m ? "name" : "module");
        return NULL;
    }
    find_ctx c = {name, NULL};
    char prefix[FULL_MAX] = "";
    if (!walk_tensors(m, true, prefix, 0, find_visit, &c)) walk_tensors(m, false, prefix, 0, find_visit, &c);
    if (!c.found) GG_FAIL(GG_ERR_ARG, "%s has no parameter or buffer named \"%s\"", m->def->kind, name);
    return c.found;
}

int64_t gg_module_num_parameters(const gg_module *m, bool trainable_only) {
    if (!m) return 0;
    int64_t n = 0;
    for (int i = 0; i < m->n_params; i++)
        if (!trainable_only || m->params[i]->requires_grad) n += m->params[i]->numel;
    for (int i = 0; i < m->n_children; i++) n += gg_module_num_parameters(m->children[i], trainable_only);
    return n;
}

void gg_module_zero_grad(gg_module *m) {
    if (!m) return;
    for (int i = 0; i < m->n_params; i++) gg_zero_grad(m->params[i]);
    for (int i = 0; i < m->n_children; i++) gg_module_zero_grad(m->children[i]);
}

int gg_module_num_children(const gg_module *m) { return m ? m->n_children : 0; }

gg_module *gg_module_child_at(const gg_module *m, int index) {
    if (!m || index < 0 || index >= m->n_children) {
        GG_FAIL(GG_ERR_INDEX, "index %d out of range (%d children)", index, m ? m->n_children : 0);
        return NULL;
    }
    return m->children[index];
}

static int walk_modules(gg_module *m, char *path, size_t plen, gg_module_walk_fn fn, void *ctx) {
    int r = fn(path, m, ctx);
    if (r) return r;
    for (int i = 0; i < m->n_children; i++) {
        int w = snprintf(path + plen, FULL_MAX - plen, "%s%s", plen ? "." : "", m->children[i]->name);
        size_t len = w < 0 ? plen : plen + (size_t)w;
        if (len >= FULL_MAX) len = FULL_MAX - 1;
        r = walk_modules(m->children[i], path, len, fn, ctx);
        path[plen] = '\0';
        if (r) return r;
    }
    return 0;
}

int gg_module_foreach_module(gg_module *m, gg_module_walk_fn fn, void *ctx) {
    if (!m || !fn) return GG_FAIL(GG_ERR_ARG, "NULL %s", m ? "visitor" : "module");
    char path[FULL_MAX] = "";
    return walk_modules(m, path, 0, fn, ctx);
}

typedef struct child_ctx {
    const char *path;
    gg_module *found;
} child_ctx;

static int child_visit(const char *path, gg_module *m, void *vctx) {
    child_ctx *c = vctx;
    if (strcmp(path, c->path)) return 0;
    c->found = m;
    return 1;
}

gg_module *gg_module_get_child(gg_module *m, const char *path) {
    if (!m || !path) {
        GG_FAIL(GG_ERR_ARG, "NULL %s", m ? "path" : "module");
        return NULL;
    }
    child_ctx c = {path, NULL};
    gg_module_foreach_module(m, child_visit, &c);
    if (!c.found) GG_FAIL(GG_ERR_ARG, "%s has no submodule \"%s\"", m->def->kind, path);
    return c.found;
}

/* ---- forward and shapes ---- */

static void record_shapes(gg_module *m, int ind, const int64_t *in, int outd, const int64_t *out) {
    m->in_ndim = ind;
    m->out_ndim = outd;
    memcpy(m->in_shape, in, (size_t)ind * sizeof *in);
    memcpy(m->out_shape, out, (size_t)outd * sizeof *out);
}

/* Shape inference of m (nested calls included); errors attributed. */
static int infer(gg_module *m, int ndim, const int64_t *in, int *out_ndim, int64_t *out) {
    int st;
    if (m->def->shape) {
        st = m->def->shape(m, ndim, in, out_ndim, out);
    } else {
        int nd = ndim;
        int64_t cur[GG_MAX_DIMS];
        memcpy(cur, in, (size_t)ndim * sizeof *in);
        st = GG_OK;
        for (int i = 0; !st && i < m->n_children; i++) {
            int nnd = 0;
            int64_t nxt[GG_MAX_DIMS];
            st = gg_module_output_shape(m->children[i], nd, cur, &nnd, nxt);
            nd = nnd;
            memcpy(cur, nxt, (size_t)nd * sizeof *cur);
        }
        if (!st) {
            *out_ndim = nd;
            memcpy(out, cur, (size_t)nd * sizeof *cur);
        }
    }
    if (st) {
        attribute(m);
        return gg_last_status() ? gg_last_status() : st;
    }
    record_shapes(m, ndim, in, *out_ndim, out);
    return GG_OK;
}

int gg_module_output_shape(gg_module *m, int ndim, const int64_t *in_shape, int *out_ndim, int64_t *out_shape) {
    if (!m || !in_shape || !out_ndim || !out_shape)
        return GG_FAIL(GG_ERR_ARG, "NULL %s", !m ? "module" : !in_shape ? "in_shape" : "output");
    if (ndim < 0 || ndim > GG_MAX_DIMS) return GG_FAIL(GG_ERR_ARG, "ndim %d out of [0, %d]", ndim, GG_MAX_DIMS);
    for (int d = 0; d < ndim; d++)
        if (in_shape[d] < 0) return GG_FAIL(GG_ERR_ARG, "negative size in_shape[%d] = %lld", d, (long long)in_shape[d]);
    enter("gg_module_output_shape");
    int st = infer(m, ndim, in_shape, out_ndim, out_shape);
    leave();
    return st;
}

gg_tensor *gg_module_forward(gg_module *m, gg_tensor *x) {
    if (!m) {
        gg__null_arg(__func__, "m");
        return NULL;
    }
    GG_CHECK_ARG(x, NULL);
    enter(__func__);
    gg_tensor *y = NULL;
    if (m->n_children == 0 && m->def->shape) { /* a leaf checks the input before running its op */
        int nd = 0;
        int64_t out[GG_MAX_DIMS];
        if (infer(m, x->ndim, x->shape, &nd, out)) goto done;
    }
    y = m->def->forward(m, x);
    if (!y) attribute(m);
    else record_shapes(m, x->ndim, x->shape, y->ndim, y->shape);
done:
    leave();
    return y;
}

/* ---- MACs ---- */

static int64_t macs_rec(const gg_module *m) {
    int64_t n = m->def->macs ? m->def->macs(m) : 0;
    for (int i = 0; i < m->n_children; i++) n += macs_rec(m->children[i]);
    return n;
}

int gg_module_macs(gg_module *m, int ndim, const int64_t *in_shape, int64_t *macs) {
    if (!m || !in_shape || !macs) return GG_FAIL(GG_ERR_ARG, "NULL %s", !m ? "module" : !in_shape ? "in_shape" : "macs");
    if (ndim < 1 || ndim > GG_MAX_DIMS) return GG_FAIL(GG_ERR_ARG, "ndim %d out of [1, %d]", ndim, GG_MAX_DIMS);
    int64_t one[GG_MAX_DIMS], out[GG_MAX_DIMS];
    memcpy(one, in_shape, (size_t)ndim * sizeof *one);
    one[0] = 1;
    int ond = 0;
    int st = gg_module_output_shape(m, ndim, one, &ond, out);
    if (st) return st;
    *macs = macs_rec(m);
    return GG_OK;
}
