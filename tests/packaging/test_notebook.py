"""The example notebook docs/examples/quickstart.ipynb runs top to bottom on the real SmolLM2
(nbclient), and its figure survives an nbconvert HTML export: the exported page draws it with
an embedded plotly.js, and the data it draws is the logit lens computed with plain transformers."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from nbclient import NotebookClient
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "docs" / "examples" / "quickstart.ipynb"
PROMPT = "The capital of France is"
K = 5


def execute(notebook: nbformat.NotebookNode, directory: Path) -> nbformat.NotebookNode:
    client = NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(directory)}}
    )
    client.execute()
    return notebook


def to_html(notebook: nbformat.NotebookNode) -> str:
    html, _ = HTMLExporter().from_notebook_node(notebook)
    return html


def _array(value):
    """A plotly JSON array: a list, or plotly's typed array {"dtype", "bdata"[, "shape"]}."""
    if isinstance(value, dict) and "bdata" in value:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = value.get("shape")
        if shape is not None:
            array = array.reshape([int(n) for n in str(shape).split(",")])
        return array
    return np.asarray(value, dtype=object)


def _skip_space(text: str, position: int) -> int:
    while text[position].isspace():
        position += 1
    return position


def plotted_traces(html: str) -> list[list[dict]]:
    """The ``data`` argument of every ``Plotly.newPlot(id, data, layout, config)`` call in ``html``."""
    decoder = json.JSONDecoder()
    found = []
    start = html.find("Plotly.newPlot(")
    while start != -1:
        position = _skip_space(html, start + len("Plotly.newPlot("))
        _, position = decoder.raw_decode(html, position)  # the div's id
        position = _skip_space(html, html.index(",", position) + 1)
        data, position = decoder.raw_decode(html, position)
        found.append(data)
        start = html.find("Plotly.newPlot(", position)
    return found


def plain_logit_lens(model_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Top-K token ids and probabilities of every layer at the last position, with plain
    transformers: forward hooks on the decoder layers, then the final norm and the unembedding."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, use_safetensors=True)
    model.eval()
    outputs = []

    def keep(module, inputs, output):
        outputs.append(output[0] if isinstance(output, tuple) else output)

    handles = [layer.register_forward_hook(keep) for layer in model.model.layers]
    try:
        with torch.no_grad():
            model(**tokenizer(PROMPT, return_tensors="pt"))
            probs = torch.stack([model.lm_head(model.model.norm(h))[0, -1].softmax(-1) for h in outputs])
    finally:
        for handle in handles:
            handle.remove()
    top = probs.topk(K, dim=-1)
    return top.indices.numpy(), top.values.double().numpy()


@pytest.mark.slow
def test_quickstart_notebook_runs_and_its_figure_is_in_the_html_export(tmp_path):
    from nnterp.default_model import default_model_path

    notebook = execute(nbformat.read(NOTEBOOK, as_version=4), tmp_path)
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert errors == []
    figure_outputs = [
        output
        for output in notebook.cells[-1].outputs
        if output.output_type == "execute_result" or output.output_type == "display_data"
    ]
    assert any("application/vnd.plotly.v1+json" in output.data for output in figure_outputs)  # Jupyter, VS Code

    html = to_html(notebook)
    assert "plotly.js v" in html  # plotly.js itself is in the page: it draws offline
    traces = plotted_traces(html)
    assert len(traces) == 1
    heatmap = traces[0][0]
    assert heatmap["type"] == "heatmap"
    ids = np.asarray(_array(heatmap["customdata"])[..., 1], dtype=np.int64)
    probabilities = np.asarray(_array(heatmap["z"]), dtype=np.float64)

    expected_ids, expected_probabilities = plain_logit_lens(default_model_path())
    assert ids.shape == expected_ids.shape == (30, K)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(probabilities, expected_probabilities, rtol=0, atol=1e-5)


SMALL_FIGURE = "from nnterp.display import plot_patching_grid\nplot_patching_grid([[0.25, -0.5], [0.75, 1.0]])"


@pytest.mark.slow
def test_without_the_renderer_the_html_export_has_no_figure_and_with_it_one(tmp_path):
    """plotly's default in a kernel writes only its JSON output, which the export drops."""
    plain = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SMALL_FIGURE)])
    fixed = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("from nnterp.display import set_notebook_renderer\nset_notebook_renderer()"),
            nbformat.v4.new_code_cell(SMALL_FIGURE),
        ]
    )
    with pytest.warns(
        UserWarning, match=r"mimetype\(s\) .*application/vnd.plotly.v1\+json.* not able to be represented"
    ):
        plain_html = to_html(execute(plain, tmp_path))
    fixed_html = to_html(execute(fixed, tmp_path))
    assert plotted_traces(plain_html) == []
    traces = plotted_traces(fixed_html)
    assert len(traces) == 1
    z = np.asarray(_array(traces[0][0]["z"]), dtype=np.float64)
    np.testing.assert_array_equal(z, [[0.25, -0.5], [0.75, 1.0]])
