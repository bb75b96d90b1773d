"""`StandardizedTransformer`: any HF causal LM, seen through one standard tree of modules."""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import TYPE_CHECKING, Any, Sequence, cast

import torch
from nnsight.modeling.transformers import TransformersModel

from nnterp import inputs as input_checks
from nnterp.accessors import (
    AttentionProbabilitiesAccessor,
    ContributionAccessor,
    LayerAccessor,
    StreamsAccessor,
    child_envoy as _child,
    first_tensor,
    normalize_layer,
    replace_first,
)
from nnterp.errors import BidirectionalModelWarning, InvalidInputError, RenamingError, UnavailableComponentError
from nnterp.layer_structure import resolve_layer_structure
from nnterp.loading import load_model_tokenizer_processor, prepare_tokenizer
from nnterp.nnsight_seams import run_state
from nnterp.renaming import (
    apply_user_rename,
    bind_displaced,
    legacy_tree_aliases,
    rename_mapping,
    resolve_paths,
    split_aliases,
    unresolved_message,
    with_legacy_tree,
)
from nnterp.spec import ArchitectureSpec, Contribution, config_value
from nnterp.stream_layout import from_standard, to_standard
from nnterp.unembedding import postprocess_logits

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from nnterp.compat import RenameConfig
    from nnterp.site_accessors import AttentionScoresAccessor, HeadResultsAccessor, LayersMidAccessor, MlpHiddenAccessor, NormScaleAccessor

    from nnterp.validation import OutputStructure


