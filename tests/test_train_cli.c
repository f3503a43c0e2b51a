/* examples/train_groupnet end to end, as a user runs it: a run stopped at --max-steps and resumed from its
 * checkpoint ends with exactly the parameters, buffers and optimizer state of the uninterrupted run; a
 * missing or corrupt dataset and a corrupt or mismatched checkpoint are clear errors naming the file; the
 * JSON, CSV and SVG outputs are there. The dataset is a small synthetic Fashion-MNIST written here (raw IDX
 * files), so the test needs neither the Debian package nor much time. The program's path comes from
 * the environment (GG_TRAIN_GROUPNET, set by tests/meson.build). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "groupgrad.h"

static char tmpdir[256];
static const char *prog;

static void rm_rf(const char *path) {
    struct stat st;
    if (lstat(path, &st)) return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *e;
        char p[1024];
        while (d && (e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
                snprintf(p, sizeof p, "%s/%s", path, e->d_name), rm_rf(p);
        if (d) closedir(d);
        rmdir(path);
    } else unlink(path);
}

static const char *tmp(const char *name) {
    static char buf[8][600];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 600, "%s/%s", tmpdir, name);
    return p;
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot write %s", path);
    cr_assert_eq(fwrite(data, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

/* Raw IDX files: n images of 28x28 whose brightness pattern depends on the label (so there is something
 * to learn), labels i % 10. */
static void write_idx_pair(const char *dir, const char *prefix, int n) {
    size_t ni = 16 + (size_t)n * 784, nl = 8 + (size_t)n;
    unsigned char *img = calloc(ni, 1), *lab = calloc(nl, 1);
    cr_assert(img && lab);
    const unsigned char hi[4] = {0, 0, 0x08, 0x03}, hl[4] = {0, 0, 0x08, 0x01};
    memcpy(img, hi, 4), memcpy(lab, hl, 4);
    unsigned dims[3] = {(unsigned)n, 28, 28};
    for (int d = 0; d < 3; d++)
        for (int b = 0; b < 4; b++) img[4 + 4 * d + b] = (unsigned char)(dims[d] >> (24 - 8 * b));
    for (int b = 0; b < 4; b++) lab[4 + b] = (unsigned char)((unsigned)n >> (24 - 8 * b));
    gg_rng rng;
    gg_rng_init(&rng, 99);
    gg_tensor *noise = gg_tensor_empty(GG_SHAPE((int64_t)n * 784));
    gg_rand_uniform(noise, 0, 60, &rng);
    for (int i = 0; i < n; i++) {
        const int c = i % 10;
        lab[8 + i] = (unsigned char)c;
        for (int y = 0; y < 28; y++)
            for (int x = 0; x < 28; x++) {
                int v = (int)gg_tensor_data(noise)[(size_t)i * 784 + (size_t)(y * 28 + x)];
                if ((y / 3 + c) % 4 == 0 || (x / 4) == c % 7) v += 180;
                img[16 + (size_t)i * 784 + (size_t)(y * 28 + x)] = (unsigned char)(v > 255 ? 255 : v);
            }
    }
    gg_tensor_free(noise);
    char p[700];
    snprintf(p, sizeof p, "%s/%s-images-idx3-ubyte", dir, prefix);
    write_file(p, img, ni);
    snprintf(p, sizeof p, "%s/%s-labels-idx1-ubyte", dir, prefix);
    write_file(p, lab, nl);
    free(img), free(lab);
}

