"""The optimized RetinaNet that the benchmark trains: reference.py's model (the same modules,
names, initialization and mathematics, checked tensor for tensor in tests/retinanet), run
differently:

- the loss for the whole batch at once, on padded ground truth: one ``match_boxes`` over every
  image (no (G, A) IoU matrix in memory), one one-hot target built by a scatter, one fused
  ``sigmoid_focal_loss`` pass, the box regression encoded and reduced for all images together;
  the reference loops over images with boolean indexing (a host synchronization per image for
  each ``nonzero``);
- detections by ``retinanet_postprocess``: every image's per-level top-k, decode, clip and NMS
  in a few launches, against the reference's image-by-image, level-by-level loop;
- frozen batch norm folded into the convolution before it: ``conv(x, W) * s + t`` is computed
  as ``conv(x, W * s) + t`` (the same function of the same parameters, gradients included), so
  the backbone runs one convolution with a bias per layer instead of a convolution and a pass
  over its output;
- channels-last activations (cuDNN's tensor-core layout), the head outputs flattened from NHWC
  without a copy; bf16 autocast on CUDA (the harness's TrainStep), float32 master weights;
  anchors made once per input size and kept.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mlperf_fast.ops import match_boxes, retinanet_postprocess, sigmoid_focal_loss
from mlperf_fast.ops.nms import Detections
from mlperf_fast.workloads.retinanet import anchors as anchor_utils
from mlperf_fast.workloads.retinanet.reference import (
    BBOX_XFORM_CLIP,
    FrozenBatchNorm2d,
    RetinaNetHead,
    build_backbone,
)


def _conv_norm(conv: nn.Conv2d, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``norm(conv(x))``, with a frozen norm folded into the convolution's weight and bias."""
    if isinstance(norm, FrozenBatchNorm2d):
        scale, shift = norm.scale_shift()
        w = conv.weight * scale.reshape(-1, 1, 1, 1)
        return F.conv2d(x, w, shift, conv.stride, conv.padding, conv.dilation, conv.groups)
    return norm(conv(x))


def _bottleneck(b: nn.Module, x: torch.Tensor) -> torch.Tensor:
    identity = x if b.downsample is None else _conv_norm(b.downsample[0], b.downsample[1], x)
    out = F.relu(_conv_norm(b.conv1, b.bn1, x))
    out = F.relu(_conv_norm(b.conv2, b.bn2, out))
    out = _conv_norm(b.conv3, b.bn3, out)
    return F.relu(out + identity)


def _nhwc_flatten(out: torch.Tensor, per_anchor: int) -> torch.Tensor:
    """(N, A*K, H, W) -> (N, H*W*A, K): a view when ``out`` is channels-last."""
    n = out.shape[0]
    return out.permute(0, 2, 3, 1).reshape(n, -1, per_anchor)


