"""RNN-T (transducer) loss with the log-softmax fused in, a drop-in for torchaudio's rnnt_loss.

The forward reads the logits once for the log-softmax normalizers and the blank and label
log-probabilities of each (b, t, u), then runs the alpha and beta recursions on those small
(B, T, U+1) planes. The backward writes the gradient with respect to the logits directly from
the logits and those planes. Full log-probabilities are never stored, and unlike torchaudio no
gradient buffer is held between forward and backward.

Backends: "triton" (GPU, or CPU under TRITON_INTERPRET=1) and "torch" (any device; the CPU path,
and the float64 path). ``backend="auto"`` picks Triton for CUDA tensors and torch otherwise.
"""
from __future__ import annotations

import torch

from mlperf_fast.ops import _checks, _transducer
from mlperf_fast.ops._library import custom_op, host_checks_enabled, register_op

LOGIT_DTYPES = _transducer.LOGIT_DTYPES
INDEX_DTYPES = _transducer.INDEX_DTYPES
REDUCTIONS = _transducer.REDUCTIONS
NEG_INF = float("-inf")
_acc_dtype = _checks.acc_dtype


def check_rnnt_inputs(logits: torch.Tensor, targets: torch.Tensor, logit_lengths: torch.Tensor,
                      target_lengths: torch.Tensor, blank: int, clamp: float,
                      reduction: str = "mean", *, logits_name: str = "logits",
                      check_values: bool = True) -> int:
    """Check the arguments of the transducer loss; return the blank index made non-negative.

    Value checks (lengths within the tensors, labels in range) read the lengths on the host; they
    are skipped while torch.compile traces and while a CUDA graph is captured."""
    _checks.float_tensor(logits, logits_name)
    if logits.dim() != 4:
        raise _checks.ArgumentValueError(f"{logits_name} must have shape (batch, T, U+1, classes),"
                                         f" got {tuple(logits.shape)}")
    bsz, t_max, u1, classes = logits.shape
    return _transducer.check_targets(bsz, t_max, u1, classes, logits.device, targets,
                                     logit_lengths, target_lengths, blank, clamp, reduction,
                                     check_values)


_check_targets = _transducer.check_targets


# ---------------------------------------------------------------------------------------------
# The PyTorch implementation (CPU path, float64 path, and the GPU fallback)


def row_stats_torch(logits, targets, logit_lengths, target_lengths, blank, fused_log_softmax):
    """(lse, log p(blank), log p(label)) as in kernels/rnnt_loss.py, -inf outside lengths."""
    bsz, t_max, u1, _ = logits.shape
    acc = _acc_dtype(logits.dtype)
    valid, has_label = _masks(t_max, u1, logit_lengths, target_lengths)
    x = logits.to(acc)
    lse = torch.logsumexp(x, dim=-1) if fused_log_softmax else x.new_zeros(bsz, t_max, u1)
    lse = torch.where(valid, lse, 0.0)
    lp_blank = torch.where(valid, x[..., blank] - lse, NEG_INF)
    labels = _labels(targets, u1, logits.shape[-1])
    lp_emit = torch.gather(x, -1, labels[:, None, :, None].expand(bsz, t_max, u1, 1))[..., 0]
    lp_emit = torch.where(has_label, lp_emit - lse, NEG_INF)
    return lse, lp_blank, lp_emit


def _labels(targets: torch.Tensor, u1: int, classes: int) -> torch.Tensor:
    """targets padded to U+1 columns with label 0 (the last node emits nothing). Padding past a
    target length may hold anything (it is masked out): clamped into [0, classes) so that the
    gathers stay in bounds."""
    labels = targets.new_zeros(targets.shape[0], u1, dtype=torch.int64)
    labels[:, : u1 - 1] = targets.to(torch.int64).clamp(0, classes - 1)
    return labels


def _masks(t_max, u1, logit_lengths, target_lengths):
    dev = logit_lengths.device
    t = torch.arange(t_max, device=dev)[None, :, None]
    u = torch.arange(u1, device=dev)[None, None, :]
    t_len = logit_lengths.to(torch.int64)[:, None, None]
    u_len = target_lengths.to(torch.int64)[:, None, None]
    valid = (t < t_len) & (u <= u_len)
    return valid, valid & (u < u_len)


