"""A benchmark file (benchmarks/ops/bench_<op>.py) loaded as a module, for the scripts that
profile an op on the benchmark's own shapes and inputs."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def bench_module(op: str) -> ModuleType:
    """benchmarks/ops/bench_<op>.py, imported."""
    path = Path(__file__).parent / "ops" / f"bench_{op}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{op}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
