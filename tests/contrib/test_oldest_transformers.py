"""The declared transformers range is honest: the sweep also passes on the oldest release we declare.

A second environment: the oldest transformers named in nnterp-core's dependencies is installed
into a separate directory that shadows the current one, and the sweep runs in a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nnterp.contrib.plugin import STATUS_FILE
from nnterp.status import read_status
from tests.conftest import CORE_MODEL_TYPES
from tests.contrib.test_contrib_specs import WITH_PROBABILITIES, WITHOUT_ATTENTION

#: Every core architecture and a representative of each contrib family (the full sweep on the
#: newest transformers runs in test_status_registry).
OLDEST_SWEEP = sorted(set(CORE_MODEL_TYPES + WITH_PROBABILITIES + WITHOUT_ATTENTION))

ROOT = Path(__file__).resolve().parents[2]


def oldest_declared_transformers() -> str:
    text = (ROOT / "packages" / "nnterp-core" / "pyproject.toml").read_text()
    match = re.search(r'"transformers>=([0-9.]+)', text)
    assert match, "nnterp-core must declare a lower bound for transformers"
    return match.group(1)


@pytest.mark.slow
def test_sweep_passes_on_the_oldest_declared_transformers(tmp_path):
    version = oldest_declared_transformers()
    target = tmp_path / "oldest"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), f"transformers=={version}"],
        capture_output=True, text=True,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    shipped = read_status(STATUS_FILE)["models"]
    passing = [t for t in OLDEST_SWEEP if shipped[t]["status"] == "pass"]
    assert len(passing) >= 30, f"too few representative types pass on the newest transformers: {passing}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}
    probe = subprocess.run(
        [sys.executable, "-c", "import json, transformers; from transformers.models.auto.modeling_auto import "
         "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as m; print(json.dumps([transformers.__version__, sorted(m)]))"],
        capture_output=True, text=True, env=env,
    )
    installed_version, known = json.loads(probe.stdout)
    assert installed_version == version
    types = [t for t in passing if t in known]
    assert len(types) >= 0.9 * len(passing), "the oldest release lacks many model types we support"
    output = tmp_path / "status.json"
    sweep = subprocess.run(
        [sys.executable, "-m", "nnterp", "run_tests", "--model-types", *types, "--jobs", "2", "--output", str(output)],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )
    document = read_status(output)
    failed = {t: e.get("error") for t, e in document["models"].items() if e["status"] != "pass"}
    assert document["versions"]["transformers"] == version
    assert failed == {}, f"types that pass on the newest transformers but fail on {version}: {failed}"
    assert sweep.returncode == 0, sweep.stderr[-2000:]
