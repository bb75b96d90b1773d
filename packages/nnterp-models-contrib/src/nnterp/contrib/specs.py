"""Contrib architecture specs, collected from the naming families in `nnterp.contrib.families`."""

from __future__ import annotations

from nnterp.contrib.families import (
    audio_and_reversible,
    encoders,
    gpt_like,
    heterogeneous,
    hyper_connections,
    layouts,
    llama_like,
    looped,
    more,
    multimodal,
    ssm,
    unblocked,
    vision_language,
)
from nnterp.spec import ArchitectureSpec

CONTRIB_SPECS: tuple[ArchitectureSpec, ...] = (
    *llama_like.SPECS,
    *multimodal.SPECS,
    *gpt_like.SPECS,
    *encoders.SPECS,
    *ssm.SPECS,
    *more.SPECS,
    *vision_language.SPECS,
    *heterogeneous.SPECS,
    *hyper_connections.SPECS,
    *audio_and_reversible.SPECS,
    *layouts.SPECS,
    *looped.SPECS,
    *unblocked.SPECS,
)

#: Model types no contrib spec standardizes, with the reason (registered through the
#: ``register_unsupported_models`` hook, recorded in the status registry).
CONTRIB_NOT_STANDARDIZED: dict[str, str] = {
    **more.NOT_STANDARDIZED,
    **audio_and_reversible.NOT_STANDARDIZED,
    **heterogeneous.NOT_STANDARDIZED,
}

#: Config overrides that build a tiny model of some of those types (see
#: ``register_unsupported_models``'s ``tiny_config``).
CONTRIB_UNSUPPORTED_TINY_CONFIGS: dict[str, dict[str, object]] = {
    "reformer": dict(audio_and_reversible.REFORMER_TINY),
}
