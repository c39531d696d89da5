"""The steps' HTML reports (KFP `HTML` outputs): one page layout and three inline-SVG charts (bars, a heatmap,
lines), rendered with Jinja2.

Autoescaping is on, so every string that comes from the data — facet values, class names, model paths,
the deploy reason — is escaped wherever a template puts it; charts come back as `markupsafe.Markup`, which
a page template inserts as it is.  A step's page is a template that extends ``page.html``::

    {% extends "page.html" %}
    {% block title %}…{% endblock %}
    {% block style %}extra CSS{% endblock %}
    {% block body %}… {{ chart }} …{% endblock %}

The pages are self-contained (no scripts, fonts or images from elsewhere): the KFP dashboard shows them in
a sandboxed frame.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    import jinja2
    from markupsafe import Markup

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{% block title %}{% endblock %}</title>
<style>body{font-family:sans-serif;margin:1.5em} table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right} td:first-child{text-align:left}
{% block style %}{% endblock %}</style></head><body>
{% block body %}{% endblock %}
</body></html>
"""

_BARS = """<svg xmlns="http://www.w3.org/2000/svg" width="{{ width }}" height="{{ height }}" \
font-family="sans-serif" font-size="12">
{% for x, text in ticks %}<text x="{{ x }}" y="12" text-anchor="middle">{{ text }}</text>{% endfor %}
{% if axis is not none %}<line x1="{{ axis }}" y1="16" x2="{{ axis }}" y2="{{ height - 4 }}" stroke="#444"/>{% endif %}
{% for row in rows %}
<text x="{{ label_x }}" y="{{ row.text_y }}" text-anchor="end">{{ row.label }}</text>
{% for bar in row.bars %}<rect x="{{ bar.x }}" y="{{ bar.y }}" width="{{ bar.width }}" height="{{ bar.height }}" \
fill="{{ bar.colour }}"><title>{{ bar.title }}</title></rect>{% endfor %}
{% if row.note %}<text x="{{ note_x }}" y="{{ row.text_y }}">{{ row.note }}</text>{% endif %}
{% endfor %}
{% if reference %}<line x1="{{ reference.x }}" y1="16" x2="{{ reference.x }}" y2="{{ reference.bottom }}" \
stroke="#e15759" stroke-dasharray="4 3"><title>{{ reference.title }}</title></line>
<text x="{{ reference.x }}" y="{{ height - 4 }}" text-anchor="{{ reference.anchor }}" fill="#e15759" \
class="reference-label">{{ reference.title }}</text>{% endif %}
</svg>"""

_HEATMAP = """<svg xmlns="http://www.w3.org/2000/svg" width="{{ width }}" height="{{ height }}" \
font-family="sans-serif" font-size="12">
<text x="{{ x_title_x }}" y="14" text-anchor="middle">{{ x_title }}</text>
<text x="12" y="{{ y_title_y }}" transform="rotate(-90 12 {{ y_title_y }})" text-anchor="middle">{{ y_title }}</text>
{% for label in labels %}
<text x="{{ label.x }}" y="{{ top - 6 }}" text-anchor="middle">{{ label.text }}</text>
<text x="{{ left - 6 }}" y="{{ label.y }}" text-anchor="end">{{ label.text }}</text>
{% endfor %}
{% for c in cells %}<rect x="{{ c.x }}" y="{{ c.y }}" width="{{ size }}" height="{{ size }}" fill="{{ c.fill }}"/>\
<text x="{{ c.x + cell / 2 }}" y="{{ c.y + cell / 2 + 4 }}" text-anchor="middle" fill="{{ c.ink }}">{{ c.value }}</text>
{% endfor %}
</svg>"""


@functools.cache
def _environment() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.DictLoader({"page.html": PAGE}),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_page(template: str, **context: Any) -> str:
    """``template`` (extending ``page.html``) rendered with ``context``; every string in it is escaped."""
    return _environment().from_string(template).render(**context)


def _svg(template: str, **context: Any) -> Markup:
    from markupsafe import Markup

    return Markup(_environment().from_string(template).render(**context))


@dataclass(frozen=True)
class Bar:
    """One bar: its value on the chart's axis, fill colour and tooltip."""

    value: float
    colour: str
    title: str


@dataclass(frozen=True)
class BarRow:
    """One labelled row of a bar chart: one or more bars, and a note right of the chart."""

    label: str
    bars: Sequence[Bar]
    note: str = ""


