/* train_groupnet: train GroupNet-S on Fashion-MNIST -- a ResNeXt whose 3x3 convolutions are DGConv layers
 * that learn their own group counts -- or its dense, grouped and depthwise twins, and compare them.
 *
 *   build/examples/train_groupnet                          # GroupNet-S, the full recipe (see --help)
 *   build/examples/train_groupnet --compare --epochs 3     # all four variants, then a table
 *   build/examples/train_groupnet --resume runs/groupnet/checkpoint.safetensors
 *
 * Per epoch it prints train loss and accuracy, test accuracy, every DGConv layer's group count, the
 * complexity zeta against its budget and the effective MACs; it writes under --out (default runs/) one
 * directory per model with log.csv (one row per epoch), groups.csv (the group count of every layer every
 * few steps), groups.svg (those counts over training: the paper's "learning dynamics" figure),
 * accuracy.svg, and checkpoint.safetensors (saved at the end of every epoch, on Ctrl-C and at --max-steps).
 * A checkpoint holds everything a run depends on -- parameters, BatchNorm buffers, optimizer state, step,
 * epoch, data-loader position, partial epoch sums, the configuration and the history -- so a resumed run
 * continues exactly as the uninterrupted one would have (bit for bit with the same --threads).
 *
 * The training step is the usual one: forward, cross entropy (times the complexity factor
 * (o / zeta)^-0.02 of DGCONV.md section 4 for GroupNet when --budget > 0), backward, optimizer step. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "groupgrad.h"
#include "plot_svg.h"

#define MAX_MODELS 4
#define MAX_LAYERS 16
#define PATH_LEN 1024

/* ---- options ---- */

typedef struct model_spec {
    char name[32];       /* "groupnet", "dense", "grouped:8", "depthwise" */
    gg_conv3x3_kind kind;
    int groups;          /* GROUPED */
} model_spec;

enum { /* options given explicitly on the command line (a resumed run must not contradict its checkpoint) */
    SET_MODEL = 1 << 0, SET_EPOCHS = 1 << 1, SET_BATCH = 1 << 2, SET_LR = 1 << 3, SET_OPTIM = 1 << 4,
    SET_WD = 1 << 5, SET_SEED = 1 << 6, SET_BUDGET = 1 << 7, SET_SUBSET = 1 << 8, SET_CROP = 1 << 9,
    SET_FLIP = 1 << 10, SET_WARMUP = 1 << 11, SET_MOMENTUM = 1 << 12, SET_OUT = 1 << 13, SET_FREEZE = 1 << 14,
};

typedef struct options {
    model_spec models[MAX_MODELS];
    int n_models;
    bool compare;
    int epochs;
    int64_t batch;
    double lr;          /* < 0: the optimizer's default */
    char optimizer[8];  /* sgd, adam, adamw */
    double wd;          /* < 0: the optimizer's default */
    double momentum;    /* SGD */
    double warmup;      /* epochs of linear warm-up */
    int threads;
    uint64_t seed;
    double budget;      /* b of o = sum C^2 / b; 0: no complexity term */
    double gate_freeze; /* fraction of the run after which the gates stop moving */
    int64_t subset, test_subset;
    int crop;
    bool flip;
    const char *out, *resume, *data;
    bool json;
    bool benchmark;     /* time the convolution kernels (gg_conv_set_benchmark) */
    int64_t max_steps;  /* stop with a checkpoint after this many steps in total; 0: never */
    int log_every;      /* steps between group-count samples; 0: 10 per epoch */
    int progress;       /* -1 auto (bar on a terminal), 0 plain lines, 1 bar */
    unsigned set;
} options;

static void usage(FILE *f) {
    fputs(
        "usage: train_groupnet [options]\n"
        "Train GroupNet-S (ResNeXt with DGConv 3x3 convolutions that learn their group counts) on Fashion-MNIST.\n"
        "\n"
        "model and comparison\n"
        "  --model M        groupnet | dense | grouped:G | depthwise (default groupnet)\n"
        "  --compare        train groupnet, dense, grouped:8 and depthwise in turn and print a table\n"
        "training\n"
        "  --epochs N       epochs (default 15)\n"
        "  --batch N        batch size (default 128)\n"
        "  --optimizer O    sgd (momentum 0.9, Nesterov) | adamw | adam (default sgd)\n"
        "  --lr X           peak learning rate (default 0.1 for sgd, 2e-3 for adam/adamw); cosine decay to 0\n"
        "  --warmup E       epochs of linear warm-up from lr/10 (default 1, at most a fifth of the run)\n"
        "  --wd X           weight decay of the conv/linear weights (default 5e-4 sgd/adam, 0.05 adamw);\n"
        "                   BatchNorm parameters, biases and gates get none\n"
        "  --momentum X     SGD momentum (default 0.9)\n"
        "  --budget b       DGConv complexity target o = sum C^2 / b (DGCONV.md section 4): the loss is\n"
        "                   CE * (o / zeta)^-0.02 while zeta > o (default 32; 0 turns the term off)\n"
        "  --gate-freeze F  stop moving the DGConv gates after this fraction of the run (default 0.75): the\n"
        "                   last epochs train the weights of a fixed grouping (1: never freeze)\n"
        "  --seed S         initialisation, shuffling and augmentation seed (default 0)\n"
        "  --threads N      threads for every kernel (default: all cores)\n"
        "  --benchmark      time the convolution kernels on first use and keep the fastest (may be faster; the\n"
        "                   choice depends on the machine's load, so runs are no longer bit-reproducible)\n"
        "data\n"
        "  --data DIR       Fashion-MNIST IDX files (default " GG_FASHION_MNIST_DIR ",\n"
        "                   Debian package dataset-fashion-mnist)\n"
        "  --subset N       train on N images (a fixed random subset); default all 60000\n"
        "  --test-subset N  evaluate on N test images; default all 10000\n"
        "  --crop P         random crop after padding by P pixels (default 0: off; 15 epochs underfit with it)\n"
        "  --no-flip        no random horizontal flip\n"
        "output\n"
        "  --out DIR        where each model's directory goes (default runs)\n"
        "  --resume FILE    continue the run saved in FILE (its configuration is used; --epochs may extend it)\n"
        "  --max-steps N    stop after N optimizer steps in total, saving a checkpoint (as Ctrl-C does)\n"
        "  --log-every N    sample the group counts every N steps (default: 10 times per epoch)\n"
        "  --json           one JSON object per epoch and one per finished model on stdout (text goes to stderr)\n"
        "  --progress MODE  bar | lines | auto (bar when stderr is a terminal; default)\n"
        "  --help           this text\n",
        f);
}

static int parse_model(const char *s, model_spec *m) {
    memset(m, 0, sizeof *m);
    if (!strcmp(s, "groupnet") || !strcmp(s, "dgconv")) m->kind = GG_CONV3X3_DGCONV, s = "groupnet";
    else if (!strcmp(s, "dense")) m->kind = GG_CONV3X3_DENSE;
    else if (!strcmp(s, "depthwise")) m->kind = GG_CONV3X3_DEPTHWISE;
    else if (!strncmp(s, "grouped:", 8)) {
        char *end;
        long g = strtol(s + 8, &end, 10);
        /* the 3x3 widths of GroupNet-S are 32, 64, 128: G must divide 32 */
        if (*end || end == s + 8 || g < 1 || 32 % g) return -1;
        m->kind = GG_CONV3X3_GROUPED, m->groups = (int)g;
    } else return -1;
    snprintf(m->name, sizeof m->name, "%s", s);
    return 0;
}

/* Numbers on the command line: the whole string must parse and lie in [lo, hi]. */
static int parse_i64(const char *opt, const char *v, int64_t lo, int64_t hi, int64_t *out) {
    char *end;
    errno = 0;
    long long x = v ? strtoll(v, &end, 10) : 0;
    if (!v || errno || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, "train_groupnet: %s needs an integer in [%" PRId64 ", %" PRId64 "], got '%s' (see --help)\n", opt, lo, hi,
                v ? v : "(nothing)");
        return -1;
    }
    *out = x;
    return 0;
}

