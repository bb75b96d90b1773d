"""The table of standard activation sites: the one place that says what each accessor means.

Every accessor of `StandardizedTransformer` (``model.layers_output[i]``, ``model.logits``, ...),
`nnterp.cache`'s site names, patching, gradients, attribution, ``model.support()``, the CLI and
the docs' site table are derived from `SITES`. Each entry says what the value *means* (the same
quantity on every architecture), where it is read, its shape with named dimensions, and how a
write goes back into the forward.

The residual contract: for every block that adds to a residual stream, ::

    layers_input[i] + mixers_output[i] + mlps_output[i] == layers_output[i]

within float tolerance, whatever the block's wiring: sequential, parallel, with post-sublayer
("sandwich") norms, with the residual added inside a module, with scaled branches.
``attentions_output[i]`` is ``mixers_output[i]`` on layers whose token mixer is softmax
attention. On sequential blocks the stream between the two sublayers is ``layers_mid[i]``::

    layers_input[i] + mixers_output[i] == layers_mid[i]
    layers_mid[i] + mlps_output[i] == layers_output[i]

What a model lacks is reported by ``model.support()``. The sites TransformerLens users know
by other names: ``resid_pre``/``resid_mid``/``resid_post`` are ``layers_input``/``layers_mid``/
``layers_output``; ``attn_scores``/``pattern`` are ``attention_scores``/``attention_probabilities``;
``z``/``result`` are ``heads_output``/``heads_result``; ``mlp.hook_post`` is ``mlps_hidden``;
``ln1``/``ln2``/``ln_final.hook_scale`` are ``attentions_norm_scale``/``mlps_norm_scale``/
``ln_final_scale``.

Example:
    >>> from nnterp.sites import SITES, site_info
    >>> site_info("attentions_output").shape
    ('batch', 'seq', 'hidden')
    >>> [site.name for site in SITES if site.per_layer][:3]
    ['layers_input', 'attentions_norm_scale', 'mixers_input']
"""

from __future__ import annotations

from dataclasses import dataclass

from nnterp.errors import InvalidInputError


@dataclass(frozen=True)
class SiteInfo:
    """One standard activation site.

    Attributes:
        name: The accessor name (``model.<name>[i]`` or ``model.<name>``) and cache key prefix.
        per_layer: Indexed by layer (``True``) or one value per forward.
        shape: Named dimensions of the value.
        meaning: What the value is, the same on every architecture.
        read: Where nnterp reads it.
        write: What assigning it does.
        kind: ``"residual"`` (a state of the residual stream), ``"contribution"`` (what a
            sublayer adds to it), ``"sublayer_input"``, ``"head"`` (per-head, through the
            attention's projections), ``"attention_pattern"`` (per query and key: scores and
            probabilities), ``"neurons"`` (inside the MLP), ``"norm_scale"`` (what a norm
            divides by), ``"embedding"``, ``"output"``.
        layer_kind: The layer kind the site needs (``"attention"``: softmax-attention layers
            only), or ``None`` for every layer.
        writable: Whether assigning the site is allowed (``False``: a value computed from
            the forward, read-only; assigning raises `UnavailableComponentError` naming the
            site to patch instead).
    """

    name: str
    per_layer: bool
    shape: tuple[str, ...]
    meaning: str
    read: str
    write: str
    kind: str
    layer_kind: str | None = None
    writable: bool = True

    @property
    def position_dim(self) -> int:
        """The dimension indexing token positions (queries for attention probabilities)."""
        return self.shape.index("query") if "query" in self.shape else self.shape.index("seq")


_RESIDUAL = ("batch", "seq", "hidden")
_HEADS = ("batch", "seq", "heads", "head_dim")
_SCALE = ("batch", "seq", "1")
_STREAMS = ("batch", "seq", "streams", "hidden")
_READ_ONLY = "read-only (raises UnavailableComponentError naming the site to patch instead)"