def encode_batched(gt: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """reference.encode over (..., 4) boxes and anchors that broadcast (their dtype)."""
    ex_wh = anchors[..., 2:] - anchors[..., :2]
    ex_c = anchors[..., :2] + 0.5 * ex_wh
    gt_wh = gt[..., 2:] - gt[..., :2]
    gt_c = gt[..., :2] + 0.5 * gt_wh
    return torch.cat(((gt_c - ex_c) / ex_wh, torch.log(gt_wh / ex_wh)), dim=-1)


class RetinaNet(nn.Module):
    """RetinaNet over ``cfg`` (a RetinaNetConfig). Parameters and buffers are named as
    reference.ReferenceRetinaNet's, so one state dict serves both.

    ``forward(images, boxes, labels, num_boxes)``: the training loss (classification +
    box regression, 0-dim float32) of a batch: ``images`` (B, 3, H, W) normalized float at the
    configured size; ``boxes`` (B, G, 4) float XYXY pixels of the input, padded; ``labels``
    (B, G) int64 in [0, C) (padding: any value); ``num_boxes`` (B,) int64, image b's boxes are
    the first ``num_boxes[b]``. ``detect(images, original_sizes)``: padded detections.
    """

    def __init__(self, cfg) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone(cfg)
        self.head = RetinaNetHead(cfg.fpn_channels, cfg.anchors_per_location, cfg.num_classes,
                                  cfg.head_convs)
        self._anchors: dict = {}

    # -- the network --------------------------------------------------------------------------
    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        body = self.backbone.body
        x = images.contiguous(memory_format=torch.channels_last)
        x = F.max_pool2d(F.relu(_conv_norm(body.conv1, body.bn1, x)), 3, 2, 1)
        c = []
        for i in range(1, max(body.returned_layers) + 1):
            for b in getattr(body, f"layer{i}"):
                x = _bottleneck(b, x)
            if i in body.returned_layers:
                c.append(x)
        return self.backbone.fpn(c)

    def head_outputs(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, A, C) classification logits and (B, A, 4) box deltas, anchors in level order."""
        cls, reg = self.head.classification_head, self.head.regression_head
        logits = torch.cat([_nhwc_flatten(cls.cls_logits(cls.conv(f)), self.cfg.num_classes)
                            for f in features], dim=1)
        deltas = torch.cat([_nhwc_flatten(reg.bbox_reg(reg.conv(f)), 4) for f in features],
                           dim=1)
        return logits, deltas

    def anchors(self, image_size: tuple[int, int], device: torch.device
                ) -> tuple[torch.Tensor, list[int]]:
        """(A, 4) float32 anchors of an input of ``image_size`` (H, W), and each level's count."""
        key = (tuple(image_size), str(device))
        if key not in self._anchors:
            cfg = self.cfg
            grids = anchor_utils.grid_sizes(image_size, cfg.returned_layers, cfg.extra_levels)
            self._anchors[key] = anchor_utils.anchors_for(
                image_size, grids, cfg.anchor_sizes, cfg.aspect_ratios, cfg.anchor_scales,
                dtype=torch.float32, device=device)
        return self._anchors[key]

    # -- training -----------------------------------------------------------------------------
    def losses(self, images: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
               num_boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"classification", "bbox_regression"}: the reference's two losses (0-dim float32)."""
        _check_targets(images, boxes, labels, num_boxes)
        logits, deltas = self.head_outputs(self.features(images))
        anchors, _ = self.anchors((images.shape[-2], images.shape[-1]), images.device)
        return self.loss_from_outputs(logits, deltas, anchors, boxes, labels, num_boxes)

    def loss_from_outputs(self, logits: torch.Tensor, deltas: torch.Tensor,
                          anchors: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                          num_boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        b, a, k = logits.shape
        matched = match_boxes(boxes.float(), anchors, num_boxes, cfg.fg_iou_thresh,
                              cfg.bg_iou_thresh, cfg.allow_low_quality_matches)  # (B, A)
        fg = matched >= 0
        idx = matched.clamp(min=0)
        # per image: max(1, foreground), as the reference divides each image's sums
        acc = torch.promote_types(logits.dtype, torch.float32)  # float32, float64 for float64
        norm = fg.sum(1).clamp(min=1).to(acc)
        # one-hot targets of the foreground anchors' classes; background and ignored rows 0
        target = torch.zeros_like(logits)
        # (padding labels may hold anything: clamped into range, they are written with a 0)
        cls_idx = labels.gather(1, idx).clamp(0, k - 1).unsqueeze(2)
        target.scatter_(2, cls_idx, fg.unsqueeze(2).to(logits.dtype))
        per = sigmoid_focal_loss(logits, target, cfg.focal_alpha, cfg.focal_gamma, "none")
        # anchors between the thresholds (-2) take no part; each image over its foreground
        weight = (matched != -2).to(acc) / norm[:, None]
        cls = (per.sum(2, dtype=acc) * weight).sum() / b
        # box regression against the matched boxes; background anchors are given their own
        # anchor as target (delta 0) so that no log(0) is formed, then masked out
        gt = boxes.to(acc).gather(1, idx.unsqueeze(2).expand(b, a, 4))
        anc = anchors.to(acc).unsqueeze(0)
        gt = torch.where(fg.unsqueeze(2), gt, anc)
        l1 = (deltas.to(acc) - encode_batched(gt, anc)).abs().sum(2)
        reg = (torch.where(fg, l1, 0.0) / norm[:, None]).sum() / max(1, b)
        return {"classification": cls, "bbox_regression": reg}

    def forward(self, images: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                num_boxes: torch.Tensor) -> torch.Tensor:
        losses = self.losses(images, boxes, labels, num_boxes)
        return losses["classification"] + losses["bbox_regression"]

    # -- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def detect(self, images: torch.Tensor, original_sizes: torch.Tensor | None = None
               ) -> Detections:
        """Detections of a batch (``images`` as in ``forward``): boxes (B, K, 4) float32 XYXY in
        ``original_sizes`` ((B, 2) (h, w), the source images' sizes) coordinates, or the
        input's; scores (B, K); labels (B, K) int64; counts (B,): the first counts[b] of image b
        are its detections, best first."""
        logits, deltas = self.head_outputs(self.features(images))
        return self.postprocess(logits, deltas, (images.shape[-2], images.shape[-1]),
                                original_sizes)

    @torch.no_grad()
    def postprocess(self, logits: torch.Tensor, deltas: torch.Tensor, size: tuple[int, int],
                    original_sizes: torch.Tensor | None = None) -> Detections:
        """``detect`` after the network: the head's outputs (logits (B, A, C), deltas (B, A, 4),
        any float dtype, computed in float32 at least) of inputs of ``size`` (H, W) to
        detections, as ``detect`` returns them."""
        cfg = self.cfg
        device = logits.device
        anchors, counts = self.anchors(size, device)
        b = logits.shape[0]
        sizes = torch.tensor([size] * b, device=device)
        acc = torch.promote_types(logits.dtype, torch.float32)
        det = retinanet_postprocess(
            logits.to(acc), deltas.to(acc), anchors.to(acc), sizes, counts,
            score_thresh=cfg.score_thresh, nms_thresh=cfg.nms_thresh,
            detections_per_img=cfg.detections_per_img, topk_candidates=cfg.topk_candidates,
            bbox_xform_clip=BBOX_XFORM_CLIP)
        if original_sizes is None:
            return det
        # [ref] transform.resize_boxes: the ratios in float32
        o = original_sizes.to(device=device, dtype=torch.float32)
        rh = o[:, 0] / torch.tensor(float(size[0]), device=device)
        rw = o[:, 1] / torch.tensor(float(size[1]), device=device)
        ratio = torch.stack((rw, rh, rw, rh), dim=1)[:, None, :].to(det.boxes.dtype)
        return det._replace(boxes=det.boxes * ratio)


def _check_targets(images: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                   num_boxes: torch.Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(f"images must be a float (B, 3, H, W) tensor, got "
                         f"{images.dtype} {tuple(images.shape)}")
    b = images.shape[0]
    if boxes.dim() != 3 or boxes.shape[0] != b or boxes.shape[2] != 4:
        raise ValueError(f"boxes must be (B={b}, G, 4), got {tuple(boxes.shape)}")
    if labels.shape != boxes.shape[:2] or labels.dtype != torch.int64:
        raise ValueError(f"labels must be int64 (B, G) = {tuple(boxes.shape[:2])}, got "
                         f"{labels.dtype} {tuple(labels.shape)}")
    if num_boxes.shape != (b,):
        raise ValueError(f"num_boxes must be (B={b},), got {tuple(num_boxes.shape)}")


def initialization_tensors(cfg) -> list[str]:
    """The closed rules' ``weights_initialization`` tensor names of ``cfg``'s model."""
    from mlperf_fast.workloads.retinanet.reference import initialization_tensors as names

    with torch.device("meta"):
        return names(RetinaNet(cfg.replace(backbone_weights=None)))
