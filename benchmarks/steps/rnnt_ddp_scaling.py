"""Weak scaling of the closed RNN-T training step over GPUs: the optimized model (bf16, fused
joint + loss, FusedLAMB) in DistributedDataParallel at a fixed per-GPU batch, on synthetic
utterances of the closed sizes (12.3 s = 410 stacked frames, 60 targets).

    torchrun --nproc-per-node N benchmarks/steps/rnnt_ddp_scaling.py [--batch 128] [--out FILE]

Run it with N = 1 and with N = the GPUs of the machine: scaling efficiency is the one-GPU step
time over the N-GPU step time (each GPU does the same work; the N-GPU step adds the gradient
all-reduce). Rank 0 prints one JSON line (and appends it to --out).
"""
from __future__ import annotations

import argparse
import json
import os

import torch
import torch.distributed as dist
from rnnt_closed_batch import V, synthetic_batch

from mlperf_fast.harness import distributed
from mlperf_fast.harness.step import TrainStep
from mlperf_fast.optim import FusedLAMB
from mlperf_fast.workloads.rnnt.config import CLOSED
from mlperf_fast.workloads.rnnt.model import RNNT
from mlperf_fast.workloads.rnnt.workload import TrainingLoss


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128, help="utterances per GPU per step")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", help="append the result (JSON line) to this file")
    args = ap.parse_args()
    rank, world, dev = distributed.setup("cuda")
    torch.manual_seed(0)
    model = RNNT(V, CLOSED.features.in_feats, CLOSED.model).to(dev)
    step_model = TrainingLoss(model)
    if world > 1:
        step_model = torch.nn.parallel.DistributedDataParallel(step_model, device_ids=[dev.index])
    opt = FusedLAMB(model.parameters(), **CLOSED.optim.lamb_kwargs())
    trainer = TrainStep(step_model, opt, params=list(model.parameters()))
    batch = synthetic_batch(args.batch, dev, seed=1 + rank)

    def step() -> None:
        trainer.step([batch], 1)

    for _ in range(2):
        step()
    torch.cuda.synchronize()
    distributed.barrier()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(args.steps):
        step()
    stop.record()
    torch.cuda.synchronize()
    ms = torch.tensor(start.elapsed_time(stop) / args.steps, device=dev)
    if world > 1:
        dist.all_reduce(ms, op=dist.ReduceOp.MAX)  # the step is as slow as its slowest rank
    if rank == 0:
        result = {"gpus": world, "gpu": torch.cuda.get_device_name(dev), "batch_per_gpu": args.batch,
                  "step_ms": round(float(ms), 2),
                  "utterances_per_s": round(world * args.batch * 1000 / float(ms), 1),
                  "torch": torch.__version__}
        line = json.dumps(result)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")
    distributed.teardown()


if __name__ == "__main__":
    if "LOCAL_RANK" not in os.environ:
        os.environ.setdefault("LOCAL_RANK", "0")
    main()
