"""Triton LAMB and Adam / AdamW steps: the twins of csrc/lamb/lamb_cuda.cu, same lists and
semantics (mlperf_fast.ops.lamb).

LAMB: pass 1, one program per chunk, updates the moments and leaves the chunk's sums of p^2 and
update^2; the per-tensor sums come from multi_tensor_l2norm's second-stage kernel (chunk order,
deterministic); pass 2 recomputes the update from p, m, v and applies lr * trust ratio.
Adam: pass 1 applies the update directly.

Host floats reach Triton as float32, so with float64 params the hyperparameters carry float32
precision (the tests allow for it).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from mlperf_fast.kernels.multi_tensor import (TRITON_DTYPES, chunk_counts, chunk_table,
                                              list_pointer, step_prologue)
from mlperf_fast.kernels.multi_tensor import as_dtype as _as
from mlperf_fast.kernels.multi_tensor_l2norm import _tensor_squares

CHUNK_SIZE = 8192  # kOptimChunk in csrc/common/optim_args.h
BLOCK = 1024


@triton.jit
def _pow_int(base, e):
    """base ** e for a whole e >= 0 by squaring: exact to a few ulps of base's dtype."""
    result = base * 0 + 1
    b = base
    while e > 0:
        if e % 2 == 1:
            result = result * b
        b = b * b
        e = e // 2
    return result


@triton.jit
def _coeffs(step_ptr, beta1, beta2, BIAS_CORRECTION: tl.constexpr, T: tl.constexpr):
    bc1 = tl.full([], 1.0, T)
    bc2 = tl.full([], 1.0, T)
    if BIAS_CORRECTION:
        step = tl.load(step_ptr).to(tl.int32)
        bc1 = (1.0 - _pow_int(_as(beta1, tl.float64), step)).to(T)
        bc2 = (1.0 - _pow_int(_as(beta2, tl.float64), step)).to(T)
    return bc1, bc2


@triton.jit
def _adam_pointers(addresses, n_slots, slot, T: tl.constexpr, G: tl.constexpr):
    """The slot's weights, exp_avg, exp_avg_sq, step and model-copy pointers: lists 0, 2, 3, 4
    and 5 of _adam_family's table (list 1, the grads, only the first pass reads)."""
    return (list_pointer(addresses, n_slots, slot, 0, T),
            list_pointer(addresses, n_slots, slot, 2, T),
            list_pointer(addresses, n_slots, slot, 3, T),
            list_pointer(addresses, n_slots, slot, 4, tl.float32),
            list_pointer(addresses, n_slots, slot, 5, G))


@triton.jit
def _adam_chunk(
    addresses, n_slots, numels, first_chunk, block_slot, block_chunk, partial_p, partial_u,
    lr_ptr, lr, found_inf, grad_scale, grad_norm, max_grad_norm,
    beta1, beta2, beta3, eps, weight_decay,
    HAS_LR: tl.constexpr, HAS_INF: tl.constexpr, HAS_SCALE: tl.constexpr,
    HAS_NORM: tl.constexpr, BIAS_CORRECTION: tl.constexpr, ADAM_W: tl.constexpr,
    LAMB: tl.constexpr, MASTER: tl.constexpr, T: tl.constexpr, G: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK: tl.constexpr,
):
    slot, chunk, n, live, divisor, rate = step_prologue(
        block_slot, block_chunk, numels, lr_ptr, lr, found_inf, grad_scale, grad_norm,
        max_grad_norm, HAS_LR, HAS_INF, HAS_SCALE, HAS_NORM, T)
    w_ptr, m_ptr, v_ptr, step_ptr, model_ptr = _adam_pointers(addresses, n_slots, slot, T, G)
    g_ptr = list_pointer(addresses, n_slots, slot, 1, G)
    div = divisor.to(T)
    bc1, bc2 = _coeffs(step_ptr, beta1, beta2, BIAS_CORRECTION, T)
    b1 = _as(beta1, T)
    b2 = _as(beta2, T)
    b3 = _as(beta3, T)
    wd = _as(weight_decay, T)
    acc_p = tl.zeros([BLOCK], T)
    acc_u = tl.zeros([BLOCK], T)
    start = chunk * CHUNK
    for off in range(0, CHUNK, BLOCK):
        idx = start + off + tl.arange(0, BLOCK)
        mask = idx < n * live
        w = tl.load(w_ptr + idx, mask=mask, other=0.0)
        g = tl.load(g_ptr + idx, mask=mask, other=0.0).to(T) / div
        m = tl.load(m_ptr + idx, mask=mask, other=0.0)
        v = tl.load(v_ptr + idx, mask=mask, other=0.0)
        if not ADAM_W:
            g = g + wd * w
        m = b1 * m + b3 * g
        v = b2 * v + (1.0 - b2) * g * g
        u = (m / bc1) / (tl.sqrt(v / bc2) + _as(eps, T))
        if ADAM_W:
            u = u + wd * w
        tl.store(m_ptr + idx, m, mask=mask)
        tl.store(v_ptr + idx, v, mask=mask)
        if LAMB:
            acc_p += w * w
            acc_u += u * u
        else:
            q = w - rate * u
            tl.store(w_ptr + idx, q, mask=mask)
            if MASTER:
                tl.store(model_ptr + idx, q.to(G), mask=mask)
    if LAMB:
        at = tl.load(first_chunk + slot) + chunk
        tl.store(partial_p + at, tl.sum(acc_p, axis=0))
        tl.store(partial_u + at, tl.sum(acc_u, axis=0))


