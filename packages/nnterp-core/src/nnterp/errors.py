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


class UnavailableComponentError(NnterpError, AttributeError):
    """The architecture has no such component (e.g. attention in a state-space model)."""


class PluginError(NnterpError):
    """A plugin registered something inconsistent (e.g. two specs for one class)."""
