"""The optimized BERT pretraining model: reference.py's mathematics and parameter names (a
reference state dict loads as it is; tests/bert check logits, losses and every gradient), laid
out for speed. What differs from the port is how it runs:

- the masked-LM head runs on the predicted positions only: the sequence output is gathered at
  the positions of non-zero weight before the transform and the (hidden x 30522) decoder
  (the reference also computes the zero-weight padding predictions, whose loss it multiplies
  by 0), so ``mlm_logits`` is (N, V) over those N predictions, in row-major (batch, prediction)
  order; :func:`dense_targets` gives their ids and weights;
- activations are (tokens, hidden) matrices throughout; one GEMM computes q, k and v (the three
  weights concatenated at each call, so that the parameters keep the reference's names);
- attention is ``F.scaled_dot_product_attention`` over the padded (B, S) layout with the
  reference's additive mask, or, over a packed layout (no padding tokens: sequences
  concatenated, ``cu_seqlens`` as FlashAttention's varlen interface takes it),
  :func:`varlen_attention`: FlashAttention's varlen kernel on a GPU, SDPA over a padded buffer
  elsewhere; ``unpad=True`` packs a padded batch itself, so every dense layer, LayerNorm and
  GELU runs on real tokens only;
- bias + GELU and bias + dropout + residual + LayerNorm are the ops
  ``mlperf_fast.ops.bias_gelu`` and ``bias_dropout_add_layer_norm`` (inputs in the activation
  dtype, arithmetic in float32, output in the activation dtype): fused Triton kernels, or
  their torch backends, which are this model's formulas exactly;
- bf16 autocast: the GEMMs and attention run in bf16 (SDPA's kernels accumulate the softmax in
  float32); LayerNorm, the residual add, GELU and both losses in float32.

Two ways were measured slower on the H200 (torch 2.11, the step benchmark's BERT-large batch,
where this module's eager step with the padded buffer and the torch backends took 209 ms): SDPA
over jagged nested tensors in place of the padded buffer, 455 ms; that and the two small
functions compiled by inductor with dynamic shapes, 524 ms. The step is not captured in a CUDA
graph (the packed batch's shapes change with every batch).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch
import torch.nn.functional as F
from torch import nn

from mlperf_fast.ops import bias_dropout_add_layer_norm, bias_gelu
from mlperf_fast.workloads.bert.reference import (
    BERT_LARGE,
    MASK_ADDER,
    MLM_DENOMINATOR_EPS,
    BertModelConfig,
    check_inputs,
    init_bert_weights_,
)
from mlperf_fast.workloads.bert.weights import load_checkpoint  # noqa: F401 - re-exported


def model_config(cfg, vocab_size: int | None = None) -> BertModelConfig:
    """The model's configuration from a run's (config.py's BertConfig, read by attribute:
    hidden_size, num_layers, num_heads, intermediate_size, max_position_embeddings,
    type_vocab_size, dropout (hidden and attention alike, as the reference's 0.1), init_std);
    ``vocab_size``, where given (the data's vocab.txt), overrides the config's."""
    return BertModelConfig(
        vocab_size=cfg.vocab_size if vocab_size is None else vocab_size,
        hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        type_vocab_size=cfg.type_vocab_size, hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout, initializer_range=cfg.init_std)


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    """float32, or the tensor's dtype where it is wider (float64 in the parity tests)."""
    return torch.promote_types(t.dtype, torch.float32)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
               ) -> torch.Tensor:
    """LayerNorm over the last dimension in float32 (autocast off), returned in ``x``'s dtype."""
    dtype = _compute_dtype(x)
    with torch.autocast(x.device.type, enabled=False):
        y = F.layer_norm(x.to(dtype), x.shape[-1:], weight.to(dtype), bias.to(dtype), eps)
    return y.to(x.dtype)


@dataclass(frozen=True)
class Varlen:
    """Where the sequences of a packed batch lie: ``cu_seqlens`` (B + 1,) int32 offsets into the
    T tokens (FlashAttention's), ``max_seqlen``, and what is derived from them once per batch:
    ``positions`` (T,) each token's position in its sequence, ``slots`` (T,) its row in a
    (B * max_seqlen) padded buffer, ``key_mask`` (B, 1, 1, max_seqlen) bool, True on real keys."""

    cu_seqlens: torch.Tensor
    max_seqlen: int
    positions: torch.Tensor
    slots: torch.Tensor
    key_mask: torch.Tensor

    @property
    def batch(self) -> int:
        return self.cu_seqlens.shape[0] - 1

    @staticmethod
    def build(cu_seqlens: torch.Tensor, max_seqlen: int | None = None,
              total: int | None = None) -> Varlen:
        """From ``cu_seqlens`` (B + 1,) integer, non-decreasing from 0; ``max_seqlen`` and the
        total token count ``total`` are read from it where not given (a device sync on GPU).
        On the CPU every sequence must hold at least one token (its first is the pooler's)."""
        if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dim() != 1 or \
                cu_seqlens.shape[0] < 2 or cu_seqlens.dtype not in (torch.int32, torch.int64):
            raise ValueError("cu_seqlens must be a (batch + 1,) int32 or int64 tensor")
        lens = cu_seqlens[1:] - cu_seqlens[:-1]
        if cu_seqlens.device.type == "cpu":
            if int(cu_seqlens[0]) != 0 or int(lens.min()) < 1:
                raise ValueError(f"cu_seqlens must start at 0 and rise by at least 1 per "
                                 f"sequence, got {cu_seqlens.tolist()}")
            if max_seqlen is not None and max_seqlen < int(lens.max()):
                raise ValueError(f"max_seqlen {max_seqlen} < the longest sequence "
                                 f"{int(lens.max())}")
        max_seqlen = int(lens.max()) if max_seqlen is None else int(max_seqlen)
        total = int(cu_seqlens[-1]) if total is None else int(total)
        b, dev = lens.shape[0], cu_seqlens.device
        seq_id = torch.repeat_interleave(torch.arange(b, device=dev), lens.long(),
                                         output_size=total)
        positions = torch.arange(total, device=dev) - cu_seqlens.long()[seq_id]
        slots = seq_id * max_seqlen + positions
        key_mask = (torch.arange(max_seqlen, device=dev)[None, :] < lens[:, None])
        return Varlen(cu_seqlens.int(), max_seqlen, positions, slots,
                      key_mask[:, None, None, :])


ATTENTION_IMPLS = ("auto", "flash", "padded")
#: the fused ops' backends (neither has a native kernel)
OP_BACKENDS = ("auto", "triton", "torch")


def flash_varlen_usable(q: torch.Tensor) -> bool:
    """Whether FlashAttention's varlen kernel (ATen's ``_flash_attention_forward``, the one
    SDPA runs) takes ``q`` (T, heads, head_size): a CUDA device of compute capability 8.0 or
    newer, float16 or bfloat16, a head size that is a multiple of 8 up to 256."""
    if q.device.type != "cuda" or q.dtype not in (torch.float16, torch.bfloat16):
        return False
    d = q.shape[-1]
    return d % 8 == 0 and d <= 256 and _flash_device(q.device.index)


@cache
def _flash_device(index: int | None) -> bool:
    # read once per device: the check runs in every layer's attention
    return (torch.backends.cuda.is_flash_attention_available()
            and torch.cuda.get_device_capability(index) >= (8, 0))


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, varlen: Varlen,
                     dropout_p: float = 0.0, softmax_scale: float | None = None,
                     impl: str = "auto") -> torch.Tensor:
    """Self-attention within each sequence of a packed batch: ``q``, ``k``, ``v`` (T, heads,
    head_size) with a unit stride in the last dimension, returned (T, heads, head_size);
    ``softmax_scale`` None is 1 / sqrt(head_size).

    ``impl``: "flash" calls FlashAttention's varlen kernel through ATen (T x T work only
    within each sequence, dropout inside the kernel; autograd through ATen's own derivative);
    "padded" scatters the tokens into a (B, max_seqlen) padded buffer, runs SDPA with the key
    mask and gathers the real rows back (any device and dtype); "auto" is flash where
    :func:`flash_varlen_usable`, else padded. (A (T, T) block-diagonal mask would cost T^2 per
    head, 1 GiB in float32 for T = 4096 and 16 heads; nested tensors' SDPA on the CPU is a
    prototype that warns at each call and measured ~10x slower than the padded buffer.)"""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"impl must be one of {ATTENTION_IMPLS}, got {impl!r}")
    _, h, d = q.shape
    scale = d ** -0.5 if softmax_scale is None else float(softmax_scale)
    if impl == "flash" or (impl == "auto" and flash_varlen_usable(q)):
        if not flash_varlen_usable(q):
            raise ValueError(f"impl='flash' needs a CUDA device of capability >= 8.0, float16 "
                             f"or bfloat16 and a head size that is a multiple of 8 up to 256; "
                             f"got {q.device}, {q.dtype}, head size {d}")
        cu, s = varlen.cu_seqlens, varlen.max_seqlen
        return torch.ops.aten._flash_attention_forward(
            q, k, v, cu, cu, s, s, dropout_p, False, False, scale=scale)[0]
    rows = varlen.batch * varlen.max_seqlen

    def padded(x: torch.Tensor) -> torch.Tensor:  # (T, N, D) -> (B, N, max_s, D)
        buf = x.new_zeros(rows, h, d).index_copy(0, varlen.slots, x)
        return buf.view(varlen.batch, varlen.max_seqlen, h, d).transpose(1, 2)

    out = F.scaled_dot_product_attention(padded(q), padded(k), padded(v),
                                         attn_mask=varlen.key_mask, dropout_p=dropout_p,
                                         scale=scale)
    return out.transpose(1, 2).reshape(rows, h, d)[varlen.slots]