#: Every standard site, in the order one forward reaches them (within a layer for per-layer sites).
SITES: tuple[SiteInfo, ...] = (
    SiteInfo(
        "token_embeddings", False, ("batch", "seq", "embedding"),
        "the token embedding table's output (before any projection, scaling or position embedding)",
        "output of embed_tokens", "replaces the embeddings the model goes on with", "embedding",
    ),
    SiteInfo(
        "layers_input", True, _RESIDUAL,
        "the residual stream entering block i (layers_input[0]: embeddings as the stream sees them)",
        "input of layers[i]", "replaces what block i receives", "residual",
    ),
    SiteInfo(
        "streams_input", True, _STREAMS,
        "the parallel residual streams entering block i, on models with several (hyper-connections, "
        "the spec's residual_streams); each block reads a mix of them and writes into each",
        "input of layers[i]", "replaces the streams block i receives", "residual",
    ),
    SiteInfo(
        "attentions_norm_scale", True, _SCALE,
        "what the norm before block i's attention divides its input by: 1/sqrt(mean(x^2)+eps) "
        "(RMSNorm) or 1/sqrt(var(x)+eps) (LayerNorm), in float32 (TransformerLens ln1.hook_scale)",
        "computed from the input of the spec's attention_norm", _READ_ONLY, "norm_scale", "attention", False,
    ),
    SiteInfo(
        "mixers_input", True, _RESIDUAL,
        "what block i's token mixer (attention, state-space, recurrent or convolution) receives, "
        "after its pre-norm", "input of the layer's mixer module", "replaces the mixer's input", "sublayer_input",
    ),
    SiteInfo(
        "attentions_input", True, _RESIDUAL,
        "what block i's softmax attention receives, after its pre-norm",
        "input of layers[i].self_attn", "replaces the attention's input", "sublayer_input", "attention",
    ),
    SiteInfo(
        "queries", True, _HEADS, "query projections per head, before any rotary embedding or q-norm",
        "output of q_proj (or its part of a fused qkv projection)", "replaces the queries", "head", "attention",
    ),
    SiteInfo(
        "keys", True, ("batch", "seq", "kv_heads", "head_dim"),
        "key projections per key/value head, before any rotary embedding or k-norm",
        "output of k_proj (or its part of a fused qkv projection)", "replaces the keys", "head", "attention",
    ),
    SiteInfo(
        "values", True, ("batch", "seq", "kv_heads", "head_dim"), "value projections per key/value head",
        "output of v_proj (or its part of a fused qkv projection)", "replaces the values", "head", "attention",
    ),
    SiteInfo(
        "queries_rotated", True, _HEADS, "queries after the rotary embedding, as they enter the scores",
        "first output of the rotary-embedding call in the attention's source", "replaces the rotated queries",
        "head", "attention",
    ),
    SiteInfo(
        "keys_rotated", True, ("batch", "seq", "kv_heads", "head_dim"),
        "keys after the rotary embedding, as they enter the scores",
        "second output of the rotary-embedding call in the attention's source", "replaces the rotated keys",
        "head", "attention",
    ),
    SiteInfo(
        "attention_scores", True, ("batch", "heads", "query", "key"),
        "pre-softmax attention scores as the softmax receives them: q.k * scale plus the attention "
        "mask as the model adds it (masked keys hold a large negative value), position biases and "
        "soft-capping included (TransformerLens attn_scores)",
        "input of the softmax call next to the spec's probability operation (eager)",
        "replaces what the softmax receives", "attention_pattern", "attention",
    ),
    SiteInfo(
        "attention_probabilities", True, ("batch", "heads", "query", "key"),
        "softmax attention weights (rows sum to 1; to at most 1 with learned sinks)",
        "output of the spec's probability operation, found by name in the attention's source (eager)",
        "replaces the weights that multiply the values", "attention_pattern", "attention",
    ),
    SiteInfo(
        "heads_output", True, _HEADS, "each head's attention-weighted values, before the output projection",
        "input of o_proj", "replaces the heads the output projection mixes", "head", "attention",
    ),
    SiteInfo(
        "heads_result", True, ("batch", "seq", "heads", "hidden"),
        "each head's output through its slice of the output projection; summed over heads, plus "
        "o_proj's bias, it is o_proj's output (TransformerLens hook_result)",
        "heads_output[i] times o_proj's weight, head by head",
        "sets o_proj's output to the sum over heads plus the bias", "head", "attention",
    ),
    SiteInfo(
        "attentions_output", True, _RESIDUAL,
        "what block i's softmax attention adds to the residual stream (after any post-attention "
        "norm or branch scale, without an in-module residual)",
        "the spec's attention contribution site (default: output of layers[i].self_attn)",
        "replaces the attention's contribution", "contribution", "attention",
    ),
    SiteInfo(
        "mixers_output", True, _RESIDUAL,
        "what block i's token mixer adds to the residual stream (attentions_output on attention layers)",
        "the spec's contribution site of the layer's mixer", "replaces the mixer's contribution", "contribution",
    ),
    SiteInfo(
        "layers_mid", True, _RESIDUAL,
        "the residual stream between block i's token mixer and its MLP: layers_input[i] + "
        "mixers_output[i] (TransformerLens resid_mid); sequential blocks only",
        "input of the spec's mlp_norm (the MLP's input when it reads the stream un-normalised)",
        "replaces the stream there: the MLP's norm receives it and layers_output[i] becomes it plus "
        "mlps_output[i] (the layer's MLP sites are then past)", "residual",
    ),
    SiteInfo(
        "mlps_norm_scale", True, _SCALE,
        "what the norm before block i's MLP divides its input (layers_mid) by, as for "
        "attentions_norm_scale (TransformerLens ln2.hook_scale); sequential blocks only",
        "computed from the input of the spec's mlp_norm", _READ_ONLY, "norm_scale", None, False,
    ),
    SiteInfo(
        "mlps_input", True, _RESIDUAL, "what block i's MLP (or mixture of experts) receives, after its pre-norm",
        "input of layers[i].mlp (or of the first feed-forward projection when there is no MLP module)",
        "replaces the MLP's input", "sublayer_input",
    ),
    SiteInfo(
        "mlps_hidden", True, ("batch", "seq", "intermediate"),
        "block i's MLP hidden (neuron) activations: after the activation function (and the gate "
        "product of gated MLPs), as the down projection receives them (TransformerLens mlp.hook_post); "
        "not in mixtures of experts",
        "input of the spec's down_proj", "replaces what the down projection receives", "neurons",
    ),
    SiteInfo(
        "mlps_output", True, _RESIDUAL,
        "what block i's MLP adds to the residual stream (after any post-feed-forward norm or "
        "branch scale, without an in-module residual)",
        "the spec's MLP contribution site (default: output of layers[i].mlp)",
        "replaces the MLP's contribution", "contribution",
    ),
    SiteInfo(
        "layers_output", True, _RESIDUAL, "the residual stream leaving block i",
        "output of layers[i] (its hidden state)", "replaces what leaves block i", "residual",
    ),
    SiteInfo(
        "streams_output", True, _STREAMS,
        "the parallel residual streams leaving block i, on models with several (see streams_input)",
        "output of layers[i] (its hidden state)", "replaces the streams leaving block i", "residual",
    ),
    SiteInfo(
        "ln_final_scale", False, _SCALE,
        "what the final norm divides its input (the last residual state) by, as for "
        "attentions_norm_scale (TransformerLens ln_final.hook_scale)",
        "computed from the input of ln_final", _READ_ONLY, "norm_scale", None, False,
    ),
    SiteInfo(
        "logits", False, ("batch", "seq", "vocab"), "the model's output logits, after any scale or soft-cap",
        "the model's output", "replaces the returned logits", "output",
    ),
)

