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

import html
import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

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


def counts_from_frame(
    frame: pd.DataFrame, facet: str, label: str, positive_label: object = 1, group: str | None = None
) -> LabelCounts:
    """`count_labels` for a frame already in memory (tests, small data)."""
    columns = [facet, label] + ([group] if group else [])
    totals: dict[tuple[str, str, bool], int] = {}
    _count_table(
        pa.Table.from_pandas(frame[columns], preserve_index=False), facet, label, positive_label, group, totals
    )
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


def check_gates(report: BiasReport, max_abs_ci: float = 1.0, max_abs_dpl: float = 1.0) -> None:
    """Fail when a facet value's |CI| or |DPL| exceeds its limit (1.0, the default, never fails).

    Raises:
        ValueError: naming every facet value over a limit and the option that sets it.
    """
    problems = []
    for name, limit, flag in (("CI", max_abs_ci, "--max-abs-ci"), ("DPL", max_abs_dpl, "--max-abs-dpl")):
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


def render_html(report: BiasReport) -> str:
    """A self-contained page: a bar chart of CI and DPL per facet value and the full metric table."""
    values = sorted(report.metrics, key=lambda v: -report.facet_rows[v])
    names = [m for m in (*METRICS, "CDDL") if any(m in report.metrics[v] for v in values)]
    bar_h, gap, label_w, half = 16, 10, 170, 230
    height = len(values) * (2 * bar_h + gap) + 40
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + 2 * half + 20}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<line x1="{label_w + half}" y1="20" x2="{label_w + half}" y2="{height - 10}" stroke="#444"/>',
        f'<text x="{label_w}" y="14">-1</text><text x="{label_w + half - 4}" y="14">0</text>'
        f'<text x="{label_w + 2 * half - 8}" y="14">+1</text>',
    ]
    for i, value in enumerate(values):
        y = 24 + i * (2 * bar_h + gap)
        svg.append(f'<text x="{label_w - 6}" y="{y + bar_h + 4}" text-anchor="end">{html.escape(value)}</text>')
        for j, (name, colour) in enumerate((("CI", "#4e79a7"), ("DPL", "#e15759"))):
            x = report.metrics[value][name] or 0.0
            left = label_w + half + min(0.0, x) * half
            svg.append(
                f'<rect x="{left:.1f}" y="{y + j * bar_h}" width="{abs(x) * half:.1f}" '
                f'height="{bar_h - 2}" fill="{colour}"><title>{name} {x:+.4f}</title></rect>'
            )
    svg.append("</svg>")
    head = "".join(f"<th>{n}</th>" for n in names)
    rows = "".join(
        f"<tr><td>{html.escape(v)}</td><td>{report.facet_rows[v]}</td><td>{report.positive_rate[v]:.3f}</td>"
        + "".join(
            "<td>—</td>" if report.metrics[v].get(n) is None else f"<td>{report.metrics[v][n]:+.5f}</td>" for n in names
        )
        + "</tr>"
        for v in values
    )
    legend = "".join(f"<li><b>{n}</b>: {DESCRIPTIONS[n]}</li>" for n in names)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Pre-training bias: {html.escape(report.facet)}</title>
<style>body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} td:first-child{{text-align:left}}</style>
</head><body>
<h2>Pre-training bias of <code>{html.escape(report.label)}</code> across <code>{html.escape(report.facet)}</code></h2>
<p>{report.rows} rows; positive label <code>{html.escape(report.positive_label)}</code>; each facet value
compared with all other rows (SageMaker Clarify definitions). Bars: <span style="color:#4e79a7">CI</span>
and <span style="color:#e15759">DPL</span>.</p>
{"".join(svg)}
<table><tr><th>facet value</th><th>rows</th><th>positive rate</th>{head}</tr>{rows}</table>
<ul>{legend}</ul>
</body></html>
"""


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
    max_abs_ci: float = 1.0,
    max_abs_dpl: float = 1.0,
) -> BiasReport:
    """Count, compute and gate: what the component calls."""
    report = bias_report(count_labels(path, facet, label, positive_label, group), label, positive_label)
    if group:
        report.group = group
    check_gates(report, max_abs_ci, max_abs_dpl)
    return report