static int parse_f64(const char *opt, const char *v, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double x = v ? strtod(v, &end) : 0;
    if (!v || errno || *end || end == v || !(x >= lo && x <= hi)) {
        fprintf(stderr, "train_groupnet: %s needs a number in [%g, %g], got '%s'\n", opt, lo, hi, v ? v : "(nothing)");
        return -1;
    }
    *out = x;
    return 0;
}

/* 0: parsed; 1: --help; -1: bad command line (message printed). */
static int parse_args(int argc, char **argv, options *o) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    *o = (options){.epochs = 15, .batch = 128, .lr = -1, .optimizer = "sgd", .wd = -1, .momentum = 0.9,
                   .warmup = 1, .threads = cores > 0 ? (int)cores : 1, .budget = 32, .gate_freeze = 0.75, .crop = 0, .flip = true,
                   .out = "runs", .progress = -1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int64_t n;
        int r = 0;
        bool takes = true;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return 1;
        else if (!strcmp(a, "--compare")) o->compare = true, takes = false;
        else if (!strcmp(a, "--json")) o->json = true, takes = false;
        else if (!strcmp(a, "--benchmark")) o->benchmark = true, takes = false;
        else if (!strcmp(a, "--no-flip")) o->flip = false, o->set |= SET_FLIP, takes = false;
        else if (!strcmp(a, "--model")) {
            if (!v || parse_model(v, &o->models[0])) {
                fprintf(stderr, "train_groupnet: --model needs groupnet, dense, grouped:G (G dividing 32) or "
                                "depthwise, got '%s'\n", v ? v : "(nothing)");
                return -1;
            }
            o->n_models = 1, o->set |= SET_MODEL;
        } else if (!strcmp(a, "--epochs")) r = parse_i64(a, v, 1, 100000, &n), o->epochs = (int)n, o->set |= SET_EPOCHS;
        else if (!strcmp(a, "--batch")) r = parse_i64(a, v, 2, 1 << 16, &o->batch), o->set |= SET_BATCH;
        else if (!strcmp(a, "--lr")) r = parse_f64(a, v, 0, 100, &o->lr), o->set |= SET_LR;
        else if (!strcmp(a, "--wd")) r = parse_f64(a, v, 0, 10, &o->wd), o->set |= SET_WD;
        else if (!strcmp(a, "--momentum")) r = parse_f64(a, v, 0, 0.999, &o->momentum), o->set |= SET_MOMENTUM;
        else if (!strcmp(a, "--warmup")) r = parse_f64(a, v, 0, 1000, &o->warmup), o->set |= SET_WARMUP;
        else if (!strcmp(a, "--budget")) r = parse_f64(a, v, 0, 1e9, &o->budget), o->set |= SET_BUDGET;
        else if (!strcmp(a, "--gate-freeze")) r = parse_f64(a, v, 0, 1, &o->gate_freeze), o->set |= SET_FREEZE;
        else if (!strcmp(a, "--threads")) r = parse_i64(a, v, 1, 1024, &n), o->threads = (int)n;
        else if (!strcmp(a, "--seed")) r = parse_i64(a, v, 0, INT64_MAX, &n), o->seed = (uint64_t)n, o->set |= SET_SEED;
        else if (!strcmp(a, "--subset")) r = parse_i64(a, v, 1, INT64_MAX, &o->subset), o->set |= SET_SUBSET;
        else if (!strcmp(a, "--test-subset")) r = parse_i64(a, v, 1, INT64_MAX, &o->test_subset);
        else if (!strcmp(a, "--crop")) r = parse_i64(a, v, 0, 8, &n), o->crop = (int)n, o->set |= SET_CROP;
        else if (!strcmp(a, "--max-steps")) r = parse_i64(a, v, 1, INT64_MAX, &o->max_steps);
        else if (!strcmp(a, "--log-every")) r = parse_i64(a, v, 1, INT32_MAX, &n), o->log_every = (int)n;
        else if (!strcmp(a, "--out") && v) o->out = v, o->set |= SET_OUT;
        else if (!strcmp(a, "--resume") && v) o->resume = v;
        else if (!strcmp(a, "--data") && v) o->data = v;
        else if (!strcmp(a, "--optimizer") && v) {
            if (strcmp(v, "sgd") && strcmp(v, "adam") && strcmp(v, "adamw")) {
                fprintf(stderr, "train_groupnet: --optimizer needs sgd, adam or adamw, got '%s'\n", v);
                return -1;
            }
            snprintf(o->optimizer, sizeof o->optimizer, "%s", v), o->set |= SET_OPTIM;
        } else if (!strcmp(a, "--progress") && v) {
            o->progress = !strcmp(v, "bar") ? 1 : !strcmp(v, "lines") ? 0 : !strcmp(v, "auto") ? -1 : -2;
            if (o->progress == -2) {
                fprintf(stderr, "train_groupnet: --progress needs bar, lines or auto, got '%s'\n", v);
                return -1;
            }
        } else {
            const char *valued[] = {"--out", "--resume", "--data", "--optimizer", "--progress"};
            bool missing = false;
            for (size_t k = 0; k < sizeof valued / sizeof valued[0]; k++) missing |= !v && !strcmp(a, valued[k]);
            fprintf(stderr, "train_groupnet: %s '%s' (see --help)\n", missing ? "missing value for" : "unknown option",
                    a);
            return -1;
        }
        if (r) return -1;
        if (takes) i++;
    }
    if (o->compare && (o->set & SET_MODEL)) {
        fprintf(stderr, "train_groupnet: --compare trains every model; drop --model\n");
        return -1;
    }
    if (o->compare && o->resume) {
        fprintf(stderr, "train_groupnet: --resume continues one model's run; it cannot be combined with --compare\n");
        return -1;
    }
    if (o->compare) {
        const char *all[MAX_MODELS] = {"groupnet", "dense", "grouped:8", "depthwise"};
        for (int m = 0; m < MAX_MODELS; m++) parse_model(all[m], &o->models[m]);
        o->n_models = MAX_MODELS;
    } else if (o->n_models == 0) parse_model("groupnet", &o->models[0]), o->n_models = 1;
    return 0;
}

/* ---- small utilities ---- */

static volatile sig_atomic_t g_interrupted;
static void on_signal(int sig) { g_interrupted = sig; }

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Resident memory in MiB (Linux /proc), or 0 when unknown. */
static double rss_mib(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (!f) return 0;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    fclose(f);
    return (double)resident * (double)sysconf(_SC_PAGESIZE) / (1024.0 * 1024.0);
}

/* mkdir -p; 0 or -1 with a message. */
static int make_dirs(const char *path) {
    char buf[PATH_LEN];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return errno = ENAMETOOLONG, -1;
    for (char *p = buf + 1;; p++) {
        const bool end = *p == '\0';
        if (*p == '/' || end) {
            *p = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
                fprintf(stderr, "train_groupnet: cannot create directory %s: %s\n", buf, strerror(errno));
                return -1;
            }
            if (end) break;
            *p = '/';
        }
    }
    return 0;
}

/* ---- a run's history (kept in the checkpoint as text, so plots survive a resume) ---- */

typedef struct epoch_row {
    int64_t epoch, step;
    double train_loss, train_acc, test_acc, lr, images_per_s, seconds, rss_mib, zeta;
    int64_t macs;
    int groups[MAX_LAYERS];
} epoch_row;

typedef struct history {
    int n_layers;
    epoch_row *rows;
    int n_rows, cap_rows;
    double *gx;  /* group samples: training progress in epochs */
    int *g;      /* [n_g][n_layers] */
    int n_g, cap_g;
} history;

static int grow(void **p, int *cap, int need, size_t elem) {
    if (need <= *cap) return 0;
    int c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(*p, (size_t)c * elem);
    if (!q) return -1;
    *p = q, *cap = c;
    return 0;
}

static int history_add_row(history *h, const epoch_row *r) {
    if (grow((void **)&h->rows, &h->cap_rows, h->n_rows + 1, sizeof *h->rows)) return -1;
    h->rows[h->n_rows++] = *r;
    return 0;
}

