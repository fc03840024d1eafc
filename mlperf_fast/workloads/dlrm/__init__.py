"""DLRM click-through prediction (Criteo 1TB; embedded: generated Criteo-format days)

Closed (--data-dir DIR): DIR holds the reference's binary format, <prefix>_train.bin,
<prefix>_test.bin (and _val.bin) and day_fea_count.npz, which
``python3 -m mlperf_fast.workloads.dlrm.preprocess --out DIR day_0 ... day_23`` writes from the
raw TSV days. Target AUC 0.8025 on the test set (the first half of day 23), evaluated every 0.05
epoch.

Embedded (no --data-dir): 4 days of 300,000 rows from a planted logistic model (Zipf ids, log-normal
dense features), written as raw TSV, preprocessed by the same command into the cache
($MLPERF_FAST_CACHE or ~/.cache/mlperf_fast) and read by the same reader; a 1.7M-parameter DLRM
trains to AUC 0.770 on it (the generator's Bayes AUC: 0.8012).
"""
