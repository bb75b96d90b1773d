"""save_figure: HTML (CDN or self-contained) and images chosen by extension; clear errors."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest

from nnterp.display import save_figure
from nnterp.errors import InvalidInputError, NnterpError


def small_figure() -> go.Figure:
    fig = go.Figure(go.Heatmap(z=[[0.0, 0.5], [0.75, 1.0]], text=[["␣a", "b"], ["c", "&lt;d&gt;"]],
                               texttemplate="%{text}"))
    fig.update_layout(width=320, height=240)
    return fig


def test_html_from_the_cdn_and_self_contained(tmp_path):
    cdn = save_figure(small_figure(), tmp_path / "cdn.html")
    inline = save_figure(small_figure(), tmp_path / "sub" / "inline.htm", include_plotlyjs=True)
    cdn_page, inline_page = cdn.read_text(), inline.read_text()
    assert '<script charset="utf-8" src="https://cdn.plot.ly/' in cdn_page
    assert "cdn.plot.ly/plotly" not in inline_page.split("</head>")[0]
    assert len(inline_page) > 1_000_000 > len(cdn_page)  # plotly.js itself is inside
    assert "Plotly.newPlot" in inline_page and "0.75" in inline_page


def test_png_and_svg(tmp_path, check_png):
    png = save_figure(small_figure(), tmp_path / "fig.PNG")
    check_png(png, 320, 240)
    twice = save_figure(small_figure(), tmp_path / "fig2.png", scale=2)
    check_png(twice, 640, 480)
    svg = save_figure(small_figure(), tmp_path / "fig.svg")
    assert svg.read_text().startswith("<svg") and ">␣a<" in svg.read_text()


def test_unknown_extension_is_named(tmp_path):
    with pytest.raises(InvalidInputError, match=r"\.html, \.htm, \.png"):
        save_figure(small_figure(), tmp_path / "fig.txt")


def test_without_the_shared_browser(tmp_path, no_image_server, check_png):
    check_png(save_figure(small_figure(), tmp_path / "alone.png"), 320, 240)


def test_missing_browser_says_how_to_fix(tmp_path, monkeypatch, no_image_server):
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-such-chromium"))
    with pytest.raises(NnterpError, match="apt-get install chromium"):
        save_figure(small_figure(), tmp_path / "fig.png")
