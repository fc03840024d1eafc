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

from mlperf_fast.ops import _checks, _transducer
from mlperf_fast.ops._library import custom_op, host_checks_enabled, register_op

DTYPES = _checks.FLOAT_DTYPES
packed_layout = _transducer.packed_layout
_index = _transducer.packed_index


def _tables(f_lengths, target_lengths, t_max, u1, pack):
    t_lim = f_lengths.to(torch.int64)
    u_lim = target_lengths.to(torch.int64) + 1
    if pack:
        _, row_base = packed_layout(f_lengths, target_lengths)
        return row_base, u_lim, t_lim, u_lim
    bsz = f_lengths.shape[0]
    row_base = torch.arange(bsz, device=f_lengths.device, dtype=torch.int64) * (t_max * u1)
    return row_base, torch.full_like(row_base, u1), t_lim, u_lim


def _joint_forward(f, g, f_lengths, target_lengths, pack_output, packed_rows):
    from mlperf_fast.kernels import transducer_joint as kj

    bsz, t_max, hid = f.shape
    u1 = g.shape[1]
    tables = _tables(f_lengths, target_lengths, t_max, u1, pack_output)
    out = f.new_empty((packed_rows, hid)) if pack_output else f.new_zeros((bsz, t_max, u1, hid))
    kj.joint_forward(f, g, out, tables, t_max, u1)
    return out


def _joint_backward(grad, z, f, g, f_lengths, target_lengths, pack_output):
    from mlperf_fast.kernels import transducer_joint as kj

    tables = _tables(f_lengths, target_lengths, f.shape[1], g.shape[1], pack_output)
    df = grad.new_empty(f.shape)
    dg = grad.new_empty(g.shape)
    kj.joint_backward(grad.contiguous(), z, df, dg, tables, f.shape[1], g.shape[1], 1.0)
    return df, dg


def _setup_context(ctx, inputs, output):
    f, g, f_lengths, target_lengths, pack_output, _ = inputs
    ctx.save_for_backward(output, f, g, f_lengths, target_lengths)
    ctx.pack = pack_output


def _backward(ctx, grad):
    z, f, g, f_lengths, target_lengths = ctx.saved_tensors
    df, dg = transducer_joint_triton_backward(grad, z, f, g, f_lengths, target_lengths, ctx.pack)
    return df, dg, None, None, None, None


transducer_joint_triton_backward = custom_op(
    "transducer_joint_triton_backward",
    "(Tensor grad, Tensor z, Tensor f, Tensor g, Tensor f_lengths, Tensor target_lengths, "
    "bool pack_output) -> (Tensor, Tensor)", _joint_backward)
transducer_joint_triton = custom_op(
    "transducer_joint_triton",
    "(Tensor f, Tensor g, Tensor f_lengths, Tensor target_lengths, bool pack_output, "
    "int packed_rows) -> Tensor", _joint_forward, backward=_backward,
    setup_context=_setup_context)


def transducer_joint_torch(f, g, f_lengths, target_lengths, pack_output, packed_rows):
    """relu(f + g) on the valid lattice nodes, packed or dense (zeros outside the lengths).
    Half-precision inputs are widened first: the sum is the same (one rounding either way) and
    the gradients of f and g, sums over up to U and T nodes, accumulate in float32 and are
    rounded once, as the kernel's are."""
    dtype = f.dtype
    acc = torch.promote_types(dtype, torch.float32)
    f, g = f.to(acc), g.to(acc)
    if pack_output:
        b, t, u = _index(f_lengths, target_lengths)
        return F.relu(f[b, t] + g[b, u]).to(dtype)
    tt = torch.arange(f.shape[1], device=f.device)[None, :, None]
    uu = torch.arange(g.shape[1], device=f.device)[None, None, :]
    valid = (tt < f_lengths[:, None, None]) & (uu <= target_lengths[:, None, None])
    return (F.relu(f[:, :, None] + g[:, None]) * valid[..., None]).to(dtype)


