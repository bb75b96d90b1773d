"""Load-time checks that the standard tree is right, at the cost of one tiny forward.

One NNsight trace of a 4-token probe reads every accessor on the first and last layer (and a
hybrid's first attention layer) while plain PyTorch forward hooks, placed on the HF modules the
spec names, record what those modules received and returned. Each module read must have the
expected shape and equal its hooked value exactly; the *meanings* are checked by the residual
identity ``layers_input + mixers_output + mlps_output == layers_output`` (to rounding, on every
block that adds to a residual stream); and ``ln_final`` -> unembedding projection -> ``lm_head``
-> the spec's logit post-processing of the last residual state must give the logits. The same
hooks tell whether layers return tuples (`OutputStructure`). With
attention probabilities enabled, they must sum to 1 over keys and an edit of them must change
the logits (a second trace).

Any failure raises `RenamingError` naming the architecture, the check and the fix. A passed
validation is remembered by `nnterp.validation_cache`.

This is also the conformance suite's engine: `observe` reads a forward through nnterp while
plain hooks record it (here, in the same forward; `nnterp.testing.conformance`, in a plain HF
forward of its own over every layer of a padded batch), and `module_read_failures`,
`identity_failures` and `probability_failures` judge it the same way for both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from nnterp.accessors import first_tensor, replace_first
from nnterp.errors import RenamingError
from nnterp.stream_layout import to_standard

if TYPE_CHECKING:
    from nnterp.spec import Contribution
    from nnterp.standardized_transformer import StandardizedTransformer

_PROBE_TEXT = "The quick brown fox jumps over the lazy dog"
_PROBE_LENGTH = 4


@dataclass(frozen=True)
class OutputStructure:
    """Whether the HF layer module returns a tuple (hidden state first) or a bare tensor."""

    layer_returns_tuple: bool
    layer_tuple_length: int = 1

    def wrap_layer_output(self, hidden: Any) -> Any:
        """``hidden`` in the form the layer returns, for ``skip`` (other tuple slots ``None``)."""
        if not self.layer_returns_tuple:
            return hidden
        return (hidden, *([None] * (self.layer_tuple_length - 1)))


def probe_inputs(model: StandardizedTransformer, batch: int) -> dict[str, torch.Tensor]:
    """A short batch of real token ids for the validation forwards."""
    ids = model.tokenizer(_PROBE_TEXT, add_special_tokens=False)["input_ids"][:_PROBE_LENGTH]
    vocab = model.vocab_size
    ids = [i for i in ids if 0 <= i < vocab]
    if len(ids) < 2:
        ids = list(range(min(_PROBE_LENGTH, vocab)))
    device = _device(model)
    input_ids = torch.tensor([ids] * batch, device=device)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


def _device(model: StandardizedTransformer) -> torch.device:
    try:
        return model._module.get_input_embeddings().weight.device
    except (AttributeError, NotImplementedError):
        return next(model._module.parameters()).device


class _ProbeDone(Exception):
    """Raised by a hook to end a probe forward once what it needs is recorded."""


def _watched_modules(model: StandardizedTransformer, layers: list[int]) -> dict[str, torch.nn.Module]:
    hf = model._module
    watched: dict[str, torch.nn.Module] = {}
    if model.paths["embed_tokens"]:
        watched["embed"] = hf.get_submodule(model.paths["embed_tokens"])
    for index in layers:
        layer = model.layer_module(index)
        watched[f"layer{index}"] = layer
        mixer = model.layer_structure.mixers[index]
        if mixer is not None:
            watched[f"mixer{index}"] = layer.get_submodule(mixer.path)
        mlp = model.layer_structure.mlps[index]
        if mlp is not None and mlp.path is not None:
            watched[f"mlp{index}"] = layer.get_submodule(mlp.path)
    if model.paths["ln_final"]:
        watched["ln_final"] = hf.get_submodule(model.paths["ln_final"])
    watched["lm_head"] = hf.get_submodule(model.paths["lm_head"])
    return watched


def _watched_calls(model: StandardizedTransformer, layers: list[int]) -> dict[str, int]:
    """Which call of its module each watched name of a layer is (`StandardizedTransformer.layer_call`:
    a block an unrolled stack re-runs, and its sublayers, run once per block call)."""
    calls: dict[str, int] = {}
    for index in layers:
        call = model.layer_call(index)
        if call:
            calls.update({f"{part}{index}": call for part in ("layer", "mixer", "mlp")})
    return calls


def _checked_layers(model: StandardizedTransformer) -> list[int]:
    """The layers validation reads: the first and the last (and, on a hybrid, the first
    softmax-attention layer, so both kinds are checked), among the layers that run on text
    alone (not the spec's ``conditional_layers``)."""
    required = model.layer_structure.required_inputs
    running = [layer for layer in range(model.num_layers) if not required or required[layer] is None]
    layers = {running[0], running[-1]}
    attention = [layer for layer in model.layer_structure.probability_layers if layer in running]
    if attention:
        layers.add(attention[0])
    return sorted(layers)


def identity_gap(
    layer_input: torch.Tensor, contributions: list[torch.Tensor], layer_output: torch.Tensor
) -> float:
    """``max |layer_input + sum(contributions) - layer_output|`` relative to ``max |layer_output|``."""
    total = layer_input.float() + sum(c.float() for c in contributions)
    scale = float(layer_output.float().abs().max()) or 1.0
    return float((total - layer_output.float()).abs().max()) / scale


def identity_tolerance(dtype: torch.dtype) -> float:
    """The relative gap `identity_gap` may leave from rounding alone in ``dtype``."""
    return 64 * torch.finfo(dtype).eps if dtype.is_floating_point else 0.0


@contextmanager
def _recording(
    watched: dict[str, torch.nn.Module], stop_after: str | None = None, calls: dict[str, int] | None = None
) -> Iterator[dict[str, Any]]:
    """Forward hooks storing ``(first input, output)`` of each watched module's first call
    (``ln_final``: its last call; a name of ``calls``: that call, counted from 0)."""
    seen: dict[str, Any] = {}
    counts: dict[str, int] = {}
    wanted = calls or {}

    def recorder(name: str) -> Callable[[torch.nn.Module, tuple[Any, ...], dict[str, Any], Any], None]:
        def hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            # A module called twice (shared weights) keeps its first call, except the final
            # norm, which some models also apply to the embeddings before the layers, and the
            # blocks an unrolled stack re-runs, whose standard layer is one given call.
            call = counts.get(name, 0)
            counts[name] = call + 1
            if call != wanted.get(name, 0) and name != "ln_final":
                return
            first_input = args[0] if args else next(iter(kwargs.values()), None)
            # A sublayer's output is copied now: its layer may add to it in place afterwards
            # (Falcon), and nnterp reads it as returned.
            seen[name] = (first_input, _copied(output) if name.startswith(("mixer", "mlp")) else output)
            if name == stop_after:
                raise _ProbeDone

        return hook

    handles = [module.register_forward_hook(recorder(name), with_kwargs=True) for name, module in watched.items()]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def _copied(output: Any) -> Any:
    """``output`` with its hidden-state tensor cloned (the container kept)."""
    hidden = first_tensor(output)
    if not isinstance(hidden, torch.Tensor):
        return output
    return replace_first(output, hidden.clone())


def output_structure_of(layer_output: Any) -> OutputStructure:
    """The `OutputStructure` of a value a decoder layer returned."""
    if isinstance(layer_output, (tuple, list)):
        return OutputStructure(layer_returns_tuple=True, layer_tuple_length=len(layer_output))
    return OutputStructure(layer_returns_tuple=False)


def probe_output_structure(model: StandardizedTransformer) -> OutputStructure:
    """Whether ``model``'s layers return tuples, from a plain forward stopped after layer 0
    (used when validation is off)."""
    layer0 = {"layer0": model.layer_module(0)}
    with _recording(layer0, stop_after="layer0", calls={"layer0": model.layer_call(0)}) as seen, torch.no_grad():
        try:
            model._module(**probe_inputs(model, 1))
        except _ProbeDone:
            pass
    return output_structure_of(seen["layer0"][1])


def _projection_matches_logits(model: StandardizedTransformer, expected: dict[str, Any], logits: torch.Tensor) -> bool:
    """Whether ``ln_final`` then ``lm_head`` then the spec's post-processing, applied to what
    entered ``ln_final`` in the probe, gives the model's logits (what `project_on_vocab` and
    the logit lens rely on). Compared to rounding: a model may scale before ``lm_head`` what
    the spec scales after it."""
    from nnterp.unembedding import postprocess_logits

    hf = model._module
    try:
        with torch.no_grad():
            if model.paths["ln_final"]:
                state = first_tensor(hf.get_submodule(model.paths["ln_final"])(first_tensor(expected["ln_final"][0])))
            else:
                state = first_tensor(expected[f"layer{model.num_layers - 1}"][1])
            state = to_standard(model, state)
            projection = model.unembedding_projection_module()
            if projection is not None:
                state = projection(state)
            projected = postprocess_logits(hf.get_submodule(model.paths["lm_head"])(state), model.spec, hf.config)
    except (RuntimeError, TypeError, ValueError, IndexError):
        return False  # e.g. an lm_head path naming an embedding, which refuses float input
    projected = first_tensor(projected)
    if tuple(projected.shape) != tuple(logits.shape):
        return False
    projected, logits = projected.float(), logits.float()
    tolerance = 16 * torch.finfo(torch.promote_types(projected.dtype, state.dtype)).eps
    scale = float(logits.abs().max()) or 1.0
    return bool(torch.allclose(projected, logits, rtol=tolerance, atol=tolerance * scale))


def _reader(accessor: Any, index: int) -> Callable[[], Any]:
    """A deferred read of ``accessor[index]``."""
    return lambda: accessor[index]


def _read_in_order(
    module: Any,
    module_path: str,
    module_input: Any,
    contribution: Contribution,
    available: bool,
    read_contribution: Callable[[], Any],
    contributions: list[Any],
) -> tuple[Any, Any]:
    """Save a sublayer module's raw output and (when ``available``) its contribution, in the
    forward's order: a contribution read from a later module (a post-norm) comes after the raw
    output; one read from the module itself or a module inside it comes first (it may need
    the module's input).

    Returns ``(module_input, raw output)`` for the hook comparison; the contribution is
    appended to ``contributions``."""
    import nnsight

    inside = contribution.output is None or contribution.output.startswith(f"{module_path}.")
    if available and inside:
        contributions.append(nnsight.save(read_contribution()))
    raw = nnsight.save(first_tensor(module.output).clone())
    if available and not inside:
        contributions.append(nnsight.save(read_contribution()))
    return module_input, raw


def _fail(model: StandardizedTransformer, check: str) -> RenamingError:
    return RenamingError(
        f"nnterp validation failed for {type(model._module).__name__} (spec {model.spec.name!r}, "
        f"paths {model.paths}): {check}. The spec probably points at the wrong module: fix it "
        "with rename={'<native path>': '<standard name>'} or a corrected ArchitectureSpec "
        "plugin; check_renaming=False skips this check."
    )


@dataclass
class Observation:
    """One forward seen twice: through nnterp's accessors, and by plain PyTorch hooks on the
    HF modules the spec names. What both validation and the conformance suite check.

    Attributes:
        read: ``{"embed" | "layer{i}" | "mixer{i}" | "mlp{i}": (input or None, output)}`` read
            through nnterp (sublayers: their raw module outputs).
        hooked: the same keys (and ``"ln_final"``, ``"lm_head"``) from plain hooks:
            ``(first input, output)``.
        contributions: per checked layer, the contributions read (mixer, then MLP) when the
            block adds them to a residual stream.
        logits: what the traced forward returned; ``plain_logits``: what the plain forward
            returned when it ran separately (else ``None``).
        probabilities: the attention probabilities of ``probability_layer``, when read.
    """

    read: dict[str, tuple[Any, Any]]
    hooked: dict[str, tuple[Any, Any]]
    contributions: dict[int, list[Any]]
    logits: torch.Tensor
    plain_logits: torch.Tensor | None = None
    probabilities: torch.Tensor | None = None
    probability_layer: int | None = None


def observe(
    model: StandardizedTransformer,
    inputs: dict[str, torch.Tensor],
    layers: list[int],
    *,
    separate_forward: bool = False,
    probability_layer: int | None = None,
) -> Observation:
    """Run ``inputs`` through ``model`` reading the standard sites of ``layers``, with plain
    hooks on the HF modules recording the same forward (validation: one forward), or a plain
    HF forward of its own (``separate_forward``: the conformance suite's independent run, with
    position ids from the attention mask where the spec says so).

    Example:
        >>> seen = observe(model, probe_inputs(model, 1), [0, model.num_layers - 1])
        >>> module_read_failures(model, seen)
        []
    """
    import nnsight  # lazily: importing this module must not load nnsight

    structure = model.layer_structure
    read: dict[str, tuple[Any, Any]] = {}
    contributions: dict[int, list[Any]] = {}
    watched = _watched_modules(model, layers)
    calls = _watched_calls(model, layers)
    entering, leaving = (getattr(model, site) for site in model.residual_sites)
    plain_logits = None
    plain_hooks: dict[str, Any] = {}
    if separate_forward:
        forward_inputs = dict(inputs)
        mask = inputs.get("attention_mask")
        if mask is not None and not bool(mask.all()) and model.spec.position_ids_from_mask:
            forward_inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        with _recording(watched, calls=calls) as plain_hooks, torch.no_grad():
            plain_logits = model._module(**forward_inputs).logits
    probabilities = None
    recorder = contextlib.nullcontext(plain_hooks) if separate_forward else _recording(watched, calls=calls)
    with recorder as hooked:  # noqa: SIM117 - NNsight reads the trace's own block
        with torch.no_grad(), model.trace(dict(inputs)):
            if model.paths["embed_tokens"]:
                read["embed"] = (None, nnsight.save(model.token_embeddings))
            for index in layers:
                layer_in = nnsight.save(entering[index])
                parts: list[Any] = []
                mixer = structure.mixers[index]
                # A side attention (Zamba's shared block) runs before the layer's mixer.
                side_first = index == probability_layer and structure.side_attention(index) is not None
                if side_first:
                    probabilities = nnsight.save(model.attention_probabilities[index].clone())
                if mixer is not None:
                    mixer_in = nnsight.save(model.mixers_input[index])
                    if index == probability_layer and not side_first:
                        probabilities = nnsight.save(model.attention_probabilities[index].clone())
                    read[f"mixer{index}"] = _read_in_order(
                        model._mixer(index), mixer.path, mixer_in, mixer.contribution,
                        structure.mixer_unavailable(index) is None, _reader(model.mixers_output, index), parts,
                    )
                mlp = structure.mlps[index]
                mlp_in = nnsight.save(model.mlps_input[index]) if mlp is not None else None
                if mlp is not None and mlp.path is not None:
                    read[f"mlp{index}"] = _read_in_order(
                        model._mlp(index), mlp.path, mlp_in, mlp.contribution,
                        structure.mlp_unavailable(index) is None, _reader(model.mlps_output, index), parts,
                    )
                elif structure.mlp_unavailable(index) is None:
                    parts.append(nnsight.save(model.mlps_output[index]))
                read[f"layer{index}"] = (layer_in, nnsight.save(leaving[index]))
                if structure.identity_checkable(index):
                    contributions[index] = parts
            logits = nnsight.save(model.logits)
    return Observation(read, hooked, contributions, logits, plain_logits, probabilities, probability_layer)


def identical(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    """Whether two tensors hold the same values, NaN exactly where the other has NaN: a model
    may compute NaN at positions its mask leaves nothing to attend to (padding queries), in
    the plain forward as in nnterp's.

    Example:
        >>> identical(torch.tensor([float("nan"), 1.0]), torch.tensor([float("nan"), 1.0]))
        True
    """
    if torch.equal(actual, expected):
        return True
    if actual.shape != expected.shape or actual.dtype != expected.dtype or not actual.is_floating_point():
        return False
    nan = actual.isnan()
    return bool(torch.equal(nan, expected.isnan()) and torch.equal(actual.masked_fill(nan, 0), expected.masked_fill(nan, 0)))


def module_read_failures(model: StandardizedTransformer, seen: Observation) -> list[str]:
    """What nnterp read that differs from the plain hooks, or has the wrong shape."""
    failures = []
    for name in [*seen.read, "lm_head", *(["ln_final"] if model.paths["ln_final"] else [])]:
        if name not in seen.hooked:
            failures.append(f"the HF module named by the spec for {name!r} never ran in a forward")
    if failures:
        return failures
    batch, seq = seen.logits.shape[:2]
    stream_shape = (batch, seq) + ((model.num_streams,) if model.num_streams is not None else ()) + (model.hidden_size,)
    for name, (value_in, value_out) in seen.read.items():
        expected_in, expected_out = seen.hooked[name]
        # nnterp reads streams (and sublayer inputs) in the standard layout, raw sublayer outputs as returned.
        expected_in = to_standard(model, expected_in)
        expected_out = first_tensor(expected_out)
        if name.startswith(("layer", "embed")):
            expected_out = to_standard(model, expected_out)
        if name.startswith("layer") and model.num_streams is not None:
            # nnterp reads the streams as (batch, seq, streams, hidden), however the model packs them.
            expected_in, expected_out = model.streams_input.unpack(expected_in), model.streams_output.unpack(expected_out)
        if name.startswith("layer") and tuple(value_out.shape) != stream_shape:
            failures.append(f"{name} output has shape {tuple(value_out.shape)}, expected {stream_shape}")
        elif not identical(value_out, expected_out):
            failures.append(f"{name} output differs from a plain forward hook on the HF module")
        elif value_in is not None and isinstance(expected_in, torch.Tensor) and not identical(value_in, expected_in):
            failures.append(f"{name} input differs from a plain forward hook on the HF module")
    return failures


def identity_failures(model: StandardizedTransformer, seen: Observation) -> list[str]:
    """The layers where the plain hooks' ``input + contributions`` misses their ``output``
    by more than rounding (the meaning check)."""
    failures = []
    for index, parts in seen.contributions.items():
        layer_in, layer_out = seen.hooked[f"layer{index}"]
        layer_in, layer_out = to_standard(model, layer_in), to_standard(model, first_tensor(layer_out))
        gap = identity_gap(layer_in, parts, layer_out)
        if gap > identity_tolerance(layer_out.dtype):
            kind = model.layer_structure.kinds[index]
            failures.append(
                f"the residual identity layers_input + mixers_output + mlps_output == layers_output "
                f"does not hold at layer {index} ({kind}; relative gap {gap:.3g}): the spec's contribution "
                "sites are wrong. Say where each sublayer's contribution is read "
                "(attention_contribution / mlp_contribution / mixers), or post_norm=True for blocks "
                "that normalise after the residual add"
            )
    return failures


def probability_failures(model: StandardizedTransformer, probabilities: torch.Tensor, seq: int) -> list[str]:
    """What is wrong with attention probabilities read for a ``seq``-token input: shape, head
    count, rows that are not distributions (at most 1 with learned sinks)."""
    batch = probabilities.shape[0]
    heads = model.num_heads
    if probabilities.dim() != 4 or probabilities.shape[2] != seq or probabilities.shape[-1] < seq:
        return [f"attention probabilities have shape {tuple(probabilities.shape)}, expected (batch, heads, {seq}, {seq})"]
    if heads is not None and probabilities.shape[1] != heads:
        return [f"attention probabilities have {probabilities.shape[1]} heads, the config says {heads}"]
    sums = probabilities.float().sum(dim=-1)
    # Probabilities stored in half precision are each rounded: their sum is 1 to a few eps.
    tolerance = max(1e-3, 4 * torch.finfo(probabilities.dtype).eps) if probabilities.is_floating_point() else 1e-3
    if model.spec.attention_sinks:
        if not bool(((sums > 0) & (sums <= 1 + tolerance)).all()):
            return ["attention probabilities (with sinks) do not sum to at most 1 over keys"]
    elif not torch.allclose(sums, torch.ones_like(sums), atol=tolerance):
        return [f"attention probabilities do not sum to 1 over keys (batch {batch})"]
    return []


def edited_probabilities_logits(model: StandardizedTransformer, inputs: dict[str, torch.Tensor], layer: int) -> torch.Tensor:
    """The logits after removing every query's attention to the first token at ``layer`` (rows
    renormalised): editing probabilities must change what the model computes."""
    import nnsight

    with torch.no_grad(), model.trace(dict(inputs)):
        edited = model.attention_probabilities[layer].clone()
        edited[:, :, 1:, 0] = 0
        edited = edited / edited.sum(dim=-1, keepdim=True)
        model.attention_probabilities[layer] = edited
        logits = nnsight.save(model.logits)
    return logits


def validate(model: StandardizedTransformer) -> OutputStructure:
    """Check the standard tree, the accessors and their meanings in one traced probe forward.

    Returns:
        The layers' `OutputStructure`, read from the same forward.

    Raises:
        RenamingError: a part is missing, a module read has the wrong shape or differs from
            the hooked HF module, the residual identity fails, the unembedding chain does not
            give the logits, or attention probabilities are not distributions / edits do nothing.
    """
    inputs = probe_inputs(model, 1)
    with_probs = model.attention_probabilities_enabled
    probability_layers = model.layer_structure.probability_layers
    probe_layer = probability_layers[0] if probability_layers else 0
    try:
        seen = observe(model, inputs, _checked_layers(model), probability_layer=probe_layer if with_probs else None)
        # Edited in a forward of its own: an edit in one row can change another row's
        # numerics (mixture-of-experts layers route the whole batch's tokens together).
        edited_logits = edited_probabilities_logits(model, inputs, probe_layer) if with_probs else None
    except RenamingError:
        raise
    except Exception as error:
        raise _fail(model, f"reading the standard accessors raised {error!r}") from error
    failures = module_read_failures(model, seen) or identity_failures(model, seen)
    if not failures and not _projection_matches_logits(model, seen.hooked, seen.logits):
        failures = [
            "ln_final -> lm_head -> logits_postprocess of the last residual state does not give the "
            "model's logits (the spec's ln_final or lm_head path, or its logits_postprocess, is wrong)"
        ]
    if not failures and seen.probabilities is not None:
        failures = probability_failures(model, seen.probabilities, inputs["input_ids"].shape[1])
        if not failures and edited_logits is not None and torch.equal(edited_logits, seen.logits):
            failures = ["editing the attention probabilities did not change the logits"]
    if failures:
        raise _fail(model, failures[0])
    return output_structure_of(seen.hooked["layer0"][1])
