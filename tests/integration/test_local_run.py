"""`python -m pipelines run`: the real pipeline under kfp.local, on synthetic and on the course data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.common import logs, tracking
from pipelines.__main__ import main
from pipelines.sample_data import generate_reviews, write_sample_csv

pytestmark = pytest.mark.integration


def fast(tmp_path: Path, rows: int = 240) -> list[str]:
    """Options that keep a whole run (training included) short: few rows, one epoch, a private MLflow store."""
    return ["--max-rows", str(rows), "--epochs", "1", "--mlflow-tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]


def _registry(tmp_path: Path) -> tuple[str, str]:
    """The run's private MLflow store (see `fast`) and the registered model's default name."""
    return f"sqlite:///{tmp_path}/mlflow.db", tracking.DEFAULT_REGISTERED_MODEL


def test_default_run_on_the_synthetic_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The whole pipeline, deployment included: one epoch on 240 rows in batches of 8 (27 steps; in batches of
    32 the 7 steps learn too little to pass the gate) reaches 8 of 12 test reviews, above what no skill scores
    on 12 plus the margin (0.557), so it is deployed (with a fresh registry there is no champion to beat) and
    the local model server's answers are checked against evaluate's."""
    skilled = ["--batch-size", "8", "--learning-rate", "1e-4"]
    assert main(["run", "--output", str(tmp_path / "run"), *skilled, *fast(tmp_path)]) == 0
    summary_path = tmp_path / "run" / "summary.json"
    printed = capsys.readouterr().out
    # A line per step start and end, the progress lines, the deployment and the summary's path; the rest: logs/.
    # (Progress lines come by time, more of them on a slower machine: not counted.)
    assert str(summary_path) in printed and "Deployment: deployed version 1" in printed
    assert len([line for line in printed.splitlines() if not logs.LINE.match(line)]) <= 40
    assert "✓ train-classifier" in printed and "✓ deploy-model" in printed and "Executing task" not in printed
    assert "Executing task 'train-classifier'" in (tmp_path / "run" / "logs" / "run.log").read_text()
    assert (tmp_path / "run" / "logs" / "train-classifier.log").stat().st_size > 0
    summary = json.loads(summary_path.read_text())
    assert summary["status"] == "succeeded"
    data = summary["data"]
    assert data["rows_in"] == 2000 and data["rare_facet_values"] == ["Casual bottoms"]
    assert data["balanced"] is True and data["rows_out"] == 240
    bias = summary["bias"]
    assert bias["facet"] == "Class Name" and bias["positive_label"] == "positive"
    assert set(bias["metrics"]) == set(bias["facet_rows"]) and len(bias["metrics"]) == data["facet_values"]
    assert all(set(m) == {"CI", "DPL", "KL", "JS", "LP", "TVD", "KS"} for m in bias["metrics"].values())
    # The HTML reports, with an .html name in the run directory (a browser renders them), and every step's
    # Markdown summary for the dashboard.
    pages = [bias["report_html"], summary["training"]["curve_html"], summary["evaluation"]["report_html"]]
    pages.append(summary["tuning"]["report_html"])
    for page in pages:
        assert page.endswith(".html") and Path(page).parent == (tmp_path / "run" / "reports").resolve()
        assert Path(page).read_text().startswith("<!doctype html>")
    assert "<svg" in Path(summary["training"]["curve_html"]).read_text()
    markdown = sorted((tmp_path / "run" / "artifacts").glob("*/*/summary_md"))
    assert sorted(path.parent.name for path in markdown) == [
        "check-bias", "deploy-model", "evaluate-classifier", "featurize-reviews", "ingest-features",
        "prepare-reviews", "train-classifier", "tune-hyperparameters",
    ]  # fmt: skip
    assert all(path.read_text().startswith("## ") for path in markdown)
    features = summary["features"]
    assert sum(features["rows_per_split"].values()) == data["rows_out"]
    assert features["max_seq_length"] == 128 and features["tokenizer"]["fast"] is True
    store = summary["feature_store"]
    assert store["feature_view"] == "review_bert_features" and store["rows_written"] == data["rows_out"]
    assert Path(store["online_store"]["path"]).is_file()
    training, evaluation = summary["training"], summary["evaluation"]
    assert training["global_step"] > 0 and Path(training["model_dir"], "config.json").is_file()
    assert evaluation["rows"] == features["rows_per_split"]["test"]
    assert 0.0 <= evaluation["accuracy"] <= 1.0 and set(evaluation["per_facet_accuracy"]) <= set(bias["metrics"])
    assert evaluation["accuracy"] >= evaluation["decision"]["no_skill"]["accuracy_needed"]
    assert data["dropped_duplicate"] > 0  # the sample's template sentences repeat: each is passed on once
    deployment = summary["deployment"]
    assert deployment["decision"] == "deployed" and deployment["reason"] == evaluation["decision"]["reason"]
    assert (deployment["model_version"], deployment["backend"], deployment["outcome"]) == ("1", "local", "promoted")
    assert deployment["endpoint"] is None and deployment["canary"] is None  # the local server is stopped by now
    smoke = deployment["smoke"]  # the served model answered the held-out reviews as evaluate did
    assert smoke["server"] == "stopped" and smoke["served_at"].startswith("http://127.0.0.1:")
    assert smoke["passed"] and smoke["reviews"] == min(32, evaluation["rows"])
    assert smoke["matched"] + smoke["ties"] == smoke["reviews"]
    uri, name = _registry(tmp_path)
    assert tracking.get_alias(uri, name, tracking.CHAMPION).version == "1" == deployment["champion"]


