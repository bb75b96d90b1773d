"""Figures (plotly) and tables (pandas) for nnterp results.

Every plot function takes the output of the matching nnterp function directly (torch tensors or
numpy arrays, for one prompt), returns a plotly ``Figure``, and saves it when given ``file=``
(``.html`` or ``.png``, see `save_figure`).

- `plot_topk_tokens`: a logit lens at one position, the top-k tokens of each layer.
- `plot_logit_lens_heatmap`: a logit lens at every position, the top token of each cell.
- `plot_attention`: attention patterns, one query × key panel per head.
- `plot_run_prompts`: target-category probabilities across layers (``run_prompts``).
- `plot_patching_grid`: an activation-patching sweep over layers × positions.
- `prompts_to_df`: prompts and their target tokens as a pandas DataFrame.
- `set_notebook_renderer`: figures that show in Jupyter, VS Code and nbconvert HTML exports.

Static images need kaleido: ``pip install "nnterp-display[png]"`` (without it, saving a ``.png``
raises `MissingExtraError`).
"""

from nnterp.display._tokens import visible_token
from nnterp.display.attention import plot_attention
from nnterp.display.frames import prompts_to_df
from nnterp.display.lens import plot_logit_lens_heatmap
from nnterp.display.notebook import set_notebook_renderer
from nnterp.display.patching import plot_patching_grid
from nnterp.display.save import MissingExtraError, save_figure
from nnterp.display.targets import plot_run_prompts
from nnterp.display.topk import plot_topk_tokens

__all__ = [
    "MissingExtraError",
    "plot_attention",
    "plot_logit_lens_heatmap",
    "plot_patching_grid",
    "plot_run_prompts",
    "plot_topk_tokens",
    "prompts_to_df",
    "save_figure",
    "set_notebook_renderer",
    "visible_token",
]
