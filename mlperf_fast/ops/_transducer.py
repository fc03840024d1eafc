"""What the transducer ops share (rnnt_loss, rnnt_loss_packed, transducer_joint,
transducer_joint_loss): the checks of lengths, targets and blank, and the packed lattice layout.
Kept apart so that none of those modules imports another."""
from __future__ import annotations

import torch

from mlperf_fast.ops import _checks
from mlperf_fast.ops._library import host_checks_enabled

LOGIT_DTYPES = _checks.FLOAT_DTYPES
INDEX_DTYPES = _checks.INDEX_DTYPES
REDUCTIONS = ("none", "mean", "sum")


def check_targets(bsz: int, t_max: int, u1: int, classes: int, device: torch.device,
                  targets, logit_lengths, target_lengths, blank, clamp, reduction,
                  check_values: bool = True, *, lengths_name: str = "logit_lengths") -> int:
    """Check the loss's targets, lengths, blank, clamp and reduction against logits of shape
    (bsz, t_max, u1, classes); return blank made non-negative.

    Value checks (lengths within the tensors, labels in range) read the lengths on the host; they
    are skipped while torch.compile traces and while a CUDA graph is captured."""
    for name, t, dims in (("targets", targets, 2), (lengths_name, logit_lengths, 1),
                          ("target_lengths", target_lengths, 1)):
        _checks.integer_tensor(t, name, INDEX_DTYPES)
        if t.dim() != dims:
            raise _checks.ArgumentValueError(f"{name} must have {dims} dimension(s), got shape "
                                             f"{tuple(t.shape)}")
        if t.device != device:
            raise _checks.ArgumentValueError(f"{name} is on {t.device} but the logits are on "
                                             f"{device}")
    if logit_lengths.shape[0] != bsz or target_lengths.shape[0] != bsz:
        raise _checks.ArgumentValueError(
            f"{lengths_name} and target_lengths must have {bsz} entries (the batch), got "
            f"{logit_lengths.shape[0]} and {target_lengths.shape[0]}")
    if targets.shape[0] != bsz or targets.shape[1] != u1 - 1:
        raise _checks.ArgumentValueError(
            f"targets must have shape (batch, U) = ({bsz}, {u1 - 1}) to match logits of "
            f"U+1 = {u1}, got {tuple(targets.shape)}")
    blank = check_blank(blank, classes)
    _checks.real(clamp, "clamp")
    if reduction not in REDUCTIONS:
        raise _checks.ArgumentValueError(f"reduction must be one of {REDUCTIONS}, got "
                                         f"{reduction!r}")
    if not check_values or bsz == 0 or not host_checks_enabled(logit_lengths, target_lengths,
                                                               targets):
        return blank
    t_lens = logit_lengths.tolist()
    u_lens = target_lengths.tolist()
    for b in range(bsz):
        if not 1 <= t_lens[b] <= t_max:
            raise _checks.ArgumentValueError(
                f"{lengths_name}[{b}] = {t_lens[b]} is outside [1, {t_max}] (the time dimension)")
        if not 0 <= u_lens[b] <= u1 - 1:
            raise _checks.ArgumentValueError(
                f"target_lengths[{b}] = {u_lens[b]} is outside [0, {u1 - 1}] (targets longer "
                "than the logits allow)")
    if targets.numel():
        used = torch.arange(u1 - 1, device=device)[None, :] < target_lengths[:, None]
        labels = targets[used]
        if labels.numel():
            lo, hi = int(labels.min()), int(labels.max())
            if lo < 0 or hi >= classes:
                raise _checks.ArgumentValueError(
                    f"targets hold label {lo if lo < 0 else hi}, outside [0, {classes}) classes")
            if bool((labels == blank).any()):
                raise _checks.ArgumentValueError(
                    f"targets hold the blank index {blank} within target_lengths")
    return blank


def check_blank(blank: object, classes: int) -> int:
    """An int in [-classes, classes), made non-negative."""
    blank = _checks.integer(blank, "blank")
    if not -classes <= blank < classes:
        raise _checks.ArgumentValueError(f"blank={blank} is out of range for {classes} classes")
    return blank % classes


def packed_layout(f_lengths: torch.Tensor, target_lengths: torch.Tensor):
    """(batch_offsets (B,) int64 inclusive, row_base (B,) int64 exclusive) of the packed rows:
    utterance b's lattice is T_b * (U_b + 1) rows after the previous utterance's."""
    sizes = f_lengths.to(torch.int64) * (target_lengths.to(torch.int64) + 1)
    offsets = torch.cumsum(sizes, 0)
    return offsets, offsets - sizes


def packed_index(f_lengths: torch.Tensor, target_lengths: torch.Tensor):
    """(b, t, u) of every packed row, in packed order (the torch paths' gather)."""
    bs, ts, us = [], [], []
    for b, (tn, un) in enumerate(zip(f_lengths.tolist(), target_lengths.tolist())):
        t = torch.arange(tn).repeat_interleave(un + 1)
        u = torch.arange(un + 1).repeat(tn)
        bs.append(torch.full_like(t, b))
        ts.append(t)
        us.append(u)
    if not bs:
        e = torch.zeros(0, dtype=torch.int64, device=f_lengths.device)
        return e, e, e
    dev = f_lengths.device
    return torch.cat(bs).to(dev), torch.cat(ts).to(dev), torch.cat(us).to(dev)
