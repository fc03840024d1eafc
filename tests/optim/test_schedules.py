"""The references' learning-rate schedules, value by value at their boundaries."""
import pytest

from mlperf_fast.optim import schedules


def test_rnnt_warmup_hold_exp_decay_boundaries():
    f = lambda step, epoch: schedules.warmup_hold_exp_decay(  # noqa: E731
        step, epoch, steps_per_epoch=10, warmup_epochs=2, hold_epochs=3, gamma=0.5)
    assert f(1, 1) == pytest.approx(2 / 21)  # (step + 1) / (warmup + 1), warmup = 20 steps
    assert f(19, 2) == pytest.approx(20 / 21)
    assert f(20, 3) == 1.0 and f(49, 5) == 1.0  # the hold: steps 20 .. 49
    assert f(50, 6) == pytest.approx(0.5 ** 1)  # decay by epoch after warmup + hold epochs
    assert f(75, 8) == pytest.approx(0.5 ** 3)
