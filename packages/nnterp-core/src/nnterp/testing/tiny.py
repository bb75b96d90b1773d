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
    (``text_config``, ``vision_config``, ...) get the same values, where they have the attribute.
    """
    from transformers import AutoConfig

    config = AutoConfig.for_model(model_type)
    values = {**GENERIC_TINY_CONFIG, **overrides}
    _set_values(config, values, forced=overrides)
    for name in getattr(config, "sub_configs", None) or {}:
        sub_config = getattr(config, name, None)
        if sub_config is not None and hasattr(sub_config, "to_dict"):
            _set_values(sub_config, values, forced=())
    return config


def _set_values(config: Any, values: dict[str, Any], forced: Any) -> None:
    for key, value in values.items():
        if key in forced or hasattr(config, key):
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

    Uses the registered spec's ``tiny_config`` for the class when there is one.
    """
    from transformers import AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    overrides = dict(spec_tiny_config(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)))
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
