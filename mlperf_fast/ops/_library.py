"""Loading of the compiled extension and the choice of backend for each op.

Backends:
  native  the compiled kernel of mlperf_fast._C for the tensors' device (C++ on CPU, CUDA on GPU)
  triton  the Triton kernel of mlperf_fast.kernels (GPU; on CPU only with TRITON_INTERPRET=1)
  torch   the pure-PyTorch implementation, also the reference the kernels are tested against

``backend="auto"`` (the default of every op) takes native where it was built for the device, else
Triton on a GPU, else torch. ``MLPERF_FAST_BACKEND`` overrides the default for every op.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import warnings
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import torch

BACKENDS = ("auto", "native", "triton", "torch")


@lru_cache(maxsize=None)
def load_extension() -> bool:
    """Import mlperf_fast._C (which registers torch.ops.mlperf_fast); False if it is missing."""
    try:
        from mlperf_fast import _C  # noqa: F401
    except ImportError as e:
        warnings.warn(
            f"mlperf_fast._C could not be loaded ({e}); every op falls back to its PyTorch "
            "implementation. Reinstall with the README's install command to build it.",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    return True


def build_info() -> dict[str, str]:
    """What the extension was built with: {'backends': 'cpu,cuda', 'cuda': '13.0', 'arch': ...}."""
    if not load_extension():
        return {"backends": "none"}
    info = torch.ops.mlperf_fast.build_info()
    return dict(part.split("=", 1) for part in info.split(";"))


def has_native(op: str, device: torch.device) -> bool:
    """Whether _C holds a kernel of ``mlperf_fast::op`` for the device's type."""
    return _has_native(op, device.type)


@lru_cache(maxsize=None)
def _has_native(op: str, device_type: str) -> bool:
    # Cached: the dispatcher's lookup costs microseconds on every call of an op, and _C
    # registers its kernels once, when it is imported.
    if not load_extension():
        return False
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    if key is None:
        return False
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(f"mlperf_fast::{op}", key)
    except RuntimeError:  # no such schema in _C: the op has Triton and torch backends only
        return False


def triton_usable(device: torch.device) -> bool:
    if importlib.util.find_spec("triton") is None:
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def choose_backend(op: str, device: torch.device, requested: str = "auto") -> str:
    """The backend that will run ``op`` on ``device``; raises ValueError if it cannot."""
    if requested == "auto":
        requested = os.environ.get("MLPERF_FAST_BACKEND", "auto")
    if requested not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {requested!r}")
    if requested == "auto":
        if has_native(op, device):
            return "native"
        if device.type == "cuda" and triton_usable(device):
            return "triton"
        return "torch"
    if requested == "native" and not has_native(op, device):
        raise ValueError(
            f"backend 'native': mlperf_fast._C has no {device.type} kernel for {op} "
            f"(built backends: {build_info().get('backends')})"
        )
    if requested == "triton" and not triton_usable(device):
        raise ValueError(
            f"backend 'triton' needs the triton package and a CUDA device "
            f"(or TRITON_INTERPRET=1 for CPU tensors); got a {device.type} tensor"
        )
    return requested


def run_op(op: str, device: torch.device, requested: str, args: tuple, kernel_module: str,
           torch_fn: Callable[..., Any]) -> Any:
    """``op(*args)`` on the backend that ``choose_backend`` picks: the extension's
    ``torch.ops.mlperf_fast.<op>``, the function ``<op>`` of ``mlperf_fast.kernels.<kernel_module>``
    (imported only when chosen: Triton is optional), or ``torch_fn``. For ops whose three backends
    take the same arguments."""
    chosen = choose_backend(op, device, requested)
    if chosen == "native":
        return getattr(torch.ops.mlperf_fast, op)(*args)
    if chosen == "triton":
        module = importlib.import_module(f"mlperf_fast.kernels.{kernel_module}")
        return getattr(module, op)(*args)
    return torch_fn(*args)


def choose_triton_or_torch(op: str, device: torch.device, requested: str = "auto") -> str:
    """``choose_backend`` for ops that have a Triton kernel but no C++/CUDA one: "auto" takes
    Triton on a GPU, else torch; "native" raises ValueError."""
    if requested == "auto":
        requested = os.environ.get("MLPERF_FAST_BACKEND", "auto")
    if requested == "native":
        raise ValueError(f"backend 'native': {op} has no C++/CUDA kernel; use 'triton' or 'torch'")
    if requested == "auto":
        return "triton" if device.type == "cuda" and triton_usable(device) else "torch"
    return choose_backend(op, device, requested)
