"""LSTM: a drop-in for torch.nn.LSTM (unidirectional, no projection) on the fused LSTM layer.

Parameters carry nn.LSTM's names, shapes and initialization (weight_ih_l{k}, weight_hh_l{k},
bias_ih_l{k}, bias_hh_l{k}), so a state_dict of one loads into the other unchanged.

``impl`` picks the kernel per call:
  "fused"  mlperf_fast.ops.lstm_layer: per step one GEMM and one fused cell kernel.
  "cudnn"  torch's own LSTM (cuDNN on a GPU, ATen on the CPU).
  "auto"   cuDNN for sequences longer than ``FUSED_MAX_STEPS`` on a GPU and whenever the input is on
           the CPU; the fused layer for short sequences on a GPU (step-by-step decoding, where
           cuDNN's per-call setup dominates). The threshold is to be set from
           benchmarks/ops/bench_lstm_cell.py, which measures both on the RNN-T shapes.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from mlperf_fast.ops.lstm_cell import lstm_layer

IMPLS = ("auto", "fused", "cudnn")
FUSED_MAX_STEPS = 8


class LSTM(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None, *, impl: str = "auto") -> None:
        super().__init__()
        if bidirectional:
            raise ValueError("bidirectional=True is not supported (RNN-T's LSTMs are unidirectional)")
        if proj_size:
            raise ValueError("proj_size > 0 is not supported")
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be in [0, 1], got {dropout}")
        if num_layers < 1 or hidden_size < 1 or input_size < 1:
            raise ValueError("input_size, hidden_size and num_layers must be positive")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.proj_size, self.impl = False, 0, impl
        kw = {"device": device, "dtype": dtype}
        for k in range(num_layers):
            inp = input_size if k == 0 else hidden_size
            setattr(self, f"weight_ih_l{k}", nn.Parameter(torch.empty(4 * hidden_size, inp, **kw)))
            setattr(self, f"weight_hh_l{k}",
                    nn.Parameter(torch.empty(4 * hidden_size, hidden_size, **kw)))
            if bias:
                setattr(self, f"bias_ih_l{k}", nn.Parameter(torch.empty(4 * hidden_size, **kw)))
                setattr(self, f"bias_hh_l{k}", nn.Parameter(torch.empty(4 * hidden_size, **kw)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def _layer_params(self, k: int):
        b_ih = getattr(self, f"bias_ih_l{k}") if self.bias else None
        b_hh = getattr(self, f"bias_hh_l{k}") if self.bias else None
        return getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}"), b_ih, b_hh

    def _use_fused(self, x: torch.Tensor, steps: int) -> bool:
        if self.impl != "auto":
            return self.impl == "fused"
        return x.device.type == "cuda" and steps <= FUSED_MAX_STEPS

    def forward(self, input: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor] | None = None):
        """input (T, B, I) (or (B, T, I) with batch_first, or unbatched (T, I)); hx = (h_0, c_0),
        each (num_layers, B, H). Returns ``output, (h_n, c_n)`` as torch.nn.LSTM does."""
        if isinstance(input, nn.utils.rnn.PackedSequence):
            raise TypeError("PackedSequence input is not supported; pass a padded tensor")
        unbatched = input.dim() == 2
        if unbatched:
            input = input.unsqueeze(1)
            if hx is not None:
                hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        elif input.dim() != 3:
            raise ValueError(f"input must be 2-D or 3-D, got shape {tuple(input.shape)}")
        x = input.transpose(0, 1) if self.batch_first else input
        steps, bsz, _ = x.shape
        if x.shape[2] != self.input_size:
            raise ValueError(f"input has {x.shape[2]} features, expected {self.input_size}")
        if hx is None:
            zeros = x.new_zeros(self.num_layers, bsz, self.hidden_size)
            hx = (zeros, zeros)
        h0, c0 = hx
        if self._use_fused(x, steps):
            hs, cs = [], []
            for k in range(self.num_layers):
                if k > 0 and self.dropout > 0 and self.training:
                    x = nn.functional.dropout(x, self.dropout, training=True)
                x, h, c = lstm_layer(x, h0[k], c0[k], *self._layer_params(k))
                hs.append(h)
                cs.append(c)
            out, h_n, c_n = x, torch.stack(hs), torch.stack(cs)
        else:
            weights = [p for k in range(self.num_layers) for p in self._layer_params(k)
                       if p is not None]
            out, h_n, c_n = torch._VF.lstm(x, (h0, c0), weights, self.bias, self.num_layers,
                                           self.dropout, self.training, False, False)
        if self.batch_first:
            out = out.transpose(0, 1)
        if unbatched:
            out, h_n, c_n = out.squeeze(1), h_n.squeeze(1), c_n.squeeze(1)
        return out, (h_n, c_n)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        return s + f", impl={self.impl!r}"
