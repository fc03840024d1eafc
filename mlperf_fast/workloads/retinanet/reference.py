"""A PyTorch port of the MLPerf Training v2.1 reference's RetinaNet (mlcommons/training
single_stage_detector/ssd at 2deed932: model/retinanet.py, model/backbone_utils.py,
model/feature_pyramid_network.py, model/resnet.py, model/anchor_utils.py, model/utils.py,
model/focal_loss.py): the oracle the optimized model (model.py) is checked against, and the
baseline of its step benchmark. tests/retinanet check it against torchvision's RetinaNet built
with the same options and weights.

What it keeps from the reference, as read there:

- backbone: a ResNet / ResNeXt body (7x7/2 stem, 3x3/2 max pool, bottlenecks with the stride on
  the 3x3 convolution, ``width = int(planes * width_per_group / 64) * groups``) with
  FrozenBatchNorm2d (``x * w / sqrt(rv + 1e-5) + (b - rm * w / sqrt(rv + 1e-5))``); convolutions
  ``kaiming_normal_(mode="fan_out", nonlinearity="relu")``; the layers before the trainable ones
  frozen (``requires_grad=False``); the outputs of layer2..layer4 (C3-C5);
- FPN: a 1x1 lateral and a 3x3 output convolution per level, top-down by nearest upsampling to
  the lateral's size; P6 = conv3x3/2(P5) and P7 = conv3x3/2(relu(P6)) (``LastLevelP6P7(256,
  256)``: ``use_P5``); every FPN convolution ``kaiming_uniform_(a=1)``, zero bias;
- heads: classification and regression, each ``head_convs`` x (conv3x3 + ReLU), weights N(0,
  0.01), zero biases; the classification output's bias ``-log((1 - 0.01) / 0.01)``; outputs
  permuted from (N, A*K, H, W) to (N, H*W*A, K) and concatenated over levels;
- loss, image by image: torchvision's Matcher (0.5 / 0.4, low-quality matches allowed) on the
  IoU matrix (an image without boxes: every anchor background); the sigmoid focal loss (alpha
  0.25, gamma 2) summed over the anchors not between the thresholds, over max(1, foreground);
  L1 between the regression and the encoded matched boxes (weights 1, 1, 1, 1) summed over the
  foreground, over max(1, foreground); each averaged over the images;
- inference, image by image and level by level: sigmoid, scores > 0.05, the top 1000, decode
  (dw, dh clamped at log(1000 / 16)), clip to the image, batched NMS at 0.5 over the levels'
  candidates, the best 300; boxes scaled back to the original image size.

Module and parameter names are the reference's (``backbone.body.layer1.0.conv1.weight``,
``backbone.fpn.inner_blocks.0.weight``, ``head.classification_head.conv.0.weight``, ...): those
of the closed rules' ``weights_initialization`` list, and a state dict torchvision's RetinaNet
loads as it is (its version-1 key names).

The reference's transform (normalize, then resize to 800 x 800 inside the model) runs in the
input pipeline here (pipeline.py): resizing first and normalizing after is the same arithmetic
on the float image, because both are per-channel affine maps.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mlperf_fast.workloads.retinanet import anchors as anchor_utils

BBOX_XFORM_CLIP = math.log(1000.0 / 16)  # [ref] model/utils.py BoxCoder
PRIOR_PROBABILITY = 0.01  # [ref] RetinaNetClassificationHead
BN_EPS = 1e-5  # torchvision.ops.misc.FrozenBatchNorm2d's default, as the reference uses it


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters (buffers, never trained)."""

    def __init__(self, num_features: int, eps: float = BN_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # an ImageNet checkpoint of nn.BatchNorm2d carries a counter the frozen form has not
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(C,) scale and shift: y = x * scale + shift."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.scale_shift()
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)


