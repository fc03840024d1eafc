"""Fused LSTM cell and single-direction LSTM layer, with torch.nn.LSTM's math and weight layout.

The GEMMs stay with cuBLAS: a layer computes the input projection of all time steps in one GEMM,
then per step one GEMM (h_{t-1} @ W_hh^T added onto that step's input projection) and one fused
cell kernel (gates, c_t, h_t). Its backward runs per step one cell-backward kernel and one GEMM
(the gradient into h_{t-1}); the weight and input gradients are then three GEMMs over all steps.
A plain PyTorch step loop launches ~10 kernels per step forward and ~20 backward instead.

Gate order (input, forget, cell, output), weight shapes (4H, I) and (4H, H) and the two biases are
those of torch.nn.LSTM, so its state_dict loads unchanged (see ``mlperf_fast.nn.LSTM``).
"""
from __future__ import annotations

import torch

from mlperf_fast.ops import _checks
from mlperf_fast.ops._library import custom_op, register_op

DTYPES = _checks.FLOAT_DTYPES
_state_dtype = _checks.acc_dtype


# ------------------------------------------------------------------------------ torch path


def cell_forward_torch(pre, pre2, c_prev):
    """(h, c, gates): the reference math, in float32 (float64 for float64)."""
    acc = _state_dtype(pre.dtype)
    z = pre.to(acc) + (pre2.to(acc) if pre2 is not None else 0)
    zi, zf, zg, zo = z.chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(zi), torch.sigmoid(zf), torch.tanh(zg), torch.sigmoid(zo)
    c = f * c_prev.to(acc) + i * g
    h = o * torch.tanh(c)
    return h, c, torch.cat([i, f, g, o], dim=-1)


def cell_backward_torch(dh, dc, gates, c_prev, c):
    """(d pre-activations, dc_prev)."""
    acc = gates.dtype if gates.dtype == torch.float64 else torch.float32
    i, f, g, o = gates.to(acc).chunk(4, dim=-1)
    dh = dh.to(acc)
    tc = torch.tanh(c.to(acc))
    gc = dh * o * (1 - tc * tc)
    if dc is not None:
        gc = gc + dc.to(acc)
    dpre = torch.cat([gc * g * i * (1 - i), gc * c_prev.to(acc) * f * (1 - f),
                      gc * i * (1 - g * g), dh * tc * o * (1 - o)], dim=-1)
    return dpre, gc * f


def _cell_fwd(pre, pre2, c_prev, h_out, c_out, gates_out, backend):
    if backend == "triton":
        from mlperf_fast.kernels import lstm_cell as k

        k.cell_forward(pre, pre2, c_prev, h_out, c_out, gates_out)
        return
    h, c, gates = cell_forward_torch(pre, pre2, c_prev)
    h_out.copy_(h)
    c_out.copy_(c)
    if gates_out is not None:
        gates_out.copy_(gates)


def _cell_bwd(dh, dc, gates, c_prev, c, dpre, dc_prev, backend):
    if backend == "triton":
        from mlperf_fast.kernels import lstm_cell as k

        k.cell_backward(dh, dc, gates, c_prev, c, dpre, dc_prev)
        return
    d, dcp = cell_backward_torch(dh, dc, gates, c_prev, c)
    dpre.copy_(d)
    dc_prev.copy_(dcp)


# ------------------------------------------------------------------------------ the cell


