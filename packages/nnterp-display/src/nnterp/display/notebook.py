"""Showing figures in notebooks: one renderer setting that works in Jupyter, VS Code and HTML exports."""

from __future__ import annotations

from nnterp.errors import InvalidInputError

#: Renderers for a figure shown in a notebook cell. The mimetype is what JupyterLab, Notebook 7
#: and VS Code draw; the "notebook" HTML is what an nbconvert HTML export keeps.
OFFLINE_RENDERER = "plotly_mimetype+notebook"
CONNECTED_RENDERER = "plotly_mimetype+notebook_connected"
#: Hosted notebooks whose own renderer plotly picks at import; it already writes HTML that draws
#: the figure (Colab shows each output in its own frame, where a plotly.js embedded once in an
#: earlier output would be missing), so it is kept.
HOSTED_RENDERERS = ("colab", "kaggle", "azure", "databricks", "cocalc")


def set_notebook_renderer(connected: bool = False) -> str:
    """Make plotly figures shown in a notebook appear in Jupyter, VS Code *and* HTML exports.

    In a Jupyter kernel plotly's default renderer writes only its JSON mimetype, which JupyterLab
    and VS Code draw but ``jupyter nbconvert --to html`` drops: the exported page has blank
    cells. This sets ``plotly.io.renderers.default`` so that each figure output also carries
    HTML that draws it. Call it once, at the top of the notebook.

    Args:
        connected: ``False`` (default): plotly.js (about 4.5 MB) is embedded once in the
            notebook, so the exported HTML works offline. ``True``: the HTML loads plotly.js
            from its CDN (a small notebook, but viewing the export needs the web).

    Returns:
        The renderer string now in ``plotly.io.renderers.default``. In Colab, Kaggle, Azure,
        Databricks and CoCalc, plotly's own renderer for that host is kept.

    Example:
        >>> from nnterp.display import set_notebook_renderer, plot_topk_tokens
        >>> set_notebook_renderer()
        'plotly_mimetype+notebook'
        >>> plot_topk_tokens(probs[0], model.tokenizer)   # last expression of a cell: shown
    """
    if not isinstance(connected, bool):
        raise InvalidInputError(f"connected must be True or False, got {connected!r}.")
    import plotly.io as pio

    if pio.renderers.default in HOSTED_RENDERERS:
        return str(pio.renderers.default)
    renderer = CONNECTED_RENDERER if connected else OFFLINE_RENDERER
    pio.renderers.default = renderer
    return renderer
