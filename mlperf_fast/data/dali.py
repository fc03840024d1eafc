"""NVIDIA DALI, when it is installed (``pip install mlperf-fast[dali]``)."""
from __future__ import annotations

import importlib.util


def dali_available() -> bool:
    """Whether nvidia.dali can be imported (the pipelines run only on CUDA devices)."""
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except ModuleNotFoundError:  # no "nvidia" namespace at all
        return False