static void setup(void) {
    prog = getenv("GG_TRAIN_GROUPNET");
    cr_assert_not_null(prog, "GG_TRAIN_GROUPNET is not set (run through meson test)");
    snprintf(tmpdir, sizeof tmpdir, "/tmp/gg_train_cli_XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
    cr_assert_eq(mkdir(tmp("data"), 0777), 0);
    write_idx_pair(tmp("data"), "train", 160);
    write_idx_pair(tmp("data"), "t10k", 48);
}

static void teardown(void) { rm_rf(tmpdir); }

TestSuite(train_cli, .init = setup, .fini = teardown, .timeout = 280);

/* Run the program with args (a shell fragment); stdout and stderr go to files in tmpdir; returns the exit
 * status. */
static int run(const char *args) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' %s >'%s' 2>'%s'", prog, args, tmp("stdout.txt"), tmp("stderr.txt"));
    int st = system(cmd);
    cr_assert_neq(st, -1, "cannot run %s", cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return calloc(1, 1);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = calloc((size_t)n + 1, 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) s[0] = '\0';
    fclose(f);
    return s;
}

static void expect_stderr(const char *needle) {
    char *e = slurp(tmp("stderr.txt"));
    cr_expect(strstr(e, needle) != NULL, "stderr lacks \"%s\":\n%s", needle, e);
    free(e);
}

/* The common arguments of a small run: 160 images in batches of 32 (5 steps per epoch), 1 thread
 * (bit-identical results hold for any fixed thread count; one keeps the test quick on a loaded machine). */
static const char *small_args(const char *out, const char *extra) {
    static char buf[2][2048];
    static int k;
    char *p = buf[k++ % 2];
    snprintf(p, 2048, "--data '%s' --out '%s' --epochs 2 --batch 32 --threads 1 --seed 5 --progress lines %s",
             tmp("data"), out, extra);
    return p;
}

/* The deterministic fields of history.epochs (epoch, step, loss, accuracies, lr), one line per epoch. */
static void history_prefix(const char *rows, char *out, size_t size) {
    size_t len = 0;
    for (const char *p = rows; p && *p && len + 1 < size;) {
        int commas = 0;
        for (; *p && *p != '\n'; p++) {
            if (*p == ',') commas++;
            if (commas < 6 && len + 1 < size) out[len++] = *p;
        }
        if (*p == '\n') p++;
        if (len + 1 < size) out[len++] = '\n';
    }
    out[len] = '\0';
}

Test(train_cli, resume_continues_bit_identically) {
    cr_assert_eq(run(small_args(tmp("a"), "")), 0, "uninterrupted run failed");
    cr_assert_eq(run(small_args(tmp("b"), "--max-steps 3")), 0, "stopped run failed");
    char *o = slurp(tmp("stdout.txt"));
    cr_assert(strstr(o, "--resume") != NULL, "the stopped run does not say how to resume:\n%s", o);
    free(o);
    char ckb[700], args[2048];
    snprintf(ckb, sizeof ckb, "%s/groupnet/checkpoint.safetensors", tmp("b"));
    gg_checkpoint *mid = gg_checkpoint_read(ckb);
    cr_assert_not_null(mid, "%s", gg_last_error());
    int64_t step = -1;
    cr_assert_eq(gg_checkpoint_get_meta_i64(mid, "train.step", &step), GG_OK);
    cr_assert_eq(step, 3, "the checkpoint was saved at step %lld", (long long)step);
    gg_checkpoint_free(mid);
    snprintf(args, sizeof args, "--data '%s' --threads 1 --progress lines --resume '%s'", tmp("data"), ckb);
    cr_assert_eq(run(args), 0, "resumed run failed");

    char cka[700];
    snprintf(cka, sizeof cka, "%s/groupnet/checkpoint.safetensors", tmp("a"));
    gg_checkpoint *a = gg_checkpoint_read(cka), *b = gg_checkpoint_read(ckb);
    cr_assert(a && b, "%s", gg_last_error());
    cr_assert_eq(gg_checkpoint_num_tensors(a), gg_checkpoint_num_tensors(b));
    cr_assert_gt(gg_checkpoint_num_tensors(a), 100, "only %d tensors in the checkpoint", gg_checkpoint_num_tensors(a));
    for (int i = 0; i < gg_checkpoint_num_tensors(a); i++) {
        const char *name = gg_checkpoint_name_at(a, i);
        gg_tensor *ta = gg_checkpoint_tensor_at(a, i), *tb = gg_checkpoint_get(b, name);
        cr_assert_not_null(tb, "%s missing from the resumed run", name);
        cr_assert_eq(ta->numel, tb->numel, "%s", name);
        cr_assert(memcmp(gg_tensor_data(ta), gg_tensor_data(tb), (size_t)ta->numel * sizeof(float)) == 0,
                  "%s differs between the uninterrupted and the resumed run", name);
    }
    const char *keys[] = {"train.step", "train.epoch", "loader.epoch", "loader.position", "train.correct",
                          "train.loss_sum_bits", "optim.state.fc.weight.step"};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        const char *va = gg_checkpoint_get_meta(a, keys[k]), *vb = gg_checkpoint_get_meta(b, keys[k]);
        cr_assert(va && vb && !strcmp(va, vb), "%s: %s vs %s", keys[k], va ? va : "(none)", vb ? vb : "(none)");
    }
    char ha[4096], hb[4096];
    history_prefix(gg_checkpoint_get_meta(a, "history.epochs"), ha, sizeof ha);
    history_prefix(gg_checkpoint_get_meta(b, "history.epochs"), hb, sizeof hb);
    cr_assert_str_eq(hb, ha, "the per-epoch history differs");
    cr_assert_str_eq(gg_checkpoint_get_meta(b, "history.groups"), gg_checkpoint_get_meta(a, "history.groups"),
                     "the group-count trajectory differs");
    gg_checkpoint_free(a), gg_checkpoint_free(b);
}