def _ln(module: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return layer_norm(x, module.weight, module.bias, module.eps)


class Layer(nn.Module):
    """One encoder layer over (tokens, hidden) activations; the reference's names."""

    def __init__(self, c: BertModelConfig) -> None:
        super().__init__()
        h, eps = c.hidden_size, c.layer_norm_eps
        self.attention = nn.ModuleDict({
            "self": nn.ModuleDict({"query": nn.Linear(h, h), "key": nn.Linear(h, h),
                                   "value": nn.Linear(h, h)}),
            "output": nn.ModuleDict({"dense": nn.Linear(h, h),
                                     "LayerNorm": nn.LayerNorm(h, eps=eps)})})
        self.intermediate = nn.ModuleDict({"dense": nn.Linear(h, c.intermediate_size)})
        self.output = nn.ModuleDict({"dense": nn.Linear(c.intermediate_size, h),
                                     "LayerNorm": nn.LayerNorm(h, eps=eps)})
        self.heads, self.head_size = c.num_attention_heads, c.head_size
        self.p, self.attn_p = c.hidden_dropout_prob, c.attention_probs_dropout_prob
        self.approximate = c.gelu_approximate
        self.op_backend = "auto"  # the fused ops' backend (BertForPreTraining sets it)

    def forward(self, x: torch.Tensor, attend) -> torch.Tensor:
        """``x`` (tokens, H); ``attend(q, k, v, dropout_p)`` the layout's attention over
        (tokens, heads, head_size) tensors."""
        sa, ao = self.attention["self"], self.attention["output"]
        w = torch.cat([sa["query"].weight, sa["key"].weight, sa["value"].weight])
        b = torch.cat([sa["query"].bias, sa["key"].bias, sa["value"].bias])
        qkv = F.linear(x, w, b).view(x.shape[0], 3, self.heads, self.head_size)
        ctx = attend(qkv[:, 0], qkv[:, 1], qkv[:, 2], self.attn_p if self.training else 0.0)
        ctx = ctx.reshape(x.shape[0], -1)
        ln = ao["LayerNorm"]
        ops = self.op_backend
        x = bias_dropout_add_layer_norm(F.linear(ctx, ao["dense"].weight), ao["dense"].bias, x,
                                        ln.weight, ln.bias, self.p, self.training, ln.eps,
                                        backend=ops)
        inter = self.intermediate["dense"]
        y = bias_gelu(F.linear(x, inter.weight), inter.bias, self.approximate, backend=ops)
        out, ln = self.output["dense"], self.output["LayerNorm"]
        return bias_dropout_add_layer_norm(F.linear(y, out.weight), out.bias, x, ln.weight,
                                           ln.bias, self.p, self.training, ln.eps, backend=ops)


class _Predictions(nn.Module):
    def __init__(self, c: BertModelConfig) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(c.vocab_size))  # first, as in reference.py
        self.transform = nn.ModuleDict({
            "dense": nn.Linear(c.hidden_size, c.hidden_size),
            "LayerNorm": nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)})


