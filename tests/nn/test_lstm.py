"""mlperf_fast.nn.LSTM against torch.nn.LSTM: outputs and states for every layout it accepts
(batch_first, unbatched, bidirectional, proj_size, hx given or not), torch's own sample inputs
(torch.testing._internal.common_modules), and the arguments torch refuses, refused before any
kernel runs.

Tolerances: float32 on both sides; the fused layer computes the gates in another order than ATen
(one GEMM of the input for all steps, then per step one GEMM and the cell), so results agree to
float32 rounding over a few steps (1e-5), not bit for bit; impl="cudnn" is ATen itself on the
CPU and must agree exactly."""
from __future__ import annotations

import pytest
import torch

from mlperf_fast.nn import LSTM
from mlperf_fast.nn.lstm import LSTMInputError

TOL = {"fused": dict(rtol=1e-5, atol=1e-5), "cudnn": dict(rtol=0, atol=0)}


def _pair(impl, seed, *args, **kwargs):
    torch.manual_seed(seed)
    ref = torch.nn.LSTM(*args, **kwargs)
    ours = LSTM(*args, **kwargs, impl=impl)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _same(ref_out, out, impl):
    (y_r, (h_r, c_r)), (y, (h, c)) = ref_out, out
    assert y.shape == y_r.shape and h.shape == h_r.shape and c.shape == c_r.shape
    for a, b in ((y, y_r), (h, h_r), (c, c_r)):
        torch.testing.assert_close(a, b, **TOL[impl])


LAYOUTS = [dict(), dict(batch_first=True), dict(bidirectional=True),
           dict(bidirectional=True, batch_first=True, bias=False), dict(proj_size=3),
           dict(proj_size=2, bidirectional=True)]
IDS = ["plain", "batch_first", "bidir", "bidir-bf-nobias", "proj", "proj-bidir"]


@pytest.mark.parametrize("impl", ["fused", "cudnn"])
@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("with_hx", [False, True], ids=["no-hx", "hx"])
def test_matches_torch_lstm(impl, layout, batched, with_hx, rng_seed):
    if impl == "fused" and layout.get("proj_size"):
        pytest.skip("the fused layer has no projection (refused: test_bad_construction)")
    ref, ours = _pair(impl, rng_seed, 5, 6, 2, **layout)
    gen = torch.Generator().manual_seed(rng_seed)
    steps, bsz, dirs = 4, 3, 2 if layout.get("bidirectional") else 1
    shape = (steps, 5) if not batched else (bsz, steps, 5) if layout.get("batch_first") else (
        steps, bsz, 5)
    x = torch.randn(shape, generator=gen)
    args = (x,)
    if with_hx:
        mid = (2 * dirs,) if not batched else (2 * dirs, bsz)
        h0 = torch.randn(*mid, layout.get("proj_size") or 6, generator=gen)
        c0 = torch.randn(*mid, 6, generator=gen)
        args = (x, (h0, c0))
    with torch.no_grad():
        _same(ref(*args), ours(*args), impl)


def test_unbatched_with_batch_first_is_one_sequence(rng_seed):
    # torch reads a 2-D input as (L, H_in) whatever batch_first says.
    ref, ours = _pair("auto", rng_seed, 4, 5, 2, batch_first=True)
    x = torch.randn(7, 4)
    with torch.no_grad():
        y, (h, c) = ours(x)
        _same(ref(x), (y, (h, c)), "cudnn")
    assert y.shape == (7, 5) and h.shape == (2, 5)


@pytest.mark.parametrize("impl", ["fused", "cudnn", "auto"])
def test_gradients_match(impl, rng_seed):
    ref, ours = _pair(impl, rng_seed, 3, 4, 2, bidirectional=impl != "auto")
    x = torch.randn(5, 2, 3)
    ref(x)[0].sum().backward()
    ours(x)[0].sum().backward()
    for (name, a), (_, b) in zip(ours.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5, msg=name)


