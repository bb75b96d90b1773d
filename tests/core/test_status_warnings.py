"""Loading a model whose class is untested, failing, or tested on other versions warns once.

The expected messages and verdicts are written out by hand from the status files each test
writes; the installed versions come from importlib.metadata.
"""

from __future__ import annotations

import json
import warnings
from importlib.metadata import version

import pytest
from nnterp import StandardizedTransformer, status
from nnterp.testing import tiny_model, tiny_tokenizer

TRANSFORMERS = version("transformers")
NNSIGHT = version("nnsight")
MAJOR, MINOR = (int(part) for part in TRANSFORMERS.split(".")[:2])


def _how(class_name: str) -> str:
    return (
        f"run `python -m nnterp run_tests --class-names {class_name}` to test it here"
    )


@pytest.fixture
def status_file(tmp_path, monkeypatch):
    """Point the registry at one status file written by the test."""
    path = tmp_path / "status.json"
    monkeypatch.setattr(status, "_status_files", lambda: [str(path)])
    status._known_classes.cache_clear()
    status._warned.clear()
    yield path
    status._known_classes.cache_clear()
    status._warned.clear()


def _messages(
    model_type: str, category: type[Warning] = status.UntestedArchitectureWarning
) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        StandardizedTransformer(tiny_model(model_type), tiny_tokenizer())
        StandardizedTransformer(tiny_model(model_type), tiny_tokenizer())
    return [str(w.message) for w in caught if issubclass(w.category, category)]


def _entry(class_name: str, result: str = "pass", **extra) -> dict:
    return {
        "class_name": class_name,
        "status": result,
        "checks": {},
        "error": None,
        **extra,
    }


def test_tested_class_on_the_same_versions_does_not_warn(status_file):
    status.write_status(
        status_file,
        {
            "versions": status.installed_versions(),
            "models": {"llama": _entry("LlamaForCausalLM")},
        },
    )
    assert _messages("llama") == []


def test_untested_class_warns_once_with_the_command_to_run(status_file):
    status.write_status(
        status_file, {"versions": status.installed_versions(), "models": {}}
    )
    messages = _messages("gpt2")
    assert messages == [
        f"GPT2LMHeadModel is not in nnterp's status registry (untested); {_how('GPT2LMHeadModel')}."
    ]


def test_failing_class_warns_with_what_failed(status_file):
    status.write_status(
        status_file,
        {
            "versions": status.installed_versions(),
            "models": {
                "qwen2": {
                    "class_name": "Qwen2ForCausalLM",
                    "status": "fail",
                    "checks": {"steering": "fail"},
                    "error": "boom",
                }
            },
        },
    )
    messages = _messages("qwen2")
    assert len(messages) == 1 and "steering" in messages[0] and "boom" in messages[0]


def test_other_versions_warn(status_file):
    versions = {**status.installed_versions(), "transformers": "0.0.1"}
    status.write_status(
        status_file,
        {"versions": versions, "models": {"mistral": _entry("MistralForCausalLM")}},
    )
    assert _messages("mistral") == [
        (
            f"MistralForCausalLM was tested with transformers 0.0.1; you have transformers {TRANSFORMERS}; "
            f"{_how('MistralForCausalLM')}."
        )
    ]


def test_another_patch_release_of_the_same_minor_counts_as_tested(status_file):
    versions = {**status.installed_versions(), "transformers": f"{MAJOR}.{MINOR}.99"}
    status.write_status(
        status_file,
        {"versions": versions, "models": {"mistral": _entry("MistralForCausalLM")}},
    )
    assert _messages("mistral") == []


def test_a_version_between_two_tested_minors_counts_as_tested(status_file):
    tested = {
        "transformers": [f"{MAJOR}.{MINOR - 1}.0", f"{MAJOR}.{MINOR + 1}.3"],
        "nnsight": [NNSIGHT],
    }
    status.write_status(
        status_file,
        {
            "versions": {},
            "models": {"mistral": _entry("MistralForCausalLM", tested_with=tested)},
        },
    )
    assert _messages("mistral") == []


def test_a_newer_tested_release_only_warns_naming_what_was_tested_and_what_is_installed(
    status_file,
):
    newer = f"{MAJOR}.{MINOR + 2}.0"
    tested = {"transformers": [newer], "nnsight": [NNSIGHT]}
    status.write_status(
        status_file,
        {
            "versions": {},
            "models": {"qwen3": _entry("Qwen3ForCausalLM", tested_with=tested)},
        },
    )
    assert _messages("qwen3") == [
        (
            f"Qwen3ForCausalLM was tested with transformers {newer}; you have transformers {TRANSFORMERS}; "
            f"{_how('Qwen3ForCausalLM')}."
        )
    ]


