"""Train and evaluate as separate processes, each with a HOME of its own (as pods are), against a real
`mlflow server` on loopback: evaluate finds train's run and registers the challenger there; without a
tracking URI a step in a (simulated) KFP pod stops with advice instead of using a store private to it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from components.common import tracking
from tests import testing
from tests.stores import synthetic_feature_store

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REGISTERED_MODEL = "review-sentiment-server-test"
#: The evaluate step as the KFP executor runs it: the component's python function on artifact paths.  The
#: process starts beside train and imports what the step needs meanwhile (as the pod would: its imports do
#: not depend on train's output); it goes on when the test writes a line, once train has finished.
EVALUATE = """
import json, sys
import feast, mlflow, torch, transformers  # the step's imports, paid while train runs
from kfp import dsl
from components.common import features, tracking
from components.evaluate import core
from components.evaluate.component import evaluate_classifier

args = json.loads(sys.stdin.readline())
out = args.pop("outputs")
outputs = evaluate_classifier.python_func(
    model=dsl.Model(uri=args.pop("model")),
    data_report=dsl.Artifact(uri=args.pop("data_report")),
    reviews=dsl.Dataset(uri=args.pop("reviews")),
    metrics=dsl.Metrics(uri=out + "/metrics"),
    classification=dsl.ClassificationMetrics(uri=out + "/classification"),
    report_html=dsl.HTML(uri=out + "/report.html"),
    report_json=dsl.Artifact(uri=out + "/report.json"),
    predictions=dsl.Dataset(uri=out + "/predictions"),
    summary_md=dsl.Markdown(uri=out + "/summary.md"),
    **args,
)
print("OUTPUTS " + json.dumps(outputs._asdict()))
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """60 synthetic reviews featurized (48/6/6) into a features Parquet and a Feast store; a tiny BERT."""
    root = tmp_path_factory.mktemp("data")
    synthetic_feature_store(root, rows=60, seed=5)
    (root / "data-report.json").write_text(json.dumps({"source": "reviews.csv", "data_sha256": "sha-of-reviews"}))
    return {
        "features": root / "features.parquet",
        "reviews": root / "reviews.parquet",
        "data_report": root / "data-report.json",
        "store": root / "fs",
        "base_model": testing.tiny_model(root / "tiny", dropout=0.0),
    }