def test_empty_batch_and_empty_sequence():
    for impl in ("fused", "cudnn"):
        m = LSTM(3, 4, 2, impl=impl)
        y, (h, c) = m(torch.randn(5, 0, 3))
        assert y.shape == (5, 0, 4) and h.shape == (2, 0, 4)
        with pytest.raises(RuntimeError, match="sequence length 0"):  # torch's type
            m(torch.randn(0, 2, 3))


def _hx(layers, bsz, h, c=None, **kw):
    return torch.zeros(layers, bsz, h, **kw), torch.zeros(layers, bsz, c or h, **kw)


BAD_HX = [
    ("smaller batch", lambda: _hx(2, 1, 5), "h_0 of shape"),  # once a heap corruption on CPU
    ("larger batch", lambda: _hx(2, 4, 5), "h_0 of shape"),
    ("layers", lambda: _hx(1, 3, 5), "h_0 of shape"),
    ("hidden", lambda: _hx(2, 3, 6), "h_0 of shape"),
    ("cell hidden", lambda: _hx(2, 3, 5, 4), "c_0 of shape"),
    ("dtype", lambda: _hx(2, 3, 5, dtype=torch.float64), "dtype"),
    ("device", lambda: _hx(2, 3, 5, device="meta"), "meta"),
    ("2-D for batched", lambda: (torch.zeros(2, 5), torch.zeros(2, 5)), "3-D"),
    ("not a pair", lambda: torch.zeros(2, 3, 5), "tuple"),
    ("three", lambda: (*_hx(2, 3, 5), torch.zeros(1)), "tuple"),
]


@pytest.mark.parametrize("impl", ["auto", "fused", "cudnn"])
@pytest.mark.parametrize("case", BAD_HX, ids=[c[0] for c in BAD_HX])
def test_bad_hx_is_refused_before_any_kernel(impl, case):
    _, make, match = case
    m = LSTM(4, 5, 2, impl=impl)
    ref = torch.nn.LSTM(4, 5, 2)
    x = torch.randn(6, 3, 4)
    with pytest.raises(LSTMInputError, match=match) as info:
        m(x, make())
    assert isinstance(info.value, (RuntimeError, ValueError, TypeError))
    with pytest.raises((RuntimeError, ValueError, TypeError)):  # torch refuses them all too
        ref(x, make())


@pytest.mark.parametrize("call, match", [
    (lambda m: m(torch.randn(3, 4), (torch.zeros(2, 1, 5), torch.zeros(2, 1, 5))), "2-D"),
    (lambda m: m(torch.randn(3, 4), (torch.zeros(1, 5), torch.zeros(1, 5))), r"\(2, 5\)"),
    (lambda m: m(torch.randn(3, 2, 3)), "3 features"),
    (lambda m: m(torch.randn(3, 2, 4).double()), "dtype"),
    (lambda m: m(torch.ones(3, 2, 4, dtype=torch.int64)), "floating"),
    (lambda m: m(torch.randn(3, 2, 4, 1)), "2-D"),
    (lambda m: m(torch.randn(3, 2, 4, device="meta")), "meta"),
])
def test_bad_input_is_refused(call, match):
    with pytest.raises(LSTMInputError, match=match):
        call(LSTM(4, 5, 2))


@pytest.mark.parametrize("kwargs, match", [
    (dict(proj_size=5), "proj_size"), (dict(proj_size=-1), "proj_size"),
    (dict(dropout=1.5), "dropout"), (dict(dropout=float("nan")), "dropout"),
    (dict(num_layers=0), "num_layers"), (dict(impl="x"), "impl"),
    (dict(proj_size=2, impl="fused"), "proj_size"),
])
def test_bad_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LSTM(4, 5, **kwargs)


