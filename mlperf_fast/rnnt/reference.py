"""A plain-PyTorch port of the MLCommons reference RNN-T (rnn_speech_recognition/pytorch:
rnnt/model.py, common/rnn.py, rnnt/decoder.py), for parity tests and step benchmarks.

The computation is the reference's, tensor for tensor: (T, B, F) encoder input, StackTime by
shifted copies, the prediction network's zero start vector, the joint over the full (B, T, U+1)
lattice, and the utterance-by-utterance greedy decoder. The MLPerf weights_initialization events
are returned by ``initialized_tensors`` instead of being logged from inside the constructor.
"""
from __future__ import annotations

import torch
from torch import nn

from mlperf_fast.rnnt.config import ModelConfig


class LSTM(nn.Module):
    """common/rnn.py LSTM: torch.nn.LSTM (dropout between layers) plus dropout on the output;
    forget-gate bias set on bias_ih and scaled on bias_hh, then every tensor scaled."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, dropout: float,
                 forget_gate_bias: float | None, weights_init_scale: float = 1.0,
                 hidden_hidden_bias_scale: float = 0.0) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size=input_size, hidden_size=hidden_size,
                            num_layers=num_layers, dropout=dropout)
        self.dropout = nn.Dropout(dropout) if dropout else None
        if forget_gate_bias is not None:
            for name, _ in self.lstm.named_parameters():
                bias = getattr(self.lstm, name)
                if "bias_ih" in name:
                    bias.data[hidden_size:2 * hidden_size].fill_(forget_gate_bias)
                if "bias_hh" in name:
                    bias.data[hidden_size:2 * hidden_size] *= float(hidden_hidden_bias_scale)
        for name, v in self.named_parameters():
            if "weight" in name or "bias" in name:
                v.data *= float(weights_init_scale)

    def forward(self, x: torch.Tensor, h=None):
        x, h = self.lstm(x, h)
        if self.dropout is not None:
            x = self.dropout(x)
        return x, h


class StackTime(nn.Module):
    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = int(factor)

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor):
        seq = [x]  # (T, B, H)
        for i in range(1, self.factor):
            tmp = torch.zeros_like(x)
            tmp[:-i, :, :] = x[i:, :, :]
            seq.append(tmp)
        x_lens = (x_lens.int() + self.factor - 1) // self.factor
        return torch.cat(seq, dim=2)[::self.factor, :, :], x_lens


class RNNT(nn.Module):
    """The reference model. ``n_classes`` counts the blank (the last index)."""

    initialized_tensors = ("pre_rnn", "post_rnn", "pred_embed", "dec_rnn", "joint_pred",
                           "joint_enc", "joint_net")

    def __init__(self, n_classes: int, in_feats: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.pred_n_hid = cfg.pred_n_hid

        def rnn(inp: int, hid: int, layers: int, dropout: float) -> LSTM:
            return LSTM(inp, hid, layers, dropout, cfg.forget_gate_bias, cfg.weights_init_scale,
                        cfg.hidden_hidden_bias_scale)

        self.encoder = nn.ModuleDict({
            "pre_rnn": rnn(in_feats, cfg.enc_n_hid, cfg.enc_pre_rnn_layers, cfg.enc_dropout),
            "stack_time": StackTime(cfg.enc_stack_time_factor),
            "post_rnn": rnn(cfg.enc_stack_time_factor * cfg.enc_n_hid, cfg.enc_n_hid,
                            cfg.enc_post_rnn_layers, cfg.enc_dropout),
        })
        self.prediction = nn.ModuleDict({
            "embed": nn.Embedding(n_classes - 1, cfg.pred_n_hid),
            "dec_rnn": rnn(cfg.pred_n_hid, cfg.pred_n_hid, cfg.pred_rnn_layers, cfg.pred_dropout),
        })
        self.joint_pred = nn.Linear(cfg.pred_n_hid, cfg.joint_n_hid)
        self.joint_enc = nn.Linear(cfg.enc_n_hid, cfg.joint_n_hid)
        self.joint_net = nn.Sequential(nn.ReLU(inplace=True), nn.Dropout(p=cfg.joint_dropout),
                                       nn.Linear(cfg.joint_n_hid, n_classes))

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor, y: torch.Tensor,
                y_lens: torch.Tensor, state=None):
        """x (T, B, in_feats), y (B, U) -> logits (B, T', U+1, n_classes), lengths (B,)."""
        f, x_lens = self.encode(x, x_lens)
        g, _ = self.predict(y.long(), state)
        return self.joint(f, g), x_lens

    def encode(self, x: torch.Tensor, x_lens: torch.Tensor):
        x, _ = self.encoder["pre_rnn"](x, None)
        x, x_lens = self.encoder["stack_time"](x, x_lens)
        x, _ = self.encoder["post_rnn"](x, None)
        return x.transpose(0, 1), x_lens

    def predict(self, y: torch.Tensor | None, state=None, add_sos: bool = True):
        if y is not None:
            y = self.prediction["embed"](y)
        else:
            b = 1 if state is None else state[0].size(1)
            y = torch.zeros((b, 1, self.pred_n_hid), device=self.joint_enc.weight.device,
                            dtype=self.joint_enc.weight.dtype)
        if add_sos:
            b, _, h = y.shape
            y = torch.cat([y.new_zeros((b, 1, h)), y], dim=1).contiguous()
        g, hid = self.prediction["dec_rnn"](y.transpose(0, 1), state)
        return g.transpose(0, 1), hid

    def joint(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        f = self.joint_enc(f).unsqueeze(2)
        g = self.joint_pred(g).unsqueeze(1)
        return self.joint_net(f + g)


class GreedyDecoder:
    """rnnt/decoder.py RNNTGreedyDecoder: one utterance at a time, at most ``max_symbols`` per
    frame, stopping an utterance once it has more than ``max_symbol_per_sample`` symbols."""

    def __init__(self, blank_idx: int, max_symbols_per_step: int = 30,
                 max_symbol_per_sample: int | None = None) -> None:
        self.blank_idx = blank_idx
        self.max_symbols = max_symbols_per_step
        self.max_symbol_per_sample = max_symbol_per_sample

    @torch.no_grad()
    def decode(self, model: RNNT, x: torch.Tensor, x_lens: torch.Tensor) -> list[list[int]]:
        training = model.training
        model.eval()
        f, out_lens = model.encode(x, x_lens)
        out = [self._one(model, f[i, :, :].unsqueeze(1), int(out_lens[i]))
               for i in range(f.size(0))]
        model.train(training)
        return out

    def _one(self, model: RNNT, f: torch.Tensor, length: int) -> list[int]:
        hidden = None
        label: list[int] = []
        for t in range(length):
            if self.max_symbol_per_sample is not None and len(label) > self.max_symbol_per_sample:
                break
            ft = f[t, :, :].unsqueeze(0)
            not_blank, added = True, 0
            while not_blank and (self.max_symbols is None or added < self.max_symbols):
                if not label:
                    g, hidden_prime = model.predict(None, hidden, add_sos=False)
                else:
                    y = torch.tensor([[label[-1]]], dtype=torch.long, device=f.device)
                    g, hidden_prime = model.predict(y, hidden, add_sos=False)
                k = int(model.joint(ft, g)[0, 0, 0, :].argmax())
                if k == self.blank_idx:
                    not_blank = False
                else:
                    label.append(k)
                    hidden = hidden_prime
                added += 1
        return label
