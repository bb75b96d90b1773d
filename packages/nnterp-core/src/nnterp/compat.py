"""nnterp 1.x's ways of describing a model, mapped onto 2.0's architecture specs, and the
check that nnterp 1.x is not installed in the same environment.

This module is also importable under 1.x's name, ``nnterp.rename_utils``
(``from nnterp.rename_utils import RenameConfig`` keeps working).

nnterp 1.x described a model's module names with a `RenameConfig` (``attn_name=``,
``layers_name=``, ...) turned into NNsight aliases. Here each field becomes candidate paths
of an `nnterp.spec.ArchitectureSpec`, tried before the paths of the spec a plugin provides
for the model's class, so ``StandardizedTransformer(model, rename_config=...)`` and
``ModuleAccessor(model, rename_config=...)`` keep working.

Example:
    >>> from nnterp import StandardizedTransformer
    >>> from nnterp.compat import RenameConfig
    >>> config = RenameConfig(attn_name="custom_attention", mlp_name=["feed_forward", "ffn"])
    >>> model = StandardizedTransformer(hf_model, tokenizer, rename_config=config)
"""

from __future__ import annotations

import dataclasses
import functools
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from nnterp._install_guard import ConflictingInstallError, legacy_distribution_version, refuse_legacy_install
from nnterp.errors import InvalidInputError, RenamingError

if TYPE_CHECKING:
    import torch

    from nnterp.spec import ArchitectureSpec

#: A 1.x name field: one module name (or dotted path), several, or unset.
NameSpec = Union[str, "list[str]", "tuple[str, ...]", None]

#: Containers nnterp 1.x renamed to ``model`` (``transformer.h`` became ``model.h``).
CONTAINERS = ("model", "transformer", "gpt_neox", "decoder", "language_model", "model.decoder", "model.language_model")

#: nnterp 1.x's alternative module names for each standard part, without container.
LEGACY_NAMES: dict[str, tuple[str, ...]] = {
    "layers": ("layers", "h", "blocks"),
    "self_attn": ("self_attn", "attn", "self_attention", "attention", "norm_attn_norm"),
    "mlp": ("mlp", "block_sparse_moe", "ffn"),
    "ln_final": ("norm", "final_layer_norm", "ln_f", "norm_f", "embedding_norm", "ln_final"),
    "lm_head": ("lm_head", "embed_out"),
    "embed_tokens": ("embed_tokens", "wte", "embed_in", "word_embeddings"),
}

#: Config attribute under which an explicit int given in a `RenameConfig` is stored, per size.
EXPLICIT_SIZE_KEYS = {
    "num_heads_keys": "nnterp_num_attention_heads",
    "hidden_size_keys": "nnterp_hidden_size",
    "vocab_size_keys": "nnterp_vocab_size",
}


class AttnProbFunction(ABC):
    """nnterp 1.x's base class of attention-probability locators: called with layer ``i``'s
    attention envoy inside a trace, it returns the operation whose output is the probabilities.

    `RenameConfig(attn_prob_source=...)` accepts an instance (or a plain function of the same
    signature) as 1.x did. Its NNsight ``.source`` names (``attention_interface_0``) are
    NNsight's and can change between versions; the call-name chain nnterp 2 uses
    (``attn_prob_source=("attention_interface", "nn.functional.dropout")``) does not.

    Example:
        >>> class Mine(AttnProbFunction):
        ...     def get_attention_prob_source(self, attention_module, return_module_source=False):
        ...         return attention_module.source.attention_interface_0
    """

    @abstractmethod
    def get_attention_prob_source(self, attention_module: Any, return_module_source: bool = False) -> Any:
        """The operation (envoy) whose output is the attention probabilities."""

    def __call__(self, attention_module: Any, return_module_source: bool = False) -> Any:
        return self.get_attention_prob_source(attention_module, return_module_source)


