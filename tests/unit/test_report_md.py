"""components.common.report_md: the steps' Markdown summaries for the KFP dashboard."""

from __future__ import annotations

from pathlib import Path

from components.common import report_md


def test_summary_has_heading_notes_figures_and_table(tmp_path: Path) -> None:
    path = tmp_path / "out" / "summary"
    report_md.write(
        path,
        "Bias check",
        {"rows": 300, "max_abs_CI": 0.123456, "ok": True, "missing": float("nan")},
        ["Gate passed."],
        (("facet value", "CI"), [("A|B *bold*", -0.5), ("<script>", 2.0)]),
    )
    assert path.read_text().splitlines() == [
        "## Bias check",
        "",
        "Gate passed.",
        "",
        "| figure | value |",
        "|---|---|",
        "| rows | 300 |",
        "| max\\_abs\\_CI | 0.1235 |",
        "| ok | yes |",
        "| missing | — |",
        "",
        "| facet value | CI |",
        "|---|---|",
        "| A\\|B \\*bold\\* | -0.5 |",  # a | in a value cannot end its cell, nor * make emphasis
        "| \\<script\\> | 2 |",
    ]


def test_large_counts_are_grouped_and_text_is_one_line() -> None:
    text = report_md.render("T", [("rows", 22626.0)], ["two\nlines"])
    assert "| rows | 22,626 |" in text and "two lines" in text
