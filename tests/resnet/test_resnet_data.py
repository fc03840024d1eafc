"""ResNet's data: the ImageFolder and TFRecord readers (round trip through the reference's shard
format, damaged files), the embedded JPEG set, and the pipeline's crops, flips, normalization,
evaluation crop (by hand) and sharding, against the reference's rules."""
import json
import math
import os
import pathlib

import numpy as np
import pytest
import torch

from mlperf_fast.data import tfrecord
from mlperf_fast.harness.workload import DataError
from mlperf_fast.workloads.resnet import data, synth
from mlperf_fast.workloads.resnet import pipeline as P

SMALL = synth.SynthSettings(num_classes=10, train_per_class=6, val_per_class=3, seed=7)


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("cache")
    mp.setenv("MLPERF_FAST_CACHE", str(root))
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def embedded():
    return synth.embedded_dataset(SMALL, log=lambda m: None)


def quiet(msg: str) -> None:
    pass


def jpeg(value: int = 128, w: int = 20, h: int = 16) -> bytes:
    return synth.encode_jpeg(np.full((h, w, 3), value, dtype=np.uint8), 90)


def make_folder(root, layout: dict[str, dict[str, list[str]]]) -> str:
    for split, classes in layout.items():
        for cls, files in classes.items():
            os.makedirs(root / split / cls, exist_ok=True)
            for name in files:
                (root / split / cls / name).write_bytes(jpeg())
    return str(root)


# -- ImageFolder ----------------------------------------------------------------------------------
def test_imagefolder_labels_follow_sorted_classes(tmp_path):
    d = make_folder(tmp_path, {
        "train": {"n03": ["b.JPEG", "a.jpg"], "n01": ["x.jpeg", "notes.txt"], "n02": ["c.JPG"]},
        "val": {"n01": ["v1.JPEG"], "n02": [], "n03": ["v3.JPEG"]}})
    (tmp_path / "train" / "README").write_text("not a class")
    train = data.open_split(d, "train")
    assert train.classes == ("n01", "n02", "n03") and train.num_classes == 3
    assert [os.path.basename(p) for p in train.paths] == ["x.jpeg", "c.JPG", "a.jpg", "b.JPEG"]
    assert train.labels.dtype == np.int64 and train.labels.tolist() == [0, 1, 2, 2]
    val = data.open_split(d, "val")
    assert val.labels.tolist() == [0, 2] and val.num_classes == 3
    assert val.load(1) == jpeg() and train.layout == "imagefolder"
    data.check_dataset(d)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataError, match="ImageFolder.*TFRecord.*found nothing"):
        data.open_split(str(tmp_path), "train")
    with pytest.raises(DataError, match="not a folder"):
        data.check_dataset(str(tmp_path / "nowhere"))
    d = make_folder(tmp_path / "a", {"train": {"n01": ["a.JPEG"], "n02": ["b.JPEG"]},
                                     "val": {"n01": ["c.JPEG"]}})
    with pytest.raises(DataError, match=r"missing: \['n02'\]"):
        data.open_split(d, "val")
    with pytest.raises(DataError, match="val is missing"):
        data.open_split(make_folder(tmp_path / "b", {"train": {"n01": ["a.JPEG"]}}), "val")
    with pytest.raises(DataError, match="n02 holds no images"):
        data.open_split(make_folder(tmp_path / "c", {"train": {"n01": ["a.JPEG"], "n02": []}}),
                        "train")
    with pytest.raises(ValueError, match="split"):
        data.open_split(d, "test")


