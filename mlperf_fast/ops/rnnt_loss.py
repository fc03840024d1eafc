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

from mlperf_fast.ops._library import choose_backend

LOGIT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
INDEX_DTYPES = (torch.int32, torch.int64)
REDUCTIONS = ("none", "mean", "sum")
NEG_INF = float("-inf")


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def check_rnnt_inputs(logits: torch.Tensor, targets: torch.Tensor, logit_lengths: torch.Tensor,
                      target_lengths: torch.Tensor, blank: int, clamp: float,
                      reduction: str = "mean", *, logits_name: str = "logits",
                      check_values: bool = True) -> int:
    """Check the arguments of the transducer loss; return the blank index made non-negative.

    Value checks (lengths within the tensors, labels in range) read the lengths on the host; they
    are skipped while a CUDA graph is being captured."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{logits_name} must be a tensor, got {type(logits).__name__}")
    if logits.dim() != 4:
        raise ValueError(f"{logits_name} must have shape (batch, T, U+1, classes), got "
                         f"{tuple(logits.shape)}")
    if logits.dtype not in LOGIT_DTYPES:
        raise TypeError(f"{logits_name} has dtype {logits.dtype}; expected float32, float16, "
                        "bfloat16 or float64")
    bsz, t_max, u1, classes = logits.shape
    return _check_targets(bsz, t_max, u1, classes, logits.device, targets, logit_lengths,
                          target_lengths, blank, clamp, reduction, check_values)


def _check_targets(bsz: int, t_max: int, u1: int, classes: int, device: torch.device,
                   targets, logit_lengths, target_lengths, blank, clamp, reduction,
                   check_values: bool = True) -> int:
    for name, t, dims in (("targets", targets, 2), ("logit_lengths", logit_lengths, 1),
                          ("target_lengths", target_lengths, 1)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
        if t.dtype not in INDEX_DTYPES:
            raise TypeError(f"{name} has dtype {t.dtype}; expected int32 or int64")
        if t.dim() != dims:
            raise ValueError(f"{name} must have {dims} dimension(s), got shape {tuple(t.shape)}")
        if t.device != device:
            raise ValueError(f"{name} is on {t.device} but the logits are on {device}")
    if logit_lengths.shape[0] != bsz or target_lengths.shape[0] != bsz:
        raise ValueError(f"logit_lengths and target_lengths must have {bsz} entries (the batch), "
                         f"got {logit_lengths.shape[0]} and {target_lengths.shape[0]}")
    if targets.shape[0] != bsz or targets.shape[1] != u1 - 1:
        raise ValueError(f"targets must have shape (batch, U) = ({bsz}, {u1 - 1}) to match "
                         f"logits of U+1 = {u1}, got {tuple(targets.shape)}")
    if isinstance(blank, bool) or not isinstance(blank, int):
        raise TypeError(f"blank must be an int, got {type(blank).__name__}")
    if not -classes <= blank < classes:
        raise ValueError(f"blank={blank} is out of range for {classes} classes")
    blank = blank % classes
    if not isinstance(clamp, (int, float)) or isinstance(clamp, bool):
        raise TypeError(f"clamp must be a float, got {type(clamp).__name__}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if not check_values or _capturing(device) or bsz == 0:
        return blank
    t_lens = logit_lengths.tolist()
    u_lens = target_lengths.tolist()
    for b in range(bsz):
        if not 1 <= t_lens[b] <= t_max:
            raise ValueError(f"logit_lengths[{b}] = {t_lens[b]} is outside [1, {t_max}] "
                             "(the logits' time dimension)")
        if not 0 <= u_lens[b] <= u1 - 1:
            raise ValueError(f"target_lengths[{b}] = {u_lens[b]} is outside [0, {u1 - 1}] "
                             "(targets longer than the logits allow)")
    if targets.numel():
        used = torch.arange(u1 - 1, device=device)[None, :] < target_lengths[:, None]
        labels = targets[used]
        if labels.numel():
            lo, hi = int(labels.min()), int(labels.max())
            if lo < 0 or hi >= classes:
                raise ValueError(f"targets hold label {lo if lo < 0 else hi}, outside "
                                 f"[0, {classes}) classes")
            if bool((labels == blank).any()):
                raise ValueError(f"targets hold the blank index {blank} within target_lengths")
    return blank


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
    labels = _labels(targets, u1)
    lp_emit = torch.gather(x, -1, labels[:, None, :, None].expand(bsz, t_max, u1, 1))[..., 0]
    lp_emit = torch.where(has_label, lp_emit - lse, NEG_INF)
    return lse, lp_blank, lp_emit


def _labels(targets: torch.Tensor, u1: int) -> torch.Tensor:
    """targets padded to U+1 columns with label 0 (the last node emits nothing)."""
    labels = targets.new_zeros(targets.shape[0], u1, dtype=torch.int64)
    labels[:, : u1 - 1] = targets.to(torch.int64).clamp(min=0)
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
    labels = _labels(targets, u1)[:, None, :, None].expand(bsz, t_max, u1, 1)
    g.scatter_add_(-1, labels, -torch.where(valid, coef_label, 0.0)[..., None])
    if clamp > 0:
        g = g.clamp(-clamp, clamp)
    g = torch.where(valid[..., None], g * scale.to(acc)[:, None, None, None], 0.0)
    return g.to(logits.dtype)


# ---------------------------------------------------------------------------------------------
# torch.library ops: forward (costs + the small planes the backward needs) and backward


def _forward_impl(logits, targets, logit_lengths, target_lengths, blank, fused, backend):
    if backend == "triton":
        from mlperf_fast.kernels import rnnt_loss as k

        logits = logits.contiguous()
        targets = _nonempty(targets.contiguous())
        lse, lp_blank, lp_emit = k.row_stats(logits, targets, logit_lengths, target_lengths,
                                            blank, fused)
        alpha, beta, ll, _ = k.alpha_beta(lp_blank, lp_emit, logit_lengths, target_lengths)
    else:
        lse, lp_blank, lp_emit = row_stats_torch(logits, targets, logit_lengths, target_lengths,
                                                 blank, fused)
        alpha, beta, ll, _ = alpha_beta_torch(lp_blank, lp_emit, logit_lengths, target_lengths)
    return -ll, torch.stack([lse, lp_blank, lp_emit, alpha, beta])


def _nonempty(targets: torch.Tensor) -> torch.Tensor:
    # Triton needs a real pointer even when U = 0 and nothing is read.
    if targets.numel() == 0:
        return targets.new_zeros(targets.shape[0], 1)
    return targets


def _backward_impl(grad_costs, logits, targets, logit_lengths, target_lengths, planes, costs,
                   blank, clamp, fused, backend):
    lse, lp_blank, lp_emit, alpha, beta = planes.unbind(0)
    log_like = -costs
    if backend == "triton":
        from mlperf_fast.kernels import rnnt_loss as k

        logits = logits.contiguous()
        out = torch.empty_like(logits)
        return k.row_grad(logits, out, _nonempty(targets.contiguous()), logit_lengths,
                          target_lengths, lse, lp_blank, lp_emit, alpha, beta,
                          log_like.float().contiguous(), grad_costs.float().contiguous(), blank,
                          clamp, fused)
    return row_grad_torch(logits, targets, logit_lengths, target_lengths, lse, lp_blank, lp_emit,
                          alpha, beta, log_like, grad_costs, blank, clamp, fused)


@torch.library.custom_op("mlperf_fast::rnnt_loss_forward", mutates_args=())
def _rnnt_forward_op(logits: torch.Tensor, targets: torch.Tensor, logit_lengths: torch.Tensor,
                     target_lengths: torch.Tensor, blank: int, fused_log_softmax: bool,
                     backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Costs (B,) and planes (5, B, T, U+1): lse, log p(blank), log p(label), alpha, beta."""
    return _forward_impl(logits, targets, logit_lengths, target_lengths, blank,
                         fused_log_softmax, backend)


