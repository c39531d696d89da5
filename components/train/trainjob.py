"""Multi-node training: the train step runs a Kubeflow Trainer ``TrainJob`` and collects its model.

When the profile asks for more than one node (``gpu.nodes``; `components.common.cluster.Cluster` in the pod's
environment), `train_on_cluster` renders a TrainJob (`components.common.trainjob.render_trainjob`)
running the training CLI under torchrun on every node, with checkpoints, model and report on the shared PVC;
creates it with the ``kubernetes`` client in the pod's namespace; follows its ``Complete`` / ``Failed``
conditions with a timeout while streaming the logs of the node-0 pod (rank 0 prints the progress and metric
lines); copies the model directory and the report from the shared PVC into the step's outputs; and deletes the
TrainJob (its JobSet, Jobs and pods go with it).  A cluster without Kubeflow Trainer is a clear error.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from components.common import kube, options
from components.common import trainjob as T
from components.common.cluster import Cluster

log = logging.getLogger("components.train")
Json = dict[str, Any]


class TrainJobError(RuntimeError):
    """A TrainJob that failed, did not finish in time, or left no model."""


#: Where TrainJobs live on the API server (tests point a copy at a resource that is not installed).
TRAINJOBS = kube.CustomResource(T.GROUP, T.VERSION, T.PLURAL)


def node0_selector(name: str) -> str:
    """Label selector of the node-0 pod of TrainJob ``name`` (its JobSet has the same name)."""
    return f"{T.JOBSET_NAME_LABEL}={name},{T.REPLICATED_JOB_LABEL}={T.NODE},{T.JOB_INDEX_LABEL}=0"


def node0_pod(api_client: Any, namespace: str, name: str) -> str | None:
    """The name of the newest node-0 pod of TrainJob ``name`` (a retried node gets a new pod), or None."""
    from kubernetes.client import CoreV1Api

    pods = CoreV1Api(api_client).list_namespaced_pod(namespace, label_selector=node0_selector(name)).items
    newest = max(pods, key=lambda p: (p.metadata.creation_timestamp, p.metadata.name), default=None)
    return None if newest is None else str(newest.metadata.name)


def split_lines(pending: bytes, chunk: bytes) -> tuple[list[str], bytes]:
    """The complete lines of ``pending + chunk`` (decoded) and the unfinished rest."""
    data = pending + chunk
    *lines, rest = data.split(b"\n")
    return [line.decode("utf-8", "replace").rstrip("\r") for line in lines], rest


class LogFollower:
    """Streams the node-0 pod's log, line by line, to ``sink`` in a background thread.

    Until the pod runs there is no log to follow (the API server answers with an empty body, 400 or 404); the
    follower asks again every ``retry_s`` and, on a reconnect, skips the lines it has already passed on.  It ends
    once the pod has ended and its log is read, or when `stop` is called.
    """

    def __init__(
        self, api_client: Any, namespace: str, name: str, sink: Callable[[str], None], retry_s: float = 2.0
    ) -> None:
        self.api_client, self.namespace, self.name, self.sink, self.retry_s = api_client, namespace, name, sink, retry_s
        self.tail: collections.deque[str] = collections.deque(maxlen=20)
        self.pod: str | None = None
        self.attempts = 0
        self.last_error = ""
        self._seen = 0  # lines of self.pod's log passed on
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"logs-{name}", daemon=True)

    def start(self) -> LogFollower:
        self._thread.start()
        return self

    def stop(self, wait_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(wait_s)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _emit(self, line: str) -> None:
        self.tail.append(line)
        self.sink(line)

    def _follow(self, core: Any, pod: str) -> None:
        """Read the pod's log from its start, passing on the lines not passed on before."""
        response = core.read_namespaced_pod_log(
            pod, self.namespace, container=T.NODE, follow=True, _preload_content=False
        )
        count, pending = 0, b""
        try:
            for chunk in response.stream(4096):
                lines, pending = split_lines(pending, chunk)
                for line in lines:
                    count += 1
                    if count > self._seen:
                        self._emit(line)
                        self._seen = count
                if self._stop.is_set():
                    return
            if pending and count + 1 > self._seen:
                self._emit(pending.decode("utf-8", "replace"))
                self._seen = count + 1
        finally:
            response.release_conn()

    def _run(self) -> None:
        from kubernetes.client import CoreV1Api
        from kubernetes.client.exceptions import ApiException

        core = CoreV1Api(self.api_client)
        while not self._stop.is_set():
            self.attempts += 1
            try:
                pod = node0_pod(self.api_client, self.namespace, self.name)
                if pod != self.pod:
                    self.pod, self._seen = pod, 0
                if pod is not None:
                    self._follow(core, pod)
                    if core.read_namespaced_pod(pod, self.namespace).status.phase in ("Succeeded", "Failed"):
                        return  # the pod has ended and its log is read
            except ApiException as error:  # 400: container creating; 404: not there yet
                self.last_error = f"{error.status} {error.reason}"
            except Exception as error:  # a dropped connection: ask again
                self.last_error = f"{type(error).__name__}: {error}"
            self._stop.wait(self.retry_s)


