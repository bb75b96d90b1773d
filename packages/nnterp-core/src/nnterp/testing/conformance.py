"""Architecture conformance checks: does a StandardizedTransformer behave on this model?

Each check takes a `StandardizedTransformer` and raises ``AssertionError`` (or an nnterp
error) when it fails. `run_conformance` runs them all and returns a `ConformanceReport`;
`nnterp.testing.pytest_plugin.ConformanceSuite` runs them as pytest tests.

Example:
    >>> report = run_conformance(tiny_model("llama"), tiny_tokenizer())
    >>> report.passed, report.checks["hooks_equality"]
    (True, 'pass')
"""

from __future__ import annotations

import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from nnterp.errors import UnavailableComponentError
from nnterp.testing.site_checks import SITE_CHECKS

PROMPTS = ("The capital of France is", "Hello world", "The cat sat on the mat and the dog")

PASS, FAIL, UNAVAILABLE = "pass", "fail", "unavailable"

# The checks import nnsight when they run: this module is loaded by nnterp's pytest plugin,
# and importing nnsight there (it mounts `.save` on every class) would break other plugins.


def _encoding(model: Any, prompts: tuple[str, ...] = PROMPTS) -> dict[str, torch.Tensor]:
    encoding = model.tokenizer(list(prompts), return_tensors="pt", padding=True)
    return {"input_ids": encoding["input_ids"], "attention_mask": encoding["attention_mask"]}


def check_accessor_shapes(model: Any) -> None:
    """Every layer's output is (batch, seq, hidden) (or (batch, seq, streams, hidden) on models
    with several residual streams); logits are (batch, seq, vocab)."""
    import nnsight

    encoding = _encoding(model)
    batch, seq = encoding["input_ids"].shape
    streams = () if model.num_streams is None else (model.num_streams,)
    leaving = getattr(model, model.residual_sites[1])
    outputs: list[torch.Tensor] = []
    with torch.no_grad(), model.trace(encoding):
        for index in range(model.num_layers):
            outputs.append(nnsight.save(leaving[index]))
        logits = nnsight.save(model.logits)
    for index, hidden in enumerate(outputs):
        assert tuple(hidden.shape) == (batch, seq, *streams, model.hidden_size), f"layer {index}: {tuple(hidden.shape)}"
    assert tuple(logits.shape) == (batch, seq, model.vocab_size), f"logits: {tuple(logits.shape)}"


def _observed(model: Any) -> Any:
    """Every layer of a padded batch, read through nnterp and by hooks on a plain HF forward
    of its own (the engine load-time validation uses on its probe, `nnterp.validation.observe`).

    A model whose position embedding ignores padding (``spec.position_embedding``) gets its
    rows' own positions from nnterp, which its plain forward does not: it is compared on one
    unpadded prompt here, and `check_batching` covers its padded batches."""
    from nnterp.validation import observe

    prompts = PROMPTS[:1] if model.spec.position_embedding is not None else PROMPTS
    return observe(model, _encoding(model, prompts), list(range(model.num_layers)), separate_forward=True)


def check_hooks_equality(model: Any) -> None:
    """Each standard module's input and output equal plain forward hooks on the HF module, on
    every layer; logits equal the HF model's, exactly."""
    from nnterp.validation import identical, module_read_failures

    seen = _observed(model)
    failures = module_read_failures(model, seen)
    assert not failures, "; ".join(failures)
    assert seen.logits.dtype == seen.plain_logits.dtype, "logits dtype differs"
    assert identical(seen.logits, seen.plain_logits), "logits differ from the plain HF model's"


def check_residual_identity(model: Any) -> None:
    """On every layer, nnterp's contributions add up to the plain HF layer's update:
    ``input + mixers_output + mlps_output == output`` of a plain forward hook on the layer,
    to rounding, on a left-padded batch (post-norm blocks: unavailable, with the reason)."""
    from nnterp.validation import identity_failures

    structure = model.layer_structure
    if structure.non_additive is not None:
        raise UnavailableComponentError(structure.non_additive)
    if not any(structure.identity_checkable(layer) for layer in range(model.num_layers)):
        reasons = {structure.mixer_unavailable(0), structure.mlp_unavailable(0)} - {None}
        raise UnavailableComponentError("; ".join(sorted(str(reason) for reason in reasons)))
    failures = identity_failures(model, _observed(model))
    assert not failures, "; ".join(failures)


def check_attention_probabilities(model: Any) -> None:
    """Probabilities of the last attention layer are distributions over the keys, and zeroing
    attention to token 0 changes the logits."""
    import nnsight

    from nnterp.validation import edited_probabilities_logits, probability_failures

    if not model.attention_probabilities_enabled:
        raise UnavailableComponentError("attention probabilities are not enabled for this model")
    encoding = _encoding(model, PROMPTS[:1])
    layer = model.layer_structure.probability_layers[-1]
    with torch.no_grad(), model.trace(encoding):
        probs = nnsight.save(model.attention_probabilities[layer])
        clean = nnsight.save(model.logits)
    failures = probability_failures(model, probs, encoding["input_ids"].shape[1])
    assert not failures, "; ".join(failures)
    after = edited_probabilities_logits(model, encoding, layer)
    assert not torch.allclose(clean[:, 1:], after[:, 1:]), "editing attention did not change the logits"


def check_steering(model: Any) -> None:
    """Steering row 1 at the last layer changes its logits and leaves row 0 bit-identical.

    The last layer is steered so that no later layer can mix rows (mixture-of-experts routing
    groups a batch's tokens, so a change in one row may legitimately move another's numbers).
    """
    import nnsight

    encoding = _encoding(model, PROMPTS[:2])
    with torch.no_grad(), model.trace(encoding):
        clean = nnsight.save(model.logits)
    vector = torch.ones(model.hidden_size) * 10
    with torch.no_grad(), model.trace(encoding):
        model.steer(layers=-1, steering_vector=vector, batch_index=1)
        steered = nnsight.save(model.logits)
    assert torch.equal(steered[0], clean[0]), "steering row 1 changed row 0"
    assert not torch.allclose(steered[1], clean[1]), "steering did not change the steered row"


