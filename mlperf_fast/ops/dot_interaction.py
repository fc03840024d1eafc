"""DLRM's dot interaction: the pairwise dot products of the dense feature vector and the
embedding vectors, concatenated after the dense vector.

With ``T = [dense, embeddings[:, 0], ..., embeddings[:, F - 1]]`` (``F + 1`` vectors of length
``D`` per sample), the output row is ``[dense, T_i . T_j for i > j]``, pairs in row-major order of
the strictly lower triangle: the MLCommons DLRM reference's ``bmm``, ``Z[:, li, lj]`` gather and
``cat`` (``arch_interaction_itself=False``), in one kernel each way.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from mlperf_fast.ops._library import choose_backend, load_extension

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def output_width(num_features: int, dim: int) -> int:
    """Width of the output for ``num_features`` embeddings of length ``dim``."""
    n = num_features + 1
    return dim + n * (n - 1) // 2


def _check(dense: torch.Tensor, embeddings) -> torch.Tensor:
    if not isinstance(dense, torch.Tensor):
        raise TypeError(f"dense must be a tensor, got {type(dense).__name__}")
    if isinstance(embeddings, Sequence) and not isinstance(embeddings, torch.Tensor):
        if not embeddings or not all(isinstance(e, torch.Tensor) for e in embeddings):
            raise TypeError("embeddings must be a [B, F, D] tensor or a non-empty list of [B, D] "
                            "tensors")
        if any(e.shape != dense.shape for e in embeddings):
            raise ValueError(f"every embedding must have the shape of dense {tuple(dense.shape)}")
        embeddings = torch.stack(list(embeddings), dim=1)
    if not isinstance(embeddings, torch.Tensor):
        raise TypeError(f"embeddings must be a tensor, got {type(embeddings).__name__}")
    if dense.dim() != 2:
        raise ValueError(f"dense must be [B, D], got shape {tuple(dense.shape)}")
    if embeddings.dim() != 3 or embeddings.shape[0] != dense.shape[0] or \
            embeddings.shape[2] != dense.shape[1]:
        raise ValueError(f"embeddings must be [B, F, D] = [{dense.shape[0]}, F, {dense.shape[1]}], "
                         f"got shape {tuple(embeddings.shape)}")
    if dense.dtype not in FLOAT_DTYPES:
        raise TypeError(f"dense has dtype {dense.dtype}; expected a floating dtype")
    if embeddings.dtype != dense.dtype:
        raise TypeError(f"embeddings has dtype {embeddings.dtype} but dense has {dense.dtype}")
    if embeddings.device != dense.device:
        raise ValueError(f"embeddings is on {embeddings.device} but dense is on {dense.device}")
    for name, t in (("dense", dense), ("embeddings", embeddings)):
        if t.layout != torch.strided:
            raise ValueError(f"{name} is a {t.layout} tensor; only dense tensors are supported")
    return embeddings


def dot_interaction_torch(dense: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """The reference's formulation (bmm, lower-triangle gather, cat), accumulated in float32
    (float64 for float64 inputs); differentiable."""
    acc = torch.float64 if dense.dtype == torch.float64 else torch.float32
    B, D = dense.shape
    T = torch.cat([dense.unsqueeze(1), embeddings], dim=1).to(acc)
    Z = torch.bmm(T, T.transpose(1, 2))
    li, lj = torch.tril_indices(T.shape[1], T.shape[1], offset=-1, device=dense.device)
    return torch.cat([dense, Z[:, li, lj].to(dense.dtype)], dim=1)


class _DotInteraction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dense, embeddings):
        ctx.save_for_backward(dense, embeddings)
        return torch.ops.mlperf_fast.dot_interaction_forward(dense, embeddings)

    @staticmethod
    def backward(ctx, grad_output):
        dense, embeddings = ctx.saved_tensors
        d_dense, d_emb = torch.ops.mlperf_fast.dot_interaction_backward(
            grad_output.contiguous(), dense, embeddings)
        return d_dense, d_emb


def dot_interaction(dense: torch.Tensor, embeddings: torch.Tensor | Sequence[torch.Tensor], *,
                    backend: str = "auto") -> torch.Tensor:
    """DLRM's dot interaction.

    Args:
        dense: ``[B, D]``, the bottom MLP's output; float32, bfloat16, float16 or float64.
        embeddings: ``[B, F, D]`` of the same dtype (e.g. a table-batched embedding's
            ``[B, F * D]`` output viewed as ``[B, F, D]``), or a list of ``F`` ``[B, D]`` tensors.
        backend: "auto", "native" (C++/CUDA) or "torch".

    Returns:
        ``[B, D + (F + 1) F / 2]`` in the inputs' dtype: ``dense`` then the dot products of the
        pairs (i, j), i > j, row-major, of ``[dense, embeddings...]``, accumulated in float32.
        Differentiable in both inputs.
    """
    embeddings = _check(dense, embeddings)
    chosen = choose_backend("dot_interaction_forward", dense.device, backend)
    if chosen == "triton":
        raise ValueError("backend 'triton': dot_interaction has no Triton kernel; use 'native' or "
                         "'torch'")
    if chosen == "torch":
        return dot_interaction_torch(dense, embeddings)
    return _DotInteraction.apply(dense.contiguous(), embeddings.contiguous())


if load_extension():

    @torch.library.register_fake("mlperf_fast::dot_interaction_forward")
    def _(dense, embeddings):
        return dense.new_empty((dense.shape[0], output_width(embeddings.shape[1], dense.shape[1])))

    @torch.library.register_fake("mlperf_fast::dot_interaction_backward")
    def _(grad_output, dense, embeddings):
        return torch.empty_like(dense), torch.empty_like(embeddings)
