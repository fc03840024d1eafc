"""Triton LSTM cell: the gate nonlinearities and the state update after the GEMMs.

Forward, one program per (row, block of hidden units): reads the summed gate pre-activations
(B, 4H) in torch.nn.LSTM's order (input, forget, cell, output), and c_{t-1}; writes h_t, c_t and
the activated gates that the backward needs. Backward: from dh_t (the output's gradient plus the
recurrent one), dc_t, the saved gates and c_{t-1}, c_t, writes the gradient of the
pre-activations (B, 4H) and dc_{t-1}. All arithmetic in float32; c is kept in float32.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    # 2 * sigmoid(2x) - 1, stable for large |x| in float32.
    return 2.0 / (1.0 + tl.exp(-2.0 * x)) - 1.0


@triton.jit
def _cell_fwd(pre, pre2, c_prev, h_out, c_out, gates_out, H, pre_stride, pre2_stride,
              h_stride, HAS_PRE2: tl.constexpr, SAVE: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    j = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = j < H
    p = pre + row * pre_stride + j
    zi = tl.load(p, mask=m, other=0.0).to(tl.float32)
    zf = tl.load(p + H, mask=m, other=0.0).to(tl.float32)
    zg = tl.load(p + 2 * H, mask=m, other=0.0).to(tl.float32)
    zo = tl.load(p + 3 * H, mask=m, other=0.0).to(tl.float32)
    if HAS_PRE2:
        q = pre2 + row * pre2_stride + j
        zi += tl.load(q, mask=m, other=0.0).to(tl.float32)
        zf += tl.load(q + H, mask=m, other=0.0).to(tl.float32)
        zg += tl.load(q + 2 * H, mask=m, other=0.0).to(tl.float32)
        zo += tl.load(q + 3 * H, mask=m, other=0.0).to(tl.float32)
    i = _sigmoid(zi)
    f = _sigmoid(zf)
    g = _tanh(zg)
    o = _sigmoid(zo)
    c0 = tl.load(c_prev + row * H + j, mask=m, other=0.0).to(tl.float32)
    c = f * c0 + i * g
    h = o * _tanh(c)
    tl.store(c_out + row * H + j, c.to(c_out.dtype.element_ty), mask=m)
    tl.store(h_out + row * h_stride + j, h.to(h_out.dtype.element_ty), mask=m)
    if SAVE:
        s = gates_out + row * 4 * H + j
        ty = gates_out.dtype.element_ty
        tl.store(s, i.to(ty), mask=m)
        tl.store(s + H, f.to(ty), mask=m)
        tl.store(s + 2 * H, g.to(ty), mask=m)
        tl.store(s + 3 * H, o.to(ty), mask=m)


@triton.jit
def _cell_bwd(dh, dh_stride, dc, gates, c_prev, c, dpre, dc_prev, H, HAS_DC: tl.constexpr,
              BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    j = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = j < H
    s = gates + row * 4 * H + j
    i = tl.load(s, mask=m, other=0.0).to(tl.float32)
    f = tl.load(s + H, mask=m, other=0.0).to(tl.float32)
    g = tl.load(s + 2 * H, mask=m, other=0.0).to(tl.float32)
    o = tl.load(s + 3 * H, mask=m, other=0.0).to(tl.float32)
    ct = tl.load(c + row * H + j, mask=m, other=0.0).to(tl.float32)
    c0 = tl.load(c_prev + row * H + j, mask=m, other=0.0).to(tl.float32)
    gh = tl.load(dh + row * dh_stride + j, mask=m, other=0.0).to(tl.float32)
    tc = _tanh(ct)
    gc = gh * o * (1.0 - tc * tc)
    if HAS_DC:
        gc += tl.load(dc + row * H + j, mask=m, other=0.0).to(tl.float32)
    d = dpre + row * 4 * H + j
    ty = dpre.dtype.element_ty
    tl.store(d, (gc * g * i * (1.0 - i)).to(ty), mask=m)
    tl.store(d + H, (gc * c0 * f * (1.0 - f)).to(ty), mask=m)
    tl.store(d + 2 * H, (gc * i * (1.0 - g * g)).to(ty), mask=m)
    tl.store(d + 3 * H, (gh * tc * o * (1.0 - o)).to(ty), mask=m)
    tl.store(dc_prev + row * H + j, (gc * f).to(dc_prev.dtype.element_ty), mask=m)


def _block(h: int) -> int:
    return min(triton.next_power_of_2(max(h, 16)), 1024)


def cell_forward(pre: torch.Tensor, pre2: torch.Tensor | None, c_prev: torch.Tensor,
                 h_out: torch.Tensor, c_out: torch.Tensor, gates_out: torch.Tensor | None) -> None:
    """pre (and pre2, added to it): (B, 4H) with unit stride in the last dimension; c_prev, c_out
    (B, H) contiguous; h_out (B, H) unit stride in the last dimension; gates_out (B, 4H)
    contiguous or None (inference: nothing saved)."""
    bsz, h4 = pre.shape
    hid = h4 // 4
    if bsz == 0 or hid == 0:
        return
    block = _block(hid)
    grid = (bsz, triton.cdiv(hid, block))
    _cell_fwd[grid](pre, pre if pre2 is None else pre2, c_prev, h_out, c_out,
                    c_out if gates_out is None else gates_out, hid, pre.stride(0),
                    0 if pre2 is None else pre2.stride(0), h_out.stride(0),
                    HAS_PRE2=pre2 is not None, SAVE=gates_out is not None, BLOCK=block,
                    num_warps=4)


def cell_backward(dh: torch.Tensor, dc: torch.Tensor | None, gates: torch.Tensor,
                  c_prev: torch.Tensor, c: torch.Tensor, dpre: torch.Tensor,
                  dc_prev: torch.Tensor) -> None:
    bsz, hid = c.shape
    if bsz == 0 or hid == 0:
        return
    block = _block(hid)
    grid = (bsz, triton.cdiv(hid, block))
    _cell_bwd[grid](dh, dh.stride(0), c if dc is None else dc, gates, c_prev, c, dpre, dc_prev,
                    hid, HAS_DC=dc is not None, BLOCK=block, num_warps=4)
