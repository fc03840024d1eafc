"""The run-to-target loop: blocks of training between the evaluation points of the workload's
schedule, and an evaluation after each, until every quality target is met or the budget is spent,
with MLPerf logging, checkpoints after every block, and a report at the end."""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from typing import Any

import torch

from mlperf_fast.harness import checkpoint, distributed
from mlperf_fast.harness.compliance import check_log, explain
from mlperf_fast.harness.overrides import apply_overrides
from mlperf_fast.harness.rcp import rcp_match
from mlperf_fast.harness.profiling import StepProfiler
from mlperf_fast.harness.steplog import StepLog
from mlperf_fast.harness.mllog import C, MLLog, now_ms
from mlperf_fast.harness.progress import Progress
from mlperf_fast.harness.report import RunResult, write_run_report, write_summary
from mlperf_fast.harness.seeding import rng_state, run_seeds, seed_everything, set_rng_state
from mlperf_fast.harness.workload import (DryRunComplete, RunContext, Workload, metric_values,
                                          tidy)
from mlperf_fast.info import machine_info

SUBMISSION_ORG = "mlperf_fast"


@dataclass(frozen=True)
class Submission:
    """The MLPerf log's submission_* values; None takes the default (org mlperf_fast, the
    platform found, status research)."""

    org: str | None = None
    platform: str | None = None
    status: str | None = None


@dataclass
class RunOptions:
    """How to run a workload; the CLI's flags. ``output_dir`` holds run_0, run_1, ... and the
    summary. ``budget`` overrides the schedule's budget (in its unit) when given."""

    config: str
    output_dir: str
    seed: int | None = None  # None: the configuration's
    runs: int = 1
    data_dir: str | None = None
    budget: float | None = None
    resume: bool = False
    device: str | None = None
    checkpoint_every: int = 1  # blocks between checkpoints; 0 disables them
    echo_log: bool = True
    progress: bool = True
    overrides: list[str] = field(default_factory=list)  # --set KEY=VALUE, applied in order
    dry_run_steps: int | None = None  # stop after this many training steps
    profile_steps: int | None = None  # profile this many steps (after 2 of warm-up), then stop
    submission: Submission = field(default_factory=Submission)


def check_resumable(output_dir: str) -> str | None:
    """What stands in the way of resuming the runs in ``output_dir``, or None."""
    runs = sorted(d for d in os.listdir(output_dir) if d.startswith("run_"))
    if not runs:
        return f"{output_dir} holds no runs (run_0, ...) to continue"
    for d in runs:
        out = os.path.join(output_dir, d)
        report = os.path.join(out, "report.json")
        if os.path.exists(report):
            try:
                _load_result(report)
            except (ValueError, TypeError, KeyError, OSError) as e:
                return f"{report} is not a run report ({type(e).__name__}: {e})"
            continue
        ckpt = os.path.join(out, "checkpoint.pt")
        if os.path.exists(ckpt):
            try:
                state = checkpoint.load(ckpt)
            except checkpoint.CheckpointError as e:
                return str(e)
            log = os.path.join(out, "mlperf.log")
            if not os.path.exists(log) or os.path.getsize(log) < state.get("log_offset", 0):
                return (f"{log} is missing or shorter than when {ckpt} was written: the MLPerf "
                        "log cannot be continued")
    return None


def run_dir(options: RunOptions, index: int) -> str:
    return os.path.join(options.output_dir, f"run_{index}")


def run_workload(workload_cls: type[Workload], options: RunOptions) -> dict[str, Any] | None:
    """All runs of ``options.runs``; returns the summary (on rank 0; None on other ranks).

    Each run gets its own seed (derived from ``options.seed``; a single run uses it as is). With
    ``resume``, finished runs are kept, an interrupted one continues from its checkpoint and the
    rest start afresh.
    """
    rank, world_size, device = distributed.setup(options.device)
    base_seed = options.seed if options.seed is not None else \
        workload_cls.configs()[options.config].seed
    seeds = [base_seed] if options.runs == 1 else run_seeds(base_seed, options.runs)
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
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return RunResult(**data)


def _platform_name(device: torch.device, world_size: int) -> str:
    if device.type == "cuda":
        return f"{world_size}x{torch.cuda.get_device_name(device)}"
    return f"{world_size}x{platform.processor() or platform.machine()} CPU ({os.cpu_count()} cores)"


def _block_metadata(unit: str, start: float, stop: float) -> dict[str, Any]:
    """block_start's metadata: epochs count from 1 in MLPerf's logs; fractional epochs, samples
    and iterations are logged as the progress they start at."""
    first = start + 1 if unit == "epoch" and float(start).is_integer() else start
    return {"first_epoch_num": tidy(first), "epoch_count": tidy(stop - start)}


