"""Token positions counted within each prompt: core's one rule (`nnterp.positions`), re-exported.

A position ``p >= 0`` counts from a prompt's first real token, ``p < 0`` from its last one, so
``-1`` is always the last token and ``0`` the first, however much padding the batch adds.
"""

from __future__ import annotations

from nnterp.positions import absolute_positions, as_position_list, traced_attention_mask

__all__ = ["absolute_positions", "as_position_list", "traced_attention_mask"]
