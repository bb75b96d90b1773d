"""``nnterp.saes``: sparse autoencoders on standardized sites (`nnterp.interventions.saes`).

Example:
    >>> from nnterp.saes import load_sae, splice_sae
    >>> sae = load_sae("path/to/sae")            # SAELens format: cfg.json + sae_weights.safetensors
    >>> with model.trace("The capital of France is"):
    ...     features = splice_sae(model, sae).save()
"""

from nnterp.interventions.saes import *  # noqa: F403
from nnterp.interventions.saes import __all__  # noqa: F401
