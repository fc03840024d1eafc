"""Fuzz cases of every public op of mlperf_fast.ops: valid inputs (checked against the pure-PyTorch
implementation or a property of the result) and bad ones (a wrong shape, dtype or device, a meta
tensor, an index or offset out of range, a scalar out of its range or NaN), on the CPU backends.

Each case is a function of no arguments, made by :func:`ok` (must return; asserts its result)
or :func:`bad` (must raise one of the listed types naming the argument). Names are generated,
so the list reads as a table.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from fuzz_runner import Case

import mlperf_fast.ops as ops
from mlperf_fast.ops.bias_dropout_add_layer_norm import bias_dropout_add_layer_norm_torch
from mlperf_fast.ops.bias_gelu import bias_gelu_torch
from mlperf_fast.ops.box_decode import box_decode_torch
from mlperf_fast.ops.box_iou import box_iou_torch
from mlperf_fast.ops.match_boxes import match_boxes_torch
from mlperf_fast.ops.multi_tensor_l2norm import multi_tensor_l2norm_torch
from mlperf_fast.ops.nms import batched_nms_torch, nms_torch
from mlperf_fast.ops.sigmoid_focal_loss import sigmoid_focal_loss_torch
from mlperf_fast.ops.table_batched_embedding import TableLayout, tbe_forward_torch

CASES: list[Case] = []
VALUE = ("ValueError",)
TYPE = ("TypeError",)
EITHER = ("ValueError", "TypeError")


def _add(name: str, fn: Callable[[], object], raises: tuple[str, ...], names: tuple[str, ...]):
    fn_name = f"case_{len(CASES)}"
    globals()[fn_name] = fn
    CASES.append(Case(name, fn_name, raises, names))


def ok(name: str, fn: Callable[[], object]) -> None:
    _add(name, fn, (), ())


def bad(name: str, fn: Callable[[], object], raises: tuple[str, ...], *names: str) -> None:
    _add(name, fn, raises, names)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator(torch.get_default_device()).manual_seed(seed)


def boxes(n: int, batch: int | None = None, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    g = gen(seed)
    shape = (n, 2) if batch is None else (batch, n, 2)
    xy = torch.rand(shape, generator=g) * 10
    return torch.cat([xy, xy + torch.rand(shape, generator=g) * 5 + 0.1], -1).to(dtype)


def close(a, b, **kw):
    torch.testing.assert_close(a, b, **kw)


META = torch.device("meta")

# ------------------------------------------------------------------------------ box_iou

for backend in ("auto", "torch"):
    ok(f"box_iou {backend} random", lambda b=backend: close(
        ops.box_iou(boxes(5), boxes(7, seed=1), backend=b),
        box_iou_torch(boxes(5), boxes(7, seed=1))))
ok("box_iou empty", lambda: ops.box_iou(boxes(0), boxes(3)).shape == (0, 3) or None)
ok("box_iou integer boxes", lambda: close(
    ops.box_iou(torch.tensor([[0, 0, 2, 2]]), torch.tensor([[1, 1, 3, 3]])),
    torch.tensor([[1 / 7]])))
ok("box_iou batched", lambda: close(ops.box_iou(boxes(3, 2), boxes(4, 2)),
                                    box_iou_torch(boxes(3, 2), boxes(4, 2))))
bad("box_iou last dim 5", lambda: ops.box_iou(torch.rand(3, 5), boxes(2)), VALUE, "boxes1")
bad("box_iou 1-D", lambda: ops.box_iou(boxes(2), torch.rand(4)), VALUE, "boxes2")
bad("box_iou bool", lambda: ops.box_iou(boxes(2) > 1, boxes(2)), TYPE, "boxes1")
bad("box_iou dtypes differ", lambda: ops.box_iou(boxes(2), boxes(2).double()), TYPE, "boxes2")
bad("box_iou rank differs", lambda: ops.box_iou(boxes(2), boxes(2, 1)), VALUE, "boxes2")
bad("box_iou meta", lambda: ops.box_iou(boxes(2).to(META), boxes(2)), VALUE, "boxes1", "meta")
bad("box_iou not a tensor", lambda: ops.box_iou([[0, 0, 1, 1]], boxes(2)), TYPE, "boxes1")
bad("box_iou backend native", lambda: ops.box_iou(boxes(2), boxes(2), backend="native"), VALUE,
    "native")
bad("box_iou backend bogus", lambda: ops.box_iou(boxes(2), boxes(2), backend="cuda"), VALUE,
    "backend")

# ------------------------------------------------------------------------------ box_decode

_codes = torch.randn(2, 6, 4, generator=gen(3))
_sizes = torch.tensor([[10, 12], [8, 9]])
ok("box_decode clip", lambda: close(ops.box_decode(_codes, boxes(6, 2), image_sizes=_sizes),
                                    box_decode_torch(_codes, boxes(6, 2), image_sizes=_sizes)))
ok("box_decode shared anchors", lambda: close(
    ops.box_decode(_codes, boxes(6), (10.0, 10.0, 5.0, 5.0)),
    box_decode_torch(_codes, boxes(6).expand(2, 6, 4), (10.0, 10.0, 5.0, 5.0))))
bad("box_decode weight 0", lambda: ops.box_decode(_codes, boxes(6), (1, 0, 1, 1)), VALUE,
    "weights")
bad("box_decode weight NaN", lambda: ops.box_decode(_codes, boxes(6), (1, math.nan, 1, 1)),
    VALUE, "weights[1]")
bad("box_decode three weights", lambda: ops.box_decode(_codes, boxes(6), (1, 1, 1)), TYPE,
    "weights")
bad("box_decode clip NaN", lambda: ops.box_decode(_codes, boxes(6), bbox_xform_clip=math.nan),
    VALUE, "bbox_xform_clip")
bad("box_decode anchors count", lambda: ops.box_decode(_codes, boxes(5)), VALUE, "anchors")
bad("box_decode image_sizes shape", lambda: ops.box_decode(_codes, boxes(6),
                                                           image_sizes=torch.ones(3, 2)),
    VALUE, "image_sizes")
bad("box_decode int codes", lambda: ops.box_decode(_codes.long(), boxes(6)), TYPE, "rel_codes")
bad("box_decode meta anchors", lambda: ops.box_decode(_codes, boxes(6).to(META)), VALUE,
    "anchors")

# ------------------------------------------------------------------------------ match_boxes

_gt, _anc = boxes(3, 2, seed=4), boxes(9, seed=5)
for backend in ("auto", "torch"):
    ok(f"match_boxes {backend}", lambda b=backend: close(
        ops.match_boxes(_gt, _anc, torch.tensor([3, 1]), backend=b),
        match_boxes_torch(_gt, _anc, torch.tensor([3, 1]), 0.5, 0.4, True)))
ok("match_boxes no gt", lambda: close(ops.match_boxes(boxes(0), _anc),
                                      torch.full((9,), -1, dtype=torch.int64)))
bad("match_boxes num_gt > G", lambda: ops.match_boxes(_gt, _anc, torch.tensor([4, 1])), VALUE,
    "num_gt")
bad("match_boxes num_gt < 0", lambda: ops.match_boxes(_gt, _anc, torch.tensor([-1, 1])), VALUE,
    "num_gt")
bad("match_boxes num_gt float", lambda: ops.match_boxes(_gt, _anc, torch.tensor([1.0, 1.0])),
    TYPE, "num_gt")
bad("match_boxes high NaN", lambda: ops.match_boxes(_gt, _anc, high_threshold=math.nan), VALUE,
    "high_threshold")
bad("match_boxes low NaN", lambda: ops.match_boxes(_gt, _anc, low_threshold=math.nan), VALUE,
    "low_threshold")
bad("match_boxes low > high", lambda: ops.match_boxes(_gt, _anc, None, 0.3, 0.4), VALUE,
    "low_threshold")
bad("match_boxes 3-D anchors", lambda: ops.match_boxes(_gt, boxes(9, 2)), VALUE, "anchors")

# ------------------------------------------------------------------------------ nms family

_b, _s = boxes(40, seed=6), torch.rand(40, generator=gen(7))
_idx = torch.randint(0, 3, (40,), generator=gen(8))
for backend in ("auto", "native", "torch"):
    ok(f"nms {backend}", lambda b=backend: close(ops.nms(_b, _s, 0.5, backend=b),
                                                nms_torch(_b, _s, 0.5)))
    ok(f"batched_nms {backend}", lambda b=backend: close(
        ops.batched_nms(_b, _s, _idx, 0.5, backend=b), batched_nms_torch(_b, _s, _idx, 0.5)))
ok("nms empty", lambda: ops.nms(boxes(0), torch.rand(0), 0.5).numel() == 0 or None)
ok("nms ties", lambda: close(ops.nms(_b, torch.ones(40), 0.5), nms_torch(_b, torch.ones(40), 0.5)))
ok("batched_nms empty, other arguments None",
   lambda: close(ops.batched_nms(torch.empty(0, dtype=torch.int64), None, None, None),
                 torch.empty(0, dtype=torch.int64)))
ok("nms non-contiguous", lambda: close(ops.nms(_b.t().contiguous().t(), _s[::1], 0.3),
                                       nms_torch(_b, _s, 0.3)))
bad("nms iou NaN", lambda: ops.nms(_b, _s, math.nan), VALUE, "iou_threshold")
bad("nms iou str", lambda: ops.nms(_b, _s, "0.5"), TYPE, "iou_threshold")
bad("nms scores length", lambda: ops.nms(_b, _s[:-1], 0.5), VALUE, "scores")
bad("nms boxes 3 columns", lambda: ops.nms(_b[:, :3], _s, 0.5), VALUE, "boxes")
bad("nms int scores", lambda: ops.nms(_b, (_s * 10).long(), 0.5), TYPE, "scores")
bad("nms meta scores", lambda: ops.nms(_b, _s.to(META), 0.5), VALUE, "scores")
bad("batched_nms float idxs", lambda: ops.batched_nms(_b, _s, _idx.float(), 0.5), TYPE, "idxs")
bad("batched_nms idxs length", lambda: ops.batched_nms(_b, _s, _idx[:3], 0.5), VALUE, "idxs")
bad("nms raises a RuntimeError too (torchvision's type)",
    lambda: ops.nms(torch.rand(4), torch.rand(3), 0.5), ("RuntimeError",), "boxes")
ok("nms_padded matches per-image nms", lambda: _nms_padded_check())
bad("nms_padded score NaN", lambda: ops.nms_padded(_b[None], _s[None], score_threshold=math.nan),
    VALUE, "score_threshold")
bad("nms_padded top_k 0", lambda: ops.nms_padded(_b[None], _s[None], pre_nms_top_k=0), VALUE,
    "pre_nms_top_k")
bad("nms_padded max_detections float", lambda: ops.nms_padded(_b[None], _s[None],
                                                              max_detections=2.0),
    TYPE, "max_detections")
bad("nms_padded labels shape", lambda: ops.nms_padded(_b[None], _s[None], _idx), VALUE, "labels")


def _nms_padded_check():
    det = ops.nms_padded(_b[None], _s[None], None, 0.5)
    keep = nms_torch(_b, _s, 0.5)
    assert int(det.counts[0]) == keep.numel()
    close(det.indices[0, :keep.numel()], keep)


# ------------------------------------------------------------------------------ focal loss

_x, _t = torch.randn(4, 5, generator=gen(9)), (torch.rand(4, 5, generator=gen(10)) > 0.7).float()
for red in ("none", "mean", "sum"):
    ok(f"sigmoid_focal_loss {red}", lambda r=red: close(
        ops.sigmoid_focal_loss(_x, _t, reduction=r),
        sigmoid_focal_loss_torch(_x, _t, 0.25, 2.0, r)))
ok("sigmoid_focal_loss alpha -1", lambda: close(ops.sigmoid_focal_loss(_x, _t, alpha=-1),
                                                sigmoid_focal_loss_torch(_x, _t, -1, 2.0)))
bad("sigmoid_focal_loss alpha 1.5", lambda: ops.sigmoid_focal_loss(_x, _t, alpha=1.5), VALUE,
    "alpha")
bad("sigmoid_focal_loss alpha -0.5", lambda: ops.sigmoid_focal_loss(_x, _t, alpha=-0.5), VALUE,
    "alpha")
bad("sigmoid_focal_loss alpha NaN", lambda: ops.sigmoid_focal_loss(_x, _t, alpha=math.nan),
    VALUE, "alpha")
bad("sigmoid_focal_loss gamma < 0", lambda: ops.sigmoid_focal_loss(_x, _t, gamma=-1), VALUE,
    "gamma")
bad("sigmoid_focal_loss gamma NaN", lambda: ops.sigmoid_focal_loss(_x, _t, gamma=math.nan),
    VALUE, "gamma")
bad("sigmoid_focal_loss reduction", lambda: ops.sigmoid_focal_loss(_x, _t, reduction="max"),
    VALUE, "reduction")
bad("sigmoid_focal_loss shapes", lambda: ops.sigmoid_focal_loss(_x, _t[:2]), VALUE, "targets")
bad("sigmoid_focal_loss int targets", lambda: ops.sigmoid_focal_loss(_x, _t.long()), TYPE,
    "targets")

# ------------------------------------------------------------------------------ BERT bias + GELU

_bx, _bb = torch.randn(6, 9, generator=gen(13)), torch.randn(9, generator=gen(14))
for approx in ("tanh", "none"):
    ok(f"bias_gelu {approx}", lambda a=approx: close(ops.bias_gelu(_bx, _bb, a),
                                                    bias_gelu_torch(_bx, _bb, a)))
ok("bias_gelu bf16 x, float32 bias", lambda: close(
    ops.bias_gelu(_bx.bfloat16(), _bb), bias_gelu_torch(_bx.bfloat16(), _bb)))
ok("bias_gelu zero rows", lambda: ops.bias_gelu(_bx[:0], _bb).shape == (0, 9) or None)
ok("bias_gelu non-contiguous", lambda: close(ops.bias_gelu(_bx.t(), _bx[:, 0]),
                                             bias_gelu_torch(_bx.t().contiguous(), _bx[:, 0])))
bad("bias_gelu bias length", lambda: ops.bias_gelu(_bx, _bb[:4]), VALUE, "bias")
bad("bias_gelu bias 2-D", lambda: ops.bias_gelu(_bx, _bb[None]), VALUE, "bias")
bad("bias_gelu 0-dim x", lambda: ops.bias_gelu(torch.tensor(1.0), _bb[:1]), VALUE, "x")
bad("bias_gelu int x", lambda: ops.bias_gelu(_bx.long(), _bb), TYPE, "x")
bad("bias_gelu bool bias", lambda: ops.bias_gelu(_bx, _bb > 0), TYPE, "bias")
bad("bias_gelu list x", lambda: ops.bias_gelu(_bx.tolist(), _bb), TYPE, "x")
bad("bias_gelu approximate", lambda: ops.bias_gelu(_bx, _bb, "fast"), VALUE, "approximate")
bad("bias_gelu meta x", lambda: ops.bias_gelu(_bx.to(META), _bb), VALUE, "x", "meta")
bad("bias_gelu meta bias", lambda: ops.bias_gelu(_bx, _bb.to(META)), VALUE, "bias", "meta")
bad("bias_gelu backend", lambda: ops.bias_gelu(_bx, _bb, backend="cuda"), VALUE, "backend")

# ------------------------------------------------------------------------------ BERT LayerNorm

_lx, _lr = torch.randn(3, 2, 8, generator=gen(15)), torch.randn(3, 2, 8, generator=gen(16))
_lb, _lw, _llb = (torch.randn(8, generator=gen(17 + i)) for i in range(3))


def _ln(**over):
    a = dict(x=_lx, bias=_lb, residual=_lr, weight=_lw, ln_bias=_llb, p=0.1, training=True,
             eps=1e-12)
    a.update(over)
    return ops.bias_dropout_add_layer_norm(**a)


def _ln_ref(**over):
    a = dict(x=_lx, bias=_lb, residual=_lr, weight=_lw, ln_bias=_llb, p=0.1, training=False,
             eps=1e-12)
    a.update(over)
    return bias_dropout_add_layer_norm_torch(**a)


ok("bias_dropout_add_layer_norm eval", lambda: close(_ln(training=False), _ln_ref()))
ok("bias_dropout_add_layer_norm p 0", lambda: close(_ln(p=0.0), _ln_ref()))
ok("bias_dropout_add_layer_norm p 0.5 train finite",
   lambda: torch.isfinite(_ln(p=0.5, seed=3)).all().item() or None)
ok("bias_dropout_add_layer_norm bf16", lambda: close(
    _ln(x=_lx.bfloat16(), residual=_lr.bfloat16(), training=False),
    _ln_ref(x=_lx.bfloat16(), residual=_lr.bfloat16())))
ok("bias_dropout_add_layer_norm zero rows",
   lambda: _ln(x=_lx[:0], residual=_lr[:0]).shape == (0, 2, 8) or None)
ok("bias_dropout_add_layer_norm H 1", lambda: close(
    _ln(x=_lx[..., :1], residual=_lr[..., :1], bias=_lb[:1], weight=_lw[:1], ln_bias=_llb[:1],
        training=False), _llb[:1].expand(3, 2, 1)))
bad("bias_dropout_add_layer_norm residual shape", lambda: _ln(residual=_lr[:1]), VALUE,
    "residual")
bad("bias_dropout_add_layer_norm bias length", lambda: _ln(bias=_lb[:3]), VALUE, "bias")
bad("bias_dropout_add_layer_norm weight 2-D", lambda: _ln(weight=_lw[None]), VALUE, "weight")
bad("bias_dropout_add_layer_norm int ln_bias", lambda: _ln(ln_bias=_llb.long()), TYPE,
    "ln_bias")
bad("bias_dropout_add_layer_norm 0-dim x", lambda: _ln(x=torch.tensor(1.0)), VALUE, "x")
bad("bias_dropout_add_layer_norm p 1", lambda: _ln(p=1.0), VALUE, "p")
bad("bias_dropout_add_layer_norm p < 0", lambda: _ln(p=-0.5), VALUE, "p")
bad("bias_dropout_add_layer_norm p NaN", lambda: _ln(p=math.nan), VALUE, "p")
bad("bias_dropout_add_layer_norm eps 0", lambda: _ln(eps=0.0), VALUE, "eps")
bad("bias_dropout_add_layer_norm eps NaN", lambda: _ln(eps=math.nan), VALUE, "eps")
bad("bias_dropout_add_layer_norm eps inf", lambda: _ln(eps=math.inf), VALUE, "eps")
bad("bias_dropout_add_layer_norm training int", lambda: _ln(training=1), TYPE, "training")
bad("bias_dropout_add_layer_norm seed < 0", lambda: _ln(seed=-3), VALUE, "seed")
bad("bias_dropout_add_layer_norm seed float", lambda: _ln(seed=2.0), TYPE, "seed")
bad("bias_dropout_add_layer_norm seed tensor int32", lambda: _ln(seed=torch.tensor([1],
    dtype=torch.int32)), TYPE, "seed")
bad("bias_dropout_add_layer_norm meta x", lambda: _ln(x=_lx.to(META)), VALUE, "x", "meta")
bad("bias_dropout_add_layer_norm meta residual", lambda: _ln(residual=_lr.to(META)), VALUE,
    "residual", "meta")
bad("bias_dropout_add_layer_norm meta weight", lambda: _ln(weight=_lw.to(META)), VALUE,
    "weight", "meta")

# ------------------------------------------------------------------------------ retinanet


def _retina(**kw):
    return ops.retinanet_postprocess(torch.randn(2, 12, 3, generator=gen(11)),
                                     torch.randn(2, 12, 4, generator=gen(12)), boxes(12),
                                     torch.tensor([[20, 20], [15, 18]]), [8, 4], **kw)


ok("retinanet_postprocess", lambda: _retina(detections_per_img=5).counts.shape == (2,) or None)
bad("retinanet_postprocess score NaN", lambda: _retina(score_thresh=math.nan), VALUE,
    "score_thresh")
bad("retinanet_postprocess nms NaN", lambda: _retina(nms_thresh=math.nan), VALUE, "nms_thresh")
bad("retinanet_postprocess detections 0", lambda: _retina(detections_per_img=0), VALUE,
    "detections_per_img")
bad("retinanet_postprocess level sizes", lambda: ops.retinanet_postprocess(
    torch.randn(2, 12, 3), torch.randn(2, 12, 4), boxes(12), torch.ones(2, 2), [8, 5]), VALUE,
    "level_sizes")
bad("retinanet_postprocess int logits", lambda: ops.retinanet_postprocess(
    torch.ones(2, 12, 3, dtype=torch.int64), torch.randn(2, 12, 4), boxes(12), torch.ones(2, 2)),
    TYPE, "cls_logits")

# ------------------------------------------------------------------------------ dot_interaction

_dense, _emb = torch.randn(3, 4, generator=gen(13)), torch.randn(3, 2, 4, generator=gen(14))
for backend in ("auto", "native", "torch"):
    ok(f"dot_interaction {backend}", lambda b=backend: close(
        ops.dot_interaction(_dense, _emb, backend=b),
        ops.dot_interaction(_dense, _emb, backend="torch")))
ok("dot_interaction list", lambda: close(ops.dot_interaction(_dense, list(_emb.unbind(1))),
                                         ops.dot_interaction(_dense, _emb)))
bad("dot_interaction D mismatch", lambda: ops.dot_interaction(_dense, _emb[..., :3]), VALUE,
    "embeddings")
bad("dot_interaction dtype", lambda: ops.dot_interaction(_dense, _emb.double()), TYPE,
    "embeddings")
bad("dot_interaction int dense", lambda: ops.dot_interaction(_dense.long(), _emb), TYPE, "dense")
bad("dot_interaction triton", lambda: ops.dot_interaction(_dense, _emb, backend="triton"),
    VALUE, "triton")
bad("dot_interaction meta", lambda: ops.dot_interaction(_dense.to(META), _emb.to(META)), VALUE,
    "dense")

# ------------------------------------------------------------------------------ TBE

_layout = TableLayout([5, 3], [4, 2])
_w = torch.randn(_layout.numel, generator=gen(15))
_ind = torch.tensor([0, 4, 2, 1, 0, 2])
_off = torch.tensor([0, 2, 3, 5, 6])
for backend in ("auto", "native", "torch"):
    ok(f"tbe {backend}", lambda b=backend: close(
        ops.table_batched_embedding_bag(_w, _layout, _ind, _off, backend=b),
        tbe_forward_torch(_w, _layout, _ind, _off)))
ok("tbe int32 indices, int64 offsets", lambda: close(
    ops.table_batched_embedding_bag(_w, _layout, _ind.int(), _off),
    tbe_forward_torch(_w, _layout, _ind, _off)))
bad("tbe index out of range", lambda: ops.table_batched_embedding_bag(
    _w, _layout, torch.tensor([0, 5, 2, 1, 0, 2]), _off), VALUE, "indices")
bad("tbe negative index", lambda: ops.table_batched_embedding_bag(
    _w, _layout, torch.tensor([0, -1, 2, 1, 0, 2]), _off), VALUE, "indices")
bad("tbe int64 offsets past 2^32 with int32 indices", lambda: ops.table_batched_embedding_bag(
    _w, _layout, _ind.int(), torch.tensor([0, 2, 3, 5, 6 + 2**32])), VALUE, "offsets")
bad("tbe decreasing offsets", lambda: ops.table_batched_embedding_bag(
    _w, _layout, _ind, torch.tensor([0, 3, 2, 5, 6])), VALUE, "offsets")
bad("tbe offsets count", lambda: ops.table_batched_embedding_bag(
    _w, _layout, _ind, torch.tensor([0, 2, 3, 6])), VALUE, "offsets")
bad("tbe weights size", lambda: ops.table_batched_embedding_bag(_w[:-1], _layout, _ind, _off),
    VALUE, "weights")
bad("tbe float indices", lambda: ops.table_batched_embedding_bag(_w, _layout, _ind.float(), _off),
    TYPE, "indices")
bad("tbe mode", lambda: ops.table_batched_embedding_bag(_w, _layout, _ind, _off, mode="max"),
    VALUE, "mode")
bad("tbe meta weights", lambda: ops.table_batched_embedding_bag(_w.to(META), _layout, _ind, _off),
    VALUE, "weights")
bad("tbe fused lr NaN", lambda: ops.table_batched_embedding_bag_fused(
    _w.clone().requires_grad_(), _layout, _ind, _off, lr=math.nan), VALUE, "lr")
bad("tbe fused momentum missing", lambda: ops.table_batched_embedding_bag_fused(
    _w.clone().requires_grad_(), _layout, _ind, _off, optimizer="rowwise_adagrad"), VALUE,
    "momentum")
bad("tbe_backward_update_ grad_output shape", lambda: ops.tbe_backward_update_(
    torch.zeros(3, 6), _w.clone(), _layout, _ind, _off), VALUE, "grad_output")

# ------------------------------------------------------------------------------ optimizer steps


def _lists(n_state=2, dtype=torch.float32):
    shapes = [(3,), (2, 2)]
    p = [torch.randn(s, generator=gen(20 + i)).to(dtype) for i, s in enumerate(shapes)]
    g = [torch.randn(s, generator=gen(30 + i)).to(dtype) for i, s in enumerate(shapes)]
    st = [[torch.rand(s, generator=gen(40 + i + 10 * k)) for i, s in enumerate(shapes)]
          for k in range(n_state)]
    return p, g, st


def _lamb(backend, **over):
    p, g, (m, v) = _lists()
    args = dict(lr_t=None, grad_norm=None, grad_scale=None, found_inf=None)
    args.update(over)
    ops.lamb_step(p, g, m, v, [], [torch.ones(()) for _ in p], args["lr_t"], 1e-3, 0.9, 0.999,
                  1e-6, 0.01, True, True, True, False, args["grad_norm"], 1.0,
                  args["grad_scale"], args["found_inf"], backend=backend)
    return p


def _lamb_same():
    close(_lamb("native"), _lamb("torch"), rtol=1e-5, atol=1e-6)


def _sgd(backend, **over):
    p, g, (buf,) = _lists(1)
    ops.sgd_step(p, g, buf, [], over.get("lr_t"), 0.1, 0.9, 0.0, 1e-4, False, False,
                 over.get("grad_scale"), over.get("found_inf"), backend=backend)
    return p


ok("lamb_step native = torch", _lamb_same)
ok("sgd_step native = torch", lambda: close(_sgd("native"), _sgd("torch")))
ok("lamb_step found_inf skips", lambda: close(_lamb("native", found_inf=torch.ones(())),
                                              _lists()[0]))
ok("lamb_step torch found_inf skips", lambda: close(_lamb("torch", found_inf=torch.ones(())),
                                                    _lists()[0]))
bad("lamb_step meta grad_norm", lambda: _lamb("native", grad_norm=torch.ones((), device=META)),
    VALUE, "grad_norm", "meta")
bad("lamb_step meta grad_scale", lambda: _lamb("native", grad_scale=torch.ones((), device=META)),
    VALUE, "grad_scale", "meta")
bad("sgd_step meta lr_t", lambda: _sgd("native", lr_t=torch.ones((), device=META)), VALUE,
    "lr_t", "meta")
bad("sgd_step lr_t two elements", lambda: _sgd("native", lr_t=torch.ones(2)), VALUE, "lr")
bad("lamb_step grads length", lambda: ops.lamb_step(
    *(lambda p, g, mv: (p, g[:1], mv[0], mv[1]))(*_lists()), [], [torch.ones(())] * 2, None,
    1e-3, 0.9, 0.999, 1e-6, 0.0, True, True, True, False, None, 0.0, None, None), VALUE, "grads")
ok("multi_tensor_l2norm", lambda: close(
    ops.multi_tensor_l2norm([torch.ones(3), torch.ones(2, 2)], True),
    multi_tensor_l2norm_torch([torch.ones(3), torch.ones(2, 2)], True)))
ok("multi_tensor_l2norm empty list", lambda: float(ops.multi_tensor_l2norm([])[0]) == 0 or None)
bad("multi_tensor_l2norm int tensor", lambda: ops.multi_tensor_l2norm([torch.ones(3).long()]),
    TYPE, "tensors[0]")
bad("multi_tensor_l2norm a tensor", lambda: ops.multi_tensor_l2norm(torch.ones(3)), TYPE,
    "tensors")
bad("multi_tensor_l2norm meta", lambda: ops.multi_tensor_l2norm([torch.ones(3, device=META)]),
    VALUE, "tensors[0]")

# ------------------------------------------------------------------------------ RNN-T


def _lattice(dtype=torch.float32, targets=None):
    logits = torch.randn(2, 3, 3, 5, generator=gen(50)).to(dtype)
    tg = torch.tensor([[1, 2], [3, 0]], dtype=torch.int32) if targets is None else targets
    return logits, tg, torch.tensor([3, 2], dtype=torch.int32), torch.tensor([2, 1],
                                                                             dtype=torch.int32)


def _loss_matches(dtype=torch.float32, **kw):
    a = ops.rnnt_loss(*_lattice(dtype), **kw)
    assert a.dtype == dtype
    b = ops.rnnt_loss(*(t.double() if t.is_floating_point() else t for t in _lattice()), **kw)
    close(a.double(), b, rtol=5e-3, atol=1e-4)


ok("rnnt_loss float32", _loss_matches)
ok("rnnt_loss float16 returns float16", lambda: _loss_matches(torch.float16))
ok("rnnt_loss none", lambda: _loss_matches(reduction="none"))
ok("rnnt_loss padding >= classes (torch backend)", lambda: close(
    ops.rnnt_loss(*_lattice(targets=torch.tensor([[1, 2], [3, 99]], dtype=torch.int32)),
                  backend="torch"), ops.rnnt_loss(*_lattice(), backend="torch")))
bad("rnnt_loss blank 1.5", lambda: ops.rnnt_loss(*_lattice(), blank=1.5), TYPE, "blank")
bad("rnnt_loss blank out of range", lambda: ops.rnnt_loss(*_lattice(), blank=5), VALUE, "blank")
bad("rnnt_loss clamp NaN", lambda: ops.rnnt_loss(*_lattice(), clamp=math.nan), VALUE, "clamp")
bad("rnnt_loss label == blank", lambda: ops.rnnt_loss(
    *_lattice(targets=torch.tensor([[4, 2], [3, 0]], dtype=torch.int32))), VALUE, "blank")
bad("rnnt_loss label out of range", lambda: ops.rnnt_loss(
    *_lattice(targets=torch.tensor([[7, 2], [3, 0]], dtype=torch.int32))), VALUE, "targets")
bad("rnnt_loss logit_lengths 0", lambda: ops.rnnt_loss(
    *_lattice()[:2], torch.tensor([0, 2], dtype=torch.int32), _lattice()[3]), VALUE,
    "logit_lengths")
bad("rnnt_loss target_lengths too long", lambda: ops.rnnt_loss(
    *_lattice()[:3], torch.tensor([3, 1], dtype=torch.int32)), VALUE, "target_lengths")
bad("rnnt_loss float targets", lambda: ops.rnnt_loss(
    _lattice()[0], _lattice()[1].float(), *_lattice()[2:]), TYPE, "targets")
bad("rnnt_loss 3-D logits", lambda: ops.rnnt_loss(_lattice()[0][0], *_lattice()[1:]), VALUE,
    "logits")
bad("rnnt_loss reduction", lambda: ops.rnnt_loss(*_lattice(), reduction="avg"), VALUE,
    "reduction")
bad("rnnt_loss meta logits", lambda: ops.rnnt_loss(_lattice()[0].to(META), *_lattice()[1:]),
    VALUE, "logits")

_f, _g = torch.randn(2, 3, 4, generator=gen(60)), torch.randn(2, 3, 4, generator=gen(61))
_tl, _ul = torch.tensor([3, 2]), torch.tensor([2, 1])
_wt = torch.randn(5, 4, generator=gen(62))
ok("transducer_joint packed = dense", lambda: _joint_check())
bad("transducer_joint packed_rows wrong", lambda: ops.transducer_joint(_f, _g, _tl, _ul,
                                                                      packed_rows=99),
    VALUE, "packed_rows")
bad("transducer_joint packed_rows negative", lambda: ops.transducer_joint(_f, _g, _tl, _ul,
                                                                         packed_rows=-1),
    VALUE, "packed_rows")
bad("transducer_joint bias shape", lambda: ops.transducer_joint(_f, _g, _tl, _ul, _wt,
                                                               torch.zeros(4)),
    VALUE, "bias")
bad("transducer_joint weight dtype", lambda: ops.transducer_joint(_f, _g, _tl, _ul, _wt.double()),
    TYPE, "weight")
bad("transducer_joint meta weight", lambda: ops.transducer_joint(_f, _g, _tl, _ul,
                                                                _wt.to(META)),
    VALUE, "weight")
bad("transducer_joint dropout NaN", lambda: ops.transducer_joint(_f, _g, _tl, _ul,
                                                                dropout=math.nan),
    VALUE, "dropout")
bad("transducer_joint f_lengths > T", lambda: ops.transducer_joint(_f, _g, torch.tensor([4, 2]),
                                                                  _ul),
    VALUE, "f_lengths")


def _joint_check():
    packed, off = ops.transducer_joint(_f, _g, _tl, _ul, backend="torch")
    dense, _ = ops.transducer_joint(_f, _g, _tl, _ul, pack_output=False, backend="torch")
    assert packed.shape[0] == int(off[-1])
    close(packed[:9], dense[0, :3, :3].reshape(9, 4))


def _joint_loss(**kw):
    args = dict(f=_f, g=_g, weight=_wt, bias=torch.zeros(5),
                targets=torch.tensor([[1, 2], [3, 0]]), f_lengths=_tl, target_lengths=_ul)
    args.update(kw)
    return ops.transducer_joint_loss(**args)


def _joint_loss_check():
    logits = torch.nn.functional.linear(torch.relu(_f[:, :, None] + _g[:, None]), _wt)
    close(_joint_loss(), ops.rnnt_loss(logits, torch.tensor([[1, 2], [3, 0]]), _tl, _ul))


ok("transducer_joint_loss = joint + rnnt_loss", _joint_loss_check)
bad("transducer_joint_loss bias dtype", lambda: _joint_loss(bias=torch.zeros(5).double()), TYPE,
    "bias")
bad("transducer_joint_loss bias shape", lambda: _joint_loss(bias=torch.zeros(4)), VALUE, "bias")
bad("transducer_joint_loss weight width", lambda: _joint_loss(weight=torch.zeros(5, 3)), VALUE,
    "weight")
bad("transducer_joint_loss meta weight", lambda: _joint_loss(weight=_wt.to(META)), VALUE,
    "weight")
bad("transducer_joint_loss blank 1.5", lambda: _joint_loss(blank=1.5), TYPE, "blank")
bad("transducer_joint_loss group_bytes 0", lambda: _joint_loss(group_bytes=0), VALUE,
    "group_bytes")
bad("transducer_joint_loss fp32_gemm", lambda: _joint_loss(fp32_gemm="tf64"), VALUE, "fp32_gemm")
ok("rnnt_loss_packed = rnnt_loss", lambda: _packed_check())


def _packed_check():
    logits, targets, t_len, u_len = _lattice()
    packed = torch.cat([logits[0].reshape(-1, 5), logits[1, :2, :2].reshape(-1, 5)])
    close(ops.rnnt_loss_packed(packed, targets, t_len, u_len, backend="torch"),
          ops.rnnt_loss(logits, targets, t_len, u_len, backend="torch"))


bad("rnnt_loss_packed rows", lambda: ops.rnnt_loss_packed(torch.zeros(10, 5), *_lattice()[1:]),
    VALUE, "rows")
bad("rnnt_loss_packed logit_lengths 0", lambda: ops.rnnt_loss_packed(
    torch.zeros(3, 5), _lattice()[1], torch.tensor([0, 1], dtype=torch.int32), _lattice()[3]),
    VALUE, "logit_lengths")

# ------------------------------------------------------------------------------ LSTM

_gx, _gh, _c = (torch.randn(3, 8, generator=gen(70)), torch.randn(3, 8, generator=gen(71)),
                torch.randn(3, 2, generator=gen(72)))
ok("lstm_cell = nn.LSTMCell math", lambda: _cell_check())
bad("lstm_cell 4H", lambda: ops.lstm_cell(_gx[:, :7], _gh[:, :7], _c), VALUE, "gates_x")
bad("lstm_cell c_prev shape", lambda: ops.lstm_cell(_gx, _gh, _c[:2]), VALUE, "c_prev")
bad("lstm_cell int", lambda: ops.lstm_cell(_gx.long(), _gh, _c), TYPE, "gates_x")
bad("lstm_cell meta", lambda: ops.lstm_cell(_gx, _gh, _c.to(META)), VALUE, "c_prev")


def _cell_check():
    h, c = ops.lstm_cell(_gx, _gh, _c)
    i, f, g, o = (_gx + _gh).chunk(4, 1)
    c_ref = torch.sigmoid(f) * _c + torch.sigmoid(i) * torch.tanh(g)
    close(c, c_ref)
    close(h, torch.sigmoid(o) * torch.tanh(c_ref))


def _layer_args(bsz=3, **over):
    a = dict(x=torch.randn(4, bsz, 5, generator=gen(80)), h0=torch.zeros(bsz, 2),
             c0=torch.zeros(bsz, 2), w_ih=torch.randn(8, 5, generator=gen(81)),
             w_hh=torch.randn(8, 2, generator=gen(82)), b_ih=torch.zeros(8), b_hh=torch.zeros(8))
    a.update(over)
    return a


def _layer_check(bsz=3):
    a = _layer_args(bsz)
    y, h, c = ops.lstm_layer(**a)
    ref = torch.nn.LSTM(5, 2)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(a["w_ih"])
        ref.weight_hh_l0.copy_(a["w_hh"])
        ref.bias_ih_l0.zero_()
        ref.bias_hh_l0.zero_()
        y_ref, (h_ref, c_ref) = ref(a["x"], (a["h0"][None], a["c0"][None]))
    close(y, y_ref)
    close(c, c_ref[0])


ok("lstm_layer = nn.LSTM", _layer_check)
ok("lstm_layer batch 0", lambda: _layer_check(0))
bad("lstm_layer T 0", lambda: ops.lstm_layer(**_layer_args(x=torch.zeros(0, 3, 5))), VALUE, "x")
bad("lstm_layer h0 batch", lambda: ops.lstm_layer(**_layer_args(h0=torch.zeros(2, 2))), VALUE,
    "h0")
bad("lstm_layer w_ih shape", lambda: ops.lstm_layer(**_layer_args(w_ih=torch.zeros(8, 4))),
    VALUE, "w_ih")
bad("lstm_layer one bias", lambda: ops.lstm_layer(**_layer_args(b_hh=None)), VALUE, "b_ih")
bad("lstm_layer dtype", lambda: ops.lstm_layer(**_layer_args(c0=torch.zeros(3, 2).double())),
    TYPE, "c0")


def _net(classes=4, hid=3, dtype=torch.float32, **over):
    parts = dict(embedding=torch.randn(classes - 1, 2, generator=gen(90)),
                 lstm=[(torch.randn(4 * hid, 2, generator=gen(91)),
                        torch.randn(4 * hid, hid, generator=gen(92)), None, None)],
                 pred_weight=torch.randn(5, hid, generator=gen(93)), pred_bias=None,
                 joint_weight=torch.randn(classes, 5, generator=gen(94)), joint_bias=None)
    parts.update(over)
    return ops.PredictionNet(**parts)


_enc = torch.randn(2, 4, 5, generator=gen(95))
_elen = torch.tensor([4, 2])
ok("rnnt_greedy_decode", lambda: _greedy_check())
bad("rnnt_greedy_decode blank 1.5", lambda: ops.rnnt_greedy_decode(_enc, _elen, _net(), 1.5),
    TYPE, "blank")
bad("rnnt_greedy_decode meta weight", lambda: ops.rnnt_greedy_decode(
    _enc, _elen, _net(joint_weight=torch.zeros(4, 5, device=META))), VALUE, "joint_weight")
bad("rnnt_greedy_decode meta lstm", lambda: ops.rnnt_greedy_decode(
    _enc, _elen, _net(lstm=[(torch.zeros(12, 2, device=META), torch.zeros(12, 3), None, None)])),
    VALUE, "lstm[0][0]")
bad("rnnt_greedy_decode lengths", lambda: ops.rnnt_greedy_decode(_enc, torch.tensor([5, 2]),
                                                                 _net()), VALUE, "f_lengths")
bad("rnnt_greedy_decode max_symbols 0", lambda: ops.rnnt_greedy_decode(_enc, _elen, _net(),
                                                                       max_symbols_per_step=0),
    VALUE, "max_symbols_per_step")
bad("rnnt_greedy_decode embedding rows", lambda: ops.rnnt_greedy_decode(
    _enc, _elen, _net(embedding=torch.zeros(4, 2))), VALUE, "embedding")


def _greedy_check():
    out = ops.rnnt_greedy_decode(_enc, _elen, _net(), max_symbols_per_step=3)
    assert len(out) == 2 and all(0 <= k < 3 for seq in out for k in seq)
    assert len(out[1]) <= 2 * 3
    assert out == ops.rnnt_greedy_decode(_enc, _elen, _net(), max_symbols_per_step=3,
                                         backend="torch")
ok("transducer_joint_loss out_dtype float32 of a float64 run",
   lambda: _joint_loss(f=_f.double(), g=_g.double(), weight=_wt.double(),
                       bias=torch.zeros(5).double(), out_dtype=torch.float32).dtype
   == torch.float32 or None)
bad("transducer_joint_loss out_dtype int", lambda: _joint_loss(out_dtype=torch.int32), TYPE,
    "out_dtype")
