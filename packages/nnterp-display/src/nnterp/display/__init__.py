"""Figures (plotly) and tables (pandas) for nnterp results."""
