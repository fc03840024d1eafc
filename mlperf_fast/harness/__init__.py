"""The training harness shared by every benchmark: the run-to-target loop, MLPerf logging and
its compliance check, checkpoints, torch.distributed, timing, progress and reports.

Names are imported lazily, so that light modules (``timing``, ``seeding``) work without the
logging stack installed (the benchmarks need only ``timing``)."""
from __future__ import annotations

import importlib

_EXPORTS = {
    "RunOptions": "mlperf_fast.harness.loop",
    "run_workload": "mlperf_fast.harness.loop",
    "DataError": "mlperf_fast.harness.workload",
    "RunContext": "mlperf_fast.harness.workload",
    "Workload": "mlperf_fast.harness.workload",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mlperf_fast.harness' has no attribute {name!r}")
