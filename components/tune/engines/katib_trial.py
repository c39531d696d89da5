"""The trial template of the katib engine's Experiment: a batch Job on one node, or a Kubeflow Trainer ``TrainJob``.

Every trial runs the training CLI with the fixed training options and one ``--<option> ${trialParameters.<name>}``
per searched parameter.  On one node (``nodes`` 1, the default) the trial is a ``batch/v1`` Job whose pod has
the profile's GPU placement, the feature store's PVC and environment and MLflow's.  On a multi-node profile
the trial is a ``trainer.kubeflow.org/v1alpha1`` TrainJob rendered by `components.common.trainjob` (Katib 0.19
accepts any resource as a trial: its success and failure are read from the TrainJob's ``Complete`` /
``Failed`` conditions; the metrics collector goes into the node-0 pod's ``node`` container, which prints rank
0's metric lines), with its checkpoints in ``<shared PVC>/katib/<trial name>`` (every node writes there).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from components.common import kube
from components.common import training_options as O
from components.common import trainjob as T
from components.common.cluster import Cluster, GpuPlacement
from components.tune import spec as S

Json = dict[str, Any]
#: The Job trial's container.
CONTAINER = "training"
#: How Katib tells a trial's end: a batch Job and a TrainJob both end with a Complete or a Failed condition.
ENDS = {
    "successCondition": kube.gjson_true_condition(kube.COMPLETE),
    "failureCondition": kube.gjson_true_condition(kube.FAILED),
}
#: A batch Job's end, in the GJSON syntax Katib reads a trial resource's status with.
#: A trial parameter that Katib fills with the trial's own name (``${trialSpec.Name}``).
TRIAL_NAME = "trialName"
TRIAL_NAME_REF = "${trialParameters." + TRIAL_NAME + "}"


def trial_argv(spec: S.SearchSpec, training_args: Mapping[str, Any]) -> list[str]:
    """The training CLI's options of a trial: the fixed ones, one placeholder per searched parameter."""
    fixed = {**spec.trial_options, **training_args}
    searched = {p.name for p in spec.parameters}
    both = sorted(searched & set(fixed))
    if both:
        raise ValueError(f"Katib trial template: {', '.join(both)} both searched and fixed; keep one")
    try:
        argv = O.to_argv(fixed)
        searched_options = [O.resolve(parameter.name) for parameter in spec.parameters]
    except ValueError as error:
        raise ValueError(f"Katib trial template: {error}") from None
    for parameter, option in zip(spec.parameters, searched_options, strict=True):
        if option.kind == "bool":
            raise ValueError(
                f"Katib trial template: parameters ({parameter.name}) is a switch; Katib substitutes values "
                "into `--option value` pairs only"
            )
        argv += [option.flag, "${trialParameters." + parameter.name + "}"]
    return argv


def _job(image: str, argv: list[str], gpu: GpuPlacement | None, cluster: Cluster | None) -> Json:
    resources, pod = T.container_fields(gpu)
    command = ["python", "-m", O.MODULE, *argv]
    container: Json = {"name": CONTAINER, "image": image, "command": command, "securityContext": T.CONTAINER_SECURITY}
    pod["securityContext"] = T.POD_SECURITY
    if resources:
        container["resources"] = resources
    if cluster is not None:
        env = T.environment(cluster)
        vols, mounts = T.volumes(cluster, shared=False)
        if env:
            container["env"] = env
        if vols:
            container["volumeMounts"] = mounts
            pod["volumes"] = vols
    elif gpu and gpu.shm_size:
        container["volumeMounts"] = [{"name": "dshm", "mountPath": "/dev/shm"}]
        pod["volumes"] = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": gpu.shm_size}}]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": {"sidecar.istio.io/inject": "false"}},
                "spec": {"restartPolicy": "Never", "containers": [container]} | pod,
            },
        },
    }


def trial_template(
    spec: S.SearchSpec,
    *,
    image: str,
    training_args: Mapping[str, Any],
    gpu: GpuPlacement | None,
    cluster: Cluster | None,
) -> Json:
    """The Experiment's ``trialTemplate``: a Job, or a TrainJob when ``cluster`` asks for several nodes.

    Raises:
        ValueError: A bad option, or a TrainJob the Trainer's models refuse.
    """
    multi = cluster is not None and cluster.trainjob is not None and cluster.nodes > 1
    args = dict(training_args)
    if multi:
        assert cluster is not None and cluster.trainjob is not None
        args["output_dir"] = f"{cluster.trainjob.mount_path.rstrip('/')}/katib/{TRIAL_NAME_REF}"
    argv = trial_argv(spec, args)
    parameters = [
        {"name": p.name, "reference": p.name, "description": f"training option {p.name}"} for p in spec.parameters
    ]
    if any(TRIAL_NAME_REF in a for a in argv):
        parameters.append({"name": TRIAL_NAME, "reference": "${trialSpec.Name}", "description": "the trial's name"})
    if multi:
        assert cluster is not None
        job = T.render_trainjob(cluster, argv, name=None, namespace=None)
        return {
            "primaryContainerName": T.NODE,
            "primaryPodLabels": {T.REPLICATED_JOB_LABEL: T.NODE, T.JOB_INDEX_LABEL: "0"},
            **ENDS,
            "trialParameters": parameters,
            "trialSpec": job,
        }
    return {
        "primaryContainerName": CONTAINER,
        **ENDS,
        "trialParameters": parameters,
        "trialSpec": _job(image, argv, gpu, cluster),
    }
