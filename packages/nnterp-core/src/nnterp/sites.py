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
attention. What a model lacks is reported by ``model.support()``.

Example:
    >>> from nnterp.sites import SITES, site_info
    >>> site_info("attentions_output").shape
    ('batch', 'seq', 'hidden')
    >>> [site.name for site in SITES if site.per_layer][:3]
    ['layers_input', 'mixers_input', 'attentions_input']
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
            attention's projections), ``"attention_pattern"``, ``"embedding"``, ``"output"``.
        layer_kind: The layer kind the site needs (``"attention"``: softmax-attention layers
            only), or ``None`` for every layer.
    """

    name: str
    per_layer: bool
    shape: tuple[str, ...]
    meaning: str
    read: str
    write: str
    kind: str
    layer_kind: str | None = None

    @property
    def position_dim(self) -> int:
        """The dimension indexing token positions (queries for attention probabilities)."""
        return self.shape.index("query") if "query" in self.shape else self.shape.index("seq")


_RESIDUAL = ("batch", "seq", "hidden")
_HEADS = ("batch", "seq", "heads", "head_dim")

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
        "mlps_input", True, _RESIDUAL, "what block i's MLP (or mixture of experts) receives, after its pre-norm",
        "input of layers[i].mlp (or of the first feed-forward projection when there is no MLP module)",
        "replaces the MLP's input", "sublayer_input",
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
        "logits", False, ("batch", "seq", "vocab"), "the model's output logits, after any scale or soft-cap",
        "the model's output", "replaces the returned logits", "output",
    ),
)

_BY_NAME = {site.name: site for site in SITES}

#: Per-layer site names, in forward order within one layer.
LAYER_SITES: tuple[str, ...] = tuple(site.name for site in SITES if site.per_layer)
#: Whole-model sites read before every layer, and after every layer.
FIRST_SITES: tuple[str, ...] = tuple(site.name for site in SITES if not site.per_layer and site.kind == "embedding")
LAST_SITES: tuple[str, ...] = tuple(site.name for site in SITES if not site.per_layer and site.kind == "output")
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
    "SITES",
    "SiteInfo",
    "markdown_table",
    "site_info",
]
