"""The pipeline's parameters: each one is an option of a step, declared once in that step's config.

`DECLARED_IN` says where: the step's dataclass and field, as each step's descriptor (`pipelines.steps`) lists
them.  From it come the pipeline's parameter defaults and descriptions (`pipelines.pipeline`), the flags of
`python -m pipelines run` (`add_run_flags`), and the checks of every value before the first step runs
(`check`).  A test compares the compiled YAML and `--help` with the cores' defaults.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING
from typing import Any, TypeVar

from components.common import options
from components.common.training_options import TrainingArguments
from components.deploy.inference_service import STORAGE_SCHEMES
from pipelines import steps

T = TypeVar("T")

#: pipeline parameter → (config dataclass, field), from the steps' descriptors (`pipelines.steps.STEPS`).  The
#: order is the pipeline's.
DECLARED_IN: dict[str, tuple[type, str]] = steps.declared_in()

#: Parameters the local run sets itself (they are places in the run directory), so `run` has no flag.
LOCAL_ONLY = ("feature_store_dir",)

#: Parameters that are not a step's option: the input, and where a retried training resumes.
PIPELINE_ONLY = {
    "data": "Path or URI (s3://, gs://, …) of the reviews: CSV, TSV or Parquet.",
    "checkpoint_root": "Persistent directory (a PVC) for training checkpoints, so a retried training resumes; "
    "empty: a temporary directory.",
}


def default(name: str) -> Any:
    """The default of a pipeline parameter: its step's default."""
    cls, field_name = DECLARED_IN[name]
    f = options.field_of(cls, field_name)
    return f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]


def help_text(name: str) -> str:
    if name in PIPELINE_ONLY:
        return PIPELINE_ONLY[name]
    cls, field_name = DECLARED_IN[name]
    return options.field_of(cls, field_name).metadata.get("help", "")


def docstring(summary: str, names: list[str]) -> str:
    """A Google-style docstring (what the Kubeflow dashboard shows) with one line per parameter."""
    lines = [summary, "", "Args:"]
    lines += [f"    {name}: {help_text(name)}" for name in names]
    return "\n".join(lines) + "\n"


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per pipeline parameter that a local run takes from its user, derived from its declaration."""
    groups: dict[type, Any] = {}
    for step in steps.STEPS:
        for name, (cls, field_name) in step.options.items():
            if name in LOCAL_ONLY:
                continue
            title = f"{step.package.rsplit('.', 1)[1]} ({cls.__name__})"
            group = groups.get(cls) or groups.setdefault(cls, parser.add_argument_group(title))
            options.add_argument(group, cls, field_name)


def config(cls: type[T], values: dict[str, Any], **extra: Any) -> T:
    """The config of one step built from pipeline parameter values (by name), plus ``extra`` fields."""
    fields = {DECLARED_IN[name][1]: value for name, value in values.items() if DECLARED_IN.get(name, (None,))[0] is cls}
    return options.from_mapping(cls, {**fields, **extra})


def check(values: dict[str, Any]) -> None:
    """Check each step's options of a local run as the step will: bounds, choices and cross-field rules, naming
    the flags; and what a local run cannot do (`check_local_run`).

    Raises:
        ValueError: the first problem, naming the flag.
    """
    for cls in dict.fromkeys(cls for cls, _ in DECLARED_IN.values()):
        # output_dir is where the train step puts checkpoints: its own business, not an option here.
        extra = {"output_dir": "checkpoints"} if cls is TrainingArguments else {}
        options.check(config(cls, values, **extra))
    check_unused(values)
    check_local_run(values)


def check_unused(values: dict[str, Any], given: set[str] | None = None) -> None:
    """Refuse options that the run would not use, so a user does not believe they took effect: the tuning
    spec, study storage and study name when ``tuning_trials`` is 0 (no tuning: not even the spec is read), and
    ``rating_column`` when ``label_column`` gives the labels.

    Args:
        values: Every parameter's value.
        given: The parameters the user set; None: those whose value is not the step's default.

    Raises:
        ValueError: naming the unused flag, the one that makes it unused, and what to do.
    """
    if given is None:
        watched = ("tuning_spec", "study_storage", "study_name", "rating_column")
        given = {name for name in watched if name in values and values[name] != default(name)}
    if not values.get("tuning_trials"):
        unused = [options.flag(n) for n in ("tuning_spec", "study_storage", "study_name") if n in given and values[n]]
        if unused:
            raise ValueError(
                f"{', '.join(unused)} {'is' if len(unused) == 1 else 'are'} not used: --tuning-trials is 0 (no "
                "tuning; the spec's maxTrialCount starts none); pass --tuning-trials N to tune, or leave "
                f"{'it' if len(unused) == 1 else 'them'} out."
            )
    if values.get("label_column") and "rating_column" in given and values.get("rating_column"):
        raise ValueError(
            f"--rating-column {values['rating_column']!r} is not used: --label-column {values['label_column']!r} "
            "gives the labels; leave --rating-column out (or --label-column, to derive labels from ratings)."
        )


def check_local_run(values: dict[str, Any]) -> None:
    """Refuse what fails only at the end of a local run: ``deploy_backend`` kserve.  A local run (kfp.local)
    keeps its model artifact under the run directory, a path on this machine, and KServe's storage initializer
    downloads only from object stores and volumes (`inference_service.kserve_storage_uri` refuses a path), so
    the deploy step would fail after training, whatever cluster the kubeconfig names.

    Raises:
        ValueError: naming the flag and what to do instead.
    """
    if values.get("deploy_backend") == "kserve":
        schemes = ", ".join(f"{s}://" for s in STORAGE_SCHEMES[:3])
        raise ValueError(
            f"{options.flag('deploy_backend')} kserve cannot deploy from a local run: its model stays under --output "
            f"on this machine, and KServe downloads models only from {schemes}, … (the deploy step would fail after "
            "training). Use --deploy-backend local here, or run the pipeline on the cluster (python -m pipelines "
            "submit)."
        )
