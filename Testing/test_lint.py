"""The code base passes ruff (the project's lint settings in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess

from conftest import PROJECT_ROOT


def test_ruff_reports_nothing() -> None:
    ruff = shutil.which("ruff") or str(PROJECT_ROOT / ".venv" / "bin" / "ruff")
    result = subprocess.run(
        [ruff, "check", "--exclude", ".venv", "--exclude", "bench/.envs", "."],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
