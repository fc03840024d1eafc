"""How an op of mlperf_fast is defined: its kernels per backend in one table, and the torch.library
ops behind them.

Backends:
  native  the compiled kernel of mlperf_fast._C for the tensors' device (C++ on CPU, CUDA on GPU);
          its schema is in csrc/registration.cpp and each kernel registers itself for its
          dispatch key beside its code
  triton  the Triton kernel of mlperf_fast.kernels (GPU; on CPU only with TRITON_INTERPRET=1),
          launched from a ``torch.library.custom_op`` named ``mlperf_fast::<op>_triton``
  torch   the pure-PyTorch implementation, also the reference the kernels are tested against
          (plain PyTorch, or ``mlperf_fast::<op>_torch`` where its backward is hand-written)

Every public op is one :class:`Op` of :data:`OPS`, made by :func:`register_op`: its kernels and
the order in which ``backend="auto"`` (the default of every op) tries them for a device type and
a problem size, as measured in benchmarks/results/. ``MLPERF_FAST_BACKEND`` overrides the default
for every op. A native kernel is skipped by ``auto`` (with one warning) when ``_C`` holds no code
for the GPU's architecture. Fake (meta) implementations are all in ``_fakes.py``; autograd is
registered with ``torch.library.register_autograd`` beside each op's forward. No schema carries a
backend argument: each backend is its own op.
"""
from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch

BACKENDS = ("auto", "native", "triton", "torch")
KERNEL_BACKENDS = BACKENDS[1:]