def _run_one(workload_cls: type[Workload], options: RunOptions, ctx: RunContext) -> RunResult:
    config, overrides = apply_overrides(workload_cls.configs()[options.config], options.overrides)
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
    schedule = workload.schedule
    budget = options.budget if options.budget is not None else schedule.budget
    points = schedule.evaluation_points(budget)
    metrics = workload.metrics
    progress = Progress(budget, f"{workload.benchmark} ({options.config})", unit=schedule.unit,
                        enabled=options.progress and is_rank0)
    ctx.progress = progress
    ctx.say = progress.write if options.progress else (lambda message: None)
    profiler = StepProfiler(out, options.profile_steps) if options.profile_steps and is_rank0 \
        else None
    steps = StepLog(os.path.join(out, "steps.jsonl") if is_rank0 else None, run_start=None,
                    resume=state is not None, dry_run_steps=options.dry_run_steps,
                    profiler=profiler)
    ctx.steps = steps
    machine = machine_info(ctx.device)
    sub = options.submission

    if state is None:
        log.event(C.CACHE_CLEAR, True)
        log.start(C.INIT_START)
        log.event(C.SUBMISSION_ORG, sub.org or SUBMISSION_ORG)
        log.event(C.SUBMISSION_PLATFORM, sub.platform or _platform_name(ctx.device, ctx.world_size))
        log.event(C.SUBMISSION_DIVISION, workload.division)
        log.event(C.SUBMISSION_STATUS, sub.status or "research")
        log.event(C.SUBMISSION_BENCHMARK, workload.benchmark)
        log.event(C.SEED, ctx.seed)
    hyperparameters = workload.hyperparameters()
    if state is None:
        for key, value in hyperparameters.items():
            log.event(key, value)
    workload.build()
    if state is None:
        workload.log_weights_initialization(log)
        log.end(C.INIT_STOP)
        distributed.barrier()
        run_start = now_ms()
        log.start(C.RUN_START, time_ms=run_start)
        done_progress, history = 0, []
        rcp = rcp_match(workload.benchmark, workload.division, hyperparameters,
                        workload.ruleset, workload.rcp_as_logged)
        if rcp.get("warning"):
            ctx.log(f"warning: {rcp['warning']}")
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
        run_start, done_progress, history = state["run_start_ms"], state["progress"], state["history"]
        rcp = rcp_match(workload.benchmark, workload.division, hyperparameters,
                        workload.ruleset, workload.rcp_as_logged)
    steps.run_start_ms = run_start

    status = "aborted"
    quality: dict[str, float] | None = history[-1]["quality"] if history else None
    blocks = 0
    progress.start(done_progress)
    try:
        for point in points:
            if point <= done_progress:
                continue
            start = done_progress
            log.start(C.BLOCK_START, metadata=_block_metadata(schedule.unit, start, point))
            if schedule.unit == "epoch" and float(start).is_integer() and float(point).is_integer():
                for e in range(int(start), int(point)):
                    log.start(C.EPOCH_START, metadata={"epoch_num": e + 1})
                    workload.train(e, e + 1)
                    steps.flush()
                    log.end(C.EPOCH_STOP, metadata={"epoch_num": e + 1})
                    progress.advance_to(e + 1)
                reached = point
            else:
                reached = workload.train(start, point)
                steps.flush()
                reached = point if reached is None else tidy(reached)
                progress.advance_to(reached)
            done_progress = reached
            log.start(C.EVAL_START, metadata={"epoch_num": done_progress})
            quality = distributed.broadcast_object(workload.quality(workload.evaluate()))
            log.event(C.EVAL_ACCURACY, metric_values(metrics, quality),
                      metadata={"epoch_num": done_progress})
            log.end(C.EVAL_STOP, metadata={"epoch_num": done_progress})
            log.end(C.BLOCK_STOP, metadata={"first_epoch_num":
                                            _block_metadata(schedule.unit, start, point)
                                            ["first_epoch_num"]})
            history.append({"progress": done_progress, "time_s": (now_ms() - run_start) / 1000.0,
                            "quality": quality})
            progress.quality(quality)
            blocks += 1
            done = workload.converged(quality)
            if options.checkpoint_every and (blocks % options.checkpoint_every == 0 or done):
                _save_checkpoint(ckpt_path, workload, ctx, log, run_start, done_progress, history)
            if done:
                status = "converged"
                break
            if done_progress >= budget:
                break
        if status != "converged":
            status = "not converged"
    except DryRunComplete:
        status = "profiled" if profiler is not None else "dry run"
    finally:
        steps.close()
        progress.close()
        run_stop = now_ms()
        log.end(C.RUN_STOP, metadata={"status": C.SUCCESS if status == "converged" else C.ABORTED},
                time_ms=run_stop)
        log.close()

    if not is_rank0:
        verdict = {}
    elif status in ("dry run", "profiled"):
        verdict = {"passed": False, "ruleset": None, "rules": None, "messages": "",
                   "explanation": [f"{'a dry run' if status == 'dry run' else 'a profiled run'}"
                                   " stops after a few steps: its log is not checked"]}
    else:
        verdict = check_log(log.path, workload.benchmark, workload.ruleset).to_dict()
        verdict["explanation"] = explain(verdict, metrics, history)
    from mlperf_fast.info import collect

    result = RunResult(
        benchmark=workload.benchmark, config=options.config, division=workload.division,
        seed=ctx.seed, status=status, unit=schedule.unit,
        targets=[{"name": m.name, "target": m.target, "higher_is_better": m.higher_is_better}
                 for m in metrics],
        time_to_train_s=(run_stop - run_start) / 1000.0 if status == "converged" else None,
        run_time_s=(run_stop - run_start) / 1000.0, progress=done_progress,
        final_quality=quality, history=history, world_size=ctx.world_size,
        device=_platform_name(ctx.device, ctx.world_size),
        resumed=state is not None, compliance=verdict,
        hyperparameters=dict(hyperparameters), overrides=overrides, rcp=rcp,
        machine=machine, steps=steps.count,
        environment=collect() if is_rank0 else {}, output_dir=out,
    )
    if is_rank0:
        write_run_report(result, out)
    distributed.barrier()
    return result


def _save_checkpoint(path: str, workload: Workload, ctx: RunContext, log: MLLog,
                     run_start: int, done_progress: float, history: list[dict[str, Any]]) -> None:
    rngs = distributed.all_gather_object(rng_state())
    state = workload.state_dict()
    if ctx.rank == 0:
        checkpoint.save(path, {
            "benchmark": workload.benchmark, "seed": ctx.seed, "progress": done_progress,
            "history": history, "run_start_ms": run_start, "log_offset": log.offset(),
            "rng": rngs, "workload": state,
        })
    distributed.barrier()