def make_norm(kind: str, channels: int) -> nn.Module:
    if kind == "frozen":
        return FrozenBatchNorm2d(channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"norm must be 'frozen' or 'batch', got {kind!r}")


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, groups: int, base_width: int,
                 norm: str) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = make_norm(norm, width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, padding=1, groups=groups, bias=False)
        self.bn2 = make_norm(norm, width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = make_norm(norm, planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * self.expansion, 1, stride, bias=False),
                make_norm(norm, planes * self.expansion))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetBody(nn.Module):
    """The classification ResNet without its head; ``forward`` returns the outputs of the
    ``returned_layers`` (1-based), in order."""

    def __init__(self, blocks: Sequence[int], planes: Sequence[int], groups: int,
                 width_per_group: int, stem: int, norm: str,
                 returned_layers: Sequence[int]) -> None:
        super().__init__()
        self.returned_layers = tuple(returned_layers)
        self.conv1 = nn.Conv2d(3, stem, 7, 2, padding=3, bias=False)
        self.bn1 = make_norm(norm, stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        inplanes = stem
        self.out_channels = []
        for i, (count, p) in enumerate(zip(blocks, planes)):
            layer = []
            for j in range(count):
                stride = 2 if (j == 0 and i > 0) else 1
                layer.append(Bottleneck(inplanes, p, stride, groups, width_per_group, norm))
                inplanes = p * Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
            self.out_channels.append(inplanes)
        for m in self.modules():  # [ref] model/resnet.py ResNet.__init__
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = []
        for i in range(1, max(self.returned_layers) + 1):
            x = getattr(self, f"layer{i}")(x)
            if i in self.returned_layers:
                out.append(x)
        return out


class LastLevelP6P7(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        for m in (self.p6, self.p7):
            nn.init.kaiming_uniform_(m.weight, a=1)
            nn.init.constant_(m.bias, 0)
        self.use_P5 = in_channels == out_channels

    def forward(self, p: list[torch.Tensor], c: list[torch.Tensor]) -> list[torch.Tensor]:
        x = p[-1] if self.use_P5 else c[-1]
        p6 = self.p6(x)
        p7 = self.p7(F.relu(p6))
        return p + [p6, p7]


class FeaturePyramidNetwork(nn.Module):
    def __init__(self, in_channels_list: Sequence[int], out_channels: int,
                 extra_blocks: nn.Module | None) -> None:
        super().__init__()
        self.inner_blocks = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels_list)
        self.layer_blocks = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1)
                                          for _ in in_channels_list)
        for m in self.modules():  # before extra_blocks: LastLevelP6P7 initializes its own
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.constant_(m.bias, 0)
        self.extra_blocks = extra_blocks

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        last_inner = self.inner_blocks[-1](x[-1])
        results = [self.layer_blocks[-1](last_inner)]
        for idx in range(len(x) - 2, -1, -1):
            lateral = self.inner_blocks[idx](x[idx])
            top_down = F.interpolate(last_inner, size=lateral.shape[-2:], mode="nearest")
            last_inner = lateral + top_down
            results.insert(0, self.layer_blocks[idx](last_inner))
        if self.extra_blocks is not None:
            results = self.extra_blocks(results, x)
        return results


class BackboneWithFPN(nn.Module):
    def __init__(self, body: ResNetBody, fpn: FeaturePyramidNetwork, out_channels: int) -> None:
        super().__init__()
        self.body = body
        self.fpn = fpn
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.fpn(self.body(x))


def _conv_stack(channels: int, count: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(count):
        layers += [nn.Conv2d(channels, channels, 3, 1, 1), nn.ReLU()]
    return nn.Sequential(*layers)


def _flatten_level(out: torch.Tensor, per_anchor: int) -> torch.Tensor:
    """(N, A*K, H, W) -> (N, H*W*A, K)."""
    n, _, h, w = out.shape
    return out.view(n, -1, per_anchor, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, per_anchor)


class RetinaNetClassificationHead(nn.Module):
    def __init__(self, in_channels: int, num_anchors: int, num_classes: int,
                 convs: int = 4) -> None:
        super().__init__()
        self.conv = _conv_stack(in_channels, convs)
        for layer in self.conv:
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.constant_(layer.bias, 0)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors * num_classes, 3, 1, 1)
        nn.init.normal_(self.cls_logits.weight, std=0.01)
        nn.init.constant_(self.cls_logits.bias,
                          -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY))
        self.num_classes = num_classes
        self.num_anchors = num_anchors

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([_flatten_level(self.cls_logits(self.conv(f)), self.num_classes)
                          for f in x], dim=1)


class RetinaNetRegressionHead(nn.Module):
    def __init__(self, in_channels: int, num_anchors: int, convs: int = 4) -> None:
        super().__init__()
        self.conv = _conv_stack(in_channels, convs)
        self.bbox_reg = nn.Conv2d(in_channels, num_anchors * 4, 3, 1, 1)
        nn.init.normal_(self.bbox_reg.weight, std=0.01)
        nn.init.zeros_(self.bbox_reg.bias)
        for layer in self.conv:
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.zeros_(layer.bias)

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([_flatten_level(self.bbox_reg(self.conv(f)), 4) for f in x], dim=1)


