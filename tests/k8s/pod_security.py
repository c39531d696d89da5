"""Kubernetes' PodSecurity admission, played for the test API server (Kubernetes 1.20 has no PodSecurity plugin:
it came in 1.22 and is on by default from 1.23).

`PodSecurityWebhook` serves the checks below as a validating admission webhook on loopback TLS and registers it
with the API server for pods in namespaces labelled ``pod-security.kubernetes.io/enforce``, so a server-side
dry-run create of a Pod in such a namespace is admitted or refused by the real API server as a cluster with the
plugin would: the level comes from the namespace's label, the refusal names each failed check.

Each check follows upstream's policy (kubernetes/kubernetes staging/src/k8s.io/pod-security-admission/policy/,
the file named beside it), version ``latest``, for the fields a pod of this project or of its controllers sets.
"""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kubernetes.client import AdmissionregistrationV1Api, ApiClient, CoreV1Api

Json = dict[str, Any]
LEVELS = ("privileged", "baseline", "restricted")
ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
WEBHOOK_NAME = "pod-security.bert-kfp.test"
#: check_capabilities_baseline.go: what a baseline pod may add.
_BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP",
    "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}  # fmt: skip
#: check_restrictedVolumes.go: the volume types a restricted pod may use.
_RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip


def _containers(spec: Json) -> list[Json]:
    return [
        *(spec.get("initContainers") or []),
        *(spec.get("containers") or []),
        *(spec.get("ephemeralContainers") or []),
    ]


def _names(containers: list[Json]) -> str:
    return ", ".join(f'"{c.get("name")}"' for c in containers)


def baseline(spec: Json) -> list[str]:
    """The baseline checks' failures (``reason (detail)``, as upstream words them)."""
    pod_ctx = spec.get("securityContext") or {}
    containers = _containers(spec)
    failures = []
    hosts = [f"{f}=true" for f in ("hostNetwork", "hostPID", "hostIPC") if spec.get(f)]
    if hosts:  # check_hostNamespaces.go
        failures.append(f"host namespaces ({', '.join(hosts)})")
    privileged = [c for c in containers if (c.get("securityContext") or {}).get("privileged")]
    if privileged:  # check_privileged.go
        failures.append(f"privileged (containers {_names(privileged)} must not set securityContext.privileged=true)")
    added = [
        c
        for c in containers
        if set(((c.get("securityContext") or {}).get("capabilities") or {}).get("add") or []) - _BASELINE_CAPABILITIES
    ]
    if added:  # check_capabilities_baseline.go
        failures.append(f"non-default capabilities (containers {_names(added)} must not include added capabilities)")
    host_paths = [v["name"] for v in spec.get("volumes") or [] if "hostPath" in v]
    if host_paths:  # check_hostPathVolumes.go
        failures.append(f"hostPath volumes (volumes {', '.join(host_paths)})")
    ports = [c for c in containers if any(p.get("hostPort") for p in c.get("ports") or [])]
    if ports:  # check_hostPorts.go
        failures.append(f"hostPort (containers {_names(ports)} use hostPorts)")
    unconfined = [
        c
        for c in containers
        if ((c.get("securityContext") or {}).get("seccompProfile") or {}).get("type") == "Unconfined"
    ]
    if (pod_ctx.get("seccompProfile") or {}).get("type") == "Unconfined" or unconfined:  # seccompProfile_baseline.go
        failures.append(
            'seccompProfile (pod or containers must not set securityContext.seccompProfile.type to "Unconfined")'
        )
    return failures