_BY_NAME = {site.name: site for site in SITES}

#: Per-layer site names, in forward order within one layer.
LAYER_SITES: tuple[str, ...] = tuple(site.name for site in SITES if site.per_layer)
_FIRST_LAYER_SITE = next(index for index, site in enumerate(SITES) if site.per_layer)
#: Whole-model sites read before every layer, and after every layer (in forward order).
FIRST_SITES: tuple[str, ...] = tuple(site.name for site in SITES[:_FIRST_LAYER_SITE] if not site.per_layer)
LAST_SITES: tuple[str, ...] = tuple(site.name for site in SITES[_FIRST_LAYER_SITE:] if not site.per_layer)
#: Sites that cannot be assigned (values computed from the forward).
READ_ONLY_SITES: tuple[str, ...] = tuple(site.name for site in SITES if not site.writable)
#: Per-head sites (through the attention's projections).
HEAD_SITES: tuple[str, ...] = tuple(site.name for site in SITES if site.kind == "head")
#: Sites that are what a sublayer adds to the residual stream.
CONTRIBUTION_SITES: tuple[str, ...] = tuple(site.name for site in SITES if site.kind == "contribution")


def site_info(name: str) -> SiteInfo:
    """The `SiteInfo` of a standard site.

    Raises:
        InvalidInputError: ``name`` is not a standard site (the message lists them).

    Example:
        >>> site_info("layers_output").meaning
        'the residual stream leaving block i'
    """
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise InvalidInputError(
            f"unknown site {name!r}: use one of {', '.join(_BY_NAME)}."
        ) from None


def markdown_table() -> str:
    """The site table as Markdown (the docs' table is this text).

    Example:
        >>> print(markdown_table().splitlines()[0])
        | site | per layer | shape | meaning | read from | write |
    """
    rows = ["| site | per layer | shape | meaning | read from | write |", "|---|---|---|---|---|---|"]
    for site in SITES:
        needs = " (softmax-attention layers)" if site.layer_kind == "attention" else ""
        rows.append(
            f"| `{site.name}` | {'yes' if site.per_layer else 'no'}{needs} | ({', '.join(site.shape)}) | "
            f"{site.meaning} | {site.read} | {site.write} |"
        )
    return "\n".join(rows) + "\n"


__all__ = [
    "CONTRIBUTION_SITES",
    "FIRST_SITES",
    "HEAD_SITES",
    "LAST_SITES",
    "LAYER_SITES",
    "READ_ONLY_SITES",
    "SITES",
    "SiteInfo",
    "markdown_table",
    "site_info",
]