@pytest.mark.parametrize("args, kwargs", [
    ((4.0, 5), {}), ((4, "5"), {}), ((True, 5), {}), ((4, 5), {"bias": 1}),
    ((4, 5), {"batch_first": "yes"}), ((4, 5), {"num_layers": 2.0}),
])
def test_bad_construction_types(args, kwargs):
    """A wrong type is a TypeError, as torch.nn.LSTM raises (its module_db error inputs)."""
    with pytest.raises(TypeError, match="should be of type"):
        LSTM(*args, **kwargs)


def test_torch_sample_inputs():
    """torch's own ModuleInfo samples of nn.LSTM (every combination of bias, batch_first,
    bidirectional and proj_size, unbatched inputs with and without hx), run through ours with
    torch's weights: every sample agrees with torch.nn.LSTM under impl="cudnn" and "auto", and
    under "fused" every sample without a projection (those are refused at construction)."""
    pytest.importorskip("expecttest")  # torch.testing._internal imports it
    from torch.testing._internal.common_modules import module_db

    (info,) = [m for m in module_db if m.module_cls is torch.nn.LSTM]
    counts = {}
    for impl in ("cudnn", "auto", "fused"):
        passed = refused = 0
        samples = [s for dtype in (torch.float32, torch.float64) for training in (True, False)
                   for s in info.module_inputs_func(info, device="cpu", dtype=dtype,
                                                    requires_grad=False, training=training)]
        for s in samples:
            args, kwargs = s.constructor_input.args, s.constructor_input.kwargs
            torch.manual_seed(0)
            dtype = s.forward_input.args[0].dtype
            ref = torch.nn.LSTM(*args, **kwargs, dtype=dtype)
            try:
                ours = LSTM(*args, **kwargs, impl=impl)
            except ValueError:
                assert impl == "fused" and kwargs.get("proj_size"), kwargs
                refused += 1
                continue
            ours = ours.to(dtype)
            ours.load_state_dict(ref.state_dict())
            fwd = s.forward_input
            with torch.no_grad():
                _same(ref(*fwd.args, **fwd.kwargs), ours(*fwd.args, **fwd.kwargs),
                      "fused" if impl == "fused" else "cudnn")
            passed += 1
        counts[impl] = (passed, refused, len(samples))
    print("torch nn.LSTM samples (passed, refused, total):", counts)
    assert counts["cudnn"][0] == counts["cudnn"][2] and counts["auto"][0] == counts["auto"][2]


def test_autocast_accepts_what_torch_accepts(rng_seed):
    # Under autocast torch casts the input, hx and weights itself: a float32 hx with a bfloat16
    # input (an autocast activation) is not a mismatch there, nor here.
    ref, ours = _pair("cudnn", rng_seed, 4, 5, 2)
    x = torch.randn(3, 2, 4).bfloat16()
    hx = (torch.zeros(2, 2, 5), torch.zeros(2, 2, 5))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        _same(ref(x, hx), ours(x, hx), "cudnn")


@pytest.mark.cuda
@pytest.mark.parametrize("impl", ["fused", "cudnn", "auto"])
@pytest.mark.parametrize("layout", LAYOUTS[:4], ids=IDS[:4])
def test_cuda_matches_torch_lstm(impl, layout, rng_seed):
    ref, ours = _pair(impl, rng_seed, 5, 6, 2, **layout)
    ref, ours = ref.cuda(), ours.cuda()
    x = torch.randn(3, 4, 5, device="cuda")
    hx = _hx(2 * (2 if layout.get("bidirectional") else 1), 3 if layout.get("batch_first")
             else 4, 6, device="cuda")
    # cuDNN's RNNs use TF32 by default (10-bit mantissas); without it cuDNN and the fused
    # kernels differ only in float32 rounding order: ~1e-6 over a few steps, 1e-4 leaves margin.
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        (y_r, (h_r, c_r)), (y, (h, c)) = ref(x, hx), ours(x, hx)
    for a, b in ((y, y_r), (h, h_r), (c, c_r)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    with pytest.raises(LSTMInputError, match="h_0"):
        ours(x, _hx(2, 1, 6, device="cuda"))
