"""Tiny random vision-language models with their real processors, built in-process (no hub).

Each kind is an image-text-to-text family of transformers, named by its model type: a tiny
config (text hidden 64, 2 text layers, 2 vision layers, images of 28 to 64 pixels), the family's
own processor class around its PIL image processor set up for that size, and
:func:`~nnterp.testing.tiny_tokenizer` with the family's image tokens added. The config's token
ids (image, begin/end of image, pad/bos/eos) are the tokenizer's, and the vocabulary is
``len(processor.tokenizer)``.

Example:
    >>> from nnterp.testing.tiny_vision import tiny_vision_inputs, tiny_vision_model
    >>> model, processor = tiny_vision_model("llava")
    >>> encoding = tiny_vision_inputs("llava", processor)  # 2 prompts of different lengths
    >>> model(**encoding).logits.shape  # (batch, seq, len(processor.tokenizer))
    torch.Size([2, 10, 458])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

import torch

from nnterp.errors import InvalidInputError
from nnterp.inputs import prompt_list
from nnterp.testing.tiny import tiny_tokenizer

if TYPE_CHECKING:
    from PIL.Image import Image
    from transformers import BatchFeature, PreTrainedModel, ProcessorMixin

#: Text decoder sizes every kind starts from (a kind's ``text`` entries override them).
_TEXT: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 512,
}

#: Vision tower sizes every kind starts from (a kind's ``vision`` entries override them).
_VISION: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
}

#: The prompts of :func:`tiny_vision_inputs`, each a different number of tokens long.
DEFAULT_PROMPTS = (
    "The cat sat on the mat",
    "Hello world",
    "The capital of France is",
    "One two three four five six",
)


@dataclass(frozen=True)
class _Kind:
    """How to build one family. Every field is data, read by the one builder below."""

    #: The transformers model type (``AutoConfig.for_model`` key), also the kind's name.
    model_type: str
    processor_class: str
    #: The family's PIL image processor (the torchvision ones need torchvision).
    image_processor_class: str
    #: One image in a prompt, as the processor expects to find it.
    placeholder: str
    image_processor: dict[str, Any] = field(default_factory=dict)
    processor: dict[str, Any] = field(default_factory=dict)
    #: Tokenizer attributes the processor reads -> their token (added as a special token;
    #: ``<name>_id`` is set too).
    named_tokens: dict[str, str] = field(default_factory=dict)
    #: Further special tokens the processor looks up by their text.
    tokens: tuple[str, ...] = ()
    #: Top-level config attributes -> the token whose id they hold.
    token_ids: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    text: dict[str, Any] = field(default_factory=dict)
    vision: dict[str, Any] = field(default_factory=dict)
    #: The processor class also takes a video processor, which needs torchvision: build it
    #: without one (images and text work the same).
    image_only: bool = False
    #: ``images`` go to the processor as one list per prompt.
    nested_images: bool = False
    #: Parameters (by name) the family initialises to zero, cutting the image off the text:
    #: they get random values, so that a random model's logits depend on its image.
    zero_init: tuple[str, ...] = ()


_LLAVA_TOKENS = {"image_token": "<image>"}
_QWEN_TOKENS = {
    "vision_start_token": "<|vision_start|>",
    "vision_end_token": "<|vision_end|>",
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
}
_QWEN_IDS = {
    "image_token_id": "<|image_pad|>",
    "video_token_id": "<|video_pad|>",
    "vision_start_token_id": "<|vision_start|>",
    "vision_end_token_id": "<|vision_end|>",
}
_QWEN_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
#: Multimodal rope: 3 sections (time, height, width) of the 8 rotary frequencies of head_dim 16.
_MROPE = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
#: Images resized to 56x56 px (patch 14, merge 2): a 4x4 patch grid, 4 image tokens.
_QWEN_IMAGES_56 = {"size": {"shortest_edge": 56 * 56, "longest_edge": 56 * 56}}
#: Images resized to 64x64 px (patch 16, merge 2): a 4x4 patch grid, 4 image tokens.
_QWEN_IMAGES_64 = {
    "size": {"shortest_edge": 64 * 64, "longest_edge": 64 * 64},
    "patch_size": 16,
}
_QWEN3_VISION = {
    "depth": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_heads": 2,
    "out_hidden_size": 64,
    "num_position_embeddings": 16,
}
_ANYRES = [[28, 28], [28, 56], [56, 28]]
#: The LLaVA family's image processor sizes, and its processor and image token.
_LLAVA_CROP = {"size": {"shortest_edge": 28}, "crop_size": {"height": 28, "width": 28}}
_LLAVA_IMAGES: dict[str, Any] = {
    "processor": {"patch_size": 14, "vision_feature_select_strategy": "default", "num_additional_image_tokens": 1},
    "placeholder": "<image>",
    "named_tokens": _LLAVA_TOKENS,
    "token_ids": {"image_token_id": "<image>"},
}
#: The Qwen-VL family's placeholder and image tokens.
_QWEN_IMAGES: dict[str, Any] = {"placeholder": _QWEN_PLACEHOLDER, "named_tokens": _QWEN_TOKENS, "token_ids": _QWEN_IDS}

_KINDS: dict[str, _Kind] = {
    kind.model_type: kind
    for kind in (
        _Kind(
            model_type="llava",
            processor_class="LlavaProcessor",
            image_processor_class="LlavaImageProcessorPil",
            image_processor=_LLAVA_CROP,
            **_LLAVA_IMAGES,
            config={
                "vision_feature_select_strategy": "default",
                "vision_feature_layer": -1,
            },
            vision={"image_size": 28, "patch_size": 14, "projection_dim": 32},
        ),
        _Kind(
            model_type="llava_next",
            processor_class="LlavaNextProcessor",
            image_processor_class="LlavaNextImageProcessorPil",
            image_processor={**_LLAVA_CROP, "image_grid_pinpoints": _ANYRES},
            **_LLAVA_IMAGES,
            config={
                "vision_feature_select_strategy": "default",
                "vision_feature_layer": -1,
                "image_grid_pinpoints": _ANYRES,
            },
            vision={"image_size": 28, "patch_size": 14, "projection_dim": 32},
        ),
        _Kind(
            model_type="llava_onevision",
            processor_class="LlavaOnevisionProcessor",
            image_processor_class="LlavaOnevisionImageProcessorPil",
            image_processor={
                "size": {"height": 28, "width": 28},
                "image_grid_pinpoints": _ANYRES,
            },
            processor={"num_image_tokens": 4, "vision_feature_select_strategy": "full"},
            placeholder="<image>",
            named_tokens={"image_token": "<image>", "video_token": "<video>"},
            token_ids={"image_token_id": "<image>", "video_token_id": "<video>"},
            config={
                "vision_feature_select_strategy": "full",
                "vision_feature_layer": -1,
                "image_grid_pinpoints": _ANYRES,
            },
            vision={"image_size": 28, "patch_size": 14},
            image_only=True,
        ),
        _Kind(
            model_type="vipllava",
            processor_class="LlavaProcessor",
            image_processor_class="CLIPImageProcessorPil",
            image_processor=_LLAVA_CROP,
            **_LLAVA_IMAGES,
            config={"vision_feature_layers": [-2, -1]},  # 5.22 name, still an alias
            vision={"image_size": 28, "patch_size": 14, "projection_dim": 32},
        ),
        _Kind(
            model_type="qwen2_vl",
            processor_class="Qwen2VLProcessor",
            image_processor_class="Qwen2VLImageProcessorPil",
            image_processor=_QWEN_IMAGES_56,
            **_QWEN_IMAGES,
            text={"rope_parameters": _MROPE},
            vision={
                "depth": 2,
                "embed_dim": 32,
                "hidden_size": 64,
                "num_heads": 2,
                "mlp_ratio": 2,
            },
            image_only=True,
        ),
        _Kind(
            model_type="qwen2_5_vl",
            processor_class="Qwen2_5_VLProcessor",
            image_processor_class="Qwen2VLImageProcessorPil",
            image_processor=_QWEN_IMAGES_56,
            **_QWEN_IMAGES,
            text={"rope_parameters": _MROPE},
            vision={
                "depth": 2,
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_heads": 2,
                "out_hidden_size": 64,
                "window_size": 56,
                "fullatt_block_indexes": [1],
            },
            image_only=True,
        ),
        _Kind(
            model_type="qwen3_vl",
            processor_class="Qwen3VLProcessor",
            image_processor_class="Qwen2VLImageProcessorPil",
            image_processor=_QWEN_IMAGES_64,
            **_QWEN_IMAGES,
            text={"rope_parameters": _MROPE},
            vision={**_QWEN3_VISION, "deepstack_visual_indexes": [0]},
            image_only=True,
        ),
        _Kind(
            model_type="qwen3_5",
            processor_class="Qwen3VLProcessor",
            image_processor_class="Qwen2VLImageProcessorPil",
            image_processor=_QWEN_IMAGES_64,
            **_QWEN_IMAGES,
            text={
                "layer_types": ["linear_attention", "full_attention"],
                "linear_key_head_dim": 16,
                "linear_value_head_dim": 16,
                "linear_num_key_heads": 2,
                "linear_num_value_heads": 4,
                "rope_parameters": {
                    **_MROPE,
                    "partial_rotary_factor": 0.5,
                    "mrope_section": [1, 1, 2],
                },
            },
            vision=_QWEN3_VISION,
            image_only=True,
        ),
        _Kind(
            model_type="glm4v",
            processor_class="Glm4vProcessor",
            image_processor_class="Glm4vImageProcessorPil",
            image_processor=_QWEN_IMAGES_56,
            placeholder="<|begin_of_image|><|image|><|end_of_image|>",
            named_tokens={"image_token": "<|image|>", "video_token": "<|video|>"},
            tokens=(
                "<|begin_of_image|>",
                "<|end_of_image|>",
                "<|begin_of_video|>",
                "<|end_of_video|>",
            ),
            token_ids={
                "image_token_id": "<|image|>",
                "video_token_id": "<|video|>",
                "image_start_token_id": "<|begin_of_image|>",
                "image_end_token_id": "<|end_of_image|>",
                "video_start_token_id": "<|begin_of_video|>",
                "video_end_token_id": "<|end_of_video|>",
            },
            text={"rope_parameters": _MROPE},
            vision={
                "depth": 2,
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_heads": 2,
                "out_hidden_size": 64,
                "image_size": 56,
            },
            image_only=True,
        ),
        _Kind(
            model_type="gemma3",
            processor_class="Gemma3Processor",
            image_processor_class="Gemma3ImageProcessorPil",
            image_processor={"size": {"height": 32, "width": 32}},
            processor={"image_seq_length": 4},
            placeholder="<start_of_image>",
            named_tokens={
                "boi_token": "<start_of_image>",
                "image_token": "<image_soft_token>",
                "eoi_token": "<end_of_image>",
            },
            token_ids={
                "image_token_index": "<image_soft_token>",
                "boi_token_index": "<start_of_image>",
                "eoi_token_index": "<end_of_image>",
            },
            config={"mm_tokens_per_image": 4},
            text={
                "layer_types": ["sliding_attention", "full_attention"],
                "sliding_window": 8,
            },
            vision={"image_size": 32, "patch_size": 16},
            nested_images=True,
            zero_init=("mm_input_projection_weight",),
        ),
        _Kind(
            model_type="paligemma",
            processor_class="PaliGemmaProcessor",
            image_processor_class="SiglipImageProcessorPil",
            image_processor={
                "size": {"height": 28, "width": 28},
                "image_seq_length": 4,
            },
            placeholder="<image>",
            named_tokens=_LLAVA_TOKENS,
            token_ids={"image_token_id": "<image>"},
            config={"projection_dim": 64},
            vision={"image_size": 28, "patch_size": 14, "projection_dim": 64},
        ),
        _Kind(
            model_type="idefics2",
            processor_class="Idefics2Processor",
            image_processor_class="Idefics2ImageProcessorPil",
            image_processor={
                "size": {"shortest_edge": 28, "longest_edge": 28},
                "do_image_splitting": False,
            },
            processor={"image_seq_len": 4},
            placeholder="<image>",
            tokens=("<fake_token_around_image>", "<image>", "<end_of_utterance>"),
            token_ids={"image_token_id": "<image>"},
            config={
                "perceiver_config": {
                    "hidden_size": 64,
                    "resampler_n_latents": 4,
                    "resampler_depth": 1,
                    "resampler_n_heads": 2,
                    "resampler_head_dim": 16,
                    "num_key_value_heads": 1,
                }
            },
            vision={"image_size": 28, "patch_size": 14},
            nested_images=True,
        ),
        _Kind(
            model_type="idefics3",
            processor_class="Idefics3Processor",
            image_processor_class="Idefics3ImageProcessorPil",
            image_processor={
                "size": {"longest_edge": 64},
                "max_image_size": {"longest_edge": 64},
                "do_image_splitting": False,
            },
            processor={"image_seq_len": 4},
            placeholder="<image>",
            tokens=(
                "<fake_token_around_image>",
                "<image>",
                "<end_of_utterance>",
                "<global-img>",
            ),
            token_ids={"image_token_id": "<image>"},
            config={"scale_factor": 2},
            vision={"image_size": 64, "patch_size": 16},
            nested_images=True,
        ),
        _Kind(
            model_type="mllama",
            processor_class="MllamaProcessor",
            image_processor_class="MllamaImageProcessorPil",
            image_processor={"size": {"height": 28, "width": 28}, "max_image_tiles": 2},
            placeholder="<|image|>",
            tokens=("<|image|>", "<|python_tag|>"),
            token_ids={"image_token_index": "<|image|>"},
            text={"num_hidden_layers": 3, "cross_attention_layers": [1]},
            vision={
                "image_size": 28,
                "patch_size": 14,
                "num_global_layers": 1,
                "max_num_tiles": 2,
                "intermediate_layers_indices": [0],
                "vision_output_dim": 64,
                "supported_aspect_ratios": [[1, 1], [1, 2], [2, 1]],
            },
            nested_images=True,
            zero_init=("cross_attn_attn_gate", "cross_attn_mlp_gate"),
        ),
        _Kind(
            model_type="aya_vision",
            processor_class="AyaVisionProcessor",
            image_processor_class="GotOcr2ImageProcessorPil",
            image_processor={
                "size": {"height": 56, "width": 56},
                "crop_to_patches": False,
            },
            processor={"patch_size": 14, "img_size": 56, "downsample_factor": 2},
            placeholder="<image>",
            tokens=(
                "<image>",
                "<|START_OF_IMG|>",
                "<|END_OF_IMG|>",
                "<|IMG_PATCH|>",
                "<|IMG_LINE_BREAK|>",
                "TILE",
                "TILE_GLOBAL",
            ),
            token_ids={"image_token_id": "<|IMG_PATCH|>"},
            config={
                "downsample_factor": 2,
                "vision_feature_select_strategy": "full",
                "vision_feature_layer": -1,
            },
            text={
                "layer_types": ["sliding_attention", "full_attention"],
                "sliding_window": 8,
            },
            vision={"image_size": 56, "patch_size": 14},
        ),
        _Kind(
            model_type="internvl",
            processor_class="InternVLProcessor",
            image_processor_class="GotOcr2ImageProcessorPil",
            image_processor={
                "size": {"height": 56, "width": 56},
                "crop_to_patches": False,
            },
            processor={"image_seq_length": 4},
            placeholder="<IMG_CONTEXT>",
            named_tokens={
                "start_image_token": "<img>",
                "end_image_token": "</img>",
                "context_image_token": "<IMG_CONTEXT>",
                "video_token": "<video>",
            },
            token_ids={"image_token_id": "<IMG_CONTEXT>"},
            config={
                "downsample_ratio": 0.5,
                "vision_feature_layer": -1,
                "image_seq_length": 4,
            },
            vision={"image_size": [56, 56], "patch_size": [14, 14]},
            image_only=True,
        ),
        _Kind(
            model_type="deepseek_vl",
            processor_class="DeepseekVLProcessor",
            image_processor_class="DeepseekVLImageProcessorPil",
            image_processor={"size": {"height": 28, "width": 28}},
            processor={"num_image_tokens": 4},
            placeholder="<image_placeholder>",
            named_tokens={"image_token": "<image_placeholder>"},
            token_ids={"image_token_id": "<image_placeholder>"},
            vision={"image_size": 28, "patch_size": 14, "vision_use_head": False},
        ),
    )
}

#: The kinds :func:`tiny_vision_model` builds (transformers model types).
TINY_VISION_KINDS: tuple[str, ...] = tuple(_KINDS)


def tiny_image(seed: int = 0, size: int = 32) -> Image:
    """A random ``size`` x ``size`` RGB PIL image, the same for the same ``seed``.

    The processors resize it to their family's tiny image size.

    Example:
        >>> tiny_image(3).size
        (32, 32)
    """
    from PIL import Image as PILImage

    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(
        0, 256, (size, size, 3), generator=generator, dtype=torch.uint8
    )
    return PILImage.fromarray(pixels.numpy(), mode="RGB")


def tiny_vision_model(
    kind: str, *, seed: int = 0, attn_implementation: str = "eager"
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """A random, eval-mode, float32 vision-language model of ``kind`` and its processor.

    ``kind`` is one of :data:`TINY_VISION_KINDS` (a transformers model type). The processor is
    the family's own class (e.g. ``Qwen2VLProcessor``) around its PIL image processor; its
    tokenizer is :func:`~nnterp.testing.tiny_tokenizer` (left padding) with the family's image
    tokens added. The model's vocabulary is ``len(processor.tokenizer)`` and its config's token
    ids are the tokenizer's. No network access.

    Example:
        >>> model, processor = tiny_vision_model("qwen2_vl")
        >>> type(model).__name__, model.config.image_token_id == processor.image_token_id
        ('Qwen2VLForConditionalGeneration', True)
    """
    from transformers import AutoModelForImageTextToText

    recipe = _recipe(kind)
    processor = _build_processor(recipe)
    config = _build_config(recipe, processor.tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(
        config, attn_implementation=attn_implementation
    )
    _randomize(model, recipe.zero_init, seed)
    return model.float().eval(), processor


def tiny_vision_request(
    kind: str,
    prompts: Sequence[str] | None = None,
    batch: int = 2,
    *,
    images: Sequence[Image] | None = None,
) -> tuple[list[str], list[Any]]:
    """The texts and images `tiny_vision_inputs` gives the processor, in the processor's form
    (``processor(text=texts, images=images)``; what ``model.trace(text=..., images=...)`` takes).

    Example:
        >>> texts, images = tiny_vision_request("llava")
        >>> with model.trace(text=texts, images=images):
        ...     hidden = model.layers_output[0].save()
    """
    recipe = _recipe(kind)
    if prompts is None:
        if not isinstance(batch, int) or not 1 <= batch <= len(DEFAULT_PROMPTS):
            raise InvalidInputError(
                f"batch must be an int from 1 to {len(DEFAULT_PROMPTS)}, got {batch!r}; "
                "pass prompts= for more rows."
            )
        prompts = DEFAULT_PROMPTS[:batch]
    texts = [
        prompt if recipe.placeholder in prompt else recipe.placeholder + prompt
        for prompt in prompt_list(prompts)
    ]
    if images is None:
        images = [tiny_image(index) for index in range(len(texts))]
    elif len(images) != len(texts):
        raise InvalidInputError(
            f"images must hold one image per prompt: got {len(images)} images for {len(texts)} prompts."
        )
    per_prompt: list[Any] = (
        [[image] for image in images] if recipe.nested_images else list(images)
    )
    return texts, per_prompt


def tiny_vision_inputs(
    kind: str,
    processor: ProcessorMixin,
    prompts: Sequence[str] | None = None,
    batch: int = 2,
    *,
    images: Sequence[Image] | None = None,
) -> BatchFeature:
    """The processor's encoding of prompts that each come with one tiny image (left-padded).

    Each prompt gets the family's image placeholder in front (unless it already holds it) and
    its own image: ``images[i]``, by default ``tiny_image(i)`` for the i-th prompt (pass
    ``images=[tiny_image(1)]`` to encode the second prompt of a batch alone). Without
    ``prompts``, the first ``batch`` of :data:`DEFAULT_PROMPTS` are used; their lengths differ,
    so rows are padded.

    Returns ``processor(images=..., text=..., padding=True, padding_side="left",
    return_tensors="pt")``:
    ``input_ids`` and ``attention_mask`` of shape (batch, seq) plus the family's image inputs
    (``pixel_values``, ``image_grid_thw``, ...). PaliGemma's training ``labels`` are left out.

    Example:
        >>> model, processor = tiny_vision_model("gemma3")
        >>> encoding = tiny_vision_inputs("gemma3", processor, ["Hi", "A longer prompt"])
        >>> logits = model(**encoding).logits  # (2, seq, vocab)
    """
    texts, per_prompt = tiny_vision_request(kind, prompts, batch, images=images)
    encoding = processor(
        images=per_prompt,
        text=texts,
        padding=True,
        padding_side="left",
        return_tensors="pt",
    )
    encoding.pop("labels", None)
    return encoding


def _recipe(kind: str) -> _Kind:
    if kind not in _KINDS:
        raise InvalidInputError(
            f"kind must be one of the tiny vision kinds ({', '.join(TINY_VISION_KINDS)}), got {kind!r}."
        )
    return _KINDS[kind]


def _vision_tokenizer(recipe: _Kind) -> Any:
    tokenizer = tiny_tokenizer(padding_side="left")
    tokens = list(dict.fromkeys([*recipe.named_tokens.values(), *recipe.tokens]))
    tokenizer.add_special_tokens(
        {"extra_special_tokens": tokens}, replace_extra_special_tokens=False
    )
    for name, token in recipe.named_tokens.items():
        setattr(tokenizer, name, token)
        setattr(tokenizer, f"{name}_id", tokenizer.convert_tokens_to_ids(token))
    return tokenizer


def _build_processor(recipe: _Kind) -> Any:
    import transformers

    image_processor = getattr(transformers, recipe.image_processor_class)(
        **recipe.image_processor
    )
    processor_class = getattr(transformers, recipe.processor_class)
    if recipe.image_only:
        processor_class = _image_only(processor_class)
    tokenizer = _vision_tokenizer(recipe)
    return processor_class(
        image_processor=image_processor, tokenizer=tokenizer, **recipe.processor
    )


@cache
def _image_only(processor_class: Any) -> type:
    """A subclass of ``processor_class`` that takes no video processor.

    transformers finds a processor's parts from its ``__init__`` signature, so a signature
    without ``video_processor`` makes the video processor optional.
    """

    def __init__(
        self: Any, image_processor: Any = None, tokenizer: Any = None, **kwargs: Any
    ) -> None:
        processor_class.__init__(
            self,
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            **kwargs,
        )

    namespace = {
        "__init__": __init__,
        "__module__": __name__,
        "__doc__": processor_class.__doc__,
    }
    return type(processor_class.__name__, (processor_class,), namespace)


def _build_config(recipe: _Kind, tokenizer: Any) -> Any:
    from transformers import AutoConfig

    text = {
        **_TEXT,
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        **recipe.text,
    }
    vision = {**_VISION, **recipe.vision}
    values = {**recipe.config, "text_config": text, "vision_config": vision}
    values.update(
        {
            name: tokenizer.convert_tokens_to_ids(token)
            for name, token in recipe.token_ids.items()
        }
    )
    return AutoConfig.for_model(recipe.model_type, **values)


def _randomize(model: torch.nn.Module, names: tuple[str, ...], seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.rsplit(".", 1)[-1] in names:
                parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator))
