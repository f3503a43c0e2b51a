/* The README's autograd example: fit y = 3x - 2 with a 1-in, 1-out linear layer, by hand-written SGD. */
#include <math.h>
#include <stdio.h>

#include "groupgrad.h"

int main(void) {
    gg_tensor *x = gg_tensor_empty(GG_SHAPE(64, 1)), *w = gg_tensor_zeros(GG_SHAPE(1, 1));
    gg_tensor *b = gg_tensor_zeros(GG_SHAPE(1)), *y = NULL;
    gg_rand_uniform(x, -1, 1, NULL);
    gg_no_grad_begin(); /* targets are data, not part of the graph */
    y = gg_tensor_retain(gg_add_scalar(gg_mul_scalar(x, 3.0f), -2.0f));
    gg_no_grad_end();
    gg_requires_grad(w, true), gg_requires_grad(b, true);
    float loss_value = 0;
    for (int step = 0; step < 200; step++) {
        gg_tensor *loss = gg_mean(gg_square(gg_sub(gg_linear(x, w, b), y)), NULL, 0, false);
        if (!loss || gg_backward(loss) != GG_OK) return fprintf(stderr, "%s\n", gg_last_error()), 1;
        gg_tensor_item(loss, &loss_value);
        for (int i = 0; i < 2; i++) { /* SGD, lr 0.1; raw data writes are not recorded */
            gg_tensor *p = i ? b : w;
            gg_tensor_data(p)[0] -= 0.1f * gg_tensor_data(p->grad)[0];
            gg_zero_grad(p);
        }
        gg_tape_reset(NULL); /* frees this step's graph and intermediates */
    }
    printf("w = %.4f, b = %.4f, loss = %.2e (target w = 3, b = -2)\n", gg_tensor_data(w)[0],
           gg_tensor_data(b)[0], loss_value);
    int ok = fabsf(gg_tensor_data(w)[0] - 3) < 1e-3f && fabsf(gg_tensor_data(b)[0] + 2) < 1e-3f;
    gg_tensor_free(x), gg_tensor_free(w), gg_tensor_free(b), gg_tensor_free(y);
    return ok ? 0 : 1;
}
