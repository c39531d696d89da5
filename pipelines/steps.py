"""The pipeline's steps, one descriptor each: what the rest of `pipelines` knows about a step is derived from here.

A `Step` names its component, the pipeline parameters that are its options (config dataclass and field), the
figures a local run prints when it ends, its part of ``summary.json`` and the pipeline output that carries it,
and, for a step whose work a cluster profile can send elsewhere, when it does.  Derived from `STEPS`:

- `declared_in` → `pipelines.parameters.DECLARED_IN`: the pipeline's parameter defaults and descriptions, the
  flags of ``python -m pipelines run`` and ``submit``, the checks before the first step runs;
- `headlines` → what `pipelines.run_log.RunLog` prints when a step ends;
- `pipelines.summary.build_summary` → ``summary.json``'s part of each step (DESIGN §4);
- `output_fields` → `pipelines.pipeline.PipelineOutputs`;
- `launchers` → `pipelines.profiles.LAUNCHERS`.

The import-linter contracts in pyproject.toml list the step packages by hand (a static file); a test
(`tests/pipelines/test_steps.py`) fails when they and `STEPS` differ.  CONTRIBUTING.md says how to add a step.
This module imports only the steps' config dataclasses (no kfp), so ``--help`` stays quick.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.bias_check.core import BiasGates
from components.common import schema
from components.common.training_options import HealthArguments, IOArguments, TrainingArguments
from components.deploy.config import DeployConfig
from components.evaluate.config import EvaluateConfig
from components.feast_ingest.core import IngestConfig
from components.featurize.core import FeaturizeConfig
from components.prepare_data.core import PrepareConfig
from components.tune.core import TuneConfig

#: The output name KFP gives a component's return value (deploy's report is the JSON it returns).
RETURNED = "Output"

#: A step's part of summary.json from its report: (report, every pipeline parameter's value, the report
#: artifact's path, or None for a returned value) → the part.
Summarise = Callable[[Any, Mapping[str, Any], "Path | None"], Any]


def _as_is(report: Any, arguments: Mapping[str, Any], path: Path | None) -> Any:
    return report


@dataclass(frozen=True)
class Step:
    """One step of the pipeline, as the `pipelines` package sees it."""

    #: ``module:function`` of the step's KFP component (the kfp target's; `pipelines.targets` may swap it).
    component: str
    #: Pipeline parameter → (config dataclass, field) for each of the step's options, in the pipeline's order.
    options: Mapping[str, tuple[type, str]] = field(default_factory=dict)
    #: (metric, label) of the figures a local run prints when the step ends (from its ``metrics`` output).
    headlines: tuple[tuple[str, str], ...] = ()
    #: The step's key in summary.json; empty: none.
    summary: str = ""
    #: The field of the pipeline's outputs (`pipelines.pipeline.PipelineOutputs`) that carries the summary part.
    output: str = ""
    #: The component's output holding that report: an artifact of JSON, or `RETURNED` (JSON text it returns).
    report: str = "report"
    #: The summary part from the report; default: the report as it is.
    summarise: Summarise = _as_is
    #: The component's HTML outputs (beside its report artifact): a local run copies each to
    #: ``<output>/reports/<summary>.html`` and puts that path in the summary part under the output's name.
    html: tuple[str, ...] = ()
    #: Whether a cluster profile sends the step's work elsewhere (a TrainJob, a Katib Experiment), so its pod
    #: only launches and waits and gets no GPU (`pipelines.profiles.place_on_gpu`); None: never.
    launches: Callable[[Any], bool] | None = None

    @property
    def name(self) -> str:
        """The component's name as KFP gives it (and kfp.local's task name): the function's, with dashes."""
        return self.component.partition(":")[2].replace("_", "-")

    @property
    def package(self) -> str:
        """The step's package, ``components.<step>`` (what the import-linter contracts list)."""
        return self.component.partition(":")[0].rsplit(".", 1)[0]

    def load(self) -> Any:
        """The KFP component itself (imports kfp)."""
        module, _, function = self.component.partition(":")
        return getattr(importlib.import_module(module), function)


def declare(cls: type, *names: str, **renamed: str) -> dict[str, tuple[type, str]]:
    """Pipeline parameters that are fields of ``cls``: each of ``names`` by its field's name, and
    ``parameter="field"`` where the pipeline calls it otherwise."""
    return {**{name: (cls, name) for name in names}, **{name: (cls, f) for name, f in renamed.items()}}


def _bias_summary(report: Any, arguments: Mapping[str, Any], path: Path | None) -> dict[str, Any]:
    """summary.json's ``bias``: the check's report with the columns it was asked about and the positive label."""
    return {
        "facet": arguments["facet_column"],
        "label": report["label"],
        "positive_label": schema.SENTIMENTS[schema.POSITIVE_LABEL],
        "positive_label_value": schema.POSITIVE_LABEL,
        "group": report["group"] and arguments["group_column"],
        "rows": report["rows"],
        "facet_rows": report["facet_rows"],
        "metrics": report["metrics"],
    }


