"""Transducer joint: relu(f + g), dropout, and optionally the output projection, dense or packed.

Packed output (as apex's TransducerJoint(pack_output=True)) holds only the valid pairs of each
utterance, t < T_b and u <= U_b, utterance after utterance: utterance b's (t, u) is row
``batch_offsets[b] - T_b * (U_b + 1) + t * (U_b + 1) + u``, where ``batch_offsets`` is the
inclusive cumulative sum of T_b * (U_b + 1). With padded batches this skips the padding's joint,
projection and loss entirely; :func:`mlperf_fast.ops.rnnt_loss_packed` takes the packed logits.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mlperf_fast.ops._library import choose_backend

DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def packed_layout(f_lengths: torch.Tensor, target_lengths: torch.Tensor):
    """(batch_offsets (B,) int64 inclusive, row_base (B,) int64 exclusive) of the packed rows."""
    sizes = f_lengths.to(torch.int64) * (target_lengths.to(torch.int64) + 1)
    offsets = torch.cumsum(sizes, 0)
    return offsets, offsets - sizes


def _tables(f_lengths, target_lengths, t_max, u1, pack):
    t_lim = f_lengths.to(torch.int64)
    u_lim = target_lengths.to(torch.int64) + 1
    if pack:
        _, row_base = packed_layout(f_lengths, target_lengths)
        return row_base, u_lim, t_lim, u_lim
    bsz = f_lengths.shape[0]
    row_base = torch.arange(bsz, device=f_lengths.device, dtype=torch.int64) * (t_max * u1)
    return row_base, torch.full_like(row_base, u1), t_lim, u_lim


def _index(f_lengths, target_lengths):
    """(b, t, u) of every packed row, in packed order (the torch path's gather)."""
    bs, ts, us = [], [], []
    for b, (tn, un) in enumerate(zip(f_lengths.tolist(), target_lengths.tolist())):
        t = torch.arange(tn).repeat_interleave(un + 1)
        u = torch.arange(un + 1).repeat(tn)
        bs.append(torch.full_like(t, b))
        ts.append(t)
        us.append(u)
    if not bs:
        e = torch.zeros(0, dtype=torch.int64)
        return e, e, e
    dev = f_lengths.device
    return torch.cat(bs).to(dev), torch.cat(ts).to(dev), torch.cat(us).to(dev)


class _JointAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, f, g, f_lengths, target_lengths, pack, rows):
        from mlperf_fast.kernels import transducer_joint as kj

        bsz, t_max, hid = f.shape
        u1 = g.shape[1]
        tables = _tables(f_lengths, target_lengths, t_max, u1, pack)
        out = f.new_empty((rows, hid)) if pack else f.new_zeros((bsz, t_max, u1, hid))
        kj.joint_forward(f, g, out, tables, t_max, u1)
        ctx.save_for_backward(out, *tables)
        ctx.shapes = (f.shape, g.shape)
        return out

    @staticmethod
    def backward(ctx, grad):
        from mlperf_fast.kernels import transducer_joint as kj

        z, *tables = ctx.saved_tensors
        f_shape, g_shape = ctx.shapes
        df = grad.new_empty(f_shape)
        dg = grad.new_empty(g_shape)
        kj.joint_backward(grad.contiguous(), z, df, dg, tables, f_shape[1], g_shape[1], 1.0)
        return df, dg, None, None, None, None


def transducer_joint(
    f: torch.Tensor,
    g: torch.Tensor,
    f_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    activation: str = "relu",
    dropout: float = 0.0,
    pack_output: bool = True,
    packed_rows: int | None = None,
    *,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The RNN-T joint ``Linear(dropout(relu(f[:, :, None] + g[:, None])))``.

    Args:
        f: (B, T, H) encoder side; g: (B, U+1, H) prediction side; same float dtype and device.
        f_lengths: (B,) int32/int64 in [1, T]; target_lengths: (B,) in [0, U] (g's valid rows
            are U_b + 1).
        weight: (V, H) output projection, or None to return the activations; bias: (V,) or None.
        activation: "relu".
        dropout: drop probability after the activation (pass 0 in evaluation).
        pack_output: packed rows (N, V or H) if True, else dense (B, T, U+1, V or H) with zeros
            outside each utterance's lengths.
        packed_rows: N, if known (saves reading the lengths back from the GPU).
        backend: "auto", "triton" or "torch".

    Returns:
        ``(out, batch_offsets)``: batch_offsets (B,) int64, the inclusive cumulative sum of
        T_b * (U_b + 1).
    """
    from mlperf_fast.ops.rnnt_loss import _check_targets

    for name, t in (("f", f), ("g", g)):
        if not isinstance(t, torch.Tensor) or t.dim() != 3:
            raise ValueError(f"{name} must be a 3-D tensor")
        if t.dtype not in DTYPES:
            raise TypeError(f"{name} has dtype {t.dtype}; expected a float dtype")
    if g.dtype != f.dtype or g.device != f.device:
        raise TypeError(f"g is {g.dtype} on {g.device} but f is {f.dtype} on {f.device}")
    if g.shape[0] != f.shape[0] or g.shape[2] != f.shape[2]:
        raise ValueError(f"f {tuple(f.shape)} and g {tuple(g.shape)} do not match")
    if weight is not None and (weight.dim() != 2 or weight.shape[1] != f.shape[2]):
        raise ValueError(f"weight must be (V, {f.shape[2]}), got {tuple(weight.shape)}")
    if activation != "relu":
        raise ValueError(f"activation must be 'relu', got {activation!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    bsz, t_max, _ = f.shape
    u1 = g.shape[1]
    dummy = torch.zeros(bsz, u1 - 1, dtype=torch.int32, device=f.device)
    # The loss's length checks, with placeholder labels (0) and classes (2, blank 1) that pass.
    _check_targets(bsz, t_max, u1, 2, f.device, dummy, f_lengths, target_lengths, 1, -1.0,
                   "none")
    offsets, _ = packed_layout(f_lengths, target_lengths)
    if pack_output and packed_rows is None:
        packed_rows = int(offsets[-1]) if bsz else 0
    if backend == "auto" and f.dtype == torch.float64:
        backend = "torch"
    chosen = choose_backend("transducer_joint", f.device, backend)
    if chosen == "native":
        raise ValueError("backend 'native': transducer_joint has Triton and torch kernels only")
    if chosen == "triton":
        z = _JointAct.apply(f.contiguous(), g.contiguous(), f_lengths, target_lengths,
                            pack_output, packed_rows or 0)
    elif pack_output:
        b, t, u = _index(f_lengths, target_lengths)
        z = F.relu(f[b, t] + g[b, u])
    else:
        tt = torch.arange(t_max, device=f.device)[None, :, None]
        uu = torch.arange(u1, device=f.device)[None, None, :]
        valid = (tt < f_lengths[:, None, None]) & (uu <= target_lengths[:, None, None])
        z = F.relu(f[:, :, None] + g[:, None]) * valid[..., None]
    if dropout > 0:
        z = F.dropout(z, dropout, training=True)
    if weight is not None:
        z = F.linear(z, weight, bias)
    return z, offsets
