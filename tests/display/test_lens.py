"""plot_logit_lens_heatmap: top token and its probability at every (layer, position)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnterp.display import plot_logit_lens_heatmap
from nnterp.display._tokens import token_label
from nnterp.errors import InvalidInputError

PARIS, NEWLINE, LONDON = 436, 202, 434


def test_cells_hold_each_top_token(tokenizer):
    probs = torch.full((2, 3, 512), 0.0005)
    tops = [[(PARIS, 0.7), (NEWLINE, 0.4), (LONDON, 0.2)], [(LONDON, 0.5), (PARIS, 0.9), (NEWLINE, 0.3)]]
    for layer, row in enumerate(tops):
        for position, (token, p) in enumerate(row):
            probs[layer, position, token] = p
    fig = plot_logit_lens_heatmap(probs, tokenizer, [" a", "b\n", "c"], from_logits=False)
    heatmap = fig.data[0]
    np.testing.assert_allclose(heatmap.z, [[0.7, 0.4, 0.2], [0.5, 0.9, 0.3]], rtol=1e-6)
    assert np.asarray(heatmap.text).tolist() == [["␣Paris", "\\n", "␣London"], ["␣London", "␣Paris", "\\n"]]
    assert list(fig.layout.xaxis.ticktext) == ["␣a", "b\\n", "c"]
    assert list(fig.layout.xaxis.tickvals) == [0, 1, 2]
    custom = np.asarray(heatmap.customdata)
    assert custom[1, 2].tolist() == ["\\n", NEWLINE, "2 c", "1"]


def test_real_lens_of_the_tiny_llama(prompt, lens_probs, llama, tokenizer):
    fig = plot_logit_lens_heatmap(lens_probs, llama.tokenizer, prompt, title="lens")
    heatmap = fig.data[0]
    top = lens_probs.max(dim=-1)
    np.testing.assert_allclose(heatmap.z, top.values.double().numpy(), rtol=0)
    expected = [[token_label(tokenizer.decode([i])) for i in row] for row in top.indices.tolist()]
    assert np.asarray(heatmap.text).tolist() == expected
    ids = tokenizer(prompt)["input_ids"]
    assert list(fig.layout.xaxis.ticktext) == [token_label(tokenizer.decode([i])) for i in ids]
    assert fig.layout.xaxis.ticktext[3] == "␣France"
    # Same figure from a batch of one given as logits, with ids as labels.
    logits = lens_probs.log()[None]
    again = plot_logit_lens_heatmap(logits, tokenizer, torch.tensor(ids)).data[0]
    np.testing.assert_allclose(again.z, heatmap.z, rtol=1e-5)
    assert np.array_equal(again.text, heatmap.text)


def test_png_renders(prompt, tmp_path, lens_probs, tokenizer, check_png):
    path = tmp_path / "nested" / "lens.png"
    plot_logit_lens_heatmap(lens_probs, tokenizer, prompt, width=700, height=350, file=path)
    check_png(path, 700, 350)


def test_bad_input_is_named(tokenizer):
    with pytest.raises(InvalidInputError, match=r"\(layers, positions, vocab\)"):
        plot_logit_lens_heatmap(torch.rand(2, 512), tokenizer)
    with pytest.raises(InvalidInputError, match="has 2 tokens but the data has 3 positions"):
        plot_logit_lens_heatmap(torch.rand(2, 3, 512), tokenizer, ["a", "b"])
