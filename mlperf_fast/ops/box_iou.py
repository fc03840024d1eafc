"""IoU matrix of two sets of boxes: torchvision.ops.box_iou, one fused pass, optionally batched."""
from __future__ import annotations

import torch

from mlperf_fast.ops._library import choose_triton_or_torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_boxes(t: object, name: str, dims: tuple[int, ...] = (2, 3)) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    if t.layout != torch.strided:
        raise ValueError(f"{name} is a {t.layout} tensor; only dense tensors are supported")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} has dtype {t.dtype}; expected a float dtype")
    if t.dim() not in dims or t.shape[-1] != 4:
        want = " or ".join({2: "(N, 4)", 3: "(B, N, 4)"}[d] for d in dims)
        raise ValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")
    return t


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """torchvision.ops.box_iou.

    Args:
        boxes1: (N, 4) or (B, N, 4) (x1, y1, x2, y2) boxes, a float dtype.
        boxes2: (M, 4) or (B, M, 4), same rank, dtype and device.
        backend: "auto" (Triton on a GPU, else torch), "triton" or "torch".

    Returns:
        (N, M) or (B, N, M) IoUs in the boxes' dtype (computed in float32, float64 for float64;
        bit-identical to torchvision's float32 and float64 results).
    """
    check_boxes(boxes1, "boxes1")
    check_boxes(boxes2, "boxes2")
    if boxes2.dim() != boxes1.dim() or (boxes1.dim() == 3 and boxes1.shape[0] != boxes2.shape[0]):
        raise ValueError(f"boxes2 has shape {tuple(boxes2.shape)} but boxes1 has shape "
                         f"{tuple(boxes1.shape)}: same rank and batch size")
    if boxes2.dtype != boxes1.dtype:
        raise TypeError(f"boxes2 has dtype {boxes2.dtype} but boxes1 has {boxes1.dtype}")
    if boxes2.device != boxes1.device:
        raise ValueError(f"boxes2 is on {boxes2.device} but boxes1 is on {boxes1.device}")
    chosen = choose_triton_or_torch("box_iou", boxes1.device, backend)
    single = boxes1.dim() == 2
    a, b = (boxes1[None], boxes2[None]) if single else (boxes1, boxes2)
    if chosen == "torch":
        out = box_iou_torch(a, b)
    else:
        from mlperf_fast.kernels import box_iou as kernel

        out = kernel.box_iou(a, b)
    return out[0] if single else out


def box_iou_torch(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """torchvision's expression in PyTorch, on (..., N, 4) x (..., M, 4), in float32 for float16
    and bfloat16."""
    dtype = boxes1.dtype
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    a, b = boxes1.to(acc), boxes2.to(acc)
    area1 = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area2 = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    lt = torch.max(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.min(a[..., :, None, 2:], b[..., None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[..., :, None] + area2[..., None, :] - inter
    return (inter / union).to(dtype)
