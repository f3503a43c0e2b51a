/* NumPy/PyTorch-style text for tensors: nested brackets, aligned columns, "..." elision, shape suffix.
 *   tensor([[ 0.5000, -1.0000],
 *           [ 2.0000,  3.2500]], shape=[2,2])  */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "gg_internal.h"
#include "gg_tensor.h"

#define PRINT_THRESHOLD 1000 /* numpy's default: summarise above this many elements */
#define EDGE_ITEMS 3
#define LINE_WIDTH 80

typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_repeat(sbuf *b, char c, int n) {
    for (int i = 0; i < n; i++) sb_put(b, &c, 1);
}

typedef enum { FMT_INT, FMT_FIXED, FMT_SCI } fmt_kind;

typedef struct printer {
    const gg_tensor *t;
    bool summarise;
    fmt_kind kind;
    int width;
    int indent; /* column of the outermost '[' */
} printer;

static bool shown(const printer *pr, int d, int64_t i) {
    return !pr->summarise || pr->t->shape[d] <= 2 * EDGE_ITEMS || i < EDGE_ITEMS ||
           i >= pr->t->shape[d] - EDGE_ITEMS;
}

static int fmt_value(fmt_kind kind, float v, char *buf, size_t n) {
    if (isnan(v)) return snprintf(buf, n, "nan");
    if (isinf(v)) return snprintf(buf, n, v > 0 ? "inf" : "-inf");
    switch (kind) {
    case FMT_INT:
        return snprintf(buf, n, "%.0f.", (double)v);
    case FMT_FIXED:
        return snprintf(buf, n, "%.4f", (double)v);
    default:
        return snprintf(buf, n, "%.4e", (double)v);
    }
}

/* Visit the shown elements to choose the format and the column width. */
static void scan(printer *pr, int d, int64_t off, bool *all_int, double *maxabs, double *minabs) {
    const gg_tensor *t = pr->t;
    if (d == t->ndim) {
        float v = t->storage->data[off];
        if (!isfinite(v)) return;
        double a = fabs((double)v);
        if (v != floorf(v)) *all_int = false;
        if (a > *maxabs) *maxabs = a;
        if (a > 0 && a < *minabs) *minabs = a;
        return;
    }
    for (int64_t i = 0; i < t->shape[d]; i++)
        if (shown(pr, d, i)) scan(pr, d + 1, off + i * t->stride[d], all_int, maxabs, minabs);
}

static void measure(printer *pr, int d, int64_t off) {
    const gg_tensor *t = pr->t;
    char buf[64];
    if (d == t->ndim) {
        int n = fmt_value(pr->kind, t->storage->data[off], buf, sizeof buf);
        if (n > pr->width) pr->width = n;
        return;
    }
    for (int64_t i = 0; i < t->shape[d]; i++)
        if (shown(pr, d, i)) measure(pr, d + 1, off + i * t->stride[d]);
}

/* Separator before the next item at depth d: ", " (or a wrap) inside a row, ",\n" plus one blank line
 * per further level between sub-blocks, as numpy prints. */
static void separator(const printer *pr, sbuf *b, int d, int *line) {
    int col = pr->indent + d + 1;
    if (d == pr->t->ndim - 1) {
        if (*line + 2 + pr->width > LINE_WIDTH) {
            sb_puts(b, ",\n");
            sb_repeat(b, ' ', col);
            *line = col;
        } else {
            sb_puts(b, ", ");
            *line += 2;
        }
    } else {
        sb_puts(b, ",\n");
        sb_repeat(b, '\n', pr->t->ndim - d - 2);
        sb_repeat(b, ' ', col);
    }
}

static void emit(printer *pr, sbuf *b, int d, int64_t off) {
    const gg_tensor *t = pr->t;
    char buf[64];
    if (d == t->ndim) {
        int n = fmt_value(pr->kind, t->storage->data[off], buf, sizeof buf);
        sb_repeat(b, ' ', pr->width - n);
        sb_puts(b, buf);
        return;
    }
    sb_puts(b, "[");
    int line = pr->indent + d + 1;
    bool first = true;
    for (int64_t i = 0; i < t->shape[d]; i++) {
        bool hidden = !shown(pr, d, i);
        if (hidden && i != EDGE_ITEMS) continue; /* the first hidden index stands for all of them */
        if (!first) separator(pr, b, d, &line);
        first = false;
        if (hidden) {
            sb_puts(b, "...");
            line += 3;
        } else {
            emit(pr, b, d + 1, off + i * t->stride[d]);
            line += pr->width;
        }
    }
    sb_puts(b, "]");
}

static int render(const gg_tensor *t, sbuf *b) {
    char s[GG_SHAPE_STR_MAX];
    sb_puts(b, "tensor(");
    printer pr = {.t = t, .summarise = t->numel > PRINT_THRESHOLD, .indent = 7};
    if (t->numel == 0) {
        sb_puts(b, "[], shape=");
        sb_puts(b, GG_SHAPE_STR(t, s));
        sb_puts(b, ")");
        return b->oom ? GG_ERR_NOMEM : GG_OK;
    }
    bool all_int = true;
    double maxabs = 0, minabs = INFINITY;
    scan(&pr, 0, t->offset, &all_int, &maxabs, &minabs);
    if (maxabs >= 1e8 || (!all_int && minabs < 1e-4)) /* as numpy: large or tiny magnitudes */
        pr.kind = FMT_SCI;
    else if (all_int)
        pr.kind = FMT_INT;
    else
        pr.kind = FMT_FIXED;
    measure(&pr, 0, t->offset);
    emit(&pr, b, 0, t->offset);
    if (t->ndim > 0) {
        sb_puts(b, ", shape=");
        sb_puts(b, GG_SHAPE_STR(t, s));
    }
    sb_puts(b, ")");
    return b->oom ? GG_ERR_NOMEM : GG_OK;
}

int gg_tensor_format(const gg_tensor *t, char *buf, size_t size) {
    GG_CHECK_ARG(t, gg_last_status());
    sbuf b = {0};
    int st = render(t, &b);
    if (st) {
        free(b.p);
        return GG_FAIL(GG_ERR_NOMEM, "out of memory formatting a tensor");
    }
    if (buf && size > 0) {
        size_t n = b.len < size - 1 ? b.len : size - 1;
        memcpy(buf, b.p, n);
        buf[n] = '\0';
    }
    int len = (int)b.len;
    free(b.p);
    return len;
}

int gg_tensor_fprint(FILE *f, const gg_tensor *t) {
    GG_CHECK_ARG(t, gg_last_status());
    if (!f) return GG_FAIL(GG_ERR_ARG, "stream is NULL");
    sbuf b = {0};
    if (render(t, &b)) {
        free(b.p);
        return GG_FAIL(GG_ERR_NOMEM, "out of memory formatting a tensor");
    }
    int ok = fputs(b.p, f) >= 0 && fputc('\n', f) != EOF;
    free(b.p);
    return ok ? GG_OK : GG_FAIL(GG_ERR_IO, "write failed");
}

int gg_tensor_print(const gg_tensor *t) { return gg_tensor_fprint(stdout, t); }
