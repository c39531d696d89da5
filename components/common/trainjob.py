"""Kubeflow Trainer ``TrainJob``s and the pod pieces of the cluster's training, rendered from the profile's `Cluster`.

Two steps use it: train (a multi-node profile: the step runs a ``TrainJob``) and tune (Katib trials: a batch Job, or
a ``TrainJob`` on a multi-node profile), hence this module in ``common``; both read the profile from their
environment (`components.common.cluster.Cluster.from_env`).

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

from collections.abc import Mapping, Sequence
from typing import Any

from components.common import kube
from components.common.cluster import Cluster, GpuPlacement
from components.common.tracking import ENV_TRACKING_URI
from components.common.training_options import MODULE

Json = dict[str, Any]

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
#: What the "restricted" Pod Security Standard asks of a pod and its containers (the image runs as a non-root,
#: numeric user): the namespace of the project's manifests warns about it, manifests/overlays/restricted enforces it.
POD_SECURITY: Json = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY: Json = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


# --- pod pieces (a TrainJob's nodes and Katib's batch Job trials) ----------------------------------------------


def container_fields(gpu: GpuPlacement | None) -> tuple[Json, Json]:
    """(resources, pod fields: nodeSelector / tolerations) of a GPU placement; ({}, {}) without one."""
    if gpu is None:
        return {}, {}
    limits: Json = {gpu.accelerator_type: str(gpu.accelerator_count)}
    requests: Json = {}
    if gpu.memory_limit:
        limits["memory"] = gpu.memory_limit
    if gpu.cpu_request:
        requests["cpu"] = gpu.cpu_request
    if gpu.memory_request:
        requests["memory"] = gpu.memory_request
    resources: Json = {"limits": limits} | ({"requests": requests} if requests else {})
    pod: Json = {}
    if gpu.node_selector:
        pod["nodeSelector"] = dict(gpu.node_selector)
    if gpu.tolerations:
        pod["tolerations"] = [dict(t) for t in gpu.tolerations]
    return resources, pod


def volumes(cluster: Cluster, *, shared: bool) -> tuple[list[Json], list[Json]]:
    """(volumes, volume mounts): the feature store's PVC, the shared PVC (``shared``) and a memory /dev/shm."""
    vols: list[Json] = []
    mounts: list[Json] = []
    if cluster.feast:
        vols.append({"name": "feast-store", "persistentVolumeClaim": {"claimName": cluster.feast.pvc}})
        mounts.append({"name": "feast-store", "mountPath": cluster.feast.mount_path})
    if shared and cluster.trainjob:
        vols.append({"name": "shared", "persistentVolumeClaim": {"claimName": cluster.trainjob.shared_pvc}})
        mounts.append({"name": "shared", "mountPath": cluster.trainjob.mount_path})
    if cluster.gpu and cluster.gpu.shm_size:
        vols.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": cluster.gpu.shm_size}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    return vols, mounts


def environment(cluster: Cluster) -> list[Json]:
    """The training's environment: the feature store's settings (ConfigMap, Secret) and MLflow's URI and
    credentials (an optional Secret), as `pipelines.profiles` gives them to a task."""
    env: list[Json] = []
    feast, mlflow = cluster.feast, cluster.mlflow
    if feast and feast.config_map:
        for key in feast.config_keys:
            ref = {"name": feast.config_map, "key": key, "optional": True}
            env.append({"name": key, "valueFrom": {"configMapKeyRef": ref}})
    if feast and feast.secret:
        for key in feast.secret_keys:
            env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": feast.secret, "key": key}}})
    if mlflow:
        env.append({"name": ENV_TRACKING_URI, "value": mlflow.tracking_uri.strip()})
    if mlflow and mlflow.secret:
        for key in mlflow.secret_keys:
            ref = {"name": mlflow.secret, "key": key, "optional": mlflow.secret_optional}
            env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    return env


# --- the TrainJob ----------------------------------------------------------------------------------------------


def command(training_argv: Sequence[str]) -> list[str]:
    """The training container's command: the training CLI under torchrun (options from the PET_* variables)."""
    return [*TORCHRUN, "-m", MODULE, *training_argv]


def render_trainjob(
    cluster: Cluster,
    training_argv: Sequence[str],
    *,
    name: str | None,
    namespace: str | None,
    labels: Mapping[str, str] | None = None,
) -> Json:
    """A TrainJob running the training CLI on ``cluster.nodes`` nodes, validated with ``kubeflow-trainer-api``.

    Args:
        cluster: Nodes, GPUs per node, resources, node selector, tolerations, PVCs, environment, image.
        training_argv: The training CLI's options (``--model-dir …``); the shared PVC is mounted at
            ``cluster.trainjob.mount_path`` on every node.
        name: The TrainJob's name; None inside a Katib trial template (Katib names each trial's).
        namespace: Its namespace (None: likewise).
        labels: Labels of the TrainJob.

    Raises:
        ValueError: No image or no ``trainjob`` entry, or a field the Trainer's models refuse (named).
    """
    if not cluster.image or cluster.trainjob is None:
        raise ValueError("TrainJob: the profile's training image and trainjob entry (shared_pvc) are needed")
    resources, pod = container_fields(cluster.gpu)
    vols, mounts = volumes(cluster, shared=True)
    trainer: Json = {
        "image": cluster.image,
        "command": command(training_argv),
        "numNodes": cluster.nodes,
        "numProcPerNode": cluster.gpu.accelerator_count if cluster.gpu else 1,
    }
    if resources:
        trainer["resourcesPerNode"] = resources
    env = environment(cluster)
    if env:
        trainer["env"] = env
    node: Json = {"name": NODE, "securityContext": CONTAINER_SECURITY} | ({"volumeMounts": mounts} if mounts else {})
    pod_spec: Json = pod | {"securityContext": POD_SECURITY, "containers": [node]} | ({"volumes": vols} if vols else {})
    spec: Json = {
        "runtimeRef": {"name": cluster.trainjob.runtime, "apiGroup": GROUP, "kind": "ClusterTrainingRuntime"},
        "trainer": trainer,
        "activeDeadlineSeconds": cluster.trainjob.timeout_seconds,
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
