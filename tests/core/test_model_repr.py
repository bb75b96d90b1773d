"""``repr(model)``: the standard tree once, each standard name with the HF path it stands for and
that module's class, checked against the HF model's own modules."""

from __future__ import annotations

import re

import nnterp
import pytest
from nnterp.testing import tiny_model, tiny_tokenizer


def _rows(text):
    """(standard name, path, description) of each indented row."""
    found = []
    for line in text.splitlines()[1:-1]:
        name, path, description = re.split(r"\s{3,}", line.strip(), maxsplit=2)
        found.append((name, path, description))
    return found


@pytest.mark.parametrize("kind", ["llama", "gpt2", "jamba"])
def test_repr_lists_the_standard_tree_once_with_the_hf_modules(kind):
    hf_model = tiny_model(kind)
    model = nnterp.StandardizedTransformer(hf_model, tiny_tokenizer())
    text = repr(model)
    lines = text.splitlines()
    assert lines[0].startswith(f"StandardizedTransformer({type(hf_model).__name__}, ")
    assert lines[-1] == "The HuggingFace module tree: print(model._module)"
    assert len(lines) < 20 and text.count("Linear(") <= 1  # no HF tree, no alias listing
    rows = _rows(text)
    by_name = {name: (path, description) for name, path, description in rows if not name.startswith("layers")}
    for name in ("embed_tokens", "ln_final", "lm_head"):
        path, description = by_name[name]
        assert description == repr(hf_model.get_submodule(path)).splitlines()[0]
    layers_path = next(path for name, path, _ in rows if name.startswith("layers"))
    layers = hf_model.get_submodule(layers_path)
    assert f": {len(layers)} layers, hidden {hf_model.get_input_embeddings().embedding_dim}" in lines[0]
    covered = []
    current = None
    for name, path, description in rows:
        if name.startswith("layers["):
            span = name[len("layers["):-1]
            first, _, last = span.partition("-")
            current = range(int(first), int(last or first) + 1)
            covered.extend(current)
            assert {type(layers[i]).__name__ for i in current} == {description}
        elif name in ("self_attn", "mixer", "mlp") and path != "-":
            classes = {type(layers[i].get_submodule(path)).__name__ for i in current}
            assert classes == {description.split(" ")[0]}
    assert covered == list(range(len(layers)))
