#!/usr/bin/python3
"""Write PyTorch golden cases for the CNN ops (pooling, batch norm) into tests/data/golden/cnn/.

Deterministic; rerun after changing a case: /usr/bin/python3 scripts/gen_cnn_golden.py (Debian's PyTorch 1.13).
Each case <name> is a set of small .npy files (float32):
  pooling: x, c, y, dx and params = [kind (0 max, 1 avg, 2 adaptive), kh, kw, sh, sw, ph, pw, dh, dw,
           ceil_mode, count_include_pad, out_h, out_w]
  batch norm: x, c, y, dx, w, b, dw, db (when affine), rm0, rv0 (running stats before), rm, rv (after),
           params = [training, affine, momentum, eps]
y is the op's output; the gradients are those of sum(y * c) for a random c. The test suites
(tests/test_ops_pool.c, tests/test_ops_batchnorm.c) name the cases they expect.
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'data', 'golden', 'cnn')

# name, kind, x shape, kernel, stride, pad, dilation, ceil_mode, count_include_pad, output size (adaptive),
# integer-valued input (ties)
POOL_CASES = [
    ('max_ceil_pad', 'max', (2, 3, 7, 6), (3, 2), (2, 2), (1, 1), (1, 1), True, False, None, False),
    ('max_dil_ceil', 'max', (1, 2, 9, 8), (3, 3), (2, 3), (1, 1), (2, 2), True, False, None, False),
    ('max_ties', 'max', (2, 2, 6, 7), (3, 3), (1, 2), (1, 0), (1, 1), False, False, None, True),
    ('avg_incl_pad', 'avg', (2, 3, 7, 6), (3, 3), (2, 2), (1, 1), (1, 1), True, True, None, False),
    ('avg_excl_pad', 'avg', (2, 3, 7, 6), (3, 3), (2, 2), (1, 1), (1, 1), True, False, None, False),
    ('avg_ceil_overhang', 'avg', (1, 2, 6, 8), (3, 3), (2, 3), (1, 1), (1, 1), True, True, None, False),
    ('adaptive_7to3', 'adaptive', (2, 3, 7, 7), None, None, None, None, False, False, (3, 3), False),
    ('adaptive_5to2', 'adaptive', (2, 2, 5, 5), None, None, None, None, False, False, (2, 2), False),
    ('adaptive_rect', 'adaptive', (1, 2, 5, 9), None, None, None, None, False, False, (3, 4), False),
]

# name, x shape, training, affine, momentum, eps
BN_CASES = [
    ('bn_train_affine', (4, 3, 5, 6), True, True, 0.1, 1e-5),
    ('bn_train_plain', (3, 4, 3, 5), True, False, 0.25, 1e-3),
    ('bn_eval_affine', (2, 3, 4, 5), False, True, 0.1, 1e-5),
    ('bn_eval_plain', (2, 3, 4, 5), False, False, 0.1, 1e-5),
]


def save(name, key, t):
    a = t.detach().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    np.save(os.path.join(OUT, f'{name}_{key}.npy'), a.astype(np.float32))


def pool_case(g, name, kind, shape, k, s, p, d, ceil, cip, osz, ties):
    if ties:
        x = torch.randint(-2, 3, shape, generator=g).float()
    else:
        x = torch.rand(shape, generator=g) * 2 - 1
    x.requires_grad_()
    if kind == 'max':
        y = F.max_pool2d(x, k, s, p, d, ceil_mode=ceil)
        params = [0, *k, *s, *p, *d, int(ceil), 0, 0, 0]
    elif kind == 'avg':
        y = F.avg_pool2d(x, k, s, p, ceil_mode=ceil, count_include_pad=cip)
        params = [1, *k, *s, *p, *d, int(ceil), int(cip), 0, 0]
    else:
        y = F.adaptive_avg_pool2d(x, osz)
        params = [2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, *osz]
    c = torch.rand(y.shape, generator=g) * 2 - 1
    (y * c).sum().backward()
    for key, t in (('x', x), ('c', c), ('y', y), ('dx', x.grad), ('params', params)):
        save(name, key, t)


def bn_case(g, name, shape, training, affine, momentum, eps):
    ch = shape[1]
    x = ((torch.rand(shape, generator=g) * 2 - 1) * 3 + 0.5).requires_grad_()
    w = (torch.rand(ch, generator=g) + 0.5).requires_grad_() if affine else None
    b = (torch.rand(ch, generator=g) - 0.5).requires_grad_() if affine else None
    rm0 = torch.rand(ch, generator=g) - 0.5
    rv0 = torch.rand(ch, generator=g) + 0.5
    rm, rv = rm0.clone(), rv0.clone()
    y = F.batch_norm(x, rm, rv, w, b, training=training, momentum=momentum, eps=eps)
    c = torch.rand(y.shape, generator=g) * 2 - 1
    (y * c).sum().backward()
    out = [('x', x), ('c', c), ('y', y), ('dx', x.grad), ('rm0', rm0), ('rv0', rv0), ('rm', rm), ('rv', rv),
           ('params', [int(training), int(affine), momentum, eps])]
    if affine:
        out += [('w', w), ('b', b), ('dw', w.grad), ('db', b.grad)]
    for key, t in out:
        save(name, key, t)


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(4242)
    for case in POOL_CASES:
        pool_case(g, *case)
    for case in BN_CASES:
        bn_case(g, *case)


if __name__ == '__main__':
    main()
