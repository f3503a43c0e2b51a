/* groupgrad optimizers: SGD (momentum, dampening, Nesterov, weight decay), Adam and AdamW (amsgrad
 * optional) with the update rules of torch.optim 1.13, over parameter groups; learning-rate schedules
 * (step decay, linear warm-up + cosine annealing); gradient clipping by global norm.
 *
 * Tutorial
 *   gg_optim *opt = gg_optim_new(GG_OPTIM_SGD);
 *   gg_optim_hparams hp = gg_sgd_hparams(0.1);  hp.momentum = 0.9;  hp.weight_decay = 5e-4;
 *   // decayed group for weights, a weight_decay = 0 group for rank <= 1 parameters (biases, BatchNorm
 *   // scale/shift, DGConv gates):
 *   gg_optim_add_params(opt, params, names, n, &hp, gg_optim_filter_no_decay, NULL);
 *   gg_lr_schedule s = gg_lr_cosine(500, 0.0, 30000, 0.0);        // 500 warm-up steps, then cosine
 *   for (int64_t t = 0; t < 30000; t++) {
 *       gg_optim_zero_grad(opt);
 *       ... forward, gg_backward(loss) ...
 *       gg_optim_clip_grad_norm(opt, 5.0, NULL);
 *       gg_optim_apply_schedule(opt, &s, t);                       // each group's lr from its base lr
 *       gg_optim_step(opt);
 *       gg_tape_reset(NULL);
 *   }
 *   gg_optim_free(opt);
 *
 * Parameters are leaf tensors; the optimizer takes a reference to each (they stay alive until
 * gg_optim_free) and updates their data in place without recording anything on the tape (nothing here
 * is a differentiable op), bumping each parameter's version counter. A parameter whose .grad is NULL is
 * skipped by a step, as PyTorch skips p.grad is None; a zeroed gradient is a real (zero) gradient.
 *
 * Update rules (g = p.grad, t = the parameter's step count after the increment; every coefficient is
 * computed in double and rounded to float, the arithmetic is float, as PyTorch on CPU):
 *   SGD    g += wd p;  if momentum: b = (t == 1 ? g : momentum b + (1 - dampening) g),
 *          g = nesterov ? g + momentum b : b;   p -= lr g
 *   Adam   g += wd p;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  vmax = max(vmax, v) (amsgrad);
 *          p -= lr / (1 - b1^t) * m / (sqrt(v or vmax) / sqrt(1 - b2^t) + eps)
 *   AdamW  p *= 1 - lr wd (decoupled decay, before the update), then Adam with no gradient decay.
 *
 * State. All state is allocated when parameters are added (a step allocates nothing): per parameter a
 * step count and, depending on the group, momentum_buffer (SGD with momentum), exp_avg and exp_avg_sq
 * (Adam/AdamW) and max_exp_avg_sq (amsgrad). It is exposed by name ("<param>.exp_avg", "<param>.step",
 * see gg_optim_state) so that checkpoints (gg_checkpoint.h) save and restore it; restoring the buffers
 * and step counts resumes the exact trajectory.
 *
 * Errors as everywhere in groupgrad: a negative status (or NULL) and a message naming the function, the
 * parameter and the shapes; a failed call changes nothing. */
#ifndef GG_OPTIM_H
#define GG_OPTIM_H

#include <stdbool.h>
#include <stdint.h>

#include "gg_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum gg_optim_kind {
    GG_OPTIM_SGD,   /* torch.optim.SGD */
    GG_OPTIM_ADAM,  /* torch.optim.Adam */
    GG_OPTIM_ADAMW, /* torch.optim.AdamW */
    GG_OPTIM_KIND_COUNT
} gg_optim_kind;

/* Hyperparameters of one parameter group. Fields an optimizer does not use are ignored. */
typedef struct gg_optim_hparams {
    double lr;           /* >= 0; also the group's base lr for the schedules */
    double weight_decay; /* >= 0; SGD/Adam: L2 term added to the gradient; AdamW: decoupled */
    double momentum;     /* SGD, >= 0 */
    double dampening;    /* SGD */
    bool nesterov;       /* SGD; needs momentum > 0 and dampening == 0 */
    double beta1, beta2; /* Adam/AdamW, in [0, 1) */
    double eps;          /* Adam/AdamW, >= 0 */
    bool amsgrad;        /* Adam/AdamW */
} gg_optim_hparams;

