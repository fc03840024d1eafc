"""Where the time of one RNN-T training step goes, per phase, at several batch sizes in one run:
torch.profiler's GPU kernels of our step (the harness's TrainStep over the closed model, bf16,
FusedLAMB) sorted into phases by kernel name, in ms per step.

    python benchmarks/profile_rnnt_step.py [--batch 128 192] [--steps 3] [--top 12]

Phases: joint+loss (the transducer joint and loss kernels), lstm (cuDNN's RNN kernels and the
fused cell's), gemm (every other matrix kernel: the LSTMs' input projections, the joint's linear
layers), optimizer (LAMB and the multi-tensor norms), elementwise (ATen's vectorized, reduction
and copy kernels), other. A phase that grows faster than the batch between two sizes is the
super-linear cost. The kernel sum leaves out the gaps between kernels; the step's wall time is
printed beside it. A plain script (it needs a GPU), at the sizes of steps/bench_rnnt_step.py.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "steps"))
from rnnt_closed_batch import T, U, V, synthetic_batch

from mlperf_fast.harness.step import TrainStep
from mlperf_fast.optim import FusedLAMB
from mlperf_fast.workloads.rnnt.config import CLOSED
from mlperf_fast.workloads.rnnt.model import RNNT
from mlperf_fast.workloads.rnnt.workload import TrainingLoss

# First match wins: the specific names before the generic GEMM and elementwise ones (and the
# transducer's "rnnt" kernels before cuDNN's "RNN" ones).
_I = re.IGNORECASE
PHASES = (
    ("joint+loss", re.compile(r"transducer|joint|rnnt|_loss|alpha|beta", _I)),
    ("lstm", re.compile(r"rnn|lstm|persist", _I)),
    ("optimizer", re.compile(r"lamb|multi_tensor|l2norm|adam", _I)),
    ("gemm", re.compile(r"gemm|cutlass|sm90_|sm80_|nvjet|xmma|matmul|dot", _I)),
    ("elementwise", re.compile(r"elementwise|vectorized|reduce|unrolled|copy|fill|cat", _I)),
)


def phase_of(kernel: str) -> str:
    for name, pattern in PHASES:
        if pattern.search(kernel):
            return name
    return "other"


def profile_batch(batch: int, steps: int) -> tuple[dict[str, float], dict[str, float], float,
                                                  float]:
    """(ms per step by phase, ms per step by kernel name, wall ms per step, peak GiB)."""
    torch.manual_seed(0)
    inputs = synthetic_batch(batch, "cuda")
    model = RNNT(V, CLOSED.features.in_feats, CLOSED.model).cuda()
    trainer = TrainStep(TrainingLoss(model),
                        FusedLAMB(model.parameters(), **CLOSED.optim.lamb_kwargs()))
    for _ in range(3):
        trainer.step([inputs], 1)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.step([inputs], 1)
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) / steps * 1e3
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            trainer.step([inputs], 1)
        torch.cuda.synchronize()
    by_phase: dict[str, float] = defaultdict(float)
    by_kernel: dict[str, float] = defaultdict(float)
    for ev in prof.events():
        if ev.device_type != torch.autograd.DeviceType.CUDA:
            continue
        ms = ev.device_time_total / 1e3 / steps  # a kernel's own duration, in microseconds
        by_phase[phase_of(ev.name)] += ms
        by_kernel[ev.name] += ms
    peak = torch.cuda.max_memory_allocated() / 2**30
    del trainer, model
    torch.cuda.empty_cache()
    return dict(by_phase), dict(by_kernel), wall, peak


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[128, 192])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--top", type=int, default=12, help="kernels listed per batch size")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA device", file=sys.stderr)
        return 2
    print(f"RNN-T training step, closed sizes T={T} U={U} V={V}, bf16, FusedLAMB; "
          f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    results = {b: profile_batch(b, args.steps) for b in args.batch}
    names = [n for n, _ in PHASES] + ["other"]
    head = " | ".join(f"B={b}" for b in args.batch)
    print(f"\n| phase (ms per step) | {head} |" + (" growth |" if len(args.batch) > 1 else ""))
    print("|---|" + "---:|" * (len(args.batch) + (len(args.batch) > 1)))
    first, last = args.batch[0], args.batch[-1]
    for n in [*names, "kernel sum", "wall", "peak GiB"]:
        vals = []
        for b in args.batch:
            phases, _, wall, peak = results[b]
            vals.append({"kernel sum": sum(phases.values()), "wall": wall,
                         "peak GiB": peak}.get(n, phases.get(n, 0.0)))
        row = " | ".join(f"{v:.2f}" for v in vals)
        growth = (f" {vals[-1] / vals[0]:.2f}x (batch {last / first:.2f}x) |"
                  if len(vals) > 1 and vals[0] > 0 else (" |" if len(vals) > 1 else ""))
        print(f"| {n} | {row} |{growth}")
    for b in args.batch:
        kernels = results[b][1]
        print(f"\nB={b}: the {args.top} largest kernels (ms per step)")
        for name, ms in sorted(kernels.items(), key=lambda kv: -kv[1])[:args.top]:
            print(f"  {ms:8.3f}  [{phase_of(name)}] {name[:110]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
