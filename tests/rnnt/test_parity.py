"""The optimized model against the reference port: one state_dict in both, the same loss,
gradients and greedy transcripts."""
from __future__ import annotations

import pytest
import torch

from mlperf_fast.workloads.rnnt import reference
from mlperf_fast.workloads.rnnt.config import ModelConfig
from mlperf_fast.workloads.rnnt.model import RNNT, GreedyDecoder
from mlperf_fast.workloads.rnnt.reference import transducer_loss

CFG = ModelConfig(enc_n_hid=32, enc_pre_rnn_layers=2, enc_post_rnn_layers=2, pred_n_hid=24,
                  pred_rnn_layers=2, joint_n_hid=20)
N_CLASSES, IN_FEATS = 12, 15


def _models(seed: int) -> tuple[reference.RNNT, RNNT]:
    torch.manual_seed(seed)
    ref = reference.RNNT(N_CLASSES, IN_FEATS, CFG)
    ours = RNNT(N_CLASSES, IN_FEATS, CFG)
    assert set(ref.state_dict()) == set(ours.state_dict())
    ours.load_state_dict(ref.state_dict())
    return ref.eval(), ours.eval()


def _batch(seed: int, b: int = 4, t: int = 23, u: int = 6):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((t, b, IN_FEATS), generator=g)
    x_lens = torch.randint(1, t + 1, (b,), generator=g, dtype=torch.int32)
    x_lens[0] = t
    y = torch.randint(1, N_CLASSES - 1, (b, u), generator=g, dtype=torch.int32)
    y_lens = torch.randint(0, u + 1, (b,), generator=g, dtype=torch.int32)
    y_lens[1] = u
    for i in range(b):  # padding as the loader writes it
        y[i, int(y_lens[i]):] = 0
        x[int(x_lens[i]):, i] = 0
    return x, x_lens, y, y_lens


def test_initialization_follows_reference():
    torch.manual_seed(0)
    m = RNNT(N_CLASSES, IN_FEATS, CFG)
    h = CFG.enc_n_hid
    bias_ih = m.encoder["pre_rnn"].lstm.bias_ih_l0
    bias_hh = m.encoder["pre_rnn"].lstm.bias_hh_l0
    # forget gate: 1.0 on bias_ih, 0 on bias_hh, then every LSTM tensor scaled by 0.5
    assert torch.all(bias_ih[h:2 * h] == CFG.forget_gate_bias * CFG.weights_init_scale)
    assert torch.all(bias_hh[h:2 * h] == 0)
    bound = CFG.weights_init_scale / h ** 0.5
    assert float(m.encoder["pre_rnn"].lstm.weight_hh_l0.abs().max()) <= bound


