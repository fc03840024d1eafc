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

from mlperf_fast.ops._library import choose_backend

DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _state_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


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


@torch.library.custom_op("mlperf_fast::lstm_cell_forward", mutates_args=())
def _cell_forward_op(gates_x: torch.Tensor, gates_h: torch.Tensor, c_prev: torch.Tensor,
                     save: bool, backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    bsz, h4 = gates_x.shape
    h = gates_x.new_empty((bsz, h4 // 4))
    c = torch.empty((bsz, h4 // 4), dtype=_state_dtype(gates_x.dtype), device=gates_x.device)
    gates = gates_x.new_empty((bsz, h4) if save else (0, h4))
    _cell_fwd(gates_x.contiguous(), gates_h.contiguous(), c_prev.contiguous(), h, c,
              gates if save else None, backend)
    return h, c, gates


@_cell_forward_op.register_fake
def _(gates_x, gates_h, c_prev, save, backend):
    bsz, h4 = gates_x.shape
    return (gates_x.new_empty((bsz, h4 // 4)),
            gates_x.new_empty((bsz, h4 // 4), dtype=_state_dtype(gates_x.dtype)),
            gates_x.new_empty((bsz, h4) if save else (0, h4)))


@torch.library.custom_op("mlperf_fast::lstm_cell_backward", mutates_args=())
def _cell_backward_op(dh: torch.Tensor, dc: torch.Tensor, gates: torch.Tensor,
                      c_prev: torch.Tensor, c: torch.Tensor, backend: str
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    dpre = torch.empty_like(gates)
    dc_prev = torch.empty_like(c)
    _cell_bwd(dh.contiguous(), dc.contiguous(), gates, c_prev.contiguous(), c, dpre, dc_prev,
              backend)
    return dpre, dc_prev


@_cell_backward_op.register_fake
def _(dh, dc, gates, c_prev, c, backend):
    return torch.empty_like(gates), torch.empty_like(c)


class _Cell(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gates_x, gates_h, c_prev, backend):
        save = any(ctx.needs_input_grad[:3])
        h, c, gates = _cell_forward_op(gates_x, gates_h, c_prev, save, backend)
        ctx.save_for_backward(gates, c_prev, c)
        ctx.backend = backend
        ctx.dtypes = (gates_x.dtype, gates_h.dtype, c_prev.dtype)
        return h, c.to(c_prev.dtype)

    @staticmethod
    def backward(ctx, dh, dc):
        gates, c_prev, c = ctx.saved_tensors
        if dh is None:
            dh = torch.zeros(c.shape, dtype=gates.dtype, device=c.device)
        if dc is None:
            dc = torch.zeros_like(c)
        dpre, dc_prev = _cell_backward_op(dh, dc, gates, c_prev, c, ctx.backend)
        dx, dhh, dcp = ctx.dtypes
        return dpre.to(dx), dpre.to(dhh), dc_prev.to(dcp), None


def _check_float(name, t):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    if t.dtype not in DTYPES:
        raise TypeError(f"{name} has dtype {t.dtype}; expected float32, float16, bfloat16 or "
                        "float64")


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
        raise ValueError(f"gates_x must be (B, 4H), got {tuple(gates_x.shape)}")
    if gates_h.shape != gates_x.shape:
        raise ValueError(f"gates_h must have gates_x's shape {tuple(gates_x.shape)}, got "
                         f"{tuple(gates_h.shape)}")
    if c_prev.shape != (gates_x.shape[0], gates_x.shape[1] // 4):
        raise ValueError(f"c_prev must be (B, H) = ({gates_x.shape[0]}, {gates_x.shape[1] // 4}),"
                         f" got {tuple(c_prev.shape)}")
    for name, t in (("gates_h", gates_h), ("c_prev", c_prev)):
        if t.device != gates_x.device:
            raise ValueError(f"{name} is on {t.device} but gates_x is on {gates_x.device}")
    if backend == "auto" and gates_x.dtype == torch.float64:
        backend = "torch"
    chosen = choose_backend("lstm_cell", gates_x.device, backend)
    if chosen == "native":
        raise ValueError("backend 'native': lstm_cell has Triton and torch kernels only")
    return _Cell.apply(gates_x, gates_h, c_prev, chosen)


# ------------------------------------------------------------------------------ the layer


@torch.library.custom_op("mlperf_fast::lstm_layer_forward", mutates_args=())
def _layer_forward_op(x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, w_ih: torch.Tensor,
                      w_hh: torch.Tensor, bias: torch.Tensor | None, save: bool, backend: str
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (T, B, I) -> y (T, B, H), c_all (T, B, H) float32, gates (T, B, 4H) (empty if not
    ``save``)."""
    steps, bsz, _ = x.shape
    hid = w_hh.shape[1]
    gx = x.reshape(steps * bsz, -1) @ w_ih.t()
    if bias is not None:
        gx += bias
    gx = gx.view(steps, bsz, 4 * hid)
    y = x.new_empty((steps, bsz, hid))
    c_all = torch.empty((steps, bsz, hid), dtype=_state_dtype(x.dtype), device=x.device)
    gates = x.new_empty((steps, bsz, 4 * hid) if save else (0, bsz, 4 * hid))
    w_hh_t = w_hh.t()
    h, c = h0.contiguous(), c0.to(c_all.dtype).contiguous()
    for t in range(steps):
        pre = torch.addmm(gx[t], h, w_hh_t)
        _cell_fwd(pre, None, c, y[t], c_all[t], gates[t] if save else None, backend)
        h, c = y[t], c_all[t]
    return y, c_all, gates


@_layer_forward_op.register_fake
def _(x, h0, c0, w_ih, w_hh, bias, save, backend):
    steps, bsz, _ = x.shape
    hid = w_hh.shape[1]
    return (x.new_empty((steps, bsz, hid)),
            x.new_empty((steps, bsz, hid), dtype=_state_dtype(x.dtype)),
            x.new_empty((steps, bsz, 4 * hid) if save else (0, bsz, 4 * hid)))


@torch.library.custom_op("mlperf_fast::lstm_layer_backward", mutates_args=())
def _layer_backward_op(dy: torch.Tensor, dh_n: torch.Tensor, dc_n: torch.Tensor,
                       x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, w_ih: torch.Tensor,
                       w_hh: torch.Tensor, y: torch.Tensor, c_all: torch.Tensor,
                       gates: torch.Tensor, backend: str
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                  torch.Tensor, torch.Tensor]:
    """Gradients (dx, dh0, dc0, dw_ih, dw_hh, dbias)."""
    steps, bsz, hid = y.shape
    dpre = torch.empty_like(gates)
    c0 = c0.to(c_all.dtype).contiguous()
    dc = dc_n.to(c_all.dtype).contiguous()
    dh = (dy[steps - 1] + dh_n).contiguous()
    for t in range(steps - 1, -1, -1):
        c_prev = c_all[t - 1] if t > 0 else c0
        dc_prev = torch.empty_like(dc)
        _cell_bwd(dh, dc, gates[t], c_prev, c_all[t], dpre[t], dc_prev, backend)
        dc = dc_prev
        if t > 0:
            dh = torch.addmm(dy[t - 1], dpre[t], w_hh)
    dh0 = dpre[0] @ w_hh
    flat = dpre.view(steps * bsz, 4 * hid)
    dw_ih = flat.t() @ x.reshape(steps * bsz, -1)
    dw_hh = dpre[0].t() @ h0
    if steps > 1:
        dw_hh += dpre[1:].reshape(-1, 4 * hid).t() @ y[:-1].reshape(-1, hid)
    dx = (flat @ w_ih).view(x.shape)
    dbias = flat.sum(0, dtype=torch.float32 if flat.dtype != torch.float64 else flat.dtype)
    return dx, dh0, dc.to(c0.dtype), dw_ih, dw_hh, dbias.to(flat.dtype)


@_layer_backward_op.register_fake
def _(dy, dh_n, dc_n, x, h0, c0, w_ih, w_hh, y, c_all, gates, backend):
    return (torch.empty_like(x), torch.empty_like(h0), c0.new_empty(c0.shape, dtype=c_all.dtype),
            torch.empty_like(w_ih), torch.empty_like(w_hh), w_ih.new_empty((w_ih.shape[0],)))


class _Layer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, backend):
        bias = None if b_ih is None else b_ih + b_hh
        save = any(ctx.needs_input_grad[:7])
        y, c_all, gates = _layer_forward_op(x, h0, c0, w_ih, w_hh, bias, save, backend)
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, y, c_all, gates)
        ctx.backend = backend
        ctx.has_bias = b_ih is not None
        return y, y[-1].clone(), c_all[-1].to(c0.dtype)

    @staticmethod
    def backward(ctx, dy, dh_n, dc_n):
        x, h0, c0, w_ih, w_hh, y, c_all, gates = ctx.saved_tensors
        dy = torch.zeros_like(y) if dy is None else dy.contiguous()
        dh_n = torch.zeros_like(h0) if dh_n is None else dh_n
        dc_n = torch.zeros_like(c0) if dc_n is None else dc_n
        dx, dh0, dc0, dw_ih, dw_hh, db = _layer_backward_op(
            dy, dh_n, dc_n, x, h0, c0, w_ih, w_hh, y, c_all, gates, ctx.backend)
        db = db if ctx.has_bias else None
        return dx, dh0, dc0.to(c0.dtype), dw_ih, dw_hh, db, db, None


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
        if t.dtype != x.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but x has {x.dtype}; they must match")
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}")
    if x.dim() != 3 or x.shape[0] == 0:
        raise ValueError(f"x must be (T, B, I) with T >= 1, got {tuple(x.shape)}")
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
    chosen = choose_backend("lstm_layer", x.device, backend)
    if chosen == "native":
        raise ValueError("backend 'native': lstm_layer has Triton and torch kernels only")
    return _Layer.apply(x.contiguous(), h0, c0, w_ih, w_hh, b_ih, b_hh, chosen)
