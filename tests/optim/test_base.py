"""The start of a step shared by the fused optimizers (mlperf_fast/optim/_base.py): what it
collects and checks is kept from step to step, and collected and checked again, with the same
errors as on a first step, whenever something it depends on changes.

The oracle of the scenarios is the same optimizer made to collect everything afresh at every
step (its plan dropped before each step): both must end with identical parameters and state.
"""
from __future__ import annotations

import copy
import gc
import weakref

import pytest
import torch

from mlperf_fast.optim import FusedAdam, FusedLAMB, FusedLARS, FusedSGD

OPTIMIZERS = {
    "lamb": lambda groups: FusedLAMB(groups, lr=1e-2),
    "adam": lambda groups: FusedAdam(groups, lr=1e-2),
    "sgd": lambda groups: FusedSGD(groups, lr=1e-2, momentum=0.9),
    "lars": lambda groups: FusedLARS(groups, lr=1e-2, weight_decay=1e-4),
}
SHAPES = [(4, 6), (6,), (3, 3), (9000,), (1,)]


def _setup(name, seed, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen).to(dtype)) for s in SHAPES]
    groups = [dict(params=[p for p in params if p.dim() > 1]),
              dict(params=[p for p in params if p.dim() <= 1])]
    return params, OPTIMIZERS[name](groups), gen


def _new_grads(params, gen, skip=()):
    for i, p in enumerate(params):
        p.grad = None if i in skip else torch.randn(p.shape, generator=gen).to(p.dtype)


def _run_twins(name, seed, scenario, steps=5):
    """Runs scenario(k, params, opt, gen) before step k on an optimizer that keeps its plan and
    on one that collects afresh at every step, and checks they agree after every step."""
    runs = [_setup(name, seed), _setup(name, seed)]
    for k in range(steps):
        for keep, (params, opt, gen) in zip((True, False), runs):
            scenario(k, params, opt, gen)
            if not keep:
                opt._plan = None
            opt.step()
        (pa, oa, _), (pb, ob, _) = runs
        for a, b in zip(pa, pb):
            assert torch.equal(a.detach(), b.detach()), f"step {k}"
            sa, sb = oa.state.get(a, {}), ob.state.get(b, {})
            assert sa.keys() == sb.keys(), f"step {k}"
            for key in sa:
                assert torch.equal(torch.as_tensor(sa[key]), torch.as_tensor(sb[key])), \
                    f"step {k}, {key}"
    return runs[0]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_checks_run_once_while_nothing_changes(name, rng_seed, monkeypatch):
    params, opt, gen = _setup(name, rng_seed)
    calls = []
    check = opt._check_param
    monkeypatch.setattr(opt, "_check_param", lambda p: calls.append(p) or check(p))
    _new_grads(params, gen)
    opt.step()
    assert len(calls) == len(params)
    opt.step()  # the same gradients
    _new_grads(params, gen)  # new gradient tensors of the same kind
    opt.zero_grad(set_to_none=False)
    opt.step()
    assert len(calls) == len(params)
    params[0].grad = None
    opt.step()
    assert len(calls) == 2 * len(params) - 1


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_gradients_are_not_kept(name, rng_seed):
    params, opt, gen = _setup(name, rng_seed)
    _new_grads(params, gen)
    opt.step()
    grads = [weakref.ref(p.grad) for p in params]
    opt.zero_grad(set_to_none=True)
    gc.collect()
    assert all(g() is None for g in grads)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_parameters_gaining_and_losing_gradients(name, rng_seed):
    def scenario(k, params, opt, gen):
        _new_grads(params, gen, skip=[(1,), (1, 3), (), (0,), (0, 1, 2, 3, 4)][k])

    params, opt, _ = _run_twins(name, rng_seed, scenario)
    assert float(opt.state[params[1]]["step"]) == 2  # no gradient at steps 0, 1 and 4
    assert float(opt.state[params[0]]["step"]) == 3


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_new_param_groups_and_params(name, rng_seed):
    def scenario(k, params, opt, gen):
        if k == 1:
            params.append(torch.nn.Parameter(torch.randn(7, generator=gen)))
            opt.add_param_group(dict(params=[params[-1]]))
        if k == 2:  # in place, bypassing add_param_group
            params.append(torch.nn.Parameter(torch.randn(2, 5, generator=gen)))
            opt.param_groups[0]["params"].append(params[-1])
        if k == 3:
            group = opt.param_groups[0]
            opt.param_groups[0] = dict(group, params=group["params"][1:])
        _new_grads(params, gen)

    params, opt, _ = _run_twins(name, rng_seed, scenario)
    assert float(opt.state[params[-2]]["step"]) == 4
    assert float(opt.state[params[-1]]["step"]) == 3
    assert float(opt.state[params[0]]["step"]) == 3  # left its group at step 3


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_replaced_between_steps(name, rng_seed):
    key = {"lamb": "exp_avg", "adam": "exp_avg_sq", "sgd": "momentum_buffer",
           "lars": "momentum_buffer"}[name]

    def scenario(k, params, opt, gen):
        _new_grads(params, gen)
        if k == 2:
            opt.state[params[0]][key] = torch.zeros_like(params[0])
        if k == 3:
            opt.state[params[3]] = {}  # starts again
        if k == 4:
            del opt.state[params[2]]

    params, opt, _ = _run_twins(name, rng_seed, scenario)
    assert float(opt.state[params[3]]["step"]) == 2
    assert float(opt.state[params[2]]["step"]) == 1


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_load_state_dict_between_steps(name, rng_seed):
    saved = {}

    def scenario(k, params, opt, gen):
        _new_grads(params, gen)
        if k == 1:
            saved[id(opt)] = copy.deepcopy(opt.state_dict())
        if k == 3:
            opt.load_state_dict(saved[id(opt)])

    params, opt, _ = _run_twins(name, rng_seed, scenario)
    assert float(opt.state[params[0]]["step"]) == 3


