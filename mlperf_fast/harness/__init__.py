"""The training harness shared by every benchmark: the run-to-target loop, MLPerf logging and
its compliance check, checkpoints, torch.distributed, timing, progress and reports."""
from mlperf_fast.harness.loop import RunOptions, run_workload
from mlperf_fast.harness.workload import DataError, RunContext, Workload

__all__ = ["DataError", "RunContext", "RunOptions", "Workload", "run_workload"]
