"""nnterp-interventions' plugin: registers its interventions and commands with nnterp-core."""

from __future__ import annotations

from typing import Callable

from nnterp.hookspecs import hookimpl


@hookimpl
def register_interventions(register: Callable[..., None]) -> None:
    """Register the interventions of this distribution (runnable as ``nnterp run NAME``)."""
    from nnterp.interventions.lens import logit_lens
    from nnterp.interventions.patchscope import patchscope_generate, patchscope_lens
    from nnterp.interventions.render import render_generations, render_lens

    register(
        "logit_lens",
        logit_lens,
        description="next-token probabilities of every layer's last-token residual stream (ln_final + lm_head)",
        render=render_lens,
    )
    register(
        "patchscope_lens",
        patchscope_lens,
        description="next-token probabilities of the identity prompt patched with each layer's last-token latent",
        render=render_lens,
    )
    register(
        "patchscope_generate",
        patchscope_generate,
        description="greedy continuation of the identity prompt patched with each layer's last-token latent",
        render=render_generations,
    )
