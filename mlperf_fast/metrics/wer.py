"""Word error rate, as the reference computes it (common/metrics.py): the word-level Levenshtein
distance summed over utterances, divided by the number of reference words."""
from __future__ import annotations


def edit_distance(a: list[str], b: list[str]) -> int:
    """Insertions + deletions + substitutions turning ``a`` into ``b``."""
    if len(a) > len(b):
        a, b = b, a
    row = list(range(len(a) + 1))
    for i, bw in enumerate(b, 1):
        prev_diag, row[0] = row[0], i
        for j, aw in enumerate(a, 1):
            cur = min(row[j] + 1, row[j - 1] + 1, prev_diag + (aw != bw))
            prev_diag, row[j] = row[j], cur
    return row[len(a)]


def word_error_counts(hypotheses: list[str], references: list[str]) -> tuple[int, int]:
    """(word errors, reference words) over the pairs."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    errors = words = 0
    for h, r in zip(hypotheses, references):
        rw = r.split()
        errors += edit_distance(h.split(), rw)
        words += len(rw)
    return errors, words


def word_error_rate(hypotheses: list[str], references: list[str]) -> float:
    errors, words = word_error_counts(hypotheses, references)
    return errors / words if words else float("inf")
