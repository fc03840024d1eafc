"""The shared training step: accumulation gives the full batch's gradient, autocast and loss
scaling run, a non-finite loss skips the whole step and changes nothing."""
import copy

import pytest
import torch

from mlperf_fast.harness.step import TrainStep
from mlperf_fast.optim.ema import EMA


class _Loss(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, y, poison=False):
        loss = torch.nn.functional.mse_loss(self.model(x), y)
        return loss * float("nan") if poison else loss


def _setup(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    x, y = torch.randn(12, 6), torch.randn(12, 2)
    return model, x, y


def test_accumulation_equals_one_batch():
    model, x, y = _setup()
    other = copy.deepcopy(model)
    a = TrainStep(_Loss(model), torch.optim.SGD(model.parameters(), lr=0.1))
    b = TrainStep(_Loss(other), torch.optim.SGD(other.parameters(), lr=0.1))
    a.step([(x, y)], 1)
    b.step([(x[i:i + 4], y[i:i + 4]) for i in range(0, 12, 4)], 3)
    for p, q in zip(model.parameters(), other.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    assert a.applied == b.applied == 1


def test_nonfinite_loss_skips_everything():
    model, x, y = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ema = EMA(model, 0.5)
    skipped = []
    step = TrainStep(_Loss(model), opt, ema=ema, on_skip=skipped.append)
    step.step([(x, y)], 1)
    before = copy.deepcopy(model.state_dict())
    ema_before = copy.deepcopy(ema.module.state_dict())
    opt_before = copy.deepcopy(opt.state_dict())
    result = step.step([(x[:6], y[:6]), (x[6:], y[6:], True)], 2)
    assert not result.applied and step.skipped == 1 and step.applied == 1 and skipped == [2]
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    for k, v in ema.module.state_dict().items():
        assert torch.equal(v, ema_before[k])
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(opt.state_dict()["state"][0]["momentum_buffer"],
                       opt_before["state"][0]["momentum_buffer"])


def test_clipping_and_a_non_finite_gradient_norm():
    model, x, y = _setup()
    step = TrainStep(_Loss(model), torch.optim.SGD(model.parameters(), lr=0.1), clip_grad_norm=1e-3)
    assert step.step([(x * 100, y)], 1).applied
    model[2].weight.register_hook(lambda g: g + float("inf"))  # a finite loss, an inf gradient
    assert not step.step([(x, y)], 1).applied


def test_autocast_and_grad_scaler():
    model, x, y = _setup()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    step = TrainStep(_Loss(model), torch.optim.SGD(model.parameters(), lr=0.1),
                     amp_dtype=torch.bfloat16, grad_scaler=scaler)
    assert step.step([(x, y)], 1).applied
    assert not step.step([(x, y, True)], 1).applied
    assert scaler.get_scale() < 2.0 ** 8  # backed off after the non-finite step
    state = step.state_dict()
    assert state["applied"] == 1 and state["skipped"] == 1 and "grad_scaler" in state


def test_bad_arguments():
    model, x, y = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="amp_dtype"):
        TrainStep(_Loss(model), opt, amp_dtype=torch.float64)
    with pytest.raises(ValueError, match="clip_grad_norm"):
        TrainStep(_Loss(model), opt, clip_grad_norm=0.0)
    step = TrainStep(_Loss(model), opt)
    with pytest.raises(ValueError, match="micro-batches"):
        step.step([(x, y)], 2)
