"""The validation pass of the two detectors after their networks: post-processing and COCO
evaluation, ours against the reference's way, at the real validation sets' sizes.

- RetinaNet (MLPerf v2.1): OpenImages-MLPerf validation, 24,781 images, 264 classes, 800 x 800
  inputs (120,087 anchors), evaluation batches of 32.
- SSD-ResNet34 (v1.0): COCO val2017, 5,000 images, 80 classes, 300 x 300 inputs (8,732 default
  boxes), evaluation batches of 64.

The model's forward is excluded: synthetic head outputs stand in for it, float32 on the device,
made from a synthetic ground truth (1 + Poisson(6.3) boxes per image, 7.3 on average: COCO
val2017 has 36,781 boxes on 5,000 images, and OpenImages is assumed alike; classes drawn with a
Zipf-like popularity, 2% crowd boxes; image sizes among the sets' common ones). They look like a
model that has learned: each anchor (default box) that matches a ground-truth box scores that
box's class high and regresses onto it; every score has background noise, and in each image the
scores of ``*_CONFUSABLE`` classes (its own and others) rise above the threshold often enough
that every image ends with the cap of detections (RetinaNet 300 over 30 classes, SSD 200 over
20): the most the evaluation is given to do. The test prints the counts. ``ROTATE`` batches of
head outputs are made and cycled (as the step benchmarks rotate theirs); the validation set's
ground truth repeats them, batch by batch.

Ours, as the workloads run it: RetinaNet.postprocess (the batched retinanet_postprocess op) or
SSD's batched decode_batch, the boxes scaled to the source images, one copy to the host per
batch, and at the end metrics.coco_map (its vectorized evaluator) over the whole set; beside it
the same call with backend="faster_coco_eval" (a dict per box into faster-coco-eval's C++).
The reference's way: RetinaNet's port postprocesses image by image (torchvision's loops,
batched_nms) and, as the reference's CocoEvaluator does, runs pycocotools' loadRes and
COCOeval.evaluate on each batch, then at the end merges the per-batch results and runs
accumulate and summarize; SSD's port decodes image by image and class by class (its NMS loop),
appends one row per detection, and at the end runs loadRes, evaluate, accumulate and summarize
over everything (train.py ``coco_eval``).

The two halves are timed apart, each as its own group: one evaluation batch (rotating) and the
end of the pass (all images, once per call: ``repeat=1``). The pass takes ``batches x per
batch + end``; the test prints that sum for both. The end rows of each model see the same
detections (ours, from the rotated batches); the reference's per-image post-processing is
checked to give them (smoke). A row of the end group runs a whole-set COCOeval per call, the
reference's for minutes: run one test at a time (``-k retinanet``, ``-k ssd``).

The end rows alone run on any machine without the networks' head outputs:
``python bench_detection_eval.py retinanet 24781 cpu end`` draws detections straight from the
synthetic ground truth (``synthetic_detections``: per image the cap of detections over the
confusable classes, a few found boxes per object, the rest misplaced) and times coco_map against
faster-coco-eval fed dicts (``all`` adds pycocotools, minutes at full size).

No floor: the work is host-bound Python and C++ besides the post-processing kernels.
"""
from __future__ import annotations

import contextlib
import copy
import io
import itertools
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch

from mlperf_fast.data.coco import CocoImage, CocoSet
from mlperf_fast.metrics.coco_map import coco_map, detections_by_image, ground_truth

ROTATE = 2
GT_MEAN = 6.3  # 1 + Poisson(6.3) ground-truth boxes per image
CROWD = 0.02
RETINANET_SIZES = ((768, 1024), (1024, 768), (683, 1024), (1024, 1024))  # (H, W)
COCO_SIZES = ((480, 640), (427, 640), (640, 480), (640, 427))
#: the classes whose scores rise above the threshold in an image (its own and others)
RETINANET_CONFUSABLE = 30
SSD_CONFUSABLE = 20


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())


