"""SSD-ResNet34 object detection (COCO 2017; embedded: generated shapes on photographs)

Closed (--data-dir DIR): COCO 2017 as DIR/train2017/, DIR/val2017/ and
DIR/annotations/instances_{train,val}2017.json. SSD300 on a ResNet-34 trunk (MLPerf Training
v1.0), momentum SGD at the ssd_ref_1024_s128 RCP's hyperparameters; target box mAP 0.23 on the
validation images, evaluated every 5 epochs. The rules' ImageNet-pretrained trunk is a file the
user supplies (--set backbone_weights=resnet34-333f7ec4.pth).

Embedded (no --data-dir): eight classes of shapes pasted onto crops of photographs, written as
JPEG files with a COCO json into the cache ($MLPERF_FAST_CACHE or ~/.cache/mlperf_fast) and read
by the same reader and pipeline; a small SSD (a narrow three-stage ResNet trunk from scratch,
four feature maps, 1,520 default boxes, 128 px) trains to box mAP 0.16 in 10 epochs.
"""
