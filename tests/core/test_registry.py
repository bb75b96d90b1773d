"""The fresh-release check: diffing a fresh sweep against the shipped status registry.

The diff logic runs on synthetic registries whose differences are written out by hand; the
command runs end to end on three tiny model types against a synthetic "shipped" file.
"""

from __future__ import annotations

import json

import pytest
from nnterp import status
from nnterp.cli import main
from nnterp.registry_diff import diff_registries, format_diff

PASSING = {"renaming": "pass", "batching": "pass", "attention_probabilities": "pass"}


def _entry(result: str = "pass", error: str | None = None, **checks: str) -> dict:
    return {
        "class_name": "X",
        "status": result,
        "checks": {**PASSING, **checks} if result == "pass" else checks,
        "error": error,
    }


SHIPPED = {
    "stays": _entry(),
    "breaks": _entry(),
    "heals": _entry("fail", "renaming: no spec", renaming="fail"),
    "same_failure": _entry("build_error", "KeyError: 'x'"),
    "new_reason": _entry("build_error", "KeyError: 'x'"),
    "loses_attention": _entry(),
    "gains_attention": _entry(attention_probabilities="unavailable"),
    "gone": _entry(),
    "slow": _entry(),
}
FRESH = {
    "stays": _entry(),
    "breaks": _entry("fail", "batching: AssertionError: not close", batching="fail"),
    "heals": _entry(),
    "same_failure": _entry("build_error", "KeyError: 'x'"),
    "new_reason": _entry("build_error", "IndexError: list index out of range"),
    "loses_attention": _entry(attention_probabilities="unavailable"),
    "gains_attention": _entry(),
    "brand_new": _entry("fail", "renaming: no spec", renaming="fail"),
    "slow": {
        "class_name": "X",
        "status": "fail",
        "checks": {},
        "error": "timeout: took more than 120 s",
    },
}
AVAILABLE = set(FRESH) | {"not_swept"}


def _rows(changes) -> list[tuple]:
    return [(c.model_type, c.before, c.after, c.regression) for c in changes]


def test_the_diff_sorts_every_change_into_its_kind():
    diff = diff_registries({**SHIPPED, "not_swept": _entry()}, FRESH, AVAILABLE)
    assert _rows(diff.newly_failing) == [("breaks", "pass", "fail", True)]
    assert diff.newly_failing[0].detail == "batching: AssertionError: not close"
    assert _rows(diff.newly_passing) == [("heals", "fail", "pass", False)]
    assert _rows(diff.new_types) == [("brand_new", None, "fail", False)]
    assert _rows(diff.removed_types) == [("gone", "pass", None, False)]
    assert _rows(diff.changed) == [
        ("gains_attention", "pass", "pass", False),
        ("loses_attention", "pass", "pass", True),
        ("new_reason", "build_error", "build_error", False),
    ]
    assert diff.changed[0].detail == "attention_probabilities unavailable -> pass"
    assert diff.changed[1].detail == "attention_probabilities pass -> unavailable"
    assert diff.changed[2].detail == "error: IndexError: list index out of range"
    assert _rows(diff.no_verdict) == [("slow", "pass", "fail", False)]
    assert (
        diff.unchanged == 2
    )  # stays, same_failure; not_swept is neither compared nor removed
    assert [c.model_type for c in diff.regressions] == ["breaks", "loses_attention"]
    assert diff.regressed


def test_no_regression_when_only_improvements_and_new_types():
    fresh = {"heals": _entry(), "stays": _entry(), "brand_new": _entry()}
    diff = diff_registries(
        {"heals": SHIPPED["heals"], "stays": _entry()}, fresh, set(fresh)
    )
    assert not diff.regressed
    assert _rows(diff.newly_passing) == [("heals", "fail", "pass", False)]
    assert _rows(diff.new_types) == [("brand_new", None, "pass", False)]


def test_without_the_available_types_unswept_shipped_types_count_as_removed():
    diff = diff_registries({"a": _entry(), "b": _entry()}, {"a": _entry()})
    assert _rows(diff.removed_types) == [("b", "pass", None, False)]


def test_the_printed_diff_has_column_labels_and_one_row_per_change():
    text = format_diff(diff_registries(SHIPPED, FRESH, AVAILABLE))
    lines = text.splitlines()
    assert lines[0].split() == [
        "change",
        "model",
        "type",
        "shipped",
        "fresh",
        "regression",
        "detail",
    ]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert len(lines) == 2 + 8 + 1  # header, rule, eight changed types, summary
    assert lines[-1] == (
        "1 newly failing, 1 newly passing, 1 new type, 1 removed type, 3 changed, 1 no verdict, "
        "0 untested here, 2 unchanged; 2 regression(s)"  # stays, same_failure
    )
    assert format_diff(diff_registries({"a": _entry()}, {"a": _entry()})) == (
        "0 newly failing, 0 newly passing, 0 new type, 0 removed type, 0 changed, 0 no verdict, "
        "0 untested here, 1 unchanged; no regression"
    )


