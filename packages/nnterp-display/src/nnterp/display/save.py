"""Writing figures to disk: interactive HTML, or a static image rendered by kaleido."""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.basedatatypes import BaseFigure

from nnterp.display import _checks
from nnterp.errors import InvalidInputError, NnterpError

HTML_SUFFIXES = (".html", ".htm")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".svg", ".pdf")
#: The ``include_plotlyjs`` values ``Figure.write_html`` knows (or a path ending in ``.js``).
PLOTLYJS_MODES = (True, False, "cdn", "directory", "require")
#: The oldest kaleido that plotly >= 6.1 renders with.
KALEIDO_FLOOR = "1.0"
PNG_EXTRA = 'pip install "nnterp-display[png]"'


class MissingExtraError(NnterpError, ImportError):
    """An optional dependency of nnterp is not installed; the message names the extra that brings it.

    Also an ``ImportError``, so ``except ImportError`` code keeps working.
    """


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
            ``.svg`` or ``.pdf`` for a static image (kaleido, from ``pip install
            "nnterp-display[png]"``, which drives a headless Chrome or Chromium; set
            ``BROWSER_PATH`` to pick the browser). Missing folders are created.
        include_plotlyjs: HTML only. ``"cdn"`` (a small file that loads plotly.js from the web) or
            ``True`` (plotly.js embedded: works offline); also ``False``, ``"directory"``,
            ``"require"`` or the URL of a ``.js`` file, as ``Figure.write_html`` takes.
        scale: images only; pixel size = layout width/height times ``scale`` (default 1).

    Returns:
        The path written.

    Raises:
        InvalidInputError: not a figure, an unknown extension or ``include_plotlyjs``, a bad ``scale``.
        MissingExtraError: an image without kaleido (``pip install "nnterp-display[png]"``).
        NnterpError: kaleido found no browser to render with.

    Example:
        >>> save_figure(fig, "lens.html", include_plotlyjs=True)
        >>> save_figure(fig, "lens.png")
    """
    if not isinstance(fig, BaseFigure):
        raise InvalidInputError(
            f"fig must be a plotly Figure (what nnterp.display's plot_* functions return), got {type(fig).__name__}."
        )
    if not isinstance(path, (str, Path)) or str(path) == "":
        raise InvalidInputError(f"path must be a file path (a string or pathlib.Path), got {path!r}.")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in HTML_SUFFIXES + IMAGE_SUFFIXES:
        raise InvalidInputError(
            f"cannot tell how to save {str(path)!r}: use one of the extensions "
            f"{', '.join(HTML_SUFFIXES + IMAGE_SUFFIXES)}."
        )
    if suffix in HTML_SUFFIXES:
        _check_plotlyjs(include_plotlyjs)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.write_html(path, include_plotlyjs=include_plotlyjs)
        return path
    scale = _checks.optional_positive_number(scale, "scale")
    require_kaleido()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # The size is passed on: plotly 6.1 + kaleido 1.0 would otherwise render at 700 x 500.
        fig.write_image(path, scale=scale, width=fig.layout.width, height=fig.layout.height)
    except (RuntimeError, ValueError) as error:
        raise NnterpError(
            f"could not render {str(path)!r}: {error}\nImages need kaleido>={KALEIDO_FLOOR} ({PNG_EXTRA}) "
            "and a Chrome or Chromium browser (e.g. `apt-get install chromium`, or `plotly_get_chrome`); "
            "point BROWSER_PATH at it if it is not on PATH. Saving as .html needs neither."
        ) from error
    return path


def require_kaleido() -> None:
    """Raise `MissingExtraError` unless kaleido >= 1.0, which renders static images, is installed.

    Example:
        >>> require_kaleido()  # returns None when ``nnterp-display[png]`` is installed
    """
    try:
        importlib.import_module("kaleido")
    except ImportError as error:
        raise MissingExtraError(
            "saving a figure as an image needs kaleido, which is not installed: "
            f"`{PNG_EXTRA}` (kaleido also needs a Chrome or Chromium browser). "
            "Saving as .html needs neither.",
            name="kaleido",
        ) from error
    version = importlib.metadata.version("kaleido")
    if int(version.split(".")[0]) < int(KALEIDO_FLOOR.split(".")[0]):
        raise MissingExtraError(
            f"saving a figure as an image needs kaleido>={KALEIDO_FLOOR}, but kaleido {version} is "
            f"installed: `{PNG_EXTRA} --upgrade`.",
            name="kaleido",
        )


def _check_plotlyjs(value: Any) -> None:
    known = any(value is mode or (isinstance(value, str) and value == mode) for mode in PLOTLYJS_MODES)
    if known or (isinstance(value, str) and value.endswith(".js")):
        return
    raise InvalidInputError(
        f"include_plotlyjs={value!r} is not a way to include plotly.js: use 'cdn' (load it from the "
        "web), True (embed it: the page works offline), False, 'directory', 'require', or the URL "
        "of a .js file."
    )


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
    fig.update_layout(title=title, width=width, height=height, template="plotly_white", margin=margin, **layout)
    if file is not None:
        save_figure(fig, file)
    return fig


def check_common(title: Any, width: Any, height: Any, file: Any) -> None:
    """Check the arguments every plot function takes: ``title``, ``width``, ``height``, ``file``.

    Called before any work, so a bad ``file`` fails before the figure is built.
    """
    _checks.optional_title(title)
    _checks.optional_size(width, "width")
    _checks.optional_size(height, "height")
    _checks.optional_path(file)
    if file is not None and Path(file).suffix.lower() not in HTML_SUFFIXES + IMAGE_SUFFIXES:
        raise InvalidInputError(
            f"file={str(file)!r}: cannot tell how to save it; use one of the extensions "
            f"{', '.join(HTML_SUFFIXES + IMAGE_SUFFIXES)}."
        )