def test_sgd_momentum_switched_on(rng_seed):
    def scenario(k, params, opt, gen):
        _new_grads(params, gen)
        for group in opt.param_groups:
            group["momentum"] = 0.0 if k < 2 else 0.9

    params, opt, _ = _run_twins("sgd", rng_seed, scenario)
    assert all("momentum_buffer" in opt.state[p] for p in params)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_parameter_converted_in_place(name, rng_seed):
    # Module.to(dtype) after the first steps: .data of the parameters and of their gradients.
    def scenario(k, params, opt, gen):
        _new_grads(params, gen)
        if k == 2:
            for p in params:
                p.data = p.data.to(torch.bfloat16)
                p.grad.data = p.grad.data.to(torch.bfloat16)

    params, opt, _ = _run_twins(name, rng_seed, scenario)
    if name == "sgd":  # torch.optim.SGD's state: the buffer in the parameter's dtype
        assert all("master_param" not in opt.state[p] for p in params)
        assert all(opt.state[p]["momentum_buffer"].dtype == torch.bfloat16 for p in params)
    else:
        assert all(opt.state[p]["master_param"].dtype == torch.float32 for p in params)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_bad_gradients_after_steps_get_the_first_step_errors(name, rng_seed):
    params, opt, gen = _setup(name, rng_seed)
    _new_grads(params, gen)

    def sparse():
        params[3].grad = params[3].grad.to_sparse()

    def float64():  # the same tensor, another dtype
        params[1].grad.data = params[1].grad.data.double()

    def strided():
        params[0].grad = torch.randn(6, 4, generator=gen).t()

    for spoil, error, match in ((sparse, ValueError, "sparse gradients"),
                                (float64, TypeError, "gradient of dtype torch.float64"),
                                (strided, ValueError, "contiguous")):
        opt.step()
        opt.step()  # from the plan
        spoil()
        with pytest.raises(error, match=match):
            opt.step()
        _new_grads(params, gen)


@pytest.mark.cuda
def test_parameter_moved_to_another_device_after_a_step(rng_seed):
    params, opt, gen = _setup("lamb", rng_seed)
    _new_grads(params, gen)
    opt.step()
    params[0].data = params[0].data.cuda()
    params[0].grad = torch.randn(params[0].shape, device="cuda")
    # refused either for the mixed devices or for the state left on the CPU, whichever is met first
    with pytest.raises(ValueError, match="one device|on cpu for a parameter on cuda"):
        opt.step()