@triton.jit
def _lamb_apply(
    addresses, n_slots, numels, positions, block_slot, block_chunk, squares_p, squares_u,
    lr_ptr, lr, found_inf, grad_scale, grad_norm, max_grad_norm,
    beta1, beta2, eps, weight_decay,
    HAS_LR: tl.constexpr, HAS_INF: tl.constexpr, HAS_SCALE: tl.constexpr,
    HAS_NORM: tl.constexpr, BIAS_CORRECTION: tl.constexpr, ADAM_W: tl.constexpr,
    ADAPT: tl.constexpr, MASTER: tl.constexpr, T: tl.constexpr, G: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK: tl.constexpr,
):
    slot, chunk, n, live, divisor, rate = step_prologue(
        block_slot, block_chunk, numels, lr_ptr, lr, found_inf, grad_scale, grad_norm,
        max_grad_norm, HAS_LR, HAS_INF, HAS_SCALE, HAS_NORM, T)
    w_ptr, m_ptr, v_ptr, step_ptr, model_ptr = _adam_pointers(addresses, n_slots, slot, T, G)
    bc1, bc2 = _coeffs(step_ptr, beta1, beta2, BIAS_CORRECTION, T)
    wd = _as(weight_decay, T)
    position = tl.load(positions + slot)
    sp = tl.load(squares_p + position)
    su = tl.load(squares_u + position)
    ratio = tl.full([], 1.0, T)
    if ADAPT:
        ratio = tl.where((sp > 0) & (su > 0), tl.sqrt(sp) / tl.sqrt(su), ratio)
    scale = rate * ratio
    start = chunk * CHUNK
    for off in range(0, CHUNK, BLOCK):
        idx = start + off + tl.arange(0, BLOCK)
        mask = idx < n * live
        w = tl.load(w_ptr + idx, mask=mask, other=0.0)
        m = tl.load(m_ptr + idx, mask=mask, other=0.0)
        v = tl.load(v_ptr + idx, mask=mask, other=0.0)
        u = (m / bc1) / (tl.sqrt(v / bc2) + _as(eps, T))
        if ADAM_W:
            u = u + wd * w
        q = w - scale * u
        tl.store(w_ptr + idx, q, mask=mask)
        if MASTER:
            tl.store(model_ptr + idx, q.to(G), mask=mask)


def _scalar_args(lr_t, lr, found_inf, grad_scale, grad_norm, ref):
    dummy = ref  # any tensor on the device stands in for an absent pointer
    return dict(
        ptrs=(dummy if lr_t is None else lr_t, float(lr),
              dummy if found_inf is None else found_inf,
              dummy if grad_scale is None else grad_scale,
              dummy if grad_norm is None else grad_norm),
        flags=dict(HAS_LR=lr_t is not None, HAS_INF=found_inf is not None,
                   HAS_SCALE=grad_scale is not None, HAS_NORM=grad_norm is not None),
    )