class StandardizedTransformer(TransformersModel):
    """An NNsight model whose modules carry standard names, whatever the architecture.

    The standard tree::

        embed_tokens, layers[i].self_attn, layers[i].mlp, ln_final, lm_head

    and accessors usable inside ``model.trace(...)``, each readable and assignable:
    ``layers_input``, ``layers_output``, ``attentions_input``, ``attentions_output``,
    ``mlps_input``, ``mlps_output``, ``attention_probabilities`` (with
    ``enable_attention_probs=True``), ``token_embeddings``, ``logits``, ``next_token_probs``,
    ``input_ids``, ``attention_mask``. The original HuggingFace forward runs unchanged.

    Args:
        model: A hub id or local directory (a ``str`` or a ``pathlib.Path``; loaded with
            ``AutoModelForCausalLM``), or an already-loaded ``PreTrainedModel``.
        tokenizer: The tokenizer; loaded from ``model`` when it is a name. Required with a
            model object. Never modified: a left-padding copy with a pad token is used.
        enable_attention_probs: Expose ``attention_probabilities`` (loads/switches the model to
            eager attention, which materialises them).
        check_renaming: Validate the standard tree at load (one tiny traced forward; a passed
            validation of the same model class, config, spec and versions is reused, see
            `nnterp.validation_cache`; ``NNTERP_VALIDATION_CACHE=0`` turns that off).
        allow_dispatch: Accepted for compatibility with nnterp 1.x; models are always loaded
            eagerly here.
        trust_remote_code: Passed to transformers as given; nnterp never enables it itself.
        remote: Run traces on NDIF (through nnsight) by default. A model given by name is then
            built on the meta device from its config (no weights on the client) and validated
            with shape checks only (`nnterp.meta_model`).
        rename: Extra NNsight aliases ``{native path: standard name}``; beats every plugin spec.
        spec: An `ArchitectureSpec` to use instead of the plugins' one.
        rename_config: nnterp 1.x's `nnterp.compat.RenameConfig`: its module names and
            config keys are tried before the spec's (see `nnterp.compat.spec_from_rename_config`).
        check_attn_probs_with_trace, allow_multimodal: accepted for compatibility with nnterp
            1.x, no effect (attention probabilities are always checked with a trace; layers of
            several kinds are supported).
        **kwargs: Passed to ``from_pretrained`` (``dtype``, ``device_map``, ``gguf_file``,
            ``revision``, ``attn_implementation``, ...).

    Example:
        >>> model = StandardizedTransformer("gpt2")
        >>> with model.trace("The capital of France is"):
        ...     h5 = model.layers_output[5].save()             # (1, seq, hidden)
        ...     probs = model.next_token_probs.save()           # (1, vocab)
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | torch.nn.Module,
        tokenizer: Any = None,
        *,
        enable_attention_probs: bool = False,
        check_renaming: bool = True,
        allow_dispatch: bool = True,
        trust_remote_code: bool = False,
        remote: bool = False,
        rename: dict[Any, Any] | None = None,
        spec: ArchitectureSpec | None = None,
        rename_config: RenameConfig | None = None,
        check_attn_probs_with_trace: bool = True,
        allow_multimodal: bool = False,
        **kwargs: Any,
    ) -> None:
        # nnterp 1.x: the second positional argument was trust_remote_code; check_attn_probs_with_trace
        # and allow_multimodal are accepted and have no effect (the checks always run a trace; hybrid
        # and multimodal layer types are supported).
        if isinstance(tokenizer, bool):
            warnings.warn(
                "StandardizedTransformer(model, True/False): passing trust_remote_code as the second "
                "positional argument is deprecated (it is now the tokenizer); pass trust_remote_code=...",
                DeprecationWarning,
                stacklevel=2,
            )
            trust_remote_code, tokenizer = tokenizer, None
        processor = kwargs.pop("processor", None)
        if isinstance(model, os.PathLike):  # a pathlib.Path to a saved model directory
            model = os.fspath(model)
        if isinstance(model, str):
            attn_implementation = kwargs.pop("attn_implementation", None)
            if enable_attention_probs:
                attn_implementation = "eager"
            if remote is True:  # NDIF holds the weights: build the tree on the meta device
                from nnterp.meta_model import load_meta_model

                if attn_implementation is not None:
                    kwargs["attn_implementation"] = attn_implementation
                hf_model, tokenizer = load_meta_model(
                    model, trust_remote_code=trust_remote_code, tokenizer=tokenizer, **kwargs
                )
            else:
                hf_model, tokenizer, processor = load_model_tokenizer_processor(
                    model,
                    attn_implementation=attn_implementation,
                    trust_remote_code=trust_remote_code,
                    tokenizer=tokenizer,
                    processor=processor,
                    **kwargs,
                )
        elif isinstance(model, torch.nn.Module):
            hf_model = model
            if kwargs:
                raise InvalidInputError(
                    f"loading options {sorted(kwargs)} only apply when the model is given by name; "
                    "a model object is used as it is."
                )
            if enable_attention_probs:
                _switch_to_eager(hf_model)
        else:
            raise InvalidInputError(
                f"model must be a hub id, a local path or a transformers model, got {type(model).__name__}"
            )
        input_checks.require_causal(hf_model)
        base_spec = spec or _spec_from_plugins(hf_model)
        if rename_config is not None:
            from nnterp.compat import spec_from_rename_config

            base_spec = spec_from_rename_config(hf_model, base_spec, rename_config)
        resolved_spec = apply_user_rename(hf_model, base_spec, rename)
        if resolved_spec is None:
            message = unresolved_message(
                hf_model,
                "none registered",
                [f"an architecture spec for {type(hf_model).__name__} (no installed plugin covers it)"],
            )
            model_type = getattr(getattr(hf_model, "config", None), "model_type", None)
            from nnterp.plugins import get_registry

            known = get_registry().unsupported_models.get(str(model_type))
            if known is not None:
                message += f"\nKnown limitation of {model_type} (reported by its plugin): {known}."
            raise RenamingError(message)
        if tokenizer is None and processor is not None:
            tokenizer = getattr(processor, "tokenizer", None)
        tokenizer = prepare_tokenizer(tokenizer, padding_side=resolved_spec.padding_side)
        if processor is not None:
            # Image inputs go through the processor: it must pad and tokenize as the tokenizer.
            processor.tokenizer = tokenizer
        if resolved_spec.virtual_blocks is not None:  # no block modules: nnterp groups the parts
            from nnterp import virtual_blocks

            virtual_blocks.mount(hf_model, resolved_spec)
        paths = resolve_paths(hf_model, resolved_spec)
        # Mounted virtual blocks are no NNsight module: their envoys are nnterp's (installed below).
        renamed = paths if resolved_spec.virtual_blocks is None else {**paths, "layers": None}
        # A standard name that is already a native child (ModernBERT-decoder's ``lm_head``, the
        # prediction head before its unembedding ``decoder``) is bound after NNsight's rename.
        # nnterp 1.x's renamed backbone too (``model.model.layers``).
        native_blocks = resolved_spec.virtual_blocks is None and resolved_spec.unrolled is None
        legacy = legacy_tree_aliases(hf_model, paths, skip=() if native_blocks else ("layers",))
        aliases, displaced = split_aliases(
            hf_model, paths, {**with_legacy_tree(rename_mapping(renamed), legacy), **(rename or {})}
        )

        with warnings.catch_warnings():
            # nnterp reaches such submodules (BERT's ``output``) under nnsight's prefixed name.
            warnings.filterwarnings("ignore", message=r"Module .* has a submodule named", category=UserWarning)
            from nnterp.meta_model import on_meta

            # A meta-device model (weights on NDIF) stays there: the pipeline must not move it.
            placement = {"device": "meta"} if on_meta(hf_model) else {}
            # A vision-language model traced with images (``trace(text=..., images=...)``) runs
            # its inputs through the processor, as NNsight's image-text-to-text models do.
            vision = {"processor": processor, "task": "image-text-to-text"} if processor is not None else {}
            super().__init__(hf_model, tokenizer=tokenizer, rename=aliases, **placement, **vision)
        bind_displaced(self, paths, displaced)
        # NNsight pads causal LMs on the left; the spec may pad on the right (recurrent models).
        self.tokenizer.padding_side = resolved_spec.padding_side
        self.spec = resolved_spec
        self.paths = paths
        if resolved_spec.is_bidirectional(hf_model.config):
            warnings.warn(
                BidirectionalModelWarning(
                    f"{type(hf_model).__name__} ({resolved_spec.name}) is loaded from a bidirectional "
                    "(masked-LM) checkpoint: every position sees the whole input, later tokens "
                    "included, so its logits, and the logit lens, patchscopes and next_token_probs "
                    "built on them, are masked-LM predictions, not next-token ones. Load a causal "
                    "checkpoint of the family for next-token analyses."
                ),
                stacklevel=2,
            )
        self.remote = remote
        self.allow_dispatch = allow_dispatch
        self.attention_probabilities_enabled = enable_attention_probs
        if enable_attention_probs and resolved_spec.attention_probabilities is None:
            raise UnavailableComponentError(
                f"{type(hf_model).__name__} ({resolved_spec.name}) computes no explicit attention "
                "probabilities; load it with enable_attention_probs=False."
            )

        self.layer_structure = resolve_layer_structure(hf_model, resolved_spec, paths)
        if resolved_spec.virtual_blocks is not None:
            from nnterp import virtual_blocks

            virtual_blocks.install(self)
        if resolved_spec.unrolled is not None:  # a looped forward: one standard layer per block call
            from nnterp import unrolled

            unrolled.install(self, resolved_spec.unrolled)
        if resolved_spec.position_embedding is not None:
            from nnterp import row_positions

            row_positions.install(self, resolved_spec.position_embedding)
        self.layers_input = LayerAccessor(self, lambda i: self.layers[i], "input", "layer inputs", site="layers_input")
        self.layers_output = LayerAccessor(self, lambda i: self.layers[i], "output", "layer outputs", site="layers_output")
        self.streams_input = StreamsAccessor(
            self, lambda i: self.layers[i], "input", "residual streams entering each layer", site="streams_input"
        )
        self.streams_output = StreamsAccessor(
            self, lambda i: self.layers[i], "output", "residual streams leaving each layer", site="streams_output"
        )
        self.mixers_input = LayerAccessor(self, self._mixer, "input", "mixer inputs")
        self.mixers_output = ContributionAccessor(self, self._mixer_contribution, "mixer contributions")
        self.attentions_input = LayerAccessor(self, self._attention, "input", "attention inputs")
        self.attentions_output = ContributionAccessor(
            self, self._attention_contribution, "attention contributions"
        )
        self.mlps_input = LayerAccessor(
            self, self._mlp_input_module, "input", "MLP inputs", tokens_flattened=self._mlp_tokens_flattened
        )
        self.mlps_output = ContributionAccessor(self, self._mlp_contribution, "MLP contributions")
        self.attention_probabilities = AttentionProbabilitiesAccessor(self)
        # Per-head views (batch, seq, heads, head_dim); see nnterp.heads.
        from nnterp.heads import HeadsAccessor

        self.queries = HeadsAccessor(self, "queries")
        self.keys = HeadsAccessor(self, "keys")
        self.values = HeadsAccessor(self, "values")
        self.queries_rotated = HeadsAccessor(self, "queries_rotated")
        self.keys_rotated = HeadsAccessor(self, "keys_rotated")
        self.heads_output = HeadsAccessor(self, "heads_output")

        from nnterp.meta_model import on_meta, validate_shapes

        if on_meta(hf_model):
            self.output_structure = validate_shapes(self)
        else:
            self.output_structure = _checked_output_structure(self, check_renaming, rename)
        from nnterp.status import warn_if_untested

        warn_if_untested(self)

    # -- the standard tree -----------------------------------------------------------------

    def _attention(self, layer: int) -> Any:
        if self.layer_structure.side_attention(layer) is not None:
            why = self.layer_structure.attention_unavailable(layer)
            raise UnavailableComponentError(f"{self.spec.name}: {why}; use mixers_input/mixers_output for the layer's update.")
        if self.paths["self_attn"] is None:
            raise UnavailableComponentError(
                f"{self.spec.name} layers have no attention module (spec self_attn=None): "
                "attentions_input/attentions_output/attention_probabilities are unavailable."
            )
        why = self.layer_structure.attention_unavailable(layer)
        if why is not None:
            raise UnavailableComponentError(f"{self.spec.name}: {why}; use mixers_input/mixers_output for it.")
        return self.layers[layer].self_attn

    def _mixer(self, layer: int) -> Any:
        mixer = self.layer_structure.mixers[layer]
        if mixer is None:
            raise UnavailableComponentError(f"{self.spec.name}: layer {layer} has no token mixer the spec names.")
        if mixer.kind == "attention" and mixer.path == self.paths["self_attn"]:
            return self.layers[layer].self_attn
        return _child(self.layers[layer], mixer.path)

    def _before_inside_mixer(self, layer: int) -> None:
        """Called before any value computed inside layer ``layer``'s mixer is read: what the
        mixer's contribution needs from the mixer's input (an in-module residual) is read now,
        while the forward is still there, so the contribution stays readable afterwards."""
        if self.layer_structure.mixer_unavailable(layer) is not None:
            return
        self.mixers_output.prefetch(layer)
        if self.layer_structure.attention_unavailable(layer) is None:
            self.attentions_output.prefetch(layer)

    def _require_contributions(self, why: str | None) -> None:
        if why is not None:
            raise UnavailableComponentError(f"{self.spec.name}: {why}.")

    def _mixer_contribution(self, layer: int) -> tuple[Any, Any, Contribution]:
        self._require_contributions(self.layer_structure.mixer_unavailable(layer))
        mixer = self.layer_structure.mixers[layer]
        assert mixer is not None
        layer_envoy = self.layers[layer]
        envoy = self._mixer(layer) if mixer.contribution.output is None else _child(layer_envoy, mixer.contribution.output)
        return layer_envoy, envoy, mixer.contribution

    def _attention_contribution(self, layer: int) -> tuple[Any, Any, Contribution]:
        self._attention(layer)
        return self._mixer_contribution(layer)

    def _mlp(self, layer: int) -> Any:
        site = self.layer_structure.mlps[layer]
        if site is None or site.path is None:
            raise UnavailableComponentError(
                f"{self.spec.name}: layer {layer} has no MLP module (spec mlp={self.spec.mlp!r}); "
                "mlps_input/mlps_output read the feed-forward where the spec names its contribution site."
            )
        if site.path == self.paths["mlp"]:
            return self.layers[layer].mlp
        return _child(self.layers[layer], site.path)

    def _mlp_input_module(self, layer: int) -> Any:
        site = self.layer_structure.mlps[layer]
        if site is not None and site.contribution.input is not None:
            return _child(self.layers[layer], site.contribution.input)
        return self._mlp(layer)

    def _mlp_tokens_flattened(self, layer: int) -> bool:
        site = self.layer_structure.mlps[layer]
        return site is not None and site.contribution.tokens_flattened

    def _mlp_contribution(self, layer: int) -> tuple[Any, Any, Contribution]:
        self._require_contributions(self.layer_structure.mlp_unavailable(layer))
        site = self.layer_structure.mlps[layer]
        assert site is not None
        layer_envoy = self.layers[layer]
        output = site.contribution.output
        envoy = self._mlp(layer) if output is None else _child(layer_envoy, output)
        return layer_envoy, envoy, site.contribution

    @property
    def _model(self) -> torch.nn.Module:
        """The wrapped HuggingFace model, under the name nnterp 1.x's NNsight gave it (NNsight
        0.8 calls it ``_module``).

        Example:
            >>> model._model is model._module
            True
        """
        return self._module

    @property
    def attentions(self) -> list[Any]:
        """The attention module (envoy) of every layer; ``None`` for a hybrid's layers whose
        mixer is not softmax attention (see `attention_layers`)."""
        if self.paths["self_attn"] is None:
            return [None] * self.num_layers
        return [self._attention(i) if i in self.layer_structure.attention_layers else None for i in range(self.num_layers)]

    @property
    def mixers(self) -> list[Any]:
        """The token-mixer module (envoy) of every layer (attention, or a hybrid's other
        mixers); ``None`` for a layer without one."""
        return [None if mixer is None else self._mixer(i) for i, mixer in enumerate(self.layer_structure.mixers)]

    @property
    def mlps(self) -> list[Any]:
        """The MLP module (envoy) of every layer; ``None`` for a layer without an MLP module."""
        return [
            None if site is None or site.path is None else self._mlp(i)
            for i, site in enumerate(self.layer_structure.mlps)
        ]

    @property
    def layer_kinds(self) -> tuple[str | None, ...]:
        """Per layer, the kind of its token mixer: ``"attention"`` (softmax attention),
        ``"mamba"``, ``"gated_deltanet"``, ``"short_conv"``, ... (``None``: none found).

        Example:
            >>> model.layer_kinds            # a Qwen3-Next-style hybrid
            ('gated_deltanet', 'gated_deltanet', 'gated_deltanet', 'attention')
        """
        return self.layer_structure.kinds

    @property
    def attention_layers(self) -> list[int]:
        """Indices of the layers whose token mixer is softmax attention (every layer on a
        plain transformer, some on a hybrid, none on a state-space model)."""
        return list(self.layer_structure.attention_layers)

    def support(self) -> dict[str, Any]:
        """What this model offers, per standard site (see `nnterp.sites`).

        Returns:
            ``{site: None}`` when the site is available on every layer, ``{site: reason}``
            when it is available on none, and ``{site: {layer: reason or None}}`` when layers
            differ (hybrids). Reasons say why ("needs eager attention: load with
            enable_attention_probs=True", "layer 3 is a mamba mixer, not softmax attention", ...).

        Example:
            >>> model.support()["attention_probabilities"]
            'attention probabilities are off: load with StandardizedTransformer(..., enable_attention_probs=True)'
        """
        from nnterp.support import site_support

        return site_support(self)

    def _require_attention_probabilities(self) -> None:
        if not self.attention_probabilities_enabled:
            raise UnavailableComponentError(
                "attention probabilities are off: load with "
                "StandardizedTransformer(..., enable_attention_probs=True)."
            )

    # --- issue 18 sites ---
    # Accessors of the site table's derived sites (nnterp.sites), each built on first use.

    def _derived_site(self, name: str) -> Any:
        built: dict[str, Any] = self.__dict__.setdefault("_nnterp_derived_sites", {})
        if name not in built:
            from nnterp.site_accessors import build_accessor

            built[name] = build_accessor(self, name)
        return built[name]

    @property
    def attentions_norm_scale(self) -> NormScaleAccessor:
        """What the norm before each attention divides by: ``[i]`` is (batch, seq, 1), float32,
        read-only (see `nnterp.norm_scales`)."""
        return cast("NormScaleAccessor", self._derived_site("attentions_norm_scale"))

    @property
    def attention_scores(self) -> AttentionScoresAccessor:
        """Pre-softmax attention scores, mask included: ``[i]`` is (batch, heads, query, key),
        assignable; eager attention (see `nnterp.attention_scores`)."""
        return cast("AttentionScoresAccessor", self._derived_site("attention_scores"))

    @property
    def heads_result(self) -> HeadResultsAccessor:
        """Each head's output through its slice of ``o_proj``: ``[i]`` is (batch, seq, heads,
        hidden), assignable (see `nnterp.heads`)."""
        return cast("HeadResultsAccessor", self._derived_site("heads_result"))

    @property
    def layers_mid(self) -> LayersMidAccessor:
        """The residual stream between each block's mixer and MLP (TransformerLens ``resid_mid``):
        ``[i]`` is (batch, seq, hidden), assignable (see `nnterp.layers_mid`)."""
        return cast("LayersMidAccessor", self._derived_site("layers_mid"))

    @property
    def mlps_norm_scale(self) -> NormScaleAccessor:
        """What the norm before each MLP divides by: ``[i]`` is (batch, seq, 1), float32,
        read-only (see `nnterp.norm_scales`)."""
        return cast("NormScaleAccessor", self._derived_site("mlps_norm_scale"))

    @property
    def mlps_hidden(self) -> MlpHiddenAccessor:
        """MLP hidden (neuron) activations, the down projection's input: ``[i]`` is
        (batch, seq, intermediate), assignable (see `nnterp.mlp_hidden`)."""
        return cast("MlpHiddenAccessor", self._derived_site("mlps_hidden"))

    @property
    def ln_final_scale(self) -> torch.Tensor:
        """What the final norm divides its input by: (batch, seq, 1), float32, read-only; inside
        a trace (see `nnterp.norm_scales`)."""
        from nnterp.norm_scales import ln_final_scale

        return ln_final_scale(self)

    @ln_final_scale.setter
    def ln_final_scale(self, value: torch.Tensor) -> None:
        from nnterp.norm_scales import refuse_final_write

        refuse_final_write()

    # --- end of issue 18 sites ---

    # -- sizes ------------------------------------------------------------------------------

    @property
    def num_layers(self) -> int:
        """Number of decoder layers: on an unrolled stack (the spec's ``unrolled``), the
        number of block calls one forward makes."""
        schedule = self._layer_schedule()
        if schedule is not None:
            return len(schedule)
        return len(self._module.get_submodule(self.paths["layers"]))

    def _layer_schedule(self) -> tuple[tuple[int, int], ...] | None:
        """``(block index, call number)`` per standard layer on an unrolled stack, else ``None``."""
        from nnterp.unrolled import SCHEDULE_KEY

        schedule: tuple[tuple[int, int], ...] | None = self.__dict__.get(SCHEDULE_KEY)
        return schedule

    def block_index(self, layer: int) -> int:
        """The index, in the HF block list, of the block standard layer ``layer`` runs (``layer``
        itself unless the spec's ``unrolled`` re-runs blocks). Negative layers count from the end.

        Raises:
            LayerIndexError: ``layer`` out of range.

        Example:
            >>> [model.block_index(j) for j in range(model.num_layers)]   # Dory, 2 loops
            [0, 1, 2, 1, 2, 3]
        """
        layer = normalize_layer(self, layer)
        schedule = self._layer_schedule()
        return layer if schedule is None else schedule[layer][0]

    def layer_call(self, layer: int) -> int:
        """Which call of its block module standard layer ``layer`` is, counting from 0 in one
        forward (always 0 unless the spec's ``unrolled`` re-runs blocks).

        Raises:
            LayerIndexError: ``layer`` out of range.
        """
        layer = normalize_layer(self, layer)
        schedule = self._layer_schedule()
        return 0 if schedule is None else schedule[layer][1]

    def layer_module(self, layer: int) -> torch.nn.Module:
        """The HF block module standard layer ``layer`` runs (its call `layer_call`); outside
        a trace, e.g. for plain torch hooks or its weights.

        Raises:
            LayerIndexError: ``layer`` out of range.

        Example:
            >>> model.layer_module(0).self_attn.q_proj.weight.shape
        """
        from nnterp.unrolled import BLOCK_MODULES_KEY

        blocks: Any = self.__dict__.get(BLOCK_MODULES_KEY)
        if blocks is None:
            blocks = self._module.get_submodule(cast(str, self.paths["layers"]))
        module: torch.nn.Module = blocks[self.block_index(layer)]
        return module

    @property
    def hidden_size(self) -> int:
        """Width of the residual stream."""
        return int(config_value(self._module.config, self.spec.hidden_size_keys))

    @property
    def num_heads(self) -> int | None:
        """Number of attention (query) heads; ``None`` for attention-free models."""
        value = config_value(self._module.config, self.spec.num_heads_keys)
        return None if value is None else int(value)

    @property
    def attn_probs_available(self) -> bool:
        """Whether ``attention_probabilities`` can be read (nnterp 1.x's name; see `support()`).

        Example:
            >>> StandardizedTransformer("gpt2", enable_attention_probs=True).attn_probs_available
            True
        """
        return bool(self.attention_probabilities_enabled)

    def __repr__(self) -> str:
        """The standard tree and the HF module behind each standard name (`nnterp.model_repr`);
        ``print(model._module)`` shows the whole HF tree."""
        from nnterp.model_repr import standard_tree_repr

        return standard_tree_repr(self)

    @property
    def add_prefix_false_tokenizer(self) -> Any:
        """A copy of the tokenizer loaded with ``add_prefix_space=False`` (nnterp 1.x's name), so a
        word tokenizes as it would mid-text without a leading space. Built once, offline, from
        the tokenizer's own files; where the tokenizer has no such option it is the tokenizer.

        Example:
            >>> model.add_prefix_false_tokenizer("Paris", add_special_tokens=False).input_ids
            [40313]
        """
        cached = getattr(self, "_add_prefix_false_tokenizer", None)
        if cached is None:
            from nnterp.loading import tokenizer_without_prefix_space

            cached = self._add_prefix_false_tokenizer = tokenizer_without_prefix_space(self.tokenizer)
        return cached

    @property
    def input_size(self) -> torch.Size:
        """Shape of the traced input ids, ``(batch, seq)``. Inside a trace.

        Example:
            >>> with model.trace(["Hello", "The capital of France is"]):
            ...     batch, seq = model.input_size
        """
        return self.input_ids.shape

    @property
    def vocab_size(self) -> int:
        """Number of rows of the unembedding (its output size)."""
        head = self._module.get_submodule(self.paths["lm_head"])
        weight = getattr(head, "weight", None)
        if weight is not None:
            return int(weight.shape[0])
        return int(config_value(self._module.config, self.spec.vocab_size_keys))

    @property
    def max_positions(self) -> int | None:
        """The longest input the model accepts, when its config says."""
        return input_checks.max_positions(self._module.config)

    # -- whole-model accessors ---------------------------------------------------------------

    @property
    def token_embeddings(self) -> torch.Tensor:
        """Output of ``embed_tokens``: (batch, seq, hidden). Assignable."""
        return to_standard(self, first_tensor(self.embed_tokens.output))

    @token_embeddings.setter
    def token_embeddings(self, value: torch.Tensor) -> None:
        current = self.embed_tokens.output
        self.embed_tokens.output = replace_first(current, from_standard(self, first_tensor(current), value))

    @property
    def logits(self) -> torch.Tensor:
        """The model's output logits: (batch, seq, vocab). Assignable."""
        return self.output.logits

    @logits.setter
    def logits(self, value: torch.Tensor) -> None:
        self.output.logits = value

    @property
    def next_token_probs(self) -> torch.Tensor:
        """Softmax of each prompt's last token's logits: (batch, vocab) (the last column of a
        left-padded batch; each row's own last real token where the spec pads on the right)."""
        logits = self.logits
        if self.spec.padding_side == "left":
            return logits[:, -1, :].softmax(dim=-1)
        from nnterp.positions import absolute_positions, traced_attention_mask

        mask = traced_attention_mask(self, "next_token_probs")
        last = absolute_positions(mask, torch.full((mask.shape[0], 1), -1), "next_token_probs")[:, 0]
        rows = torch.arange(mask.shape[0])
        return logits[rows.to(logits.device), last.to(logits.device)].softmax(dim=-1)

    @property
    def input_ids(self) -> torch.Tensor:
        """The token ids the model runs on: (batch, seq), padded (left, or the spec's
        ``padding_side``)."""
        return self._root_input("input_ids")

    @property
    def attention_mask(self) -> torch.Tensor:
        """The attention mask: (batch, seq), 0 at padding."""
        return self._root_input("attention_mask")

    def _root_input(self, key: str) -> torch.Tensor:
        args, kwargs = self.inputs
        value = _forward_input(args, kwargs, key)
        if value is None:
            raise InvalidInputError(f"this trace's input has no {key!r}")
        return value

    # -- operations -------------------------------------------------------------------------

    @property
    def residual_sites(self) -> tuple[str, str]:
        """The sites holding the residual stream entering and leaving each block:
        ``("layers_input", "layers_output")``, or ``("streams_input", "streams_output")`` on
        models with several parallel residual streams (the spec's ``residual_streams``)."""
        if self.spec.residual_streams is None:
            return ("layers_input", "layers_output")
        return ("streams_input", "streams_output")

    @property
    def num_streams(self) -> int | None:
        """How many parallel residual streams the blocks carry, or ``None`` for one stream."""
        if self.spec.residual_streams is None:
            return None
        return int(config_value(self._module.config, (self.spec.residual_streams,)))

    def project_on_vocab(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Logits of a residual-stream state: ``lm_head(ln_final(h))`` plus the model's logit
        post-processing (e.g. Gemma-2 softcapping), so the last layer gives the model's logits.
        On models with several residual streams, (..., streams, hidden) states are packed as
        the model holds them (the spec's ``streams_packing``) and collapsed the model's own
        way: by its streams head (the spec's ``streams_head``, before the final norm), or by
        the final norm itself when that is the collapse (Qwen4-Exp's ``hyper_connection_mixer``,
        a spec with streams but no ``streams_head``).

        Args:
            hidden_states: (..., hidden), or (..., streams, hidden).

        Returns:
            (..., vocab) logits.

        Raises:
            InvalidInputError: a last dimension other than the hidden size, or a one-stream
                state on a model whose final norm reads all the streams at once.

        Example:
            >>> with model.trace("Hello"):
            ...     lens = model.project_on_vocab(model.layers_output[3]).save()
        """
        state = self.collapse_streams(hidden_states)
        normed = self.ln_final(state) if self.paths["ln_final"] is not None else state
        if self.unembedding_projection_module() is not None:
            normed = _child(self, cast(str, self.spec.unembedding_projection))(normed)
        logits = self.lm_head(normed)
        return postprocess_logits(logits, self.spec, self._module.config)

    def collapse_streams(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """What the final norm receives for ``hidden_states``: on models with several residual
        streams, (..., streams, hidden) states packed as the model holds them and collapsed its
        own way (the spec's ``streams_head``; left packed when the final norm is the collapse);
        other states unchanged.

        Args:
            hidden_states: (..., hidden), or (..., streams, hidden).

        Raises:
            InvalidInputError: a last dimension other than the hidden size, or a one-stream
                state on a model whose final norm reads all the streams at once.

        Example:
            >>> with model.trace("Hello"):                                # DeepSeek-V4
            ...     state = model.collapse_streams(model.streams_output[3]).save()   # (1, seq, hidden)
        """
        input_checks.require_hidden(hidden_states, self.hidden_size, "hidden_states")
        streams = self.num_streams
        is_streams = streams is not None and hidden_states.dim() >= 2 and hidden_states.shape[-2] == streams
        if streams is not None and self.spec.streams_head is not None and is_streams:
            head = _child(self, self.spec.streams_head)
            shape = hidden_states.shape
            packed = self.streams_output.pack(hidden_states.reshape(-1, 1, streams, shape[-1]))
            hidden_states = head(packed).reshape(*shape[:-2], shape[-1])
        elif streams is not None and self.spec.streams_head is None:
            if not is_streams:
                raise InvalidInputError(
                    f"hidden_states: {self.spec.name}'s final norm ({self.paths['ln_final']}) collapses its "
                    f"{streams} residual streams, so project_on_vocab needs (..., {streams}, {self.hidden_size}) "
                    f"streams (streams_input/streams_output), got {tuple(hidden_states.shape)}"
                )
            hidden_states = self.streams_output.pack(hidden_states)
        return hidden_states

    def unembedding_projection_module(self) -> torch.nn.Module | None:
        """The HF module between the final norm and ``lm_head`` (OPT's ``project_out``), or
        ``None`` when the residual stream has the unembedding's width."""
        return _optional_submodule(self._module, self.spec.unembedding_projection)

    def embedding_projection_module(self) -> torch.nn.Module | None:
        """The HF module mapping the token embeddings into the residual stream (OPT's
        ``project_in``), or ``None`` when the embeddings have the stream's width."""
        return _optional_submodule(self._module, self.spec.embedding_projection)

    def topk_tokens(self, hidden_states: torch.Tensor, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` tokens a hidden state predicts most (through `project_on_vocab`), as tensors.

        Args:
            hidden_states: (..., hidden).
            k: how many tokens.

        Returns:
            ``(probabilities, token_ids)``, each (..., k), most likely first.

        Example:
            >>> with model.trace("The capital of France is"):
            ...     probs, ids = model.topk_tokens(model.layers_output[-1][:, -1], k=3)
            ...     probs, ids = probs.save(), ids.save()
        """
        probs = self.project_on_vocab(hidden_states).softmax(dim=-1)
        return probs.topk(k, dim=-1)

    def probs_to_dict(self, tokens: torch.Tensor, probs: torch.Tensor) -> dict[str, float]:
        """``{token string: probability}`` for token ids ``tokens`` (k,) and ``probs`` (k,)
        (nnterp 1.x).

        Example:
            >>> model.probs_to_dict(torch.tensor([42]), torch.tensor([0.5]))
        """
        names = self.tokenizer.convert_ids_to_tokens(tokens.tolist())
        return {name: float(prob) for name, prob in zip(names, probs)}

    def get_topk_closest_tokens(
        self, hidden_state: torch.Tensor, k: int = 5
    ) -> dict[str, float] | list[dict[str, float]]:
        """The ``k`` tokens a hidden state predicts most, as nnterp 1.x returns them: a dict
        ``{token: probability}`` for a (hidden,) state, a list of them for (batch, hidden).
        Outside a trace (on saved states); `topk_tokens` gives tensors, inside a trace too.

        Raises:
            InvalidInputError: a state that is not (hidden,) or (batch, hidden).

        Example:
            >>> with model.trace("The capital of France is"):
            ...     h = model.layers_output[-1][0, -1].save()
            >>> model.get_topk_closest_tokens(h)      # {'ĠParis': 0.77, ...}
        """
        input_checks.require_hidden(hidden_state, self.hidden_size, "hidden_state")
        if hidden_state.dim() not in (1, 2):
            raise InvalidInputError(
                f"hidden_state has shape {tuple(hidden_state.shape)}: pass (hidden,) or (batch, hidden), "
                "or use topk_tokens for any shape."
            )
        module = self._module
        with torch.no_grad():
            state = hidden_state.to(module.get_input_embeddings().weight.device)
            norm = module.get_submodule(self.paths["ln_final"]) if self.paths["ln_final"] else None
            normed = first_tensor(norm(state)) if norm is not None else state
            projection = self.unembedding_projection_module()
            if projection is not None:
                normed = projection(normed)
            logits = postprocess_logits(module.get_submodule(self.paths["lm_head"])(normed), self.spec, module.config)
            top = logits.softmax(-1).topk(k, dim=-1)
        if hidden_state.dim() == 1:
            return self.probs_to_dict(top.indices, top.values)
        return [self.probs_to_dict(ids, probs) for ids, probs in zip(top.indices, top.values)]

    def steer(
        self,
        layers: int | Sequence[int],
        steering_vector: torch.Tensor,
        factor: float = 1.0,
        positions: int | Sequence[int] | None = None,
        token_positions: int | Sequence[int] | None = None,
        batch_index: int | Sequence[int] | None = None,
    ) -> None:
        """Add ``factor * steering_vector`` to the output of each of ``layers`` (inside a trace).

        ``positions`` is nnterp 1.x's deprecated name of ``token_positions`` (a
        ``DeprecationWarning``; same meaning).

        Args:
            layers: a layer index or several.
            steering_vector: (hidden,) — or broadcastable to the steered slice's (..., hidden).
                Converted to the activations' dtype and device.
            factor: scale of the vector.
            token_positions: positions to steer, counted within each prompt as everywhere in
                nnterp (`nnterp.positions`): ``0`` is each prompt's first real token, ``-1``
                its last, whatever the left padding; so a prompt is steered the same in a
                batch as alone. Default ``None``: every column of the batch, padding included.
                In a trace with several invokes, call ``steer`` with positions before reading
                any module (they need the forward's attention mask, read in forward order).
            batch_index: rows of the batch to steer (default all).

        Raises:
            InvalidInputError: wrong vector size, empty lists, positions asked after a module
                in a trace with several invokes.
            LayerIndexError: a layer or ``batch_index`` out of range.
            TokenPositionError: a position outside a steered prompt's tokens (names the prompt).

        Example:
            >>> with model.trace(["The weather today is", "Hi"]):
            ...     model.steer(layers=[1, 3], steering_vector=v, factor=0.5, token_positions=-1)
            ...     logits = model.logits.save()
        """
        from nnterp.positions import absolute_positions, as_position_list, traced_attention_mask

        if positions is not None:
            if token_positions is not None:
                raise InvalidInputError(
                    "Cannot specify both positions (nnterp 1.x's deprecated name) and token_positions "
                    "in steer(): pass token_positions only."
                )
            warnings.warn(
                "steer(positions=...) is deprecated: use token_positions=... (same meaning).",
                DeprecationWarning,
                stacklevel=2,
            )
            token_positions = positions
        layer_list = input_checks.layer_indices(self.num_layers, layers)
        vector = input_checks.require_steering_vector(steering_vector, self.hidden_size, factor)
        relative = None if token_positions is None else as_position_list(token_positions, "token_positions")
        mask = None if relative is None else traced_attention_mask(self, "steer()'s token_positions")
        for layer in sorted(set(layer_list)):
            hidden = self.layers_output[layer]
            batch, seq = hidden.shape[0], hidden.shape[1]
            rows = input_checks.index_list(batch_index, batch, "batch_index")
            row_index = torch.arange(batch) if rows is None else torch.tensor(rows)
            if relative is None or mask is None:
                columns = torch.arange(seq).expand(len(row_index), -1)
            elif tuple(mask.shape) != (batch, seq):
                raise InvalidInputError(
                    f"token_positions pick tokens of the whole input, but layer {layer}'s output "
                    f"holds {seq} of its {mask.shape[1]} positions (a later generation step?): pass "
                    "token_positions=None to steer what this step computes."
                )
            else:
                wanted = torch.tensor(relative).expand(len(row_index), -1)
                columns = absolute_positions(mask, wanted, "token_positions", rows=row_index.tolist())
            input_checks.require_broadcastable(
                vector, (len(row_index), columns.shape[1], hidden.shape[-1]), "steering_vector",
                f"layer {layer}'s steered tokens",
            )
            delta = factor * vector.to(device=hidden.device, dtype=hidden.dtype)
            steered = hidden.clone()
            grid = (row_index[:, None].to(hidden.device), columns.to(hidden.device))
            steered[grid] = steered[grid] + delta
            self.layers_output[layer] = steered

    def skip_layer(self, layer: int, skip_with: torch.Tensor | None = None) -> None:
        """Skip one layer: its output becomes ``skip_with`` (default: its own input).

        Example:
            >>> with model.trace("Hello"):
            ...     model.skip_layer(2)
            ...     logits = model.logits.save()
        """
        self.skip_layers(layer, layer, skip_with)

    def detect_layer_output_type(self) -> None:
        """nnterp 1.x's probe of whether layers return tuples: known from loading here, so this
        does nothing (kept so 1.x code runs)."""

    def skip_layers(
        self,
        start_layer: int,
        end_layer: int,
        skip_with: torch.Tensor | None = None,
        layer_returns_tuple: bool | None = None,
    ) -> None:
        """Skip layers ``start_layer`` to ``end_layer`` inclusive (inside a trace).

        The residual stream entering ``start_layer`` (or ``skip_with``) leaves ``end_layer``.
        ``layer_returns_tuple`` (nnterp 1.x) is accepted and not needed: loading knows it.
        """
        start = normalize_layer(self, start_layer)
        end = normalize_layer(self, end_layer)
        if end < start:
            raise InvalidInputError(f"skip_layers: end_layer {end_layer} comes before start_layer {start_layer}")
        entering = getattr(self, self.residual_sites[0])[start]
        replacement = entering if skip_with is None else skip_with
        if skip_with is not None and tuple(getattr(skip_with, "shape", ())) != tuple(entering.shape):
            raise InvalidInputError(
                f"skip_with has shape {tuple(getattr(skip_with, 'shape', ()))} but layer {start}'s "
                f"input has shape {tuple(entering.shape)}: pass a tensor of that shape."
            )
        if self.num_streams is not None:  # the streams view, packed back as the blocks hold it
            replacement = getattr(self, self.residual_sites[0]).pack(replacement)
        if not self.spec.stream_layout.is_standard:  # the positions the standard view hides pass through
            replacement = from_standard(self, first_tensor(self.layers[start].input), replacement)
        for layer in range(start, end + 1):
            self.layers[layer].skip(self.output_structure.wrap_layer_output(replacement))

    # -- tracing ----------------------------------------------------------------------------

    def _batch(self, invokes: list, fn: Any) -> tuple:
        # nnsight's batching step, overridden (a protected method): the one point where a
        # single-invoke run's whole input is known, and where position ids can be dropped.
        batched = super()._batch(invokes, fn)
        mask = _single_invoke_mask(invokes, batched)
        run_state(self)[_MASK_KEY] = mask
        if isinstance(batched, tuple) and len(batched) == 2 and isinstance(batched[1], dict):
            run_state(self)[_INPUTS_KEY] = {key for key, value in batched[1].items() if value is not None}
        if self.spec.padding_side == "right" and getattr(fn, "__name__", None) == "generate":
            padded = mask is not None and not bool(mask.all())
            if padded or len(invokes) > 1:
                raise InvalidInputError(
                    f"{self.spec.name} pads batches on the right (left padding would change what its "
                    "prompts compute), so new tokens of a shorter prompt would follow its padding: "
                    "generate prompts of equal token counts together, or one prompt at a time."
                )
        if self.spec.position_ids_from_mask or not isinstance(batched, tuple) or len(batched) != 2:
            return batched
        args, kwargs = batched
        if isinstance(kwargs, dict) and "position_ids" in kwargs:
            given = any("position_ids" in invoke_kwargs for _, invoke_kwargs in invokes)
            if not given:
                kwargs = {key: value for key, value in kwargs.items() if key != "position_ids"}
        return args, kwargs

    def run_input_names(self) -> set[str] | None:
        """The keyword inputs (``input_ids``, ``attention_mask``, ``pixel_values``, ...) of the
        forward being traced, or ``None`` outside a run."""
        return run_state(self).get(_INPUTS_KEY)

    def batch_attention_mask(self) -> torch.Tensor | None:
        """The attention mask (batch, seq) of the forward being traced, readable at any point
        of the trace body (``model.attention_mask`` must come before any module).

        None outside a running forward, and in traces with several invokes, whose bodies each
        see only their own rows.

        Example:
            >>> with model.trace(["Hi", "The capital of France is"]):
            ...     hidden = model.layers_output[2].save()
            ...     mask = model.batch_attention_mask()      # (2, seq), 0 at "Hi"'s padding
        """
        return run_state(self).get(_MASK_KEY)

    def _processed_media(self, inputs: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Text with images (``trace(text=..., images=...)`` or ``trace(prompts, images=...)``) run
        through the processor as one left-padded batch; other inputs unchanged."""
        from nnterp.vision_language import MEDIA_KEYS, processor_encoding

        if getattr(self, "processor", None) is None or not MEDIA_KEYS & set(kwargs):
            return inputs, kwargs
        return processor_encoding(self, inputs, kwargs)

    def trace(self, *inputs: Any, **kwargs: Any) -> Any:
        """Open a trace (see NNsight); the input is checked at nnterp's boundary first.

        Every input form is checked the same way (`nnterp.inputs.check_prompts`): strings,
        lists of strings, token-id lists and tensors, encodings. NNsight's errors about the
        trace body (a module read out of forward order, ...) come out as `TraceError` with
        the fix. Traces of one model are serialized: a trace started while another thread's
        trace of the same model runs waits for it (the forward runs when the ``with`` block
        exits, under the model's lock).

        Raises:
            InvalidInputError: an input of no accepted form, an empty prompt list or prompt,
                or a prompt longer than a learned-position model's maximum positions (past a
                RoPE model's ``max_position_embeddings``: a ``UserWarning``).
            TokenIdError: a token id outside the vocabulary.
            TraceError: NNsight refused the trace body (the message keeps NNsight's text).

        Example:
            >>> with model.trace(torch.tensor([[464, 3139, 286]])):
            ...     logits = model.logits.save()                 # (1, 3, vocab)
        """
        inputs, kwargs = self._processed_media(inputs, kwargs)
        if inputs:
            input_checks.check_prompts(self, inputs[0])
        if isinstance(kwargs.get("input_ids"), torch.Tensor):
            input_checks.check_prompts(self, kwargs["input_ids"], "input_ids")
        if "remote" not in kwargs:
            from nnterp.tracing import current_remote

            override = current_remote()  # an nnterp function's remote= (`nnterp.tracing.remote_runs`)
            if override:
                kwargs["remote"] = override
            elif self.remote:
                kwargs["remote"] = True
        if kwargs.get("remote"):
            _ship_nnterp_by_value()
        # Imported here: remote traces ship this method by value, and these hold locks.
        from nnterp.positions import locked_tracer_class, trace_lock

        if kwargs.get("trace", True) is False:
            with trace_lock(self), input_checks.nnsight_errors():
                return super().trace(*inputs, **kwargs)
        if not kwargs.get("remote"):  # a remote run serializes the tracer; the lock stays here
            kwargs.setdefault("tracer_cls", locked_tracer_class())
        return super().trace(*inputs, **kwargs)

    def interleave(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """NNsight's low-level run (every trace, ``generate`` and direct call ends here), under
        the model's trace lock, so a direct ``model.generate(...)`` is serialized too."""
        from nnterp.positions import running, trace_lock

        if getattr(fn, "__name__", None) == "generate":
            if self.spec.generation_unavailable is not None:
                raise UnavailableComponentError(
                    f"{self.spec.name}: generation is not supported: {self.spec.generation_unavailable}; "
                    "trace one forward per step with model.trace(...) instead of model.generate(...)."
                )
            if self.spec.unrolled is not None:
                raise UnavailableComponentError(
                    f"{self.spec.name}: generation is not supported on an unrolled stack (the spec's "
                    "unrolled: its standard layers are block calls pinned to their occurrence in the "
                    "first forward, so later generation steps would be read at the wrong call); trace "
                    "one forward per step with model.trace(...) instead of model.generate(...)."
                )
        with trace_lock(self), running(self):
            return super().interleave(fn, *args, **kwargs)


def _checked_output_structure(
    model: StandardizedTransformer, check_renaming: bool, rename: dict[Any, Any] | None
) -> OutputStructure:
    """Validate ``model`` (or reuse a stored validation of the same setup) and return how its
    layers shape their output."""
    from nnterp import validation_cache
    from nnterp.validation import OutputStructure, probe_output_structure, validate

    key = validation_cache.key_for(model, rename) if validation_cache.enabled() else None
    record = validation_cache.recall(key)
    if record is not None and (record["validated"] or not check_renaming):
        return OutputStructure(**record["output_structure"])
    structure = validate(model) if check_renaming else probe_output_structure(model)
    validation_cache.remember(key, {"validated": check_renaming, "output_structure": dataclasses.asdict(structure)})
    return structure


#: Where `StandardizedTransformer._batch` keeps a single-invoke run's attention mask, and the
#: names of the run's keyword inputs.
_MASK_KEY = "attention_mask"
_INPUTS_KEY = "input_names"


def _forward_input(args: Any, kwargs: Any, key: str) -> torch.Tensor | None:
    """``input_ids`` or ``attention_mask`` of a forward call's ``(args, kwargs)``, or None."""
    if not isinstance(kwargs, dict):
        return None
    if isinstance(kwargs.get(key), torch.Tensor):
        return kwargs[key]
    input_ids = kwargs.get("input_ids", args[0] if args else None)
    if not isinstance(input_ids, torch.Tensor):
        return None
    # transformers' generate drops an all-ones mask: no padding means every token counts.
    return input_ids if key == "input_ids" else torch.ones_like(input_ids)


def _single_invoke_mask(invokes: list, batched: Any) -> torch.Tensor | None:
    if len(invokes) != 1 or not isinstance(batched, tuple) or len(batched) != 2:
        return None
    return _forward_input(*batched, "attention_mask")


def _optional_submodule(module: torch.nn.Module, path: str | None) -> torch.nn.Module | None:
    if path is None:
        return None
    try:
        found = module.get_submodule(path)
    except AttributeError:
        return None
    return found


def _spec_from_plugins(model: torch.nn.Module) -> ArchitectureSpec | None:
    from nnterp.plugins import get_registry

    return get_registry().spec_for_model(model)


def _ship_nnterp_by_value() -> None:
    # The NDIF server does not have nnterp installed: its code travels with the request.
    from nnsight import ndif

    ndif.register("nnterp")


def _switch_to_eager(model: torch.nn.Module) -> None:
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) == "eager":
        return
    try:
        cast("PreTrainedModel", model).set_attn_implementation("eager")
    except Exception as error:  # noqa: BLE001 - surfaced as a typed error below
        raise InvalidInputError(
            f"enable_attention_probs=True needs eager attention, and switching this model to it "
            f"failed ({error!r}): load it with attn_implementation='eager'."
        ) from error


__all__: list[str] = ["StandardizedTransformer"]
