"""The container runner gives each step what the cluster profile gives its pod (derived from the same profile
data: the kfp-kubernetes settings `pipelines.profiles` applies), and refuses a runtime that is not running."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from components.common.tracking import ENV_TRACKING_URI
from pipelines import container_runner as C
from pipelines.pipeline import build_pipeline
from pipelines.profiles import FeastAccess, load_profiles

LOCAL_URI = "http://127.0.0.1:5999"


def _env_of(graph, executor: str) -> dict[str, str]:
    container = graph.pipeline_spec.deployment_spec["executors"][executor]["container"]
    return {e["name"]: e["value"] for e in container["env"]} if "env" in container else {}


@pytest.mark.parametrize("name", ["onprem", "eks", "cpu"])
def test_local_profile_keeps_what_pods_get_and_drops_what_needs_a_cluster(name: str) -> None:
    profile = load_profiles()[name]
    local = C.local_profile(profile, LOCAL_URI)
    assert local.feast == profile.feast
    assert local.mlflow == profile.mlflow.model_copy(update={"tracking_uri": LOCAL_URI})
    assert local.gpu is None and local.trainjob is None and local.tuning.engine == "optuna"


def test_each_step_gets_the_volumes_and_environment_its_pod_would(tmp_path: Path) -> None:
    profile = C.local_profile(load_profiles()["cpu"], LOCAL_URI)
    graph = build_pipeline(profile)
    environ = {
        "FEAST_REDIS_CONNECTION_STRING": "localhost:6379",
        "FEAST_REGISTRY_PATH": "/mnt/feast/registry.db",
        "MLFLOW_TRACKING_TOKEN": "t0ken",
        "AWS_SECRET_ACCESS_KEY": "",  # set but empty: left out, as a missing optional key
        "UNRELATED": "never given",
    }
    plan = C.plan(graph, profile, tmp_path, environ)
    assert plan.volumes == [C.Volume(host=(tmp_path / "feature_store").resolve(), target="/mnt/feast")]
    feast = {"FEAST_REDIS_CONNECTION_STRING": "localhost:6379", "FEAST_REGISTRY_PATH": "/mnt/feast/registry.db"}
    assert plan.env["exec-ingest-features"] == feast  # the feature store only
    for step in ("exec-tune-hyperparameters", "exec-train-classifier", "exec-evaluate-classifier"):
        assert plan.env[step] == {**feast, "MLFLOW_TRACKING_TOKEN": "t0ken"}
    assert not {"exec-prepare-reviews", "exec-check-bias", "exec-featurize-reviews"} & set(plan.env)
    C.add_env(graph, plan.env)
    assert _env_of(graph, "exec-train-classifier")["MLFLOW_TRACKING_TOKEN"] == "t0ken"
    assert _env_of(graph, "exec-train-classifier")[ENV_TRACKING_URI] == LOCAL_URI  # use_mlflow, the local server
    assert "MLFLOW_TRACKING_TOKEN" not in _env_of(graph, "exec-prepare-reviews")
    assert ENV_TRACKING_URI not in _env_of(graph, "exec-featurize-reviews")


def test_the_plan_follows_the_profile_file_not_a_list_of_its_own(tmp_path: Path) -> None:
    """A profile of one's own (other PVC, mount path, keys) changes what the containers get, and nothing else."""
    mine = load_profiles()["cpu"]
    mine = dataclasses.replace(
        mine,
        feast=FeastAccess(pvc="my-store", mount_path="/data/fs", config_map="cm", config_keys=("MY_KEY",)),
        mlflow=None,
    )
    profile = C.local_profile(mine, LOCAL_URI)
    graph = build_pipeline(profile)
    plan = C.plan(graph, profile, tmp_path, {"MY_KEY": "v", "FEAST_REDIS_CONNECTION_STRING": "x"})
    assert plan.volumes == [C.Volume(host=(tmp_path / "feature_store").resolve(), target="/data/fs")]
    steps = ("ingest-features", "tune-hyperparameters", "train-classifier", "evaluate-classifier")
    assert plan.env == {f"exec-{step}": {"MY_KEY": "v"} for step in steps}
    assert ENV_TRACKING_URI not in _env_of(graph, "exec-train-classifier")  # no mlflow entry: none given


def test_local_paths_among_the_arguments_are_mounted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "reviews.csv"
    data.write_text("a\n")
    monkeypatch.chdir(tmp_path)
    found = C.path_inputs(
        {
            "data": "reviews.csv",
            "base_model": str(tmp_path),
            "text_column": "Review Text",
            "label_column": "",
            "tuning_spec": "s3://bucket/spec.yaml",
            "feast_config": "local",
            "seed": 42,
        }
    )
    assert found == {"data": data.resolve(), "base_model": tmp_path.resolve()}


def test_a_runtime_that_is_not_running_is_named_with_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    with pytest.raises(
        ValueError, match=r"no container runtime answers at unix://.*nothing\.sock.*make container-runtime"
    ):
        C.check_runtime()


def test_cli_refuses_before_writing_anything(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    from pipelines.__main__ import main

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    out = tmp_path / "run"
    assert main(["run", "--runner", "container", "--output", str(out)]) == 2
    assert "make container-runtime" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit):
        main(["run", "--runner", "kubernetes", "--output", str(out)])
    assert "invalid choice: 'kubernetes'" in capsys.readouterr().err


def test_unknown_profile_is_named(tmp_path: Path) -> None:
    with (
        pytest.raises(ValueError, match=r"Unknown --profile 'laptop'.*cpu, eks, onprem"),
        C.session(tmp_path, {}, "laptop"),
    ):
        pass


def test_profiles_yaml_keeps_a_feature_store_entry_for_every_shipped_profile() -> None:
    """The container run mounts the feature store where the profile's pods have it."""
    raw = yaml.safe_load((Path(C.__file__).with_name("profiles.yaml")).read_text())
    for name in ("onprem", "eks", "cpu"):
        assert raw[name]["feast"]["mount_path"].startswith("/")
