"""Triton RNN-T loss with the log-softmax fused in: full log-probabilities are never stored.

Three kernels, each reading the (B, T, U+1, V) logits at most once:

1. ``_row_stats``, one program per (b, t, u) row: the log-softmax normalizer of the row (an
   online logsumexp over vocabulary tiles) and the two log-probabilities the recursions need,
   blank and the next target label. Rows outside an utterance's lengths are skipped.
2. ``_alpha_beta``, two programs per utterance, one for the forward (alpha) and one for the
   backward (beta) recursion over the lattice, one anti-diagonal (t + u constant) at a time:
   a lane per u, neighbours exchanged by register shuffles, no shared memory and no barriers.
3. ``_row_grad``, one program per row: the gradient with respect to the logits, written
   directly (scaled by the incoming gradient of each utterance's loss).

All arithmetic is float32 whatever the logits' dtype (float32, float16 or bfloat16).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

NEG_INF = float("-inf")


def _block_v(v: int) -> int:
    return min(triton.next_power_of_2(max(v, 16)), 4096)


@triton.jit
def _row_stats(
    logits, targets, logit_lengths, target_lengths, lse, lp_blank, lp_emit, row_base,
    T, U1, V, UMAX, blank,
    FUSED: tl.constexpr, PACKED: tl.constexpr, BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    u = row % U1
    t = (row // U1) % T
    b = row // (U1 * T)
    t_len = tl.load(logit_lengths + b)
    u_len = tl.load(target_lengths + b)
    valid = (t < t_len) & (u <= u_len)
    has_label = valid & (u < u_len)
    label = tl.load(targets + b * UMAX + u, mask=has_label, other=0).to(tl.int64)
    if PACKED:
        base = logits + (tl.load(row_base + b) + t * (u_len + 1) + u) * V
    else:
        base = logits + row * V
    if FUSED:
        offs = tl.arange(0, BLOCK_V)
        m = tl.full([BLOCK_V], float("-inf"), tl.float32)
        s = tl.zeros([BLOCK_V], tl.float32)
        for v0 in range(0, V, BLOCK_V):
            mask = valid & (v0 + offs < V)
            x = tl.load(base + v0 + offs, mask=mask, other=float("-inf")).to(tl.float32)
            m_new = tl.maximum(m, x)
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            s = s * tl.exp(m - m_safe) + tl.exp(x - m_safe)
            m = m_new
        mx = tl.max(m, axis=0)
        mx_safe = tl.where(mx == float("-inf"), 0.0, mx)
        total = tl.sum(s * tl.exp(m - mx_safe), axis=0)
        norm = mx_safe + tl.log(total)
    else:
        norm = 0.0
    x_blank = tl.load(base + blank, mask=valid, other=0.0).to(tl.float32)
    x_label = tl.load(base + label, mask=has_label, other=0.0).to(tl.float32)
    tl.store(lse + row, tl.where(valid, norm, 0.0))
    tl.store(lp_blank + row, tl.where(valid, x_blank - norm, float("-inf")))
    tl.store(lp_emit + row, tl.where(has_label, x_label - norm, float("-inf")))


@triton.jit
def _logaddexp(x, y):
    m = tl.maximum(x, y)
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    return m_safe + tl.log(tl.exp(x - m_safe) + tl.exp(y - m_safe))


@triton.jit
def _alpha_beta(
    lp_blank, lp_emit, logit_lengths, target_lengths, alpha, beta, log_like,
    T, U1,
    BLOCK_U: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    t_len = tl.load(logit_lengths + b)
    u_len = tl.load(target_lengths + b)
    lane = tl.arange(0, BLOCK_U)
    in_u = lane <= u_len
    plane = b * T * U1

    if tl.program_id(1) == 0:
        _alpha_pass(lp_blank, lp_emit, alpha, log_like, plane, b, t_len, u_len, lane, in_u, U1,
                    tl.num_programs(0), BLOCK_U)
    else:
        _beta_pass(lp_blank, lp_emit, beta, log_like, plane, b, t_len, u_len, lane, in_u, U1,
                   BLOCK_U)


# Both recursions run one anti-diagonal d = t + u at a time, lane u holding node (d - u, u): a
# node's two neighbours in the recursion lie on the diagonal before, in its own lane and the
# next one, so a step is one logaddexp per lane and a one-lane shift (register shuffles in one
# warp). T + U such steps replace T scans of U + 1 lanes, whose depth made each time step
# ~1.5 us. Each step's operands are loaded two steps ahead, hiding their latency.


@triton.jit
def _alpha_operands(lp_blank, lp_emit, plane, d, lane, in_u, t_len, U1):
    # alpha[t, u] = logaddexp(alpha[t-1, u] + blank[t-1, u], alpha[t, u-1] + emit[t, u-1]):
    # -inf at nodes off the lattice, so that those stay -inf.
    t = d - lane
    node = in_u & (t >= 0) & (t < t_len)
    bl = tl.load(lp_blank + plane + (t - 1) * U1 + lane, mask=node & (t >= 1),
                 other=float("-inf"))
    em = tl.load(lp_emit + plane + t * U1 + lane - 1, mask=node & (lane >= 1),
                 other=float("-inf"))
    return bl, em


@triton.jit
def _alpha_pass(lp_blank, lp_emit, alpha, log_like, plane, b, t_len, u_len, lane, in_u, U1, n_b,
                BLOCK_U: tl.constexpr):
    prev = tl.where(lane == 0, 0.0, float("-inf"))
    tl.store(alpha + plane + lane, prev, mask=lane == 0)
    left = tl.maximum(lane - 1, 0)
    bl1, em1 = _alpha_operands(lp_blank, lp_emit, plane, 1, lane, in_u, t_len, U1)
    bl2, em2 = _alpha_operands(lp_blank, lp_emit, plane, 2, lane, in_u, t_len, U1)
    for d in range(1, t_len + u_len):
        # Past the last diagonal every lane is off the lattice: the loads are masked out.
        bl3, em3 = _alpha_operands(lp_blank, lp_emit, plane, d + 2, lane, in_u, t_len, U1)
        from_left = tl.gather(prev, left, 0)
        prev = _logaddexp(prev + bl1, from_left + em1)
        t = d - lane
        tl.store(alpha + plane + t * U1 + lane, prev, mask=in_u & (t >= 0) & (t < t_len))
        bl1, em1, bl2, em2 = bl2, em2, bl3, em3
    last = plane + (t_len - 1) * U1 + u_len
    ll_alpha = tl.sum(tl.where(lane == u_len, prev, 0.0), axis=0) + tl.load(lp_blank + last)
    tl.store(log_like + n_b + b, ll_alpha)


@triton.jit
def _beta_operands(lp_blank, lp_emit, plane, d, lane, in_u, t_len, U1):
    # beta[t, u] = logaddexp(beta[t+1, u] + blank[t, u], beta[t, u+1] + emit[t, u]).
    t = d - lane
    node = in_u & (t >= 0) & (t < t_len)
    off = plane + t * U1 + lane
    bl = tl.load(lp_blank + off, mask=node, other=float("-inf"))
    em = tl.load(lp_emit + off, mask=node, other=float("-inf"))
    return bl, em


@triton.jit
def _beta_pass(lp_blank, lp_emit, beta, log_like, plane, b, t_len, u_len, lane, in_u, U1,
               BLOCK_U: tl.constexpr):
    # Starts from a virtual node (t_len, u_len) of value 0, one diagonal past the lattice: then
    # beta[t_len-1, u_len] = blank[t_len-1, u_len] falls out of the general step. emit[t, u_len]
    # is -inf (row_stats), so the last lane takes nothing from its right.
    prev = tl.where(lane == u_len, 0.0, float("-inf"))
    right = tl.minimum(lane + 1, BLOCK_U - 1)
    top = t_len + u_len - 1
    bl1, em1 = _beta_operands(lp_blank, lp_emit, plane, top, lane, in_u, t_len, U1)
    bl2, em2 = _beta_operands(lp_blank, lp_emit, plane, top - 1, lane, in_u, t_len, U1)
    for i in range(t_len + u_len):
        d = top - i
        bl3, em3 = _beta_operands(lp_blank, lp_emit, plane, d - 2, lane, in_u, t_len, U1)
        from_right = tl.gather(prev, right, 0)
        prev = _logaddexp(prev + bl1, from_right + em1)
        t = d - lane
        tl.store(beta + plane + t * U1 + lane, prev, mask=in_u & (t >= 0) & (t < t_len))
        bl1, em1, bl2, em2 = bl2, em2, bl3, em3
    # The loss comes from beta[0, 0]; alpha's end point is its check (they agree to rounding).
    ll_beta = tl.sum(tl.where(lane == 0, prev, 0.0), axis=0)
    tl.store(log_like + b, ll_beta)


@triton.jit
def _row_grad(
    logits, grad, targets, logit_lengths, target_lengths, lse, lp_blank, lp_emit, alpha, beta,
    log_like, scale, row_base, T, U1, V, UMAX, blank, clamp,
    FUSED: tl.constexpr, CLAMP: tl.constexpr, PACKED: tl.constexpr, SPLIT: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    u = row % U1
    t = (row // U1) % T
    b = row // (U1 * T)
    t_len = tl.load(logit_lengths + b)
    u_len = tl.load(target_lengths + b)
    in_lattice = (t < t_len) & (u <= u_len)
    if PACKED:
        lrow = tl.load(row_base + b) + t * (u_len + 1) + u
    else:
        lrow = row
    ll = tl.load(log_like + b)
    valid = in_lattice & (ll > float("-inf"))
    has_label = valid & (u < u_len)
    label = tl.load(targets + b * UMAX + u, mask=has_label, other=0).to(tl.int64)
    g_scale = tl.load(scale + b)
    a = tl.load(alpha + row, mask=valid, other=0.0)
    occ_log = a + tl.load(beta + row, mask=valid, other=0.0) - ll
    norm = tl.load(lse + row, mask=valid, other=0.0)
    # Where the path leaves this node by blank: the next frame, or the end after the last node.
    last_t = t == t_len - 1
    beta_next_t = tl.load(beta + row + U1, mask=valid & (t + 1 < t_len), other=0.0)
    beta_next_t = tl.where(last_t, tl.where(u == u_len, 0.0, float("-inf")), beta_next_t)
    coef_blank = tl.exp(a + tl.load(lp_blank + row, mask=valid, other=0.0) + beta_next_t - ll)
    beta_next_u = tl.load(beta + row + 1, mask=has_label, other=0.0)
    coef_label = tl.where(
        has_label,
        tl.exp(a + tl.load(lp_emit + row, mask=has_label, other=0.0) + beta_next_u - ll),
        0.0)
    offs = tl.arange(0, BLOCK_V)
    for v0 in range(0, V, BLOCK_V):
        v = v0 + offs
        in_v = v < V
        if FUSED:
            x = tl.load(logits + lrow * V + v, mask=in_v & valid, other=0.0).to(tl.float32)
            g = tl.exp(x - norm + occ_log)
        else:
            g = tl.zeros([BLOCK_V], tl.float32)
        g -= tl.where(v == blank, coef_blank, 0.0)
        g -= tl.where(v == label, coef_label, 0.0)
        if CLAMP:
            g = tl.minimum(tl.maximum(g, -clamp), clamp)
        g = tl.where(valid, g * g_scale, 0.0)
        if SPLIT:
            # float32 rows of 3V: [hi | lo | hi], TF32's part of g and the exact remainder,
            # the left operand of the 3xTF32 GEMMs that follow (dense rows only).
            hi = (g.to(tl.int32, bitcast=True) & -8192).to(tl.float32, bitcast=True)
            out = grad + lrow * 3 * V + v
            tl.store(out, hi, mask=in_v)
            tl.store(out + V, g - hi, mask=in_v)
            tl.store(out + 2 * V, hi, mask=in_v)
        else:
            # Packed rows exist only inside the lattice; dense padding rows get zeros.
            tl.store(grad + lrow * V + v, g.to(grad.dtype.element_ty),
                     mask=in_v & in_lattice if PACKED else in_v)


def row_stats(logits: torch.Tensor, targets: torch.Tensor, logit_lengths: torch.Tensor,
              target_lengths: torch.Tensor, blank: int, fused_log_softmax: bool,
              packed: tuple[torch.Tensor, int, int] | None = None):
    """(lse, log p(blank), log p(next label)), each (B, T, U+1) float32; -inf outside lengths.

    ``logits`` (B, T, U+1, V) contiguous, or with ``packed = (row_base, T, U+1)`` the packed
    (N, V) rows, utterance b's (t, u) at row_base[b] + t * (U_b + 1) + u; ``targets`` (B, U)
    int32/int64 contiguous; arguments already checked."""
    if packed is None:
        bsz, t_max, u1, v = logits.shape
        row_base = logit_lengths
    else:
        row_base, t_max, u1 = packed
        bsz, v = logit_lengths.shape[0], logits.shape[-1]
    stats = torch.empty((3, bsz, t_max, u1), dtype=torch.float32, device=logits.device)
    rows = bsz * t_max * u1
    if rows:
        _row_stats[(rows,)](
            logits, targets, logit_lengths, target_lengths, stats[0], stats[1], stats[2],
            row_base, t_max, u1, v, targets.shape[1], blank,
            FUSED=fused_log_softmax, PACKED=packed is not None, BLOCK_V=_block_v(v), num_warps=4)
    return stats[0], stats[1], stats[2]


def alpha_beta(lp_blank: torch.Tensor, lp_emit: torch.Tensor, logit_lengths: torch.Tensor,
               target_lengths: torch.Tensor):
    """alpha, beta (B, T, U+1) float32 and the log-likelihood of each utterance (B,) from beta
    (and (B,) from alpha's end point, for checks). Every length >= 1 (T) and >= 0 (U)."""
    bsz, t_max, u1 = lp_blank.shape
    alpha = torch.full_like(lp_blank, NEG_INF)
    beta = torch.full_like(lp_blank, NEG_INF)
    log_like = torch.empty((2, bsz), dtype=torch.float32, device=lp_blank.device)
    if bsz:
        block_u = triton.next_power_of_2(max(u1, 2))
        # One warp up to 256 lanes: the shift between lanes then stays within the warp's
        # shuffles, and the recursion's T + U sequential steps are latency-bound.
        _alpha_beta[(bsz, 2)](
            lp_blank, lp_emit, logit_lengths, target_lengths, alpha, beta, log_like,
            t_max, u1, BLOCK_U=block_u, num_warps=max(1, min(8, block_u // 256)))
    return alpha, beta, log_like[0], log_like[1]


def row_grad(logits: torch.Tensor, out: torch.Tensor, targets: torch.Tensor,
             logit_lengths: torch.Tensor, target_lengths: torch.Tensor, lse, lp_blank, lp_emit,
             alpha, beta, log_like, scale: torch.Tensor, blank: int, clamp: float,
             fused_log_softmax: bool, packed: tuple[torch.Tensor, int, int] | None = None,
             split: bool = False) -> torch.Tensor:
    """Write d(sum_b scale[b] * loss_b)/d logits into ``out`` (may be ``logits`` itself: each
    row is read before it is written, by the same program). ``packed`` as in :func:`row_stats`.
    With ``split`` (dense logits only), ``out`` is float32 (B*T*(U+1), 3V) and each row gets
    [hi | lo | hi]: the gradient's TF32 part and its exact remainder (see
    ``mlperf_fast.ops.transducer_joint_loss.stack_tf32``)."""
    if packed is None:
        bsz, t_max, u1, v = logits.shape
        row_base = logit_lengths
    else:
        row_base, t_max, u1 = packed
        bsz, v = logit_lengths.shape[0], logits.shape[-1]
    rows = bsz * t_max * u1
    if rows:
        _row_grad[(rows,)](
            logits, out, targets, logit_lengths, target_lengths, lse, lp_blank, lp_emit, alpha,
            beta, log_like, scale, row_base, t_max, u1, v, targets.shape[1], blank, float(clamp),
            FUSED=fused_log_softmax, CLAMP=clamp > 0, PACKED=packed is not None, SPLIT=split,
            BLOCK_V=_block_v(v), num_warps=4)
    return out
