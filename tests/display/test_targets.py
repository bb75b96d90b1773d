"""plot_run_prompts: per-category mean curves across layers, with bands and per-prompt lines."""

from __future__ import annotations

import nnsight
import numpy as np
import pytest
import torch

from nnterp.display import plot_run_prompts
from nnterp.errors import InvalidInputError

PARIS, LONDON = 436, 434


def hand_results() -> dict[str, torch.Tensor]:
    return {
        "target": torch.tensor([[0.1, 0.2, 0.6], [0.3, 0.4, 0.8]]),
        "traps": torch.tensor([[0.5, 0.1, 0.0], [0.1, 0.1, 0.2]]),
    }


def by_name(fig) -> dict[str, object]:
    return {trace.name: trace for trace in fig.data if trace.showlegend is not False}


def test_mean_curves_and_std_band():
    fig = plot_run_prompts(hand_results(), title="targets")
    means = by_name(fig)
    assert list(means) == ["target", "traps"]
    np.testing.assert_allclose(means["target"].y, [0.2, 0.3, 0.7], rtol=1e-6)
    np.testing.assert_allclose(means["traps"].y, [0.3, 0.1, 0.1], rtol=1e-6)
    assert list(means["target"].x) == [0, 1, 2]
    band = [trace for trace in fig.data if trace.legendgroup == "target" and trace.showlegend is False]
    low, high = band
    np.testing.assert_allclose(low.y, [0.1, 0.2, 0.6], rtol=1e-6)  # mean - std (std = 0.1)
    np.testing.assert_allclose(high.y, [0.3, 0.4, 0.8], rtol=1e-6)
    assert high.fill == "tonexty" and low.fill is None
    assert len(fig.data) == 6
    assert fig.layout.yaxis.title.text == "probability"


def test_minmax_band_per_prompt_lines_and_no_band():
    fig = plot_run_prompts(hand_results(), band="minmax", show_prompts=True)
    traps = [trace for trace in fig.data if trace.legendgroup == "traps"]
    assert [trace.name for trace in traps] == [None, None, "traps prompt 0", "traps prompt 1", "traps"]
    np.testing.assert_allclose(traps[0].y, [0.1, 0.1, 0.0], rtol=1e-6)
    np.testing.assert_allclose(traps[1].y, [0.5, 0.1, 0.2], rtol=1e-6)
    np.testing.assert_allclose(traps[3].y, [0.1, 0.1, 0.2], rtol=1e-6)
    bare = plot_run_prompts(hand_results(), band=None, layer_labels=["emb", "l1", "l2"])
    assert [trace.name for trace in bare.data] == ["target", "traps"]
    assert list(bare.layout.xaxis.ticktext) == ["emb", "l1", "l2"]


def test_final_probabilities_are_bars():
    results = {"target": [0.2, 0.4], "traps": np.array([0.1, 0.1, 0.4])}
    fig = plot_run_prompts(results, show_prompts=True)
    bars = fig.data[0]
    assert bars.type == "bar" and list(bars.x) == ["target", "traps"]
    np.testing.assert_allclose(bars.y, [0.3, 0.2])
    np.testing.assert_allclose(bars.error_y.array, [0.1, np.sqrt(0.02)])
    np.testing.assert_allclose(bars.error_y.arrayminus, [0.1, np.sqrt(0.02)])
    np.testing.assert_allclose(fig.data[2].y, [0.1, 0.1, 0.4])


def test_real_target_probabilities_across_layers(llama):
    prompts = ["The capital of France is", "The capital of England is", "The capital of Spain is"]
    with llama.trace(prompts):
        per_layer = nnsight.save([])
        for layer in range(llama.num_layers):
            per_layer.append(llama.project_on_vocab(llama.layers_output[layer][:, -1]).softmax(-1))
    probs = torch.stack(per_layer, dim=1).detach()  # (prompts, layers, vocab)
    results = {"target": probs[..., PARIS], "traps": probs[..., LONDON]}
    fig = plot_run_prompts(results, band="minmax")
    means = by_name(fig)
    np.testing.assert_allclose(means["target"].y, probs[..., PARIS].double().mean(0).numpy(), rtol=1e-12)
    np.testing.assert_allclose(means["traps"].y, probs[..., LONDON].double().mean(0).numpy(), rtol=1e-12)
    assert len(means["target"].y) == llama.num_layers


def test_bad_input_is_named():
    with pytest.raises(InvalidInputError, match="'std', 'minmax' or None"):
        plot_run_prompts(hand_results(), band="sem")
    with pytest.raises(InvalidInputError, match="non-empty"):
        plot_run_prompts({})
    with pytest.raises(InvalidInputError, match="same layers"):
        plot_run_prompts({"a": torch.rand(2, 3), "b": torch.rand(2, 4)})
    with pytest.raises(InvalidInputError, match="same layers"):
        plot_run_prompts({"a": torch.rand(2, 3), "b": torch.rand(2)})


def test_png_renders(tmp_path, check_png):
    path = tmp_path / "targets.png"
    plot_run_prompts(hand_results(), show_prompts=True, width=600, height=300, file=path)
    check_png(path, 600, 300)
