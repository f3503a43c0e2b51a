#!/usr/bin/python3
"""Golden data for groupgrad's optimizers and checkpoints, written into tests/data/golden/optim/.

Optimizers: each case runs torch.optim (SGD / Adam / AdamW, float32, foreach=False as on CPU) on three
parameters for STEPS steps with fixed gradient sequences and writes <case>_p<i>.npy, shaped
[1 + 2 STEPS, *shape]: the initial value, the gradient of each step, the parameter after each step;
<case>_mask.npy ([STEPS, 3], 0 where the gradient is None at that step); <case>_p<i>_state.npy, the final
state in groupgrad's entry order (momentum_buffer, or exp_avg, exp_avg_sq[, max_exp_avg_sq]) then the
step count broadcast to the parameter's shape. tests/test_optim.c holds the same hyperparameter table.
Schedules: lr_step.npy and lr_warmup_cosine.npy, torch's lr before each step. clip_grad_norm: clip_*.npy.

Checkpoints: py_written.safetensors is a safetensors file written here with json + numpy only (no
safetensors package: unsorted keys, Python's default separators, no padding, data in an order unlike the
header's), with py_<name>.npy holding each tensor; tests/test_checkpoint.c loads it and compares exactly.
Then the script reads ours.safetensors, a checkpoint written by groupgrad (tests/test_checkpoint.c checks
that it writes this file byte for byte), with json + numpy and asserts its contents, to show the format is
standard.

Run with Debian's python3-torch:  /usr/bin/python3 scripts/gen_optim_golden.py
"""
import json
import math
import os
import struct
import warnings

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "golden", "optim")
STEPS = 5
SHAPES = [(3, 4), (5,), (2, 1, 3)]
GRAD_SCALE = [1.0, 3.0, 0.2, 0.5, 2.0]  # varying magnitudes, so amsgrad's max matters

# name, optimizer, kwargs; tests/test_optim.c mirrors this table.
CASES = []
for mom in (0.0, 0.9):
    for damp in (0.0, 0.3):
        for nesterov in (False, True):
            if nesterov and (mom == 0.0 or damp != 0.0):
                continue
            for wd in (0.0, 0.01):
                name = f"sgd_m{int(mom * 10)}_d{int(damp * 10)}_n{int(nesterov)}_wd{int(wd * 100)}"
                CASES.append((name, "sgd", dict(lr=0.1, momentum=mom, dampening=damp, nesterov=nesterov,
                                                 weight_decay=wd)))
CASES += [
    ("adam", "adam", dict(lr=0.01)),
    ("adam_wd", "adam", dict(lr=0.01, weight_decay=0.01)),
    ("adam_amsgrad", "adam", dict(lr=0.01, amsgrad=True)),
    ("adam_amsgrad_wd", "adam", dict(lr=0.02, weight_decay=0.1, amsgrad=True)),
    ("adam_betas", "adam", dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6)),
    ("adamw", "adamw", dict(lr=0.01)),
    ("adamw_wd0", "adamw", dict(lr=0.01, weight_decay=0.0)),
    ("adamw_amsgrad", "adamw", dict(lr=0.02, weight_decay=0.1, amsgrad=True)),
]
SKIP_CASE = "adam_skip"  # parameter 2 has no gradient at steps 1 and 3
GROUP_CASE = "sgd_groups_steplr"  # two groups, StepLR(step_size=2, gamma=0.5)

gen = torch.Generator().manual_seed(20261201)


def randn(*shape):
    return torch.randn(*shape, generator=gen, dtype=torch.float32)


def save(name, arr):
    np.save(os.path.join(OUT, name + ".npy"), np.asarray(arr, dtype=np.float32))  # keeps rank 0


def make_optimizer(kind, params, kw):
    if kind == "sgd":
        return torch.optim.SGD(params, foreach=False, **kw)
    if kind == "adam":
        return torch.optim.Adam(params, foreach=False, **kw)
    return torch.optim.AdamW(params, foreach=False, **kw)


def run_case(name, kind, kw, mask=None, groups=None, scheduler=None):
    init = [randn(*s) for s in SHAPES]
    grads = [[randn(*s) * GRAD_SCALE[t] for t in range(STEPS)] for s in SHAPES]
    mask = mask if mask is not None else np.ones((STEPS, len(SHAPES)), dtype=np.float32)
    params = [x.clone().requires_grad_(True) for x in init]
    opt = make_optimizer(kind, groups(params) if groups else params, kw)
    sched = scheduler(opt) if scheduler else None
    traj = [[] for _ in SHAPES]
    for t in range(STEPS):
        for i, p in enumerate(params):
            p.grad = grads[i][t].clone() if mask[t, i] else None
        opt.step()
        if sched:
            sched.step()
        for i, p in enumerate(params):
            traj[i].append(p.detach().clone())
    bufs = {"sgd": ["momentum_buffer"], "adam": ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]}
    for i, p in enumerate(params):
        save(f"{name}_p{i}", torch.stack([init[i]] + grads[i] + traj[i]).numpy())
        state = opt.state.get(p, {})
        rows = [state[k] for k in bufs["sgd" if kind == "sgd" else "adam"] if state.get(k) is not None]
        steps = float(mask[:, i].sum())  # torch's SGD keeps no step count; ours counts applied updates
        if "step" in state:
            assert float(state["step"]) == steps
        rows.append(torch.full(SHAPES[i], steps))
        save(f"{name}_p{i}_state", torch.stack(rows).numpy())
    save(f"{name}_mask", mask)


