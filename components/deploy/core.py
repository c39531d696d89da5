"""Deploy a model version that passed evaluate's gate, and move MLflow's `champion` alias only on success.

Evaluate has registered the model as a new version of the registered model (alias `challenger`).  Deploy
checks the options and that this version is in the registry, then rolls it out by backend:

- **local** (the embedded default): the project's model server (`python -m serving`) starts as a
  subprocess on 127.0.0.1, serves the model directory train wrote, gets the smoke set — held-out test
  reviews whose answers evaluate already knows (`components.deploy.smoke`) — and must answer each with
  evaluate's label; then it stops.  `make serve` serves the champion afterwards.
- **kserve**: `components.deploy.kserve.rollout` creates the InferenceService or rolls the version out as a
  canary and promotes or rolls it back; its probe sends the same smoke set to the ready canary
  (`smoke_probe`), so a canary that answers otherwise than evaluate is rolled back.

Only a successful rollout (local: the smoke test passed; kserve: ``created`` or ``promoted``) moves alias
`champion` to the version.  A failed one — a smoke mismatch, a server that never gets ready, a rolled-back
canary — raises `DeploymentError` (or `ServerNotReadyError`) and leaves `champion` where it was.  Bad input (an
option, a model directory that does not load, a port in use, an MLflow store or version that is not
there) raises `ValueError` before anything moves.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from components.common import options, tracking
from components.common.schema import MAX_SEQ_LENGTH
from components.deploy import local
from components.deploy.config import DeployConfig
from components.deploy.smoke import SmokeReview, compare, smoke_set

DEPLOYED, SKIPPED = "deployed", "skipped"
#: KServe rollout actions after which the version serves all traffic (and becomes the champion).
PROMOTING_ACTIONS = ("created", "promoted")


class DeploymentError(RuntimeError):
    """The rollout failed (the served model disagreed with evaluate, or the canary was rolled back)."""


@dataclass
class DeploymentReport:
    """What deploy did: summary.json's `deployment`, the step's report artifact."""

    decision: str  # deployed | skipped
    reason: str  # evaluate's gate decision
    model_version: str
    registered_model: str
    backend: str
    #: Where the deployed model answers: kserve: the InferenceService's URL; local: None, since the local server
    #: is stopped once its smoke test passed (the URL it was tested on is ``smoke["served_at"]``).
    endpoint: str | None = None
    #: local: promoted; kserve: the rollout's action (created, promoted, no_op).
    outcome: str | None = None
    message: str = ""
    #: kserve: the rollout's own report (mode, traffic, ...); local: None (no canary).
    canary: dict[str, Any] | None = None
    #: The smoke test's result (local).
    smoke: dict[str, Any] | None = None
    champion: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def headline(self) -> dict[str, float]:
        """Numbers for KFP Metrics."""
        out = {"deployed": float(self.decision == DEPLOYED)}
        if self.smoke:
            out["smoke_reviews"] = float(self.smoke["reviews"])
            out["smoke_matched"] = float(self.smoke["matched"])
            if self.smoke.get("max_probability_difference") is not None:
                out["smoke_max_probability_difference"] = float(self.smoke["max_probability_difference"])
        return out


def skipped(reason: str, model_version: str, backend: str, registered_model: str = "") -> DeploymentReport:
    """The report of a run whose model did not pass evaluate's gate."""
    name = registered_model or tracking.DEFAULT_REGISTERED_MODEL
    return DeploymentReport(SKIPPED, reason, model_version, name, backend, message="the deploy gate did not pass")


def write_summary(report: DeploymentReport, path: str | Path) -> None:
    """The step's Markdown summary (`components.common.report_md`): what was deployed where, or why nothing was."""
    from components.common import report_md

    version = f"version {report.model_version} of {report.registered_model}"
    if report.decision == DEPLOYED:
        where = f" at {report.endpoint}" if report.endpoint else ""
        notes = [f"Deployed {version} ({report.backend}{where}, {report.outcome}): {report.message}"]
    else:
        notes = [f"Skipped: {version} stays challenger.", f"Reason: {report.reason}"]
    if report.champion:
        notes.append(f"Champion: version {report.champion}.")
    report_md.write(path, "Deploy", report.headline(), notes)


