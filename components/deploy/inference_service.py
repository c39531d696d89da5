"""The ``serving.kserve.io/v1beta1`` InferenceService of a model version, checked against KServe's SDK models.

Two predictors, chosen by `DeployConfig.serving_runtime`:

- ``project``: the project's serve image as KServe's custom container ``kserve-container`` running
  ``python -m serving --model-dir /mnt/models …``; the ``STORAGE_URI`` environment variable of that container
  makes KServe's storage initializer download the model directory to ``/mnt/models`` first.
- ``huggingface``: KServe's Hugging Face runtime (``modelFormat: huggingface``, runtime
  ``kserve-huggingfaceserver``) with ``storageUri``, as a sequence classifier that returns probabilities.

The model version is an annotation of the predictor (``bert-kfp/model-version``), not of the InferenceService:
in ``Standard`` mode a promoted canary's predictor becomes the stable one unchanged (its pods are not restarted),
and in ``Knative`` mode it changes together with the model, so it never makes a Knative revision of its own.
Nothing here talks to a cluster; `components.deploy.kserve` does.
"""

from __future__ import annotations

import re
from typing import Any

from components.common.schema import MAX_SEQ_LENGTH
from components.common.trainjob import CONTAINER_SECURITY, POD_SECURITY
from components.deploy.config import DeployConfig, canonical_mode, parse_resources

Json = dict[str, Any]

GROUP, VERSION, PLURAL, KIND = "serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService"
API_VERSION = f"{GROUP}/{VERSION}"
#: KServe's annotation of the deployment mode (status.deploymentMode reports the one in use).
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
#: Knative mode: tag the latest revision ("latest") so a canary has its own URL in status traffic.
TAG_ROUTING_ANNOTATION = "serving.kserve.io/enable-tag-routing"
#: The model version a predictor serves, and (Knative) the version rolled out before its canary started.
VERSION_ANNOTATION = "bert-kfp/model-version"
PREVIOUS_VERSION_ANNOTATION = "bert-kfp/previous-model-version"
#: KServe's name of the model server container, and where its storage initializer puts the model.
CONTAINER = "kserve-container"
STORAGE_URI_ENV = "STORAGE_URI"
MODEL_MOUNT = "/mnt/models"
PORT = 8080
#: Prometheus scrapes the model server's ``/metrics`` (KServe's request latency histograms and the batch metrics of
#: serving/) on its own port, in both modes: the common ``prometheus.io/*`` pod annotations (KServe's metrics
#: sample, kserve/kserve docs/samples/v1beta1/torchserve/metrics/README.md, puts them on the InferenceService; a
#: predictor's annotations reach its pods). KServe's own switch ``serving.kserve.io/enable-prometheus-scraping``
#: is set to "false": when "true" (by this annotation or the inferenceservice-config default) KServe's pod webhook
#: rewrites ``prometheus.io/port`` to the Knative queue-proxy's port 9091, or 9088 with metric aggregation
#: (pkg/webhook/admission/pod/metrics_aggregate_injector.go, InjectMetricsAggregator), which a Standard-mode pod
#: does not have. Prometheus must be configured to honour the annotations (KServe's docs say the same of theirs).
SCRAPE_ANNOTATIONS = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(PORT),
    "prometheus.io/path": "/metrics",
    "serving.kserve.io/enable-prometheus-scraping": "false",
}
HF_RUNTIME = "kserve-huggingfaceserver"
#: The predictor's "one of" fields: exactly one says what serves the model.
IMPLEMENTATIONS = (
    "containers",
    "model",
    "sklearn",
    "xgboost",
    "tensorflow",
    "pytorch",
    "triton",
    "onnx",
    "huggingface",
    "pmml",
    "lightgbm",
    "paddle",
)
_PREDICTOR_SUFFIX = "-predictor"
_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def predictor_name(inference_service: str, model_version: str) -> str:
    """The name of the predictor that serves ``model_version`` as a ``Standard``-mode canary (``v<version>``);
    KServe names its Deployment and Service ``<inference_service>-<name>-predictor``.

    Raises:
        ValueError: A version that gives no DNS label, or a Service name longer than 63 characters.
    """
    name = "v" + re.sub(r"[^a-z0-9]+", "-", model_version.lower()).strip("-")
    service = f"{inference_service}-{name}{_PREDICTOR_SUFFIX}"
    if not _LABEL.match(name) or name == "v":
        raise ValueError(f"model_version {model_version!r} gives no valid predictor name (got {name!r})")
    if len(service) > 63:
        raise ValueError(
            f"inference_service {inference_service!r}: the canary's Service {service!r} is longer than 63 "
            "characters; choose a shorter inference_service name"
        )
    return name


