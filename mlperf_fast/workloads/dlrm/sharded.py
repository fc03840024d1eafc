"""Model-parallel embeddings: each table either whole on one process (table-wise) or split into
contiguous row ranges over every process (row-wise), as a ShardingPlan (plan.py) says; the MLPs
stay data-parallel (their gradients averaged). Any torch.distributed backend with
``all_to_all_single`` (NCCL, gloo).

Every process trains ``B`` samples of a global batch of ``W * B``. Process ``o`` *serves* the
columns ``S_o`` = its whole tables ``T_o``, then every row-wise table ``R`` (its ranges of them).
Per step, three all-to-all exchanges, whatever the mix (sizes per process, in elements):

1. ids, forward: process ``r`` sends the ids of columns ``S_o`` of its ``B`` samples to each
   ``o`` (``B * |S_o|`` int64), and receives ``[W * B, |S_r|]``: every sample of the global
   batch, in rank order. For ``R`` this is an all-gather of the ids.
2. pooled, forward: ``o`` looks up all ``W * B`` samples in one table-batched call (a row-wise
   table's bag holds the sample's id if it falls in ``o``'s range, else it is empty and pools
   to zeros) and sends each ``r`` its ``[B, |S_o|, D]``; ``r`` places ``T_o``'s columns and
   sums the ``W`` partial vectors of ``R`` in rank order. For ``R`` this is a reduce-scatter
   (sum) over the batch dimension; with one id per table per sample exactly one partial is
   nonzero, so the sum equals the single-process vector bit for bit.
3. gradients, backward: ``r`` sends ``o`` the gradients of columns ``S_o`` of its samples,
   divided by ``W`` (each process's loss is the mean over its own ``B`` samples, the
   single-process loss the mean over all of them); for ``R`` an all-gather. ``o`` applies the
   fused exact SGD update to its rows with the gradients of every sample, in the order of the
   global batch, as one process training the global batch would.

Why all-to-all for the row-wise part rather than ``all_gather`` and ``reduce_scatter``: the
bytes are the same (a ring reduce-scatter of ``[W * B, |R| * D]`` also sends ``(W - 1) * B *
|R| * D`` per process; so does the all-to-all), and carried in the same messages as the
table-wise part the step keeps three collectives instead of six. gloo (torch 2.14) does have
``reduce_scatter_tensor``; ``all_reduce`` would move ``W`` times the data.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn

from mlperf_fast.nn import TableBatchedEmbeddingBag
from mlperf_fast.ops.table_batched_embedding import tbe_backward_update_
from mlperf_fast.workloads.dlrm.model import DLRM
from mlperf_fast.workloads.dlrm.plan import PlanSpec, ShardingPlan, assign_tables, make_plan

__all__ = ["INIT_BLOCK_ROWS", "ShardedDLRM", "ShardedEmbedding", "assign_tables", "init_rows_"]

#: Rows of a sharded table drawn from one generator stream. Every block has its own stream, so
#: a process draws only the blocks its rows touch (never a whole 40M-row table) and a row starts
#: the same under every plan and world size.
INIT_BLOCK_ROWS = 1 << 16


def _block_seed(seed: int, table: int, block: int) -> int:
    # Block 0 is the stream the table-wise code always drew whole tables from, so a table of up
    # to INIT_BLOCK_ROWS rows starts exactly as before. Within a run the seeds differ for every
    # table < 1000 and block < 2^22 in their low 32 bits, the only ones the CPU generator
    # (mt19937) keeps: a block offset above 2^32 would repeat block 0's values.
    return (seed * 1000 + table + block * 1024) % 2 ** 64


@torch.no_grad()
def init_rows_(view: torch.Tensor, table: int, table_rows: int, first_row: int, seed: int, *,
               block_rows: int = INIT_BLOCK_ROWS) -> None:
    """Rows ``first_row ... first_row + len(view)`` of table ``table`` (``table_rows`` rows), in
    ``view`` ``[rows, D]``, as the reference initialises a table: U(-sqrt(1 / table_rows),
    sqrt(1 / table_rows)); block ``k`` of ``block_rows`` rows from its own seeded stream."""
    lo, hi = first_row, first_row + view.shape[0]
    if not 0 <= lo <= hi <= table_rows:
        raise ValueError(f"rows [{lo}, {hi}) are not within the table's {table_rows}")
    bound = math.sqrt(1.0 / table_rows)
    for k in range(lo // block_rows, -(-hi // block_rows)):
        b_lo, b_hi = k * block_rows, min((k + 1) * block_rows, table_rows)
        a, b = max(lo, b_lo), min(hi, b_hi)
        g = torch.Generator(device=view.device).manual_seed(_block_seed(seed, table, k))
        if (a, b) == (b_lo, b_hi):  # the whole block: drawn in place
            view[a - lo:b - lo].uniform_(-bound, bound, generator=g)
        else:
            block = view.new_empty(b_hi - b_lo, view.shape[1]).uniform_(-bound, bound,
                                                                        generator=g)
            view[a - lo:b - lo] = block[a - b_lo:b - b_lo]


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
    """This process's share of a sharded set of tables: ``forward(ids [B, T] int64)`` ->
    ``[B, T, D]`` for this process's ``B`` samples, every process calling it with the same B.
    The update is SGD at ``self.lr``, fused into the backward.

    ``plan``: "auto", "table", "row", an explicit list (per table an owner rank or "row") or a
    ShardingPlan (plan.py); every process must be given the same (checked here, once).
    """

    def __init__(self, table_sizes: Sequence[int], dim: int, *,
                 plan: PlanSpec | ShardingPlan = "auto", lr: float = 0.0,
                 group: dist.ProcessGroup | None = None, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        self.group = group
        self.rank, self.world = dist.get_rank(group), dist.get_world_size(group)
        self.plan = make_plan(table_sizes, self.world, plan)
        _check_same_plan(self.plan, group)
        self.num_tables, self.dim, self.lr = len(self.plan.table_sizes), dim, lr
        self.rowwise = self.plan.rowwise
        self.whole_of = [self.plan.tables_of(o) for o in range(self.world)]
        self.served = [whole + self.rowwise for whole in self.whole_of]
        self.local = self.served[self.rank]
        ranges = [self.plan.row_range(t, self.rank) for t in self.local]
        self.tbe = TableBatchedEmbeddingBag([hi - lo for lo, hi in ranges], dim, "sum",
                                            optimizer="sgd", lr=lr, check_indices=False,
                                            dtype=dtype, device=device)
        # [|R|, 1]: this process's range of each row-wise table, and the tables' sizes
        k = len(self.whole_of[self.rank])
        for name, values in (("_lo", [lo for lo, _ in ranges[k:]]),
                             ("_hi", [hi for _, hi in ranges[k:]]),
                             ("_rows", [self.plan.table_sizes[t] for t in self.rowwise])):
            self.register_buffer(name, torch.tensor(values, dtype=torch.int64,
                                                    device=device).view(-1, 1),
                                 persistent=False)

    def local_tables(self) -> dict[int, torch.Tensor]:
        """{table number: the ``[rows, D]`` view of its rows this process holds}: a whole table,
        or rows ``row_range(t)`` of a row-wise one."""
        return dict(zip(self.local, self.tbe.split_embedding_weights()))

    def row_range(self, t: int) -> tuple[int, int]:
        """``(lo, hi)``: the rows of table ``t`` this process holds (``(0, 0)``: none)."""
        return self.plan.row_range(t, self.rank)

    def _all_to_all(self, send: torch.Tensor, send_counts: list[int],
                    recv_counts: list[int]) -> torch.Tensor:
        recv = send.new_empty(sum(recv_counts))
        dist.all_to_all_single(recv, send.contiguous(), recv_counts, send_counts,
                               group=self.group)
        return recv

    def _bags(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The local lookup's (indices, offsets) for ``ids`` ``[|S|, W * B]``: one id per bag for
        a whole table; for a row-wise one the id shifted into this process's range, or an empty
        bag where it falls outside (on a GPU, an id outside the whole table too: it pools to
        zeros, as the unchecked table-batched kernels leave such ids out). The masked select
        sizes its output on the host: with any row-wise table, one synchronisation per step on
        a GPU."""
        n, WB = ids.shape
        k = n - len(self.rowwise)
        if not self.rowwise:  # the table-wise path as it always was (no host sync on a GPU)
            return ids.reshape(-1), torch.arange(n * WB + 1, device=ids.device)
        rw = ids[k:]
        if ids.device.type == "cpu":
            self._check_rowwise_ids(rw)
        keep = (rw >= self._lo) & (rw < self._hi)  # [|R|, W * B]
        indices = torch.cat([ids[:k].reshape(-1), (rw - self._lo)[keep]])
        lengths = torch.cat([torch.ones(k * WB, dtype=torch.int64, device=ids.device),
                             keep.reshape(-1).long()])
        offsets = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
        return indices, offsets

    def _check_rowwise_ids(self, rw: torch.Tensor) -> None:
        """Every process holds every sample's row-wise ids, so each raises the same error here
        (none is left waiting in the next exchange). Ids of whole tables are checked by their
        owner's lookup."""
        bad = (rw < 0) | (rw >= self._rows)
        if bool(bad.any()):
            j, b = (int(v) for v in bad.nonzero()[0])
            raise ValueError(f"table {self.rowwise[j]}: id {int(rw[j, b])} of sample {b} of the "
                             f"global batch is outside its {int(self._rows[j])} rows")

    def _lookup(self, sparse: torch.Tensor):
        if sparse.dim() != 2 or sparse.shape[1] != self.num_tables:
            raise ValueError(f"ids must be [B, {self.num_tables}], got {tuple(sparse.shape)}")
        B, W, D, n = sparse.shape[0], self.world, self.dim, len(self.local)
        send = torch.cat([sparse[:, cols].reshape(-1) for cols in self.served])
        ids = self._all_to_all(send, [B * len(cols) for cols in self.served], [B * n] * W)
        ids = ids.view(W * B, n).t()  # [|S|, W * B]: every sample, in rank order
        indices, offsets = self._bags(ids)
        pooled = self._forward_local(indices, offsets)
        back = self._all_to_all(pooled.reshape(-1), [B * n * D] * W,
                                [B * len(cols) * D for cols in self.served])
        out = sparse.new_empty((B, self.num_tables, D), dtype=pooled.dtype)
        partial = None
        for o, part in enumerate(back.split([B * len(cols) * D for cols in self.served])):
            part = part.view(B, len(self.served[o]), D)
            k = len(self.whole_of[o])
            if k:
                out[:, self.whole_of[o]] = part[:, :k]
            if self.rowwise:  # rank order; all but one partial are zeros: the sum is exact
                partial = part[:, k:] if partial is None else partial + part[:, k:]
        if partial is not None:
            out[:, self.rowwise] = partial
        return out, indices, offsets

    def _forward_local(self, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.tbe(indices, offsets)  # [W * B, |S| * D]

    def _update(self, grad: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor) -> None:
        B, W, D, n = grad.shape[0], self.world, self.dim, len(self.local)
        send = torch.cat([grad[:, cols].reshape(-1) for cols in self.served]) / W
        g = self._all_to_all(send, [B * len(cols) * D for cols in self.served], [B * n * D] * W)
        tbe_backward_update_(g.view(W * B, n * D), self.tbe.weight.detach(),
                             self.tbe.layout, indices, offsets, None, "sum", optimizer="sgd",
                             lr=self.lr)

    def forward(self, sparse: torch.Tensor) -> torch.Tensor:
        return _Exchange.apply(sparse, self.tbe.weight, self)


def _check_same_plan(plan: ShardingPlan, group: dist.ProcessGroup | None) -> None:
    """Raises on every process if any was given other table sizes or another plan (a data dir
    or a configuration that differs between them), before the first exchange could hang."""
    mine = (plan.table_sizes, plan.owner)
    every: list = [None] * plan.world
    dist.all_gather_object(every, mine, group=group)
    differ = [r for r, theirs in enumerate(every) if theirs != every[0]]
    if differ:
        raise ValueError(f"processes {differ} have other table sizes or another sharding plan "
                         f"than process 0 (sizes {list(every[0][0])}, owners {list(every[0][1])})")


class ShardedDLRM(DLRM):
    """DLRM with sharded tables (``self.sharded``, placed by ``plan``) and replicated MLPs. Build
    it with the same arguments on every process; ``load_from(full)`` copies a single-process
    model's weights (each process keeping its own rows). With ``seed`` the tables are drawn by
    ``init_rows_``: the same rows whatever the plan."""

    def __init__(self, table_sizes: Sequence[int], dim: int, bottom: Sequence[int],
                 top: Sequence[int], *, plan: PlanSpec | ShardingPlan = "auto", lr: float = 0.0,
                 group: dist.ProcessGroup | None = None, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None,
                 generator: torch.Generator | None = None, seed: int | None = None) -> None:
        # the single-process tables are built only as small placeholders
        super().__init__([1] * len(table_sizes), dim, bottom, top, fused_sgd=False,
                         dtype=dtype, device=device, generator=generator)
        del self.embedding
        self.sharded = ShardedEmbedding(table_sizes, dim, plan=plan, lr=lr, group=group,
                                        dtype=dtype, device=device)
        if seed is not None:
            sizes = self.sharded.plan.table_sizes
            for t, view in self.sharded.local_tables().items():
                init_rows_(view, t, sizes[t], self.sharded.row_range(t)[0], seed)

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
            lo, hi = self.sharded.row_range(t)
            view.copy_(tables[t][lo:hi])
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
