"""What a KServe rollout does, decided from the InferenceService as the API server returns it (pure functions).

`decide` reads the deployment mode and the versions (`read_state`) and returns a `Plan`: ``create`` (absent),
``canary`` (another version is live) or ``no_op`` (this version is live).  The spec edits follow KServe's own
semantics, per mode:

- ``Knative``: the predictor is replaced by the new one with ``canaryTrafficPercent: N`` (a new revision gets
  N %, the revision rolled out before keeps the rest); promote: remove ``canaryTrafficPercent`` (100 % to the
  latest revision); roll back: ``canaryTrafficPercent: 0`` (all traffic back on the previous revision; the
  spec keeps the failed model, so the predictor also records the version rolled out before it).
- ``Standard``: ``spec.canary: [{trafficPercent: N, predictor: {name: v<version>, …}}]`` (a second Deployment);
  promote: the canary's predictor becomes ``spec.predictor`` (same name, so its pods stay) and the entry goes;
  roll back: the entry goes.  ``canaryTrafficPercent`` is never used there (Standard mode ignores it and would
  roll out 100 %).

`canary_progress` and `ready_progress` read the status KServe's controller writes, per mode, and never compare
``status.observedGeneration`` with the InferenceService's generation: KServe copies it from the Knative Service
or the stable Deployment (``pkg/apis/serving/v1beta1/inference_service_status.go``), whose counters are their
own (in Standard mode adding ``spec.canary`` leaves the stable Deployment, and so that value, unchanged).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

from components.deploy import inference_service as isvc_
from components.deploy.config import MODE_ALIASES, MODES

Json = dict[str, Any]
Action = Literal["create", "canary", "no_op"]
#: Fields a Standard-mode canary entry may not set (KServe's validation: canaries run fixed replicas).
_NOT_ON_CANARY = ("maxReplicas", "minReplicas", "scaleTarget", "scaleMetric", "autoScaling", "workerSpec")
#: modelStatus.transitionStatus values that mean the model will not load as it is.
_FAILED_TRANSITIONS = ("BlockedByFailedLoad", "InvalidSpec")


class UnsupportedModeError(ValueError):
    """An InferenceService whose deployment mode this rollout cannot handle (or cannot tell)."""


@dataclass(frozen=True)
class State:
    """An existing InferenceService as far as the rollout cares.

    Attributes:
        mode: ``Knative`` or ``Standard``.
        live: The model version that takes the stable traffic ('' when not ours or unknown).
        candidate: The version of an unfinished canary ('' when none).
    """

    mode: str
    live: str
    candidate: str


@dataclass(frozen=True)
class Plan:
    action: Action
    mode: str
    reason: str
    #: The live version, recorded on a Knative canary so that a roll back still knows it.
    live: str = ""
    #: An unfinished canary of another version is there (an earlier run stopped): roll it back first.
    stale_canary: bool = False


@dataclass(frozen=True)
class Progress:
    """``waiting``, ``ready`` (with the URL to probe) or ``failed`` (with the reason)."""

    state: Literal["waiting", "ready", "failed"]
    url: str = ""
    detail: str = ""


def deployment_mode(isvc: Json | None, configured: str = "") -> str:
    """The mode KServe runs ``isvc`` in: ``status.deploymentMode``, else its annotation, else ``configured``
    (older names rewritten), as KServe itself decides it.

    Raises:
        UnsupportedModeError: ModelMesh or an unknown mode, or no mode to be told at all.
    """
    status_mode = ((isvc or {}).get("status") or {}).get("deploymentMode") or ""
    annotation = (((isvc or {}).get("metadata") or {}).get("annotations") or {}).get(isvc_.MODE_ANNOTATION) or ""
    mode = status_mode or annotation or configured
    mode = MODE_ALIASES.get(mode, mode)
    if not mode:
        name = ((isvc or {}).get("metadata") or {}).get("name", "")
        raise UnsupportedModeError(
            f"InferenceService {name}: its deployment mode is neither in status.deploymentMode nor in the "
            f"{isvc_.MODE_ANNOTATION} annotation; set --kserve-mode (pipeline parameter kserve_mode) to the mode it "
            "runs in (Knative or Standard)"
        )
    if mode not in MODES:
        raise UnsupportedModeError(
            f"deployment mode {mode!r} is not supported for canary rollouts; use Knative or Standard "
            "(Serverless and RawDeployment are rewritten to these)"
        )
    return mode


#: The mode names KServe used before 0.16 (``Knative`` and ``Standard`` came in 0.16; 0.16 and newer still read
#: these: pkg/controller/v1beta1/inferenceservice/utils/utils.go GetDeploymentMode).
LEGACY_MODE_NAMES = {new: old for old, new in MODE_ALIASES.items()}


def _annotations(isvc: Json) -> dict[str, str]:
    return dict(((isvc.get("metadata") or {}).get("annotations")) or {})


def _with_annotation(isvc: Json, value: str) -> Json:
    out = copy.deepcopy(isvc)
    out.setdefault("metadata", {}).setdefault("annotations", {})[isvc_.MODE_ANNOTATION] = value
    return out


def with_legacy_mode_name(isvc: Json) -> Json:
    """A new InferenceService with its mode annotation in the pre-0.16 name (``Serverless``, ``RawDeployment``):
    every KServe from 0.6 reads it, while a KServe older than 0.16 ignores ``Knative``/``Standard`` and deploys in
    its default mode instead.  Sent as the dry run: KServe 0.17 and newer answer with the new name
    (inference_service_defaults.go normalizes it), which `with_mode_name_of` then keeps."""
    mode = _annotations(isvc).get(isvc_.MODE_ANNOTATION, "")
    return _with_annotation(isvc, LEGACY_MODE_NAMES[mode]) if mode in LEGACY_MODE_NAMES else isvc


def with_mode_name_of(isvc: Json, answered: Json) -> Json:
    """``isvc`` with the mode name the server's dry run answered (KServe's defaulter may rename it)."""
    mode = _annotations(answered).get(isvc_.MODE_ANNOTATION, "")
    sent = _annotations(isvc).get(isvc_.MODE_ANNOTATION, "")
    if mode and sent and MODE_ALIASES.get(mode, mode) == MODE_ALIASES.get(sent, sent):
        return _with_annotation(isvc, mode)
    return isvc


def with_status_mode_name(isvc: Json) -> Json:
    """An update with its mode annotation in the name of ``status.deploymentMode`` when KServe wrote one
    (0.16 and newer): KServe's validation refuses an update whose annotation differs from it
    (inference_service_validation.go validateDeploymentMode, a plain string comparison in 0.16)."""
    status_mode = str(((isvc.get("status") or {}).get("deploymentMode")) or "")
    mode = _annotations(isvc).get(isvc_.MODE_ANNOTATION, "")
    if (
        status_mode
        and mode
        and mode != status_mode
        and MODE_ALIASES.get(mode, mode) == MODE_ALIASES.get(status_mode, status_mode)
    ):
        return _with_annotation(isvc, status_mode)
    return isvc


def _version(predictor: Json, key: str = isvc_.VERSION_ANNOTATION) -> str:
    return str((predictor.get("annotations") or {}).get(key) or "")


def read_state(isvc: Json, configured_mode: str = "") -> State:
    """The mode, the live version and an unfinished canary's version of an existing InferenceService."""
    mode = deployment_mode(isvc, configured_mode)
    spec = isvc.get("spec") or {}
    predictor = spec.get("predictor") or {}
    if mode == "Standard":
        canaries = spec.get("canary") or []
        candidate = _version(canaries[0].get("predictor") or {}) if canaries else ""
        return State(mode, _version(predictor), candidate)
    percent = predictor.get("canaryTrafficPercent")
    if percent is None or percent >= 100:
        return State(mode, _version(predictor), "")
    previous = _version(predictor, isvc_.PREVIOUS_VERSION_ANNOTATION)
    return State(mode, previous, "" if percent == 0 else _version(predictor))