static int history_add_groups(history *h, double x, const int *groups) {
    if (h->n_g + 1 > h->cap_g) {
        const int cap = h->cap_g ? 2 * h->cap_g : 64;
        const size_t layers = h->n_layers ? (size_t)h->n_layers : 1;
        double *gx = realloc(h->gx, (size_t)cap * sizeof *gx);
        if (!gx) return -1;
        h->gx = gx;
        int *g = realloc(h->g, (size_t)cap * layers * sizeof *g);
        if (!g) return -1;
        h->g = g, h->cap_g = cap;
    }
    h->gx[h->n_g] = x;
    for (int l = 0; l < h->n_layers; l++) h->g[h->n_g * h->n_layers + l] = groups[l];
    h->n_g++;
    return 0;
}

static void history_free(history *h) {
    free(h->rows), free(h->gx), free(h->g);
    memset(h, 0, sizeof *h);
}

/* Text forms: one line per row, fields separated by commas, doubles with 17 significant digits. */
static char *history_rows_text(const history *h) {
    size_t cap = 64 + (size_t)h->n_rows * (240 + 12 * MAX_LAYERS), len = 0;
    char *s = malloc(cap);
    if (!s) return NULL;
    s[0] = '\0';
    for (int i = 0; i < h->n_rows; i++) {
        const epoch_row *r = &h->rows[i];
        len += (size_t)snprintf(s + len, cap - len, "%" PRId64 ",%" PRId64 ",%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,"
                                "%.17g,%" PRId64, r->epoch, r->step, r->train_loss, r->train_acc, r->test_acc, r->lr,
                                r->images_per_s, r->seconds, r->rss_mib, r->zeta, r->macs);
        for (int l = 0; l < h->n_layers; l++) len += (size_t)snprintf(s + len, cap - len, ",%d", r->groups[l]);
        len += (size_t)snprintf(s + len, cap - len, "\n");
    }
    return s;
}

static char *history_groups_text(const history *h) {
    size_t cap = 64 + (size_t)h->n_g * (32 + 12 * (size_t)h->n_layers), len = 0;
    char *s = malloc(cap);
    if (!s) return NULL;
    s[0] = '\0';
    for (int i = 0; i < h->n_g; i++) {
        len += (size_t)snprintf(s + len, cap - len, "%.17g", h->gx[i]);
        for (int l = 0; l < h->n_layers; l++)
            len += (size_t)snprintf(s + len, cap - len, ",%d", h->g[i * h->n_layers + l]);
        len += (size_t)snprintf(s + len, cap - len, "\n");
    }
    return s;
}

/* Parse the text forms back; -1 on malformed text. */
static int history_parse(history *h, const char *rows, const char *groups) {
    for (const char *p = rows; p && *p;) {
        epoch_row r = {0};
        char *e;
        double v[11];
        for (int k = 0; k < 11; k++) {
            v[k] = strtod(p, &e);
            if (e == p || (*e != ',' && *e != '\n' && *e)) return -1;
            p = *e == ',' ? e + 1 : e;
        }
        r.epoch = (int64_t)v[0], r.step = (int64_t)v[1], r.train_loss = v[2], r.train_acc = v[3];
        r.test_acc = v[4], r.lr = v[5], r.images_per_s = v[6], r.seconds = v[7], r.rss_mib = v[8], r.zeta = v[9];
        r.macs = (int64_t)v[10];
        for (int l = 0; l < h->n_layers; l++) {
            long g = strtol(p, &e, 10);
            if (e == p) return -1;
            r.groups[l] = (int)g, p = *e == ',' ? e + 1 : e;
        }
        if (*p != '\n') return -1;
        p++;
        if (history_add_row(h, &r)) return -1;
    }
    int gs[MAX_LAYERS];
    for (const char *p = groups; p && *p;) {
        char *e;
        double x = strtod(p, &e);
        if (e == p) return -1;
        p = e;
        for (int l = 0; l < h->n_layers; l++) {
            if (*p != ',') return -1;
            gs[l] = (int)strtol(p + 1, &e, 10), p = e;
        }
        if (*p != '\n') return -1;
        p++;
        if (history_add_groups(h, x, gs)) return -1;
    }
    return 0;
}

/* ---- a model being trained ---- */

typedef struct trainer {
    const options *o;
    model_spec spec;
    gg_groupnet_config cfg;
    gg_rng rng;
    gg_module *net;
    gg_module *dg[MAX_LAYERS]; /* DGConv2d layers (GroupNet) */
    int n_dg;
    int n_layers;              /* 3x3 convolutions reported (one per bottleneck) */
    char layer_name[MAX_LAYERS][48];
    int64_t layer_width[MAX_LAYERS];
    gg_optim *opt;
    gg_lr_schedule sched;
    int gate_group;        /* optimizer group of the DGConv gates, or -1 */
    int64_t freeze_step;   /* from this step on the gates' lr is 0 */
    gg_loader *train, *test;
    gg_checkpoint *ck;
    char dir[PATH_LEN], ckpt_path[PATH_LEN + 32];
    /* checkpointed counters */
    int64_t step, epoch;              /* steps taken, epochs completed */
    int64_t ld_epoch, ld_position;    /* loader state */
    uint64_t ld_seed;
    uint64_t loss_sum_bits;           /* double: sum of batch-mean CE * batch size over the current epoch */
    int64_t correct, seen;            /* current epoch's training accuracy */
    int64_t epochs;                   /* planned epochs */
    int64_t steps_per_epoch;
    history h;
    /* not checkpointed */
    double train_seconds, epoch_seconds;
    int64_t epoch_images;
    bool bar;
    FILE *text; /* human-readable output: stdout, or stderr with --json */
} trainer;

static double bits_to_f64(uint64_t b) {
    double d;
    memcpy(&d, &b, sizeof d);
    return d;
}
static uint64_t f64_to_bits(double d) {
    uint64_t b;
    memcpy(&b, &d, sizeof b);
    return b;
}

/* The 3x3 convolutions' group counts now: DGConv2d from their gates, the others from the configuration. */
static void current_groups(const trainer *t, int *groups) {
    for (int l = 0; l < t->n_layers; l++) {
        if (t->n_dg) {
            gg_dgconv2d_info info;
            groups[l] = gg_nn_dgconv2d_info(t->dg[l], &info) == GG_OK ? info.groups : 0;
        } else if (t->spec.kind == GG_CONV3X3_DENSE) groups[l] = 1;
        else if (t->spec.kind == GG_CONV3X3_DEPTHWISE) groups[l] = (int)t->layer_width[l];
        else groups[l] = t->spec.groups;
    }
}

static gg_optim_kind optim_kind(const char *s) {
    return !strcmp(s, "sgd") ? GG_OPTIM_SGD : !strcmp(s, "adam") ? GG_OPTIM_ADAM : GG_OPTIM_ADAMW;
}

/* The configuration as checkpoint metadata, and its check on resume. */
typedef struct run_config {
    char model[32], optimizer[8];
    int64_t epochs, batch, subset, crop, flip;
    uint64_t seed;
    double lr, wd, momentum, warmup, budget, gate_freeze;
} run_config;

static run_config config_of(const options *o, const model_spec *m) {
    run_config c = {.epochs = o->epochs, .batch = o->batch, .subset = o->subset, .crop = o->crop,
                    .flip = o->flip, .seed = o->seed, .lr = o->lr, .wd = o->wd, .momentum = o->momentum,
                    .warmup = o->warmup, .budget = o->budget, .gate_freeze = o->gate_freeze};
    snprintf(c.model, sizeof c.model, "%s", m->name);
    snprintf(c.optimizer, sizeof c.optimizer, "%s", o->optimizer);
    const gg_optim_kind k = optim_kind(o->optimizer);
    if (c.lr < 0) c.lr = k == GG_OPTIM_SGD ? 0.1 : 2e-3;
    if (c.wd < 0) c.wd = k == GG_OPTIM_ADAMW ? 0.05 : 5e-4;
    if (m->kind != GG_CONV3X3_DGCONV) c.budget = 0, c.gate_freeze = 1;
    return c;
}

