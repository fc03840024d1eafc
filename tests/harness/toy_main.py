"""``python tests/harness/toy_main.py ARGS``: the training CLI with the toy workload registered,
for tests that need a separate process (torchrun, a killed run)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mlperf_fast.train import main, register  # noqa: E402

register("toy", "toy:ToyWorkload", "planted-teacher classifier (tests only)")
register("toy-needs", "toy:ToyNeedingAModule", "the toy, needing a missing module (tests only)")
register("toy-ssd", "toy:ToyClosedSSD", "the toy, logging as a closed SSD run (tests only)")

if __name__ == "__main__":
    sys.exit(main())
