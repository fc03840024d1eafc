"""The argument checks of the native optimizer-step ops (lamb_step, adam_step, sgd_step,
lars_step; csrc/common/optim_args.h): every bad list or scalar operand is refused, before any
kernel runs, with an error naming the argument (sparse tensors never reach them: the dispatcher
has no sparse kernel to call). Their numerics are tested through the optimizers
(tests/optim/)."""
from __future__ import annotations

import pytest
import torch

from mlperf_fast.ops.lamb import adam_step, lamb_step
from mlperf_fast.ops.sgd import lars_step, sgd_step

DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=pytest.mark.cuda)]


def _lists(device, dtype=torch.float32, n=2):
    """Valid lists for n parameters: params, grads, two state lists, master_params, steps."""
    math = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    shapes = [(3,), (5, 2)][:n]
    params = [torch.ones(s, dtype=dtype, device=device) for s in shapes]
    grads = [torch.ones(s, dtype=dtype, device=device) for s in shapes]
    states = [[torch.zeros(s, dtype=math, device=device) for s in shapes] for _ in range(2)]
    masters = [p.float() for p in params] if math != dtype else []
    steps = [torch.ones((), device=device) for _ in shapes]
    return params, grads, states[0], states[1], masters, steps


def _spoil(device, case):
    params, grads, m, v, masters, steps = _lists(device)
    scalars = {}
    if case == "mixed dtypes":  # each list consistent with itself, but two dtypes in one call
        params[1], grads[1], m[1], v[1] = (t.double() for t in (params[1], grads[1], m[1], v[1]))
    elif case == "grad dtype":
        grads[1] = grads[1].double()
    elif case == "grads length":
        grads = grads[:1]
    elif case == "state shape":
        m[1] = m[1].reshape(-1)
    elif case == "state contiguity":
        v[1] = torch.zeros(2, 5, device=device).t()
    elif case == "low precision without masters":
        params, grads = [p.bfloat16() for p in params], [g.bfloat16() for g in grads]
    elif case == "lr tensor":
        scalars["lr_t"] = torch.ones(2, device=device)
    elif case == "grad_scale dtype":
        scalars["grad_scale"] = torch.ones(1, dtype=torch.int32, device=device)
    return (params, grads, m, v, masters, steps), scalars


CASES = [  # (case, error, what the message says)
    ("mixed dtypes", TypeError, "one call takes one dtype"),
    ("grad dtype", TypeError, "'grads': element 1 has dtype Double but its parameter has Float"),
    ("grads length", ValueError, "'grads': has 1 tensors but 'params' has 2"),
    ("state shape", ValueError, "element 1 has shape"),
    ("state contiguity", ValueError, "element 1 is not contiguous"),
    ("low precision without masters", TypeError, "need float32 master_params"),
    ("lr tensor", ValueError, "'lr': must have one element"),
    ("grad_scale dtype", TypeError, "'grad_scale': must be float32 or float64"),
]


def _run(op, device, lists, scalars):
    params, grads, m, v, masters, steps = lists
    lr_t, grad_scale = scalars.get("lr_t"), scalars.get("grad_scale")
    if op == "lamb":
        lamb_step(params, grads, m, v, masters, steps, lr_t, 1e-3, 0.9, 0.999, 1e-6, 0.01, True,
                  True, True, False, None, 1.0, grad_scale, None, backend="native")
    elif op == "adam":
        adam_step(params, grads, m, v, masters, steps, lr_t, 1e-3, 0.9, 0.999, 1e-8, 0.0, True,
                  True, grad_scale, None, backend="native")
    elif op == "sgd":
        sgd_step(params, grads, m, masters, lr_t, 0.1, 0.9, 0.0, 0.0, False, False, grad_scale,
                 None, backend="native")
    else:
        norms = torch.ones(len(params), device=device)
        lars_step(params, grads, m, masters, norms, norms, lr_t, 0.1, 0.9, 0.0, 0.001, 0.0, True,
                  grad_scale, None, backend="native")


def _native(device):
    if not torch.ops.mlperf_fast.lamb_step.default.has_kernel_for_dispatch_key(
            "CUDA" if device == "cuda" else "CPU"):
        pytest.skip("extension not built for this device")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", ["lamb", "adam", "sgd", "lars"])
@pytest.mark.parametrize("case,error,match", CASES, ids=[c[0] for c in CASES])
def test_bad_arguments_are_refused(device, op, case, error, match):
    _native(device)
    if op in ("sgd", "lars") and case == "state contiguity":
        pytest.skip("one state list (momentum_buffers), spoiled in 'state shape'")
    lists, scalars = _spoil(device, case)
    before = [t.clone() for t in lists[0]]
    with pytest.raises(error, match=match):
        _run(op, device, lists, scalars)
    assert all(torch.equal(a, b) for a, b in zip(lists[0], before))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", ["lamb", "adam", "sgd", "lars"])
def test_valid_arguments_pass(device, op):
    _native(device)
    _run(op, device, _lists(device), {})
    _run(op, device, _lists(device, torch.bfloat16), {})
    _run(op, device, _lists(device, n=0), {})


@pytest.mark.parametrize("device", DEVICES)
def test_step_specific_checks(device):
    _native(device)
    params, grads, m, v, masters, steps = _lists(device)
    with pytest.raises(TypeError, match="'steps': element 0 must be float32"):
        lamb_step(params, grads, m, v, masters, [s.double() for s in steps], None, 1e-3, 0.9,
                  0.999, 1e-6, 0.01, True, True, True, False, None, 1.0, None, None,
                  backend="native")
    with pytest.raises(TypeError, match="'grad_norm': must be float32 or float64"):
        lamb_step(params, grads, m, v, masters, steps, None, 1e-3, 0.9, 0.999, 1e-6, 0.01, True,
                  True, True, False, torch.ones(1, dtype=torch.int64, device=device), 1.0, None,
                  None, backend="native")
    with pytest.raises(ValueError, match="'param_norms': must have shape"):
        lars_step(params, grads, m, masters, torch.ones(3, device=device),
                  torch.ones(2, device=device), None, 0.1, 0.9, 0.0, 0.001, 0.0, True, None, None,
                  backend="native")
    with pytest.raises(ValueError, match="'momentum_buffers': has 0 tensors"):
        lars_step(params, grads, [], masters, torch.ones(2, device=device),
                  torch.ones(2, device=device), None, 0.1, 0.9, 0.0, 0.001, 0.0, True, None, None,
                  backend="native")
    sgd_step(params, grads, [], masters, None, 0.1, 0.0, 0.0, 0.0, False, False, None, None,
             backend="native")  # no momentum: no buffers
