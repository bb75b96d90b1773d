"""Functional helpers over a `StandardizedTransformer` (or a plain NNsight model, whose parts
are found at the native paths of its architecture spec), and fast activation collection: nnterp 1.x's ``nnterp.nnsight_utils``, every name.

The getters mirror the accessors (``get_layer_output(model, i)`` is ``model.layers_output[i]``)
for code written in the functional style of nnterp 1.x; they are used inside a trace.

Example:
    >>> from nnterp.nnsight_utils import get_token_activations, collect_token_activations_batched
    >>> acts = get_token_activations(model, ["The capital of France is", "Hi"], idx=-1)
    >>> acts.shape                                  # (num_layers, batch, hidden)
    >>> many = collect_token_activations_batched(model, prompts, batch_size=16, layers=[3, 9])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from nnterp.progress import progress_bar

from nnterp.accessors import first_tensor, normalize_layer, replace_first
from nnterp.compat import ModuleAccessor, RenameConfig, get_rename_dict
from nnterp.errors import InvalidInputError
from nnterp.inputs import layer_indices, normalize_index, prompt_list
from nnterp.positions import absolute_positions, as_position_list
from nnterp.tracing import free_stopped_forward, single_forward_options

#: nnterp 1.x's type of traced values; in nnsight 0.8 they are real tensors.
TraceTensor = torch.Tensor

#: A function reading one layer's activations inside a trace: ``(model, layer) -> (batch, seq, dim)``.
GetModuleOutput = Callable[[Any, int], torch.Tensor]


def _standardized(model: Any) -> bool:
    from nnterp.standardized_transformer import StandardizedTransformer

    return isinstance(model, StandardizedTransformer)


def unpack_tuple(tensor_or_tuple: Any) -> Any:
    """The hidden state of a module output: the value itself, or a tuple's first element.

    Example:
        >>> unpack_tuple((hidden, cache)) is hidden
        True
    """
    return first_tensor(tensor_or_tuple)


def get_embed_tokens(model: Any) -> Any:
    """The token embedding module (envoy).

    On a plain NNsight model it is the module the architecture spec names (see `native_part`),
    ``model.model.embed_tokens`` for a class no plugin covers (nnterp 1.x's Llama naming).
    """
    if _standardized(model) or _has_child(model, "embed_tokens"):
        return model.embed_tokens
    return native_part(model, "embed_tokens")


def get_layers(model: Any) -> Any:
    """The decoder layers (envoys); on a plain NNsight model, the spec's (`native_part`)."""
    if _standardized(model):
        return model.layers
    return native_part(model, "layers")


def get_num_layers(model: Any) -> int:
    """Number of decoder layers.

    Example:
        >>> get_num_layers(model)
        30
    """
    if _standardized(model):
        return model.num_layers
    return len(get_layers(model))


def get_layer(model: Any, layer: int) -> Any:
    """The envoy of decoder layer ``layer`` (negative counts from the end)."""
    return get_layers(model)[normalize_index(layer, get_num_layers(model), "layer")]


def get_layer_input(model: Any, layer: int) -> torch.Tensor:
    """Hidden state entering ``layer``: (batch, seq, hidden). Inside a trace."""
    if _standardized(model):
        return model.layers_input[layer]
    return get_layer(model, layer).input


def get_layer_output(model: Any, layer: int) -> torch.Tensor:
    """Hidden state leaving ``layer`` (the residual stream): (batch, seq, hidden). Inside a trace.

    Example:
        >>> with model.trace("Hello"):
        ...     h = get_layer_output(model, 3).save()
    """
    if _standardized(model):
        return model.layers_output[layer]
    return unpack_tuple(get_layer(model, layer).output)


def set_layer_output(model: Any, layer: int, tensor: torch.Tensor) -> None:
    """Replace what ``layer`` returns by ``tensor`` (batch, seq, hidden), inside a trace; a
    tuple output keeps its other elements.

    Example:
        >>> with model.trace("Hello"):
        ...     set_layer_output(model, 5, get_layer_output(model, 2))    # skip layers 3-5
    """
    if _standardized(model):
        model.layers_output[layer] = tensor
        return
    envoy = get_layer(model, layer)
    envoy.output = replace_first(envoy.output, tensor)


def get_attention(model: Any, layer: int) -> Any:
    """The attention module (envoy) of ``layer``.

    Raises:
        UnavailableComponentError: the layer has no softmax attention (state-space / hybrid).
    """
    if _standardized(model):
        return model._attention(normalize_layer(model, layer))
    return native_part(model, "self_attn", layer)


def get_attention_output(model: Any, layer: int) -> torch.Tensor:
    """What ``layer``'s attention adds to the residual stream: (batch, seq, hidden). Inside a trace.

    On a `StandardizedTransformer` this is ``model.attentions_output[layer]`` (the attention
    module's output on Llama-like and GPT-2 blocks; see docs/migration.md for the families where
    it differs from the raw module output). On a plain NNsight model: the ``self_attn`` module's
    output.
    """
    if _standardized(model):
        return model.attentions_output[layer]
    return unpack_tuple(get_attention(model, layer).output)


def get_mlp(model: Any, layer: int) -> Any:
    """The MLP module (envoy) of ``layer``."""
    if _standardized(model):
        return model._mlp(normalize_layer(model, layer))
    return native_part(model, "mlp", layer)


def get_mlp_output(model: Any, layer: int) -> torch.Tensor:
    """What ``layer``'s MLP adds to the residual stream: (batch, seq, hidden). Inside a trace.

    ``model.mlps_output[layer]`` on a `StandardizedTransformer`; the ``mlp`` module's output on
    a plain NNsight model.
    """
    if _standardized(model):
        return model.mlps_output[layer]
    return unpack_tuple(get_mlp(model, layer).output)


def get_logits(model: Any) -> torch.Tensor:
    """The model's logits: (batch, seq, vocab). Inside a trace."""
    if _standardized(model):
        return model.logits
    return model.output.logits


def get_unembed_norm(model: Any) -> Any:
    """The final norm (envoy); on a plain NNsight model, the spec's (`native_part`)."""
    if _standardized(model):
        return model.ln_final
    return native_part(model, "ln_final")


def get_unembed(model: Any) -> Any:
    """The unembedding (envoy): ``lm_head``; on a plain NNsight model, the spec's (`native_part`)."""
    if _standardized(model) or _has_child(model, "lm_head"):
        return model.lm_head
    return native_part(model, "lm_head")


def get_next_token_probs(model: Any) -> torch.Tensor:
    """Next-token probabilities at the last position: (batch, vocab). Inside a trace."""
    if _standardized(model):
        return model.next_token_probs
    return get_logits(model)[:, -1, :].softmax(-1)


def project_on_vocab(model: Any, hidden_states: torch.Tensor) -> torch.Tensor:
    """Logits of a residual-stream state through the final norm and ``lm_head``: (..., vocab).

    On a `StandardizedTransformer`, also the model's own logit post-processing (soft-capping,
    scaling), so the last layer's projection equals the logits.
    """
    if _standardized(model):
        return model.project_on_vocab(hidden_states)
    return get_unembed(model)(get_unembed_norm(model)(hidden_states))


#: nnterp 1.x's paths of the standard parts (Llama naming), for a class no plugin covers.
_LLAMA_PATHS: dict[str, str | None] = {
    "layers": "model.layers",
    "ln_final": "model.norm",
    "lm_head": "lm_head",
    "embed_tokens": "model.embed_tokens",
    "self_attn": "self_attn",
    "mlp": "mlp",
}

#: Where a plain NNsight model keeps its resolved paths (in its envoy, so it travels with it).
_NATIVE_PATHS_KEY = "_nnterp_native_paths"


def native_part(model: Any, part: str, layer: int | None = None) -> Any:
    """The envoy of standard ``part`` in a plain NNsight model (no `StandardizedTransformer`),
    at the native path the architecture spec of the model's class gives (GPT-2's
    ``transformer.h``, Llama-4's ``feed_forward``); Llama's paths for a class no installed
    plugin covers, as nnterp 1.x assumed. ``layer`` picks the layer of a per-layer part
    (``self_attn``, ``mlp``).

    Raises:
        UnavailableComponentError: the model has no such part (OPT's layers have no MLP module).

    Example:
        >>> plain = NNsight(gpt2)
        >>> native_part(plain, "layers") is plain.transformer.h
        True
        >>> native_part(plain, "self_attn", 0) is plain.transformer.h[0].attn
        True
    """
    from nnterp.accessors import child_envoy
    from nnterp.errors import UnavailableComponentError

    module = model._module
    paths = model.__dict__.get(_NATIVE_PATHS_KEY)
    if paths is None:
        paths = _spec_paths(module)
        model.__dict__[_NATIVE_PATHS_KEY] = paths
    path = paths.get(part)
    if path is None:
        raise UnavailableComponentError(
            f"{type(module).__name__} has no {part} module: wrap it in StandardizedTransformer, whose "
            "accessors say where that quantity lives on this architecture."
        )
    if layer is None:
        return child_envoy(model, path)
    return child_envoy(get_layer(model, layer), path)


def _spec_paths(module: torch.nn.Module) -> dict[str, str | None]:
    from nnterp.errors import RenamingError
    from nnterp.plugins import get_registry
    from nnterp.renaming import resolve_paths

    spec = get_registry().spec_for_model(module)
    if spec is None or spec.virtual_blocks is not None:  # virtual blocks exist in nnterp's tree only
        return dict(_LLAMA_PATHS)
    try:
        return resolve_paths(module, spec)
    except RenamingError:
        return dict(_LLAMA_PATHS)


def _has_child(model: Any, name: str) -> bool:
    try:
        getattr(model, name)
    except AttributeError:
        return False
    return True


def _token_columns(attention_mask: torch.Tensor, idx: int) -> torch.Tensor:
    """Per row, the column of token ``idx`` counted over the row's real tokens (padding on
    either side, see `nnterp.positions.absolute_positions`)."""
    positions = as_position_list(idx, "idx")
    if len(positions) != 1:
        raise InvalidInputError(f"idx must be one token position (an int, -1 for the last), got {idx!r}")
    relative = torch.full((attention_mask.shape[0], 1), positions[0])
    return absolute_positions(attention_mask, relative, "idx")[:, 0]


def encode(model: Any, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
    """Tokenize ``prompts`` as one padded batch: ``input_ids`` and ``attention_mask`` (batch, seq).

    Padded on the left, or on the side a standardized model's spec pads (``padding_side``).
    """
    for prompt in prompts:
        if not prompt:
            raise InvalidInputError("a prompt is an empty string: give every prompt some text.")
    side = model.spec.padding_side if _standardized(model) else "left"
    encoding = model.tokenizer(list(prompts), return_tensors="pt", padding=True, padding_side=side)
    return {"input_ids": encoding["input_ids"], "attention_mask": encoding["attention_mask"]}


def _trace_options(model: Any, remote: bool | str | None) -> dict[str, Any]:
    from nnterp.tracing import remote_options

    return {**single_forward_options(model), **remote_options(remote)}


def _collect_batch(
    model: Any,
    encoding: dict[str, torch.Tensor],
    layers: list[int],
    idx: int,
    stop_early: bool,
    get_activations: GetModuleOutput | None = None,
    remote: bool | str | None = False,
) -> torch.Tensor:
    positions = _token_columns(encoding["attention_mask"], idx)
    rows = torch.arange(positions.shape[0])
    read = get_activations or get_layer_output
    last = max(layers)
    import nnsight  # lazily, as the trace itself does: importing this module must not load nnsight

    saved: dict[int, Any] = {}
    with torch.no_grad(), model.trace(dict(encoding), **_trace_options(model, remote)) as tracer:
        for layer in sorted(set(layers)):
            hidden = read(model, layer)
            saved[layer] = nnsight.save(hidden[rows.to(hidden.device), positions.to(hidden.device)])
            if stop_early and layer == last:
                tracer.stop()
    if stop_early:
        free_stopped_forward()
    return torch.stack([saved[layer] for layer in layers])


def _mask_in_trace(model: Any, idx: int) -> torch.Tensor | None:
    """The traced forward's attention mask, or ``None`` where columns need none (a plain
    NNsight model padding left, asked for a position counted from the end)."""
    if _standardized(model):
        from nnterp.positions import traced_attention_mask

        return traced_attention_mask(model, "get_token_activations(tracer=...)'s idx")
    if idx < 0 and getattr(model.tokenizer, "padding_side", "left") == "left":
        return None
    args, kwargs = model.inputs
    kwargs = kwargs if isinstance(kwargs, dict) else {}
    mask = kwargs.get("attention_mask")
    if isinstance(mask, torch.Tensor):
        return mask
    input_ids = kwargs.get("input_ids", args[0] if args else None)
    if not isinstance(input_ids, torch.Tensor):
        raise InvalidInputError(
            "get_token_activations(tracer=...) found neither an attention mask nor input ids in this "
            "trace's input: trace tokenized prompts (strings, or input_ids with attention_mask)."
        )
    return torch.ones_like(input_ids)


def _activations_in_trace(model: Any, layers: list[int], read: GetModuleOutput, idx: int) -> torch.Tensor:
    mask = _mask_in_trace(model, idx)
    picked: dict[int, torch.Tensor] = {}
    for layer in sorted(set(layers)):
        hidden = read(model, layer)
        if mask is None:
            picked[layer] = hidden[:, idx]
        else:
            columns = _token_columns(mask, idx).to(hidden.device)
            picked[layer] = hidden[torch.arange(columns.shape[0], device=hidden.device), columns]
    device = picked[layers[0]].device
    return torch.stack([picked[layer].to(device) for layer in layers])


def get_token_activations(
    model: Any,
    prompts: str | Sequence[str] | None = None,
    layers: int | Sequence[int] | None = None,
    get_activations: GetModuleOutput | None = None,
    remote: bool | str | None = False,
    idx: int | None = None,
    tracer: Any = None,
) -> torch.Tensor:
    """Activations at one token of each prompt, for every requested layer (nnterp 1.x's signature).

    Without ``tracer``: one forward that stops after the last requested layer (no unembedding),
    results moved to the CPU (as in nnterp 1.x), with no graph. With ``tracer`` (inside an open
    ``model.trace(...)``): the activations of that trace's forward, as values to compute with
    there (call it before reading any module when the trace has several invokes).

    Args:
        model: a `StandardizedTransformer`, or a plain NNsight model with Llama naming.
        prompts: a prompt or a list of prompts (one batch); ignored with ``tracer``.
        layers: layer indices (default all), negative allowed.
        get_activations: ``f(model, layer)`` giving (batch, seq, dim) inside a trace; default
            `get_layer_output` (the residual stream), e.g. `get_mlp_output`.
        remote: run on NDIF (``True``), or NNsight's local simulation of it (``"local"``);
            default: the model's own setting.
        idx: the token, counted over each prompt's own tokens (default ``-1``: last; ``0``: first).
        tracer: an open tracer of ``model`` to read from instead of running a forward.

    Returns:
        (num_layers, batch, dim) tensor, in the order of ``layers``.

    Raises:
        InvalidInputError: neither ``prompts`` nor ``tracer``; bad prompts or ``idx``.
        TokenPositionError: ``idx`` outside a prompt.

    Example:
        >>> acts = get_token_activations(model, ["The capital of France is"], layers=[0, 5])
        >>> acts.shape
        torch.Size([2, 1, 576])
        >>> with model.trace(["The capital of France is", "Hi"]) as tracer:
        ...     lens = model.project_on_vocab(get_token_activations(model, tracer=tracer)).save()
    """
    position = -1 if idx is None else idx
    chosen = layer_indices(get_num_layers(model), layers)
    read = get_activations or get_layer_output
    if tracer is not None:
        return _activations_in_trace(model, chosen, read, position)
    if prompts is None:
        raise InvalidInputError(
            "get_token_activations needs prompts=..., or tracer=... when called inside an open trace."
        )
    texts = prompt_list(prompts)
    return _collect_batch(model, encode(model, texts), chosen, position, True, get_activations, remote).cpu()


def collect_token_activations_batched(
    model: Any,
    prompts: Sequence[str],
    batch_size: int = 32,
    layers: int | Sequence[int] | None = None,
    get_activations: GetModuleOutput | None = None,
    remote: bool | str | None = False,
    idx: int | None = None,
    tqdm: bool | Callable[[Any], Any] | None = True,
    use_session: bool = True,
    sort_by_length: bool = True,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """`get_token_activations` over many prompts, batch by batch, holding only the requested rows.

    Prompts are grouped by token length (less padding), longest first, each forward stops
    after the last requested layer, nothing is unembedded, and results come back in the caller's order.

    Args:
        prompts: the prompts.
        batch_size: prompts per forward.
        layers, get_activations, idx: as in `get_token_activations`.
        remote: run on NDIF; with ``use_session`` (nnterp 1.x's default) all batches go in one
            NNsight session (`collect_last_token_activations_session`).
        tqdm: show a progress bar (``True``/``False``), or nnterp 1.x's form: a progress-bar
            function such as ``tqdm.tqdm`` (``None``: no bar).
        use_session: see ``remote``; no effect on local runs.
        sort_by_length: group prompts of similar length (set False to batch in the given order).
        device, dtype: where and how results are kept (default CPU, the model's dtype).

    Returns:
        (num_layers, num_prompts, dim) tensor.

    Example:
        >>> acts = collect_token_activations_batched(model, prompts, batch_size=16, layers=[3, 9, 11])
    """
    texts = prompt_list(prompts)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive int, got {batch_size!r}")
    if remote and use_session:
        return collect_last_token_activations_session(model, texts, batch_size, layers, get_activations, remote, idx)
    chosen = layer_indices(get_num_layers(model), layers)
    position = -1 if idx is None else idx
    order = list(range(len(texts)))
    if sort_by_length:
        lengths = [len(ids) for ids in model.tokenizer(texts)["input_ids"]]
        # Longest first: the first batch allocates the largest buffers and later, smaller
        # batches reuse them, so the allocator's footprint stops growing (and an input too
        # large for memory fails at once, not at the end).
        order.sort(key=lambda i: -lengths[i])
    result: torch.Tensor | None = None
    batches = range(0, len(texts), batch_size)
    for start in _progress(batches, tqdm, "collecting activations"):
        indices = order[start : start + batch_size]
        encoding = encode(model, [texts[i] for i in indices])
        activations = _collect_batch(model, encoding, chosen, position, True, get_activations, remote)
        activations = activations.to(device=device if device is not None else activations.device)
        if dtype is not None:
            activations = activations.to(dtype)
        if result is None:
            result = activations.new_empty((len(chosen), len(texts), activations.shape[-1]))
        result[:, torch.tensor(indices)] = activations
    assert result is not None
    return result


def collect_last_token_activations_session(
    model: Any,
    prompts: Sequence[str],
    batch_size: int,
    layers: int | Sequence[int] | None = None,
    get_activations: GetModuleOutput | None = None,
    remote: bool | str | None = False,
    idx: int | None = None,
) -> torch.Tensor:
    """Activations at token ``idx`` of every prompt, batch by batch in one NNsight session
    (one request on NDIF with ``remote=True``), in the given order.

    Args:
        prompts, batch_size: the prompts and how many go in one forward.
        layers, get_activations, remote, idx: as in `get_token_activations` (``idx`` default -1).

    Returns:
        (num_layers, num_prompts, dim) tensor, on the CPU.

    Example:
        >>> acts = collect_last_token_activations_session(model, prompts, batch_size=8, layers=[2])
    """
    import nnsight

    texts = prompt_list(prompts)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive int, got {batch_size!r}")
    chosen = layer_indices(get_num_layers(model), layers)
    position = -1 if idx is None else idx
    read = get_activations or get_layer_output
    encodings = [encode(model, texts[start : start + batch_size]) for start in range(0, len(texts), batch_size)]
    columns = [_token_columns(encoding["attention_mask"], position) for encoding in encodings]
    from nnterp.tracing import remote_options

    with torch.no_grad(), model.session(**remote_options(remote)):
        batches: list[Any] = []
        for encoding, cols in zip(encodings, columns):
            rows = torch.arange(cols.shape[0])
            with model.trace(dict(encoding), **single_forward_options(model)):
                picked = {}
                for layer in sorted(set(chosen)):
                    hidden = read(model, layer)
                    picked[layer] = hidden[rows.to(hidden.device), cols.to(hidden.device)].cpu()
                batches.append(nnsight.save(torch.stack([picked[layer] for layer in chosen])))
        result = nnsight.save(torch.cat(batches, dim=1))
    return result


def compute_next_token_probs(model: Any, prompt: str | Sequence[str], remote: bool | str | None = False) -> torch.Tensor:
    """Next-token probabilities after each prompt (one forward): (batch, vocab), on the CPU.

    Example:
        >>> probs = compute_next_token_probs(model, ["The capital of France is"])
        >>> probs.shape
        torch.Size([1, 49152])
    """
    import nnsight

    texts = prompt_list(prompt)
    from nnterp.tracing import remote_options

    with torch.no_grad(), model.trace(dict(encode(model, texts)), **remote_options(remote)):
        probs = nnsight.save(get_next_token_probs(model).cpu())
    return probs


def _progress(iterable: Any, enabled: bool | Callable[[Any], Any] | None, description: str) -> Any:
    if callable(enabled):
        return enabled(iterable)
    return progress_bar(iterable, desc=description, disable=not enabled)


#: 1.x re-exported these from here; they load NNsight, so only on first use.
_LAZY = {
    "StandardizedTransformer": ("nnterp.standardized_transformer", "StandardizedTransformer"),
    "LanguageModel": ("nnsight", "LanguageModel"),
    "NNsight": ("nnsight", "NNsight"),
    "Envoy": ("nnsight", "Envoy"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'nnterp.nnsight_utils' has no attribute {name!r}")
    import importlib

    module_name, attribute = _LAZY[name]
    value = getattr(importlib.import_module(module_name), attribute)
    globals()[name] = value
    return value


__all__ = [
    "GetModuleOutput",
    "ModuleAccessor",
    "RenameConfig",
    "TraceTensor",
    "collect_last_token_activations_session",
    "collect_token_activations_batched",
    "compute_next_token_probs",
    "encode",
    "get_attention",
    "get_attention_output",
    "get_embed_tokens",
    "get_layer",
    "get_layer_input",
    "get_layer_output",
    "get_layers",
    "get_logits",
    "get_mlp",
    "get_mlp_output",
    "get_next_token_probs",
    "get_num_layers",
    "get_rename_dict",
    "get_token_activations",
    "get_unembed",
    "get_unembed_norm",
    "project_on_vocab",
    "set_layer_output",
    "unpack_tuple",
]
