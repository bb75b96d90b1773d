"""Target-token tracking: prompts with target categories, and their probabilities.

Example:
    >>> prompt = Prompt.from_strings(
    ...     "The capital of France (not England or Spain) is",
    ...     {"target": "Paris", "traps": ["London", "Madrid"]},
    ...     model,                  # or model.tokenizer
    ... )
    >>> run_prompts(model, [prompt])["target"]          # (1,) probability of Paris' first tokens
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Union, cast

import torch
from nnterp.progress import progress_bar

from nnterp.errors import InvalidInputError, TokenizationError
from nnterp.inputs import normalize_index

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer

TargetStrings = Union[str, Sequence[str], Mapping[str, Union[str, Sequence[str]]]]


def _words(words: str | Sequence[str], name: str) -> list[str]:
    values = [words] if isinstance(words, str) else list(words)
    if not values or any(not isinstance(word, str) or not word.strip() for word in values):
        raise InvalidInputError(f"{name} must be a non-empty word or list of non-empty words, got {words!r}")
    return values


def _tokenizer_of(llm_or_tokenizer: Any, name: str = "llm_or_tokenizer") -> Any:
    """The tokenizer of a `StandardizedTransformer` or nnsight ``LanguageModel``, or the tokenizer itself."""
    from transformers import PreTrainedTokenizerBase

    if isinstance(llm_or_tokenizer, PreTrainedTokenizerBase):
        return llm_or_tokenizer
    try:
        inner = getattr(llm_or_tokenizer, "tokenizer", None)
    except Exception:  # an nnsight envoy may raise anything from an unknown attribute
        inner = None
    if inner is not None and callable(inner):
        return inner
    if callable(llm_or_tokenizer):
        return llm_or_tokenizer  # a tokenizer-like object that is not a transformers tokenizer
    raise InvalidInputError(
        f"{name} must be a tokenizer, a StandardizedTransformer or an nnsight LanguageModel, got "
        f"{type(llm_or_tokenizer).__name__}: pass model.tokenizer or the model itself."
    )


def _ids(tokenizer: Any, text: str) -> list[int]:
    return [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]


def _first_token_after_marker(tokenizer: Any, word: str) -> list[int]:
    """nnterp 1.x's ``use_hacky_implementation``: the first token of ``word`` written right
    after a pear emoji, so no tokenizer prefix space can creep in (``[]`` if none)."""
    marker = _ids(tokenizer, "\U0001f350")
    tokens = _ids(tokenizer, "\U0001f350" + word)
    if tokens[: len(marker)] != marker:
        raise TokenizationError(
            f"the tokenizer merges the marker '\U0001f350' with {word!r}, so the word's first token "
            "cannot be isolated: call get_first_tokens with use_hacky_implementation=False."
        )
    return tokens[len(marker) : len(marker) + 1]


def get_first_tokens(
    words: str | Sequence[str],
    llm_or_tokenizer: Any,
    use_hacky_implementation: bool = False,
) -> list[int]:
    """First token ids of each word written alone (``"word"``) and after a space (``" word"``).

    A bare-space first token (a tokenizer that splits ``" word"`` as ``" "`` + ``"word"``)
    is skipped, since it says nothing about the word. Duplicates are removed, order kept.

    Args:
        words: a word or a list of words.
        llm_or_tokenizer: a tokenizer, or a `StandardizedTransformer` / nnsight
            ``LanguageModel`` whose ``.tokenizer`` is used (as in nnterp 1.x).
        use_hacky_implementation: as in nnterp 1.x, take only the first token of each word
            written right after a pear emoji (``"🍐word"``), ignoring the spaced spelling.

    Returns:
        a list of token ids.

    Raises:
        InvalidInputError: an empty word, or ``llm_or_tokenizer`` is none of the three.
        TokenizationError: a word gives no token, or the emoji marker merges with the word.

    Example:
        >>> get_first_tokens(["Paris", "London"], model)   # ids of 'Par', ' Paris', 'Lon', ' London'
    """
    tokenizer = _tokenizer_of(llm_or_tokenizer)
    space = _ids(tokenizer, " ")
    tokens = []
    for word in _words(words, "words"):
        if use_hacky_implementation:
            tokens.extend(_first_token_after_marker(tokenizer, word))
            continue
        for variant in (word, " " + word):
            ids = _ids(tokenizer, variant)
            if not ids:
                raise TokenizationError(f"{variant!r} tokenizes to no token at all: drop it from words.")
            if len(ids) > 1 and ids[:1] == space:
                continue
            tokens.append(ids[0])
    return list(dict.fromkeys(tokens))


@dataclass
class Prompt:
    """A prompt and the tokens to track, per category, in its next-token distribution.

    Attributes:
        prompt: the prompt text.
        target_tokens: ``{category: [token ids]}``.
        target_strings: ``{category: [words]}`` the tokens come from (``None`` when built from ids).

    Example:
        >>> Prompt.from_strings("The capital of France is", {"target": "Paris"}, model)
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
        allow_collisions: bool | None = None,
    ) -> Prompt:
        """Track the first tokens (see `get_first_tokens`) of each category's words.

        Args:
            prompt: the prompt text.
            target_strings: ``{category: word or [words]}``; a bare word or list is the category
                ``"target"``.
            tokenizer: the model's tokenizer, or the model itself (a `StandardizedTransformer`
                or an nnsight ``LanguageModel``), as in nnterp 1.x.
            allow_collisions: what to do when two categories share a first token. ``None``
                (default, nnterp 1.x's behaviour): build the prompt and warn; `has_no_collisions`
                reports it. ``True``: build it silently. ``False``: raise.

        Raises:
            InvalidInputError: a word is empty, or a collision with ``allow_collisions=False``.

        Warns:
            UserWarning: two categories share a token and ``allow_collisions`` is ``None``.

        Example:
            >>> p = Prompt.from_strings("The capital of France is", {"target": "Paris", "traps": "London"}, model)
            >>> p.target_tokens["target"]      # ids of 'Par' and ' Paris'
        """
        if isinstance(target_strings, (str, list, tuple)):
            categories: Mapping[str, str | Sequence[str]] = {"target": target_strings}
        else:  # a mapping (any other sequence fails on .items(), as it always did)
            categories = cast("Mapping[str, str | Sequence[str]]", target_strings)
        words_tokenizer = _tokenizer_of(tokenizer, "tokenizer")
        strings = {category: _words(words, f"category {category!r}") for category, words in categories.items()}
        tokens = {category: get_first_tokens(words, words_tokenizer) for category, words in strings.items()}
        built = cls(prompt, tokens, strings)
        if allow_collisions is False:
            built.check_collisions(words_tokenizer)
        elif allow_collisions is None and not built.has_no_collisions():
            first, second, token = built.collisions()[0]
            warnings.warn(
                f"categories {first!r} and {second!r} both track token {token} "
                f"({words_tokenizer.decode([token])!r}) in prompt {prompt!r}, so their probabilities "
                "overlap; prompt.has_no_collisions() reports it. Pass allow_collisions=True to "
                "silence this, or allow_collisions=False to raise instead.",
                UserWarning,
                stacklevel=2,
            )
        return built

    def collisions(self, ignore_categories: str | Sequence[str] | None = None) -> list[tuple[str, str, int]]:
        """``(category, other category, token)`` for every token two categories share.

        Example:
            >>> Prompt("x", {"a": [1, 2], "b": [2]}).collisions()
            [('a', 'b', 2)]
        """
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
        """Whether no two categories (outside ``ignore_targets``) share a token.

        Example:
            >>> Prompt("x", {"a": [1, 2], "b": [2]}).has_no_collisions(ignore_targets="b")
            True
        """
        return not self.collisions(ignore_targets)

    def check_collisions(self, tokenizer: Any = None) -> None:
        """Raise `InvalidInputError` naming the categories and token of the first collision.

        Example:
            >>> Prompt("x", {"a": [1], "b": [1]}).check_collisions()   # raises InvalidInputError
        """
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

    def get_target_probs(self, probs: torch.Tensor, layer: int | None = None) -> dict[str, torch.Tensor]:
        """Summed probability of each category's tokens, on the CPU.

        Args:
            probs: (..., vocab) probabilities, e.g. (batch, layers, vocab) from `logit_lens`.
            layer: as in nnterp 1.x, keep only this layer of (batch, layers, vocab) probabilities.

        Returns:
            ``{category: (...)}``; with ``layer``, ``{category: (batch,)}``.

        Example:
            >>> prompt.get_target_probs(logit_lens(model, prompt.prompt))["target"].shape   # (1, layers)
            >>> prompt.get_target_probs(logit_lens(model, prompt.prompt), layer=-1)["target"].shape  # (1,)
        """
        vocab = probs.shape[-1]
        for category, tokens in self.target_tokens.items():
            if any(not 0 <= token < vocab for token in tokens):
                raise InvalidInputError(
                    f"category {category!r} tracks token ids {tokens} but the model's vocabulary has "
                    f"{vocab} entries: build the Prompt with the model's own tokenizer."
                )
        if layer is not None:
            if probs.dim() != 3:
                raise InvalidInputError(
                    f"layer= picks a layer of (batch, layers, vocab) probabilities, but probs has shape "
                    f"{tuple(probs.shape)}: drop layer= or pass per-layer probabilities (e.g. logit_lens)."
                )
            probs = probs[:, normalize_index(layer, probs.shape[1], "layer")]
        return {category: probs[..., tokens].sum(dim=-1).cpu() for category, tokens in self.target_tokens.items()}

    @torch.no_grad()
    def run(self, nn_model: StandardizedTransformer, get_probs: Callable[..., torch.Tensor]) -> dict[str, torch.Tensor]:
        """``get_target_probs(get_probs(nn_model, self.prompt))``, as in nnterp 1.x.

        Args:
            nn_model: the model.
            get_probs: ``f(model, prompt)`` giving (1, vocab) or (1, layers, vocab) probabilities,
                e.g. `logit_lens` or `next_token_probs_unsqueeze`.

        Returns:
            ``{category: (1,) or (1, layers)}`` summed probabilities, on the CPU.

        Example:
            >>> prompt.run(model, logit_lens)["target"].shape      # (1, model.num_layers)
        """
        return self.get_target_probs(get_probs(nn_model, self.prompt))


