"""torch's own nn.LSTM test inputs (``module_db`` of torch.testing._internal.common_modules: the
constructor arguments and forward inputs torch's test_modules.py runs, and its error inputs)
against the module under test (``swap_lstm.MODULE``: mlperf_fast.nn.LSTM, or torch.nn.LSTM itself
for the control run).

Each sample builds torch.nn.LSTM and the module under test from the same arguments, loads one
state_dict into both and compares, in float32 and float64, in training and evaluation mode (and,
for mlperf_fast's, with impl "auto" and "fused"): the
output and (h_n, c_n), and the gradients of the input, of hx and of every parameter. Each error
input must raise an error of the type torch raises (or a subclass).
"""
from __future__ import annotations

import pytest
import swap_lstm
import torch
from torch.testing._internal.common_modules import module_db

INFO = next(m for m in module_db if m.module_cls is torch.nn.LSTM)
DTYPES = (torch.float32, torch.float64)
# On a GPU every sample runs on it too (where impl="auto" picks the fused layer for short inputs).
DEVICES = ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
TOL = {torch.float32: {"rtol": 1e-5, "atol": 1e-6}, torch.float64: {"rtol": 1e-10, "atol": 1e-12}}


def _samples(dtype: torch.dtype, training: bool, device: str = "cpu"):
    return INFO.module_inputs_func(INFO, device=device, dtype=dtype, requires_grad=True,
                                   training=training)


def _name(sample) -> str:
    kw = sample.constructor_input.kwargs
    flags = [k for k in ("batch_first", "bias", "bidirectional") if kw.get(k)]
    if kw.get("proj_size"):
        flags.append(f"proj{kw['proj_size']}")
    hx = "hx" if len(sample.forward_input.args) > 1 else "nohx"
    shape = "x".join(map(str, sample.forward_input.args[0].shape))
    return "-".join(flags + [hx, shape]) or "plain"


# mlperf_fast.nn.LSTM runs every sample twice: impl="auto" (torch's kernel on the CPU, the fused
# layer for short sequences on a GPU) and impl="fused" (the fused layer everywhere).
IMPLS = (None,) if swap_lstm.MODULE is torch.nn.LSTM else ("auto", "fused")
CASES = [pytest.param(i, dtype, training, impl, device, id=f"{_name(s)}-{str(dtype)[6:]}-"
                      f"{'train' if training else 'eval'}" + (f"-{impl}" if impl else "")
                      + ("" if device == "cpu" else f"-{device}"))
         for device in DEVICES for impl in IMPLS for dtype in DTYPES for training in (True, False)
         for i, s in enumerate(_samples(dtype, training))]


def _clone(value):
    if torch.is_tensor(value):
        return value.detach().clone().requires_grad_(value.requires_grad)
    if isinstance(value, (tuple, list)):
        return type(value)(_clone(v) for v in value)
    return value


def _leaves(value):
    if torch.is_tensor(value):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _leaves(v)]
    return []


def _run(module, args, kwargs, seed):
    torch.manual_seed(seed)  # the same dropout draws for both modules
    out = module(*args, **kwargs)
    flat = _leaves(out)
    loss = sum((t * torch.linspace(0.5, 1.5, t.numel(), dtype=t.dtype, device=t.device)
                .view(t.shape)).sum() for t in flat)
    loss.backward()
    return flat


@pytest.mark.parametrize("index, dtype, training, impl, device", CASES)
def test_sample(index, dtype, training, impl, device):
    sample = _samples(dtype, training, device)[index]
    cargs, ckw = sample.constructor_input.args, sample.constructor_input.kwargs
    if impl == "fused" and ckw.get("proj_size"):
        pytest.skip("impl='fused' has no projection: refused at construction, by design")
    torch.manual_seed(0)
    ref = torch.nn.LSTM(*cargs, **ckw).to(device, dtype)
    tst = swap_lstm.MODULE(*cargs, **ckw, **({"impl": impl} if impl else {})).to(device, dtype)
    tst.load_state_dict(ref.state_dict())
    ref.train(training)
    tst.train(training)
    fargs, fkw = sample.forward_input.args, sample.forward_input.kwargs
    ref_args, tst_args = _clone(fargs), _clone(fargs)
    cudnn = torch.backends.cudnn
    # cuDNN's float32 LSTM in full precision (not TF32), as ours computes it.
    with cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark,
                     deterministic=cudnn.deterministic, allow_tf32=False):
        expected = _run(ref, ref_args, fkw, seed=1)
        actual = _run(tst, tst_args, fkw, seed=1)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, **TOL[dtype])
    for a, e in zip(_leaves(tst_args), _leaves(ref_args)):
        if e.requires_grad:
            torch.testing.assert_close(a.grad, e.grad, **TOL[dtype])
    ref_params = dict(ref.named_parameters())
    for name, p in tst.named_parameters():
        torch.testing.assert_close(p.grad, ref_params[name].grad, **TOL[dtype], msg=name)


ERRORS = list(INFO.module_error_inputs_func(INFO, device="cpu", dtype=torch.float32,
                                            requires_grad=False, training=True)
              if INFO.module_error_inputs_func else [])


@pytest.mark.parametrize("index", range(len(ERRORS)),
                         ids=[str(e.error_regex)[:40] for e in ERRORS])
def test_error_input(index):
    err = ERRORS[index]
    sample = err.module_error_input
    cargs, ckw = sample.constructor_input.args, sample.constructor_input.kwargs
    try:
        module = swap_lstm.MODULE(*cargs, **ckw)
        if sample.forward_input is not None:
            module(*sample.forward_input.args, **sample.forward_input.kwargs)
    except err.error_type:
        return
    except Exception as e:  # noqa: BLE001  (any other type is the failure being reported)
        pytest.fail(f"raised {type(e).__name__} where torch raises {err.error_type.__name__}: {e}")
    pytest.fail(f"DID NOT RAISE {err.error_type.__name__} ({err.error_regex})")
