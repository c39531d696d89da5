"""MLflow: one tracking run per pipeline run, lineage tags, and the model registry with aliases.

- **Where**: ``MLFLOW_TRACKING_URI`` (or an explicit URI); by default an embedded SQLite file in a
  user-level directory (``$XDG_DATA_HOME/bert-kfp/mlflow.db``, i.e. ``~/.local/share/bert-kfp``), so the
  registry, and with it the current champion, outlives a single local run.  Artifacts of that store go to
  ``mlartifacts/`` beside the database.  Inside a Kubeflow Pipelines pod there is no such default: every
  step runs in a pod of its own, whose ``$HOME`` is thrown away with it, so an embedded store there would
  be private to one step — evaluate would never find train's run and no champion would survive.  There
  `resolve_tracking_uri` stops with an error unless a URI is configured (on a cluster the profile's
  ``mlflow`` entry sets ``MLFLOW_TRACKING_URI`` on the steps, see ``pipelines/profiles.py``).
- **Runs**: every step of one pipeline run logs into the same MLflow run, found by its
  ``pipeline_run_id`` tag (created by the first step that logs).  Tuning trials log into child runs.
  Metrics carry a step prefix (``train/``, ``eval/``); params too (``train.learning_rate``).
- **Registry**: evaluate registers each candidate as a new version of the registered model with alias
  ``challenger`` and its test results as version tags; deploy moves alias ``champion`` to a version it
  has rolled out (`promote`).  Evaluate compares a challenger with the version behind ``champion``.
- **Reachability**: `check_tracking_uri` fails with a clear message, quickly, before any training.

`mlflow` is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

if TYPE_CHECKING:  # pragma: no cover - typing only
    from mlflow import MlflowClient

log = logging.getLogger("components.tracking")

ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
#: The help of every step's `mlflow_tracking_uri` option.
TRACKING_URI_HELP = (
    "MLflow tracking + registry URI; empty: $MLFLOW_TRACKING_URI, else the embedded SQLite store (locally; in a "
    "KFP pod that is an error: the profile's `mlflow` entry sets the URI)."
)
DEFAULT_EXPERIMENT = "bert-review-sentiment"
DEFAULT_REGISTERED_MODEL = "review-sentiment-classifier"
CHAMPION = "champion"
CHALLENGER = "challenger"
#: Tag that ties an MLflow run to a pipeline run.
PIPELINE_RUN_TAG = "pipeline_run_id"
#: Set in every executor pod by the KFP v2 backend (downward API: the pod's name and uid; the Argo and the
#: Tekton compilers of kubeflow/pipelines both add them).  Not set by `kfp.local`'s runners, nor by
#: Kubernetes in other pods (a notebook server running `kfp.local` keeps the embedded store).
KFP_POD_ENV = ("KFP_POD_NAME", "KFP_POD_UID")
_MAX_PARAM_LENGTH = 6000


def default_store_dir() -> Path:
    """The user-level directory of the embedded tracking store."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "bert-kfp"


def kfp_pod() -> str:
    """The name of the Kubeflow Pipelines pod this process runs in (its uid if only that is known); "" outside one."""
    for name in KFP_POD_ENV:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return ""


def resolve_tracking_uri(uri: str = "") -> str:
    """The tracking URI to use: ``uri``, else ``$MLFLOW_TRACKING_URI``, else the embedded SQLite default.

    Raises:
        ValueError: Neither is set and this process runs in a KFP pod, where the embedded store would be
            private to the pod and lost with it.  (An explicit ``sqlite:///`` URI on a volume that every
            step mounts is accepted: that store is shared.)
    """
    chosen = (uri or "").strip() or os.environ.get(ENV_TRACKING_URI, "").strip()
    if chosen:
        return chosen
    pod = kfp_pod()
    if pod:
        raise ValueError(
            f"No MLflow tracking URI in Kubeflow Pipelines pod {pod}: an embedded store under $HOME would be "
            "private to this step and lost with its pod, so evaluate would never see train's run and no champion "
            f"would persist. Set {ENV_TRACKING_URI} on the step (the profile's `mlflow` key, `tracking_uri`, in "
            "pipelines/profiles.yaml does that when the pipeline is compiled) or pass the URI: --mlflow-tracking-uri "
            "or the pipeline parameter mlflow_tracking_uri."
        )
    return f"sqlite:///{default_store_dir() / 'mlflow.db'}"


def _sqlite_path(uri: str) -> Path:
    # sqlite:///relative.db, sqlite:////absolute.db
    return Path(unquote(uri[len("sqlite:///") :]))