def remote_option(remote: Any) -> dict[str, Any]:
    """Trace options for ``remote=`` (`nnterp.tracing.remote_options`): ``True`` (NDIF) and
    ``"local"`` (NNsight's local simulation of a remote run) are passed on; ``None`` and
    ``False`` leave the model's own ``remote`` default.

    Example:
        >>> remote_option(True), remote_option(False), remote_option("local")
        ({'remote': True}, {}, {'remote': 'local'})
    """
    from nnterp.tracing import remote_options

    return remote_options(remote)


@torch.no_grad()
def next_token_probs(model: StandardizedTransformer, prompts: str | list[str], remote: bool | str | None = False) -> torch.Tensor:
    """The model's next-token probabilities at each prompt's last token: (batch, vocab), CPU.

    Args:
        model: the model.
        prompts: a prompt or a list (batched with left padding).
        remote: run the trace on NDIF (through nnsight).

    Example:
        >>> next_token_probs(model, ["The capital of France is"]).shape   # (1, vocab)
    """
    import nnsight  # lazily: importing this module must not load nnsight

    with model.trace(prompts, **remote_option(remote)):
        probs = nnsight.save(model.next_token_probs.float().cpu())
    return probs


def next_token_probs_unsqueeze(
    nn_model: StandardizedTransformer, prompt: str | list[str], remote: bool | str | None = False, **_kwargs: Any
) -> torch.Tensor:
    """`next_token_probs` with a one-layer axis: (batch, 1, vocab), as in nnterp 1.x.

    Extra keyword arguments are ignored, so it fits any ``get_probs_func`` call.

    Example:
        >>> next_token_probs_unsqueeze(model, "Hello world").shape   # (1, 1, vocab)
    """
    return next_token_probs(nn_model, prompt, remote=remote).unsqueeze(1)


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
    remote: bool | str | None = False,
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
        remote: run on NDIF: ``remote=True`` is passed to ``get_probs_func`` (as in nnterp 1.x).
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
    options = {**(func_kwargs or {}), **remote_option(remote)}
    texts = [prompt.prompt for prompt in prompts]
    starts = range(0, len(texts), batch_size)
    chunks = [
        probs_func(model, texts[start : start + batch_size], **options)
        for start in _progress(tqdm)(starts, desc="Running prompts", total=len(starts))
    ]
    probs = torch.cat([chunk.cpu() for chunk in chunks])
    per_prompt = [prompt.get_target_probs(row) for prompt, row in zip(prompts, probs)]
    return {category: torch.stack([values[category] for values in per_prompt]) for category in categories}
