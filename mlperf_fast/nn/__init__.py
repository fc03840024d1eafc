"""Modules built on mlperf_fast.ops, drop-ins for their torch.nn counterparts."""
from mlperf_fast.nn.embedding import TableBatchedEmbeddingBag
from mlperf_fast.nn.lstm import LSTM

__all__ = ["LSTM", "TableBatchedEmbeddingBag"]
