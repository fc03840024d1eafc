"""torchvision.ops.nms, batched_nms, box_iou and sigmoid_focal_loss replaced by mlperf_fast.ops'.

Each name is replaced where torchvision's own code looks it up too (``torchvision.ops.boxes``,
``torchvision.ops.focal_loss``), so that torchvision's private helpers the tests call
(``_batched_nms_vanilla``, ``_batched_nms_coordinate_trick``) run on our ``nms``.
"""
from __future__ import annotations

from patching import replace


def install() -> list[str]:
    import torchvision.ops
    import torchvision.ops.boxes
    import torchvision.ops.focal_loss

    from mlperf_fast import ops

    done = []
    for name in ("nms", "batched_nms", "box_iou"):
        done += replace(getattr(ops, name), torchvision.ops, torchvision.ops.boxes, name=name)
    done += replace(ops.sigmoid_focal_loss, torchvision.ops, torchvision.ops.focal_loss,
                    name="sigmoid_focal_loss")
    return done


# Known differences (peers/README.md, "torchvision"): node id pattern, failure text, label.
KNOWN = [
    (r"jit", r"torch\.jit|NotSupportedError", "TorchScript"),
    (r"qnms", r"quint8", "quantized tensors"),
]