def test_only_the_package_outside_the_tested_versions_is_named(status_file):
    tested = {"transformers": [TRANSFORMERS], "nnsight": ["0.1.0"]}
    status.write_status(
        status_file,
        {
            "versions": {},
            "models": {"gemma": _entry("GemmaForCausalLM", tested_with=tested)},
        },
    )
    assert _messages("gemma") == [
        f"GemmaForCausalLM was tested with nnsight 0.1.0; you have nnsight {NNSIGHT}; {_how('GemmaForCausalLM')}."
    ]


def test_a_result_on_the_installed_versions_wins_over_one_on_other_versions(
    tmp_path, monkeypatch
):
    """Two files: an old-version pass and a current failure; the current result decides."""
    old, current = tmp_path / "old.json", tmp_path / "current.json"
    status.write_status(
        old,
        {
            "versions": {"transformers": "0.0.1", "nnsight": NNSIGHT},
            "models": {"llama": _entry("LlamaForCausalLM")},
        },
    )
    status.write_status(
        current,
        {
            "versions": status.installed_versions(),
            "models": {
                "llama": {
                    **_entry("LlamaForCausalLM", "fail"),
                    "error": "measured here",
                }
            },
        },
    )
    monkeypatch.setattr(status, "_status_files", lambda: [str(current), str(old)])
    status._known_classes.cache_clear()
    status._warned.clear()
    try:
        messages = _messages("llama")
    finally:
        status._known_classes.cache_clear()
        status._warned.clear()
    assert len(messages) == 1 and "measured here" in messages[0]


@pytest.mark.parametrize(
    "installed, tested, expected",
    [
        ("5.24.1", ["5.24.0"], True),
        ("5.24.0", ["5.24.0"], True),
        ("5.22.2", ["5.24.0"], False),
        ("5.23.0", ["5.22.2", "5.24.0"], True),
        ("5.25.0", ["5.22.2", "5.24.0"], False),
        ("6.0.0", ["5.22.2", "5.24.0"], False),
        ("5.24.0.dev0", ["5.24.0"], True),
        ("missing", ["5.24.0"], False),
        ("5.24.0", [], True),
    ],
)
def test_the_version_rule(installed, tested, expected):
    assert status.version_is_tested(installed, tested) is expected


# -- core's own status file ------------------------------------------------------------------


CORE_CLASSES = {
    "GPT2LMHeadModel",
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "GemmaForCausalLM",
    "Gemma2ForCausalLM",
    "Gemma3ForCausalLM",
}


def test_core_ships_the_status_of_its_own_architectures():
    document = json.loads(status.CORE_STATUS_FILE.read_text())
    assert status.status_problem(document) is None
    classes = {entry["class_name"] for entry in document["models"].values()}
    assert classes == CORE_CLASSES
    for model_type, entry in document["models"].items():
        assert entry["status"] == "pass", (model_type, entry.get("error"))
        assert entry["tested_with"]["transformers"] and entry["tested_with"]["nnsight"]


@pytest.fixture
def core_only(tmp_path, monkeypatch):
    """Only nnterp-core: no entry-point plugin, no user-local registry."""
    from nnterp import plugins

    monkeypatch.setenv(plugins.DISABLE_ENV_VAR, "1")
    monkeypatch.setenv(status.USER_REGISTRY_ENV, "0")
    monkeypatch.setattr(plugins, "_registry", None)
    status._known_classes.cache_clear()
    status._warned.clear()
    yield
    monkeypatch.setattr(plugins, "_registry", None)
    status._known_classes.cache_clear()
    status._warned.clear()


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_core_alone_does_not_warn_about_its_own_models(core_only, model_type):
    assert _messages(model_type, UserWarning) == []


# -- the user-local registry -----------------------------------------------------------------


@pytest.fixture
def user_registry(tmp_path, monkeypatch):
    """No shipped status file; the user-local registry in a temporary file."""
    path = tmp_path / "user-status.json"
    monkeypatch.setenv(status.USER_REGISTRY_ENV, str(path))
    monkeypatch.setattr(status, "shipped_status_files", list)
    monkeypatch.setattr(status, "_reported", set())
    status._known_classes.cache_clear()
    status._warned.clear()
    yield path
    status._known_classes.cache_clear()
    status._warned.clear()


