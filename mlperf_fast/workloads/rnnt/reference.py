"""A plain-PyTorch port of the MLCommons reference RNN-T (rnn_speech_recognition/pytorch:
rnnt/model.py, common/rnn.py, rnnt/decoder.py), for parity tests and step benchmarks, with the
reference's loss and optimizer in plain PyTorch: ``transducer_loss`` (the transducer loss with
torchaudio.functional.rnnt_loss's signature and semantics) and ``ReferenceLAMB`` (apex's
FusedLAMB, which the reference trains with).

The computation is the reference's, tensor for tensor: (T, B, F) encoder input, StackTime by
shifted copies, the prediction network's zero start vector, the joint over the full (B, T, U+1)
lattice, and the utterance-by-utterance greedy decoder. The MLPerf weights_initialization events
are returned by ``initialized_tensors`` instead of being logged from inside the constructor.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

import torch
from torch import nn

from mlperf_fast.workloads.rnnt.config import ModelConfig


class LSTM(nn.Module):
    """common/rnn.py LSTM: torch.nn.LSTM (dropout between layers) plus dropout on the output;
    forget-gate bias set on bias_ih and scaled on bias_hh, then every tensor scaled."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, dropout: float,
                 forget_gate_bias: float | None, weights_init_scale: float = 1.0,
                 hidden_hidden_bias_scale: float = 0.0) -> None:
        super().__init__()
        with warnings.catch_warnings():
            # one layer with dropout, as the reference builds it: torch warns that nn.LSTM's
            # dropout (between layers) does nothing there; the output dropout below still runs
            warnings.filterwarnings("ignore", message="dropout option adds dropout")
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


# -- the reference's loss and optimizer -------------------------------------------------------

_NEG = -1e30  # a finite "log 0": keeps logaddexp's gradient finite where both terms are empty


def transducer_loss(logits: torch.Tensor, targets: torch.Tensor, logit_lengths: torch.Tensor,
                    target_lengths: torch.Tensor, blank: int = -1, clamp: float = -1,
                    reduction: str = "mean", fused_log_softmax: bool = True) -> torch.Tensor:
    """The RNN-T loss (negative log-likelihood of ``targets`` under the transducer lattice).

    logits (B, T, U+1, V) float (computed in float32), targets (B, U) int32,
    logit_lengths (B,) int32 (<= T), target_lengths (B,) int32 (<= U), blank in [-V, V),
    reduction "none" (B,) | "mean" (over the batch) | "sum". The forward variables are computed
    over the lattice's anti-diagonals (all cells with t + u = d at once), so the Python loop runs
    T + U - 1 times; gradients come from autograd through the recursion.
    """
    if logits.dim() != 4:
        raise ValueError(f"logits must be (B, T, U+1, V), got shape {tuple(logits.shape)}")
    b, t_max, u1, v = logits.shape
    if targets.shape != (b, u1 - 1):
        raise ValueError(f"targets must be ({b}, {u1 - 1}), got {tuple(targets.shape)}")
    if targets.dtype != torch.int32 or logit_lengths.dtype != torch.int32 \
            or target_lengths.dtype != torch.int32:
        raise TypeError("targets, logit_lengths and target_lengths must be int32")
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    if not -v <= blank < v:
        raise ValueError(f"blank {blank} is out of range for {v} classes")
    blank = blank % v
    if b == 0:
        out = logits.new_zeros((0,), dtype=torch.float32)
        return out if reduction == "none" else out.sum()
    if int(logit_lengths.min()) < 1 or int(logit_lengths.max()) > t_max:
        raise ValueError(f"logit_lengths must be in [1, {t_max}]")
    if int(target_lengths.min()) < 0 or int(target_lengths.max()) > u1 - 1:
        raise ValueError(f"target_lengths must be in [0, {u1 - 1}]")

    x = logits.float()
    lp = torch.log_softmax(x, dim=-1) if fused_log_softmax else x
    if clamp > 0:  # torchaudio clamps the gradient of the logits; the forward is unchanged
        lp = _ClampGrad.apply(lp, float(clamp))
    lp_blank = lp[..., blank]  # (B, T, U+1)
    tgt = targets.long().clamp(0, v - 1)
    lp_emit = torch.gather(lp[:, :, :-1, :], 3,
                           tgt[:, None, :, None].expand(b, t_max, u1 - 1, 1)).squeeze(3)  # (B,T,U)

    # skew: cell (t, u) goes to (d = t + u, u); cells off the lattice hold _NEG
    dev = logits.device
    n_diag = t_max + u1 - 1
    d_idx = torch.arange(n_diag, device=dev)[:, None]
    u_idx = torch.arange(u1, device=dev)[None, :]
    t_of = d_idx - u_idx  # (D, U+1)
    valid = (t_of >= 0) & (t_of < t_max)
    t_clamped = t_of.clamp(0, t_max - 1)

    def skew(a: torch.Tensor, width: int) -> torch.Tensor:  # (B, T, W) -> (B, D, W)
        g = a[:, t_clamped[:, :width], u_idx[:, :width].expand(n_diag, width)]
        return g.masked_fill(~valid[None, :, :width], _NEG)

    blank_s, emit_s = skew(lp_blank, u1), skew(lp_emit, u1 - 1)
    neg = x.new_full((b, 1), _NEG)
    alpha = torch.cat([x.new_zeros((b, 1)), x.new_full((b, u1 - 1), _NEG)], dim=1)
    alphas = [alpha]
    for d in range(1, n_diag):
        from_blank = alpha + blank_s[:, d - 1]
        from_emit = torch.cat([neg, alpha[:, :-1] + emit_s[:, d - 1]], dim=1)
        alpha = torch.logaddexp(from_blank, from_emit).masked_fill(~valid[d][None], _NEG)
        alphas.append(alpha)
    stacked = torch.stack(alphas, dim=1)  # (B, D, U+1)
    tl, ul = logit_lengths.long(), target_lengths.long()
    rows = torch.arange(b, device=dev)
    final = stacked[rows, tl - 1 + ul, ul] + lp_blank[rows, tl - 1, ul]
    loss = -final
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