def test_a_result_measured_on_other_versions_only_is_no_regression_here():
    shipped = {"a": {**_entry(), "tested_with": {"transformers": ["5.24.0"]}}, "b": _entry()}
    fresh = {"a": {"status": "fail", "checks": {}, "error": "boom"}, "b": {"status": "fail", "checks": {}, "error": "x"}}
    older = diff_registries(shipped, fresh, ["a", "b"], "5.22.2")
    assert [c.model_type for c in older.untested_here] == ["a"] and not older.untested_here[0].regression
    assert [c.model_type for c in older.newly_failing] == ["b"]  # no tested_with: claims every version
    same = diff_registries(shipped, fresh, ["a", "b"], "5.24.0")
    assert [c.model_type for c in same.newly_failing] == ["a", "b"] and same.regressed


# -- the command, end to end on three tiny types ----------------------------------------------


@pytest.fixture
def no_user_registry(monkeypatch):
    monkeypatch.setenv(status.USER_REGISTRY_ENV, "0")


def _synthetic_shipped(tmp_path, **models) -> str:
    path = tmp_path / "shipped.json"
    versions = status.installed_versions()
    path.write_text(json.dumps({"versions": versions, "models": models}))
    return str(path)


def test_check_release_reports_a_type_that_newly_fails_and_exits_1(
    tmp_path, capsys, no_user_registry
):
    # prophetnet has no spec (ProphetNetForCausalLM cannot be standardized): recorded here as passing.
    against = _synthetic_shipped(
        tmp_path,
        llama={
            "class_name": "LlamaForCausalLM",
            "status": "fail",
            "checks": {"renaming": "fail"},
            "error": "old",
        },
        prophetnet={
            "class_name": "ProphetNetForCausalLM",
            "status": "pass",
            "checks": {"renaming": "pass"},
            "error": None,
        },
        no_such_type_any_more={
            "class_name": "GoneForCausalLM",
            "status": "pass",
            "checks": {},
            "error": None,
        },
    )
    code = main(
        [
            "check-release",
            "--model-types",
            "llama",
            "prophetnet",
            "gpt2",
            "--against",
            against,
            "--no-record",
        ]
    )
    output = capsys.readouterr().out
    assert code == 1
    table = [line.split() for line in output.splitlines()]
    assert ["newly", "failing", "prophetnet", "pass", "fail", "yes"] == table[
        _index(table, "prophetnet")
    ][:6]
    assert ["newly", "passing", "llama", "fail", "pass"] == table[
        _index(table, "llama")
    ][:5]
    assert ["new", "type", "gpt2", "-", "pass"] == table[_index(table, "gpt2")][:5]
    assert ["removed", "type", "no_such_type_any_more", "pass", "-"] == table[
        _index(table, "no_such_type_any_more")
    ][:5]
    assert output.splitlines()[-1].endswith("1 regression(s)")


def _index(table: list[list[str]], model_type: str) -> int:
    matches = [
        i
        for i, row in enumerate(table)
        if model_type in row[:4] and row[0] in ("newly", "new", "removed", "changed")
    ]
    assert len(matches) == 1, (model_type, table)
    return matches[0]


def test_check_release_against_the_shipped_registry_finds_no_regression_on_core_types(
    capsys, no_user_registry
):
    code = main(["check-release", "--model-types", "llama", "gpt2", "--no-record"])
    output = capsys.readouterr().out
    assert "differences from the shipped registry" in output
    summary = output.splitlines()[-1]
    assert summary.startswith(
        "0 newly failing, 0 newly passing, 0 new type, 0 removed type, "
    )
    assert summary.endswith("; no regression")
    assert code == 0


def test_run_tests_diff_rejects_a_missing_file(tmp_path, capsys, no_user_registry):
    code = main(
        [
            "run_tests",
            "--model-types",
            "llama",
            "--no-record",
            "--diff",
            str(tmp_path / "none.json"),
        ]
    )
    error = capsys.readouterr().err.strip()
    assert code == 1
    assert (
        error
        == f"nnterp run_tests: error: InvalidInputError: --diff: the status file {str(tmp_path / 'none.json')!r} does not exist"
    )
