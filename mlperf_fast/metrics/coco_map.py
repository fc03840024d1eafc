"""COCO box mAP: pycocotools' COCOeval (iouType "bbox"), the evaluator both detection references
score with (mlcommons/training single_stage_detector/ssd/coco_eval.py for RetinaNet; the SSD
reference's train.py ``coco_eval``), fed in memory from a ``CocoSet`` and the model's
detections, without temporary files.

The ground truth is the set as read (``coco.read_coco``): its boxes (XYXY back to the json's
XYWH), the json's areas (COCOeval's small / medium / large ranges use the annotation's area, the
mask's in COCO) and crowd flags. ``from_file=True`` evaluates against the annotation file itself
instead, exactly as the references load it (the two differ only where the reader clipped an
overhanging box or dropped one of zero size).

Backends:
- "vectorized" (what "auto" takes): COCOeval's algorithm on flat arrays, no object per box. Its
  steps are COCOeval's, value for value: pycocotools' C ``bbIou`` expression in float64; per
  (image, category) the detections by score, ties in input order, the first 100 kept; the
  greedy match for every IoU threshold and area range at once, one detection rank at a time (a
  rank's detections are of different (image, category) pairs, so they never compete for a
  box); precision and recall from cumulative counts in accumulate's order (per category by
  score, ties by image, then rank). Only a detection that overlaps a ground-truth box of its
  class by IoU >= 0.5 can ever match; every other one is a false positive wherever its area is
  in range, so those are counted, not matched. The precision envelope is read at the true
  positives, where its maxima are. The tests compare COCOeval's precision and recall arrays
  and all twelve numbers with pycocotools' to 1e-12 (equal to the bit where measured), on
  random sets with crowds, every area range, tied scores and IoUs, duplicate boxes and more than
  100 detections of a class in an image.
- "pycocotools": COCOeval itself, fed one dict per box (the oracle).
- "faster_coco_eval": its C++ port of the same algorithm, fed the same dicts.

RetinaNet's validation set (24,781 images x 300 detections, 264 classes: 7.4 million boxes)
took 76 s through faster-coco-eval on a 2-core CPU and takes 2.5-6 s vectorized; COCO's
(5,000 x 200, 80 classes) 6 s and 0.4 s (benchmarks/steps/bench_detection_eval.py, ``end``).
"""
from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from mlperf_fast.data.coco import CocoSet

#: the names of COCOeval.stats, in its order (summarize(): 6 AP then 6 AR)
STAT_NAMES = ("mAP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
              "ARl")
BACKENDS = ("auto", "vectorized", "pycocotools", "faster_coco_eval")

# COCOeval's Params for "bbox", built as setDetParams builds them, so that every threshold is
# the same float (linspace, not arange, as its comment warns)
IOU_THRESHOLDS = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)
MAX_DETS = (1, 10, 100)
AREA_RANGES = ((0 ** 2, 1e5 ** 2), (0 ** 2, 32 ** 2), (32 ** 2, 96 ** 2), (96 ** 2, 1e5 ** 2))
AREA_LABELS = ("all", "small", "medium", "large")

#: (detection, ground truth) pairs whose IoU is computed at once, to bound the memory
_PAIR_CHUNK = 1 << 22


def _np(x: Any, dtype) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, on any device
        x = x.detach().cpu().float().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


class FlatDetections(NamedTuple):
    """Every detection of a ``coco_map`` call in one array each, in input order: per entry of
    the list, ``image_ids`` (E,) int64 and ``counts`` (E,) int64 (its number of boxes); per
    box, ``boxes`` (n, 4) float64 XYXY px, ``scores`` (n,) float64, ``labels`` (n,) int64
    contiguous."""

    image_ids: np.ndarray
    counts: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    @property
    def image_id(self) -> np.ndarray:
        """(n,) int64: each box's image id."""
        return np.repeat(self.image_ids, self.counts)


def _xywh(xyxy: np.ndarray) -> np.ndarray:
    """(n, 4) XYXY boxes as COCO's XYWH."""
    return np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)


