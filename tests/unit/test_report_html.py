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
    ink = {t.text: t.get("fill") for t in svg.findall(f"{SVG}text") if t.get("fill")}
    assert ink == {"3": "#000", "1": "#000", "0": "#000", "2": "#000"}  # dark counts on the light green diagonal too
    texts = [t.text for t in svg.findall(f"{SVG}text")]
    assert texts.count("<a>") == 2 and {"predicted", "true", "3", "1", "0", "2"} <= set(texts)


def test_the_reference_line_is_labelled_under_the_bars() -> None:
    """The per-facet chart's dashed line (overall accuracy) carries a visible label, not only a tooltip."""
    rows = [report_html.BarRow("v", [report_html.Bar(0.5, "#4e79a7", "t")])]
    svg = ElementTree.fromstring(str(report_html.bar_chart(rows, [], reference=(0.75, "overall accuracy 0.750"))))
    (label,) = [t for t in svg.findall(f"{SVG}text") if t.get("class") == "reference-label"]
    line = svg.findall(f"{SVG}line")[-1]
    assert label.text == "overall accuracy 0.750" and label.get("x") == line.get("x1") == "410.0"
    assert label.get("text-anchor") == "middle" and float(label.get("y")) > float(line.get("y2"))
    assert float(label.get("y")) <= float(svg.get("height"))  # inside the chart


@pytest.mark.parametrize(
    ("values", "limit"), [([0.03, -0.012], 0.05), ([0.0], 0.01), ([-0.2], 0.2), ([0.21], 0.5), ([0.9, 3.0], 1.0)]
)
def test_symmetric_limit_is_the_smallest_nice_bound(values: list[float], limit: float) -> None:
    assert report_html.symmetric_limit(values) == limit


def test_line_chart_draws_each_point_and_skips_missing_ones() -> None:
    series = [
        report_html.Series("loss", "#123", [(10, 1.1), (20, 0.8), (30, float("nan")), (40, 0.5)]),
        report_html.Series("<acc>", "#456", [(10, None), (20, 0.6)]),
    ]
    svg = ElementTree.fromstring(str(report_html.line_chart(series, "Loss", "step", "value", lo=0.0)))
    dots = [(c.get("data-x"), c.get("data-y"), c.get("fill")) for c in svg.findall(f"{SVG}circle")]
    assert dots == [("10", "1.1", "#123"), ("20", "0.8", "#123"), ("40", "0.5", "#123"), ("20", "0.6", "#456")]
    (polyline,) = svg.findall(f"{SVG}polyline")  # one point of <acc>: a dot, no line
    assert len(polyline.get("points").split()) == 3
    circles = svg.findall(f"{SVG}circle")
    x = {c.get("data-x"): float(c.get("cx")) for c in circles[:3]}
    assert x["10"] < x["20"] < x["40"] and float(circles[0].get("cy")) < float(circles[2].get("cy"))  # 1.1 above 0.5
    assert "<acc>" in [t.text for t in svg.findall(f"{SVG}text")]  # the legend, escaped in the markup
