"""deploy, local backend: the real model server (`python -m serving`) in a subprocess on a free loopback port,
smoke-tested with held-out reviews against evaluate's own predictions (evaluate's core on a tiny classifier),
and the MLflow champion alias in a real embedded SQLite registry: moved on success, untouched when the
served answers disagree, when the server never gets ready, or on bad input (a model directory that does not
load, a port in use, a version not in the registry)."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import pytest

from components.common import schema, tracking
from components.deploy import core, local, smoke
from components.deploy.config import DeployConfig
from components.evaluate import core as evaluate
from tests import testing

SEQ = 32
ROWS = 24


@dataclass(frozen=True)
class Handoff:
    """What the pipeline hands deploy: train's model, evaluate's predictions and version, prepare's reviews."""

    model_dir: Path
    predictions: Path
    reviews: Path
    uri: str
    version: str


@pytest.fixture(scope="module")
def handoff(tmp_path_factory: pytest.TempPathFactory) -> Handoff:
    """A tiny classifier evaluated by evaluate's core on 24 synthetic test reviews (registered as version 1 in
    a fresh SQLite registry, its predictions written), and those reviews' texts as prepare writes them."""
    from serving.testing import untrained_classifier

    root = tmp_path_factory.mktemp("deploy")
    base = testing.tiny_model(root / "base", dropout=0.0)
    model_dir = untrained_classifier(base, root / "model")
    texts, labels, facets = testing.synthetic_reviews(ROWS, seed=5)
    features = testing.features(texts, labels, SEQ, facets=facets)
    reviews = pd.DataFrame({schema.REVIEW_ID: features[schema.REVIEW_ID], schema.TEXT: texts})
    reviews.to_parquet(root / "reviews.parquet", index=False)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    report = evaluate.run(
        features, model_dir, root / "e.json", root / "e.html", 0.0, uri, "clf", "run-1",
        predictions_path=root / "predictions.parquet",
    )  # fmt: skip
    return Handoff(model_dir, root / "predictions.parquet", root / "reviews.parquet", uri, report.registered_version)


@pytest.fixture
def champion_at_version_one(handoff: Handoff) -> Iterator[None]:
    """Version 1 is the champion before each test (as a previous run's deploy left it)."""
    tracking.promote(handoff.uri, "clf", handoff.version)
    yield


def _second_version(handoff: Handoff) -> str:
    """A new candidate version (same files), as the next pipeline run's evaluate registers it."""
    champion = tracking.get_alias(handoff.uri, "clf", tracking.CHAMPION)
    return tracking.register_version(handoff.uri, "clf", champion.source, champion.run_id, {}).version


def _run(handoff: Handoff, tmp_path: Path, version: str, config: DeployConfig | None = None, **changes):
    arguments = {
        "model_dir": handoff.model_dir,
        "storage_uri": str(handoff.model_dir),
        "model_version": version,
        "reason": "test accuracy 0.5 ≥ --min-accuracy 0.0",
        "predictions_path": handoff.predictions,
        "reviews_path": handoff.reviews,
        "max_seq_length": SEQ,
        "report_path": tmp_path / "report.json",
        "tracking_uri": handoff.uri,
        "registered_model_name": "clf",
        "pipeline_run_id": "run-2",
        **changes,
    }
    return core.run(config or DeployConfig(smoke_reviews=12, rollout_timeout_seconds=300), **arguments)


def _champion(handoff: Handoff) -> str:
    return tracking.get_alias(handoff.uri, "clf", tracking.CHAMPION).version


def test_smoke_set_takes_the_predicted_classes_in_turn(handoff: Handoff) -> None:
    reviews = smoke.smoke_set(handoff.predictions, handoff.reviews, 6)
    predicted = pd.read_parquet(handoff.predictions)
    texts = pd.read_parquet(handoff.reviews).set_index(schema.REVIEW_ID)[schema.TEXT]
    assert len(reviews) == 6 and len({r.review_id for r in reviews}) == 6
    classes = sorted(set(predicted[schema.PREDICTED_LABEL]))
    assert [r.label for r in reviews[: len(classes)]] == classes  # one of each predicted class first
    for review in reviews:
        row = predicted.set_index(schema.REVIEW_ID).loc[review.review_id]
        assert review.text == texts[review.review_id] and review.label == row[schema.PREDICTED_LABEL]
        assert review.probabilities[review.label] == pytest.approx(max(review.probabilities.values()))
    assert smoke.smoke_set(handoff.predictions, handoff.reviews, 6) == reviews  # the same on every run
    assert len(smoke.smoke_set(handoff.predictions, handoff.reviews, 1000)) == ROWS