# -- TFRecord -------------------------------------------------------------------------------------
def test_tfrecord_round_trip(tmp_path, embedded):
    train = data.open_split(embedded, "train")
    samples = [(train.load(i), int(train.labels[i])) for i in range(len(train))]
    boxes = [np.array([[0.1, 0.2, 0.5, 0.9]] * (i % 3), dtype=np.float32).reshape(-1, 4)
             for i in range(len(train))]
    out = tmp_path / "shards"
    paths = data.write_tfrecords(samples, str(out), "train", 4, boxes=boxes, synsets=train.classes)
    data.write_tfrecords(samples[:7], str(out), "validation", 2)
    assert [os.path.basename(p) for p in paths] == [f"train-0000{k}-of-00004" for k in range(4)]
    data.check_dataset(str(out))
    back = data.open_split(str(out), "train", log=quiet)
    assert back.layout == "tfrecord" and len(back) == len(samples) and back.num_classes == 10
    assert all(back.load(i) == samples[i][0] for i in range(len(samples)))
    assert back.labels.dtype == np.int64 and back.labels.tolist() == [s[1] for s in samples]
    assert all(np.array_equal(back.boxes(i), boxes[i]) for i in range(len(samples)))
    # on disk the labels are 1-based, as the reference's files (it subtracts 1 when reading)
    off, n = back.records[0, 1:].tolist()
    ex = tfrecord.decode_example(tfrecord.read_record(back.shards[0], off, n))
    assert ex["image/class/label"] == [samples[0][1] + 1]
    assert ex["image/class/synset"] == [train.classes[samples[0][1]].encode()]
    val = data.open_split(str(out), "val", num_classes=10, log=quiet)
    assert len(val) == 7 and val.boxes(0).shape == (0, 4) and val.num_classes == 10
    # a second open reads the cached index (no "building" message)
    said = []
    data.open_split(str(out), "train", log=said.append)
    assert said == []


def test_imagefolder_to_tfrecords_matches(tmp_path, embedded):
    out = str(tmp_path / "rec")
    data.imagefolder_to_tfrecords(embedded, out, train_shards=3, val_shards=2, seed=1)
    src_tr, src_va = data.open_split(embedded, "train"), data.open_split(embedded, "val")
    rec_tr, rec_va = data.open_split(out, "train", log=quiet), data.open_split(out, "val", log=quiet)
    order = np.random.default_rng(1).permutation(len(src_tr))
    assert rec_tr.labels.tolist() == src_tr.labels[order].tolist()
    assert rec_tr.load(5) == src_tr.load(int(order[5]))
    assert rec_va.labels.tolist() == src_va.labels.tolist() and rec_va.load(0) == src_va.load(0)


def write_shard(path, examples):
    tfrecord.write_records(str(path), [tfrecord.encode_example(e) for e in examples])


def test_tfrecord_labels_are_one_based(tmp_path):
    write_shard(tmp_path / "train-00000-of-00001",
                [{"image/encoded": jpeg(), "image/class/label": 1},
                 {"image/encoded": jpeg(), "image/class/label": 0}])
    with pytest.raises(DataError, match=r"train-00000-of-00001 \(record at offset \d+\).*"
                                        "label 0 is outside 1..1.*1-based"):
        data.open_split(str(tmp_path), "train", log=quiet)


def test_tfrecord_packed_and_unpacked_labels(tmp_path):
    # the label as a packed int64 list (what encode_example writes) and as an unpacked one
    packed = tfrecord.encode_example({"image/encoded": b"jpeg", "image/class/label": [3]})
    feats = tfrecord.encode_example({"image/encoded": b"jpeg"})
    # hand-append one more map entry: key "image/class/label", Feature{int64_list{1: 2}} unpacked
    key = b"image/class/label"
    entry = b"\x0a" + bytes([len(key)]) + key + b"\x12\x04\x1a\x02\x08\x02"
    inner = feats[2:] + b"\x0a" + bytes([len(entry)]) + entry
    unpacked = b"\x0a" + bytes([len(inner)]) + inner
    assert tfrecord.decode_example(unpacked)["image/class/label"] == [2]
    tfrecord.write_records(str(tmp_path / "train-00000-of-00001"), [packed, unpacked])
    s = data.open_split(str(tmp_path), "train", log=quiet)
    assert s.labels.tolist() == [2, 1] and s.num_classes == 3


