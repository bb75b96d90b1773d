"""Target-token tracking: prompts with target categories, and their probabilities.

Example:
    >>> prompt = Prompt.from_strings(
    ...     "The capital of France (not England or Spain) is",
    ...     {"target": "Paris", "traps": ["London", "Madrid"]},
    ...     model.tokenizer,
    ... )
    >>> run_prompts(model, [prompt])["target"]          # (1,) probability of Paris' first tokens
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Union, cast

import torch
from tqdm.auto import tqdm as progress_bar

from nnterp.errors import InvalidInputError

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer

TargetStrings = Union[str, Sequence[str], Mapping[str, Union[str, Sequence[str]]]]


def _words(words: str | Sequence[str], name: str) -> list[str]:
    values = [words] if isinstance(words, str) else list(words)
    if not values or any(not isinstance(word, str) or not word.strip() for word in values):
        raise InvalidInputError(f"{name} must be a non-empty word or list of non-empty words, got {words!r}")
    return values


def get_first_tokens(words: str | Sequence[str], tokenizer: Any) -> list[int]:
    """First token ids of each word written alone (``"word"``) and after a space (``" word"``).

    A bare-space first token (a tokenizer that splits ``" word"`` as ``" "`` + ``"word"``)
    is skipped, since it says nothing about the word. Duplicates are removed, order kept.

    Example:
        >>> get_first_tokens(["Paris", "London"], tokenizer)   # ids of 'Par', ' Paris', 'Lon', ' London'
    """
    space = tokenizer(" ", add_special_tokens=False)["input_ids"]
    tokens = []
    for word in _words(words, "words"):
        for variant in (word, " " + word):
            ids = tokenizer(variant, add_special_tokens=False)["input_ids"]
            if len(ids) > 1 and ids[:1] == space:
                continue
            tokens.append(int(ids[0]))
    return list(dict.fromkeys(tokens))


@dataclass
class Prompt:
    """A prompt and the tokens to track, per category, in its next-token distribution.

    Attributes:
        prompt: the prompt text.
        target_tokens: ``{category: [token ids]}``.
        target_strings: ``{category: [words]}`` the tokens come from (``None`` when built from ids).

    Example:
        >>> Prompt.from_strings("The capital of France is", {"target": "Paris"}, tokenizer)
    """

    prompt: str
    target_tokens: dict[str, list[int]]
    target_strings: dict[str, list[str]] | None = None

    @classmethod
    def from_strings(
        cls,
        prompt: str,
        target_strings: TargetStrings,
        tokenizer: Any,
        allow_collisions: bool = False,
    ) -> Prompt:
        """Track the first tokens (see `get_first_tokens`) of each category's words.

        Args:
            prompt: the prompt text.
            target_strings: ``{category: word or [words]}``; a bare word or list is the category
                ``"target"``.
            tokenizer: the model's tokenizer.
            allow_collisions: allow two categories to share a token (otherwise an error).

        Raises:
            InvalidInputError: two categories share a first token (unless allowed), or a word is empty.
        """
        if isinstance(target_strings, (str, list, tuple)):
            categories: Mapping[str, str | Sequence[str]] = {"target": target_strings}
        else:  # a mapping (any other sequence fails on .items(), as it always did)
            categories = cast("Mapping[str, str | Sequence[str]]", target_strings)
        strings = {category: _words(words, f"category {category!r}") for category, words in categories.items()}
        tokens = {category: get_first_tokens(words, tokenizer) for category, words in strings.items()}
        built = cls(prompt, tokens, strings)
        if not allow_collisions:
            built.check_collisions(tokenizer)
        return built

    def collisions(self, ignore_categories: str | Sequence[str] | None = None) -> list[tuple[str, str, int]]:
        """``(category, other category, token)`` for every token two categories share."""
        ignored = {ignore_categories} if isinstance(ignore_categories, str) else set(ignore_categories or ())
        owner: dict[int, str] = {}
        found = []
        for category, tokens in self.target_tokens.items():
            if category in ignored:
                continue
            for token in tokens:
                if token in owner and owner[token] != category:
                    found.append((owner[token], category, token))
                owner.setdefault(token, category)
        return found

    def has_no_collisions(self, ignore_targets: str | Sequence[str] | None = None) -> bool:
        """Whether no two categories (outside ``ignore_targets``) share a token."""
        return not self.collisions(ignore_targets)

    def check_collisions(self, tokenizer: Any = None) -> None:
        """Raise `InvalidInputError` naming the categories and token of the first collision."""
        found = self.collisions()
        if not found:
            return
        first, second, token = found[0]
        shown = f" ({tokenizer.decode([token])!r})" if tokenizer is not None else ""
        raise InvalidInputError(
            f"categories {first!r} and {second!r} both track token {token}{shown} in prompt "
            f"{self.prompt!r}, so their probabilities would overlap: change the words, or pass "
            "allow_collisions=True to keep both."
        )

    def get_target_probs(self, probs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Summed probability of each category's tokens: (..., vocab) -> {category: (...)}."""
        vocab = probs.shape[-1]
        for category, tokens in self.target_tokens.items():
            if any(not 0 <= token < vocab for token in tokens):
                raise InvalidInputError(
                    f"category {category!r} tracks token ids {tokens} but the model's vocabulary has "
                    f"{vocab} entries: build the Prompt with the model's own tokenizer."
                )
        return {category: probs[..., tokens].sum(dim=-1) for category, tokens in self.target_tokens.items()}


