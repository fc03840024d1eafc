"""ResNet-50: the reference port against torchvision's resnet50 (same weights: same logits,
losses and gradients), the optimized model against the port, the initialization, the rules'
tensor names, the optimizers' per-parameter treatment and the configuration's derived values.

Tolerances: float64 comparisons of the same arithmetic in another order (channels-last
convolutions, another pooling call) agree to ~1e-12 relative; 1e-9 leaves room for the
accumulation over 2048 channels. The CUDA test compares bf16 autocast (8 mantissa bits: 4e-3
per rounding, compounded over ~50 layers) with float32: logits to 5% of their spread.
"""
from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from mlperf_fast.workloads.resnet.config import CLOSED, CONFIGS, EMBEDDED, IMAGENET_TRAIN
from mlperf_fast.workloads.resnet.model import (
    ClassificationLoss,
    ResNet,
    from_reference,
    initialization_tensors,
)
from mlperf_fast.workloads.resnet.reference import (
    ReferenceResNet50,
    _same_pad,
    he_normal_,
    reference_loss,
    torchvision_state_dict,
)

F64 = {"rtol": 1e-9, "atol": 1e-9}


def _pair(seed: int, classes: int = 1000, padding: str = "torch"):
    g = torch.Generator().manual_seed(seed)
    ref = ReferenceResNet50(classes, padding=padding, generator=g).double()
    # non-trivial batch-norm parameters and statistics, so that the mapping of each matters
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.2, 0.2, generator=g)
                m.running_mean.uniform_(-0.1, 0.1, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
    return ref, g


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_reference_port_equals_torchvision(train, rng_seed):
    tv = pytest.importorskip("torchvision")
    ref, g = _pair(rng_seed)
    theirs = tv.models.resnet50(num_classes=1000).double()
    theirs.load_state_dict(torchvision_state_dict(ref))
    ref.train(train), theirs.train(train)
    x = torch.randn(3, 3, 96, 80, generator=g, dtype=torch.float64)
    y = torch.randint(0, 1000, (3,), generator=g)
    a, b = ref(x), theirs(x)
    torch.testing.assert_close(a, b, **F64)
    la, lb = reference_loss(a, y), F.cross_entropy(b, y, label_smoothing=0.1)
    torch.testing.assert_close(la, lb, **F64)
    la.backward(), lb.backward()
    tv_grads = {k: p.grad for k, p in theirs.named_parameters()}
    mapped = torchvision_state_dict(ref)  # the same names, for the port's gradients:
    ref_grads = dict(zip(mapped, (p.grad for p in _state_params(ref))))
    for name, grad in ref_grads.items():
        if name in tv_grads:
            torch.testing.assert_close(grad, tv_grads[name], **F64, msg=name)
    assert set(tv_grads) <= set(ref_grads)


def _state_params(model):
    """The model's state-dict entries in order, as parameters (None for buffers)."""
    params = dict(model.named_parameters())
    return [params.get(k, _NoGrad) for k in model.state_dict()]


class _NoGrad:
    grad = None


def test_optimized_model_equals_the_port(rng_seed):
    ref, g = _pair(rng_seed)
    mine = ResNet().double()
    mine.load_state_dict(from_reference(ref))
    x = torch.randn(4, 3, 64, 64, generator=g, dtype=torch.float64)
    y = torch.randint(0, 1000, (4,), generator=g)
    a = ref(x)
    lb = ClassificationLoss(mine, 0.1)(x, y)  # one forward of each: the statistics move once
    la = reference_loss(a, y)
    torch.testing.assert_close(la, lb, **F64)
    la.backward(), lb.backward()
    mine.eval(), ref.eval()
    torch.testing.assert_close(ref(x), mine(x), **F64)
    theirs = from_reference(ref)
    for (name, p), (_, q) in zip(mine.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, **F64, msg=name)
    # training-mode forward moved the running statistics identically
    for name, value in mine.state_dict().items():
        torch.testing.assert_close(value, from_reference(ref)[name], msg=name)
    assert theirs.keys() == mine.state_dict().keys()


def test_tf_same_padding_is_bottom_right_on_stride_two():
    assert _same_pad(112, 3, 2) == (0, 1) and _same_pad(113, 3, 2) == (1, 1)
    assert _same_pad(56, 3, 1) == (1, 1) and _same_pad(56, 1, 2) == (0, 0)
    g = torch.Generator().manual_seed(0)
    tf, _ = _pair(0, padding="tf")
    torch_, _ = _pair(0, padding="torch")
    torch_.load_state_dict(tf.state_dict())
    tf.eval(), torch_.eval()
    x = torch.randn(2, 3, 64, 64, generator=g, dtype=torch.float64)
    assert tf(x).shape == torch_(x).shape == (2, 1000)
    assert not torch.allclose(tf(x), torch_(x))  # the two conventions differ ...
    # ... and 'tf' is TensorFlow's: output (0, 0) of a 3x3/2 convolution sees rows/cols 0..2
    conv = tf.blocks[3].branch2b  # stage 3's first block: the strided 3x3
    assert conv.stride == (2, 2)
    z = torch.randn(1, conv.in_channels, 8, 8, generator=g, dtype=torch.float64)
    out = conv(z)
    want = (conv.weight[:, :, :, :] * z[0, :, 0:3, 0:3]).sum(dim=(1, 2, 3))
    torch.testing.assert_close(out[0, :, 0, 0], want)
    assert out.shape[-2:] == (4, 4)
    # the max pool: the padding never wins (all-negative input)
    neg = -torch.rand(1, 64, 6, 6, generator=g, dtype=torch.float64) - 1
    pooled = tf._max_pool(neg)
    assert pooled.shape[-2:] == (3, 3) and float(pooled.max()) < -1
    assert torch.equal(pooled[0, :, 0, 0], neg[0, :, 0:3, 0:3].amax(dim=(1, 2)))


def test_initialization_is_the_references():
    g = torch.Generator().manual_seed(5)
    w = torch.empty(512, 256, 3, 3)
    he_normal_(w, g)
    fan_in = 256 * 9
    bound = 2 * math.sqrt(2 / fan_in) / 0.87962566103423978
    assert float(w.abs().max()) <= bound + 1e-7  # truncated at two standard deviations
    # the truncated normal's own std is sqrt(2 / fan_in) (n = 1.2M: within 0.5%)
    assert abs(float(w.std()) / math.sqrt(2 / fan_in) - 1) < 5e-3
    m = ResNet(generator=torch.Generator().manual_seed(1))
    assert abs(float(m.fc1.weight.detach().std()) - 0.01) < 2e-4 and float(m.fc1.bias.abs().max()) == 0
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            assert mod.momentum == 0.1 and mod.eps == 1e-5
            assert torch.equal(mod.weight, torch.ones_like(mod.weight))
            assert torch.equal(mod.bias, torch.zeros_like(mod.bias))
    # seeded: the same generator seed, the same weights
    m2 = ResNet(generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(m.parameters(), m2.parameters()))
    assert sum(p.numel() for p in m.parameters()) == 25_557_032  # ResNet-50's count


def test_initialization_tensors_are_the_rules():
    from mlperf_fast.harness.compliance import rules_path

    with open(rules_path("closed_resnet.yaml")) as f:
        text = f.read().split("sorted([", 1)[1].split("])", 1)[0]
    want = re.findall(r'"([a-z0-9_]+)"', text)
    assert len(want) == 161
    assert sorted(initialization_tensors(ResNet())) == sorted(want)


def test_small_resnet_shapes_and_errors():
    cfg = EMBEDDED
    m = ResNet(cfg.num_classes, cfg.blocks, cfg.widths, cfg.stem, cfg.expansion)
    x = torch.randn(2, 3, cfg.image_size, cfg.image_size)
    assert m(x).shape == (2, cfg.num_classes)
    assert m(x.contiguous(memory_format=torch.channels_last)).shape == (2, cfg.num_classes)
    for bad in ({"blocks": (1, 1), "widths": (8,)}, {"blocks": (0,), "widths": (8,)},
                {"num_classes": 0}):
        with pytest.raises(ValueError):
            ResNet(**bad)
    with pytest.raises(ValueError, match="label_smoothing"):
        ClassificationLoss(m, 1.0)


def test_lars_excludes_batch_norm_and_biases_as_the_reference():
    from mlperf_fast.optim.lars import lars_param_groups

    m = ResNet(10, (1, 1, 1, 1), (4, 4, 4, 4), 4)
    adapted, excluded = lars_param_groups(m, lr=1.0)
    names = {id(p): n for n, p in m.named_parameters()}
    # the reference's skip_list ['batch_normalization', 'bias', 'bn']
    skipped = {n for n in names.values() if ".bn" in n or n.startswith("bn") or
               n.endswith("bias")}
    assert {names[id(p)] for p in excluded["params"]} == skipped
    assert excluded["lars_exclude"] and not adapted.get("lars_exclude", False)


def test_reference_sgd_step_is_keras_momentum_with_the_l2_term():
    from mlperf_fast.workloads.resnet.workload import ReferenceSGD

    torch.manual_seed(0)
    m = ResNet(10, (1, 1, 1, 1), (4, 4, 4, 4), 4).double()
    lr, mom, wd = 0.3, 0.9, 5e-5
    opt = ReferenceSGD(m, lr, mom, wd)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    v = {n: torch.zeros_like(p) for n, p in before.items()}
    for step in range(2):
        for p in m.parameters():
            p.grad = torch.randn_like(p)
        grads = {n: p.grad.clone() for n, p in m.named_parameters()}
        for g in opt.param_groups:
            g["lr"] = lr * (step + 1)
        opt.step()
        for n, w in before.items():
            decay = 0.0 if (".bn" in n or n.startswith("bn")) else 2 * wd
            v[n] = mom * v[n] - lr * (step + 1) * (grads[n] + decay * w)
            before[n] = w + v[n]
    for n, p in m.named_parameters():
        torch.testing.assert_close(p.detach(), before[n], msg=n)


def test_closed_config_values():
    spe = CLOSED.steps_per_epoch(IMAGENET_TRAIN)
    assert spe == 392  # 1,281,167 // 3,264, the remainder dropped
    train_steps = CLOSED.train_steps(spe)
    assert train_steps - 2 * spe + 1 == 14523  # the RCP's decay steps, as logged
    assert CLOSED.schedule.evaluation_points()[:3] == [2, 6, 10]
    assert CLOSED.schedule.evaluation_points()[-1] == 42 or CLOSED.schedule.budget == 42
    assert train_steps / spe < CLOSED.schedule.budget
    assert set(CONFIGS) == {"closed", "closed_sgd", "embedded"}
    with pytest.raises(ValueError):
        CLOSED.replace(optimizer="adam")
    with pytest.raises(ValueError, match="fewer than one global batch"):
        CLOSED.steps_per_epoch(100)


@pytest.mark.cuda
def test_bf16_channels_last_model_tracks_the_float32_port():
    ref, g = _pair(3)
    ref = ref.float().cuda().eval()
    mine = ResNet().cuda().eval()
    mine.load_state_dict({k: v.float() if v.is_floating_point() else v
                          for k, v in from_reference(ref).items()})
    x = torch.randn(8, 3, 224, 224, generator=g).cuda()
    want = ref(x)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got = mine(x).float()
    spread = float(want.std())
    assert float((got - want).abs().max()) < 0.05 * spread * 10
    assert float((got - want).abs().mean()) < 0.05 * spread
