"""The tiny vision-language kit: every kind builds offline, runs, and reads its image.

Each check is made on the plain HF model with forward hooks: logits of shape (batch, seq,
vocab), the image token in every row, logits that move with the pixels, and where the language
model's decoder layers, final norm, embeddings, unembedding and the vision tower's layers live.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
import transformers
from nnterp.errors import InvalidInputError
from nnterp.testing.tiny_vision import (
    DEFAULT_PROMPTS,
    TINY_VISION_KINDS,
    tiny_image,
    tiny_vision_inputs,
    tiny_vision_model,
)
from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
)
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES


@dataclass(frozen=True)
class Family:
    """Where one family keeps its parts (module paths from the top model)."""

    model_class: str
    image_token: str
    vision_layers: tuple[str, ...] = ("model.vision_tower.encoder.layers",)
    text_model: str = "model.language_model"
    #: Decoder layers after which the model adds image features to the stream itself.
    deepstack: tuple[int, ...] = ()
    #: Earlier image tokens attend to later ones (bidirectional image block or prefix).
    bidirectional_image: bool = False


_QWEN_VISION = ("model.visual.blocks",)
FAMILIES = {
    "llava": Family("LlavaForConditionalGeneration", "<image>"),
    "llava_next": Family("LlavaNextForConditionalGeneration", "<image>"),
    "llava_onevision": Family("LlavaOnevisionForConditionalGeneration", "<image>"),
    "vipllava": Family("VipLlavaForConditionalGeneration", "<image>"),
    "qwen2_vl": Family(
        "Qwen2VLForConditionalGeneration", "<|image_pad|>", _QWEN_VISION
    ),
    "qwen2_5_vl": Family(
        "Qwen2_5_VLForConditionalGeneration", "<|image_pad|>", _QWEN_VISION
    ),
    "qwen3_vl": Family(
        "Qwen3VLForConditionalGeneration", "<|image_pad|>", _QWEN_VISION, deepstack=(0,)
    ),
    "qwen3_5": Family("Qwen3_5ForConditionalGeneration", "<|image_pad|>", _QWEN_VISION),
    "glm4v": Family("Glm4vForConditionalGeneration", "<|image|>", _QWEN_VISION),
    "gemma3": Family(
        "Gemma3ForConditionalGeneration", "<image_soft_token>", bidirectional_image=True
    ),
    "paligemma": Family(
        "PaliGemmaForConditionalGeneration", "<image>", bidirectional_image=True
    ),
    "idefics2": Family(
        "Idefics2ForConditionalGeneration",
        "<image>",
        ("model.vision_model.encoder.layers",),
        text_model="model.text_model",
    ),
    "idefics3": Family(
        "Idefics3ForConditionalGeneration",
        "<image>",
        ("model.vision_model.encoder.layers",),
        text_model="model.text_model",
    ),
    "mllama": Family(
        "MllamaForConditionalGeneration",
        "<|image|>",
        (
            "model.vision_model.transformer.layers",
            "model.vision_model.global_transformer.layers",
        ),
    ),
    "aya_vision": Family("AyaVisionForConditionalGeneration", "<|IMG_PATCH|>"),
    "internvl": Family(
        "InternVLForConditionalGeneration",
        "<IMG_CONTEXT>",
        ("model.vision_tower.encoder.layer",),
    ),
    "deepseek_vl": Family(
        "DeepseekVLForConditionalGeneration",
        "<image_placeholder>",
        ("model.vision_model.encoder.layers",),
    ),
}

REQUIRED = {
    "llava",
    "qwen2_vl",
    "qwen2_5_vl",
    "qwen3_vl",
    "gemma3",
    "paligemma",
    "idefics3",
    "mllama",
}


def _first(output):
    return output[0] if isinstance(output, tuple) else output


@dataclass
class Run:
    """One kind's model, processor, encoding and what the hooks saw in one forward pass."""

    kind: str
    family: Family
    model: torch.nn.Module
    processor: object
    encoding: dict
    logits: torch.Tensor
    layer_inputs: list
    layer_outputs: list
    norm_output: torch.Tensor
    head_input: torch.Tensor
    head_output: torch.Tensor
    vision_calls: dict


