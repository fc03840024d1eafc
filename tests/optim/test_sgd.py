"""FusedSGD against the float64 pure-PyTorch implementation and torch.optim.SGD."""
from __future__ import annotations

import pytest
import torch
from optim_cases import DTYPE_IDS, DTYPES, budget, groups, parity, tolerance

from mlperf_fast.optim import FusedSGD


@pytest.mark.parametrize("options", [dict(momentum=0.9, nesterov=True), dict(momentum=0.9,
                         dampening=0.1), dict(momentum=0.0)], ids=["nesterov", "dampening",
                                                                   "plain"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_parity_model_like(backend, dtype, options, rng_seed):
    steps, count = budget(backend)
    rtol, atol = tolerance(backend, dtype)
    # The float64 reference is held to float32 master weights' precision.
    parity(lambda ps, be: FusedSGD(groups(ps, weight_decay=1e-4), lr=1e-2, backend=be,
                                   master_weights=True, **options),
           backend, dtype, rng_seed, steps=steps, count=count, rtol=rtol, atol=atol)


def test_matches_torch_sgd_and_its_state(backend, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    d = backend.device
    base = [torch.randn(n, generator=gen) for n in (100, 9000, 1)]
    ours = [torch.nn.Parameter(b.to(d)) for b in base]
    theirs = [torch.nn.Parameter(b.to(d)) for b in base]
    opt = FusedSGD(ours, lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True,
                   backend=backend.name)
    ref = torch.optim.SGD(theirs, lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True)
    for step in range(6):
        for a, b in zip(ours, theirs):
            a.grad = torch.randn(a.shape, generator=gen).to(d)
            b.grad = a.grad.clone()
        opt.step()
        ref.step()
        if step == 2:
            opt.load_state_dict(ref.state_dict())
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)


def test_grad_scaler_skips_inf(backend):
    d = backend.device
    p = torch.nn.Parameter(torch.ones(10, device=d))
    opt = FusedSGD([p], lr=0.1, momentum=0.9, backend=backend.name)
    scaler = torch.amp.GradScaler(d.type, init_scale=8.0)
    scaler.scale((p * 2).sum()).backward()
    scaler.step(opt)
    scaler.update()
    torch.testing.assert_close(p.detach(), torch.full((10,), 0.8, device=d))
    opt.zero_grad()
    scaler.scale((p * float("nan")).sum()).backward()
    scaler.step(opt)
    torch.testing.assert_close(p.detach(), torch.full((10,), 0.8, device=d))


def test_first_step_skipped_by_grad_scaler(backend):
    # An inf on the very first step skips it inside the kernel; the momentum buffer created for
    # it must not carry garbage into the next step, which then acts as a first step.
    d = backend.device
    p = torch.nn.Parameter(torch.ones(10, device=d))
    opt = FusedSGD([p], lr=0.1, momentum=0.9, backend=backend.name)
    scaler = torch.amp.GradScaler(d.type, init_scale=8.0)
    scaler.scale((p * float("inf")).sum()).backward()
    scaler.step(opt)
    scaler.update()
    torch.testing.assert_close(p.detach(), torch.ones(10, device=d))
    opt.zero_grad()
    scaler.scale((p * 2).sum()).backward()
    scaler.step(opt)
    scaler.update()
    torch.testing.assert_close(p.detach(), torch.full((10,), 0.8, device=d))
    opt.zero_grad()
    scaler.scale((p * 2).sum()).backward()
    scaler.step(opt)  # buf = 0.9 * 2 + 2
    torch.testing.assert_close(p.detach(), torch.full((10,), 0.8 - 0.38, device=d))


def test_bad_inputs():
    with pytest.raises(ValueError, match="nesterov"):
        FusedSGD([torch.nn.Parameter(torch.ones(2))], lr=0.1, nesterov=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("options", [{"momentum": 0.125},
                                     {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-2},
                                     {"momentum": 0.5, "dampening": 0.25}],
                         ids=["momentum", "nesterov-wd", "dampening"])
def test_low_precision_matches_torch_sgd_exactly(backend, dtype, options, rng_seed):
    """float16 / bfloat16 without master weights: torch.optim.SGD's result and state to the bit
    (apex's TestFusedSGD.test_half holds FusedSGD to torch.optim.SGD within 1e-3, less than an
    ulp of float16 weights above 1), with no master copy in the state."""
    gen = torch.Generator().manual_seed(rng_seed)
    d = backend.device
    base = [torch.rand(n, generator=gen).to(dtype) for n in (2781, 7, 1)]
    ours = [torch.nn.Parameter(b.clone().to(d)) for b in base]
    theirs = [torch.nn.Parameter(b.clone().to(d)) for b in base]
    opt = FusedSGD(ours, lr=0.25, backend=backend.name, **options)
    ref = torch.optim.SGD(theirs, lr=0.25, **options)
    for _ in range(7):
        for a, b in zip(ours, theirs):
            a.grad = torch.rand(a.shape, generator=gen).to(dtype).to(d)
            b.grad = a.grad.clone()
        opt.step()
        ref.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=0)
        # torch.optim.SGD's entry, and no master copy ("step" is every fused optimizer's count)
        assert set(opt.state[a]) - {"step"} == set(ref.state[b]) == {"momentum_buffer"}
        assert opt.state[a]["momentum_buffer"].dtype == dtype
        torch.testing.assert_close(opt.state[a]["momentum_buffer"], ref.state[b]["momentum_buffer"],
                                   rtol=0, atol=0)
    # The state moves between the two both ways.
    ref.load_state_dict(opt.state_dict())
    opt.load_state_dict(ref.state_dict())
    assert all("master_param" not in opt.state[p] for p in ours)
