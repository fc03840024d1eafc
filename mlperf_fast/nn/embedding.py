"""TableBatchedEmbeddingBag: a list of embedding bags as one module, looked up in one launch."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from mlperf_fast.ops.table_batched_embedding import (
    TableLayout,
    table_batched_embedding_bag,
    table_batched_embedding_bag_fused,
)


INDEX_DTYPES = (torch.int32, torch.int64)


class TableBatchedEmbeddingBag(nn.Module):
    """Every table of ``[nn.EmbeddingBag(n, d, mode=mode) for n, d in zip(...)]`` in one buffer.

    Args:
        num_embeddings: rows of each table.
        embedding_dim: one dimension for all tables, or one per table.
        mode: "sum" or "mean".
        optimizer: None (the backward gives ``weight`` a dense gradient, for any optimizer),
            "sgd" or "rowwise_adagrad" (the backward updates the touched rows in place, FBGEMM
            style; ``weight`` then gets no ``.grad``).
        lr, eps: the fused optimizer's learning rate (change ``self.lr`` between steps) and
            Adagrad's epsilon.
        check_indices: check offsets and index ranges on every call (always done on the CPU).
        dtype, device: of the weights (float32, float16, bfloat16, float64).

    ``forward`` takes either FBGEMM's layout, ``(indices, offsets)`` with ``offsets`` of
    ``T * B + 1`` entries, and returns ``[B, sum(dims)]``; or, as a list of nn.EmbeddingBag
    modules is called, lists of per-table inputs (1-D indices with ``[B]`` offsets, or 2-D
    ``[B, L]`` indices and no offsets) and returns the list of ``[B, dims[t]]`` outputs.
    Weights start N(0, 1), as nn.EmbeddingBag's do.
    """

    def __init__(self, num_embeddings: Sequence[int], embedding_dim: int | Sequence[int],
                 mode: str = "sum", *, optimizer: str | None = None, lr: float = 0.01,
                 eps: float = 1e-8, check_indices: bool = True, backend: str = "auto",
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None):
        super().__init__()
        rows = [int(n) for n in num_embeddings]
        dims = [int(embedding_dim)] * len(rows) if isinstance(embedding_dim, int) \
            else [int(d) for d in embedding_dim]
        self.layout = TableLayout(rows, dims)
        if mode not in ("sum", "mean"):
            raise ValueError(f"mode must be 'sum' or 'mean', got {mode!r}")
        if optimizer not in (None, "sgd", "rowwise_adagrad"):
            raise ValueError(f"optimizer must be None, 'sgd' or 'rowwise_adagrad', got "
                             f"{optimizer!r}")
        for name, value, positive in (("lr", lr, False), ("eps", eps, True)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not math.isfinite(value) or value < 0 or (positive and value == 0):
                raise ValueError(f"{name} must be a finite number {'>' if positive else '>='} "
                                 f"0, got {value!r}")
        self.mode, self.optimizer, self.lr, self.eps = mode, optimizer, lr, eps
        self.check_indices, self.backend = check_indices, backend
        self.weight = nn.Parameter(torch.empty(self.layout.numel, dtype=dtype, device=device))
        if optimizer == "rowwise_adagrad":
            self.register_buffer("momentum", torch.zeros(self.layout.num_rows,
                                                         dtype=torch.float32, device=device))
        else:
            self.momentum = None
        self.reset_parameters()

    @classmethod
    def from_embedding_bags(cls, bags: Sequence[nn.EmbeddingBag], **kwargs) -> TableBatchedEmbeddingBag:
        """The same tables (weights copied) as a list of nn.EmbeddingBag of one mode."""
        modes = {b.mode for b in bags}
        if len(modes) != 1:
            raise ValueError(f"all bags must have one mode, got {sorted(modes)}")
        w = bags[0].weight
        module = cls([b.num_embeddings for b in bags], [b.embedding_dim for b in bags],
                     modes.pop(), dtype=w.dtype, device=w.device, **kwargs)
        with torch.no_grad():
            for dst, b in zip(module.split_embedding_weights(), bags):
                dst.copy_(b.weight)
        return module

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight)

    def split_embedding_weights(self) -> list[torch.Tensor]:
        """Views ``[rows, dim]`` of each table (writes go to the module's buffer)."""
        return self.layout.split(self.weight.detach())

    @property
    def embedding_dims(self) -> list[int]:
        return list(self.layout.dims)

    def forward(self, indices, offsets=None, per_sample_weights=None):
        if isinstance(indices, (list, tuple)):
            return self._forward_lists(indices, offsets, per_sample_weights)
        if offsets is None:
            raise ValueError("offsets is required with FBGEMM's layout (T * B + 1 entries)")
        return self._lookup(indices, offsets, per_sample_weights)

    def _lookup(self, indices, offsets, per_sample_weights):
        if self.optimizer is None or not (torch.is_grad_enabled() and self.weight.requires_grad):
            return table_batched_embedding_bag(
                self.weight, self.layout, indices, offsets, per_sample_weights, self.mode,
                check_indices=self.check_indices, backend=self.backend)
        return table_batched_embedding_bag_fused(
            self.weight, self.layout, indices, offsets, per_sample_weights, self.mode,
            optimizer=self.optimizer, lr=self.lr, eps=self.eps, momentum=self.momentum,
            check_indices=self.check_indices, backend=self.backend)

    def _forward_lists(self, indices, offsets, per_sample_weights):
        T = self.layout.T
        if len(indices) != T:
            raise ValueError(f"expected {T} index tensors (one per table), got {len(indices)}")
        offsets = [None] * T if offsets is None else list(offsets)
        if len(offsets) != T:
            raise ValueError(f"expected {T} offset tensors (one per table), got {len(offsets)}")
        if per_sample_weights is not None and len(per_sample_weights) != T:
            raise ValueError(f"expected {T} per_sample_weights tensors, got "
                             f"{len(per_sample_weights)}")
        for t, (idx, off) in enumerate(zip(indices, offsets)):
            for name, v in (("indices", idx), ("offsets", off)):
                if v is not None and (not torch.is_tensor(v) or v.dtype not in INDEX_DTYPES):
                    what = v.dtype if torch.is_tensor(v) else type(v).__name__
                    raise TypeError(f"table {t}: {name} must be an int32 or int64 tensor, got "
                                    f"{what}")
        flat, starts, batch = [], [], None
        total = 0
        # int64 as soon as any input is int64 or the concatenation outgrows int32: offsets are
        # never narrowed before they are checked.
        wide = any(v is not None and v.dtype == torch.int64 for v in (*indices, *offsets)) or \
            sum(i.numel() for i in indices) >= 2 ** 31
        dtype = torch.int64 if wide else torch.int32
        for t, (idx, off) in enumerate(zip(indices, offsets)):
            if idx.dim() == 2:
                if off is not None:
                    raise ValueError(f"table {t}: offsets must be None with 2-D indices")
                B, L = idx.shape
                off = torch.arange(0, B * L, L, dtype=dtype, device=idx.device)
                idx = idx.reshape(-1)
            elif off is None or idx.dim() != 1 or off.dim() != 1:
                raise ValueError(f"table {t}: give 1-D indices with 1-D offsets, or 2-D indices")
            if batch is None:
                batch = off.numel()
            elif off.numel() != batch:
                raise ValueError(f"table {t} has {off.numel()} bags but table 0 has {batch}")
            if self.check_indices or off.device.type == "cpu":
                self._check_table_offsets(t, off, idx.numel())
            flat.append(idx.to(dtype))
            starts.append(off.to(dtype) + total)
            total += idx.numel()
        device = flat[0].device
        all_offsets = torch.cat(starts + [torch.tensor([total], dtype=dtype, device=device)])
        psw = None if per_sample_weights is None else torch.cat(list(per_sample_weights))
        out = self._lookup(torch.cat(flat), all_offsets, psw)
        return list(torch.split(out, self.layout.dims, dim=1))

    @staticmethod
    def _check_table_offsets(t: int, off: torch.Tensor, n: int) -> None:
        """One table's offsets as nn.EmbeddingBag reads them: starting at 0, nondecreasing,
        within its own indices (shifted into the concatenation, an offset past them would
        silently read the next table's)."""
        if off.numel() == 0:
            return
        first, last = int(off[0]), int(off[-1])
        if first != 0:
            raise ValueError(f"table {t}: offsets[0] must be 0, got {first}")
        if last > n:
            raise ValueError(f"table {t}: offsets[-1] is {last}, past its {n} indices")
        if off.numel() > 1 and bool((off[1:] < off[:-1]).any()):
            raise ValueError(f"table {t}: offsets must be nondecreasing")

    def extra_repr(self) -> str:
        return (f"tables={self.layout.T}, rows={self.layout.num_rows}, dims={self.layout.dims[:4]}"
                f"{'...' if self.layout.T > 4 else ''}, mode={self.mode!r}, "
                f"optimizer={self.optimizer!r}")
