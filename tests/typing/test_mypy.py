"""mypy, run as CI runs it (`python -m mypy` at the repository root, configured by the root
pyproject.toml), must pass on the four distributions' sources."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: mypy itself depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


def _configured_source_files() -> set[Path]:
    """Every .py file under the paths listed in ``[tool.mypy] files``."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    found: set[Path] = set()
    for entry in config["files"]:
        path = ROOT / entry
        assert path.exists(), f"[tool.mypy] files lists {entry!r}, which does not exist"
        found.update([path] if path.is_file() else path.rglob("*.py"))
    return found


def test_mypy_passes_on_every_configured_source_file() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,  # the exit code is asserted below, with mypy's output
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"mypy exited with {result.returncode}:\n{output}"
    summary = re.search(r"Success: no issues found in (\d+) source files?", output)
    assert summary is not None, f"mypy printed no success summary:\n{output}"
    expected = len(_configured_source_files())
    assert int(summary.group(1)) == expected, (
        f"mypy checked {summary.group(1)} files, but the configured paths hold {expected} .py files:\n{output}"
    )
