"""Writing figures to disk: interactive HTML, or a static image rendered by kaleido."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from nnterp.errors import InvalidInputError, NnterpError

HTML_SUFFIXES = (".html", ".htm")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".svg", ".pdf")


def save_figure(
    fig: go.Figure,
    path: str | Path,
    include_plotlyjs: bool | str = "cdn",
    *,
    scale: float | None = None,
) -> Path:
    """Write ``fig`` to ``path``, as HTML or as an image, chosen by the file extension.

    Args:
        fig: a plotly figure.
        path: ``.html``/``.htm`` for an interactive page; ``.png``, ``.jpg``, ``.jpeg``, ``.webp``,
            ``.svg`` or ``.pdf`` for a static image (kaleido, which drives a headless Chrome or
            Chromium; set ``BROWSER_PATH`` to pick the browser). Missing folders are created.
        include_plotlyjs: HTML only. ``"cdn"`` (a small file that loads plotly.js from the web) or
            ``True`` (plotly.js embedded: works offline); any value ``Figure.write_html`` accepts.
        scale: images only; pixel size = layout width/height times ``scale`` (default 1).

    Returns:
        The path written.

    Example:
        >>> save_figure(fig, "lens.html", include_plotlyjs=True)
        >>> save_figure(fig, "lens.png")
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in HTML_SUFFIXES + IMAGE_SUFFIXES:
        raise InvalidInputError(
            f"cannot tell how to save {str(path)!r}: use one of the extensions "
            f"{', '.join(HTML_SUFFIXES + IMAGE_SUFFIXES)}."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in HTML_SUFFIXES:
        fig.write_html(path, include_plotlyjs=include_plotlyjs)
        return path
    try:
        fig.write_image(path, scale=scale)
    except (RuntimeError, ValueError) as error:
        raise NnterpError(
            f"could not render {str(path)!r}: {error}\nImages need kaleido>=1 and a Chrome or Chromium "
            "browser (e.g. `apt-get install chromium`, or `plotly_get_chrome`); point BROWSER_PATH at "
            "it if it is not on PATH. Saving as .html needs neither."
        ) from error
    return path


def finish_figure(
    fig: go.Figure,
    *,
    title: str | None,
    width: int | None,
    height: int | None,
    file: str | Path | None,
    **layout: Any,
) -> go.Figure:
    """Apply the layout shared by every nnterp figure, and save it to ``file`` when given."""
    margin = {"l": 70, "r": 30, "t": 100 if title else 60, "b": 60, **layout.pop("margin", {})}
    fig.update_layout(
        title=title, width=width, height=height, template="plotly_white", margin=margin, **layout
    )
    if file is not None:
        save_figure(fig, file)
    return fig