def bar_chart(
    rows: Sequence[BarRow],
    ticks: Sequence[tuple[float, str]],
    lo: float = 0.0,
    hi: float = 1.0,
    reference: tuple[float, str] | None = None,
    bar_height: int = 18,
    gap: int = 4,
    label_width: int = 170,
    width: int = 320,
) -> Markup:
    """Horizontal bars from 0 (or ``lo`` when 0 is outside [lo, hi]) to each value, clipped to [lo, hi].

    Args:
        rows: Top to bottom.
        ticks: (value, text) shown above the chart.
        lo: The axis's left end.
        hi: The axis's right end.
        reference: (value, label) of a dashed vertical line, e.g. an overall mean: the label is written under
            the bars (and is the line's tooltip).
        bar_height: Pixels per bar.
        gap: Pixels between rows.
        label_width: Pixels left of the axis for the row labels.
        width: Pixels of the axis.
    """

    def scale(value: float) -> float:
        return round(label_width + (min(max(value, lo), hi) - lo) / (hi - lo) * width, 1)

    base = min(max(0.0, lo), hi)
    bars_per_row = max((len(r.bars) for r in rows), default=1)
    per_row = bars_per_row * bar_height + gap
    laid_out = []
    for i, row in enumerate(rows):
        top = 20 + i * per_row
        bars = [
            {
                "x": min(scale(bar.value), scale(base)),
                "y": top + j * bar_height,
                "width": round(abs(scale(bar.value) - scale(base)), 1),
                "height": bar_height - 2,
                "colour": bar.colour,
                "title": bar.title,
            }
            for j, bar in enumerate(row.bars)
        ]
        laid_out.append(
            {"label": row.label, "note": row.note, "bars": bars, "text_y": top + bars_per_row * bar_height // 2 + 4}
        )
    notes = any(r.note for r in rows)
    bottom = 20 + len(rows) * per_row + 6
    marked = None
    if reference:  # the dashed line, and its label under the bars (kept inside the chart at either end)
        x = scale(reference[0])
        anchor = "start" if x < label_width + width / 4 else "end" if x > label_width + width * 3 / 4 else "middle"
        marked = {"x": x, "title": reference[1], "bottom": bottom, "anchor": anchor}
    return _svg(
        _BARS,
        width=label_width + width + (110 if notes else 20),
        height=bottom + (18 if reference else 4),
        ticks=[(scale(v), text) for v, text in ticks],
        axis=scale(0.0) if lo < 0.0 < hi else None,
        rows=laid_out,
        label_x=label_width - 6,
        note_x=label_width + width + 6,
        reference=marked,
    )


#: The axis limits `symmetric_limit` picks from.
_NICE_LIMITS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def symmetric_limit(values: Sequence[float]) -> float:
    """The smallest of 0.01, 0.02, 0.05, … 1 at or above every ``|value|``: a ±limit axis on which small values
    (a DPL of 0.03) still make visible bars; 1 when a value is larger."""
    peak = max((abs(v) for v in values), default=0.0)
    return next((limit for limit in _NICE_LIMITS if peak <= limit), 1.0)


@dataclass(frozen=True)
class Series:
    """One line of a line chart: its name (the legend), colour, and (x, y) points; None for a missing y."""

    name: str
    colour: str
    points: Sequence[tuple[float, float | None]]


_LINES = """<svg xmlns="http://www.w3.org/2000/svg" width="{{ width }}" height="{{ height }}" \
font-family="sans-serif" font-size="12">
<text x="{{ left + plot_w / 2 }}" y="16" text-anchor="middle" font-weight="bold">{{ title }}</text>
<rect x="{{ left }}" y="{{ top }}" width="{{ plot_w }}" height="{{ plot_h }}" fill="none" stroke="#bbb"/>
{% for y, text in y_ticks %}<line x1="{{ left }}" y1="{{ y }}" x2="{{ left + plot_w }}" y2="{{ y }}" stroke="#eee"/>\
<text x="{{ left - 6 }}" y="{{ y + 4 }}" text-anchor="end">{{ text }}</text>
{% endfor %}
{% for x, text in x_ticks %}<text x="{{ x }}" y="{{ top + plot_h + 16 }}" text-anchor="middle">{{ text }}</text>
{% endfor %}
<text x="{{ left + plot_w / 2 }}" y="{{ height - 4 }}" text-anchor="middle">{{ x_title }}</text>
<text x="14" y="{{ top + plot_h / 2 }}" transform="rotate(-90 14 {{ top + plot_h / 2 }})" \
text-anchor="middle">{{ y_title }}</text>
{% for s in series %}
{% if s.path|length > 1 %}<polyline points="{{ s.path|join(' ') }}" fill="none" stroke="{{ s.colour }}" \
stroke-width="2"/>{% endif %}
{% for p in s.dots %}<circle cx="{{ p.x }}" cy="{{ p.y }}" r="3.5" fill="{{ s.colour }}" class="point" \
data-x="{{ p.vx }}" data-y="{{ p.vy }}"><title>{{ s.name }} at {{ x_title }} {{ p.vx }}: {{ p.text }}</title></circle>
{% endfor %}
<rect x="{{ left + plot_w + 14 }}" y="{{ s.legend_y - 9 }}" width="12" height="12" fill="{{ s.colour }}"/>\
<text x="{{ left + plot_w + 32 }}" y="{{ s.legend_y + 1 }}">{{ s.name }}</text>
{% endfor %}
</svg>"""


def _nice_step(span: float, count: int) -> float:
    raw = span / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)


