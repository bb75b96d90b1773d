"""``nnterp demo`` end to end: the printed logit lens, target tracking and steering tables, and
the figure files."""

from __future__ import annotations

import re
import warnings

import pytest
import torch

from nnterp import cli
from nnterp.interventions import demo, logit_lens

pytestmark = pytest.mark.slow


def _lens_rows(text: str, prompt: str) -> dict[int, list[str]]:
    """``{layer: [token labels, best first]}`` parsed from the demo's table for ``prompt``."""
    lines = text.splitlines()
    start = lines.index(f"Logit lens: {prompt!r}")
    rows = {}
    for line in lines[start + 2 :]:
        match = re.match(r"\s*(\d+)\s+(.*)$", line)
        if not match:
            break
        tokens = re.findall(r"('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\") (\d\.\d{3})", match.group(2))
        rows[int(match.group(1))] = [token for token, _ in tokens]
    return rows


def _steering_rows(text: str) -> dict[float, tuple[float, float]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("factor"))
    rows = {}
    for line in lines[start + 1 : start + 4]:
        factor, positive, negative = line.split()[:3]
        rows[float(factor)] = (float(positive), float(negative))
    return rows


@pytest.fixture(scope="module")
def demo_run(smollm2, tmp_path_factory):
    """The demo run through the CLI once, on the session's model (loading is tested elsewhere)."""
    output = tmp_path_factory.mktemp("demo") / "figures"
    requested = []

    def reuse_session_model(name):
        requested.append(name)
        return smollm2

    import io
    from contextlib import redirect_stdout

    patch = pytest.MonkeyPatch()
    patch.setattr(demo, "load_demo_model", reuse_session_model)
    stdout = io.StringIO()
    try:
        with redirect_stdout(stdout), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            status = cli.main(["demo", "--output", str(output)])
    finally:
        patch.undo()
    return status, stdout.getvalue(), output, requested


def test_demo_exits_cleanly_on_the_default_model(demo_run):
    status, _, _, requested = demo_run
    assert status == 0
    assert requested == [None], "without --model the demo loads the default model"


def test_lens_table_shows_paris_only_at_the_last_layer(demo_run, smollm2):
    _, text, _, _ = demo_run
    rows = _lens_rows(text, "The capital of France is")
    assert sorted(rows) == list(range(30))
    assert rows[29][0] == "' Paris'"
    assert rows[24][0] != "' Paris'"
    assert "-> final prediction ' Paris'" in text
    # The table is the logit lens, token for token.
    probs = logit_lens(smollm2, "The capital of France is")[0]
    expected = [repr(smollm2.tokenizer.decode([int(i)])) for i in probs.topk(3, dim=-1).indices[24]]
    assert rows[24] == expected


def test_tracking_and_steering_tables(demo_run):
    _, text, _, _ = demo_run
    paris_line = next(line for line in text.splitlines() if line.startswith("The capital of France (not"))
    target_values = [float(value) for value in re.findall(r"\d\.\d{3}", paris_line)]
    traps_line = text.splitlines()[text.splitlines().index(paris_line) + 1]
    trap_values = [float(value) for value in re.findall(r"\d\.\d{3}", traps_line)]
    assert target_values[-1] > trap_values[-1] > 0
    steering = _steering_rows(text)
    assert sorted(steering) == [-2.0, 0.0, 2.0]
    positive = [steering[f][0] for f in (-2.0, 0.0, 2.0)]
    negative = [steering[f][1] for f in (-2.0, 0.0, 2.0)]
    assert positive[0] < positive[1] < positive[2]
    assert negative[2] < negative[1]


def test_demo_writes_the_figures(demo_run):
    _, text, output, _ = demo_run
    expected = ["target_tracking"] + [f"logit_lens_{demo._slug(prompt)}" for prompt in demo.LENS_PROMPTS]
    for name in expected:
        html = output / f"{name}.html"
        png = output / f"{name}.png"
        assert html.stat().st_size > 0 and png.stat().st_size > 0
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "plotly" in html.read_text()
        assert f"  {name}.html" in text and f"  {name}.png" in text
    assert (output / "plotly.min.js").stat().st_size > 1_000_000, "pages open offline"


def test_demo_runs_on_another_model_directory(tmp_path, capsys):
    """``--model DIR``: a tiny random Llama saved to disk, no figures."""
    from nnterp.testing import tiny_model, tiny_tokenizer

    directory = tmp_path / "tiny-llama"
    tiny_model("llama").save_pretrained(directory)
    tiny_tokenizer().save_pretrained(directory)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = cli.main(["demo", "--model", str(directory), "--no-figures", "--output", str(tmp_path / "out")])
    text = capsys.readouterr().out
    assert status == 0
    rows = _lens_rows(text, "The capital of France is")
    assert sorted(rows) == [0, 1]
    assert all(len(tokens) == 3 for tokens in rows.values())
    assert len(_steering_rows(text)) == 3
    assert not (tmp_path / "out").exists()


def test_demo_without_nnterp_display_says_so(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "nnterp.display", None)
    assert demo._display_module(disabled=False) is None
    assert "pip install nnterp-core[display]" in capsys.readouterr().out


def test_lens_table_format():
    class Tokenizer:
        def decode(self, ids):
            return {0: " a", 1: "b", 2: "\n"}[ids[0]]

    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    table = demo.lens_table(Tokenizer(), "p", probs, top_k=2)
    assert table.splitlines() == [
        "Logit lens: 'p'",
        "layer  top-1       top-2",
        "    0  ' a' 0.700  'b' 0.200",
        "    1  '\\n' 0.600  'b' 0.300",
    ]
