"""Smoke test of the benchmark script: its quickest run on the tiny model completes, prints a
ratio line for every benchmark, and its own correctness checks (ours == hand-written, atol
1e-4) pass. No timing is asserted: timings belong to `python benchmarks/run.py`, not to tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("bench") / "results.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--tiny", "--threads", "1", "--json", str(results)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=300,
        env={**os.environ, "NNTERP_CACHE_DIR": str(tmp_path_factory.mktemp("nnterp-cache"))},
    )
    return done, json.loads(results.read_text()) if results.exists() else None


def test_quick_run_succeeds_with_correct_results(quick_run):
    done, _ = quick_run
    assert done.returncode == 0, done.stderr[-3000:]
    assert "CORRECTNESS OK" in done.stdout


def test_every_benchmark_prints_a_ratio(quick_run):
    done, payload = quick_run
    printed = {tuple(line.split()[1:3]) for line in done.stdout.splitlines() if line.startswith("RATIO ")}
    expected = {("tiny", key) for key in ("a", "a/nnsight", "b", "c", "d", "d/cold")} | {("-", "e"), ("-", "e2")}
    assert printed == expected
    assert {(row["model"], row["key"]) for row in payload["rows"]} == expected
    for row in payload["rows"]:
        assert row["ours_s"] > 0 and row["baseline_s"] > 0
        assert row["ratio"] == pytest.approx(row["ours_s"] / row["baseline_s"])
    memory_lines = [line for line in done.stdout.splitlines() if line.startswith("MEMORY ")]
    assert [line.split()[3] for line in memory_lines] == ["ours", "baseline"]


def test_correctness_differences_are_reported_and_small(quick_run):
    _, payload = quick_run
    checked = {row["key"]: row["max_abs_diff"] for row in payload["rows"] if row["max_abs_diff"] is not None}
    assert set(checked) == {"a", "a/nnsight", "b", "c"}
    assert all(0 <= difference <= 1e-4 for difference in checked.values())


def test_targets_only_on_the_real_model_and_imports(quick_run):
    _, payload = quick_run
    for row in payload["rows"]:
        if row["model"] == "tiny":
            assert row["target"] is None and row["status"] == "info"
        else:
            assert row["target"] == 1.2 and row["status"] in ("PASS", "MISS")
