"""The compiled pipeline is valid KFP IR and round-trips through the kfp SDK."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from pipelines.__main__ import main
from pipelines.compile import compile_pipeline

ROOT = Path(__file__).resolve().parents[2]
#: The profiles of pipelines/profiles.yaml that run every step on Kubeflow.
PROFILES = ("onprem", "eks", "cpu")


def _spec(path: Path) -> pipeline_spec_pb2.PipelineSpec:
    documents = list(yaml.safe_load_all(path.read_text()))
    spec = pipeline_spec_pb2.PipelineSpec()
    json_format.ParseDict(documents[0], spec, ignore_unknown_fields=False)  # strict: unknown fields fail
    return spec


@pytest.mark.parametrize("profile", PROFILES)
def test_compiles_to_a_valid_pipeline_spec(tmp_path: Path, profile: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BERT_KFP_REGISTRY", "registry.example.com/ml")
    monkeypatch.setenv("BERT_KFP_IMAGE_TAG", "0.1.0-test")
    spec = _spec(compile_pipeline(tmp_path / "p.yaml", profile=profile))
    assert spec.pipeline_info.name == "bert-review-sentiment"
    tasks = spec.root.dag.tasks
    assert {
        "prepare-reviews",
        "check-bias",
        "featurize-reviews",
        "ingest-features",
        "tune-hyperparameters",
        "train-classifier",
        "evaluate-classifier",
    } <= set(tasks)
    assert "check-bias" in tasks["featurize-reviews"].dependent_tasks  # only data past the bias gate
    assert (
        tasks["check-bias"].inputs.artifacts["cleaned_reviews"].task_output_artifact.producer_task == "prepare-reviews"
    )
    executors = spec.deployment_spec["executors"]
    images = {name: e["container"]["image"] for name, e in executors.items()}
    # The torch steps run on the (CUDA) train image, every other step on the components image.
    for torch_step in ("exec-tune-hyperparameters", "exec-train-classifier", "exec-evaluate-classifier"):
        assert images.pop(torch_step) == "registry.example.com/ml/train:0.1.0-test"
    assert images.pop("exec-deploy-model") == "registry.example.com/ml/serve:0.1.0-test"  # it starts the server
    assert images == {
        f"exec-{step}": "registry.example.com/ml/components:0.1.0-test"
        for step in ("prepare-reviews", "check-bias", "featurize-reviews", "ingest-features", "skip-deployment")
    }
    # Training takes the tuned hyper-parameters.
    hyper = tasks["train-classifier"].inputs.parameters["hyperparameters"].task_output_parameter
    assert (hyper.producer_task, hyper.output_parameter_key) == ("tune-hyperparameters", "best_params")


def test_deploy_runs_only_when_evaluate_says_so(tmp_path: Path) -> None:
    """deploy_model under dsl.If(evaluate's deploy == True), skip_deployment under its dsl.Else; the pipeline's
    `deployment` output is whichever of the two ran (dsl.OneOf)."""
    spec = _spec(compile_pipeline(tmp_path / "p.yaml"))
    [(branches_name, branches)] = [(n, t) for n, t in spec.root.dag.tasks.items() if n.startswith("condition-branches")]
    assert "evaluate-classifier" in branches.dependent_tasks
    dag = spec.components[branches.component_ref.name].dag
    conditions = {t.task_info.name: t for t in dag.tasks.values()}
    gate = "inputs.parameter_values['pipelinechannel--evaluate-classifier-deploy'] == true"
    assert conditions["quality-gate-passed"].trigger_policy.condition == gate
    assert conditions["quality-gate-failed"].trigger_policy.condition == f"!({gate})"
    inner = {name: spec.components[t.component_ref.name].dag.tasks for name, t in conditions.items()}
    assert set(inner["quality-gate-passed"]) == {"deploy-model"} and set(inner["quality-gate-failed"]) == {
        "skip-deployment"
    }
    deploy = inner["quality-gate-passed"]["deploy-model"].inputs
    assert {k: v.component_input_artifact for k, v in deploy.artifacts.items()} == {
        "model": "pipelinechannel--train-classifier-model",
        "predictions": "pipelinechannel--evaluate-classifier-predictions",
        "reviews": "pipelinechannel--prepare-reviews-reviews",
    }
    version = deploy.parameters["model_version"].component_input_parameter
    assert version == "pipelinechannel--evaluate-classifier-model_version"
    [oneof] = dag.outputs.parameters.values()
    assert {s.output_parameter_key for s in oneof.value_from_oneof.parameter_selectors} == {
        "pipelinechannel--deploy-model-Output",
        "pipelinechannel--skip-deployment-Output",
    }
    output = spec.root.dag.outputs.parameters["deployment"].value_from_parameter
    assert output.producer_subtask == branches_name


def test_round_trips_through_the_sdk(tmp_path: Path) -> None:
    from kfp import compiler, components

    first = compile_pipeline(tmp_path / "first.yaml")
    loaded = components.load_component_from_file(str(first))
    assert loaded.name == "bert-review-sentiment"
    second = tmp_path / "second.yaml"
    compiler.Compiler().compile(loaded, package_path=str(second))
    assert _spec(first) == _spec(second)


def test_cli_compile_writes_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "build" / "pipeline.yaml"
    assert main(["compile", "--profile", "cpu", "--output", str(out)]) == 0
    assert out.is_file() and str(out) in capsys.readouterr().out


def _platform(spec_path: Path) -> dict:
    documents = list(yaml.safe_load_all(spec_path.read_text()))
    return documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(documents) > 1 else {}


@pytest.mark.parametrize("profile", PROFILES)
def test_feature_store_steps_get_the_pvc_and_settings(tmp_path: Path, profile: str) -> None:
    executors = _platform(compile_pipeline(tmp_path / "p.yaml", profile=profile))
    ingest = executors["exec-ingest-features"]
    [mount] = ingest["pvcMount"]
    assert (mount["constant"], mount["mountPath"]) == ("feast-store", "/mnt/feast")
    assert ingest["secretAsEnv"][0]["keyToEnv"] == [
        {"secretKey": "FEAST_REDIS_CONNECTION_STRING", "envVar": "FEAST_REDIS_CONNECTION_STRING"}
    ]
    assert {e["envVar"] for e in ingest["configMapAsEnv"][0]["keyToEnv"]} == {
        "FEAST_REGISTRY_PATH",
        "FEAST_OFFLINE_PATH",
    }


def test_unknown_profile_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", "--profile", "gke", "--output", str(tmp_path / "p.yaml")]) == 2
    assert "Unknown --profile 'gke'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("profile", "selector"),
    [
        ("onprem", {"nvidia.com/gpu.present": "true"}),
        ("eks", {"node.kubernetes.io/instance-type": "g5.2xlarge"}),
    ],
)
def test_gpu_profiles_place_the_train_task_on_gpu_nodes(tmp_path: Path, profile: str, selector: dict) -> None:
    path = compile_pipeline(tmp_path / "p.yaml", profile=profile)
    for executor in ("exec-tune-hyperparameters", "exec-train-classifier"):
        resources = _spec(path).deployment_spec["executors"][executor]["container"]["resources"]
        assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
        assert resources["accelerator"]["resourceCount"] == "1"
        placed = _platform(path)[executor]
        assert placed["nodeSelector"]["labels"] == selector
        assert placed["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        assert placed["emptyDirMounts"][0]["mountPath"] == "/dev/shm"
        assert placed["emptyDirMounts"][0]["medium"] == "Memory"


def test_cpu_profile_puts_no_gpu_placement_on_the_train_task(tmp_path: Path) -> None:
    path = compile_pipeline(tmp_path / "p.yaml", profile="cpu")
    container = _spec(path).deployment_spec["executors"]["exec-train-classifier"]["container"]
    assert "resources" not in container or "accelerator" not in container["resources"]
    train = _platform(path)["exec-train-classifier"]
    assert not {"nodeSelector", "tolerations", "emptyDirMounts"} & set(train)
    assert train["pvcMount"][0]["mountPath"] == "/mnt/feast"  # it still reads the feature store


def _outputs(spec: pipeline_spec_pb2.PipelineSpec) -> dict[str, dict[str, str]]:
    """Each component that runs (has an executor) → its output artifacts' types."""
    return {
        name.removeprefix("comp-"): {a: o.artifact_type.schema_title for a, o in c.output_definitions.artifacts.items()}
        for name, c in spec.components.items()
        if c.executor_label  # (the condition branches are components without an executor)
    }


def test_the_sagemaker_targets_steps_give_a_markdown_summary_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BERT_KFP_REGISTRY", "111122223333.dkr.ecr.us-east-1.amazonaws.com/bert-kfp")  # (ECR only)
    outputs = _outputs(_spec(compile_pipeline(tmp_path / "p.yaml", target="sagemaker", profile="aws")))
    assert len(outputs) == 9 and all(found["summary_md"] == "system.Markdown" for found in outputs.values())


def test_every_step_gives_the_dashboard_a_markdown_summary(tmp_path: Path) -> None:
    """Each step's component declares a `summary_md` Markdown output (the KFP UI renders it); training adds its
    loss/validation curve as HTML, beside the HTML reports of bias, tuning and evaluation."""
    spec = _spec(compile_pipeline(tmp_path / "p.yaml", profile="cpu"))
    outputs = _outputs(spec)
    steps = {
        "prepare-reviews", "check-bias", "featurize-reviews", "ingest-features", "tune-hyperparameters",
        "train-classifier", "evaluate-classifier", "deploy-model", "skip-deployment",
    }  # fmt: skip
    assert set(outputs) == steps
    assert all(outputs[step]["summary_md"] == "system.Markdown" for step in steps)
    html = {(step, name) for step, found in outputs.items() for name, kind in found.items() if kind == "system.HTML"}
    assert html == {
        ("check-bias", "report_html"),
        ("tune-hyperparameters", "report_html"),
        ("train-classifier", "curve_html"),
        ("evaluate-classifier", "report_html"),
    }
