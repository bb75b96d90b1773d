"""``nnterp.saes``: sparse autoencoders on standardized sites (`nnterp.interventions.saes`) and
their features in caching, patching and attribution (`nnterp.interventions.sae_analysis`).

Example:
    >>> from nnterp.saes import load_sae, splice_sae, cache_features
    >>> sae = load_sae("path/to/sae")            # SAELens format: cfg.json + sae_weights.safetensors
    >>> with model.trace("The capital of France is"):
    ...     features = splice_sae(model, sae).save()
    >>> cache = cache_features(model, ["The capital of France is"], sae, positions=-1)
"""

from nnterp.interventions.sae_analysis import *  # noqa: F403
from nnterp.interventions.sae_analysis import __all__ as _analysis
from nnterp.interventions.saes import *  # noqa: F403
from nnterp.interventions.saes import __all__ as _saes

__all__ = [*_saes, *_analysis]
