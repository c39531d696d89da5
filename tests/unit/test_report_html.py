"""components.common.report_html: escaping, and where the charts put their bars."""

from __future__ import annotations

from xml.etree import ElementTree

import pytest

from components.common import report_html

SVG = "{http://www.w3.org/2000/svg}"


def test_page_escapes_strings_and_keeps_charts() -> None:
    chart = report_html.bar_chart([report_html.BarRow("<i>", [report_html.Bar(0.5, "#123", "a & b")])], [(0, "0")])
    page = report_html.render_page(
        '{% extends "page.html" %}{% block title %}{{ t }}{% endblock %}{% block body %}{{ chart }}{% endblock %}',
        t="</title><script>",
        chart=chart,
    )
    assert page.startswith("<!doctype html>") and "<script>" not in page
    assert "<title>&lt;/title&gt;&lt;script&gt;</title>" in page
    assert "<svg" in page and "&lt;i&gt;" in page and "<title>a &amp; b</title>" in page


@pytest.mark.parametrize(
    ("lo", "value", "x", "width"),
    [
        (0.0, 0.5, 170.0, 160.0),  # 0..1 over 320 px from x=170: half way
        (-1.0, 0.5, 330.0, 80.0),  # -1..1: the bar starts at 0, in the middle
        (-1.0, -0.5, 250.0, 80.0),  # a negative value ends at 0
        (0.0, 1.7, 170.0, 320.0),  # clipped to the axis
    ],
)
def test_bar_geometry(lo: float, value: float, x: float, width: float) -> None:
    rows = [report_html.BarRow("v", [report_html.Bar(value, "#4e79a7", "t")], note="n")]
    svg = ElementTree.fromstring(str(report_html.bar_chart(rows, [], lo=lo, hi=1.0, reference=(0.25, "mean"))))
    rect = svg.find(f"{SVG}rect")
    assert rect is not None and (float(rect.get("x")), float(rect.get("width"))) == (x, width)
    lines = svg.findall(f"{SVG}line")
    assert (lines[-1].get("x1"), lines[-1].find(f"{SVG}title").text) == (
        str(170.0 + (0.25 - lo) / (1 - lo) * 320),
        "mean",
    )
    assert len(lines) == (2 if lo < 0 else 1)  # the zero axis only when 0 is inside


def test_heatmap_shades_cells_and_labels_both_axes() -> None:
    svg = ElementTree.fromstring(str(report_html.heatmap([[3, 1], [0, 2]], ["<a>", "b"], "predicted", "true")))
    cells = svg.findall(f"{SVG}rect")
    assert [c.get("fill") for c in cells] == [
        "rgb(75,255,75)",
        "rgb(188,188,255)",
        "rgb(245,245,255)",
        "rgb(131,255,131)",
    ]
    texts = [t.text for t in svg.findall(f"{SVG}text")]
    assert texts.count("<a>") == 2 and {"predicted", "true", "3", "1", "0", "2"} <= set(texts)
