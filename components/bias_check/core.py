"""Pre-training bias metrics of SageMaker Clarify, computed from label × facet counts.

Clarify compares each facet value *d* with all other rows *a* ("one vs. rest") and computes the
distribution metrics on the binary "label is positive" outcome. Its quirks are kept on purpose so the
numbers are identical (see ``../shared/data/README.md``): the label distributions are compared only on
the outcomes that are non-zero in *both* groups (``smclarify.util.pdfs_aligned_nonzero``), so a facet
value without a single positive label still gets finite KL/JS; a metric Clarify cannot compute is
reported as ``None``.

Counting streams: `count_labels` reads the input in record batches and keeps only the counts, so the
memory needed does not grow with the number of rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.common.logs import Progress

METRICS = ("CI", "DPL", "KL", "JS", "LP", "TVD", "KS")
DESCRIPTIONS = {
    "CI": "Class Imbalance",
    "DPL": "Difference in Positive Proportions in Labels",
    "KL": "Kullback-Leibler Divergence",
    "JS": "Jensen-Shannon Divergence",
    "LP": "L-p Norm (p=2)",
    "TVD": "Total Variation Distance",
    "KS": "Kolmogorov-Smirnov Distance",
    "CDDL": "Conditional Demographic Disparity in Labels",
}
DEFAULT_BATCH_ROWS = 1 << 20


@dataclass
class LabelCounts:
    """Rows per (facet value, group, positive?) — all the bias metrics need.

    ``positive`` and ``negative`` are arrays of shape (facet values, groups); with no group column there
    is one group.
    """

    facet: str
    facet_values: list[str]
    positive: np.ndarray
    negative: np.ndarray
    groups: list[str] | None = None

    @property
    def rows(self) -> int:
        return int(self.positive.sum() + self.negative.sum())


@dataclass
class BiasReport:
    """Per-facet-value metrics, ready for JSON, KFP Metrics and the HTML report."""

    facet: str
    label: str
    positive_label: str
    rows: int
    group: str | None
    facet_rows: dict[str, int]
    positive_rate: dict[str, float]
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def headline(self) -> dict[str, float]:
        """The largest |CI| and |DPL| over the facet values (what a gate looks at)."""
        out: dict[str, float] = {}
        for name in ("CI", "DPL", "CDDL"):
            values = [abs(m[name]) for m in self.metrics.values() if m.get(name) is not None]
            if values:
                out[f"max_abs_{name}"] = max(values)
        return out


def _batches(path: str, columns: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Record batches of ``columns`` from a Parquet or CSV/TSV file, one at a time."""
    import fsspec
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    name = path.lower()
    with fsspec.open(path, "rb") as fh:
        is_parquet = fh.read(4) == b"PAR1"  # KFP artifact paths carry no suffix: look at the bytes
        fh.seek(0)
        if is_parquet:
            parquet = pq.ParquetFile(fh)
            missing = [c for c in columns if c not in parquet.schema_arrow.names]
            if missing:
                raise ValueError(f"Input {path!r} has no column(s) {missing}; it has {parquet.schema_arrow.names}.")
            yield from parquet.iter_batches(batch_size=batch_rows, columns=columns)
            return
        delimiter = "\t" if name.endswith((".tsv", ".tsv.gz")) else ","
        reader = pacsv.open_csv(
            fh,
            read_options=pacsv.ReadOptions(block_size=64 << 20),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                include_columns=columns, column_types=dict.fromkeys(columns, pa.string())
            ),
        )
        yield from reader


def columns_of(path: str) -> list[str]:
    """Column names of a Parquet file, read from its footer."""
    import fsspec
    import pyarrow.parquet as pq

    with fsspec.open(path, "rb") as fh:
        return list(pq.ParquetFile(fh).schema_arrow.names)


