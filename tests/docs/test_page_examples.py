"""The runnable examples of the docs' guide pages run as written, on tiny Llama and GPT-2.

Each ```python block of a page is executed in one namespace per page (blocks may use names an
earlier block made) holding ``model``, ``clean``, ``corrupted`` and ``target``, as the pages say.
What the examples compute is tested against hand computations in tests/research; here they must
run and give values of the documented shapes."""

from __future__ import annotations

import linecache
import re
from pathlib import Path

import nnterp
import pytest
import torch
from nnterp.testing import tiny_model, tiny_tokenizer

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = ["transformerlens.md"]


def _blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.DOTALL)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("page", PAGES)
def test_page_examples_run(page, kind):
    model = nnterp.StandardizedTransformer(tiny_model(kind), tiny_tokenizer(), enable_attention_probs=True)
    namespace = {"model": model, "clean": ["The cat sat on the mat"], "corrupted": ["The dog sat on the mat"], "target": 5}
    blocks = _blocks(page)
    assert blocks, f"{page} has no python examples"
    for number, block in enumerate(blocks):
        # NNsight reads a trace's `with` body back from its source: register each block's.
        filename = f"<{page} example {number}>"
        linecache.cache[filename] = (len(block), None, block.splitlines(keepends=True), filename)
        exec(compile(block, filename, "exec"), namespace)  # noqa: S102 - the docs' own examples
    layers = model.num_layers
    assert namespace["stacked"].shape[0] == layers
    assert namespace["grid"].shape[0] == layers
    assert namespace["stack"].shape[0] == layers + 1
    torch.testing.assert_close(namespace["dla"].contributions.sum(-1), namespace["dla"].total, rtol=1e-4, atol=1e-4)
    assert namespace["features"].shape[-1] == 4 * model.hidden_size
    assert namespace["feature_grid"].shape == (4, namespace["features"].shape[1])
    dla = namespace["feature_dla"]
    parts = dla.contributions.sum(-1) + dla.error + dla.decoder_bias
    torch.testing.assert_close(parts, dla.site_total, rtol=1e-4, atol=1e-4)