def _forward(model, encoding, **changes):
    with torch.no_grad():
        return model(**{**encoding, **changes}).logits


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These models are tiny: one thread is much faster than several on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=TINY_VISION_KINDS)
def run(request, _one_thread):
    kind = request.param
    family = FAMILIES[kind]
    model, processor = tiny_vision_model(kind)
    encoding = dict(tiny_vision_inputs(kind, processor))
    layers = model.get_submodule(f"{family.text_model}.layers")
    seen: dict = {
        "in": {},
        "out": {},
        "vision": {path: 0 for path in family.vision_layers},
    }
    handles = []

    def layer_hook(index):
        def hook(_module, args, kwargs, output):
            seen["in"][index] = (
                (args[0] if args else kwargs["hidden_states"]).detach().clone()
            )
            seen["out"][index] = _first(output).detach().clone()

        return hook

    def count(path):
        def hook(_module, _args, _output):
            seen["vision"][path] += 1

        return hook

    def keep(name, which):
        def hook(_module, args, output):
            seen[name] = (args[0] if which == "in" else output).detach().clone()

        return hook

    for index, layer in enumerate(layers):
        handles.append(layer.register_forward_hook(layer_hook(index), with_kwargs=True))
    for path in family.vision_layers:
        for layer in model.get_submodule(path):
            handles.append(layer.register_forward_hook(count(path)))
    handles.append(
        model.get_submodule(f"{family.text_model}.norm").register_forward_hook(
            keep("norm", "out")
        )
    )
    handles.append(
        model.get_submodule("lm_head").register_forward_hook(keep("head_in", "in"))
    )
    handles.append(
        model.get_submodule("lm_head").register_forward_hook(keep("head_out", "out"))
    )
    try:
        logits = _forward(model, encoding)
    finally:
        for handle in handles:
            handle.remove()
    return Run(
        kind=kind,
        family=family,
        model=model,
        processor=processor,
        encoding=encoding,
        logits=logits,
        layer_inputs=[seen["in"][i] for i in range(len(layers))],
        layer_outputs=[seen["out"][i] for i in range(len(layers))],
        norm_output=seen["norm"],
        head_input=seen["head_in"],
        head_output=seen["head_out"],
        vision_calls=seen["vision"],
    )


def _image_token_id(run: Run) -> int:
    return run.processor.tokenizer.convert_tokens_to_ids(run.family.image_token)


def test_kinds_cover_the_families():
    assert REQUIRED <= set(TINY_VISION_KINDS)
    assert set(TINY_VISION_KINDS) == set(FAMILIES)
    for kind, family in FAMILIES.items():
        assert MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES[kind] == family.model_class


def test_model_and_processor_are_the_family_classes(run):
    assert type(run.model).__name__ == run.family.model_class
    assert not run.model.training
    assert all(parameter.dtype == torch.float32 for parameter in run.model.parameters())
    assert isinstance(
        run.processor, getattr(transformers, PROCESSOR_MAPPING_NAMES[run.kind])
    )
    assert (
        type(run.processor.image_processor).__name__
        == IMAGE_PROCESSOR_MAPPING_NAMES[run.kind]["pil"]
    )
    assert isinstance(run.processor.tokenizer, transformers.PreTrainedTokenizerFast)


