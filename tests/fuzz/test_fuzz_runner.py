"""The fuzz runner itself: each outcome is told apart, and a crash costs only its own case."""
import cases_selftest
from fuzz_runner import Case, run_cases, table


def test_each_outcome_is_classified():
    outcomes = run_cases("cases_selftest", cases_selftest.CASES, timeout=120)
    assert [o.verdict for o in outcomes] == [
        "correct", "clear", "unclear", "silent", "silent", "crash", "correct"]
    assert "| crash | 1 |" in table(outcomes)


def test_a_hang_is_a_hang():
    (out,) = run_cases("cases_selftest", [Case("hang", "hangs")], timeout=5)
    assert out.verdict == "hang"


def test_the_default_device_reaches_the_child():
    (out,) = run_cases("cases_selftest", [Case("meta", "on_meta")], timeout=120, device="meta")
    assert out.verdict == "correct", out.message
    (out,) = run_cases("cases_selftest", [Case("meta", "on_meta")], timeout=120)
    assert out.verdict == "silent"
