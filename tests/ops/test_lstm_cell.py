"""Fused LSTM cell, layer and mlperf_fast.nn.LSTM against torch.nn.LSTMCell / torch.nn.LSTM.

Tolerances: the reference runs in float64 (torch.nn.LSTM on double weights); the kernels compute
gates in float32 and carry c in float32, so per step ~1e-7 relative, growing with the recurrence
over T steps and the GEMM reductions over I and H: 2e-5 absolute on outputs and 1e-4 on
gradients (sums over B*T terms) bound what we observe with a margin, and are far below a wrong
gate order or a missing term (>= 1e-2).
"""
from __future__ import annotations

import os

import pytest
import torch

from mlperf_fast.nn import LSTM
from mlperf_fast.ops import lstm_cell, lstm_layer

CELL_BACKENDS = [
    pytest.param(("torch", "cpu"), id="torch-cpu"),
    pytest.param(("triton", "cpu"), id="triton-interpreter", marks=pytest.mark.skipif(
        os.environ.get("TRITON_INTERPRET") != "1", reason="Triton's interpreter needs TRITON_INTERPRET=1")),
    pytest.param(("triton", "cuda"), id="triton-cuda", marks=pytest.mark.cuda),
]


@pytest.fixture(params=CELL_BACKENDS)
def cell_backend(request):
    return request.param


def test_cell_matches_lstmcell(cell_backend, rng_seed):
    backend, device = cell_backend
    gen = torch.Generator().manual_seed(rng_seed)
    bsz, inp, hid = 5, 7, 24
    ref = torch.nn.LSTMCell(inp, hid, dtype=torch.float64)
    x = torch.randn(bsz, inp, generator=gen, dtype=torch.float64)
    h = torch.randn(bsz, hid, generator=gen, dtype=torch.float64)
    c = torch.randn(bsz, hid, generator=gen, dtype=torch.float64)
    gx = (x @ ref.weight_ih.t() + ref.bias_ih).detach()
    gh = (h @ ref.weight_hh.t() + ref.bias_hh).detach()
    gx64, gh64, c64 = (t.clone().requires_grad_() for t in (gx, gh, c))
    i, f, g, o = (gx64 + gh64).chunk(4, 1)
    c_ref = torch.sigmoid(f) * c64 + torch.sigmoid(i) * torch.tanh(g)
    h_ref = torch.sigmoid(o) * torch.tanh(c_ref)
    with torch.no_grad():
        h_cell, c_cell = ref(x, (h, c))
    torch.testing.assert_close(h_ref, h_cell)  # the reference math is nn.LSTMCell's
    dh = torch.randn(bsz, hid, generator=gen, dtype=torch.float64)
    dc = torch.randn(bsz, hid, generator=gen, dtype=torch.float64)
    (h_ref * dh + c_ref * dc).sum().backward()

    a, b, cc = (t.float().to(device).requires_grad_() for t in (gx, gh, c))
    h_out, c_out = lstm_cell(a, b, cc, backend=backend)
    (h_out * dh.float().to(device) + c_out * dc.float().to(device)).sum().backward()
    torch.testing.assert_close(h_out.cpu().double(), h_ref.detach(), rtol=0, atol=2e-6)
    torch.testing.assert_close(c_out.cpu().double(), c_ref.detach(), rtol=0, atol=2e-6)
    for got, want in ((a, gx64), (b, gh64), (cc, c64)):
        torch.testing.assert_close(got.grad.cpu().double(), want.grad, rtol=0, atol=1e-5)


@pytest.mark.parametrize("num_layers,batch_first,bias", [(1, False, True), (2, True, True),
                                                         (2, False, False)])
