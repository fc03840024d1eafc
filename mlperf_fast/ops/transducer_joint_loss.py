"""Transducer joint, output projection and RNN-T loss in one op, never holding the whole joint.

The usual training step materializes relu(f + g) as a (B, T, U+1, H) tensor, projects it to
(B, T, U+1, V) logits, and hands those to the loss, which keeps a gradient of the same size: at
B=32, T=200, U=81, H=512, V=1024 that is over 7 GiB. Here the batch is cut into groups of
utterances of bounded size. For each group the joint, the projection (one cuBLAS GEMM), the
loss statistics and recursions, and the gradient with respect to the logits (written over the
logits in place, then two GEMMs: into the joint activations and into the weight) are computed
together, and the group's buffers are reused by the next. Only gradients of the inputs survive
(f: (B, T, H), g: (B, U+1, H), weight, bias), so peak memory is one group's buffers, whatever
the batch. Each group is also cut to its own longest T and U, so padding costs nothing.

The gradients are computed in the forward when any input needs them (the loss needs the alpha
and beta of all of a group's lattice before any gradient, so there is nothing to gain from
recomputing them in a separate pass); the backward only scales them by the incoming gradient.
Dropout after the activation needs no stored mask: an element survives iff its output is > 0.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from mlperf_fast.ops import _checks, _transducer
from mlperf_fast.ops._library import custom_op, register_op, triton_usable
from mlperf_fast.ops.rnnt_loss import _nonempty, alpha_beta_torch, row_grad_torch, row_stats_torch
from mlperf_fast.ops.transducer_joint import check_projection

ACTIVATIONS = ("relu",)
FP32_GEMMS = ("auto", "tf32x3", "tf32x3_triton", "cublas")
# Bytes of logits per group: 288 MiB keeps the group's logits, activations and their gradient
# under ~0.7 GiB while each GEMM still has tens of thousands of rows (at the MLPerf shape, 4
# float32 or 8 bfloat16 utterances of 200 x 82 lattice nodes x 1024 classes per group).
GROUP_LOGIT_BYTES = 288 * 2**20


def _groups(t_lens: list[int], u_lens: list[int], budget_rows: int):
    """Consecutive utterances [b0, b1) whose padded lattice (n x max T x max U+1) fits the
    budget (at least one utterance per group)."""
    b0, bsz = 0, len(t_lens)
    while b0 < bsz:
        b1, tm, um = b0 + 1, t_lens[b0], u_lens[b0] + 1
        while b1 < bsz:
            tn, un = max(tm, t_lens[b1]), max(um, u_lens[b1] + 1)
            if (b1 + 1 - b0) * tn * un > budget_rows:
                break
            b1, tm, um = b1 + 1, tn, un
        yield b0, b1, tm, um
        b0 = b1


def _loss_group(logits, targets, t_len, u_len, blank, clamp, scale, backend, need_grad, out):
    """Costs of one group; when ``need_grad``, the gradient with respect to the logits goes to
    ``out``: the logits themselves, or float32 rows stacked [hi | lo | hi] for 3xTF32 GEMMs."""
    split = out is not logits
    if backend == "triton":
        from mlperf_fast.kernels import rnnt_loss as k

        targets = _nonempty(targets.contiguous())
        lse, lp_blank, lp_emit = k.row_stats(logits, targets, t_len, u_len, blank, True)
        alpha, beta, ll, _ = k.alpha_beta(lp_blank, lp_emit, t_len, u_len)
        if need_grad:
            k.row_grad(logits, out, targets, t_len, u_len, lse, lp_blank, lp_emit, alpha, beta,
                       ll, scale, blank, clamp, True, split=split)
        return -ll
    lse, lp_blank, lp_emit = row_stats_torch(logits, targets, t_len, u_len, blank, True)
    alpha, beta, ll, _ = alpha_beta_torch(lp_blank, lp_emit, t_len, u_len)
    if need_grad:
        grad = row_grad_torch(logits, targets, t_len, u_len, lse, lp_blank, lp_emit,
                                    alpha, beta, ll, scale, blank, clamp, True)
        grad = grad.reshape(-1, logits.shape[-1])
        out.copy_(stack_tf32(grad, HLH) if split else grad.view_as(out))
    return -ll


# Sign, exponent and the 10 mantissa bits that TF32 keeps (0xFFFFE000 as int32).
_TF32_HI_MASK = -8192
# Block of stack_tf32's output that holds the remainder: operands stacked HHL ([hi | hi | lo])
# and HLH ([hi | lo | hi]) along a shared K multiply as hi*hi + hi*lo + lo*hi.
HHL, HLH = 2, 1


def stack_tf32(x: torch.Tensor, lo_at: int) -> torch.Tensor:
    """float32 (R, C) ``x`` as (R, 3C), three blocks of C columns: TF32's part of ``x`` (the
    bits a TF32 GEMM reads unrounded), except block ``lo_at`` (HHL or HLH), the exact remainder
    ``x - hi``, below 2^-10 of ``|x|`` (TF32's rounding of it costs ~2^-21 of ``|x|``).

    For float32 ``a`` (M, K) and ``b`` (K, N), ``stack_tf32(a, HHL) @ stack_tf32(b.t(), HLH).t()``
    is one TF32 GEMM over K' = 3K summing a_hi b_hi + a_hi b_lo + a_lo b_hi: ``a @ b`` to float32
    accuracy (the dropped a_lo b_lo is below 2^-20 relative) on tensor cores, with the output
    written once. The same holds for a K that runs over rows (the weight's gradient,
    ``dl^T @ z``): stack_tf32(dl, HLH) and stack_tf32(z, HHL) viewed as (3R, C) pair up row by
    row as (hi, hi), (lo, hi), (hi, lo)."""
    if x.is_cuda and triton_usable(x.device):
        return _kernels().stack_tf32(x.contiguous(), lo_at)
    hi = (x.contiguous().view(torch.int32) & _TF32_HI_MASK).view(torch.float32)
    parts = [hi, hi, hi]
    parts[lo_at] = x - hi
    return torch.cat(parts, dim=1)


def _kernels():
    from mlperf_fast.kernels import transducer_joint_loss

    return transducer_joint_loss


@contextlib.contextmanager
def _tf32_matmuls():
    # set_float32_matmul_precision keeps torch's legacy and per-backend TF32 flags in step
    # (setting only one of them makes cuBLAS calls refuse to run); both are restored after.
    legacy, new = torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.fp32_precision
    torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(legacy)
        if torch.backends.cuda.matmul.fp32_precision != new:
            torch.backends.cuda.matmul.fp32_precision = new


def _mm_stacked(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None):
    """``a @ b (+ bias)`` of operands already stacked by :func:`stack_tf32`, as TF32 on a GPU
    (on a CPU the same GEMM in float32)."""
    with _tf32_matmuls() if a.is_cuda else contextlib.nullcontext():
        return torch.addmm(bias, a, b) if bias is not None else a @ b


def mm_tf32x3(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ b (+ bias)`` for float32 (M, K) and (K, N) to float32 accuracy in one TF32 GEMM of
    stacked operands (:func:`stack_tf32`)."""
    return _mm_stacked(stack_tf32(a, HHL), stack_tf32(b.t(), HLH).t(), bias)


def _grad_w(dl: torch.Tensor, z: torch.Tensor, mm) -> torch.Tensor:
    """``dl^T @ z`` for (M, V) and (M, H): the weight gradient, whose K is the lattice's rows
    while its output is only V x H (a few dozen GEMM tiles). K is cut into batches of a bmm
    so that the GPU fills, and their (V, H) partials summed."""
    rows = dl.shape[0]
    splits = min(16, rows // 4096)
    if splits < 2:
        return mm(dl.t(), z)
    main = rows // splits * splits
    out = mm(dl[:main].view(splits, main // splits, -1).transpose(1, 2),
             z[:main].view(splits, main // splits, -1)).sum(0)
    if main < rows:
        out += mm(dl[main:].t(), z[main:])
    return out


def _gemms(fp32_gemm: str):
    """(z @ w_t + bias, a @ b, dl^T @ z): float32 (or TF32 where torch allows it) cuBLAS calls
    with "cublas", of operands stacked by :func:`stack_tf32` with "tf32x3" (TF32 on a GPU), or
    Triton's 3xTF32 kernels with "tf32x3_triton"."""
    if fp32_gemm == "tf32x3":
        return _mm_stacked, _mm_stacked, lambda dl, z: _grad_w(dl, z, _mm_stacked)
    if fp32_gemm != "tf32x3_triton":
        def mm_bias(x, w_t, bias):
            return torch.addmm(bias, x, w_t) if bias is not None else x @ w_t
        return mm_bias, torch.matmul, lambda dl, z: _grad_w(dl, z, torch.matmul)
    from mlperf_fast.kernels.transducer_joint_loss import matmul

    def grad_w(dl, z):
        # The weight gradient's K is the rows: split it so that V x H tiles fill the GPU.
        return matmul(dl.t(), z, splits=max(1, dl.shape[0] // 4096))
    return (lambda x, w_t, bias: matmul(x, w_t, bias)), (lambda a, b: matmul(a, b)), grad_w


def _forward(f, g, weight, bias, targets, f_lengths, target_lengths, blank, clamp, reduction,
             dropout, needs, backend, group_bytes, fp32_gemm="cublas"):
    bsz, _, hid = f.shape
    classes = weight.shape[0]
    dev, dt = f.device, f.dtype
    acc = torch.float64 if dt == torch.float64 else torch.float32
    need_f, need_g, need_w, need_b = needs
    need_grad = any(needs)
    per_utt_w = need_grad and reduction == "none"
    costs = torch.empty(bsz, dtype=acc, device=dev)
    df = torch.zeros_like(f) if need_f else None
    dg = torch.zeros_like(g) if need_g else None
    dw = None
    if need_w:
        dw = torch.zeros((bsz if per_utt_w else 1, classes, hid), dtype=acc, device=dev)
    db = torch.zeros((bsz if per_utt_w else 1, classes), dtype=acc, device=dev) if need_b else None
    weight_scale = 1.0 / bsz if reduction == "mean" else 1.0
    t_list, u_list = f_lengths.tolist(), target_lengths.tolist()
    keep = 1.0 - dropout
    mm_bias, mm, mm_grad_w = _gemms(fp32_gemm)
    # With "tf32x3" the GEMMs' operands are stacked (stack_tf32): the weight once here, the
    # joint activations per group, the logits' gradient by the loss kernel as it writes it.
    # Stacked, a group's buffers take about 1.5x the unstacked ones, so groups are half as
    # large.
    stacked = fp32_gemm == "tf32x3"
    budget = max(1, group_bytes // (classes * f.element_size() * (2 if stacked else 1)))
    if stacked:
        w_fwd = stack_tf32(weight, HLH).t()  # (3H, V): rows W_hi^T, W_lo^T, W_hi^T
        w_bwd = stack_tf32(weight.t(), HHL).t()  # (3V, H): rows W_hi, W_hi, W_lo
    else:
        w_fwd, w_bwd = weight.t(), weight
    for b0, b1, tc, uc in _groups(t_list, u_list, budget):
        n = b1 - b0
        rows = n * tc * uc
        if backend == "triton":
            from mlperf_fast.kernels import transducer_joint as kj

            tables = kj.dense_tables(n, tc, uc, dev)
            z = kj.joint_forward(f[b0:b1], g[b0:b1], f.new_empty((n, tc, uc, hid)), tables, tc, uc)
        else:
            z = f[b0:b1, :tc, None, :] + g[b0:b1, None, :uc, :]
            z.relu_()
        if dropout > 0:
            z = F.dropout(z, dropout, training=True, inplace=True)
        z_op = stack_tf32(z.view(rows, hid), HHL) if stacked else z.view(rows, hid)
        logits = mm_bias(z_op, w_fwd, bias).view(n, tc, uc, classes)
        scale = torch.full((n,), weight_scale, dtype=acc, device=dev)
        # The logits' gradient: in place, or stacked into a new buffer (3V float32 a row).
        dl = f.new_empty((rows, 3 * classes)) if stacked and need_grad else logits
        costs[b0:b1] = _loss_group(logits, targets[b0:b1, : uc - 1], f_lengths[b0:b1],
                                   target_lengths[b0:b1], blank, clamp, scale, backend,
                                   need_grad, dl)
        del logits
        if not need_grad:
            del z, z_op, dl
            continue
        dl = dl.view(rows, -1)
        parts = dl_rows = z_rows = None
        if need_b:
            # Stacked rows hold hi, lo, hi: the gradient is the sum of the first two blocks.
            parts = (dl.view(n, tc * uc, 3, classes)[:, :, :2] if stacked
                     else dl.view(n, -1, 1, classes))
            if per_utt_w:
                db[b0:b1] += parts.sum((1, 2), dtype=acc)
            else:
                db[0] += parts.sum((0, 1, 2), dtype=acc)
        if need_w:
            # Stacked operands viewed as 3x the rows pair up as (hi, hi), (lo, hi), (hi, lo).
            dl_rows, z_rows = dl.view(-1, classes), z_op.view(-1, hid)
            if per_utt_w:
                per = dl_rows.shape[0] // n
                for i in range(n):
                    dw[b0 + i] += mm_grad_w(dl_rows[i * per:(i + 1) * per],
                                            z_rows[i * per:(i + 1) * per])
            else:
                dw[0] += mm_grad_w(dl_rows, z_rows)
        if (need_f or need_g) and backend == "triton":
            dz = mm(dl, w_bwd)
            kj.joint_backward(dz, z, df[b0:b1] if need_f else f.new_empty(n, tc, hid),
                              dg[b0:b1] if need_g else g.new_empty(n, uc, hid), tables, tc, uc,
                              1.0 / keep)
            del dz
        elif need_f or need_g:
            dz = mm(dl, w_bwd).view(n, tc, uc, hid)
            dz.masked_fill_(z <= 0, 0)
            if dropout > 0:
                dz.mul_(1.0 / keep)
            if need_f:
                df[b0:b1, :tc] = dz.sum(2, dtype=acc)
            if need_g:
                dg[b0:b1, :uc] = dz.sum(1, dtype=acc)
        # Views keep their storage alive: dropped here, a group's buffers are free before the
        # next group allocates its own.
        del z, z_op, dl, parts, dl_rows, z_rows
    return costs, df, dg, dw, db


def _joint_loss_impl(backend: str):
    def forward(f, g, weight, bias, targets, f_lengths, target_lengths, blank, clamp, reduction,
                dropout, group_bytes, fp32_gemm, needs):
        """(loss reduced as asked, and the gradients of f, g, weight (1 or B, V, H) and bias
        (1 or B, V) that ``needs`` asks for, empty where not)."""
        costs, df, dg, dw, db = _forward(f, g, weight, bias, targets, f_lengths, target_lengths,
                                         blank, clamp, reduction, dropout, tuple(needs), backend,
                                         group_bytes, fp32_gemm)
        if reduction == "mean":
            costs = costs.mean()
        elif reduction == "sum":
            costs = costs.sum()
        # An op's outputs may not alias each other: a fresh empty tensor for each one not asked.
        return (costs, *(costs.new_empty(0) if t is None else t for t in (df, dg, dw, db)))
    return forward


def _setup_context(ctx, inputs, output):
    weight, bias = inputs[2], inputs[3]
    ctx.save_for_backward(*output[1:])
    ctx.needs = inputs[-1]
    ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)


def _backward(ctx, grad_out, *_):
    """For "mean" and "sum" each utterance's gradient was weighted in the forward (1/B or 1) and
    the backward scales by the scalar incoming gradient; for "none" the weight's gradient is
    kept per utterance and combined with the incoming (B,) gradient."""
    df, dg, dw, db = ctx.saved_tensors
    need_f, need_g, need_w, need_b = ctx.needs
    w_dtype, b_dtype = ctx.dtypes
    gc = grad_out.to(torch.float32)
    per_utt = gc.dim() == 1
    out: list = [None] * 14
    if need_f:
        out[0] = df * (gc[:, None, None] if per_utt else gc).to(df.dtype)
    if need_g:
        out[1] = dg * (gc[:, None, None] if per_utt else gc).to(dg.dtype)
    if need_w:
        w = torch.einsum("b,bvh->vh", gc.to(dw.dtype), dw) if per_utt else dw[0] * gc
        out[2] = w.to(w_dtype)
    if need_b:
        b = gc.to(db.dtype) @ db if per_utt else db[0] * gc
        out[3] = b.to(b_dtype)
    return tuple(out)


def _joint_loss_op(backend: str):
    return custom_op(
        f"transducer_joint_loss_{backend}",
        "(Tensor f, Tensor g, Tensor weight, Tensor? bias, Tensor targets, Tensor f_lengths, "
        "Tensor target_lengths, int blank, float clamp, str reduction, float dropout, "
        "int group_bytes, str fp32_gemm, bool[] needs) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor)",
        _joint_loss_impl(backend), backward=_backward, setup_context=_setup_context)


def _float64_torch(device_type: str, size: int):
    return ("triton", "torch") if device_type == "cuda" else ("torch",)


transducer_joint_loss_triton = _joint_loss_op("triton")
transducer_joint_loss_torch = _joint_loss_op("torch")
TRANSDUCER_JOINT_LOSS = register_op("transducer_joint_loss", triton=transducer_joint_loss_triton,
                                    torch_fn=transducer_joint_loss_torch, order=_float64_torch)


def transducer_joint_loss(
    f: torch.Tensor,
    g: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    f_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = -1,
    clamp: float = -1,
    reduction: str = "mean",
    activation: str = "relu",
    dropout: float = 0.0,
    *,
    group_bytes: int = GROUP_LOGIT_BYTES,
    fp32_gemm: str = "auto",
    backend: str = "auto",
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """RNN-T loss of ``Linear(dropout(relu(f[:, :, None] + g[:, None])))`` without materializing
    the joint: equal to ``rnnt_loss(F.linear(F.dropout(F.relu(f[:, :, None] + g[:, None]),
    dropout), weight, bias), targets, f_lengths, target_lengths, blank, clamp, reduction)``.

    Args:
        f: (B, T, H) encoder side of the joint (after its own projection), float32, bfloat16,
            float16 or float64. Under autocast, f, g, weight and bias are cast to its dtype.
        g: (B, U+1, H) prediction-network side, same dtype and device.
        weight: (V, H) output projection; bias: (V,) or None.
        targets: (B, U) int32/int64; f_lengths: (B,) in [1, T]; target_lengths: (B,) in [0, U].
        blank, clamp, reduction: as in :func:`mlperf_fast.ops.rnnt_loss`.
        activation: "relu" (the MLPerf RNN-T joint).
        dropout: probability of dropping a joint activation (pass 0 in evaluation). Masks come
            from torch's generator, one call of ``F.dropout`` per group of utterances.
        group_bytes: bytes of logits computed at once (peak memory is about 2.5x this; with
            fp32_gemm="tf32x3" groups are half this size, their stacked operands taking the
            rest, and the peak about 3x).
        fp32_gemm: how float32 inputs are multiplied: "tf32x3" (each operand split into a TF32
            part and a remainder, stacked so that one cuBLAS TF32 GEMM sums the three products
            that matter: float32-level accuracy on tensor cores; the default on CUDA), "tf32x3_triton" (the same in Triton kernels, with the
            Triton backend), or "cublas" (torch's matmul, which follows torch's TF32 setting;
            the default on CPU). Other dtypes always use cuBLAS.
        backend: "triton" (the loss kernels of kernels/rnnt_loss.py; GPU default) or "torch".
        out_dtype: the loss's dtype; None: f's (after autocast), as apex's transducer loss
            and torchaudio's rnnt_loss return it. torch.float32 keeps the float32 value of a
            half-precision run (for logging it).

    Returns:
        The loss reduced as asked (computed in float32, float64 for float64 inputs), in
        ``out_dtype``; gradients flow to f, g, weight and bias.

    The lengths are read back to the host (to form the groups), so a call synchronizes with the
    GPU once and cannot be captured in a CUDA graph.
    """
    for name, t in (("f", f), ("g", g)):
        _checks.float_tensor(t, name)
        if t.dim() != 3:
            raise _checks.ArgumentValueError(f"{name} must be a 3-D tensor, got shape "
                                             f"{tuple(t.shape)}")
    _checks.float_tensor(weight, "weight")
    if f.shape[0] != g.shape[0] or f.shape[2] != g.shape[2]:
        raise _checks.ArgumentValueError(f"f {tuple(f.shape)} and g {tuple(g.shape)} do not "
                                         "match: (B, T, H) and (B, U+1, H)")
    if torch.is_autocast_enabled(f.device.type):
        dt = torch.get_autocast_dtype(f.device.type)
        f, g, weight = f.to(dt), g.to(dt), weight.to(dt)
        bias = bias.to(dt) if isinstance(bias, torch.Tensor) else bias
    _checks.same_dtype(g, "g", f, "f")
    _checks.same_device(g, "g", f, "f")
    check_projection(weight, bias, f)
    _checks.choice(activation, "activation", ACTIVATIONS)
    dropout = _checks.real(dropout, "dropout", lo=0.0, hi=1.0, hi_open=True)
    group_bytes = _checks.integer(group_bytes, "group_bytes", lo=1)
    bsz, t_max, _ = f.shape
    blank = _transducer.check_targets(bsz, t_max, g.shape[1], weight.shape[0], f.device, targets,
                                      f_lengths, target_lengths, blank, clamp, reduction,
                                      lengths_name="f_lengths")
    if backend == "auto" and f.dtype == torch.float64:
        backend = "torch"
    chosen = TRANSDUCER_JOINT_LOSS.choose(f.device, backend)
    _checks.choice(fp32_gemm, "fp32_gemm", FP32_GEMMS)
    if fp32_gemm == "tf32x3_triton" and chosen != "triton":
        raise _checks.ArgumentValueError("fp32_gemm='tf32x3_triton' needs the Triton backend")
    if f.dtype != torch.float32:
        fp32_gemm = "cublas"
    elif fp32_gemm == "auto":
        fp32_gemm = "tf32x3" if f.is_cuda else "cublas"
    if out_dtype is not None and (not isinstance(out_dtype, torch.dtype)
                                  or not out_dtype.is_floating_point):
        raise _checks.ArgumentTypeError(f"out_dtype must be a float dtype or None, got "
                                        f"{out_dtype!r}")
    grad = torch.is_grad_enabled()
    needs = [grad and f.requires_grad, grad and g.requires_grad, grad and weight.requires_grad,
             grad and bias is not None and bias.requires_grad]
    loss = TRANSDUCER_JOINT_LOSS.kernel(chosen)(
        f.contiguous(), g.contiguous(), weight.contiguous(), bias, targets, f_lengths,
        target_lengths, blank, float(clamp), reduction, dropout, group_bytes, fp32_gemm, needs)[0]
    return loss.to(out_dtype or f.dtype)
