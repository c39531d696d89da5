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
- **Run name**: ``$KFP_RUN_NAME`` when set (a local run sets it to its run directory's name), else
  ``pipeline-<pipeline_run_id>``.
- **Model**: evaluate logs the trained classifier as an MLflow model with the ``transformers`` flavour
  (`log_classifier`: a text-classification pipeline that cuts texts to ``max_seq_length`` tokens, as the
  model server does), so ``mlflow.pyfunc.load_model("models:/<name>@champion")``, ``mlflow models serve``
  and KServe's MLflow runtime can load a registered version; `download_classifier` turns a registered
  version back into the saved Hugging Face folder that evaluate and the model server load (versions
  registered before, whose source is that bare folder, still download as they are).
- **Data**: evaluate logs the input data as an MLflow dataset (`log_dataset`: URI, digest, rows).
- **Registry**: evaluate registers each candidate as a new version of the registered model with alias
  ``challenger`` and its test results as version tags; deploy moves alias ``champion`` to a version it
  has rolled out (`promote`).  Evaluate compares a challenger with the version behind ``champion``.
- **Reachability**: `check_tracking_uri` fails with a clear message, quickly, before any training.

`mlflow` is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from components.common.inference import ONNX_DIR

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd
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
#: The MLflow run's name when set: the local run directory's name (`pipelines.local`), or the KFP run's name.
RUN_NAME_ENV = "KFP_RUN_NAME"
#: Where a KFP step's pod finds its run's name (`pipelines.profiles.use_mlflow` maps it to `RUN_NAME_ENV`; the
#: field path of kubeflow/pipelines' own FieldPathAsEnv example, backend/src/v2/driver/driver_test.go).
KFP_RUN_NAME_FIELD = "metadata.annotations['pipelines.kubeflow.org/run_name']"
#: The name of the MLflow model that evaluate logs into the pipeline's run (`log_classifier`).
MODEL_NAME = "classifier"
#: MLflow stores a dataset digest in at most 36 characters; the SHA-256's first 32 hex digits are logged.
DATASET_DIGEST_LENGTH = 32
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


def usable_tracking_uri(uri: str = "") -> str:
    """`resolve_tracking_uri` of ``uri``, checked with `check_tracking_uri`: what a step calls before its work.

    Raises:
        ValueError: The tracking store cannot be used (the message says what to do).
    """
    resolved = resolve_tracking_uri(uri)
    check_tracking_uri(resolved)
    return resolved


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


#: What the MLflow UI shows as the pipeline run's Source: a job, the pipeline (`pipelines.pipeline.PIPELINE_NAME`).
SOURCE_TAGS = {"mlflow.source.type": "JOB", "mlflow.source.name": "bert-review-sentiment pipeline"}


def lineage_tags(pipeline_run_id: str = "", data_hash: str = "", feature_view: str = "") -> dict[str, str]:
    """The lineage tags (empty values left out)."""
    tags = {
        "pipeline_run_id": pipeline_run_id,
        "data_hash": data_hash,
        "feature_view": feature_view,
        "code_version": code_version(),
    }
    return {k: v for k, v in tags.items() if v}


def run_name(pipeline_run_id: str = "") -> str | None:
    """The pipeline's MLflow run name: ``$KFP_RUN_NAME``, else ``pipeline-<id>``; None: MLflow picks one."""
    chosen = os.environ.get(RUN_NAME_ENV, "").strip()
    if chosen:
        return chosen
    return f"pipeline-{pipeline_run_id}" if pipeline_run_id else None


@contextmanager
def named_runs(name: str) -> Iterator[None]:
    """``$KFP_RUN_NAME`` set to ``name`` for a while (the steps this process starts inherit it: the pipeline's
    MLflow run is named so), then as it was."""
    before = os.environ.get(RUN_NAME_ENV)
    os.environ[RUN_NAME_ENV] = name
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(RUN_NAME_ENV, None)
        else:
            os.environ[RUN_NAME_ENV] = before


def run_link(uri: str, experiment_id: str, run_id: str) -> dict[str, str]:
    """Where to see a run: its URL in the MLflow UI, and for a local store the command that starts that UI.

    A server (``http(s)://``) serves its UI at the tracking URI itself.  A SQLite or file store has no UI
    running: ``mlflow ui --backend-store-uri <uri>`` serves one at http://127.0.0.1:5000.
    """
    path = f"#/experiments/{experiment_id}/runs/{run_id}"
    if urlparse(uri).scheme in ("http", "https"):
        return {"url": f"{uri.rstrip('/')}/{path}"}
    return {"url": f"http://127.0.0.1:5000/{path}", "ui_command": f"mlflow ui --backend-store-uri {uri}"}


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
            name = run_name(self.pipeline_run_id)
            parent = client.create_run(experiment_id, tags={**SOURCE_TAGS, **tags}, run_name=name).info.run_id
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

    def link(self) -> dict[str, str]:
        """The run's ids and where to see it (`run_link`): summary.json's ``mlflow_run``."""
        run = self.client.get_run(self.run_id)
        return {
            "run_id": self.run_id,
            "run_name": run.info.run_name or "",
            "experiment_id": str(run.info.experiment_id),
            "tracking_uri": self.uri,
            **run_link(self.uri, str(run.info.experiment_id), self.run_id),
        }

    def log_classifier(self, model_dir: str | Path, max_seq_length: int) -> LoggedClassifier:
        """Log the classifier that train saved in ``model_dir`` as an MLflow model of this run (see
        `log_classifier`)."""
        return log_classifier(self.uri, self.run_id, model_dir, max_seq_length)

    def log_dataset(
        self, frame: pd.DataFrame, source: str, sha256: str, name: str, tags: Mapping[str, Any] | None = None
    ) -> None:
        """Log ``frame`` (the rows the model was trained and tested on) as this run's input dataset.

        Args:
            frame: The rows; MLflow records their schema and count (the dataset's profile).
            source: Where they were read from (path or URI).
            sha256: SHA-256 of the source file; its first `DATASET_DIGEST_LENGTH` hex digits are the dataset's
                digest (MLflow's limit), all of it a tag ``data_hash``.
            name: The dataset's name in the MLflow UI.
            tags: More input tags (row counts, options).
        """
        import mlflow
        from mlflow.exceptions import MlflowException

        digest = sha256[:DATASET_DIGEST_LENGTH] or None
        extra = {"source": source, "data_hash": sha256, **{k: str(v) for k, v in (tags or {}).items()}}
        with warnings.catch_warnings():  # "can be interpreted in multiple ways", "integer columns": as meant
            warnings.simplefilter("ignore", UserWarning)
            try:
                dataset = mlflow.data.from_pandas(frame, source=source, name=name, digest=digest)
            except MlflowException:  # a URI scheme MLflow has no dataset source for: the URI stays a tag
                dataset = mlflow.data.from_pandas(frame, name=name, digest=digest)
            with _active_run(self.uri, self.run_id):
                mlflow.log_input(dataset, context="training", tags=extra)

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run FINISHED or FAILED (a later step of the pipeline re-opens it)."""
        if self._run_id is not None:
            self.client.set_terminated(self._run_id, status)


@contextmanager
def _active_run(uri: str, run_id: str) -> Iterator[None]:
    """Run ``run_id`` of store ``uri`` as MLflow's active run (what its fluent API logs into), for a moment;
    the global tracking URI is restored afterwards."""
    import mlflow

    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(run_id=run_id):
            yield
    finally:
        mlflow.set_tracking_uri(before)


def _requirement(package: str) -> str:
    """``package==<installed version>``, without a local version label (``2.13.0+cpu`` → ``2.13.0``)."""
    from importlib.metadata import version

    return f"{package}=={version(package).split('+')[0]}"


#: What loading the logged model needs (pinned to the versions that logged it); given, so that MLflow does not
#: infer them by loading the model once more in a subprocess.
MODEL_REQUIREMENTS = ("mlflow", "transformers", "tokenizers", "torch")


@dataclass(frozen=True)
class LoggedClassifier:
    """The MLflow model `log_classifier` logged: its URI (``models:/m-...``), its id, and where its files are
    (a registered version's source: the registry would resolve a ``models:/`` source through MLflow's global
    tracking URI, not the store it registers in)."""

    model_uri: str
    model_id: str
    artifact_location: str


def log_classifier(uri: str, run_id: str, model_dir: str | Path, max_seq_length: int) -> LoggedClassifier:
    """Log the classifier that train saved in ``model_dir`` into run ``run_id`` as an MLflow model
    (`MODEL_NAME`) with the ``transformers`` flavour: a text-classification pipeline of its weights and
    tokenizer that cuts each text to ``max_seq_length`` tokens (the pyfunc's ``model_config``), as featurize
    and the model server do.  Its pyfunc answers ``label`` (the model's id2label: negative, neutral,
    positive) and ``score`` per text; it loads from the files alone (no network).

    Raises:
        ValueError: ``model_dir`` is not a classifier train wrote (`modeling.load_trained_classifier`).
    """
    import mlflow
    import transformers

    from components.common import modeling

    model, tokenizer = modeling.load_trained_classifier(model_dir)
    pipeline = transformers.pipeline("text-classification", model=model, tokenizer=tokenizer)
    flavour_log = logging.getLogger("mlflow.transformers")
    level = flavour_log.level
    flavour_log.setLevel(logging.ERROR)  # "no model card on the Hub", "no license": a local model has neither
    try:
        with _active_run(uri, run_id), modeling.quiet_transformers():
            info = mlflow.transformers.log_model(
                pipeline,
                name=MODEL_NAME,
                task="text-classification",
                model_config={"truncation": True, "max_length": int(max_seq_length)},
                pip_requirements=[_requirement(p) for p in MODEL_REQUIREMENTS],
            )
    finally:
        flavour_log.setLevel(level)
    client = _client(uri)
    onnx = Path(model_dir) / ONNX_DIR
    if onnx.is_dir():  # the variants train kept (`components.common.onnx_export`): what the model server runs
        client.log_model_artifacts(info.model_id, str(onnx), ONNX_DIR)
    location = client.get_logged_model(info.model_id).artifact_location
    return LoggedClassifier(info.model_uri, info.model_id, location)


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


def version_data_hash(uri: str, version: RegisteredVersion) -> str:
    """The ``data_hash`` of the data ``version`` was trained on: its version tag (evaluate sets it), else its
    run's lineage tag (train sets it); "" when neither is known (or the run is gone)."""
    from mlflow.exceptions import MlflowException

    if version.tags.get("data_hash"):
        return version.tags["data_hash"]
    if not version.run_id:
        return ""
    try:
        return _client(uri).get_run(version.run_id).data.tags.get("data_hash", "")
    except MlflowException:
        return ""


def register_version(
    uri: str,
    name: str,
    source: str,
    run_id: str,
    tags: Mapping[str, Any],
    alias: str | None = CHALLENGER,
    model_id: str | None = None,
) -> RegisteredVersion:
    """Register ``source`` (where a logged MLflow model's files are, `LoggedClassifier.artifact_location`, with
    its ``model_id``) as a new version, tag it, point ``alias`` at it."""
    from mlflow.exceptions import MlflowException

    client = _client(uri)
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    mv = client.create_model_version(
        name, source, run_id=run_id, tags={k: str(v) for k, v in tags.items()}, model_id=model_id
    )
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


def download_classifier(uri: str, source: str, destination: str | Path) -> Path:
    """A registered version's classifier as the folder train saved (config, weights, tokenizer), which
    evaluate and the model server load, under ``destination``.

    A version logged by `log_classifier` (an MLflow model, ``MLmodel`` at its root) is downloaded and its
    weights and tokenizer saved together with ``save_pretrained`` into ``destination/huggingface``, with the
    ONNX models logged beside them (so the model server runs the variant evaluate scored); a version
    registered before, whose source is that folder itself, is downloaded as it is.
    """
    import mlflow.transformers

    from components.common import modeling

    target = Path(destination)
    local = download(uri, source, target / "mlflow-model")
    if not (local / "MLmodel").is_file():
        return local
    with modeling.quiet_transformers():
        parts = mlflow.transformers.load_model(str(local), return_type="components")
        folder = target / "huggingface"
        parts["model"].save_pretrained(folder)
        parts["tokenizer"].save_pretrained(folder)
    if (local / ONNX_DIR).is_dir():  # logged beside the flavour's files by `log_classifier`
        shutil.copytree(local / ONNX_DIR, folder / ONNX_DIR)
    return folder
