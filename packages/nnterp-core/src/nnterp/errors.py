"""The exceptions nnterp raises at its API boundary.

Every error names the problem and how to fix it. All derive from `NnterpError`; the input
errors also derive from the builtin a caller would expect (`ValueError`, `IndexError`, ...),
so existing ``except ValueError`` code keeps working.
"""

from __future__ import annotations


class NnterpError(Exception):
    """Base class of every exception nnterp raises on purpose."""


class RenamingError(NnterpError):
    """The standardized tree could not be built or failed validation for a model.

    The message names the architecture, what was not found, the module names that do exist,
    and how to fix it (a ``rename=`` mapping or an architecture spec plugin).
    """


class InvalidInputError(NnterpError, ValueError):
    """An argument given to nnterp is unusable (empty prompts, wrong vector size, ...)."""


class LayerIndexError(NnterpError, IndexError):
    """A layer (or batch row / head) index is out of range."""


class TokenPositionError(InvalidInputError, IndexError):
    """A token position is outside a prompt's tokens.

    Positions count within each prompt (``0``: its first real token, ``-1``: its last), so the
    message names the prompt that is too short. Both an ``InvalidInputError`` (a ``ValueError``)
    and an ``IndexError``: code catching either keeps working.
    """


class TokenIdError(InvalidInputError, IndexError):
    """A token id is outside the model's vocabulary (``0 <= id < vocab_size``).

    Both an ``InvalidInputError`` (a ``ValueError``) and an ``IndexError``.
    """


class ModelLoadError(NnterpError, OSError):
    """A model could not be loaded: the path is missing, holds no weights, needs remote code
    that ``trust_remote_code`` does not allow, ... The message says which and how to fix it.

    Also an ``OSError``, what transformers raises for most of these.
    """


class TraceError(NnterpError, RuntimeError):
    """NNsight refused what a trace body did (a module read out of forward order, a value
    read outside a trace). The message keeps NNsight's text and adds the fix."""


class DroppedStatementsWarning(UserWarning):
    """A per-step loop of a trace (``tracer.iter[...]``, ``tracer.all()``) waited for a step the
    run never made, so the statements after the loop did not run (variables they assign keep
    their old values). The message keeps NNsight's text and says how to bound the loop.
    """


class BidirectionalModelWarning(UserWarning):
    """The loaded checkpoint attends in both directions (a masked-LM checkpoint, such as XLM's
    ``causal=False`` ones): its logits at a position are predictions for that position given
    the whole input, not for the next token, so the next-token tools (logit lens, patchscopes,
    ``next_token_probs``) read masked-LM predictions."""


class UnavailableComponentError(NnterpError, AttributeError):
    """The architecture has no such component (e.g. attention in a state-space model)."""


class PluginError(NnterpError):
    """A plugin registered something inconsistent (e.g. two specs for one class)."""


class TokenizationError(InvalidInputError, ValueError):
    """A word cannot be turned into the token ids nnterp tracks (e.g. it tokenizes to nothing).

    Raised by `nnterp.prompt_utils.get_first_tokens`, and importable from
    ``nnterp.prompt_utils`` as in nnterp 1.x. An `InvalidInputError`, hence a ``ValueError``.
    """
