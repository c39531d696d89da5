"""The cluster placement a step reads from its environment, and Kubeflow Trainer ``TrainJob``s rendered from it.

`pipelines.profiles` serialises a profile's cluster facts (GPU placement and node count, feature store and MLflow
access, the shared PVC, the tuning engine) into one environment variable, `ENV`, of the tune and train tasks;
`ClusterPlacement.from_env` reads it back in the pod.  Two steps use it: train (a multi-node profile: the step
runs a ``TrainJob``) and tune (Katib trials: a batch Job, or a ``TrainJob`` on a multi-node profile), hence
this module in ``common``.

`render_trainjob` writes a ``trainer.kubeflow.org/v1alpha1`` ``TrainJob`` on the ``torch-distributed``
ClusterTrainingRuntime (Kubeflow Trainer v2.3): ``trainer.numNodes``, ``numProcPerNode`` and ``resourcesPerNode``
from the GPU placement, the training CLI under ``torchrun`` (``python -m torch.distributed.run``: the runtime's
torch plugin sets ``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR`` and
``PET_MASTER_PORT``, which torchrun reads as its options), the environment of the feature store and MLflow in
``trainer.env`` (the only place the runtime's ``node`` container takes environment from), and the node
selector, tolerations, volumes, mounts and the security contexts of the "restricted" Pod Security Standard
as a ``runtimePatches`` entry.  It is checked against the
``kubeflow-trainer-api`` models: a field they do not know or a value of the wrong type is a `ValueError`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from components.common import kube
from components.common.tracking import ENV_TRACKING_URI

Json = dict[str, Any]

#: The environment variable `pipelines.profiles` sets on the tune and train tasks (JSON of `ClusterPlacement`).
ENV = "BERT_KFP_CLUSTER"
GROUP, VERSION, PLURAL, KIND = "trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"
#: The torch-distributed runtime's replicated job and container (its pods carry the JobSet labels below).
NODE = "node"
#: Who owns the TrainJob's runtimePatches entry.
PATCH_MANAGER = "bert-kfp.github.io/train"
#: Labels of the node-0 pod of a TrainJob (JobSet and indexed Job labels): its logs show the training progress.
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
REPLICATED_JOB_LABEL = "jobset.sigs.k8s.io/replicatedjob-name"
JOB_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
#: torchrun as a module (the image's ``python``); its options come from the runtime's PET_* variables.
TORCHRUN = ("python", "-m", "torch.distributed.run")
TRAIN_MODULE = "components.train"
GPU_KEYS = frozenset(
    {
        "accelerator_type",
        "accelerator_count",
        "node_selector",
        "tolerations",
        "cpu_request",
        "memory_request",
        "memory_limit",
        "shm_size",
    }
)
TUNING_ENGINES = ("optuna", "katib")
#: What the "restricted" Pod Security Standard asks of a pod and its containers (the image runs as a non-root,
#: numeric user): the namespace of the project's manifests warns about it, manifests/overlays/restricted enforces it.
POD_SECURITY: Json = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY: Json = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


@dataclass(frozen=True)
class ClusterPlacement:
    """Where and how a step's cluster work runs: what a profile says, as the pod reads it from `ENV`."""

    #: The training image (the image of the task itself, as compiled).
    image: str
    #: Training nodes; above 1 the train step runs a TrainJob.
    nodes: int = 1
    #: A profile's ``gpu`` entry without ``nodes`` (`GPU_KEYS`); None: CPU only.
    gpu: Mapping[str, Any] | None = None
    #: A profile's ``feast`` entry (pvc, mount_path, config_map, config_keys, secret, secret_keys), or None.
    feast: Mapping[str, Any] | None = None
    #: A profile's ``mlflow`` entry (tracking_uri, secret, secret_keys, secret_optional), or None.
    mlflow: Mapping[str, Any] | None = None
    #: PVC every training node and the step's pod mount (ReadWriteMany): checkpoints, model, report.
    shared_pvc: str = ""
    shared_mount_path: str = "/mnt/shared"
    #: ClusterTrainingRuntime the TrainJob refers to.
    runtime: str = "torch-distributed"
    #: How long the step waits for a TrainJob (also its activeDeadlineSeconds).
    timeout_seconds: int = 86400
    #: Namespace of TrainJobs; empty: the pod's own.
    namespace: str = ""
    #: The tune step's engine and its Katib settings.
    tuning_engine: str = "optuna"
    tuning_namespace: str = ""
    tuning_timeout_seconds: int = 86400
    tuning_cleanup: bool = True

    def __post_init__(self) -> None:
        if not self.image or self.image.endswith(":latest"):
            raise ValueError(f"{ENV}: image: a pinned training image is needed, got {self.image!r}")
        _positive("nodes", self.nodes)
        _positive("timeout_seconds", self.timeout_seconds)
        _positive("tuning_timeout_seconds", self.tuning_timeout_seconds)
        if self.tuning_engine not in TUNING_ENGINES:
            raise ValueError(f"{ENV}: tuning_engine {self.tuning_engine!r}; valid: {', '.join(TUNING_ENGINES)}")
        if self.nodes > 1 and not self.shared_pvc:
            raise ValueError(
                f"{ENV}: {self.nodes} training nodes need a shared PVC (the profile's trainjob.shared_pvc): every "
                "node writes its checkpoint state there and the step collects the model from it"
            )
        if self.nodes > 1 and not self.gpu:
            raise ValueError(f"{ENV}: {self.nodes} training nodes need a GPU placement (the profile's gpu entry)")
        if self.gpu is not None:
            container_fields(self.gpu)  # checks the keys and the accelerator

    def to_env(self) -> str:
        """The JSON value of `ENV`."""
        return json.dumps(asdict(self), sort_keys=True, default=list)

    @classmethod
    def from_json(cls, text: str) -> ClusterPlacement:
        """Parse `ENV`'s value.

        Raises:
            ValueError: Not JSON, an unknown key, or a bad value (named).
        """
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{ENV} is not JSON ({error}); it is set by pipelines.profiles") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{ENV} must be a JSON object, got {type(raw).__name__}")
        unknown = sorted(set(raw) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"{ENV}: unknown keys {unknown}; valid: {', '.join(f.name for f in fields(cls))}")
        try:
            return cls(**raw)
        except TypeError as error:
            raise ValueError(f"{ENV}: {error}") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClusterPlacement | None:
        """The placement in `ENV`, or None where it is not set (local runs, a profile-less compile)."""
        text = (os.environ if environ is None else environ).get(ENV, "").strip()
        return cls.from_json(text) if text else None


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{ENV}: {name} must be a positive integer, got {value!r}")


