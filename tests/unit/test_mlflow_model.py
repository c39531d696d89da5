"""What evaluate records in MLflow beyond its metrics: the classifier as an MLflow model (transformers flavour)
that ``mlflow.pyfunc.load_model("models:/<name>@champion")`` loads and that answers as the model server does,
the input data as an MLflow dataset, the run's name, and the two warnings about the gate's decision (a champion
trained on other data, fewer than 100 test reviews).  The store is a real embedded SQLite file in a temporary
directory; nothing here reaches a network (`no_network` refuses every connection that leaves this machine)."""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from components.common import schema, tracking
from components.deploy import smoke
from components.evaluate import champion as gate
from components.evaluate import core
from tests import testing

NAME = "clf"
MAX_SEQ_LENGTH = 32
#: Longer than the model's 512 positions: only a pipeline that truncates answers it.
LONG_REVIEW = "this dress is lovely and fits well " * 120


@pytest.fixture(scope="module", autouse=True)
def no_network() -> Iterator[None]:
    """Every connection to an address other than loopback fails, as on a machine without a network."""
    connect = socket.socket.connect

    def local_only(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise OSError(f"network disabled in this test: {address}")
        return connect(self, address)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", local_only)
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny classifier with the bundled MiniLM's tokenizer, fine-tuned briefly (`testing.skilled_classifier`)."""
    return testing.skilled_classifier(tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """90 synthetic reviews: their rows as prepare passes them on, their features, and prepare's report."""
    root = tmp_path_factory.mktemp("data")
    texts, labels, facets = testing.synthetic_reviews(90, seed=4)
    features = testing.features(texts, labels, MAX_SEQ_LENGTH, facets=facets)
    reviews = pd.DataFrame({schema.REVIEW_ID: features[schema.REVIEW_ID], schema.TEXT: texts})
    reviews.to_parquet(root / "reviews.parquet", index=False)
    source = root / "reviews.csv"
    reviews.to_csv(source, index=False)
    report = {
        "source": str(source),
        "rows_in": 95,
        "rows_clean": 92,
        "rows_out": 90,
        "dropped_duplicate": 2,
        "class_counts_out": {"negative": 30, "neutral": 30, "positive": 30},
        "balanced": True,
        "max_rows": 90,
        "data_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
    }
    (root / "report.json").write_text(json.dumps(report))
    return {"root": root, "features": features, "reviews": root / "reviews.parquet", "report": root / "report.json"}


def _evaluate(
    out: Path, uri: str, model: Path, data: dict[str, Any], run_id: str, **changes: Any
) -> core.EvaluationReport:
    report = json.loads(data["report"].read_text()) | changes
    return core.run(
        data["features"],
        model,
        out / "evaluation.json",
        out / "evaluation.html",
        0.0,
        uri,
        NAME,
        run_id,
        predictions_path=out / "predictions.parquet",
        max_seq_length=MAX_SEQ_LENGTH,
        data=core.InputData(report, pd.read_parquet(data["reviews"])),
    )


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory, trained: Path, data: dict[str, Any]) -> dict[str, Any]:
    """Evaluate registers the trained model (challenger), and deploy's `promote` makes it the champion."""
    out = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{out / 'mlflow.db'}"
    report = _evaluate(out, uri, trained, data, "run-1")
    assert report.decision["deploy"], report.decision["reason"]
    tracking.promote(uri, NAME, report.registered_version)
    return {"uri": uri, "out": out, "report": report}


def test_the_champion_loads_with_pyfunc_and_answers_as_the_model_server(
    champion: dict[str, Any], trained: Path, data: dict[str, Any]
) -> None:
    """The acceptance check of `mlflow models serve`: the registered champion, loaded by MLflow alone, gives the
    model server's labels for deploy's smoke reviews (and for a review longer than the model takes)."""
    import mlflow

    from serving.classifier import SentimentClassifier

    reviews = smoke.smoke_set(champion["out"] / "predictions.parquet", data["reviews"], 12)
    texts = [r.text for r in reviews] + [LONG_REVIEW]
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(champion["uri"])
    try:
        model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    finally:
        mlflow.set_tracking_uri(before)
    answers = model.predict(texts)
    served = SentimentClassifier.load(trained, MAX_SEQ_LENGTH).classify(texts)  # its ONNX int8 model (auto)
    assert list(answers["label"]) == [p.label for p in served]
    pytorch = SentimentClassifier.load(trained, MAX_SEQ_LENGTH, backend="pytorch").classify(texts)
    assert answers["score"].to_numpy() == pytest.approx([p.score for p in pytorch], abs=1e-4)  # MLflow's: PyTorch
    assert set(answers["label"]) <= {"negative", "neutral", "positive"}
    result = smoke.compare(reviews, [{"label": label} for label in answers["label"][: len(reviews)]])
    assert result.ok and result.matched == len(reviews) == 12, result.describe()
    flavours = model.metadata.flavors
    assert flavours["python_function"]["config"] == {"truncation": True, "max_length": MAX_SEQ_LENGTH}
    assert flavours["transformers"]["task"] == "text-classification"


def test_the_champion_downloads_as_the_folder_the_model_server_loads(
    champion: dict[str, Any], trained: Path, tmp_path: Path
) -> None:
    """`make serve` and evaluate's re-scoring read a registered version as train's folder (weights, config,
    tokenizer together), with the ONNX models train kept: the server runs the variant evaluate scored."""
    from components.common import inference
    from serving.champion import champion_dir
    from serving.classifier import SentimentClassifier

    path, version = champion_dir(champion["uri"], NAME, tmp_path)
    assert version.startswith(f"{NAME} version 1 (alias champion")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in path.iterdir()}
    kept = sorted(p.name for p in (trained / inference.ONNX_DIR).iterdir())
    assert kept and sorted(p.name for p in (path / inference.ONNX_DIR).iterdir()) == kept
    assert inference.choose(path) == inference.choose(trained) != "pytorch"
    served = SentimentClassifier.load(path, MAX_SEQ_LENGTH)
    assert served.labels == ("negative", "neutral", "positive")
    texts = ["Lovely fabric, fits well.", "It tore after one wash.", "It is fine, nothing special."]
    here = SentimentClassifier.load(trained, MAX_SEQ_LENGTH).classify(texts)
    assert [p.score for p in served.classify(texts)] == pytest.approx([p.score for p in here], abs=1e-6)


