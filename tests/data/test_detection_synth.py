"""The embedded detection set: both layouts read back by coco.read_coco, the same bytes from the
same seed, separate streams per split, exact labels (pycocotools' rasterization of the polygons
is the visible mask; boxes and areas are the mask's), no object mostly hidden, the verified
cache, and the generator's speed."""
import hashlib
import time

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from mlperf_fast.data import coco as C
from mlperf_fast.data import detection_synth as S

# pycocotools' decode under numpy 2 warns about its own __array__ use
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SMALL = S.DetectionSynthSettings(num_classes=6, train_images=12, val_images=5, seed=3)


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("cache")
    mp.setenv("MLPERF_FAST_CACHE", str(root))
    yield root
    mp.undo()


def _digest(root) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("layout", S.LAYOUTS)
def test_layout_reads_back(tmp_path, layout):
    S.write_detection_set(tmp_path, SMALL, layout, log=lambda m: None)
    paths = C.openimages_paths if layout == "openimages" else C.coco2017_paths
    splits = ("train", "validation") if layout == "openimages" else ("train", "val")
    sets = [C.read_coco(paths(tmp_path, sp)[1], paths(tmp_path, sp)[0]) for sp in splits]
    assert [len(s) for s in sets] == [12, 5]
    ids = S.category_ids(6, layout)
    assert [c["id"] for c in sets[0].categories] == ids
    assert ids == (list(range(6)) if layout == "openimages" else [1, 2, 3, 5, 6, 7])
    assert sets[0].dropped == 0
    ds = C.DetectionDataset(sets[0])
    img, t = ds[0]
    assert img.shape == (3, 128, 128) and t["boxes"].shape[0] == len(sets[0].boxes[0])
    n = sum(len(b) for b in sets[0].boxes)
    assert 12 <= n <= 12 * SMALL.max_objects
    assert all(not c.any() for c in sets[0].iscrowd)
    # the validation set's own boxes, as detections, score 1 through the category-id mapping
    from mlperf_fast.metrics.coco_map import coco_map

    val = sets[1]
    dets = [{"image_id": im.id, "boxes": val.boxes[i], "scores": np.ones(len(val.boxes[i])),
             "labels": val.labels[i]} for i, im in enumerate(val.images)]
    assert coco_map(val, dets)["AP50"] == pytest.approx(1.0, abs=1e-9)


def test_deterministic_and_split_streams(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    S.write_detection_set(a, SMALL, "coco2017", log=lambda m: None)
    S.write_detection_set(b, SMALL, "coco2017", log=lambda m: None)
    da = _digest(a)
    assert da == _digest(b)
    # image 1 of train and image 1 of val come from different streams
    assert da["train2017/000000000001.jpg"] != da["val2017/000000000001.jpg"]
    other = S.DetectionSynthSettings(num_classes=6, train_images=12, val_images=5, seed=4)
    assert not np.array_equal(S.render(SMALL, "train", 0)[0], S.render(other, "train", 0)[0])


def test_labels_are_exact():
    settings = S.DetectionSynthSettings(num_classes=12, train_images=1, val_images=1,
                                        max_objects=8, seed=11)
    n = 0
    for i in range(40):
        pixels, objects = S.render(settings, "train", i)
        h, w = pixels.shape[:2]
        union = np.zeros((h, w), bool)
        for obj in objects[::-1]:  # the last one drawn is wholly visible
            m = obj["mask"]
            assert not (m & union).any()  # visible masks do not overlap
            union |= m
            a = S.annotation(m)
            rle = mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], h, w))
            assert np.array_equal(mask_utils.decode(rle).astype(bool), m)
            ys, xs = np.nonzero(m)
            assert a["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(),
                                 ys.max() + 1 - ys.min()]
            assert a["area"] == m.sum() >= settings.min_pixels
            n += 1
    assert n > 100


def test_occlusion_keeps_most_of_each_object():
    settings = S.DetectionSynthSettings(num_classes=8, train_images=1, val_images=1,
                                        min_objects=6, max_objects=6, seed=5)
    counts, hidden = [], 0
    for i in range(30):
        objects = S.render(settings, "val", i)[1]
        counts.append(len(objects))
        for obj in objects:
            visible = int(obj["mask"].sum())
            assert visible >= settings.min_visible * obj["drawn"]
            hidden += visible < obj["drawn"]
    assert np.mean(counts) >= 4  # crowded images still hold most of the objects asked for
    assert hidden >= 20  # and occlusion does happen


def test_mask_polygons_holes_and_pieces():
    m = np.zeros((12, 14), bool)
    m[2:10, 2:12] = True
    m[4:7, 5:9] = False  # a hole
    m[11, 0] = True  # a separate pixel
    m[0, 13] = True
    polys = S.mask_polygons(m)
    rle = mask_utils.merge(mask_utils.frPyObjects(polys, 12, 14))
    assert np.array_equal(mask_utils.decode(rle).astype(bool), m)
    assert S.mask_polygons(np.zeros((3, 3), bool)) == []
    rng = np.random.default_rng(0)
    for _ in range(20):
        r = rng.random((20, 24)) < 0.45
        rle = mask_utils.merge(mask_utils.frPyObjects(S.mask_polygons(r), 20, 24))
        assert np.array_equal(mask_utils.decode(rle).astype(bool), r)


def test_embedded_cache(cache):
    messages = []
    root = S.embedded_detection_set(SMALL, "openimages", log=messages.append)
    assert any("building" in m for m in messages)
    assert (root / "train" / "labels" / "openimages-mlperf.json").is_file()
    assert S.read_meta(root)["counts"]["val"]["images"] == 5
    messages.clear()
    assert S.embedded_detection_set(SMALL, "openimages", log=messages.append) == root
    assert not any("building" in m for m in messages)
    # a damaged file is found and the set rebuilt
    victim = next((root / "validation" / "data").iterdir())
    victim.write_bytes(b"broken")
    assert S.embedded_detection_set(SMALL, "openimages", log=messages.append) == root
    assert any("damaged" in m for m in messages)
    assert victim.read_bytes()[:2] == b"\xff\xd8"


def test_settings_checked():
    with pytest.raises(ValueError, match="num_classes"):
        S.DetectionSynthSettings(num_classes=13)
    with pytest.raises(ValueError, match="size"):
        S.DetectionSynthSettings(size=(16, 16))
    with pytest.raises(ValueError, match="layout"):
        S.write_detection_set("/nonexistent", SMALL, "voc")
    ranged = S.DetectionSynthSettings(size=((64, 96), (80, 120)), seed=1)
    shapes = {S.render(ranged, "train", i)[0].shape for i in range(8)}
    assert len(shapes) > 1 and all(64 <= h <= 96 and 80 <= w <= 120 for h, w, _ in shapes)


def test_speed(tmp_path):
    # the default image size; 2,000 images must take well under a minute of one core (CPU time:
    # the wall time of a shared machine says little)
    torch.set_num_threads(1)
    S.photos()
    settings = S.DetectionSynthSettings(train_images=100, val_images=1)
    t0 = time.process_time()
    S.write_detection_set(tmp_path, settings, "openimages", log=lambda m: None)
    per_image = (time.process_time() - t0) / 101
    assert per_image * 2000 < 30, f"{per_image * 1e3:.1f} ms per image"
