"""Triton transducer joint: relu(f[b, t] + g[b, u]) written once, and its backward reduced in
place of three PyTorch passes (mask, sum over u, sum over t).

Rows of the joint are addressed through per-utterance tables so that one kernel serves both
layouts: dense (row = (b * T + t) * U1 + u, every (t, u) of the padded grid) and packed (row =
offset[b] + t * (U_b + 1) + u, only t < T_b and u <= U_b, as in apex's packed joint).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _joint_fwd(f, g, out, row_base, u_stride, t_lim, u_lim, f_bstride, g_bstride, H, T, U1,
               BLOCK_H: tl.constexpr):
    pid = tl.program_id(0)
    b = (pid // T).to(tl.int64)
    t = pid % T
    if t >= tl.load(t_lim + b):
        return
    n_u = tl.load(u_lim + b)
    base = tl.load(row_base + b) + t * tl.load(u_stride + b)
    hh = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    m = hh < H
    fv = tl.load(f + b * f_bstride + t * H + hh, mask=m, other=0.0).to(tl.float32)
    for u in range(0, n_u):
        gv = tl.load(g + b * g_bstride + u * H + hh, mask=m, other=0.0).to(tl.float32)
        z = tl.maximum(fv + gv, 0.0)
        tl.store(out + (base + u) * H + hh, z.to(out.dtype.element_ty), mask=m)


@triton.jit
def _joint_bwd_f(dz, z, df, row_base, u_stride, t_lim, u_lim, df_bstride, H, T, scale,
                 BLOCK_H: tl.constexpr):
    # df[b, t] = sum_u dz[b, t, u] * (z > 0) * scale
    pid = tl.program_id(0)
    b = (pid // T).to(tl.int64)
    t = pid % T
    valid = t < tl.load(t_lim + b)
    n_u = tl.where(valid, tl.load(u_lim + b), 0)
    base = tl.load(row_base + b) + t * tl.load(u_stride + b)
    hh = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    m = hh < H
    acc = tl.zeros([BLOCK_H], tl.float32)
    for u in range(0, n_u):
        r = (base + u) * H + hh
        d = tl.load(dz + r, mask=m, other=0.0).to(tl.float32)
        zz = tl.load(z + r, mask=m, other=0.0).to(tl.float32)
        acc += tl.where(zz > 0, d, 0.0)
    tl.store(df + b * df_bstride + t * H + hh, (acc * scale).to(df.dtype.element_ty), mask=m)


@triton.jit
def _joint_bwd_g(dz, z, dg, row_base, u_stride, t_lim, u_lim, dg_bstride, H, U1, scale,
                 BLOCK_H: tl.constexpr):
    # dg[b, u] = sum_t dz[b, t, u] * (z > 0) * scale
    pid = tl.program_id(0)
    b = (pid // U1).to(tl.int64)
    u = pid % U1
    valid = u < tl.load(u_lim + b)
    n_t = tl.where(valid, tl.load(t_lim + b), 0)
    base = tl.load(row_base + b) + u
    stride = tl.load(u_stride + b)
    hh = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    m = hh < H
    acc = tl.zeros([BLOCK_H], tl.float32)
    for t in range(0, n_t):
        r = (base + t * stride) * H + hh
        d = tl.load(dz + r, mask=m, other=0.0).to(tl.float32)
        zz = tl.load(z + r, mask=m, other=0.0).to(tl.float32)
        acc += tl.where(zz > 0, d, 0.0)
    tl.store(dg + b * dg_bstride + u * H + hh, (acc * scale).to(dg.dtype.element_ty), mask=m)


def _block_h(h: int) -> int:
    # 128 columns per program (one warp, 16-byte accesses): H = 512 gives 4 programs per row,
    # enough programs in flight for the sequential loops over u or t to keep HBM busy.
    return min(triton.next_power_of_2(max(h, 16)), 128)


def dense_tables(n: int, t_max: int, u1: int, device) -> tuple[torch.Tensor, ...]:
    """Row tables of the dense (n, T, U1) grid, every row valid."""
    row_base = torch.arange(n, device=device, dtype=torch.int64) * (t_max * u1)
    u_stride = torch.full((n,), u1, device=device, dtype=torch.int64)
    t_lim = torch.full((n,), t_max, device=device, dtype=torch.int64)
    u_lim = torch.full((n,), u1, device=device, dtype=torch.int64)
    return row_base, u_stride, t_lim, u_lim


def joint_forward(f: torch.Tensor, g: torch.Tensor, out: torch.Tensor, tables, t_max: int,
                  u1: int) -> torch.Tensor:
    """out[row(b, t, u)] = relu(f[b, t] + g[b, u]) for the rows of ``tables``. f (n, >=T, H) and
    g (n, >=U1, H) with unit stride in their last two dimensions' layout (t * H + h)."""
    n, _, hid = f.shape
    if n == 0 or hid == 0:
        return out
    block = _block_h(hid)
    _joint_fwd[(n * t_max, triton.cdiv(hid, block))](
        f, g, out, *tables, f.stride(0), g.stride(0), hid, t_max, u1, BLOCK_H=block, num_warps=1)
    return out


def joint_backward(dz: torch.Tensor, z: torch.Tensor, df: torch.Tensor, dg: torch.Tensor,
                   tables, t_max: int, u1: int, scale: float) -> None:
    """df (n, >=T, H) and dg (n, >=U1, H) views (unit stride over t * H + h) receive the sums
    over u and over t of dz masked by z > 0, times ``scale``."""
    n, _, hid = df.shape
    if n == 0 or hid == 0:
        return
    block = _block_h(hid)
    _joint_bwd_f[(n * t_max, triton.cdiv(hid, block))](
        dz, z, df, *tables, df.stride(0), hid, t_max, float(scale), BLOCK_H=block, num_warps=1)
    _joint_bwd_g[(n * u1, triton.cdiv(hid, block))](
        dz, z, dg, *tables, dg.stride(0), hid, u1, float(scale), BLOCK_H=block, num_warps=1)
