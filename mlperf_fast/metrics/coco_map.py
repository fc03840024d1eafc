"""COCO box mAP: pycocotools' COCOeval (iouType "bbox"), the evaluator both detection references
score with (mlcommons/training single_stage_detector/ssd/coco_eval.py for RetinaNet; the SSD
reference's train.py ``coco_eval``), fed in memory from a ``CocoSet`` and the model's
detections, without temporary files.

The ground truth is the set as read (``coco.read_coco``): its boxes (XYXY back to the json's
XYWH), the json's areas (COCOeval's small / medium / large ranges use the annotation's area, the
mask's in COCO) and crowd flags. ``from_file=True`` evaluates against the annotation file itself
instead, exactly as the references load it (the two differ only where the reader clipped an
overhanging box or dropped one of zero size).

Backends: "pycocotools", or "faster_coco_eval" (a C++ port of the same algorithm; the tests show
it gives the same twelve numbers, to 1e-12, on random sets with crowds and every area range);
"auto" takes faster_coco_eval when it is installed.
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from mlperf_fast.data.coco import CocoSet

#: the names of COCOeval.stats, in its order (summarize(): 6 AP then 6 AR)
STAT_NAMES = ("mAP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
              "ARl")
BACKENDS = ("auto", "pycocotools", "faster_coco_eval")


def _np(x: Any, dtype) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, on any device
        x = x.detach().cpu().float().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def ground_truth(coco: CocoSet) -> dict:
    """The set as a COCO json document (images, annotations with XYWH boxes, categories)."""
    images = [{"id": im.id, "file_name": im.file_name, "width": im.width, "height": im.height}
              for im in coco.images]
    anns = []
    for i, im in enumerate(coco.images):
        b = np.asarray(coco.boxes[i], dtype=np.float64).reshape(-1, 4)
        if len(b) == 0:
            continue
        xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1).tolist()
        cats = coco.category_ids(coco.labels[i]).tolist()
        areas = coco.area(i).astype(np.float64).tolist()
        crowd = np.asarray(coco.iscrowd[i], dtype=bool).tolist()
        for k in range(len(b)):
            anns.append({"id": len(anns) + 1, "image_id": im.id, "category_id": cats[k],
                         "bbox": xywh[k], "area": areas[k], "iscrowd": int(crowd[k])})
    cats = [{"id": int(c["id"]), "name": str(c.get("name", c["id"]))} for c in coco.categories]
    return {"images": images, "annotations": anns, "categories": cats}


def detection_annotations(coco: CocoSet, detections: Sequence[dict]) -> list[dict]:
    """COCO result annotations of ``detections`` (see ``coco_map``), checked: every image id must
    be in the set, every label in 0..C-1, shapes (k, 4), (k,), (k,)."""
    ids = {im.id for im in coco.images}
    out: list[dict] = []
    for d in detections:
        image_id = int(d["image_id"])
        if image_id not in ids:
            raise ValueError(f"coco_map: detections for image id {image_id}, which is not in "
                             f"{coco.annotation_file}")
        boxes = _np(d["boxes"], np.float64).reshape(-1, 4) if len(d["boxes"]) else \
            np.zeros((0, 4))
        scores = _np(d["scores"], np.float64).reshape(-1)
        labels = _np(d["labels"], np.int64).reshape(-1)
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(f"coco_map: image {image_id}: {len(boxes)} boxes, {len(scores)} "
                             f"scores and {len(labels)} labels")
        if len(labels) and (labels.min() < 0 or labels.max() >= coco.num_classes):
            raise ValueError(f"coco_map: image {image_id}: labels must be in "
                             f"0..{coco.num_classes - 1}, got {labels.min()}..{labels.max()}")
        if len(boxes) == 0:
            continue
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        cats = coco.category_ids(labels).tolist()
        area = (xywh[:, 2] * xywh[:, 3]).tolist()
        xywh, scores = xywh.tolist(), scores.tolist()
        for k in range(len(cats)):
            out.append({"id": len(out) + 1, "image_id": image_id, "category_id": cats[k],
                        "bbox": xywh[k], "score": scores[k], "area": area[k], "iscrowd": 0})
    return out


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
    """
    if backend not in BACKENDS:
        raise ValueError(f"coco_map: backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = "faster_coco_eval" if _have_faster() else "pycocotools"
    dt_anns = detection_annotations(coco, detections)
    gt_doc = None if from_file else ground_truth(coco)
    images = [{"id": im.id, "width": im.width, "height": im.height} for im in coco.images]
    categories = [{"id": int(c["id"]), "name": str(c.get("name", c["id"]))}
                  for c in coco.categories]
    # no detections at all is fine: COCOeval then reports 0 wherever there is ground truth
    stats = _evaluate(backend, gt_doc, str(coco.annotation_file) if from_file else None,
                      dt_anns, images, categories)
    return {name: float(v) for name, v in zip(STAT_NAMES, stats)}

