"""ResNet's DALI input pipeline (dali_pipeline.py) against the CPU path (pipeline.py) on the same
images: DALI's CPU operators here (device_id=None), the mixed (GPU) path in the cuda-marked test.

Tolerances, in 0-255 units (the reference's normalization divides by 1): DALI's CPU decoder is
libjpeg-turbo as torchvision's, and gives the same pixels (whole images and decoded regions), so
what is left is the resize: both are antialiased bilinear, and inside the image they differ by
the rounding to uint8 alone, at most 1 level. Evaluation crops lie inside the resized image: at
most 1 anywhere. Training views are resized crops, whose outermost row and column differ more
(torchvision renormalizes the filter at the edge, DALI repeats the edge pixel): at most 1
inside, a mean under 0.3 over everything (measured: 0.13-0.18). A crop one pixel off, a missed
flip or a swapped axis moves these images by several levels on average (checked below), far
beyond both bounds.
"""
from __future__ import annotations

import dataclasses
import io
import os

import numpy as np
import pytest
import torch

pytest.importorskip("nvidia.dali")

from mlperf_fast.data.samplers import ShuffledBatches
from mlperf_fast.harness.workload import DataError, Metric, RunContext, Schedule
from mlperf_fast.workloads.resnet import dali_pipeline as D
from mlperf_fast.workloads.resnet import data, synth
from mlperf_fast.workloads.resnet import pipeline as P

