"""The ``kserve`` deploy backend: roll a model version out as a KServe InferenceService canary.

`rollout` reads the InferenceService, decides (`components.deploy.kserve_decision`) and acts:

- absent: create it (`components.deploy.inference_service`), wait until Ready, probe it; on a timeout or a
  failed probe it is deleted again (``rolled_back``: nothing was serving before);
- this version live: ``no_op``;
- another version live: write the canary, wait until it is up, probe its URL, then promote it, or roll it back
  on a timeout, a failure KServe reports, or a failed probe (``rolled_back``, the reason in ``message``).

Every write is first sent as a server-side dry run and the object the server would store is compared with the
one sent: an API server prunes fields its CRD does not know without an error (before strict field validation),
so a KServe too old for the mode's canary field is reported before anything changes.  The deployment mode
annotation is written in the names the installed KServe understands (`kserve_decision.with_legacy_mode_name`).
Writes replace the object at the resourceVersion read (a conflict with KServe's controller is retried). A 403
becomes one error naming the verb, the resource and the namespace.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, cast

from components.common import kube
from components.common.schema import MAX_SEQ_LENGTH
from components.deploy import inference_service as isvc_
from components.deploy import kserve_decision as D
from components.deploy.config import DeployConfig, canonical_mode

log = logging.getLogger(__name__)
Json = dict[str, Any]
SERVICE_ACCOUNT_NAMESPACE = kube.SERVICE_ACCOUNT_DIR / "namespace"
#: The verbs the backend needs on inferenceservices.serving.kserve.io (docs/kserve.md, the Role in manifests/).
VERBS = ("get", "create", "update", "delete")
_CONFLICT_RETRIES = 5
_FIELD_HINTS = {
    "spec.canary": "Standard-mode canaries need KServe 0.20 or newer (spec.canary)",
    "spec.predictor.canaryTrafficPercent": "Knative-mode canaries need canaryTrafficPercent (the project supports "
    "KServe 0.16 or newer: docs/kserve.md)",
}


Action = Literal["created", "promoted", "rolled_back", "no_op"]
Mode = Literal["Knative", "Standard"]


class KServeError(RuntimeError):
    """The cluster cannot do the rollout: KServe missing or too old, an unsupported mode, a denied request."""


#: Where InferenceServices live on the API server (tests point a copy at one that is not installed).
INFERENCE_SERVICES = kube.CustomResource(isvc_.GROUP, isvc_.VERSION, isvc_.PLURAL)


@dataclass(frozen=True)
class Rollout:
    """What the rollout did. The caller moves MLflow's ``champion`` only on ``created`` and ``promoted``."""

    action: Action
    mode: Mode
    endpoint: str
    name: str
    namespace: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def load_api_client() -> Any:
    """A ``kubernetes.client.ApiClient``: the pod's service account in a cluster, else the kubeconfig.

    Raises:
        KServeError: Neither is there.
    """
    try:
        return kube.in_cluster_client(kubeconfig_fallback=True)
    except ValueError as error:
        raise KServeError(str(error)) from None


def resolve_namespace(
    configured: str, *, service_account_namespace: Path = SERVICE_ACCOUNT_NAMESPACE, kubeconfig: str | None = None
) -> str:
    """``configured``, else the pod's namespace, else the kubeconfig's current context's namespace.

    Raises:
        KServeError: None of them is there.
    """
    try:
        return kube.pod_namespace(
            configured,
            service_account_namespace,
            kubeconfig=kubeconfig,
            kubeconfig_fallback=True,
            setting="kserve_namespace",
        )
    except ValueError as error:
        raise KServeError(f"no namespace for the InferenceService: {error}") from None


