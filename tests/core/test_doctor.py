"""``nnterp doctor``: versions, plugins, the registry's verdict on every model type, caches,
and a co-installed nnterp 1.x, checked against importlib.metadata, transformers' own mapping
and hand-written status files."""

from __future__ import annotations

import json
import platform
from importlib.metadata import entry_points, version

import pytest
from nnterp import compat, doctor, status
from nnterp.cli import main
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

CLASSES = {
    t: (c if isinstance(c, str) else c[0])
    for t, c in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.items()
}


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A cache root and user-local registry in a temporary folder; one hand-written status file."""
    monkeypatch.setenv("NNTERP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(status.USER_REGISTRY_ENV, raising=False)
    shipped = tmp_path / "shipped.json"
    installed = {"transformers": version("transformers"), "nnsight": version("nnsight")}
    shipped.write_text(
        json.dumps(
            {
                "versions": installed,
                "models": {
                    "llama": {
                        "class_name": "LlamaForCausalLM",
                        "status": "pass",
                        "checks": {},
                        "error": None,
                    },
                    "gpt2": {
                        "class_name": "GPT2LMHeadModel",
                        "status": "fail",
                        "checks": {"batching": "fail"},
                        "error": "x",
                    },
                    "mistral": {
                        "class_name": "MistralForCausalLM",
                        "status": "pass",
                        "checks": {},
                        "error": None,
                        "tested_with": {
                            "transformers": ["0.0.1"],
                            "nnsight": [installed["nnsight"]],
                        },
                    },
                },
            }
        )
    )
    monkeypatch.setattr(status, "shipped_status_files", lambda: [str(shipped)])
    monkeypatch.setattr(status, "_reported", set())
    status._known_classes.cache_clear()
    yield tmp_path
    status._known_classes.cache_clear()


def test_versions_are_the_installed_ones(isolated):
    report = doctor.collect()
    assert report.versions["python"] == platform.python_version()
    for package in ("torch", "transformers", "nnsight", "pluggy"):
        assert report.versions[package] == version(package)
    assert report.nnterp_distributions["nnterp-core"] == version("nnterp-core")
    assert report.legacy is None


def test_every_entry_point_plugin_is_listed(isolated):
    report = doctor.collect()
    expected = {"core"} | {entry.name for entry in entry_points(group="nnterp")}
    assert {row["name"] for row in report.plugins} == expected
    assert all(row["error"] is None for row in report.plugins)


def test_model_type_counts_follow_the_registry(isolated):
    report = doctor.collect()
    # By class: every type transformers maps to a class listed above gets that class's verdict.
    standardized = sorted(t for t, c in CLASSES.items() if c == "LlamaForCausalLM")
    failing = sorted(t for t, c in CLASSES.items() if c == "GPT2LMHeadModel")
    other_versions = sorted(t for t, c in CLASSES.items() if c == "MistralForCausalLM")
    untested = sorted(
        set(CLASSES) - set(standardized) - set(failing) - set(other_versions)
    )
    assert report.transformers_types == len(CLASSES)
    assert report.by_verdict == {
        "standardized": standardized,
        "failing": failing,
        "untested": untested,
        "other_versions": other_versions,
    }
    assert report.model_types == {
        "standardized": len(standardized),
        "failing": len(failing),
        "untested": len(untested),
        "other_versions": len(other_versions),
    }


def test_caches_are_reported(isolated):
    cache = isolated / "cache"
    (cache / "validation").mkdir(parents=True)
    for index in range(3):
        (cache / "validation" / f"{index}.json").write_text("{}")
    (cache / "smollm2-135m-instruct").mkdir()
    (cache / "smollm2-135m-instruct" / "config.json").write_text("{}")
    states = {row["cache"]: row for row in doctor.collect().caches}
    assert states["cache root"]["path"] == str(cache)
    assert "3 records" in states["validation records"]["state"]
    assert states["model smollm2-135m-instruct"]["state"].startswith(
        "incomplete (no model.safetensors, nnterp-source.json): rebuilt at next load"
    )
    assert states["model gemma-3-270m"]["state"].startswith("not converted yet")
    assert states["user-local status registry"]["path"] == str(cache / "status.json")


def test_a_bad_user_local_registry_is_a_problem_with_the_fix(isolated, capsys):
    (isolated / "cache").mkdir()
    (isolated / "cache" / "status.json").write_text("not json")
    with pytest.warns(status.StatusRegistryWarning, match="not valid JSON"):
        assert main(["doctor"]) == 1
    output = capsys.readouterr().out
    problems = output.split("problem(s):")[1]
    assert str(isolated / "cache" / "status.json") in problems
    assert "not valid JSON" in problems and "delete it" in problems


def test_a_co_installed_nnterp_1_is_a_problem(isolated, monkeypatch, capsys):
    monkeypatch.setattr(compat, "legacy_distribution_version", lambda: "1.2.0")
    assert main(["doctor"]) == 1
    output = capsys.readouterr().out
    assert "nnterp 1.x (distribution `nnterp`)  1.2.0" in output
    problems = output.split("problem(s):")[1]
    assert (
        "nnterp 1.2.0 (nnterp 1.x" in problems and "pip uninstall -y nnterp" in problems
    )


def test_a_healthy_install_prints_labelled_tables_and_exits_0(isolated, capsys):
    assert main(["doctor", "--verbose"]) == 0
    output = capsys.readouterr().out
    lines = output.splitlines()
    for labels in (
        ["package", "version"],
        ["plugin", "distribution", "version"],
        ["source", "entries", "state"],
        ["verdict", "model", "types", "which"],
        ["cache", "state", "path"],
    ):
        header = [
            i for i, line in enumerate(lines) if line.split()[: len(labels)] == labels
        ]
        assert len(header) == 1, labels
        assert set(lines[header[0] + 1].replace(" ", "")) == {"-"}
    assert "llama" in next(
        line for line in lines if line.strip().startswith("standardized")
    )
    assert lines[-1] == "no problems found"
