"""The deploy step's options, declared once (see `components.common.options`)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from components.common import options, schema

#: KServe's deployment modes; the older names are rewritten to these (as KServe itself does).
MODES = ("Knative", "Standard")
MODE_ALIASES = {"Serverless": "Knative", "RawDeployment": "Standard"}

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
#: A ServiceAccount's name: a DNS subdomain (RFC 1123), at most 253 characters.
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
#: A Kubernetes quantity without a sign (k8s.io/apimachinery/pkg/api/resource/quantity.go: a number, then a
#: binary-SI suffix Ki…Ei, a decimal-SI suffix m, k, M…E, or a decimal exponent e<n>/E<n>).
_QUANTITY = re.compile(r"^(?P<number>\d+(\.\d*)?|\.\d+)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?\d+)?$")
_SUFFIXES = {"m": Decimal("0.001"), "": Decimal(1)}
_SUFFIXES |= {s: Decimal(1000) ** (i + 1) for i, s in enumerate("kMGTPE")}
_SUFFIXES |= {s + "i": Decimal(1024) ** (i + 1) for i, s in enumerate("KMGTPE")}
#: The resources the model server's container may ask for (a GPU too, for a GPU node pool).
RESOURCE_NAMES = ("cpu", "memory", "ephemeral-storage", "nvidia.com/gpu")


def quantity(text: str) -> Decimal:
    """The value of a Kubernetes quantity (``500m`` → 0.5, ``2Gi`` → 2147483648).

    Raises:
        ValueError: Not a quantity (the text is named).
    """
    match = _QUANTITY.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 500m, 2, 4Gi)")
    suffix = match["suffix"] or ""
    try:
        number = Decimal(match["number"])
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 500m, 2, 4Gi)") from None
    if suffix[:1] in ("e", "E"):
        return number * Decimal(10) ** int(suffix[1:])
    return number * _SUFFIXES[suffix]


def parse_resources(text: str) -> dict[str, dict[str, str]]:
    """``kserve_resources`` as the container's ``resources`` (``requests``/``limits`` of `RESOURCE_NAMES`); empty
    text: none.

    Raises:
        ValueError: Not JSON of that shape, a quantity that is not one, or a request above its limit (named).
    """
    name = options.flag("kserve_resources")
    if not text.strip():
        return {}
    try:
        parsed: Any = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f'{name} is not JSON ({error.msg}); write e.g. {{"requests": {{"cpu": "1", "memory": "2Gi"}}, '
            '"limits": {"memory": "4Gi"}}'
        ) from None
    if not isinstance(parsed, dict) or not parsed or set(parsed) - {"requests", "limits"}:
        raise ValueError(f"{name} must be a mapping with 'requests' and/or 'limits', got {text!r}")
    resources: dict[str, dict[str, str]] = {}
    for kind, values in parsed.items():
        if not isinstance(values, dict) or not values:
            raise ValueError(f"{name}: {kind!r} must map resource names to quantities, got {values!r}")
        for resource, value in values.items():
            if resource not in RESOURCE_NAMES:
                raise ValueError(f"{name}: {kind}.{resource} is not one of {', '.join(RESOURCE_NAMES)}")
            try:
                quantity(value)
            except ValueError as error:
                raise ValueError(f"{name}: {kind}.{resource}: {error}") from None
        resources[kind] = dict(values)
    for resource, request in resources.get("requests", {}).items():
        limit = resources.get("limits", {}).get(resource)
        if limit is not None and quantity(request) > quantity(limit):
            raise ValueError(f"{name}: requests.{resource} {request} is above limits.{resource} {limit}")
    return resources


def canonical_mode(mode: str) -> str:
    """``mode`` with KServe's older names rewritten (``Serverless`` → ``Knative``, ``RawDeployment`` →
    ``Standard``); empty stays empty.

    Raises:
        ValueError: an unknown mode, naming the valid ones.
    """
    mode = MODE_ALIASES.get(mode, mode)
    if mode and mode not in MODES:
        valid = ", ".join([*MODES, *MODE_ALIASES])
        raise ValueError(
            f"{options.flag('kserve_mode')} {mode!r} is not a KServe deployment mode; use one of {valid} (or empty)"
        )
    return mode


@dataclass(frozen=True)
class DeployConfig:
    """Where and how a model that passed the gate is rolled out."""

    deploy_backend: Literal["local", "kserve"] = field(
        default="local",
        metadata={
            "help": "local: start the model server on this machine, smoke-test it, promote; kserve: roll the "
            "model out as a KServe InferenceService canary."
        },
    )
    canary_traffic_percent: int = field(
        default=10,
        metadata={"help": "KServe: share of traffic the new model gets while it is a canary.", "min": 1, "max": 99},
    )
    inference_service: str = field(
        default=schema.MODEL_NAME,
        metadata={"help": "KServe: the InferenceService's name (a DNS label)."},
    )
    kserve_namespace: str = field(
        default="",
        metadata={"help": "KServe: namespace of the InferenceService; empty: the namespace the step's pod runs in."},
    )
    kserve_mode: str = field(
        default="",
        metadata={
            "help": "KServe deployment mode of a new InferenceService: Knative or Standard (Serverless and "
            "RawDeployment are rewritten); empty: the cluster's default. An existing one keeps its mode."
        },
    )
    serving_runtime: Literal["project", "huggingface"] = field(
        default="project",
        metadata={
            "help": "KServe predictor: the project's serve image, or KServe's Hugging Face runtime "
            "(kserve-huggingfaceserver)."
        },
    )
    kserve_service_account: str = field(
        default="",
        metadata={
            "help": "KServe: the ServiceAccount the predictor's pods run as; KServe's storage initializer downloads "
            "the model with the credentials of the Secret attached to it (manifests/: bert-kserve). Empty: the "
            "namespace's default; the compiled pipeline's default is the profile's serving.service_account."
        },
    )
    kserve_resources: str = field(
        default="",
        metadata={
            "help": "KServe: the model server container's resources as JSON, e.g. "
            '{"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}}. Empty: none; the compiled '
            "pipeline's default is the profile's serving.resources."
        },
    )
    rollout_timeout_seconds: int = field(
        default=600,
        metadata={"help": "Wait at most this long for the model server or the canary to become ready.", "min": 1},
    )
    smoke_reviews: int = field(
        default=32,
        metadata={"help": "Held-out reviews sent to the deployed model; its answers must equal evaluate's.", "min": 1},
    )
    local_port: int = field(
        default=0,
        metadata={
            "help": "local: port of the model server on 127.0.0.1 during the smoke test; 0: a free one.",
            "min": 0,
            "max": 65535,
        },
    )

    def validate(self) -> None:
        """Check every option: bounds and choices, the names Kubernetes will see, the mode.

        Raises:
            ValueError: The first problem, naming the option.
        """
        options.check_fields(self)
        if not _DNS_LABEL.match(self.inference_service):
            raise ValueError(
                f"{options.flag('inference_service')} {self.inference_service!r} is not a DNS label: use lower-case "
                "letters, digits and '-', starting with a letter, at most 63 characters"
            )
        if self.kserve_namespace and not _DNS_LABEL.match(self.kserve_namespace):
            raise ValueError(
                f"{options.flag('kserve_namespace')} {self.kserve_namespace!r} is not a valid Kubernetes namespace name"
            )
        canonical_mode(self.kserve_mode)
        account = self.kserve_service_account
        if account and (len(account) > 253 or not _DNS_SUBDOMAIN.match(account)):
            raise ValueError(
                f"{options.flag('kserve_service_account')} {account!r} is not a ServiceAccount name: use lower-case "
                "letters, digits, '-' and '.', at most 253 characters"
            )
        parse_resources(self.kserve_resources)