def try_sqlite_write(path: Path) -> None:
    """A real write where SQLite will write the database ``path``, changing nothing there: a scratch file
    created and removed in its directory (SQLite writes its journal beside the database), and an existing
    file opened for writing.  `os.access` is no such test: it says yes to root on a read-only mount or /proc.

    Raises:
        OSError: The directory is missing or takes no new file, or the database cannot be opened for writing.
    """
    directory = path.parent if str(path.parent) else Path(".")
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-check-"):
        pass
    if path.exists():
        with path.open("r+b"):
            pass


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, with a message that says what to do, when the tracking store cannot be used.

    HTTP(S): the server's ``/health`` must answer within ``timeout`` seconds.  SQLite: the database's
    directory must take a new file (a real write, `try_sqlite_write`) and an existing file must be a
    writable, readable SQLite database; a file store's directory must take a new file.  Other schemes
    (e.g. ``databricks``) are accepted as they are.

    Raises:
        ValueError: Unreachable server, refused credentials, unwritable or corrupt database.
    """
    hint = f"Start the server or fix the URI ({ENV_TRACKING_URI} or --mlflow-tracking-uri)" + (
        "." if kfp_pod() else f"; unset both to use the embedded SQLite store under {default_store_dir()}."
    )
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            status = error.code
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ValueError(f"MLflow tracking server {uri} is unreachable ({reason}). {hint}") from error
        if status in (401, 403):
            raise ValueError(
                f"MLflow tracking server {uri} refused the request (HTTP {status}): set MLFLOW_TRACKING_TOKEN or "
                "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD (from a Kubernetes secret on a cluster)."
            )
        if status >= 500:
            raise ValueError(f"MLflow tracking server {uri} answers HTTP {status} on /health. {hint}")
        return
    if scheme == "sqlite":
        path = _sqlite_path(uri)
        directory = path.parent if str(path.parent) else Path(".")
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(f"Cannot create the directory of MLflow database {uri}: {error}. {hint}") from error
        try:
            try_sqlite_write(path)
        except OSError as error:
            raise ValueError(
                f"MLflow database {uri} cannot be written: {error.strerror or error} (a real write in "
                f"{str(directory.resolve())!r} failed: a read-only mount, or a place that takes no files). {hint}"
            ) from error
        if path.exists():
            try:
                with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout) as db:
                    db.execute("PRAGMA schema_version").fetchone()
            except sqlite3.DatabaseError as error:
                raise ValueError(f"{path} is not a readable SQLite database ({error}). {hint}") from error
        return
    if scheme in ("", "file"):
        directory = Path(unquote(urlparse(uri).path) if scheme == "file" else uri)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(f"Cannot create MLflow store directory {directory}: {error}. {hint}") from error
        try:
            with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-check-"):
                pass
        except OSError as error:
            raise ValueError(
                f"MLflow store directory {directory} takes no new file ({error.strerror or error}). {hint}"
            ) from error


def code_version() -> str:
    """The package version, plus the git commit when running from a checkout (``0.1.0+g1a2b3c4``)."""
    from components.common.image import version

    package = version()
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{package}+g{sha}" if sha else package


def lineage_tags(pipeline_run_id: str = "", data_hash: str = "", feature_view: str = "") -> dict[str, str]:
    """The lineage tags (empty values left out)."""
    tags = {
        "pipeline_run_id": pipeline_run_id,
        "data_hash": data_hash,
        "feature_view": feature_view,
        "code_version": code_version(),
    }
    return {k: v for k, v in tags.items() if v}


def _client(uri: str) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _experiment_id(client: MlflowClient, uri: str, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    location = None
    if urlparse(uri).scheme == "sqlite":  # keep artifacts beside the database, not in the working directory
        location = (_sqlite_path(uri).resolve().parent / "mlartifacts" / name).as_uri()
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except Exception:  # created meanwhile by a step running in parallel
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def _flat(values: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {f"{prefix}{k}": v for k, v in values.items()}


@dataclass
class PipelineRun:
    """The MLflow run of one pipeline run (or a child run of it), opened on first use.

    Args:
        uri: Tracking URI (see `resolve_tracking_uri`).
        experiment: Experiment name.
        pipeline_run_id: The pipeline run's id; steps with the same id share one MLflow run.  Empty: a new
            run each time.
        tags: Tags set when the run is opened (lineage, step).
        child: Name of a child run under the pipeline's run (tuning trials); empty: the run itself.
    """

    uri: str
    experiment: str = DEFAULT_EXPERIMENT
    pipeline_run_id: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    child: str = ""
    _run_id: str | None = None

    @property
    def client(self) -> MlflowClient:
        return _client(self.uri)

    @property
    def run_id(self) -> str:
        """The MLflow run id, finding or creating the run on first use."""
        if self._run_id is None:
            self._run_id = self._open()
        return self._run_id

    def _find(self, client: MlflowClient, experiment_id: str, extra: str = "") -> str | None:
        if not self.pipeline_run_id:
            return None
        query = f"tags.{PIPELINE_RUN_TAG} = '{self.pipeline_run_id}'" + extra
        runs = client.search_runs([experiment_id], filter_string=query, order_by=["attributes.start_time ASC"])
        if not extra:
            runs = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        return runs[0].info.run_id if runs else None

    def _open(self) -> str:
        client = self.client
        experiment_id = _experiment_id(client, self.uri, self.experiment)
        tags = {**self.tags, **({PIPELINE_RUN_TAG: self.pipeline_run_id} if self.pipeline_run_id else {})}
        parent = self._find(client, experiment_id)
        if parent is None:
            name = f"pipeline-{self.pipeline_run_id}" if self.pipeline_run_id else None
            parent = client.create_run(experiment_id, tags=tags, run_name=name).info.run_id
        if not self.child:
            run_id = parent
        else:
            run_id = self._find(client, experiment_id, f" and attributes.run_name = '{self.child}'") or ""
            if not run_id:
                run = client.create_run(experiment_id, tags={**tags, "mlflow.parentRunId": parent}, run_name=self.child)
                run_id = run.info.run_id
        if client.get_run(run_id).info.status != "RUNNING":
            client.update_run(run_id, status="RUNNING")
        if tags:
            self.set_tags(tags, run_id)
        return run_id

    def set_tags(self, tags: Mapping[str, Any], run_id: str | None = None) -> None:
        from mlflow.entities import RunTag

        if tags:
            self.client.log_batch(run_id or self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_params(self, params: Mapping[str, Any], prefix: str = "") -> None:
        """Log params; ones the run already holds with another value (a retried step) are kept as they were."""
        from mlflow.entities import Param

        held = self.client.get_run(self.run_id).data.params
        wanted = {k: str(v)[:_MAX_PARAM_LENGTH] for k, v in _flat(params, prefix).items()}
        changed = sorted(k for k, v in wanted.items() if k in held and held[k] != v)
        if changed:
            log.warning("MLflow run %s keeps its earlier values of %s (params cannot change)", self.run_id, changed)
        items = [Param(k, v) for k, v in wanted.items() if k not in held]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, prefix: str = "") -> None:
        """Log finite numeric metrics (others are left out: MLflow stores NaN, but charts break on it)."""
        import math
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, step or 0)
            for k, v in _flat(metrics, prefix).items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
        ]
        for start in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[start : start + 500])

    def log_artifacts(self, local_dir: str | Path, artifact_path: str) -> str:
        """Upload a directory; return its artifact URI (what a registered model version points at)."""
        client = self.client
        client.log_artifacts(self.run_id, str(local_dir), artifact_path)
        return f"{client.get_run(self.run_id).info.artifact_uri.rstrip('/')}/{artifact_path}"

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def artifact_uri(self, artifact_path: str) -> str:
        return f"{self.client.get_run(self.run_id).info.artifact_uri.rstrip('/')}/{artifact_path}"

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run FINISHED or FAILED (a later step of the pipeline re-opens it)."""
        if self._run_id is not None:
            self.client.set_terminated(self._run_id, status)


