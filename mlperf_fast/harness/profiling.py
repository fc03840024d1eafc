"""``--profile N``: a torch.profiler trace of N training steps (after two steps of warm-up) and
the step's time by phase. Phases are ``torch.profiler.record_function`` ranges named
``phase:<name>``: the training step marks forward, backward and optimizer, a workload marks the
parts of its model (RNN-T: encoder, prediction, joint+loss), and the input pipeline's waiting is
``phase:input``. Written to ``profile.md`` (the table, then the top operators) and
``profile_trace.json`` (chrome://tracing, Perfetto)."""
from __future__ import annotations

import os
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function

PHASE = "phase:"


def phase(name: str):
    """A profiler range for one phase of the step (a no-op unless a profiler is recording)."""
    return record_function(PHASE + name)


class StepProfiler:
    def __init__(self, out_dir: str, steps: int, warmup: int = 2) -> None:
        self.out_dir, self.steps, self.warmup = out_dir, steps, warmup
        self._prof: Any = None
        self.done = False

    def on_step(self, count: int) -> None:
        """After training step ``count`` (from 1): start, or stop and write when N are traced."""
        if count == self.warmup:
            activities = [ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(ProfilerActivity.CUDA)
            self._prof = profile(activities=activities, record_shapes=False)
            self._prof.__enter__()
        elif self._prof is not None and count == self.warmup + self.steps:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self._prof.__exit__(None, None, None)
            self.write()
            self.done = True

    def write(self) -> None:
        prof = self._prof
        os.makedirs(self.out_dir, exist_ok=True)
        prof.export_chrome_trace(os.path.join(self.out_dir, "profile_trace.json"))
        events = prof.key_averages()
        device = torch.cuda.is_available()

        def dev_ms(e) -> float:
            t = getattr(e, "device_time_total", None)
            if t is None:
                t = getattr(e, "cuda_time_total", 0.0)
            return t / 1000.0 / self.steps

        rows = sorted((e for e in events if e.key.startswith(PHASE)),
                      key=lambda e: -e.cpu_time_total)
        lines = [f"# Profile of {self.steps} training steps (after {self.warmup} of warm-up)", "",
                 "| phase | CPU ms per step | " + ("GPU ms per step |" if device else ""),
                 "|---|---:|" + ("---:|" if device else "")]
        for e in rows:
            lines.append(f"| {e.key[len(PHASE):]} | {e.cpu_time_total / 1000.0 / self.steps:.2f} | "
                         + (f"{dev_ms(e):.2f} |" if device else ""))
        key = "self_device_time_total" if device else "self_cpu_time_total"
        lines += ["", "Top operators by self time:", "", "```",
                  events.table(sort_by=key, row_limit=15), "```"]
        with open(os.path.join(self.out_dir, "profile.md"), "w") as f:
            f.write("\n".join(lines) + "\n")
