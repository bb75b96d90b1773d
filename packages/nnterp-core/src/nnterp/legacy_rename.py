"""``nnterp.rename_utils``: nnterp 1.x's renaming module, kept importable under its name.

Everything `nnterp.compat` offers (`RenameConfig`, `AttnProbFunction`, `get_rename_dict`,
`RenamingError`), plus 1.x's helpers that read sizes from a config and locate attention
probabilities. The size helpers use the same config keys as nnterp 2's architecture specs; the
probability locators find the operations by call name, so they keep working across NNsight
versions (1.x's read NNsight's numbered ``.source`` labels).

Example:
    >>> from nnterp.rename_utils import get_num_attention_heads, RenameConfig
    >>> get_num_attention_heads(hf_model)
    12
    >>> get_num_attention_heads(hf_model, rename_config=RenameConfig(attn_head_config_key=4))
    4
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Any, Literal

from nnterp.compat import *  # noqa: F403  (1.x's names live in nnterp.compat now)
from nnterp.compat import CONTAINERS, LEGACY_ALIASES, LEGACY_NAMES, RenameConfig, __all__ as _compat_names
from nnterp.errors import InvalidInputError, RenamingError
from nnterp.spec import ArchitectureSpec, chain_alternatives, config_value

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer

#: The parts `get_ignores` can name.
IgnoreType = Literal["mlp", "attention"]

#: Containers 1.x looked into for the standard modules.
MODEL_NAMES = [name for name in CONTAINERS if name != "model" and "." not in name]


def expand_path_with_model(paths: list[str]) -> list[str]:
    """``paths`` followed by each ``model.``-rooted one re-rooted under every 1.x container
    (``model.layers`` -> ``model.transformer.layers``, ...), as 1.x's alias table lists them.

    Example:
        >>> expand_path_with_model(["h", "model.layers"])[:3]
        ['h', 'model.layers', 'model.transformer.layers']
    """
    rooted = [path for path in paths if path.startswith("model.")]
    return [*paths, *(path.replace("model.", f"model.{container}.", 1) for container in MODEL_NAMES for path in rooted)]


ATTENTION_NAMES = list(LEGACY_NAMES["self_attn"][1:])
MLP_NAMES = list(LEGACY_NAMES["mlp"][1:])
LM_HEAD_NAMES = list(LEGACY_NAMES["lm_head"][1:])
LAYER_NAMES = expand_path_with_model(list(LEGACY_ALIASES["layers"]))
LN_NAMES = expand_path_with_model(list(LEGACY_ALIASES["ln_final"]))
EMBED_TOKENS_NAMES = expand_path_with_model(list(LEGACY_ALIASES["embed_tokens"]))


class IOType(Enum):
    """Whether an accessor reads a module's input or its output (1.x's enum)."""

    INPUT = "input"
    OUTPUT = "output"


def default_attn_head_config_keys() -> list[str]:
    """Config keys tried for the number of attention heads."""
    return list(ArchitectureSpec(model_classes=(), name="defaults").num_heads_keys)


def default_hidden_size_config_keys() -> list[str]:
    """Config keys tried for the hidden size."""
    return list(ArchitectureSpec(model_classes=(), name="defaults").hidden_size_keys)


def default_vocab_size_config_keys() -> list[str]:
    """Config keys tried for the vocabulary size."""
    return list(ArchitectureSpec(model_classes=(), name="defaults").vocab_size_keys)


def text_config(model: Any) -> Any:
    """The language model's config: ``config.text_config`` when the config has one."""
    config = model.config
    return getattr(config, "text_config", None) or config


def _config_size(model: Any, keys: list[str], given: Any, field: str, raise_error: bool) -> int | None:
    if isinstance(given, bool) or not isinstance(given, (type(None), int, str, list, tuple)):
        raise InvalidInputError(f"RenameConfig.{field} must be None, a config key, a list of keys or an int; got {given!r}")
    if isinstance(given, int):
        return given
    if isinstance(given, str):
        keys = [*keys, given]
    elif given is not None:
        keys = [*keys, *given]
    config = text_config(model)
    for key in keys:
        value = config_value(config, (key,))
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    if raise_error:
        raise RenamingError(
            f"none of the config keys {keys} is set on {type(model).__name__}'s config; pass the key or the "
            f"number itself as RenameConfig({field}=...)"
        )
    return None


def get_num_attention_heads(model: Any, raise_error: bool = True, rename_config: RenameConfig | None = None) -> int | None:
    """The number of attention heads in ``model``'s config (``RenameConfig.attn_head_config_key``
    adds a key or gives the number)."""
    given = None if rename_config is None else rename_config.attn_head_config_key
    return _config_size(model, default_attn_head_config_keys(), given, "attn_head_config_key", raise_error)


def get_hidden_size(model: Any, raise_error: bool = True, rename_config: RenameConfig | None = None) -> int | None:
    """The hidden size in ``model``'s config (``RenameConfig.hidden_size_config_key`` adds a key or
    gives the number)."""
    given = None if rename_config is None else rename_config.hidden_size_config_key
    return _config_size(model, default_hidden_size_config_keys(), given, "hidden_size_config_key", raise_error)


def get_vocab_size(model: Any, raise_error: bool = True, rename_config: RenameConfig | None = None) -> int | None:
    """The vocabulary size in ``model``'s config (``RenameConfig.vocab_size_config_key`` adds a key or
    gives the number)."""
    given = None if rename_config is None else rename_config.vocab_size_config_key
    return _config_size(model, default_vocab_size_config_keys(), given, "vocab_size_config_key", raise_error)


