/* groupgrad runtime settings: the one thread count that governs groupgrad's OpenMP kernels, BLIS and
 * libxsmm alike, so that nothing oversubscribes the cores. */
#ifndef GG_RUNTIME_H
#define GG_RUNTIME_H

#ifdef __cplusplus
extern "C" {
#endif

/* Set the number of threads (>= 1) for every kernel groupgrad runs, including BLIS and libxsmm.
 * Default: the GG_NUM_THREADS environment variable, else OMP_NUM_THREADS, else the number of cores. */
int gg_set_num_threads(int n);
int gg_get_num_threads(void);

/* Library version. */
#define GG_VERSION_MAJOR 0
#define GG_VERSION_MINOR 1
#define GG_VERSION_PATCH 0
const char *gg_version(void);

#ifdef __cplusplus
}
#endif
#endif
