"""Helpful ImportErrors for nnterp modules that live in sibling distributions.

`import nnterp.display` without `nnterp-display` installed would otherwise say only
"No module named 'nnterp.display'". A finder placed *after* the regular ones is asked only
when nothing provides the module, and then names the distribution and extra to install.
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


class _SiblingHintFinder(MetaPathFinder):
    def find_spec(  # noqa: D102 - importlib protocol
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        top = ".".join(fullname.split(".")[:2])
        if top not in SIBLING_MODULES:
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
