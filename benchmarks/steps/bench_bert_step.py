"""One BERT-large training step (forward, MLM + NSP losses, backward, LAMB) at a per-GPU batch of
56 sequences of up to 512 tokens with 76 predictions, bf16.

Rows, on the same batch in the same run:
- the reference port (workloads/bert/reference.py) under bf16 autocast, padded to 512, with
  FusedLAMB;
- Hugging Face transformers' ``BertForPreTraining`` (SDPA attention, bf16 autocast, padded) with
  the same FusedLAMB: the model most PyTorch users train;
- ours (workloads/bert/model.py): the MLM head on the masked positions only, unpadded
  (packed) attention, bf16 autocast, FusedLAMB, through the harness's TrainStep; three rows
  (``OURS``): attention over a padded buffer or FlashAttention's varlen kernel, the fused
  bias-GELU and bias-dropout-residual-LayerNorm ops on their torch or Triton backends.

Lengths: the writer's rules (writer.py) fill a sequence to 509 tokens + 3 unless a document ends
first, and draw a short target (uniform in [2, 509]) one time in ten; the lengths here are drawn
the same way with documents ending early one time in four (uniform in [64, 512]), which gives a
mean of about 400 tokens (printed). Floor: the step's matrix FLOPs (6 x parameters x real tokens
+ attention over real tokens) at the measured bf16 matrix rate. Reported: step time, sequences/s
in the shape column, model FLOP utilisation (floor / time) and peak memory (the results file).
"""
from __future__ import annotations

import os
import sys

import pytest
import torch

from mlperf_fast.harness.step import TrainStep
from mlperf_fast.optim import FusedLAMB
from mlperf_fast.workloads.bert.model import BertForPreTraining
from mlperf_fast.workloads.bert.reference import BERT_LARGE, ReferenceBertForPreTraining
from mlperf_fast.workloads.bert.workload import PretrainingLoss, lamb_groups

B, S, P = 56, 512, 76
# (attention, op_backend) of the rows of ours: the padded-buffer attention with the ops' torch
# backends (the first configuration measured), FlashAttention's varlen kernel, and that with the
# Triton kernels of bias_gelu and bias_dropout_add_layer_norm
OURS = (("padded", "torch"), ("flash", "torch"), ("flash", "triton"))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def lengths(n: int, g: torch.Generator) -> torch.Tensor:
    u = torch.rand(n, generator=g)
    full = torch.full((n,), S)
    early = torch.randint(64, S + 1, (n,), generator=g)
    short = torch.randint(8, S + 1, (n,), generator=g)
    return torch.where(u < 0.1, short, torch.where(u < 0.35, early, full))