def test_the_input_data_is_the_runs_mlflow_dataset(champion: dict[str, Any], data: dict[str, Any]) -> None:
    """Source URI, digest (the file's SHA-256, cut to MLflow's 36 characters), rows; balance, max_rows and the
    row counts as params, tags and metrics; a link to the run in the report (summary.json's ``mlflow_run``)."""
    report = json.loads(data["report"].read_text())
    link = champion["report"].mlflow_run
    client = tracking.PipelineRun(champion["uri"]).client
    run = client.get_run(link["run_id"])
    [logged] = run.inputs.dataset_inputs
    assert logged.dataset.name == "reviews.csv" and logged.dataset.source_type == "local"
    assert json.loads(logged.dataset.source)["uri"] == report["source"]
    assert logged.dataset.digest == report["data_sha256"][:32]
    assert json.loads(logged.dataset.profile)["num_rows"] == 90
    tags = {t.key: t.value for t in logged.tags}
    assert tags["mlflow.data.context"] == "training" and tags["data_hash"] == report["data_sha256"]
    assert (tags["balance"], tags["max_rows"], tags["rows_in"], tags["rows_out"]) == ("True", "90", "95", "90")
    params = run.data.params
    assert (params["data.balance"], params["data.max_rows"], params["data.source"]) == ("True", "90", report["source"])
    assert params["eval.max_seq_length"] == str(MAX_SEQ_LENGTH)
    assert run.data.metrics["data/rows_in"] == 95 and run.data.metrics["data/class_neutral"] == 30
    assert link["url"] == f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    assert link["ui_command"] == f"mlflow ui --backend-store-uri {champion['uri']}"
    assert link["run_name"] == "pipeline-run-1"
    version = tracking.get_alias(champion["uri"], NAME)
    assert version.tags["data_hash"] == report["data_sha256"] and version.run_id == link["run_id"]


