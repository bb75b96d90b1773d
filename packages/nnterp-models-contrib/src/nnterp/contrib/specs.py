"""Contrib architecture specs, grouped by naming family."""

from __future__ import annotations

from nnterp.spec import ArchitectureSpec

CONTRIB_SPECS: tuple[ArchitectureSpec, ...] = ()
