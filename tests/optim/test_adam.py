"""FusedAdam / FusedAdamW against the float64 pure-PyTorch implementation and torch.optim."""
from __future__ import annotations

import pytest
import torch
from optim_cases import DTYPE_IDS, DTYPES, budget, groups, parity, tolerance

from mlperf_fast.optim import FusedAdam, FusedAdamW


@pytest.mark.parametrize("adam_w_mode", [True, False], ids=["adamw", "adam-l2"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_parity_model_like(backend, dtype, adam_w_mode, rng_seed):
    steps, count = budget(backend)
    rtol, atol = tolerance(backend, dtype)
    parity(lambda ps, be: FusedAdam(groups(ps, weight_decay=0.01), lr=1e-2,
                                    adam_w_mode=adam_w_mode, backend=be),
           backend, dtype, rng_seed, steps=steps, count=count, rtol=rtol, atol=atol)


@pytest.mark.parametrize("cls,torch_cls", [(FusedAdamW, torch.optim.AdamW),
                                           (lambda *a, **k: FusedAdam(*a, adam_w_mode=False, **k),
                                            torch.optim.Adam)], ids=["adamw", "adam"])
def test_matches_torch_optim_and_its_state(backend, cls, torch_cls, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    d = backend.device
    base = [torch.randn(n, generator=gen) for n in (100, 9000, 1, 0)]
    ours = [torch.nn.Parameter(b.to(d)) for b in base]
    theirs = [torch.nn.Parameter(b.to(d)) for b in base]
    opt = cls(ours, lr=1e-2, weight_decay=0.05, backend=backend.name)
    ref = torch_cls(theirs, lr=1e-2, weight_decay=0.05)
    for step in range(6):
        for a, b in zip(ours, theirs):
            a.grad = torch.randn(a.shape, generator=gen).to(d)
            b.grad = a.grad.clone()
        opt.step()
        ref.step()
        if step == 2:  # torch's state loads into ours and the run goes on identically
            opt.load_state_dict(ref.state_dict())
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)


def test_bad_inputs():
    p = torch.nn.Parameter(torch.randn(5))
    with pytest.raises(ValueError, match="AMSGrad"):
        FusedAdam([p], amsgrad=True)
    with pytest.raises(ValueError, match="master_weights=False"):
        FusedAdam([p], master_weights=False)
    p.grad = torch.randn(5).to_sparse()
    with pytest.raises(ValueError, match="sparse"):
        FusedAdam([p]).step()


def test_apex_master_weights_argument():
    """apex.optimizers.FusedAdam(master_weights=True) (apex's test_adam.py passes it): accepted,
    and float16 parameters step through a float32 master copy."""
    p = torch.nn.Parameter(torch.rand(64).half())
    opt = FusedAdam([p], lr=1e-3, capturable=True, master_weights=True)
    p.grad = torch.rand(64).half()
    opt.step()
    assert opt.state[p]["master_param"].dtype == torch.float32
    torch.testing.assert_close(p.detach(), opt.state[p]["master_param"].half())
