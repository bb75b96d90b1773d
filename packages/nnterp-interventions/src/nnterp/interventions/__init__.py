"""Interventions on a StandardizedTransformer: logit lens, patchscopes, steering, patching."""