def test_tfrecord_damage(tmp_path, embedded):
    train = data.open_split(embedded, "train")
    samples = [(train.load(i), int(train.labels[i])) for i in range(6)]
    good = tmp_path / "good"
    data.write_tfrecords(samples, str(good), "train", 2)
    raw = (good / "train-00001-of-00002").read_bytes()
    offsets, _ = tfrecord.scan_records(str(good / "train-00001-of-00002"))

    def broken(name: str, content: bytes) -> str:
        d = tmp_path / name
        data.write_tfrecords(samples, str(d), "train", 2)
        (d / "train-00001-of-00002").write_bytes(content)
        return str(d)

    flipped = bytearray(raw)
    flipped[int(offsets[1]) + 500] ^= 0x08  # inside the JPEG of the second record
    with pytest.raises(DataError, match=rf"crc/train-00001-of-00002: the data CRC of record 1 "
                                        rf"\(at offset {int(offsets[1]) - 12}\)"):
        data.open_split(broken("crc", bytes(flipped)), "train", log=quiet)
    with pytest.raises(DataError, match=r"cut/train-00001-of-00002: the record at offset \d+ "
                                        "is truncated"):
        data.open_split(broken("cut", raw[:-10]), "train", log=quiet)
    d = broken("gone", raw)
    os.remove(os.path.join(d, "train-00000-of-00002"))
    with pytest.raises(DataError, match="1 of the 2 train shards are missing.*train-00000-of-00002"):
        data.check_dataset(d)
    with pytest.raises(DataError, match="no validation"):
        data.check_dataset(str(good))


# -- the embedded set -----------------------------------------------------------------------------
def test_embedded_set(embedded, tmp_path, monkeypatch):
    meta = synth.read_meta(embedded)
    assert meta["train_images"] == 60 and meta["val_images"] == 30
    assert meta["classes"]["n00000000"] == "disc" and len(meta["classes"]) == 10
    train, val = data.open_split(embedded, "train"), data.open_split(embedded, "val")
    assert len(train) == 60 and len(val) == 30 and train.classes == val.classes
    assert np.bincount(train.labels).tolist() == [6] * 10
    shapes = set()
    for s in (train, val):
        for i in range(len(s)):
            x = P.decode(s.load(i), s.describe(i))
            assert x.dtype == torch.uint8 and x.shape[0] == 3
            assert x.shape[1] in SMALL.sizes and x.shape[2] in SMALL.sizes
            shapes.add(tuple(x.shape[1:]))
    assert len(shapes) > 3  # not all the same size
    # deterministic: the same settings give the same bytes, a new seed other bytes
    monkeypatch.setenv("MLPERF_FAST_CACHE", str(tmp_path / "again"))
    again = synth.embedded_dataset(SMALL, log=quiet)
    assert again != embedded
    manifest = [json.loads(pathlib.Path(d, "MANIFEST.json").read_text())["files"]
                for d in (embedded, again)]
    assert manifest[0] == manifest[1]
    other = synth.image(synth.SynthSettings(seed=8), "train", 0, 0)
    assert other != synth.image(synth.SynthSettings(seed=7), "train", 0, 0)
    assert synth.image(SMALL, "train", 3, 1) != synth.image(SMALL, "val", 3, 1)


def test_synth_settings_checked():
    with pytest.raises(ValueError, match="num_classes"):
        synth.settings_for(11, 5, 5)
    with pytest.raises(ValueError, match="sizes"):
        synth.SynthSettings(sizes=(8,))


# -- the pipeline ---------------------------------------------------------------------------------
def ramp(height: int, width: int) -> torch.Tensor:
    """uint8 [3, H, W] increasing from left to right."""
    x = torch.linspace(0, 255, width).round().to(torch.uint8)
    return x.expand(3, height, width).contiguous()


def test_normalization():
    px = torch.full((3, 30, 40), 200, dtype=torch.uint8)
    px[1] = 100
    out = P.train_image(px, 16, np.random.default_rng(0))
    want = torch.tensor([200 - 123.68, 100 - 116.78, 200 - 103.94]).view(3, 1, 1)
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32
    torch.testing.assert_close(out, want.expand(3, 16, 16))
    nv = P.Preprocessing(mean=P.NVIDIA_MEAN, std=P.NVIDIA_STD)
    out = P.eval_image(px, 16, nv)
    want = (torch.tensor([200.0, 100.0, 200.0]) - torch.tensor(P.NVIDIA_MEAN)) / torch.tensor(
        P.NVIDIA_STD)
    torch.testing.assert_close(out, want.view(3, 1, 1).expand(3, 16, 16))
    with pytest.raises(ValueError, match="area_range"):
        P.Preprocessing(area_range=(0.0, 1.0))