def _lookup(table: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``values`` in the sorted ``table``, and whether each is there."""
    pos = np.searchsorted(table, values)
    if not len(table):
        return pos, np.zeros(len(values), bool)
    return pos, table[np.minimum(pos, len(table) - 1)] == values


def flatten_detections(coco: CocoSet, detections: Sequence[dict]) -> FlatDetections:
    """The per-image ``detections`` (see ``coco_map``) as flat arrays, checked: every image id
    must be in the set, every label in 0..C-1, shapes (k, 4), (k,), (k,), boxes and scores
    finite. Raises ValueError naming the image at fault."""
    ids, boxes, scores, labels = [], [], [], []
    for d in detections:
        image_id = int(d["image_id"])
        b = _np(d["boxes"], np.float64).reshape(-1, 4) if len(d["boxes"]) else np.zeros((0, 4))
        s = _np(d["scores"], np.float64).reshape(-1)
        lab = _np(d["labels"], np.int64).reshape(-1)
        if not len(b) == len(s) == len(lab):
            raise ValueError(f"coco_map: image {image_id}: {len(b)} boxes, {len(s)} scores and "
                             f"{len(lab)} labels")
        ids.append(image_id)
        boxes.append(b)
        scores.append(s)
        labels.append(lab)
    image_ids = np.array(ids, dtype=np.int64)
    _, known = _lookup(np.sort(np.array([im.id for im in coco.images], dtype=np.int64)),
                       image_ids)
    if not known.all():
        raise ValueError(f"coco_map: detections for image id {image_ids[np.argmin(known)]}, "
                         f"which is not in {coco.annotation_file}")
    counts = np.array([len(s) for s in scores], dtype=np.int64)
    flat = FlatDetections(
        image_ids, counts,
        np.concatenate(boxes) if boxes else np.zeros((0, 4)),
        np.concatenate(scores) if scores else np.zeros(0),
        np.concatenate(labels) if labels else np.zeros(0, np.int64))

    def bad(mask: np.ndarray, why) -> None:
        if mask.any():
            k = int(np.searchsorted(np.cumsum(counts), np.argmax(mask), side="right"))
            raise ValueError(f"coco_map: image {ids[k]}: {why(labels[k])}")

    c = coco.num_classes
    bad((flat.labels < 0) | (flat.labels >= c),
        lambda lab: f"labels must be in 0..{c - 1}, got {lab.min()}..{lab.max()}")
    bad(~np.isfinite(flat.boxes).all(axis=1) | ~np.isfinite(flat.scores),
        lambda _: "boxes and scores must be finite")
    return flat


def detections_by_image(det: Any, image_ids: Sequence[int],
                        valid: Sequence[bool] | None = None) -> list[dict]:
    """A batch of padded detections (``mlperf_fast.ops.nms.Detections``: ``boxes`` (B, K, 4),
    ``scores`` (B, K), ``labels`` (B, K) contiguous, ``counts`` (B,), the first counts[b] of
    image b; any device) as ``coco_map`` takes them, on the CPU: per image {"image_id", "boxes"
    (k, 4) float32 numpy XYXY, "scores" (k,) float32, "labels" (k,)}, the images whose
    ``valid`` is False (a batch's padding) left out."""
    boxes, scores = det.boxes.float().cpu().numpy(), det.scores.float().cpu().numpy()
    labels, counts = det.labels.cpu().numpy(), det.counts.cpu().tolist()
    return [{"image_id": int(image_id), "boxes": boxes[j, :counts[j]],
             "scores": scores[j, :counts[j]], "labels": labels[j, :counts[j]]}
            for j, image_id in enumerate(image_ids) if valid is None or valid[j]]


def ground_truth(coco: CocoSet) -> dict:
    """The set as a COCO json document (images, annotations with XYWH boxes, categories)."""
    images = [{"id": im.id, "file_name": im.file_name, "width": im.width, "height": im.height}
              for im in coco.images]
    anns = []
    for i, im in enumerate(coco.images):
        b = np.asarray(coco.boxes[i], dtype=np.float64).reshape(-1, 4)
        if len(b) == 0:
            continue
        xywh = _xywh(b).tolist()
        cats = coco.category_ids(coco.labels[i]).tolist()
        areas = coco.area(i).astype(np.float64).tolist()
        crowd = np.asarray(coco.iscrowd[i], dtype=bool).tolist()
        for k in range(len(b)):
            anns.append({"id": len(anns) + 1, "image_id": im.id, "category_id": cats[k],
                         "bbox": xywh[k], "area": areas[k], "iscrowd": int(crowd[k])})
    cats = [{"id": int(c["id"]), "name": str(c.get("name", c["id"]))} for c in coco.categories]
    return {"images": images, "annotations": anns, "categories": cats}


def detection_annotations(coco: CocoSet, detections: Sequence[dict] | FlatDetections
                          ) -> list[dict]:
    """COCO result annotations (one dict per box, as loadRes makes them) of ``detections`` (see
    ``coco_map``; checked as ``flatten_detections`` checks them)."""
    flat = detections if isinstance(detections, FlatDetections) else \
        flatten_detections(coco, detections)
    b = flat.boxes
    xywh = _xywh(b)
    area = (xywh[:, 2] * xywh[:, 3]).tolist()
    cats = coco.category_ids(flat.labels).tolist()
    return [{"id": k + 1, "image_id": i, "category_id": c, "bbox": box, "score": s, "area": a,
             "iscrowd": 0}
            for k, (i, c, box, s, a) in enumerate(zip(flat.image_id.tolist(), cats,
                                                      xywh.tolist(), flat.scores.tolist(),
                                                      area))]


# -- the vectorized evaluator -------------------------------------------------------------------
class EvalBoxes(NamedTuple):
    """One side of an evaluation, flat: ``image`` (n,) int64, the index of its image among the
    sorted image ids; ``category`` (n,) int64, the index among the sorted category ids;
    ``xywh`` (n, 4) float64; ``area`` (n,) float64; ``crowd`` (n,) bool; ``score`` (n,)
    float64 (detections; zeros for ground truth); ``counted`` (n,) bool: a match to this box
    counts as one (COCOeval tests the matched annotation's id, so a ground-truth id of 0 never
    does)."""

    image: np.ndarray
    category: np.ndarray
    xywh: np.ndarray
    area: np.ndarray
    crowd: np.ndarray
    score: np.ndarray
    counted: np.ndarray


def _flat_of(per_image: Sequence[np.ndarray], dtype, width: int = 0) -> np.ndarray:
    """A ``Ragged``'s flat array, or a list of per-image arrays concatenated."""
    if hasattr(per_image, "flat") and hasattr(per_image, "offsets"):
        return np.asarray(per_image.flat, dtype=dtype)
    parts = [np.asarray(a, dtype=dtype).reshape((-1, width) if width else -1) for a in per_image]
    return np.concatenate(parts) if parts else np.zeros((0, width) if width else 0, dtype)


def ground_truth_boxes(coco: CocoSet) -> tuple[EvalBoxes, np.ndarray, np.ndarray]:
    """The set's ground truth as ``EvalBoxes`` (the values ``ground_truth`` writes, in its
    order), with the sorted image ids and the sorted category ids."""
    ids = np.array([im.id for im in coco.images], dtype=np.int64)
    counts = np.diff(coco.labels.offsets) if hasattr(coco.labels, "offsets") else \
        np.array([len(b) for b in coco.labels], dtype=np.int64)
    b = _flat_of(coco.boxes, np.float32, 4).astype(np.float64)
    if coco.areas is not None:
        area = _flat_of(coco.areas, np.float32)
    else:
        b32 = b.astype(np.float32)
        area = (b32[:, 2] - b32[:, 0]) * (b32[:, 3] - b32[:, 1])
    sorted_ids = np.sort(ids)
    cat_ids = np.sort(coco.category_ids(np.arange(coco.num_classes)))
    n = len(b)
    gt = EvalBoxes(
        np.repeat(np.searchsorted(sorted_ids, ids), counts),
        np.searchsorted(cat_ids, coco.category_ids(_flat_of(coco.labels, np.int64))),
        _xywh(b),
        area.astype(np.float64), _flat_of(coco.iscrowd, bool), np.zeros(n), np.ones(n, bool))
    return gt, sorted_ids, cat_ids


def file_ground_truth_boxes(path: str | Path) -> tuple[EvalBoxes, np.ndarray, np.ndarray]:
    """An annotation file's ground truth as COCOeval loads it: every image and category of the
    file, every annotation of a known image and category, in file order."""
    with open(path, "rb") as f:
        doc = json.load(f)
    sorted_ids = np.unique(np.array([im["id"] for im in doc["images"]], dtype=np.int64))
    cat_ids = np.unique(np.array([c["id"] for c in doc["categories"]], dtype=np.int64))
    anns = doc["annotations"]
    try:
        image = np.array([a["image_id"] for a in anns], dtype=np.int64)
        cat = np.array([a["category_id"] for a in anns], dtype=np.int64)
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        area = np.array([a["area"] for a in anns], dtype=np.float64)
        crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
        ann_id = np.array([a["id"] for a in anns], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"coco_map: {path}: an annotation lacks or mistypes {e} (COCOeval "
                         "needs image_id, category_id, bbox, area and id)") from e

    keep = _lookup(sorted_ids, image)[1] & _lookup(cat_ids, cat)[1]
    gt = EvalBoxes(np.searchsorted(sorted_ids, image[keep]), np.searchsorted(cat_ids, cat[keep]),
                   xywh[keep], area[keep], crowd[keep], np.zeros(int(keep.sum())),
                   ann_id[keep] != 0)
    return gt, sorted_ids, cat_ids


def detection_boxes(flat: FlatDetections, coco: CocoSet, sorted_ids: np.ndarray,
                    cat_ids: np.ndarray) -> EvalBoxes:
    """Checked detections as ``EvalBoxes`` (XYWH and w * h as loadRes computes them)."""
    image, known = _lookup(sorted_ids, flat.image_ids)
    if not known.all():
        raise ValueError(f"coco_map: {coco.annotation_file} has no image "
                         f"{flat.image_ids[np.argmin(known)]}")
    label_cat, known = _lookup(cat_ids, coco.category_ids(np.arange(coco.num_classes)))
    if not known.all():
        raise ValueError(f"coco_map: {coco.annotation_file} has no category "
                         f"{coco.category_id(int(np.argmin(known)))}")
    b = flat.boxes
    xywh = _xywh(b)
    n = len(b)
    return EvalBoxes(np.repeat(image, flat.counts), label_cat[flat.labels], xywh,
                     xywh[:, 2] * xywh[:, 3], np.zeros(n, bool), flat.scores, np.ones(n, bool))


def _sort(key: np.ndarray) -> np.ndarray:
    """A stable argsort of int64 keys (torch's CPU sort: a few times numpy's stable one at
    millions of keys)."""
    return torch.from_numpy(np.ascontiguousarray(key, dtype=np.int64)).sort(
        stable=True).indices.numpy()


def _descending(score: np.ndarray, dtype=np.float64) -> np.ndarray:
    """int64 codes whose ascending order is ``score``'s descending order, equal scores equal:
    the bits of -score (as ``dtype``, float64 or float32) made to sort as integers. float32
    codes are 0..2^32-1."""
    s = -score.astype(dtype)
    s += 0.0  # -0.0 and 0.0 are one score
    bits = s.view(np.int64 if dtype == np.float64 else np.int32).astype(np.int64)
    top = np.int64(0x7FFFFFFFFFFFFFFF if dtype == np.float64 else 0x7FFFFFFF)
    np.bitwise_xor(bits, top, out=bits, where=bits < 0)
    if dtype == np.float32:
        bits += 1 << 31
    return bits


def _box_iou(d: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """Row-wise IoU of XYWH boxes ``d`` and ``g`` (n, 4) float64, pycocotools' bbIou expression
    by expression (a crowd box's union is the detection's area)."""
    w = np.fmin(d[:, 2] + d[:, 0], g[:, 2] + g[:, 0]) - np.fmax(d[:, 0], g[:, 0])
    h = np.fmin(d[:, 3] + d[:, 1], g[:, 3] + g[:, 1]) - np.fmax(d[:, 1], g[:, 1])
    inter = w * h
    da, ga = d[:, 2] * d[:, 3], g[:, 2] * g[:, 3]
    union = np.where(crowd, da, da + ga - inter)
    out = np.zeros(len(d))
    np.divide(inter, union, out=out, where=(w > 0) & (h > 0))
    return out


def _out_of_range(area: np.ndarray) -> np.ndarray:
    """(n, A) bool: outside each of COCOeval's area ranges (whose ends are inside)."""
    return np.stack([(area < lo) | (area > hi) for lo, hi in AREA_RANGES], axis=1)


def _candidates(g_pair: np.ndarray, g_xywh: np.ndarray, g_crowd: np.ndarray,
                d_xywh: np.ndarray, kept: np.ndarray, run_pair: np.ndarray,
                run_start: np.ndarray, run_len: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (detection, ground truth) pairs of one image and category with IoU >= 0.5 (the
    lowest threshold: no other pair can ever match). The detections ``d_xywh[kept]`` come in
    runs of one (image, category) ``run_pair`` each, ``run_start`` and ``run_len``; ``g_pair``
    is sorted. Returns detection index (into ``kept``), ground-truth index, IoU, sorted by
    detection then ground truth."""
    lo = np.searchsorted(g_pair, run_pair, "left")
    n_gt = np.searchsorted(g_pair, run_pair, "right") - lo
    runs = np.flatnonzero(n_gt)
    size = run_len[runs] * n_gt[runs]  # every detection of the run against every box
    ends = np.cumsum(size)
    out_d, out_g, out_iou = [], [], []
    first = 0
    while first < len(runs):
        last = max(int(np.searchsorted(ends, ends[first] - size[first] + _PAIR_CHUNK, "right")),
                   first + 1)
        r, cnt = runs[first:last], size[first:last]
        which = np.repeat(np.arange(len(r)), cnt)
        local = np.arange(len(which)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        ng = n_gt[r][which]
        det = run_start[r][which] + local // ng
        g = lo[r][which] + local % ng
        iou = _box_iou(d_xywh[kept[det]], g_xywh[g], g_crowd[g])
        hit = iou >= IOU_THRESHOLDS[0]
        out_d.append(det[hit])
        out_g.append(g[hit])
        out_iou.append(iou[hit])
        first = last
    if not out_d:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(out_d), np.concatenate(out_g), np.concatenate(out_iou)


def _match(cand_det: np.ndarray, cand_gt: np.ndarray, cand_iou: np.ndarray, rank: np.ndarray,
           g_ignore: np.ndarray, g_crowd: np.ndarray, g_counted: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """evaluateImg's greedy matching for every IoU threshold and area range at once.

    Per detection, in score order within its (image, category): among the ground-truth boxes
    still free (a crowd box always is) with IoU >= the threshold, the best one that is not
    ignored in the area range, else the best ignored one; the best is the highest IoU, the last
    in the set's order among equals (COCOeval's ``<`` test). Returns the detections with a
    candidate (sorted indices), and per such detection (C, T, A) bool: matched to a box that
    counts, and matched to an ignored box.
    """
    t_n, a_n = len(IOU_THRESHOLDS), len(AREA_RANGES)
    if not len(cand_det):
        return cand_det, np.zeros((0, t_n, a_n), bool), np.zeros((0, t_n, a_n), bool)
    change = np.ones(len(cand_det), bool)
    change[1:] = cand_det[1:] != cand_det[:-1]
    dets = cand_det[change]
    which = np.cumsum(change) - 1  # each pair's detection, among ``dets``
    counted = np.zeros((len(dets), t_n, a_n), bool)
    ignored = np.zeros((len(dets), t_n, a_n), bool)
    taken = np.zeros((len(g_ignore), t_n, a_n), bool)
    order = np.argsort(rank[cand_det], kind="stable")  # by rank, then detection, then gt
    bounds = np.flatnonzero(np.diff(rank[cand_det][order])) + 1
    thr = IOU_THRESHOLDS[None, :, None]
    for idx in np.split(order, bounds):
        # one rank's detections are of different (image, category) pairs: no two share a box
        c = which[idx]
        edge = c[1:] != c[:-1]
        alone = np.concatenate([[True], edge]) & np.concatenate([edge, [True]])
        if alone.any():  # one candidate box: it matches wherever it is free and close enough
            one = idx[alone]
            g, c1 = cand_gt[one], which[one]
            hit = (~taken[g] | g_crowd[g][:, None, None]) & (cand_iou[one][:, None, None] >= thr)
            taken[g] |= hit
            counted[c1] = hit & g_counted[g][:, None, None]
            ignored[c1] = hit & g_ignore[g][:, None, :]
        if alone.all():
            continue
        idx = idx[~alone]
        g, iou, c = cand_gt[idx], cand_iou[idx], which[idx]
        starts = np.flatnonzero(np.concatenate([[True], c[1:] != c[:-1]]))
        seg = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(idx))))
        free = ~taken[g] | g_crowd[g][:, None, None]
        usable = free & (iou[:, None, None] >= thr)
        # 2: not ignored, 1: ignored, 0: cannot match
        tier = np.where(usable, np.where(g_ignore[g][:, None, :], 1, 2), 0).astype(np.int8)
        best_tier = np.maximum.reduceat(tier, starts, axis=0)
        pick = (tier == best_tier[seg]) & (tier > 0)
        iou_b = np.where(pick, iou[:, None, None], -1.0)
        pick &= iou_b == np.maximum.reduceat(iou_b, starts, axis=0)[seg]
        at = np.where(pick, np.arange(len(idx))[:, None, None], -1)
        chosen = np.maximum.reduceat(at, starts, axis=0)
        s, t, a = np.nonzero(chosen >= 0)
        gt_of = g[chosen[s, t, a]]
        taken[gt_of, t, a] = True
        det_of = c[starts[s]]
        counted[det_of, t, a] = g_counted[gt_of]
        ignored[det_of, t, a] = g_ignore[gt_of, a]
    return dets, counted, ignored


def _first_counts(npig: np.ndarray) -> np.ndarray:
    """(..., R) int64: per recall threshold r, the least count j >= 0 with j / npig >= r, the
    float64 division COCOeval's recall is (``tp / npig``)."""
    n = np.maximum(npig, 1)[..., None]
    thr = RECALL_THRESHOLDS
    j = np.ceil(thr * n).astype(np.int64)
    for _ in range(2):  # thr * n is within an ulp: j is off by at most one
        j = np.where((j > 0) & ((j - 1) / n >= thr), j - 1, j)
    for _ in range(2):
        j = np.where(j / n < thr, j + 1, j)
    return j


def _orders(dt: EvalBoxes) -> tuple[np.ndarray, np.ndarray]:
    """The detections in accumulate's order (by category, then score, ties by image, then
    input order) and in evaluateImg's (by image and category, then score, ties in input
    order): two permutations (n,)."""
    # the lists come image by image: most often no sort is needed for the image order
    if len(dt.image) < 2 or (dt.image[1:] >= dt.image[:-1]).all():
        by_image, image, score, cat = None, dt.image, dt.score, dt.category
    else:
        by_image = np.argsort(dt.image, kind="stable")
        image, score, cat = dt.image[by_image], dt.score[by_image], dt.category[by_image]
    if (score.astype(np.float32) == score).all():
        # float32 scores (every torch model's): category and score in one key
        key = _descending(score, np.float32)
        key |= cat << 32
        by_cat = _sort(key)
    else:
        by_score = _sort(_descending(score))
        by_cat = by_score[_sort(cat[by_score])]
    # by category, so each image's detections are by category already
    by_pair = by_cat[_sort(image[by_cat])]
    if by_image is not None:
        by_cat, by_pair = by_image[by_cat], by_image[by_pair]
    return by_cat, by_pair


def cocoeval_bbox(gt: EvalBoxes, dt: EvalBoxes, num_categories: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval(iouType="bbox")'s evaluate + accumulate on flat arrays: ``precision`` (T, R, K,
    A, M) and ``recall`` (T, K, A, M) float64, -1 where a category has no ground truth that is
    not ignored, as ``COCOeval.eval`` holds them (T = 10 IoU thresholds, R = 101 recall
    thresholds, K categories, A = 4 area ranges, M = 3 detection caps)."""
    t_n, r_n, a_n, m_n = (len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(AREA_RANGES),
                          len(MAX_DETS))
    k_n = num_categories
    precision = -np.ones((t_n, r_n, k_n, a_n, m_n))
    recall = -np.ones((t_n, k_n, a_n, m_n))

    # ground truth by (image, category), in the set's order within each
    g_order = np.argsort(gt.image * k_n + gt.category, kind="stable")
    g = EvalBoxes(*(x[g_order] for x in gt))
    g_pair = g.image * k_n + g.category
    g_ignore = g.crowd[:, None] | _out_of_range(g.area)  # (G, A)
    npig = np.stack([np.bincount(g.category[~g_ignore[:, a]], minlength=k_n)
                     for a in range(a_n)], axis=1)  # (K, A)

    # detections by (image, category) and score: the first 100 of each are evaluated
    n = len(dt.score)
    by_cat, by_pair = _orders(dt)
    pair = (dt.image * k_n + dt.category)[by_pair]
    new = np.ones(n, bool)
    new[1:] = pair[1:] != pair[:-1]
    run_start = np.flatnonzero(new)
    run_len = np.diff(np.append(run_start, n))
    rank = np.arange(n) - np.repeat(run_start, run_len)
    keep = rank < MAX_DETS[-1]
    kept = by_pair[keep]  # the evaluated detections, in evaluateImg's order
    d_rank = rank[keep]
    kept_len = np.minimum(run_len, MAX_DETS[-1])
    kept_start = np.cumsum(kept_len) - kept_len
    cand_det, cand_gt, cand_iou = _candidates(g_pair, g.xywh, g.crowd, dt.xywh, kept,
                                              pair[run_start], kept_start, kept_len)
    dets, counted, ignored = _match(cand_det, cand_gt, cand_iou, d_rank, g_ignore, g.crowd,
                                    g.counted)

    # accumulate's order, the evaluated detections only (indices into ``kept``)
    place = np.full(n, -1, np.int64)
    place[kept] = np.arange(len(kept))
    seq = place[by_cat]
    seq = seq[seq >= 0]
    d_cat = dt.category[kept][seq]
    cat_start = np.searchsorted(d_cat, np.arange(k_n + 1))
    cand_of = np.full(len(kept), -1, np.int64)
    cand_of[dets] = np.arange(len(dets))
    seq_cand = cand_of[seq]
    at = np.flatnonzero(seq_cand >= 0)  # the candidates' places in that order
    cand = seq_cand[at]
    cand_cat = d_cat[at]
    included = d_rank[seq][:, None] < np.array(MAX_DETS)  # (D, M)
    out = _out_of_range(dt.area[kept][seq])  # (D, A)
    # the false positives that are not candidates, before each candidate in its category
    others_fp = np.zeros((len(at), a_n, m_n), np.int64)
    plain = seq_cand < 0
    counts = np.zeros(len(seq) + 1, np.int64)
    for a in range(a_n):
        in_range = plain & ~out[:, a]
        for m in range(m_n):
            np.cumsum(in_range & included[:, m], out=counts[1:])
            others_fp[:, a, m] = counts[at] - counts[cat_start[cand_cat]]
    cand_out = out[at]
    cand_incl = included[at]
    cand_start = np.searchsorted(cand_cat, np.arange(k_n + 1))
    first = _first_counts(npig)  # (K, A, R)
    eps = np.spacing(1)

    for k in range(k_n):
        areas = np.flatnonzero(npig[k] > 0)
        if not len(areas):
            continue
        lo, hi = cand_start[k], cand_start[k + 1]
        if lo == hi:  # nothing to match: precision and recall 0 wherever there is ground truth
            precision[:, :, k, areas, :] = 0.0
            recall[:, k, areas, :] = 0.0
            continue
        # (M, T, A', c): every detection cap, threshold and area range at once, each row
        # one category's candidates in accumulate's order
        c = cand[lo:hi]
        cnt = np.ascontiguousarray(counted[c][:, :, areas].transpose(1, 2, 0))
        ign = np.ascontiguousarray(ignored[c][:, :, areas].transpose(1, 2, 0))
        inc = np.ascontiguousarray(cand_incl[lo:hi].T)[:, None, None, :]
        tp = (cnt & ~ign)[None] & inc
        fp = (~cnt & ~ign & ~np.ascontiguousarray(cand_out[lo:hi, areas].T)[None])[None] & inc
        ctp = np.cumsum(tp, axis=-1)
        cfp = np.cumsum(fp, axis=-1)
        cfp += np.ascontiguousarray(others_fp[lo:hi][:, areas].transpose(2, 1, 0))[:, None]
        tpf = ctp.astype(np.float64)
        # COCOeval's expression; only the values at true positives can be the envelope's
        pr = np.where(tp, tpf / ((cfp + tpf) + eps), 0.0)
        envelope = np.maximum.accumulate(pr[..., ::-1], axis=-1)[..., ::-1]
        recall[:, k, areas, :] = (ctp[..., -1] / npig[k, areas]).transpose(1, 2, 0)
        # the first place whose count reaches each recall threshold's
        want = np.broadcast_to(first[k, areas], (m_n, t_n, len(areas), r_n))
        where = torch.searchsorted(torch.from_numpy(ctp.reshape(-1, hi - lo)),
                                   torch.from_numpy(np.ascontiguousarray(want).reshape(-1, r_n))
                                   ).numpy().reshape(want.shape)
        q = np.take_along_axis(envelope, np.minimum(where, hi - lo - 1), axis=-1)
        q[where >= hi - lo] = 0.0
        precision[:, :, k, areas, :] = q.transpose(1, 3, 2, 0)
    return precision, recall


def summarize(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """COCOeval.summarize's twelve numbers (``STAT_NAMES``) from ``cocoeval_bbox``'s arrays, by
    its indexing, so that every mean is over the same values in the same order."""

    def one(ap: bool, iou: float | None = None, area: str = "all", max_dets: int = 100) -> float:
        aind = [i for i, lbl in enumerate(AREA_LABELS) if lbl == area]
        mind = [i for i, m in enumerate(MAX_DETS) if m == max_dets]
        s = precision if ap else recall
        if iou is not None:
            s = s[np.where(iou == IOU_THRESHOLDS)[0]]
        s = s[:, :, :, aind, mind] if ap else s[:, :, aind, mind]
        return -1.0 if len(s[s > -1]) == 0 else float(np.mean(s[s > -1]))

    return np.array([one(True), one(True, .5), one(True, .75), one(True, area="small"),
                     one(True, area="medium"), one(True, area="large"),
                     one(False, max_dets=1), one(False, max_dets=10), one(False),
                     one(False, area="small"), one(False, area="medium"),
                     one(False, area="large")])


# -- the library backends ---------------------------------------------------------------------
def _have_faster() -> bool:
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return False
    return True


def _evaluate(backend: str, gt_doc: dict | None, gt_file: str | None, dt_anns: list[dict],
              images: list[dict], categories: list[dict]) -> np.ndarray:
    quiet = contextlib.redirect_stdout(io.StringIO())
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval as Eval
    else:
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as Eval
    with quiet:
        if gt_file is not None:
            gt = COCO(gt_file)
        else:
            gt = COCO()
            gt.dataset = gt_doc
            gt.createIndex()
        dt = COCO()
        dt.dataset = {"images": images, "categories": categories, "annotations": dt_anns}
        dt.createIndex()
        ev = Eval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats, dtype=np.float64)[:len(STAT_NAMES)]


def coco_map(coco: CocoSet, detections: Sequence[dict], *, backend: str = "auto",
             from_file: bool = False) -> dict[str, float]:
    """COCO box AP and AR of ``detections`` on ``coco``.

    detections: per image {"image_id": int, "boxes": (k, 4) XYXY px in the ORIGINAL image's
    coordinates (numpy or torch, any float dtype), "scores": (k,), "labels": (k,) contiguous
    labels}; images without an entry have no detections. Returns {"mAP": AP@[.5:.95], "AP50",
    "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"} (COCOeval's stats,
    -1 where there is no ground truth of that area). No detections at all gives 0 (not a crash).
    Raises ValueError on an unknown image id, a label outside 0..C-1, mismatched lengths, or a
    box or score that is not finite.
    """
    if backend not in BACKENDS:
        raise ValueError(f"coco_map: backend must be one of {BACKENDS}, got {backend!r}")
    flat = flatten_detections(coco, detections)
    if backend in ("auto", "vectorized"):
        if from_file:
            gt, image_ids, cat_ids = file_ground_truth_boxes(coco.annotation_file)
        else:
            gt, image_ids, cat_ids = ground_truth_boxes(coco)
        dt = detection_boxes(flat, coco, image_ids, cat_ids)
        stats = summarize(*cocoeval_bbox(gt, dt, len(cat_ids)))
    else:
        dt_anns = detection_annotations(coco, flat)
        gt_doc = None if from_file else ground_truth(coco)
        images = [{"id": im.id, "width": im.width, "height": im.height} for im in coco.images]
        categories = [{"id": int(c["id"]), "name": str(c.get("name", c["id"]))}
                      for c in coco.categories]
        # no detections at all is fine: COCOeval then reports 0 wherever there is ground truth
        stats = _evaluate(backend, gt_doc, str(coco.annotation_file) if from_file else None,
                          dt_anns, images, categories)
    return {name: float(v) for name, v in zip(STAT_NAMES, stats)}