static int config_save(gg_checkpoint *ck, const run_config *c) {
    char v[64];
    int st = gg_checkpoint_set_meta(ck, "config.model", c->model);
    if (!st) st = gg_checkpoint_set_meta(ck, "config.optimizer", c->optimizer);
#define PUT_I(key, x) if (!st) st = gg_checkpoint_set_meta_i64(ck, key, x)
#define PUT_F(key, x) if (!st) snprintf(v, sizeof v, "%.17g", x), st = gg_checkpoint_set_meta(ck, key, v)
    PUT_I("config.batch", c->batch);
    PUT_I("config.subset", c->subset);
    PUT_I("config.crop", c->crop);
    PUT_I("config.flip", c->flip);
    if (!st) st = gg_checkpoint_set_meta_u64(ck, "config.seed", c->seed);
    PUT_F("config.lr", c->lr);
    PUT_F("config.wd", c->wd);
    PUT_F("config.momentum", c->momentum);
    PUT_F("config.warmup", c->warmup);
    PUT_F("config.budget", c->budget);
    PUT_F("config.gate_freeze", c->gate_freeze);
#undef PUT_I
#undef PUT_F
    return st;
}

/* Read the configuration of checkpoint ck (epochs from "train.epochs"); -1 with a message if incomplete. */
static int config_load(const gg_checkpoint *ck, const char *path, run_config *c) {
    const char *model = gg_checkpoint_get_meta(ck, "config.model");
    const char *optim = gg_checkpoint_get_meta(ck, "config.optimizer");
    int bad = !model || !optim;
    if (!bad) {
        snprintf(c->model, sizeof c->model, "%s", model);
        snprintf(c->optimizer, sizeof c->optimizer, "%s", optim);
    }
    bad = bad || gg_checkpoint_get_meta_i64(ck, "train.epochs", &c->epochs) ||
          gg_checkpoint_get_meta_i64(ck, "config.batch", &c->batch) ||
          gg_checkpoint_get_meta_i64(ck, "config.subset", &c->subset) ||
          gg_checkpoint_get_meta_i64(ck, "config.crop", &c->crop) ||
          gg_checkpoint_get_meta_i64(ck, "config.flip", &c->flip) ||
          gg_checkpoint_get_meta_u64(ck, "config.seed", &c->seed);
    const char *keys[] = {"config.lr", "config.wd", "config.momentum", "config.warmup", "config.budget",
                          "config.gate_freeze"};
    double *vals[] = {&c->lr, &c->wd, &c->momentum, &c->warmup, &c->budget, &c->gate_freeze};
    for (int i = 0; !bad && i < 6; i++) {
        const char *s = gg_checkpoint_get_meta(ck, keys[i]);
        char *e;
        bad = !s || (*vals[i] = strtod(s, &e), *e != '\0' || e == s);
    }
    if (bad) {
        fprintf(stderr, "train_groupnet: %s is not a train_groupnet checkpoint (its run configuration is missing or "
                        "malformed)\n", path);
        return -1;
    }
    return 0;
}

/* Options given on the command line must agree with the checkpoint being resumed. */
static int config_check_resume(const options *o, const run_config *saved, const char *path) {
    const run_config want = config_of(o, &o->models[0]);
    struct { unsigned bit; const char *opt; bool differs; char had[64]; } checks[] = {
        {SET_MODEL, "--model", strcmp(want.model, saved->model) != 0, ""},
        {SET_OPTIM, "--optimizer", strcmp(want.optimizer, saved->optimizer) != 0, ""},
        {SET_BATCH, "--batch", want.batch != saved->batch, ""},
        {SET_SUBSET, "--subset", want.subset != saved->subset, ""},
        {SET_CROP, "--crop", want.crop != saved->crop, ""},
        {SET_FLIP, "--no-flip", want.flip != saved->flip, ""},
        {SET_SEED, "--seed", want.seed != saved->seed, ""},
        {SET_LR, "--lr", want.lr != saved->lr, ""},
        {SET_WD, "--wd", want.wd != saved->wd, ""},
        {SET_MOMENTUM, "--momentum", want.momentum != saved->momentum, ""},
        {SET_WARMUP, "--warmup", want.warmup != saved->warmup, ""},
        {SET_BUDGET, "--budget", want.budget != saved->budget, ""},
        {SET_FREEZE, "--gate-freeze", want.gate_freeze != saved->gate_freeze, ""},
    };
    snprintf(checks[0].had, 64, "%s", saved->model);
    snprintf(checks[1].had, 64, "%s", saved->optimizer);
    snprintf(checks[2].had, 64, "%" PRId64, saved->batch);
    snprintf(checks[3].had, 64, "%" PRId64, saved->subset);
    snprintf(checks[4].had, 64, "%" PRId64, saved->crop);
    snprintf(checks[5].had, 64, "%s", saved->flip ? "flip on" : "flip off");
    snprintf(checks[6].had, 64, "%" PRIu64, saved->seed);
    snprintf(checks[7].had, 64, "%g", saved->lr);
    snprintf(checks[8].had, 64, "%g", saved->wd);
    snprintf(checks[9].had, 64, "%g", saved->momentum);
    snprintf(checks[10].had, 64, "%g", saved->warmup);
    snprintf(checks[11].had, 64, "%g", saved->budget);
    snprintf(checks[12].had, 64, "%g", saved->gate_freeze);
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++)
        if ((o->set & checks[i].bit) && checks[i].differs) {
            fprintf(stderr, "train_groupnet: %s disagrees with %s, which was trained with %s; a resumed run keeps its "
                            "configuration (drop the option)\n", checks[i].opt, path, checks[i].had);
            return -1;
        }
    return 0;
}

/* ---- building a trainer ---- */

static int fail_lib(const char *what) {
    fprintf(stderr, "train_groupnet: %s: %s\n", what, gg_last_error());
    return -1;
}

/* Every Bottleneck's conv2 is the 3x3 convolution whose grouping we report. */
static int collect_layers(const char *path, gg_module *m, void *vctx) {
    trainer *t = vctx;
    if (strcmp(gg_module_kind(m), "Bottleneck") || t->n_layers >= MAX_LAYERS) return 0;
    gg_module *c2 = gg_module_get_child(m, "conv2");
    if (!c2) return 0;
    snprintf(t->layer_name[t->n_layers], sizeof t->layer_name[0], "%s.conv2", path);
    gg_tensor *w = gg_module_get_tensor(c2, !strcmp(gg_module_kind(c2), "DGConv2d") ? "conv.weight" : "weight");
    t->layer_width[t->n_layers] = w ? w->shape[0] : 0;
    if (!strcmp(gg_module_kind(c2), "DGConv2d")) t->dg[t->n_dg++] = c2;
    t->n_layers++;
    return 0;
}

static int add_named(gg_checkpoint *ck, gg_module *net, bool buffers) {
    int n = buffers ? gg_module_named_buffers(net, NULL, 0) : gg_module_named_parameters(net, NULL, 0);
    if (n < 0) return -1;
    gg_named_tensor *nt = calloc((size_t)n + 1, sizeof *nt);
    if (!nt) return -1;
    if (buffers) gg_module_named_buffers(net, nt, n);
    else gg_module_named_parameters(net, nt, n);
    int st = 0;
    char name[GG_NN_NAME_MAX + 16];
    for (int i = 0; !st && i < n; i++) {
        snprintf(name, sizeof name, "model.%s", nt[i].name);
        st = gg_checkpoint_add(ck, name, nt[i].tensor);
    }
    free(nt);
    return st;
}

