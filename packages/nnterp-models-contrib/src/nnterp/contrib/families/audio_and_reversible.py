"""Causal-LM classes whose wiring the standard tree cannot describe: reversible residual
layers (Reformer) and decoders over parallel audio codebooks (MusicGen, MusicGen-Melody).

None of them is standardized: ``SPECS`` is empty and ``NOT_STANDARDIZED`` gives, per model
type, the structural reason (shown by the status registry and the docs). ``TINY_CONFIGS``
holds what builds a tiny random model of each (their default configs do not build one:
Reformer needs ``is_decoder=True`` and attention layers consistent with the layer count;
MusicGen's model type names the composite text-encoder/audio-encoder/decoder config, while
its causal LM takes the decoder's), so that the reasons are checked against the plain HF
models (tests/contrib/test_batching_and_probabilities.py).
"""

from __future__ import annotations

from typing import Any

from nnterp.spec import ArchitectureSpec

SPECS: tuple[ArchitectureSpec, ...] = ()

_MUSICGEN = (
    "a decoder over num_codebooks parallel EnCodec codebooks, not over text tokens: input_ids are "
    "(batch * num_codebooks, seq) audio codes (in the delay pattern), each position's embedding is the "
    "sum of num_codebooks embedding tables (embed_tokens is a ModuleList) and lm_heads is a ModuleList of "
    "num_codebooks unembeddings whose logits come back as (batch * num_codebooks, seq, vocab); so there is "
    "no single token embedding or lm_head, and a tokenizer's rows are not the layers' batch rows"
)

#: Why each of these causal-LM types has no spec.
NOT_STANDARDIZED: dict[str, str] = {
    "reformer": (
        "reversible residual (RevNet) layers carry two streams: layer i takes (prev_attn_output X1, "
        "hidden_states X2) and returns Y1 = X1 + attention(X2) and Y2 = X2 + feed_forward(Y1), and the final "
        "layer_norm normalises their concatenation (2 * hidden_size), so no one (batch, seq, hidden) stream "
        "runs from the embeddings to lm_head (the attention adds to one half, the MLP to the other); the "
        "model also pads its input to a multiple of the attention chunk length itself, so the layers see more "
        "positions than the input has, and its chunked local/LSH attention lets left padding move the chunk "
        "boundaries that decide which keys a query sees"
    ),
    "musicgen": _MUSICGEN,
    "musicgen_melody": (
        f"{_MUSICGEN}; MusicGen-Melody also prepends its conditioning (encoder_hidden_states) to the "
        "embeddings along the sequence"
    ),
}

#: Reformer with two layers (one local, one LSH attention), small axial position embeddings
#: (16 + 48 = hidden 64; 16 * 16 positions), chunks of 4 and a fixed LSH hashing seed (random
#: rotations otherwise change every forward).
REFORMER_TINY: dict[str, Any] = {
    "is_decoder": True,
    "attn_layers": ("local", "lsh"),
    "num_hidden_layers": 2,
    "attention_head_size": 16,
    "axial_pos_shape": (16, 16),
    "axial_pos_embds_dim": (16, 48),
    "feed_forward_size": 128,
    "local_attn_chunk_length": 4,
    "lsh_attn_chunk_length": 4,
    "num_buckets": 2,
    "hash_seed": 0,
}

#: How to build a tiny model of each type: ``config_overrides`` for `nnterp.testing.tiny_model`,
#: or ``sub_config``, the composite config's attribute whose config the causal LM takes.
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "reformer": {"config_overrides": REFORMER_TINY},
    "musicgen": {"sub_config": "decoder"},
    "musicgen_melody": {"sub_config": "decoder"},
}


def tiny_unstandardized_model(model_type: str, seed: int = 0) -> Any:
    """A tiny random, eval-mode causal LM of one of the ``NOT_STANDARDIZED`` types here.

    Args:
        model_type: a key of `TINY_CONFIGS` (``"reformer"``, ``"musicgen"``, ``"musicgen_melody"``).
        seed: the torch seed the weights are drawn with.

    Raises:
        InvalidInputError: ``model_type`` is not one of them.

    Example:
        >>> tiny_unstandardized_model("musicgen").config.num_codebooks
        4
    """
    import torch
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from nnterp.errors import InvalidInputError
    from nnterp.testing import tiny_config, tiny_model

    how = TINY_CONFIGS.get(model_type)
    if how is None:
        raise InvalidInputError(
            f"model_type={model_type!r} has no tiny build here: use one of {sorted(TINY_CONFIGS)}, "
            "or nnterp.testing.tiny_model for standardized types."
        )
    if "config_overrides" in how:
        return tiny_model(model_type, seed=seed, config_overrides=how["config_overrides"])
    config = getattr(tiny_config(model_type), how["sub_config"])
    # The special (pad/start) code is the id one past the codebook vocabulary.
    config.pad_token_id = config.bos_token_id = config.vocab_size
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model_class = getattr(transformers, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type])
    return model_class(config).float().eval()