def _cell_forward_impl(backend):
    def forward(gates_x, gates_h, c_prev, save):
        bsz, h4 = gates_x.shape
        h = gates_x.new_empty((bsz, h4 // 4))
        c = torch.empty((bsz, h4 // 4), dtype=_state_dtype(gates_x.dtype), device=gates_x.device)
        gates = gates_x.new_empty((bsz, h4) if save else (0, h4))
        _cell_fwd(gates_x.contiguous(), gates_h.contiguous(), c_prev.contiguous(), h, c,
                  gates if save else None, backend)
        return h, c, gates
    return forward


def _cell_backward_impl(backend):
    def backward(dh, dc, gates, c_prev, c):
        dpre = torch.empty_like(gates)
        dc_prev = torch.empty_like(c)
        _cell_bwd(dh.contiguous(), dc.contiguous(), gates, c_prev.contiguous(), c, dpre, dc_prev,
                  backend)
        return dpre, dc_prev
    return backward


def _cell_setup_context(ctx, inputs, output):
    gates_x, gates_h, c_prev, save = inputs
    _, c, gates = output
    ctx.save_for_backward(gates, c_prev, c)
    ctx.dtypes = (gates_x.dtype, gates_h.dtype, c_prev.dtype)


def _cell_autograd(backward_op):
    def backward(ctx, dh, dc, dgates):
        gates, c_prev, c = ctx.saved_tensors
        if gates.shape[0] != c.shape[0]:
            raise RuntimeError("lstm_cell: the forward ran with save=False; its gates were not "
                               "kept, so there is no backward")
        if dh is None:
            dh = torch.zeros(c.shape, dtype=gates.dtype, device=c.device)
        if dc is None:
            dc = torch.zeros_like(c)
        dpre, dc_prev = backward_op(dh, dc, gates, c_prev, c)
        dx, dhh, dcp = ctx.dtypes
        return dpre.to(dx), dpre.to(dhh), dc_prev.to(dcp), None
    return backward


def _cell_ops(backend: str):
    """mlperf_fast::lstm_cell_<backend>: (h, c in float32, gates (B, 4H) or (0, 4H) unless
    ``save``) and its backward."""
    bwd = custom_op(f"lstm_cell_{backend}_backward",
                    "(Tensor dh, Tensor dc, Tensor gates, Tensor c_prev, Tensor c) "
                    "-> (Tensor, Tensor)", _cell_backward_impl(backend))
    return custom_op(f"lstm_cell_{backend}",
                     "(Tensor gates_x, Tensor gates_h, Tensor c_prev, bool save) "
                     "-> (Tensor, Tensor, Tensor)", _cell_forward_impl(backend),
                     backward=_cell_autograd(bwd), setup_context=_cell_setup_context)


def _float64_torch(device_type: str, size: int):
    return ("triton", "torch") if device_type == "cuda" else ("torch",)


LSTM_CELL = register_op("lstm_cell", triton=_cell_ops("triton"), torch_fn=_cell_ops("torch"),
                        order=_float64_torch)


def _check_float(name, t):
    _checks.float_tensor(t, name)


def _needs_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def lstm_cell(gates_x: torch.Tensor, gates_h: torch.Tensor, c_prev: torch.Tensor, *,
              backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step after its two GEMMs, as in torch.nn.LSTMCell.

    Args:
        gates_x: (B, 4H) ``x @ W_ih^T + b_ih``; gates_h: (B, 4H) ``h @ W_hh^T + b_hh`` (gate order
            input, forget, cell, output); float32, bfloat16, float16 or float64, same device.
        c_prev: (B, H) cell state.
        backend: "auto", "triton" or "torch".

    Returns:
        ``(h, c)``: h (B, H) in gates_x's dtype, c (B, H) in c_prev's dtype (computed in float32).
    """
    for name, t in (("gates_x", gates_x), ("gates_h", gates_h), ("c_prev", c_prev)):
        _check_float(name, t)
    if gates_x.dim() != 2 or gates_x.shape[1] % 4:
        raise _checks.ArgumentValueError(f"gates_x must be (B, 4H), got {tuple(gates_x.shape)}")
    if gates_h.shape != gates_x.shape:
        raise _checks.ArgumentValueError(f"gates_h must have gates_x's shape "
                                         f"{tuple(gates_x.shape)}, got {tuple(gates_h.shape)}")
    _checks.shape(c_prev, "c_prev", (gates_x.shape[0], gates_x.shape[1] // 4),
                  f"(B, H) = ({gates_x.shape[0]}, {gates_x.shape[1] // 4})")
    for name, t in (("gates_h", gates_h), ("c_prev", c_prev)):
        _checks.same_device(t, name, gates_x, "gates_x")
    if backend == "auto" and gates_x.dtype == torch.float64:
        backend = "torch"
    h, c, _ = LSTM_CELL(gates_x.device, backend, gates_x, gates_h, c_prev,
                        _needs_grad(gates_x, gates_h, c_prev))
    return h, c.to(c_prev.dtype)


# ------------------------------------------------------------------------------ the layer


def _layer_forward_impl(backend):
    def forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, save):
        """x (T, B, I) -> y (T, B, H), c_all (T, B, H) float32, gates (T, B, 4H) (empty if not
        ``save``)."""
        steps, bsz, _ = x.shape
        hid = w_hh.shape[1]
        gx = x.reshape(steps * bsz, x.shape[2]) @ w_ih.t()
        if b_ih is not None:
            gx += b_ih + b_hh
        gx = gx.view(steps, bsz, 4 * hid)
        y = x.new_empty((steps, bsz, hid))
        c_all = torch.empty((steps, bsz, hid), dtype=_state_dtype(x.dtype), device=x.device)
        gates = x.new_empty((steps, bsz, 4 * hid) if save else (0, bsz, 4 * hid))
        if bsz == 0:
            return y, c_all, gates
        w_hh_t = w_hh.t()
        h, c = h0.contiguous(), c0.to(c_all.dtype).contiguous()
        for t in range(steps):
            pre = torch.addmm(gx[t], h, w_hh_t)
            _cell_fwd(pre, None, c, y[t], c_all[t], gates[t] if save else None, backend)
            h, c = y[t], c_all[t]
        return y, c_all, gates
    return forward


def _layer_backward_impl(backend):
    def backward(dy, dc_n, x, h0, c0, w_ih, w_hh, y, c_all, gates):
        """Gradients (dx, dh0, dc0, dw_ih, dw_hh, dbias) from dy (T, B, H) (which holds h_n's
        gradient at T - 1) and dc_n (B, H)."""
        steps, bsz, hid = y.shape
        dpre = torch.zeros_like(gates)
        c0 = c0.to(c_all.dtype).contiguous()
        dc = dc_n.to(c_all.dtype).contiguous()
        dh = dy[steps - 1].contiguous()
        for t in range(steps - 1, -1, -1):
            if bsz == 0:
                break
            c_prev = c_all[t - 1] if t > 0 else c0
            dc_prev = torch.empty_like(dc)
            _cell_bwd(dh, dc, gates[t], c_prev, c_all[t], dpre[t], dc_prev, backend)
            dc = dc_prev
            if t > 0:
                dh = torch.addmm(dy[t - 1], dpre[t], w_hh)
        dh0 = dpre[0] @ w_hh
        flat = dpre.view(steps * bsz, 4 * hid)
        dw_ih = flat.t() @ x.reshape(steps * bsz, x.shape[2])
        dw_hh = dpre[0].t() @ h0
        if steps > 1:
            dw_hh += dpre[1:].reshape(-1, 4 * hid).t() @ y[:-1].reshape(-1, hid)
        dx = (flat @ w_ih).view(x.shape)
        dbias = flat.sum(0, dtype=torch.float32 if flat.dtype != torch.float64 else flat.dtype)
        return dx, dh0, dc.to(c0.dtype), dw_ih, dw_hh, dbias.to(flat.dtype)
    return backward


def _layer_setup_context(ctx, inputs, output):
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, save = inputs
    y, c_all, gates = output
    ctx.save_for_backward(x, h0, c0, w_ih, w_hh, y, c_all, gates)
    ctx.has_bias = b_ih is not None


def _layer_autograd(backward_op):
    def backward(ctx, dy, dc_all, dgates):
        x, h0, c0, w_ih, w_hh, y, c_all, gates = ctx.saved_tensors
        if gates.shape[0] != y.shape[0]:
            raise RuntimeError("lstm_layer: the forward ran with save=False; its gates were not "
                               "kept, so there is no backward")
        dy = torch.zeros_like(y) if dy is None else dy.contiguous()
        # Only c_n = c_all[-1] is handed out of lstm_layer: its gradient is the last row's.
        dc_n = torch.zeros_like(c0, dtype=c_all.dtype) if dc_all is None else dc_all[-1]
        dx, dh0, dc0, dw_ih, dw_hh, db = backward_op(dy, dc_n, x, h0, c0, w_ih, w_hh, y, c_all,
                                                     gates)
        db = db if ctx.has_bias else None
        return dx, dh0, dc0.to(c0.dtype), dw_ih, dw_hh, db, db, None
    return backward


def _layer_ops(backend: str):
    bwd = custom_op(f"lstm_layer_{backend}_backward",
                    "(Tensor dy, Tensor dc_n, Tensor x, Tensor h0, Tensor c0, Tensor w_ih, "
                    "Tensor w_hh, Tensor y, Tensor c_all, Tensor gates) "
                    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
                    _layer_backward_impl(backend))
    return custom_op(f"lstm_layer_{backend}",
                     "(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, "
                     "Tensor? b_hh, bool save) -> (Tensor, Tensor, Tensor)",
                     _layer_forward_impl(backend), backward=_layer_autograd(bwd),
                     setup_context=_layer_setup_context)


LSTM_LAYER = register_op("lstm_layer", triton=_layer_ops("triton"), torch_fn=_layer_ops("torch"),
                         order=_float64_torch)


def lstm_layer(x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, w_ih: torch.Tensor,
               w_hh: torch.Tensor, b_ih: torch.Tensor | None = None,
               b_hh: torch.Tensor | None = None, *, backend: str = "auto"
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One unidirectional LSTM layer over a time-major sequence, torch.nn.LSTM's math.

    Args:
        x: (T, B, I); h0, c0: (B, H); w_ih: (4H, I); w_hh: (4H, H); b_ih, b_hh: (4H,) or None.
            All one dtype (float32, bfloat16, float16, float64) on one device; T >= 1.
        backend: "auto", "triton" (GPU, or CPU under TRITON_INTERPRET=1) or "torch".

    Returns:
        ``(y, h_n, c_n)``: y (T, B, H), h_n and c_n (B, H). The cell state is carried in float32.
    """
    tensors = [("x", x), ("h0", h0), ("c0", c0), ("w_ih", w_ih), ("w_hh", w_hh)]
    if (b_ih is None) != (b_hh is None):
        raise ValueError("b_ih and b_hh must both be tensors or both be None")
    if b_ih is not None:
        tensors += [("b_ih", b_ih), ("b_hh", b_hh)]
    for name, t in tensors:
        _check_float(name, t)
        _checks.same_dtype(t, name, x, "x")
        _checks.same_device(t, name, x, "x")
    if x.dim() != 3 or x.shape[0] == 0:
        raise _checks.ArgumentValueError(f"x must be (T, B, I) with T >= 1, got "
                                         f"{tuple(x.shape)}")
    steps, bsz, inp = x.shape
    hid = w_hh.shape[-1]
    if w_hh.shape != (4 * hid, hid):
        raise ValueError(f"w_hh must be (4H, H), got {tuple(w_hh.shape)}")
    if w_ih.shape != (4 * hid, inp):
        raise ValueError(f"w_ih must be (4H, I) = ({4 * hid}, {inp}), got {tuple(w_ih.shape)}")
    for name, t in (("h0", h0), ("c0", c0)):
        if t.shape != (bsz, hid):
            raise ValueError(f"{name} must be (B, H) = ({bsz}, {hid}), got {tuple(t.shape)}")
    if b_ih is not None and (b_ih.shape != (4 * hid,) or b_hh.shape != (4 * hid,)):
        raise ValueError(f"b_ih and b_hh must be ({4 * hid},)")
    if backend == "auto" and x.dtype == torch.float64:
        backend = "torch"
    y, c_all, _ = LSTM_LAYER(x.device, backend, x.contiguous(), h0, c0, w_ih, w_hh, b_ih, b_hh,
                             _needs_grad(x, h0, c0, w_ih, w_hh, b_ih, b_hh))
    return y, y[-1].clone(), c_all[-1].to(c0.dtype)
