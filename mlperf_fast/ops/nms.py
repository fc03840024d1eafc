"""Non-maximum suppression: drop-ins for torchvision.ops.nms and batched_nms, and a padded form
that runs a whole batch of images at once.

``nms`` and ``batched_nms`` keep the same boxes as torchvision, in the same order: the scores are
sorted stably by descending score, as torchvision's kernels do (equal scores in index order; NaN
first, where torch's sort puts it) and the IoU is torchvision's expression on that device (compared with the threshold
in double on the CPU, as a float on CUDA). ``batched_nms`` only lets boxes of equal ``idxs``
suppress each other, with the exact IoU of the boxes (torchvision shifts the boxes of each class
by a class offset below 25,000 boxes, which can round coordinates; it never changes a result
unless an IoU lies within that rounding of the threshold). The Triton kernels follow the rules
of the tensors' device too (CUDA's on a GPU, the CPU's under the interpreter).

Behaviour at the edges, on every backend:
  * boxes with x2 < x1 or y2 < y1 have a negative area and take part in the IoU formula as they
    are, as in torchvision (a zero-area box has IoU 0 with everything, so it is never suppressed
    by, and never suppresses, another box unless the threshold is below 0);
  * NaN scores sort first (torch's sort order) in ``nms``/``batched_nms``; ``nms_padded`` never
    keeps a box whose score is NaN or not above ``score_threshold``;
  * empty inputs give empty results; mismatched lengths, wrong ranks, dtypes or devices raise
    ValueError or TypeError naming the argument, before anything runs.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from mlperf_fast.ops import _checks
from mlperf_fast.ops._library import custom_op, register_op

# Boxes per image up to which the Triton kernel beats the CUDA one for class-agnostic NMS (H100,
# benchmarks/results: 1,000 boxes 0.27 against 0.39 ms, 5,000 0.67 against 1.07 ms, 20,000 3.65
# against 3.53 ms). For per-class NMS Triton is faster at every measured size (1,000 to 20,000).
NMS_TRITON_MAX_BOXES = 12_000


class Detections(NamedTuple):
    """Padded per-image detections, K slots per image, the first ``counts[b]`` filled in order of
    descending score. Empty slots hold box 0, score 0, label -1 and index -1."""

    boxes: torch.Tensor    # (B, K, 4), the boxes' dtype
    scores: torch.Tensor   # (B, K), the scores' dtype
    labels: torch.Tensor   # (B, K) int64 (0 for class-agnostic NMS)
    indices: torch.Tensor  # (B, K) int64, position of the box in its image's N inputs
    counts: torch.Tensor   # (B,) int64


# ---------------------------------------------------------------------------------------------
# Argument checks


def _check_threshold(value: object, name: str) -> float:
    return _checks.real(value, name)


def _check_boxes_scores(boxes: object, scores: object, batched: bool) -> None:
    boxes = _checks.float_tensor(boxes, "boxes")
    scores = _checks.float_tensor(scores, "scores")
    lead = 2 if batched else 1
    want = "(B, N, 4)" if batched else "(N, 4)"
    if boxes.dim() != lead + 1 or boxes.shape[-1] != 4:
        raise _checks.ArgumentValueError(f"boxes must have shape {want}, got {tuple(boxes.shape)}")
    if scores.dim() != lead:
        raise _checks.ArgumentValueError(f"scores must have shape {want[:-4] + ')'}, got "
                                         f"{tuple(scores.shape)}")
    if scores.shape != boxes.shape[:lead]:
        raise _checks.ArgumentValueError(f"scores has shape {tuple(scores.shape)} but boxes has "
                                         f"shape {tuple(boxes.shape)}: one score per box")
    _checks.same_device(scores, "scores", boxes, "boxes")


def _check_labels(labels: object, scores: torch.Tensor, name: str) -> None:
    labels = _checks.integer_tensor(labels, name)
    if labels.shape != scores.shape:
        raise _checks.ArgumentValueError(f"{name} has shape {tuple(labels.shape)} but scores has "
                                         f"shape {tuple(scores.shape)}: one label per box")
    _checks.same_device(labels, name, scores, "scores")


# ---------------------------------------------------------------------------------------------
# Public ops


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, *,
        backend: str = "auto") -> torch.Tensor:
    """torchvision.ops.nms: greedy NMS over one set of boxes.

    Args:
        boxes: (N, 4) float tensor of (x1, y1, x2, y2) boxes (float32, float64, float16 or
            bfloat16; any strides).
        scores: (N,) float tensor, on the boxes' device.
        iou_threshold: a box is discarded when its IoU with a kept, higher-scoring box is
            greater than this.
        backend: "auto", "native", "triton" or "torch"; see ``mlperf_fast.ops._library``.

    Returns:
        (K,) int64 tensor of the kept boxes' indices, by decreasing score, on the boxes' device.
    """
    _check_boxes_scores(boxes, scores, batched=False)
    iou_threshold = _check_threshold(iou_threshold, "iou_threshold")
    return NMS(boxes.device, backend, boxes, scores, iou_threshold, size=boxes.shape[0])


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                iou_threshold: float, *, backend: str = "auto") -> torch.Tensor:
    """torchvision.ops.batched_nms: NMS within each category, never across.

    Args:
        boxes: (N, 4) float tensor of (x1, y1, x2, y2) boxes.
        scores: (N,) float tensor.
        idxs: (N,) integer tensor: the category of each box.
        iou_threshold: as in :func:`nms`.
        backend: "auto", "native", "triton" or "torch".

    Returns:
        (K,) int64 tensor of the kept boxes' indices, by decreasing score. As torchvision's,
        an empty ``boxes`` gives an empty result whatever the other arguments are.
    """
    if isinstance(boxes, torch.Tensor) and boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    _check_boxes_scores(boxes, scores, batched=False)
    _check_labels(idxs, scores, "idxs")
    iou_threshold = _check_threshold(iou_threshold, "iou_threshold")
    return BATCHED_NMS(boxes.device, backend, boxes, scores, idxs, iou_threshold,
                       size=boxes.shape[0])


def nms_padded(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor | None = None,
               iou_threshold: float = 0.5, score_threshold: float = -math.inf,
               pre_nms_top_k: int | None = None, max_detections: int | None = None, *,
               backend: str = "auto") -> Detections:
    """NMS over a batch of images at once, with fixed-size (padded) results.

    For each image: the candidates are the boxes whose score is greater than ``score_threshold``
    (a NaN score never is); of those, the ``pre_nms_top_k`` highest-scoring (ties: the lower
    index first); greedy NMS over them by descending score, within each label if ``labels`` is
    given, else across all boxes; the first ``max_detections`` kept boxes are returned. This is
    what a per-image loop of filter, top-k, (batched_)nms and truncation gives, in one call with
    no per-image launches and no host synchronization.

    Args:
        boxes: (B, N, 4) float tensor of (x1, y1, x2, y2) boxes.
        scores: (B, N) float tensor.
        labels: (B, N) integer tensor of categories, or None for class-agnostic NMS.
        iou_threshold: as in :func:`nms`.
        score_threshold: candidates must score strictly above this.
        pre_nms_top_k: candidates per image before NMS; None: all.
        max_detections: kept boxes per image; None: no limit.
        backend: "auto", "native", "triton" or "torch".

    Returns:
        :class:`Detections` with K = min(max_detections, pre_nms_top_k, N) slots per image.
    """
    _check_boxes_scores(boxes, scores, batched=True)
    if labels is not None:
        _check_labels(labels, scores, "labels")
    iou_threshold = _check_threshold(iou_threshold, "iou_threshold")
    score_threshold = _check_threshold(score_threshold, "score_threshold")
    top_k = _check_count(pre_nms_top_k, "pre_nms_top_k")
    max_det = _check_count(max_detections, "max_detections")
    return Detections(*NMS_PADDED(boxes.device, backend, boxes, scores, labels, iou_threshold,
                                  score_threshold, top_k, max_det))


def _slots(n: int, pre_nms_top_k: int, max_detections: int) -> tuple[int, int]:
    """(candidates M, slots K) per image of N boxes; 0 means no limit."""
    m = min(pre_nms_top_k, n) if pre_nms_top_k > 0 else n
    return m, (min(max_detections, m) if max_detections > 0 else m)


def _candidates(scores: torch.Tensor, score_threshold: float, m: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's candidates, as the native host code selects them: (order (B, M) int64, the
    box indices by descending score with scores not above the threshold (and NaN) last, ties by
    lower index; n_valid (B,) int64, how many of them are candidates)."""
    valid = scores > score_threshold
    masked = scores.masked_fill(~valid, -math.inf)
    order = torch.sort(masked, dim=1, descending=True, stable=True)[1][:, :m]
    return order, valid.sum(1).clamp_max(m)


