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

from mlperf_fast.ops import _checks
from mlperf_fast.ops._library import NATIVE_KERNELS, register_op


def output_width(num_features: int, dim: int) -> int:
    """Width of the output for ``num_features`` embeddings of length ``dim``."""
    n = num_features + 1
    return dim + n * (n - 1) // 2


def _check(dense: torch.Tensor, embeddings) -> torch.Tensor:
    _checks.float_tensor(dense, "dense")
    if isinstance(embeddings, Sequence) and not isinstance(embeddings, torch.Tensor):
        if not embeddings or not all(isinstance(e, torch.Tensor) for e in embeddings):
            raise _checks.ArgumentTypeError("embeddings must be a [B, F, D] tensor or a non-empty "
                                            "list of [B, D] tensors")
        if any(e.shape != dense.shape for e in embeddings):
            raise _checks.ArgumentValueError(
                f"every embedding must have the shape of dense {tuple(dense.shape)}")
        for i, e in enumerate(embeddings):
            _checks.same_dtype(e, f"embeddings[{i}]", dense, "dense")
            _checks.same_device(e, f"embeddings[{i}]", dense, "dense")
        embeddings = torch.stack(list(embeddings), dim=1)
    _checks.float_tensor(embeddings, "embeddings")
    if dense.dim() != 2:
        raise _checks.ArgumentValueError(f"dense must be [B, D], got shape {tuple(dense.shape)}")
    if embeddings.dim() != 3 or embeddings.shape[0] != dense.shape[0] or \
            embeddings.shape[2] != dense.shape[1]:
        raise _checks.ArgumentValueError(
            f"embeddings must be [B, F, D] = [{dense.shape[0]}, F, {dense.shape[1]}], got shape "
            f"{tuple(embeddings.shape)}")
    _checks.same_dtype(embeddings, "embeddings", dense, "dense")
    _checks.same_device(embeddings, "embeddings", dense, "dense")
    return embeddings


def dot_interaction_torch(dense: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """The reference's formulation (bmm, lower-triangle gather, cat), accumulated in float32
    (float64 for float64 inputs); differentiable."""
    acc = _checks.acc_dtype(dense.dtype)
    T = torch.cat([dense.unsqueeze(1), embeddings], dim=1).to(acc)
    Z = torch.bmm(T, T.transpose(1, 2))
    li, lj = torch.tril_indices(T.shape[1], T.shape[1], offset=-1, device=dense.device)
    return torch.cat([dense, Z[:, li, lj].to(dense.dtype)], dim=1)


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
    chosen = DOT_INTERACTION.choose(dense.device, backend)
    if chosen == "torch":
        return dot_interaction_torch(dense, embeddings)
    return torch.ops.mlperf_fast.dot_interaction_forward(dense.contiguous(),
                                                         embeddings.contiguous())


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad_output):
    dense, embeddings = ctx.saved_tensors
    return torch.ops.mlperf_fast.dot_interaction_backward(grad_output.contiguous(), dense,
                                                          embeddings)


DOT_INTERACTION = register_op("dot_interaction", native="dot_interaction_forward",
                              torch_fn=dot_interaction_torch)
if "dot_interaction_forward" in NATIVE_KERNELS:
    torch.library.register_autograd("mlperf_fast::dot_interaction_forward", _backward,
                                    setup_context=_setup_context)
