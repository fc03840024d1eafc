"""model.py, the optimized RetinaNet, against reference.py with one state dict: the batched
loss (match_boxes, the fused focal loss, the batched box loss) against the reference's per-image
loop, its gradients, and the batched post-processing against the reference's loops; frozen
batch norm folded into the convolutions; images without boxes; bad targets.

Tolerances: float64 1e-10 relative (only the order of the sums differs); float32 losses and
gradients 1e-5 relative; detection boxes 1e-3 px in float32 (the same boxes, labels and order).
"""
from __future__ import annotations

import pytest
import torch

from mlperf_fast.workloads.retinanet.config import CLOSED, EMBEDDED
from mlperf_fast.workloads.retinanet.model import RetinaNet, initialization_tensors
from mlperf_fast.workloads.retinanet.reference import ReferenceRetinaNet

S, K = 64, 5
CONFIGS = {
    # the closed architecture's kind (ResNeXt, frozen batch norm, P3-P7), one block per stage
    "resnext_frozen": CLOSED.replace(blocks=(1, 1, 1, 1), planes=(16, 32, 64, 128), stem=16,
                                     fpn_channels=32, num_classes=K, image_size=(S, S)),
    # the embedded model (a small ResNet with batch norm, P3-P5)
    "embedded": EMBEDDED.replace(image_size=(S, S), fpn_channels=32),
}


def _randomize(model: torch.nn.Module, g: torch.Generator) -> None:
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith(("running_var", ".weight")):
                b.copy_(torch.rand(b.shape, generator=g, dtype=b.dtype) + 0.5)
            elif name.endswith(("running_mean", ".bias")):
                b.copy_(torch.randn(b.shape, generator=g, dtype=b.dtype) * 0.1)
        bias = model.head.classification_head.cls_logits.bias
        bias.copy_(torch.randn(bias.shape, generator=g))


def pair(name: str, dtype: torch.dtype = torch.float64):
    cfg = CONFIGS[name]
    torch.manual_seed(0)
    ref = ReferenceRetinaNet(cfg)
    torch.manual_seed(0)
    ours = RetinaNet(cfg)
    # the same construction draws the same weights
    for (n, a), b in zip(ref.state_dict().items(), ours.state_dict().values()):
        assert torch.equal(a, b), n
    _randomize(ref, torch.Generator().manual_seed(2))
    ours.load_state_dict(ref.state_dict())
    return ref.to(dtype), ours.to(dtype)


def targets(dtype: torch.dtype = torch.float64):
    """Padded targets of 3 images (2 boxes; none; 3, one of them covering the image)."""
    boxes = torch.tensor([[[5, 6, 40, 50], [20, 20, 30, 28], [0, 0, 0, 0]],
                          [[0, 0, 0, 0]] * 3,
                          [[1, 1, 63, 63], [10, 10, 20, 40], [30, 5, 60, 35]]], dtype=dtype)
    labels = torch.tensor([[1, 3, 0], [0, 0, 0], [4, 0, 2]])
    counts = torch.tensor([2, 0, 3])
    listed = [{"boxes": boxes[i, :counts[i]], "labels": labels[i, :counts[i]]} for i in range(3)]
    return boxes, labels, counts, listed