def alpha_beta_torch(lp_blank, lp_emit, logit_lengths, target_lengths):
    """alpha, beta (B, T, U+1) and log-likelihoods from beta and from alpha, by anti-diagonal
    wavefronts vectorized over the batch (T + U steps)."""
    bsz, t_max, u1 = lp_blank.shape
    dev, dt = lp_blank.device, lp_blank.dtype
    valid, _ = _masks(t_max, u1, logit_lengths, target_lengths)
    t_len = logit_lengths.to(torch.int64)
    u_len = target_lengths.to(torch.int64)
    alpha = torch.full_like(lp_blank, NEG_INF)
    alpha[:, 0, 0] = 0.0
    ninf = torch.tensor(NEG_INF, dtype=dt, device=dev)
    for d in range(1, t_max + u1 - 1):
        u = torch.arange(max(0, d - t_max + 1), min(d, u1 - 1) + 1, device=dev)
        t = d - u
        from_blank = torch.where(t >= 1, alpha[:, t - 1, u] + lp_blank[:, t - 1, u], ninf)
        from_emit = torch.where(u >= 1, alpha[:, t, u - 1] + lp_emit[:, t, u - 1], ninf)
        alpha[:, t, u] = torch.logaddexp(from_blank, from_emit)
    alpha = torch.where(valid, alpha, ninf)
    ar = torch.arange(bsz, device=dev)
    ll_alpha = alpha[ar, t_len - 1, u_len] + lp_blank[ar, t_len - 1, u_len]

    beta = torch.full_like(lp_blank, NEG_INF)
    for d in range(t_max + u1 - 2, -1, -1):
        u = torch.arange(max(0, d - t_max + 1), min(d, u1 - 1) + 1, device=dev)
        t = d - u
        next_t = beta[:, (t + 1).clamp(max=t_max - 1), u]
        next_t = torch.where(t + 1 < t_max, next_t, ninf)
        end = (t[None, :] == t_len[:, None] - 1) & (u[None, :] == u_len[:, None])
        next_t = torch.where(end, 0.0, next_t)
        next_u = beta[:, t, (u + 1).clamp(max=u1 - 1)]
        next_u = torch.where(u + 1 < u1, next_u, ninf)
        val = torch.logaddexp(next_t + lp_blank[:, t, u], next_u + lp_emit[:, t, u])
        beta[:, t, u] = torch.where(valid[:, t, u], val, ninf)
    return alpha, beta, beta[:, 0, 0].clone(), ll_alpha


def row_grad_torch(logits, targets, logit_lengths, target_lengths, lse, lp_blank, lp_emit, alpha,
                   beta, log_like, scale, blank, clamp, fused_log_softmax):
    bsz, t_max, u1, classes = logits.shape
    acc = alpha.dtype
    valid, has_label = _masks(t_max, u1, logit_lengths, target_lengths)
    ll = log_like[:, None, None]
    valid = valid & (ll > NEG_INF)
    t_len = logit_lengths.to(torch.int64)[:, None, None]
    u_len = target_lengths.to(torch.int64)[:, None, None]
    t = torch.arange(t_max, device=logits.device)[None, :, None]
    u = torch.arange(u1, device=logits.device)[None, None, :]
    ninf = torch.full_like(beta[:, :1], NEG_INF)
    next_t = torch.cat([beta[:, 1:], ninf], dim=1)
    next_t = torch.where(t == t_len - 1, torch.where(u == u_len, 0.0, NEG_INF), next_t)
    next_u = torch.cat([beta[:, :, 1:], ninf[:, :, :1].expand(bsz, t_max, 1)], dim=2)
    coef_blank = torch.exp(alpha + lp_blank + next_t - ll)
    coef_label = torch.where(has_label, torch.exp(alpha + lp_emit + next_u - ll), 0.0)
    if fused_log_softmax:
        g = torch.exp(logits.to(acc) - (lse - alpha - beta + ll)[..., None])
        g = torch.where(valid[..., None], g, 0.0)
    else:
        g = torch.zeros(bsz, t_max, u1, classes, dtype=acc, device=logits.device)
    g[..., blank] -= torch.where(valid, coef_blank, 0.0)
    labels = _labels(targets, u1, classes)[:, None, :, None].expand(bsz, t_max, u1, 1)
    g.scatter_add_(-1, labels, -torch.where(valid, coef_label, 0.0)[..., None])
    if clamp > 0:
        g = g.clamp(-clamp, clamp)
    g = torch.where(valid[..., None], g * scale.to(acc)[:, None, None, None], 0.0)
    return g.to(logits.dtype)


