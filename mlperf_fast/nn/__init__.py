"""Modules built on mlperf_fast.ops, drop-ins for their torch.nn namesakes."""
from mlperf_fast.nn.lstm import LSTM

__all__ = ["LSTM"]
