"""Golden compile: the compiled YAML of every profile and target is the one checked in under
tests/pipelines/golden/ (`tests.pipelines.golden_compile`); a change is made on purpose with ``make golden``.

The mutation tests show the comparison sees what it is for: a parameter default, a step's image and a GPU
placement changed each give a diff that names the new value.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from components.common.image import COMPONENTS_IMAGE
from components.evaluate.component import evaluate_classifier
from pipelines.profiles import DEFAULT_FILE
from tests.pipelines import golden_compile as golden

CASES = golden.cases()


def test_every_profile_and_target_has_a_golden_file() -> None:
    """A profile added or removed in profiles.yaml is a golden file added or removed (``make golden``)."""
    assert ("kfp", "onprem") in CASES and ("sagemaker", "aws") in CASES  # the repository's profiles
    expected = {golden.golden_path(target, profile).name for target, profile in CASES}
    assert {p.name for p in golden.GOLDEN_DIR.glob("*.yaml")} == expected, f"run `{golden.UPDATE_COMMAND}`"


@pytest.mark.parametrize(("target", "profile"), CASES, ids=[f"{t}-{p}" for t, p in CASES])
def test_compiled_yaml_is_the_golden_file(target: str, profile: str) -> None:
    path = golden.golden_path(target, profile)
    assert path.is_file(), f"{path} is missing: run `{golden.UPDATE_COMMAND}`"
    difference = golden.diff(path.read_text(), golden.compiled(target, profile), path.name)
    if difference:
        pytest.fail(
            f"The compiled pipeline differs from {path.name}. If the change is meant, run "
            f"`{golden.UPDATE_COMMAND}` and commit tests/pipelines/golden/ with it.\n{difference}",
            pytrace=False,
        )


def _changed_lines(difference: str) -> list[str]:
    return [line for line in difference.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def test_a_changed_parameter_default_shows_in_the_diff(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines import parameters

    original = parameters.default
    monkeypatch.setattr(parameters, "default", lambda name: 0.00042 if name == "learning_rate" else original(name))
    path = golden.golden_path("kfp", "onprem")
    changed = _changed_lines(golden.diff(path.read_text(), golden.compiled("kfp", "onprem"), path.name))
    assert any(line.startswith("+") and "0.00042" in line for line in changed), changed


def test_a_changed_image_shows_in_the_diff(monkeypatch: pytest.MonkeyPatch) -> None:
    """evaluate_classifier moved from the train image to the components image."""
    container = evaluate_classifier.component_spec.implementation.container
    monkeypatch.setattr(container, "image", COMPONENTS_IMAGE)
    path = golden.golden_path("kfp", "cpu")
    changed = _changed_lines(golden.diff(path.read_text(), golden.compiled("kfp", "cpu"), path.name))
    assert f"-        image: {golden.REGISTRY}/train:{golden.TAG}" in changed, changed
    assert f"+        image: {golden.REGISTRY}/components:{golden.TAG}" in changed, changed


def test_a_changed_placement_shows_in_the_diff(tmp_path: Path) -> None:
    """The onprem profile's GPU nodes selected by another label, in a copy of profiles.yaml."""
    profiles = yaml.safe_load(DEFAULT_FILE.read_text())
    profiles["onprem"]["gpu"]["node_selector"] = {"example.com/gpu-pool": "a100"}
    edited = tmp_path / "profiles.yaml"
    edited.write_text(yaml.safe_dump(profiles))
    path = golden.golden_path("kfp", "onprem")
    changed = _changed_lines(golden.diff(path.read_text(), golden.compiled("kfp", "onprem", edited), path.name))
    assert any(line.startswith("+") and "example.com/gpu-pool: a100" in line for line in changed), changed
    assert any(line.startswith("-") and "nvidia.com/gpu.present" in line for line in changed), changed