def line_chart(
    series: Sequence[Series],
    title: str,
    x_title: str,
    y_title: str,
    lo: float | None = None,
    hi: float | None = None,
    width: int = 460,
    height: int = 240,
) -> Markup:
    """Lines through each series' points (a dot per point, its value as tooltip and ``data-x``/``data-y``),
    a legend right of the plot.

    Args:
        series: The lines; points with a None (or not finite) y are left out.
        title: Above the plot.
        x_title: Under the x axis (the x values are steps, epochs…; the axis spans them).
        y_title: Beside the y axis.
        lo: The y axis's lower end; None: from the data.
        hi: The y axis's upper end; None: from the data.
        width: Pixels of the plot area.
        height: Pixels of the plot area.
    """
    left, top = 60, 26
    kept = [[(float(x), float(y)) for x, y in s.points if y is not None and math.isfinite(y)] for s in series]
    xs = [x for points in kept for x, _ in points] or [0.0]
    ys = [y for points in kept for _, y in points] or [0.0]
    x_lo, x_hi = min(xs), max(xs)
    if x_hi == x_lo:  # one evaluation: the point in the middle
        x_lo, x_hi = x_lo - 1, x_hi + 1
    y_lo = min(ys) if lo is None else lo
    y_hi = max(ys) if hi is None else hi
    if y_hi == y_lo:
        y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
    y_step = _nice_step(y_hi - y_lo, 4)
    if lo is None:
        y_lo = math.floor(y_lo / y_step) * y_step
    if hi is None:
        y_hi = math.ceil(y_hi / y_step) * y_step

    def sx(x: float) -> float:
        return round(left + (x - x_lo) / (x_hi - x_lo) * width, 1)

    def sy(y: float) -> float:
        return round(top + (y_hi - y) / (y_hi - y_lo) * height, 1)

    y_ticks = [(sy(y_lo + i * y_step), f"{y_lo + i * y_step:.4g}") for i in range(round((y_hi - y_lo) / y_step) + 1)]
    x_step = max(_nice_step(x_hi - x_lo, 6), 1.0)
    first = math.ceil(x_lo / x_step) * x_step
    x_ticks = [(sx(x), f"{x:g}") for x in (first + i * x_step for i in range(int((x_hi - first) // x_step) + 1))]
    laid_out = [
        {
            "name": s.name,
            "colour": s.colour,
            "path": [f"{sx(x)},{sy(y)}" for x, y in points],
            "dots": [{"x": sx(x), "y": sy(y), "vx": f"{x:g}", "vy": repr(y), "text": f"{y:.4f}"} for x, y in points],
            "legend_y": top + 12 + k * 20,
        }
        for k, (s, points) in enumerate(zip(series, kept, strict=True))
    ]
    legend_width = max((len(s.name) for s in series), default=0) * 7 + 40
    return _svg(
        _LINES,
        width=left + width + legend_width,
        height=top + height + 40,
        left=left,
        top=top,
        plot_w=width,
        plot_h=height,
        title=title,
        x_title=x_title,
        y_title=y_title,
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        series=laid_out,
    )


def heatmap(
    matrix: Sequence[Sequence[int]], labels: Sequence[str], x_title: str, y_title: str, cell: int = 70
) -> Markup:
    """A square matrix of counts as shaded cells, the diagonal in green and the rest in blue (a confusion
    matrix: rows ``y_title``, columns ``x_title``)."""
    n, left, top = len(labels), 90, 40
    peak = max((max(row) for row in matrix), default=0) or 1
    cells = []
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            shade = int(245 - 170 * value / peak)
            fill = f"rgb({shade},255,{shade})" if i == j else f"rgb({shade},{shade},255)"
            ink = "#000" if i == j or shade > 140 else "#fff"  # (white is unreadable on the light green)
            cells.append({"x": left + j * cell, "y": top + i * cell, "value": int(value), "fill": fill, "ink": ink})
    return _svg(
        _HEATMAP,
        width=left + n * cell + 10,
        height=top + n * cell + 40,
        left=left,
        top=top,
        cell=cell,
        size=cell - 2,
        x_title=x_title,
        y_title=y_title,
        x_title_x=left + n * cell / 2,
        y_title_y=top + n * cell / 2,
        labels=[
            {"text": t, "x": left + k * cell + cell / 2, "y": top + k * cell + cell / 2 + 4}
            for k, t in enumerate(labels)
        ],
        cells=cells,
    )