def _count_table(
    table: pa.Table,
    facet: str,
    label: str,
    positive_label: object,
    group: str | None,
    totals: dict[tuple[str, str, bool], int],
) -> None:
    """Add the (facet value, group, positive?) row counts of ``table`` to ``totals``."""
    table = table.drop_null()
    if table.num_rows == 0:
        return
    labels = table.column(label)
    if pa.types.is_dictionary(labels.type):
        labels = labels.cast(labels.type.value_type)
    if pa.types.is_string(labels.type) or pa.types.is_large_string(labels.type):
        is_pos = pc.equal(labels, pa.scalar(str(positive_label)))
    else:
        is_pos = pc.equal(labels, pa.scalar(positive_label).cast(labels.type))
    keyed = pa.table(
        {
            "f": pc.cast(table.column(facet), pa.string()),
            "g": pc.cast(table.column(group), pa.string()) if group else pa.nulls(table.num_rows, pa.string()),
            "p": is_pos,
        }
    )
    agg = keyed.group_by(["f", "g", "p"]).aggregate([([], "count_all")]).to_pydict()
    for f, g, p, n in zip(agg["f"], agg["g"], agg["p"], agg["count_all"], strict=True):
        key = (f, g or "", bool(p))
        totals[key] = totals.get(key, 0) + n


def _to_counts(totals: dict[tuple[str, str, bool], int], facet: str, group: str | None) -> LabelCounts:
    facet_values = sorted({k[0] for k in totals})
    groups = sorted({k[1] for k in totals})
    fi = {v: i for i, v in enumerate(facet_values)}
    gi = {v: i for i, v in enumerate(groups)}
    positive = np.zeros((len(facet_values), len(groups)), dtype=np.int64)
    negative = np.zeros_like(positive)
    for (f, g, p), n in totals.items():
        (positive if p else negative)[fi[f], gi[g]] += n
    return LabelCounts(facet, facet_values, positive, negative, groups if group else None)


