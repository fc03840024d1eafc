"""The verified cache: built once, verified on every use, a damaged artefact rebuilt, a partial
one never taken for complete, the leftovers of a killed build removed."""
import os

import pytest

from mlperf_fast.data import cache
from mlperf_fast.data.tokenizers import cached_sentencepiece
from mlperf_fast.harness.workload import DataError


@pytest.fixture(autouse=True)
def _root(tmp_path, monkeypatch):
    monkeypatch.setenv("MLPERF_FAST_CACHE", str(tmp_path / "cache"))


def _build(calls):
    def build(out):
        calls.append(out)
        with open(os.path.join(out, "a.txt"), "w") as f:
            f.write("hello")
        os.makedirs(os.path.join(out, "sub"))
        with open(os.path.join(out, "sub", "b.bin"), "wb") as f:
            f.write(b"\x00\x01")
    return build


def test_built_once_then_verified_and_reused():
    calls, msgs = [], []
    root = cache.cached("kind", "thing", {"v": 1}, _build(calls), log=msgs.append)
    assert cache.verify(root) is None and len(calls) == 1
    assert cache.cached("kind", "thing", {"v": 1}, _build(calls), log=msgs.append) == root
    assert len(calls) == 1
    # other settings, another artefact
    assert cache.cached("kind", "thing", {"v": 2}, _build(calls), log=msgs.append) != root


def test_damaged_or_partial_artefacts_are_rebuilt():
    calls, msgs = [], []
    root = cache.cached("kind", "thing", {"v": 1}, _build(calls), log=msgs.append)
    with open(os.path.join(root, "sub", "b.bin"), "wb") as f:
        f.write(b"\x00\x02")
    assert "corrupt" in cache.verify(root)
    cache.cached("kind", "thing", {"v": 1}, _build(calls), log=msgs.append)
    assert len(calls) == 2 and any("damaged" in m for m in msgs)
    os.remove(os.path.join(root, cache.MANIFEST))  # an interrupted build has no manifest
    assert cache.verify(root) is not None
    cache.cached("kind", "thing", {"v": 1}, _build(calls), log=msgs.append)
    assert len(calls) == 3 and cache.verify(root) is None


def test_failed_build_leaves_nothing_and_stale_builds_are_removed(tmp_path):
    parent = os.path.join(str(tmp_path / "cache"), "kind")
    os.makedirs(parent)
    import socket
    stale = os.path.join(parent, f".tmp-{socket.gethostname()}-999999999-abcd")  # no such pid
    live = os.path.join(parent, f".tmp-{socket.gethostname()}-{os.getpid()}-abcd")
    os.makedirs(stale)
    os.makedirs(live)

    def fails(out):
        raise DataError("the generator failed")

    with pytest.raises(DataError, match="generator failed"):
        cache.cached("kind", "thing", {"v": 1}, fails, log=lambda m: None)
    left = sorted(os.listdir(parent))
    assert left == [os.path.basename(live)]  # the stale one removed, the live one kept


def test_sentencepiece_model_is_verified_and_retrained_when_damaged():
    texts = [f"the cat number {i} sat on the mat" for i in range(200)]
    path = cached_sentencepiece("test", texts, 30, log=lambda m: None)
    with open(path, "r+b") as f:
        f.write(b"garbage")
    assert cache.verify(os.path.dirname(path)) is not None
    again = cached_sentencepiece("test", texts, 30, log=lambda m: None)
    assert again == path and cache.verify(os.path.dirname(path)) is None


def test_too_little_text_for_the_tokenizer_is_a_data_error():
    with pytest.raises(DataError, match="sentencepiece could not train 500 pieces"):
        cached_sentencepiece("test", ["a b c"], 500, log=lambda m: None)