def _nms_triton(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor | None,
                iou_threshold: float) -> torch.Tensor:
    from mlperf_fast.kernels import nms as kernel

    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, dim=0, descending=True, stable=True)[1]
    index, counts = kernel.nms_keep(boxes[None], order[None], None if idxs is None else idxs[None],
                                    iou_threshold)
    return index[0, :int(counts[0])].clone()  # the one sync: the result's length


def _nms_padded_triton(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor | None,
                       iou_threshold: float, score_threshold: float, pre_nms_top_k: int,
                       max_detections: int) -> tuple[torch.Tensor, ...]:
    from mlperf_fast.kernels import nms as kernel

    m, k = _slots(scores.shape[1], pre_nms_top_k, max_detections)
    order, n_valid = _candidates(scores, score_threshold, m)
    return tuple(kernel.nms_padded(boxes, scores, labels, order, n_valid, iou_threshold, k))


def _check_count(value: object, name: str) -> int:
    """None means no limit (0 for the kernels); otherwise a positive int."""
    if value is None:
        return 0
    return _checks.integer(value, name, lo=1)


# ---------------------------------------------------------------------------------------------
# Pure-PyTorch implementations: the references the kernels are tested against, and the backend
# where no kernel is built.


def suppression_matrix(boxes: torch.Tensor, iou_threshold: float,
                       rules: str | None = None) -> torch.Tensor:
    """(N, N) bool: [i, j] when box i would suppress box j, i.e. IoU(i, j) > threshold, in the
    expression and precision of the device's kernel (torchvision's on that device; ``rules``
    "cpu" or "cuda" picks one whatever the device)."""
    cuda = (rules or boxes.device.type) == "cuda"
    acc = torch.float64 if boxes.dtype == torch.float64 else torch.float32
    # On CUDA, float16/bfloat16 overlaps and heights are rounded to the boxes' dtype before the
    # float32 products (torchvision's CUDA expression); the CPU converts the corners first.
    low = cuda and boxes.dtype in (torch.float16, torch.bfloat16)
    b = boxes if low else boxes.to(acc)
    x1, y1, x2, y2 = b.unbind(1)
    area = (x2.to(acc) - x1.to(acc)) * (y2 - y1).to(acc)
    w = (torch.minimum(x2[:, None], x2[None, :]) - torch.maximum(x1[:, None], x1[None, :])).clamp_min(0)
    h = (torch.minimum(y2[:, None], y2[None, :]) - torch.maximum(y1[:, None], y1[None, :])).clamp_min(0)
    inter = w.to(acc) * h.to(acc)
    iou = inter / (area[:, None] + area[None, :] - inter)
    if cuda:
        return iou > torch.tensor(iou_threshold, dtype=torch.float32).to(acc).item()
    return iou.double() > iou_threshold


