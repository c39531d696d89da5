"""The tuning's HTML report: objective per trial (with the best so far), one slice per parameter, the trials.

Rendered with `components.common.report_html.render_page` (Jinja2, autoescaped: parameter names, values,
states and errors are escaped wherever they appear); the charts are inline SVG laid out here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from components.common import report_html, report_md
from components.tune import results as R

COLOURS = {"COMPLETE": "#4e79a7", "PRUNED": "#f28e2b", "FAIL": "#e15759", "RUNNING": "#999", "WAITING": "#999"}
_W, _H, _LEFT, _TOP, _BOTTOM = 420, 220, 60, 14, 36

_PAGE = """{% extends "page.html" %}
{% block title %}Tuning{% if r is not none %}: {{ r.metric }}{% endif %}{% endblock %}
{% block style %}svg{margin:.3em 1em .3em 0} .charts{display:flex;flex-wrap:wrap} pre{white-space:pre-wrap;
max-width:40em;text-align:left;margin:0}{% endblock %}
{% block body %}
{% if r is none %}
<h1>Tuning</h1><p>Tuning was off (0 trials): training used its defaults.</p>
{% else %}
<h1>Tuning: {{ r.direction }} {{ r.metric }}</h1>
<p>Engine {{ r.engine }}, algorithm <b>{{ r.algorithm }}</b>, study <code>{{ r.study_name }}</code> in
<code>{{ r.storage }}</code>; {{ counts }}; stopped: {{ r.stop_reason }}; {{ seconds }}.
{% if r.warm_start %}Warm start from {{ r.warm_start | join(", ") }}.{% endif %}</p>
{% if best %}<p>Best: trial {{ r.best_trial }}, {{ r.metric }} = <b>{{ best }}</b> with
{% for name, value in params %}<code>{{ name }}</code> = {{ value }}{% if not loop.last %}, {% endif %}{% endfor %}.</p>
{% else %}<p>No trial completed.</p>{% endif %}
<div class="charts">
{% for chart in charts %}
<svg xmlns="http://www.w3.org/2000/svg" width="{{ chart.width }}" height="{{ chart.height }}" font-family="sans-serif"
 font-size="11">
