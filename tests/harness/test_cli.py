"""`python -m mlperf_fast.train`: its list, help and one-line errors with exit code 2."""
import json
import os
import subprocess
import sys

import pytest

from toy import write_data

TOY_MAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "toy_main.py")


def _run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, TOY_MAIN, *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def _assert_usage_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("mlperf_fast.train: error:")
    assert "Traceback" not in err
    for w in words:
        assert w in err, (w, err)


def test_list_and_help():
    proc = _run("--list")
    assert proc.returncode == 0
    assert any(line.startswith("toy ") for line in proc.stdout.splitlines()), proc.stdout
    proc = _run("--help")
    assert proc.returncode == 0 and "--data-dir" in proc.stdout and "--resume" in proc.stdout


def test_module_entry_point_lists_the_registry():
    proc = subprocess.run([sys.executable, "-m", "mlperf_fast.train", "--list"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    "args, words",
    [
        (["nosuch"], ["unknown benchmark", "nosuch", "toy"]),
        ([], ["name a benchmark"]),
        (["toy", "--bogus-flag"], ["--bogus-flag"]),
        (["toy", "--runs", "0"], ["--runs"]),
        (["toy", "--runs", "two"], ["--runs"]),
        (["toy", "--max-epochs", "-1"], ["--max-epochs"]),
        (["toy", "--config", "huge"], ["configuration", "huge"]),
        (["toy", "--data-dir", "/nonexistent/data"], ["/nonexistent/data", "no such directory"]),
        (["toy", "--resume"], ["--resume", "--output"]),
        (["toy", "--budget", "0"], ["--budget"]),
        (["toy", "--budget", "nan"], ["--budget"]),
        (["toy", "--max-epochs", "3", "--budget", "3"], ["--max-epochs", "--budget"]),
        (["toy", "--config", "samples", "--max-epochs", "3"], ["--max-epochs", "samples"]),
        (["toy-needs"], ["mlperf_fast_no_such_module", "pip install", "mlperf-fast[toy]"]),
    ],
)
def test_errors_are_one_line_with_exit_code_2(tmp_path, args, words):
    proc = _run(*args, cwd=tmp_path)
    _assert_usage_error(proc, *words)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_missing_and_corrupt_data_files_are_named(tmp_path):
    data = tmp_path / "data"
    write_data(str(data))
    (data / "eval.npz").unlink()
    _assert_usage_error(_run("toy", "--data-dir", str(data), cwd=tmp_path), "eval.npz", "missing")
    (data / "eval.npz").write_bytes(b"not a zip archive")
    _assert_usage_error(_run("toy", "--data-dir", str(data), cwd=tmp_path), "eval.npz", "not a valid")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_a_run_from_the_cli_writes_its_reports(tmp_path):
    proc = _run("toy", "--device", "cpu", "--output", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # the MLPerf lines go to the log only, unless asked for on stdout
    assert ":::MLLOG" not in proc.stdout and "| converged |" in proc.stdout
    assert ":::MLLOG" in (tmp_path / "out" / "run_0" / "mlperf.log").read_text()
    assert (tmp_path / "out" / "summary.json").exists()


def test_echo_mllog_prints_the_log_lines(tmp_path):
    proc = _run("toy", "--device", "cpu", "--echo-mllog", "--output", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert ":::MLLOG" in proc.stdout


@pytest.mark.parametrize(
    "args, words",
    [
        (["--set", "lr=abc"], ["--set lr=abc", "number"]),
        (["--set", "global_batch_size=1.5"], ["global_batch_size", "integer"]),
        (["--set", "nosuch=1"], ["unknown key", "nosuch"]),
        (["--set", "schedule.nosuch=1"], ["unknown key", "nosuch"]),
        (["--set", "schedule.budget=-1"], ["schedule.budget", "> 0"]),
        (["--set", "target.nosuch=0.5"], ["no metric", "nosuch"]),
        (["--set", "lr"], ["KEY=VALUE"]),
        (["--seed", "-1", "--runs", "2"], ["--seed"]),
        (["--seed", str(2**70)], ["--seed"]),
        (["--dry-run", "0"], ["--dry-run"]),
    ],
)
def test_bad_overrides_and_values_are_one_line_errors(tmp_path, args, words):
    proc = _run("toy", "--device", "cpu", *args, cwd=tmp_path)
    _assert_usage_error(proc, *words)
    assert list(tmp_path.iterdir()) == []


def test_overrides_reach_the_run_and_its_report(tmp_path):
    out = tmp_path / "out"
    proc = _run("toy", "--device", "cpu", "--set", "lr=0.05", "--set", "target.accuracy=0.9",
                "--set", "schedule.budget=3", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "run_0" / "report.json").read_text())
    assert report["overrides"] == {"lr": 0.05, "target.accuracy": 0.9, "schedule.budget": 3.0}
    assert report["targets"][0]["target"] == 0.9
    assert report["hyperparameters"]["opt_base_learning_rate"] == 0.05
    assert "overrides: lr=0.05" in (out / "run_0" / "report.md").read_text()


def test_dry_run_and_the_per_step_log(tmp_path):
    out = tmp_path / "out"
    proc = _run("toy", "--device", "cpu", "--dry-run", "5", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "run_0" / "report.json").read_text())
    assert report["status"] == "dry run" and report["steps"] == 5
    rows = [json.loads(line) for line in (out / "run_0" / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert all(r["loss"] > 0 and r["samples"] == 64 for r in rows)
    assert "dry run" in report["compliance"]["explanation"][0]


def test_an_existing_run_folder_is_never_overwritten(tmp_path):
    out = tmp_path / "out"
    assert _run("toy", "--device", "cpu", "--set", "schedule.budget=1", "--output",
                str(out)).returncode == 0
    before = (out / "run_0" / "report.json").read_text()
    _assert_usage_error(_run("toy", "--device", "cpu", "--output", str(out)), "--resume",
                        "--overwrite")
    assert (out / "run_0" / "report.json").read_text() == before
    proc = _run("toy", "--device", "cpu", "--set", "schedule.budget=1", "--overwrite", "--output",
                str(out))
    assert proc.returncode == 0, proc.stderr


def test_resume_faults_are_one_line_errors(tmp_path):
    out = tmp_path / "out"
    common = ["toy", "--device", "cpu", "--config", "unreachable", "--output", str(out)]
    assert _run(*common).returncode == 0
    (out / "run_0" / "report.json").write_text("garbage")
    _assert_usage_error(_run(*common, "--resume"), "report.json")
    (out / "run_0" / "report.json").unlink()
    (out / "run_0" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    _assert_usage_error(_run(*common, "--resume"), "checkpoint.pt")
    _assert_usage_error(_run("toy", "--resume", "--overwrite", "--output", str(out)),
                        "--resume", "--overwrite")


def test_unwritable_output_is_a_one_line_error(tmp_path):
    if os.geteuid() == 0:
        target = "/proc/mlperf_fast_out"  # not writable even for root
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        target = str(ro / "out")
    _assert_usage_error(_run("toy", "--device", "cpu", "--output", target), "--output",
                        "not writable")


def test_version_benchmark_help_and_package_entry(tmp_path):
    proc = _run("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("mlperf_fast ")
    proc = _run("toy", "--help")
    assert proc.returncode == 0, proc.stderr
    for words in ("Configurations", "two_targets", "accuracy >= 0.95", "lr = 0.02",
                  "schedule.budget"):
        assert words in proc.stdout, words
    proc = subprocess.run([sys.executable, "-m", "mlperf_fast", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python -m mlperf_fast ")


def test_profile_writes_the_phase_table(tmp_path):
    out = tmp_path / "out"
    proc = _run("toy", "--device", "cpu", "--profile", "3", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    table = (out / "run_0" / "profile.md").read_text()
    for name in ("forward", "backward", "optimizer"):
        assert f"| {name} |" in table, table
    assert (out / "run_0" / "profile_trace.json").stat().st_size > 0
    assert json.loads((out / "run_0" / "report.json").read_text())["status"] == "profiled"