def _float64_torch(device_type: str, size: int):
    return ("triton", "torch") if device_type == "cuda" else ("torch",)


TRANSDUCER_JOINT = register_op("transducer_joint", triton=transducer_joint_triton,
                               torch_fn=transducer_joint_torch, order=_float64_torch)


def check_projection(weight: object, bias: object, f: torch.Tensor) -> None:
    """weight (V, H) and bias (V,) or None of the joint's output layer: f's dtype and device."""
    hid = f.shape[-1]
    _checks.float_tensor(weight, "weight")
    if weight.dim() != 2 or weight.shape[1] != hid:
        raise _checks.ArgumentValueError(f"weight must be (V, {hid}), got {tuple(weight.shape)}")
    _checks.same_dtype(weight, "weight", f, "f")
    _checks.same_device(weight, "weight", f, "f")
    if bias is not None:
        _checks.float_tensor(bias, "bias")
        if bias.shape != weight.shape[:1]:
            raise _checks.ArgumentValueError(f"bias must be ({weight.shape[0]},) to match weight "
                                             f"{tuple(weight.shape)}, got {tuple(bias.shape)}")
        _checks.same_dtype(bias, "bias", f, "f")
        _checks.same_device(bias, "bias", f, "f")


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
    for name, t in (("f", f), ("g", g)):
        _checks.float_tensor(t, name)
        if t.dim() != 3:
            raise _checks.ArgumentValueError(f"{name} must be a 3-D tensor, got shape "
                                             f"{tuple(t.shape)}")
    _checks.same_dtype(g, "g", f, "f")
    _checks.same_device(g, "g", f, "f")
    if g.shape[0] != f.shape[0] or g.shape[2] != f.shape[2]:
        raise _checks.ArgumentValueError(f"f {tuple(f.shape)} and g {tuple(g.shape)} do not "
                                         "match: (B, T, H) and (B, U+1, H)")
    if weight is not None:
        check_projection(weight, bias, f)
    elif bias is not None:
        raise _checks.ArgumentValueError("bias needs a weight")
    _checks.choice(activation, "activation", ("relu",))
    dropout = _checks.real(dropout, "dropout", lo=0.0, hi=1.0, hi_open=True)
    bsz, t_max, _ = f.shape
    u1 = g.shape[1]
    dummy = torch.zeros(bsz, u1 - 1, dtype=torch.int32, device=f.device)
    # The loss's length checks, with placeholder labels (0) and classes (2, blank 1) that pass.
    _transducer.check_targets(bsz, t_max, u1, 2, f.device, dummy, f_lengths, target_lengths, 1,
                              -1.0, "none", lengths_name="f_lengths")
    offsets, _ = packed_layout(f_lengths, target_lengths)
    if pack_output:
        if packed_rows is None:
            packed_rows = int(offsets[-1]) if bsz else 0
        else:
            packed_rows = _checks.integer(packed_rows, "packed_rows", lo=0)
            if host_checks_enabled(offsets):
                # The Triton kernel writes every valid row: a wrong count overruns its output.
                total = int(offsets[-1]) if bsz else 0
                if packed_rows != total:
                    raise _checks.ArgumentValueError(
                        f"packed_rows = {packed_rows} but the lengths make {total} rows")
    else:
        packed_rows = 0
    if backend == "auto" and f.dtype == torch.float64:
        backend = "torch"
    chosen = TRANSDUCER_JOINT.choose(f.device, backend)
    if chosen == "triton":
        f, g = f.contiguous(), g.contiguous()
    z = TRANSDUCER_JOINT.kernel(chosen)(f, g, f_lengths, target_lengths, bool(pack_output),
                                         packed_rows)
    if dropout > 0:
        z = F.dropout(z, dropout, training=True)
    if weight is not None:
        z = F.linear(z, weight, bias)
    return z, offsets
