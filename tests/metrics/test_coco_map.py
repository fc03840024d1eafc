"""COCO box mAP against hand-computed cases (perfect detections, one shifted box, a ranked false
positive), against pycocotools run directly on json files (the oracle, on random sets with
crowds, every area range and non-contiguous category ids), every backend against pycocotools,
the vectorized evaluator's precision and recall arrays against COCOeval's on sets made to hit
its corners (tied scores and IoUs, duplicate boxes, more than 100 detections of a class in an
image, areas on the ranges' ends, crowd-only classes, unsorted input), empty detections, and bad
input."""
import json

import numpy as np
import pytest
import torch

from mlperf_fast.data import coco as C
from mlperf_fast.metrics import coco_map as M

pycocotools = pytest.importorskip("pycocotools")
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

HAVE_FASTER = M._have_faster()
BACKENDS = ["vectorized", "pycocotools"] + (["faster_coco_eval"] if HAVE_FASTER else [])
CATS = [{"id": 90, "name": "c"}, {"id": 1, "name": "a"}, {"id": 3, "name": "b"}]


def _set(boxes, labels, crowd=None, size=(200, 200), path="gt.json") -> C.CocoSet:
    n = len(boxes)
    images = [C.CocoImage(100 + i, f"{i}.jpg", size[1], size[0]) for i in range(n)]
    boxes = [np.asarray(b, np.float32).reshape(-1, 4) for b in boxes]
    return C.CocoSet(path, ".", images, sorted(CATS, key=lambda c: c["id"]), boxes,
                     [np.asarray(lab, np.int64) for lab in labels],
                     [np.asarray(c if crowd else np.zeros(len(b)), bool)
                      for b, c in zip(boxes, crowd or [None] * n)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_perfect_detections(backend):
    s = _set([[[10, 10, 30, 30], [50, 50, 150, 160]], [[0, 0, 60, 70]]], [[0, 2], [1]])
    dets = [{"image_id": im.id, "boxes": s.boxes[i], "scores": np.linspace(0.9, 0.5, len(s.boxes[i])),
             "labels": s.labels[i]} for i, im in enumerate(s.images)]
    r = M.coco_map(s, dets, backend=backend)
    for k in ("mAP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"):
        assert r[k] == pytest.approx(1.0, abs=1e-12), k


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_shifted_box(backend):
    # a 100 x 100 box found 20 px to the right: IoU = 80 / 120 = 0.667, a match at the
    # thresholds 0.50, 0.55, 0.60 and 0.65 (4 of the 10): mAP 0.4, AP50 1, AP75 0
    s = _set([[[20, 20, 120, 120]]], [[1]])
    dets = [{"image_id": 100, "boxes": [[40, 20, 140, 120]], "scores": [0.9], "labels": [1]}]
    r = M.coco_map(s, dets, backend=backend)
    assert r["mAP"] == pytest.approx(0.4, abs=1e-12)
    assert r["AP50"] == pytest.approx(1.0, abs=1e-12) and r["AP75"] == 0.0
    assert r["APl"] == pytest.approx(0.4, abs=1e-12) and r["APs"] == -1 and r["APm"] == -1
    assert r["AR100"] == pytest.approx(0.4, abs=1e-12)
    # the wrong class is no match at all
    dets[0]["labels"] = [2]
    assert M.coco_map(s, dets, backend=backend)["AP50"] == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_ranked_false_positive(backend):
    # TP (0.9), FP (0.8), TP (0.7) on two objects: precision 1 up to recall 0.5, then 2/3;
    # COCO's 101-point interpolation gives (51 * 1 + 50 * 2/3) / 101 at every threshold
    s = _set([[[10, 10, 50, 50]], [[60, 60, 100, 100]]], [[0], [0]])
    dets = [{"image_id": 100, "boxes": torch.tensor([[10.0, 10, 50, 50], [120, 120, 160, 160]]),
             "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([0, 0])},
            {"image_id": 101, "boxes": torch.tensor([[60.0, 60, 100, 100]]),
             "scores": torch.tensor([0.7]), "labels": torch.tensor([0])}]
    r = M.coco_map(s, dets, backend=backend)
    assert r["mAP"] == pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-12)
    assert r["AR1"] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_detections(backend):
    s = _set([[[10, 10, 50, 50]], []], [[0], []])
    for dets in ([], [{"image_id": 100, "boxes": np.zeros((0, 4)), "scores": [], "labels": []}]):
        r = M.coco_map(s, dets, backend=backend)
        assert r["mAP"] == 0.0 and r["AR100"] == 0.0 and r["APl"] == -1


def _random_case(seed: int, n_images: int = 30):
    rng = np.random.default_rng(seed)
    images, anns, boxes, labels, crowd, areas = [], [], [], [], [], []
    for i in range(n_images):
        h, w = int(rng.integers(150, 400)), int(rng.integers(150, 400))
        images.append(C.CocoImage(7 + 3 * i, f"{i}.jpg", w, h))
        k = int(rng.integers(0, 8))
        # sizes from a few px (small) to most of the image (large)
        bw = np.exp(rng.uniform(np.log(4), np.log(w * 0.9), k))
        bh = np.exp(rng.uniform(np.log(4), np.log(h * 0.9), k))
        x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        b = np.stack([x0, y0, x0 + bw, y0 + bh], 1).astype(np.float32)
        lab = rng.integers(0, 3, k)
        cr = rng.random(k) < 0.1
        ar = (bw * bh * rng.uniform(0.5, 1.0, k)).astype(np.float32)  # masks fill part of a box
        boxes.append(b), labels.append(lab), crowd.append(cr), areas.append(ar)
        for j in range(k):
            anns.append({"id": len(anns) + 1, "image_id": images[-1].id,
                         "category_id": CATS_SORTED[lab[j]]["id"],
                         "bbox": [float(v) for v in C.xyxy_to_xywh(b[j:j + 1].astype(np.float64))[0]],
                         "area": float(ar[j]), "iscrowd": int(cr[j])})
    dets = []
    for i, im in enumerate(images):
        b = boxes[i].astype(np.float64)
        jitter = rng.normal(0, 0.08, b.shape) * np.repeat(b[:, 2:] - b[:, :2], 2, axis=1)
        found = b + jitter
        lab = labels[i].copy()
        lab[rng.random(len(lab)) < 0.1] = rng.integers(0, 3)
        extra = int(rng.integers(0, 6))
        ex0 = rng.uniform(0, im.width - 10, (extra, 1))
        ey0 = rng.uniform(0, im.height - 10, (extra, 1))
        fp = np.concatenate([ex0, ey0, ex0 + rng.uniform(5, 80, (extra, 1)),
                             ey0 + rng.uniform(5, 80, (extra, 1))], 1)
        allb = np.concatenate([found, fp])
        dets.append({"image_id": im.id, "boxes": allb.astype(np.float32),
                     "scores": rng.random(len(allb)).astype(np.float32),
                     "labels": np.concatenate([lab, rng.integers(0, 3, extra)])})
    return images, anns, dets, (boxes, labels, crowd, areas)


CATS_SORTED = sorted(CATS, key=lambda c: c["id"])


def _oracle(gt_file, coco, dets) -> np.ndarray:
    """pycocotools as the references call it: COCO(file), loadRes(list of xywh results)."""
    results = []
    for d in dets:
        b = np.asarray(d["boxes"], np.float64)
        for k in range(len(b)):
            results.append({"image_id": d["image_id"],
                            "category_id": coco.category_id(int(d["labels"][k])),
                            "bbox": [b[k, 0], b[k, 1], b[k, 2] - b[k, 0], b[k, 3] - b[k, 1]],
                            "score": float(d["scores"][k])})
    gt = COCO(str(gt_file))
    ev = COCOeval(gt, gt.loadRes(results), "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    return np.asarray(ev.stats)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_pycocotools_and_faster(tmp_path, seed, capsys):
    images, anns, dets, _ = _random_case(seed)
    path = tmp_path / "gt.json"
    C.write_coco(path, images, anns, CATS)
    coco = C.read_coco(path, tmp_path, check_files=False)
    want = _oracle(path, coco, dets)
    assert 0.05 < want[0] < 0.95  # a case with something to rank
    for backend in BACKENDS:
        for from_file in (False, True):
            got = M.coco_map(coco, dets, backend=backend, from_file=from_file)
            np.testing.assert_allclose([got[k] for k in M.STAT_NAMES], want, rtol=0, atol=1e-12,
                                       err_msg=f"{backend}, from_file={from_file}")
    assert M.coco_map(coco, dets)["mAP"] == pytest.approx(want[0], abs=1e-12)  # "auto"


def test_bad_input():
    s = _set([[[10, 10, 50, 50]]], [[0]])
    with pytest.raises(ValueError, match="image id 5"):
        M.coco_map(s, [{"image_id": 5, "boxes": [[0, 0, 1, 1]], "scores": [1], "labels": [0]}])
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.2"):
        M.coco_map(s, [{"image_id": 100, "boxes": [[0, 0, 1, 1]], "scores": [1], "labels": [3]}])
    with pytest.raises(ValueError, match="2 boxes, 1 scores"):
        M.coco_map(s, [{"image_id": 100, "boxes": np.zeros((2, 4)), "scores": [1],
                        "labels": [0, 0]}])
    with pytest.raises(ValueError, match="backend"):
        M.coco_map(s, [], backend="detectron")
    for bad in ([[0, 0, np.nan, 1]], [[0, 0, 1, np.inf]]):
        with pytest.raises(ValueError, match="image 100: boxes and scores must be finite"):
            M.coco_map(s, [{"image_id": 100, "boxes": bad, "scores": [1], "labels": [0]}])
    with pytest.raises(ValueError, match="must be finite"):
        M.coco_map(s, [{"image_id": 100, "boxes": [[0, 0, 1, 1]], "scores": [np.nan],
                        "labels": [0]}])


def test_ground_truth_document():
    s = _set([[[10, 10, 50, 30]]], [[2]], crowd=[[True]])
    doc = M.ground_truth(s)
    assert doc["annotations"] == [{"id": 1, "image_id": 100, "category_id": 90,
                                   "bbox": [10.0, 10.0, 40.0, 20.0], "area": 800.0,
                                   "iscrowd": 1}]
    json.dumps(doc)  # plain JSON types


# -- the vectorized evaluator against COCOeval's own arrays ----------------------------------
def _corner_case(seed: int):
    """A small random set and detections that hit COCOeval's corners: integer boxes (exact IoU
    ties) or heavily tied scores, duplicate ground-truth and detection boxes, crowds, areas on
    the small / medium / large ends, images in id order or not, classes with only crowds or no
    ground truth, and sometimes more than 100 detections of a class in an image."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 5))
    cats = [{"id": int(i), "name": f"c{i}"} for i in rng.choice(1000, k, replace=False)]
    images, boxes, labels, crowd, areas = [], [], [], [], []
    for i in range(int(rng.integers(1, 16))):
        w, h = int(rng.integers(20, 300)), int(rng.integers(20, 300))
        images.append(C.CocoImage(1000 - 7 * i if seed % 2 else 5 + 3 * i, f"{i}.jpg", w, h))
        n = int(rng.integers(0, 10))
        bw = np.exp(rng.uniform(np.log(2), np.log(w), n))
        bh = np.exp(rng.uniform(np.log(2), np.log(h), n))
        x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        b = np.stack([x0, y0, x0 + bw, y0 + bh], 1)
        b = np.round(b) if seed % 3 == 0 else b
        if n > 1 and rng.random() < 0.5:
            b[1] = b[0]
        ar = (bw * bh * rng.uniform(0.3, 1.2, n)).astype(np.float32)
        if n and rng.random() < 0.4:
            ar[0] = rng.choice([32.0 ** 2, 96.0 ** 2])
        boxes.append(b.astype(np.float32))
        labels.append(rng.integers(0, k, n))
        crowd.append(rng.random(n) < 0.15)
        areas.append(ar)
    s = C.CocoSet("gt.json", ".", images, sorted(cats, key=lambda c: c["id"]), boxes, labels,
                  crowd, areas)
    dets = []
    for i, im in enumerate(images):
        b = boxes[i].astype(np.float64)
        rep = np.repeat(np.arange(len(b)), rng.integers(0, 4, len(b)))
        found = b[rep] + rng.normal(0, 0.1, (len(rep), 4)) * np.tile(b[rep, 2:] - b[rep, :2], 2)
        found = np.round(found) if seed % 3 == 0 else found
        crowded = i == 0 and seed % 4 == 1  # 150 detections of class 0 in one image
        extra = 150 if crowded else int(rng.integers(0, 15))
        x, y = rng.uniform(0, im.width, extra), rng.uniform(0, im.height, extra)
        fp = np.stack([x, y, x + rng.uniform(1, 120, extra), y + rng.uniform(1, 120, extra)], 1)
        allb = np.concatenate([found, fp])
        if len(allb) > 2:
            allb[-1] = allb[0]
        scores = rng.random(len(allb))
        scores = np.round(scores * 5) / 5 if seed % 2 == 0 else scores
        dets.append({"image_id": im.id, "boxes": allb.astype(np.float32),
                     "scores": scores.astype(np.float32),
                     "labels": np.concatenate([labels[i][rep], np.zeros(extra, np.int64)
                                               if crowded else rng.integers(0, k, extra)])})
    rng.shuffle(dets)
    return s, dets


def _cocoeval(coco: C.CocoSet, dets) -> COCOeval:
    gt = COCO()
    gt.dataset = M.ground_truth(coco)
    gt.createIndex()
    dt = COCO()
    dt.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"],
                  "annotations": M.detection_annotations(coco, dets)}
    dt.createIndex()
    ev = COCOeval(gt, dt, "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    return ev


@pytest.mark.parametrize("seed", range(12))
def test_vectorized_equals_cocoeval_arrays(seed, capsys):
    s, dets = _corner_case(seed)
    ev = _cocoeval(s, dets)
    gt, image_ids, cat_ids = M.ground_truth_boxes(s)
    dt = M.detection_boxes(M.flatten_detections(s, dets), s, image_ids, cat_ids)
    precision, recall = M.cocoeval_bbox(gt, dt, len(cat_ids))
    # the same float operations in the same order: equal to the bit, not only within 1e-12
    np.testing.assert_array_equal(precision, ev.eval["precision"])
    np.testing.assert_array_equal(recall, ev.eval["recall"])
    np.testing.assert_array_equal(M.summarize(precision, recall), ev.stats)


def test_vectorized_corner_cases_are_covered():
    """The corner cases above do reach the caps and the ties they are made for."""
    over_cap = ties = 0
    for seed in range(12):
        _, dets = _corner_case(seed)
        for d in dets:
            _, n = np.unique(d["labels"], return_counts=True)
            over_cap += int((n > 100).any())
            ties += len(d["scores"]) - len(np.unique(d["scores"]))
    assert over_cap == 3 and ties > 100


def test_vectorized_from_file_and_annotation_id_zero(tmp_path, capsys):
    # COCOeval tests a match by the matched annotation's id: a box with id 0 is matched (its
    # detection is taken) but never counted as a true positive
    images, anns, dets, _ = _random_case(5, n_images=12)
    anns[0]["id"] = 0
    path = tmp_path / "gt.json"
    C.write_coco(path, images, anns, CATS)
    coco = C.read_coco(path, tmp_path, check_files=False)
    want = _oracle(path, coco, dets)
    got = M.coco_map(coco, dets, backend="vectorized", from_file=True)
    np.testing.assert_allclose([got[k] for k in M.STAT_NAMES], want, rtol=0, atol=1e-12)


def test_first_counts():
    npig = np.arange(0, 3000)
    got = M._first_counts(npig)
    for n in (1, 2, 3, 7, 99, 100, 101, 1000, 2999):
        rc = np.arange(n + 1) / n  # COCOeval's recall after j true positives
        np.testing.assert_array_equal(got[n], np.searchsorted(rc, M.RECALL_THRESHOLDS, "left"))


def test_vectorized_no_ground_truth():
    s = _set([[], []], [[], []])
    r = M.coco_map(s, [{"image_id": 100, "boxes": [[0, 0, 5, 5]], "scores": [1], "labels": [0]}])
    assert all(v == -1 for v in r.values())