def test_lstm_matches_nn_lstm(cell_backend, num_layers, batch_first, bias, rng_seed, monkeypatch):
    backend, device = cell_backend
    monkeypatch.setenv("MLPERF_FAST_BACKEND", backend)
    torch.manual_seed(rng_seed)
    inp, hid, steps, bsz = 6, 16, 7, 3
    ref = torch.nn.LSTM(inp, hid, num_layers, bias=bias, batch_first=batch_first).double()
    ours = LSTM(inp, hid, num_layers, bias=bias, batch_first=batch_first, impl="fused").to(device)
    ours.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    assert set(ours.state_dict()) == set(ref.state_dict())
    shape = (bsz, steps, inp) if batch_first else (steps, bsz, inp)
    x = torch.randn(shape, dtype=torch.float64)
    h0 = torch.randn(num_layers, bsz, hid, dtype=torch.float64)
    c0 = torch.randn(num_layers, bsz, hid, dtype=torch.float64)
    xr, hr, cr = (t.clone().requires_grad_() for t in (x, h0, c0))
    out_r, (hn_r, cn_r) = ref(xr, (hr, cr))
    wy = torch.randn(out_r.shape, dtype=torch.float64)
    wh = torch.randn(hn_r.shape, dtype=torch.float64)
    wc = torch.randn(cn_r.shape, dtype=torch.float64)
    ((out_r * wy).sum() + (hn_r * wh).sum() + (cn_r * wc).sum()).backward()

    xo, ho, co = (t.float().to(device).requires_grad_() for t in (x, h0, c0))
    out, (hn, cn) = ours(xo, (ho, co))
    f = lambda t: t.float().to(device)  # noqa: E731
    ((out * f(wy)).sum() + (hn * f(wh)).sum() + (cn * f(wc)).sum()).backward()
    for got, want in ((out, out_r), (hn, hn_r), (cn, cn_r)):
        torch.testing.assert_close(got.detach().cpu().double(), want.detach(), rtol=0, atol=2e-5)
    for got, want in ((xo, xr), (ho, hr), (co, cr)):
        torch.testing.assert_close(got.grad.cpu().double(), want.grad, rtol=0, atol=1e-4)
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad.cpu().double(), ref_params[name].grad, rtol=0, atol=1e-4)


def test_single_step_and_unbatched(rng_seed):
    torch.manual_seed(rng_seed)
    ref = torch.nn.LSTM(4, 8, 2)
    ours = LSTM(4, 8, 2, impl="fused")
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(1, 4)  # unbatched, one step: the decoder's case
    out_r, (h_r, c_r) = ref(x)
    out, (h, c) = ours(x)
    assert out.shape == out_r.shape and h.shape == h_r.shape
    torch.testing.assert_close(out, out_r, rtol=0, atol=1e-6)
    torch.testing.assert_close(c, c_r, rtol=0, atol=1e-6)


def test_cudnn_impl_is_nn_lstm(rng_seed):
    torch.manual_seed(rng_seed)
    ref = torch.nn.LSTM(5, 8, 2, batch_first=True)
    ours = LSTM(5, 8, 2, batch_first=True, impl="cudnn")
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 6, 5)
    torch.testing.assert_close(ours(x)[0], ref(x)[0], rtol=0, atol=0)


def test_layer_bf16_close(rng_seed):
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("needs Triton's interpreter")
    torch.manual_seed(rng_seed)
    ref = torch.nn.LSTM(8, 16).double()
    x = torch.randn(5, 2, 8, dtype=torch.float64)
    out_r, _ = ref(x)
    p = [t.detach().bfloat16() for t in (ref.weight_ih_l0, ref.weight_hh_l0, ref.bias_ih_l0, ref.bias_hh_l0)]
    z = torch.zeros(2, 16, dtype=torch.bfloat16)
    out, _, _ = lstm_layer(x.bfloat16(), z, z, *p, backend="triton")
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), out_r.detach(), rtol=0, atol=3e-2)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: lstm_cell(torch.zeros(2, 8), torch.zeros(2, 8), torch.zeros(2, 3)), ValueError, "c_prev"),
    (lambda: lstm_cell(torch.zeros(2, 7), torch.zeros(2, 7), torch.zeros(2, 1)), ValueError, "4H"),
    (lambda: lstm_cell(torch.zeros(2, 8), torch.zeros(3, 8), torch.zeros(2, 2)), ValueError, "gates_h"),
    (lambda: lstm_cell(torch.zeros(2, 8, dtype=torch.int32), torch.zeros(2, 8), torch.zeros(2, 2)),
     TypeError, "gates_x has dtype"),
    (lambda: lstm_layer(torch.zeros(3, 2, 4), torch.zeros(2, 5), torch.zeros(2, 5),
                        torch.zeros(20, 3), torch.zeros(20, 5)), ValueError, "w_ih"),
    (lambda: lstm_layer(torch.zeros(3, 2, 4), torch.zeros(2, 5), torch.zeros(2, 5),
                        torch.zeros(20, 4), torch.zeros(20, 5, dtype=torch.float64)), TypeError, "w_hh"),
    (lambda: lstm_layer(torch.zeros(0, 2, 4), torch.zeros(2, 5), torch.zeros(2, 5),
                        torch.zeros(20, 4), torch.zeros(20, 5)), ValueError, "T >= 1"),
    (lambda: LSTM(4, 8)(torch.zeros(3, 2, 5)), ValueError, "5 features"),
], ids=["c-shape", "not-4H", "gates-h-shape", "dtype", "w_ih-shape", "dtype-mix", "empty-T",
        "features"])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
