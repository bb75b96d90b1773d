"""Activation patching, attribution patching and direct logit attribution on SmolLM2-135M.

"The capital of France is" vs "The capital of Italy is", metric logit(" Paris") - logit(" Rome").
Measured (transformers 5.24, fp32 CPU): clean 7.31, corrupted -6.02; patching the residual
stream at " France" restores the clean answer up to layer 22, patching it at the last token
does from layer 23 on; attribution patching correlates 0.99 with real patching.
"""

from __future__ import annotations

import pytest
import torch
from nnterp.interventions.attribution import attribution_patching
from nnterp.interventions.decomposition import logit_attribution
from nnterp.interventions.metrics import evaluate_metric, logit_difference
from nnterp.interventions.patching import activation_patching

from .helpers import token_id

pytestmark = pytest.mark.slow

CLEAN, CORRUPTED = "The capital of France is", "The capital of Italy is"
COUNTRY, LAST = 3, 4  # token positions of " France"/" Italy" and " is"


@pytest.fixture(scope="module")
def setup(smollm2):
    tokenizer = smollm2.tokenizer
    assert tokenizer.tokenize(CLEAN)[COUNTRY] == "ĠFrance"
    assert tokenizer.tokenize(CORRUPTED)[COUNTRY] == "ĠItaly"
    metric = logit_difference(token_id(tokenizer, " Paris"), token_id(tokenizer, " Rome"))
    clean = float(evaluate_metric(smollm2, CLEAN, metric))
    corrupted = float(evaluate_metric(smollm2, CORRUPTED, metric))
    grid = activation_patching(smollm2, CLEAN, CORRUPTED, metric, positions=[COUNTRY, LAST], batch_size=30)
    return metric, clean, corrupted, grid


def test_residual_patching_finds_where_the_country_is_read(smollm2, setup):
    _, clean, corrupted, grid = setup
    assert clean > 5 and corrupted < -5  # " Paris" for France, " Rome" for Italy
    restored = (grid - corrupted) / (clean - corrupted)  # 0: corrupted, 1: clean
    assert restored.shape == (smollm2.num_layers, 2)
    # After the last layer, only the last position reaches the logits: exact landmarks.
    assert restored[-1, 1] == pytest.approx(1.0, abs=1e-4)
    assert restored[-1, 0] == pytest.approx(0.0, abs=1e-4)
    # Early on the answer lives at the country token; later it has moved to the last token.
    moved = int((restored[:, 1] > 0.5).float().argmax())
    assert 15 <= moved <= 28, restored[:, 1]
    assert (restored[:moved, 0] > 0.9).all() and (restored[:moved, 1] < 0.1).all()
    assert (restored[moved:, 1] > 0.9).all()


def test_attribution_patching_tracks_real_patching(smollm2, setup):
    metric, _, corrupted, grid = setup
    estimate = attribution_patching(smollm2, CLEAN, CORRUPTED, metric, positions=[COUNTRY, LAST])
    effects = torch.stack([(grid - corrupted).flatten(), (estimate - corrupted).flatten()])
    assert torch.corrcoef(effects)[0, 1] > 0.9


def test_direct_logit_attribution_sums_to_the_logit_difference(smollm2, setup):
    _, clean, _, _ = setup
    tokenizer = smollm2.tokenizer
    dla = logit_attribution(smollm2, CLEAN, token_id(tokenizer, " Paris"), token_id(tokenizer, " Rome"), per_head=True)
    assert float(dla.total[0]) == pytest.approx(clean, abs=1e-3)
    assert float(dla.logits[0]) == pytest.approx(clean, abs=1e-4)
    heads = dla.head_contributions[0].sum(-1) + dla.attention_bias_contributions[0]
    torch.testing.assert_close(heads, dla.contributions[0, 1::2], atol=1e-4, rtol=1e-4)
    assert dla.head_contributions.shape == (1, smollm2.num_layers, smollm2.num_heads)
