"""mlperf_fast: fast, honest implementations of the MLPerf Training benchmarks.

Fused CUDA and Triton kernels (``mlperf_fast.ops``, ``mlperf_fast.optim``), input pipelines, and a
run-to-target training harness (``python -m mlperf_fast.train NAME``).
"""
__version__ = "0.1.0"