static int trainer_init(trainer *t, const options *o, const model_spec *spec, const run_config *rc,
                        const gg_dataset *train_ds, const gg_dataset *test_ds) {
    memset(t, 0, sizeof *t);
    t->o = o;
    t->spec = *spec;
    t->text = o->json ? stderr : stdout;
    t->bar = o->progress == 1 || (o->progress == -1 && isatty(STDERR_FILENO));
    t->epochs = rc->epochs;
    t->cfg = gg_groupnet_s_config(spec->kind);
    t->cfg.conv3x3.groups = spec->groups;
    gg_rng_init(&t->rng, rc->seed);
    t->net = gg_groupnet_new(&t->cfg, &t->rng);
    if (!t->net) return fail_lib("building GroupNet-S");
    gg_module_foreach_module(t->net, collect_layers, t);
    t->h.n_layers = t->n_layers;

    /* optimizer: no weight decay on parameters of rank <= 1 (BatchNorm, biases, DGConv gates) */
    const gg_optim_kind kind = optim_kind(rc->optimizer);
    gg_optim_hparams hp = kind == GG_OPTIM_SGD ? gg_sgd_hparams(rc->lr)
                          : kind == GG_OPTIM_ADAM ? gg_adam_hparams(rc->lr) : gg_adamw_hparams(rc->lr);
    hp.weight_decay = rc->wd;
    if (kind == GG_OPTIM_SGD) hp.momentum = rc->momentum, hp.nesterov = rc->momentum > 0;
    int np = gg_module_named_parameters(t->net, NULL, 0);
    gg_named_tensor *nt = np > 0 ? calloc((size_t)np, sizeof *nt) : NULL;
    gg_tensor **ps = np > 0 ? calloc((size_t)np, sizeof *ps) : NULL;
    const char **names = np > 0 ? calloc((size_t)np, sizeof *names) : NULL;
    int st = -1;
    t->opt = gg_optim_new(kind);
    t->gate_group = -1;
    if (nt && ps && names && t->opt) {
        gg_module_named_parameters(t->net, nt, np);
        /* the other parameters first (two groups: with and without decay), then the gates in their own
         * group (no decay), whose lr drops to 0 at the freeze point */
        int n = 0, ng = 0;
        for (int pass = 0; pass < 2; pass++)
            for (int i = 0; i < np; i++) {
                size_t len = strlen(nt[i].name);
                bool gate = len >= 5 && !strcmp(nt[i].name + len - 5, ".gate");
                if (gate == (pass == 1)) ps[n] = nt[i].tensor, names[n] = nt[i].name, n++, ng += gate;
            }
        st = gg_optim_add_params(t->opt, ps, names, np - ng, &hp, gg_optim_filter_no_decay, NULL) < 0;
        if (!st && ng) {
            gg_optim_hparams hg = hp;
            hg.weight_decay = 0;
            t->gate_group = gg_optim_add_group(t->opt, ps + np - ng, names + np - ng, ng, &hg);
            st = t->gate_group < 0;
        }
    }
    free(nt), free(ps), free(names);
    if (st) return fail_lib("setting up the optimizer");

    /* data */
    gg_loader_options lo = gg_loader_default_options();
    lo.batch_size = rc->batch, lo.seed = rc->seed, lo.crop_padding = (int)rc->crop, lo.hflip = rc->flip != 0;
    lo.subset = rc->subset, lo.subset_shuffle = true, lo.subset_seed = 0;
    t->train = gg_loader_new(train_ds, &lo);
    gg_loader_options to = gg_loader_default_options();
    to.batch_size = rc->batch, to.shuffle = false, to.subset = o->test_subset, to.subset_shuffle = true;
    t->test = gg_loader_new(test_ds, &to);
    if (!t->train || !t->test) return fail_lib("setting up the data loaders");
    t->steps_per_epoch = gg_loader_num_batches(t->train);
    const int64_t total = t->steps_per_epoch * t->epochs;
    int64_t warm = (int64_t)llround(rc->warmup * (double)t->steps_per_epoch);
    if (warm > total / 5) warm = total / 5;
    t->sched = gg_lr_cosine(warm, 0.1, total, 0.0);
    t->freeze_step = (int64_t)llround(rc->gate_freeze * (double)total);

    /* checkpoint: everything the run depends on */
    t->ck = gg_checkpoint_new();
    if (!t->ck) return fail_lib("creating the checkpoint");
    st = add_named(t->ck, t->net, false) || add_named(t->ck, t->net, true) ||
         gg_checkpoint_add_optim(t->ck, t->opt, NULL) || gg_checkpoint_bind_i64(t->ck, "train.step", &t->step) ||
         gg_checkpoint_bind_i64(t->ck, "train.epoch", &t->epoch) ||
         gg_checkpoint_bind_i64(t->ck, "train.epochs", &t->epochs) ||
         gg_checkpoint_bind_u64(t->ck, "train.loss_sum_bits", &t->loss_sum_bits) ||
         gg_checkpoint_bind_i64(t->ck, "train.correct", &t->correct) ||
         gg_checkpoint_bind_i64(t->ck, "train.seen", &t->seen) ||
         gg_checkpoint_bind_u64(t->ck, "loader.seed", &t->ld_seed) ||
         gg_checkpoint_bind_i64(t->ck, "loader.epoch", &t->ld_epoch) ||
         gg_checkpoint_bind_i64(t->ck, "loader.position", &t->ld_position) ||
         gg_checkpoint_bind_u64(t->ck, "rng.seed", &t->rng.seed) ||
         gg_checkpoint_bind_u64(t->ck, "rng.counter", &t->rng.counter) || config_save(t->ck, rc);
    if (st) return fail_lib("registering the checkpoint");
    return 0;
}

static void trainer_fini(trainer *t) {
    gg_checkpoint_free(t->ck);
    gg_loader_free(t->train);
    gg_loader_free(t->test);
    gg_optim_free(t->opt);
    gg_module_free(t->net);
    history_free(&t->h);
}

static int trainer_save(trainer *t) {
    gg_loader_state s;
    gg_loader_get_state(t->train, &s);
    t->ld_seed = s.seed, t->ld_epoch = s.epoch, t->ld_position = s.position;
    char *rows = history_rows_text(&t->h), *groups = history_groups_text(&t->h);
    int st = !rows || !groups || gg_checkpoint_set_meta(t->ck, "history.epochs", rows) ||
             gg_checkpoint_set_meta(t->ck, "history.groups", groups) ||
             gg_checkpoint_set_meta(t->ck, "groupgrad.version", gg_version()) ||
             gg_checkpoint_save(t->ck, t->ckpt_path);
    free(rows), free(groups);
    return st ? fail_lib("saving the checkpoint") : 0;
}

static int trainer_resume(trainer *t, const char *path) {
    if (gg_checkpoint_load(t->ck, path, 0) != GG_OK) return fail_lib("resuming");
    if (history_parse(&t->h, gg_checkpoint_get_meta(t->ck, "history.epochs"),
                      gg_checkpoint_get_meta(t->ck, "history.groups"))) {
        fprintf(stderr, "train_groupnet: %s: the run history in the metadata is malformed\n", path);
        return -1;
    }
    gg_loader_state s = {t->ld_seed, t->ld_epoch, t->ld_position};
    if (gg_loader_set_state(t->train, &s) != GG_OK) return fail_lib("resuming the data loader");
    return 0;
}

/* ---- training and evaluation ---- */

static int64_t count_correct(const gg_tensor *logits, const int32_t *labels, int64_t n) {
    const float *z = gg_tensor_data(logits);
    const int64_t k = logits->shape[1];
    int64_t correct = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t best = 0;
        for (int64_t j = 1; j < k; j++)
            if (z[i * k + j] > z[i * k + best]) best = j;
        correct += best == labels[i];
    }
    return correct;
}

static int evaluate(trainer *t, double *acc) {
    int64_t correct = 0, seen = 0;
    gg_module_eval(t->net);
    gg_no_grad_begin();
    gg_loader_state s = {0, 0, 0};
    int r = gg_loader_set_state(t->test, &s);
    gg_batch b;
    while (r == GG_OK && (r = gg_loader_next(t->test, &b)) > 0) {
        gg_tensor *logits = gg_module_forward(t->net, b.x);
        if (!logits) {
            r = -1;
            break;
        }
        correct += count_correct(logits, b.labels, b.n), seen += b.n;
        gg_tape_reset(NULL);
        r = GG_OK;
    }
    gg_no_grad_end();
    gg_tape_reset(NULL);
    gg_module_train(t->net, true);
    if (r < 0) return fail_lib("evaluating");
    *acc = seen ? 100.0 * (double)correct / (double)seen : 0;
    return 0;
}