/* The gates move until --gate-freeze, then stay fixed while the weights keep training. */
static void gates_of(const char *ck, float *out, int *n) {
    gg_checkpoint *c = gg_checkpoint_read(ck);
    cr_assert_not_null(c, "%s", gg_last_error());
    *n = 0;
    for (int i = 0; i < gg_checkpoint_num_tensors(c); i++) {
        const char *name = gg_checkpoint_name_at(c, i);
        gg_tensor *t = gg_checkpoint_tensor_at(c, i);
        if (strncmp(name, "model.", 6) || strcmp(name + strlen(name) - 5, ".gate")) continue;
        memcpy(out + *n, gg_tensor_data(t), (size_t)t->numel * sizeof(float));
        *n += (int)t->numel;
    }
    gg_checkpoint_free(c);
}

Test(train_cli, gates_freeze) {
    for (int frozen = 0; frozen < 2; frozen++) {
        const char *out = tmp(frozen ? "f1" : "f0");
        char extra[64], ck[700], args[2048];
        snprintf(extra, sizeof extra, "--gate-freeze %s --max-steps 5", frozen ? "0.5" : "1");
        cr_assert_eq(run(small_args(out, extra)), 0);
        snprintf(ck, sizeof ck, "%s/groupnet/checkpoint.safetensors", out);
        float g5[64], g10[64];
        int n5 = 0, n10 = 0;
        gates_of(ck, g5, &n5);
        snprintf(args, sizeof args, "--data '%s' --threads 1 --progress lines --resume '%s'", tmp("data"), ck);
        cr_assert_eq(run(args), 0);
        gates_of(ck, g10, &n10);
        cr_assert_eq(n5, 18, "GroupNet-S has 18 gates, found %d", n5);
        cr_assert_eq(n10, 18);
        const bool same = memcmp(g5, g10, sizeof(float) * 18) == 0;
        if (frozen) cr_expect(same, "the gates moved after the freeze at step 5");
        else cr_expect(!same, "the gates did not move in steps 6-10 without a freeze");
    }
}

Test(train_cli, outputs_json_csv_svg) {
    cr_assert_eq(run(small_args(tmp("o"), "--epochs 1 --json --log-every 1")), 0);
    char *out = slurp(tmp("stdout.txt"));
    char *final = strstr(out, "\"final\":true");
    cr_assert_not_null(final, "no final JSON object:\n%s", out);
    const char *fields[] = {"\"model\":\"groupnet\"", "\"test_acc\":", "\"images_per_s\":", "\"params\":306684",
                            "\"macs\":", "\"groups\":["};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        cr_expect(strstr(out, fields[i]) != NULL, "JSON lacks %s:\n%s", fields[i], out);
    int lines = 0;
    for (char *p = out; *p; p++) lines += *p == '\n';
    cr_expect_eq(lines, 2, "one object per epoch and a final one, got %d lines:\n%s", lines, out);
    free(out);
    char p[700];
    snprintf(p, sizeof p, "%s/groupnet/log.csv", tmp("o"));
    char *csv = slurp(p);
    cr_expect(!strncmp(csv, "epoch,step,train_loss,train_acc,test_acc", 40), "log.csv header: %.80s", csv);
    cr_expect(strstr(csv, "\n1,5,") != NULL, "log.csv lacks the row of epoch 1 at step 5:\n%s", csv);
    free(csv);
    snprintf(p, sizeof p, "%s/groupnet/groups.csv", tmp("o"));
    char *g = slurp(p);
    int rows = 0;
    for (char *q = g; *q; q++) rows += *q == '\n';
    cr_expect_eq(rows, 1 + 5, "groups.csv: a header and a row per step, got %d lines:\n%s", rows, g);
    free(g);
    const char *svgs[] = {"groups.svg", "accuracy.svg"};
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/groupnet/%s", tmp("o"), svgs[i]);
        char *s = slurp(p);
        cr_expect(!strncmp(s, "<svg", 4) && strstr(s, "<polyline") && strstr(s, "</svg>"), "%s is not a chart",
                  svgs[i]);
        free(s);
    }
}

