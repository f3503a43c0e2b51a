/* The only file that calls BLIS. */
#include <blis.h>

#include "gg_backend.h"

void gg__blis_set_num_threads(int n) { bli_thread_set_num_threads((dim_t)n); }
