"""BERT-large masked-LM pretraining (Wikipedia; embedded: Python's own documentation)

Closed (--data-dir DIR --set init_checkpoint=PATH): DIR holds train/ and eval/ folders of
NVIDIA's hdf5 shards (fixed-length, variable-length or packed) or the reference's TFRecords, and
the vocab.txt they were written with; PATH the phase-1 checkpoint (a PyTorch state dict, or the
reference's TensorFlow checkpoint prefix, read without TensorFlow). BERT-large, LAMB at the
bert_ref_448 RCP's hyperparameters; target masked-LM accuracy 0.720 on the 10,000 evaluation
sequences, evaluated every 150,000 samples.

Embedded (no --data-dir): CPython's documentation topics and the standard library's docstrings,
a WordPiece vocabulary built from them, shards written by the package's writer (the reference's
masking rules, 128 tokens) into the cache ($MLPERF_FAST_CACHE or ~/.cache/mlperf_fast); a small
BERT trains from scratch to a masked-LM accuracy of 0.15 (the most frequent token: 0.047).
"""
