#!/usr/bin/python3
"""GroupNet-S in PyTorch: the twin of groupgrad's gg_groupnet_s_config, and its training throughput.

Run it with Debian's Python and PyTorch (python3-torch 1.13, numpy; nothing else):

  /usr/bin/python3 bench/torch_groupnet.py [--model groupnet|dense|grouped:G|depthwise|all] [--threads N]
                                           [--batch 128] [--warmup 3] [--windows 5] [--steps 4]
                                           [--seed 0] [--json] [--params-only]

and compare with groupgrad's own number for the same network and the same measurement:

  build/bench/bench_groupnet --model all --threads N        (bench/bench_groupnet.c)

The network mirrors nn/groupnet.c, nn/blocks.c and nn/layers.c exactly: a 3x3 stem (1 -> 32, stride 1,
pad 1, no bias), BatchNorm, ReLU; three stages of one torchvision (v1.5) ResNeXt Bottleneck each with planes
16/32/64, cardinality 8 and base width 16, so the 3x3 widths are 32/64/128 at 28/14/7 pixels and the
outputs 64/128/256 (stage strides 1, 2, 2 in the 3x3 conv; downsample = 1x1 conv/stride + BN); global
average pool, flatten, Linear 256 -> 10. Initialisation as torchvision's ResNet: every conv weight (the
DGConv weight too) kaiming_normal(fan_out, relu), BatchNorm weight 1 / bias 0, Linear PyTorch's default;
DGConv gates +-1e-8 with a random sign. The bottleneck's 3x3 conv is, per --model:
  groupnet    the REFERENCE DGConv of d-li14/dgconv.pytorch (/work/shared/DGCONV.md): a dense conv with the
              masked weight W * U, U = U_0 (x) ... (x) U_{K-1} (pairwise Kronecker tree as the reference),
              U_k = g_k J + (1 - g_k) I, g = (sign(gate) + 1) / 2 with an identity straight-through gradient.
              Parameters "gate" [K] and "conv.weight" [C, C, 3, 3]; the constant I and J are buffers.
  dense       Conv2d, groups 1
  grouped:G   Conv2d, groups G (G = 8, the cardinality, is ResNeXt's choice)
  depthwise   Conv2d, groups = width
Parameter counts (asserted to equal groupgrad's): groupnet 306,684, grouped:8 137,322, dense 306,666,
depthwise 115,146.

What is timed, as bench_groupnet: one training step = optimizer.zero_grad() (zeroing, as PyTorch 1.13's
default and groupgrad), forward in training mode (BatchNorm batch statistics), cross entropy, backward,
SGD step (lr 0.01, momentum 0.9, no weight decay), on one fixed random batch (x ~ N(0, 1) [B, 1, 28, 28],
labels uniform in 0..9). --warmup steps untimed, then --windows windows of --steps steps each; the result
is the median window's images/s (and the min and max window). The plain cross entropy is the loss (the
complexity regulariser of DGCONV.md section 4 is not part of the timed step, in either library).
"""
import argparse
import json
import math
import random
import statistics
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:  # pragma: no cover
    print("torch_groupnet.py: PyTorch is not installed (Debian: apt-get install python3-torch)", file=sys.stderr)
    sys.exit(0)

# groupgrad's parameter counts for GroupNet-S (nn/gg_nn.h, tests/test_groupnet.c, bench_groupnet).
EXPECTED_PARAMS = {"groupnet": 306684, "dense": 306666, "grouped:8": 137322, "depthwise": 115146}


class DGConv2d(nn.Module):
    """d-li14/dgconv.pytorch's DGConv2d (sort off, as in its GroupNet), in_channels = out_channels = 2^K."""

    def __init__(self, channels, kernel_size, stride=1, padding=0, bias=False):
        super().__init__()
        self.K = int(math.log2(channels))
        if 2 ** self.K != channels:
            raise ValueError(f"DGConv2d needs 2^K channels, got {channels}")
        self.register_buffer("D", torch.eye(2))  # the reference's names: D = I (identity), I = J (ones)
        self.register_buffer("I", torch.ones(2, 2))
        self.gate = nn.Parameter(torch.tensor([1e-8 * random.choice([-1, 1]) for _ in range(self.K)]))
        self.conv = nn.Conv2d(channels, channels, kernel_size, stride, padding, bias=bias)

    def relation(self):
        g_hard = (1 + torch.sign(self.gate)) / 2
        g = self.gate + (g_hard - self.gate).detach()  # value g_hard, gradient identity (straight-through)
        U = [(1 - g[k]) * self.D + g[k] * self.I for k in range(self.K)]
        while len(U) != 1:  # the reference's pairwise Kronecker tree
            nxt = [torch.kron(U[i], U[i + 1]) for i in range(0, len(U) - 1, 2)]
            if len(U) % 2:
                nxt.append(U[-1])
            U = nxt
        return U[0]

    def forward(self, x):
        C = self.conv.out_channels
        w = self.conv.weight * self.relation().view(C, C, 1, 1)
        return F.conv2d(x, w, self.conv.bias, self.conv.stride, self.conv.padding)