# -- the synthetic validation set ------------------------------------------------------------
def _image_boxes(rng: np.random.Generator, h: int, w: int, num_classes: int,
                 popularity: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = 1 + int(rng.poisson(GT_MEAN))
    side = np.exp(rng.uniform(np.log(0.03), np.log(0.8), n))  # of the image's shorter side
    aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0), n))
    bw = side * min(h, w) * np.sqrt(aspect)
    bh = side * min(h, w) / np.sqrt(aspect)
    x0 = rng.uniform(0, 1, n) * np.maximum(w - bw, 1)
    y0 = rng.uniform(0, 1, n) * np.maximum(h - bh, 1)
    boxes = np.stack([x0, y0, np.minimum(x0 + bw, w), np.minimum(y0 + bh, h)], 1)
    labels = rng.choice(num_classes, n, p=popularity)
    return boxes.astype(np.float32), labels.astype(np.int64), rng.random(n) < CROWD


def synthetic_set(num_images: int, num_classes: int, batch: int, sizes, seed: int = 0,
                  rotate: int = ROTATE) -> CocoSet:
    """``num_images`` images (ids 1..N) whose ground truth repeats ``rotate`` batches of
    ``batch`` drawn ones: image i is slot i % batch of batch (i // batch) % rotate."""
    if num_images < rotate * batch:
        raise ValueError(f"{num_images} images: fewer than {rotate} batches of {batch}")
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, num_classes + 1) ** 0.8
    popularity /= popularity.sum()
    drawn = []
    for slot in range(rotate * batch):
        h, w = sizes[slot % len(sizes)]
        drawn.append((h, w, *_image_boxes(rng, h, w, num_classes, popularity)))
    images, boxes, labels, crowd = [], [], [], []
    for i in range(num_images):
        h, w, b, lab, c = drawn[((i // batch) % rotate) * batch + i % batch]
        images.append(CocoImage(i + 1, f"{i + 1}.jpg", w, h))
        boxes.append(b)
        labels.append(lab)
        crowd.append(c)
    cats = [{"id": k + 1, "name": f"class {k + 1}"} for k in range(num_classes)]
    return CocoSet("synthetic", ".", images, cats, boxes, labels, crowd)


def _confusable(val: CocoSet, i: int, count: int, g: torch.Generator) -> torch.Tensor:
    """Image i's ground-truth classes and others, ``count`` in all (contiguous labels)."""
    present = torch.as_tensor(np.unique(val.labels[i]))
    others = torch.randperm(val.num_classes, generator=g, device=g.device).cpu()
    others = others[~torch.isin(others, present)][:max(0, count - len(present))]
    return torch.cat([present, others]).to(g.device)


def _pycocotools_gt(val: CocoSet):
    from pycocotools.coco import COCO

    gt = COCO()
    gt.dataset = ground_truth(val)
    with _quiet():
        gt.createIndex()
    return gt


def _batch_ids(val: CocoSet, batch: int, index: int) -> list[int]:
    return [im.id for im in val.images[index * batch:(index + 1) * batch]]


def _cycled(per_batch: list[list[dict]], val: CocoSet, batch: int) -> list[dict]:
    """The detections of every image, batch b being rotated batch b % ROTATE's."""
    out = []
    for i, im in enumerate(val.images):
        d = per_batch[(i // batch) % len(per_batch)][i % batch]
        out.append({**d, "image_id": im.id})
    return out


class Case(NamedTuple):
    """One model's validation pass: the set, its batches and the four timed functions."""

    name: str
    val: CocoSet
    batch: int
    ours_batch: Callable[[], Any]
    reference_batch: Callable[[], Any]
    ours_end: Callable[[], float]
    reference_end: Callable[[], float]
    dict_end: Callable[[], float]  # coco_map's call fed to faster-coco-eval, a dict per box
    batch_detections: list[list[dict]]  # ours, per rotated batch
    reference_detections: Callable[[int], list[dict]]  # the port's, of a rotated batch

    @property
    def batches(self) -> int:
        return -(-len(self.val) // self.batch)

    def counts(self) -> str:
        dets = [d for b in self.batch_detections for d in b]
        k = np.mean([len(d["scores"]) for d in dets])
        classes = np.mean([len(np.unique(d["labels"])) for d in dets])
        gt = np.mean([len(b) for b in self.val.boxes])
        return (f"{k:.0f} detections over {classes:.0f} classes per image, {gt:.1f} "
                "ground-truth boxes")


# -- RetinaNet -------------------------------------------------------------------------------
def _retinanet_heads(model, val: CocoSet, batch: int, device: str, seed: int):
    """Per rotated batch: (logits (B, A, C), deltas (B, A, 4), original sizes (B, 2))."""
    from mlperf_fast.ops import box_iou
    from mlperf_fast.workloads.retinanet.reference import encode

    cfg = model.cfg
    h, w = cfg.image_size
    anchors, _ = model.anchors((h, w), torch.device(device))
    g = torch.Generator(device=device).manual_seed(seed)
    out = []
    for r in range(ROTATE):
        logits = torch.randn(batch, len(anchors), cfg.num_classes, generator=g, device=device)
        logits -= 9.0  # sigmoid > 0.05 for 1 score in 10^9
        deltas = 0.1 * torch.randn(batch, len(anchors), 4, generator=g, device=device)
        sizes = []
        for j in range(batch):
            i = r * batch + j
            oh, ow = val.images[i].height, val.images[i].width
            sizes.append((oh, ow))
            # the classes a model confuses in this image: > 0.05 for 1 score in 4,500
            logits[j, :, _confusable(val, i, RETINANET_CONFUSABLE, g)] += 2.55
            gt = torch.as_tensor(val.boxes[i], device=device) * torch.tensor(
                [w / ow, h / oh, w / ow, h / oh], device=device)
            lab = torch.as_tensor(val.labels[i], device=device)
            best, which = box_iou(anchors, gt).max(1)
            hit = torch.where(best >= 0.5)[0]
            logits[j, hit, lab[which[hit]]] = 1.0 + 1.5 * torch.randn(
                len(hit), generator=g, device=device)
            deltas[j, hit] = encode(gt[which[hit]], anchors[hit]) + 0.05 * torch.randn(
                len(hit), 4, generator=g, device=device)
        out.append((logits, deltas, torch.tensor(sizes, device=device)))
    return out


def _reference_update(gt, val: CocoSet, outputs: dict[int, dict]) -> np.ndarray:
    """The reference's CocoEvaluator.update on one batch's detections ({image id: boxes XYXY,
    scores, labels}): the COCO results, loadRes, COCOeval.evaluate on those images; returns the
    per-image results, (categories, area ranges, images)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    results = []
    for image_id, d in outputs.items():
        b = d["boxes"]
        if len(b) == 0:
            continue
        xywh = torch.cat([b[:, :2], b[:, 2:] - b[:, :2]], 1).tolist()
        scores = d["scores"].tolist()
        cats = val.category_ids(d["labels"].numpy()).tolist()
        results += [{"image_id": image_id, "category_id": cats[k], "bbox": xywh[k],
                     "score": scores[k]} for k in range(len(cats))]
    with _quiet():
        dt = gt.loadRes(results) if results else COCO()
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = list(outputs)
        ev.evaluate()
    p = ev.params
    return np.asarray(ev.evalImgs).reshape(len(p.catIds), len(p.areaRng), len(p.imgIds))


def _reference_accumulate(gt, image_ids: list[int], per_batch: list[np.ndarray]) -> float:
    """The reference's end of the pass: the batches' results merged (one image each, in id
    order), accumulate, summarize; returns the mAP."""
    from pycocotools.cocoeval import COCOeval

    ids = np.asarray(image_ids)
    merged = np.concatenate(per_batch, 2)
    ids, first = np.unique(ids, return_index=True)
    merged = merged[..., first]
    with _quiet():
        ev = COCOeval(gt, iouType="bbox")
        ev.params.imgIds = list(ids)
        ev.evalImgs = list(merged.flatten())
        ev._paramsEval = copy.deepcopy(ev.params)
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


def retinanet_case(device: str = "cuda", num_images: int | None = None, cfg=None,
                   batch: int | None = None, seed: int = 0) -> Case:
    from mlperf_fast.workloads.retinanet.config import CLOSED, OPENIMAGES_VAL
    from mlperf_fast.workloads.retinanet.model import RetinaNet
    from mlperf_fast.workloads.retinanet.reference import ReferenceRetinaNet, scale_boxes

    cfg = cfg or CLOSED
    batch = batch or cfg.eval_batch_size
    num_images = num_images or OPENIMAGES_VAL
    size = cfg.image_size
    val = synthetic_set(num_images, cfg.num_classes, batch, RETINANET_SIZES, seed)
    model, port = RetinaNet(cfg).eval(), ReferenceRetinaNet(cfg).eval()
    heads = _retinanet_heads(model, val, batch, device, seed)
    anchors, level_counts = model.anchors(size, torch.device(device))
    gt = _pycocotools_gt(val)

    def ours(r: int) -> list[dict]:
        logits, deltas, sizes = heads[r]
        det = model.postprocess(logits, deltas, size, sizes)
        return detections_by_image(det, _batch_ids(val, batch, r))

    def reference(r: int) -> dict[int, dict]:
        logits, deltas, sizes = heads[r]
        with torch.no_grad():
            dets = port.postprocess({"cls_logits": logits, "bbox_regression": deltas}, anchors,
                                    level_counts, size)
        out = {}
        for image_id, d, (oh, ow) in zip(_batch_ids(val, batch, r), dets, sizes.tolist()):
            d["boxes"] = scale_boxes(d["boxes"], size, (oh, ow))
            out[image_id] = {k: v.cpu() for k, v in d.items()}
        return out

    per_batch = [ours(r) for r in range(ROTATE)]
    everything = _cycled(per_batch, val, batch)
    # the reference's per-batch results of the same detections, for its end of the pass
    as_torch = [{d["image_id"]: {k: torch.as_tensor(d[k]) for k in ("boxes", "scores", "labels")}
                 for d in b} for b in per_batch]
    evaluated = [_reference_update(gt, val, o) for o in as_torch]
    n_batches = -(-num_images // batch)
    last = num_images - (n_batches - 1) * batch  # the last batch may be short
    rotated = [evaluated[b % ROTATE] for b in range(n_batches - 1)] + \
        [evaluated[(n_batches - 1) % ROTATE][..., :last]]
    ids = [im.id for im in val.images]
    nxt = itertools.cycle(range(ROTATE)).__next__

    def ours_batch():
        return ours(nxt())

    def reference_batch():
        return _reference_update(gt, val, reference(nxt()))

    def reference_detections(r: int) -> list[dict]:
        return [{"image_id": i, **{k: v.numpy() for k, v in d.items()}}
                for i, d in reference(r).items()]

    return Case("RetinaNet", val, batch, ours_batch, reference_batch,
                lambda: coco_map(val, everything)["mAP"],
                lambda: _reference_accumulate(gt, ids, rotated),
                lambda: coco_map(val, everything, backend="faster_coco_eval")["mAP"], per_batch,
                reference_detections)


# -- SSD -------------------------------------------------------------------------------------
def _ssd_heads(cfg, dboxes, val: CocoSet, batch: int, device: str, seed: int):
    """Per rotated batch: (ploc (B, A, 4), plabel (B, A, C)) in the default boxes' order, and
    the sizes (B, 2) of the source images."""
    from mlperf_fast.workloads.ssd.boxes import encode_batch

    g = torch.Generator(device=device).manual_seed(seed)
    a, c = len(dboxes), cfg.num_classes
    d = dboxes.to(device)
    out = []
    for r in range(ROTATE):
        plabel = torch.randn(batch, a, c, generator=g, device=device)
        plabel[..., 1:] -= 2.0  # against the background's 6: softmax > 0.05 for 1 in 10^7
        plabel[..., 0] += 6.0
        ploc = 0.5 * torch.randn(batch, a, 4, generator=g, device=device)
        sizes, rel, labs = [], [], []
        for j in range(batch):
            i = r * batch + j
            oh, ow = val.images[i].height, val.images[i].width
            sizes.append((oh, ow))
            # the classes a model confuses in this image: > 0.05 for 1 box in 300
            plabel[j, :, 1 + _confusable(val, i, SSD_CONFUSABLE, g)] += 2.6
            rel.append(torch.as_tensor(val.boxes[i], device=device)
                       / torch.tensor([ow, oh, ow, oh], device=device))
            labs.append(torch.as_tensor(val.labels[i], device=device) + 1)
        n = max(len(b) for b in rel)
        gt = torch.zeros(batch, n, 4, device=device)
        gl = torch.zeros(batch, n, dtype=torch.int64, device=device)
        for j, (b, lab) in enumerate(zip(rel, labs)):
            gt[j, :len(b)], gl[j, :len(b)] = b, lab
        # the boxes the reference's encoder matches (IoU > 0.5, and each box's best)
        loc, lab = encode_batch(gt, gl, torch.tensor([len(b) for b in rel], device=device), d)
        hit = lab > 0
        plabel[hit, lab[hit]] += 9.0
        ploc[hit] = loc[hit] + 0.05 * torch.randn(int(hit.sum()), 4, generator=g, device=device)
        out.append((ploc, plabel, torch.tensor(sizes, device=device)))
    return out


def _ssd_reference_rows(results, image_ids, sizes, inv_map: np.ndarray) -> list[list]:
    """train.py ``coco_eval``'s loop: one row [image id, x, y, w, h, score, category] per
    detection, in the source image's pixels."""
    rows = []
    for image_id, (h, w), (loc, label, prob) in zip(image_ids, sizes, results):
        loc, label, prob = loc.cpu().numpy(), label.cpu().numpy(), prob.cpu().numpy()
        for loc_, label_, prob_ in zip(loc, label, prob):
            rows.append([image_id, loc_[0] * w, loc_[1] * h, (loc_[2] - loc_[0]) * w,
                         (loc_[3] - loc_[1]) * h, prob_, inv_map[label_]])
    return rows


def _ssd_reference_end(gt, rows: np.ndarray) -> float:
    from pycocotools.cocoeval import COCOeval

    with _quiet():
        dt = gt.loadRes(rows)
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


def ssd_case(device: str = "cuda", num_images: int | None = None, cfg=None,
             batch: int | None = None, seed: int = 0) -> Case:
    from mlperf_fast.workloads.ssd import reference as R
    from mlperf_fast.workloads.ssd.boxes import decode_batch, default_boxes
    from mlperf_fast.workloads.ssd.config import CLOSED, COCO_VAL
    from mlperf_fast.workloads.ssd.workload import coco_detections

    cfg = cfg or CLOSED
    batch = batch or cfg.eval_batch_size
    num_images = num_images or COCO_VAL
    val = synthetic_set(num_images, cfg.num_classes - 1, batch, COCO_SIZES, seed)
    geometry = (cfg.image_size, cfg.feat_sizes, cfg.steps, cfg.scales, cfg.aspect_ratios,
                cfg.scale_xy, cfg.scale_wh)
    # the reference's order of the default boxes, so that both read the same outputs
    dboxes = default_boxes(*geometry, order="dhw").to(device)
    encoder = R.ReferenceEncoder(R.ReferenceDefaultBoxes(
        cfg.image_size, list(cfg.feat_sizes), list(cfg.steps), list(cfg.scales),
        [list(a) for a in cfg.aspect_ratios], cfg.scale_xy, cfg.scale_wh))
    heads = _ssd_heads(cfg, dboxes, val, batch, device, seed)
    # the port's layout: (B, 4, A) and (B, C, A)
    port_heads = [(ploc.transpose(1, 2).contiguous(), plabel.transpose(1, 2).contiguous())
                  for ploc, plabel, _ in heads]
    inv_map = np.concatenate([[0], val.category_ids(np.arange(cfg.num_classes - 1))])
    gt = _pycocotools_gt(val)

    def ours(r: int) -> list[dict]:
        ploc, plabel, sizes = heads[r]
        det = decode_batch(ploc, plabel, dboxes, score_threshold=cfg.score_threshold,
                           iou_threshold=cfg.nms_iou, max_per_class=cfg.max_per_class,
                           max_output=cfg.max_detections)
        return coco_detections(det, _batch_ids(val, batch, r), sizes)

    def reference(r: int):
        ploc, plabel = port_heads[r]
        with torch.no_grad():
            return encoder.decode_batch(ploc, plabel, cfg.nms_iou, cfg.max_detections,
                                        nms_valid_thresh=cfg.score_threshold)

    per_batch = [ours(r) for r in range(ROTATE)]
    everything = _cycled(per_batch, val, batch)
    rows = np.concatenate([np.column_stack([
        np.full(len(d["scores"]), d["image_id"]),
        d["boxes"][:, :2], d["boxes"][:, 2:] - d["boxes"][:, :2], d["scores"],
        val.category_ids(d["labels"])]) for d in everything if len(d["scores"])])
    nxt = itertools.cycle(range(ROTATE)).__next__

    def ours_batch():
        return ours(nxt())

    def reference_batch():
        r = nxt()
        return _ssd_reference_rows(reference(r), _batch_ids(val, batch, r),
                                   heads[r][2].tolist(), inv_map)

    def reference_detections(r: int) -> list[dict]:
        out = []
        for image_id, (h, w), (loc, label, prob) in zip(_batch_ids(val, batch, r),
                                                        heads[r][2].tolist(), reference(r)):
            scale = torch.tensor([w, h, w, h], dtype=torch.float32)
            out.append({"image_id": image_id, "boxes": (loc.cpu() * scale).numpy(),
                        "scores": prob.cpu().numpy(), "labels": label.cpu().numpy() - 1})
        return out

    return Case("SSD", val, batch, ours_batch, reference_batch,
                lambda: coco_map(val, everything)["mAP"],
                lambda: _ssd_reference_end(gt, rows),
                lambda: coco_map(val, everything, backend="faster_coco_eval")["mAP"], per_batch,
                reference_detections)


# -- the benchmarks --------------------------------------------------------------------------
def _run(case: Case, measure, shape: str) -> None:
    print(f"\n{case.name}: {len(case.val)} images, {case.counts()}")
    per_batch = f"{case.name} validation, one evaluation batch of {case.batch} images"
    end = f"{case.name} validation, the end of the pass ({len(case.val)} images)"
    rows = [
        measure(per_batch, "mlperf_fast batched post-processing", case.ours_batch,
                shape=shape, warmup=3, repeat=10),
        measure(per_batch, "reference port per image + its evaluator's per-batch work",
                case.reference_batch, role="baseline", shape=shape, warmup=1, repeat=3,
                min_time_s=0.0),
        measure(end, "mlperf_fast coco_map (vectorized)", case.ours_end, shape=shape,
                warmup=0, repeat=1, min_time_s=0.0),
        measure(end, "faster-coco-eval fed a dict per box", case.dict_end, role="baseline",
                shape=shape, warmup=0, repeat=1, min_time_s=0.0),
        measure(end, "reference evaluator's end (pycocotools)", case.reference_end,
                role="baseline", shape=shape, warmup=0, repeat=1, min_time_s=0.0),
    ]
    ours = case.batches * rows[0].median_ms + rows[2].median_ms
    ref = case.batches * rows[1].median_ms + rows[4].median_ms
    print(f"{case.name} validation pass ({case.batches} batches + the end): ours "
          f"{ours / 1e3:.1f} s, the reference's way {ref / 1e3:.1f} s: {ref / ours:.1f}x")


@pytest.mark.cuda
def test_retinanet_validation_pass(measure):
    pytest.importorskip("torchvision")
    pytest.importorskip("pycocotools")
    pytest.importorskip("faster_coco_eval")
    case = retinanet_case("cuda")
    _run(case, measure, f"{len(case.val)} images, 264 classes, 120087 anchors, B=32, fp32")


@pytest.mark.cuda
def test_ssd_validation_pass(measure):
    pytest.importorskip("pycocotools")
    pytest.importorskip("faster_coco_eval")
    case = ssd_case("cuda")
    _run(case, measure, f"{len(case.val)} images, 80 classes, 8732 boxes, B=64, fp32")


# -- on the CPU ------------------------------------------------------------------------------
def _same_detections(ours: list[dict], ref: list[dict]) -> None:
    for a, b in zip(ours, ref, strict=True):
        assert a["image_id"] == b["image_id"] and len(a["scores"]) == len(b["scores"])
        order = np.argsort(-b["scores"], kind="stable")
        np.testing.assert_allclose(a["scores"], b["scores"][order], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a["boxes"], b["boxes"][order], rtol=1e-4, atol=1e-3)


def smoke() -> None:
    """Every function of both cases on the CPU at the embedded configurations' geometry, 12
    images (tests run this: the benchmark's code works): the reference's per-image
    post-processing gives our detections, and both ends the same mAP."""
    pytest.importorskip("torchvision")
    pytest.importorskip("pycocotools")
    pytest.importorskip("faster_coco_eval")
    from mlperf_fast.workloads.retinanet.config import EMBEDDED as RETINANET
    from mlperf_fast.workloads.ssd.config import EMBEDDED as SSD

    for case in (retinanet_case("cpu", 12, RETINANET, batch=4),
                 ssd_case("cpu", 12, SSD, batch=4)):
        assert case.batches == 3
        for r in range(ROTATE):
            _same_detections(case.batch_detections[r], case.reference_detections(r))
        case.ours_batch()
        case.reference_batch()
        assert 0.0 < case.ours_end() <= 1.0
        assert case.ours_end() == pytest.approx(case.reference_end(), abs=1e-12)
        assert case.ours_end() == pytest.approx(case.dict_end(), abs=1e-12)
    for which, images in (("retinanet", 64), ("ssd", 128)):  # two batches each
        val, dets = detections_case(which, images)
        assert coco_map(val, dets)["mAP"] == pytest.approx(
            coco_map(val, dets, backend="pycocotools")["mAP"], abs=1e-12)


def synthetic_detections(val: CocoSet, per_image: int, confusable: int, seed: int = 0
                         ) -> list[dict]:
    """Detections as coco_map takes them, drawn from ``val``'s ground truth without a network:
    per image ``per_image`` of them over ``confusable`` classes (its own among them): three
    found boxes per object (its class, jittered by 10% of its size, scores 0.3-1) and the rest
    misplaced boxes of those classes (scores 0.05-0.5), sorted by score; float32 boxes and
    scores, as the workloads hand them over."""
    rng = np.random.default_rng(seed)
    out = []
    for i, im in enumerate(val.images):
        b, lab = val.boxes[i].astype(np.float64), val.labels[i]
        rep = np.repeat(np.arange(len(b)), 3)[:per_image]
        size = np.tile(b[rep, 2:] - b[rep, :2], 2)
        found = b[rep] + rng.normal(0, 0.1, (len(rep), 4)) * size
        classes = np.unique(np.concatenate([lab, rng.choice(val.num_classes, confusable,
                                                             replace=False)]))[:confusable]
        n = per_image - len(rep)
        x0, y0 = rng.uniform(0, im.width - 8, n), rng.uniform(0, im.height - 8, n)
        w = np.exp(rng.uniform(np.log(4), np.log(im.width * 0.6), n))
        h = np.exp(rng.uniform(np.log(4), np.log(im.height * 0.6), n))
        misplaced = np.stack([x0, y0, np.minimum(x0 + w, im.width),
                              np.minimum(y0 + h, im.height)], 1)
        scores = np.concatenate([rng.uniform(0.3, 1, len(rep)), rng.uniform(0.05, 0.5, n)])
        order = np.argsort(-scores, kind="stable")
        out.append({"image_id": im.id,
                    "boxes": np.concatenate([found, misplaced]).astype(np.float32)[order],
                    "scores": scores.astype(np.float32)[order],
                    "labels": np.concatenate([lab[rep], rng.choice(classes, n)])[order]})
    return out


def detections_case(which: str, num_images: int, seed: int = 0) -> tuple[CocoSet, list[dict]]:
    """The validation set of ``which`` ("retinanet": 264 classes, 300 detections per image
    over 30 classes; "ssd": 80 classes, 200 over 20) and its ``synthetic_detections``."""
    if which == "retinanet":
        val = synthetic_set(num_images, 264, 32, RETINANET_SIZES, seed)
        return val, synthetic_detections(val, 300, RETINANET_CONFUSABLE, seed)
    val = synthetic_set(num_images, 80, 64, COCO_SIZES, seed)
    return val, synthetic_detections(val, 200, SSD_CONFUSABLE, seed)


def _main_end(which: str, images: int, everything: bool) -> None:
    """The end of the pass alone: coco_map against faster-coco-eval fed dicts (and pycocotools
    with ``everything``), each run twice (the first call also faults in fresh memory)."""
    t = time.perf_counter()
    val, dets = detections_case(which, images)
    n = sum(len(d["scores"]) for d in dets)
    print(f"{which}: {len(val)} images, {n} detections, {val.num_classes} classes; drawn in "
          f"{time.perf_counter() - t:.0f} s")
    backends = ["vectorized", "faster_coco_eval"] + (["pycocotools"] if everything else [])
    for backend in backends:
        for run in range(2):
            t = time.perf_counter()
            result = coco_map(val, dets, backend=backend)
            print(f"coco_map {backend}, call {run + 1}: {time.perf_counter() - t:.2f} s "
                  f"(mAP {result['mAP']:.12f})", flush=True)


def main() -> None:
    """``python bench_detection_eval.py [retinanet|ssd] [images] [device] [end|all]``: the four
    rows' times at a reduced size, printed (no results file); ``end``: the end of the pass
    alone, on synthetic detections (``all``: with pycocotools too)."""
    from mlperf_fast.harness import timing

    which = sys.argv[1] if len(sys.argv) > 1 else "ssd"
    images = int(sys.argv[2]) if len(sys.argv) > 2 else None
    device = sys.argv[3] if len(sys.argv) > 3 else ("cuda" if torch.cuda.is_available()
                                                    else "cpu")
    if len(sys.argv) > 4 and sys.argv[4] in ("end", "all"):
        default = 24781 if which == "retinanet" else 5000
        _main_end(which, images or default, sys.argv[4] == "all")
        return
    t = time.perf_counter()
    case = (retinanet_case if which == "retinanet" else ssd_case)(device, images)
    print(f"{case.name}: {len(case.val)} images, {case.counts()}; set up in "
          f"{time.perf_counter() - t:.0f} s")
    times = {}
    for name, fn, repeat in (("ours per batch", case.ours_batch, 5),
                             ("reference per batch", case.reference_batch, 3),
                             ("ours end", case.ours_end, 1),
                             ("faster-coco-eval end", case.dict_end, 1),
                             ("reference end", case.reference_end, 1)):
        times[name] = timing.median(timing.time_fn(fn, device=device, warmup=1, repeat=repeat))
        print(f"{name}: {times[name] * 1e3:.1f} ms", flush=True)
    ours = case.batches * times["ours per batch"] + times["ours end"]
    ref = case.batches * times["reference per batch"] + times["reference end"]
    print(f"pass ({case.batches} batches + the end): ours {ours:.1f} s, the reference's way "
          f"{ref:.1f} s: {ref / ours:.1f}x")


if __name__ == "__main__":
    main()
