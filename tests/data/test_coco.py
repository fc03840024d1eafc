"""The COCO-format reader and writer: a written json reads back (XYWH -> XYXY float32, labels
contiguous by sorted category id), the two layouts' paths, OpenImages' IsGroupOf, every bad
input named with its file, the real files' quirks (overhanging and zero-size boxes), and the
Dataset's decoding (RGB from grayscale JPEGs, torchvision and Pillow agreeing)."""
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from mlperf_fast.data import coco as C
from mlperf_fast.harness.workload import DataError

CATS = [{"id": 7, "name": "seven"}, {"id": 1, "name": "one"}, {"id": 90, "name": "ninety"}]


def _jpeg(h: int, w: int, mode: str = "RGB", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (h, w, 3) if mode == "RGB" else (h, w), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(arr, mode).save(out, format="JPEG", quality=95)
    return out.getvalue()


def _write_set(tmp_path, anns=None, images=None, cats=CATS, files=True):
    images = images or [C.CocoImage(10, "a.jpg", 40, 30), C.CocoImage(3, "b.jpg", 20, 20),
                        C.CocoImage(5, "c.jpg", 16, 12)]
    if anns is None:
        anns = [
            {"id": 1, "image_id": 10, "category_id": 90, "bbox": [1.5, 2, 10, 5], "area": 40.0,
             "iscrowd": 0, "segmentation": [[1.5, 2, 11.5, 2, 11.5, 7, 1.5, 7]]},
            {"id": 2, "image_id": 3, "category_id": 1, "bbox": [0, 0, 20, 20], "area": 400,
             "iscrowd": 1},
            {"id": 3, "image_id": 10, "category_id": 7, "bbox": [30, 20, 10, 10], "area": 50,
             "iscrowd": 0},
        ]
    root = tmp_path / "img"
    root.mkdir(exist_ok=True)
    if files:
        for im in images:
            (root / im.file_name).write_bytes(_jpeg(im.height, im.width))
    path = tmp_path / "ann.json"
    C.write_coco(path, images, anns, cats)
    return path, root


def test_round_trip(tmp_path):
    path, root = _write_set(tmp_path)
    s = C.read_coco(path, root, with_segmentation=True)
    assert [im.id for im in s.images] == [10, 3, 5]
    assert [c["id"] for c in s.categories] == [1, 7, 90]
    assert s.num_classes == 3 and [s.category_id(k) for k in range(3)] == [1, 7, 90]
    assert s.boxes[0].dtype == np.float32 and s.labels[0].dtype == np.int64
    np.testing.assert_array_equal(s.boxes[0], [[1.5, 2, 11.5, 7], [30, 20, 40, 30]])
    np.testing.assert_array_equal(s.labels[0], [2, 1])
    np.testing.assert_array_equal(s.iscrowd[1], [True])
    np.testing.assert_array_equal(s.areas[0], [40, 50])
    assert s.boxes[2].shape == (0, 4) and s.labels[2].shape == (0,)
    assert s.segmentations[0][0] == [[1.5, 2, 11.5, 2, 11.5, 7, 1.5, 7]]
    assert s.segmentations[0][1] is None
    assert s.image_path(1) == root / "b.jpg" and len(s) == 3
    assert list(s.category_ids(np.array([0, 2]))) == [1, 90]
    # images without boxes left out on request
    assert [im.id for im in C.read_coco(path, root, skip_empty=True).images] == [10, 3]
    # the reader's output written back reads the same
    anns = []
    for i, im in enumerate(s.images):
        for b, lab, cr in zip(s.boxes[i], s.labels[i], s.iscrowd[i]):
            anns.append({"id": len(anns) + 1, "image_id": im.id,
                         "category_id": s.category_id(int(lab)),
                         "bbox": C.xyxy_to_xywh(b[None])[0], "area": 1.0, "iscrowd": int(cr)})
    C.write_coco(tmp_path / "again.json", s.images, anns, s.categories)
    t = C.read_coco(tmp_path / "again.json", root)
    for i in range(len(s)):
        np.testing.assert_array_equal(s.boxes[i], t.boxes[i])
        np.testing.assert_array_equal(s.labels[i], t.labels[i])


def test_layout_paths(tmp_path):
    assert C.openimages_paths(tmp_path, "validation") == (
        tmp_path / "validation" / "data",
        tmp_path / "validation" / "labels" / "openimages-mlperf.json")
    assert C.coco2017_paths(tmp_path, "train") == (
        tmp_path / "train2017", tmp_path / "annotations" / "instances_train2017.json")
    with pytest.raises(ValueError, match="split"):
        C.openimages_paths(tmp_path, "val")
    with pytest.raises(ValueError, match="split"):
        C.coco2017_paths(tmp_path, "validation")


def test_openimages_isgroupof(tmp_path):
    # a raw FiftyOne export carries IsGroupOf; the MLPerf script copies it into iscrowd
    anns = [{"id": 1, "image_id": 10, "category_id": 1, "bbox": [0, 0, 5, 5], "IsGroupOf": True},
            {"id": 2, "image_id": 10, "category_id": 1, "bbox": [0, 0, 6, 5], "IsGroupOf": False,
             "IsOccluded": True}]
    path, root = _write_set(tmp_path, anns=anns)
    s = C.read_coco(path, root)
    np.testing.assert_array_equal(s.iscrowd[0], [True, False])
    np.testing.assert_array_equal(s.areas[0], [25, 30])  # w * h where the json has no area


def _expect(tmp_path, match, **kw):
    path, root = _write_set(tmp_path, **kw)
    with pytest.raises(DataError, match=match) as e:
        C.read_coco(path, root)
    return str(e.value)


def _ann(**over):
    a = {"id": 1, "image_id": 10, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25,
         "iscrowd": 0}
    a.update(over)
    return a


@pytest.mark.parametrize("over, match", [
    ({"bbox": [1, 1, -2, 5]}, "negative width"),
    ({"bbox": [1, 1, 5, float("nan")]}, "not finite"),
    ({"bbox": [30, 1, 20, 5]}, "outside its image"),
    ({"bbox": [-5, 1, 3, 5]}, "outside its image"),
    ({"bbox": [1, 1, 5]}, "expected"),
    ({"category_id": 2}, "category_id 2"),
    ({"image_id": 99}, "image 99"),
])
def test_bad_annotations(tmp_path, over, match):
    msg = _expect(tmp_path, match, anns=[_ann(**over)])
    assert str(tmp_path / "ann.json") in msg


def test_missing_keys_and_bad_files(tmp_path):
    path = tmp_path / "ann.json"
    with pytest.raises(DataError, match="does not exist"):
        C.read_coco(path, tmp_path)
    path.write_text('{"images": [')
    with pytest.raises(DataError, match=r"ann\.json is not valid JSON"):
        C.read_coco(path, tmp_path)
    path.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DataError, match="'categories'"):
        C.read_coco(path, tmp_path)
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 4}],
                                "annotations": [], "categories": CATS}))
    with pytest.raises(DataError, match="'height'"):
        C.read_coco(path, tmp_path)
    path.write_text(json.dumps({"images": [], "annotations": [{"id": 1, "image_id": 1}],
                                "categories": CATS}))
    with pytest.raises(DataError, match="'category_id', 'bbox'"):
        C.read_coco(path, tmp_path)


