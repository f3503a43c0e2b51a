/* groupgrad error model: status codes, their message table, and a per-thread last-error message.
 *
 * Every library function that can fail returns a status (GG_OK == 0, errors are negative) or NULL, and
 * records a message that names the function, the problem and the shapes involved, e.g.
 *   "gg_tensor_view: shape [4,5] has 20 elements, tensor [3,7] has 21"
 * A failed call changes nothing: arguments are checked before anything is allocated or written.
 * Nothing in the library calls abort/exit/assert on a caller mistake.
 *
 * Sticky errors: a function handed a NULL tensor (typically the failed result of an earlier call) returns
 * NULL / an error and keeps the message already recorded, so a chain of calls can be checked once at its
 * end. Call gg_clear_error() to start afresh. */
#ifndef GG_ERROR_H
#define GG_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

/* X(name, value, message). One table generates the enum and the message lookups. */
#define GG_STATUS_LIST(X)                                                        \
    X(GG_OK, 0, "success")                                                      \
    X(GG_ERR_ARG, -1, "invalid argument")                                        \
    X(GG_ERR_SHAPE, -2, "shape mismatch")                                        \
    X(GG_ERR_INDEX, -3, "index or dimension out of range")                       \
    X(GG_ERR_OVERFLOW, -4, "size overflows")                                     \
    X(GG_ERR_NOMEM, -5, "out of memory")                                         \
    X(GG_ERR_IO, -6, "input/output error")                                       \
    X(GG_ERR_FORMAT, -7, "malformed or unsupported file format")                 \
    X(GG_ERR_UNSUPPORTED, -8, "unsupported operation")                           \
    X(GG_ERR_STATE, -9, "invalid state for this operation")                      \
    X(GG_ERR_NUMERIC, -10, "non-finite value")

typedef enum gg_status {
#define GG_X_(name, value, msg) name = value,
    GG_STATUS_LIST(GG_X_)
#undef GG_X_
    GG_STATUS_COUNT = 11 /* number of codes: GG_OK .. GG_ERR_NUMERIC */
} gg_status;

/* Symbolic name ("GG_ERR_SHAPE") and generic message ("shape mismatch") of a status; never NULL. */
const char *gg_status_name(int status);
const char *gg_status_message(int status);

/* The last error recorded on this thread: "" when none. The pointer stays valid until the next
 * groupgrad call on this thread that fails or clears the error. */
const char *gg_last_error(void);
/* Status of the last error recorded on this thread (GG_OK when none). */
int gg_last_status(void);
/* Forget the last error on this thread. */
void gg_clear_error(void);

/* Record an error and return `status`. For library code (and extensions built on groupgrad): `func` is
 * the public function's name, the rest is a printf format. The message is truncated at 1023 bytes. */
int gg_error_set(int status, const char *func, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

#define GG_FAIL(status, ...) gg_error_set((status), __func__, __VA_ARGS__)

#ifdef __cplusplus
}
#endif
#endif
