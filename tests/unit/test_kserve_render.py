"""Rendering the InferenceService: both predictors, the mode annotation with KServe's current names, bad input
named, and the result round-tripped through KServe's SDK models (``kserve`` 0.21)."""

from __future__ import annotations

from typing import Any

import pytest

from components.common import kube
from components.deploy import inference_service as I
from components.deploy.config import DeployConfig

Json = dict[str, Any]
IMAGE = "registry.example/bert-kfp/serve:0.1.0"
V = I.VERSION_ANNOTATION


def _render(version: str = "3", **options: Any) -> Json:
    config = DeployConfig(deploy_backend="kserve", **options)
    return I.render_inference_service(
        config, namespace="ml", storage_uri=f"s3://models/bert/{version}", model_version=version, image=IMAGE
    )


def _to_json(model: Any) -> dict[str, Any]:
    """A KServe SDK model as the JSON the API server takes (the SDK's own serialisation)."""
    from kserve.api_client import ApiClient

    return ApiClient().sanitize_for_serialization(model)


@pytest.mark.parametrize(
    ("runtime", "sdk_defaults"),
    [("project", []), ("huggingface", ["spec.predictor.model.name"])],  # the SDK's ModelSpec fills name ''
)
def test_rendered_inference_service_round_trips_through_kserve_sdk_models(runtime: str, sdk_defaults: list) -> None:
    from kserve import V1beta1InferenceService, V1beta1PredictorSpec

    rendered = _render(serving_runtime=runtime, kserve_mode="Standard")
    model = I.to_sdk_model(rendered)
    assert isinstance(model, V1beta1InferenceService) and isinstance(model.spec.predictor, V1beta1PredictorSpec)
    back = _to_json(model)
    assert kube.dropped_fields(rendered, back) == []  # nothing lost
    assert kube.dropped_fields(back, rendered) == sdk_defaults  # nothing added but the SDK's defaults
    assert _to_json(I.to_sdk_model(back)) == back


def test_project_runtime_runs_the_model_server_on_the_downloaded_model() -> None:
    predictor = _render()["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container" and container["image"] == IMAGE
    assert container["command"] == ["python", "-m", "serving"]
    args = container["args"]
    assert args[args.index("--model-dir") + 1] == "/mnt/models"
    assert args[args.index("--model-name") + 1] == "review-sentiment"
    assert args[args.index("--max-seq-length") + 1] == "128"  # the training's cut, else answers differ
    assert container["env"] == [{"name": "STORAGE_URI", "value": "s3://models/bert/3"}]
    assert predictor["annotations"] == {V: "3"} | I.SCRAPE_ANNOTATIONS


def test_huggingface_runtime_uses_kserve_runtime_and_storage_uri() -> None:
    model = _render(serving_runtime="huggingface")["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "huggingface"} and model["runtime"] == "kserve-huggingfaceserver"
    assert model["storageUri"] == "s3://models/bert/3" and "--task=sequence_classification" in model["args"]
    assert "--max_length=128" in model["args"]


def test_the_server_cuts_texts_where_training_did() -> None:
    config = DeployConfig(deploy_backend="kserve")
    kwargs = {"storage_uri": "s3://m/1", "model_version": "1", "image": IMAGE, "max_seq_length": 64}
    args = I.render_predictor(config, **kwargs)["containers"][0]["args"]
    assert args[args.index("--max-seq-length") + 1] == "64"
    hf = I.render_predictor(DeployConfig(deploy_backend="kserve", serving_runtime="huggingface"), **kwargs)
    assert "--max_length=64" in hf["model"]["args"]


@pytest.mark.parametrize(
    ("configured", "annotation"),
    [("Serverless", "Knative"), ("RawDeployment", "Standard"), ("Knative", "Knative"), ("", None)],
)
def test_mode_annotation_has_the_current_names(configured: str, annotation: str | None) -> None:
    annotations = _render(kserve_mode=configured)["metadata"]["annotations"]
    assert annotations.get(I.MODE_ANNOTATION) == annotation
    assert annotations[I.TAG_ROUTING_ANNOTATION] == "true"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"storage_uri": ""}, "storage_uri"),
        ({"image": "registry.example/serve:latest"}, "pinned tag"),
        ({"image": "registry.example/serve"}, "pinned tag"),
        ({"model_version": " "}, "model_version"),
    ],
)
def test_bad_render_input_is_named(kwargs: Json, match: str) -> None:
    args = {"storage_uri": "s3://m/1", "model_version": "1", "image": IMAGE} | kwargs
    with pytest.raises(ValueError, match=match):
        I.render_inference_service(DeployConfig(), namespace="ml", **args)


