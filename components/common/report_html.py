"""The steps' HTML reports (KFP `HTML` outputs): one page layout and two inline-SVG charts, rendered with Jinja2.

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
{% if reference %}<line x1="{{ reference.x }}" y1="16" x2="{{ reference.x }}" y2="{{ height - 4 }}" stroke="#e15759" \
stroke-dasharray="4 3"><title>{{ reference.title }}</title></line>{% endif %}
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
        reference: (value, tooltip) of a dashed vertical line, e.g. an overall mean.
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
    return _svg(
        _BARS,
        width=label_width + width + (110 if notes else 20),
        height=20 + len(rows) * per_row + 10,
        ticks=[(scale(v), text) for v, text in ticks],
        axis=scale(0.0) if lo < 0.0 < hi else None,
        rows=laid_out,
        label_x=label_width - 6,
        note_x=label_width + width + 6,
        reference={"x": scale(reference[0]), "title": reference[1]} if reference else None,
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
            ink = "#000" if shade > 140 else "#fff"
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