@pytest.mark.slow
def test_summary_bias_matches_clarify_on_the_course_data(
    tmp_path: Path, reviews_csv: Path, clarify_unbalanced: Path
) -> None:
    """The whole run on the course data carries Clarify's numbers into summary.json (minutes; the bias step's
    own equality with Clarify on the same data is tests/unit/test_bias_check.py, in the default suite)."""
    assert main(["run", "--data", str(reviews_csv), "--output", str(tmp_path / "run"), *fast(tmp_path, 150)]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["data"]["rows_clean"] == 22626
    expected = json.loads(clarify_unbalanced.read_text())["pre_training_bias_metrics"]["facets"]["product_category"]
    for facet in expected:
        for metric in facet["metrics"]:
            got = summary["bias"]["metrics"][facet["value_or_threshold"]][metric["name"]]
            assert got == pytest.approx(metric["value"], abs=1e-12)


@pytest.mark.slow  # about 25-60 s: runs in CI's `-m slow` pass
def test_group_column_adds_cddl_and_a_failed_gate_skips_deployment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--group-column", "Department Name", "--no-balance", "--min-accuracy", "0.99", *fast(tmp_path, 150)]
    assert main(["run", "--output", str(tmp_path / "run"), *args]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["bias"]["group"] == "Department Name"
    assert all("CDDL" in m for m in summary["bias"]["metrics"].values())
    assert summary["data"]["balanced"] is False
    # The model misses the gate: the run still succeeds, deployment skipped with evaluate's reason.
    evaluation, deployment = summary["evaluation"], summary["deployment"]
    assert summary["status"] == "succeeded" and evaluation["accuracy"] < 0.99
    assert deployment["decision"] == "skipped" and deployment["endpoint"] is None
    assert deployment["reason"] == evaluation["decision"]["reason"]
    assert f"test accuracy {evaluation['accuracy']:.4f} is below --min-accuracy 0.9900" in deployment["reason"]
    printed = capsys.readouterr().out
    assert f"Deployment: skipped (version 1 of {tracking.DEFAULT_REGISTERED_MODEL} stays challenger)" in printed
    assert "deploy-model" not in printed and "✓ skip-deployment" in printed
    uri, name = _registry(tmp_path)
    assert tracking.get_alias(uri, name, tracking.CHAMPION) is None
    assert tracking.get_alias(uri, name, tracking.CHALLENGER).version == deployment["model_version"] == "1"


def test_bias_gate_fails_the_run_with_the_steps_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--output", str(tmp_path), "--max-abs-ci", "0.5", *fast(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "Bias gate failed on facet 'product_category'" in err and "--max-abs-ci" in err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "Bias gate failed" in summary["error"]


def _csv(tmp_path: Path, name: str, text: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(text)
    return str(path)


HEADER = b"Review Text,Rating,Class Name\n"
GOOD_ROWS = b"".join(b"text %d,%d,%s\n" % (i, i % 5 + 1, b"AB"[i % 2 : i % 2 + 1]) for i in range(30))


@pytest.mark.parametrize(
    ("name", "content", "extra", "message"),
    [
        ("missing.csv", None, [], "does not exist"),
        ("latin1.csv", HEADER + b"caf\xe9,5,A\n", [], "not valid UTF-8"),
        ("empty.csv", b"", [], "is empty"),
        ("header.csv", HEADER, [], "header but no rows"),
        ("nocol.csv", HEADER + GOOD_ROWS, ["--facet-column", "Category"], "Columns present: 'Review Text', 'Rating'"),
        ("stars.csv", HEADER + GOOD_ROWS + b"x,five,A\n", [], "not numbers"),
        ("range.csv", HEADER + GOOD_ROWS + b"x,9,A\n", [], "from 1 to 5"),
        (
            "labels.csv",
            b"Review Text,label,Class Name\n" + b"x,positive,A\ny,great,B\n" * 20,
            ["--label-column", "label"],
            "unknown label value(s): 'great'",
        ),
        ("dropped.csv", HEADER + b",5,A\n,1,B\n", [], "was dropped"),
        ("oneclass.csv", HEADER + b"x,5,A\ny,4,B\n" * 20, [], "single sentiment class"),
        ("onefacet.csv", HEADER + b"x,5,A\ny,1,A\n" * 20, [], "single value ('A')"),
    ],
)
def test_bad_input_exits_non_zero_with_one_error_and_no_summary(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: bytes | None,
    extra: list[str],
    message: str,
) -> None:
    data = str(tmp_path / name) if content is None else _csv(tmp_path, name, content)
    out = tmp_path / "run"
    assert main(["run", "--data", data, "--output", str(out), "--min-facet-rows", "1", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not out.exists()  # nothing written


def test_unreachable_mlflow_is_an_error_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["run", "--output", str(out), "--mlflow-tracking-uri", "http://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "127.0.0.1:1" in err[0]
    assert not out.exists()  # nothing written


def test_sample_generator_is_deterministic_and_realistic(tmp_path: Path) -> None:
    first = write_sample_csv(tmp_path / "a.csv")
    second = write_sample_csv(tmp_path / "b.csv")
    assert first.read_bytes() == second.read_bytes()
    rows = generate_reviews()
    texts = [r["Review Text"] for r in rows]
    assert sum(1 for t in texts if not t) > 20  # some reviews without text, as in the real data
    assert any("not" in str(t) for t, r in zip(texts, rows, strict=True) if r["Rating"] >= 4)  # negation
    categories = {r["Class Name"] for r in rows}
    assert len(categories) >= 10


@pytest.mark.slow
def test_tuning_hands_its_best_parameters_to_the_final_training(tmp_path: Path) -> None:
    """`--tuning-trials 2`: the tune step runs two trials and training uses its best parameters (minutes)."""
    assert main(["run", "--output", str(tmp_path / "run"), "--tuning-trials", "2", *fast(tmp_path, 150)]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    tuning, training = summary["tuning"], summary["training"]
    assert tuning["trial_counts"]["complete"] == 2 and tuning["best_params"]
    for name, value in tuning["best_params"].items():
        assert training["parameters"][name] == pytest.approx(value), name
    # MLflow: the pipeline run records the search's best parameters and the final training's, equal; the two
    # trials are its child runs.
    from mlflow import MlflowClient

    client = MlflowClient(_registry(tmp_path)[0])
    experiment = client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["tune.state"] for r in children) == ["COMPLETE", "COMPLETE"]
    for name, value in tuning["best_params"].items():
        assert float(parent.data.params[f"tune.best.{name}"]) == pytest.approx(value), name
        assert float(parent.data.params[f"train.{name}"]) == pytest.approx(value), name
