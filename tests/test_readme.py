"""The README's set-up commands are the ones CI runs, and `python -m mlperf_fast.info` works."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)
            for line in block.strip().splitlines()]


def test_readme_has_exactly_two_setup_commands_and_ci_runs_them_verbatim():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    for command in commands:
        assert command in ci, f".ci/run does not run the README's command: {command}"
    assert "ctest" in " ".join(ci)


def test_info_prints_versions_and_backends():
    out = subprocess.run([sys.executable, "-m", "mlperf_fast.info"], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    for key in ("python", "torch", "torch CUDA", "triton", "DALI", "GPU", "_C backends"):
        assert re.search(rf"^{re.escape(key)}\s", out, re.M), f"{key} missing from:\n{out}"
    assert "cpu" in re.search(r"^_C backends\s+(.*)$", out, re.M).group(1)
