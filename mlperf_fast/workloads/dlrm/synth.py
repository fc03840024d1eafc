"""The embedded data set: raw Criteo-format TSV days drawn from a planted model, turned into
the binary format by the package's own preprocessing (preprocess.py), and cached.

The planted model, per row:

- categorical feature ``j`` (26): an id ``k`` of a vocabulary of ``vocab[j]`` values drawn from
  a Zipf law (``P(k) ~ (k + 1) ** -zipf``), written as its own random 32-bit hash in 8 hex
  digits (or empty, with probability ``missing[j]``: a value of its own, as Criteo's empty
  fields are); it adds ``effect[j][k] ~ N(0, scale[j] ** 2)`` to the logit, ``scale[j]`` one of
  0.05, 0.12, 0.25;
- dense feature ``i`` (13): ``floor(lognormal(mu[i], sigma[i])) - shift[i]`` (so some are
  negative, as Criteo's I2 is; empty with probability 0.05); it adds ``weight[i] *
  (log(max(x, 0) + 1) - centre[i])``, ``weight ~ N(0, 0.25 ** 2)``, a function of what the
  model reads;
- two pairs of categorical features add ``<u[a][k_a], u[b][k_b]>`` (4-dimensional factors,
  N(0, 0.35 ** 2) entries): a term only the interaction of embeddings can express;
- the label is Bernoulli(sigmoid(bias + the sum)), bias -1.6: about 29% positives.

These scales put the Bayes AUC near 0.80, where Criteo 1TB's target is.

The Bayes classifier scores each row by its true probability; its AUC on the test half of the
last day (``bayes_auc``, through mlperf_fast.metrics.auc) is the ceiling any model can reach on
that test set, recorded in the data set's ``meta.json`` with the expected AUC over label draws.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from mlperf_fast.workloads.dlrm.config import NUM_DENSE, NUM_SPARSE

#: bump when the generator's output changes (part of the cache key)
VERSION = 1
PAIRS = ((0, 9), (2, 19))
FACTOR_DIM = 4


@dataclass(frozen=True)
class SynthSettings:
    days: int
    rows_per_day: int
    vocab: tuple[int, ...]
    max_ind_range: int = 40_000_000
    zipf: float = 1.1
    bias: float = -1.6
    seed: int = 2021
    version: int = VERSION

    def __post_init__(self) -> None:
        if self.days < 2 or self.rows_per_day < 2:
            raise ValueError("synth: need at least 2 days (the last is test/val) of >= 2 rows")
        if len(self.vocab) != NUM_SPARSE or min(self.vocab) < 1:
            raise ValueError(f"synth: vocab must be {NUM_SPARSE} sizes >= 1")


class PlantedModel:
    """The generator's parameters, drawn once from ``settings.seed``."""

    def __init__(self, s: SynthSettings) -> None:
        rng = np.random.default_rng(s.seed)
        self.s = s
        self.hashes, self.cdf, self.effect = [], [], []
        self.missing = rng.choice([0.0, 0.0, 0.02, 0.2], size=NUM_SPARSE)
        scales = rng.choice([0.05, 0.12, 0.25], size=NUM_SPARSE)
        for j, v in enumerate(s.vocab):
            h = np.unique(rng.integers(1, 2 ** 32, size=2 * v + 16, dtype=np.uint64))
            self.hashes.append(rng.permutation(h)[:v])
            p = (np.arange(v) + 1.0) ** -s.zipf
            self.cdf.append(np.cumsum(p / p.sum()))
            # the last entry is the missing value's effect
            self.effect.append(rng.normal(0.0, scales[j], size=v + 1))
        self.factors = {(a, b): (rng.normal(0, 0.35, (s.vocab[a] + 1, FACTOR_DIM)),
                                 rng.normal(0, 0.35, (s.vocab[b] + 1, FACTOR_DIM)))
                        for a, b in PAIRS}
        self.mu = rng.uniform(0.0, 3.0, NUM_DENSE)
        self.sigma = rng.uniform(0.5, 1.5, NUM_DENSE)
        self.shift = np.zeros(NUM_DENSE, dtype=np.int64)
        self.shift[1] = 3
        self.weight = rng.normal(0.0, 0.25, NUM_DENSE)
        self.centre = self.mu  # log(x + 1) is about the log-normal's mu

    def draw(self, n: int, rng: np.random.Generator):
        """``n`` rows: labels int [n], dense (int64 [n, 13], missing mask), categorical ids
        (int64 [n, 26], ``vocab[j]`` where missing) and the true probabilities [n]."""
        s = self.s
        cat = np.empty((n, NUM_SPARSE), dtype=np.int64)
        logit = np.full(n, s.bias)
        for j, v in enumerate(s.vocab):
            k = np.minimum(np.searchsorted(self.cdf[j], rng.random(n)), v - 1)
            k[rng.random(n) < self.missing[j]] = v
            cat[:, j] = k
            logit += self.effect[j][k]
        for (a, b), (ua, ub) in self.factors.items():
            logit += (ua[cat[:, a]] * ub[cat[:, b]]).sum(1)
        dense = np.floor(rng.lognormal(self.mu, self.sigma, (n, NUM_DENSE))).astype(np.int64)
        dense -= self.shift
        dense_missing = rng.random((n, NUM_DENSE)) < 0.05
        seen = np.where(dense_missing, 0, np.maximum(dense, 0))
        logit += ((np.log(seen + 1.0) - self.centre) * self.weight).sum(1)
        p = 1.0 / (1.0 + np.exp(-logit))
        labels = (rng.random(n) < p).astype(np.int64)
        return labels, dense, dense_missing, cat, p

    def tsv(self, labels, dense, dense_missing, cat) -> str:
        """Criteo's line format: label, 13 decimal ints, 26 8-digit hex strings (empty where
        missing), tab-separated."""
        cols = [list(map(str, labels.tolist()))]
        for i in range(NUM_DENSE):
            col = list(map(str, dense[:, i].tolist()))
            for r in np.flatnonzero(dense_missing[:, i]).tolist():
                col[r] = ""
            cols.append(col)
        for j, v in enumerate(self.s.vocab):
            names = [f"{h:08x}" for h in self.hashes[j].tolist()] + [""]
            cols.append([names[k] for k in cat[:, j].tolist()])
        return "\n".join(map("\t".join, zip(*cols))) + "\n"


