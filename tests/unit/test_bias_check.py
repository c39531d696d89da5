"""bias_check core: identical to SageMaker Clarify (real output and `smclarify`), streaming, gates, report."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.bias_check import core
from components.common import schema
from components.prepare_data import core as prepare_core

ALL = [*core.METRICS, "CDDL"]


def test_course_data_matches_real_clarify_output(reviews_csv: Path, clarify_unbalanced: Path) -> None:
    """All 7 metrics for all 18 facet values equal the course's Clarify job within 1e-12."""
    cleaned, _, _ = prepare_core.prepare(prepare_core.read_reviews(str(reviews_csv)), prepare_core.PrepareConfig())
    metrics = core.bias_metrics(_counts(cleaned, schema.FACET, schema.LABEL, 1))
    expected = json.loads(clarify_unbalanced.read_text())["pre_training_bias_metrics"]["facets"]["product_category"]
    assert sorted(metrics) == sorted(f["value_or_threshold"] for f in expected)
    assert len(expected) == 18
    compared = 0
    for facet in expected:
        for metric in facet["metrics"]:
            assert metrics[facet["value_or_threshold"]][metric["name"]] == pytest.approx(metric["value"], abs=1e-12)
            compared += 1
    assert compared == 18 * 7


def _counts(
    frame: pd.DataFrame, facet: str, label: str, positive_label: object = 1, group: str | None = None
) -> core.LabelCounts:
    """`core.count_labels` of ``frame`` written to Parquet (the step reads a file)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reviews.parquet"
        frame.to_parquet(path, index=False)
        return core.count_labels(str(path), facet, label, positive_label, group=group)


def _random_frame(seed: int) -> pd.DataFrame:
    """2–12 facet values, 3 labels, some facet values without the positive label, a group column."""
    rng = np.random.default_rng(seed)
    n_facets = int(rng.integers(2, 13))
    rows = int(rng.integers(100, 600))
    facets = np.array([f"value{i}" for i in range(n_facets)])
    facet = facets[rng.integers(0, n_facets, size=rows)]
    facet[:n_facets] = facets  # every value present
    label = rng.choice([-1, 0, 1], size=rows, p=rng.dirichlet([1, 1, 1]))
    without_positive = rng.choice(facets, size=int(rng.integers(0, max(1, n_facets // 2))), replace=False)
    mask = np.isin(facet, without_positive) & (label == 1)
    label[mask] = rng.choice([-1, 0], size=int(mask.sum()))
    group = np.array([f"g{i}" for i in range(4)])[rng.integers(0, int(rng.integers(1, 5)), size=rows)]
    return pd.DataFrame({"facet": facet, "sentiment": label.astype("int64"), "group": group})


def _smclarify(frame: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    from smclarify.bias import report

    result = report.bias_report(
        frame[["facet", "sentiment"]],
        report.FacetColumn("facet"),
        report.LabelColumn("sentiment", frame["sentiment"], positive_label_values=[1]),
        report.StageType.PRE_TRAINING,
        metrics=ALL,
        group_variable=frame["group"],
    )
    return {
        str(item["value_or_threshold"]): {m["name"]: (None if "error" in m else m["value"]) for m in item["metrics"]}
        for item in result
    }


@pytest.mark.parametrize("seed", range(30))
def test_equals_smclarify_on_random_data(seed: int) -> None:
    frame = _random_frame(seed)
    ours = core.bias_metrics(_counts(frame, "facet", "sentiment", 1, group="group"))
    theirs = _smclarify(frame)
    assert sorted(ours) == sorted(theirs)
    for value, metrics in theirs.items():
        for name in ALL:
            if metrics[name] is None:
                assert ours[value][name] is None, (value, name)
            else:
                assert ours[value][name] == pytest.approx(metrics[name], abs=1e-12), (value, name)


def test_random_data_covers_a_facet_value_without_positive_label() -> None:
    """The property test above really exercises Clarify's aligned-non-zero quirk."""
    seen = 0
    for seed in range(30):
        frame = _random_frame(seed)
        positives = frame[frame.sentiment == 1].facet.unique()
        seen += frame.facet.nunique() - len(positives)
    assert seen > 10


def test_facet_without_positive_label_follows_clarify() -> None:
    frame = pd.DataFrame({"f": ["a"] * 4 + ["b"] * 6, "y": [0, -1, 0, -1, 1, 1, 1, 0, -1, 1]})
    metrics = core.bias_metrics(_counts(frame, "f", "y", 1))["a"]
    q_a = 4 / 6  # positive rate of the rest
    assert metrics["DPL"] == pytest.approx(q_a)
    # only the "not positive" outcome is non-zero in both groups: [1 - q_a] vs [1]
    assert metrics["KL"] == pytest.approx((1 - q_a) * np.log(1 - q_a))
    assert metrics["KS"] == pytest.approx(q_a)
    assert metrics["TVD"] == pytest.approx(q_a / 2)


