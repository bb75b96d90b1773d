"""Tiny random models and an in-process tokenizer, for tests that never touch the network.

Example:
    >>> from nnterp.testing import tiny_model, tiny_tokenizer
    >>> hf_model = tiny_model("llama")                 # a 2-layer random LlamaForCausalLM
    >>> tokenizer = tiny_tokenizer()
    >>> model = StandardizedTransformer(hf_model, tokenizer)
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

import torch

#: The special tokens of the test tokenizer; their ids are 0..3.
PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
TINY_VOCAB_SIZE = 512

_CORPUS = [
    "The capital of France is Paris. The capital of England is London.",
    "The capital of Spain is Madrid and the capital of Italy is Rome.",
    "The cat sat on the mat. The dog sat on the log. Hello world!",
    "The weather today is sunny, tomorrow it will rain. I love you, I hate you.",
    "One two three four five six seven eight nine ten. A B C D E F G.",
    "The translation of 'car' in French is voiture; of 'cat' in Spanish is gato.",
    "king queen man woman hello world apple banana orange red green blue",
]

#: Generic sizes that let most transformers configs build a small model.
GENERIC_TINY_CONFIG: dict[str, Any] = {
    "vocab_size": TINY_VOCAB_SIZE,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 256,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "n_embd": 64,
    "n_layer": 2,
    "n_head": 4,
    "n_inner": 128,
    "n_positions": 256,
    "d_model": 64,
    "ffn_dim": 128,
    "num_layers": 2,
    "num_heads": 4,
    "tie_word_embeddings": False,
}


@lru_cache(maxsize=1)
def _trained_tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        special_tokens=[PAD, BOS, EOS, UNK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 4, trainer)
    return tokenizer.to_str()


def tiny_tokenizer(padding_side: str = "left", with_pad_token: bool = True) -> Any:
    """A byte-level BPE tokenizer trained in-process (vocab <= 512; pad/bos/eos/unk = 0/1/2/3).

    Every string is encodable (byte fallback), so any prompt works.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(_trained_tokenizer_json())
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD if with_pad_token else None,
        padding_side=padding_side,
    )
    return tokenizer


def tiny_config(model_type: str, **overrides: Any) -> Any:
    """A small config for ``model_type`` (a key of transformers' causal-LM mapping).

    Generic small sizes are set on every attribute the config has; the architecture spec's
    ``tiny_config`` and ``overrides`` are applied on top. Sub-configs of composite models
    (``text_config``, ``vision_config``, ...) get the same values, where they have the attribute;
    a dotted override (``"text_config.global_head_dim"``, ``"attn_config.rope_theta"``) sets one
    sub-config's attribute. Default per-layer type lists (``layer_types``, ``mlp_layer_types``)
    are cut to the tiny layer count, so the model saves with ``save_pretrained`` and reloads.

    Configs whose layers are described per layer (transformers' heterogeneous configs, with
    a ``per_layer_config``), and configs whose defaults do not validate, are instead built
    from the small values, so the config class itself derives its per-layer lists and
    overrides from the tiny layer count (a default config shrunk afterwards would keep per-layer
    entries for layers that no longer exist).

    Example:
        >>> config = tiny_config("gemma4_text", global_head_dim=32)
        >>> config.layer_types, config.per_layer_config[1].head_dim    # layer 1: full attention
        (['sliding_attention', 'full_attention'], 32)
    """
    from transformers import AutoConfig

    values = {**GENERIC_TINY_CONFIG, **overrides}
    try:
        config = AutoConfig.for_model(model_type)
    except Exception:  # noqa: BLE001 - the defaults do not validate: build it from the values
        config = None
    if config is None or _is_heterogeneous(config):
        return _constructed_config(model_type, values, overrides)
    _set_values(config, values, forced=_own_keys(overrides))
    _fit_layer_types(config, given=overrides)
    for name in getattr(config, "sub_configs", None) or {}:
        sub_config = getattr(config, name, None)
        if sub_config is not None and hasattr(sub_config, "to_dict"):
            _set_values(sub_config, values, forced=())
            _set_values(sub_config, _nested(overrides, name), forced=_nested(overrides, name))
            _fit_layer_types(sub_config, given=_nested(overrides, name))
    return config


def _fit_layer_types(config: Any, given: dict[str, Any]) -> None:
    """Cut each default per-layer type list (``layer_types``, ``mlp_layer_types``, ...) to the
    tiny layer count, so the config validates again (``save_pretrained`` checks it); the model
    only ever read the first entries. A list given in the overrides ``given`` is left as it is."""
    count = getattr(config, "num_hidden_layers", None)
    if not isinstance(count, int):
        return
    for key, value in list(vars(config).items()):
        if key.endswith("layer_types") and key not in given and isinstance(value, list) and len(value) > count:
            try:
                setattr(config, key, value[:count])
            except Exception:  # noqa: BLE001 - a config that guards the attribute keeps its value
                pass


