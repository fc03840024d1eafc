"""LSTM: a drop-in for torch.nn.LSTM on the fused LSTM layer.

Parameters carry nn.LSTM's names, shapes and initialization (weight_ih_l{k}, weight_hh_l{k},
bias_ih_l{k}, bias_hh_l{k}, with the suffix ``_reverse`` for the second direction and
weight_hr_l{k} with ``proj_size``), so a state_dict of one loads into the other unchanged.

``impl`` picks the kernel per call:
  "fused"  mlperf_fast.ops.lstm_layer: per step one GEMM and one fused cell kernel (the reverse
           direction runs on the time-reversed sequence). No ``proj_size``.
  "cudnn"  torch's own LSTM (cuDNN on a GPU, ATen on the CPU).
  "auto"   cuDNN for sequences longer than ``FUSED_MAX_STEPS`` on a GPU and whenever the input is on
           the CPU or the LSTM has a projection; the fused layer for short sequences on a GPU
           (step-by-step decoding, where cuDNN's per-call setup dominates). The threshold is to be
           set from benchmarks/ops/bench_lstm_cell.py, which measures both on the RNN-T shapes.

The input and ``hx`` are checked against the module (sizes, layer count, batch, dtype, device)
before any kernel runs, as torch.nn.LSTM checks them (dtypes only outside autocast, which
casts them); the error is an :class:`LSTMInputError`,
which is a TypeError, a ValueError and a RuntimeError at once, so that code written against
torch.nn.LSTM's errors (RuntimeError for hx, ValueError for the input's dtype) catches it.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from mlperf_fast.ops.lstm_cell import lstm_layer

IMPLS = ("auto", "fused", "cudnn")
FUSED_MAX_STEPS = 8


class LSTMInputError(TypeError, ValueError, RuntimeError):
    """A forward argument that does not fit the module (the message names it)."""


def _positive_int(name: str, value: object) -> int:
    # torch.nn.LSTM's error types: TypeError for a non-int, ValueError for a non-positive int.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class LSTM(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None, *, impl: str = "auto") -> None:
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size),
                            ("num_layers", num_layers)):
            _positive_int(name, value)
        for name, value in (("bias", bias), ("batch_first", batch_first)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} should be of type bool, got: {type(value).__name__}")
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or \
                not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
        if isinstance(proj_size, bool) or not isinstance(proj_size, int) or proj_size < 0:
            raise ValueError(f"proj_size must be an integer >= 0, got {proj_size!r}")
        if proj_size >= hidden_size:
            raise ValueError(f"proj_size ({proj_size}) must be smaller than hidden_size "
                             f"({hidden_size})")
        if proj_size and impl == "fused":
            raise ValueError("impl='fused' has no projection (proj_size > 0); use 'auto' or "
                             "'cudnn'")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bool(bias), bool(batch_first), float(dropout)
        self.bidirectional, self.proj_size, self.impl = bool(bidirectional), proj_size, impl
        kw = {"device": device, "dtype": dtype}
        h, out = hidden_size, proj_size or hidden_size
        dirs = 2 if bidirectional else 1
        for k in range(num_layers):
            inp = input_size if k == 0 else out * dirs
            for sfx in ("", "_reverse")[:dirs]:
                self.register_parameter(f"weight_ih_l{k}{sfx}",
                                        nn.Parameter(torch.empty(4 * h, inp, **kw)))
                self.register_parameter(f"weight_hh_l{k}{sfx}",
                                        nn.Parameter(torch.empty(4 * h, out, **kw)))
                if bias:
                    self.register_parameter(f"bias_ih_l{k}{sfx}",
                                            nn.Parameter(torch.empty(4 * h, **kw)))
                    self.register_parameter(f"bias_hh_l{k}{sfx}",
                                            nn.Parameter(torch.empty(4 * h, **kw)))
                if proj_size:
                    self.register_parameter(f"weight_hr_l{k}{sfx}",
                                            nn.Parameter(torch.empty(proj_size, h, **kw)))
        self.reset_parameters()

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def _layer_params(self, k: int, sfx: str = "") -> list[torch.Tensor | None]:
        """w_ih, w_hh, b_ih, b_hh (None without bias) and, with a projection, w_hr."""
        ps = [getattr(self, f"weight_ih_l{k}{sfx}"), getattr(self, f"weight_hh_l{k}{sfx}")]
        ps += ([getattr(self, f"bias_ih_l{k}{sfx}"), getattr(self, f"bias_hh_l{k}{sfx}")]
               if self.bias else [None, None])
        if self.proj_size:
            ps.append(getattr(self, f"weight_hr_l{k}{sfx}"))
        return ps

    def _flat_weights(self) -> list[torch.Tensor]:
        # torch's order: per layer, per direction: w_ih, w_hh, b_ih, b_hh, w_hr.
        return [p for k in range(self.num_layers) for sfx in ("", "_reverse")[:self.num_directions]
                for p in self._layer_params(k, sfx) if p is not None]

    def _use_fused(self, x: torch.Tensor, steps: int) -> bool:
        if self.impl != "auto":
            return self.impl == "fused"
        return x.device.type == "cuda" and steps <= FUSED_MAX_STEPS and not self.proj_size

    # -- checks --------------------------------------------------------------------------------

    def _check_input(self, x: torch.Tensor) -> None:
        """x: (T, B, I), time-major."""
        w = self.weight_ih_l0
        if not x.is_floating_point():
            raise LSTMInputError(f"input must be floating point, got {x.dtype}")
        if x.dtype != w.dtype and not torch.is_autocast_enabled(x.device.type):
            raise LSTMInputError(f"input dtype ({x.dtype}) does not match the weights' dtype "
                                 f"({w.dtype}); convert the input or the module")
        if x.device != w.device:
            raise LSTMInputError(f"input is on {x.device}, the weights on {w.device}")
        if x.shape[2] != self.input_size:
            raise LSTMInputError(f"input has {x.shape[2]} features, expected input_size "
                                 f"{self.input_size}")
        if x.shape[0] == 0:
            raise LSTMInputError("input has sequence length 0; expected at least one step")

    def _check_hx(self, hx: object, x: torch.Tensor, unbatched: bool
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """hx against the input and the module; returns (h_0, c_0) with a batch dimension."""
        if not isinstance(hx, (tuple, list)) or len(hx) != 2 or \
                not all(torch.is_tensor(t) for t in hx):
            raise LSTMInputError(f"hx must be a tuple (h_0, c_0) of two tensors, got "
                                 f"{type(hx).__name__}")
        want_dim = 2 if unbatched else 3
        if hx[0].dim() != want_dim or hx[1].dim() != want_dim:
            kind = "unbatched 2-D" if unbatched else "batched 3-D"
            raise LSTMInputError(f"for {kind} input, hx = (h_0, c_0) must be {want_dim}-D, got "
                                 f"({hx[0].dim()}-D, {hx[1].dim()}-D)")
        h0, c0 = (hx[0].unsqueeze(1), hx[1].unsqueeze(1)) if unbatched else hx
        layers, bsz = self.num_layers * self.num_directions, x.shape[1]
        for name, t, size in (("h_0", h0, self.proj_size or self.hidden_size),
                              ("c_0", c0, self.hidden_size)):
            want = (layers, bsz, size)
            if tuple(t.shape) != want:
                got = tuple(t.shape[i] for i in range(t.dim()) if not (unbatched and i == 1))
                exp = (layers, size) if unbatched else want
                raise LSTMInputError(f"hx: {name} of shape {got}, expected {exp} "
                                     f"(num_layers * num_directions, batch, size)")
            if t.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
                raise LSTMInputError(f"hx: {name} of dtype {t.dtype}, the input {x.dtype}")
            if t.device != x.device:
                raise LSTMInputError(f"hx: {name} is on {t.device}, the input on {x.device}")
        return h0, c0

    # -- forward -------------------------------------------------------------------------------

    def forward(self, input: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor] | None = None):
        """input (T, B, I) (or (B, T, I) with batch_first, or unbatched (T, I) whatever
        batch_first says, as torch.nn.LSTM reads it); hx = (h_0, c_0), each
        (num_layers * num_directions, B, H_out / H) (without B for unbatched input), where
        H_out is proj_size or hidden_size. Returns ``output, (h_n, c_n)`` as torch.nn.LSTM does:
        output (T, B, num_directions * H_out) (batch_first: (B, T, ...); unbatched: (T, ...))."""
        if isinstance(input, nn.utils.rnn.PackedSequence):
            raise TypeError("PackedSequence input is not supported; pass a padded tensor")
        if not torch.is_tensor(input):
            raise TypeError(f"input must be a tensor, got {type(input).__name__}")
        if input.dim() not in (2, 3):
            raise LSTMInputError(f"input must be 2-D (unbatched) or 3-D, got shape "
                                 f"{tuple(input.shape)}")
        unbatched = input.dim() == 2
        if unbatched:
            x = input.unsqueeze(1)
        else:
            x = input.transpose(0, 1) if self.batch_first else input
        self._check_input(x)
        steps, bsz, _ = x.shape
        if hx is None:
            layers = self.num_layers * self.num_directions
            h0 = x.new_zeros(layers, bsz, self.proj_size or self.hidden_size)
            c0 = x.new_zeros(layers, bsz, self.hidden_size)
        else:
            h0, c0 = self._check_hx(hx, x, unbatched)
        if self._use_fused(x, steps):
            out, h_n, c_n = self._fused(x, h0, c0)
        else:
            out, h_n, c_n = torch._VF.lstm(x, (h0, c0), self._flat_weights(), self.bias,
                                           self.num_layers, self.dropout, self.training,
                                           self.bidirectional, False)
        if unbatched:
            return out.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
        if self.batch_first:
            out = out.transpose(0, 1)
        return out, (h_n, c_n)

    def _fused(self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor):
        steps, bsz, _ = x.shape
        dirs = self.num_directions
        if bsz == 0:  # nothing to compute; the kernels are not asked to
            out = x.new_zeros(steps, 0, dirs * self.hidden_size)
            return out, h0.clone(), c0.clone()
        hs, cs = [], []
        for k in range(self.num_layers):
            if k > 0 and self.dropout > 0 and self.training:
                x = nn.functional.dropout(x, self.dropout, training=True)
            outs = []
            for d, sfx in enumerate(("", "_reverse")[:dirs]):
                i = k * dirs + d
                seq = x.flip(0) if d else x
                y, h, c = lstm_layer(seq, h0[i], c0[i], *self._layer_params(k, sfx))
                outs.append(y.flip(0) if d else y)
                hs.append(h)
                cs.append(c)
            x = outs[0] if dirs == 1 else torch.cat(outs, dim=2)
        return x, torch.stack(hs), torch.stack(cs)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        return s + f", impl={self.impl!r}"
