"""Learning-rate schedules of the MLPerf references, each with the reference's exact semantics
(off-by-ones included): a function of the step (and where the reference uses it, the epoch)
returning the factor or the rate, and nothing else, so that a schedule is tested as arithmetic
and any optimizer can follow it (``set_lr``, or :class:`LRSchedule` after every step).

Each reference counts its steps its own way, and each function takes the count as its reference
passes it for the update it is about to make; its docstring says what that count is for the first
update. ``warmup_hold_exp_decay`` returns a factor of the base rate (RNN-T's reference clamps the
product itself); the others take ``base_lr`` and return the rate, because their references add
absolute terms (an end rate, a floor, an offset) to it.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

WARMUP_METHODS = ("constant", "linear", "mlperf_linear")


def set_lr(param_groups: Iterable[dict], lr: float) -> None:
    """Set ``lr`` in every param group. A group whose lr is a tensor (a capturable optimizer's,
    on the device) is updated in place, so that a captured CUDA graph reads the new value."""
    for g in param_groups:
        _set_group_lr(g, lr)


def _set_group_lr(group: dict, lr: float) -> None:
    if torch.is_tensor(group["lr"]):
        group["lr"].fill_(lr)
    else:
        group["lr"] = lr


def _finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _count(name: str, value: int, minimum: int | None = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or (
            minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"{name} must be an integer{bound}, got {value!r}")
    return value


def warmup_hold_exp_decay(step: int, epoch: int, steps_per_epoch: int, warmup_epochs: int,
                          hold_epochs: int, gamma: float) -> float:
    """RNN-T's factor (rnn_speech_recognition/pytorch common/optimizers.py ``lr_policy`` with
    exponential decay): ``(step + 1) / (warmup + 1)`` during the warmup's steps, 1 during the
    hold, then ``gamma ** (epoch - warmup_epochs - hold_epochs)``. ``step`` counts optimizer
    steps from 1 and ``epoch`` epochs from 1, as the reference's train loop passes them; the
    reference clamps the resulting rate from below at its ``min_lr``, which the caller applies.
    """
    warmup = warmup_epochs * steps_per_epoch
    hold = hold_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if step < warmup + hold:
        return 1.0
    return gamma ** (epoch - warmup_epochs - hold_epochs)


def bert_poly_warmup(step: int, base_lr: float, num_train_steps: int, num_warmup_steps: int,
                     start_warmup_step: int = 0, power: float = 1.0,
                     end_lr: float = 0.0) -> float:
    """BERT's rate: linear warmup, then polynomial decay to ``end_lr``.

    Source: mlcommons/training language_model/tensorflow/bert/optimization.py
    ``create_optimizer`` (``tf.train.polynomial_decay`` with cycle=False, then the warmup), and
    its PyTorch port language_model/pytorch/schedulers.py ``LinearWarmupPolyDecayScheduler``,
    which computes the same. With ``k = step - start_warmup_step``:

        k < num_warmup_steps:  base_lr * k / num_warmup_steps
        otherwise:             (base_lr - end_lr) * (1 - min(step, T) / T) ** power + end_lr

    with ``T = num_train_steps``. The decay runs on ``step`` itself, not on the steps after the
    warmup: the warmup's steps count towards T. A step before ``start_warmup_step`` gives k < 0
    and a negative rate in both references (submissions set start_warmup_step <= 0, which starts
    the warmup "before" step 0); it is returned as they compute it. ``step`` is TensorFlow's
    ``global_step`` before the update (0 for the first update); the PyTorch port passes the
    optimizer's step count + 1 (1 for the first update).
    """
    step = _count("step", step)
    base_lr, end_lr, power = (_finite("base_lr", base_lr), _finite("end_lr", end_lr),
                              _finite("power", power))
    _count("num_train_steps", num_train_steps, minimum=1)
    _count("num_warmup_steps", num_warmup_steps)
    _count("start_warmup_step", start_warmup_step, minimum=None)
    k = step - start_warmup_step
    if k < num_warmup_steps:
        return base_lr * k / num_warmup_steps
    progress = min(step, num_train_steps) / num_train_steps
    return (base_lr - end_lr) * (1.0 - progress) ** power + end_lr


def resnet_poly_warmup(step: int, base_lr: float, steps_per_epoch: int, train_steps: int,
                       warmup_epochs: float, end_lr: float = 1e-4,
                       power: float = 2.0) -> float:
    """ResNet-50's rate (LARS): linear warmup over ``warmup_epochs``, then polynomial decay of
    power 2 to ``end_lr``.

    Source: mlcommons/training image_classification/tensorflow2 (now
    retired_benchmarks/resnet-tf2/tensorflow2) lars_util.py ``PolynomialDecayWithWarmup``. With
    ``W = warmup_epochs * steps_per_epoch`` and ``D = train_steps - W + 1``:

        step <= W:  base_lr * step / W          (inclusive: the rate at step W is base_lr)
        step >  W:  (base_lr - end_lr) * (1 - min(step - W, D) / D) ** power + end_lr

    (Keras' ``PolynomialDecay`` over ``step - W`` with cycle=False). ``step`` is the optimizer's
    ``iterations`` before the update: 0 for the first update, whose rate is 0. The reference
    picks base_lr and the warmup from the global batch when not given (10.0 and 5 epochs below
    16384, 25.0 and 5 below 32768, else 31.2 and 25) and ``end_lr`` 1e-4. With W = 0 the
    reference's step 0 computes 0 / 0 (NaN); here it is the decay's first value, base_lr.
    """
    step = _count("step", step)
    base_lr, end_lr, power = (_finite("base_lr", base_lr), _finite("end_lr", end_lr),
                              _finite("power", power))
    _count("steps_per_epoch", steps_per_epoch, minimum=1)
    _count("train_steps", train_steps, minimum=1)
    warmup_epochs = _finite("warmup_epochs", warmup_epochs)
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
    warmup = warmup_epochs * steps_per_epoch
    decay = train_steps - warmup + 1
    if decay <= 0:
        raise ValueError(f"train_steps ({train_steps}) must be >= the warmup's steps - 1 "
                         f"({warmup} - 1)")
    if warmup > 0 and step <= warmup:
        return base_lr * step / warmup
    p = min(step - warmup, decay) / decay
    return (base_lr - end_lr) * (1.0 - p) ** power + end_lr


def dlrm_warmup_hold_decay(step: int, base_lr: float, num_warmup_steps: int,
                           decay_start_step: int, num_decay_steps: int,
                           min_lr: float = 1e-7) -> float:
    """DLRM's rate: linear warmup, a hold, a power-2 decay, then frozen.

    Source: facebookresearch/dlrm branch mlperf, dlrm_s_pytorch.py ``LRPolicyScheduler.get_lr``
    (the same class is copied in mlcommons/training recommendation_v2/torchrec_dlrm
    lr_scheduler.py). ``step`` is the scheduler's ``_step_count``: 1 for the first update
    (torch's scheduler steps once when it is built), k for the k-th. With W, S, N the three
    counts:

        step < W:           base_lr * step / W     (written 1 - (W - step) / W)
        S <= step < S + N:  max(min_lr, base_lr * ((N - (step - S)) / N) ** 2)
        otherwise:          the last rate computed, frozen (N > 0), or base_lr (N == 0)

    So the hold between warmup and decay is at the warmup's last rate, base_lr * (W - 1) / W,
    not base_lr; after the decay the rate stays at its last value, max(min_lr, base_lr / N**2).
    Where the reference has computed no rate yet (W <= 1 and step < S: it reads an attribute it
    never set), the hold is base_lr. The reference exits when S < W; here that is a ValueError.
    """
    step = _count("step", step)
    base_lr, min_lr = _finite("base_lr", base_lr), _finite("min_lr", min_lr)
    _count("num_warmup_steps", num_warmup_steps)
    _count("decay_start_step", decay_start_step)
    _count("num_decay_steps", num_decay_steps)
    if decay_start_step < num_warmup_steps:
        raise ValueError(f"the warmup must end before the decay starts: decay_start_step "
                         f"{decay_start_step} < num_warmup_steps {num_warmup_steps}")
    warmup, start, n = num_warmup_steps, decay_start_step, num_decay_steps

    def warmup_rate(k: int) -> float:
        return base_lr * (1.0 - (warmup - k) / warmup)

    def decay_rate(k: int) -> float:
        return max(min_lr, base_lr * ((n - (k - start)) / n) ** 2)

    if step < warmup:
        return warmup_rate(step)
    if start <= step < start + n:
        return decay_rate(step)
    if n == 0:
        return base_lr
    # Frozen at the last rate computed; the reference's counts start at 1.
    if step >= start + n:
        return decay_rate(start + n - 1) if start + n - 1 >= 1 else base_lr
    return warmup_rate(warmup - 1) if warmup > 1 else base_lr


def maskrcnn_warmup_multistep(step: int, base_lr: float, milestones: Sequence[int],
                              gamma: float = 0.1, warmup_factor: float = 1.0 / 3,
                              warmup_iters: int = 500, warmup_method: str = "linear") -> float:
    """Mask R-CNN's rate: multi-step decay with a warmup.

    Source: mlcommons/training object_detection (now retired_benchmarks/maskrcnn/pytorch)
    maskrcnn_benchmark/solver/lr_scheduler.py ``WarmupMultiStepLR.get_lr``:

        base_lr' * w * gamma ** (number of milestones <= step)

    where during the warmup (step < warmup_iters) ``w`` is ``warmup_factor`` ("constant") or
    ``warmup_factor * (1 - a) + a`` with ``a = step / warmup_iters`` ("linear"), else 1, and
    ``base_lr' = base_lr - (warmup_iters - step) * warmup_factor`` for "mlperf_linear" (an
    absolute offset, with w = 1), else base_lr. ``step`` is the scheduler's ``last_epoch``: the
    reference's trainer calls ``scheduler.step()`` before each update, so the first update has
    step 1 (and step 0 is the rate set when the scheduler is built). The MLPerf configuration:
    base_lr 0.02 per 16 images scaled, milestones (60000, 80000), gamma 0.1, warmup 500
    iterations of factor 1/3, linear (maskrcnn_benchmark/config/defaults.py and
    configs/e2e_mask_rcnn_R_50_FPN_1x.yaml).
    """
    step = _count("step", step)
    base_lr, gamma = _finite("base_lr", base_lr), _finite("gamma", gamma)
    warmup_factor = _finite("warmup_factor", warmup_factor)
    _count("warmup_iters", warmup_iters)
    if list(milestones) != sorted(milestones):
        raise ValueError(f"milestones must be increasing, got {list(milestones)}")
    if warmup_method not in WARMUP_METHODS:
        raise ValueError(f"warmup_method must be one of {WARMUP_METHODS}, got {warmup_method!r}")
    factor, delta = 1.0, 0.0
    if step < warmup_iters:
        if warmup_method == "constant":
            factor = warmup_factor
        elif warmup_method == "linear":
            alpha = step / warmup_iters
            factor = warmup_factor * (1.0 - alpha) + alpha
        else:
            delta = (warmup_iters - step) * warmup_factor
    return (base_lr - delta) * factor * gamma ** bisect_right(list(milestones), step)


def ssd_warmup_multistep(step: int, base_lr: float, steps_per_epoch: int, warmup_iters: int,
                         warmup_factor: int = 0, milestones: Sequence[int] = (40, 50),
                         gamma: float = 0.1) -> float:
    """SSD's rate: the MLPerf warmup rule, then a decay by ``gamma`` at the start of each epoch
    of ``milestones``.

    Source: mlcommons/training single_stage_detector v1.0 (now retired_benchmarks/ssd-v1)
    ssd/train.py ``lr_warmup`` and the epoch loop of ``train300_mlperf_coco``. ``step`` is the
    reference's ``iter_num`` (0 for the first update) and the epoch is ``step //
    steps_per_epoch`` (epochs from 0), as in a run from the start. The decayed rate of an epoch
    is ``base_lr * gamma ** (milestones <= epoch)``; during the warmup (step < warmup_iters = wb)
    the reference sets

        lr - (wb - step) * lr / (wb * 2 ** warmup_factor)

    (0 at step 0 with warmup_factor 0). It sets nothing after the warmup: the rate stays at the
    warmup's last value, ``lr * (1 - 1 / (wb * 2 ** warmup_factor))`` (not ``lr``), until the
    next milestone epoch sets the decayed rate. ``base_lr`` is the reference's scaled rate
    (``--lr`` times global batch / 32); wb is ``int(warmup_epochs * images / global_batch)``.
    """
    step = _count("step", step)
    base_lr, gamma = _finite("base_lr", base_lr), _finite("gamma", gamma)
    _count("steps_per_epoch", steps_per_epoch, minimum=1)
    _count("warmup_iters", warmup_iters)
    _count("warmup_factor", warmup_factor)
    if list(milestones) != sorted(milestones):
        raise ValueError(f"milestones must be increasing, got {list(milestones)}")

    def decayed(epoch: int) -> float:
        return base_lr * gamma ** bisect_right(list(milestones), epoch)

    epoch = step // steps_per_epoch
    wb, div = warmup_iters, 2 ** warmup_factor
    if step < wb:
        lr = decayed(epoch)
        return lr - (wb - step) * lr / (wb * div)
    if wb > 0:
        last_warmup_epoch = (wb - 1) // steps_per_epoch
        if bisect_right(list(milestones), epoch) == bisect_right(list(milestones),
                                                                 last_warmup_epoch):
            lr = decayed(last_warmup_epoch)  # no milestone since: the warmup's last value stays
            return lr - lr / (wb * div)
    return decayed(epoch)


def retinanet_warmup_factor(step: int, warmup_iters: int, warmup_factor: float = 1e-3) -> float:
    """RetinaNet's factor of the base rate: ``warmup_factor * (1 - a) + a`` with ``a = step /
    warmup_iters`` for step < warmup_iters, then 1.

    Source: mlcommons/training single_stage_detector/ssd (now retired_benchmarks/retinanet/ssd)
    engine.py ``train_one_epoch`` and utils.py ``warmup_lr_scheduler`` (torchvision's
    references/detection has the same function): a ``LambdaLR`` built at the start of each
    warmup epoch with ``start_iter = epoch * len(data_loader)``, so that ``step`` is the global
    iteration from 0 (the first update's factor is warmup_factor); ``warmup_iters =
    warmup_epochs * len(data_loader)`` (1 epoch and factor 1e-3 in the reference). After the
    warmup epochs no scheduler runs, and the last one left the factor at 1.
    """
    step = _count("step", step)
    _count("warmup_iters", warmup_iters)
    warmup_factor = _finite("warmup_factor", warmup_factor)
    if step >= warmup_iters:
        return 1.0
    alpha = step / warmup_iters
    return warmup_factor * (1.0 - alpha) + alpha


class LRSchedule:
    """Follows a schedule: sets every group's lr to ``lr_at(n, base)`` where ``base`` is the
    group's lr when the schedule was built (its ``initial_lr``) and ``n`` the reference's count
    for the coming update: ``first_step`` at construction, then one more at each ``step()``,
    called after each ``optimizer.step()`` as torch's schedulers are.

    ``lr_at`` is one of this module's rate functions with its other arguments bound, e.g.
    ``lambda n, base: bert_poly_warmup(n, base, num_train_steps=T, num_warmup_steps=W)`` with
    first_step 0, or a factor: ``lambda n, base: base * retinanet_warmup_factor(n, W)``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, lr_at: Callable[[int, float], float],
                 first_step: int = 0) -> None:
        if not callable(lr_at):
            raise TypeError(f"lr_at must be callable, got {type(lr_at).__name__}")
        self.optimizer = optimizer
        self.lr_at = lr_at
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", float(g["lr"]))
        self.step_count = first_step
        self._apply()

    def _apply(self) -> None:
        for g in self.optimizer.param_groups:
            _set_group_lr(g, self.lr_at(self.step_count, g["initial_lr"]))

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = _count("step_count", state["step_count"], minimum=None)
        self._apply()