def _greedy(over: torch.Tensor, n: int, max_out: int) -> list[int]:
    """Positions kept by the greedy pass over [0, n) of an (n, n) suppression matrix whose rows
    are in score order."""
    over = over[:n, :n].triu(1).cpu().numpy()
    removed = np.zeros(n, dtype=bool)
    keep: list[int] = []
    for i in range(n):
        if removed[i]:
            continue
        keep.append(i)
        if len(keep) == max_out:
            break
        removed |= over[i]
    return keep


def _keep_sorted(sorted_boxes: torch.Tensor, sorted_labels: torch.Tensor | None, n: int,
                 iou_threshold: float, max_out: int) -> list[int]:
    if n == 0 or max_out == 0:
        return []
    over = suppression_matrix(sorted_boxes[:n], iou_threshold)
    if sorted_labels is not None:
        over &= sorted_labels[:n, None] == sorted_labels[None, :n]
    return _greedy(over, n, max_out)


def nms_torch(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """The pure-PyTorch :func:`nms`: same contract."""
    return batched_nms_torch(boxes, scores, None, iou_threshold)


def batched_nms_torch(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor | None,
                      iou_threshold: float) -> torch.Tensor:
    """The pure-PyTorch :func:`batched_nms` (``idxs`` None: :func:`nms`): same contract."""
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, dim=0, descending=True, stable=True)[1]
    labels = None if idxs is None else idxs.to(torch.int64)[order]
    pos = _keep_sorted(boxes[order], labels, n, iou_threshold, n)
    return order[torch.tensor(pos, dtype=torch.int64, device=boxes.device)]


