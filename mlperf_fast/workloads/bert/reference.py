"""A PyTorch port of the MLPerf Training reference's BERT-large pretraining model (mlcommons/training,
retired_benchmarks/bert/: modeling.py's BertModel and run_pretraining.py's heads and losses; it
was language_model/tensorflow/bert/ in the v2.1 round), for parity tests and the step benchmark's
baseline. It is written for clarity, not speed: model.py is the model that trains.

What the port keeps from the reference, as read there (modeling.py unless named):

- embeddings (``embedding_lookup``, ``embedding_postprocessor``): word + token type + position
  (the table's first S rows), then LayerNorm and dropout. The reference looks the token types up
  as a one-hot matmul; a lookup is the same sum and the same gradient.
- the attention mask (``create_attention_mask_from_input_mask``, ``attention_layer``): on the
  keys only (padded queries are computed and ignored downstream), added to the scores as
  ``(1 - mask) * -10000.0``; scores ``q.k / sqrt(head_size)``, softmax, dropout on the
  probabilities.
- each layer (``transformer_model``): attention, dense, dropout, LayerNorm(x + input);
  intermediate dense + GELU; dense, dropout, LayerNorm(x + attention output).
- GELU (``gelu``): the reference's is the TANH approximation,
  ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``, in every version of the file; NVIDIA's
  v2.1 PyTorch submission (model/layers/activations.py, ``ACT2FN["gelu"]``) uses the same form.
  ``hidden_act="gelu_erf"`` gives the exact (erf) GELU, Hugging Face's ``"gelu"``.
- LayerNorm (``layer_norm``): Keras LayerNormalization, epsilon 1e-12, float32.
- the pooler: tanh(dense(first token)).
- the masked-LM head (run_pretraining.py ``get_masked_lm_output``, ``gather_indexes``): the
  sequence output gathered at ``masked_lm_positions`` first, dense + GELU + LayerNorm, logits
  against the word-embedding table (tied) plus an output bias; loss
  ``sum(w * nll) / (sum(w) + 1e-5)``.
- the next-sentence head (``get_next_sentence_output``): logits of the pooled output against a
  (2, hidden) matrix plus a bias; loss the batch mean. The total is the sum of the two.
- the metric (run_pretraining.py ``metric_fn``): ``tf.metrics.accuracy`` of the argmax against
  ``masked_lm_ids`` weighted by ``masked_lm_weights``: :func:`masked_lm_accuracy`.
- initialization (``create_initializer``): every weight matrix and embedding table
  ``tf.truncated_normal_initializer(stddev=0.02)``, a normal of std 0.02 redrawn outside two
  standard deviations, NOT rescaled (its own std is 0.02 x 0.8796 = 0.0176); biases zeros
  (``tf.zeros_initializer``, tf.layers.dense's default), LayerNorm gamma 1 and beta 0.

Parameter names are those of NVIDIA's converted checkpoint and of Hugging Face's
``BertForPreTraining`` (``bert.encoder.layer.3.attention.self.query.weight``, ...; weights.py
maps them), which are the reference's TensorFlow variable names (``bert/encoder/layer_3/
attention/self/query/kernel``) with ``layer_N`` -> ``layer.N``, ``kernel``/``gamma`` ->
``weight``, ``beta``/``output_bias`` -> ``bias``. The decoder is tied: the port holds no
decoder tensor at all, it multiplies by ``bert.embeddings.word_embeddings.weight``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

#: run_pretraining.py get_masked_lm_output: ``denominator = tf.reduce_sum(label_weights) + 1e-5``
MLM_DENOMINATOR_EPS = 1e-5
#: modeling.py attention_layer: ``adder = (1.0 - mask) * -10000.0``
MASK_ADDER = -10000.0
ACTIVATIONS = ("gelu_tanh", "gelu_erf")


@dataclass(frozen=True)
class BertModelConfig:
    """The model's shape and regularization (modeling.py ``BertConfig``; the defaults are the
    benchmark's bert_config.json: BERT-large, uncased vocabulary of 30522, 2 token types).

    ``hidden_act``: "gelu_tanh" is the reference's ``gelu`` (see the module docstring);
    "gelu_erf" the exact form. ``type_vocab_size`` is 2 in the benchmark's config (modeling.py's
    default of 16 is not the benchmark's)."""

    vocab_size: int = 30522
    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    hidden_act: Literal["gelu_tanh", "gelu_erf"] = "gelu_tanh"

    def __post_init__(self) -> None:
        for f in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                  "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, f)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"BertModelConfig.{f} must be an integer >= 1, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")
        for f in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, f) < 1.0:
                raise ValueError(f"BertModelConfig.{f} must be in [0, 1), got {getattr(self, f)}")
        if not self.initializer_range > 0 or not self.layer_norm_eps > 0:
            raise ValueError("initializer_range and layer_norm_eps must be > 0")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act must be one of {ACTIVATIONS}, got {self.hidden_act!r}")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def gelu_approximate(self) -> str:
        """``F.gelu``'s ``approximate`` argument for ``hidden_act``."""
        return "tanh" if self.hidden_act == "gelu_tanh" else "none"

    def replace(self, **changes) -> BertModelConfig:
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown BertModelConfig fields: {sorted(unknown)}")
        return replace(self, **changes)