# --- the model registry ------------------------------------------------------------------------------


@dataclass
class RegisteredVersion:
    """One version of the registered model: where its files are and what was recorded about it."""

    name: str
    version: str
    source: str
    run_id: str
    tags: dict[str, str]
    aliases: list[str]


def _version(mv: Any) -> RegisteredVersion:
    return RegisteredVersion(
        name=mv.name,
        version=str(mv.version),
        source=mv.source,
        run_id=mv.run_id or "",
        tags=dict(mv.tags or {}),
        aliases=list(getattr(mv, "aliases", []) or []),
    )


def get_alias(uri: str, name: str, alias: str = CHAMPION) -> RegisteredVersion | None:
    """The version of registered model ``name`` behind ``alias``, or None (no such model or alias)."""
    from mlflow.exceptions import MlflowException

    try:
        return _version(_client(uri).get_model_version_by_alias(name, alias))
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def register_version(
    uri: str, name: str, source: str, run_id: str, tags: Mapping[str, Any], alias: str | None = CHALLENGER
) -> RegisteredVersion:
    """Register ``source`` (an artifact URI of a saved model) as a new version, tag it, point ``alias`` at it."""
    from mlflow.exceptions import MlflowException

    client = _client(uri)
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    mv = client.create_model_version(name, source, run_id=run_id, tags={k: str(v) for k, v in tags.items()})
    if alias:
        client.set_registered_model_alias(name, alias, mv.version)
    return _version(client.get_model_version(name, mv.version))


def promote(uri: str, name: str, version: str, alias: str = CHAMPION) -> None:
    """Point ``alias`` (default champion) at ``version`` — what deploy calls after a successful rollout."""
    _client(uri).set_registered_model_alias(name, alias, str(version))


def download(uri: str, artifact_uri: str, destination: str | Path | None = None) -> Path:
    """Fetch a registered version's files (its ``source``) to a local directory."""
    import mlflow.artifacts

    path = mlflow.artifacts.download_artifacts(
        artifact_uri=artifact_uri, dst_path=str(destination) if destination else None, tracking_uri=uri
    )
    return Path(path)
