"""The command line: every failure is one line on stderr and a non-zero exit, never a traceback;
offline runs record load errors and go on; ``--version``; tables with column labels.

Subprocess tests run ``python -m nnterp`` exactly as a user would (the console script calls
the same ``main``); the others call ``main(argv)`` in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from importlib.metadata import version

import nnterp
import pytest
from nnterp import plugins, status
from nnterp.cli import main
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

TRANSFORMERS = version("transformers")
NNSIGHT = version("nnsight")


def _nnterp(
    *args: str, env: dict[str, str] | None = None, cwd=None, drop=()
) -> subprocess.CompletedProcess:
    environment = {
        name: value for name, value in os.environ.items() if name not in drop
    }
    return subprocess.run(
        [sys.executable, "-m", "nnterp", *args],
        check=False,
        capture_output=True,
        text=True,
        env={**environment, **(env or {})},
        cwd=cwd,
        timeout=600,
    )


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture
def user_registry(tmp_path, monkeypatch):
    path = tmp_path / "user-status.json"
    monkeypatch.setenv(status.USER_REGISTRY_ENV, str(path))
    return path


# -- as a user runs it -----------------------------------------------------------------------


def test_version_names_every_nnterp_distribution_and_the_stack():
    result = _nnterp("--version")
    assert result.returncode == 0 and result.stderr == ""
    (line,) = result.stdout.strip().splitlines()
    assert line.startswith(
        f"nnterp {nnterp.__version__} (nnterp-core {version('nnterp-core')}"
    )
    assert f"transformers {TRANSFORMERS}" in line and f"nnsight {NNSIGHT}" in line
    assert f"torch {version('torch')}" in line


def test_a_missing_model_path_is_one_line(tmp_path):
    result = _nnterp(
        "run",
        "logit_lens",
        "--model",
        "./no/such/model",
        "--prompt",
        "Hello",
        cwd=tmp_path,
    )
    line = _one_error_line(result.stderr)
    assert result.returncode == 1
    assert line.startswith(
        "nnterp run: error: ModelLoadError: model path './no/such/model' does not exist"
    )
    assert result.stdout == ""


def test_an_unknown_model_type_is_one_line_naming_where_the_valid_ones_are():
    result = _nnterp("run_tests", "--model-types", "nosuchtype")
    line = _one_error_line(result.stderr)
    assert result.returncode != 0
    assert line.startswith(
        "nnterp run_tests: error: InvalidInputError: --model-types: 'nosuchtype' is not a causal-LM"
    )
    assert (
        "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES" in line
        and "nnterp run_tests --list-types" in line
    )


def test_top_k_zero_is_rejected_with_the_reason():
    result = _nnterp(
        "run", "logit_lens", "--model", "gpt2", "--prompt", "Hello", "--top-k", "0"
    )
    line = _one_error_line(result.stderr)
    assert result.returncode == 2
    assert (
        line
        == "nnterp run: error: argument --top-k: must be at least 1, got 0 (see `nnterp run --help`)"
    )


def test_offline_run_tests_records_a_load_error_per_model_and_goes_on(tmp_path):
    """No hub (an endpoint that refuses connections, an empty HF cache): each named model is a
    load error, the tiny type still runs, and only the tiny type is recorded."""
    registry = tmp_path / "user-status.json"
    env = {
        "HF_ENDPOINT": "http://127.0.0.1:9",
        "HF_HOME": str(tmp_path / "hf-home"),
        status.USER_REGISTRY_ENV: str(registry),
    }
    started = time.perf_counter()
    result = _nnterp(
        "run_tests",
        "--model-names",
        "gpt2",
        "./missing-model",
        "--model-types",
        "llama",
        env=env,
        cwd=tmp_path,
        drop=("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"),
    )
    seconds = time.perf_counter() - started
    assert "Traceback" not in result.stderr + result.stdout
    notice = _one_error_line(result.stderr)
    assert notice == (
        "nnterp: the Hugging Face Hub is unreachable (or HF_HUB_OFFLINE is set): gpt2 will be looked up "
        "in the local cache only"
    )
    rows = {
        line.split()[0]: line.split()[1]
        for line in result.stdout.splitlines()[2:]
        if line.split()
    }
    assert rows["llama"] == "pass"
    assert rows["gpt2"] == "load_error" and rows["./missing-model"] == "load_error"
    assert result.returncode == 1
    assert list(json.loads(registry.read_text())["models"]) == ["llama"]
    assert (
        seconds < 300
    )  # the hub's retries alone took 48 s per model; a loaded CI machine is slow


def test_an_unreachable_hub_is_detected_within_the_probe_timeout(monkeypatch):
    from nnterp.testing import sweep

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    # Set (to "off") so that monkeypatch restores them after hub_options sets HF_HUB_OFFLINE.
    monkeypatch.setenv("HF_HUB_OFFLINE", "")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "")
    started = time.perf_counter()
    assert sweep.hub_reachable() is False
    assert time.perf_counter() - started < sweep.HUB_PROBE_TIMEOUT + 1
    assert sweep.hub_options(["./local-only"]) == {}
    assert sweep.hub_options(["gpt2"]) == {"local_files_only": True}
    assert os.environ["HF_HUB_OFFLINE"] == "1"


# -- in-process ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, start, contains",
    [
        (
            ["sites", "--model-type", "nosuchtype"],
            "nnterp sites: error: InvalidInputError: --model-type: 'nosuchtype'",
            "--list-types",
        ),
        (
            ["run", "nosuch", "--model", "x", "--prompt", "p"],
            (
                "nnterp run: error: InvalidInputError: no intervention "
                "named 'nosuch'; registered: "
            ),
            "nnterp plugins",
        ),
        (
            ["run_tests"],
            "nnterp run_tests: error: InvalidInputError: nothing to test: ",
            "--model-types",
        ),
        (
            ["run_tests", "--class-names", "NoSuchForCausalLM"],
            (
                "nnterp run_tests: error: InvalidInputError: "
                "--class-names: 'NoSuchForCausalLM' is not a causal-LM class"
            ),
            "--list-types",
        ),
    ],
)
def test_failures_are_one_line_and_exit_1(argv, start, contains, capsys, user_registry):
    assert main(argv) == 1
    captured = capsys.readouterr()
    line = _one_error_line(captured.err)
    assert line.startswith(start) and contains in line


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["run_tests", "--jobs", "0", "--model-types", "llama"],
            "argument --jobs: must be at least 1, got 0",
        ),
        (
            ["run", "logit_lens", "--model", "m", "--prompt", "p", "--top-k", "two"],
            "argument --top-k: 'two' is not an integer",
        ),
        (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate'"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in _one_error_line(capsys.readouterr().err)


@pytest.fixture
def broken_command(monkeypatch):
    from nnterp.hookspecs import hookimpl

    class Plugin:
        @hookimpl
        def register_commands(self, register) -> None:
            def explode(args) -> int:
                raise RuntimeError("deep inside\n  a plugin")

            register("explode", explode, help="always fails")

    monkeypatch.setenv(plugins.DISABLE_ENV_VAR, "1")
    registry = plugins.build_registry(
        [(Plugin(), plugins.PluginInfo("broken", "nnterp-broken", "0.1"))]
    )
    monkeypatch.setattr(plugins, "_registry", registry)


def test_an_unexpected_error_in_a_command_is_one_line_with_how_to_get_the_traceback(
    broken_command, capsys, monkeypatch
):
    monkeypatch.delenv("NNTERP_DEBUG", raising=False)
    assert main(["explode"]) == 1
    assert _one_error_line(capsys.readouterr().err) == (
        "nnterp explode: error: RuntimeError: deep inside a plugin (set NNTERP_DEBUG=1 for the traceback)"
    )
    monkeypatch.setenv("NNTERP_DEBUG", "1")
    with pytest.raises(RuntimeError, match="deep inside"):
        main(["explode"])


def test_warnings_of_the_console_script_are_one_line(capsys):
    import warnings

    from nnterp.cli import _one_line_warnings

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with _one_line_warnings():
            warnings.warn(
                "first line\n  second line",
                status.UntestedArchitectureWarning,
                stacklevel=1,
            )
    assert (
        capsys.readouterr().err
        == "nnterp: warning: UntestedArchitectureWarning: first line second line\n"
    )


# -- tables have column labels ---------------------------------------------------------------


def _header(output: str) -> list[str]:
    lines = output.splitlines()
    assert set(lines[1].replace(" ", "")) == {"-"}, lines[:2]
    return lines[0].split()


def test_list_types_is_a_labelled_table_of_every_causal_lm_type(capsys):
    assert main(["run_tests", "--list-types"]) == 0
    output = capsys.readouterr().out
    assert _header(output) == ["model", "type", "class"]
    listed = dict(line.split() for line in output.splitlines()[2:-1])
    expected = {
        t: (c if isinstance(c, str) else c[0])
        for t, c in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.items()
    }
    assert listed == expected
    assert (
        output.splitlines()[-1]
        == f"{len(expected)} causal-LM model types in transformers {TRANSFORMERS}"
    )


def test_sites_table_has_column_labels(capsys):
    from nnterp.sites import SITES

    assert main(["sites"]) == 0
    output = capsys.readouterr().out
    assert _header(output) == ["site", "shape", "meaning"]
    assert [line.split()[0] for line in output.splitlines()[2:]] == [
        site.name for site in SITES
    ]


def test_run_tests_rows_have_column_labels_and_merge_adds_versions(
    tmp_path, capsys, user_registry
):
    output_file = tmp_path / "status.json"
    assert (
        main(
            [
                "run_tests",
                "--model-types",
                "llama",
                "--output",
                str(output_file),
                "--no-record",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert _header(printed) == [
        "model",
        "status",
        "attention",
        "probs",
        "error",
    ]
    assert printed.splitlines()[2].split()[:3] == ["llama", "pass", "pass"]
    assert not user_registry.exists()
    document = json.loads(output_file.read_text())
    assert document["models"]["llama"]["tested_with"] == {
        "transformers": [TRANSFORMERS],
        "nnsight": [NNSIGHT],
    }
    # As if the file had been written by a run on an older transformers: merging adds this one.
    document["models"]["llama"]["tested_with"]["transformers"] = ["5.0.0"]
    document["versions"]["transformers"] = "5.0.0"
    output_file.write_text(json.dumps(document))
    assert (
        main(
            [
                "run_tests",
                "--model-types",
                "llama",
                "--output",
                str(output_file),
                "--merge",
                "--no-record",
            ]
        )
        == 0
    )
    merged = json.loads(output_file.read_text())
    assert merged["models"]["llama"]["tested_with"]["transformers"] == [
        "5.0.0",
        TRANSFORMERS,
    ]
    assert merged["versions"]["transformers"] == "5.0.0"
    assert merged["totals"] == {
        "total": 1,
        "buildable": 1,
        "runnable": 1,
        "standardized": 1,
        "attention_probabilities": 1,
    }


def test_patching_grids_render_with_layer_and_position_or_head_labels():
    import warnings

    import torch
    from nnterp import StandardizedTransformer
    from nnterp.interventions.commands import render_head_grid, render_position_grid
    from nnterp.testing import tiny_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = StandardizedTransformer(tiny_model("llama"), tokenizer)
    clean, corrupted = "The capital of France is", "The capital of Italy is"
    ids = tokenizer(clean)["input_ids"]
    grid = torch.arange(2 * len(ids), dtype=torch.float32).reshape(2, len(ids)) / 4 - 1
    lines = render_position_grid(model, [clean, corrupted], grid).splitlines()
    tokens = [repr(tokenizer.decode([i])) for i in ids]
    assert (
        lines[0]
        == "metric after patching each (layer, position) of the clean run into the corrupted run"
    )
    header = lines[1].split("  ")
    assert [cell.strip() for cell in header if cell.strip()] == [
        "layer",
        *(f"{p} {t}" for p, t in enumerate(tokens)),
    ]
    assert set(lines[2].replace(" ", "")) == {"-"}
    for layer in range(2):
        assert lines[3 + layer].split() == [
            str(layer),
            *(f"{float(v):+.3f}" for v in grid[layer]),
        ]

    heads = torch.tensor([[0.5, -0.25, 1.0], [0.0, 2.0, -1.5]])
    head_lines = render_head_grid(model, [clean, corrupted], heads).splitlines()
    assert head_lines[1].split() == ["layer", "head", "0", "head", "1", "head", "2"]
    assert head_lines[3].split() == ["0", "+0.500", "-0.250", "+1.000"]
    assert head_lines[4].split() == ["1", "+0.000", "+2.000", "-1.500"]
