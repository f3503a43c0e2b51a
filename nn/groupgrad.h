/* groupgrad umbrella header: includes every public header of every layer (tensor, autograd, ops, nn).
 * It lives in nn/, the top library layer, because it depends on all the others.
 * Installed as <groupgrad/groupgrad.h>; in-tree users include "groupgrad.h". */
#ifndef GROUPGRAD_H
#define GROUPGRAD_H

#include "gg_error.h"
#include "gg_alloc.h"
#include "gg_runtime.h"
#include "gg_tensor.h"
#include "gg_rng.h"
#include "gg_npy.h"
#include "gg_autograd.h"
#include "gg_ops.h"
#include "gg_conv.h"
#include "gg_dgconv.h"
#include "gg_nn.h"
#include "gg_cnn.h"
#include "gg_data.h"
#include "gg_optim.h"
#include "gg_checkpoint.h"

#endif