def check_layer_skipping(model: Any) -> None:
    """Skipping the last layer makes its output equal its input."""
    import nnsight

    encoding = _encoding(model, PROMPTS[:1])
    before, after = (getattr(model, site) for site in model.residual_sites)
    with torch.no_grad(), model.trace(encoding):
        entering = nnsight.save(before[-1])
        model.skip_layer(-1)
        leaving = nnsight.save(after[-1])
    assert torch.equal(entering, leaving), "skipped layer output differs from its input"


def check_batching(model: Any) -> None:
    """A padded batch (on the spec's padding side) gives each prompt, at its real tokens, the
    logits it gets alone."""
    import nnsight

    encoding = _encoding(model)
    with torch.no_grad(), model.trace(encoding):
        batch_logits = nnsight.save(model.logits)
    for row, prompt in enumerate(PROMPTS):
        with torch.no_grad(), model.trace(_encoding(model, (prompt,))):
            alone = nnsight.save(model.logits)
        real = encoding["attention_mask"][row].nonzero()[:, 0]
        torch.testing.assert_close(batch_logits[row, real], alone[0], atol=1e-4, rtol=1e-3)


CHECKS: dict[str, Callable[[Any], None]] = {
    "accessor_shapes": check_accessor_shapes,
    "hooks_equality": check_hooks_equality,
    "residual_identity": check_residual_identity,
    "attention_probabilities": check_attention_probabilities,
    "steering": check_steering,
    "layer_skipping": check_layer_skipping,
    "batching": check_batching,
    # The derived sites (neurons, pre-softmax scores, per-head results, the mid-block stream,
    # norm scales), each against plain hooks.
    **SITE_CHECKS,
}


@dataclass
class ConformanceReport:
    """Outcome of every check on one model: ``checks[name]`` is pass / fail / unavailable."""

    class_name: str
    checks: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    #: ``model.support()`` without the available sites: ``{site: reason or {layer: reason}}``.
    unsupported: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Renaming worked and no check failed (unavailable parts are not failures)."""
        return self.checks.get("renaming") == PASS and FAIL not in self.checks.values()

    @property
    def attention_probabilities(self) -> bool:
        return self.checks.get("attention_probabilities") == PASS

    def as_dict(self) -> dict[str, Any]:
        """The JSON form used in status files."""
        error = "; ".join(f"{name}: {message}" for name, message in self.errors.items()) or None
        return {
            "class_name": self.class_name,
            "status": "pass" if self.passed else "fail",
            "checks": dict(self.checks),
            "error": error,
            "unsupported": dict(self.unsupported),
        }


def unsupported_sites(support: dict[str, Any]) -> dict[str, Any]:
    """The sites a ``model.support()`` report marks unavailable, in JSON form: ``{site: reason}``
    or, where layers differ, ``{site: {"layer": reason}}`` (available layers left out)."""
    result: dict[str, Any] = {}
    for site, value in support.items():
        if isinstance(value, dict):
            result[site] = {str(layer): reason for layer, reason in value.items() if reason is not None}
        elif value is not None:
            result[site] = value
    return result


def load_for_conformance(hf_model: Any, tokenizer: Any, **kwargs: Any) -> tuple[Any, str | None]:
    """Wrap ``hf_model``, with attention probabilities when the architecture provides them.

    Returns ``(model, note)``: ``note`` says why attention probabilities are off, if they are.
    """
    from nnterp.standardized_transformer import StandardizedTransformer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return StandardizedTransformer(hf_model, tokenizer, enable_attention_probs=True, **kwargs), None
        except Exception as error:  # noqa: BLE001 - retried without attention probabilities
            note = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
            return StandardizedTransformer(hf_model, tokenizer, enable_attention_probs=False, **kwargs), note


def run_conformance(hf_model: Any, tokenizer: Any, **kwargs: Any) -> ConformanceReport:
    """Run every check on ``hf_model`` wrapped in a StandardizedTransformer.

    Args:
        hf_model: a loaded HF causal LM.
        tokenizer: its tokenizer.
        **kwargs: passed to `StandardizedTransformer` (``spec=``, ``rename=``).

    Returns:
        A `ConformanceReport`; ``checks["renaming"]`` is ``fail`` if the model could not be wrapped.
    """
    report = ConformanceReport(class_name=type(hf_model).__name__)
    try:
        model, note = load_for_conformance(hf_model, tokenizer, **kwargs)
    except Exception as error:  # noqa: BLE001 - recorded in the report
        report.checks["renaming"] = FAIL
        report.errors["renaming"] = _describe(error)
        return report
    report.checks["renaming"] = PASS
    report.unsupported = unsupported_sites(model.support())
    if note:
        report.errors["attention_probabilities"] = note
    for name, check in CHECKS.items():
        try:
            check(model)
        except UnavailableComponentError as error:
            report.checks[name] = UNAVAILABLE
            report.errors.setdefault(name, _describe(error))
        except Exception as error:  # noqa: BLE001 - recorded in the report
            report.checks[name] = FAIL
            report.errors[name] = _describe(error)
        else:
            report.checks[name] = PASS
    return report


def _describe(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    head = f"{type(error).__name__}: {lines[0] if lines else ''}"[:400]
    if isinstance(error, AssertionError) and not lines:
        frame = traceback.extract_tb(error.__traceback__)[-1]
        head += f" (line {frame.lineno}: {frame.line})"
    return head
