"""Vision-language models (image-text-to-text): the language model inside is the standard tree,
the vision tower's blocks are ``vision_layers``. Trace them with images through the processor
(``StandardizedTransformer(vlm, processor=...)``, ``model.trace(text=[...], images=[...])``)."""

from __future__ import annotations

from nnterp.architectures import GEMMA
from nnterp.contrib.families.llama_like import COHERE, LLAMA_LIKE

_TEXT = "model.language_model"
_CLIP_LIKE = "model.vision_tower.encoder.layers"

#: LLaVA and the models built like it: a CLIP/SigLIP-style tower, a projector, a Llama-style decoder.
LLAVA = LLAMA_LIKE.with_classes(
    "LlavaForConditionalGeneration",
    "LlavaNextForConditionalGeneration",
    "VipLlavaForConditionalGeneration",
    "LlavaOnevisionForConditionalGeneration",
    "DeepseekVLForConditionalGeneration",
    name="llava",
    layers=f"{_TEXT}.layers",
    ln_final=f"{_TEXT}.norm",
    embed_tokens=f"{_TEXT}.embed_tokens",
    vision_layers=(_CLIP_LIKE, "model.vision_model.encoder.layers"),
)

#: InternVL: its tower names the block list ``layer``.
INTERNVL = LLAVA.with_classes("InternVLForConditionalGeneration", name="internvl", vision_layers="model.vision_tower.encoder.layer")

#: Qwen2-VL and Qwen2.5-VL: 3-D rotary positions the model computes from the image grid (nnterp
#: must not pass 1-D position ids), a vision transformer in ``model.visual``.
QWEN2_VL = LLAVA.with_classes(
    "Qwen2VLForConditionalGeneration",
    "Qwen2_5_VLForConditionalGeneration",
    name="qwen2_vl",
    position_ids_from_mask=False,
    rotary_embedding="apply_multimodal_rotary_pos_emb",
    vision_layers="model.visual.blocks",
)

#: Qwen3-VL: the same positions, the standard rotary call.
QWEN3_VL = QWEN2_VL.with_classes("Qwen3VLForConditionalGeneration", name="qwen3_vl", rotary_embedding="apply_rotary_pos_emb")

#: PaliGemma: a Gemma decoder (embeddings scaled in the forward); the top config's hidden_size is
#: the projector's, the decoder's is in text_config.
PALIGEMMA = GEMMA.with_classes(
    "PaliGemmaForConditionalGeneration",
    name="paligemma",
    hidden_size_keys=("text_config.hidden_size",),
    layers=f"{_TEXT}.layers",
    ln_final=f"{_TEXT}.norm",
    embed_tokens=f"{_TEXT}.embed_tokens",
    vision_layers=_CLIP_LIKE,
)

#: Aya Vision: a Cohere 2 decoder, whose logit scale the vision-language head does not apply.
AYA_VISION = COHERE.with_classes(
    "AyaVisionForConditionalGeneration",
    name="aya_vision",
    logits_postprocess=(),
    layers=f"{_TEXT}.layers",
    ln_final=f"{_TEXT}.norm",
    embed_tokens=f"{_TEXT}.embed_tokens",
    vision_layers=_CLIP_LIKE,
)

#: Idefics 2 and 3: the decoder is ``model.text_model``.
IDEFICS = LLAMA_LIKE.with_classes(
    "Idefics2ForConditionalGeneration",
    "Idefics3ForConditionalGeneration",
    name="idefics",
    layers="model.text_model.layers",
    ln_final="model.text_model.norm",
    embed_tokens="model.text_model.embed_tokens",
    vision_layers="model.vision_model.encoder.layers",
)

SPECS = (LLAVA, INTERNVL, QWEN2_VL, QWEN3_VL, PALIGEMMA, AYA_VISION, IDEFICS)
