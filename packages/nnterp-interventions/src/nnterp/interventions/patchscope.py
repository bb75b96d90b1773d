"""Patchscopes: decode a hidden state by patching it into a target prompt.

The latent of each source prompt (its last token's output of layer ``l``) replaces the
output of layer ``l`` at the target prompt's ``index_to_patch``; the target's next-token
distribution (or its greedy continuation) says what the latent encodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import nnsight
import torch

from nnterp.errors import InvalidInputError
from nnterp.inputs import require_hidden
from nnterp.interventions.lens import layer_list
from nnterp.interventions.target_prompts import TargetPromptBatch, TargetPromptLike, repeat_prompt
from nnterp.nnsight_utils import get_token_activations
from nnterp.positions import absolute_positions, traced_attention_mask

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer


def _given_latents(model: StandardizedTransformer, latents: Any, layers: list[int]) -> torch.Tensor:
    latents = torch.as_tensor(latents)
    require_hidden(latents, model.hidden_size, "latents")
    if latents.dim() != 3:
        raise InvalidInputError(
            f"latents has shape {tuple(latents.shape)}; it must be (num_sources or 1, layers, "
            f"{model.hidden_size})."
        )
    if latents.shape[1] == model.num_layers:
        return latents[:, layers]
    if latents.shape[1] == len(layers):
        return latents
    raise InvalidInputError(
        f"latents has {latents.shape[1]} layers but the model has {model.num_layers} and "
        f"{len(layers)} were asked for: give one latent per model layer or per requested layer."
    )


def _plan(
    model: StandardizedTransformer,
    source_prompts: str | list[str] | None,
    target_patch_prompts: TargetPromptLike | None,
    layers: int | Sequence[int] | None,
    latents: Any,
) -> tuple[list[int], torch.Tensor, TargetPromptBatch]:
    """The layers, the (num, layers, hidden) latents and the num target prompts of a patchscope."""
    wanted = layer_list(model, layers)
    if (source_prompts is None) == (latents is None):
        raise InvalidInputError("pass exactly one of source_prompts or latents to a patchscope.")
    if source_prompts is not None:  # and so latents is None, checked just above
        latents = get_token_activations(model, source_prompts, idx=-1, layers=wanted).transpose(0, 1)
    else:
        latents = _given_latents(model, latents, wanted)
    target = repeat_prompt() if target_patch_prompts is None else target_patch_prompts
    targets = TargetPromptBatch.auto(target, latents.shape[0])
    if latents.shape[0] == 1 and len(targets) > 1:
        latents = latents.expand(len(targets), -1, -1)
    if latents.shape[0] != len(targets):
        raise InvalidInputError(
            f"{latents.shape[0]} sources but {len(targets)} target prompts: give one target "
            "prompt for all sources, or one per source."
        )
    return wanted, latents, targets


def _patch(model: StandardizedTransformer, layer: int, latent: torch.Tensor, targets: TargetPromptBatch) -> None:
    """Inside a trace of ``targets.prompts``: put ``latent`` (num, hidden) at each index_to_patch."""
    mask = traced_attention_mask(model)
    columns = absolute_positions(mask, targets.index_to_patch[:, None], "index_to_patch")[:, 0]
    hidden = model.layers_output[layer]
    patched = hidden.clone()
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    patched[rows, columns.to(hidden.device)] = latent.to(device=hidden.device, dtype=hidden.dtype)
    model.layers_output[layer] = patched


@torch.no_grad()
def patchscope_lens(
    model: StandardizedTransformer,
    source_prompts: str | list[str] | None = None,
    target_patch_prompts: TargetPromptLike | None = None,
    layers: int | Sequence[int] | None = None,
    latents: Any = None,
) -> torch.Tensor:
    """Next-token probabilities of target prompts patched with each layer's source latent.

    For each layer ``l``: the latent is the source prompt's last-token output of layer ``l``
    (or ``latents[:, l]``); the target prompt runs with its layer-``l`` output at
    ``index_to_patch`` replaced by it.

    Args:
        model: a `StandardizedTransformer`.
        source_prompts: prompts whose last-token hidden states are decoded.
        target_patch_prompts: a `TargetPrompt` (used for every source), a list of them or a
            `TargetPromptBatch` (one per source); default `repeat_prompt()`.
        layers: layer index or indices (default all), in the order wanted.
        latents: instead of ``source_prompts``, a tensor (num_sources or 1, layers, hidden),
            with one latent per model layer or per requested layer.

    Returns:
        float32 CPU tensor (num_sources, layers, vocab) of probabilities.

    Example:
        >>> probs = patchscope_lens(model, ["The capital of France is"], repeat_prompt())
        >>> probs[0, -1].argmax()       # the token the last layer's latent decodes to
    """
    wanted, latents, targets = _plan(model, source_prompts, target_patch_prompts, layers, latents)
    per_layer = []
    for position, layer in enumerate(wanted):
        with model.trace(targets.prompts):
            _patch(model, layer, latents[:, position], targets)
            probs = nnsight.save(model.next_token_probs.float().cpu())
        per_layer.append(probs)
    return torch.stack(per_layer, dim=1)


@torch.no_grad()
def patchscope_generate(
    model: StandardizedTransformer,
    source_prompts: str | list[str] | None = None,
    target_patch_prompts: TargetPromptLike | None = None,
    layers: int | Sequence[int] | None = None,
    latents: Any = None,
    max_new_tokens: int = 20,
    **generate_kwargs: Any,
) -> dict[int, torch.Tensor]:
    """Greedy continuations of target prompts patched with each layer's source latent.

    Same patching as `patchscope_lens` (applied to the prompt's forward; the generated tokens
    see it through the cache).

    Args:
        max_new_tokens: how many tokens to generate.
        **generate_kwargs: passed to ``generate`` (default greedy: ``do_sample=False``).
        Others: as in `patchscope_lens`.

    Returns:
        ``{layer: (num_sources, new_tokens) long tensor}`` of generated token ids only (no
        prompt); a row that stops early is padded with the pad token.

    Example:
        >>> out = patchscope_generate(model, ["The capital of France is"], layers=[5], max_new_tokens=5)
        >>> model.tokenizer.batch_decode(out[5])
    """
    wanted, latents, targets = _plan(model, source_prompts, target_patch_prompts, layers, latents)
    generate_kwargs.setdefault("do_sample", False)
    generate_kwargs.setdefault("pad_token_id", model.tokenizer.pad_token_id)
    generations = {}
    for position, layer in enumerate(wanted):
        with model.generate(targets.prompts, max_new_tokens=max_new_tokens, **generate_kwargs) as tracer:
            prompt_ids = nnsight.save(model.input_ids)
            _patch(model, layer, latents[:, position], targets)
            ids = nnsight.save(tracer.result)
        generations[layer] = ids[:, prompt_ids.shape[1]:].cpu()
    return generations