def decide(isvc: Json | None, model_version: str, configured_mode: str = "") -> Plan:
    """What to do to serve ``model_version``: create, canary or nothing."""
    if isvc is None:
        return Plan("create", configured_mode, "no InferenceService yet: create it at 100 %")
    state = read_state(isvc, configured_mode)
    stale = bool(state.candidate) and state.candidate != model_version
    if state.live == model_version:
        reason = f"model version {model_version} is already live"
        if state.candidate:
            reason += f"; the unfinished canary of version {state.candidate} is rolled back"
        return Plan("no_op", state.mode, reason, state.live, bool(state.candidate))
    live = f"version {state.live}" if state.live else "a model without a version annotation"
    return Plan("canary", state.mode, f"{live} is live: canary for version {model_version}", state.live, stale)


# --- spec edits (each returns a copy) ----------------------------------------------------------------------------


def _stable_rest(predictor: Json) -> Json:
    """``predictor`` without what serves the model (its implementation) and without canary settings."""
    drop = (*isvc_.IMPLEMENTATIONS, "canaryTrafficPercent")
    return {key: copy.deepcopy(value) for key, value in predictor.items() if key not in drop}


def _merged(base: Json, new_predictor: Json) -> Json:
    merged = _stable_rest(base) | copy.deepcopy(new_predictor)
    annotations = dict(base.get("annotations") or {})
    annotations.pop(isvc_.PREVIOUS_VERSION_ANNOTATION, None)
    merged["annotations"] = annotations | dict(new_predictor.get("annotations") or {})
    return merged