@dataclass(frozen=True)
class Packed:
    """A padded batch without its padding: ``input_ids``, ``token_type_ids`` (T,) and where the
    sequences lie (``varlen.cu_seqlens``)."""

    input_ids: torch.Tensor
    token_type_ids: torch.Tensor
    varlen: Varlen


def pack(input_ids: torch.Tensor, token_type_ids: torch.Tensor, attention_mask: torch.Tensor
         ) -> Packed:
    """The real tokens of a padded (B, S) batch, concatenated. Each row's mask must be ones then
    zeros (checked on the CPU), as the reference's data writes it: the tokens keep their
    positions, and masked_lm_positions stay valid per sequence."""
    mask = attention_mask.bool()
    lens = mask.sum(dim=1)
    if mask.device.type == "cpu":
        prefix = torch.arange(mask.shape[1])[None, :] < lens[:, None]
        if not torch.equal(prefix, mask):
            bad = int((prefix != mask).any(dim=1).nonzero()[0])
            raise ValueError(f"attention_mask row {bad} is not ones followed by zeros: it "
                             "cannot be packed")
    cu = F.pad(lens.cumsum(0), (1, 0)).int()
    return Packed(input_ids[mask], token_type_ids[mask], Varlen.build(cu, None))


def _check_packed_positions(varlen: Varlen, positions: torch.Tensor, weights: torch.Tensor
                            ) -> None:
    """Every weighted prediction must fall inside its own sequence: in the packed layout a
    position past the sequence's end would silently read the next sequence's tokens."""
    lens = (varlen.cu_seqlens[1:] - varlen.cu_seqlens[:-1]).long()
    outside = (weights != 0) & ((positions < 0) | (positions >= lens[:, None]))
    if bool(outside.any()):
        b, j = (int(i) for i in outside.nonzero()[0])
        raise ValueError(f"masked_lm_positions[{b}, {j}] = {int(positions[b, j])} (weight "
                         f"{float(weights[b, j])}) is outside sequence {b}, of {int(lens[b])} "
                         "tokens")