class InferenceServiceClient:
    """The InferenceService calls, with 403/404 turned into errors a user can act on."""

    def __init__(self, api_client: Any, namespace: str, resource: kube.CustomResource) -> None:
        from kubernetes.client import CustomObjectsApi

        self.api = CustomObjectsApi(api_client)
        self.namespace = namespace
        self.resource = resource
        self.args = resource.args(namespace)

    def _error(self, error: Any, verb: str) -> Exception:
        if error.status == 403:
            r = self.resource
            return KServeError(
                f"permission denied: cannot {verb} {r.crd_name} in namespace {self.namespace} "
                f"({_server_message(error)}). Fix: bind the step's service account to a Role with apiGroups "
                f"[{r.group}], resources [{r.plural}], verbs [{', '.join(VERBS)}] in that namespace (the deploy Role "
                "in manifests/)"
            )
        if error.status == 404 and not _names_object(error):
            return self.not_installed()
        return error

    def not_installed(self) -> KServeError:
        return KServeError(
            f"KServe is not installed: the CRD {self.resource.crd_name} ({self.resource.group}/"
            f"{self.resource.version}) is not served by this cluster; install KServe or use deploy_backend local"
        )

    def check_installed(self) -> None:
        """Discovery (every authenticated user may read it): is the InferenceService resource served?"""
        from kubernetes.client.exceptions import ApiException

        try:
            listing = self.api.get_api_resources(self.resource.group, self.resource.version)
        except ApiException as error:
            if error.status == 404:
                raise self.not_installed() from None
            raise
        if not any(r.name == self.resource.plural for r in listing.resources or []):
            raise self.not_installed()

    def get(self, name: str) -> Json | None:
        from kubernetes.client.exceptions import ApiException

        try:
            found: Json = self.api.get_namespaced_custom_object(*self.args, name)
            return found
        except ApiException as error:
            if error.status == 404 and _names_object(error):
                return None
            raise self._error(error, "get") from None

    def create(self, body: Json) -> Json:
        from kubernetes.client.exceptions import ApiException

        body = D.with_legacy_mode_name(body | {"apiVersion": f"{self.resource.group}/{self.resource.version}"})
        try:
            dry = self.api.create_namespaced_custom_object(*self.args, body, dry_run="All")
            _check_kept(body, dry)
            body = D.with_mode_name_of(body, dry)
            created: Json = self.api.create_namespaced_custom_object(*self.args, body)
        except ApiException as error:
            raise self._error(error, "create") from None
        _check_kept(body, created)
        return created

    def update(self, name: str, edit: Callable[[Json], Json]) -> Json:
        """Apply ``edit`` to the current object and replace it (re-read and re-applied on a conflict)."""
        from kubernetes.client.exceptions import ApiException

        for attempt in range(_CONFLICT_RETRIES):
            current = self.get(name)
            if current is None:
                raise KServeError(f"InferenceService {self.namespace}/{name} disappeared during the rollout")
            body = D.with_status_mode_name(edit(current))
            try:
                _check_kept(body, self.api.replace_namespaced_custom_object(*self.args, name, body, dry_run="All"))
                stored: Json = self.api.replace_namespaced_custom_object(*self.args, name, body)
            except ApiException as error:
                if error.status == 409 and attempt + 1 < _CONFLICT_RETRIES:
                    continue
                raise self._error(error, "update") from None
            _check_kept(body, stored)
            return stored
        raise AssertionError("unreachable")

    def delete(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            kube.delete_custom_object(self.api, self.args, name)
        except ApiException as error:
            raise self._error(error, "delete") from None


def _server_message(error: Any) -> str:
    import json

    try:
        return str(json.loads(error.body).get("message") or error.reason)
    except (TypeError, ValueError, AttributeError):
        return str(error.reason)


def _names_object(error: Any) -> bool:
    """A 404 about an object (a Status naming it), not about the resource type being unknown."""
    import json

    try:
        details = json.loads(error.body).get("details") or {}
    except (TypeError, ValueError, AttributeError):
        return False
    return bool(details.get("name"))


def _check_kept(sent: Json, stored: Json) -> None:
    """Fail when the server dropped part of what was sent (a CRD without the field)."""
    dropped = kube.dropped_fields({"spec": sent.get("spec"), "metadata": sent.get("metadata")}, stored)
    dropped = [p for p in dropped if not p.startswith(("metadata.resourceVersion", "metadata.managedFields"))]
    if dropped:
        hints = [hint for field, hint in _FIELD_HINTS.items() if any(p.startswith(field) for p in dropped)]
        raise KServeError(
            f"the InferenceService CRD on this cluster does not know {', '.join(dropped)} (the API server dropped "
            f"it; nothing was changed){': ' + '; '.join(hints) if hints else ''}. Upgrade KServe"
        )


def _wait(
    cluster: InferenceServiceClient, name: str, check: Callable[[Json], D.Progress], timeout_s: float, poll_s: float
) -> D.Progress:
    deadline = time.monotonic() + timeout_s
    while True:
        current = cluster.get(name)
        progress = (
            D.Progress("failed", detail="the InferenceService was deleted") if current is None else check(current)
        )
        if progress.state != "waiting":
            return progress
        if time.monotonic() >= deadline:
            return D.Progress("failed", detail=f"not ready within {timeout_s:g} s ({progress.detail})")
        time.sleep(poll_s)


def _canary_pods(api_client: Any, namespace: str, name: str, canary: str, mode: str) -> Callable[[], list[Json]]:
    """Lists a Standard-mode canary's pods (KServe labels them ``app: isvc.<name>-<canary>-predictor``, see
    ``GetRawServiceLabel`` in KServe's ``pkg/constants/constants.go``), so that a model that does not load is
    seen in seconds: KServe's ``canaryStatuses`` only say ready or not.  Without the right to list pods (the
    Role in manifests/ grants it) the rollout waits for readiness alone, with one warning."""
    from kubernetes.client import CoreV1Api
    from kubernetes.client.exceptions import ApiException

    if mode != "Standard":
        return list
    core, selector, denied = CoreV1Api(api_client), f"app=isvc.{name}-{canary}-predictor", []

    def pods() -> list[Json]:
        if denied:
            return []
        try:
            listed = core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False)
        except ApiException as error:
            if error.status != 403:
                raise
            denied.append(error)
            log.warning(
                "cannot list pods in %s (%s): a canary that fails to load is seen only at the timeout; grant "
                "pods get/list (the Role in manifests/)",
                namespace,
                _server_message(error),
            )
            return []
        import json

        return list(json.loads(listed.data).get("items") or [])

    return pods


