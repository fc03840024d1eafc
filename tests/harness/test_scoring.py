import math

import pytest

from mlperf_fast.harness.scoring import mlperf_score
from mlperf_fast.harness.seeding import run_seeds


def test_drops_fastest_and_slowest():
    s = mlperf_score([10.0, 1.0, 4.0, 6.0, 100.0])
    assert s["score_s"] == pytest.approx((4.0 + 6.0 + 10.0) / 3)
    assert s["converged"] == 5


def test_one_unconverged_run_is_dropped_as_the_slowest():
    s = mlperf_score([3.0, None, 5.0, 7.0])
    assert s["score_s"] == pytest.approx(6.0)
    assert s["converged"] == 3


def test_two_unconverged_runs_mean_no_score():
    s = mlperf_score([3.0, None, None, 7.0])
    assert s["score_s"] is None and "not converged" in s["method"]


def test_too_few_runs_take_the_plain_mean():
    assert mlperf_score([2.0, 4.0])["score_s"] == pytest.approx(3.0)
    assert mlperf_score([2.0])["score_s"] == pytest.approx(2.0)
    assert mlperf_score([None])["score_s"] is None
    assert mlperf_score([])["score_s"] is None


def test_run_seeds_are_distinct_and_reproducible():
    a = run_seeds(7, 10)
    assert len(set(a)) == 10 and a == run_seeds(7, 10) and a != run_seeds(8, 10)
    assert all(0 <= s < 2**31 for s in a) and not any(math.isnan(s) for s in a)