def expected_auc(p: np.ndarray) -> float:
    """The AUC of scoring by ``p`` when labels are drawn Bernoulli(``p``): the expected count of
    correctly ordered (positive, negative) pairs over the expected count of pairs, ties counted
    one half, a sample never paired with itself."""
    q = np.sort(np.asarray(p, dtype=np.float64))
    neg = 1.0 - q
    _, first, counts = np.unique(q, return_index=True, return_counts=True)
    cum = np.concatenate([[0.0], np.cumsum(neg)])
    below = np.repeat(cum[first], counts)  # negative mass strictly below
    tie = np.repeat(cum[first + counts] - cum[first], counts) - neg  # ... and tied, but not self
    num = (q * (below + 0.5 * tie)).sum()
    den = q.sum() * neg.sum() - (q * neg).sum()
    return float(num / den)


def generate_days(settings: SynthSettings, raw_dir: str) -> dict:
    """Write ``raw_dir/day_0 ... day_{days-1}``; returns the Bayes AUCs of the last day's test
    half (the first ``ceil(n / 2)`` rows, as preprocessing splits it)."""
    from mlperf_fast.metrics.auc import roc_auc

    model = PlantedModel(settings)
    os.makedirs(raw_dir, exist_ok=True)
    chunk = 100_000
    bayes = {}
    for d in range(settings.days):
        rng = np.random.default_rng([settings.seed, d])
        ps, ys = [], []
        with open(os.path.join(raw_dir, f"day_{d}"), "w") as f:
            for start in range(0, settings.rows_per_day, chunk):
                n = min(chunk, settings.rows_per_day - start)
                labels, dense, missing, cat, p = model.draw(n, rng)
                f.write(model.tsv(labels, dense, missing, cat))
                if d == settings.days - 1:
                    ps.append(p)
                    ys.append(labels)
        if d == settings.days - 1:
            half = math.ceil(settings.rows_per_day / 2)
            p, y = np.concatenate(ps)[:half], np.concatenate(ys)[:half]
            bayes = {"bayes_auc": roc_auc(torch.from_numpy(p), torch.from_numpy(y)),
                     "bayes_auc_expected": expected_auc(p),
                     "test_positive_rate": float(y.mean())}
    return bayes


def build_dataset(settings: SynthSettings, out_dir: str,
                  log: Callable[[str], None] = print) -> None:
    """Generate the raw days into a scratch folder, preprocess them into ``out_dir`` and write
    ``meta.json`` (settings, sample counts, Bayes AUCs); the raw days are then removed."""
    import shutil

    from mlperf_fast.workloads.dlrm.preprocess import preprocess

    raw = os.path.join(out_dir, "raw")
    bayes = generate_days(settings, raw)
    days = [os.path.join(raw, f"day_{d}") for d in range(settings.days)]
    result = preprocess(days, out_dir, max_ind_range=settings.max_ind_range, log=log)
    shutil.rmtree(raw)
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump({"settings": asdict(settings), **result, **bayes}, f, indent=1)


def embedded_dataset(settings: SynthSettings, log: Callable[[str], None] = print) -> str:
    """The folder of the embedded data set of ``settings`` in the verified cache (built once)."""
    from mlperf_fast.data.cache import cached

    return cached("dlrm", "criteo-synth", settings, lambda d: build_dataset(settings, d, log),
                  log=log, what="the embedded DLRM data set")


def read_meta(data_dir: str) -> dict:
    with open(os.path.join(data_dir, "meta.json")) as f:
        return json.load(f)


def settings_for(vocab: Sequence[int], days: int, rows_per_day: int,
                 max_ind_range: int) -> SynthSettings:
    return SynthSettings(days=days, rows_per_day=rows_per_day, vocab=tuple(vocab),
                         max_ind_range=max_ind_range)
