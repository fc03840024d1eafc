"""One RNN-T training step (forward, loss, backward, LAMB) at the closed configuration's sizes
and per-GPU batch: 128 utterances per optimizer step (global batch 1024 over 8 GPUs). The
MLCommons reference model in float32 (its training default, AMP off) takes them as the reference
does, 8 accumulated micro-batches of 16 (GRAD_ACCUMULATION_STEPS 8); mlperf_fast's model (bf16
autocast, the fused joint + loss, FusedLAMB) as one batch of 128, which gives the same gradient
(the loss is a mean over utterances and nothing in the model couples them), and, for a like for
like reading, as 8 micro-batches of 16 too; and the reference as a user of a large GPU runs it,
under bf16 autocast in one batch of 128 (the like-for-like peer: torchaudio's loss takes float
logits, so they are cast). Our step is the training step of the harness (harness/step.py, with its
one read of the non-finite flag per step). Rows report the time of one optimizer step; the shape
column gives utterances per second. A second test times ours at 128 and at 192 utterances (NVIDIA's
per-GPU batch on the H100) in one group: the cost of the larger batch per utterance.

Utterances: 12.3 s each (LibriSpeech's mean training utterance) = 410 frames after stacking by
3, 60 sentencepiece targets. Floor: the step's matrix FLOPs (LSTM gates, joint network; forward +
2x for backward) at the measured bf16 matrix rate.
"""
from __future__ import annotations

import pytest
import torch
from rnnt_closed_batch import T, U, V, synthetic_batch

from mlperf_fast.harness.step import TrainStep
from mlperf_fast.optim import FusedLAMB
from mlperf_fast.workloads.rnnt import reference
from mlperf_fast.workloads.rnnt.config import CLOSED
from mlperf_fast.workloads.rnnt.model import RNNT
from mlperf_fast.workloads.rnnt.workload import TrainingLoss

B = 128
BIG = 192  # NVIDIA's per-GPU batch on the H100
MICRO = 16  # the reference's forward batch


def _lstm_flops(t: int, inp: int, hid: int, layers: int) -> float:
    return sum(2 * 4 * hid * ((inp if i == 0 else hid) + hid) * t * B for i in range(layers))


def _step_flops() -> float:
    m = CLOSED.model
    t2 = (T + 1) // 2
    fwd = (_lstm_flops(T, CLOSED.features.in_feats, m.enc_n_hid, m.enc_pre_rnn_layers)
           + _lstm_flops(t2, 2 * m.enc_n_hid, m.enc_n_hid, m.enc_post_rnn_layers)
           + _lstm_flops(U + 1, m.pred_n_hid, m.pred_n_hid, m.pred_rnn_layers)
           + 2 * B * t2 * (U + 1) * m.joint_n_hid * V)
    return 3 * fwd


def _reference_loss():
    try:
        from torchaudio.functional import rnnt_loss

        return rnnt_loss, "torchaudio rnnt_loss"
    except ImportError:
        return reference.transducer_loss, "plain PyTorch rnnt_loss"


def _micro_batches(inputs, micro: int):
    x, x_lens, y, y_lens = inputs
    return [(x[:, i:i + micro], x_lens[i:i + micro], y[i:i + micro], y_lens[i:i + micro])
            for i in range(0, B, micro)]


@pytest.mark.cuda
def test_rnnt_training_step(measure):
    torch.manual_seed(0)
    inputs = synthetic_batch(B, "cuda")
    ref = reference.RNNT(V, CLOSED.features.in_feats, CLOSED.model).cuda()
    ours = RNNT(V, CLOSED.features.in_feats, CLOSED.model).cuda()
    ours.load_state_dict(ref.state_dict())
    ref_opt = reference.ReferenceLAMB(ref.parameters(), **CLOSED.optim.lamb_kwargs())
    our_opt = FusedLAMB(ours.parameters(), **CLOSED.optim.lamb_kwargs())
    trainer = TrainStep(TrainingLoss(ours), our_opt)
    loss_fn, loss_name = _reference_loss()

    def ref_step(micro: int, amp: bool):
        batches = _micro_batches(inputs, micro)

        def step():
            ref_opt.zero_grad(set_to_none=True)
            for x, x_lens, y, y_lens in batches:
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                    logits, f_lens = ref(x, x_lens, y, y_lens)
                loss = loss_fn(logits.float(), y, f_lens.int(), y_lens, blank=V - 1,
                               reduction="mean")
                (loss / len(batches)).backward()
            ref_opt.step()
        return step

    def our_step(micro: int):
        batches = _micro_batches(inputs, micro)
        return lambda: trainer.step(batches, len(batches))

    group = "RNN-T training step, closed sizes, 128 utterances per GPU"
    flops = _step_flops()

    def shape(split: str) -> str:
        return f"B={B} ({split}) T={T} U={U} V={V}"
    measure(group, f"reference fp32 + {loss_name}, 8 x 16 accumulated", ref_step(MICRO, False),
            role="baseline", shape=shape("8 x 16"), flops=flops, warmup=1, repeat=5)
    measure(group, f"reference bf16 autocast + {loss_name}, one batch of 128", ref_step(B, True),
            role="baseline", shape=shape("1 x 128"), flops=flops, warmup=1, repeat=5)
    measure(group, "mlperf_fast bf16 + FusedLAMB, 8 x 16 accumulated", our_step(MICRO),
            shape=shape("8 x 16"), flops=flops, warmup=1, repeat=5)
    measure(group, "mlperf_fast bf16 + FusedLAMB, one batch of 128", our_step(B),
            shape=shape("1 x 128"), flops=flops, warmup=1, repeat=5)


@pytest.mark.cuda
def test_rnnt_training_step_192(measure):
    """Ours at NVIDIA's per-GPU batch on the H100 (192 utterances), beside ours at 128 in the
    same run: the step's cost per utterance should not grow with the batch. (The reference
    under bf16 autocast cannot run it: torchaudio's loss over 2.5e9 logits faults.)"""
    torch.manual_seed(0)
    model = RNNT(V, CLOSED.features.in_feats, CLOSED.model).cuda()
    trainer = TrainStep(TrainingLoss(model),
                        FusedLAMB(model.parameters(), **CLOSED.optim.lamb_kwargs()))
    group = "RNN-T training step, closed sizes, ours at 128 and 192 utterances per GPU"
    for b in (B, BIG):
        inputs = synthetic_batch(b, "cuda")
        measure(group, f"mlperf_fast bf16 + FusedLAMB, one batch of {b}",
                lambda inputs=inputs: trainer.step([inputs], 1),
                shape=f"B={b} (1 x {b}) T={T} U={U} V={V}", flops=_step_flops() * b / B,
                warmup=1, repeat=5)
