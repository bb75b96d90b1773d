"""Progress bars use tqdm's notebook widget only where ipywidgets can render it."""

from __future__ import annotations

import importlib.util

import tqdm.std
from nnterp import progress


def test_without_ipywidgets_the_text_bar_is_used(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ipywidgets" else real(name, *a))
    bar = progress.progress_bar(range(3), disable=True)
    assert type(bar) is tqdm.std.tqdm
    assert list(bar) == [0, 1, 2]


def test_with_ipywidgets_tqdm_auto_decides(monkeypatch):
    import tqdm.auto

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    bar = progress.progress_bar(range(2), disable=True)
    assert isinstance(bar, tqdm.auto.tqdm)