class LegacyProbabilityMethods:
    """nnterp 1.x's methods of ``model.attention_probabilities`` (mixed into its accessor).

    Example:
        >>> model.attention_probabilities.enabled
        True
        >>> model.attention_probabilities.check_source(layer=0)   # raises RenamingError if wrong
    """

    _model: Any

    @property
    def enabled(self) -> bool:
        """Whether attention probabilities can be read (``enable_attention_probs=True`` at load)."""
        return bool(self._model.attention_probabilities_enabled)

    def disable(self) -> None:
        """Turn attention probabilities off: later reads raise `UnavailableComponentError`."""
        self._model.attention_probabilities_enabled = False

    def check_source(self, layer: int = 0, allow_dispatch: bool = True, use_trace: bool = True) -> None:
        """Check, as nnterp 1.x did, that layer ``layer``'s probabilities have the shape
        (batch, heads, seq, seq), are distributions over keys, and that editing them changes the
        logits. ``allow_dispatch`` and ``use_trace`` are accepted for 1.x code (the check always
        runs one traced forward on the loaded weights).

        Raises:
            RenamingError: the probabilities fail one of the checks (the message says which).
            UnavailableComponentError: probabilities are off, or ``layer`` has no softmax attention.
        """
        import torch

        from nnterp.accessors import normalize_layer
        from nnterp.validation import edited_probabilities_logits, observe, probability_failures, probe_inputs

        model = self._model
        model._require_attention_probabilities()
        layer = normalize_layer(model, layer)
        inputs = probe_inputs(model, 1)
        seen = observe(model, inputs, [layer], probability_layer=layer)
        assert seen.probabilities is not None  # observe() read them at probability_layer
        failures = probability_failures(model, seen.probabilities, inputs["input_ids"].shape[1])
        if not failures and torch.equal(edited_probabilities_logits(model, inputs, layer), seen.logits):
            failures = ["editing the attention probabilities did not change the logits"]
        if failures:
            raise RenamingError(
                f"attention probabilities of layer {layer}: {failures[0]}. Fix the spec's "
                "attention_probabilities chain (or RenameConfig.attn_prob_source); "
                "`model.attention_probabilities.print_source()` shows the attention's forward."
            )


@dataclass
class RenameConfig:
    """nnterp 1.x's description of a model's module names (still accepted; see ``ArchitectureSpec``).

    Every field is optional. Names are tried before those of the spec a plugin gives for the
    model's class; root parts (``layers_name``, ``ln_final_name``, ``lm_head_name``) may be
    full dotted paths or names inside the model container (``model_name``, else ``model``,
    ``transformer``, ...).

    Attributes:
        attn_name: name(s) of each layer's attention module (standard ``self_attn``).
        mlp_name: name(s) of each layer's MLP module (``mlp``).
        ln_final_name: name(s) of the final norm (``ln_final``).
        lm_head_name: name(s) of the unembedding (``lm_head``).
        model_name: name(s) of the module holding the layers, norm and embeddings.
        layers_name: name(s) of the list of layers (``layers``).
        attn_prob_source: how to find attention probabilities. nnterp 2 finds them by the
            names of the calls in the attention's forward: give that chain as a tuple, e.g.
            ``("attention_interface", "nn.functional.dropout")``, or a 1.x `AttnProbFunction`
            (or function of the attention envoy), which is called as 1.x called it.
        ignore_mlp: the layers have no MLP module (``mlp`` becomes unavailable).
        ignore_attn: the layers have no attention module.
        attn_head_config_key, hidden_size_config_key, vocab_size_config_key: extra config
            key(s) for the number of heads, the hidden size and the vocabulary size, tried
            after the default ones, or the number itself (an int).

    Example:
        >>> RenameConfig(model_name="backbone", layers_name="stack", attn_name="mixer",
        ...              hidden_size_config_key="width", attn_head_config_key=4)
    """

    attn_name: NameSpec = None
    mlp_name: NameSpec = None
    ln_final_name: NameSpec = None
    lm_head_name: NameSpec = None
    model_name: NameSpec = None
    layers_name: NameSpec = None
    attn_prob_source: Any = None
    ignore_mlp: bool | None = None
    ignore_attn: bool | None = None
    attn_head_config_key: str | list[str] | int | None = None
    hidden_size_config_key: str | list[str] | int | None = None
    vocab_size_config_key: str | list[str] | int | None = None