def run_trainjob(
    api_client: Any,
    job: Json,
    *,
    namespace: str,
    timeout_s: float,
    poll_s: float,
    cleanup: bool = True,
    follower: LogFollower | None = None,
    resource: kube.CustomResource = TRAINJOBS,
) -> Json:
    """Create ``job`` (`render_trainjob`'s) in ``namespace`` and start ``follower``; read the TrainJob every
    ``poll_s`` seconds until it is ``Complete`` (returned as last read) or ``Failed``; then stop the follower and,
    with ``cleanup``, delete the TrainJob whatever the outcome.  ``resource``: where TrainJobs live.

    Raises:
        ValueError: Kubeflow Trainer is not installed (the TrainJob CRD is missing).
        TrainJobError: The TrainJob failed or did not finish within ``timeout_s``.
    """
    from kubernetes.client import CustomObjectsApi

    custom = CustomObjectsApi(api_client)
    name = job["metadata"]["name"]
    args = resource.args(namespace)
    not_installed = ValueError(
        f"Kubeflow Trainer is not installed: the CRD {resource.crd_name} is missing on this cluster; install "
        "Kubeflow Trainer v2 (kubeflow/trainer manifests, with the torch-distributed runtime) or use a profile "
        "with gpu.nodes 1"
    )
    kube.create_custom_object(api_client, resource, namespace, job, not_installed)
    log.info("TrainJob %s/%s created: %d node(s)", namespace, name, job["spec"]["trainer"].get("numNodes", 1))
    if follower is not None:
        follower.start()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            current: Json = custom.get_namespaced_custom_object(*args, name)
            if kube.true_condition(current, kube.COMPLETE):
                return current
            failed = kube.true_condition(current, kube.FAILED)
            if failed:
                tail = "\n".join(follower.tail) if follower is not None else ""
                why = f"{failed.get('reason', '')} {failed.get('message', '')}".rstrip()
                more = f"\nlast lines of node 0:\n{tail}" if tail else ""
                raise TrainJobError(f"TrainJob {namespace}/{name} failed: {why}{more}")
            if time.monotonic() >= deadline:
                raise TrainJobError(f"TrainJob {namespace}/{name} did not finish within {timeout_s:g} s")
            time.sleep(poll_s)
    finally:
        if follower is not None:
            follower.stop()
        if cleanup:
            kube.delete_custom_object(custom, args, name)


# --- the train step's side ---------------------------------------------------------------------------------


def job_name(pipeline_run_id: str) -> str:
    """A TrainJob name: short (its pods' host names add ``-node-0-0``), unique per attempt."""
    digest = hashlib.sha256((pipeline_run_id or secrets.token_hex(8)).encode()).hexdigest()[:8]
    return f"bert-train-{digest}-{secrets.token_hex(2)}"


def run_key(pipeline_run_id: str, name: str) -> str:
    """The directory of a pipeline run on the shared PVC (a retried task resumes from its checkpoints)."""
    key = re.sub(r"[^A-Za-z0-9_.-]+", "-", pipeline_run_id).strip("-.")
    return key or name


def collect(source: Path, model_dir: str, report: str) -> None:
    """Copy the model directory and the report the training wrote on the shared PVC into the step's outputs.

    Raises:
        TrainJobError: Either is missing (rank 0 did not finish writing them).
    """
    model, report_file = source / "model", source / "training_report.json"
    missing = [str(p) for p in (model, report_file) if not p.exists()]
    if missing:
        raise TrainJobError(f"The TrainJob completed but left no {' and no '.join(missing)} on the shared PVC")
    shutil.copytree(model, model_dir, dirs_exist_ok=True)
    Path(report).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(report_file, report)


def train_on_cluster(
    values: Mapping[str, Any],
    cluster: Cluster,
    *,
    keep_checkpoints: bool,
    api_client: Any = None,
    namespace: str = "",
    poll_s: float = 10.0,
    name: str = "",
) -> Path:
    """Train on ``cluster.nodes`` nodes with a TrainJob (see the module docstring); return the run's directory on
    the shared PVC, removed after success unless ``keep_checkpoints``.  ``values``: `cli.component_options`' (its
    ``model_dir`` and ``report`` are the step's outputs); ``api_client``: default the pod's in-cluster client;
    ``namespace``: default the profile's trainjob namespace, else the pod's own; ``name``: default `job_name`.

    Raises:
        ValueError: Not in a pod, no namespace, Kubeflow Trainer not installed, a bad profile.
        TrainJobError: The TrainJob failed, timed out or left no model.
    """
    api_client = api_client if api_client is not None else kube.in_cluster_client()
    settings = cluster.trainjob
    assert settings is not None  # (a profile with nodes > 1 has one)
    namespace = kube.pod_namespace(namespace or settings.namespace or "")
    name = name or job_name(str(values.get("pipeline_run_id") or ""))
    shared = Path(settings.mount_path) / run_key(str(values.get("pipeline_run_id") or ""), name)
    on_nodes = {
        **values,
        "output_dir": str(shared / "train"),
        "model_dir": str(shared / "model"),
        "report": str(shared / "training_report.json"),
    }
    on_nodes.pop("nproc_per_node", None)  # torchrun's PET_NPROC_PER_NODE decides
    labels = {"app.kubernetes.io/part-of": "bert-kfp"}
    job = T.render_trainjob(cluster, options.to_argv(on_nodes), name=name, namespace=namespace, labels=labels)
    follower = LogFollower(api_client, namespace, name, lambda line: print(f"[{name} node-0] {line}", flush=True))
    run_trainjob(
        api_client, job, namespace=namespace, timeout_s=settings.timeout_seconds, poll_s=poll_s, follower=follower
    )
    collect(shared, str(values["model_dir"]), str(values["report"]))
    if not keep_checkpoints:
        shutil.rmtree(shared, ignore_errors=True)
    return shared
