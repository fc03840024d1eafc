"""bench_detection_eval.py's code on the CPU at the embedded configurations' sizes (its timing
runs only on a GPU machine): both detectors' four timed functions run, the reference's per-image
post-processing gives our detections, and the two evaluators give the same mAP."""
from bench_modules import load_step_bench


def test_smoke_runs_every_function_of_both_detectors():
    load_step_bench("bench_detection_eval").smoke()