SMALL = synth.SynthSettings(num_classes=10, train_per_class=6, val_per_class=3, seed=7)
EVAL_MAX = 1.0 + 1e-4  # one level of rounding (float32 normalization adds ~1e-5)
TRAIN_INSIDE_MAX = 1.0 + 1e-4
TRAIN_MEAN = 0.3


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("MLPERF_FAST_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def embedded() -> str:
    return synth.embedded_dataset(SMALL, log=lambda m: None)


@pytest.fixture(scope="module")
def train(embedded):
    return data.open_split(embedded, "train")  # 60 images of 64-96 px


@pytest.fixture(scope="module")
def val(embedded):
    return data.open_split(embedded, "val")  # 30 images


@pytest.fixture(scope="module")
def dali():
    return D.DaliInput(None, num_threads=1)


def subset(images, indices):
    return dataclasses.replace(images, labels=images.labels[indices],
                               paths=[images.paths[i] for i in indices])


def encodings() -> dict[str, bytes]:
    """One picture in the encodings ImageNet holds: baseline 4:2:0 and 4:4:4, progressive, grey,
    CMYK, and a PNG."""
    from PIL import Image

    rgb = synth.draw("star", np.random.default_rng(3), 70, 52)
    out = {}
    for name, mode, kw in (("420", "RGB", {"subsampling": 2}), ("444", "RGB", {"subsampling": 0}),
                           ("progressive", "RGB", {"progressive": True}), ("grey", "L", {}),
                           ("cmyk", "CMYK", {}), ("png", "RGB", {"format": "PNG"})):
        buf = io.BytesIO()
        Image.fromarray(rgb).convert(mode).save(buf, **{"format": "JPEG", "quality": 90, **kw})
        out[name] = buf.getvalue()
    return out


# -- headers --------------------------------------------------------------------------------------
def test_header_sizes_are_the_decoded_sizes(val):
    for name, b in encodings().items():
        assert D.image_size(b, name) == tuple(P.decode(b).shape[1:]) == (52, 70), name
        assert (D.jpeg_size(b) is None) == (name == "png")
    for i in range(len(val)):
        b = val.load(i)
        assert D.jpeg_size(b) == tuple(P.decode(b).shape[1:])
    assert D.jpeg_size(b"\xff\xd8\xff") is None and D.jpeg_size(b"GIF89a....") is None
    with pytest.raises(DataError, match="some/file.JPEG does not decode"):
        D.image_size(b"not an image", "some/file.JPEG")


# -- evaluation -----------------------------------------------------------------------------------
def test_eval_matches_the_cpu_path_and_covers_every_image_once(val, dali):
    seen, first = [], None
    for rank in range(2):
        cpu = list(P.eval_batches(val, 4, rank, 2, size=40))
        got = list(dali.eval_batches(val, 4, rank, 2, size=40))
        assert len(got) == len(cpu) == 4  # 15 images per rank: 4 + 4 + 4 + 3
        for (x, y, valid), (cx, cy, cvalid), idx in zip(got, cpu,
                                                        P.eval_shards(len(val), 4, rank, 2)):
            assert x.shape == (4, 3, 40, 40) and x.dtype == torch.float32 and x.is_contiguous()
            assert y.dtype == torch.int64 and valid.dtype == torch.bool
            assert torch.equal(y, cy) and torch.equal(valid, cvalid)
            assert valid.sum() == len(idx) and valid[:len(idx)].all()
            assert (x[~valid] == 0).all() and (y[~valid] == 0).all()
            assert (x - cx).abs().max() <= EVAL_MAX
            seen.extend(idx)
            first = x[0] if first is None else first
    assert sorted(seen) == list(range(len(val)))
    # the tolerance tells a one-pixel shift of the crop apart (image 0 is rank 0's first)
    pixels = P.decode(val.load(0))
    nh, nw, top, left = P.eval_window(*pixels.shape[1:], 40)
    shifted = P._normalize(P._resize(pixels, nh, nw)[:, top:top + 40, left + 1:left + 41],
                           P.REFERENCE)
    assert (shifted - first).abs().mean() > 5 * EVAL_MAX


def test_eval_empty_batches_and_encodings(tmp_path, val, dali):
    # 5 images over 4 ranks in batches of 1: rank 1 holds one image, then an empty batch
    five = subset(val, [0, 1, 2, 3, 4])
    (_, _, v0), (x1, y1, v1) = dali.eval_batches(five, 1, 1, 4, size=32)
    assert v0.tolist() == [True] and v1.tolist() == [False] and y1.tolist() == [0]
    assert (x1 == 0).all() and x1.shape == (1, 3, 32, 32)
    (x, y, v), = dali.eval_batches(subset(val, [0, 1]), 3, 3, 4, size=32)  # rank 3 holds none
    assert not v.any() and (x == 0).all() and (y == 0).all() and x.shape == (3, 3, 32, 32)
    for d in ("train", "val"):
        os.makedirs(tmp_path / d / "n0")
    for name, b in encodings().items():
        (tmp_path / "train" / "n0" / f"{name}.JPEG").write_bytes(b)
        (tmp_path / "val" / "n0" / f"{name}.JPEG").write_bytes(b)
    odd = data.open_split(str(tmp_path), "val")
    (x, _, _), = dali.eval_batches(odd, 6, size=32)
    (cx, _, _), = P.eval_batches(odd, 6, size=32)
    assert (x - cx).abs().max() <= EVAL_MAX


# -- training -------------------------------------------------------------------------------------
def cpu_windows(images, indices, seed, epoch):
    """The CPU path's windows: train_window on the decoded image's shape."""
    return np.array([P.train_window(*P.decode(images.load(i)).shape[1:],
                                    P.augment_rng(seed, epoch, i), images.boxes(i))
                     for i in indices])


def test_train_windows_flips_and_labels_are_the_cpu_paths(train, dali):
    seed = 5
    for epoch in range(2):
        cpu = list(P.train_batches(train, 20, seed, epoch, size=48))
        got = list(dali.train_batches(train, 20, seed, epoch, size=48))
        order = ShuffledBatches(len(train), 20, seed).epoch(epoch)
        assert len(got) == len(cpu) == 3
        for (x, y), (cx, cy), idx in zip(got, cpu, order):
            windows, _ = D.train_windows(train, idx, seed, epoch)
            assert np.array_equal(windows, cpu_windows(train, idx, seed, epoch))
            assert torch.equal(y, cy) and y.dtype == torch.int64
            assert x.shape == (20, 3, 48, 48) and x.dtype == torch.float32
            d = (x - cx).abs()
            assert d[:, :, 1:-1, 1:-1].max() <= TRAIN_INSIDE_MAX and d.mean() < TRAIN_MEAN
    assert sum(train_view for _, train_view, *_ in dali._runners) == 1  # built once, run twice
    # the CPU path's view is its window's crop, flipped, resized: the same windows, by hand
    pixels = P.decode(train.load(idx[0]))
    top, left, h, w, flip = windows[0]
    crop = pixels[:, top:top + h, left:left + w]
    view = P._normalize(P._resize(crop.flip(-1) if flip else crop, 48, 48), P.REFERENCE)
    assert torch.equal(view, cx[0])
    assert (view.flip(-1) - x[0]).abs().mean() > 5 * TRAIN_MEAN  # a missed flip shows


def test_train_ranks_micro_batches_layouts_and_restarts(train, dali):
    full = list(dali.train_batches(train, 20, 5, 0, size=32))
    r1 = list(dali.train_batches(train, 20, 5, 0, rank=1, world_size=2, size=32))
    assert torch.equal(r1[0][0], full[0][0][10:]) and torch.equal(r1[0][1], full[0][1][10:])
    micro = list(dali.train_batches(train, 20, 5, 0, size=32, micro_batch=8, stop=1))
    assert [m[0].shape[0] for m in micro] == [8, 8, 4]
    assert torch.equal(torch.cat([m[0] for m in micro]), full[0][0])
    # a run left after one batch: the next starts clean, the old one refuses to go on
    left = dali.train_batches(train, 20, 5, 1, size=32)
    next(left)
    again = list(dali.train_batches(train, 20, 5, 0, size=32))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(full, again))
    with pytest.raises(RuntimeError, match="restarted"):
        next(left)
    nhwc = D.DaliInput(None, 1, layout="NHWC", dtype=torch.bfloat16, depth=1)
    clock = P.WaitClock()
    x, y = next(nhwc.train_batches(train, 20, 5, 0, size=32, clock=clock))
    assert x.shape == (20, 3, 32, 32) and x.dtype == torch.bfloat16 and clock.waited > 0
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    assert torch.equal(x, full[0][0].to(torch.bfloat16)) and torch.equal(y, full[0][1])