def with_canary(isvc: Json, plan: Plan, new_predictor: Json, *, percent: int, canary_name: str) -> Json:
    """``isvc`` with ``new_predictor`` (from `inference_service.render_predictor`) as a canary at ``percent``.

    The stable predictor's other settings (replicas, resources, placement) are kept for the new model.
    """
    out = copy.deepcopy(isvc)
    spec = out["spec"]
    stable = spec.get("predictor") or {}
    if plan.mode == "Standard":
        predictor = {k: v for k, v in _merged(stable, new_predictor).items() if k not in _NOT_ON_CANARY}
        spec["canary"] = [{"trafficPercent": percent, "predictor": predictor | {"name": canary_name}}]
        annotations = out["metadata"].setdefault("annotations", {})
        annotations[isvc_.MODE_ANNOTATION] = "Standard"  # KServe accepts spec.canary only with it set so
        return out
    # Tag routing gives the canary revision a URL of its own (written with the new model: one revision).
    out["metadata"].setdefault("annotations", {})[isvc_.TAG_ROUTING_ANNOTATION] = "true"
    predictor = _merged(stable, new_predictor) | {"canaryTrafficPercent": percent}
    if plan.live:
        predictor["annotations"][isvc_.PREVIOUS_VERSION_ANNOTATION] = plan.live
    spec["predictor"] = predictor
    return out


def promoted(isvc: Json, mode: str) -> Json:
    """``isvc`` with its canary taking all the traffic (and becoming the stable predictor)."""
    out = copy.deepcopy(isvc)
    spec = out["spec"]
    if mode == "Standard":
        canaries = spec.pop("canary", None) or []
        if canaries:
            spec["predictor"] = _stable_rest(spec["predictor"]) | copy.deepcopy(canaries[0]["predictor"])
        return out
    spec["predictor"].pop("canaryTrafficPercent", None)
    return out


def rolled_back(isvc: Json, mode: str) -> Json:
    """``isvc`` with all traffic back on the predictor rolled out before its canary."""
    out = copy.deepcopy(isvc)
    if mode == "Standard":
        out["spec"].pop("canary", None)
    else:
        out["spec"]["predictor"]["canaryTrafficPercent"] = 0
    return out


# --- reading the status -----------------------------------------------------------------------------------------


