"""`compile --target sagemaker`: the same pipeline source, with tune, train and deploy swapped for SageMaker steps.

No AWS call is made here: compiling reads the profile and botocore's bundled service model only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from components.sagemaker.settings import ENV, SageMakerSettings
from pipelines.__main__ import main
from pipelines.compile import compile_pipeline
from pipelines.profiles import DEFAULT_FILE, load_profiles
from tests.sagemaker.conftest import ECR

SAGEMAKER_PROFILES = sorted(name for name, p in load_profiles().items() if p.sagemaker is not None)
#: The steps that are the same component on both targets.
SHARED = (
    "prepare-reviews",
    "check-bias",
    "featurize-reviews",
    "ingest-features",
    "evaluate-classifier",
    "skip-deployment",
)
SWAPPED = {
    "tune-hyperparameters": "tune-on-sagemaker",
    "train-classifier": "train-on-sagemaker",
    "deploy-model": "deploy-sagemaker-endpoint",
}


@pytest.fixture(autouse=True)
def ecr_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The images as `make images` pushes them to ECR (the profile's empty image entries mean these)."""
    monkeypatch.setenv("BERT_KFP_REGISTRY", ECR)
    monkeypatch.setenv("BERT_KFP_IMAGE_TAG", "0.1.0-test")


def _documents(path: Path) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(path.read_text()))


def _spec(path: Path) -> pipeline_spec_pb2.PipelineSpec:
    spec = pipeline_spec_pb2.PipelineSpec()
    json_format.ParseDict(_documents(path)[0], spec, ignore_unknown_fields=False)  # strict: unknown fields fail
    return spec


def test_the_repository_has_a_sagemaker_profile() -> None:
    assert "aws" in SAGEMAKER_PROFILES


@pytest.mark.parametrize("profile", SAGEMAKER_PROFILES)
def test_compiles_to_a_pipeline_spec_that_round_trips(tmp_path: Path, profile: str) -> None:
    from kfp import compiler, components

    first = compile_pipeline(tmp_path / "first.yaml", target="sagemaker", profile=profile)
    spec = _spec(first)
    assert spec.pipeline_info.name == "bert-review-sentiment"
    loaded = components.load_component_from_file(str(first))
    second = tmp_path / "second.yaml"
    compiler.Compiler().compile(loaded, package_path=str(second))
    assert _spec(second) == spec


def _executors(path: Path) -> dict[str, dict[str, Any]]:
    """Component name → its container (image, command, args) and the component's inputs and outputs."""
    document = _documents(path)[0]
    out = {}
    for key, component in document["components"].items():
        if "executorLabel" not in component:
            continue
        container = document["deploymentSpec"]["executors"][component["executorLabel"]]["container"]
        out[key.removeprefix("comp-")] = {
            "image": container["image"],
            "command": container.get("command"),
            "args": container.get("args"),
            "inputs": component.get("inputDefinitions"),
            "outputs": component.get("outputDefinitions"),
        }
    return out


@pytest.mark.parametrize("profile", SAGEMAKER_PROFILES)
def test_the_non_aws_steps_are_the_kfp_targets_components(tmp_path: Path, profile: str) -> None:
    kfp = _executors(compile_pipeline(tmp_path / "kfp.yaml", target="kfp", profile=profile))
    sagemaker = _executors(compile_pipeline(tmp_path / "sm.yaml", target="sagemaker", profile=profile))
    for name in SHARED:  # the same name, image, command (the component's source), inputs and outputs
        assert sagemaker[name] == kfp[name], name
    assert set(sagemaker) == set(SHARED) | set(SWAPPED.values())
    assert set(kfp) == set(SHARED) | set(SWAPPED)
    for kfp_name, sm_name in SWAPPED.items():  # a swapped step gives the outputs the pipeline reads
        assert sagemaker[sm_name]["outputs"].keys() == kfp[kfp_name]["outputs"].keys()
        for kind in ("artifacts", "parameters"):
            assert set(sagemaker[sm_name]["outputs"].get(kind, {})) <= set(kfp[kfp_name]["outputs"].get(kind, {}))