#: URI schemes KServe's storage initializer downloads from.
STORAGE_SCHEMES = ("s3", "gs", "pvc", "https", "http", "hdfs", "webhdfs", "oci", "hf")


def kserve_storage_uri(uri: str) -> str:
    """``uri`` (the model artifact's URI in KFP's object store) as KServe's storage initializer reads it.

    KFP names artifacts in its bundled MinIO ``minio://bucket/key``; KServe reads the same object as
    ``s3://bucket/key`` (with the S3 endpoint and credentials of the InferenceService's service account).

    Raises:
        ValueError: A local path or a scheme KServe cannot download from.
    """
    uri = uri.strip()
    scheme, sep, rest = uri.partition("://")
    if scheme == "minio" and sep:
        return f"s3://{rest}"
    if not sep or scheme not in STORAGE_SCHEMES:
        raise ValueError(
            f"storage_uri {uri!r}: KServe downloads models from {', '.join(s + '://' for s in STORAGE_SCHEMES)} "
            "(or minio://); a local path is only on this machine — run the pipeline on the cluster, or use "
            "--deploy-backend local"
        )
    return uri


#: The "restricted" Pod Security Standard for the predictor's pod and its serving container (the serve image and
#: KServe's Hugging Face runtime run as user 1000; KServe's storage initializer too, but it injects that container
#: without a securityContext, so a namespace that *enforces* restricted still refuses the pod: docs/kserve.md).
_CONTAINER_SECURITY: Json = {"securityContext": CONTAINER_SECURITY}


def render_predictor(
    config: DeployConfig, *, storage_uri: str, model_version: str, image: str, max_seq_length: int = MAX_SEQ_LENGTH
) -> Json:
    """The predictor that serves the model at ``storage_uri`` (no traffic settings, no name); texts are cut
    to ``max_seq_length`` tokens, as featurize cut them for training and evaluation.

    Raises:
        ValueError: An empty storage URI or version, or (project runtime) no pinned image.
    """
    if not storage_uri.strip():
        raise ValueError("storage_uri: the model's storage URI is needed (e.g. the MLflow model version's source)")
    storage_uri = kserve_storage_uri(storage_uri)
    if not model_version.strip():
        raise ValueError("model_version: the registered model version is needed")
    annotations = {VERSION_ANNOTATION: model_version, **SCRAPE_ANNOTATIONS}
    pod: Json = {"annotations": annotations, "securityContext": POD_SECURITY}
    if config.kserve_service_account:
        # The storage initializer downloads the model with the credentials of the Secrets attached to this account
        # (KServe docs, "Deploy InferenceService with a saved model on S3": serviceAccountName on the predictor).
        pod["serviceAccountName"] = config.kserve_service_account
    resources = parse_resources(config.kserve_resources)
    container_extra: Json = {**_CONTAINER_SECURITY, **({"resources": resources} if resources else {})}
    if config.serving_runtime == "huggingface":
        model = {
            "modelFormat": {"name": "huggingface"},
            "runtime": HF_RUNTIME,
            "storageUri": storage_uri,
            "args": [
                "--task=sequence_classification",
                "--backend=huggingface",
                "--return_probabilities",
                f"--max_length={max_seq_length}",
            ],
        }
        return pod | {"model": model | container_extra}
    if config.serving_runtime != "project":
        raise ValueError(f"serving_runtime {config.serving_runtime!r}: use project or huggingface")
    if not image.strip() or image.endswith(":latest") or ":" not in image.rsplit("/", 1)[-1]:
        raise ValueError(f"image: a serve image with a pinned tag is needed, got {image!r}")
    container = {
        "name": CONTAINER,
        "image": image,
        "command": ["python", "-m", "serving"],
        "args": [
            "--model-dir",
            MODEL_MOUNT,
            "--host",
            "0.0.0.0",
            "--port",
            str(PORT),
            "--model-name",
            config.inference_service,
            "--max-seq-length",
            str(max_seq_length),
        ],
        "env": [{"name": STORAGE_URI_ENV, "value": storage_uri}],
        "ports": [{"containerPort": PORT, "protocol": "TCP"}],
    } | container_extra
    return pod | {"containers": [container]}


