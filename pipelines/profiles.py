"""Cluster profiles: where the GPU steps run (accelerators, node selector, tolerations, resources, nodes), how
steps reach the feature store, which MLflow tracking server they log to, and which engine tunes.

Profiles are configuration (`profiles.yaml` beside this file, or a file of your own); components know
nothing of them — placement and access are applied to tasks here, in `pipelines/`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.steps import launchers

DEFAULT_FILE = Path(__file__).with_name("profiles.yaml")
#: The profile `compile` and `submit` use unless told otherwise (a container run's is
#: `pipelines.container_runner.DEFAULT_PROFILE`).
DEFAULT_PROFILE = "onprem"

if TYPE_CHECKING:  # pragma: no cover - typing only
    from components.sagemaker.settings import SageMakerSettings


@dataclass(frozen=True)
class GpuPlacement:
    """Kubernetes placement of one GPU step."""

    accelerator_type: str
    accelerator_count: int = 1
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    cpu_request: str | None = None
    memory_request: str | None = None
    memory_limit: str | None = None
    #: Size of a memory-backed /dev/shm for PyTorch data loaders (None: none).
    shm_size: str | None = None
    #: Training nodes, each with ``accelerator_count`` GPUs; above 1 the train step runs a Kubeflow Trainer
    #: TrainJob (the profile then needs a ``trainjob`` entry).
    nodes: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.nodes, bool) or not isinstance(self.nodes, int) or self.nodes < 1:
            raise ValueError(f"nodes must be a positive integer, got {self.nodes!r}")
        if not self.accelerator_type:
            raise ValueError("accelerator_type is needed (the GPU resource name, e.g. nvidia.com/gpu)")


@dataclass(frozen=True)
class TrainJobSettings:
    """How a multi-node training runs as a Kubeflow Trainer TrainJob (read when ``gpu.nodes`` is above 1)."""

    #: PVC (ReadWriteMany) every training node and the train step's pod mount: checkpoints, model, report.
    shared_pvc: str
    mount_path: str = "/mnt/shared"
    #: The ClusterTrainingRuntime the TrainJob refers to.
    runtime: str = "torch-distributed"
    #: How long the train step waits for the TrainJob (also its activeDeadlineSeconds).
    timeout_seconds: int = 86400
    #: Namespace of the TrainJob; None: the pipeline pod's own.
    namespace: str | None = None


@dataclass(frozen=True)
class TuningSettings:
    """Which engine the tune step runs: ``optuna`` in its pod, or ``katib`` (an Experiment on the cluster)."""

    engine: str = "optuna"
    #: Namespace of the Katib Experiment; None: the pipeline pod's own.
    namespace: str | None = None
    #: How long the tune step waits for the Experiment.
    timeout_seconds: int = 86400
    #: Delete the Experiment (and its trials) when it has ended.
    cleanup: bool = True

    def __post_init__(self) -> None:
        from components.common.trainjob import TUNING_ENGINES

        if self.engine not in TUNING_ENGINES:
            raise ValueError(f"engine {self.engine!r}; valid: {', '.join(TUNING_ENGINES)}")


@dataclass(frozen=True)
class FeastAccess:
    """How steps that use the feature store reach it on a cluster: a PVC, plus settings as environment."""

    pvc: str
    mount_path: str = "/mnt/feast"
    #: ConfigMap whose keys become environment variables (FEAST_REGISTRY_PATH, FEAST_OFFLINE_PATH, ...).
    config_map: str | None = None
    config_keys: tuple[str, ...] = ("FEAST_REGISTRY_PATH", "FEAST_OFFLINE_PATH")
    #: Secret holding FEAST_REDIS_CONNECTION_STRING (it may carry a password).
    secret: str | None = None
    secret_keys: tuple[str, ...] = ("FEAST_REDIS_CONNECTION_STRING",)


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


@dataclass(frozen=True)
class MlflowAccess:
    """How steps that log to MLflow reach the cluster's tracking server (one store every pod shares)."""

    #: Set as MLFLOW_TRACKING_URI on the steps (the pipeline parameter mlflow_tracking_uri still overrides it).
    tracking_uri: str
    #: Secret (in the namespace the pipeline runs in) whose keys become environment variables; None: none.
    secret: str | None = None
    secret_keys: tuple[str, ...] = MLFLOW_SECRET_KEYS
    #: True: the Secret, and each of its keys, may be missing (a token instead of a password, no S3 keys).
    secret_optional: bool = True

    def __post_init__(self) -> None:
        uri = self.tracking_uri.strip() if isinstance(self.tracking_uri, str) else ""
        if "://" not in uri and not uri.startswith("databricks"):  # `mlflow:5000` parses as scheme `mlflow`
            raise ValueError(
                "tracking_uri must be a URI such as http://mlflow.<namespace>.svc.cluster.local:5000 (or databricks), "
                f"not {self.tracking_uri!r}"
            )


