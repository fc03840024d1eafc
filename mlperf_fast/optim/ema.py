"""Exponential moving average of a model's weights, for evaluation.

The MLCommons references keep an EMA copy of the whole state_dict (parameters and buffers) and
update it after each optimizer step as ``ema = decay * ema + (1 - decay) * current``
(rnn_speech_recognition/pytorch common/helpers.py ``apply_ema``). Here the update is one
``torch._foreach_lerp_`` over all floating-point entries (``lerp(ema, cur, 1 - decay)`` is the same
arithmetic); integer buffers (batch-norm's ``num_batches_tracked``) are copied.
"""
from __future__ import annotations

import copy
from typing import Any

import torch


class EMA:
    """An EMA copy of ``model`` (a deep copy taken at construction, so it starts equal).

    ``update()`` after each applied optimizer step; ``module`` is the averaged model to evaluate.
    ``decay`` in [0, 1): 0 keeps the copy equal to the model.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if isinstance(decay, bool) or not isinstance(decay, (int, float)):
            raise TypeError(f"decay must be a number, got {type(decay).__name__}")
        if not 0.0 <= decay < 1.0:  # also False for NaN
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.decay = float(decay)
        self.model = model
        self.module = copy.deepcopy(model)
        self.module.requires_grad_(False)
        self._pairs()

    def _pairs(self) -> None:
        ema_sd, cur_sd = self.module.state_dict(), self.model.state_dict()
        if ema_sd.keys() != cur_sd.keys():
            raise ValueError("the EMA copy and the model have different state_dict keys")
        self._float_ema = [v for k, v in ema_sd.items() if v.is_floating_point()]
        self._float_cur = [cur_sd[k] for k, v in ema_sd.items() if v.is_floating_point()]
        self._other = [(v, cur_sd[k]) for k, v in ema_sd.items() if not v.is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        if self._float_ema:
            torch._foreach_lerp_(self._float_ema, self._float_cur, 1.0 - self.decay)
        for ema, cur in self._other:
            ema.copy_(cur)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or "module" not in state:
            raise ValueError("EMA state must be a dict with 'decay' and 'module' (an EMA's "
                             "state_dict())")
        if state.get("decay") != self.decay:
            raise ValueError(f"EMA state has decay {state.get('decay')}, this EMA {self.decay}")
        self.module.load_state_dict(state["module"])
        self._pairs()