@lru_cache(maxsize=None)
def load_extension() -> bool:
    """Import mlperf_fast._C (which registers torch.ops.mlperf_fast); False if it is missing."""
    try:
        from mlperf_fast import _C  # noqa: F401
    except ImportError as e:
        warnings.warn(
            f"mlperf_fast._C could not be loaded ({e}); every op falls back to its Triton or "
            "PyTorch implementation. Reinstall with the README's install command to build it.",
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


def _native_kernels() -> dict[str, frozenset[str]]:
    """The device types for which _C registered a kernel of each of its ops. Read once, when the
    extension loads (it registers every kernel at import), so that choosing a backend is a dict
    lookup that torch.compile can trace."""
    if not load_extension():
        return {}
    table = {}
    for qualname in torch._C._dispatch_get_all_op_names():
        if not qualname.startswith("mlperf_fast::"):
            continue
        kinds = frozenset(
            dev for dev, key in (("cpu", "CPU"), ("cuda", "CUDA"))
            if torch._C._dispatch_has_kernel_for_dispatch_key(qualname, key))
        table[qualname.split("::", 1)[1]] = kinds
    return table


NATIVE_KERNELS = _native_kernels()


def _arch_code(arch: str) -> int:
    """'sm_90', 'compute_90', '90', '900' or '9.0' as 900."""
    digits = arch.split("_")[-1].replace(".", "")
    code = int("".join(c for c in digits if c.isdigit()))
    return code * 10 if code < 100 else code


def cuda_archs() -> tuple[list[int], bool]:
    """(the GPU archs _C holds machine code for, as 900 for sm_90; whether it also holds PTX of
    the newest, which the driver compiles for any newer GPU)."""
    info = build_info()
    archs = [_arch_code(a) for a in info.get("arch", "").split(",") if a.strip()]
    return archs, info.get("ptx") == "1"


def arch_supported(capability: tuple[int, int], archs: Sequence[int], ptx: bool) -> bool:
    """Whether code built for ``archs`` runs on a GPU of ``capability``: machine code of the same
    major version and a minor version not above the GPU's, or PTX of an arch not above it."""
    cap = capability[0] * 100 + capability[1] * 10
    if any(a // 100 == cap // 100 and a <= cap for a in archs):
        return True
    return ptx and bool(archs) and max(archs) <= cap


_cuda_native_ok: dict[int, bool] = {}


def _native_runs_on(device: torch.device) -> bool:
    """False (and one warning) when _C has CUDA kernels, but none for this GPU's architecture."""
    if device.type != "cuda":
        return True
    index = device.index if device.index is not None else torch.cuda.current_device()
    ok = _cuda_native_ok.get(index)
    if ok is None:
        if torch.compiler.is_compiling():
            return True  # decided by the first eager call; a traced graph cannot ask the driver
        archs, ptx = cuda_archs()
        cap = torch.cuda.get_device_capability(index)
        ok = not archs or arch_supported(cap, archs, ptx)
        if not ok:
            warnings.warn(
                f"mlperf_fast._C was built for {', '.join(f'sm_{a // 10}' for a in archs)}"
                f"{' + PTX' if ptx else ''}, which cannot run on this GPU (sm_{cap[0]}{cap[1]}): "
                "the ops use their Triton or PyTorch kernels instead. Rebuild with "
                "TORCH_CUDA_ARCH_LIST naming this GPU's architecture to use the native ones.",
                RuntimeWarning, stacklevel=4)
        _cuda_native_ok[index] = ok
    return ok


def has_native(op: str, device: torch.device) -> bool:
    """Whether _C holds a kernel of ``mlperf_fast::op`` that runs on ``device``."""
    return device.type in NATIVE_KERNELS.get(op, ()) and _native_runs_on(device)


def triton_usable(device: torch.device) -> bool:
    if _TRITON is None:
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


_TRITON = importlib.util.find_spec("triton")


def _default_order(device_type: str, size: int) -> Sequence[str]:
    return ("native", "triton", "torch") if device_type == "cuda" else ("native", "torch")


@dataclass
class Op:
    """One public op: its kernel for each backend (callables taking the same arguments) and the
    order in which ``auto`` tries them."""

    name: str
    native: str | None = None           # the op's name in torch.ops.mlperf_fast (C++ schema)
    triton: Callable[..., Any] | None = None
    torch: Callable[..., Any] | None = None
    # (device type, problem size) -> backends in the order auto tries them.
    order: Callable[[str, int], Sequence[str]] = field(default=_default_order)

    def available(self, backend: str, device: torch.device) -> bool:
        if backend == "native":
            return self.native is not None and has_native(self.native, device)
        if backend == "triton":
            return self.triton is not None and triton_usable(device)
        return self.torch is not None

    def choose(self, device: torch.device, requested: str = "auto", size: int = 0) -> str:
        """The backend that will run the op on ``device``; ValueError if it cannot run there."""
        if requested == "auto":
            requested = os.environ.get("MLPERF_FAST_BACKEND", "auto")
        if requested not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {requested!r}")
        if requested == "auto":
            for backend in self.order(device.type, size):
                if self.available(backend, device):
                    return backend
            return "torch"
        if self.available(requested, device):
            return requested
        if requested == "native":
            if self.native is None:
                raise ValueError(f"backend 'native': {self.name} has no C++/CUDA kernel; use "
                                 f"{self._others('native')}")
            raise ValueError(f"backend 'native': mlperf_fast._C has no {device.type} kernel for "
                             f"{self.name} that runs on {device} (built backends: "
                             f"{build_info().get('backends')})")
        if requested == "triton" and self.triton is None:
            raise ValueError(f"backend 'triton': {self.name} has no Triton kernel; use "
                             f"{self._others('triton')}")
        if requested == "triton":
            raise ValueError("backend 'triton' needs the triton package and a CUDA device "
                             f"(or TRITON_INTERPRET=1 for CPU tensors); got a {device.type} tensor")
        raise ValueError(f"backend 'torch': {self.name} has no PyTorch implementation")

    def _others(self, but: str) -> str:
        have = [b for b in KERNEL_BACKENDS if b != but and (
            getattr(self, b) is not None)]
        return " or ".join(repr(b) for b in have)

    def kernel(self, backend: str) -> Callable[..., Any]:
        if backend == "native":
            return getattr(torch.ops.mlperf_fast, self.native)
        return getattr(self, backend)

    def __call__(self, device: torch.device, requested: str, *args: Any, size: int = 0) -> Any:
        """Run the op on the backend ``choose`` picks."""
        return self.kernel(self.choose(device, requested, size))(*args)


OPS: dict[str, Op] = {}


def register_op(name: str, *, native: str | None = None, triton: Callable | None = None,
                torch_fn: Callable | None = None,
                order: Callable[[str, int], Sequence[str]] | None = None) -> Op:
    """Enter an op into :data:`OPS`. ``native`` names its C++ schema; ``triton`` and ``torch_fn``
    are its Triton and PyTorch kernels (each a torch.library op or plain PyTorch)."""
    if name in OPS:
        raise ValueError(f"op {name!r} is already registered")
    op = Op(name, native, triton, torch_fn, order or _default_order)
    OPS[name] = op
    return op


def custom_op(name: str, schema: str, fn: Callable, *, mutates_args: Sequence[str] = (),
              backward: Callable | None = None,
              setup_context: Callable | None = None) -> Callable:
    """``mlperf_fast::<name>`` as a torch.library custom op of ``schema`` run by ``fn`` (its fake
    is registered in _fakes.py), with autograd when ``backward`` is given."""
    op = torch.library.custom_op(f"mlperf_fast::{name}", fn, mutates_args=tuple(mutates_args),
                                 schema=schema)
    if backward is not None:
        op.register_autograd(backward, setup_context=setup_context)
    return op


def host_checks_enabled(*tensors: torch.Tensor | None) -> bool:
    """Whether value checks that read tensors on the host may run: not while torch.compile
    traces (the values are not known), not under CUDA graph capture (a sync would break it),
    not on fake or meta tensors."""
    if torch.compiler.is_compiling():
        return False
    for t in tensors:
        if t is None:
            continue
        if t.device.type == "meta":
            return False
        if t.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            return False
    from torch._subclasses.fake_tensor import is_fake

    return not any(t is not None and is_fake(t) for t in tensors)


def choose_backend(op: str, device: torch.device, requested: str = "auto", size: int = 0) -> str:
    """``OPS[op].choose(device, requested, size)``."""
    return OPS[op].choose(device, requested, size)
