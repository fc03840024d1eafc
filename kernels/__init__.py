"""Triton kernels of mlperf_fast, one kernel per file, installed as ``mlperf_fast.kernels``.

They are reached through the ops in ``mlperf_fast.ops`` (``backend="triton"``), which check the
arguments first. On the CPU they run only under the interpreter (``TRITON_INTERPRET=1``), which
is how the tests exercise them without a GPU.
"""
