/* Internal wrappers around the external kernel libraries: every BLIS call lives in blis_backend.c and
 * every libxsmm call in xsmm_backend.c (Debian ships libxsmm 1.17, whose API differs from 2.x). */
#ifndef GG_BACKEND_H
#define GG_BACKEND_H

void gg__blis_set_num_threads(int n);

#endif