def batch(n: int, seq: int, preds: int, vocab: int, device, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    lens = lengths(n, g).clamp(max=seq) if seq == S else torch.full((n,), seq)
    ids = torch.randint(5, vocab, (n, seq), generator=g)
    mask = (torch.arange(seq)[None] < lens[:, None]).long()
    ids = ids * mask
    types = ((torch.arange(seq)[None] >= (lens // 2)[:, None]) & mask.bool()).long()
    pos = torch.zeros(n, preds, dtype=torch.long)
    w = torch.zeros(n, preds)
    for i, L in enumerate(lens.tolist()):
        k = min(preds, max(1, round(0.15 * L)))
        pos[i, :k] = torch.randperm(L - 1, generator=g)[:k].sort().values + 1
        w[i, :k] = 1
    mlm = torch.gather(ids, 1, pos) * (w > 0)
    nsp = torch.randint(0, 2, (n,), generator=g)
    out = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask,
           "masked_lm_positions": pos, "masked_lm_ids": mlm, "masked_lm_weights": w,
           "next_sentence_labels": nsp}
    return {k: v.to(device) for k, v in out.items()}, lens


def _transformers():
    """transformers, imported without the repository root on sys.path (its kernels/ folder
    shadows the `kernels` package that transformers imports)."""
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != ROOT]
    try:
        import transformers

        transformers.BertForPreTraining  # noqa: B018 - resolve the lazy import here
    finally:
        sys.path[:] = saved
    return transformers


class _HFLoss(torch.nn.Module):
    """transformers' model with the reference's losses on its logits."""

    def __init__(self, config, transformers) -> None:
        super().__init__()
        hf = transformers.BertConfig(
            vocab_size=config.vocab_size, hidden_size=config.hidden_size,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            intermediate_size=config.intermediate_size, hidden_act="gelu_new",
            max_position_embeddings=config.max_position_embeddings, layer_norm_eps=1e-12,
            attn_implementation="sdpa")
        self.model = transformers.BertForPreTraining(hf)

    def forward(self, input_ids, token_type_ids, attention_mask, masked_lm_positions,
                masked_lm_ids, masked_lm_weights, next_sentence_labels):
        from mlperf_fast.workloads.bert.reference import masked_lm_loss, next_sentence_loss

        out = self.model(input_ids=input_ids, token_type_ids=token_type_ids,
                         attention_mask=attention_mask)
        logits = torch.gather(out.prediction_logits, 1, masked_lm_positions[..., None].expand(
            -1, -1, out.prediction_logits.shape[-1]))
        return (masked_lm_loss(logits.float(), masked_lm_ids, masked_lm_weights)
                + next_sentence_loss(out.seq_relationship_logits.float(), next_sentence_labels))


def _step(loss_module, device, amp=torch.bfloat16):
    model = loss_module.to(device)
    opt = FusedLAMB(lamb_groups(model), lr=4.25e-4, weight_decay=0.01, max_grad_norm=1.0)
    return TrainStep(loss_module, opt, amp_dtype=amp, params=list(model.parameters()),
                     skip_nonfinite=False)


def _flops(lens: torch.Tensor, config=BERT_LARGE) -> float:
    params = 24 * 12 * config.hidden_size ** 2  # the encoder's matrices
    tokens = float(lens.sum())
    attn = sum(4 * float(L) ** 2 * config.hidden_size * config.num_hidden_layers
               for L in lens.tolist())
    return 3 * (2 * params * tokens + attn)


@pytest.mark.cuda
def test_bert_large_training_step(measure):
    data, lens = batch(B, S, P, BERT_LARGE.vocab_size, "cuda")
    print(f"mean length {lens.float().mean():.0f} tokens")
    flops = _flops(lens)
    shape = f"B={B}, mean {lens.float().mean():.0f} of {S} tokens, {P} predictions, bf16"
    group = f"BERT-large training step, B={B} per GPU"
    rows = [("reference port, bf16 autocast, padded, FusedLAMB", "baseline",
             lambda: PretrainingLoss(ReferenceBertForPreTraining(BERT_LARGE)))]
    try:
        tr = _transformers()
        rows.append(("transformers BertForPreTraining (SDPA), bf16 autocast, FusedLAMB",
                     "baseline", lambda: _HFLoss(BERT_LARGE, tr)))
    except ImportError:
        pass
    for attention, ops in OURS:
        rows.append(((f"mlperf_fast BERT (unpadded, MLM on masked positions, {attention} "
                      f"attention, {ops} fused ops), bf16, FusedLAMB"), "ours",
                     lambda a=attention, o=ops: PretrainingLoss(
                         BertForPreTraining(BERT_LARGE, unpad=True, attention=a, op_backend=o))))
    for impl, role, build in rows:
        _measure_one(measure, group, impl, role, build, data, shape, flops)
        torch.cuda.empty_cache()


def _measure_one(measure, group, impl, role, build, data, shape, flops) -> None:
    """One row; the model is freed on return, before the next is built."""
    trainer = _step(build(), "cuda")
    measure(group, impl, lambda: trainer.step([data], 1), role=role, shape=shape, flops=flops,
            warmup=3, repeat=10)


def smoke() -> None:
    """Each step twice on the CPU at a tiny size (tests run this)."""
    small = BERT_LARGE.replace(vocab_size=100, hidden_size=32, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=64,
                               max_position_embeddings=32)
    data, _ = batch(2, 32, 5, small.vocab_size, "cpu")
    for build in (lambda: PretrainingLoss(ReferenceBertForPreTraining(small)),
                  lambda: _HFLoss(small, _transformers()),
                  lambda: PretrainingLoss(BertForPreTraining(small, unpad=True))):
        trainer = _step(build(), "cpu", amp=None)
        trainer.step([data], 1)
        trainer.step([data], 1)