Test(train_cli, compare_table_and_chart) {
    cr_assert_eq(run(small_args(tmp("cmp"), "--epochs 1 --compare")), 0);
    char *o = slurp(tmp("stdout.txt"));
    const char *models[] = {"groupnet", "dense", "grouped:8", "depthwise"};
    for (int m = 0; m < 4; m++) cr_expect(strstr(o, models[m]) != NULL, "no %s in:\n%s", models[m], o);
    free(o);
    char p[700];
    snprintf(p, sizeof p, "%s/compare.csv", tmp("cmp"));
    char *csv = slurp(p);
    int rows = 0;
    for (char *q = csv; *q; q++) rows += *q == '\n';
    cr_expect_eq(rows, 5, "compare.csv: header + 4 models, got:\n%s", csv);
    cr_expect(strstr(csv, "\ndense,") && strstr(csv, ",306666,") && strstr(csv, "\ngrouped:8,") &&
                  strstr(csv, ",137322,") && strstr(csv, "\ndepthwise,") && strstr(csv, ",115146,"),
              "compare.csv lacks a model or its parameter count:\n%s", csv);
    free(csv);
    snprintf(p, sizeof p, "%s/compare.svg", tmp("cmp"));
    char *svg = slurp(p);
    cr_expect(!strncmp(svg, "<svg", 4) && strstr(svg, "depthwise"), "compare.svg is not the chart");
    free(svg);
}

Test(train_cli, missing_dataset) {
    cr_assert_eq(run("--data /nonexistent/fmnist --epochs 1"), 1);
    expect_stderr("/nonexistent/fmnist");
    expect_stderr("dataset-fashion-mnist");
}

Test(train_cli, truncated_dataset) {
    const char *data = getenv("GG_TEST_DATA");
    cr_assert_not_null(data);
    char args[1024];
    snprintf(args, sizeof args, "--data '%s/idx/fmnist_trunc' --epochs 1", data);
    cr_assert_eq(run(args), 1);
    expect_stderr("train-images-idx3-ubyte.gz");
    expect_stderr("truncated");
}

Test(train_cli, corrupt_and_mismatched_checkpoints) {
    cr_assert_eq(run(small_args(tmp("c"), "--max-steps 1")), 0);
    char ck[700], bad[700], args[2048];
    snprintf(ck, sizeof ck, "%s/groupnet/checkpoint.safetensors", tmp("c"));
    /* truncated: the first half of the file */
    FILE *f = fopen(ck, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    snprintf(bad, sizeof bad, "%s", tmp("half.safetensors"));
    write_file(bad, buf, (size_t)n / 2);
    snprintf(args, sizeof args, "--data '%s' --resume '%s'", tmp("data"), bad);
    cr_assert_eq(run(args), 1, "a truncated checkpoint was accepted");
    expect_stderr(bad);
    /* garbage bytes */
    memset(buf + 8, '#', 64);
    snprintf(bad, sizeof bad, "%s", tmp("garbage.safetensors"));
    write_file(bad, buf, (size_t)n);
    snprintf(args, sizeof args, "--data '%s' --resume '%s'", tmp("data"), bad);
    cr_assert_eq(run(args), 1, "a corrupt checkpoint was accepted");
    expect_stderr(bad);
    free(buf);
    /* options that contradict the checkpoint */
    snprintf(args, sizeof args, "--data '%s' --resume '%s' --model dense", tmp("data"), ck);
    cr_assert_eq(run(args), 1);
    expect_stderr("--model disagrees");
    snprintf(args, sizeof args, "--data '%s' --resume '%s' --batch 64", tmp("data"), ck);
    cr_assert_eq(run(args), 1);
    expect_stderr("--batch disagrees");
    /* a missing file */
    snprintf(args, sizeof args, "--data '%s' --resume '%s'", tmp("data"), tmp("nope.safetensors"));
    cr_assert_eq(run(args), 1);
    expect_stderr("nope.safetensors");
}

Test(train_cli, bad_command_lines) {
    const char *cases[][2] = {{"--model grouped:3", "--model needs"},    {"--epochs 0", "--epochs needs"},
                              {"--batch x", "--batch needs"},            {"--optimizer lbfgs", "--optimizer needs"},
                              {"--frobnicate", "unknown option"},        {"--compare --model dense", "--compare"},
                              {"--lr", "--lr needs"},
                              {"--out", "missing value for '--out'"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cr_expect_eq(run(cases[i][0]), 2, "'%s' was accepted", cases[i][0]);
        expect_stderr(cases[i][1]);
    }
    cr_assert_eq(run("--help"), 0);
    char *o = slurp(tmp("stdout.txt"));
    cr_expect(strstr(o, "--resume FILE") && strstr(o, "--budget"), "--help is incomplete:\n%s", o);
    free(o);
}