#: Every step, in the pipeline's order.
STEPS: tuple[Step, ...] = (
    Step(
        "components.prepare_data.component:prepare_reviews",
        options=declare(
            PrepareConfig,
            "text_column",
            "rating_column",
            "label_column",
            "facet_column",
            "group_column",
            "min_facet_rows",
            "balance",
            "max_rows",
            "seed",
        ),
        headlines=(("rows_out", "rows"), ("facet_values", "facet values")),
        summary="data",
        output="data_report",
    ),
    Step(
        "components.bias_check.component:check_bias",
        options=declare(BiasGates, "max_abs_ci", "max_abs_dpl"),
        headlines=(("max_abs_CI", "max |CI|"), ("max_abs_DPL", "max |DPL|")),
        summary="bias",
        output="bias_report",
        report="report_json",
        summarise=_bias_summary,
        html=("report_html",),
    ),
    Step(
        "components.featurize.component:featurize_reviews",
        options=declare(FeaturizeConfig, "base_model", "max_seq_length", "validation_fraction", "test_fraction"),
        headlines=(("rows_train", "train"), ("rows_validation", "validation"), ("rows_test", "test")),
        summary="features",
        output="features_report",
    ),
    Step(
        "components.feast_ingest.component:ingest_features",
        options=declare(IngestConfig, feature_store_dir="store_dir", feast_config="feast_config"),
        headlines=(("rows_written", "rows written"),),
        summary="feature_store",
        output="feature_store_report",
    ),
    Step(
        "components.tune.component:tune_hyperparameters",
        options=declare(TuneConfig, "tuning_trials", "tuning_spec", "study_storage", "study_name"),
        headlines=(("best_value", "best value"), ("trials_complete", "trials"), ("trials_pruned", "pruned")),
        summary="tuning",
        output="tuning_report",
        report="report_json",
        html=("report_html",),
        launches=lambda profile: profile.tuning.engine == "katib",  # a Katib Experiment
    ),
    Step(
        "components.train.component:train_classifier",
        options={
            **declare(TrainingArguments, "num_train_epochs", "learning_rate", "per_device_train_batch_size"),
            **declare(HealthArguments, "health_policy"),
            **declare(IOArguments, "mlflow_tracking_uri"),
        },
        headlines=(("eval_accuracy", "validation accuracy"), ("samples_per_second", "samples/s")),
        summary="training",
        output="training_report",
        html=("curve_html",),
        launches=lambda profile: profile.nodes > 1,  # a TrainJob on the GPU nodes
    ),
    Step(
        "components.evaluate.component:evaluate_classifier",
        options=declare(EvaluateConfig, "min_accuracy", "registered_model_name"),
        headlines=(("accuracy", "test accuracy"), ("f1_macro", "macro-F1")),
        summary="evaluation",
        output="evaluation_report",
        report="report_json",
        html=("report_html",),
    ),
    Step(
        # When evaluate's gate fails, skip_deployment (same module) gives the output in its place.
        "components.deploy.component:deploy_model",
        options=declare(
            DeployConfig,
            "deploy_backend",
            "canary_traffic_percent",
            "inference_service",
            "kserve_namespace",
            "kserve_mode",
            "serving_runtime",
            "kserve_service_account",
            "kserve_resources",
            "rollout_timeout_seconds",
            "smoke_reviews",
            "local_port",
        ),
        headlines=(("smoke_reviews", "smoke reviews"), ("smoke_matched", "answered as evaluate")),
        summary="deployment",
        output="deployment",
        report=RETURNED,
    ),
)


def declared_in(steps: tuple[Step, ...] = STEPS) -> dict[str, tuple[type, str]]:
    """Pipeline parameter → (config dataclass, field), every step's options in the pipeline's order.

    Raises:
        ValueError: two steps declare the same parameter (one must own it; the other takes it by name).
    """
    found: dict[str, tuple[type, str]] = {}
    for step in steps:
        for name, declared in step.options.items():
            if name in found:
                raise ValueError(f"Pipeline parameter {name!r} is declared by two steps; {step.name} is the second.")
            found[name] = declared
    return found


def headlines(steps: tuple[Step, ...] = STEPS) -> dict[str, tuple[tuple[str, str], ...]]:
    """Component name → the (metric, label) pairs a local run prints when that step ends."""
    return {step.name: step.headlines for step in steps if step.headlines}


def launchers(steps: tuple[Step, ...] = STEPS) -> dict[str, Callable[[Any], bool]]:
    """Component name → whether a profile sends that step's work elsewhere."""
    return {step.name: step.launches for step in steps if step.launches is not None}


def output_fields(steps: tuple[Step, ...] = STEPS) -> list[tuple[str, bool]]:
    """The pipeline's outputs: (field, whether it is a returned JSON text rather than an artifact), in order."""
    return [(step.output, step.report == RETURNED) for step in steps if step.output]


def step_packages(steps: tuple[Step, ...] = STEPS) -> set[str]:
    """The steps' packages, ``components.<step>``."""
    return {step.package for step in steps}
