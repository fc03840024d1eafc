"""The fuzz cases of every op, optimizer and module run again with CUDA as the child's default
device, so that the same valid and invalid inputs reach the GPU kernels (each case still in a child
interpreter: a CUDA fault or an illegal address is a failed case, not a lost worker). The same
verdicts are required as on the CPU; the table is printed either way."""
import cases_ops
import cases_optim_nn
import pytest
from fuzz_runner import expect_all_good, run_cases, table


@pytest.mark.cuda
@pytest.mark.parametrize("module", [cases_ops, cases_optim_nn], ids=lambda m: m.__name__)
def test_fuzz_cases_on_cuda(module):
    outcomes = run_cases(module.__name__, module.CASES, timeout=900, device="cuda")
    print("\n" + table(outcomes))
    expect_all_good(outcomes)
