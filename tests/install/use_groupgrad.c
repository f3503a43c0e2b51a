/* Install test: an outside program that sees groupgrad only through the installed umbrella header and
 * pkg-config. Prints the version, a [2,3] tensor and a checksum that scripts/install_check.sh verifies. */
#include <groupgrad/groupgrad.h>

int main(void) {
    gg_tensor *x = gg_tensor_arange(0, 6, 1);
    gg_tensor *m = gg_tensor_view(x, GG_SHAPE(2, 3));
    float buf[6];
    if (!m || gg_tensor_print(m) != GG_OK || gg_tensor_to_buffer(m, buf, 6) != GG_OK) {
        fprintf(stderr, "use_groupgrad: %s\n", gg_last_error());
        gg_tensor_free(m);
        gg_tensor_free(x);
        return 1;
    }
    float sum = 0;
    for (int i = 0; i < 6; i++) sum += buf[i];
    printf("version %s\nsum %g\n", gg_version(), (double)sum);
    gg_tensor_free(m);
    gg_tensor_free(x);
    return 0;
}