/* One optimizer step on batch b; adds to the epoch sums. */
static int train_step(trainer *t, const gg_batch *b, double budget) {
    if (gg_optim_apply_schedule(t->opt, &t->sched, t->step)) return fail_lib("setting the learning rate");
    if (t->gate_group >= 0 && t->step >= t->freeze_step && gg_optim_set_lr(t->opt, t->gate_group, 0.0))
        return fail_lib("freezing the gates");
    gg_tensor *logits = gg_module_forward(t->net, b->x);
    gg_tensor *ce = gg_cross_entropy(logits, b->labels, b->n, GG_REDUCE_MEAN, 0.0f);
    gg_tensor *loss = ce && t->n_dg && budget > 0 ? gg_groupnet_regularized_loss(t->net, ce, budget, -0.02,
                                                                                 GG_ZETA_CODE) : ce;
    float ce_value = 0;
    if (!loss || gg_tensor_item(ce, &ce_value)) return fail_lib("forward");
    if (!isfinite(ce_value)) {
        fprintf(stderr, "train_groupnet: the loss became %g at step %" PRId64 "; lower --lr\n", ce_value, t->step);
        return -1;
    }
    gg_optim_zero_grad(t->opt);
    if (gg_backward(loss) != GG_OK) return fail_lib("backward");
    if (gg_optim_step(t->opt) != GG_OK) return fail_lib("optimizer step");
    t->loss_sum_bits = f64_to_bits(bits_to_f64(t->loss_sum_bits) + (double)ce_value * (double)b->n);
    t->correct += count_correct(logits, b->labels, b->n);
    t->seen += b->n;
    t->step++;
    gg_tape_reset(NULL);
    return 0;
}

static void fmt_time(char *buf, size_t size, double s) {
    if (!(s >= 0) || s > 1e7) s = 0;
    long v = lround(s);
    if (v >= 3600) snprintf(buf, size, "%ld:%02ld:%02ld", v / 3600, v / 60 % 60, v % 60);
    else snprintf(buf, size, "%ld:%02ld", v / 60, v % 60);
}

static void progress(trainer *t, int64_t batch_index, bool force) {
    const int64_t nb = t->steps_per_epoch;
    const double ips = t->epoch_seconds > 0 ? (double)t->epoch_images / t->epoch_seconds : 0;
    const double loss = t->seen ? bits_to_f64(t->loss_sum_bits) / (double)t->seen : 0;
    const double acc = t->seen ? 100.0 * (double)t->correct / (double)t->seen : 0;
    const int64_t left_steps = (t->epochs - t->epoch) * nb - batch_index;
    const double eta = ips > 0 ? (double)left_steps * (double)t->o->batch / ips : 0;
    char e[32];
    fmt_time(e, sizeof e, eta);
    if (t->bar) {
        char bar[31];
        const int fill = (int)(30 * batch_index / (nb ? nb : 1));
        for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
        bar[30] = '\0';
        fprintf(stderr, "\r%-10s %3" PRId64 "/%-3" PRId64 " [%s] %4" PRId64 "/%-4" PRId64 " loss %.4f acc %5.2f%% "
                "%6.0f img/s ETA %s \033[K", t->spec.name, t->epoch + 1, t->epochs, bar, batch_index, nb, loss, acc, ips,
                e);
        fflush(stderr);
    } else if (force || (nb >= 10 && batch_index % (nb / 5) == 0)) {
        fprintf(t->text, "%-10s epoch %" PRId64 "/%" PRId64 " batch %" PRId64 "/%" PRId64 " loss %.4f acc %.2f%% "
                "%.0f img/s ETA %s\n", t->spec.name, t->epoch + 1, t->epochs, batch_index, nb, loss, acc, ips, e);
        fflush(t->text);
    }
}

typedef struct model_result {
    model_spec spec;
    double test_acc, images_per_s, train_seconds, rss_first, rss_last;
    int64_t params, effective_params, macs;
    int n_layers, groups[MAX_LAYERS];
    bool done;
    int n_curve;
    double *curve_x, *curve_y; /* test accuracy per epoch (malloc'd; for the --compare chart) */
} model_result;

static void write_json_groups(FILE *f, const int *groups, int n) {
    fputc('[', f);
    for (int l = 0; l < n; l++) fprintf(f, "%s%d", l ? "," : "", groups[l]);
    fputc(']', f);
}

/* log.csv, groups.csv and the two charts of this model, rewritten from the history. */
static int write_files(const trainer *t) {
    char path[PATH_LEN + 32];
    const history *h = &t->h;
    snprintf(path, sizeof path, "%s/log.csv", t->dir);
    FILE *f = fopen(path, "w");
    if (!f) goto io;
    fprintf(f, "epoch,step,train_loss,train_acc,test_acc,lr,images_per_s,epoch_seconds,macs,zeta,rss_mib");
    for (int l = 0; l < t->n_layers; l++) fprintf(f, ",groups_%s", t->layer_name[l]);
    fputc('\n', f);
    for (int i = 0; i < h->n_rows; i++) {
        const epoch_row *r = &h->rows[i];
        fprintf(f, "%" PRId64 ",%" PRId64 ",%.6f,%.4f,%.4f,%.6g,%.1f,%.2f,%" PRId64 ",%.0f,%.1f", r->epoch, r->step,
                r->train_loss, r->train_acc, r->test_acc, r->lr, r->images_per_s, r->seconds, r->macs, r->zeta,
                r->rss_mib);
        for (int l = 0; l < t->n_layers; l++) fprintf(f, ",%d", r->groups[l]);
        fputc('\n', f);
    }
    if (fclose(f)) goto io;
    snprintf(path, sizeof path, "%s/groups.csv", t->dir);
    if (!(f = fopen(path, "w"))) goto io;
    fprintf(f, "epoch");
    for (int l = 0; l < t->n_layers; l++) fprintf(f, ",%s", t->layer_name[l]);
    fputc('\n', f);
    for (int i = 0; i < h->n_g; i++) {
        fprintf(f, "%.4f", h->gx[i]);
        for (int l = 0; l < t->n_layers; l++) fprintf(f, ",%d", h->g[i * t->n_layers + l]);
        fputc('\n', f);
    }
    if (fclose(f)) goto io;

    /* charts */
    double *xs = malloc(((size_t)h->n_rows * 3 + (size_t)h->n_g * (1 + (size_t)t->n_layers) + 1) * sizeof *xs);
    if (!xs) goto io;
    double *tr = xs + h->n_rows, *te = tr + h->n_rows, *gx = te + h->n_rows, *gy = gx + h->n_g;
    for (int i = 0; i < h->n_rows; i++)
        xs[i] = (double)h->rows[i].epoch, tr[i] = h->rows[i].train_acc, te[i] = h->rows[i].test_acc;
    plot_series acc[2] = {{"train", h->n_rows, xs, tr}, {"test", h->n_rows, xs, te}};
    char title[128];
    snprintf(title, sizeof title, "GroupNet-S (%s) on Fashion-MNIST: accuracy", t->spec.name);
    plot_chart ca = {title, "epoch", "accuracy (%)", acc, 2, false};
    snprintf(path, sizeof path, "%s/accuracy.svg", t->dir);
    int bad = plot_svg_write(path, &ca);
    plot_series gs[MAX_LAYERS];
    char names[MAX_LAYERS][80];
    for (int l = 0; l < t->n_layers; l++) {
        for (int i = 0; i < h->n_g; i++) gx[i] = h->gx[i], gy[l * h->n_g + i] = h->g[i * t->n_layers + l];
        snprintf(names[l], sizeof names[l], "%s (%" PRId64 " ch)", t->layer_name[l], t->layer_width[l]);
        gs[l] = (plot_series){names[l], h->n_g, gx, gy + (size_t)l * h->n_g};
    }
    snprintf(title, sizeof title, "GroupNet-S (%s): group count of each 3x3 layer", t->spec.name);
    plot_chart cg = {title, "epoch", "groups", gs, t->n_layers, true};
    snprintf(path, sizeof path, "%s/groups.svg", t->dir);
    bad = bad || plot_svg_write(path, &cg);
    free(xs);
    if (bad) goto io;
    return 0;
io:
    fprintf(stderr, "train_groupnet: cannot write %s: %s\n", path, strerror(errno));
    return -1;
}

