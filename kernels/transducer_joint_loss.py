"""Float32 GEMMs of the fused joint + loss on tensor cores, to float32 accuracy ("3xTF32").

cuBLAS runs a float32 GEMM (with TF32 off, torch's default) on the CUDA cores at ~50 TFLOP/s on
an H100; the joint's three GEMMs are then most of a float32 training step. Splitting each float32
operand into a TF32 high part and a TF32 remainder and summing three TF32 products
(hi*hi + hi*lo + lo*hi) gives float32-level error (~1e-6 relative, like cuBLAS float32) from the
tensor cores. Triton does the split inside ``tl.dot(..., input_precision="tf32x3")``.

One kernel with arbitrary strides serves the three shapes: logits = z @ W^T (+ bias),
dz = dlogits @ W, and dW = dlogits^T @ z, the last split along its long K (rows) dimension
into float32 partials, since its M x N (V x H) is only a few dozen tiles.

``stack_tf32`` lays an operand out for cuBLAS's TF32 GEMMs (the "tf32x3" path): one pass that
reads each element once and writes its parts side by side, where torch's ops take five to seven.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _mm(a, b, c, bias, M, N, K, k_per_split, sam, sak, sbk, sbn, scm, scn, scs,
        HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    pid = tl.program_id(0)
    split = tl.program_id(1)
    grid_m = tl.cdiv(M, BLOCK_M)
    grid_n = tl.cdiv(N, BLOCK_N)
    # Grouped order: GROUP_M row-tiles share each column-tile of b while it sits in L2.
    per_group = GROUP_M * grid_n
    first_m = (pid // per_group) * GROUP_M
    size_m = tl.minimum(grid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % size_m
    pid_n = (pid % per_group) // size_m
    rm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    rn = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    k_begin = split * k_per_split
    k_end = tl.minimum(K, k_begin + k_per_split)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(k_begin, k_end, BLOCK_K):
        rk = (k0 + tl.arange(0, BLOCK_K)).to(tl.int64)
        mk = rk < k_end
        x = tl.load(a + rm[:, None] * sam + rk[None, :] * sak,
                    mask=(rm[:, None] < M) & mk[None, :], other=0.0)
        y = tl.load(b + rk[:, None] * sbk + rn[None, :] * sbn,
                    mask=mk[:, None] & (rn[None, :] < N), other=0.0)
        acc = tl.dot(x, y, acc, input_precision=PRECISION)
    if HAS_BIAS:
        # Added once, by the first of the K splits.
        acc += tl.load(bias + rn, mask=(rn < N) & (split == 0), other=0.0).to(tl.float32)[None, :]
    ptr = c + split * scs + rm[:, None] * scm + rn[None, :] * scn
    tl.store(ptr, acc.to(c.dtype.element_ty), mask=(rm[:, None] < M) & (rn[None, :] < N))


def matmul(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None,
           precision: str = "tf32x3", splits: int = 1) -> torch.Tensor:
    """``a @ b (+ bias)`` for 2-D float32 ``a`` (M, K) and ``b`` (K, N) of any strides; with
    ``splits`` > 1 the K range is cut into that many parts whose float32 partial products are
    summed at the end."""
    m, k = a.shape
    n = b.shape[1]
    bm, bn, bk = 128, 128, 32
    splits = max(1, min(splits, triton.cdiv(k, bk)))
    k_per_split = triton.cdiv(triton.cdiv(k, splits), bk) * bk
    splits = triton.cdiv(k, k_per_split) if k else 1
    out = torch.empty((splits, m, n), dtype=torch.float32, device=a.device)
    if m and n:
        if k == 0:
            out.zero_()
            if bias is not None:
                out += bias
        else:
            grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn), splits)
            _mm[grid](a, b, out, a if bias is None else bias, m, n, k, k_per_split,
                      a.stride(0), a.stride(1), b.stride(0), b.stride(1), out.stride(1),
                      out.stride(2), out.stride(0), HAS_BIAS=bias is not None,
                      PRECISION=precision, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8,
                      num_warps=8, num_stages=3)
    return out[0] if splits == 1 else out.sum(0)


@triton.jit
def _stack_tf32(x, out, n, cols, LO_AT: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    v = tl.load(x + offs, mask=m)
    h = (v.to(tl.int32, bitcast=True) & -8192).to(tl.float32, bitcast=True)
    row = offs // cols
    dst = out + offs + 2 * row * cols  # row r's three blocks start at 3 * r * cols
    for k in tl.static_range(3):
        tl.store(dst + k * cols, v - h if k == LO_AT else h, mask=m)


def stack_tf32(x: torch.Tensor, lo_at: int) -> torch.Tensor:
    """Contiguous float32 (R, C) ``x`` as (R, 3C): blocks of C columns holding TF32's part of
    ``x`` (sign, exponent, 10 mantissa bits), except block ``lo_at`` (1 or 2), which holds the
    exact remainder. One pass that reads each element once."""
    rows, cols = x.shape
    out = torch.empty((rows, 3 * cols), dtype=x.dtype, device=x.device)
    n = x.numel()
    if n:
        block = 4096
        _stack_tf32[(triton.cdiv(n, block),)](x, out, n, cols, LO_AT=lo_at, BLOCK=block,
                                              num_warps=8)
    return out
