"""The run-to-target loop: blocks of training epochs and an evaluation after each, until the
quality target is met or the epoch budget is spent, with MLPerf logging, checkpoints after
every block, and a report at the end."""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from typing import Any

import torch

from mlperf_fast.harness import checkpoint, distributed
from mlperf_fast.harness.compliance import check_log
from mlperf_fast.harness.mllog import C, MLLog, now_ms
from mlperf_fast.harness.progress import Progress
from mlperf_fast.harness.report import RunResult, write_run_report, write_summary
from mlperf_fast.harness.seeding import rng_state, run_seeds, seed_everything, set_rng_state
from mlperf_fast.harness.workload import RunContext, Workload

SUBMISSION_ORG = "mlperf_fast"


@dataclass
class RunOptions:
    """How to run a workload; the CLI's flags. ``output_dir`` holds run_0, run_1, ... and the
    summary. ``max_epochs`` overrides the workload's budget when given."""

    config: str
    output_dir: str
    seed: int = 1
    runs: int = 1
    data_dir: str | None = None
    max_epochs: int | None = None
    resume: bool = False
    device: str | None = None
    checkpoint_every: int = 1  # blocks between checkpoints; 0 disables them
    echo_log: bool = True
    progress: bool = True


def run_dir(options: RunOptions, index: int) -> str:
    return os.path.join(options.output_dir, f"run_{index}")


def run_workload(workload_cls: type[Workload], options: RunOptions) -> dict[str, Any] | None:
    """All runs of ``options.runs``; returns the summary (on rank 0; None on other ranks).

    Each run gets its own seed (derived from ``options.seed``; a single run uses it as is). With
    ``resume``, finished runs are kept, an interrupted one continues from its checkpoint and the
    rest start afresh.
    """
    rank, world_size, device = distributed.setup(options.device)
    seeds = [options.seed] if options.runs == 1 else run_seeds(options.seed, options.runs)
    results: list[RunResult] = []
    for i, seed in enumerate(seeds):
        out = run_dir(options, i)
        if options.resume and os.path.exists(os.path.join(out, "report.json")):
            results.append(_load_result(os.path.join(out, "report.json")))
            continue
        ctx = RunContext(seed=seed, device=device, rank=rank, world_size=world_size,
                         data_dir=options.data_dir, output_dir=out)
        results.append(_run_one(workload_cls, options, ctx))
    if rank != 0:
        return None
    return write_summary(results, options.output_dir)


def _load_result(path: str) -> RunResult:
    import json

    with open(path) as f:
        return RunResult(**json.load(f))


def _platform_name(device: torch.device, world_size: int) -> str:
    if device.type == "cuda":
        return f"{world_size}x{torch.cuda.get_device_name(device)}"
    return f"{world_size}x{platform.processor() or platform.machine()} CPU ({os.cpu_count()} cores)"


