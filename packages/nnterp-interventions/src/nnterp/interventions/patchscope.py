"""Patchscopes: decode a hidden state by patching it into a target prompt.

The latent of each source prompt (its last token's output of layer ``l``) replaces the
output of layer ``l`` at the target prompt's ``index_to_patch``; the target's next-token
distribution (or its greedy continuation) says what the latent encodes.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import nnsight
import torch

from nnterp.cache import position_columns, select_positions
from nnterp.errors import InvalidInputError
from nnterp.inputs import prompt_list, require_hidden
from nnterp.interventions.lens import layer_list
from nnterp.interventions.target_prompts import TargetPromptBatch, TargetPromptLike, repeat_prompt
from nnterp.nnsight_utils import get_token_activations
from nnterp.positions import absolute_positions, traced_attention_mask
from nnterp.prompt_utils import remote_option
from nnterp.tracing import free_stopped_forward, single_forward_options

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer


def _given_latents(model: StandardizedTransformer, latents: Any, layers: list[int]) -> torch.Tensor:
    """User latents as (len(layers), num_sources, hidden), the layout `get_token_activations` returns."""
    latents = torch.as_tensor(latents)
    require_hidden(latents, model.hidden_size, "latents")
    if latents.dim() != 3:
        raise InvalidInputError(
            f"latents has shape {tuple(latents.shape)}; it must be (num_layers, num_sources, "
            f"{model.hidden_size}), the layout get_token_activations returns."
        )
    if latents.shape[0] == model.num_layers:
        return latents[layers]
    if latents.shape[0] == len(layers):
        return latents
    if latents.shape[1] in (model.num_layers, len(layers)):
        raise InvalidInputError(
            f"latents has shape {tuple(latents.shape)}, which reads as (num_sources, num_layers, "
            "hidden); patchscopes take (num_layers, num_sources, hidden), the layout "
            "get_token_activations returns: pass latents.transpose(0, 1)."
        )
    raise InvalidInputError(
        f"latents has {latents.shape[0]} layers (its first dimension) but the model has "
        f"{model.num_layers} and {len(layers)} were asked for: give one latent per model layer or "
        "per requested layer, as (num_layers, num_sources, hidden)."
    )


def _warn_if_padding_shifts(
    model: StandardizedTransformer, prompts: list[str], indices: torch.Tensor, name: str, stacklevel: int = 3
) -> None:
    """Warn when a non-negative position of a batch of prompts of different lengths means
    another token than it did in nnterp 1.x (which counted columns of the left-padded batch)."""
    if not bool((indices >= 0).any()) or len(set(prompts)) < 2:
        return
    lengths = {len(ids) for ids in model.tokenizer(prompts)["input_ids"]}
    if len(lengths) > 1:
        warnings.warn(
            f"{name} counts tokens within each prompt since nnterp 2.0 (0: the prompt's first token), "
            "while nnterp 1.x counted columns of the left-padded batch; these prompts have different "
            "lengths, so a non-negative position now points at a different column than in 1.x. "
            "Negative positions mean the same in both.",
            UserWarning,
            stacklevel=stacklevel,
        )


def _plan(
    model: StandardizedTransformer,
    source_prompts: str | list[str] | None,
    target_patch_prompts: TargetPromptLike | None,
    layers: int | Sequence[int] | None,
    latents: Any,
    remote: bool | str | None = False,
) -> tuple[list[int], torch.Tensor, TargetPromptBatch]:
    """The layers, the (layers, num, hidden) latents and the num target prompts of a patchscope."""
    wanted = layer_list(model, layers)
    if (source_prompts is None) == (latents is None):
        raise InvalidInputError("pass exactly one of source_prompts or latents to a patchscope.")
    if source_prompts is not None:  # and so latents is None, checked just above
        latents = get_token_activations(model, source_prompts, idx=-1, layers=wanted, remote=remote)
    else:
        latents = _given_latents(model, latents, wanted)
    target = repeat_prompt() if target_patch_prompts is None else target_patch_prompts
    targets = TargetPromptBatch.auto(target, latents.shape[1])
    if latents.shape[1] == 1 and len(targets) > 1:
        latents = latents.expand(-1, len(targets), -1)
    if latents.shape[1] != len(targets):
        raise InvalidInputError(
            f"{latents.shape[1]} sources but {len(targets)} target prompts: give one target "
            "prompt for all sources, or one per source."
        )
    _warn_if_padding_shifts(model, targets.prompts, targets.index_to_patch, "index_to_patch", stacklevel=5)
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
    remote: bool | str | None = False,
    *,
    layer_to_patch: int | Sequence[int] | None = None,
) -> torch.Tensor:
    """Next-token probabilities of target prompts patched with each layer's source latent.

    For each layer ``l``: the latent is the source prompt's last-token output of layer ``l``
    (or ``latents[l]``); the target prompt runs with its layer-``l`` output at
    ``index_to_patch`` replaced by it.

    Args:
        model: a `StandardizedTransformer`.
        source_prompts: prompts whose last-token hidden states are decoded.
        target_patch_prompts: a `TargetPrompt` (used for every source), a list of them or a
            `TargetPromptBatch` (one per source); default `repeat_prompt()`.
        layers: layer index or indices (default all), in the order wanted.
        latents: instead of ``source_prompts``, a tensor (num_layers, num_sources or 1, hidden),
            the layout `get_token_activations` returns (as in nnterp 1.x), with one latent per
            model layer (``latents[l]`` is used for layer ``l``) or per requested layer (in
            the order of ``layers``).
        remote: run the traces on NDIF (``True``) or NNsight's local simulation of it
            (``"local"``); default: the model's own setting.
        layer_to_patch: the name nnterp 1.x's README used for ``layers`` (deprecated).

    Returns:
        float32 CPU tensor (num_sources, layers, vocab) of probabilities.

    Example:
        >>> probs = patchscope_lens(model, ["The capital of France is"], repeat_prompt())
        >>> probs[0, -1].argmax()       # the token the last layer's latent decodes to
        >>> latents = get_token_activations(model, ["The capital of France is"])  # (layers, 1, hidden)
        >>> same = patchscope_lens(model, target_patch_prompts=repeat_prompt(), latents=latents)
    """
    layers = _renamed(layers, layer_to_patch, "layer_to_patch", "layers", function="patchscope_lens")
    wanted, latents, targets = _plan(model, source_prompts, target_patch_prompts, layers, latents, remote)
    per_layer = []
    for position, layer in enumerate(wanted):
        with model.trace(targets.prompts, **remote_option(remote)):
            _patch(model, layer, latents[position], targets)
            probs = nnsight.save(model.next_token_probs.float().cpu())
        per_layer.append(probs)
    return torch.stack(per_layer, dim=1)


def _renamed(
    value: Any, old: Any, old_name: str, new_name: str, unset: Any = None, function: str = "patchscope_generate"
) -> Any:
    """``value``, or the 1.x keyword ``old`` it replaces (with a DeprecationWarning)."""
    if old is None:
        return value
    if value is not unset:
        raise InvalidInputError(f"pass {new_name}= only: {old_name}= is its nnterp 1.x name.")
    warnings.warn(
        f"{function}'s {old_name}= is deprecated: use {new_name}=.",
        DeprecationWarning,
        stacklevel=4,
    )
    return old


@torch.no_grad()
def patchscope_generate(
    model: StandardizedTransformer,
    source_prompts: str | list[str] | None = None,
    target_patch_prompts: TargetPromptLike | None = None,
    max_new_tokens: int | None = None,
    layers: int | Sequence[int] | None = None,
    remote: bool | str | None = False,
    max_batch_size: int = 32,
    *,
    latents: Any = None,
    prompts: str | list[str] | None = None,
    target_patch_prompt: TargetPromptLike | None = None,
    max_length: int | None = None,
    **generate_kwargs: Any,
) -> dict[int, torch.Tensor]:
    """Greedy continuations of target prompts patched with each layer's source latent.

    Same patching as `patchscope_lens` (applied to the prompt's forward; the generated tokens
    see it through the cache). The positional order is nnterp 1.x's.

    Args:
        max_new_tokens: how many tokens to generate (default 50, as 1.x's ``max_length``).
        remote: run on NDIF (``True``) or NNsight's local simulation of it (``"local"``);
            default: the model's own setting.
        max_batch_size: kept from nnterp 1.x, which packed several layers into one generation;
            here each layer is one generation over all prompts, so it only sets when a warning
            about a large batch is given.
        prompts, target_patch_prompt, max_length: nnterp 1.x's names of ``source_prompts``,
            ``target_patch_prompts`` and ``max_new_tokens`` (deprecated; they warn).
        **generate_kwargs: passed to ``generate`` (default greedy: ``do_sample=False``).
        Others: as in `patchscope_lens`.

    Returns:
        ``{layer: (num_sources, prompt_tokens + new_tokens) long tensor}``, as in nnterp 1.x:
        the (left-padded) target prompt's ids followed by the generated ones; a row that stops
        early is padded with the pad token. ``ids[:, -max_new_tokens:]`` are the new tokens
        when no row stops early.

    Warns:
        DeprecationWarning: a 1.x keyword name was used.

    Example:
        >>> out = patchscope_generate(model, ["The capital of France is"], repeat_prompt(), 5, layers=[5])
        >>> model.tokenizer.batch_decode(out[5][:, -5:])
    """
    source_prompts = _renamed(source_prompts, prompts, "prompts", "source_prompts")
    target_patch_prompts = _renamed(target_patch_prompts, target_patch_prompt, "target_patch_prompt", "target_patch_prompts")
    max_new_tokens = _renamed(max_new_tokens, max_length, "max_length", "max_new_tokens")
    max_new_tokens = 50 if max_new_tokens is None else max_new_tokens
    wanted, latents, targets = _plan(model, source_prompts, target_patch_prompts, layers, latents, remote)
    if len(targets) > max_batch_size:
        warnings.warn(
            f"{len(targets)} prompts exceed max_batch_size={max_batch_size}; each generation runs "
            "them in one batch, which may run out of memory.",
            UserWarning,
            stacklevel=3,
        )
    generate_kwargs.setdefault("do_sample", False)
    generate_kwargs.setdefault("pad_token_id", model.tokenizer.pad_token_id)
    generate_kwargs.update(remote_option(remote))
    generations = {}
    for position, layer in enumerate(wanted):
        with model.generate(targets.prompts, max_new_tokens=max_new_tokens, **generate_kwargs) as tracer:
            _patch(model, layer, latents[position], targets)
            ids = nnsight.save(tracer.result)
        generations[layer] = ids.cpu()
    return generations


@torch.no_grad()
def patch_object_attn_lens(
    nn_model: StandardizedTransformer,
    source_prompts: str | list[str],
    target_prompts: str | list[str],
    attn_idx_patch: int,
    num_patches: int = 5,
) -> torch.Tensor:
    """nnterp 1.x's object lens: patch attention inputs at one target token with a source's.

    For each layer ``l``, the target prompts run with the input of the attention of layers
    ``l .. l + num_patches - 1`` at position ``attn_idx_patch`` replaced by that layer's
    attention input at each source prompt's last token; the result is the target's
    next-token distribution. Only what the attention reads changes there: the residual
    stream itself is untouched at those layers.

    Args:
        nn_model: a `StandardizedTransformer`.
        source_prompts: the prompts whose last token is read (one per target, or one for all).
        target_prompts: the prompts whose next token is predicted.
        attn_idx_patch: the target position patched, counted within each prompt.
        num_patches: how many consecutive layers are patched from each starting layer.

    Returns:
        float32 CPU tensor (num_target_prompts, num_layers, vocab) of probabilities.

    Example:
        >>> probs = patch_object_attn_lens(model, ["A cat"], ["The animal is"], attn_idx_patch=1)
        >>> probs.shape                      # (1, model.num_layers, vocab)
    """
    model = nn_model
    sources = prompt_list(source_prompts, "source_prompts")
    targets = prompt_list(target_prompts, "target_prompts")
    if len(sources) not in (1, len(targets)):
        raise InvalidInputError(
            f"{len(sources)} source prompts but {len(targets)} target prompts: give one source "
            "prompt for all targets, or one per target."
        )
    if isinstance(num_patches, bool) or not isinstance(num_patches, int) or num_patches < 1:
        raise InvalidInputError(f"num_patches must be a positive int, got {num_patches!r}")
    num_layers = model.num_layers
    with model.trace(sources, **single_forward_options(model)) as tracer:
        last = position_columns(traced_attention_mask(model), -1)
        read = [select_positions(model.attentions_input[layer], last, 1, True) for layer in range(num_layers)]
        source_inputs = nnsight.save(torch.stack(read))
        tracer.stop()
    free_stopped_forward()
    index = torch.tensor([[attn_idx_patch]]).expand(len(targets), 1)
    _warn_if_padding_shifts(model, targets, index[:, 0], "attn_idx_patch", stacklevel=4)
    per_layer = []
    for layer in range(num_layers):
        with model.trace(targets):
            mask = traced_attention_mask(model)
            columns = absolute_positions(mask, index, "attn_idx_patch")[:, 0]
            for patched_layer in range(layer, min(num_layers, layer + num_patches)):
                current = model.attentions_input[patched_layer]
                patched = current.clone()
                rows = torch.arange(current.shape[0], device=current.device)
                value = source_inputs[patched_layer].to(device=current.device, dtype=current.dtype)
                patched[rows, columns.to(current.device)] = value
                model.attentions_input[patched_layer] = patched
            probs = nnsight.save(model.next_token_probs.float().cpu())
        per_layer.append(probs)
    return torch.stack(per_layer, dim=1)
