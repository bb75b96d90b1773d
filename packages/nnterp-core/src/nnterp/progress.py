"""Progress bars: tqdm's notebook widget where it can render, its text bar everywhere else.

``tqdm.auto`` picks the widget in any Jupyter kernel and, without ipywidgets installed, warns
"IProgress not found" and prints nothing useful; here the widget is used only when ipywidgets is
importable.

Example:
    >>> from nnterp.progress import progress_bar
    >>> for item in progress_bar(range(3), desc="working"):
    ...     pass
"""

from __future__ import annotations

import importlib.util
from typing import Any


def progress_bar(*args: Any, **kwargs: Any) -> Any:
    """A tqdm progress bar (same arguments as ``tqdm.tqdm``)."""
    if importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm(*args, **kwargs)