def check_version(uri: str, name: str, version: str) -> None:
    """The model version is in the registry.

    Raises:
        ValueError: No version given, or no such version of ``name`` in the registry at ``uri``.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if not version.strip():
        raise ValueError(
            "No model version to deploy: evaluate registers one (alias challenger) in MLflow; pass its model_version."
        )
    try:
        MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version(name, version)
    except MlflowException as error:
        raise ValueError(
            f"Version {version} of registered model {name!r} is not in the MLflow registry at {uri}: deploy a version "
            "that evaluate registered there (same --mlflow-tracking-uri and --registered-model-name)."
        ) from error


def deploy_local(
    config: DeployConfig, model_dir: str | Path, reviews: list[SmokeReview], max_seq_length: int, log: Path
) -> tuple[str, dict[str, Any], str]:
    """Serve and smoke-test locally; (endpoint, smoke result, message).

    Raises:
        DeploymentError: A label differs from evaluate's.
        ValueError, local.ServerNotReadyError: See `local.smoke_test`.
    """
    endpoint, result = local.smoke_test(
        model_dir,
        reviews,
        name=config.inference_service,
        max_seq_length=max_seq_length,
        timeout=config.rollout_timeout_seconds,
        log=log,
        port=config.local_port,
    )
    if not result.ok:
        raise DeploymentError(
            f"Smoke test failed: the model served at {endpoint} disagrees with evaluate: {result.describe()}. The "
            "served model is not the one evaluated (model directory, tokenizer or --max-seq-length differ); champion "
            "left unchanged."
        )
    message = (
        f"smoke test passed on {endpoint}: {result.describe()}; the server was stopped (make serve serves the champion)"
    )
    return endpoint, {**result.to_dict(), "served_at": endpoint, "server": "stopped"}, message


def smoke_probe(reviews: list[SmokeReview], config: DeployConfig) -> Callable[[str], None]:
    """The probe KServe's rollout calls with a ready canary's URL: the smoke reviews to its V1 route.  The
    project's server must answer each with evaluate's label; KServe's Hugging Face runtime answers in its own
    format, so there only one answer per review is required.

    Raises (the probe):
        DeploymentError: Labels that differ from evaluate's, or not one answer per review.
        RuntimeError: An HTTP error.
    """
    texts = [r.text for r in reviews]

    def probe(url: str) -> None:
        endpoint = f"{url.rstrip('/')}/v1/models/{config.inference_service}:predict"
        answers = local.predict_v1(endpoint, texts, timeout=float(config.rollout_timeout_seconds))
        if config.serving_runtime != "project":
            if len(answers) != len(texts):
                raise DeploymentError(f"{endpoint} answered {len(answers)} predictions for {len(texts)} smoke reviews")
            return
        result = compare(reviews, answers)
        if not result.ok:
            raise DeploymentError(f"smoke test on {endpoint}: {result.describe()}")

    return probe


def deploy_kserve(
    config: DeployConfig,
    storage_uri: str,
    model_version: str,
    reviews: list[SmokeReview],
    max_seq_length: int = MAX_SEQ_LENGTH,
) -> Any:
    """Roll the version out with `components.deploy.kserve.rollout`, the smoke set as its probe; the rollout's
    result (``.action``, ``.endpoint``, ``.message``, ...).

    Raises:
        DeploymentError: The canary was rolled back.
        kserve.KServeError: No cluster access, KServe missing or too old, a permission missing.
    """
    from components.common import image
    from components.deploy import kserve

    probe = smoke_probe(reviews, config)
    client = kserve.load_api_client()
    serve_image = image.resolve(image.SERVE_IMAGE)  # the serve image this very step runs on
    result = kserve.rollout(
        client,
        config,
        storage_uri=storage_uri,
        model_version=model_version,
        image=serve_image,
        max_seq_length=max_seq_length,
        probe=probe,
    )
    if result.action == "rolled_back":
        raise DeploymentError(
            f"KServe rollout of version {model_version} rolled back: {result.message}; champion left unchanged."
        )
    return result


def deploy(
    config: DeployConfig,
    *,
    model_dir: str | Path,
    storage_uri: str,
    model_version: str,
    reason: str,
    reviews: list[SmokeReview],
    max_seq_length: int,
    tracking_uri: str = "",
    registered_model_name: str = "",
    pipeline_run_id: str = "",
    log: Path | None = None,
) -> DeploymentReport:
    """Check, roll out by backend, move `champion` on success (see the module docstring).

    Args:
        config: The deploy options.
        model_dir: The model directory (what the local backend serves).
        storage_uri: The same model as a URI a cluster can read (what KServe serves).
        model_version: The registered version evaluate created.
        reason: Evaluate's reason for deploying.
        reviews: The smoke set (`smoke.smoke_set`).
        max_seq_length: Tokens per review in training and evaluation (the server cuts texts to it).
        tracking_uri: MLflow URI ("" → $MLFLOW_TRACKING_URI or the embedded store).
        registered_model_name: Registered model ("" → the project default).
        pipeline_run_id: The pipeline run's id (deploy's tags go to its MLflow run).
        log: Where the local model server's output goes (None: a temporary file).

    Raises:
        ValueError: Bad input, before anything moves.
        DeploymentError, local.ServerNotReadyError: The rollout failed; champion unchanged.
    """
    options.check(config)
    if max_seq_length < 3:
        raise ValueError(f"--max-seq-length must be at least 3, got {max_seq_length}.")
    uri = tracking.usable_tracking_uri(tracking_uri)
    name = registered_model_name or tracking.DEFAULT_REGISTERED_MODEL
    check_version(uri, name, model_version)
    report = DeploymentReport(DEPLOYED, reason, model_version, name, config.deploy_backend)
    mlflow_run = tracking.PipelineRun(
        uri, tracking.DEFAULT_EXPERIMENT, pipeline_run_id, tracking.lineage_tags(pipeline_run_id)
    )
    try:
        if config.deploy_backend == "local":
            with tempfile.TemporaryDirectory(prefix="deploy-") as tmp:
                server_log = log or Path(tmp) / "model-server.log"
                _, report.smoke, report.message = deploy_local(config, model_dir, reviews, max_seq_length, server_log)
            report.outcome = "promoted"
        else:
            result = deploy_kserve(config, storage_uri, model_version, reviews, max_seq_length)
            report.endpoint, report.outcome, report.message = result.endpoint, result.action, result.message
            report.canary = result.to_dict()
    except Exception as error:
        with contextlib.suppress(Exception):  # the rollout's error is the one to report
            mlflow_run.set_tags({"deploy.decision": "failed", "deploy.error": " ".join(str(error).split())[:5000]})
            mlflow_run.end("FAILED")
        raise
    if report.outcome in PROMOTING_ACTIONS:
        tracking.promote(uri, name, model_version)
    report.champion = getattr(tracking.get_alias(uri, name, tracking.CHAMPION), "version", None)
    mlflow_run.set_tags(
        {
            "deploy.decision": report.decision,
            "deploy.backend": report.backend,
            "deploy.outcome": report.outcome or "",
            "deploy.endpoint": report.endpoint or "",
            "deploy.model_version": model_version,
        }
    )
    mlflow_run.end()
    return report


def write_report(report: DeploymentReport, path: str | Path) -> str:
    """The report as JSON at ``path``; the same JSON returned (the pipeline's `deployment` output)."""
    text = json.dumps(report.to_dict(), indent=1)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)
    return text


