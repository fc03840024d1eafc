"""IoU matrix of two sets of boxes: torchvision.ops.box_iou, one fused pass, optionally batched."""
from __future__ import annotations

import torch

from mlperf_fast.ops import _checks
from mlperf_fast.ops._library import custom_op, register_op


def check_boxes(t: object, name: str, dims: tuple[int, ...] = (2, 3),
                integer_ok: bool = False) -> torch.Tensor:
    """(N, 4) or (B, N, 4) boxes of a float dtype (or an integer one, if ``integer_ok``)."""
    t = _checks.tensor(t, name)
    if t.dtype not in _checks.FLOAT_DTYPES and not (
            integer_ok and not t.dtype.is_floating_point and not t.dtype.is_complex
            and t.dtype != torch.bool):
        raise _checks.ArgumentTypeError(
            f"{name} has dtype {t.dtype}; expected a float dtype"
            + (" or an integer one" if integer_ok else ""))
    if t.dim() not in dims or t.shape[-1] != 4:
        want = " or ".join({2: "(N, 4)", 3: "(B, N, 4)"}[d] for d in dims)
        raise _checks.ArgumentValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")
    return t


BOX_FORMATS = ("xyxy", "xywh", "cxcywh")


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, fmt: str = "xyxy", *,
            backend: str = "auto") -> torch.Tensor:
    """torchvision.ops.box_iou.

    Args:
        boxes1: (N, 4) or (B, N, 4) boxes, a float dtype, or an integer dtype (as torchvision:
            areas and intersections in int64, the ratio in float32).
        boxes2: (M, 4) or (B, M, 4), same rank, dtype and device.
        fmt: the boxes' format, torchvision's axis-aligned ones: "xyxy" (x1, y1, x2, y2),
            "xywh" (x1, y1, width, height) or "cxcywh" (center x, center y, width, height);
            the last two are computed by the torch implementation, in torchvision's expression.
            torchvision's rotated formats are not supported (ValueError).
        backend: "auto" (Triton on a GPU, else torch), "triton" or "torch".

    Returns:
        (N, M) or (B, N, M) IoUs in the boxes' dtype, float32 for integer boxes (computed in
        float32, float64 for float64; bit-identical to torchvision's float32 and float64 results).
    """
    if fmt not in BOX_FORMATS:
        raise _checks.ArgumentValueError(
            f"fmt must be one of {BOX_FORMATS} (axis-aligned boxes), got {fmt!r}")
    check_boxes(boxes1, "boxes1", integer_ok=True)
    check_boxes(boxes2, "boxes2", integer_ok=True)
    if boxes2.dim() != boxes1.dim() or (boxes1.dim() == 3 and boxes1.shape[0] != boxes2.shape[0]):
        raise _checks.ArgumentValueError(
            f"boxes2 has shape {tuple(boxes2.shape)} but boxes1 has shape "
            f"{tuple(boxes1.shape)}: same rank and batch size")
    _checks.same_dtype(boxes2, "boxes2", boxes1, "boxes1")
    _checks.same_device(boxes2, "boxes2", boxes1, "boxes1")
    single = boxes1.dim() == 2
    a, b = (boxes1[None], boxes2[None]) if single else (boxes1, boxes2)
    if not boxes1.dtype.is_floating_point or fmt != "xyxy":
        # The Triton kernel reads float corner boxes; integer ones take torchvision's exact
        # integer path, and the other formats torchvision's expression for them.
        BOX_IOU.choose(boxes1.device, backend)
        out = box_iou_torch(a, b, fmt)
    else:
        out = BOX_IOU(boxes1.device, backend, a, b)
    return out[0] if single else out


def _corners_and_area(t: torch.Tensor, fmt: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(low corner, high corner, area) of (..., N, 4) boxes, as torchvision forms them per format
    (the area of a box with a size is width * height, not a difference of corners)."""
    if fmt == "xyxy":
        lo, hi = t[..., :2], t[..., 2:]
        return lo, hi, (t[..., 2] - t[..., 0]) * (t[..., 3] - t[..., 1])
    size = t[..., 2:]
    if fmt == "xywh":
        lo, hi = t[..., :2], t[..., :2] + size
    else:
        lo, hi = t[..., :2] - size / 2, t[..., :2] + size / 2
    return lo, hi, t[..., 2] * t[..., 3]


def box_iou_torch(boxes1: torch.Tensor, boxes2: torch.Tensor, fmt: str = "xyxy") -> torch.Tensor:
    """torchvision's expression in PyTorch, on (..., N, 4) x (..., M, 4) boxes of format ``fmt``,
    in float32 for float16 and bfloat16, in int64 then float32 for integer boxes."""
    dtype = boxes1.dtype
    if dtype.is_floating_point:
        acc = _checks.acc_dtype(dtype)
    else:
        acc, dtype = torch.int64, torch.float32
    lo1, hi1, area1 = _corners_and_area(boxes1.to(acc), fmt)
    lo2, hi2, area2 = _corners_and_area(boxes2.to(acc), fmt)
    lt = torch.max(lo1[..., :, None, :], lo2[..., None, :, :])
    rb = torch.min(hi1[..., :, None, :], hi2[..., None, :, :])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[..., :, None] + area2[..., None, :] - inter
    return (inter / union).to(dtype)


def _box_iou_triton(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    from mlperf_fast.kernels import box_iou as kernel

    return kernel.box_iou(boxes1, boxes2)


box_iou_triton = custom_op("box_iou_triton", "(Tensor boxes1, Tensor boxes2) -> Tensor",
                           _box_iou_triton)
BOX_IOU = register_op("box_iou", triton=box_iou_triton, torch_fn=box_iou_torch)