@torch.no_grad()
def next_token_probs(model: StandardizedTransformer, prompts: str | list[str]) -> torch.Tensor:
    """The model's next-token probabilities at each prompt's last token: (batch, vocab), CPU.

    Example:
        >>> next_token_probs(model, ["The capital of France is"]).shape   # (1, vocab)
    """
    import nnsight  # lazily: importing this module must not load nnsight

    with model.trace(prompts):
        probs = nnsight.save(model.next_token_probs.float().cpu())
    return probs


def _progress(tqdm: bool | Callable[..., Any] | None) -> Callable[..., Any]:
    if callable(tqdm):
        return tqdm
    if tqdm:
        return progress_bar
    return lambda iterable, **_: iterable


@torch.no_grad()
def run_prompts(
    model: StandardizedTransformer,
    prompts: Sequence[Prompt],
    batch_size: int = 32,
    get_probs_func: Callable[..., torch.Tensor] | None = None,
    func_kwargs: dict[str, Any] | None = None,
    tqdm: bool | Callable[..., Any] | None = True,
) -> dict[str, torch.Tensor]:
    """Probability of each category's tokens at the next token of every prompt.

    Args:
        model: a `StandardizedTransformer`.
        prompts: `Prompt` objects, all with the same categories.
        batch_size: prompts per forward pass.
        get_probs_func: ``f(model, texts, **func_kwargs)`` giving (batch, vocab) or
            (batch, layers, vocab) probabilities; default the model's next-token probabilities.
            Pass `nnterp.interventions.logit_lens` to track the categories across layers.
        func_kwargs: extra keyword arguments for ``get_probs_func``.
        tqdm: show a progress bar (``True``), none (``False``), or a tqdm-like callable.

    Returns:
        ``{category: tensor}`` of shape (num_prompts,), or (num_prompts, layers) with a per-layer
        ``get_probs_func``.

    Example:
        >>> results = run_prompts(model, prompts, batch_size=2, get_probs_func=logit_lens)
        >>> results["target"].shape                        # (len(prompts), model.num_layers)
    """
    prompts = list(prompts)
    if not prompts:
        return {}
    if any(not isinstance(prompt, Prompt) for prompt in prompts):
        raise InvalidInputError("run_prompts takes Prompt objects: build them with Prompt.from_strings(...).")
    categories = list(prompts[0].target_tokens)
    for index, prompt in enumerate(prompts):
        if set(prompt.target_tokens) != set(categories):
            raise InvalidInputError(
                f"prompt {index} tracks categories {sorted(prompt.target_tokens)} but prompt 0 tracks "
                f"{sorted(categories)}: every prompt must track the same categories."
            )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive int, got {batch_size!r}")
    probs_func = next_token_probs if get_probs_func is None else get_probs_func
    texts = [prompt.prompt for prompt in prompts]
    starts = range(0, len(texts), batch_size)
    chunks = [
        probs_func(model, texts[start : start + batch_size], **(func_kwargs or {}))
        for start in _progress(tqdm)(starts, desc="Running prompts", total=len(starts))
    ]
    probs = torch.cat([chunk.cpu() for chunk in chunks])
    per_prompt = [prompt.get_target_probs(row) for prompt, row in zip(prompts, probs)]
    return {category: torch.stack([values[category] for values in per_prompt]) for category in categories}