def _pod_env(home: Path, tracking_uri: str | None) -> dict[str, str]:
    """The environment of a step's pod: a HOME of its own, the KFP pod variables, the profile's URI (or none)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "KFP_", "XDG_"))}
    (home / ".local" / "share").mkdir(parents=True)
    env.update(
        HOME=str(home),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        KFP_POD_NAME=f"bert-review-sentiment-{home.name}-system-container-impl",
        KFP_POD_UID=f"uid-{home.name}",
        HF_HUB_OFFLINE="1",
        PYTHONPATH=str(ROOT),
    )
    if tracking_uri is not None:
        env[tracking.ENV_TRACKING_URI] = tracking_uri
    return env


def _train(data: dict[str, Path], out: Path, env: dict[str, str], run_id: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "components.train", "--features", str(data["features"]),
        "--base_model", str(data["base_model"]), "--output_dir", str(out), "--max_seq_length", "32",
        "--max_steps", "2", "--per_device_train_batch_size", "8", "--logging_steps", "1", "--save_steps", "0",
        "--early_stopping_patience", "0", "--pipeline_run_id", run_id, "--data_hash", "sha-of-reviews",
    ]  # fmt: skip
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


def _start_evaluate(env: dict[str, str]) -> subprocess.Popen[str]:
    command = [sys.executable, "-c", EVALUATE]
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish_evaluate(
    process: subprocess.Popen[str], data: dict[str, Path], model: Path, out: Path, run_id: str
) -> tuple[int, str, str]:
    out.mkdir(parents=True)
    arguments = {
        "feature_store": str(data["store"]),
        "feast_config": "local",
        "model": str(model),
        "data_report": str(data["data_report"]),
        "reviews": str(data["reviews"]),
        "max_seq_length": 32,
        "min_accuracy": 0.0,
        "mlflow_tracking_uri": "",  # the pipeline parameter's default: the pod's MLFLOW_TRACKING_URI decides
        "registered_model_name": REGISTERED_MODEL,
        "pipeline_run_id": run_id,
        "outputs": str(out),
    }
    stdout, stderr = process.communicate(json.dumps(arguments) + "\n", timeout=300)
    return process.returncode, stdout, stderr


def _private_store(home: Path) -> Path:
    return home / ".local" / "share" / "bert-kfp"


@pytest.mark.slow  # about 25-60 s: runs in CI's `-m slow` pass
def test_evaluate_sees_trains_run_on_the_tracking_server(
    mlflow_server_starting, data: dict[str, Path], mlflow_server, tmp_path: Path
) -> None:
    """Both steps run as in their pods (KFP pod variables, MLFLOW_TRACKING_URI as `use_mlflow` sets it).

    The server boots while `data` is built (fixture order).
    """
    run_id = "pipeline-run-42"
    train_home, eval_home = tmp_path / "train-pod", tmp_path / "evaluate-pod"
    evaluate = _start_evaluate(_pod_env(eval_home, mlflow_server.uri))
    try:
        trained = _train(data, tmp_path / "train", _pod_env(train_home, mlflow_server.uri), run_id)
        assert trained.returncode == 0, trained.stderr[-3000:]
        model = tmp_path / "train" / "model"
        code, stdout, stderr = _finish_evaluate(evaluate, data, model, tmp_path / "eval", run_id)
        assert code == 0, stderr[-3000:]
    finally:
        if evaluate.poll() is None:
            evaluate.kill()
            evaluate.wait()
    train_run = json.loads((tmp_path / "train" / "training_report.json").read_text())["mlflow"]["run_id"]
    outputs = json.loads(stdout.rsplit("OUTPUTS ", 1)[1])
    # 6 test reviews are too few for the gate to judge: registered as challenger, not deployed.
    assert outputs["deploy"] is False and outputs["model_version"] == "1"
    assert "only 6 test reviews: the gate needs at least 10" in outputs["reason"]

    # Everything is on the server; neither pod wrote a store of its own.
    assert not _private_store(train_home).exists() and not _private_store(eval_home).exists()
    client = MlflowClient(mlflow_server.uri, mlflow_server.uri)
    experiment = client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT)
    found = client.search_runs([experiment.experiment_id], f"tags.pipeline_run_id = '{run_id}'")
    assert [r.info.run_id for r in found] == [train_run]  # evaluate logged into train's run, found by the id
    logged = client.get_run(train_run).data
    assert "train/loss" in logged.metrics and "eval/accuracy" in logged.metrics
    assert logged.tags["data_hash"] == "sha-of-reviews" and logged.tags["eval.registered_version"] == "1"
    challenger = tracking.get_alias(mlflow_server.uri, REGISTERED_MODEL, tracking.CHALLENGER)
    assert challenger is not None and challenger.version == "1" and challenger.run_id == train_run
    assert challenger.source.startswith("mlflow-artifacts:/")  # evaluate's MLflow model, proxied by the server
    assert any(mlflow_server.artifacts.rglob("MLmodel"))  # the model's files landed in the server's store
    assert challenger.tags["data_hash"] == "sha-of-reviews"
    assert tracking.get_alias(mlflow_server.uri, REGISTERED_MODEL, tracking.CHAMPION) is None  # deploy moves it


def test_train_in_a_kfp_pod_without_uri_stops_with_advice(data: dict[str, Path], tmp_path: Path) -> None:
    home = tmp_path / "train-pod"
    done = _train(data, tmp_path / "train", _pod_env(home, tracking_uri=None), "pipeline-run-43")
    assert done.returncode == 2, done.stderr[-3000:]  # the CLI's bad-input exit code, one error line
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert "No MLflow tracking URI in Kubeflow Pipelines pod bert-review-sentiment-train-pod" in line
    for advice in ("MLFLOW_TRACKING_URI", "--mlflow-tracking-uri", "profile's `mlflow` key"):
        assert advice in line
    assert not _private_store(home).exists()
    assert not (tmp_path / "train" / "model").exists()  # stopped before training


def test_evaluate_in_a_kfp_pod_without_uri_stops_with_advice(
    data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In this process (its imports are paid already): the executor turns the exception into a failed step."""
    from kfp import dsl

    from components.evaluate.component import evaluate_classifier

    home = tmp_path / "evaluate-pod"
    for name, value in _pod_env(home, tracking_uri=None).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(tracking.ENV_TRACKING_URI, raising=False)
    with pytest.raises(ValueError, match="No MLflow tracking URI in Kubeflow Pipelines pod") as caught:
        evaluate_classifier.python_func(
            feature_store=str(data["store"]), feast_config="local", model=dsl.Model(uri=str(data["base_model"])),
            data_report=dsl.Artifact(uri=str(data["data_report"])), reviews=dsl.Dataset(uri=str(data["reviews"])),
            max_seq_length=32, min_accuracy=0.0, mlflow_tracking_uri="", registered_model_name=REGISTERED_MODEL,
            pipeline_run_id="pipeline-run-44", metrics=dsl.Metrics(uri=str(tmp_path / "m")),
            classification=dsl.ClassificationMetrics(uri=str(tmp_path / "c")),
            report_html=dsl.HTML(uri=str(tmp_path / "r.html")), report_json=dsl.Artifact(uri=str(tmp_path / "r.json")),
            predictions=dsl.Dataset(uri=str(tmp_path / "p")), summary_md=dsl.Markdown(uri=str(tmp_path / "s.md")),
        )  # fmt: skip
    for advice in ("MLFLOW_TRACKING_URI", "--mlflow-tracking-uri", "profile's `mlflow` key"):
        assert advice in str(caught.value)
    assert not _private_store(home).exists() and not (tmp_path / "r.json").exists()