class _ClampGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, clamp: float) -> torch.Tensor:
        ctx.clamp = clamp
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        return g.clamp(-ctx.clamp, ctx.clamp), None


class ReferenceLAMB(torch.optim.Optimizer):
    """LAMB as apex.optimizers.FusedLAMB computes it (adam_w_mode, grad averaging, bias
    correction): the gradients of all groups are first scaled so that their global L2 norm is
    at most ``max_grad_norm``; then per tensor, Adam's update plus decoupled weight decay,
    scaled by the trust ratio ||p|| / ||update|| (1 when either norm is 0; the ratio is applied
    where weight_decay != 0, as apex does without use_nv_lamb)."""

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.01, max_grad_norm: float = 1.0,
                 bias_correction: bool = True) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError("lr, eps and weight_decay must be non-negative")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      bias_correction=bias_correction))
        self.max_grad_norm = max_grad_norm

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        loss = closure() if closure is not None else None
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return loss
        global_norm = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
        clip = torch.where(global_norm > self.max_grad_norm,
                           global_norm / self.max_grad_norm, torch.ones_like(global_norm)) \
            if self.max_grad_norm > 0 else torch.ones_like(global_norm)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                state["step"] += 1
                step = state["step"]
                g = p.grad.float() / clip
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                if group["bias_correction"]:
                    bc1, bc2 = 1 - beta1 ** step, 1 - beta2 ** step
                else:
                    bc1 = bc2 = 1.0
                update = (m / bc1) / ((v / bc2).sqrt() + group["eps"])
                pf = p.float()
                if group["weight_decay"] != 0:
                    update = update + group["weight_decay"] * pf
                    w_norm = torch.linalg.vector_norm(pf)
                    u_norm = torch.linalg.vector_norm(update)
                    ratio = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm,
                                        torch.ones_like(w_norm))
                else:
                    ratio = 1.0
                p.copy_(pf - group["lr"] * ratio * update)
        return loss
