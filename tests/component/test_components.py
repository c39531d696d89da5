"""The components' python functions, called with temporary artifact paths (as the KFP executor does)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from kfp import dsl

from components.bias_check.component import check_bias
from components.common import schema
from components.prepare_data.component import prepare_reviews
from tests.conftest import make_reviews


def _artifact(kind: type[dsl.Artifact], tmp_path: Path, name: str) -> dsl.Artifact:
    return kind(uri=str(tmp_path / name))


@pytest.fixture
def prepared(tmp_path: Path) -> dict[str, dsl.Artifact]:
    data = tmp_path / "reviews.csv"
    make_reviews(300, seed=4).to_csv(data, index=False)
    outputs = {
        "cleaned_reviews": _artifact(dsl.Dataset, tmp_path, "cleaned"),
        "reviews": _artifact(dsl.Dataset, tmp_path, "reviews"),
        "report": _artifact(dsl.Artifact, tmp_path, "report"),
        "metrics": _artifact(dsl.Metrics, tmp_path, "metrics"),
        "summary_md": _artifact(dsl.Markdown, tmp_path, "summary"),
    }
    prepare_reviews.python_func(
        data=str(data),
        text_column="Review Text",
        rating_column="Rating",
        label_column="",
        facet_column="Class Name",
        group_column="Age",
        min_facet_rows=11,
        balance=True,
        max_rows=0,
        seed=1,
        **outputs,
    )
    return outputs


def test_prepare_reviews_writes_both_datasets_and_metrics(prepared: dict[str, dsl.Artifact]) -> None:
    cleaned = pd.read_parquet(prepared["cleaned_reviews"].path)
    balanced = pd.read_parquet(prepared["reviews"].path)
    assert len(cleaned) == 300 and schema.GROUP in cleaned
    assert balanced[schema.LABEL].value_counts().nunique() == 1
    report = json.loads(Path(prepared["report"].path).read_text())
    assert report["rows_out"] == len(balanced)
    assert len(report["data_sha256"]) == 64
    assert prepared["metrics"].metadata["rows_clean"] == 300
    summary = Path(prepared["summary_md"].path).read_text()
    assert summary.startswith("## Prepare data\n") and f"| rows\\_out | {len(balanced)} |" in summary
    assert report["data_sha256"] in summary


def test_check_bias_reads_the_group_column_and_writes_reports(
    tmp_path: Path, prepared: dict[str, dsl.Artifact]
) -> None:
    report_json = _artifact(dsl.Artifact, tmp_path, "bias.json")
    report_html = _artifact(dsl.HTML, tmp_path, "bias.html")
    metrics = _artifact(dsl.Metrics, tmp_path, "bias-metrics")
    summary_md = _artifact(dsl.Markdown, tmp_path, "bias.md")
    check_bias.python_func(
        cleaned_reviews=prepared["cleaned_reviews"],
        max_abs_ci=1.0,
        max_abs_dpl=1.0,
        report_json=report_json,
        report_html=report_html,
        metrics=metrics,
        summary_md=summary_md,
    )
    report = json.loads(Path(report_json.path).read_text())
    assert set(report["metrics"]) == {"Blouses", "Dresses", "Knits"}
    assert all("CDDL" in m for m in report["metrics"].values())
    assert "<svg" in Path(report_html.path).read_text()
    assert metrics.metadata["rows"] == 300 and "max_abs_CI" in metrics.metadata
    # The dashboard's Markdown: heading, the gate, the headline figures and CI/DPL per facet value (most rows
    # first), each figure as report_md writes it.
    lines = Path(summary_md.path).read_text().splitlines()
    assert lines[0] == "## Bias check"
    assert "across 3 product\\_category values: the gate passed" in lines[2]
    assert "| rows | 300 |" in lines
    assert f"| max\\_abs\\_CI | {metrics.metadata['max_abs_CI']:.4g} |" in lines
    table = lines[lines.index("| facet value | rows | CI | DPL |") + 2 :]
    counts = report["facet_rows"]
    assert [row.split(" | ")[0].strip("| ") for row in table if row] == sorted(counts, key=lambda v: -counts[v])
    for value in counts:
        m = report["metrics"][value]
        assert f"| {value} | {counts[value]} | {m['CI']:.4g} | {m['DPL']:.4g} |" in lines