BERT_LARGE = BertModelConfig()


def truncated_normal_(weight: torch.Tensor, std: float,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """``tf.truncated_normal_initializer(stddev=std)``: N(0, std) redrawn outside [-2 std, 2 std],
    with no rescaling (the drawn values' std is 0.8796 std)."""
    with torch.no_grad():
        return nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std, generator=generator)


def init_bert_weights_(module: nn.Module, std: float,
                       generator: torch.Generator | None = None) -> None:
    """The reference's initialization over ``module``'s parameters, by name, in their order (so
    that reference.py's and model.py's models draw the same weights from the same generator):
    LayerNorm weights 1, every bias 0, every other tensor (weight matrices, embedding tables)
    truncated normal of ``std``."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("LayerNorm.weight"):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                truncated_normal_(p, std, generator)


def check_inputs(config: BertModelConfig, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
                 attention_mask: torch.Tensor | None, masked_lm_positions: torch.Tensor,
                 masked_lm_ids: torch.Tensor, masked_lm_weights: torch.Tensor,
                 next_sentence_labels: torch.Tensor, *, packed: bool = False,
                 values: bool = True) -> None:
    """Check a batch's shapes and dtypes (and, with ``values``, its index ranges: that reads the
    tensors, so model.py asks for it on the CPU only) before any work; ValueError or TypeError
    naming the argument.

    Padded layout: ``input_ids``, ``token_type_ids``, ``attention_mask`` (B, S) integer (the mask
    0/1, any integer or bool dtype). Packed layout (``packed``): ``input_ids`` and
    ``token_type_ids`` (T,), no ``attention_mask``. Both: ``masked_lm_positions`` and
    ``masked_lm_ids`` (B, P) integer, ``masked_lm_weights`` (B, P) float,
    ``next_sentence_labels`` (B,) or (B, 1) integer."""
    named = {"input_ids": input_ids, "token_type_ids": token_type_ids,
             "masked_lm_positions": masked_lm_positions, "masked_lm_ids": masked_lm_ids,
             "masked_lm_weights": masked_lm_weights, "next_sentence_labels": next_sentence_labels}
    if not packed:
        named["attention_mask"] = attention_mask
    elif attention_mask is not None:
        raise ValueError("attention_mask must be None in the packed layout (cu_seqlens says "
                         "where each sequence is)")
    for name, t in named.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
        want_float = name == "masked_lm_weights"
        if want_float != t.dtype.is_floating_point or t.is_complex() or (
                t.dtype == torch.bool and name != "attention_mask"):
            kind = "a floating" if want_float else "an integer"
            raise TypeError(f"{name} must have {kind} dtype, got {t.dtype}")
    if packed:
        if input_ids.dim() != 1:
            raise ValueError(f"input_ids must be (T,) in the packed layout, got "
                             f"{tuple(input_ids.shape)}")
    else:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, seq_len), got {tuple(input_ids.shape)}")
        if input_ids.shape[1] > config.max_position_embeddings:
            raise ValueError(f"seq_len {input_ids.shape[1]} exceeds max_position_embeddings "
                             f"{config.max_position_embeddings}")
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, "
                             f"input_ids {tuple(input_ids.shape)}")
    if token_type_ids.shape != input_ids.shape:
        raise ValueError(f"token_type_ids has shape {tuple(token_type_ids.shape)}, input_ids "
                         f"{tuple(input_ids.shape)}")
    if masked_lm_positions.dim() != 2:
        raise ValueError("masked_lm_positions must be (batch, max_predictions), got "
                         f"{tuple(masked_lm_positions.shape)}")
    batch = masked_lm_positions.shape[0]
    if not packed and batch != input_ids.shape[0]:
        raise ValueError(f"masked_lm_positions has batch {batch}, input_ids "
                         f"{input_ids.shape[0]}")
    for name in ("masked_lm_ids", "masked_lm_weights"):
        if named[name].shape != masked_lm_positions.shape:
            raise ValueError(f"{name} has shape {tuple(named[name].shape)}, masked_lm_positions "
                             f"{tuple(masked_lm_positions.shape)}")
    if next_sentence_labels.reshape(-1).shape[0] != batch or next_sentence_labels.dim() > 2:
        raise ValueError(f"next_sentence_labels must be (batch,) or (batch, 1) with batch "
                         f"{batch}, got {tuple(next_sentence_labels.shape)}")
    if not values or input_ids.numel() == 0:
        return
    for name, t, high in (("input_ids", input_ids, config.vocab_size),
                          ("token_type_ids", token_type_ids, config.type_vocab_size),
                          ("masked_lm_ids", masked_lm_ids, config.vocab_size),
                          ("next_sentence_labels", next_sentence_labels, 2)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= high):
            raise ValueError(f"{name} must be in [0, {high}), got values in "
                             f"[{int(t.min())}, {int(t.max())}]")
    if not packed and masked_lm_positions.numel():
        seq = input_ids.shape[1]
        if int(masked_lm_positions.min()) < 0 or int(masked_lm_positions.max()) >= seq:
            raise ValueError(f"masked_lm_positions must be in [0, seq_len={seq})")


def masked_lm_accuracy(mlm_logits: torch.Tensor, masked_lm_ids: torch.Tensor,
                       masked_lm_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The benchmark's metric for a batch, as (numerator, denominator): the weighted count of
    predictions (argmax of ``mlm_logits`` (..., V)) equal to ``masked_lm_ids`` (...) and the sum
    of ``masked_lm_weights`` (...), both float32 scalars; the accuracy over an evaluation is the
    sum of the numerators over the sum of the denominators (tf.metrics.accuracy with weights)."""
    if mlm_logits.shape[:-1] != masked_lm_ids.shape or masked_lm_weights.shape != \
            masked_lm_ids.shape:
        raise ValueError(f"mlm_logits {tuple(mlm_logits.shape)} must be masked_lm_ids' shape "
                         f"{tuple(masked_lm_ids.shape)} plus the vocabulary, and "
                         f"masked_lm_weights {tuple(masked_lm_weights.shape)} the ids' shape")
    w = masked_lm_weights.float()
    correct = (mlm_logits.argmax(dim=-1) == masked_lm_ids).float()
    return (w * correct).sum(), w.sum()


