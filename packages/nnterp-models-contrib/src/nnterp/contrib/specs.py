"""Contrib architecture specs, collected from the naming families in `nnterp.contrib.families`."""

from __future__ import annotations

from nnterp.contrib.families import (
    encoders,
    gpt_like,
    llama_like,
    more,
    multimodal,
    ssm,
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
)
