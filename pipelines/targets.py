"""Compile targets: which components do the pipeline's tune, train and deploy steps, and how they are placed.

The pipeline (`pipelines.pipeline`) is one source: prepare, bias check, featurize, Feast ingest, evaluate and
the skip are always the same components; tune, train and deploy are a target's `Step`\\ s.  A step is called
with every value the pipeline has at that point, by name, and hands its component the inputs the component
declares (`Step.__call__`) — so a target's component takes what it needs of the pipeline's parameters and
upstream outputs, and nothing else changes in the pipeline.  Every component of a step returns the outputs
the pipeline reads by the same names (tune: ``best_params``, ``report_json``; train: ``model``, ``report``;
deploy: its report JSON as the return value).

- ``kfp``: every step on Kubeflow — tune_hyperparameters (Optuna or Katib), train_classifier (a pod, or a
  Kubeflow Trainer TrainJob), deploy_model (KServe); GPU placement from the profile.
- ``sagemaker``: tune_on_sagemaker (a SageMaker tuning job), train_on_sagemaker (a training job),
  deploy_sagemaker_endpoint (``components/sagemaker/deploy.py``: model, endpoint config, canary update); their
  pods only call AWS, so they get no GPU, and they get the profile's ``sagemaker`` section
  (`components.sagemaker.settings.ENV`) and, on-prem, its credentials Secret.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipelines.profiles import Profile, place_on_gpu, use_feature_store, use_mlflow

TARGETS = ("kfp", "sagemaker")
#: Keys of the on-prem credentials Secret (``sagemaker.credentials_secret``); boto3 reads them from the env.
AWS_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")

Placement = Callable[[Any, "Profile | None"], Any]


@dataclass(frozen=True)
class Step:
    """One swappable step: a KFP component, and what its task gets from the profile."""

    component: Any
    place: Placement

    def inputs(self) -> tuple[str, ...]:
        return tuple(self.component.component_spec.inputs or {})

    def __call__(self, profile: Profile | None, **available: Any) -> Any:
        """A task of the component with the inputs it declares, taken by name from ``available``.

        Raises:
            ValueError: The component declares an input without a default that the pipeline does not have.
        """
        spec = self.component.component_spec
        wanted = {name: available[name] for name in self.inputs() if name in available}
        missing = [
            n for n, i in (spec.inputs or {}).items() if n not in wanted and i.default is None and not i.optional
        ]
        if missing:
            raise ValueError(
                f"Component {spec.name} needs {missing}, which the pipeline does not have at this step; "
                f"it has {', '.join(sorted(available))}"
            )
        return self.place(self.component(**wanted), profile)


@dataclass(frozen=True)
class Target:
    """The tune, train and deploy steps of a compile target."""

    name: str
    tune: Step
    train: Step
    deploy: Step
    #: What the three steps run on, for the pipeline's description.
    runs_on: str = ""

    def components(self) -> list[Any]:
        return [self.tune.component, self.train.component, self.deploy.component]


def _on_cluster(task: Any, profile: Profile | None) -> Any:
    return place_on_gpu(use_mlflow(use_feature_store(task, profile), profile), profile)


def kfp_target() -> Target:
    from components.deploy.component import deploy_model
    from components.train.component import train_classifier
    from components.tune.component import tune_hyperparameters

    return Target(
        "kfp",
        tune=Step(tune_hyperparameters, _on_cluster),
        train=Step(train_classifier, _on_cluster),
        deploy=Step(deploy_model, use_mlflow),
        runs_on="Katib-style tuning (Optuna or Katib) → PyTorch fine-tuning (in the pod or a Kubeflow TrainJob) → "
        "evaluation with the deploy gate → MLflow registry, local model server or KServe canary",
    )


def use_sagemaker(task: Any, profile: Profile | None) -> Any:
    """Hand a task the profile's ``sagemaker`` section (JSON in `ENV`) and, when named, the credentials Secret."""
    from kfp import kubernetes

    from components.sagemaker.settings import ENV

    settings = profile.sagemaker if profile is not None else None
    if settings is None:
        return task
    task.set_env_variable(ENV, settings.to_env())
    if settings.credentials_secret:
        kubernetes.use_secret_as_env(task, settings.credentials_secret, {k: k for k in AWS_SECRET_KEYS}, optional=True)
    return task


def _on_sagemaker(task: Any, profile: Profile | None) -> Any:
    return use_sagemaker(use_mlflow(use_feature_store(task, profile), profile), profile)


def _deploy_on_sagemaker(task: Any, profile: Profile | None) -> Any:
    return use_sagemaker(use_mlflow(task, profile), profile)


def sagemaker_target() -> Target:
    from components.sagemaker.deploy import deploy_sagemaker_endpoint
    from components.sagemaker.train import train_on_sagemaker
    from components.sagemaker.tune import tune_on_sagemaker

    return Target(
        "sagemaker",
        tune=Step(tune_on_sagemaker, _on_sagemaker),
        train=Step(train_on_sagemaker, _on_sagemaker),
        deploy=Step(deploy_sagemaker_endpoint, _deploy_on_sagemaker),
        runs_on="SageMaker hyper-parameter tuning → SageMaker training job → evaluation with the deploy gate → "
        "MLflow registry, SageMaker endpoint canary",
    )


def target(name: str) -> Target:
    """The target called ``name``.

    Raises:
        ValueError: An unknown target.
    """
    if name == "kfp":
        return kfp_target()
    if name == "sagemaker":
        return sagemaker_target()
    raise ValueError(f"Unknown --target {name!r}; choose one of {', '.join(TARGETS)}.")