@dataclass(frozen=True)
class ServingSettings:
    """The KServe predictor of a model that passes the gate (``deploy_backend`` kserve): the compiled pipeline's
    defaults of ``kserve_service_account`` and ``kserve_resources`` (`components.deploy.config.DeployConfig`)."""

    #: The ServiceAccount of the predictor's pods, with the model storage's credentials (manifests/: bert-kserve).
    service_account: str = ""
    #: The model server container's resources: ``{requests: {cpu: …, memory: …}, limits: {…}}``.
    resources: dict[str, dict[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from components.deploy.config import DeployConfig

        DeployConfig(kserve_service_account=self.service_account, kserve_resources=self.resources_json()).validate()

    def resources_json(self) -> str:
        """``resources`` as the one-line JSON of the ``kserve_resources`` parameter ('' when none)."""
        import json

        if not isinstance(self.resources, dict):
            raise ValueError(f"resources must be a mapping (requests, limits), got {self.resources!r}")
        return json.dumps(self.resources, separators=(",", ":")) if self.resources else ""


@dataclass(frozen=True)
class Profile:
    name: str
    description: str = ""
    gpu: GpuPlacement | None = None
    feast: FeastAccess | None = None
    mlflow: MlflowAccess | None = None
    trainjob: TrainJobSettings | None = None
    tuning: TuningSettings = field(default_factory=TuningSettings)
    #: The ServiceAccount a submitted run's pods use (manifests/ creates `bert-pipeline` with the Role the
    #: steps need); empty: the KFP installation's default.
    service_account: str = ""
    #: The SageMaker target's settings (``sagemaker:``: region, role, S3 prefix, images, instances, canary, …);
    #: None: the profile compiles for the kfp target only.
    sagemaker: SageMakerSettings | None = None
    #: The KServe predictor's ServiceAccount and resources (``serving:``); None: neither is set.
    serving: ServingSettings | None = None

    @property
    def nodes(self) -> int:
        return self.gpu.nodes if self.gpu else 1


def _section(name: str, path: Path, key: str, cls: type, body: Any) -> Any:
    """The profile's entry ``key`` as ``cls`` (None when absent)."""
    if body is None:
        return None
    if not isinstance(body, dict):
        raise ValueError(f"Profile {name!r} in {str(path)!r} has a bad {key!r} entry: a mapping is needed")
    try:
        return cls(**body)
    except (TypeError, ValueError) as err:
        raise ValueError(f"Profile {name!r} in {str(path)!r} has a bad {key!r} entry: {err}") from err


def _sagemaker(name: str, path: Path, body: Any, gpu: bool) -> SageMakerSettings | None:
    """The profile's ``sagemaker`` entry (None when absent), checked with the rest of the profile.

    Raises:
        ValueError: One line naming the profile and the key (``sagemaker.canary.size_percent: …``).
    """
    if body is None:
        return None
    from components.sagemaker import settings

    try:
        section = settings.parse(body)
        settings.check_for_profile(section, gpu)
    except ValueError as err:
        raise ValueError(f"Profile {name!r} in {str(path)!r}: {err}") from None
    return section


def load_profiles(path: str | Path = DEFAULT_FILE) -> dict[str, Profile]:
    """Read every profile of a profiles file.

    Raises:
        ValueError: the file is missing or malformed (naming the profile and key).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Profiles file {str(path)!r} does not exist.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as err:
        raise ValueError(f"Profiles file {str(path)!r} cannot be read ({err.strerror}).") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"Profiles file {str(path)!r} is not UTF-8 text (byte {err.start}).") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"Profiles file {str(path)!r} is not valid YAML{at}: {problem}.") from None
    if not isinstance(raw, dict):
        raise ValueError(
            f"Profiles file {str(path)!r} holds a {type(raw).__name__}; it must be a mapping of profile name to "
            "profile (onprem: {gpu: …, feast: …}, …)."
        )
    profiles = {}
    for name, body in raw.items():
        if body is not None and not isinstance(body, dict):
            raise ValueError(
                f"Profile {name!r} in {str(path)!r} is a {type(body).__name__}; it must be a mapping "
                "(description, gpu, feast, mlflow, trainjob, tuning, service_account, serving)."
            )
        body = body or {}
        gpu = (body or {}).get("gpu")
        if gpu is not None and not isinstance(gpu, dict):
            raise ValueError(f"Profile {name!r} in {str(path)!r} has a bad 'gpu' entry: a mapping is needed")
        if gpu is not None and not isinstance(gpu.get("node_selector") or {}, dict):
            raise ValueError(f"Profile {name!r} in {str(path)!r} has a bad 'gpu.node_selector': a mapping is needed")
        tolerations = (gpu or {}).get("tolerations") or []
        if not isinstance(tolerations, list) or not all(isinstance(t, dict) for t in tolerations):
            raise ValueError(
                f"Profile {name!r} in {str(path)!r} has a bad 'gpu.tolerations': a list of mappings is needed "
                "({key: …, operator: …, effect: …})"
            )
        try:
            placement = (
                None if gpu is None else GpuPlacement(**{**gpu, "tolerations": tuple(gpu.get("tolerations") or ())})
            )
        except (TypeError, ValueError) as err:
            raise ValueError(f"Profile {name!r} in {str(path)!r} has a bad 'gpu' entry: {err}") from err
        feast = (body or {}).get("feast")
        try:
            access = (
                None
                if feast is None
                else FeastAccess(
                    **{**feast, **{k: tuple(feast[k]) for k in ("config_keys", "secret_keys") if k in feast}}
                )
            )
        except (TypeError, ValueError) as err:
            raise ValueError(f"Profile {name!r} in {str(path)!r} has a bad 'feast' entry: {err}") from err
        mlflow = (body or {}).get("mlflow")
        try:
            tracking = (
                None
                if mlflow is None
                else MlflowAccess(**{**mlflow, **{k: tuple(mlflow[k]) for k in ("secret_keys",) if k in mlflow}})
            )
        except (TypeError, ValueError) as err:
            raise ValueError(f"Profile {name!r} in {str(path)!r} has a bad 'mlflow' entry: {err}") from err
        trainjob = _section(name, path, "trainjob", TrainJobSettings, (body or {}).get("trainjob"))
        tuning = _section(name, path, "tuning", TuningSettings, (body or {}).get("tuning")) or TuningSettings()
        serving = _section(name, path, "serving", ServingSettings, (body or {}).get("serving"))
        if placement is not None and placement.nodes > 1 and trainjob is None:
            raise ValueError(
                f"Profile {name!r} in {str(path)!r} asks for gpu.nodes {placement.nodes} but has no 'trainjob' entry: "
                "add trainjob.shared_pvc (a ReadWriteMany PVC every training node mounts)"
            )
        sagemaker = _sagemaker(name, path, (body or {}).get("sagemaker"), placement is not None)
        profiles[name] = Profile(
            name=name,
            description=(body or {}).get("description", ""),
            gpu=placement,
            feast=access,
            mlflow=tracking,
            trainjob=trainjob,
            tuning=tuning,
            service_account=str((body or {}).get("service_account") or ""),
            sagemaker=sagemaker,
            serving=serving,
        )
    return profiles


def cluster_placement(profile: Profile, image: str) -> Any:
    """The profile's cluster facts as the steps read them in their pods (`components.common.trainjob.ENV`)."""
    from dataclasses import asdict

    from components.common.trainjob import ClusterPlacement

    gpu = {k: v for k, v in asdict(profile.gpu).items() if k != "nodes" and v is not None} if profile.gpu else None
    if gpu is not None:
        gpu["tolerations"] = [dict(t) for t in gpu["tolerations"]]
    settings: dict[str, Any] = {}
    if profile.trainjob is not None:
        job = profile.trainjob
        settings = {
            "shared_pvc": job.shared_pvc,
            "shared_mount_path": job.mount_path,
            "runtime": job.runtime,
            "timeout_seconds": job.timeout_seconds,
            "namespace": job.namespace or "",
        }
    tuning = profile.tuning
    return ClusterPlacement(
        image=image,
        nodes=profile.nodes,
        gpu=gpu,
        feast=asdict(profile.feast) if profile.feast else None,
        mlflow=asdict(profile.mlflow) if profile.mlflow else None,
        tuning_engine=tuning.engine,
        tuning_namespace=tuning.namespace or "",
        tuning_timeout_seconds=tuning.timeout_seconds,
        tuning_cleanup=tuning.cleanup,
        **settings,
    )


#: The steps whose work a profile can send elsewhere on the cluster (component name → whether it does): their
#: pod then only launches and waits, and gets no GPU itself.  Each step's descriptor says (`pipelines.steps`).
LAUNCHERS = launchers()


def place_on_gpu(task: Any, profile: Profile | None) -> Any:
    """Apply the profile's GPU placement to a pipeline task, and hand it the profile's cluster facts.

    The task gets `components.common.trainjob.ENV` (JSON: GPU placement, nodes, feature store and MLflow access,
    the shared PVC, the tuning engine, the task's image). A task in `LAUNCHERS` whose work the profile sends
    elsewhere (train with ``gpu.nodes`` above 1: a TrainJob; tune with the katib engine: an Experiment) gets
    no GPU; the train task then mounts the shared PVC it collects the model from. Otherwise the task runs on
    a GPU node as the profile says (nothing more for a CPU-only profile).
    """
    from kfp import kubernetes

    from components.common.trainjob import ENV

    if profile is None:
        return task
    image = task.component_spec.implementation.container.image
    task.set_env_variable(ENV, cluster_placement(profile, image).to_env())
    launches = LAUNCHERS.get(task.component_spec.name, lambda _: False)(profile)
    if launches and task.component_spec.name == "train-classifier" and profile.trainjob is not None:
        kubernetes.mount_pvc(task, pvc_name=profile.trainjob.shared_pvc, mount_path=profile.trainjob.mount_path)
    gpu = profile.gpu
    if gpu is None or launches:
        return task
    task.set_accelerator_type(gpu.accelerator_type).set_accelerator_limit(gpu.accelerator_count)
    for key, value in gpu.node_selector.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=str(value))
    for toleration in gpu.tolerations:
        kubernetes.add_toleration(task, **toleration)
    if gpu.cpu_request:
        task.set_cpu_request(gpu.cpu_request)
    if gpu.memory_request:
        task.set_memory_request(gpu.memory_request)
    if gpu.memory_limit:
        task.set_memory_limit(gpu.memory_limit)
    if gpu.shm_size:
        kubernetes.empty_dir_mount(
            task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=gpu.shm_size
        )
    return task


def use_feature_store(task: Any, profile: Profile | None) -> Any:
    """Give a task the cluster's feature store: the PVC mounted, its settings as environment variables."""
    from kfp import kubernetes

    access = profile.feast if profile else None
    if access is None:
        return task
    kubernetes.mount_pvc(task, pvc_name=access.pvc, mount_path=access.mount_path)
    if access.config_map:
        kubernetes.use_config_map_as_env(task, access.config_map, {k: k for k in access.config_keys}, optional=True)
    if access.secret:
        kubernetes.use_secret_as_env(task, access.secret, {k: k for k in access.secret_keys})
    return task


def use_mlflow(task: Any, profile: Profile | None) -> Any:
    """Point a task at the cluster's MLflow tracking server: MLFLOW_TRACKING_URI, and credentials from a Secret.

    Every step runs in a pod of its own; without this a step has no tracking URI and stops (see
    `components.common.tracking.resolve_tracking_uri`) instead of logging into a store private to its pod.
    """
    from kfp import kubernetes

    from components.common.tracking import ENV_TRACKING_URI, KFP_RUN_NAME_FIELD, RUN_NAME_ENV

    access = profile.mlflow if profile else None
    if access is None:
        return task
    task.set_env_variable(ENV_TRACKING_URI, access.tracking_uri.strip())
    kubernetes.use_field_path_as_env(task, RUN_NAME_ENV, KFP_RUN_NAME_FIELD)  # the MLflow run's name: the KFP run's
    if access.secret:
        kubernetes.use_secret_as_env(
            task, access.secret, {k: k for k in access.secret_keys}, optional=access.secret_optional
        )
    return task
