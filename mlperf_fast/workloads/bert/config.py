"""BERT's configurations: the closed division of MLPerf Training v2.1 (phase-2 pretraining of
BERT-large from the phase-1 checkpoint) and the embedded one (a small BERT from scratch on
Python's own documentation), every value with its source.

Sources, as read:

- [ref] mlcommons/training ``retired_benchmarks/bert/`` (the v2.1 reference, TensorFlow):
  ``modeling.py`` (BERT-large: hidden 1024, 24 layers, 16 heads, FFN 4096, GELU in its tanh
  form (``gelu``, lines 263-276), dropout 0.1,
  LayerNorm epsilon 1e-12, 512 positions, 2 token types, initializer truncated normal of std
  0.02), ``run_pretraining.py`` (MLM on the masked positions with the decoder tied to the word
  embeddings, NSP on the pooled [CLS]; the masked-LM accuracy weighted by
  ``masked_lm_weights``), ``optimization.py`` (LAMB, ``exclude_from_weight_decay=["LayerNorm",
  "layer_norm", "bias"]`` for both decay and layer adaptation; ``tf.train.polynomial_decay`` to
  0 with power 1 after a linear warmup from ``start_warmup_step``: optim/schedules.py
  ``bert_poly_warmup``), ``lamb_optimizer_v1.py`` (bias-corrected moments; the global norm
  clipped to 1.0), and ``cleanup_scripts/create_pretraining_data.py`` with dataset.md (512 tokens,
  76 predictions, masked_lm_prob 0.15, dupe factor 10, seed 12345: writer.py).
- [rules] mlperf-logging 2.1.0 ``compliance_checker/training_2.1.0/closed_bert.yaml`` (the keys,
  the 398 weights_initialization tensors, ``eval_accuracy >= 0.720``) and the training rules'
  evaluation interval ``FLOOR(0.05 * (230.23 * GBS + 3,000,000), 25,000)`` samples.
- [rcp] mlperf-logging 2.1.0 ``rcp_checker/training_2.1.0/rcps_bert.json``, ``bert_ref_448``:
  batch 448, lr 4.25e-4, 6,700 training steps, no warmup, start_warmup_step 0, betas 0.9 /
  0.999, epsilon 1e-6, weight decay 0.01, no accumulation; it converges at 2.1-2.3M samples.
"""
from __future__ import annotations

from dataclasses import dataclass

from mlperf_fast.harness.workload import Metric, Schedule, WorkloadConfig


def eval_interval(global_batch_size: int) -> int:
    """[rules] samples between evaluations: FLOOR(0.05 * (230.23 * GBS + 3e6), 25,000)."""
    x = 0.05 * (230.23 * global_batch_size + 3_000_000)
    return max(25_000, int(x // 25_000) * 25_000)


@dataclass(frozen=True, kw_only=True)
class BertConfig(WorkloadConfig):
    """One BERT run. Model dimensions as modeling.py's BertConfig; the vocabulary's size is the
    data set's vocab.txt's when the data is read."""

    name: str = "closed"
    # -- model [ref] modeling.py (bert_config.json of BERT-large uncased)
    vocab_size: int = 30522
    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    intermediate_size: int = 4096
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    dropout: float = 0.1
    init_std: float = 0.02
    # -- data [ref] dataset.md
    max_seq_length: int = 512
    max_predictions: int = 76
    # -- optimizer [rcp] bert_ref_448
    lr: float = 4.25e-4
    train_steps: int = 6700
    warmup_steps: int = 0
    start_warmup_step: int = 0
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-6
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0  # [ref] lamb_optimizer_v1.py clip_by_global_norm(1.0)
    micro_batch: int = 0  # 0: the whole per-process batch at once (no accumulation)
    eval_batch_size: int = 128
    eval_samples: int = 10_000  # [ref] the 10,000-sequence evaluation set
    #: the phase-1 checkpoint (closed: required; NVIDIA's converted PyTorch form, or the
    #: reference's TF checkpoint converted by the package)
    init_checkpoint: str | None = None
    #: "packed": each batch's padding dropped (model.py's unpad: every dense layer on real
    #: tokens, attention per sequence), as the step benchmark measures BERT-large; "padded": the
    #: reference's (B, S) layout, the one the embedded target was measured with
    layout: str = "packed"
    #: the packed layout's attention (model.py varlen_attention): "auto" (FlashAttention's
    #: varlen kernel where the GPU takes it), "flash", "padded" (SDPA over a padded buffer)
    attention: str = "auto"
    #: the backend of the fused bias-GELU and bias-dropout-residual-LayerNorm ops ("auto",
    #: "triton", "torch")
    op_backend: str = "auto"
    #: the embedded data set (used only without a data dir): see synth.py
    embedded: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layout not in ("packed", "padded"):
            raise ValueError(f"layout must be 'packed' or 'padded', got {self.layout!r}")
        if self.attention not in ("auto", "flash", "padded"):
            raise ValueError(f"attention must be 'auto', 'flash' or 'padded', got "
                             f"{self.attention!r}")
        if self.op_backend not in ("auto", "triton", "torch"):
            raise ValueError(f"op_backend must be 'auto', 'triton' or 'torch', got "
                             f"{self.op_backend!r}")


CLOSED = BertConfig(
    name="closed",
    division="closed",
    targets=(Metric("mlm_accuracy", 0.720),),  # [rules]
    # [rules] 150,000 samples at GBS 448; budget: the RCP's 6,700 steps x 448
    schedule=Schedule(unit="sample", every=eval_interval(448), budget=6700 * 448),
    global_batch_size=448,
)

EMBEDDED = BertConfig(
    name="embedded",
    division="open",
    # Measured on the 2-core CPU (lr 0.01, 3,000 steps of schedule, seed 1): masked-LM accuracy
    # 0.120 / 0.153 / 0.155 after 16k / 32k / 49k samples, levelling off at 0.16 by 131k. On the
    # same evaluation predictions the most frequent token scores 0.047 and the most frequent
    # successor of the (possibly masked) left neighbour 0.138. Target 0.15: three times the
    # unigram guess, above the bigram one; a weak target, for a model this small trained for
    # minutes on 1.7M characters (leaving the bigram level behind needs far longer).
    targets=(Metric("mlm_accuracy", 0.15),),
    schedule=Schedule(unit="sample", every=8192, budget=64 * 1536),
    global_batch_size=64,
    vocab_size=8192,
    hidden_size=128,
    num_layers=2,
    num_heads=2,
    intermediate_size=512,
    max_position_embeddings=128,
    max_seq_length=128,
    max_predictions=20,
    lr=0.01,  # measured: 2e-3 was at 0.049 after 16k samples where 0.01 was at 0.120
    train_steps=1536,
    warmup_steps=150,
    eval_batch_size=401,
    eval_samples=0,  # the whole held-out set
    layout="padded",
    embedded=True,
)

CONFIGS: dict[str, BertConfig] = {"closed": CLOSED, "embedded": EMBEDDED}
