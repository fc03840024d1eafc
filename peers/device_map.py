"""Run a peer's CUDA-only test on the CPU: the device "cuda" (or "cuda:N") that the test names is
read as "cpu" by torch's factory functions, ``Tensor.to``/``.cuda`` and ``Module.to``/``.cuda``, and
``torch.cuda.synchronize`` does nothing.

apex's optimizer and transducer tests create every tensor with ``device="cuda"`` although the
arithmetic they check (a fused optimizer against torch.optim, a loss against a PyTorch
reference) is the same on either device. Mapping the device lets the CPU run them, against
mlperf_fast's CPU kernels; on a GPU nothing is mapped and the same tests run as written.
Installed only inside the pytest process of the harness (``PEERS_DEVICE=cpu``).
"""
from __future__ import annotations

import functools

import torch

_FACTORIES = ("arange", "empty", "eye", "full", "linspace", "ones", "rand", "randint", "randn",
              "randperm", "tensor", "as_tensor", "zeros", "empty_like", "full_like", "ones_like",
              "rand_like", "randint_like", "randn_like", "zeros_like")


def _map(device):
    if isinstance(device, torch.device):
        return torch.device("cpu") if device.type == "cuda" else device
    if isinstance(device, str) and device.split(":")[0] == "cuda":
        return "cpu"
    if isinstance(device, int) and not isinstance(device, bool):
        return "cpu"  # a bare index means a CUDA device
    return device


def _with_device(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if "device" in kwargs:
            kwargs["device"] = _map(kwargs["device"])
        return fn(*args, **kwargs)
    return wrapper


def _to(orig):
    @functools.wraps(orig)
    def to(self, *args, **kwargs):
        args = tuple(_map(a) if isinstance(a, (str, torch.device)) else a for a in args)
        if "device" in kwargs:
            kwargs["device"] = _map(kwargs["device"])
        return orig(self, *args, **kwargs)
    return to


_installed = False


def install() -> None:
    """Patch torch in this process (once)."""
    global _installed
    if _installed:
        return
    _installed = True
    for name in _FACTORIES:
        setattr(torch, name, _with_device(getattr(torch, name)))
    torch.Tensor.to = _to(torch.Tensor.to)
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.to = _to(torch.nn.Module.to)
    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.cuda.synchronize = lambda *a, **k: None