/* PyTorch's defaults: SGD momentum/dampening/weight_decay 0, no Nesterov; Adam betas (0.9, 0.999),
 * eps 1e-8, weight_decay 0; AdamW the same with weight_decay 1e-2. */
gg_optim_hparams gg_sgd_hparams(double lr);
gg_optim_hparams gg_adam_hparams(double lr);
gg_optim_hparams gg_adamw_hparams(double lr);

typedef struct gg_optim gg_optim;

/* An optimizer with no parameters (caller owns; gg_optim_free). NULL on a bad kind or no memory. */
gg_optim *gg_optim_new(gg_optim_kind kind);
/* Releases the state and the references to the parameters; NULL is a no-op. */
void gg_optim_free(gg_optim *opt);
gg_optim_kind gg_optim_get_kind(const gg_optim *opt);

/* Add a parameter group: params[0..n-1] (n >= 1) with names[0..n-1] (copied; names == NULL names them
 * "p<k>" with k the parameter's index in the optimizer) and hyperparameters hp (copied). Each parameter
 * must be a leaf without broadcast (stride-0) dimensions, must not share elements with a parameter already
 * in the optimizer, and needs a unique non-empty name. Allocates the group's state (zeros).
 * Returns the new group's index (>= 0) or a negative status. */
int gg_optim_add_group(gg_optim *opt, gg_tensor *const *params, const char *const *names, int n,
                       const gg_optim_hparams *hp);

/* Chooses the parameters that get no weight decay. */
typedef bool (*gg_optim_param_filter)(const char *name, const gg_tensor *param, void *ctx);
/* True for parameters of rank <= 1: biases, BatchNorm scales/shifts, DGConv gates (the usual choice). */
bool gg_optim_filter_no_decay(const char *name, const gg_tensor *param, void *ctx);
/* True when the name contains one of the substrings in ctx, a NULL-terminated const char *[] (e.g.
 * {"bn", "gate", NULL}). */
bool gg_optim_filter_name_contains(const char *name, const gg_tensor *param, void *ctx);
/* Split params into two groups with hp: the ones `no_decay` accepts get weight_decay 0, the others hp's
 * weight decay (no_decay NULL: one group). An empty group is not created. Order inside each group follows
 * params. Returns the number of groups added (1 or 2) or a negative status (then nothing was added). */
int gg_optim_add_params(gg_optim *opt, gg_tensor *const *params, const char *const *names, int n,
                        const gg_optim_hparams *hp, gg_optim_param_filter no_decay, void *ctx);

/* One update of every parameter that has a gradient. Checks every gradient's shape first (a mismatch
 * fails naming the parameter, and nothing is updated). */
int gg_optim_step(gg_optim *opt);
/* Zero the .grad of every parameter (buffers kept, as gg_zero_grad). */
void gg_optim_zero_grad(gg_optim *opt);

int gg_optim_num_groups(const gg_optim *opt);
int gg_optim_num_params(const gg_optim *opt);
/* Parameter k (borrowed), its name (owned by the optimizer) and its group; NULL / -1 when out of range. */
gg_tensor *gg_optim_param(const gg_optim *opt, int k);
const char *gg_optim_param_name(const gg_optim *opt, int k);
int gg_optim_param_group(const gg_optim *opt, int k);
/* A copy of group g's hyperparameters (lr is the current one). */
int gg_optim_get_hparams(const gg_optim *opt, int g, gg_optim_hparams *out);
/* Current and base learning rate of group g (-1 and an error when out of range). */
double gg_optim_get_lr(const gg_optim *opt, int g);
double gg_optim_get_base_lr(const gg_optim *opt, int g);
/* Set the current lr of group g, or of every group when g == -1 (the base lr is unchanged). lr >= 0. */
int gg_optim_set_lr(gg_optim *opt, int g, double lr);

/* ---- state, by name, for checkpoints ----
 * Entries, in order of parameters: "<name>.momentum_buffer" (SGD with momentum), "<name>.exp_avg",
 * "<name>.exp_avg_sq", "<name>.max_exp_avg_sq" (amsgrad) as tensors shaped like the parameter, then
 * "<name>.step" as an int64 counter (the number of steps that updated that parameter; 0 means the SGD
 * momentum buffer is not yet initialised). Tensors and counters are owned by the optimizer and valid until
 * gg_optim_free; writing them (e.g. loading a checkpoint) sets the optimizer's state. */
