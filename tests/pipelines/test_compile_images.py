"""The images a compiled pipeline names, as a cluster sees them: `$BERT_KFP_REGISTRY/...` when it is set, a
one-line warning from `compile` when they are local names (`localhost/…`) no cluster can pull, and
`make images` / `make push` pushing exactly those names when a registry is set."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from components.common import image
from pipelines.__main__ import main
from pipelines.compile import local_images

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (image.ENV_REGISTRY, image.ENV_TAG, *(image.env_name(n) for n in image.NAMES)):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_compile_warns_in_one_line_when_the_images_are_local(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.yaml"
    assert main(["compile", "--profile", "cpu", "--output", str(out)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: ")
    assert "localhost/bert-kfp/" in err[0] and "BERT_KFP_REGISTRY" in err[0] and "make images" in err[0]
    assert local_images(out) and all(ref.startswith("localhost/bert-kfp/") for ref in local_images(out))


def test_compile_with_a_registry_names_it_and_does_not_warn(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    clean_env.setenv(image.ENV_REGISTRY, "registry.example.com/ml")
    clean_env.setenv(image.ENV_TAG, "0.1.0-test")
    out = tmp_path / "p.yaml"
    assert main(["compile", "--profile", "onprem", "--output", str(out)]) == 0
    assert capsys.readouterr().err == ""
    spec = next(yaml.safe_load_all(out.read_text()))
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {f"registry.example.com/ml/{n}:0.1.0-test" for n in ("components", "train", "serve")}
    assert local_images(out) == []


def _make(target: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # `-o .venv/.installed`: never reinstall the venv here. CONTAINER_TOOL=echo prints the arguments the
    # Makefile gives the tool (podman and docker take the same `build` and `push` arguments): this checks
    # which images are built and pushed under which names, not a build (tests/integration/test_container_run).
    return subprocess.run(
        ["make", "--no-print-directory", "-o", ".venv/.installed", target, "CONTAINER_TOOL=echo", "IMAGES=train serve"],
        cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("BERT_KFP_")}, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_images_pushes_the_compiled_names_when_a_registry_is_set() -> None:
    done = _make("images", {image.ENV_REGISTRY: "registry.example.com/ml", image.ENV_TAG: "0.1.0-test"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    pushed = [line.split()[-1] for line in lines if line.startswith("push ")]
    assert pushed == ["registry.example.com/ml/train:0.1.0-test", "registry.example.com/ml/serve:0.1.0-test"]
    built = [line.split()[-2] for line in lines if line.startswith("build ")]  # `... -t REF .`
    assert built == pushed


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_images_without_a_registry_builds_local_names_and_says_it_does_not_push() -> None:
    done = _make("images", {image.ENV_TAG: "0.1.0-test"})
    assert done.returncode == 0, done.stderr
    assert not [line for line in done.stdout.splitlines() if line.startswith("push ")]
    assert "localhost/bert-kfp/train:0.1.0-test" in done.stdout and "set BERT_KFP_REGISTRY" in done.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_push_without_a_registry_is_refused() -> None:
    done = _make("push", {})
    assert done.returncode == 2
    assert "make push: BERT_KFP_REGISTRY is not set" in done.stderr and "push " not in done.stdout
