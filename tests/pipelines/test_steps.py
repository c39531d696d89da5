"""The steps' descriptors (`pipelines.steps`) against what they describe: the components, the folders under
components/, the import-linter contracts in pyproject.toml (a static list that cannot be derived), the compiled
pipeline's outputs and summary.json's keys (DESIGN §4)."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines import parameters, profiles, steps
from pipelines.compile import compile_pipeline
from pipelines.pipeline import PipelineOutputs

ROOT = Path(__file__).resolve().parents[2]
#: Packages under components/ that are not steps: what the steps share, and the SageMaker target's stand-ins.
NOT_STEPS = {"components.common", "components.sagemaker"}


def test_each_descriptor_names_its_component_and_package() -> None:
    for step in steps.STEPS:
        component = step.load()
        assert component.component_spec.name == step.name, step.component
        assert component.python_func.__module__ == f"{step.package}.component", step.component
    assert [step.name for step in steps.STEPS] == [
        "prepare-reviews",
        "check-bias",
        "featurize-reviews",
        "ingest-features",
        "tune-hyperparameters",
        "train-classifier",
        "evaluate-classifier",
        "deploy-model",
    ]


def test_every_step_package_under_components_has_a_descriptor() -> None:
    packages = {f"components.{p.parent.name}" for p in (ROOT / "components").glob("*/__init__.py")}
    assert packages - NOT_STEPS == steps.step_packages()


def test_each_component_takes_its_steps_options_by_their_field_names() -> None:
    for step in steps.STEPS:
        inputs = set(step.load().component_spec.inputs or {})
        fields = {field_name for _, field_name in step.options.values()}
        assert fields <= inputs, (step.name, sorted(fields - inputs))


def test_summary_keys_and_pipeline_outputs_are_the_designs() -> None:
    """summary.json's step keys (DESIGN §4), in the pipeline's order, and the outputs that carry them."""
    assert [step.summary for step in steps.STEPS] == [
        "data",
        "bias",
        "features",
        "feature_store",
        "tuning",
        "training",
        "evaluation",
        "deployment",
    ]
    assert PipelineOutputs._fields == (
        "data_report",
        "bias_report",
        "features_report",
        "feature_store_report",
        "tuning_report",
        "training_report",
        "evaluation_report",
        "deployment",
    )
    assert PipelineOutputs.__annotations__["deployment"] is str


def test_compiled_pipeline_outputs_are_the_descriptors(tmp_path: Path) -> None:
    """Each descriptor's ``output`` is an output of the compiled pipeline, fed by the step's ``report``."""
    spec = next(yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml", profile="cpu").read_text()))
    outputs = spec["root"]["outputDefinitions"]
    assert set(outputs["artifacts"]) | set(outputs["parameters"]) == {s.output for s in steps.STEPS}
    fed = spec["root"]["dag"]["outputs"]["artifacts"]
    assert set(fed) == {s.output for s in steps.STEPS if s.report != steps.RETURNED}
    for step in steps.STEPS:
        if step.output in fed:
            [selector] = fed[step.output]["artifactSelectors"]
            assert (selector["producerSubtask"], selector["outputArtifactKey"]) == (step.name, step.report)
    assert set(outputs["parameters"]) == {s.output for s in steps.STEPS if s.report == steps.RETURNED}


def test_headlines_and_launchers_come_from_the_descriptors() -> None:
    from pipelines.run_log import HEADLINES

    assert HEADLINES["train-classifier"] == (
        ("eval_accuracy", "validation accuracy"),
        ("samples_per_second", "samples/s"),
    )
    assert set(HEADLINES) == {step.name for step in steps.STEPS}
    assert set(profiles.LAUNCHERS) == {"train-classifier", "tune-hyperparameters"}
    loaded = profiles.load_profiles()
    assert profiles.LAUNCHERS["tune-hyperparameters"](loaded["onprem"]) is (loaded["onprem"].tuning.engine == "katib")


def test_a_parameter_declared_by_two_steps_is_refused() -> None:
    first, second = steps.STEPS[0], steps.STEPS[1]
    doubled = (first, steps.Step(second.component, options={"seed": (second.options["max_abs_ci"][0], "seed")}))
    with pytest.raises(ValueError, match="'seed' is declared by two steps; check-bias is the second"):
        steps.declared_in(doubled)
    assert list(steps.declared_in()) == list(parameters.DECLARED_IN)


def _difference(contract: dict[str, Any], listed: set[str], packages: set[str]) -> list[str]:
    if listed == packages:
        return []
    return [f"{contract['name']!r}: steps missing {sorted(packages - listed)}, not steps {sorted(listed - packages)}"]


def _import_linter_gaps(pyproject: dict[str, Any], packages: set[str]) -> list[str]:
    """What the import-linter contracts of ``pyproject`` miss or have over the step ``packages``: the layer
    that holds the steps, side by side, and the packages the model server must not import."""
    contracts = pyproject["tool"]["importlinter"]["contracts"]
    [layers] = [c for c in contracts if c["type"] == "layers" and "components.common" in c["layers"]]
    listed = [{m.strip() for m in layer.split("|")} for layer in layers["layers"]]
    step_layers = [layer for layer in listed if packages & layer]
    if len(step_layers) != 1:
        return [f"the steps are in {len(step_layers)} layers of {layers['name']!r}, not one"]
    gaps = _difference(layers, step_layers[0], packages)
    [serving] = [c for c in contracts if c["type"] == "forbidden" and c["source_modules"] == ["serving"]]
    forbidden = {m for m in serving["forbidden_modules"] if m.startswith("components.")} - NOT_STEPS
    return gaps + _difference(serving, forbidden, packages)


def test_import_linter_contracts_list_every_step() -> None:
    """pyproject.toml is static: its lists of step packages are checked against the descriptors here."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert _import_linter_gaps(pyproject, steps.step_packages()) == []
    # The check fails both ways: a step the contracts lack, and a listed package that is no step.
    gaps = _import_linter_gaps(pyproject, steps.step_packages() | {"components.new_step"})
    assert len(gaps) == 2 and all(gap.endswith("steps missing ['components.new_step'], not steps []") for gap in gaps)
    fewer = copy.deepcopy(pyproject)
    for contract in fewer["tool"]["importlinter"]["contracts"]:
        if "forbidden_modules" in contract:
            contract["forbidden_modules"].append("components.gone")
    assert _import_linter_gaps(fewer, steps.step_packages())[-1].endswith("not steps ['components.gone']")