#: The API group of Gateway API (HTTPRoute): KServe splits a Standard-mode canary's traffic only through it.
GATEWAY_API_GROUP = "gateway.networking.k8s.io"


def _gateway_api_note(api_client: Any, mode: str, percent: int) -> str:
    """'' unless a Standard-mode canary ran on a cluster that serves no Gateway API: KServe applies the canary's
    traffic percent only in its HTTPRoute reconciler (reconcilers/ingress/httproute_reconciler.go, with
    ``enableGatewayApi``); with a plain Ingress all external traffic stays on the stable predictor.  Discovery
    only (any authenticated user may read it), so an installed Gateway API with ``enableGatewayApi: false`` in
    KServe's ``inferenceservice-config`` is not seen (docs/kserve.md)."""
    from kubernetes.client import ApisApi

    if mode != "Standard":
        return ""
    groups = ApisApi(api_client).get_api_versions().groups or []
    if any(group.name == GATEWAY_API_GROUP for group in groups):
        return ""
    log.warning("no Gateway API on this cluster: the Standard-mode canary got no share of the external traffic")
    return (
        f" (this cluster serves no Gateway API ({GATEWAY_API_GROUP}): KServe splits Standard-mode traffic only "
        f"through an HTTPRoute, so the canary got none of the external traffic instead of {percent} %; it was "
        "judged by its readiness and the probe of its own address)"
    )


def _probe(probe: Callable[[str], None] | None, url: str) -> str:
    """'' when the probe passes (or there is none), else why it failed."""
    if probe is None:
        return ""
    try:
        probe(url)
    except Exception as error:  # the probe's own failure, whatever it is, means a bad model
        return f"probe of {url} failed: {type(error).__name__}: {error}"
    return ""