@pytest.mark.parametrize("odd_time", [False, True])
def test_loss_and_gradients_match_reference(odd_time, rng_seed):
    ref, ours = _models(rng_seed)
    x, x_lens, y, y_lens = _batch(rng_seed, t=23 if odd_time else 24)
    logits, f_lens = ref(x, x_lens, y, y_lens)
    # the reference's training step: logits cut to the longest utterance, full U + 1
    ref_loss = transducer_loss(logits[:, :int(f_lens.max())].float(), y, f_lens.int(),
                               y_lens, blank=N_CLASSES - 1)
    ref_loss.backward()
    our_loss = ours.loss(x, x_lens, y, y_lens)
    our_loss.backward()
    # same float32 operations in a different order (stacking by reshape, cut lattice):
    # differences are rounding, ~1e-6 relative
    torch.testing.assert_close(our_loss, ref_loss, rtol=1e-5, atol=1e-5)
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        # Gradients are float32 sums over every (b, t, u, v) taken in different orders by the
        # fused loss and the plain one: a bias summed over the whole lattice was seen 1.5e-6 off
        # at a size of 4.5e-3. 1e-5 absolute keeps that and is far below a wrong term.
        torch.testing.assert_close(p.grad, ref_params[name].grad, rtol=1e-4, atol=1e-5,
                                   msg=lambda m, n=name: f"{n}: {m}")
    our_logits, our_lens = ours(x, x_lens, y, y_lens)
    assert torch.equal(our_lens, f_lens.int())
    torch.testing.assert_close(our_logits, logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("limits", [(30, None), (2, 5), (1, 0)])
def test_greedy_transcripts_match_reference(device, limits, rng_seed):
    # On CUDA the decoder is mlperf_fast.ops.rnnt_greedy_decode (CUDA graph, fused LSTM cell),
    # here in float32 (amp off): the reference's transcripts, limits included.
    ref, ours = _models(rng_seed)
    # make symbols likelier than the blank so that the limits matter
    with torch.no_grad():
        ours.joint_net[2].bias[-1] -= 1.5
        ref.joint_net[2].bias[-1] -= 1.5
    ours.amp = False
    x, x_lens, _, _ = _batch(rng_seed + 1, b=5, t=17)
    per_step, per_sample = limits
    want = reference.GreedyDecoder(N_CLASSES - 1, per_step, per_sample).decode(ref, x, x_lens)
    got = GreedyDecoder(N_CLASSES - 1, per_step, per_sample).decode(ours.to(device),
                                                                    x.to(device),
                                                                    x_lens.to(device))
    assert got == want
    assert any(len(w) > 0 for w in want)


@pytest.mark.cuda
def test_cuda_loss_is_the_fused_joint_loss(rng_seed):
    # On CUDA joint_loss runs mlperf_fast.ops.transducer_joint_loss: in float32 (amp off) it
    # gives the reference's loss and gradients.
    ref, ours = _models(rng_seed)
    ours = ours.cuda()
    ours.amp = False
    x, x_lens, y, y_lens = _batch(rng_seed, b=6, t=30, u=7)
    logits, f_lens = ref(x, x_lens, y, y_lens)
    ref_loss = transducer_loss(logits[:, :int(f_lens.max())].float(), y, f_lens.int(), y_lens,
                               blank=N_CLASSES - 1)
    ref_loss.backward()
    with torch.backends.cudnn.flags(enabled=False):  # eval mode: cuDNN has no LSTM backward
        our_loss = ours.loss(x.cuda(), x_lens.cuda(), y.cuda(), y_lens.cuda())
        our_loss.backward()
    torch.testing.assert_close(our_loss.cpu(), ref_loss, rtol=1e-5, atol=1e-5)
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad.cpu(), ref_params[name].grad, rtol=1e-4, atol=1e-5,
                                   msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.cuda
def test_bf16_autocast_on_cuda_is_close_to_float32_reference(rng_seed):
    ref, ours = _models(rng_seed)
    ours = ours.cuda()
    x, x_lens, y, y_lens = _batch(rng_seed, b=8, t=40, u=9)
    logits, f_lens = ref(x, x_lens, y, y_lens)
    ref_loss = transducer_loss(logits[:, :int(f_lens.max())].float(), y, f_lens.int(), y_lens,
                               blank=N_CLASSES - 1)
    ref_loss.backward()
    # The models are in eval mode (no dropout) so that they can be compared; cuDNN's LSTM has no
    # backward in eval mode, so this comparison runs torch's own LSTM kernels.
    with torch.backends.cudnn.flags(enabled=False):
        our_loss = ours.loss(x.cuda(), x_lens.cuda(), y.cuda(), y_lens.cuda())
        our_loss.backward()
    # bf16 keeps 8 bits of mantissa: the LSTMs' and the joint's rounding shows at ~1e-2
    assert abs(float(our_loss) - float(ref_loss)) <= 2e-2 * abs(float(ref_loss))
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        a, b = p.grad.float().cpu().flatten(), ref_params[name].grad.flatten()
        cos = torch.nn.functional.cosine_similarity(a, b, dim=0)
        assert float(cos) > 0.98, (name, float(cos))
    hyps = GreedyDecoder(N_CLASSES - 1, 30, 300).decode(ours, x.cuda(), x_lens.cuda())
    assert len(hyps) == 8
