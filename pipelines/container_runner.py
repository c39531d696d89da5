"""`python -m pipelines run --runner container`: every step in its own container, as in a cluster's pods.

kfp.local's `DockerRunner` starts each step in the image the compiled pipeline names (`components.common.image`:
what `make images` built) through a Docker-compatible API (``DOCKER_HOST``; `make container-runtime` starts
podman's). A container shares nothing with this machine (no ``$HOME``, no files, no environment) but what it
is given, and what it is given comes from the cluster profile (``pipelines/profiles.yaml``), the very one
`pipelines.profiles` applies when the pipeline is compiled:

- The pipeline is built with the profile, so `use_feature_store`, `use_mlflow` and `place_on_gpu` decide which
  step gets what, as on the cluster.
- kfp.local ignores the Kubernetes part of each step (its kfp-kubernetes platform spec), so it is carried over
  here, step by step: a key of a Secret or ConfigMap the profile maps into a step's environment is given to
  that step from this process's environment when set there (what the Secret would hold), and left out
  otherwise (as an optional key would be), and so is a variable the pod would read from its own fields
  (``KFP_RUN_NAME``, the MLflow run's name: the local run sets it to its run directory's name); each PVC
  becomes a directory of the run, mounted at the profile's path (the feature store's: ``<output>/feature_store``
  at ``feast.mount_path``). DockerRunner takes one set of mounts for all steps, so every container sees the
  volumes; the environment is per step.
- The profile's MLflow server becomes a real ``mlflow server`` on loopback, started for the run and stopped
  after it (its store: ``<embedded store dir>/server``, so the registry and its champion outlive the run);
  only its address replaces the profile's ``tracking_uri``. An http(s) ``--mlflow-tracking-uri`` is used as it is.
- What needs a cluster is left out: GPU placement, multi-node TrainJobs and Katib (training and tuning run in
  the step's container). Inputs given as local paths (``--data``, a model directory) are mounted read-only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.common import processes, tracking

#: The profile a container run follows unless told otherwise: the cluster without GPUs.
DEFAULT_PROFILE = "cpu"
#: How long `mlflow server` may take to answer /health (it creates its tables first on a busy machine).
MLFLOW_STARTUP_S = 180.0
_HINT = "start it with `make container-runtime` (then export the DOCKER_HOST it prints)"


@dataclass
class Session:
    """How one local run executes: the kfp.local runner, the pipeline to call, and its arguments."""

    runner: Any
    #: Builds the pipeline (a kfp GraphComponent) ready to be called with the arguments.
    build: Callable[[], Any]
    #: The pipeline's arguments for this runner, from the run's own.
    arguments: Callable[[dict[str, Any]], dict[str, Any]] = lambda values: values


@dataclass(frozen=True)
class Volume:
    """A directory of this machine mounted into the containers."""

    host: Path
    target: str
    read_only: bool = False


@dataclass
class Plan:
    """What the containers get, derived from a profile."""

    profile: Any
    volumes: list[Volume] = field(default_factory=list)
    #: executor name (``exec-<step>``) → environment variables for that step alone.
    env: dict[str, dict[str, str]] = field(default_factory=dict)


def local_profile(profile: Any, tracking_uri: str) -> Any:
    """``profile`` as a container run follows it: MLflow at ``tracking_uri``; no GPU placement, TrainJob or Katib."""
    from pipelines.profiles import TuningSettings

    mlflow = profile.mlflow.model_copy(update={"tracking_uri": tracking_uri}) if profile.mlflow else None
    return dataclasses.replace(profile, gpu=None, trainjob=None, tuning=TuningSettings(), mlflow=mlflow)


def kubernetes_settings(graph: Any) -> dict[str, dict[str, Any]]:
    """Each executor's kfp-kubernetes settings (PVC mounts, Secrets and ConfigMaps as env) in ``graph``."""
    from google.protobuf import json_format

    platforms = json_format.MessageToDict(graph.platform_spec).get("platforms", {})
    return platforms.get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})