def nms_padded_torch(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor | None,
                     iou_threshold: float, score_threshold: float, pre_nms_top_k: int = 0,
                     max_detections: int = 0) -> Detections:
    """The pure-PyTorch :func:`nms_padded`, image by image (0 for no limit): same contract."""
    batch, n = scores.shape
    m, k = _slots(n, pre_nms_top_k, max_detections)
    orders, n_valids = _candidates(scores, score_threshold, m)
    dev = boxes.device
    out = Detections(boxes.new_zeros(batch, k, 4), scores.new_zeros(batch, k),
                     torch.full((batch, k), -1, dtype=torch.int64, device=dev),
                     torch.full((batch, k), -1, dtype=torch.int64, device=dev),
                     torch.zeros(batch, dtype=torch.int64, device=dev))
    for b in range(batch):
        order, n_valid = orders[b], int(n_valids[b])
        lab = None if labels is None else labels[b].to(torch.int64)[order]
        pos = torch.tensor(_keep_sorted(boxes[b][order], lab, n_valid, iou_threshold, k),
                           dtype=torch.int64, device=dev)
        c = pos.numel()
        idx = order[pos]
        out.boxes[b, :c] = boxes[b][idx]
        out.scores[b, :c] = scores[b][idx]
        out.labels[b, :c] = 0 if labels is None else labels[b][idx].to(torch.int64)
        out.indices[b, :c] = idx
        out.counts[b] = c
    return out


# ---------------------------------------------------------------------------------------------
# The backend table


def _nms_order(device_type: str, n: int):
    if device_type == "cuda" and n <= NMS_TRITON_MAX_BOXES:
        return ("triton", "native", "torch")
    return ("native", "triton", "torch")


def _batched_nms_order(device_type: str, n: int):
    return ("triton", "native", "torch") if device_type == "cuda" else ("native", "torch")


nms_triton = custom_op(
    "nms_triton", "(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor",
    lambda boxes, scores, iou_threshold: _nms_triton(boxes, scores, None, iou_threshold))
batched_nms_triton = custom_op(
    "batched_nms_triton",
    "(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold) -> Tensor", _nms_triton)
nms_padded_triton = custom_op(
    "nms_padded_triton",
    "(Tensor boxes, Tensor scores, Tensor? labels, float iou_threshold, float score_threshold, "
    "int pre_nms_top_k, int max_detections) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
    _nms_padded_triton)
NMS = register_op("nms", native="nms", triton=nms_triton, torch_fn=nms_torch, order=_nms_order)
BATCHED_NMS = register_op("batched_nms", native="batched_nms", triton=batched_nms_triton,
                          torch_fn=batched_nms_torch, order=_batched_nms_order)
NMS_PADDED = register_op("nms_padded", native="nms_padded", triton=nms_padded_triton,
                         torch_fn=nms_padded_torch)
