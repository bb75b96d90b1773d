"""Target prompts for patchscopes: a prompt and the token position a latent is patched into."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Union

import warnings

import torch

from nnterp.errors import InvalidInputError

#: The words of `repeat_prompt` when none are given (nnterp 1.x's, from the Patchscopes
#: paper's notebook).
DEFAULT_REPEAT_WORDS = ("king", "1135", "hello")
#: The words of `repeat_prompt_chat` when none are given.
DEFAULT_CHAT_REPEAT_WORDS = ("king", "hello", "world")
DEFAULT_REPEAT_INSTRUCTION = "Repeat each word after a space, one word per line."


@dataclass
class TargetPrompt:
    """A prompt and the position whose hidden state a patchscope replaces.

    Attributes:
        prompt: the target prompt text.
        index_to_patch: the token position to patch; ``-1`` is the last token, ``0`` the first
            real token (padding is never counted). Negative positions mean what they did in
            nnterp 1.x; non-negative ones differ only in a batch of target prompts of different
            lengths, where 1.x counted columns of the left-padded batch (a warning says so).

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
    def from_target_prompt(cls, prompt: TargetPrompt, batch_size: int) -> TargetPromptBatch:
        """``prompt`` repeated ``batch_size`` times."""
        indices = [int(prompt.index_to_patch)] * batch_size
        return cls([prompt.prompt] * batch_size, torch.as_tensor(indices, dtype=torch.long))

    @staticmethod
    def auto(target_prompt: TargetPromptLike, batch_size: int) -> TargetPromptBatch:
        """Any accepted target form as a batch; a single `TargetPrompt` is repeated ``batch_size`` times.

        Example:
            >>> TargetPromptBatch.auto(TargetPrompt("x ?", -1), batch_size=2).prompts
            ['x ?', 'x ?']
        """
        target = target_prompt
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


def _identity_lines(
    words: Sequence[str] | None, rel: str, sep: str, placeholder: str, default: Sequence[str] = DEFAULT_REPEAT_WORDS
) -> str:
    words = default if words is None else words
    if isinstance(words, str) or not words:
        raise InvalidInputError("words must be a non-empty list of strings, e.g. ['king', 'hello'].")
    return sep.join(f"{word}{rel}{word}" for word in words) + sep + placeholder


def repeat_prompt(
    words: Sequence[str] | None = None,
    rel: str = " ",
    sep: str = "\n",
    placeholder: str = "?",
    index_to_patch: int = -1,
) -> TargetPrompt:
    """The Patchscopes paper's identity prompt: the model repeats whatever the placeholder holds.

    https://github.com/PAIR-code/interpretability/blob/master/patchscopes/code/next_token_prediction.ipynb

    Args:
        words: example words (default ``king``, ``1135``, ``hello``, as in nnterp 1.x).
        rel: what separates a word from its repetition.
        sep: what separates the examples.
        placeholder: the last token, whose hidden state the latent replaces.
        index_to_patch: the position to patch (default ``-1``, the placeholder).

    Returns:
        ``TargetPrompt("king king\\n1135 1135\\nhello hello\\n?", index_to_patch=-1)`` by default.

    Example:
        >>> repeat_prompt(["car", "cross"]).prompt
        'car car\\ncross cross\\n?'
    """
    return TargetPrompt(_identity_lines(words, rel, sep, placeholder), index_to_patch)


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
    Its default words are ``king``, ``hello``, ``world``.

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
        {"role": "assistant", "content": _identity_lines(words, rel, sep, placeholder, DEFAULT_CHAT_REPEAT_WORDS)},
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


_IT_INSTRUCTION = (
    "I will provide you with a series of sentences. Your task is to guess the next word in the "
    "sentence. You must answer with the next word only."
)
_IT_SYSTEM_INSTRUCTION = (
    "The user will provide you with a sentence. Your task is to guess the next word in the "
    "sentence. You must answer with the next word only."
)


def it_repeat_prompt(
    tokenizer: Any,
    words: Sequence[str] | None = None,
    rel: str = " ",
    sep: str = "\n",
    placeholder: str = "?",
    complete_prompt: bool = True,
    add_user_instr: bool = True,
    use_system_prompt: bool = True,
) -> TargetPrompt:
    """nnterp 1.x's chat version of `repeat_prompt` (deprecated: use `repeat_prompt_chat`).

    Builds exactly 1.x's conversation: an optional system prompt, the user's instruction, the
    identity lines as a user turn, and an assistant turn left open (holding the identity lines
    again when ``complete_prompt``), rendered with ``tokenizer.apply_chat_template``.

    Args:
        tokenizer: the model's tokenizer (with a chat template).
        words, rel, sep, placeholder: as in `repeat_prompt`.
        complete_prompt: put the identity lines in the open assistant turn too.
        add_user_instr: start with the user's instruction and the assistant's "Ok.".
        use_system_prompt: add a system turn (for templates that accept one).

    Returns:
        ``TargetPrompt(rendered_text, index_to_patch=-1)``.

    Warns:
        DeprecationWarning: always; `repeat_prompt_chat` is the 2.0 form (a shorter conversation,
            so a different prompt).

    Example:
        >>> target = it_repeat_prompt(model.tokenizer, use_system_prompt=False)
    """
    warnings.warn(
        "it_repeat_prompt is deprecated: use nnterp.interventions.repeat_prompt_chat(tokenizer, ...) "
        "(its conversation is shorter, so the prompt differs).",
        DeprecationWarning,
        stacklevel=2,
    )
    prompt = _identity_lines(words, rel, sep, placeholder)
    answer = {"role": "assistant", "content": prompt if complete_prompt else ""}
    chat: list[dict[str, str]] = []
    if add_user_instr:
        if use_system_prompt:
            chat.append({"role": "system", "content": "You are a helpful assistant."})
        chat += [
            {"role": "user", "content": _IT_INSTRUCTION},
            {"role": "assistant", "content": "Ok."},
            {"role": "user", "content": prompt},
            answer,
        ]
    elif use_system_prompt:
        chat += [{"role": "system", "content": _IT_SYSTEM_INSTRUCTION}, {"role": "user", "content": prompt}, answer]
    else:
        request = f"Guess the next word in the following sentence (answer only the next word): {prompt}"
        chat += [{"role": "user", "content": request}, answer]
    text = tokenizer.apply_chat_template(chat, tokenize=False, continue_final_message=True, add_special_tokens=False)
    return TargetPrompt(text, -1)
