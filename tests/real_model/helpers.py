"""Small helpers shared by the real-model tests."""

from __future__ import annotations

import torch


def token_id(tokenizer, text: str) -> int:
    """The id of ``text``, which must be exactly one token."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) == 1, f"{text!r} is {len(ids)} tokens: {ids}"
    return ids[0]


def rank_of(scores, index: int) -> int:
    """0-based rank of ``index`` in the 1-D ``scores`` (0 = highest)."""
    return int((scores > scores[index]).sum())


def assert_logits_equal_plain(model, hf_model, hf_tokenizer, prompts) -> None:
    """nnterp's logits for ``prompts`` (one string, or a list run as a left-padded batch with
    position ids from the mask) equal the plain transformers model's, bit for bit at every real
    token; a single prompt's input ids are also the tokenizer's."""
    batched = not isinstance(prompts, str)
    encoding = hf_tokenizer(prompts, return_tensors="pt", padding=batched)
    extra = {}
    if batched:
        assert not encoding["attention_mask"][0].all(), "the first prompt must be left-padded"
        extra["position_ids"] = (encoding["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        expected = hf_model(**encoding, **extra).logits
    with model.trace(prompts):
        input_ids = model.input_ids.save()
        logits = model.logits.save()
    if not batched:
        assert torch.equal(input_ids, encoding["input_ids"])
        assert torch.equal(logits, expected)
        return
    mask = encoding["attention_mask"].bool()
    assert logits.shape == expected.shape
    assert torch.equal(logits[mask], expected[mask])