def count_labels(
    path: str,
    facet: str,
    label: str,
    positive_label: object = 1,
    group: str | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> LabelCounts:
    """Stream ``path`` and count rows per facet value (and group) with and without the positive label.

    Only one batch of rows is in memory at a time. Rows with a missing facet, label or group are not
    counted (clean the data first; `prepare_data` does).
    """
    columns = [facet, label] + ([group] if group else [])
    totals: dict[tuple[str, str, bool], int] = {}
    for batch in _batches(path, columns, batch_rows):
        _count_table(pa.Table.from_batches([batch]), facet, label, positive_label, group, totals)
    return _to_counts(totals, facet, group)


def _aligned_metrics(pa_: np.ndarray, pd_: np.ndarray) -> dict[str, np.ndarray]:
    """KL, JS, LP, TVD, KS of Clarify for rows of 2-outcome distributions, on common non-zero outcomes.

    ``pa_`` and ``pd_`` have shape (n, 2): P(not positive), P(positive) for the rest and the facet value.
    """
    keep = (pa_ != 0) & (pd_ != 0)
    safe_a = np.where(keep, pa_, 1.0)
    safe_d = np.where(keep, pd_, 1.0)
    mix = 0.5 * (safe_a + safe_d)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(keep, safe_a * np.log(safe_a / safe_d), 0.0).sum(axis=1)
        js = 0.5 * (
            np.where(keep, safe_a * np.log(safe_a / mix), 0.0).sum(axis=1)
            + np.where(keep, safe_d * np.log(safe_d / mix), 0.0).sum(axis=1)
        )
    diff = np.where(keep, safe_a - safe_d, 0.0)
    out = {
        "KL": kl,
        "JS": js,
        "LP": np.sqrt((diff * diff).sum(axis=1)),
        "TVD": 0.5 * np.abs(diff).sum(axis=1),
        "KS": np.abs(diff).max(axis=1),
    }
    none = ~keep.any(axis=1)  # nothing in common: Clarify raises, we report None
    for values in out.values():
        values[none] = np.nan
    return out


def _cddl(counts: LabelCounts) -> np.ndarray:
    """Conditional demographic disparity in labels for each facet value (Clarify's `common.CDD`)."""
    pos_g = counts.positive.sum(axis=0).astype(float)  # per group
    neg_g = counts.negative.sum(axis=0).astype(float)
    n_g = pos_g + neg_g
    if pos_g.sum() == 0 or neg_g.sum() == 0:
        return np.full(len(counts.facet_values), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        accepted = np.where(pos_g > 0, counts.positive / np.where(pos_g > 0, pos_g, 1.0), 0.0)
        rejected = np.where(neg_g > 0, counts.negative / np.where(neg_g > 0, neg_g, 1.0), 0.0)
    return ((rejected - accepted) * n_g).sum(axis=1) / n_g.sum()


def bias_metrics(counts: LabelCounts) -> dict[str, dict[str, float | None]]:
    """Clarify's pre-training metrics of every facet value against the rest, from counts alone.

    Raises:
        ValueError: fewer than two facet values (there is no "rest" to compare with).
    """
    if len(counts.facet_values) < 2:
        only = counts.facet_values[0] if counts.facet_values else "(none)"
        raise ValueError(
            f"Facet column {counts.facet!r} has a single value ({only!r}); the bias check compares each value "
            "with the others. Choose another facet column."
        )
    pos_d = counts.positive.sum(axis=1)
    n_d = pos_d + counts.negative.sum(axis=1)
    total, total_pos = int(n_d.sum()), int(pos_d.sum())
    n_a, pos_a = total - n_d, total_pos - pos_d
    ci = (n_a - n_d) / total
    dpl = pos_a / n_a - pos_d / n_d
    dist_a = np.stack([(n_a - pos_a) / n_a, pos_a / n_a], axis=1)
    dist_d = np.stack([(n_d - pos_d) / n_d, pos_d / n_d], axis=1)
    columns = {"CI": ci, "DPL": dpl, **_aligned_metrics(dist_a, dist_d)}
    if counts.groups is not None:
        columns["CDDL"] = _cddl(counts)
    return {
        value: {name: (None if math.isnan(col[i]) else float(col[i])) for name, col in columns.items()}
        for i, value in enumerate(counts.facet_values)
    }


def bias_report(counts: LabelCounts, label: str, positive_label: object = 1) -> BiasReport:
    """Metrics plus the facts a reader needs to judge them (rows and positive rate per facet value)."""
    pos = counts.positive.sum(axis=1)
    n = pos + counts.negative.sum(axis=1)
    return BiasReport(
        facet=counts.facet,
        label=label,
        positive_label=str(positive_label),
        rows=counts.rows,
        group=None if counts.groups is None else "group",
        facet_rows={v: int(n[i]) for i, v in enumerate(counts.facet_values)},
        positive_rate={v: float(pos[i] / n[i]) for i, v in enumerate(counts.facet_values)},
        metrics=bias_metrics(counts),
    )


@dataclass(frozen=True)
class BiasGates:
    """The step's options: limits on |CI| and |DPL| per facet value (1.0, the most either can be, is off)."""

    max_abs_ci: float = field(
        default=1.0, metadata={"help": "Bias gate: fail when a facet value's |CI| exceeds this (1.0: off).", "min": 0}
    )
    max_abs_dpl: float = field(
        default=1.0, metadata={"help": "Bias gate: fail when a facet value's |DPL| exceeds this (1.0: off).", "min": 0}
    )


def check_gates(report: BiasReport, gates: BiasGates) -> None:
    """Fail when a facet value's |CI| or |DPL| exceeds its limit (1.0, the default, never fails).

    Raises:
        ValueError: naming every facet value over a limit and the option that sets it.
    """
    problems = []
    for name, limit, flag in (("CI", gates.max_abs_ci, "--max-abs-ci"), ("DPL", gates.max_abs_dpl, "--max-abs-dpl")):
        over = {v: m[name] for v, m in report.metrics.items() if m[name] is not None and abs(m[name]) > limit}
        if over:
            listed = ", ".join(f"{v!r} ({x:+.4f})" for v, x in sorted(over.items(), key=lambda kv: -abs(kv[1])))
            problems.append(f"|{name}| > {limit} ({flag}) for {listed}")
    if problems:
        raise ValueError(
            f"Bias gate failed on facet {report.facet!r}: "
            + "; ".join(problems)
            + ". Rebalance or collect more data for those values, or relax the limit."
        )


#: The bias report page (see `components.common.report_html`; every string is escaped).
_PAGE = """{% extends "page.html" %}
{% block title %}Pre-training bias: {{ r.facet }}{% endblock %}
{% block style %}.charts{display:flex;flex-wrap:wrap;gap:1em} figure{margin:0}
figcaption{margin-bottom:.3em}{% endblock %}
{% block body %}
<h2>Pre-training bias of <code>{{ r.label }}</code> across <code>{{ r.facet }}</code></h2>
<p>{{ r.rows }} rows; positive label <code>{{ r.positive_label }}</code>; each facet value
compared with all other rows (SageMaker Clarify definitions). CI and DPL each on their own scale.</p>
<div class="charts">
<figure><figcaption><b style="color:#4e79a7">CI</b> (class imbalance), −1…+1</figcaption>{{ ci_chart }}</figure>
<figure><figcaption><b style="color:#e15759">DPL</b> (difference in positive proportions),
±{{ dpl_limit }}</figcaption>{{ dpl_chart }}</figure>
</div>
<table><tr><th>facet value</th><th>rows</th><th>positive rate</th>{% for n in names %}<th>{{ n }}</th>{% endfor %}</tr>
{% for v in values %}
<tr><td>{{ v }}</td><td>{{ r.facet_rows[v] }}</td><td>{{ "%.3f"|format(r.positive_rate[v]) }}</td>
{%- for n in names %}{% set x = r.metrics[v].get(n) %}<td>{{ "—" if x is none else "%+.5f"|format(x) }}</td>{% endfor %}
</tr>
{% endfor %}
</table>
<ul>{% for n in names %}<li><b>{{ n }}</b>: {{ descriptions[n] }}</li>{% endfor %}</ul>
{% endblock %}
"""


def render_html(report: BiasReport) -> str:
    """A self-contained page: bar charts of CI (on -1…1) and of DPL (on its own ± scale, `symmetric_limit`:
    DPLs are often a few hundredths) per facet value, and the full metric table."""
    from components.common import report_html

    values = sorted(report.metrics, key=lambda v: -report.facet_rows[v])
    names = [m for m in (*METRICS, "CDDL") if any(m in report.metrics[v] for v in values)]
    charts, limits = {}, {}
    for name, colour in (("CI", "#4e79a7"), ("DPL", "#e15759")):
        found = {value: report.metrics[value][name] or 0.0 for value in values}
        limit = limits[name] = 1.0 if name == "CI" else report_html.symmetric_limit(list(found.values()))
        rows = [
            report_html.BarRow(value, [report_html.Bar(x, colour, f"{name} {x:+.4f}")], note=f"{x:+.4f}")
            for value, x in found.items()
        ]
        ticks = [(-limit, f"{-limit:g}"), (0.0, "0"), (limit, f"+{limit:g}")]
        charts[name] = report_html.bar_chart(rows, ticks, lo=-limit, hi=limit, bar_height=16, gap=6, width=260)
    return report_html.render_page(
        _PAGE,
        r=report,
        values=values,
        names=names,
        ci_chart=charts["CI"],
        dpl_chart=charts["DPL"],
        dpl_limit=f"{limits['DPL']:g}",
        descriptions=DESCRIPTIONS,
    )


def write_outputs(report: BiasReport, json_path: str, html_path: str) -> None:
    """Write the report as JSON and as the dashboard's HTML page."""
    for path in (json_path, html_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(json_path).write_text(json.dumps(report.to_dict(), indent=2))
    Path(html_path).write_text(render_html(report))


def run(
    path: str,
    facet: str,
    label: str,
    positive_label: object = 1,
    group: str | None = None,
    gates: BiasGates | None = None,
) -> BiasReport:
    """Count, compute and gate: what the component calls (saying where it is at least every
    `components.common.logs.PROGRESS_EVERY_S` seconds)."""
    with Progress("bias check") as progress:
        progress.update(f"counting labels per {facet} value")
        counts = count_labels(path, facet, label, positive_label, group)
        progress.update("computing the metrics")
        report = bias_report(counts, label, positive_label)
    if group:
        report.group = group
    check_gates(report, gates or BiasGates())
    return report
