"""The conformance sweep over every causal-LM model type of transformers, against the shipped status.

This is the sweep CI runs: it rebuilds each model type tiny, runs every conformance check, and
requires the result to match the status file nnterp-models-contrib ships (so the shipped file
is never stale), and the coverage goals to hold.
"""

from __future__ import annotations

import os

import pytest

from nnterp.contrib.plugin import STATUS_FILE
from nnterp.status import installed_versions, read_status
from nnterp.testing.sweep import causal_lm_types, run_sweep, totals

SHIPPED = read_status(STATUS_FILE)


@pytest.fixture(scope="module")
def fresh() -> dict:
    return run_sweep(sorted(causal_lm_types()), jobs=min(2, os.cpu_count() or 1), progress=False)


def test_shipped_status_covers_every_model_type_on_these_versions():
    assert set(SHIPPED["models"]) == set(causal_lm_types())
    shipped, installed = SHIPPED["versions"], installed_versions()
    assert {k: shipped[k] for k in ("transformers", "nnsight")} == {k: installed[k] for k in ("transformers", "nnsight")}


def test_coverage_goals_hold():
    counts = totals(SHIPPED["models"])
    assert counts["standardized"] >= 150, counts
    assert counts["attention_probabilities"] >= 100, counts


def _identity_verdicts(models: dict) -> dict:
    """Per standardized type: "pass", or the reason `support()` gives for no identity."""
    verdicts = {}
    for model_type, entry in models.items():
        if entry["status"] != "pass":
            continue
        result = entry["checks"].get("residual_identity")
        unsupported = entry.get("unsupported", {})
        reason = unsupported.get("mixers_output") or unsupported.get("mlps_output")
        verdicts[model_type] = "pass" if result == "pass" else (result, reason)
    return verdicts


def test_the_identity_holds_on_every_standardized_type_or_support_says_why():
    verdicts = _identity_verdicts(SHIPPED["models"])
    unexplained = {t: v for t, v in verdicts.items() if v != "pass" and not (v[0] == "unavailable" and v[1])}
    assert unexplained == {}
    # Most families add to a residual stream: the identity is a checked fact on them.
    assert sum(v == "pass" for v in verdicts.values()) >= 120, verdicts


@pytest.mark.slow
def test_fresh_sweep_matches_the_shipped_status(fresh):
    # A type that ran out of time on a loaded machine has no verdict; every other one must agree.
    judged = {t: e for t, e in fresh.items() if not str(e.get("error") or "").startswith("timeout")}
    assert len(judged) >= 0.95 * len(fresh), f"too many timeouts: {sorted(set(fresh) - set(judged))}"
    differences = {
        model_type: (SHIPPED["models"].get(model_type, {}).get("status"), entry["status"], entry.get("error"))
        for model_type, entry in judged.items()
        if SHIPPED["models"].get(model_type, {}).get("status") != entry["status"]
    }
    assert differences == {}, f"(shipped, fresh, error) status differs: {differences}"
    fresh_identity = _identity_verdicts(judged)
    shipped_identity = {t: v for t, v in _identity_verdicts(SHIPPED["models"]).items() if t in fresh_identity}
    assert fresh_identity == shipped_identity
