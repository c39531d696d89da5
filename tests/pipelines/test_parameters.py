"""Each option is declared once, in its step's config: the compiled pipeline, `python -m pipelines run
--help`, the components and the cores must agree on names, types and defaults."""

from __future__ import annotations

import dataclasses
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.common import options, training_options
from components.deploy.component import deploy_model
from components.deploy.config import DeployConfig
from components.evaluate.component import evaluate_classifier
from components.feast_ingest.component import ingest_features
from components.featurize.component import featurize_reviews
from components.prepare_data.component import prepare_reviews
from components.train.component import train_classifier
from components.tune.core import TrialData
from pipelines import parameters
from pipelines.compile import cluster_defaults, compile_pipeline
from pipelines.profiles import load_profiles

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = [prepare_reviews, featurize_reviews, ingest_features, train_classifier, evaluate_classifier, deploy_model]
_SCALARS = (str, int, float, bool)
_KFP_TYPES = {"STRING": str, "NUMBER_INTEGER": int, "NUMBER_DOUBLE": float, "BOOLEAN": bool}
#: Every step option's default as declared (a local run's), written out: a changed default fails here first.
DEFAULTS = {
    "text_column": "Review Text",
    "rating_column": "Rating",
    "label_column": "",
    "facet_column": "Class Name",
    "group_column": "",
    "min_facet_rows": 11,
    "balance": True,
    "max_rows": 0,
    "seed": 42,
    "max_abs_ci": 1.0,
    "max_abs_dpl": 1.0,
    "base_model": "",
    "max_seq_length": 128,
    "validation_fraction": 0.05,
    "test_fraction": 0.05,
    "feast_config": "local",
    "tuning_trials": 0,
    "tuning_spec": "",
    "study_storage": "",
    "study_name": "",
    "num_train_epochs": 3,
    "learning_rate": 5e-05,
    "per_device_train_batch_size": 32,
    "health_policy": "report",
    "mlflow_tracking_uri": "",
    "min_accuracy": 0.33,
    "registered_model_name": "",
    "deploy_backend": "local",
    "canary_traffic_percent": 10,
    "inference_service": "review-sentiment",
    "kserve_namespace": "",
    "kserve_mode": "",
    "serving_runtime": "project",
    "kserve_service_account": "",
    "kserve_resources": "",
    "rollout_timeout_seconds": 600,
    "smoke_reviews": 32,
    "local_port": 0,
}
#: What a cluster compile sets instead (`pipelines.compile.cluster_defaults`, the onprem profile's feature store).
CLUSTER_DEFAULTS = {
    "feature_store_dir": "/mnt/feast",
    "feast_config": "cluster",
    "deploy_backend": "kserve",
    "kserve_service_account": "bert-kserve",  # the onprem profile's serving section
    "kserve_resources": '{"requests":{"cpu":"1","memory":"2Gi"},"limits":{"cpu":"2","memory":"4Gi"}}',
}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = compile_pipeline(tmp_path_factory.mktemp("c") / "p.yaml", profile="onprem")
    return yaml.safe_load_all(path.read_text()).__next__()


