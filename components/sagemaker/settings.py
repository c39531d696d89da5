"""A profile's ``sagemaker:`` section: where and how the SageMaker target's steps work on AWS.

`pipelines.profiles` reads the section into `SageMakerSettings` (pydantic: unknown keys, wrong types and
values out of range fail with the key's path), `check_for_profile` adds the rules that need the rest of the
profile, and `pipelines.targets` hands the section to the SageMaker steps as one environment variable,
`ENV` (JSON), which `SageMakerSettings.from_env` reads back in the pod.  Credentials are never here: the
pod's own (IRSA on EKS, a Secret's keys on-prem).

The ranges are SageMaker's own (API reference, DESIGN.md §9): a canary of at most half the variant's
capacity, a wait interval of 0–3,600 s, a maximum execution time of 600–28,800 s, 1–10 alarms, a training
run of at most 28 days.
"""

from __future__ import annotations

import json
import os
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

#: The environment variable the SageMaker steps read their settings from (JSON of `SageMakerSettings`).
ENV = "BERT_KFP_SAGEMAKER"
#: SageMaker's limit on a training job's run (28 days).
MAX_RUNTIME_SECONDS = 2_419_200
#: Instance families with NVIDIA GPUs (the train image is CUDA torch); g4ad has AMD GPUs, trn/inf are Neuron.
_NVIDIA = re.compile(r"^ml\.(p\d+[a-z]*|g\d+[a-z]*)\.[0-9a-z]+$")
_NOT_NVIDIA = re.compile(r"^ml\.g4ad\.")
_ROLE_ARN = re.compile(r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$")
_ECR = re.compile(
    r"^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[a-z0-9._/-]+(:[\w.-]{1,128}|@sha256:[0-9a-f]{64})$"
)
_S3 = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")

InstanceType = Annotated[str, StringConstraints(pattern=r"^ml\.[a-z0-9]+\.[0-9a-z]+$")]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def is_nvidia_gpu(instance_type: str) -> bool:
    """Whether a SageMaker instance type has NVIDIA GPUs (what the CUDA train image needs)."""
    return bool(_NVIDIA.match(instance_type)) and not _NOT_NVIDIA.match(instance_type)


class Images(_Section):
    """ECR URIs of the project's images; empty: the image the pipeline is compiled with (`make images` pushed
    to ``$BERT_KFP_REGISTRY``, which must then be an ECR repository path)."""

    train: str = ""
    serve: str = ""


class Training(_Section):
    """The final training job: instances, spot, stopping condition, and how long the step waits."""

    instance_type: InstanceType = "ml.g5.2xlarge"
    instance_count: int = Field(default=1, ge=1, le=100)
    volume_size_gb: int = Field(default=50, ge=1, le=16384)
    #: Managed spot training: cheaper, may be interrupted (the job resumes from /opt/ml/checkpoints).
    spot: bool = False
    #: StoppingCondition.MaxRuntimeInSeconds.
    max_runtime_seconds: int = Field(default=86_400, ge=1, le=MAX_RUNTIME_SECONDS)
    #: StoppingCondition.MaxWaitTimeInSeconds (spot only): run time plus time waiting for spot capacity.
    max_wait_seconds: int | None = Field(default=None, ge=1, le=MAX_RUNTIME_SECONDS)
    #: StoppingCondition.MaxPendingTimeInSeconds (optional): give up when capacity does not come.
    max_pending_seconds: int | None = Field(default=None, ge=7200, le=MAX_RUNTIME_SECONDS)

    @model_validator(mode="after")
    def _spot_wait(self) -> Training:
        if self.spot and self.max_wait_seconds is None:
            raise ValueError("max_wait_seconds: spot training needs it (at least max_runtime_seconds)")
        if not self.spot and self.max_wait_seconds is not None:
            raise ValueError("max_wait_seconds: only for spot training (set spot: true or remove it)")
        if self.max_wait_seconds is not None and self.max_wait_seconds < self.max_runtime_seconds:
            raise ValueError(
                f"max_wait_seconds: {self.max_wait_seconds} is below max_runtime_seconds {self.max_runtime_seconds}; "
                "SageMaker needs it at least as long"
            )
        return self


class Tuning(_Section):
    """The tuning job's training jobs (one per trial) and the search it runs by default."""

    instance_type: InstanceType = "ml.g5.xlarge"
    instance_count: int = Field(default=1, ge=1, le=100)
    volume_size_gb: int = Field(default=50, ge=1, le=16384)
    max_runtime_seconds: int = Field(default=86_400, ge=1, le=MAX_RUNTIME_SECONDS)
    #: The pipeline's default ``tuning_spec`` on this target (a YAML file or text; empty: the project's default).
    spec: str = ""


class Hosting(_Section):
    """The endpoint's production variant."""

    instance_type: InstanceType = "ml.g5.xlarge"
    instance_count: int = Field(default=2, ge=1, le=100)
    endpoint_name: Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")] = (
        "bert-review-sentiment"
    )
    variant_name: Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")] = "AllTraffic"


