#!/usr/bin/python3
"""Write PyTorch golden cases for groupgrad's differentiable ops into tests/data/golden/ops/.

Each case <name> gets <name>_in<i>.npy (inputs), <name>_c.npy (a random projection c of the output),
<name>_out.npy (the output) and <name>_grad<i>.npy (d sum(c * out) / d input i), computed in float64 and
stored as float32. tests/test_golden_ops.c replays every case through groupgrad.
Run with Debian's python3-torch:  /usr/bin/python3 scripts/gen_ops_golden.py
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "golden", "ops")
gen = torch.Generator().manual_seed(20261127)


def randn(*shape):
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def positive(*shape):
    return torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 + 0.25


def case(name, fn, inputs, grad_mask=None):
    """Run fn on inputs (float64 leaves), project the output with a random c, save everything."""
    leaves = []
    for i, x in enumerate(inputs):
        req = grad_mask is None or grad_mask[i]
        leaves.append(x.clone().requires_grad_(req))
    out = fn(*leaves)
    c = torch.rand(out.shape, generator=gen, dtype=torch.float64) * 2 - 1
    (out * c).sum().backward()
    for i, x in enumerate(leaves):
        np.save(os.path.join(OUT, f"{name}_in{i}.npy"), x.detach().numpy().astype(np.float32))
        if x.requires_grad:
            np.save(os.path.join(OUT, f"{name}_grad{i}.npy"), x.grad.numpy().astype(np.float32))
    np.save(os.path.join(OUT, f"{name}_c.npy"), c.numpy().astype(np.float32))
    np.save(os.path.join(OUT, f"{name}_out.npy"), out.detach().numpy().astype(np.float32))


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.endswith(".npy"):
            os.remove(os.path.join(OUT, f))
    case("add_bcast", torch.add, [randn(3, 1), randn(1, 4)])
    case("sub_bcast", torch.sub, [randn(2, 3, 4), randn(4)])
    case("mul_bcast", torch.mul, [randn(2, 1, 4), randn(3, 1)])
    case("div", torch.div, [randn(3, 4), positive(3, 4)])
    case("exp", torch.exp, [randn(2, 5)])
    case("log", torch.log, [positive(2, 5)])
    case("sqrt", torch.sqrt, [positive(7)])
    case("pow", lambda x: torch.pow(x, 2.5), [positive(3, 3)])
    case("abs", torch.abs, [randn(9)])
    case("relu", torch.relu, [randn(4, 4)])
    case("leaky_relu", lambda x: F.leaky_relu(x, 0.1), [randn(4, 4)])
    case("sigmoid", torch.sigmoid, [randn(3, 5)])
    case("tanh", torch.tanh, [randn(3, 5)])
    case("clamp", lambda x: torch.clamp(x, -0.5, 0.5), [randn(20)])
    case("sum_axis1_keep", lambda x: x.sum(dim=1, keepdim=True), [randn(3, 4, 5)])
    case("mean_axes02", lambda x: x.mean(dim=(0, 2)), [randn(3, 4, 5)])
    case("max_axis1", lambda x: x.amax(dim=1), [randn(4, 6)])
    case("min_axis0", lambda x: x.amin(dim=0), [randn(4, 6)])
    case("var_axis1", lambda x: x.var(dim=1, unbiased=True), [randn(3, 7)])
    case("softmax_dim1", lambda x: torch.softmax(x, dim=1), [randn(4, 6)])
    case("log_softmax_dim0", lambda x: torch.log_softmax(x, dim=0), [randn(5, 3)])
    case("matmul_batched", torch.matmul, [randn(2, 3, 4), randn(4, 5)])
    case("matmul_bcast_batch", torch.matmul, [randn(2, 1, 3, 4), randn(3, 4, 2)])
    case("linear", F.linear, [randn(5, 4), randn(3, 4), randn(3)])
    case("kron", torch.kron, [randn(2, 3), randn(3, 2)])
    case("concat", lambda a, b: torch.cat([a, b], dim=1), [randn(2, 3), randn(2, 2)])
    case("stack", lambda a, b: torch.stack([a, b], dim=0), [randn(2, 3), randn(2, 3)])
    case("pad", lambda x: F.pad(x, (1, 2, 0, 1), value=0.5), [randn(2, 3, 3)])
    case("permute", lambda x: x.permute(2, 0, 1), [randn(2, 3, 4)])
    case("slice_step", lambda x: x[:, 1:6:2], [randn(3, 7)])
    # cross-entropy: input 1 holds the integer labels as float32 and gets no gradient
    labels = torch.tensor([2, 0, 4, 1, 3, 3], dtype=torch.float64)
    for red in ("mean", "sum", "none"):
        for ls in (0.0, 0.1):
            name = f"ce_{red}_ls{int(ls * 10)}"
            case(name, lambda x, y, red=red, ls=ls: F.cross_entropy(x, y.long(), reduction=red,
                                                                     label_smoothing=ls),
                 [randn(6, 5) * 2, labels], grad_mask=[True, False])


if __name__ == "__main__":
    main()
