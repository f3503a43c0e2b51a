/* A small CNN trained on Fashion-MNIST as a user writes it: nn modules, the tape, AdamW and the loader. Usage:
 * small_cnn [data_dir [steps [subset]]] (Debian's dataset, 800 steps, 30000 training images; at most `subset`
 * test images). Exits 77 (meson: skipped) when the dataset is missing (apt-get install dataset-fashion-mnist). */
#include <stdio.h>
#include <stdlib.h>

#include "groupgrad.h"

#define CHECK(ok) \
    do { if (!(ok)) { fprintf(stderr, "small_cnn: %s\n", gg_last_error()); goto done; } } while (0)

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : NULL;
    const int steps = argc > 2 ? atoi(argv[2]) : 800, subset = argc > 3 ? atoi(argv[3]) : 30000;
    gg_dataset *train = gg_fashion_mnist_load(dir, true);
    gg_dataset *test = train ? gg_fashion_mnist_load(dir, false) : NULL;
    gg_module *net = gg_nn_sequential_new();
    gg_optim *opt = gg_optim_new(GG_OPTIM_ADAMW);
    gg_loader *loader = NULL;
    int status = !test && gg_last_status() == GG_ERR_IO ? 77 : 1, built = net != NULL, r = 0; /* 77: skip */
    CHECK(test);
    gg_rng rng; /* parameter initialisation: the same network for the same seed */
    gg_rng_init(&rng, 42);
    gg_conv2d_params same = gg_conv2d_make(1, 1, 1, 1); /* 3x3, stride 1, padding 1 */
    gg_module *layers[] = { /* conv-bn-relu-pool x2, then a linear classifier: [N,1,28,28] -> [N,10] */
        gg_nn_conv2d_new(1, 32, 3, &same, false, &rng), gg_nn_batchnorm2d_new(32), gg_nn_relu_new(),
        gg_nn_maxpool2d_new(2, 0, 0), gg_nn_conv2d_new(32, 64, 3, &same, false, &rng),
        gg_nn_batchnorm2d_new(64), gg_nn_relu_new(), gg_nn_maxpool2d_new(2, 0, 0), gg_nn_flatten_new(1, -1),
        gg_nn_linear_new(64 * 7 * 7, 10, true, &rng)};
    for (size_t i = 0; i < sizeof layers / sizeof *layers; i++) /* append takes ownership, even on failure */
        built &= gg_nn_sequential_append(net, layers[i]) == GG_OK;
    CHECK(built && opt);
    gg_tensor *params[16];
    const int n_params = gg_module_parameters(net, params, 16);
    gg_optim_hparams hp = gg_adamw_hparams(2e-3); /* no weight decay on biases and BatchNorm */
    CHECK(n_params > 0 && n_params <= 16 && gg_optim_add_params(opt, params, NULL, n_params, &hp,
                                                                gg_optim_filter_no_decay, NULL) > 0);
    gg_loader_options lo = gg_loader_default_options();
    lo.batch_size = 128, lo.seed = 1, lo.subset = subset, lo.subset_shuffle = true;
    CHECK((loader = gg_loader_new(train, &lo)));
    printf("small_cnn: %lld parameters, %d steps of batch 128 on %lld training images\n",
           (long long)gg_module_num_parameters(net, false), steps, (long long)gg_loader_num_samples(loader));
    gg_batch b;
    double loss_sum = 0;
    for (int step = 1, last = 0; step <= steps; step++) {
        while ((r = gg_loader_next(loader, &b)) == 0) {} /* 0: an epoch ended, the next one starts */
        CHECK(r > 0);
        gg_optim_zero_grad(opt);
        gg_tensor *loss = gg_cross_entropy(gg_module_forward(net, b.x), b.labels, b.n, GG_REDUCE_MEAN, 0.0f);
        float value = 0;
        CHECK(loss && !gg_backward(loss) && !gg_optim_step(opt) && !gg_tensor_item(loss, &value));
        loss_sum += value;
        if (step % 50 == 0 || step == steps) /* the mean training loss since the last line */
            printf("step %4d  loss %.4f\n", step, loss_sum / (step - last)), loss_sum = 0, last = step;
        gg_tape_reset(NULL); /* frees this step's graph and activations */
    }
    gg_loader_free(loader);
    lo.batch_size = 500, lo.shuffle = false, lo.subset = subset < test->n ? subset : 0; /* 0: all 10000 */
    CHECK((loader = gg_loader_new(test, &lo)));
    gg_module_eval(net), gg_no_grad_begin(); /* BatchNorm: running statistics; no graph recorded */
    int64_t correct = 0;
    while ((r = gg_loader_next(loader, &b)) > 0) {
        gg_tensor *logits = gg_module_forward(net, b.x); /* [n,10], contiguous */
        if (!logits) break;
        const float *z = gg_tensor_data(logits);
        for (int64_t i = 0, best = 0; i < b.n; correct += best == b.labels[i], i++, best = 0)
            for (int c = 1; c < 10; c++) best = z[i * 10 + c] > z[i * 10 + best] ? c : best;
        gg_tape_reset(NULL);
    }
    gg_no_grad_end();
    CHECK(r == 0); /* the loop ended at the end of the epoch, not on an error */
    const int64_t n_test = gg_loader_num_samples(loader);
    printf("test accuracy %.2f%% (%lld images)\n", 100.0 * (double)correct / n_test, (long long)n_test);
    status = 0;
done:
    gg_tape_reset(NULL);
    gg_loader_free(loader), gg_optim_free(opt), gg_module_free(net);
    gg_dataset_free(train), gg_dataset_free(test);
    return status;
}
