"""Profiles carry the MLflow tracking server: its URI and credentials reach the steps that log to MLflow.

Every step runs in a pod of its own, so only a tracking server gives train and evaluate one shared store;
these tests read the compiled YAML: the executor's container env (MLFLOW_TRACKING_URI) and the Kubernetes
platform spec (the Secret whose keys become environment variables).
"""

# No `from __future__ import annotations`: kfp reads the toy component's annotations as types.
from pathlib import Path

import pytest
import yaml
from kfp import compiler, dsl

from components.common.tracking import ENV_TRACKING_URI
from pipelines.compile import compile_pipeline
from pipelines.profiles import Profile, load_profiles, use_mlflow

#: The profiles of pipelines/profiles.yaml that run every step on Kubeflow.
PROFILES = ("onprem", "eks", "cpu")
#: Pipeline tasks that log to MLflow (tuning and deploy join them when they are built).
MLFLOW_TASKS = ("train-classifier", "evaluate-classifier")
#: The keys of the MLflow Secret a profile maps into those tasks' environment when it names none.
SECRET_KEYS = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "MLFLOW_S3_ENDPOINT_URL",
)


def _documents(path: Path) -> tuple[dict, dict]:
    """(pipeline spec, Kubernetes platform spec's executors) of a compiled pipeline."""
    documents = list(yaml.safe_load_all(path.read_text()))
    platform = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(documents) > 1 else {}
    return documents[0], platform


def _executor(spec: dict, task: str) -> str:
    component = spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]
    return spec["components"][component]["executorLabel"]


def _env(spec: dict, executor: str) -> dict[str, str]:
    return {e["name"]: e["value"] for e in spec["deploymentSpec"]["executors"][executor]["container"].get("env", [])}


def _secret(platform: dict, executor: str, name: str) -> dict | None:
    found = [s for s in platform.get(executor, {}).get("secretAsEnv", []) if s["secretName"] == name]
    return found[0] if found else None


def _profiles_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "profiles.yaml"
    path.write_text(body)
    return path


def test_shipped_profiles_name_a_tracking_server() -> None:
    profiles = load_profiles()
    for name in PROFILES:
        access = profiles[name].mlflow
        assert access is not None, name
        assert access.tracking_uri == "http://mlflow.kubeflow-bert.svc.cluster.local:5000"
        assert access.secret == "mlflow-credentials" and access.secret_optional is True
        assert access.secret_keys == SECRET_KEYS


def _toy(profile: Profile | None, tmp_path: Path) -> tuple[dict, dict]:
    @dsl.component(base_image="python:3.11")
    def log_something(text: str) -> str:
        return text

    @dsl.pipeline(name="toy")
    def toy() -> None:
        use_mlflow(log_something(text="x"), profile)

    path = tmp_path / "toy.yaml"
    compiler.Compiler().compile(toy, package_path=str(path))
    return _documents(path)


def test_use_mlflow_sets_the_uri_and_maps_the_secret(tmp_path: Path) -> None:
    profiles = load_profiles(
        _profiles_file(
            tmp_path,
            "lab:\n  mlflow:\n    tracking_uri: ' https://mlflow.example.test '\n    secret: lab-mlflow\n"
            "    secret_keys: [MLFLOW_TRACKING_TOKEN]\n    secret_optional: false\n",
        )
    )
    spec, platform = _toy(profiles["lab"], tmp_path)
    assert _env(spec, "exec-log-something") == {ENV_TRACKING_URI: "https://mlflow.example.test"}
    secret = _secret(platform, "exec-log-something", "lab-mlflow")
    assert secret is not None and secret.get("optional", False) is False
    assert secret["keyToEnv"] == [{"secretKey": "MLFLOW_TRACKING_TOKEN", "envVar": "MLFLOW_TRACKING_TOKEN"}]


@pytest.mark.parametrize(
    "body", ["lab:\n  description: no mlflow\n", "lab:\n  mlflow:\n    tracking_uri: http://mlflow:5000\n"]
)
def test_without_mlflow_or_secret_nothing_else_is_added(tmp_path: Path, body: str) -> None:
    profile = load_profiles(_profiles_file(tmp_path, body))["lab"]
    spec, platform = _toy(profile, tmp_path)
    assert _env(spec, "exec-log-something") == (
        {} if profile.mlflow is None else {ENV_TRACKING_URI: "http://mlflow:5000"}
    )
    assert "secretAsEnv" not in platform.get("exec-log-something", {})


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("    secret: s\n", "'mlflow.tracking_uri' entry: is required"),
        ("    tracking_uri: mlflow.kubeflow-bert:5000\n", "'mlflow.tracking_uri' entry: must be a URI such as http://"),
        ("    tracking_uri: ''\n", "'mlflow.tracking_uri' entry: must be a URI such as http://"),
        ("    tracking_uri: http://m:5000\n    secrets: s\n", r"'mlflow' entry: unknown keys \['secrets'\]; valid: "),
    ],
)
def test_bad_mlflow_entry_names_profile_and_key(tmp_path: Path, entry: str, message: str) -> None:
    path = _profiles_file(tmp_path, f"lab:\n  mlflow:\n{entry}")
    with pytest.raises(ValueError, match=rf"Profile 'lab' .* bad {message}"):
        load_profiles(path)


# --- the compiled pipeline: what pipelines/pipeline.py must wire (`use_mlflow` on train and evaluate) -----


def _assert_tasks_use(path: Path, uri: str, secret: str) -> None:
    spec, platform = _documents(path)
    for task in MLFLOW_TASKS:
        executor = _executor(spec, task)
        assert _env(spec, executor).get(ENV_TRACKING_URI) == uri, f"{task}: no {ENV_TRACKING_URI}={uri}"
        mapped = _secret(platform, executor, secret)
        assert mapped is not None, f"{task}: Secret {secret} is not mapped to its environment"
        assert mapped["keyToEnv"] == [{"secretKey": key, "envVar": key} for key in SECRET_KEYS]
        assert mapped["optional"] is True


@pytest.mark.parametrize("profile", PROFILES)
def test_train_and_evaluate_get_the_profiles_tracking_server(tmp_path: Path, profile: str) -> None:
    path = compile_pipeline(tmp_path / "p.yaml", profile=profile)
    _assert_tasks_use(path, "http://mlflow.kubeflow-bert.svc.cluster.local:5000", "mlflow-credentials")


def test_a_profiles_file_of_your_own_chooses_the_server(tmp_path: Path) -> None:
    path = _profiles_file(
        tmp_path,
        "mine:\n  gpu: null\n  mlflow:\n    tracking_uri: http://tracking.ml.svc.cluster.local:80\n"
        "    secret: my-mlflow\n",
    )
    compiled = compile_pipeline(tmp_path / "p.yaml", profile="mine", profiles_file=path)
    _assert_tasks_use(compiled, "http://tracking.ml.svc.cluster.local:80", "my-mlflow")
