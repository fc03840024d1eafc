"""Checkpoints of a run: written atomically, so a run killed while saving keeps the last one."""
from __future__ import annotations

import os
from typing import Any

import torch

FORMAT = 1


class CheckpointError(Exception):
    pass


def save(path: str, state: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, path)


def load(path: str) -> dict[str, Any]:
    try:
        # Our own file, holding Python and NumPy RNG states as well as tensors.
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a mlperf_fast checkpoint of format {FORMAT}")
    return state