# --- pod pieces (a TrainJob's nodes and Katib's batch Job trials) ----------------------------------------------


def container_fields(gpu: Mapping[str, Any] | None) -> tuple[Json, Json]:
    """(resources, pod fields: nodeSelector / tolerations) of a GPU placement; ({}, {}) without one.

    Raises:
        ValueError: An unknown key, no accelerator type, a bad accelerator count.
    """
    if not gpu:
        return {}, {}
    unknown = sorted(set(gpu) - GPU_KEYS)
    if unknown:
        raise ValueError(f"gpu: unknown keys {unknown}; valid: {', '.join(sorted(GPU_KEYS))}")
    if not gpu.get("accelerator_type"):
        raise ValueError("gpu.accelerator_type: the GPU resource name is needed (e.g. nvidia.com/gpu)")
    count = gpu.get("accelerator_count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"gpu.accelerator_count: must be a positive integer, got {count!r}")
    limits: Json = {gpu["accelerator_type"]: str(count)}
    requests: Json = {}
    if gpu.get("memory_limit"):
        limits["memory"] = gpu["memory_limit"]
    if gpu.get("cpu_request"):
        requests["cpu"] = gpu["cpu_request"]
    if gpu.get("memory_request"):
        requests["memory"] = gpu["memory_request"]
    resources: Json = {"limits": limits} | ({"requests": requests} if requests else {})
    pod: Json = {}
    if gpu.get("node_selector"):
        pod["nodeSelector"] = {k: str(v) for k, v in gpu["node_selector"].items()}
    if gpu.get("tolerations"):
        pod["tolerations"] = [dict(t) for t in gpu["tolerations"]]
    return resources, pod


def volumes(placement: ClusterPlacement, *, shared: bool) -> tuple[list[Json], list[Json]]:
    """(volumes, volume mounts): the feature store's PVC, the shared PVC (``shared``) and a memory /dev/shm."""
    vols: list[Json] = []
    mounts: list[Json] = []
    if placement.feast:
        vols.append({"name": "feast-store", "persistentVolumeClaim": {"claimName": placement.feast["pvc"]}})
        mounts.append({"name": "feast-store", "mountPath": placement.feast.get("mount_path", "/mnt/feast")})
    if shared and placement.shared_pvc:
        vols.append({"name": "shared", "persistentVolumeClaim": {"claimName": placement.shared_pvc}})
        mounts.append({"name": "shared", "mountPath": placement.shared_mount_path})
    if placement.gpu and placement.gpu.get("shm_size"):
        vols.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": placement.gpu["shm_size"]}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    return vols, mounts


def environment(placement: ClusterPlacement) -> list[Json]:
    """The training's environment: the feature store's settings (ConfigMap, Secret) and MLflow's URI and
    credentials (an optional Secret), as `pipelines.profiles` gives them to a task."""
    env: list[Json] = []
    feast = placement.feast or {}
    if feast.get("config_map"):
        for key in feast.get("config_keys", ()):
            ref = {"name": feast["config_map"], "key": key, "optional": True}
            env.append({"name": key, "valueFrom": {"configMapKeyRef": ref}})
    if feast.get("secret"):
        for key in feast.get("secret_keys", ()):
            env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": feast["secret"], "key": key}}})
    mlflow = placement.mlflow or {}
    if mlflow.get("tracking_uri"):
        env.append({"name": ENV_TRACKING_URI, "value": str(mlflow["tracking_uri"]).strip()})
    if mlflow.get("secret"):
        optional = bool(mlflow.get("secret_optional", True))
        for key in mlflow.get("secret_keys", ()):
            ref = {"name": mlflow["secret"], "key": key, "optional": optional}
            env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    return env


# --- the TrainJob ----------------------------------------------------------------------------------------------


def command(training_argv: Sequence[str]) -> list[str]:
    """The training container's command: the training CLI under torchrun (options from the PET_* variables)."""
    return [*TORCHRUN, "-m", TRAIN_MODULE, *training_argv]


def render_trainjob(
    placement: ClusterPlacement,
    training_argv: Sequence[str],
    *,
    name: str | None,
    namespace: str | None,
    labels: Mapping[str, str] | None = None,
) -> Json:
    """A TrainJob running the training CLI on ``placement.nodes`` nodes, validated with ``kubeflow-trainer-api``.

    Args:
        placement: Nodes, GPUs per node, resources, node selector, tolerations, PVCs, environment, image.
        training_argv: The training CLI's options (``--model-dir …``); the shared PVC is mounted at
            ``placement.shared_mount_path`` on every node.
        name: The TrainJob's name; None inside a Katib trial template (Katib names each trial's).
        namespace: Its namespace (None: likewise).
        labels: Labels of the TrainJob.

    Raises:
        ValueError: A bad placement, or a field the Trainer's models refuse (named).
    """
    resources, pod = container_fields(placement.gpu)
    vols, mounts = volumes(placement, shared=True)
    gpus = int((placement.gpu or {}).get("accelerator_count", 1))
    trainer: Json = {
        "image": placement.image,
        "command": command(training_argv),
        "numNodes": placement.nodes,
        "numProcPerNode": gpus,
    }
    if resources:
        trainer["resourcesPerNode"] = resources
    env = environment(placement)
    if env:
        trainer["env"] = env
    node: Json = {"name": NODE, "securityContext": CONTAINER_SECURITY} | ({"volumeMounts": mounts} if mounts else {})
    pod_spec: Json = pod | {"securityContext": POD_SECURITY, "containers": [node]} | ({"volumes": vols} if vols else {})
    spec: Json = {
        "runtimeRef": {"name": placement.runtime, "apiGroup": GROUP, "kind": "ClusterTrainingRuntime"},
        "trainer": trainer,
        "activeDeadlineSeconds": placement.timeout_seconds,
    }
    replicated = {"name": NODE, "template": {"spec": {"template": {"spec": pod_spec}}}}
    template = {"spec": {"replicatedJobs": [replicated]}}
    spec["runtimePatches"] = [{"manager": PATCH_MANAGER, "trainingRuntimeSpec": {"template": template}}]
    metadata: Json = {}
    if name:
        metadata["name"] = name
    if namespace:
        metadata["namespace"] = namespace
    if labels:
        metadata["labels"] = dict(labels)
    job: Json = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND}
    if metadata:
        job["metadata"] = metadata
    job["spec"] = spec
    validate_trainjob(job)
    return job


def validate_trainjob(job: Mapping[str, Any]) -> None:
    """Check ``job`` with Kubeflow Trainer's models: types, required fields, and no field they do not know.

    Raises:
        ValueError: Naming the first refused field (``spec.trainer.numNodes: …``).
    """
    import pydantic
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

    try:  # from_dict, not model_validate: it reads quantities ("8Gi") into their one-of wrappers
        model = TrainerV1alpha1TrainJob.from_dict(dict(job))
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"TrainJob: {where}: {first['msg']} (got {first.get('input')!r})") from None
    except ValueError as error:  # a one-of wrapper's own message (a quantity that is neither text nor number)
        raise ValueError(f"TrainJob: {str(error).splitlines()[0]}") from None
    assert model is not None
    unknown = kube.dropped_fields(dict(job), model.to_dict())
    if unknown:
        raise ValueError(f"TrainJob: unknown field {unknown[0]} (Kubeflow Trainer's models do not have it)")