def schedules():
    def lrs(make, steps):
        p = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([p], lr=0.5)
        sched = make(opt)
        out = []
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return np.array(out, dtype=np.float64)

    step = lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.1), 10)
    # warm-up 5 steps from 0.1 * lr, then cosine to eta_min at step 20
    cosine = lrs(lambda o: torch.optim.lr_scheduler.SequentialLR(
        o, [torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=5),
            torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=15, eta_min=0.001)], milestones=[5]), 21)
    save("lr_step", step)
    save("lr_warmup_cosine", cosine)


def clip_cases():
    for norm_type, tag in ((2.0, "l2"), (float("inf"), "inf")):
        gs = [randn(3, 4) * 2, randn(5)]
        ps = [torch.zeros_like(g, requires_grad=True) for g in gs]
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        total = torch.nn.utils.clip_grad_norm_(ps, max_norm=1.5, norm_type=norm_type)
        for i, (p, g) in enumerate(zip(ps, gs)):
            save(f"clip_{tag}_g{i}", g.numpy())
            save(f"clip_{tag}_out{i}", p.grad.numpy())
        save(f"clip_{tag}_norm", np.array(total.item(), dtype=np.float32))


def write_py_safetensors():
    """A safetensors file written with json + numpy only, in an unusual but valid layout."""
    tensors = {
        "layer.weight": (np.arange(6, dtype=np.float32).reshape(3, 2) * 0.25 - 0.5),
        "layer.bias": np.array([1.5, -2.25], dtype=np.float32),
        "scalar": np.array(3.0e-8, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "z.last": np.array([[[[1e30], [-0.0]]]], dtype=np.float32),
    }
    data_order = ["z.last", "layer.bias", "empty", "scalar", "layer.weight"]
    header = {"__metadata__": {"step": "42", "note": "written by numpy"}}
    blobs, offset = [], 0
    for name in data_order:
        raw = tensors[name].astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    # keys in a deliberately unsorted order
    ordered = {k: header[k] for k in ["scalar", "__metadata__", "layer.weight", "z.last", "empty", "layer.bias"]}
    text = json.dumps(ordered).encode("utf-8")
    with open(os.path.join(OUT, "py_written.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    for name, arr in tensors.items():
        save("py_" + name, arr)


def ours_expected():
    """The contents of the checkpoint tests/test_checkpoint.c writes as ours.safetensors."""
    a = (np.arange(6, dtype=np.float32) * np.float32(0.5) - np.float32(1.0)).reshape(2, 3)
    b = np.float32(1.0) / (np.arange(4, dtype=np.float32) + np.float32(1.0))
    return ({"a": a, "b.c": b, "r": np.array(np.float32(math.pi)), "e": np.zeros((0,), dtype=np.float32)},
            {"epoch": "3", "rng.seed": "18446744073709551615", "rng.counter": "12345",
             "note": "h\u00e9llo \u2713"})


def verify_ours():
    path = os.path.join(OUT, "ours.safetensors")
    if not os.path.exists(path):
        print("note: %s not found; run the checkpoint test with GG_CHECKPOINT_GOLDEN_OUT=%s" % (path, path))
        return
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = blob[8 + n:]
    assert (8 + n) % 8 == 0, "data do not start at a multiple of 8"
    tensors, meta = ours_expected()
    assert header.pop("__metadata__") == meta, "metadata differ"
    assert sorted(header) == sorted(tensors), "tensor names differ: %s" % sorted(header)
    ranges = sorted(tuple(v["data_offsets"]) for v in header.values())
    at = 0
    for b, e in ranges:
        assert b == at, "data_offsets do not tile the data"
        at = e
    assert at == len(data), "data size differs from the offsets"
    for name, want in tensors.items():
        info = header[name]
        assert info["dtype"] == "F32"
        b, e = info["data_offsets"]
        got = np.frombuffer(data[b:e], dtype="<f4").reshape(info["shape"])
        assert got.shape == want.shape, name
        assert got.tobytes() == want.astype("<f4").tobytes(), "values of %s differ" % name
    print("verified %s: %d tensors, %d metadata keys" % (path, len(tensors), len(meta)))


def main():
    # SequentialLR steps the cosine scheduler with an explicit epoch at the milestone (closed form)
    warnings.filterwarnings("ignore", message="The epoch parameter")
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.endswith(".npy") or f == "py_written.safetensors":
            os.remove(os.path.join(OUT, f))
    for name, kind, kw in CASES:
        run_case(name, kind, kw)
    mask = np.ones((STEPS, len(SHAPES)), dtype=np.float32)
    mask[1, 2] = mask[3, 2] = 0
    run_case(SKIP_CASE, "adam", dict(lr=0.01, weight_decay=0.01), mask=mask)
    run_case(GROUP_CASE, "sgd", dict(lr=0.1, momentum=0.9),
             groups=lambda ps: [{"params": [ps[0]], "weight_decay": 0.01},
                                {"params": ps[1:], "lr": 0.05, "weight_decay": 0.0}],
             scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5))
    schedules()
    clip_cases()
    write_py_safetensors()
    verify_ours()


if __name__ == "__main__":
    main()
