"""One package per benchmark, the same files in each: config.py (the closed-division and embedded
configurations, every value with its source), data.py (readers of the real on-disk formats),
synth.py (the embedded data's generator, where data is generated), pipeline.py (the input
pipelines), model.py (the optimized model), reference.py (the MLCommons reference model, ported)
and workload.py (the Workload, exported as ``WORKLOAD``). The command line's registry is built
from these packages."""
