"""The references' learning-rate schedules, value by value at their boundaries, and against
torch's own schedulers where one computes the same thing."""
import pytest
import torch

from mlperf_fast.optim import schedules
from mlperf_fast.optim.schedules import (LRSchedule, bert_poly_warmup, dlrm_warmup_hold_decay,
                                         maskrcnn_warmup_multistep, resnet_poly_warmup,
                                         retinanet_warmup_factor, set_lr, ssd_warmup_multistep)

approx = pytest.approx


def test_rnnt_warmup_hold_exp_decay_boundaries():
    f = lambda step, epoch: schedules.warmup_hold_exp_decay(  # noqa: E731
        step, epoch, steps_per_epoch=10, warmup_epochs=2, hold_epochs=3, gamma=0.5)
    assert f(1, 1) == approx(2 / 21)  # (step + 1) / (warmup + 1), warmup = 20 steps
    assert f(19, 2) == approx(20 / 21)
    assert f(20, 3) == 1.0 and f(49, 5) == 1.0  # the hold: steps 20 .. 49
    assert f(50, 6) == approx(0.5 ** 1)  # decay by epoch after warmup + hold epochs
    assert f(75, 8) == approx(0.5 ** 3)


def test_bert_boundaries():
    f = lambda step, **kw: bert_poly_warmup(  # noqa: E731
        step, 4e-4, num_train_steps=1000, num_warmup_steps=100, **kw)
    assert f(0) == 0.0  # TF's global_step 0: the first update has rate 0
    assert f(1) == approx(4e-6)
    assert f(99) == approx(4e-4 * 99 / 100)
    # The first decay step: the decay counts from step 0, so it is already 10% down.
    assert f(100) == approx(4e-4 * 0.9)
    assert f(999) == approx(4e-4 * 0.001)
    assert f(1000) == 0.0 and f(5000) == 0.0  # end_lr after num_train_steps
    # A warmup started "before" step 0 (submissions' negative start_warmup_step).
    assert f(0, start_warmup_step=-25) == approx(4e-4 * 25 / 100)
    assert f(75, start_warmup_step=-25) == approx(4e-4 * 0.925)  # k = 100: decaying
    # Before a positive start the reference's rate is negative; it is kept as computed.
    assert f(0, start_warmup_step=10) == approx(-4e-5)
    assert bert_poly_warmup(500, 1.0, 1000, 0, power=2.0, end_lr=0.1) == approx(
        0.9 * 0.25 + 0.1)
    assert bert_poly_warmup(5, 1.0, 1000, 0) == approx(0.995)  # no warmup


def test_resnet_boundaries():
    # 10 steps per epoch, 2 warmup epochs (W = 20), 100 train steps: D = 81.
    f = lambda step: resnet_poly_warmup(step, 10.0, 10, 100, 2)  # noqa: E731
    assert f(0) == 0.0
    assert f(1) == approx(0.5)
    assert f(20) == approx(10.0)  # inclusive: the warmup's last step has the full rate
    assert f(21) == approx((10.0 - 1e-4) * (1 - 1 / 81) ** 2 + 1e-4)
    assert f(100) == approx((10.0 - 1e-4) * (1 / 81) ** 2 + 1e-4)
    assert f(101) == approx(1e-4) and f(10 ** 6) == approx(1e-4)
    # Fractional warmup epochs (the reference's flag is a float).
    assert resnet_poly_warmup(5, 2.0, 4, 50, 2.5) == approx(2.0 * 5 / 10)
    assert resnet_poly_warmup(0, 2.0, 4, 50, 0) == approx(2.0)  # no warmup: no 0 / 0


