"""nnterp-models-contrib's plugin: its architecture specs and shipped status file."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from nnterp.hookspecs import hookimpl
from nnterp.spec import ArchitectureSpec

STATUS_FILE = Path(__file__).with_name("status.json")


@hookimpl
def register_architectures(register: Callable[[ArchitectureSpec], None]) -> None:
    """Register every contrib spec."""
    from nnterp.contrib.specs import CONTRIB_SPECS

    for spec in CONTRIB_SPECS:
        register(spec)


@hookimpl
def register_unsupported_models(register: Callable[..., None]) -> None:
    """Register the model types no contrib spec can standardize, with the reason."""
    from nnterp.contrib.specs import CONTRIB_NOT_STANDARDIZED, CONTRIB_UNSUPPORTED_TINY_CONFIGS

    for model_type, reason in CONTRIB_NOT_STANDARDIZED.items():
        register(model_type, reason, tiny_config=CONTRIB_UNSUPPORTED_TINY_CONFIGS.get(model_type))


@hookimpl
def register_status_files(register: Callable[[str], None]) -> None:
    """Register the status of the current release (written by ``nnterp run_tests --all``)."""
    if STATUS_FILE.exists():
        register(str(STATUS_FILE))