def render_inference_service(
    config: DeployConfig,
    *,
    namespace: str,
    storage_uri: str,
    model_version: str,
    image: str,
    max_seq_length: int = MAX_SEQ_LENGTH,
) -> Json:
    """A new InferenceService serving ``model_version`` at 100 %, validated with KServe's SDK models.

    Its metadata carries the deployment mode annotation when `DeployConfig.kserve_mode` is set (the cluster's
    default otherwise) and asks for tag routing, so a later ``Knative`` canary gets a URL of its own.

    Raises:
        ValueError: A bad option or input (named).
    """
    config.validate()
    annotations = {TAG_ROUTING_ANNOTATION: "true"}
    mode = canonical_mode(config.kserve_mode)
    if mode:
        annotations[MODE_ANNOTATION] = mode
    isvc: Json = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": config.inference_service, "namespace": namespace, "annotations": annotations},
        "spec": {
            "predictor": render_predictor(
                config, storage_uri=storage_uri, model_version=model_version, image=image, max_seq_length=max_seq_length
            )
        },
    }
    to_sdk_model(isvc)
    return isvc


# --- KServe's SDK models ---------------------------------------------------------------------------------------

_PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "date": (str,),
    "datetime": (str,),
}


def _model_class(name: str) -> Any:
    import kserve.models
    from kubernetes.client import models

    found = getattr(kserve.models, name, None) or getattr(models, name, None)
    if found is None:
        raise ValueError(f"no KServe or Kubernetes model named {name}")
    return found


def _build(data: Any, type_name: str, path: str) -> Any:
    """``data`` (JSON) as an instance of the generated model ``type_name`` (KServe's or Kubernetes')."""
    if data is None:
        return None
    if type_name.startswith("list["):
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a list, got {data!r}")
        return [_build(item, type_name[5:-1], f"{path}[{i}]") for i, item in enumerate(data)]
    if type_name.startswith("dict("):
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping, got {data!r}")
        value_type = type_name[5:-1].split(", ", 1)[1]
        return {key: _build(value, value_type, f"{path}.{key}") for key, value in data.items()}
    if type_name == "object":
        return data
    if type_name in _PRIMITIVES:
        wrong_bool = isinstance(data, bool) and type_name != "bool"
        if wrong_bool or not isinstance(data, _PRIMITIVES[type_name]):
            raise ValueError(f"{path}: expected {type_name}, got {data!r}")
        return data
    cls = _model_class(type_name)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object ({type_name}), got {data!r}")
    attributes = {key: attr for attr, key in cls.attribute_map.items()}
    unknown = sorted(set(data) - set(attributes))
    if unknown:
        raise ValueError(f"{path}.{unknown[0]}: not a field of {type_name} (KServe's SDK models do not know it)")
    kwargs = {
        attributes[key]: _build(value, cls.openapi_types[attributes[key]], f"{path}.{key}")
        for key, value in data.items()
    }
    try:
        return cls(**kwargs)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def to_sdk_model(isvc: Json) -> Any:
    """``isvc`` as KServe's ``V1beta1InferenceService`` (with the Kubernetes models inside).

    Raises:
        ValueError: A field the models do not know, or a value of the wrong type, named by its path.
    """
    return _build(isvc, "V1beta1InferenceService", "InferenceService")
