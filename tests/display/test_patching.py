"""plot_patching_grid: the metric of each patched (layer, position) in its cell."""

from __future__ import annotations

import nnsight
import numpy as np
import pytest
import torch

from nnterp.display import plot_patching_grid
from nnterp.errors import InvalidInputError

PARIS, LONDON = 436, 434
CLEAN, CORRUPTED = "The capital of France is", "The capital of England is"


def test_signed_grid_is_diverging_and_centred():
    grid = torch.tensor([[0.5, -2.0, 0.0], [1.0, 0.25, -0.5]])
    fig = plot_patching_grid(grid, [" a", "b", " a"], metric="logit diff", show_values=True)
    heatmap = fig.data[0]
    np.testing.assert_array_equal(heatmap.z, grid.numpy())
    assert heatmap.colorscale[0][1] == "rgb(103,0,31)"  # RdBu starts dark red
    assert (heatmap.zmin, heatmap.zmid, heatmap.zmax) == (-2.0, 0.0, 2.0)
    assert heatmap.texttemplate == "%{z:.2f}"
    assert heatmap.colorbar.title.text == "logit diff"
    assert list(fig.layout.xaxis.ticktext) == ["␣a", "b", "␣a"]
    assert np.asarray(heatmap.customdata)[1, 2].tolist() == ["2 ␣a", "1"]


def test_one_signed_grid_is_sequential():
    fig = plot_patching_grid(np.array([[[0.0, 0.2], [0.9, 1.0]]]), layer_labels=["a", "b"], colorscale=None)
    heatmap = fig.data[0]
    assert heatmap.colorscale[0][1] == "#440154"  # Viridis
    assert heatmap.zmid is None and heatmap.zmin is None
    assert heatmap.texttemplate is None
    assert list(fig.layout.yaxis.ticktext) == ["a", "b"]


def logit_diff(logits: torch.Tensor) -> torch.Tensor:
    return logits[0, -1, PARIS] - logits[0, -1, LONDON]


def test_real_activation_patching_on_the_tiny_llama(llama, tokenizer):
    with llama.trace(CLEAN):
        clean = nnsight.save([llama.layers_output[layer] for layer in range(llama.num_layers)])
        clean_logits = llama.logits.save()
    positions = len(tokenizer(CLEAN)["input_ids"])
    grid = torch.zeros(llama.num_layers, positions)
    for layer in range(llama.num_layers):
        for position in range(positions):
            with llama.trace(CORRUPTED):
                hidden = llama.layers_output[layer]
                hidden[:, position] = clean[layer][:, position]
                llama.layers_output[layer] = hidden
                logits = llama.logits.save()
            grid[layer, position] = logit_diff(logits)
    # Patching the last layer at the last position restores the clean prediction.
    torch.testing.assert_close(grid[-1, -1], logit_diff(clean_logits))
    assert grid.requires_grad  # the model's weights carry gradients: the plot must detach
    fig = plot_patching_grid(grid, CLEAN, tokenizer=tokenizer, metric="logit diff")
    heatmap = fig.data[0]
    np.testing.assert_array_equal(heatmap.z, grid.detach().numpy())
    assert fig.layout.xaxis.ticktext[3] == "␣France"
    signed = grid.min() < 0 < grid.max()
    assert (heatmap.zmid == 0.0) == bool(signed)


def test_bad_input_is_named():
    with pytest.raises(InvalidInputError, match=r"\(layers, positions\)"):
        plot_patching_grid(torch.rand(3))
    with pytest.raises(InvalidInputError, match="has 1 tokens but the data has 2 positions"):
        plot_patching_grid(torch.rand(3, 2), ["a"])


def test_png_renders(tmp_path, check_png):
    path = tmp_path / "patching.png"
    plot_patching_grid(torch.randn(6, 5), ["a", " b", "c", "\n", "d"], show_values=True, file=path)
    check_png(path, 1000, 600)
