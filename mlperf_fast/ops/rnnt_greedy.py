"""Batched greedy RNN-T decoding, the MLPerf reference's algorithm for every utterance at once.

The reference decodes one utterance at a time: for each encoder frame t it evaluates the joint
on (f_t, g); while the argmax is not blank and fewer than ``max_symbols_per_step`` symbols were
emitted at t, it emits the label, advances the prediction network by that label, and evaluates
the joint again. Here all utterances advance together: at each inner step the joint and argmax
run for the whole batch, the prediction network steps for the whole batch (the fused LSTM cell
per layer) and its new state is kept only where a label was emitted. An utterance that reads
blank, or is past its length, waits for the next frame. The transcripts are those of the
one-at-a-time loop (rows of a GEMM do not interact).

The prediction network is the MLPerf one: an embedding of the previous label (the start
symbol, and only it, feeds a zero vector), a unidirectional LSTM stack, and the joint's
projection of its output; the joint is relu(f + g) then a Linear to the vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mlperf_fast.cuda_graphs import capture
from mlperf_fast.ops import _checks, _transducer
from mlperf_fast.ops.lstm_cell import LSTM_CELL, lstm_cell


@dataclass
class PredictionNet:
    """Weights of the prediction network and joint, as plain tensors.

    embedding: (classes - 1, E), one row per label other than blank (label k > blank at row
        k - 1); the start symbol feeds a zero vector;
    lstm: list of (w_ih (4H, I), w_hh (4H, H), b_ih (4H,) or None, b_hh (4H,) or None) per layer;
    pred_weight (J, H), pred_bias (J,) or None: the joint's projection of the LSTM output;
    joint_weight (V, J), joint_bias (V,) or None: the joint's output layer.
    """

    embedding: torch.Tensor
    lstm: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]]
    pred_weight: torch.Tensor
    pred_bias: torch.Tensor | None
    joint_weight: torch.Tensor
    joint_bias: torch.Tensor | None

    @staticmethod
    def from_modules(embedding: torch.nn.Embedding, lstm: torch.nn.Module,
                     pred_proj: torch.nn.Linear, joint_out: torch.nn.Linear) -> "PredictionNet":
        """From torch.nn.Embedding, torch.nn.LSTM or mlperf_fast.nn.LSTM, and two Linears."""
        layers = []
        for k in range(lstm.num_layers):
            b_ih = getattr(lstm, f"bias_ih_l{k}", None) if lstm.bias else None
            b_hh = getattr(lstm, f"bias_hh_l{k}", None) if lstm.bias else None
            layers.append((getattr(lstm, f"weight_ih_l{k}"), getattr(lstm, f"weight_hh_l{k}"),
                           b_ih, b_hh))
        return PredictionNet(embedding.weight, layers, pred_proj.weight, pred_proj.bias,
                             joint_out.weight, joint_out.bias)


def _pred_step(net: PredictionNet, x, h, c, backend):
    """One step of the LSTM stack from input x (B, E); h, c: lists of (B, H)."""
    new_h, new_c = [], []
    for k, (w_ih, w_hh, b_ih, b_hh) in enumerate(net.lstm):
        gx = F.linear(x, w_ih, b_ih)
        gh = F.linear(h[k], w_hh, b_hh)
        hk, ck = lstm_cell(gx, gh, c[k], backend=backend)
        new_h.append(hk)
        new_c.append(ck)
        x = hk
    return F.linear(x, net.pred_weight, net.pred_bias), new_h, new_c


@torch.no_grad()
def rnnt_greedy_decode(f: torch.Tensor, f_lengths: torch.Tensor, net: PredictionNet,
                       blank: int = -1, max_symbols_per_step: int = 30, *,
                       max_symbols_per_sample: int | None = None, backend: str = "auto",
                       cuda_graph: bool = True) -> list[list[int]]:
    """Greedy transcripts of a batch.

    Args:
        f: (B, T, J) encoder output after the joint's encoder projection (float32, bfloat16,
            float16 or float64; the weights of ``net`` in the same dtype, on the same device).
        f_lengths: (B,) int32/int64 frame counts, each in [0, T].
        net: the prediction network and joint (:class:`PredictionNet`).
        blank: blank class of the joint's output (negative counts from the end).
        max_symbols_per_step: most labels emitted at one frame (the reference's cap), >= 1.
        max_symbols_per_sample: None, or an utterance stops at the first frame it begins with
            more labels than this (the reference decoder's check, so up to
            ``max_symbols_per_step`` more may come in the frame that crosses it), >= 0.
        backend: backend of the LSTM cell ("auto", "triton", "torch").
        cuda_graph: on a GPU, replay the inner step (joint, argmax, prediction-network step,
            state update: ~25 kernels) as one CUDA graph; one host sync per inner step remains,
            to stop once no utterance emits.

    Returns:
        One list of label ids per utterance.
    """
    _checks.float_tensor(f, "f")
    if f.dim() != 3:
        raise _checks.ArgumentValueError(f"f must be a (B, T, J) tensor, got shape "
                                         f"{tuple(f.shape)}")
    _checks.integer_tensor(f_lengths, "f_lengths", _checks.INDEX_DTYPES)
    _checks.shape(f_lengths, "f_lengths", f.shape[:1])
    if not isinstance(net, PredictionNet):
        raise _checks.ArgumentTypeError(f"net must be a PredictionNet, got {type(net).__name__}")
    weights = [("embedding", net.embedding), ("pred_weight", net.pred_weight),
               ("pred_bias", net.pred_bias), ("joint_weight", net.joint_weight),
               ("joint_bias", net.joint_bias)]
    if not net.lstm:
        raise _checks.ArgumentValueError("net.lstm must hold at least one layer")
    for k, layer in enumerate(net.lstm):
        weights += [(f"lstm[{k}][{i}]", t) for i, t in enumerate(layer)]
    for name, t in weights:
        if t is None and ("bias" in name or name.startswith("lstm")):
            continue
        _checks.tensor(t, name)
        _checks.same_dtype(t, name, f, "f")
        _checks.same_device(t, name, f, "f")
    classes, joint_dim = net.joint_weight.shape
    if joint_dim != f.shape[2] or net.pred_weight.shape[0] != joint_dim:
        raise _checks.ArgumentValueError(
            f"the joint's width {joint_dim} and pred_weight {tuple(net.pred_weight.shape)} must "
            f"match f's last dimension {f.shape[2]}")
    if net.embedding.shape[0] != classes - 1:
        raise _checks.ArgumentValueError(
            f"embedding must have classes - 1 = {classes - 1} rows (every label but blank), got "
            f"{tuple(net.embedding.shape)}")
    hid = net.lstm[0][1].shape[1]
    width = net.embedding.shape[1]
    for k, (w_ih, w_hh, b_ih, b_hh) in enumerate(net.lstm):
        if w_ih.shape != (4 * hid, width) or w_hh.shape != (4 * hid, hid):
            raise _checks.ArgumentValueError(
                f"lstm[{k}] weights must be (4H, {width}) and (4H, H) with H = {hid}, got "
                f"{tuple(w_ih.shape)} and {tuple(w_hh.shape)}")
        for name, b in ((f"lstm[{k}][2]", b_ih), (f"lstm[{k}][3]", b_hh)):
            if b is not None and b.shape != (4 * hid,):
                raise _checks.ArgumentValueError(f"{name} must be ({4 * hid},), got "
                                                 f"{tuple(b.shape)}")
        width = hid
    if net.pred_weight.shape[1] != hid:
        raise _checks.ArgumentValueError(f"pred_weight must be (J, {hid}), got "
                                         f"{tuple(net.pred_weight.shape)}")
    blank = _transducer.check_blank(blank, classes)
    max_symbols_per_step = _checks.integer(max_symbols_per_step, "max_symbols_per_step", lo=1)
    if max_symbols_per_sample is not None:
        _checks.integer(max_symbols_per_sample, "max_symbols_per_sample", lo=0)
    lens = f_lengths.tolist()
    if any(not 0 <= n <= f.shape[1] for n in lens):
        raise _checks.ArgumentValueError(f"f_lengths must lie in [0, {f.shape[1]}], got {lens}")
    if backend == "auto" and f.dtype == torch.float64:
        backend = "torch"
    backend = LSTM_CELL.choose(f.device, backend)

    bsz, dev = f.shape[0], f.device
    h = [f.new_zeros(bsz, hid) for _ in net.lstm]
    c = [f.new_zeros(bsz, hid) for _ in net.lstm]
    g, h, c = _pred_step(net, f.new_zeros(bsz, net.embedding.shape[1]), h, c, backend)
    st = _State(ft=f.new_zeros(bsz, f.shape[2]), g=g, h=h, c=c,
                going=torch.zeros(bsz, dtype=torch.bool, device=dev),
                labels=torch.zeros(bsz, f.shape[1] * max_symbols_per_step + 1, dtype=torch.int64,
                                   device=dev),
                counts=torch.zeros(bsz, dtype=torch.int64, device=dev),
                rows=torch.arange(bsz, device=dev))
    step = lambda: _inner_step(st, net, blank, backend)  # noqa: E731
    if cuda_graph and dev.type == "cuda":
        # The capture's warm-up call runs with no utterance going, so it changes no state.
        step = capture(step)
    f_len = f_lengths.to(dev)
    for t in range(max(lens, default=0)):
        st.ft.copy_(f[:, t])
        torch.gt(f_len, t, out=st.going)
        if max_symbols_per_sample is not None:
            st.going.logical_and_(st.counts <= max_symbols_per_sample)
        for _ in range(max_symbols_per_step):
            step()
            if not bool(st.going.any()):
                break
    counts_l = st.counts.tolist()
    labels_l = st.labels.tolist()
    return [labels_l[b][: counts_l[b]] for b in range(bsz)]


@dataclass
class _State:
    """The decoder's state, updated in place so one CUDA graph can replay the inner step."""

    ft: torch.Tensor        # (B, J) the current frame
    g: torch.Tensor         # (B, J) prediction network output for each utterance's last label
    h: list[torch.Tensor]   # per layer (B, H)
    c: list[torch.Tensor]
    going: torch.Tensor     # (B,) still emitting at this frame
    labels: torch.Tensor    # (B, T * max_symbols + 1); the last column takes discarded writes
    counts: torch.Tensor    # (B,) labels emitted so far
    rows: torch.Tensor


def _inner_step(st: _State, net: PredictionNet, blank: int, backend: str) -> None:
    """Joint and argmax for every utterance; where the argmax is a label and the utterance is
    still going at this frame, emit it and advance the prediction network."""
    logits = F.linear(torch.relu(st.ft + st.g), net.joint_weight, net.joint_bias)
    k = logits.argmax(-1)
    st.going.logical_and_(k != blank)
    last = st.labels.shape[1] - 1
    st.labels[st.rows, torch.where(st.going, st.counts, last)] = k
    st.counts.add_(st.going)
    # The embedding has no row for blank: labels above it shift down by one (the reference's
    # convention; with blank last, as in MLPerf, nothing shifts).
    x = F.embedding(torch.where(st.going, k - (k > blank).long(), 0), net.embedding)
    g_new, h_new, c_new = _pred_step(net, x, st.h, st.c, backend)
    keep = st.going[:, None]
    st.g.copy_(torch.where(keep, g_new, st.g))
    for old, new in zip(st.h + st.c, h_new + c_new):
        old.copy_(torch.where(keep, new, old))