def test_unknown_mode_and_long_names_are_refused() -> None:
    with pytest.raises(ValueError, match="--kserve-mode 'ModelMesh'"):
        _render(kserve_mode="ModelMesh")
    with pytest.raises(ValueError, match="longer than 63"):
        I.predictor_name("a" * 50, "12")
    assert I.predictor_name("review-sentiment", "12") == "v12"


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        ({"spec": {"predictor": {"canaryTrafficPercnt": 10}}}, r"spec.predictor.canaryTrafficPercnt: not a field"),
        ({"spec": {"predictor": {"minReplicas": "two"}}}, r"spec.predictor.minReplicas: expected int"),
        ({"spec": {"canary": [{"trafficPercent": 10, "predictr": {}}]}}, r"spec.canary\[0\].predictr"),
    ],
)
def test_sdk_models_name_the_bad_field(patch: Json, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        I.to_sdk_model(patch)


@pytest.mark.parametrize(
    ("uri", "served"),
    [
        ("minio://mlpipeline/v2/artifacts/run/train/model", "s3://mlpipeline/v2/artifacts/run/train/model"),
        ("s3://bucket/model", "s3://bucket/model"),
        ("gs://bucket/model", "gs://bucket/model"),
        ("pvc://models/bert/3", "pvc://models/bert/3"),
    ],
)
def test_kfp_artifact_uris_become_what_kserve_downloads(uri: str, served: str) -> None:
    assert I.kserve_storage_uri(uri) == served
    predictor = I.render_predictor(DeployConfig(), storage_uri=uri, model_version="1", image=IMAGE)
    assert predictor["containers"][0]["env"] == [{"name": "STORAGE_URI", "value": served}]


@pytest.mark.parametrize("uri", ["/tmp/runs/artifacts/model", "file:///tmp/model", "ftp://host/model"])
def test_a_model_kserve_cannot_download_is_refused(uri: str) -> None:
    with pytest.raises(ValueError, match=r"KServe downloads models from .*--deploy-backend local"):
        I.render_predictor(DeployConfig(), storage_uri=uri, model_version="1", image=IMAGE)


# --- ready for a cluster: service account, resources, Prometheus scraping -------------------------------------

RESOURCES = '{"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}'


@pytest.mark.parametrize("runtime", ["project", "huggingface"])
def test_service_account_and_resources_reach_the_predictor_pod_and_server_container(runtime: str) -> None:
    rendered = _render(serving_runtime=runtime, kserve_service_account="bert-kserve", kserve_resources=RESOURCES)
    predictor = rendered["spec"]["predictor"]
    assert predictor["serviceAccountName"] == "bert-kserve"  # the storage initializer's credentials
    server = predictor["containers"][0] if runtime == "project" else predictor["model"]
    assert server["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}
    sdk = I.to_sdk_model(rendered).spec.predictor
    assert sdk.service_account_name == "bert-kserve"
    model = sdk.containers[0] if runtime == "project" else sdk.model
    assert model.resources.limits == {"cpu": "2", "memory": "4Gi"}


def test_without_them_nothing_is_set() -> None:
    predictor = _render()["spec"]["predictor"]
    assert "serviceAccountName" not in predictor and "resources" not in predictor["containers"][0]


def test_the_predictor_pods_are_scraped_on_the_servers_metrics_port() -> None:
    """prometheus.io/* on the predictor (its annotations reach the pods), on the port the server listens on; KServe's
    own switch off, so its webhook does not point prometheus.io/port at a queue-proxy a Standard pod lacks."""
    predictor = _render(kserve_mode="Standard")["spec"]["predictor"]
    annotations = predictor["annotations"]
    (container,) = predictor["containers"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == str(container["ports"][0]["containerPort"])
    args = container["args"]
    assert args[args.index("--port") + 1] == annotations["prometheus.io/port"]
    assert annotations["serving.kserve.io/enable-prometheus-scraping"] == "false"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"kserve_service_account": "Bert_KServe"}, "--kserve-service-account 'Bert_KServe' is not a ServiceAccount"),
        ({"kserve_resources": "cpu=1"}, "--kserve-resources is not JSON"),
        ({"kserve_resources": '{"requests": {"cpu": "one"}}'}, r"requests\.cpu: 'one' is not a Kubernetes quantity"),
        ({"kserve_resources": '{"requests": {"gpu": "1"}}'}, r"requests\.gpu is not one of"),
        ({"kserve_resources": '{"limit": {"cpu": "1"}}'}, "'requests' and/or 'limits'"),
        ({"kserve_resources": '{"requests": {"memory": "5Gi"}, "limits": {"memory": "4Gi"}}'}, "above limits.memory"),
    ],
)
def test_bad_service_account_or_resources_are_named(options: Json, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DeployConfig(deploy_backend="kserve", **options).validate()


@pytest.mark.parametrize(
    ("text", "value"), [("500m", "0.5"), ("2", "2"), ("4Gi", str(4 * 2**30)), ("1.5G", "1500000000"), ("1e3", "1000")]
)
def test_quantities_read_as_kubernetes_reads_them(text: str, value: str) -> None:
    from decimal import Decimal

    from components.deploy.config import quantity

    assert quantity(text) == Decimal(value)