def test_train_honours_tfrecord_boxes(tmp_path, train, dali):
    rng = np.random.default_rng(0)
    boxes = []
    for _ in range(20):
        y0, x0 = rng.uniform(0, 0.5, 2)
        boxes.append(np.array([[y0, x0, y0 + 0.3, x0 + 0.4]], dtype=np.float32))
    samples = [(train.load(i), int(train.labels[i])) for i in range(20)]
    data.write_tfrecords(samples, str(tmp_path), "train", 2, boxes=boxes)
    data.write_tfrecords(samples[:2], str(tmp_path), "validation", 1)
    shards = data.open_split(str(tmp_path), "train", log=lambda m: None)
    idx = list(range(20))
    windows, _ = D.train_windows(shards, idx, 1, 0)
    assert np.array_equal(windows, cpu_windows(shards, idx, 1, 0))
    assert not np.array_equal(windows, cpu_windows(train, idx, 1, 0))  # the boxes count
    (x, y), = dali.train_batches(shards, 20, 1, 0, size=32)
    (cx, cy), = P.train_batches(shards, 20, 1, 0, size=32)
    d = (x - cx).abs()
    assert torch.equal(y, cy) and d[:, :, 1:-1, 1:-1].max() <= TRAIN_INSIDE_MAX


# -- errors ---------------------------------------------------------------------------------------
def test_errors_before_any_work(tmp_path, train, monkeypatch):
    for kwargs, match in (({"layout": "CHW"}, "layout"), ({"dtype": torch.float16}, "dtype"),
                          ({"num_threads": 0}, "num_threads"), ({"depth": 0}, "depth"),
                          ({"device_id": -1}, "device_id"), ({"device_id": 99}, "no such")):
        with pytest.raises(ValueError, match=match):
            D.DaliInput(**kwargs)
    dali = D.DaliInput(None, 1)
    for size in (0, -3, 2.5):
        with pytest.raises(ValueError, match="size"):
            dali.train_batches(train, 20, 0, 0, size=size)
        with pytest.raises(ValueError, match="size"):
            dali.eval_batches(train, 4, size=size)
    with pytest.raises(ValueError, match="divisible"):
        dali.train_batches(train, 21, 0, 0, world_size=2)
    with pytest.raises(ValueError, match="micro_batch"):
        dali.train_batches(train, 20, 0, 0, micro_batch=0)
    with pytest.raises(ValueError, match="batch"):
        dali.eval_batches(train, 0)
    assert not dali._runners  # nothing was built
    monkeypatch.setattr(D, "dali_available", lambda: False)
    with pytest.raises(ModuleNotFoundError, match=r"mlperf-fast\[dali\]"):
        D.DaliInput()
    with pytest.raises(ModuleNotFoundError, match=r"mlperf-fast\[dali\]"):
        D.eval_batches(train, 4)