def test_the_suggested_run_tests_command_records_the_class_and_silences_the_warning(
    user_registry, capsys
):
    from nnterp.cli import main

    assert _messages("gpt2") == [
        f"GPT2LMHeadModel is not in nnterp's status registry (untested); {_how('GPT2LMHeadModel')}."
    ]
    assert main(["run_tests", "--class-names", "GPT2LMHeadModel"]) == 0
    assert str(user_registry) in capsys.readouterr().out
    recorded = json.loads(user_registry.read_text())["models"]
    assert list(recorded) == ["gpt2"]
    assert (
        recorded["gpt2"]["class_name"] == "GPT2LMHeadModel"
        and recorded["gpt2"]["status"] == "pass"
    )
    assert recorded["gpt2"]["tested_with"] == {
        "transformers": [TRANSFORMERS],
        "nnsight": [NNSIGHT],
    }
    assert _messages("gpt2") == []


def test_a_bad_user_local_registry_is_reported_once_and_ignored(user_registry):
    user_registry.write_text('{"models": {"gpt2": ')
    reports = _messages("gpt2", status.StatusRegistryWarning) + _messages(
        "llama", status.StatusRegistryWarning
    )
    assert len(reports) == 1
    assert (
        str(user_registry) in reports[0]
        and "not valid JSON" in reports[0]
        and "delete it" in reports[0]
    )
    status._warned.clear()
    assert _messages("gpt2") == [
        f"GPT2LMHeadModel is not in nnterp's status registry (untested); {_how('GPT2LMHeadModel')}."
    ]


def test_recording_into_a_bad_user_local_registry_starts_it_afresh(user_registry):
    user_registry.write_text("[1, 2]")
    entry = _entry("LlamaForCausalLM")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status.record_results({"llama": entry})
    assert json.loads(user_registry.read_text())["models"] == {
        "llama": {
            **entry,
            "tested_with": {"transformers": [TRANSFORMERS], "nnsight": [NNSIGHT]},
        }
    }


def test_the_user_local_registry_lives_in_the_cache_root(tmp_path, monkeypatch):
    monkeypatch.delenv(status.USER_REGISTRY_ENV, raising=False)
    monkeypatch.setenv("NNTERP_CACHE_DIR", str(tmp_path))
    assert status.user_registry_path() == tmp_path / "status.json"
    monkeypatch.setenv(status.USER_REGISTRY_ENV, "off")
    assert status.user_registry_path() is None


# -- merging results -------------------------------------------------------------------------


def test_merging_the_same_result_adds_the_versions_and_a_different_one_replaces_it():
    old_versions = {"transformers": "5.22.2", "nnsight": "0.8.1", "torch": "2.6.0"}
    document = {
        "versions": old_versions,
        "models": {
            "llama": _entry("LlamaForCausalLM"),
            "gpt2": _entry("GPT2LMHeadModel"),
            "qwen2": _entry("Qwen2ForCausalLM"),
        },
    }
    new_versions = {"transformers": "5.24.0", "nnsight": "0.8.1", "torch": "2.13.0"}
    failing = {**_entry("GPT2LMHeadModel", "fail"), "error": "boom"}
    merged, differing = status.merge_results(
        document, {"llama": _entry("LlamaForCausalLM"), "gpt2": failing}, new_versions
    )
    assert merged["versions"] == old_versions
    assert merged["models"]["llama"]["tested_with"] == {
        "transformers": ["5.22.2", "5.24.0"],
        "nnsight": ["0.8.1"],
    }
    assert merged["models"]["gpt2"] == {
        **failing,
        "tested_with": {"transformers": ["5.24.0"], "nnsight": ["0.8.1"]},
    }
    assert merged["models"]["qwen2"] == _entry("Qwen2ForCausalLM")
    assert differing == []
    kept, differing = status.merge_results(
        document, {"gpt2": failing}, new_versions, keep_differing=True
    )
    assert kept["models"]["gpt2"] == _entry("GPT2LMHeadModel") and differing == ["gpt2"]
    assert document["models"]["llama"] == _entry("LlamaForCausalLM")


def test_tested_with_must_be_lists_of_version_strings():
    bad = {
        "versions": {},
        "models": {
            "llama": _entry("LlamaForCausalLM", tested_with={"transformers": "5.24.0"})
        },
    }
    assert (
        status.status_problem(bad)
        == 'models["llama"].tested_with["transformers"] is not a list of version strings'
    )