def test_eval_crop_by_hand():
    # size 7: the shorter side becomes round(7 * 256 / 224) = 8; an 8 x 12 image needs no resize,
    # and the central 7 x 7 crop starts at ((8 - 7) // 2, (12 - 7) // 2) = (0, 2)
    assert P.REFERENCE.eval_resize(7) == 8 and P.REFERENCE.eval_resize(224) == 256
    px = torch.arange(3 * 8 * 12, dtype=torch.int64).remainder(251).to(torch.uint8).view(3, 8, 12)
    mean = torch.tensor(P.REFERENCE_MEAN).view(3, 1, 1)
    torch.testing.assert_close(P.eval_image(px, 7), px[:, 0:7, 2:9].float() - mean)
    # portrait 12 x 8: the crop starts at (2, 0)
    pt = px.transpose(1, 2).contiguous()
    torch.testing.assert_close(P.eval_image(pt, 7), pt[:, 2:9, 0:7].float() - mean)
    # 375 x 500 at 224: the shorter side 256, the longer int(500 * (256 / 375)) in float32 = 341;
    # a ramp keeps its left-right order and its centre
    out = P.eval_image(ramp(375, 500), 224)
    assert out.shape == (3, 224, 224)
    assert float(out[0, 0, 0]) < float(out[0, 0, 223])
    row = out[0, 100] + 123.68
    # the crop's columns 58..281 of 341: the ramp's values there, up to the resize's rounding
    assert abs(float(row[0]) - 255 * 58.5 / 341) < 3 and abs(float(row[-1]) - 255 * 281.5 / 341) < 3


def test_crop_distribution_follows_the_reference():
    rng = np.random.default_rng(3)
    h, w = 240, 320
    crops = [P.sample_crop(h, w, rng) for _ in range(600)]
    area = np.array([ch * cw for _, _, ch, cw in crops]) / (h * w)
    ratio = np.array([cw / ch for _, _, ch, cw in crops])
    assert all(0 <= t and 0 <= le and t + ch <= h and le + cw <= w for t, le, ch, cw in crops)
    # no boxes: the whole image is the object, and min_object_covered=0.1 keeps 10% of it
    assert area.min() >= 0.1 and area.max() <= 1.0
    assert ((ratio > 0.75 - 0.02) & (ratio < 1.33 + 0.02)).all()
    assert (area < 0.25).mean() > 0.05 and (area > 0.7).mean() > 0.05
    # TF's sampler: r uniform, height uniform over [sqrt(0.05 / r), min(sqrt(1 / r), fits)],
    # rejected below 10%; the mean area of a continuous simulation of that rule
    sim = np.random.default_rng(4)
    r = sim.uniform(0.75, 1.33, 200_000)
    lo = np.sqrt(0.05 * h * w / r)
    hi = np.minimum.reduce([np.sqrt(h * w / r), np.full_like(r, h), w / r])
    ch = sim.uniform(lo, hi)
    a = r * ch ** 2 / (h * w)
    assert abs(area.mean() - a[a >= 0.1].mean()) < 0.03
    # a box in a corner: every crop covers at least 10% of it
    box = np.array([[0.0, 0.0, 0.2, 0.25]], dtype=np.float32)
    bh, bw = int(0.2 * h), int(0.25 * w)
    for _ in range(200):
        t, le, ch, cw = P.sample_crop(h, w, rng, box)
        inter = max(0, min(bh, t + ch) - t) * max(0, min(bw, le + cw) - le)
        assert inter >= 0.1 * bh * bw
    # no crop in the aspect range reaches 5% of a 10 x 1000 strip: the whole image
    assert P.sample_crop(10, 1000, rng) == (0, 0, 10, 1000)


def test_flip_probability():
    px = ramp(48, 64)
    flips = 0
    for i in range(400):
        out = P.train_image(px, 12, P.augment_rng(11, 0, i))
        left, right = float(out[0, :, 0].mean()), float(out[0, :, -1].mean())
        assert left != right
        flips += left > right
    # Binomial(400, 0.5): mean 200, sd 10
    assert 150 < flips < 250


