"""Where the time of the table-batched embedding goes: torch.profiler's GPU kernels, grouped by
name, for the forward and for forward + backward + fused SGD at the DLRM shape of
benchmarks/ops/bench_table_batched_embedding.py.

    python benchmarks/profile_embedding.py [--L 1 20] [--dist uniform powerlaw] [--steps 5]

A plain script (it needs a GPU): it prints one table per case, with the wall time of a step.
"""
from __future__ import annotations

import argparse
import sys

import torch
from loading import bench_module
from torch.profiler import ProfilerActivity, profile

from mlperf_fast.ops.table_batched_embedding import (
    TableLayout,
    table_batched_embedding_bag,
    table_batched_embedding_bag_fused,
)


def _profile(fn, steps: int):
    """The profile of `steps` calls (after 2 warm-up calls) and the wall time of one, in us."""
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        start.record()
        for _ in range(steps):
            fn()
        end.record()
        torch.cuda.synchronize()
    return prof, start.elapsed_time(end) * 1e3 / steps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--L", type=int, nargs="+", default=[1, 20])
    ap.add_argument("--dist", nargs="+", default=["uniform", "powerlaw"])
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA device", file=sys.stderr)
        return 2
    bench = bench_module("table_batched_embedding")
    layout = TableLayout([bench.ROWS] * bench.T, [bench.DIM] * bench.T)
    w = torch.empty(layout.numel, device="cuda").uniform_(-0.05, 0.05).requires_grad_(True)
    grad_out = torch.randn(bench.BATCH, layout.total_D, device="cuda")
    for L in args.L:
        for dist in args.dist:
            indices, offsets = bench.make_inputs(L, dist)

            def forward(indices=indices, offsets=offsets):
                with torch.no_grad():
                    table_batched_embedding_bag(w, layout, indices, offsets, check_indices=False)

            def train(indices=indices, offsets=offsets):
                out = table_batched_embedding_bag_fused(w, layout, indices, offsets, lr=1e-4,
                                                        check_indices=False)
                out.backward(grad_out)

            for name, fn in (("forward", forward), ("forward+backward+SGD", train)):
                prof, wall = _profile(fn, args.steps)
                print(f"\n== L={L} {dist} {name}: {wall:.1f} us a step (wall), "
                      f"totals below over {args.steps} steps")
                print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12,
                                                max_name_column_width=60))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