def test_local_deploy_serves_smoke_tests_and_promotes(
    handoff: Handoff, tmp_path: Path, champion_at_version_one: None, capsys: pytest.CaptureFixture[str]
) -> None:
    version = _second_version(handoff)
    report = _run(handoff, tmp_path, version)
    assert report.decision == "deployed" and report.outcome == "promoted" and report.backend == "local"
    assert report.smoke["reviews"] == 12 and report.smoke["passed"] is True
    assert report.smoke["matched"] + report.smoke["ties"] == 12 and report.smoke["matched"] >= 10
    assert report.smoke["max_probability_difference"] < 1e-4  # the same model, the same numbers
    # No endpoint is recorded: the server is stopped once the smoke test passed; the smoke result says where it ran.
    served_at = report.smoke["served_at"]
    assert report.endpoint is None and report.smoke["server"] == "stopped"
    assert served_at.startswith("http://127.0.0.1:") and served_at.endswith("/review-sentiment:predict")
    assert _champion(handoff) == version == report.champion
    assert json.loads((tmp_path / "report.json").read_text()) == report.to_dict()
    assert "Serving model" in capsys.readouterr().out  # the server's log went into the step's log
    with pytest.raises(OSError):  # the server was stopped
        socket.create_connection(("127.0.0.1", int(served_at.split(":")[2].split("/")[0])), timeout=2)
    run = tracking.PipelineRun(handoff.uri, tracking.DEFAULT_EXPERIMENT, "run-2")
    tags = run.client.get_run(run.run_id).data.tags
    assert tags["deploy.decision"] == "deployed" and tags["deploy.model_version"] == version


def test_served_answers_that_differ_from_evaluate_fail_and_leave_the_champion(
    handoff: Handoff, tmp_path: Path, champion_at_version_one: None
) -> None:
    """Evaluate's predictions say otherwise (another model's answers, with clear margins): no promotion."""
    predicted = pd.read_parquet(handoff.predictions)
    others = {"negative": "positive", "neutral": "negative", "positive": "neutral"}
    changed = predicted.assign(**{schema.PREDICTED_LABEL: predicted[schema.PREDICTED_LABEL].map(others)})
    for name in ("negative", "neutral", "positive"):
        changed[f"{schema.PROBABILITY_PREFIX}{name}"] = (changed[schema.PREDICTED_LABEL] == name).astype(float)
    changed.to_parquet(tmp_path / "other.parquet", index=False)
    version = _second_version(handoff)
    failed = r"Smoke test failed: .* 0/12 labels equal evaluate's.*champion left unchanged"
    with pytest.raises(core.DeploymentError, match=failed):
        _run(handoff, tmp_path, version, predictions_path=tmp_path / "other.parquet")
    assert _champion(handoff) == handoff.version
    assert not (tmp_path / "report.json").exists()


def test_a_server_that_is_not_ready_in_time_fails_and_leaves_the_champion(
    handoff: Handoff, tmp_path: Path, champion_at_version_one: None
) -> None:
    version = _second_version(handoff)
    config = DeployConfig(smoke_reviews=4, rollout_timeout_seconds=1)
    with pytest.raises(local.ServerNotReadyError, match=r"not ready within 1 s \(--rollout-timeout-seconds\)"):
        _run(handoff, tmp_path, version, config)
    assert _champion(handoff) == handoff.version


