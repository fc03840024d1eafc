"""Table-wise model-parallel embeddings: each process owns whole tables; the ids of every
process's samples reach their table's owner and the pooled vectors come back, by two
all-to-all exchanges forward and one backward (torch.distributed, any backend with
``all_to_all_single``: NCCL, gloo). The MLPs stay data-parallel (their gradients averaged).

Every process trains ``B`` samples of a global batch of ``world * B``. Forward: process ``r``
sends the ids of table set ``T_o`` of its ``B`` samples to owner ``o``; ``o`` looks up its
tables for all ``world * B`` samples in one table-batched call and sends back each process's
``[B, |T_o|, D]``. Backward: the gradients of those vectors go back to the owner, divided by
``world`` (each process's loss is the mean over its own ``B`` samples, the single-process loss
the mean over all of them), and the owner applies the fused exact SGD update to its rows, as one
process training the global batch would.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn

from mlperf_fast.nn import TableBatchedEmbeddingBag
from mlperf_fast.ops.table_batched_embedding import tbe_backward_update_
from mlperf_fast.workloads.dlrm.model import DLRM
from mlperf_fast.workloads.dlrm.reference import init_table_


def assign_tables(table_sizes: Sequence[int], world: int) -> list[int]:
    """The owner of each table: the largest tables first, each to the least-loaded process (by
    rows), ties to the lowest rank."""
    load = [0] * world
    owner = [0] * len(table_sizes)
    for t in sorted(range(len(table_sizes)), key=lambda t: (-table_sizes[t], t)):
        o = min(range(world), key=lambda r: (load[r], r))
        owner[t] = o
        load[o] += table_sizes[t]
    return owner


class _Exchange(torch.autograd.Function):
    @staticmethod
    def forward(ctx, sparse, weight, module):
        ctx.module = module
        out, ctx.indices, ctx.offsets = module._lookup(sparse)
        return out

    @staticmethod
    def backward(ctx, grad):
        ctx.module._update(grad, ctx.indices, ctx.offsets)
        return None, None, None


class ShardedEmbedding(nn.Module):
    """This process's tables of a table-wise sharded set: ``forward(ids [B, T])`` ->
    ``[B, T, D]`` for this process's ``B`` samples, every process calling it with the same B.
    The update is SGD at ``self.lr``, fused into the backward."""

    def __init__(self, table_sizes: Sequence[int], dim: int, *, lr: float = 0.0,
                 group: dist.ProcessGroup | None = None, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        self.group = group
        self.rank, self.world = dist.get_rank(group), dist.get_world_size(group)
        self.num_tables, self.dim, self.lr = len(table_sizes), dim, lr
        self.owner = assign_tables(table_sizes, self.world)
        self.tables_of = [[t for t in range(self.num_tables) if self.owner[t] == o]
                          for o in range(self.world)]
        self.local = self.tables_of[self.rank]
        if not self.local:
            raise ValueError(f"process {self.rank} owns no table: use at most {self.num_tables} "
                             "processes")
        self.tbe = TableBatchedEmbeddingBag([table_sizes[t] for t in self.local], dim, "sum",
                                            optimizer="sgd", lr=lr, check_indices=False,
                                            dtype=dtype, device=device)

    def local_tables(self) -> dict[int, torch.Tensor]:
        """{table number: its ``[rows, D]`` view} for the tables this process owns."""
        return dict(zip(self.local, self.tbe.split_embedding_weights()))

    def _all_to_all(self, send: torch.Tensor, send_counts: list[int],
                    recv_counts: list[int]) -> torch.Tensor:
        recv = send.new_empty(sum(recv_counts))
        dist.all_to_all_single(recv, send.contiguous(), recv_counts, send_counts,
                               group=self.group)
        return recv

    def _lookup(self, sparse: torch.Tensor):
        B, W, D, n_local = sparse.shape[0], self.world, self.dim, len(self.local)
        send = torch.cat([sparse[:, ts].reshape(-1) for ts in self.tables_of])
        ids = self._all_to_all(send, [B * len(ts) for ts in self.tables_of],
                               [B * n_local] * W)
        ids = ids.view(W * B, n_local)  # every process's samples, in rank order
        indices = ids.t().reshape(-1)
        offsets = torch.arange(n_local * W * B + 1, device=sparse.device)
        pooled = self._forward_local(indices, offsets)
        back = self._all_to_all(pooled.reshape(-1), [B * n_local * D] * W,
                                [B * len(ts) * D for ts in self.tables_of])
        out = sparse.new_empty((B, self.num_tables, D), dtype=pooled.dtype)
        start = 0
        for ts in self.tables_of:
            size = B * len(ts) * D
            out[:, ts] = back[start:start + size].view(B, len(ts), D)
            start += size
        return out, indices, offsets

    def _forward_local(self, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.tbe(indices, offsets)  # [W * B, n_local * D]

    def _update(self, grad: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor) -> None:
        B, W, D, n_local = grad.shape[0], self.world, self.dim, len(self.local)
        send = torch.cat([grad[:, ts].reshape(-1) for ts in self.tables_of]) / W
        g = self._all_to_all(send, [B * len(ts) * D for ts in self.tables_of],
                             [B * n_local * D] * W)
        tbe_backward_update_(g.view(W * B, n_local * D), self.tbe.weight.detach(),
                             self.tbe.layout, indices, offsets, None, "sum", optimizer="sgd",
                             lr=self.lr)

    def forward(self, sparse: torch.Tensor) -> torch.Tensor:
        return _Exchange.apply(sparse, self.tbe.weight, self)


class ShardedDLRM(DLRM):
    """DLRM with table-wise sharded tables (``self.sharded``) and replicated MLPs. Build it with
    the same arguments on every process; ``load_from(full)`` copies a single-process model's
    weights (each process keeping its own tables)."""

    def __init__(self, table_sizes: Sequence[int], dim: int, bottom: Sequence[int],
                 top: Sequence[int], *, lr: float = 0.0, group: dist.ProcessGroup | None = None,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 generator: torch.Generator | None = None, seed: int | None = None) -> None:
        # the single-process tables are built only as small placeholders
        super().__init__([1] * len(table_sizes), dim, bottom, top, fused_sgd=False,
                         dtype=dtype, device=device, generator=generator)
        del self.embedding
        self.sharded = ShardedEmbedding(table_sizes, dim, lr=lr, group=group, dtype=dtype,
                                        device=device)
        if seed is not None:  # table t from its own stream: the same whichever process owns it
            for t, view in self.sharded.local_tables().items():
                g = torch.Generator(device=view.device).manual_seed(seed * 1000 + t)
                init_table_(view, g)

    def average_gradients_in_backward(self) -> None:
        """Average each MLP gradient over the processes as soon as it is accumulated, so that
        any step (harness.step.TrainStep included) sees data-parallel gradients."""
        world, group = self.sharded.world, self.sharded.group

        def hook(p: torch.Tensor) -> None:
            dist.all_reduce(p.grad, group=group)
            p.grad /= world

        for p in self.dense_parameters():
            p.register_post_accumulate_grad_hook(hook)

    def embed(self, sparse: torch.Tensor) -> torch.Tensor:
        return self.sharded(sparse)

    @torch.no_grad()
    def load_from(self, full: DLRM) -> None:
        tables = full.embedding.split_embedding_weights()
        for t, view in self.sharded.local_tables().items():
            view.copy_(tables[t])
        for a, b in zip([*self.bottom.layers, *self.top.layers],
                        [*full.bottom.layers, *full.top.layers]):
            a.weight.copy_(b.weight)
            a.bias.copy_(b.bias)

    def average_dense_gradients(self) -> None:
        """All-reduce the MLPs' gradients to their mean over the processes (data parallelism)."""
        grads = [p.grad for p in self.dense_parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, group=self.sharded.group)
        flat /= self.sharded.world
        start = 0
        for g in grads:
            g.copy_(flat[start:start + g.numel()].view_as(g))
            start += g.numel()
