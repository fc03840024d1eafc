"""``python -m mlperf_fast NAME ...``: the training command line (``python -m mlperf_fast.train``)."""
import os
import sys

from mlperf_fast.train import main

if __name__ == "__main__":
    os.environ.setdefault("MLPERF_FAST_PROG", "python -m mlperf_fast")
    sys.exit(main())
