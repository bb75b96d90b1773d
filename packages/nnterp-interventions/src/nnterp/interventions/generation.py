"""Generation with interventions on every step: steering (`steer_generate`) and patching
(`generate_with`), each one ``model.generate`` trace with a loop bounded by ``max_new_tokens``.

A generation runs the model once per new token: step 0 reads the whole (left-padded) prompt,
each later step the one token just generated (the keys and values of earlier tokens come from
the cache, so what an intervention changed there stays changed). Positions are counted within
each prompt, as everywhere in nnterp (``0`` its first real token, ``-1`` its last).

Example:
    >>> out = steer_generate(model, "The weather today is", layers=6, steering_vector=v,
    ...                      factor=4.0, max_new_tokens=10)
    >>> out.text[0]
    ' sunny and warm'
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

import torch

from nnterp import inputs as input_checks
from nnterp.cache import Site, parse_sites, position_dim, read_site, write_site
from nnterp.errors import DroppedStatementsWarning, InvalidInputError
from nnterp.inputs import prompt_list
from nnterp.positions import absolute_positions, as_position_list, traced_attention_mask

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer

#: What `generate_with` writes at a site: a tensor (the first step, at ``token_positions``) or
#: a function ``(activation, step) -> activation`` applied at every step.
PatchValue = Union[torch.Tensor, Callable[[torch.Tensor, int], torch.Tensor]]


@dataclass(frozen=True)
class GenerationResult:
    """What a generation with interventions produced.

    Attributes:
        token_ids: (batch, prompt_length + new) as ``model.generate`` returns them: the
            left-padded prompts, then the generated tokens (padding after a prompt's end token).
        prompt_length: Columns of ``token_ids`` that hold the (padded) prompts.
        new_token_ids: Per prompt, the generated token ids, up to and including an end token.
        text: Per prompt, the generated text (special tokens left out).
    """

    token_ids: torch.Tensor
    prompt_length: int
    new_token_ids: list[list[int]]
    text: list[str]


def _positive_steps(max_new_tokens: Any) -> int:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral) or max_new_tokens < 1:
        raise InvalidInputError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    return int(max_new_tokens)


def _generate(
    model: StandardizedTransformer,
    prompts: str | Sequence[str],
    max_new_tokens: int,
    generate_kwargs: dict[str, Any],
    every_step: Callable[[int], None],
    remote: bool | str | None,
) -> GenerationResult:
    """Run ``model.generate`` on ``prompts`` calling ``every_step(step)`` inside the trace at each
    of at most ``max_new_tokens`` steps; the token ids are read in an invoke of their own, so a
    generation that ends early (an end token) still returns them."""
    batch = prompt_list(prompts, "prompts")
    from nnterp.tracing import remote_options

    options = {"do_sample": False, **generate_kwargs, "max_new_tokens": max_new_tokens, **remote_options(remote)}
    with warnings.catch_warnings():
        # The loop may outlast a generation that ends early; nothing follows it in its invoke.
        warnings.simplefilter("ignore", DroppedStatementsWarning)
        with torch.no_grad(), model.generate(**options) as tracer:
            with tracer.invoke(batch):
                for step in tracer.iter[:max_new_tokens]:
                    every_step(step)
            with tracer.invoke():
                token_ids = tracer.result.save()
    prompt_length = int(model.tokenizer(batch, padding=True, return_tensors="pt")["input_ids"].shape[1])
    eos = _end_tokens(model, options)
    new_tokens = []
    for row in token_ids[:, prompt_length:].tolist():
        kept = []
        for token in row:
            kept.append(token)
            if token in eos:
                break
        new_tokens.append(kept)
    text = [model.tokenizer.decode(tokens, skip_special_tokens=True) for tokens in new_tokens]
    return GenerationResult(token_ids, prompt_length, new_tokens, text)


def _end_tokens(model: StandardizedTransformer, options: dict[str, Any]) -> set[int]:
    given = options.get("eos_token_id", getattr(model._module.generation_config, "eos_token_id", None))
    if given is None:
        given = model.tokenizer.eos_token_id
    if given is None:
        return set()
    return {int(token) for token in (given if isinstance(given, (list, tuple)) else [given])}


def steer_generate(
    model: StandardizedTransformer,
    prompts: str | Sequence[str],
    layers: int | Sequence[int],
    steering_vector: torch.Tensor,
    factor: float = 1.0,
    token_positions: int | Sequence[int] | None = None,
    steer_new_tokens: bool = True,
    max_new_tokens: int = 20,
    remote: bool | str | None = None,
    **generate_kwargs: Any,
) -> GenerationResult:
    """Generate from ``prompts`` with ``factor * steering_vector`` added to the output of each of
    ``layers`` (the operation of `StandardizedTransformer.steer`) at every step.

    Args:
        model: the model.
        prompts: one prompt or several (left-padded into one batch).
        layers: a layer index or several.
        steering_vector: (hidden,), or broadcastable to the steered (batch, positions, hidden).
        factor: scale of the vector.
        token_positions: prompt positions steered at the first step, counted within each prompt
            (``-1``: its last token); ``None``: every prompt token.
        steer_new_tokens: also steer each generated token as the model reads it (the later
            steps); ``False`` steers the prompt only.
        max_new_tokens: at most this many tokens are generated.
        remote: run on NDIF (``True``) or NNsight's local simulation of it (``"local"``);
            default: the model's own setting.
        **generate_kwargs: passed to ``model.generate`` (greedy unless ``do_sample=True``).

    Returns:
        A `GenerationResult` (token ids and text).

    Raises:
        InvalidInputError: bad prompts, vector size, ``max_new_tokens``; NaN or inf in the vector.
        LayerIndexError: a layer out of range.
        TokenPositionError: a position outside a prompt.

    Example:
        >>> out = steer_generate(model, ["I think that", "Today"], layers=[4, 5],
        ...                      steering_vector=v, factor=2.0, max_new_tokens=8)
        >>> out.text
    """
    steps = _positive_steps(max_new_tokens)
    layer_list = input_checks.layer_indices(model.num_layers, layers)
    vector = input_checks.require_steering_vector(steering_vector, model.hidden_size, factor)
    if token_positions is not None:
        as_position_list(token_positions, "token_positions")

    def every_step(step: int) -> None:
        if step == 0:
            model.steer(layer_list, vector, factor, token_positions=token_positions)
        elif steer_new_tokens:
            model.steer(layer_list, vector, factor)

    return _generate(model, prompts, steps, generate_kwargs, every_step, remote)


def _write_at_positions(
    model: StandardizedTransformer, site: Site, value: torch.Tensor, relative: list[int] | None, mask: torch.Tensor | None
) -> None:
    current = read_site(model, site)
    dim = position_dim(site)
    moved = current.movedim(dim, 1)
    batch, seq = moved.shape[0], moved.shape[1]
    if relative is None or mask is None:
        columns = torch.arange(seq).expand(batch, -1)
    else:
        columns = absolute_positions(mask, torch.tensor(relative).expand(batch, -1), "token_positions")
    target = (batch, columns.shape[1], *moved.shape[2:])
    if value.dim() == len(target) - 1 and value.dim() >= 2 and value.shape[0] == batch:
        value = value.unsqueeze(1)  # one value per prompt, at each of its patched positions
    input_checks.require_broadcastable(value, target, f"patches[{site.key!r}]", f"{site.key} at the patched positions")
    patched = moved.clone()
    rows = torch.arange(batch)[:, None].to(current.device)
    patched[rows, columns.to(current.device)] = value.to(device=current.device, dtype=current.dtype).expand(target)
    write_site(model, site, patched.movedim(1, dim))


def generate_with(
    model: StandardizedTransformer,
    prompts: str | Sequence[str],
    patches: Mapping[str | tuple[str, int], PatchValue],
    token_positions: int | Sequence[int] | None = -1,
    max_new_tokens: int = 20,
    remote: bool | str | None = None,
    **generate_kwargs: Any,
) -> GenerationResult:
    """Generate from ``prompts`` with activations patched: patchscope-style writes into the
    prompt, or any edit of every step.

    Args:
        model: the model.
        prompts: one prompt or several (left-padded into one batch).
        patches: ``{site: value}``; a site is a standard site key (``"layers_output.3"``,
            ``("layers_output", 3)``, ``"mlps_output.-1"``). A tensor value replaces the site at
            ``token_positions`` of the prompt during the first step: (hidden,) everywhere, (batch,
            hidden) one per prompt, or anything broadcastable to (batch, positions, ...rest
            of the site). A function ``(activation, step) -> activation`` is applied at every
            step (step 0: the whole prompt; step k: the token read at step k).
        token_positions: the prompt positions tensor values are written at, counted within each
            prompt (default ``-1``: each prompt's last token); ``None``: every position.
        max_new_tokens: at most this many tokens are generated.
        remote: run on NDIF (``True``) or NNsight's local simulation of it (``"local"``);
            default: the model's own setting.
        **generate_kwargs: passed to ``model.generate`` (greedy unless ``do_sample=True``).

    Returns:
        A `GenerationResult` (token ids and text).

    Raises:
        InvalidInputError: no patches, an unknown site, a value that is neither a tensor nor a
            function, NaN or inf in a tensor, a shape that does not fit, bad ``max_new_tokens``.
        LayerIndexError: a layer out of range.
        TokenPositionError: a position outside a prompt.

    Example:
        >>> # Patchscope: the hidden state of "Paris" at layer 3 into an identity prompt.
        >>> out = generate_with(model, "cat -> cat; 1135 -> 1135; hello -> hello; ?",
        ...                     {"layers_output.3": paris_hidden}, token_positions=-1, max_new_tokens=5)
    """
    from nnterp.cache import site_key

    steps = _positive_steps(max_new_tokens)
    if not isinstance(patches, Mapping) or not patches:
        raise InvalidInputError("patches must be a non-empty {site: tensor or function} mapping, e.g. {'layers_output.3': h}")
    relative = None if token_positions is None else as_position_list(token_positions, "token_positions")
    planned: list[tuple[Site, PatchValue]] = []
    for key, value in patches.items():
        (site,) = parse_sites(model, [site_key(key, model.num_layers)])
        if isinstance(value, torch.Tensor):
            input_checks.require_finite(value, f"patches[{site.key!r}]")
        elif not callable(value):
            raise InvalidInputError(
                f"patches[{site.key!r}] must be a tensor or a function (activation, step) -> activation, "
                f"got {type(value).__name__}"
            )
        planned.append((site, value))
    planned.sort(key=lambda item: item[0])

    writes_positions = relative is not None and any(isinstance(value, torch.Tensor) for _, value in planned)

    def every_step(step: int) -> None:
        # The mask is read before any module (a trace with several invokes needs that order).
        mask = traced_attention_mask(model, "generate_with()'s token_positions") if step == 0 and writes_positions else None
        for site, value in planned:
            if isinstance(value, torch.Tensor):
                if step == 0:
                    _write_at_positions(model, site, value, relative, mask)
            else:
                write_site(model, site, value(read_site(model, site), step))

    return _generate(model, prompts, steps, generate_kwargs, every_step, remote)


__all__ = ["GenerationResult", "PatchValue", "generate_with", "steer_generate"]
