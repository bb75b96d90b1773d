"""The documentation site builds in strict mode (any warning fails), with the generated pages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_docs_build_strict(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "WARNING" not in result.stderr
    architectures = (site / "architectures" / "index.html").read_text()
    assert "LlamaForCausalLM" in architectures
    api = (site / "api" / "standardized-transformer" / "index.html").read_text()
    assert "project_on_vocab" in api and "layers_output" in api