def _names(value: NameSpec, field: str) -> list[str]:
    if value is None:
        return []
    values = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(name, str) and name for name in values):
        raise InvalidInputError(f"RenameConfig.{field} must be a module name or a list of names, got {value!r}")
    return values


def _unique(paths: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(paths))


def generic_spec(model_class_name: str) -> ArchitectureSpec:
    """A spec made of nnterp 1.x's generic module names, for a class no plugin covers.

    Example:
        >>> generic_spec("MyForCausalLM").path("layers")[:3]
        ('model.layers', 'model.h', 'model.blocks')
    """
    from nnterp.spec import ArchitectureSpec

    def rooted(part: str) -> tuple[str, ...]:
        return _unique([f"{container}.{name}" for container in CONTAINERS for name in LEGACY_NAMES[part]])

    return ArchitectureSpec(
        name=f"nnterp 1.x names for {model_class_name}",
        model_classes=(),
        layers=rooted("layers"),
        self_attn=LEGACY_NAMES["self_attn"],
        mlp=LEGACY_NAMES["mlp"],
        ln_final=rooted("ln_final"),
        lm_head=LEGACY_NAMES["lm_head"] + rooted("lm_head"),
        embed_tokens=rooted("embed_tokens"),
    )


def _probability_locator(source: Any) -> Any:
    """``RenameConfig.attn_prob_source`` as a spec's ``attention_probabilities``: a chain of call
    names, or a 1.x locator (an `AttnProbFunction` or a function of the attention envoy)."""
    if callable(source):
        return source
    if isinstance(source, str):
        source = (source,)
    if isinstance(source, (tuple, list)) and source and all(isinstance(s, str) for s in source):
        return tuple(source)
    raise InvalidInputError(
        f"RenameConfig.attn_prob_source must be a chain of call names, e.g. "
        f"('attention_interface', 'nn.functional.dropout'), or an nnterp 1.x AttnProbFunction; got {source!r}. "
        "`model.attention_probabilities.print_source()` shows the attention's forward."
    )


def spec_from_rename_config(
    model: torch.nn.Module, base: ArchitectureSpec | None, rename_config: RenameConfig
) -> ArchitectureSpec:
    """``base`` (the plugin's spec for ``model``, or `generic_spec` when none) with the
    module names and config keys of a 1.x ``rename_config`` tried first.

    An int size (``attn_head_config_key=4``) is recorded on ``model.config`` under
    `EXPLICIT_SIZE_KEYS` (an attribute no HF code reads), so it wins over the config's keys.

    Raises:
        InvalidInputError: a field of the wrong type.

    Example:
        >>> spec = spec_from_rename_config(hf_model, None, RenameConfig(layers_name="stack"))
        >>> spec.path("layers")[0]
        'stack'
    """
    if not isinstance(rename_config, RenameConfig):
        raise InvalidInputError(
            f"rename_config must be an nnterp.compat.RenameConfig, got {type(rename_config).__name__}; "
            "or describe the model with spec=ArchitectureSpec(...) / rename={...}."
        )
    spec = base if base is not None else generic_spec(type(model).__name__)
    containers = _names(rename_config.model_name, "model_name")
    changes: dict[str, Any] = {}
    fields = {"layers": "layers_name", "ln_final": "ln_final_name", "lm_head": "lm_head_name"}
    for part in ("layers", "ln_final", "lm_head", "embed_tokens"):
        given = _names(getattr(rename_config, fields[part]), fields[part]) if part in fields else []
        if not given and not containers:
            continue
        short_names = [path.rsplit(".", 1)[-1] for path in spec.path(part)] + list(LEGACY_NAMES[part])
        in_containers = [f"{container}.{name}" for container in [*containers, *CONTAINERS] for name in given]
        in_containers += [f"{container}.{name}" for container in containers for name in short_names]
        changes[part] = _unique(given + in_containers + list(spec.path(part)))
    for part, field, ignore in (
        ("self_attn", "attn_name", rename_config.ignore_attn),
        ("mlp", "mlp_name", rename_config.ignore_mlp),
    ):
        if ignore:
            changes[part] = None
            continue
        given = _names(getattr(rename_config, field), field)
        if given:
            changes[part] = _unique(given + list(spec.path(part)))
    source = rename_config.attn_prob_source
    if source is not None:
        changes["attention_probabilities"] = _probability_locator(source)
    config = getattr(model, "config", None)
    for spec_field, value, name in (
        ("num_heads_keys", rename_config.attn_head_config_key, "attn_head_config_key"),
        ("hidden_size_keys", rename_config.hidden_size_config_key, "hidden_size_config_key"),
        ("vocab_size_keys", rename_config.vocab_size_config_key, "vocab_size_config_key"),
    ):
        if value is None:
            continue
        current = tuple(getattr(spec, spec_field))
        if isinstance(value, bool) or not isinstance(value, (int, str, list, tuple)):
            raise InvalidInputError(f"RenameConfig.{name} must be a config key, a list of keys or an int, got {value!r}")
        if isinstance(value, int):
            if config is None:
                raise InvalidInputError(f"RenameConfig.{name}={value}: the model has no config to record it on.")
            setattr(config, EXPLICIT_SIZE_KEYS[spec_field], value)
            changes[spec_field] = (EXPLICIT_SIZE_KEYS[spec_field], *current)
        else:
            changes[spec_field] = _unique(list(current) + _names(value, name))
    return dataclasses.replace(spec, **changes)


