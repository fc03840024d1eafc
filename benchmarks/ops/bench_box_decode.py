"""Box decoding with clipping to the image for a RetinaNet batch: 32 images x 120,087 anchors
(MLPerf RetinaNet, 800 x 800), deltas (dx, dy, dw, dh) with weights (1, 1, 1, 1), float32.

Baselines, same inputs, same run: torchvision's BoxCoder.decode_single then clip_boxes_to_image,
image by image (as torchvision's RetinaNet decodes), and the same expression batched in plain
PyTorch (mlperf_fast.ops.box_decode.box_decode_torch). Ours: box_decode with image_sizes, one
Triton pass. Floor: the deltas read and the boxes written once, the shared anchors read once.
"""
from __future__ import annotations

import pytest
import torch
from detection_inputs import IMAGE_SIZE, retinanet_anchors

from mlperf_fast.ops.box_decode import box_decode, box_decode_torch

BATCH = 32


def test_box_decode(measure):
    tv = pytest.importorskip("torchvision")
    from torchvision.models.detection._utils import BoxCoder

    anchors = retinanet_anchors()
    a = anchors.shape[0]
    gen = torch.Generator(device="cuda").manual_seed(0)
    codes = torch.randn(BATCH, a, 4, device="cuda", generator=gen) * 0.2
    sizes = torch.full((BATCH, 2), IMAGE_SIZE, device="cuda")
    coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
    group = "box decode + clip, RetinaNet batch 32 (120,087 anchors), fp32"
    shape = f"B={BATCH}, A={a:,}"
    nbytes = 2 * codes.numel() * 4 + anchors.numel() * 4

    def loop():
        return [tv.ops.clip_boxes_to_image(coder.decode_single(codes[b], anchors),
                                           (IMAGE_SIZE, IMAGE_SIZE)) for b in range(BATCH)]

    measure(group, "torchvision BoxCoder + clip_boxes_to_image, per-image loop", loop,
            role="baseline", shape=shape, bytes=nbytes)
    measure(group, "torch batched (box_decode_torch)",
            lambda: box_decode_torch(codes, anchors, image_sizes=sizes),
            role="baseline", shape=shape, bytes=nbytes)
    measure(group, "mlperf_fast box_decode triton",
            lambda: box_decode(codes, anchors, image_sizes=sizes, backend="triton"),
            shape=shape, bytes=nbytes)