class Canary(_Section):
    """The blue/green canary of an endpoint update, and the alarms that roll it back."""

    #: CanarySize as CAPACITY_PERCENT of the variant's instances.
    size_percent: int = Field(default=10, ge=1)
    wait_interval_seconds: int = Field(default=600, ge=0, le=3600)
    termination_wait_seconds: int = Field(default=300, ge=0, le=3600)
    max_execution_timeout_seconds: int = Field(default=3600, ge=600, le=28_800)
    #: CloudWatch alarms whose firing rolls the update back (AutoRollbackConfiguration.Alarms: 1–10).
    alarms: tuple[Annotated[str, StringConstraints(min_length=1, max_length=255)], ...] = Field(
        default=(), validate_default=True
    )

    @field_validator("size_percent")
    @classmethod
    def _half(cls, value: int) -> int:
        if value > 50:
            raise ValueError(f"{value} is above 50: SageMaker's canary takes at most half of the variant's capacity")
        return value

    @field_validator("alarms")
    @classmethod
    def _alarms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not 1 <= len(value) <= 10:
            raise ValueError(
                f"{len(value)} alarm(s): name 1 to 10 CloudWatch alarms (AutoRollbackConfiguration takes 1 to 10)"
            )
        if len(set(value)) != len(value):
            raise ValueError(f"alarm names repeat: {list(value)}")
        return value


class Vpc(_Section):
    security_group_ids: tuple[Annotated[str, StringConstraints(pattern=r"^sg-[0-9a-z]+$")], ...] = Field(
        min_length=1, max_length=5
    )
    subnets: tuple[Annotated[str, StringConstraints(pattern=r"^subnet-[0-9a-z]+$")], ...] = Field(
        min_length=1, max_length=16
    )


class Waiting(_Section):
    """How the steps poll SageMaker: the first interval, growing by ``backoff`` up to ``max_poll_seconds``."""

    poll_seconds: float = Field(default=15.0, gt=0)
    max_poll_seconds: float = Field(default=120.0, gt=0)
    backoff: float = Field(default=1.5, ge=1.0)
    #: How long a step waits for its job at most (then it stops the job and fails); None: the job's own limit
    #: plus an hour.
    timeout_seconds: int | None = Field(default=None, ge=60)
    #: How long a stop (SIGTERM, timeout) waits for the job to reach Stopped.
    stop_wait_seconds: int = Field(default=100, ge=1, le=110)