def _run_one(workload_cls: type[Workload], options: RunOptions, ctx: RunContext) -> RunResult:
    config = workload_cls.configs()[options.config]
    is_rank0 = ctx.rank == 0
    out = ctx.output_dir
    if is_rank0:
        os.makedirs(out, exist_ok=True)
    distributed.barrier()
    ckpt_path = os.path.join(out, "checkpoint.pt")
    state = checkpoint.load(ckpt_path) if options.resume and os.path.exists(ckpt_path) else None
    log = MLLog(os.path.join(out, "mlperf.log"), enabled=is_rank0, echo=options.echo_log,
                truncate_at=state["log_offset"] if state else None)

    seed_everything(ctx.seed)
    workload = workload_cls(config, ctx)
    max_epochs = options.max_epochs or workload.max_epochs
    progress = Progress(max_epochs, f"{workload.benchmark} ({options.config})",
                        enabled=options.progress and is_rank0,
                        quality_name=workload.quality_name)
    ctx.progress = progress

    if state is None:
        log.event(C.CACHE_CLEAR, True)
        log.start(C.INIT_START)
        log.event(C.SUBMISSION_ORG, SUBMISSION_ORG)
        log.event(C.SUBMISSION_PLATFORM, _platform_name(ctx.device, ctx.world_size))
        log.event(C.SUBMISSION_DIVISION, workload.division)
        log.event(C.SUBMISSION_STATUS, "research")
        log.event(C.SUBMISSION_BENCHMARK, workload.benchmark)
        log.event(C.SEED, ctx.seed)
        for key, value in workload.hyperparameters().items():
            log.event(key, value)
    workload.build()
    if state is None:
        workload.log_weights_initialization(log)
        log.end(C.INIT_STOP)
        distributed.barrier()
        run_start = now_ms()
        log.start(C.RUN_START, time_ms=run_start)
        epoch, history = 0, []
    else:
        if state["benchmark"] != workload.benchmark or state["seed"] != ctx.seed:
            raise checkpoint.CheckpointError(
                f"{ckpt_path} belongs to {state['benchmark']} with seed {state['seed']}, not to "
                f"{workload.benchmark} with seed {ctx.seed}")
        if len(state["rng"]) != ctx.world_size:
            raise checkpoint.CheckpointError(
                f"{ckpt_path} was written by {len(state['rng'])} processes; resume it with as many "
                f"(this run has {ctx.world_size})")
        workload.load_state_dict(state["workload"])
        set_rng_state(state["rng"][ctx.rank])
        run_start, epoch, history = state["run_start_ms"], state["epoch"], state["history"]

    status = "aborted"
    quality: float | None = history[-1]["quality"] if history else None
    blocks = 0
    progress.start(epoch)
    try:
        while epoch < max_epochs:
            count = min(workload.epochs_per_block, max_epochs - epoch)
            log.start(C.BLOCK_START, metadata={"first_epoch_num": epoch + 1, "epoch_count": count})
            for e in range(epoch, epoch + count):
                log.start(C.EPOCH_START, metadata={"epoch_num": e + 1})
                workload.train_epoch(e)
                log.end(C.EPOCH_STOP, metadata={"epoch_num": e + 1})
                progress.epoch_done()
            epoch += count
            log.start(C.EVAL_START, metadata={"epoch_num": epoch})
            quality = float(distributed.broadcast_object(float(workload.evaluate())))
            log.event(C.EVAL_ACCURACY, quality, metadata={"epoch_num": epoch})
            log.end(C.EVAL_STOP, metadata={"epoch_num": epoch})
            log.end(C.BLOCK_STOP, metadata={"first_epoch_num": epoch - count + 1})
            history.append({"epoch": epoch, "time_s": (now_ms() - run_start) / 1000.0,
                            "quality": quality})
            progress.quality(quality)
            blocks += 1
            done = workload.converged(quality)
            if options.checkpoint_every and (blocks % options.checkpoint_every == 0 or done):
                _save_checkpoint(ckpt_path, workload, ctx, log, run_start, epoch, history)
            if done:
                status = "converged"
                break
        else:
            status = "not converged"
    finally:
        progress.close()
        run_stop = now_ms()
        log.end(C.RUN_STOP, metadata={"status": C.SUCCESS if status == "converged" else C.ABORTED},
                time_ms=run_stop)
        log.close()

    verdict = check_log(log.path, workload.benchmark).to_dict() if is_rank0 else {}
    from mlperf_fast.info import collect

    result = RunResult(
        benchmark=workload.benchmark, config=options.config, division=workload.division,
        seed=ctx.seed, status=status, target=workload.target,
        quality_name=workload.quality_name, higher_is_better=workload.higher_is_better,
        time_to_train_s=(run_stop - run_start) / 1000.0 if status == "converged" else None,
        run_time_s=(run_stop - run_start) / 1000.0, epochs=epoch, final_quality=quality,
        history=history, world_size=ctx.world_size, device=_platform_name(ctx.device, ctx.world_size),
        resumed=state is not None, compliance=verdict,
        hyperparameters={k: v for k, v in workload.hyperparameters().items()},
        environment=collect() if is_rank0 else {}, output_dir=out,
    )
    if is_rank0:
        write_run_report(result, out)
    distributed.barrier()
    return result


def _save_checkpoint(path: str, workload: Workload, ctx: RunContext, log: MLLog,
                     run_start: int, epoch: int, history: list[dict[str, float]]) -> None:
    rngs = distributed.all_gather_object(rng_state())
    state = workload.state_dict()
    if ctx.rank == 0:
        checkpoint.save(path, {
            "benchmark": workload.benchmark, "seed": ctx.seed, "epoch": epoch,
            "history": history, "run_start_ms": run_start, "log_offset": log.offset(),
            "rng": rngs, "workload": state,
        })
    distributed.barrier()
