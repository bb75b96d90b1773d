"""Helpful ImportErrors for nnterp modules that live in sibling distributions.

`import nnterp.display` without `nnterp-display` installed would otherwise say only
"No module named 'nnterp.display'". A finder placed *after* the regular ones is asked only
when nothing provides the module, and then names the distribution and extra to install.

It speaks up only for an import. A lookup (``importlib.util.find_spec("nnterp.display")``,
the usual check for an optional dependency) gets ``None``, as for any missing module.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType

SIBLING_MODULES = {
    "nnterp.interventions": ("nnterp-interventions", "interventions"),
    "nnterp.prompt_utils": ("nnterp-interventions", "interventions"),
    "nnterp.display": ("nnterp-display", "display"),
    "nnterp.contrib": ("nnterp-models-contrib", "contrib"),
}

#: The function of CPython's import machinery that loads a module (``import``,
#: ``importlib.import_module``, ``__import__``); ``importlib.util.find_spec`` does not pass by it.
_IMPORTING_FUNCTION = "_find_and_load_unlocked"


def _asked_by_an_import() -> bool:
    """Whether the running ``find_spec`` was called to import a module, not just to look it up.

    Frames: 0 this function, 1 ``_SiblingHintFinder.find_spec``, 2 importlib's ``_find_spec``,
    3 whoever asked importlib (the import machinery, or ``importlib.util.find_spec``).
    """
    frame = sys._getframe(3)
    return frame.f_code.co_name == _IMPORTING_FUNCTION


class _SiblingHintFinder(MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        top = ".".join(fullname.split(".")[:2])
        if top not in SIBLING_MODULES or not _asked_by_an_import():
            return None
        distribution, extra = SIBLING_MODULES[top]
        raise ModuleNotFoundError(
            f"{fullname!r} is provided by the {distribution!r} distribution, which is not installed. "
            f"Install it with `pip install {distribution}` or `pip install 'nnterp-core[{extra}]'`.",
            name=fullname,
        )


def install() -> None:
    """Append the hint finder to ``sys.meta_path`` once."""
    if not any(isinstance(finder, _SiblingHintFinder) for finder in sys.meta_path):
        sys.meta_path.append(_SiblingHintFinder())
