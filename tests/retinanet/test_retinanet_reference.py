"""reference.py, the port of the MLCommons RetinaNet, against its oracle: torchvision's
RetinaNet built with the reference's options (a ResNeXt body with FrozenBatchNorm2d, returned
layers 2-4, LastLevelP6P7(256, 256), the reference's anchor sizes) and loaded with the port's
state dict. In float64 the losses, features, head outputs, anchors and detections are equal
bit for bit; the full closed architecture has the same parameters, name for name and shape for
shape. Also: the backbone weights file and its errors."""
from __future__ import annotations

import pytest
import torch

torchvision = pytest.importorskip("torchvision")

from torchvision.models.detection import RetinaNet as TVRetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.resnet import Bottleneck, ResNet
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from mlperf_fast.workloads.retinanet import anchors as anchor_utils
from mlperf_fast.workloads.retinanet.config import CLOSED
from mlperf_fast.workloads.retinanet.reference import (
    ReferenceRetinaNet,
    load_backbone_weights,
    torchvision_state,
)

S, K = 64, 5
SMALL = CLOSED.replace(blocks=(1, 1, 1, 1), num_classes=K, image_size=(S, S))


def _sizes():
    return tuple((x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3)))
                 for x in (32, 64, 128, 256, 512))


def torchvision_retinanet(blocks, num_classes: int, size: int) -> TVRetinaNet:
    """torchvision's RetinaNet with the reference's choices; an identity transform (mean 0,
    std 1, min = max = the input's size), so that it sees the port's input as it is."""
    body = ResNet(Bottleneck, list(blocks), groups=32, width_per_group=4,
                  norm_layer=FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(body, 5, returned_layers=[2, 3, 4],
                                     extra_blocks=LastLevelP6P7(256, 256))
    return TVRetinaNet(backbone, num_classes, min_size=size, max_size=size,
                       image_mean=[0.0] * 3, image_std=[1.0] * 3,
                       anchor_generator=AnchorGenerator(_sizes(), ((0.5, 1.0, 2.0),) * 5))


def randomize_frozen(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Frozen batch norms away from the identity, and class biases that let detections through
    the 0.05 threshold, so that the comparison covers them."""
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith(("running_var", ".weight")):
                b.copy_(torch.rand(b.shape, generator=generator) + 0.5)
            elif name.endswith(("running_mean", ".bias")):
                b.copy_(torch.randn(b.shape, generator=generator) * 0.1)
        bias = model.head.classification_head.cls_logits.bias
        bias.copy_(torch.randn(bias.shape, generator=generator))


def batch(n: int = 2, dtype=torch.float64):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(n, 3, S, S, generator=g, dtype=dtype)
    targets = [{"boxes": torch.tensor([[5.0, 6.0, 40.0, 50.0], [20.0, 20.0, 30.0, 28.0]],
                                      dtype=dtype), "labels": torch.tensor([1, 3])},
               {"boxes": torch.zeros(0, 4, dtype=dtype),  # an image without objects
                "labels": torch.zeros(0, dtype=torch.int64)}][:n]
    return x, targets


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    port = ReferenceRetinaNet(SMALL).double()
    randomize_frozen(port, torch.Generator().manual_seed(1))
    tv = torchvision_retinanet(SMALL.blocks, K, S).double()
    tv.load_state_dict(torchvision_state(port.state_dict()), strict=True)
    return port, tv


def test_features_heads_and_anchors_equal_torchvision(pair):
    port, tv = pair
    x, _ = batch()
    fp = port.backbone(x)
    ft = list(tv.backbone(x).values())
    assert [f.shape for f in fp] == [f.shape for f in ft]
    for a, b in zip(fp, ft):
        assert torch.equal(a, b)
    hp, ht = port.head(fp), tv.head(ft)
    for k in hp:
        assert torch.equal(hp[k], ht[k]), k
    images, _ = tv.transform(list(x))
    anchors, counts = port.anchors(fp, (S, S))
    tv_anchors = tv.anchor_generator(images, ft)[0]
    assert torch.equal(anchors.double(), tv_anchors)
    assert counts == [f.shape[-1] * f.shape[-2] * 9 for f in fp]
    # the same anchors without running the network (model.py makes them once per size)
    grids = anchor_utils.grid_sizes((S, S), SMALL.returned_layers, SMALL.extra_levels)
    assert grids == [tuple(f.shape[-2:]) for f in fp]


def test_losses_equal_torchvision(pair):
    port, tv = pair
    x, targets = batch()
    port.train()
    tv.train()
    lp = port(x, targets)
    lt = tv(list(x), targets)
    assert set(lp) == set(lt) == {"classification", "bbox_regression"}
    for k in lp:
        assert torch.equal(lp[k], lt[k]), (k, lp[k], lt[k])
    # the gradients of the trainable parameters alike
    sum(lp.values()).backward()
    sum(lt.values()).backward()
    for (n, p), q in zip(port.named_parameters(), tv.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=1e-14, msg=n)


def test_detections_equal_torchvision(pair):
    port, tv = pair
    x, _ = batch()
    port.eval()
    tv.eval()
    with torch.no_grad():
        dp = port(x, original_sizes=[(S, S)] * 2)
        dt = tv(list(x))
    for a, b in zip(dp, dt):
        assert a["boxes"].shape[0] > 10
        for k in ("boxes", "scores", "labels"):
            assert torch.equal(a[k], b[k]), k


def test_closed_model_has_torchvision_parameters():
    """ResNeXt50-32x4d, 264 classes: the same names and shapes as torchvision's RetinaNet over
    resnext50_32x4d (built on the meta device: nothing allocated)."""
    with torch.device("meta"):
        port = ReferenceRetinaNet(CLOSED)
        tv = torchvision_retinanet((3, 4, 6, 3), 264, 800)
    ours = {k: v.shape for k, v in port.state_dict().items()}
    theirs = tv.state_dict()
    # torchvision's version-2 names of the heads and FPN: conv.<i>.0.weight for conv.<2i>.weight
    assert len(ours) == len(theirs)
    assert sum(v.numel() for v in port.parameters()) == sum(v.numel() for v in tv.parameters())
    trainable = [n for n, p in port.named_parameters() if p.requires_grad]
    assert len(trainable) == len(list(port.parameters()))  # no weights file: all train
    assert port.head.classification_head.cls_logits.out_channels == 9 * 264


def test_backbone_weights_file(tmp_path):
    body = ResNet(Bottleneck, [1, 1, 1, 1], groups=32, width_per_group=4)
    with torch.no_grad():
        for m in body.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
    path = tmp_path / "resnext.pth"
    torch.save(body.state_dict(), path)
    port = ReferenceRetinaNet(SMALL.replace(backbone_weights=str(path)))
    assert torch.equal(port.backbone.body.layer2[0].conv2.weight, body.layer2[0].conv2.weight)
    assert torch.equal(port.backbone.body.bn1.running_mean, body.bn1.running_mean)
    # trainable_layers=3: conv1 and layer1 frozen, layer2-4 train
    assert not port.backbone.body.conv1.weight.requires_grad
    assert not port.backbone.body.layer1[0].conv1.weight.requires_grad
    assert port.backbone.body.layer2[0].conv1.weight.requires_grad
    # the wrong file: a clear error naming it
    other = ResNet(Bottleneck, [1, 1, 1, 1])  # a ResNet, not a ResNeXt: other widths
    torch.save(other.state_dict(), tmp_path / "resnet.pth")
    with pytest.raises(ValueError, match="resnet.pth.*shape"):
        load_backbone_weights(port.backbone.body, tmp_path / "resnet.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth"):
        load_backbone_weights(port.backbone.body, tmp_path / "junk.pth")
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="partial.pth.*missing"):
        load_backbone_weights(port.backbone.body, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="no such file"):
        load_backbone_weights(port.backbone.body, tmp_path / "absent.pth")