def test_forward_gives_logits_over_the_tokenizer(run):
    tokenizer = run.processor.tokenizer
    input_ids = run.encoding["input_ids"]
    assert run.logits.shape == (2, input_ids.shape[1], len(tokenizer))
    assert run.model.get_output_embeddings().out_features == len(tokenizer)
    assert torch.isfinite(run.logits).all()
    text_config = run.model.config.get_text_config()
    assert text_config.vocab_size == len(tokenizer)
    assert text_config.pad_token_id == tokenizer.pad_token_id
    # Two prompts of different lengths, padded on the left.
    mask = run.encoding["attention_mask"]
    lengths = mask.sum(dim=1)
    assert lengths[0] != lengths[1]
    assert (mask[:, -1] == 1).all()
    shorter = int(lengths.argmin())
    assert mask[shorter, 0] == 0
    assert (input_ids[shorter][mask[shorter] == 0] == tokenizer.pad_token_id).all()


def test_every_row_holds_the_image_token(run):
    config = run.model.config
    token_id = _image_token_id(run)
    assert token_id != run.processor.tokenizer.unk_token_id
    config_ids = {
        getattr(config, name)
        for name in ("image_token_id", "image_token_index")
        if hasattr(config, name)
    }
    assert token_id in config_ids
    counts = (run.encoding["input_ids"] == token_id).sum(dim=1)
    assert (counts > 0).all()
    assert counts[0] == counts[1]  # same tiny image size in every row


def test_logits_follow_the_image(run):
    pixels = run.encoding["pixel_values"]
    other = torch.randn(pixels.shape, generator=torch.Generator().manual_seed(1))
    changed = _forward(run.model, run.encoding, pixel_values=other)
    again = _forward(run.model, run.encoding)
    assert torch.equal(again, run.logits)  # so a change below comes from the pixels
    moved = (changed[:, -1] - run.logits[:, -1]).abs().amax(dim=-1)
    assert (moved > 1e-4).all(), moved


def test_decoder_layers_norm_embeddings_and_head_paths(run):
    family, model = run.family, run.model
    text_config = model.config.get_text_config()
    layers = model.get_submodule(f"{family.text_model}.layers")
    assert isinstance(layers, torch.nn.ModuleList)
    assert len(layers) == text_config.num_hidden_layers == len(run.layer_outputs)
    assert (
        model.get_submodule(f"{family.text_model}.embed_tokens")
        is model.get_input_embeddings()
    )
    assert model.get_submodule("lm_head") is model.get_output_embeddings()
    assert text_config.hidden_size == run.layer_outputs[-1].shape[-1] == 64
    # The final norm reads the last layer's output and feeds the unembedding, which gives the logits.
    norm = model.get_submodule(f"{family.text_model}.norm")
    with torch.no_grad():
        assert torch.allclose(norm(run.layer_outputs[-1]), run.norm_output, atol=1e-6)
    assert torch.equal(run.head_input, run.norm_output)
    assert torch.equal(run.head_output, run.logits)
    # Text positions enter layer 0 as the embedding module's output (up to a constant scale).
    ids = run.encoding["input_ids"]
    text = (run.encoding["attention_mask"] == 1) & (ids != _image_token_id(run))
    with torch.no_grad():
        embedded = model.get_input_embeddings()(ids)[text]
    entered = run.layer_inputs[0][text]
    scale = (entered.norm() / embedded.norm()).item()
    assert torch.allclose(entered, embedded * scale, atol=1e-5)


def test_the_stream_runs_from_layer_to_layer(run):
    image = run.encoding["input_ids"] == _image_token_id(run)
    for index in range(len(run.layer_outputs) - 1):
        gap = (
            (run.layer_outputs[index] - run.layer_inputs[index + 1]).abs().amax(dim=-1)
        )
        if index in run.family.deepstack:
            # Qwen3-VL adds image features to the image positions between these layers.
            assert (gap[image] > 0).all()
            assert (gap[~image] == 0).all()
        else:
            assert (gap == 0).all()


def test_vision_tower_layers(run):
    vision_config = run.model.config.vision_config
    for path, calls in run.vision_calls.items():
        layers = run.model.get_submodule(path)
        assert isinstance(layers, torch.nn.ModuleList)
        assert calls >= len(layers) > 0  # every layer ran on the image
    first = run.model.get_submodule(run.family.vision_layers[0])
    depth = getattr(vision_config, "depth", None) or vision_config.num_hidden_layers
    assert len(first) == depth == 2