#: nnterp 1.x's NNsight alias table, ``{standard name: native names}``; a name starting with
#: ``model.`` was also given under each container (``model.transformer.layers``, ...).
LEGACY_ALIASES: dict[str, tuple[str, ...]] = {
    "model": ("transformer", "gpt_neox", "decoder", "language_model"),
    "layers": ("h", "blocks", "model.layers"),
    "self_attn": ("attn", "self_attention", "attention", "norm_attn_norm"),
    "mlp": ("block_sparse_moe", "ffn"),
    "ln_final": ("final_layer_norm", "ln_f", "norm_f", "norm", "embedding_norm", "model.ln_final"),
    "lm_head": ("embed_out",),
    "embed_tokens": ("wte", "embed_in", "word_embeddings", "model.embed_tokens"),
}


def get_rename_dict(rename_config: RenameConfig | None = None) -> dict[str, str]:
    """nnterp 1.x's NNsight alias table ``{native name: standard name}``, for wrapping a model
    with plain NNsight (``NNsight(model, rename=get_rename_dict())``).

    `StandardizedTransformer` does not need it: it resolves exact paths from the spec (pass
    ``rename_config=`` to it instead).

    Example:
        >>> get_rename_dict()["transformer"], get_rename_dict()["attn"]
        ('model', 'self_attn')
    """
    table: dict[str, str] = {}
    if rename_config is not None:
        for field, standard in (
            ("model_name", "model"),
            ("layers_name", "layers"),
            ("attn_name", "self_attn"),
            ("mlp_name", "mlp"),
            ("ln_final_name", "ln_final"),
            ("lm_head_name", "lm_head"),
        ):
            for name in _names(getattr(rename_config, field), field):
                table[name] = standard
    containers = LEGACY_ALIASES["model"]
    for standard, names in LEGACY_ALIASES.items():
        for name in names:
            table[name] = standard
            if name.startswith("model."):
                for container in containers:
                    table[name.replace("model.", f"model.{container}.", 1)] = standard
    return table


