"""The RNN-T that mlperf_fast trains: the reference's network (same parameters, same state_dict
keys, see reference.py) computed faster.

- Time stacking is a reshape of the zero-padded sequence, not shifted copies.
- The joint network and the transducer loss sit behind one call, ``joint_loss``, over the
  lattice cut to the batch's longest utterance and transcript. On CUDA it is
  ``mlperf_fast.ops.transducer_joint_loss``: the joint's activation, dropout, output layer and
  loss computed group by group, so the (B, T, U+1, V) logits are never held whole; on the CPU,
  the joint's logits and ``mlperf_fast.ops.rnnt_loss``.
- On CUDA, the LSTMs and the joint run under bf16 autocast; the loss is computed in float32.
- Greedy decoding runs the whole batch at once (``GreedyDecoder``), with the reference's
  symbol limits, and gives the reference's transcripts; on CUDA through
  ``mlperf_fast.ops.rnnt_greedy_decode`` (the inner step, with the fused LSTM cell, replayed as
  one CUDA graph).
"""
from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn

from mlperf_fast.harness.profiling import phase
from mlperf_fast.ops import rnnt_greedy_decode, rnnt_loss, transducer_joint_loss
from mlperf_fast.ops.rnnt_greedy import PredictionNet
from mlperf_fast.workloads.rnnt.config import ModelConfig
from mlperf_fast.workloads.rnnt.reference import LSTM


@contextlib.contextmanager
def _without_onednn():
    # torch's flags() also sets oneDNN's TF32 switch, which warns on builds without Intel GPUs
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
        with torch.backends.mkldnn.flags(enabled=False):
            yield


