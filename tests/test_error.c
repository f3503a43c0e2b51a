/* Tests of the error model (gg_error.h): the status table, the per-thread last-error message, sticky NULL
 * propagation through chains of calls, and message truncation. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <pthread.h>

#include "groupgrad.h"
#include "gg_test_util.h"

/* The table as the header documents it, written out independently of GG_STATUS_LIST. */
static const struct {
    int code;
    const char *name;
    const char *message;
} expected_status[] = {
    {0, "GG_OK", "success"},
    {-1, "GG_ERR_ARG", "invalid argument"},
    {-2, "GG_ERR_SHAPE", "shape mismatch"},
    {-3, "GG_ERR_INDEX", "index or dimension out of range"},
    {-4, "GG_ERR_OVERFLOW", "size overflows"},
    {-5, "GG_ERR_NOMEM", "out of memory"},
    {-6, "GG_ERR_IO", "input/output error"},
    {-7, "GG_ERR_FORMAT", "malformed or unsupported file format"},
    {-8, "GG_ERR_UNSUPPORTED", "unsupported operation"},
    {-9, "GG_ERR_STATE", "invalid state for this operation"},
    {-10, "GG_ERR_NUMERIC", "non-finite value"},
};
#define N_STATUS ((int)(sizeof expected_status / sizeof expected_status[0]))

ParameterizedTestParameters(error, status_table) {
    static int rows[N_STATUS];
    for (int i = 0; i < N_STATUS; i++) rows[i] = i;
    return cr_make_param_array(int, rows, N_STATUS);
}

ParameterizedTest(int *row, error, status_table) {
    int code = expected_status[*row].code;
    cr_assert_str_eq(gg_status_name(code), expected_status[*row].name, "name of %d", code);
    cr_assert_str_eq(gg_status_message(code), expected_status[*row].message, "message of %d", code);
}

Test(error, status_count_matches_table) {
    cr_assert_eq(GG_STATUS_COUNT, N_STATUS);
    cr_assert_eq(GG_ERR_NUMERIC, -(N_STATUS - 1));
}

Test(error, ok_message) {
    cr_assert_str_eq(gg_status_name(GG_OK), "GG_OK");
    cr_assert_str_eq(gg_status_message(GG_OK), "success");
}

Test(error, unknown_codes_give_strings) {
    const int codes[] = {1, 7, -11, -12, -42, 12345, -2147483647 - 1, 2147483647};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        const char *n = gg_status_name(codes[i]);
        const char *m = gg_status_message(codes[i]);
        cr_assert_not_null(n, "name of %d", codes[i]);
        cr_assert_not_null(m, "message of %d", codes[i]);
        cr_assert_gt(strlen(n), 0, "empty name for %d", codes[i]);
        cr_assert_gt(strlen(m), 0, "empty message for %d", codes[i]);
        for (int k = 0; k < N_STATUS; k++)
            cr_assert_str_neq(n, expected_status[k].name, "unknown code %d named like a known one", codes[i]);
    }
}

Test(error, starts_clear) {
    cr_assert_not_null(gg_last_error());
    cr_assert_str_eq(gg_last_error(), "");
    cr_assert_eq(gg_last_status(), GG_OK);
}

Test(error, failing_call_names_function_and_shapes) {
    gg_tensor *x = gg_tensor_zeros(GG_SHAPE(3, 7));
    cr_assert_not_null(x);
    gg_tensor *v = gg_tensor_view(x, GG_SHAPE(4, 5));
    cr_assert_null(v);
    gt_assert_error(GG_ERR_SHAPE, "gg_tensor_view");
    gt_assert_msg_has("[4,5]");
    gt_assert_msg_has("[3,7]");
    gg_tensor_free(x);
}

Test(error, clear_error) {
    gg_tensor *x = gg_tensor_zeros(GG_SHAPE(2, 3));
    int perm[2] = {0, 0};
    cr_assert_null(gg_tensor_permute(x, perm));
    cr_assert_neq(gg_last_status(), GG_OK);
    cr_assert_neq(strlen(gg_last_error()), 0);
    gg_clear_error();
    cr_assert_str_eq(gg_last_error(), "");
    cr_assert_eq(gg_last_status(), GG_OK);
    gg_tensor_free(x);
}

