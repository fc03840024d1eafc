"""The mlperf-logging compliance checker, run on a run's own log.

MLPerf benchmarks are checked against the package's training rules of the 2.1.0 round (the
round of the seeds and hyperparameters this project follows), closed or open division as the
log says. A workload that is not an MLPerf benchmark (a test workload, a new model) is checked
against the same common and division rules, with the benchmark-specific file left out: the
rules are read from the installed package and only the submission_benchmark record is changed.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import yaml
from mlperf_logging.compliance_checker import mlp_compliance

RULESET = "2.1.0"
MLPERF_BENCHMARKS = ("resnet", "ssd", "maskrcnn", "minigo", "dlrm", "bert", "rnnt", "unet3d")


@dataclass
class Verdict:
    passed: bool
    ruleset: str  # "training 2.1.0"
    rules: str  # "mlperf" (the package's rules as they are) or "common" (benchmark file left out)
    messages: str  # what the checker reported; empty when it passed cleanly

    def to_dict(self) -> dict:
        return asdict(self)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.lines.append(record.getMessage())


@contextlib.contextmanager
def _captured() -> Iterator[_Capture]:
    root = logging.getLogger()
    capture = _Capture()
    old_level = root.level
    root.addHandler(capture)
    root.setLevel(min(old_level, logging.WARNING) if old_level else logging.WARNING)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(old_level)


def _rules_dir(ruleset: str = RULESET) -> str:
    return os.path.join(os.path.dirname(mlp_compliance.__file__), f"training_{ruleset}")


def rules_path(name: str, ruleset: str = RULESET) -> str:
    """The path of one of the checker's rule files (``name``, e.g. "closed_ssd.yaml") of the
    training round ``ruleset``."""
    return os.path.join(_rules_dir(ruleset), name)


def load_rules(name: str, ruleset: str = RULESET) -> list[dict]:
    """The records of the rule file ``name`` of round ``ruleset`` (see :func:`rules_path`)."""
    with open(rules_path(name, ruleset)) as f:
        return yaml.safe_load(f)


def _common_rules(benchmark: str, out_dir: str, ruleset: str) -> str:
    """Write the package's common and division rules, with submission_benchmark accepting
    ``benchmark`` and enqueueing nothing more, into ``out_dir``; return the entry file."""
    src = _rules_dir(ruleset)
    with open(os.path.join(src, "common.yaml")) as f:
        common = yaml.safe_load(f)
    for record in common:
        key = record.get("KEY", {})
        if key.get("NAME") == "submission_division":
            key["POST"] = key["POST"].replace(f"training_{ruleset}/", out_dir + "/")
    with open(os.path.join(out_dir, "common.yaml"), "w") as f:
        yaml.safe_dump(common, f, sort_keys=False)
    for division in ("closed", "open"):
        with open(os.path.join(src, f"{division}_common.yaml")) as f:
            rules = yaml.safe_load(f)
        for record in rules:
            key = record.get("KEY", {})
            if key.get("NAME") == "submission_benchmark":
                key["CHECK"] = f"v['value'] == {benchmark!r}"
                key.pop("POST", None)
        with open(os.path.join(out_dir, f"{division}_common.yaml"), "w") as f:
            yaml.safe_dump(rules, f, sort_keys=False)
    return os.path.join(out_dir, "common.yaml")


def check_log(path: str, benchmark: str, ruleset: str = RULESET) -> Verdict:
    """Run the compliance checker of the training round ``ruleset`` (e.g. "2.1.0"; SSD-ResNet34
    is a 1.0.0 benchmark) on the MLPerf log at ``path``."""
    round_name = f"training {ruleset}"
    checker = mlp_compliance.make_checker("training", ruleset, quiet=False, werror=False)
    mlp_compliance.enqueued_configs.clear()  # module state left over by an earlier failure
    with tempfile.TemporaryDirectory() as tmp, _captured() as capture:
        if benchmark in MLPERF_BENCHMARKS:
            rules, config = "mlperf", f"training_{ruleset}/common.yaml"
        else:
            rules, config = "common", _common_rules(benchmark, tmp, ruleset)
        try:
            passed = checker.check_file(path, config)
        except Exception as e:  # the checker's own failure is a failed check, not a crash
            passed = False
            capture.lines.append(f"compliance checker failed: {type(e).__name__}: {e}")
    return Verdict(bool(passed), round_name, rules, "\n".join(capture.lines).strip())


def explain(verdict: dict, metrics, history: list[dict]) -> list[str]:
    """A failed verdict in words: what each failed check of the checker's output asks for and,
    for the quality checks, what the run reached. Empty when the log passed."""
    if verdict.get("passed"):
        return []
    lines = []
    for raw in verdict.get("messages", "").splitlines():
        raw = raw.strip()
        if not raw:
            continue
        if raw.startswith("Failed checks for eval_accuracy") or "ATLEAST_ONE_CHECK" in raw:
            reached = ", ".join(
                f"{m.name} {best:.4g}" for m in metrics
                for best in [_best(m, history)] if best is not None) or "no evaluation"
            lines.append(f"the rules ask for at least one evaluation meeting {raw.split(':', 1)[-1].strip()}; "
                         f"this run's best was {reached} (train longer, or to the target)")
        elif "Required" in raw and "occurrence" in raw or "missing" in raw.lower():
            lines.append(f"a key the rules require is missing or repeated: {raw}")
        elif raw.startswith("Failed checks for"):
            key, _, check = raw[len("Failed checks for"):].partition(":")
            lines.append(f"the value logged for {key.strip()} breaks the rule {check.strip()}")
        else:
            lines.append(raw)
    return lines or ["the checker failed without a message (see mlperf.log)"]


def _best(metric, history: list[dict]):
    values = [h["quality"].get(metric.name) for h in history if h.get("quality")]
    values = [v for v in values if v is not None and v == v]
    if not values:
        return None
    return max(values) if metric.higher_is_better else min(values)
