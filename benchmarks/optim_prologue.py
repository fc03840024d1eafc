"""Host time of a fused optimizer step's prologue: everything ``step`` does on the CPU before its
first kernel launch (collecting and checking the parameters that have gradients, GradScaler's
tensors, the learning rates), over BERT-large's 396 tensors in two groups.

    python benchmarks/optim_prologue.py [--device meta|cpu|cuda] [--repeat N]

Three cases per optimizer and dtype: nothing changed since the last step (the same gradient
tensors); new gradient tensors of the same kind (after zero_grad(set_to_none=True) and a
backward pass); and the full collection with every per-parameter check, as on the first step or
after a change. The tensors' contents are never read: on the default "meta" device they have
none, so the set costs no memory (host costs are those of any device's tensors). A plain script,
not a pytest benchmark: it needs no GPU and reports host microseconds rather than device time.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from shapes import bert_large_shapes  # noqa: E402

from mlperf_fast.optim import FusedAdam, FusedLAMB, FusedLARS, FusedSGD  # noqa: E402

OPTIMIZERS = {
    "FusedLAMB": lambda groups: FusedLAMB(groups, lr=1e-3),
    "FusedAdam": lambda groups: FusedAdam(groups, lr=1e-3),
    "FusedSGD": lambda groups: FusedSGD(groups, lr=0.1, momentum=0.9),
    "FusedLARS": lambda groups: FusedLARS(groups, lr=0.1),
}


def _groups(params):
    return [dict(params=[p for p in params if p.dim() > 1]),
            dict(params=[p for p in params if p.dim() <= 1], weight_decay=0.0)]


def _time_us(fn, before=None, repeat: int = 300) -> tuple[float, float]:
    """(median, min) microseconds of fn(); before() runs untimed ahead of each call."""
    samples = []
    for k in range(repeat + 10):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        if k >= 10:
            samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6, min(samples) * 1e6


def _row(make, params, grad_sets, repeat: int) -> list[tuple[float, float]]:
    for p, g in zip(params, grad_sets[0]):
        p.grad = g
    opt = make(_groups(params))
    opt._step_inputs()  # creates the state
    flip = [0]

    def new_grads():
        flip[0] ^= 1
        for p, g in zip(params, grad_sets[flip[0]]):
            p.grad = g

    def forget():
        opt._plan = None

    return [_time_us(opt._step_inputs, repeat=repeat),
            _time_us(opt._step_inputs, new_grads, repeat=repeat),
            _time_us(opt._step_inputs, forget, repeat=repeat)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="meta")
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args()
    shapes = bert_large_shapes()
    print(f"{len(shapes)} tensors (BERT-large), device {args.device}, torch {torch.__version__}; "
          "microseconds, median (min)")
    print(f"{'optimizer':10} {'dtype':9} {'unchanged':>18} {'new grads':>18} "
          f"{'full collection':>18}")
    for dtype in (torch.float32, torch.bfloat16):
        params = [torch.nn.Parameter(torch.empty(s, dtype=dtype, device=args.device))
                  for s in shapes]
        grad_sets = [[torch.empty_like(p) for p in params] for _ in range(2)]
        for name, make in OPTIMIZERS.items():
            cells = _row(make, params, grad_sets, args.repeat)
            row = " ".join(f"{med:9.1f} ({mn:6.1f})" for med, mn in cells)
            print(f"{name:10} {str(dtype).replace('torch.', ''):9} {row}")


if __name__ == "__main__":
    main()