def test_bad_images_name_the_file(tmp_path):
    good = synth.encode_jpeg(synth.draw("disc", np.random.default_rng(0), 40, 30), 90)
    for d in ("train", "val"):
        os.makedirs(tmp_path / d / "n01")
        (tmp_path / d / "n01" / "a.JPEG").write_bytes(good)
    (tmp_path / "train" / "n01" / "b.JPEG").write_bytes(b"not a jpeg at all")
    (tmp_path / "val" / "n01" / "c.JPEG").write_bytes(good[:len(good) // 2])  # header intact
    dali = D.DaliInput(None, 1)
    with pytest.raises(DataError, match=r"n01/b\.JPEG does not decode"):
        list(dali.train_batches(data.open_split(str(tmp_path), "train"), 2, 0, 0, size=8))
    with pytest.raises(DataError, match=r"n01/c\.JPEG does not decode"):
        list(dali.eval_batches(data.open_split(str(tmp_path), "val"), 2, size=8))
    (tmp_path / "val" / "n01" / "c.JPEG").write_bytes(good)  # a broken pipeline is rebuilt
    assert len(list(dali.eval_batches(data.open_split(str(tmp_path), "val"), 2, size=8))) == 1


# -- the workload ---------------------------------------------------------------------------------
def test_workload_input_selection():
    from mlperf_fast.workloads.resnet.config import EMBEDDED
    from mlperf_fast.workloads.resnet.workload import ResNetWorkload

    tiny = EMBEDDED.replace(
        name="tiny", targets=(Metric("top1", 0.0),), schedule=Schedule(unit="epoch", every=1,
                                                                        budget=1),
        global_batch_size=16, num_classes=4, blocks=(1, 1, 1, 1), widths=(4, 4, 8, 8), stem=4,
        image_size=32, train_epochs=1, eval_batch_size=20, synth_classes=4,
        synth_train_per_class=8, synth_val_per_class=5, dali="on")
    with pytest.raises(ValueError, match="dali must be"):
        tiny.replace(dali="yes")

    class Tiny(ResNetWorkload):
        @classmethod
        def configs(cls):
            return {"tiny": tiny}

    for mode, expected in (("on", "input: DALI on the CPU"), ("auto", "input: PyTorch"),
                           ("off", "input: PyTorch")):
        logs: list[str] = []
        w = Tiny(tiny.replace(dali=mode), RunContext(seed=1, device=torch.device("cpu"),
                                                     say=logs.append))
        w.build()
        assert any(expected in m for m in logs), logs
    w.train(0, 1)  # PyTorch's ("off")
    on = Tiny(tiny, RunContext(seed=1, device=torch.device("cpu"), say=lambda m: None))
    on.build()
    on.model.load_state_dict(w.model.state_dict())
    # the same weights score (nearly) alike: the inputs differ by rounding (one of 20 may flip)
    assert abs(on.evaluate()["top1"] - w.evaluate()["top1"]) <= 1 / 20 + 1e-9
    on.train(0, 1)
    assert on.trainer.applied == 2  # 32 images / 16 per step


# -- the GPU ---------------------------------------------------------------------------------------
@pytest.mark.cuda
def test_mixed_gpu_path_tracks_the_cpu_path(train, val):
    """nvJPEG (or the hardware decoder) has its own IDCT and colour conversion, so the bounds are
    wider than the CPU operators' (about a level per pixel after the resize averages them);
    still far below what a wrong crop, flip or axis gives."""
    dali = D.DaliInput(0, num_threads=2, layout="NHWC")
    dev = torch.device("cuda", 0)
    x, y, valid = next(dali.eval_batches(val, 30, size=64))
    cx, cy, _ = next(P.eval_batches(val, 30, size=64))
    assert x.device == dev and y.device == dev and valid.device == dev
    assert x.is_contiguous(memory_format=torch.channels_last)
    d = (x.cpu().float() - cx).abs()
    print(f"eval, mixed against the CPU path: mean {d.mean():.3f}, 99th percentile "
          f"{d.quantile(0.99):.2f}, max {d.max():.1f}")
    assert torch.equal(y.cpu(), cy) and d.mean() < 1.0 and d.quantile(0.99) < 4
    (x, y), = dali.train_batches(train, 60, 5, 0, size=64)
    (cx, cy), = P.train_batches(train, 60, 5, 0, size=64)
    d = (x.cpu().float() - cx).abs()
    inside = d[:, :, 1:-1, 1:-1]
    print(f"training, mixed against the CPU path: mean {d.mean():.3f}, inside the border: "
          f"99th percentile {inside.quantile(0.99):.2f}, max {inside.max():.1f}")
    assert torch.equal(y.cpu(), cy) and d.mean() < 1.5 and inside.quantile(0.99) < 4
