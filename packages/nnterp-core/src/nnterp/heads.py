"""Per-head views of attention: queries, keys, values and head outputs, for every architecture.

Inside ``model.trace(...)``, each accessor gives layer ``i``'s tensor shaped
``(batch, seq, heads, head_dim)``, readable and assignable:

- ``model.queries[i]``, ``model.keys[i]``, ``model.values[i]``: what the query/key/value
  projections compute, before rotary embeddings (and before any per-head q/k norm, as in
  Qwen-3 or Gemma-3). Keys and values have ``num_kv_heads`` heads (grouped-query attention).
- ``model.queries_rotated[i]``, ``model.keys_rotated[i]``: queries and keys after the rotary
  embedding, as they enter the attention scores (rotary models only).
- ``model.heads_output[i]``: each head's attention-weighted values, the input of the output
  projection ``o_proj`` before the heads are mixed. `project_heads` turns them into each
  head's share of the attention output.
- ``model.heads_result[i]``: each head's output through its slice of ``o_proj``, shaped
  ``(batch, seq, heads, hidden)`` (TransformerLens ``hook_result``): summed over heads, plus
  ``o_proj``'s bias, it is ``o_proj``'s output. Assigning sets ``o_proj``'s output to the sum
  over heads plus the bias.

Where they live is spec data (`ArchitectureSpec.q_proj`, ``qkv_proj``, ``qkv_layout``,
``o_proj``, ``rotary_embedding``); head counts and the head size are read from the
projections' weights, so grouped-query attention and ``head_dim != hidden / heads`` work.

Forward order inside one trace: ``attentions_input`` -> ``queries`` -> ``keys`` -> ``values``
-> ``queries_rotated`` -> ``keys_rotated`` -> ``attention_scores`` -> ``attention_probabilities``
-> ``heads_output`` -> ``heads_result`` -> ``attentions_output``.

Example:
    >>> with model.trace("The cat sat on the mat"):
    ...     q = model.queries[0].save()                  # (1, seq, heads, head_dim)
    ...     k = model.keys_rotated[0].save()             # (1, seq, kv_heads, head_dim)
    ...     z = model.heads_output[0]
    ...     z[:, :, 3] = 0                               # ablate head 3 of layer 0
    ...     model.heads_output[0] = z
    ...     logits = model.logits.save()
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import torch

from nnterp.accessors import child_envoy as _child
from nnterp.accessors import normalize_layer
from nnterp.errors import InvalidInputError, NnterpError, UnavailableComponentError
from nnterp.sites import HEAD_SITES
from nnterp.spec import config_value
from nnterp.stream_layout import from_standard, to_standard

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer



@dataclass(frozen=True)
class AttentionLayout:
    """Where one model's attention computes queries, keys, values and head outputs.

    Paths are relative to the standard ``self_attn`` module; ``None`` where the model has no
    such module. Resolved from the spec and one layer's attention by `attention_layout`
    (layers of a heterogeneous config may differ in head count and head size).

    Attributes:
        q_proj, k_proj, v_proj: separate projections (all ``None`` when fused; ``v_proj`` alone
            ``None`` on a layer whose values are its keys).
        qkv_proj: the fused projection, used when the separate ones are ``None``.
        qkv_layout: how the fused output is split (see `nnterp.spec.QKV_LAYOUTS`).
        o_proj: the output projection.
        rotary_embedding: name of the rotary call in the attention forward, or ``None``.
        num_heads, num_kv_heads, head_dim: query heads, key/value heads (of the first attention
            layer), size of one head as the output projection reads it.
        key_head_dim, value_head_dim: size of one key and one value head of separate
            projections (``None``: split by head count). Keys and values are split by these
            sizes, so a layer with its own key/value head count (MiMo-V2-Flash's sliding-window
            layers) is split right.
    """

    q_proj: str | None
    k_proj: str | None
    v_proj: str | None
    qkv_proj: str | None
    qkv_layout: str
    o_proj: str | None
    rotary_embedding: str | None
    num_heads: int
    num_kv_heads: int
    head_dim: int
    key_head_dim: int | None = None
    value_head_dim: int | None = None

    def heads_of(self, part: str) -> int:
        """How many heads ``part`` (``"q"``, ``"k"`` or ``"v"``) has."""
        return self.num_heads if part == "q" else self.num_kv_heads


def _features(module: torch.nn.Module, side: str) -> int | None:
    # nn.Linear names its sizes in/out_features; GPT-2's Conv1D names them nx/nf.
    names = ("in_features", "nx") if side == "in" else ("out_features", "nf")
    for name in names:
        value = getattr(module, name, None)
        if isinstance(value, int):
            return value
    return None


def _first_submodule(parent: torch.nn.Module, candidates: tuple[str, ...]) -> tuple[str, torch.nn.Module] | None:
    for path in candidates:
        try:
            return path, parent.get_submodule(path)
        except AttributeError:
            continue
    return None


def _layer_attention(model: StandardizedTransformer, layer: int) -> torch.nn.Module:
    if model.paths["self_attn"] is None:
        raise UnavailableComponentError(
            f"{model.spec.name} layers have no attention module (spec self_attn=None): "
            "queries, keys, values and heads_output are unavailable."
        )
    return model.layer_module(layer).get_submodule(model.paths["self_attn"])


def attention_layout(model: StandardizedTransformer, layer: int | None = None) -> AttentionLayout:
    """Resolve the spec's attention fields against layer ``layer``'s attention module (``None``:
    the first attention layer). Head counts are that layer's (`config_value` with ``layer``:
    a heterogeneous config's ``per_layer_config``), head sizes come from its projections.

    Raises:
        UnavailableComponentError: the model has no attention, or no head count.
        InvalidInputError: the projections' sizes do not divide into the configured heads.

    Example:
        >>> layout = attention_layout(model)
        >>> layout.num_heads, layout.num_kv_heads, layout.head_dim
        (9, 3, 64)
    """
    spec = model.spec
    attention_layers = model.attention_layers
    if model.paths["self_attn"] is not None and not attention_layers:
        raise UnavailableComponentError(f"{spec.name}: no layer of this model is softmax attention.")
    if layer is None:
        layer = attention_layers[0] if attention_layers else 0
    attention = _layer_attention(model, layer)
    # A heterogeneous config is per block module: an unrolled stack's layer is a call of one.
    block = model.block_index(layer)
    configured_heads = config_value(model._module.config, spec.num_heads_keys, layer=block)
    num_heads = int(configured_heads) if configured_heads is not None else model.num_heads
    if not num_heads:
        raise UnavailableComponentError(
            f"{spec.name}: the config gives no number of attention heads (tried {spec.num_heads_keys})."
        )
    q, k, v = (_first_submodule(attention, spec.path(part)) for part in ("q_proj", "k_proj", "v_proj"))
    # A layer may lack only its value projection (Gemma 4's attention_k_eq_v layers reuse the keys).
    separate = (q, k, v) if q is not None and k is not None else None
    fused = None if separate is not None else _first_submodule(attention, spec.path("qkv_proj"))
    o_proj = _first_submodule(attention, spec.path("o_proj"))

    # All heads side by side: the output projection's input, else the query projection's output.
    width = (_features(o_proj[1], "in") if o_proj is not None else None) or (
        _features(separate[0][1], "out") if separate is not None else None
    )
    if width:
        head_dim = width // num_heads
    else:
        configured = config_value(model._module.config, ("head_dim",), layer=block)
        head_dim = int(configured) if configured else model.hidden_size // num_heads

    num_kv_heads = num_heads
    key_head_dim = value_head_dim = None
    if separate is not None:
        k_width = _features(separate[1][1], "out")
        v_width = _features(separate[2][1], "out") if separate[2] is not None else None
        # Query/key heads may be wider than the value heads the output projection reads
        # (MiMo-V2-Flash: 192 and 128): the spec names the config key of their size.
        configured_qk = config_value(model._module.config, spec.qk_head_dim_keys) if spec.qk_head_dim_keys else None
        if k_width:
            num_kv_heads = k_width // (int(configured_qk) if configured_qk else head_dim)
            if num_kv_heads > 0:
                key_head_dim = k_width // num_kv_heads
                value_head_dim = v_width // num_kv_heads if v_width else None
    elif fused is not None and spec.qkv_layout == "blocks":
        total = _features(fused[1], "out")
        if total:
            num_kv_heads = (total - num_heads * head_dim) // (2 * head_dim)
    else:
        configured = config_value(model._module.config, spec.num_kv_heads_keys, layer=block)
        num_kv_heads = int(configured) if configured else num_heads
    if num_kv_heads <= 0 or num_heads % num_kv_heads:
        raise InvalidInputError(
            f"{spec.name}: the attention projections give {num_kv_heads} key/value heads for "
            f"{num_heads} query heads (head_dim {head_dim}); check the spec's q/k/v/o paths."
        )
    return AttentionLayout(
        q_proj=separate[0][0] if separate is not None else None,
        k_proj=separate[1][0] if separate is not None else None,
        v_proj=separate[2][0] if separate is not None and separate[2] is not None else None,
        qkv_proj=fused[0] if fused is not None else None,
        qkv_layout=spec.qkv_layout,
        o_proj=o_proj[0] if o_proj is not None else None,
        rotary_embedding=spec.rotary_embedding,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
        key_head_dim=key_head_dim,
        value_head_dim=value_head_dim,
    )


def _split_heads(tensor: torch.Tensor, heads: int) -> torch.Tensor:
    return tensor.view(*tensor.shape[:-1], heads, -1)


class HeadsAccessor:
    """``accessor[i]`` reads, ``accessor[i] = value`` writes one per-head activation of layer ``i``.

    Values are shaped ``(batch, seq, heads, head_dim)``. See the module docstring for the
    sites; an accessor is created per site by `StandardizedTransformer`.

    Args:
        model: The `StandardizedTransformer`.
        site: One of `HEAD_SITES`.

    Example:
        >>> with model.trace("Hello world"):
        ...     v = model.values[1].save()                   # (1, seq, kv_heads, head_dim)
        ...     model.values[1] = v * 2
    """

    def __init__(self, model: StandardizedTransformer, site: str) -> None:
        if site not in HEAD_SITES:
            raise InvalidInputError(f"unknown per-head site {site!r}; use one of {list(HEAD_SITES)}")
        self._model = model
        self.site = site
        self._layouts: dict[int | None, AttentionLayout] = {}

    @property
    def layout(self) -> AttentionLayout:
        """The `AttentionLayout` of the model's first attention layer (see `layout_for`)."""
        return self.layout_for(None)

    def layout_for(self, layer: int | None) -> AttentionLayout:
        """Layer ``layer``'s resolved `AttentionLayout` (computed on first use, per layer)."""
        if layer not in self._layouts:
            self._layouts[layer] = attention_layout(self._model, layer)
        return self._layouts[layer]

    # -- the raw tensor the forward uses, and its per-head view ------------------------------

    def _attention(self, layer: int) -> Any:
        model = self._model
        layer = normalize_layer(model, layer)
        declared = model.spec.unavailable_sites.get(self.site)
        if declared is not None:
            raise self._unavailable(declared)
        attention = model._attention(layer)
        model._before_inside_mixer(layer)
        if self.layout.rotary_embedding is not None or model.attention_probabilities_enabled:
            # NNsight instruments a forward's operations (`.source`) only if asked before the
            # forward starts; asking here, before q_proj runs, keeps later reads of the rotary
            # call or the attention probabilities of this layer in order.
            attention.source  # noqa: B018
        return attention

    def _unavailable(self, why: str) -> UnavailableComponentError:
        return UnavailableComponentError(f"{self.site} of {self._model.spec.name}: {why}")

    def _projection(self, attention: Any, layout: AttentionLayout) -> tuple[Any, str]:
        """(envoy, io) whose value holds this site's tensor."""
        if self.site == "heads_output":
            if layout.o_proj is None:
                raise self._unavailable(
                    f"no output projection found (spec o_proj={self._model.spec.o_proj!r})."
                )
            return _child(attention, layout.o_proj), "input"
        part = self.site[0]
        separate = {"q": layout.q_proj, "k": layout.k_proj, "v": layout.v_proj}[part]
        if separate is not None:
            return _child(attention, separate), "output"
        if layout.qkv_proj is not None:
            return _child(attention, layout.qkv_proj), "output"
        spec = self._model.spec
        raise self._unavailable(
            f"no query/key/value projection found (spec q_proj={spec.q_proj!r}, "
            f"qkv_proj={spec.qkv_proj!r}); set them in the architecture spec."
        )

    def _rotary_call(self, attention: Any) -> Any:
        from nnterp.attention import find_call

        name = self.layout.rotary_embedding
        if name is None:
            raise self._unavailable(
                "the spec names no rotary-embedding call (rotary_embedding=None): either this "
                "architecture does not rotate queries and keys (then queries/keys are what its "
                "attention scores use), or nnterp cannot read where it does (e.g. a rotation of "
                "part of each head); set the spec's rotary_embedding to the function its "
                "attention calls if there is one."
            )
        try:
            return find_call(attention.source, name)
        except LookupError as error:
            raise self._unavailable(
                f"{error}. Set the spec's rotary_embedding to the function its attention calls."
            ) from None

    def raw(self, layer: int) -> torch.Tensor:
        """The tensor the forward actually uses downstream for ``layer`` (inside a trace).

        For gradients: ``.grad`` is served on this tensor, not on the per-head view; turn a
        value or gradient of it into the per-head shape with `to_heads`.
        """
        attention = self._attention(layer)
        if self.site in ("queries_rotated", "keys_rotated"):
            return self._rotary_call(attention).output[0 if self.site == "queries_rotated" else 1]
        envoy, io = self._projection(attention, self.layout_for(normalize_layer(self._model, layer)))
        return envoy.input if io == "input" else envoy.output

    def to_heads(self, raw: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """``raw`` (see `raw`) of layer ``layer`` as ``(batch, seq, heads, head_dim)`` (``None``:
        with the first attention layer's head counts)."""
        layout = self.layout_for(None if layer is None else normalize_layer(self._model, layer))
        if self.site in ("queries_rotated", "keys_rotated"):
            return to_standard(self._model, raw.transpose(1, 2))
        raw = to_standard(self._model, raw)
        if self.site == "heads_output":
            return _split_heads(raw, layout.num_heads)
        part = self.site[0]
        if layout.q_proj is not None:
            size = {"q": None, "k": layout.key_head_dim, "v": layout.value_head_dim}[part]
            if size is not None:
                # By head size, so that a layer with its own key/value head count splits right.
                return raw.unflatten(-1, (-1, size))
            return _split_heads(raw, layout.heads_of(part))
        return self._fused_part(raw, part, layout)

    def _fused_part(self, fused: torch.Tensor, part: str, layout: AttentionLayout) -> torch.Tensor:
        d = layout.head_dim
        if layout.qkv_layout == "interleaved_heads":
            offset = "qkv".index(part) * d
            return _split_heads(fused, layout.num_heads)[..., offset : offset + d]
        q_width, kv_width = layout.num_heads * d, layout.num_kv_heads * d
        start = {"q": 0, "k": q_width, "v": q_width + kv_width}[part]
        width = q_width if part == "q" else kv_width
        return _split_heads(fused[..., start : start + width], layout.heads_of(part))

    def _from_heads(self, raw: torch.Tensor, value: torch.Tensor, layout: AttentionLayout) -> torch.Tensor:
        if self.site in ("queries_rotated", "keys_rotated"):
            return from_standard(self._model, raw.transpose(1, 2), value).transpose(1, 2)
        standard = to_standard(self._model, raw)
        if self.site == "heads_output" or layout.q_proj is not None:
            return from_standard(self._model, raw, value.reshape(standard.shape))
        rebuilt = standard.clone()
        self._fused_part(rebuilt, self.site[0], layout)[...] = value
        return from_standard(self._model, raw, rebuilt)

    # -- indexing ------------------------------------------------------------------------------

    def __getitem__(self, layer: int) -> torch.Tensor:
        return self.to_heads(self.raw(layer), layer)

    def __setitem__(self, layer: int, value: torch.Tensor) -> None:
        current = self[layer]
        if tuple(getattr(value, "shape", ())) != tuple(current.shape):
            raise InvalidInputError(
                f"{self.site}[{layer}] has shape {tuple(current.shape)} (batch, seq, heads, head_dim) "
                f"but the value has shape {tuple(getattr(value, 'shape', ()))}: pass a tensor of that shape."
            )
        attention = self._attention(layer)
        raw = self.raw(layer)
        layout = self.layout_for(normalize_layer(self._model, layer))
        value = value.to(dtype=raw.dtype, device=raw.device)
        replacement = self._from_heads(raw, value, layout)
        if self.site in ("queries_rotated", "keys_rotated"):
            call = self._rotary_call(attention)
            rotated = call.output
            index = 0 if self.site == "queries_rotated" else 1
            call.output = tuple(replacement if i == index else item for i, item in enumerate(rotated))
            return
        envoy, io = self._projection(attention, layout)
        if io == "input":
            envoy.input = replacement
        else:
            envoy.output = replacement

    def __len__(self) -> int:
        return self._model.num_layers

    def __repr__(self) -> str:
        return f"<{self.site} of {self._model.num_layers} layers, (batch, seq, heads, head_dim)>"


def output_projection_per_head(
    o_proj: torch.nn.Module, heads: int, head_dim: int
) -> tuple[torch.Tensor, torch.Tensor | None] | str:
    """The output projection ``o_proj`` as per-head matrices: ``(W, bias)`` with ``W`` shaped
    (heads, head_dim, hidden), so head ``h``'s result is ``z[..., h, :] @ W[h]``; or, when
    ``o_proj`` is not a plain linear map (``nn.Linear`` or GPT-2's ``Conv1D``), why not.

    Example:
        >>> W, bias = output_projection_per_head(torch.nn.Linear(64, 32), heads=4, head_dim=16)
        >>> W.shape
        torch.Size([4, 16, 32])
    """
    from transformers.pytorch_utils import Conv1D

    name = type(o_proj).__name__
    if isinstance(o_proj, Conv1D):
        in_out = o_proj.weight  # Conv1D stores (in, out)
    elif isinstance(o_proj, torch.nn.Linear) and type(o_proj).forward is torch.nn.Linear.forward:
        in_out = o_proj.weight.T
    else:
        return (
            f"the output projection is a {name}, not a plain linear map (nn.Linear or Conv1D), so its output "
            "is not a sum of per-head products"
        )
    if in_out.shape[0] != heads * head_dim:
        return f"the output projection takes {in_out.shape[0]} inputs, not heads * head_dim = {heads * head_dim}"
    return in_out.reshape(heads, head_dim, in_out.shape[1]), o_proj.bias


def head_results(heads_output: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Each head's output through its slice of the output projection: (..., heads, hidden).

    Args:
        heads_output: (..., heads, head_dim), e.g. ``model.heads_output[i]``.
        weight: (heads, head_dim, hidden), from `output_projection_per_head`.

    Example:
        >>> head_results(torch.ones(2, 3, 4, 16), torch.ones(4, 16, 32)).shape
        torch.Size([2, 3, 4, 32])
    """
    return torch.einsum("...hd,hdo->...ho", heads_output.to(weight.dtype), weight)


class HeadResultsAccessor:
    """``model.heads_result[i]``: (batch, seq, heads, hidden), each head through its slice of W_O.

    ``model.heads_result[i].sum(-2) + bias`` is ``o_proj``'s output (to rounding); assigning
    ``r`` sets ``o_proj``'s output to ``r.sum(-2) + bias``.

    Example:
        >>> with model.trace("Hello world"):
        ...     result = model.heads_result[1].save()        # (1, seq, heads, hidden)
        ...     edited = model.heads_result[1].clone()
        ...     edited[:, :, 3] = 0                           # remove head 3's share
        ...     model.heads_result[1] = edited
    """

    site = "heads_result"

    def __init__(self, model: StandardizedTransformer) -> None:
        self._model = model

    @property
    def layout(self) -> AttentionLayout:
        """The `AttentionLayout` of the model's first attention layer."""
        return self._model.heads_output.layout

    def layout_for(self, layer: int) -> AttentionLayout:
        """Layer ``layer``'s resolved `AttentionLayout`."""
        return self._model.heads_output.layout_for(layer)

    def _projection(self, layer: int) -> tuple[torch.Tensor, torch.Tensor | None] | str:
        layout = self.layout_for(layer)
        if layout.o_proj is None:
            return f"no output projection found (spec o_proj={self._model.spec.o_proj!r})"
        o_proj = _layer_attention(self._model, layer).get_submodule(layout.o_proj)
        return output_projection_per_head(o_proj, layout.num_heads, layout.head_dim)

    def unavailable(self, layer: int) -> str | None:
        """Why layer ``layer`` has no per-head results, or ``None``."""
        why = self._model.spec.unavailable_sites.get(self.site) or self._model.layer_structure.attention_unavailable(layer)
        if why is not None:
            return why
        try:
            projection = self._projection(layer)
        except NnterpError as error:
            return str(error)
        return projection if isinstance(projection, str) else None

    def _weights(self, layer: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        why = self.unavailable(layer)
        if why is not None:
            raise UnavailableComponentError(f"heads_result[{layer}] of {self._model.spec.name}: {why}.")
        projection = self._projection(layer)
        assert not isinstance(projection, str)
        return projection

    def __getitem__(self, layer: int) -> torch.Tensor:
        layer = normalize_layer(self._model, layer)
        weight, _ = self._weights(layer)
        return head_results(self._model.heads_output[layer], weight)

    def gradient_source(self, layer: int) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """Inside a trace: the tensor whose gradient is every head's result gradient (o_proj's
        output, which is the sum of the heads' results plus the bias), and the function spreading
        its (batch, seq, hidden) gradient to (batch, seq, heads, hidden)."""
        layer = normalize_layer(self._model, layer)
        self._weights(layer)
        envoy = _child(self._model.heads_output._attention(layer), cast(str, self.layout_for(layer).o_proj))
        heads = self.layout_for(layer).num_heads

        def spread(gradient: torch.Tensor) -> torch.Tensor:
            gradient = to_standard(self._model, gradient)
            return gradient.unsqueeze(-2).expand(*gradient.shape[:-1], heads, gradient.shape[-1])

        return envoy.output, spread

    def __setitem__(self, layer: int, value: torch.Tensor) -> None:
        layer = normalize_layer(self._model, layer)
        weight, bias = self._weights(layer)
        heads_output = self._model.heads_output
        layout = self.layout_for(layer)
        envoy = _child(heads_output._attention(layer), cast(str, layout.o_proj))
        current = envoy.output
        expected = (*to_standard(self._model, current).shape[:-1], layout.num_heads, weight.shape[-1])
        if tuple(getattr(value, "shape", ())) != expected:
            raise InvalidInputError(
                f"heads_result[{layer}] has shape {expected} (batch, seq, heads, hidden) but the value has "
                f"shape {tuple(getattr(value, 'shape', ()))}: pass a tensor of that shape."
            )
        total = value.to(dtype=current.dtype, device=current.device).sum(-2)
        envoy.output = from_standard(self._model, current, total if bias is None else total + bias)

    def __len__(self) -> int:
        return self._model.num_layers

    def __repr__(self) -> str:
        return f"<heads_result of {self._model.num_layers} layers, (batch, seq, heads, hidden)>"


def project_heads(
    model: StandardizedTransformer, layer: int, heads_output: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each head's share of layer ``layer``'s attention output (outside a trace).

    The output projection is affine, so ``o_proj(z) = sum_h o_proj(z with only head h) -
    (heads - 1) * bias``: this returns the per-head terms without the bias, and the bias.
    ``per_head.sum(-2) + bias`` equals the attention output (for architectures that apply
    nothing after ``o_proj`` but dropout).

    Args:
        model: the `StandardizedTransformer`.
        layer: the layer whose ``o_proj`` is used.
        heads_output: (..., heads, head_dim), e.g. a saved ``model.heads_output[layer]``.

    Returns:
        ``(per_head, bias)``: (..., heads, hidden) and (hidden,).

    Example:
        >>> with model.trace("Hello world"):
        ...     z = model.heads_output[1].save()
        ...     out = model.attentions_output[1].save()
        >>> per_head, bias = project_heads(model, 1, z)
        >>> torch.allclose(per_head.sum(-2) + bias, out, atol=1e-5)
        True
    """
    layer = normalize_layer(model, layer)
    layout = attention_layout(model, layer)
    if layout.o_proj is None:
        raise UnavailableComponentError(
            f"{model.spec.name}: no output projection found (spec o_proj={model.spec.o_proj!r})."
        )
    if tuple(heads_output.shape[-2:]) != (layout.num_heads, layout.head_dim):
        raise InvalidInputError(
            f"heads_output has shape {tuple(heads_output.shape)}; its last two dimensions must be "
            f"(heads, head_dim) = ({layout.num_heads}, {layout.head_dim})."
        )
    o_proj = _layer_attention(model, layer).get_submodule(layout.o_proj)
    heads = layout.num_heads
    projection = output_projection_per_head(o_proj, heads, layout.head_dim)
    if not isinstance(projection, str):
        weight, bias_or_none = projection
        with torch.no_grad():
            per_head = head_results(heads_output.to(device=weight.device), weight)
            bias = bias_or_none if bias_or_none is not None else per_head.new_zeros(per_head.shape[-1])
        return per_head, bias.detach().clone()
    with torch.no_grad():
        parameter = next(o_proj.parameters())
        z = heads_output.to(device=parameter.device, dtype=parameter.dtype)
        bias = o_proj(z.new_zeros(1, heads * layout.head_dim))[0]
        selector = torch.eye(heads, dtype=z.dtype, device=z.device)[:, :, None]
        # (..., heads kept, heads, head_dim): row h holds head h's values, zeros elsewhere.
        isolated = z.unsqueeze(-3) * selector
        per_head = o_proj(isolated.flatten(-2)) - bias
    return per_head, bias
