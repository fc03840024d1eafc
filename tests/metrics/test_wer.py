"""Word error rate against jiwer (the library oracle) and torchaudio's edit distance where it is
installed, on random sentences with ties, empty hypotheses and empty references included."""
import random

import pytest

from mlperf_fast.metrics.wer import edit_distance, word_error_counts, word_error_rate

jiwer = pytest.importorskip("jiwer")


def _sentences(rng: random.Random, n: int) -> list[str]:
    words = ["a", "b", "c", "the", "cat", "sat"]  # few words: many ties among alignments
    return [" ".join(rng.choice(words) for _ in range(rng.randint(0, 9))) for _ in range(n)]


def test_small_cases():
    assert edit_distance("a b c".split(), "a x c d".split()) == 2
    assert word_error_rate(["the cat sat", ""], ["the cat sat down", "hello"]) == pytest.approx(2 / 5)
    assert word_error_rate(["a"], ["a"]) == 0.0
    assert word_error_rate([""], [""]) == float("inf")  # no reference words: undefined
    with pytest.raises(ValueError, match="hypotheses"):
        word_error_counts(["a"], [])


def test_against_jiwer(rng_seed):
    rng = random.Random(rng_seed)
    refs = [r for r in _sentences(rng, 200) if r] or ["a"]
    hyps = _sentences(rng, len(refs))
    errors, words = word_error_counts(hyps, refs)
    out = jiwer.process_words(refs, hyps)
    assert errors == out.substitutions + out.deletions + out.insertions
    assert errors / words == pytest.approx(out.wer)


def test_against_torchaudio_edit_distance(rng_seed):
    F = pytest.importorskip("torchaudio.functional")  # noqa: N806
    rng = random.Random(rng_seed)
    for a, b in zip(_sentences(rng, 100), _sentences(rng, 100)):
        assert edit_distance(a.split(), b.split()) == F.edit_distance(a.split(), b.split())
