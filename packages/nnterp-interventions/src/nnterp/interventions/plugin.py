"""nnterp-interventions' plugin: registers its interventions and commands with nnterp-core."""

from __future__ import annotations

from typing import Callable

from nnterp.hookspecs import hookimpl


@hookimpl
def register_interventions(register: Callable[..., None]) -> None:
    """Register the interventions of this distribution."""