# ---------------------------------------------------------------------------------------------
# torch.library ops, one per backend: forward (costs + the small planes the backward needs) and
# backward. Fakes in _fakes.py.


def _forward_impl(backend):
    def forward(logits, targets, logit_lengths, target_lengths, blank, clamp, fused_log_softmax):
        if backend == "triton":
            from mlperf_fast.kernels import rnnt_loss as k

            logits = logits.contiguous()
            targets = _nonempty(targets.contiguous())
            lse, lp_blank, lp_emit = k.row_stats(logits, targets, logit_lengths, target_lengths,
                                                blank, fused_log_softmax)
            alpha, beta, ll, _ = k.alpha_beta(lp_blank, lp_emit, logit_lengths, target_lengths)
        else:
            lse, lp_blank, lp_emit = row_stats_torch(logits, targets, logit_lengths,
                                                     target_lengths, blank, fused_log_softmax)
            alpha, beta, ll, _ = alpha_beta_torch(lp_blank, lp_emit, logit_lengths,
                                                  target_lengths)
        return -ll, torch.stack([lse, lp_blank, lp_emit, alpha, beta])
    return forward


def _nonempty(targets: torch.Tensor) -> torch.Tensor:
    # Triton needs a real pointer even when U = 0 and nothing is read.
    if targets.numel() == 0:
        return targets.new_zeros(targets.shape[0], 1)
    return targets


def _backward_impl(backend):
    def backward(grad_costs, logits, targets, logit_lengths, target_lengths, planes, costs,
                 blank, clamp, fused_log_softmax):
        lse, lp_blank, lp_emit, alpha, beta = planes.unbind(0)
        log_like = -costs
        if backend == "triton":
            from mlperf_fast.kernels import rnnt_loss as k

            logits = logits.contiguous()
            out = torch.empty_like(logits)
            return k.row_grad(logits, out, _nonempty(targets.contiguous()), logit_lengths,
                              target_lengths, lse, lp_blank, lp_emit, alpha, beta,
                              log_like.float().contiguous(), grad_costs.float().contiguous(),
                              blank, clamp, fused_log_softmax)
        return row_grad_torch(logits, targets, logit_lengths, target_lengths, lse, lp_blank,
                              lp_emit, alpha, beta, log_like, grad_costs, blank, clamp,
                              fused_log_softmax)
    return backward


def _setup_context(ctx, inputs, output):
    logits, targets, logit_lengths, target_lengths, blank, clamp, fused = inputs
    costs, planes = output
    ctx.save_for_backward(logits, targets, logit_lengths, target_lengths, planes, costs)
    ctx.args = (blank, clamp, fused)


def _autograd(backward_op):
    def backward(ctx, grad_costs, grad_planes):
        grad = backward_op(grad_costs.contiguous(), *ctx.saved_tensors, *ctx.args)
        return grad, None, None, None, None, None, None
    return backward


_LOSS_ARGS = ("Tensor logits, Tensor targets, Tensor logit_lengths, Tensor target_lengths, "
              "int blank, float clamp, bool fused_log_softmax")
_GRAD_ARGS = ("Tensor grad_costs, Tensor logits, Tensor targets, Tensor logit_lengths, "
              "Tensor target_lengths, Tensor planes, Tensor costs, int blank, float clamp, "
              "bool fused_log_softmax")


def _loss_ops(backend: str):
    """mlperf_fast::rnnt_loss_<backend>: (costs (B,), planes (5, B, T, U+1): lse, log p(blank),
    log p(label), alpha, beta), and its backward."""
    bwd = custom_op(f"rnnt_loss_{backend}_backward", f"({_GRAD_ARGS}) -> Tensor",
                    _backward_impl(backend))
    return custom_op(f"rnnt_loss_{backend}", f"({_LOSS_ARGS}) -> (Tensor, Tensor)",
                     _forward_impl(backend), backward=_autograd(bwd),
                     setup_context=_setup_context)


rnnt_loss_triton = _loss_ops("triton")
rnnt_loss_torch_op = _loss_ops("torch")


