"""Where the time of transducer_joint_loss goes: torch.profiler's GPU kernels, grouped by name,
for one forward + backward at the MLPerf shape of benchmarks/ops/bench_transducer_joint_loss.py.

    python benchmarks/profile_joint_loss.py [--dtype float32|bfloat16] [--fp32-gemm tf32x3] [--rows 25]

A plain script (it needs a GPU): it prints the table and the peak memory of the profiled step.
"""
from __future__ import annotations

import argparse
import sys

import torch
from loading import bench_module
from torch.profiler import ProfilerActivity, profile

from mlperf_fast.ops import transducer_joint_loss


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--fp32-gemm", default="auto")
    ap.add_argument("--rows", type=int, default=25)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA device", file=sys.stderr)
        return 2
    bench = bench_module("transducer_joint_loss")
    params, labels = bench._inputs(getattr(torch, args.dtype))

    def step():
        for p in params:
            p.grad = None
        transducer_joint_loss(*params, *labels, fp32_gemm=args.fp32_gemm).backward()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    print(f"{bench.SHAPE}, {args.dtype}, fp32_gemm={args.fp32_gemm}, "
          f"peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=args.rows,
                                    max_name_column_width=70))
    return 0


if __name__ == "__main__":
    sys.exit(main())
