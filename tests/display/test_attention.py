"""plot_attention: one query × key heatmap per head, with token labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnterp.display import plot_attention
from nnterp.errors import InvalidInputError, LayerIndexError


def hand_attention() -> torch.Tensor:
    """(heads=3, q=3, k=3) causal patterns with distinct values per head."""
    pattern = torch.tensor([[1.0, 0.0, 0.0], [0.25, 0.75, 0.0], [0.2, 0.3, 0.5]])
    return torch.stack([pattern, pattern.flip(-1).tril(), torch.eye(3)])


def test_one_panel_per_head_with_values_and_token_labels():
    tokens = [" the", " cat", " the"]
    fig = plot_attention(hand_attention(), tokens)
    assert [trace.name for trace in fig.data] == ["head 0", "head 1", "head 2"]
    for head, trace in enumerate(fig.data):
        np.testing.assert_array_equal(trace.z, hand_attention()[head].numpy())
    # Each head has its own axes; the repeated " the" keeps its own row and column.
    axes = [fig.layout.xaxis, fig.layout.xaxis2, fig.layout.xaxis3]
    assert [trace.xaxis for trace in fig.data] == ["x", "x2", "x3"]
    for axis in axes:
        assert list(axis.ticktext) == ["␣the", "␣cat", "␣the"]
    assert list(fig.layout.yaxis.ticktext) == ["␣the", "␣cat", "␣the"]
    assert fig.layout.yaxis.autorange == "reversed"
    assert [a.text for a in fig.layout.annotations] == ["head 0", "head 1", "head 2"]
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (0.0, 1.0)
    assert np.asarray(fig.data[0].customdata)[2, 1].tolist() == ["2 ␣the", "1 ␣cat"]


def test_head_selection_slider_and_fewer_queries_than_keys():
    fig = plot_attention(hand_attention()[None], ["a", "b", "c"], heads=[-1, 0], layout="slider")
    assert [trace.name for trace in fig.data] == ["head 2", "head 0"]
    assert [trace.visible for trace in fig.data] == [True, False]
    steps = fig.layout.sliders[0].steps
    assert [step.label for step in steps] == ["head 2", "head 0"]
    assert [step.args[0]["visible"] for step in steps] == [[True, False], [False, True]]
    last_query = plot_attention(hand_attention()[:, 2:], ["a", "b", "c"], heads=1)
    assert list(last_query.layout.yaxis.ticktext) == ["c"]
    np.testing.assert_array_equal(last_query.data[0].z, hand_attention()[1, 2:].numpy())
    np.testing.assert_allclose(last_query.data[0].z, [[0.5, 0.3, 0.2]], rtol=1e-6)


def test_real_attention_of_the_tiny_llama(prompt, attention_probs, llama, tokenizer):
    fig = plot_attention(attention_probs, prompt, tokenizer=llama.tokenizer, columns=2)
    assert attention_probs.shape[:2] == (1, llama.num_heads)
    assert len(fig.data) == llama.num_heads
    for head, trace in enumerate(fig.data):
        np.testing.assert_allclose(trace.z, attention_probs[0, head].double().numpy(), rtol=0)
        np.testing.assert_allclose(np.asarray(trace.z).sum(axis=-1), 1.0, atol=1e-5)
    names = [tokenizer.decode([i]).replace(" ", "␣") for i in tokenizer(prompt)["input_ids"]]
    assert list(fig.layout.xaxis.ticktext) == names
    assert fig.layout.width == 2 * 320 + 160  # two columns of panels
    assert fig.layout.xaxis.title.text is None and fig.layout.xaxis3.title.text == "key"


def test_bad_input_is_named():
    with pytest.raises(LayerIndexError, match="heads 3 is out of range"):
        plot_attention(hand_attention(), heads=3)
    with pytest.raises(InvalidInputError, match="'grid' or 'slider'"):
        plot_attention(hand_attention(), layout="dropdown")
    with pytest.raises(InvalidInputError, match="queries but only"):
        plot_attention(torch.rand(2, 4, 3))
    with pytest.raises(InvalidInputError, match=r"batch of 2 prompts.*attention_probs\[0\]"):
        plot_attention(torch.rand(2, 2, 3, 3))
    with pytest.raises(InvalidInputError, match="columns=0"):
        plot_attention(hand_attention(), columns=0)


def test_png_renders(prompt, tmp_path, attention_probs, tokenizer, check_png):
    path = tmp_path / "attention.png"
    fig = plot_attention(attention_probs, prompt, tokenizer=tokenizer, file=path)
    check_png(path, fig.layout.width, fig.layout.height)
