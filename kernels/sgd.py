"""Triton SGD and LARS steps: the twins of csrc/sgd/sgd_cuda.cu (mlperf_fast.ops.sgd)."""
from __future__ import annotations

import triton
import triton.language as tl

from mlperf_fast.kernels.lamb import BLOCK, CHUNK_SIZE
from mlperf_fast.kernels.multi_tensor import (TRITON_DTYPES, chunk_table, list_pointer,
                                              step_prologue)
from mlperf_fast.kernels.multi_tensor import as_dtype as _as


@triton.jit
def _sgd_chunk(
    addresses, n_slots, numels, positions, block_slot, block_chunk, param_norms, grad_norms,
    lr_ptr, lr, found_inf, grad_scale, momentum, dampening, weight_decay, trust_coefficient,
    eps,
    HAS_LR: tl.constexpr, HAS_INF: tl.constexpr, HAS_SCALE: tl.constexpr,
    HAS_MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr, FIRST_RUN: tl.constexpr,
    LARS: tl.constexpr, ADAPT: tl.constexpr, MASTER: tl.constexpr, T: tl.constexpr,
    G: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr,
):
    slot, chunk, n, live, divisor, rate = step_prologue(
        block_slot, block_chunk, numels, lr_ptr, lr, found_inf, grad_scale, grad_scale, 0.0,
        HAS_LR, HAS_INF, HAS_SCALE, False, T)
    w_ptr = list_pointer(addresses, n_slots, slot, 0, T)
    g_ptr = list_pointer(addresses, n_slots, slot, 1, G)
    b_ptr = list_pointer(addresses, n_slots, slot, 2, T)
    model_ptr = list_pointer(addresses, n_slots, slot, 3, G)
    div = divisor.to(T)
    mom = _as(momentum, T)
    wd = _as(weight_decay, T)
    scaled = rate
    if LARS:
        position = tl.load(positions + slot)
        pn = tl.load(param_norms + position).to(T)
        gn = tl.load(grad_norms + position).to(T) / div
        trust = _as(trust_coefficient, T) * pn / (gn + wd * pn + _as(eps, T))
        if ADAPT:
            scaled = tl.where((pn > 0) & (gn > 0), rate * trust, rate)
    start = chunk * CHUNK
    for off in range(0, CHUNK, BLOCK):
        idx = start + off + tl.arange(0, BLOCK)
        mask = idx < n * live
        w = tl.load(w_ptr + idx, mask=mask, other=0.0)
        g = tl.load(g_ptr + idx, mask=mask, other=0.0).to(T) / div
        if LARS:
            buf = tl.load(b_ptr + idx, mask=mask, other=0.0)
            buf = mom * buf + scaled * (g + wd * w)
            tl.store(b_ptr + idx, buf, mask=mask)
            q = w - buf
        else:
            d = g + wd * w
            if HAS_MOMENTUM:
                if FIRST_RUN:
                    buf = d
                else:
                    buf = tl.load(b_ptr + idx, mask=mask, other=0.0)
                    buf = mom * buf + (1.0 - _as(dampening, T)) * d
                tl.store(b_ptr + idx, buf, mask=mask)
                if NESTEROV:
                    d = d + mom * buf
                else:
                    d = buf
            q = w - rate * d
        tl.store(w_ptr + idx, q, mask=mask)
        if MASTER:
            tl.store(model_ptr + idx, q.to(G), mask=mask)


def _sgd_family(params, grads, bufs, master_params, param_norms, grad_norms, lr_t, lr,
                momentum, dampening, weight_decay, nesterov, first_run, trust_coefficient, eps,
                lars, adapt, grad_scale, found_inf):
    if not params:
        return
    master = bool(master_params)
    weights = master_params if master else params
    lists = [weights, grads, bufs if bufs else params, params]
    table = chunk_table(lists, range(len(params)), CHUNK_SIZE)
    if table.blocks == 0:
        return
    dummy = table.numels
    _sgd_chunk[(table.blocks,)](
        table.addresses, table.addresses.shape[1], table.numels, table.positions,
        table.block_slot, table.block_chunk,
        dummy if param_norms is None else param_norms, dummy if grad_norms is None else grad_norms,
        dummy if lr_t is None else lr_t, float(lr), dummy if found_inf is None else found_inf,
        dummy if grad_scale is None else grad_scale, float(momentum), float(dampening),
        float(weight_decay), float(trust_coefficient), float(eps),
        HAS_LR=lr_t is not None, HAS_INF=found_inf is not None, HAS_SCALE=grad_scale is not None,
        HAS_MOMENTUM=bool(bufs), NESTEROV=bool(nesterov), FIRST_RUN=bool(first_run),
        LARS=lars, ADAPT=bool(adapt), MASTER=master, T=TRITON_DTYPES[weights[0].dtype],
        G=TRITON_DTYPES[params[0].dtype], CHUNK=CHUNK_SIZE, BLOCK=BLOCK,
    )


def sgd_step(params, grads, momentum_buffers, master_params, lr_t, lr, momentum, dampening,
             weight_decay, nesterov, first_run, grad_scale, found_inf) -> None:
    """Same contract as mlperf_fast.ops.sgd.sgd_step (arguments already checked)."""
    _sgd_family(params, grads, momentum_buffers, master_params, None, None, lr_t, lr, momentum,
                dampening, weight_decay, nesterov, first_run, 0.0, 0.0, False, False,
                grad_scale, found_inf)


def lars_step(params, grads, momentum_buffers, master_params, param_norms, grad_norms, lr_t, lr,
              momentum, weight_decay, trust_coefficient, eps, adapt, grad_scale,
              found_inf) -> None:
    """Same contract as mlperf_fast.ops.sgd.lars_step (arguments already checked)."""
    _sgd_family(params, grads, momentum_buffers, master_params, param_norms, grad_norms, lr_t,
                lr, momentum, 0.0, weight_decay, False, False, trust_coefficient, eps, True,
                adapt, grad_scale, found_inf)
