"""Target prompts for patchscopes: a prompt and the token position a latent is patched into."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch

from nnterp.errors import InvalidInputError

#: The words of the Patchscopes paper's identity prompt, used when none are given.
DEFAULT_REPEAT_WORDS = ("king", "hello", "world")
DEFAULT_REPEAT_INSTRUCTION = "Repeat each word after a space, one word per line."


@dataclass
class TargetPrompt:
    """A prompt and the position whose hidden state a patchscope replaces.

    Attributes:
        prompt: the target prompt text.
        index_to_patch: the token position to patch; ``-1`` is the last token, ``0`` the first
            real token (padding is never counted).

    Example:
        >>> TargetPrompt("The capital of France is", index_to_patch=-1)
    """

    prompt: str
    index_to_patch: int


@dataclass
class TargetPromptBatch:
    """Several target prompts, each with its own position to patch.

    Attributes:
        prompts: the target prompt texts.
        index_to_patch: (len(prompts),) long tensor of positions (see `TargetPrompt`).

    Example:
        >>> batch = TargetPromptBatch.from_prompts(["a b ?", "c ?"], -1)
        >>> batch[1]
        TargetPrompt(prompt='c ?', index_to_patch=-1)
    """

    prompts: list[str]
    index_to_patch: torch.Tensor

    def __post_init__(self) -> None:
        if isinstance(self.prompts, str):
            self.prompts = [self.prompts]
        self.prompts = list(self.prompts)
        self.index_to_patch = torch.as_tensor(self.index_to_patch, dtype=torch.long).reshape(-1)
        if len(self.index_to_patch) == 1 and len(self.prompts) > 1:
            self.index_to_patch = self.index_to_patch.expand(len(self.prompts)).clone()
        if not self.prompts or len(self.index_to_patch) != len(self.prompts):
            raise InvalidInputError(
                f"TargetPromptBatch needs one index_to_patch per prompt (or one for all): got "
                f"{len(self.prompts)} prompts and {len(self.index_to_patch)} indices."
            )

    @classmethod
    def from_prompts(
        cls, prompts: str | Sequence[str], index_to_patch: int | Sequence[int] | torch.Tensor
    ) -> TargetPromptBatch:
        """A batch from prompt texts and one index for all or one per prompt."""
        texts = [prompts] if isinstance(prompts, str) else list(prompts)
        return cls(texts, torch.as_tensor(index_to_patch, dtype=torch.long))

    @classmethod
    def from_target_prompts(cls, target_prompts: Sequence[TargetPrompt]) -> TargetPromptBatch:
        """A batch holding ``target_prompts`` in order."""
        indices = [int(t.index_to_patch) for t in target_prompts]
        return cls([t.prompt for t in target_prompts], torch.as_tensor(indices, dtype=torch.long))

    @classmethod
    def from_target_prompt(cls, target_prompt: TargetPrompt, batch_size: int) -> TargetPromptBatch:
        """``target_prompt`` repeated ``batch_size`` times."""
        indices = [int(target_prompt.index_to_patch)] * batch_size
        return cls([target_prompt.prompt] * batch_size, torch.as_tensor(indices, dtype=torch.long))

    @staticmethod
    def auto(target: TargetPromptLike, batch_size: int) -> TargetPromptBatch:
        """Any accepted target form as a batch; a single `TargetPrompt` is repeated ``batch_size`` times."""
        if isinstance(target, TargetPromptBatch):
            return target
        if isinstance(target, TargetPrompt):
            return TargetPromptBatch.from_target_prompt(target, batch_size)
        if isinstance(target, (list, tuple)) and target and all(isinstance(t, TargetPrompt) for t in target):
            return TargetPromptBatch.from_target_prompts(target)
        raise InvalidInputError(
            "target_patch_prompts must be a TargetPrompt, a non-empty list of TargetPrompt or a "
            f"TargetPromptBatch, got {type(target).__name__}: wrap a string as "
            "TargetPrompt(text, index_to_patch=-1)."
        )

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, index: int) -> TargetPrompt:
        return TargetPrompt(self.prompts[index], int(self.index_to_patch[index]))

    def __iter__(self) -> Iterator[TargetPrompt]:
        for index in range(len(self)):
            yield self[index]


TargetPromptLike = Union[TargetPrompt, Sequence[TargetPrompt], TargetPromptBatch]


def _identity_lines(words: Sequence[str] | None, rel: str, sep: str, placeholder: str) -> str:
    words = DEFAULT_REPEAT_WORDS if words is None else words
    if isinstance(words, str) or not words:
        raise InvalidInputError("words must be a non-empty list of strings, e.g. ['king', 'hello'].")
    return sep.join(f"{word}{rel}{word}" for word in words) + sep + placeholder


def repeat_prompt(
    words: Sequence[str] | None = None, rel: str = " ", sep: str = "\n", placeholder: str = "?"
) -> TargetPrompt:
    """The Patchscopes paper's identity prompt: the model repeats whatever the placeholder holds.

    Args:
        words: example words (default ``king``, ``hello``, ``world``).
        rel: what separates a word from its repetition.
        sep: what separates the examples.
        placeholder: the last token, whose hidden state the latent replaces.

    Returns:
        ``TargetPrompt("king king\\nhello hello\\nworld world\\n?", index_to_patch=-1)`` by default.

    Example:
        >>> repeat_prompt(["car", "cross"]).prompt
        'car car\\ncross cross\\n?'
    """
    return TargetPrompt(_identity_lines(words, rel, sep, placeholder), -1)


def repeat_prompt_chat(
    tokenizer: Any,
    words: Sequence[str] | None = None,
    rel: str = " ",
    sep: str = "\n",
    placeholder: str = "?",
    instruction: str = DEFAULT_REPEAT_INSTRUCTION,
) -> TargetPrompt:
    """`repeat_prompt` for instruction-tuned models, rendered with the tokenizer's chat template.

    The user turn gives ``instruction``; the assistant turn holds the identity lines and is left
    open, ending at the placeholder (``index_to_patch=-1``).

    Raises:
        InvalidInputError: the tokenizer has no chat template.

    Example:
        >>> target = repeat_prompt_chat(model.tokenizer, words=["king", "hello"])
        >>> probs = patchscope_lens(model, ["The capital of France is"], target)
    """
    if not getattr(tokenizer, "chat_template", None):
        raise InvalidInputError(
            f"{type(tokenizer).__name__} has no chat template: use repeat_prompt() for base "
            "models, or set tokenizer.chat_template to the model's template."
        )
    messages = [
        {"role": "user", "content": instruction},
        {"role": "assistant", "content": _identity_lines(words, rel, sep, placeholder)},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True)
    return TargetPrompt(_without_added_bos(text, tokenizer), -1)


def _without_added_bos(text: str, tokenizer: Any) -> str:
    """``text`` minus a leading BOS string when tokenizing would add a BOS token anyway."""
    bos = getattr(tokenizer, "bos_token", None)
    if not bos or not text.startswith(bos):
        return text
    with_special = tokenizer("x")["input_ids"]
    adds_bos = bool(with_special) and with_special[0] == tokenizer.bos_token_id
    return text[len(bos):] if adds_bos else text