def masked_lm_loss(mlm_logits: torch.Tensor, masked_lm_ids: torch.Tensor,
                   masked_lm_weights: torch.Tensor) -> torch.Tensor:
    """The reference's masked-LM loss: ``sum(w * nll) / (sum(w) + 1e-5)``, in float32 or wider,
    from logits (..., V) and ids, weights (...)."""
    dtype = torch.promote_types(mlm_logits.dtype, torch.float32)
    log_probs = F.log_softmax(mlm_logits.to(dtype), dim=-1)
    nll = -log_probs.gather(-1, masked_lm_ids.long().unsqueeze(-1)).squeeze(-1)
    w = masked_lm_weights.to(dtype)
    return (w * nll).sum() / (w.sum() + MLM_DENOMINATOR_EPS)


def next_sentence_loss(nsp_logits: torch.Tensor, next_sentence_labels: torch.Tensor
                       ) -> torch.Tensor:
    """The reference's next-sentence loss: the mean negative log-likelihood over the batch."""
    dtype = torch.promote_types(nsp_logits.dtype, torch.float32)
    return F.cross_entropy(nsp_logits.to(dtype), next_sentence_labels.reshape(-1).long())


class _Embeddings(nn.Module):
    def __init__(self, c: BertModelConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        seq = input_ids.shape[1]
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings.weight[:seq].unsqueeze(0)
        return self.dropout(self.LayerNorm(x))


class _SelfAttention(nn.Module):
    def __init__(self, c: BertModelConfig) -> None:
        super().__init__()
        self.heads, self.head_size = c.num_attention_heads, c.head_size
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)
        self.dropout = nn.Dropout(c.attention_probs_dropout_prob)

    def forward(self, x: torch.Tensor, adder: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:  # (B, S, N*H) -> (B, N, S, H)
            return t.view(b, s, self.heads, self.head_size).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.head_size))
        probs = self.dropout(torch.softmax(scores + adder, dim=-1))
        return torch.matmul(probs, v).transpose(1, 2).reshape(b, s, -1)


class _DenseDropoutResidualNorm(nn.Module):
    """``output`` of the reference: dense, dropout, LayerNorm(x + residual)."""

    def __init__(self, cin: int, c: BertModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cin, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class _Attention(nn.Module):
    def __init__(self, c: BertModelConfig) -> None:
        super().__init__()
        self.self = _SelfAttention(c)
        self.output = _DenseDropoutResidualNorm(c.hidden_size, c)

    def forward(self, x: torch.Tensor, adder: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, adder), x)


class _Intermediate(nn.Module):
    def __init__(self, c: BertModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)
        self.approximate = c.gelu_approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x), approximate=self.approximate)