@pytest.fixture(scope="module")
def help_entries() -> dict[str, str]:
    """`python -m pipelines run --help`, one entry (flags and help, on one line) per option."""
    result = subprocess.run(
        [sys.executable, "-m", "pipelines", "run", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    entries: list[str] = []
    for line in result.stdout.split("\n", 1)[1].splitlines():
        if re.match(r"^  -", line):
            entries.append(line.strip())
        elif line.startswith("    ") and entries:
            entries[-1] += " " + line.strip()
    return {flag: entry for entry in entries for flag in re.findall(r"(--[a-z-]+)", entry.split("  ")[0])}


def test_compiled_defaults_are_the_cores_defaults(compiled: dict) -> None:
    declared = compiled["root"]["inputDefinitions"]["parameters"]
    cluster = cluster_defaults(load_profiles()["onprem"])
    checked = 0
    for name, spec in declared.items():
        if name in parameters.PIPELINE_ONLY:
            continue
        cls, field_name = parameters.DECLARED_IN[name]
        kind, _ = options.value_type(cls, field_name)
        assert _KFP_TYPES[spec["parameterType"]] is kind, name
        assert kind(spec["defaultValue"]) == {**DEFAULTS, **CLUSTER_DEFAULTS}[name], name
        if name not in cluster:
            assert parameters.default(name) == DEFAULTS[name], name
        checked += 1
    assert checked == len(parameters.DECLARED_IN)  # every declared parameter is in the pipeline
    assert cluster == CLUSTER_DEFAULTS


def test_run_help_shows_the_cores_defaults(help_entries: dict[str, str]) -> None:
    checked = 0
    for name, (cls, field_name) in parameters.DECLARED_IN.items():
        if name in parameters.LOCAL_ONLY:
            continue
        shown = re.search(r"\(default: (.*?)\)$", help_entries[options.flags(cls, field_name)[0]])
        assert shown, f"{name}: no default in --help"
        assert shown.group(1) == str(DEFAULTS[name]), name
        checked += 1
    assert checked == len(DEFAULTS)


def test_shared_option_names_have_one_default() -> None:
    classes = {cls for cls, _ in parameters.DECLARED_IN.values()} | set(training_options.ARGUMENT_CLASSES) | {TrialData}
    seen: dict[str, tuple[type, object]] = {}
    for cls in classes:
        for name, value in options.defaults(cls).items():
            if name in seen and name not in ("output_dir",):
                assert value == seen[name][1], f"{name}: {cls.__name__} vs {seen[name][0].__name__}"
            seen.setdefault(name, (cls, value))
    assert {"seed", "base_model", "max_seq_length", "mlflow_tracking_uri", "feast_config"} <= set(seen)


def test_pipeline_passes_each_parameter_by_its_name(compiled: dict) -> None:
    """Every task input fed by a pipeline parameter has the parameter's (or its field's) name — also inside the
    deploy condition's DAG, where KFP hands parameters on as ``pipelinechannel--<name>``."""
    channel = "pipelinechannel--"
    dags = [compiled["root"]["dag"], *(c["dag"] for c in compiled["components"].values() if "dag" in c)]
    fed: dict[str, set[str]] = {}
    for dag in dags:
        for task_name, task in dag["tasks"].items():
            for key, value in task["inputs"].get("parameters", {}).items():
                source = value.get("componentInputParameter", "").removeprefix(channel)
                if source in parameters.DECLARED_IN or source in parameters.PIPELINE_ONLY:
                    key = key.removeprefix(channel)
                    assert key in (source, parameters.DECLARED_IN.get(source, (None, source))[1]), (key, source)
                    fed.setdefault(task_name, set()).add(source)
    assert sum(len(names) for names in fed.values()) >= len(parameters.DECLARED_IN)
    deploy_options = {name for name, (cls, _) in parameters.DECLARED_IN.items() if cls is DeployConfig}
    assert deploy_options <= fed["deploy-model"] and "deploy_backend" in fed["skip-deployment"]


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: c.name)
def test_component_parameters_have_their_options_types(component) -> None:
    """A component parameter named like an option of a step's config has that option's type."""
    scalars = {n: p for n, p in inspect.signature(component.python_func).parameters.items() if p.annotation in _SCALARS}
    typed = 0
    for name, param in scalars.items():
        for cls in {cls for cls, _ in parameters.DECLARED_IN.values()} | set(training_options.ARGUMENT_CLASSES):
            if name in {f.name for f in dataclasses.fields(cls)}:
                assert param.annotation is options.value_type(cls, name)[0], (component.name, name, cls)
                typed += 1
    assert typed >= 1


def test_training_options_by_name_reject_unknown_names_with_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"Unknown training option\(s\) \['warmup'\]; valid: .*warmup_ratio"):
        training_options.split_options({"warmup": 0.1})
    io, _, _, args, _ = training_options.split_options({"learning_rate": 1e-4, "pipeline_run_id": "r"})
    assert args.learning_rate == 1e-4 and io.pipeline_run_id == "r"
