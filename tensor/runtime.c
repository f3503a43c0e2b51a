/* The single thread-count setting; it is pushed to OpenMP and BLIS (libxsmm kernels run inside our
 * OpenMP regions, so they follow it too). */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "gg_backend.h"
#include "gg_error.h"
#include "gg_runtime.h"

static int n_threads;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static int env_threads(const char *name) {
    const char *s = getenv(name);
    if (!s || !*s) return 0;
    char *end;
    long v = strtol(s, &end, 10);
    return (*end == '\0' && v > 0 && v <= 4096) ? (int)v : 0;
}

static void apply(int n) {
    n_threads = n;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    gg__blis_set_num_threads(n);
}

static void init_threads(void) {
    int n = env_threads("GG_NUM_THREADS");
    if (!n) n = env_threads("OMP_NUM_THREADS");
    if (!n) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 ? (int)c : 1;
    }
    apply(n);
}

int gg_set_num_threads(int n) {
    if (n < 1 || n > 4096) return GG_FAIL(GG_ERR_ARG, "thread count %d is outside [1, 4096]", n);
    pthread_once(&init_once, init_threads);
    apply(n);
    return GG_OK;
}

int gg_get_num_threads(void) {
    pthread_once(&init_once, init_threads);
    return n_threads;
}

const char *gg_version(void) { return "0.1.0"; }
