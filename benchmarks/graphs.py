"""CUDA-graph capture of a whole step for the benchmarks: how training loops run optimizer steps
and other short sequences of launches, so that the host's launch time drops out of the figure."""
from __future__ import annotations

from collections.abc import Callable

import torch


def captured(step: Callable[[], object]) -> Callable[[], None]:
    """``step`` captured in a CUDA graph; returns the graph's replay. ``step`` runs once before
    the capture, on a side stream (allocations, compiled kernels, lazily made state), so the
    benchmarked object's state moves by one step."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay
