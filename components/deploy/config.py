"""The deploy step's options, declared once (see `components.common.options`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from components.common import options

#: KServe's deployment modes; the older names are rewritten to these (as KServe itself does).
MODES = ("Knative", "Standard")
MODE_ALIASES = {"Serverless": "Knative", "RawDeployment": "Standard"}

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


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
        default="review-sentiment",
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