def test_dlrm_boundaries():
    # W = 4, S = 10, N = 5: warmup 1..3, hold 4..9, decay 10..14, frozen from 15.
    f = lambda step: dlrm_warmup_hold_decay(step, 24.0, 4, 10, 5)  # noqa: E731
    assert f(1) == approx(6.0)  # the first update: the scheduler has stepped once
    assert f(3) == approx(18.0)
    assert f(4) == approx(18.0) and f(9) == approx(18.0)  # held at (W - 1) / W, not 1
    assert f(10) == approx(24.0)  # ((N - 0) / N) ** 2
    assert f(14) == approx(24.0 / 25)
    assert f(15) == approx(24.0 / 25) and f(10 ** 6) == approx(24.0 / 25)  # frozen
    assert dlrm_warmup_hold_decay(14, 1e-6, 4, 10, 5) == approx(1e-7)  # the floor
    assert dlrm_warmup_hold_decay(7, 2.0, 0, 10, 0) == 2.0  # no decay: base rate
    assert dlrm_warmup_hold_decay(3, 2.0, 1, 10, 5) == 2.0  # no warmup rate was computed
    with pytest.raises(ValueError, match="decay_start_step"):
        dlrm_warmup_hold_decay(1, 1.0, 10, 5, 5)


def test_maskrcnn_boundaries():
    f = lambda step, method="linear": maskrcnn_warmup_multistep(  # noqa: E731
        step, 0.02, (60000, 80000), warmup_factor=1 / 3, warmup_iters=500,
        warmup_method=method)
    assert f(0) == approx(0.02 / 3)
    assert f(1) == approx(0.02 * (1 / 3 * (1 - 1 / 500) + 1 / 500))  # the first update
    assert f(499) == approx(0.02 * (1 / 3 * (1 / 500) + 499 / 500))
    assert f(500) == approx(0.02)
    assert f(59999) == approx(0.02) and f(60000) == approx(0.002)  # bisect_right: inclusive
    assert f(80000) == approx(0.0002)
    assert f(10, "constant") == approx(0.02 / 3) and f(500, "constant") == approx(0.02)
    assert f(100, "mlperf_linear") == approx(0.02 - 400 / 3)  # an absolute offset
    with pytest.raises(ValueError, match="warmup_method"):
        f(1, "cosine")
    with pytest.raises(ValueError, match="milestones"):
        maskrcnn_warmup_multistep(1, 0.1, (5, 3))


def test_maskrcnn_linear_matches_torch_linear_and_multistep():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.02)
    sched = torch.optim.lr_scheduler.ChainedScheduler([
        torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / 3, total_iters=50),
        torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[70, 90], gamma=0.1)])
    for step in range(120):
        assert opt.param_groups[0]["lr"] == approx(maskrcnn_warmup_multistep(
            step, 0.02, (70, 90), warmup_factor=1 / 3, warmup_iters=50), rel=1e-9), step
        opt.step()
        sched.step()


def test_ssd_boundaries():
    # 100 steps per epoch, wb = 30, milestones at epochs 2 and 3.
    f = lambda step, wf=0: ssd_warmup_multistep(  # noqa: E731
        step, 0.16, 100, 30, warmup_factor=wf, milestones=(2, 3))
    assert f(0) == 0.0
    assert f(1) == approx(0.16 / 30)
    assert f(29) == approx(0.16 * 29 / 30)
    # After the warmup the reference sets nothing: the warmup's last rate stays.
    assert f(30) == approx(0.16 * 29 / 30) and f(199) == approx(0.16 * 29 / 30)
    assert f(200) == approx(0.016) and f(299) == approx(0.016)  # epoch 2 decays
    assert f(300) == approx(0.0016)
    assert f(0, wf=1) == approx(0.08)  # warmup_factor 1 starts at half the rate
    assert f(30, wf=1) == approx(0.16 * (1 - 1 / 60))
    assert ssd_warmup_multistep(5, 0.1, 10, 0, milestones=(1,)) == approx(0.1)  # no warmup
    assert ssd_warmup_multistep(15, 0.1, 10, 0, milestones=(1,)) == approx(0.01)