def rollout(
    api_client: Any,
    config: DeployConfig,
    *,
    storage_uri: str,
    model_version: str,
    image: str,
    max_seq_length: int = MAX_SEQ_LENGTH,
    probe: Callable[[str], None] | None = None,
    poll_seconds: float = 2.0,
    resource: kube.CustomResource = INFERENCE_SERVICES,
) -> Rollout:
    """Roll ``model_version`` out on KServe: create, canary then promote or roll back, or nothing.

    Args:
        api_client: A ``kubernetes.client.ApiClient`` (`load_api_client`).
        config: The deploy options (name, namespace, mode of a new InferenceService, canary %, runtime, timeout).
        storage_uri: Where KServe's storage initializer finds the model directory.
        model_version: The registered model version (its annotation makes a repeated deploy a no-op).
        image: The project's serve image (``serving_runtime`` project).
        max_seq_length: Tokens per text the server keeps (the training's; otherwise the canary answers differently).
        probe: Called with the canary's (or a new InferenceService's) URL once it is ready; raises on a bad model.
        poll_seconds: Seconds between two reads of the status.
        resource: Where InferenceServices live (KServe's by default).

    Raises:
        ValueError: A bad option or input.
        KServeError: KServe missing or too old for the mode, an unsupported mode, a permission missing.
    """
    config.validate()
    namespace = resolve_namespace(config.kserve_namespace)
    name, timeout = config.inference_service, float(config.rollout_timeout_seconds)
    rendered = {"storage_uri": storage_uri, "model_version": model_version, "image": image}
    predictor = isvc_.render_predictor(config, **rendered, max_seq_length=max_seq_length)
    canary = isvc_.predictor_name(name, model_version)  # a Standard-mode canary's name, checked before any write
    cluster = InferenceServiceClient(api_client, namespace, resource)
    cluster.check_installed()
    existing = cluster.get(name)
    try:
        plan = D.decide(existing, model_version, canonical_mode(config.kserve_mode))
    except D.UnsupportedModeError as error:
        raise KServeError(str(error)) from None

    def result(action: Action, mode: str, message: str, obj: Json | None = None) -> Rollout:
        log.info("kserve %s %s/%s: %s", action, namespace, name, message)
        return Rollout(action, cast(Mode, mode), D.endpoint(obj or {}), name, namespace, message)

    if plan.action == "create":
        body = isvc_.render_inference_service(config, namespace=namespace, **rendered, max_seq_length=max_seq_length)
        created = cluster.create(body)
        progress = _wait(cluster, name, D.ready_progress, timeout, poll_seconds)
        current = cluster.get(name) or created
        try:  # as KServe reports it; KServe's shipped default (Knative) when it does not
            mode = D.deployment_mode(current, plan.mode or "Knative")
        except D.UnsupportedModeError as error:
            raise KServeError(str(error)) from None
        failure = progress.detail if progress.state == "failed" else _probe(probe, progress.url)
        if failure:
            cluster.delete(name)
            return result(
                "rolled_back",
                mode,
                f"version {model_version}: {failure}; the new InferenceService was deleted (nothing served before it)",
            )
        return result("created", mode, f"version {model_version} serves 100 % of the traffic", current)

    assert existing is not None
    if plan.stale_canary:
        existing = cluster.update(name, lambda obj: D.rolled_back(obj, plan.mode))
    if plan.action == "no_op":
        return result("no_op", plan.mode, plan.reason, existing)

    percent = config.canary_traffic_percent
    before: list[Json] = []  # the object each write replaced: what KServe reported before it

    def edit(change: Callable[[Json], Json]) -> Callable[[Json], Json]:
        def apply(obj: Json) -> Json:
            before[:] = [obj]
            return change(obj)

        return apply

    cluster.update(name, edit(lambda obj: D.with_canary(obj, plan, predictor, percent=percent, canary_name=canary)))
    canary_seen, pods = before[0], _canary_pods(api_client, namespace, name, canary, plan.mode)
    progress = _wait(
        cluster, name, lambda obj: D.canary_progress(obj, plan.mode, canary_seen, canary, pods()), timeout, poll_seconds
    )
    failure = progress.detail if progress.state == "failed" else _probe(probe, progress.url)
    if failure:
        back = cluster.update(name, lambda obj: D.rolled_back(obj, plan.mode))
        return result("rolled_back", plan.mode, f"canary of version {model_version} rolled back: {failure}", back)
    traffic = _gateway_api_note(api_client, plan.mode, percent)
    promoted = cluster.update(name, edit(lambda obj: D.promoted(obj, plan.mode)))
    promotion_seen = before[0]
    confirmed = _wait(
        cluster, name, lambda obj: D.ready_progress(obj, plan.mode, promotion_seen), timeout, poll_seconds
    )
    note = "" if confirmed.state == "ready" else f" (promotion written; {confirmed.detail})"
    message = f"canary of version {model_version} passed at {percent} % and was promoted to 100 %{note}{traffic}"
    return result("promoted", plan.mode, message, cluster.get(name) or promoted)
