"""Fuzz cases of the optimizers, schedules, EMA, nn.LSTM and TableBatchedEmbeddingBag, each in a
child interpreter: every case must come out correct (valid input, checked result) or clear (the
expected error type, naming the argument); the table is printed either way."""
import cases_optim_nn
from fuzz_runner import expect_all_good, run_cases, table


def test_optim_and_nn_cases_are_correct_or_clear():
    outcomes = run_cases("cases_optim_nn", cases_optim_nn.CASES, timeout=600)
    print("\n" + table(outcomes))
    expect_all_good(outcomes)
