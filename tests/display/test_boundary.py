"""Every public function of nnterp.display checks its arguments at the boundary: one row per bad
argument, with the typed error it raises and the words of the message that name the argument
and the fix."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest
import torch

from nnterp.display import (
    MissingExtraError,
    plot_attention,
    plot_logit_lens_heatmap,
    plot_patching_grid,
    plot_run_prompts,
    plot_topk_tokens,
    prompts_to_df,
    save_figure,
    set_notebook_renderer,
    visible_token,
)
from nnterp.errors import InvalidInputError, LayerIndexError, NnterpError

VOCAB = 512


def probs(*shape: int) -> np.ndarray:
    """Uniform probabilities over the last axis."""
    return np.full(shape, 1.0 / shape[-1])


def with_value(array: np.ndarray, value: float, index: tuple[int, ...]) -> np.ndarray:
    array = array.copy()
    array[index] = value
    return array


def all_minus_infinity_row() -> np.ndarray:
    logits = np.zeros((2, VOCAB))
    logits[1] = -np.inf
    return logits


def attention(heads: int = 2, queries: int = 3, keys: int = 3) -> np.ndarray:
    return probs(heads, queries, keys)


TOPK = [
    (
        "nan",
        lambda: (with_value(probs(2, VOCAB), np.nan, (1, 3)),),
        {},
        InvalidInputError,
        r"probs holds 1 NaN/inf value\(s\) \(first at index \(1, 3\)\).*Pass finite values",
    ),
    (
        "+inf logit",
        lambda: (with_value(np.zeros((2, VOCAB)), np.inf, (0, 0)),),
        {},
        InvalidInputError,
        r"probs holds 1 NaN/inf",
    ),
    (
        "not probabilities",
        lambda: (probs(2, VOCAB) * 1000,),
        {"from_logits": False},
        InvalidInputError,
        r"probs must hold probabilities in \[0, 1\].*pass from_logits=True",
    ),
    (
        "all -inf row",
        lambda: (all_minus_infinity_row(),),
        {},
        InvalidInputError,
        r"probs has a row of logits that are all -inf \(at index \(1,\)\)",
    ),
    (
        "from_logits",
        lambda: (probs(2, VOCAB),),
        {"from_logits": "yes"},
        InvalidInputError,
        r"from_logits must be True, False or None",
    ),
    ("none", lambda: (None,), {}, InvalidInputError, r"probs must be a tensor or array of numbers, got NoneType"),
    (
        "complex",
        lambda: (torch.ones(2, VOCAB, dtype=torch.complex64),),
        {},
        InvalidInputError,
        r"probs is a complex tensor",
    ),
    ("ragged", lambda: ([[0.5, 0.5], [1.0]],), {}, InvalidInputError, r"probs must be a tensor or array of numbers"),
    ("k bool", lambda: (probs(2, VOCAB),), {"k": True}, InvalidInputError, r"k=True must be an integer"),
    (
        "tokenizer",
        lambda: (probs(2, VOCAB),),
        {"tokenizer": None},
        InvalidInputError,
        r"tokenizer must be a HuggingFace tokenizer.*pass model.tokenizer",
    ),
    ("title", lambda: (probs(2, VOCAB),), {"title": 5}, InvalidInputError, r"title must be a string"),
    (
        "width",
        lambda: (probs(2, VOCAB),),
        {"width": 0},
        InvalidInputError,
        r"width must be a whole number of pixels, at least 10",
    ),
    ("height", lambda: (probs(2, VOCAB),), {"height": 250.5}, InvalidInputError, r"height must be a whole number"),
    ("file type", lambda: (probs(2, VOCAB),), {"file": 3}, InvalidInputError, r"file must be a file path"),
    (
        "file extension",
        lambda: (probs(2, VOCAB),),
        {"file": "lens.txt"},
        InvalidInputError,
        r"file='lens.txt': cannot tell how to save it.*\.html, \.htm, \.png",
    ),
    (
        "colorscale",
        lambda: (probs(2, VOCAB),),
        {"colorscale": "Bleus"},
        InvalidInputError,
        r"colorscale='Bleus' is not a plotly colour scale.*named_colorscales",
    ),
    (
        "zmax",
        lambda: (probs(2, VOCAB),),
        {"zmax": -1},
        InvalidInputError,
        r"zmax must be a finite number greater than 0",
    ),
    (
        "font_size",
        lambda: (probs(2, VOCAB),),
        {"font_size": 0},
        InvalidInputError,
        r"font_size must be a finite number",
    ),
    (
        "layer_labels str",
        lambda: (probs(2, VOCAB),),
        {"layer_labels": "ab"},
        InvalidInputError,
        r"layer_labels must be a list with one label per row",
    ),
]

LENS = [
    (
        "nan",
        lambda: (with_value(probs(2, 3, VOCAB), np.nan, (0, 2, 7)),),
        {},
        InvalidInputError,
        r"probs holds 1 NaN/inf value\(s\) \(first at index \(0, 2, 7\)\)",
    ),
    ("shape", lambda: (probs(2, VOCAB),), {}, InvalidInputError, r"must be \(layers, positions, vocab\)"),
    (
        "fractional token ids",
        lambda: (probs(2, 3, VOCAB),),
        {"input_tokens": [1.5, 2, 3]},
        InvalidInputError,
        r"input_tokens must be token strings or token ids \(whole numbers >= 0\)",
    ),
    (
        "negative token ids",
        lambda: (probs(2, 3, VOCAB),),
        {"input_tokens": torch.tensor([1, -2, 3])},
        InvalidInputError,
        r"input_tokens must be token strings or token ids",
    ),
    (
        "colorscale list",
        lambda: (probs(2, 3, VOCAB),),
        {"colorscale": [[0, "red"], [2, "blue"]]},
        InvalidInputError,
        r"colorscale=.* is not a colour scale",
    ),
    ("file", lambda: (probs(2, 3, VOCAB),), {"file": ["a.html"]}, InvalidInputError, r"file must be a file path"),
]

ATTENTION = [
    (
        "scores",
        lambda: (attention() * 4,),
        {},
        InvalidInputError,
        r"attention_probs must hold probabilities in \[0, 1\].*not attention scores",
    ),
    (
        "nan",
        lambda: (with_value(attention(), np.nan, (1, 2, 0)),),
        {},
        InvalidInputError,
        r"attention_probs holds 1 NaN/inf value\(s\) \(first at index \(1, 2, 0\)\)",
    ),
    ("layout", lambda: (attention(),), {"layout": "tiles"}, InvalidInputError, r"layout='tiles'.*'grid' or 'slider'"),
    ("columns", lambda: (attention(),), {"columns": 0}, InvalidInputError, r"columns=0 must be a positive integer"),
    ("heads", lambda: (attention(),), {"heads": 5}, LayerIndexError, r"heads 5 is out of range"),
    ("empty", lambda: (np.zeros((2, 0, 0)),), {}, InvalidInputError, r"may be empty"),
    ("queries", lambda: (attention(queries=4, keys=2),), {}, InvalidInputError, r"4 queries but only 2 keys"),
    (
        "tokens",
        lambda: (attention(),),
        {"tokens": ["a", "b"]},
        InvalidInputError,
        r"tokens has 2 tokens but the data has 3 positions",
    ),
    ("height", lambda: (attention(),), {"height": -5}, InvalidInputError, r"height must be a whole number"),
]

PATCHING = [
    (
        "nan",
        lambda: (with_value(np.zeros((2, 3)), np.nan, (1, 1)),),
        {},
        InvalidInputError,
        r"grid holds 1 NaN/inf value\(s\) \(first at index \(1, 1\)\)",
    ),
    ("-inf", lambda: (with_value(np.zeros((2, 3)), -np.inf, (0, 0)),), {}, InvalidInputError, r"grid holds 1 NaN/inf"),
    ("empty", lambda: (np.zeros((2, 0)),), {}, InvalidInputError, r"grid has shape \(2, 0\): no axis"),
    (
        "show_values",
        lambda: (np.zeros((2, 3)),),
        {"show_values": "yes"},
        InvalidInputError,
        r"show_values must be True or False",
    ),
    ("metric", lambda: (np.zeros((2, 3)),), {"metric": 3}, InvalidInputError, r"metric must be a string"),
    (
        "value_format",
        lambda: (np.zeros((2, 3)),),
        {"value_format": None},
        InvalidInputError,
        r"value_format must be a string",
    ),
    (
        "colorscale",
        lambda: (np.zeros((2, 3)),),
        {"colorscale": 7},
        InvalidInputError,
        r"colorscale must be a colour scale",
    ),
    (
        "text grid",
        lambda: ([["a", "b"], ["c", "d"]],),
        {},
        InvalidInputError,
        r"grid must be a tensor or array of numbers",
    ),
]

TARGETS = [
    (
        "nan",
        lambda: ({"target": [[0.1, np.nan]]},),
        {},
        InvalidInputError,
        r"results\['target'\] holds 1 NaN/inf value\(s\) \(first at index \(0, 1\)\)",
    ),
    (
        "no prompts",
        lambda: ({"target": np.zeros((0, 3))},),
        {},
        InvalidInputError,
        r"results\['target'\] has shape \(0, 3\): it holds no values",
    ),
    (
        "empty mapping",
        lambda: ({},),
        {},
        InvalidInputError,
        r"results must be a non-empty \{category: values\} mapping",
    ),
    (
        "list",
        lambda: ([[0.1, 0.2]],),
        {},
        InvalidInputError,
        r"results must be a non-empty \{category: values\} mapping",
    ),
    (
        "band",
        lambda: ({"target": [[0.1, 0.2]]},),
        {"band": "iqr"},
        InvalidInputError,
        r"band='iqr' is not a band: use 'std', 'minmax' or None",
    ),
    (
        "show_prompts",
        lambda: ({"target": [[0.1, 0.2]]},),
        {"show_prompts": 1},
        InvalidInputError,
        r"show_prompts must be True or False",
    ),
    (
        "value_name",
        lambda: ({"target": [[0.1, 0.2]]},),
        {"value_name": None},
        InvalidInputError,
        r"value_name must be a string",
    ),
    (
        "width",
        lambda: ({"target": [[0.1, 0.2]]},),
        {"width": "wide"},
        InvalidInputError,
        r"width must be a whole number",
    ),
]


def _cases(function, rows, needs_tokenizer):
    return [
        pytest.param(function, build, kwargs, error, message, needs_tokenizer, id=f"{function.__name__}-{name}")
        for name, build, kwargs, error, message in rows
    ]


CASES = (
    _cases(plot_topk_tokens, TOPK, True)
    + _cases(plot_logit_lens_heatmap, LENS, True)
    + _cases(plot_attention, ATTENTION, False)
    + _cases(plot_patching_grid, PATCHING, False)
    + _cases(plot_run_prompts, TARGETS, False)
)


@pytest.mark.parametrize(("function", "build", "kwargs", "error", "message", "needs_tokenizer"), CASES)
def test_plot_functions_name_the_bad_argument(
    function, build, kwargs, error, message, needs_tokenizer, tokenizer, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # a row whose check failed to run would write its file here
    args = build()
    if needs_tokenizer:
        kwargs = {"tokenizer": tokenizer, **kwargs}
    with pytest.raises(error, match=message) as caught:
        function(*args, **kwargs)
    assert isinstance(caught.value, NnterpError)
    assert list(tmp_path.iterdir()) == []


def small_figure() -> go.Figure:
    fig = go.Figure(go.Heatmap(z=[[0.0, 0.5], [0.75, 1.0]]))
    fig.update_layout(width=320, height=240)
    return fig


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        pytest.param(({"data": []}, "fig.html"), {}, r"fig must be a plotly Figure", id="not a figure"),
        pytest.param((small_figure(), None), {}, r"path must be a file path", id="no path"),
        pytest.param((small_figure(), "fig.txt"), {}, r"cannot tell how to save 'fig.txt'", id="extension"),
        pytest.param(
            (small_figure(), "fig.html"),
            {"include_plotlyjs": "inline"},
            r"include_plotlyjs='inline' is not a way to include plotly.js.*True \(embed it",
            id="plotlyjs",
        ),
        pytest.param(
            (small_figure(), "fig.png"), {"scale": 0}, r"scale must be a finite number greater than 0", id="scale"
        ),
    ],
)
def test_save_figure_names_the_bad_argument(args, kwargs, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInputError, match=message):
        save_figure(*args, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_an_image_without_kaleido_names_the_png_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "kaleido", None)  # `import kaleido` now raises ImportError
    with pytest.raises(MissingExtraError, match=r'needs kaleido.*`pip install "nnterp-display\[png\]"`') as caught:
        save_figure(small_figure(), tmp_path / "fig.png")
    assert isinstance(caught.value, ImportError) and isinstance(caught.value, NnterpError)
    assert not (tmp_path / "fig.png").exists()
    save_figure(small_figure(), tmp_path / "fig.html")  # HTML needs no kaleido
    assert "Plotly.newPlot" in (tmp_path / "fig.html").read_text()


def test_prompts_to_df_checks_the_tokenizer_and_the_prompts(tokenizer):
    with pytest.raises(InvalidInputError, match=r"tokenizer must be a HuggingFace tokenizer"):
        prompts_to_df([], None)
    with pytest.raises(InvalidInputError, match=r"prompts must be Prompt objects.*got int"):
        prompts_to_df(5, tokenizer)


def test_visible_token_and_set_notebook_renderer_check_their_argument():
    with pytest.raises(InvalidInputError, match=r"text must be a string.*tokenizer.decode\(\[token_id\]\)"):
        visible_token(436)
    with pytest.raises(InvalidInputError, match=r"connected must be True or False"):
        set_notebook_renderer("yes")


def test_set_notebook_renderer_adds_html_to_the_mimetype(monkeypatch):
    monkeypatch.setattr(pio.renderers, "default", pio.renderers.default)  # restored afterwards
    assert set_notebook_renderer() == "plotly_mimetype+notebook"
    assert pio.renderers.default == "plotly_mimetype+notebook"
    assert set_notebook_renderer(connected=True) == "plotly_mimetype+notebook_connected"
    assert pio.renderers.default == "plotly_mimetype+notebook_connected"
    pio.renderers.default = "colab"  # what plotly picks in Colab, where each output is its own frame
    assert set_notebook_renderer() == "colab"
    assert pio.renderers.default == "colab"


def test_a_valid_call_still_draws(tokenizer, tmp_path):
    """The checks let through what they should: -inf logits (impossible tokens), tuples of
    labels, numpy booleans, a Path."""
    logits = np.zeros((2, VOCAB))
    logits[:, 0] = -np.inf
    logits[:, 5] = 3.0
    fig = plot_topk_tokens(logits, tokenizer, k=2, layer_labels=("a", "b"), file=Path(tmp_path) / "ok.html")
    expected = np.exp(3.0) / (np.exp(3.0) + VOCAB - 2)
    assert np.allclose(np.asarray(fig.data[0].z)[:, 0], expected)
    grid = plot_patching_grid(np.array([[1.0, -1.0]]), show_values=np.bool_(True))
    assert np.asarray(grid.data[0].z).tolist() == [[1.0, -1.0]]
