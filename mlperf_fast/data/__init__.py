"""What every benchmark's input needs: the verified cache of generated data (cache.py), samplers
(samplers.py), input loading with worker processes or a prefetch thread and the time spent waiting
for it (loader.py), tokenizers (tokenizers.py), TensorFlow's formats (tfrecord.py,
tf_checkpoint.py), COCO-format detection sets (coco.py), the embedded detection set
(detection_synth.py), box-aware transforms (detection_transforms.py) and NVIDIA DALI's
availability (dali.py)."""