def _adam_family(params, grads, exp_avgs, exp_avg_sqs, master_params, steps, lr_t, lr, beta1,
                 beta2, beta3, eps, weight_decay, bias_correction, adam_w_mode, grad_norm,
                 max_grad_norm, grad_scale, found_inf, lamb, adapt):
    if not params:
        return
    master = bool(master_params)
    weights = master_params if master else params
    lists = [weights, grads, exp_avgs, exp_avg_sqs, steps, params]
    T, G = TRITON_DTYPES[weights[0].dtype], TRITON_DTYPES[params[0].dtype]
    table = chunk_table(lists, range(len(params)), CHUNK_SIZE)
    if table.blocks == 0:
        return
    s = _scalar_args(lr_t, lr, found_inf, grad_scale, grad_norm, table.numels)
    lr_p, lr_f, inf_p, scale_p, norm_p = s["ptrs"]
    n_slots = table.addresses.shape[1]
    common = dict(BIAS_CORRECTION=bool(bias_correction), ADAM_W=bool(adam_w_mode), MASTER=master,
                  T=T, G=G, CHUNK=CHUNK_SIZE, BLOCK=BLOCK, **s["flags"])
    device = params[0].device
    total = chunk_counts(params, CHUNK_SIZE)[-1]
    # Adam never writes it; one element keeps a valid pointer for the launcher's checks.
    partial = torch.empty((2, total if lamb else 1), dtype=weights[0].dtype, device=device)
    _adam_chunk[(table.blocks,)](
        table.addresses, n_slots, table.numels, table.first_chunk, table.block_slot,
        table.block_chunk, partial[0], partial[1], lr_p, lr_f, inf_p, scale_p, norm_p,
        float(max_grad_norm), float(beta1), float(beta2), float(beta3), float(eps),
        float(weight_decay), LAMB=lamb, **common,
    )
    if not lamb:
        return
    squares = torch.zeros((2, len(params)), dtype=weights[0].dtype, device=device)
    per_tensor = chunk_table([params], range(len(params)), CHUNK_SIZE, per_tensor=True)
    for k in range(2):
        _tensor_squares[(per_tensor.blocks,)](
            per_tensor.numels, per_tensor.positions, per_tensor.first_chunk, partial[k],
            squares[k], CHUNK=CHUNK_SIZE, BLOCK=256, ACC=T,
        )
    _lamb_apply[(table.blocks,)](
        table.addresses, n_slots, table.numels, table.positions, table.block_slot,
        table.block_chunk, squares[0], squares[1], lr_p, lr_f, inf_p, scale_p, norm_p,
        float(max_grad_norm), float(beta1), float(beta2), float(eps), float(weight_decay),
        ADAPT=bool(adapt), **common,
    )


def lamb_step(params, grads, exp_avgs, exp_avg_sqs, master_params, steps, lr_t, lr, beta1,
              beta2, eps, weight_decay, bias_correction, adam_w_mode, grad_averaging, use_nvlamb,
              grad_norm, max_grad_norm, grad_scale, found_inf, batch_elems=0) -> None:
    """Same contract as mlperf_fast.ops.lamb.lamb_step (arguments already checked)."""
    _adam_family(params, grads, exp_avgs, exp_avg_sqs, master_params, steps, lr_t, lr, beta1,
                 beta2, 1 - beta1 if grad_averaging else 1.0, eps, weight_decay,
                 bias_correction, adam_w_mode, grad_norm, max_grad_norm, grad_scale, found_inf,
                 True, use_nvlamb or weight_decay != 0)


def adam_step(params, grads, exp_avgs, exp_avg_sqs, master_params, steps, lr_t, lr, beta1,
              beta2, eps, weight_decay, bias_correction, adam_w_mode, grad_scale,
              found_inf) -> None:
    """Same contract as mlperf_fast.ops.lamb.adam_step (arguments already checked)."""
    _adam_family(params, grads, exp_avgs, exp_avg_sqs, master_params, steps, lr_t, lr, beta1,
                 beta2, 1 - beta1, eps, weight_decay, bias_correction, adam_w_mode, None, 0.0,
                 grad_scale, found_inf, False, False)
