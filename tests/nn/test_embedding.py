"""TableBatchedEmbeddingBag's list inputs (one per table, as a list of nn.EmbeddingBag is
called): checked per table in the dtype they arrive in, before they are concatenated."""
from __future__ import annotations

import pytest
import torch

from mlperf_fast.nn import TableBatchedEmbeddingBag


def _module_and_bags(seed):
    torch.manual_seed(seed)
    bags = [torch.nn.EmbeddingBag(n, 4, mode="sum") for n in (10, 7)]
    return TableBatchedEmbeddingBag.from_embedding_bags(bags), bags


@pytest.mark.parametrize("idx_dtype, off_dtype", [(torch.int32, torch.int64),
                                                  (torch.int64, torch.int32),
                                                  (torch.int32, torch.int32)])
def test_mixed_index_dtypes_match_embedding_bags(idx_dtype, off_dtype, rng_seed):
    m, bags = _module_and_bags(rng_seed)
    idx = [torch.tensor([1, 2, 9, 0], dtype=idx_dtype), torch.tensor([6, 6, 3], dtype=idx_dtype)]
    off = [torch.tensor([0, 1, 3], dtype=off_dtype), torch.tensor([0, 0, 2], dtype=off_dtype)]
    outs = m(idx, off)
    for out, bag, i, o in zip(outs, bags, idx, off):
        torch.testing.assert_close(out, bag(i.long(), o.long()))


def test_int64_offsets_past_int32_are_not_wrapped():
    m, _ = _module_and_bags(0)
    idx = [torch.tensor([1, 2], dtype=torch.int32), torch.tensor([3], dtype=torch.int32)]
    # 2^32 would wrap to 0 (a valid offset) if narrowed to the indices' int32 first.
    off = [torch.tensor([0, 2 ** 32], dtype=torch.int64), torch.tensor([0, 1])]
    with pytest.raises(ValueError, match="table 0: offsets"):
        m(idx, off)


@pytest.mark.parametrize("offsets, match", [
    ([torch.tensor([1, 2]), torch.tensor([0, 1])], "offsets\\[0\\] must be 0"),
    ([torch.tensor([0, 1]), torch.tensor([0, 2])], "table 1: offsets\\[-1\\]"),
    ([torch.tensor([0, 2, 1]), torch.tensor([0, 1, 1])], "nondecreasing"),
])
def test_table_offsets_stay_within_their_table(offsets, match):
    m, _ = _module_and_bags(0)
    idx = [torch.tensor([1, 2]), torch.tensor([3])]
    with pytest.raises(ValueError, match=match):
        m(idx, offsets)


def test_bad_types_and_options():
    m, _ = _module_and_bags(0)
    with pytest.raises(TypeError, match="table 1: indices"):
        m([torch.tensor([1]), torch.tensor([1.0])], [torch.tensor([0]), torch.tensor([0])])
    with pytest.raises(TypeError, match="table 0: offsets"):
        m([torch.tensor([1]), torch.tensor([1])], [[0], torch.tensor([0])])
    for kw, name in ((dict(lr=float("nan")), "lr"), (dict(lr=-1.0), "lr"),
                     (dict(eps=0.0), "eps")):
        with pytest.raises(ValueError, match=name):
            TableBatchedEmbeddingBag([3, 4], 2, optimizer="sgd", **kw)
