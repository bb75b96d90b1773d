"""nnterp-interventions' CLI commands (entry point ``interventions-commands``): ``nnterp demo``."""

from __future__ import annotations

from typing import Callable

from nnterp.hookspecs import hookimpl


@hookimpl
def register_commands(register: Callable[..., None]) -> None:
    """Register ``nnterp demo``: logit lens, target tracking and steering on a real model."""
    from nnterp.interventions import demo

    register(
        "demo",
        demo.run,
        help="tour of nnterp on SmolLM2-135M (or --model): logit lens, target tracking, steering, figures",
        add_arguments=demo.add_arguments,
    )