class _Layer(nn.Module):
    def __init__(self, c: BertModelConfig) -> None:
        super().__init__()
        self.attention = _Attention(c)
        self.intermediate = _Intermediate(c)
        self.output = _DenseDropoutResidualNorm(c.intermediate_size, c)

    def forward(self, x: torch.Tensor, adder: torch.Tensor) -> torch.Tensor:
        a = self.attention(x, adder)
        return self.output(self.intermediate(a), a)


class _Encoder(nn.Module):
    def __init__(self, c: BertModelConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(c) for _ in range(c.num_hidden_layers))


class _Pooler(nn.Module):
    def __init__(self, c: BertModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)


class _Bert(nn.Module):
    """modeling.py BertModel: ``forward`` returns the sequence output (B, S, H) and the pooled
    output (B, H)."""

    def __init__(self, c: BertModelConfig) -> None:
        super().__init__()
        self.embeddings = _Embeddings(c)
        self.encoder = _Encoder(c)
        self.pooler = _Pooler(c)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.embeddings(input_ids, token_type_ids)
        # [B, 1, 1, T]: the same mask for every head and every query (keys only)
        adder = (1.0 - attention_mask.to(x.dtype))[:, None, None, :] * MASK_ADDER
        for layer in self.encoder.layer:
            x = layer(x, adder)
        pooled = torch.tanh(self.pooler.dense(x[:, 0]))
        return x, pooled


class _Transform(nn.Module):
    def __init__(self, c: BertModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)


class _Predictions(nn.Module):
    def __init__(self, c: BertModelConfig) -> None:
        super().__init__()
        # registered first: NVIDIA's and Hugging Face's state dicts list cls.predictions.bias
        # before the transform
        self.bias = nn.Parameter(torch.zeros(c.vocab_size))
        self.transform = _Transform(c)


class _Heads(nn.Module):
    def __init__(self, c: BertModelConfig) -> None:
        super().__init__()
        self.predictions = _Predictions(c)
        self.seq_relationship = nn.Linear(c.hidden_size, 2)


class ReferenceBertForPreTraining(nn.Module):
    """The reference's pretraining model and losses (see the module docstring).

    ``forward(input_ids, token_type_ids, attention_mask, masked_lm_positions, masked_lm_ids,
    masked_lm_weights, next_sentence_labels)``, the reference's features: input_ids,
    segment_ids, input_mask (B, S) integer; masked_lm_positions, masked_lm_ids (B, P) integer;
    masked_lm_weights (B, P) float; next_sentence_labels (B,) or (B, 1) integer. Returns
    ``(loss, mlm_loss, nsp_loss, mlm_logits, nsp_logits)``: three scalars (float32, or the
    parameters' dtype if wider), the masked-LM logits (B, P, V) at every predicted position
    (those of weight 0 included, as the reference computes them) and the next-sentence logits
    (B, 2), in the parameters' dtype. Dropout is on in training mode (``is_training``)."""

    def __init__(self, config: BertModelConfig = BERT_LARGE,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not isinstance(config, BertModelConfig):
            raise TypeError(f"config must be a BertModelConfig, got {type(config).__name__}")
        self.config = config
        self.bert = _Bert(config)
        self.cls = _Heads(config)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        init_bert_weights_(self, self.config.initializer_range, generator)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
                attention_mask: torch.Tensor, masked_lm_positions: torch.Tensor,
                masked_lm_ids: torch.Tensor, masked_lm_weights: torch.Tensor,
                next_sentence_labels: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        check_inputs(self.config, input_ids, token_type_ids, attention_mask, masked_lm_positions,
                     masked_lm_ids, masked_lm_weights, next_sentence_labels)
        c = self.config
        seq_out, pooled = self.bert(input_ids, token_type_ids, attention_mask)
        b, s, h = seq_out.shape
        # gather_indexes: flat positions b * S + p over the (B * S, H) sequence output
        flat = (masked_lm_positions.long() + torch.arange(b, device=seq_out.device)[:, None] * s)
        x = seq_out.reshape(b * s, h)[flat.reshape(-1)]
        p = self.cls.predictions
        x = F.gelu(p.transform.dense(x), approximate=c.gelu_approximate)
        x = p.transform.LayerNorm(x)
        mlm_logits = F.linear(x, self.bert.embeddings.word_embeddings.weight, p.bias)
        mlm_logits = mlm_logits.view(b, -1, c.vocab_size)
        nsp_logits = self.cls.seq_relationship(pooled)
        mlm = masked_lm_loss(mlm_logits, masked_lm_ids, masked_lm_weights)
        nsp = next_sentence_loss(nsp_logits, next_sentence_labels)
        return mlm + nsp, mlm, nsp, mlm_logits, nsp_logits
