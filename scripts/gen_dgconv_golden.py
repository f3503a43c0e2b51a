#!/usr/bin/python3
"""Write PyTorch golden cases for gg_dgconv2d into tests/data/golden/dgconv/ (deterministic; rerun after changes).

The reference layer follows /work/shared/DGCONV.md (the semantics of d-li14/dgconv.pytorch), in float64:
  g = (sign(gt) + 1) / 2 with a straight-through identity gradient (dL/dgt = dL/dg),
  U = U_0 kron ... kron U_{K-1}, U_k = g_k J + (1 - g_k) I (with sort: the factors with g = 0 first),
  y = conv2d(x, W * U[:, :, None, None], bias).
Each case <name> is a set of .npy files: x, w, gates, b (absent without bias), c, y, dx, dw, db, dgates, and
params = [stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, has_bias, sort]. The gradients are those of
sum(y * c) for a random c. Run with Debian's PyTorch: /usr/bin/python3 scripts/gen_dgconv_golden.py
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'data', 'golden', 'dgconv')


class BinarizeSTE(torch.autograd.Function):
    """(sign(x) + 1) / 2 forward (0.5 at 0), identity backward: the reference's .data swap."""

    @staticmethod
    def forward(ctx, x):
        return (torch.sign(x) + 1) / 2

    @staticmethod
    def backward(ctx, grad):
        return grad


def relation(gt, sort):
    g = BinarizeSTE.apply(gt)
    order = list(range(gt.numel()))
    if sort:  # stable: g = 0 factors, then 0.5, then 1
        order = sorted(order, key=lambda k: float(g[k]))
    eye = torch.eye(2, dtype=gt.dtype)
    ones = torch.ones(2, 2, dtype=gt.dtype)
    u = None
    for k in order:
        uk = g[k] * ones + (1 - g[k]) * eye
        u = uk if u is None else torch.kron(u, uk)
    return u


def dgconv2d(x, w, gt, b, stride, pad, dil, sort):
    c = w.shape[0]
    u = relation(gt, sort)
    return F.conv2d(x, w * u.view(c, c, 1, 1), b, stride=stride, padding=pad, dilation=dil)


# name, N, gates, (H, W), (R, S), stride, pad (h, w), dilation, bias, sort
CASES = [
    ('c2_depthwise', 3, [-0.7], (5, 7), (3, 3), (1, 1), (1, 1), (1, 1), True, False),
    ('c4_interleaved_stride2', 3, [0.3, -0.2], (7, 5), (3, 2), (2, 2), (1, 0), (1, 1), True, False),
    ('c16_g4_dil2', 3, [0.5, -0.5, 0.5, -0.5], (9, 7), (3, 3), (2, 1), (1, 1), (2, 2), True, False),
    ('c16_half_gate', 3, [0.0, -1.0, 1.0, 0.4], (7, 7), (3, 3), (1, 1), (1, 1), (1, 1), False, False),
    ('c64_g8', 3, [0.2, -0.3, 0.4, 0.1, -0.5, -0.6], (5, 5), (3, 3), (1, 1), (1, 1), (1, 1), True, False),
    ('c64_sort', 3, [0.2, -0.3, 0.4, -0.1, 0.5, -0.6], (7, 9), (3, 3), (2, 2), (2, 2), (2, 2), True, True),
]


def save(name, key, t):
    np.save(os.path.join(OUT, f'{name}_{key}.npy'), t.detach().numpy().astype(np.float32))


def main():
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(20190829)
    for name, n, gates, (h, wd), (r, s), stride, pad, dil, has_bias, sort in CASES:
        c = 2 ** len(gates)
        # float32 inputs, so that the C test sees exactly the values the float64 reference used
        rnd = lambda *shape: (torch.rand(*shape, generator=gen) * 2 - 1).float().double()
        x = rnd(n, c, h, wd).requires_grad_()
        w = rnd(c, c, r, s).requires_grad_()
        gt = torch.tensor(gates, dtype=torch.float32).double().requires_grad_()
        b = rnd(c).requires_grad_() if has_bias else None
        y = dgconv2d(x, w, gt, b, stride, pad, dil, sort)
        cc = rnd(*y.shape)
        (y * cc).sum().backward()
        params = torch.tensor([stride[0], stride[1], pad[0], pad[1], dil[0], dil[1], int(has_bias), int(sort)],
                              dtype=torch.float64)
        for key, t in (('x', x), ('w', w), ('gates', gt), ('c', cc), ('y', y), ('dx', x.grad), ('dw', w.grad),
                       ('dgates', gt.grad), ('params', params)):
            save(name, key, t)
        if has_bias:
            save(name, 'b', b)
            save(name, 'db', b.grad)
    with open(os.path.join(OUT, 'cases.txt'), 'w') as f:
        f.write(''.join(case[0] + '\n' for case in CASES))


if __name__ == '__main__':
    main()
