"""The pipeline: prepare → bias check → featurize → Feast ingest → tune → train → evaluate → deploy (if the gate
passes)."""

import inspect
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact

from components.bias_check.component import check_bias
from components.common import image
from components.deploy.component import skip_deployment
from components.evaluate.component import evaluate_classifier
from components.feast_ingest.component import ingest_features
from components.featurize.component import featurize_reviews
from components.prepare_data.component import prepare_reviews
from pipelines import parameters as P
from pipelines import steps as S
from pipelines.profiles import Profile, use_feature_store, use_mlflow
from pipelines.targets import Target, kfp_target

PIPELINE_NAME = "bert-review-sentiment"
#: The steps every target shares; the target's `runs_on` follows.
DESCRIPTION = "Product reviews → Clarify bias check → BERT features → Feast → "


#: What the pipeline returns: each step's report (`pipelines.steps`: its ``output``), an artifact of JSON, or the
#: JSON text its component returns (deployment: deploy_model's when the gate passed, else skip_deployment's).
PipelineOutputs = NamedTuple(  # type: ignore[misc]  # (fields from the steps' descriptors)
    "PipelineOutputs", [(name, str if returned else Artifact) for name, returned in S.output_fields()]
)


def build_pipeline(profile: Profile | None = None, target: Target | None = None):
    """The pipeline, with the cluster placement of ``profile`` applied (None: no placement, for kfp.local).

    ``target`` (`pipelines.targets`; default: kfp) chooses the components of the tune, train and deploy steps;
    every other step is the same component on every target.  Every parameter but ``data`` and
    ``checkpoint_root`` is a step's option; its default and its description come from that step's declaration
    (`pipelines.parameters`).
    """
    steps = target or kfp_target()
    # the components' images, resolved now (registry, tag), not at import
    image.pin([*globals().values(), *steps.components()])
    d = P.default

    def review_sentiment_pipeline(
        data: str,
        feature_store_dir: str,
        text_column: str = d("text_column"),
        rating_column: str = d("rating_column"),
        label_column: str = d("label_column"),
        facet_column: str = d("facet_column"),
        group_column: str = d("group_column"),
        min_facet_rows: int = d("min_facet_rows"),
        balance: bool = d("balance"),
        max_rows: int = d("max_rows"),
        seed: int = d("seed"),
        max_abs_ci: float = d("max_abs_ci"),
        max_abs_dpl: float = d("max_abs_dpl"),
        base_model: str = d("base_model"),
        max_seq_length: int = d("max_seq_length"),
        validation_fraction: float = d("validation_fraction"),
        test_fraction: float = d("test_fraction"),
        feast_config: str = d("feast_config"),
        tuning_trials: int = d("tuning_trials"),
        tuning_spec: str = d("tuning_spec"),
        study_storage: str = d("study_storage"),
        study_name: str = d("study_name"),
        num_train_epochs: int = d("num_train_epochs"),
        learning_rate: float = d("learning_rate"),
        per_device_train_batch_size: int = d("per_device_train_batch_size"),
        health_policy: str = d("health_policy"),
        checkpoint_root: str = "",
        mlflow_tracking_uri: str = d("mlflow_tracking_uri"),
        registered_model_name: str = d("registered_model_name"),
        min_accuracy: float = d("min_accuracy"),
        deploy_backend: str = d("deploy_backend"),
        canary_traffic_percent: int = d("canary_traffic_percent"),
        inference_service: str = d("inference_service"),
        kserve_namespace: str = d("kserve_namespace"),
        kserve_mode: str = d("kserve_mode"),
        serving_runtime: str = d("serving_runtime"),
        kserve_service_account: str = d("kserve_service_account"),
        kserve_resources: str = d("kserve_resources"),
        rollout_timeout_seconds: int = d("rollout_timeout_seconds"),
        smoke_reviews: int = d("smoke_reviews"),
        local_port: int = d("local_port"),
    ) -> PipelineOutputs:
        prepared = prepare_reviews(
            data=data,
            text_column=text_column,
            rating_column=rating_column,
            label_column=label_column,
            facet_column=facet_column,
            group_column=group_column,
            min_facet_rows=min_facet_rows,
            balance=balance,
            max_rows=max_rows,
            seed=seed,
        ).set_display_name("prepare data")
        bias = check_bias(
            cleaned_reviews=prepared.outputs["cleaned_reviews"], max_abs_ci=max_abs_ci, max_abs_dpl=max_abs_dpl
        ).set_display_name("bias check")
        features = featurize_reviews(
            reviews=prepared.outputs["reviews"],
            base_model=base_model,
            max_seq_length=max_seq_length,
            validation_fraction=validation_fraction,
            test_fraction=test_fraction,
            seed=seed,
            event_timestamp="",
        ).set_display_name("featurize")
        features.after(bias)  # featurize only data that passed the bias gate
        stored = ingest_features(
            features=features.outputs["features"],
            store_dir=feature_store_dir,
            feast_config=feast_config,
            offline_path="",
        ).set_display_name("feast ingest")
        use_feature_store(stored, profile)
        tuned = steps.tune(
            profile,
            feature_store=stored.outputs["store"],
            feast_config=feast_config,
            base_model=base_model,
            max_seq_length=max_seq_length,
            seed=seed,
            tuning_trials=tuning_trials,
            tuning_spec=tuning_spec,
            study_storage=study_storage,
            study_name=study_name,
            mlflow_tracking_uri=mlflow_tracking_uri,
            pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        ).set_display_name("tune")
        trained = steps.train(
            profile,
            feature_store=stored.outputs["store"],
            feast_config=feast_config,
            base_model=base_model,
            num_train_epochs=num_train_epochs,
            learning_rate=learning_rate,
            per_device_train_batch_size=per_device_train_batch_size,
            max_seq_length=max_seq_length,
            seed=seed,
            hyperparameters=tuned.outputs["best_params"],
            health_policy=health_policy,
            checkpoint_root=checkpoint_root,
            mlflow_tracking_uri=mlflow_tracking_uri,
            pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            data_hash=prepared.outputs["data_hash"],
        ).set_display_name("train")
        evaluated = evaluate_classifier(
            feature_store=stored.outputs["store"],
            feast_config=feast_config,
            model=trained.outputs["model"],
            data_report=prepared.outputs["report"],
            reviews=prepared.outputs["reviews"],
            max_seq_length=max_seq_length,
            min_accuracy=min_accuracy,
            mlflow_tracking_uri=mlflow_tracking_uri,
            registered_model_name=registered_model_name,
            pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        ).set_display_name("evaluate")
        use_mlflow(use_feature_store(evaluated, profile), profile)
        with dsl.If(evaluated.outputs["deploy"] == True, name="quality-gate-passed"):  # noqa: E712 (a KFP condition)
            deployed = steps.deploy(
                profile,
                model=trained.outputs["model"],
                predictions=evaluated.outputs["predictions"],
                reviews=prepared.outputs["reviews"],
                model_version=evaluated.outputs["model_version"],
                reason=evaluated.outputs["reason"],
                max_seq_length=max_seq_length,
                deploy_backend=deploy_backend,
                canary_traffic_percent=canary_traffic_percent,
                inference_service=inference_service,
                kserve_namespace=kserve_namespace,
                kserve_mode=kserve_mode,
                serving_runtime=serving_runtime,
                kserve_service_account=kserve_service_account,
                kserve_resources=kserve_resources,
                rollout_timeout_seconds=rollout_timeout_seconds,
                smoke_reviews=smoke_reviews,
                local_port=local_port,
                mlflow_tracking_uri=mlflow_tracking_uri,
                registered_model_name=registered_model_name,
                pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            ).set_display_name("deploy")
        with dsl.Else(name="quality-gate-failed"):
            skipped = skip_deployment(
                reason=evaluated.outputs["reason"],
                model_version=evaluated.outputs["model_version"],
                deploy_backend=deploy_backend,
                registered_model_name=registered_model_name,
            ).set_display_name("skip deployment")
        return PipelineOutputs(
            data_report=prepared.outputs["report"],
            bias_report=bias.outputs["report_json"],
            features_report=features.outputs["report"],
            feature_store_report=stored.outputs["report"],
            tuning_report=tuned.outputs["report_json"],
            training_report=trained.outputs["report"],
            evaluation_report=evaluated.outputs["report_json"],
            deployment=dsl.OneOf(deployed.outputs["Output"], skipped.outputs["Output"]),
        )

    names = list(inspect.signature(review_sentiment_pipeline).parameters)
    review_sentiment_pipeline.__doc__ = P.docstring(
        "Build, train, evaluate and deploy a BERT review-sentiment classifier.", names
    )
    description = f"{DESCRIPTION}{steps.runs_on}."
    return dsl.pipeline(name=PIPELINE_NAME, description=description)(review_sentiment_pipeline)