/* The epoch just finished: evaluate, record, report, save. */
static int end_epoch(trainer *t, const run_config *rc, model_result *res) {
    double test_acc = 0;
    if (evaluate(t, &test_acc)) return -1;
    gg_groupnet_stats st;
    if (gg_groupnet_stats_get(t->net, 28, 28, &st) != GG_OK) return fail_lib("network statistics");
    epoch_row r = {.epoch = t->epoch + 1, .step = t->step, .test_acc = test_acc,
                   .lr = gg_optim_get_lr(t->opt, 0), .seconds = t->epoch_seconds, .rss_mib = rss_mib(),
                   .zeta = st.zeta, .macs = st.macs};
    r.train_loss = t->seen ? bits_to_f64(t->loss_sum_bits) / (double)t->seen : 0;
    r.train_acc = t->seen ? 100.0 * (double)t->correct / (double)t->seen : 0;
    r.images_per_s = t->epoch_seconds > 0 ? (double)t->epoch_images / t->epoch_seconds : 0;
    current_groups(t, r.groups);
    const bool sampled = t->h.n_g > 0 && t->h.gx[t->h.n_g - 1] == (double)(t->epoch + 1);
    if (history_add_row(&t->h, &r) || (!sampled && history_add_groups(&t->h, (double)(t->epoch + 1), r.groups))) {
        fprintf(stderr, "train_groupnet: out of memory\n");
        return -1;
    }
    t->epoch++;
    t->loss_sum_bits = 0, t->correct = 0, t->seen = 0;

    /* report */
    double budget_o = 0;
    if (t->n_dg && rc->budget > 0) {
        int64_t ch[MAX_LAYERS];
        for (int l = 0; l < t->n_dg; l++) ch[l] = t->layer_width[l];
        budget_o = gg_dgconv_budget(ch, t->n_dg, rc->budget);
    }
    if (t->bar) fputs("\r\033[K", stderr);
    fprintf(t->text, "%-10s epoch %2" PRId64 "/%" PRId64 "  loss %.4f  train %.2f%%  test %.2f%%  lr %.4f  %.0f img/s"
            "  %.1f s\n", t->spec.name, r.epoch, t->epochs, r.train_loss, r.train_acc, r.test_acc, r.lr,
            r.images_per_s, r.seconds);
    fprintf(t->text, "           groups");
    for (int l = 0; l < t->n_layers; l++)
        fprintf(t->text, " %s %" PRId64 "ch:%d%s", t->layer_name[l], t->layer_width[l], r.groups[l],
                l + 1 < t->n_layers ? "," : "");
    if (t->n_dg) fprintf(t->text, "  zeta %.0f (budget %.0f)", st.zeta, budget_o);
    gg_alloc_stats as;
    gg_alloc_get_stats(&as);
    fprintf(t->text, "  MACs %.2f M  RSS %.0f MiB (tensors: peak %.0f, cached %.0f MiB)\n", (double)st.macs * 1e-6,
            r.rss_mib, (double)as.peak_bytes / 1048576.0, (double)as.cached_bytes / 1048576.0);
    fflush(t->text);
    if (t->o->json) {
        printf("{\"model\":\"%s\",\"epoch\":%" PRId64 ",\"epochs\":%" PRId64 ",\"step\":%" PRId64 ",\"train_loss\":%.6f,"
               "\"train_acc\":%.4f,\"test_acc\":%.4f,\"lr\":%.6g,\"images_per_s\":%.1f,\"epoch_s\":%.2f,"
               "\"params\":%" PRId64 ",\"effective_params\":%" PRId64 ",\"macs\":%" PRId64 ",\"zeta\":%.0f,"
               "\"budget\":%.0f,\"rss_mib\":%.1f,\"groups\":", t->spec.name, r.epoch, t->epochs, r.step, r.train_loss,
               r.train_acc, r.test_acc, r.lr, r.images_per_s, r.seconds, st.params, st.effective_params, st.macs,
               st.zeta, budget_o, r.rss_mib);
        write_json_groups(stdout, r.groups, t->n_layers);
        printf("}\n");
        fflush(stdout);
    }
    res->test_acc = test_acc, res->params = st.params, res->effective_params = st.effective_params;
    res->macs = st.macs, res->n_layers = t->n_layers;
    memcpy(res->groups, r.groups, sizeof r.groups);
    if (res->rss_first == 0) res->rss_first = r.rss_mib;
    res->rss_last = r.rss_mib;
    if (write_files(t)) return -1;
    return trainer_save(t);
}