def test_sagemaker_steps_get_the_settings_and_no_gpu(tmp_path: Path) -> None:
    path = compile_pipeline(tmp_path / "sm.yaml", target="sagemaker", profile="aws")
    executors = _documents(path)[0]["deploymentSpec"]["executors"]
    platform = _documents(path)[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for step in SWAPPED.values():
        container = executors[f"exec-{step}"]["container"]
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        settings = SageMakerSettings.model_validate(json.loads(env[ENV]))
        assert settings.images.train == f"{ECR}/train:0.1.0-test"  # resolved at compile time
        assert settings.role_arn == load_profiles()["aws"].sagemaker.role_arn
        assert "accelerator" not in json.dumps(container.get("resources", {}))
        assert "nodeSelector" not in platform.get(f"exec-{step}", {})
    for step in ("tune-on-sagemaker", "train-on-sagemaker"):  # they read the splits from Feast
        assert platform[f"exec-{step}"]["pvcMount"][0]["constant"] == "feast-store"
    for step in SHARED:
        env = {e["name"] for e in executors[f"exec-{step}"]["container"].get("env", [])}
        assert ENV not in env


def test_train_and_deploy_agree_on_the_model_data_key() -> None:
    import inspect

    from components.sagemaker import deploy, train

    # train_on_sagemaker writes the model.tar.gz URI under the metadata key deploy_sagemaker_endpoint reads
    assert '"model_data_url": outcome.model_data' in inspect.getsource(train.train_on_sagemaker.python_func)
    assert 'model.metadata.get("model_data_url")' in inspect.getsource(deploy.deploy_sagemaker_endpoint.python_func)


def _profiles_file(tmp_path: Path, change: Any) -> Path:
    raw = yaml.safe_load(DEFAULT_FILE.read_text())
    change(raw["aws"])
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


TPE_SPEC = """
algorithm: {algorithmName: tpe}
parameters:
  - {name: learning_rate, parameterType: double, feasibleSpace: {min: "1e-5", max: "1e-4"}}
"""


def _set(path: str, value: Any) -> Any:
    def change(profile: dict[str, Any]) -> None:
        *parents, key = path.split(".")
        node = profile
        for parent in parents:
            node = node.setdefault(parent, {})
        if value is _DELETE:
            node.pop(key, None)
        else:
            node[key] = value

    return change


_DELETE = object()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set("sagemaker.tuning.spec", TPE_SPEC), r"sagemaker\.tuning\.spec: .*has no 'tpe'; it has random \(Random\)"),
        (_set("sagemaker.role_arn", ""), r"sagemaker\.role_arn: missing"),
        (_set("sagemaker.role_arn", _DELETE), r"sagemaker\.role_arn: missing"),
        (_set("sagemaker.s3_prefix", _DELETE), r"sagemaker\.s3_prefix: missing"),
        (_set("sagemaker.s3_prefix", "bucket/prefix"), r"sagemaker\.s3_prefix: 'bucket/prefix' is not an s3://"),
        (_set("sagemaker.canary.size_percent", 60), r"sagemaker\.canary\.size_percent: 60 is above 50"),
        (_set("sagemaker.canary.alarms", [f"a{i}" for i in range(11)]), r"sagemaker\.canary\.alarms: 11 alarm"),
        (_set("sagemaker.canary.alarms", []), r"sagemaker\.canary\.alarms: 0 alarm"),
        (_set("sagemaker.canary.wait_interval_seconds", 3601), r"sagemaker\.canary\.wait_interval_seconds: "),
        (
            _set("sagemaker.training.instance_type", "ml.m5.xlarge"),
            r"sagemaker\.training\.instance_type: ml\.m5\.xlarge has no NVIDIA GPU",
        ),
        (
            _set("sagemaker.tuning.instance_type", "ml.c5.xlarge"),
            r"sagemaker\.tuning\.instance_type: ml\.c5\.xlarge has no NVIDIA",
        ),
        (
            _set("sagemaker.hosting.instance_type", "ml.x9.huge"),
            r"sagemaker\.hosting\.instance_type: SageMaker has no ml\.x9\.huge",
        ),
        (_set("sagemaker.training.max_wait_seconds", 60), r"sagemaker\.training: max_wait_seconds: 60 is below"),
        (_set("sagemaker.bogus", 1), r"sagemaker\.bogus: unknown key"),
    ],
)
def test_bad_sections_are_one_line_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: Any, message: str
) -> None:
    profiles = _profiles_file(tmp_path, change)
    out = tmp_path / "p.yaml"
    code = main(
        ["compile", "--target", "sagemaker", "--profile", "aws", "--profiles-file", str(profiles), "--output", str(out)]
    )
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: Profile 'aws' in ")
    import re

    assert re.search(message, err), err


def test_a_cpu_profile_may_train_on_cpu_instances(tmp_path: Path) -> None:
    def change(profile: dict[str, Any]) -> None:
        profile["gpu"] = None
        profile["sagemaker"]["training"]["instance_type"] = "ml.m5.xlarge"

    path = compile_pipeline(
        tmp_path / "p.yaml", target="sagemaker", profile="aws", profiles_file=_profiles_file(tmp_path, change)
    )
    assert path.is_file()


def test_images_outside_ecr_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BERT_KFP_REGISTRY")
    code = main(["compile", "--target", "sagemaker", "--profile", "aws", "--output", str(tmp_path / "p.yaml")])
    assert code == 2
    assert (
        "sagemaker.images.train: 'localhost/bert-kfp/train:0.1.0-test' is not an ECR image URI"
        in capsys.readouterr().err
    )


def test_a_profile_without_a_sagemaker_section_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["compile", "--target", "sagemaker", "--profile", "onprem", "--output", str(tmp_path / "p.yaml")])
    assert code == 2 and "Profile 'onprem'" in capsys.readouterr().err


def test_the_profiles_tuning_spec_becomes_the_pipelines_default(tmp_path: Path) -> None:
    spec = tmp_path / "search.yaml"
    spec.write_text(TPE_SPEC.replace("tpe", "bayesianoptimization"))
    profiles = _profiles_file(tmp_path, _set("sagemaker.tuning.spec", str(spec)))
    path = compile_pipeline(tmp_path / "p.yaml", target="sagemaker", profile="aws", profiles_file=profiles)
    inputs = _documents(path)[0]["root"]["inputDefinitions"]["parameters"]
    default = inputs["tuning_spec"]["defaultValue"]  # the spec itself, on one line: the pods do not have the file
    assert "\n" not in default and yaml.safe_load(default) == yaml.safe_load(spec.read_text())
    from components.tune import spec_loading

    assert spec_loading.load_spec(default).algorithm == "bayesianoptimization"


def test_the_sagemaker_target_defaults_deploy_backend_to_its_endpoint(tmp_path: Path) -> None:
    """On the sagemaker target the deploy step is the SageMaker endpoint's (which has no deploy_backend input): the
    pipeline's deploy_backend default, which the skip-deployment report records, names it, not KServe."""
    from components.sagemaker.endpoint_step import BACKEND

    def default(target: str) -> str:
        path = compile_pipeline(tmp_path / f"{target}.yaml", target=target, profile="aws")
        parameters = _documents(path)[0]["root"]["inputDefinitions"]["parameters"]
        return parameters["deploy_backend"]["defaultValue"]

    assert default("sagemaker") == BACKEND == "sagemaker"
    assert default("kfp") == "kserve"
