"""Vision-language models: the language model inside, standardized, traced with image inputs.

``StandardizedTransformer(vlm, tokenizer, processor=processor)`` (or a vision-language hub id,
loaded with ``AutoModelForImageTextToText`` and ``AutoProcessor``) exposes the text decoder as the
standard tree (``layers``, ``ln_final``, ``lm_head``, ``embed_tokens``; the spec of the model's class
says where they are) and the vision tower's blocks as ``vision_layers`` where the spec names
them. Text with images is run through the processor as one left-padded batch, so every position
rule of nnterp holds: ``0`` is each prompt's first real token, image placeholder tokens included.

Example:
    >>> model = StandardizedTransformer("llava-hf/llava-1.5-7b-hf")
    >>> with model.trace(text=["<image> What is shown?"], images=[image]):
    ...     hidden = model.layers_output[10].save()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nnterp.errors import InvalidInputError

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer

#: Keyword arguments that carry media for the processor (NNsight's names).
MEDIA_KEYS = frozenset({"images", "image", "videos", "video", "audio", "audios"})
#: What goes to the processor: the media and the text.
PROCESSOR_KEYS = MEDIA_KEYS | {"text"}


def processor_encoding(
    model: StandardizedTransformer, inputs: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``(inputs, kwargs)`` of a trace written in processor terms, as the model-input encoding
    (input ids, attention mask, pixel values, ...) of one left-padded batch, and the remaining
    forward keyword arguments.

    Raises:
        InvalidInputError: the prompt given both positionally and as ``text=``, or no text.

    Example:
        >>> (encoding,), rest = processor_encoding(model, (), {"text": ["<image> Hi"], "images": [image]})
        >>> sorted(encoding)
        ['attention_mask', 'input_ids', 'pixel_values']
    """
    call = {key: value for key, value in kwargs.items() if key in PROCESSOR_KEYS}
    rest = {key: value for key, value in kwargs.items() if key not in PROCESSOR_KEYS}
    if inputs:
        if "text" in call:
            raise InvalidInputError("the prompt was given both positionally and as text=: pass it once.")
        call["text"] = inputs[0]
        inputs = inputs[1:]
    if call.get("text") is None:
        raise InvalidInputError(
            "images were given without text: pass text=[...] with the model's image placeholder "
            "token in each prompt (the processor's image_token)."
        )
    encoding = model.processor(**call, return_tensors="pt", padding=True, padding_side="left")
    return (dict(encoding), *inputs), rest
