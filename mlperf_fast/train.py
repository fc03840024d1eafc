"""``python -m mlperf_fast.train NAME``: train a benchmark to its quality target.

Without ``--data-dir`` a benchmark trains on its embedded data set (generated locally, in the
real on-disk format, cached); with it, on the real data in its closed-division configuration.
Errors in the command line or the data give one line naming the problem and exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import shutil
import sys
import time
from dataclasses import dataclass

from mlperf_fast.harness.workload import DataError, Workload

EXIT_USAGE = 2


@dataclass(frozen=True)
class Entry:
    target: str  # "package.module:WorkloadClass", imported only when the benchmark runs
    description: str


#: The benchmarks, by the name used on the command line.
REGISTRY: dict[str, Entry] = {}


def register(name: str, target: str, description: str) -> None:
    """Add a benchmark (or replace one) under ``name``."""
    REGISTRY[name] = Entry(target, description)


def _discover() -> None:
    """Register every package of mlperf_fast.workloads: its name is the benchmark's, its
    docstring's first line the description, and its workload.py's ``WORKLOAD`` the class
    (imported only when the benchmark runs, so that --list stays light)."""
    import mlperf_fast.workloads as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.ispkg or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{pkg.__name__}.{info.name}")
        doc = (module.__doc__ or info.name).strip().splitlines()[0]
        register(info.name, f"{pkg.__name__}.{info.name}.workload:WORKLOAD", doc)


_discover()


def load_workload(name: str) -> type[Workload]:
    module, _, attr = REGISTRY[name].target.partition(":")
    return getattr(importlib.import_module(module), attr)


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise UsageError(message)


SUBMISSION_STATUSES = ("cloud", "onprem", "preview", "research")
SEED_LIMIT = 2**32


def _parser() -> argparse.ArgumentParser:
    from mlperf_fast import __version__

    argv0 = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    prog = os.environ.get("MLPERF_FAST_PROG") or (
        argv0 if argv0 and not argv0.endswith(".py") and argv0 != "-c"
        else "python -m mlperf_fast.train")
    p = _Parser(
        prog=prog,
        description="Train an MLPerf benchmark to its quality target, with MLPerf-compliant logs, "
        "time-to-train and a report. `NAME --help` describes one benchmark: its configurations, "
        "targets and data.",
    )
    p.add_argument("name", nargs="?", help="the benchmark (see --list)")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.add_argument("--version", action="version", version=f"mlperf_fast {__version__}")
    p.add_argument("--data-dir", help="the real data set (default: the embedded one)")
    p.add_argument("--config", help="a named configuration (default: 'embedded' without "
                   "--data-dir, 'closed' with it)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a configuration field, e.g. optim.lr=5e-3, schedule.budget=20, "
                   "target.WER=0.1 (repeatable; `NAME --help` lists the keys)")
    p.add_argument("--runs", type=int, default=1, help="runs with distinct seeds, scored as MLPerf "
                   "does (drop the fastest and slowest, average the rest)")
    p.add_argument("--seed", type=int, help="seed of the run (of the seeds of --runs; default: "
                   "the configuration's)")
    p.add_argument("--budget", type=float, help="the budget in the benchmark's unit of progress "
                   "(epochs, samples or iterations; default: the configuration's)")
    p.add_argument("--max-epochs", type=int, help="the budget in epochs, for benchmarks that "
                   "count epochs")
    p.add_argument("--output", help="output folder (default: runs/NAME-CONFIG-TIME)")
    p.add_argument("--resume", action="store_true", help="continue the runs in --output from "
                   "their last checkpoints")
    p.add_argument("--overwrite", action="store_true", help="replace what --output holds "
                   "(without it an existing run folder is never overwritten)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when there is a GPU")
    p.add_argument("--checkpoint-every", type=int, default=1, metavar="BLOCKS",
                   help="blocks between checkpoints (0: none)")
    p.add_argument("--dry-run", nargs="?", type=int, const=3, metavar="STEPS",
                   help="check the data, build the model, run STEPS training steps (default 3) "
                   "and stop")
    p.add_argument("--profile", type=int, metavar="STEPS", help="trace STEPS training steps "
                   "with torch.profiler (after 2 of warm-up), write profile.md (time by phase) "
                   "and profile_trace.json, and stop")
    p.add_argument("--echo-mllog", action="store_true", help="print the MLPerf log lines on "
                   "stdout too (they always go to mlperf.log)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or status lines")
    g = p.add_argument_group("submission (the MLPerf log's submission_* keys)")
    g.add_argument("--submitter", help="submission_org (default: mlperf_fast)")
    g.add_argument("--platform", help="submission_platform (default: the devices found)")
    g.add_argument("--status", choices=SUBMISSION_STATUSES,
                   help="submission_status (default: research)")
    return p


def _benchmark_help(name: str) -> str:
    """``NAME --help``: the benchmark's description, configurations, targets, data layout and
    settable keys."""
    from mlperf_fast.harness.overrides import describe

    cls = load_workload(name)
    package = cls.__module__.rpartition(".")[0]
    pkg_doc = ""
    if package.startswith("mlperf_fast.workloads."):
        module = importlib.import_module(package)
        pkg_doc = "\n".join((module.__doc__ or "").strip().splitlines()[1:]).strip()
    lines = [f"{name}: {REGISTRY[name].description}", ""]
    doc = (cls.__doc__ or "").strip()
    for text in (pkg_doc, doc):
        if text:
            lines += [text, ""]
    lines.append("Configurations (--config):")
    configs = cls.configs()
    for cname, cfg in configs.items():
        targets = " and ".join(m.describe() for m in cfg.targets)
        s = cfg.schedule
        first = f", first at {s.first:g}" if s.first is not None else ""
        lines.append(f"  {cname:<12} {cfg.division} division; target {targets}; evaluated every "
                     f"{s.every:g} {s.unit}(s){first}; budget {s.budget:g}; global batch "
                     f"{cfg.global_batch_size}")
    if cls.extra:
        lines += ["", f"Needs the extra: pip install 'mlperf-fast[{cls.extra}]'"]
    default = configs[cls.default_config(None)] if cls.default_config(None) in configs else \
        next(iter(configs.values()))
    lines += ["", f"Keys of --set (values of the {default.name} configuration):"]
    lines += [f"  {k} = {v!r}" for k, v in describe(default)]
    return "\n".join(lines)


def _validate(args: argparse.Namespace):
    if args.name is None:
        raise UsageError("name a benchmark (see --list)")
    if args.name not in REGISTRY:
        known = ", ".join(sorted(REGISTRY)) or "none yet"
        raise UsageError(f"unknown benchmark {args.name!r} (known: {known})")
    for flag, value, low in (("--runs", args.runs, 1), ("--max-epochs", args.max_epochs, 1),
                             ("--checkpoint-every", args.checkpoint_every, 0),
                             ("--dry-run", args.dry_run, 1), ("--profile", args.profile, 1)):
        if value is not None and value < low:
            raise UsageError(f"{flag} must be at least {low}, got {value}")
    if args.seed is not None and not 0 <= args.seed < SEED_LIMIT:
        raise UsageError(f"--seed must be in [0, 2**32), got {args.seed}")
    if args.budget is not None and not (args.budget > 0 and args.budget != float("inf")):
        raise UsageError(f"--budget must be a finite number > 0, got {args.budget}")
    if args.resume and args.overwrite:
        raise UsageError("--resume continues the runs in --output, --overwrite replaces them: "
                         "give one")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA GPU is available")
    workload_cls = load_workload(args.name)
    missing = workload_cls.missing_modules()
    if missing:
        raise UsageError(f"{args.name} needs {', '.join(missing)}: pip install "
                         f"'mlperf-fast[{workload_cls.extra or 'all'}]'")
    config = args.config or workload_cls.default_config(args.data_dir)
    configs = workload_cls.configs()
    if config not in configs:
        raise UsageError(f"{args.name} has no configuration {config!r} "
                         f"(known: {', '.join(sorted(configs))})")
    from mlperf_fast.harness.overrides import OverrideError, apply_overrides

    try:
        chosen, _ = apply_overrides(configs[config], args.overrides)
    except OverrideError as e:
        raise UsageError(str(e)) from None
    unit = chosen.schedule.unit
    if args.max_epochs is not None:
        if unit != "epoch":
            raise UsageError(f"--max-epochs: {args.name} counts {unit}s, not epochs; use --budget")
        if args.budget is not None:
            raise UsageError("--max-epochs and --budget name the same budget: give one")
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        raise UsageError(f"--data-dir {args.data_dir}: no such directory")
    try:
        workload_cls.check_data(chosen, args.data_dir)
    except DataError as e:
        where = f"--data-dir {args.data_dir}: " if args.data_dir else f"--config {config}: "
        raise UsageError(f"{where}{e}") from e
    _check_output(args)
    return workload_cls, config


def _check_output(args: argparse.Namespace) -> None:
    """The output folder: resumable when --resume, new (or --overwrite) otherwise, writable."""
    if args.resume:
        if args.output is None or not os.path.isdir(args.output):
            raise UsageError("--resume needs --output naming the folder of the runs to continue")
        from mlperf_fast.harness.loop import check_resumable

        problem = check_resumable(args.output)
        if problem:
            raise UsageError(f"--resume: {problem}")
        return
    if args.output is None:
        return
    if int(os.environ.get("RANK", "0")) != 0:
        # Under torchrun the ranks start together: rank 0 may already have begun writing (or
        # probing) the folder, so it alone judges it; its refusal stops the others.
        return
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise UsageError(f"--output {args.output} is a file, not a folder")
    if os.path.isdir(args.output) and os.listdir(args.output) and not args.overwrite:
        raise UsageError(f"--output {args.output} already holds a run: --resume to continue it, "
                         "--overwrite to replace it, or name another folder")
    _probe_writable(args.output)


def _probe_writable(folder: str) -> None:
    """Create ``folder`` (and a file in it) to see that it can be written; leave nothing new."""
    import tempfile

    existed = os.path.isdir(folder)
    made: list[str] = []
    try:
        path = os.path.abspath(folder)
        missing = []
        while not os.path.exists(path):
            missing.append(path)
            path = os.path.dirname(path)
        for d in reversed(missing):
            os.mkdir(d)
            made.append(d)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise UsageError(f"--output {folder}: not writable ({e.strerror or e})") from None
    finally:
        if not existed:
            for d in reversed(made):
                try:
                    os.rmdir(d)
                except OSError:
                    pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if ("-h" in argv or "--help" in argv) and any(a in REGISTRY for a in argv):
            name = next(a for a in argv if a in REGISTRY)
            print(_benchmark_help(name))
            return 0
        args = _parser().parse_args(argv)
        if args.list:
            _print_list()
            return 0
        workload_cls, config = _validate(args)
    except UsageError as e:
        print(f"mlperf_fast.train: error: {e}", file=sys.stderr)
        return EXIT_USAGE

    from mlperf_fast.harness import distributed
    from mlperf_fast.harness.checkpoint import CheckpointError
    from mlperf_fast.harness.loop import RunOptions, Submission, run_workload

    rank, _, _ = distributed.setup(args.device)
    output = args.output or os.path.join(
        "runs", f"{args.name}-{config}-{time.strftime('%Y%m%d-%H%M%S')}")
    output = distributed.broadcast_object(output)
    if rank == 0 and args.overwrite and os.path.isdir(output):
        shutil.rmtree(output)
    created = not os.path.exists(output)
    options = RunOptions(
        config=config, output_dir=output, seed=args.seed, runs=args.runs,
        data_dir=args.data_dir,
        budget=args.budget if args.max_epochs is None else float(args.max_epochs),
        resume=args.resume, overrides=list(args.overrides),
        device=args.device, checkpoint_every=args.checkpoint_every, echo_log=args.echo_mllog,
        progress=not args.quiet, dry_run_steps=args.dry_run, profile_steps=args.profile,
        submission=Submission(org=args.submitter, platform=args.platform, status=args.status),
    )
    try:
        summary = run_workload(workload_cls, options)
    except (DataError, CheckpointError, OSError) as e:  # found while loading or resuming
        if rank == 0 and created:
            shutil.rmtree(output, ignore_errors=True)
        print(f"mlperf_fast.train: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        distributed.teardown()
    if summary is not None:
        with open(os.path.join(output, "summary.md")) as f:
            print(f.read(), end="")
        for i, run in enumerate(summary["runs"]):
            for line in run["compliance"].get("explanation", []):
                print(f"run {i}, compliance: {line}")
            if run.get("rcp", {}).get("warning"):
                print(f"run {i}: warning: {run['rcp']['warning']}")
        print(f"Reports in {output}")
    return 0


def _print_list() -> None:
    if not REGISTRY:
        print("No benchmarks are registered yet.")
        return
    width = max(map(len, REGISTRY))
    for name, entry in sorted(REGISTRY.items()):
        print(f"{name:<{width}}  {entry.description}")


if __name__ == "__main__":
    sys.exit(main())