Test(error, error_set_formats_and_returns_status) {
    int st = gg_error_set(GG_ERR_IO, "my_reader", "could not open %s (%d)", "a.npy", 42);
    cr_assert_eq(st, GG_ERR_IO);
    cr_assert_eq(gg_last_status(), GG_ERR_IO);
    const char *msg = gg_last_error();
    const char *f = strstr(msg, "my_reader");
    const char *body = strstr(msg, "could not open a.npy (42)");
    cr_assert_not_null(f, "message \"%s\"", msg);
    cr_assert_not_null(body, "message \"%s\"", msg);
    cr_assert_lt(f, body, "function name should precede the text: \"%s\"", msg);
}

/* An extension wrapping the previous message ("while loading: <inner message>") passes the pointer from
 * gg_last_error() back into gg_error_set; the pointer is documented valid until that call fails, so the
 * call must read it before overwriting the buffer. */
Test(error, error_set_can_wrap_previous_message) {
    gg_error_set(GG_ERR_IO, "inner_fn", "cannot read %s", "x.npy");
    gg_error_set(GG_ERR_IO, "outer_fn", "while loading weights: %s", gg_last_error());
    const char *msg = gg_last_error();
    cr_assert_not_null(strstr(msg, "outer_fn"), "message \"%s\"", msg);
    cr_assert_not_null(strstr(msg, "while loading weights: inner_fn: cannot read x.npy"), "message \"%s\"", msg);
}

static int failing_helper(void) { return GG_FAIL(GG_ERR_STATE, "bad state %d", 3); }

Test(error, fail_macro_uses_func_name) {
    cr_assert_eq(failing_helper(), GG_ERR_STATE);
    gt_assert_error(GG_ERR_STATE, "failing_helper");
    gt_assert_msg_has("bad state 3");
}

Test(error, later_failure_replaces_message) {
    gg_tensor *x = gg_tensor_zeros(GG_SHAPE(2, 3));
    cr_assert_null(gg_tensor_view(x, GG_SHAPE(5)));
    gt_assert_msg_has("gg_tensor_view");
    int perm[2] = {0, 2};
    cr_assert_null(gg_tensor_permute(x, perm));
    gt_assert_msg_has("gg_tensor_permute");
    cr_assert_null(strstr(gg_last_error(), "gg_tensor_view"), "old message kept: %s", gg_last_error());
    gg_tensor_free(x);
}

/* Header: the pointer stays valid until the next call that fails or clears, so successful calls leave
 * the recorded error alone (that is what lets a chain be checked once at its end). */
Test(error, success_keeps_message) {
    cr_assert_eq(gg_error_set(GG_ERR_ARG, "first_fn", "first"), GG_ERR_ARG);
    gg_tensor *x = gg_tensor_ones(GG_SHAPE(2, 2));
    gg_tensor *t = gg_tensor_transpose(x, 0, 1);
    cr_assert_not_null(t);
    cr_assert_eq(gg_last_status(), GG_ERR_ARG);
    gt_assert_msg_has("first_fn");
    gg_tensor_free(t);
    gg_tensor_free(x);
}

Test(error, sticky_null_keeps_first_message) {
    gg_tensor *x = gg_tensor_zeros(GG_SHAPE(3, 7));
    gg_tensor *t = gg_tensor_transpose(gg_tensor_view(x, GG_SHAPE(4, 5)), 0, 1);
    cr_assert_null(t);
    gt_assert_error(GG_ERR_SHAPE, "gg_tensor_view");
    cr_assert_null(strstr(gg_last_error(), "gg_tensor_transpose"), "message replaced: %s", gg_last_error());
    gg_tensor_free(x);
}