def test_ssd_follows_the_reference_loop():
    # The reference's loop order: decay at the start of a milestone epoch, then per iteration
    # set the warmup rate (while iter_num < wb) before the update.
    milestones, spe, wb, base = (1, 3), 7, 10, 0.5
    group = {"lr": base}
    current, it = base, 0
    for epoch in range(5):
        if epoch in milestones:
            current *= 0.1
            group["lr"] = current
        for _ in range(spe):
            if it < wb:
                group["lr"] = current - (wb - it) * current / wb
            assert group["lr"] == approx(ssd_warmup_multistep(it, base, spe, wb,
                                                              milestones=milestones)), it
            it += 1


def test_retinanet_boundaries_and_torch_lambda_lr():
    assert retinanet_warmup_factor(0, 100) == approx(1e-3)
    assert retinanet_warmup_factor(50, 100) == approx(1e-3 * 0.5 + 0.5)
    assert retinanet_warmup_factor(99, 100) == approx(1e-3 * 0.01 + 0.99)
    assert retinanet_warmup_factor(100, 100) == 1.0 and retinanet_warmup_factor(10 ** 6, 100) == 1.0
    # The reference: a LambdaLR built at the start of each warmup epoch, stepped after each
    # update, none after the warmup epochs; the rate of every update against ours.
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1e-4)
    per_epoch, warmup_epochs, it = 6, 2, 0
    for epoch in range(4):
        sched = None
        if epoch < warmup_epochs:
            start, total = epoch * per_epoch, warmup_epochs * per_epoch
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda x, s=start, t=total: 1 if x + s >= t else
                1e-3 * (1 - (x + s) / t) + (x + s) / t)
        for _ in range(per_epoch):
            assert opt.param_groups[0]["lr"] == approx(
                1e-4 * retinanet_warmup_factor(it, warmup_epochs * per_epoch)), it
            opt.step()
            if sched is not None:
                sched.step()
            it += 1


def test_lr_schedule_adapter_follows_per_group_base_rates():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([{"params": [a], "lr": 0.02}, {"params": [b], "lr": 0.04}], lr=0.02)
    sched = LRSchedule(opt, lambda n, base: maskrcnn_warmup_multistep(
        n, base, (5,), warmup_iters=3), first_step=1)
    seen = []
    for _ in range(6):
        seen.append(sched.get_last_lr())
        opt.step()
        sched.step()
    assert seen[0] == approx([0.02 * (1 / 3 * (2 / 3) + 1 / 3), 0.04 * (1 / 3 * (2 / 3) + 1 / 3)])
    assert seen[2] == approx([0.02, 0.04]) and seen[4] == approx([0.002, 0.004])
    state = sched.state_dict()
    again = LRSchedule(opt, sched.lr_at)
    again.load_state_dict(state)
    assert again.get_last_lr() == sched.get_last_lr()
    with pytest.raises(TypeError, match="lr_at"):
        LRSchedule(opt, 3)


def test_set_lr_updates_a_device_lr_in_place():
    lr = torch.tensor(0.5)
    groups = [{"lr": lr}, {"lr": 0.1}]
    set_lr(groups, 0.25)
    assert groups[0]["lr"] is lr and float(lr) == 0.25 and groups[1]["lr"] == 0.25


@pytest.mark.parametrize("call, name", [
    (lambda: bert_poly_warmup(1, float("nan"), 10, 2), "base_lr"),
    (lambda: bert_poly_warmup(-1, 1.0, 10, 2), "step"),
    (lambda: bert_poly_warmup(1, 1.0, 0, 2), "num_train_steps"),
    (lambda: resnet_poly_warmup(1, 1.0, 0, 10, 1), "steps_per_epoch"),
    (lambda: resnet_poly_warmup(1, 1.0, 10, 10, -1), "warmup_epochs"),
    (lambda: resnet_poly_warmup(1, 1.0, 10, 5, 2), "train_steps"),
    (lambda: dlrm_warmup_hold_decay(1.5, 1.0, 1, 2, 3), "step"),
    (lambda: ssd_warmup_multistep(1, 1.0, 10, -3), "warmup_iters"),
    (lambda: retinanet_warmup_factor(1, 10, float("inf")), "warmup_factor"),
])
def test_bad_arguments_are_named(call, name):
    with pytest.raises(ValueError, match=name):
        call()
