"""The interventions reach core through the plugin registry and run from the CLI."""

from __future__ import annotations

import re
import warnings

import pytest
import torch

from nnterp.cli import main
from nnterp.interventions import logit_lens, patchscope_generate, patchscope_lens, repeat_prompt
from nnterp.plugins import get_registry
from nnterp.testing import tiny_model, tiny_tokenizer

PROMPT = "The capital of France is"


def test_interventions_are_registered():
    interventions = get_registry().interventions
    expected = {"logit_lens": logit_lens, "patchscope_lens": patchscope_lens, "patchscope_generate": patchscope_generate}
    for name, function in expected.items():
        registered = interventions[name]
        assert registered.function is function
        assert registered.plugin.distribution == "nnterp-interventions"
        assert registered.description and callable(registered.render)


@pytest.fixture(scope="module")
def saved_llama(tmp_path_factory):
    """A tiny Llama and its tokenizer saved to disk, and the same model wrapped in memory."""
    from nnterp import StandardizedTransformer

    directory = tmp_path_factory.mktemp("tiny-llama")
    hf_model = tiny_model("llama")
    hf_model.save_pretrained(directory)
    tiny_tokenizer().save_pretrained(directory)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = StandardizedTransformer(hf_model, tiny_tokenizer())
    return str(directory), model


def layer_lines(output: str) -> dict[int, str]:
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"^  layer (\d+): (.*)$", output, re.M)}


def expected_cells(model, probs: torch.Tensor, k: int) -> list[str]:
    values, ids = probs.topk(k)
    return [f"{model.tokenizer.decode([int(i)])!r} {float(p):.3f}" for p, i in zip(values, ids)]


@pytest.mark.parametrize("name, compute", [
    ("logit_lens", lambda model: logit_lens(model, [PROMPT])),
    ("patchscope_lens", lambda model: patchscope_lens(model, [PROMPT], repeat_prompt())),
])
def test_cli_prints_the_top_tokens_of_every_layer(saved_llama, capsys, name, compute):
    directory, model = saved_llama
    assert main(["run", name, "--model", directory, "--prompt", PROMPT, "--top-k", "3"]) == 0
    output = capsys.readouterr().out
    assert output.splitlines()[0] == repr(PROMPT)
    lines = layer_lines(output)
    probs = compute(model)[0]
    assert sorted(lines) == list(range(model.num_layers))
    for layer, line in lines.items():
        assert line.split(" | ") == expected_cells(model, probs[layer], 3)


def test_cli_runs_patchscope_generate(saved_llama, capsys):
    directory, model = saved_llama
    assert main(["run", "patchscope_generate", "--model", directory, "--prompt", PROMPT, "--prompt", "Hello"]) == 0
    output = capsys.readouterr().out
    generations = patchscope_generate(model, [PROMPT, "Hello"])
    expected = []
    for row, prompt in enumerate([PROMPT, "Hello"]):
        expected.append(repr(prompt))
        for layer, ids in generations.items():
            expected.append(f"  layer {layer}: {model.tokenizer.decode(ids[row], skip_special_tokens=True)!r}")
    assert output.splitlines() == expected