def run(
    config: DeployConfig,
    *,
    model_dir: str | Path,
    storage_uri: str,
    model_version: str,
    reason: str,
    predictions_path: str | Path,
    reviews_path: str | Path,
    max_seq_length: int,
    report_path: str | Path,
    tracking_uri: str = "",
    registered_model_name: str = "",
    pipeline_run_id: str = "",
) -> DeploymentReport:
    """The step: check the options, build the smoke set, deploy, write the report (see `deploy`)."""
    options.check(config)
    reviews = smoke_set(predictions_path, reviews_path, config.smoke_reviews)
    with tempfile.TemporaryDirectory(prefix="deploy-") as tmp:
        log = Path(tmp) / "model-server.log"
        try:
            report = deploy(
                config,
                model_dir=model_dir,
                storage_uri=storage_uri,
                model_version=model_version,
                reason=reason,
                reviews=reviews,
                max_seq_length=max_seq_length,
                tracking_uri=tracking_uri,
                registered_model_name=registered_model_name,
                pipeline_run_id=pipeline_run_id,
                log=log,
            )
        finally:
            if log.exists():  # the server's own log, into the step's log
                print(f"--- model server log ---\n{log.read_text(errors='replace')}--- end of model server log ---")
    write_report(report, report_path)
    return report