def test_a_model_directory_that_does_not_load_is_a_clear_error(
    handoff: Handoff, tmp_path: Path, champion_at_version_one: None
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(handoff.model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    version = _second_version(handoff)
    with pytest.raises(ValueError, match=r"The model server for .*broken' exited: Cannot load the classifier in"):
        _run(handoff, tmp_path, version, model_dir=broken)
    with pytest.raises(ValueError, match=r"Model directory .*no-such-dir' does not exist"):
        _run(handoff, tmp_path, version, model_dir=tmp_path / "no-such-dir")
    assert _champion(handoff) == handoff.version


def test_a_port_in_use_is_a_clear_error(handoff: Handoff, tmp_path: Path, champion_at_version_one: None) -> None:
    version = _second_version(handoff)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = replace(DeployConfig(smoke_reviews=4), local_port=port)
        with pytest.raises(ValueError, match=rf"--local-port {port} on 127.0.0.1 is in use: pass a free port, or 0"):
            _run(handoff, tmp_path, version, config)
    assert _champion(handoff) == handoff.version


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"model_version": "99"}, r"Version 99 of registered model 'clf' is not in the MLflow registry"),
        ({"model_version": ""}, r"No model version to deploy"),
        ({"tracking_uri": "http://127.0.0.1:9"}, r"is unreachable"),
        ({"predictions_path": "/no/such.parquet"}, r"Cannot read evaluate's predictions '/no/such.parquet'"),
    ],
)
def test_bad_input_is_refused_before_anything_moves(
    handoff: Handoff, tmp_path: Path, champion_at_version_one: None, changes: dict, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        _run(handoff, tmp_path, changes.pop("model_version", "1"), **changes)
    assert _champion(handoff) == handoff.version and not (tmp_path / "report.json").exists()


@pytest.mark.parametrize(
    ("config", "error"),
    [
        (DeployConfig(inference_service="Bad_Name"), r"--inference-service 'Bad_Name' is not a DNS label"),
        (DeployConfig(smoke_reviews=0), r"--smoke-reviews must be at least 1"),
        (DeployConfig(local_port=70000), r"--local-port must be at most 65535"),
        (DeployConfig(deploy_backend="docker"), r"--deploy-backend must be one of local, kserve"),  # type: ignore[arg-type]
    ],
)
def test_bad_options(handoff: Handoff, tmp_path: Path, config: DeployConfig, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        _run(handoff, tmp_path, "1", config)


def test_compare_counts_near_ties_apart_from_mismatches() -> None:
    clear = smoke.SmokeReview("a", "x", "positive", {"negative": 0.1, "neutral": 0.1, "positive": 0.8})
    tie = smoke.SmokeReview("b", "y", "neutral", {"negative": 0.2, "neutral": 0.4004, "positive": 0.3996})
    answers = [
        {"label": "negative", "probabilities": {"negative": 0.8, "neutral": 0.1, "positive": 0.1}},
        {"label": "positive", "probabilities": {"negative": 0.2, "neutral": 0.3999, "positive": 0.4001}},
    ]
    result = smoke.compare([clear, tie], answers)
    assert (result.matched, result.ties, result.ok) == (0, 1, False)
    assert [(m.review_id, m.expected, m.served) for m in result.mismatches] == [("a", "positive", "negative")]
    assert result.max_probability_difference == pytest.approx(0.7)
    with pytest.raises(ValueError, match="answered 1 predictions for 2 reviews"):
        smoke.compare([clear, tie], answers[:1])


def test_skipped_report_carries_evaluates_reason() -> None:
    report = core.skipped("test accuracy 0.4 is below --min-accuracy 0.99", "3", "local")
    assert report.to_dict() | {"message": ""} == {
        "decision": "skipped",
        "reason": "test accuracy 0.4 is below --min-accuracy 0.99",
        "model_version": "3",
        "registered_model": tracking.DEFAULT_REGISTERED_MODEL,
        "backend": "local",
        "endpoint": None,
        "outcome": None,
        "message": "",
        "canary": None,
        "smoke": None,
        "champion": None,
    }


def test_the_kserve_probe_checks_a_served_model_against_evaluate(handoff: Handoff, tmp_path: Path) -> None:
    """The probe KServe's rollout calls with a ready canary's URL, here pointed at the real server locally."""
    reviews = smoke.smoke_set(handoff.predictions, handoff.reviews, 6)
    config = DeployConfig(deploy_backend="kserve", inference_service="review-sentiment")
    others = {"negative": "positive", "neutral": "negative", "positive": "neutral"}
    clear = [
        replace(r, label=others[r.label], probabilities={c: 0.8 if c == others[r.label] else 0.1 for c in others})
        for r in reviews
    ]
    args = ("--max-seq-length", str(SEQ))
    server = local.LocalServer(handoff.model_dir, tmp_path / "server.log", "review-sentiment", 0, args)
    try:
        server.start().wait(300)
        core.smoke_probe(reviews, config)(server.url)  # the same answers: passes
        with pytest.raises(
            core.DeploymentError, match=r"smoke test on http://127.0.0.1:\d+/v1/models/review-sentiment"
        ):
            core.smoke_probe(clear, config)(server.url + "/")
        with pytest.raises(RuntimeError, match="answered HTTP 404"):
            core.smoke_probe(reviews, replace(config, inference_service="other"))(server.url)
        huggingface = replace(config, serving_runtime="huggingface")
        core.smoke_probe(clear, huggingface)(server.url)  # its own answer format: one answer per review suffices
    finally:
        server.stop()