Test(error, sticky_through_long_chain) {
    gg_tensor *x = gg_tensor_zeros(GG_SHAPE(2, 3));
    int perm[2] = {1, 1};
    gg_tensor *y = gg_tensor_flatten(
        gg_tensor_contiguous(gg_tensor_unsqueeze(gg_tensor_slice(gg_tensor_permute(x, perm), 0, 0, 1, 1), 0)),
        0, -1);
    cr_assert_null(y);
    gt_assert_msg_has("gg_tensor_permute");
    char saved[1100];
    snprintf(saved, sizeof saved, "%s", gg_last_error());
    int st = gg_last_status();
    /* Status-returning functions given NULL fail too and keep the message. */
    cr_assert_lt(gg_tensor_fill(NULL, 1.0f), 0);
    float v;
    cr_assert_lt(gg_tensor_item(NULL, &v), 0);
    cr_assert_null(gg_tensor_copy(NULL));
    cr_assert_null(gg_tensor_reshape(NULL, GG_SHAPE(6)));
    cr_assert_str_eq(gg_last_error(), saved);
    cr_assert_eq(gg_last_status(), st);
    gg_tensor_free(x);
}

Test(error, free_null_is_noop) {
    gg_tensor_free(NULL);
    gg_free(NULL);
    cr_assert_eq(gg_last_status(), GG_OK);
}

typedef struct thread_result {
    int status_before;
    int status_after;
    char msg[256];
} thread_result;

static void *thread_fail(void *arg) {
    thread_result *r = arg;
    r->status_before = gg_last_status();
    gg_tensor *x = gg_tensor_zeros(GG_SHAPE(2, 2));
    gg_tensor *bad = gg_tensor_select(x, 0, 5);
    if (bad) gg_tensor_free(bad);
    r->status_after = gg_last_status();
    snprintf(r->msg, sizeof r->msg, "%s", gg_last_error());
    gg_tensor_free(x);
    return NULL;
}

Test(error, thread_local_failure_not_seen_on_main) {
    gg_clear_error();
    thread_result r = {0};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, thread_fail, &r), 0);
    cr_assert_eq(pthread_join(th, NULL), 0);
    cr_assert_neq(r.status_after, GG_OK, "the failing select on the thread recorded nothing");
    cr_assert_not_null(strstr(r.msg, "gg_tensor_select"), "thread message \"%s\"", r.msg);
    cr_assert_eq(gg_last_status(), GG_OK);
    cr_assert_str_eq(gg_last_error(), "");
}

Test(error, thread_starts_without_main_error) {
    gg_error_set(GG_ERR_NUMERIC, "main_fn", "main thread problem");
    thread_result r = {0};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, thread_fail, &r), 0);
    cr_assert_eq(pthread_join(th, NULL), 0);
    cr_assert_eq(r.status_before, GG_OK, "thread saw the main thread's error");
    cr_assert_null(strstr(r.msg, "main_fn"));
    gt_assert_error(GG_ERR_NUMERIC, "main_fn");
}

Test(error, long_message_truncated_safely) {
    static char big[5000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    big[0] = 'S';
    cr_assert_eq(gg_error_set(GG_ERR_ARG, "long_fn", "%s|%s", big, big), GG_ERR_ARG);
    const char *msg = gg_last_error();
    size_t len = strlen(msg);
    cr_assert_leq(len, 1023, "message is %zu bytes, header promises truncation at 1023", len);
    cr_assert_geq(len, 500, "message was cut too short: %zu bytes", len);
    cr_assert_not_null(strstr(msg, "long_fn"));
    cr_assert_not_null(strstr(msg, "Sxxxxxxxx"));
    cr_assert_eq(gg_last_status(), GG_ERR_ARG);
    /* The next message is recorded normally after a truncated one. */
    gg_error_set(GG_ERR_SHAPE, "short_fn", "ok");
    gt_assert_error(GG_ERR_SHAPE, "short_fn");
    cr_assert_lt(strlen(gg_last_error()), 100);
}

/* A failed call changes nothing: the destination of a mismatched copy keeps its values and version. */
Test(error, failed_call_changes_nothing) {
    gg_tensor *dst = gg_tensor_full(GG_SHAPE(2, 3), 5.0f);
    gg_tensor *src = gg_tensor_ones(GG_SHAPE(3, 2));
    uint64_t v0 = dst->storage->version;
    cr_assert_eq(gg_tensor_copy_into(dst, src), GG_ERR_SHAPE);
    gt_assert_msg_has("gg_tensor_copy_into");
    gt_assert_all(dst, 5.0f);
    cr_assert_eq(dst->storage->version, v0);
    gg_tensor_free(src);
    gg_tensor_free(dst);
}
