"""Every public op of mlperf_fast.ops under valid and invalid inputs, each case in a child
interpreter (tests/fuzz/fuzz_runner.py): every case must give a correct result or a clear error
naming the argument; the table of verdicts is printed."""
import cases_ops
from fuzz_runner import expect_all_good, run_cases, table


def test_fuzz_ops():
    outcomes = run_cases("cases_ops", cases_ops.CASES, timeout=600)
    print("\n" + table(outcomes))
    expect_all_good(outcomes)