def restricted(spec: Json) -> list[str]:
    """The restricted checks' failures, the baseline ones first (restricted includes baseline)."""
    pod_ctx = spec.get("securityContext") or {}
    containers = _containers(spec)
    failures = baseline(spec)
    volumes = [v["name"] for v in spec.get("volumes") or [] if not set(v) - {"name"} <= _RESTRICTED_VOLUMES]
    if volumes:  # check_restrictedVolumes.go
        failures.append(f"restricted volume types (volumes {', '.join(volumes)})")
    escalating = [
        c for c in containers if (c.get("securityContext") or {}).get("allowPrivilegeEscalation") is not False
    ]
    if escalating:  # check_allowPrivilegeEscalation.go
        failures.append(
            f"allowPrivilegeEscalation != false (containers {_names(escalating)} must set "
            "securityContext.allowPrivilegeEscalation=false)"
        )
    pod_non_root = pod_ctx.get("runAsNonRoot")
    root = [
        c
        for c in containers
        if (c.get("securityContext") or {}).get("runAsNonRoot") is False
        or ((c.get("securityContext") or {}).get("runAsNonRoot") is None and pod_non_root is not True)
    ]
    if pod_non_root is False or root:  # check_runAsNonRoot.go
        failures.append(
            f"runAsNonRoot != true (pod or containers {_names(root)} must set securityContext.runAsNonRoot=true)"
        )
    zero = [c for c in containers if (c.get("securityContext") or {}).get("runAsUser") == 0]
    if pod_ctx.get("runAsUser") == 0 or zero:  # check_runAsUser.go
        failures.append("runAsUser=0 (pod and containers must not set runAsUser=0)")
    pod_seccomp = (pod_ctx.get("seccompProfile") or {}).get("type")
    no_seccomp = [
        c
        for c in containers
        if ((c.get("securityContext") or {}).get("seccompProfile") or {}).get("type") is None
        and pod_seccomp not in ("RuntimeDefault", "Localhost")
    ]
    if no_seccomp:  # check_seccompProfile_restricted.go
        failures.append(
            f"seccompProfile (pod or containers {_names(no_seccomp)} must set securityContext.seccompProfile.type to "
            '"RuntimeDefault" or "Localhost")'
        )
    not_dropped = [
        c
        for c in containers
        if "ALL" not in (((c.get("securityContext") or {}).get("capabilities") or {}).get("drop") or [])
    ]
    if not_dropped:  # check_capabilities_restricted.go
        failures.append(
            f"unrestricted capabilities (containers {_names(not_dropped)} must set "
            'securityContext.capabilities.drop=["ALL"])'
        )
    return failures


def violations(spec: Json, level: str) -> list[str]:
    """What keeps the pod spec ``spec`` from ``level`` (empty: admitted)."""
    if level not in LEVELS:
        raise ValueError(f"unknown Pod Security level {level!r}")
    return {"privileged": lambda s: [], "baseline": baseline, "restricted": restricted}[level](spec)


class PodSecurityWebhook:
    """The checks as a validating webhook the API server calls for pods in labelled namespaces."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api
        self.core = CoreV1Api(api)
        self._dir = tempfile.TemporaryDirectory(prefix="pod-security-")
        self.reviews: list[Json] = []

    def _review(self, review: Json) -> Json:
        request = review["request"]
        namespace = self.core.read_namespace(request["namespace"])
        level = (namespace.metadata.labels or {}).get(ENFORCE_LABEL, "privileged")
        pod = request["object"]
        failures = violations(pod.get("spec") or {}, level)
        self.reviews.append({"namespace": request["namespace"], "level": level, "dryRun": request.get("dryRun")})
        response: Json = {"uid": request["uid"], "allowed": not failures}
        if failures:
            name = (pod.get("metadata") or {}).get("name", "")
            message = f'pods "{name}" is forbidden: violates PodSecurity "{level}:latest": {", ".join(failures)}'
            response["status"] = {"code": 403, "reason": "Forbidden", "message": message}
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}

    def _certificate(self) -> tuple[Path, Path]:
        cert, key = Path(self._dir.name) / "tls.crt", Path(self._dir.name) / "tls.key"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
            check=True,
            capture_output=True,
        )  # fmt: skip
        return cert, key

    @contextlib.contextmanager
    def running(self) -> Iterator[PodSecurityWebhook]:
        cert, key = self._certificate()
        review = self._review

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                answer = json.dumps(review(body)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        admission = AdmissionregistrationV1Api(self.api)
        webhook = {
            "name": WEBHOOK_NAME,
            "clientConfig": {
                "url": f"https://127.0.0.1:{server.server_address[1]}/validate",
                "caBundle": base64.b64encode(cert.read_bytes()).decode(),
            },
            "rules": [
                {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["pods"]}
            ],
            "namespaceSelector": {"matchExpressions": [{"key": ENFORCE_LABEL, "operator": "Exists"}]},
            "sideEffects": "None",  # so the API server calls it on dry runs as well
            "admissionReviewVersions": ["v1"],
            "failurePolicy": "Fail",
            "timeoutSeconds": 10,
        }
        config = {"metadata": {"name": WEBHOOK_NAME}, "webhooks": [webhook]}
        admission.create_validating_webhook_configuration(config)
        try:
            yield self
        finally:
            admission.delete_validating_webhook_configuration(WEBHOOK_NAME)
            server.shutdown()
            server.server_close()
            self._dir.cleanup()
