"""Argument checks shared by the ops' Python fronts: run before any kernel is launched, and name
the argument that is wrong."""
from __future__ import annotations

from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def tensor_list(value: object, name: str) -> list[torch.Tensor]:
    """A list of dense tensors on one device."""
    if isinstance(value, torch.Tensor) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a list or tuple of tensors, got {type(value).__name__}")
    tensors = list(value)
    for i, t in enumerate(tensors):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}[{i}] must be a tensor, got {type(t).__name__}")
        if t.layout != torch.strided:
            raise ValueError(f"{name}[{i}] is a {t.layout} tensor; only dense tensors are supported")
        if t.device != tensors[0].device:
            raise ValueError(
                f"{name}[{i}] is on {t.device} but {name}[0] is on {tensors[0].device}; "
                "all tensors must be on one device"
            )
    return tensors


def float_dtypes(tensors: Sequence[torch.Tensor], name: str) -> None:
    for i, t in enumerate(tensors):
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(
                f"{name}[{i}] has dtype {t.dtype}; expected float32, float64, float16 or bfloat16"
            )