def plan(graph: Any, profile: Any, output: Path, environ: Mapping[str, str]) -> Plan:
    """The volumes and per-step environment the profile gives the steps of ``graph`` (built with ``profile``).

    Raises:
        ValueError: a step mounts a PVC under a name the run cannot map to a directory.
    """
    result = Plan(profile=profile)
    mounted: dict[str, Volume] = {}
    for executor, settings in sorted(kubernetes_settings(graph).items()):
        env: dict[str, str] = {}
        for source in (*settings.get("secretAsEnv", ()), *settings.get("configMapAsEnv", ())):
            for pair in source.get("keyToEnv", ()):
                name = pair["envVar"]
                if environ.get(name):
                    env[name] = environ[name]
        for field_env in settings.get("fieldPathAsEnv", ()):  # the pod's own fields (KFP_RUN_NAME): this run's
            if environ.get(field_env["name"]):
                env[field_env["name"]] = environ[field_env["name"]]
        if env:
            result.env[executor] = env
        for pvc in settings.get("pvcMount", ()):
            name = pvc.get("constant") or pvc.get("pvcNameParameter", {}).get("runtimeValue", {}).get("constant")
            if not name:
                raise ValueError(
                    f"Step {executor} mounts a PVC named by a pipeline input; a container run needs a name."
                )
            feast = profile.feast
            host = output / "feature_store" if feast and name == feast.pvc else output / "volumes" / name
            mounted.setdefault(pvc["mountPath"], Volume(host=host.resolve(), target=pvc["mountPath"]))
    result.volumes = list(mounted.values())
    return result


def add_env(graph: Any, env: Mapping[str, Mapping[str, str]]) -> None:
    """Give each executor of ``graph`` its environment variables (kfp.local reads them from the pipeline spec)."""
    executors = graph.pipeline_spec.deployment_spec["executors"]
    for executor, values in env.items():
        container = executors[executor]["container"]
        if "env" not in container:
            container["env"] = []
        for name, value in values.items():
            container["env"].append({"name": name, "value": value})


def images_of(graph: Any) -> list[str]:
    """The images the steps of ``graph`` run in."""
    from google.protobuf import json_format

    executors = json_format.MessageToDict(graph.pipeline_spec).get("deploymentSpec", {}).get("executors", {})
    return sorted({e["container"]["image"] for e in executors.values() if "container" in e})


def path_inputs(arguments: Mapping[str, Any]) -> dict[str, Path]:
    """The arguments that name a file or directory of this machine (absolute), to mount read-only."""
    found = {}
    for name, value in arguments.items():
        if isinstance(value, str) and value and "://" not in value and (os.sep in value or Path(value).is_file()):
            path = Path(value).expanduser()
            if path.exists():
                found[name] = path.resolve()
    return found


def docker_client() -> Any:
    """A client of the Docker-compatible API at ``DOCKER_HOST`` (or Docker's default socket).

    Raises:
        ValueError: nothing answers there.
    """
    import docker

    where = os.environ.get("DOCKER_HOST") or "the default Docker socket (DOCKER_HOST is not set)"
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as err:  # docker raises DockerException, requests' and socket errors alike
        raise ValueError(f"--runner container: no container runtime answers at {where} ({err}); {_HINT}.") from err
    return client


def check_images(client: Any, images: list[str]) -> None:
    """Raises ValueError naming the images that are missing (build them with `make images`)."""
    import docker

    missing = []
    for image in images:
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            missing.append(image)
    if missing:
        raise ValueError(
            f"--runner container: image(s) {', '.join(missing)} not found in the container runtime; build them with "
            "`make images` (the names come from components/common/image.py: $BERT_KFP_REGISTRY, $BERT_KFP_IMAGE_TAG)."
        )


def image_user(client: Any, image: str) -> tuple[int, int] | None:
    """The numeric ``uid, gid`` an image runs as (its USER), or None when it names no numeric user."""
    user = (client.images.get(image).attrs.get("Config") or {}).get("User") or ""
    uid, _, gid = user.partition(":")
    return (int(uid), int(gid or uid)) if uid.isdigit() and (not gid or gid.isdigit()) else None


def writable_by(paths: list[Path], owner: tuple[int, int] | None) -> dict[str, Any]:
    """Make ``paths`` writable by the containers; the run arguments that needs.

    As root, the directories go to the images' own (non-root) user; otherwise the containers run as this user
    (their files then stay this user's), as with ``docker run --user $(id -u):$(id -g)``.
    """
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
    if os.getuid() != 0:
        return {"user": f"{os.getuid()}:{os.getgid()}"}
    if owner is not None:
        for path in paths:
            for parent, dirs, files in os.walk(path):
                for name in (
                    parent,
                    *(os.path.join(parent, d) for d in dirs),
                    *(os.path.join(parent, f) for f in files),
                ):
                    os.chown(name, *owner)
    return {}


