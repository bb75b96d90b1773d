"""Architecture specs: where each part of the standard tree lives in a HuggingFace model.

An architecture is data. A spec names the HF classes it covers and the module paths of the
standard parts; nnterp turns it into NNsight ``rename`` aliases, so every model exposes the
same tree::

    embed_tokens, layers[i].self_attn, layers[i].mlp, ln_final, lm_head

Example:
    >>> GPT2 = ArchitectureSpec(
    ...     name="gpt2",
    ...     model_classes=("GPT2LMHeadModel",),
    ...     layers="transformer.h",
    ...     self_attn="attn",
    ...     ln_final="transformer.ln_f",
    ...     embed_tokens="transformer.wte",
    ... )
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Union

#: A module path (dotted, from the model root; for ``self_attn``/``mlp`` from a layer), or
#: several alternatives tried in order, or ``None`` when the architecture has no such part.
PathSpec = Union[str, tuple[str, ...], None]

#: How attention probabilities are found in a standard ``self_attn`` module's forward: a
#: chain of operation names, each drilled into with NNsight's ``.source``. The default works
#: for the transformers 5 attention-interface pattern: the ``attention_interface(...)`` call,
#: then, inside the eager implementation, the dropout applied to the softmax output (its
#: output is what multiplies the values). Names are callables as written in the code
#: (``nn.functional.dropout``); the first call of that name is used, never a numbered label.
DEFAULT_ATTENTION_PROBABILITIES: tuple[str, ...] = ("attention_interface", "nn.functional.dropout")

#: A chain of operation names (see `DEFAULT_ATTENTION_PROBABILITIES`).
Chain = tuple[str, ...]


def chain_alternatives(chains: Any) -> tuple[Any, ...]:
    """The chains a spec's ``attention_probabilities`` (or ``attention_scores``) value stands
    for, tried in order: one chain (or an nnterp 1.x locator function) is one alternative,
    a tuple of chains several, ``None`` or ``()`` none.

    Example:
        >>> chain_alternatives(("attention_interface", "nn.functional.dropout"))
        (('attention_interface', 'nn.functional.dropout'),)
    """
    if not chains:
        return ()
    if callable(chains) or isinstance(chains[0], str):
        return (chains,)
    return tuple(chains)


#: How a fused query/key/value projection lays out its output's last dimension:
#: ``"blocks"``: ``[q | k | v]``, q for every query head then k and v for every key/value head
#: (GPT-2 ``c_attn``, Phi-3 ``qkv_proj``); ``"interleaved_heads"``: head by head,
#: ``[q_0 k_0 v_0 | q_1 k_1 v_1 | ...]`` (GPT-NeoX and Bloom ``query_key_value``).
QKV_LAYOUTS = ("blocks", "interleaved_heads")

#: How a block's input and output tensor holds a hyper-connection model's parallel residual
#: streams (the spec's ``streams_packing``): ``"stacked"``: (batch, seq, streams, hidden)
#: (DeepSeek-V4's ``hc_mult`` streams); ``"flattened"``: (batch, seq, streams * hidden), stream
#: by stream along the last dimension (Qwen4-Exp's ``hc_count`` streams). The
#: ``streams_input``/``streams_output`` sites read and write (batch, seq, streams, hidden) views
#: of each.
STREAMS_PACKINGS = ("stacked", "flattened")

#: Where a feed-forward's down projection (its last projection, whose input is the MLP's hidden
#: activations) usually is, tried in order: from the MLP module, or from the layer when the
#: spec has no MLP module (OPT's ``fc2``).
DEFAULT_DOWN_PROJ: tuple[str, ...] = (
    "down_proj", "c_proj", "fc2", "dense_4h_to_h", "fc_out", "w2", "output_linear", "proj_down",
)

#: Where the norm before a layer's token mixer (its pre-norm) usually is, from the layer.
DEFAULT_ATTENTION_NORM: tuple[str, ...] = (
    "input_layernorm", "ln_1", "self_attn_layer_norm", "attention_layernorm", "layernorm1", "norm_1",
    "operator_norm", "temporal_pre_norm", "norm_mlstm", "attention.ln", "pre_attention_layernorm",
)

#: Where the norm before a layer's MLP (its pre-norm) usually is, from the layer. Gemma-2's
#: ``pre_feedforward_layernorm`` comes first: its ``post_attention_layernorm`` is a post-norm.
DEFAULT_MLP_NORM: tuple[str, ...] = (
    "pre_feedforward_layernorm", "pre_ff_layernorm", "pre_mlp_layernorm", "post_attention_layernorm",
    "ln_2", "final_layer_norm", "feedforward_layernorm", "layernorm2", "norm_2", "ffn_norm",
    "channel_pre_norm", "norm_ffn", "ln",
)

#: Standard part names, in forward order.
STANDARD_PARTS = ("embed_tokens", "layers", "self_attn", "mlp", "ln_final", "lm_head")


@dataclass(frozen=True)
class Contribution:
    """Where a sublayer's contribution to the residual stream is read, when it is not simply
    the output of the sublayer's module (the default, all fields unset).

    The contribution is ``scale * (output - residual)``: the output of ``output`` (a module
    path from the layer), minus the residual the module adds itself, times a branch scale.
    Writing ``c`` sets that module's output to ``c / scale + residual``.

    Attributes:
        output: Module (path from the layer) whose output holds the contribution: a
            post-sublayer norm (Gemma-2/3, OLMo-2 ``post_attention_layernorm``), or the last
            feed-forward projection of a layer without an MLP module (``fc2``). ``None``: the
            sublayer module itself.
        input: Module (path from the layer) whose input is the sublayer's input, when the
            sublayer has no module (``fc1``). ``None``: the sublayer module.
        residual_argument: ``(name, position)`` of the argument through which the module
            receives the residual it adds to its own output (BLOOM's ``residual``, argument 1).
        scale: Name of a float attribute of the layer that multiplies the sublayer output
            before the residual add (MiniCPM ``residual_scale``, Granite ``residual_multiplier``).
        mutated_after_return: The layer adds to the returned tensor in place afterwards
            (Falcon's ``mlp_output += attention_output``): reads copy it as it was returned.
        tokens_flattened: The module may return its tokens flattened, (batch * seq, hidden)
            (Llama-4's mixture of experts): reads take the shape of the module's input.
        unavailable: Why this sublayer's contribution cannot be read although the block adds
            one (a sum of two modules, two parallel mixers with their own scales); ``None``:
            it can. ``support()`` reports the reason and the identity is not checked there.

    Example:
        >>> SANDWICH = Contribution(output="post_attention_layernorm")
        >>> IN_MODULE_RESIDUAL = Contribution(residual_argument=("residual", 1))
    """

    output: str | None = None
    input: str | None = None
    residual_argument: tuple[str, int] | None = None
    scale: str | None = None
    mutated_after_return: bool = False
    tokens_flattened: bool = False
    unavailable: str | None = None


#: The plain case: the sublayer module's output is what the block adds.
MODULE_OUTPUT = Contribution()


@dataclass(frozen=True)
class Mixer:
    """One kind of token mixer a layer may hold (hybrid models hold several kinds).

    Attributes:
        path: Module path from the layer (``"self_attn"``, ``"linear_attn"``, ``"mamba"``).
        kind: What it is: ``"attention"`` (softmax attention: probabilities, per-head
            sites) or a name for another mixer (``"mamba"``, ``"gated_deltanet"``,
            ``"short_conv"``, ``"rg_lru"``, ``"linear_attention"``).
        contribution: Where its contribution is read (see `Contribution`).
        module_class: For a path shared by several kinds (MiniMax's lightning and softmax
            ``self_attn``), a substring of this kind's module class name (``None``: the path
            decides).
        mlp: Where the MLP contribution is read on layers holding this mixer, when it differs
            from the spec's ``mlp_contribution`` (OLMo-hybrid normalises the MLP output of its
            attention layers only); ``None``: the spec's.
        is_mlp: The module at ``path`` is the layer's MLP, not a token mixer (Nemotron-H's MLP
            and MoE layers): the layer has no mixer contribution, and ``mlps_output`` reads it
            with ``contribution``.

    Example:
        >>> Mixer("linear_attn", "gated_deltanet")
        >>> Mixer("mixer", "moe", module_class="MoE", is_mlp=True)
    """

    path: str
    kind: str
    contribution: Contribution = MODULE_OUTPUT
    module_class: str | None = None
    mlp: Contribution | None = None
    is_mlp: bool = False


@dataclass(frozen=True)
class StreamLayout:
    """How a model's token-indexed tensors differ from (batch, seq, ...).

    Attributes:
        sequence_first: The model holds them as (seq, batch, ...) (XLNet transposes its
            input ids on entry and its output back before the head).
        prefix_positions: Config key of a number of positions the model prepends to every
            row inside its forward (CPM-Ant's ``"prompt_length"`` learned prompt tokens);
            the standard view starts after them. ``None``: none.
    """

    sequence_first: bool = False
    prefix_positions: str | None = None

    @property
    def is_standard(self) -> bool:
        """Whether tensors are already (batch, seq, ...) with one position per input token."""
        return not self.sequence_first and self.prefix_positions is None


#: A count or index read from the config: an int, a config key, or a tuple of terms summed
#: (each an int, a key, or ``"-key"`` for a subtracted key): ``("num_hidden_layers",
#: "-n_output_layers")``.
Bound = int | str | tuple[int | str, ...]


def resolve_bound(config: Any, bound: Bound) -> int:
    """The integer ``bound`` stands for under ``config``.

    Raises:
        InvalidInputError: a key the config lacks (names the key and the bound).

    Example:
        >>> resolve_bound(config, ("num_hidden_layers", "-n_output_layers"))
        3
    """
    from nnterp.errors import InvalidInputError

    terms = bound if isinstance(bound, tuple) else (bound,)
    total = 0
    for term in terms:
        if isinstance(term, int):
            total += term
            continue
        sign, key = (-1, term[1:]) if term.startswith("-") else (1, term)
        value = config_value(config, (key,))
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidInputError(
                f"unrolled stack bound {bound!r}: the config has no integer {key!r} (got {value!r}); "
                "fix the spec's Unrolled segments to name the config's keys"
            )
        total += sign * value
    return total


@dataclass(frozen=True)
class Segment:
    """``repeats`` passes over the blocks ``start .. start + length - 1``, in order.

    Attributes:
        start: Index of the segment's first block in the layer list.
        length: Number of consecutive blocks.
        repeats: How many times the forward runs the whole range (a loop).

    Example:
        >>> Segment(start="n_input_layers", length="n_recurrent_layers", repeats="n_recurrent_loops")
    """

    start: Bound
    length: Bound
    repeats: Bound = 1


@dataclass(frozen=True)
class Loop:
    """``repeats`` passes over ``body``, in order: a loop holding segments and loops (HRM's
    ``H_cycles`` passes, each ``L_cycles`` passes over one stack then one over the other).

    Attributes:
        body: What one pass runs: `Segment` and `Loop` items, in call order.
        repeats: How many passes.

    Example:
        >>> Loop(body=(Loop((Segment(0, 1),), repeats="L_cycles"), Segment(1, 1)), repeats="H_cycles")
    """

    body: tuple[Segment | Loop, ...]
    repeats: Bound = 1


def _walk(items: tuple[Segment | Loop, ...], config: Any) -> list[int]:
    """The block index of every block call ``items`` make, in call order."""
    calls: list[int] = []
    for item in items:
        if isinstance(item, Loop):
            calls += _walk(item.body, config) * resolve_bound(config, item.repeats)
            continue
        start, length = resolve_bound(config, item.start), resolve_bound(config, item.length)
        calls += list(range(start, start + length)) * resolve_bound(config, item.repeats)
    return calls


@dataclass(frozen=True)
class Unrolled:
    """How a forward walks its block list when it calls some blocks several times (a looped
    transformer): the block calls, in order, as segments. The standard ``layers[j]`` is then
    the ``j``-th block call (`nnterp.unrolled`).

    Attributes:
        segments: The forward's passes over the block list, in call order (`Segment` and
            nested `Loop` items).
        ln_final_call: Which call of the final-norm module feeds ``lm_head`` when the forward
            calls it more than once (Dory also normalises each loop's restart with it);
            ``None``: it is called once.
        stacks: Paths (from the root) of further block lists the forward runs besides the
            spec's ``layers`` (HRM's ``model.H_module.layers``): block indices go on past the
            spec's list, through these in order (with one block per list, block 1 is the
            first of ``stacks[0]``).

    Example:
        >>> Unrolled(segments=(Segment(0, 1), Segment(1, 2, repeats=3), Segment(3, 1)))
    """

    segments: tuple[Segment | Loop, ...]
    ln_final_call: Bound | None = None
    stacks: tuple[str, ...] = ()

    def block_calls(self, config: Any) -> tuple[int, ...]:
        """The block index of every block call of one forward, in call order."""
        return tuple(_walk(self.segments, config))


@dataclass(frozen=True)
class VirtualBlocks:
    """Blocks that a model's forward runs as one loop over parallel module lists, with no
    module per block (XLM: ``attentions[i]``, ``layer_norm1[i]``, ``ffns[i]``,
    ``layer_norm2[i]``). nnterp groups the lists' ``i``-th modules into a block of its own,
    outside the model's module tree (`nnterp.virtual_blocks`); the spec's ``layers`` is the
    path, from the root, where that list of blocks is mounted.

    Block ``i``'s input is the stream its first part receives; it is read and written where
    the forward computes it: the output of ``stream_source`` for block 0, of block ``i - 1``'s
    ``output`` part after. Block ``i``'s output is the output of its ``output`` part.

    Attributes:
        parts: ``(name in the block, path of a module list from the root)`` pairs, in the order
            the loop calls them; ``self_attn`` and ``mlp`` name the standard parts.
        output: The part whose output is the block's output (the stream leaving it).
        stream_source: Module path (from the root) whose output is the stream entering block 0.
        stream_edited_in_place: The forward edits the stream in place after computing it (XLM
            multiplies it by the padding mask): a tensor written there is copied first, so the
            caller's is left alone. Values computed from a read inside the trace see the stream
            before that edit (at padding positions only, for XLM).

    Example:
        >>> VirtualBlocks(
        ...     parts=(("self_attn", "transformer.attentions"), ("mlp", "transformer.ffns"),
        ...            ("layer_norm2", "transformer.layer_norm2")),
        ...     output="layer_norm2", stream_source="transformer.layer_norm_emb")
    """

    parts: tuple[tuple[str, str], ...]
    output: str
    stream_source: str
    stream_edited_in_place: bool = False

    def __post_init__(self) -> None:
        names = [name for name, _ in self.parts]
        if self.output not in names or len(set(names)) != len(names):
            raise ValueError(
                f"VirtualBlocks: output {self.output!r} must be one of the parts' distinct names {names}"
            )


@dataclass(frozen=True)
class SubBlocks:
    """Block modules that each run several blocks in a row (LongCat-Flash's decoder layer:
    two attention/MLP sub-blocks, the stream between them a variable of its forward). nnterp
    gives every sub-block a block of its own, outside the model's module tree
    (`nnterp.virtual_blocks`), mounted at the spec's ``layers`` path: block ``j`` is sub-block
    ``j % len(parts)`` of block module ``j // len(parts)``.

    A block module's input enters its first sub-block, and its output leaves the last. The
    stream between sub-block ``k`` and ``k + 1`` is the value an assignment in the block
    module's forward binds, named as its NNsight ``.source`` names it (``between[k]``:
    ``"hidden_states_4"``, the 5th assignment to ``hidden_states``): read and written there,
    so a write reaches every later use of that variable (the next residual add included).

    Attributes:
        blocks: Path, from the root, of the list of block modules (``"model.layers"``).
        parts: Per sub-block, ``(name in the block, path from the block module)`` pairs in
            call order; the first part receives the stream entering the sub-block.
        between: Per boundary between sub-blocks, the ``.source`` operation of the block
            module's forward binding the stream that crosses it.
        mlp_contributions: Per sub-block, where its MLP contribution is read when not as the
            spec's ``mlp_contribution`` says (``None``: as it says); LongCat's second sub-block
            also adds the shortcut MoE's output, so its own MLP's output alone is no contribution.

    Example:
        >>> SubBlocks("model.layers", parts=((("self_attn", "self_attn.0"), ("mlp", "mlps.0")),
        ...                                  (("self_attn", "self_attn.1"), ("mlp", "mlps.1"))),
        ...           between=("hidden_states_4",))
    """

    blocks: str
    parts: tuple[tuple[tuple[str, str], ...], ...]
    between: tuple[str, ...]
    mlp_contributions: tuple[Contribution | None, ...] = ()

    def __post_init__(self) -> None:
        if len(self.between) != len(self.parts) - 1 or not all(self.parts):
            raise ValueError(
                f"SubBlocks: {len(self.parts)} sub-blocks (each with parts) need {len(self.parts) - 1} "
                f"between labels, got {self.between}"
            )


@dataclass(frozen=True)
class ArchitectureSpec:
    """Where the standard parts live in one family of HuggingFace causal LMs.

    Attributes:
        name: Short name of the family (``"llama"``), shown by ``nnterp plugins``.
        model_classes: Names of the HF classes covered (matched against the model's MRO, so a
            subclass is covered too).
        layers: Path of the list of decoder blocks from the model root.
        self_attn: Path of the attention module inside one block; ``None`` if absent
            (state-space models).
        mlp: Path of the MLP (or MoE) module inside one block; ``None`` if absent.
        ln_final: Path of the final norm; ``None`` if the model has none.
        lm_head: Path of the unembedding.
        embed_tokens: Path of the token embedding.
        attention_probabilities: Operation chain locating attention probabilities (see
            `DEFAULT_ATTENTION_PROBABILITIES`), or several chains tried in order, the first whose
            calls the forward makes (a transformers release that rewrote the attention: GPT-J
            calls ``attention_interface`` from 5.24, its own ``_attn`` before); ``None`` if the
            attention computes none.
        num_heads_keys, hidden_size_keys, vocab_size_keys, num_layers_keys: config attribute
            names tried in order.
        logits_postprocess: What the model does to ``lm_head``'s output before returning
            logits, as ``(operation, config_key)`` pairs applied in order; operations are
            ``"softcap"`` (``tanh(x / c) * c``), ``"multiply"`` and ``"divide"``. Used by
            ``project_on_vocab`` so a lens of the last layer equals the model's logits.
        tiny_config: Config overrides that make a tiny random model of this family valid
            (used by `nnterp.testing`).
        q_proj, k_proj, v_proj: Paths, from the attention module, of the separate query, key
            and value projections (``None``: the architecture has none, e.g. a fused one).
        qkv_proj: Path of a fused query/key/value projection, used when the separate ones
            are not found (GPT-2 ``"c_attn"``, GPT-NeoX ``"query_key_value"``).
        qkv_layout: How ``qkv_proj``'s output is split (one of `QKV_LAYOUTS`).
        o_proj: Path, from the attention module, of the output projection; its input holds
            every head's output side by side (``heads_output``).
        rotary_embedding: Name of the function the attention forward calls to rotate queries
            and keys (found by name with `nnterp.attention.find_call`; it must return
            ``(queries, keys)`` shaped (batch, heads, seq, head_dim)); ``None`` when
            positions are not rotary (GPT-2).
        num_kv_heads_keys: config attribute names giving the number of key/value heads; used
            only when the projections' sizes cannot tell (fused ``"interleaved_heads"``).
        attention_heads_merged: The attention computes its scores and probabilities over the
            batch and head dimensions merged, (batch * heads, query, key) (``torch.bmm``-style
            BART decoders: XGLM, MVP, TrOCR); nnterp reads them as (batch, heads, query, key).
        qk_head_dim_keys: config attribute names giving the size of one query/key head, when
            it differs from the value heads' (the output projection's input per head):
            MiMo-V2-Flash's ``("head_dim",)`` (192, values 128). ``()``: one head size.
        position_ids_from_mask: Left-padded batches get position ids counted from each row's
            first real token (nnsight supplies them). ``False`` for models that derive
            positions from the padded ``input_ids`` themselves (RoBERTa's ``padding_idx``
            convention), which must receive none.
        attention_sinks: The attention has learned sinks (extra softmax logits that attend to
            nothing, as in gpt-oss): the probabilities over the real keys sum to at most 1.
        attention_contribution, mlp_contribution: Where the attention's and the MLP's
            contributions to the residual stream are read (see `Contribution`); the
            default is each module's own output.
        mixers: For hybrids and state-space models, the token mixers a layer may hold, tried
            in order per layer (see `Mixer`); empty: every layer's mixer is ``self_attn``,
            softmax attention.
        post_norm: The blocks normalise after the residual add (BERT, GPT-1): no sublayer
            output is an additive contribution. ``True``, or ``(config_key, value)`` when
            the config decides (OPT's ``("do_layer_norm_before", False)``).
        bidirectional: Every position attends to the whole input, later tokens included (a
            masked-LM checkpoint of a family that also has causal ones): the logits are
            masked-LM predictions, not next-token ones, and loading warns
            (`nnterp.errors.BidirectionalModelWarning`). ``True``, or ``(config_key, value)``
            when the config decides (XLM's ``("causal", False)``).
        non_additive: Why the blocks add no sublayer contribution to an unscaled residual
            stream although they are not post-norm (a rescaled residual, a residual read from
            a mixture of earlier blocks), reported by ``support()``; ``None``: they do.
        embedding_projection: Module path (from the root) that maps the embeddings into the
            residual stream when their width differs (OPT ``project_in``); ``None``: none.
        unembedding_projection: Module path (from the root) between the final norm and
            ``lm_head`` (OPT ``project_out``); ``None``: none.
        vision_layers: A vision-language model's vision-tower blocks (a module list), exposed as
            ``model.vision_layers``; ``None`` for text-only models.
        optional_parts: Standard parts that some configs of the family leave out (OPT-350m
            has no final norm): resolved to ``None`` there instead of failing.
        residual_streams: Config key of the number of parallel residual streams, for models
            whose residual is several streams that each block reads a mix of and writes back
            into (hyper-connections: DeepSeek-V4's and HunYuan-V4's ``hc_mult``). Their blocks
            read and write (batch, seq, streams, hidden): ``streams_input``/``streams_output``;
            the single-stream sites are then unavailable (declare them in ``unavailable_sites``).
            ``None``: one residual stream.
        streams_head: Module path (from the root) that collapses the residual streams into the
            one state the final norm receives (DeepSeek-V4's ``model.hc_head``), so that
            `project_on_vocab` and the logit lens read streams as the model's own head does.
        streams_packing: How a block's input and output tensor holds the ``residual_streams``
            (one of `STREAMS_PACKINGS`): ``"stacked"`` (batch, seq, streams, hidden) or
            ``"flattened"`` (batch, seq, streams * hidden: Qwen4-Exp). ``streams_input`` and
            ``streams_output`` read and write a (batch, seq, streams, hidden) view of it either
            way, and `project_on_vocab` packs streams back the model's way before its collapse
            (``streams_head``, or the final norm when the collapse is ``ln_final`` itself,
            Qwen4-Exp's ``hyper_connection_mixer``).
        stream_layout: How the model holds its token-indexed tensors when not as (batch, seq,
            ...) with one position per input token (see `StreamLayout`: XLNet's sequence-first
            stream, CPM-Ant's prepended prompt positions); every site with a token dimension
            reads and writes the standard view (`nnterp.stream_layout`).
        generation_unavailable: Why ``model.generate`` cannot give the sites their standard
            meaning on this family (XLNet generates in its two-stream mode, whose logits come
            from a query stream no site holds); generation then raises
            `UnavailableComponentError` with it. ``None``: generation is supported.
        conditional_layers: Blocks that the model runs only when its forward gets an input,
            ``{layer class name: input name}`` (Mllama's ``{"MllamaCrossAttentionDecoderLayer":
            "cross_attention_states"}``: text-only inputs skip its cross-attention layers). In a
            run without that input every site of such a layer raises `UnavailableComponentError`
            naming it, instead of waiting for a module that never runs.
        padding_side: The side nnterp pads batches on: ``"left"`` (every causal LM whose
            tokens only see earlier ones, so padding before a prompt changes nothing) or
            ``"right"`` for models that carry a recurrent state through every position
            (RWKV, xLSTM), where padding before a prompt would run through its state. Token
            positions count from each prompt's first real token either way.
        position_embedding: Module path (from the root) of a position embedding that counts
            positions itself and ignores left padding (BART-family decoders); nnterp gives each
            row its own positions in left-padded batches (`nnterp.row_positions`).
        down_proj: Path of the MLP's down projection, from the MLP module (from the layer
            when the spec has no MLP module); its input is ``mlps_hidden``. Candidates are
            tried in order (`DEFAULT_DOWN_PROJ`); ``None``: not readable.
        attention_norm: Path, from the layer, of the norm the token mixer's input goes
            through (`DEFAULT_ATTENTION_NORM`); ``None``: the mixer reads the stream itself.
        mlp_norm: Path, from the layer, of the norm the MLP's input goes through
            (`DEFAULT_MLP_NORM`); its input is ``layers_mid`` on sequential blocks. ``None``:
            the MLP reads the stream itself (OLMo-2); ``()``: the spec does not say.
        parallel_blocks: The mixer and the MLP both read the block's input (GPT-J, Cohere,
            Phi-1/2), so there is no stream between them: ``True``, or ``(config_key, value)``
            pairs of which any one makes them parallel (GPT-NeoX's
            ``(("use_parallel_residual", True),)``).
        attention_scores: Operation chain to the softmax call whose input is
            ``attention_scores`` (as in ``attention_probabilities``); ``()``: derived from
            ``attention_probabilities`` (the first softmax call next to its last operation);
            ``None``: not readable.
        unavailable_sites: Sites of the table this family cannot offer although its modules
            are found, with the reason (``{"ln_final_scale": "the final norm also normalises
            the embeddings, ..."}``): ``support()`` reports it and the accessor refuses.
        side_attention: Path(s), from the layer, of a softmax attention that some layers run
            *besides* their token mixer and before it, without adding its output to the
            residual stream (Zamba's shared transformer block, whose output is added to the
            Mamba mixer's input: ``"shared_transf.self_attn"``). Layers holding it offer
            ``attention_probabilities`` (and ``attention_scores``) read in it; their mixer stays
            the one in ``mixers``. ``None``: every softmax attention is a layer's mixer.
        side_attention_reason: Why ``side_attention``'s output is no additive contribution to
            the residual stream (``attentions_output`` reports it on those layers).
        virtual_blocks: For a forward that loops over parallel module lists instead of
            calling one module per block (XLM: `VirtualBlocks`), or whose block modules each
            run several blocks (LongCat-Flash: `SubBlocks`), where the blocks' parts are and
            the streams between them; ``layers`` is then where nnterp mounts its blocks.
            ``None``: each block module is one block.
        unrolled: For a forward that calls some blocks several times (a looped transformer:
            Dory's recurrent blocks run once per loop), the block calls in order (see
            `Unrolled`): the standard ``layers[j]`` is then the ``j``-th block call and
            ``num_layers`` the number of calls. ``None``: each block runs once, in order.
    """

    name: str
    model_classes: tuple[str, ...]
    layers: PathSpec = "model.layers"
    self_attn: PathSpec = "self_attn"
    mlp: PathSpec = "mlp"
    ln_final: PathSpec = "model.norm"
    lm_head: PathSpec = "lm_head"
    embed_tokens: PathSpec = "model.embed_tokens"
    attention_probabilities: Chain | tuple[Chain, ...] | None = DEFAULT_ATTENTION_PROBABILITIES
    num_heads_keys: tuple[str, ...] = ("num_attention_heads", "n_head", "num_heads", "n_heads")
    hidden_size_keys: tuple[str, ...] = ("hidden_size", "n_embd", "d_model", "dim")
    vocab_size_keys: tuple[str, ...] = ("vocab_size",)
    num_layers_keys: tuple[str, ...] = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
    logits_postprocess: tuple[tuple[str, str], ...] = ()
    tiny_config: Mapping[str, Any] = field(default_factory=dict)
    q_proj: PathSpec = "q_proj"
    k_proj: PathSpec = "k_proj"
    v_proj: PathSpec = "v_proj"
    qkv_proj: PathSpec = None
    qkv_layout: str = "blocks"
    o_proj: PathSpec = "o_proj"
    rotary_embedding: str | None = "apply_rotary_pos_emb"
    num_kv_heads_keys: tuple[str, ...] = ("num_key_value_heads", "num_kv_heads", "n_head_kv")
    qk_head_dim_keys: tuple[str, ...] = ()
    attention_heads_merged: bool = False
    attention_sinks: bool = False
    position_ids_from_mask: bool = True
    attention_contribution: Contribution = MODULE_OUTPUT
    mlp_contribution: Contribution = MODULE_OUTPUT
    mixers: tuple[Mixer, ...] = ()
    post_norm: bool | tuple[str, Any] = False
    bidirectional: bool | tuple[str, Any] = False
    non_additive: str | None = None
    embedding_projection: str | None = None
    unembedding_projection: str | None = None
    optional_parts: tuple[str, ...] = ()
    position_embedding: str | None = None
    padding_side: str = "left"
    conditional_layers: Mapping[str, str] = field(default_factory=dict)
    residual_streams: str | None = None
    streams_head: str | None = None
    streams_packing: str = "stacked"
    stream_layout: StreamLayout = StreamLayout()
    generation_unavailable: str | None = None
    vision_layers: PathSpec = None
    down_proj: PathSpec = DEFAULT_DOWN_PROJ
    attention_norm: PathSpec = DEFAULT_ATTENTION_NORM
    mlp_norm: PathSpec = DEFAULT_MLP_NORM
    parallel_blocks: bool | tuple[tuple[str, Any], ...] = False
    attention_scores: tuple[str, ...] | None = ()
    unavailable_sites: Mapping[str, str] = field(default_factory=dict)
    side_attention: PathSpec = None
    side_attention_reason: str | None = None
    unrolled: Unrolled | None = None
    virtual_blocks: VirtualBlocks | SubBlocks | None = None

    def __post_init__(self) -> None:
        if isinstance(self.model_classes, str):
            object.__setattr__(self, "model_classes", (self.model_classes,))
        if self.qkv_layout not in QKV_LAYOUTS:
            raise ValueError(
                f"spec {self.name!r}: unknown qkv_layout {self.qkv_layout!r}; use one of {list(QKV_LAYOUTS)}"
            )
        if self.streams_packing not in STREAMS_PACKINGS:
            raise ValueError(
                f"spec {self.name!r}: streams_packing must be one of {list(STREAMS_PACKINGS)}, "
                f"got {self.streams_packing!r}"
            )
        if self.padding_side not in PADDING_SIDES:
            raise ValueError(
                f"spec {self.name!r}: padding_side must be one of {list(PADDING_SIDES)}, got {self.padding_side!r}"
            )
        for operation, _ in self.logits_postprocess:
            if operation not in LOGIT_OPERATIONS:
                raise ValueError(
                    f"spec {self.name!r}: unknown logits_postprocess operation {operation!r}; "
                    f"use one of {sorted(LOGIT_OPERATIONS)}"
                )

    def with_classes(self, *model_classes: str, **changes: Any) -> ArchitectureSpec:
        """A copy of this spec for other classes, e.g. a family that names things alike.

        Example:
            >>> MISTRAL = LLAMA.with_classes("MistralForCausalLM", name="mistral")
        """
        return dataclasses.replace(self, model_classes=tuple(model_classes), **changes)

    def is_post_norm(self, config: Any) -> bool:
        """Whether this model's blocks normalise after the residual add (see ``post_norm``)."""
        return _flag_holds(self.post_norm, config)

    def is_bidirectional(self, config: Any) -> bool:
        """Whether this model's positions see the whole input (see ``bidirectional``)."""
        return _flag_holds(self.bidirectional, config)

    def is_parallel(self, config: Any) -> bool:
        """Whether this model's mixer and MLP both read the block's input (see ``parallel_blocks``)."""
        if isinstance(self.parallel_blocks, tuple):
            return any(config_value(config, (key,)) == value for key, value in self.parallel_blocks)
        return bool(self.parallel_blocks)

    def layer_mixers(self) -> tuple[Mixer, ...]:
        """The mixers tried per layer: ``mixers``, or the ``self_attn`` path as attention."""
        if self.mixers:
            return self.mixers
        return tuple(Mixer(path, "attention", self.attention_contribution) for path in self.path("self_attn"))

    def path(self, part: str) -> tuple[str, ...]:
        """The candidate paths of a standard part, in the order they are tried."""
        value = getattr(self, part)
        if value is None:
            return ()
        return (value,) if isinstance(value, str) else tuple(value)


LOGIT_OPERATIONS = ("softcap", "multiply", "divide")
#: The sides a spec may pad batches on.
PADDING_SIDES = ("left", "right")


def _attribute(holder: Any, name: str) -> Any:
    """``getattr(holder, name, None)``, also ``None`` for an attribute a heterogeneous config
    sets per layer (reading it globally raises transformers' `AmbiguousGlobalPerLayerAttributeError`,
    a ``RuntimeError`` that ``getattr``'s default does not catch)."""
    try:
        return getattr(holder, name, None)
    except RuntimeError as error:
        # Only a config of transformers >= 5.24 raises it, so that module is imported already;
        # nnterp.spec itself must not import transformers (the pytest plugin imports it).
        module = sys.modules.get("transformers.integrations.heterogeneity")
        ambiguous = getattr(module, "AmbiguousGlobalPerLayerAttributeError", None)
        if ambiguous is not None and isinstance(error, ambiguous):
            return None
        raise


def _layer_config(holder: Any, layer: int) -> Any:
    """Layer ``layer``'s config of ``holder`` (``per_layer_config[layer]``), or ``holder`` when it
    is homogeneous or has not that many layers."""
    if not _attribute(holder, "is_heterogeneous"):
        return holder
    per_layer = _attribute(holder, "per_layer_config")
    if per_layer is None or isinstance(per_layer, Mapping):
        return holder
    try:
        return per_layer[layer]
    except (AttributeError, IndexError, TypeError, ValueError):
        return holder


def _flag_holds(flag: bool | tuple[str, Any], config: Any) -> bool:
    """A spec flag: ``True``/``False``, or ``(config_key, value)``, true when the config sets it."""
    if isinstance(flag, tuple):
        key, value = flag
        return config_value(config, (key,)) == value
    return bool(flag)


def config_value(config: Any, keys: tuple[str, ...], layer: int | None = None) -> Any:
    """The first of ``keys`` that ``config`` (or its ``text_config``) sets to a non-None value; a
    dotted key (``"text_config.hidden_size"``) names a nested config's attribute.

    An attribute a heterogeneous config (transformers' ``per_layer_config``) sets per layer
    has no global value: it reads as ``None`` unless ``layer`` is given, in which case that
    layer's value is read (``config.per_layer_config[layer]``).

    Example:
        >>> config_value(gemma4_config, ("head_dim",))            # differs per layer
        >>> config_value(gemma4_config, ("head_dim",), layer=5)   # a full-attention layer
        512
    """
    for holder in (config, _attribute(config, "text_config")):
        if holder is None:
            continue
        if layer is not None:
            holder = _layer_config(holder, layer)
        for key in keys:
            value = holder
            for name in key.split("."):
                value = _attribute(value, name)
            if value is not None:
                return value
    return None
