"""plot_topk_tokens: the right tokens and probabilities in the right cells, and a readable PNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnterp.display import plot_topk_tokens
from nnterp.display._tokens import token_label
from nnterp.errors import InvalidInputError

PARIS, NEWLINE, LONDON, THE = 436, 202, 434, 289
VOCAB = 512


def hand_probs() -> torch.Tensor:
    """Three layers whose top tokens are known: (layers, vocab) probabilities."""
    tops = [
        {PARIS: 0.6, NEWLINE: 0.3},
        {LONDON: 0.5, PARIS: 0.2, THE: 0.1},
        {NEWLINE: 0.9, THE: 0.05},
    ]
    probs = torch.zeros(3, VOCAB)
    for layer, top in enumerate(tops):
        rest = 1.0 - sum(top.values())
        probs[layer] = rest / (VOCAB - len(top))
        for token, p in top.items():
            probs[layer, token] = p
    return probs


def test_cells_hold_the_top_tokens_and_probabilities(tokenizer):
    fig = plot_topk_tokens(hand_probs(), tokenizer, k=2, title="lens")
    heatmap = fig.data[0]
    assert heatmap.type == "heatmap"
    np.testing.assert_allclose(heatmap.z, [[0.6, 0.3], [0.5, 0.2], [0.9, 0.05]], rtol=1e-6)
    assert np.asarray(heatmap.text).tolist() == [["␣Paris", "\\n"], ["␣London", "␣Paris"], ["\\n", "␣the"]]
    ids = np.asarray(heatmap.customdata)[..., 1].astype(int)
    assert ids.tolist() == [[PARIS, NEWLINE], [LONDON, PARIS], [NEWLINE, THE]]
    assert list(heatmap.y) == [0, 1, 2]
    assert list(fig.layout.xaxis.ticktext) == ["top 1", "top 2"]
    assert fig.layout.title.text == "lens"
    assert (fig.layout.width, fig.layout.height) == (1000, 600)


def test_batch_of_one_numpy_and_logits_give_the_same_figure(tokenizer):
    probs = hand_probs()
    reference = plot_topk_tokens(probs, tokenizer, k=3).data[0]
    for variant in (probs[None], probs.numpy(), probs.tolist(), probs.log()):
        heatmap = plot_topk_tokens(variant, tokenizer, k=3).data[0]
        np.testing.assert_allclose(heatmap.z, reference.z, rtol=1e-5)
        assert np.array_equal(heatmap.text, reference.text)
    half = plot_topk_tokens(probs.bfloat16(), tokenizer, k=3).data[0]
    assert np.array_equal(half.text, reference.text)
    np.testing.assert_allclose(half.z, reference.z, rtol=1e-2)


def test_logits_are_softmaxed(tokenizer):
    logits = torch.randn(2, VOCAB) * 4
    heatmap = plot_topk_tokens(logits, tokenizer, k=4).data[0]
    expected = torch.softmax(logits.double(), dim=-1).topk(4, dim=-1)
    np.testing.assert_allclose(heatmap.z, expected.values.numpy(), rtol=1e-9)
    assert np.asarray(heatmap.customdata)[..., 1].astype(int).tolist() == expected.indices.tolist()


def test_real_logit_lens_of_the_tiny_llama(lens_probs, tokenizer, llama):
    last = lens_probs[:, -1]  # (layers, vocab) at the last position
    fig = plot_topk_tokens(last, llama.tokenizer, k=5, layer_labels=["first", "second"])
    heatmap = fig.data[0]
    expected = last.topk(5, dim=-1)
    np.testing.assert_allclose(heatmap.z, expected.values.double().numpy(), rtol=0)
    labels = [[token_label(tokenizer.decode([i])) for i in row] for row in expected.indices.tolist()]
    assert np.asarray(heatmap.text).tolist() == labels
    assert list(fig.layout.yaxis.ticktext) == ["first", "second"]
    assert np.asarray(heatmap.customdata)[..., 2].tolist() == [["first"] * 5, ["second"] * 5]


@pytest.mark.parametrize(
    ("probs", "kwargs", "message"),
    [
        (torch.rand(2, 3, VOCAB), {}, r"batch of 2 prompts.*probs\[0\]"),
        (torch.rand(VOCAB), {}, r"must be \(layers, vocab\)"),
        (torch.rand(2, 0), {}, "may be empty"),
        (torch.rand(2, VOCAB), {"k": 0}, "from 1 to the vocabulary size 512"),
        (torch.rand(2, VOCAB), {"k": VOCAB + 1}, "from 1 to the vocabulary size 512"),
        (torch.rand(2, VOCAB), {"layer_labels": ["a"]}, "1 names but the data has 2 layers"),
        ("probs", {}, "tensor or array of numbers"),
    ],
)
def test_bad_input_is_named(tokenizer, probs, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        plot_topk_tokens(probs, tokenizer, **kwargs)


def test_png_is_rendered_at_the_requested_size(tmp_path, tokenizer, lens_probs, check_png):
    path = tmp_path / "topk.png"
    fig = plot_topk_tokens(lens_probs[:, -1], tokenizer, k=5, width=800, height=400, file=path)
    assert fig.layout.width == 800
    pixels = check_png(path, 800, 400)
    # The top-1 column of the heatmap is coloured: some pixels are clearly blue.
    blue = (pixels[..., 2] > pixels[..., 0] + 40).mean()
    assert blue > 0.01


def test_html_file_holds_the_figure(tmp_path, tokenizer):
    path = tmp_path / "topk.html"
    plot_topk_tokens(hand_probs(), tokenizer, k=2, file=path)
    page = path.read_text()
    assert "cdn.plot.ly" in page
    # plotly 7 writes "␣Paris" in its JSON with a \u escape, plotly 6.1 as it is
    assert "\\u2423Paris" in page or "␣Paris" in page
