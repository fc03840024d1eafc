"""Capture of a short sequence of launches in a CUDA graph, for whoever replays one: the batched
greedy decoder's step, a whole optimizer step in benchmarks and tests."""
from __future__ import annotations

from collections.abc import Callable

import torch


def capture(step: Callable[[], object]) -> Callable[[], None]:
    """``step`` captured once in a CUDA graph; returns the graph's replay. ``step`` runs once
    before the capture, on a side stream (allocations, compiled kernels, lazily made state), so
    whatever state it moves moves by one call."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay
