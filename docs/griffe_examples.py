"""Griffe extension for the API reference: read ``Example:`` docstring sections as examples.

nnterp's docstrings head their usage snippets ``Example:`` (singular). Griffe's Google-style
parser reads only ``Examples:`` as an examples section (``>>>`` lines become highlighted code) and
turns ``Example:`` into an admonition, where ``>>>`` would render as nested block quotes. This
renames the heading before the docstring is parsed; the source files are not touched.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE_HEADING = re.compile(r"^(\s*)Example:\s*$", flags=re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Rename ``Example:`` section headings to ``Examples:`` in every loaded docstring."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        docstring = obj.docstring
        if docstring is not None and "Example:" in docstring.value:
            docstring.value = _EXAMPLE_HEADING.sub(r"\1Examples:", docstring.value)
