"""The optimized DLRM: every table in one TableBatchedEmbeddingBag whose backward applies the
exact sparse SGD update in place (no sparse gradient is ever built), the dot interaction in one
kernel each way (mlperf_fast.ops.dot_interaction), and hidden MLP layers whose bias and ReLU run
in the GEMM's epilogue (``torch._addmm_activation``: cuBLASLt's RELU_BIAS epilogue on the GPU).
It computes what reference.py computes (the parity tests hold it to that on the same weights),
except that it returns logits and is trained with BCE on logits (the same loss, without the
sigmoid's rounding at the extremes).
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mlperf_fast.nn import TableBatchedEmbeddingBag
from mlperf_fast.ops.dot_interaction import dot_interaction
from mlperf_fast.workloads.dlrm.config import NUM_DENSE
from mlperf_fast.workloads.dlrm.reference import (
    ReferenceDLRM,
    init_linear_,
    init_table_,
    interaction_width,
)


class _LinearReLU(torch.autograd.Function):
    """relu(x @ W^T + b) with the bias and ReLU in the GEMM's epilogue; the backward masks the
    gradient by the saved output (y > 0 exactly where the ReLU passed)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        y = torch._addmm_activation(bias, x, weight.t())
        ctx.save_for_backward(x, weight, y)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, y = ctx.saved_tensors
        g = grad_y.masked_fill(y <= 0, 0)
        return g @ weight, g.t() @ x, g.sum(0)


def linear_relu(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """``relu(layer(x))`` for 2-D ``x``, fused."""
    return _LinearReLU.apply(x, layer.weight, layer.bias)


class MLP(nn.Module):
    """Linear layers of ``widths``, each followed by ReLU except (with ``logits=True``) the last."""

    def __init__(self, widths: Sequence[int], logits: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(n, m) for n, m in itertools.pairwise(widths))
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x) if (i == last and self.logits) else linear_relu(x, layer)
        return x


class DLRM(nn.Module):
    """``forward(dense [B, 13] float, sparse [B, T] int64)`` -> logits [B].

    ``fused_sgd``: the tables are updated inside the backward by SGD at ``self.embedding.lr``
    (set it with the dense optimizer's rate before each step); without it the tables get a dense
    gradient like any parameter (for tests and other optimizers).
    """

    def __init__(self, table_sizes: Sequence[int], dim: int, bottom: Sequence[int],
                 top: Sequence[int], *, fused_sgd: bool = True, lr: float = 0.0,
                 generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        if bottom[-1] != dim:
            raise ValueError(f"the bottom MLP must end at the embedding dim {dim}, got {bottom}")
        self.num_tables, self.dim = len(table_sizes), dim
        self.embedding = TableBatchedEmbeddingBag(
            table_sizes, dim, "sum", optimizer="sgd" if fused_sgd else None, lr=lr,
            check_indices=False, dtype=dtype, device=device)
        self.bottom = MLP([NUM_DENSE, *bottom], logits=False).to(device=device, dtype=dtype)
        self.top = MLP([interaction_width(len(table_sizes), dim), *top], logits=True).to(
            device=device, dtype=dtype)
        for table in self.embedding.split_embedding_weights():
            init_table_(table, generator)
        for layer in [*self.bottom.layers, *self.top.layers]:
            init_linear_(layer, generator)
        self._offsets: dict[tuple[int, torch.device], torch.Tensor] = {}

    def dense_parameters(self) -> list[nn.Parameter]:
        """Every parameter but the tables (those the dense optimizer steps)."""
        return [*self.bottom.parameters(), *self.top.parameters()]

    def _bag_offsets(self, batch: int, device: torch.device) -> torch.Tensor:
        key = (batch, device)
        if key not in self._offsets:  # one id per bag: offsets 0, 1, ..., T * B
            self._offsets[key] = torch.arange(self.num_tables * batch + 1, device=device)
        return self._offsets[key]

    def embed(self, sparse: torch.Tensor) -> torch.Tensor:
        """The pooled embeddings ``[B, T, D]`` of ids ``[B, T]``."""
        B = sparse.shape[0]
        indices = sparse.t().reshape(-1)  # table-major, as the table-batched layout wants
        emb = self.embedding(indices, self._bag_offsets(B, sparse.device))
        return emb.view(B, self.num_tables, self.dim)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        x = self.bottom(dense)
        z = dot_interaction(x, self.embed(sparse))
        return self.top(z).squeeze(1)

    @torch.no_grad()
    def load_reference(self, ref: ReferenceDLRM) -> None:
        """Copy the weights of a reference model of the same shape."""
        for dst, bag in zip(self.embedding.split_embedding_weights(), ref.emb_l):
            dst.copy_(bag.weight)
        ours = [*self.bottom.layers, *self.top.layers]
        theirs = [m for m in [*ref.bot_l, *ref.top_l] if isinstance(m, nn.Linear)]
        if len(ours) != len(theirs):
            raise ValueError("the reference model has other MLPs")
        for a, b in zip(ours, theirs):
            a.weight.copy_(b.weight)
            a.bias.copy_(b.bias)


class DLRMLoss(nn.Module):
    """The training loss as a module's forward: mean BCE of the logits against ``labels``."""

    def __init__(self, model: DLRM) -> None:
        super().__init__()
        self.model = model

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor,
                labels: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(self.model(dense, sparse), labels)