def test_streaming_counts_equal_in_memory_counts(tmp_path: Path) -> None:
    """Counted in batches of 17 rows, from Parquet and CSV: the rows per facet value and group that pandas counts."""
    frame = _random_frame(3)
    frame.to_parquet(tmp_path / "reviews.parquet")
    frame.to_csv(tmp_path / "reviews.csv", index=False)
    positive = frame["sentiment"] == 1
    expected = {
        "positive": frame[positive].groupby(["facet", "group"]).size(),
        "negative": frame[~positive].groupby(["facet", "group"]).size(),
    }
    for name in ("reviews.parquet", "reviews.csv"):
        streamed = core.count_labels(str(tmp_path / name), "facet", "sentiment", 1, group="group", batch_rows=17)
        assert streamed.facet_values == sorted(frame["facet"].unique())
        assert streamed.groups == sorted(frame["group"].unique())
        for kind, counts in expected.items():
            table = counts.unstack(fill_value=0).reindex(
                index=streamed.facet_values, columns=streamed.groups, fill_value=0
            )
            np.testing.assert_array_equal(getattr(streamed, kind), table.to_numpy(), err_msg=f"{name} {kind}")


def test_single_facet_value_is_rejected() -> None:
    frame = pd.DataFrame({"f": ["a"] * 5, "y": [1, 0, 1, -1, 1]})
    with pytest.raises(ValueError, match=r"single value \('a'\)"):
        core.bias_metrics(_counts(frame, "f", "y", 1))


def _report() -> core.BiasReport:
    frame = pd.DataFrame({"f": ["a"] * 10 + ["b"] * 90, "y": [1] * 2 + [0] * 8 + [1] * 80 + [0] * 10})
    return core.bias_report(_counts(frame, "f", "y", 1), "y", 1)


def test_gates_are_off_by_default_and_fail_with_the_values_named() -> None:
    report = _report()
    core.check_gates(report, core.BiasGates())  # 1.0 never fails
    with pytest.raises(ValueError, match=r"\|CI\| > 0\.5 \(--max-abs-ci\) for 'a' \(\+0\.8000\), 'b' \(-0\.8000\)"):
        core.check_gates(report, core.BiasGates(max_abs_ci=0.5))
    with pytest.raises(ValueError, match=r"\|DPL\| > 0\.3 \(--max-abs-dpl\)"):
        core.check_gates(report, core.BiasGates(max_abs_dpl=0.3))


def test_outputs_json_and_html(tmp_path: Path) -> None:
    report = _report()
    core.write_outputs(report, str(tmp_path / "r.json"), str(tmp_path / "r.html"))
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["metrics"]["a"]["CI"] == pytest.approx(0.8)
    page = (tmp_path / "r.html").read_text()
    assert page.startswith("<!doctype html>") and "<svg" in page and "<table>" in page
    assert page.count("<rect") == 4  # CI and DPL bars (a chart each) for two facet values
    assert report.headline() == {"max_abs_CI": pytest.approx(0.8), "max_abs_DPL": pytest.approx(80 / 90 - 0.2)}


def test_dpl_has_its_own_scale(tmp_path: Path) -> None:
    """A DPL of a few hundredths gets a ±0.05 axis of its own (on CI's ±1 axis its bar was 4 px wide)."""
    from xml.etree import ElementTree

    frame = pd.DataFrame({"f": ["a"] * 10 + ["b"] * 90, "y": [1] * 5 + [0] * 5 + [1] * 48 + [0] * 42})
    report = core.bias_report(_counts(frame, "f", "y", 1), "y", 1)
    dpl = report.metrics["a"]["DPL"]
    assert abs(dpl) == pytest.approx(48 / 90 - 0.5)  # 0.033
    page = core.render_html(report)
    ci_svg, dpl_svg = (
        ElementTree.fromstring("<svg" + part.split("</svg>")[0] + "</svg>") for part in page.split("<svg")[1:]
    )
    ns = "{http://www.w3.org/2000/svg}"
    ticks = [t.text for t in dpl_svg.findall(f"{ns}text")[:3]]
    assert ticks == ["-0.05", "0", "+0.05"] and [t.text for t in ci_svg.findall(f"{ns}text")[:3]] == ["-1", "0", "+1"]
    widths = {r.find(f"{ns}title").text: float(r.get("width")) for r in dpl_svg.findall(f"{ns}rect")}
    assert widths[f"DPL {dpl:+.4f}"] == pytest.approx(abs(dpl) / 0.05 * 130, abs=0.1)  # 87 px of the 130 per side
    assert "DPL</b> (difference in positive proportions),\n±0.05" in page


def test_html_escapes_facet_values_and_names(tmp_path: Path) -> None:
    frame = pd.DataFrame({"<f>": ["<script>x</script>"] * 10 + ["A & B"] * 10, "y": [1, 0] * 10})
    page = core.render_html(core.bias_report(_counts(frame, "<f>", "y", 1), "y", 1))
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page and "A &amp; B" in page
    assert "<title>Pre-training bias: &lt;f&gt;</title>" in page
    assert page.count("&lt;script&gt;x&lt;/script&gt;") == 3  # the two charts' labels and the table's row