def dense_targets(masked_lm_ids: torch.Tensor, masked_lm_weights: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The ids and weights (N,) of the predictions that :class:`BertForPreTraining` computes
    logits for (those of non-zero weight, row-major), for ``masked_lm_accuracy``."""
    keep = masked_lm_weights.reshape(-1) != 0
    return masked_lm_ids.reshape(-1)[keep], masked_lm_weights.reshape(-1)[keep]


class BertForPreTraining(nn.Module):
    """The optimized pretraining model (see the module docstring); ``unpad``: pack padded
    batches (the mask must be ones then zeros per row).

    ``forward`` takes the reference's batch, padded, or packed with ``cu_seqlens`` (B + 1,)
    (and optionally ``max_seqlen``): then ``input_ids`` and ``token_type_ids`` are (T,),
    ``attention_mask`` None, and masked_lm_positions (B, P) count from each sequence's start.
    Returns ``(loss, mlm_loss, nsp_loss, mlm_logits, nsp_logits)``: the scalars in float32 (or
    wider), ``mlm_logits`` (N, V) over the predictions of non-zero weight, ``nsp_logits`` (B, 2).

    ``attention``: the packed layout's :func:`varlen_attention` implementation ("auto", "flash",
    "padded"); ``op_backend``: the backend of the fused ``bias_gelu`` and
    ``bias_dropout_add_layer_norm`` ops (mlperf_fast.ops' "auto", "triton", "torch").
    """

    def __init__(self, config: BertModelConfig = BERT_LARGE, unpad: bool = False,
                 generator: torch.Generator | None = None, *, attention: str = "auto",
                 op_backend: str = "auto") -> None:
        super().__init__()
        if not isinstance(config, BertModelConfig):
            raise TypeError(f"config must be a BertModelConfig, got {type(config).__name__}")
        if attention not in ATTENTION_IMPLS:
            raise ValueError(f"attention must be one of {ATTENTION_IMPLS}, got {attention!r}")
        if op_backend not in OP_BACKENDS:
            raise ValueError(f"op_backend must be one of {OP_BACKENDS}, got {op_backend!r}")
        c, h = config, config.hidden_size
        self.config, self.unpad = config, bool(unpad)
        self.attention, self.op_backend = attention, op_backend
        self.bert = nn.Module()
        self.bert.embeddings = nn.ModuleDict({
            "word_embeddings": nn.Embedding(c.vocab_size, h),
            "position_embeddings": nn.Embedding(c.max_position_embeddings, h),
            "token_type_embeddings": nn.Embedding(c.type_vocab_size, h),
            "LayerNorm": nn.LayerNorm(h, eps=c.layer_norm_eps)})
        self.bert.encoder = nn.ModuleDict({
            "layer": nn.ModuleList(Layer(c) for _ in range(c.num_hidden_layers))})
        self.bert.pooler = nn.ModuleDict({"dense": nn.Linear(h, h)})
        self.cls = nn.ModuleDict({"predictions": _Predictions(c),
                                  "seq_relationship": nn.Linear(h, 2)})
        for layer in self.bert.encoder["layer"]:
            layer.op_backend = op_backend
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """The reference's initialization, drawn in the reference port's order: a generator
        seeded alike gives reference.py's weights exactly."""
        init_bert_weights_(self, self.config.initializer_range, generator)

    def _embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
               positions: torch.Tensor) -> torch.Tensor:
        e = self.bert.embeddings
        x = (e["word_embeddings"](input_ids) + e["token_type_embeddings"](token_type_ids)
             + e["position_embeddings"](positions))
        return F.dropout(_ln(e["LayerNorm"], x), self.config.hidden_dropout_prob, self.training)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
                attention_mask: torch.Tensor | None, masked_lm_positions: torch.Tensor,
                masked_lm_ids: torch.Tensor, masked_lm_weights: torch.Tensor,
                next_sentence_labels: torch.Tensor, *, cu_seqlens: torch.Tensor | None = None,
                max_seqlen: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.config
        packed = cu_seqlens is not None
        check_inputs(c, input_ids, token_type_ids, attention_mask, masked_lm_positions,
                     masked_lm_ids, masked_lm_weights, next_sentence_labels, packed=packed,
                     values=input_ids.device.type == "cpu")
        if not packed and self.unpad:
            p = pack(input_ids, token_type_ids, attention_mask)
            input_ids, token_type_ids, varlen = p.input_ids, p.token_type_ids, p.varlen
        elif packed:
            if cu_seqlens.shape[0] != masked_lm_positions.shape[0] + 1:
                raise ValueError(f"cu_seqlens has {cu_seqlens.shape[0]} entries for a batch of "
                                 f"{masked_lm_positions.shape[0]} (batch + 1 expected)")
            varlen = Varlen.build(cu_seqlens, max_seqlen, input_ids.shape[0])
        else:
            varlen = None
        if varlen is not None:
            if varlen.max_seqlen > c.max_position_embeddings:
                raise ValueError(f"a sequence of {varlen.max_seqlen} tokens exceeds "
                                 f"max_position_embeddings {c.max_position_embeddings}")
            starts = varlen.cu_seqlens[:-1].long()
            if input_ids.device.type == "cpu":
                _check_packed_positions(varlen, masked_lm_positions, masked_lm_weights)
            x = self._embed(input_ids, token_type_ids, varlen.positions)

            def attend(q, k, v, p):
                return varlen_attention(q, k, v, varlen, p, impl=self.attention)
        else:
            b, s = input_ids.shape
            starts = torch.arange(b, device=input_ids.device) * s
            positions = torch.arange(s, device=input_ids.device)
            x = self._embed(input_ids, token_type_ids, positions).reshape(b * s, -1)
            adder = (1.0 - attention_mask.float())[:, None, None, :] * MASK_ADDER

            def attend(q, k, v, p):  # (B*S, N, D) -> (B, N, S, D) and back
                def heads(t):
                    return t.view(b, s, *t.shape[1:]).transpose(1, 2)
                out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v),
                                                     attn_mask=adder.to(q.dtype), dropout_p=p)
                return out.transpose(1, 2).reshape(b * s, *q.shape[1:])
        for layer in self.bert.encoder["layer"]:
            x = layer(x, attend)
        return self._heads(x, starts, masked_lm_positions, masked_lm_ids, masked_lm_weights,
                           next_sentence_labels)

    def _heads(self, x: torch.Tensor, starts: torch.Tensor, positions: torch.Tensor,
               ids: torch.Tensor, weights: torch.Tensor, nsp_labels: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The pooler, both heads and both losses over the (tokens, H) sequence output;
        ``starts`` (B,) the row of each sequence's first token."""
        c, pred = self.config, self.cls["predictions"]
        pooled = torch.tanh(self.bert.pooler["dense"](x[starts]))
        nsp_logits = self.cls["seq_relationship"](pooled)
        keep = weights.reshape(-1) != 0
        rows = (starts[:, None] + positions.long()).reshape(-1)[keep]
        dense, ln = pred.transform["dense"], pred.transform["LayerNorm"]
        y = bias_gelu(F.linear(x[rows], dense.weight), dense.bias, c.gelu_approximate,
                      backend=self.op_backend)
        y = _ln(ln, y)
        mlm_logits = F.linear(y, self.bert.embeddings["word_embeddings"].weight, pred.bias)
        w = weights.reshape(-1)[keep].to(_compute_dtype(mlm_logits))
        nll = F.cross_entropy(mlm_logits.to(w.dtype), ids.reshape(-1)[keep].long(),
                              reduction="none")
        mlm = (w * nll).sum() / (weights.to(w.dtype).sum() + MLM_DENOMINATOR_EPS)
        nsp = F.cross_entropy(nsp_logits.to(_compute_dtype(nsp_logits)),
                              nsp_labels.reshape(-1).long())
        return mlm + nsp, mlm, nsp, mlm_logits, nsp_logits