def test_the_run_is_named_after_the_run_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$KFP_RUN_NAME (a local run sets it to its run directory's name) names the pipeline's MLflow run."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv(tracking.RUN_NAME_ENV, "course-run-3")
    named = tracking.PipelineRun(uri, "exp", "kfp-id-1")
    run = named.client.get_run(named.run_id)
    assert run.info.run_name == "course-run-3"
    assert run.data.tags["mlflow.source.name"] == "bert-review-sentiment pipeline"  # the UI's Source (was "—")
    monkeypatch.delenv(tracking.RUN_NAME_ENV)
    unnamed = tracking.PipelineRun(uri, "exp", "kfp-id-2")
    assert unnamed.client.get_run(unnamed.run_id).info.run_name == "pipeline-kfp-id-2"


def test_a_champion_trained_on_other_data_is_a_warning(
    champion: dict[str, Any], trained: Path, data: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The registry is shared by every run: a candidate compared with a champion of another data set says so
    (report, summary.json's evaluation, the step's log) — and it is still decided as before."""
    other = _evaluate(tmp_path, champion["uri"], trained, data, "run-2", data_sha256="f" * 64)
    [warning] = [w for w in other.warnings if "trained on other data" in w]
    first = champion["report"].data_hash
    assert f"the champion (version 1 of {NAME}) was trained on other data" in warning
    assert f"data_hash {first[:12]} differs from this run's ffffffffffff" in warning
    assert other.champion_data_hash == first and other.data_hash == "f" * 64
    assert other.decision["champion_method"] == "recorded" and other.decision["deploy"]
    assert f"warning: {warning}" in capsys.readouterr().err
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    assert saved["warnings"] == other.warnings and saved["champion_data_hash"] == first
    assert "trained on other data" in (tmp_path / "evaluation.html").read_text()
    same = _evaluate(tmp_path, champion["uri"], trained, data, "run-3")
    assert not [w for w in same.warnings if "other data" in w] and same.champion_data_hash == first


def test_fewer_than_100_test_reviews_is_a_warning() -> None:
    """90 test reviews decide the gate with a warning; 100 without; the gate's own refusal under 10 stays."""
    assert gate.FEW_TEST_REVIEWS == 100
    [warning] = gate.warnings(90)
    assert warning.startswith("only 90 test reviews decide the deploy gate (fewer than 100): one review moves")
    assert "1.1 points" in warning
    assert gate.warnings(100) == []


def test_the_small_test_split_warning_reaches_the_report(champion: dict[str, Any]) -> None:
    report = champion["report"]
    assert report.rows == 90 and any(
        w.startswith("only 90 test reviews decide the deploy gate") for w in report.warnings
    )
    saved = json.loads((champion["out"] / "evaluation.json").read_text())
    assert saved["warnings"] == report.warnings


def test_a_local_run_ends_with_the_warnings_and_the_mlflow_run(
    champion: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """summary.json's `evaluation` (evaluate's report) gives the run's last lines a warning line each and the
    link to the MLflow run, with the command that opens a local store's UI."""
    from pipelines import summary

    report = champion["report"].to_dict()
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"evaluation": report, "deployment": {"decision": "skipped", "reason": "r"}}))
    summary.print_ending(path)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"warning: {report['warnings'][0]}" and lines[0].startswith("warning: only 90 test reviews")
    link = report["mlflow_run"]
    assert lines[1] == (
        f"MLflow run pipeline-run-1: {link['url']} (open the UI with: mlflow ui --backend-store-uri {champion['uri']})"
    )
    assert lines[2].startswith("Deployment: skipped")