def _reduce(costs: torch.Tensor, reduction: str, dtype: torch.dtype) -> torch.Tensor:
    """Reduced in the accumulation dtype, returned in the logits' (as torchaudio does)."""
    if reduction == "mean":
        costs = costs.mean()
    elif reduction == "sum":
        costs = costs.sum()
    return costs.to(dtype)


def _float64_torch(device_type: str, size: int):
    return ("triton", "torch") if device_type == "cuda" else ("torch",)


RNNT_LOSS = register_op("rnnt_loss", triton=rnnt_loss_triton, torch_fn=rnnt_loss_torch_op,
                        order=_float64_torch)


def rnnt_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = -1,
    clamp: float = -1,
    reduction: str = "mean",
    fused_log_softmax: bool = True,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """RNN-T loss (Graves 2012), same signature and semantics as torchaudio.functional.rnnt_loss.

    Args:
        logits: (B, T, U+1, C) joint-network outputs, float32, bfloat16, float16 or float64 (all
            arithmetic in float32, float64 for float64 logits). With ``fused_log_softmax=False``
            they must already be log-probabilities.
        targets: (B, U) int32 or int64 labels, padded past each target length (padding unread).
        logit_lengths: (B,) int32/int64, each in [1, T].
        target_lengths: (B,) int32/int64, each in [0, U].
        blank: blank class; negative counts from the end (-1: the last class).
        clamp: if > 0, each element of an utterance's gradient is clamped to [-clamp, clamp]
            before the reduction's scaling.
        reduction: "none" (per-utterance losses, (B,)), "mean" (over the batch) or "sum".
        fused_log_softmax: False if log_softmax was applied to ``logits`` already.
        backend: "auto", "triton" or "torch" (see ``mlperf_fast.ops._library``).

    Returns:
        The negative log-likelihood, reduced as asked, in the logits' dtype (as torchaudio;
        computed and reduced in float32, float64 for float64 logits). The gradient reaches
        ``logits`` in their dtype.
    """
    blank = check_rnnt_inputs(logits, targets, logit_lengths, target_lengths, blank, clamp,
                              reduction)
    if backend == "auto" and logits.dtype == torch.float64:
        backend = "torch"
    costs, _ = RNNT_LOSS(logits.device, backend, logits, targets, logit_lengths, target_lengths,
                         blank, float(clamp), bool(fused_log_softmax))
    return _reduce(costs, reduction, logits.dtype)


# ---------------------------------------------------------------------------------------------
# Packed logits: only each utterance's lattice, as transducer_joint(pack_output=True) makes them


def _packed_forward(logits, targets, logit_lengths, target_lengths, row_base, t_max, u1, blank,
                    clamp, fused_log_softmax):
    from mlperf_fast.kernels import rnnt_loss as k

    targets = _nonempty(targets.contiguous())
    packed = (row_base, t_max, u1)
    lse, lp_blank, lp_emit = k.row_stats(logits.contiguous(), targets, logit_lengths,
                                        target_lengths, blank, fused_log_softmax, packed)
    alpha, beta, ll, _ = k.alpha_beta(lp_blank, lp_emit, logit_lengths, target_lengths)
    return -ll, torch.stack([lse, lp_blank, lp_emit, alpha, beta])


def _packed_backward(grad_costs, logits, targets, logit_lengths, target_lengths, row_base, planes,
                     costs, blank, clamp, fused_log_softmax):
    from mlperf_fast.kernels import rnnt_loss as k

    lse, lp_blank, lp_emit, alpha, beta = planes.unbind(0)
    out = torch.empty_like(logits)
    return k.row_grad(logits.contiguous(), out, _nonempty(targets.contiguous()), logit_lengths,
                      target_lengths, lse, lp_blank, lp_emit, alpha, beta,
                      (-costs).float().contiguous(), grad_costs.float().contiguous(), blank,
                      clamp, fused_log_softmax, (row_base, planes.shape[2], planes.shape[3]))


def _packed_setup_context(ctx, inputs, output):
    logits, targets, logit_lengths, target_lengths, row_base, t_max, u1, blank, clamp, fused = \
        inputs
    costs, planes = output
    ctx.save_for_backward(logits, targets, logit_lengths, target_lengths, row_base, planes, costs)
    ctx.args = (blank, clamp, fused)


def _packed_autograd(ctx, grad_costs, grad_planes):
    grad = rnnt_loss_packed_triton_backward(grad_costs.contiguous(), *ctx.saved_tensors,
                                            *ctx.args)
    return (grad,) + (None,) * 9


