"""Generated for every op: torch.library.opcheck over every torch.library op of the mlperf_fast
namespace (with and without inputs that require grad), and torch.compile(fullgraph=True) over
every public op, on CPU inputs (and the same on CUDA inputs, marked cuda).

Each op has one small sample below; a test fails if an op of the namespace has none, so a new op
is checked as soon as it is registered. Triton ops run in Triton's interpreter
(TRITON_INTERPRET=1, set by tests/conftest.py without a GPU).
"""
from __future__ import annotations

import importlib.util
import os

import pytest
import torch

import mlperf_fast.ops as ops
from mlperf_fast.ops._library import OPS, load_extension
from mlperf_fast.ops.table_batched_embedding import TableLayout

TRITON = importlib.util.find_spec("triton") is not None and (
    torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1")
# Ops that exist only as the backward of another op: checked through that op's autograd.
BACKWARD_SUFFIX = "_backward"


def _g(t: torch.Tensor, grad: bool) -> torch.Tensor:
    return t.requires_grad_(grad) if t.dtype.is_floating_point else t


def _boxes(n: int, batch: int | None = None) -> torch.Tensor:
    shape = (n, 2) if batch is None else (batch, n, 2)
    xy = torch.rand(shape) * 10
    return torch.cat([xy, xy + torch.rand(shape) * 5 + 0.1], -1)


def _lattice(grad: bool):
    bsz, t, u, v = 2, 3, 2, 5
    logits = _g(torch.randn(bsz, t, u + 1, v), grad)
    targets = torch.randint(0, v - 1, (bsz, u), dtype=torch.int32)
    return logits, targets, torch.tensor([3, 2], dtype=torch.int32), torch.tensor(
        [2, 1], dtype=torch.int32)


def _packed(grad: bool):
    t_len, u_len = torch.tensor([3, 2], dtype=torch.int32), torch.tensor([2, 1], dtype=torch.int32)
    offsets = torch.cumsum(t_len.long() * (u_len.long() + 1), 0)
    logits = _g(torch.randn(int(offsets[-1]), 5), grad)
    targets = torch.randint(0, 4, (2, 2), dtype=torch.int32)
    return logits, targets, t_len, u_len, offsets - t_len.long() * (u_len.long() + 1)


def _opt_lists(n_state: int):
    shapes = [(3,), (2, 2)]
    params = [torch.randn(s) for s in shapes]
    grads = [torch.randn(s) for s in shapes]
    states = [[torch.rand(s) for s in shapes] for _ in range(n_state)]
    return params, grads, states


def _lamb_args(grad: bool):
    params, grads, (m, v) = _opt_lists(2)
    steps = [torch.ones(()) for _ in params]
    return (params, grads, m, v, [], steps, None, 1e-3, 0.9, 0.999, 1e-6, 0.01, True, True,
            True, False, None, 0.0, None, None)


def _adam_args(grad: bool):
    return _lamb_args(grad)[:14] + (None, None)


def _sgd_args(grad: bool):
    params, grads, (buf,) = _opt_lists(1)
    return (params, grads, buf, [], None, 0.1, 0.9, 0.0, 1e-4, False, False, None, None)


def _lars_args(grad: bool):
    params, grads, (buf,) = _opt_lists(1)
    norms = torch.stack([p.norm() for p in params])
    gnorms = torch.stack([g.norm() for g in grads])
    return (params, grads, buf, [], norms, gnorms, None, 0.1, 0.9, 1e-4, 0.001, 0.0, True, None,
            None)


_LAYOUT = TableLayout([5, 3], [4, 2])


def _tbe(grad: bool):
    w = _g(torch.randn(_LAYOUT.numel), grad)
    w_off, d_off, hcum = _LAYOUT.meta(torch.device("cpu"))
    indices = torch.tensor([0, 4, 2, 1, 0, 2], dtype=torch.int64)
    offsets = torch.tensor([0, 2, 3, 5, 6], dtype=torch.int64)
    return w, w_off, d_off, hcum, indices, offsets


def _joint(grad: bool):
    f = _g(torch.randn(2, 3, 4), grad)
    g = _g(torch.randn(2, 3, 4), grad)
    return f, g, torch.tensor([3, 2]), torch.tensor([2, 1])


def _cell(grad: bool):
    return (_g(torch.randn(3, 8), grad), _g(torch.randn(3, 8), grad), _g(torch.randn(3, 2), grad))


def _layer(grad: bool):
    x = _g(torch.randn(4, 3, 5), grad)
    h0, c0 = _g(torch.randn(3, 2), grad), _g(torch.randn(3, 2), grad)
    w_ih, w_hh = _g(torch.randn(8, 5), grad), _g(torch.randn(8, 2), grad)
    b_ih, b_hh = _g(torch.randn(8), grad), _g(torch.randn(8), grad)
    return x, h0, c0, w_ih, w_hh, b_ih, b_hh


def _nms(grad):
    return _boxes(12), torch.rand(12), 0.5


def _joint_loss(grad):
    f, g, t_len, u_len = _joint(grad)
    w, b = _g(torch.randn(5, 4), grad), _g(torch.randn(5), grad)
    targets = torch.randint(0, 4, (2, 2))
    needs = [grad] * 4
    return (f, g, w, b, targets, t_len, u_len, 4, -1.0, "mean", 0.0, 1 << 20, "cublas", needs)


def _ln_args(grad: bool, p: float):
    x, r = _g(torch.randn(2, 3, 8), grad), _g(torch.randn(2, 3, 8), grad)
    b, w, lb = (_g(torch.randn(8), grad) for _ in range(3))
    return x, b, r, w, lb, p, 1e-5, torch.tensor([5]) if p else None


def _focal(grad):
    return (_g(torch.randn(4, 6), grad), torch.randint(0, 2, (4, 6)).float(), 0.25, 2.0, "mean")


# Each op of the namespace: a sample of its arguments (a function of requires_grad).
SAMPLES = {
    # C++ (csrc/registration.cpp)
    "multi_tensor_l2norm": lambda grad: ([torch.randn(5), torch.randn(2, 3)], True),
    "tbe_forward": lambda grad: (lambda w, wo, do, h, i, o: (w, wo, do, i, o, 0, None,
                                                              _LAYOUT.total_D))(*_tbe(grad)),
    "tbe_backward_": lambda grad: (lambda w, wo, do, h, i, o: (
        torch.randn(2, _LAYOUT.total_D), w.detach(), wo, do, h, i, o, 0, None, 1, 0.1, 0.0,
        None, None, _LAYOUT.num_rows, _LAYOUT.max_D))(*_tbe(grad)),
    "tbe_per_sample_weights_grad": lambda grad: (lambda w, wo, do, h, i, o: (
        torch.randn(2, _LAYOUT.total_D), w, wo, do, i, o))(*_tbe(grad)),
    "tbe_validate": lambda grad: (lambda w, wo, do, h, i, o: (h, i, o))(*_tbe(grad)),
    "dot_interaction_forward": lambda grad: (_g(torch.randn(3, 4), grad),
                                             _g(torch.randn(3, 2, 4), grad)),
    "dot_interaction_backward": lambda grad: (torch.randn(3, 4 + 3), torch.randn(3, 4),
                                              torch.randn(3, 2, 4)),
    "nms": _nms,
    "batched_nms": lambda grad: (_boxes(12), torch.rand(12), torch.randint(0, 3, (12,)), 0.5),
    "nms_padded": lambda grad: (_boxes(10, 2), torch.rand(2, 10), torch.randint(0, 3, (2, 10)),
                                0.5, 0.1, 8, 5),
    "lamb_step": _lamb_args,
    "adam_step": _adam_args,
    "sgd_step": _sgd_args,
    "lars_step": _lars_args,
    # Python (torch.library.custom_op)
    "box_iou_triton": lambda grad: (_boxes(4, 2), _boxes(5, 2)),
    "box_decode_triton": lambda grad: (torch.randn(2, 6, 4), _boxes(6, 2), [1.0, 1.0, 1.0, 1.0],
                                       4.0, torch.tensor([[10, 12], [8, 9]])),
    "match_boxes_triton": lambda grad: (_boxes(3, 2), _boxes(7), torch.tensor([3, 1]), 0.5, 0.4,
                                        True),
    "nms_triton": _nms,
    "batched_nms_triton": lambda grad: (_boxes(12), torch.rand(12), torch.randint(0, 3, (12,)),
                                        0.5),
    "nms_padded_triton": lambda grad: (_boxes(10, 2), torch.rand(2, 10), None, 0.5, 0.1, 8, 5),
    "multi_tensor_l2norm_triton": lambda grad: ([torch.randn(5), torch.randn(2, 3)], True),
    "lamb_step_triton": _lamb_args,
    "adam_step_triton": _adam_args,
    "sgd_step_triton": _sgd_args,
    "lars_step_triton": _lars_args,
    "tbe_forward_triton": lambda grad: (lambda w, wo, do, h, i, o: (
        w.detach(), wo, do, i, o, False, None, _LAYOUT.total_D, _LAYOUT.max_D))(*_tbe(grad)),
    "sigmoid_focal_loss_triton": _focal,
    "bias_dropout_add_layer_norm_triton": lambda grad: _ln_args(grad, 0.25),
    "bias_gelu_triton": lambda grad: (_g(torch.randn(5, 3, 7), grad), _g(torch.randn(7), grad),
                                      "tanh"),
    "rnnt_loss_triton": lambda grad: (*_lattice(grad), 4, -1.0, True),
    "rnnt_loss_torch": lambda grad: (*_lattice(grad), 4, -1.0, True),
    "rnnt_loss_packed_triton": lambda grad: (*_packed(grad), 3, 3, 4, -1.0, True),
    "transducer_joint_triton": lambda grad: (*_joint(grad), True, 13),
    "transducer_joint_loss_triton": _joint_loss,
    "transducer_joint_loss_torch": _joint_loss,
    "lstm_cell_triton": lambda grad: (*_cell(grad), grad),
    "lstm_cell_torch": lambda grad: (*_cell(grad), grad),
    "lstm_layer_triton": lambda grad: (*_layer(grad), grad),
    "lstm_layer_torch": lambda grad: (*_layer(grad), grad),
}
TRITON_OPS = {name for name in SAMPLES if name.endswith("_triton")}
# Ops whose kernel has no autograd: their floating inputs are never given requires_grad.
NO_GRAD = {"multi_tensor_l2norm", "tbe_forward", "tbe_backward_", "tbe_per_sample_weights_grad",
           "tbe_validate", "dot_interaction_backward", "nms", "batched_nms", "nms_padded",
           "lamb_step", "adam_step", "sgd_step", "lars_step", "box_iou_triton",
           "box_decode_triton", "match_boxes_triton", "nms_triton", "batched_nms_triton",
           "nms_padded_triton", "multi_tensor_l2norm_triton", "lamb_step_triton",
           "adam_step_triton", "sgd_step_triton", "lars_step_triton", "tbe_forward_triton"}


def _namespace_ops() -> list[str]:
    names = []
    for qualname in torch._C._dispatch_get_all_op_names():
        if qualname.startswith("mlperf_fast::"):
            name = qualname.split("::", 1)[1]
            if name != "build_info" and not name.endswith(BACKWARD_SUFFIX):
                names.append(name)
    return sorted(set(names))


def test_every_op_of_the_namespace_has_a_sample():
    missing = [n for n in _namespace_ops() if n not in SAMPLES]
    assert not missing, f"ops without a sample in tests/ops/test_library.py: {missing}"


def _params():
    out = []
    for name in sorted(SAMPLES):
        marks = []
        if name in TRITON_OPS:
            marks.append(pytest.mark.skipif(not TRITON, reason="needs triton (or its interpreter)"))
        for grad in (False, True):
            if grad and name in NO_GRAD:
                continue
            out.append(pytest.param(name, grad, id=f"{name}-{'grad' if grad else 'nograd'}",
                                    marks=marks))
    return out


def _on(x, device):
    """The sample's tensors on ``device``, leaves again (requires_grad kept)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to(device).requires_grad_(x.requires_grad)
    if isinstance(x, (list, tuple)):
        return type(x)(_on(v, device) for v in x)
    return x


@pytest.mark.parametrize("device", [pytest.param("cpu", id="cpu"),
                                    pytest.param("cuda", id="cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("name,grad", _params())
def test_opcheck(name, grad, device):
    if not hasattr(torch.ops.mlperf_fast, name):
        pytest.skip(f"mlperf_fast::{name} is not registered (extension not built)")
    torch.manual_seed(0)
    args = _on(SAMPLES[name](grad), device)
    op = getattr(torch.ops.mlperf_fast, name).default
    torch.library.opcheck(op, args)


# --------------------------------------------------------------------------------------------
# torch.compile(fullgraph=True) over every public op


def _public_samples():
    """(public function, sample arguments, keyword arguments) per public op."""
    lat = _lattice(False)
    packed = _packed(False)
    f, g, t_len, u_len = _joint(False)
    params, grads, (m, v) = _opt_lists(2)
    w, _, _, _, indices, offsets = _tbe(False)
    return {
        "box_iou": (ops.box_iou, (_boxes(4), _boxes(5)), {}),
        "box_decode": (ops.box_decode, (torch.randn(2, 6, 4), _boxes(6, 2)),
                       {"image_sizes": torch.tensor([[10, 12], [8, 9]])}),
        "match_boxes": (ops.match_boxes, (_boxes(3, 2), _boxes(7), torch.tensor([3, 0])), {}),
        "nms": (ops.nms, _nms(False), {}),
        "batched_nms": (ops.batched_nms, (_boxes(12), torch.rand(12),
                                          torch.randint(0, 3, (12,)), 0.5), {}),
        "nms_padded": (ops.nms_padded, (_boxes(10, 2), torch.rand(2, 10)),
                       {"max_detections": 5}),
        "sigmoid_focal_loss": (ops.sigmoid_focal_loss, _focal(False)[:2], {"reduction": "sum"}),
        "bias_gelu": (ops.bias_gelu, (torch.randn(5, 7), torch.randn(7)), {}),
        "bias_dropout_add_layer_norm": (ops.bias_dropout_add_layer_norm,
                                        _ln_args(False, 0.0)[:5] + (0.1, False, 1e-5), {}),
        "retinanet_postprocess": (ops.retinanet_postprocess, (
            torch.randn(2, 12, 3), torch.randn(2, 12, 4), _boxes(12),
            torch.tensor([[20, 20], [15, 18]]), [8, 4]), {"detections_per_img": 5,
                                                          "topk_candidates": 6}),
        "dot_interaction": (ops.dot_interaction, (torch.randn(3, 4), torch.randn(3, 2, 4)), {}),
        "table_batched_embedding_bag": (ops.table_batched_embedding_bag,
                                        (w, _LAYOUT, indices, offsets), {}),
        "multi_tensor_l2norm": (ops.multi_tensor_l2norm, ([torch.randn(5), torch.randn(2, 3)],
                                                          True), {}),
        "lamb_step": (ops.lamb_step, _lamb_args(False), {}),
        "adam_step": (ops.adam_step, _adam_args(False), {}),
        "sgd_step": (ops.sgd_step, _sgd_args(False), {}),
        "lars_step": (ops.lars_step, _lars_args(False), {}),
        "rnnt_loss": (ops.rnnt_loss, lat, {}),
        "transducer_joint": (ops.transducer_joint, (f, g, t_len, u_len),
                             {"pack_output": False}),
        "transducer_joint_packed": (ops.transducer_joint, (f, g, t_len, u_len),
                                    {"packed_rows": 13}),
        "transducer_joint_loss": (ops.transducer_joint_loss, (
            f, g, torch.randn(5, 4), torch.randn(5), torch.randint(0, 4, (2, 2)), t_len, u_len),
            {}),
        "lstm_cell": (ops.lstm_cell, _cell(False), {}),
        "lstm_layer": (ops.lstm_layer, _layer(False), {}),
    }


# Public ops whose work is shaped by values read on the host, which a graph cannot hold; each
# is documented in its docstring. They run eagerly inside a compiled model (torch.compile
# without fullgraph breaks the graph around them).
EAGER_ONLY = {
    "rnnt_loss_packed": "its lattice's shape comes from the lengths' values",
    "rnnt_greedy_decode": "a loop that stops when no utterance emits (data-dependent)",
    "table_batched_embedding_bag_fused": "updates the weights in its backward, outside autograd",
    "tbe_backward_update_": "updates the weights in place, outside autograd",
}


def test_every_public_op_is_compiled_or_listed():
    functions = {n for n in ops.__all__ if callable(getattr(ops, n))
                 and not isinstance(getattr(ops, n), type)}
    covered = set(_public_samples()) | set(EAGER_ONLY)
    assert functions <= covered, f"public ops with no compile case: {functions - covered}"


def _clone(x, device=None):
    if isinstance(x, torch.Tensor):
        return x.clone() if device is None else x.to(device)
    if isinstance(x, (list, tuple)):
        return type(x)(_clone(v, device) for v in x)
    if isinstance(x, dict):
        return {k: _clone(v, device) for k, v in x.items()}
    return x


def _close(a, b):
    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _close(x, y)


DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=pytest.mark.cuda)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(_public_samples()))
def test_compile_fullgraph(name, device):
    torch.manual_seed(0)
    fn, args, kwargs = _public_samples()[name]
    if name in ("nms", "batched_nms", "nms_padded", "lamb_step", "adam_step", "sgd_step",
                "lars_step", "dot_interaction", "table_batched_embedding_bag",
                "multi_tensor_l2norm") and not load_extension():
        pytest.skip("the native kernel is what auto picks on the CPU; extension not built")
    torch._dynamo.reset()
    if device != "cpu":
        args, kwargs = _clone(args, device), _clone(kwargs, device)
    eager_args, compiled_args = _clone(args), _clone(args)
    expected = fn(*eager_args, **kwargs)
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager", dynamic=False)
    got = compiled(*compiled_args, **kwargs)
    _close(got, expected)
    _close(compiled_args, eager_args)  # the in-place steps changed the same state


def test_auto_order_follows_measurements():
    # benchmarks/results: Triton beats the CUDA kernel for nms below ~12,000 boxes and for
    # batched_nms at every measured size; native is faster for every other op that has both.
    assert OPS["nms"].order("cuda", 1000)[0] == "triton"
    assert OPS["nms"].order("cuda", 20000)[0] == "native"
    assert OPS["batched_nms"].order("cuda", 20000)[0] == "triton"
    for name in ("nms_padded", "lamb_step", "sgd_step", "multi_tensor_l2norm",
                 "table_batched_embedding_bag"):
        assert OPS[name].order("cuda", 1000)[0] == "native", name
    for op in OPS.values():
        assert op.order("cpu", 1000)[-1] == "torch" or op.torch is None


# --------------------------------------------------------------------------------------------
# A build without code for the GPU's architecture


@pytest.mark.parametrize("capability,archs,ptx,runs", [
    ((9, 0), [900], False, True),
    ((9, 0), [800, 900], True, True),
    ((8, 6), [800], False, True),      # sm_80 machine code runs on sm_86
    ((8, 0), [860], False, False),     # but not the other way round
    ((8, 0), [900], True, False),      # PTX of a newer arch cannot run on an older GPU
    ((10, 0), [900], True, True),      # the driver compiles sm_90's PTX for sm_100
    ((10, 0), [900], False, False),
    ((12, 0), [800, 860, 890, 900, 1000, 1200], True, True),
])
def test_arch_supported(capability, archs, ptx, runs):
    from mlperf_fast.ops._library import arch_supported

    assert arch_supported(capability, archs, ptx) is runs


def test_build_info_archs_parse(monkeypatch):
    from mlperf_fast.ops import _library

    monkeypatch.setattr(_library, "build_info",
                        lambda: {"backends": "cpu,cuda", "arch": "800,900", "ptx": "1"})
    assert _library.cuda_archs() == ([800, 900], True)


@pytest.mark.cuda
def test_auto_falls_back_once_when_c_has_no_code_for_the_gpu(monkeypatch):
    from mlperf_fast.ops import _library

    if "cuda" not in _library.NATIVE_KERNELS.get("nms_padded", ()):
        pytest.skip("the extension has no CUDA kernels")
    monkeypatch.setattr(_library, "cuda_archs", lambda: ([520], False))
    monkeypatch.setattr(_library, "_cuda_native_ok", {})
    dev = torch.device("cuda")
    with pytest.warns(RuntimeWarning, match="cannot run on this GPU"):
        assert OPS["nms_padded"].choose(dev) == "triton"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert OPS["lamb_step"].choose(dev) == "triton"  # one warning, not one per op
        b, s = _boxes(10, 2).cuda(), torch.rand(2, 10, device="cuda")
        ops.nms_padded(b, s)
    with pytest.raises(ValueError, match="native"):
        OPS["nms_padded"].choose(dev, "native")