def test_prepare_reports_max_rows_for_the_mlflow_params(small_reviews: pd.DataFrame) -> None:
    """prepare's report carries --max-rows (with `balanced`), which evaluate logs as ``data.max_rows``."""
    from components.prepare_data import core as prepare

    report = prepare.prepare(small_reviews, prepare.PrepareConfig(min_facet_rows=1, max_rows=30, balance=False))[2]
    assert report.to_dict()["max_rows"] == 30 and report.rows_out == 30 and report.balanced is False
    assert core.InputData(report.to_dict()).params() | {"source": ""} == {
        "source": "",
        "balance": False,
        "max_rows": 30,
        "data_sha256": "",
    }


def test_a_local_run_logs_every_pipeline_parameter_into_its_mlflow_run(champion: dict[str, Any]) -> None:
    """The steps log their own options; the run's end adds every pipeline parameter (``pipeline.<name>``)."""
    from pipelines import summary

    built = {"parameters": {"seed": 42, "max_rows": 90, "balance": True}, "evaluation": champion["report"].to_dict()}
    summary.log_parameters(built)
    run_id = champion["report"].mlflow_run["run_id"]
    params = tracking.PipelineRun(champion["uri"]).client.get_run(run_id).data.params
    assert (params["pipeline.seed"], params["pipeline.max_rows"], params["pipeline.balance"]) == ("42", "90", "True")
    summary.log_parameters({"parameters": {"seed": 1}, "evaluation": {}})  # no MLflow run: nothing to log into


def test_on_a_cluster_the_mlflow_run_is_named_after_the_kfp_run(tmp_path: Path) -> None:
    """Every step that logs to MLflow gets $KFP_RUN_NAME from its pod's run-name annotation (the field path of
    kubeflow/pipelines' FieldPathAsEnv example, backend/src/v2/driver/driver_test.go)."""
    import yaml

    from pipelines.compile import compile_pipeline

    documents = list(yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml", profile="onprem").read_text()))
    platform = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for executor in ("exec-tune-hyperparameters", "exec-train-classifier", "exec-evaluate-classifier"):
        assert {"name": "KFP_RUN_NAME", "fieldPath": tracking.KFP_RUN_NAME_FIELD} in platform[executor][
            "fieldPathAsEnv"
        ]
    assert "fieldPathAsEnv" not in platform.get("exec-prepare-reviews", {})


def test_a_champion_logged_as_an_mlflow_model_is_re_scored_on_another_split(
    champion: dict[str, Any], trained: Path, data: dict[str, Any], tmp_path: Path
) -> None:
    """On another test split evaluate downloads the champion's MLflow model, turns it back into train's folder
    and scores it there: its tokenizer is the candidate's (same fingerprint), so the two stay comparable."""
    texts, labels, facets = testing.synthetic_reviews(60, seed=9)
    other = dict(data, features=testing.features(texts, labels, MAX_SEQ_LENGTH, facets=facets))
    report = _evaluate(tmp_path, champion["uri"], trained, other, "run-4")
    decision = report.decision
    assert decision["champion_method"] == "re-evaluated", decision["reason"]
    assert decision["champion_accuracy"] == pytest.approx(report.accuracy)  # the same model, scored here


def test_the_container_runner_gives_the_mlflow_steps_the_run_name(tmp_path: Path) -> None:
    """`--runner container`: what a pod reads from its run-name annotation comes from the local run's
    $KFP_RUN_NAME (its run directory), for the steps that log to MLflow only."""
    from pipelines import container_runner
    from pipelines.pipeline import build_pipeline
    from pipelines.profiles import load_profiles

    profile = container_runner.local_profile(load_profiles()["cpu"], "http://127.0.0.1:5999")
    plan = container_runner.plan(build_pipeline(profile), profile, tmp_path, {tracking.RUN_NAME_ENV: "course-run-3"})
    for step in ("exec-tune-hyperparameters", "exec-train-classifier", "exec-evaluate-classifier"):
        assert plan.env[step] == {tracking.RUN_NAME_ENV: "course-run-3"}
    assert "exec-prepare-reviews" not in plan.env