def test_duplicates_and_missing_images(tmp_path):
    imgs = [C.CocoImage(1, "a.jpg", 8, 8), C.CocoImage(1, "b.jpg", 8, 8)]
    _expect(tmp_path, "image id 1 appears more than once", images=imgs, anns=[])
    _expect(tmp_path, "category id 7 appears more than once", anns=[],
            cats=CATS + [{"id": 7, "name": "again"}])
    path, root = _write_set(tmp_path, anns=[])
    (root / "b.jpg").unlink()
    with pytest.raises(DataError, match=r"b\.jpg is missing: 1 of the 3") as e:
        C.read_coco(path, root)
    assert str(path) in str(e.value)
    assert len(C.read_coco(path, root, check_files=False)) == 3
    with pytest.raises(DataError, match="does not exist"):
        C.read_coco(path, tmp_path / "nowhere")


def test_real_file_quirks(tmp_path):
    # boxes a little over the edge are clipped; zero-size boxes (instances_train2017.json has
    # two) are dropped and counted; strict=True makes both errors
    anns = [_ann(id=1, bbox=[35, 25, 5.5, 5.8]), _ann(id=2, bbox=[3, 4, 1.03, 0.0]),
            _ann(id=3, bbox=[-0.4, 0, 2, 2])]
    path, root = _write_set(tmp_path, anns=anns)
    s = C.read_coco(path, root)
    assert s.dropped == 1
    np.testing.assert_allclose(s.boxes[0], [[35, 25, 40, 30], [0, 0, 1.6, 2]], rtol=1e-6)
    np.testing.assert_array_equal(s.areas[0], [25, 25])
    with pytest.raises(DataError, match="zero width or height"):
        C.read_coco(path, root, strict=True)
    path, root = _write_set(tmp_path, anns=[anns[0]])
    with pytest.raises(DataError, match="outside its image"):
        C.read_coco(path, root, strict=True)