class RetinaNetHead(nn.Module):
    def __init__(self, in_channels: int, num_anchors: int, num_classes: int,
                 convs: int = 4) -> None:
        super().__init__()
        self.classification_head = RetinaNetClassificationHead(in_channels, num_anchors,
                                                               num_classes, convs)
        self.regression_head = RetinaNetRegressionHead(in_channels, num_anchors, convs)

    def forward(self, x: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"cls_logits": self.classification_head(x),
                "bbox_regression": self.regression_head(x)}


def freeze_layers(body: nn.Module, trainable_layers: int) -> None:
    """[ref] resnet_fpn_backbone: parameters outside the last ``trainable_layers`` of
    layer4, layer3, layer2, layer1, conv1 (and bn1 with all 5) stop training."""
    train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        train.append("bn1")
    for name, p in body.named_parameters():
        if not any(name.startswith(layer) for layer in train):
            p.requires_grad_(False)


def build_backbone(cfg) -> BackboneWithFPN:
    """The body and FPN of a :class:`~mlperf_fast.workloads.retinanet.config.RetinaNetConfig`,
    initialized as the reference does (draws from torch's default generator)."""
    body = ResNetBody(cfg.blocks, cfg.planes, cfg.groups, cfg.width_per_group, cfg.stem,
                      cfg.norm, cfg.returned_layers)
    if cfg.backbone_weights:
        load_backbone_weights(body, cfg.backbone_weights)
    # [ref] _validate_trainable_layers: without pretrained weights every layer trains
    freeze_layers(body, cfg.trainable_layers if cfg.backbone_weights else 5)
    in_channels = [body.out_channels[k - 1] for k in cfg.returned_layers]
    extra = LastLevelP6P7(cfg.fpn_channels, cfg.fpn_channels) if cfg.extra_levels else None
    fpn = FeaturePyramidNetwork(in_channels, cfg.fpn_channels, extra)
    return BackboneWithFPN(body, fpn, cfg.fpn_channels)