class MlflowServer:
    """A real ``mlflow server`` on 127.0.0.1 and a free port, in a process group of its own."""

    def __init__(self, backend_store_uri: str, artifacts: Path, log: Path) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        self.uri = f"http://127.0.0.1:{port}"
        self.log = log
        command = [
            str(Path(sys.executable).with_name("mlflow")), "server",
            "--backend-store-uri", backend_store_uri,
            "--default-artifact-root", "mlflow-artifacts:/",
            "--serve-artifacts", "--artifacts-destination", str(artifacts),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != tracking.ENV_TRACKING_URI}
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no background job runner: tracking and registry only
        self.process = processes.start_group(command, log, env=env)

    def wait(self, timeout: float = MLFLOW_STARTUP_S) -> str:
        """Block until /health answers; return the URI.

        Raises:
            ValueError: the server exited or did not answer in time (its log's end in the message).
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return self.uri
            except (urllib.error.URLError, OSError):
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text()[-1500:]
                self.stop()
                raise ValueError(f"mlflow server did not start (log {self.log}):\n{tail}")
            time.sleep(0.25)

    def stop(self) -> None:
        """SIGTERM the server's process group; SIGKILL after `processes.STOP_GRACE_S`."""
        processes.stop_group(self.process)


def server_store(uri: str) -> tuple[str, Path]:
    """The backend store and artifact directory a local `mlflow server` serves for tracking URI ``uri``.

    The embedded default gets a store of its own beside it (``server/``): experiments created through a server
    keep their artifacts on the server (``mlflow-artifacts:/``), where a container can reach them.
    """
    from components.common import tracking

    if uri == tracking.resolve_tracking_uri(""):
        root = tracking.default_store_dir() / "server"
        root.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{root / 'mlflow.db'}", root / "mlartifacts"
    return uri, Path(uri[len("sqlite:///") :]).resolve().parent / "mlartifacts"


@contextlib.contextmanager
def session(output: Path, arguments: Mapping[str, Any], profile_name: str = DEFAULT_PROFILE) -> Iterator[Session]:
    """Check the runtime and the images, start MLflow, and yield the run's `Session`; stop MLflow afterwards.

    Raises:
        ValueError: an unknown profile, no runtime, a missing image, or MLflow that does not start.
    """
    from kfp import local

    from components.common import tracking
    from pipelines.pipeline import build_pipeline
    from pipelines.profiles import load_profiles

    profiles = load_profiles()
    if profile_name not in profiles:
        raise ValueError(
            f"Unknown --profile {profile_name!r}; pipelines/profiles.yaml has {', '.join(sorted(profiles))}."
        )
    client = docker_client()
    server = None
    uri = tracking.resolve_tracking_uri(str(arguments.get("mlflow_tracking_uri") or ""))
    if not uri.startswith(("http://", "https://")):
        if not uri.startswith("sqlite:///"):
            raise ValueError(f"--mlflow-tracking-uri {uri!r}: a container run needs an http(s) or sqlite URI.")
        backend, artifacts = server_store(uri)
        server = MlflowServer(backend, artifacts, output / "logs" / "mlflow-server.log")
    try:
        if server is not None:
            print(f"Starting mlflow server on {server.uri} (store {backend})")
            uri = server.wait()
        profile = local_profile(profiles[profile_name], uri)
        graph = build_pipeline(profile)
        images = images_of(graph)
        check_images(client, images)
        steps = plan(graph, profile, output, os.environ)
        add_env(graph, steps.env)
        inputs = path_inputs(arguments)
        volumes = steps.volumes + [Volume(host=p, target=str(p), read_only=True) for p in inputs.values()]
        run_args = writable_by(
            [output / "artifacts", *(v.host for v in volumes if not v.read_only)], image_user(client, images[0])
        )
        client.close()
        runner = local.DockerRunner(network_mode="host", mounts=_mounts(volumes), **run_args)
        cluster = {"feature_store_dir": profile.feast.mount_path} if profile.feast else {}

        def container_arguments(values: dict[str, Any]) -> dict[str, Any]:
            return {
                **values,
                **{name: str(path) for name, path in inputs.items()},
                **cluster,
                "checkpoint_root": "",  # no checkpoint PVC: a temporary directory in the train container
                "mlflow_tracking_uri": "",  # the profile's (use_mlflow): the server above
            }

        yield Session(runner=runner, build=lambda: graph, arguments=container_arguments)
    finally:
        if server is not None:
            server.stop()


def _mounts(volumes: list[Volume]) -> list[Any]:
    from docker.types import Mount

    return [Mount(target=v.target, source=str(v.host), type="bind", read_only=v.read_only) for v in volumes]


def check_runtime() -> None:
    """Fail early, before a run writes anything, when the runtime does not answer or an image is missing.

    Raises:
        ValueError: naming `make container-runtime` or `make images`.
    """
    from components.common import image

    client = docker_client()
    try:
        check_images(client, list(image.images().values()))
    finally:
        client.close()
