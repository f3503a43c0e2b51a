#!/usr/bin/python3
"""Write PyTorch golden cases for gg_conv2d into tests/data/golden/conv/ (deterministic; rerun after changes).

Each case <name> is a set of .npy files: x, w, b (absent when the case has no bias), c, y, dx, dw, db, and
params = [stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right, dil_h, dil_w, groups, pad_same,
has_bias]. y = conv2d(x, w, b); the gradients are those of sum(y * c) for a random c. Asymmetric padding,
which torch.nn.functional.conv2d has no argument for, is applied with F.pad before the convolution.
Run from anywhere with Debian's PyTorch: /usr/bin/python3 scripts/gen_conv_golden.py
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'data', 'golden', 'conv')

# name, (N, C, H, W), (K, R, S), stride, pad (top, bottom, left, right) or 'same', dilation, groups, bias
CASES = [
    ('dense_pad1', (2, 3, 7, 6), (4, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, True),
    ('stride2', (2, 4, 9, 8), (6, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1, True),
    ('groups2_dil2', (2, 4, 8, 9), (6, 3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 2, True),
    ('depthwise_mult2', (2, 6, 9, 7), (12, 5, 5), (2, 2), (2, 2, 2, 2), (1, 1), 6, True),
    ('same_even_kernel', (1, 3, 6, 5), (5, 4, 4), (1, 1), 'same', (1, 1), 1, True),
    ('same_dil2_groups', (2, 4, 7, 6), (4, 2, 3), (1, 1), 'same', (2, 2), 2, False),
    ('pointwise', (3, 5, 4, 6), (7, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, True),
    ('asym_pad_groups', (2, 4, 7, 8), (4, 3, 2), (2, 1), (1, 0, 2, 1), (1, 2), 2, True),
    ('rect_stride_dil', (1, 2, 11, 9), (3, 2, 3), (3, 2), (0, 1, 1, 0), (2, 1), 1, False),
]


def save(name, key, t):
    np.save(os.path.join(OUT, f'{name}_{key}.npy'), t.detach().numpy().astype(np.float32))


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(1234)
    for name, (n, c, h, w), (k, r, s), stride, pad, dil, groups, has_bias in CASES:
        x = (torch.rand(n, c, h, w, generator=g) * 2 - 1).requires_grad_()
        wt = (torch.rand(k, c // groups, r, s, generator=g) * 2 - 1).requires_grad_()
        b = (torch.rand(k, generator=g) * 2 - 1).requires_grad_() if has_bias else None
        if pad == 'same':
            y = F.conv2d(x, wt, b, stride=stride, padding='same', dilation=dil, groups=groups)
            padv, same = (0, 0, 0, 0), 1
        else:
            xp = F.pad(x, (pad[2], pad[3], pad[0], pad[1]))
            y = F.conv2d(xp, wt, b, stride=stride, dilation=dil, groups=groups)
            padv, same = pad, 0
        cc = torch.rand(y.shape, generator=g) * 2 - 1
        (y * cc).sum().backward()
        params = torch.tensor([stride[0], stride[1], *padv, dil[0], dil[1], groups, same, int(has_bias)],
                              dtype=torch.float32)
        for key, t in (('x', x), ('w', wt), ('c', cc), ('y', y), ('dx', x.grad), ('dw', wt.grad),
                       ('params', params)):
            save(name, key, t)
        if has_bias:
            save(name, 'b', b)
            save(name, 'db', b.grad)
    with open(os.path.join(OUT, 'cases.txt'), 'w') as f:
        f.write(''.join(case[0] + '\n' for case in CASES))


if __name__ == '__main__':
    main()