def test_earlier_image_tokens_see_later_ones_only_where_bidirectional(run):
    """Gemma3 (image block) and PaliGemma (image + prompt prefix) attend both ways."""
    row = 0
    positions = (
        (run.encoding["input_ids"][row] == _image_token_id(run)).nonzero().flatten()
    )
    # Mllama has a single image token: its next token stands in for a later one.
    first, last = int(positions[0]), max(int(positions[-1]), int(positions[0]) + 1)
    layer = run.model.get_submodule(f"{run.family.text_model}.layers")[0]

    def nudge(_module, args, kwargs):
        hidden = (args[0] if args else kwargs["hidden_states"]).clone()
        hidden[row, last] += 1.0
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    outputs = {}

    def keep(_module, _args, output):
        outputs["out"] = _first(output).detach().clone()

    handles = [
        layer.register_forward_pre_hook(nudge, with_kwargs=True),
        layer.register_forward_hook(keep),
    ]
    try:
        _forward(run.model, run.encoding)
    finally:
        for handle in handles:
            handle.remove()
    moved = (
        (outputs["out"][row, first] - run.layer_outputs[0][row, first])
        .abs()
        .amax()
        .item()
    )
    assert (moved > 0) == run.family.bidirectional_image, moved


def test_kit_is_deterministic():
    model, processor = tiny_vision_model("qwen2_vl", seed=3)
    again, _ = tiny_vision_model("qwen2_vl", seed=3)
    other, _ = tiny_vision_model("qwen2_vl", seed=4)
    state, state_again, state_other = (
        model.state_dict(),
        again.state_dict(),
        other.state_dict(),
    )
    assert all(torch.equal(state[name], state_again[name]) for name in state)
    assert not all(torch.equal(state[name], state_other[name]) for name in state)
    first = tiny_vision_inputs("qwen2_vl", processor)
    second = tiny_vision_inputs("qwen2_vl", processor)
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert np.array_equal(np.asarray(tiny_image(5)), np.asarray(tiny_image(5)))
    assert not np.array_equal(np.asarray(tiny_image(5)), np.asarray(tiny_image(6)))
    assert tiny_image(0, size=20).size == (20, 20)


def test_inputs_prompts_batch_and_images():
    _, processor = tiny_vision_model("llava")
    tokenizer = processor.tokenizer
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    three = tiny_vision_inputs("llava", processor, batch=3)
    assert three["input_ids"].shape[0] == 3
    assert len(set(three["attention_mask"].sum(dim=1).tolist())) == 3
    # A prompt that already holds the placeholder gets no second image.
    mine = tiny_vision_inputs("llava", processor, ["<image> A cat", "Hi"])
    assert ((mine["input_ids"] == image_id).sum(dim=1) == 4).all()
    assert (
        tokenizer.decode(mine["input_ids"][0][mine["input_ids"][0] != image_id]).strip()
        == "A cat"
    )
    # A prompt alone with the image it has in a batch gets the same pixels.
    alone = tiny_vision_inputs(
        "llava", processor, [DEFAULT_PROMPTS[1]], images=[tiny_image(1)]
    )
    batch = tiny_vision_inputs("llava", processor)
    assert torch.equal(alone["pixel_values"][0], batch["pixel_values"][1])


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: tiny_vision_model("gpt2"), "kind must be one of"),
        (lambda: tiny_vision_inputs("llava", None, batch=0), "batch must be"),
        (lambda: tiny_vision_inputs("llava", None, prompts=[]), "empty"),
        (
            lambda: tiny_vision_inputs(
                "llava", None, ["a", "b"], images=[tiny_image()]
            ),
            "one image per prompt",
        ),
    ],
)
def test_bad_arguments_raise_typed_errors(call, needle):
    with pytest.raises(InvalidInputError, match=needle):
        call()