def conv3x3(kind, groups, width, stride):
    if kind == "groupnet":
        return DGConv2d(width, 3, stride, 1)
    g = {"dense": 1, "depthwise": width, "grouped": groups}[kind]
    return nn.Conv2d(width, width, 3, stride, 1, groups=g, bias=False)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (v1.5: the stride in the 3x3), ResNeXt widths."""

    def __init__(self, inplanes, planes, stride, cardinality, base_width, kind, groups):
        super().__init__()
        width = planes * base_width // 64 * cardinality
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(kind, groups or cardinality, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes * 4))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + identity)


class GroupNetS(nn.Module):
    """gg_groupnet_s_config: in 1, small stem 32, stages (1, 1, 1) x planes (16, 32, 64), cardinality 8,
    base width 16, 10 classes."""

    def __init__(self, kind, groups=0):
        super().__init__()
        stem, planes, cardinality, base_width = 32, (16, 32, 64), 8, 16
        self.conv1 = nn.Conv2d(1, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        inplanes = stem
        for s, p in enumerate(planes):
            blk = Bottleneck(inplanes, p, 1 if s == 0 else 2, cardinality, base_width, kind, groups)
            setattr(self, f"layer{s + 1}", nn.Sequential(blk))
            inplanes = 4 * p
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(inplanes, 10)
        for m in self.modules():  # torchvision ResNet.__init__
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def parse_model(name):
    if name in ("groupnet", "dense", "depthwise"):
        return name, 0
    if name.startswith("grouped:") and name[8:].isdigit() and int(name[8:]) > 0:
        return "grouped", int(name[8:])
    raise argparse.ArgumentTypeError(f"unknown model {name!r}: groupnet, dense, grouped:G, depthwise or all")


def measure(name, args):
    kind, groups = parse_model(name)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    model = GroupNetS(kind, groups)
    model.train()
    params = sum(p.numel() for p in model.parameters())
    expected = EXPECTED_PARAMS.get(name)
    result = {"library": "torch", "torch": torch.__version__, "model": name, "threads": args.threads,
              "batch": args.batch, "params": params, "params_expected": expected}
    if expected is not None and params != expected:
        print(f"torch_groupnet.py: {name} has {params} parameters, groupgrad's GroupNet-S has {expected}",
              file=sys.stderr)
        result["error"] = "parameter count mismatch"
    if args.params_only:
        return result
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (args.batch,), generator=gen)

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    for _ in range(args.warmup):
        step()
    rates = []
    for _ in range(args.windows):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            loss = step()
        loss.item()
        rates.append(args.batch * args.steps / (time.perf_counter() - t0))
    result.update(images_per_s=statistics.median(rates), min_images_per_s=min(rates),
                  max_images_per_s=max(rates), ms_per_step=1e3 * args.batch / statistics.median(rates),
                  windows=args.windows, steps_per_window=args.steps, warmup=args.warmup,
                  final_loss=float(loss.item()))
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="all")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--steps", type=int, default=4, help="steps per timed window")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="one JSON object per model")
    ap.add_argument("--params-only", action="store_true", help="check parameter counts, time nothing")
    args = ap.parse_args()
    if min(args.threads, args.batch, args.windows, args.steps) < 1 or args.warmup < 0:
        ap.error("--threads, --batch, --windows, --steps must be >= 1 and --warmup >= 0")
    models = ["groupnet", "dense", "grouped:8", "depthwise"] if args.model == "all" else [args.model]
    try:
        for m in models:
            parse_model(m)
    except argparse.ArgumentTypeError as e:
        ap.error(str(e))
    torch.set_num_threads(args.threads)
    if not args.json and not args.params_only:
        print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, GroupNet-S 28x28, "
              f"SGD momentum 0.9; median of {args.windows} windows of {args.steps} steps after {args.warmup} "
              f"warm-up steps")
        print(f"{'model':<12} {'params':>9} {'images/s':>10} {'(min-max)':>17} {'ms/step':>9}")
    failed = False
    for m in models:
        r = measure(m, args)
        failed = failed or "error" in r
        if args.json:
            print(json.dumps(r), flush=True)
        elif args.params_only:
            print(f"{m:<12} {r['params']:>9,}", flush=True)
        else:
            print(f"{m:<12} {r['params']:>9,} {r['images_per_s']:>10.1f} "
                  f"{'(' + format(r['min_images_per_s'], '.0f') + '-' + format(r['max_images_per_s'], '.0f') + ')':>17} "
                  f"{r['ms_per_step']:>9.1f}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