@_rnnt_forward_op.register_fake
def _(logits, targets, logit_lengths, target_lengths, blank, fused_log_softmax, backend):
    bsz, t_max, u1, _ = logits.shape
    acc = _acc_dtype(logits.dtype)
    return (logits.new_empty((bsz,), dtype=acc),
            logits.new_empty((5, bsz, t_max, u1), dtype=acc))


@torch.library.custom_op("mlperf_fast::rnnt_loss_backward", mutates_args=())
def _rnnt_backward_op(grad_costs: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor,
                      logit_lengths: torch.Tensor, target_lengths: torch.Tensor,
                      planes: torch.Tensor, costs: torch.Tensor, blank: int, clamp: float,
                      fused_log_softmax: bool, backend: str) -> torch.Tensor:
    return _backward_impl(grad_costs, logits, targets, logit_lengths, target_lengths, planes,
                          costs, blank, clamp, fused_log_softmax, backend)


@_rnnt_backward_op.register_fake
def _(grad_costs, logits, targets, logit_lengths, target_lengths, planes, costs, blank, clamp,
      fused_log_softmax, backend):
    return torch.empty_like(logits)


class _RNNTLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, logit_lengths, target_lengths, blank, clamp, fused,
                backend):
        costs, planes = _rnnt_forward_op(logits, targets, logit_lengths, target_lengths, blank,
                                         fused, backend)
        ctx.save_for_backward(logits, targets, logit_lengths, target_lengths, planes, costs)
        ctx.args = (blank, float(clamp), fused, backend)
        return costs

    @staticmethod
    def backward(ctx, grad_costs):
        logits, targets, logit_lengths, target_lengths, planes, costs = ctx.saved_tensors
        blank, clamp, fused, backend = ctx.args
        grad = _rnnt_backward_op(grad_costs.contiguous(), logits, targets, logit_lengths,
                                 target_lengths, planes, costs, blank, clamp, fused, backend)
        return grad, None, None, None, None, None, None, None


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
        The negative log-likelihood, reduced as asked, float32 (float64 for float64 logits).
        The gradient reaches ``logits`` in their dtype.
    """
    blank = check_rnnt_inputs(logits, targets, logit_lengths, target_lengths, blank, clamp,
                              reduction)
    if backend == "auto" and logits.dtype == torch.float64:
        backend = "torch"
    chosen = choose_backend("rnnt_loss", logits.device, backend)
    if chosen == "native":
        raise ValueError("backend 'native': rnnt_loss has Triton and torch kernels only")
    costs = _RNNTLoss.apply(logits, targets, logit_lengths, target_lengths, blank, clamp,
                            fused_log_softmax, chosen)
    if reduction == "mean":
        return costs.mean()
    if reduction == "sum":
        return costs.sum()
    return costs


# ---------------------------------------------------------------------------------------------
# Packed logits: only each utterance's lattice, as transducer_joint(pack_output=True) makes them


@torch.library.custom_op("mlperf_fast::rnnt_loss_packed_forward", mutates_args=())
def _packed_forward_op(logits: torch.Tensor, targets: torch.Tensor, logit_lengths: torch.Tensor,
                       target_lengths: torch.Tensor, row_base: torch.Tensor, t_max: int, u1: int,
                       blank: int, fused_log_softmax: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from mlperf_fast.kernels import rnnt_loss as k

    targets = _nonempty(targets.contiguous())
    packed = (row_base, t_max, u1)
    lse, lp_blank, lp_emit = k.row_stats(logits.contiguous(), targets, logit_lengths,
                                        target_lengths, blank, fused_log_softmax, packed)
    alpha, beta, ll, _ = k.alpha_beta(lp_blank, lp_emit, logit_lengths, target_lengths)
    return -ll, torch.stack([lse, lp_blank, lp_emit, alpha, beta])


@_packed_forward_op.register_fake
def _(logits, targets, logit_lengths, target_lengths, row_base, t_max, u1, blank,
      fused_log_softmax):
    bsz = logit_lengths.shape[0]
    return (logits.new_empty((bsz,), dtype=torch.float32),
            logits.new_empty((5, bsz, t_max, u1), dtype=torch.float32))


@torch.library.custom_op("mlperf_fast::rnnt_loss_packed_backward", mutates_args=())
def _packed_backward_op(grad_costs: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor,
                        logit_lengths: torch.Tensor, target_lengths: torch.Tensor,
                        row_base: torch.Tensor, planes: torch.Tensor, costs: torch.Tensor,
                        blank: int, clamp: float, fused_log_softmax: bool) -> torch.Tensor:
    from mlperf_fast.kernels import rnnt_loss as k

    lse, lp_blank, lp_emit, alpha, beta = planes.unbind(0)
    out = torch.empty_like(logits)
    return k.row_grad(logits.contiguous(), out, _nonempty(targets.contiguous()), logit_lengths,
                      target_lengths, lse, lp_blank, lp_emit, alpha, beta,
                      (-costs).float().contiguous(), grad_costs.float().contiguous(), blank,
                      clamp, fused_log_softmax, (row_base, planes.shape[2], planes.shape[3]))


@_packed_backward_op.register_fake
def _(grad_costs, logits, targets, logit_lengths, target_lengths, row_base, planes, costs, blank,
      clamp, fused_log_softmax):
    return torch.empty_like(logits)


class _PackedLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, logit_lengths, target_lengths, row_base, t_max, u1, blank,
                clamp, fused):
        costs, planes = _packed_forward_op(logits, targets, logit_lengths, target_lengths,
                                           row_base, t_max, u1, blank, fused)
        ctx.save_for_backward(logits, targets, logit_lengths, target_lengths, row_base, planes,
                              costs)
        ctx.args = (blank, float(clamp), fused)
        return costs

    @staticmethod
    def backward(ctx, grad_costs):
        blank, clamp, fused = ctx.args
        grad = _packed_backward_op(grad_costs.contiguous(), *ctx.saved_tensors, blank, clamp,
                                   fused)
        return (grad,) + (None,) * 9


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
    from mlperf_fast.ops.transducer_joint import _index, packed_layout

    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError("logits must be a packed (N, classes) tensor")
    if logits.dtype not in LOGIT_DTYPES:
        raise TypeError(f"logits has dtype {logits.dtype}; expected float32, float16, bfloat16 "
                        "or float64")
    if not isinstance(logit_lengths, torch.Tensor) or logit_lengths.dim() != 1:
        raise ValueError("logit_lengths must be a (B,) tensor")
    bsz = logit_lengths.shape[0]
    t_max = int(logit_lengths.max()) if bsz else 1
    u1 = targets.shape[1] + 1 if isinstance(targets, torch.Tensor) and targets.dim() == 2 else 1
    blank = _check_targets(bsz, t_max, u1, logits.shape[1], logits.device, targets,
                           logit_lengths, target_lengths, blank, clamp, reduction)
    offsets, row_base = packed_layout(logit_lengths, target_lengths)
    total = int(offsets[-1]) if bsz else 0
    if logits.shape[0] != total:
        raise ValueError(f"logits has {logits.shape[0]} rows but the lengths make {total}")
    if batch_offsets is not None and not torch.equal(batch_offsets.to(offsets), offsets):
        raise ValueError("batch_offsets is not the cumulative sum of T_b * (U_b + 1)")
    if backend == "auto" and logits.dtype == torch.float64:
        backend = "torch"
    chosen = choose_backend("rnnt_loss", logits.device, backend)
    if chosen == "triton":
        u1 = int(target_lengths.max()) + 1 if bsz else 1
        costs = _PackedLoss.apply(logits, targets, logit_lengths, target_lengths, row_base, t_max,
                                  u1, blank, clamp, fused_log_softmax)
    else:
        if chosen == "native":
            raise ValueError("backend 'native': rnnt_loss has Triton and torch kernels only")
        b, t, u = _index(logit_lengths, target_lengths)
        dense = logits.new_zeros((bsz, t_max, u1, logits.shape[1]))
        dense = dense.index_put((b, t, u), logits)
        costs = _RNNTLoss.apply(dense, targets, logit_lengths, target_lengths, blank, clamp,
                                fused_log_softmax, "torch")
    if reduction == "mean":
        return costs.mean()
    if reduction == "sum":
        return costs.sum()
    return costs
