/* Status message table and the per-thread last-error message. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "gg_error.h"

#define GG_ERROR_MSG_MAX 1024

static _Thread_local char last_msg[GG_ERROR_MSG_MAX];
static _Thread_local int last_status;

const char *gg_status_name(int status) {
    switch (status) {
#define GG_X_(name, value, msg) \
    case value:                 \
        return #name;
        GG_STATUS_LIST(GG_X_)
#undef GG_X_
    default:
        return "GG_ERR_UNKNOWN";
    }
}

const char *gg_status_message(int status) {
    switch (status) {
#define GG_X_(name, value, msg) \
    case value:                 \
        return msg;
        GG_STATUS_LIST(GG_X_)
#undef GG_X_
    default:
        return "unknown status code";
    }
}

const char *gg_last_error(void) { return last_msg; }
int gg_last_status(void) { return last_status; }

void gg_clear_error(void) {
    last_msg[0] = '\0';
    last_status = GG_OK;
}

int gg_error_set(int status, const char *func, const char *fmt, ...) {
    /* format into a local buffer first: the arguments may include gg_last_error() itself */
    char msg[GG_ERROR_MSG_MAX];
    int n = snprintf(msg, sizeof msg, "%s: ", func ? func : "groupgrad");
    if (n < 0 || (size_t)n >= sizeof msg) n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + n, sizeof msg - (size_t)n, fmt, ap);
    va_end(ap);
    memcpy(last_msg, msg, sizeof msg);
    last_status = status;
    return status;
}