<text x="{{ chart.width / 2 }}" y="{{ chart.height - 4 }}" text-anchor="middle">{{ chart.x_title }}</text>
<text x="12" y="{{ chart.mid_y }}" transform="rotate(-90 12 {{ chart.mid_y }})" text-anchor="middle">\
{{ chart.y_title }}</text>
<rect x="{{ chart.left }}" y="{{ chart.top }}" width="{{ chart.plot_w }}" height="{{ chart.plot_h }}" fill="none"
 stroke="#bbb"/>
{% for t in chart.x_ticks %}<text x="{{ t.at }}" y="{{ chart.top + chart.plot_h + 14 }}" text-anchor="middle">\
{{ t.text }}</text>{% endfor %}
{% for t in chart.y_ticks %}<text x="{{ chart.left - 4 }}" y="{{ t.at + 4 }}" text-anchor="end">{{ t.text }}</text>\
{% endfor %}
{% if chart.line %}<polyline points="{{ chart.line }}" fill="none" stroke="#59a14f" stroke-width="1.5"/>{% endif %}
{% for p in chart.points %}<circle cx="{{ p.x }}" cy="{{ p.y }}" r="4" fill="{{ p.colour }}">\
<title>{{ p.title }}</title></circle>{% endfor %}
</svg>
{% endfor %}
</div>
<p><span style="color:#4e79a7">● complete</span> <span style="color:#f28e2b">● pruned (its last value)</span>
<span style="color:#e15759">● failed</span> <span style="color:#59a14f">— best so far</span></p>
<table><tr><th>trial</th><th>state</th><th>{{ r.metric }}</th><th>evaluations</th><th>seconds</th>
{% for name in names %}<th>{{ name }}</th>{% endfor %}<th>key (directory, MLflow child run)</th><th>note</th></tr>
{% for row in rows %}<tr><td>{{ row.number }}</td><td>{{ row.state }}</td><td>{{ row.value }}</td>
<td>{{ row.evaluations }}</td><td>{{ row.seconds }}</td>{% for v in row.params %}<td>{{ v }}</td>{% endfor %}
<td>{{ row.child }}</td><td><pre>{{ row.note }}</pre></td></tr>
{% endfor %}</table>
{% endif %}
{% endblock %}
"""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return "" if value is None else str(value)


def _ticks(lo: float, hi: float, log: bool, count: int = 4) -> list[float]:
    if log:
        return [10 ** (math.log10(lo) + i * (math.log10(hi) - math.log10(lo)) / count) for i in range(count + 1)]
    return [lo + i * (hi - lo) / count for i in range(count + 1)]


def _chart(
    points: Sequence[tuple[Any, float, str, str]],
    x_title: str,
    y_title: str,
    log_x: bool = False,
    categories: Sequence[Any] | None = None,
    line: Sequence[tuple[float, float]] = (),
    integer_x: bool = False,
) -> dict[str, Any]:
    """A scatter chart: ``points`` are (x, y, state, tooltip); ``categories``: x is one of them (evenly placed)."""
    plot_w, plot_h = _W - _LEFT - 10, _H - _TOP - _BOTTOM
    ys = [y for _, y, _, _ in points if math.isfinite(y)] + [y for _, y in line]
    y_lo, y_hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
    if y_hi - y_lo < 1e-12:
        y_lo, y_hi = y_lo - 0.5, y_hi + 0.5

    if categories is not None:
        index = {str(c): i for i, c in enumerate(categories)}
        n = max(1, len(categories))

        def sx(x: Any) -> float:
            return _LEFT + (index.get(str(x), 0) + 0.5) / n * plot_w

        x_ticks = [{"at": round(sx(c), 1), "text": _fmt(c)} for c in categories]
    else:
        xs = [float(x) for x, _, _, _ in points] + [x for x, _ in line]
        x_lo, x_hi = (min(xs), max(xs)) if xs else (0.0, 1.0)
        log_x = log_x and x_lo > 0
        if x_hi - x_lo < 1e-12:
            x_lo, x_hi = (x_lo / 2, x_hi * 2) if log_x else (x_lo - 0.5, x_hi + 0.5)

        def sx(x: Any) -> float:
            x = float(x)
            if log_x:
                share = (math.log10(x) - math.log10(x_lo)) / (math.log10(x_hi) - math.log10(x_lo))
            else:
                share = (x - x_lo) / (x_hi - x_lo)
            return _LEFT + 8 + share * (plot_w - 16)

        ticks = _ticks(x_lo, x_hi, log_x)
        if integer_x:  # trial numbers
            ticks = sorted({round(v) for v in ticks if x_lo <= round(v) <= x_hi})
        x_ticks = [{"at": round(sx(v), 1), "text": _fmt(v)} for v in ticks]

    def sy(y: float) -> float:
        if not math.isfinite(y):  # a failed trial: on the bottom edge
            return _TOP + plot_h
        return _TOP + 6 + (1 - (y - y_lo) / (y_hi - y_lo)) * (plot_h - 12)

    return {
        "width": _W,
        "height": _H,
        "left": _LEFT,
        "top": _TOP,
        "plot_w": plot_w,
        "plot_h": plot_h,
        "mid_y": _TOP + plot_h / 2,
        "x_title": x_title,
        "y_title": y_title,
        "x_ticks": x_ticks,
        "y_ticks": [{"at": round(sy(v), 1), "text": _fmt(v)} for v in _ticks(y_lo, y_hi, False)],
        "points": [
            {"x": round(sx(x), 1), "y": round(sy(y), 1), "colour": COLOURS.get(state, "#999"), "title": title}
            for x, y, state, title in points
        ],
        "line": " ".join(f"{round(sx(x), 1)},{round(sy(y), 1)}" for x, y in line),
    }


def render(result: R.StudyResult | None, log_params: Sequence[str] = ()) -> str:
    """The report page (``result`` None: tuning was off).  ``log_params``: parameters shown on a log axis."""
    if result is None:
        return report_html.render_page(_PAGE, r=None)
    names = sorted({k for t in result.trials for k in t.params})
    shown = [t for t in result.trials if t.state in ("COMPLETE", "PRUNED", "FAIL")]

    def value(t: R.TrialRecord) -> float:
        return t.value if t.value is not None else float("nan")

    def title(t: R.TrialRecord) -> str:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in t.params.items())
        return f"trial {t.number} {t.state.lower()}: {_fmt(t.value)} ({params})"

    maximize = result.direction == "maximize"
    best_line, best = [], None
    for t in shown:
        if t.state == "COMPLETE" and t.value is not None and math.isfinite(t.value):
            best = t.value if best is None else (max(best, t.value) if maximize else min(best, t.value))
        if best is not None:
            best_line.append((float(t.number), best))
    steps = [p for i, p in enumerate(best_line) for p in ([(p[0], best_line[i - 1][1])] if i else []) + [p]]
    points = [(t.number, value(t), t.state, title(t)) for t in shown]
    charts = [_chart(points, "trial", result.metric, line=steps, integer_x=True)]
    for name in names:
        with_value = [t for t in shown if name in t.params]
        values = [t.params[name] for t in with_value]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        distinct = sorted(set(values), key=lambda v: (str(type(v)), v)) if values else []
        categorical = not numeric or len(distinct) <= 6
        log = name in log_params or (
            numeric and bool(values) and min(values) > 0 and max(values) / min(values) >= 20 and not categorical
        )
        charts.append(
            _chart(
                [(t.params[name], value(t), t.state, title(t)) for t in with_value],
                name,
                result.metric,
                log_x=log,
                categories=distinct if categorical else None,
            )
        )
    counts = result.counts()
    rows = [
        {
            "number": t.number,
            "state": t.state,
            "value": _fmt(t.value),
            "evaluations": len(t.intermediate),
            "seconds": _fmt(t.seconds),
            "params": [_fmt(t.params.get(n)) for n in names],
            "child": t.key,
            "note": t.error
            or (f"retry of trial {t.retry_of}" if t.retry_of is not None else "")
            or (f"warm start from {t.warm_start_from}" if t.warm_start_from else ""),
        }
        for t in result.trials
    ]
    return report_html.render_page(
        _PAGE,
        r=result,
        counts=", ".join(f"{v} {k}" for k, v in counts.items()),
        seconds=f"{result.seconds:.0f} s",
        best=_fmt(result.best_value) if result.best_value is not None else "",
        params=[(k, _fmt(v)) for k, v in result.best_params.items()],
        charts=charts,
        names=names,
        rows=rows,
    )


def write_summary(path: str | Path, headline: Mapping[str, float], best_params: Mapping[str, Any]) -> None:
    """The tune step's Markdown summary (`components.common.report_md`): trials by state, the best value and
    parameters (every engine's component writes it)."""
    best = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best_params.items())
    notes = [f"Best parameters: {best}." if best else "No tuning (tuning_trials 0): training keeps its options."]
    report_md.write(path, "Tune", headline, notes)
