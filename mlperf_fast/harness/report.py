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
    target: float
    quality_name: str
    higher_is_better: bool
    time_to_train_s: float | None  # run_start to run_stop, MLPerf's time-to-train; None unless converged
    run_time_s: float  # run_start to run_stop, whatever the status
    epochs: int
    final_quality: float | None
    history: list[dict[str, float]]  # {"epoch", "time_s" (since run_start), "quality"}
    world_size: int
    device: str
    resumed: bool
    compliance: dict[str, Any]
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    output_dir: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fmt(x: float | None, digits: int = 4) -> str:
    return "—" if x is None else f"{x:.{digits}g}"


def write_run_report(result: RunResult, out_dir: str) -> None:
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(result.to_dict(), f, indent=2, default=str)
    verdict = "passed" if result.compliance.get("passed") else "FAILED"
    lines = [
        f"# {result.benchmark} ({result.config}, {result.division} division), seed {result.seed}",
        "",
        f"- status: **{result.status}** after {result.epochs} epochs "
        f"(target {result.quality_name} {'>=' if result.higher_is_better else '<='} {result.target})",
        f"- time to train: {_fmt(result.time_to_train_s)} s (run_start to run_stop: "
        f"{result.run_time_s:.4g} s)",
        f"- final {result.quality_name}: {_fmt(result.final_quality)}",
        f"- processes: {result.world_size} on {result.device}"
        + (" (resumed from a checkpoint)" if result.resumed else ""),
        f"- MLPerf compliance ({result.compliance.get('ruleset')}, "
        f"{result.compliance.get('rules')} rules): {verdict}",
        "",
        f"| epoch | time (s) | {result.quality_name} |",
        "|---:|---:|---:|",
        *[f"| {h['epoch']} | {h['time_s']:.4g} | {h['quality']:.5g} |" for h in result.history],
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

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    times = [h["time_s"] for h in result.history]
    ax.plot(times, [h["quality"] for h in result.history], marker="o", label=result.quality_name)
    ax.axhline(result.target, color="tab:red", linestyle="--", label=f"target {result.target}")
    ax.set_xlabel("seconds since run_start")
    ax.set_ylabel(result.quality_name)
    ax.set_title(f"{result.benchmark} ({result.config}), seed {result.seed}: {result.status}")
    ax.grid(alpha=0.3)
    ax.legend()
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
        f"| run | seed | status | epochs | time to train (s) | final {first.quality_name} | compliance |",
        "|---:|---:|---|---:|---:|---:|---|",
    ]
    for i, r in enumerate(results):
        lines.append(
            f"| {i} | {r.seed} | {r.status} | {r.epochs} | {_fmt(r.time_to_train_s)} | "
            f"{_fmt(r.final_quality)} | {'passed' if r.compliance.get('passed') else 'FAILED'} |"
        )
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return summary
