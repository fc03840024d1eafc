"""The run-to-target loop on the toy workload: it converges, logs compliant MLPerf lines,
reports, resumes to the same weights, runs on two processes, and scores several runs."""
import json
import os
import subprocess
import sys

import pytest
import torch

from mlperf_fast.harness import RunOptions, run_workload
from mlperf_fast.harness.compliance import check_log
from toy import ToyWorkload, write_data

TOY_MAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "toy_main.py")


def _options(tmp_path, **kw) -> RunOptions:
    base = dict(config="default", output_dir=str(tmp_path / "out"), device="cpu",
                echo_log=False, progress=False)
    base.update(kw)
    return RunOptions(**base)


def _toy_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, TOY_MAIN, *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


def test_reaches_target_with_compliant_log_and_reports(tmp_path):
    summary = run_workload(ToyWorkload, _options(tmp_path))
    (run,) = summary["runs"]
    assert run["status"] == "converged"
    assert run["final_quality"]["accuracy"] >= 0.95
    assert run["history"][0]["quality"]["accuracy"] < run["final_quality"]["accuracy"]  # it learned
    assert run["time_to_train_s"] > 0
    assert run["compliance"]["passed"], run["compliance"]["messages"]
    out = tmp_path / "out" / "run_0"
    for name in ("report.json", "report.md", "quality.png", "mlperf.log", "checkpoint.pt"):
        assert (out / name).stat().st_size > 0, name
    assert (tmp_path / "out" / "summary.md").read_text().count("| converged |") == 1


def test_time_to_train_is_run_start_to_run_stop(tmp_path):
    summary = run_workload(ToyWorkload, _options(tmp_path))
    lines = [json.loads(line.split(" ", 1)[1])
             for line in (tmp_path / "out" / "run_0" / "mlperf.log").read_text().splitlines()]
    t = {e["key"]: e["time_ms"] for e in lines if e["key"] in ("run_start", "run_stop")}
    assert summary["runs"][0]["time_to_train_s"] == pytest.approx(
        (t["run_stop"] - t["run_start"]) / 1000.0)


def test_blocks_of_several_epochs(tmp_path):
    summary = run_workload(ToyWorkload, _options(tmp_path, config="two_per_block"))
    run = summary["runs"][0]
    assert [h["progress"] % 2 for h in run["history"]] == [0] * len(run["history"])
    assert run["compliance"]["passed"], run["compliance"]["messages"]


def test_unconverged_run_is_reported_as_such(tmp_path):
    summary = run_workload(ToyWorkload, _options(tmp_path, config="unreachable"))
    run = summary["runs"][0]
    assert run["status"] == "not converged" and run["progress"] == 5
    assert run["time_to_train_s"] is None
    assert summary["score"]["score_s"] is None
    log = (tmp_path / "out" / "run_0" / "mlperf.log").read_text()
    assert '"status": "aborted"' in log


def test_same_seed_same_result(tmp_path):
    a = run_workload(ToyWorkload, _options(tmp_path / "a", config="unreachable", budget=2))
    b = run_workload(ToyWorkload, _options(tmp_path / "b", config="unreachable", budget=2))
    assert [h["quality"] for h in a["runs"][0]["history"]] == \
        [h["quality"] for h in b["runs"][0]["history"]]
    wa = torch.load(tmp_path / "a/out/run_0/checkpoint.pt", weights_only=False)["workload"]
    wb = torch.load(tmp_path / "b/out/run_0/checkpoint.pt", weights_only=False)["workload"]
    for k in wa["model"]:
        assert torch.equal(wa["model"][k], wb["model"][k])


def test_several_runs_have_distinct_seeds_and_a_score(tmp_path):
    summary = run_workload(ToyWorkload, _options(tmp_path, runs=3))
    seeds = [r["seed"] for r in summary["runs"]]
    assert len(set(seeds)) == 3
    times = sorted(r["time_to_train_s"] for r in summary["runs"])
    assert summary["score"]["score_s"] == pytest.approx(times[1])  # 3 runs: the middle one
    assert all((tmp_path / "out" / f"run_{i}" / "report.json").exists() for i in range(3))


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(tmp_path):
    common = ["toy", "--config", "unreachable", "--device", "cpu", "--quiet"]
    full = _toy_cli(*common, "--output", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr
    killed = _toy_cli(*common, "--output", str(tmp_path / "cut"), env={"TOY_KILL_AT_EPOCH": "3"})
    assert killed.returncode == -9  # SIGKILL: no chance to clean up
    assert not (tmp_path / "cut" / "run_0" / "report.json").exists()
    resumed = _toy_cli(*common, "--output", str(tmp_path / "cut"), "--resume")
    assert resumed.returncode == 0, resumed.stderr

    def final(path):
        return torch.load(path / "run_0" / "checkpoint.pt", weights_only=False)["workload"]

    a, b = final(tmp_path / "full"), final(tmp_path / "cut")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    report = json.loads((tmp_path / "cut" / "run_0" / "report.json").read_text())
    assert report["resumed"] and report["progress"] == 5
    assert report["compliance"]["passed"], report["compliance"]["messages"]
    log = (tmp_path / "cut" / "run_0" / "mlperf.log").read_text()
    assert log.count('"key": "run_start"') == 1 and log.count('"key": "run_stop"') == 1
    assert log.count('"key": "eval_accuracy"') == 5


@pytest.mark.slow
def test_two_gloo_processes_keep_identical_weights(tmp_path):
    data = tmp_path / "data"
    write_data(str(data))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(29500 + os.getpid() % 1000),
           TOY_MAIN, "toy", "--config", "unreachable", "--max-epochs", "3", "--device", "cpu",
           "--data-dir", str(data), "--output", str(out), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TOY_SAVE_WEIGHTS": "1", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0 = torch.load(out / "run_0" / "weights_rank0.pt")["model"]
    w1 = torch.load(out / "run_0" / "weights_rank1.pt")["model"]
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    report = json.loads((out / "run_0" / "report.json").read_text())
    assert report["world_size"] == 2
    assert report["compliance"]["passed"], report["compliance"]["messages"]
    # Data parallelism over 2 ranks trains the same model as 1 process with the same global batch.
    single = run_workload(ToyWorkload, _options(tmp_path / "one", config="unreachable",
                                                 budget=3, data_dir=str(data)))
    q2 = [h["quality"]["accuracy"] for h in report["history"]]
    q1 = [h["quality"]["accuracy"] for h in single["runs"][0]["history"]]
    assert q2 == pytest.approx(q1, abs=2 / 1024)  # at most a couple of borderline points differ


def test_compliance_checker_rejects_a_broken_log(tmp_path):
    run_workload(ToyWorkload, _options(tmp_path))
    log = tmp_path / "out" / "run_0" / "mlperf.log"
    broken = tmp_path / "broken.log"
    broken.write_text("".join(line + "\n" for line in log.read_text().splitlines()
                              if '"key": "run_stop"' not in line))
    verdict = check_log(str(broken), "toy")
    assert not verdict.passed
    assert "run_stop" in verdict.messages


def test_the_default_round_is_the_checker_s():
    """A workload follows the round compliance.py checks unless it names its own (the two
    places that say "2.1.0" must agree)."""
    from mlperf_fast.harness import compliance
    from mlperf_fast.harness.workload import Workload

    assert Workload.ruleset == compliance.RULESET
