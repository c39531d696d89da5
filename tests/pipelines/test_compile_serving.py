"""The compiled pipeline's InferenceService settings come from the profile: ``serving.service_account`` and
``serving.resources`` are the defaults of the ``kserve_service_account`` / ``kserve_resources`` parameters, which
the deploy step receives (a profile without ``serving`` leaves them empty)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipelines.compile import cluster_defaults, compile_pipeline
from pipelines.profiles import load_profiles


def test_the_profiles_serving_settings_are_the_compiled_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BERT_KFP_REGISTRY", "registry.example.com/ml")
    monkeypatch.setenv("BERT_KFP_IMAGE_TAG", "0.1.0-test")
    serving = load_profiles()["onprem"].serving
    assert serving is not None
    spec = next(yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml", profile="onprem").read_text()))
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["kserve_service_account"]["defaultValue"] == serving.service_account == "bert-kserve"
    assert json.loads(parameters["kserve_resources"]["defaultValue"]) == serving.resources
    (deploy,) = [
        c["dag"]["tasks"]["deploy-model"]
        for c in spec["components"].values()
        if "deploy-model" in c.get("dag", {}).get("tasks", {})
    ]
    given = deploy["inputs"]["parameters"]
    for name in ("kserve_service_account", "kserve_resources"):  # the pipeline's parameter, down the gate's branch
        assert given[name]["componentInputParameter"] == f"pipelinechannel--{name}", given[name]


def test_a_profile_without_serving_sets_nothing(tmp_path: Path) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text("bare: {feast: {pvc: feast-store}}\n")
    defaults = cluster_defaults(load_profiles(path)["bare"])
    assert "kserve_service_account" not in defaults and "kserve_resources" not in defaults
