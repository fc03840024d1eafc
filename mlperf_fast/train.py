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


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m mlperf_fast.train",
        description="Train an MLPerf benchmark to its quality target, with MLPerf-compliant logs, "
        "time-to-train and a report.",
    )
    p.add_argument("name", nargs="?", help="the benchmark (see --list)")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.add_argument("--data-dir", help="the real data set (default: the embedded one)")
    p.add_argument("--config", help="a named configuration (default: 'embedded' without "
                   "--data-dir, 'closed' with it)")
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
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when there is a GPU")
    p.add_argument("--checkpoint-every", type=int, default=1, metavar="BLOCKS",
                   help="blocks between checkpoints (0: none)")
    p.add_argument("--quiet", action="store_true", help="no MLPerf log lines on stdout")
    return p


def _validate(args: argparse.Namespace) -> tuple[type[Workload], str]:
    if args.name is None:
        raise UsageError("name a benchmark (see --list)")
    if args.name not in REGISTRY:
        known = ", ".join(sorted(REGISTRY)) or "none yet"
        raise UsageError(f"unknown benchmark {args.name!r} (known: {known})")
    for flag, value, low in (("--runs", args.runs, 1), ("--max-epochs", args.max_epochs, 1),
                             ("--checkpoint-every", args.checkpoint_every, 0)):
        if value is not None and value < low:
            raise UsageError(f"{flag} must be at least {low}, got {value}")
    if args.budget is not None and not (args.budget > 0 and args.budget != float("inf")):
        raise UsageError(f"--budget must be a finite number > 0, got {args.budget}")
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
    unit = configs[config].schedule.unit
    if args.max_epochs is not None:
        if unit != "epoch":
            raise UsageError(f"--max-epochs: {args.name} counts {unit}s, not epochs; use --budget")
        if args.budget is not None:
            raise UsageError("--max-epochs and --budget name the same budget: give one")
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        raise UsageError(f"--data-dir {args.data_dir}: no such directory")
    try:
        workload_cls.check_data(configs[config], args.data_dir)
    except DataError as e:
        raise UsageError(f"--data-dir {args.data_dir}: {e}") from e
    if args.resume and (args.output is None or not os.path.isdir(args.output)):
        raise UsageError("--resume needs --output naming the folder of the runs to continue")
    return workload_cls, config


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        if args.list:
            _print_list()
            return 0
        workload_cls, config = _validate(args)
    except UsageError as e:
        print(f"mlperf_fast.train: error: {e}", file=sys.stderr)
        return EXIT_USAGE

    from mlperf_fast.harness import distributed
    from mlperf_fast.harness.loop import RunOptions, run_workload

    rank, _, _ = distributed.setup(args.device)
    output = args.output or os.path.join(
        "runs", f"{args.name}-{config}-{time.strftime('%Y%m%d-%H%M%S')}")
    output = distributed.broadcast_object(output)
    created = not os.path.exists(output)
    options = RunOptions(
        config=config, output_dir=output, seed=args.seed, runs=args.runs,
        data_dir=args.data_dir,
        budget=args.budget if args.max_epochs is None else float(args.max_epochs),
        resume=args.resume,
        device=args.device, checkpoint_every=args.checkpoint_every, echo_log=not args.quiet,
    )
    try:
        summary = run_workload(workload_cls, options)
    except DataError as e:  # found while loading, after the up-front check
        if rank == 0 and created:
            shutil.rmtree(output, ignore_errors=True)
        print(f"mlperf_fast.train: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        distributed.teardown()
    if summary is not None:
        with open(os.path.join(output, "summary.md")) as f:
            print(f.read(), end="")
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
