"""The MLCommons DLRM reference model (facebookresearch/dlrm, branch mlperf, dlrm_s_pytorch.py
``DLRM_Net``), ported: one ``nn.EmbeddingBag(n, d, mode="sum", sparse=True)`` per table, MLPs of
``nn.Linear`` + ``nn.ReLU`` with a ``nn.Sigmoid`` after the top MLP's last layer, the dot
interaction as ``bmm`` and a lower-triangle gather (``arch_interaction_itself=False``), BCE on
the probabilities, one ``torch.optim.SGD`` over every parameter (sparse gradients for the
tables). It is the baseline of the parity tests and of bench_dlrm_step.py.

Initialisation as the reference's ``create_mlp``/``create_emb``: weights N(0, 2 / (in + out)),
biases N(0, 1 / out), table rows U(-sqrt(1 / n), sqrt(1 / n)) (drawn here with torch's
generator rather than numpy's).
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from mlperf_fast.workloads.dlrm.config import NUM_DENSE


def init_linear_(layer: nn.Linear, generator: torch.Generator | None = None) -> None:
    n, m = layer.in_features, layer.out_features
    with torch.no_grad():
        layer.weight.normal_(0.0, math.sqrt(2.0 / (m + n)), generator=generator)
        layer.bias.normal_(0.0, math.sqrt(1.0 / m), generator=generator)


def init_table_(weight: torch.Tensor, generator: torch.Generator | None = None) -> None:
    bound = math.sqrt(1.0 / weight.shape[0])
    with torch.no_grad():
        weight.uniform_(-bound, bound, generator=generator)


def mlp(widths: Sequence[int], sigmoid_last: bool, device=None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n, m) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(n, m, bias=True, device=device))
        last = i == len(widths) - 2
        layers.append(nn.Sigmoid() if last and sigmoid_last else nn.ReLU())
    return nn.Sequential(*layers)


def interaction_width(num_tables: int, dim: int) -> int:
    n = num_tables + 1
    return dim + n * (n - 1) // 2


class ReferenceDLRM(nn.Module):
    """``forward(dense [B, 13] float32, offsets [T, B] int64, indices [T, B] int64)`` ->
    probabilities [B, 1], the reference's calling convention (``lS_o``, ``lS_i``)."""

    def __init__(self, table_sizes: Sequence[int], dim: int, bottom: Sequence[int],
                 top: Sequence[int], generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        if bottom[-1] != dim:
            raise ValueError(f"the bottom MLP must end at the embedding dim {dim}, got {bottom}")
        self.emb_l = nn.ModuleList(nn.EmbeddingBag(n, dim, mode="sum", sparse=True, device=device)
                                   for n in table_sizes)
        self.bot_l = mlp([NUM_DENSE, *bottom], sigmoid_last=False, device=device)
        self.top_l = mlp([interaction_width(len(table_sizes), dim), *top], sigmoid_last=True,
                         device=device)
        for e in self.emb_l:
            init_table_(e.weight, generator)
        for layer in [*self.bot_l, *self.top_l]:
            if isinstance(layer, nn.Linear):
                init_linear_(layer, generator)

    def interact_features(self, x: torch.Tensor, ly: list[torch.Tensor]) -> torch.Tensor:
        batch_size, d = x.shape
        T = torch.cat([x] + ly, dim=1).view((batch_size, -1, d))
        Z = torch.bmm(T, torch.transpose(T, 1, 2))
        ni = T.shape[1]
        li = torch.tensor([i for i in range(ni) for j in range(i)], device=x.device)
        lj = torch.tensor([j for i in range(ni) for j in range(i)], device=x.device)
        return torch.cat([x, Z[:, li, lj]], dim=1)

    def forward(self, dense: torch.Tensor, offsets: torch.Tensor,
                indices: torch.Tensor) -> torch.Tensor:
        x = self.bot_l(dense)
        ly = [e(indices[k], offsets[k]) for k, e in enumerate(self.emb_l)]
        return self.top_l(self.interact_features(x, ly))


def reference_inputs(sparse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's ``(lS_o, lS_i)`` from ids [B, T]: one id per bag
    (``_transform_features``: ``lS_o = arange(B)`` per table, ``lS_i = x_cat.t()``)."""
    B, T = sparse.shape
    offsets = torch.arange(B, device=sparse.device).reshape(1, -1).repeat(T, 1)
    return offsets, sparse.t().contiguous()


def reference_step(model: ReferenceDLRM, optimizer: torch.optim.Optimizer, dense: torch.Tensor,
                   sparse: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One training step as the reference's loop takes it (``--mlperf-coalesce-sparse-grads``:
    sparse gradients coalesced before the step). Returns the loss."""
    offsets, indices = reference_inputs(sparse)
    p = model(dense, offsets, indices)
    loss = nn.functional.binary_cross_entropy(p, labels.view(-1, 1))
    optimizer.zero_grad()
    loss.backward()
    for e in model.emb_l:
        if e.weight.grad is not None and e.weight.grad.is_sparse:
            e.weight.grad = e.weight.grad.coalesce()
    optimizer.step()
    return loss.detach()