def _locator(chain: Any, name: str) -> Any:
    def locate(attention_module: Any, return_module_source: bool = False) -> Any:
        from nnterp.attention import locate_probabilities

        operation = locate_probabilities(attention_module, chain, layer=-1)
        return operation.source if return_module_source else operation

    locate.__name__ = name
    locate.__doc__ = (
        f"1.x's {name}: inside a trace, the operation of ``attention_module`` whose output is the "
        "attention probabilities (the call chain "
        + ", or else ".join(" -> ".join(one) for one in chain_alternatives(chain))
        + ")."
    )
    return locate


_INTERFACE_CHAIN = ("attention_interface", "nn.functional.dropout")
default_attention_prob_source = _locator(_INTERFACE_CHAIN, "default_attention_prob_source")
# transformers 5 runs GPT-2's attention through the shared attention interface too, and GPT-J's
# from 5.24 (its own ``_attn`` before).
gpt2_attention_prob_source = _locator(_INTERFACE_CHAIN, "gpt2_attention_prob_source")
gptj_attention_prob_source = _locator(
    (_INTERFACE_CHAIN, ("self._attn", "self.attn_dropout")), "gptj_attention_prob_source"
)
bloom_attention_prob_source = _locator(("self.attention_dropout",), "bloom_attention_prob_source")


def get_ignores(model: Any, rename_config: RenameConfig | None = None) -> list[str]:
    """The standard parts ``model``'s layers lack, in nnterp 1.x's words: ``"mlp"`` when no
    layer has an MLP module (OPT computes its MLP inline), ``"attention"`` when none has an
    attention module; plus those ``rename_config.ignore_mlp`` / ``ignore_attn`` turn off.

    ``model`` is a transformers model (1.x passed ``std_model._model``) or a
    `StandardizedTransformer`; the parts come from the architecture spec the installed plugins
    register for its class (nnterp 1.x's generic names for a class none covers).

    Example:
        >>> get_ignores(opt_model)
        ['mlp']
        >>> get_ignores(llama_model, RenameConfig(ignore_attn=True))
        ['attention']
    """
    from nnterp.compat import generic_spec
    from nnterp.plugins import get_registry
    from nnterp.renaming import resolve_paths
    from nnterp.standardized_transformer import StandardizedTransformer

    paths: dict[str, str | None] | None
    if isinstance(model, StandardizedTransformer):
        paths = dict(model.paths)
    else:
        spec = get_registry().spec_for_model(model) or generic_spec(type(model).__name__)
        try:
            paths = resolve_paths(model, spec)
        except RenamingError:  # not standardizable as it is: only what the caller turns off
            paths = None
    config = rename_config or RenameConfig()
    parts = (("mlp", "mlp", config.ignore_mlp), ("attention", "self_attn", config.ignore_attn))
    return [name for name, part, ignored in parts if ignored or (paths is not None and paths.get(part) is None)]


def __getattr__(name: str) -> Any:
    # Imported on first use: ``import nnterp`` imports this module and stays light.
    if name == "IGNORE_MLP_MODELS":
        # 1.x's tuple of classes whose layers have no MLP module (the spec says so here).
        from transformers import OPTForCausalLM

        return (OPTForCausalLM,)
    if name in ("LayerAccessor", "AttentionProbabilitiesAccessor"):
        from nnterp import accessors

        return getattr(accessors, name)
    raise AttributeError(f"module 'nnterp.rename_utils' has no attribute {name!r}")


def check_io(std_model: StandardizedTransformer, model_name: str = "", ignores: Any = None) -> None:
    """Check that ``std_model``'s standard sites read the right modules with the right shapes,
    as load-time validation does (1.x's shape check; ``ignores`` is accepted and unused: a
    part the model lacks is known from its spec).

    Raises:
        RenamingError: a site reads the wrong module or shape (the message says which).
    """
    check_model_renaming(std_model, model_name)


def check_model_renaming(std_model: StandardizedTransformer, model_name: str = "", *args: Any, **kwargs: Any) -> None:
    """Check the standard tree of ``std_model`` as load-time validation does (1.x's entry point;
    its other arguments are accepted and unused).

    Raises:
        RenamingError: a part is missing or reads the wrong values (the message says which).
    """
    from nnterp.validation import validate

    validate(std_model)


__all__ = [
    *_compat_names,
    "ATTENTION_NAMES",
    "AttentionProbabilitiesAccessor",
    "EMBED_TOKENS_NAMES",
    "IGNORE_MLP_MODELS",
    "IgnoreType",
    "LAYER_NAMES",
    "LN_NAMES",
    "LayerAccessor",
    "check_io",
    "expand_path_with_model",
    "IOType",
    "LM_HEAD_NAMES",
    "MLP_NAMES",
    "MODEL_NAMES",
    "bloom_attention_prob_source",
    "check_model_renaming",
    "default_attention_prob_source",
    "default_attn_head_config_keys",
    "default_hidden_size_config_keys",
    "default_vocab_size_config_keys",
    "get_hidden_size",
    "get_ignores",
    "get_num_attention_heads",
    "get_vocab_size",
    "gpt2_attention_prob_source",
    "gptj_attention_prob_source",
    "text_config",
]