def _condition(isvc: Json, type_: str) -> Json:
    for condition in (isvc.get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_:
            return dict(condition)
    return {}


def _why(condition: Json) -> str:
    return " ".join(part for part in (condition.get("reason"), condition.get("message")) if part) or "not ready"


def endpoint(isvc: Json) -> str:
    """The InferenceService's URL (``status.url``), else its cluster address."""
    status = isvc.get("status") or {}
    return str(status.get("url") or (status.get("address") or {}).get("url") or "")


def _observed_generation(isvc: Json | None) -> int:
    return int(((isvc or {}).get("status") or {}).get("observedGeneration") or 0)


def _latest_traffic(predictor_status: Json) -> Json:
    latest = [t for t in predictor_status.get("traffic") or [] if t.get("latestRevision")]
    return dict(latest[0]) if latest else {}


def _load_failure(model_status: Json) -> str:
    if model_status.get("transitionStatus") in _FAILED_TRANSITIONS:
        info = model_status.get("lastFailureInfo") or {}
        return f"{model_status['transitionStatus']}: {info.get('reason', '')} {info.get('message', '')}".strip()
    return ""


def cluster_local_url(isvc: Json) -> str:
    """The InferenceService's cluster-local address (``status.address.url``), else its ``status.url``.

    A step runs in the cluster: the external URL resolves there only where the cluster's DNS knows the
    ingress domain, the cluster-local one always.
    """
    status = isvc.get("status") or {}
    return str((status.get("address") or {}).get("url") or status.get("url") or "")


def knative_tag_url(isvc: Json, tag: str) -> str:
    """The cluster-local URL of the Knative traffic tag ``tag`` of the predictor.

    Knative serves a tag ``t`` of route ``r`` at ``t-r.<namespace>.svc.<cluster domain>`` inside the cluster
    (a placeholder Service per tag), i.e. the predictor's cluster-local host with ``t-`` in front.
    """
    namespace, name = isvc["metadata"].get("namespace", ""), isvc["metadata"]["name"]
    predictor = ((isvc.get("status") or {}).get("components") or {}).get("predictor") or {}
    address = str((predictor.get("address") or {}).get("url") or "")
    scheme, sep, host = address.partition("://")
    if sep and host:
        return f"{scheme}://{tag}-{host}"
    return f"http://{tag}-{name}-predictor.{namespace}.svc.cluster.local"


#: Container states that mean a pod will not serve as it is (the kubelet's waiting reasons).
_FAILED_WAITING = (
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
)


def pod_failure(pods: list[Json]) -> str:
    """Why one of ``pods`` (a Deployment's, as the API server lists them) cannot serve, '' when none fails.

    A container (the storage initializer included) waiting in CrashLoopBackOff or on an image that cannot be
    pulled, or a pod in phase Failed; the last termination's exit code and message are quoted.
    """
    for pod in pods:
        name = (pod.get("metadata") or {}).get("name", "?")
        status = pod.get("status") or {}
        if status.get("phase") == "Failed":
            return f"pod {name} failed: {status.get('reason', '')} {status.get('message', '')}".strip()
        containers = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
        for container in containers:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") not in _FAILED_WAITING:
                continue
            last = (container.get("lastState") or {}).get("terminated") or {}
            exited = f"; last exit code {last.get('exitCode')}: {last.get('message') or last.get('reason') or ''}"
            why = " ".join(part for part in (waiting.get("reason"), waiting.get("message")) if part)
            return f"pod {name}, container {container.get('name', '?')}: {why}{exited if last else ''}".strip()
    return ""


def ready_progress(isvc: Json, mode: str = "", before: Json | None = None) -> Progress:
    """Whether a new InferenceService (``before`` None) or a promotion written over ``before`` is Ready.

    KServe's ``status.observedGeneration`` is not the InferenceService's generation: it is copied from the
    Knative Service (Knative mode) or the stable Deployment (Standard mode), so it is only compared with the
    value ``before`` the write.  A promotion is seen when, in Knative mode, that value moved and the latest
    revision has 100 % of the traffic; in Standard mode, when the canary statuses and the
    ``CanaryPredictorReady`` condition are gone (KServe rebuilds them from ``spec.canary`` on each
    reconcile and clears them when it is empty).
    """
    status = isvc.get("status") or {}
    if before is not None and mode == "Standard":
        if status.get("canaryStatuses") or _condition(isvc, "CanaryPredictorReady"):
            return Progress("waiting", detail="the canary is still reported (promotion not observed yet)")
    elif before is not None:
        predictor = (status.get("components") or {}).get("predictor") or {}
        if _observed_generation(isvc) == _observed_generation(before):
            return Progress("waiting", detail="the promotion is not observed yet")
        if _latest_traffic(predictor).get("percent") != 100:
            return Progress("waiting", detail="the latest revision has not got 100 % of the traffic yet")
    failure = _load_failure(status.get("modelStatus") or {})
    if failure:
        return Progress("failed", detail=failure)
    ready = _condition(isvc, "Ready")
    if ready.get("status") == "True":
        return Progress("ready", url=cluster_local_url(isvc))
    return Progress("waiting", detail=_why(ready) if ready else "no Ready condition yet")


def canary_progress(isvc: Json, mode: str, before: Json, canary_name: str, pods: list[Json] | None = None) -> Progress:
    """Whether the canary written over ``before`` (the object as read just before the write) is up; the
    cluster-local URL to probe it when it is.

    Standard mode: the canary's entry in ``status.canaryStatuses`` (KServe writes name, ready and traffic
    percent, rebuilt from ``spec.canary`` each time) and ``CanaryPredictorReady``; a load failure shows in its
    ``pods`` (``pod_failure``), as KServe does not report it there.  Knative mode: the Knative Service's
    generation (``status.observedGeneration``) moved since ``before``, the latest revision has the canary's
    percent and is the latest ready one.
    """
    status = isvc.get("status") or {}
    namespace, name = isvc["metadata"].get("namespace", ""), isvc["metadata"]["name"]
    if mode == "Standard":
        mine = [c for c in status.get("canaryStatuses") or [] if c.get("name") == canary_name]
        failure = _load_failure((mine[0].get("modelStatus") or {}) if mine else {}) or pod_failure(pods or [])
        if failure:
            return Progress("failed", detail=f"canary {canary_name}: {failure}")
        condition = _condition(isvc, "CanaryPredictorReady")
        if condition.get("status") == "True" and mine and mine[0].get("ready"):
            return Progress("ready", url=f"http://{name}-{canary_name}-predictor.{namespace}.svc")
        if not mine:
            return Progress("waiting", detail=f"canary {canary_name} not in status.canaryStatuses yet")
        return Progress("waiting", detail=_why(condition) if condition else "no CanaryPredictorReady condition yet")
    if _observed_generation(isvc) == _observed_generation(before):
        return Progress("waiting", detail="the canary is not observed yet (status.observedGeneration unchanged)")
    predictor = (status.get("components") or {}).get("predictor") or {}
    percent = ((isvc.get("spec") or {}).get("predictor") or {}).get("canaryTrafficPercent")
    created, ready_revision = predictor.get("latestCreatedRevision"), predictor.get("latestReadyRevision")
    latest = _latest_traffic(predictor)
    failure = _load_failure(status.get("modelStatus") or {})
    ready = _condition(isvc, "Ready")
    if failure or (ready.get("status") == "False" and created and created != ready_revision):
        return Progress("failed", detail=failure or f"revision {created}: {_why(ready)}")
    if latest and latest.get("percent") != percent:
        return Progress("waiting", detail=f"the latest revision has {latest.get('percent')} %, not {percent} % yet")
    up = ready.get("status") == "True" and created and created == ready_revision
    if up and latest and latest.get("revisionName") in (None, created):
        return Progress("ready", url=knative_tag_url(isvc, str(latest.get("tag") or "latest")))
    return Progress("waiting", detail=f"revision {created or '?'} not ready ({_why(ready) if ready else 'no Ready'})")