def test_train_batches(embedded):
    train = data.open_split(embedded, "train")
    batches = list(P.train_batches(train, 20, 5, 0, size=32))
    assert len(batches) == 3
    x, y = batches[0]
    assert x.shape == (20, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    sampler = P.ShuffledBatches(len(train), 20, 5).epoch(0)
    assert y.tolist() == train.labels[sampler[0]].tolist()
    # deterministic, whatever the number of worker processes; rank slices of the same batch
    again = list(P.train_batches(train, 20, 5, 0, size=32, workers=2))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, again))
    r1 = list(P.train_batches(train, 20, 5, 0, rank=1, world_size=2, size=32))
    assert torch.equal(r1[0][0], x[10:]) and torch.equal(r1[0][1], y[10:])
    other = next(iter(P.train_batches(train, 20, 5, 1, size=32)))
    assert not torch.equal(other[0], x)
    micro = list(P.train_batches(train, 20, 5, 0, size=32, micro_batch=8, stop=1))
    assert [m[0].shape[0] for m in micro] == [8, 8, 4]
    assert torch.equal(torch.cat([m[0] for m in micro]), x)
    clock = P.WaitClock()
    assert len(list(P.train_batches(train, 20, 5, 0, size=32, clock=clock, start=1))) == 2
    assert clock.waited > 0
    with pytest.raises(ValueError, match="divisible"):
        P.train_batches(train, 21, 5, 0, world_size=2)


def test_eval_batches_cover_every_image_once(embedded):
    val = data.open_split(embedded, "val")  # 30 images
    assert [len(b) for b in P.eval_shards(30, 4, 1, 2)] == [4, 4, 4, 3]
    assert [len(b) for b in P.eval_shards(5, 2, 1, 4)] == [1]  # ranks 0..3 hold 2, 1, 1, 1
    assert [len(b) for b in P.eval_shards(5, 2, 0, 4)] == [2]
    seen = []
    for rank in range(2):
        batches = list(P.eval_batches(val, 4, rank, 2, size=24))
        assert len(batches) == 4
        for (x, y, valid), idx in zip(batches, P.eval_shards(30, 4, rank, 2)):
            assert x.shape == (4, 3, 24, 24) and y.dtype == torch.int64 and valid.dtype == torch.bool
            assert valid.sum() == len(idx) and valid[:len(idx)].all()
            assert (x[~valid] == 0).all() and (y[~valid] == 0).all()
            assert y[valid].tolist() == val.labels[idx].tolist()
            for row, i in enumerate(idx):
                assert torch.equal(x[row], P.eval_image(P.decode(val.load(i)), 24))
            seen.extend(idx)
    assert sorted(seen) == list(range(30))


def test_undecodable_image_names_the_file(tmp_path):
    d = make_folder(tmp_path, {"train": {"n01": ["a.JPEG", "b.JPEG"]}, "val": {"n01": ["c.JPEG"]}})
    (tmp_path / "train" / "n01" / "b.JPEG").write_bytes(b"not a jpeg at all")
    train = data.open_split(d, "train")
    with pytest.raises(DataError, match=r"n01/b\.JPEG does not decode"):
        list(P.train_batches(train, 2, 0, 0, size=8))


def test_math_of_eval_resize_matches_reference_float32():
    # the reference computes the new side in float32 and truncates: 256 / 333 * 500 -> 384
    scale = np.float32(256) / np.float32(333)
    assert int(np.float32(500) * scale) == math.floor(np.float32(500) * scale) == 384
    out = P.eval_image(ramp(333, 500), 224)
    assert out.shape == (3, 224, 224)


def test_decode_grey_cmyk_and_png():
    from io import BytesIO

    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 256, (10, 14, 3), dtype=np.uint8)
    for mode, fmt in (("L", "JPEG"), ("CMYK", "JPEG"), ("RGB", "PNG")):
        out = BytesIO()
        Image.fromarray(rgb).convert(mode).save(out, format=fmt)
        x = P.decode(out.getvalue())
        assert x.shape == (3, 10, 14) and x.dtype == torch.uint8
    assert torch.equal(P.decode(out.getvalue()), torch.from_numpy(rgb).permute(2, 0, 1))
    assert torch.equal(P._decode_pil(out.getvalue()), torch.from_numpy(rgb).permute(2, 0, 1))