class RNNT(nn.Module):
    """``n_classes`` counts the blank, which is the last index."""

    initialized_tensors = ("pre_rnn", "post_rnn", "pred_embed", "dec_rnn", "joint_pred",
                           "joint_enc", "joint_net")

    def __init__(self, n_classes: int, in_feats: int, cfg: ModelConfig, amp: bool = True) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.blank = n_classes - 1
        self.stack = cfg.enc_stack_time_factor
        self.pred_n_hid = cfg.pred_n_hid
        self.amp = amp

        def rnn(inp: int, hid: int, layers: int, dropout: float) -> LSTM:
            return LSTM(inp, hid, layers, dropout, cfg.forget_gate_bias, cfg.weights_init_scale,
                        cfg.hidden_hidden_bias_scale)

        # ModuleDicts keep the reference's state_dict keys
        self.encoder = nn.ModuleDict({
            "pre_rnn": rnn(in_feats, cfg.enc_n_hid, cfg.enc_pre_rnn_layers, cfg.enc_dropout),
            "post_rnn": rnn(self.stack * cfg.enc_n_hid, cfg.enc_n_hid, cfg.enc_post_rnn_layers,
                            cfg.enc_dropout),
        })
        self.prediction = nn.ModuleDict({
            "embed": nn.Embedding(n_classes - 1, cfg.pred_n_hid),
            "dec_rnn": rnn(cfg.pred_n_hid, cfg.pred_n_hid, cfg.pred_rnn_layers, cfg.pred_dropout),
        })
        self.joint_pred = nn.Linear(cfg.pred_n_hid, cfg.joint_n_hid)
        self.joint_enc = nn.Linear(cfg.enc_n_hid, cfg.joint_n_hid)
        self.joint_net = nn.Sequential(nn.ReLU(inplace=True), nn.Dropout(p=cfg.joint_dropout),
                                       nn.Linear(cfg.joint_n_hid, n_classes))

    def _autocast(self, device: torch.device):
        if self.amp and device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cpu":
            # ATen's own LSTM is several times faster than oneDNN's for these sizes on CPU
            # (forward and backward of a 256-wide layer over 110 frames: 0.2 s against 1.8 s)
            return _without_onednn()
        return contextlib.nullcontext()

    # -- the network ----------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, x_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (T, B, in_feats) -> (B, ceil(T / stack), enc_n_hid), lengths (B,) int32."""
        x, _ = self.encoder["pre_rnn"](x, None)
        t, b, h = x.shape
        pad = (-t) % self.stack
        if pad:
            x = torch.cat([x, x.new_zeros((pad, b, h))])
        # frame j of the output is frames stack*j .. stack*j + stack-1, concatenated
        x = x.view(-1, self.stack, b, h).permute(0, 2, 1, 3).reshape(-1, b, self.stack * h)
        x_lens = torch.div(x_lens.int() + self.stack - 1, self.stack, rounding_mode="floor")
        x, _ = self.encoder["post_rnn"](x, None)
        return x.transpose(0, 1), x_lens.int()

    def predict(self, y: torch.Tensor) -> torch.Tensor:
        """y (B, U) labels -> (B, U+1, pred_n_hid), with the zero start vector first."""
        e = self.prediction["embed"](y.long())
        e = torch.cat([e.new_zeros((e.shape[0], 1, e.shape[2])), e], dim=1)
        g, _ = self.prediction["dec_rnn"](e.transpose(0, 1), None)
        return g.transpose(0, 1)

    def joint(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """f (B, T, enc), g (B, U+1, pred) -> logits (B, T, U+1, n_classes)."""
        return self.joint_net(self.joint_enc(f).unsqueeze(2) + self.joint_pred(g).unsqueeze(1))

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor, y: torch.Tensor,
                y_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference's forward: logits (B, T', U+1, n_classes) and their lengths."""
        with self._autocast(x.device):
            f, f_lens = self.encode(x, x_lens)
            return self.joint(f, self.predict(y)), f_lens

    def joint_loss(self, f: torch.Tensor, f_lens: torch.Tensor, g: torch.Tensor,
                   y: torch.Tensor, y_lens: torch.Tensor) -> torch.Tensor:
        """Mean transducer loss over the batch, from encoder and prediction outputs."""
        t, u = int(f_lens.max()), int(y_lens.max())
        if f.is_cuda:
            with self._autocast(f.device):
                fe = self.joint_enc(f[:, :t])
                ge = self.joint_pred(g[:, :u + 1])
            out = self.joint_net[2]
            dt = fe.dtype
            return transducer_joint_loss(
                fe, ge.to(dt), out.weight.to(dt), None if out.bias is None else out.bias.to(dt),
                y[:, :u], f_lens, y_lens, blank=self.blank, reduction="mean",
                dropout=self.joint_net[1].p if self.training else 0.0)
        with self._autocast(f.device):
            logits = self.joint(f[:, :t], g[:, :u + 1])
        return rnnt_loss(logits.float(), y[:, :u].int(), f_lens.int(), y_lens.int(),
                         blank=self.blank, reduction="mean")

    def loss(self, x: torch.Tensor, x_lens: torch.Tensor, y: torch.Tensor,
             y_lens: torch.Tensor) -> torch.Tensor:
        """x (T, B, in_feats), x_lens (B,), y (B, U) padded labels, y_lens (B,) -> scalar."""
        with self._autocast(x.device):
            with phase("encoder"):
                f, f_lens = self.encode(x, x_lens)
            with phase("prediction"):
                g = self.predict(y)
        with phase("joint+loss"):
            return self.joint_loss(f, f_lens, g, y, y_lens)


class GreedyDecoder:
    """Batched greedy decoding with the reference decoder's results (rnnt/decoder.py): every
    utterance advances its own frame pointer; a frame emits until the blank wins or
    ``max_symbols_per_step`` symbols were emitted; an utterance stops at a frame boundary once it
    holds more than ``max_symbol_per_sample`` symbols."""

    def __init__(self, blank_idx: int, max_symbols_per_step: int = 30,
                 max_symbol_per_sample: int | None = None) -> None:
        self.blank = blank_idx
        self.max_symbols = max_symbols_per_step
        self.max_per_sample = max_symbol_per_sample

    @torch.no_grad()
    def decode(self, model: RNNT, x: torch.Tensor, x_lens: torch.Tensor) -> list[list[int]]:
        training = model.training
        model.eval()
        try:
            with model._autocast(x.device):
                return self._decode(model, x, x_lens)
        finally:
            model.train(training)

    def _pred(self, model: RNNT, inp: torch.Tensor, state):
        g, state = model.prediction["dec_rnn"](inp.unsqueeze(0), state)
        return model.joint_pred(g[0]), state

    def _decode(self, model: RNNT, x: torch.Tensor, x_lens: torch.Tensor) -> list[list[int]]:
        f, f_lens = model.encode(x, x_lens)
        fe = model.joint_enc(f)  # (B, T, J)
        if fe.is_cuda:
            net = PredictionNet.from_modules(model.prediction["embed"],
                                             model.prediction["dec_rnn"].lstm, model.joint_pred,
                                             model.joint_net[2])
            # in float32, with the model's own weights: argmaxes as the reference takes them
            with torch.autocast("cuda", enabled=False):
                return rnnt_greedy_decode(fe.float(), f_lens, net, self.blank, self.max_symbols,
                                          max_symbols_per_sample=self.max_per_sample)
        b, dev = fe.shape[0], fe.device
        rows = torch.arange(b, device=dev)
        # start: the zero vector through a zero state (the reference's start of sequence)
        zero_in = torch.zeros((b, model.pred_n_hid), device=dev, dtype=fe.dtype)
        g, state_prime = self._pred(model, zero_in, None)
        state = None  # committed state (None = zeros) and state_prime = after the last label
        t = torch.zeros(b, dtype=torch.long, device=dev)
        added = torch.zeros(b, dtype=torch.long, device=dev)
        count = torch.zeros(b, dtype=torch.long, device=dev)
        lens = f_lens.to(dev).long()
        done = t >= lens
        labels: list[list[int]] = [[] for _ in range(b)]
        emitted_steps: list[tuple[torch.Tensor, torch.Tensor]] = []
        while not bool(done.all()):
            ft = fe[rows, t.clamp(max=fe.shape[1] - 1)]
            k = model.joint_net(ft + g).argmax(dim=-1)
            emit = ~done & (k != self.blank)
            emitted_steps.append((emit, k))
            if bool(emit.any()):
                count = count + emit.long()
                # commit the state after the previous label, then step on the new one
                m = emit[None, :, None]
                if state is None:
                    state = tuple(torch.zeros_like(s) for s in state_prime)
                state = tuple(torch.where(m, sp, s) for sp, s in zip(state_prime, state))
                emb = model.prediction["embed"](k.clamp(max=model.n_classes - 2))
                g_new, sp_new = self._pred(model, emb.to(fe.dtype), state)
                g = torch.where(emit[:, None], g_new, g)
                state_prime = tuple(torch.where(m, n, s) for n, s in zip(sp_new, state_prime))
            added = added + (~done).long()
            advance = ~done & (~emit | (added >= self.max_symbols))
            added = torch.where(advance, torch.zeros_like(added), added)
            t = t + advance.long()
            stop = advance & (t >= lens)
            if self.max_per_sample is not None:
                stop |= advance & (count > self.max_per_sample)
            done = done | stop
        if emitted_steps:
            emits = torch.stack([e for e, _ in emitted_steps]).cpu()
            ks = torch.stack([k for _, k in emitted_steps]).cpu()
            for step in range(emits.shape[0]):
                for i in torch.nonzero(emits[step]).flatten().tolist():
                    labels[i].append(int(ks[step, i]))
        return labels