class SageMakerSettings(_Section):
    """The whole section (``sagemaker:`` of a profile)."""

    region: Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d$")]
    #: The execution role SageMaker assumes for the jobs and the endpoint (the pod needs iam:PassRole on it).
    role_arn: str
    #: s3://bucket/prefix: channels, models and checkpoints of each run go under it.
    s3_prefix: str
    images: Images = Images()
    training: Training = Training()
    tuning: Tuning = Tuning()
    hosting: Hosting = Hosting()
    canary: Canary
    vpc: Vpc | None = None
    #: KMS key for the jobs' volumes and outputs, the endpoint's volume and the S3 objects the steps write.
    kms_key_id: str = ""
    tags: dict[Annotated[str, StringConstraints(min_length=1, max_length=128)], str] = Field(default_factory=dict)
    #: On-prem: Secret whose AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN become the SageMaker
    #: steps' environment; empty: the pod's own credentials (IRSA on EKS).
    credentials_secret: str = ""
    waiting: Waiting = Waiting()

    @field_validator("role_arn")
    @classmethod
    def _role(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("missing: the SageMaker execution role's ARN (arn:aws:iam::<account>:role/<name>)")
        if not _ROLE_ARN.match(value.strip()):
            raise ValueError(f"{value!r} is not an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)")
        return value.strip()

    @field_validator("s3_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("missing: an s3://bucket/prefix for the channels, models and checkpoints")
        if not _S3.match(value.strip()):
            raise ValueError(f"{value!r} is not an s3://bucket/prefix URI")
        return value.strip().rstrip("/")

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 50:
            raise ValueError(f"{len(value)} tags: SageMaker takes at most 50")
        if any(k.lower().startswith("aws:") for k in value):
            raise ValueError("tag keys starting with aws: are reserved by AWS")
        return value

    def bucket_and_key(self, *parts: str) -> tuple[str, str]:
        """(bucket, key) of ``<s3_prefix>/<parts...>``."""
        bucket, _, prefix = self.s3_prefix.removeprefix("s3://").partition("/")
        return bucket, "/".join(p.strip("/") for p in (prefix, *parts) if p.strip("/"))

    def s3_uri(self, *parts: str) -> str:
        bucket, key = self.bucket_and_key(*parts)
        return f"s3://{bucket}/{key}"

    def tag_list(self) -> list[dict[str, str]]:
        return [{"Key": k, "Value": str(v)} for k, v in self.tags.items()]

    def image(self, name: str) -> str:
        """The ECR URI of image ``name`` (train or serve).

        Raises:
            ValueError: Not an ECR URI (SageMaker pulls from ECR), naming the key.
        """
        from components.common import image

        uri = getattr(self.images, name) or image.resolve(name)
        if not _ECR.match(uri):
            raise ValueError(
                f"sagemaker.images.{name}: {uri!r} is not an ECR image URI "
                "(<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>); set it, or compile with "
                "BERT_KFP_REGISTRY=<account>.dkr.ecr.<region>.amazonaws.com/<path> after pushing `make images` there"
            )
        return uri

    def to_env(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> SageMakerSettings:
        """The settings the pipeline gave this step (`ENV`).

        Raises:
            ValueError: The variable is missing (the step was not compiled for the sagemaker target) or bad.
        """
        text = (os.environ if environ is None else environ).get(ENV, "").strip()
        if not text:
            raise ValueError(
                f"${ENV} is not set: this step runs on the SageMaker target only "
                "(python -m pipelines compile --target sagemaker --profile <profile with a sagemaker section>)"
            )
        return parse(json.loads(text))


def error_line(error: ValidationError, root: str = "sagemaker") -> str:
    """The first error of a pydantic validation as one line naming the key: ``sagemaker.canary.size_percent: …``."""
    first = error.errors()[0]
    where = ".".join([root, *(str(p) for p in first["loc"])])
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "missing":
        message = "missing"
        hints = {"role_arn": " (the SageMaker execution role's ARN)", "s3_prefix": " (s3://bucket/prefix)"}
        message += hints.get(str(first["loc"][-1]), "")
    elif first["type"] == "extra_forbidden":
        message = "unknown key"
    return f"{where}: {message}"


def parse(body: Any) -> SageMakerSettings:
    """The section from its YAML/JSON mapping.

    Raises:
        ValueError: One line naming the key (`error_line`).
    """
    if not isinstance(body, dict):
        raise ValueError("sagemaker: a mapping is needed")
    try:
        return SageMakerSettings.model_validate(body)
    except ValidationError as error:
        raise ValueError(error_line(error)) from None


def check_for_profile(settings: SageMakerSettings, gpu: bool) -> None:
    """The rules that need the rest of the profile: a GPU profile trains and tunes on NVIDIA GPU instances.

    Also: the instance types are ones SageMaker offers for training and hosting (botocore's enums), and the
    search of ``tuning.spec`` (the default spec when empty) is one SageMaker can run.

    Raises:
        ValueError: One line naming the key.
    """
    from components.sagemaker import limits, tuning
    from components.tune import spec_loading

    for key, instance, shape in (
        ("training.instance_type", settings.training.instance_type, "TrainingInstanceType"),
        ("tuning.instance_type", settings.tuning.instance_type, "TrainingInstanceType"),
        ("hosting.instance_type", settings.hosting.instance_type, "ProductionVariantInstanceType"),
    ):
        if instance not in limits.enum_of("sagemaker", shape):
            raise ValueError(f"sagemaker.{key}: SageMaker has no {instance} for this ({shape})")
    try:
        spec = spec_loading.load_spec(settings.tuning.spec)
        spec.validate()
        tuning.check(spec)
    except ValueError as error:
        raise ValueError(f"sagemaker.tuning.spec: {error}") from None
    if not gpu:
        return
    for key, instance in (
        ("training.instance_type", settings.training.instance_type),
        ("tuning.instance_type", settings.tuning.instance_type),
    ):
        if not is_nvidia_gpu(instance):
            raise ValueError(
                f"sagemaker.{key}: {instance} has no NVIDIA GPU but the profile has a gpu entry (the train image is "
                "CUDA torch): choose an ml.g5/g6/p4d/p5… instance, or use a profile without gpu"
            )