typedef struct gg_optim_state_entry {
    const char *name;  /* owned by the optimizer */
    gg_tensor *tensor; /* a state buffer, or NULL for a counter */
    int64_t *counter;  /* a step count, or NULL for a tensor */
} gg_optim_state_entry;

int gg_optim_num_state(const gg_optim *opt);
int gg_optim_state(const gg_optim *opt, int i, gg_optim_state_entry *out);
/* The entry with that name (GG_ERR_INDEX when there is none). */
int gg_optim_state_find(const gg_optim *opt, const char *name, gg_optim_state_entry *out);

/* ---- learning-rate schedules ----
 * Pure functions of the step t (0 for the first step), so that resuming needs only t. Each scales a
 * group's base lr:
 *   constant  lr = base (after the warm-up)
 *   step      lr = base * gamma^floor((t - warmup) / step_size)               (torch StepLR)
 *   cosine    lr = eta_min + (base - eta_min) (1 + cos(pi (t - warmup) / (total - warmup))) / 2,
 *             eta_min for t >= total                                          (torch CosineAnnealingLR)
 * with a linear warm-up for t < warmup_steps:
 *             lr = base * (f + (1 - f) t / warmup_steps), f = warmup_start_factor  (torch LinearLR)
 * Warm-up followed by cosine is torch's SequentialLR([LinearLR(f, 1, warmup), CosineAnnealingLR(total -
 * warmup, eta_min)], [warmup]) stepped once per iteration. */
typedef enum gg_lr_kind { GG_LR_CONSTANT, GG_LR_STEP, GG_LR_COSINE, GG_LR_KIND_COUNT } gg_lr_kind;

typedef struct gg_lr_schedule {
    gg_lr_kind kind;
    int64_t warmup_steps;       /* >= 0; 0: no warm-up */
    double warmup_start_factor; /* in [0, 1] */
    int64_t step_size;          /* step: > 0 */
    double gamma;               /* step: > 0 */
    int64_t total_steps;        /* cosine: > warmup_steps */
    double eta_min;             /* cosine: the final lr (absolute, as torch), >= 0 */
} gg_lr_schedule;

gg_lr_schedule gg_lr_constant(int64_t warmup_steps, double warmup_start_factor);
gg_lr_schedule gg_lr_step(int64_t step_size, double gamma);
/* warmup_steps of linear warm-up from warmup_start_factor * base, then cosine down to eta_min at
 * total_steps. */
gg_lr_schedule gg_lr_cosine(int64_t warmup_steps, double warmup_start_factor, int64_t total_steps,
                            double eta_min);
/* The lr at step t >= 0 for a group whose base lr is base_lr; -1 and an error for a bad schedule. */
double gg_lr_at(const gg_lr_schedule *s, double base_lr, int64_t t);
/* Set every group's lr to gg_lr_at(s, its base lr, t). */
int gg_optim_apply_schedule(gg_optim *opt, const gg_lr_schedule *s, int64_t t);

/* ---- gradient clipping ----
 * torch.nn.utils.clip_grad_norm_: the norm of order norm_type (> 0, or INFINITY for the max norm) of all
 * the gradients together (parameters whose .grad is NULL are ignored); every gradient is multiplied by
 * max_norm / (norm + 1e-6) when that is < 1. The norm is accumulated in double and returned (as float
 * precision, like torch's float32 result) in *total_norm (may be NULL). A non-finite norm is an error
 * (GG_ERR_NUMERIC, gradients unchanged) when error_if_nonfinite, otherwise the scaling is applied as
 * torch does (it then makes the gradients NaN). */
int gg_clip_grad_norm(gg_tensor *const *params, int n, double max_norm, double norm_type,
                      bool error_if_nonfinite, double *total_norm);
/* The same over every parameter of the optimizer, 2-norm, non-finite not an error. */
int gg_optim_clip_grad_norm(gg_optim *opt, double max_norm, double *total_norm);

#ifdef __cplusplus
}
#endif
#endif
