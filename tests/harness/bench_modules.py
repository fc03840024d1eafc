"""A benchmark file as a module, for the tests that run its code on the CPU at tiny sizes
(benchmarks/ is not a package: its files are collected only when named)."""
from __future__ import annotations

import importlib.util
import os
from types import ModuleType

STEPS = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "steps")


def load_step_bench(name: str) -> ModuleType:
    """``benchmarks/steps/<name>.py``, imported under ``name``."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(STEPS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
