"""FusedLARS against the float64 pure-PyTorch implementation, and its exclusions."""
from __future__ import annotations

import pytest
import torch
from optim_cases import DTYPE_IDS, DTYPES, budget, cuda_matches_cpu, parity, tolerance

from mlperf_fast.cuda_graphs import capture
from mlperf_fast.optim import FusedLARS, lars_param_groups


def lars_groups(params):
    return [dict(params=[p for p in params if p.dim() > 1]),
            dict(params=[p for p in params if p.dim() <= 1], lars_exclude=True)]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_parity_model_like(backend, dtype, rng_seed):
    steps, count = budget(backend)
    rtol, atol = tolerance(backend, dtype)
    # lr 0.05: the excluded vectors take lr * g unscaled, so a larger lr on these random
    # gradients grows them to O(100), where float32 rounding alone exceeds the tolerance.
    parity(lambda ps, be: FusedLARS(lars_groups(ps), lr=0.05, momentum=0.9, weight_decay=5e-5,
                                    trust_coefficient=0.001, eps=1e-9, backend=be),
           backend, dtype, rng_seed, steps=steps, count=count, rtol=rtol, atol=atol)


def test_formula_and_exclusion(backend):
    d = backend.device
    w = torch.nn.Parameter(torch.full((4,), 3.0, device=d))   # ||w|| = 6
    b = torch.nn.Parameter(torch.full((4,), 1.0, device=d))
    opt = FusedLARS([dict(params=[w]), dict(params=[b], lars_exclude=True)], lr=0.5,
                    momentum=0.9, weight_decay=0.1, trust_coefficient=0.01,
                    backend=backend.name)
    w.grad = torch.full((4,), 0.5, device=d)                 # ||g|| = 1
    b.grad = torch.full((4,), 0.5, device=d)
    opt.step()
    trust = 0.01 * 6 / (1 + 0.1 * 6)
    torch.testing.assert_close(w.detach(), torch.full((4,), 3 - 0.5 * trust * (0.5 + 0.3),
                                                      device=d))
    torch.testing.assert_close(b.detach(), torch.full((4,), 1 - 0.5 * 0.5, device=d))


def test_param_groups_helper():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.Linear(4, 2))
    adapted, excluded = lars_param_groups(model)
    assert [p.dim() for p in adapted["params"]] == [4, 2]
    assert excluded["lars_exclude"] and all(p.dim() == 1 for p in excluded["params"])
    FusedLARS(lars_param_groups(model), lr=1.0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="trust_coefficient"):
        FusedLARS([torch.nn.Parameter(torch.ones(2))], lr=1.0, trust_coefficient=0.0)


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["native", "triton"])
def test_cuda_graph_capture_whole_step(name, rng_seed):
    # A captured step (both groups, the norms, lr on the device) replays as eager steps do.
    gen = torch.Generator().manual_seed(rng_seed)
    shapes = [(64, 3, 7, 7), (64,), (1000, 2048), (1000,)]
    base = [torch.randn(s, generator=gen) for s in shapes]
    params = [torch.nn.Parameter(b.cuda()) for b in base]
    eager = [torch.nn.Parameter(b.cuda()) for b in base]
    opts = dict(momentum=0.9, weight_decay=5e-5, trust_coefficient=0.001, backend=name)
    opt = FusedLARS(lars_groups(params), lr=0.1, capturable=True, **opts)
    ref = FusedLARS(lars_groups(eager), lr=0.1, **opts)
    for p, e in zip(params, eager):
        g = torch.randn(p.shape, generator=gen).cuda()
        p.grad, e.grad = g.clone(), g.clone()
    replay = capture(opt.step)  # one warm-up step first
    ref.step()
    for _ in range(3):
        replay()
        ref.step()
    for group, ref_group in zip(opt.param_groups, ref.param_groups):
        group["lr"].fill_(0.01)
        ref_group["lr"] = 0.01
    replay()
    ref.step()
    torch.cuda.synchronize()
    for p, e in zip(params, eager):
        torch.testing.assert_close(p.detach(), e.detach(), rtol=1e-6, atol=1e-7)


@pytest.mark.cuda
def test_tensor_split_over_launches(rng_seed):
    # 8Ki-element chunks, 4096 a launch: the third tensor spans two launches of the update,
    # which hands its chunks out backwards.
    cuda_matches_cpu(lambda ps, be: FusedLARS(ps, lr=0.05, momentum=0.9, weight_decay=5e-5,
                                              trust_coefficient=0.001, backend=be),
                     [7, 300, 8192 * 4096 + 1001, 65536], rng_seed)