/* Train one model to the end (or to --max-steps / an interrupt). 0 done, 1 stopped early, -1 error. */
static int train_model(const options *o, const model_spec *requested, const gg_dataset *train_ds,
                       const gg_dataset *test_ds, model_result *res) {
    trainer t;
    model_spec model = *requested;
    const model_spec *spec = &model;
    run_config rc = config_of(o, spec);
    gg_checkpoint *saved = NULL;
    int ret = -1;
    if (o->resume) {
        saved = gg_checkpoint_read(o->resume);
        if (!saved) return fail_lib("reading the checkpoint to resume");
        if (config_load(saved, o->resume, &rc) || config_check_resume(o, &rc, o->resume)) goto out0;
        if (parse_model(rc.model, &model)) {
            fprintf(stderr, "train_groupnet: %s: unknown model '%s'\n", o->resume, rc.model);
            goto out0;
        }
    }
    const int64_t saved_epochs = rc.epochs;
    if (o->resume && (o->set & SET_EPOCHS)) rc.epochs = o->epochs; /* extending a run changes its schedule */
    if (trainer_init(&t, o, spec, &rc, train_ds, test_ds)) goto out;
    if (o->resume && (o->set & SET_OUT)) snprintf(t.dir, sizeof t.dir, "%s/%s", o->out, spec->name);
    else if (o->resume) {
        snprintf(t.dir, sizeof t.dir, "%s", o->resume);
        char *slash = strrchr(t.dir, '/');
        if (slash) *slash = '\0';
        else snprintf(t.dir, sizeof t.dir, ".");
    } else snprintf(t.dir, sizeof t.dir, "%s/%s", o->out, spec->name);
    if (make_dirs(t.dir)) goto out;
    snprintf(t.ckpt_path, sizeof t.ckpt_path, "%s/checkpoint.safetensors", t.dir);
    if (o->resume) {
        if (trainer_resume(&t, o->resume)) goto out;
        t.epochs = rc.epochs; /* the load restored the saved plan */
        if (rc.epochs != saved_epochs)
            fprintf(t.text, "%s: extending the run from %" PRId64 " to %" PRId64 " epochs (the cosine schedule "
                    "is stretched from here on)\n", spec->name, saved_epochs, rc.epochs);
        fprintf(t.text, "%s: resumed from %s at epoch %" PRId64 ", step %" PRId64 "\n", spec->name, o->resume,
                t.epoch, t.step);
    }
    gg_groupnet_stats st0;
    if (gg_groupnet_stats_get(t.net, 28, 28, &st0) != GG_OK) {
        fail_lib("network statistics");
        goto out;
    }
    fprintf(t.text, "%s: GroupNet-S, %" PRId64 " parameters, %.2f M MACs per image now; %" PRId64 " training images, "
            "batch %" PRId64 ", %s lr %g, %" PRId64 " epochs, %d threads; writing %s\n", spec->name, st0.params,
            (double)st0.macs * 1e-6, gg_loader_num_samples(t.train), rc.batch, rc.optimizer, rc.lr, rc.epochs,
            gg_get_num_threads(), t.dir);
    if (t.n_dg && rc.gate_freeze < 1)
        fprintf(t.text, "%s: the gates learn until step %" PRId64 " (epoch %.1f), then stay fixed\n", spec->name,
                t.freeze_step, (double)t.freeze_step / (double)t.steps_per_epoch);
    fflush(t.text);
    *res = (model_result){.spec = *spec};
    const int log_every = o->log_every > 0 ? o->log_every : (int)(t.steps_per_epoch >= 10 ? t.steps_per_epoch / 10 : 1);
    double total_images = 0;
    int stopped = 0;
    while (t.epoch < t.epochs && !stopped) {
        gg_batch b;
        int r;
        t.epoch_seconds = 0, t.epoch_images = 0;
        gg_loader_state ls;
        gg_loader_get_state(t.train, &ls);
        int64_t bi = ls.position / rc.batch; /* batches of this epoch already taken (after a resume) */
        for (;;) {
            double t0 = now_s();
            r = gg_loader_next(t.train, &b);
            if (r <= 0) break;
            if (train_step(&t, &b, rc.budget)) goto out;
            const double dt = now_s() - t0;
            t.epoch_seconds += dt, t.train_seconds += dt, t.epoch_images += b.n, total_images += (double)b.n;
            bi++;
            if (t.n_dg && t.step % log_every == 0) {
                int g[MAX_LAYERS];
                current_groups(&t, g);
                if (history_add_groups(&t.h, (double)t.epoch + (double)bi / (double)t.steps_per_epoch, g)) {
                    fprintf(stderr, "train_groupnet: out of memory\n");
                    goto out;
                }
            }
            progress(&t, bi, false);
            if (g_interrupted || (o->max_steps && t.step >= o->max_steps)) {
                stopped = 1;
                break;
            }
        }
        if (r < 0) {
            fail_lib("loading a batch");
            goto out;
        }
        if (!stopped) {
            if (end_epoch(&t, &rc, res)) goto out;
        } else {
            if (t.bar) fputs("\r\033[K", stderr);
            if (trainer_save(&t)) goto out;
            fprintf(t.text, "%s: %s at step %" PRId64 " (epoch %" PRId64 ", batch %" PRId64 "/%" PRId64 "); continue "
                    "with --resume %s\n", spec->name, g_interrupted ? "interrupted" : "stopped (--max-steps)", t.step,
                    t.epoch + 1, bi, t.steps_per_epoch, t.ckpt_path);
        }
    }
    res->images_per_s = t.train_seconds > 0 ? total_images / t.train_seconds : 0;
    res->train_seconds = t.train_seconds;
    res->done = !stopped;
    if (!stopped && o->json) {
        printf("{\"model\":\"%s\",\"final\":true,\"epochs\":%" PRId64 ",\"test_acc\":%.4f,\"images_per_s\":%.1f,"
               "\"train_s\":%.1f,\"params\":%" PRId64 ",\"effective_params\":%" PRId64 ",\"macs\":%" PRId64
               ",\"rss_first_mib\":%.1f,\"rss_last_mib\":%.1f,\"groups\":", spec->name, t.epoch, res->test_acc,
               res->images_per_s, res->train_seconds, res->params, res->effective_params, res->macs, res->rss_first,
               res->rss_last);
        write_json_groups(stdout, res->groups, res->n_layers);
        printf("}\n");
        fflush(stdout);
    }
    if (!stopped)
        fprintf(t.text, "%s: test accuracy %.2f%% after %" PRId64 " epochs, %.0f training images/s, %.1f s of training; "
                "files in %s\n", spec->name, res->test_acc, t.epoch, res->images_per_s, res->train_seconds, t.dir);
    if (!stopped && t.n_dg) {
        fprintf(t.text, "%s: learned groups:", spec->name);
        for (int l = 0; l < t.n_layers; l++)
            fprintf(t.text, "%s %s (%" PRId64 " channels) %d groups of %" PRId64, l ? ";" : "", t.layer_name[l],
                    t.layer_width[l], res->groups[l], res->groups[l] ? t.layer_width[l] / res->groups[l] : 0);
        fprintf(t.text, "\n");
    }
    ret = stopped;
    res->curve_x = malloc(((size_t)t.h.n_rows + 1) * 2 * sizeof(double));
    if (res->curve_x) {
        res->curve_y = res->curve_x + t.h.n_rows + 1;
        for (int i = 0; i < t.h.n_rows; i++)
            res->curve_x[i] = (double)t.h.rows[i].epoch, res->curve_y[i] = t.h.rows[i].test_acc;
        res->n_curve = t.h.n_rows;
    }
out:
    trainer_fini(&t);
out0:
    gg_checkpoint_free(saved);
    return ret;
}

/* The --compare table, on the text stream and as compare.csv + accuracy chart under --out. */
static int write_compare(const options *o, const model_result *res, int n, FILE *text) {
    fprintf(text, "\n%-12s %9s %10s %12s %12s %10s  %s\n", "model", "test acc", "params", "eff. params", "MACs/image",
            "images/s", "groups per 3x3 layer");
    for (int m = 0; m < n; m++) {
        fprintf(text, "%-12s %8.2f%% %10" PRId64 " %12" PRId64 " %10.2f M %10.0f  ", res[m].spec.name, res[m].test_acc,
                res[m].params, res[m].effective_params, (double)res[m].macs * 1e-6, res[m].images_per_s);
        for (int l = 0; l < res[m].n_layers; l++) fprintf(text, "%s%d", l ? "/" : "", res[m].groups[l]);
        fputc('\n', text);
    }
    char path[PATH_LEN + 32];
    snprintf(path, sizeof path, "%s/compare.csv", o->out);
    FILE *f = fopen(path, "w");
    if (!f) goto io;
    fprintf(f, "model,test_acc,params,effective_params,macs,images_per_s,train_seconds,groups\n");
    for (int m = 0; m < n; m++) {
        fprintf(f, "%s,%.4f,%" PRId64 ",%" PRId64 ",%" PRId64 ",%.1f,%.1f,", res[m].spec.name, res[m].test_acc,
                res[m].params, res[m].effective_params, res[m].macs, res[m].images_per_s, res[m].train_seconds);
        for (int l = 0; l < res[m].n_layers; l++) fprintf(f, "%s%d", l ? "/" : "", res[m].groups[l]);
        fputc('\n', f);
    }
    if (fclose(f)) goto io;
    plot_series series[MAX_MODELS];
    for (int m = 0; m < n; m++) series[m] = (plot_series){res[m].spec.name, res[m].n_curve, res[m].curve_x, res[m].curve_y};
    plot_chart c = {"GroupNet-S variants on Fashion-MNIST: test accuracy", "epoch", "test accuracy (%)", series, n,
                    false};
    snprintf(path, sizeof path, "%s/compare.svg", o->out);
    if (plot_svg_write(path, &c)) goto io;
    fprintf(text, "table in %s/compare.csv, test accuracy curves in %s\n", o->out, path);
    return 0;
io:
    fprintf(stderr, "train_groupnet: cannot write %s: %s\n", path, strerror(errno));
    return -1;
}

int main(int argc, char **argv) {
    options o;
    int pr = parse_args(argc, argv, &o);
    if (pr > 0) usage(stdout);
    if (pr) return pr > 0 ? 0 : 2;
    if (gg_set_num_threads(o.threads) != GG_OK) {
        fail_lib("--threads");
        return 2;
    }
    gg_conv_set_benchmark(o.benchmark);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    gg_dataset *train = gg_fashion_mnist_load(o.data, true);
    gg_dataset *test = train ? gg_fashion_mnist_load(o.data, false) : NULL;
    if (!train || !test) {
        fprintf(stderr, "train_groupnet: %s\n", gg_last_error());
        gg_dataset_free(train);
        return 1;
    }
    if (!o.resume && make_dirs(o.out)) return 1;
    model_result res[MAX_MODELS] = {0};
    int status = 0;
    for (int m = 0; m < o.n_models && status == 0 && !g_interrupted; m++)
        status = train_model(&o, &o.models[m], train, test, &res[m]);
    if (status == 0 && o.compare) status = write_compare(&o, res, o.n_models, o.json ? stderr : stdout) ? -1 : 0;
    gg_dataset_free(train);
    gg_dataset_free(test);
    for (int m = 0; m < MAX_MODELS; m++) free(res[m].curve_x);
    if (status < 0) return 1;
    return g_interrupted ? 130 : 0;
}
