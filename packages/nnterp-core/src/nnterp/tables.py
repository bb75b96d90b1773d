"""Plain-text tables with column labels, for the command line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = ""
) -> str:
    """A left-aligned text table: a header line with the column labels, a rule, then one line
    per row. Cells are ``str()``-ed; the last column is not padded.

    Args:
        headers: The column labels (one per column).
        rows: The rows; each holds as many cells as ``headers``.
        indent: Text put before every line.

    Example:
        >>> print(format_table(["site", "shape"], [["layers_output", "(batch, seq, hidden)"]]))
        site           shape
        -------------  --------------------
        layers_output  (batch, seq, hidden)
    """
    cells = [[str(cell) for cell in row] for row in rows]
    for row in cells:
        if len(row) != len(headers):
            raise ValueError(
                f"a row has {len(row)} cells for {len(headers)} column labels: {row}"
            )
    widths = [
        max([len(header)] + [len(row[i]) for row in cells])
        for i, header in enumerate(headers)
    ]

    def line(values: Sequence[str]) -> str:
        padded = [value.ljust(width) for value, width in zip(values[:-1], widths[:-1])]
        return (indent + "  ".join([*padded, values[-1]])).rstrip()

    rule = ["-" * width for width in widths]
    return "\n".join([line(list(headers)), line(rule), *(line(row) for row in cells)])


__all__ = ["format_table"]
