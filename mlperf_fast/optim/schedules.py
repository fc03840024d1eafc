"""Learning-rate schedules of the MLPerf references, each with the reference's exact semantics
(off-by-ones included): a function of the step (and where the reference uses it, the epoch)
returning the factor or the rate, and nothing else, so that a schedule is tested as arithmetic
and any optimizer can follow it (``set_lr``).
"""
from __future__ import annotations

from collections.abc import Iterable


def set_lr(param_groups: Iterable[dict], lr: float) -> None:
    """Set ``lr`` in every param group (a float: the fused optimizers read it each step)."""
    for g in param_groups:
        g["lr"] = lr


def warmup_hold_exp_decay(step: int, epoch: int, steps_per_epoch: int, warmup_epochs: int,
                          hold_epochs: int, gamma: float) -> float:
    """RNN-T's factor (rnn_speech_recognition/pytorch common/optimizers.py ``lr_policy`` with
    exponential decay): ``(step + 1) / (warmup + 1)`` during the warmup's steps, 1 during the
    hold, then ``gamma ** (epoch - warmup_epochs - hold_epochs)``. ``step`` counts optimizer
    steps from 1 and ``epoch`` epochs from 1, as the reference's train loop passes them; the
    reference clamps the resulting rate from below at its ``min_lr``, which the caller applies.
    """
    warmup = warmup_epochs * steps_per_epoch
    hold = hold_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if step < warmup + hold:
        return 1.0
    return gamma ** (epoch - warmup_epochs - hold_epochs)