def test_ragged_views():
    r = C.Ragged.from_list([np.ones((2, 4)), np.zeros((0, 4)), np.full((1, 4), 3.0)],
                           np.zeros((0, 4), np.float32))
    assert len(r) == 3 and r[1].shape == (0, 4) and r[-1][0, 0] == 3.0
    assert [len(a) for a in r] == [2, 0, 1] and len(r[0:2]) == 2
    with pytest.raises(IndexError):
        r[3]


def test_dataset_targets_and_decoding(tmp_path):
    path, root = _write_set(tmp_path)
    (root / "c.jpg").write_bytes(_jpeg(12, 16, mode="L"))  # COCO has grayscale JPEGs
    s = C.read_coco(path, root)
    seen = []
    ds = C.DetectionDataset(s, transform=lambda im, t: (im, {**t, "seen": seen.append(1)}))
    img, t = ds[0]
    assert img.dtype == torch.uint8 and img.shape == (3, 30, 40)
    assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64
    assert t["iscrowd"].dtype == torch.bool and t["image_id"] == 10 and t["orig_size"] == (30, 40)
    torch.testing.assert_close(t["boxes"], torch.tensor([[1.5, 2, 11.5, 7], [30, 20, 40, 30]]))
    assert seen == [1]
    gray, _ = ds[2]
    assert gray.shape == (3, 12, 16)
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    # torchvision's decoder and Pillow's agree on these files (within JPEG's IDCT differences)
    pil = np.asarray(Image.open(root / "a.jpg").convert("RGB")).transpose(2, 0, 1)
    assert np.abs(img.numpy().astype(int) - pil.astype(int)).max() <= 2
    # a corrupt file and a size that disagrees with the json are named
    (root / "b.jpg").write_bytes(b"\xff\xd8not a jpeg")
    with pytest.raises(DataError, match=r"b\.jpg is not a readable image"):
        ds[1]
    (root / "b.jpg").write_bytes(_jpeg(21, 20))
    with pytest.raises(DataError, match=r"b\.jpg is 20x21 but .*ann\.json says 20x20"):
        ds[1]


def test_pillow_fallback(monkeypatch, tmp_path):
    data = _jpeg(10, 14, seed=3)
    monkeypatch.setattr(C, "_TORCHVISION_DECODE", False)
    img = C.decode_rgb(data)
    pil = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).transpose(2, 0, 1)
    assert img.shape == (3, 10, 14) and np.array_equal(img.numpy(), pil)
    png = io.BytesIO()
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(png, format="PNG")
    monkeypatch.setattr(C, "_TORCHVISION_DECODE", None)
    assert C.decode_rgb(png.getvalue()).shape == (3, 4, 5)