def load_backbone_weights(body: ResNetBody, path: str | Path) -> None:
    """Load a torchvision classification checkpoint (``resnext50_32x4d`` ImageNet weights: a
    state dict with ``conv1.weight``, ``bn1.*``, ``layer1.0.conv1.weight``, ..., ``fc.*``) into
    the body; ``fc`` is dropped. Raises ValueError naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"backbone weights {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"backbone weights {path}: not a PyTorch state dict "
                         f"({type(e).__name__}: {e})") from e
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise ValueError(f"backbone weights {path}: not a state dict of tensors")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    want = body.state_dict()
    missing = [k for k in want if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in want and not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"backbone weights {path}: not the configured backbone's (missing "
                         f"{missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected "
                         f"{unexpected[:3]}{'...' if len(unexpected) > 3 else ''})")
    bad = [k for k, v in want.items() if k in state and state[k].shape != v.shape]
    if bad:
        raise ValueError(f"backbone weights {path}: {bad[0]} has shape "
                         f"{tuple(state[bad[0]].shape)}, the backbone's is "
                         f"{tuple(want[bad[0]].shape)} (another depth or width?)")
    body.load_state_dict(state, strict=False)


# -- the reference's box arithmetic (model/utils.py, model/boxes.py) ---------------------------

def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, 4) x (M, 4) -> (N, M) IoU."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.max(a[:, None, :2], b[:, :2])
    rb = torch.min(a[:, None, 2:], b[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b - inter)


def match(quality: torch.Tensor, high: float, low: float, allow_low_quality: bool
          ) -> torch.Tensor:
    """torchvision's / the reference's Matcher on a (G, A) quality matrix: (A,) gt index, -1
    below ``low``, -2 between."""
    matched_vals, matches = quality.max(dim=0)
    all_matches = matches.clone() if allow_low_quality else None
    below = matched_vals < low
    between = (matched_vals >= low) & (matched_vals < high)
    matches[below] = -1
    matches[between] = -2
    if allow_low_quality:
        best, _ = quality.max(dim=1)
        pred = torch.where(quality == best[:, None])[1]
        matches[pred] = all_matches[pred]
    return matches


def encode(gt: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """BoxCoder(weights=(1, 1, 1, 1)).encode_single: (N, 4) deltas of ``gt`` from ``anchors``."""
    ex_w = anchors[:, 2] - anchors[:, 0]
    ex_h = anchors[:, 3] - anchors[:, 1]
    ex_x = anchors[:, 0] + 0.5 * ex_w
    ex_y = anchors[:, 1] + 0.5 * ex_h
    gt_w = gt[:, 2] - gt[:, 0]
    gt_h = gt[:, 3] - gt[:, 1]
    gt_x = gt[:, 0] + 0.5 * gt_w
    gt_y = gt[:, 1] + 0.5 * gt_h
    return torch.stack(((gt_x - ex_x) / ex_w, (gt_y - ex_y) / ex_h,
                        torch.log(gt_w / ex_w), torch.log(gt_h / ex_h)), dim=1)


def decode(codes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """BoxCoder(weights=(1, 1, 1, 1)).decode_single: (N, 4) boxes."""
    anchors = anchors.to(codes.dtype)
    w = anchors[:, 2] - anchors[:, 0]
    h = anchors[:, 3] - anchors[:, 1]
    cx = anchors[:, 0] + 0.5 * w
    cy = anchors[:, 1] + 0.5 * h
    dx, dy = codes[:, 0], codes[:, 1]
    dw = codes[:, 2].clamp(max=BBOX_XFORM_CLIP)
    dh = codes[:, 3].clamp(max=BBOX_XFORM_CLIP)
    px, py = dx * w + cx, dy * h + cy
    pw, ph = torch.exp(dw) * w, torch.exp(dh) * h
    hw, hh = torch.tensor(0.5, dtype=pw.dtype, device=pw.device) * pw, \
        torch.tensor(0.5, dtype=ph.dtype, device=ph.device) * ph
    return torch.stack((px - hw, py - hh, px + hw, py + hh), dim=1)


def sigmoid_focal_loss(inputs: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """[ref] model/focal_loss.py, summed."""
    p = torch.sigmoid(inputs)
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.sum()


class ReferenceRetinaNet(nn.Module):
    """RetinaNet as the reference computes it.

    ``forward(images, targets=None, original_sizes=None)``: ``images`` (N, 3, H, W) float,
    normalized, at the configured input size. Training (with ``targets``, a list of N dicts of
    ``boxes`` (n_i, 4) float XYXY pixels of the input and ``labels`` (n_i,) int64 in [0, C)):
    {"classification": loss, "bbox_regression": loss}, 0-dim. Evaluation: a list of N dicts of
    ``boxes`` (k, 4), ``scores`` (k,), ``labels`` (k,) int64, in ``original_sizes`` coordinates
    when given (a list of (h, w)), else the input's.
    """

    def __init__(self, cfg) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone(cfg)
        self.head = RetinaNetHead(cfg.fpn_channels, cfg.anchors_per_location, cfg.num_classes,
                                  cfg.head_convs)

    def anchors(self, features: list[torch.Tensor], image_size: tuple[int, int]
                ) -> tuple[torch.Tensor, list[int]]:
        grids = [tuple(f.shape[-2:]) for f in features]
        return anchor_utils.anchors_for(image_size, grids, self.cfg.anchor_sizes,
                                        self.cfg.aspect_ratios, self.cfg.anchor_scales,
                                        dtype=torch.float32, device=features[0].device)

    def compute_loss(self, targets: list[dict[str, torch.Tensor]],
                     head: dict[str, torch.Tensor], anchors: torch.Tensor
                     ) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        cls_losses, box_losses = [], []
        for t, logits, reg in zip(targets, head["cls_logits"], head["bbox_regression"]):
            boxes, labels = t["boxes"], t["labels"]
            if boxes.numel() == 0:
                matched = torch.full((anchors.shape[0],), -1, dtype=torch.int64,
                                     device=anchors.device)
            else:
                matched = match(box_iou(boxes, anchors.to(boxes.dtype)), cfg.fg_iou_thresh,
                                cfg.bg_iou_thresh, cfg.allow_low_quality_matches)
            fg = matched >= 0
            num_fg = fg.sum()
            gt_classes = torch.zeros_like(logits)
            gt_classes[fg, labels[matched[fg]]] = 1.0
            valid = matched != -2
            cls_losses.append(sigmoid_focal_loss(logits[valid], gt_classes[valid],
                                                 cfg.focal_alpha, cfg.focal_gamma)
                              / max(1, num_fg))
            fg_idx = torch.where(fg)[0]
            target = encode(boxes[matched[fg_idx]], anchors[fg_idx].to(boxes.dtype))
            box_losses.append(F.l1_loss(reg[fg_idx], target, reduction="sum")
                              / max(1, fg_idx.numel()))
        return {"classification": sum(cls_losses[1:], cls_losses[0]) / len(targets),
                "bbox_regression": sum(box_losses[1:], box_losses[0]) / max(1, len(targets))}

    def postprocess(self, head: dict[str, torch.Tensor], anchors: torch.Tensor,
                    counts: list[int], image_size: tuple[int, int]
                    ) -> list[dict[str, torch.Tensor]]:
        from torchvision.ops import batched_nms

        cfg = self.cfg
        out = []
        for logits_i, reg_i in zip(head["cls_logits"], head["bbox_regression"]):
            boxes_all, scores_all, labels_all = [], [], []
            for logits, reg, anc in zip(logits_i.split(counts), reg_i.split(counts),
                                        anchors.split(counts)):
                k = logits.shape[-1]
                scores = torch.sigmoid(logits).flatten()
                keep = scores > cfg.score_thresh
                scores = scores[keep]
                idxs = torch.where(keep)[0]
                scores, top = scores.topk(min(cfg.topk_candidates, idxs.size(0)))
                idxs = idxs[top]
                anchor_idx = torch.div(idxs, k, rounding_mode="floor")
                labels = idxs % k
                boxes = decode(reg[anchor_idx], anc[anchor_idx])
                boxes = torch.stack((boxes[:, 0].clamp(0, image_size[1]),
                                     boxes[:, 1].clamp(0, image_size[0]),
                                     boxes[:, 2].clamp(0, image_size[1]),
                                     boxes[:, 3].clamp(0, image_size[0])), dim=1)
                boxes_all.append(boxes)
                scores_all.append(scores)
                labels_all.append(labels)
            boxes, scores, labels = (torch.cat(boxes_all), torch.cat(scores_all),
                                     torch.cat(labels_all))
            keep = batched_nms(boxes, scores, labels, cfg.nms_thresh)[:cfg.detections_per_img]
            out.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return out

    def forward(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]] | None = None,
                original_sizes: list[tuple[int, int]] | None = None):
        if self.training and targets is None:
            raise ValueError("in training mode, targets should be passed")
        size = (images.shape[-2], images.shape[-1])
        features = self.backbone(images)
        head = self.head(features)
        anchors, counts = self.anchors(features, size)
        if self.training:
            return self.compute_loss(targets, head, anchors)
        detections = self.postprocess(head, anchors, counts, size)
        if original_sizes is not None:
            for d, (oh, ow) in zip(detections, original_sizes):
                d["boxes"] = scale_boxes(d["boxes"], size, (oh, ow))
        return detections


def scale_boxes(boxes: torch.Tensor, size: tuple[int, int], original: tuple[int, int]
                ) -> torch.Tensor:
    """[ref] model/transform.py resize_boxes: boxes of an image of ``size`` (h, w) in the
    coordinates of ``original`` (h, w), the ratios in float32."""
    rh = torch.tensor(original[0], dtype=torch.float32) / torch.tensor(size[0],
                                                                       dtype=torch.float32)
    rw = torch.tensor(original[1], dtype=torch.float32) / torch.tensor(size[1],
                                                                       dtype=torch.float32)
    ratio = torch.stack((rw, rh, rw, rh)).to(boxes.device, boxes.dtype)
    return boxes * ratio


def initialization_tensors(model: nn.Module) -> list[str]:
    """The closed rules' ``weights_initialization`` names: every convolution's parameters, as
    ``module.<name>`` (the reference logs them under DistributedDataParallel)."""
    names = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            names += [f"module.{name}.{p}" for p, _ in m.named_parameters(recurse=False)]
    return names


def torchvision_state(state: dict[str, torch.Tensor]) -> OrderedDict:
    """A state dict of this model as one torchvision's RetinaNet loads (``load_state_dict``):
    the same names, without version metadata, so that torchvision renames them itself."""
    return OrderedDict((k, v) for k, v in state.items())
