"""Target-token tracking: prompts with target categories, and their probabilities."""
