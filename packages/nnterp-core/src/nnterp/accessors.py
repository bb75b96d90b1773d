"""Indexable views over per-layer activations, used inside ``model.trace(...)``.

``model.layers_output[3]`` reads the hidden state a layer returns, and
``model.layers_output[3] = h`` replaces it, whether the HF module returns a tensor or a tuple
whose first element is the hidden state: the tuple is rebuilt around the new tensor.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Callable

import torch

from nnterp.compat import LegacyProbabilityMethods
from nnterp.errors import InvalidInputError, UnavailableComponentError
from nnterp.inputs import nnsight_error, normalize_index
from nnterp.nnsight_seams import run_state
from nnterp.stream_layout import from_standard, to_standard

if TYPE_CHECKING:
    from nnterp.spec import Contribution
    from nnterp.standardized_transformer import StandardizedTransformer


#: A site's gradient source: the tensor the forward uses, and the function turning its gradient
#: into the site's (see `LayerAccessor.gradient_source`).
GradientSource = tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]


def _outside_trace_checked(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` with nnsight's "outside of interleaving" error (an accessor used outside
    ``model.trace``) re-raised as nnterp's `TraceError`, which says the fix."""

    @functools.wraps(method)
    def checked(self: Any, *args: Any) -> Any:
        try:
            return method(self, *args)
        except ValueError as error:
            converted = nnsight_error(error)
            if converted is None:
                raise
            raise converted from error

    return checked


def first_tensor(value: Any) -> Any:
    """The hidden-state tensor of a module output: the value itself, or its first element."""
    if isinstance(value, (tuple, list)):
        return value[0]
    return value


def replace_first(original: Any, value: torch.Tensor) -> Any:
    """``original`` with its hidden state replaced by ``value`` (same container type)."""
    if isinstance(original, tuple):
        return (value, *original[1:])
    if isinstance(original, list):
        return [value, *original[1:]]
    return value


def normalize_layer(model: StandardizedTransformer, layer: int) -> int:
    """``layer`` as a non-negative index, Python-style negative indices allowed.

    Raises:
        LayerIndexError: out of ``range(-num_layers, num_layers)``.
        UnavailableComponentError: inside a run that skips the layer (the spec's
            ``conditional_layers``, e.g. Mllama's cross-attention layers on text-only input).
    """
    index = normalize_index(layer, model.num_layers, "layer")
    structure = getattr(model, "layer_structure", None)
    if structure is not None and structure.required_inputs:
        why = structure.skipped_reason(index, model.run_input_names())
        if why is not None:
            raise UnavailableComponentError(f"{model.spec.name}: {why}.")
    return index


class _PerLayerView:
    """What every per-layer accessor shares: its length, iteration in layer order, repr."""

    _model: StandardizedTransformer
    description: str

    def __getitem__(self, layer: int) -> torch.Tensor:
        raise NotImplementedError

    def __len__(self) -> int:
        return self._model.num_layers

    def __iter__(self) -> Iterator[torch.Tensor]:
        for layer in range(len(self)):
            yield self[layer]

    def __repr__(self) -> str:
        return f"<{self.description} of {self._model.num_layers} layers>"


