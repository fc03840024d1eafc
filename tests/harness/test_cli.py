"""`python -m mlperf_fast.train`: its list, help and one-line errors with exit code 2."""
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
    assert ":::MLLOG" in proc.stdout and "| converged |" in proc.stdout
    assert (tmp_path / "out" / "summary.json").exists()
