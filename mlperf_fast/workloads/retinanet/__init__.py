"""RetinaNet object detection (OpenImages MLPerf subset; embedded: generated shapes on photographs)

Closed (--data-dir DIR): the OpenImages-v6 MLPerf subset in COCO json, DIR/train/data/*.jpg with
DIR/train/labels/openimages-mlperf.json and DIR/validation/... alike (264 classes). RetinaNet with
a ResNeXt50-32x4d FPN backbone (ImageNet weights from a torchvision file given with
``--set backbone_weights=PATH``), 800 x 800 inputs, Adam at the ssd_ref_256 RCP's
hyperparameters; target COCO box mAP 0.340 on the 24,781 validation images, every epoch.

Embedded (no --data-dir): objects of a few classes drawn on crops of photographs, written as
JPEG files with a COCO json in the OpenImages layout into the cache and read by the same reader
and pipeline; a small RetinaNet trained from scratch to its stated mAP target.
"""