class LayerAccessor(_PerLayerView):
    """``accessor[i]`` reads, ``accessor[i] = value`` writes one activation of layer ``i``.

    Args:
        model: The `StandardizedTransformer`.
        module_of: ``module_of(i)`` gives the envoy whose input or output is accessed.
        io: ``"input"`` (the module's first argument) or ``"output"``.
        description: What the values are, for ``repr`` and errors.
        tokens_flattened: ``tokens_flattened(i)`` tells whether layer i's module receives its tokens
            flattened, (batch * seq, hidden) (OPT's feed-forward): reads give (batch, seq, hidden).

    Example:
        >>> with model.trace("Hello"):
        ...     h = model.layers_output[2].save()          # (batch, seq, hidden)
        ...     model.layers_output[2] = h * 0             # ablate
    """

    def __init__(
        self,
        model: StandardizedTransformer,
        module_of: Callable[[int], Any],
        io: str,
        description: str,
        tokens_flattened: Callable[[int], bool] = lambda layer: False,
        site: str | None = None,
    ) -> None:
        self._model = model
        self._module_of = module_of
        self._io = io
        self.description = description
        self._tokens_flattened = tokens_flattened
        self._site = site

    def _refuse_declared(self) -> None:
        """Raise when the spec declares this site unavailable (``unavailable_sites``)."""
        declared = self._model.spec.unavailable_sites.get(self._site) if self._site else None
        if declared is not None:
            raise UnavailableComponentError(f"{self._site} of {self._model.spec.name}: {declared}.")

    def module(self, layer: int) -> Any:
        """The envoy read or written for ``layer``."""
        return self._module_of(normalize_layer(self._model, layer))

    @_outside_trace_checked
    def __getitem__(self, layer: int) -> torch.Tensor:
        self._refuse_declared()
        layer = normalize_layer(self._model, layer)
        envoy = self._module_of(layer)
        value = envoy.input if self._io == "input" else first_tensor(envoy.output)
        if self._tokens_flattened(layer):
            value = unflatten_tokens(value, token_shape(self._model, value))
        return to_standard(self._model, value)

    @_outside_trace_checked
    def __setitem__(self, layer: int, value: torch.Tensor) -> None:
        self._refuse_declared()
        layer = normalize_layer(self._model, layer)
        envoy = self._module_of(layer)
        flattened = self._tokens_flattened(layer)
        if self._io == "input":
            current = envoy.input
            value = from_standard(self._model, current, value)
            envoy.input = value.reshape(current.shape) if flattened else value
        else:
            current = envoy.output
            value = from_standard(self._model, first_tensor(current), value)
            if flattened:
                value = value.reshape(first_tensor(current).shape)
            envoy.output = replace_first(current, value)

    def gradient_source(self, layer: int) -> GradientSource:
        """Inside a trace: the tensor the forward goes on with at this site of layer ``layer``
        (the module's input, or its hidden-state output, as the model holds it), and the function
        turning that tensor's gradient into the site's gradient, (batch, seq, ...) as the site
        reads. The site's own value may be a view the forward never uses (a transposed or
        prefixed stream, flattened streams), whose gradient would never arrive.

        Example:
            >>> with model.trace("Hello"), ...:
            ...     raw, view = model.layers_output.gradient_source(2)   # view(raw.grad): (1, seq, hidden)
        """
        model = self._model
        self._refuse_declared()
        layer = normalize_layer(model, layer)
        envoy = self._module_of(layer)
        raw = envoy.input if self._io == "input" else first_tensor(envoy.output)
        return raw, site_view(model, raw, self._tokens_flattened(layer))


