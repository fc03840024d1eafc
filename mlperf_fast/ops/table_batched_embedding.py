"""Table-batched embedding bags: every embedding table of a model in one buffer, looked up in one
launch, with a backward that combines duplicate indices and updates only the touched rows.

The layout follows FBGEMM's table-batched embedding (``SplitTableBatchedEmbeddingBagsCodegen``):

* ``weights``: one 1-D buffer; table ``t`` (``rows[t]`` x ``dims[t]``) starts at element
  ``weights_offsets[t]``.
* ``indices``: int32 or int64 row numbers within their table, all bags of table 0 first, then
  table 1, ...; ``offsets`` (same dtype, ``T * B + 1`` entries): bag ``b`` of table ``t`` is
  ``indices[offsets[t * B + b] : offsets[t * B + b + 1]]``.
* output: ``[B, sum(dims)]``, table ``t`` in columns ``D_offsets[t] : D_offsets[t + 1]``.

Per table the semantics are those of ``torch.nn.EmbeddingBag`` (``mode`` "sum" or "mean", empty
bags give zeros, optional ``per_sample_weights`` with "sum"); float16 and bfloat16 weights are
accumulated in float32. The backward either returns the dense gradient of ``weights`` (for any
optimizer) or is fused with exact sparse SGD or row-wise Adagrad (FBGEMM's EXACT_SGD and
EXACT_ROWWISE_ADAGRAD): the gradient of each touched row is the sum over every bag that looked it
up, added in the order of the indices, so updates are the same on every run.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from mlperf_fast.ops import _checks
from mlperf_fast.ops._library import custom_op, has_native, host_checks_enabled, register_op

POOLING = {"sum": 0, "mean": 1}
UPDATES = {"grad": 0, "sgd": 1, "rowwise_adagrad": 2}
WEIGHT_DTYPES = _checks.FLOAT_DTYPES
INDEX_DTYPES = _checks.INDEX_DTYPES
# Error codes of tbe_validate (csrc/table_batched_embedding/table_batched_embedding.h).
_ERROR_SHIFT = 1 << 56
_VALID = (1 << 63) - 1
# Widest row the CUDA backward holds in registers.
CUDA_MAX_DIM = 256


@dataclass
class TableLayout:
    """Where each table lives in the flat buffer and in the output; built from ``(rows, dim)``
    pairs. Host lists are the source of truth; device copies are made once per device."""

    rows: list[int]
    dims: list[int]
    weights_offsets: list[int] = field(init=False)
    D_offsets: list[int] = field(init=False)
    hash_size_cumsum: list[int] = field(init=False)
    _device_meta: dict = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if len(self.rows) != len(self.dims) or not self.rows:
            raise ValueError("rows and dims must be non-empty lists of the same length")
        for t, (r, d) in enumerate(zip(self.rows, self.dims)):
            if int(r) < 0 or int(d) <= 0:
                raise ValueError(f"table {t} has {r} rows of dimension {d}; need rows >= 0, dim > 0")
        self.rows = [int(r) for r in self.rows]
        self.dims = [int(d) for d in self.dims]
        w, d, h = [0], [0], [0]
        for r, dim in zip(self.rows, self.dims):
            w.append(w[-1] + r * dim)
            d.append(d[-1] + dim)
            h.append(h[-1] + r)
        self.weights_offsets, self.D_offsets, self.hash_size_cumsum = w[:-1], d, h
        self.numel = w[-1]

    @classmethod
    def from_specs(cls, specs: Sequence[tuple[int, int]]) -> TableLayout:
        return cls([r for r, _ in specs], [d for _, d in specs])

    @property
    def T(self) -> int:
        return len(self.rows)

    @property
    def total_D(self) -> int:
        return self.D_offsets[-1]

    @property
    def num_rows(self) -> int:
        return self.hash_size_cumsum[-1]

    @property
    def max_D(self) -> int:
        return max(self.dims)

    def meta(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weights_offsets, D_offsets, hash_size_cumsum) as int64 tensors on ``device``."""
        key = str(device)
        if key not in self._device_meta:
            self._device_meta[key] = tuple(
                torch.tensor(v, dtype=torch.int64, device=device)
                for v in (self.weights_offsets, self.D_offsets, self.hash_size_cumsum))
        return self._device_meta[key]

    def split(self, weights: torch.Tensor) -> list[torch.Tensor]:
        """Views ``[rows[t], dims[t]]`` of each table in ``weights``."""
        return [weights[o:o + r * d].view(r, d)
                for o, r, d in zip(self.weights_offsets, self.rows, self.dims)]


