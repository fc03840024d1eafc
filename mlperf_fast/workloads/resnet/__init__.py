"""ResNet-50 image classification (ImageNet; embedded: generated JPEG classes)

Closed (--data-dir DIR): ImageNet 2012 as DIR/train/<wnid>/*.JPEG and DIR/val/<wnid>/*.JPEG, or
the reference's TFRecord shards (train-00000-of-01024 ..., validation-00000-of-00128 ...).
ResNet-50 v1.5, LARS at the resnet_ref_3264 RCP's hyperparameters; target top-1 0.759 on the
50,000 validation images, evaluated after epoch 2 and then every 4 epochs.

Embedded (no --data-dir): ten procedurally drawn shape classes, written as JPEG files in the
ImageFolder layout into the cache ($MLPERF_FAST_CACHE or ~/.cache/mlperf_fast) and read by the
same reader and pipeline; a small ResNet (one bottleneck per stage) trains to top-1 0.90 at 64 px.
"""