rnnt_loss_packed_triton_backward = custom_op(
    "rnnt_loss_packed_triton_backward",
    "(Tensor grad_costs, Tensor logits, Tensor targets, Tensor logit_lengths, "
    "Tensor target_lengths, Tensor row_base, Tensor planes, Tensor costs, int blank, "
    "float clamp, bool fused_log_softmax) -> Tensor", _packed_backward)
rnnt_loss_packed_triton = custom_op(
    "rnnt_loss_packed_triton",
    "(Tensor logits, Tensor targets, Tensor logit_lengths, Tensor target_lengths, "
    "Tensor row_base, int t_max, int u1, int blank, float clamp, bool fused_log_softmax) "
    "-> (Tensor, Tensor)", _packed_forward, backward=_packed_autograd,
    setup_context=_packed_setup_context)


def rnnt_loss_packed(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    batch_offsets: torch.Tensor | None = None,
    blank: int = -1,
    clamp: float = -1,
    reduction: str = "mean",
    fused_log_softmax: bool = True,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """:func:`rnnt_loss` on packed logits (N, C): utterance b's lattice node (t, u) at row
    ``batch_offsets[b] - T_b * (U_b + 1) + t * (U_b + 1) + u`` (the layout of
    ``transducer_joint(..., pack_output=True)``; ``batch_offsets`` is computed from the lengths
    when not given, and must equal the inclusive cumulative sum of T_b * (U_b + 1)).
    ``targets`` (B, U) with U >= max target length. Other arguments and the result as in
    :func:`rnnt_loss`."""
    _checks.float_tensor(logits, "logits")
    if logits.dim() != 2:
        raise _checks.ArgumentValueError(f"logits must be a packed (N, classes) tensor, got shape "
                                         f"{tuple(logits.shape)}")
    _checks.integer_tensor(logit_lengths, "logit_lengths", INDEX_DTYPES)
    if logit_lengths.dim() != 1:
        raise _checks.ArgumentValueError(f"logit_lengths must be a (B,) tensor, got shape "
                                         f"{tuple(logit_lengths.shape)}")
    bsz = logit_lengths.shape[0]
    if bsz and host_checks_enabled(logit_lengths) and int(logit_lengths.min()) < 1:
        raise _checks.ArgumentValueError("logit_lengths must be >= 1")
    t_max = int(logit_lengths.max()) if bsz else 1
    u1 = targets.shape[1] + 1 if isinstance(targets, torch.Tensor) and targets.dim() == 2 else 1
    blank = _check_targets(bsz, t_max, u1, logits.shape[1], logits.device, targets,
                           logit_lengths, target_lengths, blank, clamp, reduction)
    offsets, row_base = _transducer.packed_layout(logit_lengths, target_lengths)
    total = int(offsets[-1]) if bsz else 0
    if logits.shape[0] != total:
        raise _checks.ArgumentValueError(f"logits has {logits.shape[0]} rows but the lengths make "
                                         f"{total}")
    if batch_offsets is not None:
        _checks.integer_tensor(batch_offsets, "batch_offsets")
        if batch_offsets.shape != offsets.shape or not torch.equal(batch_offsets.to(offsets),
                                                                   offsets):
            raise _checks.ArgumentValueError(
                "batch_offsets is not the cumulative sum of T_b * (U_b + 1)")
    if backend == "auto" and logits.dtype == torch.float64:
        backend = "torch"
    chosen = RNNT_LOSS.choose(logits.device, backend)
    if chosen == "triton":
        u1 = int(target_lengths.max()) + 1 if bsz else 1
        costs, _ = rnnt_loss_packed_triton(logits, targets, logit_lengths, target_lengths,
                                           row_base, t_max, u1, blank, float(clamp),
                                           bool(fused_log_softmax))
    else:
        b, t, u = _transducer.packed_index(logit_lengths, target_lengths)
        dense = logits.new_zeros((bsz, t_max, u1, logits.shape[1]))
        dense = dense.index_put((b, t, u), logits)
        costs, _ = rnnt_loss_torch_op(dense, targets, logit_lengths, target_lengths, blank,
                                      float(clamp), bool(fused_log_softmax))
    return _reduce(costs, reduction, logits.dtype)
