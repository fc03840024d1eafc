"""The submission export: a toy's closed runs written in MLCommons' package layout, checked by
mlperf-logging's package checker (system description, compliance, seeds, RCPs)."""
import json
import os

import pytest

from mlperf_fast import submit
from mlperf_fast.harness import RunOptions, run_workload
from toy import ToyClosedSSD


@pytest.fixture(scope="module")
def closed_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "out"
    summary = run_workload(ToyClosedSSD, RunOptions(
        config="closed", output_dir=str(out), runs=5, device="cpu", echo_log=False,
        progress=False))
    assert all(r["compliance"]["passed"] for r in summary["runs"])
    return out, summary


def test_closed_run_off_every_rcp_is_warned(closed_runs):
    _, summary = closed_runs
    warning = summary["runs"][0]["rcp"]["warning"]
    assert "no ssd RCP has global batch size 64" in warning


def test_export_layout_and_package_checker(closed_runs, tmp_path):
    runs, _ = closed_runs
    pkg = tmp_path / "pkg"
    assert submit.main([str(runs), "--system", "toy_cpu", "--out", str(pkg)]) == 1
    verdict = json.loads((pkg / "package_check.json").read_text())
    # everything passes but the RCP check: no RCP exists at the toy's batch size
    assert not verdict["passed"]
    assert any("Missing RCP" in e for e in verdict["errors"]), verdict["errors"]
    results = sorted(os.listdir(pkg / "results" / "toy_cpu" / "ssd"))
    assert results == [f"result_{i}.txt" for i in range(5)]
    system = json.loads((pkg / "systems" / "toy_cpu.json").read_text())
    assert system["division"] == "closed" and system["submitter"] == "mlperf_fast"
    assert system["status"] == "Research, Development, or Internal (RDI)"
    # with the RCP check bypassed (the rules' exception), the package passes
    pkg2 = tmp_path / "pkg2"
    assert submit.main([str(runs), "--system", "toy_cpu", "--out", str(pkg2),
                        "--rcp-bypass"]) == 0
    assert json.loads((pkg2 / "package_check.json").read_text())["passed"]


def test_bad_arguments(tmp_path, capsys):
    assert submit.main([str(tmp_path), "--system", "s", "--out", str(tmp_path / "p")]) == 2
    assert "holds no runs" in capsys.readouterr().err
    assert submit.main([str(tmp_path)]) == 2  # --system and --out are required