def images(dtype: torch.dtype = torch.float64, n: int = 3):
    return torch.randn(n, 3, S, S, generator=torch.Generator().manual_seed(3), dtype=dtype)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_losses_and_gradients_match_the_reference(name, dtype, tol):
    ref, ours = pair(name, dtype)
    x = images(dtype)
    boxes, labels, counts, listed = targets(dtype)
    lr = ref(x, listed)
    lo = ours.losses(x, boxes, labels, counts)
    for k in lr:
        assert lo[k].dtype == dtype
        a, b = float(lo[k].detach()), float(lr[k].detach())
        assert abs(a - b) <= tol * abs(b), (k, a, b)
    sum(lr.values()).backward()
    ours(x, boxes, labels, counts).backward()
    for (n, p), q in zip(ref.named_parameters(), ours.parameters()):
        assert (p.grad is None) == (q.grad is None), n
        if p.grad is not None:
            assert _rel(q.grad, p.grad) <= 10 * tol, n


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_detections_match_the_reference(name):
    """In float64, where no score or IoU lies within rounding of a threshold: the same
    detections, in the same order. (In float32 the folded batch norm and the reference's
    batched NMS, which offsets boxes by class, round differently, and a random network's
    boxes sit at IoUs close to the NMS threshold, so a few detections can come and go.)"""
    ref, ours = pair(name, torch.float64)
    ref.eval()
    ours.eval()
    x = images(torch.float64)
    original = [(100, 120), (64, 64), (50, 200)]
    with torch.no_grad():
        dr = ref(x, original_sizes=original)
    do = ours.detect(x, torch.tensor(original))
    for i, d in enumerate(dr):
        n = int(do.counts[i])
        assert n == len(d["boxes"]) > 0
        assert torch.equal(do.labels[i, :n], d["labels"])
        torch.testing.assert_close(do.scores[i, :n], d["scores"], rtol=1e-12, atol=0)
        torch.testing.assert_close(do.boxes[i, :n], d["boxes"], rtol=0, atol=1e-9)
    # float32 and its padding: empty slots after the counts
    ours.float()
    d32 = ours.detect(x.float(), torch.tensor(original))
    assert d32.boxes.dtype == torch.float32 and d32.boxes.shape[0] == 3
    k = d32.boxes.shape[1]
    assert all(0 < int(c) <= k for c in d32.counts)


def test_no_boxes_anywhere_gives_background_loss_only():
    ref, ours = pair("embedded")
    x = images(n=2)
    boxes = torch.zeros(2, 1, 4, dtype=torch.float64)
    labels = torch.zeros(2, 1, dtype=torch.int64)
    counts = torch.zeros(2, dtype=torch.int64)
    listed = [{"boxes": torch.zeros(0, 4, dtype=torch.float64),
               "labels": torch.zeros(0, dtype=torch.int64)}] * 2
    lo = ours.losses(x, boxes, labels, counts)
    lr = ref(x, listed)
    assert float(lo["bbox_regression"].detach()) == 0.0 == float(lr["bbox_regression"].detach())
    assert float(lo["classification"].detach()) > 0
    torch.testing.assert_close(lo["classification"], lr["classification"], rtol=1e-10, atol=0)
    ours(x, boxes, labels, counts).backward()
    assert all(torch.isfinite(p.grad).all() for p in ours.parameters() if p.grad is not None)


def test_padding_labels_out_of_range_are_ignored():
    _, ours = pair("embedded")
    x = images()
    boxes, labels, counts, _ = targets()
    want = ours.losses(x, boxes, labels, counts)
    junk = labels.clone()
    junk[0, 2] = 10_000  # past image 0's two boxes: padding
    junk[1] = -7
    got = ours.losses(x, boxes, junk, counts)
    for k in want:
        assert torch.equal(want[k], got[k])


def test_frozen_batch_norm_is_folded_and_channels_last():
    ref, ours = pair("resnext_frozen")
    x = images()
    feats = ours.features(x)
    for a, b in zip(feats, ref.backbone(x)):
        assert a.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_bad_targets_are_refused_before_any_work():
    _, ours = pair("embedded", torch.float32)
    x = images(torch.float32)
    boxes, labels, counts, _ = targets(torch.float32)
    with pytest.raises(ValueError, match="boxes"):
        ours.losses(x, boxes[:, :, :3], labels, counts)
    with pytest.raises(ValueError, match="labels"):
        ours.losses(x, boxes, labels.int(), counts)
    with pytest.raises(ValueError, match="num_boxes"):
        ours.losses(x, boxes, labels, counts[:2])
    with pytest.raises(ValueError, match="images"):
        ours.losses(x[:, :2], boxes, labels, counts)


def test_weights_initialization_names_are_the_rules():
    import re

    from mlperf_fast.harness.compliance import load_rules

    rules = load_rules("closed_ssd.yaml")
    check = next(r["END"]["CHECK"] for r in rules if "END" in r)
    required = re.findall(r'"(module\.[^"]+)"', check)
    assert len(required) == 89
    assert sorted(initialization_tensors(CLOSED)) == sorted(required)
