"""Cluster profiles: where the GPU steps run (accelerators, node selector, tolerations, resources, nodes), how
steps reach the feature store, which MLflow tracking server they log to, and which engine tunes.

Profiles are configuration (`profiles.yaml` beside this file, or a file of your own); components know
nothing of them — placement and access are applied to tasks here, in `pipelines/`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from components.common.cluster import (
    Cluster,
    FeastAccess,
    GpuPlacement,
    MlflowAccess,
    TrainJobSettings,
    TuningSettings,
)
from components.common.cluster import problem as cluster_problem
from pipelines.steps import launchers

DEFAULT_FILE = Path(__file__).with_name("profiles.yaml")
#: The profile `compile` and `submit` use unless told otherwise (a container run's is
#: `pipelines.container_runner.DEFAULT_PROFILE`).
DEFAULT_PROFILE = "onprem"
#: A profile's entries that are its `Cluster` (the rest: description, service_account, sagemaker, serving).
CLUSTER_ENTRIES = ("gpu", "feast", "mlflow", "trainjob", "tuning")

if TYPE_CHECKING:  # pragma: no cover - typing only
    from components.sagemaker.settings import SageMakerSettings


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
        try:  # the cluster entries: one model, every default and rule in components.common.cluster
            entries = Cluster.model_validate({k: body[k] for k in CLUSTER_ENTRIES if body.get(k) is not None})
        except ValidationError as err:
            where, message = cluster_problem(err, Cluster)
            bad = f"has a bad {where!r} entry: " if where else ""
            raise ValueError(f"Profile {name!r} in {str(path)!r} {bad}{message}") from None
        serving = _section(name, path, "serving", ServingSettings, (body or {}).get("serving"))
        sagemaker = _sagemaker(name, path, (body or {}).get("sagemaker"), entries.gpu is not None)
        profiles[name] = Profile(
            name=name,
            description=(body or {}).get("description", ""),
            gpu=entries.gpu,
            feast=entries.feast,
            mlflow=entries.mlflow,
            trainjob=entries.trainjob,
            tuning=entries.tuning,
            service_account=str((body or {}).get("service_account") or ""),
            sagemaker=sagemaker,
            serving=serving,
        )
    return profiles


def cluster(profile: Profile, image: str) -> Cluster:
    """The profile's cluster entries with the task's image: what the steps read in their pods
    (`components.common.cluster.ENV`)."""
    sections = {k: getattr(profile, k) for k in CLUSTER_ENTRIES}
    return Cluster(image=image, **sections)


#: The steps whose work a profile can send elsewhere on the cluster (component name → whether it does): their
#: pod then only launches and waits, and gets no GPU itself.  Each step's descriptor says (`pipelines.steps`).
LAUNCHERS = launchers()


def place_on_gpu(task: Any, profile: Profile | None) -> Any:
    """Apply the profile's GPU placement to a pipeline task, and hand it the profile's cluster facts.

    The task gets `components.common.cluster.ENV` (JSON: GPU placement, nodes, feature store and MLflow access,
    the shared PVC, the tuning engine, the task's image). A task in `LAUNCHERS` whose work the profile sends
    elsewhere (train with ``gpu.nodes`` above 1: a TrainJob; tune with the katib engine: an Experiment) gets
    no GPU; the train task then mounts the shared PVC it collects the model from. Otherwise the task runs on
    a GPU node as the profile says (nothing more for a CPU-only profile).
    """
    from kfp import kubernetes

    from components.common.cluster import ENV

    if profile is None:
        return task
    image = task.component_spec.implementation.container.image
    task.set_env_variable(ENV, cluster(profile, image).to_env())
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
