"""Reports: one per run (JSON, Markdown, a PNG of quality against time) and a summary of all
runs with MLPerf's score."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from mlperf_fast.harness.scoring import mlperf_score


@dataclass
class RunResult:
    benchmark: str
    config: str
    division: str
    seed: int
    status: str  # "converged", "not converged" or "aborted"
    unit: str  # the schedule's unit of progress: "epoch", "sample" or "iteration"
    targets: list[dict[str, Any]]  # {"name", "target", "higher_is_better"} per metric
    time_to_train_s: float | None  # run_start to run_stop, MLPerf's time-to-train; None unless converged
    run_time_s: float  # run_start to run_stop, whatever the status
    progress: float  # epochs (samples, iterations) trained
    final_quality: dict[str, float] | None  # the last evaluation's metrics by name
    history: list[dict[str, Any]]  # {"progress", "time_s" (since run_start), "quality": {name: value}}
    world_size: int
    device: str
    resumed: bool
    compliance: dict[str, Any]
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)  # --set KEY=VALUE, as applied
    rcp: dict[str, Any] = field(default_factory=dict)  # the matching RCP, or a warning
    machine: dict[str, Any] = field(default_factory=dict)  # CPU, cores, GPU, load at the start
    steps: int = 0  # training steps of this process (of this session, when resumed)
    environment: dict[str, str] = field(default_factory=dict)
    output_dir: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def target_text(self) -> str:
        return " and ".join(f"{t['name']} {'>=' if t['higher_is_better'] else '<='} {t['target']:g}"
                            for t in self.targets)

    def quality_text(self, quality: dict[str, float] | None = None) -> str:
        q = self.final_quality if quality is None else quality
        if not q:
            return "—"
        return ", ".join(f"{k} {_fmt(v, 5)}" for k, v in q.items())


def _fmt(x: float | None, digits: int = 4) -> str:
    return "—" if x is None else f"{x:.{digits}g}"


def _verdict(compliance: dict[str, Any]) -> str:
    if compliance.get("passed"):
        return "passed"
    return "not checked" if compliance.get("ruleset") is None else "FAILED"


def _machine_text(m: dict[str, Any]) -> str:
    if not m:
        return "—"
    load = m.get("load_average")
    return (f"{m.get('cpu', '?')} ({m.get('cores', '?')} cores), GPU {m.get('gpu', 'none')}"
            + (f", load average {load[0]:.2f} at the start" if load else ""))


def _units(n: float, unit: str) -> str:
    return f"{n:g} {unit}{'' if n == 1 else 's'}"


def write_run_report(result: RunResult, out_dir: str) -> None:
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(result.to_dict(), f, indent=2, default=str)
    verdict = _verdict(result.compliance)
    names = [t["name"] for t in result.targets]
    lines = [
        f"# {result.benchmark} ({result.config}, {result.division} division), seed {result.seed}",
        "",
        f"- status: **{result.status}** after {_units(result.progress, result.unit)} "
        f"(target {result.target_text()})",
        f"- time to train: {_fmt(result.time_to_train_s)} s (run_start to run_stop: "
        f"{result.run_time_s:.4g} s)",
        f"- final quality: {result.quality_text()}",
        f"- processes: {result.world_size} on {result.device}"
        + (" (resumed from a checkpoint)" if result.resumed else ""),
        f"- MLPerf compliance ({result.compliance.get('ruleset')}, "
        f"{result.compliance.get('rules')} rules): {verdict}",
        *[f"  - {line}" for line in result.compliance.get("explanation", [])],
        f"- machine: {_machine_text(result.machine)}",
        *([f"- overrides: " + ", ".join(f"{k}={v!r}" for k, v in result.overrides.items())]
          if result.overrides else []),
        *([f"- reference convergence point: {result.rcp['name']}"] if result.rcp.get("name")
          else []),
        *([f"- warning: {result.rcp['warning']}"] if result.rcp.get("warning") else []),
        "",
        f"| {result.unit} | time (s) | " + " | ".join(names) + " |",
        "|---:|---:|" + "---:|" * len(names),
        *[f"| {h['progress']:g} | {h['time_s']:.4g} | "
          + " | ".join(f"{h['quality'][n]:.5g}" for n in names) + " |" for h in result.history],
    ]
    if result.compliance.get("messages"):
        lines += ["", "Compliance checker output:", "", "```", result.compliance["messages"], "```"]
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    _plot(result, os.path.join(out_dir, "quality.png"))


def _plot(result: RunResult, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(result.targets))
    fig, axes = plt.subplots(1, n, figsize=(6 * n, 4), dpi=100, squeeze=False)
    times = [h["time_s"] for h in result.history]
    for ax, t in zip(axes[0], result.targets):
        name = t["name"]
        ax.plot(times, [h["quality"][name] for h in result.history], marker="o", label=name)
        ax.axhline(t["target"], color="tab:red", linestyle="--", label=f"target {t['target']:g}")
        ax.set_xlabel("seconds since run_start")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{result.benchmark} ({result.config}), seed {result.seed}: {result.status}\n"
                 f"{result.world_size} x {result.device}; {_machine_text(result.machine)}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_summary(results: list[RunResult], out_dir: str) -> dict[str, Any]:
    score = mlperf_score([r.time_to_train_s for r in results])
    summary = {"score": score, "runs": [r.to_dict() for r in results]}
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    first = results[0]
    lines = [
        f"# {first.benchmark} ({first.config}): {len(results)} run(s)",
        "",
        f"Score: **{_fmt(score['score_s'])} s** ({score['method']}); "
        f"{score['converged']} of {score['runs']} runs converged.",
        "",
        f"| run | seed | status | {first.unit}s | time to train (s) | final quality | compliance |",
        "|---:|---:|---|---:|---:|---:|---|",
    ]
    for i, r in enumerate(results):
        lines.append(
            f"| {i} | {r.seed} | {r.status} | {r.progress:g} | {_fmt(r.time_to_train_s)} | "
            f"{r.quality_text()} | {_verdict(r.compliance)} |"
        )
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return summary
