"""Argument checks shared by the ops' Python fronts: run before any kernel is launched, and name
the argument that is wrong.

Errors are ValueError (a bad value or shape) or TypeError (a bad type or dtype). Where the peer
library (torchvision, torchaudio) raises RuntimeError for the same input, the error is a
subclass of both (:class:`ArgumentValueError`, :class:`ArgumentTypeError`), so that code written
against either catches it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
INDEX_DTYPES = (torch.int32, torch.int64)
_FLOAT_NAMES = "float32, float64, float16 or bfloat16"


class ArgumentValueError(ValueError, RuntimeError):
    """A bad argument value or shape: a ValueError, and a RuntimeError as torch's own checks
    (and the peers' C++ kernels) raise."""


class ArgumentTypeError(TypeError, RuntimeError):
    """A bad argument type or dtype: a TypeError, and a RuntimeError as torch's checks raise."""


def tensor(value: object, name: str) -> torch.Tensor:
    """A dense tensor with storage (not a meta tensor, whose values an op cannot read)."""
    if not isinstance(value, torch.Tensor):
        raise ArgumentTypeError(f"{name} must be a tensor, got {type(value).__name__}")
    if value.layout != torch.strided:
        raise ArgumentValueError(f"{name} is a {value.layout} tensor; only dense tensors are "
                                 "supported")
    if value.device.type == "meta" and not torch.compiler.is_compiling():
        raise ArgumentValueError(f"{name} is on the meta device, which holds no values")
    return value


def optional_tensor(value: object, name: str) -> torch.Tensor | None:
    return None if value is None else tensor(value, name)


def float_tensor(value: object, name: str) -> torch.Tensor:
    t = tensor(value, name)
    if t.dtype not in FLOAT_DTYPES:
        raise ArgumentTypeError(f"{name} has dtype {t.dtype}; expected {_FLOAT_NAMES}")
    return t


def integer_tensor(value: object, name: str, dtypes: Sequence[torch.dtype] | None = None
                   ) -> torch.Tensor:
    """An integer tensor (any integer dtype, or one of ``dtypes``)."""
    t = tensor(value, name)
    if dtypes is not None:
        if t.dtype not in dtypes:
            want = " or ".join(str(d).replace("torch.", "") for d in dtypes)
            raise ArgumentTypeError(f"{name} has dtype {t.dtype}; expected {want}")
    elif t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise ArgumentTypeError(f"{name} has dtype {t.dtype}; expected an integer dtype")
    return t


def same_device(t: torch.Tensor | None, name: str, ref: torch.Tensor, ref_name: str) -> None:
    if t is not None and t.device != ref.device:
        raise ArgumentValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}")


def same_dtype(t: torch.Tensor | None, name: str, ref: torch.Tensor, ref_name: str) -> None:
    if t is not None and t.dtype != ref.dtype:
        raise ArgumentTypeError(f"{name} has dtype {t.dtype} but {ref_name} has {ref.dtype}; "
                                "they must match")


def shape(t: torch.Tensor, name: str, want: tuple[int, ...], text: str | None = None) -> None:
    if tuple(t.shape) != tuple(want):
        raise ArgumentValueError(f"{name} must have shape {text or tuple(want)}, got "
                                 f"{tuple(t.shape)}")


def real(value: object, name: str, lo: float | None = None, hi: float | None = None, *,
         lo_open: bool = False, hi_open: bool = False, allow_inf: bool = True) -> float:
    """A real number (not a bool, not NaN) in [lo, hi] (or open ends), as a float."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype.is_complex:
        raise ArgumentTypeError(f"{name} must be a Python float, got a tensor")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentTypeError(f"{name} must be a float, got {type(value).__name__}")
    v = float(value)
    if math.isnan(v):
        raise ArgumentValueError(f"{name} must not be NaN")
    if not allow_inf and math.isinf(v):
        raise ArgumentValueError(f"{name} must be finite, got {v}")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ArgumentValueError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {v}")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise ArgumentValueError(f"{name} must be {'<' if hi_open else '<='} {hi}, got {v}")
    return v


def integer(value: object, name: str, lo: int | None = None, hi: int | None = None) -> int:
    """A Python int (or integral 0-dim integer tensor is refused: a host value is wanted) in
    [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"{name} must be an int, got {type(value).__name__}")
    if lo is not None and value < lo:
        raise ArgumentValueError(f"{name} must be >= {lo}, got {value}")
    if hi is not None and value > hi:
        raise ArgumentValueError(f"{name} must be <= {hi}, got {value}")
    return value


def choice(value: object, name: str, options: Sequence[str]) -> str:
    if value not in options:
        raise ArgumentValueError(f"{name} must be one of {tuple(options)}, got {value!r}")
    return value


def tensor_list(value: object, name: str) -> list[torch.Tensor]:
    """A list of dense tensors on one device."""
    if isinstance(value, torch.Tensor) or not isinstance(value, Sequence):
        raise ArgumentTypeError(f"{name} must be a list or tuple of tensors, got "
                                f"{type(value).__name__}")
    tensors = list(value)
    for i, t in enumerate(tensors):
        tensor(t, f"{name}[{i}]")
        if t.device != tensors[0].device:
            raise ArgumentValueError(
                f"{name}[{i}] is on {t.device} but {name}[0] is on {tensors[0].device}; "
                "all tensors must be on one device"
            )
    return tensors


def float_dtypes(tensors: Sequence[torch.Tensor], name: str) -> None:
    for i, t in enumerate(tensors):
        if t.dtype not in FLOAT_DTYPES:
            raise ArgumentTypeError(f"{name}[{i}] has dtype {t.dtype}; expected {_FLOAT_NAMES}")


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a kernel accumulates ``dtype`` in: float64 for float64, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32