class ModuleAccessor:
    """The PyTorch modules of a HuggingFace model under the standard names, without NNsight::

        ModuleAccessor
        ├── embed_tokens
        ├── layers
        │   ├── self_attn
        │   └── mlp
        ├── ln_final
        └── lm_head

    Args:
        model: the HuggingFace model (a ``torch.nn.Module``).
        rename_config: a 1.x `RenameConfig` for models with custom module names.
        rename: extra ``{native path: standard name}`` entries, as for `StandardizedTransformer`.

    Raises:
        RenamingError: a standard part cannot be found (the message lists candidates).

    Example:
        >>> accessor = ModuleAccessor(hf_model)
        >>> accessor.get_attention(0) is hf_model.model.layers[0].self_attn
        True
    """

    def __init__(
        self,
        model: torch.nn.Module,
        rename_config: RenameConfig | None = None,
        rename: dict[str, str] | None = None,
    ) -> None:
        from nnterp.plugins import get_registry
        from nnterp.renaming import apply_user_rename, resolve_paths, unresolved_message

        spec = get_registry().spec_for_model(model)
        if rename_config is not None:
            spec = spec_from_rename_config(model, spec, rename_config)
        spec = apply_user_rename(model, spec, rename)
        if spec is None:
            raise RenamingError(
                unresolved_message(model, "none registered", [f"an architecture spec for {type(model).__name__}"])
            )
        self._model = model
        self.spec = spec
        self.paths = resolve_paths(model, spec)

    def _root(self, part: str) -> torch.nn.Module:
        from nnterp.errors import UnavailableComponentError

        path = self.paths.get(part)
        if path is None:
            raise UnavailableComponentError(f"{type(self._model).__name__} has no {part} module (spec {self.spec.name!r}).")
        return self._model.get_submodule(path)

    def _in_layer(self, layer: int, part: str) -> torch.nn.Module:
        from nnterp.errors import UnavailableComponentError
        from nnterp.inputs import normalize_index

        layers = self.get_layers()
        block = layers[normalize_index(layer, len(layers), "layer")]
        path = self.paths.get(part)
        if path is None:
            raise UnavailableComponentError(f"{type(self._model).__name__} layers have no {part} module.")
        return block.get_submodule(path)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("spec", "paths"):
            raise AttributeError(name)
        if name in ("embed_tokens", "layers", "ln_final", "lm_head"):
            return self._root(name)
        import torch

        if not hasattr(self._model, name):
            # nnterp 1.x's renamed backbone: ``accessor.model`` is GPT-2's ``transformer``.
            for path, aliases in self._legacy_tree.items():
                if name in aliases:
                    return self._model.get_submodule(path)
        value = getattr(self._model, name)
        if not isinstance(value, torch.nn.Module):
            raise AttributeError(f"Attribute {name} is not a module")
        return value

    @functools.cached_property
    def _legacy_tree(self) -> dict[str, list[str]]:
        from nnterp.renaming import legacy_tree_aliases

        return legacy_tree_aliases(self._model, self.paths)

    @functools.cached_property
    def nn_model(self) -> Any:
        """The model wrapped in a plain ``nnsight.NNsight`` with the standard names as aliases
        (``nn_model.layers[0].self_attn``, and 1.x's renamed backbone ``nn_model.model``), as in
        nnterp 1.x; built on first use.

        Example:
            >>> with accessor.nn_model.trace(input_ids):
            ...     h = accessor.nn_model.layers[0].output.save()
        """
        from nnsight import NNsight

        from nnterp.renaming import bind_displaced, rename_mapping, split_aliases, with_legacy_tree

        renames = with_legacy_tree(rename_mapping(self.paths), self._legacy_tree)
        aliases, displaced = split_aliases(self._model, self.paths, renames)
        wrapped = NNsight(self._model, rename=aliases)
        bind_displaced(wrapped, self.paths, displaced)
        return wrapped

    def get_embed_tokens(self) -> torch.nn.Module:
        """The token embedding module."""
        return self._root("embed_tokens")

    def get_layers(self) -> torch.nn.ModuleList:
        """The list of decoder layers."""
        return self._root("layers")  # type: ignore[return-value]

    def get_attention(self, layer: int) -> torch.nn.Module:
        """Layer ``layer``'s attention module."""
        return self._in_layer(layer, "self_attn")

    def get_mlp(self, layer: int) -> torch.nn.Module:
        """Layer ``layer``'s MLP module."""
        return self._in_layer(layer, "mlp")

    def get_unembed_norm(self) -> torch.nn.Module:
        """The final norm."""
        return self._root("ln_final")

    def get_unembed(self) -> torch.nn.Module:
        """The unembedding (``lm_head``)."""
        return self._root("lm_head")


__all__ = [
    "AttnProbFunction",
    "RenamingError",
    "LEGACY_ALIASES",
    "ConflictingInstallError",
    "ModuleAccessor",
    "RenameConfig",
    "generic_spec",
    "get_rename_dict",
    "LegacyProbabilityMethods",
    "legacy_distribution_version",
    "refuse_legacy_install",
    "spec_from_rename_config",
]
