"""dlrm_lr against torch running the reference's LRPolicyScheduler (dlrm_s_pytorch.py, branch
mlperf), re-typed here as the oracle, step by step over warmup, hold, decay and after."""
import pytest
import torch
from torch.optim.lr_scheduler import LRScheduler

from mlperf_fast.workloads.dlrm.config import CLOSED, dlrm_lr


class ReferenceLRPolicy(LRScheduler):
    """The reference's scheduler, as written there."""

    def __init__(self, optimizer, num_warmup_steps, decay_start_step, num_decay_steps):
        self.num_warmup_steps = num_warmup_steps
        self.decay_start_step = decay_start_step
        self.decay_end_step = decay_start_step + num_decay_steps
        self.num_decay_steps = num_decay_steps
        super().__init__(optimizer)

    def get_lr(self):
        step_count = self._step_count
        if step_count < self.num_warmup_steps:
            scale = 1.0 - (self.num_warmup_steps - step_count) / self.num_warmup_steps
            lr = [base_lr * scale for base_lr in self.base_lrs]
            self.last_lr = lr
        elif self.decay_start_step <= step_count < self.decay_end_step:
            decayed_steps = step_count - self.decay_start_step
            scale = ((self.num_decay_steps - decayed_steps) / self.num_decay_steps) ** 2
            lr = [max(0.0000001, base_lr * scale) for base_lr in self.base_lrs]
            self.last_lr = lr
        else:
            lr = self.last_lr if self.num_decay_steps > 0 else self.base_lrs
        return lr


@pytest.mark.parametrize("lr,warmup,start,steps", [(24.0, 20, 50, 30), (2.0, 5, 5, 7),
                                                   (1.0, 3, 10, 0), (0.5, 2, 4, 3)])
def test_matches_reference_scheduler(lr, warmup, start, steps):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = ReferenceLRPolicy(opt, warmup, start, steps)
    for step in range(1, start + steps + 20):  # the rate optimizer step `step` runs at
        want = opt.param_groups[0]["lr"]
        assert dlrm_lr(step, lr, warmup, start, steps) == pytest.approx(want, rel=1e-15), step
        opt.step()
        sched.step()


def test_closed_values():
    c = CLOSED
    args = (c.lr, c.warmup_steps, c.decay_start_step, c.decay_steps)
    assert dlrm_lr(1, *args) == pytest.approx(24 / 2750)
    assert dlrm_lr(2750, *args) == pytest.approx(24 * 2749 / 2750)  # the hold, never 24 itself
    assert dlrm_lr(49315, *args) == pytest.approx(24.0)
    assert dlrm_lr(49315 + 27772 - 1, *args) == pytest.approx(max(1e-7, 24 / 27772 ** 2))
    assert dlrm_lr(10 ** 6, *args) == pytest.approx(max(1e-7, 24 / 27772 ** 2))


def test_degenerate_warmup_holds_the_base_rate():
    # the reference's scheduler has no warmup rate to keep with 0 or 1 warmup steps
    assert dlrm_lr(2, 3.0, 1, 5, 2) == 3.0
    assert dlrm_lr(1, 3.0, 0, 5, 2) == 3.0


def test_errors():
    with pytest.raises(ValueError, match="from 1"):
        dlrm_lr(0, 1.0, 1, 2, 3)
    with pytest.raises(ValueError, match="warmup must finish"):
        dlrm_lr(1, 1.0, 10, 2, 3)
