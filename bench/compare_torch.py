#!/usr/bin/python3
"""Compare groupgrad's conv2d with PyTorch's on the bench_conv default suite.

Runs `bench_conv --json` (ours) and times torch.nn.functional.conv2d on the same cases and passes in the
same way, then prints one table per thread count: case, pass, ours ms, torch ms, torch/ours (> 1: ours is
faster), our GFLOP/s and % of the FMA peak bench_conv measured, and torch's GFLOP/s. --json prints one
object per (threads, case, pass) instead.

  /usr/bin/python3 bench/compare_torch.py [--bench build/bench/bench_conv] [--threads 1,2] [--runs K]
                                          [--pass fwd|bwd_data|bwd_weight|train|all] [--min-time S]
                                          [--torch-grad none|zero] [--quick] [--json]

Cases: N=64 C=K=64 16x16 with groups 1, 4, 8, 32, 64 and N=32 C=K=256 8x8 with groups 1, 4, 8, 32, 256,
3x3, stride 1, pad 1, no bias, NCHW float32 (as bench_conv; --quick uses N=2 and few repeats, as
`bench_conv --quick`).

What is timed on the torch side mirrors bench_conv (time.perf_counter, one repeat each):
  fwd         F.conv2d under torch.no_grad().
  bwd_data    y.backward(seed) with only x requiring grad; the forward runs untimed before it.
  bwd_weight  the same with only w requiring grad.
  train       F.conv2d + y.backward(seed) with x and w requiring grad.
Gradients are reset untimed after each repeat: by default x.grad = w.grad = None (set_to_none, PyTorch's
fastest: the backward hands its fresh buffer to .grad); --torch-grad zero keeps the buffers and zeroes them
(as groupgrad does, and as optimizer.zero_grad() does in 1.13: the backward then adds into them).
Two warm-up repeats, then enough repeats for >= --min-time seconds (at least 5); median.
With --runs K > 1, ours and torch alternate K times per thread count (so a change of machine load hits
both) and each time is the median of the K per-run medians (GFLOP/s and % of peak follow from it and the
median of the K peak measurements).
Needs PyTorch (Debian: python3-torch); without it, prints a message and exits 0.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

PASSES = ["fwd", "bwd_data", "bwd_weight", "train"]
KEY_FIELDS = ("n", "c", "k", "h", "w", "r", "s", "stride", "pad", "dilation", "groups")


def default_cases(quick):
    cases = []
    for n, c, hw, groups in ((64, 64, 16, (1, 4, 8, 32, 64)), (32, 256, 8, (1, 4, 8, 32, 256))):
        for g in groups:
            cases.append(dict(n=2 if quick else n, c=c, k=c, h=hw, w=hw, r=3, s=3, stride=1, pad=1,
                              dilation=1, groups=g))
    return cases


def out_size(size, kernel, stride, pad, dilation):
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def case_flops(cc):
    ho = out_size(cc["h"], cc["r"], cc["stride"], cc["pad"], cc["dilation"])
    wo = out_size(cc["w"], cc["s"], cc["stride"], cc["pad"], cc["dilation"])
    return 2.0 * cc["n"] * cc["k"] * (cc["c"] // cc["groups"]) * cc["r"] * cc["s"] * ho * wo


def case_key(cc):
    return tuple(int(cc[f]) for f in KEY_FIELDS)


def case_name(cc):
    return "N={n} C={c} K={k} {h}x{w} {r}x{s} s{stride} p{pad} d{dilation} g{groups}".format(**cc)


def find_bench(path):
    if os.path.exists(path) or os.path.isabs(path):
        return path
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    alt = os.path.join(root, path)
    return alt if os.path.exists(alt) else path


def run_ours(bench, threads, passes, min_time, quick):
    cmd = [bench, "--json", "--threads", str(threads), "--min-time", str(min_time)]
    if len(passes) == 1:
        cmd += ["--pass", passes[0]]
    if quick:
        cmd += ["--quick"]
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
    except OSError as e:
        sys.exit("compare_torch: cannot run {}: {} (build it, or pass --bench PATH)".format(bench, e))
    if proc.returncode != 0:
        sys.exit("compare_torch: {} failed with status {}:\n{}".format(" ".join(cmd), proc.returncode,
                                                                       proc.stderr))
    results = {}
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            obj = json.loads(line)
            results[(case_key(obj), obj["pass"])] = obj
    return results


def torch_time(torch, cc, pass_name, min_time, repeats, grad_mode):
    F = torch.nn.functional
    gen = torch.Generator().manual_seed(1234)
    ho = out_size(cc["h"], cc["r"], cc["stride"], cc["pad"], cc["dilation"])
    wo = out_size(cc["w"], cc["s"], cc["stride"], cc["pad"], cc["dilation"])
    bound = 1.0 / math.sqrt(cc["c"] // cc["groups"] * cc["r"] * cc["s"])
    x = torch.empty(cc["n"], cc["c"], cc["h"], cc["w"]).uniform_(-1, 1, generator=gen)
    w = torch.empty(cc["k"], cc["c"] // cc["groups"], cc["r"], cc["s"]).uniform_(-bound, bound, generator=gen)
    seed = torch.empty(cc["n"], cc["k"], ho, wo).uniform_(-1, 1, generator=gen)
    x.requires_grad_(pass_name in ("bwd_data", "train"))
    w.requires_grad_(pass_name in ("bwd_weight", "train"))
    args = (None, cc["stride"], cc["pad"], cc["dilation"], cc["groups"])

    def reset_grads():
        for t in (x, w):
            if t.grad is not None:
                if grad_mode == "none":
                    t.grad = None
                else:
                    t.grad.zero_()

    def once():
        if pass_name == "fwd":
            with torch.no_grad():
                t0 = time.perf_counter()
                y = F.conv2d(x, w, *args)
                t1 = time.perf_counter()
        elif pass_name == "train":
            t0 = time.perf_counter()
            y = F.conv2d(x, w, *args)
            y.backward(seed)
            t1 = time.perf_counter()
        else:
            y = F.conv2d(x, w, *args)
            t0 = time.perf_counter()
            y.backward(seed)
            t1 = time.perf_counter()
        del y
        reset_grads()
        return t1 - t0

    once()
    warm = once()
    if repeats <= 0:
        repeats = max(5, min(100000, math.ceil(min_time / warm) if warm > 0 else 100000))
    times = [once() for _ in range(repeats)]
    return statistics.median(times), min(times), repeats


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", default="build/bench/bench_conv", help="path to bench_conv")
    ap.add_argument("--threads", default="1", help="comma-separated thread counts (default 1)")
    ap.add_argument("--runs", type=int, default=1, help="alternate ours/torch this many times; medians")
    ap.add_argument("--pass", dest="pass_name", default="all", choices=PASSES + ["all"])
    ap.add_argument("--min-time", type=float, default=0.5, help="seconds of repeats per case and pass")
    ap.add_argument("--torch-grad", default="none", choices=["none", "zero"],
                    help="how torch's .grad is reset between repeats (untimed)")
    ap.add_argument("--quick", action="store_true", help="N=2, 2 repeats (a smoke run)")
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    a = ap.parse_args()

    try:
        import torch
    except ImportError:
        print("compare_torch: PyTorch is not installed (Debian: apt-get install python3-torch); nothing to "
              "compare")
        return 0
    try:
        thread_counts = [int(t) for t in a.threads.split(",") if t.strip()]
    except ValueError:
        ap.error("--threads takes a comma-separated list of integers")
    if not thread_counts or min(thread_counts) < 1 or a.runs < 1:
        ap.error("--threads needs counts >= 1 and --runs >= 1")
    passes = PASSES if a.pass_name == "all" else [a.pass_name]
    bench = find_bench(a.bench)
    cases = default_cases(a.quick)
    repeats = 2 if a.quick else 0

    rows = []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        ours_runs, torch_runs = [], []
        for _ in range(a.runs):
            ours_runs.append(run_ours(bench, threads, passes, a.min_time, a.quick))
            tr = {}
            for cc in cases:
                for p in passes:
                    tr[(case_key(cc), p)] = torch_time(torch, cc, p, a.min_time, repeats, a.torch_grad)
            torch_runs.append(tr)
        for cc in cases:
            for p in passes:
                key = (case_key(cc), p)
                ours = [r[key] for r in ours_runs if key in r]
                flops = case_flops(cc) * (3 if p == "train" else 1)
                t_ms = statistics.median(r[key][0] for r in torch_runs) * 1e3
                row = dict(cc, op="conv", threads=threads, torch_threads=torch.get_num_threads(),
                           runs=a.runs, torch_ms=t_ms, torch_gflops=flops / t_ms * 1e-6)
                row["pass"] = p
                if ours:
                    o_ms = statistics.median(o["ms"] for o in ours)
                    peak = statistics.median(o["peak_gflops"] for o in ours)
                    row.update(ours_ms=o_ms, ratio=t_ms / o_ms, gflops=flops / o_ms * 1e-6,
                               peak_pct=100.0 * flops / o_ms * 1e-6 / peak, peak_gflops=peak,
                               peak1_gflops=statistics.median(o["peak1_gflops"] for o in ours))
                rows.append(row)

    if a.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print("PyTorch {} (torch.backends.mkldnn: {}); groupgrad bench: {}; median of {} run(s); torch .grad "
          "reset: {}".format(torch.__version__, torch.backends.mkldnn.is_available(), bench, a.runs,
                             a.torch_grad))
    for threads in thread_counts:
        sel = [r for r in rows if r["threads"] == threads]
        peak = next((r for r in sel if "peak_gflops" in r), None)
        print()
        print("{} thread(s){}".format(threads, "; FMA peak {:.0f} GFLOP/s on 1 thread, {:.0f} on {}".format(
            peak["peak1_gflops"], peak["peak_gflops"], threads) if peak else ""))
        if peak and threads > 1 and peak["peak_gflops"] < 0.8 * threads * peak["peak1_gflops"]:
            print("WARNING: the {}-thread peak is only {:.2f}x the 1-thread peak: other load on the machine, "
                  "these timings are unreliable".format(threads, peak["peak_gflops"] / peak["peak1_gflops"]))
        print("{:<40} {:<10} {:>9} {:>9} {:>11} {:>9} {:>6} {:>9}".format(
            "case", "pass", "ours ms", "torch ms", "torch/ours", "GFLOP/s", "%peak", "torch GF/s"))
        for r in sel:
            if "ours_ms" in r:
                print("{:<40} {:<10} {:>9.3f} {:>9.3f} {:>11.2f} {:>9.1f} {:>6.1f} {:>9.1f}".format(
                    case_name(r), r["pass"], r["ours_ms"], r["torch_ms"], r["ratio"], r["gflops"],
                    r["peak_pct"], r["torch_gflops"]))
            else:
                print("{:<40} {:<10} {:>9} {:>9.3f} {:>11} {:>9} {:>6} {:>9.1f}".format(
                    case_name(r), r["pass"], "n/a", r["torch_ms"], "n/a", "n/a", "n/a", r["torch_gflops"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