# --------------------------------------------------------------------------------------------
# Argument checks


def _check_inputs(weights: torch.Tensor, layout: TableLayout, indices: torch.Tensor,
                  offsets: torch.Tensor, per_sample_weights: torch.Tensor | None,
                  mode: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    if not isinstance(layout, TableLayout):
        raise TypeError(f"layout must be a TableLayout, got {type(layout).__name__}")
    for name, t in (("weights", weights), ("indices", indices), ("offsets", offsets)):
        _checks.tensor(t, name)
    if weights.dtype not in WEIGHT_DTYPES:
        raise TypeError(f"weights has dtype {weights.dtype}; expected float32, float16, bfloat16 "
                        "or float64")
    if weights.dim() != 1 or weights.numel() != layout.numel:
        raise ValueError(f"weights must be 1-D with {layout.numel} elements (the tables' rows x "
                         f"dims), got shape {tuple(weights.shape)}")
    if not weights.is_contiguous():
        raise ValueError("weights must be contiguous")
    if indices.dtype not in INDEX_DTYPES:
        raise TypeError(f"indices has dtype {indices.dtype}; expected int32 or int64")
    if offsets.dtype not in INDEX_DTYPES:
        raise TypeError(f"offsets has dtype {offsets.dtype}; expected int32 or int64")
    if indices.dim() != 1:
        raise ValueError(f"indices must be 1-D, got shape {tuple(indices.shape)}")
    if offsets.dim() != 1 or offsets.numel() < 1 or (offsets.numel() - 1) % layout.T != 0:
        raise ValueError(f"offsets must be 1-D with T * B + 1 entries (T = {layout.T}), got "
                         f"shape {tuple(offsets.shape)}")
    for name, t in (("indices", indices), ("offsets", offsets)):
        if t.device != weights.device:
            raise ValueError(f"{name} is on {t.device} but weights are on {weights.device}")
    if mode not in POOLING:
        raise ValueError(f"mode must be 'sum' or 'mean', got {mode!r}")
    if per_sample_weights is not None:
        _checks.tensor(per_sample_weights, "per_sample_weights")
        if mode != "sum":
            raise ValueError("per_sample_weights is only supported with mode='sum' "
                             "(as in torch.nn.EmbeddingBag)")
        if per_sample_weights.dtype not in WEIGHT_DTYPES:
            raise TypeError(f"per_sample_weights has dtype {per_sample_weights.dtype}; expected a "
                            "floating dtype")
        if per_sample_weights.shape != indices.shape:
            raise ValueError(f"per_sample_weights has shape {tuple(per_sample_weights.shape)} but "
                             f"indices has shape {tuple(indices.shape)}")
        if per_sample_weights.device != weights.device:
            raise ValueError(f"per_sample_weights is on {per_sample_weights.device} but weights "
                             f"are on {weights.device}")
    if weights.device.type == "cuda":
        if layout.num_rows >= 2**31 - 1:
            raise ValueError("the CUDA backend supports fewer than 2^31 - 1 rows in all tables")
        if indices.numel() > 2**30:
            raise ValueError("the CUDA backend supports at most 2^30 indices per call")
    if offsets.dtype != indices.dtype:
        # One dtype for the kernels: the wider one, so that no offset or index wraps around.
        indices, offsets = indices.to(torch.int64), offsets.to(torch.int64)
    return indices.contiguous(), offsets.contiguous(), per_sample_weights


def validate(layout: TableLayout, indices: torch.Tensor, offsets: torch.Tensor) -> None:
    """Raises ValueError if ``offsets`` are malformed (first not 0, last not ``len(indices)``,
    decreasing) or an index is outside its table. One pass over both tensors; on a GPU one
    synchronization (skipped under CUDA graph capture and torch.compile tracing: the kernels
    then leave bad indices out instead of reading outside the weights)."""
    if not host_checks_enabled(indices, offsets):
        return
    if has_native("tbe_validate", indices.device):
        hcum = layout.meta(indices.device)[2]
        code = int(torch.ops.mlperf_fast.tbe_validate(hcum, indices, offsets).item())
    else:
        code = _validate_torch(layout, indices, offsets)
    if code == _VALID:
        return
    kind, pos = divmod(code, _ERROR_SHIFT)
    n = indices.numel()
    if kind == 1:
        raise ValueError(f"offsets[0] must be 0, got {int(offsets[0])}")
    if kind == 2:
        raise ValueError(f"offsets[-1] must equal the number of indices ({n}), got "
                         f"{int(offsets[-1])}")
    if kind == 3:
        raise ValueError(f"offsets must be non-decreasing: offsets[{pos}] = {int(offsets[pos])} < "
                         f"offsets[{pos - 1}] = {int(offsets[pos - 1])}")
    B = (offsets.numel() - 1) // layout.T
    bag = int(torch.searchsorted(offsets.cpu(), torch.tensor(pos, dtype=offsets.dtype),
                                 right=True)) - 1
    t = min(bag // max(B, 1), layout.T - 1)
    raise ValueError(f"indices[{pos}] = {int(indices[pos])} is out of range for table {t} "
                     f"({layout.rows[t]} rows)")


def _validate_torch(layout: TableLayout, indices: torch.Tensor, offsets: torch.Tensor) -> int:
    off = offsets.cpu().long()
    n = indices.numel()
    if int(off[0]) != 0:
        return 1 * _ERROR_SHIFT
    if int(off[-1]) != n:
        return 2 * _ERROR_SHIFT + off.numel() - 1
    bad = torch.nonzero(off[1:] < off[:-1])
    if bad.numel():
        return 3 * _ERROR_SHIFT + int(bad[0]) + 1
    B = (off.numel() - 1) // layout.T
    lengths = off[1:] - off[:-1]
    table = torch.arange(layout.T * B) // max(B, 1)
    rows = torch.tensor(layout.rows, dtype=torch.int64)[table].repeat_interleave(lengths)
    idx = indices.cpu().long()
    bad = torch.nonzero((idx < 0) | (idx >= rows))
    return _VALID if bad.numel() == 0 else 4 * _ERROR_SHIFT + int(bad[0])


# --------------------------------------------------------------------------------------------
# The pure-PyTorch implementation (also the reference for the kernels' tests)


def _per_table(layout: TableLayout, indices: torch.Tensor, offsets: torch.Tensor):
    B = (offsets.numel() - 1) // layout.T
    off = offsets.long()
    bounds = off[:: max(B, 1)].tolist() if B > 0 else [0] * (layout.T + 1)
    for t in range(layout.T):
        lo, hi = bounds[t], bounds[t + 1] if B > 0 else 0
        yield t, B, lo, hi, off[t * B:(t + 1) * B] - lo


def tbe_forward_torch(weights: torch.Tensor, layout: TableLayout, indices: torch.Tensor,
                      offsets: torch.Tensor, per_sample_weights: torch.Tensor | None = None,
                      mode: str = "sum") -> torch.Tensor:
    """torch.nn.functional.embedding_bag per table; differentiable in weights and
    per_sample_weights. Reduced in float32 (float64 for float64 weights)."""
    acc = torch.float64 if weights.dtype == torch.float64 else torch.float32
    tables = layout.split(weights)
    outs = []
    for t, B, lo, hi, off_t in _per_table(layout, indices, offsets):
        psw = None if per_sample_weights is None else per_sample_weights[lo:hi].to(acc)
        outs.append(torch.nn.functional.embedding_bag(
            indices[lo:hi].long(), tables[t].to(acc), off_t, mode=mode, per_sample_weights=psw))
    B = (offsets.numel() - 1) // layout.T
    return torch.cat(outs, dim=1).to(weights.dtype) if outs else weights.new_zeros(B, 0)


def _row_grads_torch(grad_output: torch.Tensor, weights: torch.Tensor, layout: TableLayout,
                     indices: torch.Tensor, offsets: torch.Tensor,
                     per_sample_weights: torch.Tensor | None, mode: str) -> torch.Tensor:
    """The dense gradient of the flat weights, in the accumulation dtype."""
    acc = torch.float64 if weights.dtype == torch.float64 else torch.float32
    w = weights.detach().to(acc).requires_grad_(True)
    with torch.enable_grad():
        out = tbe_forward_torch(w, layout, indices, offsets,
                                None if per_sample_weights is None else per_sample_weights.detach(),
                                mode)
        (grad,) = torch.autograd.grad(out, w, grad_output.to(acc), allow_unused=True)
    return torch.zeros_like(w) if grad is None else grad


def tbe_update_torch_(grad_output: torch.Tensor, weights: torch.Tensor, layout: TableLayout,
                      indices: torch.Tensor, offsets: torch.Tensor,
                      per_sample_weights: torch.Tensor | None, mode: str, optimizer: str,
                      lr: float, eps: float, momentum: torch.Tensor | None) -> None:
    """Dense equivalent of the fused update: untouched rows have a zero gradient, which leaves
    them (and their Adagrad state) unchanged."""
    g = _row_grads_torch(grad_output, weights, layout, indices, offsets, per_sample_weights, mode)
    if optimizer == "sgd":
        weights.copy_((weights.to(g.dtype) - lr * g).to(weights.dtype))
        return
    for t, (o, r, d) in enumerate(zip(layout.weights_offsets, layout.rows, layout.dims)):
        gt = g[o:o + r * d].view(r, d)
        h = layout.hash_size_cumsum[t]
        m = momentum[h:h + r].to(g.dtype) + gt.pow(2).mean(dim=1)
        momentum[h:h + r] = m.to(momentum.dtype)
        wt = weights[o:o + r * d].view(r, d)
        wt.copy_((wt.to(g.dtype) - (lr / (m.sqrt() + eps)).unsqueeze(1) * gt).to(weights.dtype))


# --------------------------------------------------------------------------------------------
# Dispatch and autograd


def _backend(device: torch.device, backend: str) -> str:
    return TBE.choose(device, backend)


def _backward_backend(chosen: str, device: torch.device) -> str:
    """The Triton backend has a forward kernel only; its backward runs natively where built."""
    if chosen != "triton":
        return chosen
    return "native" if has_native("tbe_backward_", device) else "torch"


def _check_cuda_dims(layout: TableLayout, device: torch.device) -> None:
    if device.type == "cuda" and layout.max_D > CUDA_MAX_DIM:
        raise ValueError(f"the CUDA backward supports dims up to {CUDA_MAX_DIM}; the widest table "
                         f"has {layout.max_D}")


def _forward(weights, layout, indices, offsets, psw, mode, chosen):
    if chosen == "triton":
        w_off, d_off, _ = layout.meta(weights.device)
        return tbe_forward_triton(weights, w_off, d_off, indices, offsets, mode == "mean", psw,
                                  layout.total_D, layout.max_D)
    if chosen == "native":
        w_off, d_off, _ = layout.meta(weights.device)
        return torch.ops.mlperf_fast.tbe_forward(weights, w_off, d_off, indices, offsets,
                                                 POOLING[mode], psw, layout.total_D)
    return tbe_forward_torch(weights.detach(), layout, indices, offsets,
                             None if psw is None else psw.detach(), mode)


def _backward_(grad_output, weights, layout, indices, offsets, psw, mode, update, lr, eps,
               momentum, grad, chosen):
    chosen = _backward_backend(chosen, weights.device)
    if chosen == "native":
        w_off, d_off, hcum = layout.meta(weights.device)
        torch.ops.mlperf_fast.tbe_backward_(
            grad_output.contiguous(), weights, w_off, d_off, hcum, indices, offsets,
            POOLING[mode], psw, UPDATES[update], float(lr), float(eps), momentum, grad,
            layout.num_rows, layout.max_D)
        return
    if update == "grad":
        grad.copy_(_row_grads_torch(grad_output, weights, layout, indices, offsets, psw, mode))
    else:
        tbe_update_torch_(grad_output, weights, layout, indices, offsets, psw, mode, update, lr,
                          eps, momentum)


def _psw_grad(grad_output, weights, layout, indices, offsets, chosen):
    chosen = _backward_backend(chosen, weights.device)
    if chosen == "native":
        w_off, d_off, _ = layout.meta(weights.device)
        return torch.ops.mlperf_fast.tbe_per_sample_weights_grad(
            grad_output.contiguous(), weights, w_off, d_off, indices, offsets)
    acc = torch.float64 if weights.dtype == torch.float64 else torch.float32
    psw = torch.ones(indices.numel(), dtype=acc, device=weights.device, requires_grad=True)
    with torch.enable_grad():
        out = tbe_forward_torch(weights.detach().to(acc), layout, indices, offsets, psw, "sum")
        (g,) = torch.autograd.grad(out, psw, grad_output.to(acc), allow_unused=True)
    return torch.zeros_like(psw) if g is None else g


class _TBEFunction(torch.autograd.Function):
    """Unfused: the backward returns the dense gradient of the weights."""

    @staticmethod
    def forward(ctx, weights, psw, layout, indices, offsets, mode, chosen):
        ctx.save_for_backward(weights, psw, indices, offsets)
        ctx.layout, ctx.mode, ctx.chosen = layout, mode, chosen
        return _forward(weights, layout, indices, offsets, psw, mode, chosen)

    @staticmethod
    def backward(ctx, grad_output):
        weights, psw, indices, offsets = ctx.saved_tensors
        grad_w = grad_psw = None
        if ctx.needs_input_grad[1]:
            grad_psw = _psw_grad(grad_output, weights, ctx.layout, indices, offsets,
                                 ctx.chosen).to(psw.dtype)
        if ctx.needs_input_grad[0]:
            grad_w = torch.zeros_like(weights)
            _backward_(grad_output, weights, ctx.layout, indices, offsets, psw, ctx.mode, "grad",
                       0.0, 0.0, None, grad_w, ctx.chosen)
        return grad_w, grad_psw, None, None, None, None, None


class _TBEFusedFunction(torch.autograd.Function):
    """Fused: the backward updates the weights (and Adagrad state) in place and returns no
    gradient for them."""

    @staticmethod
    def forward(ctx, weights, psw, layout, indices, offsets, mode, chosen, optimizer, lr, eps,
                momentum):
        # The weights are changed in place by the backward, after every use of them: they are
        # kept on ctx rather than saved, which would flag that change as an error.
        ctx.weights, ctx.momentum = weights, momentum
        ctx.save_for_backward(psw, indices, offsets)
        ctx.layout, ctx.mode, ctx.chosen = layout, mode, chosen
        ctx.optimizer, ctx.lr, ctx.eps = optimizer, lr, eps
        return _forward(weights, layout, indices, offsets, psw, mode, chosen)

    @staticmethod
    def backward(ctx, grad_output):
        psw, indices, offsets = ctx.saved_tensors
        grad_psw = None
        if ctx.needs_input_grad[1]:
            grad_psw = _psw_grad(grad_output, ctx.weights, ctx.layout, indices, offsets,
                                 ctx.chosen).to(psw.dtype)
        with torch.no_grad():
            _backward_(grad_output, ctx.weights.detach(), ctx.layout, indices, offsets,
                       None if psw is None else psw.detach(), ctx.mode, ctx.optimizer, ctx.lr,
                       ctx.eps, ctx.momentum, None, ctx.chosen)
        return (None, grad_psw) + (None,) * 9


def table_batched_embedding_bag(
    weights: torch.Tensor, layout: TableLayout, indices: torch.Tensor, offsets: torch.Tensor,
    per_sample_weights: torch.Tensor | None = None, mode: str = "sum", *,
    check_indices: bool = True, backend: str = "auto",
) -> torch.Tensor:
    """Pooled lookups of every table in one call.

    Args:
        weights: 1-D, ``layout.numel`` elements, float32, float16, bfloat16 or float64.
        layout: the tables' rows and dims (:class:`TableLayout`).
        indices: 1-D int32 or int64, rows within their table, table-major then bag-major.
        offsets: 1-D, ``T * B + 1`` entries (cast to the dtype of ``indices``).
        per_sample_weights: optional, the shape of ``indices``, any floating dtype ("sum" only).
        mode: "sum" or "mean".
        check_indices: check offsets and index ranges first (ValueError on a bad one); always
            done on the CPU; on a GPU it costs one pass over the indices and one sync.
        backend: "auto", "native" (C++/CUDA) or "torch".

    Returns:
        ``[B, sum(dims)]`` in the weights' dtype. Differentiable in ``weights`` (dense gradient)
        and ``per_sample_weights``.
    """
    indices, offsets, per_sample_weights = _check_inputs(weights, layout, indices, offsets,
                                                         per_sample_weights, mode)
    chosen = _backend(weights.device, backend)
    if check_indices or weights.device.type == "cpu":
        validate(layout, indices, offsets)
    if not torch.is_grad_enabled() or not (
            weights.requires_grad or (per_sample_weights is not None
                                      and per_sample_weights.requires_grad)):
        # Nothing to differentiate: the kernel alone, without autograd's bookkeeping.
        return _forward(weights, layout, indices, offsets, per_sample_weights, mode, chosen)
    if weights.requires_grad:
        _check_cuda_dims(layout, weights.device)
    return _TBEFunction.apply(weights, per_sample_weights, layout, indices, offsets, mode, chosen)


def table_batched_embedding_bag_fused(
    weights: torch.Tensor, layout: TableLayout, indices: torch.Tensor, offsets: torch.Tensor,
    per_sample_weights: torch.Tensor | None = None, mode: str = "sum", *, optimizer: str = "sgd",
    lr: float = 0.01, eps: float = 1e-8, momentum: torch.Tensor | None = None,
    check_indices: bool = True, backend: str = "auto",
) -> torch.Tensor:
    """As :func:`table_batched_embedding_bag`, but its backward applies ``optimizer`` to the
    touched rows of ``weights`` in place instead of returning their gradient:

    * "sgd": ``w[row] -= lr * g[row]`` (torch.optim.SGD on the sparse gradient);
    * "rowwise_adagrad": ``momentum[row] += mean(g[row] ** 2)``;
      ``w[row] -= lr * g[row] / (sqrt(momentum[row]) + eps)``, with ``momentum`` float32 of
      ``layout.num_rows`` entries (FBGEMM's EXACT_ROWWISE_ADAGRAD without weight decay).

    ``weights`` must require grad (so that the backward runs) and is not given a ``.grad``.
    """
    indices, offsets, per_sample_weights = _check_inputs(weights, layout, indices, offsets,
                                                         per_sample_weights, mode)
    if optimizer not in ("sgd", "rowwise_adagrad"):
        raise ValueError(f"optimizer must be 'sgd' or 'rowwise_adagrad', got {optimizer!r}")
    if optimizer == "rowwise_adagrad":
        if not isinstance(momentum, torch.Tensor) or momentum.dtype != torch.float32 or \
                momentum.shape != (layout.num_rows,) or momentum.device != weights.device or \
                not momentum.is_contiguous():
            raise ValueError(f"momentum must be a contiguous float32 tensor of shape "
                             f"({layout.num_rows},) on {weights.device} for rowwise_adagrad")
    lr = _checks.real(lr, "lr", lo=0.0, allow_inf=False)
    eps = _checks.real(eps, "eps", lo=0.0, allow_inf=False)
    chosen = _backend(weights.device, backend)
    _check_cuda_dims(layout, weights.device)
    if check_indices or weights.device.type == "cpu":
        validate(layout, indices, offsets)
    return _TBEFusedFunction.apply(weights, per_sample_weights, layout, indices, offsets, mode,
                                   chosen, optimizer, float(lr), float(eps), momentum)


def tbe_backward_update_(
    grad_output: torch.Tensor, weights: torch.Tensor, layout: TableLayout, indices: torch.Tensor,
    offsets: torch.Tensor, per_sample_weights: torch.Tensor | None = None, mode: str = "sum", *,
    optimizer: str = "sgd", lr: float = 0.01, eps: float = 1e-8,
    momentum: torch.Tensor | None = None, backend: str = "auto",
) -> None:
    """The fused backward alone: applies ``optimizer`` ("sgd", "rowwise_adagrad") to the rows
    touched by ``indices``, given ``grad_output`` ``[B, sum(dims)]`` of the pooled output, or with
    ``optimizer="grad"`` writes the gradient of each touched row into ``momentum`` (a zeroed
    tensor of the weights' shape and dtype)."""
    indices, offsets, per_sample_weights = _check_inputs(weights, layout, indices, offsets,
                                                         per_sample_weights, mode)
    if optimizer not in UPDATES:
        raise ValueError(f"optimizer must be one of {tuple(UPDATES)}, got {optimizer!r}")
    B = (offsets.numel() - 1) // layout.T
    if not isinstance(grad_output, torch.Tensor) or grad_output.shape != (B, layout.total_D) or \
            grad_output.dtype != weights.dtype or grad_output.device != weights.device:
        raise ValueError(f"grad_output must be a [{B}, {layout.total_D}] {weights.dtype} tensor on "
                         f"{weights.device}")
    grad = None
    if optimizer == "grad":
        grad, momentum = momentum, None
        if not isinstance(grad, torch.Tensor) or grad.shape != weights.shape or \
                grad.dtype != weights.dtype or not grad.is_contiguous():
            raise ValueError("optimizer='grad' needs a zeroed contiguous tensor like weights, "
                             "passed as momentum")
    elif optimizer == "rowwise_adagrad":
        if not isinstance(momentum, torch.Tensor) or momentum.dtype != torch.float32 or \
                momentum.shape != (layout.num_rows,) or momentum.device != weights.device:
            raise ValueError(f"momentum must be a float32 tensor of shape ({layout.num_rows},) "
                             f"on {weights.device}")
    lr = _checks.real(lr, "lr", lo=0.0, allow_inf=False)
    eps = _checks.real(eps, "eps", lo=0.0, allow_inf=False)
    chosen = _backend(weights.device, backend)
    _check_cuda_dims(layout, weights.device)
    if weights.device.type == "cpu":
        validate(layout, indices, offsets)
    with torch.no_grad():
        _backward_(grad_output, weights, layout, indices, offsets, per_sample_weights, mode,
                   optimizer, lr, eps, momentum, grad, chosen)


def _tbe_forward_triton(weights, weights_offsets, D_offsets, indices, offsets, mean,
                       per_sample_weights, total_D, max_D):
    from mlperf_fast.kernels import table_batched_embedding as kernel

    return kernel.tbe_forward(weights, weights_offsets, D_offsets, indices, offsets, mean,
                              per_sample_weights, total_D, max_D)


tbe_forward_triton = custom_op(
    "tbe_forward_triton",
    "(Tensor weights, Tensor weights_offsets, Tensor D_offsets, Tensor indices, Tensor offsets, "
    "bool mean, Tensor? per_sample_weights, int total_D, int max_D) -> Tensor",
    _tbe_forward_triton)
# The table's kernels take the layout's tensors (native, Triton) or the layout itself (torch):
# _forward calls each in its own way; the table decides which.
TBE = register_op("table_batched_embedding_bag", native="tbe_forward", triton=tbe_forward_triton,
                  torch_fn=tbe_forward_torch)