class StreamsAccessor(LayerAccessor):
    """``accessor[i]``: the parallel residual streams entering or leaving block ``i``,
    (batch, seq, streams, hidden), on models whose spec sets ``residual_streams``
    (hyper-connections); elsewhere every read raises `UnavailableComponentError`.

    Example:
        >>> with model.trace("Hello"):                          # DeepSeek-V4
        ...     streams = model.streams_output[2].save()         # (1, seq, hc_mult, hidden)
    """

    def unavailable(self, layer: int) -> str | None:
        """Why the model has no streams site (one residual stream), or ``None``."""
        declared = self._model.spec.unavailable_sites.get(self._site) if self._site else None
        if declared is not None:
            return declared
        if self._model.spec.residual_streams is None:
            return "the model has one residual stream: read layers_input/layers_output"
        return None

    def _refuse_declared(self) -> None:
        why = self.unavailable(0)
        if why is not None:
            raise UnavailableComponentError(f"{self._site} of {self._model.spec.name}: {why}.")

    def unpack(self, raw: Any) -> Any:
        """The (batch, seq, streams, hidden) view of a block's input or output ``raw`` as the
        model holds its streams (the spec's ``streams_packing``: stacked as is, flattened
        (batch, seq, streams * hidden) unflattened). A view: it shares ``raw``'s memory.
        Non-tensors pass through."""
        if not isinstance(raw, torch.Tensor) or self._model.spec.streams_packing != "flattened":
            return raw
        return raw.unflatten(-1, (self._streams(), -1))

    def pack(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` (..., streams, hidden) packed the model's way (the inverse of `unpack`):
        what a block receives or returns, or its final collapse reads."""
        if self._model.spec.streams_packing == "flattened":
            return value.flatten(-2)
        return value

    def _streams(self) -> int:
        streams = self._model.num_streams
        if streams is None:
            raise UnavailableComponentError(
                f"{self._site} of {self._model.spec.name}: the model has one residual stream: read layers_input/layers_output."
            )
        return streams

    @_outside_trace_checked
    def __getitem__(self, layer: int) -> torch.Tensor:
        return self.unpack(super().__getitem__(layer))

    def gradient_source(self, layer: int) -> GradientSource:
        """`LayerAccessor.gradient_source`, the gradient viewed as (batch, seq, streams, hidden)."""
        raw, view = super().gradient_source(layer)
        return raw, lambda gradient: self.unpack(view(gradient))

    @_outside_trace_checked
    def __setitem__(self, layer: int, value: torch.Tensor) -> None:
        self._refuse_declared()
        streams = (self._streams(), self._model.hidden_size)
        if not isinstance(value, torch.Tensor) or value.dim() < 3 or tuple(value.shape[-2:]) != streams:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise InvalidInputError(
                f"{self._site}[{layer}] takes (batch, seq, streams, hidden) = (..., {streams[0]}, {streams[1]}) "
                f"streams, got {shape}: assign a tensor shaped like what {self._site}[{layer}] reads"
            )
        super().__setitem__(layer, self.pack(value))


def child_envoy(envoy: Any, path: str) -> Any:
    """The envoy at dotted ``path`` below ``envoy`` (``"attention.dense"``).

    A submodule whose name is also an envoy attribute (BERT's ``output``) is reached under
    the prefixed name NNsight mounts it at, not as the envoy's ``.output`` value."""
    from nnsight.intervention.envoy import Envoy

    for name in path.split("."):
        shadowed = f"{Envoy.OVERLOAD_PREFIX}{name}"
        envoy = envoy.__dict__[shadowed] if isinstance(envoy.__dict__.get(shadowed), Envoy) else getattr(envoy, name)
    return envoy


def token_shape(model: StandardizedTransformer, module_input: torch.Tensor) -> tuple[int, ...]:
    """The (batch, seq) a module's possibly flattened (batch * seq, ...) input stands for: the
    traced batch's, when its token count matches, else the input's own leading dimensions."""
    mask = model.batch_attention_mask()
    if module_input.dim() == 2 and mask is not None and mask.numel() == module_input.shape[0]:
        return tuple(mask.shape)
    return tuple(module_input.shape[:-1])


def unflatten_tokens(value: torch.Tensor, tokens: tuple[int, ...]) -> torch.Tensor:
    """``value`` (tokens..., width) as ``(*tokens, width)``."""
    return value.reshape(*tokens, value.shape[-1])


def site_view(
    model: StandardizedTransformer, raw: torch.Tensor, flattened: bool, divisor: float | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function turning a tensor shaped like ``raw`` (as a module holds it, e.g. its
    gradient) into a site's (batch, seq, ...) view: tokens unflattened when the module flattens
    them (the (batch, seq) read from ``raw`` now, inside the trace), the spec's stream layout
    applied, divided by ``divisor`` when given (a branch scale).

    Example:
        >>> view = site_view(model, raw, flattened=False)   # inside a trace
        >>> view(raw.grad).shape                              # after it: (batch, seq, hidden)
    """
    tokens = token_shape(model, raw) if flattened else None

    def view(tensor: torch.Tensor) -> torch.Tensor:
        if tokens is not None:
            tensor = unflatten_tokens(tensor, tokens)
        tensor = to_standard(model, tensor)
        return tensor if divisor is None else tensor / divisor

    return view


def module_argument(envoy: Any, name: str, position: int) -> Any:
    """The argument ``name`` (keyword) or at ``position`` (positional) of a module call, in a trace."""
    args, kwargs = envoy.inputs
    if name in kwargs:
        return kwargs[name]
    return args[position]


class ContributionAccessor(_PerLayerView):
    """``accessor[i]``: what a sublayer of layer ``i`` adds to the residual stream.

    Read as the spec's `nnterp.spec.Contribution` says (the sublayer module's output by
    default; a post-sublayer norm's output; minus an in-module residual; times a branch
    scale), so ``layers_input[i] + mixers_output[i] + mlps_output[i] == layers_output[i]``
    on every block that adds to a residual stream. Assigning replaces the contribution: the
    module's output becomes ``value / scale + residual``.

    Args:
        model: The `StandardizedTransformer`.
        locate: ``locate(i)`` gives ``(layer envoy, envoy whose output is read, Contribution)``
            for a non-negative layer index, or raises `UnavailableComponentError`.
        description: What the values are, for ``repr``.

    Example:
        >>> with model.trace("Hello"):
        ...     attn = model.attentions_output[2].save()       # (batch, seq, hidden)
        ...     model.mlps_output[2] = model.mlps_output[2] * 0  # ablate layer 2's MLP
    """

    def __init__(
        self,
        model: StandardizedTransformer,
        locate: Callable[[int], tuple[Any, Any, Contribution]],
        description: str,
    ) -> None:
        self._model = model
        self._locate = locate
        self.description = description

    def _remembered(self, kind: str) -> dict[int, Any]:
        """Per-run memory of this accessor: what a read took from a module's input ("inputs",
        read ahead by `prefetch`), and the residual a read subtracted with the output it came
        from ("residuals"), since a later write cannot go back to the module's input. It lives
        for the running forward only (`nnterp.nnsight_seams.run_state`)."""
        memory: dict[int, Any] = run_state(self._model).setdefault(f"{self.description}/{kind}", {})
        return memory

    def prefetch(self, layer: int) -> None:
        """Read now what layer ``layer``'s contribution needs from its module's input (an
        in-module residual, the input's shape), so the contribution itself can be read after
        values computed inside the module (per-head sites), which come later in the forward."""
        layer = normalize_layer(self._model, layer)
        _, envoy, contribution = self._locate(layer)
        inputs = self._remembered("inputs")
        needs_input = contribution.residual_argument is not None or contribution.tokens_flattened
        # A contribution read at another module (a post-norm, BERT's attention.output) gets its
        # input when that module runs, later than the values read inside the sublayer.
        if layer in inputs or not needs_input or contribution.output is not None:
            return
        inputs[layer] = self._input_parts(envoy, contribution)

    def _input_parts(self, envoy: Any, contribution: Contribution) -> tuple[Any, Any]:
        residual = None
        if contribution.residual_argument is not None:
            residual = first_tensor(module_argument(envoy, *contribution.residual_argument))
        shape = None
        if contribution.tokens_flattened:
            shape = token_shape(self._model, first_tensor(envoy.input))
        return residual, shape

    def module(self, layer: int) -> Any:
        """The envoy whose output holds layer ``layer``'s contribution."""
        return self._locate(normalize_layer(self._model, layer))[1]

    def gradient_source(self, layer: int) -> GradientSource:
        """Inside a trace: the output of the module that holds layer ``layer``'s contribution (what
        the forward goes on with) and the function turning its gradient into the contribution's:
        the module adds the contribution divided by the branch scale (to an in-module residual),
        so the contribution's gradient is the output's divided by the scale, in the site's
        (batch, seq, hidden) view.

        Example:
            >>> raw, view = model.attentions_output.gradient_source(2)   # inside a trace
        """
        model = self._model
        layer = normalize_layer(model, layer)
        layer_envoy, envoy, contribution = self._locate(layer)
        raw = first_tensor(envoy.output)
        scale = self._scale(layer_envoy, contribution)
        return raw, site_view(model, raw, contribution.tokens_flattened, scale)

    def _scale(self, layer_envoy: Any, contribution: Contribution) -> float | None:
        if contribution.scale is None:
            return None
        return float(getattr(layer_envoy._module, contribution.scale))

    @_outside_trace_checked
    def __getitem__(self, layer: int) -> torch.Tensor:
        layer = normalize_layer(self._model, layer)
        layer_envoy, envoy, contribution = self._locate(layer)
        residual, shape = self._remembered("inputs").pop(layer, None) or self._input_parts(envoy, contribution)
        value = first_tensor(envoy.output)
        if residual is not None:
            self._remembered("residuals")[layer] = (value, residual)
        if contribution.mutated_after_return:
            value = value.clone()
        if shape is not None:
            value = unflatten_tokens(value, shape)
        if residual is not None:
            value = value - residual
        scale = self._scale(layer_envoy, contribution)
        return to_standard(self._model, value if scale is None else value * scale)

    @_outside_trace_checked
    def __setitem__(self, layer: int, value: torch.Tensor) -> None:
        layer = normalize_layer(self._model, layer)
        layer_envoy, envoy, contribution = self._locate(layer)
        residual = None
        remembered = self._remembered("residuals").pop(layer, None)
        if contribution.residual_argument is not None and remembered is None:
            residual = first_tensor(module_argument(envoy, *contribution.residual_argument))
        current = envoy.output
        if remembered is not None:
            if remembered[0] is not first_tensor(current):
                raise InvalidInputError(
                    f"{self.description}[{layer}]: this write belongs to a forward other than the one "
                    "whose value was read last; read and write it in the same trace."
                )
            residual = remembered[1]
        scale = self._scale(layer_envoy, contribution)
        raw = value if scale is None else value / scale
        if residual is not None:
            raw = raw + to_standard(self._model, residual)
        raw = from_standard(self._model, first_tensor(current), raw)
        if contribution.tokens_flattened:
            raw = raw.reshape(first_tensor(current).shape)
        envoy.output = replace_first(current, raw)



def no_softmax_attention(model: StandardizedTransformer) -> str | None:
    """Why no layer of ``model`` has a softmax attention (neither a mixer nor one beside it), or ``None``."""
    structure = model.layer_structure
    beside_mixers = any(path is not None for path in structure.side_attentions)
    if (model.paths["self_attn"] is None and not beside_mixers) or not structure.probability_layers:
        return "no layer of this model is softmax attention"
    return None


def probabilities_off(model: StandardizedTransformer) -> str | None:
    """Why ``model``'s attention probabilities are not readable on any layer (the spec names no
    probability operation, or the model was loaded without eager attention), or ``None``."""
    if model.spec.attention_probabilities is None:
        return "this attention computes no explicit probabilities (e.g. a fused kernel or (batch*heads, q, k) layout)"
    if not model.attention_probabilities_enabled:
        return (
            "attention probabilities are off: load with "
            "StandardizedTransformer(..., enable_attention_probs=True) (eager attention)"
        )
    return None


class AttentionProbabilitiesAccessor(LegacyProbabilityMethods):
    """``model.attention_probabilities[i]``: layer ``i``'s attention probabilities.

    Shape ``(batch, heads, query_positions, key_positions)``; each row sums to 1. Assigning
    replaces them for the rest of the forward (the values are multiplied with them).
    """

    def __init__(self, model: StandardizedTransformer) -> None:
        self._model = model

    def unavailable(self, layer: int) -> str | None:
        """Why layer ``layer`` has no readable attention probabilities, or ``None`` (what
        ``support()`` reports; on hybrids the reason names the layers that have them)."""
        model = self._model
        return (
            no_softmax_attention(model)
            or probabilities_off(model)
            or model.layer_structure.probabilities_unavailable(layer)
        )

    def _operation(self, layer: int) -> Any:
        from nnterp.attention import attention_to_read, locate_probabilities

        model = self._model
        model._require_attention_probabilities()
        layer = normalize_layer(model, layer)
        attention = attention_to_read(model, layer, "attention_probabilities")
        return locate_probabilities(attention, model.spec.attention_probabilities, layer)

    @_outside_trace_checked
    def __getitem__(self, layer: int) -> torch.Tensor:
        from nnterp.attention import split_merged_heads

        return to_standard(self._model, split_merged_heads(self._operation(layer).output, self._model), pattern=True)

    def gradient_source(self, layer: int) -> GradientSource:
        """Inside a trace: the probabilities as the attention computes them (what multiplies the
        values) and the function turning their gradient into the site's (batch, heads, query, key)."""
        from nnterp.attention import split_merged_heads

        model = self._model
        raw = self._operation(layer).output
        return raw, lambda gradient: to_standard(model, split_merged_heads(gradient, model), pattern=True)

    @_outside_trace_checked
    def __setitem__(self, layer: int, value: torch.Tensor) -> None:
        from nnterp.attention import merge_like, split_merged_heads

        operation = self._operation(layer)
        current = operation.output
        if not self._model.spec.stream_layout.is_standard:
            value = from_standard(self._model, split_merged_heads(current, self._model), value, pattern=True)
        operation.output = merge_like(value, current, self._model)

    def __len__(self) -> int:
        return self._model.num_layers

    def print_source(self, layer: int = 0) -> None:
        """Print the attention forward of ``layer`` and the operation chain that is hooked."""
        from nnterp.attention import softmax_attention_envoy

        model = self._model
        attention = softmax_attention_envoy(model, normalize_layer(model, layer), "attention_probabilities")
        print(attention.source)
        from nnterp.spec import chain_alternatives

        chains = [
            " -> ".join(f"{name}(...)" for name in chain)
            for chain in chain_alternatives(model.spec.attention_probabilities)
            if not callable(chain)
        ]
        print(
            "attention_probabilities = output of the call chain "
            + " or, where the forward lacks its calls, ".join(chains)
            + " (each found by name inside the previous call's source)"
        )

    def __repr__(self) -> str:
        return f"<attention probabilities of {self._model.num_layers} layers>"