def _own_keys(overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides that name an attribute of the config itself (not a dotted sub-config key)."""
    return {key: value for key, value in overrides.items() if "." not in key}


def _nested(overrides: dict[str, Any], name: str) -> dict[str, Any]:
    """The dotted overrides of sub-config ``name`` (``"text_config.x"`` -> ``{"x": ...}``)."""
    prefix = f"{name}."
    return {key[len(prefix):]: value for key, value in overrides.items() if key.startswith(prefix)}


def _is_heterogeneous(config: Any) -> bool:
    """Whether ``config`` or one of its sub-configs has per-layer overrides (``per_layer_config``)."""
    holders = [config] + [getattr(config, name, None) for name in getattr(config, "sub_configs", None) or {}]
    return any(bool(getattr(holder, "is_heterogeneous", False)) for holder in holders if holder is not None)


def _has_attribute(config: Any, key: str) -> bool:
    """``hasattr`` that counts a heterogeneous config's per-layer attributes (reading them globally
    raises transformers' ``AmbiguousGlobalPerLayerAttributeError``, which is no ``AttributeError``)."""
    try:
        return hasattr(config, key)
    except RuntimeError:  # AmbiguousGlobalPerLayerAttributeError: set per layer, so it exists
        return True


def _field_names(config_class: Any) -> set[str]:
    """The constructor arguments a config class takes by name: its dataclass fields and the
    aliases of its ``attribute_map``."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_class)} if dataclasses.is_dataclass(config_class) else set()
    return names | set(getattr(config_class, "attribute_map", None) or {})


def _class_kwargs(config_class: Any, values: dict[str, Any], forced: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments for ``config_class``: the ``values`` it has a field for (an alias
    left out when its target is given too) and every ``forced`` one."""
    names = _field_names(config_class)
    aliases = getattr(config_class, "attribute_map", None) or {}
    kwargs = {key: copy.deepcopy(value) for key, value in values.items() if key in names}
    for alias, target in aliases.items():
        if alias in kwargs and target in kwargs:
            del kwargs[alias]
    kwargs.update(copy.deepcopy(forced))
    return kwargs


def _constructed_config(model_type: str, values: dict[str, Any], overrides: dict[str, Any]) -> Any:
    """``model_type``'s config built from the small ``values`` (sub-configs from their own
    share of them), so that everything the class derives from the layer count is derived from
    the tiny one. On a composite config, an undotted override the composite class takes no
    argument for goes to its ``text_config``."""
    import dataclasses

    from transformers import CONFIG_MAPPING

    config_class = CONFIG_MAPPING[model_type]
    sub_classes = getattr(config_class, "sub_configs", None) or {}
    own = _own_keys(overrides)
    if "text_config" in sub_classes:
        # A composite config: overrides it takes no argument for are its language model's.
        names = _field_names(config_class)
        text_only = {key: value for key, value in own.items() if key not in names}
        own = {key: value for key, value in own.items() if key in names}
        overrides = {**{f"text_config.{key}": value for key, value in text_only.items()}, **overrides}
    kwargs = _class_kwargs(config_class, values, own)
    defaults = getattr(config_class, "sub_configs_defaults", None) or {}
    for name, sub_class in sub_classes.items():
        nested = _nested(overrides, name)
        if isinstance(kwargs.get(name), dict) or name not in kwargs:
            given = kwargs.get(name) or {}
            default_type = getattr(defaults.get(name), "model_type", None)
            if not dataclasses.is_dataclass(sub_class) and isinstance(default_type, str) and default_type in CONFIG_MAPPING:
                # An AutoConfig sub-config (the Gemma-4 assistants' text_config): its default
                # model type's config class, built here from the small values.
                concrete = CONFIG_MAPPING[default_type]
                kwargs[name] = concrete(**{**_class_kwargs(concrete, values, nested), **given})
            else:
                kwargs[name] = {**_class_kwargs(sub_class, values, nested), **given}
    return config_class(**kwargs)


def _set_values(config: Any, values: dict[str, Any], forced: Any) -> None:
    for key, value in values.items():
        if key in forced or _has_attribute(config, key):
            try:
                setattr(config, key, copy.deepcopy(value))
            except Exception:  # noqa: BLE001 - some configs guard attributes; keep their value
                pass


def tiny_model(
    model_type: str,
    *,
    seed: int = 0,
    attn_implementation: str = "eager",
    config_overrides: dict[str, Any] | None = None,
) -> torch.nn.Module:
    """A random, eval-mode, float32 causal LM of ``model_type`` built from a tiny config.

    Uses the registered spec's ``tiny_config`` for the class when there is one, else the
    overrides a plugin registered with the type's unsupported reason.
    """
    from transformers import AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    overrides = dict(spec_tiny_config(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)) or unsupported_tiny_config(model_type))
    overrides.update(config_overrides or {})
    config = tiny_config(model_type, **overrides)
    config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    return model.float().eval()


def spec_tiny_config(class_name: Any) -> dict[str, Any]:
    """The ``tiny_config`` overrides of the spec registered for ``class_name`` (or ``{}``)."""
    if not isinstance(class_name, str):
        return {}
    from nnterp.plugins import get_registry

    try:
        spec = get_registry().spec_for_class_names([class_name])
    except Exception:  # noqa: BLE001 - a conflict is reported when the model is wrapped
        return {}
    return dict(spec.tiny_config) if spec else {}


def unsupported_tiny_config(model_type: str) -> dict[str, Any]:
    """The tiny-config overrides a plugin registered for an unsupported ``model_type`` (or ``{}``)."""
    from nnterp.plugins import get_registry

    return dict(get_registry().unsupported_tiny_configs.get(model_type, {}))
