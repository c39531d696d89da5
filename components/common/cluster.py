"""A profile's cluster entries as one typed model: what compile applies, and what a step's pod reads back.

`pipelines.profiles` reads a profile's ``gpu``, ``feast``, ``mlflow``, ``trainjob`` and ``tuning`` entries into
`Cluster` (pydantic: unknown keys, wrong types and bad values fail naming the key), places the compiled tasks with
it, and hands it with the task's image to the tune and train tasks as one environment variable, `ENV` (JSON),
which `Cluster.from_env` reads back in the pod.  The TrainJob (`components.common.trainjob`) and Katib's trials
(`components.tune.engines.katib_trial`) are rendered from it.  Every default of a profile is written here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictInt, ValidationError, field_validator, model_validator

#: The environment variable `pipelines.profiles` sets on the tune and train tasks (JSON of `Cluster`).
ENV = "BERT_KFP_CLUSTER"
TUNING_ENGINES = ("optuna", "katib")
#: Secret keys that become the environment of MLflow steps: MLflow's own client credentials (basic auth
#: or a bearer token) and, for a server that does not proxy artifacts (``--no-serve-artifacts`` with an
#: S3/MinIO artifact root), the S3 credentials and endpoint the client then uploads with.
MLFLOW_SECRET_KEYS = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "MLFLOW_S3_ENDPOINT_URL",
)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _positive(value: int) -> int:
    if value < 1:
        raise ValueError(f"must be a positive integer, got {value!r}")
    return value


class GpuPlacement(Section):
    """Kubernetes placement of the GPU steps (train and tune)."""

    accelerator_type: str
    accelerator_count: StrictInt = 1
    node_selector: dict[str, str] = {}
    tolerations: tuple[dict[str, Any], ...] = ()
    cpu_request: str | None = None
    memory_request: str | None = None
    memory_limit: str | None = None
    #: Size of a memory-backed /dev/shm for PyTorch data loaders (None: none).
    shm_size: str | None = None
    #: Training nodes, each with ``accelerator_count`` GPUs; above 1 the train step runs a Kubeflow Trainer
    #: TrainJob (the profile then needs a ``trainjob`` entry).
    nodes: StrictInt = 1

    @field_validator("accelerator_type")
    @classmethod
    def _named(cls, value: str) -> str:
        if not value:
            raise ValueError("the GPU resource name is needed (e.g. nvidia.com/gpu)")
        return value

    _counts = field_validator("accelerator_count", "nodes")(_positive)

    @field_validator("node_selector", mode="before")
    @classmethod
    def _labels(cls, value: Any) -> Any:  # a label's value is text (YAML reads `true` and `1` otherwise)
        return {k: str(v) for k, v in value.items()} if isinstance(value, dict) else value


class TrainJobSettings(Section):
    """How a multi-node training runs as a Kubeflow Trainer TrainJob (read when ``gpu.nodes`` is above 1)."""

    #: PVC (ReadWriteMany) every training node and the train step's pod mount: checkpoints, model, report.
    shared_pvc: str
    mount_path: str = "/mnt/shared"
    #: The ClusterTrainingRuntime the TrainJob refers to.
    runtime: str = "torch-distributed"
    #: How long the train step waits for the TrainJob (also its activeDeadlineSeconds).
    timeout_seconds: StrictInt = 86400
    #: Namespace of the TrainJob; None: the pipeline pod's own.
    namespace: str | None = None

    _timeout = field_validator("timeout_seconds")(_positive)


class TuningSettings(Section):
    """Which engine the tune step runs: ``optuna`` in its pod, or ``katib`` (an Experiment on the cluster)."""

    engine: str = "optuna"
    #: Namespace of the Katib Experiment; None: the pipeline pod's own.
    namespace: str | None = None
    #: How long the tune step waits for the Experiment.
    timeout_seconds: StrictInt = 86400
    #: Delete the Experiment (and its trials) when it has ended.
    cleanup: bool = True

    _timeout = field_validator("timeout_seconds")(_positive)

    @field_validator("engine")
    @classmethod
    def _engine(cls, value: str) -> str:
        if value not in TUNING_ENGINES:
            raise ValueError(f"{value!r}; valid: {', '.join(TUNING_ENGINES)}")
        return value


class FeastAccess(Section):
    """How steps that use the feature store reach it on a cluster: a PVC, plus settings as environment."""

    pvc: str
    mount_path: str = "/mnt/feast"
    #: ConfigMap whose keys become environment variables (FEAST_REGISTRY_PATH, FEAST_OFFLINE_PATH, ...).
    config_map: str | None = None
    config_keys: tuple[str, ...] = ("FEAST_REGISTRY_PATH", "FEAST_OFFLINE_PATH")
    #: Secret holding FEAST_REDIS_CONNECTION_STRING (it may carry a password).
    secret: str | None = None
    secret_keys: tuple[str, ...] = ("FEAST_REDIS_CONNECTION_STRING",)


class MlflowAccess(Section):
    """How steps that log to MLflow reach the cluster's tracking server (one store every pod shares)."""

    #: Set as MLFLOW_TRACKING_URI on the steps (the pipeline parameter mlflow_tracking_uri still overrides it).
    tracking_uri: str
    #: Secret (in the namespace the pipeline runs in) whose keys become environment variables; None: none.
    secret: str | None = None
    secret_keys: tuple[str, ...] = MLFLOW_SECRET_KEYS
    #: True: the Secret, and each of its keys, may be missing (a token instead of a password, no S3 keys).
    secret_optional: bool = True

    @field_validator("tracking_uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        uri = value.strip()
        if "://" not in uri and not uri.startswith("databricks"):  # `mlflow:5000` parses as scheme `mlflow`
            raise ValueError(
                f"must be a URI such as http://mlflow.<namespace>.svc.cluster.local:5000 (or databricks), not {value!r}"
            )
        return value


class Cluster(Section):
    """A profile's cluster entries; in a pod, with the image of the task (the training image)."""

    image: str = ""
    gpu: GpuPlacement | None = None
    feast: FeastAccess | None = None
    mlflow: MlflowAccess | None = None
    trainjob: TrainJobSettings | None = None
    tuning: TuningSettings = TuningSettings()

    @field_validator("image")
    @classmethod
    def _pinned(cls, value: str) -> str:
        if value.endswith(":latest"):
            raise ValueError(f"a pinned training image is needed, got {value!r}")
        return value

    @model_validator(mode="after")
    def _shared_pvc(self) -> Cluster:
        if self.nodes > 1 and self.trainjob is None:
            raise ValueError(
                f"asks for gpu.nodes {self.nodes} but has no 'trainjob' entry: add trainjob.shared_pvc (a "
                "ReadWriteMany PVC every training node mounts: checkpoints, model and report go there)"
            )
        return self

    @property
    def nodes(self) -> int:
        return self.gpu.nodes if self.gpu else 1

    def to_env(self) -> str:
        """The JSON value of `ENV` (keys sorted: the compiled YAML does not change by accident)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Cluster | None:
        """The cluster in `ENV`, or None where it is not set (local runs, a profile-less compile).

        Raises:
            ValueError: Not JSON, an unknown key or a bad value (``BERT_KFP_CLUSTER: gpu.nodes: …``).
        """
        text = (os.environ if environ is None else environ).get(ENV, "").strip()
        if not text:
            return None
        try:
            return cls.model_validate_json(text)
        except ValidationError as error:
            if error.errors()[0]["type"] == "json_invalid":
                why = error.errors()[0]["msg"]
                raise ValueError(f"{ENV} is not JSON ({why}); it is set by pipelines.profiles") from None
            raise ValueError(f"{ENV}: {error_line(error, cls)}") from None


def parse(cls: type[Section], body: Any) -> Any:
    """``cls`` from its mapping (a profile's entry, a rendering's ``gpu``).

    Raises:
        ValueError: One line naming the key: ``gpu.accelerator_count: must be a positive integer, got 0``.
    """
    try:
        return cls.model_validate(body)
    except ValidationError as error:
        raise ValueError(error_line(error, cls)) from None


def error_line(error: ValidationError, model: type[BaseModel]) -> str:
    """The first problem of a validation as one line naming its key (unknown keys first, all of them)."""
    where, message = problem(error, model)
    return f"{where}: {message}" if where else message


def problem(error: ValidationError, model: type[BaseModel]) -> tuple[str, str]:
    """(key, what is wrong) of the first problem of a validation of ``model`` (unknown keys first, all of them;
    key "" for a rule across keys)."""
    errors = error.errors()
    extra = [e for e in errors if e["type"] == "extra_forbidden"]
    first = extra[0] if extra else errors[0]
    where = ".".join(str(p) for p in first["loc"] if isinstance(p, str))
    message = str(first["msg"]).removeprefix("Value error, ")
    if extra:
        parent = first["loc"][:-1]
        keys = sorted(str(e["loc"][-1]) for e in extra if e["loc"][:-1] == parent)
        where = ".".join(str(p) for p in parent)
        message = f"unknown keys {keys}; valid: {', '.join(_model_at(model, parent).model_fields)}"
    elif first["type"] == "missing":
        message = "is required"
    elif first["type"] in ("dict_type", "model_type", "model_attributes_type"):
        message = "a list of mappings is needed" if isinstance(first["loc"][-1], int) else "a mapping is needed"
    return where, message


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel]:
    """The model whose fields are at ``loc`` under ``model``."""
    for key in loc:
        annotation = model.model_fields[str(key)].annotation
        kinds = (annotation, *getattr(annotation, "__args__", ()))
        model = next(a for a in kinds if isinstance(a, type) and issubclass(a, BaseModel))
    return model
