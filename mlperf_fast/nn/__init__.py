"""Modules built on mlperf_fast.ops, drop-ins for their torch.nn counterparts."""
from mlperf_fast.nn.embedding import TableBatchedEmbeddingBag

__all__ = ["TableBatchedEmbeddingBag"]
